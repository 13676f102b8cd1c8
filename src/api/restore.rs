//! The `EtcdRestore` kind: create a new cluster from a snapshot in object storage.

// kube's printcolumn(...) repeats `type_ = ...` per column, which clippy takes for duplicates.
#![allow(clippy::duplicated_attributes)]

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::cluster::EtcdClusterSpec;
use super::s3::S3Connection;

/// Restore a snapshot into a new EtcdCluster. Never restores over an existing cluster.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "etcd.operator.dev",
    version = "v1alpha1",
    kind = "EtcdRestore",
    namespaced,
    status = "EtcdRestoreStatus",
    shortname = "etcdrestore",
    derive = "PartialEq",
    doc = "Restores an etcd snapshot from S3-compatible storage into a new EtcdCluster",
    printcolumn(name = "Cluster", type_ = "string", json_path = ".spec.cluster.name"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct EtcdRestoreSpec {
    pub source: RestoreSource,
    pub cluster: RestoreTarget,
}

/// The snapshot to restore: exactly one of `s3` or `backupName`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.s3) != has(self.backupName)").message("set exactly one of s3 or backupName"))]
pub struct RestoreSource {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<S3Object>,
    /// The latest successful backup of this EtcdBackup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_name: Option<String>,
    /// Expected sha256 of the snapshot (hex); the backup's recorded digest is used when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9a-f]{64}$"))]
    pub sha256: Option<String>,
}

/// One object in a bucket.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct S3Object {
    #[schemars(length(min = 3, max = 63))]
    pub bucket: String,
    #[schemars(length(min = 1))]
    pub key: String,
    #[serde(flatten)]
    pub connection: S3Connection,
}

/// The cluster to create.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestoreTarget {
    #[schemars(length(min = 1, max = 63))]
    pub name: String,
    pub spec: EtcdClusterSpec,
}

/// Where a restore is.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum RestorePhase {
    #[default]
    Pending,
    Downloading,
    Restoring,
    Completed,
    Failed,
}

/// What the restore did.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EtcdRestoreStatus {
    #[serde(default)]
    pub phase: RestorePhase,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The object restored from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restored_revision: Option<i64>,
    /// The new cluster's id.
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "clusterID")]
    pub cluster_id: Option<String>,
    /// The object version resolved when the restore started, which every member restores.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pinned: Option<PinnedSource>,
}

/// The object version a restore resolved once, before creating any member: every member
/// downloads exactly this (or fails with `SourceChanged`), so an object overwritten during a
/// restore cannot give members different data.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PinnedSource {
    /// The object's ETag; members download with `If-Match`.
    pub etag: String,
    /// The object's version id, when the bucket keeps versions: members download it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_id: Option<String>,
    /// The digest members verify: `spec.source.sha256`, the backup's recorded digest, or the
    /// object's own metadata; absent for an object without one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// The object's size in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<i64>,
}
