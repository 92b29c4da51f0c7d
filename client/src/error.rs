//! Typed errors: lock-domain errors mapped from the response's `error` field, and everything
//! that can go wrong around them (connecting, authentication, transport).

use std::fmt;

use ldlm_proto::ldlm::ErrorCode;
use tonic::{Code, Status};

/// A lock-domain error code: the wire's `ErrorCode`, one variant per value.
///
/// The server reports these with gRPC status OK and the response's `error` field set (go-ldlm's
/// model); the client turns them into [`Error::Lock`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LockErrorCode {
    /// `Unknown` (0): any other error; the message says what (for example
    /// `lock name cannot be empty`, `lock manager is shutdown`).
    Unknown,
    /// `LockDoesNotExist` (1): Unlock of a name that has no lock.
    LockDoesNotExist,
    /// `InvalidLockKey` (2): the key is not among the lock's holders.
    InvalidLockKey,
    /// `LockWaitTimeout` (3): a blocking Lock waited its `wait_timeout` without acquiring.
    LockWaitTimeout,
    /// `NotLocked` (4): the lock is not (or no longer) held. The server never sends it; this
    /// client uses it when an answer says "not locked/unlocked/renewed" without an error.
    NotLocked,
    /// `LockDoesNotExistOrInvalidKey` (5): Renew/RefreshLock of an unknown name or with a key
    /// that no longer holds it (for example after its lease expired).
    LockDoesNotExistOrInvalidKey,
    /// `LockSizeMismatch` (6): the requested size differs from the existing lock's size.
    LockSizeMismatch,
    /// `InvalidLockSize` (7): the requested size is not greater than 0.
    InvalidLockSize,
    /// A code this client does not know (a newer server), with its wire value.
    Unrecognized(i32),
}

impl LockErrorCode {
    /// The code for a wire value.
    pub fn from_wire(value: i32) -> Self {
        match ErrorCode::try_from(value) {
            Ok(ErrorCode::Unknown) => Self::Unknown,
            Ok(ErrorCode::LockDoesNotExist) => Self::LockDoesNotExist,
            Ok(ErrorCode::InvalidLockKey) => Self::InvalidLockKey,
            Ok(ErrorCode::LockWaitTimeout) => Self::LockWaitTimeout,
            Ok(ErrorCode::NotLocked) => Self::NotLocked,
            Ok(ErrorCode::LockDoesNotExistOrInvalidKey) => Self::LockDoesNotExistOrInvalidKey,
            Ok(ErrorCode::LockSizeMismatch) => Self::LockSizeMismatch,
            Ok(ErrorCode::InvalidLockSize) => Self::InvalidLockSize,
            Err(_) => Self::Unrecognized(value),
        }
    }

    /// The wire value.
    pub fn to_wire(self) -> i32 {
        match self {
            Self::Unknown => ErrorCode::Unknown as i32,
            Self::LockDoesNotExist => ErrorCode::LockDoesNotExist as i32,
            Self::InvalidLockKey => ErrorCode::InvalidLockKey as i32,
            Self::LockWaitTimeout => ErrorCode::LockWaitTimeout as i32,
            Self::NotLocked => ErrorCode::NotLocked as i32,
            Self::LockDoesNotExistOrInvalidKey => ErrorCode::LockDoesNotExistOrInvalidKey as i32,
            Self::LockSizeMismatch => ErrorCode::LockSizeMismatch as i32,
            Self::InvalidLockSize => ErrorCode::InvalidLockSize as i32,
            Self::Unrecognized(value) => value,
        }
    }
}

impl fmt::Display for LockErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unrecognized(value) => write!(f, "error code {value}"),
            known => {
                let name = ErrorCode::try_from(known.to_wire())
                    .map(|c| c.as_str_name())
                    .unwrap_or("Unknown");
                f.write_str(name)
            }
        }
    }
}

/// A lock-domain error as the server reported it: a code and go-ldlm's message text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} ({code})")]
pub struct LockError {
    /// The code (stable; match on this).
    pub code: LockErrorCode,
    /// The server's text (for people; for example `lock size mismatch`).
    pub message: String,
}

impl From<ldlm_proto::ldlm::Error> for LockError {
    fn from(error: ldlm_proto::ldlm::Error) -> Self {
        LockError {
            code: LockErrorCode::from_wire(error.code),
            message: error.message,
        }
    }
}

impl LockError {
    /// "Not locked": an answer said the lock was not locked, unlocked or renewed, without an
    /// error (go-ldlm answers a renewal that races with the lease's expiry that way).
    pub(crate) fn not_locked(what: &str) -> Self {
        LockError {
            code: LockErrorCode::NotLocked,
            message: format!("lock is not locked ({what} answered false without an error)"),
        }
    }
}

/// Everything a [`Client`](crate::Client) call can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The server refused the request in the lock domain (wrong key, size mismatch, wait
    /// timeout, ...): see [`LockError::code`].
    #[error("{0}")]
    Lock(#[from] LockError),
    /// The server refused the password (missing or wrong): gRPC `UNAUTHENTICATED`.
    #[error("the server refused the credentials: {0} (check the password)")]
    Unauthenticated(String),
    /// A Lock or TryLock call failed in a way that does not say whether the server granted the
    /// lock (the connection broke, a deadline passed, ...). The client did **not** retry it: a
    /// second attempt could take a second hold. If the first attempt was granted, the grant ends
    /// when this client's connection (its server session) closes or its lease expires.
    #[error(
        "the outcome of locking {name:?} is unknown ({}): the server may or may not have \
         granted it; the request was not retried",
        describe(status)
    )]
    OutcomeUnknown {
        /// The lock name.
        name: String,
        /// How the call failed.
        status: Box<Status>,
    },
    /// A call failed at the gRPC level (server unavailable, message too large, ...) where the
    /// outcome is not in doubt (the request was refused or is safe to repeat).
    #[error("gRPC call failed ({})", describe(.0))]
    Transport(Box<Status>),
    /// No connection could be made to the server.
    #[error("cannot connect to {address}: {message}")]
    Connect {
        /// The address that was tried (the configured list, for a cluster).
        address: String,
        /// What went wrong, with its causes.
        message: String,
        /// The transport error.
        #[source]
        source: tonic::transport::Error,
    },
    /// The TLS configuration could not be built (unreadable or invalid certificate files).
    #[error("TLS configuration: {0}")]
    Tls(#[from] ldlm_security::tls::TlsError),
    /// An argument cannot be sent (a size or duration out of the wire's range, a password that
    /// is not valid gRPC metadata, a malformed address).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
}

impl Error {
    /// The lock-domain code, if this is a lock-domain error.
    pub fn lock_code(&self) -> Option<LockErrorCode> {
        match self {
            Error::Lock(error) => Some(error.code),
            _ => None,
        }
    }

    /// Whether a blocking Lock gave up after its `wait_timeout`.
    pub fn is_wait_timeout(&self) -> bool {
        self.lock_code() == Some(LockErrorCode::LockWaitTimeout)
    }

    /// A failed call that did not acquire anything (or cannot have: Unlock, Renew).
    pub(crate) fn from_status(status: Status) -> Self {
        match status.code() {
            Code::Unauthenticated => Error::Unauthenticated(status.message().to_owned()),
            _ => Error::Transport(Box::new(status)),
        }
    }

    /// A failed Lock/TryLock: unless the failure proves the request was refused or never sent,
    /// the outcome is unknown.
    pub(crate) fn from_acquire_status(name: &str, status: Status) -> Self {
        match status.code() {
            Code::Unauthenticated
            | Code::PermissionDenied
            | Code::Unimplemented
            | Code::InvalidArgument
            | Code::ResourceExhausted => Error::from_status(status),
            _ if never_sent(&status) => Error::from_status(status),
            _ => Error::OutcomeUnknown {
                name: name.to_owned(),
                status: Box::new(status),
            },
        }
    }
}

/// Whether a failed call provably never reached the server: its connection could not be made
/// (connection refused, or no connection at all).
pub(crate) fn never_sent(status: &Status) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(status);
    while let Some(error) = source {
        if let Some(io) = error.downcast_ref::<std::io::Error>()
            && matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionRefused
                    | std::io::ErrorKind::AddrNotAvailable
                    | std::io::ErrorKind::NotFound
            )
        {
            return true;
        }
        // tonic wraps every failure to (re)connect in a ConnectError.
        if error.downcast_ref::<tonic::ConnectError>().is_some() {
            return true;
        }
        source = error.source();
    }
    false
}

/// A status's code, message and causes, on one line.
pub(crate) fn describe(status: &Status) -> String {
    let mut text = format!("{:?}: {}", status.code(), status.message());
    let mut last = status.message().to_owned();
    let mut source = std::error::Error::source(status);
    while let Some(error) = source {
        append_cause(&mut text, &mut last, error.to_string());
        source = error.source();
    }
    text
}

/// An error and its causes, on one line.
pub(crate) fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut last = text.clone();
    let mut source = error.source();
    while let Some(error) = source {
        append_cause(&mut text, &mut last, error.to_string());
        source = error.source();
    }
    text
}

/// Appends `cause` unless it repeats what was just said.
fn append_cause(text: &mut String, last: &mut String, cause: String) {
    if !cause.is_empty() && !last.ends_with(&cause) {
        text.push_str(": ");
        text.push_str(&cause);
    }
    *last = cause;
}

/// Why a [`LockGuard`](crate::LockGuard) no longer holds its lock (or may not: the client can
/// only know what the server last said).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum LostReason {
    /// The server refused a renewal: the key no longer holds the lock (its lease had already
    /// expired, someone unlocked it with the key, or the connection that held it ended).
    Rejected(LockError),
    /// Renewals kept failing (server unreachable, stopped, not answering) until the lease ran
    /// out by this client's clock: the lock must be assumed expired.
    Unreachable {
        /// The last failure.
        error: String,
    },
    /// A renewal failed in a way retrying cannot fix (for example the password was refused);
    /// the lock stays held on the server only until its lease runs out.
    RenewFailed {
        /// The failure.
        error: String,
    },
    /// The guard was unlocked or dropped. Only a [`LockGuard::lost`](crate::LockGuard::lost)
    /// future that outlives its guard sees this.
    Released,
}

impl fmt::Display for LostReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LostReason::Rejected(error) => write!(f, "the server refused the renewal: {error}"),
            LostReason::Unreachable { error } => write!(
                f,
                "the lease ran out before a renewal got through (last error: {error})"
            ),
            LostReason::RenewFailed { error } => write!(f, "renewal failed: {error}"),
            LostReason::Released => f.write_str("the lock was released by its holder"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip() {
        for value in 0..=7 {
            let code = LockErrorCode::from_wire(value);
            assert!(!matches!(code, LockErrorCode::Unrecognized(_)), "{value}");
            assert_eq!(code.to_wire(), value);
        }
        assert_eq!(
            LockErrorCode::from_wire(42),
            LockErrorCode::Unrecognized(42)
        );
        assert_eq!(LockErrorCode::Unrecognized(42).to_wire(), 42);
        assert_eq!(
            LockErrorCode::LockSizeMismatch.to_string(),
            "LockSizeMismatch"
        );
        assert_eq!(LockErrorCode::from_wire(6), LockErrorCode::LockSizeMismatch);
    }

    #[test]
    fn acquire_failures_are_ambiguous_unless_refused() {
        assert!(matches!(
            Error::from_acquire_status("n", Status::unavailable("reset")),
            Error::OutcomeUnknown { .. }
        ));
        assert!(matches!(
            Error::from_acquire_status("n", Status::cancelled("gone")),
            Error::OutcomeUnknown { .. }
        ));
        assert!(matches!(
            Error::from_acquire_status("n", Status::unauthenticated("invalid credentials")),
            Error::Unauthenticated(_)
        ));
        assert!(matches!(
            Error::from_acquire_status("n", Status::unimplemented("")),
            Error::Transport(_)
        ));
        let refused = Status::from_error(Box::new(tonic::ConnectError(Box::new(
            std::io::Error::from(std::io::ErrorKind::ConnectionRefused),
        ))));
        assert_eq!(refused.code(), Code::Unavailable);
        assert!(never_sent(&refused), "{refused:?}");
        assert!(matches!(
            Error::from_acquire_status("n", refused),
            Error::Transport(_)
        ));
    }
}
