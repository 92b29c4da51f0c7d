//! Every example under `examples/`, each against a freshly started server: the Python grpcio
//! ones (with the venv and stubs of `tests/python/setup.sh`), the curl REST walk-through (with
//! bash), and the Rust one (the `ldlm-client` crate's `basic` example, compiled in here as a
//! module and its `run` called directly).

use std::path::PathBuf;
use std::time::Duration;

use crate::harness;
use crate::python::{python, repo};

#[path = "../../examples/rust/basic.rs"]
mod rust_basic;

/// How long one example may run (the slowest, failover and rate_limit, take a few seconds).
const LIMIT: Duration = Duration::from_secs(120);

/// Runs `program args...`, asserts exit status 0 within [`LIMIT`], returns stdout.
async fn run_ok(program: PathBuf, args: &[String], env: &[(&str, &str)]) -> String {
    let mut command = tokio::process::Command::new(&program);
    command.args(args).kill_on_drop(true);
    for (key, value) in env {
        command.env(key, value);
    }
    let output = tokio::time::timeout(LIMIT, command.output())
        .await
        .unwrap_or_else(|_| {
            panic!(
                "{} {args:?} did not finish within {LIMIT:?}",
                program.display()
            )
        })
        .unwrap_or_else(|e| panic!("{} cannot run: {e}", program.display()));
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{} {args:?} failed ({}):\n{stdout}\n{}",
        program.display(),
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// Runs `examples/python/<script> <gRPC address>` against a fresh server.
async fn python_example(script: &str) -> String {
    let (python, stubs) = python().await;
    let server = harness::start(&harness::config()).await;
    let script = repo().join("examples/python").join(script);
    let stdout = run_ok(
        python,
        &[script.display().to_string(), server.grpc_addr().to_string()],
        &[("PYTHONPATH", &stubs)],
    )
    .await;
    server.running.shutdown().await;
    stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_lock_refresh_unlock() {
    let stdout = python_example("lock_refresh_unlock.py").await;
    assert!(stdout.contains("fencing token 1"), "{stdout}");
    assert!(
        stdout.contains("a second unlock is refused: InvalidLockKey"),
        "{stdout}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_rate_limit() {
    let stdout = python_example("rate_limit.py").await;
    assert!(stdout.contains("window 2: admitted"), "{stdout}");
    assert!(stdout.contains("the limit held"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_failover() {
    let stdout = python_example("failover.py").await;
    assert!(stdout.contains("is still the only primary"), "{stdout}");
    assert!(stdout.contains("took over after"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_rest_flow() {
    let server = harness::start(&harness::config()).await;
    let stdout = run_ok(
        PathBuf::from("bash"),
        &[
            repo()
                .join("examples/curl/rest_flow.sh")
                .display()
                .to_string(),
            server.rest_addr().to_string(),
        ],
        &[],
    )
    .await;
    assert!(stdout.trim_end().ends_with("REST flow OK"), "{stdout}");
    server.running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_client_basic() {
    let server = harness::start(&harness::config()).await;
    let token = rust_basic::run(&server.grpc_addr().to_string())
        .await
        .expect("the Rust example succeeds");
    assert_eq!(token, 1, "the first grant on a fresh server");
    // It unlocked: the lock is free again.
    let mut client = server.grpc().await;
    let free = client
        .try_lock(ldlm_proto::ldlm::TryLockRequest {
            name: "example-rust".into(),
            ..Default::default()
        })
        .await
        .expect("rpc")
        .into_inner();
    assert!(free.locked, "{free:?}");
    server.running.shutdown().await;
}
