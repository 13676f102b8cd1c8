//! The local runtime's stand-in for the API server: each resource, with its status, as
//! `<state dir>/status/<kind>/<name>.yaml` (the document `kubectl get -o yaml` would show);
//! what the API server would track for each document between passes ([`Tracked`]: its
//! generation, creation time and status); and the `etcd-operator local status` table read
//! back from those files.

use std::path::{Path, PathBuf};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::Resource;
use kube::core::object::{HasSpec, HasStatus};
use serde::Serialize;
use serde::de::DeserializeOwned;
use thiserror::Error;

use crate::api::condition;
use crate::api::{EtcdBackup, EtcdCluster, EtcdRestore};

/// Why a status file could not be written or read.
#[derive(Debug, Error)]
pub enum Error {
    #[error("writing status file {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("reading status file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("status file {path} is not a valid resource")]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_norway::Error,
    },
}

/// The `<state dir>/status` directory.
#[derive(Debug, Clone)]
pub struct StatusFiles {
    root: PathBuf,
}

impl StatusFiles {
    /// Status files under `<state_dir>/status`.
    pub fn new(state_dir: &Path) -> Self {
        Self {
            root: state_dir.join("status"),
        }
    }

    /// Where resource `name` of `K` is kept.
    pub fn path<K: Resource<DynamicType = ()>>(&self, name: &str) -> PathBuf {
        self.root
            .join(K::kind(&()).to_lowercase())
            .join(format!("{name}.yaml"))
    }

    /// Writes `obj` atomically (temp file + rename), so readers never see half a document.
    pub fn write<K>(&self, obj: &K) -> Result<PathBuf, Error>
    where
        K: Resource<DynamicType = ()> + Serialize,
    {
        let name = obj.meta().name.clone().unwrap_or_default();
        let path = self.path::<K>(&name);
        let err = |source| Error::Write {
            path: path.clone(),
            source,
        };
        let mut doc = serde_json::to_value(obj).map_err(|e| err(std::io::Error::other(e)))?;
        // Resources built in code lack apiVersion/kind only if constructed by hand.
        doc["apiVersion"] = K::api_version(&()).into();
        doc["kind"] = K::kind(&()).into();
        let text = serde_norway::to_string(&doc).map_err(|e| err(std::io::Error::other(e)))?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(err)?;
        }
        let tmp = path.with_extension("yaml.tmp");
        std::fs::write(&tmp, text).map_err(err)?;
        std::fs::rename(&tmp, &path).map_err(err)?;
        Ok(path)
    }

    /// Reads resource `name` of `K`, if a status file exists.
    pub fn read<K>(&self, name: &str) -> Result<Option<K>, Error>
    where
        K: Resource<DynamicType = ()> + DeserializeOwned,
    {
        let path = self.path::<K>(name);
        read_file(&path)
    }

    /// Every resource of `K` that has a status file, sorted by name.
    pub fn read_all<K>(&self) -> Result<Vec<K>, Error>
    where
        K: Resource<DynamicType = ()> + DeserializeOwned,
    {
        let dir = self.root.join(K::kind(&()).to_lowercase());
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => return Err(Error::Read { path: dir, source }),
        };
        let mut paths: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
            .collect();
        paths.sort();
        let mut out = Vec::new();
        for p in paths {
            if let Some(k) = read_file(&p)? {
                out.push(k);
            }
        }
        Ok(out)
    }
}

/// What the API server would keep for one document of `K` between passes: its generation
/// (one more each time the spec changes), its creation time and its status. Picked up from
/// the status file on first sight, so a restarted operator goes on where it stopped.
#[derive(Debug, Clone)]
pub struct Tracked<K: HasSpec + HasStatus> {
    pub generation: i64,
    pub created: Time,
    pub status: Option<K::Status>,
    spec: K::Spec,
}

impl<K> Tracked<K>
where
    K: Resource<DynamicType = ()> + DeserializeOwned + HasSpec + HasStatus + Clone,
    K::Spec: Clone + PartialEq,
    K::Status: Clone,
{
    /// `doc` as first seen: from its status file `name` when there is one (a spec that
    /// changed while the operator was away is a new generation), else generation 1 now.
    ///
    /// # Errors
    /// Reading or parsing the status file.
    pub fn load(files: &StatusFiles, name: &str, doc: &K) -> Result<Self, Error> {
        let mut tracked = match files.read::<K>(name)? {
            Some(mut previous) => Self {
                generation: previous.meta().generation.unwrap_or(1),
                created: previous
                    .meta()
                    .creation_timestamp
                    .clone()
                    .unwrap_or_else(condition::now),
                status: previous.status_mut().take(),
                spec: previous.spec().clone(),
            },
            None => Self {
                generation: 1,
                created: condition::now(),
                status: None,
                spec: doc.spec().clone(),
            },
        };
        tracked.observe(doc);
        Ok(tracked)
    }

    /// The spec of the current generation.
    pub fn spec(&self) -> &K::Spec {
        &self.spec
    }

    /// Takes in `doc`'s spec; true (and the next generation) when it changed.
    pub fn observe(&mut self, doc: &K) -> bool {
        if self.spec == *doc.spec() {
            return false;
        }
        self.generation += 1;
        self.spec = doc.spec().clone();
        true
    }

    /// `doc` as the API server would return it: generation, creation time and status set.
    pub fn document(&self, doc: &K) -> K {
        let mut out = doc.clone();
        out.meta_mut().generation = Some(self.generation);
        out.meta_mut().creation_timestamp = Some(self.created.clone());
        *out.status_mut() = self.status.clone();
        out
    }
}

fn read_file<K: DeserializeOwned>(path: &Path) -> Result<Option<K>, Error> {
    match std::fs::read_to_string(path) {
        Ok(text) => serde_norway::from_str(&text)
            .map(Some)
            .map_err(|source| Error::Parse {
                path: path.to_path_buf(),
                source,
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(Error::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// An age the way kubectl prints it: `45s`, `12m`, `5h`, `3d`.
pub fn short_age(secs: i64) -> String {
    let s = secs.max(0);
    match s {
        0..60 => format!("{s}s"),
        60..3_600 => format!("{}m", s / 60),
        3_600..86_400 => format!("{}h", s / 3_600),
        _ => format!("{}d", s / 86_400),
    }
}

/// Lays out rows (the first is the header) in columns separated by three spaces.
fn render(rows: &[Vec<String>]) -> String {
    let cols = rows.first().map_or(0, Vec::len);
    let widths: Vec<usize> = (0..cols)
        .map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0))
        .collect();
    rows.iter()
        .map(|r| {
            let line: Vec<String> = r
                .iter()
                .zip(&widths)
                .map(|(cell, w)| format!("{cell:<w$}"))
                .collect();
            line.join("   ").trim_end().to_string() + "\n"
        })
        .collect()
}

fn age(meta: &kube::api::ObjectMeta, now: Timestamp) -> String {
    meta.creation_timestamp
        .as_ref()
        .map(|t| short_age(now.as_second() - t.0.as_second()))
        .unwrap_or_else(|| "<unknown>".into())
}

fn since(
    t: Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
    now: Timestamp,
) -> String {
    t.map(|t| format!("{} ago", short_age(now.as_second() - t.0.as_second())))
        .unwrap_or_else(|| "<none>".into())
}

/// The `kubectl get etcd` table: NAME SIZE READY VERSION PHASE AGE.
pub fn cluster_table(clusters: &[EtcdCluster], now: Timestamp) -> String {
    let mut rows = vec![
        ["NAME", "SIZE", "READY", "VERSION", "PHASE", "AGE"]
            .map(String::from)
            .to_vec(),
    ];
    for c in clusters {
        let st = c.status.clone().unwrap_or_default();
        rows.push(vec![
            c.metadata.name.clone().unwrap_or_default(),
            c.spec.size.to_string(),
            st.ready_members.to_string(),
            st.current_version.unwrap_or_default(),
            st.phase.to_string(),
            age(&c.metadata, now),
        ]);
    }
    render(&rows)
}

/// The backup table: NAME CLUSTER SCHEDULE LAST SUCCESS FAILING AGE, as `kubectl get
/// etcdbackup` shows it plus FAILING (the reason of a `Failed=True` condition, else `-`).
pub fn backup_table(backups: &[EtcdBackup], now: Timestamp) -> String {
    let mut rows = vec![
        [
            "NAME",
            "CLUSTER",
            "SCHEDULE",
            "LAST SUCCESS",
            "FAILING",
            "AGE",
        ]
        .map(String::from)
        .to_vec(),
    ];
    for b in backups {
        let st = b.status.clone().unwrap_or_default();
        let failing = condition::find(&st.conditions, condition::types::FAILED)
            .filter(|c| c.status == "True")
            .map(|c| c.reason.clone())
            .unwrap_or_else(|| "-".into());
        rows.push(vec![
            b.metadata.name.clone().unwrap_or_default(),
            b.spec.cluster_name.clone(),
            b.spec.schedule.clone().unwrap_or_else(|| "once".into()),
            since(st.last_successful_time.as_ref(), now),
            failing,
            age(&b.metadata, now),
        ]);
    }
    render(&rows)
}

/// The `kubectl get etcdrestore` table: NAME CLUSTER PHASE AGE.
pub fn restore_table(restores: &[EtcdRestore], now: Timestamp) -> String {
    let mut rows = vec![
        ["NAME", "CLUSTER", "PHASE", "AGE"]
            .map(String::from)
            .to_vec(),
    ];
    for r in restores {
        let st = r.status.clone().unwrap_or_default();
        rows.push(vec![
            r.metadata.name.clone().unwrap_or_default(),
            r.spec.cluster.name.clone(),
            format!("{:?}", st.phase),
            age(&r.metadata, now),
        ]);
    }
    render(&rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::cluster::{ClusterPhase, EtcdClusterStatus};
    use crate::api::{EtcdCluster, EtcdClusterSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    #[test]
    fn tracked_generations_follow_spec_changes_and_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let files = StatusFiles::new(dir.path());
        let three = EtcdCluster::new("example", EtcdClusterSpec::new(3, "3.5.16"));
        let five = EtcdCluster::new("example", EtcdClusterSpec::new(5, "3.5.16"));

        let mut tracked = Tracked::load(&files, "example", &three).unwrap();
        assert_eq!(tracked.generation, 1);
        assert!(!tracked.observe(&three), "same spec, same generation");
        assert!(tracked.observe(&five));
        assert_eq!(tracked.generation, 2);
        tracked.status = Some(EtcdClusterStatus {
            phase: ClusterPhase::Running,
            ..Default::default()
        });
        let written = tracked.document(&five);
        assert_eq!(written.metadata.generation, Some(2));
        assert_eq!(written.status, tracked.status);
        files.write(&written).unwrap();

        // A restarted operator: the file's generation, creation time and status come back.
        let again = Tracked::load(&files, "example", &five).unwrap();
        assert_eq!(again.generation, 2);
        // Kept to the second, as the API server keeps it.
        assert_eq!(again.created.0.as_second(), tracked.created.0.as_second());
        assert_eq!(again.status, tracked.status);
        // The spec changed while the operator was away: one generation more.
        let away = Tracked::load(&files, "example", &three).unwrap();
        assert_eq!(away.generation, 3);
        assert_eq!(away.spec(), &three.spec);
    }

    #[test]
    fn status_file_round_trips_as_a_kubectl_style_document() {
        let dir = tempfile::tempdir().unwrap();
        let files = StatusFiles::new(dir.path());
        let mut c = EtcdCluster::new("example", EtcdClusterSpec::new(3, "3.5.16"));
        c.status = Some(EtcdClusterStatus {
            phase: ClusterPhase::Running,
            ready_members: 3,
            ..Default::default()
        });
        let path = files.write(&c).unwrap();
        assert_eq!(path, dir.path().join("status/etcdcluster/example.yaml"));
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.starts_with("apiVersion: etcd.operator.dev/v1alpha1\nkind: EtcdCluster\n"),
            "{text}"
        );
        let back: EtcdCluster = files.read("example").unwrap().unwrap();
        assert_eq!(back.status, c.status);
        assert_eq!(files.read_all::<EtcdCluster>().unwrap().len(), 1);
    }

    #[test]
    fn table_looks_like_kubectl_get_etcd() {
        let mut c = EtcdCluster::new("example", EtcdClusterSpec::new(3, "3.5.16"));
        let now = Timestamp::from_second(1_000_000).unwrap();
        c.metadata.creation_timestamp =
            Some(Time(Timestamp::from_second(1_000_000 - 125).unwrap()));
        c.status = Some(EtcdClusterStatus {
            phase: ClusterPhase::Running,
            ready_members: 3,
            current_version: Some("3.5.16".into()),
            ..Default::default()
        });
        let t = cluster_table(&[c], now);
        assert_eq!(
            t,
            "NAME      SIZE   READY   VERSION   PHASE     AGE\nexample   3      3       3.5.16    Running   2m\n"
        );
    }

    #[test]
    fn backup_table_shows_schedule_last_success_and_failure_reason() {
        use crate::api::backup::{
            BackupDestination, EtcdBackupSpec, EtcdBackupStatus, S3Destination,
        };
        use crate::api::condition::{Status, set, types};
        let now = Timestamp::from_second(1_000_000).unwrap();
        let mut b = EtcdBackup::new(
            "nightly",
            EtcdBackupSpec {
                cluster_name: "example".into(),
                destination: BackupDestination {
                    s3: S3Destination {
                        bucket: "etcd-backups".into(),
                        prefix: None,
                        connection: Default::default(),
                        part_size_mib: None,
                        compression: None,
                        sign_payload: None,
                    },
                },
                schedule: Some("0 */6 * * *".into()),
                retention: None,
                verify: None,
            },
        );
        let mut st = EtcdBackupStatus {
            last_successful_time: Some(Time(Timestamp::from_second(1_000_000 - 3_700).unwrap())),
            ..Default::default()
        };
        set(
            &mut st.conditions,
            types::FAILED,
            Status::True,
            "Credentials",
            "denied",
            None,
            Time(now),
        );
        b.status = Some(st);
        let t = backup_table(&[b], now);
        assert_eq!(
            t,
            "NAME      CLUSTER   SCHEDULE      LAST SUCCESS   FAILING       AGE\nnightly   example   0 */6 * * *   1h ago         Credentials   <unknown>\n"
        );
    }
}
