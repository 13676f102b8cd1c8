//! Throwaway TLS certificates for test clusters (a CA, one member certificate for peers and
//! clients, one client certificate), made with the `openssl` command-line tool.

use std::path::{Path, PathBuf};

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
    /// [`Error::Spawn`] without `openssl`; [`Error::Tool`] when it fails.
    pub async fn generate(dir: &Path) -> Result<Self, Error> {
        std::fs::create_dir_all(dir).map_err(|source| Error::Io {
            path: dir.to_owned(),
            source,
        })?;
        openssl(
            dir,
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "2",
                "-subj",
                "/CN=etcd-test-ca",
            ],
        )
        .await?;
        leaf(dir, "member", "serverAuth,clientAuth").await?;
        leaf(dir, "client", "clientAuth").await?;
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read(&path).map_err(|source| Error::Io { path, source })
        };
        let client = TlsConfig::new(read("ca.pem")?, read("client.pem")?, read("client.key")?);
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

/// A key and a CA-signed certificate `<name>.pem` for 127.0.0.1/localhost.
async fn leaf(dir: &Path, name: &str, usage: &str) -> Result<(), Error> {
    let ext = format!(
        "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n\
         extendedKeyUsage={usage}\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n"
    );
    let ext_file = dir.join(format!("{name}.ext"));
    std::fs::write(&ext_file, ext).map_err(|source| Error::Io {
        path: ext_file.clone(),
        source,
    })?;
    let (key, csr, pem) = (
        format!("{name}.key"),
        format!("{name}.csr"),
        format!("{name}.pem"),
    );
    let subject = format!("/CN=etcd-test-{name}");
    openssl(
        dir,
        &[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &csr,
            "-subj",
            &subject,
        ],
    )
    .await?;
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-out",
            &pem,
            "-extfile",
            &format!("{name}.ext"),
        ],
    )
    .await
}

async fn openssl(dir: &Path, args: &[&str]) -> Result<(), Error> {
    let tool = PathBuf::from("openssl");
    let output = tokio::process::Command::new(&tool)
        .args(args)
        .current_dir(dir)
        .output()
        .await
        .map_err(|source| Error::Spawn {
            name: "openssl".into(),
            source,
        })?;
    if output.status.success() {
        Ok(())
    } else {
        Err(Error::Tool {
            tool,
            status: output.status,
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        })
    }
}
