//! `spec.maintenance` and `status.maintenance` of an EtcdCluster: scheduled defragmentation
//! and what the operator did about space (NOSPACE alarms, defragmentation runs).
//!
//! Data only: when to compact or defragment is `plan::maintenance`'s decision, carrying it
//! out `reconcile::maintain`'s.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Defaults of [`DefragSpec`]'s thresholds.
pub const DEFAULT_MIN_FRAGMENTED_BYTES: &str = "64Mi";
pub const DEFAULT_MIN_FRAGMENTED_RATIO: f64 = 0.25;

/// Routine maintenance the operator runs on its own.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MaintenanceSpec {
    /// Scheduled defragmentation, one member at a time, the leader last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub defrag: Option<DefragSpec>,
}

/// When to defragment, and which members are worth it.
///
/// At each time of `schedule`, a member whose free space (`dbSize - dbSizeInUse`) is at
/// least `minFragmentedBytes` and at least `minFragmentedRatio` of its `dbSize` is
/// defragmented; when no member is, nothing happens until the next time.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DefragSpec {
    /// A cron expression in UTC (5 fields, or 6 with seconds; `@daily` and the like too).
    pub schedule: String,
    /// Free bytes a member's backend must have to be defragmented, e.g. `64Mi` (default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_fragmented_bytes: Option<String>,
    /// Fraction of a member's backend that must be free to defragment it, 0 to 1 (default
    /// 0.25).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub min_fragmented_ratio: Option<f64>,
}

/// Why a maintenance run started.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum MaintenanceReason {
    /// A NOSPACE alarm was raised: compact, defragment every member, disarm.
    NoSpace,
    /// `spec.maintenance.defrag.schedule` came due and a member passed the threshold.
    Scheduled,
}

impl std::fmt::Display for MaintenanceReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            MaintenanceReason::NoSpace => "NOSPACE",
            MaintenanceReason::Scheduled => "scheduled defragmentation",
        })
    }
}

/// How a maintenance run ended.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum MaintenanceOutcome {
    /// Every member it meant to defragment was; for NOSPACE, every member has room and the
    /// alarm was disarmed.
    Finished,
    /// NOSPACE: after compacting and defragmenting every member, some member still has no
    /// room under the quota. The alarm stays; the operator never raises the quota itself.
    NoRoom,
}

/// What the operator did about space.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MaintenanceStatus {
    /// The run in progress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<MaintenanceRun>,
    /// The last run that ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run: Option<MaintenanceRun>,
    /// When the defragmentation schedule was first seen or last acted on (a run started, or
    /// no member passed the threshold); the next time of the schedule after it is the next
    /// one due.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_schedule_time: Option<Time>,
}

/// One maintenance run: compaction (NOSPACE only), then one member at a time.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MaintenanceRun {
    pub reason: MaintenanceReason,
    pub started_at: Time,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Time>,
    /// The revision the keyspace was compacted to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compacted_revision: Option<i64>,
    /// Members defragmented so far, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub defragmented: Vec<DefragmentedMember>,
    /// Bytes of backend files given back, summed over the members (set when the run ends).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reclaimed_bytes: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<MaintenanceOutcome>,
}

/// A member a run defragmented.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DefragmentedMember {
    pub name: String,
    /// Its backend file size before defragmenting.
    pub db_size_before: i64,
}
