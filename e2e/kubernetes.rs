//! The operator on a real Kubernetes cluster: install it from this repository's packaging,
//! then create a cluster of 3 (on the default storage, a PVC per member), delete it and see
//! its PVCs kept and not adopted, evict members through the PDB, scale it to 5 and back,
//! delete a member Pod (emptyDir: replaced; PVC: back as the same member), upgrade it
//! (3.4 -> 3.5) and pause it, each in its own namespace, waiting on conditions with
//! deadlines.
//!
//! Without `KUBECONFIG` it prints `skipped: KUBECONFIG is not set` and passes, so CI needs
//! no cluster. `OPERATOR_IMAGE` is the operator image to deploy (and checked to be the one
//! running). See `e2e/README.md` for the other variables.
//!
//! ```sh
//! KUBECONFIG=~/.kube/config OPERATOR_IMAGE=etcd-operator:dev \
//!   cargo test --test e2e_kubernetes -- --nocapture
//! ```

use std::future::Future;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use etcd_operator::api::cluster::{ClusterPhase, EmptyDirStorage, PvcStorage, StorageSpec};
use etcd_operator::api::condition;
use etcd_operator::api::restore::RestorePhase;
use etcd_operator::api::{EtcdCluster, EtcdClusterSpec, EtcdRestore};
use etcd_operator::backup::member_restore::EMPTY_SNAPSHOT;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{
    Namespace, PersistentVolumeClaim, Pod, ResourceQuota, Secret, Service,
};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{DeleteParams, EvictParams, ListParams, Patch, PatchParams, PostParams};
use kube::core::object::HasStatus;
use kube::{Api, Client, ResourceExt};
use serde_json::json;

const OPERATOR_NS: &str = "etcd-operator";
const CLUSTER: &str = "e2e";
/// The versions Debian packages (bookworm 3.4.23, trixie 3.5.16), so images of both can be
/// made on a machine without a registry; the upgrade crosses one minor version.
const FROM: &str = "3.4.23";
const TO: &str = "3.5.16";
/// Long enough to pull an etcd image and bootstrap on a slow CI node.
const DEADLINE: Duration = Duration::from_secs(300);
const POLL: Duration = Duration::from_secs(2);

#[tokio::test]
async fn kubernetes_scenarios() {
    if std::env::var_os("KUBECONFIG").is_none() {
        println!("skipped: KUBECONFIG is not set");
        return;
    }
    etcd_operator::tls_provider::install();
    let client = Client::try_default()
        .await
        .expect("KUBECONFIG is set but the cluster cannot be reached");
    install(&client).await;
    let keep = std::env::var("E2E_KEEP").as_deref() == Ok("1");
    let scenarios: [(&str, ScenarioFn); 30] = [
        ("create-three", create_three),
        ("tls-migrate", plaintext_to_tls_under_a_writer),
        ("tls-off", tls_to_plaintext_under_a_writer),
        ("tls-rotate", rotation_on_request_restarts_nothing),
        ("tls-rotate-ca", ca_rotation_under_a_writer),
        ("tls-cert-manager", cert_manager_certificates_are_served),
        ("tls-secrets", provided_certificates_are_served),
        ("recover-survivor", recovery_from_the_survivor),
        ("recover-backup", recovery_from_a_backup_in_place),
        ("defrag", scheduled_defrag_leader_last),
        ("nospace", nospace_is_handled_under_a_writer),
        ("idle-rate", an_idle_cluster_is_reconciled_by_requeue_only),
        ("delete-retains-pvcs", deleting_the_cluster_keeps_its_pvcs),
        ("evict", one_eviction_at_a_time),
        ("scale", scale_to_five_and_back),
        ("delete-pod", deleted_pod_is_replaced),
        ("delete-pod-pvc", deleted_pod_comes_back_on_its_pvc),
        ("upgrade", upgrade_patches_images_in_place),
        ("pause", paused_cluster_takes_no_step),
        ("restore-image", restore_runs_the_operators_own_image),
        (
            "restore-overwritten",
            an_object_overwritten_mid_restore_fails_it,
        ),
        ("ambient-refused", a_restore_without_a_secret_is_refused),
        ("all-members-lost", losing_every_member_is_not_a_new_cluster),
        ("no-adoption", pods_of_an_earlier_cluster_are_not_adopted),
        (
            "bootstrap-quota",
            a_bootstrap_stopped_by_a_quota_is_finished,
        ),
        ("restart-in-place", a_hung_member_is_restarted_on_its_pvc),
        ("rollback-lone", a_lone_member_rolls_back_by_spec),
        (
            "operator-restart",
            the_operator_restarted_mid_scale_up_resumes,
        ),
        ("backup-restore", a_scheduled_backup_restores_every_key),
        ("failed-pod", a_failed_pod_is_recreated_on_its_pvc),
    ];
    // E2E_SCENARIOS=a,b runs only those (by name); all when unset.
    let only = std::env::var("E2E_SCENARIOS").ok();
    let wanted = |name: &str| {
        only.as_deref()
            .is_none_or(|o| o.split(',').any(|w| w.trim() == name))
    };
    for (name, scenario) in scenarios.into_iter().filter(|(n, _)| wanted(n)) {
        let ns = format!("e2e-{name}");
        println!("scenario {name} in namespace {ns}");
        create_namespace(&client, &ns).await;
        let started = Instant::now();
        scenario(client.clone(), ns.clone()).await;
        let took = started.elapsed().as_secs_f64();
        if !keep {
            let _ = Api::<Namespace>::all(client.clone())
                .delete(&ns, &DeleteParams::default())
                .await;
        }
        println!("scenario {name}: ok in {took:.1}s");
    }
    if !keep {
        uninstall();
    }
}

type Scenario = std::pin::Pin<Box<dyn Future<Output = ()> + Send>>;
type ScenarioFn = fn(Client, String) -> Scenario;

fn create_three(client: Client, ns: String) -> Scenario {
    Box::pin(async move {
        let clusters = apply_cluster(&client, &ns, EtcdClusterSpec::new(3, FROM)).await;
        wait_running(&clusters, 3, FROM).await;
        let pods = member_pods(&client, &ns).await;
        assert_eq!(pods.len(), 3);
        for pod in &pods {
            assert_eq!(
                image_of(pod),
                format!("gcr.io/etcd-development/etcd:v{FROM}")
            );
        }
        let services: Api<Service> = Api::namespaced(client.clone(), &ns);
        assert!(services.get_opt(CLUSTER).await.unwrap().is_some());
        assert!(
            services
                .get_opt(&format!("{CLUSTER}-client"))
                .await
                .unwrap()
                .is_some()
        );
        let pdbs: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), &ns);
        assert!(pdbs.get_opt(CLUSTER).await.unwrap().is_some());
        etcdctl(&ns, &pods[0].name_any(), &["put", "e2e", "kept"]);
        let other = pods[2].name_any();
        assert!(etcdctl(&ns, &other, &["get", "e2e", "--print-value-only"]).contains("kept"));
        assert_serves_tls_only(&client, &clusters, &ns, &pods[1].name_any()).await;
    })
}

/// The application identity in the cluster's `<cluster>-client-tls` Secret.
async fn client_identity(client: &Client, ns: &str) -> etcd_operator::etcd::TlsConfig {
    let data = secret_data(client, ns, &format!("{CLUSTER}-client-tls")).await;
    let part = |k: &str| data.get(k).unwrap_or_else(|| panic!("{k}")).0.clone();
    etcd_operator::etcd::TlsConfig::new(part("ca.crt"), part("tls.crt"), part("tls.key"))
}

async fn secret_data(
    client: &Client,
    ns: &str,
    name: &str,
) -> std::collections::BTreeMap<String, k8s_openapi::ByteString> {
    let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(client.clone(), ns);
    let secret = secrets
        .get(name)
        .await
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    secret.data.unwrap_or_default()
}

/// `kubectl port-forward` to a Pod's port, on a free local port; stopped when dropped.
struct PortForward {
    child: std::process::Child,
    /// Kept open while forwarding: kubectl dies of SIGPIPE once nobody reads its output.
    _output: std::io::BufReader<std::process::ChildStdout>,
    port: u16,
}

impl PortForward {
    fn start(ns: &str, pod: &str, remote: u16) -> Self {
        let mut child = Command::new("kubectl")
            .args([
                "-n",
                ns,
                "port-forward",
                &format!("pod/{pod}"),
                &format!(":{remote}"),
            ])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("kubectl port-forward");
        let mut output = std::io::BufReader::new(child.stdout.take().unwrap());
        let port = {
            use std::io::BufRead as _;
            let mut line = String::new();
            output.read_line(&mut line).unwrap();
            // "Forwarding from 127.0.0.1:41234 -> 2379"
            line.split(" -> ")
                .next()
                .and_then(|l| l.rsplit(':').next())
                .and_then(|p| p.trim().parse::<u16>().ok())
                .unwrap_or_else(|| panic!("port-forward said {line:?}"))
        };
        Self {
            child,
            _output: output,
            port,
        }
    }
}

impl Drop for PortForward {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A rotation on request (`spec.tls.rotate`) issues every leaf again into the Secrets, and
/// members serve the new server certificate once the kubelet has refreshed their mounted
/// Secret, with no Pod restarted or recreated. Prints how long members took to serve it.
fn rotation_on_request_restarts_nothing(client: Client, ns: String) -> Scenario {
    Box::pin(async move {
        let clusters = apply_cluster(&client, &ns, EtcdClusterSpec::new(3, FROM)).await;
        wait_running(&clusters, 3, FROM).await;
        let before: Vec<(String, Option<String>, i32)> = member_pods(&client, &ns)
            .await
            .iter()
            .map(|p| {
                let restarts = p
                    .status
                    .as_ref()
                    .and_then(|s| s.container_statuses.as_ref())
                    .and_then(|c| c.first())
                    .map_or(0, |c| c.restart_count);
                (p.name_any(), p.uid(), restarts)
            })
            .collect();
        let pod = before[0].0.clone();
        let identity = client_identity(&client, &ns).await;
        let forward = PortForward::start(&ns, &pod, 2379);
        let address = format!("127.0.0.1:{}", forward.port);
        let old = etcd_operator::testing::tls::served_certificate(&address, "127.0.0.1", &identity)
            .expect("served before");
        clusters
            .patch(
                CLUSTER,
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"tls": {"rotate": "r1"}}})),
            )
            .await
            .expect("patch spec.tls.rotate");
        wait_for("status.tls.rotated r1", || async {
            status_of(&clusters, CLUSTER)
                .await
                .and_then(|s| s.tls)
                .and_then(|t| t.rotated)
                .as_deref()
                == Some("r1")
        })
        .await;
        let rotated_at = Instant::now();
        let member = secret_data(&client, &ns, &format!("{CLUSTER}-member-tls")).await;
        let new = etcd_operator::testing::tls::der_of(&member["server.crt"].0).unwrap();
        assert_ne!(new, old, "the Secret holds a new server certificate");
        let identity = client_identity(&client, &ns).await;
        wait_for("members serve the new server certificate", || async {
            etcd_operator::testing::tls::served_certificate(&address, "127.0.0.1", &identity)
                .is_ok_and(|served| served == new)
        })
        .await;
        println!(
            "rotation: members served the new certificate {:.1}s after it was issued",
            rotated_at.elapsed().as_secs_f64()
        );
        drop(forward);
        let after: Vec<(String, Option<String>, i32)> = member_pods(&client, &ns)
            .await
            .iter()
            .map(|p| {
                let restarts = p
                    .status
                    .as_ref()
                    .and_then(|s| s.container_statuses.as_ref())
                    .and_then(|c| c.first())
                    .map_or(0, |c| c.restart_count);
                (p.name_any(), p.uid(), restarts)
            })
            .collect();
        assert_eq!(before, after, "no member Pod restarted or recreated");
        etcdctl(&ns, &pod, &["put", "e2e", "after-rotation"]);
    })
}

/// A running plaintext 3-member cluster (`spec.tls.mode: Disabled`) moved to TLS by
/// dropping `spec.tls` (TLS is the default) under a writer: see [`move_under_a_writer`].
fn plaintext_to_tls_under_a_writer(client: Client, ns: String) -> Scenario {
    Box::pin(move_under_a_writer(client, ns, true))
}

/// A running TLS 3-member cluster (the default) set to `spec.tls.mode: Disabled` under a
/// writer: see [`move_under_a_writer`].
fn tls_to_plaintext_under_a_writer(client: Client, ns: String) -> Scenario {
    Box::pin(move_under_a_writer(client, ns, false))
}

/// A running 3-member cluster moved between plaintext and TLS (towards TLS when `to_tls`)
/// under a writer that puts over TLS where a member serves it, else plaintext: the `TLS`
/// condition passes through `MovingToTls` (`MovingToPlaintext`) to `Serving` (`Disabled`),
/// every member Pod is recreated on its PVC (towards plaintext, until none names a
/// certificate), the member list's six URLs all have the new scheme, the old one is
/// refused (plaintext served, towards plaintext), the PVCs are the same three, and every
/// acknowledged write is there.
async fn move_under_a_writer(client: Client, ns: String, to_tls: bool) {
    use etcd_operator::api::tls::{TlsMode, TlsSpec};
    let (label, moving, done_reason, scheme, old_scheme, patch) = if to_tls {
        (
            "tls-migrate",
            "MovingToTls",
            "Serving",
            "https://",
            "http://",
            json!({"spec": {"tls": null}}),
        )
    } else {
        (
            "tls-off",
            "MovingToPlaintext",
            "Disabled",
            "http://",
            "https://",
            json!({"spec": {"tls": {"mode": "Disabled"}}}),
        )
    };
    let mut spec = EtcdClusterSpec::new(3, TO);
    if to_tls {
        spec.tls = Some(TlsSpec {
            mode: TlsMode::Disabled,
            ..Default::default()
        });
    }
    let clusters = apply_cluster(&client, &ns, spec).await;
    wait_running(&clusters, 3, TO).await;
    let before: Vec<(String, Option<String>)> = member_pods(&client, &ns)
        .await
        .iter()
        .map(|p| (p.name_any(), p.uid()))
        .collect();
    let pod = before[0].0.clone();
    assert!(
        etcdctl(&ns, &pod, &["member", "list"]).contains(old_scheme),
        "{old_scheme} before"
    );
    let writer = ExecWriter::start_with(&ns, before.iter().map(|(n, _)| n.clone()).collect(), true);
    wait_for("the writer writes", || async { writer.acked_count() >= 5 }).await;
    let started = Instant::now();
    clusters
        .patch(CLUSTER, &PatchParams::default(), &Patch::Merge(patch))
        .await
        .expect("patch spec.tls");
    let mut reasons: Vec<String> = Vec::new();
    let until = Instant::now() + Duration::from_secs(900);
    loop {
        let st = status_of(&clusters, CLUSTER).await;
        if let Some(c) = st
            .as_ref()
            .and_then(|s| condition::find(&s.conditions, condition::types::TLS))
            && reasons.last() != Some(&c.reason)
        {
            println!(
                "{label}: {} at {:.1}s: {}",
                c.reason,
                started.elapsed().as_secs_f64(),
                c.message
            );
            reasons.push(c.reason.clone());
        }
        let pods = member_pods(&client, &ns).await;
        let moved = all_recreated(&pods, &before)
            && pods.iter().all(|p| {
                let names_certificate = p
                    .spec
                    .as_ref()
                    .and_then(|s| s.containers.first())
                    .and_then(|c| c.args.as_ref())
                    .is_some_and(|args| args.iter().any(|a| a.starts_with("--peer-cert-file")));
                to_tls || !names_certificate
            });
        let done = reasons.last().map(String::as_str) == Some(done_reason)
            && moved
            && st.as_ref().is_some_and(|s| running_with(s, 3));
        if done {
            break;
        }
        assert!(
            Instant::now() < until,
            "{label}: not finished in 900 s: reasons {reasons:?}, status {st:?}"
        );
        tokio::time::sleep(POLL).await;
    }
    let took = started.elapsed();
    let (acked, longest, missing) = writer.finish(&ns, &pod).await;
    println!(
        "{label}: moved in {:.1}s, reasons {reasons:?}; writer: {} acknowledged puts, longest stall {:.1}s, {} missing",
        took.as_secs_f64(),
        acked.len(),
        longest.as_secs_f64(),
        missing.len()
    );
    assert!(missing.is_empty(), "acknowledged writes lost: {missing:?}");
    assert!(reasons.iter().any(|r| r == moving), "{reasons:?}");
    let list = etcdctl(&ns, &pod, &["member", "list"]);
    assert_eq!(list.matches(scheme).count(), 6, "{list}");
    assert!(!list.contains(old_scheme), "{list}");
    let plain = Command::new("kubectl")
        .args(["-n", &ns, "exec", &pod, "-c", "etcd", "--", "etcdctl"])
        .args([
            "--endpoints=http://127.0.0.1:2379",
            "--dial-timeout=3s",
            "--command-timeout=3s",
            "put",
            "e2e",
            "plaintext",
        ])
        .output()
        .expect("run kubectl");
    assert_eq!(
        plain.status.success(),
        !to_tls,
        "plaintext served only off TLS"
    );
    let pvcs = Api::<PersistentVolumeClaim>::namespaced(client.clone(), &ns)
        .list(&ListParams::default())
        .await
        .expect("list pvcs");
    assert_eq!(pvcs.items.len(), 3);
}

/// Writes `w/<seq>` through `etcdctl` in the member Pods (each put in the next Pod that
/// answers, against its own member, with the certificates it mounts) until stopped;
/// returns the acknowledged keys and the longest time between two acknowledged puts.
struct ExecWriter {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    acked: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    thread: std::thread::JoinHandle<Duration>,
}

impl ExecWriter {
    fn start(ns: &str, pods: Vec<String>) -> Self {
        Self::start_with(ns, pods, false)
    }

    /// [`Self::start`]; with `plain_too`, a put refused over TLS is tried again plaintext
    /// (a member not yet moved to TLS).
    fn start_with(ns: &str, pods: Vec<String>, plain_too: bool) -> Self {
        use std::sync::atomic::Ordering;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let acked = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (ns, s, a) = (ns.to_string(), stop.clone(), acked.clone());
        let thread = std::thread::spawn(move || {
            let (mut seq, mut turn, mut longest) = (0u64, 0usize, Duration::ZERO);
            let mut last_ok = Instant::now();
            while !s.load(Ordering::Relaxed) {
                seq += 1;
                let key = format!("w/{seq:08}");
                let pod = &pods[turn % pods.len()];
                turn += 1;
                let ok = Command::new("kubectl")
                    .args(["-n", &ns, "exec", pod, "-c", "etcd", "--", "etcdctl"])
                    .args([
                        "--endpoints=https://127.0.0.1:2379",
                        "--cacert=/etc/etcd/tls/ca.crt",
                        "--cert=/etc/etcd/tls/server.crt",
                        "--key=/etc/etcd/tls/server.key",
                        "--command-timeout=3s",
                        "put",
                        &key,
                        "x",
                    ])
                    .output()
                    .is_ok_and(|o| o.status.success())
                    || (plain_too
                        && Command::new("kubectl")
                            .args(["-n", &ns, "exec", pod, "-c", "etcd", "--", "etcdctl"])
                            .args([
                                "--endpoints=http://127.0.0.1:2379",
                                "--command-timeout=3s",
                                "put",
                                &key,
                                "x",
                            ])
                            .output()
                            .is_ok_and(|o| o.status.success()));
                if ok {
                    longest = longest.max(last_ok.elapsed());
                    last_ok = Instant::now();
                    a.lock().unwrap().push(key);
                }
            }
            longest
        });
        Self {
            stop,
            acked,
            thread,
        }
    }

    fn acked_count(&self) -> usize {
        self.acked.lock().unwrap().len()
    }

    /// Waits for 5 more acknowledged puts, stops, and reads the keys back through member
    /// `pod`: the acknowledged keys, the longest stall, and the acknowledged keys missing.
    async fn finish(self, ns: &str, pod: &str) -> (Vec<String>, Duration, Vec<String>) {
        let target = self.acked_count() + 5;
        wait_for("puts after the change", || async {
            self.acked_count() >= target
        })
        .await;
        let (acked, longest) = self.stop();
        let stored = etcdctl(ns, pod, &["get", "--prefix", "w/", "--keys-only"]);
        let stored: std::collections::BTreeSet<&str> =
            stored.lines().filter(|l| !l.is_empty()).collect();
        let missing = acked
            .iter()
            .filter(|k| !stored.contains(k.as_str()))
            .cloned()
            .collect();
        (acked, longest, missing)
    }

    fn stop(self) -> (Vec<String>, Duration) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let longest = self.thread.join().expect("writer thread");
        let acked = std::mem::take(&mut *self.acked.lock().unwrap());
        (acked, longest)
    }
}

/// `spec.tls.rotateCA` on a running 3-member cluster under a writer: three phases
/// (TrustBoth, IssueFromNew, DropOld), each a rolling restart that recreates every member
/// Pod on its PVC; afterwards the Secrets trust the new CA alone, every member serves it,
/// and every acknowledged write is there.
fn ca_rotation_under_a_writer(client: Client, ns: String) -> Scenario {
    Box::pin(async move {
        let clusters = apply_cluster(&client, &ns, EtcdClusterSpec::new(3, TO)).await;
        wait_running(&clusters, 3, TO).await;
        let before: Vec<(String, Option<String>)> = member_pods(&client, &ns)
            .await
            .iter()
            .map(|p| (p.name_any(), p.uid()))
            .collect();
        let old_ca = secret_data(&client, &ns, &format!("{CLUSTER}-ca")).await["ca.crt"]
            .0
            .clone();
        let writer = ExecWriter::start(&ns, before.iter().map(|(n, _)| n.clone()).collect());
        wait_for("the writer writes", || async { writer.acked_count() >= 5 }).await;
        let started = Instant::now();
        clusters
            .patch(
                CLUSTER,
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"tls": {"rotateCA": "c1"}}})),
            )
            .await
            .expect("patch spec.tls.rotateCA");
        let mut phases: Vec<String> = Vec::new();
        let until = Instant::now() + Duration::from_secs(900);
        loop {
            let st = status_of(&clusters, CLUSTER).await;
            let tls = st.as_ref().and_then(|s| s.tls.clone()).unwrap_or_default();
            if let Some(p) = &tls.ca_rotation
                && phases.last() != Some(p)
            {
                println!(
                    "tls-rotate-ca: {p} at {:.1}s",
                    started.elapsed().as_secs_f64()
                );
                phases.push(p.clone());
            }
            let pods = member_pods(&client, &ns).await;
            let recreated = all_recreated(&pods, &before);
            let done = tls.ca_rotated.as_deref() == Some("c1")
                && tls.ca_rotation.is_none()
                && recreated
                && st.as_ref().is_some_and(|s| running_with(s, 3));
            if done {
                break;
            }
            assert!(
                Instant::now() < until,
                "CA rotation not finished in 900 s: phases {phases:?}, status {st:?}"
            );
            tokio::time::sleep(POLL).await;
        }
        let took = started.elapsed();
        // A few more puts on the new CA before stopping the writer.
        let pod = before[0].0.clone();
        let (acked, longest, missing) = writer.finish(&ns, &pod).await;
        println!(
            "tls-rotate-ca: rotated in {:.1}s, phases {phases:?}; writer: {} acknowledged puts, longest stall {:.1}s, {} missing",
            took.as_secs_f64(),
            acked.len(),
            longest.as_secs_f64(),
            missing.len()
        );
        assert!(missing.is_empty(), "acknowledged writes lost: {missing:?}");
        assert_eq!(phases, ["TrustBoth", "IssueFromNew", "DropOld"]);
        for phase in ["CA rotation 1/3", "CA rotation 2/3", "CA rotation 3/3"] {
            assert!(
                events_mentioning(&client, &ns, phase).await,
                "an Event says {phase}"
            );
        }
        // The new CA alone is trusted and signs what members serve.
        let member = secret_data(&client, &ns, &format!("{CLUSTER}-member-tls")).await;
        let ca = String::from_utf8(member["ca.crt"].0.clone()).unwrap();
        assert_eq!(
            etcd_operator::certs::ca_rotation::split_certificates(&ca).len(),
            1
        );
        assert_ne!(ca.as_bytes(), old_ca.as_slice());
        let ca_secret = secret_data(&client, &ns, &format!("{CLUSTER}-ca")).await;
        assert!(!ca_secret.contains_key("ca-next.crt"));
        let identity = client_identity(&client, &ns).await;
        let forward = PortForward::start(&ns, &pod, 2379);
        let address = format!("127.0.0.1:{}", forward.port);
        let served =
            etcd_operator::testing::tls::served_certificate(&address, "127.0.0.1", &identity)
                .expect("served with the new client certificate");
        drop(forward);
        let server = &member["server.crt"].0;
        assert_eq!(
            served,
            etcd_operator::testing::tls::der_of(server).unwrap(),
            "{pod} serves the Secret's server certificate"
        );
        let facts = etcd_operator::certs::inspect_pem(server, "server.crt").expect("server.crt");
        assert!(facts.signed_by(ca.as_bytes()).unwrap());
        assert!(!facts.signed_by(&old_ca).unwrap());
    })
}

/// A CA and leaves made outside the operator, the way cert-manager would make them for
/// the cluster (`*.<cluster>.<ns>.svc`).
struct UserPki {
    ca: etcd_operator::certs::Authority,
    names: Vec<String>,
}

impl UserPki {
    fn new(ns: &str) -> Self {
        let now = jiff::Timestamp::now();
        let ca = etcd_operator::certs::Authority::generate(
            "user-ca",
            now,
            jiff::SignedDuration::from_hours(24 * 365),
        )
        .expect("CA");
        Self {
            ca,
            // What the operator requires: the dialled name, and (peers) the name a Pod IP
            // resolves back to.
            names: vec![
                format!("*.{CLUSTER}.{ns}.svc"),
                format!("*.{CLUSTER}.{ns}.svc.cluster.local"),
            ],
        }
    }

    fn leaf(&self, kind: etcd_operator::certs::LeafKind) -> etcd_operator::certs::IssuedLeaf {
        let names = match kind {
            etcd_operator::certs::LeafKind::Client => Vec::new(),
            _ => self.names.clone(),
        };
        self.ca
            .issue(
                &etcd_operator::certs::LeafRequest {
                    kind,
                    common_name: "user".into(),
                    names,
                    lifetime: jiff::SignedDuration::from_hours(24 * 90),
                },
                jiff::Timestamp::now(),
            )
            .expect("leaf")
    }
}

/// Creates or replaces the cert-manager shaped Secret `name`.
async fn put_tls_secret(client: &Client, ns: &str, name: &str, cert: &str, key: &str, ca: &str) {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let secret: Secret = serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name},
        "type": "kubernetes.io/tls",
        "stringData": {"tls.crt": cert, "tls.key": key, "ca.crt": ca},
    }))
    .unwrap();
    secrets
        .patch(
            name,
            &PatchParams::apply("e2e").force(),
            &Patch::Apply(&secret),
        )
        .await
        .expect("apply Secret");
}

/// A minimal `certificates.cert-manager.io` CRD (any fields kept): enough for the API
/// server to store the Certificates the operator applies, with no cert-manager running.
const CERTIFICATE_CRD: &str = r#"{
  "apiVersion": "apiextensions.k8s.io/v1",
  "kind": "CustomResourceDefinition",
  "metadata": {"name": "certificates.cert-manager.io"},
  "spec": {
    "group": "cert-manager.io",
    "names": {"kind": "Certificate", "listKind": "CertificateList", "plural": "certificates", "singular": "certificate"},
    "scope": "Namespaced",
    "versions": [{"name": "v1", "served": true, "storage": true,
      "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}]
  }
}"#;

/// The `certManager` source (issue 12) on a cluster without cert-manager: first the TLS
/// condition says cert-manager is not installed and nothing starts; once a Certificate CRD
/// exists the operator applies its three Certificates, and the test plays cert-manager
/// (issues each from its own CA with the names and usages the Certificate asks for, into
/// its `secretName`); the cluster then runs on them. Skipped where cert-manager is
/// installed (the test must not race a real one).
fn cert_manager_certificates_are_served(client: Client, ns: String) -> Scenario {
    use etcd_operator::certs::LeafKind;
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    use kube::api::{ApiResource, DeleteParams, DynamicObject, GroupVersionKind};
    Box::pin(async move {
        let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
        if crds
            .get_opt("certificates.cert-manager.io")
            .await
            .expect("reading CRDs")
            .is_some()
        {
            println!("tls-cert-manager: skipped, cert-manager's Certificate CRD is installed here");
            return;
        }
        let mut spec = EtcdClusterSpec::new(3, TO);
        spec.tls = Some(etcd_operator::api::tls::TlsSpec {
            cert_manager: Some(etcd_operator::api::tls::CertManagerTls {
                issuer_ref: etcd_operator::api::tls::IssuerRef {
                    name: "e2e-issuer".into(),
                    kind: None,
                    group: None,
                },
            }),
            ..Default::default()
        });
        let clusters = apply_cluster(&client, &ns, spec).await;
        let tls_message = |clusters: Api<EtcdCluster>| async move {
            status_of(&clusters, CLUSTER)
                .await
                .and_then(|s| {
                    s.conditions
                        .iter()
                        .find(|c| c.type_ == "TLS")
                        .map(|c| c.message.clone())
                })
                .unwrap_or_default()
        };
        wait_for("the TLS condition to say cert-manager is missing", || {
            let clusters = clusters.clone();
            async move {
                tls_message(clusters)
                    .await
                    .contains("cert-manager is not installed")
            }
        })
        .await;
        assert!(
            member_pods(&client, &ns).await.is_empty(),
            "nothing started"
        );

        let crd: CustomResourceDefinition = serde_json::from_str(CERTIFICATE_CRD).unwrap();
        crds.create(&PostParams::default(), &crd)
            .await
            .expect("creating the Certificate CRD");
        let started = Instant::now();
        let resource = ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("cert-manager.io", "v1", "Certificate"),
            "certificates",
        );
        let certificates: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, &resource);
        let result = async {
            wait_for("the operator's three Certificates", || async {
                certificates
                    .list(&ListParams::default())
                    .await
                    .is_ok_and(|l| l.items.len() == 3)
            })
            .await;
            // Play cert-manager: one CA, each Certificate issued as it asks.
            let pki = UserPki::new(&ns);
            let ca_pem = pki.ca.cert_pem.clone();
            for c in certificates
                .list(&ListParams::default())
                .await
                .unwrap()
                .items
            {
                let spec = &c.data["spec"];
                assert_eq!(spec["issuerRef"]["name"], "e2e-issuer");
                let usages: Vec<&str> = spec["usages"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter_map(|u| u.as_str())
                    .collect();
                let kind = match (
                    usages.contains(&"server auth"),
                    usages.contains(&"client auth"),
                ) {
                    (true, true) => LeafKind::Peer,
                    (true, false) => LeafKind::Server,
                    _ => LeafKind::Client,
                };
                let names: Vec<String> = spec["dnsNames"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|n| n.as_str().map(str::to_string))
                            .collect()
                    })
                    .unwrap_or_default();
                let leaf = pki
                    .ca
                    .issue(
                        &etcd_operator::certs::LeafRequest {
                            kind,
                            common_name: spec["commonName"].as_str().unwrap_or("x").into(),
                            names,
                            lifetime: jiff::SignedDuration::from_hours(24 * 90),
                        },
                        jiff::Timestamp::now(),
                    )
                    .expect("leaf");
                let secret = spec["secretName"].as_str().expect("secretName");
                put_tls_secret(&client, &ns, secret, &leaf.cert_pem, &leaf.key_pem, &ca_pem).await;
            }
            wait_running(&clusters, 3, TO).await;
            println!(
                "tls-cert-manager: running on cert-manager's Secrets {:.1}s after the CRD appeared",
                started.elapsed().as_secs_f64()
            );
            let st = status_of(&clusters, CLUSTER).await.expect("status");
            let tls = st.conditions.iter().find(|c| c.type_ == "TLS").unwrap();
            assert_eq!(
                (tls.status.as_str(), tls.reason.as_str()),
                ("True", "Serving")
            );
            assert_eq!(
                st.tls.and_then(|t| t.client_certificate).as_deref(),
                Some("secret/e2e-cm-client")
            );
            // (No etcdctl inside the Pod: it dials 127.0.0.1, which the names cert-manager
            // was asked for do not include; the member is dialled by its DNS name.)
            let pod = member_pods(&client, &ns).await[0].name_any();
            let server = secret_data(&client, &ns, "e2e-cm-server").await;
            let user = secret_data(&client, &ns, "e2e-cm-client").await;
            let identity = etcd_operator::etcd::TlsConfig::new(
                ca_pem.clone(),
                user["tls.crt"].0.clone(),
                user["tls.key"].0.clone(),
            );
            let forward = PortForward::start(&ns, &pod, 2379);
            let served = etcd_operator::testing::tls::served_certificate(
                &format!("127.0.0.1:{}", forward.port),
                &format!("{pod}.{CLUSTER}.{ns}.svc"),
                &identity,
            )
            .expect("served to cert-manager's client certificate");
            assert_eq!(
                served,
                etcd_operator::testing::tls::der_of(&server["tls.crt"].0).unwrap(),
                "members serve cert-manager's server certificate"
            );
        };
        // The CRD is cluster-wide: removed whatever the outcome.
        let outcome = futures::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(result)).await;
        let _ = crds
            .delete("certificates.cert-manager.io", &DeleteParams::default())
            .await;
        if let Err(panic) = outcome {
            std::panic::resume_unwind(panic);
        }
    })
}

/// The `secrets` source (issue 12): a cluster serving the user's certificates; a bad key
/// in the server Secret reported (condition and Event) without touching members; a renewed
/// server leaf served without a restart. Prints how long members took to serve it.
fn provided_certificates_are_served(client: Client, ns: String) -> Scenario {
    use etcd_operator::certs::LeafKind;
    Box::pin(async move {
        let pki = UserPki::new(&ns);
        let (server, peer, user) = (
            pki.leaf(LeafKind::Server),
            pki.leaf(LeafKind::Peer),
            pki.leaf(LeafKind::Client),
        );
        let ca = pki.ca.cert_pem.clone();
        for (name, leaf) in [
            ("user-server", &server),
            ("user-peer", &peer),
            ("user-client", &user),
        ] {
            put_tls_secret(&client, &ns, name, &leaf.cert_pem, &leaf.key_pem, &ca).await;
        }
        let mut spec = EtcdClusterSpec::new(3, TO);
        spec.tls = Some(etcd_operator::api::tls::TlsSpec {
            secrets: Some(etcd_operator::api::tls::TlsSecrets {
                server: "user-server".into(),
                peer: "user-peer".into(),
                client: "user-client".into(),
                ca: None,
            }),
            ..Default::default()
        });
        let clusters = apply_cluster(&client, &ns, spec).await;
        wait_running(&clusters, 3, TO).await;
        let st = status_of(&clusters, CLUSTER).await.expect("status");
        assert_eq!(
            st.tls.and_then(|t| t.client_certificate).as_deref(),
            Some("secret/user-client")
        );
        let pods = member_pods(&client, &ns).await;
        let before: Vec<_> = pods.iter().map(|p| (p.name_any(), p.uid())).collect();
        let pod = before[0].0.clone();
        let host = format!("{pod}.{CLUSTER}.{ns}.svc");
        let identity = etcd_operator::etcd::TlsConfig::new(
            ca.clone().into_bytes(),
            user.cert_pem.clone().into_bytes(),
            user.key_pem.clone().into_bytes(),
        );
        let forward = PortForward::start(&ns, &pod, 2379);
        let address = format!("127.0.0.1:{}", forward.port);
        let served = || etcd_operator::testing::tls::served_certificate(&address, &host, &identity);
        let der = |pem: &str| etcd_operator::testing::tls::der_of(pem.as_bytes()).unwrap();
        assert_eq!(served().expect("served"), der(&server.cert_pem));

        // A key of another certificate: reported, members untouched.
        put_tls_secret(
            &client,
            &ns,
            "user-server",
            &server.cert_pem,
            &peer.key_pem,
            &ca,
        )
        .await;
        wait_for(
            "TLS=False/InvalidCertificates naming user-server",
            || async {
                status_of(&clusters, CLUSTER).await.is_some_and(|st| {
                    condition::find(&st.conditions, condition::types::TLS).is_some_and(|c| {
                        c.reason == "InvalidCertificates"
                            && c.message
                                .contains("Secret user-server: tls.key is not the key")
                    })
                })
            },
        )
        .await;
        assert!(
            events_mentioning(&client, &ns, "Secret user-server: tls.key is not the key").await,
            "a Warning Event names the Secret"
        );
        let member = secret_data(&client, &ns, &format!("{CLUSTER}-member-tls")).await;
        assert_eq!(
            String::from_utf8(member["server.key"].0.clone()).unwrap(),
            server.key_pem,
            "members' Secret keeps the good key"
        );
        assert_eq!(served().expect("served"), der(&server.cert_pem));

        // The user renews the server leaf: served once the kubelet refreshes the mount.
        let renewed = pki.leaf(LeafKind::Server);
        put_tls_secret(
            &client,
            &ns,
            "user-server",
            &renewed.cert_pem,
            &renewed.key_pem,
            &ca,
        )
        .await;
        let renewed_at = Instant::now();
        wait_for("members serve the renewed server certificate", || async {
            served().is_ok_and(|c| c == der(&renewed.cert_pem))
        })
        .await;
        println!(
            "tls-secrets: members served the renewed certificate {:.1}s after the Secret changed",
            renewed_at.elapsed().as_secs_f64()
        );
        drop(forward);
        wait_for("TLS=True/Serving again", || async {
            status_of(&clusters, CLUSTER).await.is_some_and(|st| {
                condition::find(&st.conditions, condition::types::TLS)
                    .is_some_and(|c| c.reason == "Serving")
            })
        })
        .await;
        let after: Vec<_> = member_pods(&client, &ns)
            .await
            .iter()
            .map(|p| (p.name_any(), p.uid()))
            .collect();
        assert_eq!(before, after, "no member Pod recreated");
    })
}

/// Recovery from lost quorum from the survivor (issue 14): two of three members lose their
/// Pod and PVC; with `spec.recovery.fromSurvivor` the operator restarts the third once with
/// `--force-new-cluster` on its PVC after `after`, and grows back to three with learners.
/// Every key written before is there, the cluster id is kept. Prints the times.
fn recovery_from_the_survivor(client: Client, ns: String) -> Scenario {
    use etcd_operator::api::recovery::{RecoveryMode, RecoveryOutcome, RecoverySpec};
    Box::pin(async move {
        let mut spec = pvc_spec(3, TO);
        spec.recovery = Some(RecoverySpec {
            from_survivor: Some(true),
            after: Some("20s".into()),
            ..Default::default()
        });
        let clusters = apply_cluster(&client, &ns, spec).await;
        wait_running(&clusters, 3, TO).await;
        let survivor = format!("{CLUSTER}-0");
        for i in 0..5 {
            etcdctl(
                &ns,
                &survivor,
                &["put", &format!("r/{i}"), &format!("v{i}")],
            );
        }
        let old_id = status_of(&clusters, CLUSTER)
            .await
            .and_then(|s| s.cluster_id)
            .expect("cluster id");
        let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &ns);
        let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
        let lost = [format!("{CLUSTER}-1"), format!("{CLUSTER}-2")];
        for name in &lost {
            // The claim first (it stays Terminating while its Pod runs), then the Pod.
            pvcs.delete(name, &DeleteParams::default())
                .await
                .expect("delete pvc");
            pods.delete(name, &DeleteParams::default())
                .await
                .expect("delete pod");
        }
        let lost_at = Instant::now();
        wait_for("the survivor serves alone", || async {
            status_of(&clusters, CLUSTER)
                .await
                .and_then(|s| s.recovery)
                .and_then(|r| r.run.or(r.last_run))
                .is_some_and(|r| r.serving_at.is_some())
        })
        .await;
        let to_serving = lost_at.elapsed();
        wait_for("back to three members after the recovery", || async {
            status_of(&clusters, CLUSTER).await.is_some_and(|st| {
                st.recovery
                    .as_ref()
                    .and_then(|r| r.last_run.as_ref())
                    .and_then(|r| r.outcome)
                    == Some(RecoveryOutcome::Succeeded)
                    && st.phase == ClusterPhase::Running
                    && st.members.len() == 3
                    && st.members.iter().all(|m| m.healthy && !m.is_learner)
            })
        })
        .await;
        println!(
            "recover-survivor: quorum lost -> serving in {:.1}s, back to 3 members in {:.1}s (after: 20s)",
            to_serving.as_secs_f64(),
            lost_at.elapsed().as_secs_f64()
        );
        let st = status_of(&clusters, CLUSTER).await.expect("status");
        let run = st
            .recovery
            .clone()
            .and_then(|r| r.last_run)
            .expect("last run");
        assert_eq!(run.mode, RecoveryMode::FromSurvivor);
        assert_eq!(run.survivor.as_deref(), Some(survivor.as_str()));
        assert_eq!(st.cluster_id.as_deref(), Some(old_id.as_str()));
        for i in 0..5 {
            let got = etcdctl(
                &ns,
                &survivor,
                &["get", &format!("r/{i}"), "--print-value-only"],
            );
            assert_eq!(got.trim(), format!("v{i}"));
        }
        // The one-off flag is not in the survivor's Pod any more.
        let pod = pods.get(&survivor).await.expect("survivor pod");
        let args = pod
            .spec
            .and_then(|s| s.containers.first().cloned())
            .and_then(|c| c.args);
        assert!(
            !args
                .unwrap_or_default()
                .iter()
                .any(|a| a.contains("force-new-cluster")),
            "the survivor runs without --force-new-cluster"
        );
    })
}

/// Recovery from a backup in place (issue 14): 3 members, a one-shot EtcdBackup to a Garage
/// in the namespace, more keys written after it; then two members lose Pod and PVC, so
/// quorum is lost for good. With `spec.recovery.fromBackup` (after 20 s) the cluster serves
/// again under the same name and Services with a new cluster id, every key of the backup
/// there and none written after it; the survivor's PVC is kept, relabelled; the status and
/// an Event name the revision and the object. Prints the time from the loss to serving.
fn recovery_from_a_backup_in_place(client: Client, ns: String) -> Scenario {
    use etcd_operator::api::recovery::{
        RecoveryFromBackup, RecoveryMode, RecoveryOutcome, RecoverySpec,
    };
    Box::pin(async move {
        Garage::start(&client, &ns).await;
        let mut spec = pvc_spec(3, TO);
        spec.recovery = Some(RecoverySpec {
            from_backup: Some(RecoveryFromBackup {
                backup_name: "nightly".into(),
            }),
            after: Some("20s".into()),
            ..Default::default()
        });
        let clusters = apply_cluster(&client, &ns, spec).await;
        wait_running(&clusters, 3, TO).await;
        let survivor = format!("{CLUSTER}-0");
        // 200 keys in 2 transactions (etcd allows 128 operations in one).
        for chunk in (0..200).collect::<Vec<u32>>().chunks(100) {
            let mut txn = String::from("\n");
            for i in chunk {
                txn.push_str(&format!("put key/{i:04} value-{i}\n"));
            }
            txn.push_str("\n\n");
            etcdctl_stdin(&ns, &survivor, &["txn"], &txn);
        }
        let backed_up = etcdctl(&ns, &survivor, &["get", "--prefix", "key/"]);
        assert_eq!(backed_up.lines().count(), 400, "200 keys and values");
        let backups: Api<etcd_operator::api::EtcdBackup> = Api::namespaced(client.clone(), &ns);
        let backup: etcd_operator::api::EtcdBackup = serde_json::from_value(json!({
            "apiVersion": "etcd.operator.dev/v1alpha1",
            "kind": "EtcdBackup",
            "metadata": { "name": "nightly" },
            "spec": {
                "clusterName": CLUSTER,
                "destination": { "s3": {
                    "bucket": GARAGE_BUCKET,
                    "prefix": "e2e",
                    "endpoint": format!("http://garage.{ns}.svc:3900"),
                    "region": "garage",
                    "forcePathStyle": true,
                    "credentialsSecret": "s3",
                }},
            },
        }))
        .unwrap();
        backups
            .create(&PostParams::default(), &backup)
            .await
            .unwrap();
        wait_for("the one-shot backup", || async {
            status_of(&backups, "nightly")
                .await
                .is_some_and(|s| s.last_backup.is_some())
        })
        .await;
        let record = status_of(&backups, "nightly")
            .await
            .and_then(|s| s.last_backup)
            .expect("the backup's record");
        // Written after the backup: not in it, so not in the recovered cluster.
        for i in 0..5 {
            etcdctl(&ns, &survivor, &["put", &format!("later/{i}"), "lost"]);
        }
        let old_id = status_of(&clusters, CLUSTER)
            .await
            .and_then(|s| s.cluster_id)
            .expect("cluster id");
        let services: Api<Service> = Api::namespaced(client.clone(), &ns);
        let service_uids = |names: [String; 2]| {
            let services = services.clone();
            async move {
                let mut uids = Vec::new();
                for name in names {
                    uids.push(services.get(&name).await.expect("service").uid());
                }
                uids
            }
        };
        let service_names = [CLUSTER.to_string(), format!("{CLUSTER}-client")];
        let uids_before = service_uids(service_names.clone()).await;
        let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &ns);
        let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
        for name in [format!("{CLUSTER}-1"), format!("{CLUSTER}-2")] {
            // The claim first (it stays Terminating while its Pod runs), then the Pod.
            pvcs.delete(&name, &DeleteParams::default())
                .await
                .expect("delete pvc");
            pods.delete(&name, &DeleteParams::default())
                .await
                .expect("delete pod");
        }
        let lost_at = Instant::now();
        wait_for("the cluster recovered from the backup", || async {
            status_of(&clusters, CLUSTER).await.is_some_and(|st| {
                st.recovery
                    .as_ref()
                    .and_then(|r| r.last_run.as_ref())
                    .is_some_and(|r| r.outcome.is_some())
            })
        })
        .await;
        let st = status_of(&clusters, CLUSTER).await.expect("status");
        let run = st
            .recovery
            .clone()
            .and_then(|r| r.last_run)
            .expect("last run");
        assert_eq!(
            run.outcome,
            Some(RecoveryOutcome::Succeeded),
            "the recovery failed: {:?} {:?}",
            run.reason,
            run.message
        );
        let to_serving = lost_at.elapsed();
        wait_for("three healthy members after the recovery", || async {
            status_of(&clusters, CLUSTER).await.is_some_and(|st| {
                st.phase == ClusterPhase::Running
                    && st.ready_members == 3
                    && st.members.iter().all(|m| m.healthy && !m.is_learner)
            })
        })
        .await;
        println!(
            "recover-backup: quorum lost -> recovered (serving) in {:.1}s, Running with 3 in {:.1}s (after: 20s; the run took {}s from its start)",
            to_serving.as_secs_f64(),
            lost_at.elapsed().as_secs_f64(),
            run.serving_at
                .as_ref()
                .map(|t| t.0.duration_since(run.started_at.0).as_secs())
                .unwrap_or_default()
        );
        assert_eq!(run.mode, RecoveryMode::FromBackup);
        let restored = run.backup.clone().expect("the backup restored");
        assert_eq!(restored.backup_name, "nightly");
        assert_eq!(restored.key, record.key);
        assert_eq!(restored.sha256, record.sha256);
        assert_eq!(run.revision, Some(record.revision));
        let st = status_of(&clusters, CLUSTER).await.expect("status");
        let new_id = st.cluster_id.clone().expect("new cluster id");
        assert_ne!(new_id, old_id, "a new cluster id");
        assert_eq!(run.cluster_id.as_deref(), Some(new_id.as_str()));
        // New names, the same Services.
        let names: Vec<String> = member_pods(&client, &ns)
            .await
            .iter()
            .map(ResourceExt::name_any)
            .collect();
        let new_names = run.members.clone();
        assert_eq!(names, new_names);
        assert_eq!(
            service_uids(service_names).await,
            uids_before,
            "the same Services"
        );
        // Every key of the backup, none written after it.
        for member in &new_names {
            let copy = etcdctl(&ns, member, &["get", "--prefix", "key/"]);
            assert_eq!(copy, backed_up, "{member} differs from the backup");
            let later = etcdctl(&ns, member, &["get", "--prefix", "later/"]);
            assert!(
                later.trim().is_empty(),
                "{member} has keys written after the backup"
            );
        }
        // The survivor's PVC is kept aside, relabelled, not deleted; its Pod is gone.
        let kept = pvcs
            .get(&survivor)
            .await
            .expect("the survivor's pvc is kept");
        let labels = kept.labels();
        assert_eq!(
            labels
                .get("etcd.operator.dev/kept-from")
                .map(String::as_str),
            Some(CLUSTER)
        );
        assert!(labels.contains_key("etcd.operator.dev/kept-by-recovery"));
        assert!(!labels.contains_key("etcd.operator.dev/cluster"));
        assert!(kept.metadata.deletion_timestamp.is_none());
        assert!(pods.get_opt(&survivor).await.unwrap().is_none());
        assert!(
            run.kept.iter().any(|k| k.at == format!("pvc/{survivor}")),
            "{:?}",
            run.kept
        );
        // The staged source is gone from the cluster.
        let cluster = clusters.get(CLUSTER).await.expect("cluster");
        assert!(
            !cluster
                .annotations()
                .contains_key("etcd.operator.dev/recovery-source"),
            "the recovery's source annotation is removed once it ended"
        );
        // The condition and an Event name the revision and the object.
        let recovery = condition::find(&st.conditions, condition::types::RECOVERY)
            .expect("Recovery condition");
        let revision = format!("revision {}", record.revision);
        assert!(
            recovery.message.contains(&revision) && recovery.message.contains(&record.key),
            "{}",
            recovery.message
        );
        assert!(
            events_mentioning(&client, &ns, &revision).await
                && events_mentioning(&client, &ns, &record.key).await,
            "an Event names the revision and the object"
        );
    })
}

/// Scheduled defragmentation (issue 14): a fragmented 3-member cluster gets
/// `spec.maintenance.defrag` every second with thresholds; one run defragments the
/// followers first and the leader last, and every member's backend shrinks. Prints the
/// run's time and the bytes reclaimed.
fn scheduled_defrag_leader_last(client: Client, ns: String) -> Scenario {
    use etcd_operator::api::maintenance::MaintenanceReason;
    Box::pin(async move {
        let clusters = apply_cluster(&client, &ns, pvc_spec(3, TO)).await;
        wait_running(&clusters, 3, TO).await;
        // Fragment every backend through a port-forward: 200 keys of 32 KiB written three
        // times, history compacted.
        let identity = client_identity(&client, &ns).await;
        let pod = format!("{CLUSTER}-0");
        let forward = PortForward::start(&ns, &pod, 2379);
        let options = etcd_client::ConnectOptions::new()
            .with_tls(identity.to_options().expect("PEM"))
            .with_timeout(Duration::from_secs(10));
        let mut c = etcd_client::Client::connect(
            [format!("https://127.0.0.1:{}", forward.port)],
            Some(options),
        )
        .await
        .expect("connect through the port-forward");
        let value = "y".repeat(32 * 1024);
        let mut rev = 0;
        for _ in 0..3 {
            for i in 0..200 {
                let r = c
                    .put(format!("bulk/{i:03}"), value.clone(), None)
                    .await
                    .expect("put");
                rev = r.header().map_or(rev, |h| h.revision());
            }
        }
        c.compact(
            rev,
            Some(etcd_client::CompactionOptions::new().with_physical()),
        )
        .await
        .expect("compact");
        // Followers count freed pages as free after a later commit.
        for i in 0..20 {
            c.put(format!("small/{i}"), "x", None).await.expect("put");
        }
        drop(forward);
        wait_for("every member reports over 4 MiB free", || async {
            status_of(&clusters, CLUSTER).await.is_some_and(|st| {
                st.members.len() == 3
                    && st.members.iter().all(|m| {
                        m.db_size
                            .zip(m.db_size_in_use)
                            .is_some_and(|(size, used)| size - used > 4 * 1024 * 1024)
                    })
            })
        })
        .await;
        let st = status_of(&clusters, CLUSTER).await.expect("status");
        let leader = st
            .members
            .iter()
            .find(|m| m.is_leader)
            .expect("a leader")
            .name
            .clone();
        let before: Vec<(String, i64)> = st
            .members
            .iter()
            .map(|m| (m.name.clone(), m.db_size.unwrap_or_default()))
            .collect();
        clusters
            .patch(
                CLUSTER,
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"maintenance": {"defrag": {
                    "schedule": "* * * * * *",
                    "minFragmentedBytes": "4Mi",
                    "minFragmentedRatio": 0.3,
                }}}})),
            )
            .await
            .expect("patch spec.maintenance");
        let started = Instant::now();
        wait_for("a scheduled defragmentation run finished", || async {
            status_of(&clusters, CLUSTER)
                .await
                .and_then(|s| s.maintenance)
                .and_then(|m| m.last_run)
                .is_some_and(|r| r.reason == MaintenanceReason::Scheduled)
        })
        .await;
        let st = status_of(&clusters, CLUSTER).await.expect("status");
        let run = st.maintenance.and_then(|m| m.last_run).expect("run");
        let order: Vec<&str> = run.defragmented.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(order.len(), 3, "{run:?}");
        assert_eq!(order[2], leader, "the leader last: {order:?}");
        for (name, was) in &before {
            let now = st
                .members
                .iter()
                .find(|m| &m.name == name)
                .and_then(|m| m.db_size)
                .expect("db size");
            assert!(now < was / 2, "{name}: {was} -> {now}");
        }
        println!(
            "defrag: run finished {:.1}s after the schedule was set, order {order:?}, reclaimed {} bytes",
            started.elapsed().as_secs_f64(),
            run.reclaimed_bytes.unwrap_or_default()
        );
    })
}

/// NOSPACE (issue 14): a 3-member cluster with a 16 MiB backend quota, a writer
/// overwriting 100 keys of 16 KiB through a port-forward until etcd refuses it with
/// NOSPACE; the operator compacts, defragments one member at a time and disarms the alarm;
/// the writer's writes succeed again and every acknowledged write is there. Prints the
/// writes, the refusals, the writer's longest stall and the bytes reclaimed.
fn nospace_is_handled_under_a_writer(client: Client, ns: String) -> Scenario {
    use etcd_operator::api::maintenance::{MaintenanceOutcome, MaintenanceReason};
    use etcd_operator::testing::writer::Overwriter;
    const QUOTA: i64 = 16 * 1024 * 1024;
    const KEYS: u64 = 100;
    Box::pin(async move {
        let mut spec = pvc_spec(3, TO);
        spec.etcd = Some(etcd_operator::api::cluster::EtcdOptions {
            quota_backend_bytes: Some(QUOTA),
            ..Default::default()
        });
        let clusters = apply_cluster(&client, &ns, spec).await;
        wait_running(&clusters, 3, TO).await;
        let identity = client_identity(&client, &ns).await;
        let forward = PortForward::start(&ns, &format!("{CLUSTER}-0"), 2379);
        let connect = || {
            let options = etcd_client::ConnectOptions::new()
                .with_tls(identity.to_options().expect("PEM"))
                .with_timeout(Duration::from_secs(10));
            etcd_client::Client::connect(
                [format!("https://127.0.0.1:{}", forward.port)],
                Some(options),
            )
        };
        let mut c = connect().await.expect("connect through the port-forward");
        // Key `n/<seq % KEYS>` gets a 16 KiB value starting with its sequence number.
        let writer = Overwriter::start(c.clone(), "n", KEYS, 16 * 1024);
        let started = Instant::now();
        wait_for("the writer refused with NOSPACE", || async {
            writer.no_space_errors() > 0
        })
        .await;
        let full_at = Instant::now();
        let acked_when_full = writer.acked();
        wait_for("the NOSPACE run finished", || async {
            status_of(&clusters, CLUSTER)
                .await
                .and_then(|s| s.maintenance)
                .and_then(|m| m.last_run)
                .is_some_and(|r| r.reason == MaintenanceReason::NoSpace)
        })
        .await;
        let handled_in = full_at.elapsed();
        let st = status_of(&clusters, CLUSTER).await.expect("status");
        let run = st
            .maintenance
            .as_ref()
            .and_then(|m| m.last_run.clone())
            .expect("run");
        assert_eq!(run.outcome, Some(MaintenanceOutcome::Finished), "{run:?}");
        assert!(run.compacted_revision.is_some(), "compacted first: {run:?}");
        assert_eq!(run.defragmented.len(), 3, "every member once: {run:?}");
        let reclaimed = run.reclaimed_bytes.unwrap_or_default();
        assert!(reclaimed > 0, "{run:?}");
        let maintenance = condition::find(&st.conditions, condition::types::MAINTENANCE)
            .expect("Maintenance condition");
        assert!(
            events_mentioning(&client, &ns, "reclaimed").await,
            "an Event says how much room was made ({})",
            maintenance.message
        );
        // Writes succeed again, and every acknowledged one is there.
        writer.wait_for_acks(writer.acked() + 50).await;
        let seen = writer.stop_and_verify(c.clone()).await;
        let alarms = c
            .alarm(
                etcd_client::AlarmAction::Get,
                etcd_client::AlarmType::None,
                None,
            )
            .await
            .expect("alarm list");
        assert!(
            alarms
                .alarms()
                .iter()
                .all(|a| a.alarm() != etcd_client::AlarmType::Nospace),
            "the alarm is disarmed"
        );
        let st = status_of(&clusters, CLUSTER).await.expect("status");
        for m in &st.members {
            let size = m.db_size.expect("db size");
            assert!(size * 10 <= QUOTA * 9, "{} has room: {size}", m.name);
        }
        drop(forward);
        println!(
            "nospace: full after {:.1}s ({acked_when_full} writes), the alarm handled {:.1}s later; \
             {} writes acknowledged, {} refused with NOSPACE, {} other errors; reclaimed {reclaimed} bytes; \
             the writer's longest stall {:.1}s",
            (full_at - started).as_secs_f64(),
            handled_in.as_secs_f64(),
            seen.acked_count,
            seen.no_space_errors,
            seen.other_errors,
            seen.longest_stall.as_secs_f64()
        );
    })
}

/// TLS by default (issue 12): the status says https, a client without a certificate (or
/// in plaintext) is refused inside the member's own Pod, and the application Secret
/// `<cluster>-client-tls` reads the key `e2e` from outside through a port-forward.
async fn assert_serves_tls_only(client: &Client, clusters: &Api<EtcdCluster>, ns: &str, pod: &str) {
    let st = status_of(clusters, CLUSTER).await.expect("status");
    let tls = st.tls.expect("status.tls");
    assert_eq!(tls.scheme.as_deref(), Some("https"));
    assert_eq!(
        tls.client_certificate.as_deref(),
        Some(format!("secret/{CLUSTER}-client-tls").as_str())
    );
    for endpoint in [
        vec!["--endpoints=http://127.0.0.1:2379"],
        vec![
            "--endpoints=https://127.0.0.1:2379",
            "--cacert=/etc/etcd/tls/ca.crt",
        ],
    ] {
        let out = Command::new("kubectl")
            .args(["-n", ns, "exec", pod, "-c", "etcd", "--", "etcdctl"])
            .args(&endpoint)
            .args(["--dial-timeout=3s", "--command-timeout=5s", "get", "e2e"])
            .output()
            .expect("kubectl exec");
        assert!(!out.status.success(), "{endpoint:?} was served");
    }
    let identity = client_identity(client, ns).await;
    let forward = PortForward::start(ns, pod, 2379);
    let port = forward.port;
    let options = etcd_client::ConnectOptions::new()
        .with_tls(identity.to_options().expect("PEM"))
        .with_timeout(Duration::from_secs(5));
    let got = async {
        let mut c =
            etcd_client::Client::connect([format!("https://127.0.0.1:{port}")], Some(options))
                .await?;
        c.get("e2e", None).await
    }
    .await;
    drop(forward);
    let got = got.expect("the application certificate is served");
    assert_eq!(got.kvs()[0].value_str().unwrap(), "kept");
}

/// An idle 3-member cluster is looked at by requeue only (every 30 s): its unchanged status
/// is not written, and writes would not wake the controller. Prints the passes and the API
/// requests they make per minute (each idle pass lists the cluster's Pods and PVCs).
fn an_idle_cluster_is_reconciled_by_requeue_only(client: Client, ns: String) -> Scenario {
    Box::pin(async move {
        let clusters = apply_cluster(&client, &ns, EtcdClusterSpec::new(3, FROM)).await;
        wait_running(&clusters, 3, FROM).await;
        // Let the last steps' own requeues and the members' readiness changes pass.
        let settle = Instant::now() + Duration::from_secs(15);
        while Instant::now() < settle {
            tokio::time::sleep(POLL).await;
        }
        let rv = |c: EtcdCluster| c.resource_version().unwrap_or_default();
        let before = reconciles();
        let rv_before = rv(clusters.get(CLUSTER).await.unwrap());
        let window = Duration::from_secs(60);
        let until = Instant::now() + window;
        while Instant::now() < until {
            tokio::time::sleep(POLL).await;
        }
        let passes = reconciles() - before;
        let rv_after = rv(clusters.get(CLUSTER).await.unwrap());
        println!(
            "idle-rate: {passes:.0} reconcile passes in 60 s (all clusters), about {:.0} API requests per minute for them (2 lists per pass; no status write: resourceVersion {}); lease renewals not counted",
            passes * 2.0,
            if rv_before == rv_after {
                "unchanged"
            } else {
                "CHANGED"
            }
        );
        assert_eq!(
            rv_before, rv_after,
            "an idle cluster's status was rewritten"
        );
    })
}

/// `etcd_operator_reconciles_total` of the running operator, through the API server's
/// proxy to its metrics port.
fn reconciles() -> f64 {
    let pod = run(Command::new("kubectl").args([
        "-n",
        OPERATOR_NS,
        "get",
        "pods",
        "-l",
        "app.kubernetes.io/name=etcd-operator",
        // Not a Pod of an earlier ReplicaSet that ended (evicted, failed): the one running.
        "--field-selector=status.phase=Running",
        "-o",
        "jsonpath={.items[0].metadata.name}",
    ]));
    let metrics = run(Command::new("kubectl").args([
        "get",
        "--raw",
        &format!("/api/v1/namespaces/{OPERATOR_NS}/pods/{pod}:8080/proxy/metrics"),
    ]));
    metrics
        .lines()
        .find(|l| l.starts_with("etcd_operator_reconciles_total"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .expect("etcd_operator_reconciles_total")
}

/// With the default `retentionPolicy` (Retain), deleting the EtcdCluster keeps its PVCs,
/// unowned and labelled; a new cluster of the same name refuses them (RetainedVolumesFound)
/// and starts no member until they are deleted.
fn deleting_the_cluster_keeps_its_pvcs(client: Client, ns: String) -> Scenario {
    Box::pin(async move {
        let clusters = apply_cluster(&client, &ns, pvc_spec(3, FROM)).await;
        wait_running(&clusters, 3, FROM).await;
        let old_uid = clusters.get(CLUSTER).await.unwrap().uid().unwrap();
        let pods = member_pods(&client, &ns).await;
        etcdctl(&ns, &pods[0].name_any(), &["put", "e2e", "kept"]);
        clusters
            .delete(CLUSTER, &DeleteParams::default())
            .await
            .unwrap();
        wait_for("the cluster and its pods to be gone", || async {
            clusters.get_opt(CLUSTER).await.ok().flatten().is_none()
                && member_pods(&client, &ns).await.is_empty()
        })
        .await;
        let pvcs = member_pvcs(&client, &ns).await;
        assert_eq!(pvcs.len(), 3, "the PVCs outlive their cluster");
        for pvc in &pvcs {
            assert!(pvc.metadata.deletion_timestamp.is_none());
            assert!(pvc.owner_references().is_empty(), "{pvc:?}");
            assert_eq!(
                pvc.labels().get("etcd.operator.dev/cluster-uid"),
                Some(&old_uid)
            );
        }
        // A new cluster of the same name: refused, visibly, and nothing started.
        apply_cluster(&client, &ns, pvc_spec(3, FROM)).await;
        wait_for("Degraded with RetainedVolumesFound", || async {
            status_of(&clusters, CLUSTER).await.is_some_and(|s| {
                condition::find(&s.conditions, "Degraded")
                    .is_some_and(|c| c.reason == "RetainedVolumesFound")
            })
        })
        .await;
        assert!(
            member_pods(&client, &ns).await.is_empty(),
            "a member started"
        );
        // Deleting them (the user's explicit action) lets the new cluster start afresh.
        let api: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &ns);
        for pvc in &pvcs {
            api.delete(&pvc.name_any(), &DeleteParams::default())
                .await
                .unwrap();
        }
        wait_running(&clusters, 3, FROM).await;
    })
}

/// The PDB allows exactly the evictions that keep quorum: with 3 healthy members one
/// eviction succeeds, and a second one while the first member is down is refused (429).
fn one_eviction_at_a_time(client: Client, ns: String) -> Scenario {
    Box::pin(async move {
        let clusters = apply_cluster(&client, &ns, empty_dir_spec(3, FROM)).await;
        wait_running(&clusters, 3, FROM).await;
        let pdbs: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), &ns);
        wait_for("the PDB to allow one disruption", || async {
            pdbs.get_opt(CLUSTER)
                .await
                .ok()
                .flatten()
                .and_then(|p| p.status)
                .is_some_and(|s| s.disruptions_allowed == 1 && s.current_healthy == 3)
        })
        .await;
        let pods = member_pods(&client, &ns).await;
        etcdctl(&ns, &pods[0].name_any(), &["put", "e2e", "kept"]);
        // kube's default client retries 429s until they pass: the refusal must be seen as is.
        let mut config = kube::Config::infer().await.expect("kubeconfig");
        config.default_retry = false;
        let no_retry = Client::try_from(config).expect("client without retries");
        let api = Api::<Pod>::namespaced(no_retry, &ns);
        let started = Instant::now();
        api.evict(&pods[1].name_any(), &EvictParams::default())
            .await
            .expect("the first eviction of a healthy 3-member cluster is allowed");
        match api
            .evict(&pods[2].name_any(), &EvictParams::default())
            .await
        {
            Err(kube::Error::Api(status)) if status.code == 429 => {}
            other => panic!(
                "a second eviction while one member is down must be refused with 429, got {other:?}"
            ),
        }
        // emptyDir: the evicted member's data went with it, so it is replaced under a new name.
        wait_replaced(&client, &ns, &pods[1].name_any(), 3).await;
        wait_running(&clusters, 3, FROM).await;
        println!(
            "evict: healthy again {:.1}s after the eviction",
            started.elapsed().as_secs_f64()
        );
        let any = member_pods(&client, &ns).await[0].name_any();
        assert!(etcdctl(&ns, &any, &["get", "e2e", "--print-value-only"]).contains("kept"));
    })
}

fn scale_to_five_and_back(client: Client, ns: String) -> Scenario {
    Box::pin(async move {
        let clusters = apply_cluster(&client, &ns, EtcdClusterSpec::new(3, FROM)).await;
        wait_running(&clusters, 3, FROM).await;
        let first = member_pods(&client, &ns).await[0].name_any();
        etcdctl(&ns, &first, &["put", "e2e", "kept"]);
        // Issue 9, item 2: the request rate while learners catch up (two added, each
        // waited on until caught up, then promoted).
        let before = reconciles();
        let started = Instant::now();
        apply_cluster(&client, &ns, EtcdClusterSpec::new(5, FROM)).await;
        wait_running(&clusters, 5, FROM).await;
        let minutes = started.elapsed().as_secs_f64() / 60.0;
        let passes = reconciles() - before;
        println!(
            "scale: 3 -> 5 in {:.1}s: {passes:.0} reconcile passes, {:.0} a minute (about {:.0} API requests a minute: 2 lists a pass, plus one write per executed step)",
            minutes * 60.0,
            passes / minutes,
            passes * 2.0 / minutes
        );
        apply_cluster(&client, &ns, EtcdClusterSpec::new(3, FROM)).await;
        wait_running(&clusters, 3, FROM).await;
        wait_for("3 member pods after scaling down", || async {
            member_pods(&client, &ns).await.len() == 3
        })
        .await;
        let any = member_pods(&client, &ns).await[0].name_any();
        assert!(etcdctl(&ns, &any, &["get", "e2e", "--print-value-only"]).contains("kept"));
    })
}

fn deleted_pod_is_replaced(client: Client, ns: String) -> Scenario {
    Box::pin(async move {
        let clusters = apply_cluster(&client, &ns, empty_dir_spec(3, FROM)).await;
        wait_running(&clusters, 3, FROM).await;
        let pods = member_pods(&client, &ns).await;
        etcdctl(&ns, &pods[0].name_any(), &["put", "e2e", "kept"]);
        let victim = pods[1].name_any();
        Api::<Pod>::namespaced(client.clone(), &ns)
            .delete(&victim, &DeleteParams::default())
            .await
            .unwrap();
        // emptyDir: the member's data went with its Pod, so it is removed and replaced.
        wait_replaced(&client, &ns, &victim, 3).await;
        wait_running(&clusters, 3, FROM).await;
        let any = member_pods(&client, &ns).await[0].name_any();
        assert!(etcdctl(&ns, &any, &["get", "e2e", "--print-value-only"]).contains("kept"));
    })
}

/// The default storage (a PVC per member): a deleted member Pod is recreated on its PVC as
/// the same member (same name and etcd id) with its keys.
fn deleted_pod_comes_back_on_its_pvc(client: Client, ns: String) -> Scenario {
    Box::pin(async move {
        let clusters = apply_cluster(&client, &ns, EtcdClusterSpec::new(3, FROM)).await;
        wait_running(&clusters, 3, FROM).await;
        assert_eq!(
            member_pvcs(&client, &ns).await.len(),
            3,
            "one PVC per member"
        );
        let pods = member_pods(&client, &ns).await;
        etcdctl(&ns, &pods[0].name_any(), &["put", "e2e", "kept"]);
        let victim = pods[1].clone();
        let id_before = member_id(&clusters, &victim.name_any()).await;
        let started = Instant::now();
        Api::<Pod>::namespaced(client.clone(), &ns)
            .delete(&victim.name_any(), &DeleteParams::default())
            .await
            .unwrap();
        wait_for(&format!("a new pod {}", victim.name_any()), || async {
            member_pods(&client, &ns)
                .await
                .iter()
                .any(|p| p.name_any() == victim.name_any() && p.uid() != victim.uid())
        })
        .await;
        wait_running(&clusters, 3, FROM).await;
        println!(
            "delete-pod-pvc: healthy again {:.1}s after the deletion",
            started.elapsed().as_secs_f64()
        );
        assert_eq!(
            member_id(&clusters, &victim.name_any()).await,
            id_before,
            "the same member came back"
        );
        assert!(
            etcdctl(
                &ns,
                &victim.name_any(),
                &["get", "e2e", "--print-value-only"]
            )
            .contains("kept")
        );
    })
}

fn upgrade_patches_images_in_place(client: Client, ns: String) -> Scenario {
    Box::pin(async move {
        let clusters = apply_cluster(&client, &ns, EtcdClusterSpec::new(3, FROM)).await;
        wait_running(&clusters, 3, FROM).await;
        let before = member_pods(&client, &ns).await;
        etcdctl(&ns, &before[0].name_any(), &["put", "e2e", "kept"]);
        apply_cluster(&client, &ns, EtcdClusterSpec::new(3, TO)).await;
        wait_running(&clusters, 3, TO).await;
        let after = member_pods(&client, &ns).await;
        for pod in &after {
            assert_eq!(image_of(pod), format!("gcr.io/etcd-development/etcd:v{TO}"));
        }
        // The same Pods (same uids): the image was patched in place, the data kept.
        let uids = |pods: &[Pod]| {
            let mut u: Vec<String> = pods.iter().filter_map(|p| p.uid()).collect();
            u.sort();
            u
        };
        assert_eq!(uids(&before), uids(&after));
        assert!(
            etcdctl(
                &ns,
                &after[2].name_any(),
                &["get", "e2e", "--print-value-only"]
            )
            .contains("kept")
        );
    })
}

fn paused_cluster_takes_no_step(client: Client, ns: String) -> Scenario {
    Box::pin(async move {
        let clusters = apply_cluster(&client, &ns, EtcdClusterSpec::new(3, FROM)).await;
        wait_running(&clusters, 3, FROM).await;
        let mut paused = EtcdClusterSpec::new(5, FROM);
        paused.paused = true;
        apply_cluster(&client, &ns, paused).await;
        wait_for("phase Paused", || async {
            phase(&clusters).await == Some(ClusterPhase::Paused)
        })
        .await;
        // Paused: the size change must not be acted on for a while.
        let until = Instant::now() + Duration::from_secs(20);
        while Instant::now() < until {
            assert_eq!(
                member_pods(&client, &ns).await.len(),
                3,
                "a paused cluster grew"
            );
            tokio::time::sleep(POLL).await;
        }
        apply_cluster(&client, &ns, EtcdClusterSpec::new(5, FROM)).await;
        wait_running(&clusters, 5, FROM).await;
    })
}

/// The operator was installed and then moved to `OPERATOR_IMAGE` with `kubectl set image`
/// (the documented way): a restore's init containers run that image, read from the
/// operator's own Pod, not a stale one. The snapshot is a plain object (no digest anywhere)
/// in a Garage in the namespace: the restore pins it (`status.pinned`), the member restores
/// it, and the restore completes.
fn restore_runs_the_operators_own_image(client: Client, ns: String) -> Scenario {
    Box::pin(async move {
        let Ok(image) = std::env::var("OPERATOR_IMAGE") else {
            println!("restore-image: skipped, OPERATOR_IMAGE is not set");
            return;
        };
        let garage = Garage::start(&client, &ns).await;
        let etag = garage.put(SNAPSHOT_KEY, EMPTY_SNAPSHOT.to_vec()).await;
        let restores = garage
            .restore(&client, "from-garage", empty_dir_spec(1, TO))
            .await;
        wait_for("the restored member pod", || async {
            !member_pods(&client, &ns).await.is_empty()
        })
        .await;
        let pod = &member_pods(&client, &ns).await[0];
        let fetch = pod
            .spec
            .as_ref()
            .and_then(|s| s.init_containers.as_ref())
            .and_then(|c| c.iter().find(|c| c.name == "restore-fetch"))
            .and_then(|c| c.image.clone());
        assert_eq!(
            fetch.as_deref(),
            Some(image.as_str()),
            "restore-fetch image"
        );
        wait_for("the restore to complete", || async {
            status_of(&restores, "from-garage")
                .await
                .is_some_and(|s| s.phase == RestorePhase::Completed)
        })
        .await;
        let status = restores.get("from-garage").await.unwrap().status.unwrap();
        let pinned = status.pinned.expect("the restore records its pin");
        assert_eq!(pinned.etag, etag);
        println!(
            "restore-image: Completed from {SNAPSHOT_KEY} pinned to etag {}",
            pinned.etag
        );
    })
}

/// The key is overwritten after the restore pinned it and before any member fetched (the
/// members are held unschedulable by a node selector until then): the fetch refuses the new
/// object, the restore fails with `SourceChanged`, and no member's etcd starts.
fn an_object_overwritten_mid_restore_fails_it(client: Client, ns: String) -> Scenario {
    Box::pin(async move {
        let garage = Garage::start(&client, &ns).await;
        garage.put(SNAPSHOT_KEY, EMPTY_SNAPSHOT.to_vec()).await;
        let hold = format!("etcd.operator.dev/e2e-hold-{ns}");
        let mut spec = empty_dir_spec(3, TO);
        spec.pod = Some(etcd_operator::api::cluster::PodPolicy {
            node_selector: [(hold.clone(), "yes".to_string())].into(),
            ..Default::default()
        });
        let restores = garage.restore(&client, "overwritten", spec).await;
        wait_for("the restore to pin its object", || async {
            status_of(&restores, "overwritten")
                .await
                .is_some_and(|s| s.pinned.is_some())
        })
        .await;
        wait_for("three held member pods", || async {
            member_pods(&client, &ns).await.len() == 3
        })
        .await;
        // Someone replaces the snapshot mid-restore.
        let mut other = EMPTY_SNAPSHOT.to_vec();
        other.extend_from_slice(b"replaced");
        garage.put(SNAPSHOT_KEY, other).await;
        let node = run(Command::new("kubectl").args([
            "get",
            "nodes",
            "-o",
            "jsonpath={.items[0].metadata.name}",
        ]));
        let _label = NodeLabel::set(&node, &hold);
        let started = Instant::now();
        wait_for("the restore to fail with SourceChanged", || async {
            status_of(&restores, "overwritten").await.is_some_and(|s| {
                condition::find(&s.conditions, "Failed")
                    .is_some_and(|c| c.status == "True" && c.reason == "SourceChanged")
            })
        })
        .await;
        let status = restores.get("overwritten").await.unwrap().status.unwrap();
        assert_eq!(status.phase, RestorePhase::Failed);
        for pod in member_pods(&client, &ns).await {
            let etcd_started = pod
                .status
                .as_ref()
                .and_then(|s| s.container_statuses.as_ref())
                .is_some_and(|c| {
                    c.iter()
                        .any(|c| c.state.as_ref().is_some_and(|s| s.waiting.is_none()))
                });
            assert!(!etcd_started, "{} started etcd", pod.name_any());
        }
        let failed = condition::find(&status.conditions, "Failed").unwrap();
        println!(
            "restore-overwritten: Failed {} {:.1}s after the members could schedule: {}",
            failed.reason,
            started.elapsed().as_secs_f64(),
            failed.message
        );
    })
}

/// The operator is installed without `--allow-ambient-credentials`: a restore that names no
/// credentials Secret would borrow the operator's own cloud identity, so it is refused with
/// a reason, and no cluster is created.
fn a_restore_without_a_secret_is_refused(client: Client, ns: String) -> Scenario {
    Box::pin(async move {
        let restore: EtcdRestore = serde_json::from_value(json!({
            "apiVersion": "etcd.operator.dev/v1alpha1",
            "kind": "EtcdRestore",
            "metadata": { "name": "ambient" },
            "spec": {
                "source": { "s3": {
                    "bucket": "any",
                    "key": "snapshots/e2e-rev1.db",
                    "endpoint": "http://10.244.0.1:1",
                    "forcePathStyle": true,
                }},
                "cluster": { "name": CLUSTER, "spec": { "size": 1, "version": TO } },
            },
        }))
        .unwrap();
        let restores: Api<EtcdRestore> = Api::namespaced(client.clone(), &ns);
        restores
            .create(&PostParams::default(), &restore)
            .await
            .unwrap();
        wait_for(
            "the restore to be refused for ambient credentials",
            || async {
                status_of(&restores, "ambient").await.is_some_and(|s| {
                    condition::find(&s.conditions, "Failed").is_some_and(|c| {
                        c.status == "True" && c.reason == "AmbientCredentialsNotAllowed"
                    })
                })
            },
        )
        .await;
        let clusters: Api<EtcdCluster> = Api::namespaced(client.clone(), &ns);
        assert!(
            clusters.get_opt(CLUSTER).await.unwrap().is_none(),
            "no cluster is created for a refused restore"
        );
    })
}

/// Every Pod of a formed emptyDir cluster is deleted at once: all data is gone. The operator
/// reports `AllMembersLost` and does not bootstrap a new, empty cluster behind the same
/// name and Services (clients would see revision 1 and no keys).
fn losing_every_member_is_not_a_new_cluster(client: Client, ns: String) -> Scenario {
    Box::pin(async move {
        let clusters = apply_cluster(&client, &ns, empty_dir_spec(3, FROM)).await;
        wait_running(&clusters, 3, FROM).await;
        wait_for("the cluster id in the status", || async {
            status_of(&clusters, CLUSTER)
                .await
                .is_some_and(|s| s.cluster_id.is_some())
        })
        .await;
        let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
        pods.delete_collection(
            &DeleteParams::default(),
            &ListParams::default().labels(&format!("etcd.operator.dev/cluster={CLUSTER}")),
        )
        .await
        .unwrap();
        let started = Instant::now();
        wait_for("Degraded with AllMembersLost", || async {
            status_of(&clusters, CLUSTER).await.is_some_and(|s| {
                s.phase == ClusterPhase::Degraded
                    && condition::find(&s.conditions, "Degraded")
                        .is_some_and(|c| c.reason == "AllMembersLost")
            })
        })
        .await;
        println!(
            "all-members-lost: reported {:.1}s after the deletion",
            started.elapsed().as_secs_f64()
        );
        // Once reported, nothing is created: wait for the old Pods to be gone, then check.
        wait_for("the deleted pods to be gone", || async {
            pods.list(
                &ListParams::default().labels(&format!("etcd.operator.dev/cluster={CLUSTER}")),
            )
            .await
            .is_ok_and(|l| l.items.is_empty())
        })
        .await;
        let status = clusters.get(CLUSTER).await.unwrap().status.unwrap();
        assert_eq!(status.phase, ClusterPhase::Degraded, "{status:?}");
        assert!(
            member_pods(&client, &ns).await.is_empty(),
            "no new, empty cluster was bootstrapped"
        );
    })
}

/// Issue 9, item 5: the cluster is deleted with its Pods orphaned (they keep serving, owned
/// by nobody) and a cluster of the same name created at once. It adopts none of them: no
/// member, no cluster id, a Warning Event naming the Pod, the old Pods untouched. Once
/// they are deleted it bootstraps its own cluster, without the old keys.
fn pods_of_an_earlier_cluster_are_not_adopted(client: Client, ns: String) -> Scenario {
    Box::pin(async move {
        let clusters = apply_cluster(&client, &ns, empty_dir_spec(3, FROM)).await;
        wait_running(&clusters, 3, FROM).await;
        let old_id = status_of(&clusters, CLUSTER).await.unwrap().cluster_id;
        let old = member_pods(&client, &ns).await;
        etcdctl(&ns, &old[0].name_any(), &["put", "e2e", "old"]);
        clusters
            .delete(CLUSTER, &DeleteParams::orphan())
            .await
            .unwrap();
        wait_for("the cluster to be gone", || async {
            clusters.get_opt(CLUSTER).await.ok().flatten().is_none()
        })
        .await;
        wait_for("the orphaned pods to have no owner", || async {
            member_pods(&client, &ns)
                .await
                .iter()
                .all(|p| p.owner_references().is_empty())
        })
        .await;
        apply_cluster(&client, &ns, empty_dir_spec(3, FROM)).await;
        wait_for(
            "a Warning Event naming the earlier cluster's pod",
            || async { events_mentioning(&client, &ns, "belongs to another cluster").await },
        )
        .await;
        let status = status_of(&clusters, CLUSTER).await.unwrap_or_default();
        assert!(status.cluster_id.is_none(), "adopted: {status:?}");
        assert!(status.members.iter().all(|m| m.id.is_none()), "{status:?}");
        let uids = |pods: &[Pod]| pods.iter().filter_map(|p| p.uid()).collect::<Vec<_>>();
        assert_eq!(uids(&member_pods(&client, &ns).await), uids(&old));
        // The user removes the old Pods: the new cluster starts on its own.
        let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
        for pod in &old {
            pods.delete(&pod.name_any(), &DeleteParams::default())
                .await
                .unwrap();
        }
        wait_running(&clusters, 3, FROM).await;
        let new_id = status_of(&clusters, CLUSTER).await.unwrap().cluster_id;
        assert_ne!(new_id, old_id, "a new etcd cluster");
        let any = member_pods(&client, &ns).await[0].name_any();
        assert!(
            !etcdctl(&ns, &any, &["get", "e2e", "--print-value-only"]).contains("old"),
            "the old keyspace was adopted"
        );
    })
}

/// Issue 9, item 6: a ResourceQuota lets only the first of 3 bootstrap Pods be created.
/// Alone it never forms a quorum; once the quota allows it the bootstrap is finished.
fn a_bootstrap_stopped_by_a_quota_is_finished(client: Client, ns: String) -> Scenario {
    Box::pin(async move {
        let quotas: Api<ResourceQuota> = Api::namespaced(client.clone(), &ns);
        let quota = |pods: &str| {
            serde_json::from_value::<ResourceQuota>(json!({
                "apiVersion": "v1", "kind": "ResourceQuota",
                "metadata": { "name": "pods" },
                "spec": { "hard": { "pods": pods } },
            }))
            .unwrap()
        };
        quotas
            .patch(
                "pods",
                &PatchParams::apply("e2e").force(),
                &Patch::Apply(&quota("1")),
            )
            .await
            .unwrap();
        wait_for("the quota to be counted", || async {
            quotas
                .get_opt("pods")
                .await
                .ok()
                .flatten()
                .and_then(|q| q.status)
                .and_then(|s| s.hard)
                .is_some_and(|h| h.contains_key("pods"))
        })
        .await;
        let clusters = apply_cluster(&client, &ns, empty_dir_spec(3, FROM)).await;
        wait_for("the bootstrap to be refused by the quota", || async {
            events_mentioning(&client, &ns, "exceeded quota").await
        })
        .await;
        assert_eq!(member_pods(&client, &ns).await.len(), 1);
        let started = Instant::now();
        quotas
            .patch(
                "pods",
                &PatchParams::apply("e2e").force(),
                &Patch::Apply(&quota("10")),
            )
            .await
            .unwrap();
        wait_running(&clusters, 3, FROM).await;
        println!(
            "bootstrap-quota: running {:.1}s after the quota was raised",
            started.elapsed().as_secs_f64()
        );
    })
}

/// Issue 9, item 7: a follower's etcd process is frozen (SIGSTOP, found through /proc on
/// this node). After the unhealthy grace it is restarted in place: a new Pod on the same
/// PVC, the same member id, its keys; no PVC is deleted.
fn a_hung_member_is_restarted_on_its_pvc(client: Client, ns: String) -> Scenario {
    Box::pin(async move {
        let clusters = apply_cluster(&client, &ns, pvc_spec(3, FROM)).await;
        wait_running(&clusters, 3, FROM).await;
        let pods = member_pods(&client, &ns).await;
        etcdctl(&ns, &pods[0].name_any(), &["put", "e2e", "kept"]);
        let status = status_of(&clusters, CLUSTER).await.unwrap();
        let victim = status
            .members
            .iter()
            .find(|m| !m.is_leader)
            .expect("a follower")
            .clone();
        let Some(pid) = etcd_pid_on_this_node(&ns, &victim.name) else {
            println!("restart-in-place: skipped, the member's process is not on this machine");
            return;
        };
        let pvc_uids: Vec<String> = member_pvcs(&client, &ns)
            .await
            .iter()
            .filter_map(|p| p.uid())
            .collect();
        let pod_uid = pods
            .iter()
            .find(|p| p.name_any() == victim.name)
            .and_then(|p| p.uid());
        let started = Instant::now();
        run(Command::new("kill").args(["-STOP", &pid.to_string()]));
        wait_for(
            &format!("{} restarted in a new pod", victim.name),
            || async {
                member_pods(&client, &ns)
                    .await
                    .iter()
                    .any(|p| p.name_any() == victim.name && p.uid() != pod_uid)
            },
        )
        .await;
        wait_running(&clusters, 3, FROM).await;
        println!(
            "restart-in-place: healthy again {:.1}s after the freeze",
            started.elapsed().as_secs_f64()
        );
        assert_eq!(member_id(&clusters, &victim.name).await, victim.id);
        let after: Vec<String> = member_pvcs(&client, &ns)
            .await
            .iter()
            .filter_map(|p| p.uid())
            .collect();
        assert_eq!(after, pvc_uids, "no PVC was deleted or made anew");
        assert!(etcdctl(&ns, &victim.name, &["get", "e2e", "--print-value-only"]).contains("kept"));
    })
}

/// Issue 9, item 10: the only member is upgraded to a version whose image does not exist.
/// It never answers; after the upgrade deadline the cluster says UpgradeStalled; setting
/// spec.version back runs it at the old version again, with its keys.
fn a_lone_member_rolls_back_by_spec(client: Client, ns: String) -> Scenario {
    Box::pin(async move {
        let clusters = apply_cluster(&client, &ns, pvc_spec(1, FROM)).await;
        wait_running(&clusters, 1, FROM).await;
        let pod = member_pods(&client, &ns).await[0].name_any();
        etcdctl(&ns, &pod, &["put", "e2e", "kept"]);
        // 3.5.99: a valid version one minor up, with no image anywhere.
        apply_cluster(&client, &ns, pvc_spec(1, "3.5.99")).await;
        let started = Instant::now();
        wait_for("Degraded with UpgradeStalled", || async {
            status_of(&clusters, CLUSTER).await.is_some_and(|s| {
                condition::find(&s.conditions, "Degraded")
                    .is_some_and(|c| c.reason == "UpgradeStalled")
            })
        })
        .await;
        println!(
            "rollback-lone: stalled reported {:.1}s after the upgrade",
            started.elapsed().as_secs_f64()
        );
        apply_cluster(&client, &ns, pvc_spec(1, FROM)).await;
        wait_running(&clusters, 1, FROM).await;
        let pod = member_pods(&client, &ns).await[0].clone();
        assert_eq!(
            image_of(&pod),
            format!("gcr.io/etcd-development/etcd:v{FROM}")
        );
        assert!(
            etcdctl(&ns, &pod.name_any(), &["get", "e2e", "--print-value-only"]).contains("kept")
        );
    })
}

/// The operator's Pod is deleted while a scale-up from 3 to 5 is under way (a learner in
/// etcd): the new operator finishes it with exactly 5 members, none added twice.
fn the_operator_restarted_mid_scale_up_resumes(client: Client, ns: String) -> Scenario {
    Box::pin(async move {
        let clusters = apply_cluster(&client, &ns, empty_dir_spec(3, FROM)).await;
        wait_running(&clusters, 3, FROM).await;
        let first = member_pods(&client, &ns).await[0].name_any();
        etcdctl(&ns, &first, &["put", "e2e", "kept"]);
        apply_cluster(&client, &ns, empty_dir_spec(5, FROM)).await;
        wait_for("a learner being added", || async {
            status_of(&clusters, CLUSTER)
                .await
                .is_some_and(|s| s.members.len() > 3)
        })
        .await;
        let operators: Api<Pod> = Api::namespaced(client.clone(), OPERATOR_NS);
        let old = operators
            .list(&ListParams::default().labels("app.kubernetes.io/name=etcd-operator"))
            .await
            .unwrap()
            .items;
        for pod in &old {
            operators
                .delete(&pod.name_any(), &DeleteParams::default())
                .await
                .unwrap();
        }
        wait_running(&clusters, 5, FROM).await;
        let list = etcdctl(&ns, &first, &["member", "list"]);
        let lines: Vec<&str> = list.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 5, "{list}");
        let mut names: Vec<&str> = lines.iter().filter_map(|l| l.split(", ").nth(2)).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), 5, "a member was added twice: {list}");
        assert_eq!(member_pods(&client, &ns).await.len(), 5);
        let any = member_pods(&client, &ns).await[4].name_any();
        assert!(etcdctl(&ns, &any, &["get", "e2e", "--print-value-only"]).contains("kept"));
    })
}

/// Issue 9, item 3: a member Pod in phase `Failed` (as a node's graceful shutdown or an
/// eviction under pressure leaves it; here set through the status subresource, after which
/// the kubelet stops its containers) is deleted and created again on its PVC: the same
/// member id, its keys.
fn a_failed_pod_is_recreated_on_its_pvc(client: Client, ns: String) -> Scenario {
    Box::pin(async move {
        let clusters = apply_cluster(&client, &ns, pvc_spec(3, FROM)).await;
        wait_running(&clusters, 3, FROM).await;
        let pods = member_pods(&client, &ns).await;
        etcdctl(&ns, &pods[0].name_any(), &["put", "e2e", "kept"]);
        let victim = pods[2].clone();
        let id_before = member_id(&clusters, &victim.name_any()).await;
        let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
        api.patch_status(
            &victim.name_any(),
            &PatchParams::default(),
            &Patch::Merge(json!({ "status": { "phase": "Failed", "reason": "Shutdown" } })),
        )
        .await
        .unwrap();
        let started = Instant::now();
        wait_for(&format!("a new pod {}", victim.name_any()), || async {
            member_pods(&client, &ns).await.iter().any(|p| {
                p.name_any() == victim.name_any()
                    && p.uid() != victim.uid()
                    && p.status.as_ref().and_then(|s| s.phase.as_deref()) != Some("Failed")
            })
        })
        .await;
        wait_running(&clusters, 3, FROM).await;
        println!(
            "failed-pod: healthy again {:.1}s after the pod failed",
            started.elapsed().as_secs_f64()
        );
        assert_eq!(member_id(&clusters, &victim.name_any()).await, id_before);
        assert!(
            etcdctl(
                &ns,
                &victim.name_any(),
                &["get", "e2e", "--print-value-only"]
            )
            .contains("kept")
        );
    })
}

/// A scheduled EtcdBackup to an S3 server (Garage) running in the cluster, then an
/// EtcdRestore of it (by `backupName`) into a new cluster: every key and value compared.
fn a_scheduled_backup_restores_every_key(client: Client, ns: String) -> Scenario {
    Box::pin(async move {
        Garage::start(&client, &ns).await;
        let endpoint = format!("http://garage.{ns}.svc:3900");
        let clusters = apply_cluster(&client, &ns, EtcdClusterSpec::new(3, TO)).await;
        wait_running(&clusters, 3, TO).await;
        let first = member_pods(&client, &ns).await[0].name_any();
        // 250 keys in 3 transactions (etcd allows 128 operations in one).
        for chunk in (0..250).collect::<Vec<u32>>().chunks(100) {
            let mut txn = String::from("\n");
            for i in chunk {
                txn.push_str(&format!("put key/{i:04} value-{i}-{}\n", "x".repeat(64)));
            }
            txn.push_str("\n\n");
            etcdctl_stdin(&ns, &first, &["txn"], &txn);
        }
        let source = etcdctl(&ns, &first, &["get", "--prefix", "key/"]);
        assert_eq!(source.lines().count(), 500, "250 keys and values");
        let backups: Api<etcd_operator::api::EtcdBackup> = Api::namespaced(client.clone(), &ns);
        let backup: etcd_operator::api::EtcdBackup = serde_json::from_value(json!({
            "apiVersion": "etcd.operator.dev/v1alpha1",
            "kind": "EtcdBackup",
            "metadata": { "name": "hourly" },
            "spec": {
                "clusterName": CLUSTER,
                "schedule": "* * * * *",
                "destination": { "s3": {
                    "bucket": GARAGE_BUCKET,
                    "prefix": "e2e",
                    "endpoint": endpoint,
                    "region": "garage",
                    "forcePathStyle": true,
                    "credentialsSecret": "s3",
                }},
                "retention": { "keepLast": 3 },
            },
        }))
        .unwrap();
        backups
            .create(&PostParams::default(), &backup)
            .await
            .unwrap();
        let started = Instant::now();
        wait_for("a successful scheduled backup", || async {
            status_of(&backups, "hourly")
                .await
                .is_some_and(|s| s.last_successful_time.is_some())
        })
        .await;
        println!(
            "backup-restore: first scheduled backup done {:.1}s after the EtcdBackup",
            started.elapsed().as_secs_f64()
        );
        let restores: Api<EtcdRestore> = Api::namespaced(client.clone(), &ns);
        let restore: EtcdRestore = serde_json::from_value(json!({
            "apiVersion": "etcd.operator.dev/v1alpha1",
            "kind": "EtcdRestore",
            "metadata": { "name": "from-hourly" },
            "spec": {
                "source": { "backupName": "hourly" },
                "cluster": { "name": "restored", "spec": { "size": 3, "version": TO } },
            },
        }))
        .unwrap();
        restores
            .create(&PostParams::default(), &restore)
            .await
            .unwrap();
        let started = Instant::now();
        wait_for("the restore to complete", || async {
            status_of(&restores, "from-hourly")
                .await
                .is_some_and(|s| s.phase == etcd_operator::api::restore::RestorePhase::Completed)
        })
        .await;
        let restored: Api<EtcdCluster> = Api::namespaced(client.clone(), &ns);
        wait_for("the restored cluster to run 3 members", || async {
            status_of(&restored, "restored")
                .await
                .is_some_and(|s| running_with(&s, 3))
        })
        .await;
        println!(
            "backup-restore: restored cluster running {:.1}s after the EtcdRestore",
            started.elapsed().as_secs_f64()
        );
        for member in ["restored-0", "restored-1", "restored-2"] {
            let copy = etcdctl(&ns, member, &["get", "--prefix", "key/"]);
            assert_eq!(copy, source, "{member} differs from the source");
        }
    })
}

/// `etcdctl <args>` inside a member's container with `input` on its stdin.
fn etcdctl_stdin(ns: &str, pod: &str, args: &[&str], input: &str) -> String {
    use std::io::Write;
    let mut child = Command::new("kubectl")
        .args(["-n", ns, "exec", "-i", pod, "-c", "etcd", "--", "etcdctl"])
        .args(endpoint_flags(ns, pod))
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("kubectl exec");
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(input.as_bytes())
        .expect("writing to kubectl exec");
    let out = child.wait_with_output().expect("kubectl exec");
    assert!(
        out.status.success(),
        "etcdctl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Whether an Event in `ns` says `text` (in its note or message).
async fn events_mentioning(client: &Client, ns: &str, text: &str) -> bool {
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client.clone(), ns);
    events.list(&ListParams::default()).await.is_ok_and(|l| {
        l.items
            .iter()
            .any(|e| e.note.as_deref().is_some_and(|n| n.contains(text)))
    })
}

/// The pid of member `name`'s etcd process in `ns`, when it runs on this machine (a
/// single-node cluster the test runs on): the process whose command line names the member
/// and advertises the namespace's service.
fn etcd_pid_on_this_node(ns: &str, name: &str) -> Option<u32> {
    let name_flag = format!("--name={name}");
    let service = format!(".{ns}.svc");
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .find_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            let args: Vec<String> = cmdline
                .split(|b| *b == 0)
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            let is_etcd = args.first().is_some_and(|a| a.ends_with("etcd"));
            let named = args.contains(&name_flag);
            let ours = args.iter().any(|a| a.contains(&service));
            (is_etcd && named && ours).then_some(pid)
        })
}

// --- installation ---------------------------------------------------------------------

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Installs the operator as a user would, with `OPERATOR_IMAGE` when given, and waits for
/// it to be available and to run that image.
async fn install(client: &Client) {
    let image = std::env::var("OPERATOR_IMAGE").ok();
    match std::env::var("E2E_INSTALL").as_deref() {
        Ok("helm") => {
            // The real Helm v4 engine (PyPI helm-python-sdk, installed by install-test-deps).
            let mut values = serde_json::json!({});
            if let Some(image) = &image {
                let (repository, tag) = image.rsplit_once(':').expect("OPERATOR_IMAGE has a tag");
                values = serde_json::json!({"image": {"repository": repository, "tag": tag}});
            }
            // Helm installs a chart's crds/ only when the release is new and never upgrades
            // them: apply them first, as README tells users to before `helm upgrade` (found
            // when a release left by an earlier run was upgraded: the new status field
            // `pinned` was refused by the old schema).
            run(Command::new("kubectl")
                .args(["apply", "--server-side", "--force-conflicts", "-f"])
                .arg(repo().join("charts/etcd-operator/crds")));
            helm(serde_json::json!({
                "command": "install",
                "kubeconfig": kubeconfig(),
                "chart": repo().join("charts/etcd-operator"),
                "release": "etcd-operator",
                "namespace": OPERATOR_NS,
                "values": values,
            }));
        }
        _ => {
            run(Command::new("kubectl")
                .args(["apply", "-R", "-f"])
                .arg(repo().join("manifests")));
            if let Some(image) = &image {
                run(Command::new("kubectl").args([
                    "-n",
                    OPERATOR_NS,
                    "set",
                    "image",
                    "deployment/etcd-operator",
                    &format!("operator={image}"),
                ]));
            }
        }
    }
    run(Command::new("kubectl").args([
        "-n",
        OPERATOR_NS,
        "rollout",
        "status",
        "deployment/etcd-operator",
        "--timeout=300s",
    ]));
    if let Some(image) = image {
        let deployments: Api<Deployment> = Api::namespaced(client.clone(), OPERATOR_NS);
        let d = deployments.get("etcd-operator").await.unwrap();
        let running = d
            .spec
            .and_then(|s| s.template.spec)
            .and_then(|s| s.containers.into_iter().next())
            .and_then(|c| c.image);
        assert_eq!(running.as_deref(), Some(image.as_str()), "deployed image");
    }
}

/// The kubeconfig the suite runs against.
fn kubeconfig() -> String {
    std::env::var("KUBECONFIG").expect("KUBECONFIG is set when the suite runs")
}

/// `tests/packaging/helm_engine.py` with `request`, through the Helm venv's Python.
fn helm_command(request: serde_json::Value) -> Command {
    let python = std::env::var_os("HELM_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let cache = std::env::var_os("ETCD_OPERATOR_CACHE")
                .map(PathBuf::from)
                .unwrap_or_else(|| {
                    PathBuf::from(std::env::var("HOME").unwrap_or_default())
                        .join(".cache/etcd-operator")
                });
            cache.join("helm-venv/bin/python")
        });
    let mut cmd = Command::new(python);
    cmd.arg(repo().join("tests/packaging/helm_engine.py"))
        .arg(request.to_string());
    cmd
}

fn helm(request: serde_json::Value) {
    run(&mut helm_command(request));
}

fn uninstall() {
    let _ = match std::env::var("E2E_INSTALL").as_deref() {
        Ok("helm") => helm_command(serde_json::json!({
            "command": "uninstall",
            "kubeconfig": kubeconfig(),
            "release": "etcd-operator",
            "namespace": OPERATOR_NS,
        }))
        .output(),
        _ => Command::new("kubectl")
            .args(["delete", "--ignore-not-found", "-R", "-f"])
            .arg(repo().join("manifests"))
            .output(),
    };
}

// --- helpers --------------------------------------------------------------------------

async fn create_namespace(client: &Client, ns: &str) {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    // A namespace left by an earlier run may still be terminating: creates in it would be
    // refused, so wait until it is gone.
    wait_for(&format!("namespace {ns} from an earlier run to finish terminating"), || async {
        !matches!(namespaces.get_opt(ns).await, Ok(Some(n)) if n.metadata.deletion_timestamp.is_some())
    })
    .await;
    let object: Namespace = serde_json::from_value(json!({ "metadata": { "name": ns } })).unwrap();
    match namespaces.create(&PostParams::default(), &object).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.is_already_exists() => {}
        Err(e) => panic!("creating namespace {ns}: {e}"),
    }
}

/// Applies the EtcdCluster `e2e` with `spec` (as the test's own field manager).
async fn apply_cluster(client: &Client, ns: &str, spec: EtcdClusterSpec) -> Api<EtcdCluster> {
    let clusters: Api<EtcdCluster> = Api::namespaced(client.clone(), ns);
    let object = EtcdCluster::new(CLUSTER, spec);
    clusters
        .patch(
            CLUSTER,
            &PatchParams::apply("e2e").force(),
            &Patch::Apply(&object),
        )
        .await
        .expect("applying the EtcdCluster");
    clusters
}

async fn phase(clusters: &Api<EtcdCluster>) -> Option<ClusterPhase> {
    let c = clusters.get_opt(CLUSTER).await.ok()??;
    c.status.map(|s| s.phase)
}

/// Waits until the cluster runs `size` healthy voters at `version` for the current spec.
/// Phase `Running` with `ready` ready members.
fn running_with(s: &etcd_operator::api::EtcdClusterStatus, ready: i32) -> bool {
    s.phase == ClusterPhase::Running && s.ready_members == ready
}

/// Three member Pods, none of them one of `before` (name, uid): each was recreated.
fn all_recreated(pods: &[Pod], before: &[(String, Option<String>)]) -> bool {
    pods.len() == 3
        && pods
            .iter()
            .all(|p| !before.iter().any(|(_, uid)| *uid == p.uid()))
}

async fn wait_running(clusters: &Api<EtcdCluster>, size: i32, version: &str) {
    wait_for(
        &format!("{size} healthy members at {version}, phase Running"),
        || async {
            let Ok(Some(c)) = clusters.get_opt(CLUSTER).await else {
                return false;
            };
            let Some(s) = c.status else { return false };
            s.observed_generation == c.metadata.generation
                && s.phase == ClusterPhase::Running
                && s.ready_members == size
                && s.members.len() == usize::try_from(size).unwrap_or(0)
                && s.current_version.as_deref() == Some(version)
        },
    )
    .await;
}

/// Waits until `size` member Pods exist and `victim` is not among them: an emptyDir member
/// whose Pod went away is replaced under a new name.
async fn wait_replaced(client: &Client, ns: &str, victim: &str, size: usize) {
    wait_for(&format!("member {victim} to be replaced"), || async {
        let names: Vec<String> = member_pods(client, ns)
            .await
            .iter()
            .map(ResourceExt::name_any)
            .collect();
        names.len() == size && !names.iter().any(|n| n == victim)
    })
    .await;
}

/// Polls `condition` until it holds or [`DEADLINE`] passes.
async fn wait_for<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let until = Instant::now() + DEADLINE;
    while Instant::now() < until {
        if condition().await {
            return;
        }
        tokio::time::sleep(POLL).await;
    }
    panic!("timed out after {DEADLINE:?} waiting for {what}");
}

/// The cluster's member Pods that are not being deleted, by name.
/// The status of `name`, when it exists and has one (errors read as "not yet").
async fn status_of<K>(api: &Api<K>, name: &str) -> Option<K::Status>
where
    K: HasStatus + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let mut object = api.get_opt(name).await.ok().flatten()?;
    object.status_mut().take()
}

async fn member_pods(client: &Client, ns: &str) -> Vec<Pod> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let mut list: Vec<Pod> = pods
        .list(&ListParams::default().labels(&format!("etcd.operator.dev/cluster={CLUSTER}")))
        .await
        .expect("listing member pods")
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect();
    list.sort_by_key(ResourceExt::name_any);
    list
}

/// The cluster's PVCs, by name.
async fn member_pvcs(client: &Client, ns: &str) -> Vec<PersistentVolumeClaim> {
    let api: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), ns);
    let mut list = api
        .list(&ListParams::default().labels(&format!("etcd.operator.dev/cluster={CLUSTER}")))
        .await
        .expect("listing member pvcs")
        .items;
    list.sort_by_key(ResourceExt::name_any);
    list
}

/// `size` members at `version` on emptyDir: a lost Pod is a lost member.
fn empty_dir_spec(size: i32, version: &str) -> EtcdClusterSpec {
    let mut spec = EtcdClusterSpec::new(size, version);
    spec.storage = Some(StorageSpec {
        empty_dir: Some(EmptyDirStorage::default()),
        pvc: None,
    });
    spec
}

/// The etcd id the status gives member `name`.
async fn member_id(clusters: &Api<EtcdCluster>, name: &str) -> Option<String> {
    let c = clusters.get(CLUSTER).await.ok()?;
    c.status?.members.into_iter().find(|m| m.name == name)?.id
}

/// `size` members at `version`, each on a 1Gi PVC of the default StorageClass.
fn pvc_spec(size: i32, version: &str) -> EtcdClusterSpec {
    let mut spec = EtcdClusterSpec::new(size, version);
    spec.storage = Some(StorageSpec {
        empty_dir: None,
        pvc: Some(PvcStorage {
            storage_class_name: None,
            size: "1Gi".into(),
            retention_policy: None,
        }),
    });
    spec
}

fn image_of(pod: &Pod) -> String {
    pod.spec
        .as_ref()
        .and_then(|s| s.containers.first())
        .and_then(|c| c.image.clone())
        .unwrap_or_default()
}

/// `etcdctl <args>` inside a member's container, against that member.
fn etcdctl(ns: &str, pod: &str, args: &[&str]) -> String {
    run(Command::new("kubectl")
        .args(["-n", ns, "exec", pod, "-c", "etcd", "--", "etcdctl"])
        .args(endpoint_flags(ns, pod))
        .args(args))
}

/// How `etcdctl` inside member `pod` reaches it: over TLS with the member's own server
/// certificate (it carries client auth and 127.0.0.1) when the member serves TLS, else
/// plaintext.
fn endpoint_flags(ns: &str, pod: &str) -> Vec<String> {
    let args = run(Command::new("kubectl").args([
        "-n",
        ns,
        "get",
        "pod",
        pod,
        "-o",
        "jsonpath={.spec.containers[0].args}",
    ]));
    if args.contains("--client-cert-auth=true") {
        vec![
            "--endpoints=https://127.0.0.1:2379".into(),
            "--cacert=/etc/etcd/tls/ca.crt".into(),
            "--cert=/etc/etcd/tls/server.crt".into(),
            "--key=/etc/etcd/tls/server.key".into(),
        ]
    } else {
        vec!["--endpoints=http://127.0.0.1:2379".into()]
    }
}

// --- an S3 server in the scenario's namespace ------------------------------------------

/// Where the restore scenarios keep their snapshot.
const SNAPSHOT_KEY: &str = "snapshots/e2e-rev1.db";
const GARAGE_IMAGE: &str = "docker.io/dxflrs/garage:v2.5.0";
const GARAGE_BUCKET: &str = "snapshots";

/// A single-node Garage Pod and Service `garage` in a scenario's namespace, with a key that
/// owns [`GARAGE_BUCKET`] and the Secret `s3` holding it. Members and the operator reach it
/// at `http://garage.<ns>.svc:3900`; the test writes objects through `kubectl port-forward`.
struct Garage {
    ns: String,
    access_key: String,
    secret_key: String,
}

impl Garage {
    async fn start(client: &Client, ns: &str) -> Self {
        let hex = |n: usize| -> String {
            let mut bytes = vec![0u8; n];
            getrandom(&mut bytes);
            bytes.iter().map(|b| format!("{b:02x}")).collect()
        };
        let config = format!(
            "metadata_dir = \"/var/lib/garage/meta\"\n\
             data_dir = \"/var/lib/garage/data\"\n\
             db_engine = \"sqlite\"\n\
             replication_factor = 1\n\
             rpc_bind_addr = \"0.0.0.0:3901\"\n\
             rpc_public_addr = \"127.0.0.1:3901\"\n\
             rpc_secret = \"{}\"\n\
             [s3_api]\n\
             s3_region = \"garage\"\n\
             api_bind_addr = \"0.0.0.0:3900\"\n",
            hex(32)
        );
        let objects = json!([
            {
                "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": { "name": "garage", "namespace": ns },
                "data": { "garage.toml": config },
            },
            {
                "apiVersion": "v1", "kind": "Pod",
                "metadata": { "name": "garage", "namespace": ns, "labels": { "app": "garage" } },
                "spec": {
                    "containers": [{
                        "name": "garage",
                        "image": GARAGE_IMAGE,
                        "imagePullPolicy": "IfNotPresent",
                        "ports": [{ "containerPort": 3900 }],
                        "volumeMounts": [
                            { "name": "config", "mountPath": "/etc/garage.toml", "subPath": "garage.toml" },
                            { "name": "data", "mountPath": "/var/lib/garage" },
                        ],
                    }],
                    "volumes": [
                        { "name": "config", "configMap": { "name": "garage" } },
                        { "name": "data", "emptyDir": {} },
                    ],
                },
            },
            {
                "apiVersion": "v1", "kind": "Service",
                "metadata": { "name": "garage", "namespace": ns },
                "spec": { "selector": { "app": "garage" }, "ports": [{ "port": 3900 }] },
            },
        ]);
        let mut apply = Command::new("kubectl");
        apply
            .args(["apply", "-f", "-"])
            .stdin(std::process::Stdio::piped());
        let mut child = apply
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("kubectl apply");
        {
            use std::io::Write as _;
            let list = json!({ "apiVersion": "v1", "kind": "List", "items": objects });
            child
                .stdin
                .take()
                .unwrap()
                .write_all(list.to_string().as_bytes())
                .unwrap();
        }
        assert!(child.wait().unwrap().success(), "applying garage");
        let garage = Self {
            ns: ns.to_owned(),
            access_key: format!("GK{}", hex(12)),
            secret_key: hex(32),
        };
        let mut node = String::new();
        wait_for("garage answering its cli", || {
            let out = garage.cli_output(&["node", "id", "-q"]);
            let status = garage.cli_output(&["status"]);
            node = out.clone().unwrap_or_default();
            async move { out.is_some() && status.is_some() }
        })
        .await;
        let node_id = node.trim().split('@').next().unwrap_or_default().to_owned();
        garage.cli(&["layout", "assign", "-z", "dc1", "-c", "1G", &node_id]);
        garage.cli(&["layout", "apply", "--version", "1"]);
        garage.cli(&[
            "key",
            "import",
            "--yes",
            "-n",
            "e2e",
            &garage.access_key,
            &garage.secret_key,
        ]);
        garage.cli(&["bucket", "create", GARAGE_BUCKET]);
        garage.cli(&[
            "bucket",
            "allow",
            "--read",
            "--write",
            "--owner",
            GARAGE_BUCKET,
            "--key",
            "e2e",
        ]);
        let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
        let secret: Secret = serde_json::from_value(json!({
            "metadata": { "name": "s3" },
            "stringData": {
                "accessKeyId": garage.access_key,
                "secretAccessKey": garage.secret_key,
            },
        }))
        .unwrap();
        secrets
            .create(&PostParams::default(), &secret)
            .await
            .unwrap();
        garage
    }

    /// `garage <args>` in the Pod; `None` while it does not answer.
    fn cli_output(&self, args: &[&str]) -> Option<String> {
        let out = Command::new("kubectl")
            .args(["-n", &self.ns, "exec", "garage", "--", "/garage"])
            .args(args)
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn cli(&self, args: &[&str]) -> String {
        run(Command::new("kubectl")
            .args(["-n", &self.ns, "exec", "garage", "--", "/garage"])
            .args(args))
    }

    /// Writes `body` at `key` as a plain upload (no metadata); returns its ETag.
    async fn put(&self, key: &str, body: Vec<u8>) -> String {
        let mut forward = Command::new("kubectl")
            .args(["-n", &self.ns, "port-forward", "pod/garage", ":3900"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("kubectl port-forward");
        // Kept open while forwarding: kubectl dies of SIGPIPE once nobody reads its output.
        let mut output = std::io::BufReader::new(forward.stdout.take().unwrap());
        let port = {
            use std::io::BufRead as _;
            let mut line = String::new();
            output.read_line(&mut line).unwrap();
            // "Forwarding from 127.0.0.1:41234 -> 3900"
            line.split(" -> ")
                .next()
                .and_then(|l| l.rsplit(':').next())
                .and_then(|p| p.trim().parse::<u16>().ok())
                .unwrap_or_else(|| panic!("port-forward said {line:?}"))
        };
        let connection = etcd_operator::api::s3::S3Connection {
            endpoint: Some(format!("http://127.0.0.1:{port}")),
            region: Some("garage".into()),
            force_path_style: Some(true),
            credentials_secret: None,
        };
        let credentials = etcd_operator::backup::StaticCredentials::new(
            self.access_key.clone(),
            self.secret_key.clone(),
            None,
        );
        let s3 = etcd_operator::backup::client(&connection, Some(credentials)).await;
        let put = s3
            .put_object()
            .bucket(GARAGE_BUCKET)
            .key(key)
            .body(body.into())
            .send()
            .await;
        let _ = forward.kill();
        let _ = forward.wait();
        drop(output);
        put.expect("uploading through port-forward")
            .e_tag()
            .unwrap()
            .to_owned()
    }

    /// Creates the EtcdRestore `name` of [`SNAPSHOT_KEY`] into the cluster `e2e` with `spec`.
    async fn restore(
        &self,
        client: &Client,
        name: &str,
        spec: EtcdClusterSpec,
    ) -> Api<EtcdRestore> {
        let restore: EtcdRestore = serde_json::from_value(json!({
            "apiVersion": "etcd.operator.dev/v1alpha1",
            "kind": "EtcdRestore",
            "metadata": { "name": name },
            "spec": {
                "source": { "s3": {
                    "bucket": GARAGE_BUCKET,
                    "key": SNAPSHOT_KEY,
                    "endpoint": format!("http://garage.{}.svc:3900", self.ns),
                    "region": "garage",
                    "forcePathStyle": true,
                    "credentialsSecret": "s3",
                }},
                "cluster": { "name": CLUSTER, "spec": spec },
            },
        }))
        .unwrap();
        let restores: Api<EtcdRestore> = Api::namespaced(client.clone(), &self.ns);
        restores
            .create(&PostParams::default(), &restore)
            .await
            .unwrap();
        restores
    }
}

/// Random bytes from the kernel.
fn getrandom(buf: &mut [u8]) {
    use std::io::Read as _;
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(buf))
        .expect("reading /dev/urandom");
}

/// A label on a node, removed again when dropped (a failing scenario included).
struct NodeLabel {
    node: String,
    key: String,
}

impl NodeLabel {
    fn set(node: &str, key: &str) -> Self {
        run(Command::new("kubectl").args(["label", "node", node, &format!("{key}=yes")]));
        Self {
            node: node.to_owned(),
            key: key.to_owned(),
        }
    }
}

impl Drop for NodeLabel {
    fn drop(&mut self) {
        let _ = Command::new("kubectl")
            .args(["label", "node", &self.node, &format!("{}-", self.key)])
            .output();
    }
}
