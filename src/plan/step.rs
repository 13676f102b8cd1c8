//! `Step`: the only thing the planner says. One step per pass; each variant carries what the
//! executor needs and enough of the why for a progress log or a status condition.
//!
//! Executing a step (etcd calls, runtime calls, their order and retries) is the controller's
//! job; the order each variant documents is the one the planner's crash recovery relies on.

use std::fmt;
use std::time::Duration;

use semver::Version;

use super::maintenance::MaintenanceAction;
use super::observed::MemberName;
use super::recovery::RecoveryAction;
use crate::api::maintenance::MaintenanceReason;
use crate::api::recovery::RecoveryMode;
use crate::etcd::{ClusterId, MemberId};

/// The next thing to do to one cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Start a new cluster: reserve every named member and start them all at `version` with
    /// `--initial-cluster-state new` and all of them in `--initial-cluster`. Idempotent: a
    /// member already running is left alone. Only planned when no member answered and no
    /// runtime member has data.
    Bootstrap {
        members: Vec<MemberName>,
        version: Version,
    },
    /// Grow membership by one: reserve the runtime member `name` at `version` (or reuse the
    /// reservation already there), `member add --learner` with its peer URL, then start it
    /// with `--initial-cluster-state existing`. A crash between those parts is finished by
    /// later passes (the reservation is re-added, or the unstarted member is started).
    AddLearner { name: MemberName, version: Version },
    /// etcd lists `id` but it never started and its runtime member exists but is not
    /// running: start it with `--initial-cluster-state existing` (a half-done add).
    StartMember { name: MemberName, id: MemberId },
    /// `member promote` the learner: it is healthy and caught up with the leader.
    PromoteLearner { name: MemberName, id: MemberId },
    /// `member remove` `id` in etcd first, then delete the runtime member and its data.
    RemoveMember {
        name: MemberName,
        id: MemberId,
        reason: RemovalReason,
    },
    /// Delete a runtime member (and its data) that etcd does not list and that is not a
    /// pending add: left behind by a removal, or not ours.
    DeleteRuntimeMember { name: MemberName },
    /// Start the member's stopped process again, with its data and id unchanged.
    RestartMember { name: MemberName },
    /// Move leadership off `from` (the current leader; send the request to it) to `to_id`.
    MoveLeader {
        from: MemberName,
        from_id: MemberId,
        to: MemberName,
        to_id: MemberId,
    },
    /// Run the member at `to` (binary or image) and restart it with its data and id.
    UpgradeMember {
        name: MemberName,
        id: MemberId,
        to: Version,
    },
    /// Restart the running member with its data, id, version and flags, so it loads the
    /// installed certificates: etcd reads the CAs it trusts only when it starts (one
    /// phase of a CA rotation, see [`crate::certs::ca_rotation`]).
    ReloadTrust { name: MemberName, id: MemberId },
    /// One member moved one stage between plaintext and TLS (towards what the spec asks),
    /// with its data, id and version; see `plan::transport_move`.
    MoveTransport {
        name: MemberName,
        id: MemberId,
        stage: TransportStage,
    },
    /// etcd dials `id` with another scheme than the member listens with (a move between
    /// plaintext and TLS interrupted between the runtime's record and etcd's `member
    /// update`): `member update` it to `peer_url`, the runtime's.
    UpdatePeerUrl {
        name: MemberName,
        id: MemberId,
        peer_url: String,
    },
    /// No member answers and `name` runs a version the cluster never served at: run it
    /// (with its data) at `to`, the version the cluster last served at, which spec.version
    /// was set back to. How a lone member comes back from a failed upgrade.
    RollBackMember { name: MemberName, to: Version },
    /// One action of a maintenance run (compaction, defragmentation, NOSPACE): see
    /// `plan::maintenance`. Planned only when the cluster is otherwise at its spec and every
    /// member is healthy; never changes membership.
    Maintain {
        reason: MaintenanceReason,
        action: MaintenanceAction,
    },
    /// One action of a recovery from lost quorum: see `plan::recovery`. Planned only by
    /// it (the reconcile pass asks it), once quorum is lost for good and the user allowed
    /// or asked for a recovery, or while a recovery runs.
    Recover {
        mode: RecoveryMode,
        action: RecoveryAction,
    },
    /// Nothing safe to do yet; look again later.
    Wait { reason: WaitReason },
    /// A refusal the user must see (in a condition); nothing changes until the cluster or
    /// the spec does.
    Blocked { reason: BlockReason },
    /// `spec.paused`: no step is taken.
    Paused,
    /// The cluster is as the spec asks.
    Done,
}

/// What one [`Step::MoveTransport`] does to a member. Towards TLS: `DialTls` for every
/// member, then `ListenTls` for each. Towards plaintext: `ListenPlain` for every member, then
/// `DropCertificates` for each. Every restart keeps the member's data, id and version.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransportStage {
    /// Restart it still listening plaintext, holding the cluster's peer certificate and
    /// trusting its CA, so it can dial members that listen with TLS.
    DialTls,
    /// Stop it, record its `https://` address (same ports), `member update` its peer URL
    /// while it is stopped (it cannot be dialled at either meanwhile, and a stopped member
    /// starts no election), then start it with TLS listeners that require client
    /// certificates.
    ListenTls,
    /// The same with `http://`: started with plaintext listeners, still holding the peer
    /// certificate to dial the members that listen with TLS.
    ListenPlain,
    /// Restart it without certificates: no member listens with TLS any more.
    DropCertificates,
}

impl TransportStage {
    /// The first stage of a move has to be done on every member before the second starts
    /// on any (a member that cannot dial TLS must never have a peer listening with it).
    pub fn is_first(self) -> bool {
        matches!(self, Self::DialTls | Self::ListenPlain)
    }
}

impl fmt::Display for TransportStage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::DialTls => "give it the peer certificate, still listening plaintext",
            Self::ListenTls => "move its peer and client listeners to TLS",
            Self::ListenPlain => {
                "move its peer and client listeners to plaintext, keeping the peer certificate"
            }
            Self::DropCertificates => "restart it without certificates",
        })
    }
}

/// Why a member is removed from etcd.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RemovalReason {
    /// The spec asks for fewer members (or a learner is no longer needed).
    ScaleDown,
    /// The member failed; a learner replaces it on later passes.
    Replace(ReplaceReason),
    /// An etcd member no plan accounts for: an add whose runtime member is gone, or a second
    /// learner.
    Orphan,
}

/// What failed about a replaced member.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReplaceReason {
    /// etcd lists it as started but the runtime has no data for it.
    DataLost,
    /// Stopped or unhealthy longer than the grace.
    Unhealthy { for_: Duration },
    /// Added but never joined, though its process ran, longer than the grace.
    NeverStarted { for_: Duration },
}

/// Why nothing is done this pass.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WaitReason {
    /// Unhealthy or stopped but still within the grace; replaced after `remaining`.
    MemberUnhealthy {
        name: MemberName,
        remaining: Duration,
    },
    /// Its process runs but it has not joined yet.
    MemberStarting {
        name: MemberName,
        remaining: Duration,
    },
    /// The learner's raft index is not within 90% of the leader's yet.
    LearnerCatchingUp {
        name: MemberName,
        raft_index: Option<u64>,
        leader_raft_index: u64,
    },
    /// The member was moved to the target version and is not healthy yet.
    UpgradedMemberStarting {
        name: MemberName,
        remaining: Duration,
    },
    /// Every member is healthy but none is known to lead.
    NoLeader,
    /// Members have data but none answered; they may be starting.
    NoAnswer { remaining: Duration },
    /// A recovery waits for its members.
    Recovering { mode: RecoveryMode, what: String },
}

/// A refusal the user must see.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BlockReason {
    /// More than one minor version up at once.
    VersionSkip { from: Version, to: Version },
    /// Down a minor version (patch downgrades are fine).
    MinorDowngrade { from: Version, to: Version },
    /// Fewer healthy voters than a quorum: nothing that changes membership can commit.
    QuorumLost { healthy: usize, voters: usize },
    /// The member moved to the target version has not become healthy within the deadline.
    /// Setting spec.version back to what the others run rolls it back.
    UpgradeStalled { member: MemberName },
    /// The spec has errors; the message lists them all.
    InvalidSpec { message: String },
    /// PVCs an earlier cluster of the same name left behind (retained on its deletion)
    /// hold the member names this one would use; their data is never adopted or
    /// bootstrapped over. Not a planner decision: the runtime finds them while observing.
    RetainedVolumes { claims: Vec<String> },
    /// The cluster formed once and no member has data left (all lost: emptyDir pods gone,
    /// volumes deleted). Bootstrapping again would serve an empty keyspace at revision 1 behind
    /// the same name; only the user may decide that, or restore from a backup.
    AllMembersLost,
    /// A NOSPACE alarm stays: the keyspace was compacted and every member defragmented, and
    /// `members` still have no room under the quota. The operator never raises the quota;
    /// deleting keys (then the operator compacts and defragments again) or raising
    /// `spec.etcd.quotaBackendBytes` is the user's call.
    NoSpace {
        members: Vec<MemberName>,
        largest_db_size: u64,
        quota: u64,
    },
    /// Member PVCs without a StorageClass stay pending: the Kubernetes cluster has no
    /// default one. Found by the runtime, like [`BlockReason::RetainedVolumes`].
    NoStorageClass { claims: Vec<String> },
    /// The certificates the user provides (`spec.tls.secrets`) are unusable and none were
    /// installed before: no member can start. Each problem names its Secret. Not a planner
    /// decision: found while making the pass's certificates.
    InvalidCertificates { problems: Vec<String> },
    /// The members answer as another etcd cluster than the one this EtcdCluster formed as
    /// (its status recorded `recorded`): an earlier cluster's members behind the same names,
    /// or a cluster someone re-created by hand. They are never taken for this cluster's.
    ClusterIdMismatch {
        recorded: ClusterId,
        answered: ClusterId,
    },
}

impl Step {
    /// Whether the step changes etcd's member list (add, promote, remove, or creating it).
    pub fn is_membership_change(&self) -> bool {
        matches!(
            self,
            Step::Bootstrap { .. }
                | Step::AddLearner { .. }
                | Step::PromoteLearner { .. }
                | Step::RemoveMember { .. }
        )
    }
}

/// Seconds, rounded up so "0s" never shows while time remains.
struct Secs(Duration);

impl fmt::Display for Secs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.0.as_secs() + u64::from(self.0.subsec_nanos() > 0);
        write!(f, "{s}s")
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::Bootstrap { members, version } => {
                let names: Vec<&str> = members.iter().map(MemberName::as_str).collect();
                write!(f, "bootstrap {} at {version}", names.join(", "))
            }
            Step::AddLearner { name, version } => write!(f, "add learner {name} at {version}"),
            Step::StartMember { name, id } => write!(f, "start added member {name} ({id})"),
            Step::PromoteLearner { name, id } => write!(f, "promote learner {name} ({id})"),
            Step::RemoveMember { name, id, reason } => {
                write!(f, "remove member {name} ({id}): {reason}")
            }
            Step::DeleteRuntimeMember { name } => {
                write!(f, "delete {name}: not an etcd member")
            }
            Step::RestartMember { name } => write!(f, "restart {name} with its data"),
            Step::MoveLeader { from, to, .. } => write!(f, "move leader from {from} to {to}"),
            Step::UpgradeMember { name, to, .. } => write!(f, "run {name} at {to}"),
            Step::ReloadTrust { name, .. } => {
                write!(f, "restart {name} to load the installed certificates")
            }
            Step::MoveTransport { name, stage, .. } => write!(f, "move {name}: {stage}"),
            Step::UpdatePeerUrl { name, peer_url, .. } => {
                write!(f, "tell etcd {name} listens at {peer_url}")
            }
            Step::RollBackMember { name, to } => {
                write!(f, "roll {name} back to {to}, the version it last served at")
            }
            Step::Maintain { reason, action } => write!(f, "{reason}: {action}"),
            Step::Recover { mode, action } => write!(f, "recover ({mode}): {action}"),
            Step::Wait { reason } => write!(f, "wait: {reason}"),
            Step::Blocked { reason } => write!(f, "blocked: {reason}"),
            Step::Paused => f.write_str("paused"),
            Step::Done => f.write_str("done"),
        }
    }
}

impl fmt::Display for RemovalReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RemovalReason::ScaleDown => f.write_str("scale down"),
            RemovalReason::Replace(why) => write!(f, "replace, {why}"),
            RemovalReason::Orphan => f.write_str("no plan accounts for it"),
        }
    }
}

impl fmt::Display for ReplaceReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReplaceReason::DataLost => f.write_str("its data is gone"),
            ReplaceReason::Unhealthy { for_ } => write!(f, "unhealthy for {}", Secs(*for_)),
            ReplaceReason::NeverStarted { for_ } => {
                write!(f, "never joined in {}", Secs(*for_))
            }
        }
    }
}

impl fmt::Display for WaitReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WaitReason::MemberUnhealthy { name, remaining } => {
                write!(f, "{name} is unhealthy, replaced in {}", Secs(*remaining))
            }
            WaitReason::MemberStarting { name, remaining } => write!(
                f,
                "{name} has not joined yet, replaced in {}",
                Secs(*remaining)
            ),
            WaitReason::LearnerCatchingUp {
                name,
                raft_index,
                leader_raft_index,
            } => match raft_index {
                Some(i) => write!(
                    f,
                    "learner {name} catching up (raft index {i} of {leader_raft_index})"
                ),
                None => write!(f, "learner {name} catching up (raft index unknown)"),
            },
            WaitReason::UpgradedMemberStarting { name, remaining } => write!(
                f,
                "upgraded {name} is not healthy yet, stalled in {}",
                Secs(*remaining)
            ),
            WaitReason::NoLeader => f.write_str("no leader known"),
            WaitReason::NoAnswer { remaining } => write!(
                f,
                "no member answered, quorum reported lost in {}",
                Secs(*remaining)
            ),
            WaitReason::Recovering { mode, what } => write!(f, "recovering ({mode}): {what}"),
        }
    }
}

impl fmt::Display for BlockReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BlockReason::VersionSkip { from, to } => write!(
                f,
                "{from} to {to} skips a minor version; upgrade one minor version at a time"
            ),
            BlockReason::MinorDowngrade { from, to } => {
                write!(
                    f,
                    "{from} to {to} is a minor downgrade, which etcd does not support"
                )
            }
            BlockReason::QuorumLost { healthy, voters } => write!(
                f,
                "quorum lost: {healthy} of {voters} voters healthy, {} needed",
                super::quorum::quorum(*voters)
            ),
            BlockReason::UpgradeStalled { member } => write!(
                f,
                "upgrade stalled: {member} did not become healthy at the new version; set spec.version back to roll it back"
            ),
            BlockReason::InvalidSpec { message } => write!(f, "invalid spec: {message}"),
            BlockReason::AllMembersLost => write!(
                f,
                "every member lost its data after the cluster had formed; it is not bootstrapped again as an empty cluster: restore a backup (EtcdRestore), or delete the EtcdCluster to start an empty one"
            ),
            BlockReason::RetainedVolumes { claims } => write!(
                f,
                "pvcs {} were retained from an earlier cluster of this name and are not adopted; delete them to create this cluster",
                claims.join(", ")
            ),
            BlockReason::ClusterIdMismatch { recorded, answered } => write!(
                f,
                "the members answer as etcd cluster {answered}, but this cluster formed as {recorded}; they are not adopted: delete the members of the other cluster, or restore into a new EtcdCluster"
            ),
            BlockReason::NoSpace {
                members,
                largest_db_size,
                quota,
            } => {
                let names: Vec<&str> = members.iter().map(MemberName::as_str).collect();
                write!(
                    f,
                    "NOSPACE alarm stays: after compaction and defragmentation {} still use up to {} of the {} quota; delete keys or raise spec.etcd.quotaBackendBytes (the operator never raises it)",
                    names.join(", "),
                    super::maintenance::Bytes(*largest_db_size),
                    super::maintenance::Bytes(*quota)
                )
            }
            BlockReason::InvalidCertificates { problems } => write!(
                f,
                "the certificates in spec.tls.secrets cannot be used, so no member starts: {}",
                problems.join("; ")
            ),
            BlockReason::NoStorageClass { claims } => write!(
                f,
                "pvcs {} stay pending without a StorageClass: the Kubernetes cluster has no default StorageClass; set spec.storage.pvc.storageClassName (or spec.storage.emptyDir)",
                claims.join(", ")
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(n: u32) -> MemberName {
        MemberName::new("example", n)
    }

    #[test]
    fn display_is_one_line_naming_member_and_reason() {
        let cases = [
            (
                Step::RemoveMember {
                    name: name(2),
                    id: MemberId(0xab),
                    reason: RemovalReason::Replace(ReplaceReason::Unhealthy {
                        for_: Duration::from_millis(61_500),
                    }),
                },
                "remove member example-2 (00000000000000ab): replace, unhealthy for 62s",
            ),
            (
                Step::Blocked {
                    reason: BlockReason::QuorumLost {
                        healthy: 1,
                        voters: 3,
                    },
                },
                "blocked: quorum lost: 1 of 3 voters healthy, 2 needed",
            ),
            (
                Step::Bootstrap {
                    members: vec![name(0), name(1)],
                    version: Version::new(3, 5, 16),
                },
                "bootstrap example-0, example-1 at 3.5.16",
            ),
            (
                Step::Wait {
                    reason: WaitReason::LearnerCatchingUp {
                        name: name(3),
                        raft_index: Some(10),
                        leader_raft_index: 100,
                    },
                },
                "wait: learner example-3 catching up (raft index 10 of 100)",
            ),
        ];
        for (step, want) in cases {
            let line = step.to_string();
            assert_eq!(line, want);
            assert!(!line.contains('\n'));
        }
    }

    #[test]
    fn only_etcd_member_list_changes_are_membership_changes() {
        let id = MemberId(1);
        let changes = [
            Step::AddLearner {
                name: name(1),
                version: Version::new(3, 5, 16),
            },
            Step::PromoteLearner { name: name(1), id },
            Step::RemoveMember {
                name: name(1),
                id,
                reason: RemovalReason::ScaleDown,
            },
        ];
        assert!(changes.iter().all(Step::is_membership_change));
        let others = [
            Step::StartMember { name: name(1), id },
            Step::RestartMember { name: name(1) },
            Step::RollBackMember {
                name: name(1),
                to: Version::new(3, 5, 0),
            },
            Step::DeleteRuntimeMember { name: name(1) },
            Step::UpgradeMember {
                name: name(1),
                id,
                to: Version::new(3, 6, 0),
            },
            Step::Wait {
                reason: WaitReason::NoLeader,
            },
            Step::Paused,
            Step::Done,
        ];
        assert!(!others.iter().any(Step::is_membership_change));
    }
}
