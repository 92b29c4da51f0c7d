//! The REST server: its shared state, and the connections around [`RestServer::handle`].
//!
//! [`RestServer::serve`] is an accept loop over a [`TcpListener`]:
//!
//! - at most `max_connections` connections at once (a semaphore permit is taken *before*
//!   accepting, so excess clients wait in the kernel's backlog instead of being accepted and
//!   dropped);
//! - `TCP_NODELAY` on every connection (small JSON replies must not wait for Nagle);
//! - with TLS, the rustls handshake runs in the connection's own task, bounded by
//!   [`HANDSHAKE_TIMEOUT`], so a slow or silent client never stalls the accept loop;
//! - HTTP/1.1 (keep-alive) or HTTP/2 (prior knowledge, or ALPN `h2` over TLS), detected per
//!   connection by hyper-util's `auto` builder; request headers must arrive within
//!   [`HEADER_READ_TIMEOUT`], and a whole request (its body) within [`REQUEST_TIMEOUT`];
//! - graceful shutdown: when `shutdown` resolves the listener is closed, idle connections are
//!   closed, and requests in flight are answered before their connections close.
//!
//! Session expiry does not run here: the engine's timer driver expires sessions and whoever
//! runs it calls [`RestServer::forget_sessions`] with the report.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use ldlm_engine::{Engine, OwnerId};
use ldlm_security::password::Password;
use ldlm_service::driver::Clock;
use ldlm_state_file::Durability;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, warn};

use crate::reply;
use crate::sessions::Sessions;

/// Longest a TLS handshake may take before the connection is dropped.
pub(crate) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest a client may take to send a request's headers (slowloris protection).
pub(crate) const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest one request may take, body included (answered `408` when it runs out).
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// How the REST server runs (from the server's configuration).
#[derive(Clone, Debug)]
pub struct RestOptions {
    /// `--password`: when set, every request needs `Authorization: Basic` with it.
    pub password: Option<Password>,
    /// TLS (and mTLS) configuration; `None` serves plaintext. Advertise ALPN `http/1.1` and
    /// `h2` in it to offer both protocols.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// `--rest_session_timeout`: a session idle this long ends and its locks are released.
    pub session_timeout: Duration,
    /// `--max_rest_sessions`: most sessions at once; one more is refused with `503`.
    pub max_sessions: usize,
    /// `--max_request_bytes`: largest request body; larger is refused with `413`.
    pub max_body_bytes: usize,
    /// `--max_connections`: most connections at once; more wait to be accepted.
    pub max_connections: usize,
}

impl Default for RestOptions {
    /// go-ldlm's session timeout (10 minutes) and the server's default limits.
    fn default() -> Self {
        RestOptions {
            password: None,
            tls: None,
            session_timeout: Duration::from_secs(10 * 60),
            max_sessions: 100_000,
            max_body_bytes: 65_536,
            max_connections: 10_000,
        }
    }
}

/// The REST API over one engine: shared state (engine, clock, options, sessions) behind an
/// `Arc`, used by every connection.
pub struct RestServer {
    pub(crate) engine: Engine,
    pub(crate) clock: Clock,
    pub(crate) options: RestOptions,
    pub(crate) sessions: Sessions,
    /// With a state file: waits until a grant is on disk before "locked" is answered.
    pub(crate) durability: Option<Durability>,
}

impl std::fmt::Debug for RestServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RestServer")
            .field("options", &self.options)
            .field("sessions", &self.sessions)
            .finish_non_exhaustive()
    }
}

impl RestServer {
    /// A server over `engine`, reading time from `clock` (the same clock that drives the
    /// engine's timers).
    pub fn new(engine: Engine, clock: Clock, options: RestOptions) -> Arc<RestServer> {
        Self::build(engine, clock, options, None)
    }

    /// Like [`RestServer::new`], for an engine that records grants in a state file: a TryLock
    /// is answered "locked" only once `durability` reports its grant on disk (DESIGN §4.5).
    pub fn with_durability(
        engine: Engine,
        clock: Clock,
        options: RestOptions,
        durability: Durability,
    ) -> Arc<RestServer> {
        Self::build(engine, clock, options, Some(durability))
    }

    fn build(
        engine: Engine,
        clock: Clock,
        options: RestOptions,
        durability: Option<Durability>,
    ) -> Arc<RestServer> {
        let sessions = Sessions::new(options.max_sessions);
        Arc::new(RestServer {
            engine,
            clock,
            options,
            sessions,
            durability,
        })
    }

    /// Forgets sessions the engine expired (and already released): call it from the timer
    /// driver's report callback with [`ldlm_engine::AdvanceReport::sessions_expired`]. Ids
    /// that are not REST sessions are ignored.
    pub fn forget_sessions(&self, expired: &[OwnerId]) {
        for &owner in expired {
            if self.sessions.forget(owner) {
                debug!(owner = %owner, timeout = ?self.options.session_timeout, "REST session timeout");
            }
        }
    }

    /// Number of live sessions (for stats and tests).
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// Serves connections from `listener` until `shutdown` resolves, then lets requests in
    /// flight finish and returns. Errors accepting one connection are logged, not returned.
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> io::Result<()> {
        let tls = self.options.tls.clone().map(TlsAcceptor::from);
        let slots = Arc::new(Semaphore::new(
            self.options
                .max_connections
                .clamp(1, Semaphore::MAX_PERMITS),
        ));
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT);
        builder.http2().timer(TokioTimer::new());
        let builder = Arc::new(builder);
        let graceful = GracefulShutdown::new();
        tokio::pin!(shutdown);

        loop {
            let permit = tokio::select! {
                biased;
                () = &mut shutdown => break,
                permit = slots.clone().acquire_owned() => match permit {
                    Ok(permit) => permit,
                    Err(_) => break, // never closed
                },
            };
            let (stream, remote) = tokio::select! {
                biased;
                () = &mut shutdown => break,
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        accept_error(error).await;
                        continue;
                    }
                },
            };
            if let Err(error) = stream.set_nodelay(true) {
                debug!(client_addr = %remote, %error, "could not set TCP_NODELAY");
            }
            // Subscribed before the task starts, so a shutdown during the TLS handshake is
            // still seen by the connection.
            let watcher = graceful.watcher();
            let server = self.clone();
            let tls = tls.clone();
            let builder = builder.clone();
            tokio::spawn(async move {
                server
                    .connection(stream, remote, tls, &builder, watcher)
                    .await;
                drop(permit);
            });
        }

        drop(listener);
        graceful.shutdown().await;
        Ok(())
    }

    /// One connection: the TLS handshake if configured, then HTTP until it closes.
    async fn connection(
        self: Arc<Self>,
        stream: TcpStream,
        remote: SocketAddr,
        tls: Option<TlsAcceptor>,
        builder: &auto::Builder<TokioExecutor>,
        watcher: Watcher,
    ) {
        let Some(acceptor) = tls else {
            return self.http(stream, remote, builder, watcher).await;
        };
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
            Ok(Ok(stream)) => self.http(stream, remote, builder, watcher).await,
            Ok(Err(error)) => debug!(client_addr = %remote, %error, "TLS handshake failed"),
            Err(_) => debug!(client_addr = %remote, "TLS handshake timed out"),
        }
    }

    async fn http<S>(
        self: Arc<Self>,
        stream: S,
        remote: SocketAddr,
        builder: &auto::Builder<TokioExecutor>,
        watcher: Watcher,
    ) where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let service = service_fn(move |request: Request<Incoming>| {
            let server = self.clone();
            async move { Ok::<_, Infallible>(server.handle_in_time(request, remote).await) }
        });
        let connection = builder.serve_connection(TokioIo::new(stream), service);
        if let Err(error) = watcher.watch(connection).await {
            debug!(client_addr = %remote, %error, "REST connection ended with an error");
        }
    }

    /// [`RestServer::handle`] bounded by [`REQUEST_TIMEOUT`] (a client that stops sending its
    /// body gets `408`).
    async fn handle_in_time(
        &self,
        request: Request<Incoming>,
        remote: SocketAddr,
    ) -> Response<Full<Bytes>> {
        match tokio::time::timeout(REQUEST_TIMEOUT, self.handle(request, remote)).await {
            Ok(response) => response,
            Err(_) => reply::error(
                StatusCode::REQUEST_TIMEOUT,
                "the request took too long to arrive",
            ),
        }
    }
}

/// Handles a failed `accept`: errors of one connection are skipped; running out of file
/// descriptors or memory is logged and waited out briefly (accepting again at once would spin).
async fn accept_error(error: io::Error) {
    use io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset, Interrupted};
    if matches!(
        error.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset | Interrupted
    ) {
        debug!(%error, "accept failed for one connection");
        return;
    }
    warn!(%error, "accepting REST connections failed; retrying shortly");
    tokio::time::sleep(Duration::from_millis(50)).await;
}
