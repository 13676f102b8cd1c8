//! The cluster CA and the leaves it signs, ECDSA P-256 with rcgen.

use std::net::IpAddr;

use jiff::Timestamp;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

use super::Error;

/// A CA: its certificate and private key, PEM. `Debug` never prints the key.
#[derive(Clone, PartialEq, Eq)]
pub struct Authority {
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authority")
            .field("cert_pem", &format_args!("{} bytes", self.cert_pem.len()))
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

/// What a leaf is for; it decides the extended key usages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeafKind {
    /// A member's client port. Client auth too: etcd's gRPC gateway dials its own port with
    /// this certificate when client certificates are required.
    Server,
    /// A member's peer port; peers dial each other with it, so server and client auth.
    Peer,
    /// A client of etcd (the operator, applications).
    Client,
}

/// One leaf to issue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeafRequest {
    pub kind: LeafKind,
    pub common_name: String,
    /// DNS names and IP addresses (as text) it is valid for; empty for a client.
    pub names: Vec<String>,
    pub lifetime: jiff::SignedDuration,
}

/// An issued leaf: certificate and private key, PEM. `Debug` never prints the key.
#[derive(Clone, PartialEq, Eq)]
pub struct IssuedLeaf {
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for IssuedLeaf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedLeaf")
            .field("cert_pem", &format_args!("{} bytes", self.cert_pem.len()))
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

/// Certificates are back-dated by this much, so a member whose clock is a little behind the
/// operator's accepts them at once.
const BACKDATE: jiff::SignedDuration = jiff::SignedDuration::from_mins(5);

impl Authority {
    /// A new self-signed CA named `common_name`, valid from `now` for `lifetime`.
    ///
    /// # Errors
    /// [`Error::GenerateKey`], [`Error::Sign`] or [`Error::Time`].
    pub fn generate(
        common_name: &str,
        now: Timestamp,
        lifetime: jiff::SignedDuration,
    ) -> Result<Self, Error> {
        let key = KeyPair::generate().map_err(Error::GenerateKey)?;
        let params = ca_params(common_name, now, lifetime)?;
        let cert = params.self_signed(&key).map_err(|source| Error::Sign {
            what: "CA".into(),
            source,
        })?;
        Ok(Self {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// Signs a new leaf (with a new key) valid from `now` for `request.lifetime`.
    ///
    /// # Errors
    /// [`Error::ParseKey`]/[`Error::ParseCertificate`] when this CA's PEM is unusable,
    /// [`Error::InvalidName`] for a name that is neither an IP nor a DNS name, and
    /// [`Error::GenerateKey`]/[`Error::Sign`]/[`Error::Time`].
    pub fn issue(&self, request: &LeafRequest, now: Timestamp) -> Result<IssuedLeaf, Error> {
        let ca_key = KeyPair::from_pem(&self.key_pem).map_err(|source| Error::ParseKey {
            what: "the CA".into(),
            source,
        })?;
        let issuer = Issuer::from_ca_cert_pem(&self.cert_pem, ca_key).map_err(|e| {
            Error::ParseCertificate {
                what: "the CA".into(),
                reason: e.to_string(),
            }
        })?;
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, request.common_name.clone());
        params.subject_alt_names = request
            .names
            .iter()
            .map(|n| san(n))
            .collect::<Result<_, _>>()?;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = match request.kind {
            LeafKind::Server | LeafKind::Peer => vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
            LeafKind::Client => vec![ExtendedKeyUsagePurpose::ClientAuth],
        };
        (params.not_before, params.not_after) = validity(now, request.lifetime)?;
        let key = KeyPair::generate().map_err(Error::GenerateKey)?;
        let cert = params
            .signed_by(&key, &issuer)
            .map_err(|source| Error::Sign {
                what: request.common_name.clone(),
                source,
            })?;
        Ok(IssuedLeaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

fn ca_params(
    common_name: &str,
    now: Timestamp,
    lifetime: jiff::SignedDuration,
) -> Result<CertificateParams, Error> {
    let mut params = CertificateParams::default();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    (params.not_before, params.not_after) = validity(now, lifetime)?;
    Ok(params)
}

fn validity(
    now: Timestamp,
    lifetime: jiff::SignedDuration,
) -> Result<(time::OffsetDateTime, time::OffsetDateTime), Error> {
    let at = |t: Timestamp| {
        time::OffsetDateTime::from_unix_timestamp(t.as_second()).map_err(|_| Error::Time { at: t })
    };
    let from = now
        .checked_sub(BACKDATE)
        .map_err(|_| Error::Time { at: now })?;
    let until = now
        .checked_add(lifetime)
        .map_err(|_| Error::Time { at: now })?;
    Ok((at(from)?, at(until)?))
}

fn san(name: &str) -> Result<SanType, Error> {
    if let Ok(ip) = name.parse::<IpAddr>() {
        return Ok(SanType::IpAddress(ip));
    }
    let invalid = || Error::InvalidName {
        name: name.to_string(),
    };
    if !is_dns_name(name) {
        return Err(invalid());
    }
    name.try_into().map(SanType::DnsName).map_err(|_| invalid())
}

/// A DNS name a certificate may carry: dot-separated labels of letters, digits and `-`
/// (not at either end), at most 253 bytes, the first label optionally `*`.
fn is_dns_name(name: &str) -> bool {
    let label = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    let mut labels = name.split('.');
    let first_ok = labels.next().is_some_and(|l| l == "*" || label(l));
    name.len() <= 253 && first_ok && labels.all(label)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::certs::inspect_pem;

    fn now() -> Timestamp {
        Timestamp::from_second(1_800_000_000).unwrap()
    }

    #[test]
    fn leaves_carry_their_names_usages_and_lifetime() {
        let ca = Authority::generate("example-ca", now(), crate::certs::CA_LIFETIME).unwrap();
        let leaf = ca
            .issue(
                &LeafRequest {
                    kind: LeafKind::Server,
                    common_name: "example-server".into(),
                    names: vec!["127.0.0.1".into(), "*.example.db.svc".into()],
                    lifetime: crate::certs::LEAF_LIFETIME,
                },
                now(),
            )
            .unwrap();
        let facts = inspect_pem(leaf.cert_pem.as_bytes(), "leaf").unwrap();
        assert_eq!(facts.common_name.as_deref(), Some("example-server"));
        assert_eq!(facts.names, ["127.0.0.1", "*.example.db.svc"]);
        assert!(facts.server_auth && facts.client_auth);
        assert_eq!(facts.not_after, now() + crate::certs::LEAF_LIFETIME);
        assert!(facts.not_before < now());
        assert!(facts.signed_by(ca.cert_pem.as_bytes()).unwrap());
        assert!(facts.matches_key(leaf.key_pem.as_bytes()).unwrap());
        assert!(!facts.matches_key(ca.key_pem.as_bytes()).unwrap());
        let other = Authority::generate("other-ca", now(), crate::certs::CA_LIFETIME).unwrap();
        assert!(!facts.signed_by(other.cert_pem.as_bytes()).unwrap());
    }

    #[test]
    fn client_leaves_cannot_serve() {
        let ca = Authority::generate("ca", now(), crate::certs::CA_LIFETIME).unwrap();
        let leaf = ca
            .issue(
                &LeafRequest {
                    kind: LeafKind::Client,
                    common_name: "app".into(),
                    names: vec![],
                    lifetime: crate::certs::LEAF_LIFETIME,
                },
                now(),
            )
            .unwrap();
        let facts = inspect_pem(leaf.cert_pem.as_bytes(), "leaf").unwrap();
        assert!(facts.client_auth && !facts.server_auth);
        assert!(format!("{leaf:?}").contains("<redacted>"));
    }

    #[test]
    fn names_that_no_certificate_can_carry_are_refused() {
        let ca = Authority::generate("ca", now(), crate::certs::CA_LIFETIME).unwrap();
        let err = ca
            .issue(
                &LeafRequest {
                    kind: LeafKind::Server,
                    common_name: "x".into(),
                    names: vec!["not a name".into()],
                    lifetime: crate::certs::LEAF_LIFETIME,
                },
                now(),
            )
            .unwrap_err();
        assert!(matches!(err, Error::InvalidName { .. }), "{err}");
    }
}
