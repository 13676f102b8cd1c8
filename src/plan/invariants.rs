//! The named safety checks: each a predicate on (step, spec, observed) that holds for every
//! step the planner may return. The planner uses the arithmetic ones to decide; the property
//! tests run [`broken_rules`] on every step they see.
//! The arithmetic they share with the planner is in [`super::quorum`].

use std::fmt;

use semver::Version;

use super::observed::{MemberName, Observed, ObservedMember};
use super::quorum::{all_healthy, has_quorum, is_caught_up, quorum, removal_keeps_quorum};
use super::scale::scale_down_candidate;
use super::step::{BlockReason, RemovalReason, Step};
use super::upgrade::version_change;
use crate::api::EtcdClusterSpec;
use crate::api::validate;
use crate::etcd::MemberId;

/// A named safety check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rule {
    PausedTakesNoStep,
    InvalidSpecIsBlocked,
    BootstrapOnlyWhenFresh,
    OneChangeAtATime,
    MembershipChangeKeepsQuorum,
    PromoteOnlyCaughtUp,
    ScaleDownOnlyWhenAllHealthy,
    ScaleDownSparesLeader,
    ReplaceOnlyUnhealthy,
    RestartKeepsIdentity,
    DeleteOnlyUnlisted,
    VersionWithinOneMinor,
    UpgradeOnlyWhenSafe,
    LeaderUpgradedLast,
    MoveLeaderToUpgradedVoter,
    ReloadOnlyWhenSafe,
    TransportMoveOnlyWhenSafe,
    DoneOnlyWhenConverged,
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// Every rule `step` breaks, planned from `observed` towards `spec`; empty when it is safe.
pub fn broken_rules(step: &Step, spec: &EtcdClusterSpec, observed: &Observed) -> Vec<Rule> {
    let checks: [(Rule, bool); 18] = [
        (Rule::PausedTakesNoStep, paused_takes_no_step(step, spec)),
        (
            Rule::InvalidSpecIsBlocked,
            invalid_spec_is_blocked(step, spec, observed),
        ),
        (
            Rule::BootstrapOnlyWhenFresh,
            bootstrap_only_when_fresh(step, spec, observed),
        ),
        (Rule::OneChangeAtATime, one_change_at_a_time(step, observed)),
        (
            Rule::MembershipChangeKeepsQuorum,
            membership_change_keeps_quorum(step, observed),
        ),
        (
            Rule::PromoteOnlyCaughtUp,
            promote_only_caught_up(step, observed),
        ),
        (
            Rule::ScaleDownOnlyWhenAllHealthy,
            scale_down_only_when_all_healthy(step, spec, observed),
        ),
        (
            Rule::ScaleDownSparesLeader,
            scale_down_spares_leader(step, observed),
        ),
        (
            Rule::ReplaceOnlyUnhealthy,
            replace_only_unhealthy(step, observed),
        ),
        (
            Rule::RestartKeepsIdentity,
            restart_keeps_identity(step, observed),
        ),
        (
            Rule::DeleteOnlyUnlisted,
            delete_only_unlisted(step, observed),
        ),
        (
            Rule::VersionWithinOneMinor,
            version_within_one_minor(step, spec, observed),
        ),
        (
            Rule::UpgradeOnlyWhenSafe,
            upgrade_only_when_safe(step, spec, observed),
        ),
        (
            Rule::LeaderUpgradedLast,
            leader_upgraded_last(step, spec, observed),
        ),
        (
            Rule::MoveLeaderToUpgradedVoter,
            move_leader_to_upgraded_voter(step, spec, observed),
        ),
        (
            Rule::ReloadOnlyWhenSafe,
            reload_only_when_safe(step, spec, observed),
        ),
        (
            Rule::TransportMoveOnlyWhenSafe,
            transport_move_only_when_safe(step, spec, observed),
        ),
        (
            Rule::DoneOnlyWhenConverged,
            done_only_when_converged(step, spec, observed),
        ),
    ];
    checks
        .into_iter()
        .filter(|(_, ok)| !ok)
        .map(|(rule, _)| rule)
        .collect()
}

fn target_of(spec: &EtcdClusterSpec) -> Option<Version> {
    validate::parse_version(&spec.version).ok()
}

fn size_of(spec: &EtcdClusterSpec) -> Option<usize> {
    usize::try_from(spec.size).ok()
}

/// `paused` gives [`Step::Paused`], and only `paused` does.
pub fn paused_takes_no_step(step: &Step, spec: &EtcdClusterSpec) -> bool {
    spec.paused == (*step == Step::Paused)
}

/// An invalid spec (not paused) gives `Blocked(InvalidSpec)`, and only an invalid spec does.
pub fn invalid_spec_is_blocked(step: &Step, spec: &EtcdClusterSpec, observed: &Observed) -> bool {
    let blocked = matches!(
        step,
        Step::Blocked {
            reason: BlockReason::InvalidSpec { .. }
        }
    );
    let invalid = !validate::cluster(&observed.cluster_name, spec).is_valid();
    spec.paused || blocked == invalid
}

/// Bootstrap only when the cluster never formed, no member answered and no runtime member
/// outside the bootstrap set has data (members of the set with data are an interrupted
/// bootstrap being resumed; their data is left alone), with `size` distinct members at
/// spec.version.
pub fn bootstrap_only_when_fresh(step: &Step, spec: &EtcdClusterSpec, observed: &Observed) -> bool {
    let Step::Bootstrap { members, version } = step else {
        return true;
    };
    let mut distinct = members.clone();
    distinct.sort();
    distinct.dedup();
    observed.etcd.is_none()
        && !observed.formed()
        && !observed
            .members
            .iter()
            .any(|m| m.has_data() && !members.contains(&m.name))
        && distinct.len() == members.len()
        && Some(members.len()) == size_of(spec)
        && Some(version) == target_of(spec).as_ref()
}

/// At most one membership change in flight. Add only when no learner is unpromoted, no etcd
/// member is unstarted, and no runtime member but the one being added is missing from etcd.
/// Promote only when nothing else is pending. Remove a settled member only when nothing is
/// pending; removing a pending member itself (cancelling it) is always allowed.
pub fn one_change_at_a_time(step: &Step, observed: &Observed) -> bool {
    let pending_except = |skip: &dyn Fn(&ObservedMember) -> bool| {
        observed
            .members
            .iter()
            .any(|m| m.is_pending_change() && !skip(m))
    };
    match step {
        Step::AddLearner { name, .. } => {
            observed.member(name).is_none_or(|m| m.etcd.is_none())
                && !pending_except(&|m| &m.name == name && m.etcd.is_none())
        }
        Step::PromoteLearner { id, .. } => {
            observed
                .member_by_id(*id)
                .is_some_and(ObservedMember::is_learner)
                && !pending_except(&|m| m.id() == Some(*id))
        }
        Step::RemoveMember { id, .. } => match observed.member_by_id(*id) {
            None => false,
            Some(m) if m.is_pending_change() => true,
            Some(_) => !observed.has_pending_change(),
        },
        _ => true,
    }
}

/// Membership changes commit and keep quorum: add and promote need quorum now, remove needs
/// [`removal_keeps_quorum`].
pub fn membership_change_keeps_quorum(step: &Step, observed: &Observed) -> bool {
    match step {
        Step::AddLearner { .. } | Step::PromoteLearner { .. } => has_quorum(observed),
        Step::RemoveMember { id, .. } => removal_keeps_quorum(observed, *id),
        _ => true,
    }
}

/// Promote only a healthy learner that [`is_caught_up`].
pub fn promote_only_caught_up(step: &Step, observed: &Observed) -> bool {
    let Step::PromoteLearner { id, .. } = step else {
        return true;
    };
    let Some(m) = observed.member_by_id(*id) else {
        return false;
    };
    let leader_index = observed
        .etcd
        .as_ref()
        .map_or(u64::MAX, |v| v.leader_raft_index);
    m.is_learner()
        && m.is_healthy()
        && is_caught_up(m.etcd.as_ref().and_then(|e| e.raft_index), leader_index)
}

/// Scale-down removes a voter only when there are more voters than spec.size and every
/// member is healthy. (Removing a learner never touches quorum and is not held back.)
pub fn scale_down_only_when_all_healthy(
    step: &Step,
    spec: &EtcdClusterSpec,
    observed: &Observed,
) -> bool {
    let Step::RemoveMember {
        id,
        reason: RemovalReason::ScaleDown,
        ..
    } = step
    else {
        return true;
    };
    match observed.member_by_id(*id) {
        Some(m) if m.is_voter() => {
            all_healthy(observed) && size_of(spec).is_some_and(|s| observed.voter_count() > s)
        }
        Some(m) => m.is_learner() && size_of(spec).is_some_and(|s| observed.voter_count() >= s),
        None => false,
    }
}

/// Scale-down never removes the leader, and removes the non-leader voter with the highest
/// ordinal first (ties: lowest member id).
pub fn scale_down_spares_leader(step: &Step, observed: &Observed) -> bool {
    let Step::RemoveMember {
        id,
        reason: RemovalReason::ScaleDown,
        ..
    } = step
    else {
        return true;
    };
    let Some(m) = observed.member_by_id(*id) else {
        return false;
    };
    if !m.is_voter() {
        return true;
    }
    let Some(leader) = observed.leader_id() else {
        return false;
    };
    let first = scale_down_candidate(observed, leader);
    *id != leader && first.and_then(ObservedMember::id) == Some(*id)
}

/// A member is replaced only when it is not healthy.
pub fn replace_only_unhealthy(step: &Step, observed: &Observed) -> bool {
    match step {
        Step::RemoveMember {
            id,
            reason: RemovalReason::Replace(_),
            ..
        } => observed.member_by_id(*id).is_some_and(|m| !m.is_healthy()),
        _ => true,
    }
}

/// Restart only a stopped member with data that etcd lists as started (or, with no etcd
/// answer, any stopped member with data), or a running but unhealthy started member whose
/// data survives the restart and that was not restarted since it went down; start only an
/// unstarted etcd member whose runtime member exists and is stopped. Neither changes id or
/// data.
pub fn restart_keeps_identity(step: &Step, observed: &Observed) -> bool {
    match step {
        Step::RestartMember { name } => observed.member(name).is_some_and(|m| {
            let stopped_with_data = m.runtime.as_ref().is_some_and(|r| !r.running && r.has_data);
            let in_place = m.is_running()
                && m.is_started()
                && !m.is_healthy()
                && m.restart_keeps_data()
                && !m.restarted_since_down();
            (stopped_with_data && (observed.etcd.is_none() || m.is_started())) || in_place
        }),
        Step::StartMember { name, id } => observed.member(name).is_some_and(|m| {
            m.id() == Some(*id)
                && m.is_unstarted()
                && m.runtime.as_ref().is_some_and(|r| !r.running)
        }),
        _ => true,
    }
}

/// Delete only runtime members etcd does not list, and without an etcd answer only those
/// without data.
pub fn delete_only_unlisted(step: &Step, observed: &Observed) -> bool {
    let Step::DeleteRuntimeMember { name } = step else {
        return true;
    };
    // Without an etcd answer a member's etcd state is unknown: only data decides.
    observed.member(name).is_some_and(|m| {
        m.runtime.is_some()
            && if observed.etcd.is_some() {
                m.etcd.is_none()
            } else {
                !m.has_data()
            }
    })
}

/// Versions change one minor at a time: an upgrade goes to spec.version and
/// [`version_change`] allows it from the lowest version running; a rollback goes only back
/// to the version the cluster last served at; a new learner runs a version the members in
/// etcd could move to.
pub fn version_within_one_minor(step: &Step, spec: &EtcdClusterSpec, observed: &Observed) -> bool {
    match step {
        Step::UpgradeMember { to, .. } => {
            Some(to) == target_of(spec).as_ref()
                && observed
                    .min_version()
                    .is_some_and(|current| version_change(current, to).is_ok())
        }
        // Back to the version the cluster last served at (or a later patch of it), only
        // while no member answers.
        Step::RollBackMember { name, to } => {
            Some(to) == target_of(spec).as_ref()
                && observed
                    .served_version
                    .as_ref()
                    .is_some_and(|s| s.major == to.major && s.minor == to.minor && s <= to)
                && observed.etcd.is_none()
                && observed
                    .member(name)
                    .is_some_and(|m| m.has_data() && m.version().is_some_and(|v| v > to))
        }
        Step::AddLearner { version, .. } => {
            let current = observed
                .etcd_members()
                .filter_map(ObservedMember::version)
                .min();
            current.is_none_or(|c| version_change(c, version).is_ok())
        }
        _ => true,
    }
}

/// A healthy member is upgraded only when every member is healthy, nothing is pending,
/// there are spec.size voters, and the restart leaves a quorum. With one or two voters no
/// restart can keep quorum; the upgrade goes ahead (brief unavailability) as nothing safer
/// exists. An unhealthy member has no health to lose and may be moved at any time.
pub fn upgrade_only_when_safe(step: &Step, spec: &EtcdClusterSpec, observed: &Observed) -> bool {
    let Step::UpgradeMember { name, id, .. } = step else {
        return true;
    };
    let Some(m) = observed.member(name) else {
        return false;
    };
    if m.id() != Some(*id) || !m.is_started() || !m.has_data() {
        return false;
    }
    if !m.is_healthy() {
        return true;
    }
    let voters = observed.voter_count();
    let restart_keeps_quorum =
        voters <= 2 || observed.healthy_voter_count().saturating_sub(1) >= quorum(voters);
    all_healthy(observed)
        && !observed.has_pending_change()
        && size_of(spec) == Some(voters)
        && restart_keeps_quorum
}

/// The (healthy) leader is upgraded only when it is the last member off spec.version.
pub fn leader_upgraded_last(step: &Step, spec: &EtcdClusterSpec, observed: &Observed) -> bool {
    let Step::UpgradeMember { id, .. } = step else {
        return true;
    };
    let Some(target) = target_of(spec) else {
        return false;
    };
    let is_leader = observed.leader_id() == Some(*id);
    let healthy = observed
        .member_by_id(*id)
        .is_some_and(ObservedMember::is_healthy);
    !is_leader
        || !healthy
        || observed
            .members
            .iter()
            .filter(|m| m.id() != Some(*id))
            .all(|m| m.version() == Some(&target))
}

/// Leadership moves from the current leader to another healthy voter already at
/// spec.version.
pub fn move_leader_to_upgraded_voter(
    step: &Step,
    spec: &EtcdClusterSpec,
    observed: &Observed,
) -> bool {
    let Step::MoveLeader {
        from,
        from_id,
        to,
        to_id,
    } = step
    else {
        return true;
    };
    let Some(target) = target_of(spec) else {
        return false;
    };
    let names_match = |name: &MemberName, id: MemberId| {
        observed.member(name).and_then(ObservedMember::id) == Some(id)
    };
    observed.leader_id() == Some(*from_id)
        && from_id != to_id
        && names_match(from, *from_id)
        && names_match(to, *to_id)
        && observed
            .member_by_id(*to_id)
            .is_some_and(|m| m.is_voter() && m.is_healthy() && m.version() == Some(&target))
}

/// Done only when etcd answers with exactly spec.size voters, all healthy, at spec.version,
/// with no learner, no unstarted member and no runtime member outside etcd.
pub fn done_only_when_converged(step: &Step, spec: &EtcdClusterSpec, observed: &Observed) -> bool {
    if *step != Step::Done {
        return true;
    }
    let Some(target) = target_of(spec) else {
        return false;
    };
    observed.etcd.is_some()
        && size_of(spec) == Some(observed.voter_count())
        && observed.members.len() == observed.voter_count()
        && all_healthy(observed)
        && observed
            .members
            .iter()
            .all(|m| m.version() == Some(&target))
        && !observed
            .members
            .iter()
            .any(|m| m.runs_stale_trust(observed.trust_stamp.as_deref()))
        && (observed.transport_move_blocked(tls_wanted(spec))
            || observed.members.iter().all(|m| {
                m.transport_pending(tls_wanted(spec), observed.trust_stamp.as_deref())
                    .is_none()
            }))
}

fn tls_wanted(spec: &EtcdClusterSpec) -> bool {
    crate::api::tls::TlsSpec::mode_of(spec.tls.as_ref()) == crate::api::tls::TlsMode::Enabled
}

/// A member is moved one stage between plaintext and TLS only towards what the spec asks,
/// when it is at that stage, every member has done the first stage of the move before any
/// does the second, every member is healthy and at spec.version, nothing is pending, there
/// are spec.size voters, no member to move is on an emptyDir, and the restart leaves a
/// quorum; the leader only when it is the last one at its stage.
pub fn transport_move_only_when_safe(
    step: &Step,
    spec: &EtcdClusterSpec,
    observed: &Observed,
) -> bool {
    let Step::MoveTransport { name, id, stage } = step else {
        return true;
    };
    let wanted = tls_wanted(spec);
    let installed = observed.trust_stamp.as_deref();
    let Some(m) = observed.member(name) else {
        return false;
    };
    let pending = |o: &ObservedMember| o.transport_pending(wanted, installed);
    let voters = observed.voter_count();
    let restart_keeps_quorum =
        voters <= 2 || observed.healthy_voter_count().saturating_sub(1) >= quorum(voters);
    let is_leader = observed.leader_id() == Some(*id);
    let others_past = observed
        .members
        .iter()
        .filter(|o| o.id() != Some(*id))
        .all(|o| pending(o) != Some(*stage));
    let first_done = stage.is_first()
        || observed
            .members
            .iter()
            .all(|o| pending(o).is_none_or(|s| !s.is_first()));
    m.id() == Some(*id)
        && pending(m) == Some(*stage)
        && first_done
        && !observed.transport_move_blocked(wanted)
        && all_healthy(observed)
        && !observed.has_pending_change()
        && size_of(spec) == Some(voters)
        && target_of(spec).is_some_and(|t| observed.members.iter().all(|o| o.version() == Some(&t)))
        && restart_keeps_quorum
        && (!is_leader || others_past)
}

/// A member is restarted to load new certificates only when it runs stale ones, every
/// member is healthy and at spec.version, nothing is pending, there are spec.size voters,
/// and the restart leaves a quorum (with one or two voters none can); the leader only when
/// it is the last one stale.
pub fn reload_only_when_safe(step: &Step, spec: &EtcdClusterSpec, observed: &Observed) -> bool {
    let Step::ReloadTrust { name, id } = step else {
        return true;
    };
    let installed = observed.trust_stamp.as_deref();
    let Some(m) = observed.member(name) else {
        return false;
    };
    let voters = observed.voter_count();
    let restart_keeps_quorum =
        voters <= 2 || observed.healthy_voter_count().saturating_sub(1) >= quorum(voters);
    let is_leader = observed.leader_id() == Some(*id);
    let others_done = observed
        .members
        .iter()
        .filter(|o| o.id() != Some(*id))
        .all(|o| !o.runs_stale_trust(installed));
    m.id() == Some(*id)
        && m.runs_stale_trust(installed)
        && all_healthy(observed)
        && !observed.has_pending_change()
        && size_of(spec) == Some(voters)
        && target_of(spec).is_some_and(|t| observed.members.iter().all(|o| o.version() == Some(&t)))
        && restart_keeps_quorum
        && (!is_leader || others_done)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::plan::fixtures::*;
    use crate::plan::step::{ReplaceReason, WaitReason};

    fn remove(o: u32, reason: RemovalReason) -> Step {
        Step::RemoveMember {
            name: name(o),
            id: id(o),
            reason,
        }
    }

    fn upgrade(o: u32, to: &str) -> Step {
        Step::UpgradeMember {
            name: name(o),
            id: id(o),
            to: v(to),
        }
    }

    const REPLACE: RemovalReason = RemovalReason::Replace(ReplaceReason::DataLost);

    #[test]
    fn paused_rule() {
        let mut s = spec(3, "3.5.16");
        assert!(paused_takes_no_step(&Step::Done, &s));
        assert!(!paused_takes_no_step(&Step::Paused, &s));
        s.paused = true;
        assert!(paused_takes_no_step(&Step::Paused, &s));
        assert!(!paused_takes_no_step(&Step::Done, &s));
    }

    #[test]
    fn invalid_spec_rule() {
        let blocked = Step::Blocked {
            reason: BlockReason::InvalidSpec {
                message: "x".into(),
            },
        };
        assert!(invalid_spec_is_blocked(
            &blocked,
            &spec(0, "3.5.16"),
            &observed(3)
        ));
        assert!(!invalid_spec_is_blocked(
            &Step::Done,
            &spec(0, "3.5.16"),
            &observed(3)
        ));
        assert!(!invalid_spec_is_blocked(
            &blocked,
            &spec(3, "3.5.16"),
            &observed(3)
        ));
    }

    #[test]
    fn bootstrap_rule() {
        let s = spec(3, "3.5.16");
        let boot = Step::Bootstrap {
            members: vec![name(0), name(1), name(2)],
            version: v("3.5.16"),
        };
        assert!(bootstrap_only_when_fresh(&boot, &s, &empty()));
        assert!(!bootstrap_only_when_fresh(&boot, &s, &observed(3)));
        // An interrupted bootstrap of this set may be resumed; never a formed cluster,
        // and never over data outside the set.
        assert!(bootstrap_only_when_fresh(
            &boot,
            &s,
            &empty().with_running_silent(0)
        ));
        let mut formed = empty().with_running_silent(0);
        formed.recorded_cluster_id = Some(crate::etcd::ClusterId(0xc1));
        assert!(!bootstrap_only_when_fresh(&boot, &s, &formed));
        assert!(!bootstrap_only_when_fresh(
            &boot,
            &s,
            &empty().with_running_silent(3)
        ));
        let short = Step::Bootstrap {
            members: vec![name(0), name(0), name(1)],
            version: v("3.5.16"),
        };
        assert!(!bootstrap_only_when_fresh(&short, &s, &empty()));
    }

    #[test]
    fn one_change_at_a_time_rule() {
        let add = |o: u32| Step::AddLearner {
            name: name(o),
            version: v("3.5.16"),
        };
        assert!(one_change_at_a_time(&add(3), &observed(3)));
        assert!(!one_change_at_a_time(
            &add(4),
            &observed(3).with_learner(3, 0)
        ));
        assert!(!one_change_at_a_time(
            &add(4),
            &observed(3).with_unstarted(3, false)
        ));
        assert!(one_change_at_a_time(
            &add(3),
            &observed(3).with_reservation(3)
        ));
        assert!(!one_change_at_a_time(
            &add(4),
            &observed(3).with_reservation(3)
        ));
        assert!(
            !one_change_at_a_time(&add(2), &observed(3)),
            "already in etcd"
        );

        let promote = Step::PromoteLearner {
            name: name(3),
            id: id(3),
        };
        assert!(one_change_at_a_time(
            &promote,
            &observed(3).with_learner(3, 1000)
        ));
        assert!(!one_change_at_a_time(
            &promote,
            &observed(3).with_learner(3, 1000).with_reservation(4)
        ));

        let pending = observed(3).with_learner(3, 0);
        assert!(!one_change_at_a_time(&remove(0, REPLACE), &pending));
        assert!(one_change_at_a_time(
            &remove(3, RemovalReason::Orphan),
            &pending
        ));
        assert!(one_change_at_a_time(&remove(0, REPLACE), &observed(3)));
    }

    #[test]
    fn membership_change_keeps_quorum_rule() {
        let add = Step::AddLearner {
            name: name(3),
            version: v("3.5.16"),
        };
        assert!(membership_change_keeps_quorum(
            &add,
            &observed(3).with_dead(0)
        ));
        assert!(!membership_change_keeps_quorum(
            &add,
            &observed(3).with_dead(0).with_dead(1)
        ));
        assert!(!membership_change_keeps_quorum(
            &remove(2, RemovalReason::ScaleDown),
            &observed(3).with_dead(0)
        ));
        assert!(membership_change_keeps_quorum(
            &Step::Done,
            &observed(1).with_dead(0)
        ));
    }

    #[test]
    fn promote_rule() {
        let promote = Step::PromoteLearner {
            name: name(3),
            id: id(3),
        };
        assert!(promote_only_caught_up(
            &promote,
            &observed(3).with_learner(3, 900)
        ));
        assert!(!promote_only_caught_up(
            &promote,
            &observed(3).with_learner(3, 899)
        ));
        assert!(!promote_only_caught_up(
            &promote,
            &observed(3).with_learner(3, 1000).with_unhealthy(3)
        ));
        assert!(!promote_only_caught_up(&promote, &observed(4)), "a voter");
    }

    #[test]
    fn scale_down_health_rule() {
        let s = spec(3, "3.5.16");
        let down = remove(3, RemovalReason::ScaleDown);
        assert!(scale_down_only_when_all_healthy(&down, &s, &observed(4)));
        assert!(!scale_down_only_when_all_healthy(
            &down,
            &s,
            &observed(4).with_dead(0)
        ));
        assert!(!scale_down_only_when_all_healthy(
            &down,
            &spec(4, "3.5.16"),
            &observed(4)
        ));
        // an unneeded learner goes even while a voter is down
        assert!(scale_down_only_when_all_healthy(
            &down,
            &s,
            &observed(3).with_dead(0).with_learner(3, 0)
        ));
    }

    #[test]
    fn scale_down_leader_rule() {
        let o = observed(4).with_leader(3);
        assert!(!scale_down_spares_leader(
            &remove(3, RemovalReason::ScaleDown),
            &o
        ));
        assert!(scale_down_spares_leader(
            &remove(2, RemovalReason::ScaleDown),
            &o
        ));
        assert!(!scale_down_spares_leader(
            &remove(1, RemovalReason::ScaleDown),
            &o
        ));
        assert!(scale_down_spares_leader(
            &remove(3, RemovalReason::ScaleDown),
            &observed(4)
        ));
        assert!(
            scale_down_spares_leader(&remove(3, REPLACE), &o),
            "not a scale-down"
        );
    }

    #[test]
    fn replace_rule() {
        assert!(!replace_only_unhealthy(&remove(1, REPLACE), &observed(3)));
        assert!(replace_only_unhealthy(
            &remove(1, REPLACE),
            &observed(3).with_dead(1)
        ));
        assert!(replace_only_unhealthy(
            &remove(1, RemovalReason::ScaleDown),
            &observed(3)
        ));
    }

    #[test]
    fn restart_rule() {
        let restart = Step::RestartMember { name: name(1) };
        assert!(restart_keeps_identity(&restart, &observed(3).with_dead(1)));
        assert!(!restart_keeps_identity(&restart, &observed(3)));
        assert!(!restart_keeps_identity(
            &restart,
            &observed(3).with_data_lost(1)
        ));
        assert!(restart_keeps_identity(
            &restart,
            &observed(3).with_dead(1).without_etcd()
        ));
        let start = Step::StartMember {
            name: name(3),
            id: id(3),
        };
        assert!(restart_keeps_identity(
            &start,
            &observed(3).with_unstarted(3, false)
        ));
        assert!(!restart_keeps_identity(
            &start,
            &observed(3).with_unstarted(3, true)
        ));
        assert!(!restart_keeps_identity(
            &start,
            &observed(3).with_learner(3, 0)
        ));
    }

    #[test]
    fn delete_rule() {
        let delete = |o: u32| Step::DeleteRuntimeMember { name: name(o) };
        assert!(delete_only_unlisted(
            &delete(3),
            &observed(3).with_leftover(3)
        ));
        assert!(!delete_only_unlisted(&delete(1), &observed(3)));
        assert!(!delete_only_unlisted(
            &delete(0),
            &observed(1).with_dead(0).without_etcd()
        ));
        assert!(delete_only_unlisted(
            &delete(5),
            &empty().with_reservation(5)
        ));
    }

    #[test]
    fn version_rule() {
        let s = spec(3, "3.6.0");
        assert!(version_within_one_minor(
            &upgrade(0, "3.6.0"),
            &s,
            &observed(3)
        ));
        assert!(!version_within_one_minor(
            &upgrade(0, "3.6.1"),
            &s,
            &observed(3)
        ));
        assert!(!version_within_one_minor(
            &upgrade(0, "3.6.0"),
            &s,
            &observed(3).with_version(2, "3.4.23")
        ));
        let add = |ver: &str| Step::AddLearner {
            name: name(3),
            version: v(ver),
        };
        assert!(version_within_one_minor(&add("3.5.16"), &s, &observed(3)));
        assert!(!version_within_one_minor(&add("3.4.23"), &s, &observed(3)));
    }

    #[test]
    fn upgrade_safety_rule() {
        let s = spec(3, "3.6.0");
        assert!(upgrade_only_when_safe(
            &upgrade(1, "3.6.0"),
            &s,
            &observed(3)
        ));
        assert!(!upgrade_only_when_safe(
            &upgrade(1, "3.6.0"),
            &s,
            &observed(3).with_unhealthy(2)
        ));
        assert!(
            upgrade_only_when_safe(&upgrade(2, "3.6.0"), &s, &observed(3).with_unhealthy(2)),
            "an unhealthy member has no health to lose"
        );
        assert!(!upgrade_only_when_safe(
            &upgrade(1, "3.6.0"),
            &s,
            &observed(3).with_learner(3, 1000)
        ));
        assert!(!upgrade_only_when_safe(
            &upgrade(1, "3.6.0"),
            &spec(4, "3.6.0"),
            &observed(3)
        ));
        assert!(upgrade_only_when_safe(
            &upgrade(1, "3.6.0"),
            &spec(2, "3.6.0"),
            &observed(2)
        ));
        assert!(!upgrade_only_when_safe(
            &upgrade(1, "3.6.0"),
            &s,
            &observed(3).with_data_lost(1)
        ));
    }

    #[test]
    fn leader_last_rule() {
        let s = spec(3, "3.6.0");
        let o = observed(3).with_leader(0);
        assert!(!leader_upgraded_last(&upgrade(0, "3.6.0"), &s, &o));
        assert!(leader_upgraded_last(&upgrade(1, "3.6.0"), &s, &o));
        let rest_done = o.with_version(1, "3.6.0").with_version(2, "3.6.0");
        assert!(leader_upgraded_last(&upgrade(0, "3.6.0"), &s, &rest_done));
    }

    #[test]
    fn move_leader_rule() {
        let s = spec(3, "3.6.0");
        let o = observed(3).with_leader(0).with_version(1, "3.6.0");
        let mv = |from: u32, to: u32| Step::MoveLeader {
            from: name(from),
            from_id: id(from),
            to: name(to),
            to_id: id(to),
        };
        assert!(move_leader_to_upgraded_voter(&mv(0, 1), &s, &o));
        assert!(
            !move_leader_to_upgraded_voter(&mv(0, 2), &s, &o),
            "not upgraded"
        );
        assert!(
            !move_leader_to_upgraded_voter(&mv(1, 0), &s, &o),
            "not the leader"
        );
        assert!(!move_leader_to_upgraded_voter(
            &mv(0, 1),
            &s,
            &o.clone().with_unhealthy(1)
        ));
    }

    #[test]
    fn done_rule() {
        let s = spec(3, "3.5.16");
        assert!(done_only_when_converged(&Step::Done, &s, &observed(3)));
        assert!(!done_only_when_converged(&Step::Done, &s, &observed(4)));
        assert!(!done_only_when_converged(
            &Step::Done,
            &s,
            &observed(3).with_dead(1)
        ));
        assert!(!done_only_when_converged(
            &Step::Done,
            &s,
            &observed(3).with_leftover(3)
        ));
        assert!(!done_only_when_converged(
            &Step::Done,
            &spec(3, "3.6.0"),
            &observed(3)
        ));
        let wait = Step::Wait {
            reason: WaitReason::MemberUnhealthy {
                name: name(1),
                remaining: Duration::ZERO,
            },
        };
        assert!(done_only_when_converged(
            &wait,
            &s,
            &observed(3).with_dead(1)
        ));
    }

    #[test]
    fn broken_rules_names_each_broken_rule() {
        let s = spec(3, "3.5.16");
        assert_eq!(broken_rules(&Step::Done, &s, &observed(3)), vec![]);
        assert_eq!(
            broken_rules(&remove(1, REPLACE), &s, &observed(3)),
            vec![Rule::ReplaceOnlyUnhealthy]
        );
        assert_eq!(
            broken_rules(&Step::Done, &s, &observed(3).with_dead(0)),
            vec![Rule::DoneOnlyWhenConverged]
        );
    }
}
