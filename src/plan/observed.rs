//! What we saw: each member as the runtime and etcd report it, joined by name.
//!
//! Filled by the runtimes (local processes or pods); the planner never knows which one ran.
//! Observing is their job; deciding what the observation means is [`super::rules`]' and the
//! planner's. Health here is deliberately conservative (see [`ObservedMember::is_healthy`]) so
//! that every quorum count errs on the side of "fewer healthy voters".

use std::fmt;
use std::time::Duration;

use semver::Version;

use crate::etcd::{ClusterId, MemberId};

/// A member's name, `<cluster>-<ordinal>`: the runtime's handle (pod name, process dir) and
/// the name etcd publishes once the member started.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MemberName(String);

impl MemberName {
    /// The name of the member with `ordinal` in cluster `cluster`.
    pub fn new(cluster: &str, ordinal: u32) -> Self {
        Self(format!("{cluster}-{ordinal}"))
    }

    /// The number after the last `-`; `None` for a name not in our `<cluster>-<n>` shape
    /// (e.g. a member someone added by hand).
    pub fn ordinal(&self) -> Option<u32> {
        let (_, tail) = self.0.rsplit_once('-')?;
        if tail.is_empty() || !tail.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        tail.parse().ok()
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for MemberName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<String> for MemberName {
    fn from(s: String) -> Self {
        Self(s)
    }
}

impl From<&str> for MemberName {
    fn from(s: &str) -> Self {
        Self(s.to_string())
    }
}

/// Everything one observation saw of one cluster.
#[derive(Clone, Debug, PartialEq)]
pub struct Observed {
    /// The EtcdCluster's name: new members are named `<cluster_name>-<ordinal>`, and the spec
    /// is validated under it.
    pub cluster_name: String,
    /// The highest ordinal the controller has ever handed out for this cluster (kept in
    /// status), so that a name is never reused even after its member was deleted; `None` when
    /// not recorded, in which case only the names seen here count.
    pub highest_ordinal_used: Option<u32>,
    /// The cluster id its status recorded once the cluster formed. A formed cluster none of
    /// whose members has data left is lost, and never bootstrapped again behind the same
    /// name and Services without the user acting; members answering with another id are
    /// not this cluster's (issue 9, item 5).
    pub recorded_cluster_id: Option<ClusterId>,
    /// The lowest version the members reported when they last answered (kept in status as
    /// `currentVersion`); `None` when never recorded.
    pub served_version: Option<Version>,
    /// Runtime members and etcd members, joined by name (or by peer URL for etcd members that
    /// have not started yet). One entry per member, each known to the runtime, to etcd or to
    /// both; order does not matter.
    pub members: Vec<ObservedMember>,
    /// `None`: no member answered.
    pub etcd: Option<EtcdView>,
    /// The trust stamp of the certificates installed now
    /// ([`crate::certs::ca_rotation::trust_stamp`]): a TLS member started with another is
    /// restarted (one CA rotation phase). `None`: no certificates (plaintext).
    pub trust_stamp: Option<String>,
}

/// The cluster as the answering member saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EtcdView {
    pub cluster_id: ClusterId,
    /// `None` when no member knows a leader (e.g. quorum is lost).
    pub leader: Option<MemberId>,
    pub leader_raft_index: u64,
}

/// One member, as the runtime and etcd report it.
#[derive(Clone, Debug, PartialEq)]
pub struct ObservedMember {
    /// For an unstarted etcd member with no runtime member, the runtime names it after its
    /// peer URL as best it can; its [`MemberName::ordinal`] may then be `None`.
    pub name: MemberName,
    /// `None`: the runtime has no such member (no process or pod, no data).
    pub runtime: Option<RuntimeState>,
    /// `None`: etcd's member list does not have it.
    pub etcd: Option<EtcdMemberState>,
    /// How long it has been continuously not running or not healthy; `None` when healthy.
    pub unhealthy_for: Option<Duration>,
    /// The version etcd reported for it the last time it answered healthy (kept in the
    /// member's status, `servedVersion`, across passes and operator restarts); `None` when
    /// never recorded. Tells a member that served at the version it runs and then stopped
    /// from one an upgrade moved there that never came up ([`Observed::has_served_at`]).
    pub served_at: Option<Version>,
}

/// What the runtime knows of a member.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuntimeState {
    pub running: bool,
    pub has_data: bool,
    /// The version the runtime runs (or will run) it at.
    pub version: Version,
    pub peer_url: String,
    pub client_url: String,
    /// How long ago the runtime last started (or restarted) it; `None` when not running.
    pub started_for: Option<Duration>,
    /// A restart keeps its data (a PVC or a local data dir; not an emptyDir).
    pub restart_keeps_data: bool,
    /// The trust stamp it was started with; `None` for plaintext or when not recorded.
    pub trust_stamp: Option<String>,
}

/// What etcd knows of a member.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EtcdMemberState {
    pub id: MemberId,
    pub is_learner: bool,
    /// The process has joined at least once: etcd lists its name and client URLs (a
    /// bootstrap member that never joined is listed with its name only).
    pub started: bool,
    /// Voters: a linearizable read succeeded. Learners: the status call answered.
    pub healthy: bool,
    /// The server version it reported.
    pub version: Option<Version>,
    pub raft_index: Option<u64>,
    pub is_leader: bool,
    /// The URLs etcd dials it at (`member update` changes them).
    pub peer_urls: Vec<String>,
}

/// How patient the planner is; time always arrives as durations in [`Observed`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    /// How long a present-but-unhealthy or stopped member may stay so before something is
    /// done: restarted in place when a restart keeps its data, else replaced.
    pub unhealthy_grace: Duration,
    /// How long, in all, a member whose restart keeps its data may stay unhealthy (restarted
    /// in place after `unhealthy_grace`) before it is replaced and its data deleted.
    pub replace_grace: Duration,
    /// How long a member just moved to the target version may stay unhealthy before the
    /// upgrade is reported stalled.
    pub upgrade_health_deadline: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            unhealthy_grace: Duration::from_secs(60),
            replace_grace: Duration::from_secs(600),
            upgrade_health_deadline: Duration::from_secs(120),
        }
    }
}

impl ObservedMember {
    pub fn id(&self) -> Option<MemberId> {
        self.etcd.as_ref().map(|e| e.id)
    }

    /// etcd lists it as a voter.
    pub fn is_voter(&self) -> bool {
        self.etcd.as_ref().is_some_and(|e| !e.is_learner)
    }

    /// etcd lists it as a learner.
    pub fn is_learner(&self) -> bool {
        self.etcd.as_ref().is_some_and(|e| e.is_learner)
    }

    /// etcd lists it and it has joined at least once.
    pub fn is_started(&self) -> bool {
        self.etcd.as_ref().is_some_and(|e| e.started)
    }

    /// etcd lists it but it never joined: an add (or a bootstrap) not finished yet.
    pub fn is_unstarted(&self) -> bool {
        self.etcd.as_ref().is_some_and(|e| !e.started)
    }

    pub fn is_running(&self) -> bool {
        self.runtime.as_ref().is_some_and(|r| r.running)
    }

    pub fn has_data(&self) -> bool {
        self.runtime.as_ref().is_some_and(|r| r.has_data)
    }

    /// A restart keeps its data, so it can be restarted in place before it is replaced.
    pub fn restart_keeps_data(&self) -> bool {
        self.runtime
            .as_ref()
            .is_some_and(|r| r.has_data && r.restart_keeps_data)
    }

    /// The runtime started it again after it went down (its current process or Pod is
    /// younger than its trouble): a restart in place was already tried.
    pub fn restarted_since_down(&self) -> bool {
        let down = self.unhealthy_for.unwrap_or_default();
        self.runtime
            .as_ref()
            .and_then(|r| r.started_for)
            .is_some_and(|started| started < down)
    }

    /// The version the runtime runs it at; `None` without a runtime member.
    pub fn version(&self) -> Option<&Version> {
        self.runtime.as_ref().map(|r| &r.version)
    }

    /// Healthy by every account: running with its data, started, and etcd says healthy.
    /// Conservative on purpose: a member the runtime and etcd disagree on is not healthy,
    /// so quorum counts never overstate what is serving.
    pub fn is_healthy(&self) -> bool {
        self.is_running()
            && self.has_data()
            && self.etcd.as_ref().is_some_and(|e| e.started && e.healthy)
    }

    /// etcd lists it as started but its data is gone: no runtime member, or one without data.
    pub fn has_lost_data(&self) -> bool {
        self.is_started() && !self.has_data()
    }

    /// etcd lists it as started, its process is not running, and its data is there: a
    /// restart brings it back with the same id.
    pub fn is_stopped_with_data(&self) -> bool {
        self.is_started()
            && self
                .runtime
                .as_ref()
                .is_some_and(|r| !r.running && r.has_data)
    }

    /// A runtime member etcd does not list, never run and without data: an add whose
    /// `member add` has not happened yet.
    pub fn is_reservation(&self) -> bool {
        self.etcd.is_none()
            && self
                .runtime
                .as_ref()
                .is_some_and(|r| !r.running && !r.has_data)
    }

    /// A runtime member etcd does not list that is running or has data: left behind after a
    /// removal, or never ours. It can never rejoin with that data.
    pub fn is_leftover(&self) -> bool {
        self.etcd.is_none()
            && self
                .runtime
                .as_ref()
                .is_some_and(|r| r.running || r.has_data)
    }

    /// Part of a membership change not finished: an unpromoted learner, an unstarted etcd
    /// member, or a runtime member etcd does not list yet.
    pub fn is_pending_change(&self) -> bool {
        self.is_learner() || self.is_unstarted() || (self.etcd.is_none() && self.runtime.is_some())
    }

    /// A TLS member started on other certificates than `installed` trust stamp says (or
    /// before stamps were recorded) whose restart keeps its data: a restart makes it load
    /// the installed ones. A member on an emptyDir is never restarted for that (it would
    /// come back empty); a CA rotation then waits for it (see README).
    pub fn runs_stale_trust(&self, installed: Option<&str>) -> bool {
        let Some(installed) = installed else {
            return false;
        };
        self.runtime.as_ref().is_some_and(|r| {
            r.peer_url.starts_with("https://")
                && r.restart_keeps_data
                && r.trust_stamp.as_deref() != Some(installed)
        })
    }

    /// What moving this member to the transport the spec asks for still needs
    /// (`tls_wanted`), with `installed` the installed certificates' trust stamp (`None`:
    /// none installed). `None` when it is there already, or cannot be restarted with its
    /// data (an emptyDir member: see [`Observed::transport_move_blocked`]). Towards TLS
    /// needs certificates installed; towards plaintext a member that listens with TLS is
    /// moved first, and one that only holds certificates loses them after.
    pub fn transport_pending(
        &self,
        tls_wanted: bool,
        installed: Option<&str>,
    ) -> Option<super::TransportStage> {
        use super::TransportStage;
        let r = self.runtime.as_ref().filter(|r| r.restart_keeps_data)?;
        let listens_tls = r.peer_url.starts_with("https://");
        match (tls_wanted, listens_tls) {
            (true, true) => None,
            (true, false) => {
                let installed = installed?;
                Some(if r.trust_stamp.as_deref() == Some(installed) {
                    TransportStage::ListenTls
                } else {
                    TransportStage::DialTls
                })
            }
            (false, true) => Some(TransportStage::ListenPlain),
            (false, false) => r
                .trust_stamp
                .is_some()
                .then_some(TransportStage::DropCertificates),
        }
    }

    /// A member that a restart would leave without its data (emptyDir) and that does not
    /// listen as `tls_wanted` says.
    pub fn blocks_transport_move(&self, tls_wanted: bool) -> bool {
        self.runtime.as_ref().is_some_and(|r| {
            r.peer_url.starts_with("https://") != tls_wanted && !r.restart_keeps_data
        })
    }

    /// Sort key for deterministic choices: ordinal (names without one last), then id.
    pub(crate) fn order_key(&self) -> (u32, MemberId, &str) {
        (
            self.name.ordinal().unwrap_or(u32::MAX),
            self.id().unwrap_or_default(),
            self.name.as_str(),
        )
    }
}

impl Observed {
    /// A move between plaintext and TLS cannot be made: a member that listens otherwise
    /// than `tls_wanted` keeps its data on an emptyDir (its restarts would lose it).
    pub fn transport_move_blocked(&self, tls_wanted: bool) -> bool {
        self.members
            .iter()
            .any(|m| m.blocks_transport_move(tls_wanted))
    }

    /// The cluster formed once (its status recorded a cluster id).
    pub fn formed(&self) -> bool {
        self.recorded_cluster_id.is_some()
    }

    /// Members etcd lists as voters.
    pub fn voters(&self) -> impl Iterator<Item = &ObservedMember> {
        self.members.iter().filter(|m| m.is_voter())
    }

    /// Members etcd lists as learners.
    pub fn learners(&self) -> impl Iterator<Item = &ObservedMember> {
        self.members.iter().filter(|m| m.is_learner())
    }

    /// Members etcd lists, voters and learners.
    pub fn etcd_members(&self) -> impl Iterator<Item = &ObservedMember> {
        self.members.iter().filter(|m| m.etcd.is_some())
    }

    pub fn voter_count(&self) -> usize {
        self.voters().count()
    }

    /// Voters healthy by [`ObservedMember::is_healthy`].
    pub fn healthy_voter_count(&self) -> usize {
        self.voters().filter(|m| m.is_healthy()).count()
    }

    pub fn member(&self, name: &MemberName) -> Option<&ObservedMember> {
        self.members.iter().find(|m| &m.name == name)
    }

    pub fn member_by_id(&self, id: MemberId) -> Option<&ObservedMember> {
        self.members.iter().find(|m| m.id() == Some(id))
    }

    /// The leader: as the view says, else the member that says it leads.
    pub fn leader_id(&self) -> Option<MemberId> {
        let from_view = self
            .etcd
            .as_ref()
            .and_then(|v| v.leader)
            .filter(|id| !id.is_none());
        from_view.or_else(|| {
            self.members
                .iter()
                .find(|m| m.etcd.as_ref().is_some_and(|e| e.is_leader))
                .and_then(ObservedMember::id)
        })
    }

    /// `version` is known to serve: some member is recorded answering healthy at it (its
    /// [`ObservedMember::served_at`]), or it is the cluster's served version. A member down
    /// at such a version is not an upgrade that never came up: a restart (or a replacement)
    /// at it can work. Mid-upgrade the cluster's served version (the lowest) predates the
    /// roll, so only the members' records know the new version served.
    pub fn has_served_at(&self, version: &Version) -> bool {
        self.served_version.as_ref() == Some(version)
            || self
                .members
                .iter()
                .any(|m| m.served_at.as_ref() == Some(version))
    }

    /// Whether any part of a membership change is unfinished.
    pub fn has_pending_change(&self) -> bool {
        self.members.iter().any(ObservedMember::is_pending_change)
    }

    /// The lowest version any runtime member runs: the cluster's version for upgrade checks.
    pub fn min_version(&self) -> Option<&Version> {
        self.members
            .iter()
            .filter_map(ObservedMember::version)
            .min()
    }

    /// The ordinal the next new member gets: one past every ordinal seen or recorded, so
    /// names are never reused.
    pub fn next_ordinal(&self) -> u32 {
        let seen = self.members.iter().filter_map(|m| m.name.ordinal()).max();
        match seen.max(self.highest_ordinal_used) {
            Some(n) => n.saturating_add(1),
            None => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::fixtures::observed;

    #[test]
    fn ordinal_is_the_number_after_the_last_dash() {
        assert_eq!(MemberName::new("my-etcd", 12).ordinal(), Some(12));
        assert_eq!(MemberName::from("my-etcd").ordinal(), None);
        assert_eq!(MemberName::from("etcd-").ordinal(), None);
        assert_eq!(MemberName::from("etcd-+1").ordinal(), None);
        assert_eq!(MemberName::from("http://10.0.0.1:2380").ordinal(), None);
    }

    #[test]
    fn next_ordinal_never_reuses_a_recorded_one() {
        let o = observed(3);
        assert_eq!(o.next_ordinal(), 3);
        let mut recorded = observed(3);
        recorded.highest_ordinal_used = Some(7);
        assert_eq!(recorded.next_ordinal(), 8);
        let mut empty = observed(0);
        assert_eq!(empty.next_ordinal(), 0);
        empty.highest_ordinal_used = Some(0);
        assert_eq!(empty.next_ordinal(), 1);
    }

    #[test]
    fn a_member_etcd_calls_healthy_is_not_healthy_without_its_runtime() {
        let o = observed(3).without_runtime(1);
        assert!(!o.members[1].is_healthy());
        assert!(o.members[1].has_lost_data());
        assert_eq!(o.healthy_voter_count(), 2);
    }

    #[test]
    fn reservations_and_leftovers_are_told_apart() {
        let o = observed(3).with_reservation(3).with_leftover(4);
        let m3 = o.member(&MemberName::new("example", 3));
        let m4 = o.member(&MemberName::new("example", 4));
        assert!(m3.is_some_and(|m| m.is_reservation() && !m.is_leftover()));
        assert!(m4.is_some_and(|m| m.is_leftover() && !m.is_reservation()));
        assert!(o.has_pending_change());
    }
}
