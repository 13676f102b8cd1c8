//! The `v1` Secret documents of the local manifests, read as the API server would serve
//! them: `stringData` merged over `data`.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;

use super::backups::namespace_of;
use crate::certs::provided::ReadSecrets;
use crate::reconcile::SecretReader;
use crate::reconcile::certificates::SecretReadError;

/// A Secret's data with its `stringData` merged in.
pub fn data_of(secret: &Secret) -> BTreeMap<String, ByteString> {
    let mut data = secret.data.clone().unwrap_or_default();
    for (k, v) in secret.string_data.iter().flatten() {
        data.insert(k.clone(), ByteString(v.clone().into_bytes()));
    }
    data
}

/// The Secret named `name` in `namespace` among `secrets`.
pub fn find<'a>(secrets: &'a [Secret], namespace: &str, name: &str) -> Option<&'a Secret> {
    secrets.iter().find(|s| {
        s.metadata.name.as_deref() == Some(name) && namespace_of(&s.metadata) == namespace
    })
}

/// The Secret documents of one turn of the local driver.
pub struct LocalSecrets<'a>(pub &'a [Secret]);

impl SecretReader for LocalSecrets<'_> {
    async fn read_secrets(
        &self,
        namespace: &str,
        names: &[&str],
    ) -> Result<ReadSecrets, SecretReadError> {
        Ok(names
            .iter()
            .map(|name| {
                let data = find(self.0, namespace, name).map(|s| {
                    data_of(s)
                        .into_iter()
                        .map(|(k, v)| (k, v.0))
                        .collect::<BTreeMap<_, _>>()
                });
                (name.to_string(), data)
            })
            .collect())
    }
}
