//! Carries out one [`MaintenanceAction`] through the etcd admin layer: compact, move the
//! leader, defragment one member, disarm NOSPACE. Which action and when is
//! `plan::maintenance`'s decision; each action is safe to repeat after a crash.

use std::time::{Duration, Instant};

use tracing::info;

use super::Executed;
use crate::etcd::{self, AlarmKind, EtcdAdmin, Timeouts};
use crate::plan::maintenance::{Bytes, MaintenanceAction};
use crate::plan::{MemberName, Observed};

/// Defragmenting rewrites the member's whole backend; a large one takes a while.
const DEFRAGMENT_TIMEOUT: Duration = Duration::from_secs(600);

fn timeouts() -> Timeouts {
    Timeouts {
        request: Duration::from_secs(10),
        defragment: DEFRAGMENT_TIMEOUT,
        ..Timeouts::default()
    }
}

fn client_url<'a>(observed: &'a Observed, name: &MemberName) -> Option<&'a str> {
    observed
        .member(name)
        .and_then(|m| m.runtime.as_ref())
        .map(|r| r.client_url.as_str())
}

/// Executes `action`. Refusals that pass by themselves (leadership moving, no leader yet)
/// are [`Executed::NotYet`].
pub async fn execute(
    observed: &Observed,
    endpoints: Vec<String>,
    tls: Option<&etcd::TlsConfig>,
    action: &MaintenanceAction,
) -> Result<Executed, etcd::Error> {
    let tls = etcd::TlsConfig::for_endpoints(&endpoints, tls);
    let admin = EtcdAdmin::connect_with(endpoints, tls, timeouts()).await?;
    match action {
        MaintenanceAction::Compact { revision } => {
            let started = Instant::now();
            match admin.compact(*revision).await {
                Ok(()) | Err(etcd::Error::Compacted { .. }) => {}
                Err(e @ (etcd::Error::NoLeader { .. } | etcd::Error::NotLeader { .. })) => {
                    return Ok(Executed::NotYet(e.to_string()));
                }
                Err(e) => return Err(e),
            }
            info!(
                revision,
                took_ms = started.elapsed().as_millis() as u64,
                "keyspace compacted"
            );
            Ok(Executed::Applied)
        }
        MaintenanceAction::MoveLeader { to_id, .. } => match admin.move_leader(*to_id).await {
            Ok(()) => Ok(Executed::Applied),
            Err(e @ (etcd::Error::NotLeader { .. } | etcd::Error::NoLeader { .. })) => {
                Ok(Executed::NotYet(e.to_string()))
            }
            Err(e) => Err(e),
        },
        MaintenanceAction::Defragment { name, .. } => {
            let Some(url) = client_url(observed, name) else {
                return Ok(Executed::NotYet(format!("{name} has no client url")));
            };
            let before = admin.status(url).await?;
            // Leadership may have come to it since the plan; the leader goes last.
            let voters = observed.voter_count();
            if before.is_leader() && voters > 1 {
                return Ok(Executed::NotYet(format!("{name} became the leader")));
            }
            let started = Instant::now();
            admin.defragment(url).await?;
            let took = started.elapsed();
            let after = admin.status(url).await?;
            let reclaimed = before.db_size.saturating_sub(after.db_size);
            let rate = before.db_size as f64 / 1_048_576.0 / took.as_secs_f64().max(1e-3);
            info!(
                member = %name,
                before = %Bytes(before.db_size),
                after = %Bytes(after.db_size),
                reclaimed = %Bytes(reclaimed),
                took_ms = took.as_millis() as u64,
                mib_per_s = format!("{rate:.1}"),
                "member defragmented"
            );
            Ok(Executed::Applied)
        }
        MaintenanceAction::Finish {
            disarm,
            reclaimed_bytes,
            defragmented,
            ..
        } => {
            if *disarm {
                let disarmed = admin.alarm_disarm(AlarmKind::NoSpace).await?;
                info!(
                    alarms = disarmed.len(),
                    members = defragmented,
                    reclaimed = %Bytes(*reclaimed_bytes),
                    "NOSPACE alarm disarmed"
                );
            } else {
                info!(
                    members = defragmented,
                    reclaimed = %Bytes(*reclaimed_bytes),
                    "defragmentation run finished"
                );
            }
            Ok(Executed::Applied)
        }
    }
}
