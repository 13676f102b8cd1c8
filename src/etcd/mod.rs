//! A typed admin layer over etcd-client: membership, status, health, snapshot, maintenance.
//!
//! Callers see only this module's types and [`Error`]; which call to make, and when to retry,
//! stays with them (see [`Error::is_retryable`]).

mod admin;
mod error;
mod tls;
mod types;

pub use admin::{EtcdAdmin, SnapshotStream, Timeouts};
pub use error::{ClientError, Error, Op};
pub use tls::TlsConfig;
pub use types::{Alarm, AlarmKind, ClusterId, ClusterInfo, EndpointStatus, Member, MemberId};
