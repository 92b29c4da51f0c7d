//! The REST driver: one keep-alive HTTP/1.1 connection per worker (hyper's client connection,
//! no pool), each with its own session (`POST /session`, cookie `ldlm-session`).
//!
//! Bodies are written into one reused buffer per connection; responses are parsed as
//! protojson (lowerCamel names, enum names for codes, `fencingToken` as a decimal string).
//!
//! **Against a cluster** (several addresses), connection `i` starts at address `i` (in turn),
//! and when a call shows its node failed (the connection broke, or the node answered `503`
//! because it cannot reach a leader, or said it is shutting down) it reconnects to the next
//! address that accepts, *keeping its session*: a cluster's REST sessions are cluster-wide, so
//! the cookie is valid at every node and the locks the session holds stay held. The failed
//! call still counts as an error (a benchmark reports what its clients saw), and an Unlock
//! that then finds its hold gone is a lost lock, as it would be for a single server.

use std::fmt;
use std::io::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context as _, anyhow};
use base64::Engine as _;
use bytes::{BufMut as _, Bytes, BytesMut};
use http::header::{AUTHORIZATION, CONTENT_TYPE, COOKIE, HOST, SET_COOKIE};
use http::{HeaderValue, Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use ldlm_proto::ldlm::ErrorCode;
use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};
use tokio::net::TcpStream;

use super::args::{Plan, RefreshRpc, addresses};
use super::client::{CallError, Grant, LockClient, LockError, Unlocked, node_failed};
use super::tls;
use ldlm_security::tls::TlsConnector;

/// How long connecting and creating the session may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// One REST session on its own connection.
pub(crate) struct RestClient {
    sender: SendRequest<Full<Bytes>>,
    /// The addresses it may use (several: a cluster's nodes) and which one it is at.
    targets: Arc<[Target]>,
    at: usize,
    /// Moves to another node, over every connection of the run.
    moves: Arc<AtomicU64>,
    cookie: HeaderValue,
    authorization: Option<HeaderValue>,
    refresh_uri: &'static str,
    buf: BytesMut,
}

/// One address a connection can be opened to.
struct Target {
    address: String,
    host: HeaderValue,
    tls: Option<TlsConnector>,
}

impl Target {
    /// A new connection to this address (no session yet).
    async fn open(&self) -> anyhow::Result<SendRequest<Full<Bytes>>> {
        let opening = async {
            Ok(match &self.tls {
                Some(connector) => http1_handshake(connector.connect().await?).await?,
                None => {
                    let tcp = TcpStream::connect(&self.address).await?;
                    tcp.set_nodelay(true)?;
                    http1_handshake(tcp).await?
                }
            })
        };
        tokio::time::timeout(CONNECT_TIMEOUT, opening)
            .await
            .unwrap_or_else(|_| Err(anyhow!("timed out after {CONNECT_TIMEOUT:?}")))
    }
}

/// Opens `plan.connections` connections, each with a new session; moves are counted in
/// `moves`.
pub(crate) async fn connect(plan: &Plan, moves: Arc<AtomicU64>) -> anyhow::Result<Vec<RestClient>> {
    let authorization = match &plan.password {
        // Basic auth: the user part is ignored by the server, only the password counts.
        Some(password) => {
            let token = base64::engine::general_purpose::STANDARD.encode(format!(":{password}"));
            Some(HeaderValue::try_from(format!("Basic {token}")).context("bad --password")?)
        }
        None => None,
    };
    let refresh_uri = match plan.refresh_rpc {
        RefreshRpc::Refreshlock => "/v1/refreshlock",
        RefreshRpc::Renew => "/v1/renew",
    };
    let targets = addresses(&plan.rest_address)
        .into_iter()
        .map(|address| {
            Ok(Target {
                host: HeaderValue::try_from(address.as_str())
                    .with_context(|| format!("bad --rest_address {address:?}"))?,
                tls: tls::connector(plan.tls.as_ref(), &address, b"http/1.1")?,
                address,
            })
        })
        .collect::<anyhow::Result<Arc<[Target]>>>()?;
    let mut tasks = tokio::task::JoinSet::new();
    for index in 0..plan.connections {
        let at = index % targets.len();
        let (targets, moves, authorization) =
            (targets.clone(), moves.clone(), authorization.clone());
        tasks.spawn(async move {
            let connecting = async {
                RestClient {
                    sender: targets[at].open().await?,
                    targets,
                    at,
                    moves,
                    cookie: HeaderValue::from_static(""),
                    authorization,
                    refresh_uri,
                    buf: BytesMut::with_capacity(4096),
                }
                .open_session()
                .await
            };
            let client = tokio::time::timeout(CONNECT_TIMEOUT, connecting)
                .await
                .unwrap_or_else(|_| Err(anyhow!("timed out after {CONNECT_TIMEOUT:?}")));
            (index, client)
        });
    }
    let mut clients: Vec<Option<RestClient>> = (0..plan.connections).map(|_| None).collect();
    while let Some(joined) = tasks.join_next().await {
        let (index, client) = joined.context("connecting task failed")?;
        let address = &targets[index % targets.len()].address;
        clients[index] =
            Some(client.with_context(|| format!("cannot open a REST session at {address}"))?);
    }
    Ok(clients.into_iter().flatten().collect())
}

/// The HTTP/1.1 handshake on `io`; the connection is driven by a task of its own.
async fn http1_handshake<T>(io: T) -> hyper::Result<http1::SendRequest<Full<Bytes>>>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, connection) = http1::handshake(TokioIo::new(io)).await?;
    tokio::spawn(connection);
    Ok(sender)
}

impl RestClient {
    /// Creates the client's session (`POST /session`).
    async fn open_session(mut self) -> anyhow::Result<RestClient> {
        let (status, headers, body) = self
            .send(Method::POST, "/session", Bytes::new(), false)
            .await
            .map_err(|e| anyhow!("POST /session: {}", e.describe().1))?;
        if status != StatusCode::CREATED && status != StatusCode::OK {
            return Err(anyhow!(
                "POST /session answered {status}: {}",
                String::from_utf8_lossy(&body)
            ));
        }
        let cookie = headers
            .get_all(SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .filter_map(|v| v.split(';').next())
            .find(|v| v.trim_start().starts_with("ldlm-session="))
            .ok_or_else(|| anyhow!("POST /session set no ldlm-session cookie"))?;
        self.cookie = HeaderValue::try_from(cookie.trim())?;
        Ok(self)
    }

    /// Reconnects to the next address that accepts (the failed one last), keeping the session:
    /// see the module doc. With one address, or if none accepts, stays: the next failure tries
    /// again.
    async fn move_on(&mut self) {
        let count = self.targets.len();
        if count < 2 {
            return;
        }
        for offset in 1..=count {
            let at = (self.at + offset) % count;
            if let Ok(sender) = self.targets[at].open().await {
                (self.sender, self.at) = (sender, at);
                self.moves.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
    }

    /// Moves on if the call's outcome says the node failed or is shutting down.
    async fn after<T>(
        &mut self,
        result: Result<T, CallError>,
        shutting_down: impl Fn(&T) -> bool,
    ) -> Result<T, CallError> {
        if node_failed(&result, shutting_down) {
            self.move_on().await;
        }
        result
    }

    /// Sends one request on the connection and reads the whole answer.
    async fn send(
        &mut self,
        method: Method,
        path: &'static str,
        body: Bytes,
        with_cookie: bool,
    ) -> Result<(StatusCode, http::HeaderMap, Bytes), CallError> {
        let mut request = Request::new(Full::new(body));
        *request.method_mut() = method;
        *request.uri_mut() = Uri::from_static(path);
        let headers = request.headers_mut();
        headers.insert(HOST, self.targets[self.at].host.clone());
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if with_cookie {
            headers.insert(COOKIE, self.cookie.clone());
        }
        if let Some(authorization) = &self.authorization {
            headers.insert(AUTHORIZATION, authorization.clone());
        }
        let transport = |e: hyper::Error| CallError::Transport(e.to_string());
        self.sender.ready().await.map_err(transport)?;
        let response = self.sender.send_request(request).await.map_err(transport)?;
        let (parts, body) = response.into_parts();
        let body = body.collect().await.map_err(transport)?.to_bytes();
        Ok((parts.status, parts.headers, body))
    }

    /// POSTs the JSON body in `self.buf` to a lock route; non-200 answers are errors.
    async fn post(&mut self, path: &'static str) -> Result<Bytes, CallError> {
        let body = self.buf.split().freeze();
        let (status, _, body) = self.send(Method::POST, path, body, true).await?;
        if status != StatusCode::OK {
            let text = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
            return Err(CallError::Http(status.as_u16(), text));
        }
        Ok(body)
    }

    /// Starts a JSON object with the `name` field.
    fn begin(&mut self, name: &str) {
        self.buf.reserve(128 + name.len());
        self.buf.put_slice(b"{\"name\":");
        // Lock names are ours (ASCII), but escape properly anyway.
        let _ = serde_json::to_writer((&mut self.buf).writer(), name);
    }

    fn field(&mut self, name: &str, value: u32) {
        let _ = write!((&mut self.buf).writer(), ",\"{name}\":{value}");
    }

    fn key_field(&mut self, key: &str) {
        self.buf.put_slice(b",\"key\":");
        let _ = serde_json::to_writer((&mut self.buf).writer(), key);
    }
}

/// `/v1/lock` (TryLock), `/v1/refreshlock` and `/v1/renew` answers.
#[derive(Deserialize)]
struct LockBody {
    #[serde(default)]
    locked: bool,
    #[serde(default)]
    key: String,
    #[serde(default, rename = "fencingToken", deserialize_with = "u64_or_string")]
    fencing_token: u64,
    #[serde(default)]
    error: Option<ErrorBody>,
}

/// `/v1/unlock` answers.
#[derive(Deserialize)]
struct UnlockBody {
    #[serde(default)]
    unlocked: bool,
    #[serde(default)]
    error: Option<ErrorBody>,
}

#[derive(Deserialize)]
struct ErrorBody {
    #[serde(default)]
    code: serde_json::Value,
    #[serde(default)]
    message: String,
}

impl ErrorBody {
    fn into_error(self) -> LockError {
        LockError {
            code: self.code(),
            message: self.message,
        }
    }

    /// The `ErrorCode` number: protojson writes the enum's name; a number is accepted too.
    fn code(&self) -> i32 {
        match &self.code {
            serde_json::Value::String(name) => {
                ErrorCode::from_str_name(name).map_or(ErrorCode::Unknown as i32, |c| c as i32)
            }
            serde_json::Value::Number(n) => {
                n.as_i64().and_then(|n| i32::try_from(n).ok()).unwrap_or(0)
            }
            _ => ErrorCode::Unknown as i32,
        }
    }
}

/// protojson writes `uint64` as a decimal string; accept a number too.
fn u64_or_string<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
    struct U64Visitor;
    impl Visitor<'_> for U64Visitor {
        type Value = u64;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a uint64 as a number or a decimal string")
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<u64, E> {
            Ok(v)
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<u64, E> {
            u64::try_from(v).map_err(E::custom)
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<u64, E> {
            v.parse().map_err(E::custom)
        }
    }
    deserializer.deserialize_any(U64Visitor)
}

fn decode<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, CallError> {
    serde_json::from_slice(body).map_err(|e| {
        let text = String::from_utf8_lossy(&body[..body.len().min(200)]);
        CallError::Decode(format!("{e}: {text}"))
    })
}

fn grant(body: &[u8]) -> Result<Grant, CallError> {
    let parsed: LockBody = decode(body)?;
    Ok(Grant {
        locked: parsed.locked,
        key: parsed.key,
        token: parsed.fencing_token,
        error: parsed.error.map(ErrorBody::into_error),
    })
}

impl LockClient for RestClient {
    async fn try_lock(
        &mut self,
        name: &str,
        lock_timeout: u32,
        size: u32,
    ) -> Result<Grant, CallError> {
        self.begin(name);
        if lock_timeout != 0 {
            self.field("lock_timeout_seconds", lock_timeout);
        }
        if size != 1 {
            self.field("size", size);
        }
        self.buf.put_u8(b'}');
        let result = self.post("/v1/lock").await.and_then(|body| grant(&body));
        self.after(result, Grant::shutting_down).await
    }

    async fn lock(
        &mut self,
        _name: &str,
        _wait_timeout: u32,
        _lock_timeout: u32,
        _size: u32,
    ) -> Result<Grant, CallError> {
        // Plan::from_args refuses every workload that would need this over REST.
        Err(CallError::Decode(
            "REST has no blocking Lock (POST /v1/lock is a TryLock)".to_owned(),
        ))
    }

    async fn unlock(&mut self, name: &str, key: String) -> Result<Unlocked, CallError> {
        self.begin(name);
        self.key_field(&key);
        self.buf.put_u8(b'}');
        let result = self.post("/v1/unlock").await.and_then(|body| {
            let parsed: UnlockBody = decode(&body)?;
            Ok(Unlocked {
                unlocked: parsed.unlocked,
                error: parsed.error.map(ErrorBody::into_error),
            })
        });
        self.after(result, Unlocked::shutting_down).await
    }

    async fn refresh(
        &mut self,
        name: &str,
        key: &str,
        lock_timeout: u32,
    ) -> Result<Grant, CallError> {
        self.begin(name);
        self.key_field(key);
        self.field("lock_timeout_seconds", lock_timeout);
        self.buf.put_u8(b'}');
        let uri = self.refresh_uri;
        let result = self.post(uri).await.and_then(|body| grant(&body));
        self.after(result, Grant::shutting_down).await
    }

    async fn close(mut self) {
        // Ends the session (releasing what it still holds) before the connection closes.
        let _ = tokio::time::timeout(
            CONNECT_TIMEOUT,
            self.send(Method::DELETE, "/session", Bytes::new(), true),
        )
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_protojson_answers() {
        let g = grant(br#"{"locked":true,"name":"a","key":"k","fencingToken":"7"}"#).expect("ok");
        assert!(g.locked);
        assert_eq!((g.key.as_str(), g.token), ("k", 7));
        assert!(g.error.is_none());
        let g = grant(br#"{"locked":false, "name":"a","key":"","error":{"code":"LockSizeMismatch","message":"lock size mismatch"}}"#)
            .expect("ok");
        assert_eq!((g.locked, g.token), (false, 0));
        let e = g.error.expect("error");
        assert_eq!((e.code, e.message.as_str()), (6, "lock size mismatch"));
        let g =
            grant(br#"{"locked":true,"key":"k","fencingToken":9,"error":{"code":2}}"#).expect("ok");
        assert_eq!((g.token, g.error.map(|e| e.code)), (9, Some(2)));
        assert!(grant(b"nope").is_err());
        let u: UnlockBody = decode(br#"{"unlocked":true,"name":"a"}"#).expect("ok");
        assert!(u.unlocked && u.error.is_none());
    }
}
