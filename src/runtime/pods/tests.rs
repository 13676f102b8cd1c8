//! [`PodRuntime`] against a mocked API server: each scenario scripts the requests it
//! expects, in order, and is awaited with a timeout so a missing request fails.

use std::collections::BTreeMap;
use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use kube::client::Body;
use serde_json::{Value, json};
use tower_test::mock;

use super::objects::{DATA_DIR, LaunchAnnotation};
use super::*;
use crate::api::EtcdClusterSpec;
use crate::api::cluster::{
    EmptyDirStorage, PodPolicy, PvcRetentionPolicy, PvcStorage, RetentionPolicyType, StorageSpec,
};
use crate::runtime::InitialClusterState;
use crate::testing::api_server::{ApiServer, within_1s};

const NS: &str = "db";
const CLUSTER: &str = "example";

fn cluster_ref() -> ClusterRef {
    ClusterRef::new(NS, CLUSTER)
}

/// An `EtcdCluster` as read from the API server (namespace and uid set).
fn cluster(spec: EtcdClusterSpec) -> EtcdCluster {
    let mut c = EtcdCluster::new(CLUSTER, spec);
    c.metadata.namespace = Some(NS.into());
    c.metadata.uid = Some("uid-1".into());
    c
}

fn pvc_spec() -> EtcdClusterSpec {
    let mut spec = EtcdClusterSpec::new(3, "3.5.16");
    spec.storage = Some(StorageSpec {
        empty_dir: None,
        pvc: Some(PvcStorage {
            storage_class_name: Some("fast".into()),
            size: "8Gi".into(),
            retention_policy: None,
        }),
    });
    spec
}

fn memory_spec() -> EtcdClusterSpec {
    let mut spec = EtcdClusterSpec::new(3, "3.5.16");
    spec.storage = Some(StorageSpec {
        empty_dir: Some(EmptyDirStorage {
            size_limit: Some("1Gi".into()),
            memory: true,
        }),
        pvc: None,
    });
    spec
}

fn peer(ordinal: u32) -> (String, String) {
    (
        format!("example-{ordinal}"),
        format!("http://example-{ordinal}.example.db.svc:2380"),
    )
}

fn launch(ordinal: u32, state: InitialClusterState, peers: &[u32]) -> MemberLaunch {
    MemberLaunch {
        name: format!("example-{ordinal}"),
        version: semver::Version::new(3, 5, 16),
        initial_cluster: peers.iter().map(|o| peer(*o)).collect(),
        state,
        cluster_token: "example-uid-1".into(),
        options: None,
        transport: Transport::Plain,
    }
}

fn owner() -> Value {
    json!([{
        "apiVersion": "etcd.operator.dev/v1alpha1",
        "kind": "EtcdCluster",
        "name": "example",
        "uid": "uid-1",
        "controller": true,
    }])
}

fn cluster_labels() -> Value {
    json!({
        "app.kubernetes.io/name": "etcd",
        "app.kubernetes.io/instance": "example",
        "app.kubernetes.io/managed-by": "etcd-operator",
        "etcd.operator.dev/cluster": "example",
    })
}

fn member_labels(name: &str, version: &str) -> Value {
    let mut labels = cluster_labels();
    labels["etcd.operator.dev/member"] = json!(name);
    labels["etcd.operator.dev/version"] = json!(version);
    labels
}

/// A PVC's labels: a member's, and the uid of the cluster that made it.
fn pvc_labels(name: &str, version: &str) -> Value {
    let mut labels = member_labels(name, version);
    labels["etcd.operator.dev/cluster-uid"] = json!("uid-1");
    labels
}

fn runtime(spec: EtcdClusterSpec) -> (PodRuntime, ApiServer) {
    let (client, server) = ApiServer::client(NS);
    let rt = PodRuntime::for_cluster(client, &cluster(spec))
        .unwrap()
        .with_delete_timeout(Duration::from_secs(1));
    (rt, server)
}

/// Expects the Services and the PDB to be applied, checking their bodies.
async fn expect_cluster_objects(server: &mut ApiServer) {
    let headless = server
        .expect(Method::PATCH, "/api/v1/namespaces/db/services/example")
        .await;
    headless.assert_apply();
    assert_eq!(
        headless.body,
        json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {
                "name": "example",
                "namespace": "db",
                "labels": cluster_labels(),
                "ownerReferences": owner(),
            },
            "spec": {
                "clusterIP": "None",
                "publishNotReadyAddresses": true,
                "selector": { "etcd.operator.dev/cluster": "example" },
                "ports": [
                    { "name": "client", "port": 2379, "targetPort": 2379 },
                    { "name": "peer", "port": 2380, "targetPort": 2380 },
                ],
            },
        })
    );
    headless.echo();
    let client = server
        .expect(
            Method::PATCH,
            "/api/v1/namespaces/db/services/example-client",
        )
        .await;
    client.assert_apply();
    assert_eq!(
        client.body,
        json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {
                "name": "example-client",
                "namespace": "db",
                "labels": cluster_labels(),
                "ownerReferences": owner(),
            },
            "spec": {
                "selector": { "etcd.operator.dev/cluster": "example" },
                "ports": [{ "name": "client", "port": 2379, "targetPort": 2379 }],
            },
        })
    );
    client.echo();
    let pdb = server
        .expect(
            Method::PATCH,
            "/apis/policy/v1/namespaces/db/poddisruptionbudgets/example",
        )
        .await;
    pdb.assert_apply();
    assert_eq!(
        pdb.body,
        json!({
            "apiVersion": "policy/v1",
            "kind": "PodDisruptionBudget",
            "metadata": {
                "name": "example",
                "namespace": "db",
                "labels": cluster_labels(),
                "ownerReferences": owner(),
            },
            "spec": {
                "minAvailable": 2,
                "selector": { "matchLabels": { "etcd.operator.dev/cluster": "example" } },
            },
        })
    );
    pdb.echo();
}

fn launch_annotation(body: &Value) -> Value {
    let raw = body["metadata"]["annotations"][ANNOTATION_LAUNCH]
        .as_str()
        .expect("launch annotation");
    serde_json::from_str(raw).unwrap()
}

fn launch_json(state: &str, version: &str) -> Value {
    json!({
        "name": "example-0",
        "version": version,
        "initialCluster": [
            { "name": "example-0", "peerURL": "http://example-0.example.db.svc:2380" },
            { "name": "example-1", "peerURL": "http://example-1.example.db.svc:2380" },
            { "name": "example-2", "peerURL": "http://example-2.example.db.svc:2380" },
        ],
        "state": state,
        "clusterToken": "example-uid-1",
    })
}

/// The Pod of `example-0` for a bootstrap on pvc storage, as the API server would store it.
fn bootstrap_pod(rt: &PodRuntime) -> Pod {
    rt.objects
        .pod(
            &launch(0, InitialClusterState::New, &[0, 1, 2]),
            DataVolume::Pvc,
        )
        .unwrap()
}

fn with_uid_and_phase(mut pod: Pod, phase: &str) -> Pod {
    pod.metadata.uid = Some("pod-uid".into());
    pod.status = Some(k8s_openapi::api::core::v1::PodStatus {
        phase: Some(phase.into()),
        ..Default::default()
    });
    pod
}

#[tokio::test]
async fn bootstrap_applies_services_and_pdb_then_creates_pvc_and_pod() {
    let mut spec = pvc_spec();
    spec.resources =
        Some(serde_json::from_value(json!({ "requests": { "cpu": "500m" } })).unwrap());
    let (rt, server) = runtime(spec);
    let server = server.run(|mut s| async move {
        expect_cluster_objects(&mut s).await;
        let pvc = s
            .expect(Method::POST, "/api/v1/namespaces/db/persistentvolumeclaims")
            .await;
        assert!(pvc.query.contains("fieldManager=etcd-operator"));
        assert_eq!(launch_annotation(&pvc.body), launch_json("new", "3.5.16"));
        let mut body = pvc.body.clone();
        body["metadata"]["annotations"] = json!(null);
        // Retained by default: no owner, so deleting the cluster keeps the data.
        assert_eq!(
            body,
            json!({
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "metadata": {
                    "name": "example-0",
                    "namespace": "db",
                    "labels": pvc_labels("example-0", "3.5.16"),
                    "annotations": null,
                },
                "spec": {
                    "accessModes": ["ReadWriteOnce"],
                    "storageClassName": "fast",
                    "resources": { "requests": { "storage": "8Gi" } },
                },
            })
        );
        pvc.echo();
        let pod = s.expect(Method::POST, "/api/v1/namespaces/db/pods").await;
        assert!(pod.query.contains("fieldManager=etcd-operator"));
        assert_eq!(launch_annotation(&pod.body), launch_json("new", "3.5.16"));
        let mut body = pod.body.clone();
        body["metadata"]["annotations"] = json!(null);
        assert_eq!(
            body,
            json!({
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "name": "example-0",
                    "namespace": "db",
                    "labels": member_labels("example-0", "3.5.16"),
                    "annotations": null,
                    "ownerReferences": owner(),
                },
                "spec": {
                    "hostname": "example-0",
                    "subdomain": "example",
                    "enableServiceLinks": false,
                    "automountServiceAccountToken": false,
                    "securityContext": {
                        "runAsNonRoot": true,
                        "runAsUser": 65532,
                        "runAsGroup": 65532,
                        "fsGroup": 65532,
                        "seccompProfile": { "type": "RuntimeDefault" },
                    },
                    "affinity": {
                        "podAntiAffinity": {
                            "preferredDuringSchedulingIgnoredDuringExecution": [{
                                "weight": 100,
                                "podAffinityTerm": {
                                    "labelSelector": {
                                        "matchLabels": { "etcd.operator.dev/cluster": "example" },
                                    },
                                    "topologyKey": "kubernetes.io/hostname",
                                },
                            }],
                        },
                    },
                    "volumes": [{
                        "name": "data",
                        "persistentVolumeClaim": { "claimName": "example-0" },
                    }],
                    "containers": [{
                        "name": "etcd",
                        "image": "gcr.io/etcd-development/etcd:v3.5.16",
                        "command": ["etcd"],
                        "args": [
                            "--name=example-0",
                            "--data-dir=/var/lib/etcd/data",
                            "--listen-client-urls=http://0.0.0.0:2379",
                            "--advertise-client-urls=http://example-0.example.db.svc:2379",
                            "--listen-peer-urls=http://0.0.0.0:2380",
                            "--initial-advertise-peer-urls=http://example-0.example.db.svc:2380",
                            "--initial-cluster=example-0=http://example-0.example.db.svc:2380,example-1=http://example-1.example.db.svc:2380,example-2=http://example-2.example.db.svc:2380",
                            "--initial-cluster-state=new",
                            "--initial-cluster-token=example-uid-1",
                        ],
                        "ports": [
                            { "name": "client", "containerPort": 2379 },
                            { "name": "peer", "containerPort": 2380 },
                        ],
                        "volumeMounts": [{ "name": "data", "mountPath": "/var/lib/etcd" }],
                        "resources": { "requests": { "cpu": "500m" } },
                        "readinessProbe": {
                            "httpGet": { "path": "/health", "port": 2379 },
                            "periodSeconds": 5,
                            "timeoutSeconds": 5,
                            "failureThreshold": 3,
                        },
                        "securityContext": {
                            "allowPrivilegeEscalation": false,
                            "readOnlyRootFilesystem": true,
                            "runAsNonRoot": true,
                            "capabilities": { "drop": ["ALL"] },
                        },
                    }],
                },
            })
        );
        pod.echo();
    });
    rt.create(
        &cluster_ref(),
        &launch(0, InitialClusterState::New, &[0, 1, 2]),
    )
    .await
    .unwrap();
    within_1s(server).await;
}

#[tokio::test]
async fn without_storage_each_member_gets_an_8gi_pvc_of_the_default_class() {
    let (rt, server) = runtime(EtcdClusterSpec::new(3, "3.5.16"));
    let server = server.run(|mut s| async move {
        expect_cluster_objects(&mut s).await;
        let pvc = s
            .expect(Method::POST, "/api/v1/namespaces/db/persistentvolumeclaims")
            .await;
        // No storageClassName: the cluster's default class fills it in.
        assert_eq!(
            pvc.body["spec"],
            json!({
                "accessModes": ["ReadWriteOnce"],
                "resources": { "requests": { "storage": "8Gi" } },
            })
        );
        assert_eq!(pvc.body["metadata"]["ownerReferences"], json!(null));
        pvc.echo();
        let pod = s.expect(Method::POST, "/api/v1/namespaces/db/pods").await;
        assert_eq!(
            pod.body["spec"]["volumes"],
            json!([{ "name": "data", "persistentVolumeClaim": { "claimName": "example-0" } }])
        );
        pod.echo();
    });
    rt.create(
        &cluster_ref(),
        &launch(0, InitialClusterState::New, &[0, 1, 2]),
    )
    .await
    .unwrap();
    within_1s(server).await;
}

#[tokio::test]
async fn a_pending_pvc_without_a_class_means_no_default_storage_class() {
    let (rt, server) = runtime(EtcdClusterSpec::new(3, "3.5.16"));
    let new = |o| launch(o, InitialClusterState::New, &[0, 1, 2]);
    let mut pending = rt.objects.pvc(&new(0)).unwrap().unwrap();
    pending.status = Some(k8s_openapi::api::core::v1::PersistentVolumeClaimStatus {
        phase: Some("Pending".into()),
        ..Default::default()
    });
    // Filled in by the DefaultStorageClass admission plugin: fine, even while pending.
    let mut classed = rt.objects.pvc(&new(1)).unwrap().unwrap();
    classed.spec.as_mut().unwrap().storage_class_name = Some("standard".into());
    classed.status = pending.status.clone();
    let server = server.run(|mut s| async move {
        s.expect(Method::GET, "/api/v1/namespaces/db/pods")
            .await
            .reply(&json!({ "apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": [] }));
        s.expect(Method::GET, "/api/v1/namespaces/db/persistentvolumeclaims")
            .await
            .reply(&json!({
                "apiVersion": "v1", "kind": "PersistentVolumeClaimList", "metadata": {},
                "items": [pending, classed],
            }));
    });
    let err = rt.list(&cluster_ref()).await.unwrap_err();
    within_1s(server).await;
    assert!(
        matches!(&err, Error::NoStorageClass { claims, .. } if claims == &["example-0"]),
        "{err:?}"
    );
}

#[tokio::test]
async fn join_starts_an_existing_state_pod_on_an_empty_dir() {
    let mut spec = memory_spec();
    spec.etcd = Some(crate::api::cluster::EtcdOptions {
        snapshot_count: Some(5000),
        extra_args: [("max-txn-ops".to_string(), "256".to_string())].into(),
        ..Default::default()
    });
    let (rt, server) = runtime(spec.clone());
    let mut join = launch(3, InitialClusterState::Existing, &[0, 1, 2, 3]);
    join.options = spec.etcd.clone();
    let server = server.run(|mut s| async move {
        expect_cluster_objects(&mut s).await;
        // No PVC: the data lives in the Pod's emptyDir.
        let pod = s.expect(Method::POST, "/api/v1/namespaces/db/pods").await;
        let spec = &pod.body["spec"];
        assert_eq!(
            spec["volumes"],
            json!([{ "name": "data", "emptyDir": { "medium": "Memory", "sizeLimit": "1Gi" } }])
        );
        let args: Vec<&str> = spec["containers"][0]["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        assert_eq!(
            args[6..],
            [
                "--initial-cluster=example-0=http://example-0.example.db.svc:2380,example-1=http://example-1.example.db.svc:2380,example-2=http://example-2.example.db.svc:2380,example-3=http://example-3.example.db.svc:2380",
                "--initial-cluster-state=existing",
                "--initial-cluster-token=example-uid-1",
                "--snapshot-count=5000",
                "--max-txn-ops=256",
            ]
        );
        assert_eq!(launch_annotation(&pod.body)["state"], "existing");
        assert_eq!(
            launch_annotation(&pod.body)["options"],
            json!({ "snapshotCount": 5000, "extraArgs": { "max-txn-ops": "256" } })
        );
        pod.echo();
    });
    rt.create(&cluster_ref(), &join).await.unwrap();
    within_1s(server).await;
}

#[tokio::test]
async fn existing_pvc_and_pod_are_left_alone() {
    let (rt, server) = runtime(pvc_spec());
    let running = serde_json::to_value(with_uid_and_phase(bootstrap_pod(&rt), "Running")).unwrap();
    let pvc = serde_json::to_value(
        rt.objects
            .pvc(&launch(0, InitialClusterState::New, &[0, 1, 2]))
            .unwrap()
            .unwrap(),
    )
    .unwrap();
    let server = server.run(|mut s| async move {
        expect_cluster_objects(&mut s).await;
        s.expect(Method::POST, "/api/v1/namespaces/db/persistentvolumeclaims")
            .await
            .fail(StatusCode::CONFLICT, "AlreadyExists");
        // Ours (its uid label): mounted.
        s.expect(
            Method::GET,
            "/api/v1/namespaces/db/persistentvolumeclaims/example-0",
        )
        .await
        .reply(&pvc);
        s.expect(Method::POST, "/api/v1/namespaces/db/pods")
            .await
            .fail(StatusCode::CONFLICT, "AlreadyExists");
        // Live: left alone.
        s.expect(Method::GET, "/api/v1/namespaces/db/pods/example-0")
            .await
            .reply(&running);
    });
    rt.create(
        &cluster_ref(),
        &launch(0, InitialClusterState::New, &[0, 1, 2]),
    )
    .await
    .unwrap();
    within_1s(server).await;
}

/// A pod that ended (evicted, or its node shut down) is deleted and created again on its
/// PVC, instead of its create counting as done while it stays failed (issue 9, item 3).
async fn an_ended_pod_is_deleted_and_created_again(phase: &'static str) {
    let (rt, server) = runtime(pvc_spec());
    let pvc = serde_json::to_value(
        rt.objects
            .pvc(&launch(0, InitialClusterState::New, &[0, 1, 2]))
            .unwrap()
            .unwrap(),
    )
    .unwrap();
    let ended = serde_json::to_value(with_uid_and_phase(bootstrap_pod(&rt), phase)).unwrap();
    let expected = serde_json::to_value(bootstrap_pod(&rt)).unwrap();
    let server = server.run(|mut s| async move {
        expect_cluster_objects(&mut s).await;
        s.expect(Method::POST, "/api/v1/namespaces/db/persistentvolumeclaims")
            .await
            .fail(StatusCode::CONFLICT, "AlreadyExists");
        s.expect(
            Method::GET,
            "/api/v1/namespaces/db/persistentvolumeclaims/example-0",
        )
        .await
        .reply(&pvc);
        s.expect(Method::POST, "/api/v1/namespaces/db/pods")
            .await
            .fail(StatusCode::CONFLICT, "AlreadyExists");
        s.expect(Method::GET, "/api/v1/namespaces/db/pods/example-0")
            .await
            .reply(&ended);
        s.expect(Method::DELETE, "/api/v1/namespaces/db/pods/example-0")
            .await
            .reply(&ended);
        let gone = s.expect(Method::GET, "/api/v1/namespaces/db/pods").await;
        assert!(
            gone.query
                .contains("fieldSelector=metadata.name%3Dexample-0"),
            "{}",
            gone.query
        );
        gone.reply(&json!({
            "apiVersion": "v1", "kind": "PodList",
            "metadata": { "resourceVersion": "7" }, "items": [],
        }));
        let pod = s.expect(Method::POST, "/api/v1/namespaces/db/pods").await;
        assert_eq!(pod.body, expected);
        pod.echo();
    });
    rt.create(
        &cluster_ref(),
        &launch(0, InitialClusterState::New, &[0, 1, 2]),
    )
    .await
    .unwrap();
    within_1s(server).await;
}

#[tokio::test]
async fn a_failed_pod_is_deleted_and_created_again() {
    an_ended_pod_is_deleted_and_created_again("Failed").await;
}

#[tokio::test]
async fn a_succeeded_pod_is_deleted_and_created_again() {
    an_ended_pod_is_deleted_and_created_again("Succeeded").await;
}

#[tokio::test]
async fn a_reserved_flag_in_extra_args_writes_nothing() {
    let (rt, server) = runtime(pvc_spec());
    let mut bad = launch(0, InitialClusterState::New, &[0]);
    bad.options = Some(crate::api::cluster::EtcdOptions {
        extra_args: [("data-dir".to_string(), "/tmp".to_string())].into(),
        ..Default::default()
    });
    let server = server.run(|_| async {});
    let err = rt.create(&cluster_ref(), &bad).await.unwrap_err();
    assert!(matches!(err, Error::ReservedFlag { flag } if flag == "data-dir"));
    within_1s(server).await;
}

#[tokio::test]
async fn upgrade_patches_the_pvc_launch_then_the_pod_image_in_place() {
    let (rt, server) = runtime(pvc_spec());
    let running = with_uid_and_phase(bootstrap_pod(&rt), "Running");
    let server = server.run(|mut s| async move {
        s.expect(Method::GET, "/api/v1/namespaces/db/pods/example-0")
            .await
            .reply(&serde_json::to_value(&running).unwrap());
        let expected_meta = |body: &Value| {
            assert_eq!(
                body["metadata"]["labels"],
                json!({ "etcd.operator.dev/version": "3.5.17" })
            );
            assert_eq!(launch_annotation(body), launch_json("new", "3.5.17"));
        };
        let pvc = s
            .expect(
                Method::PATCH,
                "/api/v1/namespaces/db/persistentvolumeclaims/example-0",
            )
            .await;
        assert_eq!(pvc.content_type, "application/merge-patch+json");
        expected_meta(&pvc.body);
        assert_eq!(pvc.body.as_object().unwrap().len(), 1, "{}", pvc.body);
        pvc.echo();
        let pod = s
            .expect(Method::PATCH, "/api/v1/namespaces/db/pods/example-0")
            .await;
        assert_eq!(pod.content_type, "application/strategic-merge-patch+json");
        expected_meta(&pod.body);
        assert_eq!(
            pod.body["spec"],
            json!({ "containers": [{
                "name": "etcd",
                "image": "gcr.io/etcd-development/etcd:v3.5.17",
            }] })
        );
        pod.reply(&serde_json::to_value(&running).unwrap());
    });
    rt.restart(
        &cluster_ref(),
        "example-0",
        Some(semver::Version::new(3, 5, 17)),
    )
    .await
    .unwrap();
    within_1s(server).await;
}

#[tokio::test]
async fn a_repeated_upgrade_sends_no_patch() {
    let (rt, server) = runtime(pvc_spec());
    let running = with_uid_and_phase(bootstrap_pod(&rt), "Running");
    let server = server.run(|mut s| async move {
        s.expect(Method::GET, "/api/v1/namespaces/db/pods/example-0")
            .await
            .reply(&serde_json::to_value(&running).unwrap());
    });
    rt.restart(
        &cluster_ref(),
        "example-0",
        Some(semver::Version::new(3, 5, 16)),
    )
    .await
    .unwrap();
    within_1s(server).await;
}

#[tokio::test]
async fn removal_deletes_the_pod_and_its_pvc() {
    let (rt, server) = runtime(pvc_spec());
    let pod = serde_json::to_value(bootstrap_pod(&rt)).unwrap();
    let server = server.run(|mut s| async move {
        s.expect(Method::DELETE, "/api/v1/namespaces/db/pods/example-0")
            .await
            .reply(&pod);
        s.expect(
            Method::DELETE,
            "/api/v1/namespaces/db/persistentvolumeclaims/example-0",
        )
        .await
        .fail(StatusCode::NOT_FOUND, "NotFound");
    });
    rt.delete(&cluster_ref(), "example-0").await.unwrap();
    within_1s(server).await;
}

#[tokio::test]
async fn a_missing_pod_whose_pvc_exists_is_recreated_on_that_pvc() {
    let (rt, server) = runtime(pvc_spec());
    let pvc = rt
        .objects
        .pvc(&launch(0, InitialClusterState::New, &[0, 1, 2]))
        .unwrap()
        .unwrap();
    let expected = serde_json::to_value(bootstrap_pod(&rt)).unwrap();
    let server = server.run(|mut s| async move {
        s.expect(Method::GET, "/api/v1/namespaces/db/pods/example-0")
            .await
            .fail(StatusCode::NOT_FOUND, "NotFound");
        s.expect(
            Method::GET,
            "/api/v1/namespaces/db/persistentvolumeclaims/example-0",
        )
        .await
        .reply(&serde_json::to_value(&pvc).unwrap());
        // The same member: same name, flags and claim; no PVC is created or deleted.
        let pod = s.expect(Method::POST, "/api/v1/namespaces/db/pods").await;
        assert_eq!(pod.body, expected);
        pod.echo();
    });
    rt.restart(&cluster_ref(), "example-0", None).await.unwrap();
    within_1s(server).await;
}

#[tokio::test]
async fn an_upgrade_of_a_missing_pod_records_the_version_on_the_pvc_first() {
    let (rt, server) = runtime(pvc_spec());
    let pvc = rt
        .objects
        .pvc(&launch(0, InitialClusterState::New, &[0, 1, 2]))
        .unwrap()
        .unwrap();
    let server = server.run(|mut s| async move {
        s.expect(Method::GET, "/api/v1/namespaces/db/pods/example-0")
            .await
            .fail(StatusCode::NOT_FOUND, "NotFound");
        let pvc_json = serde_json::to_value(&pvc).unwrap();
        s.expect(
            Method::GET,
            "/api/v1/namespaces/db/persistentvolumeclaims/example-0",
        )
        .await
        .reply(&pvc_json);
        let patch = s
            .expect(
                Method::PATCH,
                "/api/v1/namespaces/db/persistentvolumeclaims/example-0",
            )
            .await;
        assert_eq!(launch_annotation(&patch.body), launch_json("new", "3.5.17"));
        patch.reply(&pvc_json);
        let pod = s.expect(Method::POST, "/api/v1/namespaces/db/pods").await;
        assert_eq!(
            pod.body["spec"]["containers"][0]["image"],
            "gcr.io/etcd-development/etcd:v3.5.17"
        );
        assert_eq!(
            pod.body["metadata"]["labels"]["etcd.operator.dev/version"],
            "3.5.17"
        );
        pod.echo();
    });
    rt.restart(
        &cluster_ref(),
        "example-0",
        Some(semver::Version::new(3, 5, 17)),
    )
    .await
    .unwrap();
    within_1s(server).await;
}

#[tokio::test]
async fn a_restart_deletes_the_live_pod_waits_and_recreates_it() {
    let (rt, server) = runtime(pvc_spec());
    let pvc = rt
        .objects
        .pvc(&launch(0, InitialClusterState::New, &[0, 1, 2]))
        .unwrap()
        .unwrap();
    let running = with_uid_and_phase(bootstrap_pod(&rt), "Running");
    let expected = serde_json::to_value(bootstrap_pod(&rt)).unwrap();
    let server = server.run(|mut s| async move {
        let running = serde_json::to_value(&running).unwrap();
        s.expect(Method::GET, "/api/v1/namespaces/db/pods/example-0")
            .await
            .reply(&running);
        s.expect(
            Method::GET,
            "/api/v1/namespaces/db/persistentvolumeclaims/example-0",
        )
        .await
        .reply(&serde_json::to_value(&pvc).unwrap());
        s.expect(Method::DELETE, "/api/v1/namespaces/db/pods/example-0")
            .await
            .reply(&running);
        let gone = s.expect(Method::GET, "/api/v1/namespaces/db/pods").await;
        assert!(
            gone.query
                .contains("fieldSelector=metadata.name%3Dexample-0"),
            "{}",
            gone.query
        );
        gone.reply(&json!({
            "apiVersion": "v1",
            "kind": "PodList",
            "metadata": { "resourceVersion": "7" },
            "items": [],
        }));
        let pod = s.expect(Method::POST, "/api/v1/namespaces/db/pods").await;
        assert_eq!(pod.body, expected);
        pod.echo();
    });
    rt.restart(&cluster_ref(), "example-0", None).await.unwrap();
    within_1s(server).await;
}

#[tokio::test]
async fn a_restart_that_would_lose_empty_dir_data_is_refused() {
    let (rt, server) = runtime(memory_spec());
    let pod = rt
        .objects
        .pod(
            &launch(0, InitialClusterState::New, &[0]),
            DataVolume::EmptyDir,
        )
        .unwrap();
    let running = with_uid_and_phase(pod, "Running");
    let server = server.run(|mut s| async move {
        s.expect(Method::GET, "/api/v1/namespaces/db/pods/example-0")
            .await
            .reply(&serde_json::to_value(&running).unwrap());
        s.expect(
            Method::GET,
            "/api/v1/namespaces/db/persistentvolumeclaims/example-0",
        )
        .await
        .fail(StatusCode::NOT_FOUND, "NotFound");
    });
    let err = rt
        .restart(&cluster_ref(), "example-0", None)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::RestartLosesData { name } if name == "example-0"));
    within_1s(server).await;
}

#[tokio::test]
async fn a_member_with_neither_pod_nor_pvc_cannot_restart() {
    let (rt, server) = runtime(pvc_spec());
    let server = server.run(|mut s| async move {
        s.expect(Method::GET, "/api/v1/namespaces/db/pods/example-0")
            .await
            .fail(StatusCode::NOT_FOUND, "NotFound");
        s.expect(
            Method::GET,
            "/api/v1/namespaces/db/persistentvolumeclaims/example-0",
        )
        .await
        .fail(StatusCode::NOT_FOUND, "NotFound");
    });
    let err = rt
        .restart(&cluster_ref(), "example-0", None)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::MemberNotFound { .. }), "{err:?}");
    within_1s(server).await;
}

#[tokio::test]
async fn list_reads_members_from_pods_and_pvcs() {
    let (rt, server) = runtime(pvc_spec());
    let new = |o| launch(o, InitialClusterState::New, &[0, 1, 2]);
    // 0: running on its PVC. 1: PVC only (its node died). 2: evicted, no PVC.
    let pod0 = with_uid_and_phase(rt.objects.pod(&new(0), DataVolume::Pvc).unwrap(), "Running");
    let pvc0 = rt.objects.pvc(&new(0)).unwrap().unwrap();
    // Made before the uid label, when every PVC was owned: still this cluster's.
    let mut pvc1 = rt.objects.pvc(&new(1)).unwrap().unwrap();
    pvc1.metadata
        .labels
        .as_mut()
        .unwrap()
        .remove(LABEL_CLUSTER_UID);
    pvc1.metadata.owner_references = Some(vec![rt.objects.owner.clone()]);
    let pod2 = with_uid_and_phase(
        rt.objects.pod(&new(2), DataVolume::EmptyDir).unwrap(),
        "Failed",
    );
    let server = server.run(|mut s| async move {
        let pods = s.expect(Method::GET, "/api/v1/namespaces/db/pods").await;
        assert_eq!(
            pods.query,
            "&labelSelector=etcd.operator.dev%2Fcluster%3Dexample"
        );
        pods.reply(&json!({
            "apiVersion": "v1", "kind": "PodList", "metadata": {},
            "items": [pod0, pod2],
        }));
        let pvcs = s
            .expect(Method::GET, "/api/v1/namespaces/db/persistentvolumeclaims")
            .await;
        assert_eq!(
            pvcs.query,
            "&labelSelector=etcd.operator.dev%2Fcluster%3Dexample"
        );
        pvcs.reply(&json!({
            "apiVersion": "v1", "kind": "PersistentVolumeClaimList", "metadata": {},
            "items": [pvc0, pvc1],
        }));
    });
    let members = rt.list(&cluster_ref()).await.unwrap();
    within_1s(server).await;
    let summary: Vec<(&str, bool, bool, String)> = members
        .iter()
        .map(|m| {
            (
                m.name.as_str(),
                m.running,
                m.has_data,
                m.version.to_string(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("example-0", true, true, "3.5.16".to_string()),
            ("example-1", false, true, "3.5.16".to_string()),
            ("example-2", false, false, "3.5.16".to_string()),
        ]
    );
    assert_eq!(
        members[1].address,
        rt.objects.address("example-1", Transport::Plain)
    );
}

#[tokio::test]
async fn with_the_delete_policy_the_cluster_owns_its_pvcs() {
    let mut spec = pvc_spec();
    spec.storage
        .as_mut()
        .unwrap()
        .pvc
        .as_mut()
        .unwrap()
        .retention_policy = Some(PvcRetentionPolicy {
        when_deleted: RetentionPolicyType::Delete,
    });
    let (rt, server) = runtime(spec);
    let server = server.run(|mut s| async move {
        expect_cluster_objects(&mut s).await;
        let pvc = s
            .expect(Method::POST, "/api/v1/namespaces/db/persistentvolumeclaims")
            .await;
        assert_eq!(pvc.body["metadata"]["ownerReferences"], owner());
        assert_eq!(
            pvc.body["metadata"]["labels"],
            pvc_labels("example-0", "3.5.16")
        );
        pvc.echo();
        s.expect(Method::POST, "/api/v1/namespaces/db/pods")
            .await
            .echo();
    });
    rt.create(
        &cluster_ref(),
        &launch(0, InitialClusterState::New, &[0, 1, 2]),
    )
    .await
    .unwrap();
    within_1s(server).await;
}

/// `example-0`'s PVC as an earlier cluster named `example` (uid `uid-0`) left it.
fn retained_pvc(rt: &PodRuntime) -> Value {
    let mut pvc = rt
        .objects
        .pvc(&launch(0, InitialClusterState::New, &[0, 1, 2]))
        .unwrap()
        .unwrap();
    pvc.metadata
        .labels
        .as_mut()
        .unwrap()
        .insert(LABEL_CLUSTER_UID.into(), "uid-0".into());
    serde_json::to_value(pvc).unwrap()
}

#[tokio::test]
async fn pvcs_retained_from_an_earlier_cluster_of_the_name_are_refused_not_listed() {
    let (rt, server) = runtime(pvc_spec());
    let old = retained_pvc(&rt);
    let server = server.run(|mut s| async move {
        s.expect(Method::GET, "/api/v1/namespaces/db/pods")
            .await
            .reply(&json!({ "apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": [] }));
        s.expect(Method::GET, "/api/v1/namespaces/db/persistentvolumeclaims")
            .await
            .reply(&json!({
                "apiVersion": "v1", "kind": "PersistentVolumeClaimList", "metadata": {},
                "items": [old],
            }));
    });
    let err = rt.list(&cluster_ref()).await.unwrap_err();
    within_1s(server).await;
    assert!(
        matches!(&err, Error::RetainedClaims { claims, .. } if claims == &["example-0"]),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_member_is_never_created_on_a_pvc_of_an_earlier_cluster() {
    let (rt, server) = runtime(pvc_spec());
    let old = retained_pvc(&rt);
    let server = server.run(|mut s| async move {
        expect_cluster_objects(&mut s).await;
        s.expect(Method::POST, "/api/v1/namespaces/db/persistentvolumeclaims")
            .await
            .fail(StatusCode::CONFLICT, "AlreadyExists");
        s.expect(
            Method::GET,
            "/api/v1/namespaces/db/persistentvolumeclaims/example-0",
        )
        .await
        .reply(&old);
        // No Pod: it would start on the old cluster's data.
    });
    let err = rt
        .create(
            &cluster_ref(),
            &launch(0, InitialClusterState::New, &[0, 1, 2]),
        )
        .await
        .unwrap_err();
    within_1s(server).await;
    assert!(matches!(err, Error::RetainedClaims { .. }), "{err:?}");
}

#[tokio::test]
async fn objects_being_deleted_are_going_away_not_members() {
    let (rt, server) = runtime(pvc_spec());
    let new = |o| launch(o, InitialClusterState::New, &[0, 1, 2]);
    let terminating = |mut pod: Pod| {
        pod.metadata.deletion_timestamp = Some(crate::api::condition::now());
        pod
    };
    // 0: removed a moment ago, Pod still terminating, PVC gone (deleted first by the API
    // server once unused). 1: its Pod is being deleted but its PVC stays: a stopped member.
    let pod0 = terminating(with_uid_and_phase(
        rt.objects.pod(&new(0), DataVolume::Pvc).unwrap(),
        "Running",
    ));
    let pod1 = terminating(with_uid_and_phase(
        rt.objects.pod(&new(1), DataVolume::Pvc).unwrap(),
        "Running",
    ));
    let mut pvc0 = rt.objects.pvc(&new(0)).unwrap().unwrap();
    pvc0.metadata.deletion_timestamp = Some(crate::api::condition::now());
    let pvc1 = rt.objects.pvc(&new(1)).unwrap().unwrap();
    let server = server.run(|mut s| async move {
        s.expect(Method::GET, "/api/v1/namespaces/db/pods")
            .await
            .reply(&json!({
                "apiVersion": "v1", "kind": "PodList", "metadata": {},
                "items": [pod0, pod1],
            }));
        s.expect(Method::GET, "/api/v1/namespaces/db/persistentvolumeclaims")
            .await
            .reply(&json!({
                "apiVersion": "v1", "kind": "PersistentVolumeClaimList", "metadata": {},
                "items": [pvc0, pvc1],
            }));
    });
    let members = rt.list(&cluster_ref()).await.unwrap();
    within_1s(server).await;
    let summary: Vec<(&str, bool, bool)> = members
        .iter()
        .map(|m| (m.name.as_str(), m.running, m.has_data))
        .collect();
    // example-0 is no reservation to be added again under its name.
    assert_eq!(summary, [("example-1", false, true)]);
}

#[tokio::test]
async fn a_member_is_created_only_once_its_objects_being_deleted_are_gone() {
    let (rt, server) = runtime(pvc_spec());
    // Left by an earlier cluster of the name, and being deleted: waited for, not refused.
    let mut old_pvc = retained_pvc(&rt);
    old_pvc["metadata"]["uid"] = json!("old-pvc");
    old_pvc["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
    let mut old_pod =
        serde_json::to_value(with_uid_and_phase(bootstrap_pod(&rt), "Running")).unwrap();
    old_pod["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
    let empty = |kind: &str| {
        json!({
            "apiVersion": "v1", "kind": kind,
            "metadata": { "resourceVersion": "7" }, "items": [],
        })
    };
    let server = server.run(|mut s| async move {
        expect_cluster_objects(&mut s).await;
        s.expect(Method::POST, "/api/v1/namespaces/db/persistentvolumeclaims")
            .await
            .fail(StatusCode::CONFLICT, "AlreadyExists");
        s.expect(
            Method::GET,
            "/api/v1/namespaces/db/persistentvolumeclaims/example-0",
        )
        .await
        .reply(&old_pvc);
        let gone = s
            .expect(Method::GET, "/api/v1/namespaces/db/persistentvolumeclaims")
            .await;
        assert!(
            gone.query
                .contains("fieldSelector=metadata.name%3Dexample-0")
        );
        gone.reply(&empty("PersistentVolumeClaimList"));
        let pvc = s
            .expect(Method::POST, "/api/v1/namespaces/db/persistentvolumeclaims")
            .await;
        assert_eq!(
            pvc.body["metadata"]["labels"]["etcd.operator.dev/cluster-uid"],
            "uid-1"
        );
        pvc.echo();
        s.expect(Method::POST, "/api/v1/namespaces/db/pods")
            .await
            .fail(StatusCode::CONFLICT, "AlreadyExists");
        s.expect(Method::GET, "/api/v1/namespaces/db/pods/example-0")
            .await
            .reply(&old_pod);
        // Already being deleted: no second DELETE, only the wait.
        let gone = s.expect(Method::GET, "/api/v1/namespaces/db/pods").await;
        assert!(
            gone.query
                .contains("fieldSelector=metadata.name%3Dexample-0")
        );
        gone.reply(&empty("PodList"));
        s.expect(Method::POST, "/api/v1/namespaces/db/pods")
            .await
            .echo();
    });
    rt.create(
        &cluster_ref(),
        &launch(0, InitialClusterState::New, &[0, 1, 2]),
    )
    .await
    .unwrap();
    within_1s(server).await;
}

/// `pod`, as an earlier cluster named `example` (uid `uid-0`) left it: live, not yet
/// garbage-collected.
fn earlier_clusters(mut pod: Pod) -> Pod {
    for owner in pod.metadata.owner_references.iter_mut().flatten() {
        owner.uid = "uid-0".into();
    }
    pod
}

#[tokio::test]
async fn pods_of_an_earlier_cluster_of_the_name_are_not_members() {
    let (rt, server) = runtime(pvc_spec());
    let new = |o| launch(o, InitialClusterState::New, &[0, 1, 2]);
    let old0 = earlier_clusters(with_uid_and_phase(
        rt.objects.pod(&new(0), DataVolume::Pvc).unwrap(),
        "Running",
    ));
    let own1 = with_uid_and_phase(rt.objects.pod(&new(1), DataVolume::Pvc).unwrap(), "Running");
    let pvc1 = rt.objects.pvc(&new(1)).unwrap().unwrap();
    let server = server.run(|mut s| async move {
        s.expect(Method::GET, "/api/v1/namespaces/db/pods")
            .await
            .reply(&json!({
                "apiVersion": "v1", "kind": "PodList", "metadata": {},
                "items": [old0, own1],
            }));
        s.expect(Method::GET, "/api/v1/namespaces/db/persistentvolumeclaims")
            .await
            .reply(&json!({
                "apiVersion": "v1", "kind": "PersistentVolumeClaimList", "metadata": {},
                "items": [pvc1],
            }));
    });
    let members = rt.list(&cluster_ref()).await.unwrap();
    within_1s(server).await;
    let names: Vec<&str> = members.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, ["example-1"]);
}

#[tokio::test]
async fn a_live_pod_of_an_earlier_cluster_is_never_adopted_or_deleted() {
    let (rt, server) = runtime(memory_spec());
    let old = earlier_clusters(with_uid_and_phase(
        rt.objects
            .pod(
                &launch(0, InitialClusterState::New, &[0, 1, 2]),
                DataVolume::EmptyDir,
            )
            .unwrap(),
        "Running",
    ));
    let server = server.run(|mut s| async move {
        expect_cluster_objects(&mut s).await;
        s.expect(Method::POST, "/api/v1/namespaces/db/pods")
            .await
            .fail(StatusCode::CONFLICT, "AlreadyExists");
        s.expect(Method::GET, "/api/v1/namespaces/db/pods/example-0")
            .await
            .reply(&serde_json::to_value(&old).unwrap());
        // No DELETE: it is not ours.
    });
    let err = rt
        .create(
            &cluster_ref(),
            &launch(0, InitialClusterState::New, &[0, 1, 2]),
        )
        .await
        .unwrap_err();
    within_1s(server).await;
    assert!(
        matches!(&err, Error::ForeignPod { name, owner } if name == "example-0" && owner == "uid-0"),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_full_quota_refusing_an_existing_pod_is_not_a_failure() {
    // Seen on a real cluster: with the pods quota used up, creating a Pod that exists is
    // refused with 403 (quota admission runs before the name check), not 409.
    let (rt, server) = runtime(memory_spec());
    let existing = with_uid_and_phase(
        rt.objects
            .pod(
                &launch(0, InitialClusterState::New, &[0, 1, 2]),
                DataVolume::EmptyDir,
            )
            .unwrap(),
        "Running",
    );
    let server = server.run(|mut s| async move {
        expect_cluster_objects(&mut s).await;
        s.expect(Method::POST, "/api/v1/namespaces/db/pods")
            .await
            .fail(StatusCode::FORBIDDEN, "Forbidden");
        let reply = serde_json::to_value(&existing).unwrap();
        s.expect(Method::GET, "/api/v1/namespaces/db/pods/example-0")
            .await
            .reply(&reply);
        s.expect(Method::GET, "/api/v1/namespaces/db/pods/example-0")
            .await
            .reply(&reply);
    });
    rt.create(
        &cluster_ref(),
        &launch(0, InitialClusterState::New, &[0, 1, 2]),
    )
    .await
    .unwrap();
    within_1s(server).await;
}

#[tokio::test]
async fn stop_all_deletes_the_pods_and_keeps_the_pvcs() {
    let (rt, server) = runtime(pvc_spec());
    let new = |o| launch(o, InitialClusterState::New, &[0, 1]);
    let pod0 = with_uid_and_phase(rt.objects.pod(&new(0), DataVolume::Pvc).unwrap(), "Running");
    let mut pod1 = with_uid_and_phase(rt.objects.pod(&new(1), DataVolume::Pvc).unwrap(), "Running");
    // Already going: not deleted twice.
    pod1.metadata.deletion_timestamp = Some(crate::api::condition::now());
    let server = server.run(|mut s| async move {
        let list = s.expect(Method::GET, "/api/v1/namespaces/db/pods").await;
        assert_eq!(
            list.query,
            "&labelSelector=etcd.operator.dev%2Fcluster%3Dexample"
        );
        let pod0 = serde_json::to_value(&pod0).unwrap();
        list.reply(&json!({
            "apiVersion": "v1", "kind": "PodList", "metadata": {},
            "items": [pod0, pod1],
        }));
        s.expect(Method::DELETE, "/api/v1/namespaces/db/pods/example-0")
            .await
            .reply(&pod0);
    });
    rt.stop_all(&cluster_ref()).await.unwrap();
    within_1s(server).await;
}

#[tokio::test]
async fn another_cluster_is_refused_without_requests() {
    let (rt, server) = runtime(pvc_spec());
    let server = server.run(|_| async {});
    let other = ClusterRef::new(NS, "other");
    assert!(matches!(
        rt.list(&other).await,
        Err(Error::OtherCluster { .. })
    ));
    assert!(matches!(
        rt.delete(&other, "other-0").await,
        Err(Error::OtherCluster { .. })
    ));
    within_1s(server).await;
}

#[tokio::test]
async fn reserve_hands_out_dns_names_without_requests() {
    let (rt, server) = runtime(pvc_spec());
    let server = server.run(|_| async {});
    let address = rt
        .reserve(&cluster_ref(), "example-4", Transport::Plain)
        .await
        .unwrap();
    assert_eq!(
        address,
        MemberAddress {
            name: "example-4".into(),
            peer_url: "http://example-4.example.db.svc:2380".into(),
            client_url: "http://example-4.example.db.svc:2379".into(),
        }
    );
    within_1s(server).await;
}

#[tokio::test]
async fn a_cluster_not_read_from_the_api_server_is_refused() {
    let (service, _handle) = mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, NS);
    let mut c = cluster(pvc_spec());
    c.metadata.uid = None;
    assert!(matches!(
        PodRuntime::for_cluster(client, &c),
        Err(Error::MissingClusterField { field: "uid" })
    ));
}

#[tokio::test]
async fn pod_overrides_merge_labels_and_replace_the_default_affinity() {
    let mut spec = pvc_spec();
    spec.repository = Some("quay.io/coreos/etcd".into());
    spec.pod = Some(PodPolicy {
        labels: BTreeMap::from([
            ("team".to_string(), "db".to_string()),
            // Ours win: the Services select on it.
            ("etcd.operator.dev/cluster".to_string(), "mine".to_string()),
        ]),
        annotations: BTreeMap::from([("note".to_string(), "x".to_string())]),
        node_selector: BTreeMap::from([("disk".to_string(), "ssd".to_string())]),
        tolerations: vec![serde_json::from_value(json!({ "operator": "Exists" })).unwrap()],
        affinity: Some(serde_json::from_value(json!({ "nodeAffinity": {} })).unwrap()),
        priority_class_name: Some("critical".into()),
    });
    let (rt, _server) = runtime(spec);
    let pod = rt
        .objects
        .pod(&launch(0, InitialClusterState::New, &[0]), DataVolume::Pvc)
        .unwrap();
    let pod = serde_json::to_value(pod).unwrap();
    assert_eq!(pod["metadata"]["labels"]["team"], "db");
    assert_eq!(
        pod["metadata"]["labels"]["etcd.operator.dev/cluster"],
        "example"
    );
    assert_eq!(pod["metadata"]["annotations"]["note"], "x");
    assert!(pod["metadata"]["annotations"][ANNOTATION_LAUNCH].is_string());
    assert_eq!(pod["spec"]["nodeSelector"], json!({ "disk": "ssd" }));
    assert_eq!(
        pod["spec"]["tolerations"],
        json!([{ "operator": "Exists" }])
    );
    assert_eq!(pod["spec"]["affinity"], json!({ "nodeAffinity": {} }));
    assert_eq!(pod["spec"]["priorityClassName"], "critical");
    assert_eq!(
        pod["spec"]["containers"][0]["image"],
        "quay.io/coreos/etcd:v3.5.16"
    );
}

#[test]
fn the_launch_annotation_round_trips() {
    let mut l = launch(0, InitialClusterState::Existing, &[0, 1]);
    l.options = Some(crate::api::cluster::EtcdOptions {
        quota_backend_bytes: Some(1 << 30),
        ..Default::default()
    });
    let meta = k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
        name: Some("example-0".into()),
        annotations: Some(BTreeMap::from([(
            ANNOTATION_LAUNCH.to_string(),
            LaunchAnnotation::encode(&l).unwrap(),
        )])),
        ..Default::default()
    };
    assert_eq!(LaunchAnnotation::decode("pod", &meta).unwrap(), l);
    assert!(DATA_DIR.starts_with(objects::DATA_MOUNT));
}

/// A cluster created by an EtcdRestore of `bucket/key`, with a credentials Secret.
fn restored_cluster(spec: EtcdClusterSpec) -> EtcdCluster {
    let source = restore::SnapshotSource {
        object: crate::api::restore::S3Object {
            bucket: "backups".into(),
            key: "prod/example/20250610T120000Z-rev42.db".into(),
            connection: crate::api::s3::S3Connection {
                endpoint: Some("http://garage.storage.svc:3900".into()),
                region: Some("garage".into()),
                force_path_style: Some(true),
                credentials_secret: Some("s3-creds".into()),
            },
        },
        sha256: Some("ab".repeat(32)),
        etag: Some("\"9b2cf535f27731c974343645a3985328\"".into()),
        version_id: Some("v-1".into()),
    };
    let mut c = cluster(spec);
    c.metadata.annotations = Some(BTreeMap::from([
        (
            restore::ANNOTATION_RESTORE_FROM.to_string(),
            "db/from-prod".to_string(),
        ),
        (
            restore::ANNOTATION_RESTORE_SOURCE.to_string(),
            source.to_annotation(),
        ),
    ]));
    c
}

fn restored_runtime(spec: EtcdClusterSpec) -> PodRuntime {
    let (client, _server) = ApiServer::client(NS);
    PodRuntime::for_cluster(client, &restored_cluster(spec))
        .unwrap()
        .with_operator_image(Some("ghcr.io/etcd-operator/etcd-operator:0.1.0".into()))
}

fn hardened() -> Value {
    json!({
        "allowPrivilegeEscalation": false,
        "readOnlyRootFilesystem": true,
        "runAsNonRoot": true,
        "capabilities": { "drop": ["ALL"] },
    })
}

#[tokio::test]
async fn a_restored_bootstrap_member_fetches_restores_and_finishes_before_etcd_starts() {
    let mut spec = pvc_spec();
    spec.resources =
        Some(serde_json::from_value(json!({ "requests": { "cpu": "500m" } })).unwrap());
    let rt = restored_runtime(spec);
    let pod = rt
        .objects
        .pod(
            &launch(1, InitialClusterState::New, &[0, 1, 2]),
            DataVolume::Pvc,
        )
        .unwrap();
    let pod = serde_json::to_value(pod).unwrap();
    let mount = json!([{ "name": "data", "mountPath": "/var/lib/etcd" }]);
    let secret = |name: &str, key: &str, optional: bool| {
        let mut selector = json!({ "name": "s3-creds", "key": key });
        if optional {
            selector["optional"] = json!(true);
        }
        json!({ "name": name, "valueFrom": { "secretKeyRef": selector } })
    };
    assert_eq!(
        pod["spec"]["initContainers"],
        json!([
            {
                "name": "restore-fetch",
                "image": "ghcr.io/etcd-operator/etcd-operator:0.1.0",
                "args": [
                    "restore-fetch",
                    "--bucket=backups",
                    "--key=prod/example/20250610T120000Z-rev42.db",
                    "--endpoint=http://garage.storage.svc:3900",
                    "--region=garage",
                    "--force-path-style",
                    format!("--sha256={}", "ab".repeat(32)),
                    "--etag=\"9b2cf535f27731c974343645a3985328\"",
                    "--version-id=v-1",
                    "--etcd-version=3.5.16",
                    "--out=/var/lib/etcd/restore/snapshot.db",
                    "--restored=/var/lib/etcd/restore/data",
                    "--data-dir=/var/lib/etcd/data",
                ],
                "env": [
                    secret("AWS_ACCESS_KEY_ID", "accessKeyId", false),
                    secret("AWS_SECRET_ACCESS_KEY", "secretAccessKey", false),
                    secret("AWS_SESSION_TOKEN", "sessionToken", true),
                ],
                "volumeMounts": mount,
                "resources": { "requests": { "cpu": "500m" } },
                "securityContext": hardened(),
                "terminationMessagePolicy": "FallbackToLogsOnError",
            },
            {
                "name": "restore",
                "image": "gcr.io/etcd-development/etcd:v3.5.16",
                "command": ["etcdutl"],
                "args": [
                    "snapshot",
                    "restore",
                    "/var/lib/etcd/restore/snapshot.db",
                    "--name=example-1",
                    "--initial-cluster=example-0=http://example-0.example.db.svc:2380,example-1=http://example-1.example.db.svc:2380,example-2=http://example-2.example.db.svc:2380",
                    "--initial-cluster-token=example-uid-1",
                    "--initial-advertise-peer-urls=http://example-1.example.db.svc:2380",
                    "--data-dir=/var/lib/etcd/restore/data",
                ],
                "volumeMounts": mount,
                "resources": { "requests": { "cpu": "500m" } },
                "securityContext": hardened(),
                "terminationMessagePolicy": "FallbackToLogsOnError",
            },
            {
                "name": "restore-finish",
                "image": "ghcr.io/etcd-operator/etcd-operator:0.1.0",
                "args": [
                    "restore-finish",
                    "--snapshot=/var/lib/etcd/restore/snapshot.db",
                    "--restored=/var/lib/etcd/restore/data",
                    "--data-dir=/var/lib/etcd/data",
                ],
                "volumeMounts": mount,
                "resources": { "requests": { "cpu": "500m" } },
                "securityContext": hardened(),
                "terminationMessagePolicy": "FallbackToLogsOnError",
            },
        ])
    );
    // etcd itself starts as any bootstrap member: the restored data dir makes it ignore
    // the initial-cluster flags.
    let args = pod["spec"]["containers"][0]["args"].as_array().unwrap();
    assert!(args.contains(&json!("--data-dir=/var/lib/etcd/data")));
    assert!(args.contains(&json!("--initial-cluster-token=example-uid-1")));
}

#[tokio::test]
async fn a_restored_3_4_member_restores_with_etcdctl_and_without_credentials_uses_the_default_chain()
 {
    let mut c = restored_cluster(EtcdClusterSpec::new(1, "3.4.23"));
    let annotations = c.metadata.annotations.as_mut().unwrap();
    let mut source: restore::SnapshotSource =
        serde_json::from_str(&annotations[restore::ANNOTATION_RESTORE_SOURCE]).unwrap();
    source.object.connection = Default::default();
    source.sha256 = None;
    (source.etag, source.version_id) = (None, None);
    annotations.insert(
        restore::ANNOTATION_RESTORE_SOURCE.to_string(),
        source.to_annotation(),
    );
    let (client, _server) = ApiServer::client(NS);
    let rt = PodRuntime::for_cluster(client, &c)
        .unwrap()
        .with_operator_image(Some("op:dev".into()));
    let mut l = launch(0, InitialClusterState::New, &[0]);
    l.version = semver::Version::new(3, 4, 23);
    let pod = serde_json::to_value(rt.objects.pod(&l, DataVolume::EmptyDir).unwrap()).unwrap();
    let init = &pod["spec"]["initContainers"];
    assert_eq!(
        init[0]["args"],
        json!([
            "restore-fetch",
            "--bucket=backups",
            "--key=prod/example/20250610T120000Z-rev42.db",
            "--etcd-version=3.4.23",
            "--out=/var/lib/etcd/restore/snapshot.db",
            "--restored=/var/lib/etcd/restore/data",
            "--data-dir=/var/lib/etcd/data",
        ])
    );
    assert!(init[0]["env"].is_null());
    assert_eq!(init[1]["command"], json!(["etcdctl"]));
    assert_eq!(
        init[1]["env"],
        json!([{ "name": "ETCDCTL_API", "value": "3" }])
    );
    assert_eq!(init[1]["image"], "gcr.io/etcd-development/etcd:v3.4.23");
}

#[tokio::test]
async fn members_that_join_later_and_plain_clusters_get_no_restore_containers() {
    let rt = restored_runtime(pvc_spec());
    let joining = rt
        .objects
        .pod(
            &launch(3, InitialClusterState::Existing, &[0, 1, 2, 3]),
            DataVolume::Pvc,
        )
        .unwrap();
    assert!(joining.spec.unwrap().init_containers.is_none());
    let (plain, _server) = runtime(pvc_spec());
    let bootstrap = plain
        .objects
        .pod(&launch(0, InitialClusterState::New, &[0]), DataVolume::Pvc)
        .unwrap();
    assert!(bootstrap.spec.unwrap().init_containers.is_none());
}

#[tokio::test]
async fn a_restored_member_without_the_operator_image_is_not_created() {
    let (client, _server) = ApiServer::client(NS);
    let rt = PodRuntime::for_cluster(client, &restored_cluster(pvc_spec())).unwrap();
    assert!(matches!(
        rt.objects
            .pod(&launch(0, InitialClusterState::New, &[0]), DataVolume::Pvc),
        Err(Error::MissingOperatorImage { .. })
    ));
}

#[tokio::test]
async fn a_garbled_restore_annotation_is_refused() {
    let (client, _server) = ApiServer::client(NS);
    let mut c = cluster(pvc_spec());
    c.metadata.annotations = Some(BTreeMap::from([(
        restore::ANNOTATION_RESTORE_SOURCE.to_string(),
        "{".to_string(),
    )]));
    assert!(matches!(
        PodRuntime::for_cluster(client, &c),
        Err(Error::ParseRestoreSource { .. })
    ));
}

/// Recovery from lost quorum: the member's Pod is deleted and waited for, and its PVC leaves
/// the cluster (no cluster label, no owner) with labels saying which recovery kept it.
#[tokio::test]
async fn set_aside_deletes_the_pod_and_takes_the_pvc_out_of_the_cluster() {
    let (rt, server) = runtime(pvc_spec());
    let pvc = serde_json::to_value(
        rt.objects
            .pvc(&launch(1, InitialClusterState::New, &[0, 1, 2]))
            .unwrap()
            .unwrap(),
    )
    .unwrap();
    let pod = with_uid_and_phase(
        rt.objects
            .pod(
                &launch(1, InitialClusterState::New, &[0, 1, 2]),
                DataVolume::Pvc,
            )
            .unwrap(),
        "Running",
    );
    let pod = serde_json::to_value(pod).unwrap();
    let server = server.run(|mut s| async move {
        s.expect(Method::GET, "/api/v1/namespaces/db/pods/example-1")
            .await
            .reply(&pod);
        s.expect(Method::DELETE, "/api/v1/namespaces/db/pods/example-1")
            .await
            .reply(&pod);
        s.expect(Method::GET, "/api/v1/namespaces/db/pods")
            .await
            .reply(&json!({
                "apiVersion": "v1", "kind": "PodList",
                "metadata": { "resourceVersion": "7" }, "items": [],
            }));
        s.expect(
            Method::GET,
            "/api/v1/namespaces/db/persistentvolumeclaims/example-1",
        )
        .await
        .reply(&pvc);
        let patch = s
            .expect(
                Method::PATCH,
                "/api/v1/namespaces/db/persistentvolumeclaims/example-1",
            )
            .await;
        assert_eq!(patch.content_type, "application/merge-patch+json");
        assert_eq!(
            patch.body,
            json!({ "metadata": {
                "labels": {
                    "etcd.operator.dev/cluster": null,
                    "etcd.operator.dev/kept-from": "example",
                    "etcd.operator.dev/kept-by-recovery": "20250610T073000Z",
                },
                "ownerReferences": null,
            } })
        );
        patch.reply(&pvc);
    });
    let kept = rt
        .set_aside(&cluster_ref(), "example-1", "20250610T073000Z")
        .await
        .unwrap();
    assert_eq!(kept.as_deref(), Some("pvc/example-1"));
    within_1s(server).await;
}

/// A rolled-back recovery gives the PVC back: the cluster's labels again, the kept ones
/// removed.
#[tokio::test]
async fn put_back_gives_the_kept_pvc_back_to_the_cluster() {
    let (rt, server) = runtime(pvc_spec());
    let mut kept = serde_json::to_value(
        rt.objects
            .pvc(&launch(1, InitialClusterState::New, &[0, 1, 2]))
            .unwrap()
            .unwrap(),
    )
    .unwrap();
    let labels = kept["metadata"]["labels"].as_object_mut().unwrap();
    labels.remove("etcd.operator.dev/cluster");
    labels.insert("etcd.operator.dev/kept-from".into(), json!("example"));
    let server = server.run(|mut s| async move {
        s.expect(
            Method::GET,
            "/api/v1/namespaces/db/persistentvolumeclaims/example-1",
        )
        .await
        .reply(&kept);
        let patch = s
            .expect(
                Method::PATCH,
                "/api/v1/namespaces/db/persistentvolumeclaims/example-1",
            )
            .await;
        let mut want = pvc_labels("example-1", "3.5.16");
        want["etcd.operator.dev/kept-from"] = Value::Null;
        want["etcd.operator.dev/kept-by-recovery"] = Value::Null;
        assert_eq!(patch.body["metadata"]["labels"], want);
        patch.reply(&kept);
    });
    rt.put_back(&cluster_ref(), "example-1", "pvc/example-1")
        .await
        .unwrap();
    within_1s(server).await;
    // Only a PVC of that member is put back.
    let (rt, server) = runtime(pvc_spec());
    let server = server.run(|_| async {});
    assert!(matches!(
        rt.put_back(&cluster_ref(), "example-1", "pvc/example-2")
            .await,
        Err(Error::NotKept { .. })
    ));
    within_1s(server).await;
}

/// The survivor's Pod is recreated on its PVC with `--force-new-cluster` after its flags;
/// the launch it records (on the Pod) stays the member's own, so a restart drops the flag.
#[tokio::test]
async fn force_new_cluster_recreates_the_pod_once_with_the_flag() {
    let (rt, server) = runtime(pvc_spec());
    let l = launch(0, InitialClusterState::New, &[0, 1, 2]);
    let pvc = serde_json::to_value(rt.objects.pvc(&l).unwrap().unwrap()).unwrap();
    let running = serde_json::to_value(with_uid_and_phase(bootstrap_pod(&rt), "Running")).unwrap();
    let plain = serde_json::to_value(bootstrap_pod(&rt)).unwrap();
    let server = server.run(|mut s| async move {
        s.expect(
            Method::GET,
            "/api/v1/namespaces/db/persistentvolumeclaims/example-0",
        )
        .await
        .reply(&pvc);
        s.expect(Method::GET, "/api/v1/namespaces/db/pods/example-0")
            .await
            .reply(&running);
        s.expect(Method::DELETE, "/api/v1/namespaces/db/pods/example-0")
            .await
            .reply(&running);
        s.expect(Method::GET, "/api/v1/namespaces/db/pods")
            .await
            .reply(&json!({
                "apiVersion": "v1", "kind": "PodList",
                "metadata": { "resourceVersion": "7" }, "items": [],
            }));
        let pod = s.expect(Method::POST, "/api/v1/namespaces/db/pods").await;
        let args = pod.body["spec"]["containers"][0]["args"]
            .as_array()
            .unwrap()
            .clone();
        assert_eq!(args.last().unwrap(), "--force-new-cluster");
        let mut without = pod.body.clone();
        without["spec"]["containers"][0]["args"]
            .as_array_mut()
            .unwrap()
            .pop();
        assert_eq!(without, plain, "the same Pod but for the one flag");
        assert!(
            !launch_annotation(&pod.body)
                .to_string()
                .contains("force-new-cluster")
        );
        pod.echo();
    });
    rt.force_new_cluster(&cluster_ref(), "example-0")
        .await
        .unwrap();
    within_1s(server).await;
}

/// The data of the cluster's four certificate Secrets holding `entries`, as the API server
/// returns them (the layout `certificates.rs` writes).
fn certificate_secrets(entries: &crate::certs::bundle::Entries) -> Vec<(String, Value)> {
    use crate::certs::bundle::*;
    use crate::certs::ca_rotation::{CA_NEXT_CERT, CA_NEXT_KEY};
    let layouts: [(&str, &[(&str, &str)]); 4] = [
        (
            "-ca",
            &[
                ("ca.crt", CA_CERT),
                ("ca.key", CA_KEY),
                ("ca-next.crt", CA_NEXT_CERT),
                ("ca-next.key", CA_NEXT_KEY),
            ],
        ),
        (
            "-member-tls",
            &[
                ("ca.crt", CA_CERT),
                ("server.crt", SERVER_CERT),
                ("server.key", SERVER_KEY),
                ("peer.crt", PEER_CERT),
                ("peer.key", PEER_KEY),
            ],
        ),
        (
            "-operator-tls",
            &[
                ("ca.crt", CA_CERT),
                ("tls.crt", OPERATOR_CERT),
                ("tls.key", OPERATOR_KEY),
            ],
        ),
        (
            "-client-tls",
            &[
                ("ca.crt", CA_CERT),
                ("tls.crt", CLIENT_CERT),
                ("tls.key", CLIENT_KEY),
            ],
        ),
    ];
    layouts
        .iter()
        .map(|(suffix, keys)| {
            let data: BTreeMap<String, k8s_openapi::ByteString> = keys
                .iter()
                .filter_map(|(key, entry)| {
                    entries.get(*entry).map(|pem| {
                        (
                            key.to_string(),
                            k8s_openapi::ByteString(pem.clone().into_bytes()),
                        )
                    })
                })
                .collect();
            let name = format!("{CLUSTER}{suffix}");
            let secret = k8s_openapi::api::core::v1::Secret {
                metadata: kube::api::ObjectMeta {
                    name: Some(name.clone()),
                    namespace: Some(NS.into()),
                    ..Default::default()
                },
                data: Some(data),
                ..Default::default()
            };
            (name, serde_json::to_value(secret).unwrap())
        })
        .collect()
}

/// A pass of a rotation that waits for members reads: the four certificate Secrets
/// (`secrets`), then the member Pods (`pods`) and PVCs (none).
async fn serve_rotation_reads(s: &mut ApiServer, secrets: &[(String, Value)], pods: &Value) {
    for (name, secret) in secrets {
        s.expect(
            Method::GET,
            &format!("/api/v1/namespaces/db/secrets/{name}"),
        )
        .await
        .reply(secret);
    }
    s.expect(Method::GET, "/api/v1/namespaces/db/pods")
        .await
        .reply(pods);
    s.expect(Method::GET, "/api/v1/namespaces/db/persistentvolumeclaims")
        .await
        .reply(&json!({"apiVersion": "v1", "kind": "PersistentVolumeClaimList", "metadata": {}, "items": []}));
}

/// A CA rotation waits in phase 1 until every member Pod records (in its trust-stamp
/// annotation) that it started on the bundle trusting both CAs; then the new CA signs.
/// Pods are listed only while a rotation waits.
#[tokio::test]
async fn a_ca_rotation_waits_for_every_member_pod_to_trust_both_cas() {
    use crate::certs::bundle::{Asked, Entries, Wanted, complete};
    use crate::certs::ca_rotation::{CA_NEXT_KEY, CaPhase, trust_stamp};
    let wanted = Wanted {
        cluster: CLUSTER.into(),
        names: runtime(pvc_spec()).0.objects.certificate_names(),
        leaf_lifetime: crate::certs::LEAF_LIFETIME,
        ca_lifetime: crate::certs::CA_LIFETIME,
    };
    let now = jiff::Timestamp::now();
    let (steady, _) = complete(&Entries::new(), &wanted, now, Asked::default(), true).unwrap();
    let asked = Asked {
        rotate_ca: true,
        ..Asked::default()
    };
    let (trusting, _) = complete(&steady, &wanted, now, asked, true).unwrap();
    let old = trust_stamp(&steady).unwrap();
    let both = trust_stamp(&trusting).unwrap();
    let pods_with = |rt: &PodRuntime, stamps: [&str; 3]| {
        let items: Vec<Pod> = stamps
            .iter()
            .enumerate()
            .map(|(o, stamp)| {
                let mut l = launch(
                    u32::try_from(o).unwrap(),
                    InitialClusterState::New,
                    &[0, 1, 2],
                );
                l.transport = Transport::Tls;
                let mut pod =
                    with_uid_and_phase(rt.objects.pod(&l, DataVolume::Pvc).unwrap(), "Running");
                pod.metadata
                    .annotations
                    .get_or_insert_default()
                    .insert(ANNOTATION_TRUST_STAMP.into(), stamp.to_string());
                pod
            })
            .collect();
        json!({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": items})
    };
    let source = CertificateSource::Issue {
        asked: Asked::default(),
    };

    // One Pod still on the old CA alone: nothing is written.
    let (rt, server) = runtime(pvc_spec());
    let (secrets, pods) = (
        certificate_secrets(&trusting),
        pods_with(&rt, [&both, &old, &both]),
    );
    let script = server.run(|mut s| async move {
        serve_rotation_reads(&mut s, &secrets, &pods).await;
    });
    let installed = rt
        .ensure_certificates(&cluster_ref(), source)
        .await
        .unwrap();
    within_1s(script).await;
    assert!(installed.issued.is_empty(), "{:?}", installed.issued);
    assert_eq!(installed.ca_phase, Some(CaPhase::TrustBoth));
    assert_eq!(installed.trust_stamp.as_deref(), Some(both.as_str()));

    // Every Pod trusts both: the new CA's key signs, every leaf is issued again.
    let (rt, server) = runtime(pvc_spec());
    let (secrets, pods) = (
        certificate_secrets(&trusting),
        pods_with(&rt, [&both, &both, &both]),
    );
    let next_key = trusting[CA_NEXT_KEY].clone();
    let script = server.run(|mut s| async move {
        serve_rotation_reads(&mut s, &secrets, &pods).await;
        for (name, _) in secrets {
            let call = s
                .expect(
                    Method::PATCH,
                    &format!("/api/v1/namespaces/db/secrets/{name}"),
                )
                .await;
            call.assert_apply();
            if name.ends_with("-ca") {
                let data = &call.body["data"];
                let key: k8s_openapi::ByteString =
                    serde_json::from_value(data["ca.key"].clone()).unwrap();
                assert_eq!(String::from_utf8(key.0).unwrap(), next_key);
                assert!(data.get("ca-next.key").is_none(), "{data}");
            }
            call.echo();
        }
    });
    let installed = rt
        .ensure_certificates(&cluster_ref(), source)
        .await
        .unwrap();
    within_1s(script).await;
    assert_eq!(installed.ca_phase, Some(CaPhase::IssueFromNew));
    assert_eq!(installed.issued.len(), 5, "{:?}", installed.issued);
    assert_ne!(installed.trust_stamp.as_deref(), Some(both.as_str()));
}

/// Moving a member's listeners to TLS: the launch on its PVC says TLS, the Pod is deleted
/// and waited for, and the next restart creates one with TLS listeners and the member
/// certificates mounted, on the same claim.
#[tokio::test]
async fn set_transport_records_the_launch_on_the_pvc_and_deletes_the_pod() {
    let (rt, server) = runtime(pvc_spec());
    let plain = launch(0, InitialClusterState::New, &[0, 1, 2]);
    let pvc = rt.objects.pvc(&plain).unwrap().unwrap();
    let tls = MemberLaunch {
        transport: Transport::Tls,
        ..plain.clone()
    };
    let moved_pvc = rt.objects.pvc(&tls).unwrap().unwrap();
    let running = with_uid_and_phase(bootstrap_pod(&rt), "Running");
    let expected = serde_json::to_value(rt.objects.pod(&tls, DataVolume::Pvc).unwrap()).unwrap();
    let server = server.run(|mut s| async move {
        let running = serde_json::to_value(&running).unwrap();
        s.expect(Method::GET, "/api/v1/namespaces/db/pods/example-0")
            .await
            .reply(&running);
        s.expect(
            Method::GET,
            "/api/v1/namespaces/db/persistentvolumeclaims/example-0",
        )
        .await
        .reply(&serde_json::to_value(&pvc).unwrap());
        let patch = s
            .expect(
                Method::PATCH,
                "/api/v1/namespaces/db/persistentvolumeclaims/example-0",
            )
            .await;
        assert_eq!(launch_annotation(&patch.body)["transport"], "Tls");
        patch.echo();
        s.expect(Method::DELETE, "/api/v1/namespaces/db/pods/example-0")
            .await
            .reply(&running);
        s.expect(Method::GET, "/api/v1/namespaces/db/pods")
            .await
            .reply(&json!({
                "apiVersion": "v1",
                "kind": "PodList",
                "metadata": { "resourceVersion": "7" },
                "items": [],
            }));
        // The restart after etcd's member update.
        s.expect(Method::GET, "/api/v1/namespaces/db/pods/example-0")
            .await
            .fail(StatusCode::NOT_FOUND, "NotFound");
        s.expect(
            Method::GET,
            "/api/v1/namespaces/db/persistentvolumeclaims/example-0",
        )
        .await
        .reply(&serde_json::to_value(&moved_pvc).unwrap());
        let pod = s.expect(Method::POST, "/api/v1/namespaces/db/pods").await;
        assert_eq!(pod.body, expected);
        pod.echo();
    });
    let address = rt
        .set_transport(&cluster_ref(), "example-0", Transport::Tls)
        .await
        .unwrap();
    assert_eq!(address.peer_url, "https://example-0.example.db.svc:2380");
    assert_eq!(address.client_url, "https://example-0.example.db.svc:2379");
    rt.restart(&cluster_ref(), "example-0", None).await.unwrap();
    within_1s(server).await;
    let args = serde_json::to_value(rt.objects.pod(&tls, DataVolume::Pvc).unwrap()).unwrap()
        ["spec"]["containers"][0]["args"]
        .to_string();
    assert!(
        args.contains("--listen-peer-urls=https://0.0.0.0:2380"),
        "{args}"
    );
    assert!(args.contains("--peer-client-cert-auth=true"), "{args}");
}

/// A plaintext member dialling TLS peers mounts the member certificates and names only the
/// peer certificate and CA; its listeners and readiness probe stay plaintext.
#[tokio::test]
async fn a_plaintext_pod_dialling_tls_peers_mounts_the_certificates() {
    let (rt, _server) = runtime(pvc_spec());
    let dialing = MemberLaunch {
        transport: Transport::PlainDialingTls,
        ..launch(0, InitialClusterState::Existing, &[0, 1, 2])
    };
    let pod = serde_json::to_value(rt.objects.pod(&dialing, DataVolume::Pvc).unwrap()).unwrap();
    let container = &pod["spec"]["containers"][0];
    let args: Vec<String> = serde_json::from_value(container["args"].clone()).unwrap();
    assert!(args.contains(&"--listen-peer-urls=http://0.0.0.0:2380".to_string()));
    assert!(args.iter().any(|a| a.starts_with("--peer-cert-file=")));
    assert!(
        args.iter()
            .any(|a| a.starts_with("--peer-trusted-ca-file="))
    );
    assert!(
        !args.iter().any(|a| a.contains("client-cert-auth")),
        "{args:?}"
    );
    assert!(
        !args.iter().any(|a| a.starts_with("--cert-file=")),
        "{args:?}"
    );
    let mounts = container["volumeMounts"].to_string();
    assert!(mounts.contains("/etc/etcd/tls"), "{mounts}");
    assert!(
        pod["spec"]["volumes"]
            .to_string()
            .contains("example-member-tls"),
        "{}",
        pod["spec"]["volumes"]
    );
    assert_eq!(container["readinessProbe"]["httpGet"]["port"], 2379);
}
