//! Streams chunks of unknown total size into an S3 multipart upload, with a bounded number of
//! parts in flight and the sha256 computed on the way; aborts the upload on any failure.
//!
//! Where the chunks come from (an etcd snapshot) and what the key is are the caller's.
//!
//! # Memory
//! At most `parts_in_flight + 1` parts are held at once (the ones uploading and the one
//! filling), whatever the object's size: 64 MiB with the defaults.
//!
//! # Metadata
//! S3 fixes user metadata when an upload starts, before the digest and size are known. So
//! the upload starts with what is known up front, and once complete the object is copied onto
//! itself (server side) with the digest and size added. Between the two steps, a short
//! window, the object exists without `sha256` and `size`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_s3::Client;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart, MetadataDirective};
use bytes::{Bytes, BytesMut};
use futures::{Stream, StreamExt};
use sha2::{Digest, Sha256};
use tokio::task::{JoinError, JoinSet};
use tracing::{info, warn};

use super::error::Call;
use super::metadata::SnapshotMetadata;
use super::{Error, S3Op};

/// S3's limit on parts per upload.
pub const MAX_PARTS: i32 = 10_000;
/// S3's smallest part (except the last).
pub const MIN_PART_SIZE: usize = 5 << 20;
/// S3's largest single CopyObject.
pub const MAX_SINGLE_COPY: u64 = 5 << 30;
/// How often progress is logged while uploading.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// How to cut and send the object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UploadOptions {
    /// Bytes per part (the last may be smaller). S3 wants at least 5 MiB and allows 10 000
    /// parts, so the default 5 MiB parts carry objects up to ~48 GiB (etcd's backend is at
    /// most 8 GiB). Measured (issue 11 benchmark): 5 MiB parts keep the operator's peak RSS at
    /// 51-52 MiB for 292 MB and 1.2 GB snapshots, 16 MiB parts at 101-118 MiB.
    pub part_size: usize,
    /// Parts uploading at once (at least 1).
    pub parts_in_flight: usize,
    /// Objects up to this size get their final metadata with one CopyObject; larger ones with
    /// a multipart copy in parts of this size (clamped to 5 MiB..=5 GiB).
    pub max_single_copy: u64,
}

impl Default for UploadOptions {
    fn default() -> Self {
        Self {
            part_size: crate::api::backup::DEFAULT_PART_SIZE_MIB as usize * (1 << 20),
            parts_in_flight: 3,
            max_single_copy: MAX_SINGLE_COPY,
        }
    }
}

impl UploadOptions {
    /// The most part data an upload holds in memory at once: `parts_in_flight` parts
    /// uploading and one being filled.
    pub fn bytes_held(&self) -> u64 {
        let parts = u64::try_from(self.parts_in_flight.max(1) + 1).unwrap_or(u64::MAX);
        u64::try_from(self.part_size)
            .unwrap_or(u64::MAX)
            .saturating_mul(parts)
    }

    /// The defaults with `partSizeMiB` from a backup destination, when set and positive.
    pub fn with_part_size_mib(part_size_mib: Option<i32>) -> Self {
        let mut options = Self::default();
        if let Some(mib) = part_size_mib.and_then(|m| usize::try_from(m).ok())
            && mib > 0
        {
            options.part_size = mib << 20;
        }
        options
    }
}

/// A completed upload.
#[derive(Clone, Debug, PartialEq)]
pub struct Uploaded {
    pub key: String,
    pub size: u64,
    /// Lowercase hex.
    pub sha256: String,
    pub parts: i32,
    /// From the start of the upload to its metadata being written.
    pub elapsed: Duration,
}

impl Uploaded {
    /// Throughput in MB/s (10^6 bytes).
    pub fn mb_per_second(&self) -> f64 {
        mb_per_second(self.size, self.elapsed)
    }
}

pub(crate) fn mb_per_second(bytes: u64, elapsed: Duration) -> f64 {
    let secs = elapsed.as_secs_f64();
    if secs > 0.0 {
        bytes as f64 / 1e6 / secs
    } else {
        0.0
    }
}

/// Uploads `chunks` to `bucket`/`key` as a multipart upload carrying `metadata`, then adds
/// the digest and size to the object's metadata (see the module docs).
///
/// # Guarantees
/// On any error (from `chunks`, S3, or the future being dropped) the multipart upload is
/// aborted, in-flight parts first, so no parts are left behind. Only an abort that itself
/// fails (S3 down) leaves one; [`super::abort_stale_uploads`] cleans those up later. An
/// object whose metadata could not be written is deleted.
///
/// # Errors
/// The first error from `chunks` as is; S3 failures as [`Error::Credentials`],
/// [`Error::BucketMissing`], [`Error::Unreachable`] when that is the cause, else the call's
/// variant ([`Error::CreateMultipart`], [`Error::UploadPart`], [`Error::CompleteUpload`],
/// [`Error::WriteMetadata`]); [`Error::TooManyParts`] when the part size is too small.
pub async fn upload_stream<S>(
    client: &Client,
    bucket: &str,
    key: &str,
    metadata: &SnapshotMetadata,
    chunks: S,
    options: &UploadOptions,
) -> Result<Uploaded, Error>
where
    S: Stream<Item = Result<Bytes, Error>> + Send,
{
    let started = Instant::now();
    let upload_id = create_upload(client, bucket, key, metadata).await?;
    let guard = AbortGuard::new(client, bucket, key, &upload_id);
    let target = Arc::new(Target {
        client: client.clone(),
        bucket: bucket.to_owned(),
        key: key.to_owned(),
        upload_id,
    });
    let mut in_flight = JoinSet::new();
    let sent = send_parts(&target, chunks, options, started, &mut in_flight).await;
    // In-flight parts must be gone before the abort, or one may land after it.
    in_flight.shutdown().await;
    let sent = match sent {
        Ok(sent) => sent,
        Err(e) => {
            guard.abort().await;
            return Err(e);
        }
    };
    if let Err(e) = complete_upload(&target, sent.parts).await {
        guard.abort().await;
        return Err(e);
    }
    guard.disarm();

    let metadata = SnapshotMetadata {
        sha256: Some(sent.sha256.clone()),
        size: Some(sent.size),
        ..metadata.clone()
    };
    if let Err(e) = write_metadata(client, bucket, key, &metadata, sent.size, options).await {
        let deleted = client.delete_object().bucket(bucket).key(key).send().await;
        if let Err(delete) = deleted {
            warn!(key, error = %e, cause = %delete, "could not delete object left without metadata");
        }
        return Err(e);
    }
    let uploaded = Uploaded {
        key: key.to_owned(),
        size: sent.size,
        sha256: sent.sha256,
        parts: sent.part_count,
        elapsed: started.elapsed(),
    };
    info!(
        key,
        bytes = uploaded.size,
        parts = uploaded.parts,
        mb_per_s = round1(uploaded.mb_per_second()),
        "uploaded snapshot"
    );
    Ok(uploaded)
}

/// Where parts go; shared with the part tasks.
struct Target {
    client: Client,
    bucket: String,
    key: String,
    upload_id: String,
}

impl Target {
    fn call(&self, op: S3Op) -> Call<'_> {
        Call {
            op,
            bucket: &self.bucket,
            key: &self.key,
        }
    }
}

struct Sent {
    parts: Vec<CompletedPart>,
    part_count: i32,
    size: u64,
    sha256: String,
}

async fn create_upload(
    client: &Client,
    bucket: &str,
    key: &str,
    metadata: &SnapshotMetadata,
) -> Result<String, Error> {
    let call = Call {
        op: S3Op::CreateMultipartUpload,
        bucket,
        key,
    };
    let created = client
        .create_multipart_upload()
        .bucket(bucket)
        .key(key)
        .set_metadata(Some(metadata.to_map()))
        .send()
        .await
        .map_err(|e| {
            call.error(e, |source| Error::CreateMultipart {
                key: key.to_owned(),
                source,
            })
        })?;
    created
        .upload_id()
        .map(str::to_owned)
        .ok_or_else(|| Error::UnexpectedResponse {
            op: S3Op::CreateMultipartUpload,
            key: key.to_owned(),
            what: "no upload id",
        })
}

/// Cuts `chunks` into parts and uploads them, at most `parts_in_flight` at a time.
async fn send_parts<S>(
    target: &Arc<Target>,
    chunks: S,
    options: &UploadOptions,
    started: Instant,
    in_flight: &mut JoinSet<Result<CompletedPart, Error>>,
) -> Result<Sent, Error>
where
    S: Stream<Item = Result<Bytes, Error>> + Send,
{
    let part_size = options.part_size.max(1);
    let max_in_flight = options.parts_in_flight.max(1);
    let mut chunks = std::pin::pin!(chunks);
    let mut done = Vec::new();
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    let mut buf = BytesMut::with_capacity(part_size);
    let mut next_part = 1;
    let mut last_progress = started;
    while let Some(chunk) = chunks.next().await {
        let mut rest = chunk?;
        hasher.update(&rest);
        size += rest.len() as u64;
        while !rest.is_empty() {
            let take = (part_size - buf.len()).min(rest.len());
            buf.extend_from_slice(&rest.split_to(take));
            if buf.len() == part_size {
                let body = std::mem::replace(&mut buf, BytesMut::with_capacity(part_size));
                let number = next_part;
                next_part += 1;
                start_part(
                    target,
                    in_flight,
                    &mut done,
                    max_in_flight,
                    number,
                    body,
                    options,
                )
                .await?;
            }
        }
        if last_progress.elapsed() >= PROGRESS_EVERY {
            last_progress = Instant::now();
            info!(
                key = target.key,
                bytes = size,
                mb_per_s = round1(mb_per_second(size, started.elapsed())),
                "uploading snapshot"
            );
        }
    }
    // A multipart upload needs at least one part, even an empty one.
    if !buf.is_empty() || next_part == 1 {
        let number = next_part;
        start_part(
            target,
            in_flight,
            &mut done,
            max_in_flight,
            number,
            buf,
            options,
        )
        .await?;
        next_part += 1;
    }
    while let Some(joined) = in_flight.join_next().await {
        done.push(finished(joined)?);
    }
    done.sort_by_key(|p| p.part_number());
    Ok(Sent {
        parts: done,
        part_count: next_part - 1,
        size,
        sha256: hex::encode(hasher.finalize()),
    })
}

/// Waits for room, then starts uploading part `number`.
async fn start_part(
    target: &Arc<Target>,
    in_flight: &mut JoinSet<Result<CompletedPart, Error>>,
    done: &mut Vec<CompletedPart>,
    max_in_flight: usize,
    number: i32,
    body: BytesMut,
    options: &UploadOptions,
) -> Result<(), Error> {
    if number > MAX_PARTS {
        return Err(Error::TooManyParts {
            key: target.key.clone(),
            part_size: options.part_size,
            max_parts: MAX_PARTS,
        });
    }
    while in_flight.len() >= max_in_flight {
        match in_flight.join_next().await {
            Some(joined) => done.push(finished(joined)?),
            None => break,
        }
    }
    let target = Arc::clone(target);
    in_flight.spawn(async move { upload_part(&target, number, body.freeze()).await });
    Ok(())
}

fn finished(
    joined: Result<Result<CompletedPart, Error>, JoinError>,
) -> Result<CompletedPart, Error> {
    match joined {
        Ok(part) => part,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        // Only `shutdown` cancels part tasks, and it runs after the last join.
        Err(e) => unreachable!("part task cancelled while joined: {e}"),
    }
}

async fn upload_part(target: &Target, number: i32, body: Bytes) -> Result<CompletedPart, Error> {
    let len = body.len() as i64;
    let resp = target
        .client
        .upload_part()
        .bucket(&target.bucket)
        .key(&target.key)
        .upload_id(&target.upload_id)
        .part_number(number)
        .content_length(len)
        .body(ByteStream::from(body))
        .send()
        .await
        .map_err(|e| {
            target
                .call(S3Op::UploadPart)
                .error(e, |source| Error::UploadPart {
                    key: target.key.clone(),
                    part: number,
                    source,
                })
        })?;
    let e_tag = resp.e_tag().ok_or_else(|| Error::UnexpectedResponse {
        op: S3Op::UploadPart,
        key: target.key.clone(),
        what: "no etag",
    })?;
    Ok(CompletedPart::builder()
        .part_number(number)
        .e_tag(e_tag)
        .build())
}

async fn complete_upload(target: &Target, parts: Vec<CompletedPart>) -> Result<(), Error> {
    target
        .client
        .complete_multipart_upload()
        .bucket(&target.bucket)
        .key(&target.key)
        .upload_id(&target.upload_id)
        .multipart_upload(
            CompletedMultipartUpload::builder()
                .set_parts(Some(parts))
                .build(),
        )
        .send()
        .await
        .map_err(|e| {
            target
                .call(S3Op::CompleteMultipartUpload)
                .error(e, |source| Error::CompleteUpload {
                    key: target.key.clone(),
                    source,
                })
        })?;
    Ok(())
}

/// Replaces the object's user metadata with `metadata` by copying it onto itself.
async fn write_metadata(
    client: &Client,
    bucket: &str,
    key: &str,
    metadata: &SnapshotMetadata,
    size: u64,
    options: &UploadOptions,
) -> Result<(), Error> {
    let source = copy_source(bucket, key);
    if size <= options.max_single_copy {
        client
            .copy_object()
            .bucket(bucket)
            .key(key)
            .copy_source(&source)
            .metadata_directive(MetadataDirective::Replace)
            .set_metadata(Some(metadata.to_map()))
            .send()
            .await
            .map_err(|e| metadata_error(S3Op::CopyObject, bucket, key, e))?;
        return Ok(());
    }
    // Beyond CopyObject's limit: a multipart upload onto the same key whose parts are ranges
    // of the current object; completing it replaces the object.
    let upload_id = match create_upload(client, bucket, key, metadata).await {
        Ok(id) => id,
        Err(Error::CreateMultipart { key, source }) => {
            return Err(Error::WriteMetadata { key, source });
        }
        Err(e) => return Err(e),
    };
    let guard = AbortGuard::new(client, bucket, key, &upload_id);
    let copy_part = options
        .max_single_copy
        .clamp(MIN_PART_SIZE as u64, MAX_SINGLE_COPY);
    let mut parts = Vec::new();
    let mut start = 0u64;
    let mut number = 1;
    while start < size {
        let end = (start + copy_part).min(size) - 1;
        let copied = client
            .upload_part_copy()
            .bucket(bucket)
            .key(key)
            .upload_id(&upload_id)
            .part_number(number)
            .copy_source(&source)
            .copy_source_range(format!("bytes={start}-{end}"))
            .send()
            .await
            .map_err(|e| metadata_error(S3Op::UploadPartCopy, bucket, key, e));
        let e_tag = match copied {
            Ok(resp) => resp
                .copy_part_result()
                .and_then(|r| r.e_tag())
                .map(str::to_owned),
            Err(e) => {
                guard.abort().await;
                return Err(e);
            }
        };
        let Some(e_tag) = e_tag else {
            guard.abort().await;
            return Err(Error::UnexpectedResponse {
                op: S3Op::UploadPartCopy,
                key: key.to_owned(),
                what: "no etag",
            });
        };
        parts.push(
            CompletedPart::builder()
                .part_number(number)
                .e_tag(e_tag)
                .build(),
        );
        start = end + 1;
        number += 1;
    }
    let target = Target {
        client: client.clone(),
        bucket: bucket.to_owned(),
        key: key.to_owned(),
        upload_id,
    };
    if let Err(e) = complete_upload(&target, parts).await {
        guard.abort().await;
        return Err(match e {
            Error::CompleteUpload { key, source } => Error::WriteMetadata { key, source },
            other => other,
        });
    }
    guard.disarm();
    Ok(())
}

fn metadata_error<E>(
    op: S3Op,
    bucket: &str,
    key: &str,
    err: aws_sdk_s3::error::SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
) -> Error
where
    E: aws_sdk_s3::error::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    aws_sdk_s3::Error: From<aws_sdk_s3::error::SdkError<E, aws_sdk_s3::config::http::HttpResponse>>,
{
    Call { op, bucket, key }.error(err, |source| Error::WriteMetadata {
        key: key.to_owned(),
        source,
    })
}

/// `x-amz-copy-source`: `bucket/key`, the key percent-encoded except for `/`.
fn copy_source(bucket: &str, key: &str) -> String {
    let mut out = format!("{bucket}/");
    for b in key.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Aborts one multipart upload.
pub(crate) async fn abort_upload(
    client: &Client,
    bucket: &str,
    key: &str,
    upload_id: &str,
) -> Result<(), Error> {
    let call = Call {
        op: S3Op::AbortMultipartUpload,
        bucket,
        key,
    };
    client
        .abort_multipart_upload()
        .bucket(bucket)
        .key(key)
        .upload_id(upload_id)
        .send()
        .await
        .map_err(|e| {
            call.error(e, |source| Error::AbortUpload {
                key: key.to_owned(),
                upload_id: upload_id.to_owned(),
                source,
            })
        })?;
    Ok(())
}

/// Aborts a multipart upload unless disarmed: awaited on errors, spawned when dropped (the
/// upload future was cancelled).
struct AbortGuard {
    client: Client,
    bucket: String,
    key: String,
    upload_id: String,
    armed: bool,
}

impl AbortGuard {
    fn new(client: &Client, bucket: &str, key: &str, upload_id: &str) -> Self {
        Self {
            client: client.clone(),
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            upload_id: upload_id.to_owned(),
            armed: true,
        }
    }

    async fn abort(mut self) {
        self.armed = false;
        if let Err(e) = abort_upload(&self.client, &self.bucket, &self.key, &self.upload_id).await {
            warn!(key = self.key, error = %e, "could not abort multipart upload");
        }
    }

    fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for AbortGuard {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            warn!(
                key = self.key,
                "multipart upload left behind: no runtime to abort it"
            );
            return;
        };
        let (client, bucket, key, upload_id) = (
            self.client.clone(),
            std::mem::take(&mut self.bucket),
            std::mem::take(&mut self.key),
            std::mem::take(&mut self.upload_id),
        );
        runtime.spawn(async move {
            if let Err(e) = abort_upload(&client, &bucket, &key, &upload_id).await {
                warn!(key, error = %e, "could not abort cancelled multipart upload");
            }
        });
    }
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_source_encodes_all_but_slashes_and_unreserved() {
        assert_eq!(
            copy_source("b", "p q/c/20250101T000000Z-rev1.db"),
            "b/p%20q/c/20250101T000000Z-rev1.db"
        );
        assert_eq!(copy_source("b", "a+b&c"), "b/a%2Bb%26c");
    }

    #[test]
    fn part_size_comes_from_mib_when_positive() {
        assert_eq!(
            UploadOptions::with_part_size_mib(Some(5)).part_size,
            5 << 20
        );
        assert_eq!(UploadOptions::with_part_size_mib(None).part_size, 5 << 20);
        assert_eq!(
            UploadOptions::with_part_size_mib(Some(0)).part_size,
            5 << 20
        );
    }

    #[test]
    fn throughput_is_in_decimal_megabytes() {
        assert_eq!(mb_per_second(10_000_000, Duration::from_secs(2)), 5.0);
        assert_eq!(mb_per_second(1, Duration::ZERO), 0.0);
    }
}
