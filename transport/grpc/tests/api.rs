//! The RPCs' semantics and response fields over a real gRPC connection.

mod common;

use std::time::{Duration, Instant};

use common::*;
use ldlm_proto::ldlm::{ErrorCode, LockRequest, TryLockRequest};

const SLACK: Duration = Duration::from_secs(3);

#[tokio::test]
async fn lock_then_unlock() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    let r = lock(&mut c, lock_req("a")).await;
    assert_locked(&r, "a");
    assert_eq!(server.engine.list().len(), 1);
    let u = unlock(&mut c, "a", &r.key).await;
    assert!(u.unlocked && u.error.is_none(), "{u:?}");
    assert_eq!(u.name, "a");
    assert!(server.engine.list().is_empty());

    let t = try_lock(&mut c, try_req("a")).await;
    assert_locked(&t, "a");
    assert!(t.fencing_token > r.fencing_token);
    assert_ne!(t.key, r.key);
}

#[tokio::test]
async fn try_lock_busy_has_no_key_and_no_error() {
    let server = TestServer::start().await;
    let mut a = server.client().await;
    let mut b = server.client().await;
    assert_locked(&try_lock(&mut a, try_req("busy")).await, "busy");
    let r = try_lock(&mut b, try_req("busy")).await;
    assert!(!r.locked, "{r:?}");
    assert_eq!(r.name, "busy");
    assert_eq!(r.key, "");
    assert!(r.error.is_none());
    assert_eq!(r.fencing_token, 0);
    // Also from the holder's own connection.
    let r = try_lock(&mut a, try_req("busy")).await;
    assert!(!r.locked && r.error.is_none() && r.key.is_empty(), "{r:?}");
}

#[tokio::test]
async fn unlock_errors() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    let held = lock(&mut c, lock_req("k")).await;
    assert_locked(&held, "k");

    let wrong = uuid_like();
    let u = unlock(&mut c, "k", &wrong).await;
    assert_unlock_error(&u, "k", ErrorCode::InvalidLockKey, "invalid lock key");
    let u = unlock(&mut c, "k", "not a key").await;
    assert_unlock_error(&u, "k", ErrorCode::InvalidLockKey, "invalid lock key");

    let u = unlock(&mut c, "nope", &held.key).await;
    assert_unlock_error(
        &u,
        "nope",
        ErrorCode::LockDoesNotExist,
        "a lock by that name does not exist",
    );
    let u = unlock(&mut c, "", &held.key).await;
    assert_unlock_error(
        &u,
        "",
        ErrorCode::LockDoesNotExist,
        "a lock by that name does not exist",
    );

    // Double unlock: the second one finds the key gone.
    assert!(unlock(&mut c, "k", &held.key).await.unlocked);
    let u = unlock(&mut c, "k", &held.key).await;
    assert_unlock_error(&u, "k", ErrorCode::InvalidLockKey, "invalid lock key");
}

fn uuid_like() -> String {
    "00000000-0000-4000-8000-000000000000".to_owned()
}

#[tokio::test]
async fn keys_work_from_any_connection() {
    let server = TestServer::start().await;
    let mut a = server.client().await;
    let mut b = server.client().await;
    let held = lock(&mut a, lock_req("bearer")).await;
    let r = renew(&mut b, "bearer", &held.key, 5).await;
    assert!(r.locked, "{r:?}");
    assert!(unlock(&mut b, "bearer", &held.key).await.unlocked);
}

#[tokio::test]
async fn semaphore_sizes() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    let sized = |size: Option<i32>| TryLockRequest {
        name: "sem".into(),
        size,
        ..TryLockRequest::default()
    };
    let mut keys = Vec::new();
    for _ in 0..3 {
        let r = try_lock(&mut c, sized(Some(3))).await;
        assert_locked(&r, "sem");
        keys.push(r.key);
    }
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), 3, "distinct keys");
    let r = try_lock(&mut c, sized(Some(3))).await;
    assert!(!r.locked && r.error.is_none() && r.key.is_empty(), "{r:?}");

    let r = try_lock(&mut c, sized(Some(2))).await;
    assert_lock_error(&r, "sem", ErrorCode::LockSizeMismatch, "lock size mismatch");
    let r = try_lock(&mut c, sized(None)).await;
    assert_lock_error(&r, "sem", ErrorCode::LockSizeMismatch, "lock size mismatch");
    let r = lock(
        &mut c,
        LockRequest {
            name: "sem".into(),
            size: Some(4),
            ..LockRequest::default()
        },
    )
    .await;
    assert_lock_error(&r, "sem", ErrorCode::LockSizeMismatch, "lock size mismatch");

    for size in [0, -1] {
        let r = try_lock(&mut c, sized(Some(size))).await;
        assert_lock_error(
            &r,
            "sem",
            ErrorCode::InvalidLockSize,
            "lock size must be greater than 0",
        );
        let r = lock(
            &mut c,
            LockRequest {
                name: "other".into(),
                size: Some(size),
                ..LockRequest::default()
            },
        )
        .await;
        assert_lock_error(
            &r,
            "other",
            ErrorCode::InvalidLockSize,
            "lock size must be greater than 0",
        );
    }
}

#[tokio::test]
async fn wait_timeout() {
    let server = TestServer::start().await;
    let mut a = server.client().await;
    let mut b = server.client().await;
    assert_locked(&lock(&mut a, lock_req("w")).await, "w");
    let start = Instant::now();
    let r = within(
        SLACK,
        "wait timeout",
        lock(
            &mut b,
            LockRequest {
                name: "w".into(),
                wait_timeout_seconds: Some(1),
                ..LockRequest::default()
            },
        ),
    )
    .await;
    let waited = start.elapsed();
    assert_lock_error(
        &r,
        "w",
        ErrorCode::LockWaitTimeout,
        "timeout waiting to acquire lock",
    );
    assert!(waited >= Duration::from_millis(950), "{waited:?}");
    assert_eq!(server.engine.stats().waiters, 0);
}

#[tokio::test]
async fn lease_expires() {
    let server = TestServer::start().await;
    let mut a = server.client().await;
    let r = try_lock(
        &mut a,
        TryLockRequest {
            name: "lease".into(),
            lock_timeout_seconds: Some(1),
            ..TryLockRequest::default()
        },
    )
    .await;
    assert_locked(&r, "lease");
    let start = Instant::now();
    let engine = server.engine.clone();
    eventually(SLACK, "lease expiry", || engine.list().is_empty()).await;
    assert!(
        start.elapsed() >= Duration::from_millis(900),
        "{:?}",
        start.elapsed()
    );
    let u = unlock(&mut a, "lease", &r.key).await;
    assert_unlock_error(&u, "lease", ErrorCode::InvalidLockKey, "invalid lock key");
    let f = renew(&mut a, "lease", &r.key, 1).await;
    assert!(!f.locked);
    assert_eq!(f.key, r.key);
    assert_eq!(
        f.error.expect("error").code,
        ErrorCode::LockDoesNotExistOrInvalidKey as i32
    );
    assert_locked(&try_lock(&mut a, try_req("lease")).await, "lease");
}

#[tokio::test]
async fn refresh_keeps_a_lease_alive_under_both_rpc_names() {
    let server = TestServer::start().await;
    let mut a = server.client().await;
    let mut b = server.client().await;
    let held = lock(
        &mut a,
        LockRequest {
            name: "r".into(),
            lock_timeout_seconds: Some(1),
            ..LockRequest::default()
        },
    )
    .await;
    assert_locked(&held, "r");

    tokio::time::sleep(Duration::from_millis(600)).await;
    let r = refresh_lock(&mut a, "r", &held.key, 1).await;
    assert!(r.locked && r.error.is_none(), "{r:?}");
    assert_eq!((r.name.as_str(), r.key.as_str()), ("r", held.key.as_str()));
    assert_eq!(r.fencing_token, held.fencing_token);

    tokio::time::sleep(Duration::from_millis(600)).await;
    // Past the first deadline (1.0 s): still held.
    assert!(!try_lock(&mut b, try_req("r")).await.locked);
    let r = renew(&mut a, "r", &held.key, 1).await;
    assert!(r.locked && r.error.is_none(), "{r:?}");
    assert_eq!(r.key, held.key);
    assert_eq!(r.fencing_token, held.fencing_token);

    tokio::time::sleep(Duration::from_millis(600)).await;
    // Past the second deadline (1.6 s): still held.
    assert!(!try_lock(&mut b, try_req("r")).await.locked);
    assert_eq!(server.engine.list().len(), 1);

    let engine = server.engine.clone();
    eventually(SLACK, "expiry after the last renew", || {
        engine.list().is_empty()
    })
    .await;
}

#[tokio::test]
async fn refresh_errors() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    let held = lock(&mut c, lock_req("f")).await;
    for rpc in ["refresh_lock", "renew"] {
        let call = |name: &'static str, key: String, secs: i32| {
            let mut c = c.clone();
            async move {
                if rpc == "renew" {
                    renew(&mut c, name, &key, secs).await
                } else {
                    refresh_lock(&mut c, name, &key, secs).await
                }
            }
        };
        for (name, key) in [
            ("f", uuid_like()),
            ("nope", held.key.clone()),
            ("", String::new()),
        ] {
            let r = call(name, key.clone(), 5).await;
            assert!(!r.locked, "{rpc}: {r:?}");
            assert_eq!(r.name, name);
            assert_eq!(r.key, key, "{rpc}: key echoed");
            assert_eq!(r.fencing_token, 0);
            let e = r.error.expect("error");
            assert_eq!(
                e.code,
                ErrorCode::LockDoesNotExistOrInvalidKey as i32,
                "{rpc}"
            );
            assert_eq!(e.message, "lock does not exist or invalid key");
        }
        for secs in [0, -1] {
            let r = call("f", held.key.clone(), secs).await;
            assert!(!r.locked, "{rpc}: {r:?}");
            assert_eq!(r.key, "", "{rpc}: no key when the timeout is invalid");
            let e = r.error.expect("error");
            assert_eq!(e.code, ErrorCode::Unknown as i32);
            assert_eq!(e.message, "lock timeout must be greater than 0");
        }
        // A hold without a lease gets one (go-ldlm refuses with an error).
        let r = call("f", held.key.clone(), 30).await;
        assert!(r.locked && r.error.is_none(), "{rpc}: {r:?}");
    }
}

#[tokio::test]
async fn blocking_lock_is_woken_by_unlock() {
    let server = TestServer::start().await;
    let mut a = server.client().await;
    let mut b = server.client().await;
    let held = lock(&mut a, lock_req("wake")).await;
    let waiter = tokio::spawn(async move { lock(&mut b, lock_req("wake")).await });
    let engine = server.engine.clone();
    eventually(SLACK, "b queued", || engine.stats().waiters == 1).await;
    assert!(!waiter.is_finished());
    assert!(unlock(&mut a, "wake", &held.key).await.unlocked);
    let r = within(SLACK, "b granted", waiter).await.expect("task");
    assert_locked(&r, "wake");
    assert!(r.fencing_token > held.fencing_token);
}

#[tokio::test]
async fn waiters_are_served_fifo() {
    let server = TestServer::start().await;
    let mut holder = server.client().await;
    let held = lock(&mut holder, lock_req("fifo")).await;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let engine = server.engine.clone();
    for i in 0..4 {
        let mut c = server.client().await;
        let tx = tx.clone();
        tokio::spawn(async move {
            let r = lock(&mut c, lock_req("fifo")).await;
            assert!(r.locked, "{r:?}");
            tx.send(i).expect("send");
            tokio::time::sleep(Duration::from_millis(20)).await;
            assert!(unlock(&mut c, "fifo", &r.key).await.unlocked);
        });
        eventually(SLACK, "waiter queued", || engine.stats().waiters == i + 1).await;
    }
    assert!(unlock(&mut holder, "fifo", &held.key).await.unlocked);
    let mut order = Vec::new();
    for _ in 0..4 {
        order.push(
            within(SLACK, "next waiter", rx.recv())
                .await
                .expect("sender alive"),
        );
    }
    assert_eq!(order, [0, 1, 2, 3]);
}

#[tokio::test]
async fn fencing_tokens_strictly_increase() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    let mut last = 0;
    for i in 0..20 {
        let name = if i % 3 == 0 { "t1" } else { "t2" };
        let r = lock(&mut c, lock_req(name)).await;
        assert_locked(&r, name);
        assert!(r.fencing_token > last, "{} after {last}", r.fencing_token);
        last = r.fencing_token;
        assert!(unlock(&mut c, name, &r.key).await.unlocked);
    }
}

#[tokio::test]
async fn validation_errors() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    let r = lock(&mut c, lock_req("")).await;
    assert_lock_error(&r, "", ErrorCode::Unknown, "lock name cannot be empty");
    let r = try_lock(&mut c, try_req("")).await;
    assert_lock_error(&r, "", ErrorCode::Unknown, "lock name cannot be empty");

    let r = lock(
        &mut c,
        LockRequest {
            name: "n".into(),
            lock_timeout_seconds: Some(-1),
            ..LockRequest::default()
        },
    )
    .await;
    assert_lock_error(
        &r,
        "n",
        ErrorCode::Unknown,
        "lock timeout must be greater than 0",
    );
    let r = lock(
        &mut c,
        LockRequest {
            name: "n".into(),
            wait_timeout_seconds: Some(-5),
            ..LockRequest::default()
        },
    )
    .await;
    assert_lock_error(
        &r,
        "n",
        ErrorCode::Unknown,
        "wait timeout must be greater than 0",
    );
    let r = try_lock(
        &mut c,
        TryLockRequest {
            name: "n".into(),
            lock_timeout_seconds: Some(i32::MIN),
            ..TryLockRequest::default()
        },
    )
    .await;
    assert_lock_error(
        &r,
        "n",
        ErrorCode::Unknown,
        "lock timeout must be greater than 0",
    );
    assert!(server.engine.list().is_empty());

    // Zero timeouts mean "none"; the maximum is accepted.
    let r = lock(
        &mut c,
        LockRequest {
            name: "n".into(),
            lock_timeout_seconds: Some(0),
            wait_timeout_seconds: Some(0),
            ..LockRequest::default()
        },
    )
    .await;
    assert_locked(&r, "n");
    let r = try_lock(
        &mut c,
        TryLockRequest {
            name: "m".into(),
            lock_timeout_seconds: Some(i32::MAX),
            ..TryLockRequest::default()
        },
    )
    .await;
    assert_locked(&r, "m");
}

#[tokio::test]
async fn name_length_limit() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    let limit = server.engine.config().max_name_bytes;
    let at_limit = "é".repeat(limit / 2);
    assert_eq!(at_limit.len(), limit);
    let r = lock(&mut c, lock_req(&at_limit)).await;
    assert_locked(&r, &at_limit);
    assert!(unlock(&mut c, &at_limit, &r.key).await.unlocked);

    let over = "x".repeat(limit + 1);
    let message = format!("lock name is too long: the limit is {limit} bytes");
    let r = lock(&mut c, lock_req(&over)).await;
    assert_lock_error(&r, &over, ErrorCode::Unknown, &message);
    let r = try_lock(&mut c, try_req(&over)).await;
    assert_lock_error(&r, &over, ErrorCode::Unknown, &message);
    let huge = "y".repeat(1024 * 1024);
    let r = try_lock(&mut c, try_req(&huge)).await;
    assert_lock_error(&r, &huge, ErrorCode::Unknown, &message);
    assert!(server.engine.list().is_empty());
}

#[tokio::test]
async fn unicode_names_are_byte_exact() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    for name in ["Straße", "STRASSE", "strasse", "🔒 lock", "a\u{0}b"] {
        assert_locked(&try_lock(&mut c, try_req(name)).await, name);
    }
    assert_eq!(server.engine.list().len(), 5);
}

/// With a state file, "locked" is answered only once the grant is on disk.
#[tokio::test]
async fn grants_are_durable_before_the_reply() {
    use ldlm_state_file::{StateFile, load::load};
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("state");
    let (state, _) = StateFile::open(&path).expect("open");
    let server = TestServer::with_state_file(&state).await;
    let mut a = server.client().await;
    let mut b = server.client().await;
    let on_disk = |key: &str| {
        load(&path)
            .expect("load")
            .holds()
            .iter()
            .any(|h| h.key.to_string() == key)
    };
    let t = try_lock(&mut a, try_req("d")).await;
    assert_locked(&t, "d");
    assert!(on_disk(&t.key), "TryLock grant on disk before the reply");
    let waiter = tokio::spawn(async move { lock(&mut b, lock_req("d")).await });
    let engine = server.engine.clone();
    eventually(SLACK, "b queued", || engine.stats().waiters == 1).await;
    assert!(unlock(&mut a, "d", &t.key).await.unlocked);
    let l = within(SLACK, "hand-off", waiter).await.expect("task");
    assert_locked(&l, "d");
    assert!(on_disk(&l.key), "hand-off grant on disk before the reply");
}

/// A grant whose record never reaches the disk is given back when the call ends (here: its
/// deadline passes while it waits for the writer, which was stopped).
#[tokio::test]
async fn a_grant_that_is_not_durable_is_given_back() {
    use ldlm_state_file::StateFile;
    let dir = tempfile::tempdir().expect("tempdir");
    let (state, _) = StateFile::open(&dir.path().join("state")).expect("open");
    let server = TestServer::with_state_file(&state).await;
    let mut c = server.client().await;
    assert_locked(&try_lock(&mut c, try_req("before")).await, "before");
    state.close();
    let mut request = tonic::Request::new(try_req("nd"));
    request.set_timeout(Duration::from_millis(300));
    let status = within(SLACK, "deadline", c.try_lock(request))
        .await
        .expect_err("never durable");
    assert!(
        matches!(
            status.code(),
            tonic::Code::DeadlineExceeded | tonic::Code::Cancelled
        ),
        "{status:?}"
    );
    let engine = server.engine.clone();
    eventually(SLACK, "slot given back", || {
        engine.list().iter().all(|h| &*h.name != "nd")
    })
    .await;
}
