//! Releasing the locks of a node that is gone.
//!
//! A gRPC client holds its locks through its connection to one node. If that node is gone —
//! not heard from for the whole session grace — its clients' connections are gone with it, so
//! the leader releases their holds (and cancels their waits) exactly as if each connection had
//! closed. Silence counts only while this node leads (before, as a follower, it did not hear
//! from other followers at all). By the time this happens, a node that is merely cut off has
//! already closed its clients' connections, at half the grace, so no client still believes in
//! a lock given away here. REST sessions belong to no node: they end by idle expiry only.

use std::collections::BTreeSet;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use super::Leader;
use crate::command::GlobalOwner;
use crate::liveness::Liveness;
use crate::raft::NodeId;

/// How often the leader looks for gone nodes.
const CHECK_EVERY: Duration = Duration::from_millis(200);

/// Starts the task (it stops with the leader).
pub(super) fn start(
    leader: &Arc<Leader>,
    me: NodeId,
    liveness: Arc<Liveness>,
    grace: Duration,
) -> tokio::task::JoinHandle<()> {
    let weak: Weak<Leader> = Arc::downgrade(leader);
    let leading_since = Instant::now();
    tokio::spawn(async move {
        let mut released: BTreeSet<NodeId> = BTreeSet::new();
        let mut ticks = tokio::time::interval(CHECK_EVERY);
        loop {
            ticks.tick().await;
            let Some(leader) = weak.upgrade() else {
                return;
            };
            if leader.is_deposed() {
                return;
            }
            let members: Vec<NodeId> = leader
                .raft
                .metrics()
                .borrow()
                .membership_config
                .membership()
                .nodes()
                .map(|(&id, _)| id)
                .filter(|&id| id != me)
                .collect();
            for node in members {
                let silence = liveness.silence(node).min(leading_since.elapsed());
                if silence <= grace {
                    released.remove(&node);
                    continue;
                }
                if !released.insert(node) {
                    continue;
                }
                let owners = leader.owners_on(node).await;
                tracing::warn!(
                    node,
                    silence_ms = silence.as_millis() as u64,
                    clients = owners.len(),
                    "Cluster node gone: releasing its clients' locks"
                );
                if let Err(error) = leader.end_clients(&owners).await {
                    tracing::warn!(%error, node, "Could not release a gone node's clients");
                    released.remove(&node);
                }
            }
        }
    })
}

impl Leader {
    /// The clients of node `node` that hold or wait for something here.
    pub(super) async fn owners_on(&self, node: NodeId) -> Vec<GlobalOwner> {
        let mut owners = self.machine.replica().await.owners_on(node);
        owners.extend(
            self.owners
                .lock()
                .keys()
                .filter(|o| o.node == node)
                .copied(),
        );
        owners.sort_unstable();
        owners.dedup();
        owners
    }
}
