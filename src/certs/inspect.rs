//! What a PEM certificate says about itself: names, usages, validity, issuer signature and
//! whether a key belongs to it. Used for status (expiry) and to check material before use.

use jiff::Timestamp;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::pem::Pem;

use super::Error;

/// The facts of one certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertificateFacts {
    pub common_name: Option<String>,
    /// Subject alternative names: DNS names and IP addresses as text, in order.
    pub names: Vec<String>,
    pub server_auth: bool,
    pub client_auth: bool,
    pub is_ca: bool,
    pub not_before: Timestamp,
    pub not_after: Timestamp,
    /// The DER, kept to check signatures and keys against.
    der: Vec<u8>,
}

/// Reads the first certificate of `pem`; `what` names it in errors (e.g. a Secret's key).
///
/// # Errors
/// [`Error::NoCertificate`] or [`Error::ParseCertificate`].
pub fn inspect_pem(pem: &[u8], what: &str) -> Result<CertificateFacts, Error> {
    let der = first_certificate(pem, what)?;
    let cert = parse(&der, what)?;
    let common_name = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map(str::to_string);
    let names = match cert.subject_alternative_name() {
        Ok(Some(san)) => san
            .value
            .general_names
            .iter()
            .filter_map(|n| match n {
                GeneralName::DNSName(d) => Some((*d).to_string()),
                GeneralName::IPAddress(b) => ip_text(b),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    let (server_auth, client_auth) = match cert.extended_key_usage() {
        Ok(Some(eku)) => (
            eku.value.server_auth || eku.value.any,
            eku.value.client_auth || eku.value.any,
        ),
        // No EKU extension: not restricted.
        _ => (true, true),
    };
    let is_ca = cert.is_ca();
    let validity = cert.validity();
    let at = |secs: i64| {
        Timestamp::from_second(secs).map_err(|e| Error::ParseCertificate {
            what: what.to_string(),
            reason: e.to_string(),
        })
    };
    let not_before = at(validity.not_before.timestamp())?;
    let not_after = at(validity.not_after.timestamp())?;
    Ok(CertificateFacts {
        common_name,
        names,
        server_auth,
        client_auth,
        is_ca,
        not_before,
        not_after,
        der,
    })
}

impl CertificateFacts {
    /// Whether one of the certificates in `ca_pem` (a bundle) signed this one.
    ///
    /// # Errors
    /// [`Error::NoCertificate`]/[`Error::ParseCertificate`] when `ca_pem` holds none.
    pub fn signed_by(&self, ca_pem: &[u8]) -> Result<bool, Error> {
        let cert = parse(&self.der, "certificate")?;
        let cas = all_certificates(ca_pem, "CA bundle")?;
        for der in &cas {
            let ca = parse(der, "CA bundle")?;
            if cert.verify_signature(Some(ca.public_key())).is_ok() {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Whether `key_pem` is the private key of this certificate. PKCS#8 and SEC1 (`EC PRIVATE
    /// KEY`, cert-manager's default for ECDSA) are tested; rustls also reads PKCS#1 RSA keys.
    ///
    /// # Errors
    /// [`Error::UnusableKey`] when `key_pem` is not a usable key.
    pub fn matches_key(&self, key_pem: &[u8]) -> Result<bool, Error> {
        use rustls::pki_types::PrivateKeyDer;
        use rustls::pki_types::pem::PemObject;
        let unusable = |reason: String| Error::UnusableKey { reason };
        let der = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| unusable(e.to_string()))?;
        let key = rustls::crypto::ring::sign::any_supported_type(&der)
            .map_err(|e| unusable(e.to_string()))?;
        let spki = key
            .public_key()
            .ok_or_else(|| unusable("its public key cannot be derived".into()))?;
        let cert = parse(&self.der, "certificate")?;
        Ok(cert.public_key().raw == spki.as_ref())
    }

    /// Whether the certificate is valid at `now`.
    pub fn valid_at(&self, now: Timestamp) -> bool {
        self.not_before <= now && now < self.not_after
    }
}

fn parse<'a>(der: &'a [u8], what: &str) -> Result<X509Certificate<'a>, Error> {
    x509_parser::parse_x509_certificate(der)
        .map(|(_, c)| c)
        .map_err(|e| Error::ParseCertificate {
            what: what.to_string(),
            reason: e.to_string(),
        })
}

fn all_certificates(pem: &[u8], what: &str) -> Result<Vec<Vec<u8>>, Error> {
    let mut out = Vec::new();
    for block in Pem::iter_from_buffer(pem) {
        let block = block.map_err(|e| Error::ParseCertificate {
            what: what.to_string(),
            reason: e.to_string(),
        })?;
        if block.label == "CERTIFICATE" {
            out.push(block.contents);
        }
    }
    if out.is_empty() {
        return Err(Error::NoCertificate {
            what: what.to_string(),
        });
    }
    Ok(out)
}

fn first_certificate(pem: &[u8], what: &str) -> Result<Vec<u8>, Error> {
    all_certificates(pem, what).map(|mut all| all.swap_remove(0))
}

fn ip_text(bytes: &[u8]) -> Option<String> {
    match bytes.len() {
        4 => <[u8; 4]>::try_from(bytes)
            .ok()
            .map(|b| std::net::Ipv4Addr::from(b).to_string()),
        16 => <[u8; 16]>::try_from(bytes)
            .ok()
            .map(|b| std::net::Ipv6Addr::from(b).to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_without_a_certificate_is_refused() {
        let err = inspect_pem(b"hello", "secret/x tls.crt").unwrap_err();
        assert!(matches!(err, Error::NoCertificate { .. }), "{err}");
        assert!(err.to_string().contains("secret/x tls.crt"));
        let err = inspect_pem(
            b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
            "y",
        )
        .unwrap_err();
        assert!(matches!(err, Error::ParseCertificate { .. }), "{err}");
    }
}
