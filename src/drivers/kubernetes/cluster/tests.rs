//! [`reconcile`] against a mocked API server (no etcd is reachable, so observation sees no
//! etcd view), and the pure parts: requeue and backoff choices, Events.

use std::sync::Arc;
use std::time::Duration;

use http::Method;
use serde_json::{Value, json};

use super::*;
use crate::api::EtcdClusterSpec;
use crate::plan::WaitReason;
use crate::testing::api_server::{ApiServer, within_1s};

const NS: &str = "db";

fn cluster(spec: EtcdClusterSpec) -> EtcdCluster {
    let mut c = EtcdCluster::new("example", spec);
    c.metadata.namespace = Some(NS.into());
    c.metadata.uid = Some("uid-1".into());
    c.metadata.generation = Some(1);
    c
}

fn context(client: Client) -> Arc<Context> {
    Arc::new(Context::new(
        client,
        Policy::default(),
        Metrics::new(),
        Reporter {
            controller: "etcd-operator".into(),
            instance: Some("etcd-operator-0".into()),
        },
    ))
}

fn empty_list(kind: &str) -> Value {
    json!({ "apiVersion": "v1", "kind": kind, "metadata": { "resourceVersion": "1" }, "items": [] })
}

/// The cluster the API server returns after a status apply of `patch`.
fn stored(patch: &Value) -> Value {
    let mut c = serde_json::to_value(cluster(EtcdClusterSpec::new(3, "3.5.16"))).unwrap();
    c["status"] = patch["status"].clone();
    c
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

#[tokio::test]
async fn a_fresh_cluster_is_bootstrapped_and_its_status_applied() {
    let (client, server) = ApiServer::client(NS);
    let ctx = context(client);
    let server = server.run(|mut s| async move {
        // TLS by default: the CA and certificates first, in four Secrets.
        let secrets = s.serve_new_certificates("db", "example").await;
        let member = &secrets[1];
        // The API server requires tls.crt and tls.key of a kubernetes.io/tls Secret.
        assert_eq!(member["type"], "Opaque");
        assert_eq!(secrets[0]["type"], "Opaque");
        assert_eq!(secrets[3]["type"], "kubernetes.io/tls");
        let keys: Vec<&String> = member["data"].as_object().unwrap().keys().collect();
        assert_eq!(keys, ["ca.crt", "peer.crt", "peer.key", "server.crt", "server.key"]);
        assert!(
            secrets[0]["data"].get("ca.key").is_some()
                && secrets.iter().skip(1).all(|s| s["data"].get("ca.key").is_none()),
            "only the CA Secret holds the CA key"
        );
        assert_eq!(secrets[3]["metadata"]["ownerReferences"][0]["uid"], "uid-1");
        // What a member Pod mounts, as its trust stamp (the CAs trusted and the issuer).
        let pem = |key: &str| {
            let bytes: k8s_openapi::ByteString =
                serde_json::from_value(member["data"][key].clone()).unwrap();
            String::from_utf8(bytes.0).unwrap()
        };
        let mounted: crate::certs::bundle::Entries = ["ca.crt", "server.crt"]
            .into_iter()
            .map(|k| (k.to_string(), pem(k)))
            .collect();
        let stamp = crate::certs::ca_rotation::trust_stamp(&mounted).unwrap();
        assert!(stamp.ends_with("-0"), "{stamp}: signed by the one CA");
        s.expect(Method::GET, "/api/v1/namespaces/db/pods")
            .await
            .reply(&empty_list("PodList"));
        s.expect(Method::GET, "/api/v1/namespaces/db/persistentvolumeclaims")
            .await
            .reply(&empty_list("PersistentVolumeClaimList"));
        // Services and PDB once per pass, then one PVC (the default storage) and one Pod
        // per member, all with one token.
        for path in [
            "/api/v1/namespaces/db/services/example",
            "/api/v1/namespaces/db/services/example-client",
            "/apis/policy/v1/namespaces/db/poddisruptionbudgets/example",
        ] {
            let call = s.expect(Method::PATCH, path).await;
            call.assert_apply();
            call.echo();
        }
        let mut tokens = Vec::new();
        for ordinal in 0..3 {
            let pvc = s
                .expect(Method::POST, "/api/v1/namespaces/db/persistentvolumeclaims")
                .await;
            assert_eq!(pvc.body["metadata"]["name"], format!("example-{ordinal}"));
            assert_eq!(
                pvc.body["spec"]["resources"]["requests"]["storage"],
                "8Gi"
            );
            pvc.echo();
            let pod = s.expect(Method::POST, "/api/v1/namespaces/db/pods").await;
            assert_eq!(pod.body["metadata"]["name"], format!("example-{ordinal}"));
            let args: Vec<String> =
                serde_json::from_value(pod.body["spec"]["containers"][0]["args"].clone()).unwrap();
            assert!(args.contains(&"--initial-cluster-state=new".to_string()));
            assert!(args.contains(&"--initial-cluster=example-0=https://example-0.example.db.svc:2380,example-1=https://example-1.example.db.svc:2380,example-2=https://example-2.example.db.svc:2380".to_string()));
            for flag in [
                "--client-cert-auth=true",
                "--peer-client-cert-auth=true",
                "--trusted-ca-file=/etc/etcd/tls/ca.crt",
                "--listen-metrics-urls=http://0.0.0.0:2381",
            ] {
                assert!(args.contains(&flag.to_string()), "{flag} in {args:?}");
            }
            let spec = &pod.body["spec"];
            assert_eq!(spec["volumes"][1]["secret"]["secretName"], "example-member-tls");
            assert_eq!(
                spec["containers"][0]["volumeMounts"][1]["mountPath"],
                "/etc/etcd/tls"
            );
            assert_eq!(
                spec["containers"][0]["readinessProbe"]["httpGet"]["port"],
                2381
            );
            assert_eq!(
                pod.body["metadata"]["annotations"][crate::runtime::pods::ANNOTATION_TRUST_STAMP],
                stamp.as_str(),
                "a Pod records what it mounts"
            );
            tokens.extend(
                args.iter()
                    .filter(|a| a.starts_with("--initial-cluster-token="))
                    .cloned(),
            );
            pod.echo();
        }
        tokens.dedup();
        assert_eq!(tokens.len(), 1, "{tokens:?}");

        let status = s
            .expect(
                Method::PATCH,
                "/apis/etcd.operator.dev/v1alpha1/namespaces/db/etcdclusters/example/status",
            )
            .await;
        status.assert_apply();
        assert_eq!(status.body["apiVersion"], "etcd.operator.dev/v1alpha1");
        assert_eq!(status.body["kind"], "EtcdCluster");
        let mut st = without_times(status.body["status"].clone());
        let tls = st.as_object_mut().unwrap().remove("tls").unwrap();
        assert_eq!(tls["clientCertificate"], "secret/example-client-tls");
        let names: Vec<&str> = tls["certificates"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["ca", "client", "operator", "peer", "server"]);
        let conditions = st["conditions"].as_array_mut().unwrap();
        let tls_condition = conditions.pop().unwrap();
        assert_eq!(tls_condition["type"], "TLS");
        assert_eq!(tls_condition["reason"], "Pending");
        assert_eq!(
            st,
            json!({
                "phase": "Creating",
                "observedGeneration": 1,
                "readyMembers": 0,
                "targetVersion": "3.5.16",
                "conditions": [
                    {
                        "type": "SpecValid",
                        "status": "True",
                        "reason": "Valid",
                        "message": "spec is valid",
                        "observedGeneration": 1,
                    },
                    {
                        "type": "Available",
                        "status": "False",
                        "reason": "QuorumUnavailable",
                        "message": "0 of 0 voting members healthy",
                        "observedGeneration": 1,
                    },
                    {
                        "type": "Progressing",
                        "status": "True",
                        "reason": "Bootstrapping",
                        "message": "bootstrap example-0, example-1, example-2 at 3.5.16",
                        "observedGeneration": 1,
                    },
                    {
                        "type": "Degraded",
                        "status": "False",
                        "reason": "AllHealthy",
                        "message": "",
                        "observedGeneration": 1,
                    },
                ],
            })
        );
        let body = stored(&status.body);
        status.reply(&body);

        s.expect_certificates_issued_event("db").await;
        let event = s
            .expect(Method::POST, "/apis/events.k8s.io/v1/namespaces/db/events")
            .await;
        assert_eq!(event.body["type"], "Normal");
        assert_eq!(event.body["reason"], "Bootstrapping");
        assert_eq!(event.body["action"], "Bootstrapping");
        assert_eq!(event.body["regarding"]["kind"], "EtcdCluster");
        assert_eq!(event.body["regarding"]["name"], "example");
        assert_eq!(event.body["reportingController"], "etcd-operator");
        event.echo();
    });
    let action = reconcile(
        Arc::new(cluster(EtcdClusterSpec::new(3, "3.5.16"))),
        ctx.clone(),
    )
    .await
    .unwrap();
    within_1s(server).await;
    assert_eq!(action, Action::requeue(AFTER_STEP));
    assert!(
        ctx.metrics
            .encode()
            .contains("etcd_operator_steps_total{step=\"Bootstrapping\"} 1")
    );
}

#[tokio::test]
async fn an_invalid_spec_writes_its_status_then_waits_for_a_change() {
    let (client, server) = ApiServer::client(NS);
    let ctx = context(client);
    let server = server.run(|mut s| async move {
        // Nothing is listed or created for an invalid spec: straight to the status.
        let status = s
            .expect(
                Method::PATCH,
                "/apis/etcd.operator.dev/v1alpha1/namespaces/db/etcdclusters/example/status",
            )
            .await;
        assert_eq!(status.body["status"]["phase"], "Failed");
        assert_eq!(status.body["status"]["conditions"][0]["status"], "False");
        let body = stored(&status.body);
        status.reply(&body);
        let event = s
            .expect(Method::POST, "/apis/events.k8s.io/v1/namespaces/db/events")
            .await;
        assert_eq!(event.body["type"], "Warning");
        assert_eq!(event.body["reason"], "InvalidSpec");
        event.echo();
    });
    let action = reconcile(Arc::new(cluster(EtcdClusterSpec::new(3, "3.9.0"))), ctx)
        .await
        .unwrap();
    within_1s(server).await;
    assert_eq!(action, Action::await_change());
}

#[tokio::test]
async fn pvcs_retained_from_an_earlier_cluster_block_it_with_a_condition_and_an_event() {
    let (client, server) = ApiServer::client(NS);
    let ctx = context(client);
    let server = server.run(|mut s| async move {
        s.serve_new_certificates("db", "example").await;
        s.expect(Method::GET, "/api/v1/namespaces/db/pods")
            .await
            .reply(&empty_list("PodList"));
        // example-0's PVC, left by the deleted cluster `example` of uid `uid-0`.
        let old = json!({
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {
                "name": "example-0",
                "namespace": "db",
                "labels": {
                    "etcd.operator.dev/cluster": "example",
                    "etcd.operator.dev/cluster-uid": "uid-0",
                    "etcd.operator.dev/member": "example-0",
                    "etcd.operator.dev/version": "3.5.16",
                },
            },
        });
        let mut list = empty_list("PersistentVolumeClaimList");
        list["items"] = json!([old]);
        s.expect(Method::GET, "/api/v1/namespaces/db/persistentvolumeclaims")
            .await
            .reply(&list);
        // Nothing is created: straight to the status.
        let status = s
            .expect(
                Method::PATCH,
                "/apis/etcd.operator.dev/v1alpha1/namespaces/db/etcdclusters/example/status",
            )
            .await;
        let st = &status.body["status"];
        assert_eq!(st["phase"], "Degraded");
        let degraded = st["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == "Degraded")
            .unwrap()
            .clone();
        assert_eq!(degraded["status"], "True");
        assert_eq!(degraded["reason"], "RetainedVolumesFound");
        assert!(
            degraded["message"].as_str().unwrap().contains("example-0"),
            "{degraded}"
        );
        let body = stored(&status.body);
        status.reply(&body);
        s.expect_certificates_issued_event("db").await;
        let event = s
            .expect(Method::POST, "/apis/events.k8s.io/v1/namespaces/db/events")
            .await;
        assert_eq!(event.body["type"], "Warning");
        assert_eq!(event.body["reason"], "RetainedVolumesFound");
        event.echo();
    });
    let action = reconcile(Arc::new(cluster(EtcdClusterSpec::new(3, "3.5.16"))), ctx)
        .await
        .unwrap();
    within_1s(server).await;
    // Deleting the PVCs (a watched change) or the resync lets it go on.
    assert_eq!(action, Action::requeue(RESYNC));
}

#[tokio::test]
async fn a_cluster_being_deleted_is_left_to_the_garbage_collector() {
    let (client, server) = ApiServer::client(NS);
    let ctx = context(client);
    let server = server.run(|_| async {});
    let mut c = cluster(EtcdClusterSpec::new(3, "3.5.16"));
    c.metadata.deletion_timestamp = Some(crate::api::condition::now());
    let action = reconcile(Arc::new(c), ctx).await.unwrap();
    within_1s(server).await;
    assert_eq!(action, Action::await_change());
}

#[tokio::test]
async fn failures_back_off_by_kind_and_double_until_a_success() {
    let (client, _server) = ApiServer::client(NS);
    let ctx = context(client);
    let c = Arc::new(cluster(EtcdClusterSpec::new(3, "3.5.16")));
    let status_failed = || {
        Error::PatchStatus(kube::Error::Api(Box::new(kube::core::Status::failure(
            "conflict", "Conflict",
        ))))
    };
    // Back to back (a burst of watch events): one failure, not three (the doubling per
    // failure apart is `Failures`' own test).
    let delays: Vec<Action> = (0..3)
        .map(|_| error_policy(c.clone(), &status_failed(), ctx.clone()))
        .collect();
    assert_eq!(
        delays,
        [5, 5, 5].map(|s| Action::requeue(Duration::from_secs(s)))
    );
    let invalid = Error::Step(crate::reconcile::Error::InvalidVersion {
        version: "x".into(),
        source: semver::Version::parse("x").unwrap_err(),
    });
    assert_eq!(
        error_policy(c.clone(), &invalid, ctx.clone()),
        Action::await_change()
    );
    assert!(
        ctx.metrics
            .encode()
            .contains("etcd_operator_reconcile_errors_total{error=\"PatchStatus\"} 3")
    );
    assert_eq!(backoff(Duration::from_secs(5), 40), MAX_BACKOFF);
}

#[test]
fn waits_come_back_sooner_than_settled_clusters() {
    let wait = Step::Wait {
        reason: WaitReason::MemberStarting {
            name: crate::plan::MemberName::new("example", 0),
            remaining: Duration::from_secs(10),
        },
    };
    assert_eq!(next_pass(&wait), Action::requeue(WHILE_WAITING));
    assert_eq!(next_pass(&Step::Done), Action::requeue(RESYNC));
    assert_eq!(next_pass(&Step::Paused), Action::requeue(RESYNC));
}

#[test]
fn only_executed_failed_and_refused_steps_make_events() {
    assert!(event_for(&Step::Done, &Ok(Executed::Nothing)).is_none());
    assert!(event_for(&Step::Paused, &Ok(Executed::Nothing)).is_none());
    let failed = event_for(
        &Step::Done,
        &Err(crate::reconcile::Error::InvalidVersion {
            version: "x".into(),
            source: semver::Version::parse("x").unwrap_err(),
        }),
    )
    .unwrap();
    assert_eq!(failed.type_, EventType::Warning);
    assert_eq!(failed.reason, "InvalidVersionFailed");
}

/// The recover annotation wakes the controller like a spec change; a status write does not.
#[test]
fn the_recover_annotation_wakes_the_controller_and_a_status_write_does_not() {
    let mut c = cluster(EtcdClusterSpec::new(3, "3.5.16"));
    c.metadata.generation = Some(1);
    let before = generation_or_recover_annotation(&c);
    let mut status_only = c.clone();
    status_only.status = Some(crate::api::EtcdClusterStatus {
        ready_members: 3,
        ..Default::default()
    });
    assert_eq!(generation_or_recover_annotation(&status_only), before);
    let mut asked = c.clone();
    asked.metadata.annotations = Some(
        [(
            crate::api::recovery::RECOVER_ANNOTATION.to_string(),
            "fromSurvivor".to_string(),
        )]
        .into(),
    );
    assert_ne!(generation_or_recover_annotation(&asked), before);
    let mut newer = c.clone();
    newer.metadata.generation = Some(2);
    assert_ne!(generation_or_recover_annotation(&newer), before);
}

/// A recovery that ended in the pass gets an Event naming what it restored; one under way,
/// or a step that was not a recovery's, none.
#[test]
fn a_recovery_that_ended_makes_an_event_naming_what_it_restored() {
    use crate::api::recovery::{
        RecoveredBackup, RecoveryMode, RecoveryOutcome, RecoveryPhase, RecoveryRun, RecoveryStatus,
        RecoveryTrigger,
    };
    use crate::plan::recovery::RecoveryAction;
    let now = crate::api::condition::now();
    let run = RecoveryRun {
        mode: RecoveryMode::FromBackup,
        trigger: RecoveryTrigger::Spec,
        phase: RecoveryPhase::Ended,
        started_at: now.clone(),
        phase_since: None,
        serving_at: Some(now.clone()),
        finished_at: Some(now.clone()),
        outcome: Some(RecoveryOutcome::Succeeded),
        reason: None,
        message: None,
        quorum_lost_since: None,
        previous_cluster_id: Some("c1".into()),
        cluster_id: Some("d2".into()),
        survivor: None,
        survivor_raft_index: None,
        backup_name: Some("nightly".into()),
        backup: Some(RecoveredBackup {
            backup_name: "nightly".into(),
            bucket: "b".into(),
            key: "p/db/example/nightly/20250610T073000Z-rev42.db".into(),
            sha256: "00".repeat(32),
            revision: 42,
            taken_at: Some(now.clone()),
        }),
        revision: Some(42),
        members: vec![],
        token: None,
        kept: vec![],
    };
    let status = crate::api::EtcdClusterStatus {
        recovery: Some(RecoveryStatus {
            last_run: Some(run.clone()),
            recoveries: 1,
            ..Default::default()
        }),
        ..Default::default()
    };
    let finish = Step::Recover {
        mode: RecoveryMode::FromBackup,
        action: RecoveryAction::Finish,
    };
    let event = recovery_event(&finish, &Ok(Executed::Applied), &status).unwrap();
    assert_eq!(event.type_, EventType::Normal);
    assert_eq!(event.reason, "Recovered");
    let note = event.note.unwrap();
    assert!(
        note.contains("revision 42 from EtcdBackup nightly")
            && note.contains("s3://b/p/db/example/nightly/20250610T073000Z-rev42.db")
            && note.contains("cluster id c1 -> d2"),
        "{note}"
    );
    assert!(recovery_event(&Step::Done, &Ok(Executed::Nothing), &status).is_none());
    let mut running = status.clone();
    running.recovery.as_mut().unwrap().run = Some(run.clone());
    assert!(recovery_event(&finish, &Ok(Executed::Applied), &running).is_none());
    let mut failed = status;
    let last = failed.recovery.as_mut().unwrap().last_run.as_mut().unwrap();
    last.outcome = Some(RecoveryOutcome::Failed);
    last.reason = Some("BackupNotFound".into());
    last.message = Some("EtcdBackup nightly does not exist; nothing was changed".into());
    let event = recovery_event(&finish, &Ok(Executed::Applied), &failed).unwrap();
    assert_eq!(
        (event.type_, event.reason.as_str()),
        (EventType::Warning, "RecoveryFailed")
    );
}

/// A NOSPACE run in progress when every member is gone: the status keeps the run and the
/// Maintenance condition says what it waits for, next to the refusal (issue 14).
#[tokio::test]
async fn a_maintenance_run_in_progress_is_kept_and_explained_while_members_are_down() {
    use crate::api::maintenance::{
        DefragmentedMember, MaintenanceReason, MaintenanceRun, MaintenanceStatus,
    };
    let (client, server) = ApiServer::client(NS);
    let ctx = context(client);
    let mut c = cluster(EtcdClusterSpec::new(3, "3.5.16"));
    c.status = Some(crate::api::EtcdClusterStatus {
        cluster_id: Some("00000000000000c1".into()),
        maintenance: Some(MaintenanceStatus {
            run: Some(MaintenanceRun {
                reason: MaintenanceReason::NoSpace,
                started_at: crate::api::condition::now(),
                finished_at: None,
                compacted_revision: Some(812),
                defragmented: vec![DefragmentedMember {
                    name: "example-1".into(),
                    db_size_before: 16 << 20,
                }],
                reclaimed_bytes: None,
                outcome: None,
            }),
            ..Default::default()
        }),
        ..Default::default()
    });
    let server = server.run(|mut s| async move {
        s.serve_new_certificates("db", "example").await;
        s.expect(Method::GET, "/api/v1/namespaces/db/pods")
            .await
            .reply(&empty_list("PodList"));
        s.expect(Method::GET, "/api/v1/namespaces/db/persistentvolumeclaims")
            .await
            .reply(&empty_list("PersistentVolumeClaimList"));
        let status = s
            .expect(
                Method::PATCH,
                "/apis/etcd.operator.dev/v1alpha1/namespaces/db/etcdclusters/example/status",
            )
            .await;
        let st = status.body["status"].clone();
        let run = &st["maintenance"]["run"];
        assert_eq!(run["reason"], "NoSpace", "{st}");
        assert_eq!(run["compactedRevision"], 812);
        assert_eq!(run["defragmented"][0]["name"], "example-1");
        let maintenance = st["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == "Maintenance")
            .unwrap()
            .clone();
        assert_eq!(maintenance["status"], "True");
        assert_eq!(maintenance["reason"], "NoSpace");
        let message = maintenance["message"].as_str().unwrap();
        assert!(
            message.contains("waiting for every member")
                && message.contains("compacted to revision 812")
                && message.contains("defragmented example-1"),
            "{message}"
        );
        let body = stored(&status.body);
        status.reply(&body);
        s.expect_certificates_issued_event("db").await;
        let event = s
            .expect(Method::POST, "/apis/events.k8s.io/v1/namespaces/db/events")
            .await;
        assert_eq!(event.body["reason"], "AllMembersLost");
        event.echo();
    });
    reconcile(Arc::new(c), ctx).await.unwrap();
    within_1s(server).await;
}

#[test]
fn maintenance_steps_make_events_that_say_how_much_room_was_made() {
    use crate::api::maintenance::MaintenanceReason;
    use crate::plan::maintenance::MaintenanceAction;
    let finish = Step::Maintain {
        reason: MaintenanceReason::NoSpace,
        action: MaintenanceAction::Finish {
            defragmented: 3,
            reclaimed_bytes: 36 << 20,
            disarm: true,
            largest_db_size: 4 << 20,
            quota: 16 << 20,
        },
    };
    let event = event_for(&finish, &Ok(Executed::Applied)).unwrap();
    assert_eq!(event.type_, EventType::Normal);
    assert_eq!(event.reason, "NoSpaceResolved");
    let note = event.note.unwrap();
    assert!(
        note.contains("36.0 MiB reclaimed") && note.contains("16.0 MiB quota"),
        "{note}"
    );
    let no_room = Step::Blocked {
        reason: BlockReason::NoSpace {
            members: vec!["example-0".into()],
            largest_db_size: 15 << 20,
            quota: 16 << 20,
        },
    };
    let event = event_for(&no_room, &Ok(Executed::Nothing)).unwrap();
    assert_eq!(event.type_, EventType::Warning);
    assert_eq!(event.reason, "NoSpace");
    assert!(event.note.unwrap().contains("never raises"));
}

/// A cert-manager shaped Secret `name` in `db` as the API server returns it.
fn tls_secret(name: &str, cert: &str, key: &str, ca: &str) -> Value {
    use k8s_openapi::ByteString;
    let data = [("tls.crt", cert), ("tls.key", key), ("ca.crt", ca)]
        .into_iter()
        .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
        .collect();
    let mut secret = k8s_openapi::api::core::v1::Secret {
        data: Some(data),
        type_: Some("kubernetes.io/tls".into()),
        ..Default::default()
    };
    secret.metadata.name = Some(name.into());
    secret.metadata.namespace = Some(NS.into());
    let mut value = serde_json::to_value(secret).unwrap();
    value["apiVersion"] = "v1".into();
    value["kind"] = "Secret".into();
    value
}

fn with_provided_secrets(size: i32) -> EtcdCluster {
    let mut spec = EtcdClusterSpec::new(size, "3.5.16");
    spec.tls = Some(crate::api::tls::TlsSpec {
        secrets: Some(crate::api::tls::TlsSecrets {
            server: "db-server".into(),
            peer: "db-peer".into(),
            client: "db-client".into(),
            ca: None,
        }),
        ..Default::default()
    });
    cluster(spec)
}

#[tokio::test]
async fn provided_certificates_are_checked_and_copied_into_the_member_and_operator_secrets() {
    use crate::certs::{Authority, LeafKind, LeafRequest};
    let now = jiff::Timestamp::now();
    let ca =
        Authority::generate("user-ca", now, jiff::SignedDuration::from_hours(24 * 365)).unwrap();
    let leaf = |kind| {
        ca.issue(
            &LeafRequest {
                kind,
                common_name: "x".into(),
                names: vec![
                    "*.example.db.svc".into(),
                    "*.example.db.svc.cluster.local".into(),
                ],
                lifetime: jiff::SignedDuration::from_hours(24 * 90),
            },
            now,
        )
        .unwrap()
    };
    let (server, peer, client) = (
        leaf(LeafKind::Server),
        leaf(LeafKind::Peer),
        leaf(LeafKind::Client),
    );
    let ca_pem = ca.cert_pem.clone();
    let (client_cert, server_cert) = (client.cert_pem.clone(), server.cert_pem.clone());
    let (client_api, server_api) = ApiServer::client(NS);
    let ctx = context(client_api);
    let script = server_api.run(|mut s| async move {
        for (name, l) in [
            ("db-server", &server),
            ("db-peer", &peer),
            ("db-client", &client),
        ] {
            s.expect(
                Method::GET,
                &format!("/api/v1/namespaces/db/secrets/{name}"),
            )
            .await
            .reply(&tls_secret(name, &l.cert_pem, &l.key_pem, &ca.cert_pem));
        }
        s.own_certificate_secrets_missing("db", "example").await;
        // Only what members and the operator read; the operator's CA and application
        // Secrets are not made: the user's Secrets are those.
        let member = s
            .expect(
                Method::PATCH,
                "/api/v1/namespaces/db/secrets/example-member-tls",
            )
            .await;
        member.assert_apply();
        let data = &member.body["data"];
        let decode = |v: &Value| {
            let b: k8s_openapi::ByteString = serde_json::from_value(v.clone()).unwrap();
            String::from_utf8(b.0).unwrap()
        };
        assert_eq!(decode(&data["server.crt"]), server.cert_pem);
        assert_eq!(decode(&data["peer.key"]), peer.key_pem);
        assert_eq!(decode(&data["ca.crt"]), ca.cert_pem);
        member.echo();
        let operator = s
            .expect(
                Method::PATCH,
                "/api/v1/namespaces/db/secrets/example-operator-tls",
            )
            .await;
        assert_eq!(decode(&operator.body["data"]["tls.crt"]), client.cert_pem);
        operator.echo();
        s.expect(Method::GET, "/api/v1/namespaces/db/pods")
            .await
            .reply(&empty_list("PodList"));
        s.expect(Method::GET, "/api/v1/namespaces/db/persistentvolumeclaims")
            .await
            .reply(&empty_list("PersistentVolumeClaimList"));
        for path in [
            "/api/v1/namespaces/db/services/example",
            "/api/v1/namespaces/db/services/example-client",
            "/apis/policy/v1/namespaces/db/poddisruptionbudgets/example",
        ] {
            s.expect(Method::PATCH, path).await.echo();
        }
        s.expect(Method::POST, "/api/v1/namespaces/db/persistentvolumeclaims")
            .await
            .echo();
        let pod = s.expect(Method::POST, "/api/v1/namespaces/db/pods").await;
        assert_eq!(
            pod.body["spec"]["volumes"][1]["secret"]["secretName"],
            "example-member-tls"
        );
        pod.echo();
        let status = s
            .expect(
                Method::PATCH,
                "/apis/etcd.operator.dev/v1alpha1/namespaces/db/etcdclusters/example/status",
            )
            .await;
        let tls = &status.body["status"]["tls"];
        assert_eq!(tls["clientCertificate"], "secret/db-client");
        let body = stored(&status.body);
        status.reply(&body);
        let event = s
            .expect(Method::POST, "/apis/events.k8s.io/v1/namespaces/db/events")
            .await;
        assert_eq!(event.body["reason"], "Bootstrapping");
        event.echo();
    });
    reconcile(Arc::new(with_provided_secrets(1)), ctx)
        .await
        .unwrap();
    within_1s(script).await;
    // The certificates the test made are what it checked for.
    assert_ne!(client_cert, server_cert);
    assert!(ca_pem.contains("BEGIN CERTIFICATE"));
}

#[tokio::test]
async fn a_missing_provided_secret_starts_nothing_and_is_reported_with_an_event() {
    let (client_api, server_api) = ApiServer::client(NS);
    let ctx = context(client_api);
    let script = server_api.run(|mut s| async move {
        for name in ["db-server", "db-peer", "db-client"] {
            s.expect(
                Method::GET,
                &format!("/api/v1/namespaces/db/secrets/{name}"),
            )
            .await
            .fail(http::StatusCode::NOT_FOUND, "NotFound");
        }
        // Nothing installed either: the cluster is blocked.
        let status = nothing_installed_status(&mut s).await;
        let conditions = status.body["status"]["conditions"]
            .as_array()
            .unwrap()
            .clone();
        let tls = conditions.iter().find(|c| c["type"] == "TLS").unwrap();
        assert_eq!(tls["status"], "False");
        assert_eq!(tls["reason"], "InvalidCertificates");
        let message = tls["message"].as_str().unwrap();
        for name in ["db-server", "db-peer", "db-client"] {
            assert!(
                message.contains(&format!("Secret {name}: not found")),
                "{message}"
            );
        }
        let degraded = conditions.iter().find(|c| c["type"] == "Degraded").unwrap();
        assert_eq!(degraded["reason"], "InvalidCertificates");
        let body = stored(&status.body);
        status.reply(&body);
        for reason in ["InvalidCertificates", "InvalidCertificates"] {
            let event = s
                .expect(Method::POST, "/apis/events.k8s.io/v1/namespaces/db/events")
                .await;
            assert_eq!(event.body["type"], "Warning");
            assert_eq!(event.body["reason"], reason);
            assert!(
                event.body["note"]
                    .as_str()
                    .unwrap()
                    .contains("Secret db-peer: not found"),
                "{}",
                event.body
            );
            event.echo();
        }
    });
    reconcile(Arc::new(with_provided_secrets(3)), ctx)
        .await
        .unwrap();
    within_1s(script).await;
}

fn with_cert_manager(size: i32) -> EtcdCluster {
    let mut spec = EtcdClusterSpec::new(size, "3.5.16");
    spec.tls = Some(crate::api::tls::TlsSpec {
        cert_manager: Some(crate::api::tls::CertManagerTls {
            issuer_ref: crate::api::tls::IssuerRef {
                name: "ca-issuer".into(),
                kind: None,
                group: None,
            },
        }),
        ..Default::default()
    });
    cluster(spec)
}

/// A pass with no certificates installed and no member: the operator's own Secrets are
/// read and missing, Pods and PVCs listed, and nothing is written (no Secret, Service, PVC
/// or Pod) before the status apply, which is returned.
async fn nothing_installed_status(s: &mut ApiServer) -> crate::testing::api_server::Call {
    s.own_certificate_secrets_missing("db", "example").await;
    s.expect(Method::GET, "/api/v1/namespaces/db/pods")
        .await
        .reply(&empty_list("PodList"));
    s.expect(Method::GET, "/api/v1/namespaces/db/persistentvolumeclaims")
        .await
        .reply(&empty_list("PersistentVolumeClaimList"));
    s.expect(
        Method::PATCH,
        "/apis/etcd.operator.dev/v1alpha1/namespaces/db/etcdclusters/example/status",
    )
    .await
}

/// The TLS condition's reason and message in a status apply.
fn tls_condition(status: &Value) -> (String, String) {
    let conditions = status["status"]["conditions"].as_array().unwrap();
    let tls = conditions.iter().find(|c| c["type"] == "TLS").unwrap();
    (
        tls["reason"].as_str().unwrap().to_string(),
        tls["message"].as_str().unwrap().to_string(),
    )
}

#[tokio::test]
async fn without_cert_manager_installed_the_cluster_says_so_and_starts_nothing() {
    let (client_api, server_api) = ApiServer::client(NS);
    let ctx = context(client_api);
    let script = server_api.run(|mut s| async move {
        // The first Certificate apply finds no such resource: nothing else is asked of
        // cert-manager, and no user Secret is read.
        s.expect(
            Method::PATCH,
            "/apis/cert-manager.io/v1/namespaces/db/certificates/example-server",
        )
        .await
        .unknown_resource();
        let status = nothing_installed_status(&mut s).await;
        let (reason, message) = tls_condition(&status.body);
        assert_eq!(reason, "InvalidCertificates");
        assert!(
            message.contains("cert-manager is not installed"),
            "{message}"
        );
        let body = stored(&status.body);
        status.reply(&body);
        for _ in 0..2 {
            let event = s
                .expect(Method::POST, "/apis/events.k8s.io/v1/namespaces/db/events")
                .await;
            assert_eq!(event.body["type"], "Warning");
            event.echo();
        }
    });
    reconcile(Arc::new(with_cert_manager(3)), ctx)
        .await
        .unwrap();
    within_1s(script).await;
}

#[tokio::test]
async fn with_cert_manager_its_certificates_are_applied_and_their_secrets_read() {
    let (client_api, server_api) = ApiServer::client(NS);
    let ctx = context(client_api);
    let script = server_api.run(|mut s| async move {
        for role in ["server", "peer", "client"] {
            let call = s
                .expect(
                    Method::PATCH,
                    &format!("/apis/cert-manager.io/v1/namespaces/db/certificates/example-{role}"),
                )
                .await;
            call.assert_apply();
            assert_eq!(call.body["kind"], "Certificate");
            assert_eq!(
                call.body["spec"]["secretName"],
                format!("example-cm-{role}")
            );
            assert_eq!(call.body["spec"]["issuerRef"]["name"], "ca-issuer");
            assert_eq!(call.body["metadata"]["ownerReferences"][0]["uid"], "uid-1");
            if role == "peer" {
                assert_eq!(
                    call.body["spec"]["dnsNames"],
                    json!(["*.example.db.svc", "*.example.db.svc.cluster.local"])
                );
            }
            call.echo();
        }
        // cert-manager has not issued them yet: reported, nothing starts.
        for role in ["server", "peer", "client"] {
            s.expect(
                Method::GET,
                &format!("/api/v1/namespaces/db/secrets/example-cm-{role}"),
            )
            .await
            .fail(http::StatusCode::NOT_FOUND, "NotFound");
        }
        let status = nothing_installed_status(&mut s).await;
        let (reason, message) = tls_condition(&status.body);
        assert_eq!(reason, "InvalidCertificates");
        assert!(
            message.contains("Secret example-cm-server: not found"),
            "{message}"
        );
        let body = stored(&status.body);
        status.reply(&body);
        for _ in 0..2 {
            s.expect(Method::POST, "/apis/events.k8s.io/v1/namespaces/db/events")
                .await
                .echo();
        }
    });
    reconcile(Arc::new(with_cert_manager(3)), ctx)
        .await
        .unwrap();
    within_1s(script).await;
}
