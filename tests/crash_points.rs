//! Crash points (issue 13, part 2): the real `etcd-operator local` binary, built with the
//! `failpoints` feature, is started with `FAILPOINTS=<point>=return` and kills itself with
//! SIGKILL at that point, between an etcd change and the runtime change that follows it or
//! between a runtime change and the status write that records it. A clean operator is then
//! started on the same state dir and must finish the step exactly once: `converged::check`
//! holds (as many members as asked, one directory and one process each, no other process, no
//! duplicate or learner in etcd's list) and every key written before the crash is there.
//! Real etcd processes on 127.0.0.1; one test per point.

use std::os::unix::process::ExitStatusExt;
use std::time::Duration;

use etcd_operator::api::EtcdCluster;
use etcd_operator::drivers::local::store::StatusFiles;
use etcd_operator::failpoint;
use etcd_operator::testing::converged::{self, Converged};
use etcd_operator::testing::operator::{cluster_yaml, latest};
use etcd_operator::testing::process::LocalOperatorDir;
use etcd_operator::testing::wait_for;

/// How long a crash point may take to be reached, and a cluster to converge.
const WITHIN: Duration = Duration::from_secs(150);
const KEYS: usize = 20;

fn dir() -> LocalOperatorDir {
    LocalOperatorDir::new(env!("CARGO_BIN_EXE_etcd-operator"))
}

/// Starts an operator that dies at `point`, and waits until it has.
async fn crash_at(dir: &mut LocalOperatorDir, point: &str) {
    let mut op = dir.start(Some(&format!("{point}=return")));
    let Some(status) = op.wait_exit(WITHIN).await else {
        op.kill9().await;
        panic!(
            "crash point {point} not reached in {WITHIN:?}:\n{}",
            op.stderr()
        );
    };
    assert_eq!(
        status.signal(),
        Some(9),
        "{point}: {status:?}\n{}",
        op.stderr()
    );
    assert!(
        op.stderr()
            .contains(&format!("crash point {point} reached")),
        "{}",
        op.stderr()
    );
}

/// Starts a clean operator and waits for `name` to converge at `size` x `version`; the
/// operator is stopped (Ctrl-C; members keep running) before returning.
async fn converge(dir: &mut LocalOperatorDir, name: &str, size: usize, version: &str) -> Converged {
    let mut op = dir.start(None);
    let done = converged::wait(&dir.state_dir(), name, size, version, WITHIN).await;
    let stderr = op.stderr();
    op.interrupt(Duration::from_secs(30)).await;
    done.unwrap_or_else(|e| panic!("{e}\noperator log:\n{stderr}"))
}

async fn put_keys(c: &Converged, prefix: &str) {
    let mut client = etcd_client::Client::connect(
        &c.client_urls,
        Some(converged::connect_options(c.client_tls.as_ref())),
    )
    .await
    .unwrap();
    for i in 0..KEYS {
        client
            .put(format!("{prefix}/{i:04}"), format!("v{i}"), None)
            .await
            .unwrap();
    }
}

async fn assert_keys(c: &Converged, prefix: &str) {
    let client = etcd_client::Client::connect(
        &c.client_urls,
        Some(converged::connect_options(c.client_tls.as_ref())),
    )
    .await
    .unwrap();
    let resp = wait_for(Duration::from_secs(30), "a member answers the read", || {
        let mut client = client.clone();
        let key = format!("{prefix}/");
        async move {
            client
                .get(key, Some(etcd_client::GetOptions::new().with_prefix()))
                .await
        }
    })
    .await
    .unwrap();
    assert_eq!(resp.kvs().len(), KEYS, "keys under {prefix}");
    for (i, kv) in resp.kvs().iter().enumerate() {
        assert_eq!(kv.value_str().unwrap(), format!("v{i}"));
    }
}

/// The creation time the status file of `name` keeps (the local stand-in for the API
/// server's), in seconds.
fn created(d: &LocalOperatorDir, name: &str) -> Option<i64> {
    let doc: EtcdCluster = StatusFiles::new(&d.state_dir()).read(name).ok()??;
    doc.metadata.creation_timestamp.map(|t| t.0.as_second())
}

/// A fresh cluster `name` killed at `point` while bootstrapping `size` members, then
/// finished by a clean operator started in a later second than the first (the local
/// creation time, which the bootstrap token comes from, has second precision): the same
/// members finish the same bootstrap, none is replaced.
async fn bootstrap_crash(point: &str, size: usize) {
    let v = latest(5);
    let mut d = dir();
    d.write(&cluster_yaml("boot", size as i32, &v, ""));
    crash_at(&mut d, point).await;
    let first = created(&d, "boot").expect("the creation time is kept before the first step");
    wait_for(Duration::from_secs(5), "a later second", || async {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_err(|e| e.to_string())?
            .as_secs();
        if i64::try_from(now).unwrap_or(i64::MAX) > first {
            Ok(())
        } else {
            Err(format!("{now} is still {first}"))
        }
    })
    .await
    .unwrap();
    let c = converge(&mut d, "boot", size, &v).await;
    assert_eq!(created(&d, "boot"), Some(first), "creation time changed");
    let mut names = c.members.clone();
    names.sort();
    let expected: Vec<String> = (0..size).map(|i| format!("boot-{i}")).collect();
    assert_eq!(names, expected, "a bootstrap member was replaced");
    put_keys(&c, "boot").await;
    assert_keys(&c, "boot").await;
}

/// A running cluster of `from` members with keys, edited to `to`, killed at each of
/// `points` in turn, then finished by a clean operator.
async fn resize_crash(points: &[&str], from: usize, to: usize) {
    let v = latest(5);
    let mut d = dir();
    d.write(&cluster_yaml("resize", from as i32, &v, ""));
    let c = converge(&mut d, "resize", from, &v).await;
    put_keys(&c, "resize").await;
    d.write(&cluster_yaml("resize", to as i32, &v, ""));
    for point in points {
        crash_at(&mut d, point).await;
    }
    let c = converge(&mut d, "resize", to, &v).await;
    assert_keys(&c, "resize").await;
}

/// A running cluster of `size` members at 3.4 with keys, upgraded to 3.5, killed at `point`.
async fn upgrade_crash(point: &str, size: usize) {
    let (from, to) = (latest(4), latest(5));
    let mut d = dir();
    d.write(&cluster_yaml("upgrade", size as i32, &from, ""));
    let c = converge(&mut d, "upgrade", size, &from).await;
    put_keys(&c, "upgrade").await;
    d.write(&cluster_yaml("upgrade", size as i32, &to, ""));
    crash_at(&mut d, point).await;
    let c = converge(&mut d, "upgrade", size, &to).await;
    assert_keys(&c, "upgrade").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bootstrap_killed_after_reserving_addresses() {
    bootstrap_crash(failpoint::BOOTSTRAP_AFTER_RESERVE, 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bootstrap_killed_after_one_of_three_members_started() {
    bootstrap_crash(failpoint::BOOTSTRAP_AFTER_FIRST_START, 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bootstrap_killed_after_every_member_started() {
    bootstrap_crash(failpoint::BOOTSTRAP_AFTER_START, 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_between_recording_a_members_launch_and_spawning_it() {
    bootstrap_crash(failpoint::LOCAL_AFTER_LAUNCH_RECORD, 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_between_spawning_a_member_and_writing_its_pid() {
    bootstrap_crash(failpoint::LOCAL_AFTER_SPAWN, 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_learner_killed_after_reserving_its_address() {
    resize_crash(&[failpoint::ADD_LEARNER_AFTER_RESERVE], 1, 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_learner_killed_after_etcd_added_it() {
    resize_crash(&[failpoint::ADD_LEARNER_AFTER_ETCD_ADD], 1, 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_learner_killed_after_starting_it() {
    resize_crash(&[failpoint::ADD_LEARNER_AFTER_START], 1, 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_member_killed_after_starting_it() {
    resize_crash(
        // StartMember follows an add whose process was recorded but never spawned; an add
        // killed before the launch record is cancelled instead (etcd's unstarted member is
        // removed, then added again).
        &[
            failpoint::LOCAL_AFTER_LAUNCH_RECORD,
            failpoint::START_MEMBER_AFTER_START,
        ],
        1,
        3,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promote_killed_after_etcd_promoted() {
    resize_crash(&[failpoint::PROMOTE_AFTER_ETCD_PROMOTE], 1, 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remove_killed_after_etcd_removed_the_member() {
    resize_crash(&[failpoint::REMOVE_AFTER_ETCD_REMOVE], 3, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remove_killed_while_the_members_files_go() {
    resize_crash(&[failpoint::LOCAL_AFTER_TOMBSTONE], 3, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remove_killed_after_deleting_the_member() {
    resize_crash(&[failpoint::REMOVE_AFTER_DELETE], 3, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leftover_delete_killed_after_deleting_it() {
    resize_crash(
        &[
            failpoint::REMOVE_AFTER_ETCD_REMOVE,
            failpoint::DELETE_RUNTIME_MEMBER_AFTER_DELETE,
        ],
        3,
        1,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_killed_after_restarting_a_killed_member() {
    let v = latest(5);
    let mut d = dir();
    d.write(&cluster_yaml("restart", 3, &v, ""));
    let c = converge(&mut d, "restart", 3, &v).await;
    put_keys(&c, "restart").await;
    let victim = &c.members[0];
    let pid_file = d
        .state_dir()
        .join("clusters/default/restart")
        .join(victim)
        .join("etcd.pid");
    let pid: i32 = std::fs::read_to_string(pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    crash_at(&mut d, failpoint::RESTART_AFTER_RESTART).await;
    let c = converge(&mut d, "restart", 3, &v).await;
    assert_keys(&c, "restart").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_killed_after_restarting_at_the_new_version() {
    upgrade_crash(failpoint::UPGRADE_AFTER_RESTART, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn move_leader_killed_after_etcd_moved_it() {
    upgrade_crash(failpoint::MOVE_LEADER_AFTER_ETCD_MOVE, 3).await;
}

#[test]
fn every_crash_point_has_a_test() {
    let source = include_str!("crash_points.rs");
    let consts = include_str!("../src/failpoint.rs");
    for point in failpoint::ALL {
        let konst = consts
            .lines()
            .find(|l| l.contains(&format!("= \"{point}\";")))
            .and_then(|l| l.split_whitespace().nth(2))
            .map(|c| c.trim_end_matches(':'))
            .unwrap_or_else(|| panic!("no constant for {point}"));
        assert!(
            source.matches(&format!("failpoint::{konst}")).count() >= 1,
            "{point} ({konst}) has no test"
        );
    }
}

/// A running plaintext cluster moved to TLS, killed after the runtime recorded a member's
/// `https://` address and stopped it, before etcd was told: a clean operator starts the
/// member on TLS, tells etcd its new peer URL, and moves the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_move_killed_after_recording_the_new_address() {
    let v = latest(5);
    let mut d = dir();
    d.write(&cluster_yaml(
        "tlsmove",
        3,
        &v,
        "  tls:\n    mode: Disabled\n",
    ));
    let c = converge(&mut d, "tlsmove", 3, &v).await;
    put_keys(&c, "tlsmove").await;
    d.write(&cluster_yaml("tlsmove", 3, &v, ""));
    crash_at(&mut d, failpoint::MOVE_TRANSPORT_AFTER_RECORD).await;
    let mut op = d.start(None);
    let state = d.state_dir();
    let moved = wait_for(WITHIN, "every member on TLS, in etcd too", || async {
        let c = converged::check(&state, "tlsmove", 3, &v).await?;
        if !c.client_urls.iter().all(|u| u.starts_with("https://")) {
            return Err(format!("client URLs {:?}", c.client_urls));
        }
        let admin =
            etcd_operator::etcd::EtcdAdmin::connect(c.client_urls.clone(), c.client_tls.clone())
                .await
                .map_err(|e| e.to_string())?;
        let peers: Vec<String> = admin
            .member_list()
            .await
            .map_err(|e| e.to_string())?
            .members
            .into_iter()
            .flat_map(|m| m.peer_urls)
            .collect();
        if peers.len() == 3 && peers.iter().all(|u| u.starts_with("https://")) {
            Ok(c)
        } else {
            Err(format!("peer URLs {peers:?}"))
        }
    })
    .await;
    let stderr = op.stderr();
    op.interrupt(Duration::from_secs(30)).await;
    let c = moved.unwrap_or_else(|e| panic!("{e}\noperator log:\n{stderr}"));
    assert_keys(&c, "tlsmove").await;
}
