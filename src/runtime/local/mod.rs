//! [`LocalRuntime`]: members as etcd processes on this machine, on 127.0.0.1 ports, with
//! their state under one directory so a restarted operator re-adopts running members.
//!
//! Processes are detached (own process group, output to `etcd.log`) and outlive the
//! operator. Exits are reported as [`MemberExited`] events: at once for processes this
//! runtime spawned, within about a second for adopted ones. Talking to etcd is the
//! admin layer's job; the on-disk format is [`record`]'s, the command line [`flags`]'.

// The pod runtime shares `option_flags`.
mod certificates;

pub use certificates::operator_tls;
mod process;
mod record;

use std::collections::{BTreeSet, HashMap};
use std::hash::{BuildHasher, RandomState};
use std::io;
use std::net::TcpListener;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use tokio::sync::broadcast;
use tracing::{debug, info, warn};

use self::record::{LaunchRecord, MemberPaths, MemberRecord};
use super::InitialClusterState;
use super::flags;
use super::{
    CertificateSource, ClusterCertificates, ClusterRef, Error, MemberAddress, MemberExited,
    MemberLaunch, MemberRuntime, RuntimeMember, TlsFiles, Transport,
};

/// The snapshot a restored cluster's bootstrap members start from ([`LocalRuntime::set_seed`]):
/// downloaded and verified by the local restore driver before it is named here.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Seed {
    pub snapshot: PathBuf,
}

/// Ports members listen on unless [`LocalRuntime::with_port_range`] says otherwise: below
/// Linux's default ephemeral range (32768–60999), so an outgoing connection never takes
/// the port of a member that is briefly stopped for a restart.
pub const DEFAULT_PORTS: Range<u16> = 20000..32000;

/// How long a member may take to exit after SIGTERM before it gets SIGKILL.
pub const DEFAULT_STOP_GRACE: Duration = Duration::from_secs(10);

/// How often adopted processes (not our children, so not awaitable) are checked.
const ADOPTED_POLL: Duration = Duration::from_secs(1);

/// Exit events kept for a slow subscriber before it sees `Lagged`.
const EXIT_EVENTS: usize = 256;

/// Runs members as local etcd processes.
///
/// State lives in `<state>/clusters/<namespace>/<cluster>/<member>/`: `data/` (etcd's data
/// dir), `member.json` (address, launch flags, version, pid), `etcd.log` and `etcd.pid`.
/// The binary of version `v` is `<etcd_bin_dir>/<v>/etcd`.
///
/// Cloning is cheap and clones share exit events and locks.
#[derive(Clone)]
pub struct LocalRuntime {
    state_dir: PathBuf,
    bin_dir: PathBuf,
    ports: Range<u16>,
    stop_grace: Duration,
    shared: Arc<Shared>,
}

/// What every clone and every background task sees.
struct Shared {
    exits: broadcast::Sender<MemberExited>,
    /// Processes whose exit we report, by member.
    tracked: Mutex<HashMap<MemberKey, Tracked>>,
    /// Serializes the methods on one member.
    member_locks: Mutex<HashMap<MemberKey, Arc<tokio::sync::Mutex<()>>>>,
    /// Serializes port allocation, so two reservations never pick the same port.
    allocation: Mutex<()>,
    /// Serializes reading and issuing certificates.
    certificates: tokio::sync::Mutex<()>,
    poller_started: AtomicBool,
}

type MemberKey = (ClusterRef, String);

struct Tracked {
    pid: u32,
    data_dir_flag: String,
    /// Our child: a task awaits it. Otherwise adopted: the poller checks it.
    is_child: bool,
}

impl LocalRuntime {
    /// A runtime keeping state under `state_dir` and running binaries from `etcd_bin_dir`.
    ///
    /// Nothing is read or started until a method is called; [`MemberRuntime::list`]
    /// adopts a cluster's running members.
    pub fn new(state_dir: PathBuf, etcd_bin_dir: PathBuf) -> Self {
        // Processes are recognized by their `--data-dir=` argument, which must not depend
        // on the operator's working directory.
        let state_dir = std::path::absolute(&state_dir).unwrap_or(state_dir);
        let (exits, _) = broadcast::channel(EXIT_EVENTS);
        Self {
            state_dir,
            bin_dir: etcd_bin_dir,
            ports: DEFAULT_PORTS,
            stop_grace: DEFAULT_STOP_GRACE,
            shared: Arc::new(Shared {
                exits,
                tracked: Mutex::default(),
                member_locks: Mutex::default(),
                allocation: Mutex::default(),
                certificates: tokio::sync::Mutex::default(),
                poller_started: AtomicBool::new(false),
            }),
        }
    }

    /// Allocate member ports from `ports` instead of [`DEFAULT_PORTS`].
    pub fn with_port_range(mut self, ports: Range<u16>) -> Self {
        self.ports = ports;
        self
    }

    /// Wait `grace` after SIGTERM before SIGKILL instead of [`DEFAULT_STOP_GRACE`].
    pub fn with_stop_grace(mut self, grace: Duration) -> Self {
        self.stop_grace = grace;
        self
    }

    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    /// The certificate files of `cluster`'s members (see [`certificates`]).
    fn tls_files(&self, cluster: &ClusterRef) -> Result<TlsFiles, Error> {
        let dir = certificates::dir(&self.state_dir, cluster)?;
        let dir = dir.to_str().ok_or_else(|| Error::NonUtf8StateDir {
            path: self.state_dir.clone(),
        })?;
        Ok(TlsFiles::in_dir(dir))
    }

    /// Events for member processes that exit without this runtime stopping them.
    ///
    /// Covers processes this runtime spawned and those [`MemberRuntime::list`] adopted.
    pub fn subscribe_exits(&self) -> broadcast::Receiver<MemberExited> {
        self.shared.exits.subscribe()
    }

    /// The etcd binary of `version`.
    ///
    /// # Errors
    /// [`Error::BinaryMissing`] naming the path when it is not installed.
    pub fn binary(&self, version: &semver::Version) -> Result<PathBuf, Error> {
        let path = self.bin_dir.join(version.to_string()).join("etcd");
        if path.is_file() {
            Ok(path)
        } else {
            Err(Error::BinaryMissing {
                version: version.clone(),
                path,
            })
        }
    }

    /// The pid of the member's running process, `None` when it does not run.
    pub fn pid(&self, cluster: &ClusterRef, name: &str) -> Result<Option<u32>, Error> {
        let paths = self.paths(cluster, name)?;
        let flag = self.data_dir_flag(&paths)?;
        live_pid(&paths, &flag)
    }

    /// Makes `cluster` a restored cluster: a bootstrap member created from now on
    /// (`--initial-cluster-state new`) without a data dir gets one restored from `seed`'s
    /// snapshot first, with its launch's name, initial cluster and token, as the pod runtime's
    /// init containers do on Kubernetes. `None` ends that (the restore completed). Kept on
    /// disk, so a restarted operator resumes a restore half-way through its bootstrap.
    ///
    /// # Errors
    /// An invalid cluster name; writing or removing the seed file.
    pub fn set_seed(&self, cluster: &ClusterRef, seed: Option<&Seed>) -> Result<(), Error> {
        let path = record::seed_path(&self.state_dir, cluster)?;
        match seed {
            Some(seed) => {
                // Paths and strings only: serializing cannot fail.
                let json = serde_json::to_vec_pretty(seed).unwrap_or_default();
                record::write_file(&path, &json)
            }
            None => match std::fs::remove_file(&path) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                Err(source) => Err(Error::RemoveMember { path, source }),
            },
        }
    }

    /// The seed [`Self::set_seed`] recorded for `cluster`, if any.
    ///
    /// # Errors
    /// An invalid cluster name; reading or parsing the seed file.
    pub fn seed(&self, cluster: &ClusterRef) -> Result<Option<Seed>, Error> {
        let path = record::seed_path(&self.state_dir, cluster)?;
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|source| Error::ParseRecord { path, source }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(Error::ReadRecord { path, source }),
        }
    }

    /// Restores `launch`'s data dir from the cluster's seed when `launch` bootstraps a
    /// restored cluster and the member has no data dir yet; otherwise does nothing.
    async fn restore_from_seed(
        &self,
        cluster: &ClusterRef,
        launch: &MemberLaunch,
        address: &MemberAddress,
        paths: &MemberPaths,
        binary: &Path,
    ) -> Result<(), Error> {
        if launch.state != InitialClusterState::New || paths.data().exists() {
            return Ok(());
        }
        let Some(seed) = self.seed(cluster)? else {
            return Ok(());
        };
        let tools = binary.parent().unwrap_or(Path::new("."));
        crate::backup::restore_data_dir(
            tools,
            &seed.snapshot,
            &launch.name,
            &launch.initial_cluster,
            &address.peer_url,
            &launch.cluster_token,
            &paths.data(),
        )
        .await
        .map_err(|source| Error::RestoreFromSeed {
            name: launch.name.clone(),
            snapshot: seed.snapshot.clone(),
            source: Box::new(source),
        })?;
        info!(%cluster, member = %launch.name, snapshot = %seed.snapshot.display(), "data dir restored from the snapshot");
        Ok(())
    }

    /// The member's directory (data, record, log), whether or not it exists.
    pub fn member_dir(&self, cluster: &ClusterRef, name: &str) -> Result<PathBuf, Error> {
        Ok(self.paths(cluster, name)?.dir)
    }

    fn paths(&self, cluster: &ClusterRef, name: &str) -> Result<MemberPaths, Error> {
        MemberPaths::new(&self.state_dir, cluster, name)
    }

    fn data_dir_flag(&self, paths: &MemberPaths) -> Result<String, Error> {
        let data = paths.data();
        let data = data.to_str().ok_or_else(|| Error::NonUtf8StateDir {
            path: self.state_dir.clone(),
        })?;
        Ok(flags::data_dir_flag(data))
    }

    fn member_lock(&self, cluster: &ClusterRef, name: &str) -> Arc<tokio::sync::Mutex<()>> {
        lock(&self.shared.member_locks)
            .entry((cluster.clone(), name.to_string()))
            .or_default()
            .clone()
    }

    /// The member's record, reserving ports and writing it first when there is none.
    /// Callers hold the member lock.
    fn reserve_locked(
        &self,
        cluster: &ClusterRef,
        name: &str,
        paths: &MemberPaths,
        transport: Transport,
    ) -> Result<MemberRecord, Error> {
        let _allocating = lock(&self.shared.allocation);
        if let Some(record) = paths.read_record()? {
            return Ok(record);
        }
        let used: BTreeSet<u16> = record::all_records(&self.state_dir)?
            .iter()
            .flat_map(|r| [&r.address.peer_url, &r.address.client_url])
            .filter_map(|url| record::port_of(url))
            .collect();
        let (peer, client) = free_ports(&self.ports, &used)?;
        let record = MemberRecord {
            format: record::FORMAT,
            cluster: cluster.clone(),
            address: MemberAddress {
                name: name.to_string(),
                peer_url: format!("{}://127.0.0.1:{peer}", transport.scheme()),
                client_url: format!("{}://127.0.0.1:{client}", transport.scheme()),
            },
            launch: None,
        };
        paths.write_record(&record)?;
        info!(%cluster, member = name, peer, client, "reserved member ports");
        Ok(record)
    }

    /// Starts the process `launch` describes and records its pid. Callers hold the member
    /// lock and have stopped any previous process.
    fn start_locked(
        &self,
        cluster: &ClusterRef,
        paths: &MemberPaths,
        mut record: MemberRecord,
        mut launch: LaunchRecord,
        binary: &Path,
        once: &[String],
    ) -> Result<(), Error> {
        let name = record.address.name.clone();
        let flag = self.data_dir_flag(paths)?;
        // `once`: flags for this start only, never written to the record.
        let flags: Vec<String> = launch.flags.iter().chain(once).cloned().collect();
        // What the process finds on disk when it reads its certificates, just after this.
        let trust_stamp = if flags
            .iter()
            .any(|f| f.starts_with("--peer-trusted-ca-file"))
        {
            certificates::trust_stamp(&self.state_dir, cluster)?
        } else {
            None
        };
        let mut child = process::spawn(binary, &launch.version, &flags, &paths.dir, &paths.log())?;
        let Some(pid) = child.id() else {
            return Err(Error::SpawnMember {
                binary: binary.to_path_buf(),
                source: io::Error::other("process was reaped before its pid was read"),
            });
        };
        crate::failpoint::crash_point(crate::failpoint::LOCAL_AFTER_SPAWN);
        launch.pid = Some(pid);
        launch.started_at = Some(jiff::Timestamp::now());
        launch.trust_stamp = trust_stamp;
        let version = launch.version.clone();
        record.launch = Some(launch);
        // Without its pid on disk the process could not be found again: undo the start.
        if let Err(e) = paths
            .write_pid(pid)
            .and_then(|()| paths.write_record(&record))
        {
            let _ = child.start_kill();
            return Err(e);
        }
        let key = (cluster.clone(), name.clone());
        lock(&self.shared.tracked).insert(
            key.clone(),
            Tracked {
                pid,
                data_dir_flag: flag,
                is_child: true,
            },
        );
        let shared = Arc::downgrade(&self.shared);
        tokio::spawn(async move {
            let status = child.wait().await;
            debug!(member = key.1, pid, ?status, "member process reaped");
            if let Some(shared) = shared.upgrade() {
                shared.exited(&key, pid);
            }
        });
        info!(%cluster, member = name, pid, %version, "started member");
        Ok(())
    }

    /// Stops the member's process if it runs, without reporting its exit. Callers hold the
    /// member lock.
    async fn stop_locked(
        &self,
        cluster: &ClusterRef,
        name: &str,
        paths: &MemberPaths,
    ) -> Result<(), Error> {
        let flag = self.data_dir_flag(paths)?;
        // Untracked first: an exit we cause is not news.
        lock(&self.shared.tracked).remove(&(cluster.clone(), name.to_string()));
        let Some(pid) = live_pid(paths, &flag)? else {
            return Ok(());
        };
        info!(%cluster, member = name, pid, "stopping member");
        process::stop(pid, &flag, self.stop_grace).await
    }

    /// Reports `pid`'s exit as the member's, from now on.
    fn adopt(&self, cluster: &ClusterRef, name: &str, pid: u32, flag: String) {
        let key = (cluster.clone(), name.to_string());
        {
            let mut tracked = lock(&self.shared.tracked);
            if tracked.get(&key).is_some_and(|t| t.pid == pid) {
                return;
            }
            tracked.insert(
                key,
                Tracked {
                    pid,
                    data_dir_flag: flag,
                    is_child: false,
                },
            );
        }
        debug!(%cluster, member = name, pid, "adopted running member");
        if !self.shared.poller_started.swap(true, Ordering::SeqCst) {
            tokio::spawn(poll_adopted(Arc::downgrade(&self.shared)));
        }
    }
}

impl Shared {
    /// Sends the exit event if `pid` is still the member's tracked process.
    fn exited(&self, key: &MemberKey, pid: u32) {
        {
            let mut tracked = lock(&self.tracked);
            if tracked.get(key).is_none_or(|t| t.pid != pid) {
                return;
            }
            tracked.remove(key);
        }
        warn!(cluster = %key.0, member = key.1, pid, "member process exited");
        // No subscriber is fine: the next list shows the member stopped.
        let _ = self.exits.send(MemberExited {
            cluster: key.0.clone(),
            name: key.1.clone(),
        });
    }
}

/// Checks adopted processes every [`ADOPTED_POLL`] until the runtime is dropped.
async fn poll_adopted(shared: Weak<Shared>) {
    loop {
        tokio::time::sleep(ADOPTED_POLL).await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let adopted: Vec<(MemberKey, u32, String)> = lock(&shared.tracked)
            .iter()
            .filter(|(_, t)| !t.is_child)
            .map(|(k, t)| (k.clone(), t.pid, t.data_dir_flag.clone()))
            .collect();
        for (key, pid, flag) in adopted {
            if !process::is_alive(pid, &flag) {
                shared.exited(&key, pid);
            }
        }
    }
}

impl MemberRuntime for LocalRuntime {
    async fn reserve(
        &self,
        cluster: &ClusterRef,
        name: &str,
        transport: Transport,
    ) -> Result<MemberAddress, Error> {
        let paths = self.paths(cluster, name)?;
        let member = self.member_lock(cluster, name);
        let _member = member.lock().await;
        Ok(self
            .reserve_locked(cluster, name, &paths, transport)?
            .address)
    }

    async fn ensure_certificates(
        &self,
        cluster: &ClusterRef,
        source: CertificateSource<'_>,
    ) -> Result<ClusterCertificates, Error> {
        // Members are looked at only while a rotation waits, never in a steady state.
        let stamps: Option<Vec<Option<String>>> =
            if source.waits_for_members(&certificates::installed(&self.state_dir, cluster)?) {
                Some(
                    self.list(cluster)
                        .await?
                        .into_iter()
                        .map(|m| m.trust_stamp)
                        .collect(),
                )
            } else {
                None
            };
        let _issuing = self.shared.certificates.lock().await;
        certificates::ensure(
            &self.state_dir,
            cluster,
            jiff::Timestamp::now(),
            source,
            stamps.as_deref(),
        )
    }

    fn provided_certificate_names(&self, _: &ClusterRef) -> crate::certs::provided::RequiredNames {
        let dialled = vec![certificates::DIALLED.to_string()];
        crate::certs::provided::RequiredNames {
            server: dialled.clone(),
            peer: dialled,
        }
    }

    async fn create(&self, cluster: &ClusterRef, launch: &MemberLaunch) -> Result<(), Error> {
        let binary = self.binary(&launch.version)?;
        let name = launch.name.as_str();
        let paths = self.paths(cluster, name)?;
        let flag = self.data_dir_flag(&paths)?;
        let member = self.member_lock(cluster, name);
        let _member = member.lock().await;
        let mut record = self.reserve_locked(cluster, name, &paths, launch.transport)?;
        if let Some(pid) = live_pid(&paths, &flag)? {
            debug!(%cluster, member = name, pid, "member already runs");
            self.adopt(cluster, name, pid, flag);
            return Ok(());
        }
        self.restore_from_seed(cluster, launch, &record.address, &paths, &binary)
            .await?;
        let data = paths.data();
        let data = data.to_str().ok_or_else(|| Error::NonUtf8StateDir {
            path: self.state_dir.clone(),
        })?;
        let launch = LaunchRecord {
            version: launch.version.clone(),
            flags: flags::etcd_flags(
                launch,
                &record.address,
                data,
                Some(&self.tls_files(cluster)?),
            )?,
            pid: None,
            started_at: None,
            trust_stamp: None,
        };
        // The flags are on disk before the process exists, so a restart can reuse them.
        record.launch = Some(launch.clone());
        paths.write_record(&record)?;
        crate::failpoint::crash_point(crate::failpoint::LOCAL_AFTER_LAUNCH_RECORD);
        self.start_locked(cluster, &paths, record, launch, &binary, &[])
    }

    async fn restart(
        &self,
        cluster: &ClusterRef,
        name: &str,
        version: Option<semver::Version>,
    ) -> Result<(), Error> {
        let paths = self.paths(cluster, name)?;
        let member = self.member_lock(cluster, name);
        let _member = member.lock().await;
        let (record, mut launch) = launched(&paths, cluster, name)?;
        if let Some(version) = version {
            launch.version = version;
        }
        // Before stopping anything: a missing binary must not take a member down.
        let binary = self.binary(&launch.version)?;
        self.stop_locked(cluster, name, &paths).await?;
        self.start_locked(cluster, &paths, record, launch, &binary, &[])
    }

    /// Stops the process, then rewrites `member.json`: the address's scheme (same ports)
    /// and the recorded flags ([`flags::with_transport`]).
    async fn set_transport(
        &self,
        cluster: &ClusterRef,
        name: &str,
        transport: Transport,
    ) -> Result<MemberAddress, Error> {
        let paths = self.paths(cluster, name)?;
        let member = self.member_lock(cluster, name);
        let _member = member.lock().await;
        let (mut record, mut launch) = launched(&paths, cluster, name)?;
        let from = record.address.clone();
        let to = MemberAddress {
            name: from.name.clone(),
            peer_url: transport.with_scheme(&from.peer_url),
            client_url: transport.with_scheme(&from.client_url),
        };
        let flags = flags::with_transport(
            &launch.flags,
            &from,
            &to,
            transport,
            Some(&self.tls_files(cluster)?),
        )?;
        self.stop_locked(cluster, name, &paths).await?;
        if flags != launch.flags || to != from {
            launch.flags = flags;
            record.address = to.clone();
            record.launch = Some(launch);
            paths.write_record(&record)?;
            info!(%cluster, member = name, peer_url = %to.peer_url, client_url = %to.client_url, ?transport, "member stopped and moved to another transport");
        }
        Ok(to)
    }

    async fn delete(&self, cluster: &ClusterRef, name: &str) -> Result<(), Error> {
        let paths = self.paths(cluster, name)?;
        let member = self.member_lock(cluster, name);
        let _member = member.lock().await;
        self.stop_locked(cluster, name, &paths).await?;
        // Renamed first, in one step: an operator killed while the files go (issue 13, the
        // fault run) must not leave a member directory without its data, which no later pass
        // would take for a member to delete or to restart.
        let tombstone = tombstone_of(&paths.dir, name);
        remove_tree(&tombstone).await?;
        match tokio::fs::rename(&paths.dir, &tombstone).await {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(source) => {
                return Err(Error::RemoveMember {
                    path: paths.dir.clone(),
                    source,
                });
            }
        }
        crate::failpoint::crash_point(crate::failpoint::LOCAL_AFTER_TOMBSTONE);
        remove_tree(&tombstone).await?;
        info!(%cluster, member = name, "deleted member");
        Ok(())
    }

    async fn list(&self, cluster: &ClusterRef) -> Result<Vec<RuntimeMember>, Error> {
        let dir = record::cluster_dir(&self.state_dir, cluster)?;
        let mut members = Vec::new();
        for name in record::subdirs(&dir)? {
            if name.starts_with(TOMBSTONE_PREFIX) {
                // A delete that was cut short: finish it.
                warn!(%cluster, dir = name, "finishing an interrupted member delete");
                remove_tree(&dir.join(&name)).await?;
                continue;
            }
            let Ok(paths) = self.paths(cluster, &name) else {
                continue;
            };
            let Some(record) = paths.read_record()? else {
                continue;
            };
            let Some(launch) = record.launch else {
                continue;
            };
            let flag = self.data_dir_flag(&paths)?;
            let pid = live_pid(&paths, &flag)?;
            if let Some(pid) = pid {
                self.adopt(cluster, &name, pid, flag);
            }
            members.push(RuntimeMember {
                name,
                address: record.address,
                running: pid.is_some(),
                has_data: paths.has_data(),
                version: launch.version,
                started_at: launch.started_at.filter(|_| pid.is_some()),
                restart_keeps_data: true,
                trust_stamp: launch.trust_stamp,
            });
        }
        Ok(members)
    }

    fn supports_recovery(&self) -> bool {
        true
    }

    async fn set_aside(
        &self,
        cluster: &ClusterRef,
        name: &str,
        tag: &str,
    ) -> Result<Option<String>, Error> {
        let paths = self.paths(cluster, name)?;
        let member = self.member_lock(cluster, name);
        let _member = member.lock().await;
        self.stop_locked(cluster, name, &paths).await?;
        if !paths.dir.exists() {
            return Ok(None);
        }
        let kept = record::kept_dir(&self.state_dir, cluster, tag)?;
        std::fs::create_dir_all(&kept).map_err(|source| Error::CreateDir {
            path: kept.clone(),
            source,
        })?;
        let mut to = kept.join(name);
        let mut n = 1;
        while to.exists() {
            n += 1;
            to = kept.join(format!("{name}.{n}"));
        }
        // One rename: the member is in the cluster or kept, never half of each.
        std::fs::rename(&paths.dir, &to).map_err(|source| Error::Move {
            from: paths.dir.clone(),
            to: to.clone(),
            source,
        })?;
        let at = to
            .to_str()
            .map(str::to_owned)
            .ok_or_else(|| Error::NonUtf8StateDir {
                path: self.state_dir.clone(),
            })?;
        warn!(%cluster, member = name, kept = %at, "member stopped and its data kept aside for the recovery; never deleted");
        Ok(Some(at))
    }

    async fn put_back(&self, cluster: &ClusterRef, name: &str, at: &str) -> Result<(), Error> {
        let from = PathBuf::from(at);
        let root = record::kept_root(&self.state_dir);
        if !from.starts_with(&root) || at.contains("/../") {
            return Err(Error::NotKept {
                path: at.to_owned(),
            });
        }
        let paths = self.paths(cluster, name)?;
        let member = self.member_lock(cluster, name);
        let _member = member.lock().await;
        if !from.exists() {
            // Put back already (a rollback repeated after a crash).
            return Ok(());
        }
        if paths.dir.exists() {
            return Err(Error::MemberExists {
                name: name.to_owned(),
                at: at.to_owned(),
            });
        }
        if let Some(parent) = paths.dir.parent() {
            std::fs::create_dir_all(parent).map_err(|source| Error::CreateDir {
                path: parent.to_path_buf(),
                source,
            })?;
        }
        std::fs::rename(&from, &paths.dir).map_err(|source| Error::Move {
            from: from.clone(),
            to: paths.dir.clone(),
            source,
        })?;
        warn!(%cluster, member = name, from = %at, "kept data put back: the recovery was rolled back");
        Ok(())
    }

    async fn force_new_cluster(&self, cluster: &ClusterRef, name: &str) -> Result<(), Error> {
        let paths = self.paths(cluster, name)?;
        let member = self.member_lock(cluster, name);
        let _member = member.lock().await;
        let not_found = || Error::MemberNotFound {
            cluster: cluster.clone(),
            name: name.to_string(),
        };
        let record = paths.read_record()?.ok_or_else(not_found)?;
        let launch = record.launch.clone().ok_or_else(not_found)?;
        let binary = self.binary(&launch.version)?;
        self.stop_locked(cluster, name, &paths).await?;
        warn!(%cluster, member = name, "starting the member once with --force-new-cluster");
        self.start_locked(
            cluster,
            &paths,
            record,
            launch,
            &binary,
            &[flags::FORCE_NEW_CLUSTER.to_owned()],
        )
    }

    async fn stop_all(&self, cluster: &ClusterRef) -> Result<(), Error> {
        let dir = record::cluster_dir(&self.state_dir, cluster)?;
        let stops = record::subdirs(&dir)?.into_iter().map(|name| async move {
            let paths = self.paths(cluster, &name)?;
            let member = self.member_lock(cluster, &name);
            let _member = member.lock().await;
            self.stop_locked(cluster, &name, &paths).await
        });
        // Concurrently, so the grace periods overlap.
        futures::future::join_all(stops)
            .await
            .into_iter()
            .collect::<Result<Vec<()>, Error>>()?;
        Ok(())
    }
}

/// Names of member directories being deleted; never a member name (those cannot start
/// with a dot), so a listing skips them.
const TOMBSTONE_PREFIX: &str = ".deleting-";

/// The record of a member that was created, and how it was last launched.
///
/// # Errors
/// [`Error::MemberNotFound`] when it was never created (no record, or only reserved).
fn launched(
    paths: &MemberPaths,
    cluster: &ClusterRef,
    name: &str,
) -> Result<(MemberRecord, LaunchRecord), Error> {
    let not_found = || Error::MemberNotFound {
        cluster: cluster.clone(),
        name: name.to_string(),
    };
    let record = paths.read_record()?.ok_or_else(not_found)?;
    let launch = record.launch.clone().ok_or_else(not_found)?;
    Ok((record, launch))
}

fn tombstone_of(member_dir: &Path, name: &str) -> PathBuf {
    member_dir.with_file_name(format!("{TOMBSTONE_PREFIX}{name}"))
}

/// Removes `dir` and everything in it; a missing `dir` is fine.
async fn remove_tree(dir: &Path) -> Result<(), Error> {
    match tokio::fs::remove_dir_all(dir).await {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(Error::RemoveMember {
            path: dir.to_path_buf(),
            source,
        }),
    }
}

/// The pid of the process running as this member: the pid file's when that process still
/// runs as this member, else one found by its `--data-dir` in `/proc` (started by an
/// operator that died before writing the pid file), whose pid is then written down.
fn live_pid(paths: &MemberPaths, data_dir_flag: &str) -> Result<Option<u32>, Error> {
    if let Some(pid) = paths
        .read_pid()?
        .filter(|pid| process::is_alive(*pid, data_dir_flag))
    {
        return Ok(Some(pid));
    }
    let Some(pid) = process::find(data_dir_flag) else {
        return Ok(None);
    };
    warn!(member = %paths.dir.display(), pid, "found the member's process without its pid file; adopting it");
    paths.write_pid(pid)?;
    Ok(Some(pid))
}

/// Two ports in `range` that no record uses and that are free on 127.0.0.1 now, searched
/// from a random point so runtimes on other state dirs rarely race for the same ones.
fn free_ports(range: &Range<u16>, used: &BTreeSet<u16>) -> Result<(u16, u16), Error> {
    let len = u64::from(range.end.saturating_sub(range.start));
    let offset = if len == 0 {
        0
    } else {
        RandomState::new().hash_one(()) % len
    };
    let mut free = (0..len)
        .filter_map(|i| u16::try_from(u64::from(range.start) + (offset + i) % len).ok())
        .filter(|port| !used.contains(port))
        .filter(|port| TcpListener::bind(("127.0.0.1", *port)).is_ok());
    match (free.next(), free.next()) {
        (Some(peer), Some(client)) => Ok((peer, client)),
        _ => Err(Error::PortsExhausted {
            range: range.clone(),
        }),
    }
}

/// A poisoned lock only means another thread panicked mid-update of plain maps; the data
/// is still usable.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_ports_skips_recorded_ones() {
        let used: BTreeSet<u16> = (20000..20010).filter(|p| *p != 20004).collect();
        // The only unrecorded ports; fine unless something on this machine holds them.
        let range = 20000..20011;
        let (a, b) = free_ports(&range, &used).unwrap();
        assert_eq!(BTreeSet::from([a, b]), BTreeSet::from([20004, 20010]));
    }

    #[test]
    fn too_small_a_range_is_exhausted() {
        assert!(matches!(
            free_ports(&(20000..20001), &BTreeSet::new()),
            Err(Error::PortsExhausted { .. })
        ));
    }
}
