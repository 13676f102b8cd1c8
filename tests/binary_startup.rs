//! The released binary's `etcd-operator run` against an HTTPS API endpoint on 127.0.0.1: it
//! must build its TLS client and send its first request. A process-level rustls
//! CryptoProvider that cannot be chosen (both `ring` and `aws-lc-rs` in the tree, issue 9)
//! panics right there, which only the real binary with a real TLS connection shows.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::{self, pki_types};

/// A CA and a server certificate for 127.0.0.1, both PEM, plus the server key (DER).
struct ApiServerCerts {
    ca_pem: String,
    server_der: pki_types::CertificateDer<'static>,
    server_key: pki_types::PrivateKeyDer<'static>,
}

fn api_server_certs() -> ApiServerCerts {
    let ca_key = rcgen::KeyPair::generate().expect("CA key");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "test kubernetes CA");
    let ca = ca_params.self_signed(&ca_key).expect("CA cert");
    let server_key = rcgen::KeyPair::generate().expect("server key");
    let server_params =
        rcgen::CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
            .expect("server params");
    let issuer = rcgen::Issuer::from_params(&ca_params, &ca_key);
    let server = server_params
        .signed_by(&server_key, &issuer)
        .expect("server cert");
    ApiServerCerts {
        ca_pem: ca.pem(),
        server_der: server.der().clone(),
        server_key: pki_types::PrivateKeyDer::Pkcs8(server_key.serialize_der().into()),
    }
}

/// Reads one HTTP request head from the TLS stream and answers 503, so the client retries
/// without ever getting a usable answer.
async fn first_request_line(acceptor: TlsAcceptor, listener: TcpListener) -> String {
    loop {
        let (tcp, _) = listener.accept().await.expect("accept");
        let Ok(mut tls) = acceptor.accept(tcp).await else {
            continue;
        };
        let mut head = Vec::new();
        let mut buf = [0u8; 4096];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            match tls.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
        let text = String::from_utf8_lossy(&head).to_string();
        let _ = tls
            .write_all(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
            .await;
        if let Some(line) = text.lines().next().filter(|l| !l.is_empty()) {
            return line.to_string();
        }
    }
}

#[tokio::test]
async fn run_builds_its_tls_client_and_sends_a_request_to_the_api_server() {
    let certs = api_server_certs();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server_config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_no_client_auth()
        .with_single_cert(vec![certs.server_der.clone()], certs.server_key)
        .expect("server config");
    let acceptor = TlsAcceptor::from(Arc::new(server_config));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();

    let dir = tempfile::tempdir().expect("tempdir");
    let ca_path = dir.path().join("ca.pem");
    std::fs::write(&ca_path, &certs.ca_pem).expect("write CA");
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: https://127.0.0.1:{port}\n    certificate-authority: {}\nusers:\n- name: test\n  user:\n    token: test-token\ncontexts:\n- name: test\n  context: {{cluster: test, user: test, namespace: default}}\ncurrent-context: test\n",
            ca_path.display()
        ),
    )
    .expect("write kubeconfig");

    let metrics = std::net::TcpListener::bind("127.0.0.1:0").expect("free port");
    let metrics_addr = metrics.local_addr().expect("addr");
    drop(metrics);
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_etcd-operator"))
        .args(["run", "--metrics-addr", &metrics_addr.to_string()])
        .env("KUBECONFIG", &kubeconfig)
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env_remove("KUBERNETES_SERVICE_PORT")
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start etcd-operator run");

    let outcome = tokio::time::timeout(Duration::from_secs(60), async {
        tokio::select! {
            line = first_request_line(acceptor, listener) => Ok(line),
            status = child.wait() => Err(status),
        }
    })
    .await;
    let _ = child.start_kill();
    let output = child.wait_with_output().await.expect("collect output");
    let stderr = String::from_utf8_lossy(&output.stderr);
    match outcome {
        Ok(Ok(line)) => assert!(
            line.starts_with("GET /api"),
            "the first request was {line:?}, not an API read; stderr:\n{stderr}"
        ),
        Ok(Err(status)) => {
            panic!("`etcd-operator run` exited ({status:?}) before any request:\n{stderr}")
        }
        Err(_) => panic!("no request reached the API server within 60 s; stderr:\n{stderr}"),
    }
}
