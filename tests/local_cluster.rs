//! The reconcile loop on the local runtime, end to end against real etcd processes: the
//! scenarios of the reconcile-core issue. Each test runs its own operator loop on its own
//! state dir, and every process under that dir is killed when it ends, also on panic.

use std::time::{Duration, Instant};

use etcd_operator::api::cluster::ClusterPhase;
use etcd_operator::api::condition;
use etcd_operator::testing::converged;
use etcd_operator::testing::operator::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn create_three_then_scale_to_five_and_back() {
    let v = latest(5);
    let mut s = Scenario::new(fast_policy());
    s.write(&cluster_yaml("scale", 3, &v, ""));
    s.start();
    let st = s.wait_running("scale", 3, &v).await;
    let info = members_via_etcd(&st).await;
    assert_eq!(info.members.len(), 3);
    assert_eq!(
        st.members.iter().filter(|m| m.is_leader).count(),
        1,
        "one leader"
    );
    put_keys(&st, "scale", 50).await;

    s.write(&cluster_yaml("scale", 5, &v, ""));
    let st = s.wait_running("scale", 5, &v).await;
    let info = members_via_etcd(&st).await;
    assert_eq!(info.voters().count(), 5);
    assert_eq!(info.learners().count(), 0);
    assert_keys(&st, "scale", 50).await;

    s.write(&cluster_yaml("scale", 3, &v, ""));
    let st = s.wait_running("scale", 3, &v).await;
    let info = members_via_etcd(&st).await;
    assert_eq!(info.voters().count(), 3);
    assert_keys(&st, "scale", 50).await;
    let gen_ = s.status("scale").unwrap().metadata.generation;
    assert_eq!(gen_, Some(3), "each edit is a new generation");
    let metrics = s.metrics.encode();
    for step in [
        "Bootstrapping",
        "AddingLearner",
        "PromotingLearner",
        "RemovingMember",
    ] {
        assert!(
            metrics.contains(&format!("etcd_operator_steps_total{{step=\"{step}\"}}")),
            "{step} not counted in:\n{metrics}"
        );
    }
    assert!(metrics.contains(
        "etcd_operator_cluster_healthy_members{namespace=\"default\",cluster=\"scale\"} 3"
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killed_member_is_restarted_as_the_same_member() {
    let v = latest(5);
    let mut s = Scenario::new(fast_policy());
    s.write(&cluster_yaml("kill", 3, &v, ""));
    s.start();
    let st = s.wait_running("kill", 3, &v).await;
    put_keys(&st, "kill", 20).await;
    let victim = st.members[1].clone();
    let pid = member_pid(&s.state_dir(), "kill", &victim.name);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).unwrap();
    let st = s
        .wait_status("kill", "victim restarted", |st| {
            st.phase == ClusterPhase::Running
                && st.members.len() == 3
                && st.members.iter().all(|m| m.healthy)
                && member_pid_opt(&s.state_dir(), "kill", &victim.name).is_some_and(|p| p != pid)
        })
        .await;
    let again = st
        .members
        .iter()
        .find(|m| m.name == victim.name)
        .expect("same member name");
    assert_eq!(again.id, victim.id, "same etcd member id");
    assert_keys(&st, "kill", 20).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn member_whose_data_is_gone_is_replaced() {
    let v = latest(5);
    let mut s = Scenario::new(fast_policy());
    s.write(&cluster_yaml("lost", 3, &v, ""));
    s.start();
    let st = s.wait_running("lost", 3, &v).await;
    put_keys(&st, "lost", 20).await;
    let victim = st.members.iter().find(|m| !m.is_leader).unwrap().clone();
    let member_dir = s
        .state_dir()
        .join("clusters/default/lost")
        .join(&victim.name);
    let pid = member_pid(&s.state_dir(), "lost", &victim.name);
    std::fs::remove_dir_all(member_dir.join("data")).unwrap();
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).unwrap();
    let st = s
        .wait_status("lost", "replacement healthy", |st| {
            st.phase == ClusterPhase::Running
                && st.members.len() == 3
                && st.members.iter().all(|m| m.healthy && !m.is_learner)
                && !st.members.iter().any(|m| m.name == victim.name)
        })
        .await;
    let info = members_via_etcd(&st).await;
    assert_eq!(info.voters().count(), 3);
    assert!(
        info.members
            .iter()
            .all(|m| Some(m.id.to_string()) != victim.id)
    );
    assert_keys(&st, "lost", 20).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_formed_cluster_that_lost_every_member_is_not_bootstrapped_again() {
    let v = latest(5);
    let mut s = Scenario::new(fast_policy());
    s.write(&cluster_yaml("gone", 1, &v, ""));
    s.start();
    let st = s.wait_running("gone", 1, &v).await;
    let member = st.members[0].name.clone();
    let data = s
        .state_dir()
        .join("clusters/default/gone")
        .join(&member)
        .join("data");
    let pid = member_pid(&s.state_dir(), "gone", &member);
    // Data first, then the process: killed first, the operator may restart it (its data
    // still there) before the data is gone, and that member then runs on a deleted dir.
    std::fs::remove_dir_all(&data).unwrap();
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).unwrap();
    let st = s
        .wait_status("gone", "AllMembersLost", |st| {
            st.phase == ClusterPhase::Degraded
                && condition::find(&st.conditions, condition::types::DEGRADED)
                    .is_some_and(|c| c.reason == "AllMembersLost")
        })
        .await;
    assert!(
        st.cluster_id.is_some(),
        "the id that proves it formed is kept"
    );
    assert!(
        !data.exists() && member_pid_opt(&s.state_dir(), "gone", &member).is_none(),
        "no member was started on an empty data dir"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hung_member_is_restarted_in_place_after_the_grace_period() {
    let v = latest(5);
    let mut s = Scenario::new(fast_policy());
    s.write(&cluster_yaml("hung", 3, &v, ""));
    s.start();
    let st = s.wait_running("hung", 3, &v).await;
    put_keys(&st, "hung", 20).await;
    let victim = st.members.iter().find(|m| !m.is_leader).unwrap().clone();
    let pid = member_pid(&s.state_dir(), "hung", &victim.name);
    let stopped = Instant::now();
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).unwrap();
    // Issue 9, item 7: the member keeps its data and its id (no removal, no snapshot
    // transfer): a new process on the same data dir, not a replacement.
    let state_dir = s.state_dir();
    let st = s
        .wait_status("hung", "hung member restarted in place", |st| {
            st.phase == ClusterPhase::Running
                && st.members.len() == 3
                && st.members.iter().all(|m| m.healthy && !m.is_learner)
                && st
                    .members
                    .iter()
                    .any(|m| m.name == victim.name && m.id == victim.id)
                && member_pid_opt(&state_dir, "hung", &victim.name).is_some_and(|p| p != pid)
        })
        .await;
    assert!(
        stopped.elapsed() >= fast_policy().unhealthy_grace,
        "restarted only after the grace period"
    );
    assert_keys(&st, "hung", 20).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn invalid_spec_gets_a_condition_and_starts_nothing() {
    let v = latest(5);
    let mut s = Scenario::new(fast_policy());
    s.write(&cluster_yaml("bad", 12, &v, ""));
    s.start();
    let st = s
        .wait_status("bad", "invalid spec reported", |st| {
            condition::find(&st.conditions, condition::types::SPEC_VALID)
                .is_some_and(|c| c.status == "False")
        })
        .await;
    let c = condition::find(&st.conditions, condition::types::SPEC_VALID).unwrap();
    assert!(c.message.contains("spec.size"), "{}", c.message);
    assert_eq!(st.phase, ClusterPhase::Failed);
    assert!(st.members.is_empty());
    assert!(
        !s.state_dir().join("clusters/default/bad").exists(),
        "no member was created"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn skipping_a_minor_version_is_refused_and_nothing_is_touched() {
    let v34 = latest(4);
    let mut s = Scenario::new(fast_policy());
    s.write(&cluster_yaml("skip", 3, &v34, ""));
    s.start();
    let before = s.wait_running("skip", 3, &v34).await;
    let pids: Vec<_> = before
        .members
        .iter()
        .map(|m| member_pid(&s.state_dir(), "skip", &m.name))
        .collect();
    s.write(&cluster_yaml("skip", 3, "3.6.0", ""));
    let st = s
        .wait_status("skip", "version skip refused", |st| {
            condition::find(&st.conditions, condition::types::DEGRADED)
                .is_some_and(|c| c.reason == "VersionSkipRefused")
        })
        .await;
    let c = condition::find(&st.conditions, condition::types::DEGRADED).unwrap();
    assert!(c.message.contains("3.6"), "{}", c.message);
    let after: Vec<_> = st
        .members
        .iter()
        .map(|m| member_pid(&s.state_dir(), "skip", &m.name))
        .collect();
    assert_eq!(pids, after, "no member was restarted");
    assert!(
        st.members
            .iter()
            .all(|m| m.version.as_deref() == Some(v34.as_str()))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn operator_restarted_mid_scale_up_resumes_without_duplicates() {
    let v = latest(5);
    let mut s = Scenario::new(fast_policy());
    s.write(&cluster_yaml("resume", 3, &v, ""));
    s.start();
    s.wait_running("resume", 3, &v).await;
    s.write(&cluster_yaml("resume", 5, &v, ""));
    // Stop the operator as soon as the first new member appears, mid scale-up.
    s.wait_status("resume", "scale-up under way", |st| st.members.len() > 3)
        .await;
    s.stop_operator().await;
    s.start();
    let st = s.wait_running("resume", 5, &v).await;
    let info = members_via_etcd(&st).await;
    assert_eq!(info.members.len(), 5, "no duplicate members");
    let mut names: Vec<_> = info.members.iter().map(|m| m.name.clone()).collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn upgrade_three_four_to_three_five_keeps_every_acknowledged_write() {
    let (v34, v35) = (latest(4), latest(5));
    let mut s = Scenario::new(fast_policy());
    s.write(&cluster_yaml("upgrade", 3, &v34, ""));
    s.start();
    let st = s.wait_running("upgrade", 3, &v34).await;
    let urls = client_urls(&st);
    let options = converged::connect_options(client_tls(&st).as_ref());
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut c = etcd_client::Client::connect(urls, Some(options))
                .await
                .unwrap();
            let (mut acked, mut longest, mut i) = (Vec::new(), Duration::ZERO, 0u64);
            let mut last_ok = Instant::now();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let key = format!("w/{i:08}");
                let put =
                    tokio::time::timeout(Duration::from_secs(2), c.put(key.clone(), "x", None))
                        .await;
                if let Ok(Ok(_)) = put {
                    acked.push(key);
                    longest = longest.max(last_ok.elapsed());
                    last_ok = Instant::now();
                }
                i += 1;
            }
            (acked, longest)
        })
    };
    s.write(&cluster_yaml("upgrade", 3, &v35, ""));
    let st = s.wait_running("upgrade", 3, &v35).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (acked, longest) = writer.await.unwrap();
    println!(
        "upgrade {v34} -> {v35}: {} acknowledged writes, longest writer stall {longest:?}",
        acked.len()
    );
    assert!(!acked.is_empty());
    let mut c = kv(&st).await;
    let resp = c
        .get(
            "w/",
            Some(
                etcd_client::GetOptions::new()
                    .with_prefix()
                    .with_keys_only(),
            ),
        )
        .await
        .unwrap();
    let have: std::collections::HashSet<String> = resp
        .kvs()
        .iter()
        .map(|kv| kv.key_str().unwrap().to_string())
        .collect();
    let missing: Vec<_> = acked.iter().filter(|k| !have.contains(*k)).collect();
    assert!(missing.is_empty(), "acknowledged writes lost: {missing:?}");
}
