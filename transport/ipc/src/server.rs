//! The IPC server: binding the socket safely, and serving `list` and `unlock` on it.
//!
//! [`bind`] refuses to start next to a live server and never deletes anything but a dead socket
//! (go-ldlm refuses any existing path, so a crash blocks restarts). [`serve`] is an
//! accept loop; each connection runs in its own task and may send several requests, answered in
//! order. When `shutdown` resolves, the listener closes, the socket file is removed (if it is
//! still ours), and connections finish the request in progress and close.

use std::future::Future;
use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ldlm_engine::LockError;
use ldlm_service::{ClusterStatus, LockService, MembershipChange, ServiceError};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{debug, error, info, warn};

use crate::protocol::{
    ClusterEntry, LockEntry, MAX_REQUEST_BYTES, MemberEntry, Request, Response,
    decode_request_limited, encode_response,
};

/// How long connections get to finish the request in progress once shutdown began.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

/// Why the IPC socket could not be bound.
#[derive(Debug, thiserror::Error)]
pub enum IpcError {
    /// A server answers on the path already.
    #[error("another ldlm-server is already listening on {}", path.display())]
    AlreadyListening {
        /// The socket path.
        path: PathBuf,
    },
    /// Something that is not a socket is in the way; it is left alone.
    #[error(
        "{} exists and is not a socket; refusing to replace it (choose another --ipc_socket_file)",
        path.display()
    )]
    NotASocket {
        /// The path.
        path: PathBuf,
    },
    /// A system call failed.
    #[error("cannot {action} IPC socket {}: {source}", path.display())]
    Io {
        /// What was being done ("bind", "inspect", …).
        action: &'static str,
        /// The socket path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

impl IpcError {
    fn io(action: &'static str, path: &Path, source: io::Error) -> IpcError {
        IpcError::Io {
            action,
            path: path.to_owned(),
            source,
        }
    }
}

/// Binds the IPC socket at `path` with mode 0600. Must be called within a Tokio runtime.
///
/// - nothing at `path`: binds;
/// - a socket with a live server behind it: [`IpcError::AlreadyListening`];
/// - a socket nobody listens on (left by a crash): removed with a WARN, then bound;
/// - anything else (a regular file, a directory, a symlink): [`IpcError::NotASocket`], and the
///   file is left untouched.
///
/// The socket is created with the process umask and restricted to 0600 right after `bind`.
pub fn bind(path: &Path) -> Result<UnixListener, IpcError> {
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(IpcError::io("inspect", path, e)),
        Ok(meta) if !meta.file_type().is_socket() => {
            return Err(IpcError::NotASocket {
                path: path.to_owned(),
            });
        }
        Ok(_) => match std::os::unix::net::UnixStream::connect(path) {
            Ok(_) => {
                return Err(IpcError::AlreadyListening {
                    path: path.to_owned(),
                });
            }
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                match std::fs::remove_file(path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(IpcError::io("remove stale", path, e)),
                }
                warn!(
                    path = %path.display(),
                    "Replaced a stale IPC socket file that no server was listening on"
                );
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            // E.g. permission denied: we cannot tell whether it is alive, so leave it alone.
            Err(e) => return Err(IpcError::io("probe existing", path, e)),
        },
    }
    let listener =
        std::os::unix::net::UnixListener::bind(path).map_err(|e| IpcError::io("bind", path, e))?;
    let restrict = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .and_then(|()| listener.set_nonblocking(true));
    if let Err(e) = restrict {
        drop(listener);
        let _ = std::fs::remove_file(path);
        return Err(IpcError::io("set up", path, e));
    }
    UnixListener::from_std(listener).map_err(|e| {
        let _ = std::fs::remove_file(path);
        IpcError::io("register", path, e)
    })
}

/// Options of [`serve_with`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServeOptions {
    /// The longest request line accepted, in bytes (`--max_request_bytes`). Default
    /// [`MAX_REQUEST_BYTES`].
    pub max_request_bytes: usize,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            max_request_bytes: MAX_REQUEST_BYTES,
        }
    }
}

/// Serves `list` and `unlock` on `listener` (bound at `path` by [`bind`]) until `shutdown`
/// resolves, then removes the socket file. With the default [`ServeOptions`].
pub async fn serve<S: LockService>(
    service: Arc<S>,
    listener: UnixListener,
    path: PathBuf,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    serve_with(service, listener, path, ServeOptions::default(), shutdown).await;
}

/// [`serve`] with options.
pub async fn serve_with<S: LockService>(
    service: Arc<S>,
    listener: UnixListener,
    path: PathBuf,
    options: ServeOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut connections = JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    connections.spawn(connection(
                        service.clone(),
                        stream,
                        options.max_request_bytes,
                        stop_rx.clone(),
                    ));
                }
                Err(e) => {
                    // E.g. out of file descriptors: back off instead of spinning.
                    warn!(error = %e, "IPC accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(joined) = connections.join_next(), if !connections.is_empty() => {
                if let Err(e) = joined {
                    error!(error = %e, "IPC connection task failed");
                }
            }
        }
    }
    drop(listener);
    remove_socket_file(&path);
    let _ = stop_tx.send(true);
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        connections.abort_all();
    }
}

/// Removes the socket file at `path` after our listener was closed, unless it is no longer a
/// socket or another server answers on it (someone replaced our file while we ran).
fn remove_socket_file(path: &Path) {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {}
        _ => return,
    }
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => {
            warn!(path = %path.display(), "Another server now listens on the IPC socket path; leaving it");
            return;
        }
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {}
        Err(_) => return,
    }
    if let Err(e) = std::fs::remove_file(path) {
        warn!(path = %path.display(), error = %e, "Could not remove the IPC socket file");
    }
}

/// One connection: requests in, responses out, until EOF, an IO error or shutdown.
async fn connection<S: LockService>(
    service: Arc<S>,
    stream: UnixStream,
    limit: usize,
    mut stop: watch::Receiver<bool>,
) {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    let mut line = Vec::new();
    loop {
        let frame = tokio::select! {
            biased;
            _ = stop.wait_for(|stopped| *stopped) => return,
            frame = read_frame(&mut reader, &mut line, limit) => frame,
        };
        let response = match frame {
            Ok(Frame::Eof) => return,
            Err(e) => {
                debug!(error = %e, "IPC connection read failed");
                return;
            }
            Ok(Frame::TooLong) => Response::Error {
                message: format!(
                    "invalid request: request line too long: the limit is {limit} bytes"
                ),
            },
            Ok(Frame::Line) => match decode_request_limited(&line, limit) {
                Ok(request) => handle(&*service, request).await,
                Err(e) => Response::Error {
                    message: format!("invalid request: {e}"),
                },
            },
        };
        if let Err(e) = write.write_all(&encode_response(&response)).await {
            debug!(error = %e, "IPC connection write failed");
            return;
        }
    }
}

/// What [`read_frame`] found.
enum Frame {
    /// A line (without its newline) is in the buffer; the last line may lack its newline.
    Line,
    /// A line longer than the limit was read and discarded.
    TooLong,
    /// The peer closed the connection between lines.
    Eof,
}

/// Reads one line into `line` without ever buffering more than `limit` bytes of it: the rest of
/// an over-long line is read and dropped.
async fn read_frame<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    line: &mut Vec<u8>,
    limit: usize,
) -> io::Result<Frame> {
    line.clear();
    let mut too_long = false;
    loop {
        let buf = reader.fill_buf().await?;
        if buf.is_empty() {
            return Ok(if too_long {
                Frame::TooLong
            } else if line.is_empty() {
                Frame::Eof
            } else {
                Frame::Line
            });
        }
        let (chunk, used, complete) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (&buf[..i], i + 1, true),
            None => (buf, buf.len(), false),
        };
        if !too_long {
            if line.len() + chunk.len() > limit {
                too_long = true;
                *line = Vec::new();
            } else {
                line.extend_from_slice(chunk);
            }
        }
        reader.consume(used);
        if complete {
            return Ok(if too_long {
                Frame::TooLong
            } else {
                Frame::Line
            });
        }
    }
}

/// Answers one decoded request.
async fn handle<S: LockService>(service: &S, request: Request) -> Response {
    match request {
        Request::List => {
            debug!("Handling IPC ListLocks request");
            match service.list().await {
                Ok(holds) => Response::Locks(
                    holds
                        .into_iter()
                        .map(|hold| LockEntry {
                            name: hold.name.to_string(),
                            key: hold.key.to_string(),
                            size: hold.size,
                            owner: hold.owner.0,
                            fencing_token: hold.fencing_token,
                            lease_expires_in_ms: hold.lease_remaining_ms(),
                        })
                        .collect(),
                ),
                Err(e) => Response::Error {
                    message: e.to_string(),
                },
            }
        }
        Request::ClusterStatus => match service.cluster_status() {
            Some(status) => Response::Cluster(cluster_entry(status)),
            None => Response::Error {
                message: "this server is not in cluster mode (no --cluster_node_id)".into(),
            },
        },
        Request::ClusterAdd { id, address } => {
            info!(node = id, %address, "Adding a cluster member (ldlm-lock cluster add)");
            membership(service, MembershipChange::Add { id, address }).await
        }
        Request::ClusterRemove { id } => {
            info!(
                node = id,
                "Removing a cluster member (ldlm-lock cluster remove)"
            );
            membership(service, MembershipChange::Remove { id }).await
        }
        Request::Unlock { name, key } => {
            debug!(name = %name, key = ?key, "Handling IPC Unlock request");
            // go-ldlm's IPC treats an empty key as "no key".
            let key = key.filter(|k| !k.is_empty());
            match service.force_unlock(&name, key.as_deref()).await {
                Ok(released) => {
                    info!(name = %name, key = %released, "Lock released through IPC (ldlm-lock unlock)");
                    Response::Unlocked {
                        key: released.to_string(),
                    }
                }
                Err(ServiceError::Lock(e)) => Response::Error {
                    message: unlock_error_message(&e, key.is_some()),
                },
                Err(e) => Response::Error {
                    message: format!("failed to unlock lock: {e}"),
                },
            }
        }
    }
}

/// go-ldlm's texts: finding the holder by name fails with the bare message (`a lock by that name
/// does not exist`, or our ambiguity message); unlocking a given key fails with
/// `failed to unlock lock: <cause>`.
/// A membership change, answered with the cluster's status once it is committed.
async fn membership<S: LockService>(service: &S, change: MembershipChange) -> Response {
    match service.change_membership(change).await {
        Ok(status) => Response::Cluster(cluster_entry(status)),
        Err(error) => Response::Error {
            message: error.to_string(),
        },
    }
}

fn cluster_entry(status: ClusterStatus) -> ClusterEntry {
    ClusterEntry {
        node_id: status.node_id,
        cluster_id: status.cluster_id,
        leader: status.leader,
        term: status.term,
        commit_index: status.commit_index,
        applied_index: status.applied_index,
        members: status
            .members
            .into_iter()
            .map(|member| MemberEntry {
                id: member.id,
                address: member.address,
                role: member.role.as_str().to_owned(),
                last_contact_ms: member.last_contact_ms,
            })
            .collect(),
    }
}

fn unlock_error_message(error: &LockError, with_key: bool) -> String {
    match error {
        LockError::LockDoesNotExist | LockError::AmbiguousUnlock { .. } if !with_key => {
            error.to_string()
        }
        _ => format!("failed to unlock lock: {error}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn frames(input: &[u8], limit: usize) -> Vec<Result<Vec<u8>, &'static str>> {
        // A tiny buffer makes lines span several fill_buf calls.
        let mut reader = BufReader::with_capacity(3, input);
        let mut line = Vec::new();
        let mut out = Vec::new();
        loop {
            match read_frame(&mut reader, &mut line, limit)
                .await
                .expect("in memory")
            {
                Frame::Line => out.push(Ok(line.clone())),
                Frame::TooLong => out.push(Err("too long")),
                Frame::Eof => return out,
            }
        }
    }

    #[tokio::test]
    async fn frames_are_bounded_lines() {
        assert_eq!(
            frames(b"ab\n\ncdefgh\nxyz\n123456", 5).await,
            vec![
                Ok(b"ab".to_vec()),
                Ok(Vec::new()),
                Err("too long"),
                Ok(b"xyz".to_vec()),
                Err("too long"),
            ]
        );
        assert_eq!(
            frames(b"12345\n123456\nlast", 5).await,
            vec![Ok(b"12345".to_vec()), Err("too long"), Ok(b"last".to_vec())]
        );
        assert!(frames(b"", 5).await.is_empty());
    }

    #[test]
    fn unlock_errors_use_go_ldlm_texts() {
        assert_eq!(
            unlock_error_message(&LockError::LockDoesNotExist, false),
            "a lock by that name does not exist"
        );
        assert_eq!(
            unlock_error_message(&LockError::LockDoesNotExist, true),
            "failed to unlock lock: a lock by that name does not exist"
        );
        assert_eq!(
            unlock_error_message(&LockError::InvalidLockKey, true),
            "failed to unlock lock: invalid lock key"
        );
    }
}
