//! Arbitrary REST requests — method, path, headers, cookie, password, body (in arbitrary
//! chunks, possibly failing mid-way) — through the real request handler (`RestServer::handle`,
//! everything of the REST API except the socket) against a real engine. Never panics; every
//! answer has a status the API documents, with a JSON body (or the password's empty `401`);
//! a lock answer is consistent (locked ⇔ key, token); no lock ever has more holders than its
//! size; sessions never exceed their limit.
//!
//! The input is text, close to HTTP/1.1, so that seeds are readable and a dictionary helps:
//!
//! ```text
//! [PASSWORD\n]                 the server wants --password (s3cret)
//! request ("\n===\n" request)*
//! request = METHOD " " PATH (" " flag)* "\n" (NAME ": " VALUE "\n")* "\n" BODY
//! flag    = "chunk=" N          send the body in chunks of N bytes
//!         | "fail"              the body fails after its last chunk (client went away)
//!         | "hint=" N           the body claims at least N bytes in its size hint
//! ```
//!
//! Session ids and lock keys are random and cannot be guessed, so in the path, header values
//! and body `@SESSION@` (`@SESSION0@`..`@SESSION9@`) stands for a session created earlier (one
//! is created before the input's requests), `@KEY@` (`@KEY0@`..`@KEY9@`) for the key of an
//! earlier grant, and `@AUTH@` for `Basic` credentials with the right password. Lines that are
//! not valid headers are skipped; a request whose method or path is not valid is skipped.

#![no_main]

use std::collections::{HashMap, VecDeque};
use std::net::{Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, LazyLock};
use std::task::{Context, Poll};

use base64::Engine as _;
use bytes::Bytes;
use http::header::{AUTHORIZATION, SET_COOKIE};
use http::{HeaderName, HeaderValue, Method, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use ldlm_engine::{Engine, EngineConfig, Tick};
use ldlm_rest::{RestOptions, RestServer};
use ldlm_service::{Clock, LocalLockService, LocalOptions, LockService};
use ldlm_security::password::Password;
use libfuzzer_sys::fuzz_target;

const PASSWORD: &str = "s3cret";
const MAX_SESSIONS: usize = 3;
const MAX_BODY: usize = 512;

/// `LDLM_FUZZ_TRACE=1`: print every request and answer (to check what a seed does).
static TRACE: LazyLock<bool> = LazyLock::new(|| std::env::var_os("LDLM_FUZZ_TRACE").is_some());

static RUNTIME: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime")
});

/// A request body in chunks, optionally failing at the end.
struct Chunks {
    chunks: VecDeque<Bytes>,
    fail: bool,
    hint: Option<u64>,
}

impl Body for Chunks {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        if let Some(chunk) = self.chunks.pop_front() {
            return Poll::Ready(Some(Ok(Frame::data(chunk))));
        }
        if std::mem::take(&mut self.fail) {
            return Poll::Ready(Some(Err(std::io::Error::other("client went away"))));
        }
        Poll::Ready(None)
    }

    fn size_hint(&self) -> SizeHint {
        let mut hint = SizeHint::new();
        if let Some(lower) = self.hint {
            hint.set_lower(lower);
        }
        hint
    }
}

struct Run {
    server: Arc<RestServer<LocalLockService>>,
    service: Arc<LocalLockService>,
    engine: Engine,
    password: bool,
    sessions: Vec<String>,
    keys: Vec<String>,
}

fn basic(credentials: &str) -> Vec<u8> {
    let encoded = base64::engine::general_purpose::STANDARD.encode(credentials);
    format!("Basic {encoded}").into_bytes()
}

/// Splits `haystack` at each `separator`.
fn split<'a>(haystack: &'a [u8], separator: &'a [u8]) -> impl Iterator<Item = &'a [u8]> + 'a {
    let mut rest = Some(haystack);
    std::iter::from_fn(move || {
        let current = rest?;
        match current
            .windows(separator.len())
            .position(|w| w == separator)
        {
            Some(at) => {
                rest = Some(&current[at + separator.len()..]);
                Some(&current[..at])
            }
            None => {
                rest = None;
                Some(current)
            }
        }
    })
}

/// `text` up to the first `\n`, and what follows it.
fn line(text: &[u8]) -> (&[u8], &[u8]) {
    match text.iter().position(|&b| b == b'\n') {
        Some(at) => (&text[..at], &text[at + 1..]),
        None => (text, &[]),
    }
}

impl Run {
    /// Replaces `@SESSION@`, `@SESSIONn@`, `@KEY@`, `@KEYn@` and `@AUTH@`.
    fn expand(&self, text: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(text.len());
        let mut rest = text;
        'outer: while let Some((&first, tail)) = rest.split_first() {
            if first == b'@' {
                let pick = |list: &[String], tail: &[u8]| -> (Option<String>, usize) {
                    // `@`, optional digit, `@`: the digit picks (modulo); none means the last.
                    match tail {
                        [b'@', ..] => (list.last().cloned(), 1),
                        [d @ b'0'..=b'9', b'@', ..] if !list.is_empty() => {
                            (Some(list[(d - b'0') as usize % list.len()].clone()), 2)
                        }
                        [b'0'..=b'9', b'@', ..] => (None, 2),
                        _ => (None, usize::MAX),
                    }
                };
                for (word, list) in [(&b"SESSION"[..], &self.sessions), (&b"KEY"[..], &self.keys)] {
                    if let Some(after) = tail.strip_prefix(word) {
                        let (value, used) = pick(list, after);
                        if used != usize::MAX {
                            let fallback = if word == b"KEY" {
                                "00000000-0000-4000-8000-000000000000"
                            } else {
                                "00000000000000000000000000000000"
                            };
                            out.extend_from_slice(value.as_deref().unwrap_or(fallback).as_bytes());
                            rest = &after[used..];
                            continue 'outer;
                        }
                    }
                }
                if let Some(after) = tail.strip_prefix(b"AUTH@") {
                    out.extend_from_slice(&basic(&format!("user:{PASSWORD}")));
                    rest = after;
                    continue;
                }
            }
            out.push(first);
            rest = tail;
        }
        out
    }

    /// One request of the input (see the module docs), or `None` if it is not valid HTTP.
    fn request(&self, text: &[u8]) -> Option<http::Request<Chunks>> {
        let (first, mut rest) = line(text);
        let mut words = first.split(|&b| b == b' ');
        let method = Method::from_bytes(words.next()?).ok()?;
        let path = self.expand(words.next().unwrap_or(b"/"));
        let mut builder = http::Request::builder()
            .method(method)
            .uri(http::Uri::try_from(path).ok()?);
        let (mut chunk, mut fail, mut hint) = (0usize, false, None);
        for flag in words {
            let number = |prefix: &[u8]| {
                std::str::from_utf8(flag.strip_prefix(prefix)?)
                    .ok()?
                    .parse::<u64>()
                    .ok()
            };
            if flag == b"fail" {
                fail = true;
            } else if let Some(n) = number(b"chunk=") {
                chunk = n.min(4096) as usize;
            } else if let Some(n) = number(b"hint=") {
                hint = Some(n);
            }
        }
        loop {
            let (header, after) = line(rest);
            rest = after;
            if header.is_empty() {
                break;
            }
            let Some(colon) = header.iter().position(|&b| b == b':') else {
                continue;
            };
            let value = self.expand(
                header[colon + 1..]
                    .strip_prefix(b" ")
                    .unwrap_or(&header[colon + 1..]),
            );
            if let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(&header[..colon]),
                HeaderValue::from_bytes(&value),
            ) {
                builder = builder.header(name, value);
            }
        }
        let body = Bytes::from(self.expand(rest));
        let chunks = if chunk == 0 || body.is_empty() {
            VecDeque::from([body])
        } else {
            body.chunks(chunk).map(Bytes::copy_from_slice).collect()
        };
        builder.body(Chunks { chunks, fail, hint }).ok()
    }

    fn send(&mut self, request: http::Request<Chunks>) -> (StatusCode, http::HeaderMap, Bytes) {
        let path = request.uri().path().to_owned();
        let remote = SocketAddr::from((Ipv4Addr::LOCALHOST, 40000));
        let response = RUNTIME.block_on(self.server.handle(request, remote));
        let (parts, body) = response.into_parts();
        let body = RUNTIME
            .block_on(body.collect())
            .expect("a full body")
            .to_bytes();
        let status = parts.status;
        if *TRACE {
            eprintln!("{path} -> {status} {body:?}");
        }
        let documented = [200, 201, 400, 401, 404, 405, 409, 413, 503];
        assert!(
            documented.contains(&status.as_u16()),
            "undocumented status {status} for {path}: {body:?}"
        );
        let bad_password = status == StatusCode::UNAUTHORIZED && body.is_empty();
        if bad_password {
            assert!(self.password, "a password 401 without a password");
        } else {
            let value: serde_json::Value = serde_json::from_slice(&body)
                .unwrap_or_else(|e| panic!("{status} body is not JSON ({e}): {body:?}"));
            assert!(
                value.is_object(),
                "{status} body is not an object: {body:?}"
            );
            if status.as_u16() >= 400 {
                assert!(
                    value["error"].is_string(),
                    "{status} without an error: {body:?}"
                );
            }
        }
        (status, parts.headers, body)
    }

    fn check_answer(
        &mut self,
        path: &str,
        status: StatusCode,
        headers: &http::HeaderMap,
        body: &Bytes,
    ) {
        if path == "/session" && status == StatusCode::CREATED {
            let cookie = headers
                .get(SET_COOKIE)
                .and_then(|v| v.to_str().ok())
                .expect("a new session sets its cookie");
            let id = cookie
                .strip_prefix("ldlm-session=")
                .and_then(|rest| rest.split(';').next())
                .expect("the session cookie");
            assert_eq!(id.len(), 32, "session id {id:?}");
            self.sessions.push(id.to_owned());
        }
        if status != StatusCode::OK || !path.starts_with("/v1/") {
            return;
        }
        let value: serde_json::Value = serde_json::from_slice(body).expect("JSON");
        if path == "/v1/unlock" {
            let unlocked = value["unlocked"].as_bool().expect("unlocked");
            assert_eq!(unlocked, value.get("error").is_none(), "{value}");
            return;
        }
        let locked = value["locked"].as_bool().expect("locked");
        let key = value["key"].as_str().expect("key");
        let token: u64 = value["fencingToken"]
            .as_str()
            .and_then(|t| t.parse().ok())
            .expect("fencingToken as a decimal string");
        if locked {
            assert!(value.get("error").is_none(), "{value}");
            assert_eq!(key.len(), 36, "{value}");
            assert!(token > 0, "{value}");
            if path == "/v1/lock" {
                self.keys.push(key.to_owned());
            }
        } else {
            assert_eq!(token, 0, "{value}");
            if path == "/v1/lock" {
                assert!(key.is_empty(), "{value}");
            }
        }
    }

    fn check_table(&self) {
        let mut held: HashMap<&str, usize> = HashMap::new();
        let list = self.engine.list();
        for hold in &list {
            let count = held.entry(&hold.name).or_default();
            *count += 1;
            assert!(
                *count <= hold.size as usize,
                "{:?} over its size",
                hold.name
            );
        }
        assert!(self.service.stats().sessions <= MAX_SESSIONS);
    }
}

fuzz_target!(|data: &[u8]| {
    let (password, data) = match data.strip_prefix(b"PASSWORD\n") {
        Some(rest) => (true, rest),
        None => (false, data),
    };
    let config = EngineConfig {
        shards: 4,
        max_name_bytes: 64,
        ..EngineConfig::default()
    };
    let engine = Engine::new(config, Tick::ZERO).expect("engine");
    let options = RestOptions {
        password: password.then(|| Password::new(PASSWORD)),
        max_body_bytes: MAX_BODY,
        ..RestOptions::default()
    };
    let local = LocalOptions {
        max_sessions: MAX_SESSIONS,
        ..LocalOptions::default()
    };
    let service = LocalLockService::new(engine.clone(), Clock::new(), local);
    let server = RestServer::new(service.clone(), options);
    let mut run = Run {
        server,
        service,
        engine,
        password,
        sessions: Vec::new(),
        keys: Vec::new(),
    };

    // One session to start with, as a client would make it.
    let mut create = http::Request::post("/session");
    if password {
        create = create.header(AUTHORIZATION, basic(&format!(":{PASSWORD}")));
    }
    let create = create
        .body(Chunks {
            chunks: VecDeque::new(),
            fail: false,
            hint: None,
        })
        .expect("request");
    let (status, headers, body) = run.send(create);
    assert_eq!(status, StatusCode::CREATED);
    run.check_answer("/session", status, &headers, &body);

    for text in split(data, b"\n===\n").take(16) {
        let Some(request) = run.request(text) else {
            continue;
        };
        let path = request.uri().path().to_owned();
        let (status, headers, body) = run.send(request);
        run.check_answer(&path, status, &headers, &body);
        run.check_table();
    }
});
