//! One reconcile pass, shared by both runtimes: observe (I/O) -> plan (pure) -> execute
//! (I/O) -> status (pure; the caller writes it). Each runtime's driver calls
//! [`reconcile_once`] and decides how to persist the status and when to run again:
//! [`kubernetes`] is the in-cluster driver, `crate::drivers::local` the local one.

pub mod certificates;
pub mod execute;
pub mod maintain;
pub mod observe;
pub mod recover;
pub mod status;

use std::time::{Duration, Instant};

use thiserror::Error;
use tracing::{debug, info, warn};

use crate::api::cluster::EtcdClusterStatus;
use crate::api::condition;
use crate::api::recovery::{RECOVER_ANNOTATION, RecoveryMode, RecoveryPhase};
use crate::api::tls::{TlsMode, TlsSpec};
use crate::api::{EtcdCluster, validate};
use crate::plan::maintenance::{self, Space};
use crate::plan::recovery::{self, Outcome};
use crate::plan::{self, BlockReason, Observed, Policy, Step};
use crate::runtime::{self, ClusterRef, MemberRuntime};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

pub use certificates::{NoSecrets, PassCertificates, SecretReader};
pub use execute::Executed;
pub use observe::HealthTracker;
pub use recover::{NoBackups, RecoveryEnv};

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
    #[error("restarting a member to load the installed certificates")]
    ReloadTrust {
        #[source]
        source: runtime::Error,
    },
    #[error("moving a member of a plaintext cluster to TLS")]
    MoveTransport {
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("issuing or reading the cluster's certificates")]
    Certificates {
        #[source]
        source: certificates::Error,
    },
    #[error("compacting, defragmenting or disarming an alarm")]
    Maintain {
        #[source]
        source: crate::etcd::Error,
    },
    #[error("recovering from lost quorum")]
    Recover {
        #[source]
        source: runtime::Error,
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
    /// Certificates this pass issued, and why.
    pub certificates_issued: Vec<crate::certs::bundle::Issued>,
    /// What is wrong with the certificates the user provided (each naming its Secret);
    /// members did not get them.
    pub certificate_problems: Vec<String>,
    /// What recovery from lost quorum decided (the step is its action when it acted).
    pub recovery: recovery::Decision,
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

/// Whether the operator keeps certificates for `cluster`: it asks for TLS, or its members
/// were last seen serving it (a TLS cluster whose spec now says `Disabled` is still dialled
/// over TLS: moving a running cluster off TLS is not supported yet).
fn wants_certificates(cluster: &EtcdCluster) -> bool {
    TlsSpec::mode_of(cluster.spec.tls.as_ref()) == TlsMode::Enabled
        || cluster
            .status
            .as_ref()
            .and_then(|s| s.tls.as_ref())
            .and_then(|t| t.scheme.as_deref())
            == Some("https")
}

/// Observes `cluster`, plans the next step, executes it and computes the new status.
///
/// Errors while observing are returned; errors while executing are in [`Pass::executed`]
/// (the status is still computed so it can be written).
pub async fn reconcile_once<R: MemberRuntime, E: RecoveryEnv, S: SecretReader>(
    runtime: &R,
    env: &E,
    secrets: &S,
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
        trust_stamp: None,
    };
    let mut refusal = None;
    let mut space = Space::default();
    // Certificates are kept current on every pass of a cluster that serves TLS or asks to.
    let rotation = TlsSpec::rotation_due(
        cluster.spec.tls.as_ref(),
        cluster.status.as_ref().and_then(|s| s.tls.as_ref()),
    );
    let ca_rotation = TlsSpec::ca_rotation_due(
        cluster.spec.tls.as_ref(),
        cluster.status.as_ref().and_then(|s| s.tls.as_ref()),
    );
    let pass_certificates = if report.is_valid() && wants_certificates(cluster) {
        certificates::ensure(
            runtime,
            secrets,
            cluster,
            &cref,
            crate::certs::bundle::Asked {
                rotate_leaves: rotation.is_some(),
                rotate_ca: ca_rotation.is_some(),
            },
            jiff::Timestamp::now(),
        )
        .await
        .map_err(|source| Error::Certificates { source })?
    } else {
        PassCertificates::default()
    };
    for problem in &pass_certificates.problems {
        warn!(cluster = %name, %problem, "provided certificates not used");
    }
    let certificates = pass_certificates.installed.clone();
    for issued in certificates.iter().flat_map(|c| &c.issued) {
        info!(cluster = %name, entry = issued.entry, reason = issued.reason, "certificate issued");
    }
    let client_tls = certificates.as_ref().map(|c| &c.operator);
    let observed = if report.is_valid() {
        let highest = cluster
            .status
            .as_ref()
            .and_then(|s| s.highest_ordinal)
            .and_then(|o| u32::try_from(o).ok());
        // A cluster id in the status: the cluster formed once (never bootstrapped again).
        // A recovery from a backup makes a new cluster: from its fetch on, the old id no
        // longer says whose members answer (the new id once they did).
        let run = cluster
            .status
            .as_ref()
            .and_then(|s| s.recovery.as_ref())
            .and_then(|r| r.run.as_ref());
        let recorded = match run {
            Some(r) if r.mode == RecoveryMode::FromBackup && r.phase != RecoveryPhase::Fetching => {
                r.cluster_id.as_deref()
            }
            _ => cluster
                .status
                .as_ref()
                .and_then(|s| s.cluster_id.as_deref()),
        };
        let recorded_cluster_id = recorded
            // An unreadable id still means "formed": it is then reported as a mismatch,
            // never taken as leave to bootstrap again.
            .map(|id| id.parse().unwrap_or_default());
        let served_version = cluster
            .status
            .as_ref()
            .and_then(|s| s.current_version.as_deref())
            .and_then(|v| v.parse().ok());
        match observe::observe_with_space(
            runtime,
            &cref,
            highest,
            recorded_cluster_id,
            tracker,
            client_tls,
        )
        .await
        {
            Ok((mut observed, seen)) => {
                space = seen;
                if let Some(st) = cluster.status.as_ref() {
                    status::recorded_served_versions(&mut observed, st);
                }
                Observed {
                    served_version,
                    trust_stamp: certificates.as_ref().and_then(|c| c.trust_stamp.clone()),
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
    // The user's certificates are unusable and nothing was installed before: no member can
    // start with a certificate, so nothing starts.
    if refusal.is_none() && certificates.is_none() && !pass_certificates.problems.is_empty() {
        refusal = Some(BlockReason::InvalidCertificates {
            problems: pass_certificates.problems.clone(),
        });
    }
    let mut step = match refusal {
        Some(reason) => Step::Blocked { reason },
        None => plan::next_step(&cluster.spec, &observed, policy),
    };
    let now = condition::now();
    // Recovery from lost quorum: once the rest of the planner is out of options, or while a
    // recovery runs.
    let previous_recovery = cluster.status.as_ref().and_then(|s| s.recovery.as_ref());
    let trigger = cluster
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(RECOVER_ANNOTATION))
        .map(String::as_str);
    // fromBackup: whether the new members' restore failed for good while they bootstrap.
    let restore_failed = match previous_recovery.and_then(|r| r.run.as_ref()) {
        Some(run)
            if run.mode == RecoveryMode::FromBackup
                && run.phase == RecoveryPhase::Bootstrapping =>
        {
            env.restore_failure(&cref, &run.members).await
        }
        _ => None,
    };
    let recovery_decision = recovery::plan(&recovery::Input {
        spec: &cluster.spec,
        valid: report.is_valid(),
        supported: runtime.supports_recovery(),
        backups: env.supports_backups(),
        trigger,
        status: previous_recovery,
        observed: &observed,
        step: &step,
        cluster_id: cluster
            .status
            .as_ref()
            .and_then(|s| s.cluster_id.as_deref()),
        namespace: &cref.namespace,
        now: &now,
        restore_failed: restore_failed.as_ref(),
    });
    step = recovery_decision.step(step);
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
    let mut outcome: Option<Outcome> = None;
    let executed = match (&step, &recovery_decision) {
        (Step::Recover { mode, action }, recovery::Decision::Act { start, .. }) => {
            let run = start
                .as_deref()
                .or_else(|| previous_recovery.and_then(|r| r.run.as_ref()));
            match run {
                Some(run) => recover::execute(
                    runtime,
                    env,
                    &cref,
                    &cluster.spec,
                    &observed,
                    run,
                    *mode,
                    action,
                    client_tls,
                )
                .await
                .map(|(executed, o)| {
                    outcome = Some(o);
                    executed
                }),
                None => Ok(Executed::Nothing),
            }
        }
        _ => {
            execute::execute(
                runtime,
                &cref,
                &execute::bootstrap_token(cluster),
                &cluster.spec,
                &observed,
                &step,
                client_tls,
            )
            .await
        }
    };
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
    status::with_tls(
        &mut status,
        &cluster.spec,
        &observed,
        &pass_certificates,
        cluster.metadata.generation,
        now.clone(),
    );
    // Done once per value: the leaves were issued again above.
    if let (Some(value), Some(_)) = (rotation, &certificates)
        && let Some(tls) = status.tls.as_mut()
    {
        info!(cluster = %name, rotate = value, "every leaf certificate issued again, as asked");
        tls.rotated = Some(value.to_string());
    }
    // Started (or one was already under way) once per value.
    if let Some(tls) = status.tls.as_mut() {
        // The last phase is over once no member runs on what it replaced (a runtime that
        // only looks at its members while the material is mid-rotation cannot tell).
        let stale = observed
            .members
            .iter()
            .any(|m| m.runs_stale_trust(observed.trust_stamp.as_deref()));
        let phase = certificates.as_ref().and_then(|c| c.ca_phase).or_else(|| {
            (stale && tls.ca_rotation.is_some())
                .then_some(crate::certs::ca_rotation::CaPhase::DropOld)
        });
        tls.ca_rotation = phase.map(|p| p.as_str().to_string());
        if let (Some(value), Some(_)) = (ca_rotation, phase) {
            info!(cluster = %name, rotate_ca = value, "CA rotation under way, as asked");
            tls.ca_rotated = Some(value.to_string());
        }
    }
    let applied = matches!(executed, Ok(Executed::Applied));
    status::with_maintenance(
        &mut status,
        &cluster.spec,
        &observed,
        &space,
        &decision,
        applied,
        now.clone(),
    );
    status::with_recovery(
        &mut status,
        &recovery_decision,
        outcome.as_ref(),
        trigger,
        &observed,
        now,
    );
    Ok(Pass {
        observed,
        step,
        executed,
        status,
        took: started.elapsed(),
        certificates_issued: certificates.map(|c| c.issued).unwrap_or_default(),
        certificate_problems: pass_certificates.problems,
        recovery: recovery_decision,
    })
}
