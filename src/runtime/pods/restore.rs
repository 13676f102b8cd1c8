//! The init containers that restore a snapshot into a bootstrap member of a restored
//! cluster, and the cluster annotations that ask for them. Built without I/O; the restore
//! controller writes the annotations, `objects.rs` adds the containers to the Pod, and
//! [`crate::backup::member_restore`] is what two of them run.
//!
//! # Containers, in order
//! 1. `restore-fetch` (operator image): download and verify the snapshot into
//!    `/var/lib/etcd/restore/snapshot.db`: only the object version the restore pinned
//!    (ETag, version id) with the pinned digest. S3 credentials from the Secret as
//!    environment variables (never flags, never logged).
//! 2. `restore` (etcd image): `etcdutl snapshot restore` (`etcdctl` on 3.4) with the member's
//!    name, initial cluster, peer URL and token into `/var/lib/etcd/restore/data`.
//! 3. `restore-finish` (operator image): rename that to etcd's `/var/lib/etcd/data`.
//!
//! A member that has its data already (a rerun after a sandbox restart, a Pod recreated on
//! its PVC) downloads nothing and keeps its data; see [`crate::backup::member_restore`] for
//! why that takes a third container with distroless etcd images. Snapshot data goes from
//! the bucket straight to the member's volume, never through the API server.
//!
//! # Which Pods
//! Members launched with `--initial-cluster-state=new` (the bootstrap) of a cluster carrying
//! [`ANNOTATION_RESTORE_SOURCE`], or [`ANNOTATION_RECOVERY_SOURCE`] while a recovery from a
//! backup bootstraps new members in place (that one wins). Members added later join as
//! learners and get their data from the leader.

use k8s_openapi::api::core::v1::{
    Container, EnvVar, EnvVarSource, SecretKeySelector, SecurityContext, VolumeMount,
};
use serde::{Deserialize, Serialize};

use crate::api::restore::S3Object;
use crate::backup::s3::{ACCESS_KEY_ID, SECRET_ACCESS_KEY, SESSION_TOKEN};
use crate::runtime::{Error, MemberLaunch};

/// `<namespace>/<name>` of the EtcdRestore that created the cluster.
pub const ANNOTATION_RESTORE_FROM: &str = "etcd.operator.dev/restore-from";
/// The snapshot to restore, as JSON ([`SnapshotSource`]).
pub const ANNOTATION_RESTORE_SOURCE: &str = "etcd.operator.dev/restore-source";
/// The snapshot a recovery from a backup (`spec.recovery.fromBackup`) restores the cluster's
/// new bootstrap members from, as JSON ([`SnapshotSource`]), pinned when the recovery
/// fetched its backup; removed when the recovery ends. It wins over
/// [`ANNOTATION_RESTORE_SOURCE`] (a restored cluster recovered later).
pub const ANNOTATION_RECOVERY_SOURCE: &str = "etcd.operator.dev/recovery-source";

pub const FETCH_CONTAINER: &str = "restore-fetch";
pub const RESTORE_CONTAINER: &str = "restore";
pub const FINISH_CONTAINER: &str = "restore-finish";

/// Where the snapshot is staged, on the data volume.
pub const SNAPSHOT_PATH: &str = "/var/lib/etcd/restore/snapshot.db";
/// Where etcd's tool restores to, on the data volume (renamed to the data dir).
pub const RESTORED_PATH: &str = "/var/lib/etcd/restore/data";

/// The object a cluster is restored from, resolved by the restore controller (a `backupName`
/// becomes its latest backup's object and digest) and pinned to the version it found
/// ([`crate::backup::pin`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotSource {
    #[serde(flatten)]
    pub object: S3Object,
    /// Expected sha256 (hex); the object's metadata is trusted when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// The ETag the restore pinned: members accept no other object (clusters restored
    /// before pinning have none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    /// The version id the restore pinned, in a bucket that keeps versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_id: Option<String>,
}

impl SnapshotSource {
    /// The value of [`ANNOTATION_RESTORE_SOURCE`].
    pub fn to_annotation(&self) -> String {
        // Plain strings and bools: serializing cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// What the restore containers need beyond the member's launch.
pub struct RestoreContainers<'a> {
    pub source: &'a SnapshotSource,
    pub operator_image: &'a str,
    pub etcd_image: String,
    pub data_mount: VolumeMount,
    pub security_context: SecurityContext,
    pub resources: Option<k8s_openapi::api::core::v1::ResourceRequirements>,
}

impl RestoreContainers<'_> {
    /// The three init containers for `launch`, in order.
    pub fn for_member(&self, launch: &MemberLaunch, data_dir: &str) -> Vec<Container> {
        vec![
            self.fetch(launch, data_dir),
            self.restore(launch),
            self.finish(data_dir),
        ]
    }

    fn fetch(&self, launch: &MemberLaunch, data_dir: &str) -> Container {
        let object = &self.source.object;
        let connection = &object.connection;
        let mut args = vec![
            FETCH_CONTAINER.to_string(),
            format!("--bucket={}", object.bucket),
            format!("--key={}", object.key),
        ];
        if let Some(endpoint) = &connection.endpoint {
            args.push(format!("--endpoint={endpoint}"));
        }
        if let Some(region) = &connection.region {
            args.push(format!("--region={region}"));
        }
        if connection.force_path_style == Some(true) {
            args.push("--force-path-style".into());
        }
        if let Some(sha256) = &self.source.sha256 {
            args.push(format!("--sha256={sha256}"));
        }
        if let Some(etag) = &self.source.etag {
            args.push(format!("--etag={etag}"));
        }
        if let Some(version_id) = &self.source.version_id {
            args.push(format!("--version-id={version_id}"));
        }
        args.extend([
            format!("--etcd-version={}", launch.version),
            format!("--out={SNAPSHOT_PATH}"),
            format!("--restored={RESTORED_PATH}"),
            format!("--data-dir={data_dir}"),
        ]);
        let env = connection.credentials_secret.as_deref().map(|secret| {
            vec![
                secret_env("AWS_ACCESS_KEY_ID", secret, ACCESS_KEY_ID, false),
                secret_env("AWS_SECRET_ACCESS_KEY", secret, SECRET_ACCESS_KEY, false),
                secret_env("AWS_SESSION_TOKEN", secret, SESSION_TOKEN, true),
            ]
        });
        Container {
            name: FETCH_CONTAINER.into(),
            image: Some(self.operator_image.to_string()),
            args: Some(args),
            env,
            ..self.base()
        }
    }

    /// etcd's own tool, from the member's image: `etcdutl` from 3.5, `etcdctl` on 3.4.
    fn restore(&self, launch: &MemberLaunch) -> Container {
        let initial_cluster = launch
            .initial_cluster
            .iter()
            .map(|(name, url)| format!("{name}={url}"))
            .collect::<Vec<_>>()
            .join(",");
        let peer_url = launch
            .initial_cluster
            .iter()
            .find(|(name, _)| *name == launch.name)
            .map(|(_, url)| url.clone())
            .unwrap_or_default();
        let (tool, env) = if launch.version < semver::Version::new(3, 5, 0) {
            let api = EnvVar {
                name: "ETCDCTL_API".into(),
                value: Some("3".into()),
                value_from: None,
            };
            ("etcdctl", Some(vec![api]))
        } else {
            ("etcdutl", None)
        };
        Container {
            name: RESTORE_CONTAINER.into(),
            image: Some(self.etcd_image.clone()),
            command: Some(vec![tool.into()]),
            args: Some(vec![
                "snapshot".into(),
                "restore".into(),
                SNAPSHOT_PATH.into(),
                format!("--name={}", launch.name),
                format!("--initial-cluster={initial_cluster}"),
                format!("--initial-cluster-token={}", launch.cluster_token),
                format!("--initial-advertise-peer-urls={peer_url}"),
                format!("--data-dir={RESTORED_PATH}"),
            ]),
            env,
            ..self.base()
        }
    }

    fn finish(&self, data_dir: &str) -> Container {
        Container {
            name: FINISH_CONTAINER.into(),
            image: Some(self.operator_image.to_string()),
            args: Some(vec![
                FINISH_CONTAINER.to_string(),
                format!("--snapshot={SNAPSHOT_PATH}"),
                format!("--restored={RESTORED_PATH}"),
                format!("--data-dir={data_dir}"),
            ]),
            ..self.base()
        }
    }

    /// What every restore container shares: the data volume, the member's hardening and
    /// resources (so the Pod's scheduling needs stay the member's).
    fn base(&self) -> Container {
        Container {
            volume_mounts: Some(vec![self.data_mount.clone()]),
            security_context: Some(self.security_context.clone()),
            resources: self.resources.clone(),
            // A crash before the reason was written still leaves its last log lines.
            termination_message_policy: Some("FallbackToLogsOnError".into()),
            ..Default::default()
        }
    }
}

/// The source named by a cluster's annotations, if it is a restored cluster.
///
/// # Errors
/// [`Error::ParseRestoreSource`] when the annotation is not a [`SnapshotSource`].
pub fn source_of(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> Result<Option<SnapshotSource>, Error> {
    annotated_source(meta, ANNOTATION_RESTORE_SOURCE)
}

/// The source a recovery from a backup put on the cluster ([`ANNOTATION_RECOVERY_SOURCE`]).
///
/// # Errors
/// [`Error::ParseRestoreSource`] when the annotation is not a [`SnapshotSource`].
pub fn recovery_source_of(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> Result<Option<SnapshotSource>, Error> {
    annotated_source(meta, ANNOTATION_RECOVERY_SOURCE)
}

fn annotated_source(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    annotation: &str,
) -> Result<Option<SnapshotSource>, Error> {
    let Some(value) = meta.annotations.as_ref().and_then(|a| a.get(annotation)) else {
        return Ok(None);
    };
    serde_json::from_str(value)
        .map(Some)
        .map_err(|source| Error::ParseRestoreSource {
            cluster: meta.name.clone().unwrap_or_default(),
            source,
        })
}

fn secret_env(name: &str, secret: &str, key: &str, optional: bool) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: None,
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.into(),
                key: key.into(),
                optional: optional.then_some(true),
            }),
            ..Default::default()
        }),
    }
}
