//! Every openraft type the cluster uses, in one place: an openraft upgrade touches this module.
//!
//! The log carries [`Command`]s (what the leader's engine did, plus REST sessions); applying
//! one answers an [`Applied`]. Nodes are numbered with `u64` ids and reached at a `host:port`
//! ([`openraft::BasicNode`]).

use std::io::Cursor;

use crate::command::{Applied, Command};

openraft::declare_raft_types!(
    /// The cluster's Raft type configuration.
    pub TypeConfig:
        D = Command,
        R = Applied,
        NodeId = NodeId,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// A node's id: a positive integer (`--cluster_node_id`).
pub type NodeId = u64;
/// A node as the membership lists it: its peer address.
pub type Node = openraft::BasicNode;
/// One log entry.
pub type Entry = openraft::Entry<TypeConfig>;
/// What an entry carries.
pub type EntryPayload = openraft::EntryPayload<TypeConfig>;
/// A log position: (leader, term, index).
pub type LogId = openraft::LogId<NodeId>;
/// The term and node that wrote a log entry.
pub type CommittedLeaderId = openraft::CommittedLeaderId<NodeId>;
/// A node's vote (term, candidate, committed).
pub type Vote = openraft::Vote<NodeId>;
/// Which log is known to exist where: the last purged and the last present log id.
pub type LogState = openraft::LogState<TypeConfig>;
/// The membership as of a log id.
pub type StoredMembership = openraft::StoredMembership<NodeId, Node>;
/// Role, vote, leader and membership of a node, as openraft reports them when they change.
pub type RaftServerMetrics = openraft::metrics::RaftServerMetrics<NodeId, Node>;
/// Describes a snapshot.
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, Node>;
/// A snapshot with its data.
pub type Snapshot = openraft::storage::Snapshot<TypeConfig>;
/// A storage failure, as openraft wants it reported.
pub type StorageError = openraft::StorageError<NodeId>;
/// The callback that tells openraft appended entries are on disk.
pub type LogFlushed = openraft::storage::LogFlushed<TypeConfig>;

pub use openraft::storage::{RaftLogStorage, RaftStateMachine};
pub use openraft::{ErrorSubject, ErrorVerb, RaftLogId, RaftLogReader, RaftSnapshotBuilder};

/// A storage error about `subject` while doing `verb`, from an IO or decoding error.
pub fn storage_error(
    subject: ErrorSubject<NodeId>,
    verb: ErrorVerb,
    error: impl std::error::Error + 'static,
) -> StorageError {
    openraft::StorageIOError::new(subject, verb, openraft::AnyError::new(&error)).into()
}
