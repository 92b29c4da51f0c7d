//! # ldlm-grpc
//!
//! The gRPC transport of LDLM: go-ldlm's `ldlm.LDLM` service (package `ldlm`, the same field
//! numbers, so any stub generated from go-ldlm's proto works) served with tonic over a
//! [`LockService`]. The server binary calls one function: [`serve`].
//!
//! ## Shape
//!
//! - **`service`**: the [`Ldlm`](ldlm_proto::ldlm::ldlm_server::Ldlm) trait implementation.
//!   Thin: decode, one lock-service call, encode. Lock-domain errors are status OK with the
//!   response's `error` set, as go-ldlm answers them; a failed Lock/TryLock returns an empty
//!   key (go-ldlm invents a useless fresh one). `RefreshLock` (older go-ldlm clients) and
//!   `Renew` (newer ones) share one code path.
//! - **`conn`**: connections from the server's shared accept loop ([`ldlm_listener`]) fed to
//!   tonic as a stream. Each gets a new lock-service owner: **one HTTP/2 connection = one
//!   session**, as in go-ldlm. The connection's IO object carries the owner; tonic hands it to
//!   every request through [`tonic::transport::server::Connected`]. When hyper drops the IO
//!   object — the client closed the connection, or missed HTTP/2 keepalive pings — the owner
//!   is disconnected ([`LockService::disconnect`]), which frees its locks (or keeps them under
//!   `no_clear_on_disconnect`, or during a graceful shutdown) and cancels its waiters.
//! - **`auth`**: a tower layer checking the `authorization` metadata against `--password`
//!   (constant time) before anything is decoded.
//!
//! ## Waiting and cancellation
//!
//! A blocking Lock awaits the lock service's acquire. If the client cancels the call (HTTP/2
//! `RST_STREAM`) or its `grpc-timeout` passes, tonic/hyper drop the handler's future, and with
//! it the wait: the waiter leaves the queue, and a grant that raced with the drop is passed
//! on. If the whole connection goes away, disconnecting its owner cancels its waiters as well.
//!
//! ## Logging
//!
//! `tracing`, with go-ldlm's message texts. The startup lines are the server binary's;
//! per-request and per-session lines (`Lock request`, `Lock response`, `Session started`,
//! `Client session cleanup`, ...) at DEBUG only, since they cost throughput.

mod auth;
mod conn;
mod service;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ldlm_listener::{Acceptor, ListenerOptions};
use ldlm_proto::ldlm::ldlm_server::LdlmServer;
use ldlm_security::password::Password;
use ldlm_service::LockService;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tonic::transport::Server;
use tracing::{debug, warn};

use crate::conn::SessionInfo;

/// How long [`serve`] waits, after its shutdown signal, for open connections to finish their
/// calls before it closes them itself and returns.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Settings of the gRPC listener (from the server's flags).
#[derive(Clone, Debug)]
pub struct GrpcOptions {
    /// `--password`: when set, every call must carry metadata `authorization` equal to it.
    pub password: Option<Password>,
    /// TLS (and mTLS) configuration; `None` serves plaintext HTTP/2. It should advertise ALPN
    /// `h2` (`ldlm_security::tls::server_config(.., &[b"h2"])`).
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// `--keepalive_interval`: the server pings a connection after this long without traffic.
    /// Zero disables the pings.
    pub keepalive_interval: Duration,
    /// `--keepalive_timeout`: a connection whose ping is not answered within this is closed
    /// (and its locks released, as for any closed connection).
    pub keepalive_timeout: Duration,
    /// Most connections open at once; more are closed right after `accept`. Zero means no
    /// limit.
    pub max_connections: usize,
    /// Largest request message accepted, in bytes (gRPC's default is 4 MiB). Larger requests
    /// fail with status `OUT_OF_RANGE`.
    pub max_message_bytes: usize,
}

impl Default for GrpcOptions {
    /// go-ldlm's defaults: no password, plaintext, keepalive ping after 60 s answered within
    /// 10 s, 4 MiB messages; at most 10 000 connections.
    fn default() -> Self {
        GrpcOptions {
            password: None,
            tls: None,
            keepalive_interval: Duration::from_secs(60),
            keepalive_timeout: Duration::from_secs(10),
            max_connections: 10_000,
            max_message_bytes: 4 * 1024 * 1024,
        }
    }
}

/// Why [`serve`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GrpcError {
    /// The listener's local address could not be read.
    #[error("gRPC listener has no local address: {0}")]
    LocalAddr(#[source] std::io::Error),
    /// The HTTP/2 server failed.
    #[error("gRPC server error: {0}")]
    Serve(#[from] tonic::transport::Error),
    /// The reflection service could not be built from the embedded descriptor set.
    #[error("gRPC reflection service: {0}")]
    Reflection(String),
}

/// The client address of a request, from the session our accept loop attached.
fn remote_of<O: Send + Sync + 'static>(extensions: &http::Extensions) -> Option<SocketAddr> {
    extensions
        .get::<SessionInfo<O>>()
        .map(|session| session.remote_addr)
}

/// Serves the `ldlm.LDLM` gRPC service over `service` on `listener` until `shutdown`
/// completes.
///
/// The startup lines (`Loaded gRPC TLS configuration`, `Loaded gRPC authentication
/// configuration`, `gRPC server started. Listening on <addr>`, as go-ldlm prints them) are the
/// caller's: it knows the order of all listeners. This function logs only at DEBUG, except
/// `Invalid password from client` (WARN) and trouble accepting connections (WARN,
/// rate-limited).
///
/// **Shutdown.** When `shutdown` completes, the listener is closed, every connection is asked
/// to close (HTTP/2 GOAWAY) once its calls in flight have finished, and `serve` returns when
/// all are closed, or after [`SHUTDOWN_GRACE`], closing the stragglers itself. Call
/// [`LockService::shutdown`] **before** completing `shutdown`: waiting Locks then end with
/// `lock manager is shutdown`, and connections closing afterwards keep their locks.
/// Connections that close before it release theirs.
pub async fn serve<S: LockService>(
    service: Arc<S>,
    listener: TcpListener,
    options: GrpcOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), GrpcError> {
    let addr = listener.local_addr().map_err(GrpcError::LocalAddr)?;

    let (options_tls, options_password) = (options.tls.is_some(), options.password.is_some());
    // Closing the stragglers after the grace period: every connection's reads fail once this
    // is set (or once the sender is gone, i.e. when this function returns or is dropped).
    let (close_all, close_signal) = watch::channel(false);
    let (fired_tx, fired_rx) = oneshot::channel::<()>();
    let (accepting_tx, accepting_rx) = watch::channel(true);
    let mut accepting = accepting_rx;
    let acceptor = Acceptor::new(
        listener,
        ListenerOptions {
            name: "gRPC",
            tls: options.tls,
            max_connections: options.max_connections,
        },
        async move {
            let _ = accepting.wait_for(|open| !*open).await;
        },
    );
    let sessions = conn::SessionFactory {
        service: service.clone(),
        close_signal,
    };
    let incoming = futures_util::stream::unfold(
        (acceptor, sessions),
        |(mut acceptor, sessions)| async move {
            let accepted = acceptor.next().await?;
            let connection = sessions.open(accepted);
            Some((
                Ok::<_, std::convert::Infallible>(connection),
                (acceptor, sessions),
            ))
        },
    );

    let ldlm = LdlmServer::new(service::LdlmService::new(service))
        .max_decoding_message_size(options.max_message_bytes);
    // Standard health checking (`grpc.health.v1`) and server reflection, so load balancers,
    // Kubernetes probes and grpcurl work without extra setup. Neither needs the password.
    let (health_reporter, health) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<LdlmServer<service::LdlmService<S>>>()
        .await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(ldlm_proto::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| GrpcError::Reflection(e.to_string()))?;
    let reflection_alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(ldlm_proto::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .map_err(|e| GrpcError::Reflection(e.to_string()))?;
    let keepalive = (!options.keepalive_interval.is_zero()).then_some(options.keepalive_interval);
    let server = Server::builder()
        .http2_keepalive_interval(keepalive)
        .http2_keepalive_timeout(Some(options.keepalive_timeout))
        .layer(auth::AuthLayer::new(
            options.password,
            remote_of::<S::Owner>,
        ))
        .add_service(ldlm)
        .add_service(health)
        .add_service(reflection)
        .add_service(reflection_alpha);

    debug!(
        %addr,
        tls = options_tls,
        password = options_password,
        "gRPC listener serving"
    );

    let signal = async move {
        shutdown.await;
        debug!("gRPC server shutting down");
        // Stop accepting (closes the listening socket) ...
        let _ = accepting_tx.send(false);
        // ... and start the grace period.
        let _ = fired_tx.send(());
    };
    let serving = server.serve_with_incoming_shutdown(incoming, signal);
    let grace = async move {
        match fired_rx.await {
            Ok(()) => tokio::time::sleep(SHUTDOWN_GRACE).await,
            // The signal future is owned by `serving`: it only goes away when that finishes.
            Err(_) => std::future::pending().await,
        }
    };
    let result = tokio::select! {
        result = serving => result.map_err(GrpcError::from),
        () = grace => {
            warn!(
                grace_ms = SHUTDOWN_GRACE.as_millis() as u64,
                "gRPC connections still open after the shutdown grace period: closing them"
            );
            Ok(())
        }
    };
    let _ = close_all.send(true);
    debug!("gRPC server stopped");
    result
}

/// Not part of the API: the service without the network, for the `grpc_decode` fuzz target and
/// tests. The service's methods are called directly (`harness.service().lock(request)`) with a
/// request carrying a session, as our accept loop would give it.
#[doc(hidden)]
pub mod fuzzing {
    use std::net::{Ipv4Addr, SocketAddr};
    use std::sync::Arc;

    use ldlm_proto::ldlm::ldlm_server::Ldlm;
    use ldlm_service::LockService;

    use crate::conn::SessionInfo;
    use crate::service::LdlmService;

    /// The `ldlm.LDLM` service over a lock service.
    pub struct Harness<S: LockService>(LdlmService<S>);

    impl<S: LockService> Harness<S> {
        /// The gRPC service over `service`.
        pub fn new(service: Arc<S>) -> Harness<S> {
            Harness(LdlmService::new(service))
        }

        /// The service (the [`Ldlm`] trait implementation the server runs).
        pub fn service(&self) -> &impl Ldlm {
            &self.0
        }

        /// `message` as a request on a connection whose session is `owner`.
        pub fn request<T>(owner: &S::Owner, message: T) -> tonic::Request<T> {
            let mut request = tonic::Request::new(message);
            request.extensions_mut().insert(SessionInfo {
                owner: owner.clone(),
                owner_id: S::owner_id(owner).0,
                remote_addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            });
            request
        }
    }
}
