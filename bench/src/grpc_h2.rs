//! The default gRPC driver: unary gRPC calls written straight onto an HTTP/2 connection with
//! the `h2` crate (the HTTP/2 implementation tonic itself runs on), one connection per
//! `--connections`, shared by `--in_flight` worker tasks.
//!
//! ## Why not tonic's client here
//!
//! A load generator that shares two cores with the server it measures must cost as little as
//! possible per call, or it measures itself. A tonic `Channel` sends every call through a
//! `tower::Buffer` task and hyper's client spawns one more task per call to stream the request
//! body: three task hops per call before a byte leaves. Here the worker task encodes the
//! message, opens the stream and writes the whole body in one go (`send_data(.., end_of_stream)`),
//! and then awaits the response on the same task; only the connection task does the socket IO.
//! On the same machine this client costs about half the CPU per call of the tonic one
//! (BENCHMARKS.md). `--grpc_client tonic` still runs the tonic client, e.g. to see what a
//! tonic application would measure.
//!
//! Unlike a tonic `Channel`, a connection that fails (the server closed it or restarted) is not
//! reopened: every later call on it is a `transport` error, which is what a benchmark should
//! report rather than hide.
//!
//! ## Wire format (gRPC over HTTP/2)
//!
//! Request: `POST /ldlm.LDLM/<Method>` with `content-type: application/grpc`, `te: trailers`
//! (and `authorization` when `--password` is set); body = one length-prefixed message
//! (1 byte "compressed" = 0, 4 bytes big-endian length, the protobuf bytes). Response: headers,
//! one length-prefixed message, then trailers carrying `grpc-status` (and `grpc-message`); an
//! error may also come as headers alone ("trailers-only"). Anything else is a `Decode` error.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use bytes::{Buf as _, BufMut as _, Bytes, BytesMut};
use http::header::{CONTENT_TYPE, HeaderValue, TE};
use http::uri::{PathAndQuery, Scheme};
use http::{HeaderMap, Method, Request, Uri};
use ldlm_proto::ldlm::{LockResponse, RefreshLockRequest, UnlockRequest, UnlockResponse};
use prost::Message;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use super::args::{Plan, RefreshRpc};
use super::client::{CallError, Grant, LockClient, Unlocked};
use super::grpc::{error_chain, grant, lock_request, try_lock_request, unlocked};
use super::moving::Opener;
use super::tls;
use ldlm_security::tls::TlsConnector;

/// How long connecting (TCP + TLS + HTTP/2 handshake) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Largest response message accepted (tonic's default limit): a server sending more is broken.
const MAX_RESPONSE_BYTES: usize = 4 * 1024 * 1024;

/// The `:path` of each method (go-ldlm's `ldlm.LDLM` service).
mod path {
    pub(super) const LOCK: &str = "/ldlm.LDLM/Lock";
    pub(super) const TRY_LOCK: &str = "/ldlm.LDLM/TryLock";
    pub(super) const UNLOCK: &str = "/ldlm.LDLM/Unlock";
    pub(super) const REFRESH_LOCK: &str = "/ldlm.LDLM/RefreshLock";
    pub(super) const RENEW: &str = "/ldlm.LDLM/Renew";
}

/// A gRPC client on one HTTP/2 connection; clones share the connection, which closes (ending
/// the server session) when the last clone is dropped.
#[derive(Clone)]
pub(crate) struct H2Client {
    send: h2::client::SendRequest<Bytes>,
    scheme: Scheme,
    authority: http::uri::Authority,
    password: Option<HeaderValue>,
    renew: bool,
}

/// Opens one connection to a given address, with the run's settings (also used to move a
/// connection to another node).
pub(crate) fn opener(plan: &Plan) -> anyhow::Result<Opener<H2Client>> {
    let password = match &plan.password {
        Some(p) => Some(
            HeaderValue::try_from(p.as_str())
                .context("the password cannot be sent as gRPC metadata")?,
        ),
        None => None,
    };
    let scheme = if plan.tls.is_some() {
        Scheme::HTTPS
    } else {
        Scheme::HTTP
    };
    let renew = plan.refresh_rpc == RefreshRpc::Renew;
    let tls = plan.tls.clone();
    Ok(Arc::new(move |address: String| {
        let (password, scheme, tls) = (password.clone(), scheme.clone(), tls.clone());
        Box::pin(async move {
            let authority: http::uri::Authority = address
                .parse()
                .with_context(|| format!("bad --address {address:?}"))?;
            let connector = tls::connector(tls.as_ref(), &address, b"h2")?;
            let connected = tokio::time::timeout(CONNECT_TIMEOUT, open(&address, connector))
                .await
                .unwrap_or_else(|_| {
                    Err(anyhow::anyhow!(
                        "no HTTP/2 connection within {CONNECT_TIMEOUT:?}"
                    ))
                });
            let send =
                connected.with_context(|| format!("cannot connect to {address} over gRPC"))?;
            Ok(H2Client {
                send,
                scheme,
                authority,
                password,
                renew,
            })
        })
    }))
}

/// TCP (+ TLS) + the HTTP/2 handshake; the connection is driven by a task of its own.
async fn open(
    address: &str,
    tls: Option<TlsConnector>,
) -> anyhow::Result<h2::client::SendRequest<Bytes>> {
    match tls {
        Some(connector) => {
            let stream = connector.connect().await.context("TLS handshake")?;
            if stream.get_ref().1.alpn_protocol() != Some(b"h2") {
                anyhow::bail!("the server did not agree to HTTP/2 (ALPN h2): not a gRPC port?");
            }
            handshake(stream).await
        }
        None => {
            let tcp = TcpStream::connect(address).await?;
            tcp.set_nodelay(true)?;
            handshake(tcp).await
        }
    }
}

async fn handshake<T>(io: T) -> anyhow::Result<h2::client::SendRequest<Bytes>>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (send, connection) = h2::client::Builder::new()
        .handshake::<_, Bytes>(io)
        .await
        .map_err(|e| anyhow::anyhow!(error_chain(&e)))
        .context("HTTP/2 handshake")?;
    tokio::spawn(async move {
        // Ends when every clone of `send` is gone (GOAWAY, clean close) or the server closes.
        let _ = connection.await;
    });
    Ok(send)
}

fn transport(error: h2::Error) -> CallError {
    CallError::Transport(error_chain(&error))
}

impl H2Client {
    /// One unary call: `request` to `path`, its response decoded as `R`.
    async fn unary<R: Message + Default>(
        &mut self,
        path: &'static str,
        request: &impl Message,
    ) -> Result<R, CallError> {
        let length = request.encoded_len();
        let mut body = BytesMut::with_capacity(5 + length);
        body.put_u8(0);
        body.put_u32(length as u32);
        request
            .encode(&mut body)
            .map_err(|e| CallError::Decode(e.to_string()))?;

        let uri = Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(PathAndQuery::from_static(path))
            .build()
            .map_err(|e| CallError::Transport(e.to_string()))?;
        let mut head = Request::new(());
        *head.method_mut() = Method::POST;
        *head.uri_mut() = uri;
        let headers = head.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
        headers.insert(TE, HeaderValue::from_static("trailers"));
        if let Some(password) = &self.password {
            headers.insert(http::header::AUTHORIZATION, password.clone());
        }

        std::future::poll_fn(|cx| self.send.poll_ready(cx))
            .await
            .map_err(transport)?;
        let (response, mut stream) = self.send.send_request(head, false).map_err(transport)?;
        stream.send_data(body.freeze(), true).map_err(transport)?;
        let response = response.await.map_err(transport)?;

        let (head, mut body) = response.into_parts();
        // Trailers-only (an error status right in the headers, no message), or not gRPC.
        if head.headers.contains_key("grpc-status") {
            return Err(match status_error(&head.headers) {
                CallError::Grpc(tonic::Code::Ok, _) => {
                    CallError::Decode("status OK without a response message".to_owned())
                }
                other => other,
            });
        }
        if head.status != http::StatusCode::OK {
            return Err(http_status_error(head.status));
        }
        let content_type = head.headers.get(CONTENT_TYPE).map(HeaderValue::as_bytes);
        if !content_type.is_some_and(|t| t.starts_with(b"application/grpc")) {
            return Err(CallError::Decode(format!(
                "not a gRPC response (content-type {:?}): is --address a gRPC port?",
                content_type.map(String::from_utf8_lossy)
            )));
        }
        let mut message = BytesMut::new();
        while let Some(chunk) = body.data().await {
            let chunk = chunk.map_err(transport)?;
            let _ = body.flow_control().release_capacity(chunk.len());
            if message.len() + chunk.len() > MAX_RESPONSE_BYTES + 5 {
                return Err(CallError::Decode("response message too large".to_owned()));
            }
            message.extend_from_slice(&chunk);
        }
        let trailers = body
            .trailers()
            .await
            .map_err(transport)?
            .ok_or_else(|| CallError::Decode("response without trailers".to_owned()))?;
        if trailers.get("grpc-status").map(HeaderValue::as_bytes) != Some(b"0") {
            return Err(status_error(&trailers));
        }
        decode_message(message.freeze())
    }
}

/// The error of a response whose `grpc-status` is not 0 (or missing).
fn status_error(headers: &HeaderMap) -> CallError {
    match tonic::Status::from_header_map(headers) {
        Some(status) => CallError::Grpc(status.code(), status.message().to_owned()),
        None => CallError::Decode("response without grpc-status".to_owned()),
    }
}

/// A non-200 answer without `grpc-status`, mapped as gRPC clients do (the gRPC spec's "HTTP to
/// gRPC status code mapping"), so `--grpc_client h2` and `tonic` report the same errors.
fn http_status_error(status: http::StatusCode) -> CallError {
    let code = match status.as_u16() {
        400 => tonic::Code::Internal,
        401 => tonic::Code::Unauthenticated,
        403 => tonic::Code::PermissionDenied,
        404 => tonic::Code::Unimplemented,
        429 | 502 | 503 | 504 => tonic::Code::Unavailable,
        _ => tonic::Code::Unknown,
    };
    CallError::Grpc(code, format!("HTTP status {status} without a gRPC status"))
}

/// One length-prefixed, uncompressed message making up the whole body.
fn decode_message<R: Message + Default>(mut body: Bytes) -> Result<R, CallError> {
    if body.len() < 5 {
        return Err(CallError::Decode(format!(
            "response body of {} bytes has no message",
            body.len()
        )));
    }
    let compressed = body.get_u8();
    let length = body.get_u32() as usize;
    if compressed != 0 {
        return Err(CallError::Decode(
            "compressed response (none was asked for)".to_owned(),
        ));
    }
    if length != body.len() {
        return Err(CallError::Decode(format!(
            "message length {length} but {} bytes follow",
            body.len()
        )));
    }
    R::decode(body).map_err(|e| CallError::Decode(e.to_string()))
}

impl LockClient for H2Client {
    async fn try_lock(
        &mut self,
        name: &str,
        lock_timeout: u32,
        lock_size: u32,
    ) -> Result<Grant, CallError> {
        let request = try_lock_request(name, lock_timeout, lock_size);
        let response: LockResponse = self.unary(path::TRY_LOCK, &request).await?;
        Ok(grant(response))
    }

    async fn lock(
        &mut self,
        name: &str,
        wait_timeout: u32,
        lock_timeout: u32,
        lock_size: u32,
    ) -> Result<Grant, CallError> {
        let request = lock_request(name, wait_timeout, lock_timeout, lock_size);
        let response: LockResponse = self.unary(path::LOCK, &request).await?;
        Ok(grant(response))
    }

    async fn unlock(&mut self, name: &str, key: String) -> Result<Unlocked, CallError> {
        let request = UnlockRequest {
            name: name.to_owned(),
            key,
        };
        let response: UnlockResponse = self.unary(path::UNLOCK, &request).await?;
        Ok(unlocked(response))
    }

    async fn refresh(
        &mut self,
        name: &str,
        key: &str,
        lock_timeout: u32,
    ) -> Result<Grant, CallError> {
        // RenewRequest and RefreshLockRequest are the same message on the wire: only the
        // method differs.
        let request = RefreshLockRequest {
            name: name.to_owned(),
            key: key.to_owned(),
            lock_timeout_seconds: lock_timeout as i32,
        };
        let method = if self.renew {
            path::RENEW
        } else {
            path::REFRESH_LOCK
        };
        let response: LockResponse = self.unary(method, &request).await?;
        Ok(grant(response))
    }

    async fn close(self) {
        // The connection closes when its last client is dropped.
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(message: &impl Message) -> Bytes {
        let mut body = BytesMut::new();
        body.put_u8(0);
        body.put_u32(message.encoded_len() as u32);
        message.encode(&mut body).unwrap();
        body.freeze()
    }

    #[test]
    fn decodes_one_framed_message() {
        let sent = UnlockResponse {
            unlocked: true,
            name: "a".to_owned(),
            error: None,
        };
        let got: UnlockResponse = decode_message(framed(&sent)).unwrap();
        assert!(got.unlocked);
    }

    #[test]
    fn refuses_bad_framing() {
        let sent = UnlockResponse {
            unlocked: true,
            name: "a".to_owned(),
            error: None,
        };
        let mut long = BytesMut::from(&framed(&sent)[..]);
        long.put_u8(7);
        for body in [
            Bytes::from_static(b""),
            Bytes::from_static(b"\0\0\0"),
            Bytes::from_static(b"\x01\0\0\0\0"),
            long.freeze(),
        ] {
            let result: Result<UnlockResponse, _> = decode_message(body.clone());
            assert!(
                matches!(result, Err(CallError::Decode(_))),
                "{body:?} was accepted"
            );
        }
    }

    #[test]
    fn http_statuses_map_like_grpc_clients() {
        for (status, code) in [
            (401, tonic::Code::Unauthenticated),
            (404, tonic::Code::Unimplemented),
            (503, tonic::Code::Unavailable),
            (500, tonic::Code::Unknown),
        ] {
            let status = http::StatusCode::from_u16(status).unwrap();
            assert!(matches!(http_status_error(status), CallError::Grpc(c, _) if c == code));
        }
    }

    #[test]
    fn status_from_trailers() {
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", HeaderValue::from_static("16"));
        trailers.insert(
            "grpc-message",
            HeaderValue::from_static("invalid%20credentials"),
        );
        match status_error(&trailers) {
            CallError::Grpc(code, message) => {
                assert_eq!(code, tonic::Code::Unauthenticated);
                assert_eq!(message, "invalid credentials");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            status_error(&HeaderMap::new()),
            CallError::Decode(_)
        ));
    }
}
