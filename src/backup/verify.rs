//! Verification after upload (`spec.verify`, issue 11): read the object just written back
//! from S3, check it has the sha256 recorded while it streamed, and run etcd's offline
//! `snapshot status` on it, which needs no cluster. What it found goes into the backup's
//! record ([`Verification`]); an object that fails is deleted by the caller
//! ([`super::attempt`]).
//!
//! # Where etcd's tool comes from
//! [`SnapshotTools`]: the local runtime has every etcd release it runs under
//! `--etcd-bin-dir/<version>/` and checks with the release that wrote the snapshot; the
//! operator's container image carries one `etcdutl` (copied from the official etcd image,
//! see the Dockerfile) under `--snapshot-tool-dir`. Without a tool the digest is still
//! checked and the result says `DigestOnly`, naming where the tool was looked for: a check
//! that did not run is never reported as one that passed.
//!
//! # Resources
//! The snapshot is downloaded whole (decompressed when the object is) into a scratch dir,
//! because etcd's tool reads a file: disk for one snapshot, memory for the download's ranges
//! ([`super::DownloadOptions::bytes_held`]). The file is removed afterwards, whatever
//! happened.

use std::path::{Path, PathBuf};

use aws_sdk_s3::Client;
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use tracing::{info, warn};

use super::Error;
use super::restore::{download, snapshot_status, snapshot_tool};
use crate::api::backup::{BackupRecord, Verification, VerificationResult};

/// Where the operator's container image has `etcdutl` (the Dockerfile copies it there from
/// the official etcd image): `--snapshot-tool-dir`'s default.
pub const DEFAULT_SNAPSHOT_TOOL_DIR: &str = "/usr/local/bin";

/// Where etcd's snapshot tool (`etcdutl`, on 3.4 `etcdctl`) is found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SnapshotTools {
    /// One directory for snapshots of every version (the operator image's
    /// `--snapshot-tool-dir`).
    Dir(PathBuf),
    /// `<dir>/<etcd version>/` for each version (the local runtime's `--etcd-bin-dir`).
    PerVersion(PathBuf),
}

impl SnapshotTools {
    /// The directory to look in for a snapshot etcd `version` wrote.
    pub fn dir_for(&self, version: &str) -> PathBuf {
        match self {
            SnapshotTools::Dir(dir) => dir.clone(),
            SnapshotTools::PerVersion(root) => root.join(version.trim_start_matches('v')),
        }
    }
}

/// How to verify backups after upload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verifier {
    pub tools: SnapshotTools,
    /// Where the downloaded snapshot is put while it is checked.
    pub scratch_dir: PathBuf,
}

impl Verifier {
    /// Tools from `tools`, scratch space in the system's temp dir.
    pub fn new(tools: SnapshotTools) -> Self {
        Self {
            tools,
            scratch_dir: std::env::temp_dir(),
        }
    }
}

/// Reads `record`'s object in `bucket` back and checks it (see the module docs).
///
/// # Errors
/// Evidence the object is bad: [`Error::ShaMismatch`] (it is not what was uploaded),
/// [`Error::NotASnapshot`] (etcd's tool refuses it), [`Error::ObjectMissing`]. Anything that
/// only kept the check from finishing (S3 unreachable, the scratch disk) is not an error but
/// an `Incomplete` verification.
pub async fn verify_backup(
    s3: &Client,
    bucket: &str,
    record: &BackupRecord,
    verifier: &Verifier,
) -> Result<Verification, Error> {
    let started = std::time::Instant::now();
    let scratch = scratch_path(&verifier.scratch_dir, &record.key);
    let outcome = check(s3, bucket, record, verifier, &scratch).await;
    if let Err(e) = tokio::fs::remove_file(&scratch).await
        && e.kind() != std::io::ErrorKind::NotFound
    {
        warn!(path = %scratch.display(), error = %e, "could not remove the verified snapshot");
    }
    let verification = outcome?;
    info!(
        key = record.key,
        result = verification.result.as_str(),
        seconds = format!("{:.2}", started.elapsed().as_secs_f64()),
        message = verification.message,
        "verified backup"
    );
    Ok(verification)
}

async fn check(
    s3: &Client,
    bucket: &str,
    record: &BackupRecord,
    verifier: &Verifier,
    scratch: &Path,
) -> Result<Verification, Error> {
    let now = || Time(Timestamp::now());
    let incomplete = |why: String| Verification {
        result: VerificationResult::Incomplete,
        time: now(),
        revision: None,
        total_keys: None,
        message: why,
    };
    if let Err(e) = tokio::fs::create_dir_all(&verifier.scratch_dir).await {
        return Ok(incomplete(format!(
            "scratch dir {}: {e}",
            verifier.scratch_dir.display()
        )));
    }
    match download(s3, bucket, &record.key, Some(&record.sha256), None, scratch).await {
        Ok(_) => {}
        Err(e @ (Error::ShaMismatch { .. } | Error::ObjectMissing { .. })) => return Err(e),
        Err(e) => {
            return Ok(incomplete(format!(
                "reading the object back failed ({}): {}",
                e.reason(),
                crate::error_chain::error_chain(&e)
            )));
        }
    }
    let dir = verifier.tools.dir_for(&record.etcd_version);
    let tool = snapshot_tool(&dir);
    if !tool.is_file() {
        return Ok(Verification {
            result: VerificationResult::DigestOnly,
            time: now(),
            revision: None,
            total_keys: None,
            message: format!(
                "sha256 matches; snapshot status not run: no etcdutl or etcdctl in {}",
                dir.display()
            ),
        });
    }
    match snapshot_status(&dir, scratch).await {
        Ok(status) => Ok(Verification {
            result: VerificationResult::Verified,
            time: now(),
            revision: Some(status.revision),
            total_keys: Some(i64::try_from(status.total_key).unwrap_or(i64::MAX)),
            message: format!("sha256 matches; {} snapshot status read it", tool.display()),
        }),
        Err(e @ Error::NotASnapshot { .. }) => Err(e),
        Err(e) => Ok(incomplete(format!(
            "{} snapshot status did not run ({}): {}",
            tool.display(),
            e.reason(),
            crate::error_chain::error_chain(&e)
        ))),
    }
}

/// A file in `dir` for `key`'s snapshot: its last path segment, made unique by the process
/// and a counter (two backups' keys may end alike).
fn scratch_path(dir: &Path, key: &str) -> PathBuf {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let name: String = key
        .rsplit('/')
        .next()
        .unwrap_or("snapshot")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect();
    dir.join(format!(
        "etcd-operator-verify-{}-{n}-{}",
        std::process::id(),
        name.trim_end_matches(".zst")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_version_tools_are_under_the_version_dir() {
        let tools = SnapshotTools::PerVersion("/opt/etcd".into());
        assert_eq!(tools.dir_for("3.5.16"), Path::new("/opt/etcd/3.5.16"));
        assert_eq!(tools.dir_for("v3.4.23"), Path::new("/opt/etcd/3.4.23"));
        let tools = SnapshotTools::Dir("/usr/local/bin".into());
        assert_eq!(tools.dir_for("3.5.16"), Path::new("/usr/local/bin"));
    }

    #[test]
    fn scratch_files_are_named_after_the_key_and_stay_in_the_dir() {
        let p = scratch_path(Path::new("/tmp"), "p/ns/c/b/20250101T000000Z-rev5.db.zst");
        assert_eq!(p.parent(), Some(Path::new("/tmp")));
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        assert!(name.ends_with("-20250101T000000Z-rev5.db"), "{name}");
        assert_ne!(
            p,
            scratch_path(Path::new("/tmp"), "p/ns/c/b/20250101T000000Z-rev5.db.zst"),
            "two checks of keys that end alike"
        );
        let p = scratch_path(Path::new("/tmp"), "../../etc/passwd");
        assert_eq!(p.parent(), Some(Path::new("/tmp")));
    }
}
