//! Benchmark of the backup engine on real etcd and Garage (issue 11's performance table), at
//! two snapshot sizes (about 280 MB and 1.2 GB), side by side:
//!
//! - backup wall time against `etcdctl snapshot save` to local disk of the same data
//!   (target ≤ 1.15×);
//! - this process's peak RSS while it streams a backup (target ≤ 64 MiB, flat in size);
//! - the S3 requests one backup makes, by operation, and the part data it may buffer;
//! - restore download+verify (GET, sha256, fsync, then `snapshot status`) against the
//!   disk's sequential write rate (fsynced), and where the time goes;
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

use aws_sdk_s3::config::interceptors::BeforeTransmitInterceptorContextRef;
use aws_sdk_s3::config::{ConfigBag, Intercept, RuntimeComponents};
use etcd_operator::api::backup::{Compression, S3Destination};
use etcd_operator::backup::{Owner, UploadOptions, download, snapshot_status, take_backup};
use etcd_operator::testing::garage::{BUCKET, TestGarage};
use etcd_operator::testing::{EtcdBin, TestCluster, bin_for_minor};
use sha2::Digest;
use support::{RestoredCluster, connect, fill_range};

/// Values of 512 KiB: few puts per GiB, well under etcd's 1.5 MiB request limit.
const VALUE: usize = 512 << 10;

/// Counts the HTTP requests an S3 client sends (retries included), by S3 operation.
#[derive(Clone, Debug, Default)]
struct RequestCounter(Arc<Mutex<BTreeMap<&'static str, u64>>>);

impl RequestCounter {
    fn take(&self) -> BTreeMap<&'static str, u64> {
        std::mem::take(&mut self.0.lock().unwrap())
    }
}

impl Intercept for RequestCounter {
    fn name(&self) -> &'static str {
        "RequestCounter"
    }

    fn read_before_transmit(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let request = context.request();
        let uri = request.uri();
        let query = uri.split_once('?').map_or("", |(_, q)| q);
        let has = |param: &str| {
            query
                .split('&')
                .any(|p| p == param || p.starts_with(&format!("{param}=")))
        };
        let copy = request.headers().get("x-amz-copy-source").is_some();
        let op = match (request.method(), copy) {
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
        };
        *self.0.lock().unwrap().entry(op).or_default() += 1;
        Ok(())
    }
}

struct Row {
    db_mib: u64,
    snapshot_mb: f64,
    etcdctl_save: Duration,
    backup: Duration,
    upload_mb_s: f64,
    requests: BTreeMap<&'static str, u64>,
    rss_before_mib: f64,
    rss_peak_mib: f64,
    get: Duration,
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

        let saved = work.path().join("etcdctl.db");
        let started = Instant::now();
        etcdctl_save(&bin, cluster.client_url(0).unwrap(), &saved).await;
        let etcdctl_save = started.elapsed();
        let snapshot_bytes = std::fs::metadata(&saved).unwrap().len();
        std::fs::remove_file(&saved).unwrap();

        counter.take();
        reset_peak_rss();
        let rss_before_mib = rss_kib("VmRSS") as f64 / 1024.0;
        let started = Instant::now();
        let record = take_backup(&admin, None, &s3, &destination, &bench_owner())
            .await
            .unwrap_or_else(|e| panic!("backup: {e:?}"));
        let backup = started.elapsed();
        let rss_peak_mib = rss_kib("VmHWM") as f64 / 1024.0;
        let requests = counter.take();

        let snapshot = work.path().join("restore.db");
        let started = Instant::now();
        download(
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

        rows.push(Row {
            db_mib: mib,
            snapshot_mb: snapshot_bytes as f64 / 1e6,
            etcdctl_save,
            backup,
            upload_mb_s: record.mb_per_second,
            requests,
            rss_before_mib,
            rss_peak_mib,
            get,
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

/// `partSizeMiB` for the benchmark's backups: `BACKUP_BENCH_PART_MIB`, else the default.
fn part_size_mib() -> Option<i32> {
    std::env::var("BACKUP_BENCH_PART_MIB")
        .ok()
        .and_then(|m| m.parse().ok())
}

/// Resets VmHWM to the current RSS (Linux 4.0+), so the next reading is this phase's peak.
fn reset_peak_rss() {
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
        "\nbackup benchmark: 1-member etcd {}, Garage on loopback, part {} MiB x {} in flight",
        bin_for_minor(3, 5)
            .map(|b| b.version.to_string())
            .unwrap_or_default(),
        options.part_size >> 20,
        options.parts_in_flight
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
        "part data buffered, bound (MiB)",
        rows.iter()
            .map(|_| format!("{}", options.bytes_held() >> 20))
            .collect(),
        "(parts in flight + 1) x part size",
    );
    line(
        "S3 requests per backup",
        rows.iter()
            .map(|r| r.requests.values().sum::<u64>().to_string())
            .collect(),
        "",
    );
    let ops: std::collections::BTreeSet<&str> = rows
        .iter()
        .flat_map(|r| r.requests.keys().copied())
        .collect();
    for op in ops {
        line(
            &format!("  {op}"),
            rows.iter()
                .map(|r| r.requests.get(op).copied().unwrap_or(0).to_string())
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
