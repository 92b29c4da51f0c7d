//! The worker loops, one task per request in flight, generic over the transport.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::args::{Plan, Transport, Workload};
use super::checker::Checker;
use super::client::{CallError, LockClient, error_code_name};
use super::names::{Name, Names};
use super::outages::Outages;
use super::stats::{Op, Stats};

/// How long a worker pauses after a call that got no lock response at all, so an unreachable
/// server is not hammered in a tight loop.
const ERROR_BACKOFF: Duration = Duration::from_millis(5);

/// What every worker shares.
pub(crate) struct Ctx {
    pub(crate) plan: Plan,
    pub(crate) names: Names,
    pub(crate) checker: Checker,
    pub(crate) stats: Stats,
    /// When the measured part begins (after the warm-up).
    pub(crate) measure_start: Instant,
    /// When the measured part ends (`--duration`).
    pub(crate) deadline: Option<Instant>,
    /// `failover`: the times without any grant.
    pub(crate) outages: Option<Outages>,
    claimed: AtomicU64,
    stopped: AtomicBool,
    stop: watch::Sender<bool>,
}

impl Ctx {
    pub(crate) fn new(
        plan: Plan,
        names: Names,
        checker: Checker,
        stats: Stats,
        start: Instant,
    ) -> Ctx {
        let measure_start = start + plan.warmup;
        let deadline = plan.duration.map(|d| measure_start + d);
        let outages = (plan.workload == Workload::Failover).then(|| Outages::new(start));
        Ctx {
            outages,
            plan,
            names,
            checker,
            stats,
            measure_start,
            deadline,
            claimed: AtomicU64::new(0),
            stopped: AtomicBool::new(false),
            stop: watch::channel(false).0,
        }
    }

    /// Ends the run: no worker starts another cycle, pauses are cut short.
    pub(crate) fn stop(&self) {
        if !self.stopped.swap(true, Ordering::AcqRel) {
            self.stop.send_replace(true);
        }
    }

    /// A receiver that sees [`Ctx::stop`].
    pub(crate) fn stop_signal(&self) -> watch::Receiver<bool> {
        self.stop.subscribe()
    }

    /// Whether to start another cycle: `Some(measured)`, or `None` when the run is over.
    pub(crate) fn next_cycle(&self) -> Option<bool> {
        if self.stopped.load(Ordering::Relaxed) {
            return None;
        }
        let now = Instant::now();
        if now < self.measure_start {
            return Some(false);
        }
        if self.deadline.is_some_and(|d| now >= d) {
            self.stop();
            return None;
        }
        if let Some(count) = self.plan.count
            && self.claimed.fetch_add(1, Ordering::Relaxed) >= count
        {
            self.stop();
            return None;
        }
        Some(true)
    }
}

/// A small, fast PRNG (wyrand) per worker: the workloads need coin flips, not cryptography.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0xa076_1d64_78bd_642f);
        let t = u128::from(self.0) * u128::from(self.0 ^ 0xe703_7ed1_a0b4_28db);
        ((t >> 64) as u64) ^ (t as u64)
    }

    /// Uniform in `0..n` (0 when `n` is 0).
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    pub(crate) fn coin(&mut self) -> bool {
        self.next_u64() & 1 == 1
    }

    /// Uniform in `[0, max)`.
    pub(crate) fn duration(&mut self, max: Duration) -> Duration {
        Duration::from_nanos(self.below(u64::try_from(max.as_nanos()).unwrap_or(u64::MAX)))
    }
}

/// A lock this worker holds.
struct Hold {
    name: Arc<Name>,
    key: String,
    /// When the grant's answer arrived.
    start: Instant,
    /// With a lease: until when it is certainly alive (request sent + lock timeout − margin).
    alive_until: Option<Instant>,
    /// The client's server session when it was granted.
    session: u64,
}

/// How to acquire.
#[derive(Clone, Copy)]
enum How {
    Try,
    Wait(u32),
}

/// What an acquisition attempt gave.
enum Attempt {
    Held(Hold),
    Refused,
    Failed,
}

/// One worker task: a client connection (or a share of one) and its loop.
pub(crate) struct Worker<C> {
    id: usize,
    client: C,
    ctx: Arc<Ctx>,
    shard: usize,
    rng: Rng,
    stop: watch::Receiver<bool>,
}

impl<C: LockClient> Worker<C> {
    pub(crate) fn new(id: usize, client: C, ctx: Arc<Ctx>, seed: u64) -> Worker<C> {
        let shard = ctx.stats.shard_of(id);
        let stop = ctx.stop_signal();
        Worker {
            id,
            client,
            ctx,
            shard,
            rng: Rng::new(seed ^ (id as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)),
            stop,
        }
    }

    /// Runs the plan's workload until the run ends; returns the client for closing.
    pub(crate) async fn run(mut self) -> C {
        match self.ctx.plan.workload {
            Workload::Trylock | Workload::Failover => self.trylock().await,
            Workload::Contended => self.contended().await,
            Workload::Ratelimit => self.ratelimit().await,
            Workload::Refresh => self.refresh().await,
            Workload::Mixed => self.mixed().await,
            Workload::Fill => self.fill().await,
        }
        self.client
    }

    /// Sleeps `d`, or less if the run ends meanwhile.
    async fn pause(&mut self, d: Duration) {
        tokio::select! {
            _ = tokio::time::sleep(d) => {}
            _ = self.stop.wait_for(|&stopped| stopped) => {}
        }
    }

    async fn call_failed(&mut self, error: CallError) {
        let (kind, message) = error.describe();
        self.ctx.stats.error(kind, message);
        self.pause(ERROR_BACKOFF).await;
    }

    /// One Lock or TryLock, checked.
    async fn acquire(
        &mut self,
        name: &Arc<Name>,
        how: How,
        lock_timeout: u32,
        measured: bool,
    ) -> Attempt {
        let ctx = &*self.ctx;
        let size = ctx.plan.size;
        let floor = ctx.checker.floor(name.id);
        let sent = Instant::now();
        let (result, op) = match how {
            How::Try => (
                self.client.try_lock(&name.text, lock_timeout, size).await,
                Op::TryLock,
            ),
            How::Wait(wait) => (
                self.client.lock(&name.text, wait, lock_timeout, size).await,
                Op::Lock,
            ),
        };
        let received = Instant::now();
        if measured {
            ctx.stats.record(self.shard, op, received - sent);
        }
        let grant = match result {
            Ok(grant) => grant,
            Err(error) => {
                self.call_failed(error).await;
                return Attempt::Failed;
            }
        };
        if let Some(error) = &grant.error {
            ctx.stats.error(error_code_name(error.code), &error.message);
        }
        if grant.locked
            && let Some(outages) = &ctx.outages
        {
            outages.grant(received);
        }
        if !grant.locked {
            return if grant.error.is_some() {
                Attempt::Failed
            } else {
                Attempt::Refused
            };
        }
        let alive_until = (lock_timeout > 0).then(|| {
            (sent + Duration::from_secs(u64::from(lock_timeout)))
                .checked_sub(ctx.plan.lease_margin)
                .unwrap_or(sent)
        });
        ctx.checker
            .on_grant(name.id, &ctx.names, grant.token, floor, alive_until);
        Attempt::Held(Hold {
            name: name.clone(),
            key: grant.key,
            start: received,
            alive_until,
            session: self.client.session(),
        })
    }

    /// The end of a hold, for the checker (the occupancy counter or the interval log).
    fn end_hold(&self, hold: &Hold, now: Instant) {
        let checker = &self.ctx.checker;
        if hold.alive_until.is_none() {
            checker.on_release(hold.name.id);
        }
        if self.ctx.plan.leases() {
            let end = hold.alive_until.map_or(now, |until| until.min(now));
            checker.hold(hold.name.id, hold.start, end);
        }
    }

    /// Unlocks a hold (the checker is told first).
    async fn release(&mut self, hold: Hold, measured: bool) {
        let sent = Instant::now();
        self.end_hold(&hold, sent);
        let result = self.client.unlock(&hold.name.text, hold.key).await;
        let received = Instant::now();
        let ctx = &*self.ctx;
        if measured {
            ctx.stats.record(self.shard, Op::Unlock, received - sent);
        }
        match result {
            Err(error) => self.call_failed(error).await,
            Ok(answer) if answer.unlocked => {}
            Ok(answer) => {
                if hold.alive_until.is_some_and(|until| received >= until) {
                    ctx.stats.expired.fetch_add(1, Ordering::Relaxed);
                } else if self.client.session() != hold.session {
                    ctx.stats.ended_with_session.fetch_add(1, Ordering::Relaxed);
                } else {
                    let what = answer
                        .error
                        .map(|e| format!("{}: {}", error_code_name(e.code), e.message))
                        .unwrap_or_else(|| "unlocked=false".to_owned());
                    ctx.stats.error(
                        "lost lock".to_owned(),
                        &format!(
                            "unlock of {:?}, certainly still held, failed: {what}",
                            hold.name.text
                        ),
                    );
                }
            }
        }
    }

    /// TryLock + Unlock on this worker's own name.
    async fn trylock(&mut self) {
        let name = self.ctx.names.get(self.id);
        let (lock_timeout, hold_for) = (self.ctx.plan.lock_timeout, self.ctx.plan.hold);
        while let Some(measured) = self.ctx.next_cycle() {
            match self.acquire(&name, How::Try, lock_timeout, measured).await {
                Attempt::Held(hold) => {
                    if !hold_for.is_zero() {
                        self.pause(hold_for).await;
                    }
                    self.release(hold, measured).await;
                }
                Attempt::Refused => {
                    self.ctx.stats.not_acquired.fetch_add(1, Ordering::Relaxed);
                }
                Attempt::Failed => {}
            }
            self.ctx.stats.cycle(measured);
        }
    }

    /// TryLock of a new name each cycle (`<this worker's name>-<n>`), never unlocked. Every name
    /// is fresh, so every TryLock must be granted; a refusal counts as not acquired. Each name
    /// is granted once, so there is no occupancy or token sequence to check.
    async fn fill(&mut self) {
        let prefix = self.ctx.names.get(self.id);
        let (lock_timeout, size) = (self.ctx.plan.lock_timeout, self.ctx.plan.size);
        let mut name = String::with_capacity(prefix.text.len() + 12);
        for n in 0u64.. {
            let Some(measured) = self.ctx.next_cycle() else {
                break;
            };
            name.clear();
            let _ = write!(name, "{}-{n}", prefix.text);
            let sent = Instant::now();
            let result = self.client.try_lock(&name, lock_timeout, size).await;
            if measured {
                self.ctx
                    .stats
                    .record(self.shard, Op::TryLock, sent.elapsed());
            }
            match result {
                Ok(grant) if grant.locked => {}
                Ok(grant) => match grant.error {
                    Some(error) => self
                        .ctx
                        .stats
                        .error(error_code_name(error.code), &error.message),
                    None => {
                        self.ctx.stats.not_acquired.fetch_add(1, Ordering::Relaxed);
                    }
                },
                Err(error) => self.call_failed(error).await,
            }
            self.ctx.stats.cycle(measured);
        }
    }

    /// Blocking Lock + Unlock, everyone on the same name.
    async fn contended(&mut self) {
        let name = self.ctx.names.get(0);
        let (wait, lock_timeout) = (self.ctx.plan.wait_timeout, self.ctx.plan.lock_timeout);
        let hold_for = self.ctx.plan.hold;
        while let Some(measured) = self.ctx.next_cycle() {
            if let Attempt::Held(hold) = self
                .acquire(&name, How::Wait(wait), lock_timeout, measured)
                .await
            {
                if !hold_for.is_zero() {
                    self.pause(hold_for).await;
                }
                self.release(hold, measured).await;
            }
            self.ctx.stats.cycle(measured);
        }
    }

    /// TryLock with size and lease, never unlocking: admitted or refused.
    async fn ratelimit(&mut self) {
        let ctx = self.ctx.clone();
        let name = ctx.names.get(self.id % ctx.names.len());
        let lock_timeout = ctx.plan.lock_timeout;
        let stats = &ctx.stats;
        while let Some(measured) = ctx.next_cycle() {
            match self.acquire(&name, How::Try, lock_timeout, measured).await {
                Attempt::Held(hold) => {
                    if measured {
                        stats.admitted.fetch_add(1, Ordering::Relaxed);
                    }
                    // Never unlocked: certainly alive until its lease may run out.
                    let end = hold.alive_until.unwrap_or(hold.start);
                    ctx.checker.hold(hold.name.id, hold.start, end);
                }
                Attempt::Refused => {
                    if measured {
                        stats.refused.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Attempt::Failed => {}
            }
            stats.cycle(measured);
        }
    }

    /// Holds this worker's own name with a lease and refreshes it; every `--probe_every`
    /// refreshes a TryLock on the held name must be refused (size 1).
    async fn refresh(&mut self) {
        let name = self.ctx.names.get(self.id);
        let lock_timeout = self.ctx.plan.lock_timeout;
        let lease = Duration::from_secs(u64::from(lock_timeout));
        let probe_every = if self.ctx.plan.size == 1 {
            self.ctx.plan.probe_every
        } else {
            0
        };
        let mut held: Option<Hold> = None;
        let mut refreshes: u64 = 0;
        while let Some(measured) = self.ctx.next_cycle() {
            match held.take() {
                None => match self.acquire(&name, How::Try, lock_timeout, measured).await {
                    Attempt::Held(hold) => held = Some(hold),
                    Attempt::Refused => {
                        self.ctx.stats.not_acquired.fetch_add(1, Ordering::Relaxed);
                        self.pause(ERROR_BACKOFF).await;
                    }
                    Attempt::Failed => {}
                },
                Some(mut hold) => {
                    refreshes += 1;
                    if probe_every > 0 && refreshes.is_multiple_of(probe_every) {
                        // A second holder of a held size-1 lock: the interval sweep reports
                        // it (the probe's hold overlaps ours); give it back at once.
                        if let Attempt::Held(probe) =
                            self.acquire(&name, How::Try, lock_timeout, measured).await
                        {
                            self.release(probe, measured).await;
                        }
                    }
                    let sent = Instant::now();
                    let result = self
                        .client
                        .refresh(&name.text, &hold.key, lock_timeout)
                        .await;
                    let received = Instant::now();
                    if measured {
                        self.ctx
                            .stats
                            .record(self.shard, Op::Refresh, received - sent);
                    }
                    match result {
                        Ok(grant) if grant.locked => {
                            hold.alive_until = Some(
                                (sent + lease)
                                    .checked_sub(self.ctx.plan.lease_margin)
                                    .unwrap_or(sent),
                            );
                            held = Some(hold);
                        }
                        Ok(grant) => {
                            let what = grant
                                .error
                                .map(|e| format!("{}: {}", error_code_name(e.code), e.message))
                                .unwrap_or_else(|| "locked=false".to_owned());
                            if hold.alive_until.is_some_and(|until| received >= until) {
                                self.ctx.stats.expired.fetch_add(1, Ordering::Relaxed);
                            } else {
                                self.ctx.stats.error(
                                    "lost lock".to_owned(),
                                    &format!(
                                        "refresh of {:?}, certainly still held, failed: {what}",
                                        name.text
                                    ),
                                );
                            }
                            self.end_hold(&hold, received);
                        }
                        Err(error) => {
                            held = Some(hold);
                            self.call_failed(error).await;
                        }
                    }
                }
            }
            self.ctx.stats.cycle(measured);
        }
        if let Some(hold) = held {
            self.release(hold, false).await;
        }
    }

    /// go-ldlm's stress loop: a random name, TryLock or Lock (gRPC), random wait and lock
    /// timeouts (each 50% of the time, in whole seconds below `--timeout_max`), a random hold.
    async fn mixed(&mut self) {
        let plan = &self.ctx.plan;
        let (timeout_max, hold_max) = (u64::from(plan.timeout_max), plan.hold_max);
        let blocking_allowed = plan.transport == Transport::Grpc;
        while let Some(measured) = self.ctx.next_cycle() {
            let slot = self.rng.below(self.ctx.names.len() as u64) as usize;
            let name = self.ctx.names.get(slot);
            let how = if blocking_allowed && self.rng.coin() {
                let wait = if self.rng.coin() {
                    self.rng.below(timeout_max)
                } else {
                    0
                };
                How::Wait(wait as u32)
            } else {
                How::Try
            };
            let lock_timeout = if self.rng.coin() {
                self.rng.below(timeout_max) as u32
            } else {
                0
            };
            if let Attempt::Held(hold) = self.acquire(&name, how, lock_timeout, measured).await {
                let hold_for = self.rng.duration(hold_max);
                self.pause(hold_for).await;
                self.release(hold, measured).await;
            }
            self.ctx.stats.cycle(measured);
        }
    }
}

/// `mixed`: replaces a random name with a fresh UUID every `--randomize_interval`, like
/// go-ldlm's stress tool, until the run ends.
pub(crate) async fn rename_names(ctx: Arc<Ctx>, seed: u64) {
    let interval = ctx.plan.randomize_interval;
    if interval.is_zero() {
        return;
    }
    let mut rng = Rng::new(seed);
    let mut stop = ctx.stop_signal();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stop.wait_for(|&stopped| stopped) => return,
        }
        let slot = rng.below(ctx.names.len() as u64) as usize;
        if !ctx.names.replace(slot, uuid::Uuid::new_v4().to_string()) {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rng_is_uniform_enough() {
        let mut rng = Rng::new(42);
        let mut counts = [0u32; 4];
        for _ in 0..40_000 {
            counts[rng.below(4) as usize] += 1;
        }
        assert!(
            counts.iter().all(|&c| (9_000..11_000).contains(&c)),
            "{counts:?}"
        );
        assert_eq!(rng.below(0), 0);
        assert!(rng.duration(Duration::from_millis(5)) < Duration::from_millis(5));
    }
}
