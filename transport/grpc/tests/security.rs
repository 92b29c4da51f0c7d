//! Password, TLS and mTLS, and malformed or oversized requests.

mod common;

use std::time::Duration;

use bytes::{Buf, BufMut};
use common::*;
use ldlm_engine::EngineConfig;
use ldlm_grpc::GrpcOptions;
use ldlm_proto::ldlm::ldlm_client::LdlmClient;
use ldlm_security::password::Password;
use ldlm_security::tls::{TlsOptions, install_default_provider, server_config};
use ldlm_testkit::TestPki;
use prost::Message as _;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Code, Status};

const SLACK: Duration = Duration::from_secs(3);

fn with_auth<T>(message: T, value: Option<&str>) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(value) = value {
        request
            .metadata_mut()
            .insert("authorization", value.parse().expect("ascii"));
    }
    request
}

#[tokio::test]
async fn password() {
    let options = GrpcOptions {
        password: Some(Password::new("s3cret")),
        ..GrpcOptions::default()
    };
    let server = TestServer::with(EngineConfig::default(), options).await;
    let mut c = server.client().await;

    let status = c
        .try_lock(with_auth(try_req("p"), None))
        .await
        .expect_err("refused");
    assert_eq!(status.code(), Code::Unauthenticated);
    assert_eq!(status.message(), "missing credentials");
    for wrong in ["", "s3cre", "s3cret ", "Bearer s3cret", "S3CRET"] {
        let status = c
            .lock(with_auth(lock_req("p"), Some(wrong)))
            .await
            .expect_err("refused");
        assert_eq!(status.code(), Code::Unauthenticated, "{wrong:?}");
        assert_eq!(status.message(), "invalid credentials", "{wrong:?}");
    }
    let status = c
        .unlock(with_auth(
            ldlm_proto::ldlm::UnlockRequest {
                name: "p".into(),
                key: "k".into(),
            },
            Some("nope"),
        ))
        .await
        .expect_err("refused");
    assert_eq!(status.code(), Code::Unauthenticated);
    assert!(server.engine.list().is_empty(), "nothing was locked");

    let r = c
        .try_lock(with_auth(try_req("p"), Some("s3cret")))
        .await
        .expect("accepted")
        .into_inner();
    assert_locked(&r, "p");
    let r = c
        .renew(with_auth(
            ldlm_proto::ldlm::RenewRequest {
                name: "p".into(),
                key: r.key.clone(),
                lock_timeout_seconds: 10,
            },
            Some("s3cret"),
        ))
        .await
        .expect("accepted")
        .into_inner();
    assert!(r.locked);
}

/// Server options with TLS from the kit's server certificate; `mtls` also requires a client
/// certificate signed by the kit's CA.
fn server_options(pki: &TestPki, mtls: bool) -> GrpcOptions {
    let tls = TlsOptions {
        cert: Some(pki.server_cert()),
        key: Some(pki.server_key()),
        client_ca: mtls.then(|| pki.ca()),
        client_cert_verify: false,
    };
    GrpcOptions {
        tls: server_config(&tls, &[b"h2"]).expect("tls config"),
        ..GrpcOptions::default()
    }
}

/// tonic's own TLS client (not ours), trusting the kit's CA; `identity` presents the kit's
/// client certificate.
fn client_tls(pki: &TestPki, identity: bool) -> ClientTlsConfig {
    let config = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(pki.read("ca.pem")))
        .domain_name("localhost");
    if identity {
        config.identity(Identity::from_pem(
            pki.read("client.pem"),
            pki.read("client.key"),
        ))
    } else {
        config
    }
}

async fn tls_client(
    server: &TestServer,
    tls: ClientTlsConfig,
) -> Result<Client, tonic::transport::Error> {
    let channel = Endpoint::from_shared(format!("https://{}", server.addr))
        .expect("url")
        .tls_config(tls)?
        .connect_timeout(SLACK)
        .connect()
        .await?;
    Ok(LdlmClient::new(channel))
}

#[tokio::test]
async fn tls() {
    install_default_provider();
    let pki = TestPki::generate();
    let server = TestServer::with(EngineConfig::default(), server_options(&pki, false)).await;
    let mut c = tls_client(&server, client_tls(&pki, false))
        .await
        .expect("TLS connect");
    let r = try_lock(&mut c, try_req("tls")).await;
    assert_locked(&r, "tls");
    assert!(unlock(&mut c, "tls", &r.key).await.unlocked);

    // Plaintext HTTP/2 against the TLS port fails.
    let plain = within(SLACK, "plaintext attempt", async {
        let mut c = LdlmClient::connect(server.url()).await?;
        c.try_lock(try_req("x"))
            .await
            .map(|_| ())
            .map_err(Into::into)
    })
    .await;
    let plain: Result<(), Box<dyn std::error::Error + Send + Sync>> = plain;
    assert!(plain.is_err());
}

#[tokio::test]
async fn mtls() {
    install_default_provider();
    let pki = TestPki::generate();
    let server = TestServer::with(EngineConfig::default(), server_options(&pki, true)).await;

    let anonymous = within(SLACK, "client without a certificate", async {
        let mut c = tls_client(&server, client_tls(&pki, false)).await?;
        c.try_lock(try_req("m"))
            .await
            .map(|_| ())
            .map_err(Into::into)
    })
    .await;
    let anonymous: Result<(), Box<dyn std::error::Error + Send + Sync>> = anonymous;
    assert!(anonymous.is_err(), "a client certificate is required");

    let mut c = tls_client(&server, client_tls(&pki, true))
        .await
        .expect("mTLS connect");
    assert_locked(&try_lock(&mut c, try_req("m")).await, "m");
    // One TLS connection is one session too.
    drop(c);
    let engine = server.engine.clone();
    eventually(SLACK, "released on disconnect", || engine.list().is_empty()).await;
}

#[tokio::test]
async fn a_silent_tls_client_does_not_block_others() {
    install_default_provider();
    let pki = TestPki::generate();
    let server = TestServer::with(EngineConfig::default(), server_options(&pki, false)).await;
    // Connects but never sends a ClientHello.
    let _silent: Vec<tokio::net::TcpStream> = {
        let mut v = Vec::new();
        for _ in 0..3 {
            v.push(
                tokio::net::TcpStream::connect(server.addr)
                    .await
                    .expect("connect"),
            );
        }
        v
    };
    let mut c = within(
        SLACK,
        "TLS client while others stall",
        tls_client(&server, client_tls(&pki, false)),
    )
    .await
    .expect("connect");
    assert_locked(
        &within(SLACK, "call", try_lock(&mut c, try_req("s"))).await,
        "s",
    );
}

/// Sends raw bytes as a request message and returns raw response bytes.
#[derive(Clone, Copy, Default)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> RawCodec {
        RawCodec
    }

    fn decoder(&mut self) -> RawCodec {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;

    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        let mut out = vec![0u8; src.remaining()];
        src.copy_to_slice(&mut out);
        Ok(Some(out))
    }
}

async fn raw_call(
    channel: Channel,
    method: &'static str,
    body: Vec<u8>,
) -> Result<Vec<u8>, Status> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|e| Status::unavailable(e.to_string()))?;
    grpc.unary(
        tonic::Request::new(body),
        http::uri::PathAndQuery::from_static(method),
        RawCodec,
    )
    .await
    .map(tonic::Response::into_inner)
}

#[tokio::test]
async fn malformed_requests_get_an_error_status() {
    let server = TestServer::start().await;
    let channel = Endpoint::from_shared(server.url())
        .expect("url")
        .connect()
        .await
        .expect("connect");
    // Field 1 (name) with invalid UTF-8.
    let bad_utf8 = vec![0x0a, 2, 0xff, 0xfe];
    for method in [
        "/ldlm.LDLM/Lock",
        "/ldlm.LDLM/TryLock",
        "/ldlm.LDLM/Unlock",
        "/ldlm.LDLM/RefreshLock",
        "/ldlm.LDLM/Renew",
    ] {
        let status = raw_call(channel.clone(), method, bad_utf8.clone())
            .await
            .expect_err("invalid UTF-8 refused");
        assert_eq!(status.code(), Code::Internal, "{method}: {status:?}");
        // Not a protobuf message at all (a truncated length-delimited field).
        let status = raw_call(channel.clone(), method, vec![0x0a, 0x7f, b'x'])
            .await
            .expect_err("garbage refused");
        assert_eq!(status.code(), Code::Internal, "{method}: {status:?}");
    }
    let status = raw_call(channel.clone(), "/ldlm.LDLM/Nope", Vec::new())
        .await
        .expect_err("unknown method");
    assert_eq!(status.code(), Code::Unimplemented);
    assert!(server.engine.list().is_empty());

    // The connection still works, and so does a well-formed raw request.
    let good = ldlm_proto::ldlm::TryLockRequest {
        name: "ok".into(),
        ..Default::default()
    }
    .encode_to_vec();
    let reply = raw_call(channel.clone(), "/ldlm.LDLM/TryLock", good)
        .await
        .expect("ok");
    let reply = ldlm_proto::ldlm::LockResponse::decode(&reply[..]).expect("decode");
    assert_locked(&reply, "ok");
}

#[tokio::test]
async fn oversized_messages_are_refused() {
    let options = GrpcOptions {
        max_message_bytes: 64 * 1024,
        ..GrpcOptions::default()
    };
    let server = TestServer::with(EngineConfig::default(), options).await;
    let mut c = server.client().await;
    let status = c
        .try_lock(try_req(&"z".repeat(100 * 1024)))
        .await
        .expect_err("too large");
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
    // Under the message limit, over the name limit: a lock-domain error.
    let r = try_lock(&mut c, try_req(&"z".repeat(8 * 1024))).await;
    assert!(!r.locked);
    assert!(r.error.expect("error").message.contains("too long"));
    assert_locked(&try_lock(&mut c, try_req("small")).await, "small");
}
