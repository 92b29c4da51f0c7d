//! Our own clients' TLS configuration (the Rust client, `ldlm-bench`, tests), and the name a
//! server's certificate must carry.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::sign::SingleCertAndKey;
use rustls::{DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use super::pem::{load_certified_key, trust_roots};
use super::{TlsError, provider};

/// Builds a client TLS configuration for our own tools and tests (`ldlm-bench`, integration
/// tests), advertising `alpn`.
///
/// * `ca`: PEM file of CA certificates to trust; `None` → the operating system's trust store.
/// * `client_cert`: `(certificate file, key file)` to present for mTLS.
/// * `skip_verify`: accept **any** server certificate (like Go's `InsecureSkipVerify`), for
///   self-signed test servers. The handshake signatures are still checked, but nothing proves
///   the server is who it claims to be: never use it against a server you do not control.
///   `ca` is ignored when set.
pub fn client_config(
    ca: Option<&Path>,
    client_cert: Option<(&Path, &Path)>,
    skip_verify: bool,
    alpn: &[&[u8]],
) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let provider = provider();
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(rustls::DEFAULT_VERSIONS)?;
    let builder = if skip_verify {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoServerVerification(provider.clone())))
    } else {
        let roots = trust_roots(ca, "CA certificate")?;
        builder.with_root_certificates(roots)
    };
    let mut config = match client_cert {
        Some((cert, key)) => {
            let certified =
                load_certified_key(cert, key, "client certificate", "client key", &provider)?;
            builder.with_client_cert_resolver(Arc::new(SingleCertAndKey::from(certified)))
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// The name a server's certificate must carry when it is dialled at `address` (`host:port`,
/// `[v6]:port` or a bare host): the host part, as a DNS name or an IP address. `None` if the
/// host is neither. Used by the Rust client and by `ldlm-bench`.
pub fn server_name(address: &str) -> Option<rustls_pki_types::ServerName<'static>> {
    let host = match address.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => address,
    };
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    rustls_pki_types::ServerName::try_from(host.to_owned()).ok()
}

/// Accepts any server certificate (`skip_verify`), still checking the handshake signatures
/// with the provider's algorithms so the connection is at least consistent.
struct NoServerVerification(Arc<CryptoProvider>);

impl fmt::Debug for NoServerVerification {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NoServerVerification")
    }
}

impl ServerCertVerifier for NoServerVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
