//! The requests whose callers went away ([`Call::Abandon`](crate::forward::Call::Abandon)),
//! remembered for a while so that an attempt still on its way when the abandon overtook it is
//! refused instead of granted to nobody.
//!
//! Kept in the order they came: forgetting the ones older than the memory is a pop from the
//! front, so a flood of abandons (clients whose own deadlines cancel their Locks) costs each
//! one O(1), not a scan of all the others.

use std::collections::{HashSet, VecDeque};
use std::time::{Duration, Instant};

use crate::command::RequestId;

/// How long an abandoned request is remembered: far longer than a forwarded call takes to
/// arrive (an attempt re-sent later comes from a caller still there, so it cannot be one).
pub(super) const ABANDONED_FOR: Duration = Duration::from_secs(60);

/// See the module doc.
#[derive(Debug, Default)]
pub(super) struct Abandoned {
    requests: HashSet<RequestId>,
    /// The same requests, oldest first, with when they were abandoned.
    order: VecDeque<(Instant, RequestId)>,
}

impl Abandoned {
    /// Remembers `request` as abandoned at `now`, and forgets those older than
    /// [`ABANDONED_FOR`].
    pub(super) fn insert(&mut self, request: RequestId, now: Instant) {
        self.forget_before(now);
        if self.requests.insert(request) {
            self.order.push_back((now, request));
        }
    }

    /// Whether `request` was abandoned (and is still remembered). Every acquire asks, so this
    /// only looks, with no clock read: forgetting is left to [`Abandoned::insert`], and a
    /// request abandoned longer ago is still rightly refused.
    pub(super) fn contains(&self, request: &RequestId) -> bool {
        self.requests.contains(request)
    }

    fn forget_before(&mut self, now: Instant) {
        while let Some(&(since, request)) = self.order.front() {
            if now.saturating_duration_since(since) < ABANDONED_FOR {
                break;
            }
            self.order.pop_front();
            self.requests.remove(&request);
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        debug_assert_eq!(self.requests.len(), self.order.len());
        self.requests.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::GlobalOwner;

    fn request(seq: u64) -> RequestId {
        RequestId {
            owner: GlobalOwner { node: 2, local: 1 },
            seq,
        }
    }

    #[test]
    fn requests_are_remembered_for_a_while_then_forgotten_in_order() {
        let start = Instant::now();
        let mut abandoned = Abandoned::default();
        abandoned.insert(request(1), start);
        abandoned.insert(request(2), start + Duration::from_secs(30));
        // Abandoned twice: remembered once, from the first time.
        abandoned.insert(request(1), start + Duration::from_secs(31));
        assert_eq!(abandoned.len(), 2);
        abandoned.insert(request(3), start + ABANDONED_FOR - Duration::from_millis(1));
        assert!(abandoned.contains(&request(1)));
        assert!(!abandoned.contains(&request(4)));
        // A minute after request 1: it is forgotten, the later ones are not.
        abandoned.insert(request(4), start + ABANDONED_FOR);
        assert!(!abandoned.contains(&request(1)));
        assert!(abandoned.contains(&request(2)));
        assert_eq!(abandoned.len(), 3);
        abandoned.insert(request(5), start + ABANDONED_FOR * 2);
        assert!(!abandoned.contains(&request(2)));
        assert!(!abandoned.contains(&request(4)));
        assert_eq!(abandoned.len(), 1);
    }

    #[test]
    fn a_flood_of_abandons_stays_bounded_by_the_memory() {
        let start = Instant::now();
        let mut abandoned = Abandoned::default();
        // 100 a second for five minutes: about a minute's worth is remembered at any time.
        for i in 0..30_000u64 {
            abandoned.insert(request(i), start + Duration::from_millis(i * 10));
        }
        assert_eq!(abandoned.len(), 6_000);
        assert!(abandoned.contains(&request(29_999)));
        assert!(!abandoned.contains(&request(23_999)));
    }
}
