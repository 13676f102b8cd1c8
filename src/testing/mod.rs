//! Test support: real etcd members on 127.0.0.1 in temp dirs, always torn down.
//!
//! Public so integration tests (`tests/*.rs`) and benchmarks can use it; nothing in the
//! operator itself depends on it.
//!
//! - [`etcd_bin`]: find installed etcd releases (`ETCD_BIN_DIR`).
//! - [`cluster`]: start, kill, stop and restart member processes; joiners for learner tests.
//! - [`ports`]: free loopback ports.
//! - [`wait`]: wait on a condition with a deadline (tests never sleep a fixed time).
//! - [`certs`]: throwaway TLS certificates.
//! - [`hostile`]: the bad-input tables (issue 13, part 4).
//! - [`garage`]: a single-node Garage, the S3-compatible server backup tests write to.
//! - [`writer`]: a writer and a quorum sampler that follow certificate rotations.

#[cfg(test)]
pub(crate) mod api_server;
pub mod certs;
pub mod cluster;
pub mod converged;
pub mod etcd_bin;
pub mod garage;
pub mod hostile;
pub mod ports;
pub mod tls;
pub mod wait;
pub mod writer;

use std::path::PathBuf;
use std::process::ExitStatus;

pub use cluster::{MemberAddr, TestCluster, TestClusterBuilder, initial_cluster_for};
pub use etcd_bin::{
    EtcdBin, SnapshotStatus, available_versions, bin_for_minor, bin_for_version, etcd_bin_dir,
};
pub use ports::free_port;
pub use wait::{WaitTimeout, wait_for};

/// What can go wrong setting up or driving test members.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no etcd {wanted} under {dir} (set ETCD_BIN_DIR or run scripts/install-test-deps)")]
    EtcdNotInstalled { wanted: String, dir: PathBuf },

    #[error("could not find a free port")]
    NoFreePort(#[source] std::io::Error),

    #[error("could not prepare {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("could not make a test certificate")]
    Certificate(#[source] rcgen::Error),

    #[error("could not start {name}")]
    Spawn {
        name: String,
        #[source]
        source: std::io::Error,
    },

    #[error("etcd member {name} exited ({status}); last log lines:\n{log_tail}")]
    Exited {
        name: String,
        status: String,
        log_tail: String,
    },

    #[error("could not signal etcd member {name}")]
    Signal {
        name: String,
        #[source]
        source: std::io::Error,
    },

    #[error("etcd member {name} is still running")]
    StillRunning { name: String },

    #[error("no member {index} in this test cluster")]
    NoSuchMember { index: usize },

    #[error("{tool} failed ({status}): {stderr}")]
    Tool {
        tool: PathBuf,
        status: ExitStatus,
        stderr: String,
    },

    #[error("could not parse the output of {tool}")]
    ToolOutput {
        tool: PathBuf,
        #[source]
        source: serde_json::Error,
    },

    #[error("could not build an etcd client")]
    Client(#[source] crate::etcd::ClientError),

    #[error("put {key} failed or timed out")]
    Put {
        key: String,
        #[source]
        source: Option<crate::etcd::ClientError>,
    },

    #[error(transparent)]
    Wait(#[from] WaitTimeout),

    #[error("etcd admin call failed")]
    Admin(#[from] crate::etcd::Error),
}

impl Error {
    /// Whether a member died because another process took its port first.
    pub(crate) fn is_port_clash(&self) -> bool {
        matches!(self, Error::Exited { log_tail, .. } if log_tail.contains("address already in use"))
    }
}
pub mod ca_rotation_run;
pub mod operator;
pub mod process;
pub mod tls_move_run;
