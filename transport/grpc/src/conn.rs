//! Connections and sessions: the IO object tonic serves, one lock-service owner per connection.
//!
//! tonic is given a stream of ready [`Connection`]s instead of a listener: the server's shared
//! accept loop ([`ldlm_listener::Acceptor`]: connection limit, `TCP_NODELAY`, TLS handshake
//! off the accept path) produces them, and each gets a new owner from the lock service: **one
//! HTTP/2 connection = one session**, as in go-ldlm. The [`Connection`] implements tonic's
//! [`Connected`], whose [`SessionInfo`] (owner + peer address) tonic puts into every request's
//! extensions.
//!
//! **Session end.** hyper drops the IO object when the HTTP/2 connection is over, however it
//! ended: the client closed it, the network broke, a keepalive ping went unanswered, or the
//! server shut down. Dropping it tells the lock service the owner disconnected: its holds are
//! released (or kept, under `no_clear_on_disconnect` or during a graceful shutdown — the
//! service decides) and its waiters cancelled.
//!
//! **Forced close.** After the shutdown grace period [`crate::serve`] closes whatever is still
//! open: each connection watches a shared signal while its reads are pending and then fails
//! its read, which makes hyper drop the connection.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use ldlm_listener::{Accepted, Slot, Stream};
use ldlm_service::{Disconnected, LockService};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::watch;
use tonic::transport::server::Connected;
use tracing::debug;

/// What every request on a connection knows about it (tonic's `ConnectInfo`, found in the
/// request's extensions).
#[derive(Clone, Debug)]
pub(crate) struct SessionInfo<O> {
    /// The lock-service owner of everything this connection locks.
    pub(crate) owner: O,
    /// The owner's id, for logs.
    pub(crate) owner_id: u64,
    /// The client's address.
    pub(crate) remote_addr: SocketAddr,
}

impl<O> SessionInfo<O> {
    /// The session id logs show (go-ldlm's `session_id`).
    pub(crate) fn id(&self) -> u64 {
        self.owner_id
    }
}

/// One client connection, as served by tonic. Dropping it ends its session.
pub(crate) struct Connection<S: LockService> {
    stream: Stream,
    closing: Closing,
    /// Declared after `stream`: the socket is closed before the owner is released.
    session: Session<S>,
    /// This connection's place under `max_connections`.
    _slot: Slot,
}

impl<S: LockService> Connected for Connection<S> {
    type ConnectInfo = SessionInfo<S::Owner>;

    fn connect_info(&self) -> SessionInfo<S::Owner> {
        self.session.info.clone()
    }
}

fn forced_close() -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionAborted, "gRPC server shut down")
}

impl<S: LockService> AsyncRead for Connection<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.closing.closed {
            return Poll::Ready(Err(forced_close()));
        }
        let read = Pin::new(&mut this.stream).poll_read(cx, buf);
        // hyper always has a read outstanding, so a connection is always either reading data
        // or parked here: watching the close signal only when parked costs the hot path
        // nothing.
        match read {
            Poll::Pending if this.closing.poll_closed(cx) => Poll::Ready(Err(forced_close())),
            other => other,
        }
    }
}

impl<S: LockService> AsyncWrite for Connection<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

/// The signals that close a connection, as seen by one connection: the server's "close every
/// connection now" after the shutdown grace period, and the lock service's connection resets
/// (a cluster node cut off from its cluster closes its clients).
struct Closing {
    /// Completes when a signal fires or its sender is gone; `None` once it has completed.
    signal: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
    closed: bool,
}

impl Closing {
    fn new(mut signal: watch::Receiver<bool>, resets: Option<watch::Receiver<u64>>) -> Closing {
        Closing {
            signal: Some(Box::pin(async move {
                let reset = async move {
                    match resets {
                        Some(mut resets) => {
                            // Only a reset after this connection opened counts.
                            resets.borrow_and_update();
                            let _ = resets.changed().await;
                        }
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    // An error means the sender (the server) is gone: close as well.
                    _ = signal.wait_for(|close| *close) => {}
                    () = reset => {}
                }
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

/// A connection's owner; dropping it ends the session.
struct Session<S: LockService> {
    info: SessionInfo<S::Owner>,
    service: Arc<S>,
}

impl<S: LockService> Drop for Session<S> {
    fn drop(&mut self) {
        let session_id = self.info.id();
        let remote_address = self.info.remote_addr;
        debug!(session_id, %remote_address, "Session ended");
        match self.service.disconnect(&self.info.owner) {
            Disconnected::Kept => {
                debug!(session_id, %remote_address, "Server shutting down: session locks kept")
            }
            Disconnected::Released(summary) => debug!(
                session_id,
                %remote_address,
                num_locks = summary.released + summary.kept,
                released = summary.released,
                kept = summary.kept,
                waiters_cancelled = summary.waiters_cancelled,
                "Client session cleanup"
            ),
        }
    }
}

/// Turns accepted connections into sessions of the lock service.
pub(crate) struct SessionFactory<S: LockService> {
    pub(crate) service: Arc<S>,
    pub(crate) close_signal: watch::Receiver<bool>,
}

impl<S: LockService> SessionFactory<S> {
    pub(crate) fn open(&self, accepted: Accepted) -> Connection<S> {
        let owner = self.service.connect();
        let owner_id = S::owner_id(&owner).0;
        let remote_addr = accepted.remote;
        debug!(session_id = owner_id, remote_address = %remote_addr, "Session started");
        Connection {
            stream: accepted.stream,
            closing: Closing::new(self.close_signal.clone(), self.service.connection_resets()),
            session: Session {
                info: SessionInfo {
                    owner,
                    owner_id,
                    remote_addr,
                },
                service: self.service.clone(),
            },
            _slot: accepted.slot,
        }
    }
}
