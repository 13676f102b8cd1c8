//! The arithmetic the planner decides by: how many voters commit, whether a removal keeps a
//! quorum, whether a learner has caught up, whether every member is healthy.
//!
//! # Quorum math
//! A cluster of `v` voters needs `quorum(v) = v/2 + 1` of them to commit anything,
//! including a membership change. "Healthy" is [`ObservedMember::is_healthy`], which never
//! overstates what serves. Removing member `x`:
//! - a learner leaves the voters alone: it only needs quorum now, to commit;
//! - a healthy voter: `h - 1 >= quorum(v - 1)` (this implies quorum now, as
//!   `quorum(v) <= quorum(v - 1) + 1`);
//! - an unhealthy voter: `h >= quorum(v - 1)`, implied by quorum now (`h >= quorum(v)`) since
//!   `quorum(v - 1) <= quorum(v)`: removing an unhealthy voter can only raise the healthy
//!   fraction. It still needs quorum now to commit.
//!
//! So [`removal_keeps_quorum`] asks both "quorum now" and "quorum after". Adding a learner
//! needs quorum now; promoting a healthy learner turns `(h, v)` into `(h + 1, v + 1)`, and
//! `h + 1 >= quorum(v + 1)` follows from `h >= quorum(v)`.

use super::observed::{Observed, ObservedMember};
use crate::etcd::MemberId;

/// Voters needed to commit in a cluster of `voters` voters.
pub fn quorum(voters: usize) -> usize {
    voters / 2 + 1
}

/// Whether enough voters are healthy to commit now.
pub fn has_quorum(observed: &Observed) -> bool {
    observed.healthy_voter_count() >= quorum(observed.voter_count())
}

/// Whether removing `id` commits (quorum now) and leaves a quorum of healthy voters among
/// the voters that remain (see the module docs for the math). Never true for the last voter.
pub fn removal_keeps_quorum(observed: &Observed, id: MemberId) -> bool {
    let Some(member) = observed.member_by_id(id) else {
        return false;
    };
    if !has_quorum(observed) {
        return false;
    }
    let voters = observed.voter_count();
    let healthy = observed.healthy_voter_count();
    let (voters, healthy) = if member.is_voter() {
        (
            voters.saturating_sub(1),
            healthy.saturating_sub(usize::from(member.is_healthy())),
        )
    } else {
        (voters, healthy)
    };
    voters > 0 && healthy >= quorum(voters)
}

/// Whether a learner at `raft_index` is close enough to the leader to promote: within 90% of
/// its index, as etcd itself checks before a promotion.
pub fn is_caught_up(raft_index: Option<u64>, leader_raft_index: u64) -> bool {
    raft_index.is_some_and(|i| u128::from(i) * 10 >= u128::from(leader_raft_index) * 9)
}

/// Every member, runtime and etcd, is healthy, and each runtime member is in etcd.
pub fn all_healthy(observed: &Observed) -> bool {
    observed.members.iter().all(ObservedMember::is_healthy)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::fixtures::*;

    #[test]
    fn quorum_is_a_strict_majority() {
        let table = [(0, 1), (1, 1), (2, 2), (3, 2), (4, 3), (5, 3), (9, 5)];
        for (voters, q) in table {
            assert_eq!(quorum(voters), q, "{voters}");
        }
    }

    #[test]
    fn removal_keeps_quorum_table() {
        // (observation, removed ordinal, allowed)
        let table = [
            (observed(3), 2, true),                                 // 2 of 2 remain
            (observed(3).with_dead(0), 2, false),                   // 1 of 2 remain healthy
            (observed(3).with_dead(0), 0, true),                    // unhealthy: 2 of 2 remain
            (observed(3).with_dead(0).with_dead(1), 0, false),      // no quorum now to commit
            (observed(4).with_dead(0).with_dead(1), 0, false),      // 2 of 4: no quorum now
            (observed(2), 1, true),                                 // 1 of 1 remains
            (observed(2).with_dead(0), 0, false),                   // 1 of 2: no quorum now
            (observed(1), 0, false),                                // never the last voter
            (observed(3).with_learner(3, 0), 3, true),              // learner: voters unchanged
            (observed(3).with_dead(0).with_learner(3, 0), 3, true), // still 2 of 3
        ];
        for (i, (o, ordinal, want)) in table.into_iter().enumerate() {
            assert_eq!(removal_keeps_quorum(&o, id(ordinal)), want, "case {i}");
        }
        assert!(!removal_keeps_quorum(&observed(3), MemberId(0xdead)));
    }

    #[test]
    fn caught_up_means_ninety_percent_of_the_leader_index() {
        assert!(is_caught_up(Some(90), 100));
        assert!(!is_caught_up(Some(89), 100));
        assert!(!is_caught_up(None, 0));
        assert!(is_caught_up(Some(0), 0));
        assert!(is_caught_up(Some(u64::MAX), u64::MAX));
    }
}
