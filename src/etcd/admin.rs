//! `EtcdAdmin`: membership, status, health, snapshot and maintenance calls against etcd, each
//! bounded by a timeout and answered with this module's types and errors.
//!
//! It decides nothing (which member to add or remove is the planner's job) and never retries a
//! refused call; it only fails over to the next endpoint when one cannot answer at all.

use std::collections::HashMap;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use etcd_client::{
    AlarmAction, AlarmOptions, AlarmType, Client, CompactionOptions, ConnectOptions, GetOptions,
    MemberAddOptions,
};
use futures::{Stream, StreamExt};
use tokio::io::AsyncWriteExt;
use tracing::debug;

use super::error::{self, Error, Op};
use super::tls::TlsConfig;
use super::types::{Alarm, AlarmKind, ClusterId, ClusterInfo, EndpointStatus, Member, MemberId};

/// How long each kind of call may take before it fails with [`Error::Timeout`].
///
/// Defaults: connect 3 s, request 5 s, defragment 120 s, snapshot idle 30 s.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// One TCP (and TLS) connection attempt.
    pub connect: Duration,
    /// One unary call: member list/add/promote/remove, status, health, alarms, move leader,
    /// and opening a snapshot stream.
    pub request: Duration,
    /// Defragmenting one member; it blocks that member and grows with its database.
    pub defragment: Duration,
    /// The longest gap between two snapshot chunks; the whole snapshot has no limit.
    pub snapshot_idle: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(3),
            request: Duration::from_secs(5),
            defragment: Duration::from_secs(120),
            snapshot_idle: Duration::from_secs(30),
        }
    }
}

/// A handle for administering one etcd cluster; cheap to clone and share between tasks.
///
/// # Endpoints
/// Cluster-wide calls (member list/add/promote/remove, alarms, snapshot) go to the configured
/// endpoints in turn, starting with the last one that answered, and move on only when an
/// endpoint did not take the request: unreachable, a learner, leaderless, or (for reads only)
/// timed out. A refusal (e.g. [`Error::Unhealthy`]) is returned, not retried elsewhere. Per-endpoint calls ([`status`](Self::status), [`health`](Self::health),
/// [`defragment`](Self::defragment)) take any client URL, configured or not, e.g. a learner's.
///
/// # Connections
/// Nothing is dialled at construction: each endpoint gets its own lazily connected channel,
/// dropped after a timeout or transport error so the next call dials afresh.
#[derive(Clone)]
pub struct EtcdAdmin {
    inner: Arc<Inner>,
}

struct Inner {
    endpoints: Vec<String>,
    tls: Option<TlsConfig>,
    timeouts: Timeouts,
    /// Channels by endpoint and by whether they ask etcd to refuse when leaderless.
    clients: Mutex<HashMap<(String, bool), Client>>,
    /// Index of the endpoint that answered last; cluster-wide calls start there.
    preferred: AtomicUsize,
}

/// What a failed call needs to build a precise error.
#[derive(Clone, Copy, Default)]
struct Ctx<'a> {
    member: Option<MemberId>,
    peer_urls: &'a [String],
    /// Endpoints a cluster-wide call tries only after all others.
    avoid: &'a [String],
}

impl EtcdAdmin {
    /// An admin for `endpoints` (client URLs such as `http://10.0.0.1:2379`) with default
    /// [`Timeouts`]. Use a single endpoint to pin every call to one member.
    ///
    /// # Errors
    /// [`Error::NoEndpoints`], [`Error::InvalidEndpoint`], [`Error::InvalidTls`]. No network
    /// errors: connecting is lazy.
    pub async fn connect<I, S>(endpoints: I, tls: Option<TlsConfig>) -> Result<Self, Error>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self::connect_with(endpoints, tls, Timeouts::default()).await
    }

    /// [`connect`](Self::connect) with explicit timeouts.
    pub async fn connect_with<I, S>(
        endpoints: I,
        tls: Option<TlsConfig>,
        timeouts: Timeouts,
    ) -> Result<Self, Error>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let endpoints: Vec<String> = endpoints.into_iter().map(Into::into).collect();
        if endpoints.is_empty() {
            return Err(Error::NoEndpoints);
        }
        if let Some(tls) = &tls {
            tls.validate()?;
        }
        let admin = Self {
            inner: Arc::new(Inner {
                endpoints,
                tls,
                timeouts,
                clients: Mutex::new(HashMap::new()),
                preferred: AtomicUsize::new(0),
            }),
        };
        // Builds every channel now so a malformed URL fails here, not on first use.
        for endpoint in &admin.inner.endpoints {
            admin.client(endpoint, false).await?;
        }
        Ok(admin)
    }

    pub fn endpoints(&self) -> &[String] {
        &self.inner.endpoints
    }

    pub fn timeouts(&self) -> Timeouts {
        self.inner.timeouts
    }

    /// The membership as the answering member sees it: served from its local state, so it may
    /// lag the leader, and it answers even without quorum (not a health check).
    pub async fn member_list(&self) -> Result<ClusterInfo, Error> {
        let op = Op::MemberList;
        let (resp, endpoint) = self
            .on_any(
                op,
                Ctx::default(),
                |mut c| async move { c.member_list().await },
            )
            .await?;
        let header = resp
            .header()
            .ok_or_else(|| unexpected(op, &endpoint, "no response header"))?;
        Ok(ClusterInfo {
            cluster_id: ClusterId(header.cluster_id()),
            member_id_of_answerer: MemberId(header.member_id()),
            members: resp.members().iter().map(member_from).collect(),
        })
    }

    /// Adds a member with `peer_urls`, as a learner if `as_learner`. Returns the new member
    /// (no name or client URLs until its process starts) and the membership after the change.
    ///
    /// Start the member's process only after this returns, with `--initial-cluster-state
    /// existing` and every member in `--initial-cluster`.
    ///
    /// # Errors
    /// [`Error::Unhealthy`] (retry later; always the case for ~5 s after bootstrap),
    /// [`Error::TooManyLearners`], [`Error::PeerUrlExists`] (possibly our own earlier add).
    pub async fn member_add<I, S>(
        &self,
        peer_urls: I,
        as_learner: bool,
    ) -> Result<(Member, Vec<Member>), Error>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let op = Op::MemberAdd;
        let urls: Vec<String> = peer_urls.into_iter().map(Into::into).collect();
        let options = as_learner.then(|| MemberAddOptions::new().with_is_learner());
        let ctx = Ctx {
            peer_urls: &urls,
            ..Ctx::default()
        };
        let (resp, endpoint) = self
            .on_any(op, ctx, |mut c| {
                let urls = urls.clone();
                let options = options.clone();
                async move { c.member_add(urls, options).await }
            })
            .await?;
        let added = resp
            .member()
            .map(member_from)
            .ok_or_else(|| unexpected(op, &endpoint, "no member in response"))?;
        Ok((added, resp.member_list().iter().map(member_from).collect()))
    }

    /// Promotes learner `id` to a voter; returns the membership after the change.
    ///
    /// # Errors
    /// [`Error::LearnerNotReady`] until the learner has caught up (retry),
    /// [`Error::NotLearner`], [`Error::MemberNotFound`].
    pub async fn member_promote(&self, id: MemberId) -> Result<Vec<Member>, Error> {
        let ctx = Ctx {
            member: Some(id),
            ..Ctx::default()
        };
        let (resp, _) = self
            .on_any(Op::MemberPromote, ctx, |mut c| async move {
                c.member_promote(id.0).await
            })
            .await?;
        Ok(resp.members().iter().map(member_from).collect())
    }

    /// Sets member `id`'s peer URLs (what other members dial it at); returns the membership
    /// after the change. Repeating it with the same URLs changes nothing.
    ///
    /// # Errors
    /// [`Error::MemberNotFound`], [`Error::PeerUrlExists`] when another member has one of
    /// the URLs, [`Error::Unhealthy`] (retry later).
    pub async fn member_update<I, S>(
        &self,
        id: MemberId,
        peer_urls: I,
    ) -> Result<Vec<Member>, Error>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let urls: Vec<String> = peer_urls.into_iter().map(Into::into).collect();
        let ctx = Ctx {
            member: Some(id),
            peer_urls: &urls,
            ..Ctx::default()
        };
        let (resp, _) = self
            .on_any(Op::MemberUpdate, ctx, |mut c| {
                let urls = urls.clone();
                async move { c.member_update(id.0, urls).await }
            })
            .await?;
        Ok(resp.members().iter().map(member_from).collect())
    }

    /// Removes member `id`; returns the membership after the change.
    ///
    /// The request goes to another member than `id` when the configured endpoints allow it:
    /// a member applying its own removal shuts down before it answers.
    ///
    /// Removing the leader leaves the cluster leaderless for about an election timeout, and
    /// proposals made in that gap hang until they time out: move leadership away first.
    ///
    /// # Errors
    /// [`Error::MemberNotFound`] (also when an earlier, timed-out attempt did remove it),
    /// [`Error::Unhealthy`] when removing it would leave too few active voters.
    pub async fn member_remove(&self, id: MemberId) -> Result<Vec<Member>, Error> {
        let members = self.member_list().await?;
        let own_urls = members
            .member(id)
            .map(|m| m.client_urls.clone())
            .unwrap_or_default();
        let ctx = Ctx {
            member: Some(id),
            avoid: &own_urls,
            ..Ctx::default()
        };
        let (resp, _) = self
            .on_any(Op::MemberRemove, ctx, |mut c| async move {
                c.member_remove(id.0).await
            })
            .await?;
        Ok(resp.members().iter().map(member_from).collect())
    }

    /// The status `endpoint` reports about itself. Works on learners and without a leader.
    pub async fn status(&self, endpoint: &str) -> Result<EndpointStatus, Error> {
        let op = Op::Status;
        let timeout = self.inner.timeouts.request;
        let resp = self
            .on_endpoint(op, endpoint, timeout, Ctx::default(), |mut c| async move {
                c.status().await
            })
            .await?;
        let header = resp
            .header()
            .ok_or_else(|| unexpected(op, endpoint, "no response header"))?;
        let version = semver::Version::parse(resp.version())
            .map_err(|_| unexpected(op, endpoint, "unparseable server version"))?;
        Ok(EndpointStatus {
            endpoint: endpoint.to_owned(),
            cluster_id: ClusterId(header.cluster_id()),
            member_id: MemberId(header.member_id()),
            version,
            leader: MemberId(resp.leader()),
            raft_index: resp.raft_index(),
            raft_term: resp.raft_term(),
            raft_applied_index: resp.raft_applied_index(),
            revision: header.revision(),
            db_size: u64::try_from(resp.db_size()).unwrap_or_default(),
            db_size_in_use: u64::try_from(resp.raft_used_db_size()).unwrap_or_default(),
            is_learner: resp.is_learner(),
            errors: resp.errors().to_vec(),
        })
    }

    /// Checks that `endpoint` serves a linearizable read (so it has a leader and a quorum);
    /// returns the round trip. As etcdctl does, an auth refusal still counts as healthy.
    ///
    /// # Errors
    /// [`Error::NoLeader`] at once when the member knows no leader (about an election timeout
    /// after losing it; until then the read waits and ends in [`Error::Timeout`]);
    /// [`Error::Unreachable`]; [`Error::RejectedByLearner`] always on a learner (use
    /// [`status`](Self::status)).
    pub async fn health(&self, endpoint: &str) -> Result<Duration, Error> {
        let started = Instant::now();
        let timeout = self.inner.timeouts.request;
        let read = self
            .on_endpoint(
                Op::Health,
                endpoint,
                timeout,
                Ctx::default(),
                |mut c| async move {
                    c.get("health", Some(GetOptions::new().with_count_only()))
                        .await
                },
            )
            .await;
        match read {
            Ok(_) | Err(Error::PermissionDenied { .. }) => Ok(started.elapsed()),
            Err(e) => Err(e),
        }
    }

    /// Defragments `endpoint`'s backend. The member serves nothing while it runs.
    pub async fn defragment(&self, endpoint: &str) -> Result<(), Error> {
        let timeout = self.inner.timeouts.defragment;
        self.on_endpoint(
            Op::Defragment,
            endpoint,
            timeout,
            Ctx::default(),
            |mut c| async move { c.defragment().await },
        )
        .await?;
        Ok(())
    }

    /// Compacts the keyspace history up to `revision`, waiting until the compaction is applied
    /// to the backend (`physical`), so a defragmentation right after it reclaims the space.
    /// Allowed while a NOSPACE alarm is active. Sent through the configured endpoints like
    /// any cluster-wide write.
    ///
    /// # Errors
    /// [`Error::Compacted`] when the keyspace is already compacted to `revision` or beyond
    /// (an earlier attempt did it).
    pub async fn compact(&self, revision: i64) -> Result<(), Error> {
        self.on_any(Op::Compact, Ctx::default(), |mut c| async move {
            c.compact(revision, Some(CompactionOptions::new().with_physical()))
                .await
        })
        .await?;
        Ok(())
    }

    /// Active alarms across the cluster.
    pub async fn alarm_list(&self) -> Result<Vec<Alarm>, Error> {
        let (resp, _) = self
            .on_any(Op::AlarmList, Ctx::default(), |mut c| async move {
                c.alarm(AlarmAction::Get, AlarmType::None, None).await
            })
            .await?;
        Ok(resp
            .alarms()
            .iter()
            .map(|a| Alarm {
                member_id: MemberId(a.member_id()),
                kind: match a.alarm() {
                    AlarmType::Nospace => AlarmKind::NoSpace,
                    AlarmType::Corrupt => AlarmKind::Corrupt,
                    other => AlarmKind::Unknown(other as i32),
                },
            })
            .collect())
    }

    /// Deactivates every active alarm, as `etcdctl alarm disarm` does; returns those it
    /// disarmed. A NOSPACE alarm comes back unless space was freed first (compact, defragment).
    pub async fn alarm_disarm_all(&self) -> Result<Vec<Alarm>, Error> {
        self.disarm_where(|_| true).await
    }

    /// Deactivates the active alarms of `kind` only (a CORRUPT alarm is not NOSPACE's to
    /// clear); returns those it disarmed.
    pub async fn alarm_disarm(&self, kind: AlarmKind) -> Result<Vec<Alarm>, Error> {
        self.disarm_where(|a| a.kind == kind).await
    }

    async fn disarm_where(&self, pick: impl Fn(&Alarm) -> bool) -> Result<Vec<Alarm>, Error> {
        let alarms: Vec<Alarm> = self.alarm_list().await?.into_iter().filter(pick).collect();
        for alarm in &alarms {
            let kind = match alarm.kind {
                AlarmKind::NoSpace => AlarmType::Nospace,
                AlarmKind::Corrupt => AlarmType::Corrupt,
                // Unknown to this crate, so there is no etcd-client value to send.
                AlarmKind::Unknown(_) => continue,
            };
            let member = alarm.member_id;
            let ctx = Ctx {
                member: Some(member),
                ..Ctx::default()
            };
            self.on_any(Op::AlarmDisarm, ctx, |mut c| async move {
                let mut options = AlarmOptions::new();
                options.with_member(member.0);
                c.alarm(AlarmAction::Deactivate, kind, Some(options)).await
            })
            .await?;
        }
        Ok(alarms)
    }

    /// Streams a snapshot of the backend from the first configured endpoint that answers.
    /// Connect to a single endpoint to choose the member.
    ///
    /// The stream has no overall deadline; each chunk must arrive within
    /// [`Timeouts::snapshot_idle`]. It ends with [`Error::SnapshotTruncated`] if etcd closes
    /// it before announcing the last chunk.
    pub async fn snapshot(&self) -> Result<SnapshotStream, Error> {
        let (streaming, endpoint) = self
            .on_any(Op::Snapshot, Ctx::default(), |mut c| async move {
                c.snapshot().await
            })
            .await?;
        Ok(SnapshotStream::new(
            streaming,
            endpoint,
            self.inner.timeouts.snapshot_idle,
        ))
    }

    /// The status of the current leader, found through the configured endpoints.
    ///
    /// # Errors
    /// [`Error::NoLeader`] when no endpoint knows a leader; [`Error::NotLeader`] when
    /// leadership moved while looking (retry).
    pub async fn leader_status(&self) -> Result<EndpointStatus, Error> {
        let op = Op::Status;
        let mut leader = None;
        let mut no_leader = None;
        let mut failed = None;
        for endpoint in self.rotation(&[]) {
            match self.status(endpoint).await {
                Ok(status) if status.is_leader() => return Ok(status),
                Ok(status) if status.has_leader() => {
                    leader = Some(status.leader);
                    break;
                }
                Ok(_) => {
                    no_leader = Some(Error::NoLeader {
                        op,
                        endpoint: endpoint.clone(),
                        source: None,
                    })
                }
                Err(e) if e.is_failover() => failed = Some(e),
                Err(e) => return Err(e),
            }
        }
        let Some(leader) = leader else {
            // A member that answered "no leader" says more than one that did not answer.
            return Err(no_leader.or(failed).unwrap_or(Error::NoEndpoints));
        };
        let members = self.member_list().await?;
        let url = members
            .member(leader)
            .and_then(|m| m.client_urls.first())
            .ok_or(Error::MemberNotFound { id: leader })?;
        let status = self.status(url).await?;
        if !status.is_leader() {
            return Err(Error::NotLeader {
                op,
                endpoint: url.clone(),
                source: None,
            });
        }
        Ok(status)
    }

    /// Moves leadership to voter `to`, asking the current leader (only it may hand over).
    /// Returns once `to` leads; a no-op if it already does.
    ///
    /// # Errors
    /// [`Error::BadLeaderTransferee`] when `to` is not a voter; [`Error::NotLeader`] when
    /// leadership moved meanwhile (retry).
    pub async fn move_leader(&self, to: MemberId) -> Result<(), Error> {
        let leader = self.leader_status().await?;
        if leader.member_id == to {
            return Ok(());
        }
        let ctx = Ctx {
            member: Some(to),
            ..Ctx::default()
        };
        let timeout = self.inner.timeouts.request;
        self.on_endpoint(
            Op::MoveLeader,
            &leader.endpoint,
            timeout,
            ctx,
            |mut c| async move { c.move_leader(to.0).await },
        )
        .await?;
        Ok(())
    }

    /// Configured endpoints, starting with the one that answered last, those in `avoid` last.
    fn rotation(&self, avoid: &[String]) -> Vec<&String> {
        let endpoints = &self.inner.endpoints;
        let start = self.inner.preferred.load(Ordering::Relaxed) % endpoints.len();
        let is_avoided = |e: &&String| avoid.iter().any(|a| same_url(a, e));
        let in_turn = endpoints.iter().cycle().skip(start).take(endpoints.len());
        let (mut order, avoided): (Vec<_>, Vec<_>) = in_turn.partition(|e| !is_avoided(e));
        order.extend(avoided);
        order
    }

    /// Runs a cluster-wide call on the configured endpoints in turn (see the type's docs);
    /// returns the answer and who gave it.
    async fn on_any<T, F, Fut>(
        &self,
        op: Op,
        ctx: Ctx<'_>,
        mut call: F,
    ) -> Result<(T, String), Error>
    where
        F: FnMut(Client) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        let timeout = self.inner.timeouts.request;
        let mut last_err = None;
        for endpoint in self.rotation(ctx.avoid) {
            match self
                .on_endpoint(op, endpoint, timeout, ctx, &mut call)
                .await
            {
                Ok(answer) => {
                    if let Some(index) = self.inner.endpoints.iter().position(|e| e == endpoint) {
                        self.inner.preferred.store(index, Ordering::Relaxed);
                    }
                    return Ok((answer, endpoint.clone()));
                }
                Err(e) if e.is_failover() => {
                    debug!(%op, endpoint, error = %e, "trying the next endpoint");
                    last_err = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(last_err.unwrap_or(Error::NoEndpoints))
    }

    /// Runs one call on `endpoint` within `timeout`, mapping what etcd-client returns.
    async fn on_endpoint<T, F, Fut>(
        &self,
        op: Op,
        endpoint: &str,
        timeout: Duration,
        ctx: Ctx<'_>,
        call: F,
    ) -> Result<T, Error>
    where
        F: FnOnce(Client) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        let client = self.client(endpoint, op.requires_leader()).await?;
        let err = match tokio::time::timeout(timeout, call(client)).await {
            Ok(Ok(answer)) => return Ok(answer),
            Ok(Err(e)) => error::from_client(op, endpoint, ctx.member, ctx.peer_urls, e),
            Err(_) => Error::Timeout {
                op,
                endpoint: endpoint.to_owned(),
                after: timeout,
            },
        };
        if matches!(err, Error::Unreachable { .. } | Error::Timeout { .. }) {
            self.forget(endpoint);
        }
        Err(err)
    }

    /// The channel to `endpoint`, built on first use. With `require_leader`, a member that
    /// knows no leader refuses at once ([`Error::NoLeader`]) instead of letting the call hang
    /// until its timeout.
    async fn client(&self, endpoint: &str, require_leader: bool) -> Result<Client, Error> {
        let key = (endpoint.to_owned(), require_leader);
        if let Some(client) = self.clients().get(&key) {
            return Ok(client.clone());
        }
        let mut options = ConnectOptions::new()
            .with_connect_timeout(self.inner.timeouts.connect)
            .with_require_leader(require_leader);
        // A plaintext member of a cluster moving to TLS is dialled without it (etcd-client
        // refuses TLS options for an http:// URL).
        if let Some(tls) = &self.inner.tls
            && endpoint.starts_with("https://")
        {
            options = options.with_tls(tls.to_options()?);
        }
        let client = Client::connect([endpoint], Some(options))
            .await
            .map_err(|e| self.connect_error(endpoint, e))?;
        self.clients().entry(key).or_insert(client.clone());
        Ok(client)
    }

    fn forget(&self, endpoint: &str) {
        self.clients().retain(|(e, _), _| e != endpoint);
    }

    fn clients(&self) -> std::sync::MutexGuard<'_, HashMap<(String, bool), Client>> {
        // The map holds only cheap handles; a panic elsewhere cannot leave it inconsistent.
        self.inner
            .clients
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn connect_error(&self, endpoint: &str, err: etcd_client::Error) -> Error {
        let source = error::ClientError(err);
        match (&source.0, &self.inner.tls) {
            // Building a channel does no I/O, so a transport error here is the TLS setup.
            (etcd_client::Error::TransportError(_), Some(_)) => Error::InvalidTls {
                reason: "rejected when building the connection",
                source: Some(source),
            },
            _ => Error::InvalidEndpoint {
                endpoint: endpoint.to_owned(),
                source,
            },
        }
    }
}

impl std::fmt::Debug for EtcdAdmin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdAdmin")
            .field("endpoints", &self.inner.endpoints)
            .field("tls", &self.inner.tls.is_some())
            .field("timeouts", &self.inner.timeouts)
            .finish()
    }
}

fn member_from(m: &etcd_client::Member) -> Member {
    Member {
        id: MemberId(m.id()),
        name: m.name().to_owned(),
        peer_urls: m.peer_urls().to_vec(),
        client_urls: m.client_urls().to_vec(),
        is_learner: m.is_learner(),
    }
}

fn same_url(a: &str, b: &str) -> bool {
    a.trim_end_matches('/') == b.trim_end_matches('/')
}

fn unexpected(op: Op, endpoint: &str, what: &'static str) -> Error {
    Error::UnexpectedResponse {
        op,
        endpoint: endpoint.to_owned(),
        what,
    }
}

/// A snapshot of one member's backend as a stream of chunks, in order.
///
/// Concatenated, the chunks are a file `etcdutl snapshot restore` accepts (3.5 appends a
/// sha256 that restore checks). Dropping the stream cancels the transfer.
pub struct SnapshotStream {
    endpoint: String,
    chunks: Pin<Box<dyn Stream<Item = Result<Bytes, Error>> + Send>>,
}

struct SnapshotState {
    streaming: etcd_client::SnapshotStreaming,
    endpoint: String,
    idle: Duration,
    received: u64,
    /// etcd marks the last chunk with `remaining_bytes == 0`; ending before it is truncation.
    saw_last: bool,
}

impl SnapshotStream {
    fn new(streaming: etcd_client::SnapshotStreaming, endpoint: String, idle: Duration) -> Self {
        let state = SnapshotState {
            streaming,
            endpoint: endpoint.clone(),
            idle,
            received: 0,
            saw_last: false,
        };
        let chunks = futures::stream::try_unfold(state, |mut st| async move {
            let next = tokio::time::timeout(st.idle, st.streaming.message()).await;
            match next {
                Err(_) => Err(Error::Timeout {
                    op: Op::Snapshot,
                    endpoint: st.endpoint.clone(),
                    after: st.idle,
                }),
                Ok(Err(e)) => Err(error::from_client(Op::Snapshot, &st.endpoint, None, &[], e)),
                Ok(Ok(None)) if st.saw_last => Ok(None),
                Ok(Ok(None)) => Err(Error::SnapshotTruncated {
                    endpoint: st.endpoint.clone(),
                    received: st.received,
                }),
                Ok(Ok(Some(resp))) => {
                    st.saw_last = resp.remaining_bytes() == 0;
                    let chunk = Bytes::copy_from_slice(resp.blob());
                    st.received += chunk.len() as u64;
                    Ok(Some((chunk, st)))
                }
            }
        });
        Self {
            endpoint,
            chunks: Box::pin(chunks),
        }
    }

    /// The member the snapshot comes from.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Writes the whole snapshot to `path` (via `path.part`, fsynced, then renamed, so `path`
    /// only ever holds a complete snapshot). Returns the bytes written.
    ///
    /// # Errors
    /// The stream's errors, or [`Error::WriteSnapshot`]; the partial file is removed.
    pub async fn write_to_file(mut self, path: &Path) -> Result<u64, Error> {
        let write_err = |source| Error::WriteSnapshot {
            path: path.to_owned(),
            source,
        };
        let mut part = path.as_os_str().to_owned();
        part.push(".part");
        let part = Path::new(&part);
        let mut file = tokio::fs::File::create(part).await.map_err(write_err)?;
        let written = async {
            let mut written = 0u64;
            while let Some(chunk) = self.next().await {
                let chunk = chunk?;
                file.write_all(&chunk).await.map_err(write_err)?;
                written += chunk.len() as u64;
            }
            file.sync_all().await.map_err(write_err)?;
            Ok(written)
        }
        .await;
        match written {
            Ok(written) => {
                tokio::fs::rename(part, path).await.map_err(write_err)?;
                Ok(written)
            }
            Err(e) => {
                // Best effort: the snapshot error is what matters to the caller.
                let _ = tokio::fs::remove_file(part).await;
                Err(e)
            }
        }
    }
}

impl Stream for SnapshotStream {
    type Item = Result<Bytes, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.chunks.as_mut().poll_next(cx)
    }
}

impl std::fmt::Debug for SnapshotStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotStream")
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn connect_needs_an_endpoint() {
        let err = EtcdAdmin::connect(Vec::<String>::new(), None)
            .await
            .unwrap_err();
        assert!(matches!(err, Error::NoEndpoints));
    }

    #[tokio::test]
    async fn connect_rejects_a_malformed_url_without_dialling() {
        let err = EtcdAdmin::connect(["http://bad host:2379"], None)
            .await
            .unwrap_err();
        assert!(matches!(err, Error::InvalidEndpoint { .. }), "{err:?}");
    }

    #[tokio::test]
    async fn connect_checks_tls_material_first() {
        let tls = TlsConfig::new("not pem", "not pem", "not pem");
        let err = EtcdAdmin::connect(["https://127.0.0.1:2379"], Some(tls))
            .await
            .unwrap_err();
        assert!(matches!(err, Error::InvalidTls { .. }), "{err:?}");
    }

    #[tokio::test]
    async fn a_closed_port_is_unreachable_not_a_hang() {
        // Port 1 on loopback is closed on any sane test machine.
        let admin = EtcdAdmin::connect(["http://127.0.0.1:1"], None)
            .await
            .unwrap();
        let err = admin.status("http://127.0.0.1:1").await.unwrap_err();
        assert!(matches!(err, Error::Unreachable { .. }), "{err:?}");
        assert!(err.is_retryable());
    }
}
