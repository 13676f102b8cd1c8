//! EtcdBackup and EtcdRestore on the local runtime, end to end: the operator loop on real
//! etcd processes, backing up to and restoring from a real Garage on loopback. Each test
//! runs its own operator, state dir and Garage, and waits only on status-file conditions
//! with deadlines. Needs `ETCD_BIN_DIR` and Garage (`scripts/install-test-deps`).

use aws_sdk_s3::Client;
use aws_sdk_s3::primitives::ByteStream;
use etcd_operator::api::EtcdCluster;
use etcd_operator::api::backup::{EtcdBackupStatus, VerificationResult};
use etcd_operator::api::condition::{self, types};
use etcd_operator::api::restore::{EtcdRestoreStatus, RestorePhase};
use etcd_operator::backup::key::Scope;
use etcd_operator::backup::{SnapshotMetadata, StaticCredentials, list_backups};
use etcd_operator::drivers::local::restores::RESTORED_BY;
use etcd_operator::drivers::local::store::StatusFiles;
use etcd_operator::testing::bin_for_version;
use etcd_operator::testing::garage::{BUCKET, TestGarage};
use etcd_operator::testing::operator::*;
use k8s_openapi::ByteString;

/// A Secret document with `credentials`, as base64 `data` or as `stringData`.
fn secret_yaml(name: &str, credentials: &StaticCredentials, base64: bool) -> String {
    let (id, secret) = (
        credentials.access_key_id.as_str(),
        credentials.secret_access_key(),
    );
    let data = if base64 {
        let b64 = |s: &str| serde_json::to_string(&ByteString(s.as_bytes().to_vec())).unwrap();
        format!(
            "data:\n  accessKeyId: {}\n  secretAccessKey: {}\n",
            b64(id),
            b64(secret)
        )
    } else {
        format!("stringData:\n  accessKeyId: {id}\n  secretAccessKey: {secret}\n")
    };
    format!("apiVersion: v1\nkind: Secret\nmetadata:\n  name: {name}\n{data}")
}

/// An EtcdBackup of `cluster` into `bucket`/`prefix` on `garage`; `extra` goes under
/// `spec:` (indent it two spaces).
fn backup_yaml(
    name: &str,
    cluster: &str,
    garage: &TestGarage,
    bucket: &str,
    prefix: &str,
    secret: &str,
    extra: &str,
) -> String {
    format!(
        "apiVersion: etcd.operator.dev/v1alpha1\nkind: EtcdBackup\nmetadata:\n  name: {name}\nspec:\n  clusterName: {cluster}\n  destination:\n    s3:\n      bucket: {bucket}\n      prefix: {prefix}\n{}      credentialsSecret: {secret}\n{extra}",
        connection_yaml(garage, 6)
    )
}

/// The endpoint, region and path style of `garage`, indented `indent` spaces.
fn connection_yaml(garage: &TestGarage, indent: usize) -> String {
    let pad = " ".repeat(indent);
    format!(
        "{pad}endpoint: {}\n{pad}region: garage\n{pad}forcePathStyle: true\n",
        garage.endpoint()
    )
}

/// An EtcdRestore into a new cluster `target` of `size` members; `source` goes under
/// `spec.source:` (indent it four spaces).
fn restore_yaml(name: &str, source: &str, target: &str, size: i32, version: &str) -> String {
    format!(
        "apiVersion: etcd.operator.dev/v1alpha1\nkind: EtcdRestore\nmetadata:\n  name: {name}\nspec:\n  source:\n{source}  cluster:\n    name: {target}\n    spec:\n      size: {size}\n      version: {version}\n"
    )
}

/// The restore source of a plain object in the test bucket.
fn s3_source(garage: &TestGarage, key: &str) -> String {
    format!(
        "    s3:\n      bucket: {BUCKET}\n      key: {key}\n{}      credentialsSecret: s3\n",
        connection_yaml(garage, 6)
    )
}

fn docs(parts: &[&str]) -> String {
    parts.join("---\n")
}

fn condition_is(
    conditions: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition],
    type_: &str,
    status: &str,
    reason: &str,
) -> bool {
    condition::find(conditions, type_).is_some_and(|c| c.status == status && c.reason == reason)
}

fn is_ready(s: &EtcdBackupStatus) -> bool {
    condition::is_true(&s.conditions, types::READY) && s.last_backup.is_some()
}

fn failed_with(reason: &'static str) -> impl Fn(&EtcdBackupStatus) -> bool {
    move |s| condition_is(&s.conditions, types::FAILED, "True", reason)
}

fn restore_failed_with(reason: &'static str) -> impl Fn(&EtcdRestoreStatus) -> bool {
    move |s| {
        s.phase == RestorePhase::Failed
            && condition_is(&s.conditions, types::FAILED, "True", reason)
    }
}

async fn object_keys(s3: &Client, bucket: &str) -> Vec<String> {
    let listed = s3.list_objects_v2().bucket(bucket).send().await.unwrap();
    let mut keys: Vec<String> = listed
        .contents()
        .iter()
        .filter_map(|o| o.key().map(str::to_owned))
        .collect();
    keys.sort();
    keys
}

async fn put(s3: &Client, key: &str, body: Vec<u8>, metadata: &SnapshotMetadata) {
    s3.put_object()
        .bucket(BUCKET)
        .key(key)
        .set_metadata(Some(metadata.to_map()))
        .body(ByteStream::from(body))
        .send()
        .await
        .unwrap();
}

/// A scenario with a running one-member cluster `cluster` holding `keys` keys under
/// `cluster/`, and a Garage with Secret `s3` for it.
async fn running_with_keys(cluster: &str, keys: usize) -> (Scenario, TestGarage, String) {
    let v = latest(5);
    let mut s = Scenario::new(fast_policy());
    let garage = TestGarage::start().await.unwrap();
    s.write(&docs(&[
        &cluster_yaml(cluster, 1, &v, ""),
        &secret_yaml("s3", &garage.credentials(), true),
    ]));
    s.start();
    let st = s.wait_running(cluster, 1, &v).await;
    put_keys(&st, cluster, keys).await;
    (s, garage, v)
}

/// Each member's live pid, by name.
fn pids(
    s: &Scenario,
    cluster: &str,
    st: &etcd_operator::api::EtcdClusterStatus,
) -> std::collections::BTreeMap<String, i32> {
    st.members
        .iter()
        .map(|m| {
            let pid = member_pid(&s.state_dir(), cluster, &m.name).as_raw();
            (m.name.clone(), pid)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_shot_backup_of_a_running_cluster_records_the_object() {
    let (s, garage, v) = running_with_keys("src", 100).await;
    let secret = secret_yaml("s3", &garage.credentials(), true);
    s.write(&docs(&[
        &cluster_yaml("src", 1, &v, ""),
        &secret,
        &backup_yaml(
            "once",
            "src",
            &garage,
            BUCKET,
            "p",
            "s3",
            "  verify: true\n",
        ),
    ]));
    let st = s
        .wait_backup("once", "one-shot backup ready", is_ready)
        .await;

    let record = st.last_backup.clone().unwrap();
    assert_eq!(record.sha256.len(), 64, "{record:?}");
    assert!(record.size > 0 && record.revision > 100, "{record:?}");
    // verify: read back and checked by the cluster's own release's etcdutl.
    let v = record.verification.clone().unwrap();
    assert_eq!(v.result, VerificationResult::Verified, "{v:?}");
    assert!(v.revision.unwrap() >= record.revision && v.total_keys.unwrap() >= 100);
    assert!(
        v.message
            .contains(&format!("/{}/etcdutl", record.etcd_version)),
        "{}",
        v.message
    );
    assert!(condition_is(
        &st.conditions,
        types::VERIFIED,
        "True",
        "SnapshotVerified"
    ));
    assert_eq!(st.history, std::slice::from_ref(&record));
    assert_eq!(st.observed_generation, Some(1));
    assert!(st.last_successful_time.is_some());
    assert!(condition_is(
        &st.conditions,
        types::FAILED,
        "False",
        "BackupSucceeded"
    ));
    let s3 = garage.client().await;
    let head = s3
        .head_object()
        .bucket(BUCKET)
        .key(&record.key)
        .send()
        .await
        .unwrap();
    assert_eq!(head.content_length(), Some(record.size));
    let meta = SnapshotMetadata::from_map(head.metadata().unwrap());
    assert_eq!(meta.sha256.as_deref(), Some(record.sha256.as_str()));
    assert!(
        record.key.starts_with("p/default/src/once/"),
        "one folder per EtcdBackup: {}",
        record.key
    );
    assert_eq!(meta.backup.as_deref(), Some("once"));
    assert_eq!(meta.cluster.as_deref(), Some("src"));
    assert_eq!(meta.namespace.as_deref(), Some("default"));
    assert!(
        meta.cluster_uid.is_some(),
        "the cluster's incarnation: {meta:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restore_by_backup_name_prefers_the_newest_verified_backup() {
    let (s, garage, v) = running_with_keys("origin", 100).await;
    let cluster = cluster_yaml("origin", 1, &v, "");
    let secret = secret_yaml("s3", &garage.credentials(), true);
    let backup = |extra: &str| backup_yaml("mixed", "origin", &garage, BUCKET, "p", "s3", extra);
    s.write(&docs(&[&cluster, &secret, &backup("  verify: true\n")]));
    let first = s
        .wait_backup("mixed", "verified backup ready", is_ready)
        .await;
    let verified = first.last_backup.clone().unwrap();
    assert_eq!(
        verified.verification.as_ref().map(|v| v.result),
        Some(VerificationResult::Verified),
        "{verified:?}"
    );

    // 50 keys more, then a newer backup without verification (a new generation of a
    // one-shot backup runs once more).
    let origin = s.status("origin").unwrap().status.unwrap();
    put_keys(&origin, "later", 50).await;
    s.write(&docs(&[&cluster, &secret, &backup("  verify: false\n")]));
    let second = s
        .wait_backup("mixed", "unverified backup ready", |b| {
            is_ready(b)
                && b.last_backup
                    .as_ref()
                    .is_some_and(|r| r.key != verified.key)
        })
        .await;
    let newest = second.last_backup.clone().unwrap();
    assert!(newest.verification.is_none(), "{newest:?}");
    assert!(newest.revision > verified.revision);
    assert_eq!(
        second.history.iter().map(|r| &r.key).collect::<Vec<_>>(),
        [&newest.key, &verified.key]
    );
    assert!(
        condition::find(&second.conditions, types::VERIFIED).is_none(),
        "no Verified condition once verify is off: {:?}",
        second.conditions
    );

    // Restoring by name takes the verified one, not the newest.
    s.write(&docs(&[
        &cluster,
        &secret,
        &backup("  verify: false\n"),
        &restore_yaml("back", "    backupName: mixed\n", "copy", 1, &v),
    ]));
    let restore = s
        .wait_restore("back", "restore completed", |r| {
            r.phase == RestorePhase::Completed
        })
        .await;
    assert_eq!(restore.source_key.as_deref(), Some(verified.key.as_str()));
    assert_eq!(restore.sha256.as_deref(), Some(verified.sha256.as_str()));
    let copy = s.wait_running("copy", 1, &v).await;
    assert_keys(&copy, "origin", 100).await;
    assert_keys(&copy, "later", 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_backup_over_the_memory_budget_is_refused_and_writes_nothing() {
    let (s, garage, v) = running_with_keys("big", 10).await;
    // 64 MiB parts, 4 held at once: 256 MiB, over the default budget of 128 MiB.
    let backup = backup_yaml("huge-parts", "big", &garage, BUCKET, "p", "s3", "").replace(
        "      credentialsSecret: s3\n",
        "      credentialsSecret: s3\n      partSizeMiB: 64\n",
    );
    assert!(backup.contains("partSizeMiB: 64"), "{backup}");
    s.write(&docs(&[
        &cluster_yaml("big", 1, &v, ""),
        &secret_yaml("s3", &garage.credentials(), true),
        &backup,
    ]));
    let st = s
        .wait_backup(
            "huge-parts",
            "refused for memory",
            failed_with("MemoryBudget"),
        )
        .await;
    assert!(st.last_backup.is_none());
    let s3 = garage.client().await;
    assert!(
        object_keys(&s3, BUCKET).await.is_empty(),
        "nothing was uploaded"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scheduled_backups_keep_only_the_newest_two_of_ours() {
    let (s, garage, v) = running_with_keys("sched", 10).await;
    let s3 = garage.client().await;
    let foreign = "keep/sched/notes.txt";
    // Objects retention must never delete, however old: the earlier key layout's, another
    // EtcdBackup's of the same cluster, and one in our folder whose metadata does not name us.
    let legacy = "keep/sched/20200101T000000Z-rev1.db";
    let other_backup = "keep/default/sched/weekly/20200101T000000Z-rev1.db";
    let impostor = "keep/default/sched/every-second/20200101T000000Z-rev1.db";
    let weekly = SnapshotMetadata {
        namespace: Some("default".into()),
        cluster: Some("sched".into()),
        backup: Some("weekly".into()),
        ..SnapshotMetadata::default()
    };
    for (key, meta) in [
        (foreign, SnapshotMetadata::default()),
        (legacy, SnapshotMetadata::default()),
        (other_backup, weekly),
        (impostor, SnapshotMetadata::default()),
    ] {
        put(&s3, key, b"not ours".to_vec(), &meta).await;
    }
    // Every second (croner takes an optional seconds field), so the test stays short.
    let extra = "  schedule: \"* * * * * *\"\n  retention:\n    keepLast: 2\n";
    s.write(&docs(&[
        &cluster_yaml("sched", 1, &v, ""),
        &secret_yaml("s3", &garage.credentials(), false),
        &backup_yaml(
            "every-second",
            "sched",
            &garage,
            BUCKET,
            "keep",
            "s3",
            extra,
        ),
    ]));
    // The history keeps only backups that exist, so count the distinct ones it ever showed.
    let seen = std::sync::Mutex::new(std::collections::BTreeSet::new());
    let st = s
        .wait_backup("every-second", "three scheduled backups", |st| {
            let mut seen = seen.lock().unwrap();
            seen.extend(st.history.iter().map(|r| r.key.clone()));
            seen.len() >= 3 && is_ready(st)
        })
        .await;
    assert!(st.next_schedule_time.is_some());
    let seen: Vec<String> = seen.into_inner().unwrap().into_iter().collect();
    let scope = Scope {
        prefix: Some("keep"),
        namespace: "default",
        cluster: "sched",
        backup: "every-second",
    };
    assert!(
        seen.iter()
            .all(|k| k.starts_with("keep/default/sched/every-second/")),
        "one folder per EtcdBackup: {seen:?}"
    );
    let left = etcd_operator::testing::wait_for(LONG, "retention down to two", || async {
        let left: Vec<String> = list_backups(&s3, BUCKET, &scope)
            .await
            .unwrap()
            .into_iter()
            .map(|b| b.key)
            .filter(|k| k != impostor)
            .collect();
        if left.len() == 2 { Ok(left) } else { Err(left) }
    })
    .await
    .unwrap();
    // Keys sort by time: the oldest seen is gone for good.
    assert!(
        !left.contains(&seen[0]),
        "{} still there: {left:?}",
        seen[0]
    );
    let st = s.backup_status("every-second").unwrap();
    assert!(
        st.history.len() <= 2,
        "only existing backups: {:?}",
        st.history
    );
    let all = object_keys(&s3, BUCKET).await;
    for kept in [foreign, legacy, other_backup, impostor] {
        assert!(
            all.contains(&kept.to_owned()),
            "{kept} was deleted: {all:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn restore_of_a_named_backup_brings_up_a_new_cluster_with_every_key() {
    let (mut s, garage, v) = running_with_keys("origin", 300).await;
    let restore_source = "    backupName: nightly\n";
    let files = docs(&[
        &cluster_yaml("origin", 1, &v, ""),
        &secret_yaml("s3", &garage.credentials(), true),
        &backup_yaml("nightly", "origin", &garage, BUCKET, "p", "s3", ""),
        &restore_yaml("bring-back", restore_source, "copy", 3, &v),
    ]);
    s.write(&files);
    let backup = s.wait_backup("nightly", "backup ready", is_ready).await;
    let restore = s
        .wait_restore("bring-back", "restore completed with a cluster id", |r| {
            r.phase == RestorePhase::Completed && r.cluster_id.is_some()
        })
        .await;
    let record = backup.last_backup.unwrap();
    assert_eq!(restore.source_key.as_deref(), Some(record.key.as_str()));
    assert_eq!(restore.sha256.as_deref(), Some(record.sha256.as_str()));
    assert!(restore.restored_revision.unwrap() >= record.revision);
    assert!(condition_is(
        &restore.conditions,
        types::READY,
        "True",
        "Restored"
    ));

    let copy = s.wait_running("copy", 3, &v).await;
    assert_keys(&copy, "origin", 300).await;
    assert_eq!(copy.cluster_id, restore.cluster_id);
    assert_ne!(
        copy.cluster_id,
        s.status("origin").unwrap().status.unwrap().cluster_id
    );
    let info = members_via_etcd(&copy).await;
    assert_eq!(info.voters().count(), 3);
    let doc: EtcdCluster = StatusFiles::new(&s.state_dir())
        .read("copy")
        .unwrap()
        .unwrap();
    assert_eq!(
        doc.metadata
            .annotations
            .unwrap_or_default()
            .get(RESTORED_BY)
            .map(String::as_str),
        Some("bring-back")
    );

    // A restarted operator keeps managing the restored cluster (a killed member comes back)
    // and never restores again (the other members keep their processes).
    let before = pids(&s, "copy", &copy);
    s.stop_operator().await;
    s.start();
    let victim = copy.members[1].name.clone();
    let pid = member_pid(&s.state_dir(), "copy", &victim);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).unwrap();
    let after = s
        .wait_status(
            "copy",
            "killed member restarted after the operator restart",
            |st| {
                st.members.len() == 3
                    && st.members.iter().all(|m| m.healthy)
                    && member_pid_opt(&s.state_dir(), "copy", &victim).is_some_and(|p| p != pid)
            },
        )
        .await;
    let mut now = pids(&s, "copy", &after);
    let mut before = before;
    before.remove(&victim);
    now.remove(&victim);
    assert_eq!(now, before, "no other member was recreated");
    let again = s.restore_status("bring-back").unwrap();
    assert_eq!(again.phase, RestorePhase::Completed);
    assert_eq!(again.restored_revision, restore.restored_revision);
    assert_keys(&after, "origin", 300).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn operator_restarted_during_a_restore_finishes_it_once() {
    let (mut s, garage, v) = running_with_keys("busy", 2000).await;
    let files = docs(&[
        &cluster_yaml("busy", 1, &v, ""),
        &secret_yaml("s3", &garage.credentials(), true),
        &backup_yaml("busy-backup", "busy", &garage, BUCKET, "p", "s3", ""),
        &restore_yaml("resume", "    backupName: busy-backup\n", "resumed", 3, &v),
    ]);
    s.write(&files);
    // Stop wherever the restore is once it started: any point must resume to the same end.
    let seen = s
        .wait_restore("resume", "restore under way", |r| {
            matches!(
                r.phase,
                RestorePhase::Downloading | RestorePhase::Restoring | RestorePhase::Completed
            )
        })
        .await;
    s.stop_operator().await;
    println!("operator stopped with the restore {:?}", seen.phase);
    s.start();
    let done = s
        .wait_restore("resume", "restore completed after the restart", |r| {
            r.phase == RestorePhase::Completed && r.cluster_id.is_some()
        })
        .await;
    let resumed = s.wait_running("resumed", 3, &v).await;
    assert_eq!(resumed.cluster_id, done.cluster_id);
    let info = members_via_etcd(&resumed).await;
    assert_eq!(info.voters().count(), 3, "one cluster of three, no strays");
    assert_keys(&resumed, "busy", 2000).await;
    let dirs = std::fs::read_dir(s.state_dir().join("clusters/default/resumed"))
        .unwrap()
        .count();
    assert_eq!(dirs, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restore_retargeted_after_it_wrote_data_stops_and_deletes_nothing() {
    let (mut s, garage, v) = running_with_keys("first", 20).await;
    let with_target = |target: &str| {
        docs(&[
            &cluster_yaml("first", 1, &v, ""),
            &secret_yaml("s3", &garage.credentials(), true),
            &backup_yaml("first-backup", "first", &garage, BUCKET, "p", "s3", ""),
            &restore_yaml("moving", "    backupName: first-backup\n", target, 1, &v),
        ])
    };
    s.write(&with_target("one"));
    s.wait_restore("moving", "restored into one", |r| {
        r.phase == RestorePhase::Completed
    })
    .await;
    // As if the operator died before recording Completed, and the spec then changed.
    s.stop_operator().await;
    std::fs::remove_file(s.state_dir().join("status/etcdrestore/moving.yaml")).unwrap();
    let data = s.state_dir().join("clusters/default/one/one-0/data");
    assert!(data.join("member/wal").is_dir());
    s.write(&with_target("two"));
    s.start();
    let st = s
        .wait_restore("moving", "partial restore reported", |r| {
            condition_is(&r.conditions, types::FAILED, "True", "PartialRestore")
        })
        .await;
    let message = &condition::find(&st.conditions, types::FAILED)
        .unwrap()
        .message;
    assert!(message.contains("clusters/default/one"), "{message}");
    assert_ne!(st.phase, RestorePhase::Completed);
    assert!(
        data.join("member/wal").is_dir(),
        "the restored data is kept"
    );
    assert!(!s.state_dir().join("clusters/default/two").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn restore_of_a_plain_etcdctl_snapshot_object() {
    let (s, garage, v) = running_with_keys("plainsrc", 50).await;
    let origin = s.wait_running("plainsrc", 1, &v).await;
    let bin = bin_for_version(&v).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let saved = dir.path().join("saved.db");
    // With the application client certificate the operator issued (TLS by default).
    let certs = origin
        .tls
        .as_ref()
        .and_then(|t| t.client_certificate.clone())
        .expect("the client certificate directory");
    let out = tokio::process::Command::new(bin.etcdctl())
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={}", client_urls(&origin)[0]))
        .arg(format!("--cacert={certs}/ca.crt"))
        .arg(format!("--cert={certs}/client.crt"))
        .arg(format!("--key={certs}/client.key"))
        .arg("--dial-timeout=5s")
        .args(["snapshot", "save"])
        .arg(&saved)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s3 = garage.client().await;
    // A plain PutObject: no metadata, so no digest to check but etcd's own.
    s3.put_object()
        .bucket(BUCKET)
        .key("manual/etcdctl.db")
        .body(ByteStream::from(std::fs::read(&saved).unwrap()))
        .send()
        .await
        .unwrap();

    s.write(&docs(&[
        &cluster_yaml("plainsrc", 1, &v, ""),
        &secret_yaml("s3", &garage.credentials(), false),
        &restore_yaml(
            "from-etcdctl",
            &s3_source(&garage, "manual/etcdctl.db"),
            "plain",
            1,
            &v,
        ),
    ]));
    let restore = s
        .wait_restore("from-etcdctl", "restore completed", |r| {
            r.phase == RestorePhase::Completed
        })
        .await;
    assert_eq!(restore.source_key.as_deref(), Some("manual/etcdctl.db"));
    let plain = s.wait_running("plain", 1, &v).await;
    assert_keys(&plain, "plainsrc", 50).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn wrong_credentials_and_a_missing_bucket_fail_typed_and_delete_nothing() {
    let (s, garage, v) = running_with_keys("guarded", 10).await;
    let s3 = garage.client().await;
    // An old backup of ours that keepLast 1 would delete after any success.
    let old = "p/guarded/20000101T000000Z-rev1.db";
    put(&s3, old, b"old".to_vec(), &SnapshotMetadata::default()).await;
    let before = object_keys(&s3, BUCKET).await;
    let wrong = StaticCredentials::new(garage.credentials().access_key_id, "0".repeat(64), None);
    let keep_one = "  retention:\n    keepLast: 1\n";
    s.write(&docs(&[
        &cluster_yaml("guarded", 1, &v, ""),
        &secret_yaml("s3", &garage.credentials(), false),
        &secret_yaml("wrong", &wrong, false),
        &backup_yaml(
            "bad-creds",
            "guarded",
            &garage,
            BUCKET,
            "p",
            "wrong",
            keep_one,
        ),
        &backup_yaml(
            "no-bucket",
            "guarded",
            &garage,
            "no-such-bucket",
            "p",
            "s3",
            keep_one,
        ),
        &backup_yaml("no-secret", "guarded", &garage, BUCKET, "p", "absent", ""),
    ]));
    let st = s
        .wait_backup(
            "bad-creds",
            "failed on credentials",
            failed_with("Credentials"),
        )
        .await;
    assert!(condition_is(
        &st.conditions,
        types::READY,
        "False",
        "Credentials"
    ));
    assert!(st.last_backup.is_none());
    let st = s
        .wait_backup(
            "no-bucket",
            "failed on the bucket",
            failed_with("BucketMissing"),
        )
        .await;
    let message = &condition::find(&st.conditions, types::FAILED)
        .unwrap()
        .message;
    assert!(message.contains("no-such-bucket"), "{message}");
    s.wait_backup(
        "no-secret",
        "failed on the secret",
        failed_with("CredentialsSecretMissing"),
    )
    .await;

    assert_eq!(object_keys(&s3, BUCKET).await, before, "nothing deleted");
    let uploads = s3
        .list_multipart_uploads()
        .bucket(BUCKET)
        .send()
        .await
        .unwrap();
    assert!(uploads.uploads().is_empty());
    let origin = s.status("guarded").unwrap().status.unwrap();
    assert_keys(&origin, "guarded", 10).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_corrupt_object_fails_sha_mismatch_and_creates_no_cluster() {
    let v = latest(5);
    let mut s = Scenario::new(fast_policy());
    let garage = TestGarage::start().await.unwrap();
    let s3 = garage.client().await;
    let original = b"an etcd snapshot, supposedly".repeat(1000);
    let mut corrupt = original.clone();
    corrupt[100] ^= 0xff;
    let metadata = SnapshotMetadata {
        sha256: Some(sha256_hex(&original)),
        ..SnapshotMetadata::default()
    };
    put(&s3, "p/gone/corrupt.db", corrupt, &metadata).await;
    s.write(&docs(&[
        &secret_yaml("s3", &garage.credentials(), false),
        &restore_yaml(
            "from-corrupt",
            &s3_source(&garage, "p/gone/corrupt.db"),
            "never",
            1,
            &v,
        ),
    ]));
    s.start();
    let st = s
        .wait_restore(
            "from-corrupt",
            "sha mismatch",
            restore_failed_with("ShaMismatch"),
        )
        .await;
    let message = &condition::find(&st.conditions, types::FAILED)
        .unwrap()
        .message;
    assert!(message.contains(&sha256_hex(&original)), "{message}");
    assert!(!s.state_dir().join("clusters/default/never").exists());
    assert!(s.status("never").is_none());
    assert!(
        !s.state_dir()
            .join("restores/default/from-corrupt/snapshot.db")
            .exists(),
        "no snapshot left behind"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restore_over_an_existing_cluster_is_refused_and_the_cluster_untouched() {
    let (s, garage, v) = running_with_keys("live", 40).await;
    let before = s.wait_running("live", 1, &v).await;
    let pids_before = pids(&s, "live", &before);
    s.write(&docs(&[
        &cluster_yaml("live", 1, &v, ""),
        &secret_yaml("s3", &garage.credentials(), false),
        &backup_yaml("live-backup", "live", &garage, BUCKET, "p", "s3", ""),
        &restore_yaml("over-live", "    backupName: live-backup\n", "live", 1, &v),
    ]));
    let st = s
        .wait_restore("over-live", "refused", restore_failed_with("ClusterExists"))
        .await;
    let message = &condition::find(&st.conditions, types::FAILED)
        .unwrap()
        .message;
    assert!(message.contains("live"), "{message}");
    // Even once the backup exists, the refusal stands and the cluster is left alone.
    s.wait_backup("live-backup", "backup ready", is_ready).await;
    assert_eq!(
        s.restore_status("over-live").unwrap().phase,
        RestorePhase::Failed
    );
    let after = s.wait_running("live", 1, &v).await;
    assert_eq!(pids(&s, "live", &after), pids_before);
    assert_eq!(after.cluster_id, before.cluster_id);
    assert_keys(&after, "live", 40).await;
    assert!(
        !s.state_dir().join("restores/default/over-live").exists(),
        "nothing was downloaded or journaled"
    );
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_old_layout_backup_stays_listed_restorable_by_backup_name_and_survives_retention() {
    let (mut s, garage, v) = running_with_keys("legacy", 200).await;
    let cluster = cluster_yaml("legacy", 1, &v, "");
    let secret = secret_yaml("s3", &garage.credentials(), true);
    let once = backup_yaml("nightly", "legacy", &garage, BUCKET, "keep", "s3", "");
    s.write(&docs(&[&cluster, &secret, &once]));
    let taken = s.wait_backup("nightly", "backup ready", is_ready).await;
    s.stop_operator().await;

    // What an operator before the per-EtcdBackup layout left: the object under
    // `<prefix>/<cluster>/`, metadata without its owner, and a status naming it.
    let record = taken.last_backup.clone().unwrap();
    let file = record.key.rsplit('/').next().unwrap();
    let legacy = format!("keep/legacy/{file}");
    let s3 = garage.client().await;
    let object = s3
        .get_object()
        .bucket(BUCKET)
        .key(&record.key)
        .send()
        .await
        .unwrap();
    let old_metadata = SnapshotMetadata {
        namespace: None,
        cluster: None,
        backup: None,
        cluster_uid: None,
        ..SnapshotMetadata::from_map(object.metadata().unwrap())
    };
    let body = object.body.collect().await.unwrap().into_bytes().to_vec();
    put(&s3, &legacy, body, &old_metadata).await;
    s3.delete_object()
        .bucket(BUCKET)
        .key(&record.key)
        .send()
        .await
        .unwrap();
    let files = StatusFiles::new(&s.state_dir());
    let mut doc: etcd_operator::api::EtcdBackup = files.read("nightly").unwrap().unwrap();
    let old_record = etcd_operator::api::backup::BackupRecord {
        key: legacy.clone(),
        ..record.clone()
    };
    let status = doc.status.as_mut().unwrap();
    status.last_backup = Some(old_record.clone());
    status.history = vec![old_record.clone()];
    files.write(&doc).unwrap();

    // The upgraded operator restores it by backupName.
    let restore = restore_yaml("from-legacy", "    backupName: nightly\n", "copy", 1, &v);
    s.write(&docs(&[&cluster, &secret, &once, &restore]));
    s.start();
    let restored = s
        .wait_restore("from-legacy", "restore of the old-layout object", |r| {
            r.phase == RestorePhase::Completed
        })
        .await;
    assert_eq!(restored.source_key.as_deref(), Some(legacy.as_str()));
    assert_eq!(restored.sha256.as_deref(), Some(record.sha256.as_str()));
    assert_keys(&s.wait_running("copy", 1, &v).await, "legacy", 200).await;

    // Backups every second keeping one: new objects come and go in the new folder; the old
    // one stays, in the bucket and in the history.
    let every_second = backup_yaml(
        "nightly",
        "legacy",
        &garage,
        BUCKET,
        "keep",
        "s3",
        "  schedule: \"* * * * * *\"\n  retention:\n    keepLast: 1\n",
    );
    s.write(&docs(&[&cluster, &secret, &every_second, &restore]));
    let seen = std::sync::Mutex::new(std::collections::BTreeSet::new());
    let st = s
        .wait_backup("nightly", "three new backups", |st| {
            let mut seen = seen.lock().unwrap();
            seen.extend(
                st.history
                    .iter()
                    .map(|r| r.key.clone())
                    .filter(|k| k.starts_with("keep/default/legacy/nightly/")),
            );
            seen.len() >= 3 && is_ready(st)
        })
        .await;
    assert!(
        st.history.iter().any(|r| r.key == legacy),
        "the old object is still listed: {:?}",
        st.history
    );
    let scope = Scope {
        prefix: Some("keep"),
        namespace: "default",
        cluster: "legacy",
        backup: "nightly",
    };
    let ours = etcd_operator::testing::wait_for(LONG, "retention down to one", || async {
        let ours = list_backups(&s3, BUCKET, &scope).await.unwrap();
        if ours.len() == 1 { Ok(ours) } else { Err(ours) }
    })
    .await
    .unwrap();
    assert_ne!(ours[0].key, legacy);
    assert!(
        object_keys(&s3, BUCKET).await.contains(&legacy),
        "retention never deletes the old layout"
    );
}
