//! Observation: what the member runtime and etcd say about one cluster, joined by member
//! name (or peer URL for members etcd has not seen start) into the planner's [`Observed`].
//! It only reads; deciding is the planner's job and acting is `execute`'s.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures::future::join_all;
use tracing::debug;

use crate::etcd::{
    Alarm, AlarmKind, ClusterId, ClusterInfo, EndpointStatus, EtcdAdmin, MemberId, Timeouts,
    TlsConfig,
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
    /// Members whose own status answered with another cluster id than the member list's:
    /// their data dir holds another cluster's data (a volume left by an earlier cluster).
    foreign: Vec<MemberId>,
}

/// Observes one cluster, dialling TLS members with `tls`.
pub async fn observe<R: MemberRuntime>(
    runtime: &R,
    cluster: &ClusterRef,
    highest_ordinal_used: Option<u32>,
    recorded_cluster_id: Option<ClusterId>,
    tracker: &mut HealthTracker,
    tls: Option<&TlsConfig>,
) -> Result<Observed, Error> {
    observe_with_space(
        runtime,
        cluster,
        highest_ordinal_used,
        recorded_cluster_id,
        tracker,
        tls,
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
    tls: Option<&TlsConfig>,
) -> Result<(Observed, Space), Error> {
    let runtime_members = runtime
        .list(cluster)
        .await
        .map_err(|source| Error::ListMembers { source })?;
    let etcd = observe_etcd(&runtime_members, tls).await;
    let space = etcd.as_ref().map(space_of).unwrap_or_default();
    let now = Instant::now();
    let mut observed = join(
        cluster,
        runtime_members,
        etcd,
        recorded_cluster_id,
        tracker,
        now,
    );
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

async fn observe_etcd(
    runtime_members: &[RuntimeMember],
    tls: Option<&TlsConfig>,
) -> Option<EtcdSide> {
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
    let tls = TlsConfig::for_endpoints(&endpoints, tls);
    let admin = EtcdAdmin::connect_with(endpoints.clone(), tls, timeouts)
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
        foreign,
    })
}

fn join(
    cluster: &ClusterRef,
    runtime_members: Vec<RuntimeMember>,
    etcd: Option<EtcdSide>,
    recorded_cluster_id: Option<ClusterId>,
    tracker: &mut HealthTracker,
    now: Instant,
) -> Observed {
    // A member of ours whose data dir answers as another cluster has none of this cluster's
    // data: it is reported without data, so it is replaced at once rather than restarted
    // on it and waited for (seen on a real cluster: a recycled volume that kept an earlier
    // cluster's data). Only when the member list is known to be this cluster's.
    let ours = etcd
        .as_ref()
        .is_some_and(|e| recorded_cluster_id == Some(e.info.cluster_id));
    let foreign_data = |id: Option<MemberId>| {
        ours && id.is_some_and(|id| etcd.as_ref().is_some_and(|e| e.foreign.contains(&id)))
    };
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
            peer_urls: m.peer_urls.clone(),
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
        let has_data = rm.has_data && !foreign_data(em.as_ref().map(|e| e.id));
        members.push(ObservedMember {
            unhealthy_for: tracker.update(&rm.name, healthy, now),
            served_at: None,
            name: MemberName::from(rm.name.clone()),
            runtime: Some(RuntimeState {
                running: rm.running,
                has_data,
                version: rm.version.clone(),
                peer_url: rm.address.peer_url.clone(),
                client_url: rm.address.client_url.clone(),
                // A start in the future (clock skew) counts as just now.
                started_for: rm
                    .started_at
                    .map(|t| Duration::try_from(wall_now.duration_since(t)).unwrap_or_default()),
                restart_keeps_data: rm.restart_keeps_data,
                trust_stamp: rm.trust_stamp.clone(),
            }),
            etcd: em,
        });
    }
    let mut view = None;
    if let Some(e) = &etcd {
        for m in e.info.members.iter().filter(|m| !matched.contains(&m.id)) {
            // etcd lists a member the runtime does not have: its process and data are gone,
            // or an add was interrupted before its process started.
            // A bootstrap member that never joined is listed with its name already.
            let name = if !m.name.is_empty() {
                m.name.clone()
            } else {
                format!("{}-unstarted-{}", cluster.name, m.id)
            };
            members.push(ObservedMember {
                unhealthy_for: tracker.update(&name, false, now),
                served_at: None,
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
        trust_stamp: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::etcd::Member;
    use crate::runtime::MemberAddress;

    fn runtime_member(n: u32) -> RuntimeMember {
        RuntimeMember {
            name: format!("c-{n}"),
            address: MemberAddress {
                name: format!("c-{n}"),
                peer_url: format!("http://c-{n}:2380"),
                client_url: format!("http://c-{n}:2379"),
            },
            running: true,
            has_data: true,
            version: semver::Version::new(3, 5, 16),
            started_at: None,
            restart_keeps_data: true,
            trust_stamp: None,
        }
    }

    fn status(n: u32, cluster: u64) -> EndpointStatus {
        EndpointStatus {
            endpoint: format!("http://c-{n}:2379"),
            cluster_id: ClusterId(cluster),
            member_id: MemberId(u64::from(n) + 1),
            version: semver::Version::new(3, 5, 16),
            leader: MemberId(1),
            raft_index: 10,
            raft_term: 2,
            raft_applied_index: 10,
            db_size: 0,
            db_size_in_use: 0,
            is_learner: false,
            errors: Vec::new(),
            revision: 1,
        }
    }

    /// Three members listed by the cluster 0xaa; `c-2`'s own status answers as 0xbb.
    fn side() -> EtcdSide {
        let members = (0u32..3)
            .map(|n| Member {
                id: MemberId(u64::from(n) + 1),
                name: format!("c-{n}"),
                peer_urls: vec![format!("http://c-{n}:2380")],
                client_urls: vec![format!("http://c-{n}:2379")],
                is_learner: false,
            })
            .collect();
        EtcdSide {
            info: ClusterInfo {
                cluster_id: ClusterId(0xaa),
                member_id_of_answerer: MemberId(1),
                members,
            },
            status: (0u32..2)
                .map(|n| (MemberId(u64::from(n) + 1), status(n, 0xaa)))
                .collect(),
            healthy: (0u64..3).map(|n| (MemberId(n + 1), n < 2)).collect(),
            alarms: Vec::new(),
            foreign: vec![MemberId(3)],
        }
    }

    #[test]
    fn a_bootstrap_member_listed_without_client_urls_never_joined() {
        // A bootstrap lists every member of --initial-cluster by name; one whose process
        // never joined has no client URLs (seen on etcd 3.5.16: `member list` says
        // "started, c-2, http://c-2:2380, , false").
        let cref = ClusterRef::new("default", "c");
        let etcd = || {
            let mut e = side();
            e.foreign.clear();
            e.info.members[2].client_urls.clear();
            e
        };
        let members = (0..3).map(runtime_member).collect::<Vec<_>>();
        let o = join(
            &cref,
            members,
            Some(etcd()),
            Some(ClusterId(0xaa)),
            &mut HealthTracker::default(),
            Instant::now(),
        );
        let c2 = o.member(&MemberName::from("c-2")).unwrap();
        assert!(
            c2.is_unstarted() && c2.is_voter() && c2.has_data(),
            "{c2:?}"
        );
        assert!(o.member(&MemberName::from("c-1")).unwrap().is_started());
        // Without its runtime member it keeps its name.
        let o = join(
            &cref,
            (0..2).map(runtime_member).collect(),
            Some(etcd()),
            Some(ClusterId(0xaa)),
            &mut HealthTracker::default(),
            Instant::now(),
        );
        assert!(o.member(&MemberName::from("c-2")).unwrap().is_unstarted());
    }

    #[test]
    fn a_member_whose_data_answers_as_another_cluster_has_none_of_ours() {
        let cref = ClusterRef::new("default", "c");
        let members = || (0..3).map(runtime_member).collect::<Vec<_>>();
        let mut tracker = HealthTracker::default();
        let o = join(
            &cref,
            members(),
            Some(side()),
            Some(ClusterId(0xaa)),
            &mut tracker,
            Instant::now(),
        );
        let c2 = o.member(&MemberName::from("c-2")).unwrap();
        assert!(c2.has_lost_data(), "{c2:?}");
        assert!(o.member(&MemberName::from("c-0")).unwrap().has_data());
        // Without a recorded id the member list's cluster may itself be the stranger:
        // nothing is concluded.
        let unknown = join(
            &cref,
            members(),
            Some(side()),
            None,
            &mut tracker,
            Instant::now(),
        );
        assert!(unknown.member(&MemberName::from("c-2")).unwrap().has_data());
    }
}
