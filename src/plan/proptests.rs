//! Property tests for the planner: no step it returns for any observation breaks a rule in
//! [`super::rules`], and a simulated cluster it drives (with crashes, lost data and spec edits
//! that then stop) converges to `Done` with spec.size healthy voters at spec.version.
//!
//! The simulation is a small pure model of etcd plus a runtime: enough to apply every
//! [`Step`], crash an executor between the parts of a step, and say who is healthy. It is
//! as rude as real etcd and the runtimes (issue 13, part 1):
//! - no member answers member list or status without a leader (quorum); a lone member of
//!   an unformed bootstrap answers nothing;
//! - the answering member's list may lag ([`Failure::Lag`]): changes since are not in it;
//! - `member add` is refused while a learner is in flight, while a voter is not connected,
//!   and for 5 s after a membership change (strict reconfiguration; [`Failure::Rush`]
//!   makes passes come 1 s apart to hit that window);
//! - deleted runtime objects stay terminating for 20 s: a create of the name is refused,
//!   and re-adding a deleted member's name is a test failure;
//! - creates on a failed object "succeed" and start nothing ([`Failure::FailObject`]);
//! - reservations never started and bootstraps interrupted after k of n members
//!   ([`Failure::Crash`] up to 5 parts);
//! - an upgrade to a release that never comes up ([`Failure::BadUpgrade`]), also in the
//!   middle of a roll; the status write after each pass keeps each member's served version
//!   ([`Sim::record`]), lost when the executor crashes.
//!
//! A call real etcd (or the runtime) would refuse is a refusal (the executor gets an error,
//! nothing more changes); one a correct planner never makes on a fresh view (a change
//! without quorum, promoting a learner that is behind, a removal that loses quorum) is a
//! test failure, so a planner bug shows up as an error, not a wrong answer.

use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::{FileFailurePersistence, TestCaseError};
use semver::Version;

use super::invariants::broken_rules;
use super::observed::{
    EtcdMemberState, EtcdView, MemberName, Observed, ObservedMember, Policy, RuntimeState,
};
use super::quorum::{is_caught_up, quorum};
use super::{BlockReason, Step, next_step};
use crate::api::EtcdClusterSpec;
use crate::etcd::{ClusterId, MemberId};

const CLUSTER: &str = "example";
const VERSIONS: [&str; 5] = ["3.4.23", "3.5.9", "3.5.16", "3.6.0", "3.7.0"];

fn version(s: &str) -> Version {
    Version::parse(s).unwrap_or_else(|_| Version::new(3, 5, 16))
}

/// `cases` cases; a failing case is saved next to this file (`proptests.regressions`) and
/// replayed first on later runs.
fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("regressions"))),
        ..ProptestConfig::default()
    }
}

// ---------------------------------------------------------------- random observations

/// What a generated member is, before its flags are applied.
#[derive(Clone, Copy, Debug)]
enum Kind {
    Voter,
    Learner,
    /// etcd lists it, it never started; runtime member exists.
    Unstarted {
        learner: bool,
    },
    /// Runtime member only (a reservation or a leftover, by its flags).
    RuntimeOnly,
    /// etcd member only, started (data gone).
    EtcdOnly,
    /// etcd member only, never started.
    UnstartedEtcdOnly,
}

fn kind() -> impl Strategy<Value = Kind> {
    prop_oneof![
        8 => Just(Kind::Voter),
        2 => Just(Kind::Learner),
        1 => any::<bool>().prop_map(|learner| Kind::Unstarted { learner }),
        1 => Just(Kind::RuntimeOnly),
        1 => Just(Kind::EtcdOnly),
        1 => Just(Kind::UnstartedEtcdOnly),
    ]
}

#[derive(Clone, Debug)]
struct GenMember {
    kind: Kind,
    running: bool,
    has_data: bool,
    healthy: bool,
    version: usize,
    raft_index: Option<u64>,
    down_secs: u64,
    /// Its status's record: none, the version it runs, or 3.5.16.
    served: u8,
}

fn gen_member() -> impl Strategy<Value = GenMember> {
    (
        kind(),
        prop::bool::weighted(0.8),
        prop::bool::weighted(0.85),
        prop::bool::weighted(0.8),
        // 3.4.23 .. 3.6.0 only: runtimes run supported versions
        prop_oneof![1 => Just(0usize), 1 => Just(1), 6 => Just(2), 2 => Just(3)],
        prop::option::weighted(0.9, 0u64..=1_100),
        prop_oneof![Just(0u64), 1u64..=300],
        0u8..3,
    )
        .prop_map(
            |(kind, running, has_data, healthy, version, raft_index, down_secs, served)| {
                GenMember {
                    kind,
                    running,
                    has_data,
                    healthy,
                    version,
                    raft_index,
                    down_secs,
                    served,
                }
            },
        )
}

/// A healthy voter, mostly at 3.5.16: many observations are all (or mostly) healthy, which
/// is where scale and upgrade steps happen.
fn healthy_voter() -> impl Strategy<Value = GenMember> {
    prop_oneof![1 => Just(0usize), 1 => Just(1), 12 => Just(2), 4 => Just(3)].prop_map(|version| {
        GenMember {
            kind: Kind::Voter,
            running: true,
            has_data: true,
            healthy: true,
            version,
            raft_index: Some(1_000),
            down_secs: 0,
            served: 1,
        }
    })
}

fn gen_spec() -> impl Strategy<Value = EtcdClusterSpec> {
    (
        prop_oneof![20 => 1i32..=9, 1 => Just(0), 1 => Just(10)],
        prop_oneof![1 => Just(0usize), 1 => Just(1), 4 => Just(2), 3 => Just(3), 1 => Just(4)],
        prop::bool::weighted(0.05),
    )
        .prop_map(|(size, v, paused)| {
            let mut spec = EtcdClusterSpec::new(size, VERSIONS[v]);
            spec.paused = paused;
            spec
        })
}

fn build_observed(
    members: &[GenMember],
    answered: bool,
    leader_pick: usize,
    highest: Option<u32>,
) -> Observed {
    let leader_raft_index = 1_000;
    let mut out = Vec::new();
    for (i, g) in members.iter().enumerate() {
        let ordinal = u32::try_from(i).unwrap_or(u32::MAX);
        let name = MemberName::new(CLUSTER, ordinal);
        let ver = version(VERSIONS[g.version]);
        let scheme = if (i + leader_pick) % 5 == 4 {
            "http"
        } else {
            "https"
        };
        let runtime = RuntimeState {
            running: g.running,
            has_data: g.has_data,
            version: ver.clone(),
            // One in five still plaintext (a cluster moving to TLS).
            peer_url: format!("{scheme}://127.0.0.1:{}", 2380 + i),
            client_url: format!("{scheme}://127.0.0.1:{}", 3379 + i),
            // Varied by position: some restarted recently, some long ago; one in four on
            // storage that does not survive a restart.
            started_for: g
                .running
                .then(|| Duration::from_secs(u64::try_from(i * 97 % 900).unwrap_or(0))),
            restart_keeps_data: i % 4 != 3,
            // Some members started on certificates installed since (a CA rotation phase).
            trust_stamp: Some(
                if (i + leader_pick).is_multiple_of(3) {
                    "old"
                } else {
                    "new"
                }
                .into(),
            ),
        };
        let peer_url = runtime.peer_url.clone();
        let etcd = |learner: bool, started: bool| EtcdMemberState {
            id: MemberId(0x1000 + u64::from(ordinal)),
            is_learner: learner,
            started,
            healthy: started && g.healthy,
            version: (started && g.running).then(|| ver.clone()),
            raft_index: if learner {
                g.raft_index
            } else {
                Some(leader_raft_index)
            },
            is_leader: false,
            peer_urls: vec![peer_url.clone()],
        };
        let (runtime, etcd) = match g.kind {
            Kind::Voter => (Some(runtime), Some(etcd(false, true))),
            Kind::Learner => (Some(runtime), Some(etcd(true, true))),
            Kind::Unstarted { learner } => (Some(runtime), Some(etcd(learner, false))),
            Kind::RuntimeOnly => (Some(runtime), None),
            Kind::EtcdOnly => (None, Some(etcd(false, true))),
            Kind::UnstartedEtcdOnly => (None, Some(etcd(true, false))),
        };
        let served_at = match g.served {
            0 => None,
            1 => Some(ver.clone()),
            _ => Some(Version::new(3, 5, 16)),
        };
        out.push(ObservedMember {
            name,
            runtime,
            etcd: if answered { etcd } else { None },
            unhealthy_for: None,
            served_at,
        });
    }
    for (m, g) in out.iter_mut().zip(members) {
        if !m.is_healthy() {
            m.unhealthy_for = Some(Duration::from_secs(g.down_secs));
        }
    }
    let voters: Vec<MemberId> = out
        .iter()
        .filter(|m| m.is_voter())
        .filter_map(ObservedMember::id)
        .collect();
    // leader_pick past the voters: no leader known
    let leader = voters.get(leader_pick).copied();
    for m in &mut out {
        if let Some(e) = m.etcd.as_mut() {
            e.is_leader = Some(e.id) == leader;
        }
    }
    Observed {
        cluster_name: CLUSTER.to_string(),
        highest_ordinal_used: highest,
        recorded_cluster_id: None,
        served_version: None,
        members: out,
        etcd: answered.then_some(EtcdView {
            cluster_id: ClusterId(0xc1),
            leader,
            leader_raft_index,
        }),
        trust_stamp: Some("new".into()),
    }
}

fn gen_observed() -> impl Strategy<Value = Observed> {
    (
        prop::collection::vec(prop_oneof![3 => healthy_voter(), 1 => gen_member()], 0..=9),
        prop::bool::weighted(0.85),
        0usize..12,
        prop::option::weighted(0.2, 0u32..15),
        // A formed cluster (status has a cluster id) that may have lost every member.
        prop::bool::weighted(0.5),
    )
        .prop_map(|(members, answered, leader_pick, highest, formed)| {
            let mut observed = build_observed(&members, answered, leader_pick, highest);
            observed.recorded_cluster_id = formed.then_some(ClusterId(0xc1));
            observed
        })
}

proptest! {
    #![proptest_config(config(3_000))]

    #[test]
    fn no_step_breaks_a_rule(spec in gen_spec(), observed in gen_observed()) {
        let policy = Policy::default();
        let step = next_step(&spec, &observed, &policy);
        let broken = broken_rules(&step, &spec, &observed);
        prop_assert!(broken.is_empty(), "{step} breaks {broken:?}\n{observed:#?}");
        let mut reordered = observed.clone();
        reordered.members.reverse();
        prop_assert_eq!(&step, &next_step(&spec, &reordered, &policy), "member order matters");
        prop_assert!(!step.to_string().contains('\n'));
    }
}

proptest! {
    #![proptest_config(config(2_000))]

    /// Recovery never starts on a cluster with quorum or one a voter answers for, and
    /// fromSurvivor picks the most up-to-date answering voter and never sets it aside.
    #[test]
    fn recovery_only_without_quorum_and_from_the_freshest(
        spec in gen_spec(),
        observed in gen_observed(),
        trigger in prop::option::of(prop_oneof![Just("fromSurvivor"), Just("fromBackup:b")]),
    ) {
        use super::recovery::{Decision, Input, RecoveryAction, plan};
        use crate::api::recovery::{RecoveryFromBackup, RecoveryMode, RecoverySpec, RecoveryStatus};
        let mut spec = spec;
        spec.recovery = Some(RecoverySpec {
            from_backup: Some(RecoveryFromBackup { backup_name: "b".into() }),
            from_survivor: Some(true),
            after: Some("0s".into()),
        });
        let now = crate::api::condition::now();
        let status = RecoveryStatus {
            quorum_lost_since: Some(now.clone()),
            ..RecoveryStatus::default()
        };
        let step = next_step(&spec, &observed, &Policy::default());
        let decision = plan(&Input {
            spec: &spec,
            valid: crate::api::validate::cluster(CLUSTER, &spec).is_valid(),
            supported: true,
            backups: true,
            trigger,
            status: Some(&status),
            observed: &observed,
            step: &step,
            cluster_id: Some("c1"),
            namespace: "default",
            now: &now,
            restore_failed: None,
        });
        let shown = decision.step(step.clone()).to_string();
        prop_assert!(!shown.contains('\n'));
        let Decision::Act { start, mode, action } = &decision else {
            return Ok(());
        };
        prop_assert!(observed.formed() && !super::quorum::has_quorum(&observed), "{decision:?}");
        prop_assert!(
            !observed.voters().any(|m| m.etcd.as_ref().is_some_and(|e| e.healthy)),
            "{decision:?}"
        );
        prop_assert!(start.is_some());
        if *mode == RecoveryMode::FromSurvivor {
            let run = start.as_deref().unwrap();
            let survivor = run.survivor.clone().unwrap_or_default();
            let s = observed.member(&MemberName::from(survivor.as_str()));
            prop_assert!(s.is_some_and(|s| s.is_voter() && s.restart_keeps_data() && s.is_running()));
            let best = observed
                .voters()
                .filter(|m| m.restart_keeps_data() && m.is_running())
                .filter_map(|m| m.etcd.as_ref()?.raft_index)
                .max();
            prop_assert_eq!(run.survivor_raft_index.and_then(|i| u64::try_from(i).ok()), best);
            if let RecoveryAction::SetAside { members } = action {
                prop_assert!(!members.iter().any(|m| m.as_str() == survivor));
            }
        }
    }
}

// ---------------------------------------------------------------- the simulated cluster

#[derive(Clone, Debug)]
struct SimRuntime {
    /// When it was last started (sim clock).
    started_at: Duration,
    running: bool,
    has_data: bool,
    version: Version,
    /// A failed object (a Pod in phase Failed): a create "succeeds" on it (already exists)
    /// and nothing runs; only a restart or an upgrade (delete and create) replaces it.
    failed: bool,
}

#[derive(Clone, Debug)]
struct SimEtcd {
    id: MemberId,
    learner: bool,
    started: bool,
    raft_index: u64,
}

#[derive(Clone, Debug)]
struct SimMember {
    name: MemberName,
    runtime: Option<SimRuntime>,
    etcd: Option<SimEtcd>,
    down_since: Option<Duration>,
    /// Until then its process dies as soon as it starts.
    broken_until: Option<Duration>,
    /// Until then its process runs but does not answer.
    hung_until: Option<Duration>,
    /// Since when it has served without a break: etcd's peers count it as connected.
    serving_since: Option<Duration>,
    /// The version the operator last saw it answer healthy at: its status's record, kept
    /// while it is down ([`Sim::record`]).
    served_at: Option<Version>,
}

impl SimMember {
    fn new(name: MemberName) -> Self {
        Self {
            name,
            runtime: None,
            etcd: None,
            down_since: None,
            broken_until: None,
            hung_until: None,
            serving_since: None,
            served_at: None,
        }
    }

    /// Running with data and joined: it answers and votes.
    fn is_serving(&self) -> bool {
        self.runtime
            .as_ref()
            .is_some_and(|r| r.running && r.has_data)
            && self.etcd.as_ref().is_some_and(|e| e.started)
            && self.hung_until.is_none()
    }

    fn is_voter(&self) -> bool {
        self.etcd.as_ref().is_some_and(|e| !e.learner)
    }
}

/// etcd and a runtime, reduced to what the planner can see and do.
#[derive(Clone, Debug, Default)]
struct Sim {
    members: Vec<SimMember>,
    leader: Option<MemberId>,
    next_id: u64,
    clock: Duration,
    raft_index: u64,
    highest_ordinal: Option<u32>,
    /// A quorum answered once: the status recorded the cluster id.
    formed: bool,
    /// The lowest version serving members ran when a quorum last answered.
    served: Option<Version>,
    /// When the member list last changed: etcd's strict reconfiguration check refuses
    /// `member add` ("unhealthy cluster") until every voter has been connected for 5 s.
    last_change: Option<Duration>,
    /// The answering member's member list lags: it shows this snapshot until then.
    stale: Option<(MemberList, Duration)>,
    /// Names whose runtime objects were deleted and are still going away: hidden from
    /// observation (as the runtimes do), and a create of the name is refused until then.
    terminating: Vec<(MemberName, Duration)>,
    /// A release that never comes up: a member run at it dies at once.
    bad_version: Option<Version>,
    /// Steps left that the next pass follows at once (1 s later instead of a tick).
    rush: u32,
    /// What etcd or the runtime refused in the last step (the executor got an error and
    /// changed nothing more); taken by the run loop for its trace.
    refused: Option<String>,
    /// Refusals in all, for the report.
    refusals: usize,
}

/// A member list as one member saw it: each name and what etcd listed for it.
type MemberList = Vec<(MemberName, Option<SimEtcd>)>;

/// etcd's `HealthInterval`: `member add` needs every voter connected for this long.
const HEALTH_INTERVAL: Duration = Duration::from_secs(5);
/// How long a deleted runtime object stays terminating.
const TERMINATING_FOR: Duration = Duration::from_secs(20);

const TICK: Duration = Duration::from_secs(10);

impl Sim {
    /// `n` healthy voters at `v`, led by the first.
    fn healthy(n: u32, v: &Version) -> Self {
        let mut sim = Sim {
            raft_index: 100,
            ..Default::default()
        };
        for o in 0..n {
            let id = sim.new_id();
            let mut m = SimMember::new(MemberName::new(CLUSTER, o));
            m.runtime = Some(SimRuntime {
                started_at: Duration::ZERO,
                running: true,
                has_data: true,
                version: v.clone(),
                failed: false,
            });
            m.etcd = Some(SimEtcd {
                id,
                learner: false,
                started: true,
                raft_index: 100,
            });
            m.serving_since = Some(Duration::ZERO);
            sim.members.push(m);
            sim.highest_ordinal = Some(o);
        }
        sim.settle();
        sim
    }

    fn new_id(&mut self) -> MemberId {
        self.next_id += 1;
        MemberId(0xa000 + self.next_id)
    }

    fn voters(&self) -> usize {
        self.members.iter().filter(|m| m.is_voter()).count()
    }

    fn has_quorum(&self) -> bool {
        let serving = self
            .members
            .iter()
            .filter(|m| m.is_voter() && m.is_serving())
            .count();
        self.voters() > 0 && serving >= quorum(self.voters())
    }

    fn find(&mut self, name: &MemberName) -> Result<&mut SimMember, String> {
        self.members
            .iter_mut()
            .find(|m| &m.name == name)
            .ok_or_else(|| format!("no member {name}"))
    }

    fn find_id(&mut self, id: MemberId) -> Result<&mut SimMember, String> {
        self.members
            .iter_mut()
            .find(|m| m.etcd.as_ref().is_some_and(|e| e.id == id))
            .ok_or_else(|| format!("no member {id}"))
    }

    fn note_ordinal(&mut self, name: &MemberName) {
        self.highest_ordinal = self.highest_ordinal.max(name.ordinal());
    }

    fn is_terminating(&self, name: &MemberName) -> bool {
        self.terminating.iter().any(|(n, _)| n == name)
    }

    /// The runtime deleted `name`'s object: it goes away for a while.
    fn deleted(&mut self, name: &MemberName) {
        self.terminating.retain(|(n, _)| n != name);
        self.terminating
            .push((name.clone(), self.clock + TERMINATING_FOR));
    }

    /// etcd or the runtime refused: the executor got an error and did nothing more.
    fn refuse(&mut self, why: String) -> Result<(), String> {
        self.refused = Some(why);
        self.refusals += 1;
        Ok(())
    }

    /// A membership call on a stale view: what etcd refuses is a refusal, not a defect.
    fn refuse_or_fail(&mut self, why: String) -> Result<(), String> {
        if self.stale.is_some() {
            self.refuse(why)
        } else {
            Err(why)
        }
    }

    /// Why etcd's strict reconfiguration check refuses a `member add` now, if it does.
    fn add_refusal(&self) -> Option<String> {
        if self
            .members
            .iter()
            .any(|m| m.etcd.as_ref().is_some_and(|e| e.learner))
        {
            return Some("too many learner members in cluster".into());
        }
        let since = self.clock.checked_sub(HEALTH_INTERVAL);
        let connected = |m: &SimMember| {
            m.serving_since
                .is_some_and(|t| since.is_some_and(|since| t <= since))
        };
        let recent = self
            .last_change
            .is_some_and(|t| self.clock < t + HEALTH_INTERVAL);
        if recent || self.members.iter().any(|m| m.is_voter() && !connected(m)) {
            return Some("unhealthy cluster".into());
        }
        None
    }

    fn forget_empty(&mut self) {
        self.members
            .retain(|m| m.runtime.is_some() || m.etcd.is_some());
    }

    fn observe(&self) -> Observed {
        // Member list and status need a leader: without quorum no member answers (a lone
        // member of an unformed bootstrap does not even serve its client port).
        let quorum = self.has_quorum();
        let answered = quorum;
        // The answering member's list: its stale snapshot while it lags, else the real one.
        let listed = |m: &SimMember| -> Option<SimEtcd> {
            match &self.stale {
                Some((snapshot, _)) => snapshot
                    .iter()
                    .find(|(n, _)| *n == m.name)
                    .and_then(|(_, e)| e.clone()),
                None => m.etcd.clone(),
            }
        };
        let mut sim_members: Vec<SimMember> = self.members.clone();
        // A lagging list still shows members removed since (their runtime gone with them).
        if let Some((snapshot, _)) = &self.stale {
            for (name, e) in snapshot {
                if e.is_some() && !sim_members.iter().any(|m| m.name == *name) {
                    let mut gone = SimMember::new(name.clone());
                    gone.etcd = e.clone();
                    sim_members.push(gone);
                }
            }
        }
        let members = sim_members
            .iter()
            .map(|m| {
                let serving = m.is_serving();
                let etcd = listed(m)
                    .as_ref()
                    .filter(|_| answered)
                    .map(|e| EtcdMemberState {
                        id: e.id,
                        is_learner: e.learner,
                        started: e.started,
                        healthy: serving && (e.learner || quorum),
                        version: m
                            .runtime
                            .as_ref()
                            .filter(|_| serving)
                            .map(|r| r.version.clone()),
                        raft_index: Some(if e.learner {
                            e.raft_index
                        } else {
                            self.raft_index
                        }),
                        is_leader: Some(e.id) == self.leader,
                        peer_urls: vec![format!("http://{}:2380", m.name)],
                    });
                ObservedMember {
                    name: m.name.clone(),
                    runtime: m.runtime.as_ref().map(|r| RuntimeState {
                        running: r.running,
                        has_data: r.has_data,
                        version: r.version.clone(),
                        peer_url: format!("http://{}:2380", m.name),
                        client_url: format!("http://{}:2379", m.name),
                        started_for: r.running.then(|| self.clock.saturating_sub(r.started_at)),
                        restart_keeps_data: true,
                        trust_stamp: None,
                    }),
                    etcd,
                    unhealthy_for: m.down_since.map(|t| self.clock.saturating_sub(t)),
                    served_at: m.served_at.clone(),
                }
            })
            .collect();
        Observed {
            cluster_name: CLUSTER.to_string(),
            highest_ordinal_used: self.highest_ordinal,
            recorded_cluster_id: self.formed.then_some(ClusterId(0xc1)),
            served_version: self.served.clone(),
            members,
            etcd: answered.then_some(EtcdView {
                cluster_id: ClusterId(0xc1),
                leader: self.leader,
                leader_raft_index: self.raft_index,
            }),
            trust_stamp: None,
        }
    }

    /// The status write after an observation: each member that answered healthy has the
    /// version it answered at recorded (`reconcile::status`); the others keep theirs.
    fn record(&mut self, observed: &Observed) {
        for om in &observed.members {
            let answered = om
                .etcd
                .as_ref()
                .filter(|e| e.healthy && om.is_running())
                .and_then(|e| e.version.clone());
            if let Some(version) = answered
                && let Some(m) = self.members.iter_mut().find(|m| m.name == om.name)
            {
                m.served_at = Some(version);
            }
        }
    }

    /// Applies `step`, its executor crashing after `parts` of it when given.
    fn apply(&mut self, step: &Step, parts: Option<usize>) -> Result<(), String> {
        let mut budget = parts.unwrap_or(usize::MAX);
        let mut part = move || {
            let go = budget > 0;
            budget = budget.saturating_sub(1);
            go
        };
        match step {
            Step::Bootstrap { members, version } => {
                if self.formed {
                    return Err("bootstrap of a formed cluster".into());
                }
                let has_data = |m: &SimMember| m.runtime.as_ref().is_some_and(|r| r.has_data);
                if self
                    .members
                    .iter()
                    .any(|m| has_data(m) && !members.contains(&m.name))
                {
                    return Err("bootstrap over data".into());
                }
                if let Some(name) = members.iter().find(|n| {
                    self.is_terminating(n)
                        && self
                            .members
                            .iter()
                            .all(|m| m.name != **n || m.runtime.is_none())
                }) {
                    return self.refuse(format!("create {name}: still terminating"));
                }
                if !part() {
                    return Ok(());
                }
                // A fresh bootstrap writes a new member list; a resumed one (members of the
                // set already have data) keeps the one its first members started with.
                if !self.members.iter().any(has_data) {
                    for m in &mut self.members {
                        m.etcd = None;
                    }
                }
                for name in members {
                    if self.find(name).is_err() {
                        self.members.push(SimMember::new(name.clone()));
                    }
                    self.note_ordinal(name);
                    let m = self.find(name)?;
                    m.runtime.get_or_insert(SimRuntime {
                        started_at: Duration::ZERO,
                        running: false,
                        has_data: false,
                        version: version.clone(),
                        failed: false,
                    });
                }
                for name in members {
                    if !part() {
                        return Ok(());
                    }
                    // The first member to start writes the initial member list (ids come
                    // from the peer URLs and the token: a resumed member gets its own).
                    for n in members {
                        if self.find(n)?.etcd.is_none() {
                            let id = self.new_id();
                            self.find(n)?.etcd = Some(SimEtcd {
                                id,
                                learner: false,
                                started: false,
                                raft_index: 0,
                            });
                        }
                    }
                    let (now, bad) = (self.clock, self.bad_version.clone());
                    start(self.find(name)?, now, bad.as_ref());
                }
            }
            Step::AddLearner { name, version } => {
                if self.find(name).is_ok_and(|m| m.etcd.is_some()) {
                    return self.refuse_or_fail(format!("{name} is already in etcd"));
                }
                if self.is_terminating(name) {
                    return Err(format!(
                        "add {name}: the name of a deleted member is re-added"
                    ));
                }
                if !part() {
                    return Ok(());
                }
                if self.find(name).is_err() {
                    self.members.push(SimMember::new(name.clone()));
                }
                self.note_ordinal(name);
                self.find(name)?.runtime.get_or_insert(SimRuntime {
                    started_at: Duration::ZERO,
                    running: false,
                    has_data: false,
                    version: version.clone(),
                    failed: false,
                });
                if !part() {
                    return Ok(());
                }
                if !self.has_quorum() {
                    return self.refuse_or_fail("member add without quorum".into());
                }
                if let Some(why) = self.add_refusal() {
                    return self.refuse(format!("member add {name}: {why}"));
                }
                self.last_change = Some(self.clock);
                let id = self.new_id();
                self.find(name)?.etcd = Some(SimEtcd {
                    id,
                    learner: true,
                    started: false,
                    raft_index: 0,
                });
                if !part() {
                    return Ok(());
                }
                let (now, bad) = (self.clock, self.bad_version.clone());
                start(self.find(name)?, now, bad.as_ref());
            }
            Step::StartMember { name, id } => {
                let (now, bad) = (self.clock, self.bad_version.clone());
                let m = self.find(name)?;
                if m.etcd.as_ref().is_none_or(|e| e.id != *id || e.started) {
                    return self.refuse_or_fail(format!("{name} is not an unstarted {id}"));
                }
                start(m, now, bad.as_ref());
            }
            Step::PromoteLearner { id, .. } => {
                let quorum = self.has_quorum();
                let leader_index = self.raft_index;
                let stale = self.stale.is_some();
                let ready = self
                    .members
                    .iter()
                    .filter_map(|m| m.etcd.as_ref())
                    .find(|e| e.id == *id)
                    .map(|e| e.learner && quorum && is_caught_up(Some(e.raft_index), leader_index));
                match ready {
                    Some(true) => {}
                    None if stale => return self.refuse(format!("promote {id}: member not found")),
                    _ => {
                        return self.refuse_or_fail(format!(
                            "promote {id}: not a learner, no quorum or behind"
                        ));
                    }
                }
                self.last_change = Some(self.clock);
                if let Some(e) = self.find_id(*id)?.etcd.as_mut() {
                    e.learner = false;
                }
            }
            Step::RemoveMember { id, .. } => {
                if !self.has_quorum() {
                    return self.refuse_or_fail("member remove without quorum".into());
                }
                if self.find_id(*id).is_err() {
                    return self.refuse_or_fail(format!("member remove {id}: member not found"));
                }
                if self.stale.is_some() {
                    // etcd refuses a removal that leaves fewer started voters than a quorum
                    let voters = self.voters().saturating_sub(1);
                    let serving = self
                        .members
                        .iter()
                        .filter(|m| m.is_voter() && m.is_serving())
                        .filter(|m| m.etcd.as_ref().is_some_and(|e| e.id != *id))
                        .count();
                    if voters > 0 && serving < quorum(voters) {
                        return self
                            .refuse(format!("member remove {id}: not enough started members"));
                    }
                }
                if !part() {
                    return Ok(());
                }
                self.last_change = Some(self.clock);
                let m = self.find_id(*id)?;
                m.etcd = None;
                let name = m.name.clone();
                self.forget_empty();
                if self.leader == Some(*id) {
                    self.leader = None;
                }
                if !self.has_quorum() {
                    return Err(format!("removing {id} lost quorum"));
                }
                if !part() {
                    return Ok(());
                }
                // then the runtime deletes the member and its data
                if self
                    .members
                    .iter()
                    .any(|m| m.name == name && m.runtime.is_some())
                {
                    self.deleted(&name);
                }
                self.members.retain(|m| m.name != name);
            }
            Step::DeleteRuntimeMember { name } => {
                self.find(name)?.runtime = None;
                self.deleted(name);
                self.forget_empty();
            }
            Step::RestartMember { name } => {
                let (now, bad) = (self.clock, self.bad_version.clone());
                let m = self.find(name)?;
                let Some(r) = m.runtime.as_mut().filter(|r| r.has_data) else {
                    return Err(format!("restart {name} without data"));
                };
                // a restart deletes the object and creates it again
                r.failed = false;
                start(m, now, bad.as_ref());
            }
            Step::MoveLeader { from_id, to_id, .. } => {
                if self.leader != Some(*from_id) {
                    return Err(format!("move leader: {from_id} does not lead"));
                }
                self.leader = Some(*to_id);
            }
            Step::UpgradeMember { name, to, .. } | Step::RollBackMember { name, to } => {
                if !part() {
                    return Ok(());
                }
                let now = self.clock;
                let comes_up = self.bad_version.as_ref() != Some(to);
                let m = self.find(name)?;
                let Some(r) = m.runtime.as_mut() else {
                    return Err(format!("upgrade {name} without runtime member"));
                };
                r.started_at = now;
                r.version = to.clone();
                r.running = false;
                r.failed = false;
                if !part() {
                    return Ok(());
                }
                r.running = r.has_data && comes_up;
            }
            // The simulation runs plaintext members without certificates: nothing to
            // reload, nothing to move to TLS with.
            Step::ReloadTrust { name, .. }
            | Step::MoveTransport { name, .. }
            | Step::UpdatePeerUrl { name, .. } => {
                return Err(format!("{step}: {name} has no certificates"));
            }
            // next_step never plans maintenance or recovery (the reconcile pass asks
            // plan::maintenance and plan::recovery).
            Step::Maintain { .. }
            | Step::Recover { .. }
            | Step::Wait { .. }
            | Step::Blocked { .. }
            | Step::Paused
            | Step::Done => {}
        }
        Ok(())
    }

    /// Time passes: learners catch up, a leader is elected, down timers run.
    fn settle(&mut self) {
        self.settle_for(TICK);
    }

    /// `dt` passes: learners catch up, a leader is elected, down timers run.
    fn settle_for(&mut self, dt: Duration) {
        self.clock += dt;
        self.raft_index += 5;
        let now = self.clock;
        self.terminating.retain(|(_, until)| *until > now);
        if self.stale.as_ref().is_some_and(|(_, until)| *until <= now) {
            self.stale = None;
        }
        let bad = self.bad_version.clone();
        for m in &mut self.members {
            match (m.broken_until, m.runtime.as_mut()) {
                (Some(until), Some(r)) if until > now => r.running = false,
                _ => m.broken_until = None,
            }
            if let Some(r) = m.runtime.as_mut()
                && (r.failed || bad.as_ref() == Some(&r.version))
            {
                r.running = false;
            }
            if m.hung_until.is_some_and(|until| until <= now) {
                m.hung_until = None;
            }
        }
        let quorum = self.has_quorum();
        self.formed |= quorum;
        if quorum {
            self.served = self
                .members
                .iter()
                .filter(|m| m.is_serving())
                .filter_map(|m| m.runtime.as_ref().map(|r| r.version.clone()))
                .min();
        }
        let index = self.raft_index;
        for m in &mut self.members {
            // a running process with its data joins
            let running = m.runtime.as_ref().is_some_and(|r| r.running && r.has_data);
            if let Some(e) = m.etcd.as_mut().filter(|_| running) {
                e.started = true;
            }
            let serving = m.is_serving();
            if let Some(e) = m.etcd.as_mut() {
                // a learner halves its distance to the leader each tick
                if e.learner && serving && quorum {
                    e.raft_index += index.saturating_sub(e.raft_index) / 2;
                }
            }
        }
        let leader_ok = self.leader.is_some_and(|id| {
            self.members.iter().any(|m| {
                m.is_voter() && m.is_serving() && m.etcd.as_ref().is_some_and(|e| e.id == id)
            })
        });
        if !quorum {
            self.leader = None;
        } else if !leader_ok {
            self.leader = self
                .members
                .iter()
                .filter(|m| m.is_voter() && m.is_serving())
                .filter_map(|m| m.etcd.as_ref().map(|e| e.id))
                .min();
        }
        for m in &mut self.members {
            let serving = m.is_serving();
            if !serving {
                m.serving_since = None;
            } else if m.serving_since.is_none() {
                m.serving_since = Some(now);
            }
            if serving && quorum {
                m.down_since = None;
            } else if m.down_since.is_none() {
                m.down_since = Some(now);
            }
        }
    }

    /// Whether the cluster is what `spec` asks for.
    fn converged(&self, size: usize, target: &Version) -> bool {
        self.has_quorum()
            && self.members.len() == size
            && self.members.iter().all(|m| {
                m.is_voter()
                    && m.is_serving()
                    && m.runtime.as_ref().is_some_and(|r| r.version == *target)
            })
    }
}

/// Starts the member's process; a broken one (or one at a release that never comes up)
/// writes its data dir and dies before joining. The create of a failed object "succeeds"
/// (it already exists) and starts nothing.
fn start(m: &mut SimMember, now: Duration, bad: Option<&Version>) {
    if m.runtime.as_ref().is_some_and(|r| r.failed) {
        return;
    }
    let broken =
        m.broken_until.is_some() || m.runtime.as_ref().is_some_and(|r| Some(&r.version) == bad);
    if let Some(r) = m.runtime.as_mut() {
        r.started_at = now;
        r.running = !broken;
        r.has_data = true;
    }
    if let Some(e) = m.etcd.as_mut().filter(|_| !broken) {
        e.started = true;
    }
}

/// Something that goes wrong during the first [`FAILURE_STEPS`] steps.
#[derive(Clone, Debug)]
enum Failure {
    /// The process of the n-th member stops; its data stays.
    Kill(usize),
    /// The n-th member loses its data (only when enough voters keep theirs); with `true`
    /// its runtime member vanishes altogether.
    Wipe(usize, bool),
    /// The n-th member's process dies whenever started, for this many ticks.
    Break(usize, u32),
    /// The n-th member's process runs but does not answer, for this many ticks.
    Hang(usize, u32),
    /// The executor crashes after this many parts of this step.
    Crash(usize),
    /// The user changes spec.size.
    Resize(i32),
    /// The user changes spec.version to another 3.5 patch (when the target is a 3.5).
    Patch(usize),
    /// The answering member's member list lags for this many ticks (a partitioned
    /// member's stale view): changes made meanwhile are not in it.
    Lag(u32),
    /// The next passes come at once (1 s apart), inside etcd's 5 s strict
    /// reconfiguration window after a membership change.
    Rush(u32),
    /// The n-th member's runtime object fails (a Pod in phase Failed): creates on it
    /// "succeed" and start nothing until it is deleted or restarted.
    FailObject(usize),
    /// The user upgrades a formed 3.5 cluster to a 3.5 patch that never comes up.
    BadUpgrade,
}

/// The release of [`Failure::BadUpgrade`].
const BAD_PATCH: &str = "3.5.21";

const FAILURE_STEPS: usize = 20;
/// Steps allowed after the failures stop; the worst seen is 39 (390 s simulated) in
/// 20 000 cases.
const CONVERGE_STEPS: usize = 60;
const PATCHES: [&str; 3] = ["3.5.9", "3.5.16", "3.5.20"];

fn failure() -> impl Strategy<Value = Failure> {
    prop_oneof![
        3 => (0usize..9).prop_map(Failure::Kill),
        2 => (0usize..9, prop::bool::weighted(0.3)).prop_map(|(n, vanish)| Failure::Wipe(n, vanish)),
        // at most 80 s: longer than the grace, shorter than the upgrade deadline
        2 => (0usize..9, 1u32..=8).prop_map(|(n, ticks)| Failure::Break(n, ticks)),
        2 => (0usize..9, 1u32..=8).prop_map(|(n, ticks)| Failure::Hang(n, ticks)),
        // 0..6 parts: a bootstrap interrupted after k of n members, reservations never
        // started, an add between its member add and its start
        3 => (0usize..6).prop_map(Failure::Crash),
        2 => (1u32..=3).prop_map(Failure::Lag),
        2 => (1u32..=6).prop_map(Failure::Rush),
        1 => (0usize..9).prop_map(Failure::FailObject),
        1 => Just(Failure::BadUpgrade),
        1 => (1i32..=5).prop_map(Failure::Resize),
        1 => (0usize..PATCHES.len()).prop_map(Failure::Patch),
    ]
}

#[derive(Clone, Debug)]
struct Case {
    /// Healthy voters at 3.5.16 to start from; 0 for nothing at all.
    initial: u32,
    spec: EtcdClusterSpec,
    failures: Vec<(usize, Failure)>,
}

fn case() -> impl Strategy<Value = Case> {
    (
        0u32..=5,
        1i32..=5,
        prop::sample::select(vec!["3.5.9", "3.5.16", "3.5.20", "3.6.0"]),
        prop::collection::vec((0..FAILURE_STEPS, failure()), 0..16),
    )
        .prop_map(|(initial, size, target, failures)| Case {
            initial,
            spec: EtcdClusterSpec::new(size, target),
            failures,
        })
}

fn inject(sim: &mut Sim, spec: &mut EtcdClusterSpec, failure: &Failure) {
    let count = sim.members.len().max(1);
    match failure {
        Failure::Kill(n) => {
            if let Some(r) = sim
                .members
                .get_mut(n % count)
                .and_then(|m| m.runtime.as_mut())
            {
                r.running = false;
            }
        }
        Failure::Wipe(n, vanish) => {
            let victim = n % count;
            let voters = sim.voters();
            let keep = sim
                .members
                .iter()
                .enumerate()
                .filter(|(i, m)| {
                    *i != victim && m.is_voter() && m.runtime.as_ref().is_some_and(|r| r.has_data)
                })
                .count();
            if (voters == 0 || keep >= quorum(voters))
                && let Some(m) = sim.members.get_mut(victim)
            {
                if *vanish {
                    m.runtime = None;
                } else if let Some(r) = m.runtime.as_mut() {
                    r.running = false;
                    r.has_data = false;
                }
                sim.forget_empty();
            }
        }
        Failure::Break(n, ticks) => {
            let until = sim.clock + TICK * *ticks;
            if let Some(m) = sim.members.get_mut(n % count) {
                m.broken_until = Some(until);
                if let Some(r) = m.runtime.as_mut() {
                    r.running = false;
                }
            }
        }
        Failure::Hang(n, ticks) => {
            let until = sim.clock + TICK * *ticks;
            if let Some(m) = sim.members.get_mut(n % count) {
                m.hung_until = Some(until);
            }
        }
        Failure::Resize(size) => spec.size = *size,
        Failure::Patch(p) => {
            if spec.version.starts_with("3.5.") {
                spec.version = PATCHES[p % PATCHES.len()].to_string();
            }
        }
        Failure::Lag(ticks) => {
            let snapshot = sim
                .members
                .iter()
                .map(|m| (m.name.clone(), m.etcd.clone()))
                .collect();
            sim.stale = Some((snapshot, sim.clock + TICK * *ticks));
        }
        Failure::Rush(steps) => sim.rush = *steps,
        Failure::FailObject(n) => {
            if let Some(r) = sim
                .members
                .get_mut(n % count)
                .and_then(|m| m.runtime.as_mut())
            {
                r.failed = true;
                r.running = false;
            }
        }
        // Also mid-upgrade: `served_version` (the lowest version when a quorum last
        // answered) then predates the roll, and only each member's own record (its
        // status's `servedVersion`) tells one that served at the new version and then
        // stopped from one that never came up.
        Failure::BadUpgrade => {
            if sim.formed && spec.version.starts_with("3.5.") {
                spec.version = BAD_PATCH.to_string();
                sim.bad_version = Some(version(BAD_PATCH));
            }
        }
        Failure::Crash(_) => {}
    }
}

/// Drives the simulation with the planner; `Ok(steps)` once it is `Done` and converged,
/// counting the steps after the failures stopped. While failures happen, time passes twice
/// per step (failure, then step).
fn run(case: &Case) -> Result<usize, String> {
    run_into(case, &mut Vec::new())
}

fn run_into(case: &Case, trace: &mut Vec<String>) -> Result<usize, String> {
    run_measured(case, trace).map(|c| c.steps)
}

/// How a case converged once its failures stopped.
#[derive(Clone, Copy, Debug, Default)]
struct Converged {
    steps: usize,
    /// Simulated time from the last failure to `Done`.
    took: Duration,
    /// Calls etcd or the runtime refused during the whole case.
    refusals: usize,
}

fn run_measured(case: &Case, trace: &mut Vec<String>) -> Result<Converged, String> {
    let mut spec = case.spec.clone();
    let policy = Policy::default();
    let mut sim = if case.initial == 0 {
        Sim::default()
    } else {
        Sim::healthy(case.initial, &Version::new(3, 5, 16))
    };
    // failures happen during the first `failing` steps, then stop
    let failing = case
        .failures
        .iter()
        .map(|(at, _)| at + 1)
        .max()
        .unwrap_or(0);
    let mut rolled_back = false;
    let mut calm_since = None;
    for i in 0..failing + CONVERGE_STEPS {
        if i == failing {
            calm_since = Some(sim.clock);
        }
        let mut crash = None;
        if i < failing {
            for (_, f) in case.failures.iter().filter(|(at, _)| *at == i) {
                trace.push(format!("  ! {f:?}"));
                match f {
                    Failure::Crash(parts) => crash = Some(*parts),
                    _ => inject(&mut sim, &mut spec, f),
                }
            }
            sim.settle();
        }
        let observed = sim.observe();
        // The status is written after the step: a crashed executor never writes it.
        if crash.is_none() {
            sim.record(&observed);
        }
        let step = next_step(&spec, &observed, &policy);
        trace.push(format!("{i:3} {step}"));
        let broken = broken_rules(&step, &spec, &observed);
        if !broken.is_empty() {
            return Err(report(format!("{step} breaks {broken:?}"), &spec, trace));
        }
        if step == Step::Done && i >= failing {
            let size = usize::try_from(spec.size).unwrap_or(0);
            let target = version(&spec.version);
            if !sim.converged(size, &target) {
                return Err(report(
                    format!("done but not converged: {sim:#?}"),
                    &spec,
                    trace,
                ));
            }
            return Ok(Converged {
                steps: i - failing,
                took: sim.clock.saturating_sub(calm_since.unwrap_or(sim.clock)),
                refusals: sim.refusals,
            });
        }
        // A stalled upgrade waits for the user, who sets spec.version back to what the
        // other members run; the planner then rolls the stalled member back.
        if let Step::Blocked {
            reason: BlockReason::UpgradeStalled { member },
        } = &step
            && i >= failing
            && !rolled_back
        {
            // ... or, for a lone member, to the version it served at (status currentVersion).
            let previous = sim
                .members
                .iter()
                .filter(|m| m.name != *member)
                .filter_map(|m| m.runtime.as_ref().map(|r| &r.version))
                .filter(|v| v.to_string() != spec.version)
                .min()
                .or(sim
                    .served
                    .as_ref()
                    .filter(|v| v.to_string() != spec.version))
                .cloned();
            if let Some(previous) = previous {
                trace.push(format!("  ! user sets spec.version back to {previous}"));
                spec.version = previous.to_string();
                rolled_back = true;
            }
        }
        if let Err(e) = sim.apply(&step, crash) {
            return Err(report(e, &spec, trace));
        }
        if let Some(why) = sim.refused.take() {
            trace.push(format!("    refused: {why}"));
        }
        if sim.rush > 0 {
            sim.rush -= 1;
            sim.settle_for(Duration::from_secs(1));
        } else {
            sim.settle();
        }
    }
    Err(report(
        format!(
            "not done within {CONVERGE_STEPS} steps after failures stopped: {:#?}",
            sim.observe().members
        ),
        &spec,
        trace,
    ))
}

fn report(why: String, spec: &EtcdClusterSpec, trace: &[String]) -> String {
    format!(
        "{why}\nspec {} {}\n{}",
        spec.size,
        spec.version,
        trace.join("\n")
    )
}

/// Cases of [`simulated_cluster_converges_once_failures_stop`]: 400 in CI (about a second),
/// more with `PLAN_SIM_CASES=20000 cargo test --lib plan::proptests::simulated -- --nocapture`.
fn sim_cases() -> u32 {
    std::env::var("PLAN_SIM_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(400)
}

#[test]
fn simulated_cluster_converges_once_failures_stop() {
    use std::sync::Mutex;
    let cases = sim_cases();
    let mut config = config(cases);
    config.source_file = Some(file!());
    let mut runner = proptest::test_runner::TestRunner::new(config);
    let worst = Mutex::new((Converged::default(), Converged::default(), 0usize));
    let result = runner.run(&case(), |case| {
        let c = run_measured(&case, &mut Vec::new()).map_err(TestCaseError::fail)?;
        if let Ok(mut w) = worst.lock() {
            if c.steps > w.0.steps {
                w.0 = c;
            }
            if c.took > w.1.took {
                w.1 = c;
            }
            w.2 += c.refusals;
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    let (most_steps, longest, refusals) = worst.into_inner().unwrap_or_default();
    println!(
        "simulated cluster: {cases} cases converged; most steps after the failures stopped \
         {} ({} s simulated); longest {} s simulated ({} steps); {refusals} calls refused \
         by etcd or the runtime",
        most_steps.steps,
        most_steps.took.as_secs(),
        longest.took.as_secs(),
        longest.steps,
    );
}

#[test]
fn simulated_cluster_bootstraps_from_nothing() {
    let case = Case {
        initial: 0,
        spec: EtcdClusterSpec::new(3, "3.5.16"),
        failures: vec![],
    };
    assert_eq!(run(&case), Ok(1));
}

#[test]
fn stalled_upgrade_is_rolled_back_when_the_user_sets_the_version_back() {
    // example-1 is upgraded first, then cannot run for 200 s: past the upgrade deadline.
    let case = Case {
        initial: 3,
        spec: EtcdClusterSpec::new(3, "3.6.0"),
        failures: vec![(1, Failure::Break(1, 20))],
    };
    let mut trace = Vec::new();
    let steps = run_into(&case, &mut trace);
    let saw = |s: &str| trace.iter().any(|l| l.contains(s));
    assert!(steps.is_ok(), "{steps:?}");
    assert!(saw("upgrade stalled: example-1"), "{}", trace.join("\n"));
    assert!(
        saw("user sets spec.version back to 3.5.16"),
        "{}",
        trace.join("\n")
    );
}

#[test]
fn a_lone_member_whose_upgrade_stalls_is_rolled_back_by_spec() {
    // The only member is moved to 3.6.0 and stopped (the executor stops there), then
    // cannot run for 200 s: it never serves at 3.6.0 and no member answers at all.
    let case = Case {
        initial: 1,
        spec: EtcdClusterSpec::new(1, "3.6.0"),
        failures: vec![(0, Failure::Crash(1)), (1, Failure::Break(0, 20))],
    };
    let mut trace = Vec::new();
    let steps = run_into(&case, &mut trace);
    let saw = |s: &str| trace.iter().any(|l| l.contains(s));
    assert!(steps.is_ok(), "{steps:?}\n{}", trace.join("\n"));
    assert!(saw("upgrade stalled: example-0"), "{}", trace.join("\n"));
    assert!(saw("roll example-0 back to 3.5.16"), "{}", trace.join("\n"));
}

#[test]
fn simulated_cluster_scales_then_upgrades() {
    let case = Case {
        initial: 3,
        spec: EtcdClusterSpec::new(5, "3.6.0"),
        failures: vec![],
    };
    let steps = run(&case);
    assert!(steps.is_ok(), "{steps:?}");
}
