//! The files of `--cluster_data_dir`: checksummed, versioned records, and atomic replacement.
//!
//! ```text
//! file    = MAGIC (8 bytes, one per kind of file) record*
//! record  = len: u32 LE | crc: u32 LE | payload (len bytes), crc = CRC-32 of payload
//! payload = version: u8 | kind: u8 | body (postcard)
//! ```
//!
//! A crash can only damage the end of an append-only file, so reading tells a **torn tail**
//! (the last record cut short or half-written: dropped, since nothing in it was acknowledged —
//! appends are acknowledged only after their fdatasync) from **damage** (anything else: a bad
//! record with more after it, an unknown kind, a version newer than this build). Damage is an
//! error naming the file and the byte offset, never a panic and never silently dropped data.
//! Files that are replaced as a whole (the vote, snapshots, a compacted log) are written to a
//! temporary file, fsynced, renamed over the old one, and the directory fsynced.

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;

/// The record format version this build writes; it reads this one and older.
pub const VERSION: u8 = 1;
const HEADER: usize = 8;
/// Largest record accepted (a snapshot of a very large table stays well below).
const MAX_PAYLOAD: usize = 1 << 30;

/// Why a data-dir file cannot be used. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// It could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// It is damaged (or was written by a newer version) at `offset`.
    #[error(
        "{} is damaged at byte {offset}: {detail}. Nothing was changed; restore the data \
         directory from a backup, or remove this node's data directory and add it back to the \
         cluster as a new member",
        path.display()
    )]
    Damaged {
        /// The file.
        path: PathBuf,
        /// Byte offset of the bad record.
        offset: u64,
        /// What is wrong.
        detail: String,
    },
}

impl FileError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> FileError {
        FileError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Appends one record of `kind` holding `value` to `out`.
pub fn encode(out: &mut Vec<u8>, kind: u8, value: &impl Serialize) {
    let start = out.len();
    out.extend_from_slice(&[0u8; HEADER]);
    out.push(VERSION);
    out.push(kind);
    // Encoding into a Vec cannot fail for the plain data we write (no maps with non-string
    // keys are refused by postcard); should it ever, the record is left empty and fails its
    // decoding on read, a loud error rather than a silent one.
    match postcard::to_extend(value, std::mem::take(out)) {
        Ok(extended) => *out = extended,
        Err(error) => {
            tracing::error!(%error, "Cannot encode a record");
        }
    }
    let payload_len = out.len() - start - HEADER;
    let crc = crc32fast::hash(&out[start + HEADER..]);
    out[start..start + 4].copy_from_slice(&(payload_len as u32).to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// One record read back.
#[derive(Debug)]
pub struct Record<'a> {
    /// Where it starts in the file.
    pub offset: u64,
    /// Its kind.
    pub kind: u8,
    /// Its body (postcard).
    pub body: &'a [u8],
}

impl Record<'_> {
    /// The body decoded as `T`; a decoding failure is damage at this record.
    pub fn decode<T: DeserializeOwned>(&self, path: &Path) -> Result<T, FileError> {
        postcard::from_bytes(self.body).map_err(|error| FileError::Damaged {
            path: path.to_path_buf(),
            offset: self.offset,
            detail: format!("record of kind {} does not decode: {error}", self.kind),
        })
    }
}

/// What a file holds: its records, and the torn tail dropped from its end (offset, bytes).
#[derive(Debug, Default)]
pub struct Records<'a> {
    /// The records, in file order.
    pub records: Vec<Record<'a>>,
    /// A torn tail that was dropped: (offset, bytes).
    pub torn_tail: Option<(u64, u64)>,
}

/// Splits `bytes` (a whole file, starting with `magic`) into records. See the module doc.
pub fn parse<'a>(path: &Path, magic: &[u8; 8], bytes: &'a [u8]) -> Result<Records<'a>, FileError> {
    let damaged = |offset: u64, detail: String| FileError::Damaged {
        path: path.to_path_buf(),
        offset,
        detail,
    };
    let mut parsed = Records::default();
    if bytes.len() < magic.len() {
        if magic.starts_with(bytes) {
            parsed.torn_tail = (!bytes.is_empty()).then_some((0, bytes.len() as u64));
            return Ok(parsed);
        }
        return Err(damaged(0, "not an LDLM cluster file (bad magic)".into()));
    }
    if &bytes[..magic.len()] != magic {
        return Err(damaged(
            0,
            "not an LDLM cluster file of this kind (bad magic)".into(),
        ));
    }
    let mut at = magic.len();
    while at < bytes.len() {
        let offset = at as u64;
        let rest = &bytes[at..];
        if rest.len() < HEADER || rest.iter().all(|&b| b == 0) {
            parsed.torn_tail = Some((offset, rest.len() as u64));
            break;
        }
        let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        let crc = u32::from_le_bytes([rest[4], rest[5], rest[6], rest[7]]);
        if len > MAX_PAYLOAD {
            return Err(damaged(offset, format!("record length {len} is too large")));
        }
        if HEADER + len > rest.len() {
            parsed.torn_tail = Some((offset, rest.len() as u64));
            break;
        }
        let payload = &rest[HEADER..HEADER + len];
        if crc32fast::hash(payload) != crc {
            if HEADER + len == rest.len() {
                parsed.torn_tail = Some((offset, rest.len() as u64));
                break;
            }
            return Err(damaged(offset, "checksum mismatch".into()));
        }
        let [version, kind, body @ ..] = payload else {
            return Err(damaged(offset, "record too short".into()));
        };
        if *version > VERSION {
            return Err(damaged(
                offset,
                format!(
                    "record format version {version} is newer than this build's ({VERSION}): \
                     run the newer version"
                ),
            ));
        }
        parsed.records.push(Record {
            offset,
            kind: *kind,
            body,
        });
        at += HEADER + len;
    }
    Ok(parsed)
}

/// Reads a small file that is only ever replaced as a whole ([`write_single`]) and holds one
/// record of `kind`: `None` if there is no file. Since such a file is never appended to, a
/// torn or empty one is damage, not a crash in the middle of a write.
pub fn read_single<T: DeserializeOwned>(
    path: &Path,
    magic: &[u8; 8],
    kind: u8,
) -> Result<Option<T>, FileError> {
    let Some(bytes) = read(path)? else {
        return Ok(None);
    };
    let parsed = parse(path, magic, &bytes)?;
    let damaged = |offset: u64, detail: &str| FileError::Damaged {
        path: path.to_path_buf(),
        offset,
        detail: detail.to_owned(),
    };
    if let Some((offset, _)) = parsed.torn_tail {
        return Err(damaged(
            offset,
            "the record is cut short or fails its checksum",
        ));
    }
    let record = parsed
        .records
        .last()
        .ok_or_else(|| damaged(magic.len() as u64, "no record"))?;
    if record.kind != kind {
        return Err(damaged(
            record.offset,
            &format!("a record of kind {} where {kind} was expected", record.kind),
        ));
    }
    record.decode(path).map(Some)
}

/// Replaces `path`, atomically and durably, with a file holding one record of `kind`.
pub fn write_single(
    path: &Path,
    magic: &[u8; 8],
    kind: u8,
    value: &impl Serialize,
) -> Result<(), FileError> {
    let mut bytes = magic.to_vec();
    encode(&mut bytes, kind, value);
    write_atomic(path, &bytes)
}

/// Reads a whole file; a missing file is `None`.
pub fn read(path: &Path) -> Result<Option<Vec<u8>>, FileError> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(FileError::io(path, error)),
    }
}

/// Replaces `path` with `bytes` atomically and durably: temporary file, fsync, rename, fsync of
/// the directory.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), FileError> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let io = |error| FileError::io(path, error);
    {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io)?;
        file.write_all(bytes).map_err(io)?;
        file.sync_all().map_err(io)?;
    }
    std::fs::rename(&tmp, path).map_err(io)?;
    sync_dir(path).map_err(io)
}

/// Fsyncs the directory holding `path` (so a rename or a new file survives a crash).
pub fn sync_dir(path: &Path) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAGIC: &[u8; 8] = b"LDLMTEST";

    fn file(records: &[(u8, &str)]) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        for (kind, text) in records {
            encode(&mut out, *kind, text);
        }
        out
    }

    #[test]
    fn records_round_trip() {
        let bytes = file(&[(1, "one"), (2, "two")]);
        let path = Path::new("x");
        let parsed = parse(path, MAGIC, &bytes).expect("parses");
        assert_eq!(parsed.records.len(), 2);
        assert_eq!(parsed.records[1].kind, 2);
        assert_eq!(
            parsed.records[1].decode::<String>(path).expect("decodes"),
            "two"
        );
        assert!(parsed.torn_tail.is_none());
    }

    #[test]
    fn a_torn_tail_is_dropped_and_damage_is_an_error_with_its_offset() {
        let path = Path::new("log");
        let whole = file(&[(1, "one"), (1, "two")]);
        let first_len = file(&[(1, "one")]).len();
        for cut in first_len + 1..whole.len() {
            let parsed = parse(path, MAGIC, &whole[..cut]).expect("a torn tail is no damage");
            assert_eq!(parsed.records.len(), 1);
            assert_eq!(
                parsed.torn_tail,
                Some((first_len as u64, (cut - first_len) as u64))
            );
        }
        let mut flipped = whole.clone();
        flipped[MAGIC.len() + HEADER + 3] ^= 0xff;
        match parse(path, MAGIC, &flipped) {
            Err(FileError::Damaged { offset, .. }) => assert_eq!(offset, MAGIC.len() as u64),
            other => panic!("damage in the middle must be an error: {other:?}"),
        }
        let error = parse(path, b"OTHERMAG", &whole).expect_err("bad magic");
        assert!(
            error.to_string().contains("log is damaged at byte 0"),
            "{error}"
        );
    }

    #[test]
    fn a_newer_version_is_refused() {
        let mut bytes = file(&[(1, "one")]);
        let at = MAGIC.len() + HEADER;
        bytes[at] = VERSION + 1;
        let crc = crc32fast::hash(&bytes[at..]);
        bytes[MAGIC.len() + 4..MAGIC.len() + 8].copy_from_slice(&crc.to_le_bytes());
        // Followed by another record, so it is not mistaken for a torn tail.
        encode(&mut bytes, 1, &"two");
        let error = parse(Path::new("log"), MAGIC, &bytes).expect_err("newer");
        assert!(
            error.to_string().contains("newer than this build"),
            "{error}"
        );
    }

    #[test]
    fn atomic_writes_replace_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("vote");
        write_atomic(&path, b"first").expect("write");
        write_atomic(&path, b"second").expect("write");
        assert_eq!(read(&path).expect("read").as_deref(), Some(&b"second"[..]));
        assert_eq!(read(&dir.path().join("missing")).expect("read"), None);
    }
}
