//! The certificates of one pass: the operator's own (issued and renewed by the runtime), or
//! the user's (`spec.tls.secrets`: read through a [`SecretReader`], checked, and installed
//! only when the whole set passes; otherwise members keep what they have).

use std::future::Future;

use jiff::Timestamp;

use crate::api::EtcdCluster;
use crate::api::tls::TlsSecrets;
use crate::certs::provided::{self, ReadSecrets};
use crate::runtime::{self, CertificateSource, ClusterCertificates, ClusterRef, MemberRuntime};

/// Reads the Secrets a cluster's spec names: Kubernetes Secrets, or the local driver's
/// `v1` Secret documents.
pub trait SecretReader: Send + Sync {
    /// The data of each Secret in `names` in `namespace`; a missing Secret is `None`.
    ///
    /// # Errors
    /// When a Secret could not be read (a missing one is not an error).
    fn read_secrets(
        &self,
        namespace: &str,
        names: &[&str],
    ) -> impl Future<Output = Result<ReadSecrets, SecretReadError>> + Send;
}

/// Reading a Secret failed (the API server did not answer, …).
#[derive(Debug, thiserror::Error)]
#[error("read Secret {namespace}/{name}")]
pub struct SecretReadError {
    pub namespace: String,
    pub name: String,
    #[source]
    pub source: Box<dyn std::error::Error + Send + Sync>,
}

/// For runtimes and tests without Secrets: every Secret is missing.
pub struct NoSecrets;

impl SecretReader for NoSecrets {
    async fn read_secrets(&self, _: &str, names: &[&str]) -> Result<ReadSecrets, SecretReadError> {
        Ok(names.iter().map(|n| (n.to_string(), None)).collect())
    }
}

/// What a pass has to dial members with, and what is wrong with what the user provided.
#[derive(Debug, Default)]
pub struct PassCertificates {
    /// `None` only when the user's set has problems and nothing was installed before.
    pub installed: Option<ClusterCertificates>,
    /// Problems of the user's set, each naming its Secret; members did not get it.
    pub problems: Vec<String>,
    /// The user's certificates within [`provided::EXPIRY_WARNING`] of expiry (the operator
    /// cannot renew them), earliest first.
    pub expiring: Vec<(String, Timestamp)>,
}

/// Errors that end the pass (a bad user set is not one: it is in
/// [`PassCertificates::problems`]).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Runtime(#[from] runtime::Error),
    #[error(transparent)]
    ReadSecrets(#[from] SecretReadError),
}

/// Makes the cluster's certificates current for this pass: issued by the runtime
/// (with what the user `asked`), or the user's set checked and installed.
///
/// # Errors
/// The runtime failing to read or write its certificates, or a Secret unreadable.
pub async fn ensure<R: MemberRuntime, S: SecretReader>(
    runtime: &R,
    secrets: &S,
    cluster: &EtcdCluster,
    cref: &ClusterRef,
    asked: crate::certs::bundle::Asked,
    now: Timestamp,
) -> Result<PassCertificates, Error> {
    let Some(provided) = cluster.spec.tls.as_ref().and_then(|t| t.secrets.as_ref()) else {
        let installed = runtime
            .ensure_certificates(cref, CertificateSource::Issue { asked })
            .await?;
        return Ok(PassCertificates {
            installed: Some(installed),
            ..Default::default()
        });
    };
    let names: Vec<&str> = provided.named().into_iter().map(|(_, n)| n).collect();
    let read = secrets.read_secrets(&cref.namespace, &names).await?;
    let wanted = runtime.provided_certificate_names(cref);
    // A cluster that never formed has no member trusting anything yet.
    let formed = cluster
        .status
        .as_ref()
        .is_some_and(|s| s.cluster_id.is_some());
    let mut problems: Vec<String> = Vec::new();
    match provided::entries(provided, &read, &wanted, now) {
        Ok(entries) => {
            let source = CertificateSource::Provided {
                entries: &entries,
                may_change_ca: !formed,
            };
            let installed = runtime.ensure_certificates(cref, source).await?;
            return Ok(PassCertificates {
                installed: Some(with_client_location(installed, provided)),
                problems,
                expiring: provided::expiring(&entries, now),
            });
        }
        Err(found) => problems.extend(found.iter().map(ToString::to_string)),
    }
    let installed = match runtime
        .ensure_certificates(cref, CertificateSource::Installed)
        .await
    {
        Ok(c) => Some(with_client_location(c, provided)),
        Err(runtime::Error::NoCertificates { .. }) => None,
        Err(e) => return Err(e.into()),
    };
    Ok(PassCertificates {
        installed,
        problems,
        expiring: Vec::new(),
    })
}

/// Applications use the client Secret the user provided.
fn with_client_location(mut c: ClusterCertificates, provided: &TlsSecrets) -> ClusterCertificates {
    c.client_location = format!("secret/{}", provided.client);
    c
}
