//! Test builders for planner input: `observed(3).with_dead(1)` and friends.
//!
//! Members are addressed by ordinal: `example-<n>` with member id `0x1000 + n`. `observed(n)`
//! is a healthy cluster of `n` voters at 3.5.16, led by member 0, leader raft index 1000.

use std::time::Duration;

use semver::Version;

use super::observed::{
    EtcdMemberState, EtcdView, MemberName, Observed, ObservedMember, Policy, RuntimeState,
};
use crate::api::EtcdClusterSpec;
use crate::etcd::{ClusterId, MemberId};

pub(crate) const CLUSTER: &str = "example";
pub(crate) const VERSION: &str = "3.5.16";
pub(crate) const LEADER_RAFT_INDEX: u64 = 1000;
/// How long `with_dead` and friends say a member has been down: well within the grace.
pub(crate) const JUST_NOW: Duration = Duration::from_secs(5);

pub(crate) fn v(s: &str) -> Version {
    Version::parse(s).expect("test version parses")
}

pub(crate) fn name(ordinal: u32) -> MemberName {
    MemberName::new(CLUSTER, ordinal)
}

pub(crate) fn id(ordinal: u32) -> MemberId {
    MemberId(0x1000 + u64::from(ordinal))
}

pub(crate) fn spec(size: i32, version: &str) -> EtcdClusterSpec {
    EtcdClusterSpec::new(size, version)
}

pub(crate) fn policy() -> Policy {
    Policy::default()
}

pub(crate) fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// A healthy runtime member running with data.
pub(crate) fn runtime(ordinal: u32, version: &str) -> RuntimeState {
    RuntimeState {
        running: true,
        has_data: true,
        version: v(version),
        peer_url: format!("http://127.0.0.1:{}", 2380 + ordinal * 10),
        client_url: format!("http://127.0.0.1:{}", 2379 + ordinal * 10),
        started_for: Some(Duration::from_secs(3600)),
        restart_keeps_data: true,
        trust_stamp: None,
    }
}

/// A healthy started voter.
pub(crate) fn voter(ordinal: u32, version: &str) -> ObservedMember {
    ObservedMember {
        name: name(ordinal),
        runtime: Some(runtime(ordinal, version)),
        etcd: Some(EtcdMemberState {
            id: id(ordinal),
            is_learner: false,
            started: true,
            healthy: true,
            version: Some(v(version)),
            raft_index: Some(LEADER_RAFT_INDEX),
            is_leader: ordinal == 0,
            peer_urls: vec![runtime(ordinal, version).peer_url],
        }),
        unhealthy_for: None,
        served_at: None,
    }
}

/// A healthy cluster of `n` voters (ordinals `0..n`) at [`VERSION`], led by member 0.
pub(crate) fn observed(n: u32) -> Observed {
    Observed {
        cluster_name: CLUSTER.to_string(),
        highest_ordinal_used: None,
        recorded_cluster_id: None,
        served_version: None,
        members: (0..n).map(|o| voter(o, VERSION)).collect(),
        etcd: Some(EtcdView {
            cluster_id: ClusterId(0xc1),
            leader: (n > 0).then(|| id(0)),
            leader_raft_index: LEADER_RAFT_INDEX,
        }),
        trust_stamp: None,
    }
}

/// Nothing at all: no runtime member, no etcd answer.
pub(crate) fn empty() -> Observed {
    observed(0).without_etcd()
}

impl Observed {
    pub(crate) fn at(&mut self, ordinal: u32) -> &mut ObservedMember {
        let n = name(ordinal);
        self.members
            .iter_mut()
            .find(|m| m.name == n)
            .expect("fixture member exists")
    }

    fn mark_unhealthy(&mut self, ordinal: u32) {
        let m = self.at(ordinal);
        if let Some(e) = m.etcd.as_mut() {
            e.healthy = false;
            e.version = None;
        }
        m.unhealthy_for = Some(JUST_NOW);
    }

    /// The process stopped; its data is kept.
    pub(crate) fn with_dead(mut self, ordinal: u32) -> Self {
        if let Some(r) = self.at(ordinal).runtime.as_mut() {
            r.running = false;
        }
        self.mark_unhealthy(ordinal);
        self
    }

    /// Running, but etcd says unhealthy.
    pub(crate) fn with_unhealthy(mut self, ordinal: u32) -> Self {
        self.mark_unhealthy(ordinal);
        self
    }

    /// Stopped, and the data is gone.
    pub(crate) fn with_data_lost(mut self, ordinal: u32) -> Self {
        if let Some(r) = self.at(ordinal).runtime.as_mut() {
            r.running = false;
            r.has_data = false;
        }
        self.mark_unhealthy(ordinal);
        self
    }

    /// The runtime has no such member at all (etcd's view is left as it was).
    pub(crate) fn without_runtime(mut self, ordinal: u32) -> Self {
        let m = self.at(ordinal);
        m.runtime = None;
        m.unhealthy_for = Some(JUST_NOW);
        self
    }

    /// How long the member has been unhealthy.
    pub(crate) fn down_for(mut self, ordinal: u32, d: Duration) -> Self {
        self.at(ordinal).unhealthy_for = Some(d);
        self
    }

    /// A started, healthy learner at `raft_index`.
    pub(crate) fn with_learner(mut self, ordinal: u32, raft_index: u64) -> Self {
        let mut m = voter(ordinal, VERSION);
        if let Some(e) = m.etcd.as_mut() {
            e.is_learner = true;
            e.is_leader = false;
            e.raft_index = Some(raft_index);
        }
        self.members.push(m);
        self
    }

    /// An etcd learner that never started; its runtime member exists and runs or not.
    pub(crate) fn with_unstarted(mut self, ordinal: u32, running: bool) -> Self {
        let mut m = voter(ordinal, VERSION);
        if let Some(r) = m.runtime.as_mut() {
            r.running = running;
            r.has_data = running;
        }
        m.etcd = Some(EtcdMemberState {
            id: id(ordinal),
            is_learner: true,
            started: false,
            healthy: false,
            version: None,
            raft_index: None,
            is_leader: false,
            peer_urls: vec![runtime(ordinal, VERSION).peer_url],
        });
        m.unhealthy_for = Some(JUST_NOW);
        self.members.push(m);
        self
    }

    /// A runtime member reserved for an add: not running, no data, not in etcd.
    pub(crate) fn with_reservation(mut self, ordinal: u32) -> Self {
        let mut r = runtime(ordinal, VERSION);
        r.running = false;
        r.has_data = false;
        self.members.push(ObservedMember {
            name: name(ordinal),
            runtime: Some(r),
            etcd: None,
            unhealthy_for: Some(JUST_NOW),
            served_at: None,
        });
        self
    }

    /// A running runtime member with data that no etcd answer lists: a member of a bootstrap
    /// that has not formed its first quorum (it does not serve clients until then).
    pub(crate) fn with_running_silent(mut self, ordinal: u32) -> Self {
        self.members.push(ObservedMember {
            name: name(ordinal),
            runtime: Some(runtime(ordinal, VERSION)),
            etcd: None,
            unhealthy_for: Some(JUST_NOW),
            served_at: None,
        });
        self
    }

    /// A stopped runtime member with data that etcd does not list (left by a removal).
    pub(crate) fn with_leftover(mut self, ordinal: u32) -> Self {
        let mut r = runtime(ordinal, VERSION);
        r.running = false;
        self.members.push(ObservedMember {
            name: name(ordinal),
            runtime: Some(r),
            etcd: None,
            unhealthy_for: Some(JUST_NOW),
            served_at: None,
        });
        self
    }

    pub(crate) fn with_leader(mut self, ordinal: u32) -> Self {
        let leader = id(ordinal);
        for m in &mut self.members {
            if let Some(e) = m.etcd.as_mut() {
                e.is_leader = e.id == leader;
            }
        }
        if let Some(view) = self.etcd.as_mut() {
            view.leader = Some(leader);
        }
        self
    }

    pub(crate) fn without_leader(mut self) -> Self {
        for m in &mut self.members {
            if let Some(e) = m.etcd.as_mut() {
                e.is_leader = false;
            }
        }
        if let Some(view) = self.etcd.as_mut() {
            view.leader = None;
        }
        self
    }

    /// The member runs at `version`.
    pub(crate) fn with_version(mut self, ordinal: u32, version: &str) -> Self {
        let m = self.at(ordinal);
        if let Some(r) = m.runtime.as_mut() {
            r.version = v(version);
        }
        if let Some(e) = m.etcd.as_mut()
            && e.version.is_some()
        {
            e.version = Some(v(version));
        }
        self
    }

    /// The member's status records that it answered healthy at `version`.
    pub(crate) fn served_at(mut self, ordinal: u32, version: &str) -> Self {
        self.at(ordinal).served_at = Some(v(version));
        self
    }

    /// Every member runs at `version`.
    pub(crate) fn all_at(mut self, version: &str) -> Self {
        let ordinals: Vec<u32> = self
            .members
            .iter()
            .filter_map(|m| m.name.ordinal())
            .collect();
        for o in ordinals {
            self = self.with_version(o, version);
        }
        self
    }

    /// No member answered: etcd's view of every member is unknown, and none is healthy.
    pub(crate) fn without_etcd(mut self) -> Self {
        self.etcd = None;
        for m in &mut self.members {
            m.etcd = None;
            m.unhealthy_for.get_or_insert(JUST_NOW);
        }
        self
    }
}
