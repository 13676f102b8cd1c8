//! The process-level rustls crypto provider. kube brings rustls with `ring` and the AWS SDK
//! with `aws-lc-rs`; with both features in the tree rustls cannot choose by itself and the
//! first client that relies on the process default (kube's) panics (issue 9). The binary's
//! `main` calls [`install`] first, and so does the e2e suite, which builds a kube client
//! in-process. The AWS SDK names its provider itself and does not need it.

/// Installs `ring` as the process-level provider; a provider installed earlier (by an
/// earlier call or by a test harness) is kept.
pub fn install() {
    // Err means a provider is installed already, which is all this function promises.
    let _ = rustls::crypto::ring::default_provider().install_default();
}
