//! A cluster's whole set of TLS material as named PEM entries (files in a directory, keys of
//! a Secret), and the pure decision of what to issue so that set is complete and current.

use std::collections::BTreeMap;

use jiff::Timestamp;

use super::ca_rotation::{
    CA_NEXT_CERT, CA_NEXT_KEY, CaPhase, join_certificates, signer_index, split_certificates,
};
use super::{Authority, Error, LeafKind, LeafRequest, inspect_pem};

pub const CA_CERT: &str = "ca.crt";
pub const CA_KEY: &str = "ca.key";
pub const SERVER_CERT: &str = "server.crt";
pub const SERVER_KEY: &str = "server.key";
pub const PEER_CERT: &str = "peer.crt";
pub const PEER_KEY: &str = "peer.key";
/// The operator's own client identity.
pub const OPERATOR_CERT: &str = "operator.crt";
pub const OPERATOR_KEY: &str = "operator.key";
/// The client identity handed to applications.
pub const CLIENT_CERT: &str = "client.crt";
pub const CLIENT_KEY: &str = "client.key";

/// Every entry, certificates before their keys, the CA first (and the CA a rotation
/// moves to, while it runs).
pub const ALL: [&str; 12] = [
    CA_CERT,
    CA_KEY,
    CA_NEXT_CERT,
    CA_NEXT_KEY,
    SERVER_CERT,
    SERVER_KEY,
    PEER_CERT,
    PEER_KEY,
    OPERATOR_CERT,
    OPERATOR_KEY,
    CLIENT_CERT,
    CLIENT_KEY,
];

/// Entry name → PEM text.
pub type Entries = BTreeMap<String, String>;

/// The leaves of a cluster: entry names, kind and common name.
fn leaves(cluster: &str) -> [(&'static str, &'static str, LeafKind, String); 4] {
    [
        (
            SERVER_CERT,
            SERVER_KEY,
            LeafKind::Server,
            format!("{cluster}-server"),
        ),
        (
            PEER_CERT,
            PEER_KEY,
            LeafKind::Peer,
            format!("{cluster}-peer"),
        ),
        (
            OPERATOR_CERT,
            OPERATOR_KEY,
            LeafKind::Client,
            "etcd-operator".to_string(),
        ),
        (
            CLIENT_CERT,
            CLIENT_KEY,
            LeafKind::Client,
            format!("{cluster}-client"),
        ),
    ]
}

/// What a cluster's material must satisfy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Wanted {
    /// The cluster's name, in common names.
    pub cluster: String,
    /// Every name a member is reached by (DNS names, IPs as text); server and peer leaves
    /// must carry all of them.
    pub names: Vec<String>,
    pub leaf_lifetime: jiff::SignedDuration,
    pub ca_lifetime: jiff::SignedDuration,
}

/// Why an entry was (re)issued, for logs and Events.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Issued {
    pub entry: &'static str,
    pub reason: &'static str,
    /// The CA rotation phase this change starts, if it starts one.
    pub phase: Option<CaPhase>,
}

/// What a pass is asked to do beyond keeping the set complete and current.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Asked {
    /// Issue every leaf again whatever its state (a user asked for it).
    pub rotate_leaves: bool,
    /// Start replacing the CA ([`ca_rotation`]), unless a replacement already runs.
    pub rotate_ca: bool,
}

/// `existing` completed: a CA when there is none usable (then every leaf is issued again
/// too), the next phase of a CA rotation when one is due ([`ca_rotation`]: asked for, or
/// the CA past two thirds of its life) and `members_current` says every running member
/// runs with what `existing` installs, and each leaf that is missing, unusable, not signed
/// by the signing CA, lacking a wanted name, or past two thirds of its lifetime. Entries
/// that are fine are kept byte for byte; the second value lists what changed.
///
/// # Errors
/// From issuing ([`Error::InvalidName`] for a name no certificate can carry, …).
pub fn complete(
    existing: &Entries,
    wanted: &Wanted,
    now: Timestamp,
    asked: Asked,
    members_current: bool,
) -> Result<(Entries, Vec<Issued>), Error> {
    let mut out = existing.clone();
    let mut issued = Vec::new();
    let generate =
        || Authority::generate(&format!("{}-ca", wanted.cluster), now, wanted.ca_lifetime);
    let mut new_signer = false;
    match signer_index(existing) {
        None => {
            let reason = match existing.get(CA_CERT) {
                None => "missing",
                Some(_) if !existing.contains_key(CA_KEY) => "missing",
                Some(cert) => match inspect_pem(cert.as_bytes(), CA_CERT) {
                    Ok(facts) if !facts.is_ca => "not a CA",
                    Ok(_) => "key does not match",
                    Err(_) => "unreadable",
                },
            };
            let ca = generate()?;
            out.insert(CA_CERT.into(), ca.cert_pem);
            out.insert(CA_KEY.into(), ca.key_pem);
            out.remove(CA_NEXT_CERT);
            out.remove(CA_NEXT_KEY);
            issued.push(Issued {
                entry: CA_CERT,
                reason,
                phase: None,
            });
            new_signer = true;
        }
        Some(signer) => {
            let trusted = split_certificates(&existing[CA_CERT]);
            let signer_pem = trusted[signer].clone();
            let next = match (existing.get(CA_NEXT_CERT), existing.get(CA_NEXT_KEY)) {
                (Some(cert), Some(key)) => Some(
                    inspect_pem(cert.as_bytes(), CA_NEXT_CERT)
                        .is_ok_and(|f| f.is_ca && f.matches_key(key.as_bytes()).ok() == Some(true)),
                ),
                (None, None) => None,
                _ => Some(false),
            };
            let start_trusting = |out: &mut Entries| -> Result<(), Error> {
                let ca = generate()?;
                out.insert(
                    CA_CERT.into(),
                    join_certificates(&[signer_pem.as_str(), ca.cert_pem.as_str()]),
                );
                out.insert(CA_NEXT_CERT.into(), ca.cert_pem);
                out.insert(CA_NEXT_KEY.into(), ca.key_pem);
                Ok(())
            };
            match next {
                // Phase 1 with an unusable new CA: trust a usable one instead.
                Some(false) => {
                    start_trusting(&mut out)?;
                    issued.push(Issued {
                        entry: CA_CERT,
                        reason: "CA rotation 1/3 again: the new CA was unusable",
                        phase: Some(CaPhase::TrustBoth),
                    });
                }
                // Phase 1 done: the new CA signs from now on.
                Some(true) if members_current => {
                    out.insert(CA_KEY.into(), existing[CA_NEXT_KEY].clone());
                    out.remove(CA_NEXT_CERT);
                    out.remove(CA_NEXT_KEY);
                    issued.push(Issued {
                        entry: CA_CERT,
                        reason: CaPhase::IssueFromNew.describe(),
                        phase: Some(CaPhase::IssueFromNew),
                    });
                    new_signer = true;
                }
                Some(true) => {}
                // Phase 2 done: trust the signing CA alone.
                None if trusted.len() > 1 => {
                    if members_current {
                        out.insert(CA_CERT.into(), signer_pem);
                        issued.push(Issued {
                            entry: CA_CERT,
                            reason: CaPhase::DropOld.describe(),
                            phase: Some(CaPhase::DropOld),
                        });
                    }
                }
                None => {
                    let due_by_age = inspect_pem(signer_pem.as_bytes(), CA_CERT)
                        .is_ok_and(|f| due(f.not_before, f.not_after, now));
                    if asked.rotate_ca || due_by_age {
                        start_trusting(&mut out)?;
                        issued.push(Issued {
                            entry: CA_CERT,
                            reason: if asked.rotate_ca {
                                CaPhase::TrustBoth.describe()
                            } else {
                                "CA rotation 1/3 (the CA is past two thirds of its life): members trust the old and the new CA"
                            },
                            phase: Some(CaPhase::TrustBoth),
                        });
                    }
                }
            }
        }
    }
    let signer = signer_index(&out).ok_or_else(|| Error::NoCertificate {
        what: "the signing CA".into(),
    })?;
    let ca = Authority {
        cert_pem: split_certificates(&out[CA_CERT])[signer].clone(),
        key_pem: out[CA_KEY].clone(),
    };
    for (cert_entry, key_entry, kind, common_name) in leaves(&wanted.cluster) {
        let names: &[String] = match kind {
            LeafKind::Server | LeafKind::Peer => &wanted.names,
            LeafKind::Client => &[],
        };
        let reason = if new_signer {
            Some("new CA")
        } else if asked.rotate_leaves {
            Some("rotation requested")
        } else {
            leaf_problem(&out, cert_entry, key_entry, &ca, names, now)
        };
        if let Some(reason) = reason {
            let leaf = ca.issue(
                &LeafRequest {
                    kind,
                    common_name,
                    names: names.to_vec(),
                    lifetime: wanted.leaf_lifetime,
                },
                now,
            )?;
            out.insert(cert_entry.into(), leaf.cert_pem);
            out.insert(key_entry.into(), leaf.key_pem);
            issued.push(Issued {
                entry: cert_entry,
                reason,
                phase: None,
            });
        }
    }
    Ok((out, issued))
}

/// Past two thirds of the validity window.
fn due(not_before: Timestamp, not_after: Timestamp, now: Timestamp) -> bool {
    let life = not_after.duration_since(not_before);
    let renew_at = not_before + life * 2 / 3;
    now >= renew_at
}

fn leaf_problem(
    entries: &Entries,
    cert_entry: &str,
    key_entry: &str,
    ca: &Authority,
    names: &[String],
    now: Timestamp,
) -> Option<&'static str> {
    let (Some(cert), Some(key)) = (entries.get(cert_entry), entries.get(key_entry)) else {
        return Some("missing");
    };
    let Ok(facts) = inspect_pem(cert.as_bytes(), cert_entry) else {
        return Some("unreadable");
    };
    if facts.matches_key(key.as_bytes()).ok() != Some(true) {
        return Some("key does not match");
    }
    if facts.signed_by(ca.cert_pem.as_bytes()).ok() != Some(true) {
        return Some("not signed by the CA");
    }
    if names.iter().any(|n| !facts.names.contains(n)) {
        return Some("names changed");
    }
    if due(facts.not_before, facts.not_after, now) {
        return Some("renewal due");
    }
    None
}

/// The expiry of each readable certificate in `entries`, by entry name.
pub fn expiries(entries: &Entries) -> Vec<(String, Timestamp)> {
    entries
        .iter()
        .filter(|(name, _)| name.ends_with(".crt"))
        .filter_map(|(name, pem)| {
            inspect_pem(pem.as_bytes(), name)
                .ok()
                .map(|f| (name.clone(), f.not_after))
        })
        .collect()
}

/// The earliest expiry among the certificates in `entries`, with its entry name.
pub fn earliest_expiry(entries: &Entries) -> Option<(String, Timestamp)> {
    expiries(entries).into_iter().min_by_key(|(_, t)| *t)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NONE: Asked = Asked {
        rotate_leaves: false,
        rotate_ca: false,
    };
    const LEAVES: Asked = Asked {
        rotate_leaves: true,
        rotate_ca: false,
    };
    const CA: Asked = Asked {
        rotate_leaves: false,
        rotate_ca: true,
    };

    fn wanted(names: &[&str]) -> Wanted {
        Wanted {
            cluster: "example".into(),
            names: names.iter().map(|n| n.to_string()).collect(),
            leaf_lifetime: crate::certs::LEAF_LIFETIME,
            ca_lifetime: crate::certs::CA_LIFETIME,
        }
    }

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(secs).unwrap()
    }

    #[test]
    fn an_empty_set_gets_a_ca_and_every_leaf_and_a_complete_one_is_kept() {
        let (first, issued) = complete(
            &Entries::new(),
            &wanted(&["127.0.0.1"]),
            at(1_800_000_000),
            NONE,
            true,
        )
        .unwrap();
        assert_eq!(first.len(), 10);
        assert_eq!(issued.len(), 5);
        assert!(
            issued
                .iter()
                .all(|i| i.reason == "missing" || i.reason == "new CA")
        );
        // A pass later: nothing changes.
        let (second, issued) = complete(
            &first,
            &wanted(&["127.0.0.1"]),
            at(1_800_000_060),
            NONE,
            true,
        )
        .unwrap();
        assert!(issued.is_empty(), "{issued:?}");
        assert_eq!(first, second);
    }

    #[test]
    fn leaves_are_renewed_at_two_thirds_and_when_names_change_but_the_ca_is_kept() {
        let start = 1_800_000_000;
        let (first, _) = complete(
            &Entries::new(),
            &wanted(&["127.0.0.1"]),
            at(start),
            NONE,
            true,
        )
        .unwrap();
        let day = 86_400;
        // 59 days into 90: not yet; 61 days: every leaf, never the CA.
        let (_, issued) = complete(
            &first,
            &wanted(&["127.0.0.1"]),
            at(start + 59 * day),
            NONE,
            true,
        )
        .unwrap();
        assert!(issued.is_empty(), "{issued:?}");
        let (renewed, issued) = complete(
            &first,
            &wanted(&["127.0.0.1"]),
            at(start + 61 * day),
            NONE,
            true,
        )
        .unwrap();
        assert_eq!(issued.len(), 4, "{issued:?}");
        assert!(issued.iter().all(|i| i.reason == "renewal due"));
        assert_eq!(renewed[CA_CERT], first[CA_CERT]);
        // A new member name: server and peer leaves only.
        let (_, issued) = complete(
            &first,
            &wanted(&["127.0.0.1", "localhost"]),
            at(start),
            NONE,
            true,
        )
        .unwrap();
        let entries: Vec<_> = issued.iter().map(|i| i.entry).collect();
        assert_eq!(entries, [SERVER_CERT, PEER_CERT]);
    }

    #[test]
    fn a_leaf_of_another_ca_or_a_swapped_key_is_issued_again() {
        let (mut set, _) =
            complete(&Entries::new(), &wanted(&[]), at(1_800_000_000), NONE, true).unwrap();
        let (other, _) =
            complete(&Entries::new(), &wanted(&[]), at(1_800_000_000), NONE, true).unwrap();
        set.insert(SERVER_CERT.into(), other[SERVER_CERT].clone());
        set.insert(SERVER_KEY.into(), other[SERVER_KEY].clone());
        set.insert(PEER_KEY.into(), set[CLIENT_KEY].clone());
        let (_, issued) = complete(&set, &wanted(&[]), at(1_800_000_000), NONE, true).unwrap();
        let reasons: Vec<_> = issued.iter().map(|i| (i.entry, i.reason)).collect();
        assert_eq!(
            reasons,
            [
                (SERVER_CERT, "not signed by the CA"),
                (PEER_CERT, "key does not match")
            ]
        );
    }

    #[test]
    fn a_requested_rotation_issues_every_leaf_and_keeps_the_ca() {
        let (set, _) =
            complete(&Entries::new(), &wanted(&[]), at(1_800_000_000), NONE, true).unwrap();
        let (rotated, issued) =
            complete(&set, &wanted(&[]), at(1_800_000_060), LEAVES, true).unwrap();
        assert_eq!(issued.len(), 4, "{issued:?}");
        assert!(issued.iter().all(|i| i.reason == "rotation requested"));
        assert_eq!(rotated[CA_CERT], set[CA_CERT]);
        assert_eq!(rotated[CA_KEY], set[CA_KEY]);
        for entry in [
            SERVER_CERT,
            SERVER_KEY,
            PEER_CERT,
            CLIENT_KEY,
            OPERATOR_CERT,
        ] {
            assert_ne!(rotated[entry], set[entry], "{entry}");
        }
    }

    /// The CA that signed `entry` among the certificates of `bundle`.
    fn signer_of(set: &Entries, entry: &str, bundle: &str) -> Option<usize> {
        let leaf = inspect_pem(set[entry].as_bytes(), entry).unwrap();
        split_certificates(bundle)
            .iter()
            .position(|ca| leaf.signed_by(ca.as_bytes()).unwrap())
    }

    #[test]
    fn a_ca_rotation_goes_through_three_phases_each_waiting_for_members() {
        use crate::certs::ca_rotation::{phase, trust_stamp};
        let w = wanted(&["127.0.0.1"]);
        let t = at(1_800_000_000);
        let (s0, _) = complete(&Entries::new(), &w, t, NONE, true).unwrap();
        let old_ca = s0[CA_CERT].clone();
        assert_eq!(phase(&s0, true), None);

        // Phase 1: both trusted, leaves untouched, the new CA waits.
        let (s1, issued) = complete(&s0, &w, t, CA, true).unwrap();
        assert_eq!(issued.len(), 1, "{issued:?}");
        assert_eq!(issued[0].reason, CaPhase::TrustBoth.describe());
        let trusted = split_certificates(&s1[CA_CERT]);
        assert_eq!(trusted.len(), 2);
        assert_eq!(trusted[0], old_ca);
        assert_eq!(trusted[1], s1[CA_NEXT_CERT]);
        assert_eq!(s1[CA_KEY], s0[CA_KEY]);
        for leaf in [SERVER_CERT, PEER_CERT, OPERATOR_CERT, CLIENT_CERT] {
            assert_eq!(s1[leaf], s0[leaf], "{leaf}");
        }
        assert_eq!(phase(&s1, true), Some(CaPhase::TrustBoth));
        assert_ne!(trust_stamp(&s1), trust_stamp(&s0));
        // Members not restarted yet: nothing moves, asked again or not.
        let (same, issued) = complete(&s1, &w, t, CA, false).unwrap();
        assert!(issued.is_empty(), "{issued:?}");
        assert_eq!(same, s1);

        // Phase 2: the new CA signs every leaf; both still trusted.
        let (s2, issued) = complete(&s1, &w, t, NONE, true).unwrap();
        assert_eq!(issued[0].reason, CaPhase::IssueFromNew.describe());
        assert_eq!(issued.len(), 5, "{issued:?}");
        assert_eq!(s2[CA_CERT], s1[CA_CERT]);
        assert_eq!(s2[CA_KEY], s1[CA_NEXT_KEY]);
        assert!(!s2.contains_key(CA_NEXT_CERT) && !s2.contains_key(CA_NEXT_KEY));
        for leaf in [SERVER_CERT, PEER_CERT, OPERATOR_CERT, CLIENT_CERT] {
            assert_eq!(signer_of(&s2, leaf, &s2[CA_CERT]), Some(1), "{leaf}");
        }
        assert_eq!(phase(&s2, true), Some(CaPhase::IssueFromNew));
        // Same CAs trusted, another issuer: members must restart to be known to run it.
        assert_ne!(trust_stamp(&s2), trust_stamp(&s1));
        let (same, issued) = complete(&s2, &w, t, NONE, false).unwrap();
        assert!(issued.is_empty(), "{issued:?}");
        assert_eq!(same, s2);

        // Phase 3: the new CA alone.
        let (s3, issued) = complete(&s2, &w, t, NONE, true).unwrap();
        assert_eq!(issued.len(), 1, "{issued:?}");
        assert_eq!(issued[0].reason, CaPhase::DropOld.describe());
        assert_eq!(split_certificates(&s3[CA_CERT]), [s1[CA_NEXT_CERT].clone()]);
        assert_eq!(phase(&s3, false), Some(CaPhase::DropOld));
        assert_eq!(phase(&s3, true), None);
        let (same, issued) = complete(&s3, &w, t, NONE, true).unwrap();
        assert!(issued.is_empty(), "{issued:?}");
        assert_eq!(same, s3);
    }

    #[test]
    fn an_old_ca_is_rotated_in_phases_not_replaced_at_once() {
        let w = wanted(&[]);
        let start = 1_800_000_000;
        let (s0, _) = complete(&Entries::new(), &w, at(start), NONE, true).unwrap();
        // Past two thirds of ten years: phase 1, never a new CA members do not trust.
        let later = at(start + 7 * 365 * 86_400);
        let (s1, issued) = complete(&s0, &w, later, NONE, true).unwrap();
        assert!(
            issued[0].reason.starts_with("CA rotation 1/3"),
            "{issued:?}"
        );
        assert_eq!(split_certificates(&s1[CA_CERT])[0], s0[CA_CERT]);
        assert_eq!(s1[CA_KEY], s0[CA_KEY]);
    }

    #[test]
    fn a_lost_ca_key_makes_a_new_ca_and_every_leaf() {
        let w = wanted(&[]);
        let (mut set, _) = complete(&Entries::new(), &w, at(1_800_000_000), NONE, true).unwrap();
        set.remove(CA_KEY);
        let (fresh, issued) = complete(&set, &w, at(1_800_000_000), NONE, true).unwrap();
        assert_eq!((issued[0].entry, issued[0].reason), (CA_CERT, "missing"));
        assert_eq!(issued.len(), 5);
        assert_ne!(fresh[CA_CERT], set[CA_CERT]);
    }

    #[test]
    fn the_earliest_expiry_is_found() {
        let (set, _) =
            complete(&Entries::new(), &wanted(&[]), at(1_800_000_000), NONE, true).unwrap();
        let (_, when) = earliest_expiry(&set).unwrap();
        assert_eq!(when, at(1_800_000_000) + crate::certs::LEAF_LIFETIME);
    }
}
