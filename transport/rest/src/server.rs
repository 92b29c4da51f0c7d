//! The REST server: its shared state, and the connections around [`RestServer::handle`].
//!
//! [`RestServer::serve`] takes connections from the server's shared accept loop
//! ([`ldlm_listener::Acceptor`]: connection limit, `TCP_NODELAY`, TLS handshake off the
//! accept path) and serves each in a task of its own:
//!
//! - HTTP/1.1 (keep-alive) or HTTP/2 (prior knowledge, or ALPN `h2` over TLS), detected per
//!   connection by hyper-util's `auto` builder; request headers must arrive within
//!   [`HEADER_READ_TIMEOUT`], and a whole request (its body) within [`REQUEST_TIMEOUT`];
//! - graceful shutdown: when `shutdown` resolves the listener is closed, idle connections are
//!   closed, and requests in flight are answered before their connections close.

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
use ldlm_listener::{Acceptor, ListenerOptions};
use ldlm_security::password::Password;
use ldlm_service::LockService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tracing::debug;

use crate::reply;

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
    /// `--max_request_bytes`: largest request body; larger is refused with `413`.
    pub max_body_bytes: usize,
    /// `--max_connections`: most connections at once; more are closed at once.
    pub max_connections: usize,
}

impl Default for RestOptions {
    /// The server's default limits.
    fn default() -> Self {
        RestOptions {
            password: None,
            tls: None,
            max_body_bytes: 65_536,
            max_connections: 10_000,
        }
    }
}

/// The REST API over a lock service: shared state behind an `Arc`, used by every connection.
pub struct RestServer<S: LockService> {
    pub(crate) service: Arc<S>,
    pub(crate) options: RestOptions,
}

impl<S: LockService> std::fmt::Debug for RestServer<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RestServer")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl<S: LockService> RestServer<S> {
    /// A server over `service`.
    pub fn new(service: Arc<S>, options: RestOptions) -> Arc<RestServer<S>> {
        Arc::new(RestServer { service, options })
    }

    /// Serves connections from `listener` until `shutdown` resolves, then lets requests in
    /// flight finish and returns.
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> io::Result<()> {
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT);
        builder.http2().timer(TokioTimer::new());
        let builder = Arc::new(builder);
        let graceful = GracefulShutdown::new();
        let mut acceptor = Acceptor::new(
            listener,
            ListenerOptions {
                name: "REST",
                tls: self.options.tls.clone(),
                max_connections: self.options.max_connections,
            },
            shutdown,
        );
        while let Some(accepted) = acceptor.next().await {
            let watcher = graceful.watcher();
            let server = self.clone();
            let builder = builder.clone();
            tokio::spawn(async move {
                server
                    .http(accepted.stream, accepted.remote, &builder, watcher)
                    .await;
                drop(accepted.slot);
            });
        }
        drop(acceptor);
        graceful.shutdown().await;
        Ok(())
    }

    async fn http<T>(
        self: Arc<Self>,
        stream: T,
        remote: SocketAddr,
        builder: &auto::Builder<TokioExecutor>,
        watcher: Watcher,
    ) where
        T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
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
