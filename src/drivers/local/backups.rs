//! The local driver's EtcdBackups: on each pass, decide (through
//! [`crate::plan::backup`] and [`crate::plan::restore`]) which backups are due, run each as a task of its own (one
//! in flight per EtcdBackup, so the cluster loop never waits on an upload), collect finished
//! ones, apply retention after a success, and keep `status/etcdbackup/<name>.yaml` current.
//!
//! Taking the snapshot and pruning are the engine's ([`crate::backup`]); reconciling the
//! clusters is the driver's. A failure never deletes anything and never touches the source
//! cluster: the snapshot is read through etcd's client API only.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use tokio::sync::{Notify, oneshot};
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::api::backup::{Retention, S3Destination};
use crate::api::s3::S3Connection;
use crate::api::{EtcdBackup, EtcdCluster, validate};
use crate::backup::attempt::{self, Attempt, Outcome};
use crate::backup::{Owner, StaticCredentials, Verifier};
use crate::drivers::local::manifest::{DEFAULT_NAMESPACE, Documents};
use crate::plan::backup::{
    BackupDue, backup_due, backup_endpoints, fits_memory_budget, next_schedule,
    status_after_failure, status_after_success, status_invalid, status_scheduled,
};
use crate::plan::failure::{Failure, Precondition};

use super::store::{self, StatusFiles, Tracked};

/// Why a backup could not be taken: before the engine ran, or in it.
pub use crate::plan::failure::AttemptError as Error;

/// `namespace/name`, the key of a namespaced document.
pub(super) fn doc_key(meta: &kube::api::ObjectMeta) -> String {
    format!(
        "{}/{}",
        namespace_of(meta),
        meta.name.as_deref().unwrap_or_default()
    )
}

/// `delay` after `now`.
pub(super) fn retry_time(now: Timestamp, delay: std::time::Duration) -> Timestamp {
    now.saturating_add(jiff::SignedDuration::try_from(delay).unwrap_or_default())
        .unwrap_or(now)
}

pub(super) fn namespace_of(meta: &kube::api::ObjectMeta) -> &str {
    meta.namespace.as_deref().unwrap_or(DEFAULT_NAMESPACE)
}

/// The credentials `connection` names: the Secret `credentialsSecret` among `secrets` in
/// `namespace` (`stringData` over base64 `data`, as the API server merges them), or `None`
/// for the default AWS chain when it names none.
///
/// # Errors
/// [`Precondition::CredentialsSecretMissing`]; [`backup::Error::CredentialsSecret`] when a
/// key is missing or empty.
pub(super) fn credentials(
    connection: &S3Connection,
    namespace: &str,
    secrets: &[Secret],
) -> Result<Option<StaticCredentials>, Error> {
    let Some(name) = &connection.credentials_secret else {
        return Ok(None);
    };
    let secret = super::secrets::find(secrets, namespace, name).ok_or_else(|| {
        Precondition::CredentialsSecretMissing {
            namespace: namespace.to_owned(),
            secret: name.clone(),
        }
    })?;
    Ok(Some(StaticCredentials::from_secret_data(
        &super::secrets::data_of(secret),
    )?))
}

/// What a finished backup task hands back.
struct Running {
    generation: i64,
    done: oneshot::Receiver<Result<Outcome, Error>>,
    task: JoinHandle<()>,
}

/// What the driver remembers about one EtcdBackup between passes.
struct BackupState {
    doc: Tracked<EtcdBackup>,
    running: Option<Running>,
    /// Engine failures in a row, for the backoff.
    failures: u32,
    retry_at: Option<Timestamp>,
}

/// Every EtcdBackup the driver was given.
pub struct Backups {
    /// Part data all backups may hold in memory (`--backup-memory-budget-mib`).
    memory_budget_mib: u64,
    /// How `verify: true` checks uploads: with each version's own etcdutl.
    verifier: Verifier,
    status_files: StatusFiles,
    /// The runtime's state dir, where each cluster's certificates are.
    state_dir: PathBuf,
    wake: Arc<Notify>,
    states: HashMap<String, BackupState>,
}

impl Drop for Backups {
    fn drop(&mut self) {
        // An aborted upload aborts its multipart upload; nothing half-written is left.
        for state in self.states.values() {
            if let Some(r) = &state.running {
                r.task.abort();
            }
        }
    }
}

impl Backups {
    /// Backups whose tasks call `wake` when they finish; `verify: true` checks uploads with
    /// `verifier`.
    pub fn new(
        status_files: StatusFiles,
        state_dir: PathBuf,
        wake: Arc<Notify>,
        memory_budget_mib: u64,
        verifier: Verifier,
    ) -> Self {
        Self {
            status_files,
            state_dir,
            wake,
            memory_budget_mib,
            verifier,
            states: HashMap::new(),
        }
    }

    /// The files changed: failed backups may try again at once (a Secret may be fixed).
    pub fn inputs_changed(&mut self) {
        for state in self.states.values_mut() {
            state.retry_at = None;
        }
    }

    /// One pass over every EtcdBackup in `docs`, against `clusters` (every managed cluster
    /// with its last status). Returns the earliest time a backup is due, to wake then.
    ///
    /// # Errors
    /// Writing a status file.
    pub fn pass(
        &mut self,
        docs: &Documents,
        clusters: &[EtcdCluster],
        now: Timestamp,
    ) -> Result<Option<Timestamp>, store::Error> {
        self.forget_gone(docs);
        let mut wake_at: Option<Timestamp> = None;
        for doc in &docs.backups {
            let key = doc_key(&doc.metadata);
            if !self.states.contains_key(&key) {
                let name = doc.metadata.name.clone().unwrap_or_default();
                let state = BackupState {
                    doc: Tracked::load(&self.status_files, &name, doc)?,
                    running: None,
                    failures: 0,
                    retry_at: None,
                };
                self.states.insert(key.clone(), state);
            }
            let Some(state) = self.states.get_mut(&key) else {
                continue;
            };
            if state.doc.observe(doc) {
                state.failures = 0;
                state.retry_at = None;
            }
            let before = state.doc.status.clone();
            let inputs = JobInputs {
                wake: &self.wake,
                budget_mib: self.memory_budget_mib,
                state_dir: &self.state_dir,
                verifier: &self.verifier,
            };
            let at = step(state, doc, docs, clusters, &inputs, now);
            if let Some(at) = at {
                wake_at = Some(wake_at.map_or(at, |w| w.min(at)));
            }
            if state.doc.status != before {
                self.status_files.write(&state.doc.document(doc))?;
            }
        }
        Ok(wake_at)
    }

    fn forget_gone(&mut self, docs: &Documents) {
        let keys: Vec<String> = docs.backups.iter().map(|b| doc_key(&b.metadata)).collect();
        self.states.retain(|key, state| {
            let keep = keys.contains(key);
            if !keep {
                if let Some(r) = &state.running {
                    r.task.abort();
                }
                warn!(backup = %key, "backup is no longer in the files; its objects stay where they are");
            }
            keep
        });
    }
}

/// What a backup's job is made with, besides its documents.
struct JobInputs<'a> {
    /// Called by the job's task when it ends.
    wake: &'a Arc<Notify>,
    budget_mib: u64,
    /// The runtime's state dir, where the cluster's certificates are.
    state_dir: &'a Path,
    /// How `verify: true` checks uploads.
    verifier: &'a Verifier,
}

/// Moves one backup on; returns when to look again (besides the resync and task wake-ups).
fn step(
    state: &mut BackupState,
    doc: &EtcdBackup,
    docs: &Documents,
    clusters: &[EtcdCluster],
    inputs: &JobInputs<'_>,
    now: Timestamp,
) -> Option<Timestamp> {
    let JobInputs {
        wake,
        budget_mib,
        state_dir,
        verifier,
    } = *inputs;
    let name = doc.metadata.name.clone().unwrap_or_default();
    if let Some(running) = &mut state.running {
        match running.done.try_recv() {
            Err(oneshot::error::TryRecvError::Empty) => return None,
            Ok(result) => {
                let generation = running.generation;
                state.running = None;
                collect(state, &name, generation, result, now);
            }
            Err(oneshot::error::TryRecvError::Closed) => {
                state.running = None;
                state.failures += 1;
                let delay = crate::plan::failure::retry_delay(state.failures, true);
                state.retry_at = Some(retry_time(now, delay));
                warn!(backup = %name, retry_in = ?delay, "backup task ended without a result; will retry");
            }
        }
    }
    let report = validate::backup(&name, &doc.spec);
    if !report.is_valid() {
        state.doc.status = Some(status_invalid(
            state.doc.status.as_ref(),
            &report,
            state.doc.generation,
            now,
        ));
        return None;
    }
    let status = state.doc.status.as_ref();
    match backup_due(&doc.spec, state.doc.generation, status, now) {
        BackupDue::Never(idle) => {
            let next = status
                .and_then(|s| s.next_schedule_time.as_ref())
                .map(|t| t.0);
            if next.is_some() || status.is_none() {
                info!(backup = %name, why = %idle, "no backup due until the spec changes");
            }
            state.doc.status = Some(status_scheduled(status, state.doc.generation, None, now));
            None
        }
        BackupDue::At(at) => {
            state.doc.status = Some(status_scheduled(
                status,
                state.doc.generation,
                Some(at),
                now,
            ));
            Some(at)
        }
        BackupDue::Now => {
            if let Some(at) = state.retry_at.filter(|at| *at > now) {
                return Some(at);
            }
            let next = status
                .and_then(|s| s.next_schedule_time.as_ref())
                .map(|t| t.0);
            let namespace = namespace_of(&doc.metadata);
            match prepare(
                doc, namespace, docs, clusters, budget_mib, state_dir, verifier,
            ) {
                Ok(job) => {
                    info!(backup = %name, cluster = %doc.spec.cluster_name, "starting backup");
                    state.running = Some(spawn(job, name, state.doc.generation, wake.clone()));
                    // The first backup's status says it is under way only once it is done.
                    state.doc.status =
                        Some(status_scheduled(status, state.doc.generation, next, now));
                }
                Err(e) => {
                    // Preconditions are cheap to check again: every pass does, no backoff.
                    let failed = status_after_failure(status, &e, state.doc.generation, next, now);
                    if status != Some(&failed) {
                        warn!(backup = %name, reason = e.reason(), error = %Failure::message(&e), "backup cannot start");
                    }
                    state.doc.status = Some(failed);
                }
            }
            None
        }
    }
}

/// Records a finished task in the status.
fn collect(
    state: &mut BackupState,
    name: &str,
    generation: i64,
    result: Result<Outcome, Error>,
    now: Timestamp,
) {
    let status = state.doc.status.as_ref();
    match result {
        Ok(outcome) => {
            state.failures = 0;
            state.retry_at = None;
            let next = match next_schedule(state.doc.spec(), now) {
                Ok(next) => next,
                Err(e) => {
                    warn!(backup = %name, error = %e, "no next run");
                    None
                }
            };
            let mut st = status_after_success(status, outcome.record, generation, next, now);
            match outcome.pruned {
                Some(Err(e)) => {
                    warn!(backup = %name, error = %crate::error_chain::error_chain(&e), "deleting expired backups failed; will try after the next backup");
                    crate::plan::backup::note_retention_failure(&mut st, &e);
                }
                Some(Ok(gone)) if !gone.is_empty() => {
                    info!(backup = %name, deleted = gone.len(), "deleted expired backups");
                    crate::plan::backup::forget_deleted(&mut st, &gone);
                }
                _ => {}
            }
            state.doc.status = Some(st);
        }
        Err(e) => {
            state.failures += 1;
            let delay = crate::plan::failure::retry_delay(state.failures, e.is_retryable());
            state.retry_at = Some(retry_time(now, delay));
            warn!(backup = %name, reason = e.reason(), error = %Failure::message(&e), retry_in = ?delay, "backup failed; nothing was deleted");
            let next = status
                .and_then(|s| s.next_schedule_time.as_ref())
                .map(|t| t.0);
            state.doc.status = Some(status_after_failure(status, &e, generation, next, now));
        }
    }
}

/// Everything a backup task needs, resolved from the documents.
struct Job {
    endpoints: Vec<String>,
    tls: Option<crate::etcd::TlsConfig>,
    destination: S3Destination,
    credentials: Option<StaticCredentials>,
    namespace: String,
    cluster: String,
    backup: String,
    /// The cluster's incarnation ([`crate::reconcile::execute::incarnation`]).
    cluster_uid: Option<String>,
    retention: Option<Retention>,
    /// `verify: true`: how to check the upload.
    verify: Option<Verifier>,
}

/// The cluster's client URLs and the credentials, or why the backup cannot start.
fn prepare(
    doc: &EtcdBackup,
    namespace: &str,
    docs: &Documents,
    clusters: &[EtcdCluster],
    budget_mib: u64,
    state_dir: &Path,
    verifier: &Verifier,
) -> Result<Job, Error> {
    let verify = doc.spec.verify.unwrap_or(false);
    fits_memory_budget(&doc.spec.destination.s3, verify, budget_mib)?;
    let cluster_name = &doc.spec.cluster_name;
    let cluster = clusters
        .iter()
        .find(|c| {
            c.metadata.name.as_deref() == Some(cluster_name.as_str())
                && namespace_of(&c.metadata) == namespace
        })
        .ok_or_else(|| Precondition::ClusterNotFound {
            namespace: namespace.to_owned(),
            cluster: cluster_name.clone(),
        })?;
    let endpoints = backup_endpoints(cluster_name, cluster.status.as_ref())?;
    let destination = doc.spec.destination.s3.clone();
    let credentials = credentials(&destination.connection, namespace, &docs.secrets)?;
    let cref = crate::runtime::ClusterRef::new(namespace, cluster_name.as_str());
    // Unreadable certificates show up as the connection's failure.
    let tls = crate::runtime::local::operator_tls(state_dir, &cref).unwrap_or_else(|e| {
        warn!(cluster = %cref, error = %crate::error_chain::error_chain(&e), "cannot read the cluster's certificates");
        None
    });
    Ok(Job {
        endpoints,
        tls,
        destination,
        credentials,
        namespace: namespace.to_owned(),
        cluster: cluster_name.clone(),
        backup: doc.metadata.name.clone().unwrap_or_default(),
        cluster_uid: crate::reconcile::execute::incarnation(cluster),
        retention: doc.spec.retention.clone(),
        verify: verify.then(|| verifier.clone()),
    })
}

fn spawn(job: Job, name: String, generation: i64, wake: Arc<Notify>) -> Running {
    let (tx, done) = oneshot::channel();
    let task = tokio::spawn(async move {
        let result = run(job, &name).await;
        let _ = tx.send(result);
        wake.notify_one();
    });
    Running {
        generation,
        done,
        task,
    }
}

/// One attempt ([`crate::backup::attempt`]), as on Kubernetes.
async fn run(job: Job, name: &str) -> Result<Outcome, Error> {
    info!(backup = name, cluster = %job.cluster, "taking backup");
    let outcome = attempt::run(Attempt {
        endpoints: job.endpoints,
        tls: job.tls,
        destination: &job.destination,
        credentials: job.credentials,
        owner: Owner {
            namespace: &job.namespace,
            cluster: &job.cluster,
            backup: &job.backup,
            cluster_uid: job.cluster_uid.as_deref(),
        },
        retention: job.retention.as_ref(),
        verify: job.verify.as_ref(),
    })
    .await?;
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn secret(name: &str, data: &[(&str, &str)], string_data: &[(&str, &str)]) -> Secret {
        Secret {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("default".into()),
                ..ObjectMeta::default()
            },
            data: Some(
                data.iter()
                    .map(|(k, v)| {
                        (
                            k.to_string(),
                            k8s_openapi::ByteString(v.as_bytes().to_vec()),
                        )
                    })
                    .collect(),
            ),
            string_data: Some(
                string_data
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            ..Secret::default()
        }
    }

    fn connection(secret: Option<&str>) -> S3Connection {
        S3Connection {
            credentials_secret: secret.map(str::to_owned),
            ..S3Connection::default()
        }
    }

    #[test]
    fn string_data_wins_over_data() {
        let s = secret(
            "s3",
            &[("accessKeyId", "old"), ("secretAccessKey", "from-data")],
            &[("accessKeyId", "new")],
        );
        let c = credentials(&connection(Some("s3")), "default", &[s])
            .unwrap()
            .unwrap();
        assert_eq!(c.access_key_id, "new");
        assert_eq!(c.secret_access_key(), "from-data");
    }

    #[test]
    fn a_missing_secret_is_a_precondition_and_none_means_the_default_chain() {
        let err = credentials(&connection(Some("s3")), "default", &[]).unwrap_err();
        assert_eq!(err.reason(), "CredentialsSecretMissing");
        let other_ns = {
            let mut s = secret("s3", &[], &[("accessKeyId", "a"), ("secretAccessKey", "b")]);
            s.metadata.namespace = Some("other".into());
            s
        };
        let err = credentials(&connection(Some("s3")), "default", &[other_ns]).unwrap_err();
        assert_eq!(err.reason(), "CredentialsSecretMissing");
        assert!(
            credentials(&connection(None), "default", &[])
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn a_secret_without_the_secret_key_is_a_credentials_secret_error() {
        let s = secret("s3", &[], &[("accessKeyId", "a")]);
        let err = credentials(&connection(Some("s3")), "default", &[s]).unwrap_err();
        assert_eq!(err.reason(), "CredentialsSecret");
    }
}
