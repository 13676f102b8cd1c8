//! The command line: subcommands and their flags (clap types only; `main` dispatches).

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

/// A Kubernetes operator for etcd, with an embedded local runtime.
#[derive(Debug, Parser)]
#[command(name = "etcd-operator", version, about)]
pub struct Cli {
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true, env = "LOG_FORMAT")]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the CustomResourceDefinitions as YAML (or write one file per CRD).
    Crds {
        /// Write `<plural>.yaml` files into this directory instead of printing.
        #[arg(long)]
        out_dir: Option<PathBuf>,
    },
}
