//! When no member answered: start a fresh cluster, or bring back members that have data.
//!
//! 1. No runtime member has data. A cluster that formed once (its status recorded a cluster
//!    id) has lost every member: `Blocked(AllMembersLost)`, never a new empty cluster behind
//!    the same name. Otherwise the cluster never started (or a bootstrap crashed before
//!    any member wrote data). Runtime members outside `<cluster>-0 .. <cluster>-<size-1>`
//!    are deleted first; then `Bootstrap` those names. Bootstrap is idempotent, so a crashed
//!    one is simply planned again.
//! 2. Some member has data: the cluster exists. Never bootstrap over it. Restart stopped
//!    members that have data, lowest ordinal first.
//! 3. They all run and none answers: wait up to the grace (they may be starting), then
//!    `Blocked(QuorumLost)`; `voters` is then the number of members with data.

use super::Ctx;
use super::member_loss::down_for;
use super::observed::{MemberName, ObservedMember};
use super::step::{BlockReason, Step, WaitReason};

pub(super) fn plan(ctx: &Ctx) -> Step {
    let o = ctx.observed;
    let mut members: Vec<&ObservedMember> = o.members.iter().collect();
    members.sort_by_key(|m| m.order_key());

    // 1.
    if !members.iter().any(|m| m.has_data()) {
        if o.formed {
            return Step::Blocked {
                reason: BlockReason::AllMembersLost,
            };
        }
        let names: Vec<MemberName> = (0u32..)
            .take(ctx.size)
            .map(|i| MemberName::new(&o.cluster_name, i))
            .collect();
        if let Some(extra) = members
            .iter()
            .find(|m| m.runtime.is_some() && !names.contains(&m.name))
        {
            return Step::DeleteRuntimeMember {
                name: extra.name.clone(),
            };
        }
        return Step::Bootstrap {
            members: names,
            version: ctx.target.clone(),
        };
    }

    // 2.
    if let Some(m) = members
        .iter()
        .find(|m| m.runtime.as_ref().is_some_and(|r| !r.running && r.has_data))
    {
        return Step::RestartMember {
            name: m.name.clone(),
        };
    }

    // 3.
    let with_data: Vec<&&ObservedMember> = members.iter().filter(|m| m.has_data()).collect();
    let freshest = with_data
        .iter()
        .map(|m| down_for(m))
        .min()
        .unwrap_or_default();
    if freshest <= ctx.policy.unhealthy_grace {
        return Step::Wait {
            reason: WaitReason::NoAnswer {
                remaining: ctx.policy.unhealthy_grace.saturating_sub(freshest),
            },
        };
    }
    Step::Blocked {
        reason: BlockReason::QuorumLost {
            healthy: 0,
            voters: with_data.len(),
        },
    }
}

#[cfg(test)]
mod tests {
    use crate::plan::fixtures::*;
    use crate::plan::{BlockReason, Step, WaitReason, next_step};

    fn plan(o: &crate::plan::Observed) -> Step {
        next_step(&spec(3, VERSION), o, &policy())
    }

    #[test]
    fn empty_cluster_bootstraps_every_member_at_once() {
        assert_eq!(
            plan(&empty()),
            Step::Bootstrap {
                members: vec![name(0), name(1), name(2)],
                version: v(VERSION),
            }
        );
    }

    #[test]
    fn a_formed_cluster_that_lost_every_member_is_never_bootstrapped_again() {
        let mut o = empty();
        o.formed = true;
        assert_eq!(
            plan(&o),
            Step::Blocked {
                reason: BlockReason::AllMembersLost
            }
        );
        // Not even with leftover reservations or runtime members without data.
        let mut o = empty().with_reservation(0).with_reservation(7);
        o.formed = true;
        assert_eq!(
            plan(&o),
            Step::Blocked {
                reason: BlockReason::AllMembersLost
            }
        );
    }

    #[test]
    fn crashed_bootstrap_is_planned_again() {
        let o = empty().with_reservation(0).with_reservation(1);
        assert!(matches!(plan(&o), Step::Bootstrap { .. }));
    }

    #[test]
    fn runtime_members_outside_the_bootstrap_set_are_deleted_first() {
        let o = empty().with_reservation(0).with_reservation(7);
        assert_eq!(plan(&o), Step::DeleteRuntimeMember { name: name(7) });
    }

    #[test]
    fn cluster_with_data_is_never_bootstrapped_again() {
        let o = observed(3)
            .with_dead(0)
            .with_dead(1)
            .with_dead(2)
            .without_etcd();
        assert_eq!(plan(&o), Step::RestartMember { name: name(0) });
    }

    #[test]
    fn silent_running_members_are_waited_for_then_blocked() {
        let o = observed(3).without_etcd();
        assert!(matches!(
            plan(&o),
            Step::Wait {
                reason: WaitReason::NoAnswer { .. }
            }
        ));
        let o = o
            .down_for(0, secs(61))
            .down_for(1, secs(61))
            .down_for(2, secs(61));
        assert_eq!(
            plan(&o),
            Step::Blocked {
                reason: BlockReason::QuorumLost {
                    healthy: 0,
                    voters: 3,
                }
            }
        );
    }
}
