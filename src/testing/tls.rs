//! What certificate a TLS server presents, asked with a blocking rustls handshake: how the
//! TLS tests see a member serve a renewed certificate without a restart.

use std::io::Write;
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

use crate::etcd::TlsConfig;

/// The DER of the first certificate in `pem`.
pub fn der_of(pem: &[u8]) -> Result<Vec<u8>, String> {
    CertificateDer::from_pem_slice(pem)
        .map(|c| c.to_vec())
        .map_err(|e| e.to_string())
}

/// The DER of the certificate the server at `address` (`host:port`) presents to a client
/// showing `identity` and trusting its CA, verified for `server_name`.
///
/// # Errors
/// Any failure to connect, verify or finish the handshake, as text.
pub fn served_certificate(
    address: &str,
    server_name: &str,
    identity: &TlsConfig,
) -> Result<Vec<u8>, String> {
    let e = |e: &dyn std::fmt::Display| e.to_string();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(&identity.ca_pem).map_err(|x| e(&x))?)
        .map_err(|x| e(&x))?;
    let chain = CertificateDer::pem_slice_iter(&identity.cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|x| e(&x))?;
    let key = PrivateKeyDer::from_pem_slice(&identity.key_pem).map_err(|x| e(&x))?;
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|x| e(&x))?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .map_err(|x| e(&x))?;
    let name = ServerName::try_from(server_name.to_string()).map_err(|x| e(&x))?;
    let mut conn = rustls::ClientConnection::new(Arc::new(config), name).map_err(|x| e(&x))?;
    let mut tcp = TcpStream::connect(address).map_err(|x| e(&x))?;
    tcp.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|x| e(&x))?;
    while conn.is_handshaking() {
        conn.complete_io(&mut tcp).map_err(|x| e(&x))?;
    }
    let served = conn
        .peer_certificates()
        .and_then(|c| c.first())
        .ok_or("no certificate presented")?
        .to_vec();
    conn.send_close_notify();
    let _ = conn.complete_io(&mut tcp);
    let _ = tcp.flush();
    Ok(served)
}
