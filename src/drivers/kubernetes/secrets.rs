//! Secrets a cluster's spec names (`spec.tls.secrets`), read through the API server, and
//! cert-manager's Certificates for `spec.tls.certManager` ([`super::cert_manager`]).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client};

use crate::api::EtcdCluster;
use crate::api::tls::CertManagerTls;
use crate::certs::provided::{ReadSecrets, RequiredNames};
use crate::reconcile::SecretReader;
use crate::reconcile::certificates::{CertManagerError, SecretReadError};

/// Reads Secrets with the operator's client.
pub struct KubeSecrets(pub Client);

impl SecretReader for KubeSecrets {
    async fn read_secrets(
        &self,
        namespace: &str,
        names: &[&str],
    ) -> Result<ReadSecrets, SecretReadError> {
        let api: Api<Secret> = Api::namespaced(self.0.clone(), namespace);
        let mut out = ReadSecrets::new();
        for name in names {
            let secret = api.get_opt(name).await.map_err(|e| SecretReadError {
                namespace: namespace.to_string(),
                name: name.to_string(),
                source: Box::new(e),
            })?;
            let data = secret.map(|s| {
                s.data
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, v.0))
                    .collect::<BTreeMap<_, _>>()
            });
            out.insert(name.to_string(), data);
        }
        Ok(out)
    }

    async fn request_certificates(
        &self,
        cluster: &EtcdCluster,
        request: &CertManagerTls,
        names: &RequiredNames,
    ) -> Result<(), CertManagerError> {
        super::cert_manager::apply(&self.0, cluster, request, names).await
    }
}
