//! Three nodes in this process on 127.0.0.1: they form the cluster by themselves, elect a
//! leader, replicate commands to identical replicas, survive losing the leader, and a node that
//! was down catches up — from the log, or from a snapshot when the log was purged meanwhile.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use ldlm_cluster::{ClusterNode, Command, GlobalOwner, NodeConfig, PeerTls, ReplicatedEvent};
use tokio::net::TcpListener;

mod common;

const SLACK: Duration = Duration::from_secs(10);

struct Cluster {
    dirs: BTreeMap<u64, tempfile::TempDir>,
    peers: BTreeMap<u64, String>,
    nodes: BTreeMap<u64, ClusterNode>,
    snapshot_every: u64,
    password: Option<String>,
    tls: Option<PeerTls>,
}

impl Cluster {
    async fn start(snapshot_every: u64) -> Cluster {
        Cluster::start_with(snapshot_every, None).await
    }

    async fn start_with(snapshot_every: u64, password: Option<&str>) -> Cluster {
        Cluster::start_secured(snapshot_every, password, None).await
    }

    async fn start_secured(
        snapshot_every: u64,
        password: Option<&str>,
        tls: Option<PeerTls>,
    ) -> Cluster {
        let (listeners, peers) = common::peer_listeners(1..=3).await;
        let mut cluster = Cluster {
            dirs: (1..=3)
                .map(|id| (id, tempfile::tempdir().expect("tempdir")))
                .collect(),
            peers,
            nodes: BTreeMap::new(),
            snapshot_every,
            password: password.map(str::to_owned),
            tls,
        };
        for (id, listener) in listeners {
            cluster.launch(id, listener).await;
        }
        cluster
    }

    async fn launch(&mut self, id: u64, listener: TcpListener) {
        let config = NodeConfig {
            snapshot_every: self.snapshot_every,
            password: self.password.clone(),
            tls: self.tls.clone(),
            ..common::node_config(id, &self.peers, self.dirs[&id].path())
        };
        let node = ClusterNode::start(config, listener)
            .await
            .expect("node starts");
        self.nodes.insert(id, node);
    }

    /// Restarts node `id` on its data directory and its old address.
    async fn restart(&mut self, id: u64) {
        let listener = TcpListener::bind(&self.peers[&id]).await.expect("rebind");
        self.launch(id, listener).await;
    }

    async fn stop(&mut self, id: u64) {
        if let Some(node) = self.nodes.remove(&id) {
            node.shutdown().await;
        }
    }

    /// The leader every running node agrees on.
    async fn leader(&self) -> u64 {
        let start = Instant::now();
        loop {
            let seen: Vec<Option<u64>> = self.nodes.values().map(ClusterNode::leader).collect();
            if let Some(Some(leader)) = seen.first()
                && seen.iter().all(|s| *s == Some(*leader))
                && self.nodes.contains_key(leader)
            {
                return *leader;
            }
            assert!(start.elapsed() < SLACK, "no agreed leader: {seen:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until every running node applied the same log and holds the same replica.
    async fn converged(&self) -> ldlm_cluster::Replica {
        let start = Instant::now();
        loop {
            let mut applied = Vec::new();
            let mut replicas = Vec::new();
            for node in self.nodes.values() {
                applied.push(node.last_applied().await);
                replicas.push(node.replica().await);
            }
            if applied.windows(2).all(|w| w[0] == w[1]) && replicas.windows(2).all(|w| w[0] == w[1])
            {
                return replicas.remove(0);
            }
            assert!(
                start.elapsed() < SLACK,
                "replicas did not converge: {applied:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn grant(&self, leader: u64, n: u64) {
        let event = ReplicatedEvent::Granted {
            name: format!("lock-{n}"),
            key: u128::from(n),
            size: 1,
            owner: GlobalOwner { node: 1, local: n },
            token: n,
            lease_secs: 30,
            request: None,
        };
        let start = Instant::now();
        let mut leader = leader;
        loop {
            match self.nodes[&leader]
                .write(Command::Events(vec![event.clone()]))
                .await
            {
                Ok(applied) => {
                    assert_eq!(applied.refused, 0);
                    return;
                }
                // Refused, not taken, by a node that stopped leading (an election on a busy
                // machine): write it at the new leader.
                Err(error) if error.to_string().contains("forward") && start.elapsed() < SLACK => {
                    leader = self.leader().await;
                }
                Err(error) => panic!("not committed: {error}"),
            }
        }
    }

    async fn shutdown(mut self) {
        for id in self.nodes.keys().copied().collect::<Vec<_>>() {
            self.stop(id).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn elects_replicates_fails_over_and_catches_up() {
    let mut cluster = Cluster::start(1_000).await;
    let leader = cluster.leader().await;
    for n in 1..=10 {
        cluster.grant(leader, n).await;
    }
    let replica = cluster.converged().await;
    assert_eq!(replica.hold_count(), 10);

    // The leader dies: the others elect a new one and keep every committed grant.
    cluster.stop(leader).await;
    let killed = leader;
    let leader = cluster.leader().await;
    assert_ne!(leader, killed);
    for n in 11..=20 {
        cluster.grant(leader, n).await;
    }
    assert_eq!(cluster.converged().await.hold_count(), 20);

    // The old leader comes back on its data directory and catches up from the log.
    cluster.restart(killed).await;
    let replica = cluster.converged().await;
    assert_eq!(replica.hold_count(), 20);
    assert_eq!(replica.max_token(), 20);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_behind_a_purged_log_catches_up_from_a_snapshot() {
    let mut cluster = Cluster::start(10).await;
    let leader = cluster.leader().await;
    let follower = *cluster
        .nodes
        .keys()
        .find(|&&id| id != leader)
        .expect("a follower");
    cluster.grant(leader, 1).await;
    cluster.converged().await;
    cluster.stop(follower).await;
    // Far more entries than the snapshot interval plus the log kept behind a snapshot.
    let leader = cluster.leader().await;
    for n in 2..=1_200 {
        cluster.grant(leader, n).await;
    }
    cluster.restart(follower).await;
    let replica = cluster.converged().await;
    assert_eq!(replica.hold_count(), 1_200);
    let snapshot = cluster.dirs[&follower].path().join("snapshot");
    assert!(snapshot.exists(), "the follower installed a snapshot");
    cluster.shutdown().await;
}

/// With `--password`, peers present it to each other: the cluster works, and a peer message
/// without it, or with another one, is refused before it reaches Raft.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_must_present_the_password() {
    use ldlm_cluster::peer::proto::PeerMessage;
    use ldlm_cluster::peer::proto::peer_client::PeerClient;
    let cluster = Cluster::start_with(1_000, Some("s3cret")).await;
    let leader = cluster.leader().await;
    cluster.grant(leader, 1).await;
    assert_eq!(cluster.converged().await.hold_count(), 1);

    let mut intruder = PeerClient::connect(format!("http://{}", cluster.peers[&leader]))
        .await
        .expect("connects");
    for password in [None, Some("guess")] {
        let mut message = tonic::Request::new(PeerMessage {
            version: 1,
            group: 0,
            kind: 2,
            payload: Vec::new(),
            cluster: Vec::new(),
        });
        if let Some(password) = password {
            message
                .metadata_mut()
                .insert("authorization", password.parse().expect("ascii"));
        }
        let refused = intruder.raft(message).await.expect_err("refused");
        assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{password:?}");
    }
    cluster.shutdown().await;
}

/// With TLS, nodes talk TLS to each other (verifying each other's certificates against the
/// CA): the cluster works, and a plaintext peer is not served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_talk_tls() {
    use ldlm_cluster::peer::proto::PeerMessage;
    use ldlm_cluster::peer::proto::peer_client::PeerClient;
    use ldlm_security::tls;
    tls::install_default_provider();
    let pki = ldlm_testkit::TestPki::generate();
    let options = tls::TlsOptions {
        cert: Some(pki.server_cert()),
        key: Some(pki.server_key()),
        client_ca: None,
        client_cert_verify: false,
    };
    let peer_tls = PeerTls {
        server: tls::server_config(&options, &[b"h2"])
            .expect("server config")
            .expect("TLS on"),
        client: tls::client_config(Some(&pki.ca()), None, false, &[b"h2"]).expect("client config"),
    };
    let cluster = Cluster::start_secured(1_000, None, Some(peer_tls)).await;
    let leader = cluster.leader().await;
    cluster.grant(leader, 1).await;
    assert_eq!(cluster.converged().await.hold_count(), 1);

    let plaintext = async {
        let mut client = PeerClient::connect(format!("http://{}", cluster.peers[&leader])).await?;
        client
            .raft(PeerMessage {
                version: 1,
                group: 0,
                kind: 2,
                payload: Vec::new(),
                cluster: Vec::new(),
            })
            .await
            .map_err(Box::<dyn std::error::Error + Send + Sync>::from)
    };
    let refused = tokio::time::timeout(std::time::Duration::from_secs(5), plaintext).await;
    assert!(
        !matches!(refused, Ok(Ok(_))),
        "a plaintext peer was served: {refused:?}"
    );
    cluster.shutdown().await;
}

/// A node given a different `--cluster_peers` from the others (here: another port for one of
/// them) forms a cluster of its own in their eyes. Its first log entry would carry the same log
/// id as theirs with other members, which Raft would never correct; instead the nodes refuse
/// each other's messages. The other two elect a leader and commit without it, it never
/// follows their leader, and a message claiming yet another cluster is refused with an error
/// that says what to do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_formed_with_other_peers_is_refused() {
    use ldlm_cluster::peer::proto::PeerMessage;
    use ldlm_cluster::peer::proto::peer_client::PeerClient;

    let (listeners, peers) = common::peer_listeners(1..=3).await;
    let mut wrong = peers.clone();
    let spare = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    wrong.insert(2, spare.local_addr().expect("addr").to_string());
    let dirs: BTreeMap<u64, tempfile::TempDir> = (1..=3)
        .map(|id| (id, tempfile::tempdir().expect("tempdir")))
        .collect();
    let mut nodes = BTreeMap::new();
    for (id, listener) in listeners {
        let members = if id == 3 { &wrong } else { &peers };
        let config = common::node_config(id, members, dirs[&id].path());
        let node = ClusterNode::start(config, listener)
            .await
            .expect("node starts");
        nodes.insert(id, node);
    }

    // Nodes 1 and 2 agree on a leader among themselves and commit.
    let start = Instant::now();
    let leader = loop {
        let (one, two) = (nodes[&1].leader(), nodes[&2].leader());
        if let Some(leader) = one.filter(|l| Some(*l) == two && *l != 3) {
            break leader;
        }
        assert!(
            start.elapsed() < SLACK,
            "no leader of 1 and 2: {one:?} {two:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    nodes[&leader]
        .write(Command::Events(Vec::new()))
        .await
        .expect("committed by 1 and 2");

    // Node 3 never follows them: several election timeouts later it has no leader.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(
        nodes[&3].leader(),
        None,
        "node 3 followed a cluster it was not formed with"
    );
    assert_ne!(nodes[&1].identity().id(), nodes[&3].identity().id());
    assert_eq!(nodes[&1].identity().id(), nodes[&2].identity().id());

    let mut stranger = PeerClient::connect(format!("http://{}", peers[&leader]))
        .await
        .expect("connects");
    let refused = stranger
        .raft(PeerMessage {
            version: 1,
            group: 0,
            kind: 2,
            payload: Vec::new(),
            cluster: nodes[&3].identity().id().as_bytes().to_vec(),
        })
        .await
        .expect_err("refused");
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    assert!(
        refused.message().contains("--cluster_peers"),
        "{}",
        refused.message()
    );
    // An id that is not one is bad input, not another cluster.
    let malformed = stranger
        .raft(PeerMessage {
            version: 1,
            group: 0,
            kind: 2,
            payload: Vec::new(),
            cluster: vec![1, 2, 3],
        })
        .await
        .expect_err("refused");
    assert_eq!(
        malformed.code(),
        tonic::Code::InvalidArgument,
        "{malformed:?}"
    );

    drop(spare);
    for (_, node) in nodes {
        node.shutdown().await;
    }
}
