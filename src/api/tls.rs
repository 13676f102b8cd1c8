//! `spec.tls` and `status.tls` of an EtcdCluster: whether members serve TLS, and the
//! certificates the operator issued for them.
//!
//! Data only: which certificates to issue is `certs::bundle`'s decision, where they live
//! each runtime's.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// TLS for client and peer traffic. Absent: on, with certificates from a CA the operator
/// makes for this cluster.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TlsSpec {
    /// `Enabled` (the default): clients and peers must present a certificate of the
    /// cluster's CA. `Disabled`: plaintext, anyone who reaches a member reads and writes
    /// everything; reported by a warning.
    #[serde(default)]
    pub mode: TlsMode,
    /// Set (or change) to any value to issue every leaf certificate again now (server, peer
    /// and client; the CA is kept). Members serve the new ones on their next connection,
    /// without a restart; done once per value (`status.tls.rotated`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotate: Option<String>,
    /// Set (or change) to any value to replace the operator's CA, in three phases each
    /// ended by a rolling restart (one member at a time, leader last, each healthy before
    /// the next): trust the old and the new CA, issue every leaf from the new one, stop
    /// trusting the old one. Done once per value (`status.tls.caRotated`); the CA is also
    /// replaced this way when it is past two thirds of its life. Applications must take
    /// the new `ca.crt` (and client certificate) from the client Secret before the last
    /// phase ends. Not for `secrets`.
    #[serde(default, rename = "rotateCA", skip_serializing_if = "Option::is_none")]
    pub rotate_ca: Option<String>,
    /// Certificates the user provides (cert-manager's Secret shape: `tls.crt`, `tls.key`,
    /// `ca.crt`) instead of a CA the operator makes. The operator checks them on every pass
    /// and hands members only a set that passes; a Secret that changes is served on the
    /// members' next connection. Absent: the operator issues and renews everything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secrets: Option<TlsSecrets>,
    /// cert-manager issues the certificates (Kubernetes only): the operator creates three
    /// `Certificate` objects (server, peer, client) for `issuerRef`, whose Secrets
    /// (`<cluster>-cm-server`, `-cm-peer`, `-cm-client`) are then used as `secrets` are:
    /// checked on every pass, handed to members only when the set passes. The issuer must
    /// put `ca.crt` in the Secrets (a CA or Vault issuer). Without cert-manager installed the
    /// `TLS` condition says so and nothing changes.
    #[serde(
        default,
        rename = "certManager",
        skip_serializing_if = "Option::is_none"
    )]
    pub cert_manager: Option<CertManagerTls>,
}

/// Certificates from cert-manager.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CertManagerTls {
    /// The Issuer (in the cluster's namespace) or ClusterIssuer that signs them.
    pub issuer_ref: IssuerRef,
}

/// A cert-manager issuer, as `Certificate.spec.issuerRef` names it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IssuerRef {
    pub name: String,
    /// `Issuer` (the default) or `ClusterIssuer`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// `cert-manager.io` (the default), or an external issuer's group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
}

impl CertManagerTls {
    /// The Secrets cert-manager writes for cluster `cluster`, named as `secrets` would.
    pub fn secrets(cluster: &str) -> TlsSecrets {
        TlsSecrets {
            server: format!("{cluster}-cm-server"),
            peer: format!("{cluster}-cm-peer"),
            client: format!("{cluster}-cm-client"),
            ca: None,
        }
    }
}

/// Secrets in the cluster's namespace (local: `v1` Secret documents beside the cluster's)
/// holding the cluster's certificates. One CA signs all of them: every `ca.crt` (or the
/// `ca` Secret's) must be the same.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TlsSecrets {
    /// What members present to clients: `tls.crt` must name every member (Kubernetes:
    /// `*.<cluster>.<namespace>.svc`; local: `127.0.0.1`) and allow server auth.
    pub server: String,
    /// What members present to each other: the same names, server and client auth.
    pub peer: String,
    /// The client identity the operator uses (client auth); applications may share it.
    pub client: String,
    /// A Secret whose `ca.crt` is the CA; when absent each Secret's own `ca.crt` is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<String>,
}

impl TlsSecrets {
    /// Every Secret named, with its role, in a fixed order.
    pub fn named(&self) -> Vec<(&'static str, &str)> {
        let mut out = vec![
            ("server", self.server.as_str()),
            ("peer", self.peer.as_str()),
            ("client", self.client.as_str()),
        ];
        if let Some(ca) = &self.ca {
            out.push(("ca", ca.as_str()));
        }
        out
    }
}

/// Whether members serve TLS.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum TlsMode {
    #[default]
    Enabled,
    Disabled,
}

impl TlsSpec {
    /// The mode `spec.tls` asks for, `Enabled` when absent.
    pub fn mode_of(tls: Option<&TlsSpec>) -> TlsMode {
        tls.map(|t| t.mode).unwrap_or_default()
    }

    /// The `rotate` value still to act on: set, and not the one `status` says was done.
    pub fn rotation_due<'a>(
        tls: Option<&'a TlsSpec>,
        status: Option<&TlsStatus>,
    ) -> Option<&'a str> {
        let asked = tls?.rotate.as_deref()?;
        (status.and_then(|s| s.rotated.as_deref()) != Some(asked)).then_some(asked)
    }

    /// The Secrets holding the user's certificates: `secrets`, or the ones cert-manager
    /// writes for `certManager`; `None` when the operator issues them.
    pub fn provided_secrets(tls: Option<&TlsSpec>, cluster: &str) -> Option<TlsSecrets> {
        let tls = tls?;
        match (&tls.secrets, &tls.cert_manager) {
            (Some(secrets), _) => Some(secrets.clone()),
            (None, Some(_)) => Some(CertManagerTls::secrets(cluster)),
            (None, None) => None,
        }
    }

    /// The `rotateCA` value still to act on: set, and not the one `status` says was
    /// started.
    pub fn ca_rotation_due<'a>(
        tls: Option<&'a TlsSpec>,
        status: Option<&TlsStatus>,
    ) -> Option<&'a str> {
        let asked = tls?.rotate_ca.as_deref()?;
        (status.and_then(|s| s.ca_rotated.as_deref()) != Some(asked)).then_some(asked)
    }
}

/// What members serve and the certificates the operator keeps for them.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TlsStatus {
    /// `https` while any member listens with TLS (the operator dials with its certificates),
    /// `http` when every member listens plaintext.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<String>,
    /// Where applications find a client certificate, key and the CA (a Secret name on
    /// Kubernetes, a directory locally).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_certificate: Option<String>,
    /// Each certificate's expiry.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub certificates: Vec<CertificateStatus>,
    /// The `spec.tls.rotate` value the leaves were last issued for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotated: Option<String>,
    /// The `spec.tls.rotateCA` value a CA rotation was last started for.
    #[serde(default, rename = "caRotated", skip_serializing_if = "Option::is_none")]
    pub ca_rotated: Option<String>,
    /// The phase of the CA rotation under way (`TrustBoth`, `IssueFromNew`, `DropOld`);
    /// absent when none runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_rotation: Option<String>,
}

/// One certificate and when it expires.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CertificateStatus {
    /// `ca`, `server`, `peer`, `operator` or `client`.
    pub name: String,
    pub not_after: Time,
}
