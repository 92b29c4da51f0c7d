//! Test harness: an in-process server and a small HTTP/1.1 client that keeps a session cookie.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE, COOKIE, HOST, SET_COOKIE};
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use ldlm_engine::{Engine, EngineConfig};
use ldlm_rest::{RestOptions, RestServer};
use ldlm_service::{Clock, LocalLockService, LocalOptions, LockService, TimerDriver};
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A REST server running in this process, over a local lock service with its timer driver.
pub(crate) struct TestServer {
    pub(crate) addr: SocketAddr,
    pub(crate) server: Arc<RestServer<LocalLockService>>,
    pub(crate) engine: Engine,
    pub(crate) service: Arc<LocalLockService>,
    shutdown: Option<oneshot::Sender<()>>,
    serving: Option<JoinHandle<std::io::Result<()>>>,
    _timers: TimerDriver,
}

impl TestServer {
    /// Starts a server with `options` on 127.0.0.1:0.
    pub(crate) async fn start(options: RestOptions) -> TestServer {
        TestServer::start_with(options, LocalOptions::default()).await
    }

    /// Starts a server with `options` over a lock service with `local` options.
    pub(crate) async fn start_with(options: RestOptions, local: LocalOptions) -> TestServer {
        let clock = Clock::new();
        let engine = Engine::new(EngineConfig::default(), clock.now()).expect("engine config");
        TestServer::start_on(engine, clock, options, local).await
    }

    /// Starts a server over `engine` (whose time is `clock`).
    pub(crate) async fn start_on(
        engine: Engine,
        clock: Clock,
        options: RestOptions,
        local: LocalOptions,
    ) -> TestServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let service = LocalLockService::new(engine.clone(), clock, local);
        let timers = service.start_timers();
        let server = RestServer::new(service.clone(), options);
        let (tx, rx) = oneshot::channel::<()>();
        let serving = tokio::spawn(server.clone().serve(listener, async move {
            let _ = rx.await;
        }));
        TestServer {
            addr,
            server,
            engine,
            service,
            shutdown: Some(tx),
            serving: Some(serving),
            _timers: timers,
        }
    }

    /// Live REST sessions.
    pub(crate) fn session_count(&self) -> usize {
        self.service.stats().sessions
    }

    /// A plaintext client connected to this server.
    pub(crate) async fn client(&self) -> Client {
        Client::connect(self.addr).await
    }

    /// A client that already has a session.
    pub(crate) async fn client_with_session(&self) -> Client {
        let mut client = self.client().await;
        client.new_session().await;
        client
    }

    /// Starts a graceful shutdown and waits until `serve` returns.
    pub(crate) async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(serving) = self.serving.take() {
            serving.await.expect("serve task").expect("serve result");
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(serving) = &self.serving {
            serving.abort();
        }
    }
}

/// The request body type of [`Client`]: any body (full, or streamed without a length).
pub(crate) type AnyBody = BoxBody<Bytes, Infallible>;

/// A body with the given chunks and no size hint (sent chunked).
pub(crate) fn chunked(chunks: Vec<Bytes>) -> AnyBody {
    struct Chunks(std::vec::IntoIter<Bytes>);
    impl Body for Chunks {
        type Data = Bytes;
        type Error = Infallible;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
            Poll::Ready(self.0.next().map(|chunk| Ok(Frame::data(chunk))))
        }
    }
    Chunks(chunks.into_iter()).boxed()
}

/// A body of exactly these bytes (sent with `Content-Length`).
pub(crate) fn full(body: impl Into<Bytes>) -> AnyBody {
    Full::new(body.into()).boxed()
}

/// An HTTP/1.1 keep-alive client on one connection, with an optional session cookie and
/// `Authorization` header added to every request.
pub(crate) struct Client {
    sender: http1::SendRequest<AnyBody>,
    /// The `Cookie` header to send (`ldlm-session=<id>`), if any.
    pub(crate) cookie: Option<String>,
    /// The `Authorization` header to send, if any.
    pub(crate) auth: Option<String>,
}

impl Client {
    /// Connects over plain TCP.
    pub(crate) async fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).await.expect("connect");
        Client::over(stream).await
    }

    /// Speaks HTTP/1.1 over an established stream (TCP or TLS).
    pub(crate) async fn over<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
        stream: S,
    ) -> Client {
        let (sender, connection) = http1::handshake(TokioIo::new(stream))
            .await
            .expect("http1 handshake");
        tokio::spawn(connection);
        Client {
            sender,
            cookie: None,
            auth: None,
        }
    }

    /// Sends `method path` with `body` (JSON content type), plus the cookie and authorization.
    pub(crate) async fn send(&mut self, method: Method, path: &str, body: AnyBody) -> Reply {
        let request = self.request(method, path, body);
        self.send_request(request).await
    }

    /// `method path` with a text body; `Err` if the connection fails (e.g. it was refused).
    pub(crate) async fn try_call(
        &mut self,
        method: Method,
        path: &str,
        body: &str,
    ) -> Result<Reply, hyper::Error> {
        let request = self.request(method, path, full(body.to_owned()));
        self.try_send_request(request).await
    }

    /// The request `method path` with `body` (JSON content type), plus the cookie and
    /// authorization.
    fn request(&self, method: Method, path: &str, body: AnyBody) -> Request<AnyBody> {
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(HOST, "localhost")
            .header(CONTENT_TYPE, "application/json");
        if let Some(cookie) = &self.cookie {
            request = request.header(COOKIE, cookie);
        }
        if let Some(auth) = &self.auth {
            request = request.header(AUTHORIZATION, auth);
        }
        request.body(body).expect("request")
    }

    /// Sends a request as built by the caller (no headers added).
    pub(crate) async fn send_request(&mut self, request: Request<AnyBody>) -> Reply {
        self.try_send_request(request).await.expect("response")
    }

    /// Sends a request as built by the caller; `Err` if the connection fails.
    pub(crate) async fn try_send_request(
        &mut self,
        request: Request<AnyBody>,
    ) -> Result<Reply, hyper::Error> {
        self.sender.ready().await?;
        let response = self.sender.send_request(request).await?;
        let (parts, body) = response.into_parts();
        let body = body.collect().await?.to_bytes();
        Ok(Reply {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }

    /// `method path` with a text body.
    pub(crate) async fn call(&mut self, method: Method, path: &str, body: &str) -> Reply {
        self.send(method, path, full(body.to_owned())).await
    }

    /// `POST path` with a JSON body, expecting `200`; the parsed reply.
    pub(crate) async fn post(&mut self, path: &str, body: Value) -> Value {
        let reply = self.call(Method::POST, path, &body.to_string()).await;
        assert_eq!(
            reply.status,
            StatusCode::OK,
            "{path} {body}: {}",
            reply.text()
        );
        reply.json()
    }

    /// `POST /session`; keeps the cookie and returns the session id.
    pub(crate) async fn new_session(&mut self) -> String {
        let reply = self.call(Method::POST, "/session", "").await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text());
        let id = reply.json()["session_id"]
            .as_str()
            .expect("session_id")
            .to_owned();
        self.cookie = Some(format!("ldlm-session={id}"));
        id
    }

    /// TryLock `name` (size 1, no lease); the parsed reply.
    pub(crate) async fn try_lock(&mut self, name: &str) -> Value {
        self.post("/v1/lock", serde_json::json!({ "name": name }))
            .await
    }

    /// Unlock; the parsed reply.
    pub(crate) async fn unlock(&mut self, name: &str, key: &str) -> Value {
        self.post(
            "/v1/unlock",
            serde_json::json!({ "name": name, "key": key }),
        )
        .await
    }
}

/// A complete response.
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
}

impl Reply {
    /// The body as text.
    pub(crate) fn text(&self) -> &str {
        std::str::from_utf8(&self.body).expect("UTF-8 body")
    }

    /// The body parsed as JSON.
    pub(crate) fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.text()))
    }

    /// A header's value as text.
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(name)
            .map(|v| v.to_str().expect("ASCII header"))
    }

    /// The `Set-Cookie` header, if exactly one was sent.
    pub(crate) fn set_cookie(&self) -> Option<&str> {
        let mut all = self.headers.get_all(SET_COOKIE).iter();
        let first = all.next()?;
        assert!(all.next().is_none(), "one Set-Cookie");
        Some(first.to_str().expect("ASCII cookie"))
    }

    /// Asserts a JSON error reply: `status`, `application/json`, body `{"error": message}`.
    pub(crate) fn assert_error(&self, status: StatusCode, message: &str) {
        assert_eq!(self.status, status, "{}", self.text());
        assert_eq!(self.header("content-type"), Some("application/json"));
        assert_eq!(self.json(), serde_json::json!({ "error": message }));
    }

    /// Asserts a JSON error reply with `status` whose message contains `part`.
    pub(crate) fn assert_error_contains(&self, status: StatusCode, part: &str) {
        assert_eq!(self.status, status, "{}", self.text());
        assert_eq!(self.header("content-type"), Some("application/json"));
        let json = self.json();
        let message = json["error"]
            .as_str()
            .unwrap_or_else(|| panic!("no error message: {json}"));
        assert!(
            message.contains(part),
            "{message:?} should contain {part:?}"
        );
        assert_eq!(
            json.as_object().map(|o| o.len()),
            Some(1),
            "only \"error\": {json}"
        );
    }
}

/// Asserts `key` looks like a key we issue: a lower-case hyphenated UUID v4.
pub(crate) fn assert_uuid_v4(key: &Value) {
    let key = key
        .as_str()
        .unwrap_or_else(|| panic!("key is not a string: {key}"));
    let uuid = uuid::Uuid::try_parse(key).unwrap_or_else(|_| panic!("not a UUID: {key}"));
    assert_eq!(uuid.get_version_num(), 4, "{key}");
    assert_eq!(uuid.hyphenated().to_string(), key);
}

/// The fencing token of a lock reply (a decimal string, as protojson writes `uint64`).
pub(crate) fn fencing_token(reply: &Value) -> u64 {
    reply["fencingToken"]
        .as_str()
        .unwrap_or_else(|| panic!("fencingToken is not a string: {reply}"))
        .parse()
        .expect("decimal token")
}
