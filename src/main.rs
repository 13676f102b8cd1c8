//! The `etcd-operator` binary: parse the command line, set up logging, dispatch.

use anyhow::Context;
use clap::Parser;

mod cli;

use cli::{
    Cli, Command, LocalAction, LocalArgs, LogFormat, RestoreFetchArgs, RestoreFinishArgs, RunArgs,
};
use etcd_operator::api::{EtcdBackup, EtcdCluster, EtcdRestore, crd};
use etcd_operator::backup::member_restore::{self, MemberRestorePaths, StepReport};
use etcd_operator::drivers::local;
use etcd_operator::drivers::local::store::{self, StatusFiles};
use etcd_operator::plan::Policy;

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

/// `etcd-operator local status`: the table from the status files.
fn local_status(args: &LocalArgs) -> anyhow::Result<()> {
    let files = StatusFiles::new(&args.state_dir);
    let now = k8s_openapi::jiff::Timestamp::now();
    let clusters: Vec<EtcdCluster> = files.read_all()?;
    let backups: Vec<EtcdBackup> = files.read_all()?;
    let restores: Vec<EtcdRestore> = files.read_all()?;
    if clusters.is_empty() {
        println!("No EtcdClusters in {}", args.state_dir.display());
    } else {
        print!("{}", store::cluster_table(&clusters, now));
    }
    if !backups.is_empty() {
        print!("\n{}", store::backup_table(&backups, now));
    }
    if !restores.is_empty() {
        print!("\n{}", store::restore_table(&restores, now));
    }
    Ok(())
}

/// `etcd-operator local --file F`: the reconcile loop until Ctrl-C.
fn local_run(args: LocalArgs) -> anyhow::Result<()> {
    if args.files.is_empty() {
        anyhow::bail!("give at least one --file (a YAML file or a directory of them)");
    }
    let metrics = etcd_operator::metrics::Metrics::new();
    let metrics_addr: Option<std::net::SocketAddr> = match args.metrics_addr.as_str() {
        "off" => None,
        a => Some(
            a.parse()
                .with_context(|| format!("--metrics-addr {a:?} is not host:port"))?,
        ),
    };
    let opts = local::Options {
        metrics: metrics.clone(),
        files: args.files,
        state_dir: args.state_dir,
        etcd_bin_dir: std::path::absolute(&args.etcd_bin_dir)?,
        stop_members_on_exit: args.stop_members_on_exit,
        resync_interval: args.resync_interval,
        policy: Policy {
            unhealthy_grace: args.unhealthy_grace,
            replace_grace: args.replace_grace,
            upgrade_health_deadline: args.upgrade_health_deadline,
        },
        backup_memory_budget_mib: args.backup_memory_budget_mib,
    };
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async move {
        if let Some(addr) = metrics_addr {
            // The main job matters more than its metrics: a busy port is a warning, not a stop.
            match etcd_operator::metrics::serve(metrics.clone(), addr).await {
                Ok((bound, _task)) => {
                    metrics.set_ready(true);
                    tracing::info!(addr = %bound, "serving /metrics, /healthz, /readyz");
                }
                Err(e) => tracing::warn!(error = %e, "metrics not served"),
            }
        }
        let shutdown = async {
            let _ = tokio::signal::ctrl_c().await;
            tracing::info!("Ctrl-C: shutting down");
        };
        local::run(opts, shutdown).await
    })
    .context("local runtime")?;
    Ok(())
}

/// `etcd-operator run`: the Kubernetes controller until SIGTERM or Ctrl-C.
fn kubernetes_run(args: RunArgs) -> anyhow::Result<()> {
    use etcd_operator::drivers::kubernetes::{self, leader::LeaseOptions};
    let identity = args
        .leader_election_identity
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| format!("etcd-operator-{}", std::process::id()));
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async move {
        let leader_election = if args.leader_elect {
            let namespace = match args.leader_election_namespace {
                Some(ns) => ns,
                None => kube::Client::try_default()
                    .await
                    .context("connecting to the Kubernetes API")?
                    .default_namespace()
                    .to_string(),
            };
            Some(LeaseOptions {
                name: args.leader_election_id,
                namespace,
            })
        } else {
            None
        };
        let opts = kubernetes::Options {
            namespace: args.namespace,
            metrics_addr: args.metrics_addr,
            leader_election,
            policy: Policy {
                unhealthy_grace: args.unhealthy_grace,
                replace_grace: args.replace_grace,
                upgrade_health_deadline: args.upgrade_health_deadline,
            },
            identity,
            operator_image: args.operator_image,
            self_pod: self_pod(),
            backup_memory_budget_mib: args.backup_memory_budget_mib,
            allow_ambient_credentials: args.allow_ambient_credentials,
            snapshot_tool_dir: args.snapshot_tool_dir,
        };
        kubernetes::run(opts, termination())
            .await
            .context("kubernetes controller")
    })
}

/// The Pod this process runs in, when the Downward API names it (`POD_NAMESPACE`,
/// `POD_NAME`, as the manifests and the chart set them).
fn self_pod() -> Option<etcd_operator::drivers::kubernetes::SelfPod> {
    let namespace = std::env::var("POD_NAMESPACE")
        .ok()
        .filter(|v| !v.is_empty())?;
    let name = std::env::var("POD_NAME").ok().filter(|v| !v.is_empty())?;
    Some(etcd_operator::drivers::kubernetes::SelfPod { namespace, name })
}

/// `etcd-operator restore-fetch`: stage the snapshot for a restored member.
fn restore_fetch(args: RestoreFetchArgs) -> anyhow::Result<()> {
    let connection = etcd_operator::api::s3::S3Connection {
        endpoint: args.endpoint,
        region: args.region,
        force_path_style: Some(args.force_path_style),
        credentials_secret: None,
    };
    let paths = MemberRestorePaths {
        data_dir: args.data_dir,
        snapshot: args.out,
        restored: args.restored,
    };
    let pin = args.etag.map(|etag| etcd_operator::backup::ObjectPin {
        etag,
        version_id: args.version_id,
    });
    let rt = tokio::runtime::Runtime::new()?;
    let fetched = rt.block_on(async {
        let s3 = etcd_operator::backup::client(&connection, None).await;
        member_restore::fetch_for_member(
            &s3,
            &args.bucket,
            &args.key,
            args.sha256.as_deref(),
            pin.as_ref(),
            args.etcd_version.as_ref(),
            &paths,
        )
        .await
    });
    let report = match &fetched {
        Ok(fetched) => StepReport::fetched(fetched),
        Err(e) => StepReport::failed(e),
    };
    // Best effort: the outcome is logged and in the exit code either way.
    let _ = std::fs::write(&args.termination_log, report.to_message());
    fetched.context("restore-fetch")?;
    Ok(())
}

/// `etcd-operator restore-finish`: put a restored member's data dir in place.
fn restore_finish(args: RestoreFinishArgs) -> anyhow::Result<()> {
    let paths = MemberRestorePaths {
        data_dir: args.data_dir,
        snapshot: args.snapshot,
        restored: args.restored,
    };
    let rt = tokio::runtime::Runtime::new()?;
    let finished = rt.block_on(member_restore::finish_member_restore(&paths));
    if let Err(e) = &finished {
        let _ = std::fs::write(&args.termination_log, StepReport::failed(e).to_message());
    }
    finished.context("restore-finish")?;
    Ok(())
}

/// SIGTERM (the kubelet stopping the pod) or Ctrl-C.
async fn termination() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                () = ctrl_c => {}
            }
        }
        Err(_) => ctrl_c.await,
    }
    tracing::info!("shutting down: finishing in-flight reconciles");
}

fn main() -> anyhow::Result<()> {
    etcd_operator::tls_provider::install();
    etcd_operator::failpoint::setup_from_env();
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match cli.command {
        Command::Crds { out_dir } if out_dir.is_empty() => {
            print!("{}", crd::all_yaml());
        }
        Command::Crds { out_dir } => {
            for dir in out_dir {
                std::fs::create_dir_all(&dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
                for c in crd::all() {
                    let path = dir.join(crd::file_name(&c));
                    std::fs::write(&path, crd::to_yaml(&c))
                        .with_context(|| format!("writing {}", path.display()))?;
                }
            }
        }
        Command::Local(args) => match args.action {
            Some(LocalAction::Status) => local_status(&args)?,
            None => local_run(args)?,
        },
        Command::Run(args) => kubernetes_run(args)?,
        Command::RestoreFetch(args) => restore_fetch(args)?,
        Command::RestoreFinish(args) => restore_finish(args)?,
    }
    Ok(())
}
