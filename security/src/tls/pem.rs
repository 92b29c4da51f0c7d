//! Reading what a TLS configuration is built from: certificate chains and private keys from
//! PEM files, trust stores from a PEM file or the operating system. Errors name the file and
//! the option (`what`) that configured it.

use std::path::Path;

use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::TlsError;

fn read_file(path: &Path, what: &'static str) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        what,
        path: path.to_path_buf(),
        source,
    })
}

/// All certificates in a PEM file; an error if there are none.
pub(super) fn load_certs(
    path: &Path,
    what: &'static str,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
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
pub(super) fn load_key(
    path: &Path,
    what: &'static str,
) -> Result<PrivateKeyDer<'static>, TlsError> {
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
pub(super) fn load_certified_key(
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
pub(super) fn roots_from_file(path: &Path, what: &'static str) -> Result<RootCertStore, TlsError> {
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
pub(super) fn system_roots() -> Result<RootCertStore, TlsError> {
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

/// The CAs a peer's certificate is verified against: those in `ca` (named `what` in errors),
/// else the operating system's trust store.
pub(super) fn trust_roots(
    ca: Option<&Path>,
    what: &'static str,
) -> Result<RootCertStore, TlsError> {
    match ca {
        Some(ca) => roots_from_file(ca, what),
        None => system_roots(),
    }
}
