//! [`LogStore`]: the Raft log and the vote, in `--cluster_data_dir`.
//!
//! - `raft.log`: an append-only file of records ([`super::frame`]): an entry, a truncation
//!   ("everything from index i on is gone", after a new leader overwrote a conflicting tail) or
//!   a purge ("everything up to log id l is in a snapshot"). Replaying it gives the live log.
//!   The live entries are also kept in memory (the log is purged behind snapshots, so it stays
//!   small), which is where reads come from.
//! - `vote`: the last vote, replaced atomically. openraft requires it durable before it acts on
//!   it, so `save_vote` writes and fsyncs before it returns. It is read back as not committed,
//!   so a restarted leader is elected again before it leads (see [`LogStore::open`]).
//!
//! **Group commit.** Appends go to one writer thread, which takes everything queued, writes it
//! with one `write` and makes it durable with one `fdatasync`, then tells openraft (the
//! `LogFlushed` callback) for each batch: openraft counts an entry as stored only then. So a
//! busy leader shares one fsync among many entries, as the state file does. Truncations and
//! purges go through the same queue (so the file keeps the order of operations) and wait for
//! their sync.
//!
//! **Compaction.** When purged entries make up most of the file, the writer rewrites it as the
//! live log (temporary file, fsync, rename, fsync of the directory) and appends there.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::ops::RangeBounds;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use super::frame::{self, FileError};
use crate::raft::{
    Entry, ErrorSubject, ErrorVerb, LogFlushed, LogId, LogState, RaftLogId, RaftLogReader,
    RaftLogStorage, StorageError, Vote, storage_error,
};

const LOG_MAGIC: &[u8; 8] = b"LDLMRLOG";
const VOTE_MAGIC: &[u8; 8] = b"LDLMVOTE";

const ENTRY: u8 = 1;
const TRUNCATE: u8 = 2;
const PURGE: u8 = 3;
const VOTE: u8 = 1;

/// Rewrite the file when it holds this many more records than the live log.
const COMPACT_SLACK: u64 = 10_000;

/// What the vote file holds.
#[derive(Serialize, Deserialize)]
struct StoredVote {
    vote: Vote,
    committed: Option<LogId>,
}

/// The live log.
#[derive(Debug, Default)]
struct Live {
    entries: BTreeMap<u64, Entry>,
    last_purged: Option<LogId>,
    vote: Option<Vote>,
    committed: Option<LogId>,
    /// Records in the file (to decide when to compact).
    records_in_file: u64,
}

/// What the writer thread is asked to do.
enum Job {
    /// Append these bytes; tell openraft when they are durable.
    Append(Vec<u8>, LogFlushed),
    /// Append these bytes; answer when they are durable.
    Write(Vec<u8>, std::sync::mpsc::Sender<std::io::Result<()>>),
    /// Replace the file with these bytes (a compacted log); answer when done.
    Rewrite(Vec<u8>, std::sync::mpsc::Sender<std::io::Result<()>>),
}

struct Shared {
    dir: PathBuf,
    live: Mutex<Live>,
    jobs: Mutex<Option<std::sync::mpsc::Sender<Job>>>,
}

/// The Raft log and vote of one node. Cheap to clone: clones (the log readers) share it.
#[derive(Clone)]
pub struct LogStore {
    shared: Arc<Shared>,
}

impl Debug for LogStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogStore")
            .field("dir", &self.shared.dir)
            .finish_non_exhaustive()
    }
}

impl LogStore {
    /// Opens (or creates) the log and the vote in `dir`.
    pub fn open(dir: &Path) -> Result<LogStore, FileError> {
        std::fs::create_dir_all(dir).map_err(|e| FileError::io(dir, e))?;
        let log_path = dir.join("raft.log");
        let mut live = Live::default();
        match frame::read(&log_path)? {
            None => frame::write_atomic(&log_path, LOG_MAGIC)?,
            Some(bytes) => {
                let parsed = frame::parse(&log_path, LOG_MAGIC, &bytes)?;
                for record in &parsed.records {
                    live.records_in_file += 1;
                    match record.kind {
                        ENTRY => {
                            let entry: Entry = record.decode(&log_path)?;
                            live.entries.insert(entry.get_log_id().index, entry);
                        }
                        TRUNCATE => {
                            let from: u64 = record.decode(&log_path)?;
                            live.entries.split_off(&from);
                        }
                        PURGE => {
                            let upto: LogId = record.decode(&log_path)?;
                            live.entries = live.entries.split_off(&(upto.index + 1));
                            live.last_purged = Some(upto);
                        }
                        kind => {
                            return Err(FileError::Damaged {
                                path: log_path,
                                offset: record.offset,
                                detail: format!("unknown record kind {kind}"),
                            });
                        }
                    }
                }
                if let Some((offset, bytes)) = parsed.torn_tail {
                    tracing::warn!(
                        file = %log_path.display(), offset, bytes,
                        "Dropped a torn record at the end of the Raft log (a crash during a write)"
                    );
                    // Cut it off, so that new records follow the last good one.
                    let file = OpenOptions::new()
                        .write(true)
                        .open(&log_path)
                        .map_err(|e| FileError::io(&log_path, e))?;
                    file.set_len(offset)
                        .and_then(|()| file.sync_all())
                        .map_err(|e| FileError::io(&log_path, e))?;
                }
            }
        }
        let vote_path = dir.join("vote");
        if let Some(bytes) = frame::read(&vote_path)? {
            let parsed = frame::parse(&vote_path, VOTE_MAGIC, &bytes)?;
            if let Some(record) = parsed.records.last() {
                let stored: StoredVote = record.decode(&vote_path)?;
                // Read back as not committed: a node that led when it stopped must win a new
                // election before it leads again. openraft would otherwise restart it as
                // leader of the same term at once, but its own log may lack entries the
                // cluster committed without it (a leader sends entries to its followers before
                // its own write is durable, and a quorum of followers commits them): as leader
                // it would write different entries under the same log ids.
                let mut vote = stored.vote;
                vote.committed = false;
                live.vote = Some(vote);
                live.committed = stored.committed;
            }
        }
        let file = OpenOptions::new()
            .append(true)
            .mode(0o600)
            .open(&log_path)
            .map_err(|e| FileError::io(&log_path, e))?;
        let (jobs, queue) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("ldlm-raft-log".into())
            .spawn({
                let path = log_path.clone();
                move || write_loop(&path, file, &queue)
            })
            .map_err(|e| FileError::io(&log_path, e))?;
        Ok(LogStore {
            shared: Arc::new(Shared {
                dir: dir.to_path_buf(),
                live: Mutex::new(live),
                jobs: Mutex::new(Some(jobs)),
            }),
        })
    }

    fn send(&self, job: Job) -> Result<(), StorageError> {
        let jobs = self.shared.jobs.lock();
        let sent = jobs.as_ref().map(|jobs| jobs.send(job));
        match sent {
            Some(Ok(())) => Ok(()),
            _ => Err(write_error(std::io::Error::other(
                "the Raft log writer stopped",
            ))),
        }
    }

    /// Appends `bytes` and waits until they are durable.
    fn write_and_wait(&self, bytes: Vec<u8>, rewrite: bool) -> Result<(), StorageError> {
        let (done, wait) = std::sync::mpsc::channel();
        self.send(if rewrite {
            Job::Rewrite(bytes, done)
        } else {
            Job::Write(bytes, done)
        })?;
        match wait.recv() {
            Ok(result) => result.map_err(write_error),
            Err(_) => Err(write_error(std::io::Error::other(
                "the Raft log writer stopped",
            ))),
        }
    }

    /// The highest log id openraft reported committed.
    pub fn committed(&self) -> Option<LogId> {
        self.shared.live.lock().committed
    }

    /// Stops the writer after it has written everything queued.
    pub fn close(&self) {
        self.shared.jobs.lock().take();
    }

    fn entries_in<RB: RangeBounds<u64>>(&self, range: RB) -> Vec<Entry> {
        self.shared
            .live
            .lock()
            .entries
            .range(range)
            .map(|(_, entry)| entry.clone())
            .collect()
    }
}

fn write_error(error: std::io::Error) -> StorageError {
    storage_error(ErrorSubject::Logs, ErrorVerb::Write, error)
}

/// The writer thread: takes every queued job, writes them with one `write`, one `fdatasync`,
/// then reports. See the module doc.
fn write_loop(path: &Path, mut file: File, queue: &std::sync::mpsc::Receiver<Job>) {
    let mut broken: Option<String> = None;
    while let Ok(first) = queue.recv() {
        let mut batch = vec![first];
        batch.extend(queue.try_iter());
        let mut bytes = Vec::new();
        let mut done = Vec::new();
        let mut callbacks = Vec::new();
        for job in batch {
            match job {
                Job::Append(more, callback) => {
                    bytes.extend_from_slice(&more);
                    callbacks.push(callback);
                }
                Job::Write(more, reply) => {
                    bytes.extend_from_slice(&more);
                    done.push(reply);
                }
                Job::Rewrite(whole, reply) => {
                    // Write what came before it, then replace the file.
                    let result = append(&mut file, &bytes, &mut broken)
                        .and_then(|()| rewrite(path, &whole))
                        .map(|new| file = new);
                    bytes.clear();
                    finish(&result, callbacks.drain(..), done.drain(..));
                    let _ = reply.send(result);
                }
            }
        }
        let result = append(&mut file, &bytes, &mut broken);
        finish(&result, callbacks.drain(..), done.drain(..));
    }
}

/// Appends and syncs, unless an earlier write failed: after a failed write the file may end
/// in a partial record, and more appends would turn that torn tail into damage.
fn append(file: &mut File, bytes: &[u8], broken: &mut Option<String>) -> std::io::Result<()> {
    if let Some(reason) = broken {
        return Err(std::io::Error::other(format!(
            "an earlier write of the Raft log failed: {reason}"
        )));
    }
    if bytes.is_empty() {
        return Ok(());
    }
    let result = file.write_all(bytes).and_then(|()| file.sync_data());
    if let Err(error) = &result {
        tracing::error!(%error, "Cannot write the Raft log; this node stops storing entries");
        *broken = Some(error.to_string());
    }
    result
}

fn rewrite(path: &Path, whole: &[u8]) -> std::io::Result<File> {
    frame::write_atomic(path, whole).map_err(std::io::Error::other)?;
    OpenOptions::new().append(true).mode(0o600).open(path)
}

fn finish(
    result: &std::io::Result<()>,
    callbacks: impl Iterator<Item = LogFlushed>,
    done: impl Iterator<Item = std::sync::mpsc::Sender<std::io::Result<()>>>,
) {
    let again = || match result {
        Ok(()) => Ok(()),
        Err(error) => Err(std::io::Error::new(error.kind(), error.to_string())),
    };
    for callback in callbacks {
        callback.log_io_completed(again());
    }
    for reply in done {
        let _ = reply.send(again());
    }
}

impl RaftLogReader<crate::raft::TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        Ok(self.entries_in(range))
    }
}

impl RaftLogStorage<crate::raft::TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState, StorageError> {
        let live = self.shared.live.lock();
        let last = live
            .entries
            .values()
            .next_back()
            .map(|entry| *entry.get_log_id())
            .or(live.last_purged);
        Ok(LogState {
            last_purged_log_id: live.last_purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> LogStore {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        let committed = self.shared.live.lock().committed;
        self.write_vote(*vote, committed)?;
        self.shared.live.lock().vote = Some(*vote);
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        Ok(self.shared.live.lock().vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        // Kept with the vote, but not fsynced on its own: a committed log id that is lost in a
        // crash is learned again from the leader, it only lets a restarted node apply sooner.
        let mut live = self.shared.live.lock();
        live.committed = committed;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self.shared.live.lock().committed)
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let mut bytes = Vec::new();
        {
            let mut live = self.shared.live.lock();
            for entry in entries {
                frame::encode(&mut bytes, ENTRY, &entry);
                live.records_in_file += 1;
                live.entries.insert(entry.get_log_id().index, entry);
            }
        }
        self.send(Job::Append(bytes, callback))
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let mut bytes = Vec::new();
        frame::encode(&mut bytes, TRUNCATE, &log_id.index);
        {
            let mut live = self.shared.live.lock();
            live.entries.split_off(&log_id.index);
            live.records_in_file += 1;
        }
        self.write_and_wait(bytes, false)
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let (bytes, rewrite) = {
            let mut live = self.shared.live.lock();
            live.entries = live.entries.split_off(&(log_id.index + 1));
            live.last_purged = Some(log_id);
            live.records_in_file += 1;
            let keep = live.entries.len() as u64 + 1;
            if live.records_in_file > 2 * keep + COMPACT_SLACK {
                let mut whole = LOG_MAGIC.to_vec();
                frame::encode(&mut whole, PURGE, &log_id);
                for entry in live.entries.values() {
                    frame::encode(&mut whole, ENTRY, entry);
                }
                live.records_in_file = keep;
                (whole, true)
            } else {
                let mut bytes = Vec::new();
                frame::encode(&mut bytes, PURGE, &log_id);
                (bytes, false)
            }
        };
        self.write_and_wait(bytes, rewrite)
    }
}

impl LogStore {
    fn write_vote(&self, vote: Vote, committed: Option<LogId>) -> Result<(), StorageError> {
        let mut bytes = VOTE_MAGIC.to_vec();
        frame::encode(&mut bytes, VOTE, &StoredVote { vote, committed });
        frame::write_atomic(&self.shared.dir.join("vote"), &bytes)
            .map_err(|e| storage_error(ErrorSubject::Vote, ErrorVerb::Write, e))
    }
}
