//! Benchmark of the backup engine on real etcd and Garage: backup wall time against
//! `etcdctl snapshot save` to local disk on the same data, upload throughput, restore wall
//! time, and this process's peak RSS while backing up, at two database sizes (the larger
//! ≥ 1 GiB) to show memory does not grow with the snapshot.
//!
//! Run with `cargo bench --bench backup` (needs `ETCD_BIN_DIR` and Garage, see
//! `scripts/install-test-deps`). `BACKUP_BENCH_SIZES_MIB=256,1100` overrides the sizes.

#[path = "../tests/support/mod.rs"]
mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use etcd_operator::api::backup::S3Destination;
use etcd_operator::backup::{Owner, UploadOptions, fetch_snapshot, take_backup};
use etcd_operator::testing::garage::{BUCKET, TestGarage};
use etcd_operator::testing::{EtcdBin, TestCluster, bin_for_minor};
use support::{RestoredCluster, connect, fill_range};

/// Values of 512 KiB: few puts per GiB, well under etcd's 1.5 MiB request limit.
const VALUE: usize = 512 << 10;

struct Row {
    db_mib: u64,
    snapshot_mb: f64,
    etcdctl_save: Duration,
    backup: Duration,
    upload_mb_s: f64,
    download: Duration,
    restore_3: Duration,
    rss_before_mib: f64,
    rss_peak_mib: f64,
}

fn main() {
    let sizes: Vec<u64> = std::env::var("BACKUP_BENCH_SIZES_MIB")
        .ok()
        .map(|s| s.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![256, 1100]);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
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
    let kv = connect(&cluster.client_urls()).await;
    let s3 = garage.client().await;
    let admin = cluster.admin().await.unwrap();
    let destination = S3Destination {
        bucket: BUCKET.into(),
        prefix: Some("bench".into()),
        connection: garage.connection(),
        part_size_mib: None,
    };
    let work = tempfile::tempdir().expect("temp dir");
    let mut written_keys = 0u64;
    let mut rows = Vec::new();
    for &mib in sizes {
        let want_keys = (mib << 20) / VALUE as u64;
        if want_keys > written_keys {
            let started = Instant::now();
            fill_range(&kv, "bench", written_keys..want_keys, VALUE, 16).await;
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
        let snapshot_mb = std::fs::metadata(&saved).unwrap().len() as f64 / 1e6;
        std::fs::remove_file(&saved).unwrap();

        reset_peak_rss();
        let rss_before_mib = rss_kib("VmRSS") as f64 / 1024.0;
        let started = Instant::now();
        let record = take_backup(&admin, None, &s3, &destination, &bench_owner())
            .await
            .unwrap_or_else(|e| panic!("backup: {e:?}"));
        let backup = started.elapsed();
        let rss_peak_mib = rss_kib("VmHWM") as f64 / 1024.0;

        let snapshot = work.path().join("restore.db");
        let started = Instant::now();
        fetch_snapshot(
            &s3,
            BUCKET,
            &record.key,
            Some(&record.sha256),
            &snapshot,
            &bin.dir,
            &bin.version,
        )
        .await
        .unwrap();
        let download = started.elapsed();
        let dir = work.path().join(format!("restore-{mib}"));
        std::fs::create_dir(&dir).unwrap();
        let started = Instant::now();
        let restored = RestoredCluster::restore(&bin, &snapshot, 3, &dir).await;
        let restore_3 = started.elapsed();
        drop(restored);
        std::fs::remove_dir_all(&dir).unwrap();
        std::fs::remove_file(&snapshot).unwrap();

        rows.push(Row {
            db_mib: mib,
            snapshot_mb,
            etcdctl_save,
            backup,
            upload_mb_s: record.mb_per_second,
            download,
            restore_3,
            rss_before_mib,
            rss_peak_mib,
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

fn print(rows: &[Row]) {
    let options = UploadOptions::default();
    println!(
        "\nbackup benchmark: 1-member etcd {}, Garage on loopback, part {} MiB x {} in flight",
        bin_for_minor(3, 5)
            .map(|b| b.version.to_string())
            .unwrap_or_default(),
        options.part_size >> 20,
        options.parts_in_flight
    );
    println!(
        "{:>8} {:>9} {:>12} {:>10} {:>7} {:>10} {:>10} {:>13} {:>11} {:>10}",
        "db MiB",
        "snap MB",
        "etcdctl s",
        "backup s",
        "ratio",
        "upload MB/s",
        "download s",
        "restore x3 s",
        "RSS before",
        "RSS peak"
    );
    for r in rows {
        println!(
            "{:>8} {:>9.0} {:>12.2} {:>10.2} {:>7.2} {:>10.0} {:>10.2} {:>13.2} {:>8.0} MiB {:>6.0} MiB",
            r.db_mib,
            r.snapshot_mb,
            r.etcdctl_save.as_secs_f64(),
            r.backup.as_secs_f64(),
            r.backup.as_secs_f64() / r.etcdctl_save.as_secs_f64(),
            r.upload_mb_s,
            r.download.as_secs_f64(),
            r.restore_3.as_secs_f64(),
            r.rss_before_mib,
            r.rss_peak_mib,
        );
    }
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
