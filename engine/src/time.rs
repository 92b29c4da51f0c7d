//! Engine time: a millisecond tick count from an origin the caller chooses.
//!
//! The engine never reads a clock. Transports convert `std::time::Instant` to a [`Tick`] (for
//! example milliseconds since the server started) and pass it to every call that needs time;
//! tests pass whatever virtual time they like.

use std::time::Duration;

/// A point in engine time, in milliseconds since an origin chosen by the caller.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Tick(u64);

impl Tick {
    /// The origin.
    pub const ZERO: Tick = Tick(0);

    /// The tick `ms` milliseconds after the origin.
    pub const fn from_millis(ms: u64) -> Tick {
        Tick(ms)
    }

    /// Milliseconds since the origin.
    pub const fn as_millis(self) -> u64 {
        self.0
    }

    /// This tick plus `d`, rounded up to whole milliseconds, saturating at the far future.
    pub fn after(self, d: Duration) -> Tick {
        let ms = d.as_nanos().div_ceil(1_000_000);
        Tick(self.0.saturating_add(u64::try_from(ms).unwrap_or(u64::MAX)))
    }

    /// This tick plus `secs` whole seconds.
    pub const fn after_secs(self, secs: u32) -> Tick {
        Tick(self.0.saturating_add(secs as u64 * 1000))
    }

    /// Time from `earlier` to `self` (zero if `earlier` is later).
    pub const fn since(self, earlier: Tick) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic() {
        let t = Tick::from_millis(1500);
        assert_eq!(t.after_secs(2).as_millis(), 3500);
        assert_eq!(
            t.after(Duration::from_micros(1)).as_millis(),
            1501,
            "rounds up"
        );
        assert_eq!(t.after(Duration::MAX), Tick::from_millis(u64::MAX));
        assert_eq!(
            Tick::from_millis(u64::MAX).after_secs(u32::MAX).as_millis(),
            u64::MAX
        );
        assert_eq!(t.since(Tick::from_millis(500)), Duration::from_secs(1));
        assert_eq!(Tick::ZERO.since(t), Duration::ZERO);
    }
}
