//! Arbitrary bytes as a state file through the real loader (`state_file::load::parse`): an
//! error naming an offset inside the file, or a consistent table. A table that loads restores
//! into a fresh engine or is refused with a `RestoreError` (never a panic; refused means nothing
//! restored); restored, no lock has more holders than its size, and new fencing tokens continue
//! above every stored one. A loaded table also survives being written back (as a compacted
//! file is) and read again.

#![no_main]

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use ldlm_engine::{Engine, EngineConfig, LockRequest, Tick, TryLockOutcome};
use ldlm_state_file::load::parse;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let loaded = match parse(data) {
        Ok(loaded) => loaded,
        Err((offset, detail)) => {
            assert!(
                offset <= data.len() as u64,
                "damage at {offset} past the end"
            );
            assert!(!detail.is_empty());
            return;
        }
    };
    if let Some((offset, len)) = loaded.torn_tail {
        assert_eq!(offset + len, data.len() as u64, "a torn tail ends the file");
    }

    // The table is consistent: one size per name, holders within it, keys distinct.
    let holds = loaded.holds();
    let mut per_name: HashMap<&str, (u32, HashSet<u128>)> = HashMap::new();
    let mut max_token = loaded.fencing_floor();
    for hold in &holds {
        assert!(hold.size > 0, "hold of {:?} with size 0", hold.name);
        let (size, keys) = per_name
            .entry(&hold.name)
            .or_insert((hold.size, HashSet::new()));
        assert_eq!(*size, hold.size, "two sizes for {:?}", hold.name);
        assert!(
            keys.insert(hold.key.as_u128()),
            "key twice on {:?}",
            hold.name
        );
        assert!(
            keys.len() <= *size as usize,
            "{:?} over its size",
            hold.name
        );
        max_token = max_token.max(hold.fencing_token);
    }

    // Written back (as compaction does) and read again: the same table.
    let mut rewritten = Vec::new();
    loaded.table.encode_snapshot(&mut rewritten);
    let again = parse(&rewritten).expect("a rewritten state file loads");
    let sorted = |mut holds: Vec<ldlm_engine::HoldRecord>| {
        holds.sort_by_key(|h| h.fencing_token);
        holds
    };
    assert_eq!(sorted(again.holds()), sorted(loaded.holds()));
    assert_eq!(again.fencing_floor(), max_token);
    assert_eq!(again.torn_tail, None);

    // Restored into a fresh engine.
    let config = EngineConfig {
        shards: 4,
        max_name_bytes: 64,
        ..EngineConfig::default()
    };
    let engine = Engine::new(config, Tick::ZERO).expect("engine");
    let lease = data
        .len()
        .is_multiple_of(2)
        .then_some(Duration::from_secs(60));
    match engine.restore(&loaded.holds(), lease, loaded.fencing_floor(), Tick::ZERO) {
        Err(_) => {
            assert_eq!(
                engine.stats().locks,
                0,
                "a refused restore changed the engine"
            );
            return;
        }
        Ok(restored) => assert_eq!(restored, loaded.holds().len()),
    }
    let listed = engine.list();
    assert_eq!(listed.len(), loaded.holds().len());
    let mut held: HashMap<&str, usize> = HashMap::new();
    for hold in &listed {
        let count = held.entry(&hold.name).or_default();
        *count += 1;
        assert!(
            *count <= hold.size as usize,
            "{:?} over its size after restore",
            hold.name
        );
    }

    // New grants continue above every stored token, and keep increasing (restore refuses
    // tokens in the upper half of u64, so there is always room).
    {
        let owner = engine.new_owner();
        let mut last = max_token;
        for i in 0..2 {
            let fresh = (0..)
                .map(|n| format!("fresh-{i}-{n}"))
                .find(|name| !per_name.contains_key(name.as_str()))
                .expect("a fresh name");
            let request = LockRequest {
                name: &fresh,
                size: None,
                lock_timeout_seconds: None,
                wait_timeout_seconds: None,
                tag: 0,
            };
            match engine.try_lock(&owner, &request, Tick::ZERO) {
                Ok(TryLockOutcome::Acquired(grant)) => {
                    assert!(
                        grant.fencing_token > last,
                        "token {} not above {last} (stored max {max_token})",
                        grant.fencing_token
                    );
                    last = grant.fencing_token;
                }
                other => panic!("a fresh lock after restore: {other:?}"),
            }
        }
        assert_eq!(engine.max_fencing_token(), last);
    }
});
