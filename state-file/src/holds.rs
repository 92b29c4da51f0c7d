//! [`HoldTable`]: the set of held locks rebuilt from the engine's events, with no IO.
//!
//! The state file replays its records into one at startup and at compaction; cluster mode's
//! replicas will apply the replicated events to one. It answers what a restart (or a new
//! leader) needs: every hold with its name, key, size, fencing token and lease length, and the
//! highest fencing token ever handed out, and it can restore them into an empty engine or
//! serialize them as a compact snapshot (a state file holding only the live set).
//!
//! Invariants, checked as records are applied (a violation is damage, never silently
//! "fixed"): a lock's holders never exceed its size, all holders of a lock agree on its size,
//! and a key is held at most once per lock. A release or lease change of a hold that is not
//! there is harmless (a record written twice) and ignored.

use std::time::Duration;

use hashbrown::HashMap;
use ldlm_engine::{Engine, Event, HoldRecord, LockKey, RestoreError, Tick};
use smallvec::SmallVec;

use crate::format;

/// One holder of a lock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Holder {
    key: LockKey,
    token: u64,
    /// Lease length in seconds, 0 without a lease.
    lease_secs: u32,
}

/// A lock with at least one holder.
#[derive(Clone, Debug)]
struct Held {
    size: u32,
    holders: SmallVec<[Holder; 1]>,
}

/// The held locks. See the module doc.
#[derive(Clone, Debug, Default)]
pub struct HoldTable {
    locks: HashMap<Box<str>, Held, foldhash::fast::RandomState>,
    /// Held slots over all locks.
    holds: usize,
    fencing_floor: u64,
}

impl HoldTable {
    /// An empty table with room for about `locks` locks.
    pub fn with_capacity(locks: usize) -> HoldTable {
        HoldTable {
            locks: HashMap::with_capacity_and_hasher(locks, Default::default()),
            holds: 0,
            fencing_floor: 0,
        }
    }

    /// Applies one engine event.
    pub fn apply(&mut self, event: &Event<'_>) -> Result<(), String> {
        match *event {
            Event::Granted {
                name,
                key,
                size,
                fencing_token,
                lease_seconds,
                ..
            } => self.grant(name, key, size, fencing_token, lease_seconds),
            Event::LeaseChanged {
                name,
                key,
                lease_seconds,
            } => {
                self.set_lease(name, key, lease_seconds);
                Ok(())
            }
            Event::Released { name, key } => {
                self.release(name, key);
                Ok(())
            }
        }
    }

    /// A slot of `name` was granted. `Err` says how it contradicts the table.
    pub fn grant(
        &mut self,
        name: &str,
        key: LockKey,
        size: u32,
        token: u64,
        lease_seconds: Option<u32>,
    ) -> Result<(), String> {
        self.raise_floor(token);
        if size == 0 {
            return Err(format!("lock {name:?} is stored with size 0"));
        }
        let held = match self.locks.get_mut(name) {
            Some(held) => held,
            None => self.locks.entry(name.into()).or_insert(Held {
                size,
                holders: SmallVec::new(),
            }),
        };
        if held.size != size {
            return Err(format!(
                "lock {name:?} is held with size {} and granted with size {size}",
                held.size
            ));
        }
        if held.holders.iter().any(|h| h.key == key) {
            return Err(format!("lock {name:?} has key {key} granted twice"));
        }
        if held.holders.len() >= held.size as usize {
            return Err(format!(
                "lock {name:?} has more holders than its size {}",
                held.size
            ));
        }
        held.holders.push(Holder {
            key,
            token,
            lease_secs: lease_seconds.unwrap_or(0),
        });
        self.holds += 1;
        Ok(())
    }

    /// The hold `key` of `name` ended (ignored if it is not there).
    pub fn release(&mut self, name: &str, key: LockKey) {
        if let Some(held) = self.locks.get_mut(name)
            && let Some(index) = held.holders.iter().position(|h| h.key == key)
        {
            held.holders.remove(index);
            self.holds -= 1;
            if held.holders.is_empty() {
                self.locks.remove(name);
            }
        }
    }

    /// The hold `key` of `name` now has a lease of `lease_seconds` (ignored if it is not there).
    pub fn set_lease(&mut self, name: &str, key: LockKey, lease_seconds: u32) {
        if let Some(holder) = self
            .locks
            .get_mut(name)
            .and_then(|held| held.holders.iter_mut().find(|h| h.key == key))
        {
            holder.lease_secs = lease_seconds;
        }
    }

    /// No token up to `token` may be handed out again.
    pub fn raise_floor(&mut self, token: u64) {
        self.fencing_floor = self.fencing_floor.max(token);
    }

    /// The highest fencing token ever handed out (new ones must continue above it).
    pub fn fencing_floor(&self) -> u64 {
        self.fencing_floor
    }

    /// Number of held slots.
    pub fn len(&self) -> usize {
        self.holds
    }

    /// True if nothing is held.
    pub fn is_empty(&self) -> bool {
        self.holds == 0
    }

    /// Every hold, grouped by lock.
    pub fn records(&self) -> Vec<HoldRecord> {
        let mut out = Vec::with_capacity(self.holds);
        for (name, held) in &self.locks {
            for holder in &held.holders {
                out.push(HoldRecord {
                    name: name.to_string(),
                    key: holder.key,
                    size: held.size,
                    fencing_token: holder.token,
                    lease_seconds: (holder.lease_secs > 0).then_some(holder.lease_secs),
                    // The state file keeps no owners: whoever held a lock before a restart is
                    // gone (its connection ended with the old process).
                    owner: ldlm_engine::OwnerId::RESTORED,
                });
            }
        }
        out
    }

    /// Puts every hold into the empty `engine`: each with a fresh lease of its own length from
    /// `now`, or `default_lease` if it had none; tokens continue above the floor.
    pub fn restore(
        &self,
        engine: &Engine,
        default_lease: Option<Duration>,
        now: Tick,
    ) -> Result<usize, RestoreError> {
        engine.restore(&self.records(), default_lease, self.fencing_floor, now)
    }

    /// The table as a compact state file: the magic, the token floor, one grant per hold.
    pub fn encode_snapshot(&self, out: &mut Vec<u8>) {
        out.reserve(64 + self.holds * 64);
        out.extend_from_slice(format::MAGIC);
        format::encode_floor(out, self.fencing_floor);
        for (name, held) in &self.locks {
            for holder in &held.holders {
                let lease = (holder.lease_secs > 0).then_some(holder.lease_secs);
                format::encode_grant(out, name, holder.key, held.size, holder.token, lease);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ldlm_engine::OwnerId;

    fn granted(name: &str, key: LockKey, size: u32, token: u64) -> Event<'_> {
        Event::Granted {
            name,
            key,
            size,
            owner: OwnerId(1),
            fencing_token: token,
            lease_seconds: Some(10),
            tag: 0,
        }
    }

    #[test]
    fn applies_events_and_refuses_contradictions() {
        let mut table = HoldTable::default();
        let (a, b, c) = (
            LockKey::generate(),
            LockKey::generate(),
            LockKey::generate(),
        );
        table.apply(&granted("x", a, 2, 5)).expect("grant");
        table.apply(&granted("x", b, 2, 6)).expect("grant");
        assert!(table.apply(&granted("x", c, 2, 7)).is_err(), "over size");
        assert!(table.apply(&granted("x", a, 2, 8)).is_err(), "key twice");
        assert!(
            table.apply(&granted("x", c, 3, 9)).is_err(),
            "size conflict"
        );
        table
            .apply(&Event::LeaseChanged {
                name: "x",
                key: a,
                lease_seconds: 30,
            })
            .expect("lease");
        table
            .apply(&Event::Released { name: "x", key: b })
            .expect("release");
        table
            .apply(&Event::Released { name: "x", key: b })
            .expect("a second release is harmless");
        assert_eq!(table.len(), 1);
        assert_eq!(table.fencing_floor(), 9, "every token seen counts");
        let records = table.records();
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].key, a);
        assert_eq!(records[0].lease_seconds, Some(30));
    }

    #[test]
    fn a_snapshot_loads_back_to_the_same_table() {
        let mut table = HoldTable::default();
        for i in 0..10u64 {
            let name = format!("lock-{}", i % 3);
            let lease = (i % 2 == 0).then_some(i as u32 + 1);
            let _ = table.grant(&name, LockKey::generate(), 5, 100 + i, lease);
        }
        table.raise_floor(1_000);
        let mut bytes = Vec::new();
        table.encode_snapshot(&mut bytes);
        let loaded = crate::load::parse(&bytes).expect("loads");
        let sorted = |mut records: Vec<HoldRecord>| {
            records.sort_by_key(|r| r.fencing_token);
            records
        };
        assert_eq!(sorted(loaded.holds()), sorted(table.records()));
        assert_eq!(loaded.fencing_floor(), 1_000);
    }
}
