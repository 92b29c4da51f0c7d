//! REST sessions: session id → engine owner, sharded, with an owner → session index.
//!
//! A REST session is an engine session owner ([`ldlm_engine::Engine::new_session`]): the engine
//! keeps its holds, expires it on its timer wheel when idle, and releases it. This map only
//! answers "which owner is this cookie?", counts sessions for `--max_rest_sessions`, and
//! forgets sessions that ended. It lives in the lock service, not in the REST transport,
//! because a session is a lock-service object: in cluster mode its cookie works at every node.
//!
//! ## Locking
//!
//! Two sharded tables of `parking_lot` mutexes: `by_id` (session id → owner, the source of truth
//! and of the count) and `by_owner` (owner id → session id, only so that the ids the engine
//! reports as expired can be found). Every method takes **one shard mutex at a time**, for one
//! hash-map operation, and never across an `.await`: no request ever waits for another request
//! (go-ldlm's B12 was a global mutex held while waiting for a per-session one).
//!
//! ## Races
//!
//! - *Create vs expiry*: the engine may expire a new session (tiny timeouts) before it is in the
//!   index, so [`Sessions::forget`] misses it. [`Sessions::create`] therefore checks
//!   [`ldlm_engine::Owner::has_ended`] after inserting: the engine sets that flag before it
//!   reports the expiry, so one of the two always removes the entry.
//! - *Delete vs expiry*: whoever removes the `by_id` entry decrements the count; the other finds
//!   nothing. Both are idempotent.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::atomic::{AtomicUsize, Ordering};

use crossbeam_utils::CachePadded;
use ldlm_engine::{Owner, OwnerId};
use parking_lot::Mutex;

/// Shards per table: a power of two, many more than cores, so two requests rarely meet.
const SHARDS: usize = 64;

/// A session id: the 128 bits of a UUID v4, written as 32 lower-case hex digits (the cookie).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SessionId(u128);

impl SessionId {
    /// A fresh random id (UUID v4).
    fn generate() -> SessionId {
        SessionId(uuid::Uuid::new_v4().as_u128())
    }

    /// Parses the exact form we hand out: 32 lower-case hex digits. Anything else is not a
    /// session of ours (go-ldlm compares ids as strings).
    pub fn parse(text: &str) -> Option<SessionId> {
        if text.len() != 32 || !text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return None;
        }
        u128::from_str_radix(text, 16).ok().map(SessionId)
    }

    /// The id's 128 bits (cluster mode carries sessions between nodes as numbers).
    pub const fn as_u128(self) -> u128 {
        self.0
    }

    /// The id with these 128 bits.
    pub const fn from_u128(bits: u128) -> SessionId {
        SessionId(bits)
    }

    /// The cookie form: 32 lower-case hex digits (uuid's "simple" format).
    pub fn to_text(self) -> String {
        format!("{:032x}", self.0)
    }

    /// The shard of the `by_id` table (the low bits are random).
    fn shard(self) -> usize {
        (self.0 as usize) & (SHARDS - 1)
    }
}

/// A sharded table: `SHARDS` cache-padded, locked maps.
type Table<K, V> = Box<[CachePadded<Mutex<HashMap<K, V>>>]>;

/// An empty [`Table`].
fn table<K, V>() -> Table<K, V> {
    (0..SHARDS)
        .map(|_| CachePadded::new(Mutex::new(HashMap::new())))
        .collect()
}

/// All live sessions. See the module doc.
pub(crate) struct Sessions {
    by_id: Table<SessionId, Owner>,
    by_owner: Table<OwnerId, SessionId>,
    /// Entries in `by_id` (plus reservations being created).
    count: AtomicUsize,
    limit: usize,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions")
            .field("count", &self.len())
            .field("limit", &self.limit)
            .finish()
    }
}

impl Sessions {
    /// An empty map that holds at most `limit` sessions.
    pub(crate) fn new(limit: usize) -> Sessions {
        Sessions {
            by_id: table(),
            by_owner: table(),
            count: AtomicUsize::new(0),
            limit,
        }
    }

    /// Number of sessions.
    pub(crate) fn len(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    /// The most sessions allowed at once.
    pub(crate) fn limit(&self) -> usize {
        self.limit
    }

    fn owner_shard(owner: OwnerId) -> usize {
        (owner.0 as usize) & (SHARDS - 1)
    }

    /// A new session whose owner `new_owner` makes, or `None` if `limit` sessions exist.
    pub(crate) fn create(&self, new_owner: impl FnOnce() -> Owner) -> Option<(SessionId, Owner)> {
        // Reserve a place first, so that concurrent creations never overshoot the limit.
        self.count
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |n| {
                (n < self.limit).then_some(n + 1)
            })
            .ok()?;
        let owner = new_owner();
        let id = loop {
            let id = SessionId::generate();
            // A collision of 122 random bits never happens; if it did, draw again.
            if let Entry::Vacant(slot) = self.by_id[id.shard()].lock().entry(id) {
                slot.insert(owner.clone());
                break id;
            }
        };
        self.by_owner[Self::owner_shard(owner.id())]
            .lock()
            .insert(owner.id(), id);
        if owner.has_ended() {
            // Expired (and reported) before the index had it: forget it ourselves.
            self.remove(id);
        }
        Some((id, owner))
    }

    /// The owner of session `id`, if it is in the map.
    pub(crate) fn get(&self, id: SessionId) -> Option<Owner> {
        self.by_id[id.shard()].lock().get(&id).cloned()
    }

    /// Removes session `id`; its owner if it was there.
    pub(crate) fn remove(&self, id: SessionId) -> Option<Owner> {
        let owner = self.by_id[id.shard()].lock().remove(&id)?;
        self.count.fetch_sub(1, Ordering::AcqRel);
        self.by_owner[Self::owner_shard(owner.id())]
            .lock()
            .remove(&owner.id());
        Some(owner)
    }

    /// Removes the session of engine owner `owner` (one the engine expired); true if it was
    /// there.
    pub(crate) fn forget(&self, owner: OwnerId) -> bool {
        let Some(id) = self.by_owner[Self::owner_shard(owner)]
            .lock()
            .remove(&owner)
        else {
            return false;
        };
        let removed = {
            let mut shard = self.by_id[id.shard()].lock();
            match shard.entry(id) {
                Entry::Occupied(entry) if entry.get().id() == owner => {
                    entry.remove();
                    true
                }
                _ => false,
            }
        };
        if removed {
            self.count.fetch_sub(1, Ordering::AcqRel);
        }
        removed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ldlm_engine::{Engine, EngineConfig, Tick};
    use std::time::Duration;

    fn engine() -> Engine {
        Engine::new(EngineConfig::default(), Tick::ZERO).expect("engine")
    }

    #[test]
    fn ids_round_trip_and_parse_strictly() {
        let id = SessionId::generate();
        let text = id.to_text();
        assert_eq!(text.len(), 32);
        assert_eq!(SessionId::parse(&text), Some(id));
        assert_eq!(SessionId::parse(&"0".repeat(32)), Some(SessionId(0)));
        for bad in [
            String::new(),
            "0".repeat(31),
            "0".repeat(33),
            "A".repeat(32),
            "g".repeat(32),
            format!("+{}", "0".repeat(31)),
            uuid::Uuid::new_v4().hyphenated().to_string(),
        ] {
            assert_eq!(SessionId::parse(&bad), None, "{bad}");
        }
        // The cookie form is uuid's "simple" form.
        let uuid = uuid::Uuid::new_v4();
        assert_eq!(
            SessionId(uuid.as_u128()).to_text(),
            uuid.simple().to_string()
        );
    }

    #[test]
    fn create_get_remove_forget() {
        let engine = engine();
        let sessions = Sessions::new(10);
        let (a, owner_a) = sessions
            .create(|| engine.new_session(Duration::from_secs(60), Tick::ZERO))
            .expect("a");
        let (b, owner_b) = sessions
            .create(|| engine.new_session(Duration::from_secs(60), Tick::ZERO))
            .expect("b");
        assert_eq!(sessions.len(), 2);
        assert_eq!(sessions.get(a).map(|o| o.id()), Some(owner_a.id()));
        assert_eq!(sessions.remove(a).map(|o| o.id()), Some(owner_a.id()));
        assert!(sessions.remove(a).is_none());
        assert!(!sessions.forget(owner_a.id()), "already removed");
        assert_eq!(sessions.len(), 1);
        assert!(sessions.forget(owner_b.id()));
        assert!(!sessions.forget(owner_b.id()));
        assert!(sessions.get(b).is_none());
        assert_eq!(sessions.len(), 0);
    }

    #[test]
    fn limit_is_enforced_and_freed() {
        let engine = engine();
        let sessions = Sessions::new(2);
        let new = || engine.new_session(Duration::from_secs(60), Tick::ZERO);
        let (a, _) = sessions.create(new).expect("1");
        sessions.create(new).expect("2");
        assert!(sessions.create(new).is_none());
        sessions.remove(a);
        sessions.create(new).expect("room again");
        assert_eq!(sessions.len(), 2);
    }

    #[test]
    fn a_session_ended_during_creation_is_not_kept() {
        let engine = engine();
        let sessions = Sessions::new(2);
        let (id, _) = sessions
            .create(|| {
                let owner = engine.new_session(Duration::from_secs(60), Tick::ZERO);
                engine.release_owner(&owner, Tick::ZERO);
                owner
            })
            .expect("created");
        assert!(sessions.get(id).is_none());
        assert_eq!(sessions.len(), 0);
    }
}
