//! The pure planner: spec + what we saw -> the one next safe step. No async, no I/O, no
//! clients, no clocks (time arrives as durations in [`Observed`]).
//!
//! Observing is the runtimes' job, executing a [`Step`] the controller's. Each pass returns
//! one step; the controller executes it and observes again, so every decision is made on
//! fresh state and a crash anywhere is finished by a later pass.
//!
//! # Flow
//! [`next_step`] checks each concern in order and returns the first step one of them asks
//! for:
//! 1. `paused` -> [`Step::Paused`]; an invalid spec -> [`BlockReason::InvalidSpec`].
//! 2. No member answered -> `bootstrap`: start a fresh cluster, or restart members that
//!    have data.
//!    Members answering as another cluster than the recorded one ->
//!    [`BlockReason::ClusterIdMismatch`]: never adopted.
//! 3. `member_loss::revive`: restart stopped members that still have their data (no
//!    membership change, safe without quorum, and how a lost quorum comes back). It runs
//!    before finishing half-done changes because those need the quorum it restores.
//! 4. `pending::finish`: finish (or cancel) a half-done membership change.
//! 5. `member_loss::replace`: quorum check, then remove failed members for replacement.
//! 6. `upgrade::guard`: refuse version skips and minor downgrades.
//! 7. `scale::resize`: add a learner (also the second half of a replacement) or remove one
//!    member.
//! 8. `upgrade::roll`: one member at a time, followers first, the leader last.
//! 9. `rolling::reload_trust`: the same roll, restarting TLS members started on other
//!    certificates than the installed ones (a CA rotation phase).
//! 10. `transport_move::next`: the same roll, twice, moving a plaintext cluster the spec wants on
//!     TLS there (`transport_move::repair_peer_url`, after step 4, finishes a move a crash cut).
//! 11. [`Step::Done`], unless `maintenance::plan` (called by the reconcile pass on a cluster
//!     that is done) has a compaction or defragmentation to do.
//!
//! # Guarantees
//! Every step satisfies every check in `invariants` (test-only: the property tests hold the planner to
//! them): at most one membership change in flight, no removal that loses quorum, scale-down
//! spares the leader, upgrades one minor at a time.

pub mod backup;
mod bootstrap;
pub mod failure;
#[cfg(test)]
pub mod invariants;
pub mod maintenance;
mod member_loss;
pub mod observed;
mod pending;
pub mod quorum;
pub mod recovery;
pub mod restore;
mod rolling;
mod scale;
pub mod step;
mod transport_move;
mod upgrade;

#[cfg(test)]
pub(crate) mod fixtures;
#[cfg(test)]
mod proptests;

use semver::Version;

pub use observed::{
    EtcdMemberState, EtcdView, MemberName, Observed, ObservedMember, Policy, RuntimeState,
};
pub use step::{BlockReason, RemovalReason, ReplaceReason, Step, TransportStage, WaitReason};

use crate::api::EtcdClusterSpec;
use crate::api::validate;

/// The next safe step for the cluster `observed` shows, towards `spec`.
///
/// Deterministic: the same input gives the same step (ties between members are broken by
/// lowest ordinal, then lowest member id, unless a concern says otherwise).
pub fn next_step(spec: &EtcdClusterSpec, observed: &Observed, policy: &Policy) -> Step {
    if spec.paused {
        return Step::Paused;
    }
    let report = validate::cluster(&observed.cluster_name, spec);
    let ctx = if report.is_valid() {
        Ctx::new(spec, observed, policy)
    } else {
        None
    };
    let Some(ctx) = ctx else {
        return Step::Blocked {
            reason: BlockReason::InvalidSpec {
                message: report.errors_message(),
            },
        };
    };
    let Some(view) = &observed.etcd else {
        return bootstrap::plan(&ctx);
    };
    if let Some(recorded) = observed.recorded_cluster_id
        && recorded != view.cluster_id
    {
        return Step::Blocked {
            reason: BlockReason::ClusterIdMismatch {
                recorded,
                answered: view.cluster_id,
            },
        };
    }
    member_loss::revive(&ctx)
        .or_else(|| pending::finish(&ctx))
        .or_else(|| transport_move::repair_peer_url(&ctx))
        .or_else(|| member_loss::replace(&ctx))
        .or_else(|| upgrade::guard(&ctx))
        .or_else(|| scale::resize(&ctx))
        .or_else(|| upgrade::roll(&ctx))
        .or_else(|| rolling::reload_trust(&ctx))
        .or_else(|| transport_move::next(&ctx))
        .unwrap_or(Step::Done)
}

/// What every concern reads: the validated spec and the observation.
pub(crate) struct Ctx<'a> {
    /// Number of voters wanted.
    size: usize,
    /// spec.version.
    target: Version,
    /// The spec asks for TLS (its mode is not Disabled).
    tls_wanted: bool,
    observed: &'a Observed,
    policy: &'a Policy,
}

impl<'a> Ctx<'a> {
    /// `None` when size or version is unusable (validation reports those first).
    fn new(spec: &EtcdClusterSpec, observed: &'a Observed, policy: &'a Policy) -> Option<Self> {
        Some(Self {
            size: usize::try_from(spec.size).ok()?,
            target: validate::parse_version(&spec.version).ok()?,
            tls_wanted: crate::api::tls::TlsSpec::mode_of(spec.tls.as_ref())
                == crate::api::tls::TlsMode::Enabled,
            observed,
            policy,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::*;
    use super::*;

    #[test]
    fn paused_cluster_takes_no_step_even_when_broken() {
        let mut s = spec(3, "3.5.16");
        s.paused = true;
        assert_eq!(
            next_step(&s, &observed(3).with_data_lost(1), &policy()),
            Step::Paused
        );
    }

    #[test]
    fn invalid_spec_is_blocked_with_every_error() {
        let s = spec(12, "three");
        match next_step(&s, &observed(3), &policy()) {
            Step::Blocked {
                reason: BlockReason::InvalidSpec { message },
            } => {
                assert!(message.contains("spec.size"), "{message}");
                assert!(message.contains("spec.version"), "{message}");
            }
            other => panic!("{other}"),
        }
    }

    #[test]
    fn members_answering_as_another_cluster_are_never_adopted() {
        // The status recorded 0xc0; the members behind our names answer as 0xc1 (fixtures).
        let mut o = observed(3).with_data_lost(1);
        o.recorded_cluster_id = Some(crate::etcd::ClusterId(0xc0));
        assert_eq!(
            next_step(&spec(5, "3.5.16"), &o, &policy()),
            Step::Blocked {
                reason: BlockReason::ClusterIdMismatch {
                    recorded: crate::etcd::ClusterId(0xc0),
                    answered: crate::etcd::ClusterId(0xc1),
                }
            }
        );
        o.recorded_cluster_id = Some(crate::etcd::ClusterId(0xc1));
        assert!(matches!(
            next_step(&spec(5, "3.5.16"), &o, &policy()),
            Step::RemoveMember { .. }
        ));
    }

    #[test]
    fn healthy_cluster_at_spec_is_done() {
        assert_eq!(
            next_step(&spec(3, "3.5.16"), &observed(3), &policy()),
            Step::Done
        );
    }

    #[test]
    fn member_loss_comes_before_scale_and_upgrade() {
        let o = observed(3).with_data_lost(1);
        let step = next_step(&spec(5, "3.6.0"), &o, &policy());
        assert!(
            matches!(
                &step,
                Step::RemoveMember {
                    reason: RemovalReason::Replace(ReplaceReason::DataLost),
                    ..
                }
            ),
            "{step}"
        );
    }

    #[test]
    fn version_guard_comes_before_scale() {
        let step = next_step(&spec(5, "3.6.0"), &observed(3).all_at("3.4.23"), &policy());
        assert!(
            matches!(
                step,
                Step::Blocked {
                    reason: BlockReason::VersionSkip { .. }
                }
            ),
            "{step}"
        );
    }

    #[test]
    fn scale_comes_before_upgrade() {
        let step = next_step(&spec(5, "3.6.0"), &observed(3), &policy());
        assert!(matches!(step, Step::AddLearner { .. }), "{step}");
    }
}
