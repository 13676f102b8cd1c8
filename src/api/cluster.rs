//! The `EtcdCluster` kind: what the user asks for (spec) and what the operator saw (status).
//!
//! A manifest in the classic etcd operator's shape (`spec: {size: 3, version: 3.5.16}`)
//! works unchanged but for its apiVersion. Semantic checks live in [`super::validate`].

// kube's printcolumn(...) repeats `type_ = ...` per column, which clippy takes for duplicates.
#![allow(clippy::duplicated_attributes)]

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Affinity, ResourceRequirements, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::maintenance::{MaintenanceSpec, MaintenanceStatus};
use super::recovery::{RecoverySpec, RecoveryStatus};
use super::tls::{TlsSpec, TlsStatus};

/// Default image repository for members on Kubernetes (the official etcd image).
pub const DEFAULT_REPOSITORY: &str = "gcr.io/etcd-development/etcd";

/// The size of each member's PVC when the spec sets no `storage`.
pub const DEFAULT_PVC_SIZE: &str = "8Gi";

/// The desired state of one etcd cluster.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "etcd.operator.dev",
    version = "v1alpha1",
    kind = "EtcdCluster",
    namespaced,
    status = "EtcdClusterStatus",
    shortname = "etcd",
    derive = "PartialEq",
    doc = "An etcd cluster managed by etcd-operator",
    printcolumn(name = "Size", type_ = "integer", json_path = ".spec.size"),
    printcolumn(name = "Ready", type_ = "integer", json_path = ".status.readyMembers"),
    printcolumn(
        name = "Version",
        type_ = "string",
        json_path = ".status.currentVersion"
    ),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct EtcdClusterSpec {
    /// Number of voting members, 1 to 9. Odd sizes tolerate the most failures per member.
    #[schemars(range(min = 1, max = 9))]
    pub size: i32,
    /// etcd version (semver, e.g. `3.5.16`). Changing it performs a rolling upgrade, one
    /// minor version at a time.
    #[schemars(regex(pattern = r"^[0-9]+\.[0-9]+\.[0-9]+$"))]
    pub version: String,
    /// Image repository of members on Kubernetes; the image is `<repository>:v<version>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository: Option<String>,
    /// Where members keep their data. When absent, a PVC of 8Gi per member on the cluster's
    /// default StorageClass; data that dies with its Pod (`emptyDir`) only when asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<StorageSpec>,
    /// CPU and memory of each member.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Overrides for member pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<PodPolicy>,
    /// etcd server options.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etcd: Option<EtcdOptions>,
    /// TLS for client and peer traffic; on, with operator-issued certificates, when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsSpec>,
    /// When true the operator takes no step on this cluster (status is still observed).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub paused: bool,
    /// Routine maintenance: scheduled defragmentation. NOSPACE alarms are handled without it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maintenance: Option<MaintenanceSpec>,
    /// What to do once quorum is lost for good: restore a backup in place or recover from the most up-to-date survivor (see `api::recovery`). Without it the operator only reports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovery: Option<RecoverySpec>,
}

/// Member storage: exactly one of `emptyDir` or `pvc`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.emptyDir) != has(self.pvc)").message("set exactly one of emptyDir or pvc"))]
pub struct StorageSpec {
    /// Data lives as long as the pod: a lost pod means a replaced member.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub empty_dir: Option<EmptyDirStorage>,
    /// One PersistentVolumeClaim per member, kept while the member exists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pvc: Option<PvcStorage>,
}

/// emptyDir storage options.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EmptyDirStorage {
    /// Optional size limit, e.g. `8Gi`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_limit: Option<String>,
    /// Back the directory with memory (tmpfs).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub memory: bool,
}

/// A PVC template for each member.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PvcStorage {
    /// StorageClass; the cluster default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
    /// Requested size, e.g. `10Gi`.
    pub size: String,
    /// What happens to the PVCs when the EtcdCluster is deleted; `Retain` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_policy: Option<PvcRetentionPolicy>,
}

impl PvcStorage {
    /// `retentionPolicy.whenDeleted`, `Retain` when unset.
    pub fn when_deleted(&self) -> RetentionPolicyType {
        self.retention_policy
            .as_ref()
            .map(|p| p.when_deleted)
            .unwrap_or_default()
    }
}

/// The PVCs' fate when their EtcdCluster is deleted, in the shape of a StatefulSet's
/// `persistentVolumeClaimRetentionPolicy`. Removing a member (scale-down, replacement)
/// always deletes its PVC: that is the operation asked for.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PvcRetentionPolicy {
    /// `Retain` (default): the PVCs stay, labelled with the cluster's name and uid, and
    /// are never adopted by a later cluster of the same name. `Delete`: they are
    /// garbage-collected with the cluster.
    #[serde(default)]
    pub when_deleted: RetentionPolicyType,
}

/// `Retain` or `Delete`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum RetentionPolicyType {
    #[default]
    Retain,
    Delete,
}

/// Overrides applied to every member pod.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodPolicy {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    /// Replaces the default preferred anti-affinity across nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority_class_name: Option<String>,
}

/// How etcd compacts its history automatically.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum AutoCompactionMode {
    #[serde(rename = "periodic")]
    Periodic,
    #[serde(rename = "revision")]
    Revision,
}

/// etcd server options. Flags the operator owns (names, URLs, data dir, initial cluster,
/// TLS files) cannot be set through `extraArgs`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.heartbeatIntervalMs) || !has(self.electionTimeoutMs) || self.electionTimeoutMs >= 5 * self.heartbeatIntervalMs").message("electionTimeoutMs must be at least 5 times heartbeatIntervalMs"))]
pub struct EtcdOptions {
    /// `--quota-backend-bytes`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub quota_backend_bytes: Option<i64>,
    /// `--auto-compaction-mode`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_compaction_mode: Option<AutoCompactionMode>,
    /// `--auto-compaction-retention`, e.g. `1h` (periodic) or `1000` (revision).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_compaction_retention: Option<String>,
    /// `--snapshot-count`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub snapshot_count: Option<i64>,
    /// `--heartbeat-interval` in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 10, max = 10000))]
    pub heartbeat_interval_ms: Option<i32>,
    /// `--election-timeout` in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 50, max = 50000))]
    pub election_timeout_ms: Option<i32>,
    /// Further flags, name (without `--`) to value.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extra_args: BTreeMap<String, String>,
}

/// The coarse state of a cluster, for humans and printer columns.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum ClusterPhase {
    #[default]
    Pending,
    Creating,
    Running,
    Scaling,
    Upgrading,
    /// Members restart one at a time to load new certificates (a CA rotation phase).
    Rotating,
    Recovering,
    Degraded,
    Paused,
    Failed,
}

impl std::fmt::Display for ClusterPhase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self, f)
    }
}

/// What the operator last saw of the cluster.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EtcdClusterStatus {
    #[serde(default)]
    pub phase: ClusterPhase,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Available`, `Progressing`, `Degraded` (and `SpecValid`), metav1.Condition shape.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<MemberStatus>,
    #[serde(default)]
    pub ready_members: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_version: Option<String>,
    /// The highest member ordinal ever handed out (`<cluster>-<n>`), so names are never reused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub highest_ordinal: Option<i32>,
    /// etcd's cluster id, 16 hex digits.
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "clusterID")]
    pub cluster_id: Option<String>,
    /// Compaction, defragmentation and NOSPACE handling: the run in progress and the last one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maintenance: Option<MaintenanceStatus>,
    /// What members serve (TLS or plaintext) and the expiry of each certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsStatus>,
    /// Lost quorum and the recoveries run (see `api::recovery`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovery: Option<RecoveryStatus>,
}

/// One member as etcd and the runtime report it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MemberStatus {
    pub name: String,
    /// etcd member id, 16 hex digits; absent before the member joined.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "clientURL")]
    pub client_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "peerURL")]
    pub peer_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// The version etcd reported for this member the last time it answered healthy, kept
    /// while it does not answer: a member down at the version it served at is restarted,
    /// one an upgrade moved to a version it never served at may be a stalled upgrade.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub served_version: Option<String>,
    #[serde(default)]
    pub is_learner: bool,
    #[serde(default)]
    pub healthy: bool,
    #[serde(default)]
    pub is_leader: bool,
    /// Size of the member's backend file in bytes (etcd's dbSize).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub db_size: Option<i64>,
    /// Bytes of the backend file in use (etcd's dbSizeInUse); the rest is what
    /// defragmenting frees.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub db_size_in_use: Option<i64>,
}

impl EtcdClusterSpec {
    /// The spec in the classic shape: size and version only.
    pub fn new(size: i32, version: impl Into<String>) -> Self {
        Self {
            size,
            version: version.into(),
            repository: None,
            storage: None,
            resources: None,
            pod: None,
            etcd: None,
            tls: None,
            paused: false,
            maintenance: None,
            recovery: None,
        }
    }

    /// The PVC each member gets on Kubernetes: `storage.pvc`, or without `storage` a PVC
    /// of [`DEFAULT_PVC_SIZE`] on the default StorageClass (retained on deletion); `None`
    /// for `storage.emptyDir` (issue 9, item 13).
    pub fn pvc_storage(&self) -> Option<PvcStorage> {
        match &self.storage {
            None => Some(PvcStorage {
                storage_class_name: None,
                size: DEFAULT_PVC_SIZE.to_string(),
                retention_policy: None,
            }),
            Some(storage) => storage.pvc.clone(),
        }
    }

    /// The image repository members run on Kubernetes.
    pub fn repository_or_default(&self) -> &str {
        self.repository.as_deref().unwrap_or(DEFAULT_REPOSITORY)
    }
}
