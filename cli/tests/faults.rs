//! The cluster under faults: real `ldlm-server` processes (3 or 5), each in a network
//! namespace of its own (`support/netns.rs`: needs root), with gRPC and REST clients spread
//! over all of them doing random TryLock / Lock / Unlock / Renew on locks of size 1 and 2, while
//! a fault injector, one fault at a time:
//!
//! - kills the leader or a follower with SIGKILL and restarts it on its data directory (now and
//!   then after long enough that it must catch up from a snapshot);
//! - pauses a node with SIGSTOP past or within the session grace, then SIGCONT;
//! - isolates a node from the other nodes (its clients still reach it), then heals;
//! - splits a 5-node cluster 2 / 3, then heals;
//! - drops what one node sends another (the leader and a follower, either way), then heals;
//! - fails a node's disk (the leader or another node: every `fdatasync` it makes returns EIO,
//!   injected with strace), so that the node's next log write stops its Raft core and the
//!   process exits; then restarts it on its data directory.
//!
//! Every client records what it was told; the checker (`support/history.rs`) then asks whether
//! any promise was broken: exclusion, fencing tokens, and — after the final heal — that every
//! hold still believed in is held under its key and nothing else is.
//!
//! How clients decide what they believe:
//! - A **gRPC** client holds its locks through its connection: on any failed call it counts
//!   every hold as lost from the last answer it had (the connection may have been closed any
//!   time after it), drops the connection and reconnects, perhaps elsewhere. A call answers
//!   within [`CALL_TIMEOUT`], under half the session grace: a client that heard nothing from its
//!   node for longer must not go on believing (a real client's lease or keepalive bounds it
//!   so).
//! - A **REST** client holds its locks through its session, which works at every node and
//!   survives failover: it moves to another node with the same cookie when one fails. On a
//!   call whose outcome it cannot know (no answer), it stops believing in its holds and ends
//!   its session (`DELETE /session`, re-sent at node after node until answered), which releases
//!   whatever the unanswered call may have taken.
//!
//! Runs are replayed by seed: the seed is printed and `LDLM_FAULT_SEED` sets it (with the
//! same list of fault kinds: a seed from before the disk failures were added replays only with
//! that version of this file);
//! `LDLM_FAULT_SECONDS` sets the length (CI runs short ones; BENCHMARKS.md lists long runs).
//! The third test runs a deliberately broken leader (it answers before committing) and
//! requires the checker to find violations.

#[path = "support/history.rs"]
mod history;
mod support;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use history::{Hold, Violation};
use http_body_util::{BodyExt, Full};
use ldlm_proto::ldlm::ldlm_client::LdlmClient;
use ldlm_proto::ldlm::{LockRequest, RenewRequest, TryLockRequest, UnlockRequest};
use support::Rng;
use support::cluster::Cluster;
use tonic::transport::Channel;

/// Lock names and their sizes: two exclusive locks, two semaphores of 2.
const NAMES: [(&str, i32); 4] = [("m0", 1), ("m1", 1), ("s0", 2), ("s1", 2)];
const GRPC_CLIENTS: usize = 6;
const REST_CLIENTS: usize = 2;
/// The session grace of the run's nodes.
const GRACE: &str = "--cluster_session_grace=2s";
/// Snapshots often, so that a node kept down for a while catches up from one.
const SNAPSHOTS: &str = "--cluster_snapshot_every=100";

/// How long a client waits for an answer: under half the session grace (see the module doc).
const CALL_TIMEOUT: Duration = Duration::from_millis(900);

type History = Arc<Mutex<Vec<Hold>>>;

/// One fault at a time (see the module doc).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Fault {
    KillLeader,
    KillFollower,
    Pause,
    Isolate,
    Split,
    OneWay,
    DiskFails,
}

/// Every fault kind; a 2/3 split (last) needs 5 nodes.
const EVERY_FAULT: &[Fault] = &[
    Fault::KillLeader,
    Fault::KillFollower,
    Fault::Pause,
    Fault::Isolate,
    Fault::OneWay,
    Fault::DiskFails,
    Fault::Split,
];

/// A run: how many nodes, which faults, how long, which seed; `broken` runs the leader that
/// answers before it commits.
struct Plan {
    nodes: u64,
    faults: &'static [Fault],
    seconds: u64,
    seed: u64,
    broken: bool,
}

impl Plan {
    /// `seconds` and `seed` unless `LDLM_FAULT_SECONDS` / `LDLM_FAULT_SEED` say otherwise.
    fn new(nodes: u64, faults: &'static [Fault], seconds: u64, seed: u64) -> Plan {
        let env = |name: &str| std::env::var(name).ok().and_then(|s| s.parse().ok());
        Plan {
            nodes,
            faults,
            seconds: env("LDLM_FAULT_SECONDS").unwrap_or(seconds),
            seed: env("LDLM_FAULT_SEED").unwrap_or(seed),
            broken: false,
        }
    }
}

/// What a run did and found (it prints the rest: elections, snapshot catch-ups).
struct Report {
    grants: usize,
    violations: Vec<Violation>,
    faults: BTreeMap<Fault, usize>,
}

/// The runs share the machine's two cores: one at a time.
static ONE_RUN_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_promise_is_broken_in_a_3_node_cluster_under_kills_pauses_and_isolation() {
    let plan = Plan::new(3, &EVERY_FAULT[..6], 35, 0x5EED_0003);
    let report = run(&plan).await;
    assert_clean(&plan, &report);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_promise_is_broken_in_a_5_node_cluster_under_splits_and_kills() {
    let plan = Plan::new(5, EVERY_FAULT, 35, 0x5EED_0005);
    let report = run(&plan).await;
    assert_clean(&plan, &report);
}

/// The checker must be able to fail on a real cluster: a leader that answers before it
/// commits loses what it answered when it is killed, and the run must show it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_that_answers_before_committing_is_caught() {
    let mut plan = Plan::new(3, &[Fault::KillLeader], 20, 0x5EED_0B0B);
    plan.broken = true;
    let report = run(&plan).await;
    assert!(
        !report.violations.is_empty(),
        "seed {}: the broken leader went unnoticed ({} grants, {:?})",
        plan.seed,
        report.grants,
        report.faults
    );
}

fn assert_clean(plan: &Plan, report: &Report) {
    assert!(
        report.violations.is_empty(),
        "seed {}: {} violations (replay: LDLM_FAULT_SEED={} LDLM_FAULT_SECONDS={})",
        plan.seed,
        report.violations.len(),
        plan.seed,
        plan.seconds
    );
    assert!(
        report.grants > 50,
        "the clients made too little progress: {} grants",
        report.grants
    );
    for fault in plan.faults {
        assert!(
            report.faults.get(fault).is_some_and(|&n| n > 0) || plan.seconds < 30,
            "no {fault:?} in {} s",
            plan.seconds
        );
    }
}

/// Milliseconds since `t0`, for the fault log.
fn ms(t0: Instant) -> u128 {
    t0.elapsed().as_millis()
}

async fn run(plan: &Plan) -> Report {
    let _alone = ONE_RUN_AT_A_TIME.lock().await;
    let t0 = Instant::now();
    eprintln!(
        "fault run: {} nodes, {} s, seed {} (LDLM_FAULT_SEED={} replays it){}; t0 = {t0:?}",
        plan.nodes,
        plan.seconds,
        plan.seed,
        plan.seed,
        if plan.broken { ", BROKEN leader" } else { "" }
    );
    let env: &[(&str, &str)] = if plan.broken {
        &[("LDLM_TEST_ONLY_ANSWER_BEFORE_COMMIT", "1")]
    } else {
        &[]
    };
    let mut cluster = Cluster::start_partitionable(plan.nodes, &[GRACE, SNAPSHOTS], env);
    let first_leader = cluster.leader();
    let first_term = term(&cluster, first_leader);
    let grpc: Vec<String> = cluster.ids().iter().map(|&id| cluster.grpc(id)).collect();
    let rest: Vec<String> = cluster
        .ids()
        .iter()
        .map(|&id| cluster.rest(id).expect("REST"))
        .collect();
    let history: History = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let grpc_clients: Vec<_> = (0..GRPC_CLIENTS)
        .map(|id| {
            tokio::spawn(grpc_client(
                id,
                grpc.clone(),
                plan.seed,
                history.clone(),
                stop.clone(),
            ))
        })
        .collect();
    let rest_clients: Vec<_> = (0..REST_CLIENTS)
        .map(|i| {
            tokio::spawn(rest_client(
                GRPC_CLIENTS + i,
                rest.clone(),
                plan.seed,
                history.clone(),
                stop.clone(),
            ))
        })
        .collect();

    let mut rng = Rng(plan.seed | 1);
    let deadline = Instant::now() + Duration::from_secs(plan.seconds);
    let mut faults: BTreeMap<Fault, usize> = BTreeMap::new();
    let mut snapshot_installs = 0;
    // The server logs of killed processes, kept for a failing run's report.
    let mut logs: Vec<(String, String)> = Vec::new();
    // Rounds of every fault kind once, in a random order: each kind gets its turn.
    let mut round: Vec<Fault> = Vec::new();
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(1_000 + rng.below(1_500))).await;
        if round.is_empty() {
            round = plan.faults.to_vec();
            for i in (1..round.len()).rev() {
                round.swap(i, rng.below(i as u64 + 1) as usize);
            }
        }
        let fault = round.pop().expect("a fault");
        let leader = current_leader(&cluster);
        let ids = cluster.ids();
        let pick = |rng: &mut Rng, not: Option<u64>| loop {
            let id = ids[rng.below(ids.len() as u64) as usize];
            if Some(id) != not {
                break id;
            }
        };
        match fault {
            Fault::KillLeader | Fault::KillFollower => {
                let victim = match (fault, leader) {
                    (Fault::KillLeader, Some(leader)) => leader,
                    (_, leader) => pick(&mut rng, leader),
                };
                // Now and then down long enough to fall behind a snapshot.
                let down = if rng.below(4) == 0 {
                    3_000 + rng.below(2_000)
                } else {
                    300 + rng.below(1_200)
                };
                eprintln!(
                    "[{} ms] {fault:?}: kill -9 node {victim} (leader {leader:?}), restart in {down} ms",
                    ms(t0)
                );
                let process = cluster.stop(victim, "KILL");
                snapshot_installs += snapshots_installed(&process);
                logs.push((
                    format!("node-{victim}-until-{}ms", ms(t0)),
                    process.log_text(),
                ));
                tokio::time::sleep(Duration::from_millis(down)).await;
                cluster.launch(victim);
            }
            Fault::DiskFails => {
                let victim = match leader {
                    Some(leader) if rng.below(2) == 0 => leader,
                    _ => pick(&mut rng, None),
                };
                let down = 300 + rng.below(1_200);
                eprintln!(
                    "[{} ms] DiskFails: node {victim} (leader {leader:?}), restart {down} ms after it exits",
                    ms(t0)
                );
                let mut strace = cluster.fail_disk(victim);
                let mut process = cluster.take(victim);
                // The clients keep every node writing its log, so the node fails at its next
                // write and exits; it may not, if it writes nothing for that long.
                // Its shutdown may take a graceful shutdown's 7 s for its listeners.
                let exited = exits_within(&mut process, Duration::from_secs(15)).await;
                let _ = strace.kill();
                let _ = strace.wait();
                match exited {
                    // A node whose log cannot be written says so and exits with status 1.
                    Some(code) => assert_eq!(
                        code,
                        Some(1),
                        "node {victim} after its disk failed; log:\n{}",
                        process.log_text()
                    ),
                    None => {
                        assert!(
                            !process.log_text().contains("The cluster node failed"),
                            "node {victim} failed but did not exit within 15 s"
                        );
                        eprintln!(
                            "[{} ms] node {victim} wrote nothing for 15 s; stopping it",
                            ms(t0)
                        );
                        process.signal("KILL");
                        process.wait(Duration::from_secs(5));
                    }
                }
                logs.push((
                    format!("node-{victim}-until-{}ms", ms(t0)),
                    process.log_text(),
                ));
                tokio::time::sleep(Duration::from_millis(down)).await;
                cluster.launch(victim);
            }
            Fault::Pause => {
                let victim = pick(&mut rng, None);
                let pause = 500 + rng.below(2_500);
                eprintln!(
                    "[{} ms] pause node {victim} (leader {leader:?}) for {pause} ms",
                    ms(t0)
                );
                cluster.signal(victim, "STOP");
                tokio::time::sleep(Duration::from_millis(pause)).await;
                cluster.signal(victim, "CONT");
            }
            Fault::OneWay => {
                // Between the leader and another node, in either direction.
                let other = pick(&mut rng, leader);
                let leader = leader.unwrap_or_else(|| pick(&mut rng, Some(other)));
                let (from, to) = if rng.below(2) == 0 {
                    (leader, other)
                } else {
                    (other, leader)
                };
                let cut = 1_000 + rng.below(3_000);
                eprintln!(
                    "[{} ms] OneWay: drop what node {from} sends node {to} for {cut} ms (leader {leader})",
                    ms(t0)
                );
                let network = cluster.network.as_ref().expect("namespaces");
                network.cut(from, to);
                tokio::time::sleep(Duration::from_millis(cut)).await;
                network.heal();
            }
            Fault::Isolate | Fault::Split => {
                let side: Vec<u64> = if fault == Fault::Isolate {
                    vec![pick(&mut rng, None)]
                } else {
                    let a = pick(&mut rng, None);
                    vec![a, pick(&mut rng, Some(a))]
                };
                let cut = 1_000 + rng.below(3_000);
                eprintln!(
                    "[{} ms] {fault:?}: cut nodes {side:?} off the others (leader {leader:?}) for {cut} ms",
                    ms(t0)
                );
                let network = cluster.network.as_ref().expect("namespaces");
                network.split(&side);
                tokio::time::sleep(Duration::from_millis(cut)).await;
                network.heal();
            }
        }
        *faults.entry(fault).or_default() += 1;
    }
    // Final heal: everything runs and is connected; the clients stop; the cluster settles.
    eprintln!("[{} ms] final heal; stopping the clients", ms(t0));
    stop.store(true, Ordering::Relaxed);
    let mut connections = Vec::new();
    for client in grpc_clients {
        if let Ok(Ok(connection)) = tokio::time::timeout(Duration::from_secs(10), client).await {
            connections.push(connection);
        }
    }
    for client in rest_clients {
        let _ = tokio::time::timeout(Duration::from_secs(30), client).await;
    }
    let end = Instant::now();
    let leader = cluster.leader();
    let elections = term(&cluster, leader).saturating_sub(first_term);
    let holds = history.lock().expect("history").clone();
    // The cluster's holds, read through the leader until the releases of connections that
    // were dropped have settled (or 15 s have passed): then it must hold exactly what the
    // clients still believe in.
    let settling = Instant::now();
    let (listed, entries, listed_at) = loop {
        let before = Instant::now();
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
        if history::check_no_stray(&holds, &listed, before).is_empty()
            || settling.elapsed() > Duration::from_secs(15)
        {
            break (listed, entries, (before, Instant::now()));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let mut violations = history::check(&holds, end);
    // Believed in once the listing was back: then the cluster held it throughout the read (its
    // leases end no earlier than the client counts). Listed: believed in when it was asked.
    violations.extend(history::check_final(&holds, &listed, listed_at.1));
    violations.extend(history::check_no_stray(&holds, &listed, listed_at.0));
    drop(connections);
    for node in &cluster.nodes {
        if let Some(process) = &node.process {
            snapshot_installs += snapshots_installed(process);
            logs.push((format!("node-{}-last", node.id), process.log_text()));
        }
    }
    if !violations.is_empty() {
        let dir = std::env::temp_dir().join(format!(
            "ldlm-faults-seed-{}-pid-{}",
            plan.seed,
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).expect("log dir");
        for (name, text) in &logs {
            std::fs::write(dir.join(format!("{name}.log")), text).expect("log file");
        }
        eprintln!("fault run: the nodes' logs are in {}", dir.display());
    }
    eprintln!(
        "fault run: seed {}: {} grants recorded, faults {faults:?}, {elections} elections, \
         {snapshot_installs} snapshot catch-ups, {} violations",
        plan.seed,
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
    Report {
        grants: holds.len(),
        violations,
        faults,
    }
}

/// How `process` exits by itself within `timeout`: `Some(status code)`, or `None` if it is
/// still running (a code of `None` inside is a signal).
async fn exits_within(process: &mut support::Process, timeout: Duration) -> Option<Option<i32>> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Some(status) = process.child.try_wait().expect("try_wait") {
            return Some(status.code());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

/// How many times `process` caught up from the leader's snapshot.
fn snapshots_installed(process: &support::Process) -> usize {
    process
        .log_text()
        .matches("Installed the leader's snapshot")
        .count()
}

/// The leader as some running node sees it now (no waiting).
fn current_leader(cluster: &Cluster) -> Option<u64> {
    cluster
        .nodes
        .iter()
        .filter(|n| n.process.is_some())
        .find_map(|n| cluster.status(n.id).and_then(|s| s["leader"].as_u64()))
}

fn term(cluster: &Cluster, node: u64) -> u64 {
    cluster
        .status(node)
        .and_then(|s| s["term"].as_u64())
        .unwrap_or(0)
}

fn request<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(CALL_TIMEOUT);
    request
}

/// Ends every hold of a client still believed in, at `at`, for `why`.
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

/// A random lease: none for two holds in three, else 2 to 5 s.
fn random_lease(rng: &mut Rng) -> Option<i32> {
    (rng.below(3) == 0).then(|| 2 + rng.below(4) as i32)
}

/// Forgets the holds of `held` whose lease has run out (as the client counts it): the client
/// no longer uses them, and the checker already counts them as ended.
fn forget_expired(history: &History, held: &mut HashMap<String, (String, usize)>) {
    let now = Instant::now();
    let mut history = history.lock().expect("history");
    held.retain(|_, (_, index)| {
        let hold = &mut history[*index];
        let expired = hold.lease_end.is_some_and(|end| end <= now);
        if expired {
            hold.ended = Some("its lease ran out".into());
        }
        !expired
    });
}

/// Records a renewal: the lease runs `secs` from when the renew was sent.
fn record_renewal(history: &History, index: usize, sent: Instant, secs: i32) {
    history.lock().expect("history")[index].lease_end =
        Some(sent + Duration::from_secs(secs as u64));
}

/// Records a grant the client was told of.
#[allow(clippy::too_many_arguments)]
fn record_grant(
    history: &History,
    client: usize,
    via: &str,
    name: &str,
    size: i32,
    asked: Instant,
    lease: Option<i32>,
    key: String,
    token: u64,
    held: &mut HashMap<String, (String, usize)>,
) {
    let mut history = history.lock().expect("history");
    history.push(Hold {
        client,
        via: via.to_owned(),
        name: name.to_owned(),
        size: size as usize,
        key: key.clone(),
        token,
        asked,
        from: Instant::now(),
        until: None,
        lease_end: lease.map(|secs| asked + Duration::from_secs(secs as u64)),
        ended: None,
    });
    held.insert(name.to_owned(), (key, history.len() - 1));
}

async fn grpc_client(
    id: usize,
    nodes: Vec<String>,
    seed: u64,
    history: History,
    stop: Arc<AtomicBool>,
) -> Option<LdlmClient<Channel>> {
    let mut rng = Rng((seed ^ (id as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)) | 1);
    let mut held: HashMap<String, (String, usize)> = HashMap::new();
    while !stop.load(Ordering::Relaxed) {
        let index = (id + rng.below(nodes.len() as u64) as usize) % nodes.len();
        let via = format!("node {} (gRPC)", index + 1);
        let Some(mut grpc) = one_connection(&nodes[index]).await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
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
            forget_expired(&history, &mut held);
            let ok = match rng.below(10) {
                op @ 0..=4 if !held.contains_key(name) => {
                    let lease = random_lease(&mut rng);
                    let asked = Instant::now();
                    let answer = if op == 4 {
                        grpc.lock(request(LockRequest {
                            name: name.into(),
                            size: Some(size),
                            lock_timeout_seconds: lease,
                            wait_timeout_seconds: Some(1),
                        }))
                        .await
                    } else {
                        grpc.try_lock(request(TryLockRequest {
                            name: name.into(),
                            size: Some(size),
                            lock_timeout_seconds: lease,
                        }))
                        .await
                    };
                    why = format!("acquire: {answer:?}");
                    match answer.map(tonic::Response::into_inner) {
                        Ok(answer) if answer.locked => {
                            record_grant(
                                &history,
                                id,
                                &via,
                                name,
                                size,
                                asked,
                                lease,
                                answer.key,
                                answer.fencing_token,
                                &mut held,
                            );
                            true
                        }
                        // A refusal (busy, or a wait that timed out) is an answer.
                        Ok(answer) => answer
                            .error
                            .is_none_or(|e| e.code == 3 /* LockWaitTimeout */),
                        Err(_) => false,
                    }
                }
                5..=7 => {
                    let Some(name) = held.keys().next().cloned() else {
                        continue;
                    };
                    let (key, index) = held.remove(&name).expect("held");
                    // The client stops using the lock when it sends the unlock...
                    let sent = Instant::now();
                    let answer = grpc.unlock(request(UnlockRequest { name, key })).await;
                    let ok = answer.as_ref().is_ok_and(|r| r.get_ref().unlocked);
                    let mut history = history.lock().expect("history");
                    // ...unless no answer came: then its connection may have closed, and the
                    // lock gone with it, any time after the last answer.
                    history[index].until = Some(if answer.is_ok() { sent } else { last_answer });
                    history[index].ended = Some(format!("unlocked: {answer:?}"));
                    ok
                }
                8 => {
                    let Some((name, (key, index))) = held.iter().next() else {
                        continue;
                    };
                    let secs = 2 + rng.below(4) as i32;
                    let sent = Instant::now();
                    let answer = grpc
                        .renew(request(RenewRequest {
                            name: name.clone(),
                            key: key.clone(),
                            lock_timeout_seconds: secs,
                        }))
                        .await;
                    why = format!("renew: {answer:?}");
                    let renewed = answer.is_ok_and(|r| r.into_inner().locked);
                    if renewed {
                        record_renewal(&history, *index, sent, secs);
                    }
                    renewed
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

/// A gRPC client over exactly one connection to `addr`: once it closes, every call fails. (A
/// plain tonic channel reconnects on its own, to a new session, and the client would never
/// learn that its locks went with the old one.)
async fn one_connection(addr: &str) -> Option<LdlmClient<Channel>> {
    let stream = tokio::time::timeout(
        Duration::from_millis(500),
        tokio::net::TcpStream::connect(addr),
    )
    .await
    .ok()?
    .ok()?;
    stream.set_nodelay(true).ok()?;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .ok()?
        .connect_with_connector(OneConnection(Arc::new(Mutex::new(Some(stream)))))
        .await
        .ok()?;
    Some(LdlmClient::new(channel))
}

/// A connector that hands out one connection, then refuses.
#[derive(Clone)]
struct OneConnection(Arc<Mutex<Option<tokio::net::TcpStream>>>);

impl tower::Service<hyper::Uri> for OneConnection {
    type Response = hyper_util::rt::TokioIo<tokio::net::TcpStream>;
    type Error = std::io::Error;
    type Future = std::future::Ready<Result<Self::Response, Self::Error>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: hyper::Uri) -> Self::Future {
        let stream = self.0.lock().expect("connection").take();
        std::future::ready(stream.map(hyper_util::rt::TokioIo::new).ok_or_else(|| {
            std::io::Error::other("this client's one connection is closed: no reconnecting")
        }))
    }
}

/// One HTTP/1.1 keep-alive connection to a node, carrying the client's session cookie.
struct Rest {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
}

impl Rest {
    async fn connect(addr: &str) -> Option<Rest> {
        let stream = tokio::time::timeout(
            Duration::from_millis(500),
            tokio::net::TcpStream::connect(addr),
        )
        .await
        .ok()?
        .ok()?;
        let io = hyper_util::rt::TokioIo::new(stream);
        let (sender, connection) = hyper::client::conn::http1::handshake(io).await.ok()?;
        tokio::spawn(connection);
        Some(Rest { sender })
    }

    /// `method path` with `body` and `cookie`: the status, the `Set-Cookie` value and the
    /// JSON body; `None` if no answer came within [`CALL_TIMEOUT`].
    async fn call(
        &mut self,
        method: hyper::Method,
        path: &str,
        body: String,
        cookie: &str,
    ) -> Option<(u16, Option<String>, serde_json::Value)> {
        let request = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", "ldlm")
            .header("cookie", cookie)
            .body(Full::new(Bytes::from(body)))
            .ok()?;
        tokio::time::timeout(CALL_TIMEOUT, async {
            self.sender.ready().await.ok()?;
            let response = self.sender.send_request(request).await.ok()?;
            let status = response.status().as_u16();
            let set_cookie = response
                .headers()
                .get("set-cookie")
                .and_then(|v| v.to_str().ok())
                .map(|v| v.split(';').next().unwrap_or_default().to_owned());
            let body = response.into_body().collect().await.ok()?.to_bytes();
            Some((
                status,
                set_cookie,
                serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
            ))
        })
        .await
        .ok()?
    }
}

/// The fencing token of a REST `LockResponse` (protojson: `fencingToken`, a 64-bit integer
/// written as a string).
fn fencing_token(answer: &serde_json::Value) -> u64 {
    let token = &answer["fencingToken"];
    token
        .as_str()
        .and_then(|s| s.parse().ok())
        .or_else(|| token.as_u64())
        .unwrap_or_else(|| panic!("no fencing token in {answer}"))
}

/// Ends session `cookie`, at node after node until one answers that it is gone (at most 30
/// s): what an unanswered call of it may have taken is released with it.
async fn end_session(nodes: &[String], cookie: &str, rng: &mut Rng) {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(30) {
        let node = &nodes[rng.below(nodes.len() as u64) as usize];
        if let Some(mut rest) = Rest::connect(node).await
            && let Some((status, _, _)) = rest
                .call(hyper::Method::DELETE, "/session", String::new(), cookie)
                .await
            // 200: ended; 409: it was not there (ended already).
            && (status == 200 || status == 409)
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("could not end REST session {cookie} in 30 s");
}

async fn rest_client(
    id: usize,
    nodes: Vec<String>,
    seed: u64,
    history: History,
    stop: Arc<AtomicBool>,
) {
    let mut rng = Rng((seed ^ (id as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)) | 1);
    let mut held: HashMap<String, (String, usize)> = HashMap::new();
    let mut cookie: Option<String> = None;
    while !stop.load(Ordering::Relaxed) {
        let index = rng.below(nodes.len() as u64) as usize;
        let via = format!("node {} (REST)", index + 1);
        let Some(mut rest) = Rest::connect(&nodes[index]).await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let session = match &cookie {
            Some(cookie) => cookie.clone(),
            None => match rest
                .call(hyper::Method::POST, "/session", String::new(), "")
                .await
            {
                Some((201, Some(set), _)) => {
                    cookie = Some(set.clone());
                    set
                }
                Some(_) => continue,
                // Unknown whether a session was made: if so, it holds nothing and expires.
                None => continue,
            },
        };
        // A few calls here, then on to another node with the same session.
        for _ in 0..1 + rng.below(20) {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            let (name, size) = NAMES[rng.below(NAMES.len() as u64) as usize];
            forget_expired(&history, &mut held);
            // Some(true): answered; Some(false): answered, but the session is unusable;
            // None: no answer (its outcome is unknown).
            let outcome: Option<bool> = match rng.below(10) {
                0..=4 if !held.contains_key(name) => {
                    let lease = random_lease(&mut rng);
                    let asked = Instant::now();
                    let body = serde_json::json!({
                        "name": name, "size": size, "lock_timeout_seconds": lease
                    })
                    .to_string();
                    match rest
                        .call(hyper::Method::POST, "/v1/lock", body, &session)
                        .await
                    {
                        Some((200, _, answer)) => {
                            if answer["locked"] == true {
                                record_grant(
                                    &history,
                                    id,
                                    &via,
                                    name,
                                    size,
                                    asked,
                                    lease,
                                    answer["key"].as_str().unwrap_or_default().to_owned(),
                                    fencing_token(&answer),
                                    &mut held,
                                );
                            }
                            Some(true)
                        }
                        // The session is gone (it cannot be, short of a bug: the checker will
                        // tell) or the node cannot serve now: try elsewhere.
                        Some((401, _, _)) => Some(false),
                        _ => None,
                    }
                }
                5..=7 => {
                    let Some(name) = held.keys().next().cloned() else {
                        continue;
                    };
                    let (key, index) = held.remove(&name).expect("held");
                    history.lock().expect("history")[index].until = Some(Instant::now());
                    let body = serde_json::json!({ "name": name, "key": key }).to_string();
                    let answer = rest
                        .call(hyper::Method::POST, "/v1/unlock", body, &session)
                        .await;
                    history.lock().expect("history")[index].ended =
                        Some(format!("unlocked: {answer:?}"));
                    match answer {
                        Some((200, _, answer)) => Some(answer["unlocked"] == true),
                        _ => None,
                    }
                }
                8 => {
                    let Some((name, (key, index))) = held.iter().next() else {
                        continue;
                    };
                    let secs = 2 + rng.below(4) as i32;
                    let body = serde_json::json!({
                        "name": name, "key": key, "lock_timeout_seconds": secs
                    })
                    .to_string();
                    let sent = Instant::now();
                    match rest
                        .call(hyper::Method::POST, "/v1/renew", body, &session)
                        .await
                    {
                        Some((200, _, answer)) if answer["locked"] == true => {
                            record_renewal(&history, *index, sent, secs);
                            Some(true)
                        }
                        Some((200, _, _)) => Some(false),
                        _ => None,
                    }
                }
                _ => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    Some(true)
                }
            };
            match outcome {
                Some(true) => {}
                // Answered: a 503 or a refused renew or unlock. A refused renew or unlock of
                // a hold the session should have means the hold is gone: stop believing, end
                // the session (the checker decides whether that was allowed).
                Some(false) | None => {
                    let why = format!("REST call failed or was refused ({outcome:?})");
                    lose_all(&history, &mut held, Instant::now(), &why);
                    end_session(&nodes, &session, &mut rng).await;
                    cookie = None;
                    break;
                }
            }
        }
    }
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
        lease_end: None,
        ended: None,
        via: "node 1 (gRPC)".into(),
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
    assert!(history::check_final(&holds, &listed, at(base, 100)).is_empty());
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
    assert_eq!(
        history::check_final(&holds, &[], at(base, 100)).len(),
        1,
        "k3 is not held"
    );
    let undone = [("x".to_owned(), "k5".to_owned())];
    assert_eq!(
        history::check_no_stray(&holds, &undone, at(base, 100)).len(),
        1,
        "k5 was let go, yet it is held"
    );
}

#[test]
fn a_lease_ends_a_belief_and_counts_from_the_request() {
    let base = Instant::now();
    // Granted at 0-5 with a 10 ms lease (counted from the request, at 0): over by 10.
    let mut leased = hold(base, 1, 1, 1, 0, None);
    leased.lease_end = Some(at(base, 10));
    let later = hold(base, 2, 1, 2, 12, None);
    let holds = [leased.clone(), later.clone()];
    assert!(
        history::check(&holds, at(base, 100)).is_empty(),
        "no overlap"
    );
    // Not believed in at the end: it need not be listed; still listed, it is stray.
    let listed = [("x".to_owned(), "k2".to_owned())];
    assert!(history::check_final(&holds, &listed, at(base, 100)).is_empty());
    let both = [
        ("x".to_owned(), "k1".to_owned()),
        ("x".to_owned(), "k2".to_owned()),
    ];
    assert_eq!(
        history::check_no_stray(&holds, &both, at(base, 100)).len(),
        1
    );
    // A grant before the lease is over overlaps it.
    let early = hold(base, 2, 1, 2, 8, None);
    assert_eq!(history::check(&[leased, early], at(base, 100)).len(), 1);
}
