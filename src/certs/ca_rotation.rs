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

/// The leaves of a set: what members and clients present.
const LEAF_ENTRIES: [&str; 8] = [
    super::bundle::SERVER_CERT,
    super::bundle::SERVER_KEY,
    super::bundle::PEER_CERT,
    super::bundle::PEER_KEY,
    super::bundle::OPERATOR_CERT,
    super::bundle::OPERATOR_KEY,
    super::bundle::CLIENT_CERT,
    super::bundle::CLIENT_KEY,
];

/// What to install of a set the user provides (checked, `provided`) while members run on
/// `installed`, and the CA rotation phase that is: the set as it is when it brings no CA
/// members do not trust yet (a renewed leaf of the same CA is served without a restart);
/// otherwise the same three phases as the operator's own rotation, each installed only
/// once every running member runs with what is installed now (`members_current`):
/// 1. the installed set, trusting the installed CAs and the provided ones;
/// 2. the provided leaves, still trusting both;
/// 3. the provided set as it is.
pub fn provided_install(
    installed: &Entries,
    provided: &Entries,
    members_current: bool,
) -> (Entries, Option<CaPhase>) {
    let same = |a: &String, b: &String| a.trim() == b.trim();
    let Some(installed_ca) = installed.get(CA_CERT) else {
        return (provided.clone(), None);
    };
    let trusted = split_certificates(installed_ca);
    let wanted = provided
        .get(CA_CERT)
        .map(|c| split_certificates(c))
        .unwrap_or_default();
    let untrusted: Vec<&String> = wanted
        .iter()
        .filter(|w| !trusted.iter().any(|t| same(t, w)))
        .collect();
    if !untrusted.is_empty() {
        let mut out = installed.clone();
        let mut both = trusted.clone();
        both.extend(untrusted.into_iter().cloned());
        out.insert(CA_CERT.into(), join_certificates(&both));
        return (out, Some(CaPhase::TrustBoth));
    }
    if trusted.len() <= wanted.len() {
        // Nothing more is trusted than the set asks for: done once members restarted.
        return (
            provided.clone(),
            (!members_current).then_some(CaPhase::DropOld),
        );
    }
    let leaves_installed = LEAF_ENTRIES
        .iter()
        .all(|e| installed.get(*e) == provided.get(*e));
    match (leaves_installed, members_current) {
        (false, true) => {
            let mut out = provided.clone();
            out.insert(CA_CERT.into(), installed_ca.clone());
            (out, Some(CaPhase::IssueFromNew))
        }
        (false, false) => (installed.clone(), Some(CaPhase::TrustBoth)),
        (true, true) => (provided.clone(), Some(CaPhase::DropOld)),
        (true, false) => (installed.clone(), Some(CaPhase::IssueFromNew)),
    }
}

/// A phase that changed what is installed (`before` to `after`), as an entry of the issued
/// list: for logs and Events.
pub fn installed_phase(
    phase: Option<CaPhase>,
    before: &Entries,
    after: &Entries,
) -> Vec<super::bundle::Issued> {
    match phase {
        Some(phase) if before != after => vec![super::bundle::Issued {
            entry: CA_CERT,
            reason: phase.describe(),
            phase: Some(phase),
        }],
        _ => Vec::new(),
    }
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

    /// A complete set of a new CA, as a user would provide it (no CA key).
    fn user_set() -> Entries {
        use crate::certs::bundle::{Asked, Wanted, complete};
        let wanted = Wanted {
            cluster: "byo".into(),
            names: vec!["127.0.0.1".into()],
            leaf_lifetime: crate::certs::LEAF_LIFETIME,
            ca_lifetime: crate::certs::CA_LIFETIME,
        };
        let now = jiff::Timestamp::from_second(1_800_000_000).unwrap();
        let (mut set, _) = complete(&Entries::new(), &wanted, now, Asked::default(), true).unwrap();
        set.remove(CA_KEY);
        set
    }

    #[test]
    fn a_provided_set_of_another_ca_is_installed_in_three_phases() {
        let old = user_set();
        let new = user_set();
        let leaves_of = |set: &Entries| -> Vec<String> {
            LEAF_ENTRIES.iter().map(|e| set[*e].clone()).collect()
        };
        // 1: both CAs trusted, the old leaves kept; nothing moves until members restarted.
        let (one, phase) = provided_install(&old, &new, true);
        assert_eq!(phase, Some(CaPhase::TrustBoth));
        assert_eq!(
            split_certificates(&one[CA_CERT]),
            [old[CA_CERT].clone(), new[CA_CERT].clone()]
        );
        assert_eq!(leaves_of(&one), leaves_of(&old));
        assert_eq!(
            provided_install(&one, &new, false),
            (one.clone(), Some(CaPhase::TrustBoth))
        );
        // 2: the new leaves, both CAs still trusted.
        let (two, phase) = provided_install(&one, &new, true);
        assert_eq!(phase, Some(CaPhase::IssueFromNew));
        assert_eq!(leaves_of(&two), leaves_of(&new));
        assert_eq!(two[CA_CERT], one[CA_CERT]);
        assert_ne!(trust_stamp(&two), trust_stamp(&one));
        assert_eq!(
            provided_install(&two, &new, false),
            (two.clone(), Some(CaPhase::IssueFromNew))
        );
        // 3: the set as provided; then steady.
        assert_eq!(
            provided_install(&two, &new, true),
            (new.clone(), Some(CaPhase::DropOld))
        );
        assert_eq!(provided_install(&new, &new, true), (new.clone(), None));
        // Until members restarted, phase 3 is still under way.
        assert_eq!(
            provided_install(&new, &new, false),
            (new.clone(), Some(CaPhase::DropOld))
        );
    }

    #[test]
    fn a_renewed_leaf_of_the_same_ca_is_installed_at_once() {
        let old = user_set();
        let mut renewed = old.clone();
        renewed.insert(
            crate::certs::bundle::SERVER_CERT.into(),
            user_set()[crate::certs::bundle::SERVER_CERT].clone(),
        );
        assert_eq!(provided_install(&old, &renewed, true), (renewed, None));
        // Nothing installed yet: the set as it is.
        assert_eq!(
            provided_install(&Entries::new(), &old, false),
            (old.clone(), None)
        );
    }
}
