//! The local driver's [`RecoveryEnv`]: a recovery from a backup restores the latest
//! successful backup of an EtcdBackup document (its status file says which object and
//! digest, a Secret document holds the credentials) with the restore machinery the
//! EtcdRestores use: [`crate::backup::fetch_snapshot`] downloads and verifies it, and the
//! runtime's seed ([`LocalRuntime::set_seed`]) restores each new bootstrap member's data dir
//! from it before its first start.
//!
//! The snapshot is kept at `<state>/recovery/<namespace>/<cluster>/snapshot.db` while the
//! recovery runs, and removed when it ends.

use std::path::PathBuf;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::api::EtcdBackup;
use crate::api::recovery::RecoveredBackup;
use crate::backup;
use crate::plan::failure::Failure;
use crate::plan::restore::latest_backup;
use crate::reconcile::RecoveryEnv;
use crate::reconcile::recover::Failed;
use crate::runtime::local::Seed;
use crate::runtime::{ClusterRef, LocalRuntime};

use super::backups::{self, namespace_of};
use super::manifest::Documents;
use super::store::StatusFiles;

/// The snapshot a recovery of a cluster restores, under the state dir.
const SNAPSHOT_FILE: &str = "snapshot.db";

/// Recoveries from backups on the local runtime, for one pass.
pub struct LocalRecovery<'a> {
    pub runtime: &'a LocalRuntime,
    pub status_files: &'a StatusFiles,
    pub docs: &'a Documents,
}

fn failed(f: &impl Failure) -> Failed {
    Failed::new(f.reason(), f.message())
}

impl LocalRecovery<'_> {
    fn snapshot(&self, cluster: &ClusterRef) -> Result<PathBuf, Failed> {
        let ok = |s: &str| !s.is_empty() && !s.starts_with('.') && !s.contains(['/', '\\', '\0']);
        if !ok(&cluster.namespace) || !ok(&cluster.name) {
            return Err(Failed::new(
                "InvalidName",
                format!("{cluster} cannot name a directory"),
            ));
        }
        Ok(self
            .runtime
            .state_dir()
            .join("recovery")
            .join(&cluster.namespace)
            .join(&cluster.name)
            .join(SNAPSHOT_FILE))
    }
}

impl RecoveryEnv for LocalRecovery<'_> {
    async fn fetch(
        &self,
        cluster: &ClusterRef,
        backup_name: &str,
        version: &semver::Version,
    ) -> Result<RecoveredBackup, Failed> {
        let namespace = cluster.namespace.as_str();
        let backup = self.docs.backups.iter().find(|d| {
            d.metadata.name.as_deref() == Some(backup_name)
                && namespace_of(&d.metadata) == namespace
        });
        let backup = backup.map(|doc| {
            let mut b = doc.clone();
            b.status = self
                .status_files
                .read::<EtcdBackup>(backup_name)
                .ok()
                .flatten()
                .and_then(|s| s.status);
            b
        });
        let (from, record) =
            latest_backup(namespace, backup_name, backup.as_ref()).map_err(|p| failed(&p))?;
        let credentials = backups::credentials(&from.connection, namespace, &self.docs.secrets)
            .map_err(|e| failed(&e))?;
        let binary = self
            .runtime
            .binary(version)
            .map_err(|e| Failed::new("BinaryMissing", crate::error_chain::error_chain(&e)))?;
        let tools = binary.parent().map(PathBuf::from).unwrap_or_default();
        let dest = self.snapshot(cluster)?;
        if let Some(dir) = dest.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| Failed::new("Journal", format!("create {}: {e}", dir.display())))?;
        }
        let s3 = backup::client(&from.connection, credentials).await;
        let verified = backup::fetch_snapshot(
            &s3,
            &from.bucket,
            &from.key,
            from.sha256.as_deref(),
            &dest,
            &tools,
            version,
        )
        .await
        .map_err(|e| failed(&e))?;
        Ok(RecoveredBackup {
            backup_name: backup_name.to_owned(),
            bucket: from.bucket,
            key: from.key,
            sha256: verified.sha256,
            revision: verified.revision,
            taken_at: Some(Time(record.time.0)),
        })
    }

    async fn seed(&self, cluster: &ClusterRef) -> Result<(), Failed> {
        let snapshot = self.snapshot(cluster)?;
        if !snapshot.is_file() {
            return Err(Failed::new(
                "SnapshotMissing",
                format!(
                    "the verified snapshot {} is gone; the recovery is rolled back",
                    snapshot.display()
                ),
            ));
        }
        self.runtime
            .set_seed(cluster, Some(&Seed { snapshot }))
            .map_err(|e| Failed::new("Seed", crate::error_chain::error_chain(&e)))
    }

    async fn clean_up(&self, cluster: &ClusterRef) -> Result<(), Failed> {
        self.runtime
            .set_seed(cluster, None)
            .map_err(|e| Failed::new("Seed", crate::error_chain::error_chain(&e)))?;
        let snapshot = self.snapshot(cluster)?;
        match std::fs::remove_file(&snapshot) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Failed::new(
                "Cleanup",
                format!("remove {}: {e}", snapshot.display()),
            )),
        }
    }
}
