//! Benchmark of TLS on the local runtime against real etcd (not a test: it prints numbers).
//! Run with `cargo bench --bench tls`.
//!
//! Prints, for a 3-member etcd 3.5 cluster:
//! - leaf rotation on request (`spec.tls.rotate`), five times, under a writer that writes
//!   through the application client certificate and reconnects after each rotation: the
//!   wall time from the spec change to every member serving its new server certificate,
//!   the writer's acknowledged puts and longest stall, quorum sampled every 100 ms (health
//!   of every member through the operator's identity) and, at the end, how many
//!   acknowledged writes are missing;
//! - the cost of TLS on what a reconcile pass does with etcd: connect to every member, list
//!   members and read each member's status (new connections, so new TLS handshakes, every pass), against
//!   the same on a plaintext cluster.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use etcd_operator::api::EtcdClusterStatus;
use etcd_operator::etcd::{EtcdAdmin, TlsConfig};
use etcd_operator::testing::converged::{client_tls_in, connect_options};
use etcd_operator::testing::operator::*;
use etcd_operator::testing::tls::{der_of, served_certificate};
use etcd_operator::testing::wait::wait_for;

fn secs(d: Duration) -> String {
    format!("{:.2}s", d.as_secs_f64())
}

fn tls_dir(st: &EtcdClusterStatus) -> String {
    st.tls
        .as_ref()
        .and_then(|t| t.client_certificate.clone())
        .expect("client certificate dir")
}

/// Writes `w/<seq>` until stopped, reconnecting (a new handshake with the client files as
/// they are now) whenever `reconnect` is raised; records every acknowledged key.
struct Writer {
    stop: Arc<AtomicBool>,
    reconnect: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<String>>>,
    longest_ns: Arc<AtomicU64>,
    /// Reconnects that read a key and certificate that did not match.
    torn: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Writer {
    fn start(urls: Vec<String>, dir: String) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let reconnect = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(Mutex::new(Vec::new()));
        let longest_ns = Arc::new(AtomicU64::new(0));
        let torn = Arc::new(AtomicU64::new(0));
        let (s, r, a, l) = (
            stop.clone(),
            reconnect.clone(),
            acked.clone(),
            longest_ns.clone(),
        );
        let t = torn.clone();
        let task = tokio::spawn(async move {
            // Read while the operator rewrites the files, a key and a certificate may not
            // match for a moment: read them again, as an application would.
            let connect = || async {
                let mut tries = 0;
                loop {
                    let tls = client_tls_in(Path::new(&dir));
                    match etcd_client::Client::connect(
                        urls.clone(),
                        Some(connect_options(tls.as_ref())),
                    )
                    .await
                    {
                        Ok(c) => return (c, tries),
                        Err(e) if tries < 50 => {
                            tries += 1;
                            eprintln!("writer: reconnect failed ({e}), reading the files again");
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                        Err(e) => panic!("connect: {e}"),
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
                    l.fetch_max((now - last_ok).as_nanos() as u64, Ordering::Relaxed);
                    last_ok = now;
                    a.lock().unwrap().push(key);
                }
            }
        });
        Self {
            stop,
            reconnect,
            acked,
            longest_ns,
            torn,
            task,
        }
    }

    async fn stop(self) -> (Vec<String>, Duration, u64) {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap();
        let acked = std::mem::take(&mut *self.acked.lock().unwrap());
        (
            acked,
            Duration::from_nanos(self.longest_ns.load(Ordering::Relaxed)),
            self.torn.load(Ordering::Relaxed),
        )
    }
}

/// Samples quorum every 100 ms until stopped: (samples, samples without quorum).
fn sample_quorum(
    urls: Vec<String>,
    tls: TlsConfig,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<(u64, u64)> {
    tokio::spawn(async move {
        let (mut samples, mut lost) = (0u64, 0u64);
        while !stop.load(Ordering::Relaxed) {
            // A linearizable read through any member needs a leader and a quorum.
            let ok = match EtcdAdmin::connect(urls.clone(), Some(tls.clone())).await {
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

async fn rotation_under_a_writer() {
    let v = latest(5);
    let mut s = Scenario::new(fast_policy());
    s.write(&cluster_yaml("rot", 3, &v, ""));
    s.start();
    let st = s.wait_running("rot", 3, &v).await;
    let urls = client_urls(&st);
    let dir = tls_dir(&st);
    let operator = client_tls_in(Path::new(&dir)).expect("identity");
    let writer = Writer::start(urls.clone(), dir.clone());
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = sample_quorum(urls.clone(), operator, stop.clone());
    let mut walls = Vec::new();
    for round in 1..=5 {
        let value = format!("r{round}");
        let t = Instant::now();
        s.write(&cluster_yaml(
            "rot",
            3,
            &v,
            &format!("  tls:\n    rotate: \"{value}\"\n"),
        ));
        s.wait_status("rot", "rotation recorded", |st| {
            st.tls.as_ref().and_then(|t| t.rotated.as_deref()) == Some(value.as_str())
        })
        .await;
        let new = der_of(&std::fs::read(Path::new(&dir).join("server.crt")).unwrap()).unwrap();
        let identity = client_tls_in(Path::new(&dir)).expect("identity");
        for url in &urls {
            let address = url.trim_start_matches("https://").to_string();
            wait_for(LONG, "member serves the new certificate", || async {
                match served_certificate(&address, "127.0.0.1", &identity) {
                    Ok(served) if served == new => Ok(()),
                    other => Err(format!("{:?}", other.map(|_| "old certificate"))),
                }
            })
            .await
            .unwrap();
        }
        walls.push(t.elapsed());
        writer.reconnect.store(true, Ordering::Relaxed);
        // The writer reconnects with the new client certificate and writes 500 more before
        // the next rotation, so every rotation happens under a running writer.
        let target = writer.acked.lock().unwrap().len() + 500;
        wait_for(LONG, "500 more acknowledged puts", || async {
            let n = writer.acked.lock().unwrap().len();
            if n >= target {
                Ok(())
            } else {
                Err(format!("{n}"))
            }
        })
        .await
        .unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    let (samples, without_quorum) = sampler.await.unwrap();
    let (acked, longest, torn) = writer.stop().await;
    let mut c = etcd_client::Client::connect(
        urls.clone(),
        Some(connect_options(client_tls_in(Path::new(&dir)).as_ref())),
    )
    .await
    .unwrap();
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
        .unwrap()
        .kvs()
        .iter()
        .map(|kv| kv.key_str().unwrap().to_string())
        .collect();
    let missing = acked.iter().filter(|k| !stored.contains(*k)).count();
    let walls: Vec<String> = walls.iter().map(|d| secs(*d)).collect();
    println!(
        "leaf rotation x5 (3 members, {v}): served by every member after {}",
        walls.join(", ")
    );
    println!(
        "  writer through the client certificate: {} acknowledged puts, longest stall {}, missing after: {missing}; reconnects that read a mismatched key and certificate: {torn}",
        acked.len(),
        secs(longest)
    );
    println!("  quorum samples: {samples}, without quorum: {without_quorum}");
}

/// Connect, list members, read each member's status: what a pass does with etcd.
async fn pass_io(urls: &[String], tls: Option<TlsConfig>) -> Duration {
    let t = Instant::now();
    let admin = EtcdAdmin::connect(urls.to_vec(), tls).await.unwrap();
    admin.member_list().await.unwrap();
    for url in urls {
        admin.status(url).await.unwrap();
    }
    t.elapsed()
}

async fn pass_cost() {
    let v = latest(5);
    let mut s = Scenario::new(fast_policy());
    s.write(&format!(
        "{}---\n{}",
        cluster_yaml("sec", 3, &v, ""),
        cluster_yaml("open", 3, &v, "  tls:\n    mode: Disabled\n")
    ));
    s.start();
    let sec = s.wait_running("sec", 3, &v).await;
    let open = s.wait_running("open", 3, &v).await;
    let tls = client_tls_in(Path::new(&tls_dir(&sec)));
    const ROUNDS: u32 = 50;
    let mut results = Vec::new();
    for (name, urls, tls) in [
        ("TLS", client_urls(&sec), tls),
        ("plaintext", client_urls(&open), None),
    ] {
        // One unmeasured round each: the first connection pays for DNS, page cache, ...
        pass_io(&urls, tls.clone()).await;
        let mut total = Duration::ZERO;
        for _ in 0..ROUNDS {
            total += pass_io(&urls, tls.clone()).await;
        }
        results.push((name, total / ROUNDS));
    }
    for (name, mean) in results {
        println!(
            "pass I/O with etcd ({name}, 3 members: connect + member list + 3 status, {ROUNDS} rounds): mean {:.1} ms (new connections every pass)",
            mean.as_secs_f64() * 1000.0
        );
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        rotation_under_a_writer().await;
        pass_cost().await;
    });
}
