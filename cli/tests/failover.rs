//! Failover time: the leader of a 3-node cluster is killed with SIGKILL, and the time until a
//! client of a surviving node is granted a lock is measured; the killed node then restarts on
//! its data directory and catches up before the next round.
//!
//! CI runs a few rounds and only checks that every failover ends (within a generous bound). The
//! measurement in BENCHMARKS.md is the long run, on release binaries:
//!
//! ```sh
//! LDLM_FAILOVER_KILLS=25 cargo test --release -p ldlm-cli --test failover -- --nocapture
//! ```

mod support;

use std::time::{Duration, Instant};

use ldlm_proto::ldlm::TryLockRequest;
use support::cluster::{Cluster, client};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_kill_to_first_grant_at_a_survivor() {
    let kills: usize = std::env::var("LDLM_FAILOVER_KILLS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(3);
    // Default election timeout (1 s), as a user runs it.
    let mut cluster = Cluster::start_with(&["--cluster_election_timeout=1s"]);
    let mut times = Vec::new();
    for round in 0..kills {
        let leader = cluster.leader();
        let survivor = (1..=3).find(|&id| id != leader).expect("a survivor");
        let mut survivor_client = client(&cluster.grpc(survivor)).await;
        let mut process = cluster.nodes[(leader - 1) as usize]
            .process
            .take()
            .expect("running");
        let killed = Instant::now();
        process.signal("KILL");
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
        process.wait(Duration::from_secs(5));
        cluster.launch(leader);
        // Caught up before the next round: its applied index reaches the leader's.
        let new_leader = cluster.leader();
        let start = Instant::now();
        loop {
            let applied = |id| cluster.status(id).and_then(|s| s["applied_index"].as_u64());
            if let (Some(reference), Some(restarted)) = (applied(new_leader), applied(leader))
                && restarted >= reference
            {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(15),
                "round {round}: no catch-up"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
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
