//! What the status of an EtcdCluster says, derived (purely) from the spec, the validation
//! report, the observation and the step the planner chose. Writing it is the runtime's job
//! (a status file locally, server-side apply on Kubernetes).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::api::EtcdClusterSpec;
use crate::api::cluster::{ClusterPhase, EtcdClusterStatus, MemberStatus};
use crate::api::condition::{self, Status, types};
use crate::api::tls::{CertificateStatus, TlsMode, TlsSpec, TlsStatus};
use crate::api::validate::Report;
use crate::plan::maintenance::{self, Decision, MaintenanceAction, Space};
use crate::plan::recovery::{self, Outcome};
use crate::plan::{BlockReason, Observed, ObservedMember, Step};
use crate::reconcile::PassCertificates;
use crate::runtime::Transport;

/// The version `m` serves at when it answers healthy, else the one its previous status
/// recorded (issue 13: a member that served at an upgrade's version and then stopped is not
/// an upgrade that never came up). Recorded from etcd's answer, never from the runtime's
/// configuration, so an upgrade that never came up leaves the earlier version in place.
fn served_version(m: &ObservedMember, previous: &[MemberStatus]) -> Option<String> {
    let answering = m
        .etcd
        .as_ref()
        .filter(|e| e.healthy && m.is_running())
        .and_then(|e| e.version.as_ref());
    match answering {
        Some(version) => Some(version.to_string()),
        None => previous
            .iter()
            .find(|p| p.name == m.name.as_str())
            .and_then(|p| p.served_version.clone()),
    }
}

/// Fills each observed member's [`ObservedMember::served_at`] from the member of the same
/// name in `status` (what [`served_version`] kept); an unreadable version counts as none.
pub fn recorded_served_versions(observed: &mut Observed, status: &EtcdClusterStatus) {
    for m in &mut observed.members {
        m.served_at = status
            .members
            .iter()
            .find(|s| s.name == m.name.as_str())
            .and_then(|s| s.served_version.as_deref())
            .and_then(|v| v.parse().ok());
    }
}

/// The status after a pass that observed `observed` and chose `step`.
pub fn cluster_status(
    spec: &EtcdClusterSpec,
    generation: Option<i64>,
    report: &Report,
    observed: &Observed,
    step: &Step,
    previous: Option<&EtcdClusterStatus>,
    now: Time,
) -> EtcdClusterStatus {
    let mut st = previous.cloned().unwrap_or_default();
    st.observed_generation = generation;
    st.target_version = Some(spec.version.clone());
    let previous_members = std::mem::take(&mut st.members);
    st.members = observed
        .members
        .iter()
        .map(|m| MemberStatus {
            name: m.name.to_string(),
            id: m.etcd.as_ref().map(|e| e.id.to_string()),
            client_url: m.runtime.as_ref().map(|r| r.client_url.clone()),
            peer_url: m.runtime.as_ref().map(|r| r.peer_url.clone()),
            version: m
                .etcd
                .as_ref()
                .and_then(|e| e.version.as_ref())
                .or(m.runtime.as_ref().map(|r| &r.version))
                .map(ToString::to_string),
            served_version: served_version(m, &previous_members),
            is_learner: m.etcd.as_ref().is_some_and(|e| e.is_learner),
            healthy: m.etcd.as_ref().is_some_and(|e| e.healthy)
                && m.runtime.as_ref().is_some_and(|r| r.running),
            is_leader: m.etcd.as_ref().is_some_and(|e| e.is_leader),
            // Filled from the observed backends by `maintenance`.
            db_size: None,
            db_size_in_use: None,
        })
        .collect();
    let voters = st
        .members
        .iter()
        .filter(|m| m.id.is_some() && !m.is_learner)
        .count();
    let healthy_voters = st
        .members
        .iter()
        .filter(|m| m.id.is_some() && !m.is_learner && m.healthy)
        .count();
    st.ready_members = i32::try_from(healthy_voters).unwrap_or(i32::MAX);
    // What serves, not what is configured: the lowest version the answering members
    // report, kept while none answers. The planner rolls a member that never served at its
    // version back to it (issue 9, item 10).
    if let Some(served) = observed
        .members
        .iter()
        .filter_map(|m| m.etcd.as_ref().and_then(|e| e.version.clone()))
        .min()
    {
        st.current_version = Some(served.to_string());
    }
    // Recorded once, then kept: while no member answers, a recorded cluster id is how the
    // planner knows the cluster formed (and is never bootstrapped again after losing every
    // member); members answering with another id never replace it (issue 9, item 5).
    if st.cluster_id.is_none()
        && let Some(etcd) = &observed.etcd
    {
        st.cluster_id = Some(etcd.cluster_id.to_string());
    }
    let seen = observed
        .members
        .iter()
        .filter_map(|m| m.name.ordinal())
        .filter_map(|o| i32::try_from(o).ok())
        .max();
    st.highest_ordinal = st.highest_ordinal.max(seen);

    let available = voters > 0 && healthy_voters > voters / 2;
    let gen_ = generation;
    let c = &mut st.conditions;
    if report.is_valid() {
        let msg = if report.warnings.is_empty() {
            "spec is valid".to_string()
        } else {
            report.warnings_message()
        };
        let reason = if report.warnings.is_empty() {
            "Valid"
        } else {
            "ValidWithWarnings"
        };
        condition::set(
            c,
            types::SPEC_VALID,
            Status::True,
            reason,
            msg,
            gen_,
            now.clone(),
        );
    } else {
        condition::set(
            c,
            types::SPEC_VALID,
            Status::False,
            "Invalid",
            report.errors_message(),
            gen_,
            now.clone(),
        );
    }
    condition::set(
        c,
        types::AVAILABLE,
        Status::from_bool(available),
        if available {
            "QuorumHealthy"
        } else {
            "QuorumUnavailable"
        },
        format!("{healthy_voters} of {voters} voting members healthy"),
        gen_,
        now.clone(),
    );
    let (progressing, p_reason) = match step {
        Step::Done => (Status::False, "Reconciled"),
        Step::Paused => (Status::False, "Paused"),
        Step::Blocked { .. } => (Status::False, "Blocked"),
        Step::Wait { .. } => (Status::True, "Waiting"),
        _ => (Status::True, step_reason(step)),
    };
    condition::set(
        c,
        types::PROGRESSING,
        progressing,
        p_reason,
        progress_message(step),
        gen_,
        now.clone(),
    );
    let unhealthy: Vec<&str> = st_members_unhealthy(observed);
    let degraded_reason = match step {
        Step::Blocked { reason } => Some(block_reason(reason)),
        _ if !unhealthy.is_empty() => Some("MembersUnhealthy"),
        _ => None,
    };
    match degraded_reason {
        Some(r) => {
            let msg = match step {
                Step::Blocked { .. } => step.to_string(),
                _ => format!("unhealthy: {}", unhealthy.join(", ")),
            };
            condition::set(c, types::DEGRADED, Status::True, r, msg, gen_, now.clone())
        }
        None => condition::set(
            c,
            types::DEGRADED,
            Status::False,
            "AllHealthy",
            "",
            gen_,
            now.clone(),
        ),
    };
    st.phase = phase(step, available, previous.map(|p| p.phase));
    st
}

/// The Progressing message: the step without the values that move on every pass
/// (countdowns, raft indices, how long a member has failed), so a waiting cluster's status
/// stays the same and writing it does not wake the controller again (issue 9, item 2).
/// Logs and Events keep the full [`Step`] display.
fn progress_message(step: &Step) -> String {
    use crate::plan::{RemovalReason, ReplaceReason, WaitReason};
    match step {
        Step::Wait { reason } => match reason {
            WaitReason::MemberUnhealthy { name, .. } => {
                format!("wait: {name} is unhealthy, replaced if it stays so past the grace period")
            }
            WaitReason::MemberStarting { name, .. } => format!(
                "wait: {name} has not joined yet, replaced if it does not within the grace period"
            ),
            WaitReason::LearnerCatchingUp { name, .. } => {
                format!("wait: learner {name} catching up with the leader")
            }
            WaitReason::UpgradedMemberStarting { name, .. } => format!(
                "wait: upgraded {name} is not healthy yet, stalled if it is not by the deadline"
            ),
            WaitReason::NoLeader => step.to_string(),
            WaitReason::NoAnswer { .. } => {
                "wait: no member answered, quorum reported lost if none does in time".to_string()
            }
            WaitReason::Recovering { .. } => step.to_string(),
        },
        Step::RemoveMember {
            name,
            id,
            reason: RemovalReason::Replace(ReplaceReason::Unhealthy { .. }),
        } => format!("remove member {name} ({id}): replace, unhealthy past the grace period"),
        Step::RemoveMember {
            name,
            id,
            reason: RemovalReason::Replace(ReplaceReason::NeverStarted { .. }),
        } => format!("remove member {name} ({id}): replace, never joined within the grace period"),
        _ => step.to_string(),
    }
}

fn st_members_unhealthy(observed: &Observed) -> Vec<&str> {
    observed
        .members
        .iter()
        .filter(|m| m.unhealthy_for.is_some())
        .map(|m| m.name.as_str())
        .collect()
}

/// A PascalCase reason for an action step (Event reason and condition reason).
pub fn step_reason(step: &Step) -> &'static str {
    match step {
        Step::Bootstrap { .. } => "Bootstrapping",
        Step::AddLearner { .. } => "AddingLearner",
        Step::StartMember { .. } => "StartingMember",
        Step::PromoteLearner { .. } => "PromotingLearner",
        Step::RemoveMember { .. } => "RemovingMember",
        Step::DeleteRuntimeMember { .. } => "DeletingLeftoverMember",
        Step::RestartMember { .. } => "RestartingMember",
        Step::RollBackMember { .. } => "RollingBackMember",
        Step::MoveLeader { .. } => "MovingLeader",
        Step::UpgradeMember { .. } => "UpgradingMember",
        Step::ReloadTrust { .. } => "RestartingForCertificates",
        Step::MoveTransport { stage, .. } => match stage {
            crate::plan::TransportStage::DialTls | crate::plan::TransportStage::ListenTls => {
                "MovingToTls"
            }
            crate::plan::TransportStage::ListenPlain
            | crate::plan::TransportStage::DropCertificates => "MovingToPlaintext",
        },
        Step::UpdatePeerUrl { .. } => "UpdatingPeerUrl",
        Step::Maintain { action, .. } => maintenance_reason(action),
        Step::Recover { .. } => "Recovering",
        Step::Wait { .. } => "Waiting",
        Step::Blocked { .. } => "Blocked",
        Step::Paused => "Paused",
        Step::Done => "Reconciled",
    }
}

/// A PascalCase reason for a maintenance action.
fn maintenance_reason(action: &MaintenanceAction) -> &'static str {
    match action {
        MaintenanceAction::Compact { .. } => "Compacting",
        MaintenanceAction::MoveLeader { .. } => "MovingLeaderForDefrag",
        MaintenanceAction::Defragment { .. } => "Defragmenting",
        MaintenanceAction::Finish { disarm: true, .. } => "NoSpaceResolved",
        MaintenanceAction::Finish { .. } => "DefragmentationFinished",
    }
}

/// Adds what members serve and the certificates' expiries to `st`, and the `TLS`
/// condition. The scheme is recorded once the runtime has members: `https` while any of
/// them listens with TLS (the operator keeps, and dials with, its certificates until none
/// does), else `http`.
pub fn with_tls(
    st: &mut EtcdClusterStatus,
    spec: &EtcdClusterSpec,
    observed: &Observed,
    pass: &PassCertificates,
    generation: Option<i64>,
    now: Time,
) {
    let certificates = pass.installed.as_ref();
    let tls = st.tls.get_or_insert_with(TlsStatus::default);
    // How many of the runtime's members listen with TLS.
    let listeners: Vec<Transport> = observed
        .members
        .iter()
        .filter_map(|m| m.runtime.as_ref())
        .map(|r| Transport::of_url(&r.peer_url))
        .collect();
    let on_tls = listeners.iter().filter(|t| **t == Transport::Tls).count();
    let total = listeners.len();
    if total > 0 {
        let scheme = if on_tls > 0 {
            Transport::Tls
        } else {
            Transport::Plain
        };
        tls.scheme = Some(scheme.scheme().to_string());
    }
    if let Some(c) = certificates {
        tls.client_certificate = Some(c.client_location.clone());
        tls.certificates = c
            .expiries
            .iter()
            .map(|(entry, at)| CertificateStatus {
                name: entry.trim_end_matches(".crt").to_string(),
                not_after: Time(*at),
            })
            .collect();
    }
    let asked = TlsSpec::mode_of(spec.tls.as_ref());
    let source = if spec
        .tls
        .as_ref()
        .is_some_and(|t| t.cert_manager.is_some() && t.secrets.is_none())
    {
        "the Secrets of spec.tls.certManager"
    } else {
        "spec.tls.secrets"
    };
    let earliest = tls
        .certificates
        .iter()
        .min_by_key(|c| c.not_after.0)
        .map(|c| format!("; earliest expiry: {} ({})", c.not_after.0, c.name))
        .unwrap_or_default();
    // Whether the planner can move members to what the spec asks (none to move on an
    // emptyDir).
    let movable = !observed.transport_move_blocked(asked == TlsMode::Enabled);
    let location = certificates.map_or("", |c| c.client_location.as_str());
    let (mut status, mut reason, mut message) = match asked {
        _ if total == 0 && asked == TlsMode::Disabled => (
            Status::False,
            "Disabled",
            "spec.tls.mode is Disabled: members serve plaintext".to_string(),
        ),
        TlsMode::Enabled if total == 0 => (
            Status::False,
            "Pending",
            format!("certificates issued, no member serves yet{earliest}"),
        ),
        TlsMode::Enabled if on_tls == total => (
            Status::True,
            "Serving",
            format!("members serve TLS and require client certificates{earliest}"),
        ),
        TlsMode::Enabled if movable && certificates.is_some() => (
            Status::False,
            "MovingToTls",
            format!(
                "moving the running cluster to TLS one member at a time (every member first holds the peer certificate, then each listens with TLS, the leader last): {on_tls} of {total} members listen with TLS; as each moves, applications must dial it with https:// and the client certificate in {location}{earliest}"
            ),
        ),
        TlsMode::Enabled => (
            Status::False,
            "PlaintextMembers",
            if movable {
                "members serve plaintext and no certificates are installed to move them to TLS with"
                    .to_string()
            } else {
                "members serve plaintext and some keep their data on storage.emptyDir: the restarts that move a cluster to TLS would lose it, so the cluster stays plaintext; set spec.tls.mode to Disabled to say so, or restore a backup into a new cluster with persistent storage".to_string()
            },
        ),
        TlsMode::Disabled if on_tls == 0 => (
            Status::False,
            "Disabled",
            "spec.tls.mode is Disabled: members serve plaintext".to_string(),
        ),
        TlsMode::Disabled if movable => (
            Status::False,
            "MovingToPlaintext",
            format!(
                "spec.tls.mode is Disabled: moving the running cluster off TLS one member at a time (each listens plaintext, the leader last, then each drops its certificates): {on_tls} of {total} members still listen with TLS; as each moves, applications must dial it with http://{earliest}"
            ),
        ),
        TlsMode::Disabled => (
            Status::True,
            "TlsMembers",
            format!(
                "spec.tls.mode is Disabled but members serve TLS and some keep their data on storage.emptyDir: the restarts that move a cluster off TLS would lose it, so it stays on{earliest}"
            ),
        ),
    };
    if !pass.problems.is_empty() {
        (status, reason, message) = (
            Status::False,
            "InvalidCertificates",
            format!(
                "the certificates in {source} were not given to members ({}): {}",
                if certificates.is_some() {
                    "they keep the ones they had"
                } else {
                    "none start until fixed"
                },
                pass.problems.join("; ")
            ),
        );
    } else if let Some((entry, at)) = pass.expiring.first() {
        reason = "CertificatesExpiring";
        message = format!(
            "{message}; {} from {source} expires at {at}, in less than 14 days, and the operator cannot renew it: renew the Secret",
            entry.trim_end_matches(".crt")
        );
    }
    condition::set(
        &mut st.conditions,
        types::TLS,
        status,
        reason,
        message,
        generation,
        now,
    );
}

/// Adds what maintenance saw and did to `st`: each member's backend sizes, the run
/// ([`maintenance::record`]) and the `Maintenance` condition. The sizes move with every
/// write, which is fine: status writes do not wake the controller (a generation filter).
pub fn with_maintenance(
    st: &mut EtcdClusterStatus,
    spec: &EtcdClusterSpec,
    observed: &Observed,
    space: &Space,
    decision: &Decision,
    applied: bool,
    now: Time,
) {
    for m in &mut st.members {
        let id = observed
            .members
            .iter()
            .find(|o| o.name.as_str() == m.name)
            .and_then(|o| o.id());
        if let Some(s) = id.and_then(|id| space.member(id)) {
            m.db_size = i64::try_from(s.db_size).ok();
            m.db_size_in_use = i64::try_from(s.db_size_in_use).ok();
        }
    }
    st.maintenance = maintenance::record(st.maintenance.as_ref(), decision, applied, &now);
    // A schedule counts from when the operator first saw it, not from the cluster's
    // creation: adding "0 3 * * *" at noon waits for 3 o'clock.
    let scheduled = spec
        .maintenance
        .as_ref()
        .is_some_and(|m| m.defrag.is_some());
    if scheduled
        && st
            .maintenance
            .as_ref()
            .is_none_or(|m| m.last_schedule_time.is_none())
    {
        st.maintenance
            .get_or_insert_with(Default::default)
            .last_schedule_time = Some(now.clone());
    }
    if let Some((running, reason, message)) =
        maintenance::condition(spec, decision, st.maintenance.as_ref())
    {
        condition::set(
            &mut st.conditions,
            types::MAINTENANCE,
            Status::from_bool(running),
            reason,
            message,
            st.observed_generation,
            now,
        );
    }
}

/// Adds what recovery from lost quorum decided and did to `st`: `status.recovery`
/// ([`recovery::record`]), the cluster id a recovery from a backup made, the `Recovery`
/// condition, and what the user can do in the `Degraded` message while quorum is lost.
pub fn with_recovery(
    st: &mut EtcdClusterStatus,
    decision: &recovery::Decision,
    outcome: Option<&Outcome>,
    trigger: Option<&str>,
    observed: &Observed,
    now: Time,
) {
    use crate::api::recovery::{RecoveryMode, RecoveryOutcome, RecoveryPhase};
    let lost = recovery::quorum_lost(observed);
    let answered = observed.etcd.as_ref().map(|e| e.cluster_id.to_string());
    st.recovery = recovery::record(
        st.recovery.as_ref(),
        decision,
        outcome,
        trigger,
        lost,
        answered.as_deref(),
        &now,
    );
    let Some(rec) = &st.recovery else {
        // Quorum came back without a recovery: the condition says so, once it had said more.
        if condition::find(&st.conditions, types::RECOVERY).is_some() {
            condition::set(
                &mut st.conditions,
                types::RECOVERY,
                Status::False,
                "QuorumHealthy",
                "the cluster has quorum; no recovery ran",
                st.observed_generation,
                now,
            );
        }
        return;
    };
    // The new cluster's id once its members answer (also in the pass that ends the run);
    // the old one back after a rollback.
    let ended_now = |what: fn(&recovery::RecoveryAction) -> bool| {
        matches!(decision, recovery::Decision::Act { action, .. } if what(action))
            && outcome.is_some()
    };
    let finished = ended_now(|a| matches!(a, recovery::RecoveryAction::Finish));
    let rolled_back = ended_now(|a| matches!(a, recovery::RecoveryAction::RollBack { .. }));
    let bootstrapping = rec
        .run
        .as_ref()
        .filter(|r| r.phase == RecoveryPhase::Bootstrapping);
    let just_finished = rec.last_run.as_ref().filter(|_| finished);
    if let Some(run) = bootstrapping.or(just_finished)
        && run.mode == RecoveryMode::FromBackup
        && let Some(id) = &run.cluster_id
    {
        st.cluster_id = Some(id.clone());
    }
    if rolled_back
        && let Some(last) = &rec.last_run
        && last.mode == RecoveryMode::FromBackup
        && last.previous_cluster_id.is_some()
    {
        st.cluster_id = last.previous_cluster_id.clone();
    }
    let since = rec
        .quorum_lost_since
        .as_ref()
        .map(|t| format!("quorum lost since {}: ", t.0))
        .unwrap_or_default();
    let (status, reason, message) = if let Some(run) = &rec.run {
        (
            Status::True,
            "Recovering",
            format!(
                "{} ({:?}, started {}): {}",
                run.mode,
                run.phase,
                run.started_at.0,
                recovery::describe(run)
            ),
        )
    } else {
        match decision {
            recovery::Decision::Hold(hold) => {
                let reason = match hold {
                    recovery::Hold::Reviving => "Reviving",
                    recovery::Hold::NotConfigured { .. } => "NotConfigured",
                    recovery::Hold::Waiting { .. } => "Waiting",
                    recovery::Hold::VoterAnswers { .. } => "QuorumAnswers",
                    recovery::Hold::AlreadyRecovered { .. } => "AlreadyRecovered",
                    recovery::Hold::BackingOff { .. } => "BackingOff",
                    recovery::Hold::NotPossible { .. } => "NotPossible",
                    recovery::Hold::Unsupported => "Unsupported",
                };
                (Status::False, reason, format!("{since}{hold}"))
            }
            recovery::Decision::Refuse { trigger, why } => (
                Status::False,
                "TriggerRefused",
                format!(
                    "{}={trigger:?} was not run: {why}",
                    crate::api::recovery::RECOVER_ANNOTATION
                ),
            ),
            _ => match &rec.last_run {
                Some(last) if last.outcome == Some(RecoveryOutcome::Succeeded) => (
                    Status::False,
                    "Recovered",
                    format!(
                        "recovered ({}) at {}: {}",
                        last.mode,
                        last.finished_at.as_ref().unwrap_or(&last.started_at).0,
                        recovery::describe(last)
                    ),
                ),
                Some(last) => (
                    Status::False,
                    "RecoveryFailed",
                    format!(
                        "recovery ({}) failed at {}: {} ({}){}",
                        last.mode,
                        last.finished_at.as_ref().unwrap_or(&last.started_at).0,
                        last.message.as_deref().unwrap_or("no reason recorded"),
                        last.reason.as_deref().unwrap_or("Unknown"),
                        if last.kept.is_empty() {
                            String::new()
                        } else {
                            "; what it changed was put back".to_owned()
                        }
                    ),
                ),
                None => (
                    Status::False,
                    "QuorumHealthy",
                    "the cluster has quorum; no recovery ran".to_owned(),
                ),
            },
        }
    };
    if let recovery::Decision::Hold(_) = decision
        && let Some(d) = condition::find(&st.conditions, types::DEGRADED)
        && matches!(d.reason.as_str(), "QuorumLost" | "AllMembersLost")
        && !d.message.contains("recovery:")
    {
        let degraded = format!("{}; recovery: {message}", d.message);
        let (r, g) = (d.reason.clone(), d.observed_generation);
        condition::set(
            &mut st.conditions,
            types::DEGRADED,
            Status::True,
            &r,
            degraded,
            g,
            now.clone(),
        );
    }
    if rec.run.is_some() {
        st.phase = ClusterPhase::Recovering;
    }
    condition::set(
        &mut st.conditions,
        types::RECOVERY,
        status,
        reason,
        message,
        st.observed_generation,
        now,
    );
}

/// A PascalCase reason for a refusal.
pub fn block_reason(reason: &BlockReason) -> &'static str {
    match reason {
        BlockReason::VersionSkip { .. } => "VersionSkipRefused",
        BlockReason::MinorDowngrade { .. } => "MinorDowngradeRefused",
        BlockReason::QuorumLost { .. } => "QuorumLost",
        BlockReason::UpgradeStalled { .. } => "UpgradeStalled",
        BlockReason::InvalidSpec { .. } => "InvalidSpec",
        BlockReason::RetainedVolumes { .. } => "RetainedVolumesFound",
        BlockReason::NoStorageClass { .. } => "NoDefaultStorageClass",
        BlockReason::InvalidCertificates { .. } => "InvalidCertificates",
        BlockReason::AllMembersLost => "AllMembersLost",
        BlockReason::ClusterIdMismatch { .. } => "ClusterIdMismatch",
        BlockReason::NoSpace { .. } => "NoSpace",
    }
}

fn phase(step: &Step, available: bool, previous: Option<ClusterPhase>) -> ClusterPhase {
    use crate::plan::RemovalReason;
    match step {
        Step::Bootstrap { .. } => ClusterPhase::Creating,
        Step::AddLearner { .. } | Step::PromoteLearner { .. } | Step::StartMember { .. } => {
            if available {
                ClusterPhase::Scaling
            } else {
                ClusterPhase::Creating
            }
        }
        Step::RemoveMember {
            reason: RemovalReason::ScaleDown,
            ..
        } => ClusterPhase::Scaling,
        Step::RemoveMember { .. }
        | Step::RestartMember { .. }
        | Step::DeleteRuntimeMember { .. } => ClusterPhase::Recovering,
        Step::MoveLeader { .. } | Step::UpgradeMember { .. } | Step::RollBackMember { .. } => {
            ClusterPhase::Upgrading
        }
        Step::ReloadTrust { .. } | Step::MoveTransport { .. } | Step::UpdatePeerUrl { .. } => {
            ClusterPhase::Rotating
        }
        // Maintenance runs on a cluster that is otherwise done.
        Step::Maintain { .. } if available => ClusterPhase::Running,
        Step::Maintain { .. } => ClusterPhase::Degraded,
        Step::Recover { .. } => ClusterPhase::Recovering,
        Step::Wait { .. } => previous.unwrap_or(ClusterPhase::Pending),
        Step::Blocked {
            reason: BlockReason::InvalidSpec { .. },
        } => ClusterPhase::Failed,
        // Members of a cluster being created answer within a second or two; until the first
        // quorum forms that is creation, not degradation.
        Step::Blocked {
            reason: BlockReason::QuorumLost { .. },
        } if matches!(
            previous,
            None | Some(ClusterPhase::Pending | ClusterPhase::Creating)
        ) =>
        {
            ClusterPhase::Creating
        }
        Step::Blocked { .. } => ClusterPhase::Degraded,
        Step::Paused => ClusterPhase::Paused,
        Step::Done => {
            if available {
                ClusterPhase::Running
            } else {
                ClusterPhase::Degraded
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::validate;
    use crate::etcd::{ClusterId, MemberId};
    use crate::plan::{EtcdMemberState, EtcdView, MemberName, ObservedMember, RuntimeState};
    use k8s_openapi::jiff::Timestamp;

    fn at(s: i64) -> Time {
        Time(Timestamp::from_second(s).unwrap())
    }

    fn member(i: u64, healthy: bool, leader: bool) -> ObservedMember {
        ObservedMember {
            name: MemberName::new("example", i as u32),
            runtime: Some(RuntimeState {
                running: healthy,
                has_data: true,
                version: semver::Version::new(3, 5, 16),
                peer_url: format!("http://127.0.0.1:{}", 20000 + i),
                client_url: format!("http://127.0.0.1:{}", 21000 + i),
                started_for: None,
                restart_keeps_data: true,
                trust_stamp: None,
            }),
            etcd: Some(EtcdMemberState {
                id: MemberId(i + 1),
                is_learner: false,
                started: true,
                healthy,
                version: Some(semver::Version::new(3, 5, 16)),
                raft_index: Some(10),
                is_leader: leader,
                peer_urls: vec![format!("http://127.0.0.1:{}", 20000 + i)],
            }),
            unhealthy_for: (!healthy).then(|| std::time::Duration::from_secs(1)),
            served_at: None,
        }
    }

    fn observed(healthy: &[bool]) -> Observed {
        Observed {
            cluster_name: "example".into(),
            highest_ordinal_used: None,
            recorded_cluster_id: None,
            served_version: None,
            members: healthy
                .iter()
                .enumerate()
                .map(|(i, h)| member(i as u64, *h, i == 0))
                .collect(),
            etcd: Some(EtcdView {
                cluster_id: ClusterId(0xabc),
                leader: Some(MemberId(1)),
                leader_raft_index: 10,
            }),
            trust_stamp: None,
        }
    }

    fn cond<'a>(
        st: &'a EtcdClusterStatus,
        t: &str,
    ) -> &'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
        condition::find(&st.conditions, t).unwrap()
    }

    /// The TLS condition and `status.tls.scheme` through moves between plaintext and TLS:
    /// how many members listen with TLS, which way the move goes, and why a move cannot be
    /// made (no certificates, a member on an emptyDir).
    #[test]
    fn the_tls_condition_follows_a_move_between_plaintext_and_tls() {
        let installed = PassCertificates {
            installed: Some(crate::runtime::ClusterCertificates {
                operator: crate::etcd::TlsConfig::new("ca", "cert", "key"),
                issued: Vec::new(),
                expiries: Vec::new(),
                client_location: "secret/example-client-tls".into(),
                trust_stamp: Some("s".into()),
                ca_phase: None,
            }),
            ..Default::default()
        };
        // Members 0..on_tls listen with TLS.
        let cluster = |on_tls: u64| {
            let mut o = observed(&[true, true, true]);
            for (i, m) in o.members.iter_mut().enumerate() {
                if (i as u64) < on_tls {
                    let r = m.runtime.as_mut().unwrap();
                    r.peer_url = r.peer_url.replace("http://", "https://");
                    r.client_url = r.client_url.replace("http://", "https://");
                }
            }
            o
        };
        let tls_of = |mode: TlsMode, o: &Observed, pass: &PassCertificates| {
            let mut spec = EtcdClusterSpec::new(3, "3.5.16");
            spec.tls = Some(TlsSpec {
                mode,
                ..Default::default()
            });
            let mut st = EtcdClusterStatus::default();
            with_tls(&mut st, &spec, o, pass, Some(1), at(1_800_000_000));
            let c = cond(&st, types::TLS);
            (
                c.reason.clone(),
                c.message.clone(),
                st.tls.unwrap().scheme.unwrap(),
            )
        };
        let (reason, message, scheme) = tls_of(TlsMode::Enabled, &cluster(0), &installed);
        assert_eq!((reason.as_str(), scheme.as_str()), ("MovingToTls", "http"));
        assert!(
            message.contains("0 of 3 members listen with TLS"),
            "{message}"
        );
        assert!(message.contains("secret/example-client-tls"), "{message}");
        let (reason, message, scheme) = tls_of(TlsMode::Enabled, &cluster(1), &installed);
        assert_eq!((reason.as_str(), scheme.as_str()), ("MovingToTls", "https"));
        assert!(message.contains("1 of 3 members"), "{message}");
        let (reason, _, _) = tls_of(TlsMode::Enabled, &cluster(3), &installed);
        assert_eq!(reason, "Serving");
        // Back: the operator keeps dialling with certificates while one member needs them.
        let (reason, message, scheme) = tls_of(TlsMode::Disabled, &cluster(1), &installed);
        assert_eq!(
            (reason.as_str(), scheme.as_str()),
            ("MovingToPlaintext", "https")
        );
        assert!(message.contains("1 of 3 members still listen"), "{message}");
        let (reason, _, scheme) =
            tls_of(TlsMode::Disabled, &cluster(0), &PassCertificates::default());
        assert_eq!((reason.as_str(), scheme.as_str()), ("Disabled", "http"));
        // No move: nothing installed to move with, or a member on an emptyDir.
        let (reason, message, _) =
            tls_of(TlsMode::Enabled, &cluster(0), &PassCertificates::default());
        assert_eq!(reason, "PlaintextMembers");
        assert!(message.contains("no certificates"), "{message}");
        let mut o = cluster(0);
        o.members[2].runtime.as_mut().unwrap().restart_keeps_data = false;
        let (reason, message, _) = tls_of(TlsMode::Enabled, &o, &installed);
        assert_eq!(reason, "PlaintextMembers");
        assert!(message.contains("storage.emptyDir"), "{message}");
        let mut o = cluster(3);
        o.members[2].runtime.as_mut().unwrap().restart_keeps_data = false;
        let (reason, message, _) = tls_of(TlsMode::Disabled, &o, &installed);
        assert_eq!(reason, "TlsMembers");
        assert!(message.contains("storage.emptyDir"), "{message}");
    }

    /// The TLS condition for the user's certificates: problems override everything (and
    /// say whether members kept a set), an expiry within 14 days is a warning on a serving
    /// cluster.
    #[test]
    fn provided_certificate_problems_and_expiries_show_in_the_tls_condition() {
        let spec = EtcdClusterSpec::new(3, "3.5.16");
        // Members that listen with TLS.
        let mut serving = observed(&[true, true, true]);
        for m in &mut serving.members {
            let r = m.runtime.as_mut().unwrap();
            r.peer_url = r.peer_url.replace("http://", "https://");
            r.client_url = r.client_url.replace("http://", "https://");
        }
        let tls_of = |pass: &PassCertificates| {
            let mut st = EtcdClusterStatus::default();
            with_tls(&mut st, &spec, &serving, pass, Some(1), at(1_800_000_000));
            let c = cond(&st, types::TLS);
            (c.status.clone(), c.reason.clone(), c.message.clone())
        };
        let problems = vec!["Secret s: not found".to_string()];
        let (status, reason, message) = tls_of(&PassCertificates {
            installed: None,
            problems: problems.clone(),
            expiring: Vec::new(),
        });
        assert_eq!(
            (status.as_str(), reason.as_str()),
            ("False", "InvalidCertificates")
        );
        assert!(
            message.contains("none start until fixed") && message.contains("Secret s: not found"),
            "{message}"
        );
        let soon = Timestamp::from_second(1_800_000_000 + 86_400).unwrap();
        let (status, reason, message) = tls_of(&PassCertificates {
            installed: None,
            problems: Vec::new(),
            expiring: vec![("server.crt".into(), soon)],
        });
        assert_eq!(
            (status.as_str(), reason.as_str()),
            ("True", "CertificatesExpiring")
        );
        assert!(
            message.contains("server from spec.tls.secrets expires at")
                && message.contains("cannot renew"),
            "{message}"
        );
    }

    /// A member's served version is what etcd reported while it answered healthy, kept
    /// while it does not answer (also across a new runtime version that never came up),
    /// and read back into the next observation (issue 13).
    #[test]
    fn a_member_keeps_the_version_it_served_at_while_it_does_not_answer() {
        let spec = EtcdClusterSpec::new(3, "3.5.20");
        let report = validate::cluster("example", &spec);
        let served = |st: &EtcdClusterStatus, i: usize| st.members[i].served_version.clone();
        let pass = |o: &Observed, prev: Option<&EtcdClusterStatus>| {
            cluster_status(&spec, Some(1), &report, o, &Step::Done, prev, at(1))
        };
        let first = pass(&observed(&[true, true, true]), None);
        assert_eq!(served(&first, 1).as_deref(), Some("3.5.16"));
        // example-1 moved to 3.5.20 and down: its record stays at 3.5.16.
        let mut down = observed(&[true, false, true]);
        if let Some(r) = down.members[1].runtime.as_mut() {
            r.version = semver::Version::new(3, 5, 20);
            r.running = false;
        }
        let second = pass(&down, Some(&first));
        assert_eq!(served(&second, 1).as_deref(), Some("3.5.16"));
        // It answers at 3.5.20: recorded; then it stops again: kept.
        let mut up = observed(&[true, true, true]);
        if let Some(e) = up.members[1].etcd.as_mut() {
            e.version = Some(semver::Version::new(3, 5, 20));
        }
        let third = pass(&up, Some(&second));
        assert_eq!(served(&third, 1).as_deref(), Some("3.5.20"));
        let fourth = pass(&down, Some(&third));
        assert_eq!(served(&fourth, 1).as_deref(), Some("3.5.20"));
        // The next observation (after an operator restart: from the status alone) has it.
        let mut next = down.clone();
        recorded_served_versions(&mut next, &fourth);
        assert_eq!(
            next.members[1].served_at,
            Some(semver::Version::new(3, 5, 20))
        );
        assert!(next.has_served_at(&semver::Version::new(3, 5, 20)));
        let mut before = down;
        recorded_served_versions(&mut before, &second);
        assert!(!before.has_served_at(&semver::Version::new(3, 5, 20)));
    }

    /// Two passes over an unchanged waiting cluster (only the countdown, the learner's raft
    /// index and the clock moved) write the same status, so the second is not written and
    /// does not wake the controller again (issue 9, item 2).
    #[test]
    fn two_passes_over_an_unchanged_waiting_cluster_give_the_same_status() {
        use crate::plan::{RemovalReason, ReplaceReason, WaitReason};
        use std::time::Duration;
        let spec = EtcdClusterSpec::new(3, "3.5.16");
        let report = validate::cluster("example", &spec);
        let mut obs = observed(&[true, true, false]);
        let steps = |pass: u64| {
            let name = MemberName::new("example", 2);
            [
                Step::Wait {
                    reason: WaitReason::MemberUnhealthy {
                        name: name.clone(),
                        remaining: Duration::from_secs(60 - 5 * pass),
                    },
                },
                Step::Wait {
                    reason: WaitReason::MemberStarting {
                        name: name.clone(),
                        remaining: Duration::from_secs(60 - 5 * pass),
                    },
                },
                Step::Wait {
                    reason: WaitReason::LearnerCatchingUp {
                        name: name.clone(),
                        raft_index: Some(100 * pass),
                        leader_raft_index: 1000 + pass,
                    },
                },
                Step::Wait {
                    reason: WaitReason::UpgradedMemberStarting {
                        name: name.clone(),
                        remaining: Duration::from_secs(120 - 5 * pass),
                    },
                },
                Step::Wait {
                    reason: WaitReason::NoAnswer {
                        remaining: Duration::from_secs(30 - 5 * pass),
                    },
                },
                // Refused by etcd for now (NotYet) and planned again on the next pass.
                Step::RemoveMember {
                    name: name.clone(),
                    id: MemberId(3),
                    reason: RemovalReason::Replace(ReplaceReason::Unhealthy {
                        for_: Duration::from_secs(61 + 5 * pass),
                    }),
                },
            ]
        };
        for (first, second) in steps(1).into_iter().zip(steps(2)) {
            let before = cluster_status(&spec, Some(1), &report, &obs, &first, None, at(100));
            obs.members[2].unhealthy_for = Some(Duration::from_secs(6));
            let after = cluster_status(
                &spec,
                Some(1),
                &report,
                &obs,
                &second,
                Some(&before),
                at(105),
            );
            assert_eq!(before, after, "{first} then {second}");
        }
    }

    #[test]
    fn converged_cluster_is_running_and_available() {
        let spec = EtcdClusterSpec::new(3, "3.5.16");
        let report = validate::cluster("example", &spec);
        let st = cluster_status(
            &spec,
            Some(2),
            &report,
            &observed(&[true; 3]),
            &Step::Done,
            None,
            at(1),
        );
        assert_eq!(st.phase, ClusterPhase::Running);
        assert_eq!(st.ready_members, 3);
        assert_eq!(st.observed_generation, Some(2));
        assert_eq!(st.current_version.as_deref(), Some("3.5.16"));
        assert_eq!(st.cluster_id.as_deref(), Some("0000000000000abc"));
        // No member answers any more: the id stays, as proof that the cluster formed.
        let mut silent = observed(&[false, false, false]);
        silent.etcd = None;
        let later = cluster_status(
            &spec,
            Some(2),
            &report,
            &silent,
            &Step::Done,
            Some(&st),
            at(2),
        );
        assert_eq!(later.cluster_id.as_deref(), Some("0000000000000abc"));
        // Members answering as another cluster never replace the recorded id.
        let mut other = observed(&[true; 3]);
        other.etcd.as_mut().unwrap().cluster_id = ClusterId(0xdef);
        let foreign = cluster_status(
            &spec,
            Some(2),
            &report,
            &other,
            &Step::Done,
            Some(&later),
            at(3),
        );
        assert_eq!(foreign.cluster_id.as_deref(), Some("0000000000000abc"));
        assert_eq!(st.highest_ordinal, Some(2));
        assert_eq!(st.members.iter().filter(|m| m.is_leader).count(), 1);
        assert_eq!(cond(&st, types::AVAILABLE).status, "True");
        assert_eq!(cond(&st, types::PROGRESSING).status, "False");
        assert_eq!(cond(&st, types::DEGRADED).status, "False");
        assert_eq!(cond(&st, types::SPEC_VALID).status, "True");
    }

    #[test]
    fn refused_version_skip_is_degraded_with_its_reason() {
        let spec = EtcdClusterSpec::new(3, "3.6.0");
        let report = validate::cluster("example", &spec);
        let step = Step::Blocked {
            reason: BlockReason::VersionSkip {
                from: semver::Version::new(3, 4, 23),
                to: semver::Version::new(3, 6, 0),
            },
        };
        let prev = EtcdClusterStatus {
            phase: ClusterPhase::Running,
            ..Default::default()
        };
        let st = cluster_status(
            &spec,
            Some(3),
            &report,
            &observed(&[true; 3]),
            &step,
            Some(&prev),
            at(1),
        );
        assert_eq!(st.phase, ClusterPhase::Degraded);
        assert_eq!(cond(&st, types::DEGRADED).reason, "VersionSkipRefused");
        assert!(cond(&st, types::DEGRADED).message.contains("3.6.0"));
        assert_eq!(
            cond(&st, types::AVAILABLE).status,
            "True",
            "the cluster still serves"
        );
    }

    #[test]
    fn quorum_not_yet_formed_during_creation_is_creating_not_degraded() {
        let spec = EtcdClusterSpec::new(3, "3.5.16");
        let report = validate::cluster("example", &spec);
        let step = Step::Blocked {
            reason: BlockReason::QuorumLost {
                healthy: 0,
                voters: 3,
            },
        };
        let creating = EtcdClusterStatus {
            phase: ClusterPhase::Creating,
            ..Default::default()
        };
        let o = observed(&[false; 3]);
        let st = cluster_status(&spec, Some(1), &report, &o, &step, Some(&creating), at(1));
        assert_eq!(st.phase, ClusterPhase::Creating);
        let running = EtcdClusterStatus {
            phase: ClusterPhase::Running,
            ..Default::default()
        };
        let st = cluster_status(&spec, Some(1), &report, &o, &step, Some(&running), at(1));
        assert_eq!(st.phase, ClusterPhase::Degraded);
        assert_eq!(cond(&st, types::AVAILABLE).status, "False");
    }

    #[test]
    fn invalid_spec_fails_with_every_problem_in_the_condition() {
        let spec = EtcdClusterSpec::new(12, "x");
        let report = validate::cluster("example", &spec);
        let step = Step::Blocked {
            reason: BlockReason::InvalidSpec {
                message: report.errors_message(),
            },
        };
        let empty = Observed {
            cluster_name: "example".into(),
            highest_ordinal_used: None,
            recorded_cluster_id: None,
            served_version: None,
            members: Vec::new(),
            etcd: None,
            trust_stamp: None,
        };
        let st = cluster_status(&spec, Some(1), &report, &empty, &step, None, at(1));
        assert_eq!(st.phase, ClusterPhase::Failed);
        let c = cond(&st, types::SPEC_VALID);
        assert_eq!(c.status, "False");
        assert!(
            c.message.contains("spec.size") && c.message.contains("spec.version"),
            "{}",
            c.message
        );
    }

    #[test]
    fn maintenance_adds_member_sizes_and_starts_a_schedule_when_first_seen() {
        use crate::api::maintenance::{DefragSpec, MaintenanceSpec};
        use crate::plan::maintenance::{Decision, MemberSpace, Space};
        let mut spec = EtcdClusterSpec::new(3, "3.5.16");
        let o = observed(&[true, true, true]);
        let space = Space {
            members: vec![MemberSpace {
                id: MemberId(2),
                db_size: 4096,
                db_size_in_use: 1024,
            }],
            ..Default::default()
        };
        let mut st = EtcdClusterStatus {
            members: o
                .members
                .iter()
                .map(|m| MemberStatus {
                    name: m.name.to_string(),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        };
        let mut plain = st.clone();
        with_maintenance(&mut plain, &spec, &o, &space, &Decision::Idle, false, at(5));
        assert_eq!(plain.members[1].db_size, Some(4096));
        assert_eq!(plain.members[1].db_size_in_use, Some(1024));
        assert_eq!(plain.members[0].db_size, None, "no status answered");
        assert!(
            plain.maintenance.is_none(),
            "nothing about maintenance without it"
        );
        assert!(condition::find(&plain.conditions, types::MAINTENANCE).is_none());

        spec.maintenance = Some(MaintenanceSpec {
            defrag: Some(DefragSpec {
                schedule: "0 3 * * *".into(),
                ..Default::default()
            }),
        });
        with_maintenance(&mut st, &spec, &o, &space, &Decision::Idle, false, at(5));
        let m = st.maintenance.as_ref().unwrap();
        assert_eq!(
            m.last_schedule_time,
            Some(at(5)),
            "counted from first sight"
        );
        let c = condition::find(&st.conditions, types::MAINTENANCE).unwrap();
        assert_eq!((c.status.as_str(), c.reason.as_str()), ("False", "Idle"));
        // A later pass keeps the first time.
        with_maintenance(&mut st, &spec, &o, &space, &Decision::Idle, false, at(9));
        assert_eq!(st.maintenance.unwrap().last_schedule_time, Some(at(5)));
    }

    #[test]
    fn lost_quorum_says_what_to_set_in_degraded_and_recovery() {
        let spec = EtcdClusterSpec::new(3, "3.5.16");
        let report = validate::cluster("example", &spec);
        let mut obs = observed(&[false, false, false]);
        obs.recorded_cluster_id = Some(ClusterId(0xabc));
        let step = Step::Blocked {
            reason: BlockReason::QuorumLost {
                healthy: 0,
                voters: 3,
            },
        };
        let mut st = cluster_status(&spec, Some(1), &report, &obs, &step, None, at(10));
        let hold = recovery::Decision::Hold(recovery::Hold::NotConfigured { survivor: None });
        with_recovery(&mut st, &hold, None, None, &obs, at(10));
        let degraded = cond(&st, types::DEGRADED);
        assert_eq!(degraded.reason, "QuorumLost");
        assert!(
            degraded.message.contains("; recovery: quorum lost since")
                && degraded
                    .message
                    .contains("spec.recovery.fromSurvivor: true"),
            "{}",
            degraded.message
        );
        let rec = cond(&st, types::RECOVERY);
        assert_eq!(
            (rec.status.as_str(), rec.reason.as_str()),
            ("False", "NotConfigured")
        );
        assert!(st.recovery.as_ref().unwrap().quorum_lost_since.is_some());
        // The same pass again writes the same status (nothing counts down in it).
        let mut again = cluster_status(&spec, Some(1), &report, &obs, &step, Some(&st), at(20));
        with_recovery(&mut again, &hold, None, None, &obs, at(20));
        assert_eq!(again.conditions, st.conditions);
        // Quorum back: the clock stops and the condition says so.
        let healthy = observed(&[true, true, true]);
        let mut back = cluster_status(
            &spec,
            Some(1),
            &report,
            &healthy,
            &Step::Done,
            Some(&st),
            at(30),
        );
        with_recovery(
            &mut back,
            &recovery::Decision::Idle,
            None,
            None,
            &healthy,
            at(30),
        );
        assert!(back.recovery.is_none());
        assert_eq!(cond(&back, types::RECOVERY).reason, "QuorumHealthy");
        // A cluster that never lost quorum has no Recovery condition at all.
        let mut plain =
            cluster_status(&spec, Some(1), &report, &healthy, &Step::Done, None, at(30));
        with_recovery(
            &mut plain,
            &recovery::Decision::Idle,
            None,
            None,
            &healthy,
            at(30),
        );
        assert!(condition::find(&plain.conditions, types::RECOVERY).is_none());
        assert!(plain.recovery.is_none());
    }
}
