//! When this node last heard from each other node: the basis of `last_contact_ms` in
//! `ldlm-lock cluster status`, of releasing the locks of a node that is gone, and of a cut-off
//! node closing its clients.
//!
//! Contact is counted on both sides of the peer service: a leader hears from a follower when
//! the follower answers its heartbeat or replication; a follower hears from the leader when
//! the leader's heartbeat or replication arrives. Raft sends heartbeats every tenth of the
//! election timeout, so a live peer is never silent for long.

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
    /// The longest silence that ended since [`Liveness::take_longest_gap`] was last asked: a
    /// silence can end (a paused process resumes, a partition heals) between two looks.
    longest_gap: Duration,
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
        let now = Instant::now();
        let mut contacts = self.contacts.lock();
        let previous = contacts.get(&node).copied();
        let gap = previous.map_or(Duration::ZERO, |c| now.duration_since(c.last));
        let longest_gap = previous.map_or(gap, |c| c.longest_gap.max(gap));
        contacts.insert(
            node,
            Contact {
                last: now,
                longest_gap,
            },
        );
    }

    /// The longest silence from `node` that ended since the last call (and forgets it).
    pub fn take_longest_gap(&self, node: NodeId) -> Duration {
        self.contacts
            .lock()
            .get_mut(&node)
            .map_or(Duration::ZERO, |c| std::mem::take(&mut c.longest_gap))
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
        std::thread::sleep(Duration::from_millis(30));
        liveness.heard_from(2);
        assert!(liveness.take_longest_gap(2) >= Duration::from_millis(30));
        assert_eq!(liveness.take_longest_gap(2), Duration::ZERO, "asked once");
    }
}
