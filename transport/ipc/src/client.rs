//! The blocking IPC client `ldlm-lock` uses: one connection, one request, one response.

use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::protocol::{ProtocolError, Request, Response, decode_response, encode_request};

/// Why a request got no response.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing answers on the socket (no server, wrong path, no permission).
    #[error("cannot connect to {}: {source}", path.display())]
    Connect {
        /// The socket path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The connection failed, or timed out, after it was made.
    #[error("connection to the server failed: {0}")]
    Io(#[from] io::Error),
    /// The server closed the connection without a response.
    #[error("the server closed the connection without answering")]
    Closed,
    /// The server's response is not one this client understands.
    #[error("invalid response from the server: {0}")]
    Protocol(#[from] ProtocolError),
}

/// Sends `request` to the server at `path` and waits for its response. `timeout` bounds each
/// read and each write on the connection (not the connect, which on a Unix socket either
/// succeeds or fails at once).
///
/// A server-side failure (e.g. an unknown lock) is an `Ok(Response::Error { .. })`; `Err` means
/// no valid response arrived.
pub fn request(path: &Path, request: &Request, timeout: Duration) -> Result<Response, ClientError> {
    let stream = UnixStream::connect(path).map_err(|source| ClientError::Connect {
        path: path.to_owned(),
        source,
    })?;
    // A zero timeout means "block forever" to std; keep it a real bound.
    let timeout = timeout.max(Duration::from_millis(1));
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    (&stream).write_all(&encode_request(request))?;
    let mut reader = BufReader::new(&stream);
    let mut line = Vec::new();
    reader.read_until(b'\n', &mut line)?;
    if line.last() != Some(&b'\n') {
        return Err(ClientError::Closed);
    }
    Ok(decode_response(&line)?)
}
