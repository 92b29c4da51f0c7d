//! [`Clock`]: real time for the engine, which never reads a clock itself.
//!
//! A tick is a millisecond since the clock was made (the server's start). Everything that hands
//! the engine a `now` — requests, the timer driver, restores — reads it from one `Clock`, so all
//! of the engine's deadlines are on one time line.

use std::time::{Duration, Instant};

use ldlm_engine::Tick;

/// Real time for the engine: milliseconds since the clock was made.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    origin: Instant,
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock {
    /// A clock whose tick 0 is now.
    pub fn new() -> Clock {
        Clock {
            origin: Instant::now(),
        }
    }

    /// The current tick.
    pub fn now(&self) -> Tick {
        self.tick_at(Instant::now())
    }

    /// The tick of `instant` (a request's start, read once for both its latency and its tick).
    pub fn tick_at(&self, instant: Instant) -> Tick {
        let since = instant.saturating_duration_since(self.origin);
        Tick::from_millis(u64::try_from(since.as_millis()).unwrap_or(u64::MAX))
    }

    /// The instant a tick stands for.
    pub fn instant_of(&self, tick: Tick) -> Instant {
        // Far-future ticks saturate to about a century: the driver simply wakes up then.
        let ms = tick.as_millis().min(100 * 365 * 24 * 3600 * 1000);
        self.origin + Duration::from_millis(ms)
    }
}
