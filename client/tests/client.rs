//! `ldlm-client` against the real server (`ldlm_cli::server::start`, in-process on
//! 127.0.0.1:0), plus a fake "old go-ldlm" server for what the real one cannot show (no `Renew`
//! RPC, failures at the gRPC level).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use ldlm_cli::config::ServerConfig;
use ldlm_cli::server::{self, Running};
use ldlm_client::{
    Client, ClientConfig, Error, LockErrorCode, LockGuard, LockOptions, LostReason, TlsConfig,
};
use ldlm_testkit::TestPki;
use tokio::time::{Instant, sleep, timeout};

fn config() -> ServerConfig {
    let mut config = ServerConfig::defaults();
    config.listen_address = "127.0.0.1:0".into();
    config.rest_listen_address = None;
    config.ipc_socket_file = None;
    config
}

async fn start(config: &ServerConfig) -> Running {
    server::start(config).await.expect("server starts")
}

async fn client(server: &Running) -> Client {
    Client::connect(ClientConfig::new(server.grpc_addr.to_string()))
        .await
        .expect("connects")
}

fn lease(seconds: u64) -> LockOptions {
    LockOptions::new().with_lock_timeout(Duration::from_secs(seconds))
}

fn lock_code(result: Result<impl std::fmt::Debug, Error>) -> LockErrorCode {
    match result {
        Err(Error::Lock(error)) => error.code,
        other => panic!("expected a lock error, got {other:?}"),
    }
}

/// Polls `other.try_lock(name)` until it succeeds (within `limit`).
async fn acquired_within(other: &Client, name: &str, limit: Duration) -> LockGuard {
    let start = Instant::now();
    loop {
        if let Some(guard) = other.try_lock(name, LockOptions::new()).await.expect("rpc") {
            return guard;
        }
        assert!(
            start.elapsed() < limit,
            "{name} was not released within {limit:?}"
        );
        sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn lock_try_lock_unlock_and_fencing_tokens() {
    let server = start(&config()).await;
    let a = client(&server).await;
    let b = client(&server).await;

    let guard = a.lock("basic", LockOptions::new()).await.expect("locks");
    assert_eq!(guard.name(), "basic");
    assert_eq!(guard.key().len(), 36, "a UUID key: {}", guard.key());
    assert!(guard.fencing_token() > 0);
    assert_eq!(guard.lease(), None);
    let first_token = guard.fencing_token();

    assert!(
        b.try_lock("basic", LockOptions::new())
            .await
            .unwrap()
            .is_none()
    );
    guard.unlock().await.expect("unlocks");

    let again = b
        .try_lock("basic", LockOptions::new())
        .await
        .unwrap()
        .expect("free again");
    assert!(again.fencing_token() > first_token);
    // Give the guard up and unlock by (name, key).
    let (name, key) = again.forget();
    assert!(
        a.try_lock("basic", LockOptions::new())
            .await
            .unwrap()
            .is_none()
    );
    a.unlock(&name, &key).await.expect("unlock by key");
    assert!(
        a.try_lock("basic", LockOptions::new())
            .await
            .unwrap()
            .is_some()
    );

    // A counting semaphore: size 2 admits two holders.
    let sized = LockOptions::new().with_size(2);
    let one = a.lock("pair", sized).await.unwrap();
    let two = b.lock("pair", sized).await.unwrap();
    assert!(a.try_lock("pair", sized).await.unwrap().is_none());
    drop((one, two));
    server.shutdown().await;
}

#[tokio::test]
async fn lock_domain_errors_are_typed() {
    let server = start(&config()).await;
    let a = client(&server).await;
    let b = client(&server).await;

    let held = a
        .lock("typed", LockOptions::new().with_size(2))
        .await
        .unwrap();
    assert_eq!(
        lock_code(b.try_lock("typed", LockOptions::new().with_size(3)).await),
        LockErrorCode::LockSizeMismatch
    );
    assert_eq!(
        lock_code(b.lock("typed", LockOptions::new()).await),
        LockErrorCode::LockSizeMismatch
    );
    assert_eq!(
        lock_code(b.lock("zero", LockOptions::new().with_size(0)).await),
        LockErrorCode::InvalidLockSize
    );
    assert_eq!(
        lock_code(b.unlock("typed", "not-the-key").await),
        LockErrorCode::InvalidLockKey
    );
    assert_eq!(
        lock_code(b.unlock("no-such-lock", "k").await),
        LockErrorCode::LockDoesNotExist
    );
    assert_eq!(
        lock_code(
            b.refresh("typed", "not-the-key", Duration::from_secs(5))
                .await
        ),
        LockErrorCode::LockDoesNotExistOrInvalidKey
    );
    let empty = b.try_lock("", LockOptions::new()).await.unwrap_err();
    assert_eq!(empty.lock_code(), Some(LockErrorCode::Unknown));
    assert!(
        empty.to_string().contains("lock name cannot be empty"),
        "{empty}"
    );

    // Refresh by key works from any connection, and gives a lease-less lock a lease.
    b.refresh("typed", held.key(), Duration::from_millis(1500))
        .await
        .expect("refreshes");

    // A wait timeout.
    let mutex = a.lock("waited", LockOptions::new()).await.unwrap();
    let started = Instant::now();
    let waited = b
        .lock(
            "waited",
            LockOptions::new().with_wait_timeout(Duration::from_millis(300)),
        )
        .await
        .unwrap_err();
    assert!(waited.is_wait_timeout(), "{waited:?}");
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "rounded up to 1 s"
    );
    drop((held, mutex));
    server.shutdown().await;
}

#[tokio::test]
async fn password_right_wrong_and_missing() {
    let mut config = config();
    config.password = Some("s3cret".into());
    let server = start(&config).await;
    let address = server.grpc_addr.to_string();
    let with = |password: Option<&str>| ClientConfig {
        password: password.map(str::to_owned),
        ..ClientConfig::new(address.clone())
    };

    let right = Client::connect(with(Some("s3cret"))).await.unwrap();
    let guard = right
        .lock("pw", lease(5))
        .await
        .expect("the right password locks");

    for password in [Some("wrong"), None] {
        let client = Client::connect(with(password)).await.unwrap();
        match client.try_lock("pw", LockOptions::new()).await {
            Err(Error::Unauthenticated(message)) => {
                let expected = if password.is_some() {
                    "invalid"
                } else {
                    "missing"
                };
                assert!(message.contains(expected), "{message}");
            }
            other => panic!("{password:?}: expected Unauthenticated, got {other:?}"),
        }
        assert!(matches!(
            client.lock("pw", LockOptions::new()).await,
            Err(Error::Unauthenticated(_))
        ));
        assert!(matches!(
            client.unlock("pw", guard.key()).await,
            Err(Error::Unauthenticated(_))
        ));
    }
    assert!(
        Client::connect(with(Some("bad\npassword"))).await.is_err(),
        "not valid metadata"
    );
    guard.unlock().await.expect("unlocks");
    server.shutdown().await;
}

/// The bar: a 2-second lease kept alive by the guard for 10 seconds, while another client
/// finds it busy throughout; then released by `unlock`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guard_keeps_a_two_second_lease_alive_for_ten_seconds() {
    let server = start(&config()).await;
    let holder = client(&server).await;
    let other = client(&server).await;

    let guard = holder.lock("short-lease", lease(2)).await.unwrap();
    assert_eq!(guard.lease(), Some(Duration::from_secs(2)));
    let start = Instant::now();
    let mut checks = 0;
    while start.elapsed() < Duration::from_secs(10) {
        let busy = other
            .try_lock("short-lease", LockOptions::new())
            .await
            .unwrap();
        assert!(
            busy.is_none(),
            "the lease lapsed after {:?}: another client got the lock",
            start.elapsed()
        );
        assert!(!guard.is_lost(), "{:?}", guard.lost_reason());
        checks += 1;
        sleep(Duration::from_millis(250)).await;
    }
    assert!(checks >= 20, "{checks}");
    guard
        .unlock()
        .await
        .expect("still held after 10 s, so it unlocks");
    let _ = acquired_within(&other, "short-lease", Duration::from_secs(1)).await;
    server.shutdown().await;
}

/// The bar: when the server stops, renewals fail and the guard reports the loss (at the
/// latest when the lease runs out by the client's clock).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loss_is_reported_when_the_server_stops() {
    let server = start(&config()).await;
    let holder = client(&server).await;
    let guard = holder.lock("doomed", lease(2)).await.unwrap();
    let lost = guard.lost();
    // Let one renewal go through first.
    sleep(Duration::from_millis(900)).await;
    assert!(!guard.is_lost());

    let stopped_at = Instant::now();
    let shutdown = tokio::spawn(server.shutdown());
    let reason = timeout(Duration::from_secs(5), lost)
        .await
        .expect("the loss is reported within 5 s of the server stopping");
    let after = stopped_at.elapsed();
    assert!(
        matches!(
            reason,
            LostReason::Unreachable { .. } | LostReason::Rejected(_)
        ),
        "{reason:?}"
    );
    assert!(guard.is_lost());
    assert_eq!(guard.lost_reason(), Some(reason.clone()));
    println!("lost after {after:?}: {reason}");
    shutdown.await.unwrap();

    // With the server gone a Lock provably never left: not "outcome unknown".
    match holder.lock("doomed", LockOptions::new()).await {
        Err(Error::Transport(status)) => {
            assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}")
        }
        other => panic!("expected Transport(Unavailable), got {other:?}"),
    }
    // Unlocking a lost guard reports the failure instead of pretending.
    assert!(guard.unlock().await.is_err());
}

#[tokio::test]
async fn loss_is_reported_when_the_server_refuses_the_renewal() {
    let server = start(&config()).await;
    let holder = client(&server).await;
    let other = client(&server).await;
    let guard = holder.lock("stolen", lease(3)).await.unwrap();
    // Anyone with the key may unlock it; the next renewal (after 1 s) is refused.
    other.unlock("stolen", guard.key()).await.unwrap();
    let reason = timeout(Duration::from_secs(3), guard.lost())
        .await
        .expect("reported");
    match reason {
        LostReason::Rejected(error) => {
            assert_eq!(error.code, LockErrorCode::LockDoesNotExistOrInvalidKey)
        }
        other => panic!("{other:?}"),
    }
    server.shutdown().await;
}

#[tokio::test]
async fn dropping_the_guard_releases_the_lock() {
    let server = start(&config()).await;
    let holder = client(&server).await;
    let other = client(&server).await;

    for options in [LockOptions::new(), lease(30)] {
        let guard = holder.lock("dropped", options).await.unwrap();
        let lost = guard.lost();
        assert!(other.try_lock("dropped", options).await.unwrap().is_none());
        drop(guard);
        assert_eq!(lost.await, LostReason::Released);
        let next = acquired_within(&other, "dropped", Duration::from_secs(2)).await;
        next.unlock().await.unwrap();
    }

    // A forgotten guard stays held (no unlock, no renewal)...
    let (name, _key) = holder.lock("dropped", lease(30)).await.unwrap().forget();
    assert!(
        other
            .try_lock(&name, LockOptions::new())
            .await
            .unwrap()
            .is_none()
    );
    // ...until the client's connection closes: the server ends its session and releases.
    drop(holder);
    let _ = acquired_within(&other, &name, Duration::from_secs(2)).await;
    server.shutdown().await;
}

#[tokio::test]
async fn mutual_tls() {
    // The client dials the server's address, 127.0.0.1, and expects the certificate to name
    // it: the kit's server certificate does.
    let pki = TestPki::generate();
    let mut config = config();
    config.tls_cert = Some(pki.server_cert());
    config.tls_key = Some(pki.server_key());
    config.client_ca = Some(pki.ca());
    let server = start(&config).await;
    let tls = TlsConfig {
        ca: Some(pki.ca()),
        client_cert: Some((pki.client_cert(), pki.client_key())),
        skip_verify: false,
    };
    let client = Client::connect(ClientConfig {
        tls: Some(tls.clone()),
        ..ClientConfig::new(server.grpc_addr.to_string())
    })
    .await
    .expect("mTLS connects");
    let guard = client.lock("tls", lease(5)).await.expect("locks over mTLS");
    assert!(guard.fencing_token() > 0);
    guard.unlock().await.unwrap();

    // Without a client certificate the server refuses (at connect or at the first call).
    let without = TlsConfig {
        client_cert: None,
        ..tls.clone()
    };
    let refused = match Client::connect(ClientConfig {
        tls: Some(without),
        ..ClientConfig::new(server.grpc_addr.to_string())
    })
    .await
    {
        Err(error) => error.to_string(),
        Ok(client) => client
            .try_lock("tls", LockOptions::new())
            .await
            .expect_err("refused without a client certificate")
            .to_string(),
    };
    println!("without a client certificate: {refused}");
    assert!(
        refused.contains("CertificateRequired"),
        "the cause is named: {refused}"
    );
    // Unreadable CA file: a TLS configuration error naming the file.
    let bad = Client::connect(ClientConfig {
        tls: Some(TlsConfig {
            ca: Some(pki.path("missing.pem")),
            ..tls
        }),
        ..ClientConfig::new(server.grpc_addr.to_string())
    })
    .await
    .unwrap_err();
    assert!(matches!(bad, Error::Tls(_)), "{bad:?}");
    assert!(bad.to_string().contains("missing.pem"), "{bad}");
    server.shutdown().await;
}

#[tokio::test]
async fn connect_to_nothing_fails_after_retries() {
    // A port nothing listens on: below the ephemeral range, where the other tests' servers on
    // port 0 and their connections cannot take it meanwhile.
    let address = format!("127.0.0.1:{}", ldlm_testkit::unused_port());
    let started = Instant::now();
    let error = Client::connect(ClientConfig::new(address.clone()))
        .await
        .unwrap_err();
    assert!(matches!(error, Error::Connect { .. }), "{error:?}");
    assert!(error.to_string().contains(&address), "{error}");
    // Four attempts, three backoff delays of at least 50 + 100 + 200 ms.
    assert!(
        started.elapsed() >= Duration::from_millis(350),
        "{:?}",
        started.elapsed()
    );
}

/// A stand-in for an old go-ldlm (3eb8bea): it knows `RefreshLock` but not `Renew`, and it can
/// fail calls at the gRPC level.
mod old_server {
    use super::*;
    use ldlm_proto::ldlm::ldlm_server::{Ldlm, LdlmServer};
    use ldlm_proto::ldlm::{
        LockRequest, LockResponse, RefreshLockRequest, RenewRequest, TryLockRequest, UnlockRequest,
        UnlockResponse,
    };
    use tonic::{Request, Response, Status};

    /// Calls seen, by RPC.
    #[derive(Default)]
    pub(super) struct Calls {
        pub(super) lock: AtomicUsize,
        pub(super) try_lock: AtomicUsize,
        pub(super) refresh_lock: AtomicUsize,
        pub(super) renew: AtomicUsize,
    }

    struct Old(Arc<Calls>);

    /// Names starting with "unavailable" fail with UNAVAILABLE after reaching the server.
    fn granted(name: String) -> Result<Response<LockResponse>, Status> {
        if name.starts_with("unavailable") {
            return Err(Status::unavailable("connection reset mid-call"));
        }
        Ok(Response::new(LockResponse {
            locked: true,
            name,
            key: "old-key".into(),
            error: None,
            fencing_token: 0,
        }))
    }

    #[tonic::async_trait]
    impl Ldlm for Old {
        async fn lock(&self, r: Request<LockRequest>) -> Result<Response<LockResponse>, Status> {
            self.0.lock.fetch_add(1, Ordering::SeqCst);
            granted(r.into_inner().name)
        }
        async fn try_lock(
            &self,
            r: Request<TryLockRequest>,
        ) -> Result<Response<LockResponse>, Status> {
            self.0.try_lock.fetch_add(1, Ordering::SeqCst);
            granted(r.into_inner().name)
        }
        async fn unlock(
            &self,
            r: Request<UnlockRequest>,
        ) -> Result<Response<UnlockResponse>, Status> {
            Ok(Response::new(UnlockResponse {
                unlocked: true,
                name: r.into_inner().name,
                error: None,
            }))
        }
        async fn refresh_lock(
            &self,
            r: Request<RefreshLockRequest>,
        ) -> Result<Response<LockResponse>, Status> {
            self.0.refresh_lock.fetch_add(1, Ordering::SeqCst);
            granted(r.into_inner().name)
        }
        async fn renew(&self, _: Request<RenewRequest>) -> Result<Response<LockResponse>, Status> {
            self.0.renew.fetch_add(1, Ordering::SeqCst);
            Err(Status::unimplemented(
                "unknown method Renew for service ldlm.LDLM",
            ))
        }
    }

    /// Serves until the returned sender is dropped.
    pub(super) async fn start() -> (String, Arc<Calls>, tokio::sync::oneshot::Sender<()>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let calls = Arc::new(Calls::default());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let service = LdlmServer::new(Old(Arc::clone(&calls)));
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming_shutdown(
                    tokio_stream::wrappers::TcpListenerStream::new(listener),
                    async {
                        let _ = stopped.await;
                    },
                ),
        );
        (address, calls, stop)
    }
}

#[tokio::test]
async fn renewal_falls_back_to_refresh_lock_on_an_old_server() {
    let (address, calls, _stop) = old_server::start().await;
    let client = Client::connect(ClientConfig::new(address)).await.unwrap();
    let guard = client.lock("old", lease(1)).await.unwrap();
    assert_eq!(guard.fencing_token(), 0, "go-ldlm has no fencing tokens");
    sleep(Duration::from_millis(1500)).await;
    assert!(!guard.is_lost(), "{:?}", guard.lost_reason());
    // Renew was tried once, answered UNIMPLEMENTED, and never again; RefreshLock every ~333 ms.
    assert_eq!(calls.renew.load(Ordering::SeqCst), 1);
    assert!(
        calls.refresh_lock.load(Ordering::SeqCst) >= 3,
        "{}",
        calls.refresh_lock.load(Ordering::SeqCst)
    );
    // The explicit refresh uses what was learned.
    client
        .refresh("old", guard.key(), Duration::from_secs(1))
        .await
        .unwrap();
    assert_eq!(calls.renew.load(Ordering::SeqCst), 1);
    guard.unlock().await.unwrap();
}

#[tokio::test]
async fn a_blocking_lock_is_never_retried_but_try_lock_is() {
    let (address, calls, _stop) = old_server::start().await;
    let client = Client::connect(ClientConfig::new(address)).await.unwrap();

    let error = client
        .lock("unavailable", LockOptions::new())
        .await
        .unwrap_err();
    assert!(matches!(error, Error::OutcomeUnknown { .. }), "{error:?}");
    assert!(error.to_string().contains("outcome"), "{error}");
    assert_eq!(calls.lock.load(Ordering::SeqCst), 1, "Lock was retried");

    let error = client
        .try_lock("unavailable", LockOptions::new())
        .await
        .unwrap_err();
    assert_eq!(calls.try_lock.load(Ordering::SeqCst), 4, "TryLock retries");
    assert!(matches!(error, Error::OutcomeUnknown { .. }), "{error:?}");
}
