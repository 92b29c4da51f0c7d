//! What to connect to and how to lock.

use std::path::PathBuf;
use std::time::Duration;

use crate::Error;

/// Where the server is and how to authenticate to it.
///
/// ```
/// use ldlm_client::{ClientConfig, TlsConfig};
///
/// let plain = ClientConfig::new("localhost:3144");
/// let secured = ClientConfig {
///     password: Some("secret".into()),
///     tls: Some(TlsConfig {
///         ca: Some("ca.pem".into()),
///         client_cert: Some(("client.pem".into(), "client.key".into())),
///         skip_verify: false,
///     }),
///     ..ClientConfig::new("ldlm.example.com:3144")
/// };
/// # let _ = (plain, secured);
/// ```
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ClientConfig {
    /// The server's gRPC address, `host:port` (an `http://` or `https://` prefix is accepted;
    /// `https://` without [`tls`](Self::tls) means TLS with the system's trusted CAs).
    pub address: String,
    /// The shared secret (`--password` on the server), sent as gRPC metadata `authorization`
    /// on every call.
    pub password: Option<String>,
    /// TLS settings; `None` for plaintext.
    pub tls: Option<TlsConfig>,
}

impl std::fmt::Debug for ClientConfig {
    /// Never shows the password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientConfig")
            .field("address", &self.address)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("tls", &self.tls)
            .finish()
    }
}

impl ClientConfig {
    /// Plaintext, no password.
    pub fn new(address: impl Into<String>) -> Self {
        ClientConfig {
            address: address.into(),
            password: None,
            tls: None,
        }
    }
}

/// TLS (and mTLS) settings of a connection.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsConfig {
    /// PEM file of the CA certificates to trust; `None` = the operating system's trust store.
    pub ca: Option<PathBuf>,
    /// `(certificate, private key)` PEM files to present to a server that requires client
    /// certificates (`--client_ca`).
    pub client_cert: Option<(PathBuf, PathBuf)>,
    /// Accept any server certificate (like Go's `InsecureSkipVerify`): only for test servers
    /// with self-signed certificates. `ca` is ignored when set.
    pub skip_verify: bool,
}

/// How to take a lock.
///
/// The wire carries whole seconds: durations are rounded **up** to the next second.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockOptions {
    /// How many holders the lock admits at once (a counting semaphore); 1 = a mutex. Every
    /// client locking a name must use the same size.
    pub size: u32,
    /// The lease: the server releases the lock this long after the last grant or renewal.
    /// `None` (or zero) = no lease, held until unlocked or until the connection ends.
    ///
    /// A [`LockGuard`](crate::LockGuard) renews the lease in the background, so a short lease
    /// (a few seconds) only bounds how long a crashed or partitioned holder keeps the lock.
    pub lock_timeout: Option<Duration>,
    /// How long [`Client::lock`](crate::Client::lock) waits for the lock before failing with
    /// `LockWaitTimeout`; `None` = wait forever. At least one second (the wire has no
    /// "do not wait": use [`Client::try_lock`](crate::Client::try_lock) for that). Ignored by
    /// `try_lock`.
    pub wait_timeout: Option<Duration>,
}

impl Default for LockOptions {
    /// Size 1, no lease, wait forever.
    fn default() -> Self {
        LockOptions {
            size: 1,
            lock_timeout: None,
            wait_timeout: None,
        }
    }
}

impl LockOptions {
    /// Size 1, no lease, wait forever.
    pub fn new() -> Self {
        Self::default()
    }

    /// With this size (number of concurrent holders).
    pub fn with_size(mut self, size: u32) -> Self {
        self.size = size;
        self
    }

    /// With this lease (renewed by the guard while it lives).
    pub fn with_lock_timeout(mut self, lease: Duration) -> Self {
        self.lock_timeout = Some(lease);
        self
    }

    /// Waiting at most this long (blocking `lock` only).
    pub fn with_wait_timeout(mut self, wait: Duration) -> Self {
        self.wait_timeout = Some(wait);
        self
    }

    /// `size` on the wire: absent for 1 (the server's default).
    pub(crate) fn wire_size(&self) -> Result<Option<i32>, Error> {
        match self.size {
            1 => Ok(None),
            size => i32::try_from(size).map(Some).map_err(|_| {
                Error::InvalidArgument(format!("lock size {size} is larger than {}", i32::MAX))
            }),
        }
    }

    /// `lock_timeout_seconds` on the wire: absent when there is no lease.
    pub(crate) fn wire_lease(&self) -> Result<Option<i32>, Error> {
        match self.lock_timeout {
            None => Ok(None),
            Some(lease) => match whole_seconds(lease, "lock_timeout")? {
                0 => Ok(None),
                seconds => Ok(Some(seconds)),
            },
        }
    }

    /// `wait_timeout_seconds` on the wire: absent = wait forever, else at least 1.
    pub(crate) fn wire_wait(&self) -> Result<Option<i32>, Error> {
        match self.wait_timeout {
            None => Ok(None),
            Some(wait) => Ok(Some(whole_seconds(wait, "wait_timeout")?.max(1))),
        }
    }
}

/// A duration in whole seconds, rounded up, within the wire's `int32`.
pub(crate) fn whole_seconds(duration: Duration, what: &str) -> Result<i32, Error> {
    let seconds = duration
        .as_secs()
        .saturating_add(u64::from(duration.subsec_nanos() > 0));
    i32::try_from(seconds).map_err(|_| {
        Error::InvalidArgument(format!(
            "{what} of {duration:?} is longer than {} seconds",
            i32::MAX
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_round_up_to_whole_seconds() {
        assert_eq!(whole_seconds(Duration::ZERO, "x").unwrap(), 0);
        assert_eq!(whole_seconds(Duration::from_millis(1), "x").unwrap(), 1);
        assert_eq!(whole_seconds(Duration::from_millis(1000), "x").unwrap(), 1);
        assert_eq!(whole_seconds(Duration::from_millis(1001), "x").unwrap(), 2);
        assert_eq!(
            whole_seconds(Duration::from_secs(i32::MAX as u64), "x").unwrap(),
            i32::MAX
        );
        assert!(whole_seconds(Duration::from_secs(i32::MAX as u64 + 1), "x").is_err());
        assert!(whole_seconds(Duration::MAX, "x").is_err());
    }

    #[test]
    fn debug_hides_the_password() {
        let config = ClientConfig {
            password: Some("hunter2".into()),
            ..ClientConfig::new("localhost:3144")
        };
        let shown = format!("{config:?}");
        assert!(
            !shown.contains("hunter2") && shown.contains("redacted"),
            "{shown}"
        );
    }

    #[test]
    fn wire_fields() {
        let default = LockOptions::default();
        assert_eq!(default.wire_size().unwrap(), None);
        assert_eq!(default.wire_lease().unwrap(), None);
        assert_eq!(default.wire_wait().unwrap(), None);

        let options = LockOptions::new()
            .with_size(3)
            .with_lock_timeout(Duration::from_millis(2500))
            .with_wait_timeout(Duration::ZERO);
        assert_eq!(options.wire_size().unwrap(), Some(3));
        assert_eq!(options.wire_lease().unwrap(), Some(3));
        assert_eq!(options.wire_wait().unwrap(), Some(1));

        // A zero lease is no lease; size 0 goes to the server, which refuses it.
        let options = LockOptions::new()
            .with_size(0)
            .with_lock_timeout(Duration::ZERO);
        assert_eq!(options.wire_lease().unwrap(), None);
        assert_eq!(options.wire_size().unwrap(), Some(0));
        assert!(LockOptions::new().with_size(u32::MAX).wire_size().is_err());
    }
}
