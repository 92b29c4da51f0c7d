//! One shard of the lock table: its locks, its timer wheel and its owner index, all behind the
//! shard's mutex (held by the caller of every method here).
//!
//! # Ground rules
//!
//! - Everything about a lock — holders, waiters, leases, wait timeouts — changes only under its
//!   shard's mutex, so a hand-off (release + grant to the next waiter) is atomic.
//! - Invariant: a lock has waiters only while all of its slots are held. Releasing a slot
//!   therefore always serves the queue first ([`serve_waiters`]); TryLock can never barge.
//! - Every lease and wait timeout in the wheel belongs to a live hold or a queued waiter: removing
//!   one cancels the other. Timer payloads carry the lock's name so expiry can find it.
//! - The owner index maps each owner to the keys it holds and the waiters it has queued here, so
//!   releasing an owner costs O(its holds), not O(table).
//! - The event sink, when there is one, sees every grant and release of this shard in order.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hashbrown::{HashMap, HashTable};
use smallvec::SmallVec;

use crate::config::EngineConfig;
use crate::error::LockError;
use crate::owner::{Owner, OwnerId};
use crate::time::Tick;
use crate::types::{Event, EventSink, Grant, HoldInfo, LockKey, TryLockOutcome, Unlocked};
use crate::wheel::{TimerId, TimerWheel};

/// A validated Lock/TryLock request: the lock's size, the lease and the wait in whole seconds.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Want {
    pub(crate) size: u32,
    pub(crate) lease: Option<u32>,
    pub(crate) wait: Option<u32>,
    /// The caller's tag, carried into the grant's event.
    pub(crate) tag: u64,
}

/// What a waiter eventually receives through its channel.
pub(crate) type WaitResult = Result<Grant, LockError>;

type FastMap<K, V> = HashMap<K, V, foldhash::fast::FixedState>;

/// Everything a shard needs from the engine while its mutex is held.
pub(crate) struct Ctx<'a> {
    pub(crate) config: &'a EngineConfig,
    pub(crate) tokens: &'a AtomicU64,
    pub(crate) events: Option<&'a dyn EventSink>,
    pub(crate) alarm: &'a Alarm,
}

/// Tells the timer driver when a new deadline is earlier than the one it is sleeping towards.
///
/// The driver sets `armed` to `u64::MAX` before it computes the next deadline and to that
/// deadline afterwards; a timer inserted in between sees `MAX` and signals, so no deadline is
/// ever missed (at worst the driver wakes once for nothing).
pub(crate) struct Alarm {
    pub(crate) armed: AtomicU64,
    pub(crate) tx: flume::Sender<()>,
    pub(crate) rx: flume::Receiver<()>,
}

impl Alarm {
    pub(crate) fn new() -> Alarm {
        let (tx, rx) = flume::bounded(1);
        Alarm {
            armed: AtomicU64::new(u64::MAX),
            tx,
            rx,
        }
    }

    pub(crate) fn arm(&self, when: Tick) {
        let when = when.as_millis();
        if when < self.armed.load(Ordering::Relaxed) {
            self.armed.fetch_min(when, Ordering::AcqRel);
            // A full channel already carries a wake-up: nothing is lost.
            let _ = self.tx.try_send(());
        }
    }
}

/// What a timer in a shard's wheel is for.
#[derive(Debug)]
enum Timer {
    Lease {
        name: Arc<str>,
        hash: u64,
        key: LockKey,
    },
    Wait {
        name: Arc<str>,
        hash: u64,
        waiter: u64,
    },
    Gc,
}

#[derive(Debug)]
struct Hold {
    key: LockKey,
    owner: OwnerId,
    token: u64,
    lease: Option<TimerId>,
    /// The lease length in seconds, 0 without a lease (fits in the padding after `lease`).
    lease_secs: u32,
}

#[derive(Debug)]
struct Waiter {
    id: u64,
    owner: Owner,
    tx: flume::Sender<WaitResult>,
    timer: Option<TimerId>,
    lock_timeout: Option<u32>,
    /// The request's tag, for the grant's event.
    tag: u64,
}

/// One named lock.
#[derive(Debug)]
struct LockState {
    size: u32,
    last_used: Tick,
    /// In acquisition order. Inline for the common size-1 lock.
    holders: SmallVec<[Hold; 1]>,
    /// FIFO; `None` when empty. Boxed on purpose: an empty `Option<Box<_>>` is 8 bytes where a
    /// `VecDeque` is 32, on every one of possibly millions of locks that nobody waits for.
    #[allow(clippy::box_collection)]
    waiters: Option<Box<VecDeque<Waiter>>>,
}

#[derive(Debug)]
struct LockEntry {
    name: Arc<str>,
    hash: u64,
    state: LockState,
}

/// An owner's holds (key → the lock's name hash) and queued waiters (waiter id → name hash) in
/// this shard. The hash plus the key (or waiter id) finds the lock without storing its name
/// again: no reference count to bump on the hot path, 8 bytes an entry.
///
/// A live owner's entry stays even when it is empty, so an owner cycling lock/unlock does not
/// allocate and free its maps every time; an ended owner's entry goes with its last hold.
#[derive(Debug, Default)]
struct OwnerIndex {
    holds: FastMap<LockKey, u64>,
    waiters: FastMap<u64, u64>,
    /// The owner was released while its holds were kept (`no_clear_on_disconnect`).
    ended: bool,
}

impl OwnerIndex {
    fn is_spent(&self) -> bool {
        self.ended && self.holds.is_empty() && self.waiters.is_empty()
    }
}

/// Counts for metrics and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ShardStats {
    /// Lock objects (held or idle).
    pub locks: usize,
    /// Held slots.
    pub holds: usize,
    /// Queued waiters.
    pub waiters: usize,
    /// Live timers (leases, wait timeouts, GC).
    pub timers: usize,
}

/// Held slots and queued waiters of one shard (see [`Shard::stats`]).
#[derive(Clone, Copy, Debug, Default)]
struct Counts {
    holds: usize,
    waiters: usize,
}

/// One shard. See the module documentation.
#[derive(Debug)]
pub(crate) struct Shard {
    /// Boxed entries: a bucket is one pointer, so the table's spare capacity (up to half of it
    /// after a resize) costs 8 bytes a slot instead of a whole lock.
    locks: HashTable<Box<LockEntry>>,
    wheel: TimerWheel<Timer>,
    owners: FastMap<OwnerId, OwnerIndex>,
    /// Held slots and queued waiters in this shard, kept as they change so that
    /// [`Shard::stats`] (a `/metrics` scrape) costs O(1) under the mutex, not a walk of every
    /// lock. The model checker compares them with the real holds and waiters after every step.
    counts: Counts,
    next_waiter: u64,
    /// The latest time this shard has been told; time never goes backwards inside a shard.
    latest: Tick,
}

fn find<'t>(
    locks: &'t mut HashTable<Box<LockEntry>>,
    hash: u64,
    name: &str,
) -> Option<&'t mut LockEntry> {
    locks
        .find_mut(hash, |e| e.hash == hash && *e.name == *name)
        .map(|e| &mut **e)
}

/// The lock with this name hash that `key` holds a slot of.
fn find_holding(
    locks: &mut HashTable<Box<LockEntry>>,
    hash: u64,
    key: LockKey,
) -> Option<&mut LockEntry> {
    locks
        .find_mut(hash, |e| {
            e.hash == hash && e.state.holders.iter().any(|h| h.key == key)
        })
        .map(|e| &mut **e)
}

/// The lock with this name hash that waiter `id` is queued on.
fn find_waiting(
    locks: &mut HashTable<Box<LockEntry>>,
    hash: u64,
    id: u64,
) -> Option<&mut LockEntry> {
    locks
        .find_mut(hash, |e| {
            e.hash == hash
                && e.state
                    .waiters
                    .as_ref()
                    .is_some_and(|w| w.iter().any(|w| w.id == id))
        })
        .map(|e| &mut **e)
}

impl Shard {
    pub(crate) fn new(now: Tick, gc_interval: Duration) -> Shard {
        let mut wheel = TimerWheel::starting_at(now.as_millis());
        if !gc_interval.is_zero() {
            wheel.insert(now.after(gc_interval).as_millis(), Timer::Gc);
        }
        Shard {
            locks: HashTable::new(),
            wheel,
            owners: FastMap::default(),
            counts: Counts::default(),
            next_waiter: 0,
            latest: now,
        }
    }

    /// Clamps `now` so shard time never goes backwards (callers read clocks outside the mutex).
    fn observe(&mut self, now: Tick) -> Tick {
        self.latest = self
            .latest
            .max(now)
            .max(Tick::from_millis(self.wheel.elapsed()));
        self.latest
    }

    fn find_or_create<'s>(
        locks: &'s mut HashTable<Box<LockEntry>>,
        hash: u64,
        name: &str,
        size: u32,
        now: Tick,
    ) -> Result<&'s mut LockEntry, LockError> {
        let entry: &mut LockEntry =
            match locks.entry(hash, |e| e.hash == hash && *e.name == *name, |e| e.hash) {
                hashbrown::hash_table::Entry::Occupied(o) => o.into_mut(),
                hashbrown::hash_table::Entry::Vacant(v) => v
                    .insert(Box::new(LockEntry {
                        name: Arc::from(name),
                        hash,
                        state: LockState {
                            size,
                            last_used: now,
                            holders: SmallVec::new(),
                            waiters: None,
                        },
                    }))
                    .into_mut(),
            };
        // Any request that finds the lock counts as a use, even a failed one (as go-ldlm).
        entry.state.last_used = now;
        if entry.state.size != size {
            return Err(LockError::LockSizeMismatch);
        }
        Ok(entry)
    }

    pub(crate) fn try_lock(
        &mut self,
        ctx: &Ctx<'_>,
        owner: &Owner,
        hash: u64,
        name: &str,
        want: Want,
        now: Tick,
    ) -> Result<TryLockOutcome, LockError> {
        let Want {
            size, lease, tag, ..
        } = want;
        let now = self.observe(now);
        if owner.has_ended() {
            return Err(LockError::SessionEnded);
        }
        let Shard {
            locks,
            wheel,
            owners,
            counts,
            ..
        } = self;
        let entry = Self::find_or_create(locks, hash, name, size, now)?;
        if entry.state.holders.len() < size as usize && entry.state.waiters.is_none() {
            Ok(TryLockOutcome::Acquired(grant(
                ctx,
                wheel,
                owners,
                counts,
                entry,
                owner.id(),
                lease,
                tag,
                now,
            )))
        } else {
            Ok(TryLockOutcome::Busy)
        }
    }

    /// A blocking Lock: a grant now, or a queued waiter `(id, name, receiver)`.
    #[allow(clippy::type_complexity)]
    pub(crate) fn lock(
        &mut self,
        ctx: &Ctx<'_>,
        owner: &Owner,
        hash: u64,
        name: &str,
        want: Want,
        now: Tick,
    ) -> Result<Result<Grant, (u64, Arc<str>, flume::Receiver<WaitResult>)>, LockError> {
        let Want {
            size,
            lease,
            wait,
            tag,
        } = want;
        let now = self.observe(now);
        if owner.has_ended() {
            return Err(LockError::SessionEnded);
        }
        let id = self.next_waiter;
        let Shard {
            locks,
            wheel,
            owners,
            counts,
            ..
        } = self;
        let entry = Self::find_or_create(locks, hash, name, size, now)?;
        if entry.state.holders.len() < size as usize && entry.state.waiters.is_none() {
            return Ok(Ok(grant(
                ctx,
                wheel,
                owners,
                counts,
                entry,
                owner.id(),
                lease,
                tag,
                now,
            )));
        }
        let queued = entry.state.waiters.as_ref().map_or(0, |w| w.len());
        if queued >= ctx.config.max_waiters_per_lock {
            return Err(LockError::TooManyWaiters {
                limit: ctx.config.max_waiters_per_lock,
            });
        }
        self.next_waiter += 1;
        let (tx, rx) = flume::bounded(1);
        let timer = wait.map(|secs| {
            let when = now.after_secs(secs);
            ctx.alarm.arm(when);
            wheel.insert(
                when.as_millis(),
                Timer::Wait {
                    name: entry.name.clone(),
                    hash,
                    waiter: id,
                },
            )
        });
        owners
            .entry(owner.id())
            .or_default()
            .waiters
            .insert(id, hash);
        entry
            .state
            .waiters
            .get_or_insert_with(Default::default)
            .push_back(Waiter {
                id,
                owner: owner.clone(),
                tx,
                timer,
                lock_timeout: lease,
                tag,
            });
        counts.waiters += 1;
        Ok(Err((id, entry.name.clone(), rx)))
    }

    pub(crate) fn unlock(
        &mut self,
        ctx: &Ctx<'_>,
        hash: u64,
        name: &str,
        key: &str,
        now: Tick,
    ) -> Result<Unlocked, LockError> {
        let now = self.observe(now);
        let Shard {
            locks,
            wheel,
            owners,
            counts,
            ..
        } = self;
        let entry = find(locks, hash, name).ok_or(LockError::LockDoesNotExist)?;
        entry.state.last_used = now;
        let index = LockKey::parse(key)
            .and_then(|key| entry.state.holders.iter().position(|h| h.key == key))
            .ok_or(LockError::InvalidLockKey)?;
        take_hold(ctx, wheel, owners, counts, entry, index);
        let handed_off = serve_waiters(ctx, wheel, owners, counts, entry, now);
        Ok(Unlocked { handed_off })
    }

    pub(crate) fn refresh(
        &mut self,
        ctx: &Ctx<'_>,
        hash: u64,
        name: &str,
        key: &str,
        secs: u32,
        now: Tick,
    ) -> Result<Grant, LockError> {
        let now = self.observe(now);
        let Shard { locks, wheel, .. } = self;
        let entry = find(locks, hash, name).ok_or(LockError::LockDoesNotExistOrInvalidKey)?;
        let hold = LockKey::parse(key)
            .and_then(|key| entry.state.holders.iter_mut().find(|h| h.key == key))
            .ok_or(LockError::LockDoesNotExistOrInvalidKey)?;
        entry.state.last_used = now;
        let when = now.after_secs(secs);
        ctx.alarm.arm(when);
        let mut durable_seq = 0;
        if hold.lease_secs != secs {
            hold.lease_secs = secs;
            if let Some(sink) = ctx.events {
                durable_seq = sink.record(Event::LeaseChanged {
                    name: &entry.name,
                    key: hold.key,
                    lease_seconds: secs,
                });
            }
        }
        match hold.lease {
            Some(timer) if wheel.reschedule(timer, when.as_millis()) => {}
            _ => {
                // No lease yet: refresh gives it one (go-ldlm refuses with an error, leaving
                // a holder no way to bound a hold it took without a lease).
                hold.lease = Some(wheel.insert(
                    when.as_millis(),
                    Timer::Lease {
                        name: entry.name.clone(),
                        hash,
                        key: hold.key,
                    },
                ));
            }
        }
        Ok(Grant {
            key: hold.key,
            fencing_token: hold.token,
            lease_deadline: Some(when),
            durable_seq,
        })
    }

    pub(crate) fn is_held(&self, hash: u64, name: &str, key: LockKey) -> bool {
        self.locks
            .find(hash, |e| &*e.name == name)
            .is_some_and(|entry| entry.state.holders.iter().any(|h| h.key == key))
    }

    /// Admin unlock: by key, or the only holder when no key is given.
    pub(crate) fn force_unlock(
        &mut self,
        ctx: &Ctx<'_>,
        hash: u64,
        name: &str,
        key: Option<&str>,
        now: Tick,
    ) -> Result<LockKey, LockError> {
        let now = self.observe(now);
        let Shard {
            locks,
            wheel,
            owners,
            counts,
            ..
        } = self;
        let entry = find(locks, hash, name).ok_or(LockError::LockDoesNotExist)?;
        let holders = &entry.state.holders;
        let index = match key {
            Some(key) => LockKey::parse(key)
                .and_then(|key| holders.iter().position(|h| h.key == key))
                .ok_or(LockError::InvalidLockKey)?,
            None => match holders.len() {
                0 => return Err(LockError::LockDoesNotExist),
                1 => 0,
                _ => {
                    return Err(LockError::AmbiguousUnlock {
                        keys: holders.iter().map(|h| h.key.to_string()).collect(),
                    });
                }
            },
        };
        entry.state.last_used = now;
        let hold = take_hold(ctx, wheel, owners, counts, entry, index);
        serve_waiters(ctx, wheel, owners, counts, entry, now);
        Ok(hold.key)
    }

    /// Removes a waiter whose pending handle went away. If it was already granted the lock, the
    /// grant sitting in its channel is taken back and passed on.
    pub(crate) fn cancel_waiter(
        &mut self,
        ctx: &Ctx<'_>,
        hash: u64,
        name: &str,
        waiter: u64,
        rx: &flume::Receiver<WaitResult>,
    ) {
        let now = self.observe(self.latest);
        let Shard {
            locks,
            wheel,
            owners,
            counts,
            ..
        } = self;
        let Some(entry) = find(locks, hash, name) else {
            return;
        };
        if let Some(w) = remove_waiter(counts, entry, waiter) {
            if let Some(timer) = w.timer {
                wheel.cancel(timer);
            }
            unindex_waiter(owners, w.owner.id(), w.id);
            return;
        }
        // Not queued any more: it was served (grant in the channel) or ended (error in it).
        // Grants are sent under this mutex, so whatever was sent is in the channel now.
        if let Ok(Ok(grant)) = rx.try_recv()
            && let Some(index) = entry.state.holders.iter().position(|h| h.key == grant.key)
        {
            take_hold(ctx, wheel, owners, counts, entry, index);
            serve_waiters(ctx, wheel, owners, counts, entry, now);
        }
    }

    /// Cancels the waiters of every owner in `ending` here, then releases (or keeps) their
    /// holds: all waiters go first, so a slot one of them frees is never passed to another.
    /// Returns `(holds released, holds kept, waiters cancelled)`.
    pub(crate) fn release_owners(
        &mut self,
        ctx: &Ctx<'_>,
        ending: &[OwnerId],
        now: Tick,
    ) -> (usize, usize, usize) {
        let now = self.observe(now);
        let Shard {
            locks,
            wheel,
            owners,
            counts,
            ..
        } = self;
        let mut cancelled = 0;
        for owner in ending {
            let Some(index) = owners.get_mut(owner) else {
                continue;
            };
            for (waiter, hash) in std::mem::take(&mut index.waiters) {
                cancelled += 1;
                if let Some(entry) = find_waiting(locks, hash, waiter)
                    && let Some(w) = remove_waiter(counts, entry, waiter)
                {
                    if let Some(timer) = w.timer {
                        wheel.cancel(timer);
                    }
                    let _ = w.tx.try_send(Err(LockError::SessionEnded));
                }
            }
        }
        let (mut released, mut kept) = (0, 0);
        for owner in ending {
            let Some(index) = owners.remove(owner) else {
                continue;
            };
            if !ctx.config.release_on_owner_end {
                if !index.holds.is_empty() {
                    kept += index.holds.len();
                    owners.insert(
                        *owner,
                        OwnerIndex {
                            holds: index.holds,
                            waiters: FastMap::default(),
                            ended: true,
                        },
                    );
                }
                continue;
            }
            for (key, hash) in index.holds {
                let Some(entry) = find_holding(locks, hash, key) else {
                    continue;
                };
                if let Some(position) = entry.state.holders.iter().position(|h| h.key == key) {
                    take_hold(ctx, wheel, owners, counts, entry, position);
                    entry.state.last_used = now;
                    serve_waiters(ctx, wheel, owners, counts, entry, now);
                    released += 1;
                }
            }
        }
        (released, kept, cancelled)
    }

    /// Fires every timer due by `now`: lease expiry, wait timeouts, GC.
    pub(crate) fn advance(&mut self, ctx: &Ctx<'_>, now: Tick, report: &mut crate::AdvanceReport) {
        let now = self.observe(now);
        while let Some((timer, _)) = self.wheel.poll(now.as_millis()) {
            let Shard {
                locks,
                wheel,
                owners,
                counts,
                ..
            } = self;
            match timer {
                Timer::Lease { name, hash, key } => {
                    let Some(entry) = find(locks, hash, &name) else {
                        continue;
                    };
                    if let Some(index) = entry.state.holders.iter().position(|h| h.key == key) {
                        // The timer has fired: it is no longer in the wheel.
                        entry.state.holders[index].lease = None;
                        take_hold(ctx, wheel, owners, counts, entry, index);
                        entry.state.last_used = now;
                        serve_waiters(ctx, wheel, owners, counts, entry, now);
                        report.leases_expired += 1;
                    }
                }
                Timer::Wait { name, hash, waiter } => {
                    let Some(entry) = find(locks, hash, &name) else {
                        continue;
                    };
                    if let Some(w) = remove_waiter(counts, entry, waiter) {
                        unindex_waiter(owners, w.owner.id(), w.id);
                        entry.state.last_used = now;
                        let _ = w.tx.try_send(Err(LockError::LockWaitTimeout));
                        report.waits_timed_out += 1;
                    }
                }
                Timer::Gc => {
                    report.locks_collected += self.collect_idle(ctx.config.gc_min_idle, now);
                    self.wheel
                        .insert(now.after(ctx.config.gc_interval).as_millis(), Timer::Gc);
                }
            }
        }
    }

    /// Drops locks nobody holds or waits for that have been idle for at least `min_idle`.
    /// Nothing else refers to such a lock (no timer, no owner index entry), so dropping it only
    /// forgets its size.
    fn collect_idle(&mut self, min_idle: Duration, now: Tick) -> usize {
        let before = self.locks.len();
        self.locks.retain(|e| {
            !(e.state.holders.is_empty()
                && e.state.waiters.is_none()
                && now.since(e.state.last_used) >= min_idle)
        });
        if self.locks.capacity() > 64 && self.locks.len() < self.locks.capacity() / 4 {
            self.locks.shrink_to_fit(|e| e.hash);
        }
        before - self.locks.len()
    }

    /// Ends every wait with `Shutdown`.
    pub(crate) fn cancel_all_waiters(&mut self) {
        let Shard {
            locks,
            wheel,
            owners,
            counts,
            ..
        } = self;
        for entry in locks.iter_mut() {
            for w in entry
                .state
                .waiters
                .take()
                .into_iter()
                .flat_map(|w| w.into_iter())
            {
                counts.waiters -= 1;
                if let Some(timer) = w.timer {
                    wheel.cancel(timer);
                }
                unindex_waiter(owners, w.owner.id(), w.id);
                let _ = w.tx.try_send(Err(LockError::Shutdown));
            }
        }
    }

    /// Puts back a stored hold (validated by the caller) with a lease of `lease_secs` from
    /// now (0: none).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn restore_hold(
        &mut self,
        hash: u64,
        name: &str,
        size: u32,
        key: LockKey,
        token: u64,
        owner: OwnerId,
        lease_secs: u32,
        now: Tick,
    ) {
        let now = self.observe(now);
        let Shard {
            locks,
            wheel,
            counts,
            owners,
            ..
        } = self;
        let entry =
            Self::find_or_create(locks, hash, name, size, now).expect("sizes validated by restore");
        let lease = (lease_secs > 0).then(|| {
            wheel.insert(
                now.after_secs(lease_secs).as_millis(),
                Timer::Lease {
                    name: entry.name.clone(),
                    hash,
                    key,
                },
            )
        });
        entry.state.holders.push(Hold {
            key,
            owner,
            token,
            lease,
            lease_secs,
        });
        counts.holds += 1;
        if owner != OwnerId::RESTORED {
            owners.entry(owner).or_default().holds.insert(key, hash);
        }
    }

    /// Makes room for `additional` more locks (restore knows how many are coming).
    pub(crate) fn reserve(&mut self, additional: usize) {
        self.locks.reserve(additional, |e| e.hash);
    }

    pub(crate) fn list(&self, out: &mut Vec<HoldInfo>) {
        for entry in self.locks.iter() {
            for hold in &entry.state.holders {
                out.push(HoldInfo {
                    name: entry.name.clone(),
                    key: hold.key,
                    size: entry.state.size,
                    owner: hold.owner,
                    fencing_token: hold.token,
                    lease_deadline: hold
                        .lease
                        .and_then(|t| self.wheel.deadline(t))
                        .map(Tick::from_millis),
                });
            }
        }
    }

    pub(crate) fn stats(&self) -> ShardStats {
        ShardStats {
            locks: self.locks.len(),
            holds: self.counts.holds,
            waiters: self.counts.waiters,
            timers: self.wheel.len(),
        }
    }

    pub(crate) fn next_deadline(&self) -> Option<Tick> {
        self.wheel.next_deadline().map(Tick::from_millis)
    }
}

/// Grants a free slot of `entry` to `owner`. The caller has checked that a slot is free.
// The shard's parts are passed one by one (not `&mut Shard`) because `entry` borrows its table.
#[allow(clippy::too_many_arguments)]
fn grant(
    ctx: &Ctx<'_>,
    wheel: &mut TimerWheel<Timer>,
    owners: &mut FastMap<OwnerId, OwnerIndex>,
    counts: &mut Counts,
    entry: &mut LockEntry,
    owner: OwnerId,
    lease: Option<u32>,
    tag: u64,
    now: Tick,
) -> Grant {
    debug_assert!(entry.state.holders.len() < entry.state.size as usize);
    let key = LockKey::generate();
    // Tokens are taken under the shard mutex, so for any one name they strictly increase.
    let token = ctx.tokens.fetch_add(1, Ordering::Relaxed);
    let lease_secs = lease;
    let lease = lease.map(|secs| {
        let when = now.after_secs(secs);
        ctx.alarm.arm(when);
        let timer = wheel.insert(
            when.as_millis(),
            Timer::Lease {
                name: entry.name.clone(),
                hash: entry.hash,
                key,
            },
        );
        (when, timer)
    });
    entry.state.holders.push(Hold {
        key,
        owner,
        token,
        lease: lease.map(|(_, timer)| timer),
        lease_secs: lease_secs.unwrap_or(0),
    });
    counts.holds += 1;
    owners
        .entry(owner)
        .or_default()
        .holds
        .insert(key, entry.hash);
    let durable_seq = ctx.events.map_or(0, |sink| {
        sink.record(Event::Granted {
            name: &entry.name,
            key,
            size: entry.state.size,
            owner,
            fencing_token: token,
            lease_seconds: lease_secs,
            tag,
        })
    });
    Grant {
        key,
        fencing_token: token,
        lease_deadline: lease.map(|(when, _)| when),
        durable_seq,
    }
}

/// Removes hold `index` of `entry` with its lease and index entry. Does not serve waiters.
fn take_hold(
    ctx: &Ctx<'_>,
    wheel: &mut TimerWheel<Timer>,
    owners: &mut FastMap<OwnerId, OwnerIndex>,
    counts: &mut Counts,
    entry: &mut LockEntry,
    index: usize,
) -> Hold {
    let hold = entry.state.holders.remove(index);
    counts.holds -= 1;
    if let Some(timer) = hold.lease {
        wheel.cancel(timer);
    }
    if let Some(owner_index) = owners.get_mut(&hold.owner) {
        owner_index.holds.remove(&hold.key);
        if owner_index.is_spent() {
            owners.remove(&hold.owner);
        }
    }
    if let Some(sink) = ctx.events {
        sink.record(Event::Released {
            name: &entry.name,
            key: hold.key,
        });
    }
    hold
}

/// Hands free slots to the oldest live waiters. Waiters whose owner ended or whose handle is
/// gone are skipped; a grant whose receiver vanished between the check and the send is taken
/// back and passed on. Restores the invariant "waiters only while every slot is held".
fn serve_waiters(
    ctx: &Ctx<'_>,
    wheel: &mut TimerWheel<Timer>,
    owners: &mut FastMap<OwnerId, OwnerIndex>,
    counts: &mut Counts,
    entry: &mut LockEntry,
    now: Tick,
) -> usize {
    let mut handed_off = 0;
    while entry.state.holders.len() < entry.state.size as usize {
        let Some(waiter) = entry.state.waiters.as_mut().and_then(|w| w.pop_front()) else {
            break;
        };
        counts.waiters -= 1;
        if let Some(timer) = waiter.timer {
            wheel.cancel(timer);
        }
        unindex_waiter(owners, waiter.owner.id(), waiter.id);
        if waiter.owner.has_ended() {
            let _ = waiter.tx.try_send(Err(LockError::SessionEnded));
            continue;
        }
        if waiter.tx.is_disconnected() {
            continue;
        }
        let granted = grant(
            ctx,
            wheel,
            owners,
            counts,
            entry,
            waiter.owner.id(),
            waiter.lock_timeout,
            waiter.tag,
            now,
        );
        if waiter.tx.try_send(Ok(granted)).is_err() {
            // The receiver went away after the check: hand the slot back and go on.
            let index = entry.state.holders.len() - 1;
            take_hold(ctx, wheel, owners, counts, entry, index);
        } else {
            handed_off += 1;
        }
    }
    if entry.state.waiters.as_ref().is_some_and(|w| w.is_empty()) {
        entry.state.waiters = None;
    }
    handed_off
}

fn remove_waiter(counts: &mut Counts, entry: &mut LockEntry, waiter: u64) -> Option<Waiter> {
    let waiters = entry.state.waiters.as_mut()?;
    let position = waiters.iter().position(|w| w.id == waiter)?;
    let removed = waiters.remove(position);
    counts.waiters -= 1;
    if waiters.is_empty() {
        entry.state.waiters = None;
    }
    removed
}

fn unindex_waiter(owners: &mut FastMap<OwnerId, OwnerIndex>, owner: OwnerId, waiter: u64) {
    if let Some(owner_index) = owners.get_mut(&owner) {
        owner_index.waiters.remove(&waiter);
        if owner_index.is_spent() {
            owners.remove(&owner);
        }
    }
}
