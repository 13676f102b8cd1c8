//! The `etcd-operator` binary: parse the command line, set up logging, dispatch.

use anyhow::Context;
use clap::Parser;

mod cli;

use cli::{Cli, Command, LogFormat};
use etcd_operator::api::crd;

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
    }
    Ok(())
}
