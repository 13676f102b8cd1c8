//! Pinning a restore's source object: resolve it once (HEAD) into the exact object version
//! every member must restore, so a key overwritten while a restore runs cannot give members
//! different snapshots under one cluster id (issue 11, item 2).
//!
//! The pin is the object's ETag, its version id when the bucket keeps versions, and the
//! digest to verify: the one the caller expects (the spec's or the backup's record), else the
//! object's own `sha256` metadata. [`super::restore::download`] enforces it: a conditional
//! GET (`If-Match`, `versionId`) and the ETag of what came back, then the digest.
//!
//! Recording the pin (the restored cluster, the restore's status) is the driver's job.

use aws_sdk_s3::Client;

use super::metadata::SnapshotMetadata;
use super::{Error, S3Op};

/// The object version a download must get.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectPin {
    /// The object's ETag when it was resolved (as S3 sends it, quotes included).
    pub etag: String,
    /// The object's version id, when the bucket keeps versions: that version is downloaded
    /// even after the key was overwritten.
    pub version_id: Option<String>,
}

/// A resolved source object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pinned {
    pub pin: ObjectPin,
    /// The digest every download is verified against: the caller's, else the object's
    /// metadata; `None` for an object without one that nobody gave a digest for (the ETag
    /// still pins it).
    pub sha256: Option<String>,
    pub size: Option<u64>,
    /// The object's user metadata (empty for objects someone else uploaded).
    pub metadata: SnapshotMetadata,
}

/// Resolves `bucket`/`key` with one HEAD into the version to restore.
///
/// # Errors
/// [`Error::ShaMismatch`] when the object's recorded digest is not `expected_sha256` (the
/// object was replaced since that digest was taken); [`Error::ObjectMissing`],
/// [`Error::HeadObject`] and the cause-specific S3 variants; [`Error::UnexpectedResponse`]
/// when the server sends no ETag (nothing to pin).
pub async fn pin_object(
    client: &Client,
    bucket: &str,
    key: &str,
    expected_sha256: Option<&str>,
) -> Result<Pinned, Error> {
    let head = super::prune::head_object(client, bucket, key).await?;
    let etag = head
        .e_tag()
        .filter(|t| !t.is_empty())
        .ok_or_else(|| Error::UnexpectedResponse {
            op: S3Op::HeadObject,
            key: key.to_owned(),
            what: "no etag",
        })?;
    let metadata = head
        .metadata()
        .map(SnapshotMetadata::from_map)
        .unwrap_or_default();
    let expected = expected_sha256.map(str::to_ascii_lowercase);
    if let (Some(expected), Some(recorded)) = (&expected, &metadata.sha256)
        && expected != recorded
    {
        return Err(Error::ShaMismatch {
            expected: expected.clone(),
            actual: recorded.clone(),
        });
    }
    Ok(Pinned {
        pin: ObjectPin {
            etag: etag.to_owned(),
            version_id: head
                .version_id()
                .filter(|v| !v.is_empty() && *v != "null")
                .map(str::to_owned),
        },
        sha256: expected.or_else(|| metadata.sha256.clone()),
        size: head.content_length().and_then(|n| u64::try_from(n).ok()),
        metadata,
    })
}

/// Whether two ETags name the same object content: S3 quotes them, some servers (and
/// users copying them) do not; weak ones never match a pin.
pub fn same_etag(a: &str, b: &str) -> bool {
    fn strong(t: &str) -> Option<&str> {
        (!t.starts_with("W/")).then(|| t.trim_matches('"'))
    }
    matches!((strong(a), strong(b)), (Some(a), Some(b)) if !a.is_empty() && a == b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etags_match_with_or_without_quotes_and_weak_ones_never() {
        assert!(same_etag("\"abc-2\"", "abc-2"));
        assert!(same_etag("\"abc\"", "\"abc\""));
        assert!(!same_etag("\"abc\"", "\"abd\""));
        assert!(!same_etag("W/\"abc\"", "\"abc\""));
        assert!(!same_etag("\"\"", ""));
    }
}
