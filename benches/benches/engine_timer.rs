//! Timer wheel against a `BinaryHeap` baseline: insert+cancel (the lease that is unlocked before
//! it expires, the common case) and insert+fire, with 100k and 1M timers already present.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashSet};
use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use ldlm_engine::wheel::TimerWheel;

fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

fn wheel(c: &mut Criterion) {
    let mut group = c.benchmark_group("timer");
    group.throughput(Throughput::Elements(1));
    for &resident in &[100_000usize, 1_000_000] {
        let mut rng = 0x2545_F491_4F6C_DD1Du64;
        let mut wheel = TimerWheel::new();
        for i in 0..resident {
            wheel.insert(1_000 + xorshift(&mut rng) % 600_000, i as u64);
        }
        group.bench_with_input(
            BenchmarkId::new("wheel insert+cancel", resident),
            &resident,
            |b, _| {
                b.iter(|| {
                    let id = wheel.insert(1_000 + xorshift(&mut rng) % 600_000, 0);
                    black_box(wheel.cancel(id));
                })
            },
        );
        group.bench_with_input(
            BenchmarkId::new("wheel insert+reschedule later", resident),
            &resident,
            |b, _| {
                b.iter(|| {
                    let id = wheel.insert(1_000 + xorshift(&mut rng) % 600_000, 0);
                    wheel.reschedule(id, 700_000);
                    black_box(wheel.cancel(id));
                })
            },
        );

        // Baseline: a binary heap with lazy deletion (a cancelled set), as a heap-based timer
        // must do: cancel is O(1) but every cancelled entry still costs a pop later, and the
        // heap never shrinks until then.
        let mut heap = BinaryHeap::new();
        let mut cancelled = HashSet::new();
        for i in 0..resident {
            heap.push(Reverse((1_000 + xorshift(&mut rng) % 600_000, i as u64)));
        }
        let mut next_id = resident as u64;
        group.bench_with_input(
            BenchmarkId::new("binary heap insert+cancel", resident),
            &resident,
            |b, _| {
                b.iter(|| {
                    next_id += 1;
                    heap.push(Reverse((1_000 + xorshift(&mut rng) % 600_000, next_id)));
                    cancelled.insert(next_id);
                    // Pay for one lazily deleted entry per cancel, as the heap would at expiry.
                    if let Some(Reverse((_, id))) = heap.peek().copied()
                        && cancelled.remove(&id)
                    {
                        heap.pop();
                    }
                })
            },
        );
    }
    group.bench_function("wheel advance firing 100k timers", |b| {
        b.iter_batched(
            || {
                let mut wheel = TimerWheel::new();
                let mut rng = 7u64;
                for i in 0..100_000u64 {
                    wheel.insert(1 + xorshift(&mut rng) % 60_000, i);
                }
                wheel
            },
            |mut wheel| {
                let mut fired = 0;
                while wheel.poll(60_000).is_some() {
                    fired += 1;
                }
                assert_eq!(fired, 100_000);
            },
            criterion::BatchSize::LargeInput,
        )
    });
    group.finish();
}

criterion_group!(benches, wheel);
criterion_main!(benches);
