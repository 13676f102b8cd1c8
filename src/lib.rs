//! etcd-operator: an operator for etcd clusters with two member runtimes.
//!
//! Layout (one job per module; README's layout table says the same):
//! - [`api`]: the three resource kinds (`EtcdCluster`, `EtcdBackup`, `EtcdRestore`), their
//!   conditions, validation and CRDs.
//! - [`plan`]: every pure decision: the cluster's next safe step from observed state and spec,
//!   the quorum arithmetic, and what a backup or restore does next and its status says.
//! - [`etcd`]: a typed admin layer over etcd-client.
//! - [`runtime`]: where members run (local processes, Kubernetes pods) and the etcd command
//!   line both share.
//! - [`backup`]: the engine: snapshots streamed to S3, retention, restores of data dirs.
//! - [`reconcile`]: the pass both runtimes share: observe -> plan -> execute -> status.
//! - [`drivers`]: what runs that pass and persists statuses: Controllers on the Kubernetes API
//!   (`run`), a loop over YAML files (`local`).
//! - [`failpoint`]: named crash points for the crash tests (feature `failpoints`).
//! - [`metrics`]: the Prometheus registry and the HTTP server for it and the probes.
//! - [`testing`] (tests and benchmarks only, feature `testing`): real etcd members and
//!   Garage on loopback.

pub mod api;
pub mod backup;
pub mod certs;
pub mod drivers;
pub mod error_chain;
pub mod etcd;
pub mod failpoint;
pub mod metrics;
pub mod plan;
pub mod reconcile;
pub mod runtime;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod tls_provider;
