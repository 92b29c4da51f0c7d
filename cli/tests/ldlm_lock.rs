//! The built `ldlm-lock` binary against an in-process IPC server (a real engine behind
//! `ldlm_ipc::serve` on a socket in a temporary directory).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use ldlm_engine::{Engine, EngineConfig, Grant, LockRequest, TryLockOutcome};
use ldlm_service::Clock;

const BIN: &str = env!("CARGO_BIN_EXE_ldlm-lock");

struct Server {
    engine: Engine,
    clock: Clock,
    path: PathBuf,
    runtime: tokio::runtime::Runtime,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl Server {
    fn start() -> Server {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("ldlm-ipc.sock");
        let clock = Clock::new();
        let engine = Engine::new(EngineConfig::default(), clock.now()).expect("engine");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = {
            let _guard = runtime.enter();
            let listener = ldlm_ipc::bind(&path).expect("bind");
            let service = ldlm_service::LocalLockService::new(
                engine.clone(),
                clock,
                ldlm_service::LocalOptions::default(),
            );
            runtime.spawn(ldlm_ipc::serve(
                service,
                listener,
                path.clone(),
                async move {
                    let _ = stopped.await;
                },
            ))
        };
        Server {
            engine,
            clock,
            path,
            runtime,
            stop: Some(stop),
            task: Some(task),
            _dir: dir,
        }
    }

    fn take(&self, name: &str, size: i32) -> Grant {
        let owner = self.engine.new_owner();
        let request = LockRequest {
            name,
            size: Some(size),
            ..LockRequest::default()
        };
        match self.engine.try_lock(&owner, &request, self.clock.now()) {
            Ok(TryLockOutcome::Acquired(grant)) => grant,
            other => panic!("{name} should be free: {other:?}"),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = self.runtime.block_on(task);
        }
    }
}

/// Runs `ldlm-lock -s <socket> args…` with `LDLM_IPC_SOCKET_FILE` unset.
fn ldlm_lock(socket: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("-s")
        .arg(socket)
        .args(args)
        .env_remove("LDLM_IPC_SOCKET_FILE")
        .output()
        .expect("run ldlm-lock")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).expect("UTF-8 output")
}

#[test]
fn list_prints_go_ldlm_lines() {
    let server = Server::start();
    let out = ldlm_lock(&server.path, &["list"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "No locks found\n");

    let a = server.take("alpha", 1);
    let b = server.take("beta", 2);
    let c = server.take("beta", 2);
    let out = ldlm_lock(&server.path, &["list"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        format!(
            "{{Name: alpha, Key: {}, Size: 1}}\n{{Name: beta, Key: {}, Size: 2}}\n\
             {{Name: beta, Key: {}, Size: 2}}\n",
            a.key, b.key, c.key
        )
    );
    assert!(out.stderr.is_empty());
}

#[test]
fn list_json_has_every_field() {
    let server = Server::start();
    let grant = server.take("job", 3);
    let out = ldlm_lock(&server.path, &["list", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let value: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let locks = value.as_array().expect("an array");
    assert_eq!(locks.len(), 1);
    let lock = &locks[0];
    assert_eq!(lock["name"], "job");
    assert_eq!(lock["key"], grant.key.to_string());
    assert_eq!(lock["size"], 3);
    assert!(lock["owner"].is_u64());
    assert_eq!(lock["fencing_token"], grant.fencing_token);
    assert!(lock["lease_expires_in_ms"].is_null());
}

#[test]
fn unlock_by_name_and_by_key() {
    let server = Server::start();
    server.take("solo", 1);
    let out = ldlm_lock(&server.path, &["unlock", "solo"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "Unlocked: true\n");
    assert!(server.engine.list().is_empty());

    let a = server.take("pool", 2);
    let b = server.take("pool", 2);
    // Several holders and no key: an error listing the keys, nothing released.
    let out = ldlm_lock(&server.path, &["unlock", "pool"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(&a.key.to_string()) && stderr.contains(&b.key.to_string()),
        "{stderr}"
    );
    assert_eq!(server.engine.list().len(), 2);

    let out = ldlm_lock(&server.path, &["unlock", "pool", &b.key.to_string()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "Unlocked: true\n");
    let left = server.engine.list();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].key, a.key);
}

#[test]
fn unlock_errors_are_the_servers_text_on_stderr() {
    let server = Server::start();
    let out = ldlm_lock(&server.path, &["unlock", "missing"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    assert_eq!(text(&out.stderr), "a lock by that name does not exist\n");

    server.take("held", 1);
    let out = ldlm_lock(&server.path, &["unlock", "held", "wrong-key"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        "failed to unlock lock: invalid lock key\n"
    );
    assert_eq!(server.engine.list().len(), 1);
}

#[test]
fn the_environment_names_the_socket() {
    let server = Server::start();
    let out = Command::new(BIN)
        .arg("list")
        .env("LDLM_IPC_SOCKET_FILE", &server.path)
        .output()
        .expect("run ldlm-lock");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "No locks found\n");
}

#[test]
fn no_server_prints_the_hint() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("nobody-home.sock");
    let out = ldlm_lock(&path, &["list"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let stderr = text(&out.stderr);
    assert!(stderr.starts_with("IPC error: "), "{stderr}");
    assert!(stderr.contains("nobody-home.sock"), "{stderr}");
    assert!(
        stderr.ends_with(
            ". Is the ldlm server running? Do you need to specify the socket file path? See help\n"
        ),
        "{stderr}"
    );
}

#[test]
fn no_command_is_a_usage_error() {
    let out = Command::new(BIN).output().expect("run ldlm-lock");
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    assert!(text(&out.stderr).contains("Usage"), "{}", text(&out.stderr));
}
