//! The resource kinds of group `etcd.operator.dev/v1alpha1`, their conditions, their
//! validation and the CRDs generated from them.
//!
//! The kinds only describe data; deciding what to do with them is [`crate::plan`]'s job.

pub mod backup;
pub mod cluster;
pub mod condition;
pub mod crd;
pub mod maintenance;
pub mod quantity;
pub mod recovery;
pub mod restore;
pub mod s3;
pub mod tls;
pub mod unknown_fields;
pub mod validate;

pub use backup::{EtcdBackup, EtcdBackupSpec, EtcdBackupStatus};
pub use cluster::{EtcdCluster, EtcdClusterSpec, EtcdClusterStatus};
pub use restore::{EtcdRestore, EtcdRestoreSpec, EtcdRestoreStatus};

/// The API group of every kind here.
pub const GROUP: &str = "etcd.operator.dev";
/// The API version of every kind here.
pub const VERSION: &str = "v1alpha1";
/// `apiVersion` as written in manifests.
pub const API_VERSION: &str = "etcd.operator.dev/v1alpha1";
