//! The engine's errors: a closed enum, one variant per distinct failure, each mapped to the proto
//! `ErrorCode` go-ldlm reports for it and carrying go-ldlm's exact message text where go-ldlm has
//! one, so clients that match on it see no difference.

use std::fmt;

/// The wire-level error codes of `ldlm.proto` (same names and numbers).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(i32)]
pub enum ErrorCode {
    /// Anything without a code of its own; the message says what.
    Unknown = 0,
    /// Unlock of a name that has no lock object.
    LockDoesNotExist = 1,
    /// The key is not among the holders.
    InvalidLockKey = 2,
    /// A blocking Lock's wait timed out.
    LockWaitTimeout = 3,
    /// Defined by the proto, never produced (as in go-ldlm).
    NotLocked = 4,
    /// Refresh of an unknown name or key.
    LockDoesNotExistOrInvalidKey = 5,
    /// The request's size differs from the existing lock's.
    LockSizeMismatch = 6,
    /// Size ≤ 0.
    InvalidLockSize = 7,
}

impl ErrorCode {
    /// Every code, in the order of their numbers (`ALL[n] as i32 == n`).
    pub const ALL: [ErrorCode; 8] = [
        ErrorCode::Unknown,
        ErrorCode::LockDoesNotExist,
        ErrorCode::InvalidLockKey,
        ErrorCode::LockWaitTimeout,
        ErrorCode::NotLocked,
        ErrorCode::LockDoesNotExistOrInvalidKey,
        ErrorCode::LockSizeMismatch,
        ErrorCode::InvalidLockSize,
    ];

    /// The enum value's name as written in the proto (the REST JSON uses it).
    pub const fn name(self) -> &'static str {
        match self {
            ErrorCode::Unknown => "Unknown",
            ErrorCode::LockDoesNotExist => "LockDoesNotExist",
            ErrorCode::InvalidLockKey => "InvalidLockKey",
            ErrorCode::LockWaitTimeout => "LockWaitTimeout",
            ErrorCode::NotLocked => "NotLocked",
            ErrorCode::LockDoesNotExistOrInvalidKey => "LockDoesNotExistOrInvalidKey",
            ErrorCode::LockSizeMismatch => "LockSizeMismatch",
            ErrorCode::InvalidLockSize => "InvalidLockSize",
        }
    }
}

/// Why a lock operation failed. `Display` gives the message sent to clients.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum LockError {
    /// `a lock by that name does not exist` (Unlock of an unknown name, also the empty name).
    LockDoesNotExist,
    /// `invalid lock key` (Unlock with a key that holds no slot of the lock).
    InvalidLockKey,
    /// `timeout waiting to acquire lock`.
    LockWaitTimeout,
    /// `lock does not exist or invalid key` (Refresh of an unknown name or key). go-ldlm sends
    /// code `Unknown` here (its bug B6); we send `LockDoesNotExistOrInvalidKey`, the code its
    /// message names.
    LockDoesNotExistOrInvalidKey,
    /// `lock size mismatch`.
    LockSizeMismatch,
    /// `lock size must be greater than 0`.
    InvalidLockSize,
    /// `lock name cannot be empty`.
    EmptyName,
    /// The name is longer than the configured limit (`--max_name_bytes`; go-ldlm has none).
    NameTooLong {
        /// The limit in bytes.
        limit: usize,
    },
    /// `lock timeout must be greater than 0` (negative on Lock/TryLock, ≤ 0 on Refresh).
    InvalidLockTimeout,
    /// `wait timeout must be greater than 0`.
    InvalidWaitTimeout,
    /// The lock already has the configured maximum number of waiters.
    TooManyWaiters {
        /// The limit.
        limit: usize,
    },
    /// The owner (connection or session) has ended: `session does not exist`.
    SessionEnded,
    /// The engine is shutting down: `lock manager is shutdown`.
    Shutdown,
    /// An admin unlock without a key found several holders.
    AmbiguousUnlock {
        /// The holders' keys, in acquisition order.
        keys: Vec<String>,
    },
}

impl LockError {
    /// The proto `ErrorCode` this error is reported with.
    pub const fn code(&self) -> ErrorCode {
        match self {
            LockError::LockDoesNotExist => ErrorCode::LockDoesNotExist,
            LockError::InvalidLockKey => ErrorCode::InvalidLockKey,
            LockError::LockWaitTimeout => ErrorCode::LockWaitTimeout,
            LockError::LockDoesNotExistOrInvalidKey => ErrorCode::LockDoesNotExistOrInvalidKey,
            LockError::LockSizeMismatch => ErrorCode::LockSizeMismatch,
            LockError::InvalidLockSize => ErrorCode::InvalidLockSize,
            LockError::EmptyName
            | LockError::NameTooLong { .. }
            | LockError::InvalidLockTimeout
            | LockError::InvalidWaitTimeout
            | LockError::TooManyWaiters { .. }
            | LockError::SessionEnded
            | LockError::Shutdown
            | LockError::AmbiguousUnlock { .. } => ErrorCode::Unknown,
        }
    }
}

impl fmt::Display for LockError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LockError::LockDoesNotExist => f.write_str("a lock by that name does not exist"),
            LockError::InvalidLockKey => f.write_str("invalid lock key"),
            LockError::LockWaitTimeout => f.write_str("timeout waiting to acquire lock"),
            LockError::LockDoesNotExistOrInvalidKey => {
                f.write_str("lock does not exist or invalid key")
            }
            LockError::LockSizeMismatch => f.write_str("lock size mismatch"),
            LockError::InvalidLockSize => f.write_str("lock size must be greater than 0"),
            LockError::EmptyName => f.write_str("lock name cannot be empty"),
            LockError::NameTooLong { limit } => {
                write!(f, "lock name is too long: the limit is {limit} bytes")
            }
            LockError::InvalidLockTimeout => f.write_str("lock timeout must be greater than 0"),
            LockError::InvalidWaitTimeout => f.write_str("wait timeout must be greater than 0"),
            LockError::TooManyWaiters { limit } => {
                write!(
                    f,
                    "too many clients are waiting for this lock (limit {limit})"
                )
            }
            LockError::SessionEnded => f.write_str("session does not exist"),
            LockError::Shutdown => f.write_str("lock manager is shutdown"),
            LockError::AmbiguousUnlock { keys } => write!(
                f,
                "the lock has {} holders; give the key of the one to unlock: {}",
                keys.len(),
                keys.join(", ")
            ),
        }
    }
}

impl std::error::Error for LockError {}

/// Why [`crate::Engine::restore`] refused a set of holds. Nothing is restored when it fails.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RestoreError {
    /// A record's name is empty or longer than the limit.
    InvalidName {
        /// The offending name, truncated for display.
        name: String,
    },
    /// A record's size is 0.
    InvalidSize {
        /// The lock name.
        name: String,
    },
    /// Two records of one name disagree on its size.
    SizeConflict {
        /// The lock name.
        name: String,
        /// The size seen first.
        first: u32,
        /// The conflicting size.
        second: u32,
    },
    /// More holders of one name than its size allows.
    TooManyHolders {
        /// The lock name.
        name: String,
        /// The lock's size.
        size: u32,
    },
    /// The same key appears twice for one name.
    DuplicateKey {
        /// The lock name.
        name: String,
        /// The repeated key.
        key: String,
    },
    /// A stored fencing token (or the floor) is so large that new tokens could wrap around.
    TokenOutOfRange {
        /// The offending token.
        token: u64,
    },
    /// The engine already holds locks; restore only fills an empty engine.
    NotEmpty,
}

impl fmt::Display for RestoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RestoreError::InvalidName { name } => write!(f, "invalid lock name {name:?}"),
            RestoreError::InvalidSize { name } => write!(f, "lock {name:?} has size 0"),
            RestoreError::SizeConflict {
                name,
                first,
                second,
            } => {
                write!(
                    f,
                    "lock {name:?} is stored with two sizes ({first} and {second})"
                )
            }
            RestoreError::TooManyHolders { name, size } => {
                write!(
                    f,
                    "lock {name:?} has more stored holders than its size {size}"
                )
            }
            RestoreError::DuplicateKey { name, key } => {
                write!(f, "lock {name:?} has key {key} stored twice")
            }
            RestoreError::TokenOutOfRange { token } => write!(
                f,
                "fencing token {token} is out of range (tokens would wrap around and go backwards)"
            ),
            RestoreError::NotEmpty => f.write_str("restore needs an empty engine"),
        }
    }
}

impl std::error::Error for RestoreError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_and_codes_match_go_ldlm() {
        let table = [
            (
                LockError::LockWaitTimeout,
                ErrorCode::LockWaitTimeout,
                "timeout waiting to acquire lock",
            ),
            (
                LockError::InvalidLockKey,
                ErrorCode::InvalidLockKey,
                "invalid lock key",
            ),
            (
                LockError::LockDoesNotExist,
                ErrorCode::LockDoesNotExist,
                "a lock by that name does not exist",
            ),
            (
                LockError::LockSizeMismatch,
                ErrorCode::LockSizeMismatch,
                "lock size mismatch",
            ),
            (
                LockError::InvalidLockSize,
                ErrorCode::InvalidLockSize,
                "lock size must be greater than 0",
            ),
            (
                LockError::LockDoesNotExistOrInvalidKey,
                ErrorCode::LockDoesNotExistOrInvalidKey,
                "lock does not exist or invalid key",
            ),
            (
                LockError::EmptyName,
                ErrorCode::Unknown,
                "lock name cannot be empty",
            ),
            (
                LockError::InvalidLockTimeout,
                ErrorCode::Unknown,
                "lock timeout must be greater than 0",
            ),
            (
                LockError::InvalidWaitTimeout,
                ErrorCode::Unknown,
                "wait timeout must be greater than 0",
            ),
            (
                LockError::SessionEnded,
                ErrorCode::Unknown,
                "session does not exist",
            ),
            (
                LockError::Shutdown,
                ErrorCode::Unknown,
                "lock manager is shutdown",
            ),
        ];
        for (error, code, message) in table {
            assert_eq!(error.code(), code, "{error:?}");
            assert_eq!(error.to_string(), message);
        }
        assert_eq!(ErrorCode::LockSizeMismatch as i32, 6);
        assert_eq!(ErrorCode::InvalidLockSize.name(), "InvalidLockSize");
        assert!(
            LockError::NameTooLong { limit: 4096 }
                .to_string()
                .contains("4096")
        );
    }
}
