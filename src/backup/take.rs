//! Takes one backup: picks a healthy member (a follower when one is healthy), reads its
//! revision, version and cluster id, and streams its snapshot (through zstd when the
//! destination asks) into `<prefix>/<namespace>/<cluster>/<backup>/<UTC time>-rev<revision>.db`
//! (`.db.zst` compressed).
//!
//! When to take one, retention and status updates are the caller's.

use std::time::{Duration, Instant};

use aws_sdk_s3::Client;
use etcd_client::{ConnectOptions, GetOptions};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use tracing::{debug, info, instrument, warn};

use super::Error;
use super::compress::zstd_compress;
use super::key::{Scope, backup_key};
use super::metadata::SnapshotMetadata;
use super::upload::{UploadOptions, UploadTimings, upload_stream};
use crate::api::backup::{BackupRecord, Compression, S3Destination};
use crate::etcd::{ClientError, ClusterId, EndpointStatus, EtcdAdmin, TlsConfig};

/// Who a backup belongs to: the EtcdBackup `backup` in `namespace`, of the EtcdCluster
/// `cluster` whose uid (locally, its incarnation) is `cluster_uid`.
#[derive(Clone, Copy, Debug)]
pub struct Owner<'a> {
    pub namespace: &'a str,
    pub cluster: &'a str,
    pub backup: &'a str,
    pub cluster_uid: Option<&'a str>,
}

impl<'a> Owner<'a> {
    /// The owner's folder under `prefix`.
    pub fn scope(&self, prefix: Option<&'a str>) -> Scope<'a> {
        Scope {
            prefix,
            namespace: self.namespace,
            cluster: self.cluster,
            backup: self.backup,
        }
    }
}

/// Takes a backup of the cluster `admin` talks to and uploads it to `destination` in
/// `owner`'s folder, with `owner` recorded in the object's metadata. `tls` is the client TLS `admin` was built with: the
/// snapshot is read through a connection to the chosen member alone.
///
/// # Flow
/// 1. List the members; ask each voter's status.
/// 2. Candidates are voters that know a leader and report no errors: followers first (a
///    snapshot costs the member I/O and CPU, better not the leader's), then the leader; ties
///    by lowest member id. The first to pass a health check (a linearizable read) is used.
/// 3. Read its revision, then stream its snapshot into a multipart upload
///    ([`upload_stream`]), logging progress.
///
/// # Guarantees
/// On error no object and no multipart upload is left behind (see [`upload_stream`]).
///
/// # Assumptions
/// The revision in the key and record is the member's revision read just before the snapshot
/// began; writes in between make the snapshot's own revision higher, never lower.
/// Two backups of the same cluster in the same second at the same revision share a key: the
/// second replaces the first, which holds the same data.
///
/// # Errors
/// [`Error::MemberList`], [`Error::NoHealthyMember`], [`Error::Revision`],
/// [`Error::Snapshot`], and the upload's errors.
#[instrument(skip(admin, tls, s3, destination), fields(bucket = %destination.bucket))]
pub async fn take_backup(
    admin: &EtcdAdmin,
    tls: Option<&TlsConfig>,
    s3: &Client,
    destination: &S3Destination,
    owner: &Owner<'_>,
) -> Result<BackupRecord, Error> {
    Ok(take_backup_timed(admin, tls, s3, destination, owner)
        .await?
        .0)
}

/// Where a backup's wall time went: before the upload, and in it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BackupTimings {
    /// Member list, statuses and the health check.
    pub pick_member: Duration,
    /// The revision read.
    pub revision: Duration,
    /// Connecting to the member and starting its snapshot.
    pub connect: Duration,
    pub upload: UploadTimings,
}

/// [`take_backup`], also saying where the time went (for the benchmark).
///
/// # Errors
/// As [`take_backup`].
pub async fn take_backup_timed(
    admin: &EtcdAdmin,
    tls: Option<&TlsConfig>,
    s3: &Client,
    destination: &S3Destination,
    owner: &Owner<'_>,
) -> Result<(BackupRecord, BackupTimings), Error> {
    let cluster = owner.cluster;
    let started = Instant::now();
    let mut timings = BackupTimings::default();
    let at = jiff::Timestamp::now();
    let (member, cluster_id) = pick_member(admin).await?;
    timings.pick_member = started.elapsed();
    let endpoint = member.endpoint.clone();
    let reading = Instant::now();
    let revision = read_revision(&endpoint, tls, admin.timeouts()).await?;
    timings.revision = reading.elapsed();
    let connecting = Instant::now();
    let compression = destination.compression;
    let key = backup_key(
        &owner.scope(destination.prefix.as_deref()),
        at,
        revision,
        compression,
    );
    info!(cluster, member = %endpoint, key, revision, "taking backup");

    let snapshot_err = |source| Error::Snapshot {
        endpoint: endpoint.clone(),
        source,
    };
    let pinned = EtcdAdmin::connect_with([endpoint.as_str()], tls.cloned(), admin.timeouts())
        .await
        .map_err(snapshot_err)?;
    let snapshot = pinned
        .snapshot()
        .await
        .map_err(snapshot_err)?
        .map_err(snapshot_err);
    timings.connect = connecting.elapsed();
    let chunks = match compression {
        None => snapshot.boxed(),
        Some(Compression::Zstd) => zstd_compress(snapshot).boxed(),
    };
    let metadata = SnapshotMetadata {
        revision: Some(revision),
        etcd_version: Some(member.version.clone()),
        cluster_id: Some(cluster_id.to_string()),
        namespace: Some(owner.namespace.to_owned()),
        cluster: Some(owner.cluster.to_owned()),
        backup: Some(owner.backup.to_owned()),
        cluster_uid: owner.cluster_uid.map(str::to_owned),
        compression,
        ..SnapshotMetadata::default()
    };
    let options = UploadOptions::for_destination(destination);
    let uploaded =
        upload_stream(s3, &destination.bucket, &key, &metadata, chunks, &options).await?;
    timings.upload = uploaded.timings.clone();

    let record = BackupRecord {
        key: uploaded.key.clone(),
        size: i64::try_from(uploaded.size).unwrap_or(i64::MAX),
        sha256: uploaded.sha256.clone(),
        revision,
        etcd_version: member.version.to_string(),
        cluster_id: cluster_id.to_string(),
        duration_seconds: started.elapsed().as_secs_f64(),
        mb_per_second: uploaded.mb_per_second(),
        time: Time(at),
        verification: None,
    };
    info!(
        cluster,
        key = record.key,
        bytes = record.size,
        seconds = record.duration_seconds,
        "backup complete"
    );
    Ok((record, timings))
}

/// The member to snapshot and the cluster's id (see [`take_backup`]'s flow).
async fn pick_member(admin: &EtcdAdmin) -> Result<(EndpointStatus, ClusterId), Error> {
    let info = admin.member_list().await.map_err(Error::MemberList)?;
    let urls: Vec<&String> = info
        .voters()
        .filter_map(|m| m.client_urls.first())
        .collect();
    let statuses = futures::future::join_all(urls.iter().map(|url| admin.status(url))).await;
    let mut seen = Vec::new();
    let mut last = None;
    for status in statuses {
        match status {
            Ok(s) => seen.push(s),
            Err(e) => last = Some(e),
        }
    }
    for candidate in snapshot_candidates(&seen) {
        match admin.health(&candidate.endpoint).await {
            Ok(_) => return Ok((candidate.clone(), info.cluster_id)),
            Err(e) => {
                warn!(member = %candidate.endpoint, error = %e, "skipping unhealthy member");
                last = Some(e);
            }
        }
    }
    debug!(seen = seen.len(), "no healthy member to snapshot");
    Err(Error::NoHealthyMember { last })
}

/// Members worth a snapshot, best first: voters that know a leader and report no errors;
/// followers before the leader; then by lowest member id.
fn snapshot_candidates(statuses: &[EndpointStatus]) -> Vec<&EndpointStatus> {
    let mut candidates: Vec<&EndpointStatus> = statuses
        .iter()
        .filter(|s| !s.is_learner && s.has_leader() && s.errors.is_empty())
        .collect();
    candidates.sort_by_key(|s| (s.is_leader(), s.member_id));
    candidates
}

/// The revision `endpoint` serves, from the header of a linearizable count-only read.
async fn read_revision(
    endpoint: &str,
    tls: Option<&TlsConfig>,
    timeouts: crate::etcd::Timeouts,
) -> Result<i64, Error> {
    let failed = |source: Option<etcd_client::Error>| Error::Revision {
        endpoint: endpoint.to_owned(),
        source: source.map(ClientError),
    };
    let mut options = ConnectOptions::new().with_connect_timeout(timeouts.connect);
    if let Some(tls) = tls {
        let tls = tls.to_options().map_err(|source| Error::Snapshot {
            endpoint: endpoint.to_owned(),
            source,
        })?;
        options = options.with_tls(tls);
    }
    let read = async {
        let mut client = etcd_client::Client::connect([endpoint], Some(options)).await?;
        client
            .get(vec![0u8], Some(GetOptions::new().with_count_only()))
            .await
    };
    let limit = timeouts.request + timeouts.connect;
    let resp = match tokio::time::timeout(limit, read).await {
        Ok(Ok(resp)) => resp,
        Ok(Err(e)) => return Err(failed(Some(e))),
        Err(_) => return Err(failed(None)),
    };
    resp.header()
        .map(|h| h.revision())
        .ok_or_else(|| failed(None))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::etcd::MemberId;

    fn status(id: u64, leader: u64) -> EndpointStatus {
        EndpointStatus {
            endpoint: format!("http://127.0.0.1:{id}"),
            cluster_id: ClusterId(1),
            member_id: MemberId(id),
            version: semver::Version::new(3, 5, 16),
            leader: MemberId(leader),
            raft_index: 0,
            raft_term: 0,
            raft_applied_index: 0,
            revision: 0,
            db_size: 0,
            db_size_in_use: 0,
            is_learner: false,
            errors: vec![],
        }
    }

    fn ids(candidates: Vec<&EndpointStatus>) -> Vec<u64> {
        candidates.iter().map(|s| s.member_id.0).collect()
    }

    #[test]
    fn followers_come_before_the_leader_lowest_id_first() {
        let statuses = [status(3, 2), status(2, 2), status(1, 2)];
        assert_eq!(ids(snapshot_candidates(&statuses)), [1, 3, 2]);
    }

    #[test]
    fn learners_leaderless_and_erroring_members_are_skipped() {
        let mut learner = status(1, 2);
        learner.is_learner = true;
        let mut alarmed = status(3, 2);
        alarmed.errors.push("NOSPACE".into());
        let statuses = [learner, status(2, 2), alarmed, status(4, 0)];
        assert_eq!(ids(snapshot_candidates(&statuses)), [2]);
    }
}
