//! The user metadata on every snapshot object we write (`x-amz-meta-*`), and reading it back
//! from objects that may have none (e.g. a plain `etcdctl snapshot save` someone uploaded).

use std::collections::HashMap;

use crate::api::backup::Compression;

/// `x-amz-meta-sha256`: hex sha256 of the whole object.
pub const SHA256: &str = "sha256";
/// `x-amz-meta-size`: object size in bytes.
pub const SIZE: &str = "size";
/// `x-amz-meta-revision`: the member's revision just before the snapshot began.
pub const REVISION: &str = "revision";
/// `x-amz-meta-etcd-version`: the server version of the member snapshotted.
pub const ETCD_VERSION: &str = "etcd-version";
/// `x-amz-meta-cluster-id`: the etcd cluster id, 16 hex digits.
pub const CLUSTER_ID: &str = "cluster-id";
/// `x-amz-meta-namespace`, `-cluster`, `-backup`: the EtcdBackup that wrote the object and
/// its EtcdCluster; retention deletes only objects whose metadata names its own EtcdBackup.
pub const NAMESPACE: &str = "namespace";
pub const CLUSTER: &str = "cluster";
pub const BACKUP: &str = "backup";
/// `x-amz-meta-cluster-uid`: the EtcdCluster's uid (locally, its incarnation), telling
/// backups of an earlier cluster of the same name from the current one's.
pub const CLUSTER_UID: &str = "cluster-uid";
/// `x-amz-meta-compression`: how the object is compressed (`zstd`); absent when it is not.
/// `sha256` and `size` describe the object as stored.
pub const COMPRESSION: &str = "compression";

/// What we record about a snapshot object. Every field is optional when read back: absent
/// or unparseable values are `None`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SnapshotMetadata {
    pub sha256: Option<String>,
    pub size: Option<u64>,
    pub revision: Option<i64>,
    pub etcd_version: Option<semver::Version>,
    pub cluster_id: Option<String>,
    pub namespace: Option<String>,
    pub cluster: Option<String>,
    pub backup: Option<String>,
    pub cluster_uid: Option<String>,
    pub compression: Option<Compression>,
}

impl SnapshotMetadata {
    /// The S3 user metadata map (keys without the `x-amz-meta-` prefix).
    pub fn to_map(&self) -> HashMap<String, String> {
        let mut map = HashMap::new();
        let mut put = |k: &str, v: Option<String>| {
            if let Some(v) = v {
                map.insert(k.to_owned(), v);
            }
        };
        put(SHA256, self.sha256.clone());
        put(SIZE, self.size.map(|s| s.to_string()));
        put(REVISION, self.revision.map(|r| r.to_string()));
        put(
            ETCD_VERSION,
            self.etcd_version.as_ref().map(|v| v.to_string()),
        );
        put(CLUSTER_ID, self.cluster_id.clone());
        put(NAMESPACE, self.namespace.clone());
        put(CLUSTER, self.cluster.clone());
        put(BACKUP, self.backup.clone());
        put(CLUSTER_UID, self.cluster_uid.clone());
        put(COMPRESSION, self.compression.map(|c| c.as_str().to_owned()));
        map
    }

    /// Reads what is there and well formed; S3 lowercases metadata keys, so do we.
    pub fn from_map(map: &HashMap<String, String>) -> Self {
        let get = |k: &str| {
            map.iter()
                .find(|(key, _)| key.eq_ignore_ascii_case(k))
                .map(|(_, v)| v.trim())
        };
        Self {
            sha256: get(SHA256)
                .filter(|s| s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()))
                .map(str::to_ascii_lowercase),
            size: get(SIZE).and_then(|s| s.parse().ok()),
            revision: get(REVISION).and_then(|s| s.parse().ok()),
            etcd_version: get(ETCD_VERSION)
                .and_then(|s| semver::Version::parse(s.trim_start_matches('v')).ok()),
            cluster_id: get(CLUSTER_ID).map(str::to_owned),
            namespace: get(NAMESPACE).map(str::to_owned),
            cluster: get(CLUSTER).map(str::to_owned),
            backup: get(BACKUP).map(str::to_owned),
            cluster_uid: get(CLUSTER_UID).map(str::to_owned),
            compression: get(COMPRESSION).and_then(|c| {
                [Compression::Zstd]
                    .into_iter()
                    .find(|k| k.as_str().eq_ignore_ascii_case(c))
            }),
        }
    }

    /// Whether the object was written by the EtcdBackup of `scope` (its namespace, cluster
    /// and name are all recorded and all match): what retention requires before deleting.
    pub fn proves(&self, scope: &super::key::Scope<'_>) -> bool {
        self.namespace.as_deref() == Some(scope.namespace)
            && self.cluster.as_deref() == Some(scope.cluster)
            && self.backup.as_deref() == Some(scope.backup)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_round_trips_through_the_map() {
        let meta = SnapshotMetadata {
            sha256: Some("ab".repeat(32)),
            size: Some(123),
            revision: Some(9),
            etcd_version: Some(semver::Version::new(3, 5, 16)),
            cluster_id: Some("cdf818194e3a8c32".into()),
            namespace: Some("db".into()),
            cluster: Some("main".into()),
            backup: Some("nightly".into()),
            cluster_uid: Some("0b7c".into()),
            compression: Some(Compression::Zstd),
        };
        assert_eq!(SnapshotMetadata::from_map(&meta.to_map()), meta);
        let scope = super::super::key::Scope {
            prefix: None,
            namespace: "db",
            cluster: "main",
            backup: "nightly",
        };
        assert!(meta.proves(&scope));
        assert!(!meta.proves(&super::super::key::Scope {
            backup: "weekly",
            ..scope
        }));
        assert!(
            !SnapshotMetadata::default().proves(&scope),
            "no metadata proves nothing"
        );
    }

    #[test]
    fn malformed_values_read_as_absent() {
        let map = HashMap::from([
            ("SHA256".to_owned(), "not-hex".to_owned()),
            ("size".to_owned(), "-1".to_owned()),
            ("etcd-version".to_owned(), "v3.4.23".to_owned()),
        ]);
        let meta = SnapshotMetadata::from_map(&map);
        assert_eq!(meta.sha256, None);
        assert_eq!(meta.size, None);
        assert_eq!(meta.etcd_version, Some(semver::Version::new(3, 4, 23)));
    }
}
