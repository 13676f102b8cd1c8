//! A Kubernetes cluster's TLS material in four Secrets, owned by its EtcdCluster:
//! `<cluster>-ca` (CA certificate and key; the operator's alone), `<cluster>-member-tls`
//! (what members mount), `<cluster>-operator-tls` (the operator's client identity) and
//! `<cluster>-client-tls` (for applications, in the cert-manager shape `tls.crt`,
//! `tls.key`, `ca.crt`).
//!
//! With certificates the user provides (`spec.tls.secrets`) only the member and operator
//! Secrets are written, from the checked set: members never mount a user's Secret
//! directly, so a bad one never reaches them.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};

use super::objects::{FIELD_MANAGER, Objects};
use crate::certs::bundle::{self, Entries, Wanted};
use crate::certs::ca_rotation;
use crate::etcd::TlsConfig;
use crate::runtime::{CertificateSource, ClusterCertificates, Error};

/// One Secret: its name suffix and (Secret key, bundle entry) pairs.
struct Layout {
    suffix: &'static str,
    keys: &'static [(&'static str, &'static str)],
    /// Written with certificates the user provides too (what members and the operator read).
    for_provided: bool,
}

const LAYOUTS: [Layout; 4] = [
    Layout {
        suffix: "-ca",
        keys: &[
            ("ca.crt", bundle::CA_CERT),
            ("ca.key", bundle::CA_KEY),
            ("ca-next.crt", ca_rotation::CA_NEXT_CERT),
            ("ca-next.key", ca_rotation::CA_NEXT_KEY),
        ],
        for_provided: false,
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
        for_provided: true,
    },
    Layout {
        suffix: "-operator-tls",
        keys: &[
            ("ca.crt", bundle::CA_CERT),
            ("tls.crt", bundle::OPERATOR_CERT),
            ("tls.key", bundle::OPERATOR_KEY),
        ],
        for_provided: true,
    },
    Layout {
        suffix: "-client-tls",
        keys: &[
            ("ca.crt", bundle::CA_CERT),
            ("tls.crt", bundle::CLIENT_CERT),
            ("tls.key", bundle::CLIENT_KEY),
        ],
        for_provided: false,
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

/// Makes the cluster's Secrets what `source` says (see
/// [`crate::runtime::MemberRuntime::ensure_certificates`]) and returns what they hold.
/// `member_stamps` (each member Pod's trust stamp) is awaited only while a CA rotation
/// waits for members; otherwise they count as current.
pub async fn ensure(
    client: &Client,
    objects: &Objects,
    source: CertificateSource<'_>,
    member_stamps: impl Future<Output = Result<Vec<Option<String>>, Error>>,
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
    // What members mount now; the member Pods are listed only while a rotation waits.
    let mounted = member_entries(&current);
    let rotating = source.waits_for_members(&mounted);
    let members_current = if rotating {
        let installed = ca_rotation::trust_stamp(&mounted);
        member_stamps.await?.iter().all(|s| *s == installed)
    } else {
        true
    };
    let mut provided_phase = None;
    let (entries, issued, provided) = match source {
        CertificateSource::Issue { asked } => {
            let wanted = Wanted {
                cluster: objects.cluster.name.clone(),
                names: objects.certificate_names(),
                leaf_lifetime: crate::certs::LEAF_LIFETIME,
                ca_lifetime: crate::certs::CA_LIFETIME,
            };
            let (entries, issued) = bundle::complete(
                &existing,
                &wanted,
                jiff::Timestamp::now(),
                asked,
                members_current,
            )
            .map_err(|source| Error::Certificates {
                cluster: objects.cluster.clone(),
                source,
            })?;
            (entries, issued, false)
        }
        CertificateSource::Provided {
            entries,
            may_change_ca,
        } => {
            // Another CA than members trust is moved to in phases (see
            // `ca_rotation::provided_install`); before any member ran, at once.
            if may_change_ca {
                (entries.clone(), Vec::new(), true)
            } else {
                let (install, phase) =
                    ca_rotation::provided_install(&mounted, entries, members_current);
                provided_phase = phase;
                let issued = ca_rotation::installed_phase(phase, &mounted, &install);
                (install, issued, true)
            }
        }
        CertificateSource::Installed => (member_entries(&current), Vec::new(), true),
    };
    let params = PatchParams::apply(FIELD_MANAGER).force();
    for (layout, data) in LAYOUTS.iter().zip(&current) {
        if provided && !layout.for_provided {
            continue;
        }
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
    let mut installed = ClusterCertificates::of(
        &entries,
        issued,
        format!("secret/{}-client-tls", objects.cluster.name),
        members_current,
    )
    .ok_or_else(|| Error::NoCertificates {
        cluster: objects.cluster.clone(),
    })?;
    if provided {
        installed.ca_phase = provided_phase;
    }
    Ok(installed)
}

/// The entries the member and operator Secrets hold (`current` in [`LAYOUTS`] order):
/// what members and the operator use now, whatever made it.
fn member_entries(current: &[BTreeMap<String, ByteString>]) -> Entries {
    let mut out = Entries::new();
    for (layout, data) in LAYOUTS.iter().zip(current) {
        if !layout.for_provided {
            continue;
        }
        for (key, entry) in layout.keys {
            if let Some(value) = data.get(*key)
                && let Ok(pem) = String::from_utf8(value.0.clone())
            {
                out.entry(entry.to_string()).or_insert(pem);
            }
        }
    }
    out
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
