//! Counters and latency histograms, shared by the workers.
//!
//! Latencies go into HdrHistograms (microseconds, 3 significant digits, up to one hour), one
//! set per shard; a worker always records into the same shard, and there are only a few shards
//! (twice the client's threads), so the shard mutexes are rarely contended and the memory stays
//! small however many workers run. Counters are relaxed atomics.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hdrhistogram::Histogram;
use parking_lot::Mutex;

/// Largest latency the histograms track (longer ones are recorded as this).
const MAX_MICROS: u64 = 3_600_000_000;

/// The request kinds, each with its own latency histogram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    /// TryLock (REST `POST /v1/lock`).
    TryLock,
    /// Blocking Lock.
    Lock,
    /// Unlock.
    Unlock,
    /// RefreshLock / Renew.
    Refresh,
}

impl Op {
    pub(crate) const ALL: [Op; 4] = [Op::TryLock, Op::Lock, Op::Unlock, Op::Refresh];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Op::TryLock => "trylock",
            Op::Lock => "lock",
            Op::Unlock => "unlock",
            Op::Refresh => "refresh",
        }
    }
}

fn histogram() -> Histogram<u64> {
    // The bounds are constants that hdrhistogram accepts.
    Histogram::new_with_bounds(1, MAX_MICROS, 3).unwrap_or_else(|_| {
        Histogram::new(3).unwrap_or_else(|_| unreachable!("3 significant digits are valid"))
    })
}

/// One error kind: how often, and the first message seen.
#[derive(Clone, Debug)]
pub(crate) struct ErrorCount {
    pub(crate) count: u64,
    pub(crate) example: String,
}

/// Everything the workers count.
pub(crate) struct Stats {
    shards: Box<[Mutex<[Histogram<u64>; 4]>]>,
    /// Measured cycles completed.
    pub(crate) cycles: AtomicU64,
    /// Cycles completed during the warm-up.
    pub(crate) warmup_cycles: AtomicU64,
    /// Measured requests (each with a latency).
    pub(crate) requests: AtomicU64,
    /// ratelimit: TryLocks admitted (measured).
    pub(crate) admitted: AtomicU64,
    /// ratelimit: TryLocks refused (measured).
    pub(crate) refused: AtomicU64,
    /// TryLocks answered `locked=false` where a grant was expected (trylock, refresh setup).
    pub(crate) not_acquired: AtomicU64,
    /// Unlocks that failed after the lease may have run out (expected, not errors).
    pub(crate) expired: AtomicU64,
    /// All errors (measured or not).
    pub(crate) error_count: AtomicU64,
    errors: Mutex<BTreeMap<String, ErrorCount>>,
    /// Connections moved to another node (several addresses only).
    pub(crate) moves: Arc<AtomicU64>,
    /// Unlocks that found their hold gone because its session ended when the connection moved
    /// to another node (expected, not errors).
    pub(crate) ended_with_session: AtomicU64,
}

impl Stats {
    /// Stats with `shards` histogram shards.
    pub(crate) fn new(shards: usize) -> Stats {
        Stats {
            shards: (0..shards.max(1))
                .map(|_| Mutex::new([histogram(), histogram(), histogram(), histogram()]))
                .collect(),
            cycles: AtomicU64::new(0),
            warmup_cycles: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            admitted: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            not_acquired: AtomicU64::new(0),
            expired: AtomicU64::new(0),
            error_count: AtomicU64::new(0),
            errors: Mutex::new(BTreeMap::new()),
            moves: Arc::new(AtomicU64::new(0)),
            ended_with_session: AtomicU64::new(0),
        }
    }

    /// The shard worker `worker` records into.
    pub(crate) fn shard_of(&self, worker: usize) -> usize {
        worker % self.shards.len()
    }

    /// Records one measured request's latency.
    pub(crate) fn record(&self, shard: usize, op: Op, latency: Duration) {
        let micros = u64::try_from(latency.as_micros())
            .unwrap_or(u64::MAX)
            .max(1);
        self.shards[shard].lock()[op as usize].saturating_record(micros);
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a completed cycle.
    pub(crate) fn cycle(&self, measured: bool) {
        let counter = if measured {
            &self.cycles
        } else {
            &self.warmup_cycles
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts an error under `key`.
    pub(crate) fn error(&self, key: String, example: &str) {
        self.error_count.fetch_add(1, Ordering::Relaxed);
        let mut errors = self.errors.lock();
        errors
            .entry(key)
            .or_insert_with(|| ErrorCount {
                count: 0,
                example: example.chars().take(300).collect(),
            })
            .count += 1;
    }

    /// The errors by kind.
    pub(crate) fn errors(&self) -> BTreeMap<String, ErrorCount> {
        self.errors.lock().clone()
    }

    /// All shards merged: one histogram per [`Op`], and one of every request.
    pub(crate) fn merged(&self) -> ([Histogram<u64>; 4], Histogram<u64>) {
        let mut ops = [histogram(), histogram(), histogram(), histogram()];
        let mut all = histogram();
        for shard in self.shards.iter() {
            let shard = shard.lock();
            for (merged, h) in ops.iter_mut().zip(shard.iter()) {
                // Same bounds everywhere: adding cannot fail.
                let _ = merged.add(h);
                let _ = all.add(h);
            }
        }
        (ops, all)
    }
}

/// Latency percentiles of one histogram.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Latency {
    /// Requests measured.
    pub count: u64,
    /// Mean.
    pub mean: Duration,
    /// Median.
    pub p50: Duration,
    /// 90th percentile.
    pub p90: Duration,
    /// 99th percentile.
    pub p99: Duration,
    /// 99.9th percentile.
    pub p999: Duration,
    /// Slowest.
    pub max: Duration,
}

impl Latency {
    pub(crate) fn of(h: &Histogram<u64>) -> Latency {
        if h.is_empty() {
            return Latency::default();
        }
        let at = |q: f64| Duration::from_micros(h.value_at_quantile(q));
        Latency {
            count: h.len(),
            mean: Duration::from_secs_f64(h.mean() / 1e6),
            p50: at(0.5),
            p90: at(0.9),
            p99: at(0.99),
            p999: at(0.999),
            max: Duration::from_micros(h.max()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_and_merges() {
        let stats = Stats::new(2);
        for ms in 1..=100 {
            stats.record(ms % 2, Op::TryLock, Duration::from_millis(ms as u64));
        }
        stats.record(0, Op::Unlock, Duration::from_nanos(10));
        let (ops, all) = stats.merged();
        let l = Latency::of(&ops[Op::TryLock as usize]);
        assert_eq!(l.count, 100);
        assert!((49..=51).contains(&l.p50.as_millis()), "{l:?}");
        assert!(l.max >= Duration::from_millis(99));
        assert_eq!(
            Latency::of(&ops[Op::Unlock as usize]).max,
            Duration::from_micros(1)
        );
        assert_eq!(all.len(), 101);
        assert_eq!(Latency::of(&ops[Op::Lock as usize]), Latency::default());
        stats.error("grpc Unavailable".into(), "down");
        stats.error("grpc Unavailable".into(), "still down");
        let errors = stats.errors();
        assert_eq!(errors["grpc Unavailable"].count, 2);
        assert_eq!(errors["grpc Unavailable"].example, "down");
    }
}
