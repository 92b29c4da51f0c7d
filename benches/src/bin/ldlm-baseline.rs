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
//! ```sh
//! cargo run --release -p ldlm-benches --bin ldlm-baseline -- 127.0.0.1:3145 127.0.0.1:8085
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

async fn serve_rest(listener: tokio::net::TcpListener) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
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
    let mut args = std::env::args().skip(1);
    let (Some(grpc), Some(rest)) = (args.next(), args.next()) else {
        eprintln!(
            "usage: ldlm-baseline GRPC_ADDRESS REST_ADDRESS   (e.g. 127.0.0.1:3145 127.0.0.1:8085)"
        );
        return std::process::ExitCode::from(2);
    };
    let (grpc, rest): (SocketAddr, SocketAddr) = match (grpc.parse(), rest.parse()) {
        (Ok(g), Ok(r)) => (g, r),
        _ => {
            eprintln!("ldlm-baseline: addresses must be IP:PORT");
            return std::process::ExitCode::from(2);
        }
    };
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
