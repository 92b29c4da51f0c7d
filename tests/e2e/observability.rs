//! Observability: `/metrics` in Prometheus text format moves with traffic; the standard gRPC
//! health service answers (without the password); reflection lists `ldlm.LDLM`.

use ldlm_proto::ldlm::TryLockRequest;
use tonic::transport::Channel;

use crate::harness::{self, Http};

fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| {
            line.strip_prefix(series)
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or_else(|| panic!("no sample {series} in:\n{text}"))
}

async fn scrape(addr: std::net::SocketAddr) -> String {
    let mut http = Http::connect(addr).await;
    let (status, body) = http.call_raw("GET", "/metrics", "").await;
    assert_eq!(status, 200);
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_move_with_traffic() {
    let mut config = harness::config();
    config.metrics_listen_address = Some("127.0.0.1:0".into());
    let server = harness::start(&config).await;
    let metrics_addr = server.running.metrics_addr.expect("metrics enabled");
    let grpc_ok = "ldlm_requests_total{transport=\"grpc\",rpc=\"TryLock\",result=\"ok\"} ";
    let rest_busy = "ldlm_requests_total{transport=\"rest\",rpc=\"TryLock\",result=\"busy\"} ";
    let before = scrape(metrics_addr).await;

    let mut grpc = server.grpc().await;
    let held = grpc
        .try_lock(TryLockRequest {
            name: "observed".into(),
            ..Default::default()
        })
        .await
        .expect("rpc")
        .into_inner();
    assert!(held.locked);
    let mut rest = Http::connect(server.rest_addr()).await;
    rest.call("POST", "/session", "").await;
    rest.call("POST", "/v1/lock", r#"{"name": "observed"}"#)
        .await;

    let after = scrape(metrics_addr).await;
    assert!(sample(&after, grpc_ok) >= sample(&before, grpc_ok) + 1.0);
    assert!(sample(&after, rest_busy) >= sample(&before, rest_busy) + 1.0);
    assert_eq!(sample(&after, "ldlm_held_locks "), 1.0);
    assert_eq!(sample(&after, "ldlm_rest_sessions "), 1.0);
    assert!(after.contains("# TYPE ldlm_request_duration_seconds histogram"));
    server.running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_reflection_answer_without_the_password() {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    let mut config = harness::config();
    config.password = Some("secret".into());
    let server = harness::start(&config).await;
    let channel = Channel::from_shared(format!("http://{}", server.grpc_addr()))
        .expect("uri")
        .connect()
        .await
        .expect("connects");

    let mut health = HealthClient::new(channel.clone());
    for service in ["", "ldlm.LDLM"] {
        let status = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .expect("health answers without credentials")
            .into_inner()
            .status;
        assert_eq!(status, ServingStatus::Serving as i32, "service {service:?}");
    }

    let mut reflection = ServerReflectionClient::new(channel.clone());
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = reflection
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .expect("reflection answers")
        .into_inner();
    let response = responses
        .message()
        .await
        .expect("stream")
        .expect("one response");
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("unexpected reflection response: {response:?}");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    assert!(names.iter().any(|n| n == "ldlm.LDLM"), "{names:?}");

    // The lock service itself still requires the password.
    let mut ldlm = ldlm_proto::ldlm::ldlm_client::LdlmClient::new(channel);
    let refused = ldlm
        .try_lock(TryLockRequest {
            name: "x".into(),
            ..Default::default()
        })
        .await
        .expect_err("no credentials");
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);
    server.running.shutdown().await;
}
