//! [`StateMachine`]: the [`Replica`] as openraft applies committed entries to it, and its
//! snapshots.
//!
//! The replica lives in memory; what makes it durable is the log (everything after the last
//! snapshot is re-applied at start) and the snapshot file `snapshot` in
//! `--cluster_data_dir`, replaced atomically each time a snapshot is built or installed. So a
//! restarted node loads its snapshot and replays the log's tail, and a node that fell too far
//! behind gets the leader's snapshot. Snapshots are the replica serialized (postcard), built
//! from a clone taken under the lock, off the apply path. Building runs beside the installs of
//! the leader's snapshots, so writes of the file take turns, and a snapshot that finishes
//! last never replaces a newer one (the log before the newer one may be purged already).
//!
//! **Commit hook.** The leader's grants wait for their entries to be committed. openraft tells
//! a writer so only after the apply, through its core and a responder: three task hand-offs
//! more on every grant's path. So the leader registers its term here ([`StateMachine::
//! watch_commits`]) and queues the last event number of each `Events` entry it hands to Raft
//! ([`StateMachine::expect_commit`]); `apply` reports it as committed as soon as it has applied
//! the entry. The mapping is exact: only the leader's committer writes `Events` entries, one
//! at a time and in order, and the hook counts only entries of the leader's own term. It
//! reports after the replica has applied the entry, as openraft's answer would.

use std::collections::VecDeque;
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ldlm_service::CommitSender;
use serde::{Deserialize, Serialize};
use tokio::sync::RwLock;

use super::frame::{self, FileError};
use crate::command::Applied;
use crate::raft::{
    CommittedLeaderId, Entry, EntryPayload, ErrorSubject, ErrorVerb, LogId, RaftSnapshotBuilder,
    RaftStateMachine, Snapshot, SnapshotMeta, StorageError, StoredMembership, TypeConfig,
    storage_error,
};
use crate::replica::Replica;

const SNAPSHOT_MAGIC: &[u8; 8] = b"LDLMSNAP";
const META: u8 = 1;
const DATA: u8 = 2;

/// The applied state.
#[derive(Debug, Default)]
struct Applied_ {
    replica: Replica,
    /// Keys of the latest released holds (not in snapshots), for re-sent Unlocks.
    released: crate::released::RecentlyReleased,
    last_applied: Option<LogId>,
    membership: StoredMembership,
    /// The current snapshot: its description and its bytes (the replica, encoded).
    snapshot: Option<(SnapshotMeta, Vec<u8>)>,
    snapshots_built: u64,
}

/// What the snapshot file stores about a snapshot.
#[derive(Serialize, Deserialize)]
struct StoredMeta {
    meta: SnapshotMeta,
}

/// The state machine of one node. Cheap to clone: clones share it.
#[derive(Clone, Debug)]
pub struct StateMachine {
    path: PathBuf,
    state: Arc<RwLock<Applied_>>,
    /// The last log id of the snapshot in the file. Held while the file is written: the
    /// snapshot builder runs in a task of its own, beside the installs of the leader's
    /// snapshots, and both write the same file.
    in_file: Arc<parking_lot::Mutex<Option<LogId>>>,
    hook: Arc<parking_lot::Mutex<Option<CommitHook>>>,
}

/// The leader whose commits `apply` reports (see the module doc).
#[derive(Debug)]
struct CommitHook {
    /// The leader's term and node: its entries carry it in their log ids.
    leader: CommittedLeaderId,
    /// The last event number of each `Events` entry the leader handed to Raft and has not seen
    /// applied, in log order.
    pending: VecDeque<u64>,
    commits: Arc<CommitSender>,
}

impl StateMachine {
    /// Opens the state machine of `dir`: its last snapshot, if there is one.
    pub fn open(dir: &Path) -> Result<StateMachine, FileError> {
        std::fs::create_dir_all(dir).map_err(|e| FileError::io(dir, e))?;
        let path = dir.join("snapshot");
        let mut state = Applied_::default();
        if let Some(bytes) = frame::read(&path)? {
            let parsed = frame::parse(&path, SNAPSHOT_MAGIC, &bytes)?;
            let (Some(meta), Some(data)) = (
                parsed.records.iter().find(|r| r.kind == META),
                parsed.records.iter().find(|r| r.kind == DATA),
            ) else {
                return Err(FileError::Damaged {
                    path,
                    offset: 0,
                    detail: "the snapshot is incomplete".into(),
                });
            };
            let StoredMeta { meta } = meta.decode(&path)?;
            let data: Vec<u8> = data.decode(&path)?;
            state.replica = decode_replica(&data).map_err(|detail| FileError::Damaged {
                path: path.clone(),
                offset: 0,
                detail,
            })?;
            state.last_applied = meta.last_log_id;
            state.membership = meta.last_membership.clone();
            state.snapshot = Some((meta, data));
        }
        Ok(StateMachine {
            path,
            in_file: Arc::new(parking_lot::Mutex::new(state.last_applied)),
            state: Arc::new(RwLock::new(state)),
            hook: Arc::default(),
        })
    }

    /// From now on, reports the commit of each `Events` entry of `leader` (this node, as
    /// leader of a term) to `commits`, replacing any earlier leader's hook.
    pub fn watch_commits(&self, leader: CommittedLeaderId, commits: Arc<CommitSender>) {
        *self.hook.lock() = Some(CommitHook {
            leader,
            pending: VecDeque::new(),
            commits,
        });
    }

    /// The leader is about to hand Raft an `Events` entry whose last event is `last`. Called
    /// before the entry is handed over, so `apply` cannot see it first.
    pub fn expect_commit(&self, last: u64) {
        if let Some(hook) = self.hook.lock().as_mut() {
            hook.pending.push_back(last);
        }
    }

    /// Stops reporting to `leader` (it stepped down).
    pub fn stop_watching(&self, leader: CommittedLeaderId) {
        let mut hook = self.hook.lock();
        if hook.as_ref().is_some_and(|hook| hook.leader == leader) {
            *hook = None;
        }
    }

    /// Reports the applied `Events` entries of the hooked leader (`entries` are their leader
    /// ids), in log order.
    fn report_commits(&self, entries: &[CommittedLeaderId]) {
        let mut hook = self.hook.lock();
        let Some(hook) = hook.as_mut() else { return };
        let mut last = None;
        for leader in entries {
            if *leader == hook.leader {
                last = hook.pending.pop_front().or(last);
            }
        }
        if let Some(last) = last {
            hook.commits.committed(last);
        }
    }

    /// A copy of the replica as applied so far.
    pub async fn replica(&self) -> Replica {
        self.state.read().await.replica.clone()
    }

    /// `read` applied to the replica as applied so far (no copy).
    pub async fn read<T>(&self, read: impl FnOnce(&Replica) -> T) -> T {
        read(&self.state.read().await.replica)
    }

    /// The grant committed for `request`, if the replica still remembers it.
    pub async fn grant_for(
        &self,
        request: crate::RequestId,
    ) -> Option<crate::replica::RecentGrant> {
        self.state.read().await.replica.grant_for(request).cloned()
    }

    /// Whether the hold with `key` was released recently (see [`crate::released`]).
    pub async fn was_released(&self, key: u128) -> bool {
        self.state.read().await.released.contains(key)
    }

    /// The last applied log id.
    pub async fn last_applied(&self) -> Option<LogId> {
        self.state.read().await.last_applied
    }

    /// Writes the snapshot file, unless it already holds this snapshot or a newer one: a
    /// snapshot built from the replica may finish after a newer one of the leader's was
    /// installed, and must not replace it (the log before the newer one is purged). Returns
    /// whether it wrote.
    fn persist(&self, meta: &SnapshotMeta, data: &[u8]) -> Result<bool, StorageError> {
        let mut in_file = self.in_file.lock();
        if in_file.is_some() && meta.last_log_id <= *in_file {
            return Ok(false);
        }
        let mut bytes = SNAPSHOT_MAGIC.to_vec();
        frame::encode(&mut bytes, META, &StoredMeta { meta: meta.clone() });
        frame::encode(&mut bytes, DATA, &data);
        frame::write_atomic(&self.path, &bytes).map_err(|e| {
            storage_error(
                ErrorSubject::Snapshot(Some(meta.signature())),
                ErrorVerb::Write,
                e,
            )
        })?;
        *in_file = meta.last_log_id;
        Ok(true)
    }
}

fn decode_replica(data: &[u8]) -> Result<Replica, String> {
    postcard::from_bytes(data).map_err(|e| format!("the replica does not decode: {e}"))
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot, StorageError> {
        let (replica, last_applied, membership, number) = {
            let mut state = self.state.write().await;
            state.snapshots_built += 1;
            (
                state.replica.clone(),
                state.last_applied,
                state.membership.clone(),
                state.snapshots_built,
            )
        };
        let data = postcard::to_stdvec(&replica)
            .map_err(|e| storage_error(ErrorSubject::StateMachine, ErrorVerb::Read, e))?;
        let snapshot_id = match last_applied {
            Some(last) => format!("{}-{}-{number}", last.leader_id, last.index),
            None => format!("--{number}"),
        };
        let meta = SnapshotMeta {
            last_log_id: last_applied,
            last_membership: membership,
            snapshot_id,
        };
        self.persist(&meta, &data)?;
        let mut state = self.state.write().await;
        // The current snapshot stays the newest one, whichever finished last.
        if state
            .snapshot
            .as_ref()
            .is_none_or(|(current, _)| current.last_log_id < meta.last_log_id)
        {
            state.snapshot = Some((meta.clone(), data.clone()));
        }
        drop(state);
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = StateMachine;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let state = self.state.read().await;
        Ok((state.last_applied, state.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Applied>, StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let mut state = self.state.write().await;
        let mut answers = Vec::new();
        // The leader ids of the `Events` entries applied, for the commit hook.
        let mut events_of = Vec::new();
        for entry in entries {
            state.last_applied = Some(entry.log_id);
            answers.push(match entry.payload {
                EntryPayload::Blank => Applied::default(),
                EntryPayload::Normal(ref command) => {
                    if let crate::Command::Events(events) = command {
                        events_of.push(entry.log_id.leader_id);
                        for event in events {
                            if let crate::ReplicatedEvent::Released { key, .. } = event {
                                state.released.insert(*key);
                            }
                        }
                    }
                    state.replica.apply(command)
                }
                EntryPayload::Membership(ref membership) => {
                    state.membership =
                        StoredMembership::new(Some(entry.log_id), membership.clone());
                    Applied::default()
                }
            });
        }
        drop(state);
        if !events_of.is_empty() {
            self.report_commits(&events_of);
        }
        Ok(answers)
    }

    async fn get_snapshot_builder(&mut self) -> StateMachine {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let data = snapshot.into_inner();
        let replica = decode_replica(&data).map_err(|detail| {
            storage_error(
                ErrorSubject::Snapshot(Some(meta.signature())),
                ErrorVerb::Read,
                std::io::Error::other(detail),
            )
        })?;
        self.persist(meta, &data)?;
        let mut state = self.state.write().await;
        state.replica = replica;
        state.last_applied = meta.last_log_id;
        state.membership = meta.last_membership.clone();
        state.snapshot = Some((meta.clone(), data));
        tracing::info!(
            last_index = meta.last_log_id.map(|id| id.index),
            "Installed the leader's snapshot: caught up from it"
        );
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        let state = self.state.read().await;
        Ok(state.snapshot.as_ref().map(|(meta, data)| Snapshot {
            meta: meta.clone(),
            snapshot: Box::new(Cursor::new(data.clone())),
        }))
    }
}
