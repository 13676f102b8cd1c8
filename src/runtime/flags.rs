//! The etcd command line, shared by both runtimes: a local member's whole command line
//! (built once at creation and reused verbatim by every restart) and the option flags the
//! pod builder puts on a member container. Only flags that etcd 3.4 and 3.5 both accept with
//! the same meaning.

use crate::api::cluster::{AutoCompactionMode, EtcdOptions};
use crate::api::validate::refused_flag;
use crate::runtime::{Error, MemberAddress, MemberLaunch, TlsFiles, Transport};

/// Started once with it, a member drops every other member and serves as a cluster of one
/// on its data (recovery from lost quorum only; never recorded, never in `extraArgs`).
pub const FORCE_NEW_CLUSTER: &str = "--force-new-cluster";

/// The flags for `launch`, listening on `address` and keeping data in `data_dir`; with
/// `tls`'s certificates when the address speaks TLS (or the launch dials TLS peers).
///
/// # Errors
/// [`Error::ReservedFlag`] when `extraArgs` names a flag the runtime sets or refuses
/// ([`refused_flag`]; validation rejects such specs first, this guards callers that skipped it);
/// [`Error::MissingTlsFiles`] when certificates are needed and `tls` is `None`.
pub fn etcd_flags(
    launch: &MemberLaunch,
    address: &MemberAddress,
    data_dir: &str,
    tls: Option<&TlsFiles>,
) -> Result<Vec<String>, Error> {
    let initial_cluster = launch
        .initial_cluster
        .iter()
        .map(|(name, url)| format!("{name}={url}"))
        .collect::<Vec<_>>()
        .join(",");
    let mut flags = vec![
        format!("--name={}", address.name),
        data_dir_flag(data_dir),
        format!("--listen-client-urls={}", address.client_url),
        format!("--advertise-client-urls={}", address.client_url),
        format!("--listen-peer-urls={}", address.peer_url),
        format!("--initial-advertise-peer-urls={}", address.peer_url),
        format!("--initial-cluster={initial_cluster}"),
        format!("--initial-cluster-state={}", launch.state.as_flag()),
        format!("--initial-cluster-token={}", launch.cluster_token),
    ];
    let transport = launch.transport.at_url(&address.client_url);
    flags.extend(transport_flags(transport, &address.name, tls)?);
    if let Some(options) = &launch.options {
        flags.extend(option_flags(options)?);
    }
    Ok(flags)
}

/// The certificate flags of a member speaking `transport`: none for plaintext; the peer
/// certificate and the cluster CA (to dial TLS peers) for [`Transport::PlainDialingTls`];
/// for TLS the server and peer certificates, the cluster CA for both, and client
/// certificates required on both ports.
///
/// # Errors
/// [`Error::MissingTlsFiles`] when certificates are needed and `tls` is `None`.
pub fn transport_flags(
    transport: Transport,
    name: &str,
    tls: Option<&TlsFiles>,
) -> Result<Vec<String>, Error> {
    if !transport.has_certificates() {
        return Ok(Vec::new());
    }
    let files = tls.ok_or_else(|| Error::MissingTlsFiles {
        name: name.to_string(),
    })?;
    let peer = [
        format!("--peer-cert-file={}", files.peer_cert),
        format!("--peer-key-file={}", files.peer_key),
        format!("--peer-trusted-ca-file={}", files.ca),
    ];
    if transport == Transport::PlainDialingTls {
        return Ok(peer.into());
    }
    let mut flags = vec![
        format!("--cert-file={}", files.server_cert),
        format!("--key-file={}", files.server_key),
        format!("--trusted-ca-file={}", files.ca),
        "--client-cert-auth=true".into(),
    ];
    flags.extend(peer);
    flags.push("--peer-client-cert-auth=true".into());
    Ok(flags)
}

/// The flags [`transport_flags`] may set, by name.
const TRANSPORT_FLAGS: [&str; 8] = [
    "cert-file",
    "key-file",
    "trusted-ca-file",
    "client-cert-auth",
    "peer-cert-file",
    "peer-key-file",
    "peer-trusted-ca-file",
    "peer-client-cert-auth",
];

/// A recorded command line moved from `from` to `to` (the same member on the same ports,
/// another scheme) speaking `transport`: its URL flags (its own `--initial-cluster` entry
/// too) name the new address, its certificate flags are those of `transport` (right after
/// `--initial-cluster-token`, where [`etcd_flags`] puts them), every other flag is kept.
///
/// # Errors
/// [`Error::MissingTlsFiles`] when certificates are needed and `tls` is `None`.
pub fn with_transport(
    flags: &[String],
    from: &MemberAddress,
    to: &MemberAddress,
    transport: Transport,
    tls: Option<&TlsFiles>,
) -> Result<Vec<String>, Error> {
    let own_entry = (
        format!("{}={}", from.name, from.peer_url),
        format!("{}={}", to.name, to.peer_url),
    );
    let mut out = Vec::with_capacity(flags.len() + TRANSPORT_FLAGS.len());
    for flag in flags {
        let (name, value) = flag
            .trim_start_matches('-')
            .split_once('=')
            .unwrap_or((flag.trim_start_matches('-'), ""));
        let rewritten = match name {
            _ if TRANSPORT_FLAGS.contains(&name) => continue,
            "listen-client-urls" | "advertise-client-urls" => {
                format!("--{name}={}", to.client_url)
            }
            "listen-peer-urls" | "initial-advertise-peer-urls" => {
                format!("--{name}={}", to.peer_url)
            }
            "initial-cluster" => format!(
                "--{name}={}",
                value
                    .split(',')
                    .map(|e| if e == own_entry.0 {
                        own_entry.1.as_str()
                    } else {
                        e
                    })
                    .collect::<Vec<_>>()
                    .join(",")
            ),
            _ => flag.clone(),
        };
        let token = name == "initial-cluster-token";
        out.push(rewritten);
        if token {
            out.extend(transport_flags(transport, &to.name, tls)?);
        }
    }
    if !flags
        .iter()
        .any(|f| f.starts_with("--initial-cluster-token="))
    {
        out.extend(transport_flags(transport, &to.name, tls)?);
    }
    Ok(out)
}

/// The `--data-dir=` flag value a member's process is recognized by in `/proc`.
pub fn data_dir_flag(data_dir: &str) -> String {
    format!("--data-dir={data_dir}")
}

/// The flags for the spec's etcd options, `extraArgs` last. The pod runtime uses them too.
///
/// # Errors
/// [`Error::ReservedFlag`] when `extraArgs` names a flag the runtime sets or refuses.
pub fn option_flags(o: &EtcdOptions) -> Result<Vec<String>, Error> {
    let mut flags = Vec::new();
    if let Some(v) = o.quota_backend_bytes {
        flags.push(format!("--quota-backend-bytes={v}"));
    }
    if let Some(mode) = o.auto_compaction_mode {
        let mode = match mode {
            AutoCompactionMode::Periodic => "periodic",
            AutoCompactionMode::Revision => "revision",
        };
        flags.push(format!("--auto-compaction-mode={mode}"));
    }
    if let Some(v) = &o.auto_compaction_retention {
        flags.push(format!("--auto-compaction-retention={v}"));
    }
    if let Some(v) = o.snapshot_count {
        flags.push(format!("--snapshot-count={v}"));
    }
    if let Some(v) = o.heartbeat_interval_ms {
        flags.push(format!("--heartbeat-interval={v}"));
    }
    if let Some(v) = o.election_timeout_ms {
        flags.push(format!("--election-timeout={v}"));
    }
    for (name, value) in &o.extra_args {
        let name = name.trim_start_matches('-');
        if refused_flag(name).is_some() {
            return Err(Error::ReservedFlag {
                flag: name.to_string(),
            });
        }
        flags.push(format!("--{name}={value}"));
    }
    Ok(flags)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::InitialClusterState;

    fn launch(options: Option<EtcdOptions>) -> MemberLaunch {
        MemberLaunch {
            name: "a".into(),
            version: semver::Version::new(3, 5, 16),
            initial_cluster: vec![
                ("a".into(), "http://127.0.0.1:1".into()),
                ("b".into(), "http://127.0.0.1:3".into()),
            ],
            state: InitialClusterState::Existing,
            cluster_token: "tok".into(),
            options,
            transport: Transport::Plain,
        }
    }

    fn address() -> MemberAddress {
        MemberAddress {
            name: "a".into(),
            peer_url: "http://127.0.0.1:1".into(),
            client_url: "http://127.0.0.1:2".into(),
        }
    }

    #[test]
    fn owned_flags_name_address_and_initial_cluster() {
        let flags = etcd_flags(&launch(None), &address(), "/s/data", None).unwrap();
        assert_eq!(
            flags,
            [
                "--name=a",
                "--data-dir=/s/data",
                "--listen-client-urls=http://127.0.0.1:2",
                "--advertise-client-urls=http://127.0.0.1:2",
                "--listen-peer-urls=http://127.0.0.1:1",
                "--initial-advertise-peer-urls=http://127.0.0.1:1",
                "--initial-cluster=a=http://127.0.0.1:1,b=http://127.0.0.1:3",
                "--initial-cluster-state=existing",
                "--initial-cluster-token=tok",
            ]
        );
    }

    #[test]
    fn options_become_flags_after_owned_ones() {
        let options = EtcdOptions {
            quota_backend_bytes: Some(1 << 30),
            auto_compaction_mode: Some(AutoCompactionMode::Revision),
            auto_compaction_retention: Some("1000".into()),
            snapshot_count: Some(5000),
            heartbeat_interval_ms: Some(50),
            election_timeout_ms: Some(500),
            extra_args: [("max-txn-ops".to_string(), "256".to_string())].into(),
        };
        let flags = etcd_flags(&launch(Some(options)), &address(), "/d", None).unwrap();
        assert_eq!(
            flags[9..],
            [
                "--quota-backend-bytes=1073741824",
                "--auto-compaction-mode=revision",
                "--auto-compaction-retention=1000",
                "--snapshot-count=5000",
                "--heartbeat-interval=50",
                "--election-timeout=500",
                "--max-txn-ops=256",
            ]
        );
    }

    #[test]
    fn extra_args_may_not_override_owned_flags() {
        let options = EtcdOptions {
            extra_args: [("--data-dir".to_string(), "/x".to_string())].into(),
            ..Default::default()
        };
        let err = etcd_flags(&launch(Some(options)), &address(), "/d", None).unwrap_err();
        assert!(matches!(err, Error::ReservedFlag { flag } if flag == "data-dir"));
    }

    #[test]
    fn a_tls_address_serves_and_requires_certificates_on_both_ports() {
        let tls_address = MemberAddress {
            name: "a".into(),
            peer_url: "https://127.0.0.1:1".into(),
            client_url: "https://127.0.0.1:2".into(),
        };
        let err = etcd_flags(&launch(None), &tls_address, "/d", None).unwrap_err();
        assert!(matches!(err, Error::MissingTlsFiles { .. }), "{err}");
        let files = TlsFiles::in_dir("/s/tls/");
        let flags = etcd_flags(&launch(None), &tls_address, "/d", Some(&files)).unwrap();
        assert_eq!(
            flags[9..],
            [
                "--cert-file=/s/tls/server.crt",
                "--key-file=/s/tls/server.key",
                "--trusted-ca-file=/s/tls/ca.crt",
                "--client-cert-auth=true",
                "--peer-cert-file=/s/tls/peer.crt",
                "--peer-key-file=/s/tls/peer.key",
                "--peer-trusted-ca-file=/s/tls/ca.crt",
                "--peer-client-cert-auth=true",
            ]
        );
        // A plaintext address ignores files it is given.
        let plain = etcd_flags(&launch(None), &address(), "/d", Some(&files)).unwrap();
        assert_eq!(plain.len(), 9);
    }

    #[test]
    fn a_plaintext_member_dialling_tls_peers_holds_only_the_peer_certificate() {
        let files = TlsFiles::in_dir("/s/tls");
        let dialing = MemberLaunch {
            transport: Transport::PlainDialingTls,
            ..launch(None)
        };
        let flags = etcd_flags(&dialing, &address(), "/d", Some(&files)).unwrap();
        assert_eq!(
            flags[9..],
            [
                "--peer-cert-file=/s/tls/peer.crt",
                "--peer-key-file=/s/tls/peer.key",
                "--peer-trusted-ca-file=/s/tls/ca.crt",
            ]
        );
        assert_eq!(flags[4], "--listen-peer-urls=http://127.0.0.1:1");
        let err = etcd_flags(&dialing, &address(), "/d", None).unwrap_err();
        assert!(matches!(err, Error::MissingTlsFiles { .. }), "{err}");
    }

    #[test]
    fn moving_a_recorded_command_line_to_tls_rewrites_urls_and_certificates_only() {
        let files = TlsFiles::in_dir("/s/tls");
        let options = EtcdOptions {
            snapshot_count: Some(5000),
            ..Default::default()
        };
        let plain = etcd_flags(&launch(Some(options.clone())), &address(), "/d", None).unwrap();
        let dialing = with_transport(
            &plain,
            &address(),
            &address(),
            Transport::PlainDialingTls,
            Some(&files),
        )
        .unwrap();
        let expected_dialing = etcd_flags(
            &MemberLaunch {
                transport: Transport::PlainDialingTls,
                ..launch(Some(options.clone()))
            },
            &address(),
            "/d",
            Some(&files),
        )
        .unwrap();
        assert_eq!(dialing, expected_dialing);
        let tls_address = MemberAddress {
            name: "a".into(),
            peer_url: "https://127.0.0.1:1".into(),
            client_url: "https://127.0.0.1:2".into(),
        };
        let tls = with_transport(
            &dialing,
            &address(),
            &tls_address,
            Transport::Tls,
            Some(&files),
        )
        .unwrap();
        let mut fresh = MemberLaunch {
            transport: Transport::Tls,
            ..launch(Some(options))
        };
        fresh.initial_cluster[0].1 = tls_address.peer_url.clone();
        assert_eq!(
            tls,
            etcd_flags(&fresh, &tls_address, "/d", Some(&files)).unwrap(),
            "the same command line a member created on TLS gets"
        );
        // Another member's entry in --initial-cluster is not this member's to change.
        assert!(
            tls.contains(
                &"--initial-cluster=a=https://127.0.0.1:1,b=http://127.0.0.1:3".to_string()
            )
        );
        // Moving again changes nothing.
        assert_eq!(
            with_transport(
                &tls,
                &tls_address,
                &tls_address,
                Transport::Tls,
                Some(&files)
            )
            .unwrap(),
            tls
        );
    }
}
