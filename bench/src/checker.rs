//! The correctness check, always on. Three independent checks, all sound (a correct server can
//! never fail them, whatever the scheduling and network delays):
//!
//! 1. **Occupancy counters** for holds *without* a lease: per name, +1 right after a
//!    `locked=true` answer, −1 right *before* the Unlock is sent. The counted span lies inside
//!    the real hold, so a count above the lock's size means more holders than slots at once.
//! 2. **Lease intervals** for every hold when the run uses leases (a lease may expire while the
//!    client still thinks it holds, so the counters above would raise false alarms). A leased
//!    hold is *certainly* alive from the moment its answer arrived until the earlier of "Unlock
//!    about to be sent" and "request sent + lock timeout − `--lease_margin`" (the server starts
//!    the lease at the grant, which is after the request was sent; the margin covers its timer
//!    tick). After the run, a sweep per name checks that no more than `size` such intervals
//!    overlap. For `ratelimit` this is the "at most `size` admitted per lock-timeout window"
//!    check, made exact: it cannot be fooled by where a fixed window boundary falls.
//! 3. **Fencing tokens** (when the server sends them; go-ldlm sends none, then this check is
//!    skipped and the report says so). Per name: a grant's token must be greater than every
//!    token received before its request was sent (so a token is never seen twice or going
//!    backwards along any causal chain); and for size-1 locks, where holds never overlap, a
//!    grant still certainly held when its answer is processed must carry a token greater than
//!    every token processed before it.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::names::Names;

/// How many violation messages are kept (the rest are only counted).
const KEEP_VIOLATIONS: usize = 20;

/// One hold, for the lease-interval sweep: certainly alive over `[start, end)` (nanoseconds
/// since the run began).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Interval {
    pub(crate) name: u32,
    pub(crate) start: u64,
    pub(crate) end: u64,
}

/// The shared checker of one run.
pub(crate) struct Checker {
    size: u32,
    origin: Instant,
    occupancy: Box<[AtomicI64]>,
    max_token: Box<[AtomicU64]>,
    with_token: AtomicU64,
    without_token: AtomicU64,
    intervals: Mutex<Vec<Interval>>,
    violations: Mutex<Vec<String>>,
    violation_count: AtomicU64,
}

/// What the sweep found, for the report.
#[derive(Debug, Default)]
pub(crate) struct SweepResult {
    /// The most holds of one name certainly alive at the same moment.
    pub(crate) max_alive: u64,
    /// The intervals (sorted by name, then start), for the ratelimit window statistics.
    pub(crate) intervals: Vec<Interval>,
}

impl Checker {
    /// A checker for locks of `size` slots, names with ids below `capacity`.
    pub(crate) fn new(size: u32, capacity: usize, origin: Instant) -> Checker {
        Checker {
            size,
            origin,
            occupancy: (0..capacity).map(|_| AtomicI64::new(0)).collect(),
            max_token: (0..capacity).map(|_| AtomicU64::new(0)).collect(),
            with_token: AtomicU64::new(0),
            without_token: AtomicU64::new(0),
            intervals: Mutex::new(Vec::new()),
            violations: Mutex::new(Vec::new()),
            violation_count: AtomicU64::new(0),
        }
    }

    /// Nanoseconds since the run began.
    pub(crate) fn nanos(&self, t: Instant) -> u64 {
        u64::try_from(t.saturating_duration_since(self.origin).as_nanos()).unwrap_or(u64::MAX)
    }

    /// Records a violation.
    pub(crate) fn violation(&self, message: String) {
        self.violation_count.fetch_add(1, Ordering::Relaxed);
        let mut kept = self.violations.lock();
        if kept.len() < KEEP_VIOLATIONS {
            kept.push(message);
        }
    }

    /// The token floor for a lock request about to be sent on `name`.
    pub(crate) fn floor(&self, name: u32) -> u64 {
        self.max_token[name as usize].load(Ordering::Acquire)
    }

    /// A `locked=true` answer for `name` was just received.
    ///
    /// * `floor`: [`Checker::floor`] taken before the request was sent;
    /// * `alive_until`: `None` for a hold without a lease (it joins the occupancy counter);
    ///   with a lease, until when it is certainly alive.
    pub(crate) fn on_grant(
        &self,
        name: u32,
        names: &Names,
        token: u64,
        floor: u64,
        alive_until: Option<Instant>,
    ) {
        if alive_until.is_none() {
            let now = self.occupancy[name as usize].fetch_add(1, Ordering::AcqRel) + 1;
            if now > i64::from(self.size) {
                self.violation(format!(
                    "mutual exclusion: {now} clients hold {:?} at once (size {})",
                    names.name_of(name),
                    self.size
                ));
            }
        }
        if token == 0 {
            self.without_token.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.with_token.fetch_add(1, Ordering::Relaxed);
        let previous = self.max_token[name as usize].fetch_max(token, Ordering::AcqRel);
        // Still held *after* the exchange above, so held at it: then no later grant of this
        // size-1 name can have been processed before it.
        let alive = alive_until.is_none_or(|until| Instant::now() < until);
        if self.size == 1 && alive {
            if previous >= token {
                self.violation(format!(
                    "fencing token: grant of {:?} got token {token}, not greater than {previous} \
                     from an earlier grant (size 1, holds cannot overlap)",
                    names.name_of(name)
                ));
            }
        } else if token <= floor {
            self.violation(format!(
                "fencing token: grant of {:?} got token {token}, not greater than {floor} \
                 received before the request was sent",
                names.name_of(name)
            ));
        }
    }

    /// A counted hold (see [`Checker::on_grant`]) is about to be unlocked.
    pub(crate) fn on_release(&self, name: u32) {
        self.occupancy[name as usize].fetch_sub(1, Ordering::AcqRel);
    }

    /// Records a hold for the interval sweep.
    pub(crate) fn hold(&self, name: u32, start: Instant, end: Instant) {
        let (start, end) = (self.nanos(start), self.nanos(end));
        if end > start {
            self.intervals.lock().push(Interval { name, start, end });
        }
    }

    /// Grants seen with a fencing token, and without (token 0).
    pub(crate) fn token_counts(&self) -> (u64, u64) {
        (
            self.with_token.load(Ordering::Relaxed),
            self.without_token.load(Ordering::Relaxed),
        )
    }

    /// After the run: the interval sweep and the consistency of fencing tokens.
    pub(crate) fn finish(&self, names: &Names) -> SweepResult {
        let (with, without) = self.token_counts();
        if with > 0 && without > 0 {
            self.violation(format!(
                "fencing token: the server sent tokens with {with} grants but token 0 with \
                 {without} others"
            ));
        }
        let mut intervals = std::mem::take(&mut *self.intervals.lock());
        intervals.sort_unstable_by_key(|i| (i.name, i.start));
        let mut max_alive = 0;
        let mut ends: BinaryHeap<Reverse<u64>> = BinaryHeap::new();
        let mut reported_name = None;
        for (index, interval) in intervals.iter().enumerate() {
            if index == 0 || intervals[index - 1].name != interval.name {
                ends.clear();
            }
            while ends
                .peek()
                .is_some_and(|Reverse(end)| *end <= interval.start)
            {
                ends.pop();
            }
            ends.push(Reverse(interval.end));
            let alive = ends.len() as u64;
            max_alive = max_alive.max(alive);
            if alive > u64::from(self.size) && reported_name != Some(interval.name) {
                reported_name = Some(interval.name);
                self.violation(format!(
                    "{alive} holds of {:?} certainly alive at once at {:.3}s (size {}; a lease \
                     counts from its answer until request sent + lock timeout - margin)",
                    names.name_of(interval.name),
                    Duration::from_nanos(interval.start).as_secs_f64(),
                    self.size
                ));
            }
        }
        SweepResult {
            max_alive,
            intervals,
        }
    }

    /// The kept violation messages and the total count.
    pub(crate) fn violations(&self) -> (Vec<String>, u64) {
        (
            self.violations.lock().clone(),
            self.violation_count.load(Ordering::Relaxed),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> Names {
        Names::fixed(vec!["a".into(), "b".into()])
    }

    #[test]
    fn occupancy_above_size_is_a_violation() {
        let names = names();
        let c = Checker::new(1, 2, Instant::now());
        c.on_grant(0, &names, 0, 0, None);
        c.on_release(0);
        c.on_grant(0, &names, 0, 0, None);
        assert_eq!(c.violations().1, 0);
        c.on_grant(0, &names, 0, 0, None);
        assert_eq!(c.violations().1, 1);
        c.on_grant(1, &names, 0, 0, None);
        assert_eq!(c.violations().1, 1, "another name has its own counter");
    }

    #[test]
    fn tokens_must_increase() {
        let names = names();
        let lease = Some(Instant::now() + Duration::from_secs(60));
        let expired = Some(Instant::now());
        let c = Checker::new(1, 2, Instant::now());
        c.on_grant(0, &names, 5, 0, lease);
        c.on_grant(0, &names, 6, 5, lease);
        assert_eq!(c.violations().1, 0);
        c.on_grant(0, &names, 6, 6, lease);
        assert_eq!(c.violations().1, 1, "repeated");
        // A lease that may have run out: only the floor counts.
        c.on_grant(0, &names, 3, 2, expired);
        assert_eq!(c.violations().1, 1);
        c.on_grant(0, &names, 3, 6, expired);
        assert_eq!(c.violations().1, 2);
        let c = Checker::new(3, 2, Instant::now());
        c.on_grant(0, &names, 9, 0, lease);
        c.on_grant(0, &names, 8, 0, lease);
        assert_eq!(
            c.violations().1,
            0,
            "size 3: concurrent grants arrive in any order"
        );
        c.finish(&names);
        assert_eq!(c.violations().1, 0);
    }

    #[test]
    fn mixing_tokens_and_no_tokens_is_a_violation() {
        let names = names();
        let lease = None;
        let c = Checker::new(1, 2, Instant::now());
        c.on_grant(0, &names, 0, 0, lease);
        c.on_grant(1, &names, 4, 0, lease);
        c.finish(&names);
        assert_eq!(c.violations().1, 1);
    }

    #[test]
    fn sweep_counts_overlapping_intervals() {
        let names = names();
        let origin = Instant::now();
        let at = |ms| origin + Duration::from_millis(ms);
        let c = Checker::new(2, 2, origin);
        c.hold(0, at(0), at(10));
        c.hold(0, at(5), at(15));
        c.hold(0, at(10), at(20)); // starts when the first ends: 2 alive
        c.hold(1, at(0), at(30));
        c.hold(0, at(30), at(30)); // empty: ignored
        let result = c.finish(&names);
        assert_eq!(result.max_alive, 2);
        assert_eq!(c.violations().1, 0);
        c.hold(0, at(40), at(50));
        c.hold(0, at(41), at(50));
        c.hold(0, at(42), at(50));
        let result = c.finish(&names);
        assert_eq!(result.max_alive, 3);
        assert_eq!(c.violations().1, 1);
    }
}
