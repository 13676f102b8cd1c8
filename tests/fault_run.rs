//! A seeded, reproducible fault run (issue 13, part 3) on the local runtime with real etcd:
//! the real `etcd-operator local` binary runs a 3-member cluster while a writer records
//! every acknowledged write, and faults come one at a time: kill -9 a member, SIGSTOP then
//! SIGCONT a member, delete a member's data dir, kill -9 the operator (also in the middle of
//! a membership change) and restart it, edit the spec (scale 3 <-> 5, upgrade 3.4 -> 3.5
//! once), fill the backend quota (the cluster runs with a 64 MiB `quotaBackendBytes`; a
//! filler writes 768 KiB values until etcd answers NOSPACE, then deletes them, so the
//! operator's NOSPACE run has to compact, defragment and disarm; every run has at least one).
//! After each fault the run waits, with a deadline, for the cluster to converge
//! (`testing::converged::check`: as many members as asked, one dir and one process each, no
//! learner, one leader; and no alarm). At the end every acknowledged write must read back.
//!
//! Quorum is sampled all along, during the faults and the convergence waits alike: every
//! [`SAMPLE_EVERY`] a linearizable read goes to every member at once, and quorum is there
//! when one answers. A time without quorum that starts while a member fault is injected or
//! within [`FAULT_SETTLE`] after it (a killed or paused leader, and the election that
//! follows) is the fault's; any other is the operator's (the other faults, spec edits,
//! operator kills and the quota, touch no member themselves), and one of those lasting
//! [`OPERATOR_LOSS`] or more fails the run. Each is printed with its step.
//!
//! `FAULT_SEED` picks the seed (random otherwise; it is printed), `FAULT_STEPS` the number
//! of faults (20 by default, which CI runs). The long run:
//! `FAULT_STEPS=200 FAULT_SEED=<seed> cargo test --test fault_run -- --nocapture`.
//!
//! Measured 2026-12-05 on the 2-core machine (shared with three other builds): seed
//! 8809228642698938705, 200 steps in 701 s (kill -9 member 58, SIGSTOP 32, data dir deleted
//! 32, operator killed 33 and 19 more times mid-change, scale 21, upgrade 1, quota filled 4
//! times: 65-79 values of 768 KiB before NOSPACE, healed in 3.2-6.2 s), 149927 writes
//! acknowledged, 0 lost, slowest convergence 18.0 s (scale 3 -> 5), longest time without an
//! acknowledged write 4.0 s; quorum sampled 2411 times, 26 without an answer in 24 windows
//! of at most 2.0 s, each a leader election after a member was killed (22) or paused (2),
//! none the operator's. An earlier run of the same seed found NOSPACE given up on a member
//! still compacting (step 60, fixed in `plan::maintenance` rule 5); the first run (seed
//! 17259664800708966584, before the quota fault and the sampler) found the interrupted
//! member delete (step 25).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use etcd_client::{Client, DeleteOptions, GetOptions};
use etcd_operator::api::maintenance::{MaintenanceOutcome, MaintenanceReason};
use etcd_operator::testing::converged::{self, Converged};
use etcd_operator::testing::operator::{cluster_yaml, latest};
use etcd_operator::testing::process::{LocalOperatorDir, OperatorProcess};
use etcd_operator::testing::wait_for;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const NAME: &str = "fault";
/// How long one fault may take to heal.
const CONVERGE_WITHIN: Duration = Duration::from_secs(180);
/// The cluster's backend quota: room for the writer's keys of a long run, small enough for
/// the filler to reach in seconds.
const QUOTA: u64 = 64 * 1024 * 1024;
/// The filler's value size (etcd refuses requests over 1.5 MiB).
const FILL_VALUE: usize = 768 * 1024;
/// How often quorum is sampled.
const SAMPLE_EVERY: Duration = Duration::from_millis(200);
/// How long a sample waits for each member's answer.
const SAMPLE_TIMEOUT: Duration = Duration::from_secs(1);
/// A time without quorum starting this soon after a fault was injected is the fault's: a
/// killed or paused leader and the election after it (etcd's election timeout is 1 s).
const FAULT_SETTLE: Duration = Duration::from_secs(3);
/// A time without quorum the operator caused fails the run from this long on: shorter
/// than one leader election is below what sampling can tell apart from load.
const OPERATOR_LOSS: Duration = Duration::from_secs(2);

/// The faults, one per step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Fault {
    KillMember,
    PauseMember,
    DeleteDataDir,
    KillOperator,
    KillOperatorMidChange,
    Scale,
    Upgrade,
    FillQuota,
}

/// What the writer acknowledged: key number -> value, and the longest time without one.
#[derive(Default)]
struct Acks {
    written: BTreeMap<u64, String>,
    longest_gap: Duration,
}

/// The client URLs from the member records, whatever state the cluster is in.
fn current_urls(state: &Path) -> Vec<String> {
    converged::member_dirs(state, NAME)
        .into_values()
        .flatten()
        .collect()
}

/// A client on `urls`, with the cluster's application certificate from `state` (TLS by
/// default).
async fn connect(urls: &[String], state: &Path) -> Option<Client> {
    let tls = converged::local_client_tls(state, NAME);
    let opts = converged::connect_options(tls.as_ref())
        .with_connect_timeout(Duration::from_secs(1))
        .with_timeout(Duration::from_secs(2));
    Client::connect(urls, Some(opts)).await.ok()
}

/// Writes `w/<n>` = `v<n>` one after another until `stop`, recording each acknowledged one.
/// Reconnects (to the member records' current URLs) after a failure.
async fn writer(state: std::path::PathBuf, acks: Arc<Mutex<Acks>>, stop: Arc<AtomicBool>) {
    let mut n = 0u64;
    let mut client: Option<Client> = None;
    let mut last_ack = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        if client.is_none() {
            client = connect(&current_urls(&state), &state).await;
            if client.is_none() {
                // Between member restarts there may be nothing to connect to yet.
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        }
        let Some(c) = client.as_mut() else { continue };
        let value = format!("v{n}");
        match tokio::time::timeout(
            Duration::from_secs(3),
            c.put(format!("w/{n:08}"), value.clone(), None),
        )
        .await
        {
            Ok(Ok(_)) => {
                let mut a = acks.lock().unwrap();
                a.written.insert(n, value);
                a.longest_gap = a.longest_gap.max(last_ack.elapsed());
                last_ack = Instant::now();
            }
            // NOSPACE (the quota fault): refused at once; back off rather than spin.
            Ok(Err(e)) if e.to_string().contains("database space exceeded") => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            // Unknown outcome: the key may or may not be there; only acknowledged ones count.
            _ => client = None,
        }
        n += 1;
    }
}

/// The step under way, as the quorum sampler attributes what it sees.
#[derive(Clone, Default)]
struct Mark {
    step: usize,
    what: String,
    /// When the fault's injection ended; `None` while it is being injected.
    fault_done: Option<Instant>,
    /// The fault kills, pauses or wipes a member: quorum may go for a moment by itself.
    member_fault: bool,
}

/// A time without quorum.
#[derive(Clone, Debug)]
struct Window {
    step: usize,
    what: String,
    lasted: Duration,
    /// Not a member fault's doing (see the module's doc).
    by_operator: bool,
}

/// What the quorum sampler saw.
#[derive(Default)]
struct Quorum {
    samples: u64,
    without: u64,
    windows: Vec<Window>,
    /// The window open now: when it started, and its step's mark then.
    open: Option<(Instant, Mark)>,
}

impl Quorum {
    fn record(&mut self, ok: bool, now: Instant, mark: &Mark) {
        self.samples += 1;
        if !ok {
            self.without += 1;
            if self.open.is_none() {
                self.open = Some((now, mark.clone()));
            }
        } else {
            self.close(now);
        }
    }

    /// Ends the window open now, if any, at `now`.
    fn close(&mut self, now: Instant) {
        if let Some((start, m)) = self.open.take() {
            let settling = m
                .fault_done
                .is_none_or(|done| start.saturating_duration_since(done) <= FAULT_SETTLE);
            self.windows.push(Window {
                step: m.step,
                what: m.what,
                lasted: now - start,
                by_operator: !(m.member_fault && settling),
            });
        }
    }

    fn operator_losses(&self) -> Vec<&Window> {
        self.windows
            .iter()
            .filter(|w| w.by_operator && w.lasted >= OPERATOR_LOSS)
            .collect()
    }
}

/// One linearizable read to every member at once (each with its own client, kept across
/// samples): quorum is there when one answers. Membership changes move the URLs, so they
/// are read from the member records on every sample.
async fn sample(state: &Path, clients: &mut BTreeMap<String, Client>) -> bool {
    let urls = current_urls(state);
    clients.retain(|u, _| urls.contains(u));
    for u in &urls {
        if !clients.contains_key(u)
            && let Some(c) = connect(std::slice::from_ref(u), state).await
        {
            clients.insert(u.clone(), c);
        }
    }
    let reads = clients.values().map(|c| {
        let mut c = c.clone();
        async move {
            matches!(
                tokio::time::timeout(SAMPLE_TIMEOUT, c.get("quorum-probe", None)).await,
                Ok(Ok(_))
            )
        }
    });
    futures::future::join_all(reads)
        .await
        .into_iter()
        .any(|ok| ok)
}

/// Samples quorum every [`SAMPLE_EVERY`] until `stop`, attributing what it sees to `mark`.
async fn sampler(
    state: std::path::PathBuf,
    mark: Arc<Mutex<Mark>>,
    quorum: Arc<Mutex<Quorum>>,
    stop: Arc<AtomicBool>,
) {
    let mut clients = BTreeMap::new();
    while !stop.load(Ordering::Relaxed) {
        let started = Instant::now();
        let ok = sample(&state, &mut clients).await;
        let m = mark.lock().unwrap().clone();
        quorum.lock().unwrap().record(ok, started, &m);
        tokio::time::sleep(SAMPLE_EVERY.saturating_sub(started.elapsed())).await;
    }
    quorum.lock().unwrap().close(Instant::now());
}

/// Writes [`FILL_VALUE`]-byte values until etcd refuses with NOSPACE, then deletes them
/// (deletes are served under the alarm), so compacting and defragmenting make room again.
/// Returns how many values went in and whether NOSPACE was reached.
async fn fill_quota(state: &Path) -> (usize, bool) {
    let value = "f".repeat(FILL_VALUE);
    let mut written = 0usize;
    let mut full = false;
    let mut client = None;
    // Twice the quota in values: the quota counts the backend file, not the values.
    let attempts = 2 * usize::try_from(QUOTA).unwrap_or(usize::MAX) / FILL_VALUE;
    for _ in 0..attempts {
        if client.is_none() {
            client = connect(&current_urls(state), state).await;
        }
        let Some(c) = client.as_mut() else { continue };
        let put = c.put(format!("fill/{written:04}"), value.clone(), None);
        match tokio::time::timeout(Duration::from_secs(10), put).await {
            Ok(Ok(_)) => written += 1,
            Ok(Err(e)) if e.to_string().contains("database space exceeded") => {
                full = true;
                break;
            }
            _ => client = None,
        }
    }
    let cleared = wait_for(CONVERGE_WITHIN, "the filler's keys deleted", || async {
        let mut c = connect(&current_urls(state), state)
            .await
            .ok_or("no connection")?;
        c.delete("fill/", Some(DeleteOptions::new().with_prefix()))
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    })
    .await;
    if let Err(e) = cleared {
        panic!("the filler's keys could not be deleted: {e}");
    }
    (written, full)
}

/// Waits until no member has an alarm raised (the operator disarms NOSPACE once every
/// member has room again).
async fn no_alarm(state: &Path) -> Result<(), String> {
    wait_for(CONVERGE_WITHIN, "no alarm", || async {
        let tls = converged::local_client_tls(state, NAME);
        let admin = etcd_operator::etcd::EtcdAdmin::connect(current_urls(state), tls)
            .await
            .map_err(|e| e.to_string())?;
        let alarms = admin.alarm_list().await.map_err(|e| e.to_string())?;
        if alarms.is_empty() {
            Ok(())
        } else {
            Err(format!("{alarms:?}"))
        }
    })
    .await
    .map(|_| ())
    .map_err(|e| e.to_string())
}

fn member_pid(state: &Path, member: &str) -> Option<i32> {
    std::fs::read_to_string(
        state
            .join("clusters/default")
            .join(NAME)
            .join(member)
            .join("etcd.pid"),
    )
    .ok()?
    .trim()
    .parse()
    .ok()
}

fn signal_member(state: &Path, member: &str, sig: Signal) {
    if let Some(pid) = member_pid(state, member) {
        let _ = kill(Pid::from_raw(pid), sig);
    }
}

struct Run {
    dir: LocalOperatorDir,
    op: OperatorProcess,
    size: usize,
    version: String,
    old: String,
    new: String,
}

impl Run {
    fn write_spec(&self) {
        self.dir.write(&spec_yaml(self.size, &self.version));
    }

    async fn restart_operator(&mut self) {
        self.op.kill9().await;
        self.op = self.dir.start(None);
    }

    /// Waits until etcd lists a learner or a member count other than `before`: a
    /// membership change is under way.
    async fn wait_change_in_flight(&self, before: usize) -> Result<(), String> {
        let state = self.dir.state_dir();
        wait_for(
            Duration::from_secs(60),
            "a membership change in flight",
            || async {
                let urls = current_urls(&state);
                let tls = converged::local_client_tls(&state, NAME);
                let admin = etcd_operator::etcd::EtcdAdmin::connect(urls, tls)
                    .await
                    .map_err(|e| e.to_string())?;
                let info = admin.member_list().await.map_err(|e| e.to_string())?;
                if info.members.len() != before || info.learners().count() > 0 {
                    Ok(())
                } else {
                    Err(format!("{} members", info.members.len()))
                }
            },
        )
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
    }

    async fn inject(&mut self, fault: Fault, c: &Converged, rng: &mut StdRng) -> String {
        let state = self.dir.state_dir();
        let victim = c.members[rng.gen_range(0..c.members.len())].clone();
        match fault {
            Fault::KillMember => {
                signal_member(&state, &victim, Signal::SIGKILL);
                format!("kill -9 {victim}")
            }
            Fault::PauseMember => {
                let ms = rng.gen_range(300..3000);
                signal_member(&state, &victim, Signal::SIGSTOP);
                // The fault is a pause of this length; nothing is waited on.
                tokio::time::sleep(Duration::from_millis(ms)).await;
                signal_member(&state, &victim, Signal::SIGCONT);
                format!("SIGSTOP {victim} for {ms} ms")
            }
            Fault::DeleteDataDir => {
                signal_member(&state, &victim, Signal::SIGKILL);
                let data = state
                    .join("clusters/default")
                    .join(NAME)
                    .join(&victim)
                    .join("data");
                // The process may take a moment to die; its files go either way.
                let _ = std::fs::remove_dir_all(&data);
                format!("kill -9 {victim} and delete its data dir")
            }
            Fault::KillOperator => {
                self.restart_operator().await;
                "kill -9 the operator".into()
            }
            Fault::KillOperatorMidChange => {
                let before = self.size;
                self.size = if self.size == 3 { 5 } else { 3 };
                self.write_spec();
                let seen = self.wait_change_in_flight(before).await;
                self.restart_operator().await;
                format!(
                    "scale {before} -> {} and kill -9 the operator mid-change ({})",
                    self.size,
                    if seen.is_ok() {
                        "change seen"
                    } else {
                        "no change seen in 60 s"
                    }
                )
            }
            Fault::Scale => {
                let before = self.size;
                self.size = if self.size == 3 { 5 } else { 3 };
                self.write_spec();
                format!("scale {before} -> {}", self.size)
            }
            Fault::Upgrade => {
                self.version = self.new.clone();
                self.write_spec();
                format!("upgrade {} -> {}", self.old, self.new)
            }
            Fault::FillQuota => {
                let (written, full) = fill_quota(&state).await;
                format!(
                    "fill the {} MiB quota: {written} values of {} KiB, {}, deleted",
                    QUOTA >> 20,
                    FILL_VALUE >> 10,
                    if full { "NOSPACE" } else { "no NOSPACE" }
                )
            }
        }
    }
}

fn spec_yaml(size: usize, version: &str) -> String {
    cluster_yaml(
        NAME,
        size as i32,
        version,
        &format!("  etcd:\n    quotaBackendBytes: {QUOTA}\n"),
    )
}

fn draw(rng: &mut StdRng, upgraded: bool) -> Fault {
    loop {
        let f = match rng.gen_range(0..100) {
            0..=24 => Fault::KillMember,
            25..=39 => Fault::PauseMember,
            40..=54 => Fault::DeleteDataDir,
            55..=69 => Fault::KillOperator,
            70..=79 => Fault::KillOperatorMidChange,
            80..=89 => Fault::Scale,
            90..=94 => Fault::FillQuota,
            _ => Fault::Upgrade,
        };
        if f != Fault::Upgrade || !upgraded {
            return f;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn seeded_faults_one_at_a_time_lose_no_acknowledged_write() {
    let seed: u64 = std::env::var("FAULT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    let steps: usize = std::env::var("FAULT_STEPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    println!(
        "fault run: seed {seed}, {steps} steps; again with: FAULT_SEED={seed} FAULT_STEPS={steps} cargo test --test fault_run -- --nocapture"
    );
    let mut rng = StdRng::seed_from_u64(seed);
    let (old, new) = (latest(4), latest(5));
    let mut dir = LocalOperatorDir::new(env!("CARGO_BIN_EXE_etcd-operator"));
    dir.write(&spec_yaml(3, &old));
    let op = dir.start(None);
    let mut run = Run {
        dir,
        op,
        size: 3,
        version: old.clone(),
        old,
        new,
    };
    let state = run.dir.state_dir();
    let mut c = converged::wait(&state, NAME, 3, &run.version, CONVERGE_WITHIN)
        .await
        .unwrap_or_else(|e| panic!("seed {seed}: the first cluster: {e}\n{}", run.op.stderr()));

    let acks = Arc::new(Mutex::new(Acks::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = tokio::spawn(writer(state.clone(), acks.clone(), stop.clone()));
    let mark = Arc::new(Mutex::new(Mark::default()));
    let quorum = Arc::new(Mutex::new(Quorum::default()));
    let sampler = tokio::spawn(sampler(
        state.clone(),
        mark.clone(),
        quorum.clone(),
        stop.clone(),
    ));

    let mut slowest = (Duration::ZERO, String::new());
    let mut counts: BTreeMap<Fault, usize> = BTreeMap::new();
    let started = Instant::now();
    let mut filled = false;
    for step in 1..=steps {
        let mut fault = draw(&mut rng, run.version == run.new);
        // Every run reaches the NOSPACE path at least once, the short one too.
        if step == steps.div_ceil(2) && !filled {
            fault = Fault::FillQuota;
        }
        filled |= fault == Fault::FillQuota;
        *counts.entry(fault).or_default() += 1;
        *mark.lock().unwrap() = Mark {
            step,
            what: format!("{fault:?}"),
            fault_done: None,
            member_fault: matches!(
                fault,
                Fault::KillMember | Fault::PauseMember | Fault::DeleteDataDir
            ),
        };
        let (samples_before, without_before) = {
            let q = quorum.lock().unwrap();
            (q.samples, q.without)
        };
        let at = Instant::now();
        let what = run.inject(fault, &c, &mut rng).await;
        {
            let mut m = mark.lock().unwrap();
            m.what = what.clone();
            m.fault_done = Some(Instant::now());
        }
        if !run.op.is_running() {
            // The operator must never exit by itself; a crash would be a finding.
            panic!(
                "seed {seed} step {step} ({what}): the operator exited:\n{}",
                run.op.stderr()
            );
        }
        c = match converged::wait(&state, NAME, run.size, &run.version, CONVERGE_WITHIN).await {
            Ok(c) => c,
            Err(e) => panic!(
                "seed {seed} step {step} ({what}): no convergence: {e}\noperator log (tail):\n{}",
                tail(&run.op.stderr(), 60)
            ),
        };
        if let Err(e) = no_alarm(&state).await {
            panic!(
                "seed {seed} step {step} ({what}): an alarm stays raised: {e}\noperator log (tail):\n{}",
                tail(&run.op.stderr(), 60)
            );
        }
        if fault == Fault::FillQuota {
            // The alarm went away because the operator's NOSPACE run finished it. The pass
            // that disarmed it writes the status after the disarm: wait for it, with a
            // deadline, rather than read it once.
            assert!(
                what.contains(", NOSPACE,"),
                "seed {seed} step {step} ({what})"
            );
            let finished = wait_for(
                Duration::from_secs(30),
                "a finished NOSPACE run",
                || async {
                    let last = run
                        .dir
                        .status(NAME)
                        .and_then(|st| st.maintenance)
                        .and_then(|m| m.last_run);
                    match &last {
                        Some(r)
                            if r.reason == MaintenanceReason::NoSpace
                                && r.outcome == Some(MaintenanceOutcome::Finished) =>
                        {
                            Ok(())
                        }
                        _ => Err(format!("{last:?}")),
                    }
                },
            )
            .await;
            if let Err(e) = finished {
                panic!("seed {seed} step {step} ({what}): no finished NOSPACE run: {e}");
            }
        }
        let took = at.elapsed();
        let acked = acks.lock().unwrap().written.len();
        let (samples, without) = {
            let q = quorum.lock().unwrap();
            (q.samples - samples_before, q.without - without_before)
        };
        println!(
            "step {step:3}: {what:<60} converged in {:5.1} s, {acked} writes acknowledged, quorum sampled {samples} times, {without} without",
            took.as_secs_f64()
        );
        if took > slowest.0 {
            slowest = (took, format!("step {step}: {what}"));
        }
    }
    stop.store(true, Ordering::Relaxed);
    writer.await.unwrap();
    sampler.await.unwrap();
    let quorum = std::mem::take(&mut *quorum.lock().unwrap());
    for w in &quorum.windows {
        println!(
            "without quorum for {:.1} s at step {} ({}), {}",
            w.lasted.as_secs_f64(),
            w.step,
            w.what,
            if w.by_operator {
                "the operator's"
            } else {
                "the member fault's"
            }
        );
    }

    // Every acknowledged write reads back, with its value; in pages, as 200 steps write
    // more than one gRPC message holds.
    let mut client = connect(&c.client_urls, &state)
        .await
        .expect("connect for the final read");
    let mut found: BTreeMap<String, String> = BTreeMap::new();
    let mut from = "w/".to_string();
    loop {
        let resp = client
            .get(
                from.clone(),
                Some(GetOptions::new().with_range("w0").with_limit(10_000)),
            )
            .await
            .expect("final read");
        for kv in resp.kvs() {
            found.insert(
                kv.key_str().unwrap().to_string(),
                kv.value_str().unwrap().to_string(),
            );
        }
        match resp.kvs().last() {
            Some(last) if resp.more() => from = format!("{}\0", last.key_str().unwrap()),
            _ => break,
        }
    }
    let acks = std::mem::take(&mut *acks.lock().unwrap());
    let lost: Vec<u64> = acks
        .written
        .iter()
        .filter(|(n, v)| found.get(&format!("w/{n:08}")) != Some(*v))
        .map(|(n, _)| *n)
        .collect();
    let longest_without = quorum
        .windows
        .iter()
        .map(|w| w.lasted)
        .max()
        .unwrap_or_default();
    println!(
        "fault run summary: seed {seed}, {steps} steps in {:.0} s, faults {counts:?}, {} writes acknowledged, {} lost, slowest convergence {:.1} s ({}), longest time without an acknowledged write {:.1} s; quorum sampled {} times, {} without an answer in {} windows (longest {:.1} s), {} of them the operator's",
        started.elapsed().as_secs_f64(),
        acks.written.len(),
        lost.len(),
        slowest.0.as_secs_f64(),
        slowest.1,
        acks.longest_gap.as_secs_f64(),
        quorum.samples,
        quorum.without,
        quorum.windows.len(),
        longest_without.as_secs_f64(),
        quorum.operator_losses().len(),
    );
    assert!(
        lost.is_empty(),
        "seed {seed}: acknowledged writes lost: {:?}",
        &lost[..lost.len().min(20)]
    );
    assert!(!acks.written.is_empty(), "seed {seed}: nothing was written");
    assert!(quorum.samples > 0, "seed {seed}: quorum was never sampled");
    let losses = quorum.operator_losses();
    assert!(
        losses.is_empty(),
        "seed {seed}: the operator lost quorum: {losses:?}"
    );
    run.op.interrupt(Duration::from_secs(30)).await;
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
