//! A Kubernetes cluster's TLS material in four Secrets, owned by its EtcdCluster:
//! `<cluster>-ca` (CA certificate and key; the operator's alone), `<cluster>-member-tls`
//! (what members mount), `<cluster>-operator-tls` (the operator's client identity) and
//! `<cluster>-client-tls` (for applications, in the cert-manager shape `tls.crt`,
//! `tls.key`, `ca.crt`).

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};

use super::objects::{FIELD_MANAGER, Objects};
use crate::certs::bundle::{self, Entries, Wanted};
use crate::etcd::TlsConfig;
use crate::runtime::{ClusterCertificates, Error};

/// One Secret: its name suffix and (Secret key, bundle entry) pairs.
struct Layout {
    suffix: &'static str,
    keys: &'static [(&'static str, &'static str)],
}

const LAYOUTS: [Layout; 4] = [
    Layout {
        suffix: "-ca",
        keys: &[("ca.crt", bundle::CA_CERT), ("ca.key", bundle::CA_KEY)],
    },
    Layout {
        suffix: "-member-tls",
        keys: &[
            ("ca.crt", bundle::CA_CERT),
            ("server.crt", bundle::SERVER_CERT),
            ("server.key", bundle::SERVER_KEY),
            ("peer.crt", bundle::PEER_CERT),
            ("peer.key", bundle::PEER_KEY),
        ],
    },
    Layout {
        suffix: "-operator-tls",
        keys: &[
            ("ca.crt", bundle::CA_CERT),
            ("tls.crt", bundle::OPERATOR_CERT),
            ("tls.key", bundle::OPERATOR_KEY),
        ],
    },
    Layout {
        suffix: "-client-tls",
        keys: &[
            ("ca.crt", bundle::CA_CERT),
            ("tls.crt", bundle::CLIENT_CERT),
            ("tls.key", bundle::CLIENT_KEY),
        ],
    },
];

fn secret_name(objects: &Objects, layout: &Layout) -> String {
    format!("{}{}", objects.cluster.name, layout.suffix)
}

/// The data a Secret of `layout` holds for `entries`.
fn data_of(layout: &Layout, entries: &Entries) -> BTreeMap<String, ByteString> {
    layout
        .keys
        .iter()
        .filter_map(|(key, entry)| {
            entries
                .get(*entry)
                .map(|pem| (key.to_string(), ByteString(pem.clone().into_bytes())))
        })
        .collect()
}

/// Completes the cluster's Secrets (see [`bundle::complete`]) and returns what they hold.
pub async fn ensure(
    client: &Client,
    objects: &Objects,
    rotate_leaves: bool,
) -> Result<ClusterCertificates, Error> {
    let api: Api<Secret> = Api::namespaced(client.clone(), &objects.cluster.namespace);
    let mut existing = Entries::new();
    let mut current = Vec::with_capacity(LAYOUTS.len());
    // The CA Secret first: an entry another Secret copies (ca.crt) is taken from it.
    for layout in &LAYOUTS {
        let name = secret_name(objects, layout);
        let secret = api
            .get_opt(&name)
            .await
            .map_err(|source| Error::GetSecret {
                name: name.clone(),
                source,
            })?;
        let data = secret.and_then(|s| s.data).unwrap_or_default();
        for (key, entry) in layout.keys {
            if let Some(value) = data.get(*key)
                && let Ok(pem) = String::from_utf8(value.0.clone())
            {
                existing.entry(entry.to_string()).or_insert(pem);
            }
        }
        current.push(data);
    }
    let wanted = Wanted {
        cluster: objects.cluster.name.clone(),
        names: objects.certificate_names(),
        leaf_lifetime: crate::certs::LEAF_LIFETIME,
        ca_lifetime: crate::certs::CA_LIFETIME,
    };
    let (entries, issued) =
        bundle::complete(&existing, &wanted, jiff::Timestamp::now(), rotate_leaves).map_err(
            |source| Error::Certificates {
                cluster: objects.cluster.clone(),
                source,
            },
        )?;
    let params = PatchParams::apply(FIELD_MANAGER).force();
    for (layout, data) in LAYOUTS.iter().zip(&current) {
        let want = data_of(layout, &entries);
        if &want == data {
            continue;
        }
        let name = secret_name(objects, layout);
        let secret = Secret {
            metadata: objects.meta(&name, objects.cluster_labels()),
            // `kubernetes.io/tls` requires `tls.crt` and `tls.key`: only the client
            // identities have that shape.
            type_: Some(
                if layout.keys.iter().any(|(key, _)| *key == "tls.crt") {
                    "kubernetes.io/tls"
                } else {
                    "Opaque"
                }
                .into(),
            ),
            data: Some(want),
            ..Default::default()
        };
        api.patch(&name, &params, &Patch::Apply(&secret))
            .await
            .map_err(|source| Error::ApplySecret { name, source })?;
    }
    Ok(ClusterCertificates {
        operator: TlsConfig::new(
            entries[bundle::CA_CERT].clone(),
            entries[bundle::OPERATOR_CERT].clone(),
            entries[bundle::OPERATOR_KEY].clone(),
        ),
        issued,
        expiries: bundle::expiries(&entries),
        client_location: format!("secret/{}-client-tls", objects.cluster.name),
    })
}

/// The operator's client identity for cluster `name` in `namespace` from its
/// `<cluster>-operator-tls` Secret, without issuing anything; `None` when there is none.
///
/// # Errors
/// The API server failing ([`kube::Error`]; a missing Secret is `Ok(None)`).
pub async fn operator_tls(
    client: &Client,
    namespace: &str,
    name: &str,
) -> Result<Option<TlsConfig>, kube::Error> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let Some(secret) = api.get_opt(&format!("{name}-operator-tls")).await? else {
        return Ok(None);
    };
    let data = secret.data.unwrap_or_default();
    let get = |key: &str| data.get(key).map(|v| v.0.clone());
    Ok(match (get("ca.crt"), get("tls.crt"), get("tls.key")) {
        (Some(ca), Some(cert), Some(key)) => Some(TlsConfig::new(ca, cert, key)),
        _ => None,
    })
}
