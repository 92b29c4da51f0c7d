//! Integration tests of the REST transport: a real server on 127.0.0.1:0 in this process (real
//! clock, real timer driver wired to `forget_sessions`), driven by real HTTP clients (hyper's
//! client connection, and curl).
//!
//! One test binary, one module per area:
//!
//! - `harness`: starting a server, an HTTP client with a cookie, reply helpers;
//! - `sessions`: `/session`, cookies, idle expiry, the session limit;
//! - `routes`: lock / unlock / refresh bodies, status codes of malformed requests;
//! - `auth`: the Basic-auth password;
//! - `tls`: HTTPS and mTLS with certificates made at test time;
//! - `connections`: keep-alive, the connection limit, graceful shutdown;
//! - `concurrency`: many sessions in parallel, mutual exclusion checked with counters;
//! - `curl`: the README flow with curl and a cookie jar.

mod auth;
mod concurrency;
mod connections;
mod curl;
mod harness;
mod routes;
mod sessions;
mod tls;
