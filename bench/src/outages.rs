//! The `failover` workload's measure: how long the clients went without any grant.
//!
//! Every successful grant, on any connection, moves a shared "last grant" mark forward. A grant
//! that comes more than [`OUTAGE`] after the mark ends an outage: from the last grant before
//! it to this one. Killing a cluster's leader, or restarting its nodes one by one, while the
//! workload runs gives each event's unavailability as its clients saw it (from the last grant
//! before the event, so at most one call's latency more than from the event itself). A run
//! that ends inside an outage reports it too, as unfinished.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A gap between grants longer than this is an outage. A healthy server grants many times per
/// millisecond under this workload; a cluster's leader election takes about a second.
pub(crate) const OUTAGE: Duration = Duration::from_millis(100);

/// One time without grants.
#[derive(Clone, Debug, PartialEq)]
pub struct Outage {
    /// When it started (the last grant before it), from the start of the run.
    pub at: Duration,
    /// How long it lasted.
    pub length: Duration,
    /// The run ended before the next grant.
    pub unfinished: bool,
}

/// The shared mark and the outages found.
pub(crate) struct Outages {
    origin: Instant,
    /// Nanoseconds from `origin` to the latest grant, plus one (0: no grant yet).
    last: AtomicU64,
    found: Mutex<Vec<Outage>>,
}

impl Outages {
    pub(crate) fn new(origin: Instant) -> Outages {
        Outages {
            origin,
            last: AtomicU64::new(0),
            found: Mutex::new(Vec::new()),
        }
    }

    fn nanos(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.origin).as_nanos()).unwrap_or(u64::MAX - 1)
            + 1
    }

    /// A grant was received at `at`.
    pub(crate) fn grant(&self, at: Instant) {
        let now = self.nanos(at);
        let before = self.last.fetch_max(now, Ordering::AcqRel);
        if before != 0 && now > before && now - before > OUTAGE.as_nanos() as u64 {
            self.found
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push(Outage {
                    at: Duration::from_nanos(before - 1),
                    length: Duration::from_nanos(now - before),
                    unfinished: false,
                });
        }
    }

    /// The outages, in order, with one still under way at `end` counted as unfinished.
    pub(crate) fn finish(&self, end: Instant) -> Vec<Outage> {
        let mut found = self
            .found
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let last = self.last.load(Ordering::Acquire);
        let end = self.nanos(end);
        if last != 0 && end > last && end - last > OUTAGE.as_nanos() as u64 {
            found.push(Outage {
                at: Duration::from_nanos(last - 1),
                length: Duration::from_nanos(end - last),
                unfinished: true,
            });
        }
        found.sort_by_key(|o| o.at);
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaps_longer_than_the_threshold_are_outages() {
        let origin = Instant::now();
        let outages = Outages::new(origin);
        let at = |ms: u64| origin + Duration::from_millis(ms);
        outages.grant(at(10));
        outages.grant(at(60)); // 50 ms: not an outage
        outages.grant(at(1060)); // 1 s without a grant
        outages.grant(at(1000)); // late report of an earlier grant: not an outage
        outages.grant(at(1100));
        let found = outages.finish(at(1500));
        assert_eq!(
            found,
            vec![
                Outage {
                    at: Duration::from_millis(60),
                    length: Duration::from_millis(1000),
                    unfinished: false
                },
                Outage {
                    at: Duration::from_millis(1100),
                    length: Duration::from_millis(400),
                    unfinished: true
                },
            ]
        );
        assert!(
            Outages::new(origin).finish(at(5000)).is_empty(),
            "no grant at all: nothing to measure from"
        );
    }
}
