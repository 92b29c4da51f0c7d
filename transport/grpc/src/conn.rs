//! Connections and sessions: our accept loop, and the IO object tonic serves.
//!
//! tonic is given a stream of ready [`Connection`]s instead of a listener, so that we control
//! what happens around each one:
//!
//! 1. `accept`, then the connection limit: a connection beyond `max_connections` is closed at
//!    once (logged at WARN at most every [`WARN_EVERY`], at DEBUG otherwise);
//! 2. `TCP_NODELAY` (small unary responses must not wait for Nagle);
//! 3. with TLS, the handshake runs in a task of its own under a timeout, so one slow or
//!    silent client never holds up `accept`; a failed handshake is logged at DEBUG and
//!    dropped;
//! 4. a new engine [`Owner`]: one connection is one session (reference §4). The
//!    [`Connection`] implements tonic's [`Connected`], whose [`SessionInfo`] (owner + peer
//!    address) tonic puts into every request's extensions.
//!
//! **Session end.** hyper drops the IO object when the HTTP/2 connection is over, however it
//! ended: the client closed it, the network broke, a keepalive ping went unanswered, or the
//! server shut down. Dropping it releases the owner in the engine, unless the engine is shut
//! down (a graceful shutdown keeps locks, DESIGN §4.4). Whether the owner's holds are freed or
//! kept (`no_clear_on_disconnect`) is the engine's decision; its waiters are cancelled either
//! way.
//!
//! **Forced close.** After the shutdown grace period [`crate::serve`] closes whatever is still
//! open: each connection watches a shared signal while its reads are pending and then fails
//! its read, which makes hyper drop the connection.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use ldlm_engine::{Engine, Owner};
use ldlm_service::driver::Clock;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tonic::transport::server::Connected;
use tracing::{debug, warn};

/// Connections accepted (and handshaken) but not yet taken by tonic.
pub(crate) const ACCEPT_QUEUE: usize = 64;

/// Repeated warnings (connection limit, accept errors) are logged at most this often; the
/// ones in between go to DEBUG and are counted in the next warning.
pub(crate) const WARN_EVERY: Duration = Duration::from_secs(10);

/// Pause after an `accept` error that is not about one connection (e.g. out of file
/// descriptors), so the loop does not spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// What every request on a connection knows about it (tonic's `ConnectInfo`, found in the
/// request's extensions).
#[derive(Clone, Debug)]
pub(crate) struct SessionInfo {
    /// The engine owner of everything this connection locks.
    pub(crate) owner: Owner,
    /// The client's address.
    pub(crate) remote_addr: SocketAddr,
}

/// The transport under a connection.
enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

/// One client connection, as served by tonic. Dropping it ends its session.
pub(crate) struct Connection {
    stream: Stream,
    closing: Closing,
    /// Declared after `stream`: the socket is closed before the owner is released.
    session: Session,
    /// This connection's slot of `max_connections` (`None` without a limit).
    _slot: Option<OwnedSemaphorePermit>,
}

impl Connected for Connection {
    type ConnectInfo = SessionInfo;

    fn connect_info(&self) -> SessionInfo {
        self.session.info.clone()
    }
}

fn forced_close() -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionAborted, "gRPC server shut down")
}

impl AsyncRead for Connection {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.closing.closed {
            return Poll::Ready(Err(forced_close()));
        }
        let read = match &mut this.stream {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        };
        // hyper always has a read outstanding, so a connection is always either reading data
        // or parked here: watching the close signal only when parked costs the hot path
        // nothing.
        match read {
            Poll::Pending if this.closing.poll_closed(cx) => Poll::Ready(Err(forced_close())),
            other => other,
        }
    }
}

impl AsyncWrite for Connection {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().stream {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().stream {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match &self.stream {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().stream {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().stream {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// The server-wide "close every connection now" signal, as seen by one connection.
struct Closing {
    /// Completes when the signal is set or its sender is gone; `None` once it has completed.
    signal: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
    closed: bool,
}

impl Closing {
    fn new(mut signal: watch::Receiver<bool>) -> Closing {
        Closing {
            signal: Some(Box::pin(async move {
                // An error means the sender (the server) is gone: close as well.
                let _ = signal.wait_for(|close| *close).await;
            })),
            closed: false,
        }
    }

    /// Whether the connection must close; registers `cx` to be woken when it must.
    fn poll_closed(&mut self, cx: &mut Context<'_>) -> bool {
        if let Some(signal) = &mut self.signal
            && signal.as_mut().poll(cx).is_ready()
        {
            self.signal = None;
            self.closed = true;
        }
        self.closed
    }
}

/// A connection's engine owner; dropping it ends the session.
struct Session {
    info: SessionInfo,
    engine: Engine,
    clock: Clock,
}

impl Drop for Session {
    fn drop(&mut self) {
        let session_id = self.info.owner.id().0;
        let remote_address = self.info.remote_addr;
        debug!(session_id, %remote_address, "Session ended");
        if self.engine.is_shut_down() {
            // Graceful shutdown: the locks stay held and stay in the state file (DESIGN §4.4).
            debug!(session_id, %remote_address, "Server shutting down: session locks kept");
            return;
        }
        let summary = self
            .engine
            .release_owner(&self.info.owner, self.clock.now());
        debug!(
            session_id,
            %remote_address,
            num_locks = summary.released + summary.kept,
            released = summary.released,
            kept = summary.kept,
            waiters_cancelled = summary.waiters_cancelled,
            "Client session cleanup"
        );
    }
}

/// Makes the session of each new connection.
pub(crate) struct SessionFactory {
    pub(crate) engine: Engine,
    pub(crate) clock: Clock,
    pub(crate) close_signal: watch::Receiver<bool>,
}

impl SessionFactory {
    fn open(
        &self,
        stream: Stream,
        remote_addr: SocketAddr,
        slot: Option<OwnedSemaphorePermit>,
    ) -> Connection {
        let owner = self.engine.new_owner();
        debug!(session_id = owner.id().0, remote_address = %remote_addr, "Session started");
        Connection {
            stream,
            closing: Closing::new(self.close_signal.clone()),
            session: Session {
                info: SessionInfo { owner, remote_addr },
                engine: self.engine.clone(),
                clock: self.clock,
            },
            _slot: slot,
        }
    }
}

/// `--max_connections` (or no limit).
pub(crate) struct ConnectionLimit {
    slots: Option<Arc<Semaphore>>,
    max: usize,
}

/// A free slot, held for the life of the connection.
struct Slot(Option<OwnedSemaphorePermit>);

impl ConnectionLimit {
    /// At most `max` connections at once; 0 means no limit.
    pub(crate) fn new(max: usize) -> ConnectionLimit {
        ConnectionLimit {
            slots: (max != 0).then(|| Arc::new(Semaphore::new(max.min(Semaphore::MAX_PERMITS)))),
            max,
        }
    }

    fn try_acquire(&self) -> Option<Slot> {
        match &self.slots {
            None => Some(Slot(None)),
            Some(slots) => slots
                .clone()
                .try_acquire_owned()
                .ok()
                .map(|p| Slot(Some(p))),
        }
    }
}

/// Logs a recurring condition at WARN at most every [`WARN_EVERY`].
#[derive(Default)]
struct RateLimited {
    last: Option<Instant>,
    suppressed: u64,
}

impl RateLimited {
    /// `Some(number suppressed since the last warning)` if a warning is due now.
    fn due(&mut self) -> Option<u64> {
        let now = Instant::now();
        match self.last {
            Some(last) if now.duration_since(last) < WARN_EVERY => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

/// Errors of `accept` that concern one connection only (it went away before we took it).
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// Accepts connections and hands them, ready to serve, to tonic through `queue`.
pub(crate) struct AcceptLoop {
    pub(crate) listener: TcpListener,
    pub(crate) tls: Option<TlsAcceptor>,
    pub(crate) limit: ConnectionLimit,
    pub(crate) sessions: SessionFactory,
    pub(crate) queue: mpsc::Sender<Result<Connection, Infallible>>,
}

impl AcceptLoop {
    /// Runs until tonic stops taking connections (shutdown) or the task is aborted. The
    /// listener is closed when this returns.
    pub(crate) async fn run(self) {
        let AcceptLoop {
            listener,
            tls,
            limit,
            sessions,
            queue,
        } = self;
        let sessions = Arc::new(sessions);
        let mut refusals = RateLimited::default();
        let mut failures = RateLimited::default();
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                () = queue.closed() => break,
            };
            let (stream, remote_addr) = match accepted {
                Ok(accepted) => accepted,
                Err(e) if is_connection_error(&e) => {
                    debug!(error = %e, "gRPC accept: connection lost before it was accepted");
                    continue;
                }
                Err(e) => {
                    match failures.due() {
                        Some(suppressed) => warn!(error = %e, suppressed, "gRPC accept failed"),
                        None => debug!(error = %e, "gRPC accept failed"),
                    }
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    continue;
                }
            };
            let Some(Slot(slot)) = limit.try_acquire() else {
                match refusals.due() {
                    Some(suppressed) => warn!(
                        client_addr = %remote_addr,
                        max_connections = limit.max,
                        suppressed,
                        "Too many gRPC connections: closing new connection"
                    ),
                    None => debug!(
                        client_addr = %remote_addr,
                        max_connections = limit.max,
                        "Too many gRPC connections: closing new connection"
                    ),
                }
                drop(stream);
                continue;
            };
            if let Err(e) = stream.set_nodelay(true) {
                debug!(client_addr = %remote_addr, error = %e, "Cannot set TCP_NODELAY");
            }
            match &tls {
                None => {
                    let connection = sessions.open(Stream::Plain(stream), remote_addr, slot);
                    if queue.send(Ok(connection)).await.is_err() {
                        break;
                    }
                }
                Some(acceptor) => {
                    let acceptor = acceptor.clone();
                    let sessions = sessions.clone();
                    let queue = queue.clone();
                    tokio::spawn(async move {
                        match tokio::time::timeout(
                            crate::TLS_HANDSHAKE_TIMEOUT,
                            acceptor.accept(stream),
                        )
                        .await
                        {
                            Ok(Ok(tls)) => {
                                let connection =
                                    sessions.open(Stream::Tls(Box::new(tls)), remote_addr, slot);
                                // Fails only when the server stopped: the connection is dropped.
                                let _ = queue.send(Ok(connection)).await;
                            }
                            Ok(Err(e)) => {
                                debug!(client_addr = %remote_addr, error = %e, "TLS handshake failed")
                            }
                            Err(_) => debug!(client_addr = %remote_addr, "TLS handshake timed out"),
                        }
                    });
                }
            }
        }
        debug!("gRPC accept loop stopped");
    }
}
