//! The `EtcdBackup` kind: a one-shot or scheduled snapshot of a cluster into S3-compatible
//! object storage, with retention.

// kube's printcolumn(...) repeats `type_ = ...` per column, which clippy takes for duplicates.
#![allow(clippy::duplicated_attributes)]

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::s3::S3Connection;

/// Default multipart part size in MiB.
pub const DEFAULT_PART_SIZE_MIB: i32 = 5;
/// How many entries `status.history` keeps.
pub const HISTORY_LIMIT: usize = 10;

/// A backup of the EtcdCluster `clusterName` in the same namespace.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "etcd.operator.dev",
    version = "v1alpha1",
    kind = "EtcdBackup",
    namespaced,
    status = "EtcdBackupStatus",
    shortname = "etcdbackup",
    derive = "PartialEq",
    doc = "A one-shot or scheduled backup of an EtcdCluster to S3-compatible storage",
    printcolumn(name = "Cluster", type_ = "string", json_path = ".spec.clusterName"),
    printcolumn(name = "Schedule", type_ = "string", json_path = ".spec.schedule"),
    printcolumn(
        name = "Last Success",
        type_ = "date",
        json_path = ".status.lastSuccessfulTime"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct EtcdBackupSpec {
    /// The EtcdCluster to back up.
    #[schemars(length(min = 1, max = 63))]
    pub cluster_name: String,
    pub destination: BackupDestination,
    /// Cron expression (5 fields, UTC); a single backup when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    /// Which older backups to delete after a newer one succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<Retention>,
    /// After each upload, read the object back, check its sha256 and run
    /// `etcdutl snapshot status` on it (offline, no cluster needed). The result is each
    /// record's `verification` and the `Verified` condition; an object that fails is deleted
    /// and the attempt fails. Restores by `backupName` prefer verified backups. Without
    /// etcdutl the digest is still checked and `Verified=False` says the status did not run.
    /// The check needs scratch disk for one snapshot (the operator's `/tmp`). Off when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify: Option<bool>,
}

/// Where backups go.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupDestination {
    pub s3: S3Destination,
}

/// An S3 bucket and prefix.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct S3Destination {
    #[schemars(length(min = 3, max = 63))]
    pub bucket: String,
    /// Objects go to `<prefix>/<namespace>/<cluster>/<backup>/<timestamp>-rev<revision>.db`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    #[serde(flatten)]
    pub connection: S3Connection,
    /// Multipart part size in MiB (5 to 5120); 5 when absent.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        rename = "partSizeMiB"
    )]
    #[schemars(range(min = 5, max = 5120))]
    pub part_size_mib: Option<i32>,
    /// Compress snapshots before upload: `zstd`, streamed (the key ends in `.db.zst` and the
    /// object's metadata says `compression: zstd`; `zstd -d` gives etcd's plain snapshot).
    /// Uncompressed when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compression: Option<Compression>,
    /// Also sign each part's sha256 (SigV4 payload signing), so the server refuses a part
    /// changed on the way even by someone who fixed up its checksum. Off when absent: each
    /// part carries a signed CRC32C header the server checks (a part damaged on the way is
    /// refused), and the whole snapshot's sha256 is recorded and checked on restore and by
    /// `verify: true`; signing hashes every byte once more here and once more on the server.
    /// Over plain HTTP it is what stops someone on the path from replacing a part with bytes
    /// of his choosing (the recorded sha256 still catches them, but only at restore or
    /// verification); over HTTPS, TLS already does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sign_payload: Option<bool>,
}

/// How snapshots are compressed on their way to S3.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// Zstandard at its default level (3), one frame per object.
    Zstd,
}

impl Compression {
    /// The name in object metadata and the spec.
    pub fn as_str(self) -> &'static str {
        match self {
            Compression::Zstd => "zstd",
        }
    }

    /// What the key of a snapshot compressed so ends in, after `.db`.
    pub fn key_suffix(self) -> &'static str {
        match self {
            Compression::Zstd => ".zst",
        }
    }
}

/// Retention: keep the newest `keepLast` and/or those younger than `maxAge`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.keepLast) || has(self.maxAge)").message("set keepLast, maxAge or both"))]
pub struct Retention {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub keep_last: Option<i32>,
    /// A duration such as `7d`, `12h`, `2w`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9]+[smhdw]$"))]
    pub max_age: Option<String>,
}

/// One completed backup.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupRecord {
    pub key: String,
    pub size: i64,
    pub sha256: String,
    pub revision: i64,
    pub etcd_version: String,
    #[serde(rename = "clusterID")]
    pub cluster_id: String,
    pub duration_seconds: f64,
    /// Upload throughput in MB/s (10^6 bytes).
    #[serde(default)]
    pub mb_per_second: f64,
    pub time: Time,
    /// The check after upload (`spec.verify`); absent when none ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification: Option<Verification>,
}

/// What reading a backup back found.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Verification {
    pub result: VerificationResult,
    pub time: Time,
    /// What `snapshot status` read from the object: the snapshot's revision and key count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_keys: Option<i64>,
    /// Which tool checked it, or why the check is incomplete.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

/// How far a verification got.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum VerificationResult {
    /// The object read back has the recorded sha256 and etcd's tool reads it as a snapshot.
    Verified,
    /// The digest matched, but `snapshot status` did not run: no etcdutl for this version.
    DigestOnly,
    /// The check could not finish (S3 or the scratch disk failed); nothing is known against
    /// the object.
    Incomplete,
}

impl VerificationResult {
    pub fn as_str(self) -> &'static str {
        match self {
            VerificationResult::Verified => "Verified",
            VerificationResult::DigestOnly => "DigestOnly",
            VerificationResult::Incomplete => "Incomplete",
        }
    }
}

/// What happened to the backups so far.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EtcdBackupStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready` (the last backup succeeded), `Failed`, `SpecValid`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_successful_time: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_backup: Option<BackupRecord>,
    /// The newest backups first, at most ten.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<BackupRecord>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_schedule_time: Option<Time>,
}
