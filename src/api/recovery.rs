//! `spec.recovery` and `status.recovery` of an EtcdCluster: what to do once quorum is lost
//! for good, and what the operator did about it.
//!
//! Data only: when to recover and how is `plan::recovery`'s decision, carrying it out
//! `reconcile::recover`'s.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// How long quorum must stay lost before `spec.recovery` acts, when `after` is unset.
pub const DEFAULT_AFTER: &str = "10m";

/// The one-shot trigger: an annotation (on Kubernetes and in the local YAML alike) whose
/// value is `fromSurvivor` or `fromBackup:<EtcdBackup>`, optionally followed by `@<anything>`
/// so the same recovery can be asked for again. It runs that recovery once, at once (no
/// `after`), whether or not `spec.recovery` is set; never while a voter answers with quorum.
pub const RECOVER_ANNOTATION: &str = "etcd.operator.dev/recover";

/// Recovery from lost quorum: opt-in, explicit, never silent.
///
/// Set `fromSurvivor`, `fromBackup` or both (the survivor is tried first: it loses less).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RecoverySpec {
    /// Restore the cluster in place (same name and Services, a new cluster id) from the
    /// latest successful, digest-verified backup of an EtcdBackup in this namespace. Every
    /// member's data is kept aside (local data dirs renamed, PVCs retained), never deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_backup: Option<RecoveryFromBackup>,
    /// Recover from the most up-to-date member whose data survives (highest raft index;
    /// etcd's `--force-new-cluster`), then grow back to size with learners. Only when every
    /// other member is known gone: its data missing, or down past `after`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_survivor: Option<bool>,
    /// How long quorum must stay lost before recovering, e.g. `10m` (default), `90s`, `1h`.
    /// Members that only restart come back within it without a recovery.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9]+[smhdw]$"))]
    pub after: Option<String>,
}

/// The EtcdBackup whose latest successful backup a recovery restores.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RecoveryFromBackup {
    /// An EtcdBackup in the cluster's namespace.
    pub backup_name: String,
}

/// How a cluster is recovered.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum RecoveryMode {
    /// Restored in place from a backup.
    FromBackup,
    /// The most up-to-date survivor restarted with `--force-new-cluster`, then regrown.
    FromSurvivor,
}

impl std::fmt::Display for RecoveryMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RecoveryMode::FromBackup => "fromBackup",
            RecoveryMode::FromSurvivor => "fromSurvivor",
        })
    }
}

/// Who asked for a recovery.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum RecoveryTrigger {
    /// `spec.recovery`, once quorum had been lost for `after`.
    Spec,
    /// The `etcd.operator.dev/recover` annotation.
    Annotation,
}

/// Where a recovery is.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum RecoveryPhase {
    /// fromBackup: resolving, downloading and verifying the backup; nothing changed yet.
    Fetching,
    /// Stopping the old members and moving their data aside.
    SettingAside,
    /// fromSurvivor: the survivor is restarted once with `--force-new-cluster`.
    ForcingNewCluster,
    /// fromBackup: the new members bootstrap from the snapshot.
    Bootstrapping,
    /// fromSurvivor: the cluster serves; learners are added back up to size.
    Regrowing,
    /// A step that changed something failed for good: the members the run created are
    /// deleted and the kept data moved back.
    RollingBack,
    /// Ended; see `outcome`.
    Ended,
}

/// How a recovery ended.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum RecoveryOutcome {
    Succeeded,
    /// Nothing was changed, or what was changed was put back; `reason` and `message` say why.
    Failed,
}

/// What the operator did about lost quorum.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RecoveryStatus {
    /// Since when the cluster has had no quorum (cleared once it has one again): the clock
    /// `spec.recovery.after` runs on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quorum_lost_since: Option<Time>,
    /// The recovery under way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<RecoveryRun>,
    /// The last recovery that ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run: Option<RecoveryRun>,
    /// Recoveries that changed this cluster (this EtcdCluster object). `spec.recovery` runs
    /// at most one; the annotation asks for more.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub recoveries: i32,
    /// Failed attempts in a row of the automatic recovery (it backs off).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub failures: i32,
    /// The `etcd.operator.dev/recover` value acted on (or refused); the same value never
    /// runs twice. Forgotten once the annotation is removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handled_trigger: Option<String>,
}

fn is_zero(n: &i32) -> bool {
    *n == 0
}

/// One recovery.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RecoveryRun {
    pub mode: RecoveryMode,
    pub trigger: RecoveryTrigger,
    pub phase: RecoveryPhase,
    pub started_at: Time,
    /// When the run entered its phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase_since: Option<Time>,
    /// When the cluster served again (a quorum of healthy voters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serving_at: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<RecoveryOutcome>,
    /// Why it failed (PascalCase), with `message`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When quorum was lost, as recorded when the run started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quorum_lost_since: Option<Time>,
    /// The etcd cluster id before; fromBackup makes a new one (`clusterID`).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        rename = "previousClusterID"
    )]
    pub previous_cluster_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "clusterID")]
    pub cluster_id: Option<String>,
    /// fromSurvivor: the member recovered from, and its raft index when chosen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub survivor: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub survivor_raft_index: Option<i64>,
    /// fromBackup: the EtcdBackup asked for, and the backup of it restored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<RecoveredBackup>,
    /// The revision the cluster serves from after the recovery: the backup's, or the
    /// survivor's once it served alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<i64>,
    /// fromBackup: the members bootstrapped from the snapshot (new names).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<String>,
    /// fromBackup: the token the new members bootstrap with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// The old members' data, kept aside (never deleted by the operator).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kept: Vec<KeptMember>,
}

/// The backup a recovery restored.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RecoveredBackup {
    /// The EtcdBackup.
    pub backup_name: String,
    pub bucket: String,
    pub key: String,
    pub sha256: String,
    /// The revision the snapshot holds.
    pub revision: i64,
    /// When the backup was taken: writes after it are not in the restored cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub taken_at: Option<Time>,
}

/// An old member's data, kept aside.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeptMember {
    pub name: String,
    /// Where: a directory locally, a PVC on Kubernetes.
    pub at: String,
}

/// The recovery a trigger value asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Requested {
    FromSurvivor,
    FromBackup { backup_name: String },
}

impl Requested {
    pub fn mode(&self) -> RecoveryMode {
        match self {
            Requested::FromSurvivor => RecoveryMode::FromSurvivor,
            Requested::FromBackup { .. } => RecoveryMode::FromBackup,
        }
    }
}

/// Reads a `etcd.operator.dev/recover` value: `fromSurvivor` or `fromBackup:<EtcdBackup>`,
/// optionally followed by `@<anything>`.
///
/// # Errors
/// A message saying what the value should look like.
pub fn parse_trigger(value: &str) -> Result<Requested, String> {
    let what = value.split_once('@').map_or(value, |(w, _)| w).trim();
    let bad = || {
        format!(
            "{RECOVER_ANNOTATION}={value:?} is not fromSurvivor or fromBackup:<EtcdBackup> (optionally followed by @<anything> to ask again)"
        )
    };
    if what == "fromSurvivor" {
        return Ok(Requested::FromSurvivor);
    }
    let name = what.strip_prefix("fromBackup:").ok_or_else(bad)?.trim();
    let mut report = super::validate::Report::default();
    super::validate::check_name(&mut report, "backupName", name, 63);
    if !report.is_valid() {
        return Err(format!("{}: {}", bad(), report.errors_message()));
    }
    Ok(Requested::FromBackup {
        backup_name: name.to_owned(),
    })
}

impl RecoverySpec {
    /// What `spec.recovery` allows, survivor first.
    pub fn modes(&self) -> Vec<Requested> {
        let mut modes = Vec::new();
        if self.from_survivor == Some(true) {
            modes.push(Requested::FromSurvivor);
        }
        if let Some(b) = &self.from_backup {
            modes.push(Requested::FromBackup {
                backup_name: b.backup_name.clone(),
            });
        }
        modes
    }

    /// `after`, or the default; `None` when it does not parse (validation reports it).
    pub fn after(&self) -> Option<std::time::Duration> {
        super::quantity::parse_duration(self.after.as_deref().unwrap_or(DEFAULT_AFTER)).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trigger_values() {
        assert_eq!(parse_trigger("fromSurvivor"), Ok(Requested::FromSurvivor));
        assert_eq!(parse_trigger("fromSurvivor@2"), Ok(Requested::FromSurvivor));
        assert_eq!(
            parse_trigger("fromBackup:nightly@again"),
            Ok(Requested::FromBackup {
                backup_name: "nightly".into()
            })
        );
        assert!(parse_trigger("yes").is_err());
        assert!(parse_trigger("fromBackup:").is_err());
        assert!(parse_trigger("fromBackup:../x").is_err());
    }

    #[test]
    fn modes_put_the_survivor_first() {
        let spec = RecoverySpec {
            from_backup: Some(RecoveryFromBackup {
                backup_name: "b".into(),
            }),
            from_survivor: Some(true),
            after: None,
        };
        assert_eq!(spec.modes()[0], Requested::FromSurvivor);
        assert_eq!(spec.after(), Some(std::time::Duration::from_secs(600)));
    }
}
