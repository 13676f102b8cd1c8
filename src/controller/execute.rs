//! Carries out one planner [`Step`] through the etcd admin layer and a member runtime, in
//! the order etcd needs (etcd membership first on the way in and out, runtime second).
//! Transient refusals etcd is known to give (unhealthy cluster right after bootstrap,
//! learner not yet in sync) come back as [`Executed::NotYet`], not as errors.

use std::time::Duration;

use tracing::info;

use crate::api::EtcdClusterSpec;
use crate::etcd::{self, EtcdAdmin, Member, MemberId, Timeouts};
use crate::plan::{Observed, Step};
use crate::runtime::{ClusterRef, InitialClusterState, MemberLaunch, MemberRuntime};

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

/// The token new members of `cluster` bootstrap with: unique per bootstrap so a member of
/// an older incarnation of the same name can never join the new cluster.
pub fn cluster_token(cluster: &ClusterRef) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{}-{}-{:x}", cluster.namespace, cluster.name, nanos)
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

async fn admin(observed: &Observed) -> Result<EtcdAdmin, Error> {
    EtcdAdmin::connect_with(endpoints(observed), None, admin_timeouts())
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

/// Executes `step` for `cluster`.
pub async fn execute<R: MemberRuntime>(
    runtime: &R,
    cluster: &ClusterRef,
    spec: &EtcdClusterSpec,
    observed: &Observed,
    step: &Step,
) -> Result<Executed, Error> {
    match step {
        Step::Bootstrap { members, version } => {
            let mut initial = Vec::new();
            for name in members {
                let addr = runtime
                    .reserve(cluster, name.as_str())
                    .await
                    .map_err(|source| Error::Bootstrap { source })?;
                initial.push((addr.name.clone(), addr.peer_url.clone()));
            }
            let token = cluster_token(cluster);
            for name in members {
                let launch = MemberLaunch {
                    name: name.to_string(),
                    version: version.clone(),
                    initial_cluster: initial.clone(),
                    state: InitialClusterState::New,
                    cluster_token: token.clone(),
                    options: spec.etcd.clone(),
                };
                runtime
                    .create(cluster, &launch)
                    .await
                    .map_err(|source| Error::Bootstrap { source })?;
            }
            Ok(Executed::Applied)
        }
        Step::AddLearner { name, version } => {
            let addr = runtime
                .reserve(cluster, name.as_str())
                .await
                .map_err(|source| Error::AddLearner {
                    source: source.into(),
                })?;
            let admin = admin(observed).await?;
            let (added, members) = match admin.member_add([addr.peer_url.clone()], true).await {
                Ok(r) => r,
                Err(e) if is_not_yet(&e) => return Ok(Executed::NotYet(e.to_string())),
                Err(e) => return Err(Error::AddLearner { source: e.into() }),
            };
            info!(member = %name, id = %added.id, "learner added to etcd");
            let launch = MemberLaunch {
                name: name.to_string(),
                initial_cluster: initial_cluster(&members, added.id, name.as_str()),
                version: version.clone(),
                state: InitialClusterState::Existing,
                cluster_token: String::new(),
                options: spec.etcd.clone(),
            };
            runtime
                .create(cluster, &launch)
                .await
                .map_err(|source| Error::AddLearner {
                    source: source.into(),
                })?;
            Ok(Executed::Applied)
        }
        Step::StartMember { name, id } => {
            let version = version_of(spec)?;
            let admin = admin(observed).await?;
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
            };
            runtime
                .create(cluster, &launch)
                .await
                .map_err(|source| Error::StartMember {
                    source: source.into(),
                })?;
            Ok(Executed::Applied)
        }
        Step::PromoteLearner { id, .. } => {
            let admin = admin(observed).await?;
            match admin.member_promote(*id).await {
                Ok(_) => Ok(Executed::Applied),
                Err(e) if is_not_yet(&e) => Ok(Executed::NotYet(e.to_string())),
                Err(source) => Err(Error::PromoteLearner { source }),
            }
        }
        Step::RemoveMember { name, id, .. } => {
            let admin = admin(observed).await?;
            match admin.member_remove(*id).await {
                Ok(_) | Err(etcd::Error::MemberNotFound { .. }) => {}
                Err(e) if is_not_yet(&e) => return Ok(Executed::NotYet(e.to_string())),
                Err(e) => return Err(Error::RemoveMember { source: e.into() }),
            }
            info!(member = %name, id = %id, "member removed from etcd");
            runtime
                .delete(cluster, name.as_str())
                .await
                .map_err(|source| Error::RemoveMember {
                    source: source.into(),
                })?;
            Ok(Executed::Applied)
        }
        Step::DeleteRuntimeMember { name } => {
            runtime
                .delete(cluster, name.as_str())
                .await
                .map_err(|source| Error::DeleteRuntimeMember { source })?;
            Ok(Executed::Applied)
        }
        Step::RestartMember { name } => {
            runtime
                .restart(cluster, name.as_str(), None)
                .await
                .map_err(|source| Error::RestartMember { source })?;
            Ok(Executed::Applied)
        }
        Step::MoveLeader { to_id: to, .. } => {
            let admin = admin(observed).await?;
            match admin.move_leader(*to).await {
                Ok(()) => Ok(Executed::Applied),
                Err(e @ (etcd::Error::NotLeader { .. } | etcd::Error::NoLeader { .. })) => {
                    Ok(Executed::NotYet(e.to_string()))
                }
                Err(source) => Err(Error::MoveLeader { source }),
            }
        }
        Step::UpgradeMember { name, to, .. } => {
            runtime
                .restart(cluster, name.as_str(), Some(to.clone()))
                .await
                .map_err(|source| Error::UpgradeMember { source })?;
            Ok(Executed::Applied)
        }
        Step::Wait { .. } | Step::Blocked { .. } | Step::Paused | Step::Done => {
            Ok(Executed::Nothing)
        }
    }
}
