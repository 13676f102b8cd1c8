//! Space maintenance on the local runtime against real etcd (issue 14): a NOSPACE alarm is
//! handled under a writer, and a scheduled defragmentation goes one member at a time, the
//! leader last. A writer runs throughout; no acknowledged write may be lost.

use std::collections::HashMap;

use etcd_operator::api::EtcdClusterStatus;
use etcd_operator::api::condition;
use etcd_operator::api::maintenance::{MaintenanceOutcome, MaintenanceReason};
use etcd_operator::etcd::{AlarmKind, EtcdAdmin};
use etcd_operator::testing::operator::*;
use etcd_operator::testing::writer::{Overwriter, Overwritten};

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
    let writer = Overwriter::start(kv(&st).await, "full", 100, 16 * 1024);
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
    writer.wait_for_acks(after + 50).await;
    let Overwritten {
        acked_count: acked,
        longest_stall: stall,
        no_space_errors: refused,
        other_errors: other,
        ..
    } = writer.stop_and_verify(kv(&done).await).await;
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
    let writer = Overwriter::start(kv(&st).await, "small", 50, 512);
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
    let Overwritten {
        acked_count: acked,
        longest_stall: stall,
        other_errors: other,
        ..
    } = writer.stop_and_verify(kv(&done).await).await;
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
