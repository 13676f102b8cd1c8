//! The backup engine's errors: which S3 call or etcd step failed, a static reason for
//! statuses and metrics ([`Error::reason`]), and whether retrying may help
//! ([`Error::is_retryable`]).

use std::fmt;
use std::path::PathBuf;
use std::process::ExitStatus;

/// The S3 call that failed, for messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, strum::IntoStaticStr)]
pub enum S3Op {
    CreateMultipartUpload,
    UploadPart,
    CompleteMultipartUpload,
    AbortMultipartUpload,
    ListMultipartUploads,
    UploadPartCopy,
    CopyObject,
    GetObject,
    HeadObject,
    #[strum(serialize = "ListObjectsV2")]
    ListObjects,
    DeleteObject,
}

impl S3Op {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

impl fmt::Display for S3Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the S3 client reported, kept opaque so the SDK's types stay out of our API.
pub struct S3Failure {
    status: Option<u16>,
    code: Option<String>,
    // Boxed: the SDK's error is large and would bloat every `Result<_, Error>`.
    inner: Box<S3FailureInner>,
}

enum S3FailureInner {
    Sdk(aws_sdk_s3::Error),
    Body(aws_smithy_types::byte_stream::error::Error),
}

impl S3Failure {
    pub(crate) fn sdk(status: Option<u16>, code: Option<String>, err: aws_sdk_s3::Error) -> Self {
        Self {
            status,
            code,
            inner: Box::new(S3FailureInner::Sdk(err)),
        }
    }

    pub(crate) fn body(err: aws_smithy_types::byte_stream::error::Error) -> Self {
        Self {
            status: None,
            code: None,
            inner: Box::new(S3FailureInner::Body(err)),
        }
    }

    /// The HTTP status, when the server answered.
    pub fn status(&self) -> Option<u16> {
        self.status
    }

    /// The S3 error code, e.g. `NoSuchBucket`, when the server sent one.
    pub fn code(&self) -> Option<&str> {
        self.code.as_deref()
    }

    /// Whether the server said "later" (5xx, throttling) or never answered.
    pub fn is_transient(&self) -> bool {
        const LATER: &[&str] = &[
            "SlowDown",
            "RequestTimeout",
            "InternalError",
            "ServiceUnavailable",
            "Throttling",
            "ThrottlingException",
        ];
        match (self.status, self.code()) {
            (_, Some(code)) if LATER.contains(&code) => true,
            (Some(status), _) => status >= 500 || status == 429,
            (None, _) => true,
        }
    }
}

impl fmt::Debug for S3Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.inner.as_ref() {
            S3FailureInner::Sdk(e) => fmt::Debug::fmt(e, f),
            S3FailureInner::Body(e) => fmt::Debug::fmt(e, f),
        }
    }
}

impl fmt::Display for S3Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.status, &self.code, self.inner.as_ref()) {
            (Some(status), Some(code), _) => write!(f, "{code} ({status})"),
            (Some(status), None, _) => write!(f, "http status {status}"),
            (None, _, S3FailureInner::Sdk(e)) => {
                // The SDK's top-level message is generic; the first cause says what happened.
                match std::error::Error::source(e) {
                    Some(cause) => write!(f, "{cause}"),
                    None => write!(f, "{e}"),
                }
            }
            (None, _, S3FailureInner::Body(e)) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for S3Failure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self.inner.as_ref() {
            S3FailureInner::Sdk(e) => Some(e),
            S3FailureInner::Body(e) => Some(e),
        }
    }
}

/// Everything that can go wrong taking, pruning or restoring a backup.
///
/// Variants name what failed. [`Error::reason`] is a static PascalCase label for conditions,
/// Events and metrics; [`Error::is_retryable`] says whether the same call may succeed later
/// with nobody acting.
#[derive(Debug, thiserror::Error, strum::IntoStaticStr)]
#[non_exhaustive]
pub enum Error {
    // --- etcd side ---------------------------------------------------------------------
    #[error("could not list the etcd members")]
    MemberList(#[source] crate::etcd::Error),

    /// No voter with a leader passed a health check; `last` is the last member's failure.
    #[error("no healthy etcd member to take a snapshot from")]
    NoHealthyMember {
        #[source]
        last: Option<crate::etcd::Error>,
    },

    #[error("could not read the revision of {endpoint}")]
    Revision {
        endpoint: String,
        /// `None` when the read timed out.
        #[source]
        source: Option<crate::etcd::ClientError>,
    },

    #[error("snapshot from {endpoint} failed")]
    Snapshot {
        endpoint: String,
        #[source]
        source: crate::etcd::Error,
    },

    // --- S3, classified by cause ---------------------------------------------------------
    /// The credentials are missing, unknown, expired, or not allowed to do this.
    #[error("s3 {op} on bucket {bucket} refused the credentials")]
    Credentials {
        op: S3Op,
        bucket: String,
        #[source]
        source: S3Failure,
    },

    #[error("s3 bucket {bucket} does not exist")]
    BucketMissing { op: S3Op, bucket: String },

    #[error("s3 object {key} does not exist in bucket {bucket}")]
    ObjectMissing { bucket: String, key: String },

    /// Nothing answered (connection refused, DNS, TLS, timeout), after the SDK's retries.
    #[error("s3 {op} on bucket {bucket}: endpoint unreachable")]
    Unreachable {
        op: S3Op,
        bucket: String,
        #[source]
        source: S3Failure,
    },

    // --- S3, by call -----------------------------------------------------------------------
    #[error("could not start a multipart upload of {key}")]
    CreateMultipart {
        key: String,
        #[source]
        source: S3Failure,
    },

    #[error("could not upload part {part} of {key}")]
    UploadPart {
        key: String,
        part: i32,
        #[source]
        source: S3Failure,
    },

    /// The snapshot needs more parts than S3 allows: raise the part size.
    #[error("{key} needs more than {max_parts} parts of {part_size} bytes")]
    TooManyParts {
        key: String,
        part_size: usize,
        max_parts: i32,
    },

    /// `verify: true` read the object back and found it bad (`source` says how); the object
    /// was deleted and the attempt counts as failed, so retention deleted nothing.
    #[error("{key} failed verification after upload and was deleted")]
    VerificationFailed {
        key: String,
        #[source]
        source: Box<Error>,
    },

    /// The thread hashing an upload's parts went away (the upload was being torn down).
    #[error("the upload's sha256 thread stopped")]
    Hasher,

    #[error("could not complete the multipart upload of {key}")]
    CompleteUpload {
        key: String,
        #[source]
        source: S3Failure,
    },

    #[error("could not abort multipart upload {upload_id} of {key}")]
    AbortUpload {
        key: String,
        upload_id: String,
        #[source]
        source: S3Failure,
    },

    #[error("could not list multipart uploads under {prefix}")]
    ListUploads {
        prefix: String,
        #[source]
        source: S3Failure,
    },

    /// Writing the digest and size onto the finished object failed; the object was removed.
    #[error("could not write the metadata of {key}")]
    WriteMetadata {
        key: String,
        #[source]
        source: S3Failure,
    },

    #[error("s3 answered {op} on {key} unexpectedly: {what}")]
    UnexpectedResponse {
        op: S3Op,
        key: String,
        what: &'static str,
    },

    #[error("could not download {key}")]
    Download {
        key: String,
        #[source]
        source: S3Failure,
    },

    #[error("could not list objects under {prefix}")]
    ListObjects {
        prefix: String,
        #[source]
        source: S3Failure,
    },

    #[error("could not delete {key}")]
    DeleteObject {
        key: String,
        #[source]
        source: S3Failure,
    },

    #[error("reading the metadata of s3 object {key}")]
    HeadObject {
        key: String,
        #[source]
        source: S3Failure,
    },

    // --- the snapshot file -----------------------------------------------------------------
    #[error("could not write {path}")]
    WriteFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("snapshot sha256 is {actual}, expected {expected}")]
    ShaMismatch { expected: String, actual: String },

    /// The object at the key is no longer the one the restore pinned (its ETag changed, or
    /// the server refused `If-Match`): it was overwritten while the restore ran.
    #[error(
        "s3 object {key} in bucket {bucket} changed since the restore pinned it (etag {pinned}, now {now}); restore again to use the new object"
    )]
    SourceChanged {
        bucket: String,
        key: String,
        pinned: String,
        /// The ETag now there, when the server said.
        now: String,
    },

    #[error("compressing the snapshot")]
    Compress(#[source] std::io::Error),

    /// The object says it is compressed but does not decompress: corrupt, or not what its
    /// metadata or key suffix claims.
    #[error("decompressing {key}")]
    Decompress {
        key: String,
        #[source]
        source: std::io::Error,
    },

    #[error("{path} is not an etcd snapshot: {stderr}")]
    NotASnapshot { path: PathBuf, stderr: String },

    /// etcd cannot load data written by a newer minor release.
    #[error("snapshot of etcd {snapshot} is newer than the target etcd {target}")]
    SnapshotTooNew {
        snapshot: semver::Version,
        target: semver::Version,
    },

    #[error("could not run {tool}")]
    SpawnTool {
        tool: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("could not parse the output of {tool}")]
    ToolOutput {
        tool: PathBuf,
        #[source]
        source: serde_json::Error,
    },

    /// Restore never writes over existing data.
    #[error("data dir {path} already exists")]
    DataDirExists { path: PathBuf },

    /// Neither the member's data dir nor the restore tool's output exists: the tool did not
    /// run, and etcd must not start without data.
    #[error("no restored data dir at {path}")]
    RestoredDataMissing { path: PathBuf },

    #[error("restoring member {member} with {tool} failed ({status}): {stderr}")]
    Restore {
        member: String,
        tool: PathBuf,
        status: ExitStatus,
        stderr: String,
    },

    // --- configuration ---------------------------------------------------------------------
    #[error("credentials secret has no usable {key}")]
    CredentialsSecret { key: &'static str },

    #[error("{expr:?} is not a cron schedule")]
    InvalidSchedule {
        expr: String,
        #[source]
        source: croner::errors::CronError,
    },

    #[error("cron schedule {expr:?} has no run after {after}")]
    NoNextRun {
        expr: String,
        after: jiff::Timestamp,
    },

    #[error("invalid retention")]
    InvalidRetention(#[source] crate::api::quantity::ParseError),
}

impl Error {
    /// The variant's name: a static PascalCase label for conditions, Events and metrics.
    pub fn reason(&self) -> &'static str {
        self.into()
    }

    /// Whether the same call may succeed later with nobody acting: etcd or S3 unavailable or
    /// overloaded. Wrong credentials, a missing bucket or object, a corrupt or too new
    /// snapshot and invalid configuration need someone to act first.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::MemberList(e) | Error::Snapshot { source: e, .. } => e.is_retryable(),
            Error::NoHealthyMember { .. } | Error::Revision { .. } | Error::Unreachable { .. } => {
                true
            }
            Error::CreateMultipart { source, .. }
            | Error::UploadPart { source, .. }
            | Error::CompleteUpload { source, .. }
            | Error::AbortUpload { source, .. }
            | Error::ListUploads { source, .. }
            | Error::WriteMetadata { source, .. }
            | Error::Download { source, .. }
            | Error::ListObjects { source, .. }
            | Error::DeleteObject { source, .. }
            | Error::HeadObject { source, .. } => source.is_transient(),
            Error::WriteFile { .. } => true,
            // The next attempt takes and uploads a new snapshot.
            Error::VerificationFailed { .. } => true,
            _ => false,
        }
    }
}

/// One S3 call, for classifying its failure.
#[derive(Clone, Copy)]
pub(crate) struct Call<'a> {
    pub op: S3Op,
    pub bucket: &'a str,
    pub key: &'a str,
}

impl Call<'_> {
    /// Maps an SDK failure to the cause-specific variant when there is one (credentials,
    /// missing bucket or object, unreachable), else to `by_call`.
    pub(crate) fn error<E>(
        self,
        err: aws_sdk_s3::error::SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
        by_call: impl FnOnce(S3Failure) -> Error,
    ) -> Error
    where
        E: aws_sdk_s3::error::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
        aws_sdk_s3::Error:
            From<aws_sdk_s3::error::SdkError<E, aws_sdk_s3::config::http::HttpResponse>>,
    {
        use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};

        let status = err.raw_response().map(|r| r.status().as_u16());
        let code = err.code().map(str::to_owned);
        let cause = match &err {
            SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) => {
                if has_credentials_error(&err) {
                    Cause::Credentials
                } else {
                    Cause::Unreachable
                }
            }
            _ => classify(status, code.as_deref(), self.op),
        };
        let bucket = self.bucket.to_owned();
        let failure = S3Failure::sdk(status, code, aws_sdk_s3::Error::from(err));
        match cause {
            Cause::Credentials => Error::Credentials {
                op: self.op,
                bucket,
                source: failure,
            },
            Cause::BucketMissing => Error::BucketMissing {
                op: self.op,
                bucket,
            },
            Cause::ObjectMissing => Error::ObjectMissing {
                bucket,
                key: self.key.to_owned(),
            },
            Cause::Unreachable => Error::Unreachable {
                op: self.op,
                bucket,
                source: failure,
            },
            Cause::Other => by_call(failure),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cause {
    Credentials,
    BucketMissing,
    ObjectMissing,
    Unreachable,
    Other,
}

/// What an S3 error response means, from its code or (for HEAD, which has no body) status.
fn classify(status: Option<u16>, code: Option<&str>, op: S3Op) -> Cause {
    const CREDENTIALS: &[&str] = &[
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "AccessDenied",
        "ExpiredToken",
        "InvalidToken",
        "TokenRefreshRequired",
        "InvalidSecurity",
        "AuthorizationHeaderMalformed",
    ];
    match (code, status) {
        (Some(code), _) if CREDENTIALS.contains(&code) => Cause::Credentials,
        (Some("NoSuchBucket"), _) => Cause::BucketMissing,
        (Some("NoSuchKey"), _) => Cause::ObjectMissing,
        // HEAD has no body: the SDK names a 404 `NotFound`.
        (Some("NotFound"), Some(404)) if op == S3Op::HeadObject => Cause::ObjectMissing,
        (Some(_), _) => Cause::Other,
        (None, Some(401 | 403)) => Cause::Credentials,
        (None, Some(404)) if op == S3Op::HeadObject => Cause::ObjectMissing,
        _ => Cause::Other,
    }
}

/// Whether resolving credentials (the default chain finding none, or a provider failing) is
/// what stopped the request before it was sent.
fn has_credentials_error(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(err);
    while let Some(e) = next {
        if e.is::<aws_credential_types::provider::error::CredentialsError>() {
            return true;
        }
        next = e.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s3_error_codes_map_to_causes() {
        let get = S3Op::GetObject;
        assert_eq!(
            classify(Some(403), Some("InvalidAccessKeyId"), get),
            Cause::Credentials
        );
        assert_eq!(
            classify(Some(403), Some("SignatureDoesNotMatch"), get),
            Cause::Credentials
        );
        assert_eq!(
            classify(Some(404), Some("NoSuchBucket"), get),
            Cause::BucketMissing
        );
        assert_eq!(
            classify(Some(404), Some("NoSuchKey"), get),
            Cause::ObjectMissing
        );
        assert_eq!(
            classify(Some(403), None, S3Op::HeadObject),
            Cause::Credentials
        );
        assert_eq!(
            classify(Some(404), None, S3Op::HeadObject),
            Cause::ObjectMissing
        );
        assert_eq!(
            classify(Some(404), Some("NotFound"), S3Op::HeadObject),
            Cause::ObjectMissing
        );
        assert_eq!(
            classify(
                Some(400),
                Some("EntityTooSmall"),
                S3Op::CompleteMultipartUpload
            ),
            Cause::Other
        );
        assert_eq!(classify(Some(500), None, get), Cause::Other);
    }

    #[test]
    fn s3_ops_are_named_as_the_s3_api_names_them() {
        assert_eq!(S3Op::UploadPart.as_str(), "UploadPart");
        assert_eq!(S3Op::ListObjects.as_str(), "ListObjectsV2");
    }

    #[test]
    fn reasons_are_pascal_case_variant_names() {
        let e = Error::ShaMismatch {
            expected: "a".into(),
            actual: "b".into(),
        };
        assert_eq!(e.reason(), "ShaMismatch");
        assert!(!e.is_retryable());
        let e = Error::SnapshotTooNew {
            snapshot: semver::Version::new(3, 5, 16),
            target: semver::Version::new(3, 4, 23),
        };
        assert_eq!(e.reason(), "SnapshotTooNew");
        assert!(Error::NoHealthyMember { last: None }.is_retryable());
    }
}
