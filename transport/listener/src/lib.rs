//! # ldlm-listener
//!
//! The accept loop every TCP listener of the server uses (gRPC, REST, metrics), so they all
//! treat connections the same way:
//!
//! 1. `accept`. An error that concerns one connection (it was reset before we took it) is
//!    skipped; any other (out of file descriptors, out of memory) is logged and waited out for
//!    [`ACCEPT_ERROR_PAUSE`], so the loop never spins a core.
//! 2. The connection limit (`--max_connections`): a connection over the limit is **closed at
//!    once**. The client learns immediately (and can go to another node) instead of hanging in
//!    the kernel's backlog with no way to tell a full server from a slow one.
//! 3. `TCP_NODELAY`: small replies must not wait for Nagle.
//! 4. With TLS, the handshake runs in a task of its own under [`TLS_HANDSHAKE_TIMEOUT`], so a
//!    slow or silent client never holds up `accept`; a failed handshake is logged at DEBUG.
//!
//! Recurring warnings (refused connections, accept errors) are logged at WARN at most every
//! [`WARN_EVERY`]; the ones in between go to DEBUG and are counted in the next warning.
//!
//! [`Acceptor::next`] yields ready connections, each holding its slot of the limit until it is
//! dropped, and `None` once the shutdown signal fired (the listening socket is closed then).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tracing::{debug, warn};

/// How long a client may take to complete its TLS handshake.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Pause after an `accept` error that is not about one connection.
pub const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// Repeated warnings are logged at most this often.
pub const WARN_EVERY: Duration = Duration::from_secs(10);

/// How a listener accepts connections.
#[derive(Clone, Debug)]
pub struct ListenerOptions {
    /// What it serves, for logs: `gRPC`, `REST`, `metrics`.
    pub name: &'static str,
    /// TLS configuration; `None` accepts plaintext.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Most connections open at once; more are closed right after `accept`. 0: no limit.
    pub max_connections: usize,
}

/// A connection's byte stream: plain TCP or TLS over it.
#[derive(Debug)]
pub enum Stream {
    /// Plaintext.
    Plain(TcpStream),
    /// After a completed TLS handshake.
    Tls(Box<TlsStream<TcpStream>>),
}

/// A connection ready to serve.
#[derive(Debug)]
pub struct Accepted {
    /// Its stream.
    pub stream: Stream,
    /// The client's address.
    pub remote: SocketAddr,
    /// Its place under the connection limit: keep it as long as the connection is open.
    pub slot: Slot,
}

/// A connection's place under the limit, given back when dropped.
#[derive(Debug)]
pub struct Slot(#[allow(dead_code)] Option<OwnedSemaphorePermit>);

/// Accepts connections for one listener. See the crate doc.
pub struct Acceptor {
    listener: Option<TcpListener>,
    options: ListenerOptions,
    tls: Option<TlsAcceptor>,
    slots: Option<Arc<Semaphore>>,
    handshakes: JoinSet<Option<Accepted>>,
    shutdown: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
    refusals: RateLimited,
    failures: RateLimited,
}

impl std::fmt::Debug for Acceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Acceptor")
            .field("options", &self.options)
            .field("open", &self.listener.is_some())
            .finish_non_exhaustive()
    }
}

impl Acceptor {
    /// Accepts from `listener` until `shutdown` completes.
    pub fn new(
        listener: TcpListener,
        options: ListenerOptions,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Acceptor {
        let slots = (options.max_connections != 0).then(|| {
            Arc::new(Semaphore::new(
                options.max_connections.min(Semaphore::MAX_PERMITS),
            ))
        });
        Acceptor {
            listener: Some(listener),
            tls: options.tls.clone().map(TlsAcceptor::from),
            options,
            slots,
            handshakes: JoinSet::new(),
            shutdown: Some(Box::pin(shutdown)),
            refusals: RateLimited::default(),
            failures: RateLimited::default(),
        }
    }

    /// The next connection ready to serve; `None` once the shutdown signal fired (the
    /// listening socket is closed then, and handshakes under way are abandoned).
    pub async fn next(&mut self) -> Option<Accepted> {
        loop {
            let (listener, shutdown) = match (&self.listener, &mut self.shutdown) {
                (Some(listener), Some(shutdown)) => (listener, shutdown),
                _ => return None,
            };
            tokio::select! {
                biased;
                () = shutdown.as_mut() => {
                    self.close();
                    return None;
                }
                Some(done) = self.handshakes.join_next(), if !self.handshakes.is_empty() => {
                    if let Ok(Some(accepted)) = done {
                        return Some(accepted);
                    }
                }
                accepted = listener.accept() => {
                    let (stream, remote) = match accepted {
                        Ok(accepted) => accepted,
                        Err(error) => {
                            self.accept_failed(error).await;
                            continue;
                        }
                    };
                    if let Some(accepted) = self.admit(stream, remote) {
                        return Some(accepted);
                    }
                }
            }
        }
    }

    /// Stops accepting: closes the socket and abandons handshakes.
    fn close(&mut self) {
        self.listener = None;
        self.shutdown = None;
        self.handshakes.abort_all();
    }

    /// Limit, `TCP_NODELAY`, TLS: the connection if it is ready now (plaintext).
    fn admit(&mut self, stream: TcpStream, remote: SocketAddr) -> Option<Accepted> {
        let slot = match &self.slots {
            None => Slot(None),
            Some(slots) => match slots.clone().try_acquire_owned() {
                Ok(permit) => Slot(Some(permit)),
                Err(_) => {
                    let (name, max) = (self.options.name, self.options.max_connections);
                    match self.refusals.due() {
                        Some(suppressed) => warn!(
                            client_addr = %remote, max_connections = max, suppressed,
                            "Too many {name} connections: closing new connection"
                        ),
                        None => debug!(
                            client_addr = %remote, max_connections = max,
                            "Too many {name} connections: closing new connection"
                        ),
                    }
                    return None;
                }
            },
        };
        if let Err(error) = stream.set_nodelay(true) {
            debug!(client_addr = %remote, %error, "Cannot set TCP_NODELAY");
        }
        let Some(acceptor) = self.tls.clone() else {
            return Some(Accepted {
                stream: Stream::Plain(stream),
                remote,
                slot,
            });
        };
        self.handshakes.spawn(async move {
            match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => Some(Accepted {
                    stream: Stream::Tls(Box::new(tls)),
                    remote,
                    slot,
                }),
                Ok(Err(error)) => {
                    debug!(client_addr = %remote, %error, "TLS handshake failed");
                    None
                }
                Err(_) => {
                    debug!(client_addr = %remote, "TLS handshake timed out");
                    None
                }
            }
        });
        None
    }

    async fn accept_failed(&mut self, error: io::Error) {
        let name = self.options.name;
        if is_connection_error(&error) {
            debug!(%error, "{name} accept: connection lost before it was accepted");
            return;
        }
        match self.failures.due() {
            Some(suppressed) => {
                warn!(%error, suppressed, "Accepting {name} connections failed; retrying shortly")
            }
            None => debug!(%error, "Accepting {name} connections failed"),
        }
        tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
    }
}

/// Errors of `accept` that concern one connection only (it went away before we took it).
fn is_connection_error(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
    )
}

/// Logs a recurring condition at WARN at most every [`WARN_EVERY`] (shared with the cluster's
/// refusals of peers, which come back with every heartbeat).
#[derive(Debug, Default)]
pub struct RateLimited {
    last: Option<Instant>,
    suppressed: u64,
}

impl RateLimited {
    /// `Some(number suppressed since the last warning)` if a warning is due now.
    pub fn due(&mut self) -> Option<u64> {
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

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn acceptor(max: usize) -> (Acceptor, SocketAddr, tokio::sync::oneshot::Sender<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let options = ListenerOptions {
            name: "test",
            tls: None,
            max_connections: max,
        };
        let acceptor = Acceptor::new(listener, options, async move {
            let _ = stopped.await;
        });
        (acceptor, addr, stop)
    }

    #[tokio::test]
    async fn over_the_limit_is_closed_at_once_and_a_freed_slot_is_reused() {
        use tokio::io::AsyncReadExt as _;
        let (mut acceptor, addr, _stop) = acceptor(1).await;
        let _first = TcpStream::connect(addr).await.expect("connect");
        let first = acceptor.next().await.expect("first accepted");
        let mut second = TcpStream::connect(addr).await.expect("connect");
        // The acceptor refuses it while looking for the next connection.
        let next = tokio::time::timeout(Duration::from_millis(300), acceptor.next()).await;
        assert!(next.is_err(), "nothing admitted over the limit");
        let mut byte = [0u8; 1];
        let read = tokio::time::timeout(Duration::from_secs(2), second.read(&mut byte))
            .await
            .expect("closed promptly");
        assert!(
            matches!(read, Ok(0) | Err(_)),
            "the refused connection is closed"
        );
        drop(first);
        let _third = TcpStream::connect(addr).await.expect("connect");
        let third = tokio::time::timeout(Duration::from_secs(2), acceptor.next())
            .await
            .expect("admitted once a slot is free");
        assert!(third.is_some());
    }

    #[tokio::test]
    async fn shutdown_closes_the_listener() {
        let (mut acceptor, addr, stop) = acceptor(0).await;
        stop.send(()).expect("send");
        assert!(acceptor.next().await.is_none());
        assert!(acceptor.next().await.is_none(), "stays closed");
        assert!(TcpStream::connect(addr).await.is_err(), "socket closed");
    }
}
