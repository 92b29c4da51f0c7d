//! Group commit: the event sink, the writer thread, durability waits and compaction.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ldlm_engine::{Engine, Event, EventSink, Grant};

use ldlm_service::driver::Clock;
use parking_lot::{Condvar, Mutex};
use tracing::{error, info, warn};

use crate::format::{self, MAGIC};
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
    /// The writer sleeps on the condvar; the next record must wake it.
    writer_idle: bool,
    closing: bool,
}

/// Durable progress as seen by waiters: (last durable sequence number, first write error).
type Progress = (u64, Option<Arc<str>>);

struct Inner {
    path: PathBuf,
    batch: Mutex<Batch>,
    wake: Condvar,
    progress: tokio::sync::watch::Sender<Progress>,
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

/// A handle transports use to wait until a grant is on disk.
#[derive(Clone)]
pub struct Durability {
    progress: tokio::sync::watch::Receiver<Progress>,
}

impl std::fmt::Debug for Durability {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Durability")
            .field("durable", &self.progress.borrow().0)
            .finish()
    }
}

/// The state file could not be written: the grant is not durable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DurabilityError(pub String);

impl std::fmt::Display for DurabilityError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the state file could not be written: {}", self.0)
    }
}

impl std::error::Error for DurabilityError {}

impl Durability {
    /// Resolves once record `seq` (a grant's `durable_seq`) is on disk. `seq` 0 (no state file)
    /// resolves at once.
    pub async fn wait(&self, seq: u64) -> Result<(), DurabilityError> {
        if seq == 0 {
            return Ok(());
        }
        let mut progress = self.progress.clone();
        let result = progress
            .wait_for(|(durable, failed)| *durable >= seq || failed.is_some())
            .await;
        match result {
            Ok(state) if state.0 >= seq => Ok(()),
            Ok(state) => Err(DurabilityError(
                state.1.as_deref().unwrap_or("unknown error").to_string(),
            )),
            Err(_) => Err(DurabilityError("the state file was closed".into())),
        }
    }

    /// Resolves once `grant` (of lock `name`) is on disk: the transports' "durable before
    /// locked" (DESIGN §4.5). If it cannot be written, **or if this future is dropped first**
    /// (the client cancelled, its connection closed), the grant is given back to `engine`: no
    /// slot stays held under a key nobody will ever learn.
    pub async fn confirm(
        &self,
        engine: &Engine,
        clock: &Clock,
        name: &str,
        grant: &Grant,
    ) -> Result<(), DurabilityError> {
        let mut give_back = GiveBack {
            engine,
            clock,
            name,
            grant,
            armed: true,
        };
        let result = self.wait(grant.durable_seq).await;
        give_back.armed = result.is_err();
        result
    }
}

/// Unlocks a grant when dropped armed (see [`Durability::confirm`]).
struct GiveBack<'a> {
    engine: &'a Engine,
    clock: &'a Clock,
    name: &'a str,
    grant: &'a Grant,
    armed: bool,
}

impl Drop for GiveBack<'_> {
    fn drop(&mut self) {
        if self.armed {
            let mut key = [0u8; 36];
            let key = self.grant.key.encode(&mut key);
            let _ = self.engine.unlock(self.name, key, self.clock.now());
        }
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
            let grant = match event {
                Event::Granted {
                    name,
                    key,
                    size,
                    fencing_token,
                    ..
                } => {
                    format::encode_grant(scratch, name, key, size, fencing_token);
                    true
                }
                Event::Released { name, key } => {
                    format::encode_release(scratch, name, key);
                    false
                }
            };
            // Sequence numbers and bytes are assigned under one lock, so the file holds the
            // records in sequence order.
            let mut batch = self.batch.lock();
            batch.bytes.extend_from_slice(scratch);
            if grant {
                batch.grants += 1;
            } else {
                batch.releases += 1;
            }
            batch.seq += 1;
            if batch.writer_idle {
                batch.writer_idle = false;
                self.wake.notify_one();
            }
            batch.seq
        })
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
    let mut bytes = Vec::with_capacity(64 + loaded.holds.len() * 64);
    bytes.extend_from_slice(MAGIC);
    format::encode_floor(&mut bytes, loaded.fencing_floor);
    for hold in &loaded.holds {
        format::encode_grant(
            &mut bytes,
            &hold.name,
            hold.key,
            hold.size,
            hold.fencing_token,
        );
    }
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
        let (progress, _) = tokio::sync::watch::channel((0, None));
        let inner = Arc::new(Inner {
            path: path.to_path_buf(),
            batch: Mutex::new(Batch::default()),
            wake: Condvar::new(),
            progress,
        });
        let live = loaded.holds.len() as u64;
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

    /// A handle to wait for durability.
    pub fn durability(&self) -> Durability {
        Durability {
            progress: self.inner.progress.subscribe(),
        }
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
        let (bytes, seq, grants, releases, closing) = {
            let mut batch = inner.batch.lock();
            while batch.bytes.is_empty() && !batch.closing {
                batch.writer_idle = true;
                inner.wake.wait(&mut batch);
            }
            let bytes = std::mem::replace(&mut batch.bytes, std::mem::take(&mut spare));
            let counts = (
                std::mem::take(&mut batch.grants),
                std::mem::take(&mut batch.releases),
            );
            (bytes, batch.seq, counts.0, counts.1, batch.closing)
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
                    ldlm_service::metrics::record_commit(grants + releases, started.elapsed());
                    inner.progress.send_modify(|p| p.0 = seq);
                }
                Err(e) => {
                    if !broken {
                        error!(state_file = %inner.path.display(), error = %e, "Cannot write the state file; no grant can be confirmed until the server is restarted");
                    }
                    broken = true;
                    let message: Arc<str> = Arc::from(e.to_string());
                    inner.progress.send_modify(|p| {
                        p.1.get_or_insert(message);
                    });
                }
            }
            records_in_file += grants + releases;
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
    info!(state_file = %inner.path.display(), held = loaded.holds.len(), "Compacted the state file");
    Ok((file, loaded.holds.len() as u64))
}
