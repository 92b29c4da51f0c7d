//! Retries with exponential backoff, for the calls where repeating is safe.
//!
//! Safe: connecting; Unlock, Renew/RefreshLock and TryLock failing with `UNAVAILABLE` or in
//! the transport (the request did not get through, or its connection broke, which ends the
//! server session and releases what that session held). Never retried: a blocking Lock (see
//! [`Error::OutcomeUnknown`](crate::Error::OutcomeUnknown)).

use std::collections::hash_map::RandomState;
use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

use tonic::{Code, Status};
use tracing::debug;

/// Attempts of a retried call to one server, the first included.
pub(crate) const ATTEMPTS: u32 = 4;
const FIRST_DELAY: Duration = Duration::from_millis(100);
const MAX_DELAY: Duration = Duration::from_secs(2);

/// Exponential backoff (100 ms, doubling, at most 2 s) with jitter: each delay is drawn from
/// [d/2, d] so clients that failed together do not retry together.
pub(crate) struct Backoff {
    next: Duration,
    max: Duration,
}

impl Backoff {
    pub(crate) fn new() -> Self {
        Backoff {
            next: FIRST_DELAY,
            max: MAX_DELAY,
        }
    }

    /// Backoff whose delays never exceed `max` (nor start above it).
    pub(crate) fn capped(max: Duration) -> Self {
        Backoff {
            next: FIRST_DELAY.min(max),
            max,
        }
    }

    pub(crate) fn next_delay(&mut self) -> Duration {
        let full = self.next;
        self.next = (self.next * 2).min(self.max);
        let half = full / 2;
        // A random fraction of the other half (RandomState is randomly keyed per instance).
        let random = RandomState::new().build_hasher().finish();
        half + half.mul_f64((random >> 11) as f64 / (1u64 << 53) as f64)
    }
}

/// Whether a failed call says its node (or the connection to it) failed, rather than
/// answering: the server answered `UNAVAILABLE`, or the failure came from the transport (a
/// status the client made from a connection error carries that error as its source; one the
/// server sent has none). A call canceled because its connection closed under it is one.
pub(crate) fn node_failed(status: &Status) -> bool {
    status.code() == Code::Unavailable || std::error::Error::source(status).is_some()
}

/// Runs `call` until it succeeds, fails other than by [`node_failed`], or has been
/// tried `attempts` times. Returns the last result and whether it was retried.
pub(crate) async fn on_unavailable<T, F, Fut>(
    what: &str,
    attempts: u32,
    mut call: F,
) -> (Result<T, Status>, bool)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Status>>,
{
    let mut backoff = Backoff::new();
    let mut attempt = 1;
    loop {
        match call().await {
            Err(status) if node_failed(&status) && attempt < attempts => {
                let delay = backoff.next_delay();
                debug!(what, attempt, error = %status.message(), ?delay, "Unavailable; retrying");
                tokio::time::sleep(delay).await;
                attempt += 1;
            }
            result => return (result, attempt > 1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_with_jitter_and_caps() {
        let mut backoff = Backoff::new();
        let mut nominal = FIRST_DELAY;
        for _ in 0..8 {
            let delay = backoff.next_delay();
            assert!(
                delay >= nominal / 2 && delay <= nominal,
                "{delay:?} vs {nominal:?}"
            );
            nominal = (nominal * 2).min(MAX_DELAY);
        }
        let mut capped = Backoff::capped(Duration::from_millis(30));
        for _ in 0..4 {
            assert!(capped.next_delay() <= Duration::from_millis(30));
        }
    }

    #[tokio::test]
    async fn retries_only_node_failures() {
        let mut calls = 0;
        let (result, retried) = on_unavailable("t", ATTEMPTS, || {
            calls += 1;
            async { Err::<(), _>(Status::unavailable("down")) }
        })
        .await;
        assert_eq!(calls, ATTEMPTS);
        assert!(retried);
        assert_eq!(result.unwrap_err().code(), Code::Unavailable);

        let mut calls = 0;
        let (result, retried) = on_unavailable("t", ATTEMPTS, || {
            calls += 1;
            async { Err::<(), _>(Status::internal("bug")) }
        })
        .await;
        assert_eq!(calls, 1);
        assert!(!retried);
        assert!(result.is_err());

        // A call canceled because its connection closed is retried too.
        let mut calls = 0;
        let (result, _) = on_unavailable("t", ATTEMPTS, || {
            calls += 1;
            let first = calls == 1;
            async move {
                if first {
                    let closed = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
                    let status = Status::from_error(Box::new(closed));
                    assert_eq!(status.code(), Code::Unknown);
                    return Err(status);
                }
                Ok(())
            }
        })
        .await;
        assert_eq!(calls, 2);
        assert!(result.is_ok());
    }
}
