//! Group commit: the event sink, the writer thread, durability waits and compaction.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ldlm_engine::{Event, EventSink};
use ldlm_service::{CommitSender, Commits, commit_channel};
use parking_lot::{Condvar, Mutex};
use tracing::{error, info, warn};

use crate::format;
use crate::load::{self, LoadError, Loaded};

/// Compact when the log holds this many more records than twice the live holds (and nothing is
/// waiting to be written; past 4 × (live + slack) records, compact regardless).
const COMPACT_SLACK: u64 = 100_000;

/// How long the writer must have had nothing to write before it compacts (see `write_loop`).
const COMPACT_QUIET: std::time::Duration = std::time::Duration::from_millis(20);

/// Records waiting for the writer, and its state.
#[derive(Default)]
struct Batch {
    bytes: Vec<u8>,
    /// Sequence number of the last record appended to `bytes`.
    seq: u64,
    grants: u64,
    releases: u64,
    /// Records that change no hold's presence (lease lengths).
    other: u64,
    /// The writer sleeps on the condvar; the next record must wake it.
    writer_idle: bool,
    closing: bool,
}

struct Inner {
    path: PathBuf,
    batch: Mutex<Batch>,
    wake: Condvar,
    progress: CommitSender,
}

/// An open state file: the engine's event sink plus its writer thread. See the module docs.
pub struct StateFile {
    inner: Arc<Inner>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl std::fmt::Debug for StateFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateFile")
            .field("path", &self.inner.path)
            .finish()
    }
}

thread_local! {
    /// Where [`Inner::record`] encodes a record before taking the batch mutex, so the mutex is
    /// held only for a copy (threads expiring a burst of leases in parallel all record).
    static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl EventSink for Inner {
    fn record(&self, event: Event<'_>) -> u64 {
        SCRATCH.with_borrow_mut(|scratch| {
            scratch.clear();
            let change = format::encode_event(scratch, &event);
            // Sequence numbers and bytes are assigned under one lock, so the file holds the
            // records in sequence order.
            let mut batch = self.batch.lock();
            batch.bytes.extend_from_slice(scratch);
            match change {
                format::HoldChange::Added => batch.grants += 1,
                format::HoldChange::Removed => batch.releases += 1,
                format::HoldChange::Unchanged => batch.other += 1,
            }
            batch.seq += 1;
            if batch.writer_idle {
                batch.writer_idle = false;
                self.wake.notify_one();
            }
            batch.seq
        })
    }

    fn last_seq(&self) -> u64 {
        self.batch.lock().seq
    }
}

fn io_error(path: &Path, source: std::io::Error) -> LoadError {
    LoadError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes `loaded` as a fresh, compacted state file: new file, fsync, rename, fsync directory.
fn write_compacted(path: &Path, loaded: &Loaded) -> std::io::Result<()> {
    let mut bytes = Vec::new();
    loaded.table.encode_snapshot(&mut bytes);
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".compacting");
    let tmp = PathBuf::from(tmp);
    {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(&bytes)?;
        file.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    File::open(dir)?.sync_all()?;
    Ok(())
}

fn open_append(path: &Path) -> std::io::Result<File> {
    OpenOptions::new().append(true).mode(0o600).open(path)
}

impl StateFile {
    /// Loads the state file at `path` (missing = empty), rewrites it compacted and starts the
    /// writer. Returns what it held, for [`ldlm_engine::Engine::restore`].
    pub fn open(path: &Path) -> Result<(Arc<StateFile>, Loaded), LoadError> {
        let loaded = load::load(path)?;
        if let Some((offset, bytes)) = loaded.torn_tail {
            warn!(
                state_file = %path.display(), offset, bytes,
                "Dropped a torn record at the end of the state file (a crash during a write)"
            );
        }
        write_compacted(path, &loaded).map_err(|e| io_error(path, e))?;
        let file = open_append(path).map_err(|e| io_error(path, e))?;
        let (progress, _) = commit_channel();
        let inner = Arc::new(Inner {
            path: path.to_path_buf(),
            batch: Mutex::new(Batch::default()),
            wake: Condvar::new(),
            progress,
        });
        let live = loaded.table.len() as u64;
        let writer = {
            let inner = inner.clone();
            std::thread::Builder::new()
                .name("ldlm-state-file".into())
                .spawn(move || write_loop(&inner, file, live))
                .map_err(|e| io_error(path, e))?
        };
        Ok((
            Arc::new(StateFile {
                inner,
                writer: Mutex::new(Some(writer)),
            }),
            loaded,
        ))
    }

    /// The sink to give the engine ([`ldlm_engine::Engine::with_event_sink`]).
    pub fn sink(&self) -> Arc<dyn EventSink> {
        self.inner.clone()
    }

    /// What the lock service waits on: a grant is answered "locked" once its record is on
    /// disk.
    pub fn commits(&self) -> Commits {
        self.inner.progress.subscribe()
    }

    /// Writes what is buffered, fsyncs it, and stops the writer. Idempotent.
    pub fn close(&self) {
        {
            let mut batch = self.inner.batch.lock();
            batch.closing = true;
            self.inner.wake.notify_one();
        }
        if let Some(writer) = self.writer.lock().take() {
            let _ = writer.join();
        }
    }
}

impl Drop for StateFile {
    fn drop(&mut self) {
        self.close();
    }
}

/// The writer thread: take the whole buffer, write it, fsync, publish; compact now and then.
fn write_loop(inner: &Inner, mut file: File, mut live: u64) {
    let mut spare = Vec::new();
    let mut records_in_file = live + 1;
    // After a failed write the file may end in a partial record: appending more would turn that
    // torn tail into damage in the middle. So after the first error nothing more is written.
    let mut broken = false;
    loop {
        let (bytes, seq, grants, releases, other, closing) = {
            let mut batch = inner.batch.lock();
            while batch.bytes.is_empty() && !batch.closing {
                batch.writer_idle = true;
                inner.wake.wait(&mut batch);
            }
            let bytes = std::mem::replace(&mut batch.bytes, std::mem::take(&mut spare));
            let counts = (
                std::mem::take(&mut batch.grants),
                std::mem::take(&mut batch.releases),
                std::mem::take(&mut batch.other),
            );
            (
                bytes,
                batch.seq,
                counts.0,
                counts.1,
                counts.2,
                batch.closing,
            )
        };
        if !bytes.is_empty() {
            let started = std::time::Instant::now();
            let written = if broken {
                Err(std::io::Error::other("an earlier write failed"))
            } else {
                file.write_all(&bytes).and_then(|()| file.sync_data())
            };
            match written {
                Ok(()) => {
                    ldlm_service::metrics::record_commit(
                        grants + releases + other,
                        started.elapsed(),
                    );
                    inner.progress.committed(seq);
                }
                Err(e) => {
                    if !broken {
                        error!(state_file = %inner.path.display(), error = %e, "Cannot write the state file; no grant can be confirmed until the server is restarted");
                    }
                    broken = true;
                    inner
                        .progress
                        .failed(&format!("the state file could not be written: {e}"));
                }
            }
            records_in_file += grants + releases + other;
            live = (live + grants).saturating_sub(releases);
        }
        spare = bytes;
        spare.clear();
        if closing {
            // Anything recorded after `closing` was set is written by the loop above first.
            if inner.batch.lock().bytes.is_empty() {
                return;
            }
            continue;
        }
        // Compaction stops appends (no grant becomes durable meanwhile) and takes CPU, so it
        // waits for a quiet moment (nothing to write for COMPACT_QUIET) — unless the log has
        // grown far past the threshold, which sustained load must not postpone forever.
        let due = records_in_file > 2 * live + COMPACT_SLACK;
        let overdue = records_in_file > 4 * (live + COMPACT_SLACK);
        if !broken && (overdue || (due && quiet(inner))) {
            match compact(inner, live) {
                Ok((new_file, held)) => {
                    file = new_file;
                    live = held;
                    records_in_file = held + 1;
                }
                Err(e) => {
                    error!(state_file = %inner.path.display(), error = %e, "State file compaction failed; appending to the old file");
                    records_in_file = 0;
                }
            }
        }
    }
}

/// Waits up to [`COMPACT_QUIET`] for records to write; true if none came.
fn quiet(inner: &Inner) -> bool {
    let mut batch = inner.batch.lock();
    if !batch.bytes.is_empty() || batch.closing {
        return false;
    }
    batch.writer_idle = true;
    let _ = inner.wake.wait_for(&mut batch, COMPACT_QUIET);
    batch.writer_idle = false;
    batch.bytes.is_empty() && !batch.closing
}

/// Rewrites the log as its live set. Runs on the writer thread, so nothing is appended meanwhile.
/// `live`: the holds the log should contain (sizes the replay table).
fn compact(inner: &Inner, live: u64) -> Result<(File, u64), String> {
    let loaded =
        load::load_expecting(&inner.path, Some(live as usize)).map_err(|e| e.to_string())?;
    write_compacted(&inner.path, &loaded).map_err(|e| e.to_string())?;
    let file = open_append(&inner.path).map_err(|e| e.to_string())?;
    info!(state_file = %inner.path.display(), held = loaded.table.len(), "Compacted the state file");
    Ok((file, loaded.table.len() as u64))
}
