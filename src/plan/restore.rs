//! What to do next with an `EtcdRestore` and what its status says after each outcome: pure
//! decisions shared by both runtimes (where the snapshot comes from, the phases). Fetching
//! snapshots and creating members are the drivers' and runtimes' jobs.
//!
//! # Restores
//! `Pending` (validated, waiting for its source or a retry) → `Downloading` → `Restoring`
//! (data dirs written, members created) → `Completed`. A `Completed` restore is never run
//! again, whatever its spec says later. `Failed` is final for its generation: only a spec
//! change (a new generation) runs it again. Failures that may pass by themselves (source
//! not there yet, S3 unreachable) keep the phase `Pending` with `Failed=True`, and the caller
//! retries after [`retry_delay`].

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::backup::reasons;
use super::failure::{Failure, Precondition, set_failed};
use crate::api::EtcdBackup;
use crate::api::backup::{BackupRecord, VerificationResult};
use crate::api::condition::{self, Status, types};
use crate::api::restore::{EtcdRestoreSpec, EtcdRestoreStatus, PinnedSource, RestorePhase};
use crate::api::s3::S3Connection;
use crate::api::validate::Report;

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

/// The snapshot `spec` names: its `s3` object, or a backup of the EtcdBackup `backup` (the
/// one `spec.source.backupName` names, `None` if it does not exist) with that backup's
/// digest: the newest one whose verification passed ([`VerificationResult::Verified`],
/// `verify: true`), else the latest successful one. `spec.source.sha256` wins over the
/// recorded digest.
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
    let (mut from, _) = latest_backup(namespace, &name, backup)?;
    if let Some(sha) = &src.sha256 {
        from.sha256 = Some(sha.clone());
    }
    Ok(from)
}

/// The backup of the EtcdBackup `name` (`backup`, `None` if it does not exist) to restore,
/// with its record, to be verified against the digest recorded for it: the newest one in
/// `history` whose verification passed ([`VerificationResult::Verified`], `verify: true`),
/// else the latest successful one. What a restore of `backupName` and a recovery from a
/// backup both restore.
///
/// # Errors
/// [`Precondition::BackupNotFound`], [`Precondition::NoSuccessfulBackup`].
pub fn latest_backup<'a>(
    namespace: &str,
    name: &str,
    backup: Option<&'a EtcdBackup>,
) -> Result<(RestoreFrom, &'a BackupRecord), Precondition> {
    let backup = backup.ok_or_else(|| Precondition::BackupNotFound {
        namespace: namespace.to_owned(),
        backup: name.to_owned(),
    })?;
    let status = backup.status.as_ref();
    let latest = status.and_then(|s| s.last_backup.as_ref()).ok_or_else(|| {
        Precondition::NoSuccessfulBackup {
            backup: name.to_owned(),
        }
    })?;
    // History is newest first and starts with the latest.
    let verified = status.into_iter().flat_map(|s| &s.history).find(|r| {
        r.verification
            .as_ref()
            .is_some_and(|v| v.result == VerificationResult::Verified)
    });
    let last = verified.unwrap_or(latest);
    let s3 = &backup.spec.destination.s3;
    Ok((
        RestoreFrom {
            bucket: s3.bucket.clone(),
            key: last.key.clone(),
            connection: s3.connection.clone(),
            sha256: Some(last.sha256.clone()),
        },
        last,
    ))
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
        Time(now),
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
        Time(now),
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
        Time(now),
    );
    condition::set(
        &mut st.conditions,
        types::FAILED,
        Status::False,
        reasons::RESTORED,
        "",
        Some(generation),
        Time(now),
    );
    st
}

/// `status` with the object version the restore pinned, unless it records one already: the
/// first pin is what every member restores, whatever a later pass reads.
pub fn restore_status_pinned(
    mut status: EtcdRestoreStatus,
    pin: Option<&PinnedSource>,
) -> EtcdRestoreStatus {
    if status.pinned.is_none() {
        status.pinned = pin.cloned();
    }
    status
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
        Time(now),
    );
    st
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::EtcdClusterSpec;

    use crate::api::restore::{RestoreSource, RestoreTarget, S3Object};
    use crate::api::validate::Problem;
    use crate::backup::Error;
    use crate::plan::backup::tests::{cond, missing_bucket, now, record, spec};
    use crate::plan::backup::{status_after_failure, status_after_success};

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
    fn the_first_pin_stays_through_every_later_status() {
        let pin = PinnedSource {
            etag: "\"e1\"".into(),
            version_id: None,
            sha256: Some("ab".repeat(32)),
            size: Some(20512),
        };
        let st = restore_status_downloading(None, 1, "k.db", now());
        let st = restore_status_pinned(st, Some(&pin));
        assert_eq!(st.pinned.as_ref(), Some(&pin));
        let later = PinnedSource {
            etag: "\"e2\"".into(),
            ..pin.clone()
        };
        let st = restore_status_pinned(
            restore_status_restoring(Some(&st), 1, "k.db", None, Some(3), now()),
            Some(&later),
        );
        assert_eq!(st.pinned.as_ref(), Some(&pin), "never re-pinned");
        let st = restore_status_failed(
            Some(&st),
            &Error::SourceChanged {
                bucket: "b".into(),
                key: "k.db".into(),
                pinned: "\"e1\"".into(),
                now: "\"e2\"".into(),
            },
            1,
            now(),
        );
        assert_eq!(st.phase, RestorePhase::Failed);
        assert_eq!(cond(&st.conditions, types::FAILED).reason, "SourceChanged");
        assert_eq!(st.pinned.as_ref(), Some(&pin));
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
    fn a_backup_source_prefers_the_newest_verified_backup() {
        use crate::api::backup::{BackupRecord, Verification};
        let checked = |key: &str, result: Option<VerificationResult>| BackupRecord {
            verification: result.map(|result| Verification {
                result,
                time: Time(now()),
                revision: Some(42),
                total_keys: Some(7),
                message: String::new(),
            }),
            ..record(key)
        };
        let mut backup = EtcdBackup::new("nightly", spec(None));
        let mut st = None;
        for r in [
            checked("p/main/1.db", Some(VerificationResult::Verified)),
            checked("p/main/2.db", Some(VerificationResult::Verified)),
            checked("p/main/3.db", Some(VerificationResult::DigestOnly)),
            checked("p/main/4.db", None),
        ] {
            st = Some(status_after_success(st.as_ref(), r, 1, None, now()));
        }
        backup.status = st.clone();
        let from = restore_source("default", &from_backup("nightly", None), Some(&backup)).unwrap();
        assert_eq!(
            from.key, "p/main/2.db",
            "the newest verified, not the newest"
        );

        // Without any verified backup, the latest.
        let mut st = None;
        for r in [
            checked("p/main/5.db", Some(VerificationResult::Incomplete)),
            checked("p/main/6.db", None),
        ] {
            st = Some(status_after_success(st.as_ref(), r, 1, None, now()));
        }
        backup.status = st;
        let from = restore_source("default", &from_backup("nightly", None), Some(&backup)).unwrap();
        assert_eq!(from.key, "p/main/6.db");
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
