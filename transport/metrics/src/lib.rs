//! # ldlm-metrics-http
//!
//! The `--metrics_listen_address` endpoint: `GET /metrics` in the Prometheus text format (the
//! registry is `ldlm_service::metrics`; the lock table's gauges are read from the lock service
//! on each scrape), and `GET /healthz` for plain HTTP probes (`503` once shutting down).
//! HTTP/1.1 on raw hyper, connections from the server's shared accept loop.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Request, Response, StatusCode};
use ldlm_listener::{Acceptor, ListenerOptions};
use ldlm_service::LockService;
use ldlm_service::metrics::{self, ClusterGauges, Gauges};
use tokio::net::TcpListener;
use tracing::debug;

/// Most metrics connections open at once (scrapers and probes are few).
const MAX_CONNECTIONS: usize = 64;

/// Serves metrics about `service` until `shutdown` resolves.
pub async fn serve<S: LockService>(
    listener: TcpListener,
    service: Arc<S>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let options = ListenerOptions {
        name: "metrics",
        tls: None,
        max_connections: MAX_CONNECTIONS,
    };
    let mut acceptor = Acceptor::new(listener, options, shutdown);
    while let Some(accepted) = acceptor.next().await {
        let service = service.clone();
        tokio::spawn(async move {
            let handler =
                hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
                    let reply = answer(&request, &*service);
                    async move { Ok::<_, Infallible>(reply) }
                });
            let io = hyper_util::rt::TokioIo::new(accepted.stream);
            if let Err(error) = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, handler)
                .await
            {
                debug!(%error, "metrics connection ended");
            }
            drop(accepted.slot);
        });
    }
}

fn answer<B, S: LockService>(request: &Request<B>, service: &S) -> Response<Full<Bytes>> {
    let respond = |status: StatusCode, content_type: &str, body: String| {
        Response::builder()
            .status(status)
            .header("content-type", content_type)
            .body(Full::new(Bytes::from(body)))
            .unwrap_or_default()
    };
    match (request.method(), request.uri().path()) {
        (&Method::GET, "/metrics") => {
            // O(1) per engine shard: the engine keeps its hold and waiter counts as they change.
            let stats = service.stats();
            let cluster = service.cluster_status().map(|status| {
                let role = status
                    .members
                    .iter()
                    .find(|m| m.id == status.node_id)
                    .map_or("learner", |m| m.role.as_str());
                ClusterGauges {
                    role,
                    term: status.term,
                    commit_index: status.commit_index.unwrap_or(0),
                    applied_index: status.applied_index.unwrap_or(0),
                }
            });
            let gauges = Gauges {
                locks: stats.locks,
                held: stats.holds,
                waiters: stats.waiters,
                rest_sessions: stats.sessions,
                cluster,
            };
            respond(
                StatusCode::OK,
                "text/plain; version=0.0.4; charset=utf-8",
                metrics::render(gauges),
            )
        }
        (&Method::GET, "/healthz") => {
            if service.is_shut_down() {
                respond(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain",
                    "shutting down\n".into(),
                )
            } else {
                respond(StatusCode::OK, "text/plain", "ok\n".into())
            }
        }
        (_, "/metrics" | "/healthz") => respond(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "use GET\n".into(),
        ),
        _ => respond(
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found: try /metrics\n".into(),
        ),
    }
}
