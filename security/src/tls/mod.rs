//! TLS for the gRPC and REST listeners, and for our own clients (the Rust client and
//! `ldlm-bench`).
//!
//! Everything here uses rustls with the **ring** crypto provider, passed explicitly: rustls's
//! default provider, aws-lc, needs a large C build, and the workspace never builds it.
//!
//! Server rules (go-ldlm's, except that an inconsistent setting is an error, not ignored):
//!
//! * no `tls_cert` and no `tls_key` → plaintext ([`server_config`] returns `Ok(None)`);
//! * `tls_cert` + `tls_key` → TLS 1.2 and 1.3;
//! * `tls_key` without `tls_cert` is an **error** (go-ldlm silently ignores it and serves
//!   plaintext, which whoever configured a key did not ask for), as is `tls_cert` without
//!   `tls_key`;
//! * `client_ca` → client certificates are required and verified against that CA;
//! * `client_cert_verify` alone → client certificates are required and verified against the
//!   operating system's trust store (read with `rustls-native-certs`);
//! * either of those without TLS → [`TlsError::ClientVerifyWithoutTls`]
//!   (`client TLS certificate verification requires server TLS to be configured`).
//!
//! One concern per file: `server.rs` the listeners' configuration (TLS and mTLS), `client.rs`
//! our clients' configuration and the name a server must carry, `connector.rs` the connector
//! that dials with it, `node.rs` a cluster node's own certificate checked as its peers will
//! check it, `pem.rs` reading certificates, keys and trust stores, `error.rs` what can go
//! wrong.

use std::sync::Arc;

use rustls::crypto::CryptoProvider;

mod client;
mod connector;
mod error;
mod node;
mod pem;
mod server;
#[cfg(test)]
mod tests;

pub use client::{client_config, server_name};
pub use connector::{TlsConnector, TlsIo};
pub use error::TlsError;
pub use node::{NodeRole, check_node_certificate};
pub use server::{TlsOptions, server_config};

/// The ring crypto provider, shared.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Installs ring as the process-wide default rustls [`CryptoProvider`] unless one is already
/// installed. Idempotent and safe to call from several threads; libraries that build rustls
/// configs with `ClientConfig::builder()` (tonic's `tls-ring` channel, for one) need a default.
pub fn install_default_provider() {
    if CryptoProvider::get_default().is_none() {
        // Losing a race to another installer is fine: some provider is then installed.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}
