//! Sessions: one connection = one owner. Cancelled waits, disconnects, keepalive, the
//! connection limit and shutdown.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::*;
use ldlm_engine::EngineConfig;
use ldlm_grpc::GrpcOptions;
use ldlm_proto::ldlm::ErrorCode;
use ldlm_proto::ldlm::ldlm_client::LdlmClient;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

const SLACK: Duration = Duration::from_secs(3);

/// After a waiter's call is cancelled, the holder's unlock frees the lock for anyone: the
/// cancelled waiter did not get it.
async fn assert_cancelled_waiter_got_nothing(
    server: &TestServer,
    holder: &mut Client,
    name: &str,
    key: &str,
) {
    let engine = server.engine.clone();
    eventually(SLACK, "cancelled waiter left the queue", || {
        engine.stats().waiters == 0
    })
    .await;
    assert!(unlock(holder, name, key).await.unlocked);
    let mut third = server.client().await;
    let r = try_lock(&mut third, try_req(name)).await;
    assert_locked(&r, name);
    let holds = server.engine.list();
    assert_eq!(holds.len(), 1, "{holds:?}");
    assert_eq!(holds[0].key.to_string(), r.key);
}

#[tokio::test]
async fn cancelled_waiting_lock_leaves_the_queue() {
    let server = TestServer::start().await;
    let mut holder = server.client().await;
    let held = lock(&mut holder, lock_req("c")).await;
    let mut waiter = server.client().await;
    let call = tokio::spawn(async move { waiter.lock(lock_req("c")).await });
    let engine = server.engine.clone();
    eventually(SLACK, "waiter queued", || engine.stats().waiters == 1).await;
    // Dropping the call's future (the client cancels): RST_STREAM.
    call.abort();
    assert!(call.await.expect_err("aborted").is_cancelled());
    assert_cancelled_waiter_got_nothing(&server, &mut holder, "c", &held.key).await;
}

#[tokio::test]
async fn grpc_deadline_ends_the_wait() {
    let server = TestServer::start().await;
    let mut holder = server.client().await;
    let held = lock(&mut holder, lock_req("d")).await;
    let mut waiter = server.client().await;
    let mut request = tonic::Request::new(lock_req("d"));
    request.set_timeout(Duration::from_millis(300));
    let start = Instant::now();
    let status = within(SLACK, "deadline", waiter.lock(request))
        .await
        .expect_err("deadline exceeded");
    assert!(
        matches!(
            status.code(),
            tonic::Code::DeadlineExceeded | tonic::Code::Cancelled
        ),
        "{status:?}"
    );
    assert!(
        start.elapsed() >= Duration::from_millis(250),
        "{:?}",
        start.elapsed()
    );
    assert_cancelled_waiter_got_nothing(&server, &mut holder, "d", &held.key).await;
    // The waiter's connection is still usable.
    let r = try_lock(&mut waiter, try_req("d2")).await;
    assert_locked(&r, "d2");
}

#[tokio::test]
async fn disconnect_releases_locks_and_wakes_waiters() {
    let server = TestServer::start().await;
    let mut a = server.client().await;
    let held = lock(&mut a, lock_req("dc")).await;
    assert_locked(&try_lock(&mut a, try_req("dc2")).await, "dc2");
    let mut b = server.client().await;
    let waiter = tokio::spawn(async move { lock(&mut b, lock_req("dc")).await });
    let engine = server.engine.clone();
    eventually(SLACK, "b queued", || engine.stats().waiters == 1).await;
    drop(a);
    let r = within(SLACK, "b granted after a disconnected", waiter)
        .await
        .expect("task");
    assert_locked(&r, "dc");
    assert!(r.fencing_token > held.fencing_token);
    let holds = server.engine.list();
    assert_eq!(holds.len(), 1, "dc2 released too: {holds:?}");
    assert_eq!(holds[0].key.to_string(), r.key);
}

/// A connection that breaks (no RST_STREAM for its calls) loses its waiters.
#[tokio::test]
async fn broken_connection_cancels_its_waiters() {
    let server = TestServer::start().await;
    let mut holder = server.client().await;
    let held = lock(&mut holder, lock_req("dw")).await;
    let (proxy, link) = proxy(server.addr).await;
    let mut waiter = LdlmClient::connect(format!("http://{proxy}"))
        .await
        .expect("connect");
    let call = tokio::spawn(async move { waiter.lock(lock_req("dw")).await });
    let engine = server.engine.clone();
    eventually(SLACK, "waiter queued", || engine.stats().waiters == 1).await;
    link.send(Link::Cut).expect("proxy alive");
    let status = within(SLACK, "waiter's call fails", call)
        .await
        .expect("task")
        .expect_err("connection cut");
    assert_ne!(status.code(), tonic::Code::Ok);
    assert_cancelled_waiter_got_nothing(&server, &mut holder, "dw", &held.key).await;
}

#[tokio::test]
async fn no_clear_on_disconnect_keeps_locks_listed() {
    let config = EngineConfig {
        release_on_owner_end: false,
        ..EngineConfig::default()
    };
    let server = TestServer::with(config, GrpcOptions::default()).await;
    let mut a = server.client().await;
    let held = lock(&mut a, lock_req("keep")).await;
    let mut b = server.client().await;
    let waiter = {
        let mut b = b.clone();
        tokio::spawn(async move { lock(&mut b, lock_req("keep")).await })
    };
    let engine = server.engine.clone();
    eventually(SLACK, "b queued", || engine.stats().waiters == 1).await;
    drop(a);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiter.is_finished(), "the lock is kept, so b still waits");
    let holds = server.engine.list();
    assert_eq!(holds.len(), 1);
    assert_eq!(holds[0].key.to_string(), held.key);
    assert!(!try_lock(&mut b, try_req("keep")).await.locked);
    // The key still works from another connection; the waiter then gets the lock.
    assert!(unlock(&mut b, "keep", &held.key).await.unlocked);
    assert_locked(
        &within(SLACK, "b granted", waiter).await.expect("task"),
        "keep",
    );
}

#[tokio::test]
async fn calls_on_one_connection_share_a_session() {
    let server = TestServer::start().await;
    let a = server.client().await;
    let mut tasks = Vec::new();
    for name in ["s1", "s2", "s3"] {
        let mut a = a.clone();
        tasks.push(tokio::spawn(
            async move { lock(&mut a, lock_req(name)).await },
        ));
    }
    for t in tasks {
        assert!(t.await.expect("task").locked);
    }
    let holds = server.engine.list();
    assert_eq!(holds.len(), 3);
    assert!(holds.iter().all(|h| h.owner == holds[0].owner), "{holds:?}");
    drop(a);
    let engine = server.engine.clone();
    eventually(SLACK, "all three released", || engine.list().is_empty()).await;
}

/// The state of a [`proxy`]'s link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Link {
    /// Forwarding both ways.
    Up,
    /// Forwarding nothing, both sockets kept open (a client that vanished without closing).
    Frozen,
    /// Both sockets closed.
    Cut,
}

/// A TCP proxy to `upstream` for one connection, whose link can be frozen or cut.
async fn proxy(upstream: SocketAddr) -> (SocketAddr, watch::Sender<Link>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (link_tx, link) = watch::channel(Link::Up);
    tokio::spawn(async move {
        let (client, _) = listener.accept().await.expect("accept");
        let server = TcpStream::connect(upstream)
            .await
            .expect("connect upstream");
        let (cr, cw) = client.into_split();
        let (sr, sw) = server.into_split();
        tokio::spawn(pump(cr, sw, link.clone()));
        pump(sr, cw, link).await;
    });
    (addr, link_tx)
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut link: watch::Receiver<Link>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = tokio::select! {
            read = from.read(&mut buf) => match read {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            },
            _ = link.wait_for(|l| *l == Link::Cut) => return,
        };
        let state = *link.borrow();
        match state {
            Link::Up => {}
            Link::Frozen => {
                let _ = link.wait_for(|l| *l == Link::Cut).await;
                return;
            }
            Link::Cut => return,
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

#[tokio::test]
async fn unanswered_keepalive_drops_the_connection() {
    let options = GrpcOptions {
        keepalive_interval: Duration::from_millis(300),
        keepalive_timeout: Duration::from_millis(300),
        ..GrpcOptions::default()
    };
    let server = TestServer::with(EngineConfig::default(), options).await;
    let (proxy, link) = proxy(server.addr).await;
    let mut vanishing = LdlmClient::connect(format!("http://{proxy}"))
        .await
        .expect("connect");
    assert_locked(&try_lock(&mut vanishing, try_req("ka")).await, "ka");
    let mut healthy = server.client().await;
    assert_locked(
        &try_lock(&mut healthy, try_req("ka-healthy")).await,
        "ka-healthy",
    );

    link.send(Link::Frozen).expect("proxy alive");
    let engine = server.engine.clone();
    eventually(SLACK, "the silent connection's lock released", || {
        engine.list().iter().all(|h| &*h.name != "ka")
    })
    .await;
    // A connection that answers pings survives them (several intervals have passed).
    tokio::time::sleep(Duration::from_millis(700)).await;
    let holds = server.engine.list();
    assert_eq!(holds.len(), 1, "{holds:?}");
    assert_eq!(&*holds[0].name, "ka-healthy");
    assert_locked(&try_lock(&mut healthy, try_req("ka")).await, "ka");
    drop(vanishing);
}

#[tokio::test]
async fn connection_limit() {
    let options = GrpcOptions {
        max_connections: 2,
        ..GrpcOptions::default()
    };
    let server = TestServer::with(EngineConfig::default(), options).await;
    let mut a = server.client().await;
    let mut b = server.client().await;
    assert!(try_lock(&mut a, try_req("l1")).await.locked);
    assert!(try_lock(&mut b, try_req("l2")).await.locked);

    let refused = async {
        let mut c = LdlmClient::connect(server.url()).await?;
        c.try_lock(try_req("l3"))
            .await
            .map_err(Into::into)
            .map(|_| ())
    };
    let result: Result<(), Box<dyn std::error::Error + Send + Sync>> =
        within(SLACK, "third connection", refused).await;
    assert!(result.is_err(), "a third connection is refused");
    assert_eq!(server.engine.list().len(), 2);

    drop(a);
    let start = Instant::now();
    loop {
        if let Ok(mut c) = LdlmClient::connect(server.url()).await
            && let Ok(r) = c.try_lock(try_req("l3")).await
        {
            assert!(r.into_inner().locked);
            break;
        }
        assert!(
            start.elapsed() < SLACK,
            "a slot frees up when a connection closes"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(try_lock(&mut b, try_req("l4")).await.locked);
}

#[tokio::test]
async fn graceful_shutdown_keeps_locks() {
    let mut server = TestServer::start().await;
    let mut a = server.client().await;
    let held = lock(&mut a, lock_req("sd")).await;
    let mut b = server.client().await;
    let waiter = tokio::spawn(async move { lock(&mut b, lock_req("sd")).await });
    let engine = server.engine.clone();
    eventually(SLACK, "b queued", || engine.stats().waiters == 1).await;

    server.engine.shutdown();
    let r = within(SLACK, "waiter told", waiter).await.expect("task");
    assert_lock_error(&r, "sd", ErrorCode::Unknown, "lock manager is shutdown");
    server.stop(SLACK).await.expect("clean stop");
    // The holder's connection is closed by now, yet its lock is kept for the restart.
    assert!(a.try_lock(try_req("x")).await.is_err(), "server is gone");
    let holds = server.engine.list();
    assert_eq!(holds.len(), 1);
    assert_eq!(holds[0].key.to_string(), held.key);
}

#[tokio::test]
async fn shutdown_closes_stragglers_after_the_grace_period() {
    let mut server = TestServer::start().await;
    // Held by an owner outside the gRPC server (as the admin would), so closing connections
    // does not free it.
    let admin = server.engine.new_owner();
    let held = server
        .engine
        .try_lock(
            &admin,
            &ldlm_engine::LockRequest {
                name: "g",
                ..ldlm_engine::LockRequest::default()
            },
            ldlm_engine::Tick::ZERO,
        )
        .expect("valid");
    assert!(matches!(held, ldlm_engine::TryLockOutcome::Acquired(_)));
    let mut b = server.client().await;
    // Without Engine::shutdown the waiter never ends on its own.
    let waiter = tokio::spawn(async move { b.lock(lock_req("g")).await });
    let engine = server.engine.clone();
    eventually(SLACK, "b queued", || engine.stats().waiters == 1).await;
    let start = Instant::now();
    server
        .stop(ldlm_grpc::SHUTDOWN_GRACE + SLACK)
        .await
        .expect("stop");
    assert!(start.elapsed() >= ldlm_grpc::SHUTDOWN_GRACE - Duration::from_millis(100));
    let status = within(SLACK, "waiter's connection closed", waiter)
        .await
        .expect("task")
        .expect_err("connection closed");
    assert!(
        matches!(
            status.code(),
            tonic::Code::Unavailable
                | tonic::Code::Unknown
                | tonic::Code::Internal
                | tonic::Code::Cancelled
        ),
        "{status:?}"
    );
    // Not shut down: the closed connection's waiter was cancelled.
    let engine = server.engine.clone();
    eventually(SLACK, "waiter gone", || engine.stats().waiters == 0).await;
    assert_eq!(server.engine.list().len(), 1);
}
