//! The `EtcdCluster` Controller: runs one [`reconcile_once`] pass per trigger on a
//! [`PodRuntime`], writes the status with server-side apply and reports what it did as
//! Events. What a pass decides is the planner's job; how members become Pods is the
//! runtime's. [`super::run`] starts it next to the EtcdBackup and EtcdRestore controllers
//! ([`super::backup`], [`super::restore`]), under the same leader election.
//!
//! # Flow
//! 1. EtcdClusters (one namespace or all) are watched for new generations only (so the
//!    controller's own status writes do not trigger it), and so are the Pods, PVCs, Services
//!    and PDBs of their members (PVCs by label, the rest by owner) (only those labelled `app.kubernetes.io/managed-by=etcd-operator`),
//!    so a member Pod's death reconciles its cluster at once.
//! 2. [`reconcile`]: observe → plan → execute → status ([`reconcile_once`]), then the
//!    status is applied (skipped when unchanged) and an Event is published for an executed
//!    step, a failed one and a refusal (`Blocked`). Recoveries from a backup go through
//!    [`KubeRecovery`] (`super::recovery`).
//! 3. The next pass: 2 s after an executed step, 5 s while waiting (on etcd or a grace
//!    period), 30 s otherwise; an invalid spec waits for a change. Failures back off by
//!    kind, doubling per consecutive failure ([`error_policy`]).
//!
//! # Guarantees
//! One reconcile per cluster at a time (the Controller queues triggers for a cluster that
//! is being reconciled), which is what [`PodRuntime`] and the health trackers rely on.
//!
//! # Finalizers
//! None. Every Pod, Service and PDB carries the cluster as its controller owner, so
//! Kubernetes' garbage collector deletes them with the cluster; PVCs too with
//! `storage.pvc.retentionPolicy.whenDeleted: Delete`. With `Retain` (the default) PVCs
//! have no owner and outlive the cluster (and its CRD), labelled with its name and uid; a
//! later cluster of the same name refuses to start over them (`RetainedVolumesFound`).
//! Nothing outside the API server has to be cleaned up first. A cluster being deleted is
//! left alone.
//!
//! # Assumptions
//! The operator runs inside the cluster: members are reached by their Pod DNS names.

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::{WatchStreamExt, predicates, watcher};
use kube::{Client, Resource, ResourceExt};
use thiserror::Error;
use tracing::{debug, instrument, warn};

use super::recovery::KubeRecovery;
use super::{Failures, api, apply_status, lock, log_result};
use crate::api::EtcdCluster;
use crate::error_chain::error_chain;
use crate::metrics::{ErrorLabels, Metrics};
use crate::plan::{BlockReason, Policy, Step};
use crate::reconcile::status::{block_reason, step_reason};
use crate::reconcile::{self, Executed, HealthTracker, reconcile_once};
use crate::runtime::pods::LABEL_CLUSTER;
use crate::runtime::{self, ClusterRef, PodRuntime};

/// The next pass after an executed step.
pub const AFTER_STEP: Duration = Duration::from_secs(2);
/// The next pass while the planner waits (on etcd, a learner, a grace period).
pub const WHILE_WAITING: Duration = Duration::from_secs(5);
/// The next pass when nothing is in progress: the health check of a settled cluster.
pub const RESYNC: Duration = Duration::from_secs(30);
/// The longest failure backoff.
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// Selects the objects the runtime creates, so owned watches skip everything else.
const OWNED_SELECTOR: &str = "app.kubernetes.io/managed-by=etcd-operator";

/// What a reconcile pass failed at.
#[derive(Debug, Error)]
pub enum Error {
    #[error("building the pod runtime")]
    PodRuntime(#[source] runtime::Error),
    #[error("observing the cluster")]
    Observe(#[source] reconcile::Error),
    #[error("executing the step")]
    Step(#[source] reconcile::Error),
    #[error("applying the status")]
    PatchStatus(#[source] kube::Error),
}

impl Error {
    /// A static label for metrics: the variant, or the failed step's.
    pub fn label(&self) -> &'static str {
        match self {
            Error::PodRuntime(_) => "PodRuntime",
            Error::Observe(e) | Error::Step(e) => e.label(),
            Error::PatchStatus(_) => "PatchStatus",
        }
    }

    /// How long to wait before the first retry; `None` when only a spec change can help.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            // A cluster without namespace or uid never comes from the API server.
            Error::PodRuntime(runtime::Error::MissingClusterField { .. }) => None,
            Error::Step(reconcile::Error::InvalidVersion { .. }) => None,
            // The API server (conflict, throttling) or etcd: usually gone in seconds.
            Error::PatchStatus(_) | Error::Observe(_) => Some(Duration::from_secs(5)),
            Error::Step(reconcile::Error::Connect { .. }) => Some(Duration::from_secs(5)),
            Error::PodRuntime(_) | Error::Step(_) => Some(Duration::from_secs(10)),
        }
    }
}

/// What every reconcile shares.
pub struct Context {
    pub client: Client,
    pub policy: Policy,
    pub recorder: Recorder,
    pub metrics: Metrics,
    /// The operator's image, for the init containers of restored members.
    pub operator_image: Option<String>,
    /// Whether a recovery from an EtcdBackup without `credentialsSecret` may use ambient
    /// cloud credentials (`--allow-ambient-credentials`); refused by default.
    pub allow_ambient_credentials: bool,
    /// Per cluster; taken out for a pass and put back (one pass per cluster at a time).
    trackers: Mutex<HashMap<ClusterRef, HealthTracker>>,
    /// Consecutive failures per cluster, for the backoff.
    failures: Failures<ClusterRef>,
}

impl Context {
    pub fn new(client: Client, policy: Policy, metrics: Metrics, reporter: Reporter) -> Self {
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            policy,
            metrics,
            operator_image: None,
            allow_ambient_credentials: false,
            trackers: Mutex::default(),
            failures: Failures::with_burst(super::FAILURE_BURST),
        }
    }
}

fn cluster_ref(cluster: &EtcdCluster) -> ClusterRef {
    ClusterRef::new(cluster.namespace().unwrap_or_default(), cluster.name_any())
}

/// One pass over `cluster`: observe, plan, execute, apply the status, publish Events.
///
/// # Errors
/// [`Error::Observe`] when the runtime could not list members (nothing was written);
/// [`Error::Step`] when the step failed (the status and a Warning Event are written first);
/// [`Error::PatchStatus`].
#[instrument(skip_all, fields(cluster = %cluster.name_any(), ns = cluster.namespace().unwrap_or_default()))]
pub async fn reconcile(cluster: Arc<EtcdCluster>, ctx: Arc<Context>) -> Result<Action, Error> {
    ctx.metrics.reconciles.inc();
    let key = cluster_ref(&cluster);
    if cluster.meta().deletion_timestamp.is_some() {
        // Owner references take the members down with it.
        lock(&ctx.trackers).remove(&key);
        return Ok(Action::await_change());
    }
    let runtime = PodRuntime::for_cluster(ctx.client.clone(), &cluster)
        .map_err(Error::PodRuntime)?
        .with_operator_image(ctx.operator_image.clone());
    let mut tracker = lock(&ctx.trackers).remove(&key).unwrap_or_default();
    let recovery = KubeRecovery::new(
        ctx.client.clone(),
        &runtime,
        &cluster,
        ctx.allow_ambient_credentials,
    );
    let pass = reconcile_once(
        &runtime,
        &recovery,
        &super::secrets::KubeSecrets(ctx.client.clone()),
        &cluster,
        &ctx.policy,
        &mut tracker,
    )
    .await;
    lock(&ctx.trackers).insert(key.clone(), tracker);
    let pass = pass.map_err(Error::Observe)?;

    if cluster.status.as_ref() != Some(&pass.status) {
        apply_status(&ctx.client, &*cluster, &pass.status)
            .await
            .map_err(Error::PatchStatus)?;
    }
    recovery.forget_stale_seed(&key, &pass.status).await;
    ctx.metrics.observe_cluster(
        &key.namespace,
        &key.name,
        i64::try_from(pass.status.members.len()).unwrap_or(i64::MAX),
        i64::from(pass.status.ready_members),
    );
    ctx.metrics.observe_maintenance(
        &key.namespace,
        &key.name,
        &pass.status,
        &pass.step,
        pass.acted(),
    );
    ctx.metrics.observe_certificates(
        &key.namespace,
        &key.name,
        &pass.status,
        jiff::Timestamp::now(),
    );
    let events = certificates_events(&pass.certificates_issued)
        .into_iter()
        .chain(certificate_problems_event(&pass.certificate_problems))
        .chain(event_for(&pass.step, &pass.executed))
        .chain(recovery_event(&pass.step, &pass.executed, &pass.status));
    for event in events {
        // An Event is a courtesy; failing to publish one must not fail the pass.
        if let Err(e) = ctx.recorder.publish(&event, &cluster.object_ref(&())).await {
            warn!(error = %e, reason = event.reason, "publishing event failed");
        }
    }
    let executed = match pass.executed {
        Ok(executed) => executed,
        Err(e) => return Err(Error::Step(e)),
    };
    ctx.failures.clear(&key);
    Ok(match executed {
        Executed::Applied => {
            ctx.metrics.observe_step(step_reason(&pass.step), pass.took);
            Action::requeue(AFTER_STEP)
        }
        Executed::NotYet(why) => {
            debug!(%why, step = %pass.step, "etcd refused for now");
            Action::requeue(WHILE_WAITING)
        }
        Executed::Nothing => next_pass(&pass.step),
    })
}

/// When to look again after a step that did nothing.
fn next_pass(step: &Step) -> Action {
    match step {
        Step::Blocked {
            reason: BlockReason::InvalidSpec { .. },
        } => Action::await_change(),
        Step::Wait { .. } => Action::requeue(WHILE_WAITING),
        _ => Action::requeue(RESYNC),
    }
}

/// The Events of the certificates a pass issued: a Normal `CertificatesIssued` naming each
/// leaf and why (first issue, renewal, a new member name, ...), and a `CaRotation` Event of
/// its own for each CA rotation phase started, one action per phase (the recorder folds
/// Events of one reason and action into a series that keeps the first note).
fn certificates_events(issued: &[crate::certs::bundle::Issued]) -> Vec<Event> {
    let mut events: Vec<Event> = issued
        .iter()
        .filter_map(|i| i.phase)
        .map(|phase| Event {
            type_: EventType::Normal,
            reason: "CaRotation".into(),
            note: Some(phase.describe().to_string()),
            action: phase.as_str().into(),
            secondary: None,
        })
        .collect();
    let what: Vec<String> = issued
        .iter()
        .filter(|i| i.phase.is_none())
        .map(|i| format!("{} ({})", i.entry.trim_end_matches(".crt"), i.reason))
        .collect();
    if !what.is_empty() {
        events.push(Event {
            type_: EventType::Normal,
            reason: "CertificatesIssued".into(),
            note: Some(format!("issued {}", what.join(", "))),
            action: "IssueCertificates".into(),
            secondary: None,
        });
    }
    events
}

/// The user's certificates were not given to members: what is wrong with them.
fn certificate_problems_event(problems: &[String]) -> Option<Event> {
    if problems.is_empty() {
        return None;
    }
    Some(Event {
        type_: EventType::Warning,
        reason: "InvalidCertificates".into(),
        note: Some(truncate_note(&problems.join("; "))),
        action: "CheckCertificates".into(),
        secondary: None,
    })
}

/// Event notes are limited to 1 KiB by the API server.
fn truncate_note(text: &str) -> String {
    let mut note = text.to_string();
    if crate::error_chain::truncate_message(&mut note, 1000) {
        note.push('…');
    }
    note
}

/// The Event a pass deserves: executed and failed steps, and refusals.
fn event_for(step: &Step, executed: &Result<Executed, reconcile::Error>) -> Option<Event> {
    let event = |type_, reason: String, note: String| Event {
        type_,
        reason,
        note: Some(note),
        action: step_reason(step).to_string(),
        secondary: None,
    };
    match (executed, step) {
        (Err(e), _) => Some(event(
            EventType::Warning,
            format!("{}Failed", e.label()),
            format!("{step}: {}", error_chain(e)),
        )),
        (Ok(Executed::Applied), _) => Some(event(
            EventType::Normal,
            step_reason(step).to_string(),
            step.to_string(),
        )),
        (Ok(_), Step::Blocked { reason }) => Some(event(
            EventType::Warning,
            block_reason(reason).to_string(),
            step.to_string(),
        )),
        (Ok(_), _) => None,
    }
}

/// The Event of a recovery from lost quorum that ended in this pass: `Recovered` naming the
/// revision restored to, the backup object or the survivor, how much time the backup
/// covered and where the old data was kept; `RecoveryFailed` saying why.
fn recovery_event(
    step: &Step,
    executed: &Result<Executed, reconcile::Error>,
    status: &crate::api::EtcdClusterStatus,
) -> Option<Event> {
    use crate::api::recovery::RecoveryOutcome;
    if !matches!(
        (step, executed),
        (Step::Recover { .. }, Ok(Executed::Applied))
    ) {
        return None;
    }
    let rec = status.recovery.as_ref()?;
    if rec.run.is_some() {
        return None;
    }
    let last = rec.last_run.as_ref()?;
    let (type_, reason, note) = match last.outcome {
        Some(RecoveryOutcome::Succeeded) => (
            EventType::Normal,
            "Recovered",
            format!(
                "recovered ({}): {}",
                last.mode,
                crate::plan::recovery::describe(last)
            ),
        ),
        _ => (
            EventType::Warning,
            "RecoveryFailed",
            format!(
                "recovery ({}) failed: {} ({})",
                last.mode,
                last.message.as_deref().unwrap_or("no reason recorded"),
                last.reason.as_deref().unwrap_or("Unknown")
            ),
        ),
    };
    Some(Event {
        type_,
        reason: reason.to_string(),
        note: Some(note),
        action: "Recovering".to_string(),
        secondary: None,
    })
}

/// Retries by error kind, doubling per consecutive failure of the cluster up to
/// [`MAX_BACKOFF`]; waits for a spec change when only that can help.
pub fn error_policy(cluster: Arc<EtcdCluster>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics
        .reconcile_errors
        .get_or_create(&ErrorLabels {
            error: error.label().to_string(),
        })
        .inc();
    warn!(cluster = %cluster_ref(&cluster), error = %error_chain(error), "reconcile failed");
    let Some(base) = error.retry_after() else {
        return Action::await_change();
    };
    let failures = ctx.failures.record(cluster_ref(&cluster));
    Action::requeue(backoff(base, failures))
}

/// `base` doubled for every failure after the first, at most [`MAX_BACKOFF`].
fn backoff(base: Duration, failures: u32) -> Duration {
    crate::plan::failure::backoff(base, failures, MAX_BACKOFF)
}

/// The cluster a PVC was made for, by its `etcd.operator.dev/cluster` label.
fn cluster_of_pvc(pvc: PersistentVolumeClaim) -> Option<ObjectRef<EtcdCluster>> {
    let name = pvc.labels().get(LABEL_CLUSTER)?;
    Some(ObjectRef::new(name).within(&pvc.namespace()?))
}

/// The EtcdCluster Controller (one namespace or all), also triggered by changes of the Pods,
/// PVCs, Services and PDBs it owns; ready to run until `shutdown`.
/// What wakes the controller on an EtcdCluster: a new generation, or a new value of the
/// `etcd.operator.dev/recover` annotation (the one-shot recovery, which is no spec change).
fn generation_or_recover_annotation(cluster: &EtcdCluster) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    predicates::generation(cluster).hash(&mut h);
    cluster
        .annotations()
        .get(crate::api::recovery::RECOVER_ANNOTATION)
        .hash(&mut h);
    Some(h.finish())
}

pub fn controller(
    client: Client,
    ns: Option<&str>,
    ctx: Arc<Context>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) -> impl Future<Output = ()> + Send + 'static {
    let owned = watcher::Config::default().labels(OWNED_SELECTOR);
    // Only spec changes (a new generation) of the EtcdClusters themselves: our own status
    // writes must not wake the controller (issue 9, item 2); waits come back by requeue.
    let (reader, writer) = reflector::store();
    let clusters = watcher(api::<EtcdCluster>(&client, ns), watcher::Config::default())
        .default_backoff()
        .reflect(writer)
        .applied_objects()
        .predicate_filter(generation_or_recover_annotation, Default::default());
    Controller::for_stream(clusters, reader)
        .owns(api::<Pod>(&client, ns), owned.clone())
        // Retained PVCs have no owner: they are mapped to their cluster by label.
        .watches(
            api::<PersistentVolumeClaim>(&client, ns),
            owned.clone(),
            cluster_of_pvc,
        )
        .owns(api::<Service>(&client, ns), owned.clone())
        .owns(api::<PodDisruptionBudget>(&client, ns), owned)
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| log_result("EtcdCluster", result))
}
