//! Shared by `tests/backup.rs`, `tests/member_restore.rs` and `benches/backup.rs`:
//! deterministic data to write into etcd and read back as digests, and a new cluster started
//! on restored data dirs.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use etcd_client::{ConnectOptions, GetOptions};
use etcd_operator::backup::restore_data_dir;
use etcd_operator::etcd::EtcdAdmin;
use etcd_operator::testing::{EtcdBin, MemberAddr, free_port, wait_for};
use futures::StreamExt;
use sha2::{Digest, Sha256};

/// How long a restored cluster may take to become healthy.
const HEALTHY_WITHIN: Duration = Duration::from_secs(60);

/// The key of item `i` under `prefix`; zero-padded so keys sort like numbers.
pub fn key_for(prefix: &str, i: u64) -> String {
    format!("{prefix}/{i:08}")
}

/// `len` pseudo-random bytes determined by `i` (SplitMix64): distinct, incompressible,
/// and reproducible, so the reader can check values without keeping them.
pub fn value_for(i: u64, len: usize) -> Vec<u8> {
    let mut state = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        out.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Writes `count` keys under `prefix` with `value_len`-byte values, `concurrency` puts at a
/// time. Returns the bytes of values written.
pub async fn fill(
    client: &etcd_client::Client,
    prefix: &str,
    count: u64,
    value_len: usize,
    concurrency: usize,
) -> u64 {
    fill_range(client, prefix, 0..count, value_len, concurrency).await
}

/// [`fill`] for items `range` only (to grow a database in steps).
pub async fn fill_range(
    client: &etcd_client::Client,
    prefix: &str,
    range: std::ops::Range<u64>,
    value_len: usize,
    concurrency: usize,
) -> u64 {
    let count = range.end.saturating_sub(range.start);
    futures::stream::iter(range)
        .map(|i| {
            let mut kv = client.kv_client();
            async move {
                kv.put(key_for(prefix, i), value_for(i, value_len), None)
                    .await
                    .unwrap_or_else(|e| panic!("put {i}: {e}"));
            }
        })
        .buffer_unordered(concurrency)
        .collect::<()>()
        .await;
    count * value_len as u64
}

/// Every key in the cluster with the sha256 of its value, read in pages of `page` keys
/// (values are hashed as they arrive, so memory stays at one page).
pub async fn digests(client: &etcd_client::Client, page: i64) -> BTreeMap<Vec<u8>, [u8; 32]> {
    let mut kv = client.kv_client();
    let mut all = BTreeMap::new();
    let mut start = vec![0u8];
    loop {
        let resp = kv
            .get(
                start.clone(),
                Some(GetOptions::new().with_from_key().with_limit(page)),
            )
            .await
            .expect("range read");
        for item in resp.kvs() {
            all.insert(item.key().to_vec(), Sha256::digest(item.value()).into());
        }
        match resp.kvs().last() {
            Some(last) if resp.more() => {
                start = last.key().to_vec();
                start.push(0);
            }
            _ => return all,
        }
    }
}

/// The digests `fill(prefix, count, value_len)` must have produced.
pub fn expected_digests(prefix: &str, count: u64, value_len: usize) -> BTreeMap<Vec<u8>, [u8; 32]> {
    (0..count)
        .map(|i| {
            (
                key_for(prefix, i).into_bytes(),
                Sha256::digest(value_for(i, value_len)).into(),
            )
        })
        .collect()
}

/// An etcd client for `urls` that accepts large responses.
pub async fn connect(urls: &[String]) -> etcd_client::Client {
    let options = ConnectOptions::new().with_connect_timeout(Duration::from_secs(3));
    etcd_client::Client::connect(urls, Some(options))
        .await
        .expect("etcd client")
}

/// sha256 of a file, as lowercase hex.
pub fn sha256_file(path: &Path) -> String {
    let mut file = std::fs::File::open(path).expect("open");
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher).expect("read");
    hex::encode(hasher.finalize())
}

/// A new cluster of plain etcd processes started on data dirs restored from one snapshot
/// with our `restore_data_dir`, killed on drop.
pub struct RestoredCluster {
    pub members: Vec<MemberAddr>,
    pub data_dirs: Vec<PathBuf>,
    children: Vec<tokio::process::Child>,
    logs: Vec<PathBuf>,
}

impl RestoredCluster {
    /// Restores `snapshot` into `n` data dirs under `dir` with `bin`'s tools (timed by the
    /// caller), without starting anything.
    pub async fn restore(bin: &EtcdBin, snapshot: &Path, n: usize, dir: &Path) -> Self {
        let port = || free_port().expect("free port");
        let members: Vec<MemberAddr> = (0..n)
            .map(|i| MemberAddr {
                name: format!("r{i}"),
                client_url: format!("http://127.0.0.1:{}", port()),
                peer_url: format!("http://127.0.0.1:{}", port()),
            })
            .collect();
        let initial: Vec<(String, String)> = members
            .iter()
            .map(|m| (m.name.clone(), m.peer_url.clone()))
            .collect();
        let mut data_dirs = Vec::new();
        for m in &members {
            let data_dir = dir.join(format!("{}.data", m.name));
            restore_data_dir(
                &bin.dir,
                snapshot,
                &m.name,
                &initial,
                &m.peer_url,
                "restored",
                &data_dir,
            )
            .await
            .unwrap_or_else(|e| panic!("restore {}: {e}", m.name));
            data_dirs.push(data_dir);
        }
        Self {
            members,
            data_dirs,
            children: Vec::new(),
            logs: Vec::new(),
        }
    }

    /// Members whose data dirs someone else restored (with cluster token `restored`).
    pub fn from_data_dirs(members: Vec<MemberAddr>, data_dirs: Vec<PathBuf>) -> Self {
        Self {
            members,
            data_dirs,
            children: Vec::new(),
            logs: Vec::new(),
        }
    }

    /// Starts every member on its restored data dir with `--initial-cluster-state new` and
    /// waits until all serve a linearizable read.
    pub async fn start(&mut self, bin: &EtcdBin, extra_args: &[&str]) {
        let initial = self
            .members
            .iter()
            .map(MemberAddr::initial_cluster_entry)
            .collect::<Vec<_>>()
            .join(",");
        for (m, data_dir) in self.members.iter().zip(&self.data_dirs) {
            let log_path = data_dir.with_extension("log");
            let log = std::fs::File::create(&log_path).expect("log file");
            let mut cmd = tokio::process::Command::new(bin.etcd());
            cmd.arg(format!("--name={}", m.name))
                .arg(format!("--data-dir={}", data_dir.display()))
                .arg(format!("--listen-client-urls={}", m.client_url))
                .arg(format!("--advertise-client-urls={}", m.client_url))
                .arg(format!("--listen-peer-urls={}", m.peer_url))
                .arg(format!("--initial-advertise-peer-urls={}", m.peer_url))
                .arg(format!("--initial-cluster={initial}"))
                .arg("--initial-cluster-token=restored")
                .arg("--initial-cluster-state=new")
                .args(extra_args)
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("log"))
                .stderr(log)
                .kill_on_drop(true);
            for (key, _) in std::env::vars_os() {
                if key.to_string_lossy().starts_with("ETCD_") {
                    cmd.env_remove(key);
                }
            }
            self.children.push(cmd.spawn().expect("spawn etcd"));
            self.logs.push(log_path);
        }
        let urls = self.client_urls();
        let admin = EtcdAdmin::connect(urls.clone(), None).await.expect("admin");
        let healthy = wait_for(HEALTHY_WITHIN, "restored members healthy", || async {
            for url in &urls {
                admin.health(url).await?;
            }
            Ok::<_, etcd_operator::etcd::Error>(())
        })
        .await;
        if let Err(e) = healthy {
            for log in &self.logs {
                let text = std::fs::read_to_string(log).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(10).collect();
                eprintln!(
                    "--- {}:\n{}",
                    log.display(),
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                );
            }
            panic!("{e}");
        }
    }

    pub fn client_urls(&self) -> Vec<String> {
        self.members.iter().map(|m| m.client_url.clone()).collect()
    }
}

impl Drop for RestoredCluster {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.start_kill();
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        for child in &mut self.children {
            while matches!(child.try_wait(), Ok(None)) && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }
}
