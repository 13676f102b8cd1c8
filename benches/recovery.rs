//! Benchmark of recovery from lost quorum on the local runtime against real etcd and a real
//! Garage (not a test: it prints numbers). Run with `cargo bench --bench recovery`;
//! `BENCH_KEYS` sets how many 1 KiB keys the cluster holds (default 20000, about 20 MiB),
//! `BENCH_AFTER` the `spec.recovery.after` (default 5s).
//!
//! For each mode (fromSurvivor, fromBackup), a 3-member cluster is filled and backed up,
//! then two members are killed with their data deleted, and the time is printed from that
//! moment to: the operator seeing quorum lost, the recovery starting (`after` later), the
//! cluster serving again (a quorum of healthy voters), and back to 3 healthy voters.

use std::time::{Duration, Instant};

use etcd_operator::api::EtcdClusterStatus;
use etcd_operator::api::condition::{self, types};
use etcd_operator::api::recovery::RecoveryOutcome;
use etcd_operator::testing::garage::{BUCKET, TestGarage};
use etcd_operator::testing::operator::*;
use futures::StreamExt;

fn secs(d: Duration) -> String {
    format!("{:.2}s", d.as_secs_f64())
}

fn docs(cluster: &str, v: &str, recovery: &str, garage: &TestGarage, backup: bool) -> String {
    let c = garage.credentials();
    let mut parts = vec![
        cluster_yaml(cluster, 3, v, recovery),
        format!(
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: s3\nstringData:\n  accessKeyId: {}\n  secretAccessKey: {}\n",
            c.access_key_id,
            c.secret_access_key()
        ),
    ];
    if backup {
        parts.push(format!(
            "apiVersion: etcd.operator.dev/v1alpha1\nkind: EtcdBackup\nmetadata:\n  name: nightly\nspec:\n  clusterName: {cluster}\n  destination:\n    s3:\n      bucket: {BUCKET}\n      endpoint: {}\n      region: garage\n      forcePathStyle: true\n      credentialsSecret: s3\n",
            garage.endpoint()
        ));
    }
    parts.join("---\n")
}

async fn fill(st: &EtcdClusterStatus, keys: u64) {
    let client = kv(st).await;
    let value = "v".repeat(1024);
    futures::stream::iter(0..keys)
        .map(|i| {
            let mut c = client.clone();
            let value = value.clone();
            async move {
                c.put(format!("bench/{i:08}"), value, None).await.unwrap();
            }
        })
        .buffer_unordered(32)
        .collect::<()>()
        .await;
}

async fn one(mode: &str, recovery: &str, keys: u64, after: &str) {
    let v = latest(5);
    let garage = TestGarage::start().await.unwrap();
    let mut s = Scenario::new(fast_policy());
    let cluster = mode.to_lowercase();
    s.write(&docs(&cluster, &v, recovery, &garage, false));
    s.start();
    let st = s.wait_running(&cluster, 3, &v).await;
    fill(&st, keys).await;
    s.write(&docs(&cluster, &v, recovery, &garage, true));
    let backup = s
        .wait_backup("nightly", "backup ready", |b| b.last_backup.is_some())
        .await
        .last_backup
        .unwrap();
    let survivor = st.members[0].name.clone();
    let state = s.state_dir();
    for m in st.members.iter().filter(|m| m.name != survivor) {
        let pid = member_pid(&state, &cluster, &m.name);
        std::fs::remove_dir_all(
            state
                .join("clusters/default")
                .join(&cluster)
                .join(&m.name)
                .join("data"),
        )
        .unwrap();
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).unwrap();
    }
    let t = Instant::now();
    s.wait_status(&cluster, "quorum lost seen", |st| {
        st.recovery
            .as_ref()
            .is_some_and(|r| r.quorum_lost_since.is_some())
    })
    .await;
    let seen = t.elapsed();
    s.wait_status(&cluster, "recovery started", |st| {
        st.recovery
            .as_ref()
            .is_some_and(|r| r.run.is_some() || r.last_run.is_some())
    })
    .await;
    let started = t.elapsed();
    let st = s
        .wait_status(&cluster, "serving again", |st| {
            let served = st.recovery.as_ref().is_some_and(|r| {
                r.run.as_ref().is_some_and(|run| run.serving_at.is_some())
                    || r.last_run
                        .as_ref()
                        .is_some_and(|run| run.outcome == Some(RecoveryOutcome::Succeeded))
            });
            served && condition::is_true(&st.conditions, types::AVAILABLE)
        })
        .await;
    let serving = t.elapsed();
    let _ = st;
    let st = s.wait_running(&cluster, 3, &v).await;
    let at_size = t.elapsed();
    let run = st.recovery.unwrap().last_run.unwrap();
    let after_d = etcd_operator::api::quantity::parse_duration(after).unwrap_or_default();
    println!(
        "{mode}: {keys} keys of 1 KiB (backup at revision {}), after {after}: from the kill, quorum lost seen {}, run recorded {}, serving {} (the recovery itself, serving - seen - after: {}), 3 healthy voters {}; revision {:?}",
        backup.revision,
        secs(seen),
        secs(started),
        secs(serving),
        secs(serving.saturating_sub(seen).saturating_sub(after_d)),
        secs(at_size),
        run.revision,
    );
}

async fn bench() {
    let keys: u64 = std::env::var("BENCH_KEYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let after = std::env::var("BENCH_AFTER").unwrap_or_else(|_| "5s".into());
    one(
        "fromSurvivor",
        &format!("  recovery:\n    fromSurvivor: true\n    after: {after}\n"),
        keys,
        &after,
    )
    .await;
    one(
        "fromBackup",
        &format!("  recovery:\n    fromBackup:\n      backupName: nightly\n    after: {after}\n"),
        keys,
        &after,
    )
    .await;
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(bench());
}
