//! One lock table behind both transports: a lock taken over REST is held for gRPC clients and
//! the other way round, and keys work across transports.

use ldlm_proto::ldlm::{LockRequest, TryLockRequest, UnlockRequest};

use crate::harness::{self, Http};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locks_are_shared_between_rest_and_grpc() {
    let server = harness::start(&harness::config()).await;
    let mut grpc = server.grpc().await;
    let mut rest = Http::connect(server.rest_addr()).await;
    let (status, _) = rest.call("POST", "/session", "").await;
    assert_eq!(status, 201);

    // REST takes it; gRPC sees it held.
    let (status, body) = rest.call("POST", "/v1/lock", r#"{"name": "shared"}"#).await;
    assert_eq!(status, 200);
    assert_eq!(body["locked"], true, "{body}");
    let rest_key = body["key"].as_str().expect("key").to_string();
    let busy = grpc
        .try_lock(TryLockRequest {
            name: "shared".into(),
            ..Default::default()
        })
        .await
        .expect("rpc")
        .into_inner();
    assert!(!busy.locked);

    // gRPC unlocks it with the REST key (the key is the authority), then takes it.
    let unlocked = grpc
        .unlock(UnlockRequest {
            name: "shared".into(),
            key: rest_key,
        })
        .await
        .expect("rpc")
        .into_inner();
    assert!(unlocked.unlocked, "{unlocked:?}");
    let held = grpc
        .lock(LockRequest {
            name: "shared".into(),
            ..Default::default()
        })
        .await
        .expect("rpc")
        .into_inner();
    assert!(held.locked);

    // REST now sees it held.
    let (_, body) = rest.call("POST", "/v1/lock", r#"{"name": "shared"}"#).await;
    assert_eq!(body["locked"], false, "{body}");
    let (_, body) = rest
        .call(
            "POST",
            "/v1/unlock",
            &format!(r#"{{"name": "shared", "key": "{}"}}"#, held.key),
        )
        .await;
    assert_eq!(body["unlocked"], true, "{body}");
    server.running.shutdown().await;
}
