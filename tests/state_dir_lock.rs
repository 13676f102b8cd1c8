//! Two `etcd-operator local` processes on one state dir (issue 13, part 4): the second
//! refuses to start, naming the first, instead of both acting on the same members; the lock
//! goes with its holder however it dies (`kill -9` here), so the next start takes over.
//! The real binary, real etcd.

use std::time::Duration;

use etcd_operator::api::cluster::ClusterPhase;
use etcd_operator::drivers::local::lock::LOCK_FILE;
use etcd_operator::testing::operator::{cluster_yaml, latest};
use etcd_operator::testing::process::LocalOperatorDir;
use etcd_operator::testing::wait_for;

const WITHIN: Duration = Duration::from_secs(90);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_operator_on_one_state_dir_refuses_to_start_and_the_lock_dies_with_its_holder() {
    let v = latest(5);
    let mut dir = LocalOperatorDir::new(env!("CARGO_BIN_EXE_etcd-operator"));
    dir.write(&cluster_yaml("locked", 1, &v, ""));
    let mut first = dir.start(None);
    let first_pid = first.pid().expect("first pid");
    let lock_file = dir.state_dir().join(LOCK_FILE);
    wait_for(WITHIN, "the first operator holds the lock", || async {
        let text = std::fs::read_to_string(&lock_file).unwrap_or_default();
        if text.trim() == first_pid.to_string() {
            Ok(())
        } else {
            Err(text)
        }
    })
    .await
    .unwrap();

    let mut second = dir.start(None);
    let status = second
        .wait_exit(Duration::from_secs(30))
        .await
        .expect("the second operator exits by itself");
    let stderr = second.stderr();
    assert!(
        !status.success(),
        "the second operator succeeded:\n{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "another etcd-operator local (pid {first_pid}) runs on state dir"
        )),
        "{stderr}"
    );
    assert!(
        !stderr.contains("local runtime started"),
        "the second operator got as far as reading the files:\n{stderr}"
    );
    assert!(first.is_running(), "the first operator is untouched");
    dir.wait_status(
        "locked",
        WITHIN,
        "the first operator runs the cluster",
        |s| s.phase == ClusterPhase::Running,
    )
    .await
    .unwrap();

    // kill -9: no cleanup runs, yet the kernel drops the lock with the process; the member
    // it started keeps running and must not hold the lock either (close-on-exec).
    first.kill9().await;
    let mut third = dir.start(None);
    let third_pid = third.pid().expect("third pid");
    wait_for(WITHIN, "the third operator holds the lock", || async {
        let text = std::fs::read_to_string(&lock_file).unwrap_or_default();
        if text.trim() == third_pid.to_string() {
            Ok(())
        } else {
            Err(text)
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", third.stderr()));
    // It goes on past the lock: it reads the files and reports the cluster again.
    wait_for(WITHIN, "the third operator reads the files", || async {
        if third.stderr().contains("local runtime started") {
            Ok(())
        } else {
            Err(third.stderr())
        }
    })
    .await
    .unwrap();
    assert!(third.is_running(), "{}", third.stderr());
    third.interrupt(Duration::from_secs(30)).await;
}
