//! The real `etcd-operator local` binary as a child process, for the tests that kill it
//! (the state-dir lock, the crash points, the randomized fault run): its own state dir and
//! YAML file, `FAILPOINTS` when asked, stderr kept in a file to show on failure. Every
//! process under the state dir is killed when the [`LocalOperatorDir`] is dropped.

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;
use tokio::process::{Child, Command};

use crate::api::EtcdCluster;
use crate::api::cluster::EtcdClusterStatus;
use crate::drivers::local::store::StatusFiles;
use crate::testing::etcd_bin;
use crate::testing::operator::kill_processes_under;
use crate::testing::wait::wait_for;

/// A temp dir with a YAML file and a state dir, for operator processes to share.
pub struct LocalOperatorDir {
    dir: tempfile::TempDir,
    binary: PathBuf,
    /// Extra `etcd-operator local` arguments every start gets.
    pub args: Vec<String>,
    starts: usize,
}

impl Drop for LocalOperatorDir {
    fn drop(&mut self) {
        kill_processes_under(self.dir.path());
    }
}

/// One running operator process.
pub struct OperatorProcess {
    child: Child,
    stderr: PathBuf,
}

impl LocalOperatorDir {
    /// A fresh dir; `binary` is the test's `env!("CARGO_BIN_EXE_etcd-operator")`.
    pub fn new(binary: &str) -> Self {
        Self {
            dir: tempfile::tempdir().expect("tempdir"),
            binary: PathBuf::from(binary),
            args: vec![
                "--resync-interval".into(),
                "500ms".into(),
                "--unhealthy-grace".into(),
                "6s".into(),
                // As `operator::fast_policy`: a member restarted in place that stays
                // unhealthy is replaced 20 s after it went down, not 10 min.
                "--replace-grace".into(),
                "20s".into(),
                "--upgrade-health-deadline".into(),
                "60s".into(),
            ],
            starts: 0,
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    pub fn file(&self) -> PathBuf {
        self.dir.path().join("cluster.yaml")
    }

    /// Writes the YAML file by write-then-rename, as editors do.
    pub fn write(&self, yaml: &str) {
        let tmp = self.dir.path().join(".cluster.yaml.tmp");
        std::fs::write(&tmp, yaml).expect("write yaml");
        std::fs::rename(&tmp, self.file()).expect("rename yaml");
    }

    /// Starts `etcd-operator local` on this dir, with `FAILPOINTS=failpoints` when given.
    pub fn start(&mut self, failpoints: Option<&str>) -> OperatorProcess {
        self.starts += 1;
        let stderr = self
            .dir
            .path()
            .join(format!("operator-{}.log", self.starts));
        let log = std::fs::File::create(&stderr).expect("operator log");
        let mut cmd = Command::new(&self.binary);
        cmd.arg("local")
            .arg("--file")
            .arg(self.file())
            .arg("--state-dir")
            .arg(self.state_dir())
            .arg("--etcd-bin-dir")
            .arg(etcd_bin::etcd_bin_dir())
            .args(["--metrics-addr", "off"])
            .args(&self.args)
            .env("RUST_LOG", "info")
            .env_remove("FAILPOINTS")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true);
        if let Some(f) = failpoints {
            cmd.env("FAILPOINTS", f);
        }
        let child = cmd.spawn().expect("start etcd-operator local");
        OperatorProcess { child, stderr }
    }

    /// The status file of EtcdCluster `name`.
    pub fn status(&self, name: &str) -> Option<EtcdClusterStatus> {
        let doc: Option<EtcdCluster> = StatusFiles::new(&self.state_dir()).read(name).ok()?;
        doc?.status
    }

    /// Waits until the status of `name` satisfies `pred`.
    pub async fn wait_status(
        &self,
        name: &str,
        within: Duration,
        what: &str,
        pred: impl Fn(&EtcdClusterStatus) -> bool,
    ) -> Result<EtcdClusterStatus, String> {
        wait_for(within, what, || async {
            match self.status(name) {
                Some(s) if pred(&s) => Ok(s),
                other => Err(format!(
                    "{:?}",
                    other.map(|s| (s.phase, s.ready_members, s.members.len()))
                )),
            }
        })
        .await
        .map_err(|e| e.to_string())
    }
}

impl OperatorProcess {
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// What the process wrote to stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Waits up to `within` for the process to exit by itself.
    pub async fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        tokio::time::timeout(within, self.child.wait())
            .await
            .ok()
            .and_then(Result::ok)
    }

    /// Whether the process still runs.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// `kill -9`.
    pub async fn kill9(&mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }

    /// Ctrl-C, then waits for a clean exit (members keep running).
    pub async fn interrupt(&mut self, within: Duration) -> Option<ExitStatus> {
        if let Some(pid) = self.pid().and_then(|p| i32::try_from(p).ok()) {
            let _ = signal::kill(Pid::from_raw(pid), Signal::SIGINT);
        }
        self.wait_exit(within).await
    }
}
