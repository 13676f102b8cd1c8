//! Certificates for etcd's client and peer TLS: a per-cluster CA made by the operator, the
//! leaves it issues ([`issue`]), and what a PEM certificate says about itself ([`inspect`]).
//!
//! Pure apart from key generation: where the PEM lives (files under the local state dir, or
//! Secrets) is each runtime's business, and which names a leaf must carry is too.

pub mod bundle;
pub mod ca_rotation;
pub mod inspect;
pub mod issue;
pub mod provided;

pub use inspect::{CertificateFacts, inspect_pem};
pub use issue::{Authority, IssuedLeaf, LeafKind, LeafRequest};

/// Default lifetime of a leaf (server, peer, client); renewed at two thirds of it.
pub const LEAF_LIFETIME: jiff::SignedDuration = jiff::SignedDuration::from_hours(90 * 24);

/// Default lifetime of a cluster's CA.
pub const CA_LIFETIME: jiff::SignedDuration = jiff::SignedDuration::from_hours(10 * 365 * 24);

/// What making or reading a certificate failed on.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("generate a key pair")]
    GenerateKey(#[source] rcgen::Error),
    #[error("the private key in {what} is not a usable PEM key")]
    ParseKey {
        what: String,
        #[source]
        source: rcgen::Error,
    },
    #[error("not a usable private key: {reason}")]
    UnusableKey { reason: String },
    #[error("{what} holds no PEM certificate")]
    NoCertificate { what: String },
    #[error("{what} is not a valid X.509 certificate: {reason}")]
    ParseCertificate { what: String, reason: String },
    #[error("{name:?} is neither an IP address nor a DNS name a certificate can carry")]
    InvalidName { name: String },
    #[error("sign the {what} certificate")]
    Sign {
        what: String,
        #[source]
        source: rcgen::Error,
    },
    #[error("time {at} is outside what a certificate can say")]
    Time { at: jiff::Timestamp },
}
