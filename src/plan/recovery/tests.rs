use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use super::*;
use crate::api::recovery::{RecoveryFromBackup, RecoverySpec};
use crate::etcd::ClusterId;
use crate::plan::fixtures::*;
use crate::plan::{Observed, next_step};

fn at(s: i64) -> Time {
    Time(Timestamp::from_second(1_700_000_000 + s).unwrap())
}

fn formed(mut o: Observed) -> Observed {
    o.recorded_cluster_id = Some(ClusterId(0xc1));
    o
}

/// Three members; 1 and 2 lost their data; 0 runs without quorum at raft index 1000.
fn two_lost() -> Observed {
    formed(
        observed(3)
            .with_data_lost(1)
            .with_data_lost(2)
            .with_unhealthy(0)
            .without_leader(),
    )
}

fn survivor_spec(after: &str) -> EtcdClusterSpec {
    let mut s = spec(3, VERSION);
    s.recovery = Some(RecoverySpec {
        from_survivor: Some(true),
        after: Some(after.into()),
        ..RecoverySpec::default()
    });
    s
}

fn backup_spec(after: &str) -> EtcdClusterSpec {
    let mut s = spec(3, VERSION);
    s.recovery = Some(RecoverySpec {
        from_backup: Some(RecoveryFromBackup {
            backup_name: "nightly".into(),
        }),
        after: Some(after.into()),
        ..RecoverySpec::default()
    });
    s
}

fn lost_since(s: i64) -> RecoveryStatus {
    RecoveryStatus {
        quorum_lost_since: Some(at(s)),
        ..RecoveryStatus::default()
    }
}

struct Case {
    spec: EtcdClusterSpec,
    observed: Observed,
    status: Option<RecoveryStatus>,
    trigger: Option<String>,
    now: Time,
    restore_failed: Option<RestoreFailed>,
}

impl Case {
    fn new(spec: EtcdClusterSpec, observed: Observed) -> Self {
        Self {
            spec,
            observed,
            status: None,
            trigger: None,
            now: at(0),
            restore_failed: None,
        }
    }

    fn status(mut self, st: RecoveryStatus) -> Self {
        self.status = Some(st);
        self
    }

    fn trigger(mut self, t: &str) -> Self {
        self.trigger = Some(t.into());
        self
    }

    fn now(mut self, s: i64) -> Self {
        self.now = at(s);
        self
    }

    fn step(&self) -> Step {
        next_step(&self.spec, &self.observed, &policy())
    }

    fn plan(&self) -> Decision {
        let step = self.step();
        plan(&Input {
            spec: &self.spec,
            valid: true,
            supported: true,
            backups: true,
            trigger: self.trigger.as_deref(),
            status: self.status.as_ref(),
            observed: &self.observed,
            step: &step,
            cluster_id: Some("00000000000000c1"),
            namespace: "default",
            now: &self.now,
            restore_failed: self.restore_failed.as_ref(),
        })
    }

    /// Plans, then records as if the action was carried out with `outcome`.
    fn apply(&mut self, outcome: Outcome) -> Decision {
        let d = self.plan();
        self.status = record(
            self.status.as_ref(),
            &d,
            Some(&outcome),
            self.trigger.as_deref(),
            quorum_lost(&self.observed),
            None,
            &self.now,
        );
        d
    }
}

fn started(d: &Decision) -> &RecoveryRun {
    match d {
        Decision::Act {
            start: Some(run), ..
        } => run,
        other => panic!("no run started: {other:?}"),
    }
}

fn action(d: &Decision) -> &RecoveryAction {
    match d {
        Decision::Act { action, .. } => action,
        other => panic!("no action: {other:?}"),
    }
}

#[test]
fn a_cluster_with_quorum_is_never_recovered() {
    let c = Case::new(survivor_spec("1m"), formed(observed(3))).status(lost_since(-3600));
    assert_eq!(c.plan(), Decision::Idle);
    // A lost minority keeps quorum: nothing.
    let minority = Case::new(survivor_spec("1m"), formed(observed(3).with_data_lost(2)))
        .status(lost_since(-3600));
    assert_eq!(minority.plan(), Decision::Idle);
    // The annotation is refused, and recorded so it never fires later.
    let mut asked = Case::new(spec(3, VERSION), formed(observed(3))).trigger("fromSurvivor");
    let d = asked.apply(Outcome::Done);
    assert!(matches!(d, Decision::Refuse { .. }), "{d:?}");
    assert_eq!(
        asked.status.as_ref().unwrap().handled_trigger.as_deref(),
        Some("fromSurvivor")
    );
    asked.observed = two_lost();
    assert!(matches!(
        asked.plan(),
        Decision::Hold(Hold::NotConfigured { .. })
    ));
}

#[test]
fn without_spec_recovery_nothing_is_done_and_the_hold_says_what_to_set() {
    let c = Case::new(spec(3, VERSION), two_lost()).status(lost_since(-86_400));
    let d = c.plan();
    assert_eq!(
        d,
        Decision::Hold(Hold::NotConfigured {
            survivor: Some((name(0), LEADER_RAFT_INDEX))
        })
    );
    let Decision::Hold(hold) = d else {
        unreachable!()
    };
    let msg = hold.to_string();
    for want in [
        "spec.recovery.fromSurvivor: true",
        "example-0, raft index 1000",
        "spec.recovery.fromBackup.backupName",
        "etcd.operator.dev/recover=fromSurvivor",
    ] {
        assert!(msg.contains(want), "{want:?} not in {msg}");
    }
    // Every member lost: no survivor to name.
    let mut all = empty();
    all.recorded_cluster_id = Some(ClusterId(0xc1));
    let c = Case::new(spec(3, VERSION), all);
    assert_eq!(
        c.step().to_string(),
        "blocked: every member lost its data after the cluster had formed; it is not bootstrapped again as an empty cluster: restore a backup (EtcdRestore), or delete the EtcdCluster to start an empty one"
    );
    assert_eq!(
        c.plan(),
        Decision::Hold(Hold::NotConfigured { survivor: None })
    );
}

#[test]
fn from_survivor_waits_for_after_then_sets_the_others_aside_and_forces() {
    let waiting = Case::new(survivor_spec("10m"), two_lost())
        .status(lost_since(-300))
        .now(0);
    assert!(
        matches!(waiting.plan(), Decision::Hold(Hold::Waiting { after, .. }) if after == Duration::from_secs(600)),
        "{:?}",
        waiting.plan()
    );
    let mut due = Case::new(survivor_spec("10m"), two_lost()).status(lost_since(-601));
    let d = due.apply(Outcome::KeptAside(vec![]));
    let run = started(&d);
    assert_eq!(run.mode, RecoveryMode::FromSurvivor);
    assert_eq!(run.survivor.as_deref(), Some("example-0"));
    assert_eq!(run.survivor_raft_index, Some(1000));
    assert_eq!(run.quorum_lost_since, Some(at(-601)));
    assert_eq!(
        action(&d),
        &RecoveryAction::SetAside {
            members: vec![name(1), name(2)]
        }
    );
    // Their runtime members are gone now: the survivor is forced next, and again after a
    // crash (the action is idempotent) until it is recorded.
    due.observed = formed(
        observed(3)
            .without_runtime(1)
            .without_runtime(2)
            .with_unhealthy(0)
            .without_leader(),
    );
    assert_eq!(
        action(&due.plan()),
        &RecoveryAction::ForceNewCluster { survivor: name(0) }
    );
    due.apply(Outcome::Forced { revision: Some(77) });
    let run = due.status.as_ref().unwrap().run.clone().unwrap();
    assert_eq!(run.phase, RecoveryPhase::Regrowing);
    assert_eq!(run.revision, Some(77));
    assert!(run.serving_at.is_some());
    // The survivor serves alone: the ordinary planner grows it back with learners.
    due.observed = formed(observed(1));
    assert_eq!(due.plan(), Decision::Regrowing);
    assert_eq!(
        Decision::Regrowing.step(due.step()),
        Step::AddLearner {
            name: name(1),
            version: v(VERSION),
        }
    );
    due.observed = formed(observed(3));
    assert_eq!(action(&due.apply(Outcome::Done)), &RecoveryAction::Finish);
    let st = due.status.unwrap();
    assert!(st.run.is_none());
    assert_eq!(st.recoveries, 1);
    let last = st.last_run.unwrap();
    assert_eq!(last.outcome, Some(RecoveryOutcome::Succeeded));
    assert!(
        describe(&last).contains("from survivor example-0 (raft index 1000), serving revision 77")
    );
}

#[test]
fn the_survivor_is_the_voter_with_the_highest_raft_index() {
    let mut o = formed(
        observed(5)
            .with_unhealthy(0)
            .with_unhealthy(1)
            .with_unhealthy(2)
            .with_data_lost(3)
            .with_data_lost(4)
            .without_leader()
            .down_for(0, secs(700))
            .down_for(1, secs(700))
            .down_for(2, secs(700)),
    );
    o.at(2).etcd.as_mut().unwrap().raft_index = Some(2000);
    o.at(1).etcd.as_mut().unwrap().raft_index = Some(2000);
    let mut s = survivor_spec("10m");
    s.size = 5;
    let c = Case::new(s.clone(), o.clone()).status(lost_since(-700));
    let d = c.plan();
    assert_eq!(
        started(&d).survivor.as_deref(),
        Some("example-1"),
        "ties: lowest ordinal"
    );
    // A learner is never the survivor, however far ahead.
    let mut learner = o.clone();
    learner.at(0).etcd.as_mut().unwrap().is_learner = true;
    learner.at(0).etcd.as_mut().unwrap().raft_index = Some(9000);
    let d = Case::new(s, learner).status(lost_since(-700)).plan();
    assert_eq!(started(&d).survivor.as_deref(), Some("example-1"));
}

#[test]
fn from_survivor_never_runs_while_another_voter_may_come_back() {
    // example-1 has its data and has been down 2 minutes; quorum lost 11 minutes.
    let o = formed(
        observed(3)
            .with_unhealthy(0)
            .with_dead(1)
            .with_data_lost(2)
            .without_leader()
            .down_for(1, secs(120)),
    );
    // The dead member is restarted first: that is how quorum comes back.
    let c = Case::new(survivor_spec("10m"), o.clone()).status(lost_since(-660));
    assert_eq!(c.step(), Step::RestartMember { name: name(1) });
    assert_eq!(c.plan(), Decision::Hold(Hold::Reviving));
    // Running again but not healthy: not gone yet.
    let mut running = o.clone();
    running.at(1).runtime.as_mut().unwrap().running = true;
    let c = Case::new(survivor_spec("10m"), running.clone()).status(lost_since(-660));
    match c.plan() {
        Decision::Hold(Hold::NotPossible { why }) => {
            assert!(why[0].contains("example-1 has its data"), "{why:?}")
        }
        other => panic!("{other:?}"),
    }
    // With fromBackup too, the backup is the fallback.
    let mut both = survivor_spec("10m");
    both.recovery.as_mut().unwrap().from_backup = Some(RecoveryFromBackup {
        backup_name: "nightly".into(),
    });
    let d = Case::new(both, running.clone())
        .status(lost_since(-660))
        .plan();
    assert_eq!(started(&d).mode, RecoveryMode::FromBackup);
    // Down past `after`: gone.
    let gone = running.down_for(1, secs(601));
    let d = Case::new(survivor_spec("10m"), gone)
        .status(lost_since(-660))
        .plan();
    assert_eq!(started(&d).survivor.as_deref(), Some("example-0"));
}

#[test]
fn a_voter_that_answers_a_linearizable_read_stops_everything() {
    // Not healthy by the planner's account (its runtime says stopped), yet etcd answered a
    // linearizable read through it: a quorum exists somewhere.
    let mut o = two_lost();
    o.at(0).etcd.as_mut().unwrap().healthy = true;
    o.at(0).runtime.as_mut().unwrap().running = false;
    let c = Case::new(survivor_spec("1m"), o)
        .status(lost_since(-3600))
        .trigger("fromSurvivor");
    assert_eq!(
        c.plan(),
        Decision::Hold(Hold::VoterAnswers { member: name(0) })
    );
}

#[test]
fn the_annotation_runs_once_at_once() {
    let mut c = Case::new(spec(3, VERSION), two_lost()).trigger("fromSurvivor");
    let d = c.apply(Outcome::KeptAside(vec![]));
    assert_eq!(started(&d).trigger, RecoveryTrigger::Annotation);
    let st = c.status.clone().unwrap();
    assert_eq!(st.handled_trigger.as_deref(), Some("fromSurvivor"));
    // Ended, and quorum lost again: the same value does not run again...
    let mut again = Case::new(spec(3, VERSION), two_lost()).trigger("fromSurvivor");
    again.status = Some(RecoveryStatus {
        run: None,
        ..st.clone()
    });
    assert!(matches!(
        again.plan(),
        Decision::Hold(Hold::NotConfigured { .. })
    ));
    // ... a new one does.
    again.trigger = Some("fromSurvivor@2".into());
    assert!(matches!(again.plan(), Decision::Act { .. }));
    // A value that does not parse is refused, saying what it should be.
    let bad = Case::new(spec(3, VERSION), two_lost()).trigger("please");
    match bad.plan() {
        Decision::Refuse { why, .. } => assert!(why.contains("fromBackup:<EtcdBackup>")),
        other => panic!("{other:?}"),
    }
    // Removing the annotation forgets the handled value.
    let forgotten = record(Some(&st), &Decision::Idle, None, None, true, None, &at(1)).unwrap();
    assert_eq!(forgotten.handled_trigger, None);
}

#[test]
fn spec_recovery_runs_once_per_cluster_and_backs_off_after_a_failure() {
    let mut c = Case::new(backup_spec("1m"), two_lost()).status(lost_since(-61));
    let d = c.apply(Outcome::Failed {
        reason: "NoSuccessfulBackup".into(),
        message: "EtcdBackup nightly has no successful backup yet".into(),
    });
    assert_eq!(
        action(&d),
        &RecoveryAction::Fetch {
            backup_name: "nightly".into()
        }
    );
    let st = c.status.clone().unwrap();
    assert!(st.run.is_none(), "a failed fetch ends the run");
    assert_eq!(st.failures, 1);
    let last = st.last_run.clone().unwrap();
    assert_eq!(last.outcome, Some(RecoveryOutcome::Failed));
    assert_eq!(last.reason.as_deref(), Some("NoSuccessfulBackup"));
    assert!(last.message.unwrap().ends_with("nothing was changed"));
    assert!(last.kept.is_empty());
    assert_eq!(c.plan(), Decision::Hold(Hold::BackingOff { failures: 1 }));
    c.now = at(10);
    assert!(matches!(c.plan(), Decision::Act { .. }), "tried again");
    // Once recovered, a later loss waits for the user.
    let done = RecoveryStatus {
        recoveries: 1,
        ..lost_since(-3600)
    };
    let later = Case::new(backup_spec("1m"), two_lost()).status(done);
    match later.plan() {
        Decision::Hold(h @ Hold::AlreadyRecovered { .. }) => {
            assert!(h.to_string().contains("etcd.operator.dev/recover"))
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn from_backup_fetches_sets_every_member_aside_and_bootstraps_new_names() {
    let mut o = two_lost();
    o.highest_ordinal_used = Some(4);
    let mut c = Case::new(backup_spec("1m"), o).status(lost_since(-61));
    let backup = RecoveredBackup {
        backup_name: "nightly".into(),
        bucket: "b".into(),
        key: "p/default/example/nightly/20250610T073000Z-rev42.db".into(),
        sha256: "ab".repeat(32),
        revision: 42,
        taken_at: Some(at(-600)),
    };
    let d = c.apply(Outcome::Fetched(backup.clone()));
    let run = started(&d);
    assert_eq!(run.members, ["example-5", "example-6", "example-7"]);
    assert_eq!(run.previous_cluster_id.as_deref(), Some("00000000000000c1"));
    assert!(
        run.token
            .as_deref()
            .unwrap()
            .starts_with("default-example-recovered-")
    );
    let run = c.status.as_ref().unwrap().run.clone().unwrap();
    assert_eq!(run.phase, RecoveryPhase::SettingAside);
    assert_eq!(run.revision, Some(42));
    // Every old member is set aside, the survivor too.
    let kept = vec![KeptMember {
        name: "example-0".into(),
        at: "/state/kept/default/example/x/example-0".into(),
    }];
    assert_eq!(
        action(&c.apply(Outcome::KeptAside(kept.clone()))),
        &RecoveryAction::SetAside {
            members: vec![name(0), name(1), name(2)]
        }
    );
    // Nothing left: bootstrap the new members.
    c.observed = formed(empty());
    let d = c.apply(Outcome::Done);
    assert_eq!(
        action(&d),
        &RecoveryAction::Bootstrap {
            members: vec![name(5), name(6), name(7)],
            version: v(VERSION),
            token: run.token.clone().unwrap(),
        }
    );
    assert_eq!(
        c.status.as_ref().unwrap().run.as_ref().unwrap().phase,
        RecoveryPhase::Bootstrapping
    );
    // Created, not serving yet: wait.
    let mut starting = Observed {
        members: vec![voter(5, VERSION), voter(6, VERSION), voter(7, VERSION)],
        ..observed(0)
    };
    starting.etcd = None;
    for m in &mut starting.members {
        m.etcd = None;
    }
    c.observed = starting;
    assert!(matches!(c.plan(), Decision::Wait { .. }), "{:?}", c.plan());
    // Past the deadline: rolled back, naming what it created and kept.
    let late = Case {
        now: at(400),
        ..Case::new(c.spec.clone(), c.observed.clone())
    }
    .status(c.status.clone().unwrap());
    match action(&late.plan()) {
        RecoveryAction::RollBack {
            created,
            kept: k,
            reason,
            ..
        } => {
            assert_eq!(created, &vec![name(5), name(6), name(7)]);
            assert_eq!(k, &kept);
            assert_eq!(reason, "BootstrapTimedOut");
        }
        other => panic!("{other:?}"),
    }
    // A restore that failed for good (the object changed after its pin): rolled back at
    // once, saying why, long before the deadline.
    let failed = Case {
        restore_failed: Some(RestoreFailed {
            reason: "SourceChanged".into(),
            message: "restore-fetch of example-5 exited 1: the object changed".into(),
        }),
        ..Case::new(c.spec.clone(), c.observed.clone())
    }
    .status(c.status.clone().unwrap());
    match action(&failed.plan()) {
        RecoveryAction::RollBack {
            created,
            kept: k,
            reason,
            message,
        } => {
            assert_eq!(created, &vec![name(5), name(6), name(7)]);
            assert_eq!(k, &kept);
            assert_eq!(reason, "SourceChanged");
            assert!(message.contains("the object changed"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    // Serving: finish, with the new cluster id.
    c.observed = Observed {
        members: vec![voter(5, VERSION), voter(6, VERSION), voter(7, VERSION)],
        ..observed(0)
    };
    c.observed.etcd.as_mut().unwrap().cluster_id = ClusterId(0xd2);
    c.observed.etcd.as_mut().unwrap().leader = Some(id(5));
    let d = c.plan();
    assert_eq!(action(&d), &RecoveryAction::Finish);
    c.status = record(
        c.status.as_ref(),
        &d,
        Some(&Outcome::Done),
        None,
        false,
        Some("00000000000000d2"),
        &at(30),
    );
    let st = c.status.unwrap();
    let last = st.last_run.unwrap();
    assert_eq!(last.cluster_id.as_deref(), Some("00000000000000d2"));
    assert_eq!(last.outcome, Some(RecoveryOutcome::Succeeded));
    assert_eq!(last.serving_at, Some(at(30)));
    let line = describe(&last);
    for want in [
        "revision 42 from EtcdBackup nightly",
        "s3://b/p/default/example/nightly/20250610T073000Z-rev42.db",
        "8m59s before quorum was lost",
        "old data kept: example-0 at /state/kept/default/example/x/example-0",
        "cluster id 00000000000000c1 -> 00000000000000d2",
    ] {
        assert!(line.contains(want), "{want:?} not in {line}");
    }
}

#[test]
fn a_failed_force_is_rolled_back_and_the_kept_data_put_back() {
    let mut c = Case::new(survivor_spec("1m"), two_lost()).status(lost_since(-61));
    let kept = vec![KeptMember {
        name: "example-1".into(),
        at: "/k/example-1".into(),
    }];
    c.apply(Outcome::KeptAside(kept.clone()));
    c.observed = formed(
        observed(3)
            .without_runtime(1)
            .without_runtime(2)
            .with_unhealthy(0)
            .without_leader(),
    );
    c.apply(Outcome::Failed {
        reason: "ForceNewClusterFailed".into(),
        message: "example-0 did not serve".into(),
    });
    let run = c.status.as_ref().unwrap().run.clone().unwrap();
    assert_eq!(run.phase, RecoveryPhase::RollingBack);
    let d = c.apply(Outcome::Done);
    assert_eq!(
        action(&d),
        &RecoveryAction::RollBack {
            created: vec![],
            kept,
            reason: "ForceNewClusterFailed".into(),
            message: "example-0 did not serve".into(),
        }
    );
    let st = c.status.unwrap();
    assert!(st.run.is_none());
    let last = st.last_run.unwrap();
    assert_eq!(last.outcome, Some(RecoveryOutcome::Failed));
    assert_eq!(
        st.recoveries, 1,
        "it changed something: the next one is the user's call"
    );
}

#[test]
fn the_lost_quorum_clock_starts_once_and_stops_with_quorum() {
    let lost = record(None, &Decision::Idle, None, None, true, None, &at(5)).unwrap();
    assert_eq!(lost.quorum_lost_since, Some(at(5)));
    let still = record(Some(&lost), &Decision::Idle, None, None, true, None, &at(9)).unwrap();
    assert_eq!(still.quorum_lost_since, Some(at(5)));
    assert_eq!(
        record(
            Some(&still),
            &Decision::Idle,
            None,
            None,
            false,
            None,
            &at(10)
        ),
        None,
        "a cluster that never needed a recovery keeps no recovery status"
    );
}

#[test]
fn paused_and_invalid_clusters_are_left_alone() {
    let mut s = survivor_spec("1m");
    s.paused = true;
    let c = Case::new(s, two_lost()).status(lost_since(-3600));
    assert_eq!(c.plan(), Decision::Idle);
}

#[test]
fn a_runtime_that_cannot_recover_only_says_so() {
    let c = Case::new(survivor_spec("1m"), two_lost()).status(lost_since(-3600));
    let step = c.step();
    let d = plan(&Input {
        spec: &c.spec,
        valid: true,
        supported: false,
        backups: false,
        trigger: None,
        status: c.status.as_ref(),
        observed: &c.observed,
        step: &step,
        cluster_id: None,
        namespace: "default",
        now: &c.now,
        restore_failed: None,
    });
    assert_eq!(d, Decision::Hold(Hold::Unsupported));
    assert!(d.step(step.clone()) == step);
}

#[test]
fn quorum_back_before_anything_changed_ends_the_run_with_nothing_changed() {
    let mut c = Case::new(backup_spec("1m"), two_lost()).status(lost_since(-61));
    c.apply(Outcome::Fetched(RecoveredBackup {
        backup_name: "nightly".into(),
        bucket: "b".into(),
        key: "k".into(),
        sha256: "00".repeat(32),
        revision: 1,
        taken_at: None,
    }));
    c.observed = formed(observed(3));
    match action(&c.apply(Outcome::Done)) {
        RecoveryAction::RollBack {
            created,
            kept,
            reason,
            ..
        } => {
            assert!(created.is_empty() && kept.is_empty());
            assert_eq!(reason, "QuorumBack");
        }
        other => panic!("{other:?}"),
    }
    let st = c.status.unwrap();
    assert!(st.run.is_none());
    assert_eq!(st.recoveries, 0, "nothing changed: not counted");
}
