//! One reconcile pass, shared by both runtimes: observe (I/O) -> plan (pure) -> execute
//! (I/O) -> status (pure; the caller writes it). Each runtime's driver calls
//! [`reconcile_once`] and decides how to persist the status and when to run again:
//! [`kubernetes`] is the in-cluster driver, `crate::drivers::local` the local one.

pub mod execute;
pub mod maintain;
pub mod observe;
pub mod status;

use std::time::{Duration, Instant};

use thiserror::Error;
use tracing::{debug, info, warn};

use crate::api::cluster::EtcdClusterStatus;
use crate::api::condition;
use crate::api::{EtcdCluster, validate};
use crate::plan::maintenance::{self, Space};
use crate::plan::{self, BlockReason, Observed, Policy, Step};
use crate::runtime::{self, ClusterRef, MemberRuntime};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

pub use execute::Executed;
pub use observe::HealthTracker;

/// Either half of a membership change failed.
#[derive(Debug, Error)]
pub enum MembershipError {
    #[error(transparent)]
    Etcd(#[from] crate::etcd::Error),
    #[error(transparent)]
    Runtime(#[from] runtime::Error),
}

/// A reconcile pass that failed; one variant per step, the cause in `source`.
#[derive(Debug, Error, strum::IntoStaticStr)]
pub enum Error {
    #[error("listing the runtime's members")]
    ListMembers {
        #[source]
        source: runtime::Error,
    },
    #[error("connecting to etcd")]
    Connect {
        #[source]
        source: crate::etcd::Error,
    },
    #[error("spec version {version:?} is not a version")]
    InvalidVersion {
        version: String,
        #[source]
        source: semver::Error,
    },
    #[error("bootstrapping the cluster")]
    Bootstrap {
        #[source]
        source: runtime::Error,
    },
    #[error("adding a learner")]
    AddLearner {
        #[source]
        source: MembershipError,
    },
    #[error("starting an added member")]
    StartMember {
        #[source]
        source: MembershipError,
    },
    #[error("promoting a learner")]
    PromoteLearner {
        #[source]
        source: crate::etcd::Error,
    },
    #[error("removing a member")]
    RemoveMember {
        #[source]
        source: MembershipError,
    },
    #[error("deleting a leftover runtime member")]
    DeleteRuntimeMember {
        #[source]
        source: runtime::Error,
    },
    #[error("restarting a member")]
    RestartMember {
        #[source]
        source: runtime::Error,
    },
    #[error("moving the leader")]
    MoveLeader {
        #[source]
        source: crate::etcd::Error,
    },
    #[error("upgrading a member")]
    UpgradeMember {
        #[source]
        source: runtime::Error,
    },
    #[error("compacting, defragmenting or disarming an alarm")]
    Maintain {
        #[source]
        source: crate::etcd::Error,
    },
}

impl Error {
    /// A static label for metrics and Event reasons.
    pub fn label(&self) -> &'static str {
        self.into()
    }
}

/// What one pass saw, chose and did.
#[derive(Debug)]
pub struct Pass {
    pub observed: Observed,
    pub step: Step,
    pub executed: Result<Executed, Error>,
    pub status: EtcdClusterStatus,
    pub took: Duration,
}

impl Pass {
    /// True when the step changed something, so another pass should follow at once.
    pub fn acted(&self) -> bool {
        matches!(self.executed, Ok(Executed::Applied))
    }
}

/// Whether `spec.maintenance.defrag.schedule` has a time after the last one handled (or
/// first seen, see `status::with_maintenance`) that is not later than `now`.
fn schedule_due(cluster: &EtcdCluster, now: &Time) -> bool {
    let Some(defrag) = cluster
        .spec
        .maintenance
        .as_ref()
        .and_then(|m| m.defrag.as_ref())
    else {
        return false;
    };
    let handled = cluster
        .status
        .as_ref()
        .and_then(|s| s.maintenance.as_ref())
        .and_then(|m| m.last_schedule_time.as_ref());
    let Some(base) = handled else {
        return false;
    };
    crate::backup::schedule::next_run(&defrag.schedule, base.0).is_ok_and(|next| next <= now.0)
}

/// Observes `cluster`, plans the next step, executes it and computes the new status.
///
/// Errors while observing are returned; errors while executing are in [`Pass::executed`]
/// (the status is still computed so it can be written).
pub async fn reconcile_once<R: MemberRuntime>(
    runtime: &R,
    cluster: &EtcdCluster,
    policy: &Policy,
    tracker: &mut HealthTracker,
) -> Result<Pass, Error> {
    let started = Instant::now();
    let name = cluster.metadata.name.clone().unwrap_or_default();
    let cref = ClusterRef {
        namespace: cluster
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| crate::drivers::local::manifest::DEFAULT_NAMESPACE.to_string()),
        name: name.clone(),
    };
    let report = validate::cluster(&name, &cluster.spec);
    let nothing = || Observed {
        cluster_name: name.clone(),
        highest_ordinal_used: None,
        recorded_cluster_id: None,
        served_version: None,
        members: Vec::new(),
        etcd: None,
    };
    let mut refusal = None;
    let mut space = Space::default();
    let observed = if report.is_valid() {
        let highest = cluster
            .status
            .as_ref()
            .and_then(|s| s.highest_ordinal)
            .and_then(|o| u32::try_from(o).ok());
        // A cluster id in the status: the cluster formed once (never bootstrapped again).
        let recorded_cluster_id = cluster
            .status
            .as_ref()
            .and_then(|s| s.cluster_id.as_deref())
            // An unreadable id still means "formed": it is then reported as a mismatch,
            // never taken as leave to bootstrap again.
            .map(|id| id.parse().unwrap_or_default());
        let served_version = cluster
            .status
            .as_ref()
            .and_then(|s| s.current_version.as_deref())
            .and_then(|v| v.parse().ok());
        match observe::observe_with_space(runtime, &cref, highest, recorded_cluster_id, tracker)
            .await
        {
            Ok((mut observed, seen)) => {
                space = seen;
                if let Some(st) = cluster.status.as_ref() {
                    status::recorded_served_versions(&mut observed, st);
                }
                Observed {
                    served_version,
                    ..observed
                }
            }
            // Another cluster's data under our names: refuse, visibly, until it is gone.
            Err(Error::ListMembers {
                source: runtime::Error::RetainedClaims { claims, .. },
            }) => {
                refusal = Some(BlockReason::RetainedVolumes { claims });
                nothing()
            }
            // Only the user can give the PVCs a class.
            Err(Error::ListMembers {
                source: runtime::Error::NoStorageClass { claims, .. },
            }) => {
                refusal = Some(BlockReason::NoStorageClass { claims });
                nothing()
            }
            Err(e) => return Err(e),
        }
    } else {
        // An invalid spec changes nothing, and starts nothing.
        nothing()
    };
    let mut step = match refusal {
        Some(reason) => Step::Blocked { reason },
        None => plan::next_step(&cluster.spec, &observed, policy),
    };
    let now = condition::now();
    // Maintenance (NOSPACE, scheduled defragmentation) only on a cluster otherwise done.
    let previous_run = cluster.status.as_ref().and_then(|s| s.maintenance.as_ref());
    let decision = if step == Step::Done {
        space.schedule_due = schedule_due(cluster, &now);
        let decision = maintenance::plan(&cluster.spec, &observed, &space, previous_run);
        step = decision.step();
        decision
    } else {
        maintenance::while_busy(&space, previous_run)
    };
    debug!(cluster = %name, %step, "planned");
    if !matches!(
        step,
        Step::Wait { .. } | Step::Done | Step::Paused | Step::Blocked { .. }
    ) {
        info!(cluster = %name, %step, "executing step");
    }
    let executed = execute::execute(
        runtime,
        &cref,
        &execute::bootstrap_token(cluster),
        &cluster.spec,
        &observed,
        &step,
    )
    .await;
    if let Err(e) = &executed {
        warn!(cluster = %name, %step, error = %e, "step failed");
    }
    let mut status = status::cluster_status(
        &cluster.spec,
        cluster.metadata.generation,
        &report,
        &observed,
        &step,
        cluster.status.as_ref(),
        now.clone(),
    );
    let applied = matches!(executed, Ok(Executed::Applied));
    status::with_maintenance(
        &mut status,
        &cluster.spec,
        &observed,
        &space,
        &decision,
        applied,
        now,
    );
    Ok(Pass {
        observed,
        step,
        executed,
        status,
        took: started.elapsed(),
    })
}
