//! Benchmark of the operator's defragmentation on the local runtime against real etcd (not a
//! test: it prints numbers). Run with `cargo bench --bench maintenance`;
//! `BENCH_DB_MIB` sets the backend size to reach before compacting (default 1024),
//! `BENCH_LIVE_MIB` how much of it stays live after compaction (default 64; defragmenting
//! copies the live data).
//!
//! Fills a 3-member cluster until every backend is `BENCH_DB_MIB`, compacts the history
//! away, then turns on a defragmentation schedule and prints, for the operator's run: the
//! bytes reclaimed, the wall time of the run and of each member, and the longest stall of a
//! writer that runs throughout.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use etcd_operator::api::maintenance::MaintenanceReason;
use etcd_operator::testing::operator::*;
use etcd_operator::testing::wait::wait_for;

const MIB: i64 = 1024 * 1024;

fn secs(d: Duration) -> String {
    format!("{:.2}s", d.as_secs_f64())
}

async fn defrag_large_db() {
    let target_mib: i64 = std::env::var("BENCH_DB_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024);
    let live_mib: i64 = std::env::var("BENCH_LIVE_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64)
        .clamp(1, target_mib);
    let v = latest(5);
    let mut s = Scenario::new(fast_policy());
    // A quota above the target, and frequent raft snapshots so the WAL is purged while
    // filling (disk is shared).
    let options = format!(
        "  etcd:\n    quotaBackendBytes: {}\n    snapshotCount: 500\n",
        (target_mib * 2 + 512) * MIB
    );
    s.write(&cluster_yaml("big", 3, &v, &options));
    s.start();
    let st = s.wait_running("big", 3, &v).await;

    // `live_mib` keys of 1 MiB, overwritten until every backend reaches the target.
    let t = Instant::now();
    let mut c = kv(&st).await;
    let value = "z".repeat(1024 * 1024);
    let mut rev = 0;
    let mut written = 0i64;
    loop {
        for i in 0..live_mib {
            let r = c
                .put(format!("big/{i:04}"), value.clone(), None)
                .await
                .unwrap();
            rev = r.header().unwrap().revision();
            written += 1;
        }
        let now = s.status("big").and_then(|c| c.status).unwrap();
        let smallest = now
            .members
            .iter()
            .filter_map(|m| m.db_size)
            .min()
            .unwrap_or(0);
        if smallest >= target_mib * MIB {
            break;
        }
    }
    c.compact(
        rev,
        Some(etcd_client::CompactionOptions::new().with_physical()),
    )
    .await
    .unwrap();
    println!(
        "filled 3 members to {target_mib} MiB each, {live_mib} MiB live ({written} MiB written) in {}",
        secs(t.elapsed())
    );

    // A writer of small values through every member; its longest gap between acknowledged
    // writes is the stall clients see.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        let mut c = kv(&st).await;
        tokio::spawn(async move {
            let mut longest = Duration::ZERO;
            let mut last = Instant::now();
            let mut acked = 0u64;
            let mut seq = 0u64;
            while !stop.load(Ordering::Relaxed) {
                seq += 1;
                let put = c.put(format!("w/{:03}", seq % 100), format!("{seq}"), None);
                if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_secs(30), put).await {
                    let now = Instant::now();
                    longest = longest.max(now - last);
                    last = now;
                    acked += 1;
                }
            }
            (acked, longest)
        })
    };
    // Followers count freed pages only after a later commit: the writer makes them.
    s.wait_status("big", "the freed pages show as free", |st| {
        st.members.iter().all(|m| {
            m.db_size
                .zip(m.db_size_in_use)
                .is_some_and(|(size, used)| size - used >= (target_mib - live_mib) * MIB / 2)
        })
    })
    .await;

    let t = Instant::now();
    s.write(&cluster_yaml(
        "big",
        3,
        &v,
        &format!(
            "{options}  maintenance:\n    defrag:\n      schedule: \"* * * * * *\"\n      minFragmentedBytes: 64Mi\n"
        ),
    ));
    // Each member's time, from when the previous one showed up in the run.
    let mut marks = Vec::new();
    let done = wait_for(
        Duration::from_secs(1800),
        "the scheduled run finished",
        || {
            let st = s.status("big").and_then(|c| c.status);
            let run = st.as_ref().and_then(|st| st.maintenance.as_ref());
            let in_progress = run
                .and_then(|m| m.run.as_ref())
                .map(|r| r.defragmented.len())
                .unwrap_or(0);
            if in_progress > marks.len() {
                marks.push(t.elapsed());
            }
            let last = run
                .and_then(|m| m.last_run.clone())
                .filter(|r| r.reason == MaintenanceReason::Scheduled);
            async move { last.ok_or_else(|| "not yet".to_string()) }
        },
    )
    .await
    .unwrap();
    let took = t.elapsed();
    stop.store(true, Ordering::Relaxed);
    let (acked, stall) = writer.await.unwrap();
    let reclaimed = done.reclaimed_bytes.unwrap_or(0);
    let order: Vec<&str> = done.defragmented.iter().map(|d| d.name.as_str()).collect();
    println!(
        "defrag of 3 x {target_mib} MiB: reclaimed {} MiB in {} (members {order:?}, seen done at {:?})",
        reclaimed / MIB,
        secs(took),
        marks.iter().map(|d| secs(*d)).collect::<Vec<_>>()
    );
    println!("writer during the run: {acked} writes acknowledged, longest stall {stall:?}");
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(defrag_large_db());
}
