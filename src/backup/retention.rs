//! Which old backups a retention policy lets go. Pure: listing and deleting are
//! [`super::prune`]'s.
//!
//! # Rules
//! 1. Only keys in our layout in this EtcdBackup's folder count ([`super::key::parse_key`]);
//!    anything else in the bucket (another EtcdBackup's, the earlier layout's, anyone
//!    else's) is never deleted, whatever its name or age. [`super::prune`] also requires the
//!    object's metadata to name this EtcdBackup before it deletes.
//! 2. Backups are ordered by the time and revision in their key, newest first.
//! 3. A backup is kept if any rule keeps it (as restic's `--keep-last`/`--keep-within`):
//!    it is among the newest `keepLast`, or younger than `maxAge`.
//! 4. The newest backup and the one that just succeeded are always kept, so a policy can
//!    never delete the last good copy.
//! 5. A policy with neither field keeps everything.

use jiff::{SignedDuration, Timestamp};

use super::Error;
use super::key::{BackupKey, Scope, parse_key};
use crate::api::backup::Retention;
use crate::api::quantity::parse_duration;

/// The keys among `listed` (as the bucket listed them under `scope`'s folder) that
/// `retention` lets go once `just_succeeded` has been written, as of `now`; oldest first.
///
/// # Errors
/// [`Error::InvalidRetention`] when `maxAge` is not a duration such as `7d`.
pub fn expired(
    listed: &[String],
    scope: &Scope<'_>,
    retention: &Retention,
    just_succeeded: &str,
    now: Timestamp,
) -> Result<Vec<String>, Error> {
    let max_age = match &retention.max_age {
        Some(age) => {
            let age = parse_duration(age).map_err(Error::InvalidRetention)?;
            Some(SignedDuration::try_from(age).unwrap_or(SignedDuration::MAX))
        }
        None => None,
    };
    let keep_last = retention
        .keep_last
        .map(|n| usize::try_from(n.max(1)).unwrap_or(1));
    if keep_last.is_none() && max_age.is_none() {
        return Ok(Vec::new());
    }
    let mut ours: Vec<BackupKey> = listed
        .iter()
        .filter_map(|key| parse_key(scope, key))
        .collect();
    ours.sort_by(BackupKey::newest_first);
    ours.dedup_by(|a, b| a.key == b.key);
    let mut gone: Vec<String> = ours
        .into_iter()
        .enumerate()
        .filter(|(i, backup)| {
            let kept_as_newest = *i == 0 || backup.key == just_succeeded;
            let kept_by_count = keep_last.is_some_and(|n| *i < n);
            let kept_by_age = max_age.is_some_and(|age| now.duration_since(backup.taken_at) <= age);
            !(kept_as_newest || kept_by_count || kept_by_age)
        })
        .map(|(_, backup)| backup.key)
        .collect();
    gone.reverse();
    Ok(gone)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backup::key::backup_key;

    const SCOPE: Scope<'static> = Scope {
        prefix: Some("backups"),
        namespace: "db",
        cluster: "main",
        backup: "nightly",
    };

    const NOW: &str = "2025-06-10T12:00:00Z";

    fn now() -> Timestamp {
        NOW.parse().unwrap()
    }

    /// A key of ours `hours_ago` before NOW.
    fn ours(hours_ago: i64) -> String {
        let at = now() - SignedDuration::from_hours(hours_ago);
        backup_key(&SCOPE, at, 10_000 - hours_ago, None)
    }

    fn policy(keep_last: Option<i32>, max_age: Option<&str>) -> Retention {
        Retention {
            keep_last,
            max_age: max_age.map(str::to_owned),
        }
    }

    fn run(listed: &[String], retention: &Retention, just: &str) -> Vec<String> {
        expired(listed, &SCOPE, retention, just, now()).unwrap()
    }

    #[test]
    fn keep_last_deletes_all_but_the_newest_n_oldest_first() {
        let listed: Vec<String> = [5, 1, 4, 2, 3].map(ours).to_vec();
        assert_eq!(
            run(&listed, &policy(Some(2), None), &ours(1)),
            [ours(5), ours(4), ours(3)]
        );
    }

    #[test]
    fn max_age_deletes_only_older_backups() {
        let listed: Vec<String> = [1, 10, 30, 50].map(ours).to_vec();
        assert_eq!(
            run(&listed, &policy(None, Some("1d")), &ours(1)),
            [ours(50), ours(30)]
        );
    }

    #[test]
    fn a_backup_is_kept_when_either_rule_keeps_it() {
        let listed: Vec<String> = [1, 2, 3, 48, 72].map(ours).to_vec();
        // keepLast keeps 1 and 2; maxAge keeps 1, 2, 3.
        assert_eq!(
            run(&listed, &policy(Some(2), Some("1d")), &ours(1)),
            [ours(72), ours(48)]
        );
    }

    #[test]
    fn the_newest_backup_survives_even_when_older_than_max_age() {
        let listed: Vec<String> = [100, 200].map(ours).to_vec();
        assert_eq!(
            run(&listed, &policy(None, Some("1h")), &ours(100)),
            [ours(200)]
        );
    }

    #[test]
    fn the_just_succeeded_backup_is_kept_even_if_not_newest() {
        let listed: Vec<String> = [1, 2, 3].map(ours).to_vec();
        assert_eq!(run(&listed, &policy(Some(1), None), &ours(3)), [ours(2)]);
    }

    #[test]
    fn objects_not_in_our_layout_are_never_deleted() {
        let mut listed: Vec<String> = [1, 2, 3].map(ours).to_vec();
        listed.extend(
            [
                "backups/db/main/nightly/notes.txt",
                "backups/db/main/nightly/20200101T000000Z-rev1.db.bak",
                "backups/db/main/nightly/manual/20200101T000000Z-rev1.db",
                "backups/db/main/weekly/20200101T000000Z-rev1.db",
                "backups/other/main/nightly/20200101T000000Z-rev1.db",
                "backups/main/20200101T000000Z-rev1.db",
                "elsewhere/db/main/nightly/20200101T000000Z-rev1.db",
            ]
            .map(str::to_owned),
        );
        assert_eq!(
            run(&listed, &policy(Some(1), None), &ours(1)),
            [ours(3), ours(2)]
        );
    }

    #[test]
    fn same_second_backups_order_by_revision() {
        let at = now();
        let older = backup_key(&SCOPE, at, 5, None);
        let newer = backup_key(&SCOPE, at, 6, None);
        let listed = vec![newer.clone(), older.clone()];
        assert_eq!(run(&listed, &policy(Some(1), None), &newer), [older]);
    }

    #[test]
    fn an_empty_policy_keeps_everything() {
        let listed: Vec<String> = [1, 2, 3].map(ours).to_vec();
        assert!(run(&listed, &Retention::default(), &ours(1)).is_empty());
    }

    #[test]
    fn a_bad_max_age_is_an_error() {
        let err = expired(&[], &SCOPE, &policy(None, Some("7 days")), "", now()).unwrap_err();
        assert_eq!(err.reason(), "InvalidRetention");
    }
}
