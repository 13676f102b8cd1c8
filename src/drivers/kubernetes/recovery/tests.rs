//! A recovery from a backup on Kubernetes, pass by pass, through the EtcdCluster
//! controller's [`reconcile`] against a mocked API server (no etcd answers) and a real
//! Garage (the pin is a real HEAD): the fetch pins the latest backup and stages it on the
//! cluster, the old members' PVCs are kept (relabelled, never deleted), the new bootstrap
//! members get the restore init containers of that pin, and a restore that fails for good
//! (`SourceChanged`) rolls everything back at once. A missing EtcdBackup or credentials
//! Secret ends the run with a condition saying so, and nothing else is written.

use std::sync::{Arc, Mutex};

use http::{Method, StatusCode};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::runtime::controller::Action;
use kube::runtime::events::Reporter;
use serde_json::{Value, json};

use super::KubeRecovery;
use crate::api::recovery::{RecoveryFromBackup, RecoverySpec, RecoveryStatus};
use crate::api::tls::{TlsMode, TlsSpec};
use crate::api::{EtcdCluster, EtcdClusterSpec, EtcdClusterStatus};
use crate::backup::SnapshotMetadata;
use crate::backup::member_restore::StepReport;
use crate::drivers::kubernetes::cluster::{Context, reconcile};
use crate::metrics::Metrics;
use crate::plan::Policy;
use crate::runtime::PodRuntime;
use crate::testing::api_server::{ApiServer, Call, within_1s};
use crate::testing::garage::{BUCKET, TestGarage};

const NS: &str = "db";
const KEY: &str = "p/db/example/nightly/20250610T073000Z-rev42.db";
const OPERATOR_IMAGE: &str = "registry.example/etcd-operator:test";
const PODS: &str = "/api/v1/namespaces/db/pods";
const PVCS: &str = "/api/v1/namespaces/db/persistentvolumeclaims";
const CLUSTER: &str = "/apis/etcd.operator.dev/v1alpha1/namespaces/db/etcdclusters/example";
const STATUS: &str = "/apis/etcd.operator.dev/v1alpha1/namespaces/db/etcdclusters/example/status";
const BACKUP: &str = "/apis/etcd.operator.dev/v1alpha1/namespaces/db/etcdbackups/nightly";
const SECRET: &str = "/api/v1/namespaces/db/secrets/s3-creds";
const EVENTS: &str = "/apis/events.k8s.io/v1/namespaces/db/events";
const SOURCE: &str = "etcd.operator.dev/recovery-source";

fn spec() -> EtcdClusterSpec {
    let mut spec = EtcdClusterSpec::new(3, "3.5.16");
    spec.tls = Some(TlsSpec {
        mode: TlsMode::Disabled,
        ..TlsSpec::default()
    });
    spec.recovery = Some(RecoverySpec {
        from_backup: Some(RecoveryFromBackup {
            backup_name: "nightly".into(),
        }),
        after: Some("1m".into()),
        ..RecoverySpec::default()
    });
    spec
}

/// The cluster as read from the API server: formed (a cluster id), quorum lost an hour ago.
fn lost_cluster() -> EtcdCluster {
    let mut c = EtcdCluster::new("example", spec());
    c.metadata.namespace = Some(NS.into());
    c.metadata.uid = Some("uid-1".into());
    c.metadata.generation = Some(1);
    let now = crate::api::condition::now();
    c.status = Some(EtcdClusterStatus {
        cluster_id: Some("00000000000000c1".into()),
        recovery: Some(RecoveryStatus {
            quorum_lost_since: Some(Time(now.0 - jiff::SignedDuration::from_secs(3600))),
            ..RecoveryStatus::default()
        }),
        ..EtcdClusterStatus::default()
    });
    c
}

/// `cluster` after a pass: its status as applied, its annotations as patched.
fn after(cluster: &EtcdCluster, status: &Value, annotation: Option<&str>) -> EtcdCluster {
    let mut c = cluster.clone();
    c.status = Some(serde_json::from_value(status.clone()).unwrap());
    let annotations = c.metadata.annotations.get_or_insert_default();
    match annotation {
        Some(a) => annotations.insert(SOURCE.into(), a.into()),
        None => annotations.remove(SOURCE),
    };
    c
}

fn context(client: kube::Client) -> Arc<Context> {
    let mut ctx = Context::new(
        client,
        Policy::default(),
        Metrics::new(),
        Reporter {
            controller: "etcd-operator".into(),
            instance: Some("etcd-operator-0".into()),
        },
    );
    ctx.operator_image = Some(OPERATOR_IMAGE.into());
    Arc::new(ctx)
}

fn list(kind: &str, items: Vec<Value>) -> Value {
    json!({ "apiVersion": "v1", "kind": kind, "metadata": { "resourceVersion": "1" }, "items": items })
}

fn base64(bytes: &[u8]) -> Value {
    serde_json::to_value(k8s_openapi::ByteString(bytes.to_vec())).unwrap()
}

/// `garage`'s key pair as the Secret `s3-creds`.
fn garage_secret(garage: &TestGarage) -> Value {
    let c = garage.credentials();
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

/// The EtcdBackup `nightly` into `endpoint`, its latest backup [`KEY`] with `sha256`.
fn nightly(endpoint: &str, sha256: &str) -> Value {
    json!({
        "apiVersion": "etcd.operator.dev/v1alpha1",
        "kind": "EtcdBackup",
        "metadata": { "name": "nightly", "namespace": NS },
        "spec": {
            "clusterName": "example",
            "destination": { "s3": {
                "bucket": BUCKET,
                "prefix": "p",
                "endpoint": endpoint,
                "region": "garage",
                "forcePathStyle": true,
                "credentialsSecret": "s3-creds",
            }},
        },
        "status": {
            "lastSuccessfulTime": "2025-06-10T07:30:01Z",
            "lastBackup": {
                "key": KEY,
                "size": 20512,
                "sha256": sha256,
                "revision": 42,
                "etcdVersion": "3.5.16",
                "clusterID": "00000000000000c1",
                "durationSeconds": 0.5,
                "mbPerSecond": 1.0,
                "time": "2025-06-10T07:30:00Z",
            },
        },
    })
}

/// An old member's PVC, as the runtime made it (its launch included, for a put-back).
fn old_pvc(ordinal: u32) -> Value {
    let name = format!("example-{ordinal}");
    let launch = json!({
        "name": name,
        "version": "3.5.16",
        "initialCluster": (0..3).map(|i| json!({
            "name": format!("example-{i}"),
            "peerURL": format!("http://example-{i}.example.db.svc:2380"),
        })).collect::<Vec<_>>(),
        "state": "new",
        "clusterToken": "db-example-1",
    });
    json!({
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {
            "name": name,
            "namespace": NS,
            "uid": format!("pvc-uid-{ordinal}"),
            "labels": {
                "app.kubernetes.io/managed-by": "etcd-operator",
                "etcd.operator.dev/cluster": "example",
                "etcd.operator.dev/cluster-uid": "uid-1",
                "etcd.operator.dev/member": name,
                "etcd.operator.dev/version": "3.5.16",
            },
            "annotations": { "etcd.operator.dev/launch": launch.to_string() },
        },
        "spec": { "accessModes": ["ReadWriteOnce"], "resources": { "requests": { "storage": "8Gi" } } },
        "status": { "phase": "Bound" },
    })
}

/// A real Garage holding a snapshot at [`KEY`] whose metadata records `sha256`; its ETag.
async fn garage_with_snapshot(sha256: &str) -> (TestGarage, String) {
    let garage = TestGarage::start().await.unwrap_or_else(|e| panic!("{e}"));
    let metadata = SnapshotMetadata {
        sha256: Some(sha256.to_owned()),
        ..SnapshotMetadata::default()
    };
    let etag = garage.put_snapshot(BUCKET, KEY, &metadata).await;
    (garage, etag)
}

/// Answers the status apply with `cluster` carrying it; returns the applied status.
fn answer_status(call: Call, cluster: &EtcdCluster) -> Value {
    call.assert_apply();
    let status = call.body["status"].clone();
    let mut body = serde_json::to_value(cluster).unwrap();
    body["status"] = status.clone();
    call.reply(&body);
    status
}

fn condition<'a>(status: &'a Value, type_: &str) -> &'a Value {
    status["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == type_)
        .unwrap_or_else(|| panic!("no {type_} condition in {status}"))
}

fn args(container: &Value) -> Vec<String> {
    serde_json::from_value(container["args"].clone()).unwrap()
}

/// One pass over `cluster`; `script` answers its requests. Returns what the script returns.
async fn pass<T, F, Fut>(cluster: &EtcdCluster, script: F) -> (Action, T)
where
    T: Send + 'static,
    F: FnOnce(ApiServer) -> Fut + Send + 'static,
    Fut: Future<Output = T> + Send + 'static,
{
    let (client, server) = ApiServer::client(NS);
    let out = Arc::new(Mutex::new(None));
    let keep = out.clone();
    let server = server.run(|s| async move {
        let value = script(s).await;
        *keep.lock().unwrap() = Some(value);
    });
    let action = reconcile(Arc::new(cluster.clone()), context(client))
        .await
        .unwrap();
    within_1s(server).await;
    let value = out.lock().unwrap().take().unwrap();
    (action, value)
}

#[tokio::test]
async fn a_recovery_from_a_backup_restores_the_pinned_object_in_place_keeping_the_old_pvcs() {
    let digest = "cd".repeat(32);
    let (garage, etag) = garage_with_snapshot(&digest).await;
    let endpoint = garage.endpoint().to_owned();
    let secret = garage_secret(&garage);

    // 1. Fetch: the latest backup resolved and pinned, staged on the cluster; nothing else.
    let cluster = lost_cluster();
    let c1 = cluster.clone();
    let pinned = etag.clone();
    let (_, (annotation, status)) = pass(&cluster, move |mut s| async move {
        let etag = pinned;
        s.expect(Method::GET, PODS)
            .await
            .reply(&list("PodList", vec![]));
        s.expect(Method::GET, PVCS)
            .await
            .reply(&list("PersistentVolumeClaimList", vec![]));
        s.expect(Method::GET, BACKUP)
            .await
            .reply(&nightly(&endpoint, &digest));
        s.expect(Method::GET, SECRET).await.reply(&secret);
        let patch = s.expect(Method::PATCH, CLUSTER).await;
        assert_eq!(patch.content_type, "application/merge-patch+json");
        let keys: Vec<&String> = patch.body["metadata"]["annotations"]
            .as_object()
            .unwrap()
            .keys()
            .collect();
        assert_eq!(keys, [SOURCE], "only its own annotation is written");
        let annotation = patch.body["metadata"]["annotations"][SOURCE]
            .as_str()
            .unwrap()
            .to_owned();
        let source: Value = serde_json::from_str(&annotation).unwrap();
        assert_eq!(
            source,
            json!({
                "bucket": BUCKET,
                "key": KEY,
                "endpoint": endpoint,
                "region": "garage",
                "forcePathStyle": true,
                "credentialsSecret": "s3-creds",
                "sha256": digest,
                "etag": etag,
            })
        );
        patch.reply(&serde_json::to_value(&c1).unwrap());
        let status = answer_status(s.expect(Method::PATCH, STATUS).await, &c1);
        let run = &status["recovery"]["run"];
        assert_eq!(run["mode"], "FromBackup");
        assert_eq!(run["phase"], "SettingAside");
        assert_eq!(run["revision"], 42);
        assert_eq!(run["backup"]["key"], KEY);
        assert_eq!(run["backup"]["sha256"], "cd".repeat(32));
        assert_eq!(
            run["members"],
            json!(["example-0", "example-1", "example-2"])
        );
        let recovery = condition(&status, "Recovery");
        assert_eq!(recovery["status"], "True");
        assert_eq!(recovery["reason"], "Recovering");
        let event = s.expect(Method::POST, EVENTS).await;
        assert_eq!(event.body["type"], "Normal");
        event.echo();
        (annotation, status)
    })
    .await;

    // The next passes have their old members' PVCs again (their Pods are gone), with a
    // run whose new members are named past them.
    let mut cluster = after(&cluster, &status, Some(&annotation));
    let run = cluster
        .status
        .as_mut()
        .unwrap()
        .recovery
        .as_mut()
        .unwrap()
        .run
        .as_mut()
        .unwrap();
    run.members = vec!["example-3".into(), "example-4".into(), "example-5".into()];
    let token = run.token.clone().unwrap();

    // 2. Set aside: each old member's PVC leaves the cluster, relabelled; none is deleted.
    let c2 = cluster.clone();
    let (_, status) = pass(&cluster, move |mut s| async move {
        s.expect(Method::GET, PODS)
            .await
            .reply(&list("PodList", vec![]));
        s.expect(Method::GET, PVCS).await.reply(&list(
            "PersistentVolumeClaimList",
            vec![old_pvc(0), old_pvc(1)],
        ));
        for ordinal in 0..2 {
            let name = format!("example-{ordinal}");
            s.expect(Method::GET, &format!("{PODS}/{name}"))
                .await
                .fail(StatusCode::NOT_FOUND, "NotFound");
            s.expect(Method::GET, &format!("{PVCS}/{name}"))
                .await
                .reply(&old_pvc(ordinal));
            let patch = s.expect(Method::PATCH, &format!("{PVCS}/{name}")).await;
            let labels = &patch.body["metadata"]["labels"];
            assert_eq!(labels["etcd.operator.dev/cluster"], Value::Null);
            assert_eq!(labels["etcd.operator.dev/kept-from"], "example");
            assert!(labels["etcd.operator.dev/kept-by-recovery"].is_string());
            let mut kept = old_pvc(ordinal);
            kept["metadata"]["labels"]
                .as_object_mut()
                .unwrap()
                .remove("etcd.operator.dev/cluster");
            patch.reply(&kept);
        }
        let status = answer_status(s.expect(Method::PATCH, STATUS).await, &c2);
        let kept = &status["recovery"]["run"]["kept"];
        assert_eq!(
            kept,
            &json!([
                { "name": "example-0", "at": "pvc/example-0" },
                { "name": "example-1", "at": "pvc/example-1" },
            ])
        );
        s.expect(Method::POST, EVENTS).await.echo();
        status
    })
    .await;
    let cluster = after(&cluster, &status, Some(&annotation));

    // 3. Bootstrap: the new members restore the pinned object before etcd starts.
    let c3 = cluster.clone();
    let pinned = etag.clone();
    let (_, (status, pods)) = pass(&cluster, move |mut s| async move {
        let etag = pinned;
        s.expect(Method::GET, PODS).await.reply(&list("PodList", vec![]));
        s.expect(Method::GET, PVCS)
            .await
            .reply(&list("PersistentVolumeClaimList", vec![]));
        for path in [
            "/api/v1/namespaces/db/services/example",
            "/api/v1/namespaces/db/services/example-client",
            "/apis/policy/v1/namespaces/db/poddisruptionbudgets/example",
        ] {
            s.expect(Method::PATCH, path).await.echo();
        }
        let mut pods = Vec::new();
        for ordinal in 3..6 {
            let pvc = s.expect(Method::POST, PVCS).await;
            assert_eq!(pvc.body["metadata"]["name"], format!("example-{ordinal}"));
            pvc.echo();
            let pod = s.expect(Method::POST, PODS).await;
            let body = pod.body.clone();
            pod.echo();
            let spec = &body["spec"];
            let etcd = args(&spec["containers"][0]);
            assert!(etcd.contains(&"--initial-cluster-state=new".to_string()), "{etcd:?}");
            let init: Vec<&str> = spec["initContainers"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["name"].as_str().unwrap())
                .collect();
            assert_eq!(init, ["restore-fetch", "restore", "restore-finish"]);
            let fetch = &spec["initContainers"][0];
            assert_eq!(fetch["image"], OPERATOR_IMAGE);
            let fetch_args = args(fetch);
            for want in [
                format!("--bucket={BUCKET}"),
                format!("--key={KEY}"),
                format!("--sha256={}", "cd".repeat(32)),
                format!("--etag={etag}"),
                "--etcd-version=3.5.16".to_string(),
            ] {
                assert!(fetch_args.contains(&want), "{want} in {fetch_args:?}");
            }
            assert_eq!(
                fetch["env"][0]["valueFrom"]["secretKeyRef"]["name"],
                "s3-creds"
            );
            let restore = args(&spec["initContainers"][1]);
            assert!(restore.contains(&format!("--name=example-{ordinal}")));
            assert!(restore.contains(&format!("--initial-cluster-token={token}")), "{restore:?}");
            assert!(restore.contains(&"--initial-cluster=example-3=http://example-3.example.db.svc:2380,example-4=http://example-4.example.db.svc:2380,example-5=http://example-5.example.db.svc:2380".to_string()), "{restore:?}");
            pods.push(body);
        }
        let status = answer_status(s.expect(Method::PATCH, STATUS).await, &c3);
        assert_eq!(status["recovery"]["run"]["phase"], "Bootstrapping");
        s.expect(Method::POST, EVENTS).await.echo();
        (status, pods)
    })
    .await;
    let cluster = after(&cluster, &status, Some(&annotation));

    // 4. One member's fetch found the object changed after the pin: rolled back at once,
    // before any member served: the new members deleted, the kept PVCs given back, the
    // staged source removed; the status and a Warning Event say why.
    let changed = crate::backup::Error::SourceChanged {
        bucket: BUCKET.into(),
        key: KEY.into(),
        pinned: etag.clone(),
        now: "\"0f\"".into(),
    };
    let report = StepReport::failed(&changed).to_message();
    let pods: Vec<Value> = pods
        .into_iter()
        .enumerate()
        .map(|(i, mut pod)| {
            pod["metadata"]["uid"] = json!(format!("pod-uid-{i}"));
            let fetch = if i == 1 {
                json!({
                    "name": "restore-fetch", "image": "x", "imageID": "", "ready": false,
                    "restartCount": 2,
                    "state": { "waiting": { "reason": "CrashLoopBackOff" } },
                    "lastState": { "terminated": { "exitCode": 1, "message": report } },
                })
            } else {
                json!({
                    "name": "restore-fetch", "image": "x", "imageID": "", "ready": false,
                    "restartCount": 0, "state": { "running": {} },
                })
            };
            pod["status"] = json!({ "phase": "Pending", "initContainerStatuses": [fetch] });
            pod
        })
        .collect();
    let c4 = cluster.clone();
    let (action, ()) = pass(&cluster, move |mut s| async move {
        s.expect(Method::GET, PODS)
            .await
            .reply(&list("PodList", pods.clone()));
        s.expect(Method::GET, PVCS)
            .await
            .reply(&list("PersistentVolumeClaimList", vec![]));
        let restoring = s.expect(Method::GET, PODS).await;
        assert!(
            restoring
                .query
                .contains("labelSelector=etcd.operator.dev%2Fcluster%3Dexample"),
            "{}",
            restoring.query
        );
        restoring.reply(&list("PodList", pods));
        for ordinal in 3..6 {
            let name = format!("example-{ordinal}");
            s.expect(Method::DELETE, &format!("{PODS}/{name}"))
                .await
                .reply(&json!({ "kind": "Status", "apiVersion": "v1", "status": "Success" }));
            s.expect(Method::DELETE, &format!("{PVCS}/{name}"))
                .await
                .reply(&json!({ "kind": "Status", "apiVersion": "v1", "status": "Success" }));
        }
        for ordinal in 0..2 {
            let name = format!("example-{ordinal}");
            let mut kept = old_pvc(ordinal);
            kept["metadata"]["labels"] = json!({
                "etcd.operator.dev/kept-from": "example",
                "etcd.operator.dev/kept-by-recovery": "x",
            });
            s.expect(Method::GET, &format!("{PVCS}/{name}"))
                .await
                .reply(&kept);
            let patch = s.expect(Method::PATCH, &format!("{PVCS}/{name}")).await;
            let labels = &patch.body["metadata"]["labels"];
            assert_eq!(labels["etcd.operator.dev/cluster"], "example");
            assert_eq!(labels["etcd.operator.dev/kept-from"], Value::Null);
            patch.reply(&old_pvc(ordinal));
        }
        let patch = s.expect(Method::PATCH, CLUSTER).await;
        assert_eq!(
            patch.body,
            json!({ "metadata": { "annotations": { SOURCE: null } } })
        );
        patch.reply(&serde_json::to_value(&c4).unwrap());
        let status = answer_status(s.expect(Method::PATCH, STATUS).await, &c4);
        let last = &status["recovery"]["lastRun"];
        assert_eq!(last["outcome"], "Failed", "{status}");
        assert_eq!(last["reason"], "SourceChanged");
        assert_eq!(status["recovery"].get("run"), None);
        assert_eq!(
            status["clusterID"], "00000000000000c1",
            "the old id is back"
        );
        let recovery = condition(&status, "Recovery");
        assert_eq!(recovery["reason"], "RecoveryFailed");
        let message = recovery["message"].as_str().unwrap();
        assert!(
            message.contains("restore-fetch of example-4") && message.contains("SourceChanged"),
            "{message}"
        );
        s.expect(Method::POST, EVENTS).await.echo();
        let event = s.expect(Method::POST, EVENTS).await;
        assert_eq!(event.body["type"], "Warning");
        assert_eq!(event.body["reason"], "RecoveryFailed");
        assert!(
            event.body["note"]
                .as_str()
                .unwrap()
                .contains("SourceChanged"),
            "{}",
            event.body
        );
        event.echo();
    })
    .await;
    assert_eq!(action, Action::requeue(super::super::cluster::AFTER_STEP));
}

/// A fetch that cannot resolve its backup or its credentials ends the run saying so; the
/// cluster is not annotated and no member is touched.
async fn a_failed_fetch_changes_nothing(
    answer: impl FnOnce(&mut ApiServer) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send + '_>>
    + Send
    + 'static,
    reason: &'static str,
    says: &'static str,
) {
    let cluster = lost_cluster();
    let c = cluster.clone();
    let (action, ()) = pass(&cluster, move |mut s| async move {
        s.expect(Method::GET, PODS)
            .await
            .reply(&list("PodList", vec![]));
        s.expect(Method::GET, PVCS)
            .await
            .reply(&list("PersistentVolumeClaimList", vec![]));
        answer(&mut s).await;
        // Straight to the status: nothing was written.
        let status = answer_status(s.expect(Method::PATCH, STATUS).await, &c);
        let last = &status["recovery"]["lastRun"];
        assert_eq!(last["outcome"], "Failed", "{status}");
        assert_eq!(last["reason"], reason);
        assert_eq!(last.get("kept"), None);
        let recovery = condition(&status, "Recovery");
        assert_eq!(recovery["status"], "False");
        assert_eq!(recovery["reason"], "RecoveryFailed");
        let message = recovery["message"].as_str().unwrap();
        assert!(
            message.contains(says) && message.contains("nothing was changed"),
            "{message}"
        );
        s.expect(Method::POST, EVENTS).await.echo();
        let event = s.expect(Method::POST, EVENTS).await;
        assert_eq!(event.body["type"], "Warning");
        assert_eq!(event.body["reason"], "RecoveryFailed");
        event.echo();
    })
    .await;
    assert_eq!(action, Action::requeue(super::super::cluster::AFTER_STEP));
}

#[tokio::test]
async fn a_missing_backup_ends_the_recovery_with_nothing_changed() {
    a_failed_fetch_changes_nothing(
        |s| {
            Box::pin(async move {
                s.expect(Method::GET, BACKUP)
                    .await
                    .fail(StatusCode::NOT_FOUND, "NotFound");
            })
        },
        "BackupNotFound",
        "EtcdBackup nightly does not exist in namespace db",
    )
    .await;
}

#[tokio::test]
async fn a_missing_credentials_secret_ends_the_recovery_with_nothing_changed() {
    a_failed_fetch_changes_nothing(
        |s| {
            Box::pin(async move {
                s.expect(Method::GET, BACKUP)
                    .await
                    .reply(&nightly("http://garage.db.svc:3900", &"ab".repeat(32)));
                s.expect(Method::GET, SECRET)
                    .await
                    .fail(StatusCode::NOT_FOUND, "NotFound");
            })
        },
        "CredentialsSecretMissing",
        "Secret s3-creds (credentialsSecret) does not exist in namespace db",
    )
    .await;
}

#[tokio::test]
async fn a_backup_that_never_succeeded_ends_the_recovery_with_nothing_changed() {
    a_failed_fetch_changes_nothing(
        |s| {
            Box::pin(async move {
                let mut backup = nightly("http://garage.db.svc:3900", &"ab".repeat(32));
                backup["status"] = json!({});
                s.expect(Method::GET, BACKUP).await.reply(&backup);
            })
        },
        "NoSuccessfulBackup",
        "EtcdBackup nightly has no successful backup yet",
    )
    .await;
}

/// A source left on the cluster when no recovery runs (its clean-up failed) is removed, so
/// no later bootstrap member restores it.
#[tokio::test]
async fn a_stale_recovery_source_is_removed() {
    let mut cluster = lost_cluster();
    cluster.spec.recovery = None;
    cluster.status.as_mut().unwrap().recovery = None;
    cluster.status.as_mut().unwrap().cluster_id = None;
    cluster.metadata.annotations = Some(
        [(
            SOURCE.to_string(),
            json!({ "bucket": "b", "key": "k", "etag": "\"1\"" }).to_string(),
        )]
        .into(),
    );
    let c = cluster.clone();
    pass(&cluster, move |mut s| async move {
        s.expect(Method::GET, PODS)
            .await
            .reply(&list("PodList", vec![]));
        s.expect(Method::GET, PVCS)
            .await
            .reply(&list("PersistentVolumeClaimList", vec![]));
        // A fresh cluster: bootstrapped, without restore containers.
        for path in [
            "/api/v1/namespaces/db/services/example",
            "/api/v1/namespaces/db/services/example-client",
            "/apis/policy/v1/namespaces/db/poddisruptionbudgets/example",
        ] {
            s.expect(Method::PATCH, path).await.echo();
        }
        for _ in 0..3 {
            s.expect(Method::POST, PVCS).await.echo();
            let pod = s.expect(Method::POST, PODS).await;
            assert_eq!(pod.body["spec"].get("initContainers"), None, "{}", pod.body);
            pod.echo();
        }
        answer_status(s.expect(Method::PATCH, STATUS).await, &c);
        let patch = s.expect(Method::PATCH, CLUSTER).await;
        assert_eq!(
            patch.body,
            json!({ "metadata": { "annotations": { SOURCE: null } } })
        );
        patch.reply(&serde_json::to_value(&c).unwrap());
        s.expect(Method::POST, EVENTS).await.echo();
    })
    .await;
}

/// The seed of a pass whose copy of the cluster did not carry the staged source yet (an
/// operator restarted between the fetch and the bootstrap, a late watch event) is read from
/// the API server; a source gone from the cluster fails the seed, so no member bootstraps
/// without it.
#[tokio::test]
async fn the_seed_is_read_from_the_cluster_when_the_pass_did_not_have_it() {
    use crate::reconcile::RecoveryEnv;
    use crate::runtime::ClusterRef;
    let source =
        json!({ "bucket": BUCKET, "key": KEY, "sha256": "cd".repeat(32), "etag": "\"9b\"" });
    let mut annotated = lost_cluster();
    annotated.metadata.annotations = Some([(SOURCE.to_string(), source.to_string())].into());
    let plain = lost_cluster();
    let cref = ClusterRef::new(NS, "example");
    for (answer, want) in [(annotated.clone(), true), (plain.clone(), false)] {
        let (client, server) = ApiServer::client(NS);
        let server = server.run(move |mut s| async move {
            s.expect(Method::GET, CLUSTER)
                .await
                .reply(&serde_json::to_value(&answer).unwrap());
        });
        let runtime = PodRuntime::for_cluster(client.clone(), &plain).unwrap();
        let env = KubeRecovery::new(client, &runtime, &plain, false);
        let seeded = env.seed(&cref).await;
        within_1s(server).await;
        match (seeded, want) {
            (Ok(()), true) => {
                let seed = runtime
                    .seed()
                    .expect("the runtime restores the staged source");
                assert_eq!(seed.object.key, KEY);
                assert_eq!(seed.etag.as_deref(), Some("\"9b\""));
            }
            (Err(f), false) => {
                assert_eq!(f.reason, "SeedMissing");
                assert!(runtime.seed().is_none());
            }
            (other, _) => panic!("{other:?}"),
        }
    }
}
