//! [`Client`]: one connection to the server, and the lock calls.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use ldlm_proto::ldlm::ldlm_client::LdlmClient;
use ldlm_proto::ldlm::{
    LockRequest, LockResponse, RefreshLockRequest, RenewRequest, TryLockRequest, UnlockRequest,
};
use tokio::time::Instant;
use tonic::metadata::AsciiMetadataValue;
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};
use tracing::{debug, info};

use crate::config::{ClientConfig, LockOptions, whole_seconds};
use crate::connect::Target;
use crate::error::{Error, LockError, LockErrorCode, chain};
use crate::guard::LockGuard;
use crate::{connect, retry};

/// Adds the password to every call as metadata `authorization` (go-ldlm's scheme).
#[derive(Clone)]
pub(crate) struct Auth(Option<AsciiMetadataValue>);

impl Interceptor for Auth {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(password) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", password.clone());
        }
        Ok(request)
    }
}

type Rpc = LdlmClient<InterceptedService<Channel, Auth>>;

/// Which RPC extends a lease: go-ldlm renamed `RefreshLock` to `Renew`, and each of its
/// versions serves only one of them. Learned on first use and remembered per client.
const REFRESH_RPC_UNKNOWN: u8 = 0;
const REFRESH_RPC_RENEW: u8 = 1;
const REFRESH_RPC_REFRESH_LOCK: u8 = 2;

struct Shared {
    /// As configured: one address, or a cluster's nodes separated by commas.
    address: String,
    /// The configured nodes, prepared to connect to.
    targets: Vec<Target>,
    auth: Auth,
    refresh_rpc: AtomicU8,
    current: std::sync::Mutex<Connection>,
    /// Held while moving to another node, so that calls failing together move once.
    moving: tokio::sync::Mutex<()>,
}

/// The connection in use.
struct Connection {
    rpc: Rpc,
    /// Its node's index in [`Shared::targets`].
    node: usize,
    /// Counts the moves: a failure moves the client only if it happened on the connection
    /// still in use.
    generation: u64,
}

/// A connection to an LDLM (or go-ldlm) server, or to one node of an LDLM cluster.
///
/// One `Client` is one HTTP/2 connection, which the server treats as one **session**: when the
/// connection ends (the last clone of the client and the last [`LockGuard`] are dropped, or the
/// network breaks), the server releases every lock taken through it (unless it runs with
/// `--no_clear_on_disconnect`). Clones share the connection and are cheap; calls may run
/// concurrently.
///
/// If the connection breaks, the next call reconnects, but as a new session: locks taken
/// before are gone, and their guards report it ([`LockGuard::lost`]).
///
/// **Clusters.** Given several addresses (`"a:3144,b:3144,c:3144"`), the client connects to
/// one node (starting from a random one, so clients spread) and moves to the next when its
/// node stops answering: the connection fails, or the node answers `UNAVAILABLE` because it
/// is cut off from its cluster. Any node serves every lock, so only the session moves. Locks
/// taken through a node that died stay held for the cluster's session grace
/// (`--cluster_session_grace`) and are then released; meanwhile their guards keep renewing
/// them through the new node, and report the loss only when the cluster refuses a renewal.
#[derive(Clone)]
pub struct Client {
    shared: Arc<Shared>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("address", &self.shared.address)
            .field("connected_to", &self.connected_to())
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Connects (retrying a few times with backoff) to the server at `config.address`, or to
    /// the first of its nodes that answers.
    ///
    /// Fails with [`Error::Connect`] if no connection could be made, [`Error::Tls`] if the TLS
    /// files cannot be used, [`Error::InvalidArgument`] for a malformed address or a password
    /// that cannot be sent as gRPC metadata. A wrong password is only noticed by the first call
    /// ([`Error::Unauthenticated`]).
    pub async fn connect(config: ClientConfig) -> Result<Client, Error> {
        let password = match &config.password {
            Some(password) => Some(AsciiMetadataValue::try_from(password.as_str()).map_err(
                |_| {
                    Error::InvalidArgument(
                        "the password must be printable ASCII to be sent as gRPC metadata".into(),
                    )
                },
            )?),
            None => None,
        };
        let auth = Auth(password);
        let targets = connect::targets(&config)?;
        let (channel, node) = connect::first_reachable(&targets).await?;
        Ok(Client {
            shared: Arc::new(Shared {
                address: config.address,
                targets,
                current: std::sync::Mutex::new(Connection {
                    rpc: LdlmClient::with_interceptor(channel, auth.clone()),
                    node,
                    generation: 0,
                }),
                auth,
                refresh_rpc: AtomicU8::new(REFRESH_RPC_UNKNOWN),
                moving: tokio::sync::Mutex::new(()),
            }),
        })
    }

    /// The address this client was configured with.
    pub fn address(&self) -> &str {
        &self.shared.address
    }

    /// The node this client is connected to now (`host:port`): with several addresses, the
    /// one it reached last.
    pub fn connected_to(&self) -> String {
        let node = self.lock_current().node;
        self.shared.targets[node].address.clone()
    }

    fn lock_current(&self) -> std::sync::MutexGuard<'_, Connection> {
        // The guarded data is replaced whole, so a panic elsewhere cannot leave it torn.
        self.shared
            .current
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Runs one call on the connection in use; if the call shows its node failed, moves to
    /// another node before returning, so the next call (a retry, a renewal) goes there.
    async fn call<T, F, Fut>(&self, call: F) -> Result<T, Status>
    where
        F: FnOnce(Rpc) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let (rpc, generation) = {
            let current = self.lock_current();
            (current.rpc.clone(), current.generation)
        };
        let result = call(rpc).await;
        if let Err(status) = &result
            && retry::node_failed(status)
        {
            self.fail_over(generation).await;
        }
        result.map(tonic::Response::into_inner)
    }

    /// Moves to the next node that accepts a connection, unless the failure seen on
    /// connection `generation` was already acted on. With a single address this does nothing:
    /// the channel reconnects to it by itself. If no other node can be reached, the client
    /// stays where it is (the next failure tries again).
    async fn fail_over(&self, generation: u64) {
        let targets = &self.shared.targets;
        if targets.len() < 2 {
            return;
        }
        let _moving = self.shared.moving.lock().await;
        let from = {
            let current = self.lock_current();
            if current.generation != generation {
                return;
            }
            current.node
        };
        for offset in 1..targets.len() {
            let node = (from + offset) % targets.len();
            match targets[node].connect().await {
                Ok(channel) => {
                    info!(
                        from = targets[from].address,
                        to = targets[node].address,
                        "The node stopped answering; moved to another"
                    );
                    *self.lock_current() = Connection {
                        rpc: LdlmClient::with_interceptor(channel, self.shared.auth.clone()),
                        node,
                        generation: generation + 1,
                    };
                    return;
                }
                Err(error) => {
                    debug!(address = targets[node].address, error = %chain(&error), "Cannot connect to another node");
                }
            }
        }
    }

    /// Takes the lock `name`, waiting while it is held (up to `options.wait_timeout`).
    ///
    /// Returns a [`LockGuard`] carrying the key and the fencing token; with a lease it renews
    /// the lease in the background until unlocked or dropped.
    ///
    /// Errors: [`Error::Lock`] from the server (`LockWaitTimeout`, `LockSizeMismatch`,
    /// `InvalidLockSize`, `Unknown` for an empty name, ...); [`Error::Unauthenticated`];
    /// [`Error::OutcomeUnknown`] when the call failed without saying whether the lock was
    /// granted. **A blocking Lock is never retried**: repeating it could take a second hold
    /// while the first one is still granted.
    ///
    /// Cancelling the returned future cancels the wait on the server; if the server granted
    /// the lock at that very moment, the grant lasts until this client's connection closes or
    /// its lease runs out.
    pub async fn lock(&self, name: &str, options: LockOptions) -> Result<LockGuard, Error> {
        let lease = options.wire_lease()?;
        let request = LockRequest {
            name: name.to_owned(),
            wait_timeout_seconds: options.wire_wait()?,
            lock_timeout_seconds: lease,
            size: options.wire_size()?,
        };
        let sent = Instant::now();
        let response = self
            .call(|mut rpc| async move { rpc.lock(request).await })
            .await
            .map_err(|status| Error::from_acquire_status(name, status))?;
        // The server started the lease when it granted, somewhere between `sent` and now. The
        // guard must never believe in a lease the server has already ended, so it counts from
        // `sent`; after a wait long enough to eat into the lease, it renews first and counts
        // from that renewal instead (if the renewal fails, the guard's own renewals take over).
        let mut lease_start = sent;
        if let Some(seconds) = lease
            && response.locked
            && response.error.is_none()
        {
            let lease = Duration::from_secs(seconds.unsigned_abs().into());
            if sent.elapsed() >= lease / crate::guard::RENEW_FRACTION {
                let renew_sent = Instant::now();
                if self.refresh(name, &response.key, lease).await.is_ok() {
                    lease_start = renew_sent;
                }
            }
        }
        match self.granted(name, response, lease, lease_start)? {
            Some(guard) => Ok(guard),
            None => Err(Error::Lock(LockError::not_locked("Lock"))),
        }
    }

    /// Takes the lock `name` if it is free right now: `Ok(None)` when it is held (busy).
    /// `options.wait_timeout` is ignored.
    ///
    /// Retried (with backoff) when the server is unavailable: an attempt whose connection broke
    /// ended its session, which releases anything that attempt may have been granted.
    pub async fn try_lock(
        &self,
        name: &str,
        options: LockOptions,
    ) -> Result<Option<LockGuard>, Error> {
        let lease = options.wire_lease()?;
        let request = TryLockRequest {
            name: name.to_owned(),
            lock_timeout_seconds: lease,
            size: options.wire_size()?,
        };
        // The lease runs from when the server granted it, which is after this.
        let sent = Instant::now();
        let (response, _) = self
            .retrying("TryLock", || {
                let request = request.clone();
                self.call(|mut rpc| async move { rpc.try_lock(request).await })
            })
            .await;
        let response = response.map_err(|status| Error::from_acquire_status(name, status))?;
        self.granted(name, response, lease, sent)
    }

    /// A guard for a successful answer, `None` for "not locked" without an error.
    fn granted(
        &self,
        name: &str,
        response: LockResponse,
        lease: Option<i32>,
        lease_start: Instant,
    ) -> Result<Option<LockGuard>, Error> {
        if let Some(error) = response.error {
            return Err(Error::Lock(error.into()));
        }
        if !response.locked {
            return Ok(None);
        }
        Ok(Some(LockGuard::new(
            self.clone(),
            name.to_owned(),
            response.key,
            response.fencing_token,
            lease.map(|seconds| Duration::from_secs(seconds.unsigned_abs().into())),
            lease_start,
        )))
    }

    /// Releases the lock `name` held with `key` (for locks whose guard was given up with
    /// [`LockGuard::forget`], or keys from elsewhere: the key, not the connection, authorises).
    ///
    /// Errors: `LockDoesNotExist` (no lock by that name), `InvalidLockKey` (the key does not
    /// hold it). Retried when the server is unavailable; if a retry then finds the lock gone
    /// (`LockDoesNotExist`/`InvalidLockKey`), that counts as success: the earlier attempt
    /// released it, or its broken connection ended the session that held it.
    pub async fn unlock(&self, name: &str, key: &str) -> Result<(), Error> {
        let request = UnlockRequest {
            name: name.to_owned(),
            key: key.to_owned(),
        };
        let (response, retried) = self
            .retrying("Unlock", || {
                let request = request.clone();
                self.call(|mut rpc| async move { rpc.unlock(request).await })
            })
            .await;
        let response = response.map_err(Error::from_status)?;
        match response.error {
            Some(error) => {
                let error = LockError::from(error);
                let gone = matches!(
                    error.code,
                    LockErrorCode::LockDoesNotExist | LockErrorCode::InvalidLockKey
                );
                if retried && gone {
                    debug!(name, "Unlock retried and the lock is gone: released");
                    return Ok(());
                }
                Err(Error::Lock(error))
            }
            None if response.unlocked => Ok(()),
            None => Err(Error::Lock(LockError::not_locked("Unlock"))),
        }
    }

    /// Extends the lease of `name` held with `key` to `lease` from now (rounded up to whole
    /// seconds; a lock taken without a lease gets one). Uses `Renew`, or `RefreshLock` on an
    /// older go-ldlm that does not know `Renew`. Retried when the server is unavailable.
    ///
    /// Errors: `LockDoesNotExistOrInvalidKey` when the key no longer holds the lock (go-ldlm
    /// answers `Unknown` with the text `lock does not exist or invalid key`), `NotLocked` when
    /// the server answered "not locked" without an error.
    pub async fn refresh(&self, name: &str, key: &str, lease: Duration) -> Result<(), Error> {
        let seconds = whole_seconds(lease, "lease")?;
        let (response, _) = self
            .retrying("Renew", || self.renew_once(name, key, seconds))
            .await;
        check_renewed(response.map_err(Error::from_status)?)
    }

    /// One Renew (or RefreshLock) call, no retry.
    pub(crate) async fn renew_once(
        &self,
        name: &str,
        key: &str,
        seconds: i32,
    ) -> Result<LockResponse, Status> {
        if self.shared.refresh_rpc.load(Ordering::Relaxed) != REFRESH_RPC_REFRESH_LOCK {
            let request = RenewRequest {
                name: name.to_owned(),
                key: key.to_owned(),
                lock_timeout_seconds: seconds,
            };
            let renewed = self
                .call(|mut rpc| async move { rpc.renew(request).await })
                .await;
            match renewed {
                Err(status) if status.code() == Code::Unimplemented => {
                    debug!("The server does not know Renew: using RefreshLock (older go-ldlm)");
                    self.shared
                        .refresh_rpc
                        .store(REFRESH_RPC_REFRESH_LOCK, Ordering::Relaxed);
                }
                renewed => {
                    if renewed.is_ok() {
                        self.shared
                            .refresh_rpc
                            .store(REFRESH_RPC_RENEW, Ordering::Relaxed);
                    }
                    return renewed;
                }
            }
        }
        let request = RefreshLockRequest {
            name: name.to_owned(),
            key: key.to_owned(),
            lock_timeout_seconds: seconds,
        };
        self.call(|mut rpc| async move { rpc.refresh_lock(request).await })
            .await
    }

    /// [`retry::on_unavailable`], with one more attempt for each further node: a call that
    /// found its node dead has moved on, and may find the next one dead too.
    async fn retrying<T, F, Fut>(&self, what: &str, call: F) -> (Result<T, Status>, bool)
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        let attempts = retry::ATTEMPTS + self.shared.targets.len() as u32 - 1;
        retry::on_unavailable(what, attempts, call).await
    }
}

/// A renewal's answer: renewed, or why not.
pub(crate) fn check_renewed(response: LockResponse) -> Result<(), Error> {
    match response.error {
        Some(error) => Err(Error::Lock(error.into())),
        None if response.locked => Ok(()),
        None => Err(Error::Lock(LockError::not_locked("Renew"))),
    }
}
