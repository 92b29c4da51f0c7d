//! Reading a state file back: checksums, torn tails, replay to the set of held locks.
//!
//! A crash can only damage the *end* of an append-only log: the last record may be cut short or
//! half-written. So a record that runs past the end of the file, or the very last record with a
//! bad checksum, is a **torn tail**: it is dropped with a warning (its grant was never confirmed
//! to a client, since confirmation waits for the fsync). Anything else — a bad checksum with more
//! data after it, an undecodable record, holds that contradict each other — is **damage**: the
//! server refuses to start with a message naming the file and the byte offset, never panics and
//! never silently truncates.

use std::fmt;
use std::path::{Path, PathBuf};

use ldlm_engine::HoldRecord;

use crate::format::{self, MAGIC, MAGIC_V1, MAX_PAYLOAD, RECORD_HEADER, Record};
use crate::holds::HoldTable;

/// What a state file holds.
#[derive(Clone, Debug, Default)]
pub struct Loaded {
    /// The held locks and the fencing floor.
    pub table: HoldTable,
    /// Records read.
    pub records: usize,
    /// A torn tail that was dropped: (offset, bytes).
    pub torn_tail: Option<(u64, u64)>,
}

/// Why a state file cannot be used. Every variant names the file.
#[derive(Debug)]
pub enum LoadError {
    /// It could not be read.
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// It is damaged (or not a state file) at `offset`.
    Damaged {
        /// The file.
        path: PathBuf,
        /// Byte offset of the bad record.
        offset: u64,
        /// What is wrong.
        detail: String,
    },
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadError::Io { path, source } => {
                write!(f, "cannot read state file {}: {source}", path.display())
            }
            LoadError::Damaged {
                path,
                offset,
                detail,
            } => write!(
                f,
                "state file {} is damaged at byte {offset}: {detail}. Nothing was changed; restore a \
                 backup, or move the file away to start with no locks",
                path.display()
            ),
        }
    }
}

impl Loaded {
    /// Every held slot.
    pub fn holds(&self) -> Vec<HoldRecord> {
        self.table.records()
    }

    /// The highest fencing token ever handed out: new tokens must continue above it.
    pub fn fencing_floor(&self) -> u64 {
        self.table.fencing_floor()
    }
}

impl std::error::Error for LoadError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            LoadError::Io { source, .. } => Some(source),
            LoadError::Damaged { .. } => None,
        }
    }
}

/// What a file that does not start with a state file's magic is.
const BAD_MAGIC: &str = "not an LDLM state file of this version or an earlier one (bad magic: a newer version may \
     have written it)";

/// Reads and replays the state file at `path`; a missing or empty file is an empty state.
pub fn load(path: &Path) -> Result<Loaded, LoadError> {
    load_expecting(path, None)
}

/// [`load`] when the caller knows about how many locks the file holds (compaction does: the
/// live set), so the replay table is sized for them rather than for every record in the log,
/// which at compaction time is at least twice as many.
pub fn load_expecting(path: &Path, locks: Option<usize>) -> Result<Loaded, LoadError> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Loaded::default()),
        Err(source) => {
            return Err(LoadError::Io {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    parse_expecting(&bytes, locks).map_err(|(offset, detail)| LoadError::Damaged {
        path: path.to_path_buf(),
        offset,
        detail,
    })
}

/// Replays a state file's bytes. `Err((offset, detail))` on damage. Never panics, whatever the
/// input (the `state_file` fuzz target holds it to that).
pub fn parse(bytes: &[u8]) -> Result<Loaded, (u64, String)> {
    parse_expecting(bytes, None)
}

/// [`parse`], sizing the replay table for `locks` locks when given (else for one per record).
fn parse_expecting(bytes: &[u8], locks: Option<usize>) -> Result<Loaded, (u64, String)> {
    let mut loaded = Loaded::default();
    if bytes.is_empty() {
        return Ok(loaded);
    }
    if bytes.len() < MAGIC.len() {
        if MAGIC.starts_with(bytes) || MAGIC_V1.starts_with(bytes) {
            loaded.torn_tail = Some((0, bytes.len() as u64));
            return Ok(loaded);
        }
        return Err((0, BAD_MAGIC.into()));
    }
    let magic = &bytes[..MAGIC.len()];
    if magic != MAGIC && magic != MAGIC_V1 {
        return Err((0, BAD_MAGIC.into()));
    }
    let estimate = locks.unwrap_or(bytes.len() / 48);
    let table = &mut loaded.table;
    *table = HoldTable::with_capacity(estimate);
    let mut at = MAGIC.len();
    while at < bytes.len() {
        let offset = at as u64;
        let rest = &bytes[at..];
        if rest.len() < RECORD_HEADER || rest.iter().all(|&b| b == 0) {
            // Cut short, or blocks the filesystem allocated but never wrote (zeros).
            loaded.torn_tail = Some((offset, rest.len() as u64));
            break;
        }
        let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        let crc = u32::from_le_bytes([rest[4], rest[5], rest[6], rest[7]]);
        if len > MAX_PAYLOAD {
            return Err((offset, format!("record length {len} is too large")));
        }
        if RECORD_HEADER + len > rest.len() {
            loaded.torn_tail = Some((offset, rest.len() as u64));
            break;
        }
        let payload = &rest[RECORD_HEADER..RECORD_HEADER + len];
        let is_last = RECORD_HEADER + len == rest.len();
        if crc32fast::hash(payload) != crc {
            if is_last {
                loaded.torn_tail = Some((offset, rest.len() as u64));
                break;
            }
            return Err((offset, "checksum mismatch".into()));
        }
        let record = format::decode(payload).map_err(|detail| (offset, detail))?;
        loaded.records += 1;
        match record {
            Record::TokenFloor(floor) => table.raise_floor(floor),
            Record::Grant {
                name,
                key,
                size,
                token,
                lease_seconds,
            } => table
                .grant(name, key, size, token, lease_seconds)
                .map_err(|detail| (offset, detail))?,
            Record::Lease {
                name,
                key,
                lease_seconds,
            } => table.set_lease(name, key, lease_seconds),
            // A release of something not held is harmless (e.g. written twice): ignored.
            Record::Release { name, key } => table.release(name, key),
        }
        at += RECORD_HEADER + len;
    }
    Ok(loaded)
}
