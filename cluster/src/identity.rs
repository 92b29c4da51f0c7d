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
//! written to `cluster-id` in the data directory before the node sends anything. Every peer
//! message carries the sender's id, and a node refuses a message from another cluster with an
//! error that says what to do. A fresh node started with `--cluster_join` takes the id of the
//! cluster whose first message reaches it (the leader's, once it was added). A node whose
//! data directory was made by a version without ids has none and checks nothing, as before;
//! a message without an id (from such a node, or an older build) is accepted.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use uuid::Uuid;

use crate::raft::NodeId;
use crate::storage::{FileError, frame};

const MAGIC: &[u8; 8] = b"LDLMCLID";
const FILE: &str = "cluster-id";
/// The namespace of cluster ids (a random UUID, fixed forever).
const NAMESPACE: Uuid = Uuid::from_u128(0x5c1d_0e2a_7b3f_4c8e_9a61_d2f0_b4e7_3a95);
/// Refusals are logged at most this often (the refused node retries every heartbeat).
const LOG_EVERY_MS: u64 = 10_000;

/// This node's cluster id, and where it is kept.
#[derive(Debug)]
pub struct ClusterIdentity {
    path: PathBuf,
    id: Mutex<Uuid>,
    /// Without an id: take the first one a peer presents (a fresh node that joins).
    adopt: std::sync::atomic::AtomicBool,
    started: std::time::Instant,
    /// When a refusal was last logged (ms since `started`, plus one; 0: never).
    last_logged: AtomicU64,
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
    /// The id kept in `dir`, if any (nil otherwise).
    pub fn open(dir: &Path) -> Result<ClusterIdentity, FileError> {
        let path = dir.join(FILE);
        let id = match frame::read(&path)? {
            None => Uuid::nil(),
            Some(bytes) => {
                let parsed = frame::parse(&path, MAGIC, &bytes)?;
                match parsed.records.last() {
                    Some(record) => Uuid::from_bytes(record.decode(&path)?),
                    None => Uuid::nil(),
                }
            }
        };
        Ok(ClusterIdentity {
            path,
            id: Mutex::new(id),
            adopt: std::sync::atomic::AtomicBool::new(false),
            started: std::time::Instant::now(),
            last_logged: AtomicU64::new(0),
        })
    }

    /// This node's cluster id (nil: not known yet).
    pub fn id(&self) -> Uuid {
        *self.id.lock()
    }

    /// This node forms a cluster of `members`: keeps its id, unless it has one already.
    pub fn form(&self, members: &BTreeMap<NodeId, String>) -> Result<(), FileError> {
        let mut id = self.id.lock();
        if id.is_nil() {
            let formed = cluster_id(members);
            self.store(formed)?;
            *id = formed;
        }
        Ok(())
    }

    /// This fresh node waits to be added to a cluster: it takes the id of the first cluster
    /// that sends it a message.
    pub fn join(&self) {
        self.adopt.store(true, Ordering::Relaxed);
    }

    /// Whether a message from a node of cluster `theirs` (nil: unknown) may be handled. A
    /// joining node without an id takes `theirs` (and keeps it); a node without an id that is
    /// not joining checks nothing. The error says what is wrong and what to do.
    pub fn admit(&self, theirs: Uuid) -> Result<(), String> {
        if theirs.is_nil() {
            return Ok(());
        }
        let mut ours = self.id.lock();
        if *ours == theirs {
            return Ok(());
        }
        if ours.is_nil() {
            if !self.adopt.load(Ordering::Relaxed) {
                return Ok(());
            }
            match self.store(theirs) {
                Ok(()) => {
                    tracing::info!(cluster = %theirs, "Joined cluster {theirs}");
                    *ours = theirs;
                    return Ok(());
                }
                Err(error) => return Err(format!("cannot keep the cluster's id: {error}")),
            }
        }
        let refusal = format!(
            "a node of cluster {theirs} sent a message to this node of cluster {ours}: the two \
             were formed with different --cluster_peers (or one's data directory is from \
             another cluster). Every node forming a cluster must be given the same \
             --cluster_peers (a node added later: --cluster_join, then `ldlm-lock cluster add`); \
             to fix a node started with the wrong list, stop it, remove its data directory and \
             start it again with the right one"
        );
        let now = self.started.elapsed().as_millis() as u64 + 1;
        let last = self.last_logged.load(Ordering::Relaxed);
        if last == 0 || now.saturating_sub(last) >= LOG_EVERY_MS {
            self.last_logged.store(now, Ordering::Relaxed);
            tracing::error!(ours = %ours, theirs = %theirs, "Refused a peer of another cluster: {refusal}");
        }
        Err(refusal)
    }

    /// An identity that knows no cluster and keeps nothing (for tests of senders).
    #[cfg(test)]
    pub(crate) fn for_tests() -> ClusterIdentity {
        ClusterIdentity {
            path: PathBuf::from("/nonexistent/cluster-id"),
            id: Mutex::new(Uuid::nil()),
            adopt: std::sync::atomic::AtomicBool::new(false),
            started: std::time::Instant::now(),
            last_logged: AtomicU64::new(0),
        }
    }

    fn store(&self, id: Uuid) -> Result<(), FileError> {
        let mut bytes = MAGIC.to_vec();
        frame::encode(&mut bytes, 1, id.as_bytes());
        frame::write_atomic(&self.path, &bytes)
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
        assert_eq!(cluster_id(&a), cluster_id(&a.clone()));
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
        let identity = ClusterIdentity::open(dir.path()).expect("open");
        assert!(identity.id().is_nil());
        identity.form(&a).expect("form");
        assert_eq!(identity.id(), cluster_id(&a));

        // Kept across restarts, and forming again (a restart with another list) changes nothing.
        let again = ClusterIdentity::open(dir.path()).expect("reopen");
        assert_eq!(again.id(), cluster_id(&a));
        again.form(&b).expect("form again");
        assert_eq!(again.id(), cluster_id(&a));

        again.admit(cluster_id(&a)).expect("same cluster");
        again.admit(Uuid::nil()).expect("a sender without an id");
        let refused = again.admit(cluster_id(&b)).expect_err("another cluster");
        for part in [
            "--cluster_peers",
            "remove its data directory",
            "--cluster_join",
        ] {
            assert!(refused.contains(part), "{part:?} in {refused}");
        }
        assert_eq!(again.id(), cluster_id(&a), "a refusal changes nothing");
    }

    #[test]
    fn a_joining_node_takes_the_id_of_the_first_cluster_that_reaches_it_others_none() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = cluster_id(&members(&[(1, "a:1")]));
        let b = cluster_id(&members(&[(1, "b:1")]));
        let unknown = ClusterIdentity::open(dir.path()).expect("open");
        unknown.admit(a).expect("checks nothing");
        unknown.admit(b).expect("checks nothing");
        assert!(unknown.id().is_nil(), "only a joining node takes an id");

        let joining = ClusterIdentity::open(dir.path()).expect("open");
        joining.join();
        joining.admit(a).expect("taken");
        assert_eq!(joining.id(), a);
        assert_eq!(ClusterIdentity::open(dir.path()).expect("reopen").id(), a);
        joining
            .admit(b)
            .expect_err("another cluster, once it has one");
    }

    #[test]
    fn a_damaged_id_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join(FILE), b"LDLMCLIDgarbage!").expect("write");
        let error = ClusterIdentity::open(dir.path()).expect_err("damaged");
        assert!(error.to_string().contains(FILE), "{error}");
    }
}
