//! Growing or shrinking membership towards spec.size, one member per pass.
//!
//! Runs only once nothing is pending, every member is healthy (member loss returned a step
//! otherwise) and the version guard passed. Growing is also the second half of replacing a
//! failed member: the failed one was removed, so there are fewer voters than spec.size.
//!
//! - Fewer voters: `AddLearner` named `<cluster>-<next ordinal>` (one past every ordinal
//!   seen or recorded, so names are never reused), at the lowest version the members run
//!   (a new member never runs below the cluster version; upgrades move it later with the
//!   rest). [`super::pending`] promotes it once it caught up.
//! - More voters: `RemoveMember(ScaleDown)` of [`scale_down_candidate`]: never the
//!   leader, highest ordinal first, ties by lowest member id.

use super::Ctx;
use super::member_loss::{quorum_lost, remove_or_blocked};
use super::observed::Observed;
use super::observed::{MemberName, ObservedMember};
use super::quorum;
use super::step::{RemovalReason, Step, WaitReason};
use crate::etcd::MemberId;

pub(super) fn resize(ctx: &Ctx) -> Option<Step> {
    let o = ctx.observed;
    let voters = o.voter_count();
    if voters < ctx.size {
        if !quorum::has_quorum(o) {
            return Some(quorum_lost(ctx));
        }
        let version = o
            .etcd_members()
            .filter_map(ObservedMember::version)
            .min()
            .unwrap_or(&ctx.target)
            .clone();
        return Some(Step::AddLearner {
            name: MemberName::new(&o.cluster_name, o.next_ordinal()),
            version,
        });
    }
    if voters > ctx.size {
        let Some(leader) = o.leader_id() else {
            return Some(Step::Wait {
                reason: WaitReason::NoLeader,
            });
        };
        let candidate = scale_down_candidate(o, leader)?;
        return Some(remove_or_blocked(ctx, candidate, RemovalReason::ScaleDown));
    }
    None
}

/// The voter scale-down removes first: not the leader, highest ordinal (names without an
/// ordinal first, as they are not ours), ties by lowest member id.
pub(crate) fn scale_down_candidate(
    observed: &Observed,
    leader: MemberId,
) -> Option<&ObservedMember> {
    observed
        .voters()
        .filter(|m| m.id() != Some(leader))
        .min_by_key(|m| {
            (
                std::cmp::Reverse(m.name.ordinal().unwrap_or(u32::MAX)),
                m.id(),
                m.name.as_str(),
            )
        })
}

#[cfg(test)]
mod tests {
    use crate::plan::fixtures::*;
    use crate::plan::{RemovalReason, Step, WaitReason, next_step};

    fn plan(size: i32, o: &crate::plan::Observed) -> Step {
        next_step(&spec(size, VERSION), o, &policy())
    }

    fn scale_down(ordinal: u32) -> Step {
        Step::RemoveMember {
            name: name(ordinal),
            id: id(ordinal),
            reason: RemovalReason::ScaleDown,
        }
    }

    #[test]
    fn scale_up_adds_one_learner_with_the_next_ordinal() {
        assert_eq!(
            plan(5, &observed(3)),
            Step::AddLearner {
                name: name(3),
                version: v(VERSION),
            }
        );
    }

    #[test]
    fn scale_up_never_reuses_a_recorded_ordinal() {
        let mut o = observed(3);
        o.highest_ordinal_used = Some(6);
        assert_eq!(
            plan(4, &o),
            Step::AddLearner {
                name: name(7),
                version: v(VERSION),
            }
        );
    }

    #[test]
    fn new_member_runs_the_cluster_version_not_the_target() {
        let o = observed(2);
        assert_eq!(
            next_step(&spec(3, "3.6.0"), &o, &policy()),
            Step::AddLearner {
                name: name(2),
                version: v(VERSION),
            }
        );
    }

    #[test]
    fn scale_down_removes_the_highest_ordinal_first() {
        assert_eq!(plan(3, &observed(5)), scale_down(4));
    }

    #[test]
    fn scale_down_never_removes_the_leader_first() {
        assert_eq!(plan(3, &observed(5).with_leader(4)), scale_down(3));
        assert_eq!(plan(1, &observed(2).with_leader(1)), scale_down(0));
    }

    #[test]
    fn scale_down_waits_for_every_member_to_be_healthy() {
        let o = observed(5).with_unhealthy(1);
        assert!(matches!(
            plan(3, &o),
            Step::Wait {
                reason: WaitReason::MemberUnhealthy { .. }
            }
        ));
    }

    #[test]
    fn scale_down_without_a_known_leader_waits() {
        assert_eq!(
            plan(3, &observed(5).without_leader()),
            Step::Wait {
                reason: WaitReason::NoLeader
            }
        );
    }

    #[test]
    fn scale_down_ties_are_broken_by_lowest_member_id() {
        // two members whose names carry no ordinal: the lower id goes first
        let mut o = observed(4);
        o.at(2).name = "foreign-a".into();
        o.at(3).name = "foreign-b".into();
        if let Some(e) = o.members[2].etcd.as_mut() {
            e.id = crate::etcd::MemberId(0x9);
        }
        let step = plan(3, &o);
        assert_eq!(
            step,
            Step::RemoveMember {
                name: "foreign-a".into(),
                id: crate::etcd::MemberId(0x9),
                reason: RemovalReason::ScaleDown,
            }
        );
    }
}
