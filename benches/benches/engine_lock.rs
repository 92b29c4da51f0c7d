//! Engine lock benchmarks: uncontended try_lock+unlock on existing names (target: ≥ 3M/s on
//! one thread), new-name churn, two threads contending on one name, and blocking hand-off.

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ldlm_engine::{Engine, EngineConfig, LockOutcome, LockRequest, Tick, TryLockOutcome};

fn engine() -> Engine {
    Engine::new(EngineConfig::default(), Tick::ZERO).expect("valid config")
}

fn cycle(engine: &Engine, owner: &ldlm_engine::Owner, name: &str) {
    let request = LockRequest {
        name,
        ..LockRequest::default()
    };
    match engine.try_lock(owner, &request, Tick::ZERO) {
        Ok(TryLockOutcome::Acquired(grant)) => {
            let mut buf = [0u8; 36];
            engine
                .unlock(name, grant.key.encode(&mut buf), Tick::ZERO)
                .expect("unlock");
        }
        other => panic!("{other:?}"),
    }
}

fn uncontended(c: &mut Criterion) {
    let mut group = c.benchmark_group("uncontended");
    group.throughput(Throughput::Elements(1));
    let engine = engine();
    let owner = engine.new_owner();
    let names: Vec<String> = (0..1024).map(|i| format!("lock-{i}")).collect();
    for name in &names {
        cycle(&engine, &owner, name);
    }
    let mut i = 0usize;
    group.bench_function("try_lock+unlock existing names", |b| {
        b.iter(|| {
            i = (i + 1) & 1023;
            cycle(&engine, &owner, black_box(&names[i]));
        })
    });
    let mut n = 0u64;
    let mut name = String::new();
    group.bench_function("try_lock+unlock new names (churn, GC off)", |b| {
        b.iter(|| {
            use std::fmt::Write;
            n += 1;
            name.clear();
            write!(name, "churn-{n}").expect("write");
            cycle(&engine, &owner, black_box(&name));
        })
    });
    group.finish();
}

fn contention(c: &mut Criterion) {
    let mut group = c.benchmark_group("contention");
    group.throughput(Throughput::Elements(1));
    // A second thread hammers the same name with try_lock+unlock while we measure ours.
    let engine = engine();
    let stop = Arc::new(AtomicBool::new(false));
    let other = {
        let (engine, stop) = (engine.clone(), stop.clone());
        thread::spawn(move || {
            let owner = engine.new_owner();
            while !stop.load(Ordering::Relaxed) {
                let request = LockRequest {
                    name: "hot",
                    ..LockRequest::default()
                };
                if let Ok(TryLockOutcome::Acquired(g)) =
                    engine.try_lock(&owner, &request, Tick::ZERO)
                {
                    engine
                        .unlock("hot", &g.key.to_string(), Tick::ZERO)
                        .expect("unlock");
                }
            }
        })
    };
    let owner = engine.new_owner();
    group.bench_function("2 threads try_lock+unlock one name", |b| {
        b.iter(|| {
            let request = LockRequest {
                name: "hot",
                ..LockRequest::default()
            };
            if let Ok(TryLockOutcome::Acquired(g)) = engine.try_lock(&owner, &request, Tick::ZERO) {
                engine
                    .unlock("hot", &g.key.to_string(), Tick::ZERO)
                    .expect("unlock");
            }
        })
    });
    stop.store(true, Ordering::Relaxed);
    other.join().expect("join");

    // Blocking hand-off: we hold the lock, queue a waiter, unlock (handing off), and the waiter
    // receives its grant and unlocks. One element = one hand-off.
    let engine_ = engine.clone();
    let (a, b) = (engine_.new_owner(), engine_.new_owner());
    group.bench_function("hand-off to a queued waiter", |bench| {
        bench.iter(|| {
            let request = LockRequest {
                name: "handoff",
                ..LockRequest::default()
            };
            let LockOutcome::Acquired(first) =
                engine_.lock(&a, &request, Tick::ZERO).expect("lock")
            else {
                panic!("free")
            };
            let LockOutcome::Waiting(pending) =
                engine_.lock(&b, &request, Tick::ZERO).expect("lock")
            else {
                panic!("held")
            };
            engine_
                .unlock("handoff", &first.key.to_string(), Tick::ZERO)
                .expect("unlock");
            let second = pending.wait().expect("granted");
            engine_
                .unlock("handoff", &second.key.to_string(), Tick::ZERO)
                .expect("unlock");
        })
    });
    group.finish();
}

criterion_group!(benches, uncontended, contention);
criterion_main!(benches);
