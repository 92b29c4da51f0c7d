//! # ldlm-grpc
//!
//! The gRPC transport of LDLM (DESIGN §5): go-ldlm's `ldlm.LDLM` service served with tonic,
//! on top of the synchronous [`ldlm_engine::Engine`]. The server binary calls one function:
//! [`serve`] (given a `Durability` when grants go to a state file).
//!
//! ## Shape
//!
//! - **`service`**: the [`Ldlm`](ldlm_proto::ldlm::ldlm_server::Ldlm) trait implementation.
//!   Thin: decode, one engine call, encode. Lock-domain errors are status OK with the
//!   response's `error` set (reference §2.3); response fields follow reference §2.4 except that
//!   a failed Lock/TryLock returns an empty key (DESIGN §4.3). `RefreshLock` and `Renew` share
//!   one code path (DESIGN §4.2).
//! - **`conn`**: our own accept loop feeding tonic a stream of connections. Every accepted
//!   TCP connection gets `TCP_NODELAY`, a slot of the connection limit, its TLS handshake (in a
//!   task of its own, with a timeout, so a slow client never blocks `accept`) and a new engine
//!   [`Owner`](ldlm_engine::Owner): **one HTTP/2 connection = one session** (reference §4).
//!   The connection's IO object carries the owner; tonic hands it to every request through
//!   [`tonic::transport::server::Connected`]. When hyper drops the IO object — the client
//!   closed the connection, or missed HTTP/2 keepalive pings — the owner is released
//!   ([`Engine::release_owner`]), which frees its locks (or keeps them under
//!   `no_clear_on_disconnect`: the engine decides) and cancels its waiters. After
//!   [`Engine::shutdown`] nothing is released, so a graceful shutdown keeps held locks
//!   (DESIGN §4.4).
//! - **`auth`**: a tower layer checking the `authorization` metadata against `--password`
//!   (constant time) before anything is decoded.
//!
//! ## Waiting and cancellation
//!
//! A blocking Lock awaits the engine's [`Pending`](ldlm_engine::Pending). If the client
//! cancels the call (HTTP/2 `RST_STREAM`) or its `grpc-timeout` passes, tonic/hyper drop the
//! handler's future, which drops the `Pending`: the waiter leaves the queue, and a grant that
//! raced with the drop is passed on. If the whole connection goes away, releasing its owner
//! cancels its waiters as well.
//!
//! ## Logging
//!
//! `tracing`, with go-ldlm's message texts (reference §11). The startup lines are the server
//! binary's; per-request and per-session lines (`Lock request`, `Lock response`, `Session started`,
//! `Client session cleanup`, ...) at DEBUG only, since they cost throughput (DESIGN §6).

mod auth;
mod conn;
mod service;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use ldlm_engine::Engine;
use ldlm_proto::ldlm::ldlm_server::LdlmServer;
use ldlm_security::password::Password;
use ldlm_service::driver::Clock;
use ldlm_state_file::Durability;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};
use tonic::transport::Server;
use tracing::{debug, warn};

/// How long [`serve`] waits, after its shutdown signal, for open connections to finish their
/// calls before it closes them itself and returns.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// How long a client may take to complete its TLS handshake.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

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

/// Serves the `ldlm.LDLM` gRPC service on `listener` until `shutdown` completes.
///
/// The startup lines of reference §11 (`Loaded gRPC TLS configuration`, `Loaded gRPC
/// authentication configuration`, `gRPC server started. Listening on <addr>`) are the
/// caller's: it knows the order of all listeners. This function logs only at DEBUG, except
/// `Invalid password from client` (WARN) and trouble accepting connections (WARN, rate-limited).
///
/// **Shutdown.** When `shutdown` completes, the listener is closed, every connection is asked
/// to close (HTTP/2 GOAWAY) once its calls in flight have finished, and `serve` returns when
/// all are closed, or after [`SHUTDOWN_GRACE`], closing the stragglers itself. Call
/// [`Engine::shutdown`] **before** completing `shutdown`: waiting Locks then end with
/// `lock manager is shutdown`, and connections closing afterwards keep their locks
/// (DESIGN §4.4). Connections that close before `Engine::shutdown` release theirs.
///
/// **Durability.** With `durability` (the engine records grants in a state file), Lock and
/// TryLock answer "locked" only once the grant is on disk (DESIGN §4.5); a grant that cannot be
/// written is given back and the call fails with status `INTERNAL`.
///
/// The engine's timers must be driven separately
/// ([`spawn_timer_driver`](ldlm_service::driver::spawn_timer_driver)).
pub async fn serve(
    engine: Engine,
    clock: Clock,
    listener: TcpListener,
    options: GrpcOptions,
    durability: Option<Durability>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), GrpcError> {
    let addr = listener.local_addr().map_err(GrpcError::LocalAddr)?;

    let (options_tls, options_password) = (options.tls.is_some(), options.password.is_some());
    // Closing the stragglers after the grace period: every connection's reads fail once this
    // is set (or once the sender is gone, i.e. when this function returns or is dropped).
    let (close_all, close_signal) = watch::channel(false);
    let (conn_tx, conn_rx) = mpsc::channel(conn::ACCEPT_QUEUE);
    let accept = conn::AcceptLoop {
        listener,
        tls: options.tls.map(tokio_rustls::TlsAcceptor::from),
        limit: conn::ConnectionLimit::new(options.max_connections),
        sessions: conn::SessionFactory {
            engine: engine.clone(),
            clock,
            close_signal,
        },
        queue: conn_tx,
    };
    let acceptor = AbortOnDrop(tokio::spawn(accept.run()));

    let service = LdlmServer::new(service::LdlmService::new(engine, clock, durability))
        .max_decoding_message_size(options.max_message_bytes);
    // Standard health checking (`grpc.health.v1`) and server reflection, so load balancers,
    // Kubernetes probes and grpcurl work without extra setup. Neither needs the password.
    let (health_reporter, health) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<LdlmServer<service::LdlmService>>()
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
        .layer(auth::AuthLayer::new(options.password))
        .add_service(service)
        .add_service(health)
        .add_service(reflection)
        .add_service(reflection_alpha);

    debug!(
        %addr,
        tls = options_tls,
        password = options_password,
        "gRPC listener serving"
    );

    let (fired_tx, fired_rx) = oneshot::channel::<()>();
    let signal = async move {
        shutdown.await;
        debug!("gRPC server shutting down");
        let _ = fired_tx.send(());
    };
    let serving = server
        .serve_with_incoming_shutdown(tokio_stream::wrappers::ReceiverStream::new(conn_rx), signal);
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
    drop(acceptor);
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

    use ldlm_engine::{Engine, Owner};
    use ldlm_proto::ldlm::ldlm_server::Ldlm;
    use ldlm_service::driver::Clock;

    use crate::conn::SessionInfo;
    use crate::service::LdlmService;

    /// The `ldlm.LDLM` service over `engine`, without a state file.
    pub struct Harness(LdlmService);

    impl Harness {
        /// A service over `engine`, timed by `clock`.
        pub fn new(engine: Engine, clock: Clock) -> Harness {
            Harness(LdlmService::new(engine, clock, None))
        }

        /// The service (the [`Ldlm`] trait implementation the server runs).
        pub fn service(&self) -> &impl Ldlm {
            &self.0
        }

        /// `message` as a request on a connection whose session is `owner`.
        pub fn request<T>(owner: &Owner, message: T) -> tonic::Request<T> {
            let mut request = tonic::Request::new(message);
            request.extensions_mut().insert(SessionInfo {
                owner: owner.clone(),
                remote_addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            });
            request
        }
    }
}

/// Aborts a task when dropped (also when [`serve`]'s future is dropped).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
