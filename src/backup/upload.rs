//! Streams chunks of unknown total size into an S3 multipart upload, with a bounded number of
//! parts in flight and the sha256 computed on the way; aborts the upload on any failure.
//!
//! Where the chunks come from (an etcd snapshot) and what the key is are the caller's.
//!
//! # Memory
//! At most `parts_in_flight + 1` parts are held at once (the ones uploading and the one
//! filling), whatever the object's size: 20 MiB with the defaults ([`UploadOptions::bytes_held`]).
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
    /// Whether each part's sha256 also goes into its SigV4 signature (`signPayload: true`),
    /// so that the server refuses a body changed on the way even by someone who fixed up its
    /// checksum. Off by default: every part carries a signed CRC32C header the server checks
    /// (corruption on the way is refused either way), the whole object's sha256 is recorded
    /// and checked on restore, and signing costs a second sha256 of every byte here and a
    /// third on the server (see [`UploadOptions::for_destination`] and `benches/backup.rs`,
    /// which measures both).
    pub sign_payload: bool,
}

impl Default for UploadOptions {
    fn default() -> Self {
        Self {
            part_size: crate::api::backup::DEFAULT_PART_SIZE_MIB as usize * (1 << 20),
            parts_in_flight: 3,
            max_single_copy: MAX_SINGLE_COPY,
            sign_payload: false,
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

    /// The options for a backup to `destination`: its `partSizeMiB` and `signPayload`.
    pub fn for_destination(destination: &crate::api::backup::S3Destination) -> Self {
        let mut options = Self::with_part_size_mib(destination.part_size_mib);
        options.sign_payload = destination.sign_payload.unwrap_or(false);
        options
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
    /// Where that time went.
    pub timings: UploadTimings,
}

/// Where an upload's wall time went, for its log line and the benchmark. The stream's
/// phases (`source`, `hash`, `slot_wait`) are sequential; parts upload in parallel with them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct UploadTimings {
    /// CreateMultipartUpload.
    pub create: Duration,
    /// Waiting for the source's next chunk (etcd's snapshot stream, or the compressor).
    pub source: Duration,
    /// sha256 of the stream, on its own thread (in parallel with the rest).
    pub hash: Duration,
    /// Copying chunks into part buffers.
    pub fill: Duration,
    /// Waiting for a part slot to free up: S3 slower than the source.
    pub slot_wait: Duration,
    /// After the source ended: waiting for the last parts.
    pub drain: Duration,
    /// Every UploadPart's time added up (they overlap), and the slowest one.
    pub parts_total: Duration,
    pub slowest_part: Duration,
    /// CompleteMultipartUpload.
    pub complete: Duration,
    /// Writing the digest and size into the object's metadata (the copy onto itself).
    pub metadata: Duration,
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
    let mut timings = UploadTimings::default();
    let upload_id = create_upload(client, bucket, key, metadata).await?;
    timings.create = started.elapsed();
    let guard = AbortGuard::new(client, bucket, key, &upload_id);
    let target = Arc::new(Target {
        client: client.clone(),
        bucket: bucket.to_owned(),
        key: key.to_owned(),
        upload_id,
    });
    let mut in_flight = JoinSet::new();
    let sent = send_parts(
        &target,
        chunks,
        options,
        started,
        &mut in_flight,
        &mut timings,
    )
    .await;
    // In-flight parts must be gone before the abort, or one may land after it.
    in_flight.shutdown().await;
    let sent = match sent {
        Ok(sent) => sent,
        Err(e) => {
            guard.abort().await;
            return Err(e);
        }
    };
    let completing = Instant::now();
    if let Err(e) = complete_upload(&target, sent.parts).await {
        guard.abort().await;
        return Err(e);
    }
    guard.disarm();
    timings.complete = completing.elapsed();

    let metadata = SnapshotMetadata {
        sha256: Some(sent.sha256.clone()),
        size: Some(sent.size),
        ..metadata.clone()
    };
    let writing = Instant::now();
    if let Err(e) = write_metadata(client, bucket, key, &metadata, sent.size, options).await {
        let deleted = client.delete_object().bucket(bucket).key(key).send().await;
        if let Err(delete) = deleted {
            warn!(key, error = %e, cause = %delete, "could not delete object left without metadata");
        }
        return Err(e);
    }
    timings.metadata = writing.elapsed();
    let uploaded = Uploaded {
        key: key.to_owned(),
        size: sent.size,
        sha256: sent.sha256,
        parts: sent.part_count,
        elapsed: started.elapsed(),
        timings,
    };
    let t = &uploaded.timings;
    let ms = |d: Duration| d.as_millis() as u64;
    info!(
        key,
        bytes = uploaded.size,
        parts = uploaded.parts,
        mb_per_s = round1(uploaded.mb_per_second()),
        source_ms = ms(t.source),
        hash_ms = ms(t.hash),
        slot_wait_ms = ms(t.slot_wait),
        drain_ms = ms(t.drain),
        complete_ms = ms(t.complete),
        metadata_ms = ms(t.metadata),
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

/// Cuts `chunks` into parts and uploads them, at most `parts_in_flight` at a time, while a
/// blocking thread hashes the parts in order.
///
/// A part's slot is freed once it is both uploaded and hashed, so at most
/// `parts_in_flight + 1` parts are held (the slots, and the one filling or waiting for a
/// slot) however far the hash or the uploads fall behind.
async fn send_parts<S>(
    target: &Arc<Target>,
    chunks: S,
    options: &UploadOptions,
    started: Instant,
    in_flight: &mut JoinSet<PartResult>,
    timings: &mut UploadTimings,
) -> Result<Sent, Error>
where
    S: Stream<Item = Result<Bytes, Error>> + Send,
{
    let part_size = options.part_size.max(1);
    let max_in_flight = options.parts_in_flight.max(1);
    let mut chunks = std::pin::pin!(chunks);
    let mut done = Vec::new();
    let hasher = Hasher::start();
    let mut size = 0u64;
    let mut parts = Parts {
        target,
        in_flight,
        done: &mut done,
        max_in_flight,
        options,
        hashed: &hasher.hashed,
        pool: Arc::default(),
    };
    let mut buf = parts.buffer();
    let mut next_part = 1;
    let mut last_progress = started;
    loop {
        let waiting = Instant::now();
        let Some(chunk) = chunks.next().await else {
            timings.source += waiting.elapsed();
            break;
        };
        let filling = Instant::now();
        timings.source += filling - waiting;
        let mut rest = chunk?;
        size += rest.len() as u64;
        let slot_wait_before = timings.slot_wait;
        while !rest.is_empty() {
            let take = (part_size - buf.len()).min(rest.len());
            buf.extend_from_slice(&rest.split_to(take));
            if buf.len() == part_size {
                let body = std::mem::take(&mut buf).freeze();
                let number = next_part;
                next_part += 1;
                hasher.feed(number, body.clone())?;
                parts.start(number, body, timings).await?;
                // Only now: while `start` waited for a slot, the full part was the one held.
                buf = parts.buffer();
            }
        }
        // Time in here is filling, except waiting for a slot.
        timings.fill += filling.elapsed() - (timings.slot_wait - slot_wait_before);
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
        let body = buf.freeze();
        hasher.feed(number, body.clone())?;
        parts.start(number, body, timings).await?;
        next_part += 1;
    }
    let draining = Instant::now();
    while let Some(joined) = in_flight.join_next().await {
        done.push(finished(joined, timings)?);
    }
    let (sha256, hashing) = hasher.finish().await?;
    timings.drain = draining.elapsed();
    timings.hash = hashing;
    done.sort_by_key(|p| p.part_number());
    Ok(Sent {
        parts: done,
        part_count: next_part - 1,
        size,
        sha256,
    })
}

/// The sha256 of the parts, in order, on a blocking thread: the digest costs the stream's
/// task nothing but a channel send per part.
struct Hasher {
    parts: tokio::sync::mpsc::UnboundedSender<(i32, Bytes)>,
    /// The highest part number hashed so far.
    hashed: tokio::sync::watch::Receiver<i32>,
    thread: tokio::task::JoinHandle<(String, Duration)>,
}

impl Hasher {
    fn start() -> Self {
        let (parts, mut rx) = tokio::sync::mpsc::unbounded_channel::<(i32, Bytes)>();
        let (hashed_tx, hashed) = tokio::sync::watch::channel(0);
        let thread = tokio::task::spawn_blocking(move || {
            let mut hasher = Sha256::new();
            let mut busy = Duration::ZERO;
            while let Some((number, part)) = rx.blocking_recv() {
                let started = Instant::now();
                hasher.update(&part);
                busy += started.elapsed();
                drop(part);
                hashed_tx.send_replace(number);
            }
            (hex::encode(hasher.finalize()), busy)
        });
        Self {
            parts,
            hashed,
            thread,
        }
    }

    fn feed(&self, number: i32, part: Bytes) -> Result<(), Error> {
        self.parts.send((number, part)).map_err(|_| Error::Hasher)
    }

    /// The digest of everything fed, and the time spent hashing.
    async fn finish(self) -> Result<(String, Duration), Error> {
        drop(self.parts);
        match self.thread.await {
            Ok(done) => Ok(done),
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => Err(Error::Hasher),
        }
    }
}

/// A part task's outcome: the part and how long its upload took.
type PartResult = Result<(CompletedPart, Duration), Error>;

/// The part tasks and their slots.
struct Parts<'a> {
    target: &'a Arc<Target>,
    in_flight: &'a mut JoinSet<PartResult>,
    done: &'a mut Vec<CompletedPart>,
    max_in_flight: usize,
    options: &'a UploadOptions,
    hashed: &'a tokio::sync::watch::Receiver<i32>,
    /// Buffers of parts done with, to fill again: an upload allocates `parts_in_flight + 1`
    /// part buffers however long the stream, so the allocator neither grows nor faults in
    /// fresh pages for every part.
    pool: Arc<std::sync::Mutex<Vec<BytesMut>>>,
}

impl Parts<'_> {
    /// An empty buffer of a part's size: a returned one, else a new one.
    fn buffer(&self) -> BytesMut {
        let part_size = self.options.part_size.max(1);
        let reused = self.pool.lock().unwrap_or_else(|e| e.into_inner()).pop();
        reused.unwrap_or_else(|| BytesMut::with_capacity(part_size))
    }

    /// Waits for a free slot, then starts uploading part `number`; the task holds its slot
    /// until the part is also hashed.
    async fn start(
        &mut self,
        number: i32,
        body: Bytes,
        timings: &mut UploadTimings,
    ) -> Result<(), Error> {
        if number > MAX_PARTS {
            return Err(Error::TooManyParts {
                key: self.target.key.clone(),
                part_size: self.options.part_size,
                max_parts: MAX_PARTS,
            });
        }
        let waiting = Instant::now();
        while self.in_flight.len() >= self.max_in_flight {
            match self.in_flight.join_next().await {
                Some(joined) => self.done.push(finished(joined, timings)?),
                None => break,
            }
        }
        timings.slot_wait += waiting.elapsed();
        let target = Arc::clone(self.target);
        let mut hashed = self.hashed.clone();
        let sign = self.options.sign_payload;
        let pool = Arc::clone(&self.pool);
        let part_size = self.options.part_size.max(1);
        self.in_flight.spawn(async move {
            let started = Instant::now();
            let part = upload_part(&target, number, body.clone(), sign).await?;
            let took = started.elapsed();
            hashed
                .wait_for(|&n| n >= number)
                .await
                .map_err(|_| Error::Hasher)?;
            // Uploaded and hashed: nobody else holds the buffer now, it can be filled again.
            if let Ok(mut buf) = body.try_into_mut() {
                buf.clear();
                if buf.capacity() >= part_size {
                    pool.lock().unwrap_or_else(|e| e.into_inner()).push(buf);
                }
            }
            Ok((part, took))
        });
        Ok(())
    }
}

fn finished(
    joined: Result<PartResult, JoinError>,
    timings: &mut UploadTimings,
) -> Result<CompletedPart, Error> {
    match joined {
        Ok(Ok((part, took))) => {
            timings.parts_total += took;
            timings.slowest_part = timings.slowest_part.max(took);
            Ok(part)
        }
        Ok(Err(e)) => Err(e),
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        // Only `shutdown` cancels part tasks, and it runs after the last join.
        Err(e) => unreachable!("part task cancelled while joined: {e}"),
    }
}

/// Uploads one part with its CRC32C in `x-amz-checksum-crc32c`: a signed header the server
/// checks the body against, refusing a part changed on the way (S3 answers `BadDigest`,
/// Garage `InvalidDigest`). With `sign` the payload's sha256 is part of the SigV4 signature
/// too (the server checks that as well); without, the payload is sent as `UNSIGNED-PAYLOAD`,
/// which saves a sha256 of every byte here and on the server.
async fn upload_part(
    target: &Target,
    number: i32,
    body: Bytes,
    sign: bool,
) -> Result<CompletedPart, Error> {
    let len = body.len() as i64;
    let request = target
        .client
        .upload_part()
        .bucket(&target.bucket)
        .key(&target.key)
        .upload_id(&target.upload_id)
        .part_number(number)
        .content_length(len)
        .checksum_crc32_c(crc32c_header(&body))
        .body(ByteStream::from(body))
        .customize();
    let request = if sign {
        request
    } else {
        request.disable_payload_signing()
    };
    let resp = request.send().await.map_err(|e| {
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

/// The value of `x-amz-checksum-crc32c` for `bytes`: the base64 of the CRC32C (Castagnoli),
/// big-endian, as S3 defines it.
pub(crate) fn crc32c_header(bytes: &[u8]) -> String {
    let crc = crc_fast::checksum(crc_fast::CrcAlgorithm::Crc32Iscsi, bytes) as u32;
    aws_smithy_types::base64::encode(crc.to_be_bytes())
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
    fn crc32c_header_is_the_base64_of_the_big_endian_castagnoli_crc() {
        // RFC 3720's check value for CRC32C of "123456789" is 0xE3069283.
        assert_eq!(crc32c_header(b"123456789"), "4waSgw==");
        // Empty: CRC32C 0.
        assert_eq!(crc32c_header(b""), "AAAAAA==");
    }

    #[test]
    fn payloads_are_signed_only_when_the_destination_asks() {
        let to = |endpoint: Option<&str>, sign: Option<bool>| {
            let mut d = crate::api::backup::S3Destination {
                bucket: "b".into(),
                prefix: None,
                connection: crate::api::s3::S3Connection::default(),
                part_size_mib: Some(8),
                compression: None,
                sign_payload: None,
            };
            d.connection.endpoint = endpoint.map(str::to_owned);
            d.sign_payload = sign;
            UploadOptions::for_destination(&d)
        };
        // Plain HTTP or TLS alike: the CRC32C header protects each part, the sha256 the whole.
        assert!(!to(Some("http://127.0.0.1:3900"), None).sign_payload);
        assert!(!to(Some("https://s3.example.com"), None).sign_payload);
        assert!(!to(None, Some(false)).sign_payload);
        assert!(to(Some("http://127.0.0.1:3900"), Some(true)).sign_payload);
        assert!(to(None, Some(true)).sign_payload);
        assert_eq!(to(None, None).part_size, 8 << 20);
    }

    #[test]
    fn throughput_is_in_decimal_megabytes() {
        assert_eq!(mb_per_second(10_000_000, Duration::from_secs(2)), 5.0);
        assert_eq!(mb_per_second(1, Duration::ZERO), 0.0);
    }
}
