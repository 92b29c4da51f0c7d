//! The command line of `ldlm-bench`, and the validated [`Plan`] a run follows.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};

use ldlm_duration::parse_go_duration;

/// How the bench talks to the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Transport {
    /// gRPC: `--connections` HTTP/2 connections, `--in_flight` calls in flight on each.
    Grpc,
    /// REST: `--connections` keep-alive HTTP/1.1 connections, each with its own session.
    Rest,
}

impl Transport {
    /// The name used on the command line and in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Grpc => "grpc",
            Transport::Rest => "rest",
        }
    }
}

/// Which gRPC client implementation drives `--transport grpc`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum GrpcClient {
    /// Unary calls written straight onto HTTP/2 with the `h2` crate: the cheapest per call,
    /// so the server, not the client, is what gets measured. A failed connection is not
    /// reopened (its calls are reported as transport errors).
    H2,
    /// tonic's generated client over a `Channel`, as a tonic application would call.
    Tonic,
}

impl GrpcClient {
    /// The name used on the command line and in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            GrpcClient::H2 => "h2",
            GrpcClient::Tonic => "tonic",
        }
    }
}

/// What the workers do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Workload {
    /// TryLock + Unlock cycles, each worker on its own name.
    Trylock,
    /// Blocking Lock + Unlock, every worker on one name (gRPC only): hand-offs per second.
    Contended,
    /// TryLock with `--size` and `--lock_timeout`, never unlocking: admitted vs refused.
    Ratelimit,
    /// Each worker holds one lock with a lease and refreshes it in a loop.
    Refresh,
    /// go-ldlm's stress soak: random TryLock/Lock, random wait and lock timeouts, random holds.
    Mixed,
    /// TryLock a new name every cycle and keep it (leased with `--lock_timeout`, if set): fills
    /// the server with held locks, e.g. to measure its memory (see BENCHMARKS.md).
    Fill,
    /// `trylock`, reporting every time the clients went without a grant for over 100 ms: run it
    /// against a cluster's nodes (`-a a,b,c`) while killing the leader or restarting the nodes
    /// one by one, to measure the unavailability each event causes.
    Failover,
}

impl Workload {
    /// The name used on the command line and in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Workload::Trylock => "trylock",
            Workload::Contended => "contended",
            Workload::Ratelimit => "ratelimit",
            Workload::Refresh => "refresh",
            Workload::Mixed => "mixed",
            Workload::Fill => "fill",
            Workload::Failover => "failover",
        }
    }
}

/// Which RPC (and REST route) refreshes a lease.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum RefreshRpc {
    /// `RefreshLock` / `POST /v1/refreshlock` (go-ldlm 3eb8bea and ours).
    Refreshlock,
    /// `Renew` / `POST /v1/renew` (go-ldlm HEAD and ours).
    Renew,
}

/// Command line of `ldlm-bench`.
///
/// Durations are Go durations (`500ms`, `10s`, `1m30s`); a bare number means seconds.
#[derive(Clone, Debug, Parser)]
#[command(
    name = "ldlm-bench",
    version,
    about = "Load generator and correctness checker for any server speaking the LDLM protocol \
             (ldlm-server or go-ldlm)",
    long_about = None,
    after_help = "Durations are Go durations (500ms, 10s, 1m30s); a bare number means seconds.\n\
                  Exit status: 0 when the run passed its correctness checks, 1 on a violation \
                  (mutual exclusion, fencing tokens, rate limit) or when the server could not be \
                  reached, 2 on a bad command line."
)]
pub struct Args {
    /// gRPC address of the server (host:port); for a cluster, several separated by commas
    /// (connections are spread over them in turn, and move to the next when their node fails)
    #[arg(short = 'a', long = "address", default_value = "localhost:3144")]
    pub address: String,
    /// REST address of the server (host:port), for --transport rest; several separated by
    /// commas, as --address (a moving connection keeps its session, which is cluster-wide)
    #[arg(long = "rest_address", default_value = "localhost:8080")]
    pub rest_address: String,
    /// Transport to load
    #[arg(short = 't', long = "transport", value_enum, default_value = "grpc")]
    pub transport: Transport,
    /// gRPC client implementation (both speak the same wire protocol)
    #[arg(long = "grpc_client", value_enum, default_value = "h2")]
    pub grpc_client: GrpcClient,
    /// Workload to run
    #[arg(short = 'w', long = "workload", value_enum, default_value = "trylock")]
    pub workload: Workload,
    /// Connections (gRPC: HTTP/2 connections = sessions; REST: keep-alive connections, each
    /// with its own session)
    #[arg(short = 'c', long = "connections", default_value_t = 16)]
    pub connections: usize,
    /// Requests in flight per gRPC connection (one worker task each); REST allows only 1
    #[arg(short = 'f', long = "in_flight", default_value_t = 1)]
    pub in_flight: usize,
    /// How long to measure, after the warm-up [default: 10s, unless --count is given]
    #[arg(short = 'd', long = "duration", value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Stop after this many measured cycles (together with --duration: whichever comes first)
    #[arg(short = 'n', long = "count")]
    pub count: Option<u64>,
    /// Warm-up before measuring (its cycles are checked but not counted)
    #[arg(long = "warmup", value_parser = parse_duration, default_value = "1s")]
    pub warmup: Duration,
    /// Lock size (counting semaphore) [default: 10 for ratelimit, else 1]
    #[arg(long = "size")]
    pub size: Option<u32>,
    /// Lease of each lock, whole seconds [default: 1s for ratelimit, 10s for refresh, else none]
    #[arg(long = "lock_timeout", value_parser = parse_seconds)]
    pub lock_timeout: Option<u32>,
    /// Wait timeout of the blocking Lock in `contended`, whole seconds (0 = wait forever)
    #[arg(long = "wait_timeout", value_parser = parse_seconds, default_value = "0")]
    pub wait_timeout: u32,
    /// trylock/contended: hold each lock this long before unlocking. Holding a moment lets the
    /// occupancy counters catch a server that grants a held lock; with 0 (a pure throughput
    /// run) such a server is caught by its fencing tokens, if it sends them
    #[arg(long = "hold", value_parser = parse_duration, default_value = "0")]
    pub hold: Duration,
    /// Number of lock names for ratelimit (default 1) and mixed (default 3 per 10 workers,
    /// like go-ldlm's stress tool)
    #[arg(short = 'l', long = "names")]
    pub names: Option<usize>,
    /// mixed: hold each lock a random time below this
    #[arg(short = 's', long = "hold_max", value_parser = parse_duration, default_value = "100ms")]
    pub hold_max: Duration,
    /// mixed: random wait and lock timeouts are drawn from [0, this) whole seconds (0 = none)
    #[arg(long = "timeout_max", value_parser = parse_seconds, default_value = "5")]
    pub timeout_max: u32,
    /// mixed: replace one random name with a fresh one this often (0 = never)
    #[arg(short = 'i', long = "randomize_interval", value_parser = parse_duration, default_value = "7s")]
    pub randomize_interval: Duration,
    /// refresh: every this many refreshes, a TryLock on the held name must be refused (0 = never)
    #[arg(long = "probe_every", default_value_t = 16)]
    pub probe_every: u64,
    /// Which RPC refreshes a lease
    #[arg(long = "refresh_rpc", value_enum, default_value = "refreshlock")]
    pub refresh_rpc: RefreshRpc,
    /// Safety margin for leases: a lease counts as possibly expired from request sent + lock
    /// timeout - margin (covers the server's timer tick)
    #[arg(long = "lease_margin", value_parser = parse_duration, default_value = "10ms")]
    pub lease_margin: Duration,
    /// Password (gRPC metadata `authorization`; REST Basic auth)
    #[arg(long = "password", env = "LDLM_PASSWORD", hide_env_values = true)]
    pub password: Option<String>,
    /// Use TLS (implied by --ca_file, --tls_cert and --skip_verify)
    #[arg(long = "tls", alias = "use_tls")]
    pub tls: bool,
    /// CA certificate (PEM) to verify the server with [default: the system's roots]
    #[arg(long = "ca_file")]
    pub ca_file: Option<PathBuf>,
    /// Client certificate (PEM) for mTLS; needs --tls_key
    #[arg(long = "tls_cert")]
    pub tls_cert: Option<PathBuf>,
    /// Client private key (PEM) for mTLS; needs --tls_cert
    #[arg(long = "tls_key")]
    pub tls_key: Option<PathBuf>,
    /// Accept any server certificate (self-signed test servers only)
    #[arg(long = "skip_verify")]
    pub skip_verify: bool,
    /// Client runtime threads [default: half the CPUs, at least 1: when client and server
    /// share a machine, a client on every core slows both down]
    #[arg(long = "threads")]
    pub threads: Option<usize>,
    /// Print the summary as one JSON object on stdout
    #[arg(long = "json")]
    pub json: bool,
    /// No progress bar
    #[arg(short = 'q', long = "quiet")]
    pub quiet: bool,
}

/// A Go duration (`10s`, `1m30s`, `500ms`), or a bare number of seconds.
fn parse_duration(s: &str) -> Result<Duration, String> {
    if let Ok(secs) = s.parse::<f64>()
        && secs.is_finite()
        && secs >= 0.0
    {
        return Ok(Duration::from_secs_f64(secs));
    }
    parse_go_duration(s).map_err(|e| e.to_string())
}

/// Whole seconds for the wire's `int32` second fields: `5`, `5s`, `1m`.
fn parse_seconds(s: &str) -> Result<u32, String> {
    let d = parse_duration(s)?;
    if d.subsec_nanos() != 0 {
        return Err(format!(
            "{s:?} is not a whole number of seconds (the protocol counts seconds)"
        ));
    }
    u32::try_from(d.as_secs())
        .ok()
        .filter(|&v| v <= i32::MAX as u32)
        .ok_or_else(|| format!("{s:?} is too large"))
}

/// A bad combination of options (exit code 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// TLS settings for the client side.
#[derive(Clone, Debug)]
pub(crate) struct TlsSettings {
    pub(crate) ca_file: Option<PathBuf>,
    pub(crate) client_cert: Option<(PathBuf, PathBuf)>,
    pub(crate) skip_verify: bool,
}

/// The addresses of a comma-separated list (several: a cluster's nodes).
pub(crate) fn addresses(list: &str) -> Vec<String> {
    list.split(',').map(|a| a.trim().to_owned()).collect()
}

/// The address of a comma-separated list for connection `index` (connections take the
/// addresses in turn).
pub(crate) fn address_for(list: &str, index: usize) -> &str {
    let count = list.split(',').count();
    list.split(',').nth(index % count).unwrap_or(list).trim()
}

/// The validated settings of one run (defaults per workload filled in).
#[derive(Clone, Debug)]
pub(crate) struct Plan {
    pub(crate) transport: Transport,
    pub(crate) grpc_client: GrpcClient,
    pub(crate) workload: Workload,
    pub(crate) address: String,
    pub(crate) rest_address: String,
    pub(crate) connections: usize,
    pub(crate) in_flight: usize,
    pub(crate) duration: Option<Duration>,
    pub(crate) count: Option<u64>,
    pub(crate) warmup: Duration,
    pub(crate) size: u32,
    /// Lease in seconds for trylock/contended/ratelimit/refresh; 0 = none.
    pub(crate) lock_timeout: u32,
    pub(crate) wait_timeout: u32,
    /// trylock/contended: how long to hold before unlocking.
    pub(crate) hold: Duration,
    /// Number of names (the initial ones for mixed).
    pub(crate) names: usize,
    pub(crate) hold_max: Duration,
    pub(crate) timeout_max: u32,
    pub(crate) randomize_interval: Duration,
    pub(crate) probe_every: u64,
    pub(crate) refresh_rpc: RefreshRpc,
    pub(crate) lease_margin: Duration,
    pub(crate) password: Option<String>,
    pub(crate) tls: Option<TlsSettings>,
    pub(crate) quiet: bool,
}

impl Plan {
    /// Worker tasks: one per request in flight.
    pub(crate) fn workers(&self) -> usize {
        self.connections * self.in_flight
    }

    /// Whether some holds of this run have a lease (then holds are also checked as intervals).
    pub(crate) fn leases(&self) -> bool {
        match self.workload {
            Workload::Mixed => self.timeout_max > 1,
            _ => self.lock_timeout > 0,
        }
    }

    /// Validates `args` and fills in the per-workload defaults.
    pub(crate) fn from_args(args: &Args) -> Result<Plan, UsageError> {
        let usage = |m: &str| Err(UsageError(m.to_owned()));
        if args.connections == 0 {
            return usage("--connections must be at least 1");
        }
        if args.in_flight == 0 {
            return usage("--in_flight must be at least 1");
        }
        if args.transport == Transport::Rest && args.in_flight != 1 {
            return usage(
                "REST has one request in flight per connection (HTTP/1.1 without pipelining): \
                 use --connections instead of --in_flight",
            );
        }
        if args.transport == Transport::Rest && args.workload == Workload::Contended {
            return usage(
                "the contended workload needs the blocking Lock, which REST does not have \
                 (POST /v1/lock is a TryLock): use --transport grpc",
            );
        }
        if args.count == Some(0) {
            return usage("--count must be at least 1");
        }
        for (option, list) in [
            ("--address", &args.address),
            ("--rest_address", &args.rest_address),
        ] {
            if list.split(',').any(|a| a.trim().is_empty()) {
                return Err(UsageError(format!(
                    "{option} has an empty address in {list:?}: give host:port[,host:port...]"
                )));
            }
        }
        if args.duration == Some(Duration::ZERO) {
            return usage("--duration must be greater than 0");
        }
        let size = args.size.unwrap_or(match args.workload {
            Workload::Ratelimit => 10,
            _ => 1,
        });
        if size == 0 || size > i32::MAX as u32 {
            return usage("--size must be between 1 and 2147483647");
        }
        let lock_timeout = args.lock_timeout.unwrap_or(match args.workload {
            Workload::Ratelimit => 1,
            Workload::Refresh => 10,
            _ => 0,
        });
        match args.workload {
            Workload::Ratelimit | Workload::Refresh if lock_timeout == 0 => {
                return usage("this workload needs a --lock_timeout of at least 1s");
            }
            Workload::Mixed if args.lock_timeout.is_some() => {
                return usage("mixed draws its lock timeouts at random: use --timeout_max");
            }
            _ => {}
        }
        let workers = args.connections * args.in_flight;
        let names = match (args.workload, args.names) {
            (Workload::Ratelimit, n) => n.unwrap_or(1),
            (Workload::Mixed, n) => n.unwrap_or((workers * 3 / 10).max(1)),
            (_, Some(_)) => return usage("--names applies to the ratelimit and mixed workloads"),
            (Workload::Contended, None) => 1,
            (Workload::Trylock | Workload::Failover | Workload::Refresh | Workload::Fill, None) => {
                workers
            }
        };
        if names == 0 {
            return usage("--names must be at least 1");
        }
        let tls = match (&args.tls_cert, &args.tls_key) {
            (Some(_), None) | (None, Some(_)) => {
                return usage("--tls_cert and --tls_key go together");
            }
            _ if args.tls
                || args.ca_file.is_some()
                || args.tls_cert.is_some()
                || args.skip_verify =>
            {
                Some(TlsSettings {
                    ca_file: args.ca_file.clone(),
                    client_cert: args.tls_cert.clone().zip(args.tls_key.clone()),
                    skip_verify: args.skip_verify,
                })
            }
            _ => None,
        };
        let duration = match (args.duration, args.count) {
            (None, None) => Some(Duration::from_secs(10)),
            (d, _) => d,
        };
        Ok(Plan {
            transport: args.transport,
            grpc_client: args.grpc_client,
            workload: args.workload,
            address: args.address.clone(),
            rest_address: args.rest_address.clone(),
            connections: args.connections,
            in_flight: args.in_flight,
            duration,
            count: args.count,
            warmup: args.warmup,
            size,
            lock_timeout,
            wait_timeout: args.wait_timeout,
            hold: args.hold,
            names,
            hold_max: args.hold_max,
            timeout_max: args.timeout_max,
            randomize_interval: args.randomize_interval,
            probe_every: args.probe_every,
            refresh_rpc: args.refresh_rpc,
            lease_margin: args.lease_margin,
            password: args.password.clone().filter(|p| !p.is_empty()),
            tls,
            quiet: args.quiet,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(argv: &[&str]) -> Result<Plan, UsageError> {
        let mut all = vec!["ldlm-bench"];
        all.extend_from_slice(argv);
        let args = Args::try_parse_from(all).map_err(|e| UsageError(e.to_string()))?;
        Plan::from_args(&args)
    }

    #[test]
    fn defaults_per_workload() {
        let p = plan(&[]).expect("valid");
        assert_eq!(
            (p.workers(), p.names, p.size, p.lock_timeout),
            (16, 16, 1, 0)
        );
        assert_eq!(p.duration, Some(Duration::from_secs(10)));
        let p = plan(&["-w", "ratelimit"]).expect("valid");
        assert_eq!((p.names, p.size, p.lock_timeout), (1, 10, 1));
        assert!(p.leases());
        let p = plan(&["-w", "mixed", "-c", "80"]).expect("valid");
        assert_eq!(p.names, 24);
        let p = plan(&["-n", "100"]).expect("valid");
        assert_eq!((p.duration, p.count), (None, Some(100)));
    }

    #[test]
    fn durations_and_seconds() {
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("2.5"), Ok(Duration::from_millis(2500)));
        assert_eq!(parse_seconds("3s"), Ok(3));
        assert_eq!(parse_seconds("7"), Ok(7));
        assert!(parse_seconds("1.5s").is_err());
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn bad_combinations() {
        assert!(plan(&["-t", "rest", "-f", "4"]).is_err());
        assert!(plan(&["-t", "rest", "-w", "contended"]).is_err());
        assert!(plan(&["-w", "ratelimit", "--lock_timeout", "0"]).is_err());
        assert!(plan(&["--names", "3"]).is_err());
        assert!(plan(&["--tls_cert", "x.pem"]).is_err());
        assert!(plan(&["-c", "0"]).is_err());
    }

    #[test]
    fn several_addresses_are_taken_in_turn() {
        let list = "a:1, b:2,c:3";
        let taken: Vec<&str> = (0..4).map(|i| address_for(list, i)).collect();
        assert_eq!(taken, ["a:1", "b:2", "c:3", "a:1"]);
        assert_eq!(address_for("localhost:3144", 7), "localhost:3144");
        assert_eq!(addresses(list), ["a:1", "b:2", "c:3"]);
        assert!(plan(&["-a", "a:1,b:2"]).is_ok());
        let error = plan(&["-a", "a:1,,b:2"]).expect_err("an empty address");
        assert!(error.0.contains("--address"), "{}", error.0);
    }
}
