//! Finds real etcd releases for tests: `$ETCD_BIN_DIR/<version>/{etcd,etcdctl,etcdutl}`,
//! by default `<repo>/.deps/etcd` (filled by `scripts/install-test-deps`), and runs their
//! offline tools.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::Error;

/// Overrides where etcd releases are looked up.
pub const ETCD_BIN_DIR_ENV: &str = "ETCD_BIN_DIR";

/// Where etcd releases live: `$ETCD_BIN_DIR` if set, else `<repo>/.deps/etcd`.
pub fn etcd_bin_dir() -> PathBuf {
    match std::env::var_os(ETCD_BIN_DIR_ENV) {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => Path::new(env!("CARGO_MANIFEST_DIR")).join(".deps/etcd"),
    }
}

/// One installed etcd release.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EtcdBin {
    pub version: semver::Version,
    pub dir: PathBuf,
}

impl EtcdBin {
    pub fn etcd(&self) -> PathBuf {
        self.dir.join("etcd")
    }

    pub fn etcdctl(&self) -> PathBuf {
        self.dir.join("etcdctl")
    }

    /// `etcdutl`, which 3.4 does not have.
    pub fn etcdutl(&self) -> Option<PathBuf> {
        Some(self.dir.join("etcdutl")).filter(|p| p.is_file())
    }

    /// The offline tool for snapshot files: `etcdutl` from 3.5, `etcdctl` before.
    pub fn snapshot_tool(&self) -> PathBuf {
        self.etcdutl().unwrap_or_else(|| self.etcdctl())
    }

    /// `snapshot status` of a snapshot file, as this release's offline tool reads it.
    ///
    /// # Errors
    /// [`Error::Tool`] when the tool rejects the file (e.g. truncated or bad checksum).
    pub async fn snapshot_status(&self, snapshot: &Path) -> Result<SnapshotStatus, Error> {
        let tool = self.snapshot_tool();
        let output = tokio::process::Command::new(&tool)
            .args(["snapshot", "status", "--write-out=json"])
            .arg(snapshot)
            .env_remove("ETCDCTL_ENDPOINTS")
            .output()
            .await
            .map_err(|source| Error::Spawn {
                name: tool.display().to_string(),
                source,
            })?;
        if !output.status.success() {
            return Err(Error::Tool {
                tool,
                status: output.status,
                stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
            });
        }
        serde_json::from_slice(&output.stdout).map_err(|source| Error::ToolOutput { tool, source })
    }

    /// Restores a snapshot file into a new single-member data dir, as this release's offline
    /// tool does (it checks the integrity hash etcd appends to a snapshot).
    ///
    /// # Errors
    /// [`Error::Tool`] when the tool rejects the file.
    pub async fn snapshot_restore(&self, snapshot: &Path, data_dir: &Path) -> Result<(), Error> {
        let tool = self.snapshot_tool();
        let output = tokio::process::Command::new(&tool)
            .args(["snapshot", "restore"])
            .arg(snapshot)
            .arg(format!("--data-dir={}", data_dir.display()))
            .env_remove("ETCDCTL_ENDPOINTS")
            .output()
            .await
            .map_err(|source| Error::Spawn {
                name: tool.display().to_string(),
                source,
            })?;
        if output.status.success() {
            Ok(())
        } else {
            Err(Error::Tool {
                tool,
                status: output.status,
                stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
            })
        }
    }
}

/// What `snapshot status` reports about a snapshot file.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotStatus {
    pub hash: u64,
    pub revision: i64,
    pub total_key: u64,
    pub total_size: u64,
}

/// Every release under [`etcd_bin_dir`], oldest first.
pub fn available_versions() -> Vec<EtcdBin> {
    versions_in(&etcd_bin_dir())
}

/// The release with exactly `version` (e.g. `"3.5.16"`).
pub fn bin_for_version(version: &str) -> Result<EtcdBin, Error> {
    let dir = etcd_bin_dir();
    versions_in(&dir)
        .into_iter()
        .find(|b| b.version.to_string() == version)
        .ok_or_else(|| Error::EtcdNotInstalled {
            wanted: version.to_owned(),
            dir,
        })
}

/// The newest installed release of `major.minor`, e.g. `bin_for_minor(3, 4)`.
pub fn bin_for_minor(major: u64, minor: u64) -> Result<EtcdBin, Error> {
    let dir = etcd_bin_dir();
    versions_in(&dir)
        .into_iter()
        .rev()
        .find(|b| b.version.major == major && b.version.minor == minor)
        .ok_or_else(|| Error::EtcdNotInstalled {
            wanted: format!("{major}.{minor}.x"),
            dir,
        })
}

/// Subdirectories named by a version that hold an `etcd` binary, oldest first.
fn versions_in(dir: &Path) -> Vec<EtcdBin> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut found: Vec<EtcdBin> = entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let name = entry.file_name();
            let version = semver::Version::parse(name.to_str()?.trim_start_matches('v')).ok()?;
            let dir = entry.path();
            dir.join("etcd")
                .is_file()
                .then_some(EtcdBin { version, dir })
        })
        .collect();
    found.sort_by(|a, b| a.version.cmp(&b.version));
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_release(root: &Path, name: &str, with_etcd: bool) {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        if with_etcd {
            std::fs::write(dir.join("etcd"), b"").unwrap();
        }
    }

    #[test]
    fn releases_sort_by_semver_and_need_an_etcd_binary() {
        let root = tempfile::tempdir().unwrap();
        for name in ["3.5.16", "3.5.1", "3.4.23", "v3.5.9"] {
            fake_release(root.path(), name, true);
        }
        fake_release(root.path(), "3.6.0", false);
        fake_release(root.path(), "not-a-version", true);
        let versions: Vec<String> = versions_in(root.path())
            .iter()
            .map(|b| b.version.to_string())
            .collect();
        assert_eq!(versions, ["3.4.23", "3.5.1", "3.5.9", "3.5.16"]);
    }

    #[test]
    fn a_missing_directory_has_no_releases() {
        assert!(versions_in(Path::new("/nonexistent/etcd-releases")).is_empty());
    }
}
