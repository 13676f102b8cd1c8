//! Prometheus metrics and the HTTP endpoints `/metrics`, `/healthz` and `/readyz`, served
//! by both runtimes. Labels are static categories (step kinds, error variants), never
//! error messages.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use thiserror::Error;

use crate::api::EtcdClusterStatus;
use crate::plan::Step;
use crate::plan::maintenance::MaintenanceAction;

/// Labels naming a step kind (`AddLearner`, ...).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StepLabels {
    pub step: String,
}

/// Labels naming an error variant.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub error: String,
}

/// Labels naming one cluster.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClusterLabels {
    pub namespace: String,
    pub cluster: String,
}

/// Labels naming one member of one cluster.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MemberLabels {
    pub namespace: String,
    pub cluster: String,
    pub member: String,
}

/// Labels of a backup outcome.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BackupLabels {
    pub namespace: String,
    pub backup: String,
    pub result: String,
}

/// Every metric the operator exports.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    pub reconciles: Counter,
    pub reconcile_errors: Family<ErrorLabels, Counter>,
    pub steps: Family<StepLabels, Counter>,
    pub step_duration: Family<StepLabels, Histogram>,
    pub members: Family<ClusterLabels, Gauge>,
    pub healthy_members: Family<ClusterLabels, Gauge>,
    pub backups: Family<BackupLabels, Counter>,
    pub backup_bytes: Family<ClusterLabels, Gauge>,
    pub member_db_size: Family<MemberLabels, Gauge>,
    pub member_db_size_in_use: Family<MemberLabels, Gauge>,
    pub defragmentations: Family<ClusterLabels, Counter>,
    pub defrag_reclaimed_bytes: Family<ClusterLabels, Counter>,
    pub certificate_expiry: Family<ClusterLabels, Gauge>,
    ready: Arc<AtomicBool>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh registry with every metric registered under the `etcd_operator` prefix.
    pub fn new() -> Self {
        let mut r = Registry::with_prefix("etcd_operator");
        let reconciles = Counter::default();
        r.register("reconciles", "Reconcile passes run", reconciles.clone());
        let reconcile_errors = Family::<ErrorLabels, Counter>::default();
        r.register(
            "reconcile_errors",
            "Reconcile passes that failed, by error",
            reconcile_errors.clone(),
        );
        let steps = Family::<StepLabels, Counter>::default();
        r.register("steps", "Steps executed, by kind", steps.clone());
        let step_duration = Family::<StepLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.01, 2.0, 14))
        });
        r.register(
            "step_duration_seconds",
            "Time to execute one step",
            step_duration.clone(),
        );
        let members = Family::<ClusterLabels, Gauge>::default();
        r.register("cluster_members", "Members per cluster", members.clone());
        let healthy_members = Family::<ClusterLabels, Gauge>::default();
        r.register(
            "cluster_healthy_members",
            "Healthy voting members per cluster",
            healthy_members.clone(),
        );
        let backups = Family::<BackupLabels, Counter>::default();
        r.register("backups", "Backups taken, by result", backups.clone());
        let backup_bytes = Family::<ClusterLabels, Gauge>::default();
        r.register(
            "last_backup_bytes",
            "Size of the last successful backup",
            backup_bytes.clone(),
        );
        let member_db_size = Family::<MemberLabels, Gauge>::default();
        r.register(
            "member_db_size_bytes",
            "Size of each member's backend file (etcd dbSize)",
            member_db_size.clone(),
        );
        let member_db_size_in_use = Family::<MemberLabels, Gauge>::default();
        r.register(
            "member_db_size_in_use_bytes",
            "Bytes of each member's backend in use (etcd dbSizeInUse)",
            member_db_size_in_use.clone(),
        );
        let defragmentations = Family::<ClusterLabels, Counter>::default();
        r.register(
            "defragmentations",
            "Members defragmented by the operator (NOSPACE or scheduled)",
            defragmentations.clone(),
        );
        let defrag_reclaimed_bytes = Family::<ClusterLabels, Counter>::default();
        r.register(
            "defrag_reclaimed_bytes",
            "Backend bytes given back by the operator's finished defragmentation runs",
            defrag_reclaimed_bytes.clone(),
        );
        let certificate_expiry = Family::<ClusterLabels, Gauge>::default();
        r.register(
            "certificate_expiry_seconds",
            "Seconds until the earliest expiry among a cluster's certificates",
            certificate_expiry.clone(),
        );
        Self {
            registry: Arc::new(r),
            reconciles,
            reconcile_errors,
            steps,
            step_duration,
            members,
            healthy_members,
            backups,
            backup_bytes,
            member_db_size,
            member_db_size_in_use,
            defragmentations,
            defrag_reclaimed_bytes,
            certificate_expiry,
            ready: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Records one executed step and how long it took.
    pub fn observe_step(&self, step: &str, took: Duration) {
        let l = StepLabels {
            step: step.to_string(),
        };
        self.steps.get_or_create(&l).inc();
        self.step_duration
            .get_or_create(&l)
            .observe(took.as_secs_f64());
    }

    /// Records a cluster's member counts.
    pub fn observe_cluster(&self, namespace: &str, cluster: &str, members: i64, healthy: i64) {
        let l = ClusterLabels {
            namespace: namespace.to_string(),
            cluster: cluster.to_string(),
        };
        self.members.get_or_create(&l).set(members);
        self.healthy_members.get_or_create(&l).set(healthy);
    }

    /// Records the seconds from `now` to the earliest certificate expiry `status` shows
    /// (nothing for a cluster without certificates).
    pub fn observe_certificates(
        &self,
        namespace: &str,
        cluster: &str,
        status: &EtcdClusterStatus,
        now: jiff::Timestamp,
    ) {
        let earliest = status
            .tls
            .iter()
            .flat_map(|t| &t.certificates)
            .map(|c| c.not_after.0)
            .min();
        if let Some(at) = earliest {
            let l = ClusterLabels {
                namespace: namespace.to_string(),
                cluster: cluster.to_string(),
            };
            self.certificate_expiry
                .get_or_create(&l)
                .set(at.as_second() - now.as_second());
        }
    }

    /// Records each member's backend sizes from `status`, and what an executed maintenance
    /// step did (`acted`: the step was carried out).
    pub fn observe_maintenance(
        &self,
        namespace: &str,
        cluster: &str,
        status: &EtcdClusterStatus,
        step: &Step,
        acted: bool,
    ) {
        for m in &status.members {
            let l = MemberLabels {
                namespace: namespace.to_string(),
                cluster: cluster.to_string(),
                member: m.name.clone(),
            };
            if let Some(size) = m.db_size {
                self.member_db_size.get_or_create(&l).set(size);
            }
            if let Some(size) = m.db_size_in_use {
                self.member_db_size_in_use.get_or_create(&l).set(size);
            }
        }
        let l = ClusterLabels {
            namespace: namespace.to_string(),
            cluster: cluster.to_string(),
        };
        match step {
            Step::Maintain {
                action: MaintenanceAction::Defragment { .. },
                ..
            } if acted => {
                self.defragmentations.get_or_create(&l).inc();
            }
            Step::Maintain {
                action:
                    MaintenanceAction::Finish {
                        reclaimed_bytes, ..
                    },
                ..
            } if acted => {
                self.defrag_reclaimed_bytes
                    .get_or_create(&l)
                    .inc_by(*reclaimed_bytes);
            }
            _ => {}
        }
    }

    /// Marks the operator ready (`/readyz` answers 200 from then on).
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    /// The metrics in Prometheus' text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// The metrics server could not start.
#[derive(Debug, Error)]
pub enum Error {
    #[error("binding the metrics address {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("serving metrics")]
    Serve(#[source] std::io::Error),
}

/// The router serving `/metrics`, `/healthz` and `/readyz`.
pub fn router(metrics: Metrics) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(|State(m): State<Metrics>| async move {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    m.encode(),
                )
            }),
        )
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(|State(m): State<Metrics>| async move {
                if m.ready.load(Ordering::Relaxed) {
                    (StatusCode::OK, "ready")
                } else {
                    (StatusCode::SERVICE_UNAVAILABLE, "not ready")
                }
            }),
        )
        .with_state(metrics)
}

/// Binds `addr` and serves the endpoints until the task is dropped. Returns the bound
/// address (useful with port 0).
pub async fn serve(
    metrics: Metrics,
    addr: SocketAddr,
) -> Result<(SocketAddr, tokio::task::JoinHandle<Result<(), Error>>), Error> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Bind { addr, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| Error::Bind { addr, source })?;
    let task = tokio::spawn(async move {
        axum::serve(listener, router(metrics))
            .await
            .map_err(Error::Serve)
    });
    Ok((bound, task))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_earliest_certificate_expiry_is_a_gauge_of_seconds_left() {
        use crate::api::tls::{CertificateStatus, TlsStatus};
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
        let at = |s| Time(jiff::Timestamp::from_second(s).unwrap());
        let status = EtcdClusterStatus {
            tls: Some(TlsStatus {
                certificates: vec![
                    CertificateStatus {
                        name: "ca".into(),
                        not_after: at(10_000),
                    },
                    CertificateStatus {
                        name: "server".into(),
                        not_after: at(1_600),
                    },
                ],
                ..Default::default()
            }),
            ..Default::default()
        };
        let m = Metrics::new();
        m.observe_certificates(
            "db",
            "example",
            &status,
            jiff::Timestamp::from_second(1_000).unwrap(),
        );
        // A plaintext cluster has no series.
        m.observe_certificates(
            "db",
            "open",
            &EtcdClusterStatus::default(),
            jiff::Timestamp::now(),
        );
        let text = m.encode();
        assert!(
            text.contains(
                "etcd_operator_certificate_expiry_seconds{namespace=\"db\",cluster=\"example\"} 600"
            ),
            "{text}"
        );
        assert!(!text.contains("cluster=\"open\"}"), "{text}");
    }

    #[tokio::test]
    async fn serves_metrics_health_and_readiness() {
        let m = Metrics::new();
        m.observe_step("AddLearner", Duration::from_millis(120));
        m.observe_cluster("default", "example", 3, 2);
        let (addr, task) = serve(m.clone(), "127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let get = |path: &str| {
            let path = path.to_string();
            async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
                s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
                    .await
                    .unwrap();
                let mut out = String::new();
                s.read_to_string(&mut out).await.unwrap();
                out
            }
        };
        let body = get("/metrics").await;
        assert!(
            body.contains("etcd_operator_steps_total{step=\"AddLearner\"} 1"),
            "{body}"
        );
        assert!(
            body.contains(
                "etcd_operator_cluster_healthy_members{namespace=\"default\",cluster=\"example\"} 2"
            ),
            "{body}"
        );
        assert!(get("/healthz").await.starts_with("HTTP/1.0 200"));
        assert!(get("/readyz").await.starts_with("HTTP/1.0 503"));
        m.set_ready(true);
        assert!(get("/readyz").await.starts_with("HTTP/1.0 200"));
        task.abort();
    }
}
