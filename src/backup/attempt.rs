//! One backup attempt, the same for both runtimes: connect to the members the driver found
//! serving ([`crate::plan::backup::backup_endpoints`]), take the snapshot ([`take_backup`]:
//! a healthy follower first, its digest computed as it streams), with `verify` read it back
//! and check it ([`super::verify`]; an object that fails is deleted and the attempt fails),
//! then, only after a success, abort the multipart uploads an earlier crashed attempt left
//! and apply the retention policy. Which cluster, Secret and schedule apply is each driver's (the API
//! server or the YAML files); everything from the connection on happens here, in this order.

use jiff::Timestamp;
use tracing::{info, warn};

use super::take::Owner;
use super::verify::{Verifier, verify_backup};
use super::{Error, StaticCredentials, abort_stale_uploads, apply_retention, take_backup};
use crate::api::backup::{BackupRecord, Retention, S3Destination};
use crate::error_chain::error_chain;
use crate::etcd::{EtcdAdmin, TlsConfig};

/// What one attempt needs.
pub struct Attempt<'a> {
    /// Client URLs of the cluster's healthy members.
    pub endpoints: Vec<String>,
    /// The operator's client certificate for a cluster serving TLS.
    pub tls: Option<TlsConfig>,
    pub destination: &'a S3Destination,
    /// From the named Secret; `None` uses the default AWS chain.
    pub credentials: Option<StaticCredentials>,
    /// Whose backup it is: its folder and its objects' metadata.
    pub owner: Owner<'a>,
    pub retention: Option<&'a Retention>,
    /// Verify the upload (`spec.verify`) with this.
    pub verify: Option<&'a Verifier>,
}

/// A stored backup and what retention did after it.
#[derive(Debug)]
pub struct Outcome {
    pub record: BackupRecord,
    /// `None` without a retention policy; the keys deleted, or why pruning failed (the
    /// backup still counts, the next success tries again).
    pub pruned: Option<Result<Vec<String>, Error>>,
}

/// Runs one attempt (see the module docs).
///
/// # Errors
/// The backup's failure ([`take_backup`]'s, or no member to connect to); nothing was deleted.
pub async fn run(attempt: Attempt<'_>) -> Result<Outcome, Error> {
    let Attempt {
        endpoints,
        tls,
        destination,
        credentials,
        owner,
        retention,
        verify,
    } = attempt;
    let cluster = owner.cluster;
    let scope = owner.scope(destination.prefix.as_deref());
    let tls = TlsConfig::for_endpoints(&endpoints, tls.as_ref());
    let admin = EtcdAdmin::connect(endpoints, tls.clone())
        .await
        .map_err(|e| Error::NoHealthyMember { last: Some(e) })?;
    let s3 = super::client(&destination.connection, credentials).await;
    let mut record = take_backup(&admin, tls.as_ref(), &s3, destination, &owner).await?;
    info!(
        cluster,
        key = %record.key,
        bytes = record.size,
        mb_per_s = format!("{:.1}", record.mb_per_second),
        seconds = format!("{:.2}", record.duration_seconds),
        "backup stored"
    );
    if let Some(verifier) = verify {
        match verify_backup(&s3, &destination.bucket, &record, verifier).await {
            Ok(verification) => record.verification = Some(verification),
            Err(e) => {
                warn!(cluster, key = %record.key, error = %error_chain(&e), "backup failed verification; deleting it");
                let deleted = s3
                    .delete_object()
                    .bucket(&destination.bucket)
                    .key(&record.key)
                    .send()
                    .await;
                if let Err(delete) = deleted {
                    warn!(cluster, key = %record.key, error = %delete, "could not delete the backup that failed verification");
                }
                return Err(Error::VerificationFailed {
                    key: record.key,
                    source: Box::new(e),
                });
            }
        }
    }
    // Best effort: uploads an earlier, crashed attempt left behind.
    if let Err(e) = abort_stale_uploads(
        &s3,
        &destination.bucket,
        &scope,
        super::STALE_UPLOAD_AGE,
        Timestamp::now(),
    )
    .await
    {
        warn!(cluster, error = %error_chain(&e), "could not clean up stale multipart uploads");
    }
    let pruned = match retention {
        Some(retention) => Some(
            apply_retention(
                &s3,
                &destination.bucket,
                &scope,
                retention,
                &record.key,
                Timestamp::now(),
            )
            .await,
        ),
        None => None,
    };
    Ok(Outcome { record, pruned })
}
