//! The admin layer's one error type: each variant says what failed or what the caller should do.
//!
//! etcd reports most refusals as gRPC statuses whose only stable part is the message text;
//! [`classify`] turns those into variants so nobody else matches on strings.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use super::types::MemberId;

/// The admin operation that failed; a static label fit for metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, strum::IntoStaticStr)]
#[strum(serialize_all = "lowercase")]
pub enum Op {
    Connect,
    #[strum(serialize = "member list")]
    MemberList,
    #[strum(serialize = "member add")]
    MemberAdd,
    #[strum(serialize = "member promote")]
    MemberPromote,
    #[strum(serialize = "member remove")]
    MemberRemove,
    #[strum(serialize = "member update")]
    MemberUpdate,
    Status,
    Health,
    Snapshot,
    Defragment,
    #[strum(serialize = "alarm list")]
    AlarmList,
    #[strum(serialize = "alarm disarm")]
    AlarmDisarm,
    #[strum(serialize = "move leader")]
    MoveLeader,
    Compact,
}

impl Op {
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    /// Whether the call is pointless without a leader, so a leaderless member should refuse it
    /// at once. Status, member list, alarms, snapshot and defragment still answer then.
    pub(crate) fn requires_leader(self) -> bool {
        matches!(
            self,
            Op::Health
                | Op::MemberAdd
                | Op::MemberPromote
                | Op::MemberRemove
                | Op::MemberUpdate
                | Op::MoveLeader
                | Op::AlarmDisarm
                | Op::Compact
        )
    }

    /// Whether sending the request twice is harmless, so a timeout may be retried elsewhere.
    pub(crate) fn is_read_only(self) -> bool {
        matches!(
            self,
            Op::MemberList | Op::Status | Op::Health | Op::Snapshot | Op::AlarmList
        )
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What etcd-client reported, kept opaque so its types stay out of our API.
pub struct ClientError(pub(crate) etcd_client::Error);

impl ClientError {
    /// The gRPC status code, when the server (or the transport, as `UNAVAILABLE`) answered with one.
    pub fn grpc_code(&self) -> Option<i32> {
        match &self.0 {
            etcd_client::Error::GRpcStatus(s) => Some(i32::from(s.code())),
            _ => None,
        }
    }

    /// The gRPC status message, e.g. `etcdserver: unhealthy cluster`.
    pub fn grpc_message(&self) -> Option<&str> {
        match &self.0 {
            etcd_client::Error::GRpcStatus(s) => Some(s.message()),
            _ => None,
        }
    }

    fn is_transient(&self) -> bool {
        self.grpc_code().is_some_and(|c| {
            matches!(
                c,
                GRPC_UNAVAILABLE | GRPC_DEADLINE_EXCEEDED | GRPC_RESOURCE_EXHAUSTED | GRPC_ABORTED
            )
        })
    }
}

impl fmt::Debug for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            // tonic's Display adds details and metadata; the code and message are what matter.
            etcd_client::Error::GRpcStatus(s) => write!(f, "{:?}: {}", s.code(), s.message()),
            other => fmt::Display::fmt(other, f),
        }
    }
}

impl std::error::Error for ClientError {}

/// Everything that can go wrong talking to etcd.
///
/// [`Error::is_retryable`] says whether the same call may succeed later without anyone acting.
#[derive(Debug, thiserror::Error, strum::IntoStaticStr)]
#[non_exhaustive]
pub enum Error {
    #[error("no etcd endpoints given")]
    NoEndpoints,

    #[error("invalid etcd endpoint {endpoint}")]
    InvalidEndpoint {
        endpoint: String,
        #[source]
        source: ClientError,
    },

    #[error("invalid tls material: {reason}")]
    InvalidTls {
        reason: &'static str,
        #[source]
        source: Option<ClientError>,
    },

    #[error("{op} could not reach {endpoint}")]
    Unreachable {
        op: Op,
        endpoint: String,
        #[source]
        source: ClientError,
    },

    #[error("{op} on {endpoint} timed out after {after:?}")]
    Timeout {
        op: Op,
        endpoint: String,
        after: Duration,
    },

    /// The request must go to the leader (or leadership moved while it ran): find the leader, retry.
    #[error("{op} on {endpoint} needs the leader, which moved or is elsewhere")]
    NotLeader {
        op: Op,
        endpoint: String,
        #[source]
        source: Option<ClientError>,
    },

    /// The member answering knows no leader (election in progress, or quorum lost).
    #[error("{op} on {endpoint} failed: no leader")]
    NoLeader {
        op: Op,
        endpoint: String,
        #[source]
        source: Option<ClientError>,
    },

    /// etcd's strict reconfiguration check refused a membership change because too few members
    /// have been connected for long enough (e.g. ~5 s after bootstrap). Wait and retry.
    #[error("{op} refused: cluster not ready for reconfiguration")]
    Unhealthy {
        op: Op,
        #[source]
        source: ClientError,
    },

    /// etcd allows one learner at a time: promote or remove the pending one first.
    #[error("member add refused: too many learners in cluster")]
    TooManyLearners,

    /// The learner has not caught up with the leader's log yet. Wait and retry.
    #[error("cannot promote learner {id}: not in sync with the leader yet")]
    LearnerNotReady { id: MemberId },

    #[error("cannot promote member {id}: not a learner")]
    NotLearner { id: MemberId },

    #[error("member {id} not found")]
    MemberNotFound { id: MemberId },

    /// Leadership can only move to a voting member of the cluster.
    #[error("cannot move leadership to {id}: not a voting member")]
    BadLeaderTransferee { id: MemberId },

    #[error("member add refused: peer urls {peer_urls:?} already belong to a member")]
    PeerUrlExists { peer_urls: Vec<String> },

    /// Learners serve only status and a few maintenance calls; ask a voter.
    #[error("{op} is not served by learner {endpoint}")]
    RejectedByLearner { op: Op, endpoint: String },

    /// The backend quota is exhausted (NOSPACE alarm): compact, defragment, disarm.
    #[error("{op} on {endpoint} failed: database space exceeded")]
    NoSpace { op: Op, endpoint: String },

    #[error("{op} on {endpoint} denied by etcd auth")]
    PermissionDenied { op: Op, endpoint: String },

    /// The revision asked for is at or below the one the keyspace was compacted to: a
    /// compaction to it has already happened (possibly an earlier, timed-out attempt).
    #[error("{op} on {endpoint}: revision already compacted")]
    Compacted { op: Op, endpoint: String },

    #[error("{op} on {endpoint} failed")]
    Rpc {
        op: Op,
        endpoint: String,
        #[source]
        source: ClientError,
    },

    #[error("{op} on {endpoint} answered unexpectedly: {what}")]
    UnexpectedResponse {
        op: Op,
        endpoint: String,
        what: &'static str,
    },

    #[error("snapshot from {endpoint} ended early after {received} bytes")]
    SnapshotTruncated { endpoint: String, received: u64 },

    #[error("could not write snapshot to {path}")]
    WriteSnapshot {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// Whether retrying the same call later may succeed with nobody acting in between.
    ///
    /// `TooManyLearners`, `NotLearner`, `MemberNotFound`, `NoSpace` and config errors need a
    /// decision first, so they are not retryable.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Unreachable { .. }
            | Error::Timeout { .. }
            | Error::NotLeader { .. }
            | Error::NoLeader { .. }
            | Error::Unhealthy { .. }
            | Error::LearnerNotReady { .. }
            | Error::SnapshotTruncated { .. } => true,
            Error::Rpc { source, .. } => source.is_transient(),
            _ => false,
        }
    }

    /// The variant's name, a static label for metrics and events (never the message).
    pub fn kind(&self) -> &'static str {
        self.into()
    }

    /// Whether another endpoint may answer where this one could not (the request did not apply).
    pub(crate) fn is_failover(&self) -> bool {
        match self {
            // A leaderless member refuses before proposing anything, so nothing was applied.
            Error::Unreachable { .. }
            | Error::RejectedByLearner { .. }
            | Error::NoLeader { .. } => true,
            Error::Timeout { op, .. } => op.is_read_only(),
            _ => false,
        }
    }
}

const GRPC_DEADLINE_EXCEEDED: i32 = 4;
const GRPC_RESOURCE_EXHAUSTED: i32 = 8;
const GRPC_ABORTED: i32 = 10;
const GRPC_UNAVAILABLE: i32 = 14;

/// What a failed etcd call means, before the call's context is attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Cause {
    TooManyLearners,
    LearnerNotReady,
    NotLearner,
    MemberNotFound,
    BadLeaderTransferee,
    PeerUrlExists,
    Unhealthy,
    NotLeader,
    NoLeader,
    RejectedByLearner,
    NoSpace,
    PermissionDenied,
    Compacted,
    Unreachable,
    Other,
}

/// Maps a gRPC status to a [`Cause`]; the message texts are etcd's `rpctypes` (3.4 and 3.5).
pub(crate) fn classify(code: i32, message: &str) -> Cause {
    // Order matters: "...a learner member which is in sync with leader" contains the
    // not-a-learner message as a prefix.
    const BY_MESSAGE: &[(&str, Cause)] = &[
        ("too many learner members", Cause::TooManyLearners),
        ("in sync with leader", Cause::LearnerNotReady),
        ("can only promote a learner member", Cause::NotLearner),
        ("member not found", Cause::MemberNotFound),
        ("bad leader transferee", Cause::BadLeaderTransferee),
        ("peer urls already exists", Cause::PeerUrlExists),
        ("unhealthy cluster", Cause::Unhealthy),
        ("not leader", Cause::NotLeader),
        ("leader changed", Cause::NotLeader),
        ("no leader", Cause::NoLeader),
        ("not supported for learner", Cause::RejectedByLearner),
        ("database space exceeded", Cause::NoSpace),
        ("permission denied", Cause::PermissionDenied),
        ("required revision has been compacted", Cause::Compacted),
    ];
    let lower = message.to_ascii_lowercase();
    if let Some((_, cause)) = BY_MESSAGE.iter().find(|(text, _)| lower.contains(text)) {
        return *cause;
    }
    // Without an "etcdserver:" prefix, UNAVAILABLE comes from the transport: nothing answered.
    if code == GRPC_UNAVAILABLE && !lower.starts_with("etcdserver:") {
        return Cause::Unreachable;
    }
    Cause::Other
}

/// Whether an I/O error (connect refused, reset, broken pipe) is behind a status.
fn caused_by_io(status: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = status.source();
    while let Some(err) = cause {
        if err.is::<std::io::Error>() {
            return true;
        }
        cause = err.source();
    }
    false
}

/// Whether the client's transport made this status itself (a local cause is attached,
/// e.g. hyper's "connection closed before message completed" when the member dies
/// mid-request) rather than decoding one the server sent, which never carries a source.
fn made_by_transport(code: i32, message: &str, has_local_cause: bool) -> bool {
    const CANCELLED: i32 = 1;
    const UNKNOWN: i32 = 2;
    has_local_cause
        && matches!(code, CANCELLED | UNKNOWN | GRPC_UNAVAILABLE)
        && !message.starts_with("etcdserver:")
}

/// Attaches a call's context to what etcd-client returned.
pub(crate) fn from_client(
    op: Op,
    endpoint: &str,
    member: Option<MemberId>,
    peer_urls: &[String],
    err: etcd_client::Error,
) -> Error {
    let endpoint = endpoint.to_owned();
    let cause = match &err {
        // tonic wraps a broken connection (e.g. the member was killed) as status UNKNOWN.
        etcd_client::Error::GRpcStatus(s)
            if caused_by_io(s)
                || made_by_transport(
                    i32::from(s.code()),
                    s.message(),
                    std::error::Error::source(s).is_some(),
                ) =>
        {
            Cause::Unreachable
        }
        etcd_client::Error::GRpcStatus(s) => classify(i32::from(s.code()), s.message()),
        etcd_client::Error::TransportError(_) | etcd_client::Error::IoError(_) => {
            Cause::Unreachable
        }
        _ => Cause::Other,
    };
    let source = ClientError(err);
    match (cause, member) {
        (Cause::TooManyLearners, _) => Error::TooManyLearners,
        (Cause::LearnerNotReady, Some(id)) => Error::LearnerNotReady { id },
        (Cause::NotLearner, Some(id)) => Error::NotLearner { id },
        (Cause::MemberNotFound, Some(id)) => Error::MemberNotFound { id },
        (Cause::BadLeaderTransferee, Some(id)) => Error::BadLeaderTransferee { id },
        (Cause::PeerUrlExists, _) => Error::PeerUrlExists {
            peer_urls: peer_urls.to_vec(),
        },
        (Cause::Unhealthy, _) => Error::Unhealthy { op, source },
        (Cause::NotLeader, _) => Error::NotLeader {
            op,
            endpoint,
            source: Some(source),
        },
        (Cause::NoLeader, _) => Error::NoLeader {
            op,
            endpoint,
            source: Some(source),
        },
        (Cause::RejectedByLearner, _) => Error::RejectedByLearner { op, endpoint },
        (Cause::NoSpace, _) => Error::NoSpace { op, endpoint },
        (Cause::PermissionDenied, _) => Error::PermissionDenied { op, endpoint },
        (Cause::Compacted, _) => Error::Compacted { op, endpoint },
        (Cause::Unreachable, _) => Error::Unreachable {
            op,
            endpoint,
            source,
        },
        _ => Error::Rpc {
            op,
            endpoint,
            source,
        },
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn statuses_the_transport_made_mean_unreachable_but_server_statuses_do_not() {
        assert!(made_by_transport(2, "transport error", true));
        assert!(made_by_transport(1, "operation was canceled", true));
        // Decoded from the wire: no local cause, whatever the code.
        assert!(!made_by_transport(2, "transport error", false));
        // etcd's own refusals keep their meaning.
        assert!(!made_by_transport(14, "etcdserver: leader changed", true));
        assert!(!made_by_transport(4, "deadline exceeded", true));
    }
    use super::*;

    #[test]
    fn op_labels_are_what_messages_and_metrics_always_said() {
        assert_eq!(super::Op::Connect.as_str(), "connect");
        assert_eq!(super::Op::MemberList.as_str(), "member list");
        assert_eq!(super::Op::MoveLeader.as_str(), "move leader");
        assert_eq!(super::Op::Defragment.as_str(), "defragment");
    }

    #[test]
    fn etcd_refusals_map_to_what_the_caller_should_do() {
        let cases = [
            (
                9,
                "etcdserver: too many learner members in cluster",
                Cause::TooManyLearners,
            ),
            (
                9,
                "etcdserver: can only promote a learner member which is in sync with leader",
                Cause::LearnerNotReady,
            ),
            (
                9,
                "etcdserver: can only promote a learner member",
                Cause::NotLearner,
            ),
            (5, "etcdserver: member not found", Cause::MemberNotFound),
            (
                9,
                "etcdserver: bad leader transferee",
                Cause::BadLeaderTransferee,
            ),
            (
                9,
                "etcdserver: Peer URLs already exists",
                Cause::PeerUrlExists,
            ),
            (14, "etcdserver: unhealthy cluster", Cause::Unhealthy),
            (9, "etcdserver: not leader", Cause::NotLeader),
            (14, "etcdserver: leader changed", Cause::NotLeader),
            (14, "etcdserver: no leader", Cause::NoLeader),
            (
                14,
                "etcdserver: rpc not supported for learner",
                Cause::RejectedByLearner,
            ),
            (
                8,
                "etcdserver: mvcc: database space exceeded",
                Cause::NoSpace,
            ),
            (9, "etcdserver: permission denied", Cause::PermissionDenied),
            (14, "tcp connect error", Cause::Unreachable),
            (14, "etcdserver: request timed out", Cause::Other),
            (2, "something else", Cause::Other),
        ];
        for (code, message, want) in cases {
            assert_eq!(classify(code, message), want, "{message}");
        }
    }

    #[test]
    fn waiting_conditions_are_retryable_and_decisions_are_not() {
        let id = MemberId(1);
        assert!(Error::LearnerNotReady { id }.is_retryable());
        assert!(
            Error::Timeout {
                op: Op::Health,
                endpoint: "e".into(),
                after: Duration::from_secs(1)
            }
            .is_retryable()
        );
        assert!(!Error::TooManyLearners.is_retryable());
        assert!(!Error::MemberNotFound { id }.is_retryable());
        assert!(!Error::NotLearner { id }.is_retryable());
    }

    #[test]
    fn an_io_error_anywhere_in_the_chain_means_unreachable() {
        #[derive(Debug, thiserror::Error)]
        #[error("transport error")]
        struct Transport(#[source] std::io::Error);
        #[derive(Debug, thiserror::Error)]
        #[error("status")]
        struct Status(#[source] Transport);

        let broken = Status(Transport(std::io::ErrorKind::BrokenPipe.into()));
        assert!(caused_by_io(&broken));
        assert!(!caused_by_io(
            &Transport(std::io::ErrorKind::Other.into()).0
        ));
    }

    #[test]
    fn only_reads_fail_over_after_a_timeout() {
        let timeout = |op| Error::Timeout {
            op,
            endpoint: "e".into(),
            after: Duration::from_secs(1),
        };
        assert!(timeout(Op::MemberList).is_failover());
        assert!(!timeout(Op::MemberAdd).is_failover());
    }
}
