//! The command line: subcommands and their flags (clap types only; `main` dispatches).

use std::path::PathBuf;
use std::time::Duration;

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
        /// Write `<plural>.yaml` files into this directory instead of printing; repeatable.
        #[arg(long)]
        out_dir: Vec<PathBuf>,
    },
    /// Run the operator against local etcd processes described by YAML files.
    Local(LocalArgs),
    /// Run the operator in a Kubernetes cluster: members as Pods.
    Run(RunArgs),
    /// Init container of a restored member: stage the snapshot for etcd's restore tool.
    RestoreFetch(RestoreFetchArgs),
    /// Init container of a restored member: move the restored data dir into place.
    RestoreFinish(RestoreFinishArgs),
}

/// `etcd-operator run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Watch EtcdClusters in this namespace only (all namespaces when absent).
    #[arg(long, env = "WATCH_NAMESPACE")]
    pub namespace: Option<String>,
    /// Where `/metrics`, `/healthz` and `/readyz` are served.
    #[arg(long, default_value = "0.0.0.0:8080")]
    pub metrics_addr: std::net::SocketAddr,
    /// Run the controller only while holding the leader Lease.
    #[arg(long)]
    pub leader_elect: bool,
    /// The Lease's name.
    #[arg(long, default_value = "etcd-operator")]
    pub leader_election_id: String,
    /// The Lease's namespace; the operator's own (from the Downward API) by default.
    #[arg(long, env = "POD_NAMESPACE")]
    pub leader_election_namespace: Option<String>,
    /// This replica's identity in the Lease; the pod name by default.
    #[arg(long, env = "POD_NAME")]
    pub leader_election_identity: Option<String>,
    /// How long a present but unhealthy or stopped member is waited on before it is
    /// restarted in place (on its volume or data dir), or replaced when a restart would
    /// lose its data (emptyDir).
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub unhealthy_grace: Duration,
    /// How long, in all, a member whose data survives a restart may stay unhealthy before it
    /// is replaced (removed, its volume or data dir deleted, a new member added).
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    pub replace_grace: Duration,
    /// How long a just-upgraded member may stay unhealthy before the upgrade stops.
    #[arg(long, default_value = "120s", value_parser = humantime::parse_duration)]
    pub upgrade_health_deadline: Duration,
    /// This operator's image, run by the init containers that restore a snapshot into a new
    /// cluster's members, when the operator does not run in a Pod it can read. In a Pod
    /// (`POD_NAMESPACE` and `POD_NAME` set) the Pod's own `operator` container image is
    /// used, so `kubectl set image` keeps restores working.
    #[arg(long, env = "OPERATOR_IMAGE")]
    pub operator_image: Option<String>,
    /// Part data (partSizeMiB x parts in flight) all backups may hold in memory, in MiB; a
    /// backup whose partSizeMiB needs more is refused with a condition, never an OOM.
    #[arg(long, env = "BACKUP_MEMORY_BUDGET_MIB", default_value_t = etcd_operator_budget())]
    pub backup_memory_budget_mib: u64,
    /// Let EtcdBackups and EtcdRestores without `credentialsSecret` use the operator's own
    /// cloud identity (instance role, IRSA, environment). Off by default: whoever may create
    /// an EtcdBackup could otherwise write to, and through retention delete from, any bucket
    /// the operator reaches.
    #[arg(long, env = "ALLOW_AMBIENT_CREDENTIALS")]
    pub allow_ambient_credentials: bool,
    /// Where `etcdutl` is for EtcdBackups with `verify: true` (the operator image copies it
    /// from the official etcd image to /usr/local/bin). Without it verification checks the
    /// digest only and says so in the `Verified` condition.
    #[arg(long, env = "SNAPSHOT_TOOL_DIR", default_value = etcd_operator::backup::verify::DEFAULT_SNAPSHOT_TOOL_DIR)]
    pub snapshot_tool_dir: std::path::PathBuf,
}

/// `etcd-operator restore-fetch`. S3 credentials come from the environment
/// (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`) or the rest of the
/// default AWS chain, never from flags.
#[derive(Debug, clap::Args)]
pub struct RestoreFetchArgs {
    #[arg(long)]
    pub bucket: String,
    #[arg(long)]
    pub key: String,
    /// S3-compatible endpoint URL; AWS S3 when absent.
    #[arg(long)]
    pub endpoint: Option<String>,
    #[arg(long)]
    pub region: Option<String>,
    #[arg(long)]
    pub force_path_style: bool,
    /// Expected sha256 (hex); the object's own metadata when absent.
    #[arg(long)]
    pub sha256: Option<String>,
    /// The ETag the restore pinned: any other object at the key is refused.
    #[arg(long)]
    pub etag: Option<String>,
    /// The version id the restore pinned (versioned buckets); needs `--etag`.
    #[arg(long, requires = "etag")]
    pub version_id: Option<String>,
    /// The member's etcd version: a snapshot of a newer minor release is refused.
    #[arg(long)]
    pub etcd_version: Option<semver::Version>,
    /// Where the snapshot is staged for the restore tool.
    #[arg(long)]
    pub out: PathBuf,
    /// The restore tool's output dir; leftovers of an interrupted restore are removed.
    #[arg(long)]
    pub restored: PathBuf,
    /// etcd's data dir: when it exists the member is restored already.
    #[arg(long)]
    pub data_dir: PathBuf,
    /// Where the failure reason is written for the operator to read.
    #[arg(long, default_value = "/dev/termination-log")]
    pub termination_log: PathBuf,
}

/// `etcd-operator restore-finish`.
#[derive(Debug, clap::Args)]
pub struct RestoreFinishArgs {
    /// The staged snapshot, removed.
    #[arg(long)]
    pub snapshot: PathBuf,
    /// The restore tool's output dir, moved to `--data-dir` (or removed).
    #[arg(long)]
    pub restored: PathBuf,
    #[arg(long)]
    pub data_dir: PathBuf,
    /// Where the failure reason is written for the operator to read.
    #[arg(long, default_value = "/dev/termination-log")]
    pub termination_log: PathBuf,
}

/// [`etcd_operator::backup::DEFAULT_MEMORY_BUDGET_MIB`], for clap's defaults.
fn etcd_operator_budget() -> u64 {
    etcd_operator::backup::DEFAULT_MEMORY_BUDGET_MIB
}

/// `etcd-operator local`.
#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct LocalArgs {
    #[command(subcommand)]
    pub action: Option<LocalAction>,
    /// A YAML file (several documents allowed) or a directory of them; repeatable.
    #[arg(long = "file", short = 'f')]
    pub files: Vec<PathBuf>,
    /// Where members keep their data, logs and records, and where status files go.
    #[arg(
        long,
        default_value = ".etcd-operator",
        env = "ETCD_OPERATOR_STATE_DIR",
        global = true
    )]
    pub state_dir: PathBuf,
    /// Directory with `<version>/etcd` binaries.
    #[arg(long, default_value = ".deps/etcd", env = "ETCD_BIN_DIR")]
    pub etcd_bin_dir: PathBuf,
    /// Stop the member processes when the operator exits (they keep running by default).
    #[arg(long)]
    pub stop_members_on_exit: bool,
    /// Serve /metrics, /healthz and /readyz here ("off" to serve nothing).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub metrics_addr: String,
    /// How often members are health-checked when nothing else happens.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub resync_interval: Duration,
    /// How long a present but unhealthy or stopped member is waited on before it is
    /// restarted in place (on its volume or data dir), or replaced when a restart would
    /// lose its data (emptyDir).
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub unhealthy_grace: Duration,
    /// How long, in all, a member whose data survives a restart may stay unhealthy before it
    /// is replaced (removed, its volume or data dir deleted, a new member added).
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    pub replace_grace: Duration,
    /// How long a just-upgraded member may stay unhealthy before the upgrade stops.
    #[arg(long, default_value = "120s", value_parser = humantime::parse_duration)]
    pub upgrade_health_deadline: Duration,
    /// Part data (partSizeMiB x parts in flight) all backups may hold in memory, in MiB; a
    /// backup whose partSizeMiB needs more is refused with a condition, never an OOM.
    #[arg(long, env = "BACKUP_MEMORY_BUDGET_MIB", default_value_t = etcd_operator_budget())]
    pub backup_memory_budget_mib: u64,
}

/// `etcd-operator local <action>`.
#[derive(Debug, Subcommand)]
pub enum LocalAction {
    /// Print the clusters' status like `kubectl get etcd`, from the status files.
    Status,
}
