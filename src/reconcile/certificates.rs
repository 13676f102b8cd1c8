//! The certificates of one pass: the operator's own (issued and renewed by the runtime), or
//! the user's (`spec.tls.secrets`: read through a [`SecretReader`], checked, and installed
//! only when the whole set passes; otherwise members keep what they have).

use std::future::Future;

use jiff::Timestamp;

use crate::api::EtcdCluster;
use crate::api::tls::{CertManagerTls, TlsSecrets, TlsSpec};
use crate::certs::provided::{self, ReadSecrets, RequiredNames};
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

    /// Asks cert-manager for `cluster`'s certificates (`spec.tls.certManager`): makes its
    /// `Certificate` objects say what `names` requires. Only the Kubernetes driver can.
    ///
    /// # Errors
    /// [`CertManagerError`]: a problem for the `TLS` condition, not a failed pass.
    fn request_certificates(
        &self,
        cluster: &EtcdCluster,
        request: &CertManagerTls,
        names: &RequiredNames,
    ) -> impl Future<Output = Result<(), CertManagerError>> + Send {
        let _ = (cluster, request, names);
        async { Err(CertManagerError::Unsupported) }
    }
}

/// Why the operator could not ask cert-manager for certificates.
#[derive(Debug, thiserror::Error)]
pub enum CertManagerError {
    #[error(
        "spec.tls.certManager works on Kubernetes only; use spec.tls.secrets (or the operator's own CA) here"
    )]
    Unsupported,
    #[error(
        "cert-manager is not installed: the API server has no Certificate resource (cert-manager.io/v1); install cert-manager, or use spec.tls.secrets"
    )]
    NotInstalled,
    #[error("applying cert-manager Certificate {name}: {message}")]
    Apply { name: String, message: String },
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
    let tls = cluster.spec.tls.as_ref();
    let Some(provided) = TlsSpec::provided_secrets(tls, &cref.name) else {
        let installed = runtime
            .ensure_certificates(cref, CertificateSource::Issue { asked })
            .await?;
        return Ok(PassCertificates {
            installed: Some(installed),
            ..Default::default()
        });
    };
    let provided = &provided;
    let wanted = runtime.provided_certificate_names(cref);
    let mut problems: Vec<String> = Vec::new();
    if let Some(request) = tls.and_then(|t| t.cert_manager.as_ref())
        && let Err(e) = secrets
            .request_certificates(cluster, request, &wanted)
            .await
    {
        problems.push(e.to_string());
        return installed_only(runtime, cref, provided, problems).await;
    }
    let names: Vec<&str> = provided.named().into_iter().map(|(_, n)| n).collect();
    let read = secrets.read_secrets(&cref.namespace, &names).await?;
    // A cluster that never formed has no member trusting anything yet.
    let formed = cluster
        .status
        .as_ref()
        .is_some_and(|s| s.cluster_id.is_some());
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
    installed_only(runtime, cref, provided, problems).await
}

/// What is installed now, with the problems that kept the user's set from members.
async fn installed_only<R: MemberRuntime>(
    runtime: &R,
    cref: &ClusterRef,
    provided: &TlsSecrets,
    problems: Vec<String>,
) -> Result<PassCertificates, Error> {
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
