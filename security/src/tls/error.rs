//! [`TlsError`]: why a TLS configuration could not be built.

use std::io;
use std::path::PathBuf;

/// Why a TLS configuration could not be built. Every message names the option and the file
/// involved, so a person can fix it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// `tls_key` set without `tls_cert`.
    #[error(
        "tls_key is set ({}) but tls_cert is not: set both tls_cert and tls_key to enable TLS, \
         or neither",
        key.display()
    )]
    KeyWithoutCert {
        /// The configured key file.
        key: PathBuf,
    },
    /// `tls_cert` set without `tls_key`.
    #[error(
        "tls_cert is set ({}) but tls_key is not: set both tls_cert and tls_key to enable TLS, \
         or neither",
        cert.display()
    )]
    CertWithoutKey {
        /// The configured certificate file.
        cert: PathBuf,
    },
    /// `client_ca` or `client_cert_verify` without server TLS.
    #[error("client TLS certificate verification requires server TLS to be configured")]
    ClientVerifyWithoutTls,
    /// A configured file could not be read.
    #[error("cannot read the {what} file {}: {source}", path.display())]
    Read {
        /// Which file (option name or role).
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// A configured file holds malformed PEM.
    #[error("the {what} file {} is not valid PEM: {source}", path.display())]
    Pem {
        /// Which file (option name or role).
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The PEM parse error.
        source: rustls_pki_types::pem::Error,
    },
    /// A file that should hold certificates holds none.
    #[error(
        "the {what} file {} holds no PEM certificate (a \"-----BEGIN CERTIFICATE-----\" block)",
        path.display()
    )]
    NoCertificate {
        /// Which file (option name or role).
        what: &'static str,
        /// The file.
        path: PathBuf,
    },
    /// A file that should hold a private key holds none.
    #[error(
        "the {what} file {} holds no PEM private key (a \"-----BEGIN PRIVATE KEY-----\", \
         \"RSA PRIVATE KEY\" or \"EC PRIVATE KEY\" block)",
        path.display()
    )]
    NoPrivateKey {
        /// Which file (option name or role).
        what: &'static str,
        /// The file.
        path: PathBuf,
    },
    /// The private key is of a kind the crypto provider cannot use.
    #[error("the private key in {} cannot be used: {source}", path.display())]
    UnsupportedKey {
        /// The key file.
        path: PathBuf,
        /// Why rustls refused it.
        source: rustls::Error,
    },
    /// A certificate could not be parsed.
    #[error("the certificate in {} cannot be used: {source}", path.display())]
    BadCertificate {
        /// The certificate file.
        path: PathBuf,
        /// Why rustls refused it.
        source: rustls::Error,
    },
    /// The private key does not belong to the certificate.
    #[error(
        "the private key in {} does not match the certificate in {} (check that tls_key and \
         tls_cert belong together)",
        key.display(),
        cert.display()
    )]
    KeyMismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
    /// A CA certificate could not be used as a trust anchor.
    #[error(
        "a certificate in the {what} file {} cannot be used as a trusted CA: {source}",
        path.display()
    )]
    BadCaCertificate {
        /// Which file (option name or role).
        what: &'static str,
        /// The CA file.
        path: PathBuf,
        /// Why webpki refused it.
        source: rustls::Error,
    },
    /// No trusted CA certificate could be loaded from the operating system.
    #[error(
        "no trusted CA certificates could be loaded from the system trust store{detail}: \
         install them (e.g. the ca-certificates package, or set SSL_CERT_FILE) or name a CA \
         file explicitly (client_ca)"
    )]
    NoSystemRoots {
        /// What went wrong while loading them (may be empty), prefixed with " (".
        detail: String,
    },
    /// A cluster node's own certificate would be refused by its peers.
    #[error(
        "the tls_cert certificate {} would be refused by this node's peers as {} for {address} \
         (this node's address in cluster_peers): {detail}. Nodes use the server's TLS settings \
         with each other; {}",
        cert.display(),
        role.as_str(),
        role.remedy()
    )]
    NodeCertificate {
        /// The certificate file.
        cert: PathBuf,
        /// This node's address in `cluster_peers`.
        address: String,
        /// Whether it failed as a server or as a client certificate.
        role: super::node::NodeRole,
        /// Why the verifier refused it.
        detail: String,
    },
    /// The client certificate verifier could not be built.
    #[error("cannot set up client certificate verification: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    /// Any other rustls configuration error.
    #[error("TLS configuration error: {0}")]
    Rustls(#[from] rustls::Error),
}
