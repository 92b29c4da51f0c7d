//! `etcd-lock-bench`: lock throughput of an etcd cluster through its v3 Lock API, under the
//! same shape of load as `ldlm-bench`, so that LDLM's 3-node cluster and a 3-member etcd can be
//! set side by side in BENCHMARKS.md (see README.md beside this crate).
//!
//! Like `ldlm-bench`, it runs `--clients` clients for a warm-up (checked, not counted) and then
//! `--duration`, and reports cycles per second, the latency of each measured cycle and the
//! errors. Each client has its own etcd `Client` (its own HTTP/2 connection; client *i* uses
//! endpoint *i* mod *n* of `--address`) and its own lease, granted at start with a TTL that
//! outlives the run and revoked at the end. One cycle is `Lock(name, lease)` + `Unlock(key)`,
//! each a write that etcd commits through raft (leader and follower WAL fsyncs), just as an
//! LDLM cluster commits a grant and a release.
//!
//! * `distinct` — the counterpart of `ldlm-bench -w trylock`: every client locks names of its
//!   own (`bench-<client>-<i>`, cycling over `--names` names), so Lock is granted at once.
//!   etcd has no TryLock; a Lock that nobody else holds is the same work for the server.
//! * `contended` — the counterpart of `ldlm-bench -w contended`: every client locks the one
//!   name `bench-contended`, so each cycle is a hand-off from the previous holder.
//!
//! In `contended` the grants are checked, as `ldlm-bench` checks them: an occupancy counter
//! (incremented when Lock returns, decremented before Unlock is sent) must never see a second
//! holder, and the revision in each grant's response header must be greater than that of the
//! grant before it (etcd's revision acts as a fencing token: a grant comes after the previous
//! holder's delete, so its revision is higher). Every error is counted and reported.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use etcd_client::{Client, LockOptions};
use serde_json::json;

/// What the clients do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Workload {
    /// Lock + Unlock, each client on names of its own (no waiting): cycles per second.
    Distinct,
    /// Lock + Unlock, every client on one name: hand-offs per second.
    Contended,
}

impl Workload {
    fn as_str(self) -> &'static str {
        match self {
            Workload::Distinct => "distinct",
            Workload::Contended => "contended",
        }
    }
}

/// Command line of `etcd-lock-bench`.
#[derive(Clone, Debug, Parser)]
#[command(
    name = "etcd-lock-bench",
    version,
    about = "Lock throughput of an etcd cluster (v3 Lock API), with the load shape of ldlm-bench",
    after_help = "Durations: 500ms, 5s, 1m, or a bare number of seconds.\n\
                  Exit status: 0 when the run passed its checks, 1 on a violation or when etcd \
                  could not be reached, 2 on a bad command line."
)]
struct Args {
    /// etcd client endpoints (host:port), separated by commas; client i uses endpoint i mod n
    #[arg(
        short = 'a',
        long = "address",
        default_value = "127.0.0.1:23791,127.0.0.1:23792,127.0.0.1:23793"
    )]
    address: String,
    /// Clients, each with its own connection and lease
    #[arg(short = 'c', long = "clients", default_value_t = 16)]
    clients: usize,
    /// Workload to run
    #[arg(short = 'w', long = "workload", value_enum, default_value = "distinct")]
    workload: Workload,
    /// How long to measure, after the warm-up
    #[arg(short = 'd', long = "duration", value_parser = parse_duration, default_value = "5s")]
    duration: Duration,
    /// Warm-up before measuring (its cycles are checked but not counted)
    #[arg(long = "warmup", value_parser = parse_duration, default_value = "1s")]
    warmup: Duration,
    /// Hold each lock this long before unlocking (lets the occupancy check catch overlaps)
    #[arg(long = "hold", value_parser = parse_duration, default_value = "0")]
    hold: Duration,
    /// distinct: names each client cycles over
    #[arg(short = 'l', long = "names", default_value_t = 4)]
    names: usize,
    /// Client runtime threads [default: half the CPUs, at least 1, as ldlm-bench]
    #[arg(long = "threads")]
    threads: Option<usize>,
    /// Print the summary as one JSON object on stdout (the summary line goes to stderr)
    #[arg(long = "json")]
    json: bool,
}

/// `500ms`, `5s`, `1m`, or a bare number of seconds.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (number, unit) = match s.find(|c: char| c.is_ascii_alphabetic()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let scale = match unit {
        "ms" => 1e-3,
        "s" => 1.0,
        "m" => 60.0,
        _ => return Err(format!("{s:?}: use ms, s or m (500ms, 5s, 1m)")),
    };
    match number.parse::<f64>() {
        Ok(n) if n.is_finite() && n >= 0.0 => Ok(Duration::from_secs_f64(n * scale)),
        _ => Err(format!("{s:?} is not a duration")),
    }
}

/// What all clients share: the schedule, the error counts and the checks.
struct Shared {
    workload: Workload,
    hold: Duration,
    names: usize,
    /// When the measured part begins (after the warm-up).
    measure_start: Instant,
    /// No cycle starts at or after this.
    deadline: Instant,
    /// Errors by kind: count and first message.
    errors: Mutex<BTreeMap<String, (u64, String)>>,
    /// contended: clients that currently hold the lock, as far as they know.
    occupancy: AtomicUsize,
    /// contended: highest header revision of a grant so far.
    last_revision: AtomicI64,
    /// contended: grants checked.
    grants_checked: AtomicU64,
    violations: AtomicU64,
    first_violations: Mutex<Vec<String>>,
}

impl Shared {
    fn error(&self, kind: &str, error: &etcd_client::Error) {
        let kind = match error {
            etcd_client::Error::GRpcStatus(status) => format!("{kind}: grpc {:?}", status.code()),
            etcd_client::Error::TransportError(_) => format!("{kind}: transport"),
            _ => format!("{kind}: other"),
        };
        let mut errors = self.errors.lock().unwrap_or_else(|e| e.into_inner());
        errors.entry(kind).or_insert((0, error.to_string())).0 += 1;
    }

    fn violation(&self, what: String) {
        eprintln!("VIOLATION: {what}");
        self.violations.fetch_add(1, Ordering::Relaxed);
        let mut first = self
            .first_violations
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if first.len() < 10 {
            first.push(what);
        }
    }
}

/// What one client measured.
#[derive(Default)]
struct ClientResult {
    warmup_cycles: u64,
    /// Measured latencies in microseconds: whole cycle, Lock, Unlock.
    cycle_us: Vec<u64>,
    lock_us: Vec<u64>,
    unlock_us: Vec<u64>,
    /// When its last cycle ended.
    finished: Option<Instant>,
}

/// One client: connect, grant its lease, run cycles until the deadline, revoke the lease.
async fn run_client(
    id: usize,
    mut client: Client,
    mut lease: i64,
    lease_ttl: i64,
    shared: Arc<Shared>,
) -> ClientResult {
    let mut result = ClientResult::default();
    for i in 0usize.. {
        let started = Instant::now();
        if started >= shared.deadline {
            break;
        }
        let measured = started >= shared.measure_start;
        let name = match shared.workload {
            Workload::Distinct => format!("bench-{id}-{}", i % shared.names),
            Workload::Contended => "bench-contended".to_owned(),
        };
        let granted = match client
            .lock(name.as_str(), Some(LockOptions::new().with_lease(lease)))
            .await
        {
            Ok(granted) => granted,
            Err(e) => {
                shared.error("lock", &e);
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let locked = Instant::now();
        let contended = shared.workload == Workload::Contended;
        if contended {
            check_grant(&shared, id, granted.header().map_or(0, |h| h.revision()));
        }
        if !shared.hold.is_zero() {
            tokio::time::sleep(shared.hold).await;
        }
        if contended {
            shared.occupancy.fetch_sub(1, Ordering::AcqRel);
        }
        let unlock_sent = Instant::now();
        if let Err(e) = client.unlock(granted.key()).await {
            // The lock may still be held: drop it with the lease and carry on with a new lease.
            shared.error("unlock", &e);
            if let Err(e) = client.lease_revoke(lease).await {
                shared.error("lease revoke", &e);
            }
            match client.lease_grant(lease_ttl, None).await {
                Ok(granted) => lease = granted.id(),
                Err(e) => {
                    shared.error("lease grant", &e);
                    break;
                }
            }
            continue;
        }
        let done = Instant::now();
        result.finished = Some(done);
        if measured {
            result.cycle_us.push(micros(done - started));
            result.lock_us.push(micros(locked - started));
            result.unlock_us.push(micros(done - unlock_sent));
        } else {
            result.warmup_cycles += 1;
        }
    }
    if let Err(e) = client.lease_revoke(lease).await {
        shared.error("lease revoke", &e);
    }
    result
}

/// contended: the client `id` was just granted the lock, with this header revision.
fn check_grant(shared: &Shared, id: usize, revision: i64) {
    shared.grants_checked.fetch_add(1, Ordering::Relaxed);
    let others = shared.occupancy.fetch_add(1, Ordering::AcqRel);
    if others != 0 {
        shared.violation(format!(
            "client {id} was granted the lock while {others} other client(s) held it"
        ));
    }
    let previous = shared.last_revision.fetch_max(revision, Ordering::AcqRel);
    if revision <= previous {
        shared.violation(format!(
            "client {id} was granted the lock at revision {revision}, not after the previous \
             grant's {previous}"
        ));
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// p50, p99, max and mean of latencies in microseconds, as milliseconds.
struct Latency {
    count: usize,
    p50: f64,
    p99: f64,
    max: f64,
    mean: f64,
}

impl Latency {
    fn of(mut us: Vec<u64>) -> Latency {
        us.sort_unstable();
        let at = |q: f64| {
            let rank = ((q * us.len() as f64).ceil() as usize).clamp(1, us.len().max(1));
            us.get(rank - 1).copied().unwrap_or(0) as f64 / 1e3
        };
        let sum: u64 = us.iter().sum();
        Latency {
            count: us.len(),
            p50: at(0.50),
            p99: at(0.99),
            max: us.last().copied().unwrap_or(0) as f64 / 1e3,
            mean: if us.is_empty() {
                0.0
            } else {
                sum as f64 / us.len() as f64 / 1e3
            },
        }
    }

    fn text(&self) -> String {
        format!(
            "p50 {:.3} ms  p99 {:.3} ms  max {:.3} ms  (mean {:.3} ms, {} samples)",
            self.p50, self.p99, self.max, self.mean, self.count
        )
    }

    fn json(&self) -> serde_json::Value {
        json!({"count": self.count, "p50": self.p50, "p99": self.p99, "max": self.max,
               "mean": self.mean})
    }
}

/// Connects a client to `endpoint` and grants its lease.
async fn connect(endpoint: String, ttl: i64) -> Result<(Client, i64), String> {
    let mut client = Client::connect([endpoint.as_str()], None)
        .await
        .map_err(|e| format!("cannot connect to {endpoint}: {e}"))?;
    let lease = client
        .lease_grant(ttl, None)
        .await
        .map_err(|e| format!("cannot grant a lease at {endpoint}: {e}"))?;
    Ok((client, lease.id()))
}

async fn run(args: Args) -> Result<bool, String> {
    let endpoints: Vec<String> = args
        .address
        .split(',')
        .map(|a| a.trim().to_owned())
        .collect();
    // The lease must outlive the run: a lease that ran out would drop a held lock.
    let lease_ttl = (args.warmup + args.duration + args.hold).as_secs() as i64 + 60;

    let mut connecting = Vec::with_capacity(args.clients);
    for id in 0..args.clients {
        let endpoint = endpoints[id % endpoints.len()].clone();
        connecting.push(tokio::spawn(connect(endpoint, lease_ttl)));
    }
    let mut clients = Vec::with_capacity(args.clients);
    for handle in connecting {
        clients.push(handle.await.map_err(|e| e.to_string())??);
    }

    let start = Instant::now();
    let measure_start = start + args.warmup;
    let shared = Arc::new(Shared {
        workload: args.workload,
        hold: args.hold,
        names: args.names,
        measure_start,
        deadline: measure_start + args.duration,
        errors: Mutex::default(),
        occupancy: AtomicUsize::new(0),
        last_revision: AtomicI64::new(0),
        grants_checked: AtomicU64::new(0),
        violations: AtomicU64::new(0),
        first_violations: Mutex::default(),
    });
    let handles: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(id, (client, lease))| {
            tokio::spawn(run_client(id, client, lease, lease_ttl, shared.clone()))
        })
        .collect();

    // A client still in a cycle long after the end (a Lock stuck behind a lost holder) is
    // cancelled and reported.
    let grace = shared.deadline + args.hold + Duration::from_secs(10);
    let (mut results, mut cancelled) = (Vec::new(), 0usize);
    for mut handle in handles {
        match tokio::time::timeout_at(grace.into(), &mut handle).await {
            Ok(Ok(result)) => results.push(result),
            Ok(Err(e)) => return Err(format!("a client task failed: {e}")),
            Err(_) => {
                handle.abort();
                cancelled += 1;
            }
        }
    }

    let end = results
        .iter()
        .filter_map(|r| r.finished)
        .max()
        .unwrap_or(measure_start);
    let elapsed = end.saturating_duration_since(measure_start);
    let warmup_cycles: u64 = results.iter().map(|r| r.warmup_cycles).sum();
    let mut cycle_us = Vec::new();
    let (mut lock_us, mut unlock_us) = (Vec::new(), Vec::new());
    for r in results {
        cycle_us.extend(r.cycle_us);
        lock_us.extend(r.lock_us);
        unlock_us.extend(r.unlock_us);
    }
    let cycles = cycle_us.len() as u64;
    let rate = if elapsed.is_zero() {
        0.0
    } else {
        cycles as f64 / elapsed.as_secs_f64()
    };
    let (cycle, lock, unlock) = (
        Latency::of(cycle_us),
        Latency::of(lock_us),
        Latency::of(unlock_us),
    );
    let errors = shared
        .errors
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let error_count: u64 = errors.values().map(|(n, _)| n).sum();
    let violations = shared.violations.load(Ordering::Relaxed);
    let grants_checked = shared.grants_checked.load(Ordering::Relaxed);
    let workload = args.workload.as_str();
    let names = match args.workload {
        Workload::Distinct => args.clients * args.names,
        Workload::Contended => 1,
    };

    let summary = format!(
        "etcd {workload} clients={} cycles/s={rate:.0} p50={:.3}ms p99={:.3}ms max={:.3}ms \
         errors={error_count} violations={violations}",
        args.clients, cycle.p50, cycle.p99, cycle.max
    );
    if args.json {
        let errors: serde_json::Map<_, _> = errors
            .iter()
            .map(|(kind, (n, example))| (kind.clone(), json!({"count": n, "example": example})))
            .collect();
        let report = json!({
            "server": "etcd",
            "workload": workload,
            "address": args.address,
            "clients": args.clients,
            "names": names,
            "hold_seconds": args.hold.as_secs_f64(),
            "elapsed_seconds": elapsed.as_secs_f64(),
            "warmup_cycles": warmup_cycles,
            "cycles": cycles,
            "cycles_per_second": rate,
            "latency_ms": cycle.json(),
            "latency_ms_by_request": {"lock": lock.json(), "unlock": unlock.json()},
            "errors": errors,
            "error_count": error_count,
            "grants_checked": grants_checked,
            "violation_count": violations,
            "violations": *shared.first_violations.lock().unwrap_or_else(|e| e.into_inner()),
            "cancelled_clients": cancelled,
            "passed": violations == 0,
        });
        println!("{report}");
        eprintln!("{summary}");
    } else {
        println!(
            "etcd-lock-bench {workload} to {}: {} client(s), {names} name(s), hold {:?}, \
             {:.2} s measured",
            args.address,
            args.clients,
            args.hold,
            elapsed.as_secs_f64()
        );
        println!("  cycles     {cycles:>10}  {rate:>10.1}/s   (warm-up: {warmup_cycles})");
        println!("  latency    {}", cycle.text());
        println!("    lock     {}", lock.text());
        println!("    unlock   {}", unlock.text());
        if errors.is_empty() {
            println!("  errors     none");
        }
        for (kind, (n, example)) in &errors {
            println!("  errors     {n} x {kind} (e.g. {example})");
        }
        if cancelled > 0 {
            println!("  note       {cancelled} client(s) cancelled after the grace period");
        }
        match (args.workload, violations) {
            (Workload::Distinct, _) => println!("  check      none (no name is shared)"),
            (Workload::Contended, 0) => println!(
                "  check      passed (occupancy and revision order, {grants_checked} grants)"
            ),
            (Workload::Contended, n) => println!("  check      FAILED: {n} violation(s)"),
        }
        println!("{summary}");
    }
    Ok(violations == 0)
}

fn main() -> ExitCode {
    let args = Args::parse();
    let usage = |m: &str| {
        eprintln!("etcd-lock-bench: {m}");
        ExitCode::from(2)
    };
    if args.clients == 0 {
        return usage("--clients must be at least 1");
    }
    if args.names == 0 {
        return usage("--names must be at least 1");
    }
    if args.duration.is_zero() {
        return usage("--duration must be greater than 0");
    }
    if args.address.split(',').any(|a| a.trim().is_empty()) {
        return usage("--address has an empty endpoint: give host:port[,host:port...]");
    }
    let threads = args.threads.unwrap_or_else(|| {
        std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1))
    });
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("etcd-lock-bench: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("etcd-lock-bench: {e}");
            ExitCode::FAILURE
        }
    }
}
