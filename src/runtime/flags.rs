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
/// `tls`'s certificates when the address speaks TLS.
///
/// # Errors
/// [`Error::ReservedFlag`] when `extraArgs` names a flag the runtime sets or refuses
/// ([`refused_flag`]; validation rejects such specs first, this guards callers that skipped it);
/// [`Error::MissingTlsFiles`] when the address is `https` and `tls` is `None`.
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
    flags.extend(transport_flags(address, tls)?);
    if let Some(options) = &launch.options {
        flags.extend(option_flags(options)?);
    }
    Ok(flags)
}

/// The certificate flags of a member whose address speaks TLS (none for plaintext): the
/// server and peer certificates, the cluster CA for both, and client certificates required
/// on both ports.
///
/// # Errors
/// [`Error::MissingTlsFiles`] when the address is `https` and `tls` is `None`.
pub fn transport_flags(
    address: &MemberAddress,
    tls: Option<&TlsFiles>,
) -> Result<Vec<String>, Error> {
    if Transport::of_url(&address.client_url) == Transport::Plain {
        return Ok(Vec::new());
    }
    let files = tls.ok_or_else(|| Error::MissingTlsFiles {
        name: address.name.clone(),
    })?;
    Ok(vec![
        format!("--cert-file={}", files.server_cert),
        format!("--key-file={}", files.server_key),
        format!("--trusted-ca-file={}", files.ca),
        "--client-cert-auth=true".into(),
        format!("--peer-cert-file={}", files.peer_cert),
        format!("--peer-key-file={}", files.peer_key),
        format!("--peer-trusted-ca-file={}", files.ca),
        "--peer-client-cert-auth=true".into(),
    ])
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
}
