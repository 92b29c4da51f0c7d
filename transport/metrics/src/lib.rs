//! The `--metrics_listen_address` endpoint: `GET /metrics` in the Prometheus text format
//! (see `ldlm_service::metrics`), `GET /healthz` for plain HTTP probes. HTTP/1.1 on raw hyper.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Request, Response, StatusCode};
use ldlm_engine::Engine;
use ldlm_service::metrics::{self, Gauges};
use tokio::net::TcpListener;
use tracing::debug;

/// Serves metrics until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    engine: Engine,
    rest: Option<Arc<ldlm_rest::RestServer>>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => return,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(error) => {
                // Out of descriptors or similar: back off instead of spinning a core.
                tracing::warn!(%error, "accepting metrics connections failed; retrying shortly");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let (engine, rest) = (engine.clone(), rest.clone());
        tokio::spawn(async move {
            let service =
                hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
                    let reply = answer(&request, &engine, rest.as_deref());
                    async move { Ok::<_, Infallible>(reply) }
                });
            let io = hyper_util::rt::TokioIo::new(stream);
            if let Err(error) = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, service)
                .await
            {
                debug!(%error, "metrics connection ended");
            }
        });
    }
}

fn answer<B>(
    request: &Request<B>,
    engine: &Engine,
    rest: Option<&ldlm_rest::RestServer>,
) -> Response<Full<Bytes>> {
    let respond = |status: StatusCode, content_type: &str, body: String| {
        Response::builder()
            .status(status)
            .header("content-type", content_type)
            .body(Full::new(Bytes::from(body)))
            .unwrap_or_default()
    };
    match (request.method(), request.uri().path()) {
        (&Method::GET, "/metrics") => {
            // O(1) per shard: the engine keeps its hold and waiter counts as they change.
            let stats = engine.stats();
            let gauges = Gauges {
                locks: stats.locks,
                held: stats.holds,
                waiters: stats.waiters,
                rest_sessions: rest.map_or(0, |r| r.session_count()),
            };
            respond(
                StatusCode::OK,
                "text/plain; version=0.0.4; charset=utf-8",
                metrics::render(gauges),
            )
        }
        (&Method::GET, "/healthz") => {
            if engine.is_shut_down() {
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
