//! HTTPS and mTLS, with certificates generated at test time.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use http::{Method, StatusCode};
use ldlm_rest::RestOptions;
use ldlm_security::tls::{TlsOptions, client_config, server_config};
use ldlm_testkit::TestPki;
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::harness::{Client, TestServer, full};

/// The REST listener's TLS configuration with the kit's server certificate; `client_ca` also
/// requires a client certificate signed by the kit's CA.
fn server_tls(pki: &TestPki, client_ca: bool) -> Arc<rustls::ServerConfig> {
    let options = TlsOptions {
        cert: Some(pki.server_cert()),
        key: Some(pki.server_key()),
        client_ca: client_ca.then(|| pki.ca()),
        client_cert_verify: false,
    };
    server_config(&options, &[b"http/1.1", b"h2"])
        .expect("config")
        .expect("TLS on")
}

async fn tls_server(pki: &TestPki, client_ca: bool) -> TestServer {
    TestServer::start(RestOptions {
        tls: Some(server_tls(pki, client_ca)),
        ..RestOptions::default()
    })
    .await
}

/// A TLS client; `Err` if the handshake fails.
async fn connect(
    server: &TestServer,
    ca: &Path,
    client_cert: Option<(&Path, &Path)>,
) -> std::io::Result<Client> {
    let config =
        client_config(Some(ca), client_cert, false, &[b"http/1.1"]).expect("client config");
    let stream = TcpStream::connect(server.addr).await?;
    let name = ServerName::try_from("localhost").expect("name");
    let tls = TlsConnector::from(config).connect(name, stream).await?;
    Ok(Client::over(tls).await)
}

#[tokio::test]
async fn https_session_and_lock() {
    let pki = TestPki::generate();
    let server = tls_server(&pki, false).await;
    let mut client = connect(&server, &pki.ca(), None).await.expect("handshake");
    client.new_session().await;
    assert_eq!(client.try_lock("over-tls").await["locked"], true);
    let reply = client.call(Method::DELETE, "/session", "").await;
    assert_eq!(reply.status, StatusCode::OK);
}

#[tokio::test]
async fn plaintext_client_gets_nothing_from_a_tls_server() {
    let pki = TestPki::generate();
    let server = tls_server(&pki, false).await;
    let mut client = server.client().await;
    let request = http::Request::post("/session")
        .header("host", "localhost")
        .body(full(""))
        .expect("request");
    assert!(
        client.try_send_request(request).await.is_err(),
        "no HTTP answer over a TLS port"
    );
}

#[tokio::test]
async fn mtls_requires_a_client_certificate() {
    let pki = TestPki::generate();
    let server = tls_server(&pki, true).await;
    let (cert, key) = (pki.client_cert(), pki.client_key());
    let mut client = connect(&server, &pki.ca(), Some((&cert, &key)))
        .await
        .expect("handshake");
    client.new_session().await;
    assert_eq!(client.try_lock("mtls").await["locked"], true);

    // Without a certificate: refused (TLS 1.3 reports it at the first read, so either the
    // handshake or the first request fails).
    let refused = match connect(&server, &pki.ca(), None).await {
        Err(_) => true,
        Ok(mut client) => {
            let request = http::Request::post("/session")
                .header("host", "localhost")
                .body(full(""))
                .expect("request");
            client.try_send_request(request).await.is_err()
        }
    };
    assert!(
        refused,
        "a client without a certificate must not get a session"
    );
    assert_eq!(server.session_count(), 1);
}

#[tokio::test]
async fn curl_over_https() {
    let pki = TestPki::generate();
    let server = tls_server(&pki, false).await;
    let url = format!("https://localhost:{}/session", server.addr.port());
    let ca = pki.ca();
    let output = tokio::task::spawn_blocking(move || {
        Command::new("curl")
            .args(["-sS", "-X", "POST", "--cacert"])
            .arg(&ca)
            .args(["-w", "\n%{http_code} %{http_version}", &url])
            .output()
            .expect("run curl")
    })
    .await
    .expect("join");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "curl failed: {stdout} {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let (body, status) = stdout.rsplit_once('\n').expect("status line");
    // The server's ALPN preference (http/1.1 first, as the server's REST TLS config) decides.
    assert!(status == "201 1.1" || status == "201 2", "{status}");
    assert!(body.starts_with("{\"session_id\": \""), "{body}");
}
