//! The local driver's EtcdRestores: turn a snapshot into a new local cluster, once. A restore
//! here is what it is on Kubernetes, a bootstrap variant: the restore resolves and verifies
//! the snapshot, then hands the cluster to the loop, where the planner's ordinary
//! `Bootstrap` step creates its members and the runtime restores each bootstrap member's data
//! dir from the snapshot before its first start ([`LocalRuntime::set_seed`], the local
//! counterpart of the pod runtime's restore init containers). Decisions and statuses come
//! from [`crate::plan::restore`]; downloading and verifying from the engine
//! ([`crate::backup`]).
//!
//! # Flow (one task per EtcdRestore, off the cluster loop)
//! 1. Refuse (`Failed`, `ClusterExists`) when the target cluster exists: an EtcdCluster
//!    document, another EtcdRestore restoring it, its status file, or member directories
//!    this restore did not write.
//! 2. Resolve the source: the `s3` object, or the last successful backup of `backupName`
//!    (its key and sha256, from the EtcdBackup's status file). Credentials from a Secret doc.
//! 3. Write the journal `<state>/restores/<namespace>/<name>/restore.json`: target cluster,
//!    member names, cluster token, then the snapshot's digest and revision once verified.
//! 4. `Downloading`: fetch and verify the snapshot to `snapshot.db` next to the journal.
//! 5. `Restoring`: the snapshot becomes the cluster's seed and the cluster joins the loop
//!    (annotated [`RESTORED_BY`], its incarnation the journal's token). The planner
//!    bootstraps `<cluster>-0 .. <cluster>-<size-1>`; the runtime restores each one's data dir
//!    from the seed with the bootstrap's initial cluster and token before starting it.
//! 6. `Completed` once the cluster is `Available`, with the revision and cluster id; the seed
//!    is cleared and the downloaded snapshot removed.
//!
//! # Guarantees
//! - A `Completed` restore is never run again.
//! - Restarts resume: every step is idempotent, a data dir is complete or absent (the
//!   engine's staging rename), and the journal keeps the token and the snapshot's digest, so
//!   a resumed restore writes the same cluster. A journal for another target (the spec
//!   changed mid-restore) with data dirs present stops at `PartialRestore` until the spec
//!   is changed back or the directory removed; nothing is deleted.
//! - A failure deletes no data and creates no member before the snapshot is verified.
//! - Every member restores the same bytes: the snapshot is downloaded and verified once,
//!   and every bootstrap member's data dir comes from that one file (its digest in the
//!   journal before any member exists), so an object overwritten while the restore runs
//!   cannot split the members. The Kubernetes runtime, whose members each download, pins
//!   the object instead ([`crate::backup::pin`]).
//!
//! # The restored cluster
//! From `Restoring` on, the cluster (named in the journal, spec from `spec.cluster.spec`) is
//! reconciled like any EtcdCluster document, with status `status/etcdcluster/<name>.yaml`,
//! for as long as the EtcdRestore document is in the files; a restarted operator finds it
//! through the restore's `Completed` status file and journal. An EtcdCluster document of the
//! same name takes over from the restore.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, oneshot, watch};
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::api::restore::{EtcdRestoreSpec, RestorePhase};
use crate::api::{EtcdBackup, EtcdCluster, EtcdRestore, condition, validate};
use crate::backup::{self, StaticCredentials};
use crate::plan::MemberName;
use crate::plan::failure::{Failure, Precondition};
use crate::plan::restore::{
    RestoreFrom, RestoreNext, restore_next, restore_source, restore_status_completed,
    restore_status_downloading, restore_status_failed, restore_status_invalid,
    restore_status_pending, restore_status_restoring, restore_status_with_cluster_id,
};
use crate::reconcile::execute::cluster_token;
use crate::runtime::local::Seed;
use crate::runtime::{self, ClusterRef, LocalRuntime};

use super::backups::{self, doc_key, namespace_of, retry_time};
use super::store::{self, StatusFiles, Tracked};

/// The downloaded snapshot, next to the journal; removed once the restore completed.
const SNAPSHOT_FILE: &str = "snapshot.db";

/// How often a restore whose cluster is bootstrapping looks at the cluster's status.
const FOLLOW_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// The bootstrap members of the cluster `spec` restores into.
fn member_names(spec: &EtcdRestoreSpec) -> Vec<String> {
    (0u32..)
        .take(usize::try_from(spec.cluster.spec.size).unwrap_or(0))
        .map(|i| MemberName::new(&spec.cluster.name, i).to_string())
        .collect()
}

/// Annotation on a restored cluster's status file naming the EtcdRestore that made it.
pub const RESTORED_BY: &str = "etcd.operator.dev/restored-by";

/// Why a restore failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Precondition(#[from] Precondition),
    #[error(transparent)]
    Backup(#[from] backup::Error),
    /// The spec changed after an earlier attempt restored data for another target.
    #[error(
        "an earlier attempt restored data for cluster {cluster} (members {members:?}) under {dir}; restore that spec again or remove the directory"
    )]
    PartialRestore {
        dir: PathBuf,
        cluster: String,
        members: Vec<String>,
    },
    #[error("spec.cluster.spec.version {version:?} is not a version")]
    InvalidVersion {
        version: String,
        #[source]
        source: semver::Error,
    },
    // Boxed: runtime errors are large and would bloat every `Result<_, Error>`.
    #[error("no etcd binary for the restored cluster")]
    BinaryMissing(#[source] Box<runtime::Error>),
    #[error("handing the verified snapshot to the runtime")]
    Seed(#[source] Box<runtime::Error>),
    #[error("writing the restore journal {path}")]
    Journal {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("namespace {namespace:?} cannot name a directory")]
    InvalidNamespace { namespace: String },
}

impl From<backups::Error> for Error {
    fn from(e: backups::Error) -> Self {
        match e {
            backups::Error::Precondition(p) => Error::Precondition(p),
            backups::Error::Backup(b) => Error::Backup(b),
        }
    }
}

impl Failure for Error {
    fn reason(&self) -> &'static str {
        match self {
            Error::Precondition(p) => p.reason(),
            Error::Backup(e) => e.reason(),
            Error::PartialRestore { .. } => "PartialRestore",
            Error::InvalidVersion { .. } => "InvalidVersion",
            Error::BinaryMissing(_) => "BinaryMissing",
            Error::Seed(_) => "Seed",
            Error::Journal { .. } => "Journal",
            Error::InvalidNamespace { .. } => "InvalidNamespace",
        }
    }

    fn message(&self) -> String {
        crate::error_chain::error_chain(self)
    }

    /// Runtime and journal failures (ports, disk) may pass; a missing binary installed or a
    /// partial restore's directory removed is picked up by a later attempt too.
    fn is_retryable(&self) -> bool {
        match self {
            Error::Precondition(p) => p.is_retryable(),
            Error::Backup(e) => e.is_retryable(),
            Error::InvalidNamespace { .. } | Error::InvalidVersion { .. } => false,
            Error::PartialRestore { .. }
            | Error::BinaryMissing(_)
            | Error::Seed(_)
            | Error::Journal { .. } => true,
        }
    }
}

/// What a restore has done so far, on disk, so a restarted operator resumes the same restore.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Journal {
    cluster: String,
    members: Vec<String>,
    token: String,
    bucket: String,
    key: String,
    /// Set once the snapshot was verified, before any data dir is written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sha256: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    revision: Option<i64>,
}

impl Journal {
    fn read(path: &Path) -> Result<Option<Self>, Error> {
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| journal_err(path, std::io::Error::other(e))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(journal_err(path, e)),
        }
    }

    /// Written through a temp file and a rename: old or new, never half.
    fn write(&self, path: &Path) -> Result<(), Error> {
        let json = serde_json::to_vec_pretty(self).map_err(|e| journal_err(path, e.into()))?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| journal_err(path, e))?;
        }
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, json).map_err(|e| journal_err(path, e))?;
        std::fs::rename(&tmp, path).map_err(|e| journal_err(path, e))
    }

    fn targets(&self, cluster: &str, members: &[String]) -> bool {
        self.cluster == cluster && self.members == members
    }
}

fn journal_err(path: &Path, source: std::io::Error) -> Error {
    Error::Journal {
        path: path.to_owned(),
        source,
    }
}

/// Where a running restore is, for its status.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Progress {
    Starting,
    Downloading { key: String },
}

/// A finished restore.
struct Restored {
    key: String,
    sha256: String,
    revision: i64,
}

struct Running {
    generation: i64,
    progress: watch::Receiver<Progress>,
    done: oneshot::Receiver<Result<Restored, Error>>,
    task: JoinHandle<()>,
}

/// What the driver remembers about one EtcdRestore between passes.
struct RestoreState {
    namespace: String,
    name: String,
    doc: Tracked<EtcdRestore>,
    journal: Option<Journal>,
    running: Option<Running>,
    failures: u32,
    retry_at: Option<Timestamp>,
}

impl RestoreState {
    /// The snapshot is verified and is the seed of the cluster this spec targets: the
    /// cluster bootstraps from it through the planner, and the restore follows it.
    fn is_handed(&self, spec: &EtcdRestoreSpec) -> bool {
        self.doc
            .status
            .as_ref()
            .is_some_and(|s| s.phase == RestorePhase::Restoring)
            && self.journal.as_ref().is_some_and(|j| {
                j.sha256.is_some()
                    && j.revision.is_some()
                    && j.targets(&spec.cluster.name, &member_names(spec))
            })
    }

    fn is_completed(&self) -> bool {
        self.doc
            .status
            .as_ref()
            .is_some_and(|s| s.phase == RestorePhase::Completed)
    }

    /// The cluster this restore made or is making: the journal's, else the spec's.
    fn target(&self) -> &str {
        self.journal
            .as_ref()
            .map_or(self.doc.spec().cluster.name.as_str(), |j| {
                j.cluster.as_str()
            })
    }
}

/// Every EtcdRestore the driver was given.
pub struct Restores {
    status_files: StatusFiles,
    runtime: LocalRuntime,
    state_dir: PathBuf,
    wake: Arc<Notify>,
    states: HashMap<String, RestoreState>,
}

impl Drop for Restores {
    fn drop(&mut self) {
        // An interrupted restore resumes from its journal on the next start.
        for state in self.states.values() {
            if let Some(r) = &state.running {
                r.task.abort();
            }
        }
    }
}

impl Restores {
    pub fn new(
        status_files: StatusFiles,
        runtime: LocalRuntime,
        state_dir: PathBuf,
        wake: Arc<Notify>,
    ) -> Self {
        Self {
            status_files,
            runtime,
            state_dir,
            wake,
            states: HashMap::new(),
        }
    }

    /// The files changed: failed restores may try again at once.
    pub fn inputs_changed(&mut self) {
        for state in self.states.values_mut() {
            state.retry_at = None;
        }
    }

    /// The clusters completed restores made, for the driver to reconcile: named as restored,
    /// with the restore's current `spec.cluster.spec`, annotated [`RESTORED_BY`].
    ///
    /// # Errors
    /// Reading a status file.
    pub fn restored_clusters(
        &mut self,
        docs: &[EtcdRestore],
    ) -> Result<Vec<EtcdCluster>, store::Error> {
        self.sync(docs)?;
        let mut out = Vec::new();
        for doc in docs {
            let Some(state) = self.states.get(&doc_key(&doc.metadata)) else {
                continue;
            };
            if !state.is_completed() && !state.is_handed(&doc.spec) {
                continue;
            }
            let mut cluster = EtcdCluster::new(state.target(), doc.spec.cluster.spec.clone());
            cluster.metadata.namespace = Some(state.namespace.clone());
            // The journal's token, unique to this restore, is the cluster's incarnation: every
            // bootstrap member gets the same token, also across operator restarts.
            cluster.metadata.uid = state.journal.as_ref().map(|j| j.token.clone());
            cluster.metadata.annotations = Some(
                [(
                    RESTORED_BY.to_owned(),
                    doc.metadata.name.clone().unwrap_or_default(),
                )]
                .into(),
            );
            out.push(cluster);
        }
        Ok(out)
    }

    /// One pass over every EtcdRestore: collect finished tasks, start due ones, keep the
    /// status files current. `clusters` are the managed clusters with their last status
    /// (documents and restored ones); `docs` are all documents (for EtcdClusters, EtcdBackups
    /// and Secrets). Returns when to look again.
    ///
    /// # Errors
    /// Writing or reading a status file.
    pub fn pass(
        &mut self,
        docs: &crate::drivers::local::manifest::Documents,
        clusters: &[EtcdCluster],
        now: Timestamp,
    ) -> Result<Option<Timestamp>, store::Error> {
        self.sync(&docs.restores)?;
        let mut wake_at: Option<Timestamp> = None;
        for doc in &docs.restores {
            let key = doc_key(&doc.metadata);
            let before = self.states.get(&key).and_then(|s| s.doc.status.clone());
            let at = self.step(&key, doc, docs, clusters, now);
            if let Some(at) = at {
                wake_at = Some(wake_at.map_or(at, |w| w.min(at)));
            }
            let Some(state) = self.states.get(&key) else {
                continue;
            };
            if state.doc.status != before {
                self.status_files.write(&state.doc.document(doc))?;
            }
        }
        Ok(wake_at)
    }

    /// Tracks the documents: state from earlier status files and journals for new ones, a
    /// new generation for changed specs, aborted tasks for removed ones.
    fn sync(&mut self, docs: &[EtcdRestore]) -> Result<(), store::Error> {
        let keys: Vec<String> = docs.iter().map(|d| doc_key(&d.metadata)).collect();
        self.states.retain(|key, state| {
            let keep = keys.contains(key);
            if !keep {
                if let Some(r) = &state.running {
                    r.task.abort();
                    warn!(restore = %key, "restore is no longer in the files; stopped it, its journal and data stay");
                }
                if state.is_completed() {
                    warn!(restore = %key, cluster = state.target(), "restore is no longer in the files; its cluster is no longer managed, its members keep running");
                }
            }
            keep
        });
        for doc in docs {
            let key = doc_key(&doc.metadata);
            if let Some(state) = self.states.get_mut(&key) {
                if state.doc.observe(doc) {
                    state.failures = 0;
                    state.retry_at = None;
                }
                continue;
            }
            let name = doc.metadata.name.clone().unwrap_or_default();
            let namespace = namespace_of(&doc.metadata).to_owned();
            let tracked = Tracked::load(&self.status_files, &name, doc)?;
            let journal = match self.journal_path(&namespace, &name) {
                Ok(path) => Journal::read(&path).unwrap_or_else(|e| {
                    warn!(restore = %key, error = %crate::error_chain::error_chain(&e), "cannot read the restore journal");
                    None
                }),
                Err(_) => None,
            };
            let state = RestoreState {
                namespace,
                name: name.clone(),
                doc: tracked,
                journal,
                running: None,
                failures: 0,
                retry_at: None,
            };
            self.states.insert(key, state);
        }
        Ok(())
    }

    fn restore_dir(&self, namespace: &str, name: &str) -> Result<PathBuf, Error> {
        let ok = |s: &str| !s.is_empty() && !s.starts_with('.') && !s.contains(['/', '\\', '\0']);
        if !ok(namespace) || !ok(name) {
            return Err(Error::InvalidNamespace {
                namespace: format!("{namespace}/{name}"),
            });
        }
        Ok(self.state_dir.join("restores").join(namespace).join(name))
    }

    fn journal_path(&self, namespace: &str, name: &str) -> Result<PathBuf, Error> {
        Ok(self.restore_dir(namespace, name)?.join("restore.json"))
    }

    /// Moves one restore on; returns when to look again.
    fn step(
        &mut self,
        key: &str,
        doc: &EtcdRestore,
        docs: &crate::drivers::local::manifest::Documents,
        clusters: &[EtcdCluster],
        now: Timestamp,
    ) -> Option<Timestamp> {
        let name = doc.metadata.name.clone().unwrap_or_default();
        let state = self.states.get_mut(key)?;
        if let Some(running) = &mut state.running {
            let progress = running.progress.borrow_and_update().clone();
            let generation = running.generation;
            let status = state.doc.status.as_ref();
            match running.done.try_recv() {
                Err(oneshot::error::TryRecvError::Empty) => {
                    state.doc.status = Some(match progress {
                        Progress::Starting => restore_status_pending(status, generation, now),
                        Progress::Downloading { key } => {
                            restore_status_downloading(status, generation, &key, now)
                        }
                    });
                    return None;
                }
                Ok(Ok(done)) => {
                    state.running = None;
                    state.failures = 0;
                    state.retry_at = None;
                    info!(restore = %name, cluster = state.target(), revision = done.revision, "snapshot verified; the cluster bootstraps from it");
                    state.doc.status = Some(restore_status_restoring(
                        status,
                        generation,
                        &done.key,
                        Some(&done.sha256),
                        Some(done.revision),
                        now,
                    ));
                    // The new cluster joins the loop on the next pass: make it now.
                    return Some(now);
                }
                Ok(Err(e)) => {
                    state.running = None;
                    state.failures += 1;
                    let delay = crate::plan::failure::retry_delay(state.failures, e.is_retryable());
                    if e.is_retryable() {
                        state.retry_at = Some(retry_time(now, delay));
                    }
                    warn!(restore = %name, reason = e.reason(), error = %e.message(), retryable = e.is_retryable(), "restore failed; nothing was deleted");
                    state.doc.status = Some(restore_status_failed(status, &e, generation, now));
                }
                Err(oneshot::error::TryRecvError::Closed) => {
                    state.running = None;
                    state.failures += 1;
                    let delay = crate::plan::failure::retry_delay(state.failures, true);
                    state.retry_at = Some(retry_time(now, delay));
                    warn!(restore = %name, retry_in = ?delay, "restore task ended without a result; will resume");
                }
            }
        }
        let report = validate::restore(&name, &doc.spec);
        if !report.is_valid() {
            state.doc.status = Some(restore_status_invalid(
                state.doc.status.as_ref(),
                &report,
                state.doc.generation,
                now,
            ));
            return None;
        }
        match restore_next(state.doc.generation, state.doc.status.as_ref()) {
            RestoreNext::GaveUp => return None,
            RestoreNext::Done => {
                let target = state.target().to_owned();
                let id = clusters
                    .iter()
                    .find(|c| {
                        c.metadata.name.as_deref() == Some(target.as_str())
                            && namespace_of(&c.metadata) == state.namespace
                    })
                    .and_then(|c| c.status.as_ref())
                    .and_then(|s| s.cluster_id.clone());
                if let (Some(id), Some(st)) = (id, &state.doc.status)
                    && st.cluster_id.as_deref() != Some(id.as_str())
                {
                    state.doc.status = Some(restore_status_with_cluster_id(st, &id));
                }
                return None;
            }
            RestoreNext::Run => {}
        }
        if state.is_handed(&doc.spec) {
            return self.follow(key, clusters, now);
        }
        if let Some(at) = state.retry_at.filter(|at| *at > now) {
            return Some(at);
        }
        let generation = state.doc.generation;
        match self.prepare(key, doc, docs) {
            Ok(job) => {
                let state = self.states.get_mut(key)?;
                info!(restore = %name, cluster = %job.cluster.name, source = %job.from.key, "starting restore");
                state.journal = Some(job.journal.clone());
                state.running = Some(spawn(job, name, generation, self.wake.clone()));
                state.doc.status = Some(restore_status_pending(
                    state.doc.status.as_ref(),
                    generation,
                    now,
                ));
            }
            Err(e) => {
                let state = self.states.get_mut(key)?;
                // Preconditions are cheap to check again: every pass does. Others back off.
                if !matches!(e, Error::Precondition(_)) && e.is_retryable() {
                    state.failures += 1;
                    let delay = crate::plan::failure::retry_delay(state.failures, true);
                    state.retry_at = Some(retry_time(now, delay));
                }
                let status = restore_status_failed(state.doc.status.as_ref(), &e, generation, now);
                if state.doc.status.as_ref() != Some(&status) {
                    warn!(restore = %name, reason = e.reason(), error = %e.message(), retryable = e.is_retryable(), "restore cannot start");
                }
                state.doc.status = Some(status);
            }
        }
        None
    }

    /// Step 6: the cluster bootstraps from the snapshot through the planner like any other;
    /// once it is `Available`, the restore is `Completed` with its cluster id, the runtime
    /// forgets the seed and the downloaded snapshot is removed. Returns when to look again.
    fn follow(&mut self, key: &str, clusters: &[EtcdCluster], now: Timestamp) -> Option<Timestamp> {
        let state = self.states.get(key)?;
        let journal = state.journal.clone()?;
        let cluster = ClusterRef::new(&state.namespace, &journal.cluster);
        let snapshot = self
            .restore_dir(&state.namespace, &state.name)
            .map(|d| d.join(SNAPSHOT_FILE));
        let status = clusters
            .iter()
            .find(|c| {
                c.metadata.name.as_deref() == Some(cluster.name.as_str())
                    && namespace_of(&c.metadata) == cluster.namespace
            })
            .and_then(|c| c.status.as_ref());
        let available = status.is_some_and(|s| {
            condition::is_true(&s.conditions, crate::api::condition::types::AVAILABLE)
        });
        if !available {
            return Some(retry_time(now, FOLLOW_INTERVAL));
        }
        if let Err(e) = self.runtime.set_seed(&cluster, None) {
            warn!(restore = %key, error = %crate::error_chain::error_chain(&e), "could not clear the restored cluster's seed; will try again");
            return Some(retry_time(now, FOLLOW_INTERVAL));
        }
        if let Ok(snapshot) = snapshot
            && let Err(e) = std::fs::remove_file(&snapshot)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            warn!(path = %snapshot.display(), error = %e, "could not remove the downloaded snapshot");
        }
        let cluster_id = status.and_then(|s| s.cluster_id.clone());
        let state = self.states.get_mut(key)?;
        info!(restore = %key, cluster = %cluster, cluster_id = cluster_id.as_deref().unwrap_or(""), "restore completed; the cluster is managed from now on");
        state.doc.status = Some(restore_status_completed(
            state.doc.status.as_ref(),
            state.doc.generation,
            &journal.key,
            journal.sha256.as_deref(),
            journal.revision,
            cluster_id,
            now,
        ));
        None
    }

    /// Everything the task needs, or why the restore cannot start (steps 1 to 3).
    fn prepare(
        &self,
        key: &str,
        doc: &EtcdRestore,
        docs: &crate::drivers::local::manifest::Documents,
    ) -> Result<Job, Error> {
        let state = self.states.get(key).ok_or(Error::InvalidNamespace {
            namespace: key.to_owned(),
        })?;
        let namespace = state.namespace.as_str();
        let name = doc.metadata.name.clone().unwrap_or_default();
        let spec = &doc.spec;
        let cluster = ClusterRef::new(namespace, &spec.cluster.name);
        let members = member_names(spec);
        let journal_path = self.journal_path(namespace, &name)?;
        let journal = Journal::read(&journal_path)?;
        let owned = journal
            .as_ref()
            .filter(|j| j.targets(&spec.cluster.name, &members));
        if let Some(j) = journal.as_ref().filter(|_| owned.is_none()) {
            // The spec changed since an attempt began: only a clean slate may start over.
            let dir = cluster_dir(&self.runtime, &ClusterRef::new(namespace, &j.cluster))?;
            if has_entries(&dir) {
                return Err(Error::PartialRestore {
                    dir,
                    cluster: j.cluster.clone(),
                    members: j.members.clone(),
                });
            }
        }
        if let Some(evidence) = self.existing(key, &cluster, docs, owned.is_some())? {
            return Err(Precondition::ClusterExists {
                cluster: spec.cluster.name.clone(),
                evidence,
            }
            .into());
        }
        let backup = spec.source.backup_name.as_ref().and_then(|b| {
            let doc = docs.backups.iter().find(|d| {
                d.metadata.name.as_deref() == Some(b.as_str())
                    && namespace_of(&d.metadata) == namespace
            })?;
            let mut backup = doc.clone();
            backup.status = self
                .status_files
                .read::<EtcdBackup>(b)
                .ok()
                .flatten()
                .and_then(|s| s.status);
            Some(backup)
        });
        let mut from = restore_source(namespace, spec, backup.as_ref())?;
        let credentials = backups::credentials(&from.connection, namespace, &docs.secrets)?;
        let version = validate::parse_version(&spec.cluster.spec.version).map_err(|source| {
            Error::InvalidVersion {
                version: spec.cluster.spec.version.clone(),
                source,
            }
        })?;
        let binary = self
            .runtime
            .binary(&version)
            .map_err(|e| Error::BinaryMissing(Box::new(e)))?;
        let journal = match owned {
            // Resume with the snapshot the journal started with, not a newer backup.
            Some(j) => {
                from.bucket = j.bucket.clone();
                from.key = j.key.clone();
                from.sha256 = j.sha256.clone().or(from.sha256);
                j.clone()
            }
            None => {
                let j = Journal {
                    cluster: spec.cluster.name.clone(),
                    members,
                    token: cluster_token(&cluster),
                    bucket: from.bucket.clone(),
                    key: from.key.clone(),
                    sha256: None,
                    revision: None,
                };
                j.write(&journal_path)?;
                j
            }
        };
        Ok(Job {
            runtime: self.runtime.clone(),
            cluster,
            version,
            tool_dir: binary.parent().map(Path::to_path_buf).unwrap_or_default(),
            from,
            credentials,
            journal,
            journal_path: journal_path.clone(),
            snapshot: journal_path.with_file_name(SNAPSHOT_FILE),
        })
    }

    /// What shows that `cluster` exists, other than this restore's own work.
    fn existing(
        &self,
        key: &str,
        cluster: &ClusterRef,
        docs: &crate::drivers::local::manifest::Documents,
        owned: bool,
    ) -> Result<Option<String>, Error> {
        if docs.clusters.iter().any(|c| {
            c.metadata.name.as_deref() == Some(cluster.name.as_str())
                && namespace_of(&c.metadata) == cluster.namespace
        }) {
            return Ok(Some("an EtcdCluster document names it".into()));
        }
        for (other, state) in &self.states {
            if other != key
                && state.namespace == cluster.namespace
                && state.target() == cluster.name
                && (state.running.is_some() || state.is_completed())
            {
                return Ok(Some(format!("EtcdRestore {other} restores it")));
            }
        }
        // This restore's own cluster has a status file once it joined the loop.
        let status_file = self.status_files.path::<EtcdCluster>(&cluster.name);
        if !owned && status_file.exists() {
            return Ok(Some(format!(
                "its status file {} exists",
                status_file.display()
            )));
        }
        let dir = cluster_dir(&self.runtime, cluster)?;
        if !owned && has_entries(&dir) {
            return Ok(Some(format!(
                "member directories exist in {}",
                dir.display()
            )));
        }
        Ok(None)
    }
}

/// `<state>/clusters/<namespace>/<cluster>`, the directory of the cluster's members.
fn cluster_dir(runtime: &LocalRuntime, cluster: &ClusterRef) -> Result<PathBuf, Error> {
    // The runtime exposes member directories only; any valid member name gives the parent.
    let member = runtime
        .member_dir(cluster, "member")
        .map_err(|_| Error::InvalidNamespace {
            namespace: cluster.to_string(),
        })?;
    Ok(member.parent().map(Path::to_path_buf).unwrap_or(member))
}

fn has_entries(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|mut d| d.next().is_some())
}

/// Everything a restore task needs.
struct Job {
    runtime: LocalRuntime,
    cluster: ClusterRef,
    version: semver::Version,
    tool_dir: PathBuf,
    from: RestoreFrom,
    credentials: Option<StaticCredentials>,
    journal: Journal,
    journal_path: PathBuf,
    snapshot: PathBuf,
}

fn spawn(job: Job, name: String, generation: i64, wake: Arc<Notify>) -> Running {
    let (tx, done) = oneshot::channel();
    let (progress_tx, progress) = watch::channel(Progress::Starting);
    let task = tokio::spawn(async move {
        let result = restore(job, &name, &progress_tx, &wake).await;
        let _ = tx.send(result);
        wake.notify_one();
    });
    Running {
        generation,
        progress,
        done,
        task,
    }
}

/// Steps 4 and 5 of the flow: the verified snapshot (downloaded unless an earlier attempt
/// verified it already) becomes the seed of the cluster's bootstrap members.
async fn restore(
    mut job: Job,
    name: &str,
    progress: &watch::Sender<Progress>,
    wake: &Notify,
) -> Result<Restored, Error> {
    let verified = match (&job.journal.sha256, job.journal.revision) {
        (Some(sha), Some(rev)) if job.snapshot.is_file() => (sha.clone(), rev),
        _ => {
            progress.send_replace(Progress::Downloading {
                key: job.from.key.clone(),
            });
            wake.notify_one();
            let s3 = backup::client(&job.from.connection, job.credentials.clone()).await;
            let verified = backup::fetch_snapshot(
                &s3,
                &job.from.bucket,
                &job.from.key,
                job.from.sha256.as_deref(),
                &job.snapshot,
                &job.tool_dir,
                &job.version,
            )
            .await?;
            info!(restore = name, key = %job.from.key, bytes = verified.size, revision = verified.revision, keys = verified.total_keys, "snapshot verified");
            job.journal.sha256 = Some(verified.sha256.clone());
            job.journal.revision = Some(verified.revision);
            job.journal.write(&job.journal_path)?;
            (verified.sha256, verified.revision)
        }
    };
    let seed = Seed {
        snapshot: job.snapshot.clone(),
    };
    job.runtime
        .set_seed(&job.cluster, Some(&seed))
        .map_err(|e| Error::Seed(Box::new(e)))?;
    Ok(Restored {
        key: job.from.key,
        sha256: verified.0,
        revision: verified.1,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_journal_targets_one_cluster_and_member_list() {
        let j = Journal {
            cluster: "r".into(),
            members: vec!["r-0".into(), "r-1".into()],
            token: "t".into(),
            bucket: "b".into(),
            key: "k".into(),
            sha256: None,
            revision: None,
        };
        assert!(j.targets("r", &["r-0".into(), "r-1".into()]));
        assert!(!j.targets("r", &["r-0".into()]));
        assert!(!j.targets("s", &["r-0".into(), "r-1".into()]));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x/restore.json");
        j.write(&path).unwrap();
        assert_eq!(Journal::read(&path).unwrap(), Some(j));
        assert_eq!(Journal::read(&dir.path().join("none")).unwrap(), None);
    }

    #[test]
    fn an_existing_cluster_is_final_a_partial_restore_waits() {
        let partial = Error::PartialRestore {
            dir: "/x".into(),
            cluster: "r".into(),
            members: vec![],
        };
        assert!(partial.is_retryable(), "until its directory is removed");
        assert_eq!(partial.reason(), "PartialRestore");
        let exists = Error::from(Precondition::ClusterExists {
            cluster: "r".into(),
            evidence: "x".into(),
        });
        assert!(!exists.is_retryable());
        assert_eq!(exists.reason(), "ClusterExists");
        let journal = journal_err(Path::new("/x"), std::io::Error::other("disk full"));
        assert!(journal.is_retryable());
    }
}
