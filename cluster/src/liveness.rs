//! When this node last heard from each other node: the basis of `last_contact_ms` in
//! `ldlm-lock cluster status` and of the leader releasing the locks of a node that is gone.
//!
//! Contact is counted on both sides of the peer service: a leader hears from a follower when
//! the follower answers its heartbeat or replication, or pings it; a follower hears from the
//! leader when the leader's heartbeat or replication arrives. Raft sends heartbeats every
//! tenth of the election timeout, so a live peer is never silent for long. (Whether a follower
//! is cut off is decided by round trips instead, which one-way contact cannot fake: see the
//! service's `ping_leader`.)

use std::collections::HashMap;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::raft::NodeId;

/// Last contact per node. See the module doc.
#[derive(Debug)]
pub struct Liveness {
    started: Instant,
    contacts: Mutex<HashMap<NodeId, Contact>>,
}

/// Contact with one node.
#[derive(Debug, Clone, Copy)]
struct Contact {
    last: Instant,
}

impl Default for Liveness {
    fn default() -> Self {
        Liveness {
            started: Instant::now(),
            contacts: Mutex::new(HashMap::new()),
        }
    }
}

impl Liveness {
    /// Node `node` was heard from just now.
    pub fn heard_from(&self, node: NodeId) {
        self.contacts.lock().insert(
            node,
            Contact {
                last: Instant::now(),
            },
        );
    }

    /// How long since node `node` was last heard from; never heard from counts from the start
    /// of this process (a node that never answered has been silent that long).
    pub fn silence(&self, node: NodeId) -> Duration {
        let since = self
            .contacts
            .lock()
            .get(&node)
            .map_or(self.started, |c| c.last);
        since.elapsed()
    }

    /// When node `node` was last heard from, if ever.
    pub fn last_contact(&self, node: NodeId) -> Option<Duration> {
        self.contacts.lock().get(&node).map(|c| c.last.elapsed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn silence_counts_from_the_last_contact_or_the_start() {
        let liveness = Liveness::default();
        std::thread::sleep(Duration::from_millis(20));
        assert!(liveness.silence(2) >= Duration::from_millis(20));
        assert_eq!(liveness.last_contact(2), None);
        liveness.heard_from(2);
        assert!(liveness.silence(2) < Duration::from_millis(20));
        assert!(liveness.last_contact(2).is_some());
    }
}
