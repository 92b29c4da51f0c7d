//! A burst of timers falling due together (the target load: 100k leases due at once) is finished on
//! `advance_threads` threads: the outcome must be the same as on one thread — every lease
//! ends, every waiter behind one is handed the lock with a larger fencing token, and each
//! name's events keep their order.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use ldlm_engine::{
    Engine, EngineConfig, Event, EventSink, LockOutcome, LockRequest, PARALLEL_ADVANCE_AFTER,
    Pending, Tick, TryLockOutcome,
};

/// One recorded event: lock name, "granted" or "released", fencing token (0 for a release),
/// and the name of the thread that reported it.
type Recorded = (String, &'static str, u64, Option<String>);

/// The name `advance` gives its helper threads.
const HELPER: &str = "ldlm-advance";

/// Every event, in the order the engine reported them.
///
/// With a `gate`, the thread that called `advance` pauses at its `gate`-th release until a
/// helper has reported something (at most 10 s): by then the burst is certainly in its
/// parallel phase, so the test sees the helpers work however the threads are scheduled.
struct Recorder {
    events: Mutex<Vec<Recorded>>,
    gate: Option<usize>,
    caller_releases: AtomicUsize,
    helper_seen: (Mutex<bool>, Condvar),
}

impl Recorder {
    fn new(gate: Option<usize>) -> Recorder {
        Recorder {
            events: Mutex::default(),
            gate,
            caller_releases: AtomicUsize::new(0),
            helper_seen: (Mutex::new(false), Condvar::new()),
        }
    }
}

impl EventSink for Recorder {
    fn record(&self, event: Event<'_>) -> u64 {
        let thread = std::thread::current().name().map(str::to_owned);
        let on_helper = thread.as_deref() == Some(HELPER);
        let entry = match event {
            Event::Granted {
                name,
                fencing_token,
                ..
            } => (name.to_owned(), "granted", fencing_token, thread),
            Event::Released { name, .. } => (name.to_owned(), "released", 0, thread),
            Event::LeaseChanged { name, .. } => (name.to_owned(), "lease changed", 0, thread),
        };
        let released = entry.1 == "released";
        self.events.lock().unwrap().push(entry);
        let (seen, changed) = &self.helper_seen;
        if on_helper {
            *seen.lock().unwrap() = true;
            changed.notify_all();
        } else if released
            && Some(self.caller_releases.fetch_add(1, Ordering::Relaxed) + 1) == self.gate
        {
            let guard = seen.lock().unwrap();
            let _ = changed
                .wait_timeout_while(guard, Duration::from_secs(10), |seen| !*seen)
                .unwrap();
        }
        0
    }
}

fn at(millis: u64) -> Tick {
    Tick::from_millis(millis)
}

fn burst(threads: usize) {
    let leases = 4 * PARALLEL_ADVANCE_AFTER + 17;
    // The serial phase ends within the shard where 1,024 timers have fired (a shard holds
    // ~leases/16), so the caller's 2,000th release is always in the parallel phase.
    let gate = (threads > 1).then_some(2 * PARALLEL_ADVANCE_AFTER - 48);
    let recorder = Arc::new(Recorder::new(gate));
    let config = EngineConfig {
        advance_threads: threads,
        gc_interval: Duration::ZERO,
        ..EngineConfig::default()
    };
    let engine = Engine::with_event_sink(config, Tick::ZERO, recorder.clone()).expect("config");
    let (holder, waiter) = (engine.new_owner(), engine.new_owner());
    let names: Vec<String> = (0..leases).map(|i| format!("burst-{i}")).collect();
    let mut first_tokens = HashMap::new();
    let mut pending: Vec<(usize, Pending)> = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let request = LockRequest {
            name,
            lock_timeout_seconds: Some(1),
            ..LockRequest::default()
        };
        let Ok(TryLockOutcome::Acquired(grant)) = engine.try_lock(&holder, &request, at(0)) else {
            panic!("{name} is free");
        };
        first_tokens.insert(i, grant.fencing_token);
        if i % 10 == 0 {
            let wait = LockRequest {
                name,
                lock_timeout_seconds: Some(2),
                ..LockRequest::default()
            };
            match engine.lock(&waiter, &wait, at(0)) {
                Ok(LockOutcome::Waiting(p)) => pending.push((i, p)),
                other => panic!("{name} is held: {other:?}"),
            }
        }
    }

    assert_eq!(engine.advance(at(999)).leases_expired, 0);
    let report = engine.advance(at(1000));
    assert_eq!(report.leases_expired, leases, "threads = {threads}");
    for (i, p) in &mut pending {
        let grant = p
            .try_result()
            .expect("handed off in the same advance")
            .expect("granted");
        assert!(
            grant.fencing_token > first_tokens[i],
            "token went backwards"
        );
    }
    assert_eq!(engine.stats().holds, pending.len());
    assert_eq!(engine.advance(at(3000)).leases_expired, pending.len());
    assert_eq!(engine.stats().holds, 0);

    // Per name: granted, released, and for every tenth name granted again, released again.
    let events = std::mem::take(&mut *recorder.events.lock().unwrap());
    let mut per_name: HashMap<&str, Vec<(&str, u64)>> = HashMap::new();
    for (name, kind, token, _) in &events {
        per_name.entry(name).or_default().push((kind, *token));
    }
    for (i, name) in names.iter().enumerate() {
        let seen: Vec<&str> = per_name[name.as_str()].iter().map(|(k, _)| *k).collect();
        let expected: &[&str] = if i % 10 == 0 {
            &["granted", "released", "granted", "released"]
        } else {
            &["granted", "released"]
        };
        assert_eq!(seen, expected, "events of {name}");
    }
    let on_helpers = events
        .iter()
        .filter(|(.., thread)| thread.as_deref() == Some(HELPER))
        .count();
    if threads == 1 {
        assert_eq!(on_helpers, 0, "advance_threads = 1 never starts a helper");
    } else {
        assert!(on_helpers > 0, "a burst this big is shared with helpers");
    }
}

#[test]
fn burst_on_one_thread() {
    burst(1);
}

#[test]
fn burst_on_two_threads() {
    burst(2);
}

#[test]
fn burst_on_four_threads() {
    burst(4);
}

#[test]
fn advance_threads_is_validated() {
    for bad in [0, 257] {
        let config = EngineConfig {
            advance_threads: bad,
            ..EngineConfig::default()
        };
        assert!(Engine::new(config, Tick::ZERO).is_err(), "{bad} accepted");
    }
}
