//! One `spec.tls.rotateCA` of a local 3-member cluster under a writer through the
//! application client certificate, measured: what `tests/local_tls.rs` asserts on and
//! `benches/tls.rs` prints.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use super::operator::{Scenario, client_urls, cluster_yaml, fast_policy, latest, member_pid};
use super::wait::wait_for;
use super::writer::{Load, LoadSeen};
use crate::api::cluster::ClusterPhase;

/// The cluster's name.
pub const CLUSTER: &str = "carot";

/// What one rotation did; the scenario (operator and members) is kept running.
pub struct CaRotationRun {
    pub scenario: Scenario,
    pub version: String,
    pub urls: Vec<String>,
    /// The application certificate directory (`ca.crt`, `client.crt`, `client.key`).
    pub dir: PathBuf,
    pub old_ca: String,
    /// Each member's name and pid before the rotation.
    pub before: Vec<(String, nix::unistd::Pid)>,
    /// From the spec change to the rotation recorded done with 3 ready members.
    pub wall: Duration,
    /// `status.tls.caRotation` values seen, in order.
    pub phases: Vec<String>,
    /// Cluster phases (`status.phase`) seen while it ran, in order.
    pub cluster_phases: Vec<ClusterPhase>,
    /// The writer's and the quorum sampler's numbers.
    pub seen: LoadSeen,
}

/// Starts a 3-member cluster at the latest 3.`minor`, a writer and a quorum sampler (100
/// ms), sets `rotateCA`, and waits (5 min) until the rotation is done.
///
/// # Panics
/// When the cluster does not come up or the rotation does not finish in time.
pub async fn rotate_ca_under_a_writer(minor: u64) -> CaRotationRun {
    let version = latest(minor);
    let mut s = Scenario::new(fast_policy());
    s.write(&cluster_yaml(CLUSTER, 3, &version, ""));
    s.start();
    let st = s.wait_running(CLUSTER, 3, &version).await;
    let urls = client_urls(&st);
    let dir = PathBuf::from(
        st.tls
            .as_ref()
            .and_then(|t| t.client_certificate.clone())
            .expect("client certificate dir"),
    );
    let old_ca = std::fs::read_to_string(dir.join("ca.crt")).expect("ca.crt");
    let state = s.state_dir();
    let before = st
        .members
        .iter()
        .map(|m| (m.name.clone(), member_pid(&state, CLUSTER, &m.name)))
        .collect();

    let load = {
        let urls = urls.clone();
        Load::start(Arc::new(move || urls.clone()), dir.clone()).await
    };

    let started = Instant::now();
    s.write(&cluster_yaml(
        CLUSTER,
        3,
        &version,
        "  tls:\n    rotateCA: \"c1\"\n",
    ));
    let phases = Mutex::new(Vec::<String>::new());
    let cluster_phases = Mutex::new(Vec::<ClusterPhase>::new());
    wait_for(
        Duration::from_secs(300),
        "CA rotation c1 finished",
        || async {
            let st = s
                .status(CLUSTER)
                .and_then(|c| c.status)
                .ok_or("no status")?;
            let tls = st.tls.clone().unwrap_or_default();
            {
                let mut seen = cluster_phases
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                if seen.last() != Some(&st.phase) {
                    seen.push(st.phase);
                }
            }
            if let Some(p) = &tls.ca_rotation {
                let mut seen = phases.lock().unwrap_or_else(PoisonError::into_inner);
                if seen.last() != Some(p) {
                    seen.push(p.clone());
                }
            }
            let done = tls.ca_rotated.as_deref() == Some("c1")
                && tls.ca_rotation.is_none()
                && st.ready_members == 3
                && st.phase == ClusterPhase::Running;
            if done {
                Ok(())
            } else {
                Err(format!("{:?} {:?}", st.phase, tls.ca_rotation))
            }
        },
    )
    .await
    .expect("the rotation finishes");
    let wall = started.elapsed();
    let seen = load.finish(&urls, &dir).await;
    CaRotationRun {
        scenario: s,
        version,
        urls,
        dir,
        old_ca,
        before,
        wall,
        phases: phases.into_inner().unwrap_or_else(PoisonError::into_inner),
        cluster_phases: cluster_phases
            .into_inner()
            .unwrap_or_else(PoisonError::into_inner),
        seen,
    }
}

impl CaRotationRun {
    /// One line of what the run measured.
    pub fn summary(&self) -> String {
        format!(
            "CA rotation, 3 members, {}: {:.1} s; phases {:?}; {}",
            self.version,
            self.wall.as_secs_f64(),
            self.phases,
            self.seen.summary(),
        )
    }
}
