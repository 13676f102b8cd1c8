//! The Kubernetes driver: `etcd-operator run`. Three kube-runtime Controllers, one per kind
//! ([`cluster`], [`backup`], [`restore`]), run side by side under one leader election
//! ([`leader`]) and share what every Kubernetes controller here needs: one status apply,
//! one way to log a Controller's results, and the lock helper.

pub mod backup;
pub mod cert_manager;
pub mod cluster;
pub mod leader;
pub mod recovery;
pub mod restore;
pub mod secrets;

use std::fmt::Debug;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use futures::FutureExt;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::{Action, Error as ControllerError};
use kube::runtime::events::Reporter;
use kube::runtime::reflector::{Lookup, ObjectRef};
use kube::runtime::watcher;
use kube::{Api, Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;
use thiserror::Error;
use tracing::{debug, info, warn};

use crate::error_chain::error_chain;
use crate::metrics::{self, Metrics};
use crate::plan::Policy;
use crate::runtime::pods::FIELD_MANAGER;

/// How `run` is set up.
#[derive(Clone, Debug)]
pub struct Options {
    /// Watch one namespace; all when `None`.
    pub namespace: Option<String>,
    pub metrics_addr: SocketAddr,
    /// Run the controllers only while holding this Lease.
    pub leader_election: Option<leader::LeaseOptions>,
    pub policy: Policy,
    /// This replica, in Events and the Lease.
    pub identity: String,
    /// The operator's image as configured (`OPERATOR_IMAGE`): used only when the operator
    /// does not run in a Pod it can read (see [`operator_image`]).
    pub operator_image: Option<String>,
    /// The Pod the operator runs in (Downward API), whose image restored members' init
    /// containers run.
    pub self_pod: Option<SelfPod>,
    /// Part data all backups may hold in memory, in MiB.
    pub backup_memory_budget_mib: u64,
    /// Let backups and restores without `credentialsSecret` use the operator's own cloud
    /// identity.
    pub allow_ambient_credentials: bool,
    /// Where `etcdutl` is for `verify: true` backups.
    pub snapshot_tool_dir: std::path::PathBuf,
}

/// The operator's own Pod, from the Downward API (`POD_NAMESPACE`, `POD_NAME`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SelfPod {
    pub namespace: String,
    pub name: String,
}

/// The container of the operator's Deployment that runs `etcd-operator run`.
pub const OPERATOR_CONTAINER: &str = "operator";

/// Why `run` stopped.
#[derive(Debug, Error)]
pub enum RunError {
    #[error("connecting to the Kubernetes API")]
    Client(#[source] kube::Error),
    #[error("serving metrics")]
    Metrics(#[from] metrics::Error),
    #[error("leader election")]
    Leader(#[from] leader::Error),
}

/// Serves metrics and runs the controllers (while leading, with leader election) until
/// `shutdown` resolves; in-flight reconciles finish first.
///
/// # Errors
/// [`RunError::Leader`] also when leadership is lost: the caller should exit, so a
/// restarted process stands by again instead of racing the new leader.
pub async fn run(
    opts: Options,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RunError> {
    let client = Client::try_default().await.map_err(RunError::Client)?;
    let mut opts = opts;
    opts.operator_image =
        operator_image(&client, opts.self_pod.as_ref(), opts.operator_image.take()).await;
    let metrics = Metrics::new();
    let (addr, server) = metrics::serve(metrics.clone(), opts.metrics_addr).await?;
    info!(%addr, "serving metrics");
    let shutdown = shutdown.boxed().shared();
    let controllers = controllers(client.clone(), &opts, metrics.clone(), shutdown.clone());
    let result = match &opts.leader_election {
        None => {
            metrics.set_ready(true);
            controllers.await;
            Ok(())
        }
        Some(lease) => {
            // A standby is ready too: with one replica, a rolling update waits for the new
            // Pod to be ready before the old one lets go of the Lease.
            let on_standby = || metrics.set_ready(true);
            leader::while_leading(
                client,
                lease,
                &opts.identity,
                shutdown,
                on_standby,
                controllers,
            )
            .await
            .map_err(RunError::from)
        }
    };
    server.abort();
    info!("operator stopped");
    result
}

/// The image restored members' init containers run: the image of the `operator`
/// container (or the only one) of the Pod the operator runs in, so `kubectl set image`
/// moves it too. `configured` (`OPERATOR_IMAGE`) only outside a Pod, or when the Pod cannot
/// be read (logged: a namespaced install watching another namespace may not read it).
pub async fn operator_image(
    client: &Client,
    self_pod: Option<&SelfPod>,
    configured: Option<String>,
) -> Option<String> {
    let Some(me) = self_pod else {
        return configured;
    };
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(client.clone(), &me.namespace);
    let containers = match pods.get(&me.name).await {
        Ok(pod) => pod.spec.map(|s| s.containers).unwrap_or_default(),
        Err(e) => {
            warn!(pod = %me.name, namespace = %me.namespace, error = %error_chain(&e), configured = ?configured, "cannot read the operator's own pod; restored members use the configured image");
            return configured;
        }
    };
    let own = match containers.iter().find(|c| c.name == OPERATOR_CONTAINER) {
        Some(c) => Some(c),
        None if containers.len() == 1 => containers.first(),
        None => None,
    };
    match own.and_then(|c| c.image.clone()) {
        Some(image) => {
            info!(%image, "restored members run the operator's own image");
            Some(image)
        }
        None => {
            warn!(pod = %me.name, configured = ?configured, "the operator's pod has no operator container; restored members use the configured image");
            configured
        }
    }
}

/// The EtcdCluster, EtcdBackup and EtcdRestore Controllers, ready to run until `shutdown`.
fn controllers(
    client: Client,
    opts: &Options,
    metrics: Metrics,
    shutdown: impl Future<Output = ()> + Clone + Send + Sync + 'static,
) -> impl Future<Output = ()> + Send + 'static {
    let ns = opts.namespace.as_deref();
    let reporter = Reporter {
        controller: FIELD_MANAGER.to_string(),
        instance: Some(opts.identity.clone()),
    };
    let mut ctx = cluster::Context::new(
        client.clone(),
        opts.policy.clone(),
        metrics.clone(),
        reporter.clone(),
    );
    ctx.operator_image = opts.operator_image.clone();
    ctx.allow_ambient_credentials = opts.allow_ambient_credentials;
    let clusters = cluster::controller(client.clone(), ns, Arc::new(ctx), shutdown.clone());
    let mut backup_ctx = backup::Context::new(client.clone(), metrics.clone(), reporter.clone());
    backup_ctx.memory_budget_mib = opts.backup_memory_budget_mib;
    backup_ctx.allow_ambient_credentials = opts.allow_ambient_credentials;
    backup_ctx.verifier = crate::backup::Verifier::new(crate::backup::SnapshotTools::Dir(
        opts.snapshot_tool_dir.clone(),
    ));
    let backups = backup::controller(api(&client, ns), Arc::new(backup_ctx), shutdown.clone());
    let restores = restore::controller(
        api(&client, ns),
        api(&client, ns),
        Arc::new({
            let mut ctx = restore::Context::new(client.clone(), metrics, reporter);
            ctx.allow_ambient_credentials = opts.allow_ambient_credentials;
            ctx
        }),
        shutdown,
    );
    info!(
        namespace = ns.unwrap_or("<all>"),
        "starting the EtcdCluster, EtcdBackup and EtcdRestore controllers"
    );
    async move {
        futures::join!(clusters, backups, restores);
    }
}

/// An API of namespaced `K` in one namespace, or in all.
fn api<K>(client: &Client, ns: Option<&str>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    <K as Resource>::DynamicType: Default,
{
    match ns {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Server-side applies `status` on `object`'s status subresource, as the only field manager.
///
/// # Errors
/// The API server's refusal (conflict, throttling, RBAC, validation).
pub(crate) async fn apply_status<K>(
    client: &Client,
    object: &K,
    status: &impl Serialize,
) -> Result<(), kube::Error>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + Debug
        + DeserializeOwned,
{
    let api: Api<K> = Api::namespaced(
        client.clone(),
        &ResourceExt::namespace(object).unwrap_or_default(),
    );
    let patch = json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    api.patch_status(
        &object.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    Ok(())
}

/// Logs one result of a Controller of `kind`: reconciler failures are logged by the error
/// policies already, a trigger for an object deleted meanwhile is skipped, and a failing
/// watch (RBAC, API server) is retried by kube with backoff but made visible here.
pub(crate) fn log_result<K, E>(
    kind: &'static str,
    result: Result<(ObjectRef<K>, Action), ControllerError<E, watcher::Error>>,
) -> futures::future::Ready<()>
where
    K: Lookup,
    E: std::error::Error + 'static,
{
    match result {
        Ok((object, action)) => debug!(kind, object = %object, ?action, "reconciled"),
        Err(ControllerError::ReconcilerFailed(..)) => {}
        Err(e @ ControllerError::ObjectNotFound(_)) => debug!(kind, error = %e, "skipped"),
        Err(e) => warn!(kind, error = %error_chain(&e), "controller watch failed"),
    }
    futures::future::ready(())
}

/// Consecutive failures per object, for a backoff: counted up by each failure, cleared by a
/// success. Each Controller runs one reconcile per object at a time, so a count is never
/// raced; the lock only guards the map.
#[derive(Debug)]
pub(crate) struct Failures<K: std::hash::Hash + Eq> {
    counts: Mutex<std::collections::HashMap<K, (u32, std::time::Instant)>>,
    /// Failures closer together than this count once.
    burst: std::time::Duration,
}

/// For the EtcdCluster controller: a burst of watch events (the objects a failed step just
/// created) must not double the backoff five times in a second. Seen on a real cluster: a
/// bootstrap stopped by a ResourceQuota backed off to 300 s within 1.3 s, so raising the
/// quota was noticed only minutes later.
pub(crate) const FAILURE_BURST: std::time::Duration = std::time::Duration::from_secs(2);

impl<K: std::hash::Hash + Eq> Default for Failures<K> {
    /// Every failure counts.
    fn default() -> Self {
        Self::with_burst(std::time::Duration::ZERO)
    }
}

impl<K: std::hash::Hash + Eq> Failures<K> {
    /// Failures less than `burst` after the last one counted do not count again.
    pub(crate) fn with_burst(burst: std::time::Duration) -> Self {
        Self {
            counts: Mutex::default(),
            burst,
        }
    }

    /// Counts one more failure of `key` (unless the last one counted was less than the
    /// burst ago); returns the failures in a row.
    pub(crate) fn record(&self, key: K) -> u32 {
        self.record_at(key, std::time::Instant::now())
    }

    fn record_at(&self, key: K, now: std::time::Instant) -> u32 {
        let mut failures = lock(&self.counts);
        let (n, last) = failures.entry(key).or_insert((0, now));
        if *n == 0 || now.saturating_duration_since(*last) >= self.burst {
            *n = n.saturating_add(1);
            *last = now;
        }
        *n
    }

    /// `key` succeeded: the next failure is the first again.
    pub(crate) fn clear(&self, key: &K) {
        lock(&self.counts).remove(key);
    }
}

/// A poisoned lock only means a reconcile panicked mid-update of a plain map.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use http::{Method, StatusCode};
    use serde_json::json;

    use super::*;
    use crate::testing::api_server::{ApiServer, within_1s};

    #[test]
    fn a_burst_of_failures_counts_once() {
        let failures = Failures::with_burst(FAILURE_BURST);
        let t0 = std::time::Instant::now();
        let at = |ms| t0 + std::time::Duration::from_millis(ms);
        assert_eq!(failures.record_at("a", at(0)), 1);
        assert_eq!(failures.record_at("a", at(300)), 1, "same burst");
        assert_eq!(failures.record_at("a", at(1_900)), 1, "same burst");
        assert_eq!(failures.record_at("a", at(2_100)), 2);
        assert_eq!(failures.record_at("b", at(2_100)), 1, "per key");
        failures.clear(&"a");
        assert_eq!(failures.record_at("a", at(2_200)), 1, "cleared");
        let every = Failures::default();
        assert_eq!(every.record_at("a", at(0)), 1);
        assert_eq!(
            every.record_at("a", at(0)),
            2,
            "no burst window: each counts"
        );
    }

    fn me() -> SelfPod {
        SelfPod {
            namespace: "etcd-operator".into(),
            name: "etcd-operator-7d9f-x2".into(),
        }
    }

    const ME: &str = "/api/v1/namespaces/etcd-operator/pods/etcd-operator-7d9f-x2";

    fn pod(containers: serde_json::Value) -> serde_json::Value {
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": { "name": "etcd-operator-7d9f-x2", "namespace": "etcd-operator" },
            "spec": { "containers": containers },
        })
    }

    /// After `kubectl set image`, OPERATOR_IMAGE still names the old image: the running
    /// Pod's is the one restored members must run.
    #[tokio::test]
    async fn in_a_pod_restored_members_run_the_pods_own_image_not_operator_image() {
        let (client, server) = ApiServer::client("default");
        let server = server.run(|mut s| async move {
            s.expect(Method::GET, ME).await.reply(&pod(json!([
                { "name": "sidecar", "image": "proxy:1" },
                { "name": "operator", "image": "registry.example/etcd-operator:new" },
            ])));
        });
        let image = operator_image(&client, Some(&me()), Some("ghcr.io/x:0.1.0".into())).await;
        within_1s(server).await;
        assert_eq!(image.as_deref(), Some("registry.example/etcd-operator:new"));
    }

    #[tokio::test]
    async fn a_pod_with_one_container_under_another_name_gives_its_image() {
        let (client, server) = ApiServer::client("default");
        let server = server.run(|mut s| async move {
            s.expect(Method::GET, ME)
                .await
                .reply(&pod(json!([{ "name": "manager", "image": "mine:2" }])));
        });
        let image = operator_image(&client, Some(&me()), None).await;
        within_1s(server).await;
        assert_eq!(image.as_deref(), Some("mine:2"));
    }

    #[tokio::test]
    async fn outside_a_pod_the_configured_image_is_used_without_requests() {
        let (client, server) = ApiServer::client("default");
        let server = server.run(|_| async {});
        let image = operator_image(&client, None, Some("configured:1".into())).await;
        within_1s(server).await;
        assert_eq!(image.as_deref(), Some("configured:1"));
    }

    #[tokio::test]
    async fn an_unreadable_own_pod_falls_back_to_the_configured_image() {
        let (client, server) = ApiServer::client("default");
        let server = server.run(|mut s| async move {
            s.expect(Method::GET, ME)
                .await
                .fail(StatusCode::FORBIDDEN, "Forbidden");
        });
        let image = operator_image(&client, Some(&me()), Some("configured:1".into())).await;
        within_1s(server).await;
        assert_eq!(image.as_deref(), Some("configured:1"));
    }
}
