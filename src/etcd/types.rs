//! The values the admin layer hands out: identities, members, per-endpoint status, alarms.
//!
//! Plain data with no client inside; building them from etcd-client responses is `admin.rs`'s job.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Defines a `u64` identity shown as 16 lowercase hex digits, as etcdctl prints it.
macro_rules! hex_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(pub u64);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:016x}", self.0)
            }
        }

        impl FromStr for $name {
            type Err = std::num::ParseIntError;

            /// Parses hex as etcdctl prints it, with or without leading zeros.
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                u64::from_str_radix(s, 16).map($name)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

hex_id!(
    /// An etcd member id. `MemberId(0)` never names a member; etcd uses it for "none".
    MemberId
);

hex_id!(
    /// An etcd cluster id, fixed when the cluster bootstraps.
    ClusterId
);

impl MemberId {
    /// Whether this is etcd's "no member" value (e.g. a status answered with no leader).
    pub fn is_none(self) -> bool {
        self.0 == 0
    }
}

/// One entry of the membership list.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub id: MemberId,
    /// Empty until the member's process has started and published its name.
    pub name: String,
    pub peer_urls: Vec<String>,
    /// Empty until the member's process has started.
    pub client_urls: Vec<String>,
    pub is_learner: bool,
}

impl Member {
    /// Whether the member's process has ever joined: it published its name and client URLs
    /// (etcd does so once the member serves). The name alone is not enough: a bootstrap
    /// writes every member of `--initial-cluster` with its name, so a bootstrap member that
    /// never ran (or runs in another cluster, e.g. started with another token) is listed
    /// with its name and no client URLs.
    pub fn has_started(&self) -> bool {
        !self.name.is_empty() && !self.client_urls.is_empty()
    }
}

/// The membership as one member saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterInfo {
    pub cluster_id: ClusterId,
    /// The member that answered; its view may lag the leader's by a few entries.
    pub member_id_of_answerer: MemberId,
    pub members: Vec<Member>,
}

impl ClusterInfo {
    pub fn member(&self, id: MemberId) -> Option<&Member> {
        self.members.iter().find(|m| m.id == id)
    }

    pub fn voters(&self) -> impl Iterator<Item = &Member> {
        self.members.iter().filter(|m| !m.is_learner)
    }

    pub fn learners(&self) -> impl Iterator<Item = &Member> {
        self.members.iter().filter(|m| m.is_learner)
    }
}

/// What one endpoint reports about itself (the Status RPC; works on learners too).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointStatus {
    /// The endpoint that was asked.
    pub endpoint: String,
    /// The cluster the answering member belongs to.
    pub cluster_id: ClusterId,
    pub member_id: MemberId,
    /// The server version, e.g. `3.5.16`.
    pub version: semver::Version,
    /// The leader this member knows of; `MemberId(0)` when it knows none (see [`Self::has_leader`]).
    pub leader: MemberId,
    pub raft_index: u64,
    pub raft_term: u64,
    pub raft_applied_index: u64,
    /// The keyspace revision the member had applied when it answered.
    pub revision: i64,
    /// Backend file size in bytes.
    pub db_size: u64,
    /// Bytes of the backend file actually in use; `db_size - db_size_in_use` is what defragment frees.
    pub db_size_in_use: u64,
    pub is_learner: bool,
    /// Errors the member reports about itself (e.g. an active alarm).
    pub errors: Vec<String>,
}

impl EndpointStatus {
    pub fn has_leader(&self) -> bool {
        !self.leader.is_none()
    }

    pub fn is_leader(&self) -> bool {
        self.has_leader() && self.leader == self.member_id
    }
}

/// What an alarm is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AlarmKind {
    /// The backend quota is exhausted; the cluster only serves reads and deletes.
    NoSpace,
    /// A member found its data inconsistent with the others.
    Corrupt,
    /// A type this crate does not know (the raw protobuf value).
    Unknown(i32),
}

/// An active alarm on one member.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Alarm {
    pub member_id: MemberId,
    pub kind: AlarmKind,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_id_displays_as_sixteen_hex_digits_like_etcdctl() {
        assert_eq!(MemberId(0x8e9e05c52164694d).to_string(), "8e9e05c52164694d");
        assert_eq!(MemberId(0xab).to_string(), "00000000000000ab");
    }

    #[test]
    fn member_id_parses_with_or_without_leading_zeros() {
        assert_eq!(
            "00000000000000ab".parse::<MemberId>().unwrap(),
            MemberId(0xab)
        );
        assert_eq!("ab".parse::<MemberId>().unwrap(), MemberId(0xab));
        assert!("xyz".parse::<MemberId>().is_err());
    }

    #[test]
    fn member_id_serializes_as_hex_string_and_back() {
        let id = MemberId(0x8e9e05c52164694d);
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, "\"8e9e05c52164694d\"");
        assert_eq!(serde_json::from_str::<MemberId>(&json).unwrap(), id);
        assert!(serde_json::from_str::<MemberId>("12").is_err());
    }

    #[test]
    fn status_without_leader_is_not_leader() {
        let status = EndpointStatus {
            endpoint: "http://127.0.0.1:2379".into(),
            cluster_id: ClusterId(1),
            member_id: MemberId(1),
            version: semver::Version::new(3, 5, 16),
            leader: MemberId(0),
            raft_index: 0,
            raft_term: 0,
            raft_applied_index: 0,
            revision: 0,
            db_size: 0,
            db_size_in_use: 0,
            is_learner: false,
            errors: vec![],
        };
        assert!(!status.has_leader());
        assert!(!status.is_leader());
    }
}
