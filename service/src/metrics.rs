//! Prometheus metrics: one process-wide registry of atomic counters and fixed-bucket
//! histograms, rendered in the Prometheus text format on `--metrics_listen_address`.
//!
//! A global registry (like the `prometheus` crate's default one) keeps the hot path free of
//! plumbing: recording a request is three relaxed atomic adds into fixed arrays (its result
//! counter, its latency bucket and the latency sum), no allocation, no lock. Gauges that describe the lock table (held locks, waiters, sessions) are not kept
//! up to date on the hot path at all: they are read from the engine when `/metrics` is scraped.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ldlm_engine::{AdvanceReport, ErrorCode, LockError};

/// Which transport served a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// gRPC.
    Grpc = 0,
    /// REST.
    Rest = 1,
}

/// Which operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rpc {
    /// Blocking Lock.
    Lock = 0,
    /// TryLock.
    TryLock = 1,
    /// Unlock.
    Unlock = 2,
    /// RefreshLock / Renew.
    Refresh = 3,
}

/// How it ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Locked, unlocked or refreshed.
    Ok,
    /// TryLock found the lock busy.
    Busy,
    /// A lock-domain error with this code.
    Error(ErrorCode),
}

const TRANSPORTS: [&str; 2] = ["grpc", "rest"];
const RPCS: [&str; 4] = ["Lock", "TryLock", "Unlock", "Refresh"];
/// The error codes, in the order of their numbers ([`Outcome`]'s index is `2 + code`).
const CODES: [ErrorCode; 8] = ErrorCode::ALL;
/// Result labels: `ok`, `busy`, then one per error code (its proto name).
const RESULTS: usize = 2 + CODES.len();

fn result_label(index: usize) -> &'static str {
    match index {
        0 => "ok",
        1 => "busy",
        i => CODES[i - 2].name(),
    }
}

impl Outcome {
    /// The outcome of an engine call that succeeded or failed (Unlock, Refresh).
    pub fn of<T>(result: &Result<T, LockError>) -> Outcome {
        match result {
            Ok(_) => Outcome::Ok,
            Err(error) => Outcome::Error(error.code()),
        }
    }

    /// The outcome of a Lock/TryLock, where `Ok(None)` is "busy".
    pub fn of_acquire<T>(result: &Result<Option<T>, LockError>) -> Outcome {
        match result {
            Ok(None) => Outcome::Busy,
            other => Outcome::of(other),
        }
    }

    fn index(self) -> usize {
        match self {
            Outcome::Ok => 0,
            Outcome::Busy => 1,
            Outcome::Error(code) => 2 + code as usize,
        }
    }
}

/// Upper bounds of the latency buckets, in seconds.
const LATENCY_BOUNDS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 10.0, 60.0,
];
/// Upper bounds of the state-file batch-size buckets, in records.
const BATCH_BOUNDS: [f64; 10] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 1024.0];

/// A histogram with fixed buckets; the sum is kept in microunits to stay an integer.
struct Histogram<const N: usize> {
    buckets: [AtomicU64; N],
    overflow: AtomicU64,
    sum_micros: AtomicU64,
}

impl<const N: usize> Histogram<N> {
    const fn new() -> Self {
        Histogram {
            buckets: [const { AtomicU64::new(0) }; N],
            overflow: AtomicU64::new(0),
            sum_micros: AtomicU64::new(0),
        }
    }

    fn observe(&self, bounds: &[f64; N], value: f64) {
        match bounds.iter().position(|&b| value <= b) {
            Some(i) => self.buckets[i].fetch_add(1, Ordering::Relaxed),
            None => self.overflow.fetch_add(1, Ordering::Relaxed),
        };
        self.sum_micros
            .fetch_add((value * 1e6) as u64, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, labels: &str, bounds: &[f64; N]) {
        let mut cumulative = 0;
        let sep = if labels.is_empty() { "" } else { "," };
        for (bound, bucket) in bounds.iter().zip(&self.buckets) {
            cumulative += bucket.load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {cumulative}"
            );
        }
        cumulative += self.overflow.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {cumulative}"
        );
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(out, "{name}_sum{braces} {sum}");
        // The count is the +Inf bucket: every observation falls in exactly one bucket.
        let _ = writeln!(out, "{name}_count{braces} {cumulative}");
    }
}

struct Registry {
    requests: [[[AtomicU64; RESULTS]; RPCS.len()]; TRANSPORTS.len()],
    latency: [[Histogram<14>; RPCS.len()]; TRANSPORTS.len()],
    leases_expired: AtomicU64,
    waits_timed_out: AtomicU64,
    locks_collected: AtomicU64,
    sessions_expired: AtomicU64,
    fsync: Histogram<14>,
    batch_records: Histogram<10>,
    forwarded: AtomicU64,
    forward_messages: AtomicU64,
    resent: AtomicU64,
    takeovers: AtomicU64,
}

static REGISTRY: Registry = Registry {
    requests: [const { [const { [const { AtomicU64::new(0) }; RESULTS] }; RPCS.len()] };
        TRANSPORTS.len()],
    latency: [const { [const { Histogram::new() }; RPCS.len()] }; TRANSPORTS.len()],
    leases_expired: AtomicU64::new(0),
    waits_timed_out: AtomicU64::new(0),
    locks_collected: AtomicU64::new(0),
    sessions_expired: AtomicU64::new(0),
    fsync: Histogram::new(),
    batch_records: Histogram::new(),
    forwarded: AtomicU64::new(0),
    forward_messages: AtomicU64::new(0),
    resent: AtomicU64::new(0),
    takeovers: AtomicU64::new(0),
};

/// Records one request: its outcome and how long it took (for Lock, including the wait).
pub fn record_request(transport: Transport, rpc: Rpc, outcome: Outcome, elapsed: Duration) {
    let r = &REGISTRY;
    r.requests[transport as usize][rpc as usize][outcome.index()].fetch_add(1, Ordering::Relaxed);
    r.latency[transport as usize][rpc as usize].observe(&LATENCY_BOUNDS, elapsed.as_secs_f64());
}

/// Records what the timer driver's `advance` did.
pub fn record_advance(report: &AdvanceReport) {
    let r = &REGISTRY;
    r.leases_expired
        .fetch_add(report.leases_expired as u64, Ordering::Relaxed);
    r.waits_timed_out
        .fetch_add(report.waits_timed_out as u64, Ordering::Relaxed);
    r.locks_collected
        .fetch_add(report.locks_collected as u64, Ordering::Relaxed);
    r.sessions_expired
        .fetch_add(report.sessions_expired.len() as u64, Ordering::Relaxed);
}

/// Records one state-file group commit: records in the batch and the write+fsync time.
pub fn record_commit(records: u64, elapsed: Duration) {
    REGISTRY
        .fsync
        .observe(&LATENCY_BOUNDS, elapsed.as_secs_f64());
    REGISTRY
        .batch_records
        .observe(&BATCH_BOUNDS, records as f64);
}

/// Cluster mode: one lock call forwarded to the leader on another node.
pub fn record_forwarded() {
    REGISTRY.forwarded.fetch_add(1, Ordering::Relaxed);
}

/// Cluster mode: one message to the leader carrying forwarded calls (one, or under load
/// several).
pub fn record_forward_message() {
    REGISTRY.forward_messages.fetch_add(1, Ordering::Relaxed);
}

/// Cluster mode: one call sent again because its answer could not come (leader changed).
pub fn record_resent() {
    REGISTRY.resent.fetch_add(1, Ordering::Relaxed);
}

/// Cluster mode: this node took over as leader.
pub fn record_takeover() {
    REGISTRY.takeovers.fetch_add(1, Ordering::Relaxed);
}

/// Point-in-time values read when the metrics are scraped.
#[derive(Clone, Debug, Default)]
pub struct Gauges {
    /// Lock objects in the table.
    pub locks: usize,
    /// Held slots.
    pub held: usize,
    /// Queued waiters.
    pub waiters: usize,
    /// Open REST sessions.
    pub rest_sessions: usize,
    /// Cluster mode: this node's view of Raft.
    pub cluster: Option<ClusterGauges>,
}

/// Cluster mode's point-in-time values.
#[derive(Clone, Debug, Default)]
pub struct ClusterGauges {
    /// This node's role: `leader`, `follower`, `learner` or `candidate`.
    pub role: &'static str,
    /// The current term.
    pub term: u64,
    /// The highest log index known committed.
    pub commit_index: u64,
    /// The highest log index applied here.
    pub applied_index: u64,
}

/// Everything in the Prometheus text exposition format (version 0.0.4).
pub fn render(gauges: Gauges) -> String {
    let r = &REGISTRY;
    let mut out = String::with_capacity(16 * 1024);
    out.push_str("# HELP ldlm_requests_total Lock requests by transport, RPC and result.\n");
    out.push_str("# TYPE ldlm_requests_total counter\n");
    for (t, transport) in TRANSPORTS.iter().enumerate() {
        for (p, rpc) in RPCS.iter().enumerate() {
            for o in 0..RESULTS {
                let (n, result) = (r.requests[t][p][o].load(Ordering::Relaxed), result_label(o));
                let _ = writeln!(
                    out,
                    "ldlm_requests_total{{transport=\"{transport}\",rpc=\"{rpc}\",result=\"{result}\"}} {n}"
                );
            }
        }
    }
    out.push_str("# HELP ldlm_request_duration_seconds Time to answer a lock request (Lock: including the wait).\n");
    out.push_str("# TYPE ldlm_request_duration_seconds histogram\n");
    for (t, transport) in TRANSPORTS.iter().enumerate() {
        for (p, rpc) in RPCS.iter().enumerate() {
            let labels = format!("transport=\"{transport}\",rpc=\"{rpc}\"");
            r.latency[t][p].render(
                &mut out,
                "ldlm_request_duration_seconds",
                &labels,
                &LATENCY_BOUNDS,
            );
        }
    }
    let gauge = |out: &mut String, name: &str, help: &str, value: usize| {
        let _ = write!(
            out,
            "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}\n"
        );
    };
    gauge(
        &mut out,
        "ldlm_locks",
        "Lock objects in the table (held or idle).",
        gauges.locks,
    );
    gauge(&mut out, "ldlm_held_locks", "Held lock slots.", gauges.held);
    gauge(
        &mut out,
        "ldlm_waiters",
        "Clients waiting for a lock.",
        gauges.waiters,
    );
    gauge(
        &mut out,
        "ldlm_rest_sessions",
        "Open REST sessions.",
        gauges.rest_sessions,
    );
    let counter = |out: &mut String, name: &str, help: &str, value: &AtomicU64| {
        let _ = write!(
            out,
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}\n",
            value.load(Ordering::Relaxed)
        );
    };
    counter(
        &mut out,
        "ldlm_lease_expiries_total",
        "Leases that ended unrefreshed.",
        &r.leases_expired,
    );
    counter(
        &mut out,
        "ldlm_wait_timeouts_total",
        "Lock waits that timed out.",
        &r.waits_timed_out,
    );
    counter(
        &mut out,
        "ldlm_locks_collected_total",
        "Idle locks dropped by GC.",
        &r.locks_collected,
    );
    counter(
        &mut out,
        "ldlm_sessions_expired_total",
        "REST sessions that expired idle.",
        &r.sessions_expired,
    );
    out.push_str("# HELP ldlm_state_file_commit_seconds Write + fdatasync time of one state-file group commit.\n");
    out.push_str("# TYPE ldlm_state_file_commit_seconds histogram\n");
    r.fsync.render(
        &mut out,
        "ldlm_state_file_commit_seconds",
        "",
        &LATENCY_BOUNDS,
    );
    out.push_str(
        "# HELP ldlm_state_file_batch_records Records written by one state-file group commit.\n",
    );
    out.push_str("# TYPE ldlm_state_file_batch_records histogram\n");
    r.batch_records
        .render(&mut out, "ldlm_state_file_batch_records", "", &BATCH_BOUNDS);
    if let Some(cluster) = &gauges.cluster {
        out.push_str("# HELP ldlm_cluster_role This node's role (the labelled one is 1).\n");
        out.push_str("# TYPE ldlm_cluster_role gauge\n");
        for role in ["leader", "follower", "learner", "candidate"] {
            let value = u8::from(role == cluster.role);
            let _ = writeln!(out, "ldlm_cluster_role{{role=\"{role}\"}} {value}");
        }
        let value = |out: &mut String, name: &str, help: &str, value: u64| {
            let _ = write!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}\n"
            );
        };
        value(
            &mut out,
            "ldlm_cluster_term",
            "The current Raft term.",
            cluster.term,
        );
        value(
            &mut out,
            "ldlm_cluster_commit_index",
            "The highest log index known committed.",
            cluster.commit_index,
        );
        value(
            &mut out,
            "ldlm_cluster_applied_index",
            "The highest log index applied to this node's replica.",
            cluster.applied_index,
        );
        counter(
            &mut out,
            "ldlm_cluster_forwarded_total",
            "Lock calls forwarded to the leader on another node.",
            &r.forwarded,
        );
        counter(
            &mut out,
            "ldlm_cluster_forward_messages_total",
            "Messages that carried forwarded lock calls to the leader (under load, several \
             calls share one).",
            &r.forward_messages,
        );
        counter(
            &mut out,
            "ldlm_cluster_resent_total",
            "Calls sent again because the leader changed before answering.",
            &r.resent,
        );
        counter(
            &mut out,
            "ldlm_cluster_takeovers_total",
            "Times this node took over as leader.",
            &r.takeovers,
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_in_number_order() {
        for (i, code) in CODES.iter().enumerate() {
            assert_eq!(*code as usize, i, "{code:?}");
            assert_eq!(Outcome::Error(*code).index(), 2 + i);
        }
    }

    #[test]
    fn renders_cluster_gauges_only_in_cluster_mode() {
        assert!(!render(Gauges::default()).contains("ldlm_cluster_"));
        record_forwarded();
        let text = render(Gauges {
            cluster: Some(ClusterGauges {
                role: "follower",
                term: 7,
                commit_index: 42,
                applied_index: 41,
            }),
            ..Gauges::default()
        });
        for line in [
            "ldlm_cluster_role{role=\"follower\"} 1",
            "ldlm_cluster_role{role=\"leader\"} 0",
            "ldlm_cluster_term 7",
            "ldlm_cluster_commit_index 42",
            "ldlm_cluster_applied_index 41",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
        }
        assert!(text.contains("ldlm_cluster_forwarded_total "));
        assert!(text.contains("ldlm_cluster_forward_messages_total "));
    }

    #[test]
    fn counts_and_renders() {
        let before = render(Gauges::default());
        record_request(
            Transport::Grpc,
            Rpc::TryLock,
            Outcome::Busy,
            Duration::from_micros(300),
        );
        record_request(
            Transport::Rest,
            Rpc::Unlock,
            Outcome::Error(ErrorCode::InvalidLockKey),
            Duration::from_millis(2),
        );
        record_commit(5, Duration::from_millis(3));
        let text = render(Gauges {
            locks: 3,
            held: 2,
            waiters: 1,
            rest_sessions: 4,
            cluster: None,
        });
        let value = |text: &str, series: &str| -> u64 {
            text.lines()
                .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
                .unwrap_or(0)
        };
        let busy = "ldlm_requests_total{transport=\"grpc\",rpc=\"TryLock\",result=\"busy\"} ";
        assert_eq!(value(&text, busy), value(&before, busy) + 1);
        let invalid =
            "ldlm_requests_total{transport=\"rest\",rpc=\"Unlock\",result=\"InvalidLockKey\"} ";
        assert_eq!(value(&text, invalid), value(&before, invalid) + 1);
        assert!(text.contains("ldlm_held_locks 2\n"));
        assert!(text.contains("ldlm_rest_sessions 4\n"));
        // The 300 µs TryLock falls in the 0.5 ms bucket (cumulative), the 5-record commit in
        // the 8-record one. Other tests may commit concurrently (the registry is global): at
        // least one more.
        let fast = "ldlm_request_duration_seconds_bucket{transport=\"grpc\",rpc=\"TryLock\",le=\"0.0005\"} ";
        assert_eq!(value(&text, fast), value(&before, fast) + 1, "{text}");
        let batch = "ldlm_state_file_batch_records_bucket{le=\"8\"} ";
        assert!(value(&text, batch) > value(&before, batch), "{text}");
        // Every sample line is `name{labels} value` or `name value`.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (_, value) = line.rsplit_once(' ').expect("name and value");
            assert!(value.parse::<f64>().is_ok(), "{line}");
        }
    }
}
