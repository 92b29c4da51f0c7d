//! A reference model of the engine, and a checker that runs the real engine and the model side
//! by side on a sequence of operations and compares every observable outcome.
//!
//! The model is deliberately naive: one `BTreeMap` of locks, linear scans, a global event loop
//! that fires the earliest lease / wait / GC deadline first. It is written from go-ldlm's
//! behaviour plus our deliberate differences (`docs/go-ldlm-differences.md`), not from the
//! engine's code. The property tests and the `engine_ops` fuzz target both drive [`check`].
//!
//! # Time in the checker
//!
//! Operation `i` (1-based) first advances time to `base + 2i` and then runs at `base + 2i + 1`,
//! where `base` grows by whole seconds with `Advance` operations. Leases and waits are whole
//! seconds, so a deadline's residue modulo 1000 ms names the step that set it: a hand-off
//! during an advance, and a wait queued by the operation after it, can never fall due in the
//! same millisecond. This keeps the model's order of simultaneous events irrelevant.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Duration;

use crate::{
    Engine, EngineConfig, LockError, LockOutcome, LockRequest, Owner, Pending, Tick, TryLockOutcome,
};

/// Number of distinct lock names the checker uses (few, to force contention).
pub const NAMES: u8 = 3;
/// Number of owner slots.
pub const OWNERS: u8 = 3;

/// One step of a checked sequence. Small integers select names, owners, grants and waiters
/// modulo the number that exist, so any value is meaningful (fuzzer-friendly).
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum Op {
    /// Blocking Lock.
    Lock {
        /// Owner slot.
        owner: u8,
        /// Name index.
        name: u8,
        /// Raw `size`.
        size: Option<i8>,
        /// Raw `lock_timeout_seconds`.
        lease: Option<i8>,
        /// Raw `wait_timeout_seconds`.
        wait: Option<i8>,
    },
    /// TryLock.
    TryLock {
        /// Owner slot.
        owner: u8,
        /// Name index.
        name: u8,
        /// Raw `size`.
        size: Option<i8>,
        /// Raw `lock_timeout_seconds`.
        lease: Option<i8>,
    },
    /// Unlock with the key of an earlier grant (or a bogus key when none matches).
    Unlock {
        /// Name index.
        name: u8,
        /// Grant index (`u8::MAX`: a bogus key).
        grant: u8,
    },
    /// Refresh with the key of an earlier grant.
    Refresh {
        /// Name index.
        name: u8,
        /// Grant index (`u8::MAX`: a bogus key).
        grant: u8,
        /// Raw `lock_timeout_seconds`.
        lease: i8,
    },
    /// Admin unlock, with a key or without.
    ForceUnlock {
        /// Name index.
        name: u8,
        /// Grant index, or none.
        grant: Option<u8>,
    },
    /// Drop one open pending wait.
    Cancel {
        /// Index into the open waits.
        waiter: u8,
    },
    /// End an owner (its slot gets a fresh owner).
    ReleaseOwner {
        /// Owner slot.
        owner: u8,
    },
    /// Let whole seconds pass.
    Advance {
        /// Seconds.
        secs: u8,
    },
}

/// Who a hold was granted to, in checker terms.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum GrantId {
    /// Granted directly by operation `i`.
    Op(usize),
    /// Granted to waiter `w` by a hand-off.
    Waiter(usize),
}

#[derive(Clone, Debug)]
struct MHold {
    gid: GrantId,
    owner: u64,
    lease: Option<u64>,
}

#[derive(Clone, Debug)]
struct MWaiter {
    id: usize,
    owner: u64,
    deadline: Option<u64>,
    lease_secs: Option<u32>,
}

#[derive(Clone, Debug)]
struct MLock {
    size: u32,
    last_used: u64,
    holders: Vec<MHold>,
    waiters: VecDeque<MWaiter>,
}

/// How a wait ended in the model.
#[derive(Clone, Debug, PartialEq, Eq)]
enum WaitEnd {
    Granted,
    Failed(LockError),
}

/// The reference model. Time is in milliseconds.
#[derive(Debug)]
struct Model {
    config: EngineConfig,
    locks: BTreeMap<String, MLock>,
    ended: Vec<u64>,
    next_gc: Option<u64>,
    wait_ends: HashMap<usize, WaitEnd>,
}

/// What one request did, in a form both sides can produce.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Outcome {
    Acquired,
    Busy,
    Queued,
    Done,
    Failed(LockError),
}

fn secs(v: Option<i8>) -> Option<i32> {
    v.map(i32::from)
}

impl Model {
    fn new(config: EngineConfig) -> Model {
        let next_gc =
            (!config.gc_interval.is_zero()).then_some(config.gc_interval.as_millis() as u64);
        Model {
            config,
            locks: BTreeMap::new(),
            ended: Vec::new(),
            next_gc,
            wait_ends: HashMap::new(),
        }
    }

    fn validate(
        &self,
        name: &str,
        size: Option<i32>,
        lease: Option<i32>,
        wait: Option<i32>,
    ) -> Result<(u32, Option<u32>, Option<u32>), LockError> {
        if lease.is_some_and(|l| l < 0) {
            return Err(LockError::InvalidLockTimeout);
        }
        if wait.is_some_and(|w| w < 0) {
            return Err(LockError::InvalidWaitTimeout);
        }
        if name.is_empty() {
            return Err(LockError::EmptyName);
        }
        if name.len() > self.config.max_name_bytes {
            return Err(LockError::NameTooLong {
                limit: self.config.max_name_bytes,
            });
        }
        let size = size.unwrap_or(1);
        if size <= 0 {
            return Err(LockError::InvalidLockSize);
        }
        let positive = |v: Option<i32>| v.filter(|&v| v > 0).map(|v| v as u32);
        Ok((size as u32, positive(lease), positive(wait)))
    }

    fn lookup(&mut self, name: &str, size: u32, now: u64) -> Result<&mut MLock, LockError> {
        let lock = self.locks.entry(name.to_string()).or_insert_with(|| MLock {
            size,
            last_used: now,
            holders: Vec::new(),
            waiters: VecDeque::new(),
        });
        lock.last_used = now;
        if lock.size != size {
            return Err(LockError::LockSizeMismatch);
        }
        Ok(lock)
    }

    #[allow(clippy::too_many_arguments)]
    fn lock(
        &mut self,
        gid: GrantId,
        waiter: usize,
        owner: u64,
        name: &str,
        size: Option<i32>,
        lease: Option<i32>,
        wait: Option<i32>,
        blocking: bool,
        now: u64,
    ) -> Outcome {
        let wait = if blocking { wait } else { None };
        let (size, lease, wait) = match self.validate(name, size, lease, wait) {
            Ok(v) => v,
            Err(e) => return Outcome::Failed(e),
        };
        if self.ended.contains(&owner) {
            return Outcome::Failed(LockError::SessionEnded);
        }
        let limit = self.config.max_waiters_per_lock;
        let lock = match self.lookup(name, size, now) {
            Ok(lock) => lock,
            Err(e) => return Outcome::Failed(e),
        };
        if lock.holders.len() < size as usize && lock.waiters.is_empty() {
            lock.holders.push(MHold {
                gid,
                owner,
                lease: lease.map(|s| now + u64::from(s) * 1000),
            });
            return Outcome::Acquired;
        }
        if !blocking {
            return Outcome::Busy;
        }
        if lock.waiters.len() >= limit {
            return Outcome::Failed(LockError::TooManyWaiters { limit });
        }
        lock.waiters.push_back(MWaiter {
            id: waiter,
            owner,
            deadline: wait.map(|s| now + u64::from(s) * 1000),
            lease_secs: lease,
        });
        Outcome::Queued
    }

    fn serve(&mut self, name: &str, now: u64) {
        let lock = self.locks.get_mut(name).expect("served lock exists");
        while lock.holders.len() < lock.size as usize {
            let Some(w) = lock.waiters.pop_front() else {
                break;
            };
            if self.ended.contains(&w.owner) {
                self.wait_ends
                    .insert(w.id, WaitEnd::Failed(LockError::SessionEnded));
                continue;
            }
            lock.holders.push(MHold {
                gid: GrantId::Waiter(w.id),
                owner: w.owner,
                lease: w.lease_secs.map(|s| now + u64::from(s) * 1000),
            });
            self.wait_ends.insert(w.id, WaitEnd::Granted);
        }
    }

    fn unlock(&mut self, name: &str, gid: Option<GrantId>, now: u64) -> Outcome {
        let Some(lock) = self.locks.get_mut(name) else {
            return Outcome::Failed(LockError::LockDoesNotExist);
        };
        lock.last_used = now;
        let Some(index) = lock.holders.iter().position(|h| Some(h.gid) == gid) else {
            return Outcome::Failed(LockError::InvalidLockKey);
        };
        lock.holders.remove(index);
        self.serve(name, now);
        Outcome::Done
    }

    fn force_unlock(&mut self, name: &str, gid: Option<Option<GrantId>>, now: u64) -> Outcome {
        let Some(lock) = self.locks.get_mut(name) else {
            return Outcome::Failed(LockError::LockDoesNotExist);
        };
        let index = match gid {
            Some(gid) => match lock.holders.iter().position(|h| Some(h.gid) == gid) {
                Some(i) => i,
                None => return Outcome::Failed(LockError::InvalidLockKey),
            },
            None => match lock.holders.len() {
                0 => return Outcome::Failed(LockError::LockDoesNotExist),
                1 => 0,
                // The keys themselves are compared by the checker separately.
                _ => return Outcome::Failed(LockError::AmbiguousUnlock { keys: Vec::new() }),
            },
        };
        lock.last_used = now;
        lock.holders.remove(index);
        self.serve(name, now);
        Outcome::Done
    }

    fn refresh(&mut self, name: &str, gid: Option<GrantId>, lease: i32, now: u64) -> Outcome {
        if lease <= 0 {
            return Outcome::Failed(LockError::InvalidLockTimeout);
        }
        let Some(lock) = self.locks.get_mut(name) else {
            return Outcome::Failed(LockError::LockDoesNotExistOrInvalidKey);
        };
        let Some(hold) = lock.holders.iter_mut().find(|h| Some(h.gid) == gid) else {
            return Outcome::Failed(LockError::LockDoesNotExistOrInvalidKey);
        };
        hold.lease = Some(now + lease as u64 * 1000);
        lock.last_used = now;
        Outcome::Done
    }

    fn cancel(&mut self, waiter: usize) {
        for lock in self.locks.values_mut() {
            lock.waiters.retain(|w| w.id != waiter);
        }
    }

    fn release_owner(&mut self, owner: u64, now: u64) {
        self.ended.push(owner);
        let names: Vec<String> = self.locks.keys().cloned().collect();
        for name in names {
            let lock = self.locks.get_mut(&name).expect("listed");
            let mut cancelled = Vec::new();
            lock.waiters.retain(|w| {
                let mine = w.owner == owner;
                if mine {
                    cancelled.push(w.id);
                }
                !mine
            });
            for id in cancelled {
                self.wait_ends
                    .insert(id, WaitEnd::Failed(LockError::SessionEnded));
            }
            if self.config.release_on_owner_end {
                let before = lock.holders.len();
                lock.holders.retain(|h| h.owner != owner);
                if lock.holders.len() != before {
                    lock.last_used = now;
                    self.serve(&name, now);
                }
            }
        }
    }

    /// Fires every deadline `<= now`, earliest first, handling each at `now`.
    fn advance(&mut self, now: u64) {
        loop {
            let mut best: Option<(u64, u8, String, usize)> = None;
            let mut consider = |d: u64, kind: u8, name: &str, index: usize| {
                if d <= now && best.as_ref().is_none_or(|b| d < b.0) {
                    best = Some((d, kind, name.to_string(), index));
                }
            };
            for (name, lock) in &self.locks {
                for (i, h) in lock.holders.iter().enumerate() {
                    if let Some(d) = h.lease {
                        consider(d, 0, name, i);
                    }
                }
                for (i, w) in lock.waiters.iter().enumerate() {
                    if let Some(d) = w.deadline {
                        consider(d, 1, name, i);
                    }
                }
            }
            if let Some(d) = self.next_gc {
                consider(d, 2, "", 0);
            }
            let Some((_, kind, name, index)) = best else {
                return;
            };
            match kind {
                0 => {
                    let lock = self.locks.get_mut(&name).expect("exists");
                    lock.holders.remove(index);
                    lock.last_used = now;
                    self.serve(&name, now);
                }
                1 => {
                    let lock = self.locks.get_mut(&name).expect("exists");
                    let w = lock.waiters.remove(index).expect("exists");
                    lock.last_used = now;
                    self.wait_ends
                        .insert(w.id, WaitEnd::Failed(LockError::LockWaitTimeout));
                }
                _ => {
                    let min_idle = self.config.gc_min_idle.as_millis() as u64;
                    self.locks.retain(|_, l| {
                        !(l.holders.is_empty()
                            && l.waiters.is_empty()
                            && now - l.last_used >= min_idle)
                    });
                    self.next_gc = Some(now + self.config.gc_interval.as_millis() as u64);
                }
            }
        }
    }
}

type Seen = Vec<(GrantId, &'static str, String, u64)>;

/// Notes a grant the engine made, checking its fencing token: never seen before, and above every
/// token seen before for the same name.
fn record_grant(
    grants: &mut Seen,
    tokens_per_name: &mut HashMap<&'static str, u64>,
    step: usize,
    gid: GrantId,
    name: &'static str,
    key: String,
    token: u64,
) -> Result<(), String> {
    let last = tokens_per_name.entry(name).or_insert(0);
    if token <= *last {
        return Err(format!(
            "step {step}: token {token} for {name} not above {last}"
        ));
    }
    if grants.iter().any(|g| g.3 == token) {
        return Err(format!("step {step}: token {token} handed out twice"));
    }
    *last = token;
    grants.push((gid, name, key, token));
    Ok(())
}

/// The configuration the checker uses unless told otherwise: small limits so they are hit.
pub fn checker_config() -> EngineConfig {
    EngineConfig {
        shards: 4,
        max_name_bytes: 8,
        max_waiters_per_lock: 3,
        gc_interval: Duration::from_secs(7),
        gc_min_idle: Duration::from_secs(3),
        release_on_owner_end: true,
        advance_threads: 1,
    }
}

/// Runs `ops` against a fresh engine and the model and compares every outcome: each request's
/// result, each pending wait's end, the full list of holds (name, holder, owner, lease) after
/// every step, and fencing tokens (distinct, and increasing per name). Returns a description of
/// the first difference.
pub fn check(ops: &[Op], config: EngineConfig) -> Result<(), String> {
    let names: [&'static str; 3] = ["a", "b", "c-long-name"];
    let engine = Engine::new(config.clone(), Tick::ZERO).map_err(|e| e.to_string())?;
    let mut model = Model::new(config);
    let mut owners: Vec<Owner> = (0..OWNERS).map(|_| engine.new_owner()).collect();
    // Every grant the checker has seen: its id, name, engine key and token.
    let mut grants: Seen = Vec::new();
    let mut tokens_per_name: HashMap<&'static str, u64> = HashMap::new();
    let mut open: Vec<(usize, &'static str, Pending)> = Vec::new();
    let mut next_waiter = 0usize;
    let mut base = 0u64;

    let key_of = |grants: &Seen, grant: u8| -> (Option<GrantId>, String) {
        if grant == u8::MAX || grants.is_empty() {
            return (None, "00000000-0000-4000-8000-000000000000".to_string());
        }
        let (gid, _, key, _) = &grants[grant as usize % grants.len()];
        (Some(*gid), key.clone())
    };

    for (step, op) in ops.iter().enumerate().take(499) {
        let i = step + 1;
        if let Op::Advance { secs } = op {
            base += u64::from(*secs % 4) * 1000;
        }
        let advance_at = base + 2 * i as u64;
        let now_ms = advance_at + 1;
        let now = Tick::from_millis(now_ms);
        engine.advance(Tick::from_millis(advance_at));
        model.advance(advance_at);

        let (engine_outcome, model_outcome) = match *op {
            Op::Lock {
                owner,
                name,
                size,
                lease,
                wait,
            } => {
                let name = names[(name % NAMES) as usize];
                let owner = &owners[(owner % OWNERS) as usize];
                let request = LockRequest {
                    name,
                    size: secs(size),
                    lock_timeout_seconds: secs(lease),
                    wait_timeout_seconds: secs(wait),
                    tag: 0,
                };
                let waiter = next_waiter;
                next_waiter += 1;
                let m = model.lock(
                    GrantId::Op(i),
                    waiter,
                    owner.id().0,
                    name,
                    request.size,
                    request.lock_timeout_seconds,
                    request.wait_timeout_seconds,
                    true,
                    now_ms,
                );
                let e = match engine.lock(owner, &request, now) {
                    Ok(LockOutcome::Acquired(g)) => {
                        record_grant(
                            &mut grants,
                            &mut tokens_per_name,
                            i,
                            GrantId::Op(i),
                            name,
                            g.key.to_string(),
                            g.fencing_token,
                        )?;
                        Outcome::Acquired
                    }
                    Ok(LockOutcome::Waiting(p)) => {
                        open.push((waiter, name, p));
                        Outcome::Queued
                    }
                    Err(e) => Outcome::Failed(e),
                };
                (e, m)
            }
            Op::TryLock {
                owner,
                name,
                size,
                lease,
            } => {
                let name = names[(name % NAMES) as usize];
                let owner = &owners[(owner % OWNERS) as usize];
                let request = LockRequest {
                    name,
                    size: secs(size),
                    lock_timeout_seconds: secs(lease),
                    wait_timeout_seconds: None,
                    tag: 0,
                };
                let m = model.lock(
                    GrantId::Op(i),
                    usize::MAX,
                    owner.id().0,
                    name,
                    request.size,
                    request.lock_timeout_seconds,
                    None,
                    false,
                    now_ms,
                );
                let e = match engine.try_lock(owner, &request, now) {
                    Ok(TryLockOutcome::Acquired(g)) => {
                        record_grant(
                            &mut grants,
                            &mut tokens_per_name,
                            i,
                            GrantId::Op(i),
                            name,
                            g.key.to_string(),
                            g.fencing_token,
                        )?;
                        Outcome::Acquired
                    }
                    Ok(TryLockOutcome::Busy) => Outcome::Busy,
                    Err(e) => Outcome::Failed(e),
                };
                (e, m)
            }
            Op::Unlock { name, grant } => {
                let name = names[(name % NAMES) as usize];
                let (gid, key) = key_of(&grants, grant);
                let m = model.unlock(name, gid, now_ms);
                let e = match engine.unlock(name, &key, now) {
                    Ok(_) => Outcome::Done,
                    Err(e) => Outcome::Failed(e),
                };
                (e, m)
            }
            Op::Refresh { name, grant, lease } => {
                let name = names[(name % NAMES) as usize];
                let (gid, key) = key_of(&grants, grant);
                let m = model.refresh(name, gid, i32::from(lease), now_ms);
                let e = match engine.refresh(name, &key, i32::from(lease), now) {
                    Ok(g) => {
                        if g.lease_deadline != Some(now.after_secs(lease as u32)) {
                            return Err(format!(
                                "step {i}: refresh deadline {:?}",
                                g.lease_deadline
                            ));
                        }
                        Outcome::Done
                    }
                    Err(e) => Outcome::Failed(e),
                };
                (e, m)
            }
            Op::ForceUnlock { name, grant } => {
                let name = names[(name % NAMES) as usize];
                let (gid, key) = match grant {
                    Some(g) => {
                        let (gid, key) = key_of(&grants, g);
                        (Some(gid), Some(key))
                    }
                    None => (None, None),
                };
                let m = model.force_unlock(name, gid, now_ms);
                let e = match engine.force_unlock(name, key.as_deref(), now) {
                    Ok(_) => Outcome::Done,
                    Err(LockError::AmbiguousUnlock { keys }) => {
                        if keys.len() < 2 {
                            return Err(format!(
                                "step {i}: ambiguous unlock with {} keys",
                                keys.len()
                            ));
                        }
                        Outcome::Failed(LockError::AmbiguousUnlock { keys: Vec::new() })
                    }
                    Err(e) => Outcome::Failed(e),
                };
                (e, m)
            }
            Op::Cancel { waiter } => {
                if !open.is_empty() {
                    let (id, _, pending) = open.remove(waiter as usize % open.len());
                    drop(pending);
                    model.cancel(id);
                }
                (Outcome::Done, Outcome::Done)
            }
            Op::ReleaseOwner { owner } => {
                let slot = (owner % OWNERS) as usize;
                let old = std::mem::replace(&mut owners[slot], engine.new_owner());
                engine.release_owner(&old, now);
                model.release_owner(old.id().0, now_ms);
                (Outcome::Done, Outcome::Done)
            }
            Op::Advance { .. } => (Outcome::Done, Outcome::Done),
        };
        if engine_outcome != model_outcome {
            return Err(format!(
                "step {i} {op:?}: engine {engine_outcome:?}, model {model_outcome:?}"
            ));
        }

        // Every open wait: ended the same way on both sides, or still waiting on both.
        let mut still_open = Vec::new();
        for (id, name, mut pending) in open {
            let model_end = model.wait_ends.remove(&id);
            match (pending.try_result(), model_end) {
                (None, None) => still_open.push((id, name, pending)),
                (Some(Ok(g)), Some(WaitEnd::Granted)) => {
                    record_grant(
                        &mut grants,
                        &mut tokens_per_name,
                        i,
                        GrantId::Waiter(id),
                        name,
                        g.key.to_string(),
                        g.fencing_token,
                    )?;
                }
                (Some(Err(e)), Some(WaitEnd::Failed(m))) if e == m => {}
                (engine_end, model_end) => {
                    return Err(format!(
                        "step {i} {op:?}: waiter {id} on {name}: engine {engine_end:?}, model {model_end:?}"
                    ));
                }
            }
        }
        open = still_open;

        // The full table: same holds, same owners, same leases; never more holders than size.
        let by_key: HashMap<&str, GrantId> = grants.iter().map(|g| (g.2.as_str(), g.0)).collect();
        let mut engine_holds = Vec::new();
        for hold in engine.list() {
            let key = hold.key.to_string();
            let gid = *by_key.get(key.as_str()).ok_or_else(|| {
                format!("step {i}: engine lists unknown key {key} on {}", hold.name)
            })?;
            engine_holds.push((
                hold.name.to_string(),
                gid,
                hold.owner.0,
                hold.lease_deadline.map(Tick::as_millis),
            ));
        }
        let mut model_holds = Vec::new();
        for (name, lock) in &model.locks {
            if lock.holders.len() > lock.size as usize {
                return Err(format!("step {i}: model over size on {name}"));
            }
            for h in &lock.holders {
                model_holds.push((name.clone(), h.gid, h.owner, h.lease));
            }
        }
        engine_holds.sort();
        model_holds.sort();
        if engine_holds != model_holds {
            return Err(format!(
                "step {i} {op:?}: holds differ\n engine {engine_holds:?}\n model  {model_holds:?}"
            ));
        }
        let stats = engine.stats();
        let model_waiters: usize = model.locks.values().map(|l| l.waiters.len()).sum();
        let model_locks = model.locks.len();
        if stats.waiters != model_waiters || stats.locks != model_locks {
            return Err(format!(
                "step {i} {op:?}: engine has {} locks / {} waiters, model {model_locks} / {model_waiters}",
                stats.locks, stats.waiters
            ));
        }
        if stats.holds != model_holds.len() {
            return Err(format!(
                "step {i} {op:?}: engine counts {} holds, model has {}",
                stats.holds,
                model_holds.len()
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn small_opt() -> impl Strategy<Value = Option<i8>> {
        prop_oneof![
            3 => Just(None),
            1 => Just(Some(-1)),
            1 => Just(Some(0)),
            4 => (1i8..=3).prop_map(Some),
        ]
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (any::<u8>(), any::<u8>(), small_opt(), small_opt(), small_opt())
                .prop_map(|(owner, name, size, lease, wait)| Op::Lock { owner, name, size: size.map(|s| s.min(2)), lease, wait }),
            4 => (any::<u8>(), any::<u8>(), small_opt(), small_opt())
                .prop_map(|(owner, name, size, lease)| Op::TryLock { owner, name, size: size.map(|s| s.min(2)), lease }),
            4 => (any::<u8>(), prop_oneof![9 => any::<u8>(), 1 => Just(u8::MAX)]).prop_map(|(name, grant)| Op::Unlock { name, grant }),
            2 => (any::<u8>(), any::<u8>(), -1i8..=3).prop_map(|(name, grant, lease)| Op::Refresh { name, grant, lease }),
            1 => (any::<u8>(), proptest::option::of(any::<u8>())).prop_map(|(name, grant)| Op::ForceUnlock { name, grant }),
            1 => any::<u8>().prop_map(|waiter| Op::Cancel { waiter }),
            1 => any::<u8>().prop_map(|owner| Op::ReleaseOwner { owner }),
            3 => any::<u8>().prop_map(|secs| Op::Advance { secs }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

        #[test]
        fn engine_matches_the_model(ops in proptest::collection::vec(op(), 1..120)) {
            if let Err(difference) = check(&ops, checker_config()) {
                prop_assert!(false, "{}", difference);
            }
        }

        #[test]
        fn engine_matches_the_model_when_holds_outlive_owners(ops in proptest::collection::vec(op(), 1..120)) {
            let config = EngineConfig { release_on_owner_end: false, ..checker_config() };
            if let Err(difference) = check(&ops, config) {
                prop_assert!(false, "{}", difference);
            }
        }
    }

    /// A hand-written sequence through FIFO hand-off, lease expiry and owner release.
    #[test]
    fn a_known_sequence_agrees() {
        let ops = vec![
            Op::Lock {
                owner: 0,
                name: 0,
                size: None,
                lease: Some(2),
                wait: None,
            },
            Op::Lock {
                owner: 1,
                name: 0,
                size: None,
                lease: None,
                wait: Some(5),
            },
            Op::Lock {
                owner: 2,
                name: 0,
                size: None,
                lease: None,
                wait: None,
            },
            Op::TryLock {
                owner: 2,
                name: 0,
                size: None,
                lease: None,
            },
            Op::Advance { secs: 3 },
            Op::Unlock { name: 0, grant: 1 },
            Op::ReleaseOwner { owner: 2 },
            Op::Lock {
                owner: 0,
                name: 1,
                size: Some(2),
                lease: None,
                wait: None,
            },
            Op::TryLock {
                owner: 1,
                name: 1,
                size: Some(2),
                lease: None,
            },
            Op::TryLock {
                owner: 1,
                name: 1,
                size: None,
                lease: None,
            },
            Op::ForceUnlock {
                name: 1,
                grant: None,
            },
            Op::Advance { secs: 3 },
            Op::Advance { secs: 3 },
            Op::Advance { secs: 3 },
        ];
        check(&ops, checker_config()).expect("engine and model agree");
    }
}
