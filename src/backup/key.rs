//! The object key layout of backups,
//! `<prefix>/<namespace>/<cluster>/<backup>/<UTC %Y%m%dT%H%M%SZ>-rev<revision>.db` (`.db.zst`
//! when compressed): one folder
//! per EtcdBackup, so retention and cleanup of one never reach another's objects (another
//! EtcdBackup of the same cluster, a cluster of the same name in another namespace).
//! Building keys and recognising ours among what a bucket lists. Pure.
//!
//! Keys of the earlier layout `<prefix>/<cluster>/<time>-rev<revision>.db` stay readable:
//! they are listed in statuses and restorable, and never deleted by retention.

use jiff::Timestamp;
use jiff::civil::DateTime;
use jiff::tz::TimeZone;

use crate::api::backup::Compression;

const TIME_FORMAT: &str = "%Y%m%dT%H%M%SZ";

/// Whose backups: one EtcdBackup (`backup`, in `namespace`) of the EtcdCluster `cluster`,
/// under the destination's `prefix`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Scope<'a> {
    pub prefix: Option<&'a str>,
    pub namespace: &'a str,
    pub cluster: &'a str,
    pub backup: &'a str,
}

impl Scope<'_> {
    /// The folder holding this EtcdBackup's objects: `<prefix>/<namespace>/<cluster>/<backup>/`
    /// (no leading segment without a prefix; slashes around `prefix` are ignored).
    pub fn folder(&self) -> String {
        format!(
            "{}{}/{}/{}/",
            prefix_folder(self.prefix),
            self.namespace,
            self.cluster,
            self.backup
        )
    }

    /// The folder of the earlier layout, `<prefix>/<cluster>/`, shared by every EtcdBackup of
    /// the cluster (and by same-named clusters of other namespaces): read, never pruned.
    pub fn legacy_folder(&self) -> String {
        format!("{}{}/", prefix_folder(self.prefix), self.cluster)
    }
}

fn prefix_folder(prefix: Option<&str>) -> String {
    match prefix
        .map(|p| p.trim_matches('/'))
        .filter(|p| !p.is_empty())
    {
        Some(prefix) => format!("{prefix}/"),
        None => String::new(),
    }
}

/// The key of a backup in `scope` taken at `at` (second precision) at `revision`, with the
/// suffix of its `compression` (`.db.zst`) when compressed.
pub fn backup_key(
    scope: &Scope<'_>,
    at: Timestamp,
    revision: i64,
    compression: Option<Compression>,
) -> String {
    let time = at.to_zoned(TimeZone::UTC).strftime(TIME_FORMAT);
    let suffix = compression.map_or("", Compression::key_suffix);
    format!("{}{time}-rev{revision}.db{suffix}", scope.folder())
}

/// The compression a key's suffix names (`.zst`), for objects without our metadata.
pub fn compression_of_key(key: &str) -> Option<Compression> {
    key.ends_with(Compression::Zstd.key_suffix())
        .then_some(Compression::Zstd)
}

/// A key in our layout, read back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackupKey {
    pub key: String,
    pub taken_at: Timestamp,
    pub revision: i64,
}

impl BackupKey {
    /// Newest first: by time, then revision (two backups within one second).
    pub fn newest_first(a: &Self, b: &Self) -> std::cmp::Ordering {
        (b.taken_at, b.revision, &b.key).cmp(&(a.taken_at, a.revision, &a.key))
    }
}

/// `key` read back if it is a backup in `scope` in our layout; `None` for anything else
/// (other EtcdBackups, other clusters, deeper folders, files someone else put there).
pub fn parse_key(scope: &Scope<'_>, key: &str) -> Option<BackupKey> {
    parse_in(&scope.folder(), key)
}

/// `key` read back if it is a backup of the scope's cluster in the earlier layout.
pub fn parse_legacy_key(scope: &Scope<'_>, key: &str) -> Option<BackupKey> {
    parse_in(&scope.legacy_folder(), key)
}

fn parse_in(folder: &str, key: &str) -> Option<BackupKey> {
    let name = key.strip_prefix(folder)?;
    let (time, rest) = name.split_once("-rev")?;
    let rest = rest
        .strip_suffix(Compression::Zstd.key_suffix())
        .unwrap_or(rest);
    let revision = rest.strip_suffix(".db")?;
    if revision.is_empty() || !revision.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let revision: i64 = revision.parse().ok()?;
    let taken_at = DateTime::strptime(TIME_FORMAT, time)
        .ok()?
        .to_zoned(TimeZone::UTC)
        .ok()?
        .timestamp();
    Some(BackupKey {
        key: key.to_owned(),
        taken_at,
        revision,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn scope(prefix: Option<&'static str>) -> Scope<'static> {
        Scope {
            prefix,
            namespace: "db",
            cluster: "main",
            backup: "nightly",
        }
    }

    #[test]
    fn key_has_prefix_namespace_cluster_backup_utc_time_and_revision() {
        let at = ts("2025-03-04T05:06:07.890Z");
        assert_eq!(
            backup_key(&scope(Some("/backups/")), at, 42, None),
            "backups/db/main/nightly/20250304T050607Z-rev42.db"
        );
        assert_eq!(
            backup_key(&scope(None), at, 42, None),
            "db/main/nightly/20250304T050607Z-rev42.db"
        );
        assert_eq!(
            backup_key(&scope(Some("")), at, 1, None),
            "db/main/nightly/20250304T050607Z-rev1.db"
        );
    }

    #[test]
    fn our_keys_parse_back() {
        let at = ts("2025-03-04T05:06:07Z");
        let key = backup_key(&scope(Some("p/q")), at, 7, None);
        assert_eq!(
            parse_key(&scope(Some("p/q")), &key),
            Some(BackupKey {
                key,
                taken_at: at,
                revision: 7
            })
        );
        let zst = backup_key(&scope(Some("p/q")), at, 7, Some(Compression::Zstd));
        assert_eq!(zst, "p/q/db/main/nightly/20250304T050607Z-rev7.db.zst");
        assert_eq!(
            parse_key(&scope(Some("p/q")), &zst).map(|k| k.revision),
            Some(7)
        );
        assert_eq!(compression_of_key(&zst), Some(Compression::Zstd));
        assert_eq!(compression_of_key("p/q/x.db"), None);
    }

    #[test]
    fn keys_of_the_earlier_layout_parse_as_legacy_only() {
        let key = "p/main/20250304T050607Z-rev7.db";
        assert_eq!(parse_key(&scope(Some("p")), key), None);
        assert_eq!(
            parse_legacy_key(&scope(Some("p")), key).map(|k| k.revision),
            Some(7)
        );
    }

    #[test]
    fn other_keys_are_not_ours() {
        let p = scope(Some("p"));
        for key in [
            "p/db/main/weekly/20250304T050607Z-rev7.db",
            "p/other/main/nightly/20250304T050607Z-rev7.db",
            "p/db/other/nightly/20250304T050607Z-rev7.db",
            "p/db/main/nightly/x/20250304T050607Z-rev7.db",
            "p/db/main/nightly/20250304T050607Z-rev7.db.bak",
            "p/db/main/nightly/20250304T050607Z-rev7.zst",
            "p/db/main/nightly/20250304T050607Z-rev7.db.zst.part",
            "p/db/main/nightly/20250304T050607Z-rev.db",
            "p/db/main/nightly/20250304T050607Z-rev-1.db",
            "p/db/main/nightly/2025-03-04-rev7.db",
            "p/db/main/nightly/notes.txt",
            "q/db/main/nightly/20250304T050607Z-rev7.db",
            "p/main/20250304T050607Z-rev7.db",
        ] {
            assert_eq!(parse_key(&p, key), None, "{key}");
        }
    }
}
