//! What the init containers of a restored member Pod run, around etcd's own restore tool:
//! [`fetch_for_member`] before it (`etcd-operator restore-fetch`) and
//! [`finish_member_restore`] after it (`etcd-operator restore-finish`). Which Pods get
//! these containers is the pod runtime's decision.
//!
//! # Flow (one member)
//! 1. Fetch: with no data dir yet, download the snapshot into the staging dir and verify it
//!    (sha256, etcd version); otherwise write [`EMPTY_SNAPSHOT`] there instead.
//! 2. etcd's tool (`etcdutl`/`etcdctl snapshot restore`) restores the staged snapshot into a
//!    staging data dir, with the member's name, initial cluster, peer URL and token.
//! 3. Finish: with no data dir yet, rename the staging data dir into place; then remove
//!    everything staged.
//!
//! # Why an empty snapshot
//! etcd's images are distroless: there is no shell to skip step 2 when the member already
//! has data (init containers run again whenever the Pod's sandbox is recreated, and a Pod
//! recreated on its PVC runs them again too). The tool refuses to run without a snapshot, so
//! step 1 hands it a 20 KB snapshot of an empty etcd 3.5 cluster, step 2 restores that into
//! the staging dir, and step 3 throws it away. The member's data is never touched, and the
//! object (which retention may have deleted since) is not needed again.
//!
//! # Guarantees
//! The data dir is complete or absent: the tool writes elsewhere and step 3 renames. Step 3
//! fails rather than let etcd start without data, which would bootstrap an empty cluster
//! under the restored cluster's name.

use std::path::{Path, PathBuf};

use aws_sdk_s3::Client;
use serde::{Deserialize, Serialize};
use tracing::info;

use super::Error;
use super::pin::ObjectPin;
use super::restore::{Downloaded, check_version, download};
use crate::error_chain::error_chain;

/// A snapshot of a new, empty etcd 3.5.16 cluster (with its integrity hash), which every
/// supported restore tool accepts: the input of step 2 when there is nothing to restore.
pub const EMPTY_SNAPSHOT: &[u8] = include_bytes!("empty.snapshot");

/// Where one member's restore works, all on its data volume (so the final rename stays on
/// one filesystem).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberRestorePaths {
    /// etcd's `--data-dir`.
    pub data_dir: PathBuf,
    /// The downloaded (or empty) snapshot the restore tool reads.
    pub snapshot: PathBuf,
    /// The restore tool's `--data-dir`; renamed to `data_dir` by step 3.
    pub restored: PathBuf,
}

/// What [`fetch_for_member`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fetched {
    /// The snapshot was downloaded and verified.
    Downloaded(Box<Downloaded>),
    /// The member has data already; the empty snapshot was staged instead.
    AlreadyRestored,
}

/// What [`finish_member_restore`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Finished {
    /// The restored data dir was moved into place.
    Restored,
    /// The member had data already; the staged restore was discarded.
    AlreadyRestored,
}

/// Step 1: stages the snapshot `bucket`/`key` for the restore tool, unless the member has
/// data already (then [`EMPTY_SNAPSHOT`] is staged).
///
/// The download is checked against `expected_sha256` or, without it, the object's `sha256`
/// metadata, and against `pin`, the object version the restore resolved when it started
/// ([`super::pin`]): every member restores that version or none. A snapshot whose metadata
/// names an etcd version newer than `target` is refused. Leftovers of an interrupted
/// restore are removed first.
///
/// # Errors
/// [`Error::SourceChanged`], [`Error::ShaMismatch`], [`Error::SnapshotTooNew`],
/// [`Error::WriteFile`], and [`download`]'s. On error nothing is staged.
pub async fn fetch_for_member(
    client: &Client,
    bucket: &str,
    key: &str,
    expected_sha256: Option<&str>,
    pin: Option<&ObjectPin>,
    target: Option<&semver::Version>,
    paths: &MemberRestorePaths,
) -> Result<Fetched, Error> {
    remove_staged(paths).await?;
    if let Some(parent) = paths.snapshot.parent() {
        tokio::fs::create_dir_all(parent)
            .await
            .map_err(|source| Error::WriteFile {
                path: parent.to_owned(),
                source,
            })?;
    }
    if exists(&paths.data_dir).await? {
        tokio::fs::write(&paths.snapshot, EMPTY_SNAPSHOT)
            .await
            .map_err(|source| Error::WriteFile {
                path: paths.snapshot.clone(),
                source,
            })?;
        info!(data_dir = %paths.data_dir.display(), "member has data already, nothing to fetch");
        return Ok(Fetched::AlreadyRestored);
    }
    let downloaded = download(client, bucket, key, expected_sha256, pin, &paths.snapshot).await?;
    if let (Some(snapshot), Some(target)) = (&downloaded.metadata.etcd_version, target)
        && let Err(e) = check_version(snapshot, target)
    {
        remove_file(&paths.snapshot).await?;
        return Err(e);
    }
    Ok(Fetched::Downloaded(Box::new(downloaded)))
}

/// Step 3: moves the restored data dir into place when the member has none, then removes
/// everything staged.
///
/// # Errors
/// [`Error::RestoredDataMissing`] when there is neither a data dir nor a restored one (the
/// restore tool did not run); [`Error::WriteFile`].
pub async fn finish_member_restore(paths: &MemberRestorePaths) -> Result<Finished, Error> {
    let finished = if exists(&paths.data_dir).await? {
        Finished::AlreadyRestored
    } else if exists(&paths.restored).await? {
        tokio::fs::rename(&paths.restored, &paths.data_dir)
            .await
            .map_err(|source| Error::WriteFile {
                path: paths.data_dir.clone(),
                source,
            })?;
        info!(data_dir = %paths.data_dir.display(), "restored data dir in place");
        Finished::Restored
    } else {
        return Err(Error::RestoredDataMissing {
            path: paths.restored.clone(),
        });
    };
    remove_staged(paths).await?;
    Ok(finished)
}

/// What a step writes to its container's termination log, for the operator to read back
/// from the Pod's status: what was fetched, or why the step failed. JSON, at most a few
/// hundred bytes (the kubelet keeps 4 KiB).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "camelCase")]
pub enum StepReport {
    /// The snapshot was downloaded and verified.
    #[serde(rename_all = "camelCase")]
    Fetched {
        sha256: String,
        size: u64,
        /// From the object's metadata; absent for objects someone else uploaded.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        revision: Option<i64>,
    },
    /// The member had data already.
    AlreadyRestored,
    /// The step failed; `reason` is the [`Error::reason`].
    #[serde(rename_all = "camelCase")]
    Failed {
        reason: String,
        retryable: bool,
        message: String,
    },
}

/// Longest message kept in a report: the kubelet truncates termination messages at 4 KiB.
const MAX_MESSAGE: usize = 2048;

impl StepReport {
    pub fn fetched(fetched: &Fetched) -> Self {
        match fetched {
            Fetched::Downloaded(d) => StepReport::Fetched {
                sha256: d.sha256.clone(),
                size: d.size,
                revision: d.metadata.revision,
            },
            Fetched::AlreadyRestored => StepReport::AlreadyRestored,
        }
    }

    pub fn failed(e: &Error) -> Self {
        let mut message = error_chain(e);
        crate::error_chain::truncate_message(&mut message, MAX_MESSAGE);
        StepReport::Failed {
            reason: e.reason().to_string(),
            retryable: e.is_retryable(),
            message,
        }
    }

    /// The termination message.
    pub fn to_message(&self) -> String {
        // Strings, numbers and bools: serializing cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// A report read back from a termination message; `None` for any other text (a
    /// container killed before it wrote one, the kubelet's fallback to the log's tail).
    pub fn parse(message: &str) -> Option<Self> {
        serde_json::from_str(message.trim()).ok()
    }
}

/// Removes the staged snapshot and restored data dir, if any.
async fn remove_staged(paths: &MemberRestorePaths) -> Result<(), Error> {
    remove_file(&paths.snapshot).await?;
    let mut part = paths.snapshot.as_os_str().to_owned();
    part.push(".part");
    remove_file(Path::new(&part)).await?;
    match tokio::fs::remove_dir_all(&paths.restored).await {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::WriteFile {
            path: paths.restored.clone(),
            source: e,
        }),
        _ => Ok(()),
    }
}

async fn remove_file(path: &Path) -> Result<(), Error> {
    match tokio::fs::remove_file(path).await {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::WriteFile {
            path: path.to_owned(),
            source: e,
        }),
        _ => Ok(()),
    }
}

async fn exists(path: &Path) -> Result<bool, Error> {
    tokio::fs::try_exists(path)
        .await
        .map_err(|source| Error::WriteFile {
            path: path.to_owned(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths(dir: &Path) -> MemberRestorePaths {
        MemberRestorePaths {
            data_dir: dir.join("data"),
            snapshot: dir.join("restore/snapshot.db"),
            restored: dir.join("restore/data"),
        }
    }

    /// A client for an endpoint nobody listens on: any S3 call would fail.
    async fn unreachable_client() -> Client {
        let connection = crate::api::s3::S3Connection {
            endpoint: Some("http://127.0.0.1:9".into()),
            force_path_style: Some(true),
            ..Default::default()
        };
        super::super::client(
            &connection,
            Some(super::super::StaticCredentials::new("a", "b", None)),
        )
        .await
    }

    #[test]
    fn reports_round_trip_through_the_termination_message() {
        let e = Error::ShaMismatch {
            expected: "a".into(),
            actual: "b".into(),
        };
        let report = StepReport::failed(&e);
        let message = report.to_message();
        assert_eq!(
            message,
            r#"{"result":"failed","reason":"ShaMismatch","retryable":false,"message":"snapshot sha256 is b, expected a"}"#
        );
        assert_eq!(StepReport::parse(&message), Some(report));
        let fetched = StepReport::Fetched {
            sha256: "ab".repeat(32),
            size: 20512,
            revision: Some(42),
        };
        assert_eq!(StepReport::parse(&fetched.to_message()), Some(fetched));
        assert_eq!(StepReport::parse("Error: data-dir exists"), None);
    }

    #[test]
    fn a_long_failure_is_cut_to_fit_the_kubelet_limit() {
        let e = Error::NotASnapshot {
            path: "/x".into(),
            stderr: "é".repeat(5000),
        };
        assert!(StepReport::failed(&e).to_message().len() < 4096);
    }

    #[test]
    fn the_empty_snapshot_carries_its_integrity_hash() {
        use sha2::{Digest, Sha256};
        let (db, hash) = EMPTY_SNAPSHOT.split_at(EMPTY_SNAPSHOT.len() - 32);
        // etcd appends sha256(db) to a snapshot; bolt pages make the db a multiple of 512.
        assert_eq!(db.len() % 512, 0);
        assert_eq!(Sha256::digest(db).as_slice(), hash);
    }

    #[tokio::test]
    async fn a_member_with_data_stages_the_empty_snapshot_without_downloading() {
        let dir = tempfile::tempdir().unwrap();
        let p = paths(dir.path());
        tokio::fs::create_dir_all(p.data_dir.join("member"))
            .await
            .unwrap();
        // A restore that crashed half way on an earlier run.
        tokio::fs::create_dir_all(p.restored.join("member"))
            .await
            .unwrap();
        let fetched = fetch_for_member(&unreachable_client().await, "b", "k", None, None, None, &p)
            .await
            .unwrap();
        assert_eq!(fetched, Fetched::AlreadyRestored);
        assert_eq!(tokio::fs::read(&p.snapshot).await.unwrap(), EMPTY_SNAPSHOT);
        assert!(!p.restored.exists());
    }

    #[tokio::test]
    async fn finishing_moves_the_restored_dir_into_place_once() {
        let dir = tempfile::tempdir().unwrap();
        let p = paths(dir.path());
        tokio::fs::create_dir_all(p.restored.join("member/wal"))
            .await
            .unwrap();
        tokio::fs::write(&p.snapshot, b"snap").await.unwrap();
        assert_eq!(finish_member_restore(&p).await.unwrap(), Finished::Restored);
        assert!(p.data_dir.join("member/wal").is_dir());
        assert!(!p.snapshot.exists() && !p.restored.exists());

        // A rerun: the tool restored the empty snapshot, which is thrown away.
        tokio::fs::create_dir_all(p.restored.join("member/snap"))
            .await
            .unwrap();
        assert_eq!(
            finish_member_restore(&p).await.unwrap(),
            Finished::AlreadyRestored
        );
        assert!(p.data_dir.join("member/wal").is_dir());
        assert!(!p.restored.exists());
    }

    #[tokio::test]
    async fn finishing_without_any_data_refuses_to_let_etcd_start_empty() {
        let dir = tempfile::tempdir().unwrap();
        let err = finish_member_restore(&paths(dir.path())).await.unwrap_err();
        assert_eq!(err.reason(), "RestoredDataMissing");
    }

    #[tokio::test]
    async fn every_installed_restore_tool_accepts_the_empty_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let snapshot = dir.path().join("empty.db");
        tokio::fs::write(&snapshot, EMPTY_SNAPSHOT).await.unwrap();
        for bin in crate::testing::etcd_bin::available_versions() {
            let data_dir = dir.path().join(bin.version.to_string());
            bin.snapshot_restore(&snapshot, &data_dir)
                .await
                .unwrap_or_else(|e| panic!("etcd {}: {e}", bin.version));
        }
    }
}
