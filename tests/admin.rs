//! `etcd::EtcdAdmin` against real etcd clusters, each test on the newest installed 3.4 and 3.5.
//!
//! Every test starts its own cluster on free loopback ports and waits only on conditions
//! with deadlines.

use std::future::Future;
use std::time::Duration;

use etcd_client::CompactionOptions;
use etcd_operator::etcd::{AlarmKind, Error, EtcdAdmin, MemberId, Timeouts};
use etcd_operator::testing::{EtcdBin, TestCluster, bin_for_minor, initial_cluster_for, wait_for};

/// Long enough to outlast etcd's ~5 s "unhealthy cluster" window after bootstrap.
const RETRY_WITHIN: Duration = Duration::from_secs(15);

fn etcd(major: u64, minor: u64) -> EtcdBin {
    bin_for_minor(major, minor).unwrap_or_else(|e| panic!("{e}"))
}

/// One `#[tokio::test]` per etcd minor version for each named `async fn(EtcdBin)`.
macro_rules! on_each_version {
    ($($test:ident),* $(,)?) => {$(
        mod $test {
            #[tokio::test(flavor = "multi_thread")]
            async fn v3_4() {
                super::$test(super::etcd(3, 4)).await
            }

            #[tokio::test(flavor = "multi_thread")]
            async fn v3_5() {
                super::$test(super::etcd(3, 5)).await
            }
        }
    )*};
}

on_each_version!(
    member_list_shows_every_bootstrapped_member,
    status_reports_version_leader_and_raft_progress,
    health_fails_fast_on_a_killed_member_while_others_serve,
    lost_quorum_shows_as_no_leader_while_status_still_answers,
    learner_catches_up_and_is_promoted_to_voter,
    second_learner_is_refused_while_one_is_pending,
    member_remove_drops_the_member_and_unknown_ids_are_not_found,
    move_leader_hands_leadership_to_the_chosen_follower,
    defragment_returns_compacted_space_to_the_filesystem,
    fresh_cluster_has_no_alarms,
    nospace_alarm_is_listed_and_disarmed,
    nospace_is_cleared_by_compact_defragment_and_disarm,
    snapshot_stream_is_a_valid_snapshot_file,
    admin_works_over_mutual_tls,
);

/// Calls `call` until it returns something other than a retryable error, and returns that.
async fn until_settled<T, F, Fut>(what: &str, mut call: F) -> Result<T, Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Error>>,
{
    wait_for(RETRY_WITHIN, what, || {
        let attempt = call();
        async move {
            match attempt.await {
                Err(e) if e.is_retryable() => Err(e),
                settled => Ok(settled),
            }
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"))
}

async fn started(bin: &EtcdBin, members: usize) -> (TestCluster, EtcdAdmin) {
    let cluster = TestCluster::start(bin, members).await.unwrap();
    let admin = cluster.admin().await.unwrap();
    (cluster, admin)
}

async fn member_list_shows_every_bootstrapped_member(bin: EtcdBin) {
    let (cluster, admin) = started(&bin, 3).await;

    let info = admin.member_list().await.unwrap();

    assert_ne!(info.cluster_id.0, 0);
    assert!(info.member(info.member_id_of_answerer).is_some());
    assert_eq!(info.members.len(), 3);
    for i in 0..3 {
        let addr = cluster.member(i).unwrap();
        let member = info
            .members
            .iter()
            .find(|m| m.name == addr.name)
            .unwrap_or_else(|| panic!("{} missing from {:?}", addr.name, info.members));
        assert_eq!(member.peer_urls, [addr.peer_url.as_str()]);
        assert_eq!(member.client_urls, [addr.client_url.as_str()]);
        assert!(!member.is_learner);
        assert!(!member.id.is_none());
    }
}

async fn status_reports_version_leader_and_raft_progress(bin: EtcdBin) {
    let (cluster, admin) = started(&bin, 3).await;
    let members = admin.member_list().await.unwrap();

    let mut statuses = Vec::new();
    for url in cluster.client_urls() {
        statuses.push(admin.status(&url).await.unwrap());
    }

    for (status, url) in statuses.iter().zip(cluster.client_urls()) {
        assert_eq!(status.endpoint, url);
        assert_eq!(status.version, bin.version);
        assert!(members.member(status.member_id).is_some());
        assert!(status.has_leader(), "{status:?}");
        assert_eq!(
            status.leader, statuses[0].leader,
            "members disagree on the leader"
        );
        assert!(status.raft_term >= 1);
        assert!(status.raft_index >= 1 && status.raft_applied_index >= 1);
        assert!(status.db_size > 0);
        assert!(status.db_size_in_use > 0 && status.db_size_in_use <= status.db_size);
        assert!(!status.is_learner);
        assert!(status.errors.is_empty(), "{:?}", status.errors);
    }
    assert_eq!(statuses.iter().filter(|s| s.is_leader()).count(), 1);
    let leader = admin.leader_status().await.unwrap();
    assert_eq!(leader.member_id, statuses[0].leader);
}

async fn health_fails_fast_on_a_killed_member_while_others_serve(bin: EtcdBin) {
    let (mut cluster, admin) = started(&bin, 3).await;
    let urls = cluster.client_urls();
    for url in &urls {
        let took = admin.health(url).await.unwrap();
        assert!(took < admin.timeouts().request);
    }
    // A follower: killing the leader would make everyone wait for an election.
    let leader = admin.leader_status().await.unwrap().endpoint;
    let victim = urls.iter().position(|u| *u != leader).unwrap();
    let survivor = urls.iter().position(|u| *u == leader).unwrap();

    cluster.kill(victim).await.unwrap();
    let asked = std::time::Instant::now();
    let err = admin.health(&urls[victim]).await.unwrap_err();

    assert!(matches!(err, Error::Unreachable { .. }), "{err:?}");
    assert!(err.is_retryable());
    assert!(
        asked.elapsed() < Duration::from_secs(2),
        "took {:?}",
        asked.elapsed()
    );
    // Two of three voters keep quorum; cluster-wide calls fail over past the dead endpoint.
    admin.health(&urls[survivor]).await.unwrap();
    for _ in 0..3 {
        assert_eq!(admin.member_list().await.unwrap().members.len(), 3);
    }

    // Restarted on its data dir, the member rejoins and serves again.
    cluster.restart(victim).unwrap();
    cluster.wait_healthy(&[victim], RETRY_WITHIN).await.unwrap();
    admin.health(&urls[victim]).await.unwrap();
}

async fn lost_quorum_shows_as_no_leader_while_status_still_answers(bin: EtcdBin) {
    let mut cluster = TestCluster::start(&bin, 3).await.unwrap();
    let survivor = cluster.client_url(0).unwrap().to_owned();
    // Short calls: until the survivor notices (~1-2 s) a read waits for the dead leader.
    let timeouts = Timeouts {
        request: Duration::from_secs(1),
        ..Timeouts::default()
    };
    let admin = EtcdAdmin::connect_with(cluster.client_urls(), None, timeouts)
        .await
        .unwrap();

    cluster.stop(1).await.unwrap();
    cluster.kill(2).await.unwrap();

    let err = wait_for(
        RETRY_WITHIN,
        "health refused for want of a leader",
        || async {
            match admin.health(&survivor).await {
                Err(e @ Error::NoLeader { .. }) => Ok(e),
                other => Err(other),
            }
        },
    )
    .await
    .unwrap();
    assert!(err.is_retryable());
    let status = admin.status(&survivor).await.unwrap();
    assert!(!status.has_leader(), "{status:?}");
    // The member list is served locally, so it is no evidence of quorum.
    assert_eq!(admin.member_list().await.unwrap().members.len(), 3);
    let err = admin.move_leader(status.member_id).await.unwrap_err();
    assert!(matches!(err, Error::NoLeader { .. }), "{err:?}");
}

async fn learner_catches_up_and_is_promoted_to_voter(bin: EtcdBin) {
    let (mut cluster, admin) = started(&bin, 3).await;
    for i in 0..20 {
        cluster.put(format!("k{i}"), "v").await.unwrap();
    }
    let joiner = cluster.alloc_member("m3").unwrap();

    let (added, members) = until_settled("learner added", || {
        admin.member_add([joiner.peer_url.clone()], true)
    })
    .await
    .unwrap();
    assert!(added.is_learner);
    assert!(!added.has_started());
    assert_eq!(added.peer_urls, [joiner.peer_url.as_str()]);
    assert_eq!(members.len(), 4);

    let target = admin.leader_status().await.unwrap().raft_index;
    cluster
        .start_joiner(joiner.clone(), &initial_cluster_for(&members, &joiner))
        .unwrap();
    let caught_up = wait_for(RETRY_WITHIN, "learner caught up", || async {
        let status = admin
            .status(&joiner.client_url)
            .await
            .map_err(|e| e.to_string())?;
        if status.raft_applied_index >= target {
            Ok(status)
        } else {
            Err(format!("applied {} < {target}", status.raft_applied_index))
        }
    })
    .await
    .unwrap();
    assert!(caught_up.is_learner);
    assert_eq!(caught_up.member_id, added.id);
    let err = admin.health(&joiner.client_url).await.unwrap_err();
    assert!(matches!(err, Error::RejectedByLearner { .. }), "{err:?}");

    let members = until_settled("learner promoted", || admin.member_promote(added.id))
        .await
        .unwrap();

    assert_eq!(members.len(), 4);
    assert!(members.iter().all(|m| !m.is_learner), "{members:?}");
    // Other members (and the joiner itself) apply the promotion a moment after the leader
    // answered, so wait for every view to agree.
    let info = wait_for(RETRY_WITHIN, "every member sees the promotion", || async {
        let info = admin.member_list().await.map_err(|e| e.to_string())?;
        match info.member(added.id) {
            Some(m) if !m.is_learner => Ok(info),
            other => Err(format!("{other:?}")),
        }
    })
    .await
    .unwrap();
    let promoted = info.member(added.id).unwrap();
    assert_eq!(promoted.name, "m3");
    assert_eq!(promoted.client_urls, [joiner.client_url.as_str()]);
    wait_for(RETRY_WITHIN, "promoted member healthy", || {
        admin.health(&joiner.client_url)
    })
    .await
    .unwrap();
}

async fn second_learner_is_refused_while_one_is_pending(bin: EtcdBin) {
    let (cluster, admin) = started(&bin, 3).await;
    let first = cluster.alloc_member("m3").unwrap();
    let second = cluster.alloc_member("m4").unwrap();
    until_settled("first learner added", || {
        admin.member_add([first.peer_url.clone()], true)
    })
    .await
    .unwrap();

    let err = until_settled("second learner refused", || {
        admin.member_add([second.peer_url.clone()], true)
    })
    .await
    .unwrap_err();

    assert!(matches!(err, Error::TooManyLearners), "{err:?}");
    assert!(!err.is_retryable());
    assert_eq!(admin.member_list().await.unwrap().learners().count(), 1);
}

async fn member_remove_drops_the_member_and_unknown_ids_are_not_found(bin: EtcdBin) {
    let (mut cluster, admin) = started(&bin, 3).await;
    let leader = admin.leader_status().await.unwrap().member_id;
    let info = admin.member_list().await.unwrap();
    // A follower: removing the leader leaves a leaderless gap that this test is not about.
    let (index, victim) = (0..3)
        .map(|i| {
            let name = &cluster.member(i).unwrap().name;
            (
                i,
                info.members
                    .iter()
                    .find(|m| &m.name == name)
                    .unwrap()
                    .clone(),
            )
        })
        .find(|(_, m)| m.id != leader)
        .unwrap();
    let voter = leader;
    let bogus = MemberId(0xdead_beef);

    let remaining = until_settled("follower removed", || admin.member_remove(victim.id))
        .await
        .unwrap();
    cluster.kill(index).await.unwrap();

    assert_eq!(remaining.len(), 2);
    assert!(remaining.iter().all(|m| m.id != victim.id));
    let info = admin.member_list().await.unwrap();
    assert!(info.member(victim.id).is_none(), "{info:?}");

    let err = admin.member_remove(victim.id).await.unwrap_err();
    assert!(
        matches!(err, Error::MemberNotFound { id } if id == victim.id),
        "{err:?}"
    );
    let err = admin.member_remove(bogus).await.unwrap_err();
    assert!(
        matches!(err, Error::MemberNotFound { id } if id == bogus),
        "{err:?}"
    );
    let err = admin.member_promote(bogus).await.unwrap_err();
    assert!(
        matches!(err, Error::MemberNotFound { id } if id == bogus),
        "{err:?}"
    );
    let err = admin.member_promote(voter).await.unwrap_err();
    assert!(
        matches!(err, Error::NotLearner { id } if id == voter),
        "{err:?}"
    );
}

async fn move_leader_hands_leadership_to_the_chosen_follower(bin: EtcdBin) {
    let (cluster, admin) = started(&bin, 3).await;
    let leader = admin.leader_status().await.unwrap();
    let info = admin.member_list().await.unwrap();
    let follower = info
        .voters()
        .map(|m| m.id)
        .filter(|&id| id != leader.member_id)
        .min()
        .unwrap();

    admin.move_leader(follower).await.unwrap();

    assert_eq!(admin.leader_status().await.unwrap().member_id, follower);
    let urls = cluster.client_urls();
    wait_for(
        RETRY_WITHIN,
        "every member follows the new leader",
        || async {
            for url in &urls {
                let status = admin.status(url).await.map_err(|e| e.to_string())?;
                if status.leader != follower {
                    return Err(format!("{url} follows {}", status.leader));
                }
            }
            Ok(())
        },
    )
    .await
    .unwrap();
    // Moving to the current leader changes nothing; a non-member cannot lead.
    admin.move_leader(follower).await.unwrap();
    assert_eq!(admin.leader_status().await.unwrap().member_id, follower);
    let bogus = MemberId(0xdead_beef);
    let err = admin.move_leader(bogus).await.unwrap_err();
    assert!(
        matches!(err, Error::BadLeaderTransferee { id } if id == bogus),
        "{err:?}"
    );
}

async fn defragment_returns_compacted_space_to_the_filesystem(bin: EtcdBin) {
    let (cluster, admin) = started(&bin, 1).await;
    let url = cluster.client_url(0).unwrap().to_owned();
    // 4 MiB of history on one key, then compacted away: pages freed but the file stays big.
    let mut kv = cluster.kv_client().await.unwrap();
    for _ in 0..64 {
        kv.put("big", vec![b'x'; 64 * 1024], None).await.unwrap();
    }
    let revision = kv
        .put("big", "small", None)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision();
    kv.compact(revision, Some(CompactionOptions::new().with_physical()))
        .await
        .unwrap();
    let before = admin.status(&url).await.unwrap();
    assert!(before.db_size > 4 * 1024 * 1024, "{before:?}");

    admin.defragment(&url).await.unwrap();

    let after = admin.status(&url).await.unwrap();
    assert!(
        after.db_size < before.db_size / 2,
        "{before:?} -> {after:?}"
    );
    assert!(after.db_size_in_use <= after.db_size);
    let value = kv.get("big", None).await.unwrap();
    assert_eq!(value.kvs()[0].value(), b"small");
    admin.health(&url).await.unwrap();
}

async fn fresh_cluster_has_no_alarms(bin: EtcdBin) {
    let (_cluster, admin) = started(&bin, 3).await;

    assert_eq!(admin.alarm_list().await.unwrap(), []);
    assert_eq!(admin.alarm_disarm_all().await.unwrap(), []);
}

async fn nospace_alarm_is_listed_and_disarmed(bin: EtcdBin) {
    let cluster = TestCluster::builder(&bin)
        .members(1)
        .arg("--quota-backend-bytes=1048576")
        .start()
        .await
        .unwrap();
    let admin = cluster.admin().await.unwrap();
    let url = cluster.client_url(0).unwrap().to_owned();
    let member = admin.status(&url).await.unwrap().member_id;

    // Fill past the 1 MiB quota; etcd raises NOSPACE and then refuses writes.
    let mut refused = None;
    for i in 0..100 {
        if let Err(e) = cluster.put(format!("k{i}"), vec![b'x'; 64 * 1024]).await {
            refused = Some(e);
            break;
        }
    }
    let refused = refused.expect("writes past the quota were accepted");
    assert!(
        format!("{:?}", refused).contains("database space exceeded"),
        "{refused:?}"
    );

    let alarms = admin.alarm_list().await.unwrap();
    assert_eq!(alarms.len(), 1, "{alarms:?}");
    assert_eq!(alarms[0].member_id, member);
    assert_eq!(alarms[0].kind, AlarmKind::NoSpace);
    let status = admin.status(&url).await.unwrap();
    assert!(
        !status.errors.is_empty(),
        "status shows no alarm: {status:?}"
    );

    assert_eq!(admin.alarm_disarm_all().await.unwrap(), alarms);
    assert_eq!(admin.alarm_list().await.unwrap(), []);
}

/// The operator's NOSPACE procedure, call by call (issue 14): compact is allowed under the
/// alarm and a second one to the same revision is `Compacted`; the status carries the
/// revision; disarming NOSPACE by kind makes writes succeed again.
async fn nospace_is_cleared_by_compact_defragment_and_disarm(bin: EtcdBin) {
    let cluster = TestCluster::builder(&bin)
        .members(1)
        .arg("--quota-backend-bytes=2097152")
        .start()
        .await
        .unwrap();
    let admin = cluster.admin().await.unwrap();
    let url = cluster.client_url(0).unwrap().to_owned();
    // History of one key until the quota: compaction can free all but its last value.
    let mut kv = cluster.kv_client().await.unwrap();
    let mut last = 0;
    let mut refused = false;
    for _ in 0..200 {
        match kv.put("k", vec![b'x'; 64 * 1024], None).await {
            Ok(r) => last = r.header().unwrap().revision(),
            Err(_) => {
                refused = true;
                break;
            }
        }
    }
    assert!(refused, "writes past the quota were accepted");
    let status = admin.status(&url).await.unwrap();
    // The put that crosses the quota is refused before it is proposed, or, when the quota
    // is crossed while it applies, applied and still answered NOSPACE (etcd's quota
    // applier): one revision more than the last acknowledged one.
    assert!(
        status.revision == last || status.revision == last + 1,
        "last acknowledged revision {last}: {status:?}"
    );

    admin.compact(status.revision).await.unwrap();
    let again = admin.compact(status.revision).await.unwrap_err();
    assert!(matches!(again, Error::Compacted { .. }), "{again:?}");
    admin.defragment(&url).await.unwrap();
    let after = admin.status(&url).await.unwrap();
    assert!(
        after.db_size < status.db_size / 2,
        "{status:?} -> {after:?}"
    );

    let disarmed = admin.alarm_disarm(AlarmKind::NoSpace).await.unwrap();
    assert_eq!(disarmed.len(), 1, "{disarmed:?}");
    assert_eq!(admin.alarm_list().await.unwrap(), []);
    kv.put("k", "after", None).await.unwrap();
}

async fn snapshot_stream_is_a_valid_snapshot_file(bin: EtcdBin) {
    let (cluster, admin) = started(&bin, 3).await;
    for i in 0..10 {
        cluster
            .put(format!("key-{i}"), format!("value-{i}"))
            .await
            .unwrap();
    }
    let path = cluster.dir().join("backup.db");

    let stream = admin.snapshot().await.unwrap();
    assert!(cluster.client_urls().iter().any(|u| u == stream.endpoint()));
    let written = stream.write_to_file(&path).await.unwrap();

    assert_eq!(std::fs::metadata(&path).unwrap().len(), written);
    let status = bin.snapshot_status(&path).await.unwrap();
    assert!(status.total_key >= 10, "{status:?}");
    assert!(status.revision >= 11, "{status:?}");
    // Restore verifies the integrity hash etcd appends to the stream.
    bin.snapshot_restore(&path, &cluster.dir().join("restored"))
        .await
        .unwrap();
}

async fn admin_works_over_mutual_tls(bin: EtcdBin) {
    let cluster = TestCluster::builder(&bin)
        .members(1)
        .tls()
        .start()
        .await
        .unwrap();
    let url = cluster.client_url(0).unwrap().to_owned();
    assert!(url.starts_with("https://"));
    let admin = cluster.admin().await.unwrap();

    assert_eq!(admin.member_list().await.unwrap().members.len(), 1);
    assert!(admin.status(&url).await.unwrap().is_leader());
    admin.health(&url).await.unwrap();

    // The same endpoint without a client certificate is refused, not hung.
    let plain = EtcdAdmin::connect([url.clone()], None).await.unwrap();
    let err = plain.status(&url).await.unwrap_err();
    assert!(!matches!(err, Error::Timeout { .. }), "{err:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn test_cluster_kills_its_members_even_when_the_test_panics() {
    let bin = etcd(3, 5);
    let (tx, rx) = tokio::sync::oneshot::channel();
    let panicked = tokio::spawn(async move {
        let cluster = TestCluster::start(&bin, 1).await.unwrap();
        tx.send((cluster.pid(0).unwrap(), cluster.dir().to_owned()))
            .unwrap();
        panic!("a failing test");
    })
    .await
    .unwrap_err();
    assert!(panicked.is_panic());

    let (pid, dir) = rx.await.unwrap();
    let pid = nix::unistd::Pid::from_raw(pid as i32);
    // Reaped, not just signalled: the pid no longer exists.
    assert_eq!(
        nix::sys::signal::kill(pid, None),
        Err(nix::errno::Errno::ESRCH)
    );
    // Kept for the post-mortem; this test has no use for it.
    assert!(dir.join("m0.log").is_file());
    std::fs::remove_dir_all(dir).unwrap();
}
