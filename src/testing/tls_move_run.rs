//! Moving a running local 3-member cluster between plaintext and TLS under a writer,
//! measured: what `tests/local_tls.rs` asserts on and `benches/tls.rs` prints. The writer and the quorum
//! sampler follow each member's recorded client URL, as an application that re-resolves
//! its endpoints would, and dial the `https://` ones with the application certificate.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use super::operator::{
    Scenario, client_urls, cluster_yaml, fast_policy, latest, member_pid, recorded_client_urls,
};
use super::wait::wait_for;
use super::writer::{Load, LoadSeen};
use crate::api::cluster::ClusterPhase;
use crate::api::condition;

/// The cluster's name.
pub const CLUSTER: &str = "tlsmove";

/// What one move did; the scenario (operator and members) is kept running.
pub struct TlsMoveRun {
    pub scenario: Scenario,
    pub version: String,
    /// Towards TLS (else towards plaintext).
    pub to_tls: bool,
    /// The members' client URLs before and after.
    pub urls_before: Vec<String>,
    pub urls: Vec<String>,
    /// The application certificate directory (`ca.crt`, `client.crt`, `client.key`).
    pub dir: PathBuf,
    /// Each member's name and pid before the move.
    pub before: Vec<(String, nix::unistd::Pid)>,
    /// From the spec change to every member serving as asked, 3 ready.
    pub wall: Duration,
    /// `TLS` condition reasons seen, in order.
    pub reasons: Vec<String>,
    /// Cluster phases (`status.phase`) seen while it ran, in order.
    pub cluster_phases: Vec<ClusterPhase>,
    /// The writer's and the quorum sampler's numbers.
    pub seen: LoadSeen,
}

/// Starts a plaintext (`spec.tls.mode: Disabled`) 3-member cluster at the latest
/// 3.`minor`, a writer and a quorum sampler (100 ms), then drops `mode: Disabled` (TLS is
/// the default) and waits (5 min) until every member serves TLS.
///
/// # Panics
/// When the cluster does not come up or the move does not finish in time.
pub async fn move_to_tls_under_a_writer(minor: u64) -> TlsMoveRun {
    move_under_a_writer(minor, true).await
}

/// The other way: a TLS cluster (the default) set to `spec.tls.mode: Disabled`, until every
/// member listens plaintext and none holds certificates any more.
///
/// # Panics
/// When the cluster does not come up or the move does not finish in time.
pub async fn move_to_plaintext_under_a_writer(minor: u64) -> TlsMoveRun {
    move_under_a_writer(minor, false).await
}

const DISABLED: &str = "  tls:\n    mode: Disabled\n";

async fn move_under_a_writer(minor: u64, to_tls: bool) -> TlsMoveRun {
    let version = latest(minor);
    let (from, to, scheme, reason) = if to_tls {
        (DISABLED, "", "https://", "Serving")
    } else {
        ("", DISABLED, "http://", "Disabled")
    };
    let mut s = Scenario::new(fast_policy());
    s.write(&cluster_yaml(CLUSTER, 3, &version, from));
    s.start();
    let st = s.wait_running(CLUSTER, 3, &version).await;
    let urls_before = client_urls(&st);
    assert!(urls_before.iter().all(|u| !u.starts_with(scheme)));
    let state = s.state_dir();
    let dir = state.join("tls/default").join(CLUSTER);
    let before = st
        .members
        .iter()
        .map(|m| (m.name.clone(), member_pid(&state, CLUSTER, &m.name)))
        .collect();

    let endpoints: super::writer::Endpoints = {
        let state = state.clone();
        Arc::new(move || recorded_client_urls(&state, CLUSTER))
    };
    let load = Load::start(endpoints, dir.clone()).await;

    let started = Instant::now();
    s.write(&cluster_yaml(CLUSTER, 3, &version, to));
    let reasons = Mutex::new(Vec::<String>::new());
    let cluster_phases = Mutex::new(Vec::<ClusterPhase>::new());
    // Members whose recorded command line still names a certificate.
    let holding_certificates = || {
        std::fs::read_dir(state.join("clusters/default").join(CLUSTER))
            .into_iter()
            .flatten()
            .filter_map(Result::ok)
            .filter(|d| {
                std::fs::read_to_string(d.path().join("member.json"))
                    .is_ok_and(|r| r.contains("--peer-cert-file"))
            })
            .count()
    };
    wait_for(
        Duration::from_secs(300),
        "every member serves as asked",
        || async {
            let st = s
                .status(CLUSTER)
                .and_then(|c| c.status)
                .ok_or("no status")?;
            let tls = st
                .conditions
                .iter()
                .find(|c| c.type_ == condition::types::TLS)
                .ok_or("no TLS condition")?;
            {
                let mut seen = reasons.lock().unwrap_or_else(PoisonError::into_inner);
                if seen.last() != Some(&tls.reason) {
                    seen.push(tls.reason.clone());
                }
            }
            {
                let mut seen = cluster_phases
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                if seen.last() != Some(&st.phase) {
                    seen.push(st.phase);
                }
            }
            let urls = client_urls(&st);
            let done = tls.reason == reason
                && st.ready_members == 3
                && urls.len() == 3
                && urls.iter().all(|u| u.starts_with(scheme))
                && (to_tls || holding_certificates() == 0);
            if done {
                Ok(())
            } else {
                Err(format!("{}: {} ({urls:?})", tls.reason, tls.message))
            }
        },
    )
    .await
    .expect("the move finishes");
    let wall = started.elapsed();
    let urls = recorded_client_urls(&state, CLUSTER);
    let seen = load.finish(&urls, &dir).await;
    TlsMoveRun {
        scenario: s,
        version,
        to_tls,
        urls_before,
        urls,
        dir,
        before,
        wall,
        reasons: reasons.into_inner().unwrap_or_else(PoisonError::into_inner),
        cluster_phases: cluster_phases
            .into_inner()
            .unwrap_or_else(PoisonError::into_inner),
        seen,
    }
}

impl TlsMoveRun {
    /// One line of what the run measured.
    pub fn summary(&self) -> String {
        format!(
            "{}, 3 members, {}: {:.1} s; TLS condition {:?}; {}",
            if self.to_tls {
                "plaintext -> TLS"
            } else {
                "TLS -> plaintext"
            },
            self.version,
            self.wall.as_secs_f64(),
            self.reasons,
            self.seen.summary(),
        )
    }
}
