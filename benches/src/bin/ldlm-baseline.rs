//! `ldlm-baseline`: the floor under `ldlm-server`'s throughput on a given machine.
//!
//! It answers the same wire calls `ldlm-bench` makes, with the same stacks `ldlm-server` uses
//! (tonic's server for gRPC, hyper 1.x for REST, mimalloc, a 2-worker tokio runtime), but does
//! no lock work at all: every TryLock and Lock is "locked" (with a rising fencing token), every
//! Unlock "unlocked", every RefreshLock/Renew "locked". Running `ldlm-bench` against it and
//! against `ldlm-server` in the same session shows how much of the server's cost per call is
//! the lock service and how much is gRPC/HTTP and the kernel (BENCHMARKS.md).
//!
//! **Not a lock server**: it grants everything, so `ldlm-bench`'s checks against it may fail;
//! only the throughput is meaningful.
//!
//! An optional third address serves the same gRPC answers straight from the `h2` crate (no
//! hyper, no tonic, a task per call as hyper has): the floor of HTTP/2 itself, i.e. what a
//! gRPC server below tonic could reach at most.
//!
//! ```sh
//! cargo run --release -p ldlm-benches --bin ldlm-baseline -- 127.0.0.1:3145 127.0.0.1:8085 [127.0.0.1:3146]
//! target/release/ldlm-bench -a 127.0.0.1:3145 -c 16 -d 10s
//! target/release/ldlm-bench -t rest --rest_address 127.0.0.1:8085 -c 16 -d 10s
//! ```

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use ldlm_proto::ldlm::ldlm_server::{Ldlm, LdlmServer};
use ldlm_proto::ldlm::{
    LockRequest, LockResponse, RefreshLockRequest, RenewRequest, TryLockRequest, UnlockRequest,
    UnlockResponse,
};
use tonic::{Request as GrpcRequest, Response as GrpcResponse, Status};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Hands out a fencing token per grant, so clients see what a real server sends.
static TOKENS: AtomicU64 = AtomicU64::new(0);

fn granted(name: String) -> LockResponse {
    LockResponse {
        locked: true,
        name,
        key: "baseline".to_owned(),
        error: None,
        fencing_token: TOKENS.fetch_add(1, Ordering::Relaxed) + 1,
    }
}

/// The `ldlm.LDLM` service with no lock table behind it.
struct GrantAll;

#[tonic::async_trait]
impl Ldlm for GrantAll {
    async fn lock(
        &self,
        request: GrpcRequest<LockRequest>,
    ) -> Result<GrpcResponse<LockResponse>, Status> {
        Ok(GrpcResponse::new(granted(request.into_inner().name)))
    }

    async fn try_lock(
        &self,
        request: GrpcRequest<TryLockRequest>,
    ) -> Result<GrpcResponse<LockResponse>, Status> {
        Ok(GrpcResponse::new(granted(request.into_inner().name)))
    }

    async fn unlock(
        &self,
        request: GrpcRequest<UnlockRequest>,
    ) -> Result<GrpcResponse<UnlockResponse>, Status> {
        let request = request.into_inner();
        Ok(GrpcResponse::new(UnlockResponse {
            unlocked: true,
            name: request.name,
            error: None,
        }))
    }

    async fn refresh_lock(
        &self,
        request: GrpcRequest<RefreshLockRequest>,
    ) -> Result<GrpcResponse<LockResponse>, Status> {
        Ok(GrpcResponse::new(granted(request.into_inner().name)))
    }

    async fn renew(
        &self,
        request: GrpcRequest<RenewRequest>,
    ) -> Result<GrpcResponse<LockResponse>, Status> {
        Ok(GrpcResponse::new(granted(request.into_inner().name)))
    }
}

/// The REST routes `ldlm-bench -t rest` uses, answered without a lock table.
async fn rest(request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let (head, body) = request.into_parts();
    // Read the whole body, as the real server does before answering.
    let _ = body.collect().await;
    let (status, cookie, body) = match (head.method, head.uri.path()) {
        (Method::POST, "/session") => (StatusCode::OK, true, "{}".to_owned()),
        (Method::DELETE, "/session") => (StatusCode::OK, false, "{}".to_owned()),
        (Method::POST, "/v1/lock" | "/v1/refreshlock" | "/v1/renew") => {
            let token = TOKENS.fetch_add(1, Ordering::Relaxed) + 1;
            (
                StatusCode::OK,
                false,
                format!(r#"{{"locked":true,"key":"baseline","fencingToken":"{token}"}}"#),
            )
        }
        (Method::POST, "/v1/unlock") => (StatusCode::OK, false, r#"{"unlocked":true}"#.to_owned()),
        _ => (StatusCode::NOT_FOUND, false, "{}".to_owned()),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    if cookie {
        headers.insert(
            http::header::SET_COOKIE,
            http::HeaderValue::from_static("ldlm-session=baseline; Path=/; HttpOnly"),
        );
    }
    Ok(response)
}

/// The raw-h2 floor: one task per connection accepting streams, one task per call.
async fn serve_h2(listener: tokio::net::TcpListener) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            // Out of descriptors or similar: do not spin a core (it would skew the floor).
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            continue;
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let Ok(mut connection) = h2::server::handshake(stream).await else {
                return;
            };
            while let Some(Ok((request, respond))) = connection.accept().await {
                tokio::spawn(answer_h2(request, respond));
            }
        });
    }
}

/// One unary call over raw h2: read the framed request, answer as [`GrantAll`] would.
async fn answer_h2(request: Request<h2::RecvStream>, mut respond: h2::server::SendResponse<Bytes>) {
    let unlock = request.uri().path() == "/ldlm.LDLM/Unlock";
    let mut body = request.into_body();
    let mut message = bytes::BytesMut::new();
    while let Some(Ok(chunk)) = body.data().await {
        let _ = body.flow_control().release_capacity(chunk.len());
        message.extend_from_slice(&chunk);
    }
    // Every request message has the lock name in field 1, like TryLockRequest.
    let name = message
        .get(5..)
        .and_then(|m| <TryLockRequest as prost::Message>::decode(m).ok())
        .map(|r| r.name)
        .unwrap_or_default();
    let encoded = if unlock {
        prost::Message::encode_to_vec(&UnlockResponse {
            unlocked: true,
            name,
            error: None,
        })
    } else {
        prost::Message::encode_to_vec(&granted(name))
    };
    let mut framed = Vec::with_capacity(5 + encoded.len());
    framed.push(0);
    framed.extend_from_slice(&(encoded.len() as u32).to_be_bytes());
    framed.extend_from_slice(&encoded);
    let mut head = Response::new(());
    head.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/grpc"),
    );
    let Ok(mut send) = respond.send_response(head, false) else {
        return;
    };
    let _ = send.send_data(Bytes::from(framed), false);
    let mut trailers = http::HeaderMap::new();
    trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
    let _ = send.send_trailers(trailers);
}

async fn serve_rest(listener: tokio::net::TcpListener) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            // Out of descriptors or similar: do not spin a core (it would skew the floor).
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            continue;
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(
                    hyper_util::rt::TokioIo::new(stream),
                    hyper::service::service_fn(rest),
                )
                .await;
        });
    }
}

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if !(2..=3).contains(&args.len()) {
        eprintln!(
            "usage: ldlm-baseline GRPC_ADDRESS REST_ADDRESS [RAW_H2_GRPC_ADDRESS]   (e.g. 127.0.0.1:3145 127.0.0.1:8085)"
        );
        return std::process::ExitCode::from(2);
    }
    let Ok(addresses) = args
        .iter()
        .map(|a| a.parse::<SocketAddr>())
        .collect::<Result<Vec<_>, _>>()
    else {
        eprintln!("ldlm-baseline: addresses must be IP:PORT");
        return std::process::ExitCode::from(2);
    };
    let (grpc, rest, raw) = (addresses[0], addresses[1], addresses.get(2).copied());
    // The server's default runtime: one worker per core (2 here).
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async move {
        let rest_listener = match tokio::net::TcpListener::bind(rest).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("ldlm-baseline: cannot listen on {rest}: {e}");
                return std::process::ExitCode::from(1);
            }
        };
        tokio::spawn(serve_rest(rest_listener));
        if let Some(raw) = raw {
            match tokio::net::TcpListener::bind(raw).await {
                Ok(l) => {
                    tokio::spawn(serve_h2(l));
                    eprintln!("ldlm-baseline: raw h2 gRPC on {raw}");
                }
                Err(e) => {
                    eprintln!("ldlm-baseline: cannot listen on {raw}: {e}");
                    return std::process::ExitCode::from(1);
                }
            }
        }
        eprintln!("ldlm-baseline: gRPC on {grpc}, REST on {rest} (grants everything)");
        match tonic::transport::Server::builder()
            .tcp_nodelay(true)
            .add_service(LdlmServer::new(GrantAll))
            .serve(grpc)
            .await
        {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("ldlm-baseline: gRPC server on {grpc}: {e}");
                std::process::ExitCode::from(1)
            }
        }
    })
}
