//! Building responses: every status the REST API answers with, in one place.
//!
//! Success bodies are protojson (module `json`); every error status except the password's
//! `401` carries `{"error": "<message>"}` with `Content-Type: application/json` (go-ldlm's B13).
//! The password's `401` has an empty body and `WWW-Authenticate`, exactly as go-ldlm's.

use bytes::Bytes;
use http::header::{ALLOW, CONTENT_TYPE, SET_COOKIE, WWW_AUTHENTICATE};
use http::{HeaderValue, Response, StatusCode};
use http_body_util::Full;

use crate::json;

/// The response type of the whole API: a complete body, never streamed.
pub(crate) type Reply = Response<Full<Bytes>>;

const APPLICATION_JSON: HeaderValue = HeaderValue::from_static("application/json");

/// Message of the `401` for a request without the session cookie (go-ldlm's text).
pub(crate) const COOKIE_NOT_FOUND: &str =
    "session cookie not found. create a new session at /session";
/// Message of the `401` for an unknown or expired session cookie (go-ldlm's text).
pub(crate) const COOKIE_INVALID: &str =
    "session cookie invalid or expired. create a new session at /session";
/// Message of the `409` for `DELETE /session` with an unknown session (go-ldlm's text).
pub(crate) const SESSION_NOT_FOUND: &str = "session not found";

/// A response with `status` and a JSON `body`.
pub(crate) fn json(status: StatusCode, body: Bytes) -> Reply {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, APPLICATION_JSON);
    response
}

/// `200 OK` with a JSON body.
pub(crate) fn ok(body: Bytes) -> Reply {
    json(StatusCode::OK, body)
}

/// An error status with the body `{"error": message}`.
pub(crate) fn error(status: StatusCode, message: &str) -> Reply {
    json(status, json::error_body(message))
}

/// `401` for a wrong or missing password: empty body, `WWW-Authenticate: Basic
/// realm="Restricted"` (go-ldlm's exact answer).
pub(crate) fn bad_password() -> Reply {
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = StatusCode::UNAUTHORIZED;
    response.headers_mut().insert(
        WWW_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"Restricted\""),
    );
    response
}

/// `404` for a path the API does not have.
pub(crate) fn not_found() -> Reply {
    error(StatusCode::NOT_FOUND, "Not Found")
}

/// `405` for a known path with the wrong method; `allow` lists the methods it takes.
pub(crate) fn method_not_allowed(allow: &'static str) -> Reply {
    let mut response = error(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed");
    response
        .headers_mut()
        .insert(ALLOW, HeaderValue::from_static(allow));
    response
}

/// Adds a `Set-Cookie` header to a response.
pub(crate) fn with_cookie(mut response: Reply, cookie: HeaderValue) -> Reply {
    response.headers_mut().append(SET_COOKIE, cookie);
    response
}
