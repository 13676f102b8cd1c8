//! The process-level rustls crypto provider. kube brings rustls with `ring` and the AWS SDK
//! with `aws-lc-rs`; with both features in the tree rustls cannot choose by itself and the
//! first TLS client panics (issue 9). Every process that builds a TLS client calls
//! [`install`] first: the binary's `main`, and tests that build clients in-process.

/// Installs `ring` as the process-level provider; a provider installed earlier (by an
/// earlier call or by a test harness) is kept.
pub fn install() {
    // Err means a provider is installed already, which is all this function promises.
    let _ = rustls::crypto::ring::default_provider().install_default();
}
