//! [`reconcile`] against a mocked API server: refusal, creation and following a restored
//! cluster through its members' init containers; and reading those containers' statuses.

use std::sync::Arc;
use std::time::Duration;

use http::{Method, StatusCode};
use serde_json::{Value, json};

use super::*;
use crate::api::EtcdClusterSpec;
use crate::api::restore::{EtcdRestoreSpec, RestoreSource, RestoreTarget};
use crate::api::s3::S3Connection;
use crate::backup::SnapshotMetadata;
use crate::testing::api_server::{ApiServer, within_1s};
use crate::testing::garage::{BUCKET, TestGarage};

const NS: &str = "db";
const KEY: &str = "prod/main/20250610T073000Z-rev42.db";
const STATUS: &str = "/apis/etcd.operator.dev/v1alpha1/namespaces/db/etcdrestores/from-prod/status";
const CLUSTERS: &str = "/apis/etcd.operator.dev/v1alpha1/namespaces/db/etcdclusters";
const CLUSTER: &str = "/apis/etcd.operator.dev/v1alpha1/namespaces/db/etcdclusters/restored";
const BACKUP: &str = "/apis/etcd.operator.dev/v1alpha1/namespaces/db/etcdbackups/nightly";
const SECRET: &str = "/api/v1/namespaces/db/secrets/s3-creds";
const PODS: &str = "/api/v1/namespaces/db/pods";
const EVENTS: &str = "/apis/events.k8s.io/v1/namespaces/db/events";

fn connection() -> S3Connection {
    S3Connection {
        endpoint: Some("http://garage.storage.svc:3900".into()),
        region: None,
        force_path_style: Some(true),
        credentials_secret: Some("s3-creds".into()),
    }
}

fn from_s3() -> RestoreSource {
    RestoreSource {
        s3: Some(S3Object {
            bucket: "backups".into(),
            key: KEY.into(),
            connection: connection(),
        }),
        backup_name: None,
        sha256: None,
    }
}

fn from_backup() -> RestoreSource {
    RestoreSource {
        s3: None,
        backup_name: Some("nightly".into()),
        sha256: None,
    }
}

/// An EtcdRestore as read from the API server.
fn restore(source: RestoreSource) -> EtcdRestore {
    let mut r = EtcdRestore::new(
        "from-prod",
        EtcdRestoreSpec {
            source,
            cluster: RestoreTarget {
                name: "restored".into(),
                spec: EtcdClusterSpec::new(3, "3.5.16"),
            },
        },
    );
    r.metadata.namespace = Some(NS.into());
    r.metadata.uid = Some("uid-r".into());
    r.metadata.generation = Some(1);
    r
}

fn context(client: Client) -> Arc<Context> {
    Arc::new(Context::new(
        client,
        Metrics::new(),
        Reporter {
            controller: "etcd-operator".into(),
            instance: Some("etcd-operator-0".into()),
        },
    ))
}

fn context_allowing_ambient(client: Client) -> Arc<Context> {
    let mut ctx = Context::new(
        client,
        Metrics::new(),
        Reporter {
            controller: "etcd-operator".into(),
            instance: Some("etcd-operator-0".into()),
        },
    );
    ctx.allow_ambient_credentials = true;
    Arc::new(ctx)
}

/// The pin of the object `our_cluster` restores.
fn pin() -> PinnedSource {
    PinnedSource {
        etag: "\"9b2cf535f27731c974343645a3985328\"".into(),
        version_id: None,
        sha256: Some("cd".repeat(32)),
        size: Some(20512),
    }
}

/// The cluster `restored` as this restore created it, with `status`.
fn our_cluster(status: Value) -> Value {
    let from = restore_source(NS, &restore(from_s3()).spec, None).unwrap();
    let mut c = serde_json::to_value(new_cluster(&restore(from_s3()), &from, &pin())).unwrap();
    c["metadata"]["uid"] = json!("uid-c");
    c["status"] = status;
    c
}

/// A real Garage holding a snapshot-sized object at [`KEY`] with `metadata`; returns it
/// with its ETag.
async fn garage_with_object(metadata: &SnapshotMetadata) -> (TestGarage, String) {
    let garage = TestGarage::start().await.unwrap_or_else(|e| panic!("{e}"));
    let etag = garage.put_snapshot(BUCKET, KEY, metadata).await;
    (garage, etag)
}

/// `garage`'s key pair as the Secret `s3-creds`.
fn garage_secret(garage: &TestGarage) -> Value {
    let c = garage.credentials();
    json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": { "name": "s3-creds", "namespace": "db" },
        "data": {
            "accessKeyId": base64(c.access_key_id.as_bytes()),
            "secretAccessKey": base64(c.secret_access_key().as_bytes()),
        },
    })
}

fn base64(bytes: &[u8]) -> Value {
    serde_json::to_value(k8s_openapi::ByteString(bytes.to_vec())).unwrap()
}

/// A restore of [`KEY`] in `garage`, through the Secret `s3-creds`.
fn from_garage(garage: &TestGarage, sha256: Option<String>) -> RestoreSource {
    RestoreSource {
        s3: Some(S3Object {
            bucket: BUCKET.into(),
            key: KEY.into(),
            connection: S3Connection {
                credentials_secret: Some("s3-creds".into()),
                ..garage.connection()
            },
        }),
        backup_name: None,
        sha256,
    }
}

fn pod_list(pods: Vec<Value>) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "PodList",
        "metadata": { "resourceVersion": "1" },
        "items": pods,
    })
}

/// A bootstrap member Pod of the restored cluster whose restore containers report
/// `statuses` (initContainerStatuses).
fn member_pod(ordinal: u32, statuses: Value) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": { "name": format!("restored-{ordinal}"), "namespace": "db" },
        "spec": {
            "initContainers": [
                { "name": "restore-fetch" },
                { "name": "restore" },
                { "name": "restore-finish" },
            ],
            "containers": [{ "name": "etcd" }],
        },
        "status": { "phase": "Pending", "initContainerStatuses": statuses },
    })
}

fn init_status(name: &str, state: Value, last_state: Value) -> Value {
    json!({
        "name": name,
        "image": "x",
        "imageID": "",
        "ready": false,
        "restartCount": 0,
        "state": state,
        "lastState": last_state,
    })
}

fn terminated(exit_code: i32, message: &str) -> Value {
    json!({ "terminated": { "exitCode": exit_code, "message": message } })
}

/// Expects the status apply and answers it; returns the applied status without condition
/// timestamps.
async fn expect_status(s: &mut ApiServer, source: RestoreSource) -> Value {
    let call = s.expect(Method::PATCH, STATUS).await;
    call.assert_apply();
    assert_eq!(call.body["kind"], "EtcdRestore");
    let mut status = call.body["status"].clone();
    let mut body = serde_json::to_value(restore(source)).unwrap();
    body["status"] = status.clone();
    call.reply(&body);
    if let Some(conditions) = status["conditions"].as_array_mut() {
        for c in conditions {
            c.as_object_mut().unwrap().remove("lastTransitionTime");
        }
    }
    status
}

/// Expects one Event about the restore and answers it; returns it.
async fn expect_event(s: &mut ApiServer) -> Value {
    let event = s.expect(Method::POST, EVENTS).await;
    assert_eq!(event.body["regarding"]["kind"], "EtcdRestore");
    assert_eq!(event.body["regarding"]["name"], "from-prod");
    assert_eq!(event.body["action"], "Restore");
    let body = event.body.clone();
    event.echo();
    body
}

fn condition(type_: &str, status: &str, reason: &str, message: &str) -> Value {
    json!({
        "type": type_,
        "status": status,
        "reason": reason,
        "message": message,
        "observedGeneration": 1,
    })
}

#[tokio::test]
async fn an_existing_cluster_is_refused_and_nothing_is_created() {
    let (client, server) = ApiServer::client(NS);
    let ctx = context(client);
    let server = server.run(|mut s| async move {
        let mut theirs = our_cluster(json!(null));
        theirs["metadata"]["annotations"] = json!(null);
        s.expect(Method::GET, CLUSTER).await.reply(&theirs);
        let status = expect_status(&mut s, from_s3()).await;
        let message = "cluster restored already exists (an EtcdCluster not created by a \
                       restore); restores only create new clusters";
        assert_eq!(
            status,
            json!({
                "phase": "Failed",
                "observedGeneration": 1,
                "conditions": [
                    condition("SpecValid", "True", "Valid", ""),
                    condition("Failed", "True", "ClusterExists", message),
                    condition("Ready", "False", "ClusterExists", message),
                ],
            })
        );
        let event = expect_event(&mut s).await;
        assert_eq!(event["type"], "Warning");
        assert_eq!(event["reason"], "ClusterExists");
        assert_eq!(event["note"], message);
        // The script ends here: a create (or anything else) would fail the reconcile.
    });
    let action = reconcile(Arc::new(restore(from_s3())), ctx).await.unwrap();
    within_1s(server).await;
    assert_eq!(action, Action::await_change());
}

#[tokio::test]
async fn a_refused_restore_stays_refused_without_requests() {
    let (client, server) = ApiServer::client(NS);
    let ctx = context(client);
    let server = server.run(|_| async {});
    let mut r = restore(from_s3());
    r.status = Some(restore_status_failed(
        None,
        &Precondition::ClusterExists {
            cluster: "restored".into(),
            evidence: "x".into(),
        },
        1,
        Timestamp::now(),
    ));
    let action = reconcile(Arc::new(r), ctx).await.unwrap();
    within_1s(server).await;
    assert_eq!(action, Action::await_change());
}

#[tokio::test]
async fn a_restore_pins_its_object_and_creates_its_cluster_annotated_and_without_owner() {
    // A plain object someone uploaded: no digest in the spec, only the object's metadata.
    let digest = "cd".repeat(32);
    let metadata = SnapshotMetadata {
        sha256: Some(digest.clone()),
        ..SnapshotMetadata::default()
    };
    let (garage, etag) = garage_with_object(&metadata).await;
    let (client, server) = ApiServer::client(NS);
    let ctx = context(client);
    let secret = garage_secret(&garage);
    let endpoint = garage.endpoint().to_owned();
    let source = from_garage(&garage, None);
    let server = server.run(|mut s| async move {
        s.expect(Method::GET, CLUSTER)
            .await
            .fail(StatusCode::NOT_FOUND, "NotFound");
        s.expect(Method::GET, SECRET).await.reply(&secret);
        let create = s.expect(Method::POST, CLUSTERS).await;
        assert!(create.query.contains("fieldManager=etcd-operator"));
        let annotated: Value = serde_json::from_str(
            create.body["metadata"]["annotations"]["etcd.operator.dev/restore-source"]
                .as_str()
                .unwrap(),
        )
        .unwrap();
        // What every member's restore-fetch gets: the object, its ETag and its digest.
        assert_eq!(
            annotated,
            json!({
                "bucket": "backups",
                "key": KEY,
                "endpoint": endpoint,
                "region": "garage",
                "forcePathStyle": true,
                "credentialsSecret": "s3-creds",
                "sha256": digest,
                "etag": etag,
            })
        );
        let mut body = create.body.clone();
        body["metadata"]["annotations"]["etcd.operator.dev/restore-source"] = json!("checked");
        assert_eq!(
            body,
            json!({
                "apiVersion": "etcd.operator.dev/v1alpha1",
                "kind": "EtcdCluster",
                "metadata": {
                    "name": "restored",
                    "namespace": "db",
                    "annotations": {
                        "etcd.operator.dev/restore-from": "db/from-prod",
                        "etcd.operator.dev/restore-source": "checked",
                    },
                },
                "spec": { "size": 3, "version": "3.5.16" },
            })
        );
        create.echo();
        let status = expect_status(&mut s, from_s3()).await;
        assert_eq!(status["phase"], "Downloading");
        assert_eq!(status["sourceKey"], KEY);
        assert_eq!(
            status["pinned"],
            json!({
                "etag": etag,
                "sha256": digest,
                "size": crate::backup::member_restore::EMPTY_SNAPSHOT.len(),
            })
        );
        assert_eq!(
            status["conditions"][1],
            condition("Ready", "False", "Restoring", &format!("downloading {KEY}"))
        );
        let event = expect_event(&mut s).await;
        assert_eq!(event["type"], "Normal");
        assert_eq!(event["reason"], "ClusterCreated");
        assert_eq!(
            event["note"],
            format!(
                "created EtcdCluster restored to restore s3://backups/{KEY} (pinned to etag {etag})"
            )
        );
    });
    let action = reconcile(Arc::new(restore(source)), ctx).await.unwrap();
    within_1s(server).await;
    assert_eq!(action, Action::requeue(WHILE_RESTORING));
}

#[tokio::test]
async fn an_object_whose_digest_is_not_the_expected_one_is_refused_before_anything_is_created() {
    // The object at the key was replaced since the digest in the spec was taken.
    let metadata = SnapshotMetadata {
        sha256: Some("cd".repeat(32)),
        ..SnapshotMetadata::default()
    };
    let (garage, _) = garage_with_object(&metadata).await;
    let (client, server) = ApiServer::client(NS);
    let ctx = context(client);
    let secret = garage_secret(&garage);
    let source = from_garage(&garage, Some("ab".repeat(32)));
    let server = server.run(|mut s| async move {
        s.expect(Method::GET, CLUSTER)
            .await
            .fail(StatusCode::NOT_FOUND, "NotFound");
        s.expect(Method::GET, SECRET).await.reply(&secret);
        let status = expect_status(&mut s, from_s3()).await;
        assert_eq!(status["phase"], "Failed");
        assert_eq!(status["conditions"][1]["reason"], "ShaMismatch");
        assert_eq!(status.get("pinned"), None);
        assert_eq!(expect_event(&mut s).await["reason"], "ShaMismatch");
        // The script ends here: creating the cluster would fail the reconcile.
    });
    let action = reconcile(Arc::new(restore(source)), ctx).await.unwrap();
    within_1s(server).await;
    assert_eq!(action, Action::await_change());
}

fn backup_with_last(etcd_version: &str) -> Value {
    let mut b = EtcdBackup::new(
        "nightly",
        crate::api::backup::EtcdBackupSpec {
            cluster_name: "main".into(),
            destination: crate::api::backup::BackupDestination {
                s3: crate::api::backup::S3Destination {
                    bucket: "backups".into(),
                    prefix: Some("prod".into()),
                    connection: S3Connection {
                        credentials_secret: None,
                        ..connection()
                    },
                    part_size_mib: None,
                    compression: None,
                    sign_payload: None,
                },
            },
            schedule: None,
            retention: None,
            verify: None,
        },
    );
    b.metadata.namespace = Some(NS.into());
    let record = crate::api::backup::BackupRecord {
        key: KEY.into(),
        size: 1000,
        sha256: "ab".repeat(32),
        revision: 42,
        etcd_version: etcd_version.into(),
        cluster_id: "cdf818194e3a8c32".into(),
        duration_seconds: 0.5,
        mb_per_second: 2.0,
        time: condition::now(),
        verification: None,
    };
    b.status = Some(crate::plan::backup::status_after_success(
        None,
        record,
        1,
        None,
        Timestamp::now(),
    ));
    serde_json::to_value(b).unwrap()
}

#[tokio::test]
async fn a_backup_name_restores_its_latest_backup_with_its_digest() {
    let metadata = SnapshotMetadata {
        sha256: Some("ab".repeat(32)),
        ..SnapshotMetadata::default()
    };
    let (garage, etag) = garage_with_object(&metadata).await;
    let (client, server) = ApiServer::client(NS);
    let ctx = context(client);
    let mut backup = backup_with_last("3.5.16");
    backup["spec"]["destination"]["s3"]["endpoint"] = json!(garage.endpoint());
    backup["spec"]["destination"]["s3"]["region"] = json!("garage");
    backup["spec"]["destination"]["s3"]["credentialsSecret"] = json!("s3-creds");
    let secret = garage_secret(&garage);
    let server = server.run(|mut s| async move {
        s.expect(Method::GET, CLUSTER)
            .await
            .fail(StatusCode::NOT_FOUND, "NotFound");
        s.expect(Method::GET, BACKUP).await.reply(&backup);
        s.expect(Method::GET, SECRET).await.reply(&secret);
        let create = s.expect(Method::POST, CLUSTERS).await;
        let source: Value = serde_json::from_str(
            create.body["metadata"]["annotations"]["etcd.operator.dev/restore-source"]
                .as_str()
                .unwrap(),
        )
        .unwrap();
        assert_eq!(source["key"], KEY);
        assert_eq!(source["sha256"], "ab".repeat(32));
        assert_eq!(source["etag"], etag);
        create.echo();
        expect_status(&mut s, from_backup()).await;
        expect_event(&mut s).await;
    });
    reconcile(Arc::new(restore(from_backup())), ctx)
        .await
        .unwrap();
    within_1s(server).await;
}

#[tokio::test]
async fn a_backup_without_a_success_waits_and_retries() {
    let (client, server) = ApiServer::client(NS);
    let ctx = context(client);
    let server = server.run(|mut s| async move {
        s.expect(Method::GET, CLUSTER)
            .await
            .fail(StatusCode::NOT_FOUND, "NotFound");
        s.expect(Method::GET, BACKUP)
            .await
            .fail(StatusCode::NOT_FOUND, "NotFound");
        let status = expect_status(&mut s, from_backup()).await;
        assert_eq!(status["phase"], "Pending");
        assert_eq!(status["conditions"][1]["reason"], "BackupNotFound");
        assert_eq!(expect_event(&mut s).await["reason"], "BackupNotFound");
    });
    let action = reconcile(Arc::new(restore(from_backup())), ctx)
        .await
        .unwrap();
    within_1s(server).await;
    assert_eq!(action, Action::requeue(Duration::from_secs(5)));
}

#[tokio::test]
async fn a_source_without_a_secret_is_refused_unless_ambient_credentials_are_allowed() {
    let (client, server) = ApiServer::client(NS);
    let ctx = context(client);
    let server = server.run(|mut s| async move {
        s.expect(Method::GET, CLUSTER)
            .await
            .fail(StatusCode::NOT_FOUND, "NotFound");
        s.expect(Method::GET, BACKUP)
            .await
            .reply(&backup_with_last("3.5.16"));
        // Refused before any cluster is created.
        let status = expect_status(&mut s, from_backup()).await;
        assert_eq!(status["phase"], "Failed");
        assert_eq!(
            status["conditions"][1]["reason"],
            "AmbientCredentialsNotAllowed"
        );
        let event = expect_event(&mut s).await;
        assert_eq!(event["reason"], "AmbientCredentialsNotAllowed");
        assert!(
            event["note"]
                .as_str()
                .unwrap()
                .contains("--allow-ambient-credentials"),
            "{event}"
        );
    });
    let action = reconcile(Arc::new(restore(from_backup())), ctx)
        .await
        .unwrap();
    within_1s(server).await;
    assert_eq!(action, Action::await_change());
}

#[tokio::test]
async fn a_snapshot_newer_than_the_target_is_refused_before_anything_is_created() {
    let (client, server) = ApiServer::client(NS);
    // The backup names no Secret: these run with ambient credentials allowed.
    let ctx = context_allowing_ambient(client);
    let server = server.run(|mut s| async move {
        s.expect(Method::GET, CLUSTER)
            .await
            .fail(StatusCode::NOT_FOUND, "NotFound");
        s.expect(Method::GET, BACKUP)
            .await
            .reply(&backup_with_last("3.6.0"));
        let status = expect_status(&mut s, from_backup()).await;
        assert_eq!(status["phase"], "Failed");
        assert_eq!(status["conditions"][1]["reason"], "SnapshotTooNew");
        assert_eq!(expect_event(&mut s).await["reason"], "SnapshotTooNew");
    });
    let action = reconcile(Arc::new(restore(from_backup())), ctx)
        .await
        .unwrap();
    within_1s(server).await;
    assert_eq!(action, Action::await_change());
}

#[tokio::test]
async fn a_missing_credentials_secret_creates_nothing() {
    let (client, server) = ApiServer::client(NS);
    let ctx = context(client);
    let server = server.run(|mut s| async move {
        s.expect(Method::GET, CLUSTER)
            .await
            .fail(StatusCode::NOT_FOUND, "NotFound");
        s.expect(Method::GET, SECRET)
            .await
            .fail(StatusCode::NOT_FOUND, "NotFound");
        let status = expect_status(&mut s, from_s3()).await;
        assert_eq!(status["phase"], "Pending");
        assert_eq!(
            status["conditions"][1]["reason"],
            "CredentialsSecretMissing"
        );
        expect_event(&mut s).await;
    });
    reconcile(Arc::new(restore(from_s3())), ctx).await.unwrap();
    within_1s(server).await;
}

#[tokio::test]
async fn a_failed_fetch_fails_the_restore_with_its_reason() {
    let (client, server) = ApiServer::client(NS);
    let ctx = context(client);
    let server = server.run(|mut s| async move {
        s.expect(Method::GET, CLUSTER)
            .await
            .reply(&our_cluster(json!({ "phase": "Creating" })));
        let list = s.expect(Method::GET, PODS).await;
        assert!(
            list.query
                .contains("labelSelector=etcd.operator.dev%2Fcluster%3Drestored"),
            "{}",
            list.query
        );
        let report = StepReport::Failed {
            reason: "ShaMismatch".into(),
            retryable: false,
            message: "snapshot sha256 is b, expected a".into(),
        };
        let fetch = init_status(
            "restore-fetch",
            json!({ "waiting": { "reason": "CrashLoopBackOff" } }),
            terminated(1, &report.to_message()),
        );
        list.reply(&pod_list(vec![member_pod(0, json!([fetch]))]));
        let status = expect_status(&mut s, from_s3()).await;
        assert_eq!(status["phase"], "Failed");
        let message = "restore-fetch of restored-0 exited 1: snapshot sha256 is b, expected a";
        assert_eq!(
            status["conditions"][1],
            condition("Failed", "True", "ShaMismatch", message)
        );
        let event = expect_event(&mut s).await;
        assert_eq!(event["type"], "Warning");
        assert_eq!(event["reason"], "ShaMismatch");
    });
    let action = reconcile(Arc::new(restore(from_s3())), ctx).await.unwrap();
    within_1s(server).await;
    assert_eq!(action, Action::await_change());
}

#[tokio::test]
async fn an_object_changed_after_the_pin_fails_the_restore_for_good() {
    let (client, server) = ApiServer::client(NS);
    let ctx = context(client);
    let server = server.run(|mut s| async move {
        s.expect(Method::GET, CLUSTER)
            .await
            .reply(&our_cluster(json!({ "phase": "Creating" })));
        let changed = crate::backup::Error::SourceChanged {
            bucket: "backups".into(),
            key: KEY.into(),
            pinned: pin().etag,
            now: "\"0f\"".into(),
        };
        let fetch = init_status(
            "restore-fetch",
            json!({ "waiting": { "reason": "CrashLoopBackOff" } }),
            terminated(1, &StepReport::failed(&changed).to_message()),
        );
        let done = init_status(
            "restore-fetch",
            terminated(0, &fetched_report().to_message()),
            json!({}),
        );
        s.expect(Method::GET, PODS).await.reply(&pod_list(vec![
            member_pod(0, json!([done])),
            member_pod(1, json!([fetch])),
        ]));
        let status = expect_status(&mut s, from_s3()).await;
        assert_eq!(status["phase"], "Failed");
        assert_eq!(status["conditions"][1]["reason"], "SourceChanged");
        assert!(
            status["conditions"][1]["message"]
                .as_str()
                .unwrap()
                .contains("changed since the restore pinned it"),
            "{status}"
        );
        // The pin is recorded from the cluster's annotation even if no earlier pass did.
        assert_eq!(status["pinned"]["etag"], pin().etag);
        let event = expect_event(&mut s).await;
        assert_eq!(event["type"], "Warning");
        assert_eq!(event["reason"], "SourceChanged");
    });
    let action = reconcile(Arc::new(restore(from_s3())), ctx).await.unwrap();
    within_1s(server).await;
    assert_eq!(action, Action::await_change());
}

#[tokio::test]
async fn a_restore_whose_init_image_cannot_be_pulled_fails_instead_of_downloading() {
    let (client, server) = ApiServer::client(NS);
    let ctx = context(client);
    let server = server.run(|mut s| async move {
        s.expect(Method::GET, CLUSTER)
            .await
            .reply(&our_cluster(json!({ "phase": "Creating" })));
        let fetch = init_status(
            "restore-fetch",
            json!({ "waiting": {
                "reason": "ImagePullBackOff",
                "message": "Back-off pulling image \"ghcr.io/etcd-operator/etcd-operator:0.1.0\"",
            }}),
            json!({}),
        );
        s.expect(Method::GET, PODS)
            .await
            .reply(&pod_list(vec![member_pod(0, json!([fetch]))]));
        let status = expect_status(&mut s, from_s3()).await;
        assert_eq!(status["phase"], "Failed");
        assert_eq!(status["conditions"][1]["reason"], "ImagePull");
        let event = expect_event(&mut s).await;
        assert_eq!(event["type"], "Warning");
        assert_eq!(event["reason"], "ImagePull");
    });
    let action = reconcile(Arc::new(restore(from_s3())), ctx).await.unwrap();
    within_1s(server).await;
    assert_eq!(action, Action::await_change());
}

fn fetched_report() -> StepReport {
    StepReport::Fetched {
        sha256: "cd".repeat(32),
        size: 20512,
        revision: Some(42),
    }
}

fn fetched_pods() -> Value {
    let report = fetched_report();
    let done = |name| init_status(name, terminated(0, &report.to_message()), json!({}));
    pod_list(
        (0..3)
            .map(|i| member_pod(i, json!([done("restore-fetch")])))
            .collect(),
    )
}

#[tokio::test]
async fn fetched_members_make_the_restore_restoring() {
    let (client, server) = ApiServer::client(NS);
    let ctx = context(client);
    let server = server.run(|mut s| async move {
        s.expect(Method::GET, CLUSTER)
            .await
            .reply(&our_cluster(json!({ "phase": "Creating" })));
        s.expect(Method::GET, PODS).await.reply(&fetched_pods());
        let status = expect_status(&mut s, from_s3()).await;
        assert_eq!(status["phase"], "Restoring");
        assert_eq!(status["sha256"], "cd".repeat(32));
        assert_eq!(status["restoredRevision"], 42);
    });
    let action = reconcile(Arc::new(restore(from_s3())), ctx).await.unwrap();
    within_1s(server).await;
    assert_eq!(action, Action::requeue(WHILE_RESTORING));
}

#[tokio::test]
async fn an_available_cluster_completes_the_restore_with_its_id() {
    let (client, server) = ApiServer::client(NS);
    let ctx = context(client);
    let server = server.run(|mut s| async move {
        let available = json!({
            "phase": "Running",
            "readyMembers": 3,
            "clusterID": "8e9e05c52164694d",
            "conditions": [{
                "type": "Available",
                "status": "True",
                "reason": "QuorumHealthy",
                "message": "",
                "lastTransitionTime": "2025-06-10T07:30:00Z",
            }],
        });
        s.expect(Method::GET, CLUSTER)
            .await
            .reply(&our_cluster(available));
        s.expect(Method::GET, PODS).await.reply(&fetched_pods());
        let status = expect_status(&mut s, from_s3()).await;
        assert_eq!(status["phase"], "Completed");
        assert_eq!(status["clusterID"], "8e9e05c52164694d");
        assert_eq!(status["restoredRevision"], 42);
        assert_eq!(status["sourceKey"], KEY);
        assert_eq!(
            status["conditions"][1],
            condition(
                "Ready",
                "True",
                "Restored",
                &format!("restored revision 42 from {KEY}")
            )
        );
        let event = expect_event(&mut s).await;
        assert_eq!(event["type"], "Normal");
        assert_eq!(event["reason"], "Restored");
    });
    let action = reconcile(Arc::new(restore(from_s3())), ctx).await.unwrap();
    within_1s(server).await;
    assert_eq!(action, Action::await_change());
}

#[tokio::test]
async fn an_invalid_restore_fails_without_requests_but_its_status() {
    let (client, server) = ApiServer::client(NS);
    let ctx = context(client);
    let mut r = restore(from_s3());
    r.spec.source.backup_name = Some("nightly".into());
    let server = server.run(|mut s| async move {
        let status = expect_status(&mut s, from_s3()).await;
        assert_eq!(status["phase"], "Failed");
        assert_eq!(status["conditions"][0]["status"], "False");
        assert_eq!(
            status["conditions"][0]["message"],
            "spec.source: set exactly one of s3 or backupName"
        );
        assert_eq!(expect_event(&mut s).await["reason"], "InvalidSpec");
    });
    let action = reconcile(Arc::new(r), ctx).await.unwrap();
    within_1s(server).await;
    assert_eq!(action, Action::await_change());
}

fn pods(list: Value) -> Vec<Pod> {
    serde_json::from_value(list["items"].clone()).unwrap()
}

#[test]
fn progress_waits_for_every_bootstrap_member_and_ignores_later_members() {
    let report = StepReport::AlreadyRestored.to_message();
    let done = init_status("restore-fetch", terminated(0, &report), json!({}));
    let running = init_status("restore-fetch", json!({ "running": {} }), json!({}));
    let joined = json!({
        "metadata": { "name": "restored-3" },
        "spec": { "containers": [{ "name": "etcd" }] },
    });
    let some = pods(pod_list(vec![
        member_pod(0, json!([done.clone()])),
        member_pod(1, json!([running])),
    ]));
    assert_eq!(progress(&some, Timestamp::now()), Progress::Fetching);
    let all = pods(pod_list(vec![
        member_pod(0, json!([done.clone()])),
        member_pod(1, json!([done])),
        joined,
    ]));
    assert_eq!(
        progress(&all, Timestamp::now()),
        Progress::Fetched {
            sha256: None,
            revision: None
        }
    );
    assert_eq!(progress(&[], Timestamp::now()), Progress::Fetching);
}

#[test]
fn container_failures_carry_static_reasons() {
    let tool = init_status(
        "restore",
        terminated(1, "Error: snapshot file has wrong hash"),
        json!({}),
    );
    let Progress::Failed(failure) =
        progress_now(&pods(pod_list(vec![member_pod(0, json!([tool]))])))
    else {
        panic!("not failed")
    };
    assert_eq!((failure.reason, failure.retryable), ("Restore", false));
    assert!(failure.message.ends_with("snapshot file has wrong hash"));

    let invented = StepReport::Failed {
        reason: "Whatever I Like".into(),
        retryable: true,
        message: "m".into(),
    };
    let fetch = init_status(
        "restore-fetch",
        terminated(1, &invented.to_message()),
        json!({}),
    );
    let Progress::Failed(failure) =
        progress_now(&pods(pod_list(vec![member_pod(0, json!([fetch]))])))
    else {
        panic!("not failed")
    };
    assert_eq!(failure.reason, "RestoreStepFailed");

    let config = init_status(
        "restore-fetch",
        json!({ "waiting": {
            "reason": "CreateContainerConfigError",
            "message": "couldn't find key accessKeyId in Secret db/s3-creds",
        }}),
        json!({}),
    );
    let Progress::Failed(failure) =
        progress_now(&pods(pod_list(vec![member_pod(0, json!([config]))])))
    else {
        panic!("not failed")
    };
    assert_eq!(failure.reason, "CreateContainerConfigError");
    assert!(failure.retryable);
}

fn progress_now(pods: &[Pod]) -> Progress {
    progress(pods, Timestamp::now())
}

/// The operator's image went stale (`kubectl set image` left `OPERATOR_IMAGE` behind):
/// the restore fails, naming the image, instead of "downloading" for ever.
#[test]
fn a_restore_container_whose_image_cannot_be_pulled_fails_the_restore() {
    for reason in ["ErrImagePull", "ImagePullBackOff", "InvalidImageName"] {
        let fetch = init_status(
            "restore-fetch",
            json!({ "waiting": { "reason": reason, "message": "not found" } }),
            json!({}),
        );
        let Progress::Failed(failure) =
            progress_now(&pods(pod_list(vec![member_pod(0, json!([fetch]))])))
        else {
            panic!("{reason}: not failed")
        };
        assert_eq!((failure.reason, failure.retryable), ("ImagePull", false));
        assert!(failure.message.contains(reason), "{}", failure.message);
        assert!(failure.message.contains("image x"), "{}", failure.message);
    }
}

#[test]
fn a_crash_looping_restore_container_fails_the_restore() {
    let finish = init_status(
        "restore-finish",
        json!({ "waiting": { "reason": "CrashLoopBackOff" } }),
        terminated(2, ""),
    );
    let Progress::Failed(failure) =
        progress_now(&pods(pod_list(vec![member_pod(0, json!([finish]))])))
    else {
        panic!("not failed")
    };
    assert_eq!(failure.reason, "RestoreStepFailed");
    assert!(failure.message.contains("exited 2"), "{}", failure.message);
}

#[test]
fn a_member_unschedulable_past_the_deadline_fails_the_restore_until_it_schedules() {
    let unschedulable = |since: Timestamp| {
        let mut pod = member_pod(0, json!([]));
        pod["status"]["conditions"] = json!([{
            "type": "PodScheduled",
            "status": "False",
            "reason": "Unschedulable",
            "message": "0/1 nodes are available: 1 Insufficient cpu.",
            "lastTransitionTime": since.to_string(),
        }]);
        pods(pod_list(vec![pod]))
    };
    let now = Timestamp::now();
    let recent = now - jiff::SignedDuration::from_secs(60);
    assert_eq!(progress(&unschedulable(recent), now), Progress::Fetching);
    let long_ago = now - jiff::SignedDuration::from_secs(301);
    let Progress::Failed(failure) = progress(&unschedulable(long_ago), now) else {
        panic!("not failed")
    };
    assert_eq!((failure.reason, failure.retryable), ("Unschedulable", true));
    assert!(
        failure.message.contains("Insufficient cpu"),
        "{}",
        failure.message
    );
}

#[test]
fn a_retry_that_succeeded_clears_an_earlier_failure() {
    let report = StepReport::AlreadyRestored.to_message();
    let fetch = init_status(
        "restore-fetch",
        terminated(0, &report),
        terminated(1, "network"),
    );
    assert!(matches!(
        progress_now(&pods(pod_list(vec![member_pod(0, json!([fetch]))]))),
        Progress::Fetched { .. }
    ));
}

#[test]
fn the_revision_is_read_from_our_key_layout_only() {
    assert_eq!(revision_in_key(KEY), Some(42));
    assert_eq!(revision_in_key(&format!("{KEY}.zst")), Some(42));
    assert_eq!(revision_in_key("manual/snapshot.db"), None);
    assert_eq!(revision_in_key("a-rev.db"), None);
}

#[test]
fn a_cluster_names_the_restore_that_created_it() {
    let cluster: EtcdCluster = serde_json::from_value(our_cluster(json!(null))).unwrap();
    assert_eq!(
        restore_of(cluster),
        Some(ObjectRef::new("from-prod").within("db"))
    );
    let plain = EtcdCluster::new("x", EtcdClusterSpec::new(1, "3.5.16"));
    assert_eq!(restore_of(plain), None);
}
