//! A cluster's whole set of TLS material as named PEM entries (files in a directory, keys of
//! a Secret), and the pure decision of what to issue so that set is complete and current.

use std::collections::BTreeMap;

use jiff::Timestamp;

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

/// Every entry, certificates before their keys, the CA first.
pub const ALL: [&str; 10] = [
    CA_CERT,
    CA_KEY,
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
}

/// `existing` completed: a CA when there is none (or it is unusable or past two thirds of
/// its life: then every leaf is issued again too), and each leaf that is missing, unusable,
/// not signed by the CA, lacking a wanted name, or past two thirds of its lifetime.
/// Entries that are fine are kept byte for byte; the second value lists what changed.
/// `rotate_leaves` issues every leaf again whatever its state (a user asked for it).
///
/// # Errors
/// From issuing ([`Error::InvalidName`] for a name no certificate can carry, …).
pub fn complete(
    existing: &Entries,
    wanted: &Wanted,
    now: Timestamp,
    rotate_leaves: bool,
) -> Result<(Entries, Vec<Issued>), Error> {
    let mut out = existing.clone();
    let mut issued = Vec::new();
    let ca_reason = match (existing.get(CA_CERT), existing.get(CA_KEY)) {
        (Some(cert), Some(key)) => match inspect_pem(cert.as_bytes(), CA_CERT) {
            Ok(facts) if !facts.is_ca => Some("not a CA"),
            Ok(facts) if facts.matches_key(key.as_bytes()).ok() != Some(true) => {
                Some("key does not match")
            }
            Ok(facts) if due(facts.not_before, facts.not_after, now) => Some("renewal due"),
            Ok(_) => None,
            Err(_) => Some("unreadable"),
        },
        _ => Some("missing"),
    };
    if let Some(reason) = ca_reason {
        let ca = Authority::generate(&format!("{}-ca", wanted.cluster), now, wanted.ca_lifetime)?;
        out.insert(CA_CERT.into(), ca.cert_pem);
        out.insert(CA_KEY.into(), ca.key_pem);
        issued.push(Issued {
            entry: CA_CERT,
            reason,
        });
    }
    let ca = Authority {
        cert_pem: out[CA_CERT].clone(),
        key_pem: out[CA_KEY].clone(),
    };
    for (cert_entry, key_entry, kind, common_name) in leaves(&wanted.cluster) {
        let names: &[String] = match kind {
            LeafKind::Server | LeafKind::Peer => &wanted.names,
            LeafKind::Client => &[],
        };
        let reason = if ca_reason.is_some() {
            Some("new CA")
        } else if rotate_leaves {
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
            false,
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
        let (second, issued) =
            complete(&first, &wanted(&["127.0.0.1"]), at(1_800_000_060), false).unwrap();
        assert!(issued.is_empty(), "{issued:?}");
        assert_eq!(first, second);
    }

    #[test]
    fn leaves_are_renewed_at_two_thirds_and_when_names_change_but_the_ca_is_kept() {
        let start = 1_800_000_000;
        let (first, _) =
            complete(&Entries::new(), &wanted(&["127.0.0.1"]), at(start), false).unwrap();
        let day = 86_400;
        // 59 days into 90: not yet; 61 days: every leaf, never the CA.
        let (_, issued) =
            complete(&first, &wanted(&["127.0.0.1"]), at(start + 59 * day), false).unwrap();
        assert!(issued.is_empty(), "{issued:?}");
        let (renewed, issued) =
            complete(&first, &wanted(&["127.0.0.1"]), at(start + 61 * day), false).unwrap();
        assert_eq!(issued.len(), 4, "{issued:?}");
        assert!(issued.iter().all(|i| i.reason == "renewal due"));
        assert_eq!(renewed[CA_CERT], first[CA_CERT]);
        // A new member name: server and peer leaves only.
        let (_, issued) = complete(
            &first,
            &wanted(&["127.0.0.1", "localhost"]),
            at(start),
            false,
        )
        .unwrap();
        let entries: Vec<_> = issued.iter().map(|i| i.entry).collect();
        assert_eq!(entries, [SERVER_CERT, PEER_CERT]);
    }

    #[test]
    fn a_leaf_of_another_ca_or_a_swapped_key_is_issued_again() {
        let (mut set, _) =
            complete(&Entries::new(), &wanted(&[]), at(1_800_000_000), false).unwrap();
        let (other, _) = complete(&Entries::new(), &wanted(&[]), at(1_800_000_000), false).unwrap();
        set.insert(SERVER_CERT.into(), other[SERVER_CERT].clone());
        set.insert(SERVER_KEY.into(), other[SERVER_KEY].clone());
        set.insert(PEER_KEY.into(), set[CLIENT_KEY].clone());
        let (_, issued) = complete(&set, &wanted(&[]), at(1_800_000_000), false).unwrap();
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
        let (set, _) = complete(&Entries::new(), &wanted(&[]), at(1_800_000_000), false).unwrap();
        let (rotated, issued) = complete(&set, &wanted(&[]), at(1_800_000_060), true).unwrap();
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

    #[test]
    fn the_earliest_expiry_is_found() {
        let (set, _) = complete(&Entries::new(), &wanted(&[]), at(1_800_000_000), false).unwrap();
        let (_, when) = earliest_expiry(&set).unwrap();
        assert_eq!(when, at(1_800_000_000) + crate::certs::LEAF_LIFETIME);
    }
}
