//! Memory target: one million held locks fit in 300 MB of resident memory.
//! This file holds a single test so no other test shares its process while it measures.

use ldlm_engine::{Engine, EngineConfig, LockRequest, Tick, TryLockOutcome};

/// Resident set size of this process in bytes (Linux `/proc/self/statm`).
fn rss_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

#[test]
fn a_million_held_locks_fit_in_300_mb() {
    let Some(before) = rss_bytes() else {
        eprintln!("no /proc/self/statm on this platform: not measured");
        return;
    };
    let engine = Engine::new(EngineConfig::default(), Tick::ZERO).expect("valid");
    let owner = engine.new_owner();
    let mut name = String::new();
    for i in 0..1_000_000u32 {
        name.clear();
        use std::fmt::Write;
        write!(name, "lock-{i:07}").expect("write to string");
        let request = LockRequest {
            name: &name,
            ..LockRequest::default()
        };
        assert!(matches!(
            engine.try_lock(&owner, &request, Tick::ZERO),
            Ok(TryLockOutcome::Acquired(_))
        ));
    }
    assert_eq!(engine.stats().holds, 1_000_000);
    let used = rss_bytes().expect("measured before") - before;
    eprintln!("1M held locks: {} MB resident", used / 1_000_000);
    assert!(
        used <= 300_000_000,
        "1M held locks use {} MB",
        used / 1_000_000
    );
    // Releasing the owner frees them all.
    assert_eq!(engine.release_owner(&owner, Tick::ZERO).released, 1_000_000);
    assert_eq!(engine.stats().holds, 0);
}
