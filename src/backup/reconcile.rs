//! What to do next with an `EtcdBackup` or `EtcdRestore`, and what its status says after each
//! outcome: pure decisions shared by both runtimes. Reading resources and Secrets, taking
//! and restoring snapshots, writing statuses and sleeping are the drivers' jobs (the local
//! driver in `crate::local`, the Kubernetes controller).
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
//! # Restores
//! `Pending` (validated, waiting for its source or a retry) → `Downloading` → `Restoring`
//! (data dirs written, members created) → `Completed`. A `Completed` restore is never run
//! again, whatever its spec says later. `Failed` is final for its generation: only a spec
//! change (a new generation) runs it again. Failures that may pass by themselves (source
//! not there yet, S3 unreachable) keep the phase `Pending` with `Failed=True`, and the caller
//! retries after [`retry_delay`].

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::Error;
use super::schedule::next_run;
use crate::api::EtcdBackup;
use crate::api::backup::{BackupRecord, EtcdBackupSpec, EtcdBackupStatus, HISTORY_LIMIT};
use crate::api::condition::{self, Status, types};
use crate::api::restore::{EtcdRestoreSpec, EtcdRestoreStatus, RestorePhase};
use crate::api::s3::S3Connection;
use crate::api::validate::Report;

/// Condition reasons set here (besides error reasons).
pub mod reasons {
    pub const VALID: &str = "Valid";
    pub const INVALID: &str = "Invalid";
    pub const BACKUP_SUCCEEDED: &str = "BackupSucceeded";
    pub const SCHEDULED: &str = "Scheduled";
    pub const RESTORING: &str = "Restoring";
    pub const RESTORED: &str = "Restored";
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

/// A failure as a status reports it: a static PascalCase reason, a message naming what
/// failed, and whether retrying later may help with nobody acting.
pub trait Failure {
    fn reason(&self) -> &'static str;
    fn message(&self) -> String;
    fn is_retryable(&self) -> bool;
}

impl Failure for Error {
    fn reason(&self) -> &'static str {
        Error::reason(self)
    }

    fn message(&self) -> String {
        error_chain(self)
    }

    fn is_retryable(&self) -> bool {
        Error::is_retryable(self)
    }
}

/// What a backup or restore is waiting for before the engine can run.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Precondition {
    #[error("EtcdCluster {cluster} does not exist in namespace {namespace}")]
    ClusterNotFound { namespace: String, cluster: String },
    #[error("EtcdCluster {cluster} has no healthy quorum yet")]
    ClusterNotReady { cluster: String },
    #[error("Secret {secret} (credentialsSecret) does not exist in namespace {namespace}")]
    CredentialsSecretMissing { namespace: String, secret: String },
    /// Restores never write over a cluster; `evidence` says what was found.
    #[error("cluster {cluster} already exists ({evidence}); restores only create new clusters")]
    ClusterExists { cluster: String, evidence: String },
    #[error("EtcdBackup {backup} does not exist in namespace {namespace}")]
    BackupNotFound { namespace: String, backup: String },
    #[error("EtcdBackup {backup} has no successful backup yet")]
    NoSuccessfulBackup { backup: String },
}

impl Failure for Precondition {
    fn reason(&self) -> &'static str {
        match self {
            Precondition::ClusterNotFound { .. } => "ClusterNotFound",
            Precondition::ClusterNotReady { .. } => "ClusterNotReady",
            Precondition::CredentialsSecretMissing { .. } => "CredentialsSecretMissing",
            Precondition::ClusterExists { .. } => "ClusterExists",
            Precondition::BackupNotFound { .. } => "BackupNotFound",
            Precondition::NoSuccessfulBackup { .. } => "NoSuccessfulBackup",
        }
    }

    fn message(&self) -> String {
        self.to_string()
    }

    /// All but `ClusterExists` may pass without anyone touching this resource (the cluster
    /// comes up, the Secret or backup appears). A restore never waits for a cluster to go.
    fn is_retryable(&self) -> bool {
        !matches!(self, Precondition::ClusterExists { .. })
    }
}

/// Why one attempt at a backup or restore failed: an input was missing before the engine
/// ran, or the engine failed. Both runtimes report it through [`Failure`].
#[derive(Debug, thiserror::Error)]
pub enum AttemptError {
    #[error(transparent)]
    Precondition(#[from] Precondition),
    #[error(transparent)]
    Backup(#[from] Error),
}

impl Failure for AttemptError {
    fn reason(&self) -> &'static str {
        match self {
            AttemptError::Precondition(p) => p.reason(),
            AttemptError::Backup(e) => Failure::reason(e),
        }
    }

    fn message(&self) -> String {
        match self {
            AttemptError::Precondition(p) => p.message(),
            AttemptError::Backup(e) => Failure::message(e),
        }
    }

    fn is_retryable(&self) -> bool {
        match self {
            AttemptError::Precondition(p) => p.is_retryable(),
            AttemptError::Backup(e) => Failure::is_retryable(e),
        }
    }
}

/// `e: cause: cause...`, skipping a cause that repeats the text before it.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// How long to wait before trying again after `failures` failures in a row (at least 1):
/// 5 s doubling to 5 min for failures that may pass by themselves, 5 min for the others
/// (someone has to act; the caller may retry sooner when its inputs change).
pub fn retry_delay(failures: u32, retryable: bool) -> Duration {
    const FIRST: Duration = Duration::from_secs(5);
    const MAX: Duration = Duration::from_secs(300);
    if !retryable {
        return MAX;
    }
    let doublings = failures.saturating_sub(1).min(16);
    FIRST.saturating_mul(1 << doublings).min(MAX)
}

// --- backups --------------------------------------------------------------------------

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
    st.history.retain(|r| r.key != record.key);
    st.history.insert(0, record.clone());
    st.history.truncate(HISTORY_LIMIT);
    st.last_backup = Some(record);
    st.last_successful_time = Some(time(now));
    st.next_schedule_time = next.map(time);
    st
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

fn set_failed(
    conditions: &mut Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition>,
    failure: &impl Failure,
    generation: i64,
    now: Timestamp,
) {
    let mut message = failure.message();
    if failure.is_retryable() {
        message.push_str(" (will retry)");
    }
    condition::set(
        conditions,
        types::FAILED,
        Status::True,
        failure.reason(),
        message.clone(),
        Some(generation),
        time(now),
    );
    condition::set(
        conditions,
        types::READY,
        Status::False,
        failure.reason(),
        message,
        Some(generation),
        time(now),
    );
}

// --- restores -------------------------------------------------------------------------

/// What to do with a restore.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RestoreNext {
    /// Start it, or resume it (every step is idempotent).
    Run,
    /// It completed; never again.
    Done,
    /// It failed for this generation; wait for a spec change.
    GaveUp,
}

/// What to do with a restore at `generation` whose status is `status`.
pub fn restore_next(generation: i64, status: Option<&EtcdRestoreStatus>) -> RestoreNext {
    match status {
        Some(s) if s.phase == RestorePhase::Completed => RestoreNext::Done,
        Some(s) if s.phase == RestorePhase::Failed && s.observed_generation == Some(generation) => {
            RestoreNext::GaveUp
        }
        _ => RestoreNext::Run,
    }
}

/// Where the snapshot to restore is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RestoreFrom {
    pub bucket: String,
    pub key: String,
    pub connection: S3Connection,
    /// The digest to verify against; the object's own metadata when `None`.
    pub sha256: Option<String>,
}

/// The snapshot `spec` names: its `s3` object, or the latest successful backup of the
/// EtcdBackup `backup` (the one `spec.source.backupName` names, `None` if it does not exist)
/// with that backup's digest. `spec.source.sha256` wins over the recorded digest.
///
/// # Errors
/// [`Precondition::BackupNotFound`], [`Precondition::NoSuccessfulBackup`].
pub fn restore_source(
    namespace: &str,
    spec: &EtcdRestoreSpec,
    backup: Option<&EtcdBackup>,
) -> Result<RestoreFrom, Precondition> {
    let src = &spec.source;
    if let Some(object) = &src.s3 {
        return Ok(RestoreFrom {
            bucket: object.bucket.clone(),
            key: object.key.clone(),
            connection: object.connection.clone(),
            sha256: src.sha256.clone(),
        });
    }
    let name = src.backup_name.clone().unwrap_or_default();
    let backup = backup.ok_or_else(|| Precondition::BackupNotFound {
        namespace: namespace.to_owned(),
        backup: name.clone(),
    })?;
    let last = backup
        .status
        .as_ref()
        .and_then(|s| s.last_backup.as_ref())
        .ok_or(Precondition::NoSuccessfulBackup { backup: name })?;
    let s3 = &backup.spec.destination.s3;
    Ok(RestoreFrom {
        bucket: s3.bucket.clone(),
        key: last.key.clone(),
        connection: s3.connection.clone(),
        sha256: src.sha256.clone().or_else(|| Some(last.sha256.clone())),
    })
}

fn restore_base(
    status: Option<&EtcdRestoreStatus>,
    generation: i64,
    phase: RestorePhase,
    now: Timestamp,
) -> EtcdRestoreStatus {
    let mut st = status.cloned().unwrap_or_default();
    st.observed_generation = Some(generation);
    st.phase = phase;
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

fn set_progress(st: &mut EtcdRestoreStatus, generation: i64, message: String, now: Timestamp) {
    condition::set(
        &mut st.conditions,
        types::READY,
        Status::False,
        reasons::RESTORING,
        message,
        Some(generation),
        time(now),
    );
}

/// A valid restore that has not started (or waits to start again).
pub fn restore_status_pending(
    status: Option<&EtcdRestoreStatus>,
    generation: i64,
    now: Timestamp,
) -> EtcdRestoreStatus {
    restore_base(status, generation, RestorePhase::Pending, now)
}

/// Downloading and verifying `key`.
pub fn restore_status_downloading(
    status: Option<&EtcdRestoreStatus>,
    generation: i64,
    key: &str,
    now: Timestamp,
) -> EtcdRestoreStatus {
    let mut st = restore_base(status, generation, RestorePhase::Downloading, now);
    st.source_key = Some(key.to_owned());
    set_progress(&mut st, generation, format!("downloading {key}"), now);
    st
}

/// A verified snapshot of `sha256` at `revision` is being written into the members' data
/// dirs, and the members are being created.
pub fn restore_status_restoring(
    status: Option<&EtcdRestoreStatus>,
    generation: i64,
    key: &str,
    sha256: Option<&str>,
    revision: Option<i64>,
    now: Timestamp,
) -> EtcdRestoreStatus {
    let mut st = restore_base(status, generation, RestorePhase::Restoring, now);
    st.source_key = Some(key.to_owned());
    st.sha256 = sha256.map(str::to_owned);
    st.restored_revision = revision;
    set_progress(
        &mut st,
        generation,
        format!(
            "restoring {} into new members",
            what_is_restored(key, revision)
        ),
        now,
    );
    st
}

/// `revision N of KEY`, or just the key when the revision is unknown (a foreign object
/// without our metadata or key layout).
fn what_is_restored(key: &str, revision: Option<i64>) -> String {
    match revision {
        Some(r) => format!("revision {r} of {key}"),
        None => key.to_owned(),
    }
}

/// The members run on the restored data: `Completed`, `Ready=True`, `Failed=False`.
/// `cluster_id` may come later ([`restore_status_with_cluster_id`]).
pub fn restore_status_completed(
    status: Option<&EtcdRestoreStatus>,
    generation: i64,
    key: &str,
    sha256: Option<&str>,
    revision: Option<i64>,
    cluster_id: Option<String>,
    now: Timestamp,
) -> EtcdRestoreStatus {
    let mut st = restore_base(status, generation, RestorePhase::Completed, now);
    st.source_key = Some(key.to_owned());
    st.sha256 = sha256.map(str::to_owned);
    st.restored_revision = revision;
    st.cluster_id = cluster_id.or(st.cluster_id);
    condition::set(
        &mut st.conditions,
        types::READY,
        Status::True,
        reasons::RESTORED,
        match revision {
            Some(r) => format!("restored revision {r} from {key}"),
            None => format!("restored {key} (revision unknown)"),
        },
        Some(generation),
        time(now),
    );
    condition::set(
        &mut st.conditions,
        types::FAILED,
        Status::False,
        reasons::RESTORED,
        "",
        Some(generation),
        time(now),
    );
    st
}

/// A completed restore, now with the new cluster's id.
pub fn restore_status_with_cluster_id(
    status: &EtcdRestoreStatus,
    cluster_id: &str,
) -> EtcdRestoreStatus {
    let mut st = status.clone();
    st.cluster_id = Some(cluster_id.to_owned());
    st
}

/// The status after a failure: `Failed=True`, `Ready=False` with its reason and message.
/// A retryable failure keeps the phase `Pending` (the caller retries later); any other
/// makes it `Failed`, final for this generation.
pub fn restore_status_failed(
    status: Option<&EtcdRestoreStatus>,
    failure: &impl Failure,
    generation: i64,
    now: Timestamp,
) -> EtcdRestoreStatus {
    let phase = if failure.is_retryable() {
        RestorePhase::Pending
    } else {
        RestorePhase::Failed
    };
    let mut st = restore_base(status, generation, phase, now);
    set_failed(&mut st.conditions, failure, generation, now);
    st
}

/// The status of an invalid spec: `Failed` with `SpecValid=False` naming every problem;
/// nothing is downloaded or created.
pub fn restore_status_invalid(
    status: Option<&EtcdRestoreStatus>,
    report: &Report,
    generation: i64,
    now: Timestamp,
) -> EtcdRestoreStatus {
    let mut st = status.cloned().unwrap_or_default();
    st.observed_generation = Some(generation);
    st.phase = RestorePhase::Failed;
    condition::set(
        &mut st.conditions,
        types::SPEC_VALID,
        Status::False,
        reasons::INVALID,
        report.errors_message(),
        Some(generation),
        time(now),
    );
    st
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::EtcdClusterSpec;
    use crate::api::backup::{BackupDestination, S3Destination};
    use crate::api::restore::{RestoreSource, RestoreTarget, S3Object};
    use crate::api::validate::Problem;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    const NOW: &str = "2025-06-10T07:30:00Z";

    fn now() -> Timestamp {
        ts(NOW)
    }

    fn spec(schedule: Option<&str>) -> EtcdBackupSpec {
        EtcdBackupSpec {
            cluster_name: "main".into(),
            destination: BackupDestination {
                s3: S3Destination {
                    bucket: "backups".into(),
                    prefix: Some("p".into()),
                    connection: S3Connection::default(),
                    part_size_mib: None,
                },
            },
            schedule: schedule.map(str::to_owned),
            retention: None,
        }
    }

    fn record(key: &str) -> BackupRecord {
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
        }
    }

    fn cond<'a>(
        cs: &'a [k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition],
        t: &str,
    ) -> &'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
        condition::find(cs, t).unwrap_or_else(|| panic!("no {t} condition in {cs:?}"))
    }

    fn missing_bucket() -> Error {
        Error::BucketMissing {
            op: super::super::S3Op::CreateMultipartUpload,
            bucket: "backups".into(),
        }
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
    fn the_error_chain_names_the_cause() {
        #[derive(Debug, thiserror::Error)]
        #[error("outer")]
        struct Outer(#[source] std::io::Error);
        let e = Outer(std::io::Error::other("inner"));
        assert_eq!(error_chain(&e), "outer: inner");
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

    #[test]
    fn retries_back_off_and_permanent_failures_wait_long() {
        assert_eq!(retry_delay(1, true), Duration::from_secs(5));
        assert_eq!(retry_delay(3, true), Duration::from_secs(20));
        assert_eq!(retry_delay(40, true), Duration::from_secs(300));
        assert_eq!(retry_delay(1, false), Duration::from_secs(300));
    }

    // --- restores ---

    fn restore_spec(source: RestoreSource) -> EtcdRestoreSpec {
        EtcdRestoreSpec {
            source,
            cluster: RestoreTarget {
                name: "restored".into(),
                spec: EtcdClusterSpec::new(3, "3.5.16"),
            },
        }
    }

    fn from_backup(name: &str, sha: Option<&str>) -> EtcdRestoreSpec {
        restore_spec(RestoreSource {
            s3: None,
            backup_name: Some(name.into()),
            sha256: sha.map(str::to_owned),
        })
    }

    #[test]
    fn restore_phases_run_in_order_and_completed_is_final() {
        assert_eq!(restore_next(1, None), RestoreNext::Run);
        let st = restore_status_pending(None, 1, now());
        assert_eq!(st.phase, RestorePhase::Pending);
        assert_eq!(restore_next(1, Some(&st)), RestoreNext::Run);
        let st = restore_status_downloading(Some(&st), 1, "p/main/x.db", now());
        assert_eq!(st.phase, RestorePhase::Downloading);
        assert_eq!(st.source_key.as_deref(), Some("p/main/x.db"));
        assert_eq!(restore_next(1, Some(&st)), RestoreNext::Run, "resumed");
        let sha = "ab".repeat(32);
        let st = restore_status_restoring(Some(&st), 1, "p/main/x.db", Some(&sha), Some(42), now());
        assert_eq!(st.phase, RestorePhase::Restoring);
        assert_eq!(cond(&st.conditions, types::READY).status, "False");
        let st = restore_status_completed(
            Some(&st),
            1,
            "p/main/x.db",
            Some(&sha),
            Some(42),
            None,
            now(),
        );
        assert_eq!(st.phase, RestorePhase::Completed);
        assert_eq!(st.restored_revision, Some(42));
        assert_eq!(cond(&st.conditions, types::READY).status, "True");
        assert_eq!(cond(&st.conditions, types::FAILED).status, "False");
        assert_eq!(restore_next(1, Some(&st)), RestoreNext::Done);
        assert_eq!(
            restore_next(7, Some(&st)),
            RestoreNext::Done,
            "never redone"
        );
        let st = restore_status_with_cluster_id(&st, "cdf818194e3a8c32");
        assert_eq!(st.cluster_id.as_deref(), Some("cdf818194e3a8c32"));
    }

    #[test]
    fn a_permanent_restore_failure_is_final_for_its_generation() {
        let err = Error::ShaMismatch {
            expected: "a".into(),
            actual: "b".into(),
        };
        let st = restore_status_failed(None, &err, 1, now());
        assert_eq!(st.phase, RestorePhase::Failed);
        assert_eq!(cond(&st.conditions, types::FAILED).reason, "ShaMismatch");
        assert_eq!(restore_next(1, Some(&st)), RestoreNext::GaveUp);
        assert_eq!(restore_next(2, Some(&st)), RestoreNext::Run);
        let exists = Precondition::ClusterExists {
            cluster: "restored".into(),
            evidence: "an EtcdCluster document".into(),
        };
        let st = restore_status_failed(None, &exists, 1, now());
        assert_eq!(st.phase, RestorePhase::Failed);
        assert_eq!(cond(&st.conditions, types::FAILED).reason, "ClusterExists");
    }

    #[test]
    fn a_retryable_restore_failure_stays_pending() {
        let st = restore_status_failed(
            None,
            &Precondition::NoSuccessfulBackup {
                backup: "nightly".into(),
            },
            1,
            now(),
        );
        assert_eq!(st.phase, RestorePhase::Pending);
        assert_eq!(cond(&st.conditions, types::FAILED).status, "True");
        assert_eq!(restore_next(1, Some(&st)), RestoreNext::Run);
    }

    #[test]
    fn an_invalid_restore_fails_with_spec_valid_false() {
        let report = Report {
            errors: vec![Problem {
                field: "spec.source".into(),
                message: "set exactly one of s3 or backupName".into(),
            }],
            warnings: vec![],
        };
        let st = restore_status_invalid(None, &report, 1, now());
        assert_eq!(st.phase, RestorePhase::Failed);
        assert_eq!(cond(&st.conditions, types::SPEC_VALID).status, "False");
        assert_eq!(restore_next(1, Some(&st)), RestoreNext::GaveUp);
    }

    #[test]
    fn an_s3_source_is_used_as_given() {
        let object = S3Object {
            bucket: "b-1".into(),
            key: "manual/x.db".into(),
            connection: S3Connection::default(),
        };
        let spec = restore_spec(RestoreSource {
            s3: Some(object),
            backup_name: None,
            sha256: None,
        });
        let from = restore_source("default", &spec, None).unwrap();
        assert_eq!(
            (from.bucket.as_str(), from.key.as_str(), from.sha256),
            ("b-1", "manual/x.db", None)
        );
    }

    #[test]
    fn a_backup_source_is_its_last_successful_backup_and_digest() {
        let mut backup = EtcdBackup::new("nightly", spec(None));
        let ok = status_after_success(None, record("p/main/a.db"), 1, None, now());
        let failed = status_after_failure(Some(&ok), &missing_bucket(), 1, None, now());
        backup.status = Some(failed);
        let from = restore_source("default", &from_backup("nightly", None), Some(&backup)).unwrap();
        assert_eq!(from.key, "p/main/a.db");
        assert_eq!(from.bucket, "backups");
        assert_eq!(from.sha256, Some("ab".repeat(32)));
        let given = "cd".repeat(32);
        let from = restore_source(
            "default",
            &from_backup("nightly", Some(&given)),
            Some(&backup),
        )
        .unwrap();
        assert_eq!(from.sha256, Some(given), "the spec's digest wins");
    }

    #[test]
    fn a_backup_source_without_a_success_waits() {
        let spec = from_backup("nightly", None);
        assert_eq!(
            restore_source("default", &spec, None).unwrap_err().reason(),
            "BackupNotFound"
        );
        let backup = EtcdBackup::new("nightly", super::tests::spec(None));
        let err = restore_source("default", &spec, Some(&backup)).unwrap_err();
        assert_eq!(err.reason(), "NoSuccessfulBackup");
        assert!(err.is_retryable());
    }
}
