//! Connection handling: keep-alive, the connection limit, graceful shutdown.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, StatusCode};
use http_body_util::BodyExt;
use hyper::body::{Body, Frame};
use ldlm_rest::RestOptions;
use tokio::sync::mpsc;

use crate::harness::{AnyBody, TestServer};

/// A request body whose chunks the test sends one by one.
fn channel_body() -> (mpsc::UnboundedSender<Bytes>, AnyBody) {
    struct Channel(mpsc::UnboundedReceiver<Bytes>);
    impl Body for Channel {
        type Data = Bytes;
        type Error = Infallible;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
            self.0
                .poll_recv(cx)
                .map(|chunk| chunk.map(|c| Ok(Frame::data(c))))
        }
    }
    let (tx, rx) = mpsc::unbounded_channel();
    (tx, Channel(rx).boxed())
}

#[tokio::test]
async fn keep_alive_serves_many_requests_on_one_connection() {
    let server = TestServer::start(RestOptions::default()).await;
    let mut client = server.client_with_session().await;
    for i in 0..50 {
        let name = format!("k{}", i % 5);
        let locked = client.try_lock(&name).await;
        assert_eq!(locked["locked"], true);
        let key = locked["key"].as_str().expect("key").to_owned();
        assert_eq!(client.unlock(&name, &key).await["unlocked"], true);
    }
}

/// Over `max_connections`, a new connection is closed at once (as gRPC's: the client learns
/// immediately and can go elsewhere), and a slot that frees up is used again.
#[tokio::test]
async fn connection_limit_refuses_extra_connections() {
    let server = TestServer::start(RestOptions {
        max_connections: 2,
        ..RestOptions::default()
    })
    .await;
    let first = server.client_with_session().await;
    let _second = server.client_with_session().await;
    // The third connection is closed without an answer...
    let mut third = server.client().await;
    let refused = tokio::time::timeout(
        Duration::from_secs(5),
        third.try_call(Method::POST, "/session", ""),
    )
    .await
    .expect("refused promptly");
    assert!(
        refused.is_err(),
        "a third connection was served: {refused:?}"
    );
    // ...and one is served again once a connection closes.
    drop(first);
    let start = std::time::Instant::now();
    loop {
        let mut client = server.client().await;
        if let Ok(reply) = client.try_call(Method::POST, "/session", "").await {
            assert_eq!(reply.status, StatusCode::CREATED);
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "a slot frees up when a connection closes"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn graceful_shutdown_with_an_idle_connection() {
    let server = TestServer::start(RestOptions::default()).await;
    let mut client = server.client_with_session().await;
    assert_eq!(client.try_lock("x").await["locked"], true);
    tokio::time::timeout(Duration::from_secs(5), server.stop())
        .await
        .expect("serve returns after shutdown with an idle keep-alive connection open");
}

#[tokio::test]
async fn graceful_shutdown_finishes_a_request_in_flight() {
    let server = TestServer::start(RestOptions::default()).await;
    let addr = server.addr;
    let mut client = server.client_with_session().await;
    let (chunks, body) = channel_body();
    chunks
        .send(Bytes::from_static(b"{\"name\":"))
        .expect("send");
    let in_flight = tokio::spawn(async move { client.send(Method::POST, "/v1/lock", body).await });
    tokio::time::sleep(Duration::from_millis(100)).await;

    let stopping = tokio::spawn(server.stop());
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !stopping.is_finished(),
        "shutdown waits for the request in flight"
    );
    // New connections are no longer accepted.
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "listener closed"
    );

    chunks.send(Bytes::from_static(b"\"late\"}")).expect("send");
    drop(chunks);
    let reply = in_flight.await.expect("task");
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json()["locked"], true);
    tokio::time::timeout(Duration::from_secs(5), stopping)
        .await
        .expect("serve returns once the request is answered")
        .expect("task");
}
