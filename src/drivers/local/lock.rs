//! One `etcd-operator local` per state dir: an OS file lock (`flock`) on
//! `<state dir>/operator.lock`, held for as long as the loop runs. Two loops on one state dir
//! would both act on the same members (two bootstraps, two membership changes at once); the
//! second refuses to start instead. The kernel releases the lock when the process exits,
//! however it exits (also `kill -9`), so a crash never leaves a stale lock behind. The file
//! is opened close-on-exec, so the etcd members the loop starts do not hold it.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use thiserror::Error;

/// The lock file's name under the state dir.
pub const LOCK_FILE: &str = "operator.lock";

/// Why the state dir could not be locked.
#[derive(Debug, Error)]
pub enum Error {
    #[error(
        "another etcd-operator local{} runs on state dir {} (it holds {}); stop it first, or give this one its own --state-dir",
        holder.as_ref().map(|p| format!(" (pid {p})")).unwrap_or_default(),
        state_dir.display(),
        path.display()
    )]
    Held {
        state_dir: PathBuf,
        path: PathBuf,
        /// The pid the holder wrote into the file, when readable.
        holder: Option<u32>,
    },
    #[error("locking {}", path.display())]
    Lock {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The held lock; dropping it releases it.
#[derive(Debug)]
pub struct StateDirLock {
    _file: File,
}

/// Takes the state dir's lock without waiting, creating the dir and file when missing, and
/// writes this process's pid into the file for the message a second process shows.
///
/// # Errors
/// [`Error::Held`] when another process holds it; [`Error::Lock`] for I/O failures.
pub fn lock(state_dir: &Path) -> Result<StateDirLock, Error> {
    let path = state_dir.join(LOCK_FILE);
    let io_err = |source| Error::Lock {
        path: path.clone(),
        source,
    };
    std::fs::create_dir_all(state_dir).map_err(io_err)?;
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(io_err)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            let mut text = String::new();
            let _ = file.read_to_string(&mut text);
            return Err(Error::Held {
                state_dir: state_dir.to_path_buf(),
                path,
                holder: text.trim().parse().ok(),
            });
        }
        Err(TryLockError::Error(source)) => return Err(io_err(source)),
    }
    file.set_len(0).map_err(io_err)?;
    file.seek(SeekFrom::Start(0)).map_err(io_err)?;
    writeln!(file, "{}", std::process::id()).map_err(io_err)?;
    Ok(StateDirLock { _file: file })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_one_state_dir_is_refused_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let first = lock(dir.path()).unwrap();
        // flock locks belong to the open file description, so a second open in this
        // process conflicts just as another process would.
        match lock(dir.path()) {
            Err(Error::Held { holder, .. }) => assert_eq!(holder, Some(std::process::id())),
            other => panic!("second lock: {other:?}"),
        }
        drop(first);
        lock(dir.path()).expect("free again once the holder is gone");
    }
}
