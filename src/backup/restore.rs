//! Turns a snapshot object back into member data dirs: download with sha256 verification,
//! check it is an etcd snapshot no newer than the target, and run etcd's own restore tool
//! (`etcdutl` from 3.5, `etcdctl` on 3.4) once per member.
//!
//! Creating the new cluster's members on those data dirs is the runtime's job.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use aws_sdk_s3::Client;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use crate::api::backup::Compression;
use tracing::{info, warn};

use super::compress::zstd_decompressor;
use super::error::Call;
use super::key::compression_of_key;
use super::metadata::SnapshotMetadata;
use super::pin::{ObjectPin, same_etag};
use super::{Error, S3Failure, S3Op};

/// A downloaded object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Downloaded {
    pub path: PathBuf,
    pub size: u64,
    /// Lowercase hex of what was downloaded.
    pub sha256: String,
    /// The object's user metadata (empty for objects someone else uploaded).
    pub metadata: SnapshotMetadata,
}

/// A downloaded snapshot that passed every check and can be restored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedSnapshot {
    pub path: PathBuf,
    pub size: u64,
    pub sha256: String,
    /// The revision the snapshot holds, as etcd's tool reads it.
    pub revision: i64,
    pub total_keys: u64,
    /// The etcd version that wrote it, when known (our metadata, or the tool's output).
    pub etcd_version: Option<semver::Version>,
    pub metadata: SnapshotMetadata,
}

/// What `snapshot status --write-out=json` reports.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotStatus {
    pub hash: u64,
    pub revision: i64,
    pub total_key: u64,
    pub total_size: u64,
    /// The storage version; reported from etcd 3.6 on, absent before.
    #[serde(default)]
    pub version: Option<String>,
}

/// Downloads `bucket`/`key` to `dest`, hashing on the way, and checks the digest against
/// `expected_sha256` or, when `None`, the object's `sha256` metadata. With neither the
/// download is not verified here (etcd 3.5 snapshots carry their own digest, which the
/// restore tool checks).
///
/// A compressed object (its metadata or its key's `.zst` says so) is decompressed on the
/// way: `dest` holds etcd's plain snapshot; the digest and `size` are the object's.
///
/// With a `pin` ([`super::pin`]) only that object version is accepted: the GET carries
/// `If-Match` (and `versionId` when pinned), and the ETag that comes back must be the
/// pinned one, for servers that ignore `If-Match`.
///
/// `dest` only ever holds a complete, verified download (written as `dest.part`, fsynced,
/// renamed); a failed download leaves nothing.
///
/// # Errors
/// [`Error::SourceChanged`] when the object is not the pinned one, [`Error::ShaMismatch`],
/// [`Error::Decompress`],
/// [`Error::ObjectMissing`], [`Error::Download`], [`Error::WriteFile`], or the
/// cause-specific S3 variants.
pub async fn download(
    client: &Client,
    bucket: &str,
    key: &str,
    expected_sha256: Option<&str>,
    pin: Option<&ObjectPin>,
    dest: &Path,
) -> Result<Downloaded, Error> {
    let call = Call {
        op: S3Op::GetObject,
        bucket,
        key,
    };
    let download_err = |source| Error::Download {
        key: key.to_owned(),
        source,
    };
    let changed = |now: Option<&str>| Error::SourceChanged {
        bucket: bucket.to_owned(),
        key: key.to_owned(),
        pinned: pin.map(|p| p.etag.clone()).unwrap_or_default(),
        now: now.unwrap_or("unknown").to_owned(),
    };
    let resp = client
        .get_object()
        .bucket(bucket)
        .key(key)
        .set_if_match(pin.map(|p| p.etag.clone()))
        .set_version_id(pin.and_then(|p| p.version_id.clone()))
        .send()
        .await
        .map_err(|e| match call.error(e, download_err) {
            Error::Download { source, .. } if source.status() == Some(412) => changed(None),
            other => other,
        })?;
    if let Some(pin) = pin
        && !resp.e_tag().is_some_and(|now| same_etag(now, &pin.etag))
    {
        return Err(changed(resp.e_tag()));
    }
    let metadata = resp
        .metadata()
        .map(SnapshotMetadata::from_map)
        .unwrap_or_default();
    let expected = expected_sha256
        .map(str::to_ascii_lowercase)
        .or_else(|| metadata.sha256.clone());

    let compression = metadata.compression.or_else(|| compression_of_key(key));

    let part = part_path(dest);
    let write_err = |source| Error::WriteFile {
        path: part.clone(),
        source,
    };
    // A compressed object is decompressed on its way to the file; the digest is the
    // object's, as stored.
    let decompress_err = |source| Error::Decompress {
        key: key.to_owned(),
        source,
    };
    let mut body = resp.body;
    let written = async {
        let file = tokio::fs::File::create(&part).await.map_err(write_err)?;
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        match compression {
            None => {
                let mut file = file;
                while let Some(chunk) = body.next().await {
                    let chunk = chunk.map_err(|e| download_err(S3Failure::body(e)))?;
                    hasher.update(&chunk);
                    size += chunk.len() as u64;
                    file.write_all(&chunk).await.map_err(write_err)?;
                }
                file.sync_all().await.map_err(write_err)?;
            }
            Some(Compression::Zstd) => {
                let mut decoder = zstd_decompressor(file);
                while let Some(chunk) = body.next().await {
                    let chunk = chunk.map_err(|e| download_err(S3Failure::body(e)))?;
                    hasher.update(&chunk);
                    size += chunk.len() as u64;
                    decoder.write_all(&chunk).await.map_err(decompress_err)?;
                }
                decoder.shutdown().await.map_err(decompress_err)?;
                decoder.get_mut().sync_all().await.map_err(write_err)?;
            }
        }
        Ok((size, hex::encode(hasher.finalize())))
    }
    .await;
    let (size, sha256) = match written {
        Ok(done) => done,
        Err(e) => {
            remove_quietly(&part).await;
            return Err(e);
        }
    };
    if let Some(expected) = expected
        && expected != sha256
    {
        remove_quietly(&part).await;
        return Err(Error::ShaMismatch {
            expected,
            actual: sha256,
        });
    }
    tokio::fs::rename(&part, dest)
        .await
        .map_err(|source| Error::WriteFile {
            path: dest.to_owned(),
            source,
        })?;
    info!(key, bytes = size, "downloaded snapshot");
    Ok(Downloaded {
        path: dest.to_owned(),
        size,
        sha256,
        metadata,
    })
}

/// Refuses a snapshot written by a newer minor release than the target's: etcd cannot load
/// data of a newer storage version.
///
/// # Errors
/// [`Error::SnapshotTooNew`].
pub fn check_version(snapshot: &semver::Version, target: &semver::Version) -> Result<(), Error> {
    if (snapshot.major, snapshot.minor) > (target.major, target.minor) {
        return Err(Error::SnapshotTooNew {
            snapshot: snapshot.clone(),
            target: target.clone(),
        });
    }
    Ok(())
}

/// `snapshot status` of `snapshot` by the offline tool in `tool_bin_dir`.
///
/// # Errors
/// [`Error::NotASnapshot`] when the tool rejects the file; [`Error::SpawnTool`],
/// [`Error::ToolOutput`].
pub async fn snapshot_status(
    tool_bin_dir: &Path,
    snapshot: &Path,
) -> Result<SnapshotStatus, Error> {
    let tool = snapshot_tool(tool_bin_dir);
    let output = tool_command(&tool)
        .args(["snapshot", "status", "--write-out=json"])
        .arg(snapshot)
        .output()
        .await
        .map_err(|source| Error::SpawnTool {
            tool: tool.clone(),
            source,
        })?;
    if !output.status.success() {
        return Err(Error::NotASnapshot {
            path: snapshot.to_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        });
    }
    serde_json::from_slice(&output.stdout).map_err(|source| Error::ToolOutput { tool, source })
}

/// Downloads `bucket`/`key` to `dest` and checks it can be restored by the etcd release in
/// `tool_bin_dir` whose version is `target`.
///
/// # Flow
/// 1. Download, verifying the sha256 (`expected_sha256`, else the object's metadata).
/// 2. If the object's metadata names the etcd version, refuse one newer than `target`
///    before any tool reads it.
/// 3. `snapshot status` must accept it.
/// 4. Without metadata, the tool's reported version (etcd 3.6 on) is checked instead; a plain
///    3.5 snapshot states none, and its version is left to the restore tool.
///
/// # Guarantees
/// On error `dest` does not exist.
///
/// # Errors
/// [`Error::ShaMismatch`], [`Error::NotASnapshot`], [`Error::SnapshotTooNew`], and
/// [`download`]'s.
pub async fn fetch_snapshot(
    client: &Client,
    bucket: &str,
    key: &str,
    expected_sha256: Option<&str>,
    dest: &Path,
    tool_bin_dir: &Path,
    target: &semver::Version,
) -> Result<VerifiedSnapshot, Error> {
    let downloaded = download(client, bucket, key, expected_sha256, None, dest).await?;
    let checked = async {
        if let Some(version) = &downloaded.metadata.etcd_version {
            check_version(version, target)?;
        }
        let status = snapshot_status(tool_bin_dir, dest).await?;
        let reported = status
            .version
            .as_deref()
            .and_then(|v| semver::Version::parse(v).ok());
        if downloaded.metadata.etcd_version.is_none()
            && let Some(version) = &reported
        {
            check_version(version, target)?;
        }
        Ok(VerifiedSnapshot {
            path: dest.to_owned(),
            size: downloaded.size,
            sha256: downloaded.sha256.clone(),
            revision: status.revision,
            total_keys: status.total_key,
            etcd_version: downloaded.metadata.etcd_version.clone().or(reported),
            metadata: downloaded.metadata.clone(),
        })
    }
    .await;
    if checked.is_err() {
        remove_quietly(dest).await;
    }
    checked
}

/// Writes `member_name`'s data dir for a new cluster from `snapshot` with the restore tool in
/// `tool_bin_dir`. Run it once per member with the same `initial_cluster` (every member's
/// `(name, peer_url)`) and `cluster_token`; then start each member on its `data_dir` with
/// the same `--initial-cluster`, `--initial-cluster-token` and `--initial-cluster-state new`.
///
/// # Guarantees
/// Never touches an existing `data_dir`. The tool writes into a sibling staging dir, renamed
/// to `data_dir` only when it succeeded, so `data_dir` is complete or absent.
///
/// # Errors
/// [`Error::DataDirExists`], [`Error::Restore`] (with the tool's stderr),
/// [`Error::SpawnTool`], [`Error::WriteFile`].
pub async fn restore_data_dir(
    tool_bin_dir: &Path,
    snapshot: &Path,
    member_name: &str,
    initial_cluster: &[(String, String)],
    peer_url: &str,
    cluster_token: &str,
    data_dir: &Path,
) -> Result<(), Error> {
    if tokio::fs::try_exists(data_dir).await.unwrap_or(true) {
        return Err(Error::DataDirExists {
            path: data_dir.to_owned(),
        });
    }
    let staging = staging_path(data_dir);
    let io_err = |path: &Path| {
        let path = path.to_owned();
        move |source| Error::WriteFile { path, source }
    };
    if tokio::fs::try_exists(&staging).await.unwrap_or(false) {
        tokio::fs::remove_dir_all(&staging)
            .await
            .map_err(io_err(&staging))?;
    }
    let tool = snapshot_tool(tool_bin_dir);
    let members = initial_cluster
        .iter()
        .map(|(name, url)| format!("{name}={url}"))
        .collect::<Vec<_>>()
        .join(",");
    let output = tool_command(&tool)
        .args(["snapshot", "restore"])
        .arg(snapshot)
        .arg(format!("--name={member_name}"))
        .arg(format!("--initial-cluster={members}"))
        .arg(format!("--initial-cluster-token={cluster_token}"))
        .arg(format!("--initial-advertise-peer-urls={peer_url}"))
        .arg(format!("--data-dir={}", staging.display()))
        .output()
        .await
        .map_err(|source| Error::SpawnTool {
            tool: tool.clone(),
            source,
        })?;
    if !output.status.success() {
        if let Err(e) = tokio::fs::remove_dir_all(&staging).await
            && e.kind() != std::io::ErrorKind::NotFound
        {
            warn!(path = %staging.display(), error = %e, "could not remove failed restore");
        }
        return Err(Error::Restore {
            member: member_name.to_owned(),
            tool,
            status: output.status,
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        });
    }
    tokio::fs::rename(&staging, data_dir)
        .await
        .map_err(io_err(data_dir))?;
    info!(member = member_name, data_dir = %data_dir.display(), "restored data dir");
    Ok(())
}

/// `etcdutl` when the release has it (3.5+), else `etcdctl` (3.4).
pub fn snapshot_tool(tool_bin_dir: &Path) -> PathBuf {
    let etcdutl = tool_bin_dir.join("etcdutl");
    if etcdutl.is_file() {
        etcdutl
    } else {
        tool_bin_dir.join("etcdctl")
    }
}

/// The tool with a clean environment: `ETCDCTL_*` variables would change what it does.
fn tool_command(tool: &Path) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(tool);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("ETCDCTL_") {
            cmd.env_remove(key);
        }
    }
    cmd.env("ETCDCTL_API", "3")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    cmd
}

fn part_path(dest: &Path) -> PathBuf {
    let mut part = dest.as_os_str().to_owned();
    part.push(".part");
    PathBuf::from(part)
}

/// `<parent>/.<name>.restoring`, next to `data_dir` so the final rename stays on one
/// filesystem.
fn staging_path(data_dir: &Path) -> PathBuf {
    let name = data_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "data".to_owned());
    data_dir.with_file_name(format!(".{name}.restoring"))
}

async fn remove_quietly(path: &Path) {
    if let Err(e) = tokio::fs::remove_file(path).await
        && e.kind() != std::io::ErrorKind::NotFound
    {
        warn!(path = %path.display(), error = %e, "could not remove file");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> semver::Version {
        semver::Version::parse(s).unwrap()
    }

    #[test]
    fn newer_minor_is_refused_older_and_patch_differences_pass() {
        assert!(matches!(
            check_version(&v("3.5.16"), &v("3.4.23")),
            Err(Error::SnapshotTooNew { .. })
        ));
        assert!(check_version(&v("3.4.23"), &v("3.5.16")).is_ok());
        assert!(check_version(&v("3.5.16"), &v("3.5.1")).is_ok());
    }

    #[test]
    fn status_json_without_version_parses() {
        let s: SnapshotStatus = serde_json::from_str(
            r#"{"hash":1379352499,"revision":2,"totalKey":7,"totalSize":20480}"#,
        )
        .unwrap();
        assert_eq!((s.revision, s.total_key, s.version), (2, 7, None));
    }

    #[test]
    fn staging_dir_is_a_hidden_sibling() {
        assert_eq!(
            staging_path(Path::new("/var/lib/etcd/m0.data")),
            Path::new("/var/lib/etcd/.m0.data.restoring")
        );
    }
}
