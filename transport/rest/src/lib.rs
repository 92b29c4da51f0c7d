//! # ldlm-rest
//!
//! The LDLM REST transport: go-ldlm's REST gateway (same routes, cookie, Basic auth and JSON
//! shapes, so its curl scripts keep working), served by hyper 1.x directly (no web framework),
//! over the same [`LockService`](ldlm_service::LockService) as the gRPC transport.
//!
//! ## What a request goes through
//!
//! [`RestServer::handle`] is the whole request pipeline, in go-ldlm's order:
//!
//! 1. **password**: with `--password`, `Authorization: Basic base64(<anything>:<password>)` is
//!    required on every request; otherwise `401` with `WWW-Authenticate: Basic
//!    realm="Restricted"` and an empty body;
//! 2. **`/session`**: `POST` creates a session (a lock-service owner with an idle timeout)
//!    and sets the `ldlm-session` cookie; `DELETE` ends it and releases its locks;
//! 3. **session cookie**: every other path needs a live `ldlm-session` cookie (`401` otherwise);
//!    a live one restarts the session's idle timer and is sent back with a new `Expires`;
//! 4. **routing**: `POST /v1/lock` (TryLock), `POST /v1/unlock`, `POST /v1/refreshlock` and
//!    `POST /v1/renew` (both refresh). Bodies are protojson (module `json`); lock-domain errors are
//!    HTTP 200 with an `error` object, exactly like go-ldlm.
//!
//! ## Deliberate differences from go-ldlm (its bugs fixed; `docs/go-ldlm-differences.md`)
//!
//! Wrong method on a known path is `405` with `Allow` (go-ldlm: 501); `DELETE /session`
//! without a cookie is `401` (go-ldlm: 500); bodies over `max_body_bytes` are `413`; every error
//! status other than the password's `401` has a JSON body `{"error": "..."}` with content type
//! `application/json`. Refresh of an unknown lock answers `LockDoesNotExistOrInvalidKey`, a
//! failed TryLock returns an empty key, and lock responses carry `fencingToken`.
//!
//! ## Durability
//!
//! A TryLock answers "locked" only once the lock service says its grant is durable (with a
//! state file: on disk); if it cannot be made durable, the hold is given back at once and the
//! answer is `500` with a JSON error.
//!
//! ## Sessions
//!
//! Sessions are the lock service's (`open_session`, `session`, `close_session`): their map,
//! idle expiry and limit live there, so in cluster mode a cookie works at every node. This
//! crate only reads and writes the cookie. Requests of one session run concurrently, and a
//! slow request never blocks another session (go-ldlm held a global mutex while waiting for a
//! per-session one, its B12).

//! ## Modules
//!
//! - `server`: the shared state, connections from the shared accept loop, graceful shutdown;
//! - `routes`: the request pipeline, the lock routes, and the mapping of service errors;
//! - `cookies`: reading and writing the `ldlm-session` cookie;
//! - `json`: protojson request decoding and response encoding;
//! - `body`: reading a request body under the size limit;
//! - `reply`: building responses (JSON errors, status codes, headers).

mod body;
mod cookies;
mod json;
mod reply;
mod routes;
mod server;

pub use server::{RestOptions, RestServer};
