//! # ldlm-testkit
//!
//! Test certificates for the TLS and mTLS tests of the LDLM crates, generated with rcgen when a
//! test runs and written as PEM files into a temporary directory; and ports for servers whose
//! addresses must be known before they start ([`unused_port`]).
//!
//! It exists so that there is one certificate set-up instead of five: ldlm-security's unit
//! tests, the gRPC and REST transports' tests, the Rust client's tests and ldlm-bench's tests
//! all need the same things (a CA, a server certificate it signed, a client certificate for
//! mTLS), and each used to build them with its own rcgen code, each slightly differently. A
//! change, such as a name the server certificate must carry, is now made once.
//!
//! It is a dev-dependency only (`publish = false`): its keys are throwaway and its errors are
//! panics. It depends on rcgen and tempfile and on no LDLM crate, because ldlm-security's own
//! unit tests use it: a dependency back on the crate under test would build a second, distinct
//! copy of that crate, whose types the tests could not mix with their own.
//!
//! ```
//! let pki = ldlm_testkit::TestPki::generate();
//! assert!(pki.ca().exists() && pki.server_key().exists());
//! ```

mod ports;

pub use ports::unused_port;

use std::path::{Path, PathBuf};

use ExtendedKeyUsagePurpose::{ClientAuth, ServerAuth};
use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};

// The files a `TestPki` writes. Tests may name them directly (`TestPki::path`), e.g. to check
// that an error message names the file, so they are part of the interface.
const CA: &str = "ca.pem";
const SERVER_CERT: &str = "server.pem";
const SERVER_KEY: &str = "server.key";
const SERVER_CHAIN: &str = "server-chain.pem";
const NODE_CERT: &str = "node.pem";
const NODE_KEY: &str = "node.key";
const CLIENT_CERT: &str = "client.pem";
const CLIENT_KEY: &str = "client.key";
const OTHER_CA: &str = "other-ca.pem";
const OTHER_CLIENT_CERT: &str = "other-client.pem";
const OTHER_CLIENT_KEY: &str = "other-client.key";
const SELF_SIGNED_CERT: &str = "self-signed.pem";
const SELF_SIGNED_KEY: &str = "self-signed.key";

/// The names the server certificates carry: tests dial the server either by name or by the
/// address it listens on (the Rust client and ldlm-bench derive the expected name from the
/// address), so both must verify.
const SERVER_NAMES: [&str; 2] = ["localhost", "127.0.0.1"];

/// A set of test certificates and keys, as PEM files in a temporary directory that is deleted
/// when this value is dropped (keep it alive as long as a server or client reads the files).
///
/// | file | what |
/// |---|---|
/// | `ca.pem` | the test CA |
/// | `server.pem`, `server.key` | server certificate for `localhost` and `127.0.0.1`, signed by the CA |
/// | `server-chain.pem` | `server.pem` followed by `ca.pem` (a chain file, leaf first) |
/// | `node.pem`, `node.key` | cluster node certificate for `localhost` and `127.0.0.1`, for server and client authentication (nodes present it to each other under mTLS), signed by the CA |
/// | `client.pem`, `client.key` | client certificate (mTLS), signed by the CA |
/// | `other-ca.pem` | a second, unrelated CA |
/// | `other-client.pem`, `other-client.key` | client certificate signed by the unrelated CA |
/// | `self-signed.pem`, `self-signed.key` | self-signed certificate for `localhost` and `127.0.0.1` |
///
/// Keys are ECDSA P-256 (rcgen's default). Every call generates fresh keys, so tests never
/// share state through them.
#[derive(Debug)]
pub struct TestPki {
    dir: tempfile::TempDir,
}

impl TestPki {
    /// Generates every certificate and key and writes them into a new temporary directory.
    ///
    /// # Panics
    ///
    /// If a key or certificate cannot be generated or a file cannot be written: this is test
    /// set-up, where a panic is the clearest report.
    pub fn generate() -> TestPki {
        let dir = tempfile::tempdir().expect("create a temporary directory for test certificates");
        let pki = TestPki { dir };

        let (ca_cert, ca) = certificate_authority("LDLM test CA");
        pki.write(CA, &ca_cert.pem());

        let (server_cert, server_key) = signed(&ca, "localhost", &SERVER_NAMES, &[ServerAuth]);
        pki.write(SERVER_CERT, &server_cert.pem());
        pki.write(SERVER_KEY, &server_key.serialize_pem());
        pki.write(
            SERVER_CHAIN,
            &format!("{}{}", server_cert.pem(), ca_cert.pem()),
        );

        let (node_cert, node_key) = signed(
            &ca,
            "ldlm test node",
            &SERVER_NAMES,
            &[ServerAuth, ClientAuth],
        );
        pki.write(NODE_CERT, &node_cert.pem());
        pki.write(NODE_KEY, &node_key.serialize_pem());

        let (client_cert, client_key) = signed(&ca, "ldlm test client", &[], &[ClientAuth]);
        pki.write(CLIENT_CERT, &client_cert.pem());
        pki.write(CLIENT_KEY, &client_key.serialize_pem());

        // A CA no test server trusts, and a well-formed client certificate from it: what a
        // client of another deployment would present.
        let (other_ca_cert, other_ca) = certificate_authority("LDLM unrelated test CA");
        pki.write(OTHER_CA, &other_ca_cert.pem());
        let (other_cert, other_key) = signed(&other_ca, "unrelated client", &[], &[ClientAuth]);
        pki.write(OTHER_CLIENT_CERT, &other_cert.pem());
        pki.write(OTHER_CLIENT_KEY, &other_key.serialize_pem());

        // No extended key usage, like a quick `openssl req -x509` certificate: the server side
        // of a "trust nothing but this" or "skip verification" test, or a stray client cert.
        let key = KeyPair::generate().expect("generate the self-signed certificate's key");
        let mut params = CertificateParams::new(names(&SERVER_NAMES)).expect("certificate names");
        params
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        let cert = params
            .self_signed(&key)
            .expect("self-sign the test certificate");
        pki.write(SELF_SIGNED_CERT, &cert.pem());
        pki.write(SELF_SIGNED_KEY, &key.serialize_pem());

        pki
    }

    /// The temporary directory holding the files (tests may add their own files to it).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The path of `file` in [`dir`](Self::dir), whether or not it exists (tests of missing
    /// files use that).
    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }

    /// The contents of `file` (for APIs that take PEM text rather than a path).
    ///
    /// # Panics
    ///
    /// If the file cannot be read.
    pub fn read(&self, file: &str) -> String {
        let path = self.path(file);
        std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("read test file {}: {e}", path.display()))
    }

    /// `ca.pem`: the CA that signed the server and client certificates.
    pub fn ca(&self) -> PathBuf {
        self.path(CA)
    }

    /// `server.pem`: the server certificate, for `localhost` and `127.0.0.1`.
    pub fn server_cert(&self) -> PathBuf {
        self.path(SERVER_CERT)
    }

    /// `server.key`: the server certificate's private key (PKCS#8).
    pub fn server_key(&self) -> PathBuf {
        self.path(SERVER_KEY)
    }

    /// `server-chain.pem`: the server certificate followed by the CA certificate.
    pub fn server_chain(&self) -> PathBuf {
        self.path(SERVER_CHAIN)
    }

    /// `node.pem`: a cluster node's certificate, for `localhost` and `127.0.0.1`, allowing both
    /// server and client authentication (under mTLS nodes present it to each other).
    pub fn node_cert(&self) -> PathBuf {
        self.path(NODE_CERT)
    }

    /// `node.key`: the node certificate's private key (PKCS#8).
    pub fn node_key(&self) -> PathBuf {
        self.path(NODE_KEY)
    }

    /// `client.pem`: the client certificate for mTLS, signed by [`ca`](Self::ca).
    pub fn client_cert(&self) -> PathBuf {
        self.path(CLIENT_CERT)
    }

    /// `client.key`: the client certificate's private key (PKCS#8).
    pub fn client_key(&self) -> PathBuf {
        self.path(CLIENT_KEY)
    }

    /// `other-ca.pem`: a CA unrelated to [`ca`](Self::ca), for "wrong CA" tests.
    pub fn other_ca(&self) -> PathBuf {
        self.path(OTHER_CA)
    }

    /// `other-client.pem`: a client certificate signed by [`other_ca`](Self::other_ca), which
    /// a server trusting [`ca`](Self::ca) must refuse.
    pub fn other_client_cert(&self) -> PathBuf {
        self.path(OTHER_CLIENT_CERT)
    }

    /// `other-client.key`: the key of [`other_client_cert`](Self::other_client_cert).
    pub fn other_client_key(&self) -> PathBuf {
        self.path(OTHER_CLIENT_KEY)
    }

    /// `self-signed.pem`: a self-signed certificate for `localhost` and `127.0.0.1`, trusted
    /// by nothing else here.
    pub fn self_signed_cert(&self) -> PathBuf {
        self.path(SELF_SIGNED_CERT)
    }

    /// `self-signed.key`: the key of [`self_signed_cert`](Self::self_signed_cert).
    pub fn self_signed_key(&self) -> PathBuf {
        self.path(SELF_SIGNED_KEY)
    }

    fn write(&self, file: &str, pem: &str) {
        let path = self.path(file);
        std::fs::write(&path, pem)
            .unwrap_or_else(|e| panic!("write test file {}: {e}", path.display()));
    }
}

/// A self-signed CA named `common_name`: its certificate and the issuer that signs with it.
fn certificate_authority(common_name: &str) -> (Certificate, Issuer<'static, KeyPair>) {
    let key = KeyPair::generate().expect("generate the test CA's key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let cert = params.self_signed(&key).expect("self-sign the test CA");
    (cert, Issuer::new(params, key))
}

/// A leaf certificate for `sans` (DNS names or IP addresses), signed by `issuer`, usable for
/// `usage` only: verifiers check the extended key usage, so a server certificate cannot pass
/// as a client's and the other way round.
fn signed(
    issuer: &Issuer<'_, KeyPair>,
    common_name: &str,
    sans: &[&str],
    usages: &[ExtendedKeyUsagePurpose],
) -> (Certificate, KeyPair) {
    let key = KeyPair::generate().expect("generate a test certificate's key");
    let mut params = CertificateParams::new(names(sans)).expect("certificate names");
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.extended_key_usages = usages.to_vec();
    let cert = params
        .signed_by(&key, issuer)
        .expect("sign a test certificate");
    (cert, key)
}

/// Subject alternative names; rcgen makes an IP address SAN of those that parse as one.
fn names(names: &[&str]) -> Vec<String> {
    names.iter().map(|&n| n.to_owned()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_every_file_as_pem() {
        let pki = TestPki::generate();
        for cert in [
            pki.ca(),
            pki.server_cert(),
            pki.node_cert(),
            pki.client_cert(),
            pki.other_ca(),
            pki.other_client_cert(),
            pki.self_signed_cert(),
        ] {
            let pem = std::fs::read_to_string(&cert).expect("read");
            assert_eq!(
                pem.matches("-----BEGIN CERTIFICATE-----").count(),
                1,
                "{cert:?}"
            );
        }
        for key in [
            pki.server_key(),
            pki.node_key(),
            pki.client_key(),
            pki.other_client_key(),
            pki.self_signed_key(),
        ] {
            let pem = std::fs::read_to_string(&key).expect("read");
            assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"), "{key:?}");
        }
        let chain = pki.read("server-chain.pem");
        assert_eq!(
            chain,
            format!("{}{}", pki.read("server.pem"), pki.read("ca.pem"))
        );
    }

    #[test]
    fn each_set_is_fresh_and_removed_on_drop() {
        let a = TestPki::generate();
        let b = TestPki::generate();
        assert_ne!(a.dir(), b.dir());
        assert_ne!(a.read("ca.pem"), b.read("ca.pem"));
        let dir = a.dir().to_path_buf();
        drop(a);
        assert!(
            !dir.exists(),
            "the temporary directory outlived the TestPki"
        );
    }
}
