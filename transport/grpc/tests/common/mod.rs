//! Shared test harness: a real server in-process on 127.0.0.1:0 with a real clock and timer
//! driver, and real tonic clients (each on its own connection).

#![allow(dead_code, unreachable_pub)]

use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ldlm_engine::{Engine, EngineConfig};
use ldlm_grpc::{GrpcError, GrpcOptions, serve};
use ldlm_proto::ldlm::ldlm_client::LdlmClient;
use ldlm_proto::ldlm::{
    ErrorCode, LockRequest, LockResponse, RefreshLockRequest, RenewRequest, TryLockRequest,
    UnlockRequest, UnlockResponse,
};
use ldlm_service::{Clock, Commits, LocalLockService, LocalOptions, TimerDriver};
use ldlm_state_file::StateFile;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::Channel;

pub type Client = LdlmClient<Channel>;

/// A running server. Dropping it aborts the server.
pub struct TestServer {
    pub addr: SocketAddr,
    pub engine: Engine,
    pub service: Arc<LocalLockService>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), GrpcError>>>,
    _timers: TimerDriver,
}

impl TestServer {
    pub async fn start() -> TestServer {
        Self::with(EngineConfig::default(), GrpcOptions::default()).await
    }

    pub async fn with(config: EngineConfig, options: GrpcOptions) -> TestServer {
        let clock = Clock::new();
        let engine = Engine::new(config, clock.now()).expect("engine config");
        Self::serving(engine, clock, options, None).await
    }

    /// A server whose engine records grants in the state file `state`.
    pub async fn with_state_file(state: &StateFile) -> TestServer {
        let clock = Clock::new();
        let engine = Engine::with_event_sink(EngineConfig::default(), clock.now(), state.sink())
            .expect("engine config");
        Self::serving(engine, clock, GrpcOptions::default(), Some(state.commits())).await
    }

    async fn serving(
        engine: Engine,
        clock: Clock,
        options: GrpcOptions,
        commits: Option<Commits>,
    ) -> TestServer {
        let service = LocalLockService::new(
            engine.clone(),
            clock,
            LocalOptions {
                commits,
                ..LocalOptions::default()
            },
        );
        let timers = service.start_timers();
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (tx, rx) = oneshot::channel::<()>();
        let shutdown = async move {
            let _ = rx.await;
        };
        let task = tokio::spawn(serve(service.clone(), listener, options, shutdown));
        TestServer {
            addr,
            engine,
            service,
            shutdown: Some(tx),
            task: Some(task),
            _timers: timers,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A client on a connection of its own.
    pub async fn client(&self) -> Client {
        LdlmClient::connect(self.url()).await.expect("connect")
    }

    /// Fires the shutdown signal and waits (at most `limit`) for `serve` to return.
    pub async fn stop(&mut self, limit: Duration) -> Result<(), GrpcError> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let task = self.task.take().expect("not stopped yet");
        tokio::time::timeout(limit, task)
            .await
            .expect("serve returns in time")
            .expect("serve task did not panic")
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// Polls `check` every 10 ms until it holds, for at most `limit`.
pub async fn eventually<F: FnMut() -> bool>(limit: Duration, what: &str, mut check: F) {
    let start = Instant::now();
    while !check() {
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Awaits `f` for at most `limit`, failing the test otherwise.
pub async fn within<T>(limit: Duration, what: &str, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(limit, f)
        .await
        .unwrap_or_else(|_| panic!("timed out after {limit:?}: {what}"))
}

pub fn lock_req(name: &str) -> LockRequest {
    LockRequest {
        name: name.to_owned(),
        ..LockRequest::default()
    }
}

pub fn try_req(name: &str) -> TryLockRequest {
    TryLockRequest {
        name: name.to_owned(),
        ..TryLockRequest::default()
    }
}

pub async fn lock(client: &mut Client, request: LockRequest) -> LockResponse {
    client.lock(request).await.expect("status OK").into_inner()
}

pub async fn try_lock(client: &mut Client, request: TryLockRequest) -> LockResponse {
    client
        .try_lock(request)
        .await
        .expect("status OK")
        .into_inner()
}

pub async fn unlock(client: &mut Client, name: &str, key: &str) -> UnlockResponse {
    client
        .unlock(UnlockRequest {
            name: name.to_owned(),
            key: key.to_owned(),
        })
        .await
        .expect("status OK")
        .into_inner()
}

pub async fn refresh_lock(client: &mut Client, name: &str, key: &str, secs: i32) -> LockResponse {
    client
        .refresh_lock(RefreshLockRequest {
            name: name.to_owned(),
            key: key.to_owned(),
            lock_timeout_seconds: secs,
        })
        .await
        .expect("status OK")
        .into_inner()
}

pub async fn renew(client: &mut Client, name: &str, key: &str, secs: i32) -> LockResponse {
    client
        .renew(RenewRequest {
            name: name.to_owned(),
            key: key.to_owned(),
            lock_timeout_seconds: secs,
        })
        .await
        .expect("status OK")
        .into_inner()
}

/// Asserts a successful grant and returns it.
#[track_caller]
pub fn assert_locked(response: &LockResponse, name: &str) {
    assert!(response.locked, "expected locked: {response:?}");
    assert_eq!(response.name, name);
    assert_eq!(response.key.len(), 36, "a UUID key: {response:?}");
    assert!(response.error.is_none(), "{response:?}");
    assert!(response.fencing_token > 0, "{response:?}");
}

/// Asserts a failed Lock/TryLock with the given code and message.
#[track_caller]
pub fn assert_lock_error(response: &LockResponse, name: &str, code: ErrorCode, message: &str) {
    assert!(!response.locked, "{response:?}");
    assert_eq!(response.name, name);
    assert_eq!(
        response.key, "",
        "a failed lock returns no key: {response:?}"
    );
    assert_eq!(response.fencing_token, 0, "{response:?}");
    let error = response.error.as_ref().expect("error set");
    assert_eq!(error.code, code as i32, "{response:?}");
    assert_eq!(error.message, message, "{response:?}");
}

#[track_caller]
pub fn assert_unlock_error(response: &UnlockResponse, name: &str, code: ErrorCode, message: &str) {
    assert!(!response.unlocked, "{response:?}");
    assert_eq!(response.name, name);
    let error = response.error.as_ref().expect("error set");
    assert_eq!(error.code, code as i32, "{response:?}");
    assert_eq!(error.message, message, "{response:?}");
}
