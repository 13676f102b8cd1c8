//! The Kubernetes driver of `EtcdBackup`: a kube-runtime [`Controller`] that takes each
//! backup when it is due, prunes old ones, writes the status with server-side apply and
//! reports every outcome as an Event. When a backup is due and what its status says are
//! [`crate::plan::backup`] and [`crate::plan::restore`]'s decisions; taking and pruning are the engine's
//! ([`take_backup`], [`apply_retention`]).
//!
//! # Flow ([`reconcile`])
//! 1. An invalid spec: `SpecValid=False` and a Warning Event; nothing else until it changes.
//! 2. [`backup_due`]: a one-shot that succeeded for this generation waits for a change; a
//!    scheduled backup records `nextScheduleTime` and comes back then.
//! 3. Due: read the EtcdCluster `clusterName` (same namespace) for its members' client URLs,
//!    and the credentials Secret when one is named; take the backup through those URLs.
//! 4. After a success, apply retention (deleted backups leave `history`); a failed prune is
//!    noted on `Ready`, the backup still counts.
//! 5. Write the status, publish an Event (the failure's [`Failure::reason`], or
//!    `BackupSucceeded`), count `backups{namespace,backup,result}` and set
//!    `last_backup_bytes`.
//! 6. Come back at the next scheduled run; a failure retries after [`retry_delay`] (the
//!    missed run stays due); a one-shot that succeeded does not come back.
//!
//! # Guarantees
//! One reconcile per EtcdBackup at a time (the Controller's), so two backups of one
//! resource never overlap. Credentials are handed to the S3 client and never logged.
//!
//! # Assumptions
//! The operator reaches members by their client URLs as the cluster's status lists them
//! (Pod DNS names, in-cluster); cluster TLS is not implemented yet, so the URLs are plain.
//!
//! # Tests
//! The mocked API server covers every path that needs no etcd: invalid specs, a missing
//! cluster or Secret, schedules. A successful backup needs a real etcd and S3, which a
//! mocked client cannot provide; the engine itself is tested against real etcd and Garage
//! in `tests/backup.rs`.

#[cfg(test)]
mod tests;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Api, Client, Resource, ResourceExt};
use thiserror::Error;
use tracing::{debug, info, instrument, warn};

use crate::api::{EtcdBackup, EtcdCluster, validate};
use crate::backup::attempt::{self, Attempt, Outcome};
use crate::backup::verify::DEFAULT_SNAPSHOT_TOOL_DIR;
use crate::backup::{Owner, SnapshotTools, StaticCredentials, Verifier};
use crate::error_chain::error_chain;
use crate::metrics::{BackupLabels, ClusterLabels, Metrics};
use crate::plan::backup::{
    BackupDue, Idle, backup_due, backup_endpoints, fits_memory_budget, forget_deleted,
    next_schedule, note_retention_failure, status_after_failure, status_after_success,
    status_invalid, status_scheduled,
};
use crate::plan::failure::{AttemptError, Failure, Precondition, retry_delay};

use super::{Failures, apply_status, log_result};

/// What a reconcile failed at: only the API server's calls; a failed backup is an outcome
/// written into the status, not an error.
#[derive(Debug, Error, strum::IntoStaticStr)]
pub enum Error {
    #[error("reading EtcdCluster {name}")]
    GetCluster {
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
    #[error("applying the status")]
    PatchStatus(#[source] kube::Error),
}

impl Error {
    /// A static label for metrics.
    pub fn label(&self) -> &'static str {
        self.into()
    }
}

/// What every backup reconcile shares.
pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    pub metrics: Metrics,
    /// Part data all backups may hold in memory (`--backup-memory-budget-mib`).
    pub memory_budget_mib: u64,
    /// Whether a destination without `credentialsSecret` may use the operator's own cloud
    /// identity (`--allow-ambient-credentials`); refused by default.
    pub allow_ambient_credentials: bool,
    /// How `verify: true` checks uploads: the image's etcdutl (`--snapshot-tool-dir`).
    pub verifier: Verifier,
    /// Consecutive failed attempts per backup, for the retry delay.
    failures: Failures<ObjectRef<EtcdBackup>>,
}

impl Context {
    pub fn new(client: Client, metrics: Metrics, reporter: Reporter) -> Self {
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            metrics,
            memory_budget_mib: crate::backup::DEFAULT_MEMORY_BUDGET_MIB,
            allow_ambient_credentials: false,
            verifier: Verifier::new(SnapshotTools::Dir(DEFAULT_SNAPSHOT_TOOL_DIR.into())),
            failures: Failures::default(),
        }
    }
}

/// One pass over `backup`: decide, take it if due, write the status, publish an Event.
///
/// # Errors
/// Only API server failures ([`enum@Error`]); a failed backup is written into the status and
/// retried through the returned [`Action`].
#[instrument(skip_all, fields(backup = %backup.name_any(), ns = backup.namespace().unwrap_or_default()))]
pub async fn reconcile(backup: Arc<EtcdBackup>, ctx: Arc<Context>) -> Result<Action, Error> {
    ctx.metrics.reconciles.inc();
    if backup.meta().deletion_timestamp.is_some() {
        // Backups in the bucket outlive the resource on purpose.
        return Ok(Action::await_change());
    }
    let name = backup.name_any();
    let generation = backup.metadata.generation.unwrap_or_default();
    let status = backup.status.as_ref();
    let now = Timestamp::now();

    let report = validate::backup(&name, &backup.spec);
    if !report.is_valid() {
        let new = status_invalid(status, &report, generation, now);
        if status != Some(&new) {
            apply_status(&ctx.client, &*backup, &new)
                .await
                .map_err(Error::PatchStatus)?;
            let note = report.errors_message();
            publish(&ctx, &backup, EventType::Warning, "InvalidSpec", note).await;
        }
        return Ok(Action::await_change());
    }

    match backup_due(&backup.spec, generation, status, now) {
        BackupDue::Never(Idle::OneShotDone { .. }) => Ok(Action::await_change()),
        BackupDue::Never(Idle::NoNextRun { expr, after }) => {
            let failure = AttemptError::Backup(crate::backup::Error::NoNextRun { expr, after });
            let new = status_after_failure(status, &failure, generation, None, now);
            if status != Some(&new) {
                apply_status(&ctx.client, &*backup, &new)
                    .await
                    .map_err(Error::PatchStatus)?;
                publish_failure(&ctx, &backup, &failure).await;
            }
            Ok(Action::await_change())
        }
        // Validation parsed the schedule already.
        BackupDue::Never(Idle::InvalidSchedule { .. }) => Ok(Action::await_change()),
        BackupDue::At(at) => {
            let new = status_scheduled(status, generation, Some(at), now);
            if status != Some(&new) {
                apply_status(&ctx.client, &*backup, &new)
                    .await
                    .map_err(Error::PatchStatus)?;
            }
            debug!(next = %at, "backup not due yet");
            Ok(Action::requeue(until(at, now)))
        }
        BackupDue::Now => run(&backup, &ctx, generation, now).await,
    }
}

/// Takes the backup and records the outcome.
async fn run(
    backup: &EtcdBackup,
    ctx: &Context,
    generation: i64,
    now: Timestamp,
) -> Result<Action, Error> {
    let namespace = backup.namespace().unwrap_or_default();
    let status = backup.status.as_ref();
    let labels = |result: &str| BackupLabels {
        namespace: namespace.clone(),
        backup: backup.name_any(),
        result: result.to_string(),
    };
    match attempt(backup, ctx).await? {
        Ok(Outcome { record, pruned }) => {
            ctx.metrics.backups.get_or_create(&labels("success")).inc();
            ctx.metrics
                .backup_bytes
                .get_or_create(&ClusterLabels {
                    namespace: namespace.clone(),
                    cluster: backup.spec.cluster_name.clone(),
                })
                .set(record.size);
            ctx.failures.clear(&ObjectRef::from_obj(backup));
            let done = Timestamp::now();
            // Validation parsed the schedule; a schedule without a next run stops here.
            let next = next_schedule(&backup.spec, done).ok().flatten();
            let note = format!(
                "backed up revision {} to {} ({} bytes)",
                record.revision, record.key, record.size
            );
            let mut new = status_after_success(status, record.clone(), generation, next, done);
            match pruned {
                Some(Ok(deleted)) => forget_deleted(&mut new, &deleted),
                Some(Err(e)) => {
                    warn!(error = %error_chain(&e), "deleting expired backups failed");
                    note_retention_failure(&mut new, &e);
                    publish_failure(ctx, backup, &AttemptError::Backup(e)).await;
                }
                None => {}
            }
            apply_status(&ctx.client, backup, &new)
                .await
                .map_err(Error::PatchStatus)?;
            publish(ctx, backup, EventType::Normal, "BackupSucceeded", note).await;
            Ok(match next {
                Some(at) => Action::requeue(until(at, Timestamp::now())),
                None => Action::await_change(),
            })
        }
        Err(failure) => {
            ctx.metrics.backups.get_or_create(&labels("failure")).inc();
            warn!(reason = failure.reason(), error = %failure.message(), "backup failed");
            // The missed run stays due: the next attempt is a retry, not the next slot.
            let next = status
                .and_then(|s| s.next_schedule_time.as_ref())
                .map(|t| t.0)
                .filter(|_| backup.spec.schedule.is_some());
            let new = status_after_failure(status, &failure, generation, next, now);
            if status != Some(&new) {
                apply_status(&ctx.client, backup, &new)
                    .await
                    .map_err(Error::PatchStatus)?;
            }
            publish_failure(ctx, backup, &failure).await;
            let failures = ctx.failures.record(ObjectRef::from_obj(backup));
            Ok(Action::requeue(retry_delay(
                failures,
                failure.is_retryable(),
            )))
        }
    }
}

/// Reads the cluster and the credentials, then runs one attempt ([`attempt::run`]). The
/// outer error is the API server failing; the inner one is this attempt's outcome.
async fn attempt(
    backup: &EtcdBackup,
    ctx: &Context,
) -> Result<Result<Outcome, AttemptError>, Error> {
    let verify = backup.spec.verify.unwrap_or(false);
    if let Err(p) = fits_memory_budget(&backup.spec.destination.s3, verify, ctx.memory_budget_mib) {
        return Ok(Err(AttemptError::Precondition(p)));
    }
    let namespace = backup.namespace().unwrap_or_default();
    let cluster_name = &backup.spec.cluster_name;
    let clusters: Api<EtcdCluster> = Api::namespaced(ctx.client.clone(), &namespace);
    let Some(cluster) =
        clusters
            .get_opt(cluster_name)
            .await
            .map_err(|source| Error::GetCluster {
                name: cluster_name.clone(),
                source,
            })?
    else {
        return Ok(Err(AttemptError::Precondition(
            Precondition::ClusterNotFound {
                namespace,
                cluster: cluster_name.clone(),
            },
        )));
    };
    let endpoints = match backup_endpoints(cluster_name, cluster.status.as_ref()) {
        Ok(endpoints) => endpoints,
        Err(p) => return Ok(Err(AttemptError::Precondition(p))),
    };
    let destination = &backup.spec.destination.s3;
    let credentials = match read_credentials(
        &ctx.client,
        &namespace,
        destination.connection.credentials_secret.as_deref(),
        ctx.allow_ambient_credentials,
    )
    .await?
    {
        Ok(credentials) => credentials,
        Err(failure) => return Ok(Err(failure)),
    };
    let tls = crate::runtime::pods::operator_tls(&ctx.client, &namespace, cluster_name)
        .await
        .map_err(|source| Error::GetSecret {
            name: format!("{cluster_name}-operator-tls"),
            source,
        })?;
    info!(cluster = %cluster_name, bucket = %destination.bucket, "taking backup");
    let backup_name = backup.name_any();
    Ok(attempt::run(Attempt {
        endpoints,
        tls,
        destination,
        credentials,
        owner: Owner {
            namespace: &namespace,
            cluster: cluster_name,
            backup: &backup_name,
            cluster_uid: cluster.metadata.uid.as_deref(),
        },
        retention: backup.spec.retention.as_ref(),
        verify: verify.then_some(&ctx.verifier),
    })
    .await
    .map_err(AttemptError::Backup))
}

/// The Secret's credentials; `None` when no Secret is named and the operator may lend its
/// own identity (the default AWS chain), refused otherwise. The outer error is the API
/// server failing.
async fn read_credentials(
    client: &Client,
    namespace: &str,
    secret: Option<&str>,
    allow_ambient: bool,
) -> Result<Result<Option<StaticCredentials>, AttemptError>, Error> {
    let Some(secret) = secret else {
        if !allow_ambient {
            return Ok(Err(AttemptError::Precondition(
                Precondition::AmbientCredentialsNotAllowed {
                    namespace: namespace.to_string(),
                },
            )));
        }
        return Ok(Ok(None));
    };
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let found = secrets
        .get_opt(secret)
        .await
        .map_err(|source| Error::GetSecret {
            name: secret.to_string(),
            source,
        })?;
    let Some(found) = found else {
        return Ok(Err(AttemptError::Precondition(
            Precondition::CredentialsSecretMissing {
                namespace: namespace.to_string(),
                secret: secret.to_string(),
            },
        )));
    };
    Ok(
        StaticCredentials::from_secret_data(&found.data.unwrap_or_default())
            .map(Some)
            .map_err(AttemptError::Backup),
    )
}

/// How long from `now` until `at`, at least a second (a requeue of zero spins).
fn until(at: Timestamp, now: Timestamp) -> Duration {
    let secs = at.as_second().saturating_sub(now.as_second()).max(1);
    Duration::from_secs(u64::try_from(secs).unwrap_or(1))
}

async fn publish_failure(ctx: &Context, backup: &EtcdBackup, failure: &impl Failure) {
    publish(
        ctx,
        backup,
        EventType::Warning,
        failure.reason(),
        failure.message(),
    )
    .await;
}

/// Publishes an Event about `backup`; failing to is logged, never fatal.
async fn publish(ctx: &Context, backup: &EtcdBackup, type_: EventType, reason: &str, note: String) {
    let event = Event {
        type_,
        reason: reason.to_string(),
        note: Some(note),
        action: "Backup".to_string(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&event, &backup.object_ref(&())).await {
        warn!(error = %e, reason, "publishing event failed");
    }
}

/// Failing to talk to the API server: try again in 5 s.
pub fn error_policy(backup: Arc<EtcdBackup>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics
        .reconcile_errors
        .get_or_create(&crate::metrics::ErrorLabels {
            error: error.label().to_string(),
        })
        .inc();
    warn!(backup = %backup.name_any(), error = %error_chain(error), "backup reconcile failed");
    Action::requeue(Duration::from_secs(5))
}

/// The EtcdBackup Controller (one namespace or all), ready to run until `shutdown`.
pub fn controller(
    api: Api<EtcdBackup>,
    ctx: Arc<Context>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) -> impl Future<Output = ()> + Send + 'static {
    Controller::new(api, watcher::Config::default())
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| log_result("EtcdBackup", result))
}
