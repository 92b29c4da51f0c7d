//! The request pipeline ([`RestServer::handle`]) and the routes: decode → engine → encode,
//! nothing else (the engine holds all lock semantics).
//!
//! Order, as go-ldlm's (reference §5.2): password → `/session` → session cookie → routing.
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
//! Lock-domain errors are `200` with an `error` object; malformed bodies `400`; bodies over the
//! limit `413`; too many sessions `503`.

use std::time::Instant;

use ldlm_service::metrics::{self, Outcome, Rpc, Transport};
use std::error::Error as StdError;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::header::AUTHORIZATION;
use http::request::Parts;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Body;
use ldlm_engine::{LockError, LockRequest, Owner, TryLockOutcome};
use tracing::{debug, warn};

use crate::body::{self, BodyError};
use crate::cookies;
use crate::json::{self, DecodeError, LockResponse};
use crate::reply::{self, COOKIE_INVALID, COOKIE_NOT_FOUND, Reply, SESSION_NOT_FOUND};
use crate::server::RestServer;
use crate::sessions::SessionId;

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

impl RestServer {
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
                Method::POST => self.create_session(),
                Method::DELETE => self.delete_session(&parts.headers),
                _ => reply::method_not_allowed("POST, DELETE"),
            };
        }
        let Some(cookie) = cookies::session_cookie(&parts.headers) else {
            return reply::error(StatusCode::UNAUTHORIZED, COOKIE_NOT_FOUND);
        };
        let Some(owner) = self.live_session(cookie) else {
            return reply::error(StatusCode::UNAUTHORIZED, COOKIE_INVALID);
        };
        // The cookie is a valid session id here (32 hex digits): send it back, renewed.
        let renewed = cookies::set_cookie(cookie, self.cookie_expiry());
        let response = self.dispatch(parts, body, &owner).await;
        reply::with_cookie(response, renewed)
    }

    /// The live session the cookie names, its idle timer restarted; `None` if there is none.
    fn live_session(&self, cookie: &str) -> Option<Owner> {
        let id = SessionId::parse(cookie)?;
        let owner = self.sessions.get(id)?;
        if self.engine.touch_session(&owner, self.clock.now()) {
            Some(owner)
        } else {
            // The engine ended it (idle expiry) before the report reached us.
            self.sessions.remove(id);
            None
        }
    }

    /// When a cookie sent now expires: now + the idle timeout.
    fn cookie_expiry(&self) -> SystemTime {
        let now = SystemTime::now();
        // A timeout too large to add is "never": the cookie's date is clamped to year 9999.
        now.checked_add(self.options.session_timeout)
            .unwrap_or(now + Duration::from_secs(1 << 40))
    }

    fn create_session(&self) -> Reply {
        let timeout = self.options.session_timeout;
        let now = self.clock.now();
        let Some((id, owner)) = self
            .sessions
            .create(|| self.engine.new_session(timeout, now))
        else {
            let message = format!(
                "too many REST sessions: the limit is {}",
                self.sessions.limit()
            );
            return reply::error(StatusCode::SERVICE_UNAVAILABLE, &message);
        };
        let id = id.to_text();
        debug!(rest_session_id = %id, owner = %owner.id(), "REST session started");
        let response = reply::json(StatusCode::CREATED, json::session_body(&id));
        reply::with_cookie(response, cookies::set_cookie(&id, self.cookie_expiry()))
    }

    fn delete_session(&self, headers: &HeaderMap) -> Reply {
        let Some(cookie) = cookies::session_cookie(headers) else {
            return reply::error(StatusCode::UNAUTHORIZED, COOKIE_NOT_FOUND);
        };
        let Some(owner) = SessionId::parse(cookie).and_then(|id| self.sessions.remove(id)) else {
            return reply::error(StatusCode::CONFLICT, SESSION_NOT_FOUND);
        };
        if owner.has_ended() {
            // Expired a moment ago: the engine has released it already.
            return reply::error(StatusCode::CONFLICT, SESSION_NOT_FOUND);
        }
        if !self.engine.is_shut_down() {
            let summary = self.engine.release_owner(&owner, self.clock.now());
            debug!(
                rest_session_id = cookie,
                num_locks = summary.released,
                "REST session ended"
            );
        }
        let response = reply::ok(json::session_body(""));
        reply::with_cookie(response, cookies::CLEAR_COOKIE)
    }

    async fn dispatch<B>(&self, parts: &Parts, body: B, owner: &Owner) -> Reply
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
        // Read once: the request's latency and its engine tick both start here.
        let started = Instant::now();
        let answer = match route {
            Route::Lock => self.try_lock(owner, &body, started).await,
            Route::Unlock => self.unlock(&body, started).await.map(reply::ok),
            Route::Refresh => self.refresh(&body, started).map(reply::ok),
        };
        answer.unwrap_or_else(|error| reply::error(StatusCode::BAD_REQUEST, &error.to_string()))
    }

    /// TryLock. A failed or busy TryLock answers an empty key (DESIGN §4.3). With a state
    /// file, "locked" is answered only once the grant is on disk (DESIGN §4.5); if it cannot be
    /// written, the hold is given back and the answer is `500`.
    async fn try_lock(
        &self,
        owner: &Owner,
        body: &[u8],
        started: Instant,
    ) -> Result<Reply, DecodeError> {
        let request: json::TryLockRequest<'_> = json::decode(body)?;
        let lock = LockRequest {
            name: &request.name,
            size: request.size,
            lock_timeout_seconds: request.lock_timeout_seconds,
            wait_timeout_seconds: None,
        };
        let now = self.clock.tick_at(started);
        let outcome = self.engine.try_lock(owner, &lock, now);
        // Recorded once the answer is known, so the latency includes the durability wait (as
        // it does over gRPC).
        let record = |result| {
            metrics::record_request(Transport::Rest, Rpc::TryLock, result, started.elapsed())
        };
        let mut key = [0u8; 36];
        let response = match &outcome {
            Ok(TryLockOutcome::Acquired(grant)) => {
                let key = grant.key.encode(&mut key);
                // Not durable (or the request dropped meanwhile): `confirm` gives the slot back.
                if let Some(durability) = &self.durability
                    && let Err(error) = durability
                        .confirm(&self.engine, &self.clock, &request.name, grant)
                        .await
                {
                    warn!(lock = %request.name, %error, "REST lock not granted: not durable");
                    record(Outcome::Error(ldlm_engine::ErrorCode::Unknown));
                    return Ok(reply::error(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        &error.to_string(),
                    ));
                }
                LockResponse {
                    locked: true,
                    name: &request.name,
                    key,
                    error: None,
                    fencing_token: grant.fencing_token,
                }
            }
            Ok(TryLockOutcome::Busy) => not_locked(&request.name, "", None),
            Err(error) => not_locked(&request.name, "", Some(error)),
        };
        record(match &outcome {
            Ok(TryLockOutcome::Acquired(_)) => Outcome::Ok,
            Ok(TryLockOutcome::Busy) => Outcome::Busy,
            Err(error) => Outcome::Error(error.code()),
        });
        Ok(reply::ok(response.encode()))
    }

    /// Unlock: the key, not the session, authorises it (reference §3.1). If it hands the lock
    /// to a waiter (a gRPC Lock), it yields once so that grant is answered first, as gRPC's
    /// Unlock does.
    async fn unlock(&self, body: &[u8], started: Instant) -> Result<Bytes, DecodeError> {
        let request: json::UnlockRequest<'_> = json::decode(body)?;
        let now = self.clock.tick_at(started);
        let outcome = self.engine.unlock(&request.name, &request.key, now);
        metrics::record_request(
            Transport::Rest,
            Rpc::Unlock,
            Outcome::of(&outcome),
            started.elapsed(),
        );
        let response =
            json::unlock_response(outcome.is_ok(), &request.name, outcome.as_ref().err());
        if matches!(outcome, Ok(unlocked) if unlocked.handed_off > 0) {
            tokio::task::yield_now().await;
        }
        Ok(response)
    }

    /// Refresh / Renew. The request's key is echoed unless the timeout itself was refused
    /// (reference §2.4); an unknown name or key is `LockDoesNotExistOrInvalidKey` (DESIGN §4.1).
    fn refresh(&self, body: &[u8], started: Instant) -> Result<Bytes, DecodeError> {
        let request: json::RefreshRequest<'_> = json::decode(body)?;
        let seconds = request.lock_timeout_seconds.unwrap_or(0);
        let now = self.clock.tick_at(started);
        let outcome = self
            .engine
            .refresh(&request.name, &request.key, seconds, now);
        metrics::record_request(
            Transport::Rest,
            Rpc::Refresh,
            Outcome::of(&outcome),
            started.elapsed(),
        );
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
        Ok(response.encode())
    }
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
