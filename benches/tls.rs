//! Benchmark of TLS on the local runtime against real etcd (not a test: it prints numbers).
//! Run with `cargo bench --bench tls`.
//!
//! Prints, for a 3-member etcd 3.5 cluster:
//! - leaf rotation on request (`spec.tls.rotate`), five times, under a writer that writes
//!   through the application client certificate and reconnects after each rotation: the
//!   wall time from the spec change to every member serving its new server certificate,
//!   the writer's acknowledged puts and longest stall, quorum sampled every 100 ms (health
//!   of every member through the operator's identity) and, at the end, how many
//!   acknowledged writes are missing;
//! - CA rotation (`spec.tls.rotateCA`, three phases of rolling restarts) of a 3-member
//!   cluster on 3.5 and 3.4 under the same kind of writer: wall time, phases, the writer's
//!   longest stall, writes lost, quorum samples;
//! - a running plaintext 3-member cluster on 3.5 and 3.4 moved to TLS (`spec.tls.mode:
//!   Disabled` dropped), and a TLS one moved to plaintext, under a writer that follows each
//!   member's client URL: the same numbers;
//! - the cost of TLS on what a reconcile pass does with etcd: connect to every member, list
//!   members and read each member's status (new connections, so new TLS handshakes, every pass), against
//!   the same on a plaintext cluster.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use etcd_operator::api::EtcdClusterStatus;
use etcd_operator::etcd::{EtcdAdmin, TlsConfig};
use etcd_operator::testing::converged::client_tls_in;
use etcd_operator::testing::operator::*;
use etcd_operator::testing::tls::{der_of, served_certificate};
use etcd_operator::testing::wait::wait_for;
use etcd_operator::testing::writer::{Writer, missing_writes, sample_quorum};

fn secs(d: Duration) -> String {
    format!("{:.2}s", d.as_secs_f64())
}

fn tls_dir(st: &EtcdClusterStatus) -> String {
    st.tls
        .as_ref()
        .and_then(|t| t.client_certificate.clone())
        .expect("client certificate dir")
}

async fn rotation_under_a_writer() {
    let v = latest(5);
    let mut s = Scenario::new(fast_policy());
    s.write(&cluster_yaml("rot", 3, &v, ""));
    s.start();
    let st = s.wait_running("rot", 3, &v).await;
    let urls = client_urls(&st);
    let dir = tls_dir(&st);
    let writer = Writer::start(urls.clone(), dir.clone().into());
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = sample_quorum(urls.clone(), dir.clone().into(), stop.clone());
    let mut walls = Vec::new();
    for round in 1..=5 {
        let value = format!("r{round}");
        let t = Instant::now();
        s.write(&cluster_yaml(
            "rot",
            3,
            &v,
            &format!("  tls:\n    rotate: \"{value}\"\n"),
        ));
        s.wait_status("rot", "rotation recorded", |st| {
            st.tls.as_ref().and_then(|t| t.rotated.as_deref()) == Some(value.as_str())
        })
        .await;
        let new = der_of(&std::fs::read(Path::new(&dir).join("server.crt")).unwrap()).unwrap();
        let identity = client_tls_in(Path::new(&dir)).expect("identity");
        for url in &urls {
            let address = url.trim_start_matches("https://").to_string();
            wait_for(LONG, "member serves the new certificate", || async {
                match served_certificate(&address, "127.0.0.1", &identity) {
                    Ok(served) if served == new => Ok(()),
                    other => Err(format!("{:?}", other.map(|_| "old certificate"))),
                }
            })
            .await
            .unwrap();
        }
        walls.push(t.elapsed());
        writer.reconnect.store(true, Ordering::Relaxed);
        // The writer reconnects with the new client certificate and writes 500 more before
        // the next rotation, so every rotation happens under a running writer.
        let target = writer.acked_count() + 500;
        wait_for(LONG, "500 more acknowledged puts", || async {
            let n = writer.acked_count();
            if n >= target {
                Ok(())
            } else {
                Err(format!("{n}"))
            }
        })
        .await
        .unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    let (samples, without_quorum) = sampler.await.unwrap();
    let written = writer.stop().await;
    let missing = missing_writes(&urls, Path::new(&dir), &written).await.len();
    let walls: Vec<String> = walls.iter().map(|d| secs(*d)).collect();
    println!(
        "leaf rotation x5 (3 members, {v}): served by every member after {}",
        walls.join(", ")
    );
    println!(
        "  writer through the client certificate: {} acknowledged puts, longest stall {}, missing after: {missing}; reconnects that read a mismatched key and certificate: {torn}",
        written.acked.len(),
        secs(written.longest_stall),
        torn = written.retried_connects,
    );
    println!("  quorum samples: {samples}, without quorum: {without_quorum}");
}

/// Connect, list members, read each member's status: what a pass does with etcd.
async fn pass_io(urls: &[String], tls: Option<TlsConfig>) -> Duration {
    let t = Instant::now();
    let admin = EtcdAdmin::connect(urls.to_vec(), tls).await.unwrap();
    admin.member_list().await.unwrap();
    for url in urls {
        admin.status(url).await.unwrap();
    }
    t.elapsed()
}

async fn pass_cost() {
    let v = latest(5);
    let mut s = Scenario::new(fast_policy());
    s.write(&format!(
        "{}---\n{}",
        cluster_yaml("sec", 3, &v, ""),
        cluster_yaml("open", 3, &v, "  tls:\n    mode: Disabled\n")
    ));
    s.start();
    let sec = s.wait_running("sec", 3, &v).await;
    let open = s.wait_running("open", 3, &v).await;
    let tls = client_tls_in(Path::new(&tls_dir(&sec)));
    const ROUNDS: u32 = 50;
    let mut results = Vec::new();
    for (name, urls, tls) in [
        ("TLS", client_urls(&sec), tls),
        ("plaintext", client_urls(&open), None),
    ] {
        // One unmeasured round each: the first connection pays for DNS, page cache, ...
        pass_io(&urls, tls.clone()).await;
        let mut total = Duration::ZERO;
        for _ in 0..ROUNDS {
            total += pass_io(&urls, tls.clone()).await;
        }
        results.push((name, total / ROUNDS));
    }
    for (name, mean) in results {
        println!(
            "pass I/O with etcd ({name}, 3 members: connect + member list + 3 status, {ROUNDS} rounds): mean {:.1} ms (new connections every pass)",
            mean.as_secs_f64() * 1000.0
        );
    }
}

/// `spec.tls.rotateCA` on 3-member clusters (3.5 and 3.4) under a writer through the
/// application certificate: three phases, each a rolling restart.
async fn ca_rotation() {
    use etcd_operator::testing::ca_rotation_run::rotate_ca_under_a_writer;
    for minor in [5, 4] {
        let run = rotate_ca_under_a_writer(minor).await;
        println!("{}", run.summary());
    }
}

/// A running plaintext 3-member cluster (3.5 and 3.4) moved to TLS under a writer that
/// follows each member's client URL (two rolls: peer certificate, then listeners), and a
/// TLS one moved to plaintext (listeners, then certificates dropped).
async fn plaintext_to_tls() {
    use etcd_operator::testing::tls_move_run::{
        move_to_plaintext_under_a_writer, move_to_tls_under_a_writer,
    };
    for minor in [5, 4] {
        println!("{}", move_to_tls_under_a_writer(minor).await.summary());
        println!(
            "{}",
            move_to_plaintext_under_a_writer(minor).await.summary()
        );
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        rotation_under_a_writer().await;
        ca_rotation().await;
        plaintext_to_tls().await;
        pass_cost().await;
    });
}
