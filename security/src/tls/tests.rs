use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ldlm_testkit::TestPki;
use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::pem::load_certs;
use super::*;

#[test]
fn server_name_is_the_host_part() {
    let name = |address| server_name(address).map(|n| n.to_str().into_owned());
    assert_eq!(name("localhost:3144").as_deref(), Some("localhost"));
    assert_eq!(name("[::1]:3144").as_deref(), Some("::1"));
    assert_eq!(name("127.0.0.1:8080").as_deref(), Some("127.0.0.1"));
    assert_eq!(name("example").as_deref(), Some("example"));
    assert_eq!(name("bad host:1"), None);
}

/// The test kit's certificates (file names as in `TestPki`), plus files that are not usable
/// PEM, which only the loading-error tests here need.
struct Pki {
    kit: TestPki,
}

impl Pki {
    fn new() -> Self {
        let kit = TestPki::generate();
        for (name, contents) in [
            ("empty.pem", ""),
            ("garbage.pem", "this is not PEM at all\n"),
            (
                "truncated.pem",
                "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIU\n",
            ),
        ] {
            std::fs::write(kit.path(name), contents).expect("write pem");
        }
        Self { kit }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.kit.path(name)
    }

    fn opts(&self, cert: Option<&str>, key: Option<&str>, client_ca: Option<&str>) -> TlsOptions {
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
    opts.cert = Some(pki.kit.dir().to_path_buf());
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

async fn exchange(server: Arc<rustls::ServerConfig>, client: Arc<rustls::ClientConfig>) -> Outcome {
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
    // Self-signed, and well-formed but from another CA.
    for unrelated in [
        ("self-signed.pem", "self-signed.key"),
        ("other-client.pem", "other-client.key"),
    ] {
        let out = exchange(
            pki.server(Some("ca.pem"), &[b"h2"]),
            client(&pki, Some("ca.pem"), Some(unrelated), false, &[b"h2"]),
        )
        .await;
        let e = out
            .server
            .expect_err("server accepted an unrelated certificate");
        assert!(e.to_string().to_lowercase().contains("certificate"), "{e}");
        assert!(out.client.is_err(), "client saw no error");
    }
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
        &pki.opts(Some("self-signed.pem"), Some("self-signed.key"), None),
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

/// mTLS options of a cluster node presenting `cert`/`key` and trusting `ca.pem`.
fn node_options(pki: &Pki, cert: &str, key: &str) -> TlsOptions {
    TlsOptions {
        cert: Some(pki.path(cert)),
        key: Some(pki.path(key)),
        client_ca: Some(pki.path("ca.pem")),
        client_cert_verify: false,
    }
}

/// The start-up check agrees with what two nodes' handshake does: one node serving with the
/// certificate, the other dialling with it as its client certificate, both trusting the CA.
/// A certificate for both server and client authentication passes both; a server-only one
/// fails both (the peer refuses it as a client certificate).
#[tokio::test]
async fn a_node_certificate_is_checked_as_its_peers_check_it() {
    let pki = Pki::new();
    for (cert, key, usable) in [
        ("node.pem", "node.key", true),
        ("server.pem", "server.key", false),
    ] {
        let opts = node_options(&pki, cert, key);
        let checked = check_node_certificate(&opts, "localhost:7001");
        let serving = server_config(&opts, &[b"h2"])
            .expect("server config")
            .expect("TLS on");
        let dialling = client(&pki, Some("ca.pem"), Some((cert, key)), false, &[b"h2"]);
        let out = exchange(serving, dialling).await;
        let handshake = out.client.is_ok() && out.server.is_ok();
        assert_eq!(handshake, usable, "handshake between two nodes with {cert}");
        assert_eq!(checked.is_ok(), usable, "check of {cert}: {checked:?}");
    }
}

/// A certificate the peers would refuse is an error that names the file, this node's address,
/// the role it failed in and what to use instead.
#[test]
fn a_refused_node_certificate_says_what_to_do() {
    let pki = Pki::new();
    let message = |opts: &TlsOptions, address: &str| {
        check_node_certificate(opts, address)
            .expect_err("refused")
            .to_string()
    };

    let server_only = message(
        &node_options(&pki, "server.pem", "server.key"),
        "127.0.0.1:7001",
    );
    for part in [
        "server.pem",
        "127.0.0.1:7001",
        "as a client certificate",
        "clientAuth",
    ] {
        assert!(server_only.contains(part), "{part:?} in {server_only}");
    }

    let elsewhere = message(&node_options(&pki, "node.pem", "node.key"), "10.9.8.7:7001");
    for part in [
        "node.pem",
        "10.9.8.7:7001",
        "as a server certificate",
        "subject alternative name",
    ] {
        assert!(elsewhere.contains(part), "{part:?} in {elsewhere}");
    }

    assert!(
        matches!(
            check_node_certificate(&node_options(&pki, "node.pem", "node.key"), "10.9.8.7:7001"),
            Err(TlsError::NodeCertificate {
                role: NodeRole::ServerName,
                ..
            })
        ),
        "a name mismatch alone is told apart (the caller only warns)"
    );

    let mut untrusted = node_options(&pki, "node.pem", "node.key");
    untrusted.client_ca = Some(pki.path("other-ca.pem"));
    let refused = check_node_certificate(&untrusted, "localhost:7001").expect_err("untrusted");
    assert!(
        !matches!(
            refused,
            TlsError::NodeCertificate {
                role: NodeRole::ServerName,
                ..
            }
        ),
        "an untrusted CA is not a name mismatch: {refused}"
    );
    assert!(refused.to_string().contains("client_ca"), "{refused}");

    // Without TLS there is nothing to check.
    check_node_certificate(&TlsOptions::default(), "localhost:7001").expect("plaintext");
}
