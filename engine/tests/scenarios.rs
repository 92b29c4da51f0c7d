//! go-ldlm's own test scenarios (its packages `lock/`, `lock/manager`, `server/`) that belong
//! to the engine, replayed on virtual time. Each test names the upstream test it mirrors.

use std::time::Duration;

use ldlm_engine::{
    Engine, EngineConfig, ErrorCode, Grant, LockError, LockKey, LockOutcome, LockRequest, Owner,
    OwnerId, Pending, Tick, TryLockOutcome,
};

fn engine() -> Engine {
    Engine::new(EngineConfig::default(), Tick::ZERO).expect("default config is valid")
}

fn at(secs: u64) -> Tick {
    Tick::from_millis(secs * 1000)
}

fn req(name: &str) -> LockRequest<'_> {
    LockRequest {
        name,
        ..LockRequest::default()
    }
}

fn acquire(engine: &Engine, owner: &Owner, request: &LockRequest<'_>, now: Tick) -> Grant {
    match engine.try_lock(owner, request, now) {
        Ok(TryLockOutcome::Acquired(grant)) => grant,
        other => panic!("expected to acquire {}: {other:?}", request.name),
    }
}

fn queue(engine: &Engine, owner: &Owner, request: &LockRequest<'_>, now: Tick) -> Pending {
    match engine.lock(owner, request, now) {
        Ok(LockOutcome::Waiting(pending)) => pending,
        other => panic!("expected to wait for {}: {other:?}", request.name),
    }
}

fn busy(engine: &Engine, owner: &Owner, request: &LockRequest<'_>, now: Tick) {
    assert_eq!(
        engine.try_lock(owner, request, now),
        Ok(TryLockOutcome::Busy)
    );
}

/// TestLocking / TestManagedLock: Lock, TryLock fails, a blocked Lock gets it after unlock,
/// the old key is then invalid, the new key unlocks.
#[test]
fn locking() {
    let engine = engine();
    let (a, b) = (engine.new_owner(), engine.new_owner());
    let first = acquire(&engine, &a, &req("l"), at(0));
    busy(&engine, &b, &req("l"), at(0));
    let mut waiting = queue(&engine, &b, &req("l"), at(0));
    assert!(waiting.try_result().is_none());
    let unlocked = engine
        .unlock("l", &first.key.to_string(), at(2))
        .expect("holder unlocks");
    assert_eq!(unlocked.handed_off, 1, "the unlock served the waiter");
    let second = waiting.try_result().expect("handed off").expect("granted");
    assert_eq!(
        engine.unlock("l", &first.key.to_string(), at(2)),
        Err(LockError::InvalidLockKey)
    );
    let unlocked = engine
        .unlock("l", &second.key.to_string(), at(2))
        .expect("new key unlocks");
    assert_eq!(unlocked.handed_off, 0, "nobody was waiting");
    assert!(second.fencing_token > first.fencing_token);
}

/// TestUnlockInvalidKey / TestManager_UnlockInvalidKey / TestManager_UnlockNotFound /
/// TestUnlockNotLocked.
#[test]
fn unlock_errors() {
    let engine = engine();
    let owner = engine.new_owner();
    assert_eq!(
        engine.unlock("never", "x", at(0)),
        Err(LockError::LockDoesNotExist)
    );
    assert_eq!(
        engine.unlock("", "x", at(0)).map_err(|e| e.code()),
        Err(ErrorCode::LockDoesNotExist)
    );
    acquire(&engine, &owner, &req("l"), at(0));
    let wrong = LockKey::generate().to_string();
    assert_eq!(
        engine.unlock("l", &wrong, at(0)),
        Err(LockError::InvalidLockKey)
    );
    assert_eq!(
        engine.unlock("l", "not-a-uuid", at(0)),
        Err(LockError::InvalidLockKey)
    );
}

/// Keys are UUID v4 in lower-case hyphenated form; the upper-case spelling of a valid key is not
/// the key (go-ldlm compares bytes).
#[test]
fn keys_are_lowercase_uuid_v4_and_compared_exactly() {
    let engine = engine();
    let owner = engine.new_owner();
    let grant = acquire(&engine, &owner, &req("l"), at(0));
    let key = grant.key.to_string();
    assert_eq!(key.len(), 36);
    assert_eq!(&key[14..15], "4", "version nibble");
    assert!(
        key.chars()
            .all(|c| c == '-' || c.is_ascii_digit() || ('a'..='f').contains(&c))
    );
    assert_eq!(
        engine.unlock("l", &key.to_uppercase(), at(0)),
        Err(LockError::InvalidLockKey)
    );
    engine.unlock("l", &key, at(0)).expect("exact key works");
}

/// TestTryLock_Size / TestLock_Size: a size-3 lock admits three holders, a fourth waits (or is
/// busy), one unlock admits exactly one more; a cancelled waiter does not get a slot.
#[test]
fn size_is_a_counting_semaphore() {
    let engine = engine();
    let owner = engine.new_owner();
    let sized = LockRequest {
        size: Some(3),
        ..req("s")
    };
    let grants: Vec<Grant> = (0..3)
        .map(|_| acquire(&engine, &owner, &sized, at(0)))
        .collect();
    busy(&engine, &owner, &sized, at(0));
    let cancelled = queue(&engine, &owner, &sized, at(0));
    let mut fourth = queue(&engine, &owner, &sized, at(0));
    drop(cancelled);
    engine
        .unlock("s", &grants[0].key.to_string(), at(1))
        .expect("unlock");
    assert!(
        fourth.try_result().expect("served").is_ok(),
        "the live waiter got the slot"
    );
    busy(&engine, &owner, &sized, at(1));
    assert_eq!(engine.stats().holds, 3);
}

/// TestManager_SizeMismatch / TestManager_InvalidSize; absent size on a size-3 lock is a
/// mismatch too.
#[test]
fn size_mismatch_and_invalid_size() {
    let engine = engine();
    let owner = engine.new_owner();
    acquire(
        &engine,
        &owner,
        &LockRequest {
            size: Some(4),
            ..req("m")
        },
        at(0),
    );
    let five = LockRequest {
        size: Some(5),
        ..req("m")
    };
    assert_eq!(
        engine.try_lock(&owner, &five, at(0)),
        Err(LockError::LockSizeMismatch)
    );
    assert_eq!(
        engine.try_lock(&owner, &req("m"), at(0)),
        Err(LockError::LockSizeMismatch)
    );
    for size in [-2, 0] {
        let bad = LockRequest {
            size: Some(size),
            ..req("n")
        };
        assert_eq!(
            engine.try_lock(&owner, &bad, at(0)),
            Err(LockError::InvalidLockSize)
        );
        assert!(matches!(
            engine.lock(&owner, &bad, at(0)),
            Err(LockError::InvalidLockSize)
        ));
    }
    assert_eq!(engine.stats().locks, 1, "invalid requests create nothing");
}

/// TestLockEmptyName, negative timeouts (checked in go-ldlm's order), name limit.
#[test]
fn validation() {
    let engine = engine();
    let owner = engine.new_owner();
    assert_eq!(
        engine.try_lock(&owner, &req(""), at(0)),
        Err(LockError::EmptyName)
    );
    let negative_lease = LockRequest {
        lock_timeout_seconds: Some(-1),
        size: Some(0),
        ..req("")
    };
    assert_eq!(
        engine.try_lock(&owner, &negative_lease, at(0)),
        Err(LockError::InvalidLockTimeout)
    );
    let negative_wait = LockRequest {
        wait_timeout_seconds: Some(-1),
        size: Some(0),
        ..req("")
    };
    assert!(matches!(
        engine.lock(&owner, &negative_wait, at(0)),
        Err(LockError::InvalidWaitTimeout)
    ));
    // TryLock ignores the wait timeout.
    assert!(
        engine
            .try_lock(
                &owner,
                &LockRequest {
                    wait_timeout_seconds: Some(-1),
                    ..req("w")
                },
                at(0)
            )
            .is_ok()
    );
    let long = "x".repeat(4097);
    assert_eq!(
        engine.try_lock(&owner, &req(&long), at(0)),
        Err(LockError::NameTooLong { limit: 4096 })
    );
    acquire(&engine, &owner, &req(&long[..4096]), at(0));
    // Zero timeouts mean "none" and are accepted.
    let zeros = LockRequest {
        lock_timeout_seconds: Some(0),
        wait_timeout_seconds: Some(0),
        ..req("z")
    };
    let grant = acquire(&engine, &owner, &zeros, at(0));
    assert_eq!(grant.lease_deadline, None);
    assert_eq!(
        engine.refresh("z", &grant.key.to_string(), 0, at(0)),
        Err(LockError::InvalidLockTimeout)
    );
}

/// TestLockWaitTimeout / TestWaitManagedLockTimeout: a 1 s wait on a held lock times out.
#[test]
fn wait_timeout() {
    let engine = engine();
    let (a, b) = (engine.new_owner(), engine.new_owner());
    acquire(&engine, &a, &req("w"), at(0));
    let mut waiting = queue(
        &engine,
        &b,
        &LockRequest {
            wait_timeout_seconds: Some(1),
            ..req("w")
        },
        at(0),
    );
    engine.advance(Tick::from_millis(999));
    assert!(waiting.try_result().is_none(), "not before the deadline");
    let report = engine.advance(Tick::from_millis(1000));
    assert_eq!(report.waits_timed_out, 1);
    let error = waiting.try_result().expect("ended").expect_err("timed out");
    assert_eq!(
        (error.code(), error.to_string()),
        (
            ErrorCode::LockWaitTimeout,
            "timeout waiting to acquire lock".into()
        )
    );
    assert_eq!(engine.stats().waiters, 0);
}

/// TestLockTimerTimeout: a 3 s lease ends at 3 s, the waiter gets the lock then, the expired
/// key is invalid, the new key unlocks.
#[test]
fn lease_expiry_hands_off() {
    let engine = engine();
    let (a, b) = (engine.new_owner(), engine.new_owner());
    let first = acquire(
        &engine,
        &a,
        &LockRequest {
            lock_timeout_seconds: Some(3),
            ..req("t")
        },
        at(0),
    );
    assert_eq!(first.lease_deadline, Some(at(3)));
    let mut waiting = queue(&engine, &b, &req("t"), at(0));
    engine.advance(Tick::from_millis(2999));
    assert!(waiting.try_result().is_none());
    assert_eq!(engine.advance(at(3)).leases_expired, 1);
    let second = waiting.try_result().expect("handed off").expect("granted");
    assert_eq!(
        engine.unlock("t", &first.key.to_string(), at(3)),
        Err(LockError::InvalidLockKey)
    );
    assert_eq!(
        engine
            .refresh("t", &first.key.to_string(), 5, at(3))
            .map_err(|e| e.code()),
        Err(ErrorCode::LockDoesNotExistOrInvalidKey)
    );
    engine
        .unlock("t", &second.key.to_string(), at(3))
        .expect("new key unlocks");
}

/// TestLockTimerRefresh: a 1 s lease refreshed every 0.5 s stays held; when refreshing stops,
/// the waiter gets it; the old key is then invalid.
#[test]
fn refresh_keeps_a_lease_alive() {
    let engine = engine();
    let (a, b) = (engine.new_owner(), engine.new_owner());
    let first = acquire(
        &engine,
        &a,
        &LockRequest {
            lock_timeout_seconds: Some(1),
            ..req("r")
        },
        at(0),
    );
    let mut waiting = queue(&engine, &b, &req("r"), at(0));
    for half_seconds in 1..=8u64 {
        let now = Tick::from_millis(half_seconds * 500);
        engine.advance(now);
        let refreshed = engine
            .refresh("r", &first.key.to_string(), 1, now)
            .expect("still held");
        assert_eq!(refreshed.lease_deadline, Some(now.after_secs(1)));
        assert_eq!(refreshed.fencing_token, first.fencing_token);
    }
    assert!(waiting.try_result().is_none(), "held for 4 s by refreshing");
    engine.advance(Tick::from_millis(4999));
    assert!(waiting.try_result().is_none());
    engine.advance(at(5));
    assert!(waiting.try_result().expect("handed off").is_ok());
    assert_eq!(
        engine.unlock("r", &first.key.to_string(), at(5)),
        Err(LockError::InvalidLockKey)
    );
}

/// Refreshing a hold without a lease gives it one (go-ldlm refuses with an error).
#[test]
fn refresh_adds_a_lease() {
    let engine = engine();
    let owner = engine.new_owner();
    let grant = acquire(&engine, &owner, &req("n"), at(0));
    assert_eq!(grant.lease_deadline, None);
    engine
        .refresh("n", &grant.key.to_string(), 2, at(1))
        .expect("refresh works");
    engine.advance(at(3));
    assert!(engine.list().is_empty(), "the new lease expired");
}

/// TestClientDisconnectUnlock: session 1 holds A, session 2 holds B, session 3 waits on A;
/// ending session 1 hands A to session 3; B stays held.
#[test]
fn owner_release_hands_off() {
    let engine = engine();
    let (one, two, three) = (engine.new_owner(), engine.new_owner(), engine.new_owner());
    acquire(&engine, &one, &req("A"), at(0));
    acquire(&engine, &two, &req("B"), at(0));
    let mut waiting = queue(&engine, &three, &req("A"), at(0));
    let summary = engine.release_owner(&one, at(2));
    assert_eq!(summary.released, 1);
    assert!(waiting.try_result().expect("handed off").is_ok());
    let owners: Vec<(String, OwnerId)> = engine
        .list()
        .into_iter()
        .map(|h| (h.name.to_string(), h.owner))
        .collect();
    assert_eq!(
        owners,
        vec![("A".into(), three.id()), ("B".into(), two.id())]
    );
    // An ended owner gets nothing more.
    assert_eq!(
        engine.try_lock(&one, &req("C"), at(2)),
        Err(LockError::SessionEnded)
    );
    assert_eq!(
        engine.release_owner(&one, at(2)),
        Default::default(),
        "idempotent"
    );
}

/// Owners ended together: a slot one of them frees goes past the others (ended too) to the
/// next live waiter. One after another, the second would first be granted what the first let
/// go — a grant nobody hears of.
#[test]
fn owners_released_together_pass_nothing_to_each_other() {
    let engine = engine();
    let (one, two, three) = (engine.new_owner(), engine.new_owner(), engine.new_owner());
    acquire(&engine, &one, &req("A"), at(0));
    let mut second = queue(&engine, &two, &req("A"), at(0));
    let mut third = queue(&engine, &three, &req("A"), at(0));
    let summary = engine.release_owners(&[one.clone(), two.clone()], at(1));
    assert_eq!(summary.released, 1);
    assert_eq!(summary.waiters_cancelled, 1);
    assert_eq!(second.try_result(), Some(Err(LockError::SessionEnded)));
    assert!(third.try_result().expect("handed off").is_ok());
    let holders: Vec<OwnerId> = engine.list().into_iter().map(|h| h.owner).collect();
    assert_eq!(holders, vec![three.id()]);
    assert_eq!(
        engine.release_owners(&[one, two], at(1)),
        Default::default(),
        "idempotent"
    );
}

/// TestLockWaiterDisconnects: a waiter whose owner ends does not get the lock; after the holder
/// unlocks a third owner can TryLock it.
#[test]
fn waiter_of_an_ended_owner_never_gets_the_lock() {
    let engine = engine();
    let (holder, waiter, third) = (engine.new_owner(), engine.new_owner(), engine.new_owner());
    let grant = acquire(&engine, &holder, &req("d"), at(0));
    let mut waiting = queue(&engine, &waiter, &req("d"), at(0));
    engine.release_owner(&waiter, at(1));
    assert_eq!(waiting.try_result(), Some(Err(LockError::SessionEnded)));
    engine
        .unlock("d", &grant.key.to_string(), at(1))
        .expect("unlock");
    acquire(&engine, &third, &req("d"), at(1));
}

/// A grant that races with the waiter's departure is given back and passed on (go-ldlm B7).
#[test]
fn a_grant_to_a_dropped_handle_is_passed_on() {
    let engine = engine();
    let (holder, gone, next) = (engine.new_owner(), engine.new_owner(), engine.new_owner());
    let grant = acquire(&engine, &holder, &req("g"), at(0));
    let raced = queue(&engine, &gone, &req("g"), at(0));
    let mut following = queue(&engine, &next, &req("g"), at(0));
    // The hand-off reaches `raced` (its grant sits in the channel) ...
    engine
        .unlock("g", &grant.key.to_string(), at(1))
        .expect("unlock");
    assert!(following.try_result().is_none());
    // ... and then its client goes away without reading it.
    drop(raced);
    assert!(following.try_result().expect("passed on").is_ok());
    assert!(engine.list().iter().all(|h| h.owner == next.id()));
}

/// `no_clear_on_disconnect`: holds of an ended owner stay held and listed under it (B5 fixed),
/// its waiters are still cancelled.
#[test]
fn holds_can_outlive_their_owner() {
    let config = EngineConfig {
        release_on_owner_end: false,
        ..EngineConfig::default()
    };
    let engine = Engine::new(config, Tick::ZERO).expect("valid");
    let (a, b) = (engine.new_owner(), engine.new_owner());
    let grant = acquire(&engine, &a, &req("k"), at(0));
    acquire(&engine, &b, &req("j"), at(0));
    let mut waiting = queue(&engine, &a, &req("j"), at(0));
    let summary = engine.release_owner(&a, at(1));
    assert_eq!(
        (summary.released, summary.kept, summary.waiters_cancelled),
        (0, 1, 1)
    );
    assert_eq!(waiting.try_result(), Some(Err(LockError::SessionEnded)));
    let listed = engine.list();
    assert_eq!(
        listed.iter().find(|h| &*h.name == "k").map(|h| h.owner),
        Some(a.id())
    );
    // Another client with the key may still unlock it (the key is the authority, B4).
    engine
        .unlock("k", &grant.key.to_string(), at(2))
        .expect("unlock by key");
}

/// The key, not the owner, authorises unlock; the hold stays listed under its real owner until
/// then (B4 fixed).
#[test]
fn unlock_by_another_owner_updates_the_real_owner() {
    let engine = engine();
    let (a, b) = (engine.new_owner(), engine.new_owner());
    let grant = acquire(&engine, &a, &req("x"), at(0));
    engine
        .refresh("x", &grant.key.to_string(), 10, at(0))
        .expect("anyone may refresh");
    assert_eq!(engine.list()[0].owner, a.id());
    engine
        .unlock("x", &grant.key.to_string(), at(0))
        .expect("anyone with the key may unlock");
    // `a` no longer owns anything: releasing it frees nothing.
    acquire(&engine, &b, &req("x"), at(0));
    assert_eq!(engine.release_owner(&a, at(0)).released, 0);
    assert_eq!(engine.list()[0].owner, b.id());
}

/// TestLockGc: a held lock survives GC; after unlock and one idle interval it is collected, so a
/// new size is accepted.
#[test]
fn gc_collects_idle_unheld_locks() {
    let config = EngineConfig {
        gc_interval: Duration::from_secs(10),
        gc_min_idle: Duration::from_secs(5),
        ..EngineConfig::default()
    };
    let engine = Engine::new(config, Tick::ZERO).expect("valid");
    let owner = engine.new_owner();
    let held = acquire(&engine, &owner, &req("held"), at(0));
    let idle = acquire(&engine, &owner, &req("idle"), at(0));
    engine
        .unlock("idle", &idle.key.to_string(), at(7))
        .expect("unlock");
    // At 10 s "idle" has been unused for 3 s < 5 s: kept.
    assert_eq!(engine.advance(at(10)).locks_collected, 0);
    assert_eq!(
        engine.try_lock(
            &owner,
            &LockRequest {
                size: Some(2),
                ..req("idle")
            },
            at(10)
        ),
        Err(LockError::LockSizeMismatch)
    );
    // That failed request counted as a use (at 10 s); at 20 s it is 10 s idle: collected.
    assert_eq!(engine.advance(at(20)).locks_collected, 1);
    acquire(
        &engine,
        &owner,
        &LockRequest {
            size: Some(2),
            ..req("idle")
        },
        at(20),
    );
    assert!(
        engine.list().iter().any(|h| h.key == held.key),
        "held lock survives"
    );
}

/// TestShutdown_ManagerLock / _ManagerTryLock: after shutdown, Lock/TryLock fail; waiters are
/// told; holds stay (so the state file keeps them for a restart).
#[test]
fn shutdown() {
    let engine = engine();
    let owner = engine.new_owner();
    acquire(&engine, &owner, &req("s"), at(0));
    let mut waiting = queue(&engine, &owner, &req("s"), at(0));
    engine.shutdown();
    assert!(engine.is_shut_down());
    assert_eq!(waiting.try_result(), Some(Err(LockError::Shutdown)));
    assert_eq!(
        engine.try_lock(&owner, &req("t"), at(0)),
        Err(LockError::Shutdown)
    );
    assert_eq!(
        engine.lock(&owner, &req("t"), at(0)).err(),
        Some(LockError::Shutdown)
    );
    assert_eq!(engine.list().len(), 1, "holds are kept for the state file");
}

/// Fencing tokens strictly increase across names and hand-offs.
#[test]
fn fencing_tokens_increase() {
    let engine = engine();
    let owner = engine.new_owner();
    let mut last = 0;
    for i in 0..100 {
        let name = format!("n{}", i % 7);
        let grant = acquire(&engine, &owner, &req(&name), at(0));
        assert!(grant.fencing_token > last);
        last = grant.fencing_token;
        engine
            .unlock(&name, &grant.key.to_string(), at(0))
            .expect("unlock");
    }
    assert_eq!(engine.max_fencing_token(), last);
}

/// The waiter limit is a clear error and changes nothing.
#[test]
fn too_many_waiters() {
    let config = EngineConfig {
        max_waiters_per_lock: 2,
        ..EngineConfig::default()
    };
    let engine = Engine::new(config, Tick::ZERO).expect("valid");
    let owner = engine.new_owner();
    acquire(&engine, &owner, &req("q"), at(0));
    let _one = queue(&engine, &owner, &req("q"), at(0));
    let _two = queue(&engine, &owner, &req("q"), at(0));
    let error = engine.lock(&owner, &req("q"), at(0)).expect_err("limit");
    assert_eq!(error, LockError::TooManyWaiters { limit: 2 });
    assert!(error.to_string().contains("limit 2"));
    assert_eq!(engine.stats().waiters, 2);
}

/// Admin unlock: by key, the only holder without a key, several holders is an error listing
/// the keys.
#[test]
fn force_unlock() {
    let engine = engine();
    let owner = engine.new_owner();
    let only = acquire(&engine, &owner, &req("one"), at(0));
    assert_eq!(engine.force_unlock("one", None, at(0)), Ok(only.key));
    let sized = LockRequest {
        size: Some(2),
        ..req("two")
    };
    let first = acquire(&engine, &owner, &sized, at(0));
    let second = acquire(&engine, &owner, &sized, at(0));
    match engine.force_unlock("two", None, at(0)) {
        Err(LockError::AmbiguousUnlock { keys }) => {
            assert_eq!(keys, vec![first.key.to_string(), second.key.to_string()]);
        }
        other => panic!("expected an ambiguity error: {other:?}"),
    }
    assert_eq!(
        engine.force_unlock("two", Some(&second.key.to_string()), at(0)),
        Ok(second.key)
    );
    assert_eq!(
        engine.force_unlock("nope", None, at(0)),
        Err(LockError::LockDoesNotExist)
    );
}

/// REST sessions expire when idle and are released; touching keeps them alive.
#[test]
fn sessions_expire_when_idle() {
    let engine = engine();
    let session = engine.new_session(Duration::from_secs(10), at(0));
    acquire(&engine, &session, &req("rest"), at(0));
    assert!(engine.touch_session(&session, at(8)));
    assert!(
        engine.advance(at(12)).sessions_expired.is_empty(),
        "touched at 8 s"
    );
    assert!(engine.next_deadline().is_some_and(|d| d <= at(18)));
    let report = engine.advance(at(18));
    assert_eq!(report.sessions_expired, vec![session.id()]);
    assert!(engine.list().is_empty());
    assert!(!engine.touch_session(&session, at(19)));
}

/// Restore: holds come back with the given lease under the restored owner, tokens continue
/// above every stored one, and conflicts are errors that restore nothing.
/// A hold restored with its own lease length gets a fresh lease of that length from the
/// restore, not the default (a 30 s lease must not end 2 s after a restart); holds stored
/// without a lease get the default.
#[test]
fn restore_gives_each_hold_its_own_lease_length() {
    use ldlm_engine::HoldRecord;
    let engine = engine();
    let hold = |name: &str, lease_seconds| HoldRecord {
        name: name.into(),
        key: LockKey::generate(),
        size: 1,
        fencing_token: 1,
        lease_seconds,
        owner: OwnerId::RESTORED,
    };
    let records = [
        hold("long", Some(30)),
        hold("short", Some(1)),
        hold("none", None),
    ];
    assert_eq!(
        engine.restore(&records, Some(Duration::from_secs(2)), 0, at(10)),
        Ok(3)
    );
    let deadline = |name: &str| {
        engine
            .list()
            .into_iter()
            .find(|h| &*h.name == name)
            .and_then(|h| h.lease_deadline)
    };
    assert_eq!(deadline("long"), Some(at(40)));
    assert_eq!(deadline("short"), Some(at(11)));
    assert_eq!(
        deadline("none"),
        Some(at(12)),
        "the default for a hold without a lease"
    );
    assert_eq!(engine.advance(at(12)).leases_expired, 2);
    assert_eq!(
        deadline("long"),
        Some(at(40)),
        "still held after the default passed"
    );
    assert_eq!(engine.advance(at(40)).leases_expired, 1);
}

/// A refresh that changes the lease length is reported to the event sink (a restart needs the
/// length); one that keeps it is not.
#[test]
fn a_refresh_reports_a_changed_lease_length() {
    use ldlm_engine::{Event, EventSink};
    use std::sync::{Arc, Mutex};
    #[derive(Default)]
    struct Lengths(Mutex<Vec<(String, Option<u32>)>>);
    impl EventSink for Lengths {
        fn record(&self, event: Event<'_>) -> u64 {
            let mut seen = self.0.lock().unwrap();
            match event {
                Event::Granted {
                    name,
                    lease_seconds,
                    ..
                } => seen.push((format!("grant {name}"), lease_seconds)),
                Event::LeaseChanged {
                    name,
                    lease_seconds,
                    ..
                } => seen.push((format!("lease {name}"), Some(lease_seconds))),
                Event::Released { name, .. } => seen.push((format!("release {name}"), None)),
            }
            seen.len() as u64
        }
    }
    let sink = Arc::new(Lengths::default());
    let engine =
        Engine::with_event_sink(EngineConfig::default(), at(0), sink.clone()).expect("config");
    let owner = engine.new_owner();
    let leased = LockRequest {
        name: "x",
        lock_timeout_seconds: Some(5),
        ..LockRequest::default()
    };
    let grant = acquire(&engine, &owner, &leased, at(0));
    let key = grant.key.to_string();
    let same = engine.refresh("x", &key, 5, at(1)).expect("refresh");
    assert_eq!(same.durable_seq, 0, "same length: nothing to make durable");
    let longer = engine.refresh("x", &key, 30, at(2)).expect("refresh");
    assert!(
        longer.durable_seq > 0,
        "a new length is an event to make durable"
    );
    let untimed = acquire(&engine, &owner, &req("y"), at(3));
    engine
        .refresh("y", &untimed.key.to_string(), 7, at(3))
        .expect("refresh gives a lease");
    assert_eq!(
        *sink.0.lock().unwrap(),
        vec![
            ("grant x".to_owned(), Some(5)),
            ("lease x".to_owned(), Some(30)),
            ("grant y".to_owned(), None),
            ("lease y".to_owned(), Some(7)),
        ]
    );
}

#[test]
fn restore() {
    use ldlm_engine::{HoldRecord, RestoreError};
    let engine = engine();
    let key = LockKey::generate();
    let record = |name: &str, size: u32, key: LockKey, token: u64| HoldRecord {
        name: name.into(),
        key,
        size,
        fencing_token: token,
        lease_seconds: None,
        owner: OwnerId::RESTORED,
    };
    let conflict = [
        record("c", 1, key, 5),
        record("c", 1, LockKey::generate(), 6),
    ];
    assert!(matches!(
        engine.restore(&conflict, None, 0, at(0)),
        Err(RestoreError::TooManyHolders { .. })
    ));
    let sizes = [
        record("c", 1, key, 5),
        record("c", 2, LockKey::generate(), 6),
    ];
    assert!(matches!(
        engine.restore(&sizes, None, 0, at(0)),
        Err(RestoreError::SizeConflict { .. })
    ));
    let duplicate = [record("c", 2, key, 5), record("c", 2, key, 6)];
    assert!(matches!(
        engine.restore(&duplicate, None, 0, at(0)),
        Err(RestoreError::DuplicateKey { .. })
    ));
    assert!(matches!(
        engine.restore(&[record("", 1, key, 1)], None, 0, at(0)),
        Err(RestoreError::InvalidName { .. })
    ));
    assert_eq!(engine.stats().locks, 0, "failed restores change nothing");

    let good = [
        record("a", 1, key, 40),
        record("b", 2, LockKey::generate(), 7),
    ];
    assert_eq!(
        engine.restore(&good, Some(Duration::from_secs(60)), 100, at(0)),
        Ok(2)
    );
    let listed = engine.list();
    assert_eq!(listed.len(), 2);
    assert!(
        listed
            .iter()
            .all(|h| h.owner == OwnerId::RESTORED && h.lease_deadline == Some(at(60)))
    );
    let owner = engine.new_owner();
    let next = acquire(&engine, &owner, &req("z"), at(0));
    assert_eq!(next.fencing_token, 101, "continues above the floor");
    engine
        .unlock("a", &key.to_string(), at(1))
        .expect("old keys still work");
    assert_eq!(engine.advance(at(60)).leases_expired, 1);
    assert!(matches!(
        engine.restore(&good, None, 0, at(0)),
        Err(RestoreError::NotEmpty)
    ));
}

/// A hold restored under its owner (cluster mode keeps owners) is released with that owner,
/// as if it had been granted here; holds of other owners stay.
#[test]
fn restored_holds_are_released_with_their_owner() {
    use ldlm_engine::HoldRecord;
    let engine = engine();
    let gone = OwnerId(7 << 48 | 1);
    let stays = OwnerId(8 << 48 | 1);
    let hold = |name: &str, owner| HoldRecord {
        name: name.into(),
        key: LockKey::generate(),
        size: 1,
        fencing_token: 3,
        lease_seconds: None,
        owner,
    };
    engine
        .restore(
            &[hold("a", gone), hold("b", gone), hold("c", stays)],
            None,
            0,
            at(0),
        )
        .expect("restores");
    let owner = engine.owner_with_id(gone);
    let summary = engine.release_owner(&owner, at(1));
    assert_eq!(summary.released, 2);
    let left: Vec<_> = engine
        .list()
        .into_iter()
        .map(|h| (h.name, h.owner))
        .collect();
    assert_eq!(left, vec![("c".into(), stays)]);
}

/// A request's tag reaches its grant's event, also when the grant comes later by hand-off.
#[test]
fn a_request_tag_reaches_its_grant_event() {
    use ldlm_engine::{Event, EventSink};
    use std::sync::{Arc, Mutex};
    #[derive(Default)]
    struct Tags(Mutex<Vec<(String, u64)>>);
    impl EventSink for Tags {
        fn record(&self, event: Event<'_>) -> u64 {
            if let Event::Granted { name, tag, .. } = event {
                self.0.lock().unwrap().push((name.to_owned(), tag));
            }
            1
        }
    }
    let sink = Arc::new(Tags::default());
    let engine =
        Engine::with_event_sink(EngineConfig::default(), at(0), sink.clone()).expect("config");
    let (a, b) = (engine.new_owner(), engine.new_owner());
    let tagged = |tag| LockRequest {
        name: "x",
        tag,
        ..LockRequest::default()
    };
    let first = acquire(&engine, &a, &tagged(11), at(0));
    let LockOutcome::Waiting(pending) = engine.lock(&b, &tagged(22), at(0)).expect("valid") else {
        panic!("x is held");
    };
    engine
        .unlock("x", &first.key.to_string(), at(1))
        .expect("unlock");
    pending.wait().expect("handed over");
    assert_eq!(
        *sink.0.lock().unwrap(),
        vec![("x".to_owned(), 11), ("x".to_owned(), 22)]
    );
}
