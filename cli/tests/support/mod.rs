//! Running the real `ldlm-server` binary in tests: start it on 127.0.0.1:0 with a clean
//! environment, learn its address from its startup log line, signal it, collect its output.

#![allow(dead_code)]

pub(crate) mod cluster;
pub(crate) mod netns;

/// A small xorshift generator: random test schedules that a seed replays exactly.
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    /// A number below `n`.
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub(crate) const SERVER: &str = env!("CARGO_BIN_EXE_ldlm-server");

/// A command for the server binary with no inherited `LDLM_*` variables.
pub(crate) fn command() -> Command {
    let mut command = Command::new(SERVER);
    clean_env(&mut command);
    command
}

/// Removes the inherited `LDLM_*` variables (the test's own settings) from `command`.
pub(crate) fn clean_env(command: &mut Command) {
    for (key, _) in std::env::vars() {
        if key.starts_with("LDLM_") {
            command.env_remove(key);
        }
    }
}

/// A running server process.
pub(crate) struct Process {
    pub(crate) child: Child,
    pub(crate) grpc_addr: String,
    pub(crate) rest_addr: Option<String>,
    pub(crate) log: Arc<Mutex<Vec<String>>>,
}

impl Process {
    /// Starts the binary with `args` (plus `--listen_address 127.0.0.1:0` and no IPC socket
    /// unless given) and waits up to 10 s for it to listen.
    pub(crate) fn start(args: &[&str]) -> Process {
        Process::start_with(command(), args)
    }

    /// [`Process::start`], running `command` (the server binary, perhaps wrapped).
    pub(crate) fn start_with(mut command: Command, args: &[&str]) -> Process {
        let mut all: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        if !args
            .iter()
            .any(|a| a.starts_with("--listen_address") || *a == "-l")
        {
            all.push("--listen_address=127.0.0.1:0".into());
        }
        if !args.iter().any(|a| a.starts_with("--ipc_socket_file")) {
            all.push("--ipc_socket_file=".into());
        }
        let mut child = command
            .args(&all)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the server binary starts");
        let stderr = child.stderr.take().expect("piped");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        {
            let log = log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    if let Some(addr) = line.split("gRPC server started. Listening on ").nth(1) {
                        let _ = tx.send(("grpc", addr.trim_end_matches(['"', '}']).to_string()));
                    }
                    if let Some(addr) = line.split("REST server started. Listening on ").nth(1) {
                        let _ = tx.send(("rest", addr.trim_end_matches(['"', '}']).to_string()));
                    }
                    log.lock().expect("log").push(line);
                }
            });
        }
        let wants_rest = args
            .iter()
            .any(|a| a.starts_with("--rest_listen_address") || *a == "-r");
        let deadline = Instant::now() + Duration::from_secs(10);
        let (mut grpc, mut rest) = (None, None);
        while grpc.is_none() || (wants_rest && rest.is_none()) {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(("grpc", addr)) => grpc = Some(addr),
                Ok((_, addr)) => rest = Some(addr),
                Err(_) => {
                    let _ = child.kill();
                    panic!("the server did not start: {:?}", log.lock().expect("log"));
                }
            }
        }
        Process {
            child,
            grpc_addr: grpc.expect("grpc address"),
            rest_addr: rest,
            log,
        }
    }

    /// Sends a signal by name (`TERM`, `INT`, `KILL`, `STOP`, `CONT`) with kill(1): the
    /// workspace forbids `unsafe`, so no libc call.
    pub(crate) fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -{signal} {}", self.child.id());
    }

    /// Waits up to `timeout` for the process to exit; returns its exit code (None = signal).
    pub(crate) fn wait(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status.code();
            }
            assert!(
                Instant::now() < deadline,
                "the server did not exit within {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub(crate) fn log_text(&self) -> String {
        self.log.lock().expect("log").join("\n")
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the binary to completion with `args` and `env`; returns (exit code, stdout, stderr).
pub(crate) fn run(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut command = command();
    command.args(args);
    for (k, v) in env {
        command.env(k, v);
    }
    let output = command.output().expect("runs");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Attaches strace to `pid` so that each of its `fdatasync` calls fails with EIO, as on a
/// failing disk: a real error from the kernel, not a hook in our code. Returns once strace
/// has attached to every thread; strace ends when the process does.
pub(crate) fn fail_every_fdatasync(pid: u32) -> Child {
    let mut strace = Command::new("strace")
        .args([
            "-f",
            "-e",
            "trace=fdatasync",
            "-e",
            "inject=fdatasync:error=EIO",
        ])
        .args(["-o", "/dev/null", "-p", &pid.to_string()])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run strace ({e}): the disk-failure tests need strace (Debian: apt-get \
                 install strace) and the right to trace its own child processes (root)"
            )
        });
    let stderr = strace.stderr.take().expect("piped");
    let (said, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            let _ = said.send(line);
        }
    });
    // "Process N attached with K threads"; anything else it says first is why it could not.
    let mut before = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) if line.contains("attached") => return strace,
            Ok(line) => before.push(line),
            Err(_) => panic!(
                "strace did not attach to process {pid}: {before:?}; the disk-failure tests \
                 need the right to trace their own child processes (root, or \
                 /proc/sys/kernel/yama/ptrace_scope at 0)"
            ),
        }
    }
}
