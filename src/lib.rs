//! etcd-operator: an operator for etcd clusters with two member runtimes.
//!
//! Layout (one job per module):
//! - [`api`]: the three resource kinds (`EtcdCluster`, `EtcdBackup`, `EtcdRestore`) and their validation.
//! - [`plan`]: the pure planner: observed state + spec -> the next safe step.
//! - [`etcd`]: a typed admin layer over etcd-client.
//! - [`runtime`]: where members run (local processes, Kubernetes pods).
//! - [`controller`]: observe -> plan -> execute -> status.
//! - [`backup`]: snapshot streaming to S3 and restore.
//! - [`testing`]: real etcd members on loopback for tests and benchmarks.

pub mod api;
pub mod backup;
pub mod controller;
pub mod etcd;
#[cfg(test)]
mod fixtures;
pub mod local;
pub mod manifest;
pub mod metrics;
pub mod plan;
pub mod runtime;
pub mod testing;
pub mod tls_provider;
