//! Lock GC and limits through the real server: an idle unheld lock is collected so a new size
//! is accepted; the waiter limit is a clear error.

use std::time::Duration;

use ldlm_proto::ldlm::{ErrorCode, LockRequest, TryLockRequest, UnlockRequest};

use crate::harness;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_locks_are_collected_so_a_new_size_is_accepted() {
    let mut config = harness::config();
    config.lock_gc_interval = Duration::from_millis(200);
    config.lock_gc_min_idle = Duration::from_millis(500);
    let server = harness::start(&config).await;
    let mut client = server.grpc().await;
    let sized = |size| TryLockRequest {
        name: "gc".into(),
        size: Some(size),
        ..Default::default()
    };
    let held = client.try_lock(sized(2)).await.expect("rpc").into_inner();
    assert!(held.locked);
    client
        .unlock(UnlockRequest {
            name: "gc".into(),
            key: held.key,
        })
        .await
        .expect("rpc");
    // Just used: not idle long enough to be collected, so the old size still rules.
    let mismatch = client.try_lock(sized(3)).await.expect("rpc").into_inner();
    assert!(!mismatch.locked);
    assert_eq!(
        mismatch.error.expect("error").code,
        ErrorCode::LockSizeMismatch as i32
    );
    // Left alone past the minimum idle time (and a GC pass or more), it is gone.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let accepted = client.try_lock(sized(3)).await.expect("rpc").into_inner();
    assert!(
        accepted.locked,
        "the idle lock was not collected: {accepted:?}"
    );
    server.running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_waiter_limit_is_a_clear_error() {
    let mut config = harness::config();
    config.max_waiters_per_lock = 1;
    let server = harness::start(&config).await;
    let mut holder = server.grpc().await;
    let lock = || LockRequest {
        name: "crowded".into(),
        ..Default::default()
    };
    assert!(holder.lock(lock()).await.expect("rpc").into_inner().locked);
    let mut waiter = server.grpc().await;
    let waiting = tokio::spawn(async move { waiter.lock(lock()).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut third = server.grpc().await;
    let refused = third.lock(lock()).await.expect("rpc").into_inner();
    assert!(!refused.locked);
    let error = refused.error.expect("error");
    assert!(error.message.contains("limit 1"), "{error:?}");
    waiting.abort();
    server.running.shutdown().await;
}
