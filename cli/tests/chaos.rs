//! Chaos: many clients over gRPC and REST take, refresh and release
//! size-1 locks with random wait and lease timeouts; some drop their connections abruptly; the
//! server is killed with SIGKILL and restarted on its state file several times. A checker that
//! knows only what clients observed fails the test on any mutual-exclusion violation, any lost
//! acknowledged grant and any fencing token that goes backwards or repeats.
//!
//! # The checker
//!
//! Every client records, per hold, when it sent the request (`sent`) and when the grant was
//! acknowledged (`acked`), the lease `L`, and when the hold ended from its point of view
//! (unlock sent, connection dropped). The server's lease deadline lies in
//! `[sent + L, acked + L]`. A hold is *certainly live* at time `t` if it was acknowledged
//! before `t`, `t < sent + L`, and it had not ended by `t`. A new grant of the same name whose
//! request was sent at `s2` and acknowledged at `a2` was made somewhere in `[s2, a2]`: if some
//! other hold is certainly live over that whole interval, two clients held the lock at once.
//! A lost acknowledged grant shows up the same way: someone else is granted a lock that is
//! certainly still held.
//!
//! **Across restarts** a client ends its holds when it reconnects (it cannot tell a restart
//! from a dropped connection), so this test checks mutual exclusion and fencing tokens across
//! crashes, not that each acknowledged hold survives one: `crash.rs` and
//! `tests/e2e/persistence.rs` check that. Restored locks come back with a lease of
//! `--default_lock_timeout` (3 s, no shorter than any `L` here) from the restart.
//!
//! The run lasts `LDLM_CHAOS_SECS` seconds (default 12 in CI; run longer by hand).
//! `LDLM_CHAOS_WITHOUT_STATE_FILE=1` runs the same clients against a server without a state
//! file, to see the checker catch what a crash then loses: the test fails, listing the
//! violations.

mod support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use ldlm_proto::ldlm::ldlm_client::LdlmClient;
use ldlm_proto::ldlm::{LockRequest, LockResponse, RenewRequest, TryLockRequest, UnlockRequest};
use support::Process;
use support::Rng;
use tonic::transport::Channel;

const NAMES: usize = 24;

#[derive(Clone, Debug)]
struct Hold {
    client: usize,
    token: u64,
    sent: Instant,
    acked: Instant,
    lease: Duration,
    ended: Option<Instant>,
}

impl Hold {
    /// Certainly held by its client over all of `[from, to]`.
    fn certainly_live(&self, from: Instant, to: Instant) -> bool {
        self.acked < from && to < self.sent + self.lease && self.ended.is_none_or(|e| e > to)
    }
}

#[derive(Default)]
struct Checker {
    holds: HashMap<String, Vec<Hold>>,
    violations: Vec<String>,
    grants: usize,
}

impl Checker {
    fn granted(&mut self, name: &str, hold: Hold) -> usize {
        self.grants += 1;
        let holds = self.holds.entry(name.to_string()).or_default();
        for other in holds.iter() {
            if other.certainly_live(hold.sent, hold.acked) {
                self.violations.push(format!(
                    "{name}: client {} was granted token {} while client {} certainly held token {}",
                    hold.client, hold.token, other.client, other.token
                ));
            }
            if other.token == hold.token {
                self.violations
                    .push(format!("{name}: token {} granted twice", hold.token));
            }
            if other.acked < hold.sent && other.token > hold.token {
                self.violations.push(format!(
                    "{name}: token went backwards: {} after {}",
                    hold.token, other.token
                ));
            }
        }
        holds.push(hold);
        holds.len() - 1
    }

    fn ended(&mut self, name: &str, index: usize, at: Instant) {
        if let Some(hold) = self.holds.get_mut(name).and_then(|h| h.get_mut(index)) {
            hold.ended.get_or_insert(at);
        }
    }
}

/// A minimal REST client: one keep-alive connection and its session cookie.
struct Rest {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    cookie: String,
}

impl Rest {
    async fn connect(addr: &str) -> Option<Rest> {
        let stream = tokio::net::TcpStream::connect(addr).await.ok()?;
        let io = hyper_util::rt::TokioIo::new(stream);
        let (sender, connection) = hyper::client::conn::http1::handshake(io).await.ok()?;
        tokio::spawn(connection);
        let mut rest = Rest {
            sender,
            cookie: String::new(),
        };
        let (status, _) = rest.call("/session", "").await?;
        (status == 201).then_some(rest)
    }

    async fn call(&mut self, path: &str, body: &str) -> Option<(u16, serde_json::Value)> {
        let request = hyper::Request::post(path)
            .header("host", "localhost")
            .header("cookie", &self.cookie)
            .body(Full::new(Bytes::from(body.to_string())))
            .ok()?;
        self.sender.ready().await.ok()?;
        let response =
            tokio::time::timeout(Duration::from_secs(3), self.sender.send_request(request))
                .await
                .ok()?
                .ok()?;
        let status = response.status().as_u16();
        if let Some(cookie) = response
            .headers()
            .get("set-cookie")
            .and_then(|v| v.to_str().ok())
        {
            self.cookie = cookie.split(';').next().unwrap_or_default().to_string();
        }
        let body = response.into_body().collect().await.ok()?.to_bytes();
        Some((
            status,
            serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
        ))
    }
}

async fn grpc(addr: &str) -> Option<LdlmClient<Channel>> {
    let channel = Channel::from_shared(format!("http://{addr}"))
        .ok()?
        .connect_timeout(Duration::from_secs(1))
        .timeout(Duration::from_secs(4))
        .connect()
        .await
        .ok()?;
    Some(LdlmClient::new(channel))
}

/// One client's loop until `stop`: random operations on random names; reconnects after
/// errors (server killed) and sometimes drops its connection on purpose.
async fn client(
    id: usize,
    addr: Arc<Mutex<String>>,
    checker: Arc<Mutex<Checker>>,
    stop: Arc<AtomicBool>,
) {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ ((id as u64 + 1) * 0x1000_0001));
    let use_rest = id % 4 == 3;
    // name → (key, index in the checker)
    let mut held: HashMap<String, (String, usize)> = HashMap::new();
    while !stop.load(Ordering::Relaxed) {
        let address = addr.lock().expect("addr").clone();
        // A (re)connection is a new session: whatever the old one held ended with it, from
        // this client's point of view, when it stopped using it.
        let now = Instant::now();
        for (name, (_, index)) in held.drain() {
            checker.lock().expect("checker").ended(&name, index, now);
        }
        let (mut g, mut r) = (None, None);
        if use_rest {
            r = Rest::connect(&address).await;
        } else {
            g = grpc(&address).await;
        }
        if g.is_none() && r.is_none() {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        }
        let ops = 20 + rng.below(60);
        for _ in 0..ops {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            let name = format!("chaos-{}", rng.below(NAMES as u64));
            let lease = 1 + rng.below(3) as i32;
            let sent = Instant::now();
            let ok = match (held.get(&name).cloned(), rng.below(10)) {
                (Some((key, index)), 0..=4) => {
                    // Release: the hold ends (for the checker) before the request is sent.
                    checker.lock().expect("checker").ended(&name, index, sent);
                    held.remove(&name);
                    let body = format!(r#"{{"name":"{name}","key":"{key}"}}"#);
                    match (&mut g, &mut r) {
                        (Some(g), _) => g
                            .unlock(UnlockRequest {
                                name: name.clone(),
                                key,
                            })
                            .await
                            .is_ok(),
                        (_, Some(r)) => r.call("/v1/unlock", &body).await.is_some(),
                        _ => false,
                    }
                }
                (Some((key, index)), _) => {
                    let body = format!(
                        r#"{{"name":"{name}","key":"{key}","lock_timeout_seconds":{lease}}}"#
                    );
                    let refreshed = match (&mut g, &mut r) {
                        (Some(g), _) => g
                            .renew(RenewRequest {
                                name: name.clone(),
                                key,
                                lock_timeout_seconds: lease,
                            })
                            .await
                            .map(|r| r.into_inner().locked),
                        (_, Some(r)) => r
                            .call("/v1/renew", &body)
                            .await
                            .map(|(_, b)| b["locked"] == true)
                            .ok_or_else(|| tonic::Status::unavailable("rest")),
                        _ => Err(tonic::Status::unavailable("none")),
                    };
                    match refreshed {
                        Ok(true) => {
                            // The lease now ends no earlier than sent + lease: model the refresh
                            // as the old hold ending and a new one starting (same token).
                            let mut c = checker.lock().expect("checker");
                            let old = c.holds[&name][index].clone();
                            c.ended(&name, index, sent);
                            let renewed = Hold {
                                sent,
                                acked: Instant::now(),
                                lease: Duration::from_secs(lease as u64),
                                ended: None,
                                ..old
                            };
                            let holds = c.holds.get_mut(&name).expect("exists");
                            holds.push(renewed);
                            let new_index = holds.len() - 1;
                            drop(c);
                            held.insert(name.clone(), (held_key(&held, &name), new_index));
                            true
                        }
                        Ok(false) => {
                            // Expired before we refreshed it: it is gone.
                            held.remove(&name);
                            true
                        }
                        Err(_) => false,
                    }
                }
                (None, n) => {
                    let (locked, key, token) = match (&mut g, &mut r) {
                        (Some(g), _) if n < 5 => grpc_outcome(
                            g.lock(LockRequest {
                                name: name.clone(),
                                lock_timeout_seconds: Some(lease),
                                wait_timeout_seconds: Some(1),
                                size: None,
                            })
                            .await,
                        ),
                        (Some(g), _) => grpc_outcome(
                            g.try_lock(TryLockRequest {
                                name: name.clone(),
                                lock_timeout_seconds: Some(lease),
                                size: None,
                            })
                            .await,
                        ),
                        (_, Some(r)) => {
                            let body =
                                format!(r#"{{"name":"{name}","lock_timeout_seconds":{lease}}}"#);
                            match r.call("/v1/lock", &body).await {
                                Some((200, b)) if b["locked"] == true => (
                                    true,
                                    b["key"].as_str().unwrap_or_default().to_string(),
                                    b["fencingToken"]
                                        .as_str()
                                        .and_then(|t| t.parse().ok())
                                        .unwrap_or(0),
                                ),
                                _ => (false, String::new(), 0),
                            }
                        }
                        _ => (false, String::new(), 0),
                    };
                    if locked {
                        let hold = Hold {
                            client: id,
                            token,
                            sent,
                            acked: Instant::now(),
                            lease: Duration::from_secs(lease as u64),
                            ended: None,
                        };
                        let index = checker.lock().expect("checker").granted(&name, hold);
                        held.insert(name, (key, index));
                    }
                    true
                }
            };
            if !ok {
                break;
            }
        }
        // Sometimes end the connection abruptly (drop it) mid-way through holding locks.
        drop(g);
        drop(r);
    }
}

fn held_key(held: &HashMap<String, (String, usize)>, name: &str) -> String {
    held.get(name).map(|(k, _)| k.clone()).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_keeps_mutual_exclusion_across_crashes() {
    let seconds: u64 = std::env::var("LDLM_CHAOS_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(12);
    let dir = tempfile::tempdir().expect("tempdir");
    let state = format!("--state_file={}", dir.path().join("chaos.state").display());
    let mut args = vec![
        "--rest_listen_address=127.0.0.1:0",
        // At least the longest lease the clients ask for (see the module docs).
        "--default_lock_timeout=3s",
    ];
    if std::env::var_os("LDLM_CHAOS_WITHOUT_STATE_FILE").is_none() {
        args.push(state.as_str());
    }
    let mut server = Process::start(&args);
    let addr = Arc::new(Mutex::new(server.grpc_addr.clone()));
    let rest_addr = Arc::new(Mutex::new(server.rest_addr.clone().expect("rest")));
    let checker = Arc::new(Mutex::new(Checker::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for id in 0..12 {
        let address = if id % 4 == 3 {
            rest_addr.clone()
        } else {
            addr.clone()
        };
        clients.push(tokio::spawn(client(
            id,
            address,
            checker.clone(),
            stop.clone(),
        )));
    }
    let started = Instant::now();
    let mut crashes = 0;
    while started.elapsed() < Duration::from_secs(seconds) {
        tokio::time::sleep(Duration::from_millis(2500)).await;
        server.signal("KILL");
        server.wait(Duration::from_secs(5));
        crashes += 1;
        // Restart on the same ports is not possible (port 0): clients follow the new address.
        server = Process::start(&args);
        *addr.lock().expect("addr") = server.grpc_addr.clone();
        *rest_addr.lock().expect("addr") = server.rest_addr.clone().expect("rest");
    }
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.expect("client task");
    }
    let checker = checker.lock().expect("checker");
    assert!(crashes >= 2, "the server was killed only {crashes} times");
    assert!(
        checker.grants > 50,
        "too little load to mean anything: {} grants",
        checker.grants
    );
    assert!(
        checker.violations.is_empty(),
        "{} violations in {} grants over {crashes} crashes:\n{}",
        checker.violations.len(),
        checker.grants,
        checker.violations.join("\n")
    );
    eprintln!(
        "chaos: {} grants, {crashes} crashes, 0 violations",
        checker.grants
    );
}

/// The checker itself: it flags a grant made while another hold is certainly live, a repeated
/// token and a token that goes backwards, and accepts a grant after the previous hold ended.
#[test]
fn the_checker_catches_what_it_must() {
    let t0 = Instant::now();
    let at = |ms: u64| t0 + Duration::from_millis(ms);
    let hold = |client, token, sent, acked| Hold {
        client,
        token,
        sent: at(sent),
        acked: at(acked),
        lease: Duration::from_secs(5),
        ended: None,
    };
    let mut checker = Checker::default();
    let first = checker.granted("n", hold(0, 10, 0, 10));
    checker.granted("n", hold(1, 11, 100, 110));
    assert_eq!(checker.violations.len(), 1, "{:?}", checker.violations);

    let mut checker = Checker::default();
    let first_index = checker.granted("n", hold(0, 10, 0, 10));
    assert_eq!(first, first_index);
    checker.ended("n", first_index, at(50));
    checker.granted("n", hold(1, 11, 100, 110));
    assert!(checker.violations.is_empty(), "{:?}", checker.violations);
    checker.granted("n", hold(2, 11, 6000, 6010));
    checker.granted("n", hold(3, 9, 7000, 7010));
    let all = checker.violations.join("\n");
    for expected in [
        "token 11 granted twice",
        "token went backwards: 9 after 11",
        "client 3 was granted token 9 while client 2 certainly held token 11",
    ] {
        assert!(all.contains(expected), "missing {expected:?} in {all}");
    }
}

/// A gRPC Lock/TryLock answer as (locked, key, fencing token); a failed call holds nothing.
fn grpc_outcome(
    result: Result<tonic::Response<LockResponse>, tonic::Status>,
) -> (bool, String, u64) {
    match result {
        Ok(r) => {
            let r = r.into_inner();
            (r.locked, r.key, r.fencing_token)
        }
        Err(_) => (false, String::new(), 0),
    }
}
