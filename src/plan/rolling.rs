//! Restarting members one at a time, the way upgrades and CA rotation phases do: followers
//! first (lowest ordinal, then lowest id), the leader last after `MoveLeader` to a healthy
//! follower already done (a one-member cluster has nowhere to move it and is restarted in
//! place). Runs only where the planner got past every concern before it: every member
//! healthy, membership stable; the next pass waits for the restarted member's health.

use super::Ctx;
use super::observed::ObservedMember;
use super::step::{Step, WaitReason};
use crate::etcd::MemberId;

/// The next step of a roll over the etcd members `pending` says are not done yet, each
/// restarted by `restart`; `None` when none is pending.
pub(super) fn next(
    ctx: &Ctx,
    pending: impl Fn(&ObservedMember) -> bool,
    restart: impl Fn(&ObservedMember, MemberId) -> Step,
) -> Option<Step> {
    let o = ctx.observed;
    let mut off: Vec<&ObservedMember> = o.etcd_members().filter(|m| pending(m)).collect();
    off.sort_by_key(|m| m.order_key());
    let first = *off.first()?;
    let Some(leader) = o.leader_id() else {
        return Some(Step::Wait {
            reason: WaitReason::NoLeader,
        });
    };
    let step = |m: &ObservedMember| m.id().map(|id| restart(m, id));
    if let Some(follower) = off.iter().find(|m| m.id() != Some(leader)) {
        return step(follower);
    }
    // Only the leader is left.
    let successor = o
        .voters()
        .filter(|m| m.id() != Some(leader) && m.is_healthy() && !pending(m))
        .min_by_key(|m| m.order_key());
    match successor {
        Some(to) => to.id().map(|to_id| Step::MoveLeader {
            from: first.name.clone(),
            from_id: leader,
            to: to.name.clone(),
            to_id,
        }),
        None if o.voter_count() == 1 => step(first),
        None => Some(Step::Wait {
            reason: WaitReason::NoLeader,
        }),
    }
}

/// A CA rotation phase: restart each TLS member started on other certificates than the
/// installed ones ([`ObservedMember::runs_stale_trust`]) with its data, id and version.
pub(super) fn reload_trust(ctx: &Ctx) -> Option<Step> {
    let installed = ctx.observed.trust_stamp.as_deref();
    next(
        ctx,
        |m| m.runs_stale_trust(installed),
        |m, id| Step::ReloadTrust {
            name: m.name.clone(),
            id,
        },
    )
}

#[cfg(test)]
mod tests {
    use crate::plan::fixtures::*;
    use crate::plan::invariants::broken_rules;
    use crate::plan::{Observed, Step, WaitReason, next_step};

    /// `n` TLS voters led by member 0; `stale` started on certificates replaced since.
    fn tls(n: u32, stale: &[u32]) -> Observed {
        let mut o = observed(n);
        o.trust_stamp = Some("new".into());
        for ordinal in 0..n {
            let m = o.at(ordinal);
            let r = m.runtime.as_mut().unwrap();
            r.peer_url = r.peer_url.replace("http://", "https://");
            m.etcd.as_mut().unwrap().peer_urls = vec![r.peer_url.clone()];
            let stamp = if stale.contains(&ordinal) {
                "old"
            } else {
                "new"
            };
            r.trust_stamp = Some(stamp.into());
        }
        o
    }

    fn plan(o: &Observed) -> Step {
        let s = spec(3, VERSION);
        let step = next_step(&s, o, &policy());
        assert_eq!(broken_rules(&step, &s, o), [], "{step}");
        step
    }

    fn reload(ordinal: u32) -> Step {
        Step::ReloadTrust {
            name: name(ordinal),
            id: id(ordinal),
        }
    }

    #[test]
    fn members_on_replaced_certificates_restart_followers_first_leader_last() {
        assert_eq!(plan(&tls(3, &[0, 1, 2])), reload(1));
        assert_eq!(plan(&tls(3, &[0, 2])), reload(2));
        // Only the leader left: leadership moves to a follower already current first.
        assert_eq!(
            plan(&tls(3, &[0])),
            Step::MoveLeader {
                from: name(0),
                from_id: id(0),
                to: name(1),
                to_id: id(1),
            }
        );
        assert_eq!(plan(&tls(3, &[0]).with_leader(1)), reload(0));
        assert_eq!(plan(&tls(3, &[])), Step::Done);
    }

    #[test]
    fn no_restart_while_a_member_is_unhealthy_or_a_change_is_pending() {
        let step = plan(&tls(3, &[1, 2]).with_unhealthy(2));
        assert!(!matches!(step, Step::ReloadTrust { .. }), "{step}");
        let step = plan(&tls(3, &[1, 2]).with_learner(3, LEADER_RAFT_INDEX));
        assert!(!matches!(step, Step::ReloadTrust { .. }), "{step}");
        let step = plan(&tls(3, &[1]).without_leader());
        assert!(
            matches!(
                step,
                Step::Wait {
                    reason: WaitReason::NoLeader
                }
            ),
            "{step}"
        );
    }

    #[test]
    fn a_member_without_a_recorded_stamp_is_restarted_once_and_plaintext_never_reloaded() {
        let mut o = tls(3, &[]);
        o.at(2).runtime.as_mut().unwrap().trust_stamp = None;
        assert_eq!(plan(&o), reload(2));
        // Plaintext members have no certificates to reload: they are moved to TLS instead.
        let mut o = observed(3);
        o.trust_stamp = Some("new".into());
        assert!(
            matches!(plan(&o), Step::MoveTransport { .. }),
            "{}",
            plan(&o)
        );
        // A member on an emptyDir would come back empty: never restarted for this.
        let mut o = tls(3, &[2]);
        o.at(2).runtime.as_mut().unwrap().restart_keeps_data = false;
        assert_eq!(plan(&o), Step::Done);
        // No certificates installed: nothing to compare with.
        let mut o = tls(3, &[1]);
        o.trust_stamp = None;
        assert_eq!(plan(&o), Step::Done);
    }

    #[test]
    fn a_one_member_cluster_restarts_its_leader_in_place() {
        let o = tls(1, &[0]);
        let s = spec(1, VERSION);
        let step = next_step(&s, &o, &policy());
        assert_eq!(broken_rules(&step, &s, &o), []);
        assert_eq!(step, reload(0));
    }
}
