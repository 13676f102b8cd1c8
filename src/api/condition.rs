//! Condition types and reasons used in statuses, and the one function that sets a
//! condition the way Kubernetes expects (transition time changes only with the status).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// Condition types.
pub mod types {
    /// The cluster serves requests (quorum of healthy voters).
    pub const AVAILABLE: &str = "Available";
    /// The operator is changing the cluster toward the spec.
    pub const PROGRESSING: &str = "Progressing";
    /// Something is wrong that the operator cannot (yet) fix.
    pub const DEGRADED: &str = "Degraded";
    /// A compaction/defragmentation run (NOSPACE or scheduled) is in progress; the message
    /// says how far it got, or how the last one ended.
    pub const MAINTENANCE: &str = "Maintenance";
    /// Members serve TLS with client certificates as the spec asks; False says why not
    /// (plaintext by the spec's choice, or members that serve otherwise than it asks).
    pub const TLS: &str = "TLS";
    /// Lost quorum: a recovery under way, how the last one ended, or what could be set.
    pub const RECOVERY: &str = "Recovery";
    /// The spec passed validation; False names every problem.
    pub const SPEC_VALID: &str = "SpecValid";
    /// Backup/restore: the last run succeeded.
    pub const READY: &str = "Ready";
    /// Backup/restore: the last run failed.
    pub const FAILED: &str = "Failed";
    /// Backup with `verify: true`: the last backup was read back and etcd's tool read it.
    pub const VERIFIED: &str = "Verified";
}

/// `status` of a condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::IntoStaticStr)]
pub enum Status {
    True,
    False,
    Unknown,
}

impl Status {
    fn as_str(self) -> &'static str {
        self.into()
    }

    /// `True` when `b`, else `False`.
    pub fn from_bool(b: bool) -> Self {
        if b { Status::True } else { Status::False }
    }
}

/// Sets condition `type_` in `conditions`, keeping `lastTransitionTime` when the status did
/// not change. Returns true when anything changed.
pub fn set(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: Status,
    reason: &str,
    message: impl Into<String>,
    observed_generation: Option<i64>,
    now: Time,
) -> bool {
    let message = message.into();
    let status = status.as_str();
    if let Some(c) = conditions.iter_mut().find(|c| c.type_ == type_) {
        let same = c.status == status
            && c.reason == reason
            && c.message == message
            && c.observed_generation == observed_generation;
        if same {
            return false;
        }
        if c.status != status {
            c.last_transition_time = now;
        }
        c.status = status.to_string();
        c.reason = reason.to_string();
        c.message = message;
        c.observed_generation = observed_generation;
        return true;
    }
    conditions.push(Condition {
        type_: type_.to_string(),
        status: status.to_string(),
        reason: reason.to_string(),
        message,
        observed_generation,
        last_transition_time: now,
    });
    true
}

/// The condition of type `type_`, if set.
pub fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// True when condition `type_` is set with status `True`.
pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    find(conditions, type_).is_some_and(|c| c.status == "True")
}

/// The current time as a Kubernetes `Time`.
pub fn now() -> Time {
    Time(k8s_openapi::jiff::Timestamp::now())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(secs).unwrap())
    }

    #[test]
    fn transition_time_moves_only_when_status_changes() {
        let mut cs = Vec::new();
        assert!(set(
            &mut cs,
            types::AVAILABLE,
            Status::False,
            "Creating",
            "",
            None,
            at(1)
        ));
        assert!(set(
            &mut cs,
            types::AVAILABLE,
            Status::False,
            "Waiting",
            "x",
            None,
            at(2)
        ));
        assert_eq!(cs[0].last_transition_time, at(1));
        assert!(set(
            &mut cs,
            types::AVAILABLE,
            Status::True,
            "Quorum",
            "",
            None,
            at(3)
        ));
        assert_eq!(cs[0].last_transition_time, at(3));
        assert!(!set(
            &mut cs,
            types::AVAILABLE,
            Status::True,
            "Quorum",
            "",
            None,
            at(4)
        ));
        assert_eq!(cs.len(), 1);
        assert!(is_true(&cs, types::AVAILABLE));
    }
}
