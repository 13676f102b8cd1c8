//! A local operator loop for tests and benchmarks: its own state dir and YAML file, helpers
//! to edit the file and wait on the status files, and cleanup that kills every process under
//! the state dir when dropped, also on panic.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::api::cluster::ClusterPhase;
use crate::api::{
    EtcdBackup, EtcdBackupStatus, EtcdCluster, EtcdClusterStatus, EtcdRestore, EtcdRestoreStatus,
};
use crate::drivers::local::store::StatusFiles;
use crate::drivers::local::{self, Options};
use crate::etcd::{ClusterInfo, EtcdAdmin};
use crate::plan::Policy;
use crate::testing::etcd_bin;
use crate::testing::wait::wait_for;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// How long scenario waits may take before they fail.
pub const LONG: Duration = Duration::from_secs(90);

/// Kills every process whose command line mentions `dir` (the members of one test).
pub fn kill_processes_under(dir: &Path) {
    let needle = dir.to_string_lossy().to_string();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return;
    };
    for e in entries.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if let Ok(cmd) = std::fs::read(e.path().join("cmdline"))
            && String::from_utf8_lossy(&cmd).contains(&needle)
        {
            let pid = nix::unistd::Pid::from_raw(pid);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        }
    }
}

struct Operator {
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), local::Error>>,
}

/// One scenario: a state dir, a YAML file, an operator loop, and cleanup on drop.
pub struct Scenario {
    dir: tempfile::TempDir,
    file: PathBuf,
    pub policy: Policy,
    /// The operator loop's metrics (the same registry across operator restarts).
    pub metrics: crate::metrics::Metrics,
    op: Option<Operator>,
}

impl Drop for Scenario {
    fn drop(&mut self) {
        if let Some(op) = self.op.take() {
            op.task.abort();
        }
        kill_processes_under(self.dir.path());
    }
}

/// An EtcdCluster document; `extra` is appended under `spec:` (indent it two spaces).
pub fn cluster_yaml(name: &str, size: i32, version: &str, extra: &str) -> String {
    format!(
        "apiVersion: etcd.operator.dev/v1alpha1\nkind: EtcdCluster\nmetadata:\n  name: {name}\nspec:\n  size: {size}\n  version: {version}\n{extra}"
    )
}

impl Scenario {
    pub fn new(policy: Policy) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("cluster.yaml");
        Self {
            dir,
            file,
            policy,
            metrics: crate::metrics::Metrics::new(),
            op: None,
        }
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    pub fn write(&self, yaml: &str) {
        // Write-then-rename, as editors do, so the loop never reads half a file.
        let tmp = self.dir.path().join(".cluster.yaml.tmp");
        std::fs::write(&tmp, yaml).unwrap();
        std::fs::rename(&tmp, &self.file).unwrap();
    }

    pub fn start(&mut self) {
        let (tx, rx) = oneshot::channel();
        let opts = Options {
            files: vec![self.file.clone()],
            state_dir: self.state_dir(),
            etcd_bin_dir: etcd_bin::etcd_bin_dir(),
            stop_members_on_exit: false,
            resync_interval: Duration::from_millis(500),
            policy: self.policy.clone(),
            metrics: self.metrics.clone(),
            backup_memory_budget_mib: crate::backup::DEFAULT_MEMORY_BUDGET_MIB,
        };
        let task = tokio::spawn(local::run(opts, async move {
            let _ = rx.await;
        }));
        self.op = Some(Operator {
            shutdown: Some(tx),
            task,
        });
    }

    pub async fn stop_operator(&mut self) {
        if let Some(mut op) = self.op.take() {
            if let Some(tx) = op.shutdown.take() {
                let _ = tx.send(());
            }
            op.task.await.unwrap().unwrap();
        }
    }

    pub fn status(&self, name: &str) -> Option<EtcdCluster> {
        StatusFiles::new(&self.state_dir())
            .read(name)
            .ok()
            .flatten()
    }

    /// Waits until the status of `name` satisfies `pred`.
    pub async fn wait_status(
        &self,
        name: &str,
        what: &str,
        pred: impl Fn(&EtcdClusterStatus) -> bool,
    ) -> EtcdClusterStatus {
        wait_for(LONG, what, || async {
            let st = self.status(name).and_then(|c| c.status);
            match st {
                Some(s) if pred(&s) => Ok(s),
                other => Err(format!(
                    "{:?}",
                    other.map(|s| (s.phase, s.ready_members, s.members.len()))
                )),
            }
        })
        .await
        .unwrap()
    }

    /// The status of EtcdBackup `name`, from its status file.
    pub fn backup_status(&self, name: &str) -> Option<EtcdBackupStatus> {
        let doc: Option<EtcdBackup> = StatusFiles::new(&self.state_dir()).read(name).ok()?;
        doc?.status
    }

    /// The status of EtcdRestore `name`, from its status file.
    pub fn restore_status(&self, name: &str) -> Option<EtcdRestoreStatus> {
        let doc: Option<EtcdRestore> = StatusFiles::new(&self.state_dir()).read(name).ok()?;
        doc?.status
    }

    /// Waits until the status of EtcdBackup `name` satisfies `pred`.
    pub async fn wait_backup(
        &self,
        name: &str,
        what: &str,
        pred: impl Fn(&EtcdBackupStatus) -> bool,
    ) -> EtcdBackupStatus {
        wait_for(LONG, what, || async {
            match self.backup_status(name) {
                Some(s) if pred(&s) => Ok(s),
                other => Err(format!("{:?}", other.map(|s| s.conditions))),
            }
        })
        .await
        .unwrap()
    }

    /// Waits until the status of EtcdRestore `name` satisfies `pred`.
    pub async fn wait_restore(
        &self,
        name: &str,
        what: &str,
        pred: impl Fn(&EtcdRestoreStatus) -> bool,
    ) -> EtcdRestoreStatus {
        wait_for(LONG, what, || async {
            match self.restore_status(name) {
                Some(s) if pred(&s) => Ok(s),
                other => Err(format!("{:?}", other.map(|s| (s.phase, s.conditions)))),
            }
        })
        .await
        .unwrap()
    }

    /// Waits for `size` healthy voters, no learners, phase Running at `version`.
    pub async fn wait_running(&self, name: &str, size: usize, version: &str) -> EtcdClusterStatus {
        self.wait_status(
            name,
            &format!("{name} running with {size} members at {version}"),
            |s| {
                s.phase == ClusterPhase::Running
                    && s.members.len() == size
                    && s.members.iter().all(|m| m.healthy && !m.is_learner)
                    && s.members
                        .iter()
                        .all(|m| m.version.as_deref() == Some(version))
            },
        )
        .await
    }
}

/// Client URLs of the members in a status.
pub fn client_urls(st: &EtcdClusterStatus) -> Vec<String> {
    st.members
        .iter()
        .filter_map(|m| m.client_url.clone())
        .collect()
}

/// The application client certificate of a TLS cluster, from the directory its status
/// names (what a user of the local runtime is told to use); `None` for plaintext.
pub fn client_tls(st: &EtcdClusterStatus) -> Option<crate::etcd::TlsConfig> {
    let dir = st.tls.as_ref()?.client_certificate.as_ref()?;
    super::converged::client_tls_in(Path::new(dir))
}

/// The member list, asked of etcd itself.
pub async fn members_via_etcd(st: &EtcdClusterStatus) -> ClusterInfo {
    let admin = EtcdAdmin::connect(client_urls(st), client_tls(st))
        .await
        .unwrap();
    admin.member_list().await.unwrap()
}

/// A KV client on every member (with the cluster's client certificate when it serves TLS).
pub async fn kv(st: &EtcdClusterStatus) -> etcd_client::Client {
    etcd_client::Client::connect(
        client_urls(st),
        Some(super::converged::connect_options(client_tls(st).as_ref())),
    )
    .await
    .unwrap()
}

/// Writes `n` keys `<prefix>/<i>` = `v<i>`.
pub async fn put_keys(st: &EtcdClusterStatus, prefix: &str, n: usize) {
    let mut c = kv(st).await;
    for i in 0..n {
        c.put(format!("{prefix}/{i:04}"), format!("v{i}"), None)
            .await
            .unwrap();
    }
}

/// Asserts the keys [`put_keys`] wrote are all there.
///
/// A status file can say "all healthy" from the pass before a member was killed while its
/// restarted process is not listening yet, so the read is retried (with a deadline) until a
/// member answers; what it answers is then asserted exactly.
pub async fn assert_keys(st: &EtcdClusterStatus, prefix: &str, n: usize) {
    let c = kv(st).await;
    let resp = wait_for(Duration::from_secs(20), "a member answers the read", || {
        let mut c = c.clone();
        let key = format!("{prefix}/");
        async move {
            c.get(key, Some(etcd_client::GetOptions::new().with_prefix()))
                .await
        }
    })
    .await
    .unwrap();
    assert_eq!(resp.kvs().len(), n, "keys under {prefix}");
    for (i, kv) in resp.kvs().iter().enumerate() {
        assert_eq!(kv.value_str().unwrap(), format!("v{i}"));
    }
}

/// Short grace periods so failure scenarios finish quickly.
pub fn fast_policy() -> Policy {
    Policy {
        unhealthy_grace: Duration::from_secs(6),
        replace_grace: Duration::from_secs(20),
        upgrade_health_deadline: Duration::from_secs(60),
    }
}

/// The newest installed 3.`minor`.x version.
pub fn latest(minor: u64) -> String {
    etcd_bin::bin_for_minor(3, minor)
        .unwrap_or_else(|e| {
            panic!("no etcd 3.{minor}.x installed ({e}); run scripts/install-test-deps")
        })
        .version
        .to_string()
}

/// The live pid of a member of a local cluster in namespace `default`.
pub fn member_pid_opt(state: &Path, cluster: &str, member: &str) -> Option<nix::unistd::Pid> {
    let p = state
        .join("clusters/default")
        .join(cluster)
        .join(member)
        .join("etcd.pid");
    let pid: i32 = std::fs::read_to_string(p).ok()?.trim().parse().ok()?;
    let pid = nix::unistd::Pid::from_raw(pid);
    nix::sys::signal::kill(pid, None).ok().map(|_| pid)
}

/// The client URLs the local runtime recorded for `cluster`'s members (`member.json`), by
/// member name: what each listens at now, also in the middle of a move to TLS.
pub fn recorded_client_urls(state: &Path, cluster: &str) -> Vec<String> {
    let Ok(dirs) = std::fs::read_dir(state.join("clusters/default").join(cluster)) else {
        return Vec::new();
    };
    let mut urls: Vec<(String, String)> = dirs
        .filter_map(Result::ok)
        .filter_map(|d| {
            let json = std::fs::read(d.path().join("member.json")).ok()?;
            let record: serde_json::Value = serde_json::from_slice(&json).ok()?;
            record.get("launch")?;
            let url = record.pointer("/address/client_url")?.as_str()?.to_string();
            Some((d.file_name().to_string_lossy().into_owned(), url))
        })
        .collect();
    urls.sort();
    urls.into_iter().map(|(_, url)| url).collect()
}

/// Like [`member_pid_opt`], panicking when the member has no live process.
pub fn member_pid(state: &Path, cluster: &str, member: &str) -> nix::unistd::Pid {
    member_pid_opt(state, cluster, member).unwrap_or_else(|| panic!("{member} has no live pid"))
}
