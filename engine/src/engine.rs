//! The engine: a sharded table of named locks behind a `&self`, thread-safe API.
//!
//! Method families (the order in which a transport uses them):
//!
//! - **owners**: [`Engine::new_owner`] per gRPC connection, [`Engine::new_session`] per REST
//!   session (idle expiry on the wheel, kept alive by [`Engine::touch_session`]), and
//!   [`Engine::release_owner`] when the connection or session ends;
//! - **requests**: [`Engine::lock`], [`Engine::try_lock`], [`Engine::unlock`],
//!   [`Engine::refresh`], [`Engine::force_unlock`] (admin);
//! - **time**: a driver sleeps until [`Engine::next_deadline`] (or until
//!   [`Engine::deadline_changes`] signals an earlier one) and calls [`Engine::advance`];
//! - **state**: [`Engine::list`], [`Engine::stats`], [`Engine::restore`], [`Engine::shutdown`].
//!
//! Every call that needs time takes `now`; the engine never reads a clock.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use crossbeam_utils::CachePadded;
use parking_lot::Mutex;

use crate::config::{ConfigError, EngineConfig};
use crate::error::{LockError, RestoreError};
use crate::owner::{Owner, OwnerId};
use crate::pending::Pending;
use crate::shard::{Alarm, Ctx, Shard, ShardStats, Want};
use crate::time::Tick;
use crate::types::{
    AdvanceReport, EventSink, Grant, HoldInfo, HoldRecord, LockKey, LockRequest, TryLockOutcome,
    Unlocked,
};
use crate::wheel::TimerWheel;

/// What a blocking Lock did.
#[derive(Debug)]
pub enum LockOutcome {
    /// A slot was free and nobody was waiting: it is ours.
    Acquired(Grant),
    /// Queued: the grant (or a timeout or cancellation) arrives through the handle.
    Waiting(Pending),
}

/// What [`Engine::release_owner`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReleaseSummary {
    /// Holds released (their slots passed on to waiters).
    pub released: usize,
    /// Holds kept because the engine keeps holds of ended owners (`no_clear_on_disconnect`).
    pub kept: usize,
    /// Waiters cancelled.
    pub waiters_cancelled: usize,
}

/// The lock table. Cheap to clone: clones share the same table.
#[derive(Clone)]
pub struct Engine {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("config", &self.inner.config)
            .field("stats", &self.stats())
            .finish()
    }
}

pub(crate) struct Inner {
    config: EngineConfig,
    hasher: foldhash::fast::RandomState,
    shards: Box<[CachePadded<Mutex<Shard>>]>,
    /// The next fencing token to hand out; tokens start at 1 (0 means "not locked").
    tokens: AtomicU64,
    next_owner: AtomicU64,
    /// Idle expiry of session owners (REST). Separate from the shards: sessions span shards.
    sessions: Mutex<TimerWheel<Owner>>,
    alarm: Alarm,
    events: Option<Arc<dyn EventSink>>,
    shut_down: AtomicBool,
}

impl Inner {
    fn ctx(&self) -> Ctx<'_> {
        Ctx {
            config: &self.config,
            tokens: &self.tokens,
            events: self.events.as_deref(),
            alarm: &self.alarm,
        }
    }

    fn hash(&self, name: &str) -> u64 {
        use std::hash::BuildHasher;
        self.hasher.hash_one(name)
    }

    /// Picks a shard from bits 40.. of the hash: hashbrown uses the low bits for the bucket and
    /// the top seven for its tag, so these are independent of both.
    fn shard(&self, hash: u64) -> usize {
        ((hash >> 40) as usize) & (self.shards.len() - 1)
    }

    pub(crate) fn cancel_waiter(
        &self,
        shard: usize,
        hash: u64,
        name: &str,
        waiter: u64,
        rx: &flume::Receiver<crate::shard::WaitResult>,
    ) {
        self.shards[shard]
            .lock()
            .cancel_waiter(&self.ctx(), hash, name, waiter, rx);
    }
}

impl Engine {
    /// An empty engine whose time starts at `now`.
    pub fn new(config: EngineConfig, now: Tick) -> Result<Engine, ConfigError> {
        Self::build(config, now, None)
    }

    /// An empty engine that reports every grant and release to `sink` (e.g. a state file).
    pub fn with_event_sink(
        config: EngineConfig,
        now: Tick,
        sink: Arc<dyn EventSink>,
    ) -> Result<Engine, ConfigError> {
        Self::build(config, now, Some(sink))
    }

    fn build(
        config: EngineConfig,
        now: Tick,
        events: Option<Arc<dyn EventSink>>,
    ) -> Result<Engine, ConfigError> {
        config.validate()?;
        let shards = (0..config.shards)
            .map(|_| CachePadded::new(Mutex::new(Shard::new(now, config.gc_interval))))
            .collect();
        Ok(Engine {
            inner: Arc::new(Inner {
                hasher: foldhash::fast::RandomState::default(),
                shards,
                tokens: AtomicU64::new(1),
                next_owner: AtomicU64::new(1),
                sessions: Mutex::new(TimerWheel::starting_at(now.as_millis())),
                alarm: Alarm::new(),
                events,
                shut_down: AtomicBool::new(false),
                config,
            }),
        })
    }

    /// The configuration the engine runs with.
    pub fn config(&self) -> &EngineConfig {
        &self.inner.config
    }

    /// A new owner for a connection (released explicitly with [`Engine::release_owner`]).
    pub fn new_owner(&self) -> Owner {
        let id = OwnerId(self.inner.next_owner.fetch_add(1, Ordering::Relaxed));
        Owner::new(id, 0, u64::MAX)
    }

    /// An owner with a given id, for a caller that allocates ids itself (cluster mode, where
    /// an owner id is cluster-wide: the node a client is connected to and that node's own
    /// number). Such a caller must use only ids of its own, never [`Engine::new_owner`]'s.
    pub fn owner_with_id(&self, id: OwnerId) -> Owner {
        Owner::new(id, 0, u64::MAX)
    }

    /// A new session owner that is released automatically after `idle` without a
    /// [`Engine::touch_session`].
    pub fn new_session(&self, idle: Duration, now: Tick) -> Owner {
        let id = OwnerId(self.inner.next_owner.fetch_add(1, Ordering::Relaxed));
        self.session_with_id(id, idle, now)
    }

    /// [`Engine::new_session`] with an id the caller allocates (see [`Engine::owner_with_id`]).
    pub fn session_with_id(&self, id: OwnerId, idle: Duration, now: Tick) -> Owner {
        let idle_ms = u64::try_from(idle.as_millis()).unwrap_or(u64::MAX).max(1);
        let deadline = now.after(idle);
        let owner = Owner::new(id, idle_ms, deadline.as_millis());
        self.inner.alarm.arm(deadline);
        self.inner
            .sessions
            .lock()
            .insert(deadline.as_millis(), owner.clone());
        owner
    }

    /// Restarts a session's idle timer. False if the session has already ended.
    pub fn touch_session(&self, owner: &Owner, now: Tick) -> bool {
        let timeout = owner.state.idle_timeout_ms;
        if timeout != 0 {
            let deadline = now.as_millis().saturating_add(timeout);
            owner
                .state
                .idle_deadline
                .fetch_max(deadline, Ordering::AcqRel);
        }
        !owner.has_ended()
    }

    fn validate(&self, request: &LockRequest<'_>, blocking: bool) -> Result<Want, LockError> {
        // go-ldlm's order, so a request with several faults gets go-ldlm's error: lock
        // timeout, wait timeout, name, size.
        let lease = match request.lock_timeout_seconds {
            Some(secs) if secs < 0 => return Err(LockError::InvalidLockTimeout),
            Some(secs) if secs > 0 => Some(secs as u32),
            _ => None,
        };
        let wait = match request.wait_timeout_seconds {
            Some(secs) if blocking && secs < 0 => return Err(LockError::InvalidWaitTimeout),
            Some(secs) if blocking && secs > 0 => Some(secs as u32),
            _ => None,
        };
        if request.name.is_empty() {
            return Err(LockError::EmptyName);
        }
        if request.name.len() > self.inner.config.max_name_bytes {
            return Err(LockError::NameTooLong {
                limit: self.inner.config.max_name_bytes,
            });
        }
        let size = request.size.unwrap_or(1);
        if size <= 0 {
            return Err(LockError::InvalidLockSize);
        }
        if self.inner.shut_down.load(Ordering::Acquire) {
            return Err(LockError::Shutdown);
        }
        Ok(Want {
            size: size as u32,
            lease,
            wait,
            tag: request.tag,
        })
    }

    /// TryLock: a free slot now, or [`TryLockOutcome::Busy`]. Never waits, never barges past
    /// waiters. `request.wait_timeout_seconds` is ignored.
    pub fn try_lock(
        &self,
        owner: &Owner,
        request: &LockRequest<'_>,
        now: Tick,
    ) -> Result<TryLockOutcome, LockError> {
        let v = self.validate(request, false)?;
        let hash = self.inner.hash(request.name);
        let shard = self.inner.shard(hash);
        self.inner.shards[shard].lock().try_lock(
            &self.inner.ctx(),
            owner,
            hash,
            request.name,
            v,
            now,
        )
    }

    /// Lock: a free slot now, or a place in the lock's FIFO queue. Dropping the returned
    /// [`Pending`] leaves the queue (and gives back a grant that raced with the drop).
    pub fn lock(
        &self,
        owner: &Owner,
        request: &LockRequest<'_>,
        now: Tick,
    ) -> Result<LockOutcome, LockError> {
        let v = self.validate(request, true)?;
        let hash = self.inner.hash(request.name);
        let shard = self.inner.shard(hash);
        let queued = self.inner.shards[shard].lock().lock(
            &self.inner.ctx(),
            owner,
            hash,
            request.name,
            v,
            now,
        )?;
        Ok(match queued {
            Ok(grant) => LockOutcome::Acquired(grant),
            Err((waiter, name, rx)) => LockOutcome::Waiting(Pending::new(
                self.inner.clone(),
                shard,
                hash,
                name,
                waiter,
                rx,
            )),
        })
    }

    /// Unlock: whoever presents name + key releases that hold; the slot goes to the oldest
    /// waiter ([`Unlocked::handed_off`] says whether one was served).
    pub fn unlock(&self, name: &str, key: &str, now: Tick) -> Result<Unlocked, LockError> {
        let hash = self.inner.hash(name);
        let shard = self.inner.shard(hash);
        self.inner.shards[shard]
            .lock()
            .unlock(&self.inner.ctx(), hash, name, key, now)
    }

    /// Refresh (a.k.a. Renew): the hold's lease becomes `lock_timeout_seconds` from `now`. A hold
    /// without a lease gets one (go-ldlm refuses with an error).
    pub fn refresh(
        &self,
        name: &str,
        key: &str,
        lock_timeout_seconds: i32,
        now: Tick,
    ) -> Result<Grant, LockError> {
        if lock_timeout_seconds <= 0 {
            return Err(LockError::InvalidLockTimeout);
        }
        let hash = self.inner.hash(name);
        let shard = self.inner.shard(hash);
        self.inner.shards[shard].lock().refresh(
            &self.inner.ctx(),
            hash,
            name,
            key,
            lock_timeout_seconds as u32,
            now,
        )
    }

    /// The event sink's sequence number of the last change made so far (0 without a sink): once
    /// it is durable, so is every change that happened before this call.
    pub fn recorded_seq(&self) -> u64 {
        self.inner.events.as_ref().map_or(0, |sink| sink.last_seq())
    }

    /// True if `key` holds a slot of `name` now.
    pub fn is_held(&self, name: &str, key: LockKey) -> bool {
        let hash = self.inner.hash(name);
        let shard = self.inner.shard(hash);
        self.inner.shards[shard].lock().is_held(hash, name, key)
    }

    /// Admin unlock: by key, or without a key the only holder (several holders is an error
    /// listing their keys). Returns the key released.
    pub fn force_unlock(
        &self,
        name: &str,
        key: Option<&str>,
        now: Tick,
    ) -> Result<LockKey, LockError> {
        let hash = self.inner.hash(name);
        let shard = self.inner.shard(hash);
        self.inner.shards[shard]
            .lock()
            .force_unlock(&self.inner.ctx(), hash, name, key, now)
    }

    /// Ends an owner: from now on it can be granted nothing; its waiters are cancelled; its holds
    /// are released (or kept and still listed under it, if the engine keeps holds of ended
    /// owners). Idempotent.
    pub fn release_owner(&self, owner: &Owner, now: Tick) -> ReleaseSummary {
        self.release_owners(std::slice::from_ref(owner), now)
    }

    /// Ends several owners at once, as [`Engine::release_owner`] each, except that all of
    /// them are ended before any hold is released: a slot one of them frees is never granted
    /// to another of them (a grant nobody would hear of, made only to be released again — for
    /// the clients of a node that is gone, or of a process that restarted). Idempotent.
    pub fn release_owners(&self, owners: &[Owner], now: Tick) -> ReleaseSummary {
        // The flags are set before any shard is visited: a grant racing with this either
        // happened before its shard is swept below, or sees the flag under the shard mutex and
        // refuses.
        let ending: Vec<OwnerId> = owners
            .iter()
            .filter(|owner| !owner.state.ended.swap(true, Ordering::AcqRel))
            .map(Owner::id)
            .collect();
        let ctx = self.inner.ctx();
        let mut summary = ReleaseSummary::default();
        for shard in self.inner.shards.iter() {
            let (released, kept, cancelled) = shard.lock().release_owners(&ctx, &ending, now);
            summary.released += released;
            summary.kept += kept;
            summary.waiters_cancelled += cancelled;
        }
        summary
    }

    /// Fires everything due by `now`: lease expiries (slots passed on), wait timeouts, lock GC
    /// and idle session expiry (sessions released).
    ///
    /// Shards are advanced one after another on the caller's thread; a large burst (more than
    /// [`PARALLEL_ADVANCE_AFTER`] timers) finishes on up to [`EngineConfig::advance_threads`]
    /// threads.
    pub fn advance(&self, now: Tick) -> AdvanceReport {
        let mut report = AdvanceReport::default();
        let expired: Vec<Owner> = {
            let mut sessions = self.inner.sessions.lock();
            let mut expired = Vec::new();
            while let Some((owner, _)) = sessions.poll(now.as_millis()) {
                if owner.has_ended() {
                    continue;
                }
                let deadline = owner.state.idle_deadline.load(Ordering::Acquire);
                if deadline > now.as_millis() {
                    // Touched since it was filed: re-file at the new deadline (lazy reschedule).
                    sessions.insert(deadline, owner);
                } else {
                    expired.push(owner);
                }
            }
            expired
        };
        for owner in expired {
            self.release_owner(&owner, now);
            report.sessions_expired.push(owner.id());
        }
        let ctx = self.inner.ctx();
        let shards = &self.inner.shards;
        let threads = self.inner.config.advance_threads;
        let mut next = 0;
        while next < shards.len() {
            shards[next].lock().advance(&ctx, now, &mut report);
            next += 1;
            if threads > 1 && report.timers_fired() >= PARALLEL_ADVANCE_AFTER {
                break;
            }
        }
        if next < shards.len() {
            advance_in_parallel(&shards[next..], threads, &ctx, now, &mut report);
        }
        report
    }

    /// When [`Engine::advance`] next has work (a lower bound), or `None` if no timer is set.
    pub fn next_deadline(&self) -> Option<Tick> {
        let alarm = &self.inner.alarm;
        alarm.armed.store(u64::MAX, Ordering::SeqCst);
        let mut next = self
            .inner
            .sessions
            .lock()
            .next_deadline()
            .map(Tick::from_millis);
        for shard in self.inner.shards.iter() {
            if let Some(deadline) = shard.lock().next_deadline() {
                next = Some(next.map_or(deadline, |n| n.min(deadline)));
            }
        }
        if let Some(deadline) = next {
            alarm
                .armed
                .fetch_min(deadline.as_millis(), Ordering::AcqRel);
        }
        next
    }

    /// Signals (at least once) whenever a timer is set earlier than the deadline last returned
    /// by [`Engine::next_deadline`]: the driver should then recompute it.
    pub fn deadline_changes(&self) -> flume::Receiver<()> {
        self.inner.alarm.rx.clone()
    }

    /// Every held slot, sorted by name and fencing token.
    pub fn list(&self) -> Vec<HoldInfo> {
        let mut out = Vec::new();
        for shard in self.inner.shards.iter() {
            shard.lock().list(&mut out);
        }
        out.sort_by(|a, b| {
            a.name
                .cmp(&b.name)
                .then(a.fencing_token.cmp(&b.fencing_token))
        });
        out
    }

    /// Counts over all shards.
    pub fn stats(&self) -> ShardStats {
        let mut total = ShardStats::default();
        for shard in self.inner.shards.iter() {
            let s = shard.lock().stats();
            total.locks += s.locks;
            total.holds += s.holds;
            total.waiters += s.waiters;
            total.timers += s.timers;
        }
        total
    }

    /// The highest fencing token handed out so far (0 if none).
    pub fn max_fencing_token(&self) -> u64 {
        self.inner.tokens.load(Ordering::Acquire).saturating_sub(1)
    }

    /// Fills an empty engine with stored holds, each under its stored owner (a state file
    /// stores none: [`OwnerId::RESTORED`]; a cluster replica stores the cluster-wide owner, so
    /// releasing that owner later releases its restored holds too). A hold stored
    /// with a lease gets a fresh lease of its own length from `now` (so it never ends earlier
    /// than its holder was promised); one stored without gets `default_lease` from `now`
    /// (`None`: no lease). Fencing tokens continue above both `fencing_floor` and every stored
    /// token. All records are checked first: on any conflict nothing is restored.
    pub fn restore(
        &self,
        records: &[HoldRecord],
        default_lease: Option<Duration>,
        fencing_floor: u64,
        now: Tick,
    ) -> Result<usize, RestoreError> {
        if self.stats().locks != 0 {
            return Err(RestoreError::NotEmpty);
        }
        let shown = |name: &str| name.chars().take(80).collect::<String>();
        let mut seen: hashbrown::HashMap<
            &str,
            (u32, smallvec::SmallVec<[LockKey; 1]>),
            foldhash::fast::RandomState,
        > = hashbrown::HashMap::with_capacity_and_hasher(records.len(), Default::default());
        // Tokens must be able to keep growing for the life of the deployment: anything in the
        // upper half of u64 is damage, not history (it would wrap around to 0 and go backwards).
        const MAX_STORED_TOKEN: u64 = u64::MAX / 2;
        if fencing_floor > MAX_STORED_TOKEN {
            return Err(RestoreError::TokenOutOfRange {
                token: fencing_floor,
            });
        }
        let mut max_token = fencing_floor;
        for record in records {
            if record.name.is_empty() || record.name.len() > self.inner.config.max_name_bytes {
                return Err(RestoreError::InvalidName {
                    name: shown(&record.name),
                });
            }
            if record.size == 0 {
                return Err(RestoreError::InvalidSize {
                    name: shown(&record.name),
                });
            }
            let (size, keys) = seen
                .entry(&record.name)
                .or_insert((record.size, smallvec::SmallVec::new()));
            if *size != record.size {
                return Err(RestoreError::SizeConflict {
                    name: shown(&record.name),
                    first: *size,
                    second: record.size,
                });
            }
            if keys.contains(&record.key) {
                return Err(RestoreError::DuplicateKey {
                    name: shown(&record.name),
                    key: record.key.to_string(),
                });
            }
            keys.push(record.key);
            if keys.len() > *size as usize {
                return Err(RestoreError::TooManyHolders {
                    name: shown(&record.name),
                    size: *size,
                });
            }
            if record.fencing_token > MAX_STORED_TOKEN {
                return Err(RestoreError::TokenOutOfRange {
                    token: record.fencing_token,
                });
            }
            max_token = max_token.max(record.fencing_token);
        }
        drop(seen);
        let mut per_shard = vec![0usize; self.inner.shards.len()];
        let hashes: Vec<u64> = records.iter().map(|r| self.inner.hash(&r.name)).collect();
        for &hash in &hashes {
            per_shard[self.inner.shard(hash)] += 1;
        }
        for (shard, count) in self.inner.shards.iter().zip(per_shard) {
            shard.lock().reserve(count);
        }
        // Leases are whole seconds; a default of a fraction of a second rounds up (never ends
        // a hold early), and an absurd one is clamped to u32 seconds (136 years).
        let default_secs = default_lease.map_or(0, |lease| {
            u32::try_from(lease.as_millis().div_ceil(1000)).unwrap_or(u32::MAX)
        });
        let mut earliest: Option<u32> = None;
        for (record, &hash) in records.iter().zip(&hashes) {
            let shard = self.inner.shard(hash);
            let lease_secs = record.lease_seconds.unwrap_or(default_secs);
            if lease_secs > 0 {
                earliest = Some(earliest.map_or(lease_secs, |e| e.min(lease_secs)));
            }
            self.inner.shards[shard].lock().restore_hold(
                hash,
                &record.name,
                record.size,
                record.key,
                record.fencing_token,
                record.owner,
                lease_secs,
                now,
            );
        }
        self.inner
            .tokens
            .fetch_max(max_token.saturating_add(1), Ordering::AcqRel);
        if let Some(secs) = earliest {
            self.inner.alarm.arm(now.after_secs(secs));
        }
        Ok(records.len())
    }

    /// True once [`Engine::shutdown`] was called. Transports check it before releasing the
    /// owner of a closing connection, so a graceful shutdown keeps held locks (go-ldlm's B2).
    pub fn is_shut_down(&self) -> bool {
        self.inner.shut_down.load(Ordering::Acquire)
    }

    /// Stops granting: new Lock/TryLock calls fail with `Shutdown` and every waiter is told so.
    /// Holds stay (and stay in the state file, so a restart brings them back).
    pub fn shutdown(&self) {
        self.inner.shut_down.store(true, Ordering::Release);
        for shard in self.inner.shards.iter() {
            shard.lock().cancel_all_waiters();
        }
    }
}

/// How many timers one [`Engine::advance`] fires on the caller's thread before it shares the
/// shards it has not reached yet among [`EngineConfig::advance_threads`] threads. Below this a
/// burst is cheaper to finish than a thread is to start (a few microseconds of work vs. tens).
pub const PARALLEL_ADVANCE_AFTER: usize = 1024;

/// Advances `shards` on `threads` threads: the caller's and scoped helpers, each taking the next
/// shard nobody has taken until none is left.
///
/// Only a big burst gets here (see [`PARALLEL_ADVANCE_AFTER`]): 100k leases due in the same
/// millisecond cost ~50 ms on one thread, most of it cache misses on each lock, so a second
/// core halves the lateness of the last one. Shards are independent (each thread holds one
/// shard mutex at a time, as every other caller does), and the order of events *per name* is
/// unchanged, since a name lives in one shard. If a helper cannot be started, the caller does
/// its share.
fn advance_in_parallel(
    shards: &[CachePadded<Mutex<Shard>>],
    threads: usize,
    ctx: &Ctx<'_>,
    now: Tick,
    report: &mut AdvanceReport,
) {
    let cursor = AtomicUsize::new(0);
    let work = |report: &mut AdvanceReport| {
        loop {
            let index = cursor.fetch_add(1, Ordering::Relaxed);
            let Some(shard) = shards.get(index) else {
                break;
            };
            shard.lock().advance(ctx, now, report);
        }
    };
    std::thread::scope(|scope| {
        let helpers: Vec<_> = (1..threads.min(shards.len()))
            .filter_map(|_| {
                std::thread::Builder::new()
                    .name("ldlm-advance".to_owned())
                    .spawn_scoped(scope, || {
                        let mut part = AdvanceReport::default();
                        work(&mut part);
                        part
                    })
                    .ok()
            })
            .collect();
        work(report);
        for helper in helpers {
            match helper.join() {
                Ok(part) => report.merge(part),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
    });
}
