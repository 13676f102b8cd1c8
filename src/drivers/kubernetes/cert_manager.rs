//! `spec.tls.certManager`: the three cert-manager `Certificate` objects (server, peer,
//! client) the operator keeps for a cluster, written with server-side apply and owned by
//! the EtcdCluster. cert-manager writes their Secrets (`<cluster>-cm-*`), which the
//! operator then treats like `spec.tls.secrets`. No cert-manager crate: the objects are
//! plain JSON of the `cert-manager.io/v1` shape, so the operator runs without it and says
//! so when the API server has no such resource.

use kube::api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use kube::{Api, Client, Resource};
use serde_json::{Value, json};

use crate::api::EtcdCluster;
use crate::api::tls::CertManagerTls;
use crate::certs::provided::RequiredNames;
use crate::reconcile::certificates::CertManagerError;
use crate::runtime::pods::FIELD_MANAGER;

/// cert-manager's Certificate resource.
fn resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("cert-manager.io", "v1", "Certificate"),
        "certificates",
    )
}

/// The Certificates of `cluster` for `request`, by name: what each Secret must carry (the
/// names members are dialled at, the usages etcd checks), ECDSA P-256 keys made anew on
/// each renewal, 90 days renewed 30 days before expiry (the operator's own defaults).
pub fn certificates(
    cluster: &EtcdCluster,
    request: &CertManagerTls,
    names: &RequiredNames,
) -> Vec<(String, Value)> {
    let name = cluster.metadata.name.clone().unwrap_or_default();
    let secrets = CertManagerTls::secrets(&name);
    let owner = cluster.controller_owner_ref(&());
    let issuer = &request.issuer_ref;
    let roles: [(&str, &str, &[String], &[&str]); 3] = [
        ("server", &secrets.server, &names.server, &["server auth"]),
        (
            "peer",
            &secrets.peer,
            &names.peer,
            &["server auth", "client auth"],
        ),
        ("client", &secrets.client, &[], &["client auth"]),
    ];
    roles
        .iter()
        .map(|(role, secret, dns_names, usages)| {
            let object_name = format!("{name}-{role}");
            let mut all_usages = vec!["digital signature", "key encipherment"];
            all_usages.extend(usages.iter());
            let object = json!({
                "apiVersion": "cert-manager.io/v1",
                "kind": "Certificate",
                "metadata": {
                    "name": object_name,
                    "namespace": cluster.metadata.namespace,
                    "labels": {
                        "app.kubernetes.io/managed-by": "etcd-operator",
                        "etcd.operator.dev/cluster": name,
                    },
                    "ownerReferences": owner.iter().collect::<Vec<_>>(),
                },
                "spec": {
                    "secretName": secret,
                    "commonName": format!("{name}-{role}"),
                    "dnsNames": dns_names,
                    "usages": all_usages,
                    "duration": "2160h",
                    "renewBefore": "720h",
                    "privateKey": {
                        "algorithm": "ECDSA",
                        "size": 256,
                        "rotationPolicy": "Always",
                    },
                    "issuerRef": {
                        "name": issuer.name,
                        "kind": issuer.kind.as_deref().unwrap_or("Issuer"),
                        "group": issuer.group.as_deref().unwrap_or("cert-manager.io"),
                    },
                },
            });
            (object_name, object)
        })
        .collect()
}

/// Applies the Certificates of `cluster`.
///
/// # Errors
/// [`CertManagerError::NotInstalled`] when the API server has no Certificate resource;
/// [`CertManagerError::Apply`] when it refused one.
pub async fn apply(
    client: &Client,
    cluster: &EtcdCluster,
    request: &CertManagerTls,
    names: &RequiredNames,
) -> Result<(), CertManagerError> {
    let namespace = cluster.metadata.namespace.clone().unwrap_or_default();
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &namespace, &resource());
    let params = PatchParams::apply(FIELD_MANAGER).force();
    for (name, object) in certificates(cluster, request, names) {
        match api.patch(&name, &params, &Patch::Apply(&object)).await {
            Ok(_) => {}
            // The resource itself is unknown: no cert-manager CRD. The API server answers
            // that with a plain-text 404 ("404 page not found"), not a NotFound Status, so
            // the code is what tells (an apply never finds a missing object: it makes it).
            Err(kube::Error::Api(s)) if s.code == 404 => {
                return Err(CertManagerError::NotInstalled);
            }
            Err(e) => {
                return Err(CertManagerError::Apply {
                    name,
                    message: e.to_string(),
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::EtcdClusterSpec;
    use crate::api::tls::IssuerRef;

    #[test]
    fn each_certificate_names_what_members_are_dialled_at_and_the_usages_etcd_checks() {
        let mut cluster = EtcdCluster::new("example", EtcdClusterSpec::new(3, "3.5.16"));
        cluster.metadata.namespace = Some("db".into());
        cluster.metadata.uid = Some("uid-1".into());
        let request = CertManagerTls {
            issuer_ref: IssuerRef {
                name: "ca-issuer".into(),
                kind: Some("ClusterIssuer".into()),
                group: None,
            },
        };
        let names = RequiredNames {
            server: vec!["*.example.db.svc".into()],
            peer: vec![
                "*.example.db.svc".into(),
                "*.example.db.svc.cluster.local".into(),
            ],
        };
        let certificates = certificates(&cluster, &request, &names);
        let by_name: std::collections::BTreeMap<&str, &Value> =
            certificates.iter().map(|(n, v)| (n.as_str(), v)).collect();
        assert_eq!(
            by_name.keys().copied().collect::<Vec<_>>(),
            ["example-client", "example-peer", "example-server"]
        );
        let peer = &by_name["example-peer"]["spec"];
        assert_eq!(peer["secretName"], "example-cm-peer");
        assert_eq!(
            peer["dnsNames"],
            json!(["*.example.db.svc", "*.example.db.svc.cluster.local"])
        );
        assert_eq!(
            peer["usages"],
            json!([
                "digital signature",
                "key encipherment",
                "server auth",
                "client auth"
            ])
        );
        assert_eq!(
            peer["issuerRef"],
            json!({"name": "ca-issuer", "kind": "ClusterIssuer", "group": "cert-manager.io"})
        );
        assert_eq!(
            (&peer["duration"], &peer["renewBefore"]),
            (&json!("2160h"), &json!("720h")),
            "90 days, renewed 30 days before expiry"
        );
        assert_eq!(
            peer["privateKey"],
            json!({"algorithm": "ECDSA", "size": 256, "rotationPolicy": "Always"})
        );
        let client = &by_name["example-client"]["spec"];
        assert_eq!(client["dnsNames"], json!([]));
        assert_eq!(
            client["usages"],
            json!(["digital signature", "key encipherment", "client auth"])
        );
        assert_eq!(
            by_name["example-server"]["metadata"]["ownerReferences"][0]["uid"],
            "uid-1"
        );
    }
}
