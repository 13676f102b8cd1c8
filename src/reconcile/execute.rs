//! Carries out one planner [`Step`] through the etcd admin layer and a member runtime, in
//! the order etcd needs. On the way in the runtime reserves the new member's address first
//! (so etcd is told the peer URL the member will really have), then etcd adds it as a
//! learner, then the runtime starts it; on the way out etcd removes the member first, then
//! the runtime deletes it.
//! A named crash point ([`crate::failpoint`]) follows every etcd and every runtime change, so
//! the crash tests can kill the operator between one change and the next.
//! Transient refusals etcd is known to give (unhealthy cluster right after bootstrap,
//! learner not yet in sync) come back as [`Executed::NotYet`], not as errors.

use std::time::Duration;

use tracing::info;

use crate::api::tls::{TlsMode, TlsSpec};
use crate::api::{EtcdCluster, EtcdClusterSpec};
use crate::etcd::{self, EtcdAdmin, Member, MemberId, Timeouts, TlsConfig};
use crate::failpoint::{self, crash_point};
use crate::plan::{Observed, Step};
use crate::runtime::{ClusterRef, InitialClusterState, MemberLaunch, MemberRuntime, Transport};

use super::Error;

/// What executing a step came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Executed {
    /// The step was carried out.
    Applied,
    /// Nothing to do for this step (wait, done, blocked, paused).
    Nothing,
    /// etcd refused for now in a known, transient way; try again on a later pass.
    NotYet(String),
}

/// Timeouts for membership calls, which wait on a raft round trip.
const CHANGE_TIMEOUT: Duration = Duration::from_secs(10);

fn admin_timeouts() -> Timeouts {
    Timeouts {
        request: CHANGE_TIMEOUT,
        ..Timeouts::default()
    }
}

/// Which cluster of its name `cluster` is: its uid (on Kubernetes; locally a restored
/// cluster's restore token), else its creation time in seconds (local status files).
pub fn incarnation(cluster: &EtcdCluster) -> Option<String> {
    let meta = &cluster.metadata;
    meta.uid.clone().or_else(|| {
        meta.creation_timestamp
            .as_ref()
            .map(|t| t.0.as_second().to_string())
    })
}

/// The token a cluster bootstraps with: the same on every pass (a bootstrap repeated after
/// a partial failure must hand every member the same token), and different for a later
/// cluster of the same name (uid on Kubernetes, creation time locally), so a member of an
/// older incarnation can never join.
pub fn bootstrap_token(cluster: &EtcdCluster) -> String {
    let meta = &cluster.metadata;
    let incarnation = incarnation(cluster).unwrap_or_default();
    format!(
        "{}-{}-{incarnation}",
        meta.namespace
            .as_deref()
            .unwrap_or(crate::drivers::local::manifest::DEFAULT_NAMESPACE),
        meta.name.as_deref().unwrap_or_default()
    )
}

/// A fresh, unique token, for a cluster made from a snapshot (each restore gets its own).
pub fn cluster_token(cluster: &ClusterRef) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{}-{}-{:x}", cluster.namespace, cluster.name, nanos)
}

/// The version a joining member starts at: the lowest the cluster runs (an upgrade moves it
/// later, as the planner does for AddLearner), else the spec's.
fn join_version(spec: &EtcdClusterSpec, observed: &Observed) -> Result<semver::Version, Error> {
    if let Some(v) = observed.min_version() {
        return Ok(v.clone());
    }
    version_of(spec)
}

fn version_of(spec: &EtcdClusterSpec) -> Result<semver::Version, Error> {
    crate::api::validate::parse_version(&spec.version).map_err(|source| Error::InvalidVersion {
        version: spec.version.clone(),
        source,
    })
}

/// Client URLs of the members that are running, for an admin connection.
fn endpoints(observed: &Observed) -> Vec<String> {
    observed
        .members
        .iter()
        .filter_map(|m| m.runtime.as_ref())
        .filter(|r| r.running)
        .map(|r| r.client_url.clone())
        .collect()
}

async fn admin(observed: &Observed, tls: Option<&TlsConfig>) -> Result<EtcdAdmin, Error> {
    let endpoints = endpoints(observed);
    let tls = TlsConfig::for_endpoints(&endpoints, tls);
    EtcdAdmin::connect_with(endpoints, tls, admin_timeouts())
        .await
        .map_err(|source| Error::Connect { source })
}

/// The `--initial-cluster` of a joining member: every member etcd lists, by name and peer
/// URL, with the joiner (whose name etcd does not know yet) under `joiner`.
fn initial_cluster(members: &[Member], joiner_id: MemberId, joiner: &str) -> Vec<(String, String)> {
    members
        .iter()
        .filter_map(|m| {
            let name = if m.id == joiner_id {
                joiner.to_string()
            } else {
                m.name.clone()
            };
            m.peer_urls.first().map(|u| (name, u.clone()))
        })
        .filter(|(n, _)| !n.is_empty())
        .collect()
}

fn is_not_yet(e: &etcd::Error) -> bool {
    matches!(
        e,
        etcd::Error::Unhealthy { .. }
            | etcd::Error::LearnerNotReady { .. }
            | etcd::Error::TooManyLearners
    )
}

/// What the cluster's ports speak, which every new member must speak too: that of most
/// members the runtime has (all alike, but for a cluster moving to TLS), else what the spec
/// asks for.
pub fn transport(spec: &EtcdClusterSpec, observed: &Observed) -> Transport {
    let (tls, plain) = observed
        .members
        .iter()
        .filter_map(|m| m.runtime.as_ref())
        .fold((0, 0), |(tls, plain), r| {
            match Transport::of_url(&r.client_url) {
                Transport::Tls => (tls + 1, plain),
                Transport::Plain | Transport::PlainDialingTls => (tls, plain + 1),
            }
        });
    match (tls, plain) {
        (0, 0) => match TlsSpec::mode_of(spec.tls.as_ref()) {
            TlsMode::Enabled => Transport::Tls,
            TlsMode::Disabled => Transport::Plain,
        },
        (tls, plain) if tls >= plain => Transport::Tls,
        _ => Transport::Plain,
    }
}

/// Reserves every member of a new cluster, then starts them all with
/// `--initial-cluster-state new`, `token` and every one of them in `--initial-cluster`.
/// Idempotent: a member already running is left alone.
pub(super) async fn bootstrap<R: MemberRuntime>(
    runtime: &R,
    cluster: &ClusterRef,
    token: &str,
    spec: &EtcdClusterSpec,
    members: &[crate::plan::MemberName],
    version: &semver::Version,
    transport: Transport,
) -> Result<(), Error> {
    let mut initial = Vec::new();
    for name in members {
        let addr = runtime
            .reserve(cluster, name.as_str(), transport)
            .await
            .map_err(|source| Error::Bootstrap { source })?;
        initial.push((addr.name.clone(), addr.peer_url.clone()));
    }
    crash_point(failpoint::BOOTSTRAP_AFTER_RESERVE);
    for (i, name) in members.iter().enumerate() {
        let launch = MemberLaunch {
            name: name.to_string(),
            version: version.clone(),
            initial_cluster: initial.clone(),
            state: InitialClusterState::New,
            cluster_token: token.to_string(),
            options: spec.etcd.clone(),
            transport,
        };
        runtime
            .create(cluster, &launch)
            .await
            .map_err(|source| Error::Bootstrap { source })?;
        if i == 0 && members.len() > 1 {
            crash_point(failpoint::BOOTSTRAP_AFTER_FIRST_START);
        }
    }
    crash_point(failpoint::BOOTSTRAP_AFTER_START);
    Ok(())
}

/// Executes `step` for `cluster`, dialling TLS members with `tls`.
pub async fn execute<R: MemberRuntime>(
    runtime: &R,
    cluster: &ClusterRef,
    token: &str,
    spec: &EtcdClusterSpec,
    observed: &Observed,
    step: &Step,
    tls: Option<&TlsConfig>,
) -> Result<Executed, Error> {
    // While a cluster moves between plaintext and TLS, a new plaintext member dials TLS
    // peers too.
    let moving = TlsSpec::mode_of(spec.tls.as_ref()) == TlsMode::Enabled
        || observed
            .members
            .iter()
            .filter_map(|m| m.runtime.as_ref())
            .any(|r| Transport::of_url(&r.peer_url) == Transport::Tls);
    let transport = match transport(spec, observed) {
        Transport::Plain if tls.is_some() && moving => Transport::PlainDialingTls,
        t => t,
    };
    match step {
        Step::Bootstrap { members, version } => {
            bootstrap(runtime, cluster, token, spec, members, version, transport).await?;
            Ok(Executed::Applied)
        }
        Step::AddLearner { name, version } => {
            let addr = runtime
                .reserve(cluster, name.as_str(), transport)
                .await
                .map_err(|source| Error::AddLearner {
                    source: source.into(),
                })?;
            crash_point(failpoint::ADD_LEARNER_AFTER_RESERVE);
            let admin = admin(observed, tls).await?;
            let (added, members) = match admin.member_add([addr.peer_url.clone()], true).await {
                Ok(r) => r,
                Err(e) if is_not_yet(&e) => return Ok(Executed::NotYet(e.to_string())),
                Err(e) => return Err(Error::AddLearner { source: e.into() }),
            };
            info!(member = %name, id = %added.id, "learner added to etcd");
            crash_point(failpoint::ADD_LEARNER_AFTER_ETCD_ADD);
            let launch = MemberLaunch {
                name: name.to_string(),
                initial_cluster: initial_cluster(&members, added.id, name.as_str()),
                version: version.clone(),
                state: InitialClusterState::Existing,
                cluster_token: String::new(),
                options: spec.etcd.clone(),
                transport,
            };
            runtime
                .create(cluster, &launch)
                .await
                .map_err(|source| Error::AddLearner {
                    source: source.into(),
                })?;
            crash_point(failpoint::ADD_LEARNER_AFTER_START);
            Ok(Executed::Applied)
        }
        Step::StartMember { name, id } => {
            let version = join_version(spec, observed)?;
            let admin = admin(observed, tls).await?;
            let info = admin
                .member_list()
                .await
                .map_err(|source| Error::StartMember {
                    source: source.into(),
                })?;
            let launch = MemberLaunch {
                name: name.to_string(),
                version,
                initial_cluster: initial_cluster(&info.members, *id, name.as_str()),
                state: InitialClusterState::Existing,
                cluster_token: String::new(),
                options: spec.etcd.clone(),
                transport,
            };
            runtime
                .create(cluster, &launch)
                .await
                .map_err(|source| Error::StartMember {
                    source: source.into(),
                })?;
            crash_point(failpoint::START_MEMBER_AFTER_START);
            Ok(Executed::Applied)
        }
        Step::PromoteLearner { id, .. } => {
            let admin = admin(observed, tls).await?;
            match admin.member_promote(*id).await {
                Ok(_) => {
                    crash_point(failpoint::PROMOTE_AFTER_ETCD_PROMOTE);
                    Ok(Executed::Applied)
                }
                Err(e) if is_not_yet(&e) => Ok(Executed::NotYet(e.to_string())),
                Err(source) => Err(Error::PromoteLearner { source }),
            }
        }
        Step::RemoveMember { name, id, .. } => {
            let admin = admin(observed, tls).await?;
            match admin.member_remove(*id).await {
                Ok(_) | Err(etcd::Error::MemberNotFound { .. }) => {}
                Err(e) if is_not_yet(&e) => return Ok(Executed::NotYet(e.to_string())),
                Err(e) => return Err(Error::RemoveMember { source: e.into() }),
            }
            info!(member = %name, id = %id, "member removed from etcd");
            crash_point(failpoint::REMOVE_AFTER_ETCD_REMOVE);
            runtime
                .delete(cluster, name.as_str())
                .await
                .map_err(|source| Error::RemoveMember {
                    source: source.into(),
                })?;
            crash_point(failpoint::REMOVE_AFTER_DELETE);
            Ok(Executed::Applied)
        }
        Step::DeleteRuntimeMember { name } => {
            runtime
                .delete(cluster, name.as_str())
                .await
                .map_err(|source| Error::DeleteRuntimeMember { source })?;
            crash_point(failpoint::DELETE_RUNTIME_MEMBER_AFTER_DELETE);
            Ok(Executed::Applied)
        }
        Step::RestartMember { name } => {
            runtime
                .restart(cluster, name.as_str(), None)
                .await
                .map_err(|source| Error::RestartMember { source })?;
            crash_point(failpoint::RESTART_AFTER_RESTART);
            Ok(Executed::Applied)
        }
        Step::MoveLeader { to_id: to, .. } => {
            let admin = admin(observed, tls).await?;
            match admin.move_leader(*to).await {
                Ok(()) => {
                    crash_point(failpoint::MOVE_LEADER_AFTER_ETCD_MOVE);
                    Ok(Executed::Applied)
                }
                Err(e @ (etcd::Error::NotLeader { .. } | etcd::Error::NoLeader { .. })) => {
                    Ok(Executed::NotYet(e.to_string()))
                }
                Err(source) => Err(Error::MoveLeader { source }),
            }
        }
        Step::UpgradeMember { name, to, .. } | Step::RollBackMember { name, to } => {
            runtime
                .restart(cluster, name.as_str(), Some(to.clone()))
                .await
                .map_err(|source| Error::UpgradeMember { source })?;
            crash_point(failpoint::UPGRADE_AFTER_RESTART);
            Ok(Executed::Applied)
        }
        Step::ReloadTrust { name, .. } => {
            runtime
                .restart(cluster, name.as_str(), None)
                .await
                .map_err(|source| Error::ReloadTrust { source })?;
            Ok(Executed::Applied)
        }
        Step::MoveTransport { name, id, stage } => {
            move_transport(runtime, cluster, observed, tls, name, *id, *stage).await
        }
        Step::UpdatePeerUrl { name, id, peer_url } => {
            let admin = admin(observed, tls).await?;
            match admin.member_update(*id, [peer_url.clone()]).await {
                Ok(_) => {
                    info!(member = %name, id = %id, %peer_url, "etcd dials the member at its recorded address again");
                    Ok(Executed::Applied)
                }
                Err(e) if is_not_yet(&e) => Ok(Executed::NotYet(e.to_string())),
                Err(source) => Err(Error::MoveTransport {
                    source: source.into(),
                }),
            }
        }
        Step::Maintain { action, .. } => {
            super::maintain::execute(observed, endpoints(observed), tls, action)
                .await
                .map_err(|source| Error::Maintain { source })
        }
        // Carried out by `recover::execute`, which the reconcile pass calls instead.
        Step::Recover { .. }
        | Step::Wait { .. }
        | Step::Blocked { .. }
        | Step::Paused
        | Step::Done => Ok(Executed::Nothing),
    }
}

/// One member one stage of a move between plaintext and TLS
/// ([`crate::plan::TransportStage`]): restarted holding the peer certificate or without
/// certificates; or stopped, recorded at its new scheme's address, dialled there by etcd,
/// and started with the new listeners. The order makes every crash finish forward: a
/// stopped member is started again with what the runtime recorded, and etcd is told that
/// address (`Step::UpdatePeerUrl`) if the crash came before it was.
async fn move_transport<R: MemberRuntime>(
    runtime: &R,
    cluster: &ClusterRef,
    observed: &Observed,
    tls: Option<&TlsConfig>,
    name: &crate::plan::MemberName,
    id: etcd::MemberId,
    stage: crate::plan::TransportStage,
) -> Result<Executed, Error> {
    use crate::plan::TransportStage;
    let failed = |source: Box<dyn std::error::Error + Send + Sync>| Error::MoveTransport { source };
    let (to, listeners_move) = match stage {
        TransportStage::DialTls => (Transport::PlainDialingTls, false),
        TransportStage::DropCertificates => (Transport::Plain, false),
        TransportStage::ListenTls => (Transport::Tls, true),
        TransportStage::ListenPlain => (Transport::PlainDialingTls, true),
    };
    // The others answer the update: the member is stopped by then. A member alone has
    // no peer to dial it: it is moved and restarted first, and tells etcd its new peer URL
    // itself on the next pass (`Step::UpdatePeerUrl`).
    let others: Vec<String> = observed
        .members
        .iter()
        .filter(|m| m.id() != Some(id))
        .filter_map(|m| m.runtime.as_ref())
        .map(|r| r.client_url.clone())
        .collect();
    if listeners_move && !others.is_empty() {
        let admin = EtcdAdmin::connect_with(
            others.clone(),
            TlsConfig::for_endpoints(&others, tls),
            admin_timeouts(),
        )
        .await
        .map_err(|e| failed(e.into()))?;
        let address = runtime
            .set_transport(cluster, name.as_str(), to)
            .await
            .map_err(|e| failed(e.into()))?;
        crash_point(failpoint::MOVE_TRANSPORT_AFTER_RECORD);
        admin
            .member_update(id, [address.peer_url.clone()])
            .await
            .map_err(|e| failed(e.into()))?;
        info!(member = %name, %id, peer_url = %address.peer_url, "etcd dials the member at its new address");
    } else {
        runtime
            .set_transport(cluster, name.as_str(), to)
            .await
            .map_err(|e| failed(e.into()))?;
    }
    runtime
        .restart(cluster, name.as_str(), None)
        .await
        .map_err(|e| failed(e.into()))?;
    info!(member = %name, %id, ?stage, "member restarted for its move between plaintext and TLS");
    Ok(Executed::Applied)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn cluster(uid: Option<&str>, created: i64) -> EtcdCluster {
        let mut c = EtcdCluster::new("example", EtcdClusterSpec::new(3, "3.5.16"));
        c.metadata.namespace = Some("prod".into());
        c.metadata.uid = uid.map(String::from);
        c.metadata.creation_timestamp = Some(Time(
            k8s_openapi::jiff::Timestamp::from_second(created).unwrap(),
        ));
        c
    }

    #[test]
    fn bootstrap_token_is_stable_per_cluster_and_new_per_incarnation() {
        let a = bootstrap_token(&cluster(Some("uid-1"), 10));
        assert_eq!(
            a,
            bootstrap_token(&cluster(Some("uid-1"), 10)),
            "same on every pass"
        );
        assert_eq!(a, "prod-example-uid-1");
        assert_ne!(a, bootstrap_token(&cluster(Some("uid-2"), 10)));
        // Locally there is no uid: the creation time tells incarnations apart.
        assert_ne!(
            bootstrap_token(&cluster(None, 10)),
            bootstrap_token(&cluster(None, 11))
        );
    }
}
