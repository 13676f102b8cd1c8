//! The Kubernetes driver's [`RecoveryEnv`]: a recovery from a backup
//! (`spec.recovery.fromBackup`) restores the cluster's new bootstrap members in place with
//! the machinery EtcdRestores use: their init containers download the object, verify it
//! against its pin and digest and restore it ([`crate::runtime::pods::restore`]). No
//! snapshot data passes through the operator or the API server.
//!
//! # Flow
//! 1. [`RecoveryEnv::fetch`] (nothing of the members changes): read the EtcdBackup in the
//!    cluster's namespace and pick its latest successful backup, the newest verified one
//!    first ([`latest_backup`]); check its credentials Secret exists and holds a key pair
//!    (or ambient credentials are allowed) and that the cluster's etcd version restores
//!    what the backup recorded; pin the object with one HEAD (ETag, version id, the digest
//!    recorded for it, which must match, as for an EtcdRestore). The pinned source is
//!    staged on the EtcdCluster as [`ANNOTATION_RECOVERY_SOURCE`], so an operator restarted
//!    mid-recovery finds it again. Any failure: the run ends saying why, the cluster is as
//!    it was.
//! 2. [`RecoveryEnv::seed`]: the runtime creates the new bootstrap members with the restore
//!    init containers of that source ([`PodRuntime::set_seed`]); read from the annotation,
//!    so a rerun after a crash restores the same pinned object.
//! 3. [`RecoveryEnv::restore_failure`], while they bootstrap: a restore init container that
//!    failed for good (`SourceChanged`: the object was overwritten after the pin; a digest
//!    mismatch; a snapshot too new; an image that cannot be pulled) ends the run at once,
//!    rolled back, before any member serves. Failures that may pass (S3 unreachable, a
//!    Secret added late) wait for the planner's bootstrap deadline.
//! 4. [`RecoveryEnv::clean_up`] when the run ends: the annotation is removed (and by
//!    [`KubeRecovery::forget_stale_seed`] whenever it is found with no run under way; the
//!    runtime restores it only during a run).

use std::sync::atomic::{AtomicBool, Ordering};

use k8s_openapi::api::core::v1::Pod;
use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use tracing::{info, warn};

use super::restore::{failure_of, pin_source, source_credentials};
use crate::api::recovery::{RecoveredBackup, RecoveryMode};
use crate::api::restore::S3Object;
use crate::api::{EtcdBackup, EtcdCluster, EtcdClusterStatus};
use crate::backup::check_version;
use crate::error_chain::error_chain;
use crate::plan::failure::{AttemptError, Failure};
use crate::plan::recovery::RestoreFailed;
use crate::plan::restore::latest_backup;
use crate::reconcile::RecoveryEnv;
use crate::reconcile::recover::Failed;
use crate::runtime::ClusterRef;
use crate::runtime::pods::restore::{
    ANNOTATION_RECOVERY_SOURCE, SnapshotSource, recovery_source_of,
};
use crate::runtime::pods::{LABEL_CLUSTER, PodRuntime};

/// Recoveries from backups on Kubernetes, for one pass of one cluster.
pub struct KubeRecovery<'a> {
    client: Client,
    /// The pass's runtime: the seed is set on it for the bootstrap of the same pass.
    runtime: &'a PodRuntime,
    /// Whether a backup without `credentialsSecret` may use ambient cloud credentials.
    allow_ambient_credentials: bool,
    /// The cluster carried [`ANNOTATION_RECOVERY_SOURCE`] when the pass began.
    annotated: bool,
    /// [`RecoveryEnv::clean_up`] ran in this pass.
    cleaned: AtomicBool,
}

fn failed(f: &impl Failure) -> Failed {
    Failed::new(f.reason(), f.message())
}

/// The API server failed a call: the run ends (nothing changed yet where this is used).
fn api_failed(what: String, e: &kube::Error) -> Failed {
    Failed::new("ApiServer", format!("{what}: {}", error_chain(e)))
}

impl<'a> KubeRecovery<'a> {
    /// The recoveries of `cluster`'s pass on `runtime`. The source a recovery staged on the
    /// cluster is restored only by the bootstrap of a fromBackup run under way: without one
    /// the runtime forgets it (a copied manifest, an ended run whose clean-up failed), so an
    /// ordinary bootstrap never restores it.
    pub fn new(
        client: Client,
        runtime: &'a PodRuntime,
        cluster: &EtcdCluster,
        allow_ambient_credentials: bool,
    ) -> Self {
        if !from_backup_running(cluster.status.as_ref()) {
            runtime.set_seed(None);
        }
        let annotated = cluster
            .metadata
            .annotations
            .as_ref()
            .is_some_and(|a| a.contains_key(ANNOTATION_RECOVERY_SOURCE));
        Self {
            client,
            runtime,
            allow_ambient_credentials,
            annotated,
            cleaned: AtomicBool::new(false),
        }
    }

    fn clusters(&self, cluster: &ClusterRef) -> Api<EtcdCluster> {
        Api::namespaced(self.client.clone(), &cluster.namespace)
    }

    /// Writes (or with `None` removes) [`ANNOTATION_RECOVERY_SOURCE`] on the EtcdCluster. A
    /// merge patch of that one annotation: the user's own annotations are untouched.
    async fn annotate(
        &self,
        cluster: &ClusterRef,
        source: Option<&SnapshotSource>,
    ) -> Result<(), kube::Error> {
        let value = source.map(SnapshotSource::to_annotation);
        let patch = json!({ "metadata": { "annotations": { ANNOTATION_RECOVERY_SOURCE: value } } });
        match self
            .clusters(cluster)
            .patch(
                &cluster.name,
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
        {
            Ok(_) => Ok(()),
            // Nothing left to annotate or to clean.
            Err(kube::Error::Api(s)) if source.is_none() && s.code == 404 => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// After the pass whose status is `status`: removes a recovery's source left on the
    /// cluster when no recovery from a backup runs (a clean-up that failed, a status write
    /// lost after a fetch, a copied manifest). Failing to is logged; the next pass tries again.
    pub async fn forget_stale_seed(&self, cluster: &ClusterRef, status: &EtcdClusterStatus) {
        if !self.annotated
            || self.cleaned.load(Ordering::Acquire)
            || from_backup_running(Some(status))
        {
            return;
        }
        match self.clean_up(cluster).await {
            Ok(()) => info!(%cluster, "removed the source of a recovery that is not running"),
            Err(f) => {
                warn!(%cluster, error = %f.message, "could not remove the source of a recovery that is not running; will try again");
            }
        }
    }
}

/// Whether `status` records a recovery from a backup under way.
fn from_backup_running(status: Option<&EtcdClusterStatus>) -> bool {
    status
        .and_then(|s| s.recovery.as_ref())
        .and_then(|r| r.run.as_ref())
        .is_some_and(|r| r.mode == RecoveryMode::FromBackup)
}

impl RecoveryEnv for KubeRecovery<'_> {
    async fn fetch(
        &self,
        cluster: &ClusterRef,
        backup_name: &str,
        version: &semver::Version,
    ) -> Result<RecoveredBackup, Failed> {
        let namespace = cluster.namespace.as_str();
        if self.runtime.operator_image().is_none() {
            return Err(Failed::new(
                "OperatorImageUnknown",
                "the new members restore the backup in init containers that run the operator's own image, which is unknown (its own Pod could not be read: set OPERATOR_IMAGE)",
            ));
        }
        let backup = Api::<EtcdBackup>::namespaced(self.client.clone(), namespace)
            .get_opt(backup_name)
            .await
            .map_err(|e| api_failed(format!("reading EtcdBackup {backup_name}"), &e))?;
        let (from, record) =
            latest_backup(namespace, backup_name, backup.as_ref()).map_err(|p| failed(&p))?;
        let credentials = source_credentials(
            &self.client,
            namespace,
            &from.connection,
            self.allow_ambient_credentials,
        )
        .await
        .map_err(|e| Failed::new("ApiServer", error_chain(&e)))?
        .map_err(|e| failed(&e))?;
        if let Ok(recorded) = semver::Version::parse(&record.etcd_version) {
            check_version(&recorded, version).map_err(|e| failed(&AttemptError::Backup(e)))?;
        }
        let pin = pin_source(&from, credentials, Some(version))
            .await
            .map_err(|e| failed(&AttemptError::Backup(e)))?;
        let source = SnapshotSource {
            object: S3Object {
                bucket: from.bucket.clone(),
                key: from.key.clone(),
                connection: from.connection.clone(),
            },
            sha256: pin.sha256.clone().or_else(|| from.sha256.clone()),
            etag: Some(pin.etag.clone()),
            version_id: pin.version_id.clone(),
        };
        self.annotate(cluster, Some(&source)).await.map_err(|e| {
            api_failed(
                format!(
                    "writing {ANNOTATION_RECOVERY_SOURCE} on EtcdCluster {}",
                    cluster.name
                ),
                &e,
            )
        })?;
        info!(%cluster, backup = backup_name, key = %from.key, etag = %pin.etag, version_id = ?pin.version_id, "recovery: backup resolved and pinned; its members will restore that object only");
        let verified = record.verification.as_ref().and_then(|v| v.revision);
        Ok(RecoveredBackup {
            backup_name: backup_name.to_owned(),
            bucket: from.bucket,
            key: from.key,
            sha256: source.sha256.unwrap_or_default(),
            revision: verified.unwrap_or(record.revision),
            taken_at: Some(record.time.clone()),
        })
    }

    async fn seed(&self, cluster: &ClusterRef) -> Result<(), Failed> {
        // Read with the pass's cluster; asked again when that copy did not have it yet.
        if self.runtime.seed().is_some() {
            return Ok(());
        }
        let current = self
            .clusters(cluster)
            .get_opt(&cluster.name)
            .await
            .map_err(|e| api_failed(format!("reading EtcdCluster {}", cluster.name), &e))?;
        let source = match current.as_ref().map(|c| recovery_source_of(&c.metadata)) {
            Some(Ok(Some(source))) => source,
            Some(Err(e)) => return Err(Failed::new("SeedInvalid", error_chain(&e))),
            _ => {
                return Err(Failed::new(
                    "SeedMissing",
                    format!(
                        "the pinned backup ({ANNOTATION_RECOVERY_SOURCE}) is gone from EtcdCluster {}; the recovery is rolled back",
                        cluster.name
                    ),
                ));
            }
        };
        self.runtime.set_seed(Some(source));
        Ok(())
    }

    async fn clean_up(&self, cluster: &ClusterRef) -> Result<(), Failed> {
        self.runtime.set_seed(None);
        self.cleaned.store(true, Ordering::Release);
        self.annotate(cluster, None).await.map_err(|e| {
            api_failed(
                format!(
                    "removing {ANNOTATION_RECOVERY_SOURCE} from EtcdCluster {}",
                    cluster.name
                ),
                &e,
            )
        })
    }

    async fn restore_failure(
        &self,
        cluster: &ClusterRef,
        members: &[String],
    ) -> Option<RestoreFailed> {
        let pods = Api::<Pod>::namespaced(self.client.clone(), &cluster.namespace)
            .list(&ListParams::default().labels(&format!("{LABEL_CLUSTER}={}", cluster.name)))
            .await;
        let pods = match pods {
            Ok(pods) => pods.items,
            Err(e) => {
                warn!(%cluster, error = %error_chain(&e), "could not read the restoring members' pods");
                return None;
            }
        };
        pods.iter()
            .filter(|p| members.contains(&p.name_any()) && p.metadata.deletion_timestamp.is_none())
            .flat_map(|p| {
                let statuses = p
                    .status
                    .as_ref()
                    .and_then(|s| s.init_container_statuses.clone())
                    .unwrap_or_default();
                let name = p.name_any();
                statuses
                    .into_iter()
                    .filter_map(move |c| failure_of(&name, &c))
            })
            .find(|f| !f.retryable)
            .map(|f| RestoreFailed {
                reason: f.reason.to_owned(),
                message: f.message,
            })
    }
}

#[cfg(test)]
mod tests;
