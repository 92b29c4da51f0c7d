//! Arbitrary REST requests — method, path, headers, cookie, password, body (in arbitrary
//! chunks, possibly failing mid-way) — through the real request handler (`RestServer::handle`,
//! everything of the REST API except the socket) against a real engine. Never panics; every
//! answer has a status the API documents, with a JSON body (or the password's empty `401`);
//! a lock answer is consistent (locked ⇔ key, token); no lock ever has more holders than its
//! size; sessions never exceed their limit.
//!
//! Session ids and lock keys are random and cannot be guessed: the cookie can name a session
//! created earlier (`Cookie::Live`), and `@KEY@` in a body stands for the key of an earlier
//! grant (the dictionary has it).

#![no_main]

use std::collections::{HashMap, VecDeque};
use std::net::{Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, LazyLock};
use std::task::{Context, Poll};

use arbitrary::Arbitrary;
use base64::Engine as _;
use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, COOKIE, SET_COOKIE};
use http::{HeaderName, HeaderValue, Method, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use ldlm_engine::{Engine, EngineConfig, Tick};
use ldlm_rest::{RestOptions, RestServer};
use ldlm_transport::driver::Clock;
use ldlm_transport::password::Password;
use libfuzzer_sys::fuzz_target;

const PASSWORD: &str = "s3cret";
const MAX_SESSIONS: usize = 3;
const MAX_BODY: usize = 512;

static RUNTIME: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime")
});

#[derive(Arbitrary, Debug)]
struct Input {
    /// The server wants `--password`.
    password: bool,
    requests: Vec<Req>,
}

#[derive(Arbitrary, Debug)]
struct Req {
    method: MethodChoice,
    path: PathChoice,
    auth: Auth,
    cookie: CookieChoice,
    headers: Vec<(HeaderChoice, Vec<u8>)>,
    body: BodyChoice,
    /// Body chunk size (0: one chunk).
    chunk: u8,
    /// The body fails after its chunks (the client went away).
    fail: bool,
    /// A lower bound the body claims in its size hint.
    hint: Option<u16>,
}

#[derive(Arbitrary, Debug)]
enum MethodChoice {
    Get,
    Post,
    Put,
    Delete,
    Patch,
    Head,
    Options,
    Other(String),
}

#[derive(Arbitrary, Debug)]
enum PathChoice {
    Session,
    Lock,
    Unlock,
    RefreshLock,
    Renew,
    Other(String),
}

#[derive(Arbitrary, Debug)]
enum Auth {
    None,
    Correct,
    Raw(Vec<u8>),
}

#[derive(Arbitrary, Debug)]
enum CookieChoice {
    None,
    /// A session created earlier (by index), as `ldlm-session=<id>`.
    Live(u8),
    /// A session created earlier, inside a longer header.
    LiveAmong(u8, String, String),
    Raw(Vec<u8>),
}

#[derive(Arbitrary, Debug)]
enum HeaderChoice {
    ContentLength,
    ContentType,
    Cookie,
    Authorization,
    TransferEncoding,
    Other(String),
}

#[derive(Arbitrary, Debug)]
enum BodyChoice {
    Raw(Vec<u8>),
    TryLock {
        name: NameChoice,
        size: Option<i64>,
        lease: Option<i64>,
    },
    Unlock {
        name: NameChoice,
        key: u8,
    },
    Refresh {
        name: NameChoice,
        key: u8,
        lease: Option<i64>,
    },
}

#[derive(Arbitrary, Debug)]
enum NameChoice {
    A,
    B,
    Raw(String),
}

impl NameChoice {
    fn text(&self) -> &str {
        match self {
            NameChoice::A => "a",
            NameChoice::B => "b",
            NameChoice::Raw(s) => s,
        }
    }
}

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
    server: Arc<RestServer>,
    engine: Engine,
    password: bool,
    sessions: Vec<String>,
    keys: Vec<String>,
}

fn json_text(s: &str) -> String {
    serde_json::Value::String(s.to_owned()).to_string()
}

fn basic(credentials: &str) -> Vec<u8> {
    let encoded = base64::engine::general_purpose::STANDARD.encode(credentials);
    format!("Basic {encoded}").into_bytes()
}

impl Run {
    fn key(&self, index: u8) -> String {
        if self.keys.is_empty() {
            return "00000000-0000-4000-8000-000000000000".to_string();
        }
        self.keys[index as usize % self.keys.len()].clone()
    }

    fn body(&self, body: &BodyChoice) -> Vec<u8> {
        let int = |v: Option<i64>| v.map_or("null".to_string(), |v| v.to_string());
        match body {
            BodyChoice::Raw(raw) => {
                // `@KEY@` stands for an earlier grant's key.
                let mut out = Vec::with_capacity(raw.len());
                let mut rest = raw.as_slice();
                let mut n = 0u8;
                while !rest.is_empty() {
                    if let Some(after) = rest.strip_prefix(b"@KEY@") {
                        out.extend_from_slice(self.key(n).as_bytes());
                        n = n.wrapping_add(1);
                        rest = after;
                    } else {
                        out.push(rest[0]);
                        rest = &rest[1..];
                    }
                }
                out
            }
            BodyChoice::TryLock { name, size, lease } => format!(
                r#"{{"name":{},"size":{},"lock_timeout_seconds":{}}}"#,
                json_text(name.text()),
                int(*size),
                int(*lease)
            )
            .into_bytes(),
            BodyChoice::Unlock { name, key } => format!(
                r#"{{"name":{},"key":{}}}"#,
                json_text(name.text()),
                json_text(&self.key(*key))
            )
            .into_bytes(),
            BodyChoice::Refresh { name, key, lease } => format!(
                r#"{{"name":{},"key":{},"lockTimeoutSeconds":{}}}"#,
                json_text(name.text()),
                json_text(&self.key(*key)),
                int(*lease)
            )
            .into_bytes(),
        }
    }

    fn session(&self, index: u8) -> Option<&str> {
        (!self.sessions.is_empty())
            .then(|| self.sessions[index as usize % self.sessions.len()].as_str())
    }

    fn request(&self, req: &Req) -> Option<http::Request<Chunks>> {
        let method = match &req.method {
            MethodChoice::Get => Method::GET,
            MethodChoice::Post => Method::POST,
            MethodChoice::Put => Method::PUT,
            MethodChoice::Delete => Method::DELETE,
            MethodChoice::Patch => Method::PATCH,
            MethodChoice::Head => Method::HEAD,
            MethodChoice::Options => Method::OPTIONS,
            MethodChoice::Other(m) => Method::from_bytes(m.as_bytes()).ok()?,
        };
        let path = match &req.path {
            PathChoice::Session => "/session",
            PathChoice::Lock => "/v1/lock",
            PathChoice::Unlock => "/v1/unlock",
            PathChoice::RefreshLock => "/v1/refreshlock",
            PathChoice::Renew => "/v1/renew",
            PathChoice::Other(p) => p,
        };
        let mut builder = http::Request::builder().method(method).uri(path);
        match &req.auth {
            Auth::None => {}
            Auth::Correct => {
                builder = builder.header(AUTHORIZATION, basic(&format!("user:{PASSWORD}")))
            }
            Auth::Raw(raw) => builder = builder.header(AUTHORIZATION, raw.as_slice()),
        }
        match &req.cookie {
            CookieChoice::None => {}
            CookieChoice::Live(i) => {
                if let Some(id) = self.session(*i) {
                    builder = builder.header(COOKIE, format!("ldlm-session={id}"));
                }
            }
            CookieChoice::LiveAmong(i, before, after) => {
                if let Some(id) = self.session(*i) {
                    builder = builder.header(COOKIE, format!("{before}ldlm-session={id}{after}"));
                }
            }
            CookieChoice::Raw(raw) => builder = builder.header(COOKIE, raw.as_slice()),
        }
        for (name, value) in &req.headers {
            let name = match name {
                HeaderChoice::ContentLength => CONTENT_LENGTH,
                HeaderChoice::ContentType => CONTENT_TYPE,
                HeaderChoice::Cookie => COOKIE,
                HeaderChoice::Authorization => AUTHORIZATION,
                HeaderChoice::TransferEncoding => http::header::TRANSFER_ENCODING,
                HeaderChoice::Other(n) => HeaderName::from_bytes(n.as_bytes()).ok()?,
            };
            builder = builder.header(name, HeaderValue::from_bytes(value).ok()?);
        }
        let body = Bytes::from(self.body(&req.body));
        let chunks = if req.chunk == 0 || body.is_empty() {
            VecDeque::from([body])
        } else {
            body.chunks(req.chunk as usize)
                .map(Bytes::copy_from_slice)
                .collect()
        };
        builder
            .body(Chunks {
                chunks,
                fail: req.fail,
                hint: req.hint.map(u64::from),
            })
            .ok()
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
            assert!(value.is_object(), "{status} body is not an object: {body:?}");
            if status.as_u16() >= 400 {
                assert!(value["error"].is_string(), "{status} without an error: {body:?}");
            }
        }
        (status, parts.headers, body)
    }

    fn check_answer(&mut self, path: &str, status: StatusCode, headers: &http::HeaderMap, body: &Bytes) {
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
            assert!(*count <= hold.size as usize, "{:?} over its size", hold.name);
        }
        assert!(self.server.session_count() <= MAX_SESSIONS);
    }
}

fuzz_target!(|input: Input| {
    let config = EngineConfig {
        shards: 4,
        max_name_bytes: 64,
        ..EngineConfig::default()
    };
    let engine = Engine::new(config, Tick::ZERO).expect("engine");
    let options = RestOptions {
        password: input.password.then(|| Password::new(PASSWORD)),
        max_sessions: MAX_SESSIONS,
        max_body_bytes: MAX_BODY,
        ..RestOptions::default()
    };
    let server = RestServer::new(engine.clone(), Clock::new(), options);
    let mut run = Run {
        server,
        engine,
        password: input.password,
        sessions: Vec::new(),
        keys: Vec::new(),
    };

    // One session to start with, as a client would make it.
    let mut create = http::Request::post("/session");
    if input.password {
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

    for req in input.requests.iter().take(16) {
        let Some(request) = run.request(req) else {
            continue;
        };
        let path = request.uri().path().to_owned();
        let (status, headers, body) = run.send(request);
        run.check_answer(&path, status, &headers, &body);
        run.check_table();
    }
});
