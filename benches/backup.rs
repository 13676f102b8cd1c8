//! Benchmark of the backup engine on real etcd and Garage (issue 11's performance table), at
//! two snapshot sizes (about 280 MB and 1.2 GB), side by side:
//!
//! - backup wall time against `etcdctl snapshot save` to local disk of the same data
//!   (target ≤ 1.15×), and where it goes: etcd's snapshot stream read alone (and hashed),
//!   the upload's own timings, the SDK's signing, CPU time by process (this one, etcd,
//!   Garage, etcdctl); the same upload in the other payload mode (signed, as
//!   `signPayload: true` sends it); and
//!   the bytes etcdctl saved uploaded from memory (no etcd behind it) at several part sizes
//!   and concurrencies, signed and not: Garage's ingest rate on this machine;
//! - this process's peak RSS while it streams a backup (target ≤ 64 MiB, flat in size);
//! - the S3 requests one backup makes, by operation, and the part data it may buffer;
//! - restore download+verify (ranged GETs, sha256, fsync, then `snapshot status`) against
//!   the disk's sequential write rate (fsynced), and where the time goes (waiting for GETs,
//!   for the hash or the file, fsync; one plain GET stream for comparison);
//! - a 3-member restore's wall time;
//! - the same data with `compression: zstd`: ratio, backup throughput, download+decompress.
//!
//! Run with `cargo bench --bench backup` (needs `ETCD_BIN_DIR` and Garage, see
//! `scripts/install-test-deps`). `BACKUP_BENCH_SIZES_MIB=265,1140` (values loaded into etcd,
//! MiB) overrides the sizes; `BACKUP_BENCH_PART_MIB=5` the part size (`partSizeMiB`).

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_sdk_s3::config::interceptors::{
    BeforeDeserializationInterceptorContextRef, BeforeTransmitInterceptorContextRef,
};
use aws_sdk_s3::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_smithy_types::config_bag::{Storable, StoreReplace};
use etcd_operator::api::backup::{Compression, S3Destination};
use etcd_operator::backup::{
    BackupTimings, DownloadOptions, DownloadTimings, Owner, UploadOptions, download,
    snapshot_status, take_backup, take_backup_timed, upload_stream,
};
use etcd_operator::etcd::EtcdAdmin;
use etcd_operator::testing::garage::{BUCKET, TestGarage};
use etcd_operator::testing::{EtcdBin, TestCluster, bin_for_minor};
use futures::{StreamExt, TryStreamExt};
use sha2::Digest;
use support::{RestoredCluster, connect, fill_range};

/// Counts live heap bytes and their peak, to tell what a backup allocates from what the
/// allocator keeps (RSS).
struct CountingAlloc;

static HEAP: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
static HEAP_PEAK: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

// SAFETY: forwards to the system allocator; only counts.
unsafe impl std::alloc::GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        use std::sync::atomic::Ordering::Relaxed;
        let p = unsafe { std::alloc::System.alloc(layout) };
        if !p.is_null() {
            let now = HEAP.fetch_add(layout.size(), Relaxed) + layout.size();
            HEAP_PEAK.fetch_max(now, Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        unsafe { std::alloc::System.dealloc(ptr, layout) };
        HEAP.fetch_sub(layout.size(), std::sync::atomic::Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new: usize) -> *mut u8 {
        use std::sync::atomic::Ordering::Relaxed;
        let p = unsafe { std::alloc::System.realloc(ptr, layout, new) };
        if !p.is_null() {
            HEAP.fetch_sub(layout.size(), Relaxed);
            let now = HEAP.fetch_add(new, Relaxed) + new;
            HEAP_PEAK.fetch_max(now, Relaxed);
        }
        p
    }
}

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

/// Live heap now, in MiB; and resets the peak to it.
fn heap_reset() -> f64 {
    let now = HEAP.load(std::sync::atomic::Ordering::Relaxed);
    HEAP_PEAK.store(now, std::sync::atomic::Ordering::Relaxed);
    now as f64 / (1 << 20) as f64
}

/// The live heap's peak since [`heap_reset`], in MiB.
fn heap_peak() -> f64 {
    HEAP_PEAK.load(std::sync::atomic::Ordering::Relaxed) as f64 / (1 << 20) as f64
}

/// Values of 512 KiB: few puts per GiB, well under etcd's 1.5 MiB request limit.
const VALUE: usize = 512 << 10;

/// Counts the HTTP requests an S3 client sends (retries included), by S3 operation, and
/// the time the SDK spends signing them (SigV4, the payload's sha256 included) and sending
/// them (body out, response headers in).
#[derive(Clone, Debug, Default)]
struct RequestCounter(Arc<Mutex<Requests>>);

#[derive(Clone, Debug, Default)]
struct Requests {
    count: BTreeMap<&'static str, u64>,
    signing: Duration,
    transmit: BTreeMap<&'static str, Duration>,
}

#[derive(Clone, Debug)]
struct Started(Instant, &'static str);

impl Storable for Started {
    type Storer = StoreReplace<Self>;
}

impl RequestCounter {
    fn take(&self) -> Requests {
        std::mem::take(&mut self.0.lock().unwrap())
    }
}

/// The S3 operation a request is, from its method, query and headers.
fn operation(request: &aws_sdk_s3::config::http::HttpRequest) -> &'static str {
    let uri = request.uri();
    let query = uri.split_once('?').map_or("", |(_, q)| q);
    let has = |param: &str| {
        query
            .split('&')
            .any(|p| p == param || p.starts_with(&format!("{param}=")))
    };
    let copy = request.headers().get("x-amz-copy-source").is_some();
    match (request.method(), copy) {
        ("POST", _) if has("uploads") => "CreateMultipartUpload",
        ("POST", _) if has("uploadId") => "CompleteMultipartUpload",
        ("PUT", true) if has("partNumber") => "UploadPartCopy",
        ("PUT", true) => "CopyObject",
        ("PUT", false) if has("partNumber") => "UploadPart",
        ("PUT", false) => "PutObject",
        ("DELETE", _) if has("uploadId") => "AbortMultipartUpload",
        ("DELETE", _) => "DeleteObject",
        ("HEAD", _) => "HeadObject",
        ("GET", _) if has("list-type") => "ListObjectsV2",
        ("GET", _) if has("uploads") => "ListMultipartUploads",
        ("GET", _) => "GetObject",
        _ => "other",
    }
}

impl Intercept for RequestCounter {
    fn name(&self) -> &'static str {
        "RequestCounter"
    }

    fn read_before_signing(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let op = operation(context.request());
        cfg.interceptor_state()
            .store_put(Started(Instant::now(), op));
        Ok(())
    }

    fn read_after_signing(
        &self,
        _context: &BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        if let Some(Started(at, _)) = cfg.load::<Started>() {
            self.0.lock().unwrap().signing += at.elapsed();
        }
        Ok(())
    }

    fn read_before_transmit(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let op = operation(context.request());
        *self.0.lock().unwrap().count.entry(op).or_default() += 1;
        cfg.interceptor_state()
            .store_put(Started(Instant::now(), op));
        Ok(())
    }

    fn read_after_transmit(
        &self,
        _context: &BeforeDeserializationInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        if let Some(Started(at, op)) = cfg.load::<Started>() {
            *self.0.lock().unwrap().transmit.entry(op).or_default() += at.elapsed();
        }
        Ok(())
    }
}

struct Row {
    db_mib: u64,
    /// The 1-minute load average before the row's first measurement and after its last.
    load: (f64, f64),
    /// [`MEMORY_UPLOADS`]' times and CPU.
    from_memory: Vec<(Duration, BTreeMap<String, Duration>)>,
    snapshot_mb: f64,
    etcdctl_save: Duration,
    backup: Duration,
    upload_mb_s: f64,
    timings: BackupTimings,
    /// CPU time during `etcdctl snapshot save` and during the backup, by process.
    save_cpu: BTreeMap<String, Duration>,
    backup_cpu: BTreeMap<String, Duration>,
    /// The snapshot stream alone, read and dropped; and read and hashed.
    drain: Duration,
    drain_sha256: Duration,
    requests: Requests,
    other_backup: Duration,
    other_cpu: BTreeMap<String, Duration>,
    rss_before_mib: f64,
    rss_peak_mib: f64,
    heap_before_mib: f64,
    heap_peak_mib: f64,
    get: Duration,
    download: DownloadTimings,
    /// The GET alone, its body read and dropped.
    get_only: Duration,
    verify: Duration,
    disk_write: Duration,
    restore_3: Duration,
    zstd_backup: Duration,
    zstd_object_mb: f64,
    zstd_rss_peak_mib: f64,
    zstd_get: Duration,
}

/// Set on the child process that loads etcd: `<endpoint> <first key> <end key>`.
const FILL_ENV: &str = "BACKUP_BENCH_FILL";

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    if let Ok(job) = std::env::var(FILL_ENV) {
        let parts: Vec<&str> = job.split_whitespace().collect();
        let [endpoint, from, to] = parts[..] else {
            panic!("{FILL_ENV}={job:?}");
        };
        let range = from.parse().unwrap()..to.parse().unwrap();
        runtime.block_on(async {
            let kv = connect(&[endpoint.to_owned()]).await;
            fill_range(&kv, "bench", range, VALUE, 16).await;
        });
        return;
    }
    let sizes: Vec<u64> = std::env::var("BACKUP_BENCH_SIZES_MIB")
        .ok()
        .map(|s| s.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![265, 1140]);
    let rows = runtime.block_on(run(&sizes));
    print(&rows);
}

async fn run(sizes: &[u64]) -> Vec<Row> {
    let bin = bin_for_minor(3, 5).unwrap_or_else(|e| panic!("{e}"));
    let (cluster, garage) = tokio::join!(
        TestCluster::builder(&bin)
            .members(1)
            .arg("--quota-backend-bytes=8589934592")
            .start(),
        TestGarage::start()
    );
    let (cluster, garage) = (cluster.unwrap(), garage.unwrap());
    let counter = RequestCounter::default();
    let plain = garage.client().await;
    let s3 = aws_sdk_s3::Client::from_conf(
        plain
            .config()
            .to_builder()
            .interceptor(counter.clone())
            .build(),
    );
    let admin = cluster.admin().await.unwrap();
    let destination = S3Destination {
        bucket: BUCKET.into(),
        prefix: Some("bench".into()),
        connection: garage.connection(),
        part_size_mib: part_size_mib(),
        compression: None,
        sign_payload: None,
    };
    let work = tempfile::tempdir().expect("temp dir");
    let mut written_keys = 0u64;
    let mut rows = Vec::new();
    for &mib in sizes {
        let want_keys = (mib << 20) / VALUE as u64;
        if want_keys > written_keys {
            let started = Instant::now();
            // In a child process: the puts' buffers would stay in this process's heap and
            // count as the backup's RSS.
            let status = tokio::process::Command::new(std::env::current_exe().unwrap())
                .env(
                    FILL_ENV,
                    format!(
                        "{} {written_keys} {want_keys}",
                        cluster.client_url(0).unwrap()
                    ),
                )
                .status()
                .await
                .expect("fill child");
            assert!(status.success(), "loading etcd failed");
            eprintln!(
                "loaded {} MiB more into etcd in {:.1?}",
                ((want_keys - written_keys) * VALUE as u64) >> 20,
                started.elapsed()
            );
            written_keys = want_keys;
        }

        let load_at_start = load_average();
        let saved = work.path().join("etcdctl.db");
        let cpu = cpu_times();
        let started = Instant::now();
        etcdctl_save(&bin, cluster.client_url(0).unwrap(), &saved).await;
        let etcdctl_save = started.elapsed();
        let save_cpu = cpu_since(&cpu);
        let snapshot_bytes = std::fs::metadata(&saved).unwrap().len();

        let (drain, drain_sha256) = (
            drain_snapshot(&admin, false).await,
            drain_snapshot(&admin, true).await,
        );

        counter.take();
        reset_peak_rss();
        let rss_before_mib = rss_kib("VmRSS") as f64 / 1024.0;
        let heap_before_mib = heap_reset();
        let cpu = cpu_times();
        let started = Instant::now();
        let (record, timings) = take_backup_timed(&admin, None, &s3, &destination, &bench_owner())
            .await
            .unwrap_or_else(|e| panic!("backup: {e:?}"));
        let backup = started.elapsed();
        let backup_cpu = cpu_since(&cpu);
        let rss_peak_mib = rss_kib("VmHWM") as f64 / 1024.0;
        let heap_peak_mib = heap_peak();
        let requests = counter.take();
        eprintln!("{mib} MiB: backup {backup:.2?}, {timings:#?}, {requests:#?}");

        let started = Instant::now();
        get_only(&s3, &record.key).await;
        let get_only = started.elapsed();

        let snapshot = work.path().join("restore.db");
        // The same upload with the other payload mode (signed when the backup was not, as
        // `signPayload: true` sends it): what signing costs.
        let mut other = UploadOptions::for_destination(&destination);
        other.sign_payload = !other.sign_payload;
        let cpu = cpu_times();
        let started = Instant::now();
        let snapshot_stream = admin.snapshot().await.expect("snapshot").map_err(|e| {
            etcd_operator::backup::Error::Snapshot {
                endpoint: String::new(),
                source: e,
            }
        });
        let uploaded = upload_stream(
            &s3,
            BUCKET,
            "bench/other-payload-mode.db",
            &Default::default(),
            salted(snapshot_stream, mib),
            &other,
        )
        .await
        .unwrap_or_else(|e| panic!("upload in the other payload mode: {e:?}"));
        let other_backup = started.elapsed();
        let other_cpu = cpu_since(&cpu);
        s3.delete_object()
            .bucket(BUCKET)
            .key(&uploaded.key)
            .send()
            .await
            .expect("delete");
        counter.take();

        let started = Instant::now();
        let downloaded = download(
            &s3,
            BUCKET,
            &record.key,
            Some(&record.sha256),
            None,
            &snapshot,
        )
        .await
        .unwrap();
        let get = started.elapsed();
        let started = Instant::now();
        snapshot_status(&bin.dir, &snapshot)
            .await
            .unwrap_or_else(|e| panic!("snapshot status: {e}"));
        let verify = started.elapsed();
        counter.take();

        let disk_write = disk_sequential_write(&work.path().join("disk.bin"), snapshot_bytes);

        let dir = work.path().join(format!("restore-{mib}"));
        std::fs::create_dir(&dir).unwrap();
        let started = Instant::now();
        let restored = RestoredCluster::restore(&bin, &snapshot, 3, &dir).await;
        let restore_3 = started.elapsed();
        drop(restored);
        std::fs::remove_dir_all(&dir).unwrap();
        std::fs::remove_file(&snapshot).unwrap();

        // The same data through zstd: its ratio and throughput, up and down.
        let zstd_destination = S3Destination {
            compression: Some(Compression::Zstd),
            ..destination.clone()
        };
        reset_peak_rss();
        let started = Instant::now();
        let zstd_record = take_backup(&admin, None, &s3, &zstd_destination, &bench_owner())
            .await
            .unwrap_or_else(|e| panic!("zstd backup: {e:?}"));
        let zstd_backup = started.elapsed();
        let zstd_rss_peak_mib = rss_kib("VmHWM") as f64 / 1024.0;
        let started = Instant::now();
        download(
            &s3,
            BUCKET,
            &zstd_record.key,
            Some(&zstd_record.sha256),
            None,
            &snapshot,
        )
        .await
        .unwrap();
        let zstd_get = started.elapsed();
        std::fs::remove_file(&snapshot).unwrap();
        counter.take();

        // The bytes etcdctl saved, from memory: Garage's ingest through our upload, with no
        // etcd behind it, at several part sizes and concurrencies.
        let saved_bytes = std::fs::read(&saved).expect("read the saved snapshot");
        std::fs::remove_file(&saved).unwrap();
        let mut from_memory = Vec::new();
        for (i, &(part_mib, in_flight, sign)) in MEMORY_UPLOADS.iter().enumerate() {
            let options = UploadOptions {
                part_size: part_mib << 20,
                parts_in_flight: in_flight,
                sign_payload: sign,
                ..UploadOptions::default()
            };
            let cpu = cpu_times();
            let took = upload_from_memory(&s3, &saved_bytes, (mib << 8) + i as u64, &options).await;
            from_memory.push((took, cpu_since(&cpu)));
        }
        drop(saved_bytes);
        counter.take();

        rows.push(Row {
            db_mib: mib,
            load: (load_at_start, load_average()),
            from_memory,
            snapshot_mb: snapshot_bytes as f64 / 1e6,
            etcdctl_save,
            backup,
            upload_mb_s: record.mb_per_second,
            timings,
            save_cpu,
            backup_cpu,
            drain,
            drain_sha256,
            requests,
            other_backup,
            other_cpu,
            rss_before_mib,
            rss_peak_mib,
            heap_before_mib,
            heap_peak_mib,
            get,
            download: downloaded.timings,
            get_only,
            verify,
            disk_write,
            restore_3,
            zstd_backup,
            zstd_object_mb: zstd_record.size as f64 / 1e6,
            zstd_rss_peak_mib,
            zstd_get,
        });
    }
    rows
}

async fn etcdctl_save(bin: &EtcdBin, endpoint: &str, path: &Path) {
    let out = tokio::process::Command::new(bin.etcdctl())
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoint}"))
        .args(["snapshot", "save"])
        .arg(path)
        .output()
        .await
        .expect("run etcdctl");
    assert!(
        out.status.success(),
        "etcdctl snapshot save: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Writes `bytes` of incompressible data to `path` in 1 MiB writes, fsyncs, removes it:
/// the disk's sequential write rate as a download to it would see it.
fn disk_sequential_write(path: &Path, bytes: u64) -> Duration {
    let block: Vec<u8> = (0..1u64 << 20)
        .map(|i| (i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56) as u8)
        .collect();
    let started = Instant::now();
    let mut file = std::fs::File::create(path).expect("disk test file");
    let mut left = bytes;
    while left > 0 {
        let n = left.min(block.len() as u64) as usize;
        file.write_all(&block[..n]).expect("disk write");
        left -= n as u64;
    }
    file.sync_all().expect("fsync");
    let took = started.elapsed();
    drop(file);
    std::fs::remove_file(path).expect("remove disk test file");
    took
}

/// sha256 over `bytes` in memory: the digest's share of a download.
fn sha256_rate_mb_s(bytes: usize) -> f64 {
    let data = vec![0x5au8; 1 << 20];
    let started = Instant::now();
    let mut hasher = sha2::Sha256::new();
    for _ in 0..bytes >> 20 {
        hasher.update(&data);
    }
    std::hint::black_box(hasher.finalize());
    bytes as f64 / 1e6 / started.elapsed().as_secs_f64()
}

/// The uploads of the saved snapshot from memory: (part MiB, parts in flight, signed).
const MEMORY_UPLOADS: &[(usize, usize, bool)] =
    &[(5, 3, true), (5, 3, false), (5, 6, true), (16, 3, true)];

/// Uploads `bytes` from memory in 64 KiB chunks (etcd sends 32 KiB ones) with `options`, and
/// deletes the object. Garage stores each block once (content-addressed), so every 1 MiB of
/// the copy uploaded starts with `salt`: no block is one it already has.
async fn upload_from_memory(
    s3: &aws_sdk_s3::Client,
    bytes: &[u8],
    salt: u64,
    options: &UploadOptions,
) -> Duration {
    let mut copy = bytes.to_vec();
    for block in copy.chunks_mut(1 << 20) {
        let n = block.len().min(8);
        block[..n].copy_from_slice(&salt.to_le_bytes()[..n]);
    }
    let copy = bytes::Bytes::from(copy);
    let chunks = (0..copy.len())
        .step_by(64 << 10)
        .map(|at| Ok(copy.slice(at..(at + (64 << 10)).min(copy.len()))))
        .collect::<Vec<_>>();
    let key = format!("bench/memory-{salt}.db");
    let started = Instant::now();
    upload_stream(
        s3,
        BUCKET,
        &key,
        &Default::default(),
        futures::stream::iter(chunks),
        options,
    )
    .await
    .unwrap_or_else(|e| panic!("upload from memory: {e:?}"));
    let took = started.elapsed();
    s3.delete_object()
        .bucket(BUCKET)
        .key(&key)
        .send()
        .await
        .expect("delete");
    took
}

/// `chunks` with the byte at each 1 MiB offset changed: Garage stores each 1 MiB block
/// once (content-addressed), and the backup just uploaded the same snapshot. Only the chunks
/// holding such an offset are copied (one in 32 of etcd's 32 KiB chunks).
fn salted<S, E>(chunks: S, salt: u64) -> impl futures::Stream<Item = Result<bytes::Bytes, E>>
where
    S: futures::Stream<Item = Result<bytes::Bytes, E>>,
{
    let mut offset = 0u64;
    chunks.map_ok(move |chunk| {
        let start = offset;
        offset += chunk.len() as u64;
        let first = start.next_multiple_of(1 << 20);
        if first >= offset {
            return chunk;
        }
        let mut copy = bytes::BytesMut::from(&chunk[..]);
        let mut at = first;
        while at < offset {
            copy[(at - start) as usize] ^= (salt as u8) | 1;
            at += 1 << 20;
        }
        copy.freeze()
    })
}

/// Reads a whole snapshot from etcd and drops it (hashing it when `sha256`): how fast etcd
/// sends, with nothing behind it.
async fn drain_snapshot(admin: &EtcdAdmin, sha256: bool) -> Duration {
    let started = Instant::now();
    let mut stream = admin.snapshot().await.expect("snapshot");
    let mut hasher = sha2::Sha256::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.expect("snapshot chunk");
        if sha256 {
            hasher.update(&chunk);
        }
    }
    std::hint::black_box(hasher.finalize());
    started.elapsed()
}

/// GETs `key` and drops the body: the download alone.
async fn get_only(s3: &aws_sdk_s3::Client, key: &str) {
    let mut body = s3
        .get_object()
        .bucket(BUCKET)
        .key(key)
        .send()
        .await
        .expect("get")
        .body;
    while let Some(chunk) = body.next().await {
        std::hint::black_box(chunk.expect("body"));
    }
}

/// CPU time (user + system) so far of this process (`bench`) and of its children, by
/// command name (`etcd`, `garage`), and of its children that exited (`etcdctl`).
fn cpu_times() -> BTreeMap<String, Duration> {
    let me = std::process::id();
    let ticks = 100.0; // USER_HZ on Linux
    let mut out = BTreeMap::new();
    // (command, parent, own CPU, CPU of its children it waited for)
    let read = |path: &Path| -> Option<(String, u32, Duration, Duration)> {
        let stat = std::fs::read_to_string(path).ok()?;
        let (head, tail) = stat.rsplit_once(')')?;
        let comm = head.split_once('(')?.1.to_owned();
        let fields: Vec<&str> = tail.split_whitespace().collect();
        // After `comm`: state(0) ppid(1) ... utime(11) stime(12) cutime(13) cstime(14).
        let ppid = fields.get(1)?.parse().ok()?;
        let field = |i: usize| fields.get(i)?.parse::<f64>().ok();
        let own = field(11)? + field(12)?;
        let children = field(13)? + field(14)?;
        Some((
            comm,
            ppid,
            Duration::from_secs_f64(own / ticks),
            Duration::from_secs_f64(children / ticks),
        ))
    };
    if let Some((_, _, cpu, exited)) = read(Path::new("/proc/self/stat")) {
        out.insert("bench".to_owned(), cpu);
        // etcdctl, once it has exited and been waited for.
        out.insert("etcdctl (exited child)".to_owned(), exited);
    }
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        if let Some((comm, ppid, cpu, _)) = read(&entry.path().join("stat"))
            && ppid == me
            && comm != "etcdctl"
        {
            *out.entry(comm).or_default() += cpu;
        }
    }
    out
}

/// The 1-minute load average (/proc/loadavg): how busy the shared machine was.
fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .unwrap_or(f64::NAN)
}

/// CPU time by process since `before` (see [`cpu_times`]).
fn cpu_since(before: &BTreeMap<String, Duration>) -> BTreeMap<String, Duration> {
    cpu_times()
        .into_iter()
        .map(|(k, v)| {
            let was = before.get(&k).copied().unwrap_or_default();
            (k, v.saturating_sub(was))
        })
        .collect()
}

/// `partSizeMiB` for the benchmark's backups: `BACKUP_BENCH_PART_MIB`, else the default.
fn part_size_mib() -> Option<i32> {
    std::env::var("BACKUP_BENCH_PART_MIB")
        .ok()
        .and_then(|m| m.parse().ok())
}

/// Returns the heap earlier phases freed to the OS (glibc keeps it otherwise), then resets
/// VmHWM to the current RSS (Linux 4.0+), so the next reading is this phase's peak over what
/// the process really holds.
fn reset_peak_rss() {
    // SAFETY: malloc_trim only walks glibc's own arenas.
    unsafe {
        libc::malloc_trim(0);
    }
    std::fs::write("/proc/self/clear_refs", "5").expect("reset peak RSS");
}

/// A `Vm*` line of /proc/self/status, in KiB.
fn rss_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or_default()
}

fn mb_s(mb: f64, d: Duration) -> f64 {
    mb / d.as_secs_f64()
}

fn print(rows: &[Row]) {
    let options = UploadOptions::with_part_size_mib(part_size_mib());
    println!(
        "\nbackup benchmark: 1-member etcd {}, Garage on loopback (plain HTTP), part {} MiB x {} in flight, {} + CRC32C per part",
        bin_for_minor(3, 5)
            .map(|b| b.version.to_string())
            .unwrap_or_default(),
        options.part_size >> 20,
        options.parts_in_flight,
        if options.sign_payload {
            "payload signed"
        } else {
            "UNSIGNED-PAYLOAD"
        }
    );
    let line = |name: &str, cells: Vec<String>, target: &str| {
        print!("{name:<38}");
        for c in cells {
            print!("{c:>14}");
        }
        println!("   {target}");
    };
    line(
        "values loaded into etcd (MiB)",
        rows.iter().map(|r| r.db_mib.to_string()).collect(),
        "",
    );
    line(
        "load average (1 min) at start | end",
        rows.iter()
            .map(|r| format!("{:.2} | {:.2}", r.load.0, r.load.1))
            .collect(),
        "2 cores, shared with other work",
    );
    line(
        "snapshot (MB)",
        rows.iter()
            .map(|r| format!("{:.0}", r.snapshot_mb))
            .collect(),
        "",
    );
    line(
        "etcdctl snapshot save to disk (s)",
        rows.iter()
            .map(|r| format!("{:.2}", r.etcdctl_save.as_secs_f64()))
            .collect(),
        "",
    );
    line(
        "backup to S3 (s)",
        rows.iter()
            .map(|r| format!("{:.2}", r.backup.as_secs_f64()))
            .collect(),
        "",
    );
    line(
        "backup / etcdctl save",
        rows.iter()
            .map(|r| {
                format!(
                    "{:.2}",
                    r.backup.as_secs_f64() / r.etcdctl_save.as_secs_f64()
                )
            })
            .collect(),
        "target <= 1.15",
    );
    let secs = |name: &str, f: &dyn Fn(&Row) -> Duration| {
        line(
            name,
            rows.iter()
                .map(|r| format!("{:.2}", f(r).as_secs_f64()))
                .collect(),
            "",
        )
    };
    println!("where the backup's time goes (s):");
    secs("  etcd snapshot read and dropped", &|r| r.drain);
    secs("  etcd snapshot read and sha256", &|r| r.drain_sha256);
    secs("  pick member + revision + connect", &|r| {
        r.timings.pick_member + r.timings.revision + r.timings.connect
    });
    secs("  CreateMultipartUpload", &|r| r.timings.upload.create);
    secs("  waiting for the snapshot stream", &|r| {
        r.timings.upload.source
    });
    secs("  sha256 of the stream", &|r| r.timings.upload.hash);
    secs("  copying into part buffers", &|r| r.timings.upload.fill);
    secs("  waiting for a free part slot", &|r| {
        r.timings.upload.slot_wait
    });
    secs("  waiting for the last parts", &|r| r.timings.upload.drain);
    secs("  CompleteMultipartUpload", &|r| r.timings.upload.complete);
    secs("  metadata copy (CopyObject)", &|r| {
        r.timings.upload.metadata
    });
    secs("  UploadPart, all added up", &|r| {
        r.timings.upload.parts_total
    });
    secs("  UploadPart, slowest", &|r| r.timings.upload.slowest_part);
    secs("  SDK signing, all requests added up", &|r| {
        r.requests.signing
    });
    secs("  UploadPart send+answer, added up", &|r| {
        r.requests
            .transmit
            .get("UploadPart")
            .copied()
            .unwrap_or_default()
    });
    let names: std::collections::BTreeSet<&String> = rows
        .iter()
        .flat_map(|r| r.save_cpu.keys().chain(r.backup_cpu.keys()))
        .collect();
    println!("CPU time (s), etcdctl snapshot save | backup:");
    for name in names {
        line(
            &format!("  {name}"),
            rows.iter()
                .map(|r| {
                    let get = |m: &BTreeMap<String, Duration>| {
                        m.get(name).copied().unwrap_or_default().as_secs_f64()
                    };
                    format!("{:.2} | {:.2}", get(&r.save_cpu), get(&r.backup_cpu))
                })
                .collect(),
            "",
        );
    }
    line(
        "  all of them",
        rows.iter()
            .map(|r| {
                let sum = |m: &BTreeMap<String, Duration>| {
                    m.values().map(Duration::as_secs_f64).sum::<f64>()
                };
                format!("{:.2} | {:.2}", sum(&r.save_cpu), sum(&r.backup_cpu))
            })
            .collect(),
        "2 cores here, shared with Garage",
    );
    line(
        if options.sign_payload {
            "same upload, UNSIGNED-PAYLOAD (s)"
        } else {
            "same upload, payload signed (s)"
        },
        rows.iter()
            .map(|r| format!("{:.2}", r.other_backup.as_secs_f64()))
            .collect(),
        if options.sign_payload {
            "signPayload absent (the default)"
        } else {
            "signPayload: true"
        },
    );
    line(
        "  / etcdctl save",
        rows.iter()
            .map(|r| {
                format!(
                    "{:.2}",
                    r.other_backup.as_secs_f64() / r.etcdctl_save.as_secs_f64()
                )
            })
            .collect(),
        "",
    );
    line(
        "  CPU, bench | garage (s)",
        rows.iter()
            .map(|r| {
                let get = |k: &str| {
                    r.other_cpu
                        .get(k)
                        .copied()
                        .unwrap_or_default()
                        .as_secs_f64()
                };
                format!("{:.2} | {:.2}", get("bench"), get("garage"))
            })
            .collect(),
        "",
    );
    println!("the saved snapshot uploaded from memory (unique bytes), s and / etcdctl save:");
    for (i, (part_mib, in_flight, sign)) in MEMORY_UPLOADS.iter().enumerate() {
        line(
            &format!(
                "  {part_mib} MiB x {in_flight}, {}",
                if *sign { "signed" } else { "UNSIGNED-PAYLOAD" }
            ),
            rows.iter()
                .map(|r| {
                    let took = r.from_memory[i].0.as_secs_f64();
                    format!("{took:.2} {:.2}x", took / r.etcdctl_save.as_secs_f64())
                })
                .collect(),
            "",
        );
        line(
            "    CPU, bench | garage (s)",
            rows.iter()
                .map(|r| {
                    let get = |k: &str| {
                        r.from_memory[i]
                            .1
                            .get(k)
                            .copied()
                            .unwrap_or_default()
                            .as_secs_f64()
                    };
                    format!("{:.2} | {:.2}", get("bench"), get("garage"))
                })
                .collect(),
            "",
        );
    }
    line(
        "upload (MB/s)",
        rows.iter()
            .map(|r| format!("{:.0}", r.upload_mb_s))
            .collect(),
        "",
    );
    line(
        "RSS before backup (MiB)",
        rows.iter()
            .map(|r| format!("{:.0}", r.rss_before_mib))
            .collect(),
        "",
    );
    line(
        "peak RSS during backup (MiB)",
        rows.iter()
            .map(|r| format!("{:.0}", r.rss_peak_mib))
            .collect(),
        "target <= 64, flat",
    );
    line(
        "live heap before | peak (MiB)",
        rows.iter()
            .map(|r| format!("{:.0} | {:.0}", r.heap_before_mib, r.heap_peak_mib))
            .collect(),
        "what the backup allocates",
    );
    line(
        "part data buffered, bound (MiB)",
        rows.iter()
            .map(|_| format!("{}", options.bytes_held() >> 20))
            .collect(),
        "(parts in flight + 1) x part size",
    );
    line(
        "S3 requests per backup",
        rows.iter()
            .map(|r| r.requests.count.values().sum::<u64>().to_string())
            .collect(),
        "",
    );
    let ops: std::collections::BTreeSet<&str> = rows
        .iter()
        .flat_map(|r| r.requests.count.keys().copied())
        .collect();
    for op in ops {
        line(
            &format!("  {op}"),
            rows.iter()
                .map(|r| r.requests.count.get(op).copied().unwrap_or(0).to_string())
                .collect(),
            "",
        );
    }
    line(
        "restore GET + sha256 + fsync (MB/s)",
        rows.iter()
            .map(|r| format!("{:.0}", mb_s(r.snapshot_mb, r.get)))
            .collect(),
        "",
    );
    println!(
        "where the restore download's time goes (s), {} MiB ranges x {} in flight:",
        DownloadOptions::default().range_size >> 20,
        DownloadOptions::default().ranges_in_flight
    );
    secs("  first response", &|r| r.download.first_response);
    secs("  waiting for the next range (GETs)", &|r| {
        r.download.get_wait
    });
    secs("  waiting for the hash or file queue", &|r| {
        r.download.queue_wait
    });
    secs("  sha256 (own thread)", &|r| r.download.hash);
    secs("  file writes (own thread)", &|r| r.download.write);
    secs("  fsync", &|r| r.download.fsync);
    line(
        "restore GET only, one stream, body dropped (MB/s)",
        rows.iter()
            .map(|r| format!("{:.0}", mb_s(r.snapshot_mb, r.get_only)))
            .collect(),
        "",
    );
    line(
        "restore snapshot status (s)",
        rows.iter()
            .map(|r| format!("{:.2}", r.verify.as_secs_f64()))
            .collect(),
        "",
    );
    line(
        "restore download+verify (MB/s)",
        rows.iter()
            .map(|r| format!("{:.0}", mb_s(r.snapshot_mb, r.get + r.verify)))
            .collect(),
        "target >= disk write",
    );
    line(
        "disk sequential write + fsync (MB/s)",
        rows.iter()
            .map(|r| format!("{:.0}", mb_s(r.snapshot_mb, r.disk_write)))
            .collect(),
        "",
    );
    line(
        "sha256 in memory (MB/s)",
        rows.iter()
            .map(|_| format!("{:.0}", sha256_rate_mb_s(256 << 20)))
            .collect(),
        "",
    );
    line(
        "zstd backup to S3 (s)",
        rows.iter()
            .map(|r| format!("{:.2}", r.zstd_backup.as_secs_f64()))
            .collect(),
        "",
    );
    line(
        "zstd ratio (snapshot / object)",
        rows.iter()
            .map(|r| format!("{:.2}", r.snapshot_mb / r.zstd_object_mb))
            .collect(),
        "random values: ~1 expected",
    );
    line(
        "zstd backup throughput (snapshot MB/s)",
        rows.iter()
            .map(|r| format!("{:.0}", mb_s(r.snapshot_mb, r.zstd_backup)))
            .collect(),
        "",
    );
    line(
        "zstd peak RSS during backup (MiB)",
        rows.iter()
            .map(|r| format!("{:.0}", r.zstd_rss_peak_mib))
            .collect(),
        "",
    );
    line(
        "zstd GET + sha256 + decompress + fsync (MB/s)",
        rows.iter()
            .map(|r| format!("{:.0}", mb_s(r.snapshot_mb, r.zstd_get)))
            .collect(),
        "snapshot MB per second",
    );
    line(
        "restore 3 members from the file (s)",
        rows.iter()
            .map(|r| format!("{:.2}", r.restore_3.as_secs_f64()))
            .collect(),
        "",
    );
}

/// The EtcdBackup the benchmark's backups belong to.
fn bench_owner() -> Owner<'static> {
    Owner {
        namespace: "default",
        cluster: "bench",
        backup: "bench",
        cluster_uid: None,
    }
}
