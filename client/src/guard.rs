//! [`LockGuard`]: a held lock, its background lease renewal, and loss reporting.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tonic::Code;
use tracing::{debug, warn};

use crate::client::{Client, check_renewed};
use crate::error::{Error, LostReason, chain, describe};
use crate::retry::Backoff;

/// The share of the lease after which the guard renews it: a third, so two renewals can fail
/// (and be retried) before the lease runs out. go-ldlm's client waits max(lease − 30 s, 10 s),
/// which lets any lease under about 10 s lapse before the first renewal (its B17).
pub(crate) const RENEW_FRACTION: u32 = 3;

type LostSender = Arc<watch::Sender<Option<LostReason>>>;

/// A held lock.
///
/// * [`name`](Self::name), [`key`](Self::key) and [`fencing_token`](Self::fencing_token) of
///   the grant. Pass the fencing token to the storage the lock protects, so it can refuse
///   writes from a holder whose lease ran out (every grant of a name gets a larger token).
/// * With a lease, a background task renews it every third of the lease (a 2 s lease every
///   ~667 ms), retrying with backoff when the server is briefly unreachable. When renewal
///   fails for good (the server refused it, or the lease ran out by this client's clock
///   before a renewal got through), the guard reports the loss: [`lost`](Self::lost) resolves
///   and [`is_lost`](Self::is_lost) turns true. Stop using the protected resource then.
///   Without a lease nothing is renewed and loss is not detected (the lock is held until
///   unlocked or until the connection ends).
/// * [`unlock`](Self::unlock) releases it and reports the outcome; dropping the guard stops the
///   renewal and releases it in the background (a task on the current tokio runtime; without
///   a runtime, the lock is released when the connection closes or the lease expires).
///
/// The guard keeps the client's connection (its server session) open while it lives.
#[must_use = "dropping the guard releases the lock"]
pub struct LockGuard {
    client: Client,
    name: String,
    key: String,
    fencing_token: u64,
    lease: Option<Duration>,
    lost_tx: LostSender,
    lost_rx: watch::Receiver<Option<LostReason>>,
    renewer: Option<JoinHandle<()>>,
    /// Unlocked, forgotten, or being unlocked by [`LockGuard::unlock`]: do not unlock on drop.
    released: bool,
}

impl fmt::Debug for LockGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LockGuard")
            .field("name", &self.name)
            .field("key", &self.key)
            .field("fencing_token", &self.fencing_token)
            .field("lease", &self.lease)
            .field("lost", &*self.lost_rx.borrow())
            .finish_non_exhaustive()
    }
}

impl LockGuard {
    pub(crate) fn new(
        client: Client,
        name: String,
        key: String,
        fencing_token: u64,
        lease: Option<Duration>,
        lease_start: Instant,
    ) -> Self {
        let (lost_tx, lost_rx) = watch::channel(None);
        let lost_tx = Arc::new(lost_tx);
        let renewer = lease.map(|lease| {
            tokio::spawn(renew(
                client.clone(),
                name.clone(),
                key.clone(),
                lease,
                lease_start,
                Arc::clone(&lost_tx),
            ))
        });
        LockGuard {
            client,
            name,
            key,
            fencing_token,
            lease,
            lost_tx,
            lost_rx,
            renewer,
            released: false,
        }
    }

    /// The lock's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The key proving this grant (what Unlock and Renew need).
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The grant's fencing token: larger than that of every earlier grant of this name.
    /// 0 from a go-ldlm server, which has no fencing tokens.
    pub fn fencing_token(&self) -> u64 {
        self.fencing_token
    }

    /// The lease (whole seconds, as sent), if the lock has one.
    pub fn lease(&self) -> Option<Duration> {
        self.lease
    }

    /// Whether the lock has been reported lost (see [`lost`](Self::lost)).
    pub fn is_lost(&self) -> bool {
        self.lost_rx.borrow().is_some()
    }

    /// Why the lock was lost, if it was.
    pub fn lost_reason(&self) -> Option<LostReason> {
        self.lost_rx.borrow().clone()
    }

    /// Resolves when the lock is reported lost, with the reason; pending while it is held.
    ///
    /// The future does not borrow the guard, so it fits a `tokio::select!` next to the work
    /// the lock protects. If the guard is unlocked or dropped first, it resolves with
    /// [`LostReason::Released`].
    pub fn lost(&self) -> impl Future<Output = LostReason> + Send + 'static {
        let mut lost = self.lost_rx.clone();
        async move {
            match lost.wait_for(Option::is_some).await {
                Ok(reason) => reason.clone().unwrap_or(LostReason::Released),
                Err(_) => LostReason::Released,
            }
        }
    }

    /// A watch of the loss state: `None` while held, then the reason.
    pub fn lost_watch(&self) -> watch::Receiver<Option<LostReason>> {
        self.lost_rx.clone()
    }

    /// Stops the renewal and releases the lock, returning the server's answer (for example
    /// `InvalidLockKey` if the lease had already expired).
    pub async fn unlock(mut self) -> Result<(), Error> {
        self.stop_renewing();
        let result = self.client.unlock(&self.name, &self.key).await;
        self.released = true;
        self.report(LostReason::Released);
        result
    }

    /// Gives the lock up without releasing it: the renewal stops and the lock stays held until
    /// its lease runs out, someone unlocks it with the key, or the connection ends. Returns
    /// `(name, key)` (for [`Client::unlock`]). Rate limiting uses this: each admitted request
    /// keeps one slot of a size-N lock for the lease, and nobody unlocks.
    pub fn forget(mut self) -> (String, String) {
        self.stop_renewing();
        self.released = true;
        self.report(LostReason::Released);
        (
            std::mem::take(&mut self.name),
            std::mem::take(&mut self.key),
        )
    }

    fn stop_renewing(&mut self) {
        if let Some(renewer) = self.renewer.take() {
            renewer.abort();
        }
    }

    /// Records `reason` unless a loss was already recorded.
    fn report(&self, reason: LostReason) {
        report(&self.lost_tx, reason);
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        self.stop_renewing();
        if self.released {
            return;
        }
        self.report(LostReason::Released);
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            debug!(name = %self.name, "Guard dropped outside a tokio runtime: not unlocking");
            return;
        };
        let client = self.client.clone();
        let name = std::mem::take(&mut self.name);
        let key = std::mem::take(&mut self.key);
        runtime.spawn(async move {
            if let Err(error) = client.unlock(&name, &key).await {
                debug!(name, error = %error, "Unlock of a dropped guard failed");
            }
        });
    }
}

fn report(lost: &watch::Sender<Option<LostReason>>, reason: LostReason) {
    lost.send_if_modified(|current| {
        if current.is_some() {
            return false;
        }
        *current = Some(reason);
        true
    });
}

/// Whether a failed renewal is worth retrying before the lease runs out.
fn retryable(code: Code) -> bool {
    !matches!(
        code,
        Code::Unauthenticated
            | Code::PermissionDenied
            | Code::Unimplemented
            | Code::InvalidArgument
    )
}

/// The renewal task: renews every `lease / 3`; reports the loss and ends when the server
/// refuses, when a failure cannot be retried, or when the lease runs out (by this clock)
/// before a renewal got through.
async fn renew(
    client: Client,
    name: String,
    key: String,
    lease: Duration,
    lease_start: Instant,
    lost: LostSender,
) {
    let seconds = i32::try_from(lease.as_secs()).unwrap_or(i32::MAX);
    let interval = lease / RENEW_FRACTION;
    // Conservative: the server started counting no earlier than `lease_start`.
    let mut expires = lease_start + lease;
    let mut next = lease_start + interval;
    loop {
        tokio::time::sleep_until(next).await;
        let mut backoff = Backoff::capped(interval / 2);
        let mut last_error = String::from("no renewal attempted");
        loop {
            let sent = Instant::now();
            if sent >= expires {
                warn!(name, error = %last_error, "Lock lost: the lease ran out before a renewal got through");
                report(&lost, LostReason::Unreachable { error: last_error });
                return;
            }
            let attempt =
                tokio::time::timeout(expires - sent, client.renew_once(&name, &key, seconds)).await;
            let error = match attempt {
                Ok(Ok(response)) => match check_renewed(response) {
                    Ok(()) => {
                        expires = sent + lease;
                        next = sent + interval;
                        break;
                    }
                    Err(Error::Lock(error)) => {
                        warn!(name, error = %error, "Lock lost: the server refused the renewal");
                        report(&lost, LostReason::Rejected(error));
                        return;
                    }
                    Err(error) => chain(&error),
                },
                Ok(Err(status)) if !retryable(status.code()) => {
                    let error = Error::from_status(status).to_string();
                    warn!(name, error, "Lock lost: renewal failed");
                    report(&lost, LostReason::RenewFailed { error });
                    return;
                }
                Ok(Err(status)) => describe(&status),
                Err(_) => "the renewal did not complete before the lease ran out".to_owned(),
            };
            debug!(name, error, "Renewal failed; retrying");
            last_error = error;
            let delay = backoff.next_delay();
            let wake = (Instant::now() + delay).min(expires);
            tokio::time::sleep_until(wake).await;
        }
    }
}
