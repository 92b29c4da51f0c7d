//! Releasing the locks of a node that is gone.
//!
//! A gRPC client holds its locks through its connection to one node. If that node is gone —
//! not heard from for the whole session grace — its clients' connections are gone with it, so
//! the leader releases their holds (and cancels their waits) exactly as if each connection had
//! closed. Silence counts only while this node leads (before, as a follower, it did not hear
//! from other followers at all). By the time this happens, a node that is merely cut off has
//! already closed its clients' connections, at half the grace, so no client still believes in
//! a lock given away here. REST sessions belong to no node: they end by idle expiry only.
//!
//! A node that is no longer a member (removed with `ldlm-lock cluster remove`) counts as
//! silent from the moment this leader first sees its clients' holds without it among the
//! members: its pings are refused, so it is cut off within half the grace, and its clients'
//! locks are released after the whole grace, as a dead node's.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use super::Leader;
use crate::command::GlobalOwner;
use crate::liveness::Liveness;
use crate::raft::NodeId;

/// How often the leader looks for gone nodes.
const CHECK_EVERY: Duration = Duration::from_millis(200);
/// How often it looks again for clients of nodes that are not members.
const RESCAN_EVERY: Duration = Duration::from_secs(5);

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
        // Nodes with clients here that are not members, and since when this leader knows.
        let mut absent_since: BTreeMap<NodeId, Instant> = BTreeMap::new();
        let mut with_clients: BTreeSet<NodeId> = BTreeSet::new();
        let mut scanned: Option<(Instant, BTreeSet<NodeId>)> = None;
        let mut ticks = tokio::time::interval(CHECK_EVERY);
        loop {
            ticks.tick().await;
            let Some(leader) = weak.upgrade() else {
                return;
            };
            if leader.is_deposed() {
                return;
            }
            let members = leader.member_ids();
            // Which nodes have clients here is a scan of every hold: done on this leader's
            // first look, when the members change, and every few seconds (a removed node's
            // clients may still have been served in the moments before it was cut off).
            if scanned
                .as_ref()
                .is_none_or(|(at, of)| *of != members || at.elapsed() >= RESCAN_EVERY)
            {
                with_clients = leader.nodes_with_clients().await;
                scanned = Some((Instant::now(), members.clone()));
            }
            let mut watched: BTreeSet<NodeId> = members.clone();
            watched.extend(with_clients.iter().copied());
            absent_since.retain(|node, _| watched.contains(node) && !members.contains(node));
            for node in watched.into_iter().filter(|&id| id != me) {
                let silence = if members.contains(&node) {
                    liveness.silence(node).min(leading_since.elapsed())
                } else {
                    absent_since
                        .entry(node)
                        .or_insert_with(Instant::now)
                        .elapsed()
                };
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
    /// The nodes whose clients hold or wait for something here (sessions excluded).
    async fn nodes_with_clients(&self) -> BTreeSet<NodeId> {
        let mut nodes = self.machine.read(|replica| replica.owner_nodes()).await;
        nodes.extend(
            self.owners
                .lock()
                .iter()
                .filter(|(_, owner)| !owner.has_ended())
                .map(|(global, _)| global.node)
                .filter(|&node| node != 0),
        );
        nodes
    }

    /// The clients of node `node` that hold or wait for something here.
    pub(super) async fn owners_on(&self, node: NodeId) -> Vec<GlobalOwner> {
        let mut owners = self.machine.read(|replica| replica.owners_on(node)).await;
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
