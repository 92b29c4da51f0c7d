//! Which cluster a node belongs to, so that nodes of different clusters refuse each other.
//!
//! Nodes given the same `--cluster_peers` form a cluster by themselves: each writes the same
//! first log entry, the initial membership, under the same log id. If one node was given a
//! different list (another port for a peer, a peer missing, a list meant for another
//! cluster), its first entry differs under that same log id. Raft takes equal log ids for
//! equal entries, so nothing would ever correct it: the node would join with a membership of
//! its own, unable to reach a peer it has the wrong address for, or campaign among nodes that
//! never agreed to be a cluster together.
//!
//! So a cluster has an id: a name-based UUID (v5) of the member list it was formed with,
//! written to `cluster-id` in the data directory before the node sends or answers anything.
//! Every peer request carries the sender's id, and a node refuses a request from another
//! cluster with an error that says what to do. A fresh node started with `--cluster_join`
//! takes the id of the cluster whose first request reaches it (the leader's, once it was
//! added). A node whose data directory was made by a version without ids has none and checks
//! nothing, as before; a request without an id (from such a node, or an older build) is
//! accepted.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use ldlm_listener::RateLimited;
use parking_lot::Mutex;
use uuid::Uuid;

use crate::raft::NodeId;
use crate::storage::{FileError, frame};

const MAGIC: &[u8; 8] = b"LDLMCLID";
const FILE: &str = "cluster-id";
const RECORD: u8 = 1;
/// The namespace of cluster ids (a random UUID, fixed forever).
const NAMESPACE: Uuid = Uuid::from_u128(0x5c1d_0e2a_7b3f_4c8e_9a61_d2f0_b4e7_3a95);

/// How a node starts on its data directory, as far as its cluster id goes.
#[derive(Debug)]
pub enum Start<'a> {
    /// A fresh node forming a cluster of these members: it keeps their id (replacing one left
    /// by an earlier start that ended before it formed anything, whose list may have been
    /// corrected since).
    Form(&'a BTreeMap<NodeId, String>),
    /// A fresh node waiting to be added (`--cluster_join`): it takes the id of the first
    /// cluster that sends it a request.
    Join,
    /// A node that formed or joined before: it keeps its id whatever `--cluster_peers` says
    /// (none, if an older build made its data directory).
    Restart,
}

/// This node's cluster id, and where it is kept. The id is set at most once: at start, or
/// by the first request a joining node admits. So every message reads it without a lock.
#[derive(Debug)]
pub struct ClusterIdentity {
    path: PathBuf,
    id: OnceLock<Uuid>,
    /// A fresh node that joins: without an id, it takes the first one a peer presents.
    joining: bool,
    /// Held while a joining node takes an id, so that the file and `id` get the same one.
    adopting: Mutex<()>,
    refusals: Mutex<RateLimited>,
}

/// The id of a cluster formed with `members` (id → peer address).
pub fn cluster_id(members: &BTreeMap<NodeId, String>) -> Uuid {
    let list = members
        .iter()
        .map(|(id, addr)| format!("{id}={addr}"))
        .collect::<Vec<_>>()
        .join(",");
    Uuid::new_v5(&NAMESPACE, list.as_bytes())
}

impl ClusterIdentity {
    /// The identity of a node starting on `dir` as `start` says; the id is on disk before
    /// this returns (before the node sends or answers anything).
    pub fn open(dir: &Path, start: Start<'_>) -> Result<ClusterIdentity, FileError> {
        let path = dir.join(FILE);
        let identity = ClusterIdentity::unset(path, matches!(start, Start::Join));
        let id = match start {
            Start::Form(members) => {
                let formed = cluster_id(members);
                identity.store(formed)?;
                Some(formed)
            }
            Start::Join | Start::Restart => {
                frame::read_single(&identity.path, MAGIC, RECORD)?.map(Uuid::from_bytes)
            }
        };
        if let Some(id) = id {
            let _ = identity.id.set(id);
        }
        Ok(identity)
    }

    fn unset(path: PathBuf, joining: bool) -> ClusterIdentity {
        ClusterIdentity {
            path,
            id: OnceLock::new(),
            joining,
            adopting: Mutex::new(()),
            refusals: Mutex::new(RateLimited::default()),
        }
    }

    /// This node's cluster id (nil: not known yet).
    pub fn id(&self) -> Uuid {
        self.id.get().copied().unwrap_or_else(Uuid::nil)
    }

    /// Whether a message from a node of cluster `theirs` (nil: unknown) may be handled. A
    /// joining node without an id takes `theirs` (and keeps it); a node without an id that is
    /// not joining checks nothing. The error says what is wrong and what to do.
    pub fn admit(&self, theirs: Uuid) -> Result<(), String> {
        if theirs.is_nil() {
            return Ok(());
        }
        let ours = match self.id.get() {
            Some(&ours) => ours,
            None if !self.joining => return Ok(()),
            None => {
                // Kept on disk before it is used.
                let _adopting = self.adopting.lock();
                if self.id.get().is_none() {
                    self.store(theirs)
                        .map_err(|error| format!("cannot keep the cluster's id: {error}"))?;
                    let _ = self.id.set(theirs);
                    tracing::info!(cluster = %theirs, "Joined cluster {theirs}");
                }
                self.id()
            }
        };
        if ours == theirs {
            Ok(())
        } else {
            Err(self.refuse(ours, theirs))
        }
    }

    /// The refusal of a message from cluster `theirs` at this node of cluster `ours`, logged
    /// at most every [`ldlm_listener::WARN_EVERY`].
    fn refuse(&self, ours: Uuid, theirs: Uuid) -> String {
        let refusal = format!(
            "a node of cluster {theirs} sent a message to this node of cluster {ours}, and nodes \
             of different clusters do not talk: they were formed with different --cluster_peers \
             (or one's data directory is from another cluster). A node that joins or replaces a \
             member of a running cluster must start with --cluster_join and be added \
             (`ldlm-lock cluster add`); nodes forming a new cluster must all be given the same \
             --cluster_peers. To fix a node started the wrong way, stop it, remove its data \
             directory and start it again"
        );
        if let Some(suppressed) = self.refusals.lock().due() {
            tracing::error!(
                ours = %ours, theirs = %theirs, suppressed,
                "Refused a peer of another cluster: {refusal}"
            );
        }
        refusal
    }

    /// An identity that knows no cluster and keeps nothing (for tests of senders).
    #[cfg(test)]
    pub(crate) fn for_tests() -> ClusterIdentity {
        ClusterIdentity::unset(PathBuf::from("/nonexistent/cluster-id"), false)
    }

    fn store(&self, id: Uuid) -> Result<(), FileError> {
        frame::write_single(&self.path, MAGIC, RECORD, id.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(list: &[(u64, &str)]) -> BTreeMap<NodeId, String> {
        list.iter().map(|&(id, a)| (id, a.to_owned())).collect()
    }

    #[test]
    fn the_id_is_the_member_list_s_and_nothing_else() {
        let a = members(&[(1, "a:1"), (2, "b:1"), (3, "c:1")]);
        // Stable across builds: nodes of different versions must agree.
        assert_eq!(
            cluster_id(&a).to_string(),
            Uuid::new_v5(&NAMESPACE, b"1=a:1,2=b:1,3=c:1").to_string()
        );
        for other in [
            members(&[(1, "a:1"), (2, "b:2"), (3, "c:1")]),
            members(&[(1, "a:1"), (2, "b:1")]),
            members(&[(1, "a:1"), (2, "b:1"), (4, "c:1")]),
        ] {
            assert_ne!(cluster_id(&a), cluster_id(&other), "{other:?}");
        }
    }

    #[test]
    fn a_formed_id_is_kept_and_refuses_other_clusters() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = members(&[(1, "a:1"), (2, "b:1"), (3, "c:1")]);
        let b = members(&[(1, "a:1"), (2, "b:2"), (3, "c:1")]);
        let identity = ClusterIdentity::open(dir.path(), Start::Form(&a)).expect("form");
        assert_eq!(identity.id(), cluster_id(&a));

        // Kept across restarts (a restarted node does not form again, whatever its list).
        let again = ClusterIdentity::open(dir.path(), Start::Restart).expect("reopen");
        assert_eq!(again.id(), cluster_id(&a));

        again.admit(cluster_id(&a)).expect("same cluster");
        again.admit(Uuid::nil()).expect("a sender without an id");
        let refused = again.admit(cluster_id(&b)).expect_err("another cluster");
        for part in ["--cluster_peers", "remove its data", "--cluster_join"] {
            assert!(refused.contains(part), "{part:?} in {refused}");
        }
        assert_eq!(again.id(), cluster_id(&a), "a refusal changes nothing");
    }

    #[test]
    fn a_joining_node_takes_the_id_of_the_first_cluster_that_reaches_it_others_none() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = cluster_id(&members(&[(1, "a:1")]));
        let b = cluster_id(&members(&[(1, "b:1")]));
        let unknown = ClusterIdentity::open(dir.path(), Start::Restart).expect("open");
        unknown.admit(a).expect("checks nothing");
        unknown.admit(b).expect("checks nothing");
        assert!(unknown.id().is_nil(), "only a joining node takes an id");

        let joining = ClusterIdentity::open(dir.path(), Start::Join).expect("open");
        joining.admit(a).expect("taken");
        assert_eq!(joining.id(), a);
        assert_eq!(
            ClusterIdentity::open(dir.path(), Start::Restart)
                .expect("reopen")
                .id(),
            a
        );
        joining
            .admit(b)
            .expect_err("another cluster, once it has one");
    }

    #[test]
    fn a_fresh_node_started_again_with_a_corrected_list_forms_with_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let wrong = members(&[(1, "a:1"), (2, "b:2")]);
        let right = members(&[(1, "a:1"), (2, "b:1")]);
        ClusterIdentity::open(dir.path(), Start::Form(&wrong)).expect("form");
        let again = ClusterIdentity::open(dir.path(), Start::Form(&right)).expect("form again");
        assert_eq!(again.id(), cluster_id(&right));
        assert_eq!(
            ClusterIdentity::open(dir.path(), Start::Restart)
                .expect("reopen")
                .id(),
            cluster_id(&right)
        );
    }

    /// Any damage is an error naming the file, never an id silently lost (which would turn
    /// the check off): a flipped bit, a cut file, a record of another kind.
    #[test]
    fn a_damaged_id_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(FILE);
        ClusterIdentity::open(dir.path(), Start::Form(&members(&[(1, "a:1")]))).expect("form");
        let good = std::fs::read(&path).expect("read");
        let mut flipped = good.clone();
        *flipped.last_mut().expect("bytes") ^= 1;
        let mut other_kind = MAGIC.to_vec();
        frame::encode(&mut other_kind, RECORD + 1, Uuid::nil().as_bytes());
        for (what, bytes) in [
            ("a flipped bit", flipped),
            ("a cut file", good[..good.len() - 3].to_vec()),
            ("only the magic", MAGIC.to_vec()),
            ("another kind", other_kind),
            ("garbage", b"LDLMCLIDgarbage!".to_vec()),
        ] {
            std::fs::write(&path, &bytes).expect("write");
            let error = ClusterIdentity::open(dir.path(), Start::Restart).expect_err(what);
            assert!(error.to_string().contains(FILE), "{what}: {error}");
        }
    }
}
