//! What a worker needs from a transport: the four lock calls, on one connection or session.

use std::future::Future;

use ldlm_proto::ldlm::ErrorCode;

/// The answer to Lock, TryLock and RefreshLock.
#[derive(Debug, Default)]
pub(crate) struct Grant {
    /// The caller holds the lock.
    pub(crate) locked: bool,
    /// The key to unlock and refresh with.
    pub(crate) key: String,
    /// The fencing token (0 when the server sends none, as go-ldlm).
    pub(crate) token: u64,
    /// The lock-domain error, if the response carried one.
    pub(crate) error: Option<LockError>,
}

/// A lock-domain error carried in a response (status OK / HTTP 200).
#[derive(Debug, Default)]
pub(crate) struct LockError {
    /// The `ErrorCode` number.
    pub(crate) code: i32,
    /// The server's message.
    pub(crate) message: String,
}

/// The text of go-ldlm's (and our) answer to a call that reached a server while it shuts down.
const SHUTTING_DOWN: &str = "lock manager is shutdown";

impl Grant {
    /// The server answered that it is shutting down.
    pub(crate) fn shutting_down(&self) -> bool {
        self.error
            .as_ref()
            .is_some_and(|e| e.message == SHUTTING_DOWN)
    }
}

/// The answer to Unlock.
#[derive(Debug, Default)]
pub(crate) struct Unlocked {
    /// The lock was released.
    pub(crate) unlocked: bool,
    /// The lock-domain error, if the response carried one.
    pub(crate) error: Option<LockError>,
}

impl Unlocked {
    /// The server answered that it is shutting down.
    pub(crate) fn shutting_down(&self) -> bool {
        self.error
            .as_ref()
            .is_some_and(|e| e.message == SHUTTING_DOWN)
    }
}

/// A call that produced no lock response at all.
#[derive(Debug)]
pub(crate) enum CallError {
    /// A non-OK gRPC status.
    Grpc(tonic::Code, String),
    /// A REST answer other than 200.
    Http(u16, String),
    /// The connection failed (refused, reset, TLS...).
    Transport(String),
    /// The response could not be decoded.
    Decode(String),
}

impl CallError {
    /// The key under which the report counts this error, and an example message.
    pub(crate) fn describe(&self) -> (String, &str) {
        match self {
            CallError::Grpc(code, m) => (format!("grpc {code:?}"), m),
            CallError::Http(status, m) => (format!("http {status}"), m),
            CallError::Transport(m) => ("transport".to_owned(), m),
            CallError::Decode(m) => ("bad response".to_owned(), m),
        }
    }
}

/// Whether a call's outcome says its node failed, so a connection to a cluster should move to
/// another node: the connection broke, the node cannot reach a leader (gRPC `UNAVAILABLE`,
/// HTTP 503), a call was cancelled by its connection closing, or the node is shutting down.
pub(crate) fn node_failed<T>(
    result: &Result<T, CallError>,
    shutting_down: impl Fn(&T) -> bool,
) -> bool {
    match result {
        Ok(answer) => shutting_down(answer),
        Err(CallError::Transport(_)) => true,
        Err(CallError::Grpc(code, _)) => {
            matches!(code, tonic::Code::Unavailable | tonic::Code::Cancelled)
        }
        Err(CallError::Http(status, _)) => *status == 503,
        Err(CallError::Decode(_)) => false,
    }
}

/// The report's name of a lock-domain error code (the proto enum's name).
pub(crate) fn error_code_name(code: i32) -> String {
    match ErrorCode::try_from(code) {
        Ok(code) => code.as_str_name().to_owned(),
        Err(_) => format!("ErrorCode {code}"),
    }
}

/// One client connection (gRPC: a clone of a channel's client; REST: a session).
///
/// Timeouts and sizes are as on the wire: `0` timeouts and size `1` are left out of the request
/// (absent = no lease, wait forever, size 1), so a go-ldlm server sees what its own clients send.
pub(crate) trait LockClient: Send + 'static {
    /// TryLock.
    fn try_lock(
        &mut self,
        name: &str,
        lock_timeout: u32,
        size: u32,
    ) -> impl Future<Output = Result<Grant, CallError>> + Send;

    /// Blocking Lock.
    fn lock(
        &mut self,
        name: &str,
        wait_timeout: u32,
        lock_timeout: u32,
        size: u32,
    ) -> impl Future<Output = Result<Grant, CallError>> + Send;

    /// Unlock.
    fn unlock(
        &mut self,
        name: &str,
        key: String,
    ) -> impl Future<Output = Result<Unlocked, CallError>> + Send;

    /// RefreshLock / Renew.
    fn refresh(
        &mut self,
        name: &str,
        key: &str,
        lock_timeout: u32,
    ) -> impl Future<Output = Result<Grant, CallError>> + Send;

    /// Ends the session (REST: `DELETE /session`; gRPC: dropping the connection does it).
    fn close(self) -> impl Future<Output = ()> + Send;

    /// Which server session the client uses now. It changes only when a connection moves to
    /// another node (several addresses): the new session does not hold what the old one did.
    fn session(&self) -> u64 {
        0
    }
}
