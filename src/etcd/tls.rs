//! Client TLS material for etcd (PEM bytes, e.g. from a Secret) and its checks before use.
//!
//! Where the bytes come from is the caller's business; this file only shapes them for etcd-client.

use std::fmt;

use etcd_client::{Certificate, Identity, TlsOptions};

use super::error::Error;

/// Mutual TLS to etcd: the CA that signed the servers, and this client's certificate and key.
///
/// Endpoints must then be `https://` URLs. `Debug` never prints the key.
#[derive(Clone, PartialEq, Eq)]
pub struct TlsConfig {
    pub ca_pem: Vec<u8>,
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
}

impl TlsConfig {
    pub fn new(
        ca_pem: impl Into<Vec<u8>>,
        cert_pem: impl Into<Vec<u8>>,
        key_pem: impl Into<Vec<u8>>,
    ) -> Self {
        Self {
            ca_pem: ca_pem.into(),
            cert_pem: cert_pem.into(),
            key_pem: key_pem.into(),
        }
    }

    /// Checks the PEM framing of each part.
    ///
    /// Catches swapped or empty fields early; whether the certificates verify is only known
    /// when a connection is made.
    ///
    /// # Errors
    /// [`Error::InvalidTls`] naming the first bad part.
    pub fn validate(&self) -> Result<(), Error> {
        let invalid = |reason| {
            Err(Error::InvalidTls {
                reason,
                source: None,
            })
        };
        if !has_pem_block(&self.ca_pem, "CERTIFICATE") {
            return invalid("ca_pem holds no PEM certificate");
        }
        if !has_pem_block(&self.cert_pem, "CERTIFICATE") {
            return invalid("cert_pem holds no PEM certificate");
        }
        if !has_pem_block(&self.key_pem, "PRIVATE KEY") {
            return invalid("key_pem holds no PEM private key");
        }
        Ok(())
    }

    /// `tls` when one of `endpoints` is `https://`, else `None`: a plaintext cluster is
    /// dialled without TLS even when the operator holds certificates for it.
    pub fn for_endpoints<S: AsRef<str>>(endpoints: &[S], tls: Option<&TlsConfig>) -> Option<Self> {
        endpoints
            .iter()
            .any(|e| e.as_ref().starts_with("https://"))
            .then(|| tls.cloned())
            .flatten()
    }

    /// etcd-client's options for this identity.
    ///
    /// # Errors
    /// [`Error::InvalidTls`] when a part is not PEM.
    pub fn to_options(&self) -> Result<TlsOptions, Error> {
        self.validate()?;
        Ok(TlsOptions::new()
            .ca_certificate(Certificate::from_pem(&self.ca_pem))
            .identity(Identity::from_pem(&self.cert_pem, &self.key_pem)))
    }
}

impl fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConfig")
            .field("ca_pem", &format_args!("{} bytes", self.ca_pem.len()))
            .field("cert_pem", &format_args!("{} bytes", self.cert_pem.len()))
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

/// Whether `pem` has a `-----BEGIN ...<label>-----` line (so "PRIVATE KEY" matches RSA/EC/PKCS#8).
fn has_pem_block(pem: &[u8], label: &str) -> bool {
    let Ok(text) = std::str::from_utf8(pem) else {
        return false;
    };
    text.lines().any(|line| {
        let line = line.trim();
        line.starts_with("-----BEGIN ") && line.ends_with(&format!("{label}-----"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const CERT: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
    const KEY: &str = "-----BEGIN EC PRIVATE KEY-----\nMHc\n-----END EC PRIVATE KEY-----\n";

    #[test]
    fn well_framed_material_is_accepted() {
        TlsConfig::new(CERT, CERT, KEY).validate().unwrap();
        let pkcs8 = "-----BEGIN PRIVATE KEY-----\nMC4\n-----END PRIVATE KEY-----\n";
        TlsConfig::new(CERT, CERT, pkcs8).validate().unwrap();
    }

    #[test]
    fn swapped_or_empty_parts_are_named() {
        let err = TlsConfig::new(CERT, KEY, CERT).validate().unwrap_err();
        assert!(matches!(err, Error::InvalidTls { reason, .. } if reason.starts_with("cert_pem")));
        let err = TlsConfig::new("", CERT, KEY).validate().unwrap_err();
        assert!(matches!(err, Error::InvalidTls { reason, .. } if reason.starts_with("ca_pem")));
    }

    #[test]
    fn debug_never_shows_the_key() {
        let shown = format!("{:?}", TlsConfig::new(CERT, CERT, KEY));
        assert!(!shown.contains("MHc"), "{shown}");
        assert!(shown.contains("redacted"));
    }
}
