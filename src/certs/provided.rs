//! Certificates a user provides in Secrets (`spec.tls.secrets`, cert-manager's shape:
//! `tls.crt`, `tls.key`, `ca.crt`): the pure check that they form one usable set, and that
//! set as bundle entries for the runtime to hand to members.
//!
//! Every problem is found at once and names the Secret it is in; a set with any problem is
//! never handed to members (they keep serving what they had).

use std::collections::BTreeMap;
use std::fmt;

use jiff::{SignedDuration, Timestamp};

use super::bundle::{self, Entries};
use super::{CertificateFacts, inspect_pem};
use crate::api::tls::TlsSecrets;

/// Below this much validity left, a provided certificate is warned about (the operator
/// cannot renew it).
pub const EXPIRY_WARNING: SignedDuration = SignedDuration::from_hours(14 * 24);

/// A Secret's data by key; `None` when the Secret does not exist.
pub type SecretData = Option<BTreeMap<String, Vec<u8>>>;

/// The Secrets `spec.tls.secrets` names, as read: name → data.
pub type ReadSecrets = BTreeMap<String, SecretData>;

/// One thing wrong, in one Secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub secret: String,
    pub problem: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret {}: {}", self.secret, self.problem)
    }
}

/// What a leaf is for: the usages and names it must have.
#[derive(Clone, Copy)]
struct Role {
    name: &'static str,
    server_auth: bool,
    client_auth: bool,
    entries: &'static [(&'static str, &'static str)],
}

const SERVER: Role = Role {
    name: "server",
    server_auth: true,
    client_auth: false,
    entries: &[(bundle::SERVER_CERT, bundle::SERVER_KEY)],
};
const PEER: Role = Role {
    name: "peer",
    server_auth: true,
    client_auth: true,
    entries: &[(bundle::PEER_CERT, bundle::PEER_KEY)],
};
/// The operator presents it, and applications are pointed at the same Secret.
const CLIENT: Role = Role {
    name: "client",
    server_auth: false,
    client_auth: true,
    entries: &[
        (bundle::OPERATOR_CERT, bundle::OPERATOR_KEY),
        (bundle::CLIENT_CERT, bundle::CLIENT_KEY),
    ],
};

/// Whether certificate name `have` (possibly a `*.` wildcard of one label) covers `want`
/// (a name, or a wildcard that only the same wildcard covers).
fn covers(have: &str, want: &str) -> bool {
    if have.eq_ignore_ascii_case(want) {
        return true;
    }
    match (have.strip_prefix("*."), want.strip_prefix("*.")) {
        (Some(suffix), None) => want
            .split_once('.')
            .is_some_and(|(label, rest)| !label.is_empty() && rest.eq_ignore_ascii_case(suffix)),
        _ => false,
    }
}

fn text(data: &BTreeMap<String, Vec<u8>>, key: &str) -> Option<String> {
    data.get(key)
        .and_then(|v| String::from_utf8(v.clone()).ok())
        .filter(|s| !s.trim().is_empty())
}

/// The names provided leaves must carry (each may be covered by a one-label wildcard).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RequiredNames {
    /// What clients dial members at.
    pub server: Vec<String>,
    /// What peers dial members at, and what a member's address resolves back to: etcd
    /// checks a peer's certificate against the reverse DNS name of its address.
    pub peer: Vec<String>,
}

/// Checks the Secrets `secrets` names (read into `read`) against each other, the names
/// members are reached by (`names`) and `now`, and
/// returns them as bundle entries (no CA key: the operator issues nothing).
///
/// # Errors
/// Every problem found, each naming its Secret: a Secret or key missing, text that is not
/// a certificate or key, a key that does not belong to its certificate, a leaf its CA did
/// not sign, Secrets that disagree on the CA, a certificate expired or not yet valid, a
/// missing usage or name.
pub fn entries(
    secrets: &TlsSecrets,
    read: &ReadSecrets,
    names: &RequiredNames,
    now: Timestamp,
) -> Result<Entries, Vec<Problem>> {
    let mut problems = Vec::new();
    let mut problem = |secret: &str, text: String| {
        problems.push(Problem {
            secret: secret.to_string(),
            problem: text,
        });
    };
    let mut data_of = |name: &str| -> Option<BTreeMap<String, Vec<u8>>> {
        match read.get(name) {
            Some(Some(data)) => Some(data.clone()),
            _ => {
                problem(name, "not found".into());
                None
            }
        }
    };
    let leaves = [
        (SERVER, secrets.server.as_str(), data_of(&secrets.server)),
        (PEER, secrets.peer.as_str(), data_of(&secrets.peer)),
        (CLIENT, secrets.client.as_str(), data_of(&secrets.client)),
    ];
    let ca_secret = secrets.ca.as_deref().map(|name| (name, data_of(name)));

    // The CA: the `ca` Secret's, or the one every leaf Secret carries.
    let mut ca: Option<(String, String)> = None;
    match &ca_secret {
        Some((name, Some(data))) => match text(data, "ca.crt").or_else(|| text(data, "tls.crt")) {
            Some(pem) => ca = Some((name.to_string(), pem)),
            None => problem(name, "has neither ca.crt nor tls.crt".into()),
        },
        Some((_, None)) => {}
        None => {
            for (role, name, data) in &leaves {
                let Some(data) = data else { continue };
                match text(data, "ca.crt") {
                    None => problem(
                        name,
                        format!(
                            "has no ca.crt ({} certificate; or name a CA Secret in spec.tls.secrets.ca)",
                            role.name
                        ),
                    ),
                    Some(pem) => match &ca {
                        None => ca = Some((name.to_string(), pem)),
                        Some((first, first_pem)) if first_pem.trim() != pem.trim() => problem(
                            name,
                            format!("ca.crt differs from Secret {first}'s: one cluster has one CA"),
                        ),
                        Some(_) => {}
                    },
                }
            }
        }
    }
    let ca_ok = match &ca {
        Some((name, pem)) => match inspect_pem(pem.as_bytes(), "ca.crt") {
            Ok(facts) if !facts.is_ca => {
                problem(name, "ca.crt is not a CA certificate".into());
                false
            }
            Ok(facts) => {
                if let Some(p) = validity_problem(&facts, now) {
                    problem(name, format!("ca.crt {p}"));
                }
                true
            }
            Err(e) => {
                problem(name, e.to_string());
                false
            }
        },
        None => false,
    };

    let mut out = Entries::new();
    if let Some((_, pem)) = &ca {
        out.insert(bundle::CA_CERT.into(), pem.clone());
    }
    for (role, name, data) in &leaves {
        let Some(data) = data else { continue };
        let (Some(cert), Some(key)) = (text(data, "tls.crt"), text(data, "tls.key")) else {
            for key in ["tls.crt", "tls.key"] {
                if text(data, key).is_none() {
                    problem(name, format!("has no {key} ({} certificate)", role.name));
                }
            }
            continue;
        };
        let facts = match inspect_pem(cert.as_bytes(), &format!("tls.crt ({})", role.name)) {
            Ok(f) => f,
            Err(e) => {
                problem(name, e.to_string());
                continue;
            }
        };
        for p in leaf_problems(
            role,
            &facts,
            &key,
            ca.as_ref().filter(|_| ca_ok),
            names,
            now,
        ) {
            problem(name, p);
        }
        for (cert_entry, key_entry) in role.entries {
            out.insert(cert_entry.to_string(), cert.clone());
            out.insert(key_entry.to_string(), key.clone());
        }
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(problems)
    }
}

fn validity_problem(facts: &CertificateFacts, now: Timestamp) -> Option<String> {
    if now >= facts.not_after {
        Some(format!("expired at {}", facts.not_after))
    } else if now < facts.not_before {
        Some(format!("is not valid before {}", facts.not_before))
    } else {
        None
    }
}

fn leaf_problems(
    role: &Role,
    facts: &CertificateFacts,
    key: &str,
    ca: Option<&(String, String)>,
    names: &RequiredNames,
    now: Timestamp,
) -> Vec<String> {
    let mut out = Vec::new();
    let what = role.name;
    match facts.matches_key(key.as_bytes()) {
        Ok(true) => {}
        Ok(false) => out.push(format!("tls.key is not the key of tls.crt ({what})")),
        Err(e) => out.push(format!("tls.key ({what}) is {e}")),
    }
    if let Some((ca_secret, ca_pem)) = ca
        && facts.signed_by(ca_pem.as_bytes()).ok() != Some(true)
    {
        out.push(format!(
            "tls.crt ({what}) is not signed by the CA (ca.crt of Secret {ca_secret})"
        ));
    }
    if let Some(p) = validity_problem(facts, now) {
        out.push(format!("tls.crt ({what}) {p}"));
    }
    if role.server_auth && !facts.server_auth {
        out.push(format!("tls.crt ({what}) does not allow server auth"));
    }
    if role.client_auth && !facts.client_auth {
        out.push(format!("tls.crt ({what}) does not allow client auth"));
    }
    let wanted: &[String] = match role.name {
        "server" => &names.server,
        "peer" => &names.peer,
        _ => &[],
    };
    if !wanted.is_empty() {
        let missing: Vec<&str> = wanted
            .iter()
            .filter(|want| !facts.names.iter().any(|have| covers(have, want)))
            .map(String::as_str)
            .collect();
        if !missing.is_empty() {
            out.push(format!(
                "tls.crt ({what}) does not name {} (it names: {})",
                missing.join(", "),
                if facts.names.is_empty() {
                    "nothing".to_string()
                } else {
                    facts.names.join(", ")
                }
            ));
        }
    }
    out
}

/// The provided certificates that expire within [`EXPIRY_WARNING`] of `now`, as
/// `(entry, expiry)`, earliest first.
pub fn expiring(entries: &Entries, now: Timestamp) -> Vec<(String, Timestamp)> {
    let mut soon: Vec<_> = bundle::expiries(entries)
        .into_iter()
        .filter(|(_, at)| at.duration_since(now) < EXPIRY_WARNING)
        .collect();
    soon.sort_by_key(|(_, at)| *at);
    soon
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::certs::{Authority, LeafKind, LeafRequest};

    const NOW: i64 = 1_800_000_000;

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(secs).unwrap()
    }

    fn day() -> SignedDuration {
        SignedDuration::from_hours(24)
    }

    struct Made {
        ca: Authority,
        read: ReadSecrets,
    }

    fn secret(pairs: &[(&str, &str)]) -> SecretData {
        Some(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
                .collect(),
        )
    }

    fn leaf(ca: &Authority, kind: LeafKind, names: &[&str], issued: i64) -> (String, String) {
        let l = ca
            .issue(
                &LeafRequest {
                    kind,
                    common_name: "x".into(),
                    names: names.iter().map(|n| n.to_string()).collect(),
                    lifetime: day() * 90,
                },
                at(issued),
            )
            .unwrap();
        (l.cert_pem, l.key_pem)
    }

    /// A set as cert-manager lays it out: three Secrets, each with the CA.
    fn made() -> Made {
        let ca = Authority::generate("user-ca", at(NOW - 86_400), day() * 3650).unwrap();
        let names = ["*.db.ns.svc", "127.0.0.1"];
        let mut read = ReadSecrets::new();
        for (name, kind) in [
            ("db-server", LeafKind::Server),
            ("db-peer", LeafKind::Peer),
            ("db-client", LeafKind::Client),
        ] {
            let (cert, key) = leaf(&ca, kind, &names, NOW - 86_400);
            read.insert(
                name.into(),
                secret(&[
                    ("tls.crt", &cert),
                    ("tls.key", &key),
                    ("ca.crt", &ca.cert_pem),
                ]),
            );
        }
        Made { ca, read }
    }

    fn spec() -> TlsSecrets {
        TlsSecrets {
            server: "db-server".into(),
            peer: "db-peer".into(),
            client: "db-client".into(),
            ca: None,
        }
    }

    fn wanted() -> RequiredNames {
        let names = vec!["*.db.ns.svc".to_string(), "127.0.0.1".to_string()];
        RequiredNames {
            server: names.clone(),
            peer: names,
        }
    }

    fn problems(read: &ReadSecrets, spec: &TlsSecrets) -> Vec<String> {
        entries(spec, read, &wanted(), at(NOW))
            .unwrap_err()
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    fn set(read: &mut ReadSecrets, secret: &str, key: &str, value: &str) {
        read.get_mut(secret)
            .unwrap()
            .as_mut()
            .unwrap()
            .insert(key.into(), value.as_bytes().to_vec());
    }

    #[test]
    fn a_cert_manager_set_becomes_the_bundle_without_a_ca_key() {
        let m = made();
        let e = entries(&spec(), &m.read, &wanted(), at(NOW)).unwrap();
        assert_eq!(e[bundle::CA_CERT], m.ca.cert_pem);
        assert!(!e.contains_key(bundle::CA_KEY));
        assert_eq!(e[bundle::OPERATOR_CERT], e[bundle::CLIENT_CERT]);
        assert_eq!(e.len(), 9);
        // A wildcard covers a member name; only the same wildcard covers a wildcard.
        assert!(covers("*.db.ns.svc", "db-0.db.ns.svc"));
        assert!(!covers("*.db.ns.svc", "a.b.db.ns.svc"));
        assert!(!covers("db-0.db.ns.svc", "*.db.ns.svc"));
        assert!(covers("LOCALHOST", "localhost"));
    }

    #[test]
    fn a_missing_secret_or_key_is_named() {
        let mut m = made();
        m.read.insert("db-peer".into(), None);
        m.read
            .get_mut("db-client")
            .unwrap()
            .as_mut()
            .unwrap()
            .remove("tls.key");
        assert_eq!(
            problems(&m.read, &spec()),
            [
                "Secret db-peer: not found",
                "Secret db-client: has no tls.key (client certificate)"
            ]
        );
    }

    #[test]
    fn a_key_of_another_certificate_is_refused() {
        let mut m = made();
        let other = m.read["db-peer"].as_ref().unwrap()["tls.key"].clone();
        set(
            &mut m.read,
            "db-server",
            "tls.key",
            &String::from_utf8(other).unwrap(),
        );
        assert_eq!(
            problems(&m.read, &spec()),
            ["Secret db-server: tls.key is not the key of tls.crt (server)"]
        );
    }

    #[test]
    fn a_leaf_of_another_ca_and_disagreeing_cas_are_refused() {
        let mut m = made();
        let other = Authority::generate("other", at(NOW - 86_400), day() * 3650).unwrap();
        let (cert, key) = leaf(&other, LeafKind::Server, &["*.db.ns.svc", "127.0.0.1"], NOW);
        set(&mut m.read, "db-server", "tls.crt", &cert);
        set(&mut m.read, "db-server", "tls.key", &key);
        assert_eq!(
            problems(&m.read, &spec()),
            [
                "Secret db-server: tls.crt (server) is not signed by the CA (ca.crt of Secret db-server)"
            ]
        );
        set(&mut m.read, "db-peer", "ca.crt", &other.cert_pem);
        let p = problems(&m.read, &spec());
        assert!(
            p.contains(
                &"Secret db-peer: ca.crt differs from Secret db-server's: one cluster has one CA"
                    .to_string()
            ),
            "{p:?}"
        );
    }

    #[test]
    fn expired_not_yet_valid_and_misnamed_leaves_are_refused() {
        let mut m = made();
        let names = ["*.db.ns.svc", "127.0.0.1"];
        let (cert, key) = leaf(&m.ca, LeafKind::Peer, &names, NOW - 91 * 86_400);
        set(&mut m.read, "db-peer", "tls.crt", &cert);
        set(&mut m.read, "db-peer", "tls.key", &key);
        let (cert, key) = leaf(&m.ca, LeafKind::Client, &[], NOW + 3_600);
        set(&mut m.read, "db-client", "tls.crt", &cert);
        set(&mut m.read, "db-client", "tls.key", &key);
        let (cert, key) = leaf(&m.ca, LeafKind::Server, &["db-0.db.ns.svc"], NOW);
        set(&mut m.read, "db-server", "tls.crt", &cert);
        set(&mut m.read, "db-server", "tls.key", &key);
        let p = problems(&m.read, &spec());
        assert_eq!(p.len(), 3, "{p:?}");
        assert!(p[0].starts_with("Secret db-server: tls.crt (server) does not name *.db.ns.svc, 127.0.0.1 (it names: db-0.db.ns.svc)"), "{p:?}");
        assert!(
            p[1].starts_with("Secret db-peer: tls.crt (peer) expired at "),
            "{p:?}"
        );
        assert!(
            p[2].starts_with("Secret db-client: tls.crt (client) is not valid before "),
            "{p:?}"
        );
    }

    #[test]
    fn a_client_certificate_as_server_and_text_that_is_no_certificate_are_refused() {
        let mut m = made();
        let client = m.read["db-client"].clone();
        m.read.insert("db-server".into(), client);
        set(&mut m.read, "db-peer", "tls.crt", "hello");
        set(&mut m.read, "db-client", "tls.key", "not a key");
        let p = problems(&m.read, &spec());
        assert_eq!(
            p,
            [
                "Secret db-server: tls.crt (server) does not allow server auth",
                "Secret db-peer: tls.crt (peer) holds no PEM certificate",
                "Secret db-client: tls.key (client) is not a usable private key: no items found"
            ]
        );
    }

    #[test]
    fn a_ca_secret_replaces_each_secrets_ca_crt() {
        let mut m = made();
        for name in ["db-server", "db-peer", "db-client"] {
            m.read
                .get_mut(name)
                .unwrap()
                .as_mut()
                .unwrap()
                .remove("ca.crt");
        }
        assert_eq!(problems(&m.read, &spec()).len(), 3);
        // cert-manager's CA issuer Secret: the CA in tls.crt.
        m.read.insert(
            "db-ca".into(),
            secret(&[("tls.crt", &m.ca.cert_pem), ("tls.key", &m.ca.key_pem)]),
        );
        let with_ca = TlsSecrets {
            ca: Some("db-ca".into()),
            ..spec()
        };
        let e = entries(&with_ca, &m.read, &wanted(), at(NOW)).unwrap();
        assert_eq!(e[bundle::CA_CERT], m.ca.cert_pem);
        // A leaf as the CA is no CA.
        let server = m.read["db-server"].clone();
        m.read.insert("db-ca".into(), server);
        let p = problems(&m.read, &with_ca);
        assert_eq!(p, ["Secret db-ca: ca.crt is not a CA certificate"]);
    }

    #[test]
    fn certificates_within_fourteen_days_of_expiry_are_reported() {
        let m = made();
        let e = entries(&spec(), &m.read, &wanted(), at(NOW)).unwrap();
        // Leaves issued a day before NOW for 90 days: 89 days left.
        assert!(expiring(&e, at(NOW)).is_empty());
        let soon = expiring(&e, at(NOW + 80 * 86_400));
        let names: Vec<_> = soon.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names.len(),
            4,
            "server, peer, operator and client leaves: {names:?}"
        );
        assert!(!names.contains(&bundle::CA_CERT));
    }
}
