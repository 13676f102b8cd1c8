//! Where members run: the [`MemberRuntime`] trait, the values it speaks in, and its errors.
//!
//! A runtime starts, restarts, stops and deletes member processes and says which exist;
//! it never talks to etcd (membership is the admin layer's job) and never decides which
//! member to add, remove, restart or upgrade (that is the planner's). It only decides how a
//! step is carried out on its kind of member: a Pod restart, for one, patches the image of a
//! live Pod in place or recreates the Pod on its PVC. [`local`] runs members as processes on
//! this machine, [`pods`] as Pods of a Kubernetes cluster; [`flags`] is the etcd command
//! line both build.

use std::fmt;
use std::future::Future;
use std::io;
use std::ops::Range;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::api::cluster::EtcdOptions;

pub mod flags;
pub mod local;
pub mod pods;

pub use local::LocalRuntime;
pub use pods::PodRuntime;

/// The cluster a member belongs to: the `EtcdCluster`'s namespace and name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ClusterRef {
    pub namespace: String,
    pub name: String,
}

impl ClusterRef {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for ClusterRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// Where a member listens, fixed before it first starts and kept for its whole life.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberAddress {
    pub name: String,
    /// `--initial-advertise-peer-urls`, e.g. `http://127.0.0.1:20001`.
    pub peer_url: String,
    /// `--advertise-client-urls`, e.g. `http://127.0.0.1:20002`.
    pub client_url: String,
}

/// How a member's ports speak: plaintext, or TLS requiring client certificates. Chosen
/// when its address is reserved (it is the scheme of the member's URLs) and changed only by
/// [`MemberRuntime::set_transport`], when a running cluster moves to TLS.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Transport {
    Plain,
    /// Listens plaintext, but holds the cluster's peer certificate and trusts its CA, so it
    /// can dial members that already moved to TLS: every member of a plaintext cluster is
    /// restarted so before the first one moves.
    PlainDialingTls,
    Tls,
}

impl Transport {
    /// The URL scheme.
    pub fn scheme(self) -> &'static str {
        match self {
            Self::Plain | Self::PlainDialingTls => "http",
            Self::Tls => "https",
        }
    }

    /// It is given the cluster's certificate files (to listen with, or to dial with).
    pub fn has_certificates(self) -> bool {
        self != Self::Plain
    }

    /// What a member reserved at `url` and launched asking for `self` runs with: the URL's
    /// scheme decides between plaintext and TLS (a member keeps the address it was reserved
    /// with), `self` whether a plaintext one dials TLS peers.
    pub fn at_url(self, url: &str) -> Self {
        match (Self::of_url(url), self) {
            (Self::Tls, _) => Self::Tls,
            (_, Self::PlainDialingTls) => Self::PlainDialingTls,
            _ => Self::Plain,
        }
    }

    /// `url` (`http://` or `https://`) with this transport's scheme, the rest unchanged.
    pub fn with_scheme(self, url: &str) -> String {
        let rest = url
            .strip_prefix("https://")
            .or_else(|| url.strip_prefix("http://"))
            .unwrap_or(url);
        format!("{}://{rest}", self.scheme())
    }

    /// The transport a URL speaks.
    pub fn of_url(url: &str) -> Self {
        if url.starts_with("https://") {
            Self::Tls
        } else {
            Self::Plain
        }
    }
}

/// The certificate files (paths as the member sees them) a TLS member's flags name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    pub ca: String,
    pub server_cert: String,
    pub server_key: String,
    pub peer_cert: String,
    pub peer_key: String,
}

impl TlsFiles {
    /// The files named as the bundle's entries under `dir`.
    pub fn in_dir(dir: &str) -> Self {
        use crate::certs::bundle::{CA_CERT, PEER_CERT, PEER_KEY, SERVER_CERT, SERVER_KEY};
        let at = |entry: &str| format!("{}/{entry}", dir.trim_end_matches('/'));
        Self {
            ca: at(CA_CERT),
            server_cert: at(SERVER_CERT),
            server_key: at(SERVER_KEY),
            peer_cert: at(PEER_CERT),
            peer_key: at(PEER_KEY),
        }
    }
}

/// A cluster's certificates as its runtime keeps them, after
/// [`MemberRuntime::ensure_certificates`].
#[derive(Clone, Debug)]
pub struct ClusterCertificates {
    /// What the operator presents to (and trusts of) the cluster's members.
    pub operator: crate::etcd::TlsConfig,
    /// What this call issued, and why (empty when everything was current).
    pub issued: Vec<crate::certs::bundle::Issued>,
    /// Each certificate's expiry, by entry name (`ca.crt`, `server.crt`, ...).
    pub expiries: Vec<(String, jiff::Timestamp)>,
    /// Where applications find a client certificate: a Secret name or a directory.
    pub client_location: String,
    /// What a member started now runs with ([`crate::certs::ca_rotation::trust_stamp`]);
    /// members running with another one are restarted, one at a time.
    pub trust_stamp: Option<String>,
    /// The phase of a CA rotation under way, if one is.
    pub ca_phase: Option<crate::certs::ca_rotation::CaPhase>,
}

impl ClusterCertificates {
    /// The operator's identity, the expiries and the trust stamp of `entries`; `None`
    /// without a CA certificate and an operator certificate and key. `members_current`:
    /// every running member runs with `entries`' trust stamp (for the CA rotation phase).
    pub fn of(
        entries: &crate::certs::bundle::Entries,
        issued: Vec<crate::certs::bundle::Issued>,
        client_location: String,
        members_current: bool,
    ) -> Option<Self> {
        use crate::certs::bundle::{CA_CERT, OPERATOR_CERT, OPERATOR_KEY};
        use crate::certs::ca_rotation;
        Some(Self {
            operator: crate::etcd::TlsConfig::new(
                entries.get(CA_CERT)?.clone(),
                entries.get(OPERATOR_CERT)?.clone(),
                entries.get(OPERATOR_KEY)?.clone(),
            ),
            issued,
            expiries: crate::certs::bundle::expiries(entries),
            client_location,
            trust_stamp: ca_rotation::trust_stamp(entries),
            ca_phase: ca_rotation::phase(entries, members_current),
        })
    }
}

/// Where a cluster's certificates come from on one pass.
#[derive(Clone, Copy, Debug)]
pub enum CertificateSource<'a> {
    /// The operator's own CA: issue what is missing or due, and what `asked` asks (every
    /// leaf again, or a new CA in phases: see [`crate::certs::ca_rotation`]).
    Issue { asked: crate::certs::bundle::Asked },
    /// A set the user provided, already checked ([`crate::certs::provided::entries`]):
    /// installed where members read it. `may_change_ca`: installed as it is even when it
    /// brings another CA than members trust now (only before any member ran); otherwise
    /// such a set is moved to in three phases
    /// ([`crate::certs::ca_rotation::provided_install`]).
    Provided {
        entries: &'a crate::certs::bundle::Entries,
        may_change_ca: bool,
    },
    /// What is installed now, changing nothing (the provided set has problems).
    Installed,
}

impl CertificateSource<'_> {
    /// Whether installing this over `installed` (what members read now) depends on what
    /// members run with: only while a CA rotation waits for them (the operator's CA
    /// mid-rotation, or a provided set bringing another CA). Runtimes look at their
    /// members only then, never in a steady state.
    pub fn waits_for_members(&self, installed: &crate::certs::bundle::Entries) -> bool {
        use crate::certs::bundle::CA_CERT;
        match self {
            Self::Issue { .. } => crate::certs::ca_rotation::phase(installed, true).is_some(),
            Self::Provided {
                entries,
                may_change_ca: false,
            } => installed.get(CA_CERT).map(|c| c.trim()) != entries.get(CA_CERT).map(|c| c.trim()),
            Self::Provided { .. } | Self::Installed => false,
        }
    }
}

/// `--initial-cluster-state`: bootstrap a new cluster, or join one that exists.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InitialClusterState {
    New,
    Existing,
}

impl InitialClusterState {
    /// The flag value etcd expects.
    pub fn as_flag(self) -> &'static str {
        match self {
            Self::New => "new",
            Self::Existing => "existing",
        }
    }
}

/// Everything needed to start a member for the first time.
#[derive(Clone, Debug, PartialEq)]
pub struct MemberLaunch {
    pub name: String,
    pub version: semver::Version,
    /// `--initial-cluster` as (member name, peer URL); must include this member.
    pub initial_cluster: Vec<(String, String)>,
    pub state: InitialClusterState,
    pub cluster_token: String,
    pub options: Option<EtcdOptions>,
    /// What its ports speak; the scheme of the address it is reserved with.
    pub transport: Transport,
}

/// A member as the runtime sees it (nothing here comes from etcd).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuntimeMember {
    pub name: String,
    pub address: MemberAddress,
    /// Its process exists (a stopped-by-signal process still counts).
    pub running: bool,
    /// Its data dir holds a WAL, so a restart rejoins with its old identity.
    pub has_data: bool,
    /// The version it runs, or last ran.
    pub version: semver::Version,
    /// When the runtime last started (or restarted) it; `None` when it is not running.
    pub started_at: Option<jiff::Timestamp>,
    /// A restart keeps its data (a PVC or a local data dir; not an emptyDir).
    pub restart_keeps_data: bool,
    /// What it was started with ([`crate::certs::ca_rotation::trust_stamp`]): `None` for a
    /// plaintext member, or one started before stamps were recorded.
    pub trust_stamp: Option<String>,
}

/// A member process ended without the runtime stopping it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberExited {
    pub cluster: ClusterRef,
    pub name: String,
}

/// Starts, restarts, stops and deletes members of one cluster, and lists them.
///
/// Every method is idempotent, so a controller may repeat a step after a crash. Methods
/// on one member are serialized; methods on different members run concurrently.
///
/// # Assumptions
/// One runtime instance (the elected operator) writes a given state at a time.
pub trait MemberRuntime: Send + Sync {
    /// A stable address for a new member, the same for every call with this name; its URLs
    /// speak `transport` (a member reserved earlier keeps what it was reserved with).
    ///
    /// Local: allocates free 127.0.0.1 client and peer ports and persists them, so a
    /// restarted operator hands out the same ones. Kubernetes: DNS names.
    fn reserve(
        &self,
        cluster: &ClusterRef,
        name: &str,
        transport: Transport,
    ) -> impl Future<Output = Result<MemberAddress, Error>> + Send;

    /// Makes sure the cluster's CA and certificates exist where its members read them and
    /// returns them: with [`CertificateSource::Issue`], issuing what is missing, unusable,
    /// lacking a member name or due for renewal (see [`crate::certs::bundle::complete`]);
    /// with `Provided`, installing the user's set; with `Installed`, reading what is there.
    /// Idempotent; members that run pick changed files up on their next connection.
    ///
    /// # Errors
    /// [`Error::NoCertificates`] when nothing is installed to read.
    fn ensure_certificates(
        &self,
        cluster: &ClusterRef,
        source: CertificateSource<'_>,
    ) -> impl Future<Output = Result<ClusterCertificates, Error>> + Send;

    /// The names a provided server or peer certificate must carry: those members are
    /// dialled at (Kubernetes: `*.<cluster>.<namespace>.svc`; local: `127.0.0.1`) and, for
    /// peers, what a member's address resolves back to (Kubernetes:
    /// `*.<cluster>.<namespace>.svc.cluster.local`).
    fn provided_certificate_names(
        &self,
        cluster: &ClusterRef,
    ) -> crate::certs::provided::RequiredNames;

    /// Starts the member (reserving its address if needed) and persists its launch flags.
    ///
    /// A member whose process already runs is left alone. Returns once the process is
    /// started; whether etcd became healthy is for the caller to observe.
    fn create(
        &self,
        cluster: &ClusterRef,
        launch: &MemberLaunch,
    ) -> impl Future<Output = Result<(), Error>> + Send;

    /// Stops the member (SIGTERM, SIGKILL after a grace period) and starts it again on the
    /// same data dir with the same flags, on `version`'s binary when given.
    ///
    /// # Errors
    /// [`Error::MemberNotFound`] when it was never created; [`Error::BinaryMissing`]
    /// before anything is stopped when `version` is not installed.
    fn restart(
        &self,
        cluster: &ClusterRef,
        name: &str,
        version: Option<semver::Version>,
    ) -> impl Future<Output = Result<(), Error>> + Send;

    /// Moves the member to `transport` on the same ports and data: stops it (if it runs),
    /// then records its address with the transport's scheme and its launch with the
    /// transport's certificate flags. Does not start it: the caller tells etcd the new peer
    /// URL first (a stopped member cannot be dialled at the old one meanwhile), then calls
    /// [`Self::restart`]. Returns the member's new address. Idempotent.
    ///
    /// # Errors
    /// [`Error::MemberNotFound`] when it was never created; [`Error::RestartLosesData`]
    /// when stopping it would lose its data (an emptyDir Pod).
    fn set_transport(
        &self,
        cluster: &ClusterRef,
        name: &str,
        transport: Transport,
    ) -> impl Future<Output = Result<MemberAddress, Error>> + Send;

    /// Stops the member and removes its data and record. Only call it after etcd removed
    /// the member; deleting an unknown member succeeds.
    fn delete(
        &self,
        cluster: &ClusterRef,
        name: &str,
    ) -> impl Future<Output = Result<(), Error>> + Send;

    /// The cluster's created members, by name. Reserved but never created ones are not
    /// listed.
    fn list(
        &self,
        cluster: &ClusterRef,
    ) -> impl Future<Output = Result<Vec<RuntimeMember>, Error>> + Send;

    /// Stops every member process of the cluster and keeps their data.
    fn stop_all(&self, cluster: &ClusterRef) -> impl Future<Output = Result<(), Error>> + Send;

    /// Whether [`Self::set_aside`], [`Self::put_back`] and [`Self::force_new_cluster`] are
    /// implemented: recovery from lost quorum is only planned on runtimes that have them.
    fn supports_recovery(&self) -> bool {
        false
    }

    /// Recovery from lost quorum: stops the member and keeps its data aside, out of the
    /// cluster, never deleted (local: its directory moved under `<state>/kept/`; Kubernetes:
    /// its Pod deleted, its PVC retained and relabelled). Returns where the data is, `None`
    /// when the member has nothing left to keep. `tag` names the recovery (a UTC time).
    fn set_aside(
        &self,
        cluster: &ClusterRef,
        name: &str,
        tag: &str,
    ) -> impl Future<Output = Result<Option<String>, Error>> + Send {
        let _ = (cluster, name, tag);
        async { Err(Error::Unsupported { what: "set_aside" }) }
    }

    /// Undoes [`Self::set_aside`] for a recovery rolled back: the data at `at` is the
    /// member's again (stopped; a later pass starts it).
    fn put_back(
        &self,
        cluster: &ClusterRef,
        name: &str,
        at: &str,
    ) -> impl Future<Output = Result<(), Error>> + Send {
        let _ = (cluster, name, at);
        async { Err(Error::Unsupported { what: "put_back" }) }
    }

    /// Recovery from lost quorum: stops the member and starts it once with
    /// `--force-new-cluster` on its data, without recording the flag (a later restart runs
    /// the recorded flags; the caller restarts it once it serves alone).
    fn force_new_cluster(
        &self,
        cluster: &ClusterRef,
        name: &str,
    ) -> impl Future<Output = Result<(), Error>> + Send {
        let _ = (cluster, name);
        async {
            Err(Error::Unsupported {
                what: "force_new_cluster",
            })
        }
    }
}

/// What a runtime failed to do.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("this runtime cannot {what} yet")]
    Unsupported { what: &'static str },
    #[error("{path} is not where this runtime keeps members' data aside")]
    NotKept { path: String },
    #[error("member {name} exists; its kept data at {at} is not moved over it")]
    MemberExists { name: String, at: String },
    #[error("move {from} to {to}")]
    Move {
        from: PathBuf,
        to: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{what} name {name:?} cannot name a member directory")]
    InvalidName { what: &'static str, name: String },
    #[error("state dir {} is not valid UTF-8", path.display())]
    NonUtf8StateDir { path: PathBuf },
    #[error("no etcd {version} binary at {}", path.display())]
    BinaryMissing {
        version: semver::Version,
        path: PathBuf,
    },
    #[error("no two free ports left in {}..{} on 127.0.0.1", range.start, range.end)]
    PortsExhausted { range: Range<u16> },
    #[error("member {name} of cluster {cluster} was never created")]
    MemberNotFound { cluster: ClusterRef, name: String },
    #[error("restore member {name}'s data dir from the snapshot {}", snapshot.display())]
    RestoreFromSeed {
        name: String,
        snapshot: PathBuf,
        #[source]
        source: Box<crate::backup::Error>,
    },
    #[error("member {name} speaks TLS but no certificate files were given for it")]
    MissingTlsFiles { name: String },
    #[error("issue the certificates of cluster {cluster}")]
    Certificates {
        cluster: ClusterRef,
        #[source]
        source: crate::certs::Error,
    },
    #[error("cluster {cluster} has no certificates installed")]
    NoCertificates { cluster: ClusterRef },
    #[error("read or write certificate file {}", path.display())]
    CertificateFile {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("extraArgs may not set --{flag}, the runtime sets it")]
    ReservedFlag { flag: String },
    #[error("create directory {}", path.display())]
    CreateDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("read member record {}", path.display())]
    ReadRecord {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("parse member record {}", path.display())]
    ParseRecord {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("write member record {}", path.display())]
    WriteRecord {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("list members in {}", path.display())]
    ListMembers {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("open member log {}", path.display())]
    OpenLog {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("spawn {}", binary.display())]
    SpawnMember {
        binary: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("signal member process {pid}")]
    KillMember {
        pid: u32,
        #[source]
        source: nix::errno::Errno,
    },
    #[error("member process {pid} still runs after SIGKILL")]
    StopMember { pid: u32 },
    #[error("remove member directory {}", path.display())]
    RemoveMember {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("EtcdCluster has no metadata.{field}")]
    MissingClusterField { field: &'static str },
    #[error("the runtime of cluster {runtime} cannot act on cluster {asked}")]
    OtherCluster {
        runtime: ClusterRef,
        asked: ClusterRef,
    },
    #[error("{kind} {name} has no launch annotation")]
    MissingLaunch { kind: &'static str, name: String },
    #[error("parse the launch annotation of {kind} {name}")]
    ParseLaunch {
        kind: &'static str,
        name: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("encode the launch of member {name}")]
    EncodeLaunch {
        name: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("{kind} {name} has no valid {label} label")]
    InvalidLabel {
        kind: &'static str,
        name: String,
        label: &'static str,
    },
    #[error("parse the restore source annotation of cluster {cluster}")]
    ParseRestoreSource {
        cluster: String,
        #[source]
        source: serde_json::Error,
    },
    #[error(
        "cluster {cluster} is restored from a snapshot, but the operator image is unknown (its own pod could not be read: set OPERATOR_IMAGE)"
    )]
    MissingOperatorImage { cluster: ClusterRef },
    #[error(
        "pvcs {claims:?} hold the data of an earlier cluster named {cluster}; delete them (or this cluster) to go on"
    )]
    RetainedClaims {
        cluster: ClusterRef,
        claims: Vec<String>,
    },
    #[error(
        "pod {name} belongs to another cluster of the name (controller uid {owner}); it is not adopted: wait for it to be garbage-collected, or delete it"
    )]
    ForeignPod { name: String, owner: String },
    #[error(
        "pvcs {claims:?} of cluster {cluster} have no StorageClass and stay pending: the Kubernetes cluster has no default StorageClass"
    )]
    NoStorageClass {
        cluster: ClusterRef,
        claims: Vec<String>,
    },
    #[error("{kind} {name} is still being deleted {waited:?} later")]
    StillTerminating {
        kind: &'static str,
        name: String,
        waited: Duration,
    },
    #[error("wait for {kind} {name} to be deleted")]
    AwaitDeleted {
        kind: &'static str,
        name: String,
        #[source]
        source: kube::runtime::wait::Error,
    },
    #[error("restarting member {name} would lose its data: it has no PVC")]
    RestartLosesData { name: String },
    #[error("get secret {name}")]
    GetSecret {
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("apply secret {name}")]
    ApplySecret {
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("apply service {name}")]
    ApplyService {
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("apply pod disruption budget {name}")]
    ApplyPodDisruptionBudget {
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("create pvc {name}")]
    CreatePvc {
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("get pvc {name}")]
    GetPvc {
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("patch pvc {name}")]
    PatchPvc {
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("delete pvc {name}")]
    DeletePvc {
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("list pvcs of cluster {cluster}")]
    ListPvcs {
        cluster: ClusterRef,
        #[source]
        source: kube::Error,
    },
    #[error("create pod {name}")]
    CreatePod {
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("get pod {name}")]
    GetPod {
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("patch pod {name}")]
    PatchPod {
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("delete pod {name}")]
    DeletePod {
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("list pods of cluster {cluster}")]
    ListPods {
        cluster: ClusterRef,
        #[source]
        source: kube::Error,
    },
}
