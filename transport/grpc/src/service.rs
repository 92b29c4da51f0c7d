//! The `ldlm.LDLM` service: decode → one lock-service call → encode.
//!
//! Response fields (go-ldlm's, except that a failed Lock/TryLock returns an empty key where
//! go-ldlm invents a fresh, useless one):
//!
//! | RPC | outcome | `locked` | `key` | `error` | `fencing_token` |
//! | --- | --- | --- | --- | --- | --- |
//! | Lock, TryLock | granted | true | new key | — | the grant's |
//! | TryLock | busy | false | empty | — | 0 |
//! | Lock, TryLock | failed (validation, timeout, ...) | false | empty | set | 0 |
//! | RefreshLock, Renew | refreshed | true | request's key | — | the hold's |
//! | RefreshLock, Renew | failed | false | request's key, empty if timeout ≤ 0 | set | 0 |
//!
//! `name` always echoes the request. `Unlock` answers `unlocked` and `error`.
//!
//! **Errors, mapped here once.** Lock-domain errors ([`ServiceError::Lock`]) never change the
//! gRPC status (it stays OK, as go-ldlm's): `error.code` is [`LockError::code`], and
//! `error.message` its `Display` text (go-ldlm's). A grant that could not be made durable
//! ([`ServiceError::NotCommitted`]; it was given back) is status `INTERNAL`, as REST answers
//! 500: the client never learns a key that a restart would forget. A server that cannot decide
//! now ([`ServiceError::Unavailable`]) is status `UNAVAILABLE`: retry.

use std::sync::Arc;

use ldlm_engine::{Grant, LockError, LockRequest as EngineRequest};
use ldlm_proto::ldlm::ldlm_server::Ldlm;
use ldlm_proto::ldlm::{
    Error, LockRequest, LockResponse, RefreshLockRequest, RenewRequest, TryLockRequest,
    UnlockRequest, UnlockResponse,
};
use ldlm_service::{Acquire, LockService, ServiceError, Transport};
use tonic::{Extensions, Request, Response, Status};
use tracing::debug;

use crate::conn::SessionInfo;

/// The service over a lock service `S`.
pub(crate) struct LdlmService<S: LockService> {
    service: Arc<S>,
}

impl<S: LockService> LdlmService<S> {
    pub(crate) fn new(service: Arc<S>) -> LdlmService<S> {
        LdlmService { service }
    }

    /// RefreshLock and Renew (same message shape, same behaviour).
    async fn refresh(
        &self,
        rpc: &'static str,
        extensions: Extensions,
        name: String,
        key: String,
        secs: i32,
    ) -> Result<Response<LockResponse>, Status> {
        let session = session::<S::Owner>(&extensions)?;
        debug!(session_id = session.id(), lock = %name, key = %key, timeout = secs, "{rpc} request");
        let result = self
            .service
            .refresh(Transport::Grpc, &session.owner, &name, &key, secs)
            .await;
        let response = match lock_result(result)? {
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
        log_lock_response(rpc, session.id(), &response);
        Ok(Response::new(response))
    }

    /// Lock or TryLock: one service call, its answer as a response.
    async fn acquire(
        &self,
        rpc: &'static str,
        extensions: Extensions,
        name: String,
        fields: AcquireFields,
        mode: Acquire,
    ) -> Result<LockResponse, Status> {
        let session = session::<S::Owner>(&extensions)?;
        debug!(session_id = session.id(), lock = %name, "{rpc} request");
        let request = EngineRequest {
            name: &name,
            size: fields.size,
            lock_timeout_seconds: fields.lock_timeout_seconds,
            wait_timeout_seconds: fields.wait_timeout_seconds,
            tag: 0,
        };
        // If the client cancels or its deadline passes, tonic drops this future: a waiter
        // leaves the queue, a grant not yet answered is given back.
        let result = self
            .service
            .acquire(Transport::Grpc, &session.owner, &request, mode)
            .await;
        let response = lock_response(name, lock_result(result)?);
        log_lock_response(rpc, session.id(), &response);
        Ok(response)
    }
}

/// The fields of a Lock or TryLock request besides its name.
struct AcquireFields {
    size: Option<i32>,
    lock_timeout_seconds: Option<i32>,
    wait_timeout_seconds: Option<i32>,
}

/// The connection's session, put there by our accept loop.
fn session<O: Send + Sync + 'static>(extensions: &Extensions) -> Result<&SessionInfo<O>, Status> {
    extensions
        .get::<SessionInfo<O>>()
        .ok_or_else(|| Status::internal("connection has no LDLM session"))
}

/// Splits a service result: lock-domain errors are an answer (status OK), the others a status.
fn lock_result<T>(result: Result<T, ServiceError>) -> Result<Result<T, LockError>, Status> {
    match result {
        Ok(value) => Ok(Ok(value)),
        Err(ServiceError::Lock(error)) => Ok(Err(error)),
        Err(ServiceError::NotCommitted(error)) => Err(Status::internal(error.to_string())),
        Err(error @ ServiceError::Unavailable(_)) => Err(Status::unavailable(error.to_string())),
        // Session calls are REST's; no gRPC call makes them.
        Err(error) => Err(Status::internal(error.to_string())),
    }
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

fn log_lock_response(rpc: &'static str, session_id: u64, response: &LockResponse) {
    debug!(
        session_id,
        lock = %response.name,
        key = %response.key,
        locked = response.locked,
        error = response.error.as_ref().map(|e| tracing::field::display(&e.message)),
        "{rpc} response"
    );
}

#[tonic::async_trait]
impl<S: LockService> Ldlm for LdlmService<S> {
    async fn lock(&self, request: Request<LockRequest>) -> Result<Response<LockResponse>, Status> {
        let (_, extensions, request) = request.into_parts();
        let fields = AcquireFields {
            size: request.size,
            lock_timeout_seconds: request.lock_timeout_seconds,
            wait_timeout_seconds: request.wait_timeout_seconds,
        };
        let response = self
            .acquire("Lock", extensions, request.name, fields, Acquire::Wait)
            .await?;
        Ok(Response::new(response))
    }

    async fn try_lock(
        &self,
        request: Request<TryLockRequest>,
    ) -> Result<Response<LockResponse>, Status> {
        let (_, extensions, request) = request.into_parts();
        let fields = AcquireFields {
            size: request.size,
            lock_timeout_seconds: request.lock_timeout_seconds,
            wait_timeout_seconds: None,
        };
        let response = self
            .acquire("TryLock", extensions, request.name, fields, Acquire::Try)
            .await?;
        Ok(Response::new(response))
    }

    async fn unlock(
        &self,
        request: Request<UnlockRequest>,
    ) -> Result<Response<UnlockResponse>, Status> {
        let (_, extensions, request) = request.into_parts();
        let session = session::<S::Owner>(&extensions)?;
        debug!(session_id = session.id(), lock = %request.name, key = %request.key, "Unlock request");
        let result = self
            .service
            .unlock(Transport::Grpc, &session.owner, &request.name, &request.key)
            .await;
        let result = lock_result(result)?;
        let response = UnlockResponse {
            unlocked: result.is_ok(),
            name: request.name,
            error: result.err().map(|e| error(&e)),
        };
        debug!(
            session_id = session.id(),
            key = %request.key,
            lock = %response.name,
            unlocked = response.unlocked,
            error = response.error.as_ref().map(|e| tracing::field::display(&e.message)),
            "Unlock response"
        );
        Ok(Response::new(response))
    }

    async fn refresh_lock(
        &self,
        request: Request<RefreshLockRequest>,
    ) -> Result<Response<LockResponse>, Status> {
        let (_, extensions, r) = request.into_parts();
        self.refresh(
            "RefreshLock",
            extensions,
            r.name,
            r.key,
            r.lock_timeout_seconds,
        )
        .await
    }

    async fn renew(
        &self,
        request: Request<RenewRequest>,
    ) -> Result<Response<LockResponse>, Status> {
        let (_, extensions, r) = request.into_parts();
        self.refresh("Renew", extensions, r.name, r.key, r.lock_timeout_seconds)
            .await
    }
}

#[cfg(test)]
mod tests {
    /// The engine's error codes (the lock domain cannot see the proto) are the proto's, number
    /// for number and name for name: `error.code` is sent as `LockError::code() as i32`.
    #[test]
    fn engine_error_codes_are_the_wire_codes() {
        use ldlm_proto::ldlm::ErrorCode as Wire;
        for (number, code) in ldlm_engine::ErrorCode::ALL.into_iter().enumerate() {
            assert_eq!(code as i32, number as i32);
            let wire = Wire::try_from(code as i32).expect("a wire code");
            assert_eq!(wire.as_str_name(), code.name());
        }
        assert!(
            Wire::try_from(ldlm_engine::ErrorCode::ALL.len() as i32).is_err(),
            "the wire has no code the engine lacks"
        );
    }
}
