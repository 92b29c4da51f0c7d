//! [`ServiceError`]: everything a lock-service call can fail with, kept apart by what the client
//! should do about it. Each transport maps it once: gRPC in its service, REST in its routes.

use ldlm_engine::LockError;

use crate::commit::NotCommitted;

/// Why a lock-service call failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ServiceError {
    /// The lock domain said no (go-ldlm's error codes and texts): answered in the response's
    /// `error` field, gRPC status OK, HTTP 200.
    #[error(transparent)]
    Lock(#[from] LockError),
    /// The change was made but could not be made durable, so it was undone (a grant given
    /// back): gRPC `INTERNAL`, HTTP 500. Retrying may work once the cause is fixed.
    #[error(transparent)]
    NotCommitted(#[from] NotCommitted),
    /// This server cannot decide now (cluster mode: the leader is elsewhere or unknown, or this
    /// node is cut off): gRPC `UNAVAILABLE`, HTTP 503. Retry, here or at another node.
    #[error("{0}")]
    Unavailable(String),
    /// A new REST session would exceed `--max_rest_sessions`: HTTP 503.
    #[error("too many REST sessions: the limit is {limit}")]
    TooManySessions {
        /// The limit.
        limit: usize,
    },
    /// No live session has this id (never made, ended, or expired): HTTP 401 or 409.
    #[error("session not found")]
    SessionNotFound,
    /// An administrative request that cannot be carried out as asked (a membership change
    /// naming an unknown member, or removing the last voter); the text says why.
    #[error("{0}")]
    Refused(String),
}
