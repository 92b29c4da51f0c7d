//! Cluster mode through any language's stub: the Python grpcio compatibility client
//! (`tests/python/compat.py`, stubs generated from `proto/ldlm.proto`) against a *follower* of
//! a 3-node cluster started in this process. Every call it makes is forwarded to the leader and
//! must be answered exactly as one server answers it.

use std::time::{Duration, Instant};

use crate::harness;
use crate::python::{python, repo};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_grpcio_client_works_unchanged_at_a_follower() {
    let (python, stubs) = python().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let peers = (1..=3)
        .map(|id| format!("{id}=127.0.0.1:{}", ldlm_testkit::unused_port()))
        .collect::<Vec<_>>()
        .join(",");
    let mut nodes = Vec::new();
    for id in 1..=3u64 {
        let mut config = harness::config();
        config.cluster_node_id = id;
        config.cluster_peers = Some(peers.clone());
        config.cluster_data_dir = Some(dir.path().join(format!("node-{id}")));
        config.cluster_election_timeout = Duration::from_millis(500);
        nodes.push(harness::start(&config).await);
    }
    let start = Instant::now();
    let leader = loop {
        let leaders: Vec<Option<u64>> = nodes
            .iter()
            .map(|n| n.running.cluster().and_then(|c| c.node().leader()))
            .collect();
        if let Some(Some(leader)) = leaders.first()
            && leaders.iter().all(|l| *l == Some(*leader))
        {
            break *leader;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no leader: {leaders:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let follower = nodes
        .iter()
        .find(|n| n.running.cluster().map(|c| c.node().id()) != Some(leader))
        .expect("a follower");
    let run = tokio::process::Command::new(python)
        .arg(repo().join("tests/python/compat.py"))
        .arg(follower.grpc_addr().to_string())
        .env("PYTHONPATH", &stubs)
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .expect("the Python client finishes within 120 s")
        .expect("python runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "Python client failed at a follower:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains(" passed, 0 failed"), "{stdout}");
    for node in nodes {
        node.running.shutdown().await;
    }
}
