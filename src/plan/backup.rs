//! What to do next with an `EtcdBackup` and what its status says after each outcome: pure
//! decisions shared by both runtimes. Reading resources and Secrets, taking snapshots,
//! writing statuses and sleeping are the drivers' jobs ([`crate::drivers`]).
//!
//! # Backups
//! 1. An invalid spec changes nothing: [`status_invalid`] says why (`SpecValid=False`).
//! 2. One-shot (no `schedule`): due once per generation, until a backup of that generation
//!    succeeded. Success is `Ready=True` with the condition's `observedGeneration` equal to
//!    the generation (and `status.observedGeneration` recorded with it).
//! 3. Scheduled: due when `now >= nextScheduleTime`. A missing `nextScheduleTime`, or one
//!    recorded for an older generation, is computed from the cron expression after `now`
//!    ([`BackupDue::At`]); the caller records it with [`status_scheduled`].
//! 4. After a success `nextScheduleTime` moves to the next run after now; after a failure it
//!    stays, so the missed run is still due and the caller retries after [`retry_delay`].
//! 5. Retention runs only after a success (the caller's job); a failure deletes nothing.
//!

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::failure::{Failure, MemoryHolder, Precondition, set_failed};
use crate::api::backup::S3Destination;
use crate::api::backup::{
    BackupRecord, EtcdBackupSpec, EtcdBackupStatus, HISTORY_LIMIT, VerificationResult,
};
use crate::api::cluster::EtcdClusterStatus;
use crate::api::condition::{self, Status, types};
use crate::api::validate::Report;
use crate::backup::Error;
use crate::backup::schedule::next_run;
use crate::backup::{DownloadOptions, UploadOptions};

/// Condition reasons set here (besides error reasons).
pub mod reasons {
    pub const VALID: &str = "Valid";
    pub const INVALID: &str = "Invalid";
    pub const BACKUP_SUCCEEDED: &str = "BackupSucceeded";
    pub const SCHEDULED: &str = "Scheduled";
    pub const RESTORING: &str = "Restoring";
    pub const RESTORED: &str = "Restored";
    /// The `Verified` condition of an EtcdBackup with `verify: true`.
    pub const SNAPSHOT_VERIFIED: &str = "SnapshotVerified";
    pub const VERIFIER_UNAVAILABLE: &str = "VerifierUnavailable";
    pub const VERIFICATION_INCOMPLETE: &str = "VerificationIncomplete";
}

/// The client URLs a backup of the cluster named `cluster` connects to: its healthy members'
/// as its status lists them, once it is `Available`. Both runtimes use this rule.
///
/// # Errors
/// [`Precondition::ClusterNotReady`] when the cluster is not `Available` or no member is
/// healthy.
pub fn backup_endpoints(
    cluster: &str,
    status: Option<&EtcdClusterStatus>,
) -> Result<Vec<String>, Precondition> {
    let not_ready = || Precondition::ClusterNotReady {
        cluster: cluster.to_owned(),
    };
    let status = status.ok_or_else(not_ready)?;
    let endpoints: Vec<String> = status
        .members
        .iter()
        .filter(|m| m.healthy)
        .filter_map(|m| m.client_url.clone())
        .collect();
    if !condition::is_true(&status.conditions, types::AVAILABLE) || endpoints.is_empty() {
        return Err(not_ready());
    }
    Ok(endpoints)
}

/// Whether a backup to `destination` fits the operator's backup memory budget: the parts an
/// upload holds at once ([`UploadOptions::bytes_held`]) and, with `verify`, the ranges the
/// download that reads it back holds ([`DownloadOptions::bytes_held`]; one after the other,
/// so the larger counts) must not exceed `budget_mib`.
///
/// # Errors
/// [`Precondition::MemoryBudget`], naming what it needs and the budget.
pub fn fits_memory_budget(
    destination: &S3Destination,
    verify: bool,
    budget_mib: u64,
) -> Result<(), Precondition> {
    let options = UploadOptions::with_part_size_mib(destination.part_size_mib);
    let upload_mib = options.bytes_held().div_ceil(1 << 20);
    let verify_mib = if verify {
        DownloadOptions::default().bytes_held().div_ceil(1 << 20)
    } else {
        0
    };
    let (needed_mib, what) = if verify_mib > upload_mib {
        (verify_mib, MemoryHolder::VerificationDownload)
    } else {
        (upload_mib, MemoryHolder::Parts)
    };
    if needed_mib <= budget_mib {
        return Ok(());
    }
    Err(Precondition::MemoryBudget {
        part_size_mib: u64::try_from(options.part_size >> 20).unwrap_or(u64::MAX),
        needed_mib,
        budget_mib,
        what,
    })
}

/// Whether a backup should run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BackupDue {
    /// Take one now.
    Now,
    /// The next run is at this time (record it as `nextScheduleTime`).
    At(Timestamp),
    /// Nothing to do until the spec changes.
    Never(Idle),
}

/// Why a backup is not due, ever, for its current generation.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Idle {
    #[error("the one-shot backup of generation {generation} succeeded")]
    OneShotDone { generation: i64 },
    #[error("cron schedule {expr:?} has no run after {after}")]
    NoNextRun { expr: String, after: Timestamp },
    #[error("{expr:?} is not a cron schedule")]
    InvalidSchedule { expr: String },
}

/// Whether the backup `spec` at `generation` with `status` is due at `now` (see the module
/// docs for the rules). Validate the spec first: an unparseable schedule is `Never`.
pub fn backup_due(
    spec: &EtcdBackupSpec,
    generation: i64,
    status: Option<&EtcdBackupStatus>,
    now: Timestamp,
) -> BackupDue {
    let Some(expr) = &spec.schedule else {
        return if has_succeeded(status, generation) {
            BackupDue::Never(Idle::OneShotDone { generation })
        } else {
            BackupDue::Now
        };
    };
    let recorded = status
        .filter(|s| s.observed_generation == Some(generation))
        .and_then(|s| s.next_schedule_time.as_ref())
        .map(|t| t.0);
    match recorded {
        Some(at) if now >= at => BackupDue::Now,
        Some(at) => BackupDue::At(at),
        None => match next_run(expr, now) {
            Ok(at) => BackupDue::At(at),
            Err(Error::NoNextRun { .. }) => BackupDue::Never(Idle::NoNextRun {
                expr: expr.clone(),
                after: now,
            }),
            Err(_) => BackupDue::Never(Idle::InvalidSchedule { expr: expr.clone() }),
        },
    }
}

/// Whether a backup of `generation` succeeded: `Ready=True` observed at that generation.
pub fn has_succeeded(status: Option<&EtcdBackupStatus>, generation: i64) -> bool {
    status.is_some_and(|s| {
        s.last_backup.is_some()
            && condition::find(&s.conditions, types::READY)
                .is_some_and(|c| c.status == "True" && c.observed_generation == Some(generation))
    })
}

/// The run after one that ended at `now`: the next cron time for a scheduled backup, `None`
/// for a one-shot.
///
/// # Errors
/// [`Error::InvalidSchedule`], [`Error::NoNextRun`].
pub fn next_schedule(spec: &EtcdBackupSpec, now: Timestamp) -> Result<Option<Timestamp>, Error> {
    spec.schedule
        .as_deref()
        .map(|expr| next_run(expr, now))
        .transpose()
}

fn time(t: Timestamp) -> Time {
    Time(t)
}

fn base(status: Option<&EtcdBackupStatus>, generation: i64, now: Timestamp) -> EtcdBackupStatus {
    let mut st = status.cloned().unwrap_or_default();
    st.observed_generation = Some(generation);
    condition::set(
        &mut st.conditions,
        types::SPEC_VALID,
        Status::True,
        reasons::VALID,
        "",
        Some(generation),
        time(now),
    );
    st
}

/// A valid backup waiting for its next run at `next` (`None` for a one-shot).
pub fn status_scheduled(
    status: Option<&EtcdBackupStatus>,
    generation: i64,
    next: Option<Timestamp>,
    now: Timestamp,
) -> EtcdBackupStatus {
    let mut st = base(status, generation, now);
    st.next_schedule_time = next.map(time);
    st
}

/// The status after `record` was written: it becomes `lastBackup` and the head of `history`
/// (newest first, at most [`HISTORY_LIMIT`]); `Ready=True`, `Failed=False`; the next run is
/// `next`.
pub fn status_after_success(
    status: Option<&EtcdBackupStatus>,
    record: BackupRecord,
    generation: i64,
    next: Option<Timestamp>,
    now: Timestamp,
) -> EtcdBackupStatus {
    let mut st = base(status, generation, now);
    let message = format!(
        "backed up revision {} to {} ({} bytes, {:.1} MB/s)",
        record.revision, record.key, record.size, record.mb_per_second
    );
    condition::set(
        &mut st.conditions,
        types::READY,
        Status::True,
        reasons::BACKUP_SUCCEEDED,
        message,
        Some(generation),
        time(now),
    );
    condition::set(
        &mut st.conditions,
        types::FAILED,
        Status::False,
        reasons::BACKUP_SUCCEEDED,
        "",
        Some(generation),
        time(now),
    );
    set_verified(&mut st.conditions, &record, generation, now);
    st.history.retain(|r| r.key != record.key);
    st.history.insert(0, record.clone());
    st.history.truncate(HISTORY_LIMIT);
    st.last_backup = Some(record);
    st.last_successful_time = Some(time(now));
    st.next_schedule_time = next.map(time);
    st
}

/// The `Verified` condition after `record` was written: what its verification found, or no
/// condition when none ran (`verify` is off).
fn set_verified(
    conditions: &mut Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition>,
    record: &BackupRecord,
    generation: i64,
    now: Timestamp,
) {
    let Some(v) = &record.verification else {
        conditions.retain(|c| c.type_ != types::VERIFIED);
        return;
    };
    let (status, reason, message) = match v.result {
        VerificationResult::Verified => (
            Status::True,
            reasons::SNAPSHOT_VERIFIED,
            format!(
                "{} read back: revision {}, {} keys; {}",
                record.key,
                v.revision.unwrap_or_default(),
                v.total_keys.unwrap_or_default(),
                v.message
            ),
        ),
        VerificationResult::DigestOnly => (
            Status::False,
            reasons::VERIFIER_UNAVAILABLE,
            format!("{} read back: {}", record.key, v.message),
        ),
        VerificationResult::Incomplete => (
            Status::False,
            reasons::VERIFICATION_INCOMPLETE,
            format!("{}: {}", record.key, v.message),
        ),
    };
    condition::set(
        conditions,
        types::VERIFIED,
        status,
        reason,
        message,
        Some(generation),
        time(now),
    );
}

/// The status after an attempt failed: `Failed=True` and `Ready=False` with the failure's
/// reason and message; `lastBackup` and `history` are kept; the next run is `next`.
pub fn status_after_failure(
    status: Option<&EtcdBackupStatus>,
    failure: &impl Failure,
    generation: i64,
    next: Option<Timestamp>,
    now: Timestamp,
) -> EtcdBackupStatus {
    let mut st = base(status, generation, now);
    set_failed(&mut st.conditions, failure, generation, now);
    st.next_schedule_time = next.map(time);
    st
}

/// Drops the backups retention deleted from `history`, so it lists only objects that exist
/// (`lastBackup`, the newest, is never deleted).
pub fn forget_deleted(status: &mut EtcdBackupStatus, deleted: &[String]) {
    status.history.retain(|r| !deleted.contains(&r.key));
}

/// Adds to the `Ready` message that pruning old backups failed after a success.
pub fn note_retention_failure(status: &mut EtcdBackupStatus, failure: &impl Failure) {
    if let Some(c) = status
        .conditions
        .iter_mut()
        .find(|c| c.type_ == types::READY)
    {
        c.message = format!(
            "{}; deleting expired backups failed ({}): {}",
            c.message,
            failure.reason(),
            failure.message()
        );
    }
}

/// The status of an invalid spec: `SpecValid=False` naming every problem; nothing else
/// changes (no backup is taken or deleted).
pub fn status_invalid(
    status: Option<&EtcdBackupStatus>,
    report: &Report,
    generation: i64,
    now: Timestamp,
) -> EtcdBackupStatus {
    let mut st = status.cloned().unwrap_or_default();
    st.observed_generation = Some(generation);
    condition::set(
        &mut st.conditions,
        types::SPEC_VALID,
        Status::False,
        reasons::INVALID,
        report.errors_message(),
        Some(generation),
        time(now),
    );
    st.next_schedule_time = None;
    st
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::api::s3::S3Connection;
    use crate::backup::S3Op;

    use crate::api::backup::{BackupDestination, S3Destination};

    use crate::api::validate::Problem;

    pub(crate) fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    pub(crate) const NOW: &str = "2025-06-10T07:30:00Z";

    pub(crate) fn now() -> Timestamp {
        ts(NOW)
    }

    pub(crate) fn spec(schedule: Option<&str>) -> EtcdBackupSpec {
        EtcdBackupSpec {
            cluster_name: "main".into(),
            destination: BackupDestination {
                s3: S3Destination {
                    bucket: "backups".into(),
                    prefix: Some("p".into()),
                    connection: S3Connection::default(),
                    part_size_mib: None,
                    compression: None,
                    sign_payload: None,
                },
            },
            schedule: schedule.map(str::to_owned),
            retention: None,
            verify: None,
        }
    }

    pub(crate) fn record(key: &str) -> BackupRecord {
        BackupRecord {
            key: key.into(),
            size: 1000,
            sha256: "ab".repeat(32),
            revision: 42,
            etcd_version: "3.5.16".into(),
            cluster_id: "cdf818194e3a8c32".into(),
            duration_seconds: 0.5,
            mb_per_second: 2.0,
            time: Time(now()),
            verification: None,
        }
    }

    pub(crate) fn cond<'a>(
        cs: &'a [k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition],
        t: &str,
    ) -> &'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
        condition::find(cs, t).unwrap_or_else(|| panic!("no {t} condition in {cs:?}"))
    }

    pub(crate) fn missing_bucket() -> Error {
        Error::BucketMissing {
            op: S3Op::CreateMultipartUpload,
            bucket: "backups".into(),
        }
    }

    #[test]
    fn part_sizes_over_the_memory_budget_are_refused_with_the_numbers() {
        let mut dest = spec(None).destination.s3;
        // The default 5 MiB parts hold 4 x 5 = 20 MiB.
        assert_eq!(fits_memory_budget(&dest, false, 20), Ok(()));
        assert_eq!(
            fits_memory_budget(&dest, false, 19),
            Err(Precondition::MemoryBudget {
                part_size_mib: 5,
                needed_mib: 20,
                budget_mib: 19,
                what: MemoryHolder::Parts,
            })
        );
        // Verifying reads the object back in 4 ranges of 4 MiB in flight, one handed on, one
        // queued and one being hashed or written: 28 MiB.
        assert_eq!(
            fits_memory_budget(&dest, true, 20),
            Err(Precondition::MemoryBudget {
                part_size_mib: 5,
                needed_mib: 28,
                budget_mib: 20,
                what: MemoryHolder::VerificationDownload,
            })
        );
        let message = fits_memory_budget(&dest, true, 20).unwrap_err().to_string();
        assert!(
            message.starts_with("verify: true's download of the object holds 28 MiB")
                && message.ends_with("raise the budget or turn verify off"),
            "{message}"
        );
        assert_eq!(fits_memory_budget(&dest, true, 28), Ok(()));
        dest.part_size_mib = Some(5120);
        let refused = fits_memory_budget(&dest, true, crate::backup::DEFAULT_MEMORY_BUDGET_MIB);
        assert!(
            matches!(
                refused,
                Err(Precondition::MemoryBudget {
                    needed_mib: 20480,
                    ..
                })
            ),
            "{refused:?}"
        );
        assert!(!refused.unwrap_err().is_retryable());
    }

    #[test]
    fn a_backup_connects_to_the_healthy_members_of_an_available_cluster_only() {
        use crate::api::cluster::{EtcdClusterStatus, MemberStatus};
        let member = |i: u32, healthy: bool| MemberStatus {
            name: format!("main-{i}"),
            client_url: Some(format!("http://127.0.0.1:{}", 2379 + i)),
            healthy,
            ..Default::default()
        };
        let mut st = EtcdClusterStatus {
            members: vec![member(0, true), member(1, false), member(2, true)],
            ..Default::default()
        };
        let not_ready = Err(Precondition::ClusterNotReady {
            cluster: "main".into(),
        });
        assert_eq!(backup_endpoints("main", None), not_ready);
        assert_eq!(
            backup_endpoints("main", Some(&st)),
            not_ready,
            "not Available"
        );
        condition::set(
            &mut st.conditions,
            types::AVAILABLE,
            Status::True,
            "MembersHealthy",
            "",
            Some(1),
            Time(now()),
        );
        assert_eq!(
            backup_endpoints("main", Some(&st)).unwrap(),
            ["http://127.0.0.1:2379", "http://127.0.0.1:2381"]
        );
        for m in &mut st.members {
            m.healthy = false;
        }
        assert_eq!(
            backup_endpoints("main", Some(&st)),
            not_ready,
            "none healthy"
        );
    }

    #[test]
    fn a_one_shot_is_due_until_a_backup_of_its_generation_succeeded() {
        let s = spec(None);
        assert_eq!(backup_due(&s, 1, None, now()), BackupDue::Now);
        let done = status_after_success(None, record("a"), 1, None, now());
        assert_eq!(
            backup_due(&s, 1, Some(&done), now()),
            BackupDue::Never(Idle::OneShotDone { generation: 1 })
        );
        assert_eq!(done.observed_generation, Some(1));
        // A spec change is a new generation: one more backup.
        assert_eq!(backup_due(&s, 2, Some(&done), now()), BackupDue::Now);
    }

    #[test]
    fn a_failed_one_shot_is_still_due() {
        let s = spec(None);
        let failed = status_after_failure(None, &missing_bucket(), 1, None, now());
        assert_eq!(backup_due(&s, 1, Some(&failed), now()), BackupDue::Now);
        // A success of an older generation, then a failure of this one: still due.
        let old = status_after_success(None, record("a"), 1, None, now());
        let failed = status_after_failure(Some(&old), &missing_bucket(), 2, None, now());
        assert_eq!(backup_due(&s, 2, Some(&failed), now()), BackupDue::Now);
    }

    #[test]
    fn a_schedule_without_a_next_time_gets_one_from_cron() {
        let s = spec(Some("0 */6 * * *"));
        assert_eq!(
            backup_due(&s, 1, None, now()),
            BackupDue::At(ts("2025-06-10T12:00:00Z"))
        );
    }

    #[test]
    fn a_scheduled_backup_is_due_once_its_time_came() {
        let s = spec(Some("0 */6 * * *"));
        let st = status_scheduled(None, 1, Some(ts("2025-06-10T12:00:00Z")), now());
        assert_eq!(
            backup_due(&s, 1, Some(&st), now()),
            BackupDue::At(ts("2025-06-10T12:00:00Z"))
        );
        assert_eq!(
            backup_due(&s, 1, Some(&st), ts("2025-06-10T12:00:00Z")),
            BackupDue::Now
        );
        assert_eq!(
            backup_due(&s, 1, Some(&st), ts("2025-06-11T00:00:00Z")),
            BackupDue::Now
        );
    }

    #[test]
    fn a_new_generation_recomputes_the_next_time() {
        let s = spec(Some("0 * * * *"));
        let st = status_scheduled(None, 1, Some(ts("2025-06-11T00:00:00Z")), now());
        assert_eq!(
            backup_due(&s, 2, Some(&st), now()),
            BackupDue::At(ts("2025-06-10T08:00:00Z"))
        );
    }

    #[test]
    fn a_seconds_schedule_is_due_within_a_second() {
        let s = spec(Some("* * * * * *"));
        assert_eq!(
            backup_due(&s, 1, None, now()),
            BackupDue::At(ts("2025-06-10T07:30:01Z"))
        );
    }

    #[test]
    fn an_impossible_schedule_is_never_due() {
        let s = spec(Some("0 0 30 2 *"));
        assert!(matches!(
            backup_due(&s, 1, None, now()),
            BackupDue::Never(Idle::NoNextRun { .. })
        ));
        let s = spec(Some("every day"));
        assert!(matches!(
            backup_due(&s, 1, None, now()),
            BackupDue::Never(Idle::InvalidSchedule { .. })
        ));
    }

    #[test]
    fn a_failure_keeps_the_missed_run_due() {
        let s = spec(Some("0 */6 * * *"));
        let due_at = ts("2025-06-10T06:00:00Z");
        let st = status_scheduled(None, 1, Some(due_at), now());
        let failed = status_after_failure(Some(&st), &missing_bucket(), 1, Some(due_at), now());
        assert_eq!(backup_due(&s, 1, Some(&failed), now()), BackupDue::Now);
        let next = next_schedule(&s, now()).unwrap();
        assert_eq!(next, Some(ts("2025-06-10T12:00:00Z")));
        let ok = status_after_success(Some(&failed), record("a"), 1, next, now());
        assert_eq!(
            backup_due(&s, 1, Some(&ok), now()),
            BackupDue::At(ts("2025-06-10T12:00:00Z"))
        );
    }

    #[test]
    fn success_sets_last_backup_history_and_conditions() {
        let mut st = None;
        for i in 0..12 {
            st = Some(status_after_success(
                st.as_ref(),
                record(&format!("k{i:02}")),
                3,
                None,
                now(),
            ));
        }
        let st = st.unwrap();
        assert_eq!(st.last_backup.as_ref().unwrap().key, "k11");
        assert_eq!(st.history.len(), HISTORY_LIMIT);
        assert_eq!(st.history[0].key, "k11", "newest first");
        assert_eq!(st.history[HISTORY_LIMIT - 1].key, "k02");
        assert_eq!(st.last_successful_time, Some(Time(now())));
        assert_eq!(cond(&st.conditions, types::READY).status, "True");
        assert_eq!(cond(&st.conditions, types::FAILED).status, "False");
        assert_eq!(cond(&st.conditions, types::SPEC_VALID).status, "True");
        assert!(
            cond(&st.conditions, types::READY).message.contains("k11"),
            "{:?}",
            st.conditions
        );
    }

    #[test]
    fn the_same_key_twice_is_one_history_entry() {
        let st = status_after_success(None, record("k"), 1, None, now());
        let st = status_after_success(Some(&st), record("k"), 1, None, now());
        assert_eq!(st.history.len(), 1);
    }

    #[test]
    fn failure_sets_failed_with_the_reason_and_keeps_the_last_backup() {
        let ok = status_after_success(None, record("a"), 1, None, now());
        let err = Error::ShaMismatch {
            expected: "a".into(),
            actual: "b".into(),
        };
        let st = status_after_failure(Some(&ok), &err, 1, None, now());
        let failed = cond(&st.conditions, types::FAILED);
        assert_eq!(
            (failed.status.as_str(), failed.reason.as_str()),
            ("True", "ShaMismatch")
        );
        assert_eq!(failed.message, "snapshot sha256 is b, expected a");
        let ready = cond(&st.conditions, types::READY);
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", "ShaMismatch")
        );
        assert_eq!(st.last_backup, ok.last_backup);
        assert_eq!(st.history, ok.history);
    }

    #[test]
    fn a_retryable_failure_says_it_will_retry() {
        let err = Error::NoHealthyMember { last: None };
        let st = status_after_failure(None, &err, 1, None, now());
        let failed = cond(&st.conditions, types::FAILED);
        assert!(
            failed.message.ends_with("(will retry)"),
            "{}",
            failed.message
        );
        let blocked = Precondition::ClusterNotReady {
            cluster: "main".into(),
        };
        let st = status_after_failure(None, &blocked, 1, None, now());
        assert_eq!(
            cond(&st.conditions, types::FAILED).reason,
            "ClusterNotReady"
        );
    }

    #[test]
    fn deleted_backups_leave_the_history() {
        let st = status_after_success(None, record("old"), 1, None, now());
        let mut st = status_after_success(Some(&st), record("new"), 1, None, now());
        forget_deleted(&mut st, &["old".to_owned()]);
        let keys: Vec<&str> = st.history.iter().map(|r| r.key.as_str()).collect();
        assert_eq!(keys, ["new"]);
        assert_eq!(st.last_backup.unwrap().key, "new");
    }

    #[test]
    fn retention_failure_is_noted_on_ready() {
        let mut st = status_after_success(None, record("a"), 1, None, now());
        note_retention_failure(&mut st, &missing_bucket());
        let ready = cond(&st.conditions, types::READY);
        assert_eq!(ready.status, "True");
        assert!(ready.message.contains("BucketMissing"), "{}", ready.message);
    }

    #[test]
    fn an_invalid_spec_only_sets_spec_valid_false() {
        let ok = status_after_success(None, record("a"), 1, None, now());
        let report = Report {
            errors: vec![Problem {
                field: "spec.schedule".into(),
                message: "bad".into(),
            }],
            warnings: vec![],
        };
        let st = status_invalid(Some(&ok), &report, 2, now());
        let valid = cond(&st.conditions, types::SPEC_VALID);
        assert_eq!(valid.status, "False");
        assert_eq!(valid.message, "spec.schedule: bad");
        assert_eq!(st.observed_generation, Some(2));
        assert_eq!(st.last_backup, ok.last_backup);
        assert_eq!(cond(&st.conditions, types::READY).status, "True");
    }
}
