//! The IPC server end to end: a real engine, `bind` + `serve` on a socket in a temporary
//! directory, and the blocking client (or raw bytes) on the other side.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::UnixStream as StdUnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ldlm_engine::{Engine, EngineConfig, Grant, LockOutcome, LockRequest, Owner, TryLockOutcome};
use ldlm_ipc::protocol::{MAX_REQUEST_BYTES, encode_request};
use ldlm_ipc::{IpcError, LockEntry, Request, Response, bind, request, serve};
use ldlm_service::{Clock, LocalLockService, LocalOptions};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const TIMEOUT: Duration = Duration::from_secs(10);

struct Harness {
    engine: Engine,
    clock: Clock,
    owner: Owner,
    path: PathBuf,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
    dir: tempfile::TempDir,
}

impl Harness {
    async fn start() -> Harness {
        Self::start_with(EngineConfig::default()).await
    }

    async fn start_with(config: EngineConfig) -> Harness {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("ldlm-ipc.sock");
        let clock = Clock::new();
        let engine = Engine::new(config, clock.now()).expect("config");
        let listener = bind(&path).expect("bind");
        let (stop, stopped) = oneshot::channel::<()>();
        let service = LocalLockService::new(engine.clone(), clock, LocalOptions::default());
        let task = tokio::spawn(serve(service, listener, path.clone(), async move {
            let _ = stopped.await;
        }));
        Harness {
            owner: engine.new_owner(),
            engine,
            clock,
            path,
            stop: Some(stop),
            task: Some(task),
            dir,
        }
    }

    /// Takes a slot of `name` (of lock size `size`) for the harness owner.
    fn take(&self, name: &str, size: i32, lease_seconds: Option<i32>) -> Grant {
        self.take_for(&self.owner, name, size, lease_seconds)
    }

    fn take_for(&self, owner: &Owner, name: &str, size: i32, lease_seconds: Option<i32>) -> Grant {
        let request = LockRequest {
            name,
            size: Some(size),
            lock_timeout_seconds: lease_seconds,
            ..LockRequest::default()
        };
        match self.engine.try_lock(owner, &request, self.clock.now()) {
            Ok(TryLockOutcome::Acquired(grant)) => grant,
            other => panic!("{name} should be free: {other:?}"),
        }
    }

    async fn call(&self, req: Request) -> Response {
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || request(&path, &req, TIMEOUT))
            .await
            .expect("client thread")
            .expect("a response")
    }

    async fn list(&self) -> Vec<LockEntry> {
        match self.call(Request::List).await {
            Response::Locks(locks) => locks,
            other => panic!("list failed: {other:?}"),
        }
    }

    async fn unlock(&self, name: &str, key: Option<&str>) -> Response {
        self.call(Request::Unlock {
            name: name.to_owned(),
            key: key.map(str::to_owned),
        })
        .await
    }

    /// Sends raw bytes on one connection, closes the write side, and returns every response
    /// line.
    async fn raw(&self, bytes: Vec<u8>) -> Vec<String> {
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || {
            let mut stream = StdUnixStream::connect(&path).expect("connect");
            stream.set_read_timeout(Some(TIMEOUT)).unwrap();
            stream.write_all(&bytes).expect("write");
            stream
                .shutdown(std::net::Shutdown::Write)
                .expect("shutdown");
            BufReader::new(stream)
                .lines()
                .collect::<Result<Vec<_>, _>>()
                .expect("read")
        })
        .await
        .expect("client thread")
    }

    /// Stops the server; returns the socket path and its directory (kept until dropped).
    async fn stop(mut self) -> (PathBuf, tempfile::TempDir) {
        let _ = self.stop.take().expect("running").send(());
        tokio::time::timeout(TIMEOUT, self.task.take().expect("running"))
            .await
            .expect("serve returns after shutdown")
            .expect("serve task");
        (self.path, self.dir)
    }
}

fn error_of(response: Response) -> String {
    match response {
        Response::Error { message } => message,
        other => panic!("expected an error, got {other:?}"),
    }
}

#[tokio::test]
async fn list_shows_every_held_slot() {
    let h = Harness::start().await;
    assert!(h.list().await.is_empty());

    let a = h.take("pool", 3, None);
    let b = h.take("pool", 3, Some(60));
    let c = h.take("solo", 1, None);
    let locks = h.list().await;
    assert_eq!(locks.len(), 3, "{locks:?}");
    let pool: Vec<&LockEntry> = locks.iter().filter(|l| l.name == "pool").collect();
    assert_eq!(pool.len(), 2);
    assert!(pool.iter().all(|l| l.size == 3));
    assert!(pool.iter().all(|l| l.owner == h.owner.id().0));
    let with_a = pool
        .iter()
        .find(|l| l.key == a.key.to_string())
        .expect("a listed");
    assert_eq!(with_a.fencing_token, a.fencing_token);
    assert_eq!(with_a.lease_expires_in_ms, None);
    let with_b = pool
        .iter()
        .find(|l| l.key == b.key.to_string())
        .expect("b listed");
    let left = with_b.lease_expires_in_ms.expect("b has a lease");
    assert!((50_000..=60_000).contains(&left), "{left}");
    let solo = locks
        .iter()
        .find(|l| l.name == "solo")
        .expect("solo listed");
    assert_eq!(
        (solo.key.as_str(), solo.size),
        (c.key.to_string().as_str(), 1)
    );

    assert_eq!(
        h.unlock("pool", Some(&a.key.to_string())).await,
        Response::Unlocked {
            key: a.key.to_string()
        }
    );
    let locks = h.list().await;
    assert_eq!(locks.len(), 2);
    assert!(locks.iter().all(|l| l.key != a.key.to_string()));
    h.stop().await;
}

#[tokio::test]
async fn unlock_by_name_alone_releases_the_only_holder() {
    let h = Harness::start().await;
    let grant = h.take("job", 1, None);
    assert_eq!(
        h.unlock("job", None).await,
        Response::Unlocked {
            key: grant.key.to_string()
        }
    );
    assert!(h.list().await.is_empty());
    // The slot is really free again.
    h.take("job", 1, None);
    // An empty key means "no key", as in go-ldlm.
    let lines = h
        .raw(b"{\"v\":1,\"op\":\"unlock\",\"name\":\"job\",\"key\":\"\"}\n".to_vec())
        .await;
    assert_eq!(lines.len(), 1);
    assert!(lines[0].contains("\"ok\":true"), "{lines:?}");
    assert!(h.list().await.is_empty());
    h.stop().await;
}

#[tokio::test]
async fn unlock_hands_the_slot_to_a_waiter() {
    let h = Harness::start().await;
    h.take("queue", 1, None);
    let waiter = h.engine.new_owner();
    let request = LockRequest {
        name: "queue",
        ..LockRequest::default()
    };
    let LockOutcome::Waiting(pending) = h
        .engine
        .lock(&waiter, &request, h.clock.now())
        .expect("valid")
    else {
        panic!("the lock is held");
    };
    assert!(matches!(
        h.unlock("queue", None).await,
        Response::Unlocked { .. }
    ));
    let grant = tokio::time::timeout(TIMEOUT, pending.wait_async())
        .await
        .expect("granted")
        .expect("granted");
    let locks = h.list().await;
    assert_eq!(locks.len(), 1);
    assert_eq!(locks[0].key, grant.key.to_string());
    assert_eq!(locks[0].owner, waiter.id().0);
    h.stop().await;
}

#[tokio::test]
async fn unlock_by_name_with_several_holders_lists_their_keys() {
    let h = Harness::start().await;
    let a = h.take("pool", 2, None);
    let b = h.take("pool", 2, None);
    let message = error_of(h.unlock("pool", None).await);
    assert!(message.contains("2 holders"), "{message}");
    assert!(message.contains(&a.key.to_string()), "{message}");
    assert!(message.contains(&b.key.to_string()), "{message}");
    assert_eq!(h.list().await.len(), 2, "nothing released");
    h.stop().await;
}

#[tokio::test]
async fn unlock_errors_have_go_ldlm_texts() {
    let h = Harness::start().await;
    let grant = h.take("held", 1, None);
    assert_eq!(
        error_of(h.unlock("nope", None).await),
        "a lock by that name does not exist"
    );
    assert_eq!(
        error_of(h.unlock("nope", Some(&grant.key.to_string())).await),
        "failed to unlock lock: a lock by that name does not exist"
    );
    assert_eq!(
        error_of(h.unlock("held", Some("not-a-key")).await),
        "failed to unlock lock: invalid lock key"
    );
    assert_eq!(
        error_of(
            h.unlock("held", Some("00000000-0000-4000-8000-000000000000"))
                .await
        ),
        "failed to unlock lock: invalid lock key"
    );
    assert_eq!(h.list().await.len(), 1, "nothing released");
    h.stop().await;
}

/// go-ldlm's B5: with `no_clear_on_disconnect` the kept locks vanished from the list.
#[tokio::test]
async fn locks_kept_after_their_owner_ended_are_listed_and_unlockable() {
    let h = Harness::start_with(EngineConfig {
        release_on_owner_end: false,
        ..EngineConfig::default()
    })
    .await;
    let gone = h.engine.new_owner();
    let grant = h.take_for(&gone, "kept", 1, None);
    let summary = h.engine.release_owner(&gone, h.clock.now());
    assert_eq!(summary.kept, 1);
    let locks = h.list().await;
    assert_eq!(locks.len(), 1);
    assert_eq!(locks[0].key, grant.key.to_string());
    assert_eq!(locks[0].owner, gone.id().0);
    assert!(matches!(
        h.unlock("kept", None).await,
        Response::Unlocked { .. }
    ));
    assert!(h.list().await.is_empty());
    h.stop().await;
}

#[tokio::test]
async fn bad_requests_get_errors_and_the_connection_keeps_serving() {
    let h = Harness::start().await;
    let mut input = Vec::new();
    input.extend_from_slice(b"this is not json\n");
    input.extend_from_slice(b"{\"v\":2,\"op\":\"list\"}\n");
    input.extend_from_slice(b"{\"op\":\"list\"}\n");
    input.extend_from_slice(b"{\"v\":1,\"op\":\"steal\"}\n");
    input.extend_from_slice(b"\n");
    input.extend_from_slice(b"\xff\xfe\x00\n");
    input.push(b'{');
    input.extend(std::iter::repeat_n(b'a', MAX_REQUEST_BYTES + 10));
    input.extend_from_slice(b"}\n");
    input.extend_from_slice(&encode_request(&Request::List));
    // The last request has no newline: answered at EOF.
    input.extend_from_slice(b"{\"v\":1,\"op\":\"list\"}");
    let lines = h.raw(input).await;
    assert_eq!(lines.len(), 9, "one response per request: {lines:?}");
    let expected = [
        "malformed JSON message",
        "unsupported protocol version 2",
        "no protocol version",
        "unknown operation \\\"steal\\\"",
        "empty request line",
        "malformed JSON message",
        "request line too long: the limit is 65536 bytes",
    ];
    for (line, text) in lines.iter().zip(expected) {
        assert!(
            line.starts_with("{\"v\":1,\"ok\":false,\"error\":\"invalid request: "),
            "{line}"
        );
        assert!(line.contains(text), "{line} should contain {text}");
    }
    assert_eq!(lines[7], "{\"v\":1,\"ok\":true,\"locks\":[]}");
    assert_eq!(lines[8], lines[7]);
    // The server is still up for new connections.
    assert!(h.list().await.is_empty());
    h.stop().await;
}

#[tokio::test]
async fn a_huge_line_without_newline_is_not_buffered_whole() {
    let h = Harness::start().await;
    // 8 MiB of garbage then a request: answered with one error, then the list.
    let mut input = vec![b'x'; 8 << 20];
    input.push(b'\n');
    input.extend_from_slice(&encode_request(&Request::List));
    let lines = h.raw(input).await;
    assert_eq!(lines.len(), 2, "{}", lines.len());
    assert!(lines[0].contains("too long"));
    assert!(lines[1].contains("\"ok\":true"));
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_clients_at_once() {
    let h = Harness::start().await;
    for i in 0..50 {
        h.take(&format!("lock-{i}"), 1, None);
    }
    let mut clients = Vec::new();
    for _ in 0..8 {
        let path = h.path.clone();
        clients.push(tokio::task::spawn_blocking(move || {
            // Several requests on one connection, pipelined.
            let mut stream = StdUnixStream::connect(&path).expect("connect");
            stream.set_read_timeout(Some(TIMEOUT)).unwrap();
            for _ in 0..10 {
                stream.write_all(&encode_request(&Request::List)).unwrap();
            }
            let mut reader = BufReader::new(stream);
            for _ in 0..10 {
                let mut line = String::new();
                reader.read_line(&mut line).expect("response");
                match ldlm_ipc::protocol::decode_response(line.as_bytes()).expect("valid") {
                    Response::Locks(locks) => assert_eq!(locks.len(), 50),
                    other => panic!("{other:?}"),
                }
            }
        }));
    }
    for client in clients {
        client.await.expect("client");
    }
    h.stop().await;
}

#[tokio::test]
async fn socket_is_private_and_removed_at_shutdown() {
    let h = Harness::start().await;
    let meta = std::fs::symlink_metadata(&h.path).expect("socket exists");
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    // An idle client does not hold the shutdown up; its connection is closed.
    let path = h.path.clone();
    let mut idle = tokio::task::spawn_blocking(move || {
        let mut stream = StdUnixStream::connect(&path).expect("connect");
        stream.set_read_timeout(Some(TIMEOUT)).unwrap();
        stream.write_all(&encode_request(&Request::List)).unwrap();
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        reader.read_line(&mut line).expect("answered");
        reader
    })
    .await
    .unwrap();
    let started = std::time::Instant::now();
    let (path, dir) = h.stop().await;
    assert!(
        started.elapsed() < Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );
    let mut rest = String::new();
    assert_eq!(idle.read_line(&mut rest).expect("EOF, not a timeout"), 0);
    assert!(dir.path().exists());
    assert!(
        std::fs::symlink_metadata(&path).is_err(),
        "socket removed at shutdown"
    );
}

#[tokio::test]
async fn shutdown_leaves_a_socket_that_is_not_its_own() {
    let h = Harness::start().await;
    // Someone removed our socket and another server bound the path.
    std::fs::remove_file(&h.path).unwrap();
    let other = bind(&h.path).expect("path is free");
    let (path, _dir) = h.stop().await;
    assert!(path.exists(), "the other server's socket is left alone");
    drop(other);
}

#[tokio::test]
async fn a_live_socket_is_not_taken_over() {
    let h = Harness::start().await;
    let error = bind(&h.path).expect_err("a server is listening");
    assert!(
        matches!(error, IpcError::AlreadyListening { .. }),
        "{error:?}"
    );
    assert_eq!(
        error.to_string(),
        format!(
            "another ldlm-server is already listening on {}",
            h.path.display()
        )
    );
    // The first server is unharmed.
    assert!(h.list().await.is_empty());
    h.stop().await;
}

#[tokio::test]
async fn a_stale_socket_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stale.sock");
    // A socket file with nobody behind it, as a crash leaves.
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    assert!(StdUnixStream::connect(&path).is_err());
    let listener = bind(&path).expect("stale socket replaced");
    let accepted = tokio::spawn(async move { listener.accept().await.map(|_| ()) });
    tokio::task::spawn_blocking({
        let path = path.clone();
        move || StdUnixStream::connect(path).expect("new socket answers")
    })
    .await
    .unwrap();
    accepted.await.unwrap().expect("accepted");
}

#[tokio::test]
async fn a_regular_file_is_never_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("important.txt");
    std::fs::write(&path, b"precious data").unwrap();
    let error = bind(&path).expect_err("not a socket");
    assert!(matches!(error, IpcError::NotASocket { .. }), "{error:?}");
    assert!(error.to_string().contains(&path.display().to_string()));
    assert_eq!(std::fs::read(&path).unwrap(), b"precious data");

    let sub = dir.path().join("a-directory");
    std::fs::create_dir(&sub).unwrap();
    assert!(matches!(bind(&sub), Err(IpcError::NotASocket { .. })));
    assert!(sub.is_dir());
}

#[tokio::test]
async fn a_missing_directory_is_a_clear_error() {
    let path = Path::new("/nonexistent-ldlm-dir/ldlm-ipc.sock");
    let error = bind(path).expect_err("no such directory");
    assert!(
        error
            .to_string()
            .contains("/nonexistent-ldlm-dir/ldlm-ipc.sock"),
        "{error}"
    );
}

#[test]
fn client_without_server_is_a_connect_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("missing.sock");
    let error = request(&path, &Request::List, TIMEOUT).expect_err("nothing there");
    assert!(
        matches!(error, ldlm_ipc::ClientError::Connect { .. }),
        "{error:?}"
    );
    assert!(error.to_string().contains("missing.sock"), "{error}");
}
