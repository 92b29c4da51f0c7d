//! # ldlm-cluster
//!
//! Cluster mode: several `ldlm-server` nodes serving one lock table that survives losing a
//! minority of them. Consensus is openraft's; what is replicated is the **leader's engine's
//! effects**, not client commands: the leader runs the engine exactly as a single server does
//! (waiters, FIFO hand-off, leases, fencing tokens), its event sink appends the changes to the
//! Raft log, and a grant is answered only once its entry is committed on a quorum. Followers
//! keep a [`Replica`] of the committed holds, sessions and tokens, from which a new leader
//! rebuilds its engine.
//!
//! Modules:
//!
//! - [`raft`]: the openraft type configuration (every openraft type behind one module);
//! - [`command`]: what the log carries (engine events with cluster-wide owners and request
//!   ids, REST sessions);
//! - [`replica`]: the committed lock table, a pure function of the log;
//! - [`storage`]: the log, the vote and snapshots on disk (fdatasync before openraft counts an
//!   entry, group commit, damage reported with file and offset);
//! - [`peer`]: the peer service (Raft's messages and forwarded calls over gRPC) and
//!   openraft's network;
//! - [`node`]: one node's Raft, storage and peer service; fresh nodes with the same peer list
//!   form the cluster themselves;
//! - [`leader`]: the leader's lock service — the single-server engine restored from the
//!   replica, its changes committed through the log (group commit) before they are answered;
//! - [`forward`] and [`forwarder`]: the calls a node sends the leader for its clients, and
//!   how they travel (alone, or several to a message under load);
//! - [`service`]: the lock service of a node, which `ldlm-server` runs in cluster mode: each
//!   call to the local leader or forwarded, re-sent (exactly once) as the leader changes;
//! - [`identity`]: the cluster's id, so that nodes of different clusters refuse each other;
//! - [`liveness`], [`owners`], [`released`]: contact with the other nodes, cluster-wide owner
//!   ids, and the keys of recently released holds.

pub mod command;
pub mod forward;
pub mod forwarder;
pub mod identity;
pub mod leader;
pub mod liveness;
pub mod node;
pub mod owners;
pub mod peer;
pub mod raft;
pub mod released;
pub mod replica;
pub mod service;
pub mod storage;

pub use command::{Applied, Command, GlobalOwner, ReplicatedEvent, RequestId};
pub use node::{ClusterNode, NodeConfig, NodeError, PeerTls};
pub use replica::Replica;
