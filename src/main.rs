//! The `etcd-operator` binary: parse the command line, set up logging, dispatch.

use anyhow::Context;
use clap::Parser;

mod cli;

use cli::{Cli, Command, LocalAction, LocalArgs, LogFormat};
use etcd_operator::api::{EtcdCluster, crd};
use etcd_operator::local::driver;
use etcd_operator::local::status_files::{self, StatusFiles};
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
    let clusters: Vec<EtcdCluster> = files.read_all()?;
    if clusters.is_empty() {
        println!("No EtcdClusters in {}", args.state_dir.display());
    } else {
        print!(
            "{}",
            status_files::cluster_table(&clusters, k8s_openapi::jiff::Timestamp::now())
        );
    }
    Ok(())
}

/// `etcd-operator local --file F`: the reconcile loop until Ctrl-C.
fn local_run(args: LocalArgs) -> anyhow::Result<()> {
    if args.files.is_empty() {
        anyhow::bail!("give at least one --file (a YAML file or a directory of them)");
    }
    let opts = driver::Options {
        files: args.files,
        state_dir: args.state_dir,
        etcd_bin_dir: std::path::absolute(&args.etcd_bin_dir)?,
        stop_members_on_exit: args.stop_members_on_exit,
        resync_interval: args.resync_interval,
        policy: Policy {
            unhealthy_grace: args.unhealthy_grace,
            upgrade_health_deadline: args.upgrade_health_deadline,
        },
    };
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async move {
        let shutdown = async {
            let _ = tokio::signal::ctrl_c().await;
            tracing::info!("Ctrl-C: shutting down");
        };
        driver::run(opts, shutdown).await
    })
    .context("local runtime")?;
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match cli.command {
        Command::Crds { out_dir: None } => {
            print!("{}", crd::all_yaml());
        }
        Command::Crds { out_dir: Some(dir) } => {
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            for c in crd::all() {
                let path = dir.join(crd::file_name(&c));
                std::fs::write(&path, crd::to_yaml(&c))
                    .with_context(|| format!("writing {}", path.display()))?;
            }
        }
        Command::Local(args) => match args.action {
            Some(LocalAction::Status) => local_status(&args)?,
            None => local_run(args)?,
        },
    }
    Ok(())
}
