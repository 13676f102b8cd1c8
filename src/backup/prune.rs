//! Listing one EtcdBackup's backups in a bucket, deleting those a retention policy lets go
//! (only objects whose metadata names that EtcdBackup), and aborting multipart uploads a
//! crash left behind in its folder. The decisions are [`super::retention`]'s.

use std::time::Duration;

use aws_sdk_s3::Client;
use jiff::Timestamp;
use tracing::{info, warn};

use super::error::Call;
use super::key::{BackupKey, Scope, parse_key};
use super::metadata::SnapshotMetadata;
use super::retention::expired;
use super::upload::abort_upload;
use super::{Error, S3Op};
use crate::api::backup::Retention;

/// Every key under `folder` (a key prefix), in the order S3 lists them.
pub async fn list_keys(client: &Client, bucket: &str, folder: &str) -> Result<Vec<String>, Error> {
    let call = Call {
        op: S3Op::ListObjects,
        bucket,
        key: folder,
    };
    let mut keys = Vec::new();
    let mut token = None;
    loop {
        let page = client
            .list_objects_v2()
            .bucket(bucket)
            .prefix(folder)
            .set_continuation_token(token)
            .send()
            .await
            .map_err(|e| {
                call.error(e, |source| Error::ListObjects {
                    prefix: folder.to_owned(),
                    source,
                })
            })?;
        keys.extend(
            page.contents()
                .iter()
                .filter_map(|o| o.key().map(str::to_owned)),
        );
        token = page.next_continuation_token().map(str::to_owned);
        if !page.is_truncated().unwrap_or(false) || token.is_none() {
            return Ok(keys);
        }
    }
}

/// The backups of `scope`'s EtcdBackup in our key layout, newest first.
pub async fn list_backups(
    client: &Client,
    bucket: &str,
    scope: &Scope<'_>,
) -> Result<Vec<BackupKey>, Error> {
    let mut ours: Vec<BackupKey> = list_keys(client, bucket, &scope.folder())
        .await?
        .iter()
        .filter_map(|key| parse_key(scope, key))
        .collect();
    ours.sort_by(BackupKey::newest_first);
    Ok(ours)
}

/// Deletes the backups of `scope`'s EtcdBackup that `retention` lets go now that
/// `just_succeeded` was written (see [`super::retention`] for the rules); returns the deleted
/// keys, oldest first. An expired key whose object's metadata does not name this EtcdBackup
/// ([`SnapshotMetadata::proves`]) is left alone and logged: a copy someone put there, or an
/// object of a tool that did not record its owner.
///
/// Stops at the first failed call; what is left is deleted on the next call.
///
/// # Errors
/// [`Error::InvalidRetention`], [`Error::ListObjects`], [`Error::HeadObject`],
/// [`Error::DeleteObject`], or the cause-specific S3 variants.
pub async fn apply_retention(
    client: &Client,
    bucket: &str,
    scope: &Scope<'_>,
    retention: &Retention,
    just_succeeded: &str,
    now: Timestamp,
) -> Result<Vec<String>, Error> {
    let listed = list_keys(client, bucket, &scope.folder()).await?;
    let mut gone = Vec::new();
    for key in expired(&listed, scope, retention, just_succeeded, now)? {
        let metadata = head_metadata(client, bucket, &key).await?;
        if !metadata.proves(scope) {
            warn!(
                key,
                "expired by the policy, but its metadata does not name this EtcdBackup: kept"
            );
            continue;
        }
        delete_object(client, bucket, &key).await?;
        info!(key, "deleted expired backup");
        gone.push(key);
    }
    Ok(gone)
}

/// HEAD of object `key`, its errors mapped once for every caller (retention, restore pins).
///
/// # Errors
/// [`Error::HeadObject`] or the cause-specific S3 variants.
pub(crate) async fn head_object(
    client: &Client,
    bucket: &str,
    key: &str,
) -> Result<aws_sdk_s3::operation::head_object::HeadObjectOutput, Error> {
    let call = Call {
        op: S3Op::HeadObject,
        bucket,
        key,
    };
    client
        .head_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .map_err(|e| {
            call.error(e, |source| Error::HeadObject {
                key: key.to_owned(),
                source,
            })
        })
}

/// The user metadata of object `key` (HEAD).
///
/// # Errors
/// [`Error::HeadObject`] or the cause-specific S3 variants.
pub async fn head_metadata(
    client: &Client,
    bucket: &str,
    key: &str,
) -> Result<SnapshotMetadata, Error> {
    let head = head_object(client, bucket, key).await?;
    Ok(head
        .metadata()
        .map(SnapshotMetadata::from_map)
        .unwrap_or_default())
}

/// Deletes one object (S3 answers success for a missing key too).
pub async fn delete_object(client: &Client, bucket: &str, key: &str) -> Result<(), Error> {
    let call = Call {
        op: S3Op::DeleteObject,
        bucket,
        key,
    };
    client
        .delete_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .map_err(|e| {
            call.error(e, |source| Error::DeleteObject {
                key: key.to_owned(),
                source,
            })
        })?;
    Ok(())
}

/// Multipart uploads older than this under a cluster's folder were left by an operator that
/// crashed mid-backup (every other failure aborts its own upload); a later success cleans
/// them up.
pub const STALE_UPLOAD_AGE: Duration = Duration::from_secs(24 * 3600);

/// Aborts multipart uploads under `scope`'s folder (this EtcdBackup's own) started more
/// than `older_than` before
/// `now`: uploads whose process died before it could abort them. Returns their keys.
///
/// Use an `older_than` well above the longest backup, so a running upload is never hit.
pub async fn abort_stale_uploads(
    client: &Client,
    bucket: &str,
    scope: &Scope<'_>,
    older_than: Duration,
    now: Timestamp,
) -> Result<Vec<String>, Error> {
    let folder = scope.folder();
    let call = Call {
        op: S3Op::ListMultipartUploads,
        bucket,
        key: &folder,
    };
    let cutoff = now.as_second() - i64::try_from(older_than.as_secs()).unwrap_or(i64::MAX);
    let mut aborted = Vec::new();
    let (mut key_marker, mut id_marker) = (None, None);
    loop {
        let page = client
            .list_multipart_uploads()
            .bucket(bucket)
            .prefix(&folder)
            .set_key_marker(key_marker)
            .set_upload_id_marker(id_marker)
            .send()
            .await
            .map_err(|e| {
                call.error(e, |source| Error::ListUploads {
                    prefix: folder.clone(),
                    source,
                })
            })?;
        for upload in page.uploads() {
            let (Some(key), Some(id)) = (upload.key(), upload.upload_id()) else {
                continue;
            };
            let started = upload.initiated().map_or(i64::MIN, |t| t.secs());
            if started <= cutoff {
                abort_upload(client, bucket, key, id).await?;
                info!(key, "aborted stale multipart upload");
                aborted.push(key.to_owned());
            }
        }
        key_marker = page.next_key_marker().map(str::to_owned);
        id_marker = page.next_upload_id_marker().map(str::to_owned);
        if !page.is_truncated().unwrap_or(false) || key_marker.is_none() {
            return Ok(aborted);
        }
    }
}
