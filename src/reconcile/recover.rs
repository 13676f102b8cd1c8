//! Carries out one [`RecoveryAction`] through a member runtime, the etcd admin layer and the
//! driver's [`RecoveryEnv`] (where backups, their status and their credentials are). Which
//! action and when is `plan::recovery`'s decision; each action is safe to repeat after a
//! crash. Log lines name what was restored and from what.

use std::future::Future;
use std::time::{Duration, Instant};

use tracing::{info, warn};

use super::{Error, Executed};
use crate::api::EtcdClusterSpec;
use crate::api::recovery::{KeptMember, RecoveredBackup, RecoveryMode, RecoveryRun};
use crate::etcd::{EtcdAdmin, Timeouts, TlsConfig};
use crate::plan::recovery::{Outcome, RecoveryAction, RestoreFailed, describe};
use crate::plan::{MemberName, Observed};
use crate::runtime::{self, ClusterRef, MemberRuntime};

/// How long the survivor may take to serve alone after its `--force-new-cluster` start, and
/// again after the plain restart.
pub const FORCE_DEADLINE: Duration = Duration::from_secs(60);

/// Why a recovery step failed for good (a fetch: nothing changed; a change: rolled back).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failed {
    /// PascalCase, e.g. `BackupNotFound`, `ShaMismatch`.
    pub reason: String,
    pub message: String,
}

impl Failed {
    pub fn new(reason: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            reason: reason.into(),
            message: message.into(),
        }
    }
}

/// What a driver provides for recoveries from a backup: the EtcdBackups, their status and
/// credentials live with the driver (YAML documents and status files locally, the API on
/// Kubernetes).
pub trait RecoveryEnv: Send + Sync {
    /// Whether [`Self::fetch`] can fetch backups at all (fromBackup is planned only then).
    fn supports_backups(&self) -> bool {
        true
    }

    /// Resolves the latest successful backup of EtcdBackup `backup_name` in the cluster's
    /// namespace and checks it before anything changes: its digest, and that etcd `version`
    /// restores it (locally downloaded and verified; on Kubernetes pinned with a HEAD for
    /// the new members' init containers, which download and verify it), so the cluster's
    /// bootstrap members can start from it ([`Self::seed`]). Changes no member.
    fn fetch(
        &self,
        cluster: &ClusterRef,
        backup_name: &str,
        version: &semver::Version,
    ) -> impl Future<Output = Result<RecoveredBackup, Failed>> + Send;

    /// Makes the fetched snapshot the seed of the cluster's bootstrap members (a member
    /// created with `--initial-cluster-state new` and no data starts from it).
    fn seed(&self, cluster: &ClusterRef) -> impl Future<Output = Result<(), Failed>> + Send;

    /// The run ended: the seed is forgotten and what the fetch downloaded removed.
    fn clean_up(&self, cluster: &ClusterRef) -> impl Future<Output = Result<(), Failed>> + Send;

    /// While the bootstrapped `members` come up: whether their restore failed in a way that
    /// waiting does not mend (the object changed after its pin, a digest mismatch), for the
    /// planner to roll the run back at once ([`RestoreFailed`]). `None` when nothing says so,
    /// or the runtime restores inside the bootstrap itself (its failure is the bootstrap's).
    fn restore_failure(
        &self,
        _cluster: &ClusterRef,
        _members: &[String],
    ) -> impl Future<Output = Option<RestoreFailed>> + Send {
        async { None }
    }
}

/// For runtimes and tests without backups: every fetch fails, saying so.
pub struct NoBackups;

impl RecoveryEnv for NoBackups {
    fn supports_backups(&self) -> bool {
        false
    }

    async fn fetch(
        &self,
        _: &ClusterRef,
        backup_name: &str,
        _: &semver::Version,
    ) -> Result<RecoveredBackup, Failed> {
        Err(Failed::new(
            "Unsupported",
            format!("recovering from EtcdBackup {backup_name} is not available here"),
        ))
    }

    async fn seed(&self, _: &ClusterRef) -> Result<(), Failed> {
        Err(Failed::new("Unsupported", "no snapshot to seed from"))
    }

    async fn clean_up(&self, _: &ClusterRef) -> Result<(), Failed> {
        Ok(())
    }
}

fn client_url<'a>(observed: &'a Observed, name: &MemberName) -> Option<&'a str> {
    observed
        .member(name)
        .and_then(|m| m.runtime.as_ref())
        .map(|r| r.client_url.as_str())
}

/// The tag a run's kept data goes under: its start, `20250610T073000Z`.
pub fn kept_tag(run: &RecoveryRun) -> String {
    run.started_at.0.strftime("%Y%m%dT%H%M%SZ").to_string()
}

fn runtime_err(source: runtime::Error) -> Error {
    Error::Recover { source }
}

/// Waits until the member at `url` serves a linearizable read as the only member of its
/// cluster; its revision then.
async fn serving_alone(
    url: &str,
    tls: Option<&TlsConfig>,
    within: Duration,
) -> Result<i64, String> {
    let tls = TlsConfig::for_endpoints(&[url], tls);
    let deadline = Instant::now() + within;
    let timeouts = Timeouts {
        request: Duration::from_secs(3),
        ..Timeouts::default()
    };
    let mut last = String::from("no answer yet");
    while Instant::now() < deadline {
        match EtcdAdmin::connect_with([url.to_owned()], tls.clone(), timeouts).await {
            Ok(admin) => {
                let alone = admin.member_list().await.map(|l| l.members.len());
                let healthy = admin.health(url).await;
                match (alone, healthy) {
                    (Ok(1), Ok(_)) => match admin.status(url).await {
                        Ok(st) => return Ok(st.revision),
                        Err(e) => last = e.to_string(),
                    },
                    (Ok(n), _) if n != 1 => last = format!("it lists {n} members"),
                    (Err(e), _) | (_, Err(e)) => last = e.to_string(),
                    _ => {}
                }
            }
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    Err(last)
}

/// Executes `action` of `run` for `cluster`. Failures that are the run's (a backup that
/// cannot be had, a survivor that does not come up) are an [`Outcome::Failed`], for the
/// status; others (a runtime call that may pass) are errors, and the pass is repeated.
#[allow(clippy::too_many_arguments)]
pub async fn execute<R: MemberRuntime, E: RecoveryEnv>(
    runtime: &R,
    env: &E,
    cluster: &ClusterRef,
    spec: &EtcdClusterSpec,
    observed: &Observed,
    run: &RecoveryRun,
    mode: RecoveryMode,
    action: &RecoveryAction,
    tls: Option<&TlsConfig>,
) -> Result<(Executed, Outcome), Error> {
    match action {
        RecoveryAction::Fetch { backup_name } => {
            let version = crate::api::validate::parse_version(&spec.version).map_err(|source| {
                Error::InvalidVersion {
                    version: spec.version.clone(),
                    source,
                }
            })?;
            let started = Instant::now();
            match env.fetch(cluster, backup_name, &version).await {
                Ok(b) => {
                    info!(%cluster, backup = %b.backup_name, key = %b.key, revision = b.revision, taken_at = ?b.taken_at.as_ref().map(|t| t.0), took_ms = started.elapsed().as_millis() as u64, "recovery: backup downloaded and verified; nothing changed yet");
                    Ok((Executed::Applied, Outcome::Fetched(b)))
                }
                Err(f) => {
                    warn!(%cluster, backup = %backup_name, reason = %f.reason, error = %f.message, "recovery from backup cannot start; nothing was changed");
                    Ok((
                        Executed::Applied,
                        Outcome::Failed {
                            reason: f.reason,
                            message: f.message,
                        },
                    ))
                }
            }
        }
        RecoveryAction::SetAside { members } => {
            let tag = kept_tag(run);
            let mut kept = Vec::new();
            for name in members {
                if let Some(at) = runtime
                    .set_aside(cluster, name.as_str(), &tag)
                    .await
                    .map_err(runtime_err)?
                {
                    kept.push(KeptMember {
                        name: name.to_string(),
                        at,
                    });
                }
            }
            Ok((Executed::Applied, Outcome::KeptAside(kept)))
        }
        RecoveryAction::ForceNewCluster { survivor } => {
            let Some(url) = client_url(observed, survivor).map(str::to_owned) else {
                return Ok((
                    Executed::Applied,
                    Outcome::Failed {
                        reason: "SurvivorGone".into(),
                        message: format!("{survivor} has no runtime member left"),
                    },
                ));
            };
            let started = Instant::now();
            runtime
                .force_new_cluster(cluster, survivor.as_str())
                .await
                .map_err(runtime_err)?;
            let forced = serving_alone(&url, tls, FORCE_DEADLINE).await;
            // Never left with the flag: restarted on its recorded flags whatever happened.
            runtime
                .restart(cluster, survivor.as_str(), None)
                .await
                .map_err(runtime_err)?;
            if let Err(why) = forced {
                warn!(%cluster, member = %survivor, error = %why, "recovery: the survivor did not serve alone after --force-new-cluster; rolling back");
                return Ok((
                    Executed::Applied,
                    Outcome::Failed {
                        reason: "ForceNewClusterFailed".into(),
                        message: format!(
                            "{survivor} did not serve as a cluster of one within {}s of its --force-new-cluster start: {why}",
                            FORCE_DEADLINE.as_secs()
                        ),
                    },
                ));
            }
            match serving_alone(&url, tls, FORCE_DEADLINE).await {
                Ok(revision) => {
                    info!(%cluster, member = %survivor, revision, raft_index = ?run.survivor_raft_index, took_ms = started.elapsed().as_millis() as u64, "recovery: the survivor serves alone, without --force-new-cluster; growing back with learners");
                    Ok((
                        Executed::Applied,
                        Outcome::Forced {
                            revision: Some(revision),
                        },
                    ))
                }
                // It served once alone: the membership change is committed; whatever keeps it
                // from serving now is the ordinary planner's to handle.
                Err(why) => {
                    warn!(%cluster, member = %survivor, error = %why, "recovery: the survivor served alone, but not yet after its plain restart");
                    Ok((Executed::Applied, Outcome::Forced { revision: None }))
                }
            }
        }
        RecoveryAction::Bootstrap {
            members,
            version,
            token,
        } => {
            if let Err(f) = env.seed(cluster).await {
                return Ok((
                    Executed::Applied,
                    Outcome::Failed {
                        reason: f.reason,
                        message: f.message,
                    },
                ));
            }
            let transport = super::execute::transport(spec, observed);
            match super::execute::bootstrap(
                runtime, cluster, token, spec, members, version, transport,
            )
            .await
            {
                Ok(()) => {}
                Err(Error::Bootstrap {
                    source: e @ runtime::Error::RestoreFromSeed { .. },
                }) => {
                    return Ok((
                        Executed::Applied,
                        Outcome::Failed {
                            reason: "RestoreFailed".into(),
                            message: crate::error_chain::error_chain(&e),
                        },
                    ));
                }
                Err(e) => return Err(e),
            }
            info!(%cluster, members = ?members.iter().map(MemberName::as_str).collect::<Vec<_>>(), revision = ?run.revision, "recovery: new members started on the restored snapshot");
            Ok((Executed::Applied, Outcome::Done))
        }
        RecoveryAction::Finish => {
            if mode == RecoveryMode::FromBackup
                && let Err(f) = env.clean_up(cluster).await
            {
                warn!(%cluster, error = %f.message, "recovery: could not remove the downloaded snapshot");
            }
            let mut done = run.clone();
            if let Some(view) = &observed.etcd {
                done.cluster_id = Some(view.cluster_id.to_string());
            }
            let took = run.quorum_lost_since.as_ref().map(|lost| {
                Duration::try_from(crate::api::condition::now().0.duration_since(lost.0))
                    .unwrap_or_default()
            });
            info!(%cluster, %mode, what = %describe(&done), since_quorum_lost_s = ?took.map(|d| d.as_secs()), "recovery finished: the cluster serves again");
            Ok((Executed::Applied, Outcome::Done))
        }
        RecoveryAction::RollBack {
            created,
            kept,
            reason,
            message,
        } => {
            for name in created {
                runtime
                    .delete(cluster, name.as_str())
                    .await
                    .map_err(runtime_err)?;
            }
            for k in kept {
                runtime
                    .put_back(cluster, &k.name, &k.at)
                    .await
                    .map_err(runtime_err)?;
            }
            if let Err(f) = env.clean_up(cluster).await {
                warn!(%cluster, error = %f.message, "recovery: could not remove the downloaded snapshot");
            }
            warn!(%cluster, %mode, %reason, error = %message, deleted = created.len(), put_back = kept.len(), "recovery ended without recovering: the members it created were deleted and the kept data put back");
            Ok((Executed::Applied, Outcome::Done))
        }
    }
}
