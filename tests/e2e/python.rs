//! Any-language compatibility: `tests/python/compat.py`, a Python grpcio client whose stubs are
//! generated at test time from `proto/ldlm.proto`, against a real server.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use crate::harness;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_grpcio_client_works_unchanged() {
    // Creates (once) a venv with grpcio under target/ and generates the stubs.
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
    let stubs = String::from_utf8(setup.stdout).expect("utf-8").trim().to_string();
    let python = PathBuf::from(&stubs).join("../bin/python");

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
