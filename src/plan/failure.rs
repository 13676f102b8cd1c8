//! How a failed backup or restore shows in its status: a static reason, a message naming
//! what failed, whether retrying may help by itself ([`Failure`]), the preconditions a
//! driver checks before the engine runs ([`Precondition`]), and how long to wait before the
//! next try ([`retry_delay`]). Shared by both runtimes' backup and restore drivers.

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::api::condition::{self, Status, types};
use crate::backup::Error;
use crate::error_chain::error_chain;

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
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, strum::IntoStaticStr)]
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
    #[error(
        "no credentialsSecret is named, and this operator does not lend its own cloud identity to backups and restores in namespace {namespace}: name a Secret, or start the operator with --allow-ambient-credentials"
    )]
    AmbientCredentialsNotAllowed { namespace: String },
    #[error(
        "{what} holds {needed_mib} MiB in memory at once (partSizeMiB {part_size_mib}), over the operator's backup memory budget of {budget_mib} MiB (--backup-memory-budget-mib): {}",
        what.remedy()
    )]
    MemoryBudget {
        part_size_mib: u64,
        needed_mib: u64,
        budget_mib: u64,
        /// What holds it: the upload's parts, or the verification's download.
        what: MemoryHolder,
    },
}

/// What holds a backup's memory: the larger of the two is checked against the budget.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemoryHolder {
    /// The upload's parts (`partSizeMiB` x parts held).
    Parts,
    /// `verify: true`'s download of the object (fixed ranges, whatever `partSizeMiB`).
    VerificationDownload,
}

impl MemoryHolder {
    /// What a user can change.
    pub fn remedy(self) -> &'static str {
        match self {
            Self::Parts => "lower partSizeMiB or raise the budget",
            Self::VerificationDownload => "raise the budget or turn verify off",
        }
    }
}

impl std::fmt::Display for MemoryHolder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Parts => "the upload's parts",
            Self::VerificationDownload => "verify: true's download of the object",
        })
    }
}

impl Failure for Precondition {
    fn reason(&self) -> &'static str {
        self.into()
    }

    fn message(&self) -> String {
        self.to_string()
    }

    /// All but `ClusterExists`, `MemoryBudget` and `AmbientCredentialsNotAllowed` may pass without anyone touching this
    /// resource (the cluster comes up, the Secret or backup appears). A restore never waits
    /// for a cluster to go; a spec over the budget waits for a change of spec or flag.
    fn is_retryable(&self) -> bool {
        !matches!(
            self,
            Precondition::ClusterExists { .. }
                | Precondition::MemoryBudget { .. }
                | Precondition::AmbientCredentialsNotAllowed { .. }
        )
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

/// How long to wait before trying again after `failures` failures in a row (at least 1):
/// 5 s doubling to 5 min for failures that may pass by themselves, 5 min for the others
/// (someone has to act; the caller may retry sooner when its inputs change).
pub fn retry_delay(failures: u32, retryable: bool) -> Duration {
    const FIRST: Duration = Duration::from_secs(5);
    const MAX: Duration = Duration::from_secs(300);
    if !retryable {
        return MAX;
    }
    backoff(FIRST, failures, MAX)
}

/// `base` doubled for every failure in a row after the first, at most `max`: the one
/// backoff both runtimes' drivers use (a requeue delay computed from a failure count, which
/// is what a Controller's error policy needs; no retry loop is hand-written around it).
pub fn backoff(base: Duration, failures: u32, max: Duration) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    base.saturating_mul(1 << doublings).min(max)
}

/// Sets `Failed=True` and `Ready=False` with the failure's reason and message.
pub(super) fn set_failed(
    conditions: &mut Vec<Condition>,
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
        Time(now),
    );
    condition::set(
        conditions,
        types::READY,
        Status::False,
        failure.reason(),
        message,
        Some(generation),
        Time(now),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_and_permanent_failures_wait_long() {
        assert_eq!(retry_delay(1, true), Duration::from_secs(5));
        assert_eq!(retry_delay(3, true), Duration::from_secs(20));
        assert_eq!(retry_delay(40, true), Duration::from_secs(300));
        assert_eq!(retry_delay(1, false), Duration::from_secs(300));
    }
}
