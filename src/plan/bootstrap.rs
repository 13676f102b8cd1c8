//! When no member answered: start a fresh cluster, or bring back members that have data.
//!
//! 1. No runtime member has data. A cluster that formed once (its status recorded a cluster
//!    id) has lost every member: `Blocked(AllMembersLost)`, never a new empty cluster behind
//!    the same name. Otherwise the cluster never started (or a bootstrap crashed before
//!    any member wrote data). Runtime members outside `<cluster>-0 .. <cluster>-<size-1>`
//!    are deleted first; then `Bootstrap` those names. Bootstrap is idempotent, so a crashed
//!    one is simply planned again.
//! 2. Some member has data but the cluster never formed and members of the bootstrap set
//!    were never created: a bootstrap interrupted after its first members (an API error, a
//!    quota, a lost Lease). `Bootstrap` again: it creates the missing members with the same
//!    initial cluster and token and leaves the existing ones alone, until the first quorum
//!    forms (issue 9, item 6).
//! 3. spec.version was set back to the version the cluster last served at (status
//!    `currentVersion`), or a later patch of it, and a member with data runs a later one:
//!    `RollBackMember` it. An
//!    upgrade of a lone member that never came up leaves no member to answer, so this is
//!    how rollback by spec works for size 1 (issue 9, item 10).
//! 4. A member moved to spec.version, which the cluster never served at, or to any later
//!    version than the cluster served at, down past the upgrade deadline: an upgrade that
//!    did not come up, `Blocked(UpgradeStalled)` (which
//!    says to set the version back). A member at a version some member's status records
//!    serving at is none of these: that version came up, and it is restarted as any other. Otherwise some member has data: the cluster exists.
//!    Never bootstrap over it. Restart stopped members that have data, lowest ordinal first,
//!    those an upgrade did not move to spec.version first.
//! 5. They all run and none answers: wait (up to the upgrade deadline for a member an
//!    upgrade moved, else up to the grace: they may be starting), then
//!    `Blocked(QuorumLost)`; `voters` is then the number of members with data.

use super::Ctx;
use super::member_loss::down_for;
use super::observed::{MemberName, ObservedMember};
use super::step::{BlockReason, Step, WaitReason};

pub(super) fn plan(ctx: &Ctx) -> Step {
    let o = ctx.observed;
    let mut members: Vec<&ObservedMember> = o.members.iter().collect();
    members.sort_by_key(|m| m.order_key());

    let names: Vec<MemberName> = (0u32..)
        .take(ctx.size)
        .map(|i| MemberName::new(&o.cluster_name, i))
        .collect();
    let bootstrap = || Step::Bootstrap {
        members: names.clone(),
        version: ctx.target.clone(),
    };

    // 1.
    if !members.iter().any(|m| m.has_data()) {
        if o.formed() {
            return Step::Blocked {
                reason: BlockReason::AllMembersLost,
            };
        }
        if let Some(extra) = members
            .iter()
            .find(|m| m.runtime.is_some() && !names.contains(&m.name))
        {
            return Step::DeleteRuntimeMember {
                name: extra.name.clone(),
            };
        }
        return bootstrap();
    }

    // 2.
    if resumes_bootstrap(ctx, &names) {
        return bootstrap();
    }

    // 3.
    if let Some(m) = members.iter().find(|m| rolls_back(ctx, m)) {
        return Step::RollBackMember {
            name: m.name.clone(),
            to: ctx.target.clone(),
        };
    }

    // 4.
    if let Some(m) = members.iter().find(|m| {
        m.has_data()
            && (moved_off_served(ctx, m) || runs_later_than_served(ctx, m))
            && at_version_down_for(m) > ctx.policy.upgrade_health_deadline
    }) {
        return Step::Blocked {
            reason: BlockReason::UpgradeStalled {
                member: m.name.clone(),
            },
        };
    }
    // Members off the upgrade's target first: one stuck at an upgrade that does not come
    // up must not keep the others from being restarted.
    let stopped =
        |m: &&&ObservedMember| m.runtime.as_ref().is_some_and(|r| !r.running && r.has_data);
    let suspect = |m: &&&ObservedMember| moved_off_served(ctx, m);
    if let Some(m) = members
        .iter()
        .filter(stopped)
        .find(|m| !suspect(m))
        .or_else(|| members.iter().find(stopped))
    {
        return Step::RestartMember {
            name: m.name.clone(),
        };
    }

    // 5.
    let with_data: Vec<&&ObservedMember> = members.iter().filter(|m| m.has_data()).collect();
    if let Some(m) = with_data.iter().find(|m| moved_off_served(ctx, m)) {
        return Step::Wait {
            reason: WaitReason::UpgradedMemberStarting {
                name: m.name.clone(),
                remaining: ctx
                    .policy
                    .upgrade_health_deadline
                    .saturating_sub(down_for(m)),
            },
        };
    }
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

/// Rule 3: spec.version is the version the cluster last served at, and `m` (with its data)
/// runs a later one: it was moved there by an upgrade that never served (the cluster
/// version stays at the lowest member's until every member runs the new one, so its data
/// is still readable by the old version).
///
/// Also when spec.version is a later patch of the served minor than the version served (what
/// the other members run, mid-upgrade): the member's data is still readable there.
fn rolls_back(ctx: &Ctx, m: &ObservedMember) -> bool {
    let t = &ctx.target;
    ctx.observed
        .served_version
        .as_ref()
        .is_some_and(|s| s.major == t.major && s.minor == t.minor && s <= t)
        && m.has_data()
        && m.version().is_some_and(|v| *v > ctx.target)
}

/// Rule 5: `m` runs spec.version, which the cluster never served at: an upgrade moved it.
/// Not when a member's record says it served there (the cluster's version is the lowest
/// any member served at, so mid-upgrade it predates the roll).
fn moved_off_served(ctx: &Ctx, m: &ObservedMember) -> bool {
    ctx.observed
        .served_version
        .as_ref()
        .is_some_and(|served| *served != ctx.target)
        && m.version() == Some(&ctx.target)
        && !ctx.observed.has_served_at(&ctx.target)
}

/// Rule 4: how long `m` has been down at the version it runs now: a member started again
/// (rolled back, restarted) a moment ago has not had its chance yet, however long it was
/// down before (it may only wait for the others to come back).
fn at_version_down_for(m: &ObservedMember) -> std::time::Duration {
    let down = down_for(m);
    m.runtime
        .as_ref()
        .and_then(|r| r.started_for)
        .map_or(down, |started| started.min(down))
}

/// Rule 4: `m` runs a later version than the cluster ever served at, one spec.version no
/// longer names (the user moved the spec elsewhere before the upgrade came up): still an
/// upgrade that never came up, never restarted in place forever.
fn runs_later_than_served(ctx: &Ctx, m: &ObservedMember) -> bool {
    ctx.observed
        .served_version
        .as_ref()
        .is_some_and(|served| m.version().is_some_and(|v| v > served))
        && m.version().is_some_and(|v| !ctx.observed.has_served_at(v))
}

/// Rule 2: the cluster never formed (no id recorded), so no member has served a write, and
/// some member of the bootstrap set was never created (or only reserved): the bootstrap was
/// interrupted after its first members. Members outside the set with data mean another
/// bootstrap (of another size): then nothing is resumed.
fn resumes_bootstrap(ctx: &Ctx, names: &[MemberName]) -> bool {
    let o = ctx.observed;
    let missing = names.iter().any(|n| {
        o.member(n)
            .is_none_or(|m| m.runtime.as_ref().is_none_or(|r| !r.running && !r.has_data))
    });
    let foreign_data = o
        .members
        .iter()
        .any(|m| m.has_data() && !names.contains(&m.name));
    !o.formed() && missing && !foreign_data
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
        o.recorded_cluster_id = Some(crate::etcd::ClusterId(0xc1));
        assert_eq!(
            plan(&o),
            Step::Blocked {
                reason: BlockReason::AllMembersLost
            }
        );
        // Not even with leftover reservations or runtime members without data.
        let mut o = empty().with_reservation(0).with_reservation(7);
        o.recorded_cluster_id = Some(crate::etcd::ClusterId(0xc1));
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
    fn a_bootstrap_interrupted_after_its_first_member_is_resumed() {
        // Pod 0 was created and runs (alone it never answers); creating pod 1 failed.
        let o = empty().with_running_silent(0);
        assert_eq!(
            plan(&o),
            Step::Bootstrap {
                members: vec![name(0), name(1), name(2)],
                version: v(VERSION),
            }
        );
        // Same with member 1 only reserved.
        assert!(matches!(
            plan(&o.clone().with_reservation(1)),
            Step::Bootstrap { .. }
        ));
        // A formed cluster is never bootstrapped again, even partly.
        let mut formed = o.clone();
        formed.recorded_cluster_id = Some(crate::etcd::ClusterId(0xc1));
        assert!(
            matches!(
                plan(&formed),
                Step::Wait {
                    reason: WaitReason::NoAnswer { .. }
                }
            ),
            "{}",
            plan(&formed)
        );
        // Every member of the set exists: wait for them to form the quorum.
        let all = empty()
            .with_running_silent(0)
            .with_running_silent(1)
            .with_running_silent(2);
        assert!(matches!(
            plan(&all),
            Step::Wait {
                reason: WaitReason::NoAnswer { .. }
            }
        ));
        // Data outside the set is another bootstrap's: nothing is resumed over it.
        let other = empty().with_running_silent(0).with_running_silent(4);
        assert!(!matches!(plan(&other), Step::Bootstrap { .. }));
    }

    #[test]
    fn a_lone_member_whose_upgrade_never_came_up_stalls_and_rolls_back_by_spec() {
        // Served at 3.4.23; moved to 3.5.16, which never answers (crash loop).
        let silent = |spec_version: &str| {
            let mut o = empty()
                .with_running_silent(0)
                .with_version(0, "3.5.16")
                .down_for(0, secs(30));
            o.recorded_cluster_id = Some(crate::etcd::ClusterId(0xc1));
            o.served_version = Some(v("3.4.23"));
            next_step(&spec(1, spec_version), &o, &policy())
        };
        assert_eq!(
            silent("3.5.16"),
            Step::Wait {
                reason: WaitReason::UpgradedMemberStarting {
                    name: name(0),
                    remaining: secs(90),
                }
            }
        );
        let mut late = empty()
            .with_running_silent(0)
            .with_version(0, "3.5.16")
            .down_for(0, secs(121));
        late.recorded_cluster_id = Some(crate::etcd::ClusterId(0xc1));
        late.served_version = Some(v("3.4.23"));
        assert_eq!(
            next_step(&spec(1, "3.5.16"), &late, &policy()),
            Step::Blocked {
                reason: BlockReason::UpgradeStalled { member: name(0) }
            }
        );
        // spec.version set back: run it at the version it served at, with its data.
        assert_eq!(
            silent("3.4.23"),
            Step::RollBackMember {
                name: name(0),
                to: v("3.4.23"),
            }
        );
        // A later patch of the served minor will do too (what the others run).
        let mut patched = late.clone();
        if let Some(r) = patched.members[0].runtime.as_mut() {
            r.version = v("3.5.0");
        }
        assert_eq!(
            next_step(&spec(1, "3.4.25"), &patched, &policy()),
            Step::RollBackMember {
                name: name(0),
                to: v("3.4.25"),
            }
        );
        // Never further back than what served, and not when the new version had served.
        assert!(!matches!(silent("3.4.20"), Step::RollBackMember { .. }));
        let mut served_new = late.clone();
        served_new.served_version = Some(v("3.5.16"));
        assert!(!matches!(
            next_step(&spec(1, "3.4.23"), &served_new, &policy()),
            Step::RollBackMember { .. }
        ));
    }

    #[test]
    fn a_lone_member_stuck_at_a_version_the_spec_moved_off_is_reported_stalled() {
        // Served at 3.5.16; moved to 3.5.21, which never comes up; the user then set
        // spec.version to 3.5.9. Restarting it at 3.5.21 forever helps nobody: it is a
        // stalled upgrade, and setting the version back to 3.5.16 rolls it back. (Found by
        // the simulated cluster: BadUpgrade then Patch.)
        let mut o = empty()
            .with_running_silent(0)
            .with_version(0, "3.5.21")
            .down_for(0, secs(121));
        if let Some(r) = o.members[0].runtime.as_mut() {
            r.running = false;
        }
        o.recorded_cluster_id = Some(crate::etcd::ClusterId(0xc1));
        o.served_version = Some(v("3.5.16"));
        assert_eq!(
            next_step(&spec(1, "3.5.9"), &o, &policy()),
            Step::Blocked {
                reason: BlockReason::UpgradeStalled { member: name(0) }
            }
        );
        assert_eq!(
            next_step(&spec(1, "3.5.16"), &o, &policy()),
            Step::RollBackMember {
                name: name(0),
                to: v("3.5.16"),
            }
        );
        // Within the deadline it is restarted as before.
        let fresh = o.clone().down_for(0, secs(30));
        assert_eq!(
            next_step(&spec(1, "3.5.9"), &fresh, &policy()),
            Step::RestartMember { name: name(0) }
        );
    }

    #[test]
    fn a_member_just_started_at_the_target_is_not_stalled_while_the_others_are_down() {
        // example-0 was rolled back to 3.5.20 (what example-1 runs) 10 s ago after 300 s
        // down at a release that never came up; example-1 is stopped. No member answers.
        // Reporting example-0 stalled again would block forever; restart example-1 (found
        // by the simulated cluster: BadUpgrade, rollback, then a stopped peer).
        let mut o = empty()
            .with_running_silent(0)
            .with_version(0, "3.5.20")
            .down_for(0, secs(300))
            .with_running_silent(1)
            .with_version(1, "3.5.20")
            .down_for(1, secs(30));
        if let Some(r) = o.members[0].runtime.as_mut() {
            r.started_for = Some(secs(10));
        }
        if let Some(r) = o.members[1].runtime.as_mut() {
            r.running = false;
            r.started_for = None;
        }
        o.recorded_cluster_id = Some(crate::etcd::ClusterId(0xc1));
        o.served_version = Some(v("3.5.16"));
        assert_eq!(
            next_step(&spec(2, "3.5.20"), &o, &policy()),
            Step::RestartMember { name: name(1) }
        );
        // Both stopped: the one at a version the cluster served is restarted first, not
        // the one an upgrade moved (which may never come up).
        if let Some(r) = o.members[0].runtime.as_mut() {
            r.running = false;
            r.started_for = None;
        }
        let both = o.clone().down_for(0, secs(30));
        assert_eq!(
            next_step(
                &spec(2, "3.5.20"),
                &both.clone().with_version(1, "3.5.16"),
                &policy()
            ),
            Step::RestartMember { name: name(1) }
        );
        if let Some(r) = o.members[0].runtime.as_mut() {
            r.running = true;
        }
        // Still down 130 s after its start at the target: stalled.
        if let Some(r) = o.members[0].runtime.as_mut() {
            r.started_for = Some(secs(130));
        }
        assert_eq!(
            next_step(&spec(2, "3.5.20"), &o, &policy()),
            Step::Blocked {
                reason: BlockReason::UpgradeStalled { member: name(0) }
            }
        );
    }

    #[test]
    fn a_member_that_served_at_the_new_version_is_restarted_after_a_full_outage() {
        // Mid-upgrade to 3.5.20: example-1 was moved there and served (its status recorded
        // it), the others still run 3.5.16, so the cluster's served version (the lowest)
        // is 3.5.16. Then every process stopped for 5 minutes (a power cut). No member
        // answers; example-1 is not an upgrade that never came up: bring the cluster back.
        let stopped = |o: crate::plan::Observed, ordinal: u32| {
            let mut o = o.down_for(ordinal, secs(300));
            if let Some(r) = o.at(ordinal).runtime.as_mut() {
                r.running = false;
                r.started_for = None;
            }
            o
        };
        let mut o = empty()
            .with_running_silent(0)
            .with_running_silent(1)
            .with_version(1, "3.5.20")
            .served_at(1, "3.5.20")
            .with_running_silent(2);
        o.recorded_cluster_id = Some(crate::etcd::ClusterId(0xc1));
        o.served_version = Some(v("3.5.16"));
        let all_down = stopped(stopped(stopped(o.clone(), 0), 1), 2);
        let plan = |o: &crate::plan::Observed| next_step(&spec(3, "3.5.20"), o, &policy());
        assert_eq!(plan(&all_down), Step::RestartMember { name: name(0) });
        // The other two are back (silent until a quorum forms); example-1 is still down.
        let one_down = stopped(o.clone(), 1);
        assert_eq!(plan(&one_down), Step::RestartMember { name: name(1) });
        // Without the record it is what it was: an upgrade that never came up.
        let mut unrecorded = one_down.clone();
        unrecorded.at(1).served_at = None;
        assert_eq!(
            plan(&unrecorded),
            Step::Blocked {
                reason: BlockReason::UpgradeStalled { member: name(1) }
            }
        );
        // A record of an earlier version is no record of this one: moved to 3.5.20 after
        // serving at 3.5.16, it never came up.
        let mut earlier = one_down;
        earlier.at(1).served_at = Some(v("3.5.16"));
        assert_eq!(
            plan(&earlier),
            Step::Blocked {
                reason: BlockReason::UpgradeStalled { member: name(1) }
            }
        );
    }

    #[test]
    fn a_member_rolled_back_to_a_version_a_peer_served_at_is_restarted() {
        // Two members, served at 3.5.9 (example-1) and 3.5.16 (example-0, recorded). An
        // upgrade to a release that never came up was rolled back by spec to 3.5.16; then
        // example-1's host failed for a while. No member answers (two voters, one down).
        // 3.5.16 is known to serve: restart example-1, do not report it stalled (found by
        // the simulated cluster: Resize, BadUpgrade, Break).
        let mut o = empty()
            .with_running_silent(0)
            .served_at(0, "3.5.16")
            .with_running_silent(1)
            .down_for(1, secs(300));
        if let Some(r) = o.at(1).runtime.as_mut() {
            r.running = false;
            r.started_for = None;
        }
        o.at(1).served_at = Some(v("3.5.9"));
        o.recorded_cluster_id = Some(crate::etcd::ClusterId(0xc1));
        o.served_version = Some(v("3.5.9"));
        let plan = |o: &crate::plan::Observed| next_step(&spec(2, "3.5.16"), o, &policy());
        assert_eq!(plan(&o), Step::RestartMember { name: name(1) });
        // Without that record it may be a release that never comes up.
        o.at(0).served_at = None;
        assert_eq!(
            plan(&o),
            Step::Blocked {
                reason: BlockReason::UpgradeStalled { member: name(1) }
            }
        );
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
