//! Turns a snapshot object back into member data dirs: download with sha256 verification,
//! check it is an etcd snapshot no newer than the target, and run etcd's own restore tool
//! (`etcdutl` from 3.5, `etcdctl` on 3.4) once per member.
//!
//! Creating the new cluster's members on those data dirs is the runtime's job.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use aws_sdk_s3::Client;
use bytes::Bytes;
use futures::{Stream, StreamExt};
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
    /// Where the time went.
    pub timings: DownloadTimings,
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

/// How a download is fetched: the object in ranges of `range_size` bytes, up to
/// `ranges_in_flight` GETs at once. A single GET stream is slower than the disk it writes to
/// (issue 11 benchmark); several ranges in parallel are not.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DownloadOptions {
    pub range_size: u64,
    pub ranges_in_flight: usize,
}

impl Default for DownloadOptions {
    fn default() -> Self {
        Self {
            range_size: 4 << 20,
            ranges_in_flight: 4,
        }
    }
}

impl DownloadOptions {
    /// The most object data a download holds in memory: the ranges in flight, the one being
    /// handed on, and the one queued for and the one being worked on by the slower of the
    /// hash and the file (the faster is never further behind; a range goes to both).
    pub fn bytes_held(&self) -> u64 {
        self.range_size
            .saturating_mul(u64::try_from(self.ranges_in_flight.max(1) + 3).unwrap_or(u64::MAX))
    }
}

/// Where a download's wall time went (for its log line and the benchmark). The hash and the
/// file write run on their own threads, in parallel with the GETs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DownloadTimings {
    /// Until the first range's headers came back.
    pub first_response: Duration,
    /// Waiting for the next range in order: the GETs slower than the hash and the file.
    pub get_wait: Duration,
    /// Waiting for room in the hash's or the file's queue: they are slower than the GETs.
    pub queue_wait: Duration,
    /// Busy hashing, writing (decompressing included), and the final fsync.
    pub hash: Duration,
    pub write: Duration,
    pub fsync: Duration,
    /// The pieces received: ranges, or the body's chunks when the server ignored `Range`.
    pub ranges: u64,
}

/// Downloads `bucket`/`key` to `dest`, hashing on the way, and checks the digest against
/// `expected_sha256` or, when `None`, the object's `sha256` metadata. With neither the
/// download is not verified here (etcd 3.5 snapshots carry their own digest, which the
/// restore tool checks).
///
/// The object comes in ranges fetched in parallel ([`DownloadOptions`]), all of one object
/// version: every range after the first is asked `If-Match` the first's ETag (and checked
/// against it), so a key overwritten during the download fails it with
/// [`Error::SourceChanged`] instead of mixing two objects.
///
/// A compressed object (its metadata or its key's `.zst` says so) is decompressed on the
/// way: `dest` holds etcd's plain snapshot; the digest and `size` are the object's.
///
/// With a `pin` ([`super::pin`]) only that object version is accepted: the GETs carry
/// `If-Match` (and `versionId` when pinned), and the ETag that comes back must be the
/// pinned one, for servers that ignore `If-Match`.
///
/// `dest` only ever holds a complete, verified download (written as `dest.part`, fsynced,
/// renamed); a failed download leaves nothing.
///
/// # Errors
/// [`Error::SourceChanged`] when the object is not the pinned one or changed during the
/// download, [`Error::ShaMismatch`], [`Error::Decompress`], [`Error::ObjectMissing`],
/// [`Error::Download`], [`Error::WriteFile`], or the cause-specific S3 variants.
pub async fn download(
    client: &Client,
    bucket: &str,
    key: &str,
    expected_sha256: Option<&str>,
    pin: Option<&ObjectPin>,
    dest: &Path,
) -> Result<Downloaded, Error> {
    download_with(
        client,
        bucket,
        key,
        expected_sha256,
        pin,
        dest,
        &DownloadOptions::default(),
    )
    .await
}

/// [`download`] with explicit [`DownloadOptions`].
///
/// # Errors
/// As [`download`].
pub async fn download_with(
    client: &Client,
    bucket: &str,
    key: &str,
    expected_sha256: Option<&str>,
    pin: Option<&ObjectPin>,
    dest: &Path,
    options: &DownloadOptions,
) -> Result<Downloaded, Error> {
    let started = Instant::now();
    let range_size = options.range_size.max(1);
    let source = RangeSource {
        client,
        bucket,
        key,
        pin_etag: pin.map(|p| p.etag.clone()),
        version_id: pin.and_then(|p| p.version_id.clone()),
    };
    let first = source.first(range_size).await?;
    if let Some(pin) = pin
        && !first
            .etag
            .as_deref()
            .is_some_and(|now| same_etag(now, &pin.etag))
    {
        return Err(source.changed(first.etag.as_deref()));
    }
    let mut timings = DownloadTimings {
        first_response: started.elapsed(),
        ..DownloadTimings::default()
    };
    let metadata = first.metadata;
    let expected = expected_sha256
        .map(str::to_ascii_lowercase)
        .or_else(|| metadata.sha256.clone());
    let compression = metadata.compression.or_else(|| compression_of_key(key));

    // The rest of the object, in order, `ranges_in_flight` GETs at a time, all of the version
    // the first answer came from.
    let etag = first.etag.clone();
    let rest = match first.total {
        Some(total) => {
            let source = &source;
            let etag = etag.clone();
            let starts: Vec<u64> = (first.len..total).step_by(range_size as usize).collect();
            futures::stream::iter(starts)
                .map(move |start| {
                    let end = (start + range_size).min(total);
                    let etag = etag.clone();
                    async move { source.range(start, end, etag.as_deref()).await }
                })
                .buffered(options.ranges_in_flight.max(1))
                .boxed()
        }
        None => futures::stream::empty().boxed(),
    };
    let chunks = futures::stream::once(async { Ok(first.body) })
        .chain(
            first
                .stream
                .map(|c| c.map_err(|e| source.download_err(S3Failure::body(e)))),
        )
        .chain(rest);

    let part = part_path(dest);
    let written = write_and_hash(chunks, &part, compression, key, &mut timings).await;
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
    let ms = |d: Duration| d.as_millis() as u64;
    info!(
        key,
        bytes = size,
        ranges = timings.ranges,
        mb_per_s = format!(
            "{:.1}",
            super::upload::mb_per_second(size, started.elapsed())
        ),
        get_wait_ms = ms(timings.get_wait),
        queue_wait_ms = ms(timings.queue_wait),
        fsync_ms = ms(timings.fsync),
        "downloaded snapshot"
    );
    Ok(Downloaded {
        path: dest.to_owned(),
        size,
        sha256,
        metadata,
        timings,
    })
}

/// The object's first range: its headers, and its body (read whole when the server
/// answered with a range, streamed when it sent the whole object).
struct FirstRange {
    etag: Option<String>,
    metadata: SnapshotMetadata,
    /// The object's size, when the answer was a range of it.
    total: Option<u64>,
    /// The bytes of the first range (empty when streaming).
    body: Bytes,
    len: u64,
    /// The whole object's body, when the server ignored the range.
    stream: futures::stream::BoxStream<
        'static,
        Result<Bytes, aws_smithy_types::byte_stream::error::Error>,
    >,
}

/// GETs of one object.
struct RangeSource<'a> {
    client: &'a Client,
    bucket: &'a str,
    key: &'a str,
    pin_etag: Option<String>,
    version_id: Option<String>,
}

impl RangeSource<'_> {
    fn call(&self) -> Call<'_> {
        Call {
            op: S3Op::GetObject,
            bucket: self.bucket,
            key: self.key,
        }
    }

    fn download_err(&self, source: S3Failure) -> Error {
        Error::Download {
            key: self.key.to_owned(),
            source,
        }
    }

    fn changed(&self, now: Option<&str>) -> Error {
        Error::SourceChanged {
            bucket: self.bucket.to_owned(),
            key: self.key.to_owned(),
            pinned: self.pin_etag.clone().unwrap_or_default(),
            now: now.unwrap_or("unknown").to_owned(),
        }
    }

    async fn get(
        &self,
        range: Option<String>,
        if_match: Option<String>,
    ) -> Result<aws_sdk_s3::operation::get_object::GetObjectOutput, Error> {
        self.client
            .get_object()
            .bucket(self.bucket)
            .key(self.key)
            .set_range(range)
            .set_if_match(if_match)
            .set_version_id(self.version_id.clone())
            .send()
            .await
            .map_err(
                |e| match self.call().error(e, |source| self.download_err(source)) {
                    Error::Download { source, .. } if source.status() == Some(412) => {
                        self.changed(None)
                    }
                    other => other,
                },
            )
    }

    /// The first range; an empty object (which has no range to ask for) whole.
    async fn first(&self, range_size: u64) -> Result<FirstRange, Error> {
        let resp = match self
            .get(
                Some(format!("bytes=0-{}", range_size - 1)),
                self.pin_etag.clone(),
            )
            .await
        {
            Err(Error::Download { source, .. }) if source.status() == Some(416) => {
                self.get(None, self.pin_etag.clone()).await?
            }
            other => other?,
        };
        let etag = resp.e_tag().map(str::to_owned);
        let metadata = resp
            .metadata()
            .map(SnapshotMetadata::from_map)
            .unwrap_or_default();
        let total = resp.content_range().and_then(content_range_total);
        if total.is_none() {
            return Ok(FirstRange {
                etag,
                metadata,
                total: None,
                body: Bytes::new(),
                len: 0,
                stream: Box::pin(futures::stream::unfold(resp.body, |mut body| async move {
                    body.next().await.map(|chunk| (chunk, body))
                })),
            });
        }
        let body = resp
            .body
            .collect()
            .await
            .map_err(|e| self.download_err(S3Failure::body(e)))?
            .into_bytes();
        Ok(FirstRange {
            etag,
            metadata,
            total,
            len: body.len() as u64,
            body,
            stream: Box::pin(futures::stream::empty()),
        })
    }

    /// Bytes `start..end` of the object whose ETag is `etag`.
    async fn range(&self, start: u64, end: u64, etag: Option<&str>) -> Result<Bytes, Error> {
        let resp = self
            .get(
                Some(format!("bytes={start}-{}", end - 1)),
                etag.map(str::to_owned),
            )
            .await?;
        if let Some(etag) = etag
            && !resp.e_tag().is_some_and(|now| same_etag(now, etag))
        {
            return Err(self.changed(resp.e_tag()));
        }
        let body = resp
            .body
            .collect()
            .await
            .map_err(|e| self.download_err(S3Failure::body(e)))?
            .into_bytes();
        if body.len() as u64 != end - start {
            return Err(Error::UnexpectedResponse {
                op: S3Op::GetObject,
                key: self.key.to_owned(),
                what: "a range of another length than asked",
            });
        }
        Ok(body)
    }
}

/// The object's size from `Content-Range: bytes 0-4194303/1233000000`.
fn content_range_total(range: &str) -> Option<u64> {
    range.rsplit_once('/')?.1.trim().parse().ok()
}

/// Writes `chunks` to `part` (decompressing when `compression` says so), fsyncs it, and
/// hashes them, the hash and the file each on their own thread. Returns the bytes read and
/// their sha256.
async fn write_and_hash<S>(
    chunks: S,
    part: &Path,
    compression: Option<Compression>,
    key: &str,
    timings: &mut DownloadTimings,
) -> Result<(u64, String), Error>
where
    S: Stream<Item = Result<Bytes, Error>>,
{
    let write_err = |source| Error::WriteFile {
        path: part.to_owned(),
        source,
    };
    let decompress_err = |source| Error::Decompress {
        key: key.to_owned(),
        source,
    };
    let file = std::fs::File::create(part).map_err(write_err)?;
    let (hash_tx, mut hash_rx) = tokio::sync::mpsc::channel::<Bytes>(1);
    let hasher = tokio::task::spawn_blocking(move || {
        let mut hasher = Sha256::new();
        let mut busy = Duration::ZERO;
        while let Some(chunk) = hash_rx.blocking_recv() {
            let started = Instant::now();
            hasher.update(&chunk);
            busy += started.elapsed();
        }
        (hex::encode(hasher.finalize()), busy)
    });
    let (file_tx, mut file_rx) = tokio::sync::mpsc::channel::<Bytes>(1);
    let writer = tokio::spawn(async move {
        let mut busy = Duration::ZERO;
        match compression {
            None => {
                let mut file = file;
                tokio::task::spawn_blocking(move || {
                    use std::io::Write;
                    while let Some(chunk) = file_rx.blocking_recv() {
                        let started = Instant::now();
                        file.write_all(&chunk).map_err(WriteFailure::Write)?;
                        busy += started.elapsed();
                    }
                    let started = Instant::now();
                    file.sync_all().map_err(WriteFailure::Write)?;
                    Ok((busy, started.elapsed()))
                })
                .await
                .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
            }
            Some(Compression::Zstd) => {
                let mut decoder = zstd_decompressor(tokio::fs::File::from_std(file));
                while let Some(chunk) = file_rx.recv().await {
                    let started = Instant::now();
                    decoder
                        .write_all(&chunk)
                        .await
                        .map_err(WriteFailure::Decompress)?;
                    busy += started.elapsed();
                }
                decoder.shutdown().await.map_err(WriteFailure::Decompress)?;
                let started = Instant::now();
                decoder
                    .get_mut()
                    .sync_all()
                    .await
                    .map_err(WriteFailure::Write)?;
                Ok((busy, started.elapsed()))
            }
        }
    });
    let mut chunks = std::pin::pin!(chunks);
    let mut size = 0u64;
    let fed: Result<(), Error> = async {
        loop {
            let waiting = Instant::now();
            let Some(chunk) = chunks.next().await else {
                timings.get_wait += waiting.elapsed();
                return Ok(());
            };
            let queueing = Instant::now();
            timings.get_wait += queueing - waiting;
            let chunk = chunk?;
            if chunk.is_empty() {
                continue;
            }
            size += chunk.len() as u64;
            timings.ranges += 1;
            // A queue that closed means its thread failed: its own error says why.
            if hash_tx.send(chunk.clone()).await.is_err() || file_tx.send(chunk).await.is_err() {
                return Ok(());
            }
            timings.queue_wait += queueing.elapsed();
        }
    }
    .await;
    drop((hash_tx, file_tx));
    let written = writer
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
    let (sha256, hashing) = hasher
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
    fed?;
    let (write, fsync) = written.map_err(|e| match e {
        WriteFailure::Write(e) => write_err(e),
        WriteFailure::Decompress(e) => decompress_err(e),
    })?;
    timings.hash = hashing;
    timings.write = write;
    timings.fsync = fsync;
    Ok((size, sha256))
}

/// Why writing a download failed.
enum WriteFailure {
    Write(std::io::Error),
    Decompress(std::io::Error),
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
