//! What happens when a member dies: restart it, replace it, or say why not.
//!
//! Rules, in order ([`revive`] runs before half-done changes are finished, [`replace`]
//! after; a member etcd has not started yet is [`super::pending`]'s):
//! 1. A member down (stopped or unhealthy) with its data, off spec.version while every other
//!    member already runs it: `UpgradeMember` it rather than restart it. It has no health to
//!    lose, and this finishes an upgrade on a dead member, or rolls back a stalled one once
//!    spec.version is set back to what the others run. Also when the others run mixed
//!    versions, if it runs a later version than the cluster ever served at and no member's
//!    status records serving at (an upgrade that never came up): restarting it there would
//!    fail forever.
//! 2. A member etcd lists as started whose process stopped but whose data is there:
//!    `RestartMember`, same id, same data. No membership change, so safe without quorum (and
//!    how a lost quorum comes back). Past its patience it is replaced instead, unless quorum
//!    is lost and a restart is the only way back.
//! 3. Healthy voters below quorum: `Blocked(QuorumLost)`. Surface it; never guess.
//! 4. A started member whose data is gone (no runtime member, or one without data):
//!    `RemoveMember(Replace(DataLost))` at once; scale adds a learner replacement on a later
//!    pass and promotes it once caught up.
//! 5. A member moved to spec.version during an upgrade (others still run another version)
//!    that is not healthy, when no member's status records serving at spec.version: wait up
//!    to `upgrade_health_deadline`, then `Blocked(UpgradeStalled)`. It is not replaced: a
//!    replacement at that version would fail the same way.
//! 6. Any other unhealthy member whose data survives a restart (a PVC, a local data dir),
//!    down past `unhealthy_grace` and not restarted since it went down: `RestartMember` in
//!    place, same id and data (issue 9, item 7). A node reboot, a long defrag or a fault
//!    only the operator sees costs no volume and no snapshot transfer.
//! 7. Unhealthy past its patience: `replace_grace` (10 min by default) in all for a member
//!    restarted in place, `unhealthy_grace` for one whose restart would lose its data
//!    (emptyDir): `RemoveMember(Replace(Unhealthy))`.
//!
//! Before a restart or a removal the leader hands leadership to a healthy voter, when it
//! still answers ([`leader_off_first`]).
//!
//! Removing an unhealthy member never costs quorum (see [`super::rules`]); every removal
//! still goes through [`quorum::removal_keeps_quorum`]. Several candidates: acting beats
//! waiting, then lowest ordinal, then lowest id.

use std::time::Duration;

use super::Ctx;
use super::observed::ObservedMember;
use super::quorum;
use super::step::{BlockReason, RemovalReason, ReplaceReason, Step, WaitReason};
use super::upgrade;

/// Rules 1 and 2: bring back members that only need their process (and version) back.
pub(super) fn revive(ctx: &Ctx) -> Option<Step> {
    let o = ctx.observed;
    let mut started: Vec<&ObservedMember> = o.members.iter().filter(|m| m.is_started()).collect();
    started.sort_by_key(|m| m.order_key());

    // Rule 1.
    let guard_ok = o
        .min_version()
        .is_some_and(|current| upgrade::version_change(current, &ctx.target).is_ok());
    if guard_ok {
        let others_at_target = |m: &ObservedMember| {
            o.etcd_members()
                .filter(|other| other.name != m.name)
                .all(|other| other.version().is_none_or(|ver| *ver == ctx.target))
        };
        // It runs a later version than the cluster ever served at: an upgrade that never
        // came up, and spec.version no longer names it. Its data is still readable by
        // what served, so it is rolled over to spec.version whatever the others run.
        let never_served_at = |m: &ObservedMember| {
            o.served_version
                .as_ref()
                .is_some_and(|served| m.version().is_some_and(|ver| ver > served))
                && m.version().is_some_and(|ver| !o.has_served_at(ver))
        };
        let off_and_down = started.iter().find(|m| {
            !m.is_healthy()
                && m.has_data()
                && m.version().is_some_and(|ver| *ver != ctx.target)
                && (others_at_target(m) || never_served_at(m))
        });
        if let Some(m) = off_and_down
            && let Some(id) = m.id()
        {
            return Some(Step::UpgradeMember {
                name: m.name.clone(),
                id,
                to: ctx.target.clone(),
            });
        }
    }

    // Rule 2.
    let quorum = quorum::has_quorum(o);
    started
        .iter()
        .find(|m| m.is_stopped_with_data() && (!is_overdue(ctx, m) || !quorum))
        .map(|m| Step::RestartMember {
            name: m.name.clone(),
        })
}

/// Rules 3 to 6, once no membership change is pending.
pub(super) fn replace(ctx: &Ctx) -> Option<Step> {
    let o = ctx.observed;
    // Rule 3.
    if !quorum::has_quorum(o) {
        return Some(quorum_lost(ctx));
    }
    let mut down: Vec<&ObservedMember> = o.etcd_members().filter(|m| !m.is_healthy()).collect();
    down.sort_by_key(|m| m.order_key());
    // Rule 4.
    if let Some(m) = down.iter().find(|m| m.has_lost_data()) {
        return Some(remove_or_blocked(
            ctx,
            m,
            RemovalReason::Replace(ReplaceReason::DataLost),
        ));
    }
    // Rules 5 and 7: act on the first overdue member; else (rule 6) restart one in place;
    // else wait on the one due soonest.
    let overdue = down
        .iter()
        .find(|m| is_overdue(ctx, m) && !is_mid_upgrade(ctx, m));
    let stalled = down.iter().find(|m| is_overdue(ctx, m));
    if let Some(m) = overdue.or(stalled) {
        return Some(when_overdue(
            ctx,
            m,
            ReplaceReason::Unhealthy { for_: down_for(m) },
        ));
    }
    // Rule 6.
    if let Some(m) = down.iter().find(|m| restarts_in_place(ctx, m)) {
        return Some(leader_off_first(
            ctx,
            m,
            Step::RestartMember {
                name: m.name.clone(),
            },
        ));
    }
    down.iter()
        .min_by_key(|m| remaining(ctx, m))
        .map(|m| wait_for(ctx, m, false))
}

/// Rule 6: down past the grace, its data survives a restart, not an upgrade's member, and
/// not restarted since it went down.
fn restarts_in_place(ctx: &Ctx, m: &ObservedMember) -> bool {
    down_for(m) > ctx.policy.unhealthy_grace
        && m.is_started()
        && m.restart_keeps_data()
        && !m.restarted_since_down()
        && !is_mid_upgrade(ctx, m)
}

/// `step` acts on `m`; when `m` is the leader and still answers (so it can hand leadership
/// over), move leadership to a healthy voter at spec.version first. A leader that does not
/// answer cannot hand it over; etcd elects another once it is really gone. The hand-over is
/// tried while `m` has been down for at most twice the grace, so a leader that keeps
/// refusing it is not spared for ever.
pub(super) fn leader_off_first(ctx: &Ctx, m: &ObservedMember, step: Step) -> Step {
    let o = ctx.observed;
    let (Some(id), Some(leader)) = (m.id(), o.leader_id()) else {
        return step;
    };
    let answers = m.etcd.as_ref().is_some_and(|e| e.raft_index.is_some());
    let still_trying = down_for(m) <= ctx.policy.unhealthy_grace.saturating_mul(2);
    if id != leader || !answers || !still_trying {
        return step;
    }
    let successor = o
        .voters()
        .filter(|v| v.id() != Some(id) && v.is_healthy() && v.version() == Some(&ctx.target))
        .min_by_key(|v| v.order_key());
    match successor.and_then(|to| to.id().map(|to_id| (to, to_id))) {
        Some((to, to_id)) => Step::MoveLeader {
            from: m.name.clone(),
            from_id: id,
            to: to.name.clone(),
            to_id,
        },
        None => step,
    }
}

/// What to do about `m` once it is overdue: replace it, or report a stalled upgrade
/// (rule 5) when it was moved to spec.version.
pub(super) fn when_overdue(ctx: &Ctx, m: &ObservedMember, why: ReplaceReason) -> Step {
    if is_mid_upgrade(ctx, m) {
        return Step::Blocked {
            reason: BlockReason::UpgradeStalled {
                member: m.name.clone(),
            },
        };
    }
    remove_or_blocked(ctx, m, RemovalReason::Replace(why))
}

/// The wait before `m` is overdue; `starting` for a member that never joined.
pub(super) fn wait_for(ctx: &Ctx, m: &ObservedMember, starting: bool) -> Step {
    let name = m.name.clone();
    let remaining = remaining(ctx, m);
    let reason = if is_mid_upgrade(ctx, m) {
        WaitReason::UpgradedMemberStarting { name, remaining }
    } else if starting {
        WaitReason::MemberStarting { name, remaining }
    } else {
        WaitReason::MemberUnhealthy { name, remaining }
    };
    Step::Wait { reason }
}

/// `RemoveMember` (leadership moved off it first), unless the removal would not keep
/// quorum: then `Blocked(QuorumLost)`.
pub(super) fn remove_or_blocked(ctx: &Ctx, m: &ObservedMember, reason: RemovalReason) -> Step {
    match m.id() {
        Some(id) if quorum::removal_keeps_quorum(ctx.observed, id) => leader_off_first(
            ctx,
            m,
            Step::RemoveMember {
                name: m.name.clone(),
                id,
                reason,
            },
        ),
        _ => quorum_lost(ctx),
    }
}

pub(super) fn quorum_lost(ctx: &Ctx) -> Step {
    Step::Blocked {
        reason: BlockReason::QuorumLost {
            healthy: ctx.observed.healthy_voter_count(),
            voters: ctx.observed.voter_count(),
        },
    }
}

/// Moved to spec.version while another member still runs something else: an upgrade (or
/// a rollback) is under way and `m` is the member it touched. Not when spec.version is
/// known to serve ([`super::Observed::has_served_at`]): such a member is restarted and
/// replaced as any other.
pub(super) fn is_mid_upgrade(ctx: &Ctx, m: &ObservedMember) -> bool {
    m.version() == Some(&ctx.target)
        && !ctx.observed.has_served_at(&ctx.target)
        && ctx
            .observed
            .members
            .iter()
            .filter_map(ObservedMember::version)
            .any(|ver| *ver != ctx.target)
}

/// How long `m` may stay unhealthy before it is replaced (or its upgrade reported
/// stalled): a member whose data survives a restart gets the longer replace grace (it is
/// restarted in place after the unhealthy grace, rule 6).
fn patience(ctx: &Ctx, m: &ObservedMember) -> Duration {
    if is_mid_upgrade(ctx, m) {
        ctx.policy.upgrade_health_deadline
    } else if m.is_started() && m.restart_keeps_data() {
        ctx.policy.replace_grace.max(ctx.policy.unhealthy_grace)
    } else {
        ctx.policy.unhealthy_grace
    }
}

/// How long `m` has been down; a member reported unhealthy without a duration has just
/// gone down.
pub(super) fn down_for(m: &ObservedMember) -> Duration {
    m.unhealthy_for.unwrap_or_default()
}

/// Down longer than its patience.
pub(super) fn is_overdue(ctx: &Ctx, m: &ObservedMember) -> bool {
    down_for(m) > patience(ctx, m)
}

/// Until the next thing done about `m`: its restart in place when that is still ahead,
/// else its replacement (or a stalled upgrade).
fn remaining(ctx: &Ctx, m: &ObservedMember) -> Duration {
    let restart_ahead = m.is_started()
        && m.restart_keeps_data()
        && !m.restarted_since_down()
        && !is_mid_upgrade(ctx, m);
    let until = if restart_ahead {
        ctx.policy.unhealthy_grace
    } else {
        patience(ctx, m)
    };
    until.saturating_sub(down_for(m))
}

#[cfg(test)]
mod tests {
    use crate::plan::fixtures::*;
    use crate::plan::{BlockReason, RemovalReason, ReplaceReason, Step, WaitReason, next_step};

    #[test]
    fn a_stalled_member_is_rolled_back_though_the_others_run_mixed_versions() {
        // An upgrade to 3.5.20 was under way (example-2 done, example-0 not yet) when the
        // user moved spec.version to 3.5.21; example-1 was moved there and never came up.
        // spec.version is set back to 3.5.16, the version served. Restarting example-1 at
        // 3.5.21 would fail forever (found by the simulated cluster: BadUpgrade mid-roll).
        let mut o = observed(3)
            .with_version(2, "3.5.20")
            .with_version(1, "3.5.21")
            .with_dead(1)
            .down_for(1, secs(200));
        o.served_version = Some(v("3.5.16"));
        assert_eq!(
            next_step(&spec(3, "3.5.16"), &o, &policy()),
            Step::UpgradeMember {
                name: name(1),
                id: id(1),
                to: v("3.5.16"),
            }
        );
        // A member down at a version the cluster served at is restarted as before.
        let mut served = o
            .clone()
            .with_version(1, "3.5.16")
            .with_version(2, "3.5.16");
        served.served_version = Some(v("3.5.16"));
        assert_eq!(
            next_step(&spec(3, "3.5.16"), &served, &policy()),
            Step::RestartMember { name: name(1) }
        );
    }

    fn plan(o: &crate::plan::Observed) -> Step {
        next_step(&spec(3, VERSION), o, &policy())
    }

    fn replace(ordinal: u32, why: ReplaceReason) -> Step {
        Step::RemoveMember {
            name: name(ordinal),
            id: id(ordinal),
            reason: RemovalReason::Replace(why),
        }
    }

    #[test]
    fn dead_voter_with_data_is_restarted_not_replaced() {
        let o = observed(3).with_dead(1);
        assert_eq!(plan(&o), Step::RestartMember { name: name(1) });
    }

    #[test]
    fn dead_voter_is_restarted_even_without_quorum() {
        let o = observed(3).with_dead(1).with_dead(2).down_for(2, secs(600));
        assert_eq!(plan(&o), Step::RestartMember { name: name(1) });
        let o = observed(3)
            .with_dead(1)
            .down_for(1, secs(600))
            .with_unhealthy(2);
        assert_eq!(
            plan(&o),
            Step::RestartMember { name: name(1) },
            "restart is the way back"
        );
    }

    #[test]
    fn voter_down_past_the_replace_grace_is_replaced() {
        let o = observed(3).with_dead(1).down_for(1, secs(601));
        assert_eq!(
            plan(&o),
            replace(1, ReplaceReason::Unhealthy { for_: secs(601) })
        );
        let o = observed(3).with_unhealthy(2).down_for(2, secs(601));
        assert_eq!(
            plan(&o),
            replace(2, ReplaceReason::Unhealthy { for_: secs(601) })
        );
    }

    #[test]
    fn unhealthy_voter_with_durable_data_is_restarted_in_place_before_it_is_replaced() {
        // Past the grace, never restarted since it went down: restart on its data.
        let o = observed(3).with_unhealthy(2).down_for(2, secs(61));
        assert_eq!(plan(&o), Step::RestartMember { name: name(2) });
        // Restarted 30 s ago, still unhealthy: wait for the replace grace, then replace.
        let mut restarted = o.clone();
        restarted.at(2).runtime.as_mut().unwrap().started_for = Some(secs(30));
        assert_eq!(
            plan(&restarted),
            Step::Wait {
                reason: WaitReason::MemberUnhealthy {
                    name: name(2),
                    remaining: secs(539),
                }
            }
        );
        let late = restarted.down_for(2, secs(601));
        assert_eq!(
            plan(&late),
            replace(2, ReplaceReason::Unhealthy { for_: secs(601) })
        );
        // On storage a restart would wipe (emptyDir): replaced after the grace, as before.
        let mut volatile = observed(3).with_unhealthy(2).down_for(2, secs(61));
        volatile.at(2).runtime.as_mut().unwrap().restart_keeps_data = false;
        assert_eq!(
            plan(&volatile),
            replace(2, ReplaceReason::Unhealthy { for_: secs(61) })
        );
    }

    #[test]
    fn an_unhealthy_leader_hands_leadership_over_before_it_is_restarted() {
        // example-0 leads (fixtures) and still answers its status, but is unhealthy.
        let o = observed(3).with_unhealthy(0).down_for(0, secs(61));
        assert_eq!(
            plan(&o),
            Step::MoveLeader {
                from: name(0),
                from_id: id(0),
                to: name(1),
                to_id: id(1),
            }
        );
        // A leader that does not answer at all cannot hand over: restarted directly.
        let mut silent = o.clone();
        silent.at(0).etcd.as_mut().unwrap().raft_index = None;
        assert_eq!(plan(&silent), Step::RestartMember { name: name(0) });
        // Nor one that kept refusing the hand-over past twice the grace.
        let refusing = o.down_for(0, secs(121));
        assert_eq!(plan(&refusing), Step::RestartMember { name: name(0) });
    }

    #[test]
    fn unhealthy_voter_within_the_grace_is_waited_for() {
        let o = observed(3).with_unhealthy(1).down_for(1, secs(20));
        assert_eq!(
            plan(&o),
            Step::Wait {
                reason: WaitReason::MemberUnhealthy {
                    name: name(1),
                    remaining: secs(40),
                }
            }
        );
    }

    #[test]
    fn voter_without_data_is_replaced_at_once() {
        assert_eq!(
            plan(&observed(3).with_data_lost(2)),
            replace(2, ReplaceReason::DataLost)
        );
        // The leader (example-0) hands leadership over first.
        assert_eq!(
            plan(&observed(3).without_runtime(0)),
            Step::MoveLeader {
                from: name(0),
                from_id: id(0),
                to: name(1),
                to_id: id(1),
            }
        );
        assert_eq!(
            plan(&observed(3).with_leader(1).without_runtime(0)),
            replace(0, ReplaceReason::DataLost)
        );
    }

    #[test]
    fn replacement_is_a_learner_with_a_new_name() {
        // After the removal, the replacement is a learner with a new name.
        let after = {
            let mut o = observed(3);
            o.members.retain(|m| m.name != name(1));
            o
        };
        assert_eq!(
            plan(&after),
            Step::AddLearner {
                name: name(3),
                version: v(VERSION),
            }
        );
    }

    #[test]
    fn quorum_lost_is_blocked_not_guessed() {
        let o = observed(3).with_data_lost(1).with_data_lost(2);
        assert_eq!(
            plan(&o),
            Step::Blocked {
                reason: BlockReason::QuorumLost {
                    healthy: 1,
                    voters: 3,
                }
            }
        );
        let o = observed(3).with_unhealthy(1).with_unhealthy(2);
        assert!(matches!(
            plan(&o),
            Step::Blocked {
                reason: BlockReason::QuorumLost { .. }
            }
        ));
    }

    #[test]
    fn two_member_cluster_cannot_replace_a_member() {
        let o = observed(2).with_data_lost(1);
        assert!(matches!(
            next_step(&spec(2, VERSION), &o, &policy()),
            Step::Blocked {
                reason: BlockReason::QuorumLost {
                    healthy: 1,
                    voters: 2
                }
            }
        ));
    }

    #[test]
    fn data_loss_is_handled_before_an_unhealthy_member_is_waited_for() {
        let o = observed(5).with_unhealthy(1).with_data_lost(3);
        assert_eq!(
            next_step(&spec(5, VERSION), &o, &policy()),
            replace(3, ReplaceReason::DataLost)
        );
    }

    #[test]
    fn upgraded_member_that_stays_unhealthy_stalls_the_upgrade() {
        let s = spec(3, "3.6.0");
        let o = observed(3).with_version(1, "3.6.0").with_unhealthy(1);
        let waiting = next_step(&s, &o.clone().down_for(1, secs(90)), &policy());
        assert_eq!(
            waiting,
            Step::Wait {
                reason: WaitReason::UpgradedMemberStarting {
                    name: name(1),
                    remaining: secs(30),
                }
            }
        );
        let stalled = next_step(&s, &o.down_for(1, secs(121)), &policy());
        assert_eq!(
            stalled,
            Step::Blocked {
                reason: BlockReason::UpgradeStalled { member: name(1) }
            }
        );
    }

    #[test]
    fn stalled_upgrade_resumes_when_the_version_goes_back() {
        let o = observed(3)
            .with_version(1, "3.6.0")
            .with_unhealthy(1)
            .down_for(1, secs(300));
        assert_eq!(
            next_step(&spec(3, VERSION), &o, &policy()),
            Step::UpgradeMember {
                name: name(1),
                id: id(1),
                to: v(VERSION),
            }
        );
    }

    #[test]
    fn last_member_off_the_target_that_died_is_moved_to_it_rather_than_restarted() {
        let o = observed(3)
            .with_version(1, "3.6.0")
            .with_version(2, "3.6.0")
            .with_dead(0);
        assert_eq!(
            next_step(&spec(3, "3.6.0"), &o, &policy()),
            Step::UpgradeMember {
                name: name(0),
                id: id(0),
                to: v("3.6.0"),
            }
        );
    }

    #[test]
    fn dead_member_past_the_grace_is_replaced_even_mid_upgrade() {
        // member 2 still runs the old version: it is not the upgraded one
        let o = observed(3)
            .with_version(1, "3.6.0")
            .with_dead(2)
            .down_for(2, secs(601));
        assert_eq!(
            next_step(&spec(3, "3.6.0"), &o, &policy()),
            replace(2, ReplaceReason::Unhealthy { for_: secs(601) })
        );
    }
}
