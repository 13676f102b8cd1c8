//! The object key layout of backups, `<prefix>/<cluster>/<UTC %Y%m%dT%H%M%SZ>-rev<revision>.db`:
//! building keys and recognising ours among what a bucket lists. Pure.

use jiff::Timestamp;
use jiff::civil::DateTime;
use jiff::tz::TimeZone;

const TIME_FORMAT: &str = "%Y%m%dT%H%M%SZ";

/// The folder holding `cluster`'s backups: `<prefix>/<cluster>/`, or `<cluster>/` without a
/// prefix. Slashes around `prefix` are ignored.
pub fn cluster_folder(prefix: Option<&str>, cluster: &str) -> String {
    match prefix
        .map(|p| p.trim_matches('/'))
        .filter(|p| !p.is_empty())
    {
        Some(prefix) => format!("{prefix}/{cluster}/"),
        None => format!("{cluster}/"),
    }
}

/// The key of a backup of `cluster` taken at `at` (second precision) at `revision`.
pub fn backup_key(prefix: Option<&str>, cluster: &str, at: Timestamp, revision: i64) -> String {
    let time = at.to_zoned(TimeZone::UTC).strftime(TIME_FORMAT);
    format!("{}{time}-rev{revision}.db", cluster_folder(prefix, cluster))
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

/// `key` read back if it is a backup of `cluster` under `prefix` in our layout; `None` for
/// anything else (other clusters, deeper folders, files someone else put there).
pub fn parse_key(prefix: Option<&str>, cluster: &str, key: &str) -> Option<BackupKey> {
    let name = key.strip_prefix(&cluster_folder(prefix, cluster))?;
    let (time, rest) = name.split_once("-rev")?;
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

    #[test]
    fn key_has_prefix_cluster_utc_time_and_revision() {
        let at = ts("2025-03-04T05:06:07.890Z");
        assert_eq!(
            backup_key(Some("/backups/"), "main", at, 42),
            "backups/main/20250304T050607Z-rev42.db"
        );
        assert_eq!(
            backup_key(None, "main", at, 42),
            "main/20250304T050607Z-rev42.db"
        );
        assert_eq!(
            backup_key(Some(""), "c", at, 1),
            "c/20250304T050607Z-rev1.db"
        );
    }

    #[test]
    fn our_keys_parse_back() {
        let at = ts("2025-03-04T05:06:07Z");
        let key = backup_key(Some("p/q"), "main", at, 7);
        assert_eq!(
            parse_key(Some("p/q"), "main", &key),
            Some(BackupKey {
                key,
                taken_at: at,
                revision: 7
            })
        );
    }

    #[test]
    fn other_keys_are_not_ours() {
        let p = Some("p");
        for key in [
            "p/other/20250304T050607Z-rev7.db",
            "p/main/x/20250304T050607Z-rev7.db",
            "p/main/20250304T050607Z-rev7.db.bak",
            "p/main/20250304T050607Z-rev.db",
            "p/main/20250304T050607Z-rev-1.db",
            "p/main/2025-03-04-rev7.db",
            "p/main/notes.txt",
            "q/main/20250304T050607Z-rev7.db",
            "main/20250304T050607Z-rev7.db",
        ] {
            assert_eq!(parse_key(p, "main", key), None, "{key}");
        }
    }
}
