//! Membership changes at the leader (`ldlm-lock cluster add` / `remove`).
//!
//! - **Add**: the node (started with `--cluster_join`, so it formed no cluster of its own)
//!   becomes a learner and catches up — from the log, or from a snapshot if the log it needs
//!   was purged — and then a voter, through openraft's joint consensus (the old and the new
//!   voter sets must both agree while the change is under way). Adding a member again at the
//!   same address is a no-op; at another address it is refused (remove it first).
//! - **Remove**: a voter leaves the voter set (never the last one), a learner the node list.
//!   The removed node's pings are refused from then on (see `calls.rs`), so it is cut off
//!   within half the session grace and closes its clients' connections; the leader releases
//!   their locks once the whole grace has passed (see `gone.rs`), as for a node that died.

use std::collections::BTreeSet;
use std::time::Duration;

use openraft::ChangeMembers;

use super::Leader;
use crate::forward::{Answer, CallError};
use crate::raft::{Node, NodeId};

/// How long a new node may take to catch up as a learner before the add is given up.
const CATCH_UP: Duration = Duration::from_secs(60);

impl Leader {
    fn membership(&self) -> openraft::Membership<NodeId, Node> {
        self.raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .clone()
    }

    pub(super) async fn add_member(
        &self,
        id: NodeId,
        address: String,
    ) -> Result<Answer, CallError> {
        let membership = self.membership();
        if let Some(node) = membership.get_node(&id) {
            if node.addr != address {
                return Err(CallError::Refused(format!(
                    "node {id} is already a member, at {}: remove it first to move it",
                    node.addr
                )));
            }
            if membership.voter_ids().any(|voter| voter == id) {
                return Ok(Answer::MembershipChanged {
                    index: self.membership_index(),
                });
            }
        }
        let added = tokio::time::timeout(
            CATCH_UP,
            self.raft.add_learner(id, Node::new(address.clone()), true),
        )
        .await;
        match added {
            Err(_) => {
                return Err(CallError::Refused(format!(
                    "node {id} at {address} did not catch up within {} s: is it running, started \
                     with --cluster_join, and reachable from the leader at that address? It \
                     stays a learner until removed (ldlm-lock cluster remove {id})",
                    CATCH_UP.as_secs()
                )));
            }
            Ok(Err(error)) => return Err(not_changed(error)),
            Ok(Ok(_)) => {}
        }
        let changed = self
            .raft
            .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
            .await
            .map_err(not_changed)?;
        tracing::info!(node = id, %address, "Cluster member added");
        Ok(Answer::MembershipChanged {
            index: changed.log_id.index,
        })
    }

    pub(super) async fn remove_member(&self, id: NodeId) -> Result<Answer, CallError> {
        let membership = self.membership();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        if membership.get_node(&id).is_none() {
            let members: Vec<NodeId> = membership.nodes().map(|(&id, _)| id).collect();
            return Err(CallError::Refused(format!(
                "node {id} is not a member (the members are {members:?})"
            )));
        }
        let change = if voters.contains(&id) {
            if voters.len() == 1 {
                return Err(CallError::Refused(format!(
                    "node {id} is the last voter: a cluster cannot remove its last voter"
                )));
            }
            ChangeMembers::RemoveVoters(BTreeSet::from([id]))
        } else {
            ChangeMembers::RemoveNodes(BTreeSet::from([id]))
        };
        let changed = self
            .raft
            .change_membership(change, false)
            .await
            .map_err(not_changed)?;
        tracing::info!(node = id, "Cluster member removed");
        Ok(Answer::MembershipChanged {
            index: changed.log_id.index,
        })
    }

    /// The log index of the current membership.
    fn membership_index(&self) -> u64 {
        self.raft
            .metrics()
            .borrow()
            .membership_config
            .log_id()
            .map_or(0, |id| id.index)
    }

    /// True if node `id` is a member (voter or learner) now. (Asked on every ping: no copy of
    /// the membership.)
    pub(super) fn is_member(&self, id: NodeId) -> bool {
        crate::node::with_member(&self.raft, id, |_| ()).is_some()
    }

    /// The members' ids (voters and learners), now.
    pub(super) fn member_ids(&self) -> BTreeSet<NodeId> {
        self.raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .nodes()
            .map(|(&id, _)| id)
            .collect()
    }
}

/// A membership change openraft refused or could not commit.
fn not_changed(error: impl std::fmt::Display) -> CallError {
    CallError::NotCommitted(format!("the membership change was not made: {error}"))
}
