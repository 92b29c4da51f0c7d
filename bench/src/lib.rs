//! `ldlm-bench`: a load generator and correctness checker for any server that speaks the LDLM
//! wire protocol (ours or go-ldlm): it uses only the public gRPC and REST contract.
//!
//! ```text
//! ldlm-bench [-a HOST:PORT] [-t grpc|rest] [-w WORKLOAD] [-c CONNECTIONS] [-f IN_FLIGHT]
//!            [-d DURATION] [-n COUNT] [--warmup D] [--json] [-q] ...
//! ```
//!
//! **Transports.** `grpc`: `--connections` HTTP/2 connections (each is its own server
//! session; by default driven by the lean `h2` client of [`grpc_h2`], or by tonic's client
//! with `--grpc_client tonic`), with `--in_flight` worker tasks per connection, each keeping one call in
//! flight. `rest`: `--connections` keep-alive HTTP/1.1 connections (`--rest_address`), each
//! with its own session (`POST /session`, cookie `ldlm-session`); REST has only TryLock.
//!
//! **Workloads** (`--workload`; a *cycle* is what the throughput counts):
//! - `trylock`: TryLock + Unlock on the worker's own name (cycle = both).
//! - `contended`: blocking Lock + Unlock, every worker on one name (cycle = one hand-off);
//!   gRPC only.
//! - `ratelimit`: TryLock with `--size` (default 10) and `--lock_timeout` (default 1 s) on
//!   `--names` names (default 1), never unlocking (cycle = one TryLock); reports admitted vs
//!   refused and the admissions per lock-timeout window, and checks that never more than
//!   `size` admitted leases are certainly alive at once (see [the checker](self#the-check)).
//! - `refresh`: each worker holds its own name with a lease (`--lock_timeout`, default 10 s)
//!   and refreshes it in a loop (cycle = one refresh); every `--probe_every` refreshes a
//!   TryLock on the held name must be refused.
//! - `fill`: TryLock a new name every cycle and keep it (leased if `--lock_timeout` is set):
//!   fills the server with held locks, e.g. to measure its memory with
//!   `--no_clear_on_disconnect` (cycle = one TryLock; every one must be granted).
//! - `mixed`: go-ldlm's stress soak: a random name among `--names` (UUIDs, one replaced every
//!   `--randomize_interval`), TryLock or (gRPC) Lock at random, each with a 50% chance of a
//!   random wait / lock timeout below `--timeout_max` seconds, a random hold below
//!   `--hold_max`, then Unlock (cycle = one attempt).
//!
//! **Bounds.** `--duration` (default 10 s unless `--count` is given) and/or `--count` measured
//! cycles, after `--warmup` (default 1 s; its cycles are checked but not counted). When the run
//! ends, workers finish their current cycle (holds are released) within a grace period; the
//! measured time runs until the last one stopped.
//!
//! **Output.** A progress bar on stderr (hidden with `--quiet` or when stderr is not a
//! terminal); then the summary on stdout: cycles/s, requests/s, latency percentiles of every
//! request (HdrHistogram) and per request kind, errors by kind (`grpc <Code>`, `http <status>`,
//! lock `ErrorCode` names, `transport`, `lost lock`), and the checks. `--json` prints it as one
//! JSON object instead.
//!
//! # The check
//!
//! Always on (details in the `checker` module's documentation). Per name: occupancy counters
//! for holds without a lease (+1 after the grant's answer, −1 before the Unlock is sent: more
//! than `size` = violation); for runs with leases, every hold is also logged as the interval in
//! which it is *certainly* alive (from its answer until the earlier of the Unlock and request
//! sent + lock timeout − `--lease_margin`), and a sweep after the run finds any moment with
//! more than `size` of them; fencing tokens must never repeat or go backwards (a grant's token
//! exceeds every token received before its request was sent, and for size-1 locks every token
//! processed before it). A server that sends no fencing tokens (go-ldlm) skips the token
//! checks, and the summary says so. Any violation is printed on stderr and the exit status is 1.
//!
//! The counters see a hold only between its answer and its Unlock: in `trylock` and
//! `contended`, which unlock at once, that span is a few instructions, so a server that grants a
//! held lock is caught there by its fencing tokens; `--hold 1ms` (or `mixed`, which holds at
//! random) gives the counters a window too.
//!
//! **Client.** A tokio multi-thread runtime with `--threads` workers (default: half the CPUs,
//! so a client sharing a machine with the server leaves it room); names are formatted once;
//! REST bodies are written into one reused buffer per connection; latencies go into a few
//! HdrHistogram shards and counters are atomics, so the bookkeeping is a few percent of the
//! client's time (the rest is tonic/hyper and the kernel).
//!
//! A connection the server drops releases that session's locks: if another client then takes
//! one of them, the counters report it. Such runs show `transport` or `grpc` errors too.

mod args;
mod checker;
mod client;
mod grpc;
mod grpc_h2;
mod moving;
mod names;
mod outages;
mod report;
mod rest;
mod stats;
mod tls;
mod workload;

use std::future::Future;
use std::io::IsTerminal as _;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use clap::Parser as _;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::task::JoinSet;

pub use args::{Args, GrpcClient, RefreshRpc, Transport, UsageError, Workload};
pub use outages::Outage;
pub use report::{ErrorSummary, Report, Windows};
pub use stats::Latency;

use args::Plan;
use checker::{Checker, Interval};
use client::LockClient;
use names::Names;
use stats::{Op, Stats};
use workload::{Ctx, Worker, rename_names};

/// After the end of the run, how long workers may take to finish their cycle before they are
/// cancelled.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// How many names `mixed` may create by replacement (each needs a slot in the checker).
const MAX_REPLACEMENTS: usize = 65_536;

/// Runs `ldlm-bench` with its real arguments and standard streams.
pub fn main() -> ExitCode {
    let args = Args::parse();
    // Half the CPUs by default: on 2 cores shared with the server, a one-thread client gave
    // ~35% more gRPC TryLock+Unlock cycles/s than a two-thread one (fewer cross-thread
    // wake-ups, and a core left for the server).
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get() / 2));
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("ldlm-bench: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let interrupt = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    match runtime.block_on(run_until(&args, interrupt)) {
        Ok(report) => {
            if args.json {
                println!("{}", report.to_json());
            } else {
                print!("{}", report.to_text());
            }
            if report.passed() {
                ExitCode::SUCCESS
            } else {
                for violation in &report.violations {
                    eprintln!("ldlm-bench: VIOLATION: {violation}");
                }
                let more = report.violation_count - report.violations.len() as u64;
                if more > 0 {
                    eprintln!("ldlm-bench: ... and {more} more violation(s)");
                }
                ExitCode::FAILURE
            }
        }
        Err(error) if error.is::<UsageError>() => {
            eprintln!("ldlm-bench: {error}");
            ExitCode::from(2)
        }
        Err(error) => {
            eprintln!("ldlm-bench: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the bench described by `args` to its end and returns the summary (violations included:
/// see [`Report::passed`]). Errors: a bad combination of options ([`UsageError`]) or a server
/// that cannot be reached.
pub async fn run(args: &Args) -> anyhow::Result<Report> {
    run_until(args, std::future::pending()).await
}

/// [`run`], ending early (with a summary of what was done) when `interrupt` completes.
pub async fn run_until(
    args: &Args,
    interrupt: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<Report> {
    let plan = Plan::from_args(args)?;
    let run_id = uuid::Uuid::new_v4().simple().to_string();
    let names = build_names(&plan, &run_id[..8]);
    let origin = Instant::now();
    let checker = Checker::new(plan.size, names.capacity(), origin);
    let threads = tokio::runtime::Handle::current().metrics().num_workers();
    let stats = Stats::new(plan.workers().min(2 * threads.max(1)));
    let seed = uuid::Uuid::new_v4().as_u64_pair().0;
    match plan.transport {
        Transport::Grpc => {
            let run = Run {
                names,
                checker,
                stats,
                seed,
                plan,
            };
            match run.plan.grpc_client {
                GrpcClient::H2 => {
                    let open = grpc_h2::opener(&run.plan)?;
                    drive_grpc(run, open, interrupt).await
                }
                GrpcClient::Tonic => {
                    let open = grpc::opener(&run.plan)?;
                    drive_grpc(run, open, interrupt).await
                }
            }
        }
        Transport::Rest => {
            let clients = rest::connect(&plan, stats.moves.clone()).await?;
            drive(plan, names, checker, stats, clients, seed, interrupt).await
        }
    }
}

/// What a run is made of, before its clients.
struct Run {
    plan: Plan,
    names: Names,
    checker: Checker,
    stats: Stats,
    seed: u64,
}

/// Connects the run's gRPC clients with `open` and drives them; with several addresses (a
/// cluster's nodes), each connection moves to the next node when its node fails.
async fn drive_grpc<C: LockClient + Clone + Sync>(
    run: Run,
    open: moving::Opener<C>,
    interrupt: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<Report> {
    let clients = grpc::connect_with(&run.plan, &open).await?;
    let Run {
        plan,
        names,
        checker,
        stats,
        seed,
    } = run;
    let addresses = args::addresses(&plan.address);
    if addresses.len() > 1 {
        let moves = stats.moves.clone();
        let clients = moving::wrap(clients, plan.in_flight, addresses, open, moves);
        drive(plan, names, checker, stats, clients, seed, interrupt).await
    } else {
        drive(plan, names, checker, stats, clients, seed, interrupt).await
    }
}

/// The run's names, formatted once: `bench-<run>-<workload>-<i>`, or UUIDs for `mixed` (as
/// go-ldlm's stress tool), so runs never collide with each other's locks.
fn build_names(plan: &Plan, run: &str) -> Names {
    let workload = plan.workload.as_str();
    match plan.workload {
        Workload::Mixed => Names::with_capacity(
            (0..plan.names)
                .map(|_| uuid::Uuid::new_v4().to_string())
                .collect(),
            if plan.randomize_interval.is_zero() {
                0
            } else {
                MAX_REPLACEMENTS
            },
        ),
        _ => Names::fixed(
            (0..plan.names)
                .map(|i| format!("bench-{run}-{workload}-{i}"))
                .collect(),
        ),
    }
}

async fn drive<C: LockClient>(
    plan: Plan,
    names: Names,
    checker: Checker,
    stats: Stats,
    clients: Vec<C>,
    seed: u64,
    interrupt: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<Report> {
    let ctx = Arc::new(Ctx::new(plan, names, checker, stats, Instant::now()));
    let progress = Progress::start(&ctx);
    let renamer = (ctx.plan.workload == Workload::Mixed)
        .then(|| tokio::spawn(rename_names(ctx.clone(), seed.rotate_left(17))));
    let interrupter = {
        let ctx = ctx.clone();
        tokio::spawn(async move {
            interrupt.await;
            ctx.stop();
        })
    };
    let mut workers = JoinSet::new();
    for (id, client) in clients.into_iter().enumerate() {
        workers.spawn(Worker::new(id, client, ctx.clone(), seed).run());
    }

    // Wait for every worker; once the run is over, for STOP_GRACE at most.
    let mut stop = ctx.stop_signal();
    let grace = async move {
        let _ = stop.wait_for(|&stopped| stopped).await;
        tokio::time::sleep(STOP_GRACE).await;
    };
    tokio::pin!(grace);
    let mut finished = Vec::new();
    let mut cancelled = 0;
    let mut panic = None;
    loop {
        tokio::select! {
            joined = workers.join_next() => match joined {
                Some(Ok(client)) => finished.push(client),
                Some(Err(error)) => {
                    ctx.stop();
                    panic.get_or_insert(error);
                }
                None => break,
            },
            () = &mut grace => {
                cancelled = workers.len();
                workers.abort_all();
                while workers.join_next().await.is_some() {}
                break;
            }
        }
    }
    let end = Instant::now();
    ctx.stop();
    interrupter.abort();
    if let Some(renamer) = renamer {
        let _ = renamer.await;
    }
    if let Some(progress) = progress {
        progress.finish().await;
    }
    if let Some(error) = panic {
        anyhow::bail!("a worker failed: {error}");
    }

    // End the sessions (REST: DELETE /session; gRPC: dropping the channels).
    let mut closing = JoinSet::new();
    for client in finished {
        closing.spawn(client.close());
    }
    let _ = tokio::time::timeout(STOP_GRACE, closing.join_all()).await;

    Ok(summarize(&ctx, end, cancelled))
}

fn summarize(ctx: &Ctx, end: Instant, cancelled: usize) -> Report {
    let plan = &ctx.plan;
    let sweep = ctx.checker.finish(&ctx.names);
    let elapsed = end.saturating_duration_since(ctx.measure_start);
    let (ops, all) = ctx.stats.merged();
    let per_op = Op::ALL
        .iter()
        .zip(ops.iter())
        .filter(|(_, h)| !h.is_empty())
        .map(|(op, h)| (op.name().to_owned(), Latency::of(h)))
        .collect();
    let errors = ctx
        .stats
        .errors()
        .into_iter()
        .map(|(kind, e)| ErrorSummary {
            kind,
            count: e.count,
            example: e.example,
        })
        .collect();
    let windows = (plan.workload == Workload::Ratelimit)
        .then(|| {
            windows(
                &sweep.intervals,
                plan.names,
                ctx.checker.nanos(ctx.measure_start),
                elapsed,
                Duration::from_secs(u64::from(plan.lock_timeout)),
            )
        })
        .flatten();
    let (tokens_checked, tokens_missing) = ctx.checker.token_counts();
    let (violations, violation_count) = ctx.checker.violations();
    let stats = &ctx.stats;
    Report {
        workload: plan.workload,
        transport: plan.transport,
        client: match plan.transport {
            Transport::Grpc => plan.grpc_client.as_str(),
            Transport::Rest => "hyper",
        },
        address: match plan.transport {
            Transport::Grpc => plan.address.clone(),
            Transport::Rest => plan.rest_address.clone(),
        },
        connections: plan.connections,
        in_flight: plan.in_flight,
        size: plan.size,
        lock_timeout: plan.lock_timeout,
        names: plan.names,
        elapsed,
        warmup_cycles: stats.warmup_cycles.load(Ordering::Relaxed),
        cycles: stats.cycles.load(Ordering::Relaxed),
        requests: stats.requests.load(Ordering::Relaxed),
        latency: Latency::of(&all),
        per_op,
        errors,
        admitted: stats.admitted.load(Ordering::Relaxed),
        refused: stats.refused.load(Ordering::Relaxed),
        not_acquired: stats.not_acquired.load(Ordering::Relaxed),
        leases_expired: stats.expired.load(Ordering::Relaxed),
        windows,
        max_alive: plan.leases().then_some(sweep.max_alive),
        tokens_checked,
        tokens_missing,
        violations,
        violation_count,
        cancelled_workers: cancelled,
        moves: stats.moves.load(Ordering::Relaxed),
        ended_with_session: stats.ended_with_session.load(Ordering::Relaxed),
        outages: ctx.outages.as_ref().map(|o| o.finish(end)),
    }
}

/// `ratelimit`: admissions (by answer time) per lock-timeout window and name, over the windows
/// that lie wholly in the measured time.
fn windows(
    intervals: &[Interval],
    names: usize,
    measure_start: u64,
    measured: Duration,
    window: Duration,
) -> Option<Windows> {
    let width = u64::try_from(window.as_nanos()).ok()?.max(1);
    let full = u64::try_from(measured.as_nanos()).ok()? / width;
    if full == 0 || names == 0 {
        return None;
    }
    let full_usize = usize::try_from(full).ok()?;
    let mut counts = vec![0u64; names * full_usize];
    for interval in intervals {
        let Some(offset) = interval.start.checked_sub(measure_start) else {
            continue;
        };
        let k = offset / width;
        let name = interval.name as usize;
        if k < full && name < names {
            counts[name * full_usize + k as usize] += 1;
        }
    }
    let total: u64 = counts.iter().sum();
    Some(Windows {
        window,
        windows: counts.len() as u64,
        min: counts.iter().copied().min().unwrap_or(0),
        mean: total as f64 / counts.len() as f64,
        max: counts.iter().copied().max().unwrap_or(0),
    })
}

/// The progress bar: elapsed time (or cycles, for `--count` alone), cycles/s and errors.
struct Progress {
    bar: ProgressBar,
    task: tokio::task::JoinHandle<()>,
}

impl Progress {
    fn start(ctx: &Arc<Ctx>) -> Option<Progress> {
        if ctx.plan.quiet || !std::io::stderr().is_terminal() {
            return None;
        }
        let by_time = ctx.deadline.is_some();
        let start = ctx.measure_start.checked_sub(ctx.plan.warmup)?;
        let total = match ctx.deadline {
            Some(deadline) => deadline.saturating_duration_since(start).as_millis() as u64,
            None => ctx.plan.count.unwrap_or(0),
        };
        let bar =
            ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr_with_hz(10));
        if let Ok(style) =
            ProgressStyle::with_template("{spinner} [{elapsed_precise}] {wide_bar} {msg}")
        {
            bar.set_style(style);
        }
        let task = {
            let (ctx, bar) = (ctx.clone(), bar.clone());
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_millis(100));
                loop {
                    tick.tick().await;
                    let now = Instant::now();
                    let cycles = ctx.stats.cycles.load(Ordering::Relaxed);
                    bar.set_position(if by_time {
                        now.saturating_duration_since(start).as_millis() as u64
                    } else {
                        cycles
                    });
                    let errors = ctx.stats.error_count.load(Ordering::Relaxed);
                    if now < ctx.measure_start {
                        bar.set_message(format!(
                            "warm-up: {} cycles",
                            ctx.stats.warmup_cycles.load(Ordering::Relaxed)
                        ));
                    } else {
                        let secs = now.duration_since(ctx.measure_start).as_secs_f64();
                        let rate = if secs > 0.0 {
                            cycles as f64 / secs
                        } else {
                            0.0
                        };
                        bar.set_message(format!("{cycles} cycles, {rate:.0}/s, {errors} errors"));
                    }
                }
            })
        };
        Some(Progress { bar, task })
    }

    async fn finish(self) {
        self.task.abort();
        let _ = self.task.await;
        self.bar.finish_and_clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_count_admissions_by_answer_time() {
        let s = 1_000_000_000u64;
        let at = |name, t| Interval {
            name,
            start: t,
            end: t + s,
        };
        let intervals = [
            at(0, s / 2),     // before the measured part
            at(0, s),         // window 0
            at(0, s + 10),    // window 0
            at(0, 2 * s + 1), // window 1
            at(1, 2 * s),     // name 1, window 1
            at(0, 3 * s + 1), // window 2: not whole
        ];
        let w = windows(
            &intervals,
            2,
            s,
            Duration::from_millis(2500),
            Duration::from_secs(1),
        )
        .expect("two whole windows");
        assert_eq!((w.windows, w.min, w.max), (4, 0, 2));
        assert!((w.mean - 1.0).abs() < 1e-9);
        assert!(
            windows(
                &intervals,
                2,
                s,
                Duration::from_millis(900),
                Duration::from_secs(1)
            )
            .is_none()
        );
    }
}
