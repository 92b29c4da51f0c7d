//! The state file's on-disk format: an append-only log of checksummed records.
//!
//! ```text
//! file    = MAGIC record*
//! MAGIC   = "LDLMLOG2" (written) | "LDLMLOG1" (read: files of versions before lease lengths)
//! record  = len: u32 LE | crc: u32 LE | payload (len bytes), crc = CRC-32 of payload
//! payload = 4 | token u64 | size u32 | lease u32 | key [16] | name_len u32 | name (Grant)
//!         | 5 | lease u32 | key [16] | name_len u32 | name                       (Lease)
//!         | 2 | key [16] | name_len u32 | name                                   (Release)
//!         | 3 | floor u64                                                      (TokenFloor)
//!         | 1 | token u64 | size u32 | key [16] | name_len u32 | name   (Grant, version 1)
//! ```
//!
//! `lease` is the hold's lease length in whole seconds, 0 for none: a restart gives the hold a
//! fresh lease of that length. Version 1 grants had no length (a restart gives them
//! `--default_lock_timeout`). A file written by a newer version (an unknown magic or record
//! kind) is refused with an error naming the file and offset, never guessed at.
//!
//! All integers are little-endian. Lengths are 32-bit, so no name can wrap them (go-ldlm's B9).
//! A record is valid only if its checksum matches; see [`super::load`] for how damage is told
//! apart from a torn tail.

use ldlm_engine::{Event, LockKey};

/// The first eight bytes of every state file this version writes.
pub const MAGIC: &[u8; 8] = b"LDLMLOG2";
/// The first eight bytes of a state file of the first version (read, never written).
pub const MAGIC_V1: &[u8; 8] = b"LDLMLOG1";
/// Bytes before a record's payload.
pub const RECORD_HEADER: usize = 8;
/// Largest payload a loader accepts; larger lengths are damage. Names are far smaller (the
/// server refuses names over `--max_name_bytes`).
pub const MAX_PAYLOAD: usize = 16 << 20;

const GRANT_V1: u8 = 1;
const RELEASE: u8 = 2;
const TOKEN_FLOOR: u8 = 3;
const GRANT: u8 = 4;
const LEASE: u8 = 5;

/// One decoded record; names borrow from the file's bytes (no allocation while replaying).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record<'a> {
    /// A slot of `name` was granted.
    Grant {
        /// Lock name.
        name: &'a str,
        /// The hold's key.
        key: LockKey,
        /// The lock's size.
        size: u32,
        /// Its fencing token.
        token: u64,
        /// Its lease length in seconds (`None`: no lease, or a version-1 record).
        lease_seconds: Option<u32>,
    },
    /// A refresh changed a hold's lease length.
    Lease {
        /// Lock name.
        name: &'a str,
        /// The hold's key.
        key: LockKey,
        /// The new lease length in seconds.
        lease_seconds: u32,
    },
    /// A hold ended.
    Release {
        /// Lock name.
        name: &'a str,
        /// The ended hold's key.
        key: LockKey,
    },
    /// Tokens handed out so far never exceeded this (written at the start of a compacted file).
    TokenFloor(u64),
}

/// What a record does to the number of held slots.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HoldChange {
    /// A grant: one more.
    Added,
    /// A release: one fewer.
    Removed,
    /// A lease change: as many as before.
    Unchanged,
}

/// Appends the record of an engine event to `out`.
pub fn encode_event(out: &mut Vec<u8>, event: &Event<'_>) -> HoldChange {
    match *event {
        Event::Granted {
            name,
            key,
            size,
            fencing_token,
            lease_seconds,
            ..
        } => {
            encode_grant(out, name, key, size, fencing_token, lease_seconds);
            HoldChange::Added
        }
        Event::LeaseChanged {
            name,
            key,
            lease_seconds,
        } => {
            encode_lease(out, name, key, lease_seconds);
            HoldChange::Unchanged
        }
        Event::Released { name, key } => {
            encode_release(out, name, key);
            HoldChange::Removed
        }
    }
}

/// Appends a Grant record to `out`.
pub fn encode_grant(
    out: &mut Vec<u8>,
    name: &str,
    key: LockKey,
    size: u32,
    token: u64,
    lease_seconds: Option<u32>,
) {
    let mut payload = [0u8; 1 + 8 + 4 + 4 + 16];
    payload[0] = GRANT;
    payload[1..9].copy_from_slice(&token.to_le_bytes());
    payload[9..13].copy_from_slice(&size.to_le_bytes());
    payload[13..17].copy_from_slice(&lease_seconds.unwrap_or(0).to_le_bytes());
    payload[17..33].copy_from_slice(&key.as_u128().to_le_bytes());
    encode(out, &payload, name);
}

/// Appends a Lease record (a hold's new lease length) to `out`.
pub fn encode_lease(out: &mut Vec<u8>, name: &str, key: LockKey, lease_seconds: u32) {
    let mut payload = [0u8; 1 + 4 + 16];
    payload[0] = LEASE;
    payload[1..5].copy_from_slice(&lease_seconds.to_le_bytes());
    payload[5..21].copy_from_slice(&key.as_u128().to_le_bytes());
    encode(out, &payload, name);
}

/// Appends a Release record to `out`.
pub fn encode_release(out: &mut Vec<u8>, name: &str, key: LockKey) {
    let mut payload = [0u8; 1 + 16];
    payload[0] = RELEASE;
    payload[1..17].copy_from_slice(&key.as_u128().to_le_bytes());
    encode(out, &payload, name);
}

/// Appends a TokenFloor record to `out`.
pub fn encode_floor(out: &mut Vec<u8>, floor: u64) {
    let mut payload = [0u8; 9];
    payload[0] = TOKEN_FLOOR;
    payload[1..9].copy_from_slice(&floor.to_le_bytes());
    let start = out.len();
    out.extend_from_slice(&[0u8; RECORD_HEADER]);
    out.extend_from_slice(&payload);
    finish(out, start);
}

/// Writes header + fixed part + name length + name, then fills in length and checksum.
fn encode(out: &mut Vec<u8>, fixed: &[u8], name: &str) {
    let start = out.len();
    out.extend_from_slice(&[0u8; RECORD_HEADER]);
    out.extend_from_slice(fixed);
    out.extend_from_slice(&(name.len() as u32).to_le_bytes());
    out.extend_from_slice(name.as_bytes());
    finish(out, start);
}

fn finish(out: &mut [u8], start: usize) {
    let payload = &out[start + RECORD_HEADER..];
    let len = payload.len() as u32;
    let crc = crc32fast::hash(payload);
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// Decodes a payload whose checksum matched. `Err` describes what is wrong with it.
pub fn decode(payload: &[u8]) -> Result<Record<'_>, String> {
    let (&kind, rest) = payload.split_first().ok_or("empty record")?;
    let field = |at: usize, n: usize| -> Result<&[u8], String> {
        rest.get(at..at + n)
            .ok_or_else(|| format!("record of kind {kind} is too short"))
    };
    let u64_at = |at: usize| -> Result<u64, String> {
        let mut b = [0u8; 8];
        b.copy_from_slice(field(at, 8)?);
        Ok(u64::from_le_bytes(b))
    };
    let u32_at = |at: usize| -> Result<u32, String> {
        let mut b = [0u8; 4];
        b.copy_from_slice(field(at, 4)?);
        Ok(u32::from_le_bytes(b))
    };
    let key_at = |at: usize| -> Result<LockKey, String> {
        let mut b = [0u8; 16];
        b.copy_from_slice(field(at, 16)?);
        Ok(LockKey::from_u128(u128::from_le_bytes(b)))
    };
    let name_at = |at: usize| -> Result<&str, String> {
        let len = u32_at(at)? as usize;
        let start = at + 4;
        if rest.len() != start.saturating_add(len) {
            return Err(format!(
                "name length {len} does not match the record length"
            ));
        }
        std::str::from_utf8(&rest[start..]).map_err(|_| "lock name is not valid UTF-8".to_string())
    };
    match kind {
        GRANT => Ok(Record::Grant {
            token: u64_at(0)?,
            size: u32_at(8)?,
            lease_seconds: Some(u32_at(12)?).filter(|&secs| secs > 0),
            key: key_at(16)?,
            name: name_at(32)?,
        }),
        GRANT_V1 => Ok(Record::Grant {
            token: u64_at(0)?,
            size: u32_at(8)?,
            lease_seconds: None,
            key: key_at(12)?,
            name: name_at(28)?,
        }),
        LEASE => Ok(Record::Lease {
            lease_seconds: u32_at(0)?,
            key: key_at(4)?,
            name: name_at(20)?,
        }),
        RELEASE => Ok(Record::Release {
            key: key_at(0)?,
            name: name_at(16)?,
        }),
        TOKEN_FLOOR if rest.len() == 8 => Ok(Record::TokenFloor(u64_at(0)?)),
        TOKEN_FLOOR => Err("token floor record has the wrong length".into()),
        other => Err(format!("unknown record kind {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let key = LockKey::generate();
        let mut out = Vec::new();
        encode_grant(&mut out, "näme", key, 3, 42, Some(30));
        encode_lease(&mut out, "näme", key, 60);
        encode_grant(&mut out, "x", key, 1, 43, None);
        encode_release(&mut out, "näme", key);
        encode_floor(&mut out, 99);
        let mut records = Vec::new();
        let mut at = 0;
        while at < out.len() {
            let len = u32::from_le_bytes(out[at..at + 4].try_into().unwrap()) as usize;
            let crc = u32::from_le_bytes(out[at + 4..at + 8].try_into().unwrap());
            let payload = &out[at + 8..at + 8 + len];
            assert_eq!(crc, crc32fast::hash(payload));
            records.push(decode(payload).expect("valid"));
            at += 8 + len;
        }
        assert_eq!(
            records,
            vec![
                Record::Grant {
                    name: "näme",
                    key,
                    size: 3,
                    token: 42,
                    lease_seconds: Some(30),
                },
                Record::Lease {
                    name: "näme",
                    key,
                    lease_seconds: 60,
                },
                Record::Grant {
                    name: "x",
                    key,
                    size: 1,
                    token: 43,
                    lease_seconds: None,
                },
                Record::Release { name: "näme", key },
                Record::TokenFloor(99),
            ]
        );
    }

    /// Files written before lease lengths existed still load: their grants have none.
    #[test]
    fn version_1_grants_decode_without_a_lease() {
        let key = LockKey::generate();
        let mut payload = vec![GRANT_V1];
        payload.extend_from_slice(&7u64.to_le_bytes());
        payload.extend_from_slice(&2u32.to_le_bytes());
        payload.extend_from_slice(&key.as_u128().to_le_bytes());
        payload.extend_from_slice(&1u32.to_le_bytes());
        payload.push(b'v');
        assert_eq!(
            decode(&payload),
            Ok(Record::Grant {
                name: "v",
                key,
                size: 2,
                token: 7,
                lease_seconds: None,
            })
        );
    }

    #[test]
    fn bad_payloads_are_errors_not_panics() {
        for payload in [
            &[][..],
            &[9],
            &[GRANT, 1, 2],
            &[GRANT_V1, 1, 2],
            &[LEASE, 1, 2],
            &[RELEASE; 40],
            &[TOKEN_FLOOR, 1],
        ] {
            assert!(decode(payload).is_err(), "{payload:?}");
        }
        let mut out = Vec::new();
        encode_grant(&mut out, "x", LockKey::generate(), 1, 1, None);
        let mut payload = out[8..].to_vec();
        *payload.last_mut().unwrap() = 0xff;
        assert!(decode(&payload).unwrap_err().contains("UTF-8"));
    }
}
