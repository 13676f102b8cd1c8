//! Recovery from lost quorum: when a cluster that formed has had no quorum for
//! `spec.recovery.after` (or the user asks with the `etcd.operator.dev/recover` annotation),
//! which recovery to run and its next action. Pure, like the rest of the planner: the spec,
//! the trigger, the observation, the step the rest of the planner chose and the recorded
//! [`RecoveryStatus`] go in (time as a value), one [`Decision`] comes out. Carrying an
//! action out is `reconcile::recover`'s job, writing the run down [`record`]'s.
//!
//! # Rules
//! 1. Nothing while the cluster has quorum, or never formed, or is paused or invalid. A
//!    trigger seen then is refused (and never fires later).
//! 2. A run starts only when the rest of the planner has nothing left to try: its step is
//!    `Blocked(QuorumLost)` or `Blocked(AllMembersLost)` (members that only stopped are
//!    restarted first, which is how a quorum that can come back does), and no voter answers
//!    a linearizable read (which would mean a quorum somewhere).
//! 3. `spec.recovery` acts once quorum has been lost for `after` (its own clock,
//!    `status.recovery.quorumLostSince`), once per EtcdCluster: a later loss is reported and
//!    waits for the annotation. A failed attempt that changed nothing is tried again after a
//!    back-off. The annotation acts at once, once per value.
//! 4. fromSurvivor (tried first when both are set, it loses less): the survivor is the voter
//!    with its data whose status answers with the highest raft index (ties: lowest ordinal).
//!    Every other voter must be known gone: its data missing, or down past `after`. Never a
//!    learner. Then: every other runtime member is stopped and its data kept aside; the
//!    survivor is restarted once with `--force-new-cluster` and at once again without it;
//!    the rest of the planner grows it back to size with learners; the run ends once every
//!    member is a healthy voter at size.
//! 5. fromBackup: resolve, download and verify the EtcdBackup's latest successful backup
//!    before anything changes (a failure there changes nothing); then keep every old member's
//!    data aside; then bootstrap `size` new members (new names, never reused) from the
//!    snapshot with a new token: a new cluster id behind the same name. The run ends once
//!    they have quorum.
//! 6. A run that cannot go on after changing something (the survivor does not come up, the
//!    new members do not form a quorum within [`BOOTSTRAP_DEADLINE`], or the driver reports
//!    that their restore failed for good: [`RestoreFailed`]) is rolled back: the members it
//!    created are deleted (their data came from the snapshot) and the kept data moved back,
//!    then it ends `Failed` saying why.

use std::fmt;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use semver::Version;

use super::member_loss::down_for;
use super::observed::{MemberName, Observed, ObservedMember};
use super::quorum;
use super::step::{BlockReason, Step};
use crate::api::EtcdClusterSpec;
use crate::api::recovery::{
    KeptMember, RECOVER_ANNOTATION, RecoveredBackup, RecoveryMode, RecoveryOutcome, RecoveryPhase,
    RecoveryRun, RecoveryStatus, RecoveryTrigger, Requested, parse_trigger,
};

/// How long the members a fromBackup recovery bootstrapped may take to form a quorum before
/// the recovery is rolled back.
pub const BOOTSTRAP_DEADLINE: Duration = Duration::from_secs(300);

/// One action of a recovery run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RecoveryAction {
    /// fromBackup: resolve the EtcdBackup's latest successful backup, download it and verify
    /// its digest and that it is a snapshot etcd at the cluster's version restores. Nothing
    /// changes.
    Fetch { backup_name: String },
    /// Stop `members` and move their data aside; never deleted.
    SetAside { members: Vec<MemberName> },
    /// fromSurvivor: restart `survivor` once with `--force-new-cluster`, wait until it serves
    /// as a cluster of one, then restart it without the flag.
    ForceNewCluster { survivor: MemberName },
    /// fromBackup: bootstrap `members` at `version` from the verified snapshot, with `token`.
    Bootstrap {
        members: Vec<MemberName>,
        version: Version,
        token: String,
    },
    /// The cluster serves again (fromBackup), or is back to size (fromSurvivor).
    Finish,
    /// Undo what the run changed: delete the members it created, move the kept data back.
    RollBack {
        created: Vec<MemberName>,
        kept: Vec<KeptMember>,
        reason: String,
        message: String,
    },
}

impl fmt::Display for RecoveryAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names = |ms: &[MemberName]| {
            ms.iter()
                .map(MemberName::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        };
        match self {
            RecoveryAction::Fetch { backup_name } => write!(
                f,
                "fetch and verify the latest backup of EtcdBackup {backup_name}"
            ),
            RecoveryAction::SetAside { members } => {
                write!(f, "stop {} and keep their data aside", names(members))
            }
            RecoveryAction::ForceNewCluster { survivor } => write!(
                f,
                "restart {survivor} once with --force-new-cluster, then without it"
            ),
            RecoveryAction::Bootstrap {
                members, version, ..
            } => write!(
                f,
                "bootstrap {} at {version} from the snapshot",
                names(members)
            ),
            RecoveryAction::Finish => f.write_str("finish"),
            RecoveryAction::RollBack { created, kept, .. } => {
                let kept: Vec<&str> = kept.iter().map(|k| k.name.as_str()).collect();
                write!(
                    f,
                    "roll back: delete {} and put back the data of {}",
                    if created.is_empty() {
                        "nothing".to_owned()
                    } else {
                        names(created)
                    },
                    if kept.is_empty() {
                        "nobody".to_owned()
                    } else {
                        kept.join(", ")
                    }
                )
            }
        }
    }
}

/// Why no recovery runs while quorum is lost; the `Recovery` condition (and the `Degraded`
/// message) say it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Hold {
    /// Members that only stopped are being restarted, or may still answer: the rest of the
    /// planner is not out of options.
    Reviving,
    /// Neither `spec.recovery` nor the annotation: nothing is done; say what could be set.
    NotConfigured { survivor: Option<(MemberName, u64)> },
    /// `spec.recovery` acts once quorum has been lost for `after`.
    Waiting {
        after: Duration,
        since: Option<Time>,
        modes: Vec<RecoveryMode>,
    },
    /// A voter answers a linearizable read: a quorum exists somewhere.
    VoterAnswers { member: MemberName },
    /// `spec.recovery` already recovered this EtcdCluster once.
    AlreadyRecovered { at: Option<Time> },
    /// The last automatic attempt failed; the next one after a back-off.
    BackingOff { failures: i32 },
    /// None of the allowed recoveries applies; each says why.
    NotPossible { why: Vec<String> },
    /// This runtime cannot carry a recovery out (yet).
    Unsupported,
}

/// What recovery asks of this pass.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Quorum is there, or nothing to say.
    Idle,
    /// Quorum is lost and no recovery runs (yet).
    Hold(Hold),
    /// An annotation value that does not run (quorum is there, it does not parse, or its
    /// recovery does not apply); it is recorded as handled.
    Refuse { trigger: String, why: String },
    /// The next action of a run; `start` is the run it begins, when it begins one.
    Act {
        start: Option<Box<RecoveryRun>>,
        mode: RecoveryMode,
        action: RecoveryAction,
    },
    /// A run waits for its members (fromBackup: the new members forming a quorum).
    Wait { mode: RecoveryMode, what: String },
    /// A run in its regrowing phase: the rest of the planner's step goes ahead.
    Regrowing,
}

impl Decision {
    /// The step this decision is, in place of `step` (the rest of the planner's).
    pub fn step(&self, step: Step) -> Step {
        match self {
            Decision::Act { mode, action, .. } => Step::Recover {
                mode: *mode,
                action: action.clone(),
            },
            Decision::Wait { mode, what } => Step::Wait {
                reason: super::step::WaitReason::Recovering {
                    mode: *mode,
                    what: what.clone(),
                },
            },
            Decision::Idle | Decision::Hold(_) | Decision::Refuse { .. } | Decision::Regrowing => {
                step
            }
        }
    }
}

/// fromBackup: the new members' restore failed in a way that waiting does not mend (the
/// object changed after it was pinned, a digest mismatch, a snapshot etcd cannot restore),
/// as the driver found it while they bootstrap. Runtimes that restore inside the bootstrap
/// itself report the failure there instead.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RestoreFailed {
    /// PascalCase, e.g. `SourceChanged`.
    pub reason: String,
    pub message: String,
}

/// Everything the recovery planner reads.
pub struct Input<'a> {
    pub spec: &'a EtcdClusterSpec,
    /// The spec validated.
    pub valid: bool,
    /// The runtime can carry recoveries out (`MemberRuntime::supports_recovery`).
    pub supported: bool,
    /// The driver can fetch backups for fromBackup (`RecoveryEnv::supports_backups`).
    pub backups: bool,
    /// The value of the `etcd.operator.dev/recover` annotation, if set.
    pub trigger: Option<&'a str>,
    pub status: Option<&'a RecoveryStatus>,
    pub observed: &'a Observed,
    /// The step the rest of the planner chose.
    pub step: &'a Step,
    /// The cluster id the status recorded.
    pub cluster_id: Option<&'a str>,
    pub namespace: &'a str,
    pub now: &'a Time,
    /// fromBackup while bootstrapping: the new members' restore failed for good.
    pub restore_failed: Option<&'a RestoreFailed>,
}

/// The cluster formed and has no quorum now.
pub fn quorum_lost(observed: &Observed) -> bool {
    observed.formed() && !quorum::has_quorum(observed)
}

fn elapsed(since: &Time, now: &Time) -> Duration {
    Duration::try_from(now.0.duration_since(since.0)).unwrap_or_default()
}

/// The trigger not handled yet.
fn new_trigger<'a>(input: &Input<'a>) -> Option<&'a str> {
    let handled = input.status.and_then(|s| s.handled_trigger.as_deref());
    input.trigger.filter(|t| Some(*t) != handled)
}

/// What recovery asks of this pass (see the module docs for the rules).
pub fn plan(input: &Input) -> Decision {
    if input.spec.paused || !input.valid {
        return Decision::Idle;
    }
    if let Some(run) = input.status.and_then(|s| s.run.as_ref()) {
        return go_on(input, run);
    }
    let o = input.observed;
    let trigger = new_trigger(input);
    // Rule 1.
    if !quorum_lost(o) {
        return match trigger {
            Some(t) if o.formed() => Decision::Refuse {
                trigger: t.to_owned(),
                why: "the cluster has quorum; nothing to recover".to_owned(),
            },
            _ => Decision::Idle,
        };
    }
    // Rule 2.
    if let Some(m) = o
        .voters()
        .find(|m| m.etcd.as_ref().is_some_and(|e| e.healthy))
    {
        return Decision::Hold(Hold::VoterAnswers {
            member: m.name.clone(),
        });
    }
    if !matches!(
        input.step,
        Step::Blocked {
            reason: BlockReason::QuorumLost { .. } | BlockReason::AllMembersLost
        }
    ) {
        return Decision::Hold(Hold::Reviving);
    }
    // Rule 3.
    let status = input.status.cloned().unwrap_or_default();
    let (requested, by, after) = match (trigger, &input.spec.recovery) {
        (Some(t), _) => match parse_trigger(t) {
            Ok(r) => (vec![r], RecoveryTrigger::Annotation, Duration::ZERO),
            Err(why) => {
                return Decision::Refuse {
                    trigger: t.to_owned(),
                    why,
                };
            }
        },
        (None, Some(spec)) => {
            if status.recoveries > 0 {
                return Decision::Hold(Hold::AlreadyRecovered {
                    at: status.last_run.as_ref().and_then(|r| r.finished_at.clone()),
                });
            }
            if status.failures > 0
                && let Some(at) = status
                    .last_run
                    .as_ref()
                    .and_then(|r| r.finished_at.as_ref())
                && elapsed(at, input.now)
                    < super::failure::retry_delay(u32::try_from(status.failures).unwrap_or(1), true)
            {
                return Decision::Hold(Hold::BackingOff {
                    failures: status.failures,
                });
            }
            let Some(after) = spec.after() else {
                return Decision::Idle;
            };
            (spec.modes(), RecoveryTrigger::Spec, after)
        }
        (None, None) => {
            return Decision::Hold(Hold::NotConfigured {
                survivor: best_survivor(o).map(|(m, i)| (m.name.clone(), i)),
            });
        }
    };
    if !input.supported {
        return Decision::Hold(Hold::Unsupported);
    }
    let since = status.quorum_lost_since.clone();
    if by == RecoveryTrigger::Spec {
        let lost_for = since
            .as_ref()
            .map_or(Duration::ZERO, |s| elapsed(s, input.now));
        if lost_for < after {
            return Decision::Hold(Hold::Waiting {
                after,
                since,
                modes: requested.iter().map(Requested::mode).collect(),
            });
        }
    }
    let mut why = Vec::new();
    for r in &requested {
        let mut run = RecoveryRun {
            mode: r.mode(),
            trigger: by,
            phase: RecoveryPhase::SettingAside,
            started_at: input.now.clone(),
            serving_at: None,
            finished_at: None,
            outcome: None,
            reason: None,
            message: None,
            quorum_lost_since: since.clone(),
            previous_cluster_id: input.cluster_id.map(str::to_owned),
            cluster_id: None,
            survivor: None,
            survivor_raft_index: None,
            backup_name: None,
            backup: None,
            revision: None,
            members: Vec::new(),
            token: None,
            kept: Vec::new(),
            phase_since: Some(input.now.clone()),
        };
        match r {
            // Rule 4.
            Requested::FromSurvivor => match survivor(o, after) {
                Ok((s, index)) => {
                    run.survivor = Some(s.name.to_string());
                    run.survivor_raft_index = i64::try_from(index).ok();
                    let action = set_aside(o, &run).unwrap_or(RecoveryAction::ForceNewCluster {
                        survivor: s.name.clone(),
                    });
                    return Decision::Act {
                        start: Some(Box::new(run)),
                        mode: RecoveryMode::FromSurvivor,
                        action,
                    };
                }
                Err(e) => why.push(format!("fromSurvivor: {e}")),
            },
            // Rule 5.
            Requested::FromBackup { .. } if !input.backups => why.push(
                "fromBackup: restoring a backup in place is not available on this runtime yet (restore it into a new cluster with an EtcdRestore)".to_owned(),
            ),
            Requested::FromBackup { backup_name } => {
                let Ok(size) = u32::try_from(input.spec.size) else {
                    return Decision::Idle;
                };
                let first = o.next_ordinal();
                run.phase = RecoveryPhase::Fetching;
                run.backup_name = Some(backup_name.clone());
                run.members = (first..first.saturating_add(size))
                    .map(|i| MemberName::new(&o.cluster_name, i).to_string())
                    .collect();
                run.token = Some(format!(
                    "{}-{}-recovered-{}",
                    input.namespace,
                    o.cluster_name,
                    input.now.0.as_second()
                ));
                return Decision::Act {
                    start: Some(Box::new(run)),
                    mode: RecoveryMode::FromBackup,
                    action: RecoveryAction::Fetch {
                        backup_name: backup_name.clone(),
                    },
                };
            }
        }
    }
    match (by, trigger) {
        (RecoveryTrigger::Annotation, Some(t)) => Decision::Refuse {
            trigger: t.to_owned(),
            why: why.join("; "),
        },
        _ => Decision::Hold(Hold::NotPossible { why }),
    }
}

/// The voter to recover from: its data is there, its status answers, highest raft index
/// (ties: lowest ordinal).
fn best_survivor(o: &Observed) -> Option<(&ObservedMember, u64)> {
    // A restart must keep its data (not an emptyDir Pod): the survivor is restarted twice.
    o.voters()
        .filter(|m| m.restart_keeps_data() && m.is_running())
        .filter_map(|m| Some((m, m.etcd.as_ref()?.raft_index?)))
        .min_by(|(a, ai), (b, bi)| bi.cmp(ai).then_with(|| a.order_key().cmp(&b.order_key())))
}

/// Rule 4: the survivor, or why there is none.
fn survivor(o: &Observed, after: Duration) -> Result<(&ObservedMember, u64), String> {
    let Some((s, index)) = best_survivor(o) else {
        return Err("no voter with its data answers its status (a survivor needs both)".into());
    };
    let not_gone: Vec<String> = o
        .voters()
        .filter(|m| m.name != s.name && m.has_data() && down_for(m) < after)
        .map(|m| {
            format!(
                "{} has its data and has not been down for {} yet",
                m.name,
                Human(after)
            )
        })
        .collect();
    if !not_gone.is_empty() {
        return Err(format!(
            "{}; a quorum may still come back",
            not_gone.join(", ")
        ));
    }
    Ok((s, index))
}

/// The runtime members to set aside that are still there, as an action.
fn set_aside(o: &Observed, run: &RecoveryRun) -> Option<RecoveryAction> {
    let keep = |m: &ObservedMember| match run.mode {
        RecoveryMode::FromSurvivor => run.survivor.as_deref() == Some(m.name.as_str()),
        RecoveryMode::FromBackup => run.members.iter().any(|n| n == m.name.as_str()),
    };
    let mut members: Vec<&ObservedMember> = o
        .members
        .iter()
        .filter(|m| m.runtime.is_some() && !keep(m))
        .collect();
    members.sort_by_key(|m| m.order_key());
    (!members.is_empty()).then(|| RecoveryAction::SetAside {
        members: members.iter().map(|m| m.name.clone()).collect(),
    })
}

fn act(run: &RecoveryRun, action: RecoveryAction) -> Decision {
    Decision::Act {
        start: None,
        mode: run.mode,
        action,
    }
}

fn roll_back(o: &Observed, run: &RecoveryRun, reason: &str, message: String) -> Decision {
    let (reason, message) = match (&run.reason, &run.message) {
        (Some(r), Some(m)) => (r.clone(), m.clone()),
        _ => (reason.to_owned(), message),
    };
    let created = run
        .members
        .iter()
        .map(|n| MemberName::from(n.as_str()))
        .filter(|n| o.member(n).is_some_and(|m| m.runtime.is_some()))
        .collect();
    act(
        run,
        RecoveryAction::RollBack {
            created,
            kept: run.kept.clone(),
            reason,
            message,
        },
    )
}

/// The next action of the run under way.
fn go_on(input: &Input, run: &RecoveryRun) -> Decision {
    let o = input.observed;
    // Rule 2 holds for every change, not only the first: quorum back (or a voter answering)
    // before anything was set aside ends the run with nothing changed.
    let untouched = run.kept.is_empty()
        && matches!(
            run.phase,
            RecoveryPhase::Fetching | RecoveryPhase::SettingAside
        );
    let answering = o
        .voters()
        .find(|m| m.etcd.as_ref().is_some_and(|e| e.healthy));
    if untouched && let Some(m) = answering {
        return roll_back(
            o,
            run,
            "QuorumBack",
            format!("{} answers with quorum again; nothing was changed", m.name),
        );
    }
    match (run.mode, run.phase) {
        (_, RecoveryPhase::RollingBack) => roll_back(o, run, "Failed", "a step failed".into()),
        (_, RecoveryPhase::Ended) => act(run, RecoveryAction::Finish),
        (RecoveryMode::FromBackup, RecoveryPhase::Fetching) => act(
            run,
            RecoveryAction::Fetch {
                backup_name: run.backup_name.clone().unwrap_or_default(),
            },
        ),
        (RecoveryMode::FromSurvivor, RecoveryPhase::Regrowing) => {
            let size = usize::try_from(input.spec.size).unwrap_or(0);
            let at_size = o.voter_count() == size
                && o.members.len() == size
                && o.members.iter().all(ObservedMember::is_healthy);
            if at_size {
                act(run, RecoveryAction::Finish)
            } else {
                Decision::Regrowing
            }
        }
        (RecoveryMode::FromSurvivor, _) => {
            if let Some(action) = set_aside(o, run) {
                return act(run, action);
            }
            let survivor = MemberName::from(run.survivor.clone().unwrap_or_default());
            if !o.member(&survivor).is_some_and(ObservedMember::has_data) {
                // Its data went while the run was under way: nothing left to recover from.
                return roll_back(
                    o,
                    run,
                    "SurvivorLost",
                    format!("{survivor} lost its data while the recovery was under way"),
                );
            }
            act(run, RecoveryAction::ForceNewCluster { survivor })
        }
        (RecoveryMode::FromBackup, _) => bootstrap_from_backup(input, run),
    }
}

/// fromBackup after the fetch: set the old members aside, bootstrap the new ones, wait for
/// their quorum (or roll back past the deadline).
fn bootstrap_from_backup(input: &Input, run: &RecoveryRun) -> Decision {
    let o = input.observed;
    if let Some(action) = set_aside(o, run) {
        return act(run, action);
    }
    let members: Vec<MemberName> = run
        .members
        .iter()
        .map(|n| MemberName::from(n.as_str()))
        .collect();
    let created = members
        .iter()
        .all(|n| o.member(n).is_some_and(|m| m.runtime.is_some()));
    if !created || run.phase != RecoveryPhase::Bootstrapping {
        let version = crate::api::validate::parse_version(&input.spec.version)
            .unwrap_or_else(|_| Version::new(0, 0, 0));
        return act(
            run,
            RecoveryAction::Bootstrap {
                members,
                version,
                token: run.token.clone().unwrap_or_default(),
            },
        );
    }
    let ours = o
        .voters()
        .filter(|m| members.contains(&m.name) && m.is_healthy())
        .count();
    if ours >= quorum::quorum(members.len()) && quorum::has_quorum(o) {
        return act(run, RecoveryAction::Finish);
    }
    if let Some(failed) = input.restore_failed {
        return roll_back(o, run, &failed.reason, failed.message.clone());
    }
    let waited = run
        .phase_since
        .as_ref()
        .map_or(Duration::ZERO, |s| elapsed(s, input.now));
    if waited > BOOTSTRAP_DEADLINE {
        return roll_back(
            o,
            run,
            "BootstrapTimedOut",
            format!(
                "the new members did not form a quorum within {} ({ours} of {} healthy)",
                Human(BOOTSTRAP_DEADLINE),
                members.len()
            ),
        );
    }
    Decision::Wait {
        mode: run.mode,
        what: format!(
            "{ours} of {} new members healthy, {} needed",
            members.len(),
            quorum::quorum(members.len())
        ),
    }
}

/// What carrying out an action found out, for [`record`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Fetch: the backup, verified.
    Fetched(RecoveredBackup),
    /// SetAside: where each member's data went.
    KeptAside(Vec<KeptMember>),
    /// ForceNewCluster: the survivor serves alone at this revision.
    Forced { revision: Option<i64> },
    /// Bootstrap, Finish, RollBack: done.
    Done,
    /// The action failed for good: Fetch ends the run (nothing changed); ForceNewCluster or
    /// Bootstrap roll it back.
    Failed { reason: String, message: String },
}

/// `status.recovery` after a pass: `decision`, and for an action what it came to (`None`:
/// not carried out this pass, try again). `quorum_lost` is whether the cluster had no quorum.
pub fn record(
    previous: Option<&RecoveryStatus>,
    decision: &Decision,
    outcome: Option<&Outcome>,
    trigger: Option<&str>,
    quorum_lost: bool,
    cluster_id: Option<&str>,
    now: &Time,
) -> Option<RecoveryStatus> {
    let mut st = previous.cloned().unwrap_or_default();
    if quorum_lost {
        st.quorum_lost_since.get_or_insert_with(|| now.clone());
    } else {
        st.quorum_lost_since = None;
    }
    if trigger.is_none() {
        st.handled_trigger = None;
    }
    // fromBackup: the new members' cluster id replaces the old one once they answer.
    if let Some(run) = st.run.as_mut()
        && run.mode == RecoveryMode::FromBackup
        && run.phase == RecoveryPhase::Bootstrapping
        && let Some(id) = cluster_id
        && run.previous_cluster_id.as_deref() != Some(id)
    {
        run.cluster_id = Some(id.to_owned());
    }
    match decision {
        Decision::Refuse { trigger, .. } => st.handled_trigger = Some(trigger.clone()),
        Decision::Act { start, action, .. } => {
            if let (Some(start), Some(_)) = (start, outcome) {
                if start.trigger == RecoveryTrigger::Annotation {
                    st.handled_trigger = trigger.map(str::to_owned);
                }
                st.run = Some((**start).clone());
            }
            if let (Some(run), Some(outcome)) = (st.run.as_mut(), outcome) {
                apply(run, action, outcome, now);
            }
            if let Some(run) = st.run.take_if(|r| r.phase == RecoveryPhase::Ended) {
                match run.outcome {
                    Some(RecoveryOutcome::Succeeded) => {
                        st.recoveries += 1;
                        st.failures = 0;
                    }
                    _ if run.trigger == RecoveryTrigger::Spec => st.failures += 1,
                    _ => {}
                }
                // A recovery that changed something counts against spec.recovery's one,
                // even when rolled back: the next takes the user's word.
                if run.outcome == Some(RecoveryOutcome::Failed) && !run.kept.is_empty() {
                    st.recoveries += 1;
                }
                st.last_run = Some(run);
            }
        }
        Decision::Idle | Decision::Hold(_) | Decision::Wait { .. } | Decision::Regrowing => {}
    }
    (st != RecoveryStatus::default()).then_some(st)
}

fn end(run: &mut RecoveryRun, outcome: RecoveryOutcome, now: &Time) {
    run.phase = RecoveryPhase::Ended;
    run.outcome = Some(outcome);
    run.finished_at = Some(now.clone());
    run.phase_since = Some(now.clone());
}

fn apply(run: &mut RecoveryRun, action: &RecoveryAction, outcome: &Outcome, now: &Time) {
    let next = |run: &mut RecoveryRun, phase| {
        if run.phase != phase {
            run.phase = phase;
            run.phase_since = Some(now.clone());
        }
    };
    match (action, outcome) {
        (RecoveryAction::Fetch { .. }, Outcome::Fetched(backup)) => {
            run.revision = Some(backup.revision);
            run.backup = Some(backup.clone());
            next(run, RecoveryPhase::SettingAside);
        }
        (RecoveryAction::SetAside { .. }, Outcome::KeptAside(kept)) => {
            for k in kept {
                if !run.kept.iter().any(|e| e.name == k.name) {
                    run.kept.push(k.clone());
                }
            }
            let phase = match run.mode {
                RecoveryMode::FromBackup => RecoveryPhase::Bootstrapping,
                RecoveryMode::FromSurvivor => RecoveryPhase::ForcingNewCluster,
            };
            // A fromBackup run bootstraps next; the phase moves once it has.
            if run.mode == RecoveryMode::FromSurvivor {
                next(run, phase);
            }
        }
        (RecoveryAction::ForceNewCluster { .. }, Outcome::Forced { revision }) => {
            run.revision = *revision;
            run.serving_at = Some(now.clone());
            next(run, RecoveryPhase::Regrowing);
        }
        (RecoveryAction::Bootstrap { .. }, Outcome::Done) => {
            next(run, RecoveryPhase::Bootstrapping);
        }
        (RecoveryAction::Finish, _) => {
            run.serving_at.get_or_insert_with(|| now.clone());
            end(run, RecoveryOutcome::Succeeded, now);
        }
        (
            RecoveryAction::RollBack {
                reason, message, ..
            },
            _,
        ) => {
            run.reason.get_or_insert_with(|| reason.clone());
            run.message.get_or_insert_with(|| message.clone());
            end(run, RecoveryOutcome::Failed, now);
        }
        (RecoveryAction::Fetch { .. }, Outcome::Failed { reason, message }) => {
            run.reason = Some(reason.clone());
            run.message = Some(format!("{message}; nothing was changed"));
            end(run, RecoveryOutcome::Failed, now);
        }
        (_, Outcome::Failed { reason, message }) => {
            run.reason = Some(reason.clone());
            run.message = Some(message.clone());
            next(run, RecoveryPhase::RollingBack);
        }
        _ => {}
    }
}

/// `12m30s`.
pub struct Human(pub Duration);

impl fmt::Display for Human {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.0.as_secs();
        let (h, m, sec) = (s / 3600, (s % 3600) / 60, s % 60);
        if h > 0 {
            write!(f, "{h}h{m}m")
        } else if m > 0 && sec > 0 {
            write!(f, "{m}m{sec}s")
        } else if m > 0 {
            write!(f, "{m}m")
        } else {
            write!(f, "{sec}s")
        }
    }
}

/// What the user can set, in one sentence.
pub fn what_to_set(survivor: Option<&(MemberName, u64)>) -> String {
    let from = match survivor {
        Some((name, index)) => format!(
            " ({name}, raft index {index}, is the most up-to-date member whose data survives)"
        ),
        None => String::new(),
    };
    format!(
        "nothing is done on its own: set spec.recovery.fromSurvivor: true{from} or spec.recovery.fromBackup.backupName: <EtcdBackup> to recover once quorum has been lost for spec.recovery.after (default 10m), or annotate the EtcdCluster {RECOVER_ANNOTATION}=fromSurvivor (or fromBackup:<EtcdBackup>) to recover once, now"
    )
}

impl fmt::Display for Hold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Hold::Reviving => f.write_str(
                "members that only stopped are restarted first; no recovery while they may bring quorum back",
            ),
            Hold::NotConfigured { survivor } => f.write_str(&what_to_set(survivor.as_ref())),
            // The status says since when; the message stays the same from pass to pass.
            Hold::Waiting { after, modes, .. } => {
                let modes: Vec<String> = modes.iter().map(ToString::to_string).collect();
                write!(
                    f,
                    "spec.recovery ({}) recovers once quorum has been lost for {}",
                    modes.join(", then "),
                    Human(*after)
                )
            }
            Hold::VoterAnswers { member } => write!(
                f,
                "{member} answers a linearizable read, so a quorum exists somewhere; no recovery"
            ),
            Hold::AlreadyRecovered { at } => write!(
                f,
                "spec.recovery already recovered this cluster{}; it runs once per EtcdCluster: annotate {RECOVER_ANNOTATION}=fromSurvivor (or fromBackup:<EtcdBackup>) to recover again",
                at.as_ref().map(|t| format!(" at {}", t.0)).unwrap_or_default()
            ),
            Hold::BackingOff { failures } => write!(
                f,
                "the last {failures} automatic recovery attempt(s) failed (status.recovery.lastRun says why); trying again after a back-off"
            ),
            Hold::NotPossible { why } => write!(f, "no recovery applies: {}", why.join("; ")),
            Hold::Unsupported => f.write_str(
                "this runtime cannot recover a cluster; restore a backup into a new cluster with an EtcdRestore",
            ),
        }
    }
}

/// One line on a run, for the `Recovery` condition, logs and Events: what it restored, from
/// what, and what it covered.
pub fn describe(run: &RecoveryRun) -> String {
    let mut parts = Vec::new();
    match run.mode {
        RecoveryMode::FromBackup => {
            if let Some(b) = &run.backup {
                let mut s = format!(
                    "revision {} from EtcdBackup {} (s3://{}/{}",
                    b.revision, b.backup_name, b.bucket, b.key
                );
                if let Some(at) = &b.taken_at {
                    s.push_str(&format!(", taken {}", at.0));
                    if let Some(lost) = &run.quorum_lost_since
                        && lost.0 >= at.0
                    {
                        s.push_str(&format!(
                            ", {} before quorum was lost: writes after it are not restored",
                            Human(elapsed(at, lost))
                        ));
                    }
                }
                s.push(')');
                parts.push(s);
            } else if let Some(name) = &run.backup_name {
                parts.push(format!("from EtcdBackup {name}"));
            }
        }
        RecoveryMode::FromSurvivor => {
            if let Some(s) = &run.survivor {
                let mut line = format!("from survivor {s}");
                if let Some(i) = run.survivor_raft_index {
                    line.push_str(&format!(" (raft index {i})"));
                }
                if let Some(r) = run.revision {
                    line.push_str(&format!(", serving revision {r}"));
                }
                parts.push(line);
            }
        }
    }
    if !run.kept.is_empty() {
        let kept: Vec<String> = run
            .kept
            .iter()
            .map(|k| format!("{} at {}", k.name, k.at))
            .collect();
        parts.push(format!("old data kept: {}", kept.join(", ")));
    }
    if let (Some(before), Some(after)) = (&run.previous_cluster_id, &run.cluster_id)
        && before != after
    {
        parts.push(format!("cluster id {before} -> {after}"));
    }
    parts.join("; ")
}

#[cfg(test)]
mod tests;
