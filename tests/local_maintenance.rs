//! Space maintenance on the local runtime against real etcd (issue 14): a NOSPACE alarm is
//! handled under a writer, and a scheduled defragmentation goes one member at a time, the
//! leader last. A writer runs throughout; no acknowledged write may be lost.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use etcd_operator::api::EtcdClusterStatus;
use etcd_operator::api::condition;
use etcd_operator::api::maintenance::{MaintenanceOutcome, MaintenanceReason};
use etcd_operator::etcd::{AlarmKind, EtcdAdmin};
use etcd_operator::testing::operator::*;

/// What the writer saw.
#[derive(Default)]
struct Seen {
    /// Key -> sequence number of the last write etcd acknowledged.
    acked: HashMap<String, u64>,
    no_space_errors: u64,
    other_errors: u64,
    longest_stall: Duration,
}

/// Overwrites `keys` keys under `prefix` with `value_bytes`-byte values, in a loop, until
/// stopped; the value starts with the write's sequence number.
struct Writer {
    stop: Arc<AtomicBool>,
    acked_count: Arc<AtomicU64>,
    seen: Arc<Mutex<Seen>>,
    task: tokio::task::JoinHandle<()>,
    prefix: String,
}

impl Writer {
    async fn start(st: &EtcdClusterStatus, prefix: &str, keys: u64, value_bytes: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let acked_count = Arc::new(AtomicU64::new(0));
        let seen = Arc::new(Mutex::new(Seen::default()));
        let mut client = kv(st).await;
        let (s, a, sn, p) = (
            stop.clone(),
            acked_count.clone(),
            seen.clone(),
            prefix.to_string(),
        );
        let task = tokio::spawn(async move {
            let mut seq = 0u64;
            let mut last_ok = Instant::now();
            while !s.load(Ordering::Relaxed) {
                seq += 1;
                let key = format!("{p}/{:04}", seq % keys);
                let mut value = format!("{seq:012}");
                value.push_str(&"x".repeat(value_bytes.saturating_sub(12)));
                let put = client.put(key.clone(), value, None);
                match tokio::time::timeout(Duration::from_secs(5), put).await {
                    Ok(Ok(_)) => {
                        let now = Instant::now();
                        let mut seen = sn.lock().unwrap();
                        seen.longest_stall = seen.longest_stall.max(now - last_ok);
                        seen.acked.insert(key, seq);
                        last_ok = now;
                        a.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(Err(e)) if e.to_string().contains("database space exceeded") => {
                        sn.lock().unwrap().no_space_errors += 1;
                        // Refused at once: back off a little rather than spin on the alarm.
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    _ => {
                        sn.lock().unwrap().other_errors += 1;
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            }
        });
        Self {
            stop,
            acked_count,
            seen,
            task,
            prefix: prefix.to_string(),
        }
    }

    fn acked(&self) -> u64 {
        self.acked_count.load(Ordering::Relaxed)
    }

    fn no_space_errors(&self) -> u64 {
        self.seen.lock().unwrap().no_space_errors
    }

    /// Stops the writer and checks every acknowledged write against what etcd holds: each
    /// key holds the last acknowledged write or a later one. Returns (acked, longest stall).
    async fn stop_and_verify(self, st: &EtcdClusterStatus) -> (u64, Duration, u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap();
        let seen = std::mem::take(&mut *self.seen.lock().unwrap());
        let mut c = kv(st).await;
        let resp = c
            .get(
                format!("{}/", self.prefix),
                Some(etcd_client::GetOptions::new().with_prefix()),
            )
            .await
            .unwrap();
        let stored: HashMap<String, u64> = resp
            .kvs()
            .iter()
            .map(|kv| {
                let v = kv.value_str().unwrap();
                (kv.key_str().unwrap().to_string(), v[..12].parse().unwrap())
            })
            .collect();
        for (key, seq) in &seen.acked {
            let got = stored.get(key).copied();
            assert!(
                got.is_some_and(|g| g >= *seq),
                "{key}: acknowledged write {seq} lost, etcd holds {got:?}"
            );
        }
        (
            self.acked_count.load(Ordering::Relaxed),
            seen.longest_stall,
            seen.no_space_errors,
            seen.other_errors,
        )
    }
}

async fn active_alarms(st: &EtcdClusterStatus) -> Vec<AlarmKind> {
    let admin = EtcdAdmin::connect(client_urls(st), client_tls(st))
        .await
        .unwrap();
    admin
        .alarm_list()
        .await
        .unwrap()
        .into_iter()
        .map(|a| a.kind)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nospace_alarm_is_compacted_defragmented_and_disarmed_under_a_writer() {
    const QUOTA: u64 = 16 * 1024 * 1024;
    let v = latest(5);
    let mut s = Scenario::new(fast_policy());
    s.write(&cluster_yaml(
        "full",
        3,
        &v,
        &format!("  etcd:\n    quotaBackendBytes: {QUOTA}\n"),
    ));
    s.start();
    let st = s.wait_running("full", 3, &v).await;
    // 100 keys of 16 KiB overwritten in a loop: 1.6 MiB live, history until the quota.
    let writer = Writer::start(&st, "full", 100, 16 * 1024).await;
    let during = s
        .wait_status("full", "the operator sees the NOSPACE alarm", |st| {
            st.maintenance
                .as_ref()
                .is_some_and(|m| m.run.is_some() || m.last_run.is_some())
                || condition::find(&st.conditions, condition::types::MAINTENANCE)
                    .is_some_and(|c| c.reason == "NoSpace")
        })
        .await;
    assert!(
        writer.no_space_errors() > 0,
        "the writer was refused with NOSPACE"
    );
    let cond = condition::find(&during.conditions, condition::types::MAINTENANCE).unwrap();
    assert!(cond.message.contains("NOSPACE"), "{}", cond.message);
    let done = s
        .wait_status("full", "the NOSPACE run finished", |st| {
            st.maintenance
                .as_ref()
                .and_then(|m| m.last_run.as_ref())
                .is_some_and(|r| r.reason == MaintenanceReason::NoSpace)
        })
        .await;
    let run = done.maintenance.as_ref().unwrap().last_run.clone().unwrap();
    assert_eq!(run.outcome, Some(MaintenanceOutcome::Finished), "{run:?}");
    assert!(run.compacted_revision.is_some(), "compacted first: {run:?}");
    assert_eq!(run.defragmented.len(), 3, "every member: {run:?}");
    let reclaimed = run.reclaimed_bytes.unwrap();
    assert!(reclaimed > 0, "{run:?}");
    let leader_last = &run.defragmented[2].name;
    assert!(
        run.defragmented[..2].iter().all(|d| &d.name != leader_last),
        "one member at a time, each once: {run:?}"
    );
    for m in &done.members {
        let size = m.db_size.unwrap() as u64;
        assert!(size * 10 <= QUOTA * 9, "{} has room: {size}", m.name);
    }
    let cond = condition::find(&done.conditions, condition::types::MAINTENANCE).unwrap();
    println!("maintenance condition: {} {}", cond.reason, cond.message);

    // Writes succeed again.
    let after = writer.acked();
    wait_for_acks(&writer, after + 50).await;
    let (acked, stall, refused, other) = writer.stop_and_verify(&done).await;
    assert!(!active_alarms(&done).await.contains(&AlarmKind::NoSpace));
    println!(
        "nospace: {acked} writes acknowledged, {refused} refused with NOSPACE, {other} other errors; \
         reclaimed {reclaimed} bytes; writer's longest stall {stall:?}"
    );
    let metrics = s.metrics.encode();
    assert!(
        metrics.contains(
            "etcd_operator_defrag_reclaimed_bytes_total{namespace=\"default\",cluster=\"full\"}"
        ),
        "{metrics}"
    );
    assert!(
        metrics
            .contains("etcd_operator_member_db_size_bytes{namespace=\"default\",cluster=\"full\""),
        "{metrics}"
    );
}

/// Waits (with a deadline) until the writer has `n` acknowledged writes.
async fn wait_for_acks(writer: &Writer, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if writer.acked() >= n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "writer stuck at {} acknowledged writes, wanted {n}",
            writer.acked()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scheduled_defrag_goes_one_member_at_a_time_leader_last_under_a_writer() {
    let v = latest(5);
    let mut s = Scenario::new(fast_policy());
    s.write(&cluster_yaml("frag", 3, &v, ""));
    s.start();
    let st = s.wait_running("frag", 3, &v).await;
    // Fragment every backend: 300 keys of 32 KiB written three times, history compacted.
    let mut c = kv(&st).await;
    let value = "y".repeat(32 * 1024);
    let mut rev = 0;
    for _ in 0..3 {
        for i in 0..300 {
            let r = c
                .put(format!("bulk/{i:03}"), value.clone(), None)
                .await
                .unwrap();
            rev = r.header().unwrap().revision();
        }
    }
    c.compact(
        rev,
        Some(etcd_client::CompactionOptions::new().with_physical()),
    )
    .await
    .unwrap();
    // Followers count the freed pages as free only after a later commit: a writer makes them.
    let writer = Writer::start(&st, "small", 50, 512).await;
    let fragmented = s
        .wait_status("frag", "every member reports its free space", |st| {
            st.members.iter().all(|m| {
                m.db_size
                    .zip(m.db_size_in_use)
                    .is_some_and(|(size, used)| size - used > 8 * 1024 * 1024)
            })
        })
        .await;
    let leader = fragmented
        .members
        .iter()
        .find(|m| m.is_leader)
        .unwrap()
        .name
        .clone();
    let before: HashMap<String, i64> = fragmented
        .members
        .iter()
        .map(|m| (m.name.clone(), m.db_size.unwrap()))
        .collect();

    s.write(&cluster_yaml(
        "frag",
        3,
        &v,
        "  maintenance:\n    defrag:\n      schedule: \"* * * * * *\"\n      minFragmentedBytes: 4Mi\n      minFragmentedRatio: 0.3\n",
    ));
    let done = s
        .wait_status("frag", "the scheduled run finished", |st| {
            st.maintenance
                .as_ref()
                .and_then(|m| m.last_run.as_ref())
                .is_some_and(|r| r.reason == MaintenanceReason::Scheduled)
        })
        .await;
    let run = done.maintenance.as_ref().unwrap().last_run.clone().unwrap();
    let order: Vec<&str> = run.defragmented.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(order.len(), 3, "{run:?}");
    assert_eq!(order[2], leader, "the leader last: {order:?}");
    assert_ne!(order[0], order[1]);
    let mut followers: Vec<&str> = before
        .keys()
        .map(String::as_str)
        .filter(|n| *n != leader)
        .collect();
    followers.sort();
    assert_eq!(
        &order[..2],
        &followers[..],
        "followers first, lowest ordinal first"
    );
    for m in &done.members {
        let was = before[&m.name];
        let now = m.db_size.unwrap();
        assert!(now < was / 2, "{}: {was} -> {now}", m.name);
    }
    assert!(
        run.compacted_revision.is_none(),
        "a schedule only defragments"
    );
    let reclaimed = run.reclaimed_bytes.unwrap();
    assert!(reclaimed > 0);
    let (acked, stall, _, other) = writer.stop_and_verify(&done).await;
    println!(
        "scheduled defrag: order {order:?}, reclaimed {reclaimed} bytes; writer {acked} writes \
         acknowledged, {other} errors, longest stall {stall:?}"
    );
    let metrics = s.metrics.encode();
    assert!(
        metrics.contains(
            "etcd_operator_defragmentations_total{namespace=\"default\",cluster=\"frag\"} 3"
        ),
        "{metrics}"
    );
}
