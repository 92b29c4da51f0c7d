//! Plain data passed in and out of the engine: keys, requests, grants, listings, events.

use std::fmt;
use std::sync::Arc;

use crate::owner::OwnerId;
use crate::time::Tick;

/// A lock key: a random UUID v4, new for every grant. Keys are bearer tokens: whoever presents
/// name + key may unlock or refresh that hold.
///
/// Stored as two `u64`s rather than a `u128` so holds and index entries keep 8-byte alignment
/// (a `u128` would pad every hold to 16: tens of MB over a million locks).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LockKey([u64; 2]);

impl LockKey {
    /// A fresh random key (UUID v4 from a thread-local CSPRNG).
    pub fn generate() -> LockKey {
        LockKey::from_u128(uuid::Uuid::new_v4().as_u128())
    }

    /// Parses the exact form the engine hands out: 36 characters, lower-case, hyphenated.
    /// Any other spelling is not a key we issued (go-ldlm compares keys byte for byte).
    pub fn parse(text: &str) -> Option<LockKey> {
        // Hand-rolled: this runs on every unlock and refresh, and must accept exactly the
        // lower-case hyphenated form (8-4-4-4-12) and nothing else.
        let bytes: &[u8; 36] = text.as_bytes().try_into().ok()?;
        if bytes[8] != b'-' || bytes[13] != b'-' || bytes[18] != b'-' || bytes[23] != b'-' {
            return None;
        }
        let (mut hi, mut lo, mut bad) = (0u64, 0u64, 0u8);
        for &at in &HEX_POSITIONS[..16] {
            let digit = HEX_VALUE[bytes[at] as usize];
            bad |= digit;
            hi = (hi << 4) | u64::from(digit & 0x0f);
        }
        for &at in &HEX_POSITIONS[16..] {
            let digit = HEX_VALUE[bytes[at] as usize];
            bad |= digit;
            lo = (lo << 4) | u64::from(digit & 0x0f);
        }
        // Invalid characters map to 0x80: one check at the end instead of a branch per digit.
        (bad & 0x80 == 0).then_some(LockKey([hi, lo]))
    }

    /// The key as a `u128` (for compact storage, e.g. the state file).
    pub const fn as_u128(self) -> u128 {
        ((self.0[0] as u128) << 64) | self.0[1] as u128
    }

    /// The key from a stored `u128`.
    pub const fn from_u128(value: u128) -> LockKey {
        LockKey([(value >> 64) as u64, value as u64])
    }

    /// Writes the key's text form into `buf` without allocating.
    pub fn encode<'b>(&self, buf: &'b mut [u8; 36]) -> &'b str {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        for (i, &at) in HEX_POSITIONS.iter().enumerate() {
            let word = self.0[i / 16];
            let nibble = (word >> (60 - 4 * (i % 16))) & 0xf;
            buf[at] = DIGITS[nibble as usize];
        }
        for at in [8, 13, 18, 23] {
            buf[at] = b'-';
        }
        // Every byte written is ASCII.
        std::str::from_utf8(buf).unwrap_or_default()
    }
}

impl fmt::Display for LockKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buf = [0u8; 36];
        f.write_str(self.encode(&mut buf))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_accepts_exactly_the_lowercase_hyphenated_form() {
        for _ in 0..100 {
            let key = LockKey::generate();
            assert_eq!(LockKey::parse(&key.to_string()), Some(key));
        }
        let text = "f4755120-2b4a-4c1e-9d3f-0123456789ab";
        let key = LockKey::parse(text).expect("valid");
        assert_eq!(key.to_string(), text);
        assert_eq!(
            key.as_u128(),
            uuid::Uuid::parse_str(text).expect("uuid").as_u128()
        );
        for bad in [
            "",
            "F4755120-2b4a-4c1e-9d3f-0123456789ab",
            "f47551202b4a4c1e9d3f0123456789ab",
            "f4755120-2b4a-4c1e-9d3f-0123456789a",
            "f4755120-2b4a-4c1e-9d3f-0123456789abc",
            "f4755120+2b4a-4c1e-9d3f-0123456789ab",
            "g4755120-2b4a-4c1e-9d3f-0123456789ab",
            "{4755120-2b4a-4c1e-9d3f-0123456789ab}",
            "f4755120-2b4a-4c1e-9d3f-0123456789\u{e9}",
        ] {
            assert_eq!(LockKey::parse(bad), None, "{bad:?}");
        }
    }
}

impl fmt::Debug for LockKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Where the 32 hex digits of a hyphenated UUID are.
const HEX_POSITIONS: [usize; 32] = [
    0, 1, 2, 3, 4, 5, 6, 7, 9, 10, 11, 12, 14, 15, 16, 17, 19, 20, 21, 22, 24, 25, 26, 27, 28, 29,
    30, 31, 32, 33, 34, 35,
];

/// Value of a lower-case hex digit, 0x80 for any other byte.
const HEX_VALUE: [u8; 256] = {
    let mut table = [0x80u8; 256];
    let mut i = 0;
    while i < 10 {
        table[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        table[b'a' as usize + i] = 10 + i as u8;
        i += 1;
    }
    table
};

/// A Lock or TryLock request, with go-ldlm's raw field values (presence matters: an absent size
/// means 1, an explicit 0 is an error; a timeout of 0 or absent means none).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LockRequest<'a> {
    /// The lock's name: any non-empty UTF-8 string up to the configured length.
    pub name: &'a str,
    /// Slots of the lock (a counting semaphore); absent means 1.
    pub size: Option<i32>,
    /// Lease in whole seconds, counted from the grant; absent or 0 means no lease.
    pub lock_timeout_seconds: Option<i32>,
    /// Longest wait in whole seconds, counted from the request (Lock only; TryLock ignores it);
    /// absent or 0 means wait forever.
    pub wait_timeout_seconds: Option<i32>,
    /// An opaque tag the engine hands back in the grant's [`Event::Granted`] (0: none). Cluster
    /// mode tags a request with its number, so the replicated grant says which request it
    /// answered and a re-sent request gets the same grant back.
    pub tag: u64,
}

/// A granted slot of a lock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Grant {
    /// The key that unlocks or refreshes this hold.
    pub key: LockKey,
    /// Strictly greater than every token granted before for any name, across restarts too.
    pub fencing_token: u64,
    /// When the lease ends unless refreshed; `None` without a lease.
    pub lease_deadline: Option<Tick>,
    /// The event sink's sequence number for this grant (0 without a sink, and for a refresh
    /// that did not change the lease length): a durable store tells the client "locked" only
    /// once this sequence number is on disk.
    pub durable_seq: u64,
}

/// What TryLock did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TryLockOutcome {
    /// A slot was free and nobody was waiting: it is ours.
    Acquired(Grant),
    /// Every slot is held, or others are already waiting.
    Busy,
}

/// One held slot, as listed for the admin CLI.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HoldInfo {
    /// Lock name.
    pub name: Arc<str>,
    /// The hold's key.
    pub key: LockKey,
    /// The lock's size.
    pub size: u32,
    /// Who holds it (its connection or session, or [`OwnerId::RESTORED`]).
    pub owner: OwnerId,
    /// The grant's fencing token.
    pub fencing_token: u64,
    /// When its lease ends, if it has one.
    pub lease_deadline: Option<Tick>,
}

/// A hold as stored by a persistence layer and given back to [`crate::Engine::restore`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HoldRecord {
    /// Lock name.
    pub name: String,
    /// The hold's key.
    pub key: LockKey,
    /// The lock's size.
    pub size: u32,
    /// The grant's fencing token.
    pub fencing_token: u64,
    /// Its lease length in whole seconds (`None`: no lease). A restore gives it a fresh lease
    /// of this length, counted from the restore.
    pub lease_seconds: Option<u32>,
    /// Its owner ([`OwnerId::RESTORED`] when the store keeps none, as the state file).
    pub owner: OwnerId,
}

/// A change to the set of holds, reported to an [`EventSink`] in the order it happened for each
/// name (the sink is called under the lock's shard mutex).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event<'a> {
    /// A slot was granted (directly, by hand-off, or not at all for restores, which are silent).
    Granted {
        /// Lock name.
        name: &'a str,
        /// The new hold's key.
        key: LockKey,
        /// The lock's size.
        size: u32,
        /// The new holder.
        owner: OwnerId,
        /// The grant's fencing token.
        fencing_token: u64,
        /// The lease length in whole seconds (`None`: no lease), so a replica or a restart
        /// can give the hold the lease its holder was promised.
        lease_seconds: Option<u32>,
        /// The request's [`LockRequest::tag`].
        tag: u64,
    },
    /// A refresh changed a hold's lease length (a refresh that keeps the length is not
    /// reported: the length is all a restart needs, not the deadline).
    LeaseChanged {
        /// Lock name.
        name: &'a str,
        /// The hold's key.
        key: LockKey,
        /// The new lease length in whole seconds.
        lease_seconds: u32,
    },
    /// A hold ended: unlocked, expired, released with its owner, or handed back.
    Released {
        /// Lock name.
        name: &'a str,
        /// The ended hold's key.
        key: LockKey,
    },
}

/// Receives every change to the set of holds, e.g. to persist it.
///
/// `record` is called while the engine holds a shard mutex: it must be quick and must not call
/// back into the engine. It returns a sequence number that ends up in [`Grant::durable_seq`]
/// (for a grant, and for a refresh that changed the lease length).
pub trait EventSink: Send + Sync {
    /// Records one event and returns its sequence number.
    fn record(&self, event: Event<'_>) -> u64;

    /// The sequence number of the last event recorded so far (0 if none). Waiting until it is
    /// durable covers every change made before this call, e.g. an unlock's release.
    fn last_seq(&self) -> u64 {
        0
    }
}

/// What a successful [`crate::Engine::unlock`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Unlocked {
    /// Waiters handed a slot by this unlock (0 when nobody was waiting). A transport answering
    /// the unlock may let those waiters answer first: on a contended lock the grant, not the
    /// unlock's reply, is what the next holder is waiting for.
    pub handed_off: usize,
}

/// What one [`crate::Engine::advance`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AdvanceReport {
    /// Leases that ended.
    pub leases_expired: usize,
    /// Waits that timed out.
    pub waits_timed_out: usize,
    /// Idle, unheld locks dropped by GC.
    pub locks_collected: usize,
    /// Session owners whose idle timeout passed (already released).
    pub sessions_expired: Vec<OwnerId>,
}

impl AdvanceReport {
    /// Lease, wait and GC timers this advance fired (sessions not counted).
    pub(crate) fn timers_fired(&self) -> usize {
        self.leases_expired + self.waits_timed_out + self.locks_collected
    }

    /// Adds a helper's counts (helpers advance shards only; sessions expire on the caller).
    pub(crate) fn merge(&mut self, other: AdvanceReport) {
        debug_assert!(other.sessions_expired.is_empty());
        self.leases_expired += other.leases_expired;
        self.waits_timed_out += other.waits_timed_out;
        self.locks_collected += other.locks_collected;
    }
}
