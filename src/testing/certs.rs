//! Throwaway TLS certificates for test clusters (a CA, one member certificate for peers and
//! clients, one client certificate), ECDSA P-256, made with rcgen.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

use super::Error;
use crate::etcd::TlsConfig;

/// Certificates valid for 127.0.0.1 and localhost, in one directory.
#[derive(Clone, Debug)]
pub struct TestCerts {
    dir: PathBuf,
    client: TlsConfig,
}

impl TestCerts {
    /// Writes `ca.pem`, `member.pem`/`member.key` (server and client auth: etcd peers dial
    /// each other) and `client.pem`/`client.key` into `dir`.
    ///
    /// # Errors
    /// [`Error::Io`] writing a file; [`Error::Certificate`] from rcgen.
    pub async fn generate(dir: &Path) -> Result<Self, Error> {
        std::fs::create_dir_all(dir).map_err(|source| Error::Io {
            path: dir.to_owned(),
            source,
        })?;
        let write = |name: &str, contents: &str| {
            let path = dir.join(name);
            std::fs::write(&path, contents).map_err(|source| Error::Io { path, source })
        };
        let ca_key = KeyPair::generate().map_err(Error::Certificate)?;
        let mut ca = CertificateParams::default();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "etcd-test-ca");
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_cert = ca.self_signed(&ca_key).map_err(Error::Certificate)?;
        write("ca.pem", &ca_cert.pem())?;
        let issuer = Issuer::from_params(&ca, &ca_key);
        let member = leaf(
            &issuer,
            "member",
            &[
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
        )?;
        write("member.pem", &member.0)?;
        write("member.key", &member.1)?;
        let client = leaf(&issuer, "client", &[ExtendedKeyUsagePurpose::ClientAuth])?;
        write("client.pem", &client.0)?;
        write("client.key", &client.1)?;
        let client = TlsConfig::new(
            ca_cert.pem().into_bytes(),
            client.0.into_bytes(),
            client.1.into_bytes(),
        );
        Ok(Self {
            dir: dir.to_owned(),
            client,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// What a client presents and trusts.
    pub fn client_tls(&self) -> TlsConfig {
        self.client.clone()
    }

    pub(crate) fn client_tls_options(&self) -> etcd_client::TlsOptions {
        self.client
            .to_options()
            .expect("generated PEM files are well formed")
    }

    /// The etcd flags serving clients and peers over mutual TLS with these certificates.
    pub fn etcd_flags(&self) -> Vec<String> {
        let path = |name: &str| self.dir.join(name).display().to_string();
        vec![
            format!("--cert-file={}", path("member.pem")),
            format!("--key-file={}", path("member.key")),
            format!("--trusted-ca-file={}", path("ca.pem")),
            "--client-cert-auth=true".into(),
            format!("--peer-cert-file={}", path("member.pem")),
            format!("--peer-key-file={}", path("member.key")),
            format!("--peer-trusted-ca-file={}", path("ca.pem")),
            "--peer-client-cert-auth=true".into(),
        ]
    }
}

/// A certificate (PEM) signed by `issuer` for 127.0.0.1 and localhost, and its key (PEM).
fn leaf(
    issuer: &Issuer<'_, &KeyPair>,
    name: &str,
    usages: &[ExtendedKeyUsagePurpose],
) -> Result<(String, String), Error> {
    let mut params = CertificateParams::default();
    params
        .distinguished_name
        .push(DnType::CommonName, format!("etcd-test-{name}"));
    params.subject_alt_names = vec![
        SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        SanType::DnsName("localhost".try_into().map_err(Error::Certificate)?),
    ];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = usages.to_vec();
    let key = KeyPair::generate().map_err(Error::Certificate)?;
    let cert = params.signed_by(&key, issuer).map_err(Error::Certificate)?;
    Ok((cert.pem(), key.serialize_pem()))
}
