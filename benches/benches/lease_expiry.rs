//! Lease expiry lateness (target: 100k leases due at once, p99 ≤ 50 ms).
//!
//! The server's own expiry path with the real clock: the engine configured by
//! `ldlm_cli::server::engine_config` from the server's defaults (so a big burst is shared among
//! as many threads as there are CPUs, `advance_threads`), with `--state-file` also the state
//! file's event sink and writer thread, and the timer driver ([`spawn_timer_driver`]) on the
//! server's default tokio runtime. N leases are taken at one engine tick, so all fall due at
//! the same millisecond; an event sink notes the wall-clock instant at which each hold is
//! actually released. Lateness = release instant − due instant.
//! It includes the driver's wake-up, the wheel cascading the 100k timers down to their slot,
//! and releasing each hold one after another: the last hold released is as late as the whole
//! batch takes.
//!
//! Not a criterion bench: the distribution of one burst is the number.
//!
//! `cargo bench -p ldlm-benches --bench lease_expiry [-- N] [--state-file] [--serial]`
//! (N = 100000; `--serial` keeps the burst on one thread, `advance_threads = 1`)

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ldlm_engine::{Engine, Event, EventSink, LockRequest, TryLockOutcome};
use ldlm_service::Clock;
use ldlm_service::driver::spawn_timer_driver;
use ldlm_state_file::StateFile;

// The server's allocator: expiry frees memory for every hold, so the allocator is part of the cost.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Lease of every lock: long enough that taking N leases finishes well before they fall due,
/// and long enough to sit in a higher wheel level and cascade down (as real leases do).
const LEASE_SECONDS: i32 = 5;

/// Notes when each hold ends (nanoseconds after `origin`, in the slot of the lease's number, so
/// threads releasing different leases never contend), then passes the event on (to the state
/// file, if any).
struct ReleaseTimes {
    origin: Instant,
    released_at: Vec<AtomicU64>,
    next: Option<Arc<dyn EventSink>>,
}

impl EventSink for ReleaseTimes {
    fn record(&self, event: Event<'_>) -> u64 {
        if let Event::Released { name, .. } = event {
            let index: usize = name["lease-".len()..].parse().expect("a lease- name");
            let nanos = self.origin.elapsed().as_nanos() as u64;
            self.released_at[index].store(nanos.max(1), Ordering::Relaxed);
        }
        self.next.as_ref().map_or(0, |next| next.record(event))
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[index]
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let n: usize = args.iter().find_map(|a| a.parse().ok()).unwrap_or(100_000);
    let with_state_file = args.iter().any(|a| a == "--state-file");
    // The engine exactly as ldlm-server configures it by default (a burst may use one thread
    // per CPU), unless `--serial` asks for the one-thread figure.
    let mut config = ldlm_cli::server::engine_config(&ldlm_cli::config::ServerConfig::defaults());
    if args.iter().any(|a| a == "--serial") {
        config.advance_threads = 1;
    }
    let threads = config.advance_threads;

    let dir = tempfile::tempdir().expect("tempdir");
    let state = with_state_file.then(|| {
        let (file, _) = StateFile::open(&dir.path().join("ldlm.state")).expect("state file");
        file
    });
    let times = Arc::new(ReleaseTimes {
        origin: Instant::now(),
        released_at: (0..n).map(|_| AtomicU64::new(0)).collect(),
        next: state.as_ref().map(|file| file.sink()),
    });
    // The server's default runtime: one worker per CPU.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let clock = Clock::new();
    let engine = Engine::with_event_sink(config, clock.now(), times.clone()).expect("config");
    // N leases granted at one tick: all due at the same millisecond.
    let owner = engine.new_owner();
    let granted_at = clock.now();
    let names: Vec<String> = (0..n).map(|i| format!("lease-{i:07}")).collect();
    let taking = Instant::now();
    // Each lease's own deadline, as the engine set it (checked to be the same for all below).
    let mut due_at: Vec<Instant> = Vec::with_capacity(n);
    for name in &names {
        let request = LockRequest {
            name,
            lock_timeout_seconds: Some(LEASE_SECONDS),
            ..LockRequest::default()
        };
        match engine.try_lock(&owner, &request, granted_at) {
            Ok(TryLockOutcome::Acquired(grant)) => {
                let deadline = grant.lease_deadline.expect("a leased grant");
                due_at.push(clock.instant_of(deadline));
            }
            other => panic!("{name} not granted: {other:?}"),
        }
    }
    let taken_in = taking.elapsed();
    // The driver starts only now: had it run while the leases were taken, its `advance` would
    // have moved the shards' clocks past `granted_at` (shard time never goes back), spreading
    // the deadlines over the time it took to take them.
    let driver = {
        let _entered = runtime.enter();
        spawn_timer_driver(engine.clone(), clock, |_| {})
    };

    let due = clock.instant_of(granted_at) + Duration::from_secs(LEASE_SECONDS as u64);
    let spread = due_at
        .iter()
        .max()
        .expect("leases")
        .saturating_duration_since(due);
    assert!(
        Instant::now() < due,
        "taking {n} leases took {taken_in:?}: longer than the lease"
    );
    assert!(spread.is_zero(), "deadlines spread over {spread:?}");

    // Wait until all are released (or clearly never will be).
    let give_up = due + Duration::from_secs(10);
    loop {
        std::thread::sleep(Duration::from_millis(50));
        let released = times
            .released_at
            .iter()
            .filter(|at| at.load(Ordering::Relaxed) != 0)
            .count();
        if released >= n || Instant::now() > give_up {
            break;
        }
    }
    driver.abort();
    let released: Vec<Instant> = times
        .released_at
        .iter()
        .map(|at| match at.load(Ordering::Relaxed) {
            0 => panic!("not every lease expired within 10 s"),
            nanos => times.origin + Duration::from_nanos(nanos),
        })
        .collect();
    assert_eq!(engine.stats().holds, 0);

    let mut lateness: Vec<Duration> = released
        .iter()
        .zip(&due_at)
        .map(|(at, due)| at.saturating_duration_since(*due))
        .collect();
    lateness.sort_unstable();
    let early = released
        .iter()
        .zip(&due_at)
        .filter(|(at, due)| at < due)
        .count();
    println!(
        "{n} leases due at once (deadlines within {:.0} ms){}, advance_threads {threads} (taken in {:.0} ms): lateness min {:.1} ms, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; released before due: {early}",
        spread.as_secs_f64() * 1e3,
        if with_state_file {
            ", with a state file"
        } else {
            ""
        },
        taken_in.as_secs_f64() * 1e3,
        lateness[0].as_secs_f64() * 1e3,
        percentile(&lateness, 0.50).as_secs_f64() * 1e3,
        percentile(&lateness, 0.99).as_secs_f64() * 1e3,
        lateness[lateness.len() - 1].as_secs_f64() * 1e3,
    );
    assert_eq!(early, 0, "a lease ended before it was due");
    drop(state);
}
