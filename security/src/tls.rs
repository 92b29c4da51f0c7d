//! TLS for the gRPC and REST listeners, and for our own clients (DESIGN §5, reference §10).
//!
//! Everything here uses rustls with the **ring** crypto provider, passed explicitly: the
//! workspace never builds aws-lc (DESIGN §6a).
//!
//! Server rules (go-ldlm compatible except where DESIGN §4.7 says otherwise):
//!
//! * no `tls_cert` and no `tls_key` → plaintext ([`server_config`] returns `Ok(None)`);
//! * `tls_cert` + `tls_key` → TLS 1.2 and 1.3;
//! * `tls_key` without `tls_cert` is an **error** (go-ldlm silently ignores it, B15), as is
//!   `tls_cert` without `tls_key`;
//! * `client_ca` → client certificates are required and verified against that CA;
//! * `client_cert_verify` alone → client certificates are required and verified against the
//!   operating system's trust store (read with `rustls-native-certs`);
//! * either of those without TLS → [`TlsError::ClientVerifyWithoutTls`]
//!   (`client TLS certificate verification requires server TLS to be configured`).

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};

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
    /// The client certificate verifier could not be built.
    #[error("cannot set up client certificate verification: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    /// Any other rustls configuration error.
    #[error("TLS configuration error: {0}")]
    Rustls(#[from] rustls::Error),
}

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
        let roots = match ca {
            Some(ca) => roots_from_file(ca, "CA certificate")?,
            None => system_roots()?,
        };
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

fn read_file(path: &Path, what: &'static str) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        what,
        path: path.to_path_buf(),
        source,
    })
}

/// All certificates in a PEM file; an error if there are none.
fn load_certs(path: &Path, what: &'static str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read_file(path, what)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::Pem {
            what,
            path: path.to_path_buf(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            what,
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

/// The first private key in a PEM file.
fn load_key(path: &Path, what: &'static str) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read_file(path, what)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|source| match source {
        rustls_pki_types::pem::Error::NoItemsFound => TlsError::NoPrivateKey {
            what,
            path: path.to_path_buf(),
        },
        source => TlsError::Pem {
            what,
            path: path.to_path_buf(),
            source,
        },
    })
}

/// Loads a certificate chain and its key, and checks that they belong together.
fn load_certified_key(
    cert_path: &Path,
    key_path: &Path,
    cert_what: &'static str,
    key_what: &'static str,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, TlsError> {
    let chain = load_certs(cert_path, cert_what)?;
    let key = load_key(key_path, key_what)?;
    let signing_key = provider
        .key_provider
        .load_private_key(key)
        .map_err(|source| TlsError::UnsupportedKey {
            path: key_path.to_path_buf(),
            source,
        })?;
    let certified = CertifiedKey::new(chain, signing_key);
    match certified.keys_match() {
        // `Unknown`: the provider cannot derive the public key; rustls accepts that too.
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {
            Ok(certified)
        }
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            Err(TlsError::KeyMismatch {
                cert: cert_path.to_path_buf(),
                key: key_path.to_path_buf(),
            })
        }
        Err(source) => Err(TlsError::BadCertificate {
            path: cert_path.to_path_buf(),
            source,
        }),
    }
}

/// A trust store holding every certificate of a PEM file (all must be usable).
fn roots_from_file(path: &Path, what: &'static str) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(path, what)? {
        roots
            .add(cert)
            .map_err(|source| TlsError::BadCaCertificate {
                what,
                path: path.to_path_buf(),
                source,
            })?;
    }
    Ok(roots)
}

/// The operating system's trust store. Unparsable entries are skipped (system stores often
/// hold a few); an empty result is an error.
fn system_roots() -> Result<RootCertStore, TlsError> {
    let loaded = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    roots.add_parsable_certificates(loaded.certs);
    if roots.is_empty() {
        let detail = if loaded.errors.is_empty() {
            String::new()
        } else {
            let errors: Vec<String> = loaded.errors.iter().map(|e| e.to_string()).collect();
            format!(" ({})", errors.join("; "))
        };
        return Err(TlsError::NoSystemRoots { detail });
    }
    Ok(roots)
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

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    #[test]
    fn server_name_is_the_host_part() {
        let name = |address| server_name(address).map(|n| n.to_str().into_owned());
        assert_eq!(name("localhost:3144").as_deref(), Some("localhost"));
        assert_eq!(name("[::1]:3144").as_deref(), Some("::1"));
        assert_eq!(name("127.0.0.1:8080").as_deref(), Some("127.0.0.1"));
        assert_eq!(name("example").as_deref(), Some("example"));
        assert_eq!(name("bad host:1"), None);
    }

    /// Certificates generated at test time, written as PEM files into a temporary directory.
    struct Pki {
        dir: tempfile::TempDir,
    }

    impl Pki {
        fn new() -> Self {
            let dir = tempfile::tempdir().expect("tempdir");
            let write = |name: &str, contents: &str| {
                std::fs::write(dir.path().join(name), contents).expect("write pem");
            };

            // The CA.
            let ca_key = KeyPair::generate().expect("ca key");
            let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
            ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            ca_params
                .distinguished_name
                .push(DnType::CommonName, "LDLM test CA");
            ca_params.key_usages = vec![
                KeyUsagePurpose::KeyCertSign,
                KeyUsagePurpose::CrlSign,
                KeyUsagePurpose::DigitalSignature,
            ];
            let ca_cert = ca_params.self_signed(&ca_key).expect("ca cert");
            write("ca.pem", &ca_cert.pem());
            let issuer = Issuer::new(ca_params, ca_key);

            // Server certificate for "localhost", signed by the CA.
            let server_key = KeyPair::generate().expect("server key");
            let mut params = CertificateParams::new(vec!["localhost".to_owned()]).expect("params");
            params
                .distinguished_name
                .push(DnType::CommonName, "localhost");
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
            let server_cert = params.signed_by(&server_key, &issuer).expect("server cert");
            write("server.pem", &server_cert.pem());
            write("server.key", &server_key.serialize_pem());
            // A chain file: leaf then CA.
            write(
                "server-chain.pem",
                &format!("{}{}", server_cert.pem(), ca_cert.pem()),
            );

            // Client certificate, signed by the CA.
            let client_key = KeyPair::generate().expect("client key");
            let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
            params
                .distinguished_name
                .push(DnType::CommonName, "ldlm test client");
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
            let client_cert = params.signed_by(&client_key, &issuer).expect("client cert");
            write("client.pem", &client_cert.pem());
            write("client.key", &client_key.serialize_pem());

            // An unrelated self-signed certificate (also named "localhost").
            let other_key = KeyPair::generate().expect("other key");
            let mut params = CertificateParams::new(vec!["localhost".to_owned()]).expect("params");
            params
                .distinguished_name
                .push(DnType::CommonName, "localhost");
            let other_cert = params.self_signed(&other_key).expect("other cert");
            write("other.pem", &other_cert.pem());
            write("other.key", &other_key.serialize_pem());

            write("empty.pem", "");
            write("garbage.pem", "this is not PEM at all\n");
            write(
                "truncated.pem",
                "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIU\n",
            );
            Self { dir }
        }

        fn path(&self, name: &str) -> PathBuf {
            self.dir.path().join(name)
        }

        fn opts(
            &self,
            cert: Option<&str>,
            key: Option<&str>,
            client_ca: Option<&str>,
        ) -> TlsOptions {
            TlsOptions {
                cert: cert.map(|n| self.path(n)),
                key: key.map(|n| self.path(n)),
                client_ca: client_ca.map(|n| self.path(n)),
                client_cert_verify: false,
            }
        }

        fn server(&self, client_ca: Option<&str>, alpn: &[&[u8]]) -> Arc<rustls::ServerConfig> {
            server_config(
                &self.opts(Some("server.pem"), Some("server.key"), client_ca),
                alpn,
            )
            .expect("server config")
            .expect("TLS configured")
        }
    }

    fn err(opts: &TlsOptions) -> TlsError {
        server_config(opts, &[b"h2"]).expect_err("should fail")
    }

    #[test]
    fn plaintext_when_nothing_configured() {
        assert!(
            server_config(&TlsOptions::default(), &[b"h2"])
                .unwrap()
                .is_none()
        );
        assert!(
            server_config(&TlsOptions::default(), &[])
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn key_without_cert() {
        let pki = Pki::new();
        let e = err(&pki.opts(None, Some("server.key"), None));
        assert!(matches!(e, TlsError::KeyWithoutCert { .. }), "{e:?}");
        let msg = e.to_string();
        assert!(
            msg.contains("server.key") && msg.contains("tls_cert"),
            "{msg}"
        );
        // Reported before the client verification error when both apply.
        let e = err(&pki.opts(None, Some("server.key"), Some("ca.pem")));
        assert!(matches!(e, TlsError::KeyWithoutCert { .. }), "{e:?}");
    }

    #[test]
    fn cert_without_key() {
        let pki = Pki::new();
        let e = err(&pki.opts(Some("server.pem"), None, None));
        assert!(matches!(e, TlsError::CertWithoutKey { .. }), "{e:?}");
        let msg = e.to_string();
        assert!(
            msg.contains("server.pem") && msg.contains("tls_key"),
            "{msg}"
        );
    }

    #[test]
    fn client_verification_without_tls() {
        let pki = Pki::new();
        let e = err(&pki.opts(None, None, Some("ca.pem")));
        assert!(matches!(e, TlsError::ClientVerifyWithoutTls), "{e:?}");
        assert_eq!(
            e.to_string(),
            "client TLS certificate verification requires server TLS to be configured"
        );
        let opts = TlsOptions {
            client_cert_verify: true,
            ..TlsOptions::default()
        };
        assert!(matches!(err(&opts), TlsError::ClientVerifyWithoutTls));
    }

    #[test]
    fn unreadable_files() {
        let pki = Pki::new();
        let e = err(&pki.opts(Some("nope.pem"), Some("server.key"), None));
        assert!(
            matches!(
                e,
                TlsError::Read {
                    what: "tls_cert",
                    ..
                }
            ),
            "{e:?}"
        );
        assert!(e.to_string().contains("nope.pem"), "{e}");

        let e = err(&pki.opts(Some("server.pem"), Some("nope.key"), None));
        assert!(
            matches!(
                e,
                TlsError::Read {
                    what: "tls_key",
                    ..
                }
            ),
            "{e:?}"
        );
        assert!(e.to_string().contains("nope.key"), "{e}");

        let e = err(&pki.opts(Some("server.pem"), Some("server.key"), Some("nope-ca.pem")));
        assert!(
            matches!(
                e,
                TlsError::Read {
                    what: "client_ca",
                    ..
                }
            ),
            "{e:?}"
        );
        assert!(e.to_string().contains("nope-ca.pem"), "{e}");

        // A directory is not a readable file either.
        let mut opts = pki.opts(None, Some("server.key"), None);
        opts.cert = Some(pki.dir.path().to_path_buf());
        assert!(matches!(
            err(&opts),
            TlsError::Read {
                what: "tls_cert",
                ..
            }
        ));
    }

    #[test]
    fn no_certificate_in_cert_file() {
        let pki = Pki::new();
        for file in ["server.key", "empty.pem", "garbage.pem"] {
            let e = err(&pki.opts(Some(file), Some("server.key"), None));
            assert!(
                matches!(
                    e,
                    TlsError::NoCertificate {
                        what: "tls_cert",
                        ..
                    }
                ),
                "{file}: {e:?}"
            );
            assert!(e.to_string().contains(file), "{e}");
        }
    }

    #[test]
    fn malformed_pem() {
        let pki = Pki::new();
        let e = err(&pki.opts(Some("truncated.pem"), Some("server.key"), None));
        assert!(
            matches!(
                e,
                TlsError::Pem {
                    what: "tls_cert",
                    ..
                }
            ),
            "{e:?}"
        );
        assert!(e.to_string().contains("truncated.pem"), "{e}");
    }

    #[test]
    fn no_private_key_in_key_file() {
        let pki = Pki::new();
        for file in ["server.pem", "empty.pem", "garbage.pem"] {
            let e = err(&pki.opts(Some("server.pem"), Some(file), None));
            assert!(
                matches!(
                    e,
                    TlsError::NoPrivateKey {
                        what: "tls_key",
                        ..
                    }
                ),
                "{file}: {e:?}"
            );
            assert!(e.to_string().contains(file), "{e}");
        }
    }

    #[test]
    fn key_not_matching_cert() {
        let pki = Pki::new();
        let e = err(&pki.opts(Some("server.pem"), Some("client.key"), None));
        assert!(matches!(e, TlsError::KeyMismatch { .. }), "{e:?}");
        let msg = e.to_string();
        assert!(
            msg.contains("server.pem") && msg.contains("client.key"),
            "{msg}"
        );
    }

    #[test]
    fn ca_file_without_certificates() {
        let pki = Pki::new();
        for file in ["empty.pem", "server.key", "garbage.pem"] {
            let e = err(&pki.opts(Some("server.pem"), Some("server.key"), Some(file)));
            assert!(
                matches!(
                    e,
                    TlsError::NoCertificate {
                        what: "client_ca",
                        ..
                    }
                ),
                "{file}: {e:?}"
            );
            assert!(e.to_string().contains(file), "{e}");
        }
    }

    #[test]
    fn valid_configs_load() {
        let pki = Pki::new();
        let plain = pki.server(None, &[b"h2"]);
        assert_eq!(plain.alpn_protocols, vec![b"h2".to_vec()]);
        let mtls = pki.server(Some("ca.pem"), &[b"http/1.1", b"h2"]);
        assert_eq!(
            mtls.alpn_protocols,
            vec![b"http/1.1".to_vec(), b"h2".to_vec()]
        );
        // A chain file (leaf first, then the CA) is accepted too.
        server_config(
            &pki.opts(Some("server-chain.pem"), Some("server.key"), None),
            &[b"h2"],
        )
        .unwrap()
        .unwrap();
    }

    #[tokio::test]
    async fn client_cert_verify_alone_uses_system_roots() {
        let pki = Pki::new();
        let mut opts = pki.opts(Some("server.pem"), Some("server.key"), None);
        opts.client_cert_verify = true;
        match server_config(&opts, &[b"h2"]) {
            Ok(Some(server)) => {
                // Our test CA is not in the system store: its client certificate is refused.
                let out = exchange(
                    server,
                    client(
                        &pki,
                        Some("ca.pem"),
                        Some(("client.pem", "client.key")),
                        false,
                        &[b"h2"],
                    ),
                )
                .await;
                assert!(
                    out.server.is_err(),
                    "client cert from a private CA was accepted"
                );
                assert!(out.client.is_err());
            }
            // A machine without a system trust store: the error must say what to do.
            Err(e @ TlsError::NoSystemRoots { .. }) => {
                assert!(e.to_string().contains("client_ca"), "{e}");
            }
            other => panic!("unexpected: {other:?}"),
        }
    }

    #[test]
    fn install_default_provider_is_idempotent() {
        install_default_provider();
        install_default_provider();
        assert!(CryptoProvider::get_default().is_some());
    }

    /// Outcome of one connection: the server side (negotiated ALPN) and the client side
    /// (handshake plus a round trip, since a TLS 1.3 client learns about a refused client
    /// certificate only on its first read).
    struct Outcome {
        server: io::Result<Option<Vec<u8>>>,
        client: io::Result<()>,
    }

    async fn exchange(
        server: Arc<rustls::ServerConfig>,
        client: Arc<rustls::ClientConfig>,
    ) -> Outcome {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let acceptor = tokio_rustls::TlsAcceptor::from(server);
        let server_task = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await?;
            let mut tls = acceptor.accept(tcp).await?;
            let alpn = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
            let mut buf = [0u8; 5];
            tls.read_exact(&mut buf).await?;
            assert_eq!(&buf, b"hello");
            tls.write_all(b"world").await?;
            tls.shutdown().await?;
            Ok::<_, io::Error>(alpn)
        });
        let connector = tokio_rustls::TlsConnector::from(client);
        let client_side = async move {
            let tcp = TcpStream::connect(addr).await?;
            let name = ServerName::try_from("localhost").expect("name");
            let mut tls = connector.connect(name, tcp).await?;
            tls.write_all(b"hello").await?;
            tls.flush().await?;
            let mut buf = [0u8; 5];
            tls.read_exact(&mut buf).await?;
            assert_eq!(&buf, b"world");
            Ok::<_, io::Error>(())
        };
        let limit = Duration::from_secs(20);
        let client = tokio::time::timeout(limit, client_side)
            .await
            .expect("client timed out");
        let server = tokio::time::timeout(limit, server_task)
            .await
            .expect("server timed out")
            .expect("server task panicked");
        Outcome { server, client }
    }

    fn client(
        pki: &Pki,
        ca: Option<&str>,
        cert: Option<(&str, &str)>,
        skip_verify: bool,
        alpn: &[&[u8]],
    ) -> Arc<rustls::ClientConfig> {
        let ca = ca.map(|n| pki.path(n));
        let cert = cert.map(|(c, k)| (pki.path(c), pki.path(k)));
        client_config(
            ca.as_deref(),
            cert.as_ref().map(|(c, k)| (c.as_path(), k.as_path())),
            skip_verify,
            alpn,
        )
        .expect("client config")
    }

    #[tokio::test]
    async fn mtls_accepts_ca_signed_client() {
        let pki = Pki::new();
        let out = exchange(
            pki.server(Some("ca.pem"), &[b"h2"]),
            client(
                &pki,
                Some("ca.pem"),
                Some(("client.pem", "client.key")),
                false,
                &[b"h2"],
            ),
        )
        .await;
        out.client.expect("client side");
        assert_eq!(out.server.expect("server side"), Some(b"h2".to_vec()));
    }

    #[tokio::test]
    async fn mtls_rejects_client_without_cert() {
        let pki = Pki::new();
        let out = exchange(
            pki.server(Some("ca.pem"), &[b"h2"]),
            client(&pki, Some("ca.pem"), None, false, &[b"h2"]),
        )
        .await;
        assert!(
            out.server.is_err(),
            "server accepted a client without a certificate"
        );
        assert!(out.client.is_err(), "client saw no error");
    }

    #[tokio::test]
    async fn mtls_rejects_unrelated_client_cert() {
        let pki = Pki::new();
        let out = exchange(
            pki.server(Some("ca.pem"), &[b"h2"]),
            client(
                &pki,
                Some("ca.pem"),
                Some(("other.pem", "other.key")),
                false,
                &[b"h2"],
            ),
        )
        .await;
        let e = out
            .server
            .expect_err("server accepted an unrelated certificate");
        assert!(e.to_string().to_lowercase().contains("certificate"), "{e}");
        assert!(out.client.is_err(), "client saw no error");
    }

    #[tokio::test]
    async fn tls_without_client_auth() {
        let pki = Pki::new();
        let out = exchange(
            pki.server(None, &[b"h2"]),
            client(&pki, Some("ca.pem"), None, false, &[b"h2"]),
        )
        .await;
        out.client.expect("client side");
        out.server.expect("server side");
    }

    #[tokio::test]
    async fn client_refuses_untrusted_server_unless_skip_verify() {
        let pki = Pki::new();
        let other = server_config(
            &pki.opts(Some("other.pem"), Some("other.key"), None),
            &[b"h2"],
        )
        .unwrap()
        .unwrap();
        let out = exchange(
            other.clone(),
            client(&pki, Some("ca.pem"), None, false, &[b"h2"]),
        )
        .await;
        assert!(out.client.is_err(), "client trusted an unrelated server");
        assert!(out.server.is_err());

        let out = exchange(other, client(&pki, None, None, true, &[b"h2"])).await;
        out.client.expect("skip_verify client");
        out.server.expect("server side");
    }

    #[tokio::test]
    async fn rest_alpn_negotiates_either_protocol() {
        let pki = Pki::new();
        let rest = pki.server(None, &[b"http/1.1", b"h2"]);
        for proto in [&b"h2"[..], &b"http/1.1"[..]] {
            let out = exchange(
                rest.clone(),
                client(&pki, Some("ca.pem"), None, false, &[proto]),
            )
            .await;
            out.client.expect("client side");
            assert_eq!(out.server.expect("server side"), Some(proto.to_vec()));
        }
        // A client that offers no ALPN still connects (plain HTTP/1.1 clients such as curl
        // without --http2 may do that).
        let out = exchange(rest, client(&pki, Some("ca.pem"), None, false, &[])).await;
        out.client.expect("client side");
        assert_eq!(out.server.expect("server side"), None);
    }

    #[tokio::test]
    async fn tls12_client_is_accepted() {
        let pki = Pki::new();
        let mut roots = RootCertStore::empty();
        for cert in load_certs(&pki.path("ca.pem"), "ca").unwrap() {
            roots.add(cert).unwrap();
        }
        let tls12 = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS12])
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let out = exchange(pki.server(None, &[b"h2"]), Arc::new(tls12)).await;
        out.client.expect("client side");
        out.server.expect("server side");
    }
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

/// A tonic/hyper connector that dials TCP and does the TLS handshake with one of our rustls
/// client configurations ([`client_config`]). The endpoint keeps an `http://` URI so tonic adds
/// no TLS layer of its own; used by the Rust client and by `ldlm-bench`.
#[derive(Clone)]
pub struct TlsConnector {
    config: Arc<rustls::ClientConfig>,
    server_name: rustls_pki_types::ServerName<'static>,
    address: Arc<str>,
}

impl std::fmt::Debug for TlsConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConnector")
            .field("address", &self.address)
            .finish()
    }
}

/// The stream a [`TlsConnector`] yields.
pub type TlsIo = hyper_util::rt::TokioIo<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;

impl TlsConnector {
    /// Connects to `address` (`host:port`), verifying the server as `server_name`.
    pub fn new(
        config: Arc<rustls::ClientConfig>,
        server_name: rustls_pki_types::ServerName<'static>,
        address: &str,
    ) -> TlsConnector {
        TlsConnector {
            config,
            server_name,
            address: Arc::from(address),
        }
    }
}

impl TlsConnector {
    /// Dials the address (TCP, `TCP_NODELAY`) and completes the TLS handshake.
    pub async fn connect(
        &self,
    ) -> io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
        let tcp = tokio::net::TcpStream::connect(&*self.address).await?;
        tcp.set_nodelay(true)?;
        tokio_rustls::TlsConnector::from(self.config.clone())
            .connect(self.server_name.clone(), tcp)
            .await
    }
}

impl tower_service::Service<http::Uri> for TlsConnector {
    type Response = TlsIo;
    type Error = std::io::Error;
    type Future =
        std::pin::Pin<Box<dyn std::future::Future<Output = Result<TlsIo, std::io::Error>> + Send>>;

    fn poll_ready(
        &mut self,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, _uri: http::Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move { Ok(hyper_util::rt::TokioIo::new(this.connect().await?)) })
    }
}
