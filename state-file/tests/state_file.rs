//! The state file: round trips through a real file, torn tails, damage, conflicts, compaction,
//! and the fencing-token floor.

use std::io::Write;
use std::time::Duration;

use ldlm_engine::{Engine, EngineConfig, LockKey, LockRequest, Tick, TryLockOutcome};
use ldlm_state_file::{LoadError, StateFile, format, load};

fn engine_with(file: &StateFile) -> Engine {
    let config = EngineConfig {
        gc_interval: Duration::ZERO,
        ..EngineConfig::default()
    };
    Engine::with_event_sink(config, Tick::ZERO, file.sink()).expect("valid config")
}

fn lock(engine: &Engine, name: &str, size: i32) -> ldlm_engine::Grant {
    let owner = engine.new_owner();
    let request = LockRequest {
        name,
        size: Some(size),
        ..LockRequest::default()
    };
    match engine.try_lock(&owner, &request, Tick::ZERO) {
        Ok(TryLockOutcome::Acquired(grant)) => grant,
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn grants_are_durable_and_come_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("state");
    let (file, loaded) = StateFile::open(&path).expect("open");
    assert!(loaded.holds().is_empty());
    let engine = engine_with(&file);
    let commits = file.commits();
    let a = lock(&engine, "a", 1);
    let b1 = lock(&engine, "b", 2);
    let b2 = lock(&engine, "b", 2);
    let gone = lock(&engine, "gone", 1);
    engine
        .unlock("gone", &gone.key.to_string(), Tick::ZERO)
        .expect("unlock");
    for grant in [a, b1, b2] {
        assert!(grant.durable_seq > 0);
        tokio::time::timeout(Duration::from_secs(2), commits.wait(grant.durable_seq))
            .await
            .expect("durable within 2 s")
            .expect("written");
    }
    drop(engine);
    file.close();

    let loaded = load::load(&path).expect("loads");
    let mut held: Vec<(String, LockKey, u32)> = loaded
        .holds()
        .iter()
        .map(|h| (h.name.clone(), h.key, h.size))
        .collect();
    held.sort();
    let mut expected = vec![
        ("a".to_string(), a.key, 1),
        ("b".to_string(), b1.key, 2),
        ("b".to_string(), b2.key, 2),
    ];
    expected.sort();
    assert_eq!(held, expected);
    assert_eq!(
        loaded.fencing_floor(),
        gone.fencing_token,
        "the highest token ever, even if released"
    );

    // Reopening restores into a new engine; tokens continue above the floor.
    let (file, loaded) = StateFile::open(&path).expect("reopen");
    let engine = engine_with(&file);
    engine
        .restore(
            &loaded.holds(),
            Some(Duration::from_secs(600)),
            loaded.fencing_floor(),
            Tick::ZERO,
        )
        .expect("restores");
    let next = lock(&engine, "c", 1);
    assert!(next.fencing_token > gone.fencing_token);
    engine
        .unlock("a", &a.key.to_string(), Tick::ZERO)
        .expect("old keys unlock");
}

fn valid_file(dir: &std::path::Path) -> (std::path::PathBuf, Vec<u8>) {
    let path = dir.join("state");
    let mut bytes = format::MAGIC.to_vec();
    format::encode_grant(&mut bytes, "one", LockKey::generate(), 1, 1, None);
    format::encode_grant(&mut bytes, "two", LockKey::generate(), 1, 2, None);
    std::fs::write(&path, &bytes).expect("write");
    (path, bytes)
}

#[test]
fn a_torn_tail_is_dropped_with_a_note() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (path, bytes) = valid_file(dir.path());
    // A third record cut off mid-write.
    let mut torn = Vec::new();
    format::encode_grant(&mut torn, "three", LockKey::generate(), 1, 3, None);
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .expect("open");
    file.write_all(&torn[..torn.len() - 5]).expect("append");
    let loaded = load::load(&path).expect("a torn tail is not an error");
    assert_eq!(loaded.holds().len(), 2);
    assert_eq!(
        loaded.torn_tail,
        Some((bytes.len() as u64, torn.len() as u64 - 5))
    );

    // A last record with a bad checksum is a torn tail too; so are trailing zeros.
    let mut flipped = bytes.clone();
    flipped.extend_from_slice(&torn);
    *flipped.last_mut().expect("non-empty") ^= 0x40;
    flipped.extend_from_slice(&[]);
    assert_eq!(load::parse(&flipped).expect("torn").holds().len(), 2);
    let mut zeros = bytes.clone();
    zeros.extend_from_slice(&[0; 4096]);
    assert_eq!(
        load::parse(&zeros).expect("torn").torn_tail,
        Some((bytes.len() as u64, 4096))
    );

    // Opening rewrites the file without the torn record.
    let (file, loaded) = StateFile::open(&path).expect("open");
    assert_eq!(loaded.holds().len(), 2);
    file.close();
    assert_eq!(load::load(&path).expect("clean").torn_tail, None);
}

#[test]
fn damage_in_the_middle_names_the_file_and_offset() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (path, mut bytes) = valid_file(dir.path());
    // Flip a bit inside the first record's payload (more records follow it).
    bytes[format::MAGIC.len() + 12] ^= 0x01;
    std::fs::write(&path, &bytes).expect("write");
    let before = std::fs::read(&path).expect("read");
    let error = StateFile::open(&path).expect_err("damaged");
    let message = error.to_string();
    assert!(message.contains(&path.display().to_string()), "{message}");
    assert!(message.contains("at byte 8"), "{message}");
    assert!(message.contains("checksum"), "{message}");
    assert!(matches!(error, LoadError::Damaged { offset: 8, .. }));
    assert_eq!(
        std::fs::read(&path).expect("read"),
        before,
        "a damaged file is left untouched"
    );

    std::fs::write(&path, b"NOTLDLM!garbage").expect("write");
    assert!(
        StateFile::open(&path)
            .expect_err("bad magic")
            .to_string()
            .contains("bad magic")
    );
}

#[test]
fn conflicting_holds_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("state");
    let mut bytes = format::MAGIC.to_vec();
    format::encode_grant(&mut bytes, "x", LockKey::generate(), 1, 1, None);
    format::encode_grant(&mut bytes, "x", LockKey::generate(), 1, 2, None);
    std::fs::write(&path, &bytes).expect("write");
    let message = StateFile::open(&path)
        .expect_err("two holders of a size-1 lock")
        .to_string();
    assert!(
        message.contains("more holders than its size 1"),
        "{message}"
    );

    let mut bytes = format::MAGIC.to_vec();
    format::encode_grant(&mut bytes, "y", LockKey::generate(), 2, 1, None);
    format::encode_grant(&mut bytes, "y", LockKey::generate(), 3, 2, None);
    std::fs::write(&path, &bytes).expect("write");
    let message = StateFile::open(&path).expect_err("two sizes").to_string();
    assert!(message.contains("size"), "{message}");
}

#[test]
fn truncation_at_every_byte_never_panics() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_, bytes) = valid_file(dir.path());
    for cut in 0..bytes.len() {
        let loaded = load::parse(&bytes[..cut]).expect("a prefix is a torn tail, not damage");
        assert!(loaded.holds().len() <= 2);
    }
    for i in 0..bytes.len() {
        let mut flipped = bytes.clone();
        flipped[i] ^= 0x80;
        let _ = load::parse(&flipped);
    }
}

#[tokio::test]
async fn the_log_is_compacted_and_keeps_its_content() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("state");
    let (file, _) = StateFile::open(&path).expect("open");
    let engine = engine_with(&file);
    let commits = file.commits();
    let keep = lock(&engine, "keep", 1);
    let mut last = 0;
    // Enough churn to pass the compaction threshold (100k records beyond twice the live set).
    for i in 0..60_000 {
        let name = format!("churn-{}", i % 100);
        let grant = lock(&engine, &name, 1);
        engine
            .unlock(&name, &grant.key.to_string(), Tick::ZERO)
            .expect("unlock");
        last = grant.durable_seq;
    }
    let final_grant = lock(&engine, "final", 1);
    commits
        .wait(final_grant.durable_seq.max(last))
        .await
        .expect("durable");
    // The writer compacts once it has had nothing to write for a moment (COMPACT_QUIET).
    let size = || std::fs::metadata(&path).expect("stat").len();
    let give_up = std::time::Instant::now() + std::time::Duration::from_secs(2);
    while size() >= 2_000_000 && std::time::Instant::now() < give_up {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(size() < 2_000_000, "compacted: {} bytes", size());
    file.close();
    let loaded = load::load(&path).expect("loads");
    let holds = loaded.holds();
    let names: Vec<&str> = holds.iter().map(|h| h.name.as_str()).collect();
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(names.contains(&"keep") && names.contains(&"final"));
    assert!(loaded.fencing_floor() >= final_grant.fencing_token);
    assert!(holds.iter().any(|h| h.key == keep.key));
}

/// Under the lock service: a grant confirmed on disk stays held; one whose confirmation is
/// abandoned (the request went away) before its record is written is given back, as is one
/// that can no longer be written. Both transports rely on this.
#[tokio::test]
async fn an_unconfirmed_grant_is_given_back() {
    use ldlm_service::{Acquire, LocalLockService, LocalOptions, LockService, Transport};
    use std::future::Future as _;
    use std::task::{Context, Poll, Waker};

    let dir = tempfile::tempdir().expect("tempdir");
    let (file, _) = StateFile::open(&dir.path().join("state")).expect("open");
    let engine = engine_with(&file);
    let service = LocalLockService::new(
        engine.clone(),
        ldlm_service::Clock::new(),
        LocalOptions {
            commits: Some(file.commits()),
            ..LocalOptions::default()
        },
    );
    let owner = service.connect();
    let held = |name: &str| engine.list().iter().any(|h| &*h.name == name);
    let request = |name| LockRequest {
        name,
        ..LockRequest::default()
    };

    let kept = service
        .acquire(Transport::Grpc, &owner, &request("kept"), Acquire::Try)
        .await
        .expect("written");
    assert!(kept.is_some());
    assert!(held("kept"));

    // With the writer stopped, nothing more becomes durable.
    file.close();
    {
        let lost = request("lost");
        let confirming =
            std::pin::pin!(service.acquire(Transport::Grpc, &owner, &lost, Acquire::Try));
        // Pending (then dropped: the request went away) or an error: given back either way.
        let polled = confirming.poll(&mut Context::from_waker(Waker::noop()));
        assert!(!matches!(polled, Poll::Ready(Ok(_))), "{polled:?}");
    }
    assert!(!held("lost"), "the unconfirmed grant was given back");
    assert!(held("kept"), "a confirmed grant stays");
}

/// After a restart, a hold gets a fresh lease of its own length (a 30 s lease must not end at
/// the 2 s default), a refreshed length survives too, and a hold taken without a lease gets the
/// default.
#[tokio::test]
async fn a_restart_restores_each_lease_length() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("state");
    let (file, _) = StateFile::open(&path).expect("open");
    let engine = engine_with(&file);
    let commits = file.commits();
    let owner = engine.new_owner();
    let take = |name: &'static str, lease: Option<i32>| {
        let request = LockRequest {
            name,
            lock_timeout_seconds: lease,
            ..LockRequest::default()
        };
        match engine.try_lock(&owner, &request, Tick::ZERO) {
            Ok(TryLockOutcome::Acquired(grant)) => grant,
            other => panic!("{other:?}"),
        }
    };
    take("long", Some(30));
    let refreshed = take("refreshed", Some(5));
    take("untimed", None);
    let longer = engine
        .refresh("refreshed", &refreshed.key.to_string(), 60, Tick::ZERO)
        .expect("refresh");
    commits.wait(longer.durable_seq).await.expect("durable");
    drop(engine);
    file.close();
    drop(file);

    let now = Tick::from_millis(100_000);
    let recovered = ldlm_state_file::recover(
        &path,
        EngineConfig::default(),
        Some(Duration::from_secs(2)),
        now,
    )
    .expect("recovers");
    let deadline = |name: &str| {
        recovered
            .engine
            .list()
            .into_iter()
            .find(|h| &*h.name == name)
            .and_then(|h| h.lease_deadline)
            .map(|tick| tick.as_millis() - now.as_millis())
    };
    assert_eq!(deadline("long"), Some(30_000));
    assert_eq!(deadline("refreshed"), Some(60_000));
    assert_eq!(deadline("untimed"), Some(2_000));
}
