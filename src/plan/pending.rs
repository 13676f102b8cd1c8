//! Finishing (or cancelling) a half-done membership change, before anything new starts.
//!
//! An add is executed as reserve runtime member -> `member add --learner` -> start ->
//! (later) promote; a removal as `member remove` -> delete runtime member. A crash between
//! any two parts leaves one of the states below, each finished here, in this order:
//! 1. A runtime member etcd does not list that runs or has data (left by a removal, or not
//!    ours): `DeleteRuntimeMember` once it has stayed unlisted past the grace (a member
//!    list can lag). It can never rejoin with that data. A reservation while
//!    etcd has a learner or an unstarted member is deleted too: it could not be added
//!    without two changes in flight (our adds never leave this state; it is cleaned up).
//!    So is one while a voter is down: etcd refuses every add then (strict
//!    reconfiguration), and the down voter is replaced first.
//! 2. An etcd member that never started: `StartMember` when its runtime member is stopped;
//!    `RemoveMember(Orphan)` when it has no runtime member; when its process runs, wait for
//!    it to join. Either way, once it has not joined for longer than the grace,
//!    `RemoveMember(Replace(NeverStarted))` (a stopped one is still started while quorum is
//!    lost: it may be what brings quorum back).
//! 3. Learners: one no longer needed (spec.size voters already) is removed (`ScaleDown`),
//!    a second one too (`Orphan`); a failed one is replaced like any member
//!    ([`super::member_loss`] rules 4-6); a healthy one is promoted once
//!    [`quorum::is_caught_up`], else waited for.
//! 4. A reservation (runtime member, never run, no data, not in etcd): `AddLearner` it
//!    again when a member is still wanted, else `DeleteRuntimeMember`. Extra reservations
//!    are deleted, highest ordinal first.
//!
//! Each returns a step whenever its state exists, so nothing new starts while any part of a
//! change is unfinished.

use super::Ctx;
use super::member_loss::{is_overdue, quorum_lost, remove_or_blocked, wait_for, when_overdue};
use super::observed::ObservedMember;
use super::quorum;
use super::step::{RemovalReason, ReplaceReason, Step, WaitReason};
use super::upgrade;

pub(super) fn finish(ctx: &Ctx) -> Option<Step> {
    leftover(ctx)
        .or_else(|| unstarted(ctx))
        .or_else(|| learner(ctx))
        .or_else(|| reservation(ctx))
}

fn sorted<'a>(ctx: &Ctx<'a>, keep: impl Fn(&ObservedMember) -> bool) -> Vec<&'a ObservedMember> {
    let mut members: Vec<&ObservedMember> =
        ctx.observed.members.iter().filter(|m| keep(m)).collect();
    members.sort_by_key(|m| m.order_key());
    members
}

/// 1, and reservations that cannot be added because etcd has a change in flight or a voter
/// is down: etcd's strict reconfiguration check refuses every `member add` ("unhealthy
/// cluster") until each voter has been connected for 5 s, so insisting on the add would
/// keep the down voter from being replaced. (Without quorum the add waits: that is
/// reported as lost quorum.)
fn leftover(ctx: &Ctx) -> Option<Step> {
    let etcd_busy = ctx
        .observed
        .members
        .iter()
        .any(|m| m.is_learner() || m.is_unstarted())
        || (quorum::has_quorum(ctx.observed) && ctx.observed.voters().any(|m| !m.is_healthy()));
    let m = sorted(ctx, |m| {
        m.is_leftover() || (etcd_busy && m.is_reservation())
    })
    .first()
    .copied()?;
    // A member list can lag (an answer from a member that has not applied the latest
    // change): a member with data it does not list yet is deleted only once it has stayed
    // unlisted past the grace. Found by the simulated cluster: a lagging list right after
    // the bootstrap of a one-member cluster had its only member's data deleted.
    if m.is_leftover() && !is_overdue(ctx, m) {
        return Some(wait_for(ctx, m, false));
    }
    Some(Step::DeleteRuntimeMember {
        name: m.name.clone(),
    })
}

/// 2.
fn unstarted(ctx: &Ctx) -> Option<Step> {
    let members = sorted(ctx, ObservedMember::is_unstarted);
    // Past the grace a stopped one is replaced instead, unless quorum is lost (then
    // starting it may be the way back, as for a partly started bootstrap).
    let quorum = quorum::has_quorum(ctx.observed);
    if let Some(m) = members.iter().find(|m| {
        m.runtime.as_ref().is_some_and(|r| !r.running) && (!is_overdue(ctx, m) || !quorum)
    }) && let Some(id) = m.id()
    {
        return Some(Step::StartMember {
            name: m.name.clone(),
            id,
        });
    }
    if let Some(m) = members.iter().find(|m| m.runtime.is_none()) {
        return Some(remove_or_blocked(ctx, m, RemovalReason::Orphan));
    }
    // The rest have not joined for too long, or run and may still join.
    if let Some(m) = members.iter().find(|m| is_overdue(ctx, m)) {
        let why = ReplaceReason::NeverStarted {
            for_: super::member_loss::down_for(m),
        };
        return Some(when_overdue(ctx, m, why));
    }
    members.first().map(|m| wait_for(ctx, m, true))
}

/// 3.
fn learner(ctx: &Ctx) -> Option<Step> {
    let o = ctx.observed;
    let mut learners: Vec<&ObservedMember> = o.learners().collect();
    learners.sort_by_key(|m| m.id());
    let first = learners.first()?;
    if o.voter_count() >= ctx.size {
        return Some(remove_or_blocked(ctx, first, RemovalReason::ScaleDown));
    }
    if let Some(extra) = learners.last()
        && learners.len() > 1
    {
        return Some(remove_or_blocked(ctx, extra, RemovalReason::Orphan));
    }
    let m = *first;
    if m.has_lost_data() {
        return Some(remove_or_blocked(
            ctx,
            m,
            RemovalReason::Replace(ReplaceReason::DataLost),
        ));
    }
    if !m.is_healthy() {
        if is_overdue(ctx, m) {
            let why = ReplaceReason::Unhealthy {
                for_: super::member_loss::down_for(m),
            };
            return Some(when_overdue(ctx, m, why));
        }
        return Some(wait_for(ctx, m, false));
    }
    let raft_index = m.etcd.as_ref().and_then(|e| e.raft_index);
    let leader_raft_index = o.etcd.as_ref().map_or(0, |v| v.leader_raft_index);
    if !quorum::is_caught_up(raft_index, leader_raft_index) {
        return Some(Step::Wait {
            reason: WaitReason::LearnerCatchingUp {
                name: m.name.clone(),
                raft_index,
                leader_raft_index,
            },
        });
    }
    match m.id() {
        Some(id) if quorum::has_quorum(o) => Some(Step::PromoteLearner {
            name: m.name.clone(),
            id,
        }),
        _ => Some(quorum_lost(ctx)),
    }
}

/// 4.
fn reservation(ctx: &Ctx) -> Option<Step> {
    let o = ctx.observed;
    let reservations = sorted(ctx, ObservedMember::is_reservation);
    let delete = |m: &ObservedMember| Step::DeleteRuntimeMember {
        name: m.name.clone(),
    };
    if reservations.len() > 1 {
        return reservations.last().map(|m| delete(m));
    }
    let m = reservations.first()?;
    let wanted = o.etcd_members().count() < ctx.size;
    let current = o.etcd_members().filter_map(ObservedMember::version).min();
    let Some(version) = m.version() else {
        return Some(delete(m));
    };
    // A reservation made for another version than the cluster can take now is made anew.
    let version_ok = current.is_none_or(|c| upgrade::version_change(c, version).is_ok());
    if !wanted || !version_ok {
        return Some(delete(m));
    }
    if !quorum::has_quorum(o) {
        return Some(quorum_lost(ctx));
    }
    Some(Step::AddLearner {
        name: m.name.clone(),
        version: version.clone(),
    })
}

#[cfg(test)]
mod tests {
    use crate::plan::fixtures::*;
    use crate::plan::{RemovalReason, ReplaceReason, Step, WaitReason, next_step};

    fn plan(size: i32, o: &crate::plan::Observed) -> Step {
        next_step(&spec(size, VERSION), o, &policy())
    }

    #[test]
    fn a_reservation_is_dropped_while_a_voter_is_down_so_the_voter_is_replaced() {
        // example-3 was reserved; then example-1 lost its data. etcd refuses every add
        // until all voters are connected, so re-adding example-3 would be refused forever
        // and example-1 never replaced (found by the simulated cluster).
        let o = observed(3).with_reservation(3).with_data_lost(1);
        assert_eq!(plan(4, &o), Step::DeleteRuntimeMember { name: name(3) });
        let o = observed(3).with_data_lost(1);
        assert!(
            matches!(
                plan(4, &o),
                Step::RemoveMember {
                    reason: RemovalReason::Replace(ReplaceReason::DataLost),
                    ..
                }
            ),
            "{}",
            plan(4, &o)
        );
    }

    #[test]
    fn member_left_behind_by_a_removal_is_deleted_once_it_stays_unlisted() {
        // Just seen unlisted: the member list may lag, so its data is not deleted yet.
        assert_eq!(
            plan(3, &observed(3).with_leftover(3)),
            Step::Wait {
                reason: WaitReason::MemberUnhealthy {
                    name: name(3),
                    remaining: secs(55),
                }
            }
        );
        assert_eq!(
            plan(3, &observed(3).with_leftover(3).down_for(3, secs(61))),
            Step::DeleteRuntimeMember { name: name(3) }
        );
    }

    #[test]
    fn added_member_that_never_started_is_started() {
        assert_eq!(
            plan(4, &observed(3).with_unstarted(3, false)),
            Step::StartMember {
                name: name(3),
                id: id(3),
            }
        );
    }

    #[test]
    fn added_member_without_runtime_member_is_removed_as_orphan() {
        let o = observed(3).with_unstarted(3, false).without_runtime(3);
        assert_eq!(
            plan(4, &o),
            Step::RemoveMember {
                name: name(3),
                id: id(3),
                reason: RemovalReason::Orphan,
            }
        );
    }

    #[test]
    fn added_member_that_runs_but_never_joins_is_replaced_after_the_grace() {
        let o = observed(3).with_unstarted(3, true);
        assert!(matches!(
            plan(4, &o),
            Step::Wait {
                reason: WaitReason::MemberStarting { .. }
            }
        ));
        assert_eq!(
            plan(4, &o.down_for(3, secs(61))),
            Step::RemoveMember {
                name: name(3),
                id: id(3),
                reason: RemovalReason::Replace(ReplaceReason::NeverStarted { for_: secs(61) }),
            }
        );
    }

    #[test]
    fn a_bootstrap_member_that_never_joined_is_replaced_after_the_grace_not_restarted() {
        // Bootstrapped with the others, so etcd lists it as a voter with its name, but it
        // never published its client URLs: its process runs in another cluster (issue 13:
        // an operator restarted mid-bootstrap used another token). A restart in place
        // keeps that data and waits out the replace grace (10 min) for nothing.
        let mut o = observed(3).with_unhealthy(2);
        if let Some(e) = o.at(2).etcd.as_mut() {
            e.started = false;
            e.raft_index = None;
        }
        assert!(o.members[2].is_unstarted() && o.members[2].is_voter());
        assert_eq!(
            plan(3, &o),
            Step::Wait {
                reason: WaitReason::MemberStarting {
                    name: name(2),
                    remaining: secs(55),
                }
            }
        );
        assert_eq!(
            plan(3, &o.clone().down_for(2, secs(61))),
            Step::RemoveMember {
                name: name(2),
                id: id(2),
                reason: RemovalReason::Replace(ReplaceReason::NeverStarted { for_: secs(61) }),
            }
        );
        // Its process stopped: started again (joining the cluster etcd lists it in) while
        // within the grace.
        let mut stopped = o;
        if let Some(r) = stopped.at(2).runtime.as_mut() {
            r.running = false;
        }
        assert_eq!(
            plan(3, &stopped),
            Step::StartMember {
                name: name(2),
                id: id(2),
            }
        );
    }

    #[test]
    fn added_member_that_keeps_failing_to_start_is_replaced_after_the_grace() {
        let o = observed(3).with_unstarted(3, false).down_for(3, secs(61));
        assert_eq!(
            plan(4, &o),
            Step::RemoveMember {
                name: name(3),
                id: id(3),
                reason: RemovalReason::Replace(ReplaceReason::NeverStarted { for_: secs(61) }),
            }
        );
    }

    #[test]
    fn reservation_is_dropped_while_a_learner_is_pending() {
        let o = observed(3).with_learner(3, 1000).with_reservation(4);
        assert_eq!(plan(5, &o), Step::DeleteRuntimeMember { name: name(4) });
    }

    #[test]
    fn learner_is_promoted_only_when_caught_up() {
        assert_eq!(
            plan(4, &observed(3).with_learner(3, 900)),
            Step::PromoteLearner {
                name: name(3),
                id: id(3),
            }
        );
        assert_eq!(
            plan(4, &observed(3).with_learner(3, 899)),
            Step::Wait {
                reason: WaitReason::LearnerCatchingUp {
                    name: name(3),
                    raft_index: Some(899),
                    leader_raft_index: LEADER_RAFT_INDEX,
                }
            }
        );
    }

    #[test]
    fn learner_no_longer_needed_is_removed_instead_of_promoted() {
        assert_eq!(
            plan(3, &observed(3).with_learner(3, 1000)),
            Step::RemoveMember {
                name: name(3),
                id: id(3),
                reason: RemovalReason::ScaleDown,
            }
        );
    }

    #[test]
    fn second_learner_is_removed() {
        let o = observed(3).with_learner(3, 1000).with_learner(4, 1000);
        assert_eq!(
            plan(5, &o),
            Step::RemoveMember {
                name: name(4),
                id: id(4),
                reason: RemovalReason::Orphan,
            }
        );
    }

    #[test]
    fn learner_that_lost_its_data_is_replaced() {
        let o = observed(3).with_learner(3, 1000).with_data_lost(3);
        assert_eq!(
            plan(4, &o),
            Step::RemoveMember {
                name: name(3),
                id: id(3),
                reason: RemovalReason::Replace(ReplaceReason::DataLost),
            }
        );
    }

    #[test]
    fn dead_voter_is_restarted_while_a_learner_catches_up() {
        let o = observed(3).with_learner(3, 10).with_dead(1);
        assert_eq!(plan(4, &o), Step::RestartMember { name: name(1) });
    }

    #[test]
    fn voter_is_not_replaced_while_a_learner_is_pending() {
        let o = observed(3)
            .with_learner(3, 10)
            .with_unhealthy(1)
            .down_for(1, secs(600));
        assert!(matches!(
            plan(4, &o),
            Step::Wait {
                reason: WaitReason::LearnerCatchingUp { .. }
            }
        ));
    }

    #[test]
    fn reservation_is_added_when_still_wanted_and_deleted_when_not() {
        let o = observed(3).with_reservation(3);
        assert_eq!(
            plan(4, &o),
            Step::AddLearner {
                name: name(3),
                version: v(VERSION),
            }
        );
        assert_eq!(plan(3, &o), Step::DeleteRuntimeMember { name: name(3) });
        let two = observed(3).with_reservation(3).with_reservation(4);
        assert_eq!(plan(5, &two), Step::DeleteRuntimeMember { name: name(4) });
    }

    #[test]
    fn add_waits_for_quorum() {
        let o = observed(3)
            .with_reservation(3)
            .with_unhealthy(0)
            .with_unhealthy(1);
        assert!(matches!(plan(4, &o), Step::Blocked { .. }));
    }
}
