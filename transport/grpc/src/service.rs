//! The `ldlm.LDLM` service: decode → one engine call → encode.
//!
//! Response fields (reference §2.4, with DESIGN §4):
//!
//! | RPC | outcome | `locked` | `key` | `error` | `fencing_token` |
//! | --- | --- | --- | --- | --- | --- |
//! | Lock, TryLock | granted | true | new key | — | the grant's |
//! | TryLock | busy | false | empty | — | 0 |
//! | Lock, TryLock | failed (validation, timeout, ...) | false | **empty** (§4.3) | set | 0 |
//! | RefreshLock, Renew | refreshed | true | request's key | — | the hold's |
//! | RefreshLock, Renew | failed | false | request's key, empty if timeout ≤ 0 | set | 0 |
//!
//! `name` always echoes the request. `Unlock` answers `unlocked` and `error`. Lock-domain errors
//! never change the gRPC status (it stays OK): `error.code` is [`LockError::code`], and
//! `error.message` its `Display` text (go-ldlm's).
//!
//! **Durability.** With a state file, a grant is answered "locked" only once its record is on
//! disk ([`Durability::wait`], DESIGN §4.5). If the write fails, the slot is given back and
//! the call fails with status `INTERNAL` (as REST answers 500): the client never learns a key
//! that a restart would forget. If the client leaves while the grant is being written, the
//! slot is given back too.
//!
//! **Hand-off order.** An Unlock that hands the lock to a waiter yields once before it
//! answers, so the waiter's grant (woken on the same worker) goes out first: the next holder
//! waits for that grant, nobody waits for the unlock's reply.

use std::time::Instant;

use ldlm_engine::{
    Engine, Grant, LockError, LockOutcome, LockRequest as EngineRequest, TryLockOutcome,
};
use ldlm_proto::ldlm::ldlm_server::Ldlm;
use ldlm_proto::ldlm::{
    Error, LockRequest, LockResponse, RefreshLockRequest, RenewRequest, TryLockRequest,
    UnlockRequest, UnlockResponse,
};
use ldlm_service::driver::Clock;
use ldlm_service::metrics::{self, Outcome, Rpc, Transport};
use ldlm_state_file::Durability;
use tonic::{Extensions, Request, Response, Status};
use tracing::{debug, warn};

use crate::conn::SessionInfo;

/// The service: the engine, the clock its calls are timed with, and the state file's
/// durability handle if there is one.
pub(crate) struct LdlmService {
    engine: Engine,
    clock: Clock,
    durability: Option<Durability>,
}

impl LdlmService {
    pub(crate) fn new(engine: Engine, clock: Clock, durability: Option<Durability>) -> LdlmService {
        LdlmService {
            engine,
            clock,
            durability,
        }
    }

    /// `grant`, once it is on disk (at once without a state file). If it cannot be written,
    /// or the call is dropped meanwhile, [`Durability::confirm`] gives the slot back; a failure
    /// is counted in the metrics as REST counts it, since the caller returns a `Status`.
    async fn durable(
        &self,
        rpc: Rpc,
        started: Instant,
        name: &str,
        grant: Grant,
    ) -> Result<Grant, Status> {
        let Some(durability) = &self.durability else {
            return Ok(grant);
        };
        match durability
            .confirm(&self.engine, &self.clock, name, &grant)
            .await
        {
            Ok(()) => Ok(grant),
            Err(error) => {
                warn!(lock = %name, %error, "gRPC lock not granted: not durable");
                let outcome = Outcome::Error(ldlm_engine::ErrorCode::Unknown);
                metrics::record_request(Transport::Grpc, rpc, outcome, started.elapsed());
                Err(Status::internal(error.to_string()))
            }
        }
    }

    /// RefreshLock and Renew (same message shape, same behaviour).
    fn refresh(
        &self,
        rpc: &'static str,
        session: &SessionInfo,
        name: String,
        key: String,
        secs: i32,
    ) -> LockResponse {
        let started = Instant::now();
        debug!(
            session_id = session.owner.id().0,
            lock = %name,
            key = %key,
            timeout = secs,
            "{rpc} request"
        );
        let result = self
            .engine
            .refresh(&name, &key, secs, self.clock.tick_at(started));
        let outcome = Outcome::of(&result);
        let response = match result {
            Ok(grant) => LockResponse {
                locked: true,
                name,
                key,
                error: None,
                fencing_token: grant.fencing_token,
            },
            Err(e) => LockResponse {
                locked: false,
                name,
                // go-ldlm echoes the key once validation passed; not for a timeout ≤ 0.
                key: if secs <= 0 { String::new() } else { key },
                error: Some(error(&e)),
                fencing_token: 0,
            },
        };
        log_lock_response(rpc, session, &response);
        metrics::record_request(Transport::Grpc, Rpc::Refresh, outcome, started.elapsed());
        response
    }
}

/// The connection's session, put there by our accept loop.
fn session(extensions: &Extensions) -> Result<&SessionInfo, Status> {
    extensions
        .get::<SessionInfo>()
        .ok_or_else(|| Status::internal("connection has no LDLM session"))
}

fn error(e: &LockError) -> Error {
    Error {
        code: e.code() as i32,
        message: e.to_string(),
    }
}

fn key_text(grant: &Grant) -> String {
    let mut buf = [0u8; 36];
    grant.key.encode(&mut buf).to_owned()
}

/// The response to a Lock or TryLock (`None`: TryLock found the lock busy).
fn lock_response(name: String, result: Result<Option<Grant>, LockError>) -> LockResponse {
    match result {
        Ok(Some(grant)) => LockResponse {
            locked: true,
            name,
            key: key_text(&grant),
            error: None,
            fencing_token: grant.fencing_token,
        },
        Ok(None) => LockResponse {
            name,
            ..LockResponse::default()
        },
        Err(e) => LockResponse {
            name,
            error: Some(error(&e)),
            ..LockResponse::default()
        },
    }
}

fn log_lock_response(rpc: &'static str, session: &SessionInfo, response: &LockResponse) {
    debug!(
        session_id = session.owner.id().0,
        lock = %response.name,
        key = %response.key,
        locked = response.locked,
        error = response.error.as_ref().map(|e| tracing::field::display(&e.message)),
        "{rpc} response"
    );
}

#[tonic::async_trait]
impl Ldlm for LdlmService {
    async fn lock(&self, request: Request<LockRequest>) -> Result<Response<LockResponse>, Status> {
        let started = Instant::now();
        let (_, extensions, request) = request.into_parts();
        let session = session(&extensions)?;
        debug!(session_id = session.owner.id().0, lock = %request.name, "Lock request");
        let result = {
            let query = EngineRequest {
                name: &request.name,
                size: request.size,
                lock_timeout_seconds: request.lock_timeout_seconds,
                wait_timeout_seconds: request.wait_timeout_seconds,
            };
            match self
                .engine
                .lock(&session.owner, &query, self.clock.tick_at(started))
            {
                Ok(LockOutcome::Acquired(grant)) => Ok(grant),
                // If the client cancels or its deadline passes, tonic drops this future, and
                // with it the `Pending`: the waiter leaves the queue.
                Ok(LockOutcome::Waiting(pending)) => pending.wait_async().await,
                Err(e) => Err(e),
            }
        };
        let result = match result {
            Ok(grant) => Ok(Some(
                self.durable(Rpc::Lock, started, &request.name, grant)
                    .await?,
            )),
            Err(e) => Err(e),
        };
        let outcome = Outcome::of_acquire(&result);
        let response = lock_response(request.name, result);
        log_lock_response("Lock", session, &response);
        metrics::record_request(Transport::Grpc, Rpc::Lock, outcome, started.elapsed());
        Ok(Response::new(response))
    }

    async fn try_lock(
        &self,
        request: Request<TryLockRequest>,
    ) -> Result<Response<LockResponse>, Status> {
        let started = Instant::now();
        let (_, extensions, request) = request.into_parts();
        let session = session(&extensions)?;
        debug!(session_id = session.owner.id().0, lock = %request.name, "TryLock request");
        let query = EngineRequest {
            name: &request.name,
            size: request.size,
            lock_timeout_seconds: request.lock_timeout_seconds,
            wait_timeout_seconds: None,
        };
        let result = self
            .engine
            .try_lock(&session.owner, &query, self.clock.tick_at(started))
            .map(|outcome| match outcome {
                TryLockOutcome::Acquired(grant) => Some(grant),
                TryLockOutcome::Busy => None,
            });
        let result = match result {
            Ok(Some(grant)) => Ok(Some(
                self.durable(Rpc::TryLock, started, &request.name, grant)
                    .await?,
            )),
            other => other,
        };
        let outcome = Outcome::of_acquire(&result);
        let response = lock_response(request.name, result);
        log_lock_response("TryLock", session, &response);
        metrics::record_request(Transport::Grpc, Rpc::TryLock, outcome, started.elapsed());
        Ok(Response::new(response))
    }

    async fn unlock(
        &self,
        request: Request<UnlockRequest>,
    ) -> Result<Response<UnlockResponse>, Status> {
        let started = Instant::now();
        let (_, extensions, request) = request.into_parts();
        let session = session(&extensions)?;
        debug!(
            session_id = session.owner.id().0,
            lock = %request.name,
            key = %request.key,
            "Unlock request"
        );
        let result = self
            .engine
            .unlock(&request.name, &request.key, self.clock.tick_at(started));
        let handed_off = matches!(result, Ok(unlocked) if unlocked.handed_off > 0);
        let outcome = Outcome::of(&result);
        let response = UnlockResponse {
            unlocked: result.is_ok(),
            name: request.name,
            error: result.err().map(|e| error(&e)),
        };
        debug!(
            session_id = session.owner.id().0,
            key = %request.key,
            lock = %response.name,
            unlocked = response.unlocked,
            error = response.error.as_ref().map(|e| tracing::field::display(&e.message)),
            "Unlock response"
        );
        metrics::record_request(Transport::Grpc, Rpc::Unlock, outcome, started.elapsed());
        if handed_off {
            // The waiters just handed the lock were woken on this thread; let them answer
            // before this reply does. On a contended lock the next holder's grant is the
            // critical path, this reply is not: answering the grant first took hand-offs
            // from ~11k/s to ~17k/s (BENCHMARKS.md). The unlock is done and recorded before
            // the yield, so a client that cancels meanwhile only loses the reply.
            tokio::task::yield_now().await;
        }
        Ok(Response::new(response))
    }

    async fn refresh_lock(
        &self,
        request: Request<RefreshLockRequest>,
    ) -> Result<Response<LockResponse>, Status> {
        let (_, extensions, request) = request.into_parts();
        let session = session(&extensions)?;
        Ok(Response::new(self.refresh(
            "RefreshLock",
            session,
            request.name,
            request.key,
            request.lock_timeout_seconds,
        )))
    }

    async fn renew(
        &self,
        request: Request<RenewRequest>,
    ) -> Result<Response<LockResponse>, Status> {
        let (_, extensions, request) = request.into_parts();
        let session = session(&extensions)?;
        Ok(Response::new(self.refresh(
            "Renew",
            session,
            request.name,
            request.key,
            request.lock_timeout_seconds,
        )))
    }
}
