//! # ldlm-rest
//!
//! The LDLM REST transport: go-ldlm's REST gateway (reference §5), served by hyper 1.x directly
//! (no web framework), over the same [`ldlm_engine::Engine`] as the gRPC transport.
//!
//! ## What a request goes through
//!
//! [`RestServer::handle`] is the whole request pipeline, in go-ldlm's order:
//!
//! 1. **password**: with `--password`, `Authorization: Basic base64(<anything>:<password>)` is
//!    required on every request; otherwise `401` with `WWW-Authenticate: Basic
//!    realm="Restricted"` and an empty body;
//! 2. **`/session`**: `POST` creates a session (an engine session owner with an idle timeout)
//!    and sets the `ldlm-session` cookie; `DELETE` ends it and releases its locks;
//! 3. **session cookie**: every other path needs a live `ldlm-session` cookie (`401` otherwise);
//!    a live one restarts the session's idle timer and is sent back with a new `Expires`;
//! 4. **routing**: `POST /v1/lock` (TryLock), `POST /v1/unlock`, `POST /v1/refreshlock` and
//!    `POST /v1/renew` (both refresh). Bodies are protojson (module `json`); lock-domain errors are
//!    HTTP 200 with an `error` object, exactly like go-ldlm.
//!
//! ## Deliberate differences from go-ldlm (DESIGN §4)
//!
//! Wrong method on a known path is `405` with `Allow` (go-ldlm: 501); `DELETE /session`
//! without a cookie is `401` (go-ldlm: 500); bodies over `max_body_bytes` are `413`; every error
//! status other than the password's `401` has a JSON body `{"error": "..."}` with content type
//! `application/json`. Refresh of an unknown lock answers `LockDoesNotExistOrInvalidKey`, a
//! failed TryLock returns an empty key, and lock responses carry `fencingToken`.
//!
//! ## Durability
//!
//! Built with [`RestServer::with_durability`] (the engine records grants in a state file), a
//! TryLock answers "locked" only once its grant is on disk; if the file cannot be written, the
//! hold is given back at once and the answer is `500` with a JSON error.
//!
//! ## Consistency and concurrency
//!
//! Sessions live in a sharded map (module `sessions`) whose shard mutexes are held only for a
//! hash-map operation, never across an `.await` and never while taking another lock: requests
//! of one session run concurrently, and a slow request never blocks another session (go-ldlm's
//! B12). Mutual exclusion is the engine's job; a session is just an engine owner.
//!
//! Session expiry is driven by the engine's timer wheel: the server's timer driver reports the
//! expired owners, and [`RestServer::forget_sessions`] drops them from the map.
//!
//! ## Modules
//!
//! - `server`: the shared state, the accept loop, TLS, connection limit, graceful shutdown;
//! - `routes`: the request pipeline and the lock routes;
//! - `sessions`: the session map;
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
mod sessions;

pub use server::{RestOptions, RestServer};
