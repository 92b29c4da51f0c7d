//! The cluster under faults: three `ldlm-server` processes, gRPC clients spread over them doing
//! random TryLock / Lock / Unlock / Renew on locks of size 1 and 2 (and dropping connections),
//! while a fault injector kills nodes with SIGKILL and restarts them on their data directory,
//! and pauses them (SIGSTOP/SIGCONT) past the session grace. Every client records what it was
//! told; the checker (`support/history.rs`) then asks whether any promise was broken:
//! exclusion, fencing tokens, and — after the final heal — that every hold still believed in
//! is held under its key.
//!
//! **Not run by CI yet: it still finds a bug.** On some seeds (e.g. `LDLM_FAULT_SEED=15`)
//! locks stay held after the final heal although no client believes in them: a release is
//! lost somewhere across kills and pauses (a leaked lock, held until an admin unlocks it). Until
//! that is fixed the run is `#[ignore]`d, so that CI stays a signal; the checker's own tests
//! run in CI. Run it with:
//!
//! ```sh
//! LDLM_FAULT_SECONDS=45 LDLM_FAULT_SEED=15 cargo test -p ldlm-cli --test faults -- --ignored --nocapture
//! ```

#[path = "support/history.rs"]
mod history;
mod support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use history::Hold;
use ldlm_proto::ldlm::ldlm_client::LdlmClient;
use ldlm_proto::ldlm::{LockRequest, RenewRequest, TryLockRequest, UnlockRequest};
use support::Rng;
use support::cluster::Cluster;
use tonic::transport::Channel;

/// Lock names and their sizes: two exclusive locks, two semaphores of 2.
const NAMES: [(&str, i32); 4] = [("m0", 1), ("m1", 1), ("s0", 2), ("s1", 2)];
const CLIENTS: usize = 6;

type History = Arc<Mutex<Vec<Hold>>>;

/// A client that hears nothing from its node for this long counts its holds as lost and moves
/// on. It must be under half the session grace (2 s here): a paused node cannot close its
/// clients' connections, and its clients' locks are released once it has been silent for the
/// grace, so a client that believed longer than that without hearing from its node would
/// believe in a lock someone else holds. (A real client's lease or keepalive bounds it so.)
const CALL_TIMEOUT: Duration = Duration::from_millis(900);

fn request<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(CALL_TIMEOUT);
    request
}

/// Ends every hold of `client` still believed in, at `at`, for `why`.
fn lose_all(
    history: &History,
    held: &mut HashMap<String, (String, usize)>,
    at: Instant,
    why: &str,
) {
    let mut history = history.lock().expect("history");
    for (_, (_, index)) in held.drain() {
        history[index].until.get_or_insert(at);
        history[index].ended.get_or_insert_with(|| why.to_owned());
    }
}

async fn run_client(
    id: usize,
    nodes: Vec<String>,
    seed: u64,
    history: History,
    stop: Arc<AtomicBool>,
) -> Option<LdlmClient<Channel>> {
    let mut rng = Rng((seed ^ (id as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)) | 1);
    let mut held: HashMap<String, (String, usize)> = HashMap::new();
    while !stop.load(Ordering::Relaxed) {
        let node = &nodes[(id + rng.below(nodes.len() as u64) as usize) % nodes.len()];
        let connected = Channel::from_shared(format!("http://{node}"))
            .expect("uri")
            .connect_timeout(Duration::from_millis(500))
            .connect()
            .await;
        let Ok(channel) = connected else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let mut grpc = LdlmClient::new(channel);
        let mut failed = false;
        // When this connection last answered. A connection can be closed under the client
        // (its node cut off, or gone): the client learns it only at its next call, so its
        // holds count as lost from the last moment it is known to have been open.
        let mut last_answer = Instant::now();
        // One connection is one session: on any failure the client counts every hold as lost
        // (its connection may be closed) and reconnects, possibly elsewhere.
        while !stop.load(Ordering::Relaxed) {
            let (name, size) = NAMES[rng.below(NAMES.len() as u64) as usize];
            let mut why = String::from("a call failed");
            let mut answered = true;
            let ok = match rng.below(10) {
                0..=3 if !held.contains_key(name) => {
                    let asked = Instant::now();
                    let answer = grpc
                        .try_lock(request(TryLockRequest {
                            name: name.into(),
                            size: Some(size),
                            ..Default::default()
                        }))
                        .await;
                    why = format!("acquire: {answer:?}");
                    granted(&history, id, name, size, asked, answer, &mut held)
                }
                4 if !held.contains_key(name) => {
                    let asked = Instant::now();
                    let answer = grpc
                        .lock(request(LockRequest {
                            name: name.into(),
                            size: Some(size),
                            wait_timeout_seconds: Some(1),
                            ..Default::default()
                        }))
                        .await;
                    why = format!("acquire: {answer:?}");
                    granted(&history, id, name, size, asked, answer, &mut held)
                }
                5..=7 => {
                    let Some(name) = held.keys().next().cloned() else {
                        continue;
                    };
                    let (key, index) = held.remove(&name).expect("held");
                    // The client stops using the lock when it sends the unlock.
                    history.lock().expect("history")[index].until = Some(Instant::now());
                    let answer = grpc.unlock(request(UnlockRequest { name, key })).await;
                    let ok = answer.as_ref().is_ok_and(|r| r.get_ref().unlocked);
                    history.lock().expect("history")[index].ended =
                        Some(format!("unlocked: {answer:?}"));
                    ok
                }
                8 => {
                    let Some((name, (key, _))) = held.iter().next() else {
                        continue;
                    };
                    let answer = grpc
                        .renew(request(RenewRequest {
                            name: name.clone(),
                            key: key.clone(),
                            lock_timeout_seconds: 30,
                        }))
                        .await;
                    why = format!("renew: {answer:?}");
                    answer.is_ok_and(|r| r.into_inner().locked)
                }
                _ => {
                    // Drop the connection on purpose now and then. Idling proves nothing about
                    // the connection: it may have closed meanwhile.
                    why = "dropped the connection".into();
                    answered = false;
                    if rng.below(4) == 0 {
                        false
                    } else {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        true
                    }
                }
            };
            if !ok {
                lose_all(&history, &mut held, last_answer, &why);
                failed = true;
                break;
            }
            if answered {
                last_answer = Instant::now();
            }
        }
        if !failed {
            // Stopped: the connection stays open (and its holds believed in) until the final
            // check is done.
            return Some(grpc);
        }
    }
    None
}

/// Records a grant answer; false if the call failed (not a refusal: a busy TryLock or a wait
/// timeout is an answer).
fn granted(
    history: &History,
    client: usize,
    name: &str,
    size: i32,
    asked: Instant,
    answer: Result<tonic::Response<ldlm_proto::ldlm::LockResponse>, tonic::Status>,
    held: &mut HashMap<String, (String, usize)>,
) -> bool {
    let Ok(answer) = answer else {
        return false;
    };
    let answer = answer.into_inner();
    if answer.locked {
        let mut history = history.lock().expect("history");
        history.push(Hold {
            client,
            name: name.to_owned(),
            size: size as usize,
            key: answer.key.clone(),
            token: answer.fencing_token,
            asked,
            from: Instant::now(),
            until: None,
            ended: None,
        });
        held.insert(name.to_owned(), (answer.key, history.len() - 1));
        return true;
    }
    // "Unavailable"-like answers come as statuses; lock-domain errors here are refusals.
    answer
        .error
        .is_none_or(|e| e.code == 3 /* LockWaitTimeout */)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "finds leaked locks on some seeds (e.g. 15): a known cluster bug, see the module doc"]
async fn no_promise_is_broken_under_kills_and_pauses() {
    let seconds: u64 = std::env::var("LDLM_FAULT_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(45);
    let seed: u64 = std::env::var("LDLM_FAULT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5EED_1D1D);
    eprintln!("fault run: {seconds} s, seed {seed} (LDLM_FAULT_SEED={seed} replays it)");
    let mut cluster = Cluster::start_with(&["--cluster_session_grace=2s"]);
    cluster.leader();
    let nodes: Vec<String> = (1..=3).map(|id| cluster.grpc(id)).collect();
    let history: History = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|id| {
            tokio::spawn(run_client(
                id,
                nodes.clone(),
                seed,
                history.clone(),
                stop.clone(),
            ))
        })
        .collect();

    let mut rng = Rng(seed | 1);
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let (mut kills, mut pauses) = (0, 0);
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(1_500 + rng.below(1_500))).await;
        let victim = 1 + rng.below(3);
        if rng.below(2) == 0 {
            let mut process = cluster.nodes[(victim - 1) as usize]
                .process
                .take()
                .expect("running");
            process.signal("KILL");
            process.wait(Duration::from_secs(5));
            tokio::time::sleep(Duration::from_millis(500 + rng.below(1_000))).await;
            cluster.launch(victim);
            kills += 1;
        } else {
            let process = cluster.nodes[(victim - 1) as usize]
                .process
                .as_ref()
                .expect("running");
            process.signal("STOP");
            // Sometimes past the session grace (the node's clients lose their locks).
            tokio::time::sleep(Duration::from_millis(500 + rng.below(2_500))).await;
            process.signal("CONT");
            pauses += 1;
        }
    }
    // Final heal: everything runs; the clients stop; the cluster settles.
    stop.store(true, Ordering::Relaxed);
    let mut connections = Vec::new();
    for client in clients {
        if let Ok(Ok(connection)) = tokio::time::timeout(Duration::from_secs(10), client).await {
            connections.push(connection);
        }
    }
    let end = Instant::now();
    let leader = cluster.leader();
    let holds = history.lock().expect("history").clone();
    // The cluster's holds, read through the leader until the releases of connections that
    // were dropped have settled (or 15 s have passed): then it must hold exactly what the
    // clients still believe in.
    let settling = Instant::now();
    let (listed, entries) = loop {
        let entries = list(&cluster, leader).await;
        let listed: Vec<(String, String)> = entries
            .iter()
            .map(|e| {
                (
                    e["name"].as_str().unwrap_or_default().to_owned(),
                    e["key"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect();
        if history::check_no_stray(&holds, &listed).is_empty()
            || settling.elapsed() > Duration::from_secs(15)
        {
            break (listed, entries);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let mut violations = history::check(&holds, end);
    violations.extend(history::check_final(&holds, &listed));
    violations.extend(history::check_no_stray(&holds, &listed));
    drop(connections);
    eprintln!(
        "fault run: {} grants recorded, {kills} kills, {pauses} pauses, {} violations",
        holds.len(),
        violations.len()
    );
    for violation in &violations {
        eprintln!("VIOLATION {}:", violation.what);
        for hold in &violation.holds {
            eprintln!("  {hold:?}");
            for entry in entries.iter().filter(|e| e["key"] == hold.key.as_str()) {
                eprintln!("  held by the cluster as {entry}");
            }
        }
    }
    assert!(
        violations.is_empty(),
        "seed {seed}: {} violations",
        violations.len()
    );
    assert!(
        holds.len() > 50,
        "the clients made too little progress: {}",
        holds.len()
    );
}

/// The cluster's holds (`ldlm-lock list --json` entries), read through node `node` (retried: a
/// node that was just resumed answers UNAVAILABLE until it is back in contact).
async fn list(cluster: &Cluster, node: u64) -> Vec<serde_json::Value> {
    let started = Instant::now();
    let output = loop {
        let output = std::process::Command::new(support::cluster::LOCK)
            .args([
                "-s",
                &cluster.node(node).ipc.display().to_string(),
                "list",
                "--json",
            ])
            .output()
            .expect("ldlm-lock runs");
        if output.status.success() {
            break output;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "ldlm-lock list keeps failing: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    serde_json::from_slice(&output.stdout).expect("a JSON list")
}

// The checker must be able to fail: broken histories are caught.

fn at(base: Instant, ms: u64) -> Instant {
    base + Duration::from_millis(ms)
}

fn hold(
    base: Instant,
    client: usize,
    size: usize,
    token: u64,
    from: u64,
    until: Option<u64>,
) -> Hold {
    Hold {
        client,
        name: "x".into(),
        size,
        key: format!("k{token}"),
        token,
        asked: at(base, from),
        from: at(base, from),
        until: until.map(|u| at(base, u)),
        ended: None,
    }
}

#[test]
fn the_checker_passes_a_correct_history() {
    let base = Instant::now();
    let holds = [
        hold(base, 1, 2, 1, 0, Some(10)),
        hold(base, 2, 2, 2, 5, None),
        hold(base, 3, 2, 3, 11, Some(20)),
    ];
    assert!(history::check(&holds, at(base, 100)).is_empty());
    let listed = [("x".to_owned(), "k2".to_owned())];
    assert!(history::check_final(&holds, &listed).is_empty());
}

#[test]
fn the_checker_catches_two_holders_of_an_exclusive_lock() {
    let base = Instant::now();
    let holds = [
        hold(base, 1, 1, 1, 0, Some(10)),
        hold(base, 2, 1, 2, 5, Some(20)),
    ];
    let violations = history::check(&holds, at(base, 100));
    assert_eq!(violations.len(), 1, "{violations:?}");
    assert_eq!(
        violations[0].holds.len(),
        2,
        "the smallest history: the two holds"
    );
}

#[test]
fn the_checker_catches_a_token_going_backwards_and_a_lost_hold() {
    let base = Instant::now();
    let holds = [
        hold(base, 1, 1, 5, 0, Some(10)),
        hold(base, 2, 1, 3, 11, None),
    ];
    let violations = history::check(&holds, at(base, 100));
    assert!(
        violations.iter().any(|v| v.what.contains("token")),
        "{violations:?}"
    );
    assert_eq!(history::check_final(&holds, &[]).len(), 1, "k3 is not held");
    let undone = [("x".to_owned(), "k5".to_owned())];
    assert_eq!(
        history::check_no_stray(&holds, &undone).len(),
        1,
        "k5 was let go, yet it is held"
    );
}
