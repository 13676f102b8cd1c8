//! The local runtime against real etcd binaries: start, restart (same and newer version),
//! adoption by a second runtime, exit events, delete, and errors for missing binaries.
//!
//! Binaries come from `$ETCD_BIN_DIR/<version>/etcd` (default `.deps/etcd`, filled by
//! `scripts/install-test-deps`). Every test runs in its own temp state dir whose etcd
//! processes are killed when the test ends, also on panic.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use etcd_client::{Client, ConnectOptions};
use etcd_operator::api::cluster::{AutoCompactionMode, EtcdOptions};
use etcd_operator::runtime::local::Seed;
use etcd_operator::runtime::{
    ClusterRef, Error, InitialClusterState, LocalRuntime, MemberAddress, MemberExited,
    MemberLaunch, MemberRuntime, RuntimeMember, Transport,
};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::sync::broadcast::error::TryRecvError;
use tokio::time::{Instant, sleep, timeout};

const V34: semver::Version = semver::Version::new(3, 4, 23);
const V35: semver::Version = semver::Version::new(3, 5, 16);
const HEALTHY_WITHIN: Duration = Duration::from_secs(30);
const EXIT_EVENT_WITHIN: Duration = Duration::from_secs(10);

/// A temp state dir and a runtime on it; dropping it SIGKILLs every etcd it started.
struct Sandbox {
    dir: tempfile::TempDir,
    runtime: LocalRuntime,
}

impl Sandbox {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp state dir");
        let runtime = runtime_on(dir.path());
        Self { dir, runtime }
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        for pid_file in files_named(self.dir.path(), "etcd.pid") {
            let member_dir = pid_file.parent().expect("pid file has a parent");
            if let Some(pid) = std::fs::read_to_string(&pid_file)
                .ok()
                .and_then(|s| s.trim().parse::<i32>().ok())
                && runs_in(pid as u32, member_dir)
            {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
    }
}

fn bin_dir() -> PathBuf {
    std::env::var_os("ETCD_BIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".deps/etcd"))
}

fn runtime_on(state: &Path) -> LocalRuntime {
    LocalRuntime::new(state.to_path_buf(), bin_dir()).with_stop_grace(Duration::from_secs(5))
}

fn files_named(dir: &Path, name: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(files_named(&path, name));
        } else if path.file_name().is_some_and(|n| n == name) {
            found.push(path);
        }
    }
    found
}

/// Whether `pid` is a live (non-zombie) process whose command line mentions `dir`.
fn runs_in(pid: u32, dir: &Path) -> bool {
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let dir = dir.to_string_lossy();
    String::from_utf8_lossy(&cmdline).contains(dir.as_ref())
}

fn cluster(name: &str) -> ClusterRef {
    ClusterRef::new("default", name)
}

/// Reserves `names` and creates them as a new cluster; returns their addresses.
async fn create_cluster(
    rt: &LocalRuntime,
    cluster: &ClusterRef,
    names: &[&str],
    version: &semver::Version,
    options: Option<EtcdOptions>,
) -> Vec<MemberAddress> {
    let mut addresses = Vec::new();
    for name in names {
        addresses.push(
            rt.reserve(cluster, name, Transport::Plain)
                .await
                .expect("reserve"),
        );
    }
    for name in names {
        rt.create(cluster, &launch(name, version, &addresses, options.clone()))
            .await
            .expect("create");
    }
    addresses
}

fn launch(
    name: &str,
    version: &semver::Version,
    members: &[MemberAddress],
    options: Option<EtcdOptions>,
) -> MemberLaunch {
    MemberLaunch {
        name: name.to_string(),
        version: version.clone(),
        initial_cluster: members
            .iter()
            .map(|m| (m.name.clone(), m.peer_url.clone()))
            .collect(),
        state: InitialClusterState::New,
        cluster_token: "test-token".to_string(),
        options,
        transport: Transport::Plain,
    }
}

/// A client once a linearizable read through `url` succeeds (a leader and quorum exist).
async fn wait_healthy(url: &str) -> Client {
    let deadline = Instant::now() + HEALTHY_WITHIN;
    loop {
        let attempt = timeout(Duration::from_secs(3), async {
            let options = ConnectOptions::new()
                .with_connect_timeout(Duration::from_secs(1))
                .with_timeout(Duration::from_secs(2));
            let mut client = Client::connect([url], Some(options)).await?;
            client.get("health", None).await?;
            Ok::<_, etcd_client::Error>(client)
        })
        .await;
        match attempt {
            Ok(Ok(client)) => return client,
            Ok(Err(e)) if Instant::now() >= deadline => {
                panic!("{url} not healthy within {HEALTHY_WITHIN:?}: {e}")
            }
            Err(_) if Instant::now() >= deadline => {
                panic!("{url} not healthy within {HEALTHY_WITHIN:?}: attempt timed out")
            }
            _ => sleep(Duration::from_millis(50)).await,
        }
    }
}

async fn server_version(client: &mut Client) -> String {
    client.status().await.expect("status").version().to_string()
}

async fn get(client: &mut Client, key: &str) -> Option<String> {
    let resp = client.get(key, None).await.expect("get");
    resp.kvs()
        .first()
        .map(|kv| kv.value_str().expect("utf-8 value").to_string())
}

async fn next_exit(
    rx: &mut tokio::sync::broadcast::Receiver<MemberExited>,
    who: &str,
) -> MemberExited {
    timeout(EXIT_EVENT_WITHIN, rx.recv())
        .await
        .unwrap_or_else(|_| panic!("{who}: no exit event within {EXIT_EVENT_WITHIN:?}"))
        .expect("exit channel open")
}

fn pid_of(rt: &LocalRuntime, c: &ClusterRef, name: &str) -> u32 {
    rt.pid(c, name).expect("read pid").expect("member runs")
}

#[tokio::test]
async fn single_member_keeps_its_data_across_restart() {
    let sb = Sandbox::new();
    let rt = &sb.runtime;
    let c = cluster("single");
    let addresses = create_cluster(rt, &c, &["single-0"], &V35, None).await;
    let url = &addresses[0].client_url;
    let mut client = wait_healthy(url).await;
    client.put("k", "before restart", None).await.expect("put");

    let listed = rt.list(&c).await.unwrap();
    let started_at = listed.first().and_then(|m| m.started_at);
    assert!(
        started_at.is_some_and(|t| t <= jiff::Timestamp::now()),
        "a running member has a start time: {listed:?}"
    );
    assert_eq!(
        listed,
        [RuntimeMember {
            name: "single-0".into(),
            address: addresses[0].clone(),
            running: true,
            has_data: true,
            version: V35,
            started_at,
            restart_keeps_data: true,
            trust_stamp: None,
        }]
    );

    let mut exits = rt.subscribe_exits();
    let before = pid_of(rt, &c, "single-0");
    rt.restart(&c, "single-0", None).await.unwrap();
    let after = pid_of(rt, &c, "single-0");
    assert_ne!(before, after, "restart starts a new process");

    let mut client = wait_healthy(url).await;
    assert_eq!(
        get(&mut client, "k").await.as_deref(),
        Some("before restart")
    );
    assert!(
        matches!(exits.try_recv(), Err(TryRecvError::Empty)),
        "an exit the runtime caused is not reported"
    );

    rt.stop_all(&c).await.unwrap();
    let members = rt.list(&c).await.unwrap();
    assert!(!members[0].running && members[0].has_data, "{members:?}");
    assert_eq!(rt.pid(&c, "single-0").unwrap(), None);
}

#[tokio::test]
async fn second_runtime_adopts_running_members_without_starting_new_ones() {
    let sb = Sandbox::new();
    let rt = &sb.runtime;
    let c = cluster("trio");
    let names = ["trio-0", "trio-1", "trio-2"];
    let addresses = create_cluster(rt, &c, &names, &V35, None).await;
    for a in &addresses {
        wait_healthy(&a.client_url).await;
    }
    let listed = rt.list(&c).await.unwrap();
    assert_eq!(listed.len(), 3);
    assert!(listed.iter().all(|m| m.running && m.has_data), "{listed:?}");

    let rt2 = runtime_on(sb.dir.path());
    assert_eq!(rt2.list(&c).await.unwrap(), listed);
    for name in names {
        assert_eq!(rt2.pid(&c, name).unwrap(), rt.pid(&c, name).unwrap());
    }

    // Creating a running member again, and reserving it again, change nothing.
    let pid = pid_of(&rt2, &c, "trio-1");
    rt2.create(&c, &launch("trio-1", &V35, &addresses, None))
        .await
        .unwrap();
    assert_eq!(pid_of(&rt2, &c, "trio-1"), pid);
    assert_eq!(
        rt2.reserve(&c, "trio-1", Transport::Plain).await.unwrap(),
        addresses[1]
    );

    rt2.stop_all(&c).await.unwrap();
    assert!(rt.list(&c).await.unwrap().iter().all(|m| !m.running));
}

#[tokio::test]
async fn killed_member_is_reported_by_spawning_and_adopting_runtimes() {
    let sb = Sandbox::new();
    let rt = &sb.runtime;
    let c = cluster("victim");
    let addresses = create_cluster(rt, &c, &["victim-0"], &V35, None).await;
    wait_healthy(&addresses[0].client_url).await;

    // rt spawned it and awaits it; rt2 adopts it and polls it.
    let rt2 = runtime_on(sb.dir.path());
    assert!(rt2.list(&c).await.unwrap()[0].running);
    let mut spawner_exits = rt.subscribe_exits();
    let mut adopter_exits = rt2.subscribe_exits();

    let pid = pid_of(rt, &c, "victim-0");
    kill(Pid::from_raw(pid as i32), Signal::SIGKILL).unwrap();

    let expected = MemberExited {
        cluster: c.clone(),
        name: "victim-0".into(),
    };
    assert_eq!(next_exit(&mut spawner_exits, "spawner").await, expected);
    assert_eq!(next_exit(&mut adopter_exits, "adopter").await, expected);

    let members = rt.list(&c).await.unwrap();
    assert!(!members[0].running && members[0].has_data, "{members:?}");
    assert_eq!(rt.pid(&c, "victim-0").unwrap(), None);
}

#[tokio::test]
async fn member_restarted_on_a_newer_binary_reports_the_new_version() {
    let sb = Sandbox::new();
    let rt = &sb.runtime;
    let c = cluster("upgrade");
    // Every option, to prove etcd 3.4 accepts the flags the runtime passes.
    let options = EtcdOptions {
        quota_backend_bytes: Some(512 * 1024 * 1024),
        auto_compaction_mode: Some(AutoCompactionMode::Revision),
        auto_compaction_retention: Some("1000".into()),
        snapshot_count: Some(10_000),
        heartbeat_interval_ms: Some(100),
        election_timeout_ms: Some(1000),
        extra_args: BTreeMap::from([("max-txn-ops".to_string(), "256".to_string())]),
    };
    let addresses = create_cluster(rt, &c, &["upgrade-0"], &V34, Some(options)).await;
    let url = &addresses[0].client_url;
    let mut client = wait_healthy(url).await;
    assert_eq!(server_version(&mut client).await, "3.4.23");
    client.put("k", "from 3.4", None).await.expect("put");
    let record = rt.member_dir(&c, "upgrade-0").unwrap().join("member.json");
    let flags_before = launch_flags(&record);

    rt.restart(&c, "upgrade-0", Some(V35)).await.unwrap();
    let mut client = wait_healthy(url).await;
    assert_eq!(server_version(&mut client).await, "3.5.16");
    assert_eq!(get(&mut client, "k").await.as_deref(), Some("from 3.4"));
    assert_eq!(rt.list(&c).await.unwrap()[0].version, V35);
    assert_eq!(
        launch_flags(&record),
        flags_before,
        "restart reuses the flags"
    );

    rt.stop_all(&c).await.unwrap();
}

fn launch_flags(record: &Path) -> serde_json::Value {
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(record).expect("record")).expect("json");
    json["launch"]["flags"].clone()
}

#[tokio::test]
async fn delete_removes_process_data_and_record() {
    let sb = Sandbox::new();
    let rt = &sb.runtime;
    let c = cluster("doomed");
    let addresses = create_cluster(rt, &c, &["doomed-0"], &V35, None).await;
    wait_healthy(&addresses[0].client_url).await;
    let pid = pid_of(rt, &c, "doomed-0");
    let dir = rt.member_dir(&c, "doomed-0").unwrap();
    assert!(dir.join("data/member/wal").is_dir());
    let mut exits = rt.subscribe_exits();

    rt.delete(&c, "doomed-0").await.unwrap();
    assert!(!runs_in(pid, &dir), "process {pid} still runs");
    assert!(!dir.exists(), "{} still exists", dir.display());
    assert_eq!(rt.list(&c).await.unwrap(), []);
    assert_eq!(rt.pid(&c, "doomed-0").unwrap(), None);
    rt.delete(&c, "doomed-0").await.unwrap();
    assert!(matches!(exits.try_recv(), Err(TryRecvError::Empty)));
}

#[tokio::test]
async fn missing_binary_is_reported_with_its_path() {
    let sb = Sandbox::new();
    let rt = &sb.runtime;
    let c = cluster("nobin");
    let absent = semver::Version::new(3, 3, 99);
    let expected_path = bin_dir().join("3.3.99").join("etcd");

    let me = rt.reserve(&c, "nobin-0", Transport::Plain).await.unwrap();
    let err = rt
        .create(
            &c,
            &launch("nobin-0", &absent, std::slice::from_ref(&me), None),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::BinaryMissing { path, .. } if *path == expected_path),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .contains(&expected_path.display().to_string()),
        "{err}"
    );
    assert_eq!(rt.list(&c).await.unwrap(), [], "nothing was created");

    // A restart onto a missing binary fails before stopping the member.
    rt.create(&c, &launch("nobin-0", &V35, &[me], None))
        .await
        .unwrap();
    let pid = pid_of(rt, &c, "nobin-0");
    let err = rt.restart(&c, "nobin-0", Some(absent)).await.unwrap_err();
    assert!(matches!(err, Error::BinaryMissing { .. }), "{err:?}");
    assert_eq!(rt.pid(&c, "nobin-0").unwrap(), Some(pid));

    let err = rt.restart(&c, "ghost", None).await.unwrap_err();
    assert!(matches!(err, Error::MemberNotFound { .. }), "{err:?}");
    rt.stop_all(&c).await.unwrap();
}

#[tokio::test]
async fn reserved_addresses_are_stable_and_distinct() {
    let sb = Sandbox::new();
    let rt = &sb.runtime;
    let c = cluster("ports");
    let a = rt.reserve(&c, "ports-0", Transport::Plain).await.unwrap();
    assert_eq!(
        rt.reserve(&c, "ports-0", Transport::Plain).await.unwrap(),
        a
    );
    let b = rt.reserve(&c, "ports-1", Transport::Plain).await.unwrap();
    let other = rt
        .reserve(&cluster("elsewhere"), "ports-0", Transport::Plain)
        .await
        .unwrap();
    let mut urls = vec![
        &a.peer_url,
        &a.client_url,
        &b.peer_url,
        &b.client_url,
        &other.peer_url,
        &other.client_url,
    ];
    urls.sort();
    urls.dedup();
    assert_eq!(urls.len(), 6, "every port is distinct: {urls:?}");
    assert!(a.client_url.starts_with("http://127.0.0.1:"), "{a:?}");

    // A restarted operator hands out the same address; reserved members are not listed.
    let rt2 = runtime_on(sb.dir.path());
    assert_eq!(
        rt2.reserve(&c, "ports-0", Transport::Plain).await.unwrap(),
        a
    );
    assert_eq!(rt2.list(&c).await.unwrap(), []);
}

#[tokio::test]
async fn frozen_member_restarts_without_waiting_for_the_kill_deadline() {
    let sb = Sandbox::new();
    // A grace longer than the test's patience: only SIGTERM + SIGCONT can end it in time.
    let rt = &runtime_on(sb.dir.path()).with_stop_grace(Duration::from_secs(60));
    let c = cluster("frozen");
    let addresses = create_cluster(rt, &c, &["frozen-0"], &V35, None).await;
    wait_healthy(&addresses[0].client_url).await;
    let pid = pid_of(rt, &c, "frozen-0");
    kill(Pid::from_raw(pid as i32), Signal::SIGSTOP).unwrap();
    assert!(
        rt.list(&c).await.unwrap()[0].running,
        "a stopped process still runs"
    );

    timeout(Duration::from_secs(20), rt.restart(&c, "frozen-0", None))
        .await
        .expect("restart within 20s")
        .unwrap();
    assert_ne!(pid_of(rt, &c, "frozen-0"), pid);
    wait_healthy(&addresses[0].client_url).await;
    rt.stop_all(&c).await.unwrap();
}

/// `etcdctl snapshot save` of the member at `url` into `path`.
fn save_snapshot(url: &str, path: &Path) {
    let out = std::process::Command::new(bin_dir().join(V35.to_string()).join("etcdctl"))
        .env("ETCDCTL_API", "3")
        .args(["--endpoints", url, "snapshot", "save"])
        .arg(path)
        .output()
        .expect("run etcdctl");
    assert!(out.status.success(), "snapshot save: {out:?}");
}

#[tokio::test]
async fn bootstrap_members_of_a_seeded_cluster_start_from_its_snapshot() {
    let sb = Sandbox::new();
    let rt = &sb.runtime;
    let origin = cluster("origin");
    let addresses = create_cluster(rt, &origin, &["origin-0"], &V35, None).await;
    let mut client = wait_healthy(&addresses[0].client_url).await;
    client.put("kept", "from the snapshot", None).await.unwrap();
    let snapshot = sb.dir.path().join("snapshot.db");
    save_snapshot(&addresses[0].client_url, &snapshot);

    let restored = cluster("restored");
    let seed = Seed {
        snapshot: snapshot.clone(),
    };
    rt.set_seed(&restored, Some(&seed)).unwrap();
    // The seed is on disk: a restarted operator's runtime sees it too.
    assert_eq!(
        runtime_on(sb.dir.path()).seed(&restored).unwrap(),
        Some(seed)
    );
    let names = ["restored-0", "restored-1", "restored-2"];
    let members = create_cluster(rt, &restored, &names, &V35, None).await;
    for m in &members {
        let mut client = wait_healthy(&m.client_url).await;
        assert_eq!(
            get(&mut client, "kept").await.as_deref(),
            Some("from the snapshot"),
            "{}",
            m.name
        );
    }
    let mut client = wait_healthy(&members[0].client_url).await;
    let ids: std::collections::BTreeSet<u64> = client
        .member_list()
        .await
        .unwrap()
        .members()
        .iter()
        .map(|m| m.id())
        .collect();
    assert_eq!(
        ids.len(),
        3,
        "one cluster of three, not three clusters of one"
    );

    // Cleared: a later bootstrap member would start empty. The origin never had a seed.
    rt.set_seed(&restored, None).unwrap();
    assert_eq!(rt.seed(&restored).unwrap(), None);
    assert_eq!(rt.seed(&origin).unwrap(), None);
    rt.set_seed(&restored, None).unwrap();
}
