//! Multi-threaded stress: several threads lock, try-lock, unlock, cancel waits and end their
//! owners on a few contended names while a driver thread advances virtual time (wait timeouts).
//! Per-name occupancy counters fail the test if more than `size` clients ever hold a name at
//! once; at the end every slot must be free again (none lost) and nobody may still wait.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::thread;

use ldlm_engine::{Engine, EngineConfig, Grant, LockOutcome, LockRequest, Tick, TryLockOutcome};

const NAMES: [(&str, i32); 4] = [("one", 1), ("two", 2), ("solo", 1), ("three", 3)];
const THREADS: usize = 6;
const OPS_PER_THREAD: usize = 4000;

struct Shared {
    engine: Engine,
    clock: AtomicU64,
    occupancy: [AtomicI64; 4],
    violations: AtomicU64,
}

impl Shared {
    fn now(&self) -> Tick {
        Tick::from_millis(self.clock.load(Ordering::Acquire))
    }

    fn enter(&self, index: usize) {
        let held = self.occupancy[index].fetch_add(1, Ordering::AcqRel) + 1;
        if held > i64::from(NAMES[index].1) {
            self.violations.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn leave(&self, index: usize) {
        self.occupancy[index].fetch_sub(1, Ordering::AcqRel);
    }
}

fn worker(shared: &Shared, seed: u64) {
    let mut state = seed | 1;
    let mut rand = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let engine = &shared.engine;
    let mut owner = engine.new_owner();
    let mut held: Vec<(usize, Grant)> = Vec::new();
    for _ in 0..OPS_PER_THREAD {
        let index = (rand() % NAMES.len() as u64) as usize;
        let (name, size) = NAMES[index];
        let request = LockRequest {
            name,
            size: Some(size),
            wait_timeout_seconds: Some(1),
            ..LockRequest::default()
        };
        match rand() % 8 {
            0..=2 => match engine.try_lock(&owner, &request, shared.now()) {
                Ok(TryLockOutcome::Acquired(grant)) => {
                    shared.enter(index);
                    held.push((index, grant));
                }
                Ok(TryLockOutcome::Busy) => {}
                Err(error) => panic!("try_lock failed: {error}"),
            },
            3 | 4 => match engine.lock(&owner, &request, shared.now()) {
                Ok(LockOutcome::Acquired(grant)) => {
                    shared.enter(index);
                    held.push((index, grant));
                }
                Ok(LockOutcome::Waiting(mut pending)) => {
                    // Wait a little (the driver may time us out), else give up: cancel.
                    for _ in 0..(rand() % 200) {
                        if let Some(result) = pending.try_result() {
                            if let Ok(grant) = result {
                                shared.enter(index);
                                held.push((index, grant));
                            }
                            break;
                        }
                        thread::yield_now();
                    }
                    drop(pending);
                }
                Err(error) => panic!("lock failed: {error}"),
            },
            5 | 6 => {
                if !held.is_empty() {
                    let (index, grant) = held.swap_remove((rand() % held.len() as u64) as usize);
                    shared.leave(index);
                    engine
                        .unlock(NAMES[index].0, &grant.key.to_string(), shared.now())
                        .expect("our own hold unlocks");
                }
            }
            _ => {
                // The connection drops: everything it holds is released at once.
                for (index, _) in held.drain(..) {
                    shared.leave(index);
                }
                let ended = std::mem::replace(&mut owner, engine.new_owner());
                engine.release_owner(&ended, shared.now());
                assert!(
                    engine.list().iter().all(|h| h.owner != ended.id()),
                    "a released owner still holds a lock"
                );
            }
        }
    }
    for (index, grant) in held {
        shared.leave(index);
        engine
            .unlock(NAMES[index].0, &grant.key.to_string(), shared.now())
            .expect("final unlock");
    }
    engine.release_owner(&owner, shared.now());
}

#[test]
fn mutual_exclusion_holds_and_no_slot_is_lost_under_concurrency() {
    let config = EngineConfig {
        shards: 2,
        ..EngineConfig::default()
    };
    let shared = Arc::new(Shared {
        engine: Engine::new(config, Tick::ZERO).expect("valid"),
        clock: AtomicU64::new(0),
        occupancy: Default::default(),
        violations: AtomicU64::new(0),
    });
    let done = Arc::new(AtomicBool::new(false));
    let driver = {
        let (shared, done) = (shared.clone(), done.clone());
        thread::spawn(move || {
            while !done.load(Ordering::Acquire) {
                let now = shared.clock.fetch_add(7, Ordering::AcqRel) + 7;
                shared.engine.advance(Tick::from_millis(now));
                thread::yield_now();
            }
        })
    };
    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let shared = shared.clone();
            thread::spawn(move || worker(&shared, 0x9E37_79B9 * (t as u64 + 1)))
        })
        .collect();
    for w in workers {
        w.join().expect("worker finished without panicking");
    }
    done.store(true, Ordering::Release);
    driver.join().expect("driver");

    assert_eq!(
        shared.violations.load(Ordering::Relaxed),
        0,
        "mutual exclusion violated"
    );
    let stats = shared.engine.stats();
    assert_eq!(
        (stats.holds, stats.waiters),
        (0, 0),
        "a slot or a waiter was left behind"
    );
    // Every slot of every name is free again.
    let owner = shared.engine.new_owner();
    for (name, size) in NAMES {
        for _ in 0..size {
            let request = LockRequest {
                name,
                size: Some(size),
                ..LockRequest::default()
            };
            assert!(matches!(
                shared.engine.try_lock(&owner, &request, shared.now()),
                Ok(TryLockOutcome::Acquired(_))
            ));
        }
    }
}
