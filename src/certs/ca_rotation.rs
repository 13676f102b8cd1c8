//! Replacing a cluster's CA without a moment in which two members distrust each other, in
//! three phases, each ended by a rolling restart (etcd reads the CAs it trusts only when
//! it starts; its own certificate and key it reads again on every handshake):
//!
//! 1. [`CaPhase::TrustBoth`]: `ca.crt` holds the old and the new CA; leaves are still the
//!    old CA's; the new CA waits in `ca-next.crt`/`ca-next.key`. Members restart to trust
//!    both.
//! 2. [`CaPhase::IssueFromNew`]: once every running member trusts both, the new CA signs
//!    (its key becomes `ca.key`) and every leaf is issued again from it. Members restart
//!    so each is known to have loaded a new leaf.
//! 3. [`CaPhase::DropOld`]: once every running member runs with a new leaf, `ca.crt` holds
//!    the new CA alone. Members restart to stop trusting the old one.
//!
//! What a member runs with is its *trust stamp* ([`trust_stamp`]): the CAs it trusts and
//! which of them signed the leaves it loaded, recorded by the runtime when it starts the
//! member. A phase ends when every running member's stamp is the installed one. Pure: the
//! runtime says whether that holds; this module decides what to install.

use sha2::{Digest, Sha256};

use super::bundle::{CA_CERT, CA_KEY, Entries, SERVER_CERT};
use super::inspect_pem;

/// The CA a rotation moves to, while members learn to trust it (phase 1).
pub const CA_NEXT_CERT: &str = "ca-next.crt";
pub const CA_NEXT_KEY: &str = "ca-next.key";

/// Where a CA rotation is, as far as the installed material tells.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CaPhase {
    /// 1/3: members restart to trust the old and the new CA.
    TrustBoth,
    /// 2/3: leaves are the new CA's; members restart to load them.
    IssueFromNew,
    /// 3/3: only the new CA is trusted; members restart to forget the old one.
    DropOld,
}

impl CaPhase {
    /// PascalCase, for status and conditions.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::TrustBoth => "TrustBoth",
            Self::IssueFromNew => "IssueFromNew",
            Self::DropOld => "DropOld",
        }
    }

    /// `n/3: what happens`, for logs and Events.
    pub fn describe(self) -> &'static str {
        match self {
            Self::TrustBoth => "CA rotation 1/3: members trust the old and the new CA",
            Self::IssueFromNew => "CA rotation 2/3: every leaf issued from the new CA",
            Self::DropOld => "CA rotation 3/3: the old CA is no longer trusted",
        }
    }
}

/// Each certificate of a PEM bundle, as its own PEM text (other PEM blocks are skipped).
pub fn split_certificates(bundle: &str) -> Vec<String> {
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    let mut out = Vec::new();
    let mut rest = bundle;
    while let Some(start) = rest.find(BEGIN) {
        let Some(len) = rest[start..].find(END) else {
            break;
        };
        let end = start + len + END.len();
        out.push(format!("{}\n", &rest[start..end]));
        rest = &rest[end..];
    }
    out
}

/// The certificates joined into one bundle, in order.
pub fn join_certificates<S: AsRef<str>>(certs: &[S]) -> String {
    certs.iter().map(AsRef::as_ref).collect()
}

/// The position in `ca.crt` of the CA whose key is `ca.key`: the one that signs leaves.
/// `None` when no certificate there is a CA matching the key.
pub fn signer_index(entries: &Entries) -> Option<usize> {
    let key = entries.get(CA_KEY)?;
    split_certificates(entries.get(CA_CERT)?)
        .iter()
        .position(|pem| {
            inspect_pem(pem.as_bytes(), CA_CERT)
                .is_ok_and(|f| f.is_ca && f.matches_key(key.as_bytes()).ok() == Some(true))
        })
}

/// The phase a rotation is in, or `None` when none runs. `members_current`: every running
/// member runs with the installed [`trust_stamp`] (phase 3 is only visible through it).
pub fn phase(entries: &Entries, members_current: bool) -> Option<CaPhase> {
    if entries.contains_key(CA_NEXT_CERT) {
        return Some(CaPhase::TrustBoth);
    }
    let trusted = entries
        .get(CA_CERT)
        .map_or(0, |c| split_certificates(c).len());
    if trusted > 1 {
        return Some(CaPhase::IssueFromNew);
    }
    // One CA: done, unless members still trust the one before it.
    (!members_current && entries.contains_key(CA_KEY)).then_some(CaPhase::DropOld)
}

/// What a member started on `entries` runs with: a digest of the CAs it trusts (`ca.crt`)
/// and which of them signed its server certificate. `None` without a `ca.crt`.
///
/// Two members with the same stamp trust the same CAs and present leaves of the same CA;
/// a leaf renewed by the same CA keeps the stamp (members load it without a restart).
pub fn trust_stamp(entries: &Entries) -> Option<String> {
    let bundle = entries.get(CA_CERT)?;
    let certs = split_certificates(bundle);
    let mut digest = Sha256::new();
    for cert in &certs {
        digest.update(cert.trim().as_bytes());
        digest.update(b"\n");
    }
    let issuer = entries
        .get(SERVER_CERT)
        .and_then(|leaf| inspect_pem(leaf.as_bytes(), SERVER_CERT).ok())
        .and_then(|leaf| {
            certs
                .iter()
                .position(|ca| leaf.signed_by(ca.as_bytes()).ok() == Some(true))
        });
    let hex = hex::encode(digest.finalize());
    Some(match issuer {
        Some(i) => format!("{}-{i}", &hex[..16]),
        None => format!("{}-none", &hex[..16]),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bundle_splits_into_its_certificates_and_joins_back() {
        let a = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        let b = "-----BEGIN CERTIFICATE-----\nBBBB\n-----END CERTIFICATE-----\n";
        let bundle = format!("{a}{b}");
        let split = split_certificates(&bundle);
        assert_eq!(split, [a, b]);
        assert_eq!(join_certificates(&split), bundle);
        // Text around the blocks and a key block are not certificates.
        let noisy =
            format!("subject=x\n{a}-----BEGIN PRIVATE KEY-----\nK\n-----END PRIVATE KEY-----\n");
        assert_eq!(split_certificates(&noisy), [a]);
        assert!(split_certificates("").is_empty());
    }
}
