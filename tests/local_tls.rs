//! TLS by default on the local runtime (issue 12), against real etcd 3.4 and 3.5: a cluster
//! from a spec that says nothing about TLS serves only TLS on both ports and only to clients
//! with a certificate of its CA; `etcdctl` is refused without one and works with the
//! issued client certificate; `mode: Disabled` serves plaintext and says so.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use etcd_operator::api::EtcdClusterStatus;
use etcd_operator::api::condition;
use etcd_operator::etcd::TlsConfig;
use etcd_operator::testing::operator::*;
use etcd_operator::testing::{converged, tls, wait_for};

/// `etcdctl` of `version` with `args` against `endpoint`; its stdout, or its stderr as the
/// error.
fn etcdctl(version: &str, endpoint: &str, args: &[&str]) -> Result<String, String> {
    let bin = Path::new(&std::env::var("ETCD_BIN_DIR").expect("ETCD_BIN_DIR"))
        .join(version)
        .join("etcdctl");
    let out = Command::new(bin)
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoint}"))
        .arg("--dial-timeout=3s")
        .arg("--command-timeout=5s")
        .args(args)
        .output()
        .expect("run etcdctl");
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

fn der(pem: &[u8]) -> Vec<u8> {
    tls::der_of(pem).expect("PEM")
}

/// The certificate a member serves at `address` to a client presenting `identity`.
async fn served_certificate(address: &str, identity: &TlsConfig) -> Result<Vec<u8>, String> {
    tls::served_certificate(address, "127.0.0.1", identity)
}

fn condition_of<'a>(
    st: &'a EtcdClusterStatus,
    type_: &str,
) -> &'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
    condition::find(&st.conditions, type_).unwrap_or_else(|| panic!("no {type_} condition"))
}

async fn serves_tls_only(minor: u64) {
    let version = latest(minor);
    let mut s = Scenario::new(fast_policy());
    s.write(&cluster_yaml("secure", 3, &version, ""));
    s.start();
    let st = s.wait_running("secure", 3, &version).await;

    // Every member advertises https, and the status says where the client certificate is.
    let urls = client_urls(&st);
    assert!(
        urls.iter().all(|u| u.starts_with("https://127.0.0.1:")),
        "{urls:?}"
    );
    let tls = st.tls.clone().expect("status.tls");
    assert_eq!(tls.scheme.as_deref(), Some("https"));
    let dir = tls
        .client_certificate
        .clone()
        .expect("client certificate dir");
    let names: Vec<&str> = tls.certificates.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["ca", "client", "operator", "peer", "server"]);
    let tls_condition = condition_of(&st, condition::types::TLS);
    assert_eq!(
        (tls_condition.status.as_str(), tls_condition.reason.as_str()),
        ("True", "Serving")
    );

    // Keys are the operator's alone.
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(Path::new(&dir)), 0o700);
    for key in [
        "ca.key",
        "server.key",
        "peer.key",
        "operator.key",
        "client.key",
    ] {
        assert_eq!(mode(&Path::new(&dir).join(key)), 0o600, "{key}");
    }

    // Peers speak TLS too: etcd lists https peer URLs.
    let members = members_via_etcd(&st).await;
    for m in &members.members {
        assert!(
            m.peer_urls.iter().all(|u| u.starts_with("https://")),
            "{m:?}"
        );
    }

    // etcdctl: refused in plaintext, refused with only the CA (no client certificate),
    // served with the issued client certificate.
    let endpoint = &urls[0];
    let plain = endpoint.replacen("https://", "http://", 1);
    let put = ["put", "k", "v"];
    etcdctl(&version, &plain, &put).expect_err("plaintext is refused");
    let ca = format!("--cacert={dir}/ca.crt");
    etcdctl(&version, endpoint, &[&ca, "put", "k", "v"])
        .expect_err("a client without a certificate is refused");
    let cert = format!("--cert={dir}/client.crt");
    let key = format!("--key={dir}/client.key");
    etcdctl(&version, endpoint, &[&ca, &cert, &key, "put", "k", "v"])
        .expect("the issued client certificate is served");
    let got = etcdctl(
        &version,
        endpoint,
        &[&ca, &cert, &key, "get", "k", "--print-value-only"],
    )
    .expect("get");
    assert_eq!(got.trim(), "v");

    // A renewed leaf is a non-event: with the server certificate gone, the operator issues a
    // new one, members serve it on their next connection, and no member restarts.
    let state = s.state_dir();
    let pids: Vec<_> = members
        .members
        .iter()
        .map(|m| member_pid(&state, "secure", &m.name))
        .collect();
    let identity = converged::client_tls_in(Path::new(&dir)).expect("client identity");
    let address = endpoint.trim_start_matches("https://").to_string();
    let server_crt = Path::new(&dir).join("server.crt");
    let old = std::fs::read(&server_crt).unwrap();
    assert_eq!(
        served_certificate(&address, &identity).await.unwrap(),
        der(&old)
    );
    std::fs::remove_file(&server_crt).unwrap();
    std::fs::remove_file(Path::new(&dir).join("server.key")).unwrap();
    let new = wait_for(
        Duration::from_secs(30),
        "a new server certificate",
        || async {
            match std::fs::read(&server_crt) {
                Ok(new) if new != old => Ok(new),
                other => Err(format!("{:?}", other.map(|_| "the old one"))),
            }
        },
    )
    .await
    .unwrap();
    wait_for(
        Duration::from_secs(10),
        "members serve the new certificate",
        || async {
            match served_certificate(&address, &identity).await {
                Ok(served) if served == der(&new) => Ok(()),
                other => Err(format!("{:?}", other.map(|_| "the old certificate"))),
            }
        },
    )
    .await
    .unwrap();
    etcdctl(&version, endpoint, &[&ca, &cert, &key, "get", "k"]).expect("served after renewal");
    let after: Vec<_> = members
        .members
        .iter()
        .map(|m| member_pid(&state, "secure", &m.name))
        .collect();
    assert_eq!(pids, after, "no member restarted");

    // A rotation on request: every leaf issued again once for the value, the CA kept, the
    // new client certificate served, still no restart.
    let client_crt = Path::new(&dir).join("client.crt");
    let (old_client, old_ca) = (
        std::fs::read(&client_crt).unwrap(),
        std::fs::read(Path::new(&dir).join("ca.crt")).unwrap(),
    );
    s.write(&cluster_yaml(
        "secure",
        3,
        &version,
        "  tls:\n    rotate: \"r1\"\n",
    ));
    s.wait_status("secure", "rotation r1 recorded", |st| {
        st.tls.as_ref().and_then(|t| t.rotated.as_deref()) == Some("r1")
    })
    .await;
    assert_ne!(std::fs::read(&client_crt).unwrap(), old_client);
    assert_ne!(std::fs::read(&server_crt).unwrap(), new);
    assert_eq!(
        std::fs::read(Path::new(&dir).join("ca.crt")).unwrap(),
        old_ca
    );
    etcdctl(&version, endpoint, &[&ca, &cert, &key, "get", "k"]).expect("served after rotation");
    let after: Vec<_> = members
        .members
        .iter()
        .map(|m| member_pid(&state, "secure", &m.name))
        .collect();
    assert_eq!(pids, after, "no member restarted");

    // The real state agrees: one process per member, etcd lists them, over TLS.
    let c = converged::check(&s.state_dir(), "secure", 3, &version)
        .await
        .expect("converged");
    assert!(c.client_tls.is_some());
}

#[tokio::test]
async fn a_new_etcd_3_5_cluster_serves_tls_only() {
    serves_tls_only(5).await;
}

#[tokio::test]
async fn a_new_etcd_3_4_cluster_serves_tls_only() {
    serves_tls_only(4).await;
}

#[tokio::test]
async fn disabled_tls_serves_plaintext_and_says_so() {
    let version = latest(5);
    let mut s = Scenario::new(fast_policy());
    s.write(&cluster_yaml(
        "open",
        1,
        &version,
        "  tls:\n    mode: Disabled\n",
    ));
    s.start();
    let st = s.wait_running("open", 1, &version).await;
    let urls = client_urls(&st);
    assert!(urls.iter().all(|u| u.starts_with("http://")), "{urls:?}");
    let tls_condition = condition_of(&st, condition::types::TLS);
    assert_eq!(
        (tls_condition.status.as_str(), tls_condition.reason.as_str()),
        ("False", "Disabled")
    );
    let valid = condition_of(&st, condition::types::SPEC_VALID);
    assert!(
        valid.message.contains("TLS is disabled"),
        "{}",
        valid.message
    );
    etcdctl(&version, &urls[0], &["put", "k", "v"]).expect("plaintext is served");
    // No certificates were made for it.
    assert!(!s.state_dir().join("tls/default/open").exists());
}
