//! Any-language compatibility: `tests/python/compat.py`, a Python grpcio client whose stubs are
//! generated at test time from `proto/ldlm.proto`, against a real server.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use crate::harness;

pub(crate) fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Creates (once) a venv with grpcio under target/, generates the stubs, and returns
/// (python interpreter, stubs directory).
pub(crate) async fn python() -> (PathBuf, String) {
    let setup = tokio::task::spawn_blocking(|| {
        Command::new("bash")
            .arg(repo().join("tests/python/setup.sh"))
            .output()
            .expect("runs setup.sh")
    })
    .await
    .expect("setup task");
    assert!(
        setup.status.success(),
        "tests/python/setup.sh failed:\n{}",
        String::from_utf8_lossy(&setup.stderr)
    );
    let stubs = String::from_utf8(setup.stdout)
        .expect("utf-8")
        .trim()
        .to_string();
    (PathBuf::from(&stubs).join("../bin/python"), stubs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_grpcio_client_works_unchanged() {
    let (python, stubs) = python().await;
    let server = harness::start(&harness::config()).await;
    let address = server.grpc_addr().to_string();
    let run = tokio::process::Command::new(python)
        .arg(repo().join("tests/python/compat.py"))
        .arg(&address)
        .env("PYTHONPATH", &stubs)
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("the Python client finishes within 60 s")
        .expect("python runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "Python client failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains(" passed, 0 failed"), "{stdout}");
    server.running.shutdown().await;
}

/// A client whose process is frozen (SIGSTOP) stops answering HTTP/2 keepalive pings: the server
/// drops its connection after keepalive interval + timeout and releases its lock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_client_loses_its_locks_after_keepalive() {
    use ldlm_proto::ldlm::TryLockRequest;
    use tokio::io::AsyncBufReadExt;

    let (python, stubs) = python().await;
    let mut config = harness::config();
    config.keepalive_interval = Duration::from_secs(1);
    config.keepalive_timeout = Duration::from_secs(1);
    let server = harness::start(&config).await;
    let mut holder = tokio::process::Command::new(python)
        .arg(repo().join("tests/python/hold.py"))
        .arg(server.grpc_addr().to_string())
        .arg("frozen")
        .env("PYTHONPATH", &stubs)
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("python starts");
    let stdout = holder.stdout.take().expect("piped");
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let first = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await
        .expect("the holder reports within 20 s")
        .expect("read")
        .expect("a line");
    assert!(first.starts_with("locked "), "{first}");

    let mut client = server.grpc().await;
    let try_lock = || TryLockRequest {
        name: "frozen".into(),
        ..Default::default()
    };
    assert!(
        !client
            .try_lock(try_lock())
            .await
            .expect("rpc")
            .into_inner()
            .locked
    );

    let pid = holder.id().expect("running").to_string();
    let stopped = Command::new("kill")
        .args(["-STOP", &pid])
        .status()
        .expect("kill runs");
    assert!(stopped.success());
    let frozen_at = tokio::time::Instant::now();
    let released = loop {
        if client
            .try_lock(try_lock())
            .await
            .expect("rpc")
            .into_inner()
            .locked
        {
            break frozen_at.elapsed();
        }
        assert!(
            frozen_at.elapsed() < Duration::from_secs(10),
            "the frozen client kept its lock"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // Interval + timeout is 2 s; the first ping can come up to one interval after the last
    // traffic. Generous slack for a loaded machine.
    assert!(
        released >= Duration::from_millis(900),
        "released too early: {released:?}"
    );
    let _ = Command::new("kill").args(["-KILL", &pid]).status();
    server.running.shutdown().await;
}
