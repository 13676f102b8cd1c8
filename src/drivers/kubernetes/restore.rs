//! The Kubernetes driver of `EtcdRestore`: a kube-runtime [`Controller`] that creates the
//! new EtcdCluster a restore asks for and follows it until it serves the restored data.
//! What a restore does next and what its status says are [`crate::plan::backup`] and [`crate::plan::restore`]'s
//! decisions; putting the snapshot into the members' data dirs is the pod runtime's init
//! containers' job ([`crate::runtime::pods::restore`]), so no snapshot data passes through
//! the operator or the API server.
//!
//! # Flow ([`reconcile`])
//! 1. An invalid spec: `Failed` with `SpecValid=False` and a Warning Event.
//! 2. A `Completed` restore is never run again; a `Failed` one waits for a spec change.
//! 3. An EtcdCluster named `spec.cluster.name` that this restore did not create: refused
//!    (`Failed`, `ClusterExists`, Warning Event); nothing is created or changed.
//! 4. No such cluster: resolve the source (a `backupName` becomes its latest backup's object
//!    and digest), check the credentials Secret exists and a recorded snapshot version is
//!    not newer than the target, then pin the object: one HEAD gives its ETag, its version
//!    id where the bucket keeps versions, and its recorded digest (which must match the
//!    expected one) — [`crate::backup::pin`]. Then create the cluster from `spec.cluster`
//!    with the annotations [`ANNOTATION_RESTORE_FROM`] (`<namespace>/<restore>`) and
//!    [`ANNOTATION_RESTORE_SOURCE`] (the object and its pin, which every member's fetch
//!    enforces): `Downloading` with `status.pinned`, Event `ClusterCreated`. It has no
//!    owner: deleting the restore keeps the cluster.
//! 5. Our cluster: its members' restore init containers say how far they got (their
//!    termination messages, [`StepReport`]): `Downloading` until every bootstrap member has
//!    its snapshot, then `Restoring`; a failed container (a crash loop too) fails the
//!    restore with its reason (`SourceChanged` when the object was overwritten after the
//!    pin: that member never starts), and so does a container whose image cannot be pulled
//!    (`ImagePull`, final) and a member Pod unschedulable for more than 5 minutes
//!    (`Unschedulable`, phase `Pending` until it schedules).
//!    Once the cluster is `Available`: `Completed` with its cluster id, Event `Restored`.
//!
//! A restore is reconciled again when its cluster changes, and every 10 s while it runs
//! (init container progress is read from the Pods, which are not watched).
//!
//! # Guarantees
//! Never writes to a cluster it did not create. A cluster deleted while the restore runs is
//! created again (every step is idempotent); once `Completed`, never. A restore that failed
//! for good (a corrupt or too new snapshot) leaves its cluster for the user to inspect or
//! delete; the kubelet keeps retrying the init containers, and a retryable failure (S3
//! unreachable, a Secret added late) resumes by itself.
//!
//! # Tests
//! The mocked API server covers refusal, creation (pinning against a real Garage, so
//! these tests need it) and following; the init containers' programs are tested on files in
//! [`crate::backup::member_restore`] and against real S3 in `tests/member_restore.rs` (an
//! object overwritten after the pin) and `tests/backup.rs`; real members in e2e
//! (`restore-image`, `restore-overwritten`).

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::{ContainerStatus, Pod, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{ListParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Api, Client, Resource, ResourceExt};
use thiserror::Error;
use tracing::{info, instrument, warn};

use super::{Failures, apply_status, log_result};
use crate::api::condition::{self, types};
use crate::api::restore::{EtcdRestoreStatus, PinnedSource, S3Object};
use crate::api::{EtcdBackup, EtcdCluster, EtcdRestore, validate};
use crate::backup::member_restore::StepReport;
use crate::backup::{StaticCredentials, check_version, pin_object};
use crate::error_chain::error_chain;
use crate::metrics::Metrics;
use crate::plan::failure::{AttemptError, Failure, Precondition, retry_delay};
use crate::plan::restore::{
    RestoreFrom, RestoreNext, restore_next, restore_source, restore_status_completed,
    restore_status_downloading, restore_status_failed, restore_status_invalid,
    restore_status_pinned, restore_status_restoring, restore_status_with_cluster_id,
};
use crate::runtime::pods::restore::{
    ANNOTATION_RESTORE_FROM, ANNOTATION_RESTORE_SOURCE, FETCH_CONTAINER, FINISH_CONTAINER,
    RESTORE_CONTAINER, SnapshotSource, source_of,
};
use crate::runtime::pods::{FIELD_MANAGER, LABEL_CLUSTER};

/// How often a running restore looks at its cluster's Pods.
pub const WHILE_RESTORING: Duration = Duration::from_secs(10);

/// What a reconcile failed at: the API server's calls. A failed restore is an outcome
/// written into the status, not an error.
#[derive(Debug, Error, strum::IntoStaticStr)]
pub enum Error {
    #[error("reading EtcdCluster {name}")]
    GetCluster {
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("reading EtcdBackup {name}")]
    GetBackup {
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("reading Secret {name}")]
    GetSecret {
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("creating EtcdCluster {name}")]
    CreateCluster {
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("listing the pods of EtcdCluster {name}")]
    ListPods {
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("applying the status")]
    PatchStatus(#[source] kube::Error),
}

impl Error {
    /// A static label for metrics.
    pub fn label(&self) -> &'static str {
        self.into()
    }
}

/// What every restore reconcile shares.
pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    pub metrics: Metrics,
    /// Whether a source without `credentialsSecret` may use ambient cloud credentials
    /// (`--allow-ambient-credentials`); refused by default.
    pub allow_ambient_credentials: bool,
    /// Consecutive retryable failures per restore, for the retry delay.
    failures: Failures<ObjectRef<EtcdRestore>>,
}

impl Context {
    pub fn new(client: Client, metrics: Metrics, reporter: Reporter) -> Self {
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            metrics,
            allow_ambient_credentials: false,
            failures: Failures::default(),
        }
    }
}

/// One restore being reconciled, with what every step needs.
struct Pass<'a> {
    restore: &'a EtcdRestore,
    ctx: &'a Context,
    namespace: String,
    generation: i64,
    now: Timestamp,
}

/// One pass over `restore` (see the module's flow).
///
/// # Errors
/// Only API server failures ([`enum@Error`]).
#[instrument(skip_all, fields(restore = %restore.name_any(), ns = restore.namespace().unwrap_or_default()))]
pub async fn reconcile(restore: Arc<EtcdRestore>, ctx: Arc<Context>) -> Result<Action, Error> {
    ctx.metrics.reconciles.inc();
    if restore.meta().deletion_timestamp.is_some() {
        // The cluster it created is not ours to delete.
        return Ok(Action::await_change());
    }
    let pass = Pass {
        restore: &restore,
        ctx: &ctx,
        namespace: restore.namespace().unwrap_or_default(),
        generation: restore.metadata.generation.unwrap_or_default(),
        now: Timestamp::now(),
    };
    let report = validate::restore(&restore.name_any(), &restore.spec);
    if !report.is_valid() {
        let new = restore_status_invalid(pass.status(), &report, pass.generation, pass.now);
        if pass.apply_if_changed(&new).await? {
            let note = report.errors_message();
            pass.publish(EventType::Warning, "InvalidSpec", note).await;
        }
        return Ok(Action::await_change());
    }
    match restore_next(pass.generation, pass.status()) {
        RestoreNext::Done => pass.record_cluster_id().await,
        RestoreNext::GaveUp => Ok(Action::await_change()),
        RestoreNext::Run => pass.run().await,
    }
}

impl Pass<'_> {
    fn status(&self) -> Option<&EtcdRestoreStatus> {
        self.restore.status.as_ref()
    }

    fn target(&self) -> &str {
        &self.restore.spec.cluster.name
    }

    /// `<namespace>/<name>`, the value of [`ANNOTATION_RESTORE_FROM`].
    fn origin(&self) -> String {
        format!("{}/{}", self.namespace, self.restore.name_any())
    }

    fn api<K>(&self) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as Resource>::DynamicType: Default,
    {
        Api::namespaced(self.ctx.client.clone(), &self.namespace)
    }

    async fn get_cluster(&self) -> Result<Option<EtcdCluster>, Error> {
        self.api::<EtcdCluster>()
            .get_opt(self.target())
            .await
            .map_err(|source| Error::GetCluster {
                name: self.target().to_string(),
                source,
            })
    }

    async fn run(&self) -> Result<Action, Error> {
        match self.get_cluster().await? {
            Some(cluster) if !self.created(&cluster) => {
                let evidence = match cluster.annotations().get(ANNOTATION_RESTORE_FROM) {
                    Some(other) => format!("an EtcdCluster restored by {other}"),
                    None => "an EtcdCluster not created by a restore".to_string(),
                };
                let refusal = Precondition::ClusterExists {
                    cluster: self.target().to_string(),
                    evidence,
                };
                self.fail(&refusal).await
            }
            Some(cluster) => self.follow(&cluster).await,
            None => self.start().await,
        }
    }

    /// Whether this restore created `cluster`.
    fn created(&self, cluster: &EtcdCluster) -> bool {
        cluster.annotations().get(ANNOTATION_RESTORE_FROM) == Some(&self.origin())
    }

    /// Resolves and checks the source, then creates the cluster.
    async fn start(&self) -> Result<Action, Error> {
        let spec = &self.restore.spec;
        let backup = match &spec.source.backup_name {
            Some(name) => self
                .api::<EtcdBackup>()
                .get_opt(name)
                .await
                .map_err(|source| Error::GetBackup {
                    name: name.clone(),
                    source,
                })?,
            None => None,
        };
        let from = match restore_source(&self.namespace, spec, backup.as_ref()) {
            Ok(from) => from,
            Err(waiting) => return self.fail(&waiting).await,
        };
        let credentials = match self.credentials(&from).await? {
            Ok(credentials) => credentials,
            Err(failure) => return self.fail(&failure).await,
        };
        let recorded = backup
            .as_ref()
            .and_then(|b| b.status.as_ref()?.last_backup.as_ref())
            .and_then(|r| semver::Version::parse(&r.etcd_version).ok());
        let target = validate::parse_version(&spec.cluster.spec.version).ok();
        if let (Some(snapshot), Some(target)) = (recorded, &target)
            && let Err(e) = check_version(&snapshot, target)
        {
            return self.fail(&AttemptError::Backup(e)).await;
        }
        let pin = match pin_source(&from, credentials, target.as_ref()).await {
            Ok(pin) => pin,
            Err(e) => return self.fail(&AttemptError::Backup(e)).await,
        };

        let cluster = new_cluster(self.restore, &from, &pin);
        let params = PostParams {
            field_manager: Some(FIELD_MANAGER.to_string()),
            ..Default::default()
        };
        match self.api::<EtcdCluster>().create(&params, &cluster).await {
            Ok(_) => {}
            // Created meanwhile (by us or someone else): the next pass tells which.
            Err(kube::Error::Api(s)) if s.is_already_exists() => {
                return Ok(Action::requeue(Duration::from_secs(1)));
            }
            Err(source) => {
                return Err(Error::CreateCluster {
                    name: self.target().to_string(),
                    source,
                });
            }
        }
        info!(cluster = self.target(), key = %from.key, etag = %pin.etag, "created cluster to restore into");
        self.ctx.failures.clear(&ObjectRef::from_obj(self.restore));
        let new = restore_status_pinned(
            restore_status_downloading(self.status(), self.generation, &from.key, self.now),
            Some(&pin),
        );
        self.apply_if_changed(&new).await?;
        let note = format!(
            "created EtcdCluster {} to restore s3://{}/{} (pinned to etag {})",
            self.target(),
            from.bucket,
            from.key,
            pin.etag
        );
        self.publish(EventType::Normal, "ClusterCreated", note)
            .await;
        Ok(Action::requeue(WHILE_RESTORING))
    }

    /// The source's credentials ([`source_credentials`]).
    async fn credentials(
        &self,
        from: &RestoreFrom,
    ) -> Result<Result<Option<StaticCredentials>, AttemptError>, Error> {
        source_credentials(
            &self.ctx.client,
            &self.namespace,
            &from.connection,
            self.ctx.allow_ambient_credentials,
        )
        .await
    }

    /// Follows the cluster this restore created.
    async fn follow(&self, cluster: &EtcdCluster) -> Result<Action, Error> {
        // The cluster's annotation is what its members restore from.
        let source = source_of(&cluster.metadata).ok().flatten();
        let pin = source.as_ref().and_then(pinned_of);
        let key = source
            .as_ref()
            .map(|s| s.object.key.clone())
            .or_else(|| self.status().and_then(|s| s.source_key.clone()))
            .unwrap_or_default();
        let pods = self
            .api::<Pod>()
            .list(&ListParams::default().labels(&format!("{LABEL_CLUSTER}={}", self.target())))
            .await
            .map_err(|source| Error::ListPods {
                name: self.target().to_string(),
                source,
            })?;
        let progress = progress(&pods.items, self.now);
        let (sha256, revision) = match &progress {
            Progress::Fetched { sha256, revision } => (sha256.clone(), *revision),
            _ => (None, None),
        };
        let sha256 = sha256
            .or_else(|| source.as_ref().and_then(|s| s.sha256.clone()))
            .or_else(|| self.status().and_then(|s| s.sha256.clone()));
        let revision = revision
            .or_else(|| revision_in_key(&key))
            .or_else(|| self.status().and_then(|s| s.restored_revision));
        let cluster_status = cluster.status.as_ref();
        let available =
            cluster_status.is_some_and(|s| condition::is_true(&s.conditions, types::AVAILABLE));
        if available {
            let cluster_id = cluster_status.and_then(|s| s.cluster_id.clone());
            let new = restore_status_pinned(
                restore_status_completed(
                    self.status(),
                    self.generation,
                    &key,
                    sha256.as_deref(),
                    revision,
                    cluster_id,
                    self.now,
                ),
                pin.as_ref(),
            );
            if self.apply_if_changed(&new).await? {
                let note = format!("EtcdCluster {} serves the data of {key}", self.target());
                self.publish(EventType::Normal, "Restored", note).await;
            }
            self.ctx.failures.clear(&ObjectRef::from_obj(self.restore));
            return Ok(Action::await_change());
        }
        if let Progress::Failed(failure) = &progress {
            return self.fail_pinned(failure, pin.as_ref()).await;
        }
        let new = match &progress {
            Progress::Fetched { .. } => restore_status_restoring(
                self.status(),
                self.generation,
                &key,
                sha256.as_deref(),
                revision,
                self.now,
            ),
            _ => restore_status_downloading(self.status(), self.generation, &key, self.now),
        };
        let new = restore_status_pinned(new, pin.as_ref());
        self.apply_if_changed(&new).await?;
        Ok(Action::requeue(WHILE_RESTORING))
    }

    /// Records the new cluster's id on a completed restore once the cluster reports it.
    async fn record_cluster_id(&self) -> Result<Action, Error> {
        let Some(status) = self.status().filter(|s| s.cluster_id.is_none()) else {
            return Ok(Action::await_change());
        };
        let cluster = self.get_cluster().await?;
        let id = cluster
            .filter(|c| self.created(c))
            .and_then(|c| c.status?.cluster_id);
        if let Some(id) = id {
            let new = restore_status_with_cluster_id(status, &id);
            self.apply_if_changed(&new).await?;
        }
        Ok(Action::await_change())
    }

    /// Writes the failure; an Event when it is news. Retryable failures come back after
    /// [`retry_delay`], the others wait for a spec change.
    async fn fail(&self, failure: &impl Failure) -> Result<Action, Error> {
        self.fail_pinned(failure, None).await
    }

    /// [`Self::fail`] for a restore whose cluster's members restore `pin`.
    async fn fail_pinned(
        &self,
        failure: &impl Failure,
        pin: Option<&PinnedSource>,
    ) -> Result<Action, Error> {
        let new = restore_status_pinned(
            restore_status_failed(self.status(), failure, self.generation, self.now),
            pin,
        );
        if self.apply_if_changed(&new).await? {
            warn!(reason = failure.reason(), error = %failure.message(), "restore failed");
            self.publish(EventType::Warning, failure.reason(), failure.message())
                .await;
        }
        if !failure.is_retryable() {
            return Ok(Action::await_change());
        }
        let failures = self.ctx.failures.record(ObjectRef::from_obj(self.restore));
        Ok(Action::requeue(retry_delay(failures, true)))
    }

    /// Server-side applies `status` unless it is what the restore has; true if it applied.
    async fn apply_if_changed(&self, status: &EtcdRestoreStatus) -> Result<bool, Error> {
        if self.status() == Some(status) {
            return Ok(false);
        }
        apply_status(&self.ctx.client, self.restore, status)
            .await
            .map_err(Error::PatchStatus)?;
        Ok(true)
    }

    /// Publishes an Event about the restore; failing to is logged, never fatal.
    async fn publish(&self, type_: EventType, reason: &str, note: String) {
        let event = Event {
            type_,
            reason: reason.to_string(),
            note: Some(note),
            action: "Restore".to_string(),
            secondary: None,
        };
        let regarding = self.restore.object_ref(&());
        if let Err(e) = self.ctx.recorder.publish(&event, &regarding).await {
            warn!(error = %e, reason, "publishing event failed");
        }
    }
}

/// The credentials of a source reached through `connection` in `namespace`: its
/// `credentialsSecret` must exist and hold a key pair before members are created that would
/// wait for it forever. `None` is the ambient chain, when `allow_ambient`.
///
/// # Errors
/// [`Error::GetSecret`] when the API server fails; a missing or unusable Secret, or no
/// Secret while ambient credentials are refused, is the inner error.
pub(super) async fn source_credentials(
    client: &Client,
    namespace: &str,
    connection: &crate::api::s3::S3Connection,
    allow_ambient: bool,
) -> Result<Result<Option<StaticCredentials>, AttemptError>, Error> {
    let Some(name) = &connection.credentials_secret else {
        return Ok(if allow_ambient {
            Ok(None)
        } else {
            Err(AttemptError::Precondition(
                Precondition::AmbientCredentialsNotAllowed {
                    namespace: namespace.to_owned(),
                },
            ))
        });
    };
    let secret = Api::<Secret>::namespaced(client.clone(), namespace)
        .get_opt(name)
        .await
        .map_err(|source| Error::GetSecret {
            name: name.clone(),
            source,
        })?;
    Ok(match secret {
        None => Err(AttemptError::Precondition(
            Precondition::CredentialsSecretMissing {
                namespace: namespace.to_owned(),
                secret: name.clone(),
            },
        )),
        Some(secret) => StaticCredentials::from_secret_data(&secret.data.unwrap_or_default())
            .map(Some)
            .map_err(AttemptError::Backup),
    })
}

/// Resolves the source object once (HEAD, [`pin_object`]) into the version every member
/// restores; a snapshot whose metadata names an etcd version newer than `target` is refused
/// here, before any member exists.
///
/// # Errors
/// [`pin_object`]'s (a missing object, a digest other than the expected one, S3 failures)
/// and [`crate::backup::Error::SnapshotTooNew`].
pub(super) async fn pin_source(
    from: &RestoreFrom,
    credentials: Option<StaticCredentials>,
    target: Option<&semver::Version>,
) -> Result<PinnedSource, crate::backup::Error> {
    let s3 = crate::backup::client(&from.connection, credentials).await;
    let pinned = pin_object(&s3, &from.bucket, &from.key, from.sha256.as_deref()).await?;
    if let (Some(snapshot), Some(target)) = (&pinned.metadata.etcd_version, target) {
        check_version(snapshot, target)?;
    }
    Ok(PinnedSource {
        etag: pinned.pin.etag,
        version_id: pinned.pin.version_id,
        sha256: pinned.sha256,
        size: pinned.size.and_then(|n| i64::try_from(n).ok()),
    })
}

/// The pin a restored cluster's annotation carries (none on clusters restored before pins).
fn pinned_of(source: &SnapshotSource) -> Option<PinnedSource> {
    Some(PinnedSource {
        etag: source.etag.clone()?,
        version_id: source.version_id.clone(),
        sha256: source.sha256.clone(),
        size: None,
    })
}

/// The EtcdCluster a restore creates: `spec.cluster`, annotated with where it comes from
/// and the object version its members restore (`pin`); no owner, so it outlives the restore.
pub fn new_cluster(restore: &EtcdRestore, from: &RestoreFrom, pin: &PinnedSource) -> EtcdCluster {
    let source = SnapshotSource {
        object: S3Object {
            bucket: from.bucket.clone(),
            key: from.key.clone(),
            connection: from.connection.clone(),
        },
        sha256: pin.sha256.clone(),
        etag: Some(pin.etag.clone()),
        version_id: pin.version_id.clone(),
    };
    let namespace = restore.namespace().unwrap_or_default();
    EtcdCluster {
        metadata: ObjectMeta {
            name: Some(restore.spec.cluster.name.clone()),
            namespace: Some(namespace.clone()),
            annotations: Some(BTreeMap::from([
                (
                    ANNOTATION_RESTORE_FROM.to_string(),
                    format!("{namespace}/{}", restore.name_any()),
                ),
                (
                    ANNOTATION_RESTORE_SOURCE.to_string(),
                    source.to_annotation(),
                ),
            ])),
            ..Default::default()
        },
        spec: restore.spec.cluster.spec.clone(),
        status: None,
    }
}

/// How far the members' restore init containers got.
#[derive(Debug, PartialEq)]
enum Progress {
    /// Some bootstrap member has not fetched its snapshot yet (or has no Pod yet).
    Fetching,
    /// Every bootstrap member fetched (or already had) its data; what the fetch verified.
    Fetched {
        sha256: Option<String>,
        revision: Option<i64>,
    },
    /// A restore container failed (the kubelet retries it; the status says why).
    Failed(PodFailure),
}

/// A restore init container that failed, as its Pod's status reports it.
#[derive(Debug, PartialEq)]
pub(super) struct PodFailure {
    pub reason: &'static str,
    pub retryable: bool,
    pub message: String,
}

impl Failure for PodFailure {
    fn reason(&self) -> &'static str {
        self.reason
    }

    fn message(&self) -> String {
        self.message.clone()
    }

    fn is_retryable(&self) -> bool {
        self.retryable
    }
}

/// Reasons a restore container may report, as static labels (Events and conditions never
/// carry text a container chose).
const STEP_REASONS: &[&str] = &[
    "Credentials",
    "BucketMissing",
    "ObjectMissing",
    "Unreachable",
    "Download",
    "WriteFile",
    "ShaMismatch",
    "SourceChanged",
    "Decompress",
    "SnapshotTooNew",
    "RestoredDataMissing",
];

/// How long a restoring member Pod may stay unschedulable before the restore says so.
pub const UNSCHEDULABLE_DEADLINE: Duration = Duration::from_secs(300);

/// Reads the progress of the restore containers of `pods` (the cluster's Pods; members
/// without restore containers, which joined later, do not count) at `now`.
fn progress(pods: &[Pod], now: Timestamp) -> Progress {
    let mut fetching = false;
    let mut restoring = 0;
    let (mut sha256, mut revision) = (None, None);
    for pod in pods {
        let has_restore = pod
            .spec
            .as_ref()
            .and_then(|s| s.init_containers.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.name == FETCH_CONTAINER));
        if !has_restore {
            continue;
        }
        restoring += 1;
        if let Some(failure) = unschedulable(pod, now) {
            return Progress::Failed(failure);
        }
        let statuses = pod
            .status
            .as_ref()
            .and_then(|s| s.init_container_statuses.as_deref())
            .unwrap_or_default();
        for c in statuses {
            if let Some(failure) = failure_of(&pod.name_any(), c) {
                return Progress::Failed(failure);
            }
        }
        let fetched = statuses
            .iter()
            .find(|c| c.name == FETCH_CONTAINER)
            .and_then(|c| c.state.as_ref()?.terminated.as_ref())
            .filter(|t| t.exit_code == 0);
        match fetched {
            Some(done) => {
                let report = done.message.as_deref().and_then(StepReport::parse);
                if let Some(StepReport::Fetched {
                    sha256: s,
                    revision: r,
                    ..
                }) = report
                {
                    sha256 = sha256.or(Some(s));
                    revision = revision.or(r);
                }
            }
            None => fetching = true,
        }
    }
    if fetching || restoring == 0 {
        Progress::Fetching
    } else {
        Progress::Fetched { sha256, revision }
    }
}

/// A Pod the scheduler has refused for longer than [`UNSCHEDULABLE_DEADLINE`]: its init
/// containers never run. Retryable: a node may still come (the phase stays `Pending`, with
/// `Failed=True` saying why).
fn unschedulable(pod: &Pod, now: Timestamp) -> Option<PodFailure> {
    let scheduled = pod
        .status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "PodScheduled")?;
    if scheduled.status != "False" || scheduled.reason.as_deref() != Some("Unschedulable") {
        return None;
    }
    let since = scheduled.last_transition_time.as_ref()?.0;
    let deadline = jiff::SignedDuration::try_from(UNSCHEDULABLE_DEADLINE).ok()?;
    if now.duration_since(since) < deadline {
        return None;
    }
    Some(PodFailure {
        reason: "Unschedulable",
        retryable: true,
        message: format!(
            "{} unschedulable for more than {}s: {}",
            pod.name_any(),
            UNSCHEDULABLE_DEADLINE.as_secs(),
            scheduled.message.as_deref().unwrap_or("no node fits")
        ),
    })
}

/// Waiting reasons of a container whose image cannot be pulled: it never runs until its
/// Pod is recreated with another image.
const IMAGE_PULL_REASONS: &[&str] = &["ErrImagePull", "ImagePullBackOff", "InvalidImageName"];

/// The failure a restore container of `pod` reports: its last termination when that
/// failed and it has not succeeded since (a crash loop included), or a container it could
/// not be created as or whose image cannot be pulled.
pub(super) fn failure_of(pod: &str, c: &ContainerStatus) -> Option<PodFailure> {
    let step = match c.name.as_str() {
        FETCH_CONTAINER | RESTORE_CONTAINER | FINISH_CONTAINER => c.name.as_str(),
        _ => return None,
    };
    let state = c.state.as_ref();
    if let Some(waiting) = state.and_then(|s| s.waiting.as_ref())
        && waiting.reason.as_deref() == Some("CreateContainerConfigError")
    {
        // A Secret or key the Pod refers to is missing: someone has to add it.
        return Some(PodFailure {
            reason: "CreateContainerConfigError",
            retryable: true,
            message: format!(
                "{step} of {pod}: {}",
                waiting
                    .message
                    .as_deref()
                    .unwrap_or("cannot create the container")
            ),
        });
    }
    if let Some(waiting) = state.and_then(|s| s.waiting.as_ref())
        && let Some(reason) = waiting.reason.as_deref()
        && IMAGE_PULL_REASONS.contains(&reason)
    {
        // The image is what the Pod was created with (the operator's, or etcd's): waiting
        // on the kubelet's backoff changes nothing, and "downloading" would be a lie.
        return Some(PodFailure {
            reason: "ImagePull",
            retryable: false,
            message: format!(
                "{step} of {pod}: {reason}: image {}: {}",
                c.image,
                waiting
                    .message
                    .as_deref()
                    .unwrap_or("cannot pull the image")
            ),
        });
    }
    let terminated = match state.and_then(|s| s.terminated.as_ref()) {
        Some(t) => t,
        None => c.last_state.as_ref()?.terminated.as_ref()?,
    };
    if terminated.exit_code == 0 {
        return None;
    }
    let text = terminated.message.as_deref().unwrap_or_default().trim();
    let (reason, retryable, message) = match (step, StepReport::parse(text)) {
        (
            _,
            Some(StepReport::Failed {
                reason,
                retryable,
                message,
            }),
        ) => {
            let known = STEP_REASONS.iter().find(|r| **r == reason);
            (
                known.copied().unwrap_or("RestoreStepFailed"),
                retryable,
                message,
            )
        }
        // etcd's own tool: a snapshot it cannot restore stays so.
        (RESTORE_CONTAINER, _) => ("Restore", false, text.to_string()),
        _ => ("RestoreStepFailed", true, text.to_string()),
    };
    Some(PodFailure {
        reason,
        retryable,
        message: format!("{step} of {pod} exited {}: {message}", terminated.exit_code),
    })
}

/// The revision in a key of our layout (`...-rev<n>.db`, `.db.zst` compressed).
fn revision_in_key(key: &str) -> Option<i64> {
    let (_, rest) = key.rsplit_once("-rev")?;
    let rest = rest.strip_suffix(".zst").unwrap_or(rest);
    let digits = rest.strip_suffix(".db")?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Failing to talk to the API server: try again in 5 s.
pub fn error_policy(restore: Arc<EtcdRestore>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics
        .reconcile_errors
        .get_or_create(&crate::metrics::ErrorLabels {
            error: error.label().to_string(),
        })
        .inc();
    warn!(restore = %restore.name_any(), error = %error_chain(error), "restore reconcile failed");
    Action::requeue(Duration::from_secs(5))
}

/// The restore a cluster was created by, from its annotation.
fn restore_of(cluster: EtcdCluster) -> Option<ObjectRef<EtcdRestore>> {
    let origin = cluster.annotations().get(ANNOTATION_RESTORE_FROM)?;
    let (namespace, name) = origin.split_once('/')?;
    Some(ObjectRef::new(name).within(namespace))
}

/// The EtcdRestore Controller (one namespace or all), also triggered by changes of the
/// clusters restores created; ready to run until `shutdown`.
pub fn controller(
    restores: Api<EtcdRestore>,
    clusters: Api<EtcdCluster>,
    ctx: Arc<Context>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) -> impl Future<Output = ()> + Send + 'static {
    Controller::new(restores, watcher::Config::default())
        .watches(clusters, watcher::Config::default(), restore_of)
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| log_result("EtcdRestore", result))
}
