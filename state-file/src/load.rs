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

use hashbrown::HashMap;
use ldlm_engine::{HoldRecord, LockKey};
use smallvec::SmallVec;

use crate::format::{self, MAGIC, MAX_PAYLOAD, RECORD_HEADER, Record};

/// What a state file holds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Loaded {
    /// Held slots, in file order.
    pub holds: Vec<HoldRecord>,
    /// The highest fencing token ever handed out: new tokens must continue above it.
    pub fencing_floor: u64,
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

impl std::error::Error for LoadError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            LoadError::Io { source, .. } => Some(source),
            LoadError::Damaged { .. } => None,
        }
    }
}

/// The replayed table: name → (size, holders as (key, token)).
type Replay<'a> =
    HashMap<&'a str, (u32, SmallVec<[(LockKey, u64); 1]>), foldhash::fast::RandomState>;

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
        if MAGIC.starts_with(bytes) {
            loaded.torn_tail = Some((0, bytes.len() as u64));
            return Ok(loaded);
        }
        return Err((0, "not an LDLM state file (bad magic)".into()));
    }
    if &bytes[..MAGIC.len()] != MAGIC {
        return Err((0, "not an LDLM state file (bad magic)".into()));
    }
    // Names borrow from `bytes`: replaying a million records allocates per lock, not per record.
    let estimate = locks.unwrap_or(bytes.len() / 48);
    let mut locks: Replay<'_> = HashMap::with_capacity_and_hasher(estimate, Default::default());
    let mut order: Vec<&str> = Vec::with_capacity(estimate);
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
            Record::TokenFloor(floor) => loaded.fencing_floor = loaded.fencing_floor.max(floor),
            Record::Grant {
                name,
                key,
                size,
                token,
            } => {
                loaded.fencing_floor = loaded.fencing_floor.max(token);
                if size == 0 {
                    return Err((offset, format!("lock {name:?} is stored with size 0")));
                }
                let entry = locks.entry(name).or_insert_with(|| {
                    order.push(name);
                    (size, SmallVec::new())
                });
                if entry.1.is_empty() {
                    entry.0 = size;
                } else if entry.0 != size {
                    return Err((
                        offset,
                        format!(
                            "lock {name:?} is held with size {} and granted with size {size}",
                            entry.0
                        ),
                    ));
                }
                if entry.1.iter().any(|(k, _)| *k == key) {
                    return Err((offset, format!("lock {name:?} has key {key} granted twice")));
                }
                entry.1.push((key, token));
                if entry.1.len() > entry.0 as usize {
                    return Err((
                        offset,
                        format!("lock {name:?} has more holders than its size {}", entry.0),
                    ));
                }
            }
            Record::Release { name, key } => {
                // A release of something not held is harmless (e.g. written twice): ignore it.
                if let Some(entry) = locks.get_mut(name) {
                    entry.1.retain(|(k, _)| *k != key);
                }
            }
        }
        at += RECORD_HEADER + len;
    }
    loaded.holds.reserve(order.len());
    for name in order {
        if let Some((size, holders)) = locks.remove(name) {
            for (key, token) in holders {
                loaded.holds.push(HoldRecord {
                    name: name.to_string(),
                    key,
                    size,
                    fencing_token: token,
                });
            }
        }
    }
    Ok(loaded)
}
