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
//! This crate is being built in steps. Present so far:
//!
//! - [`raft`]: the openraft type configuration (every openraft type behind one module);
//! - [`command`]: what the log carries (engine events with cluster-wide owners and request
//!   ids, REST sessions);
//! - [`replica`]: the committed lock table, a pure function of the log;
//! - [`storage`]: the log, the vote and snapshots on disk (fdatasync before openraft counts an
//!   entry, group commit, damage reported with file and offset);
//! - [`peer`]: the peer service (Raft's messages over gRPC) and openraft's network;
//! - [`node`]: one node's Raft, storage and peer service; fresh nodes with the same peer list
//!   form the cluster themselves;
//! - [`leader`]: the leader's lock service — the single-server engine restored from the
//!   replica, its changes committed through the log (group commit) before they are answered;
//! - [`owners`]: cluster-wide owner ids inside the engine's owner ids.
//!
//! Still to come (and not reachable from `ldlm-server` until then): the lock service that routes
//! each call to the local leader or forwards it (with exactly-once re-sends), REST sessions in
//! the log, node liveness, and the `--cluster_*` options.

pub mod command;
pub mod forward;
pub mod forwarder;
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
