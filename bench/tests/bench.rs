//! `ldlm-bench`: a short run of every workload against an in-process server passes its
//! correctness check (over gRPC and REST where the workload applies), and a deliberately broken
//! server (a test double that grants every lock) makes it fail.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use clap::Parser as _;
use ldlm_bench::{self as bench, Args, Report};
use ldlm_cli::config::ServerConfig;
use ldlm_cli::server::{self, Running};
use ldlm_proto::ldlm::ldlm_server::{Ldlm, LdlmServer};
use ldlm_proto::ldlm::{
    LockRequest, LockResponse, RefreshLockRequest, RenewRequest, TryLockRequest, UnlockRequest,
    UnlockResponse,
};
use ldlm_testkit::TestPki;
use tonic::{Request, Response, Status};

fn config() -> ServerConfig {
    let mut config = ServerConfig::defaults();
    config.listen_address = "127.0.0.1:0".into();
    config.rest_listen_address = Some("127.0.0.1:0".into());
    config.ipc_socket_file = None;
    config
}

async fn start(config: &ServerConfig) -> Running {
    server::start(config).await.expect("server starts")
}

fn args(argv: &[&str]) -> Args {
    let all = std::iter::once("ldlm-bench").chain(argv.iter().copied());
    Args::try_parse_from(all).expect("valid bench arguments")
}

/// Runs the bench against `server` (`--address` and `--rest_address` filled in).
async fn bench(server: &Running, argv: &[&str]) -> Report {
    let grpc = server.grpc_addr.to_string();
    let rest = server.rest_addr.expect("REST enabled").to_string();
    let mut all = vec!["-q", "-a", &grpc, "--rest_address", &rest];
    all.extend_from_slice(argv);
    bench::run(&args(&all)).await.expect("the bench runs")
}

/// A passing run that did real work and saw no errors.
fn assert_clean(report: &Report) {
    let text = report.to_text();
    assert!(report.passed(), "{text}");
    assert!(report.cycles > 0, "{text}");
    assert!(report.errors.is_empty(), "{text}");
    assert_eq!(report.cancelled_workers, 0, "{text}");
    assert!(
        report.latency.count > 0 && report.latency.p50 <= report.latency.max,
        "{text}"
    );
    // Our server sends fencing tokens: they were checked.
    assert!(
        report.tokens_checked > 0 && report.tokens_missing == 0,
        "{text}"
    );
    let json = report.to_json();
    assert_eq!(json["passed"], true);
    assert_eq!(json["cycles"], report.cycles);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trylock_over_grpc_and_rest() {
    let server = start(&config()).await;
    let short = ["-d", "700ms", "--warmup", "100ms"];
    let report = bench(
        &server,
        &[&["-w", "trylock", "-c", "4", "-f", "2"][..], &short[..]].concat(),
    )
    .await;
    assert_clean(&report);
    assert!(report.warmup_cycles > 0);
    assert_eq!(report.not_acquired, 0, "distinct names are always free");
    let ops: Vec<&str> = report.per_op.iter().map(|(op, _)| op.as_str()).collect();
    assert_eq!(ops, ["trylock", "unlock"]);

    let report = bench(
        &server,
        &[&["-t", "rest", "-w", "trylock", "-c", "4"][..], &short[..]].concat(),
    )
    .await;
    assert_clean(&report);

    // --count bounds the run instead of --duration.
    let report = bench(
        &server,
        &["-w", "trylock", "-c", "2", "-n", "300", "--warmup", "0"],
    )
    .await;
    assert_clean(&report);
    assert!((300..=302).contains(&report.cycles), "{}", report.to_text());

    // tonic's client drives the same workload as the default h2 one.
    let report = bench(
        &server,
        &[
            &["--grpc_client", "tonic", "-c", "2", "-f", "2"][..],
            &short[..],
        ]
        .concat(),
    )
    .await;
    assert_clean(&report);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fill_leaves_every_lock_held() {
    let mut config = config();
    // Holds outlive the bench's connections, as when measuring memory.
    config.no_clear_on_disconnect = true;
    let server = start(&config).await;
    let mut total = 0;
    for transport in ["grpc", "rest"] {
        let report = bench(
            &server,
            &[
                "-t", transport, "-w", "fill", "-c", "3", "-n", "400", "--warmup", "0",
            ],
        )
        .await;
        let text = report.to_text();
        assert!(report.passed() && report.errors.is_empty(), "{text}");
        assert_eq!(report.not_acquired, 0, "{text}");
        assert!((400..=402).contains(&report.cycles), "{text}");
        total += report.cycles as usize;
    }
    // Every TryLock of the two runs took a new name, and all are still held.
    let engine = server.engine().expect("a single server has its engine");
    assert_eq!(engine.stats().holds, total);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_over_grpc_with_both_clients_and_over_rest() {
    let pki = TestPki::generate();
    let mut config = config();
    config.tls_cert = Some(pki.server_cert());
    config.tls_key = Some(pki.server_key());
    let server = start(&config).await;
    // The certificate names `localhost`: connect by that name.
    let grpc = format!("localhost:{}", server.grpc_addr.port());
    let rest = format!("localhost:{}", server.rest_addr.expect("REST").port());
    let ca = pki.ca();
    let ca = ca.to_str().expect("UTF-8 path");
    for extra in [
        &["-t", "grpc"][..],
        &["--grpc_client", "tonic"],
        &["-t", "rest"],
    ] {
        let mut argv = vec!["-q", "-a", &grpc, "--rest_address", &rest, "--ca_file", ca];
        argv.extend_from_slice(&["-c", "2", "-d", "300ms", "--warmup", "0"]);
        argv.extend_from_slice(extra);
        let report = bench::run(&args(&argv)).await.expect("the bench runs");
        assert_clean(&report);
    }
    // Plaintext against the TLS port: either the HTTP/2 handshake already fails (the run
    // cannot start), or it seems to succeed (the client does not wait for the server's
    // SETTINGS) and then every call is a transport error and nothing is granted.
    let plain = ["-q", "-a", &grpc, "-d", "100ms", "--warmup", "0"];
    match bench::run(&args(&plain)).await {
        Err(error) => assert!(format!("{error:#}").contains("cannot connect"), "{error:#}"),
        Ok(report) => {
            let text = report.to_text();
            assert_eq!(report.errors.len(), 1, "{text}");
            assert_eq!(report.errors[0].kind, "transport", "{text}");
            assert_eq!(report.tokens_checked, 0, "{text}");
        }
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contended_over_grpc() {
    let server = start(&config()).await;
    let report = bench(
        &server,
        &[
            "-w",
            "contended",
            "-c",
            "8",
            "-f",
            "2",
            "-d",
            "800ms",
            "--warmup",
            "100ms",
        ],
    )
    .await;
    assert_clean(&report);
    let ops: Vec<&str> = report.per_op.iter().map(|(op, _)| op.as_str()).collect();
    assert_eq!(ops, ["lock", "unlock"]);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ratelimit_admits_size_per_window_over_grpc_and_rest() {
    let server = start(&config()).await;
    for transport in ["grpc", "rest"] {
        let report = bench(
            &server,
            &[
                "-t",
                transport,
                "-w",
                "ratelimit",
                "-c",
                "4",
                "--size",
                "3",
                "--lock_timeout",
                "1",
                "-d",
                "2050ms",
                "--warmup",
                "0",
            ],
        )
        .await;
        let text = report.to_text();
        assert_clean(&report);
        assert!(report.refused > 0, "{text}");
        // Two whole 1 s windows, 3 admitted in each.
        assert!((6..=9).contains(&report.admitted), "{text}");
        assert_eq!(report.max_alive, Some(3), "{text}");
        let windows = report.windows.clone().expect("whole windows");
        assert_eq!(windows.windows, 2, "{text}");
        assert_eq!(windows.min, 3, "{text}");
        assert!(windows.max <= 4, "{text}");
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_over_grpc_and_rest() {
    let server = start(&config()).await;
    for transport in ["grpc", "rest"] {
        let report = bench(
            &server,
            &[
                "-t",
                transport,
                "-w",
                "refresh",
                "-c",
                "3",
                "--lock_timeout",
                "2",
                "--probe_every",
                "4",
                "-d",
                "600ms",
                "--warmup",
                "100ms",
            ],
        )
        .await;
        assert_clean(&report);
        assert!(report.per_op.iter().any(|(op, _)| op == "refresh"));
        assert_eq!(report.max_alive, Some(1), "{}", report.to_text());
    }
    // go-ldlm HEAD's name for the RPC and route.
    let report = bench(
        &server,
        &[
            "-w",
            "refresh",
            "-c",
            "2",
            "--refresh_rpc",
            "renew",
            "-d",
            "300ms",
            "--warmup",
            "0",
        ],
    )
    .await;
    assert_clean(&report);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_over_grpc_and_rest_with_expiring_leases() {
    let server = start(&config()).await;
    for transport in ["grpc", "rest"] {
        // Leases of 1 s and holds up to 1.3 s: some leases run out while held, which must not
        // be taken for a violation.
        let report = bench(
            &server,
            &[
                "-t",
                transport,
                "-w",
                "mixed",
                "-c",
                "8",
                "--names",
                "3",
                "--hold_max",
                "1300ms",
                "--timeout_max",
                "2",
                "--randomize_interval",
                "300ms",
                "-d",
                "1500ms",
                "--warmup",
                "0",
            ],
        )
        .await;
        let text = report.to_text();
        assert!(report.passed(), "{text}");
        assert!(report.cycles > 0 && report.tokens_checked > 0, "{text}");
        assert_eq!(report.cancelled_workers, 0, "{text}");
        // Lock-domain outcomes (wait timeouts) are fine; nothing else.
        for error in &report.errors {
            assert_eq!(error.kind, "LockWaitTimeout", "{text}");
        }
        assert!(report.max_alive.is_some_and(|n| n <= 1), "{text}");
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_is_sent_over_grpc_and_rest() {
    let mut config = config();
    config.password = Some("s3cret".into());
    let server = start(&config).await;
    for transport in ["grpc", "rest"] {
        let report = bench(
            &server,
            &[
                "-t",
                transport,
                "--password",
                "s3cret",
                "-c",
                "2",
                "-d",
                "200ms",
                "--warmup",
                "0",
            ],
        )
        .await;
        assert_clean(&report);
    }
    // Without it: every gRPC call is refused, counted by status code (no violation).
    let report = bench(&server, &["-c", "1", "-d", "200ms", "--warmup", "0"]).await;
    assert!(report.passed());
    assert_eq!(report.errors.len(), 1, "{}", report.to_text());
    assert_eq!(report.errors[0].kind, "grpc Unauthenticated");
    // REST refuses the session itself: the run cannot start.
    let rest = server.rest_addr.expect("REST").to_string();
    let error = bench::run(&args(&[
        "-q",
        "-t",
        "rest",
        "--rest_address",
        &rest,
        "-d",
        "100ms",
    ]))
    .await
    .expect_err("no session without the password");
    assert!(format!("{error:#}").contains("401"), "{error:#}");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_usage_and_unreachable_servers_are_errors() {
    let error = bench::run(&args(&["-t", "rest", "-w", "contended"]))
        .await
        .expect_err("no blocking Lock over REST");
    assert!(error.is::<bench::UsageError>(), "{error:#}");
    // A port nothing listens on: below the ephemeral range, where the other tests' servers on
    // port 0 and their connections cannot take it meanwhile.
    let address = format!("127.0.0.1:{}", ldlm_testkit::unused_port());
    let error = bench::run(&args(&["-q", "-a", &address, "-d", "100ms"]))
        .await
        .expect_err("nobody listens");
    assert!(!error.is::<bench::UsageError>());
}

/// A broken server: grants every Lock and TryLock (fresh key each time), whoever holds the
/// name; its fencing tokens come from a counter that wraps around (and so repeat), or are 0.
struct GrantEverything {
    counter: AtomicU64,
    tokens: bool,
}

impl GrantEverything {
    fn grant(&self, name: String) -> Result<Response<LockResponse>, Status> {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        Ok(Response::new(LockResponse {
            locked: true,
            name,
            key: uuid::Uuid::new_v4().to_string(),
            error: None,
            fencing_token: if self.tokens { n % 5 + 1 } else { 0 },
        }))
    }
}

#[tonic::async_trait]
impl Ldlm for GrantEverything {
    async fn lock(&self, request: Request<LockRequest>) -> Result<Response<LockResponse>, Status> {
        self.grant(request.into_inner().name)
    }

    async fn try_lock(
        &self,
        request: Request<TryLockRequest>,
    ) -> Result<Response<LockResponse>, Status> {
        self.grant(request.into_inner().name)
    }

    async fn unlock(
        &self,
        request: Request<UnlockRequest>,
    ) -> Result<Response<UnlockResponse>, Status> {
        Ok(Response::new(UnlockResponse {
            unlocked: true,
            name: request.into_inner().name,
            error: None,
        }))
    }

    async fn refresh_lock(
        &self,
        request: Request<RefreshLockRequest>,
    ) -> Result<Response<LockResponse>, Status> {
        let request = request.into_inner();
        Ok(Response::new(LockResponse {
            locked: true,
            name: request.name,
            key: request.key,
            error: None,
            fencing_token: 0,
        }))
    }

    async fn renew(
        &self,
        request: Request<RenewRequest>,
    ) -> Result<Response<LockResponse>, Status> {
        let request = request.into_inner();
        Ok(Response::new(LockResponse {
            locked: true,
            name: request.name,
            key: request.key,
            error: None,
            fencing_token: 0,
        }))
    }
}

/// Serves the broken double on 127.0.0.1:0 until the runtime ends.
async fn broken_server(tokens: bool) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let service = LdlmServer::new(GrantEverything {
        counter: AtomicU64::new(0),
        tokens,
    });
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_grants_everything_fails_every_workload() {
    // Without fencing tokens, so each run shows the exclusion check it is about.
    let addr = broken_server(false).await.to_string();
    let cases: [(&[&str], &str); 4] = [
        // One name: several holders at once, seen by the occupancy counter.
        (
            &["-w", "contended", "-c", "4", "--hold", "1ms"],
            "mutual exclusion",
        ),
        // More than `size` admitted leases alive at once, seen by the interval sweep.
        (
            &[
                "-w",
                "ratelimit",
                "-c",
                "2",
                "--size",
                "2",
                "--lock_timeout",
                "1",
            ],
            "certainly alive at once",
        ),
        // The probe TryLock on a held name is granted: its hold overlaps the refreshed one.
        (
            &["-w", "refresh", "-c", "2", "--probe_every", "2"],
            "certainly alive at once",
        ),
        (
            &[
                "-w",
                "mixed",
                "-c",
                "4",
                "--names",
                "2",
                "--hold_max",
                "5ms",
                "--timeout_max",
                "0",
            ],
            "mutual exclusion",
        ),
    ];
    for (case, expected) in cases {
        let mut argv = vec!["-q", "-a", &addr, "-d", "300ms", "--warmup", "0"];
        argv.extend_from_slice(case);
        let report = bench::run(&args(&argv)).await.expect("runs");
        assert!(!report.passed(), "{case:?} passed:\n{}", report.to_text());
        assert!(
            report.violations.iter().any(|v| v.contains(expected)),
            "{case:?}: {:?}",
            report.violations
        );
        assert_eq!(report.to_json()["passed"], false);
    }
    // With a token counter that wraps around: distinct names keep exclusion, but the tokens
    // repeat and go backwards.
    let addr = broken_server(true).await.to_string();
    let report = bench::run(&args(&[
        "-q", "-a", &addr, "-c", "2", "-d", "300ms", "--warmup", "0",
    ]))
    .await
    .expect("runs");
    assert!(!report.passed());
    assert!(
        report.violations[0].contains("fencing token"),
        "{:?}",
        report.violations
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_fencing_tokens_the_token_checks_are_skipped() {
    // Like go-ldlm: token 0. With distinct names, granting everything breaks nothing.
    let addr = broken_server(false).await.to_string();
    let report = bench::run(&args(&[
        "-q", "-a", &addr, "-c", "2", "-d", "200ms", "--warmup", "0",
    ]))
    .await
    .expect("runs");
    assert!(report.passed(), "{}", report.to_text());
    assert_eq!(report.tokens_checked, 0);
    assert!(report.tokens_missing > 0);
    assert!(report.fencing().contains("skipped"));
    assert!(report.to_text().contains("token checks skipped"));
    // (Exclusion is still checked without tokens: see the test above.)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_exits_1_on_a_violation_and_0_on_a_pass() {
    let binary = env!("CARGO_BIN_EXE_ldlm-bench");
    let broken = broken_server(true).await.to_string();
    let output = tokio::process::Command::new(binary)
        .args([
            "-a",
            &broken,
            "-w",
            "contended",
            "-c",
            "4",
            "-d",
            "300ms",
            "--warmup",
            "0",
            "--json",
        ])
        .output()
        .await
        .expect("runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("VIOLATION"), "{stderr}");
    let summary: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("one JSON object");
    assert_eq!(summary["passed"], false);
    assert!(summary["violation_count"].as_u64().is_some_and(|n| n > 0));

    let server = start(&config()).await;
    let output = tokio::process::Command::new(binary)
        .args([
            "-a",
            &server.grpc_addr.to_string(),
            "-c",
            "2",
            "-f",
            "2",
            "-d",
            "300ms",
        ])
        .args(["--warmup", "0", "--json"])
        .output()
        .await
        .expect("runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.is_empty(),
        "no progress bar when stderr is not a terminal: {stderr}"
    );
    let summary: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("one JSON object");
    assert_eq!(summary["passed"], true);
    assert_eq!(summary["workload"], "trylock");
    assert!(
        summary["cycles_per_second"]
            .as_f64()
            .is_some_and(|r| r > 0.0)
    );
    assert!(summary["latency_ms"]["p99"].as_f64().is_some());

    let output = tokio::process::Command::new(binary)
        .args(["--in_flight", "0"])
        .output()
        .await
        .expect("runs");
    assert_eq!(output.status.code(), Some(2));
    server.shutdown().await;
}
