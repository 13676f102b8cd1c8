//! [`reconcile`] against a mocked API server: every path that needs no etcd or S3 (the
//! engine is tested against real ones in `tests/backup.rs`).

use std::sync::Arc;
use std::time::Duration;

use http::{Method, StatusCode};
use serde_json::{Value, json};

use super::*;
use crate::api::EtcdClusterSpec;
use crate::api::backup::{BackupDestination, BackupRecord, EtcdBackupSpec, S3Destination};
use crate::api::cluster::{EtcdClusterStatus, MemberStatus};
use crate::api::s3::S3Connection;
use crate::testing::api_server::{ApiServer, within_1s};

const NS: &str = "db";
const STATUS: &str = "/apis/etcd.operator.dev/v1alpha1/namespaces/db/etcdbackups/nightly/status";
const CLUSTER: &str = "/apis/etcd.operator.dev/v1alpha1/namespaces/db/etcdclusters/main";
const EVENTS: &str = "/apis/events.k8s.io/v1/namespaces/db/events";

fn spec(schedule: Option<&str>) -> EtcdBackupSpec {
    EtcdBackupSpec {
        cluster_name: "main".into(),
        destination: BackupDestination {
            s3: S3Destination {
                bucket: "backups".into(),
                prefix: Some("prod".into()),
                connection: S3Connection {
                    endpoint: Some("http://garage.storage.svc:3900".into()),
                    region: None,
                    force_path_style: Some(true),
                    credentials_secret: Some("s3-creds".into()),
                },
                part_size_mib: None,
                compression: None,
                sign_payload: None,
            },
        },
        schedule: schedule.map(str::to_owned),
        retention: None,
        verify: None,
    }
}

/// An EtcdBackup as read from the API server.
fn backup(spec: EtcdBackupSpec) -> EtcdBackup {
    let mut b = EtcdBackup::new("nightly", spec);
    b.metadata.namespace = Some(NS.into());
    b.metadata.uid = Some("uid-b".into());
    b.metadata.generation = Some(1);
    b
}

/// The EtcdCluster `main`, its three members listed with client URLs.
fn cluster() -> Value {
    let mut c = EtcdCluster::new("main", EtcdClusterSpec::new(3, "3.5.16"));
    c.metadata.namespace = Some(NS.into());
    c.metadata.uid = Some("uid-c".into());
    c.status = Some(EtcdClusterStatus {
        members: (0..3)
            .map(|i| MemberStatus {
                name: format!("main-{i}"),
                client_url: Some(format!("http://main-{i}.main.db.svc:2379")),
                healthy: true,
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    });
    // Available with healthy members: a backup's precondition on both runtimes.
    if let Some(status) = c.status.as_mut() {
        crate::api::condition::set(
            &mut status.conditions,
            crate::api::condition::types::AVAILABLE,
            crate::api::condition::Status::True,
            "MembersHealthy",
            "",
            Some(1),
            crate::api::condition::now(),
        );
    }
    serde_json::to_value(c).unwrap()
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

/// The backup the API server returns after a status apply of `patch`.
fn stored(patch: &Value, spec: EtcdBackupSpec) -> Value {
    let mut b = serde_json::to_value(backup(spec)).unwrap();
    b["status"] = patch["status"].clone();
    b
}

/// Conditions without their timestamps, which come from the clock.
fn without_times(mut status: Value) -> Value {
    if let Some(conditions) = status["conditions"].as_array_mut() {
        for c in conditions {
            c.as_object_mut().unwrap().remove("lastTransitionTime");
        }
    }
    status
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

/// Expects the status apply and answers it; returns the applied status.
async fn expect_status(s: &mut ApiServer, spec: EtcdBackupSpec) -> Value {
    let call = s.expect(Method::PATCH, STATUS).await;
    call.assert_apply();
    assert_eq!(call.body["apiVersion"], "etcd.operator.dev/v1alpha1");
    assert_eq!(call.body["kind"], "EtcdBackup");
    let status = call.body["status"].clone();
    let body = stored(&call.body, spec);
    call.reply(&body);
    status
}

/// Expects one Event about the backup and answers it; returns it.
async fn expect_event(s: &mut ApiServer) -> Value {
    let event = s.expect(Method::POST, EVENTS).await;
    assert_eq!(event.body["regarding"]["kind"], "EtcdBackup");
    assert_eq!(event.body["regarding"]["name"], "nightly");
    assert_eq!(event.body["reportingController"], "etcd-operator");
    let body = event.body.clone();
    event.echo();
    body
}

#[tokio::test]
async fn a_missing_credentials_secret_fails_the_backup_with_an_event_and_retries() {
    let (client, server) = ApiServer::client(NS);
    let ctx = context(client);
    let server = server.run(|mut s| async move {
        s.expect(Method::GET, CLUSTER).await.reply(&cluster());
        s.expect(Method::GET, "/api/v1/namespaces/db/secrets/s3-creds")
            .await
            .fail(StatusCode::NOT_FOUND, "NotFound");
        let status = expect_status(&mut s, spec(None)).await;
        let message =
            "Secret s3-creds (credentialsSecret) does not exist in namespace db (will retry)";
        assert_eq!(
            without_times(status),
            json!({
                "observedGeneration": 1,
                "conditions": [
                    condition("SpecValid", "True", "Valid", ""),
                    condition("Failed", "True", "CredentialsSecretMissing", message),
                    condition("Ready", "False", "CredentialsSecretMissing", message),
                ],
            })
        );
        let event = expect_event(&mut s).await;
        assert_eq!(event["type"], "Warning");
        assert_eq!(event["reason"], "CredentialsSecretMissing");
        assert_eq!(event["action"], "Backup");
        assert_eq!(event["note"], message.trim_end_matches(" (will retry)"));
    });
    let action = reconcile(Arc::new(backup(spec(None))), ctx.clone())
        .await
        .unwrap();
    within_1s(server).await;
    assert_eq!(action, Action::requeue(Duration::from_secs(5)));
    assert!(ctx.metrics.encode().contains(
        "etcd_operator_backups_total{namespace=\"db\",backup=\"nightly\",result=\"failure\"} 1"
    ));
}

#[tokio::test]
async fn parts_over_the_memory_budget_are_refused_before_anything_is_read() {
    let (client, server) = ApiServer::client(NS);
    let ctx = context(client);
    let mut big = spec(None);
    // 64 MiB parts, 4 held at once: 256 MiB, over the default budget of 128 MiB.
    big.destination.s3.part_size_mib = Some(64);
    let stored_spec = big.clone();
    let server = server.run(|mut s| async move {
        // No GET of the cluster or the Secret: the spec alone decides.
        let status = expect_status(&mut s, stored_spec).await;
        let failed = &without_times(status)["conditions"][1];
        assert_eq!(failed["reason"], "MemoryBudget");
        let message = failed["message"].as_str().unwrap();
        assert!(
            message.contains("256 MiB") && message.contains("128 MiB"),
            "{message}"
        );
        assert!(!message.contains("will retry"), "{message}");
        let event = expect_event(&mut s).await;
        assert_eq!(event["type"], "Warning");
        assert_eq!(event["reason"], "MemoryBudget");
    });
    let action = reconcile(Arc::new(backup(big)), ctx.clone()).await.unwrap();
    within_1s(server).await;
    assert_eq!(
        action,
        Action::requeue(Duration::from_secs(300)),
        "only a change of spec or flag helps: the long wait"
    );
}

#[tokio::test]
async fn a_destination_without_a_secret_is_refused_unless_ambient_credentials_are_allowed() {
    let (client, server) = ApiServer::client(NS);
    let ctx = context(client);
    let mut ambient = spec(None);
    ambient.destination.s3.connection.credentials_secret = None;
    let stored_spec = ambient.clone();
    let server = server.run(|mut s| async move {
        s.expect(Method::GET, CLUSTER).await.reply(&cluster());
        // No Secret to read, and the operator's own identity is not lent.
        let status = expect_status(&mut s, stored_spec).await;
        let failed = &without_times(status)["conditions"][1];
        assert_eq!(failed["reason"], "AmbientCredentialsNotAllowed");
        assert_eq!(
            expect_event(&mut s).await["reason"],
            "AmbientCredentialsNotAllowed"
        );
    });
    let action = reconcile(Arc::new(backup(ambient)), ctx.clone())
        .await
        .unwrap();
    within_1s(server).await;
    assert_eq!(action, Action::requeue(Duration::from_secs(300)));
}

#[tokio::test]
async fn a_missing_cluster_fails_the_backup_without_reading_the_secret() {
    let (client, server) = ApiServer::client(NS);
    let ctx = context(client);
    let server = server.run(|mut s| async move {
        s.expect(Method::GET, CLUSTER)
            .await
            .fail(StatusCode::NOT_FOUND, "NotFound");
        let status = expect_status(&mut s, spec(None)).await;
        let message = "EtcdCluster main does not exist in namespace db (will retry)";
        assert_eq!(
            without_times(status)["conditions"][1],
            condition("Failed", "True", "ClusterNotFound", message)
        );
        let event = expect_event(&mut s).await;
        assert_eq!(event["type"], "Warning");
        assert_eq!(event["reason"], "ClusterNotFound");
    });
    let action = reconcile(Arc::new(backup(spec(None))), ctx).await.unwrap();
    within_1s(server).await;
    assert_eq!(action, Action::requeue(Duration::from_secs(5)));
}

#[tokio::test]
async fn a_cluster_without_listed_members_is_not_ready() {
    let (client, server) = ApiServer::client(NS);
    let ctx = context(client);
    let server = server.run(|mut s| async move {
        let mut c = cluster();
        c["status"]["members"] = json!([]);
        s.expect(Method::GET, CLUSTER).await.reply(&c);
        let status = expect_status(&mut s, spec(None)).await;
        assert_eq!(status["conditions"][1]["reason"], "ClusterNotReady");
        assert_eq!(expect_event(&mut s).await["reason"], "ClusterNotReady");
    });
    reconcile(Arc::new(backup(spec(None))), ctx).await.unwrap();
    within_1s(server).await;
}

#[tokio::test]
async fn consecutive_failures_back_off() {
    let (client, server) = ApiServer::client(NS);
    let ctx = context(client);
    let server = server.run(|mut s| async move {
        s.expect(Method::GET, CLUSTER)
            .await
            .fail(StatusCode::NOT_FOUND, "NotFound");
        expect_status(&mut s, spec(None)).await;
        expect_event(&mut s).await;
        s.expect(Method::GET, CLUSTER)
            .await
            .fail(StatusCode::NOT_FOUND, "NotFound");
        expect_status(&mut s, spec(None)).await;
        // The same Event again: the recorder counts it on the first one.
        s.expect_under(Method::PATCH, &format!("{EVENTS}/nightly."))
            .await
            .echo();
    });
    let b = Arc::new(backup(spec(None)));
    let first = reconcile(b.clone(), ctx.clone()).await.unwrap();
    let second = reconcile(b, ctx).await.unwrap();
    within_1s(server).await;
    assert_eq!(
        (first, second),
        (
            Action::requeue(Duration::from_secs(5)),
            Action::requeue(Duration::from_secs(10))
        )
    );
}

#[tokio::test]
async fn an_invalid_schedule_sets_spec_valid_false_and_waits_for_a_change() {
    let (client, server) = ApiServer::client(NS);
    let ctx = context(client);
    let invalid = spec(Some("every day"));
    let server = server.run(|mut s| async move {
        // Nothing is read: straight to the status.
        let status = expect_status(&mut s, spec(Some("every day"))).await;
        let status = without_times(status);
        assert_eq!(status["observedGeneration"], 1);
        let valid = &status["conditions"][0];
        assert_eq!(
            (&valid["type"], &valid["status"], &valid["reason"]),
            (&json!("SpecValid"), &json!("False"), &json!("Invalid"))
        );
        assert!(
            valid["message"]
                .as_str()
                .unwrap()
                .starts_with("spec.schedule: \"every day\" is not a cron expression"),
            "{valid}"
        );
        assert_eq!(status["conditions"].as_array().unwrap().len(), 1);
        let event = expect_event(&mut s).await;
        assert_eq!(event["type"], "Warning");
        assert_eq!(event["reason"], "InvalidSpec");
    });
    let action = reconcile(Arc::new(backup(invalid)), ctx).await.unwrap();
    within_1s(server).await;
    assert_eq!(action, Action::await_change());
}

#[tokio::test]
async fn a_scheduled_backup_records_its_next_run_and_comes_back_then() {
    let (client, server) = ApiServer::client(NS);
    let ctx = context(client);
    let hourly = spec(Some("0 * * * *"));
    let server = server.run(|mut s| async move {
        let status = expect_status(&mut s, spec(Some("0 * * * *"))).await;
        let next: Timestamp = status["nextScheduleTime"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(next.as_second() % 3600, 0, "{next}");
        assert_eq!(status["conditions"][0]["reason"], "Valid");
    });
    let action = reconcile(Arc::new(backup(hourly)), ctx).await.unwrap();
    within_1s(server).await;
    let in_an_hour = (1..=3600).map(|s| Action::requeue(Duration::from_secs(s)));
    assert!(in_an_hour.into_iter().any(|a| a == action), "{action:?}");
}

#[tokio::test]
async fn a_one_shot_that_succeeded_sends_nothing() {
    let (client, server) = ApiServer::client(NS);
    let ctx = context(client);
    let server = server.run(|_| async {});
    let mut b = backup(spec(None));
    let record = BackupRecord {
        key: "prod/main/20250610T073000Z-rev42.db".into(),
        size: 1000,
        sha256: "ab".repeat(32),
        revision: 42,
        etcd_version: "3.5.16".into(),
        cluster_id: "cdf818194e3a8c32".into(),
        duration_seconds: 0.5,
        mb_per_second: 2.0,
        time: crate::api::condition::now(),
        verification: None,
    };
    b.status = Some(status_after_success(
        None,
        record,
        1,
        None,
        Timestamp::now(),
    ));
    let action = reconcile(Arc::new(b), ctx).await.unwrap();
    within_1s(server).await;
    assert_eq!(action, Action::await_change());
}

#[test]
fn requeues_are_at_least_a_second() {
    let now: Timestamp = "2025-06-10T07:30:00Z".parse().unwrap();
    assert_eq!(until(now, now), Duration::from_secs(1));
    let later: Timestamp = "2025-06-10T08:00:00Z".parse().unwrap();
    assert_eq!(until(later, now), Duration::from_secs(1800));
}

/// `garage`'s key pair as the Secret `s3-creds`.
fn garage_secret(garage: &crate::testing::garage::TestGarage) -> Value {
    let c = garage.credentials();
    let base64 = |b: &[u8]| serde_json::to_value(k8s_openapi::ByteString(b.to_vec())).unwrap();
    json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": { "name": "s3-creds", "namespace": NS },
        "data": {
            "accessKeyId": base64(c.access_key_id.as_bytes()),
            "secretAccessKey": base64(c.secret_access_key().as_bytes()),
        },
    })
}

/// One `verify: true` backup of a real etcd member into a real Garage, through the mocked
/// API server: the status apply must carry what the check found. Needs `ETCD_BIN_DIR` and
/// Garage, as `tests/backup.rs`.
async fn verified_backup(tool_dir: std::path::PathBuf) -> Value {
    use crate::testing::garage::{BUCKET, TestGarage};
    use crate::testing::{TestCluster, bin_for_minor};
    let bin = bin_for_minor(3, 5).unwrap_or_else(|e| panic!("{e}"));
    let (etcd, garage) = tokio::join!(TestCluster::start(&bin, 1), TestGarage::start());
    let (etcd, garage) = (etcd.unwrap(), garage.unwrap());
    let mut spec = spec(None);
    spec.verify = Some(true);
    spec.destination.s3.bucket = BUCKET.into();
    spec.destination.s3.connection = S3Connection {
        credentials_secret: Some("s3-creds".into()),
        ..garage.connection()
    };
    let mut cluster = cluster();
    cluster["status"]["members"] = json!([{
        "name": "main-0",
        "clientURL": etcd.client_url(0).unwrap(),
        "healthy": true,
    }]);
    let (client, server) = ApiServer::client(NS);
    let mut ctx = Context::new(
        client,
        Metrics::new(),
        Reporter {
            controller: "etcd-operator".into(),
            instance: None,
        },
    );
    ctx.verifier = crate::backup::Verifier::new(crate::backup::SnapshotTools::Dir(tool_dir));
    let secret = garage_secret(&garage);
    let stored_spec = spec.clone();
    let (applied_tx, applied) = tokio::sync::oneshot::channel();
    let server = server.run(|mut s| async move {
        s.expect(Method::GET, CLUSTER).await.reply(&cluster);
        s.expect(Method::GET, "/api/v1/namespaces/db/secrets/s3-creds")
            .await
            .reply(&secret);
        // The test member serves plaintext: no client certificate for the operator.
        s.expect(
            Method::GET,
            "/api/v1/namespaces/db/secrets/main-operator-tls",
        )
        .await
        .fail(StatusCode::NOT_FOUND, "NotFound");
        let status = expect_status(&mut s, stored_spec).await;
        let event = expect_event(&mut s).await;
        assert_eq!(event["reason"], "BackupSucceeded");
        let _ = applied_tx.send(status);
    });
    let action = reconcile(Arc::new(backup(spec)), Arc::new(ctx))
        .await
        .unwrap();
    assert_eq!(action, Action::await_change());
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("the API calls come")
        .unwrap();
    drop(etcd);
    applied.await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_verified_backup_records_what_etcdutl_read_and_sets_verified() {
    let bin = crate::testing::bin_for_minor(3, 5).unwrap_or_else(|e| panic!("{e}"));
    let status = verified_backup(bin.dir.clone()).await;
    let record = &status["lastBackup"];
    let verification = &record["verification"];
    assert_eq!(verification["result"], "Verified", "{status:#}");
    // An empty cluster: the snapshot's own revision is etcd's, the record's the header's.
    assert!(verification["revision"].as_i64().is_some(), "{record:#}");
    assert!(verification["totalKeys"].as_i64().is_some());
    let verified = without_times(status.clone())["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Verified")
        .cloned()
        .unwrap();
    assert_eq!(verified["status"], "True");
    assert_eq!(verified["reason"], "SnapshotVerified");
}

#[tokio::test(flavor = "multi_thread")]
async fn without_etcdutl_verification_checks_the_digest_and_says_the_rest_did_not_run() {
    let empty = tempfile::tempdir().unwrap();
    let status = verified_backup(empty.path().to_owned()).await;
    let verification = &status["lastBackup"]["verification"];
    assert_eq!(verification["result"], "DigestOnly", "{status:#}");
    assert!(verification.get("revision").is_none());
    let verified = without_times(status.clone())["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Verified")
        .cloned()
        .unwrap();
    assert_eq!(verified["status"], "False");
    assert_eq!(verified["reason"], "VerifierUnavailable");
    let message = verified["message"].as_str().unwrap();
    assert!(
        message.contains("snapshot status not run")
            && message.contains(&empty.path().display().to_string()),
        "{message}"
    );
    // The backup itself counts.
    let ready = without_times(status)["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Ready")
        .cloned()
        .unwrap();
    assert_eq!(ready["status"], "True");
}
