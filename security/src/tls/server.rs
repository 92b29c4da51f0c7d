//! The listeners' TLS configuration: certificate and key, and client certificate
//! verification (mTLS) against a CA file or the system trust store.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::server::WebPkiClientVerifier;
use rustls::sign::SingleCertAndKey;

use super::pem::{load_certified_key, roots_from_file, system_roots};
use super::{TlsError, provider};

/// What names the files in error messages: the option that configured them.
const WHAT_CERT: &str = "tls_cert";
const WHAT_KEY: &str = "tls_key";
const WHAT_CLIENT_CA: &str = "client_ca";

/// TLS settings of a listener, as configured (`--tls_cert`, `--tls_key`, `--client_ca`,
/// `--client_cert_verify`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsOptions {
    /// PEM file holding the server certificate (chain, leaf first).
    pub cert: Option<PathBuf>,
    /// PEM file holding the server certificate's private key (PKCS#8, PKCS#1 or SEC1).
    pub key: Option<PathBuf>,
    /// PEM file of CA certificates: when set, clients must present a certificate signed by one
    /// of them (implies `client_cert_verify`).
    pub client_ca: Option<PathBuf>,
    /// Require client certificates; without `client_ca` they are verified against the
    /// operating system's trust store.
    pub client_cert_verify: bool,
}

impl TlsOptions {
    /// Whether client certificates are required (`client_ca` set or `client_cert_verify`).
    pub fn requires_client_cert(&self) -> bool {
        self.client_ca.is_some() || self.client_cert_verify
    }
}

/// Builds the server TLS configuration from `opts`, advertising `alpn` (most preferred first:
/// `[b"h2"]` for gRPC, `[b"http/1.1", b"h2"]` for REST).
///
/// Returns `Ok(None)` when neither a certificate nor a key is configured (plaintext), and an
/// error for every inconsistent or unusable setting (see [`TlsError`]).
pub fn server_config(
    opts: &TlsOptions,
    alpn: &[&[u8]],
) -> Result<Option<Arc<rustls::ServerConfig>>, TlsError> {
    let (cert_path, key_path) = match (&opts.cert, &opts.key) {
        (None, Some(key)) => return Err(TlsError::KeyWithoutCert { key: key.clone() }),
        (Some(cert), None) => return Err(TlsError::CertWithoutKey { cert: cert.clone() }),
        (None, None) if opts.requires_client_cert() => {
            return Err(TlsError::ClientVerifyWithoutTls);
        }
        (None, None) => return Ok(None),
        (Some(cert), Some(key)) => (cert.as_path(), key.as_path()),
    };

    let provider = provider();
    let certified = load_certified_key(cert_path, key_path, WHAT_CERT, WHAT_KEY, &provider)?;

    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(rustls::DEFAULT_VERSIONS)?;
    let builder = if opts.requires_client_cert() {
        let verifier = match &opts.client_ca {
            Some(ca) => WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots_from_file(ca, WHAT_CLIENT_CA)?),
                provider,
            )
            .build()?,
            // Naming every system CA in the CertificateRequest would bloat each handshake by
            // kilobytes; like Go with no ClientCAs, send no hints.
            None => {
                WebPkiClientVerifier::builder_with_provider(Arc::new(system_roots()?), provider)
                    .clear_root_hint_subjects()
                    .build()?
            }
        };
        builder.with_client_cert_verifier(verifier)
    } else {
        builder.with_no_client_auth()
    };
    let mut config = builder.with_cert_resolver(Arc::new(SingleCertAndKey::from(certified)));
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Some(Arc::new(config)))
}
