//! Bad input tried as a hostile user would (issue 13, part 4), through the local runtime's
//! real loop: every case of `testing::hostile` at once, in one file. Each spec case must end
//! in a status with `SpecValid=False` naming its field, and nothing may change: no member
//! directory, no process, no connection to the S3 endpoint the documents name (a listener
//! on 127.0.0.1 that counts connections). Documents the API server would refuse stop the
//! loop before it reads anything else, with an error naming the field.

use std::io::ErrorKind;
use std::net::TcpListener;
use std::path::Path;
use std::time::Duration;

use etcd_operator::api::condition::types::SPEC_VALID;
use etcd_operator::api::{EtcdBackup, EtcdCluster, EtcdRestore};
use etcd_operator::drivers::local::store::StatusFiles;
use etcd_operator::drivers::local::{self, Options};
use etcd_operator::error_chain::error_chain;
use etcd_operator::testing::hostile::{Kind, load_cases, spec_cases};
use etcd_operator::testing::operator::{LONG, Scenario, fast_policy};
use etcd_operator::testing::{etcd_bin, wait_for};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

const SECRET: &str = "apiVersion: v1\nkind: Secret\nmetadata: {name: s3}\nstringData: {accessKeyId: k, secretAccessKey: s}\n";

/// The SpecValid condition in a status file of `kind`, if written yet.
fn spec_valid(state: &Path, kind: Kind, name: &str) -> Option<Condition> {
    let files = StatusFiles::new(state);
    let conditions = match kind {
        Kind::Cluster => files.read::<EtcdCluster>(name).ok()??.status?.conditions,
        Kind::Backup => files.read::<EtcdBackup>(name).ok()??.status?.conditions,
        Kind::Restore => files.read::<EtcdRestore>(name).ok()??.status?.conditions,
    };
    conditions.into_iter().find(|c| c.type_ == SPEC_VALID)
}

/// Every process whose command line mentions `dir`.
fn processes_under(dir: &Path) -> Vec<String> {
    let needle = dir.to_string_lossy().to_string();
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.contains(&needle))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_hostile_spec_gets_a_condition_naming_its_field_and_changes_nothing() {
    let s3 = TcpListener::bind("127.0.0.1:0").unwrap();
    s3.set_nonblocking(true).unwrap();
    let endpoint = format!("http://{}", s3.local_addr().unwrap());
    let mut docs = vec![SECRET.to_string()];
    let mut expected = Vec::new();
    for (i, case) in spec_cases().into_iter().enumerate() {
        let prefix = match case.kind {
            Kind::Cluster => "c",
            Kind::Backup => "b",
            Kind::Restore => "r",
        };
        let doc = case.document(&format!("{prefix}-{i}"), &endpoint);
        let name = case.name_in(&doc);
        docs.push(serde_norway::to_string(&doc).unwrap());
        expected.push((case, name));
    }
    let mut s = Scenario::new(fast_policy());
    s.write(&docs.join("---\n"));
    s.start();
    let state = s.state_dir();
    for (case, name) in &expected {
        let cond = wait_for(LONG, &format!("{name}: SpecValid=False"), || async {
            match spec_valid(&state, case.kind, name) {
                Some(c) if c.status == "False" => Ok(c),
                other => Err(other),
            }
        })
        .await
        .unwrap_or_else(|e| {
            panic!(
                "{:?} {} = {:.80}: {e}",
                case.kind,
                case.at,
                case.value.to_string()
            )
        });
        assert!(
            cond.message.contains(case.field),
            "{name} ({} = {:.80}): {:?} does not name {}",
            case.at,
            case.value.to_string(),
            cond.message,
            case.field
        );
        assert!(
            cond.message.len() < 2_000,
            "{name}: a {}-byte message",
            cond.message.len()
        );
    }
    // Nothing changed: no member was reserved or started, no restore journal or seed was
    // written, nothing reached S3.
    for dir in ["clusters", "restores", "seeds"] {
        assert!(!state.join(dir).exists(), "{dir}/ was created");
    }
    assert_eq!(
        processes_under(&state),
        Vec::<String>::new(),
        "processes were started"
    );
    match s3.accept() {
        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
        other => panic!("the S3 endpoint was contacted: {other:?}"),
    }
    s.stop_operator().await;
}

#[tokio::test]
async fn documents_the_api_server_would_refuse_stop_the_loop_before_anything_is_done() {
    for case in load_cases("http://127.0.0.1:9") {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("hostile.yaml");
        std::fs::write(&file, serde_norway::to_string(&case.document).unwrap()).unwrap();
        let state = dir.path().join("state");
        let opts = Options {
            files: vec![file],
            state_dir: state.clone(),
            etcd_bin_dir: etcd_bin::etcd_bin_dir(),
            stop_members_on_exit: false,
            resync_interval: Duration::from_millis(500),
            policy: fast_policy(),
            metrics: etcd_operator::metrics::Metrics::new(),
            backup_memory_budget_mib: 128,
        };
        // The loop must refuse on its own; the shutdown future never fires.
        let run = local::run(opts, std::future::pending());
        let err = tokio::time::timeout(Duration::from_secs(30), run)
            .await
            .unwrap_or_else(|_| panic!("{}: the loop ran on", case.what))
            .expect_err(case.what);
        let text = error_chain(&err);
        assert!(text.contains(case.names), "{}: {text}", case.what);
        let left: Vec<_> = std::fs::read_dir(&state)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .collect();
        assert_eq!(
            left,
            vec!["operator.lock"],
            "{}: the state dir holds more",
            case.what
        );
    }
}
