//! Benchmark of the reconcile loop on the local runtime against real etcd (not a test: it
//! prints numbers). Run with `cargo bench --bench local_cluster`.
//!
//! Prints: create-3, scale 3 -> 5, kill -9 -> restarted and -> healthy, the 3-member upgrade
//! 3.4 -> 3.5 with the longest stall of a continuous writer, and the operator's RSS while it
//! manages 10 local clusters of 3 (the real binary, measured from /proc).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use etcd_operator::api::cluster::ClusterPhase;
use etcd_operator::testing::operator::*;
use etcd_operator::testing::wait::wait_for;

fn secs(d: Duration) -> String {
    format!("{:.2}s", d.as_secs_f64())
}

async fn create_scale_kill() {
    let v = latest(5);
    let mut s = Scenario::new(fast_policy());
    let t = Instant::now();
    s.write(&cluster_yaml("bench", 3, &v, ""));
    s.start();
    let st = s.wait_running("bench", 3, &v).await;
    println!(
        "create 3 members ({v}):                {}",
        secs(t.elapsed())
    );

    let t = Instant::now();
    s.write(&cluster_yaml("bench", 5, &v, ""));
    s.wait_running("bench", 5, &v).await;
    println!(
        "scale 3 -> 5:                          {}",
        secs(t.elapsed())
    );

    let victim = st.members[1].name.clone();
    let pid = member_pid(&s.state_dir(), "bench", &victim);
    let t = Instant::now();
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).unwrap();
    let state = s.state_dir();
    wait_for(LONG, "victim restarted", || async {
        match member_pid_opt(&state, "bench", &victim) {
            Some(p) if p != pid => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await
    .unwrap();
    let restarted = t.elapsed();
    s.wait_status("bench", "all healthy again", |st| {
        st.phase == ClusterPhase::Running && st.members.iter().all(|m| m.healthy)
    })
    .await;
    println!(
        "kill -9 a member -> process restarted:  {}   -> healthy: {}",
        secs(restarted),
        secs(t.elapsed())
    );

    // A member whose data is gone cannot come back as itself: it is removed and replaced.
    let st = s.wait_running("bench", 5, &v).await;
    let victim = st
        .members
        .iter()
        .find(|m| !m.is_leader)
        .unwrap()
        .name
        .clone();
    let pid = member_pid(&s.state_dir(), "bench", &victim);
    std::fs::remove_dir_all(
        s.state_dir()
            .join("clusters/default/bench")
            .join(&victim)
            .join("data"),
    )
    .unwrap();
    let t = Instant::now();
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).unwrap();
    let names_before: Vec<String> = st.members.iter().map(|m| m.name.clone()).collect();
    let started = s
        .wait_status("bench", "replacement started", |st| {
            st.members.iter().any(|m| !names_before.contains(&m.name))
        })
        .await;
    let replacement_started = t.elapsed();
    let newcomer = started
        .members
        .iter()
        .find(|m| !names_before.contains(&m.name))
        .map(|m| m.name.clone())
        .unwrap_or_default();
    s.wait_running("bench", 5, &v).await;
    println!(
        "data lost + kill -9 -> replacement {newcomer} started: {}   -> all healthy: {}",
        secs(replacement_started),
        secs(t.elapsed())
    );
}

async fn upgrade_with_writer() {
    let (v34, v35) = (latest(4), latest(5));
    let mut s = Scenario::new(fast_policy());
    s.write(&cluster_yaml("upg", 3, &v34, ""));
    s.start();
    let st = s.wait_running("upg", 3, &v34).await;
    let urls = client_urls(&st);
    let options = etcd_operator::testing::converged::connect_options(
        etcd_operator::testing::operator::client_tls(&st).as_ref(),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut c = etcd_client::Client::connect(urls, Some(options))
                .await
                .unwrap();
            let (mut acked, mut longest, mut i) = (0u64, Duration::ZERO, 0u64);
            let mut last_ok = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                let put = tokio::time::timeout(
                    Duration::from_secs(2),
                    c.put(format!("w/{i:08}"), "x", None),
                )
                .await;
                if let Ok(Ok(_)) = put {
                    acked += 1;
                    longest = longest.max(last_ok.elapsed());
                    last_ok = Instant::now();
                }
                i += 1;
            }
            (acked, longest)
        })
    };
    let t = Instant::now();
    s.write(&cluster_yaml("upg", 3, &v35, ""));
    s.wait_running("upg", 3, &v35).await;
    let took = t.elapsed();
    stop.store(true, Ordering::Relaxed);
    let (acked, longest) = writer.await.unwrap();
    println!(
        "upgrade 3 members {v34} -> {v35}:    {}   writer: {acked} acknowledged puts, longest stall {}",
        secs(took),
        secs(longest)
    );
}

fn rss_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

async fn rss_with_ten_clusters() {
    let v = latest(5);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("clusters.yaml");
    let docs: Vec<String> = (0..10)
        .map(|i| cluster_yaml(&format!("c{i}"), 3, &v, ""))
        .collect();
    std::fs::write(&file, docs.join("---\n")).unwrap();
    let state = dir.path().join("state");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_etcd-operator"))
        .arg("local")
        .arg("--file")
        .arg(&file)
        .arg("--state-dir")
        .arg(&state)
        .arg("--etcd-bin-dir")
        .arg(etcd_operator::testing::etcd_bin::etcd_bin_dir())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let pid = child.id().unwrap();
    let t = Instant::now();
    let files = etcd_operator::drivers::local::store::StatusFiles::new(&state);
    let all_running = wait_for(Duration::from_secs(240), "10 clusters running", || async {
        let cs: Vec<etcd_operator::api::EtcdCluster> =
            files.read_all().map_err(|e| e.to_string())?;
        let running = cs
            .iter()
            .filter(|c| {
                c.status
                    .as_ref()
                    .is_some_and(|s| s.phase == ClusterPhase::Running && s.ready_members == 3)
            })
            .count();
        if running == 10 {
            Ok(())
        } else {
            Err(format!("{running} of 10 running"))
        }
    })
    .await;
    let ready_in = t.elapsed();
    // Keep managing them for a while (health checks every resync) and sample RSS.
    let mut samples = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    for _ in 0..10 {
        tick.tick().await;
        samples.push(rss_kib(pid, "VmRSS:"));
    }
    let hwm = rss_kib(pid, "VmHWM:");
    let _ = child.kill().await;
    kill_processes_under(dir.path());
    all_running.unwrap();
    println!(
        "10 clusters x 3 members: all running in {}; operator RSS {} MiB (peak {} MiB)",
        secs(ready_in),
        samples.iter().max().copied().unwrap_or(0) / 1024,
        hwm / 1024
    );
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        create_scale_kill().await;
        upgrade_with_writer().await;
        rss_with_ten_clusters().await;
    });
}
