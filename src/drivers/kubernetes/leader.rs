//! Leader election: run the controller only while this replica holds a
//! `coordination.k8s.io` Lease (kube-lease-manager renews it in the background). Losing
//! the Lease ends the work and is returned as an error, so the process exits and comes
//! back as a standby rather than racing the new leader.

use std::future::Future;

use kube::Client;
use kube_lease_manager::{LeaseManagerBuilder, LeaseManagerError};
use thiserror::Error;
use tracing::{info, warn};

/// Seconds a Lease stays valid after its last renewal; a standby takes over after that.
pub const LEASE_DURATION: u64 = 15;
/// Seconds before expiry the holder renews.
pub const LEASE_GRACE: u64 = 5;

/// Which Lease to hold.
#[derive(Clone, Debug)]
pub struct LeaseOptions {
    pub name: String,
    /// The operator's own namespace, usually.
    pub namespace: String,
}

/// Why leading stopped.
#[derive(Debug, Error)]
pub enum Error {
    #[error("setting up the lease {namespace}/{name}")]
    Setup {
        namespace: String,
        name: String,
        #[source]
        source: LeaseManagerError,
    },
    #[error("lost the lease {namespace}/{name} to another replica")]
    Lost { namespace: String, name: String },
    #[error("the lease manager stopped")]
    Stopped(#[source] LeaseManagerError),
}

/// Waits until `identity` holds the Lease (calling `on_standby` once set up), then runs
/// `work` until it ends, releasing the Lease afterwards. Returns early, without running
/// `work`, when `shutdown` resolves first.
///
/// # Errors
/// [`Error::Lost`] when the Lease went to another replica while `work` ran (`work` is
/// dropped, cancelling in-flight reconciles); [`Error::Setup`]; [`Error::Stopped`] when
/// the manager failed (releasing the Lease, or its state channel).
pub async fn while_leading(
    client: Client,
    lease: &LeaseOptions,
    identity: &str,
    shutdown: impl Future<Output = ()>,
    on_standby: impl FnOnce(),
    work: impl Future<Output = ()>,
) -> Result<(), Error> {
    let manager = LeaseManagerBuilder::new(client, &lease.name)
        .with_namespace(&lease.namespace)
        .with_identity(identity)
        .with_duration(LEASE_DURATION)
        .with_grace(LEASE_GRACE)
        .build()
        .await
        .map_err(|source| Error::Setup {
            namespace: lease.namespace.clone(),
            name: lease.name.clone(),
            source,
        })?;
    let (mut leading, task) = manager.watch().await;
    on_standby();
    info!(lease = %lease.name, identity, "waiting for leadership");
    let mut shutdown = std::pin::pin!(shutdown);
    let outcome = loop {
        if *leading.borrow_and_update() {
            break Some(());
        }
        tokio::select! {
            changed = leading.changed() => {
                if changed.is_err() {
                    // The manager's task ended; its result says why.
                    break None;
                }
            }
            () = &mut shutdown => break None,
        }
    };
    let result = match outcome {
        None => Ok(()),
        Some(()) => {
            info!(lease = %lease.name, identity, "became leader");
            let lost = async {
                while leading.changed().await.is_ok() {
                    if !*leading.borrow_and_update() {
                        return;
                    }
                }
            };
            tokio::select! {
                () = work => Ok(()),
                () = lost => {
                    warn!(lease = %lease.name, "lost leadership");
                    Err(Error::Lost {
                        namespace: lease.namespace.clone(),
                        name: lease.name.clone(),
                    })
                }
            }
        }
    };
    // Closing the channel makes the manager release the Lease, so a standby takes over
    // at once instead of after it expires.
    drop(leading);
    match task.await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => {
            result?;
            return Err(Error::Stopped(e));
        }
        Err(e) => warn!(error = %e, "lease task panicked"),
    }
    result
}
