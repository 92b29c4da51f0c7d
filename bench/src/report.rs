//! The summary of a run: as text for people, as one JSON object for scripts (`--json`).

use std::fmt::Write as _;
use std::time::Duration;

use serde_json::{Value, json};

use super::args::{Transport, Workload};
use super::outages::{OUTAGE, Outage};
use super::stats::Latency;

/// One kind of error and how often it happened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ErrorSummary {
    /// `grpc <Code>`, `http <status>`, a lock `ErrorCode` name (`LockWaitTimeout`),
    /// `transport`, `bad response`, or `lost lock` (an Unlock or refresh of a hold that was
    /// certainly still held failed).
    pub kind: String,
    /// How many times.
    pub count: u64,
    /// The first message seen.
    pub example: String,
}

/// `ratelimit`: admissions per lock-timeout window.
#[derive(Clone, Debug, PartialEq)]
pub struct Windows {
    /// The window: the lock timeout.
    pub window: Duration,
    /// Number of (name, window) pairs counted: the windows that lie wholly in the measured
    /// time, times the names.
    pub windows: u64,
    /// Fewest admitted in one window for one name.
    pub min: u64,
    /// Mean admitted per window and name.
    pub mean: f64,
    /// Most admitted in one window for one name (may exceed the size by one or two when a
    /// window boundary falls between a grant and its answer; the exact check is `max_alive`).
    pub max: u64,
}

/// The summary of one run.
#[derive(Clone, Debug)]
pub struct Report {
    /// The workload.
    pub workload: Workload,
    /// The transport.
    pub transport: Transport,
    /// The client implementation: `h2` or `tonic` for gRPC, `hyper` for REST.
    pub client: &'static str,
    /// The server address used.
    pub address: String,
    /// Connections (sessions).
    pub connections: usize,
    /// Requests in flight per connection.
    pub in_flight: usize,
    /// Lock size.
    pub size: u32,
    /// Lease in seconds (0: none; `mixed` draws its own).
    pub lock_timeout: u32,
    /// Number of names (initially, for `mixed`).
    pub names: usize,
    /// Measured time (after the warm-up, until every worker stopped).
    pub elapsed: Duration,
    /// Cycles completed during the warm-up.
    pub warmup_cycles: u64,
    /// Measured cycles: trylock/contended a lock + unlock, ratelimit a TryLock, refresh a
    /// refresh, mixed one attempt (+ unlock when acquired).
    pub cycles: u64,
    /// Measured requests.
    pub requests: u64,
    /// Latency of every measured request.
    pub latency: Latency,
    /// Latency per request kind (only kinds that were sent).
    pub per_op: Vec<(String, Latency)>,
    /// Errors by kind (warm-up included).
    pub errors: Vec<ErrorSummary>,
    /// ratelimit: admitted TryLocks (measured).
    pub admitted: u64,
    /// ratelimit: refused TryLocks (measured).
    pub refused: u64,
    /// TryLocks that did not acquire where a grant was expected.
    pub not_acquired: u64,
    /// Unlocks that failed because the lease had (possibly) run out: expected, not errors.
    pub leases_expired: u64,
    /// ratelimit: admissions per lock-timeout window.
    pub windows: Option<Windows>,
    /// Runs with leases: the most holds of one name certainly alive at once (≤ size).
    pub max_alive: Option<u64>,
    /// Grants whose fencing token was checked.
    pub tokens_checked: u64,
    /// Grants without a fencing token (token 0: a go-ldlm server).
    pub tokens_missing: u64,
    /// The first violations found (each also printed on stderr).
    pub violations: Vec<String>,
    /// All violations found.
    pub violation_count: u64,
    /// Workers that had not finished their cycle within the grace period after the end and
    /// were cancelled.
    pub cancelled_workers: usize,
    /// Connections that moved to another node after theirs failed (several addresses).
    pub moves: u64,
    /// Unlocks that found their hold released with the session a moved connection left
    /// (expected, not errors).
    pub ended_with_session: u64,
    /// `failover`: every time the clients went without a grant for over 100 ms.
    pub outages: Option<Vec<Outage>>,
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

fn latency_json(l: &Latency) -> Value {
    json!({
        "count": l.count,
        "mean": ms(l.mean),
        "p50": ms(l.p50),
        "p90": ms(l.p90),
        "p99": ms(l.p99),
        "p999": ms(l.p999),
        "max": ms(l.max),
    })
}

fn latency_text(l: &Latency) -> String {
    format!(
        "p50 {:.3} ms  p90 {:.3} ms  p99 {:.3} ms  p99.9 {:.3} ms  max {:.3} ms  (mean {:.3} ms, {} requests)",
        ms(l.p50),
        ms(l.p90),
        ms(l.p99),
        ms(l.p999),
        ms(l.max),
        ms(l.mean),
        l.count
    )
}

impl Report {
    /// No violation was found.
    pub fn passed(&self) -> bool {
        self.violation_count == 0
    }

    fn rate(&self, n: u64) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 { n as f64 / secs } else { 0.0 }
    }

    /// Measured cycles per second.
    pub fn cycles_per_sec(&self) -> f64 {
        self.rate(self.cycles)
    }

    /// What the fencing-token check did, in words.
    pub fn fencing(&self) -> &'static str {
        match (self.tokens_checked, self.tokens_missing) {
            (0, 0) => "no grants",
            (_, 0) => "checked",
            (0, _) => "not sent by the server (token 0, as go-ldlm): token checks skipped",
            _ => "inconsistent (some grants without a token)",
        }
    }

    /// The summary as one JSON object.
    pub fn to_json(&self) -> Value {
        let per_op: serde_json::Map<String, Value> = self
            .per_op
            .iter()
            .map(|(op, l)| (op.clone(), latency_json(l)))
            .collect();
        let errors: serde_json::Map<String, Value> = self
            .errors
            .iter()
            .map(|e| {
                (
                    e.kind.clone(),
                    json!({"count": e.count, "example": e.example}),
                )
            })
            .collect();
        json!({
            "workload": self.workload.as_str(),
            "transport": self.transport.as_str(),
            "client": self.client,
            "address": self.address,
            "connections": self.connections,
            "in_flight": self.in_flight,
            "size": self.size,
            "lock_timeout_seconds": self.lock_timeout,
            "names": self.names,
            "elapsed_seconds": self.elapsed.as_secs_f64(),
            "warmup_cycles": self.warmup_cycles,
            "cycles": self.cycles,
            "cycles_per_second": self.cycles_per_sec(),
            "requests": self.requests,
            "requests_per_second": self.rate(self.requests),
            "latency_ms": latency_json(&self.latency),
            "latency_ms_by_request": per_op,
            "errors": errors,
            "error_count": self.errors.iter().map(|e| e.count).sum::<u64>(),
            "admitted": self.admitted,
            "refused": self.refused,
            "not_acquired": self.not_acquired,
            "leases_expired": self.leases_expired,
            "windows": self.windows.as_ref().map(|w| json!({
                "window_seconds": w.window.as_secs_f64(),
                "windows": w.windows,
                "min": w.min,
                "mean": w.mean,
                "max": w.max,
            })),
            "max_alive": self.max_alive,
            "fencing": {
                "checked": self.tokens_checked,
                "missing": self.tokens_missing,
                "status": self.fencing(),
            },
            "violation_count": self.violation_count,
            "violations": self.violations,
            "cancelled_workers": self.cancelled_workers,
            "moves": self.moves,
            "ended_with_session": self.ended_with_session,
            "outages": self.outages.as_ref().map(|outages| outages
                .iter()
                .map(|o| json!({
                    "at_seconds": o.at.as_secs_f64(),
                    "seconds": o.length.as_secs_f64(),
                    "unfinished": o.unfinished,
                }))
                .collect::<Vec<_>>()),
            "passed": self.passed(),
        })
    }

    /// The summary for people.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "ldlm-bench {} over {} ({} client) to {}: {} connection(s) x {} in flight, size {}, {:.2} s measured",
            self.workload.as_str(),
            self.transport.as_str(),
            self.client,
            self.address,
            self.connections,
            self.in_flight,
            self.size,
            self.elapsed.as_secs_f64()
        );
        let _ = writeln!(
            out,
            "  cycles     {:>10}  {:>10.1}/s   (warm-up: {})",
            self.cycles,
            self.cycles_per_sec(),
            self.warmup_cycles
        );
        let _ = writeln!(
            out,
            "  requests   {:>10}  {:>10.1}/s",
            self.requests,
            self.rate(self.requests)
        );
        let _ = writeln!(out, "  latency    {}", latency_text(&self.latency));
        if self.per_op.len() > 1 {
            for (op, l) in &self.per_op {
                let _ = writeln!(out, "    {op:<8} {}", latency_text(l));
            }
        }
        if self.workload == Workload::Ratelimit {
            let _ = write!(
                out,
                "  ratelimit  admitted {} ({:.1}/s), refused {} ({:.1}/s)",
                self.admitted,
                self.rate(self.admitted),
                self.refused,
                self.rate(self.refused)
            );
            match &self.windows {
                Some(w) => {
                    let _ = writeln!(
                        out,
                        "; per {} s window and name: min {}, mean {:.2}, max {} ({} windows)",
                        w.window.as_secs(),
                        w.min,
                        w.mean,
                        w.max,
                        w.windows
                    );
                }
                None => {
                    let _ = writeln!(out, "; no whole lock-timeout window measured");
                }
            }
        }
        if let Some(alive) = self.max_alive {
            let _ = writeln!(
                out,
                "  leases     at most {alive} hold(s) of one name certainly alive at once (size {})",
                self.size
            );
        }
        if self.not_acquired > 0 || self.leases_expired > 0 {
            let _ = writeln!(
                out,
                "  outcomes   {} TryLock(s) not acquired, {} unlock(s) after lease expiry",
                self.not_acquired, self.leases_expired
            );
        }
        if self.errors.is_empty() {
            let _ = writeln!(out, "  errors     none");
        } else {
            for e in &self.errors {
                let _ = writeln!(
                    out,
                    "  errors     {} x {} (e.g. {})",
                    e.count, e.kind, e.example
                );
            }
        }
        let _ = writeln!(
            out,
            "  fencing    {} ({} grants with a token, {} without)",
            self.fencing(),
            self.tokens_checked,
            self.tokens_missing
        );
        if self.moves > 0 {
            let _ = writeln!(
                out,
                "  moves      {} connection(s) moved to another node after theirs failed; {} hold(s) ended with the session left behind",
                self.moves, self.ended_with_session
            );
        }
        if let Some(outages) = &self.outages {
            let _ = write!(
                out,
                "  outages    {} time(s) without a grant for over {} ms",
                outages.len(),
                OUTAGE.as_millis()
            );
            if let Some(longest) = outages.iter().map(|o| o.length).max() {
                let _ = write!(out, " (longest {:.3} s)", longest.as_secs_f64());
            }
            let _ = writeln!(out);
            for o in outages {
                let _ = writeln!(
                    out,
                    "    at {:>8.3} s for {:.3} s{}",
                    o.at.as_secs_f64(),
                    o.length.as_secs_f64(),
                    if o.unfinished {
                        " (the run ended first)"
                    } else {
                        ""
                    }
                );
            }
        }
        if self.cancelled_workers > 0 {
            let _ = writeln!(
                out,
                "  note       {} worker(s) cancelled after the grace period",
                self.cancelled_workers
            );
        }
        if self.passed() {
            let _ = writeln!(out, "  check      passed");
        } else {
            let _ = writeln!(
                out,
                "  check      FAILED: {} violation(s)",
                self.violation_count
            );
        }
        out
    }
}
