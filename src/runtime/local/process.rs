//! One etcd process: spawning it detached from the operator, recognizing it by pid, and
//! stopping it. Which process to start or stop, and the records, are `local.rs`'s job.

use std::ffi::OsStr;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;
use tokio::time::Instant;

use crate::runtime::Error;

/// How often a stopping process is checked.
const STOP_POLL: Duration = Duration::from_millis(20);
/// How long a process may take to disappear after SIGKILL.
const KILL_WAIT: Duration = Duration::from_secs(5);

/// Starts `binary` with `flags` in its own process group, stdout and stderr appended to
/// `log`, so it outlives the operator and is not hit by the operator's terminal signals.
///
/// The returned child is not killed when dropped.
pub fn spawn(
    binary: &Path,
    version: &semver::Version,
    flags: &[String],
    work_dir: &Path,
    log: &Path,
) -> Result<tokio::process::Child, Error> {
    let open_err = |source| Error::OpenLog {
        path: log.to_path_buf(),
        source,
    };
    let mut out = OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(open_err)?;
    writeln!(
        out,
        "=== etcd-operator: starting etcd {version} at {}",
        jiff::Timestamp::now()
    )
    .map_err(open_err)?;
    let err = out.try_clone().map_err(open_err)?;
    let mut cmd = tokio::process::Command::new(binary);
    cmd.args(flags)
        .current_dir(work_dir)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0)
        .kill_on_drop(false);
    // etcd reads ETCD_* variables as flags; the operator's own must not leak into members.
    for (key, _) in std::env::vars_os() {
        if key.as_bytes().starts_with(b"ETCD_") {
            cmd.env_remove(key);
        }
    }
    cmd.spawn().map_err(|source| Error::SpawnMember {
        binary: binary.to_path_buf(),
        source,
    })
}

/// Whether `pid` is a live process started with `data_dir_flag`.
///
/// Reading the command line guards against pid reuse; a zombie has an empty command line
/// and so counts as gone, which is what callers want (its sockets are closed).
pub fn is_alive(pid: u32, data_dir_flag: &str) -> bool {
    let Ok(cmdline) = fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    cmdline
        .split(|b| *b == 0)
        .any(|arg| OsStr::from_bytes(arg) == OsStr::new(data_dir_flag))
}

/// The live process started with `data_dir_flag`, found by its command line in `/proc`:
/// for a member whose pid file is missing or stale because the operator died between
/// spawning it and writing the pid (issue 13, crash point `local-after-spawn`). Without it
/// that process would run on unseen, and a second one would be started on its data dir.
pub fn find(data_dir_flag: &str) -> Option<u32> {
    let me = std::process::id();
    fs::read_dir("/proc")
        .ok()?
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| *pid != me)
        .find(|pid| is_alive(*pid, data_dir_flag))
}

/// Stops the process: SIGTERM (and SIGCONT, so a stopped process sees it), then SIGKILL
/// when it still runs after `grace`. Returns once it is gone.
///
/// # Errors
/// [`Error::KillMember`] when a signal cannot be sent, [`Error::StopMember`] when the
/// process survives SIGKILL.
pub async fn stop(pid: u32, data_dir_flag: &str, grace: Duration) -> Result<(), Error> {
    if !is_alive(pid, data_dir_flag) {
        return Ok(());
    }
    send(pid, Signal::SIGTERM)?;
    send(pid, Signal::SIGCONT)?;
    if wait_gone(pid, data_dir_flag, grace).await {
        return Ok(());
    }
    tracing::warn!(pid, ?grace, "member ignored SIGTERM, sending SIGKILL");
    send(pid, Signal::SIGKILL)?;
    if wait_gone(pid, data_dir_flag, KILL_WAIT).await {
        return Ok(());
    }
    Err(Error::StopMember { pid })
}

fn send(pid: u32, sig: Signal) -> Result<(), Error> {
    let raw = i32::try_from(pid).map_err(|_| Error::KillMember {
        pid,
        source: Errno::ESRCH,
    })?;
    match signal::kill(Pid::from_raw(raw), sig) {
        // Gone between the check and the signal: that is what we wanted.
        Ok(()) | Err(Errno::ESRCH) => Ok(()),
        Err(source) => Err(Error::KillMember { pid, source }),
    }
}

async fn wait_gone(pid: u32, data_dir_flag: &str, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if !is_alive(pid, data_dir_flag) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(STOP_POLL).await;
    }
}
