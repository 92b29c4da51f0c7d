//! [`RecentlyReleased`]: the keys of the holds that ended most recently, so that an Unlock
//! re-sent after a failover is answered as its first attempt was.
//!
//! An Unlock whose answer was lost (the leader stepped down or died after committing the
//! release) is re-sent to the next leader, where the hold no longer exists. Answered plainly,
//! the client would hear "no such lock" for an unlock that worked. Every key is a fresh UUID
//! and is handed out only once its grant is committed, so a re-sent Unlock whose key was
//! released recently is the client's own earlier attempt (or a release that raced it, such as
//! its lease running out): either way the hold is gone as the client asked, and it is told
//! "unlocked". A first attempt is never answered from here, so a client unlocking twice still
//! hears the second one refused, as from a single server.
//!
//! Kept beside the replica, not in it or in snapshots: a re-send comes seconds after its first
//! attempt, and the window below covers that many releases many times over. A node restored
//! from a snapshot starts with an empty memory; a re-send that reaches it answers as a single
//! server would.

use std::collections::{HashSet, VecDeque};

/// How many released keys are remembered (16 bytes each, twice).
pub const RELEASED_WINDOW: usize = 65_536;

/// The most recent released keys, oldest first.
#[derive(Debug, Default)]
pub struct RecentlyReleased {
    order: VecDeque<u128>,
    keys: HashSet<u128>,
}

impl RecentlyReleased {
    /// Remembers `key` as released, forgetting the oldest beyond the window.
    pub fn insert(&mut self, key: u128) {
        if !self.keys.insert(key) {
            return;
        }
        self.order.push_back(key);
        if self.order.len() > RELEASED_WINDOW
            && let Some(oldest) = self.order.pop_front()
        {
            self.keys.remove(&oldest);
        }
    }

    /// Whether `key` was released recently.
    pub fn contains(&self, key: u128) -> bool {
        self.keys.contains(&key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_a_bounded_window() {
        let mut released = RecentlyReleased::default();
        for key in 0..(RELEASED_WINDOW as u128 + 10) {
            released.insert(key);
        }
        released.insert(20); // already known: no effect on the order
        assert!(!released.contains(9), "the oldest were forgotten");
        assert!(released.contains(10) && released.contains(RELEASED_WINDOW as u128 + 9));
        assert_eq!(released.order.len(), RELEASED_WINDOW);
        assert_eq!(released.keys.len(), RELEASED_WINDOW);
    }
}
