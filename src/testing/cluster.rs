//! `TestCluster`: real etcd member processes on 127.0.0.1 in a temp dir, always torn down.
//!
//! It starts, kills, stops and restarts processes and waits for health; membership changes
//! are the test's to make through [`crate::etcd::EtcdAdmin`], as the operator would.

use std::fmt::Write as _;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use etcd_client::ConnectOptions;
use nix::sys::signal::Signal;
use tempfile::TempDir;

use super::Error;
use super::certs::TestCerts;
use super::etcd_bin::EtcdBin;
use super::ports::free_port;
use super::wait::wait_for;
use crate::etcd::{ClientError, EtcdAdmin, Member, Timeouts, TlsConfig};

/// How long a fresh cluster may take to become healthy (typically ~1 s on 2 cores).
const START_WITHIN: Duration = Duration::from_secs(20);
/// How often a start is retried when another process took one of its ports meanwhile.
const START_ATTEMPTS: usize = 3;
/// How long a stopped member may take to exit after SIGTERM before it is killed.
const STOP_WITHIN: Duration = Duration::from_secs(10);

/// Where one member listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberAddr {
    pub name: String,
    pub client_url: String,
    pub peer_url: String,
}

impl MemberAddr {
    /// `name=peer_url`, an `--initial-cluster` entry.
    pub fn initial_cluster_entry(&self) -> String {
        format!("{}={}", self.name, self.peer_url)
    }
}

/// `--initial-cluster` for a member joining after `member_add`: `members` as that call
/// returned them, with the joiner (still unnamed there) named by its peer URL.
pub fn initial_cluster_for(members: &[Member], joiner: &MemberAddr) -> String {
    let mut entries = Vec::new();
    for member in members {
        let name = if member.peer_urls.contains(&joiner.peer_url) {
            &joiner.name
        } else {
            &member.name
        };
        for url in &member.peer_urls {
            entries.push(format!("{name}={url}"));
        }
    }
    entries.join(",")
}

/// Configures a [`TestCluster`] before starting it.
#[derive(Debug)]
pub struct TestClusterBuilder {
    bin: EtcdBin,
    members: usize,
    args: Vec<String>,
    tls: bool,
}

impl TestClusterBuilder {
    /// How many members to bootstrap (default 3).
    pub fn members(mut self, n: usize) -> Self {
        self.members = n;
        self
    }

    /// An extra etcd flag for every member, e.g. `--quota-backend-bytes=...`.
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Serve peers and clients over mutual TLS with throwaway certificates.
    pub fn tls(mut self) -> Self {
        self.tls = true;
        self
    }

    /// Starts the members and waits until every one serves a linearizable read.
    ///
    /// # Errors
    /// [`Error::Exited`] with the member's last log lines when one dies during startup;
    /// [`Error::Wait`] when they stay unhealthy.
    pub async fn start(self) -> Result<TestCluster, Error> {
        let mut last = None;
        for _ in 0..START_ATTEMPTS {
            match self.try_start().await {
                Ok(cluster) => return Ok(cluster),
                Err(e) if e.is_port_clash() => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.expect("START_ATTEMPTS > 0"))
    }

    async fn try_start(&self) -> Result<TestCluster, Error> {
        let dir = tempfile::Builder::new()
            .prefix("etcd-test-")
            .tempdir()
            .map_err(|source| Error::Io {
                path: std::env::temp_dir(),
                source,
            })?;
        let certs = match self.tls {
            true => Some(TestCerts::generate(&dir.path().join("certs")).await?),
            false => None,
        };
        let token = dir
            .path()
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("etcd-test")
            .to_owned();
        let mut cluster = TestCluster {
            bin: self.bin.clone(),
            dir,
            token,
            args: self.args.clone(),
            certs,
            members: Vec::new(),
        };
        let addrs = (0..self.members)
            .map(|i| cluster.alloc_member(&format!("m{i}")))
            .collect::<Result<Vec<_>, _>>()?;
        let initial_cluster = addrs
            .iter()
            .map(MemberAddr::initial_cluster_entry)
            .collect::<Vec<_>>()
            .join(",");
        for addr in addrs {
            cluster.launch(addr, &initial_cluster, ClusterState::New)?;
        }
        let all: Vec<usize> = (0..cluster.members.len()).collect();
        cluster.wait_healthy(&all, START_WITHIN).await?;
        Ok(cluster)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ClusterState {
    New,
    Existing,
}

struct TestMember {
    addr: MemberAddr,
    data_dir: PathBuf,
    log_path: PathBuf,
    initial_cluster: String,
    state: ClusterState,
    /// `None` once killed, stopped or seen exiting.
    child: Option<tokio::process::Child>,
}

/// Real etcd members on 127.0.0.1, named `m0..mN-1`, with data and logs in a temp dir.
///
/// # Guarantees
/// Dropping it (also while a test panics) SIGKILLs every member and reaps it before the temp
/// dir is removed. On panic the dir is kept and each member's last log lines are printed.
/// Members also get SIGKILL if the thread that started them dies (`PR_SET_PDEATHSIG`), so a
/// killed test binary leaves no etcd behind: start clusters from the test's own task.
///
/// Member indices are stable: joiners get the next index; a killed member keeps its index.
pub struct TestCluster {
    bin: EtcdBin,
    dir: TempDir,
    token: String,
    args: Vec<String>,
    certs: Option<TestCerts>,
    members: Vec<TestMember>,
}

impl TestCluster {
    /// Starts `n` members of release `bin` and waits until all are healthy.
    pub async fn start(bin: &EtcdBin, n: usize) -> Result<Self, Error> {
        Self::builder(bin).members(n).start().await
    }

    pub fn builder(bin: &EtcdBin) -> TestClusterBuilder {
        TestClusterBuilder {
            bin: bin.clone(),
            members: 3,
            args: Vec::new(),
            tls: false,
        }
    }

    pub fn bin(&self) -> &EtcdBin {
        &self.bin
    }

    /// The temp dir holding data dirs (`<name>.data`), logs (`<name>.log`) and certificates.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// How many members this cluster has started, running or not.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    pub fn member(&self, index: usize) -> Result<&MemberAddr, Error> {
        Ok(&self.get(index)?.addr)
    }

    pub fn client_url(&self, index: usize) -> Result<&str, Error> {
        Ok(&self.get(index)?.addr.client_url)
    }

    /// Client URLs of the members whose process is running (not killed or stopped).
    pub fn client_urls(&self) -> Vec<String> {
        self.members
            .iter()
            .filter(|m| m.child.is_some())
            .map(|m| m.addr.client_url.clone())
            .collect()
    }

    pub fn log_path(&self, index: usize) -> Result<&Path, Error> {
        Ok(&self.get(index)?.log_path)
    }

    pub fn data_dir(&self, index: usize) -> Result<&Path, Error> {
        Ok(&self.get(index)?.data_dir)
    }

    /// The client TLS material when started with [`TestClusterBuilder::tls`].
    pub fn client_tls(&self) -> Option<TlsConfig> {
        self.certs.as_ref().map(TestCerts::client_tls)
    }

    /// An admin client for the running members (with TLS when the cluster uses it).
    pub async fn admin(&self) -> Result<EtcdAdmin, Error> {
        Ok(EtcdAdmin::connect(self.client_urls(), self.client_tls()).await?)
    }

    /// A raw etcd-client connected to the running members, for what tests do to the data
    /// (puts, deletes, compaction) rather than to the cluster.
    pub async fn kv_client(&self) -> Result<etcd_client::Client, Error> {
        let mut options = ConnectOptions::new().with_connect_timeout(Duration::from_secs(3));
        if let Some(certs) = &self.certs {
            options = options.with_tls(certs.client_tls_options());
        }
        etcd_client::Client::connect(self.client_urls(), Some(options))
            .await
            .map_err(|e| Error::Client(ClientError(e)))
    }

    /// Writes `key = value` through any running member (5 s limit).
    pub async fn put(
        &self,
        key: impl Into<Vec<u8>>,
        value: impl Into<Vec<u8>>,
    ) -> Result<(), Error> {
        let key = key.into();
        let shown = String::from_utf8_lossy(&key).into_owned();
        let failed = |source| Error::Put { key: shown, source };
        let mut client = self.kv_client().await?;
        match tokio::time::timeout(Duration::from_secs(5), client.put(key, value, None)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(failed(Some(ClientError(e)))),
            Err(_) => Err(failed(None)),
        }
    }

    /// Picks free ports for a member named `name` (not yet added or started).
    pub fn alloc_member(&self, name: &str) -> Result<MemberAddr, Error> {
        let scheme = if self.certs.is_some() {
            "https"
        } else {
            "http"
        };
        let port = || free_port().map_err(Error::NoFreePort);
        Ok(MemberAddr {
            name: name.to_owned(),
            client_url: format!("{scheme}://127.0.0.1:{}", port()?),
            peer_url: format!("{scheme}://127.0.0.1:{}", port()?),
        })
    }

    /// Starts a member joining this (running) cluster; returns its index. It must have been
    /// added (`member_add`) first, and `initial_cluster` must list every member, e.g. from
    /// [`initial_cluster_for`]. Does not wait: a learner never passes `health`, so wait on
    /// `status` of its client URL instead.
    pub fn start_joiner(
        &mut self,
        addr: MemberAddr,
        initial_cluster: &str,
    ) -> Result<usize, Error> {
        self.launch(addr, initial_cluster, ClusterState::Existing)
    }

    /// Waits until each of `members` serves a linearizable read.
    ///
    /// # Errors
    /// [`Error::Exited`] as soon as any running member exits; [`Error::Wait`] at the deadline.
    pub async fn wait_healthy(&mut self, members: &[usize], within: Duration) -> Result<(), Error> {
        let urls = members
            .iter()
            .map(|&i| self.client_url(i).map(str::to_owned))
            .collect::<Result<Vec<_>, _>>()?;
        // Short calls: before the first election a read waits for a leader, not for its timeout.
        let timeouts = Timeouts {
            connect: Duration::from_secs(1),
            request: Duration::from_secs(1),
            ..Timeouts::default()
        };
        let admin = EtcdAdmin::connect_with(urls.clone(), self.client_tls(), timeouts).await?;
        let healthy = wait_for(within, "etcd members healthy", || async {
            for url in &urls {
                admin.health(url).await?;
            }
            Ok::<_, crate::etcd::Error>(())
        });
        let exited = tokio::select! {
            healthy = healthy => return healthy.map_err(Error::from),
            exited = first_exit(&mut self.members) => exited,
        };
        let (index, status) = exited;
        Err(self.exited(index, status))
    }

    /// SIGKILLs member `index` and reaps it. A no-op if it is not running.
    pub async fn kill(&mut self, index: usize) -> Result<(), Error> {
        let member = self.get_mut(index)?;
        if let Some(mut child) = member.child.take() {
            child.kill().await.map_err(|source| Error::Signal {
                name: member.addr.name.clone(),
                source,
            })?;
        }
        Ok(())
    }

    /// SIGTERMs member `index` and waits for it to exit (SIGKILL after 10 s).
    pub async fn stop(&mut self, index: usize) -> Result<(), Error> {
        let member = self.get_mut(index)?;
        let Some(mut child) = member.child.take() else {
            return Ok(());
        };
        let signal_err = |source| Error::Signal {
            name: member.addr.name.clone(),
            source,
        };
        if let Some(pid) = child.id() {
            let pid = nix::unistd::Pid::from_raw(pid as i32);
            nix::sys::signal::kill(pid, Signal::SIGTERM).map_err(|e| signal_err(e.into()))?;
        }
        match tokio::time::timeout(STOP_WITHIN, child.wait()).await {
            Ok(waited) => waited.map(drop).map_err(signal_err),
            Err(_) => child.kill().await.map_err(signal_err),
        }
    }

    /// Starts member `index` again on its data dir, after [`kill`](Self::kill) or
    /// [`stop`](Self::stop). Does not wait for health.
    pub fn restart(&mut self, index: usize) -> Result<(), Error> {
        let member = self.get(index)?;
        if member.child.is_some() {
            return Err(Error::StillRunning {
                name: member.addr.name.clone(),
            });
        }
        let child = self.spawn(member)?;
        self.get_mut(index)?.child = Some(child);
        Ok(())
    }

    /// The OS process id of member `index`, while it runs.
    pub fn pid(&self, index: usize) -> Option<u32> {
        self.members.get(index)?.child.as_ref()?.id()
    }

    /// Whether member `index`'s process is alive.
    pub fn is_running(&mut self, index: usize) -> bool {
        self.members
            .get_mut(index)
            .and_then(|m| m.child.as_mut())
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    fn launch(
        &mut self,
        addr: MemberAddr,
        initial_cluster: &str,
        state: ClusterState,
    ) -> Result<usize, Error> {
        let member = TestMember {
            data_dir: self.dir.path().join(format!("{}.data", addr.name)),
            log_path: self.dir.path().join(format!("{}.log", addr.name)),
            addr,
            initial_cluster: initial_cluster.to_owned(),
            state,
            child: None,
        };
        let child = self.spawn(&member)?;
        self.members.push(TestMember {
            child: Some(child),
            ..member
        });
        Ok(self.members.len() - 1)
    }

    fn spawn(&self, member: &TestMember) -> Result<tokio::process::Child, Error> {
        let name = &member.addr.name;
        let io_err = |source| Error::Io {
            path: member.log_path.clone(),
            source,
        };
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&member.log_path)
            .map_err(io_err)?;
        let mut cmd = tokio::process::Command::new(self.bin.etcd());
        cmd.arg(format!("--name={name}"))
            .arg(format!("--data-dir={}", member.data_dir.display()))
            .arg(format!("--listen-client-urls={}", member.addr.client_url))
            .arg(format!(
                "--advertise-client-urls={}",
                member.addr.client_url
            ))
            .arg(format!("--listen-peer-urls={}", member.addr.peer_url))
            .arg(format!(
                "--initial-advertise-peer-urls={}",
                member.addr.peer_url
            ))
            .arg(format!("--initial-cluster={}", member.initial_cluster))
            .arg(format!("--initial-cluster-token={}", self.token))
            .arg(match member.state {
                ClusterState::New => "--initial-cluster-state=new",
                ClusterState::Existing => "--initial-cluster-state=existing",
            });
        if let Some(certs) = &self.certs {
            cmd.args(certs.etcd_flags());
        }
        cmd.args(&self.args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(io_err)?)
            .stderr(log)
            .kill_on_drop(true);
        // etcd reads ETCD_* variables as flags; ours (e.g. ETCD_BIN_DIR) are not for it.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("ETCD_") {
                cmd.env_remove(key);
            }
        }
        // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
        unsafe {
            cmd.pre_exec(|| {
                nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(io::Error::from)
            });
        }
        cmd.spawn().map_err(|source| Error::Spawn {
            name: name.clone(),
            source,
        })
    }

    fn exited(&mut self, index: usize, status: io::Result<ExitStatus>) -> Error {
        let member = &mut self.members[index];
        member.child = None;
        Error::Exited {
            name: member.addr.name.clone(),
            status: status.map_or_else(|e| format!("unknown: {e}"), |s| s.to_string()),
            log_tail: log_tail(&member.log_path, 30),
        }
    }

    fn get(&self, index: usize) -> Result<&TestMember, Error> {
        self.members.get(index).ok_or(Error::NoSuchMember { index })
    }

    fn get_mut(&mut self, index: usize) -> Result<&mut TestMember, Error> {
        self.members
            .get_mut(index)
            .ok_or(Error::NoSuchMember { index })
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        for child in self.members.iter_mut().filter_map(|m| m.child.as_mut()) {
            let _ = child.start_kill();
        }
        // Reap before the temp dir goes, so no member writes into a half-deleted dir.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        for child in self.members.iter_mut().filter_map(|m| m.child.as_mut()) {
            while matches!(child.try_wait(), Ok(None)) && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        if std::thread::panicking() {
            self.dir.disable_cleanup(true);
            let mut report = format!("etcd test cluster kept in {}\n", self.dir.path().display());
            for member in &self.members {
                let _ = writeln!(
                    report,
                    "--- {} ({}) last log lines:\n{}",
                    member.addr.name,
                    member.log_path.display(),
                    log_tail(&member.log_path, 15)
                );
            }
            eprintln!("{report}");
        }
    }
}

impl std::fmt::Debug for TestCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCluster")
            .field("version", &self.bin.version.to_string())
            .field("dir", &self.dir.path())
            .field(
                "members",
                &self.members.iter().map(|m| &m.addr).collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// The first running member to exit, with its status; pending forever if none runs.
async fn first_exit(members: &mut [TestMember]) -> (usize, io::Result<ExitStatus>) {
    let waits: Vec<_> = members
        .iter_mut()
        .enumerate()
        .filter_map(|(i, m)| {
            let child = m.child.as_mut()?;
            Some(Box::pin(async move { (i, child.wait().await) }))
        })
        .collect();
    if waits.is_empty() {
        return std::future::pending().await;
    }
    futures::future::select_all(waits).await.0
}

/// The last `lines` lines of a log file, or why it could not be read.
fn log_tail(path: &Path, lines: usize) -> String {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(e) => format!("<cannot read {}: {e}>", path.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::etcd::MemberId;

    fn member(id: u64, name: &str, peer: &str) -> Member {
        Member {
            id: MemberId(id),
            name: name.into(),
            peer_urls: vec![peer.into()],
            client_urls: vec![],
            is_learner: false,
        }
    }

    #[test]
    fn joiner_is_named_in_its_initial_cluster() {
        let joiner = MemberAddr {
            name: "m3".into(),
            client_url: "http://127.0.0.1:3".into(),
            peer_url: "http://127.0.0.1:4".into(),
        };
        let members = [
            member(1, "m0", "http://127.0.0.1:1"),
            member(2, "", "http://127.0.0.1:4"),
        ];
        assert_eq!(
            initial_cluster_for(&members, &joiner),
            "m0=http://127.0.0.1:1,m3=http://127.0.0.1:4"
        );
    }

    #[test]
    fn log_tail_keeps_the_last_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        std::fs::write(&path, "a\nb\nc\n").unwrap();
        assert_eq!(log_tail(&path, 2), "b\nc");
        assert!(log_tail(&dir.path().join("missing"), 2).starts_with("<cannot read"));
    }
}
