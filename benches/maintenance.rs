//! Benchmark of the operator's defragmentation on the local runtime against real etcd (not a
//! test: it prints numbers; issue 14's "bytes reclaimed and wall time of a defrag of a 1 GB
//! database, and the writer's longest stall"). Run with `cargo bench --bench maintenance`;
//! `BENCH_DB_MIB` sets the backend size to reach before compacting (default 1024),
//! `BENCH_LIVE_MIB` how much of it stays live after compaction (default 64; defragmenting
//! copies the live data).
//!
//! Fills a 3-member cluster until every backend is `BENCH_DB_MIB` (`BENCH_LIVE_MIB` keys of
//! 1 MiB overwritten again and again, the quota raised above it), compacts the history away,
//! then turns on a defragmentation schedule and prints, for the operator's run: the bytes
//! reclaimed, each member's defragmentation (the operator's own timing of the call, from its
//! log) and the run's wall time, and the longest stall of a writer that runs throughout, with
//! the member being defragmented when it happened.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use etcd_operator::api::maintenance::MaintenanceReason;
use etcd_operator::testing::operator::*;
use etcd_operator::testing::wait::wait_for;
use tracing::field::{Field, Visit};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;

/// One "member defragmented" line of the operator's log.
#[derive(Clone, Debug, Default)]
struct MemberDefrag {
    member: String,
    before: String,
    after: String,
    reclaimed: String,
    took: Duration,
    /// When the line was logged, since the bench started.
    at: Duration,
}

/// Collects the operator's "member defragmented" events (it runs in this process).
#[derive(Clone)]
struct DefragLog {
    started: Instant,
    seen: Arc<Mutex<Vec<MemberDefrag>>>,
}

#[derive(Default)]
struct Fields {
    message: String,
    line: MemberDefrag,
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let text = format!("{value:?}");
        match field.name() {
            "message" => self.message = text,
            "member" => self.line.member = text,
            "before" => self.line.before = text,
            "after" => self.line.after = text,
            "reclaimed" => self.line.reclaimed = text,
            _ => {}
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        if field.name() == "took_ms" {
            self.line.took = Duration::from_millis(value);
        }
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for DefragLog {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        if fields.message == "member defragmented" {
            fields.line.at = self.started.elapsed();
            self.seen.lock().unwrap().push(fields.line);
        }
    }
}

/// The 1-minute load average: the machine is shared.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .unwrap_or_default()
}

const MIB: i64 = 1024 * 1024;

fn secs(d: Duration) -> String {
    format!("{:.2}s", d.as_secs_f64())
}

async fn defrag_large_db(log: DefragLog) {
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
    // Physical: the call returns once the history is gone from the backend, which takes a
    // while for 1 GiB of revisions (longer than the 5 s request timeout of `kv`'s client).
    let mut compactor = etcd_client::Client::connect(
        client_urls(&st),
        Some(
            etcd_operator::testing::converged::connect_options(client_tls(&st).as_ref())
                .with_timeout(Duration::from_secs(600)),
        ),
    )
    .await
    .unwrap();
    compactor
        .compact(
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
        let started = log.started;
        tokio::spawn(async move {
            // The longest gap and when it ended (since the bench started).
            let mut longest = (Duration::ZERO, Duration::ZERO);
            let mut last = Instant::now();
            let mut acked = 0u64;
            let mut seq = 0u64;
            while !stop.load(Ordering::Relaxed) {
                seq += 1;
                let put = c.put(format!("w/{:03}", seq % 100), format!("{seq}"), None);
                if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_secs(30), put).await {
                    let now = Instant::now();
                    if now - last > longest.0 {
                        longest = (now - last, now - started);
                    }
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

    // The leader when the run starts: the operator moves leadership away and defragments it last.
    let leader = s
        .status("big")
        .and_then(|c| c.status)
        .and_then(|st| st.members.into_iter().find(|m| m.is_leader))
        .map(|m| m.name)
        .unwrap_or_default();
    let load_at_start = load_average();
    let t = Instant::now();
    let since_start = log.started.elapsed();
    s.write(&cluster_yaml(
        "big",
        3,
        &v,
        &format!(
            "{options}  maintenance:\n    defrag:\n      schedule: \"* * * * * *\"\n      minFragmentedBytes: 64Mi\n"
        ),
    ));
    let done = wait_for(
        Duration::from_secs(1800),
        "the scheduled run finished",
        || {
            let st = s.status("big").and_then(|c| c.status);
            let run = st.as_ref().and_then(|st| st.maintenance.as_ref());
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
    let (acked, (stall, stall_ended_at)) = writer.await.unwrap();
    let reclaimed = done.reclaimed_bytes.unwrap_or(0);
    let lines = log.seen.lock().unwrap().clone();
    // From the first member's defragment call to the last one's end: the calls, the health
    // waits between members and moving leadership away from the last.
    let span = match (lines.first(), lines.last()) {
        (Some(first), Some(last)) => last.at.saturating_sub(first.at.saturating_sub(first.took)),
        _ => Duration::ZERO,
    };

    println!(
        "\ndefrag benchmark: 3-member local cluster, etcd {v}, {target_mib} MiB backend per member ({live_mib} MiB live after compaction), load average {} at start, {} at end",
        load_at_start,
        load_average()
    );
    println!(
        "{:<14}{:>16}{:>16}{:>16}{:>16}{:>14}",
        "member", "db before", "db after", "reclaimed", "defrag (s)", "done at (s)"
    );
    for d in &done.defragmented {
        let line = lines.iter().rev().find(|l| l.member == d.name);
        let cell = |f: &dyn Fn(&MemberDefrag) -> String| line.map(f).unwrap_or_else(|| "?".into());
        println!(
            "{:<14}{:>16}{:>16}{:>16}{:>16}{:>14}",
            if d.name == leader {
                format!("{} (leader)", d.name)
            } else {
                d.name.clone()
            },
            format!("{} MiB", d.db_size_before / MIB),
            cell(&|l| l.after.clone()),
            cell(&|l| l.reclaimed.clone()),
            cell(&|l| format!("{:.2}", l.took.as_secs_f64())),
            cell(&|l| format!("{:.2}", l.at.saturating_sub(since_start).as_secs_f64())),
        );
    }
    println!(
        "run: {} MiB reclaimed; defragment calls {:.2} s added up, first call to last answer {}, schedule turned on to lastRun in status {}",
        reclaimed / MIB,
        lines.iter().map(|l| l.took.as_secs_f64()).sum::<f64>(),
        secs(span),
        secs(took),
    );
    let during = lines
        .iter()
        .find(|l| {
            let end = l.at;
            let start = end.saturating_sub(l.took);
            stall_ended_at >= start && stall_ended_at.saturating_sub(stall) <= end
        })
        .map(|l| format!("overlapping {}'s defragmentation", l.member))
        .unwrap_or_else(|| "outside any member's defragmentation".into());
    println!(
        "writer (one put at a time, through all members): {acked} writes acknowledged during the run, longest stall {:.0} ms, {during}",
        stall.as_secs_f64() * 1e3
    );
}

fn main() {
    let log = DefragLog {
        started: Instant::now(),
        seen: Arc::default(),
    };
    tracing_subscriber::registry()
        .with(log.clone())
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_filter(
                    tracing_subscriber::EnvFilter::try_from_default_env()
                        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
                ),
        )
        .init();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(defrag_large_db(log));
}
