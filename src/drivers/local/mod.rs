//! The `etcd-operator local` loop: read the YAML files, reconcile every EtcdCluster in them
//! (and every cluster an EtcdRestore made) against etcd processes on this machine, move the
//! EtcdBackups and EtcdRestores on ([`backups`], [`restores`]: their work runs
//! in tasks, off this loop), write each status file, and run again when a file changes, a
//! member process exits, a backup or restore task reports, a backup is due, or the resync
//! interval passes (the health check for hung members). Ctrl-C stops the loop and leaves the
//! members running unless asked; backups and restores under way are cancelled (a restore
//! resumes on the next start). One loop per state dir ([`lock`]): a second refuses to start.

pub mod backups;
pub mod lock;
pub mod manifest;
pub mod recovery;
pub mod restores;
pub mod secrets;
pub mod store;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use notify::Watcher;
use thiserror::Error;
use tokio::sync::{Notify, mpsc};
use tracing::{error, info, warn};

use crate::api::EtcdCluster;
use crate::api::cluster::{ClusterPhase, EtcdClusterStatus};
use crate::metrics::{ErrorLabels, Metrics};
use crate::plan::{Policy, Step};
use crate::reconcile::status::step_reason;
use crate::reconcile::{self, HealthTracker};
use crate::runtime::local::LocalRuntime;
use crate::runtime::{ClusterRef, MemberRuntime};

use self::backups::Backups;
use self::manifest::Documents;
use self::restores::Restores;
use self::store::{StatusFiles, Tracked};

/// How many steps one cluster may take in a row before the others get their turn.
const MAX_STEPS_PER_TURN: usize = 16;

/// Everything the loop needs to know.
#[derive(Debug, Clone)]
pub struct Options {
    pub files: Vec<PathBuf>,
    pub state_dir: PathBuf,
    pub etcd_bin_dir: PathBuf,
    pub stop_members_on_exit: bool,
    pub resync_interval: Duration,
    pub policy: Policy,
    /// Where reconciles, steps and member counts are counted; the caller serves them.
    pub metrics: Metrics,
    /// Part data all backups may hold in memory, in MiB.
    pub backup_memory_budget_mib: u64,
}

/// Why the loop could not start or had to stop.
#[derive(Debug, Error)]
pub enum Error {
    #[error("reading the given files")]
    Manifest(#[from] manifest::Error),
    #[error("watching the given files for changes")]
    Watch(#[from] notify::Error),
    #[error("stopping members on exit")]
    StopMembers(#[source] crate::runtime::Error),
    #[error("writing status")]
    Status(#[from] store::Error),
    #[error("locking the state dir")]
    Lock(#[from] lock::Error),
    #[error("two {kind}s are named {name:?}; names must be unique")]
    DuplicateName { kind: &'static str, name: String },
}

/// What the loop remembers about one cluster between passes.
struct ClusterState {
    tracker: HealthTracker,
    doc: Tracked<EtcdCluster>,
    last_step: String,
    announced_ready: bool,
}

fn key(c: &EtcdCluster) -> String {
    c.metadata.name.clone().unwrap_or_default()
}

fn cluster_ref(c: &EtcdCluster) -> ClusterRef {
    ClusterRef {
        namespace: c
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| manifest::DEFAULT_NAMESPACE.to_string()),
        name: key(c),
    }
}

/// Status files are per kind and name, so names must be unique per kind.
fn check_unique(docs: &Documents) -> Result<(), Error> {
    fn unique<'a>(
        kind: &'static str,
        names: impl Iterator<Item = Option<&'a String>>,
    ) -> Result<(), Error> {
        let mut seen = std::collections::HashSet::new();
        for name in names {
            let name = name.cloned().unwrap_or_default();
            if !seen.insert(name.clone()) {
                return Err(Error::DuplicateName { kind, name });
            }
        }
        Ok(())
    }
    unique(
        "EtcdCluster",
        docs.clusters.iter().map(|c| c.metadata.name.as_ref()),
    )?;
    unique(
        "EtcdBackup",
        docs.backups.iter().map(|b| b.metadata.name.as_ref()),
    )?;
    unique(
        "EtcdRestore",
        docs.restores.iter().map(|r| r.metadata.name.as_ref()),
    )
}

/// The clusters to reconcile: the documents', then those completed restores made. A
/// document wins over a restored cluster of the same name.
fn managed_clusters(docs: &Documents, restored: Vec<EtcdCluster>) -> Vec<EtcdCluster> {
    let mut managed = docs.clusters.clone();
    for cluster in restored {
        if !managed.iter().any(|c| key(c) == key(&cluster)) {
            managed.push(cluster);
        }
    }
    managed
}

/// Forgets clusters no longer managed; their members and data stay as they are.
fn forget_unmanaged(managed: &[EtcdCluster], states: &mut HashMap<String, ClusterState>) {
    states.retain(|name, _| {
        let keep = managed.iter().any(|c| &key(c) == name);
        if !keep {
            warn!(cluster = %name, "cluster is no longer in the files; leaving its members and data as they are");
        }
        keep
    });
}

/// The managed clusters with their last observed status, for backups and restores.
fn with_status(
    managed: &[EtcdCluster],
    states: &HashMap<String, ClusterState>,
) -> Vec<EtcdCluster> {
    managed
        .iter()
        .map(|c| {
            let mut c = c.clone();
            if let Some(state) = states.get(&key(&c)) {
                c = state.doc.document(&c);
            }
            c
        })
        .collect()
}

/// How long to sleep: the resync interval, or less when something is due sooner.
fn pause_until(due: Option<Timestamp>, now: Timestamp, resync: Duration) -> Duration {
    match due {
        Some(at) => Duration::try_from(at.duration_since(now))
            .unwrap_or(Duration::ZERO)
            .min(resync),
        None => resync,
    }
}

fn load(files: &[PathBuf]) -> Result<Documents, Error> {
    let docs = manifest::load(files)?;
    check_unique(&docs)?;
    Ok(docs)
}

/// True when `path` is one of the given files, or a YAML file directly inside a given
/// directory. Everything else (the state dir's status files, editor swap files) is ignored,
/// or writing a status file would trigger another pass forever.
fn is_input(path: &std::path::Path, inputs: &[PathBuf]) -> bool {
    let is_yaml = matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml")
    );
    inputs.iter().any(|i| {
        if i.is_dir() {
            is_yaml && path.parent() == Some(i.as_path())
        } else {
            path == i
        }
    })
}

/// Watches the given paths (their directories, since editors replace files by renaming).
fn watch(files: &[PathBuf]) -> Result<(notify::RecommendedWatcher, mpsc::Receiver<()>), Error> {
    let (tx, rx) = mpsc::channel(16);
    let inputs: Vec<PathBuf> = files
        .iter()
        .map(|f| std::path::absolute(f).unwrap_or_else(|_| f.clone()))
        .collect();
    let watched = inputs.clone();
    let mut watcher = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
        if let Ok(e) = ev
            && !e.kind.is_access()
            && e.paths.iter().any(|p| is_input(p, &watched))
        {
            let _ = tx.try_send(());
        }
    })?;
    for abs in inputs {
        let dir = if abs.is_dir() {
            abs
        } else {
            abs.parent().map(PathBuf::from).unwrap_or(abs)
        };
        watcher.watch(&dir, notify::RecursiveMode::NonRecursive)?;
    }
    Ok((watcher, rx))
}

/// Runs until `shutdown` resolves.
pub async fn run(
    opts: Options,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), Error> {
    // Before anything is read or started: a second loop on this state dir stops here.
    let _lock = lock::lock(&opts.state_dir)?;
    let runtime = LocalRuntime::new(opts.state_dir.clone(), opts.etcd_bin_dir.clone());
    let status_files = StatusFiles::new(&opts.state_dir);
    let mut exits = runtime.subscribe_exits();
    let (_watcher, mut changes) = watch(&opts.files)?;
    let mut docs = load(&opts.files)?;
    info!(
        clusters = docs.clusters.len(),
        backups = docs.backups.len(),
        restores = docs.restores.len(),
        state_dir = %opts.state_dir.display(),
        "local runtime started"
    );
    let mut states: HashMap<String, ClusterState> = HashMap::new();
    let wake = Arc::new(Notify::new());
    let mut backups = Backups::new(
        status_files.clone(),
        runtime.state_dir().to_path_buf(),
        wake.clone(),
        opts.backup_memory_budget_mib,
        crate::backup::Verifier::new(crate::backup::SnapshotTools::PerVersion(
            opts.etcd_bin_dir.clone(),
        )),
    );
    let mut restores = Restores::new(
        status_files.clone(),
        runtime.clone(),
        runtime.state_dir().to_path_buf(),
        wake.clone(),
    );
    let mut managed;
    tokio::pin!(shutdown);
    loop {
        managed = managed_clusters(&docs, restores.restored_clusters(&docs.restores)?);
        forget_unmanaged(&managed, &mut states);
        for cluster in &managed {
            let env = recovery::LocalRecovery {
                runtime: &runtime,
                status_files: &status_files,
                docs: &docs,
            };
            reconcile_cluster(
                &runtime,
                &env,
                &status_files,
                &opts.policy,
                &opts.metrics,
                cluster,
                &mut states,
            )
            .await?;
        }
        let live = with_status(&managed, &states);
        let now = Timestamp::now();
        let backups_due = backups.pass(&docs, &live, now)?;
        let restores_due = restores.pass(&docs, &live, now)?;
        let due = match (backups_due, restores_due) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        tokio::select! {
            () = &mut shutdown => break,
            Some(()) = changes.recv() => {
                // Coalesce the burst of events one save produces.
                while changes.try_recv().is_ok() {}
                match load(&opts.files) {
                    Ok(new) => {
                        docs = new;
                        backups.inputs_changed();
                        restores.inputs_changed();
                        info!(
                            clusters = docs.clusters.len(),
                            backups = docs.backups.len(),
                            restores = docs.restores.len(),
                            "files changed; reconciling"
                        );
                    }
                    Err(e) => error!(error = %e, source = ?std::error::Error::source(&e), "files changed but cannot be read; keeping the previous version"),
                }
            }
            Ok(ev) = exits.recv() => {
                info!(cluster = %ev.cluster.name, member = %ev.name, "member process exited");
            }
            () = wake.notified() => {}
            () = tokio::time::sleep(pause_until(due, now, opts.resync_interval)) => {}
        }
    }
    drop((backups, restores));
    if opts.stop_members_on_exit {
        for c in &managed {
            runtime
                .stop_all(&cluster_ref(c))
                .await
                .map_err(Error::StopMembers)?;
        }
        info!("members stopped");
    } else {
        info!("operator stopped; members keep running (use --stop-members-on-exit to stop them)");
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn reconcile_cluster(
    runtime: &LocalRuntime,
    env: &recovery::LocalRecovery<'_>,
    status_files: &StatusFiles,
    policy: &Policy,
    metrics: &Metrics,
    doc: &EtcdCluster,
    states: &mut HashMap<String, ClusterState>,
) -> Result<(), Error> {
    let name = key(doc);
    if !states.contains_key(&name) {
        let first_sight = status_files.read::<EtcdCluster>(&name)?.is_none();
        let tracked = Tracked::load(status_files, &name, doc)?;
        // The creation time is kept before anything acts, as the API server keeps an
        // object's: the bootstrap token comes from it, so an operator killed during its
        // first bootstrap must not resume it under another token (issue 13: the members
        // started after the restart formed a cluster the first one could never join).
        if first_sight {
            status_files.write(&tracked.document(doc))?;
        }
        states.insert(
            name.clone(),
            ClusterState {
                tracker: HealthTracker::default(),
                doc: tracked,
                last_step: String::new(),
                announced_ready: false,
            },
        );
    }
    let Some(state) = states.get_mut(&name) else {
        return Ok(());
    };
    state.doc.observe(doc);
    for _ in 0..MAX_STEPS_PER_TURN {
        let mut cluster = state.doc.document(doc);
        metrics.reconciles.inc();
        let pass = match reconcile::reconcile_once(
            runtime,
            env,
            &secrets::LocalSecrets(&env.docs.secrets),
            &cluster,
            policy,
            &mut state.tracker,
        )
        .await
        {
            Ok(p) => p,
            Err(e) => {
                metrics
                    .reconcile_errors
                    .get_or_create(&ErrorLabels {
                        error: e.label().to_string(),
                    })
                    .inc();
                warn!(cluster = %name, error = %e, source = ?std::error::Error::source(&e), "observation failed");
                return Ok(());
            }
        };
        let line = pass.step.to_string();
        let acted = pass.acted();
        if acted {
            metrics.observe_step(step_reason(&pass.step), pass.took);
        }
        if let Err(e) = &pass.executed {
            metrics
                .reconcile_errors
                .get_or_create(&ErrorLabels {
                    error: e.label().to_string(),
                })
                .inc();
        }
        let healthy = pass.status.ready_members;
        metrics.observe_cluster(
            doc.metadata
                .namespace
                .as_deref()
                .unwrap_or(manifest::DEFAULT_NAMESPACE),
            &name,
            pass.status.members.len() as i64,
            i64::from(healthy),
        );
        metrics.observe_certificates(
            doc.metadata
                .namespace
                .as_deref()
                .unwrap_or(manifest::DEFAULT_NAMESPACE),
            &name,
            &pass.status,
            jiff::Timestamp::now(),
        );
        metrics.observe_maintenance(
            doc.metadata
                .namespace
                .as_deref()
                .unwrap_or(manifest::DEFAULT_NAMESPACE),
            &name,
            &pass.status,
            &pass.step,
            acted,
        );
        match &pass.executed {
            Ok(reconcile::Executed::Applied) => {
                info!(cluster = %name, step = %line, took_ms = pass.took.as_millis() as u64, "step done");
            }
            Ok(reconcile::Executed::NotYet(why)) => {
                info!(cluster = %name, step = %line, why = %why, "etcd refused for now; will retry");
            }
            Ok(reconcile::Executed::Nothing) if line != state.last_step => {
                info!(cluster = %name, step = %line, "state");
            }
            Ok(reconcile::Executed::Nothing) => {}
            Err(e) => {
                warn!(cluster = %name, step = %line, error = %e, source = ?std::error::Error::source(e), "step failed; will retry");
            }
        }
        state.last_step = line;
        cluster.status = Some(pass.status.clone());
        state.doc.status = Some(pass.status);
        status_files.write(&cluster)?;
        if matches!(pass.step, Step::Done) && !state.announced_ready {
            announce_ready(&name, state.doc.status.as_ref());
            state.announced_ready = true;
        }
        if !matches!(pass.step, Step::Done) {
            state.announced_ready = state.announced_ready
                && state
                    .doc
                    .status
                    .as_ref()
                    .is_some_and(|s| s.phase == ClusterPhase::Running);
        }
        if !acted {
            break;
        }
    }
    Ok(())
}

fn announce_ready(name: &str, status: Option<&EtcdClusterStatus>) {
    let urls: BTreeMap<String, String> = status
        .map(|s| {
            s.members
                .iter()
                .filter_map(|m| m.client_url.clone().map(|u| (m.name.clone(), u)))
                .collect()
        })
        .unwrap_or_default();
    let list: Vec<String> = urls.values().cloned().collect();
    info!(cluster = %name, endpoints = %list.join(","), "cluster is ready");
    println!(
        "cluster {name} is ready; client URLs: {}\n  try: etcdctl --endpoints={} endpoint status -w table",
        list.join(","),
        list.join(",")
    );
}
