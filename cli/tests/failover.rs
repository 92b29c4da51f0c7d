//! Failover time: the leader of a 3-node cluster is killed with SIGKILL, and the time until a
//! client of a surviving node is granted a lock is measured; the killed node then restarts on
//! its data directory and catches up before the next round.
//!
//! Rolling restart: every node is stopped (SIGTERM) and started again in turn, as an upgrade
//! does, under `ldlm-bench`'s `failover` workload against all three nodes: its checker must
//! pass, locks held through the nodes that stay up must keep their holders, and the times
//! without any grant are reported for each step.
//!
//! A restarted node does not stand for election while the cluster has a leader (the old
//! leader, killed and restarted, must not depose the new one).
//!
//! `ldlm-bench`'s REST clients move to another node when theirs is killed, keeping their
//! sessions and their holds.
//!
//! CI runs a few rounds and only checks that every failover ends (within a generous bound). The
//! measurements in BENCHMARKS.md are the long runs, on release binaries:
//!
//! ```sh
//! LDLM_FAILOVER_KILLS=25 cargo test --release -p ldlm-cli --test failover leader -- --nocapture
//! LDLM_ROLLING_ROUNDS=5 cargo test --release -p ldlm-cli --test failover rolling -- --nocapture
//! ```

mod support;

use std::time::{Duration, Instant};

use ldlm_proto::ldlm::{RenewRequest, TryLockRequest};
use support::cluster::{Cluster, client};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_kill_to_first_grant_at_a_survivor() {
    let kills = count_from_env("LDLM_FAILOVER_KILLS", 3);
    // Default election timeout (1 s), as a user runs it.
    let mut cluster = Cluster::start_with(&["--cluster_election_timeout=1s"]);
    let mut times = Vec::new();
    for round in 0..kills {
        let leader = cluster.leader();
        let survivor = (1..=3).find(|&id| id != leader).expect("a survivor");
        let mut survivor_client = client(&cluster.grpc(survivor)).await;
        let killed = Instant::now();
        cluster.stop(leader, "KILL");
        let mut attempt = 0u64;
        loop {
            attempt += 1;
            let mut request = tonic::Request::new(TryLockRequest {
                name: format!("failover-{round}-{attempt}"),
                ..Default::default()
            });
            request.set_timeout(Duration::from_millis(500));
            if let Ok(answer) = survivor_client.try_lock(request).await
                && answer.into_inner().locked
            {
                break;
            }
            assert!(
                killed.elapsed() < Duration::from_secs(15),
                "round {round}: no grant within 15 s of the kill"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let took = killed.elapsed();
        times.push(took);
        eprintln!("round {round}: leader {leader} killed, first grant after {took:?}");
        cluster.launch(leader);
        caught_up(&cluster, leader).await;
    }
    times.sort();
    let percentile =
        |p: f64| times[((times.len() as f64 * p).ceil() as usize).clamp(1, times.len()) - 1];
    let max = *times.last().expect("one round at least");
    eprintln!(
        "failover over {} kills: p50 {:?}, p99 {:?}, max {max:?}",
        times.len(),
        percentile(0.50),
        percentile(0.99),
    );
    // The bar (p99 ≤ 2 s) is measured on release binaries (BENCHMARKS.md); here, on a debug
    // build sharing two cores with other tests, a failover that takes more than twice it is a
    // regression.
    assert!(max < Duration::from_secs(4), "a failover took {max:?}");
}

/// A count from environment variable `name` (a long run), else `default` (CI's short one).
fn count_from_env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(default)
}

/// Runs `ldlm-bench` with `args` (and no warm-up, quietly) in a task of its own until the
/// returned sender is used.
fn start_bench(
    args: &[&str],
) -> (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<anyhow::Result<ldlm_bench::Report>>,
) {
    let args = ["ldlm-bench", "--warmup", "0s", "--quiet"]
        .iter()
        .chain(args);
    let args = <ldlm_bench::Args as clap::Parser>::try_parse_from(args).expect("bench arguments");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let bench = tokio::spawn(async move {
        ldlm_bench::run_until(&args, async {
            let _ = stopped.await;
        })
        .await
    });
    (stop, bench)
}

/// Prints a `failover` run's report and checks what every such run must show: the checker
/// passed, grants were made, and no Unlock found its hold gone. Returns the longest time the
/// clients went without a grant.
fn longest_outage_of_a_correct_run(report: &ldlm_bench::Report) -> Duration {
    eprint!("{}", report.to_text());
    assert!(report.passed(), "{:?}", report.violations);
    assert!(report.cycles > 0);
    let lost: Vec<_> = report
        .errors
        .iter()
        .filter(|e| e.kind == "lost lock")
        .collect();
    assert!(lost.is_empty(), "{lost:?}");
    let outages = report
        .outages
        .as_ref()
        .expect("the failover workload reports outages");
    outages.iter().map(|o| o.length).max().unwrap_or_default()
}

/// Waits until restarted node `id` has applied as much as the leader (every node agreeing on
/// who leads).
async fn caught_up(cluster: &Cluster, id: u64) {
    let leader = cluster.leader();
    let start = Instant::now();
    loop {
        let applied = |id| cluster.status(id).and_then(|s| s["applied_index"].as_u64());
        if let (Some(reference), Some(restarted)) = (applied(leader), applied(id))
            && restarted >= reference
        {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "node {id} did not catch up"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A lock held through one node's client: `(client, name, key, token)`.
type Held = (
    ldlm_proto::ldlm::ldlm_client::LdlmClient<tonic::transport::Channel>,
    String,
    String,
    u64,
);

/// Takes `name` through a new client of node `node`, waiting (a few seconds at most) for an
/// earlier holder's release to come through.
async fn hold_at(cluster: &Cluster, node: u64, name: &str) -> Held {
    let mut holder = client(&cluster.grpc(node)).await;
    let start = Instant::now();
    loop {
        let granted = holder
            .try_lock(TryLockRequest {
                name: name.to_owned(),
                ..Default::default()
            })
            .await
            .expect("rpc")
            .into_inner();
        if granted.locked {
            return (holder, name.to_owned(), granted.key, granted.fencing_token);
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{name} at node {node}: {granted:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_restart_under_load() {
    let rounds = count_from_env("LDLM_ROLLING_ROUNDS", 1);
    let mut cluster = Cluster::start_with(&["--cluster_election_timeout=1s"]);
    cluster.leader();
    let addresses = (1..=3)
        .map(|id| cluster.grpc(id))
        .collect::<Vec<_>>()
        .join(",");
    let bench_started = Instant::now();
    let (stop, bench) = start_bench(&["-a", &addresses, "-c", "6", "-w", "failover"]);

    // A lock held through each node, by a client that stays connected to it.
    let mut held: Vec<Option<Held>> = Vec::new();
    for node in 1..=3 {
        held.push(Some(hold_at(&cluster, node, &format!("kept-{node}")).await));
    }
    let mut old_tokens: Vec<u64> = held.iter().flatten().map(|h| h.3).collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    for round in 0..rounds {
        for node in 1..=3u64 {
            let step = bench_started.elapsed();
            let was_leader = cluster.leader() == node;
            let mut process = cluster.nodes[(node - 1) as usize]
                .process
                .take()
                .expect("running");
            process.signal("TERM");
            assert!(
                process.wait(Duration::from_secs(10)).is_some(),
                "node {node} did not stop on SIGTERM"
            );
            // Its own client lost its connection, and with it its lock.
            held[(node - 1) as usize] = None;
            cluster.launch(node);
            caught_up(&cluster, node).await;
            eprintln!(
                "round {round}: node {node}{} restarted from {:.3} s to {:.3} s",
                if was_leader { " (the leader)" } else { "" },
                step.as_secs_f64(),
                bench_started.elapsed().as_secs_f64()
            );
            // Every lock held through a node that stayed up is still its holder's.
            for (holder, name, key, token) in held.iter_mut().flatten() {
                let renewed = holder
                    .renew(RenewRequest {
                        name: name.clone(),
                        key: key.clone(),
                        lock_timeout_seconds: 3600,
                    })
                    .await
                    .expect("rpc")
                    .into_inner();
                assert!(
                    renewed.locked && renewed.fencing_token == *token,
                    "{name} was lost by restarting node {node}: {renewed:?}"
                );
            }
            // The restarted node's old client had ended its session: its lock is released
            // (by the node as it stopped, or as it started again), and a new client there
            // takes it with a newer token.
            let name = format!("kept-{node}");
            let again = hold_at(&cluster, node, &name).await;
            assert!(
                again.3 > old_tokens[(node - 1) as usize],
                "{name}: a newer token"
            );
            old_tokens[(node - 1) as usize] = again.3;
            held[(node - 1) as usize] = Some(again);
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    let _ = stop.send(());
    let report = bench.await.expect("bench task").expect("bench ran");
    // Every Unlock of a hold its session still had was answered "unlocked", also when the
    // node re-sent it to the next leader after the first attempt's answer was lost.
    let longest = longest_outage_of_a_correct_run(&report);
    // A restart of a follower leaves the other nodes granting; a restart of the leader costs
    // an election (about the election timeout, 1 s). The bar (≤ 2 s) is measured on release
    // binaries (BENCHMARKS.md); on a debug build sharing two cores with other tests, twice it.
    assert!(
        longest < Duration::from_secs(4),
        "the clients went {longest:?} without a grant"
    );
}

/// ldlm-bench's REST clients against a cluster: when their node is killed they reconnect to
/// another node and keep their session (REST sessions are cluster-wide), so the holds they had
/// stay theirs and every Unlock finds its hold; the other clients are not held up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_clients_move_to_another_node_when_theirs_is_killed() {
    let mut cluster = Cluster::start_with(&[
        "--cluster_election_timeout=1s",
        "--rest_listen_address=127.0.0.1:0",
    ]);
    let leader = cluster.leader();
    let killed = (1..=3).find(|&id| id != leader).expect("a follower");
    let addresses = (1..=3)
        .map(|id| cluster.rest(id).expect("REST"))
        .collect::<Vec<_>>()
        .join(",");
    let (stop, bench) = start_bench(&[
        "-t",
        "rest",
        "--rest_address",
        &addresses,
        "-c",
        "6",
        "-w",
        "failover",
        // A TryLock whose answer died with the node may still have been granted: its lease
        // frees the name again.
        "--lock_timeout",
        "1s",
    ]);
    tokio::time::sleep(Duration::from_millis(700)).await;
    cluster.stop(killed, "KILL");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let _ = stop.send(());
    let report = bench.await.expect("bench task").expect("bench ran");
    let longest = longest_outage_of_a_correct_run(&report);
    // Two of the six connections were at the killed node (connection i starts at node i % 3).
    assert!(report.moves >= 2, "moves: {}", report.moves);
    assert_eq!(report.ended_with_session, 0, "sessions are kept");
    // The leader lives: the other clients keep being granted (debug build, two shared cores).
    assert!(
        longest < Duration::from_secs(1),
        "the clients went {longest:?} without a grant"
    );
}

/// A node killed with SIGKILL and started again does not stand for election while the cluster
/// has a leader: here the old leader, restarted after the others elected a new one, follows it
/// and the new leader keeps leading in the same term. (openraft 0.9 has no pre-vote; a
/// restarted node that stood would depose the healthy leader, a pause for every client, and
/// carry a penalty into the next real failover.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_does_not_depose_the_leader() {
    let mut cluster = Cluster::start_with(&["--cluster_election_timeout=1s"]);
    for round in 0..2 {
        let old = cluster.leader();
        cluster.stop(old, "KILL");
        let new = cluster.leader();
        let term = |cluster: &Cluster| {
            cluster
                .status(new)
                .and_then(|s| s["term"].as_u64())
                .expect("the leader's term")
        };
        let elected = term(&cluster);
        cluster.launch(old);
        caught_up(&cluster, old).await;
        // Past the time a restarted node that stood would have stood (its election timeout
        // and the leader's retry interval).
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_eq!(cluster.leader(), new, "round {round}: node {old} restarted");
        assert_eq!(
            term(&cluster),
            elected,
            "round {round}: restarting node {old} began a new term"
        );
    }
}
