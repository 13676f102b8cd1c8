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

    // Asked for TLS, the lone member moves to it with its key (its peer URL is told to
    // etcd by itself once it listens with TLS: no other member could be asked).
    s.write(&cluster_yaml("open", 1, &version, ""));
    let dir = s.state_dir().join("tls/default/open");
    let cacert = format!("--cacert={}", dir.join("ca.crt").display());
    let cert = format!("--cert={}", dir.join("client.crt").display());
    let key = format!("--key={}", dir.join("client.key").display());
    let state = s.state_dir();
    let tls_url = wait_for(LONG, "the member serves TLS, etcd dials it so", || async {
        let urls = recorded_client_urls(&state, "open");
        let url = urls
            .first()
            .filter(|u| u.starts_with("https://"))
            .ok_or(format!("{urls:?}"))?;
        let list = etcdctl(&version, url, &[&cacert, &cert, &key, "member", "list"])?;
        if list.matches("https://").count() == 2 {
            Ok(url.clone())
        } else {
            Err(list)
        }
    })
    .await
    .unwrap();
    let got = etcdctl(
        &version,
        &tls_url,
        &[&cacert, &cert, &key, "get", "k", "--print-value-only"],
    )
    .expect("read over TLS");
    assert_eq!(got.trim(), "v");
    let st = s.wait_running("open", 1, &version).await;
    assert_eq!(condition_of(&st, condition::types::TLS).reason, "Serving");
}

/// A CA and leaves made with openssl the way cert-manager lays them out (ECDSA P-256 keys
/// in SEC1 `EC PRIVATE KEY` form, the default `PKCS1` encoding), in `dir`.
struct OpensslCa {
    dir: std::path::PathBuf,
    name: String,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl OpensslCa {
    fn new(dir: &Path, name: &str) -> Self {
        openssl(
            dir,
            &[
                "ecparam",
                "-name",
                "prime256v1",
                "-genkey",
                "-noout",
                "-out",
                &format!("{name}.key"),
            ],
        );
        openssl(
            dir,
            &[
                "req",
                "-x509",
                "-new",
                "-key",
                &format!("{name}.key"),
                "-subj",
                &format!("/CN={name}"),
                "-days",
                "3650",
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
                "-out",
                &format!("{name}.crt"),
            ],
        );
        Self {
            dir: dir.to_path_buf(),
            name: name.to_string(),
        }
    }

    fn read(&self, file: &str) -> String {
        std::fs::read_to_string(self.dir.join(file)).unwrap()
    }

    /// A leaf `file`.crt/.key with the given extended key usages, for 127.0.0.1 and
    /// localhost; returns (certificate, key) PEM.
    fn leaf(&self, file: &str, usages: &str) -> (String, String) {
        let dir = &self.dir;
        openssl(
            dir,
            &[
                "ecparam",
                "-name",
                "prime256v1",
                "-genkey",
                "-noout",
                "-out",
                &format!("{file}.key"),
            ],
        );
        openssl(
            dir,
            &[
                "req",
                "-new",
                "-key",
                &format!("{file}.key"),
                "-subj",
                &format!("/CN={file}"),
                "-out",
                &format!("{file}.csr"),
            ],
        );
        std::fs::write(
            dir.join(format!("{file}.ext")),
            format!("subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage={usages}\nkeyUsage=critical,digitalSignature,keyEncipherment\n"),
        )
        .unwrap();
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &format!("{file}.csr"),
                "-CA",
                &format!("{}.crt", self.name),
                "-CAkey",
                &format!("{}.key", self.name),
                "-CAcreateserial",
                "-days",
                "90",
                "-extfile",
                &format!("{file}.ext"),
                "-out",
                &format!("{file}.crt"),
            ],
        );
        (
            self.read(&format!("{file}.crt")),
            self.read(&format!("{file}.key")),
        )
    }

    fn ca_pem(&self) -> String {
        self.read(&format!("{}.crt", self.name))
    }
}

/// A cert-manager shaped Secret document (JSON is YAML).
fn tls_secret(name: &str, cert: &str, key: &str, ca: &str) -> String {
    serde_json::json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name},
        "type": "kubernetes.io/tls",
        "stringData": {"tls.crt": cert, "tls.key": key, "ca.crt": ca},
    })
    .to_string()
}

/// Waits until cluster `name`'s `TLS` condition satisfies `pred`; returns its status and
/// that condition's message.
async fn wait_tls_condition(
    s: &Scenario,
    name: &str,
    what: &str,
    pred: impl Fn(&k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition) -> bool,
) -> (EtcdClusterStatus, String) {
    let st = s
        .wait_status(name, what, |st| {
            condition::find(&st.conditions, condition::types::TLS).is_some_and(&pred)
        })
        .await;
    let message = condition_of(&st, condition::types::TLS).message.clone();
    (st, message)
}

const BYO_TLS: &str = "  tls:\n    secrets:\n      server: byo-server\n      peer: byo-peer\n      client: byo-client\n";

/// The `secrets` source (issue 12): certificates made by openssl as cert-manager lays
/// them out are served; a Secret changed to a bad set (a key of another certificate)
/// changes nothing that runs and says which Secret is wrong; a renewed leaf of the same CA
/// is served without a restart; a cluster whose Secrets are missing starts nothing;
/// Secrets of another CA are moved to in three phases of rolling restarts.
#[tokio::test]
async fn provided_certificates_are_served_and_bad_ones_change_nothing() {
    let version = latest(5);
    let certs = tempfile::tempdir().unwrap();
    let ca = OpensslCa::new(certs.path(), "user-ca");
    let (server_crt, server_key) = ca.leaf("server", "serverAuth");
    let (peer_crt, peer_key) = ca.leaf("peer", "serverAuth,clientAuth");
    let (client_crt, client_key) = ca.leaf("client", "clientAuth");
    let ca_pem = ca.ca_pem();
    // Server, peer and client (certificate, key) and the CA each Secret carries.
    type Pair<'a> = (&'a str, &'a str);
    let docs = |server: Pair, peer: Pair, client: Pair, ca: &str, extra: &str| {
        format!(
            "{}---\n{}\n---\n{}\n---\n{}\n{extra}",
            cluster_yaml("byo", 3, &version, BYO_TLS),
            tls_secret("byo-server", server.0, server.1, ca),
            tls_secret("byo-peer", peer.0, peer.1, ca),
            tls_secret("byo-client", client.0, client.1, ca),
        )
    };
    let peer = (peer_crt.as_str(), peer_key.as_str());
    let client = (client_crt.as_str(), client_key.as_str());
    let mut s = Scenario::new(fast_policy());
    s.write(&docs((&server_crt, &server_key), peer, client, &ca_pem, ""));
    s.start();
    let st = s.wait_running("byo", 3, &version).await;
    let tls_status = st.tls.clone().expect("status.tls");
    assert_eq!(
        tls_status.client_certificate.as_deref(),
        Some("secret/byo-client")
    );
    assert_eq!(
        (
            condition_of(&st, condition::types::TLS).status.as_str(),
            condition_of(&st, condition::types::TLS).reason.as_str()
        ),
        ("True", "Serving")
    );
    let urls = client_urls(&st);
    let endpoint = &urls[0];
    let files = certs.path().display().to_string();
    let ca_arg = format!("--cacert={files}/user-ca.crt");
    let cert_arg = format!("--cert={files}/client.crt");
    let key_arg = format!("--key={files}/client.key");
    etcdctl(
        &version,
        endpoint,
        &[&ca_arg, &cert_arg, &key_arg, "put", "k", "v"],
    )
    .expect("the user's client certificate is served");
    etcdctl(&version, endpoint, &[&ca_arg, "get", "k"]).expect_err("no certificate, no service");
    let identity = TlsConfig::new(ca_pem.clone(), client_crt.clone(), client_key.clone());
    let address = endpoint.trim_start_matches("https://").to_string();
    assert_eq!(
        served_certificate(&address, &identity).await.unwrap(),
        der(server_crt.as_bytes())
    );
    let state = s.state_dir();
    let members = st
        .members
        .iter()
        .map(|m| m.name.clone())
        .collect::<Vec<_>>();
    let pids = |members: &[String]| -> Vec<_> {
        members
            .iter()
            .map(|m| member_pid(&state, "byo", m))
            .collect()
    };
    let before = pids(&members);

    // A key of another certificate in the server Secret: refused, naming the Secret; members
    // keep serving what they had.
    s.write(&docs((&server_crt, &peer_key), peer, client, &ca_pem, ""));
    let (_, message) = wait_tls_condition(&s, "byo", "the bad server Secret reported", |c| {
        c.reason == "InvalidCertificates"
    })
    .await;
    assert!(
        message.contains("Secret byo-server: tls.key is not the key of tls.crt (server)")
            && message.contains("they keep the ones they had"),
        "{message}"
    );
    assert_eq!(
        served_certificate(&address, &identity).await.unwrap(),
        der(server_crt.as_bytes())
    );
    etcdctl(
        &version,
        endpoint,
        &[&ca_arg, &cert_arg, &key_arg, "get", "k"],
    )
    .expect("still served with the old certificates");

    // The user renews the server leaf (same CA, new key): served on the next connection,
    // no member restarted; a second cluster whose Secrets do not exist starts nothing.
    let (renewed, renewed_key) = ca.leaf("server2", "serverAuth");
    let missing = "---\napiVersion: etcd.operator.dev/v1alpha1\nkind: EtcdCluster\nmetadata:\n  name: nosecrets\nspec:\n  size: 1\n  version: VERSION\n  tls:\n    secrets: {server: gone-server, peer: gone-peer, client: gone-client}\n"
        .replace("VERSION", &version);
    s.write(&docs(
        (&renewed, &renewed_key),
        peer,
        client,
        &ca_pem,
        &missing,
    ));
    wait_for(
        Duration::from_secs(60),
        "members serve the renewed certificate",
        || async {
            match served_certificate(&address, &identity).await {
                Ok(served) if served == der(renewed.as_bytes()) => Ok(()),
                other => Err(format!("{:?}", other.map(|_| "the old certificate"))),
            }
        },
    )
    .await
    .unwrap();
    let (st, _) = wait_tls_condition(&s, "byo", "serving again", |c| c.reason == "Serving").await;
    assert_eq!(st.ready_members, 3);
    assert_eq!(pids(&members), before, "no member restarted");
    etcdctl(
        &version,
        endpoint,
        &[&ca_arg, &cert_arg, &key_arg, "get", "k"],
    )
    .expect("served after renewal");

    let (st, message) = wait_tls_condition(&s, "nosecrets", "missing Secrets reported", |c| {
        c.reason == "InvalidCertificates"
    })
    .await;
    assert!(
        message.contains("Secret gone-server: not found")
            && message.contains("none start until fixed"),
        "{message}"
    );
    assert!(st.members.is_empty(), "{:?}", st.members);
    assert!(
        member_pid_opt(&state, "nosecrets", "nosecrets-0").is_none(),
        "no member process"
    );

    // Secrets of another CA for everything: moved to in three phases, each a rolling
    // restart, never switched under running members at once.
    let other_dir = tempfile::tempdir().unwrap();
    let other = OpensslCa::new(other_dir.path(), "other-ca");
    let (o_server, o_server_key) = other.leaf("server", "serverAuth");
    let (o_peer, o_peer_key) = other.leaf("peer", "serverAuth,clientAuth");
    let (o_client, o_client_key) = other.leaf("client", "clientAuth");
    let before = pids(&members);
    s.write(&docs(
        (&o_server, &o_server_key),
        (&o_peer, &o_peer_key),
        (&o_client, &o_client_key),
        &other.ca_pem(),
        "",
    ));
    let phases = std::sync::Mutex::new(Vec::<String>::new());
    let o_identity = TlsConfig::new(other.ca_pem(), o_client.clone(), o_client_key.clone());
    wait_for(
        Duration::from_secs(240),
        "every member on the other CA alone",
        || async {
            let st = s.status("byo").and_then(|c| c.status).ok_or("no status")?;
            let tls = st.tls.clone().unwrap_or_default();
            if let Some(p) = &tls.ca_rotation {
                let mut seen = phases.lock().unwrap();
                if seen.last() != Some(p) {
                    seen.push(p.clone());
                }
            }
            let restarted = members
                .iter()
                .zip(&before)
                .all(|(m, b)| member_pid_opt(&state, "byo", m).is_some_and(|p| p != *b));
            let serves_new = served_certificate(&address, &o_identity).await.ok()
                == Some(der(o_server.as_bytes()));
            if tls.ca_rotation.is_none() && st.ready_members == 3 && restarted && serves_new {
                Ok(())
            } else {
                Err(format!(
                    "{:?} {:?} restarted {restarted}",
                    st.phase, tls.ca_rotation
                ))
            }
        },
    )
    .await
    .unwrap();
    let phases = phases.into_inner().unwrap();
    assert_eq!(
        phases,
        ["TrustBoth", "IssueFromNew", "DropOld"],
        "{phases:?}"
    );
    let o_files = other_dir.path().display().to_string();
    let o_args = [
        format!("--cacert={o_files}/other-ca.crt"),
        format!("--cert={o_files}/client.crt"),
        format!("--key={o_files}/client.key"),
    ];
    let o_args: Vec<&str> = o_args.iter().map(String::as_str).collect();
    etcdctl(&version, endpoint, &[&o_args[..], &["get", "k"]].concat())
        .expect("served with the other CA's certificates");
    // The first CA is no longer trusted.
    etcdctl(
        &version,
        endpoint,
        &[&ca_arg, &cert_arg, &key_arg, "get", "k"],
    )
    .expect_err("the old CA is dropped");
}

/// `spec.tls.rotateCA` on a 3-member cluster under a writer that writes through the
/// application client certificate (and reconnects with the files as they are when a put
/// fails): three phases, each a rolling restart; afterwards every member serves a leaf of
/// the new CA alone, a client trusting only the old CA is refused, every acknowledged write
/// is readable and quorum held in every sample.
async fn ca_rotation_under_a_writer(minor: u64) {
    use etcd_operator::certs::ca_rotation::split_certificates;
    use etcd_operator::certs::inspect_pem;
    use etcd_operator::testing::ca_rotation_run::{CLUSTER, rotate_ca_under_a_writer};

    let run = rotate_ca_under_a_writer(minor).await;
    println!("{}", run.summary());
    assert_eq!(run.phases, ["TrustBoth", "IssueFromNew", "DropOld"]);
    assert!(
        run.cluster_phases
            .contains(&etcd_operator::api::cluster::ClusterPhase::Rotating),
        "{:?}",
        run.cluster_phases
    );
    run.seen.assert_nothing_lost();
    let (version, urls, dir, old_ca) = (&run.version, &run.urls, &run.dir, &run.old_ca);
    let state = run.scenario.state_dir();

    // The new CA alone is trusted, and it signed what every member serves.
    let new_ca = std::fs::read_to_string(dir.join("ca.crt")).unwrap();
    assert_eq!(split_certificates(&new_ca).len(), 1);
    assert_ne!(&new_ca, old_ca);
    let server = std::fs::read(dir.join("server.crt")).unwrap();
    let facts = inspect_pem(&server, "server.crt").unwrap();
    assert!(facts.signed_by(new_ca.as_bytes()).unwrap());
    assert!(!facts.signed_by(old_ca.as_bytes()).unwrap());
    let identity = etcd_operator::testing::converged::client_tls_in(dir).unwrap();
    for url in urls {
        let address = url.trim_start_matches("https://");
        assert_eq!(
            served_certificate(address, &identity).await.unwrap(),
            der(&server),
            "{address}"
        );
    }
    // Every member was restarted; a client that trusts only the old CA is refused.
    for (name, before) in &run.before {
        assert_ne!(member_pid(&state, CLUSTER, name), *before, "{name}");
    }
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("old-ca.crt"), old_ca).unwrap();
    let cacert = format!("--cacert={}", tmp.path().join("old-ca.crt").display());
    let cert = format!("--cert={}", dir.join("client.crt").display());
    let key = format!("--key={}", dir.join("client.key").display());
    let refused = etcdctl(version, &urls[0], &[&cacert, &cert, &key, "get", "k"]);
    assert!(refused.is_err(), "{refused:?}");
    let cacert = format!("--cacert={}", dir.join("ca.crt").display());
    etcdctl(version, &urls[0], &[&cacert, &cert, &key, "put", "k", "v"]).expect("new CA");
}

#[tokio::test]
async fn a_ca_rotation_of_an_etcd_3_5_cluster_keeps_quorum_and_every_write() {
    ca_rotation_under_a_writer(5).await;
}

#[tokio::test]
async fn a_ca_rotation_of_an_etcd_3_4_cluster_keeps_quorum_and_every_write() {
    ca_rotation_under_a_writer(4).await;
}

/// What a move either way shows: the `TLS` condition passed through `moving` to `done`, no
/// acknowledged write lost, quorum in every sample, the same ports, every member
/// restarted. Returns the state dir.
fn assert_moved(
    run: &etcd_operator::testing::tls_move_run::TlsMoveRun,
    moving: &str,
    done: &str,
) -> std::path::PathBuf {
    use etcd_operator::testing::tls_move_run::CLUSTER;
    println!("{}", run.summary());
    assert!(run.reasons.iter().any(|r| r == moving), "{:?}", run.reasons);
    assert_eq!(run.reasons.last().map(String::as_str), Some(done));
    run.seen.assert_nothing_lost();
    assert!(
        run.cluster_phases
            .contains(&etcd_operator::api::cluster::ClusterPhase::Rotating),
        "{:?}",
        run.cluster_phases
    );
    let ports = |urls: &[String]| -> Vec<String> {
        urls.iter()
            .map(|u| u.rsplit_once(':').unwrap().1.to_string())
            .collect()
    };
    assert_eq!(ports(&run.urls), ports(&run.urls_before));
    let state = run.scenario.state_dir();
    for (name, before) in &run.before {
        assert_ne!(member_pid(&state, CLUSTER, name), *before, "{name}");
    }
    state
}

async fn plaintext_to_tls_under_a_writer(minor: u64) {
    use etcd_operator::testing::tls_move_run::{CLUSTER, move_to_tls_under_a_writer};

    let run = move_to_tls_under_a_writer(minor).await;
    let state = assert_moved(&run, "MovingToTls", "Serving");
    let (version, dir) = (&run.version, &run.dir);
    // etcd dials every peer over TLS, and plaintext is refused on the client port.
    let cacert = format!("--cacert={}", dir.join("ca.crt").display());
    let cert = format!("--cert={}", dir.join("client.crt").display());
    let key = format!("--key={}", dir.join("client.key").display());
    let list = etcdctl(
        version,
        &run.urls[0],
        &[&cacert, &cert, &key, "member", "list"],
    )
    .expect("member list over TLS");
    assert_eq!(list.matches("https://").count(), 6, "{list}");
    assert!(!list.contains("http://"), "{list}");
    let plain = run.urls[0].replace("https://", "http://");
    assert!(etcdctl(version, &plain, &["get", "k"]).is_err());
    etcdctl(version, &run.urls[1], &["get", "k"]).expect_err("no client certificate");
    // Each member's recorded command line requires client certificates on both ports.
    for (name, _) in &run.before {
        let record = std::fs::read_to_string(
            state
                .join("clusters/default")
                .join(CLUSTER)
                .join(name)
                .join("member.json"),
        )
        .unwrap();
        assert!(record.contains("--peer-client-cert-auth=true"), "{name}");
        assert!(record.contains("--client-cert-auth=true"), "{name}");
        assert!(record.contains("--listen-peer-urls=https://"), "{name}");
        assert!(record.contains("--listen-client-urls=https://"), "{name}");
    }
}

#[tokio::test]
async fn a_running_etcd_3_5_cluster_moves_from_plaintext_to_tls_under_a_writer() {
    plaintext_to_tls_under_a_writer(5).await;
}

#[tokio::test]
async fn a_running_etcd_3_4_cluster_moves_from_plaintext_to_tls_under_a_writer() {
    plaintext_to_tls_under_a_writer(4).await;
}

async fn tls_to_plaintext_under_a_writer(minor: u64) {
    use etcd_operator::testing::tls_move_run::move_to_plaintext_under_a_writer;

    let run = move_to_plaintext_under_a_writer(minor).await;
    assert_moved(&run, "MovingToPlaintext", "Disabled");
    // etcd dials every peer in plaintext; a client without certificates is served.
    let list = etcdctl(&run.version, &run.urls[0], &["member", "list"]).expect("member list");
    assert_eq!(list.matches("http://").count(), 6, "{list}");
    assert!(!list.contains("https://"), "{list}");
    etcdctl(&run.version, &run.urls[1], &["put", "k", "v"]).expect("plaintext is served");
}

#[tokio::test]
async fn a_running_etcd_3_5_cluster_moves_from_tls_to_plaintext_under_a_writer() {
    tls_to_plaintext_under_a_writer(5).await;
}

#[tokio::test]
async fn a_running_etcd_3_4_cluster_moves_from_tls_to_plaintext_under_a_writer() {
    tls_to_plaintext_under_a_writer(4).await;
}

/// A move to TLS undone half-way (`mode: Disabled` again once one member listens with
/// TLS) goes back the same way, under a writer: every member plaintext again, no member
/// holding certificates, every acknowledged write there, quorum in every sample.
#[tokio::test]
async fn a_move_to_tls_undone_half_way_goes_back_under_a_writer() {
    use std::sync::Arc;

    use etcd_operator::testing::writer::Load;

    let version = latest(5);
    let disabled = "  tls:\n    mode: Disabled\n";
    let mut s = Scenario::new(fast_policy());
    s.write(&cluster_yaml("undo", 3, &version, disabled));
    s.start();
    s.wait_running("undo", 3, &version).await;
    let state = s.state_dir();
    let dir = state.join("tls/default/undo");
    let load = {
        let state = state.clone();
        Load::start(
            Arc::new(move || recorded_client_urls(&state, "undo")),
            dir.clone(),
        )
        .await
    };
    s.write(&cluster_yaml("undo", 3, &version, ""));
    wait_for(LONG, "one member listens with TLS", || async {
        let urls = recorded_client_urls(&state, "undo");
        match urls.iter().filter(|u| u.starts_with("https://")).count() {
            0 => Err(format!("{urls:?}")),
            _ => Ok(()),
        }
    })
    .await
    .unwrap();
    s.write(&cluster_yaml("undo", 3, &version, disabled));
    wait_for(
        Duration::from_secs(300),
        "plaintext again, no certificates",
        || async {
            let st = s.status("undo").and_then(|c| c.status).ok_or("no status")?;
            let reason = condition_of(&st, condition::types::TLS).reason.clone();
            let urls = recorded_client_urls(&state, "undo");
            let holding = (0..3)
                .filter(|i| {
                    std::fs::read_to_string(
                        state.join(format!("clusters/default/undo/undo-{i}/member.json")),
                    )
                    .is_ok_and(|r| r.contains("--peer-cert-file"))
                })
                .count();
            if reason == "Disabled"
                && st.ready_members == 3
                && urls.len() == 3
                && urls.iter().all(|u| u.starts_with("http://"))
                && holding == 0
            {
                Ok(())
            } else {
                Err(format!(
                    "{reason}, {urls:?}, {holding} holding certificates"
                ))
            }
        },
    )
    .await
    .unwrap();
    let urls = recorded_client_urls(&state, "undo");
    let seen = load.finish(&urls, &dir).await;
    println!("undone half-way: {}", seen.summary());
    seen.assert_nothing_lost();
    etcdctl(&version, &urls[0], &["put", "k", "v"]).expect("plaintext is served");
}
