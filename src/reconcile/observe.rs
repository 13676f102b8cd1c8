//! Observation: what the member runtime and etcd say about one cluster, joined by member
//! name (or peer URL for members etcd has not seen start) into the planner's [`Observed`].
//! It only reads; deciding is the planner's job and acting is `execute`'s.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures::future::join_all;
use tracing::debug;

use crate::etcd::{
    Alarm, AlarmKind, ClusterId, ClusterInfo, EndpointStatus, EtcdAdmin, MemberId, Timeouts,
};
use crate::plan::maintenance::{MemberSpace, Space};
use crate::plan::{EtcdMemberState, EtcdView, MemberName, Observed, ObservedMember, RuntimeState};
use crate::runtime::{ClusterRef, MemberRuntime, RuntimeMember};

use super::Error;

/// How long one observation may wait on a member before counting it as unhealthy.
pub const OBSERVE_TIMEOUT: Duration = Duration::from_secs(2);

/// Remembers since when each member has been failing, so the planner can apply grace periods.
#[derive(Debug, Default, Clone)]
pub struct HealthTracker {
    since: HashMap<String, Instant>,
}

impl HealthTracker {
    /// Records this observation of `name` and returns how long it has been failing.
    pub fn update(&mut self, name: &str, healthy: bool, now: Instant) -> Option<Duration> {
        if healthy {
            self.since.remove(name);
            None
        } else {
            let since = *self.since.entry(name.to_string()).or_insert(now);
            Some(now.saturating_duration_since(since))
        }
    }

    /// Forgets members that no longer exist.
    pub fn retain(&mut self, names: &[String]) {
        self.since.retain(|n, _| names.contains(n));
    }
}

/// What etcd said, before joining with the runtime's view.
struct EtcdSide {
    info: ClusterInfo,
    status: HashMap<MemberId, EndpointStatus>,
    healthy: HashMap<MemberId, bool>,
    alarms: Vec<Alarm>,
}

/// Observes one cluster.
pub async fn observe<R: MemberRuntime>(
    runtime: &R,
    cluster: &ClusterRef,
    highest_ordinal_used: Option<u32>,
    recorded_cluster_id: Option<ClusterId>,
    tracker: &mut HealthTracker,
) -> Result<Observed, Error> {
    observe_with_space(
        runtime,
        cluster,
        highest_ordinal_used,
        recorded_cluster_id,
        tracker,
    )
    .await
    .map(|(observed, _)| observed)
}

/// [`observe`], plus the members' backend sizes and active NOSPACE alarms for
/// `plan::maintenance` (`schedule_due` is left for the caller, who has the clock).
pub async fn observe_with_space<R: MemberRuntime>(
    runtime: &R,
    cluster: &ClusterRef,
    highest_ordinal_used: Option<u32>,
    recorded_cluster_id: Option<ClusterId>,
    tracker: &mut HealthTracker,
) -> Result<(Observed, Space), Error> {
    let runtime_members = runtime
        .list(cluster)
        .await
        .map_err(|source| Error::ListMembers { source })?;
    let etcd = observe_etcd(&runtime_members).await;
    let space = etcd.as_ref().map(space_of).unwrap_or_default();
    let now = Instant::now();
    let mut observed = join(cluster, runtime_members, etcd, tracker, now);
    observed.highest_ordinal_used = highest_ordinal_used;
    observed.recorded_cluster_id = recorded_cluster_id;
    Ok((observed, space))
}

fn space_of(e: &EtcdSide) -> Space {
    let mut members: Vec<MemberSpace> = e
        .status
        .iter()
        .map(|(id, s)| MemberSpace {
            id: *id,
            db_size: s.db_size,
            db_size_in_use: s.db_size_in_use,
        })
        .collect();
    members.sort_by_key(|m| m.id);
    let mut no_space_alarms: Vec<MemberId> = e
        .alarms
        .iter()
        .filter(|a| a.kind == AlarmKind::NoSpace)
        .map(|a| a.member_id)
        .collect();
    no_space_alarms.sort();
    no_space_alarms.dedup();
    Space {
        members,
        no_space_alarms,
        revision: e.status.values().map(|s| s.revision).max().unwrap_or(0),
        schedule_due: false,
    }
}

async fn observe_etcd(runtime_members: &[RuntimeMember]) -> Option<EtcdSide> {
    let endpoints: Vec<String> = runtime_members
        .iter()
        .filter(|m| m.running)
        .map(|m| m.address.client_url.clone())
        .collect();
    if endpoints.is_empty() {
        return None;
    }
    let timeouts = Timeouts {
        request: OBSERVE_TIMEOUT,
        ..Timeouts::default()
    };
    let admin = EtcdAdmin::connect_with(endpoints.clone(), None, timeouts)
        .await
        .ok()?;
    let info = match admin.member_list().await {
        Ok(i) => i,
        Err(e) => {
            debug!(error = %e, "member list failed");
            return None;
        }
    };
    // Ask every member with a client URL directly: status works on learners, health
    // (a linearizable read) only on voters.
    let targets: Vec<(MemberId, String, bool)> = info
        .members
        .iter()
        .filter_map(|m| {
            m.client_urls
                .first()
                .map(|u| (m.id, u.clone(), m.is_learner))
        })
        .collect();
    let statuses = join_all(targets.iter().map(|(id, url, _)| {
        let admin = admin.clone();
        async move { (*id, admin.status(url).await) }
    }))
    .await;
    let healths = join_all(targets.iter().filter(|t| !t.2).map(|(id, url, _)| {
        let admin = admin.clone();
        async move { (*id, admin.health(url).await.is_ok()) }
    }))
    .await;
    // A member answering as another cluster (an earlier cluster's member behind the same
    // name) is not one of ours: it counts as not answering (issue 9, item 5).
    let foreign: Vec<MemberId> = statuses
        .iter()
        .filter_map(|(id, r)| match r {
            Ok(s) if s.cluster_id != info.cluster_id => Some(*id),
            _ => None,
        })
        .collect();
    let status: HashMap<MemberId, EndpointStatus> = statuses
        .into_iter()
        .filter_map(|(id, r)| r.ok().map(|s| (id, s)))
        .filter(|(id, _)| !foreign.contains(id))
        .collect();
    let healths = healths
        .into_iter()
        .map(|(id, ok)| (id, ok && !foreign.contains(&id)));
    // Only with a leader (the call may go through raft and would hang until its timeout
    // without one); a failure only means no alarm is known this pass.
    let has_leader = status.values().any(EndpointStatus::has_leader);
    let alarms = if has_leader {
        admin.alarm_list().await.unwrap_or_else(|e| {
            debug!(error = %e, "alarm list failed");
            Vec::new()
        })
    } else {
        Vec::new()
    };
    Some(EtcdSide {
        info,
        status,
        healthy: healths.collect(),
        alarms,
    })
}

fn join(
    cluster: &ClusterRef,
    runtime_members: Vec<RuntimeMember>,
    etcd: Option<EtcdSide>,
    tracker: &mut HealthTracker,
    now: Instant,
) -> Observed {
    let wall_now = jiff::Timestamp::now();
    let mut members = Vec::new();
    let mut matched: Vec<MemberId> = Vec::new();
    let leader = etcd
        .as_ref()
        .and_then(|e| e.status.values().find(|s| s.has_leader()).map(|s| s.leader));
    let etcd_state = |e: &EtcdSide, m: &crate::etcd::Member| {
        let st = e.status.get(&m.id);
        let healthy = if m.is_learner {
            st.is_some()
        } else {
            e.healthy.get(&m.id).copied().unwrap_or(false)
        };
        EtcdMemberState {
            id: m.id,
            is_learner: m.is_learner,
            started: m.has_started(),
            healthy,
            version: st.map(|s| s.version.clone()),
            raft_index: st.map(|s| s.raft_index),
            is_leader: Some(m.id) == leader,
        }
    };
    for rm in runtime_members {
        let em = etcd.as_ref().and_then(|e| {
            e.info
                .members
                .iter()
                .find(|m| m.name == rm.name)
                .or_else(|| {
                    e.info
                        .members
                        .iter()
                        .find(|m| !m.has_started() && m.peer_urls.contains(&rm.address.peer_url))
                })
                .map(|m| etcd_state(e, m))
        });
        if let Some(em) = &em {
            matched.push(em.id);
        }
        let healthy = rm.running && em.as_ref().is_some_and(|e| e.healthy);
        members.push(ObservedMember {
            unhealthy_for: tracker.update(&rm.name, healthy, now),
            name: MemberName::from(rm.name.clone()),
            runtime: Some(RuntimeState {
                running: rm.running,
                has_data: rm.has_data,
                version: rm.version.clone(),
                peer_url: rm.address.peer_url.clone(),
                client_url: rm.address.client_url.clone(),
                // A start in the future (clock skew) counts as just now.
                started_for: rm
                    .started_at
                    .map(|t| Duration::try_from(wall_now.duration_since(t)).unwrap_or_default()),
                restart_keeps_data: rm.restart_keeps_data,
            }),
            etcd: em,
        });
    }
    let mut view = None;
    if let Some(e) = &etcd {
        for m in e.info.members.iter().filter(|m| !matched.contains(&m.id)) {
            // etcd lists a member the runtime does not have: its process and data are gone,
            // or an add was interrupted before its process started.
            let name = if m.has_started() {
                m.name.clone()
            } else {
                format!("{}-unstarted-{}", cluster.name, m.id)
            };
            members.push(ObservedMember {
                unhealthy_for: tracker.update(&name, false, now),
                name: MemberName::from(name),
                runtime: None,
                etcd: Some(etcd_state(e, m)),
            });
        }
        let leader_raft_index = leader
            .and_then(|l| e.status.get(&l))
            .map(|s| s.raft_index)
            .unwrap_or(0);
        view = Some(EtcdView {
            cluster_id: e.info.cluster_id,
            leader,
            leader_raft_index,
        });
    }
    let names: Vec<String> = members.iter().map(|m| m.name.to_string()).collect();
    tracker.retain(&names);
    Observed {
        cluster_name: cluster.name.clone(),
        highest_ordinal_used: None,
        recorded_cluster_id: None,
        served_version: None,
        members,
        etcd: view,
    }
}
