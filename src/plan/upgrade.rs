//! Rolling members to spec.version: the version guard, then one member at a time.
//!
//! - [`guard`]: the cluster's version is the lowest any member runs; moving it more than one
//!   minor up is `Blocked(VersionSkip)`, any minor down `Blocked(MinorDowngrade)`. Patch
//!   changes either way are fine.
//! - [`roll`]: runs only when every member is healthy and membership is stable (nothing
//!   pending, spec.size voters). Followers first, lowest ordinal then lowest id; the leader
//!   last, after `MoveLeader` to a healthy follower already at spec.version (a one-member
//!   cluster has nowhere to move it and is upgraded in place). `UpgradeMember` restarts the
//!   member with its data at the new version; the next pass waits for it to be healthy
//!   ([`super::member_loss`] rule 5 reports it stalled after `upgrade_health_deadline`).

use super::Ctx;
use semver::Version;

use super::step::BlockReason;
use super::step::Step;

pub(super) fn guard(ctx: &Ctx) -> Option<Step> {
    let current = ctx.observed.min_version()?;
    version_change(current, &ctx.target)
        .err()
        .map(|reason| Step::Blocked { reason })
}

pub(super) fn roll(ctx: &Ctx) -> Option<Step> {
    super::rolling::next(
        ctx,
        |m| m.version() != Some(&ctx.target),
        |m, id| Step::UpgradeMember {
            name: m.name.clone(),
            id,
            to: ctx.target.clone(),
        },
    )
}

/// Whether a cluster whose lowest member version is `current` may move to `target`: at most
/// one minor up, never a minor down; patch changes either way are fine.
pub fn version_change(current: &Version, target: &Version) -> Result<(), BlockReason> {
    let skip = || BlockReason::VersionSkip {
        from: current.clone(),
        to: target.clone(),
    };
    let down = || BlockReason::MinorDowngrade {
        from: current.clone(),
        to: target.clone(),
    };
    match target.major.cmp(&current.major) {
        std::cmp::Ordering::Greater => Err(skip()),
        std::cmp::Ordering::Less => Err(down()),
        std::cmp::Ordering::Equal if target.minor > current.minor.saturating_add(1) => Err(skip()),
        std::cmp::Ordering::Equal if target.minor < current.minor => Err(down()),
        std::cmp::Ordering::Equal => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::version_change;
    use crate::plan::fixtures::*;
    use crate::plan::{BlockReason, Step, next_step};

    fn plan(version: &str, o: &crate::plan::Observed) -> Step {
        next_step(&spec(3, version), o, &policy())
    }

    fn upgrade(ordinal: u32, to: &str) -> Step {
        Step::UpgradeMember {
            name: name(ordinal),
            id: id(ordinal),
            to: v(to),
        }
    }

    #[test]
    fn three_four_to_three_six_is_refused() {
        assert_eq!(
            plan("3.6.0", &observed(3).all_at("3.4.23")),
            Step::Blocked {
                reason: BlockReason::VersionSkip {
                    from: v("3.4.23"),
                    to: v("3.6.0"),
                }
            }
        );
    }

    #[test]
    fn minor_downgrade_is_refused() {
        assert_eq!(
            plan("3.4.23", &observed(3)),
            Step::Blocked {
                reason: BlockReason::MinorDowngrade {
                    from: v(VERSION),
                    to: v("3.4.23"),
                }
            }
        );
    }

    #[test]
    fn skip_is_judged_from_the_lowest_member_version() {
        let o = observed(3).all_at("3.5.16").with_version(2, "3.4.23");
        assert!(matches!(
            plan("3.6.0", &o),
            Step::Blocked {
                reason: BlockReason::VersionSkip { .. }
            }
        ));
    }

    #[test]
    fn patch_downgrade_is_allowed() {
        assert_eq!(
            plan("3.5.9", &observed(3).with_leader(2)),
            upgrade(0, "3.5.9")
        );
    }

    #[test]
    fn followers_are_upgraded_first_in_ordinal_order() {
        let o = observed(3).with_leader(0);
        assert_eq!(plan("3.6.0", &o), upgrade(1, "3.6.0"));
        let o = o.with_version(1, "3.6.0");
        assert_eq!(plan("3.6.0", &o), upgrade(2, "3.6.0"));
    }

    #[test]
    fn leader_is_upgraded_last_after_moving_leadership() {
        let o = observed(3)
            .with_leader(0)
            .with_version(1, "3.6.0")
            .with_version(2, "3.6.0");
        assert_eq!(
            plan("3.6.0", &o),
            Step::MoveLeader {
                from: name(0),
                from_id: id(0),
                to: name(1),
                to_id: id(1),
            }
        );
        let moved = o.with_leader(1);
        assert_eq!(plan("3.6.0", &moved), upgrade(0, "3.6.0"));
    }

    #[test]
    fn single_member_is_upgraded_in_place() {
        assert_eq!(
            next_step(&spec(1, "3.6.0"), &observed(1), &policy()),
            upgrade(0, "3.6.0")
        );
    }

    #[test]
    fn upgrade_waits_for_every_member_to_be_healthy() {
        let o = observed(3).with_unhealthy(2);
        assert!(matches!(plan("3.6.0", &o), Step::Wait { .. }));
    }

    #[test]
    fn upgrade_waits_for_membership_to_settle() {
        let s = spec(3, "3.6.0");
        let o = observed(3).with_learner(3, 0);
        assert!(matches!(
            next_step(&s, &o, &policy()),
            Step::RemoveMember { .. }
        ));
        let s = spec(4, "3.6.0");
        assert!(matches!(next_step(&s, &o, &policy()), Step::Wait { .. }));
    }

    #[test]
    fn upgraded_cluster_is_done() {
        assert_eq!(plan("3.6.0", &observed(3).all_at("3.6.0")), Step::Done);
    }

    #[test]
    fn a_member_that_served_at_the_new_version_is_restarted_not_reported_stalled() {
        // Mid-upgrade to 3.5.20: example-1 serves there (recorded), the others run 3.5.16.
        // Its process stopped while the operator was away for 200 s, past the upgrade
        // deadline. It came up at 3.5.20 once: a restart, not a stalled upgrade.
        let o = observed(3)
            .with_leader(0)
            .with_version(1, "3.5.20")
            .served_at(1, "3.5.20")
            .with_dead(1)
            .down_for(1, secs(200));
        let plan = |o: &crate::plan::Observed| next_step(&spec(3, "3.5.20"), o, &policy());
        assert_eq!(plan(&o), Step::RestartMember { name: name(1) });
        // Running but unhealthy that long: restarted in place, as any member with its data.
        let mut hung = o.clone();
        if let Some(r) = hung.at(1).runtime.as_mut() {
            r.running = true;
            r.started_for = Some(secs(3600));
        }
        assert_eq!(plan(&hung), Step::RestartMember { name: name(1) });
        // Without the record (or with one of an earlier version) it is a stalled upgrade.
        for record in [None, Some(v("3.5.16"))] {
            let mut unrecorded = o.clone();
            unrecorded.at(1).served_at = record;
            assert_eq!(
                plan(&unrecorded),
                Step::Blocked {
                    reason: BlockReason::UpgradeStalled { member: name(1) }
                }
            );
        }
    }

    #[test]
    fn a_member_rolled_back_to_the_version_served_is_restarted_not_reported_stalled() {
        // An upgrade to 3.5.20 (example-2 there), then to a release that never came up;
        // the user set spec.version back to 3.5.16, the version the cluster served at, and
        // example-1 was rolled back to it. Its host then failed for a while: it is down
        // past the upgrade deadline at a version known to serve, so it is restarted (found
        // by the simulated cluster: BadUpgrade mid-roll, then Break).
        let mut o = observed(3)
            .with_version(2, "3.5.20")
            .with_dead(1)
            .down_for(1, secs(200));
        o.served_version = Some(v("3.5.16"));
        assert_eq!(plan("3.5.16", &o), Step::RestartMember { name: name(1) });
        // Without a served version recorded it may be an upgrade that never came up.
        o.served_version = None;
        assert_eq!(
            plan("3.5.16", &o),
            Step::Blocked {
                reason: BlockReason::UpgradeStalled { member: name(1) }
            }
        );
    }

    #[test]
    fn version_change_table() {
        let ok = [
            ("3.5.16", "3.5.16"),
            ("3.5.16", "3.5.2"),
            ("3.5.16", "3.6.0"),
            ("3.4.23", "3.5.0"),
        ];
        for (from, to) in ok {
            assert_eq!(version_change(&v(from), &v(to)), Ok(()), "{from} -> {to}");
        }
        assert!(matches!(
            version_change(&v("3.4.23"), &v("3.6.0")),
            Err(BlockReason::VersionSkip { .. })
        ));
        assert!(matches!(
            version_change(&v("3.5.16"), &v("3.4.23")),
            Err(BlockReason::MinorDowngrade { .. })
        ));
        assert!(matches!(
            version_change(&v("3.6.0"), &v("4.0.0")),
            Err(BlockReason::VersionSkip { .. })
        ));
        assert!(matches!(
            version_change(&v("3.6.0"), &v("2.9.0")),
            Err(BlockReason::MinorDowngrade { .. })
        ));
    }
}
