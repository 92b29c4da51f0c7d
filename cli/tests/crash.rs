//! Crash safety: the server is killed with SIGKILL, repeatedly, while clients are
//! acquiring locks. After every restart each acknowledged grant that was not released is held
//! again — under the very key the client was given — and fencing tokens only grow.

mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ldlm_proto::ldlm::ldlm_client::LdlmClient;
use ldlm_proto::ldlm::{TryLockRequest, UnlockRequest};
use support::Process;
use tonic::transport::Channel;

async fn client(addr: &str) -> LdlmClient<Channel> {
    let channel = Channel::from_shared(format!("http://{addr}"))
        .expect("uri")
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(2))
        .connect()
        .await
        .expect("connects");
    LdlmClient::new(channel)
}

/// name → (key, fencing token) of every grant a client was told about and did not release.
type Acknowledged = Arc<Mutex<HashMap<String, (String, u64)>>>;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_grants_survive_kill_9_under_load() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = format!("--state_file={}", dir.path().join("ldlm.state").display());
    let acknowledged: Acknowledged = Arc::default();
    let mut highest_token = 0u64;

    for round in 0..4 {
        let mut server = Process::start(&[&state, "--default_lock_timeout=5m"]);
        let addr = server.grpc_addr.clone();

        // Everything acknowledged before the crash is held again, under its own key.
        let mut checker = client(&addr).await;
        let held: Vec<(String, (String, u64))> = acknowledged
            .lock()
            .expect("lock")
            .iter()
            .map(|(n, v)| (n.clone(), v.clone()))
            .collect();
        for (name, (key, _)) in held.iter().step_by(2) {
            let busy = checker
                .try_lock(TryLockRequest {
                    name: name.clone(),
                    ..Default::default()
                })
                .await
                .expect("rpc")
                .into_inner();
            assert!(
                !busy.locked,
                "round {round}: acknowledged lock {name} was lost"
            );
            let unlocked = checker
                .unlock(UnlockRequest {
                    name: name.clone(),
                    key: key.clone(),
                })
                .await
                .expect("rpc")
                .into_inner();
            assert!(
                unlocked.unlocked,
                "round {round}: {name} is not held under its key: {unlocked:?}"
            );
            acknowledged.lock().expect("lock").remove(name);
        }

        // Load: 8 connections acquire distinct locks until the server dies under them.
        let mut tasks = Vec::new();
        for t in 0..8 {
            let addr = addr.clone();
            let acknowledged = acknowledged.clone();
            tasks.push(tokio::spawn(async move {
                let mut grpc = client(&addr).await;
                let mut tokens = Vec::new();
                for i in 0.. {
                    let name = format!("r{round}-t{t}-{i}");
                    let request = TryLockRequest {
                        name: name.clone(),
                        ..Default::default()
                    };
                    match grpc.try_lock(request).await {
                        Ok(response) => {
                            let response = response.into_inner();
                            assert!(response.locked, "{response:?}");
                            tokens.push(response.fencing_token);
                            acknowledged
                                .lock()
                                .expect("lock")
                                .insert(name, (response.key, response.fencing_token));
                        }
                        Err(_) => break,
                    }
                }
                tokens
            }));
        }
        tokio::time::sleep(Duration::from_millis(300 + 100 * round)).await;
        server.signal("KILL");
        server.wait(Duration::from_secs(5));
        let mut granted = 0;
        for task in tasks {
            let tokens = task.await.expect("client task");
            granted += tokens.len();
            for token in tokens {
                assert!(
                    token > highest_token,
                    "round {round}: token {token} is not above {highest_token}"
                );
            }
        }
        assert!(
            granted > 0,
            "round {round}: the load acquired nothing before the kill"
        );
        highest_token = acknowledged
            .lock()
            .expect("lock")
            .values()
            .map(|v| v.1)
            .max()
            .unwrap_or(highest_token);
    }

    // A final restart: every remaining acknowledged grant is held; new tokens continue above.
    let server = Process::start(&[&state]);
    let mut checker = client(&server.grpc_addr).await;
    let remaining: Vec<(String, (String, u64))> = acknowledged
        .lock()
        .expect("lock")
        .iter()
        .map(|(n, v)| (n.clone(), v.clone()))
        .collect();
    assert!(!remaining.is_empty());
    for (name, (key, _)) in remaining {
        let unlocked = checker
            .unlock(UnlockRequest {
                name: name.clone(),
                key,
            })
            .await
            .expect("rpc")
            .into_inner();
        assert!(
            unlocked.unlocked,
            "{name} lost after the last crash: {unlocked:?}"
        );
    }
    let fresh = checker
        .try_lock(TryLockRequest {
            name: "after".into(),
            ..Default::default()
        })
        .await
        .expect("rpc")
        .into_inner();
    assert!(
        fresh.fencing_token > highest_token,
        "tokens went backwards after restarts"
    );
}

#[test]
fn damaged_state_files_stop_startup_with_a_clear_message() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("ldlm.state");
    std::fs::write(&path, b"definitely not a state file").expect("write");
    let (code, _, stderr) = support::run(
        &[
            "--listen_address=127.0.0.1:0",
            "--ipc_socket_file=",
            &format!("--state_file={}", path.display()),
        ],
        &[],
    );
    assert_eq!(code, 1);
    assert!(
        stderr.contains(&path.display().to_string()) && stderr.contains("damaged"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read(&path).expect("read"),
        b"definitely not a state file",
        "left untouched"
    );
}
