//! Load for TLS tests and benchmarks: a writer that writes through the application client
//! certificate the way an application would (reconnecting with the files as they are now
//! when asked or when a put fails), and a quorum sampler. Both read the certificate files
//! again on each connection, so they follow rotations.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use super::converged::{client_tls_in, connect_options};
use crate::etcd::EtcdAdmin;

/// Writes `w/<seq>` until stopped; records every acknowledged key and the longest time
/// between two acknowledged puts.
pub struct Writer {
    stop: Arc<AtomicBool>,
    /// Raise to make the writer connect again (a new handshake with the files as they are).
    pub reconnect: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<String>>>,
    longest_ns: Arc<AtomicU64>,
    /// Connects that failed and were tried again (e.g. read a key and certificate that did
    /// not match while the operator rewrote them).
    retried_connects: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

/// What a stopped [`Writer`] did.
#[derive(Debug)]
pub struct Written {
    pub acked: Vec<String>,
    pub longest_stall: Duration,
    pub retried_connects: u64,
}

/// Where the writer and the sampler find the cluster's members: asked again on every
/// connection, so they follow members whose client URLs change scheme (a move to TLS).
pub type Endpoints = Arc<dyn Fn() -> Vec<String> + Send + Sync>;

/// The endpoints one etcd client can dial, and how: the `https://` ones with the client
/// certificate in `dir` when there are any (etcd-client takes one scheme per client), else
/// the `http://` ones without.
fn dialable(urls: Vec<String>, dir: &Path) -> (Vec<String>, Option<crate::etcd::TlsConfig>) {
    let (tls, plain): (Vec<String>, Vec<String>) =
        urls.into_iter().partition(|u| u.starts_with("https://"));
    if tls.is_empty() {
        (plain, None)
    } else {
        (tls, client_tls_in(dir))
    }
}

impl Writer {
    /// Starts writing to `urls` with the client certificate in `dir`.
    pub fn start(urls: Vec<String>, dir: PathBuf) -> Self {
        Self::following(Arc::new(move || urls.clone()), dir)
    }

    /// Starts writing to the members `endpoints` names when it connects (again after every
    /// failed put), with the client certificate in `dir` for the `https://` ones.
    pub fn following(endpoints: Endpoints, dir: PathBuf) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let reconnect = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(Mutex::new(Vec::new()));
        let longest_ns = Arc::new(AtomicU64::new(0));
        let retried_connects = Arc::new(AtomicU64::new(0));
        let (s, r, a, l, t) = (
            stop.clone(),
            reconnect.clone(),
            acked.clone(),
            longest_ns.clone(),
            retried_connects.clone(),
        );
        let task = tokio::spawn(async move {
            let connect = || async {
                let deadline = Instant::now() + Duration::from_secs(60);
                let mut tries = 0;
                loop {
                    let (urls, tls) = dialable(endpoints(), &dir);
                    match etcd_client::Client::connect(urls, Some(connect_options(tls.as_ref())))
                        .await
                    {
                        Ok(c) => return (c, tries),
                        Err(e) if Instant::now() < deadline => {
                            tries += 1;
                            eprintln!("writer: connect failed ({e}), reading the files again");
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                        Err(e) => panic!("writer: no connection for 60 s: {e}"),
                    }
                }
            };
            let (mut client, _) = connect().await;
            let (mut seq, mut last_ok) = (0u64, Instant::now());
            while !s.load(Ordering::Relaxed) {
                if r.swap(false, Ordering::Relaxed) {
                    let (c, tries) = connect().await;
                    client = c;
                    t.fetch_add(tries, Ordering::Relaxed);
                }
                seq += 1;
                let key = format!("w/{seq:08}");
                let put = client.put(key.clone(), "x", None);
                if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_secs(2), put).await {
                    let now = Instant::now();
                    let gap = u64::try_from((now - last_ok).as_nanos()).unwrap_or(u64::MAX);
                    l.fetch_max(gap, Ordering::Relaxed);
                    last_ok = now;
                    a.lock().unwrap_or_else(PoisonError::into_inner).push(key);
                } else {
                    // As an application would: connect again before the next put.
                    r.store(true, Ordering::Relaxed);
                }
            }
        });
        Self {
            stop,
            reconnect,
            acked,
            longest_ns,
            retried_connects,
            task,
        }
    }

    /// Acknowledged puts so far.
    pub fn acked_count(&self) -> usize {
        self.acked
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Stops writing and says what was written.
    ///
    /// # Panics
    /// When the writer task panicked (it could not connect for 60 s).
    pub async fn stop(self) -> Written {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.expect("writer task");
        let acked = std::mem::take(&mut *self.acked.lock().unwrap_or_else(PoisonError::into_inner));
        Written {
            acked,
            longest_stall: Duration::from_nanos(self.longest_ns.load(Ordering::Relaxed)),
            retried_connects: self.retried_connects.load(Ordering::Relaxed),
        }
    }
}

/// Samples quorum every 100 ms until `stop`: a majority of `urls` answers a health check
/// (a linearizable read) through the client certificate in `dir`, read again each time.
/// Returns (samples, samples without quorum).
pub fn sample_quorum(
    urls: Vec<String>,
    dir: PathBuf,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<(u64, u64)> {
    sample_quorum_following(Arc::new(move || urls.clone()), dir, stop)
}

/// [`sample_quorum`] of the members `endpoints` names at each sample (each dialled with
/// its own scheme: `https://` ones through the client certificate in `dir`).
pub fn sample_quorum_following(
    endpoints: Endpoints,
    dir: PathBuf,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<(u64, u64)> {
    tokio::spawn(async move {
        let (mut samples, mut lost) = (0u64, 0u64);
        while !stop.load(Ordering::Relaxed) {
            let urls = endpoints();
            let ok = match EtcdAdmin::connect(urls.clone(), client_tls_in(&dir)).await {
                Ok(admin) => {
                    let mut healthy = 0;
                    for url in &urls {
                        if admin.health(url).await.is_ok() {
                            healthy += 1;
                        }
                    }
                    healthy * 2 > urls.len()
                }
                Err(_) => false,
            };
            samples += 1;
            if !ok {
                lost += 1;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        (samples, lost)
    })
}

/// The acknowledged keys of `written` that `urls` no longer has (read through the client
/// certificate in `dir`).
///
/// # Panics
/// When the cluster cannot be read.
pub async fn missing_writes(urls: &[String], dir: &Path, written: &Written) -> Vec<String> {
    let (urls, tls) = dialable(urls.to_vec(), dir);
    let mut c = etcd_client::Client::connect(urls, Some(connect_options(tls.as_ref())))
        .await
        .expect("connect to read back");
    let stored: BTreeSet<String> = c
        .get(
            "w/",
            Some(
                etcd_client::GetOptions::new()
                    .with_prefix()
                    .with_keys_only(),
            ),
        )
        .await
        .expect("read back")
        .kvs()
        .iter()
        .filter_map(|kv| kv.key_str().ok().map(str::to_string))
        .collect();
    written
        .acked
        .iter()
        .filter(|k| !stored.contains(*k))
        .cloned()
        .collect()
}

/// A writer and a quorum sampler (100 ms) on one cluster, the load rotations and moves are
/// measured under.
pub struct Load {
    writer: Writer,
    sampler: tokio::task::JoinHandle<(u64, u64)>,
    stop: Arc<AtomicBool>,
}

/// What a [`Load`] saw.
#[derive(Debug)]
pub struct LoadSeen {
    pub written: Written,
    /// Acknowledged writes not readable afterwards.
    pub missing: Vec<String>,
    pub quorum_samples: u64,
    pub samples_without_quorum: u64,
}

impl Load {
    /// Starts writing to the members `endpoints` names (with the client certificate in
    /// `dir` for `https://` ones), waits (90 s) for 100 acknowledged puts, then starts the
    /// sampler.
    ///
    /// # Panics
    /// When the writer does not get 100 puts acknowledged in time.
    pub async fn start(endpoints: Endpoints, dir: PathBuf) -> Self {
        let writer = Writer::following(endpoints.clone(), dir.clone());
        super::wait::wait_for(Duration::from_secs(90), "the writer writes", || async {
            match writer.acked_count() {
                n if n >= 100 => Ok(()),
                n => Err(n),
            }
        })
        .await
        .expect("the writer writes");
        let stop = Arc::new(AtomicBool::new(false));
        let sampler = sample_quorum_following(endpoints, dir, stop.clone());
        Self {
            writer,
            sampler,
            stop,
        }
    }

    /// Stops both and reads the acknowledged keys back from `urls`.
    ///
    /// # Panics
    /// When a task panicked or the cluster cannot be read.
    pub async fn finish(self, urls: &[String], dir: &Path) -> LoadSeen {
        self.stop.store(true, Ordering::Relaxed);
        let (quorum_samples, samples_without_quorum) = self.sampler.await.expect("sampler");
        let written = self.writer.stop().await;
        let missing = missing_writes(urls, dir, &written).await;
        LoadSeen {
            written,
            missing,
            quorum_samples,
            samples_without_quorum,
        }
    }
}

impl LoadSeen {
    /// The writer's and the sampler's numbers, for a summary line.
    pub fn summary(&self) -> String {
        format!(
            "writer: {} acknowledged puts, longest stall {:.2} s, {} lost, {} connects retried; quorum samples {}, without quorum {}",
            self.written.acked.len(),
            self.written.longest_stall.as_secs_f64(),
            self.missing.len(),
            self.written.retried_connects,
            self.quorum_samples,
            self.samples_without_quorum,
        )
    }

    /// Asserts what every rotation or move under load must show: at least 100 puts
    /// acknowledged, none lost, quorum in every sample.
    ///
    /// # Panics
    /// When one does not hold.
    pub fn assert_nothing_lost(&self) {
        assert!(self.written.acked.len() >= 100, "{}", self.summary());
        assert!(
            self.missing.is_empty(),
            "acknowledged writes lost: {:?}",
            self.missing
        );
        assert_eq!(
            self.samples_without_quorum, 0,
            "of {} samples",
            self.quorum_samples
        );
    }
}

/// What an [`Overwriter`] saw, once stopped.
#[derive(Debug, Default)]
pub struct Overwritten {
    /// Key -> sequence number of the last write etcd acknowledged.
    pub acked: std::collections::HashMap<String, u64>,
    pub acked_count: u64,
    /// Puts refused with `database space exceeded`.
    pub no_space_errors: u64,
    pub other_errors: u64,
    pub longest_stall: Duration,
}

/// Overwrites `keys` keys under `prefix` with `value_bytes`-byte values in a loop until
/// stopped (the NOSPACE and defragmentation load): each value starts with the write's
/// 12-digit sequence number, so a read afterwards tells which write a key holds. A refused
/// put backs off 20 ms rather than spin on an alarm.
pub struct Overwriter {
    stop: Arc<AtomicBool>,
    acked_count: Arc<AtomicU64>,
    seen: Arc<Mutex<Overwritten>>,
    task: tokio::task::JoinHandle<()>,
    prefix: String,
}

impl Overwriter {
    /// Starts writing through `client`.
    pub fn start(
        mut client: etcd_client::Client,
        prefix: &str,
        keys: u64,
        value_bytes: usize,
    ) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let acked_count = Arc::new(AtomicU64::new(0));
        let seen = Arc::new(Mutex::new(Overwritten::default()));
        let (s, a, sn, p) = (
            stop.clone(),
            acked_count.clone(),
            seen.clone(),
            prefix.to_string(),
        );
        let task = tokio::spawn(async move {
            let mut seq = 0u64;
            let mut last_ok = Instant::now();
            while !s.load(Ordering::Relaxed) {
                seq += 1;
                let key = format!("{p}/{:04}", seq % keys);
                let mut value = format!("{seq:012}");
                value.push_str(&"x".repeat(value_bytes.saturating_sub(12)));
                let put = client.put(key.clone(), value, None);
                match tokio::time::timeout(Duration::from_secs(5), put).await {
                    Ok(Ok(_)) => {
                        let now = Instant::now();
                        let mut seen = sn.lock().unwrap_or_else(PoisonError::into_inner);
                        seen.longest_stall = seen.longest_stall.max(now - last_ok);
                        seen.acked.insert(key, seq);
                        last_ok = now;
                        a.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(Err(e)) if e.to_string().contains("database space exceeded") => {
                        sn.lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .no_space_errors += 1;
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    _ => {
                        sn.lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .other_errors += 1;
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            }
        });
        Self {
            stop,
            acked_count,
            seen,
            task,
            prefix: prefix.to_string(),
        }
    }

    /// Acknowledged puts so far.
    pub fn acked(&self) -> u64 {
        self.acked_count.load(Ordering::Relaxed)
    }

    /// Puts refused with NOSPACE so far.
    pub fn no_space_errors(&self) -> u64 {
        self.seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .no_space_errors
    }

    /// Waits (60 s) until `n` puts were acknowledged.
    ///
    /// # Panics
    /// When the writer is stuck below `n`.
    pub async fn wait_for_acks(&self, n: u64) {
        super::wait::wait_for(Duration::from_secs(60), "acknowledged writes", || async {
            match self.acked() {
                got if got >= n => Ok(()),
                got => Err(format!("{got} of {n}")),
            }
        })
        .await
        .expect("the writer writes");
    }

    /// Stops writing and checks every acknowledged write against what `client` reads: each
    /// key holds the last acknowledged write or a later one.
    ///
    /// # Panics
    /// When an acknowledged write is lost, or the read fails.
    pub async fn stop_and_verify(self, mut client: etcd_client::Client) -> Overwritten {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.expect("writer task");
        let mut seen =
            std::mem::take(&mut *self.seen.lock().unwrap_or_else(PoisonError::into_inner));
        seen.acked_count = self.acked_count.load(Ordering::Relaxed);
        let stored: std::collections::HashMap<String, u64> = client
            .get(
                format!("{}/", self.prefix),
                Some(etcd_client::GetOptions::new().with_prefix()),
            )
            .await
            .expect("read back")
            .kvs()
            .iter()
            .map(|kv| {
                let v = kv.value_str().expect("utf-8");
                (
                    kv.key_str().expect("utf-8").to_string(),
                    v[..12].parse().expect("sequence number"),
                )
            })
            .collect();
        for (key, seq) in &seen.acked {
            let got = stored.get(key).copied();
            assert!(
                got.is_some_and(|g| g >= *seq),
                "{key}: acknowledged write {seq} lost, etcd holds {got:?}"
            );
        }
        seen
    }
}
