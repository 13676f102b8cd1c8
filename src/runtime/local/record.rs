//! What the local runtime keeps on disk per member: the directory layout, `member.json`
//! and `etcd.pid`, written atomically so a crash never leaves half a record.
//!
//! Layout: `<state>/clusters/<namespace>/<cluster>/<member>/{data/, member.json, etcd.log, etcd.pid}`.
//! Deciding what to start or stop is `local.rs`'s job.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::runtime::{ClusterRef, Error, MemberAddress};

/// The version of the `member.json` format written here.
pub const FORMAT: u32 = 1;

/// The contents of `member.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MemberRecord {
    pub format: u32,
    pub cluster: ClusterRef,
    pub address: MemberAddress,
    /// Absent while the member is only reserved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub launch: Option<LaunchRecord>,
}

/// How the member was last started.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LaunchRecord {
    /// The version it runs or last ran; a restart may change it.
    #[serde(with = "version_string")]
    pub version: semver::Version,
    /// The etcd flags, reused verbatim by every restart.
    pub flags: Vec<String>,
    /// The last started process; `etcd.pid` holds the same and is written first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<jiff::Timestamp>,
    /// The trust stamp of the certificates the last start found
    /// ([`crate::certs::ca_rotation::trust_stamp`]); `None` for a plaintext member.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trust_stamp: Option<String>,
}

/// The files of one member.
#[derive(Clone, Debug)]
pub struct MemberPaths {
    pub dir: PathBuf,
}

impl MemberPaths {
    pub fn new(state_dir: &Path, cluster: &ClusterRef, name: &str) -> Result<Self, Error> {
        Ok(Self {
            dir: cluster_dir(state_dir, cluster)?.join(path_component("member", name)?),
        })
    }

    pub fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    pub fn record(&self) -> PathBuf {
        self.dir.join("member.json")
    }

    pub fn log(&self) -> PathBuf {
        self.dir.join("etcd.log")
    }

    pub fn pid_file(&self) -> PathBuf {
        self.dir.join("etcd.pid")
    }

    /// Whether etcd has written a WAL, i.e. the member has an identity to restart with.
    pub fn has_data(&self) -> bool {
        self.data().join("member").join("wal").is_dir()
    }

    /// The record, or `None` when the member was never reserved.
    pub fn read_record(&self) -> Result<Option<MemberRecord>, Error> {
        let path = self.record();
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(Error::ReadRecord { path, source }),
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|source| Error::ParseRecord { path, source })
    }

    pub fn write_record(&self, record: &MemberRecord) -> Result<(), Error> {
        let mut json = serde_json::to_vec_pretty(record).map_err(|e| Error::WriteRecord {
            path: self.record(),
            source: e.into(),
        })?;
        json.push(b'\n');
        write_atomic(&self.dir, &self.record(), &json)
    }

    /// The pid in `etcd.pid`, or `None` when the member never started.
    pub fn read_pid(&self) -> Result<Option<u32>, Error> {
        let path = self.pid_file();
        match fs::read_to_string(&path) {
            Ok(s) => s.trim().parse().map(Some).map_err(|_| Error::ReadRecord {
                path,
                source: io::Error::new(io::ErrorKind::InvalidData, "not a pid"),
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(Error::ReadRecord { path, source }),
        }
    }

    pub fn write_pid(&self, pid: u32) -> Result<(), Error> {
        write_atomic(&self.dir, &self.pid_file(), format!("{pid}\n").as_bytes())
    }
}

/// `<state>/clusters/<namespace>/<cluster>`.
pub fn cluster_dir(state_dir: &Path, cluster: &ClusterRef) -> Result<PathBuf, Error> {
    Ok(clusters_dir(state_dir)
        .join(path_component("namespace", &cluster.namespace)?)
        .join(path_component("cluster", &cluster.name)?))
}

/// `<state>/tls/<namespace>/<cluster>`: the cluster's CA and certificates.
pub fn tls_dir(state_dir: &Path, cluster: &ClusterRef) -> Result<PathBuf, Error> {
    Ok(state_dir
        .join("tls")
        .join(path_component("namespace", &cluster.namespace)?)
        .join(path_component("cluster", &cluster.name)?))
}

/// `<state>/seeds/<namespace>/<cluster>.json`: the snapshot a restored cluster's bootstrap
/// members start from ([`super::Seed`]), while it is being restored.
pub fn seed_path(state_dir: &Path, cluster: &ClusterRef) -> Result<PathBuf, Error> {
    Ok(state_dir
        .join("seeds")
        .join(path_component("namespace", &cluster.namespace)?)
        .join(format!(
            "{}.json",
            path_component("cluster", &cluster.name)?
        )))
}

/// `<state>/kept`: where recoveries keep old members' data aside.
pub fn kept_root(state_dir: &Path) -> PathBuf {
    state_dir.join("kept")
}

/// `<state>/kept/<namespace>/<cluster>/<tag>`: the data one recovery kept aside.
pub fn kept_dir(state_dir: &Path, cluster: &ClusterRef, tag: &str) -> Result<PathBuf, Error> {
    Ok(kept_root(state_dir)
        .join(path_component("namespace", &cluster.namespace)?)
        .join(path_component("cluster", &cluster.name)?)
        .join(path_component("recovery", tag)?))
}

/// Writes `contents` to `path` atomically, creating its directory.
pub fn write_file(path: &Path, contents: &[u8]) -> Result<(), Error> {
    let dir = path.parent().unwrap_or(Path::new("."));
    write_atomic(dir, path, contents)
}

pub fn clusters_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("clusters")
}

/// The names of the member directories under `dir` (empty when `dir` does not exist).
pub fn subdirs(dir: &Path) -> Result<Vec<String>, Error> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(vec![]),
        Err(source) => {
            return Err(Error::ListMembers {
                path: dir.to_path_buf(),
                source,
            });
        }
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| Error::ListMembers {
            path: dir.to_path_buf(),
            source,
        })?;
        // Names that are not UTF-8 were not written by this runtime.
        if entry.file_type().is_ok_and(|t| t.is_dir())
            && let Ok(name) = entry.file_name().into_string()
        {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

/// Every record under the state dir, of every cluster (for port allocation).
pub fn all_records(state_dir: &Path) -> Result<Vec<MemberRecord>, Error> {
    let root = clusters_dir(state_dir);
    let mut records = Vec::new();
    for ns in subdirs(&root)? {
        for cluster in subdirs(&root.join(&ns))? {
            for member in subdirs(&root.join(&ns).join(&cluster))? {
                let paths = MemberPaths {
                    dir: root.join(&ns).join(&cluster).join(member),
                };
                records.extend(paths.read_record()?);
            }
        }
    }
    Ok(records)
}

/// The port of a `http://host:port` URL.
pub fn port_of(url: &str) -> Option<u16> {
    url.rsplit_once(':')?.1.trim_end_matches('/').parse().ok()
}

/// Rejects names that would escape or alias a directory. Kubernetes names always pass.
fn path_component<'a>(what: &'static str, name: &'a str) -> Result<&'a str, Error> {
    let ok = !name.is_empty()
        && name != "."
        && name != ".."
        && !name.starts_with('.')
        && !name.contains(['/', '\0']);
    if ok {
        Ok(name)
    } else {
        Err(Error::InvalidName {
            what,
            name: name.to_string(),
        })
    }
}

/// Writes through a temp file in `dir` and a rename, so readers see old or new, never half.
fn write_atomic(dir: &Path, path: &Path, contents: &[u8]) -> Result<(), Error> {
    let write_err = |source| Error::WriteRecord {
        path: path.to_path_buf(),
        source,
    };
    fs::create_dir_all(dir).map_err(|source| Error::CreateDir {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(write_err)?;
    tmp.write_all(contents).map_err(write_err)?;
    tmp.as_file().sync_all().map_err(write_err)?;
    tmp.persist(path).map_err(|e| write_err(e.error))?;
    Ok(())
}

/// `semver::Version` as its string (the crate's serde feature is not enabled here).
mod version_string {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &semver::Version, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(v)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<semver::Version, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster() -> ClusterRef {
        ClusterRef::new("default", "demo")
    }

    #[test]
    fn record_round_trips_through_json() {
        let dir = tempfile::tempdir().unwrap();
        let paths = MemberPaths::new(dir.path(), &cluster(), "demo-0").unwrap();
        assert_eq!(paths.read_record().unwrap(), None);
        let record = MemberRecord {
            format: FORMAT,
            cluster: cluster(),
            address: MemberAddress {
                name: "demo-0".into(),
                peer_url: "http://127.0.0.1:20001".into(),
                client_url: "http://127.0.0.1:20002".into(),
            },
            launch: Some(LaunchRecord {
                version: semver::Version::new(3, 5, 16),
                flags: vec!["--name=demo-0".into()],
                pid: Some(42),
                started_at: Some(jiff::Timestamp::UNIX_EPOCH),
                trust_stamp: Some("0123456789abcdef-0".into()),
            }),
        };
        paths.write_record(&record).unwrap();
        assert_eq!(paths.read_record().unwrap(), Some(record));
        let json = fs::read_to_string(paths.record()).unwrap();
        assert!(json.contains("\"version\": \"3.5.16\""), "{json}");
    }

    #[test]
    fn names_that_escape_the_state_dir_are_rejected() {
        let dir = Path::new("/state");
        for bad in ["", ".", "..", "a/b", ".hidden"] {
            assert!(matches!(
                MemberPaths::new(dir, &cluster(), bad),
                Err(Error::InvalidName { what: "member", .. })
            ));
        }
        let paths = MemberPaths::new(dir, &cluster(), "demo-0").unwrap();
        assert_eq!(paths.dir, Path::new("/state/clusters/default/demo/demo-0"));
    }

    #[test]
    fn port_is_read_from_url() {
        assert_eq!(port_of("http://127.0.0.1:2379"), Some(2379));
        assert_eq!(port_of("http://127.0.0.1"), None);
    }
}
