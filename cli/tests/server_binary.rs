//! The `ldlm-server` binary itself: command line, startup lines, exit codes, signals.

mod support;

use std::time::Duration;

use support::{Process, run};

#[test]
fn help_and_version() {
    let (code, stdout, _) = run(&["--help"], &[]);
    assert_eq!(code, 0);
    for option in [
        "--default_lock_timeout",
        "--listen_address",
        "--state_file",
        "LDLM_PASSWORD",
    ] {
        assert!(stdout.contains(option), "--help mentions {option}");
    }
    let (code, stdout, _) = run(&["--version"], &[]);
    assert_eq!(code, 0);
    assert!(stdout.starts_with("Version: "), "{stdout}");
}

#[test]
fn bad_command_lines_exit_2_with_a_message_on_stderr() {
    let (code, _, stderr) = run(&["--no_such_flag"], &[]);
    assert_eq!(code, 2);
    assert!(stderr.contains("no_such_flag"), "{stderr}");
    let (code, _, stderr) = run(&["--lock_gc_interval", "soon"], &[]);
    assert_eq!(code, 2);
    assert!(stderr.contains("lock_gc_interval"), "{stderr}");
    let (code, _, stderr) = run(&[], &[("LDLM_KEEPALIVE_TIMEOUT", "5")]);
    assert_eq!(code, 2);
    assert!(stderr.contains("LDLM_KEEPALIVE_TIMEOUT"), "{stderr}");
    let (code, _, stderr) = run(&["--tls_key", "/nonexistent.key"], &[]);
    assert_eq!(code, 2);
    assert!(stderr.contains("tls_cert"), "{stderr}");
}

#[test]
fn startup_failures_exit_1_with_the_reason() {
    let (code, _, stderr) = run(
        &["--listen_address", "b.1.2.3:x", "--ipc_socket_file="],
        &[],
    );
    assert_eq!(code, 1);
    assert!(stderr.contains("error starting server"), "{stderr}");
    let dir = tempfile::tempdir().expect("tempdir");
    let cert = dir.path().join("missing.pem");
    let (code, _, stderr) = run(
        &[
            "--listen_address=127.0.0.1:0",
            "--ipc_socket_file=",
            "--tls_cert",
            cert.to_str().expect("utf-8"),
            "--tls_key",
            cert.to_str().expect("utf-8"),
        ],
        &[],
    );
    assert_eq!(code, 1);
    assert!(stderr.contains("missing.pem"), "{stderr}");
}

#[test]
fn logs_startup_lines_as_json_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("ipc.sock");
    let mut server = Process::start(&[
        "--rest_listen_address=127.0.0.1:0",
        "--password=pw",
        &format!("--ipc_socket_file={}", socket.display()),
    ]);
    let log = server.log_text();
    for line in log.lines() {
        let parsed: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(parsed["level"].is_string(), "{line}");
    }
    for expected in [
        "IPC server started",
        "Loaded gRPC authentication configuration",
        "gRPC server started",
    ] {
        assert!(log.contains(expected), "missing {expected:?} in {log}");
    }
    assert!(socket.exists());
    server.signal("TERM");
    assert_eq!(server.wait(Duration::from_secs(10)), Some(0));
    assert!(!socket.exists(), "the IPC socket is removed at shutdown");
}
