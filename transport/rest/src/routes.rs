//! The request pipeline ([`RestServer::handle`]) and the routes: decode → one lock-service
//! call → encode, nothing else (the lock service holds all lock semantics).
//!
//! Order, as go-ldlm's: password → `/session` → session cookie → routing.
//! So `/session` needs no cookie, and an unknown path or a wrong method on `/v1/...` without a
//! live cookie is `401`, with one `404` / `405`.
//!
//! | method + path | answer |
//! | --- | --- |
//! | `POST /session` | `201 {"session_id": "<id>"}` + `Set-Cookie` |
//! | `DELETE /session` | `200 {"session_id": ""}` + clearing `Set-Cookie`; no cookie `401`; unknown `409` |
//! | other methods on `/session` | `405`, `Allow: POST, DELETE` |
//! | `POST /v1/lock` | TryLock → `LockResponse` |
//! | `POST /v1/unlock` | Unlock → `UnlockResponse` |
//! | `POST /v1/refreshlock`, `POST /v1/renew` | Refresh → `LockResponse` |
//! | other methods on those | `405`, `Allow: POST` |
//! | anything else | `404` |
//!
//! Errors, mapped here once ([`service_error`]): lock-domain errors are `200` with an `error`
//! object (as go-ldlm's); a grant that could not be made durable (it was given back) `500`; a
//! server that cannot decide now (cluster mode without a leader) `503`; too many sessions
//! `503`. Malformed bodies are `400`, bodies over the limit `413`.

use std::error::Error as StdError;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::header::AUTHORIZATION;
use http::request::Parts;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Body;
use ldlm_engine::{LockError, LockRequest};
use ldlm_service::{Acquire, LockService, ServiceError, SessionId, Transport};
use tracing::{debug, warn};

use crate::body::{self, BodyError};
use crate::cookies;
use crate::json::{self, DecodeError, LockResponse};
use crate::reply::{self, COOKIE_INVALID, COOKIE_NOT_FOUND, Reply, SESSION_NOT_FOUND};
use crate::server::RestServer;

/// The lock routes (everything after the cookie check).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Route {
    /// `/v1/lock`: TryLock.
    Lock,
    /// `/v1/unlock`.
    Unlock,
    /// `/v1/refreshlock` (go-ldlm 3eb8bea) and `/v1/renew` (go-ldlm HEAD).
    Refresh,
}

impl Route {
    fn of(path: &str) -> Option<Route> {
        match path {
            "/v1/lock" => Some(Route::Lock),
            "/v1/unlock" => Some(Route::Unlock),
            "/v1/refreshlock" | "/v1/renew" => Some(Route::Refresh),
            _ => None,
        }
    }
}

impl<S: LockService> RestServer<S> {
    /// Answers one request. This is the whole REST API; [`RestServer::serve`] only adds
    /// connections around it, so tests and fuzzers can call it without a socket. It needs no
    /// particular async runtime, never waits for anything but the request body, and never
    /// panics on any input.
    pub async fn handle<B>(&self, request: Request<B>, remote: SocketAddr) -> Response<Full<Bytes>>
    where
        B: Body,
        B::Error: Into<Box<dyn StdError + Send + Sync>>,
    {
        let (parts, body) = request.into_parts();
        let response = self.pipeline(&parts, body, remote).await;
        debug!(
            method = %parts.method,
            path = parts.uri.path(),
            status = response.status().as_u16(),
            client_addr = %remote,
            "REST request"
        );
        response
    }

    async fn pipeline<B>(&self, parts: &Parts, body: B, remote: SocketAddr) -> Reply
    where
        B: Body,
        B::Error: Into<Box<dyn StdError + Send + Sync>>,
    {
        if let Some(password) = &self.options.password {
            let header = parts.headers.get(AUTHORIZATION).map(HeaderValue::as_bytes);
            if password.check_basic(header).is_err() {
                warn!(client_addr = %remote, "Invalid password from client");
                return reply::bad_password();
            }
        }
        let path = parts.uri.path();
        if path == "/session" {
            return match parts.method {
                Method::POST => self.create_session().await,
                Method::DELETE => self.delete_session(&parts.headers).await,
                _ => reply::method_not_allowed("POST, DELETE"),
            };
        }
        let Some(cookie) = cookies::session_cookie(&parts.headers) else {
            return reply::error(StatusCode::UNAUTHORIZED, COOKIE_NOT_FOUND);
        };
        let owner = match self.live_session(cookie).await {
            Ok(Some(owner)) => owner,
            Ok(None) => return reply::error(StatusCode::UNAUTHORIZED, COOKIE_INVALID),
            // Cluster mode, no leader reachable: the session may well be alive.
            Err(error) => return service_error(error),
        };
        // The cookie is a valid session id here (32 hex digits): send it back, renewed.
        let renewed = cookies::set_cookie(cookie, self.cookie_expiry());
        let response = self.dispatch(parts, body, &owner).await;
        reply::with_cookie(response, renewed)
    }

    /// The live session the cookie names, its idle timer restarted; `Ok(None)` if there is
    /// none.
    async fn live_session(&self, cookie: &str) -> Result<Option<S::Owner>, ServiceError> {
        match SessionId::parse(cookie) {
            Some(id) => self.service.session(id).await,
            None => Ok(None),
        }
    }

    /// When a cookie sent now expires: now + the idle timeout.
    fn cookie_expiry(&self) -> SystemTime {
        let now = SystemTime::now();
        // A timeout too large to add is "never": the cookie's date is clamped to year 9999.
        now.checked_add(self.service.session_timeout())
            .unwrap_or(now + Duration::from_secs(1 << 40))
    }

    async fn create_session(&self) -> Reply {
        let id = match self.service.open_session().await {
            Ok(id) => id.to_text(),
            Err(error) => return service_error(error),
        };
        let response = reply::json(StatusCode::CREATED, json::session_body(&id));
        reply::with_cookie(response, cookies::set_cookie(&id, self.cookie_expiry()))
    }

    async fn delete_session(&self, headers: &HeaderMap) -> Reply {
        let Some(cookie) = cookies::session_cookie(headers) else {
            return reply::error(StatusCode::UNAUTHORIZED, COOKIE_NOT_FOUND);
        };
        let closed = match SessionId::parse(cookie) {
            Some(id) => self.service.close_session(id).await,
            None => Err(ServiceError::SessionNotFound),
        };
        if let Err(error) = closed {
            return service_error(error);
        }
        let response = reply::ok(json::session_body(""));
        reply::with_cookie(response, cookies::CLEAR_COOKIE)
    }

    async fn dispatch<B>(&self, parts: &Parts, body: B, owner: &S::Owner) -> Reply
    where
        B: Body,
        B::Error: Into<Box<dyn StdError + Send + Sync>>,
    {
        let Some(route) = Route::of(parts.uri.path()) else {
            return reply::not_found();
        };
        if parts.method != Method::POST {
            return reply::method_not_allowed("POST");
        }
        let limit = self.options.max_body_bytes;
        let body = match body::read(&parts.headers, body, limit).await {
            Ok(body) => body,
            Err(BodyError::TooLarge) => {
                let message = format!("request body too large: the limit is {limit} bytes");
                return reply::error(StatusCode::PAYLOAD_TOO_LARGE, &message);
            }
            Err(BodyError::Unreadable(error)) => {
                let message = format!("could not read the request body: {error}");
                return reply::error(StatusCode::BAD_REQUEST, &message);
            }
        };
        let answer = match route {
            Route::Lock => self.try_lock(owner, &body).await,
            Route::Unlock => self.unlock(owner, &body).await,
            Route::Refresh => self.refresh(owner, &body).await,
        };
        answer.unwrap_or_else(|error| reply::error(StatusCode::BAD_REQUEST, &error.to_string()))
    }

    /// TryLock. A failed or busy TryLock answers an empty key (go-ldlm invents a useless
    /// fresh one). "locked" is answered only once the grant is durable.
    async fn try_lock(&self, owner: &S::Owner, body: &[u8]) -> Result<Reply, DecodeError> {
        let request: json::TryLockRequest<'_> = json::decode(body)?;
        let lock = LockRequest {
            name: &request.name,
            size: request.size,
            lock_timeout_seconds: request.lock_timeout_seconds,
            wait_timeout_seconds: None,
            tag: 0,
        };
        let acquired = self
            .service
            .acquire(Transport::Rest, owner, &lock, Acquire::Try)
            .await;
        let mut key = [0u8; 36];
        let response = match lock_result(acquired) {
            Ok(Ok(Some(grant))) => LockResponse {
                locked: true,
                name: &request.name,
                key: grant.key.encode(&mut key),
                error: None,
                fencing_token: grant.fencing_token,
            },
            Ok(Ok(None)) => not_locked(&request.name, "", None),
            Ok(Err(ref error)) => {
                return Ok(reply::ok(
                    not_locked(&request.name, "", Some(error)).encode(),
                ));
            }
            Err(error) => return Ok(service_error(error)),
        };
        Ok(reply::ok(response.encode()))
    }

    /// Unlock: the key, not the session, authorises it (as in go-ldlm).
    async fn unlock(&self, owner: &S::Owner, body: &[u8]) -> Result<Reply, DecodeError> {
        let request: json::UnlockRequest<'_> = json::decode(body)?;
        let unlocked = self
            .service
            .unlock(Transport::Rest, owner, &request.name, &request.key)
            .await;
        Ok(match lock_result(unlocked) {
            Ok(outcome) => reply::ok(json::unlock_response(
                outcome.is_ok(),
                &request.name,
                outcome.as_ref().err(),
            )),
            Err(error) => service_error(error),
        })
    }

    /// Refresh / Renew. The request's key is echoed unless the timeout itself was refused
    /// (as go-ldlm does); an unknown name or key is `LockDoesNotExistOrInvalidKey` (go-ldlm
    /// answers code `Unknown`, which no client can act on).
    async fn refresh(&self, owner: &S::Owner, body: &[u8]) -> Result<Reply, DecodeError> {
        let request: json::RefreshRequest<'_> = json::decode(body)?;
        let seconds = request.lock_timeout_seconds.unwrap_or(0);
        let refreshed = self
            .service
            .refresh(Transport::Rest, owner, &request.name, &request.key, seconds)
            .await;
        let outcome = match lock_result(refreshed) {
            Ok(outcome) => outcome,
            Err(error) => return Ok(service_error(error)),
        };
        let response = match &outcome {
            Ok(grant) => LockResponse {
                locked: true,
                name: &request.name,
                key: &request.key,
                error: None,
                fencing_token: grant.fencing_token,
            },
            Err(error @ LockError::InvalidLockTimeout) => {
                not_locked(&request.name, "", Some(error))
            }
            Err(error) => not_locked(&request.name, &request.key, Some(error)),
        };
        Ok(reply::ok(response.encode()))
    }
}

/// Splits a service result: lock-domain errors are an answer (`200`); the others are for
/// [`service_error`].
fn lock_result<T>(result: Result<T, ServiceError>) -> Result<Result<T, LockError>, ServiceError> {
    match result {
        Ok(value) => Ok(Ok(value)),
        Err(ServiceError::Lock(error)) => Ok(Err(error)),
        Err(error) => Err(error),
    }
}

/// The reply for a service error that is not a lock-domain answer.
fn service_error(error: ServiceError) -> Reply {
    let status = match &error {
        ServiceError::Lock(_) => StatusCode::OK,
        ServiceError::NotCommitted(_) => StatusCode::INTERNAL_SERVER_ERROR,
        ServiceError::Unavailable(_) | ServiceError::TooManySessions { .. } => {
            StatusCode::SERVICE_UNAVAILABLE
        }
        ServiceError::SessionNotFound | ServiceError::Refused(_) => StatusCode::CONFLICT,
    };
    let message = match &error {
        ServiceError::SessionNotFound => SESSION_NOT_FOUND.to_owned(),
        other => other.to_string(),
    };
    reply::error(status, &message)
}

fn not_locked<'a>(name: &'a str, key: &'a str, error: Option<&'a LockError>) -> LockResponse<'a> {
    LockResponse {
        locked: false,
        name,
        key,
        error,
        fencing_token: 0,
    }
}
