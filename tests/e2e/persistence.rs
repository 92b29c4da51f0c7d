//! The state file across a graceful restart: held locks come back (go-ldlm's B2
//! fixed) with the default lease, old keys still unlock them, and fencing tokens keep growing.

use std::time::Duration;

use ldlm_proto::ldlm::{LockRequest, TryLockRequest, UnlockRequest};

use crate::harness;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_locks_survive_a_graceful_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = harness::config();
    config.state_file = Some(dir.path().join("ldlm.state"));
    config.default_lock_timeout = Duration::from_secs(1);

    let server = harness::start(&config).await;
    let mut client = server.grpc().await;
    let kept = client
        .lock(LockRequest {
            name: "kept".into(),
            ..Default::default()
        })
        .await
        .expect("rpc")
        .into_inner();
    assert!(kept.locked);
    let released = client
        .lock(LockRequest {
            name: "released".into(),
            ..Default::default()
        })
        .await
        .expect("rpc")
        .into_inner();
    client
        .unlock(UnlockRequest {
            name: "released".into(),
            key: released.key.clone(),
        })
        .await
        .expect("rpc");
    // The client is still connected at shutdown: its lock must survive anyway.
    server.running.shutdown().await;
    drop(client);

    let server = harness::start(&config).await;
    let mut client = server.grpc().await;
    let busy = client
        .try_lock(TryLockRequest {
            name: "kept".into(),
            ..Default::default()
        })
        .await
        .expect("rpc")
        .into_inner();
    assert!(!busy.locked, "the lock came back");
    let free = client
        .try_lock(TryLockRequest {
            name: "released".into(),
            ..Default::default()
        })
        .await
        .expect("rpc")
        .into_inner();
    assert!(free.locked, "an unlocked lock did not come back");
    assert!(
        free.fencing_token > released.fencing_token,
        "tokens never go backwards"
    );

    // It came back with the 1 s default lease: it expires on its own.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(4);
    loop {
        let attempt = client
            .try_lock(TryLockRequest {
                name: "kept".into(),
                ..Default::default()
            })
            .await
            .expect("rpc")
            .into_inner();
        if attempt.locked {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the restored lease never expired"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    server.running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_key_unlocks_a_restored_lock() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = harness::config();
    config.state_file = Some(dir.path().join("ldlm.state"));
    let server = harness::start(&config).await;
    let mut client = server.grpc().await;
    let held = client
        .lock(LockRequest {
            name: "old-key".into(),
            ..Default::default()
        })
        .await
        .expect("rpc")
        .into_inner();
    server.running.shutdown().await;
    drop(client);

    let server = harness::start(&config).await;
    let mut client = server.grpc().await;
    let unlocked = client
        .unlock(UnlockRequest {
            name: "old-key".into(),
            key: held.key,
        })
        .await
        .expect("rpc")
        .into_inner();
    assert!(unlocked.unlocked, "{unlocked:?}");
    server.running.shutdown().await;
}

/// A lock taken over REST survives a graceful restart too (go-ldlm kept only those; we keep all).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_locks_survive_a_graceful_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = harness::config();
    config.state_file = Some(dir.path().join("ldlm.state"));
    let server = harness::start(&config).await;
    let mut rest = harness::Http::connect(server.rest_addr()).await;
    rest.call("POST", "/session", "").await;
    let (_, body) = rest
        .call("POST", "/v1/lock", r#"{"name": "rest-kept"}"#)
        .await;
    assert_eq!(body["locked"], true, "{body}");
    let key = body["key"].as_str().expect("key").to_string();
    server.running.shutdown().await;

    let server = harness::start(&config).await;
    let mut client = server.grpc().await;
    let busy = client
        .try_lock(TryLockRequest {
            name: "rest-kept".into(),
            ..Default::default()
        })
        .await
        .expect("rpc")
        .into_inner();
    assert!(!busy.locked, "the REST lock came back");
    let unlocked = client
        .unlock(UnlockRequest {
            name: "rest-kept".into(),
            key,
        })
        .await
        .expect("rpc")
        .into_inner();
    assert!(unlocked.unlocked);
    server.running.shutdown().await;
}
