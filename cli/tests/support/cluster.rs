//! A cluster of real `ldlm-server` processes (3 nodes unless a test asks for more) on
//! 127.0.0.1 or in network namespaces, for the cluster tests.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use ldlm_proto::ldlm::ldlm_client::LdlmClient;
use tonic::transport::Channel;

use super::Process;

pub(crate) const LOCK: &str = env!("CARGO_BIN_EXE_ldlm-lock");
pub(crate) const SLACK: Duration = Duration::from_secs(15);

pub(crate) struct Node {
    pub(crate) id: u64,
    pub(crate) process: Option<Process>,
    pub(crate) ipc: PathBuf,
    /// A node that joined later: its own `--cluster_peers` (itself only) and `--cluster_join`.
    pub(crate) joined: Option<String>,
    /// Its gRPC address on 127.0.0.1, chosen at its first start: a restart listens there
    /// again, as a real node's does, so clients given the nodes' addresses can come back to it.
    pub(crate) grpc_address: Option<String>,
}

pub(crate) struct Cluster {
    dir: tempfile::TempDir,
    peers: String,
    pub(crate) nodes: Vec<Node>,
    /// More options for every node.
    extra: Vec<String>,
    /// The nodes' own network namespaces, if they run in them (last: dropped after the
    /// processes in it are stopped).
    pub(crate) network: Option<super::netns::Network>,
    /// Environment variables for every node.
    env: Vec<(String, String)>,
}

/// Ports of a node in a namespace of its own (nothing else listens there).
const NETNS_GRPC_PORT: u16 = 5051;
const NETNS_REST_PORT: u16 = 8080;
const NETNS_PEER_PORT: u16 = 7070;

impl Cluster {
    pub(crate) fn start() -> Cluster {
        Cluster::start_with(&[])
    }

    /// Three nodes on 127.0.0.1, each with `extra` options.
    pub(crate) fn start_with(extra: &[&str]) -> Cluster {
        Cluster::start_many(3, extra)
    }

    /// `nodes` nodes on 127.0.0.1, each with `extra` options.
    pub(crate) fn start_many(nodes: u64, extra: &[&str]) -> Cluster {
        let peers = (1..=nodes)
            .map(|id| format!("{id}=127.0.0.1:{}", ldlm_testkit::unused_port()))
            .collect::<Vec<_>>()
            .join(",");
        Cluster::start_nodes(nodes, peers, None, extra, &[])
    }

    /// `nodes` nodes, each in a network namespace of its own (so that they can be cut off from
    /// each other: see [`super::netns`]), serving gRPC and REST, with `extra` options.
    /// With `env`, more environment variables for every node.
    pub(crate) fn start_partitionable(nodes: u64, extra: &[&str], env: &[(&str, &str)]) -> Cluster {
        let network = super::netns::Network::create(nodes);
        let peers = (1..=nodes)
            .map(|id| format!("{id}={}:{NETNS_PEER_PORT}", network.address(id)))
            .collect::<Vec<_>>()
            .join(",");
        Cluster::start_nodes(nodes, peers, Some(network), extra, env)
    }

    fn start_nodes(
        count: u64,
        peers: String,
        network: Option<super::netns::Network>,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Cluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut cluster = Cluster {
            extra: extra.iter().map(|s| s.to_string()).collect(),
            nodes: (1..=count)
                .map(|id| Node {
                    id,
                    process: None,
                    ipc: dir.path().join(format!("ipc-{id}.sock")),
                    joined: None,
                    grpc_address: None,
                })
                .collect(),
            dir,
            peers,
            network,
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        for id in 1..=count {
            cluster.launch(id);
        }
        cluster
    }

    /// The node ids.
    pub(crate) fn ids(&self) -> Vec<u64> {
        self.nodes.iter().map(|n| n.id).collect()
    }

    /// Starts a new node `id` (on 127.0.0.1) that waits to be added (`--cluster_join`); its
    /// peer address is [`Cluster::peer_address`].
    pub(crate) fn join(&mut self, id: u64) {
        assert!(self.nodes.iter().all(|n| n.id != id), "a new id");
        let peers = format!("{id}=127.0.0.1:{}", ldlm_testkit::unused_port());
        self.nodes.push(Node {
            id,
            process: None,
            ipc: self.dir.path().join(format!("ipc-{id}.sock")),
            joined: Some(peers),
            grpc_address: None,
        });
        self.launch(id);
    }

    /// Node `id`'s peer address.
    pub(crate) fn peer_address(&self, id: u64) -> String {
        let peers = self.node(id).joined.as_deref().unwrap_or(&self.peers);
        peers
            .split(',')
            .find_map(|p| p.strip_prefix(&format!("{id}=")))
            .expect("listed")
            .to_owned()
    }

    /// Node `id`'s `--cluster_data_dir`.
    pub(crate) fn data_dir(&self, id: u64) -> std::path::PathBuf {
        self.dir.path().join(format!("node-{id}"))
    }

    /// Starts node `id` (again, on its data directory).
    pub(crate) fn launch(&mut self, id: u64) {
        let data = self.data_dir(id);
        let node = self
            .nodes
            .iter_mut()
            .find(|n| n.id == id)
            .expect("a node of this cluster");
        let mut args = vec![
            format!("--cluster_node_id={id}"),
            format!(
                "--cluster_peers={}",
                node.joined.as_deref().unwrap_or(&self.peers)
            ),
            format!("--cluster_data_dir={}", data.display()),
            "--cluster_election_timeout=500ms".to_owned(),
            format!("--ipc_socket_file={}", node.ipc.display()),
        ];
        if node.joined.is_some() {
            args.push("--cluster_join".to_owned());
        }
        args.extend(self.extra.iter().cloned());
        let mut command = match &self.network {
            Some(network) => {
                let address = network.address(id);
                args.push(format!("--listen_address={address}:{NETNS_GRPC_PORT}"));
                args.push(format!("--rest_listen_address={address}:{NETNS_REST_PORT}"));
                network.server_command(id)
            }
            None => {
                // A port of its own from the start, not port 0: a restart listens there again,
                // and an ephemeral port may have been taken by a connection meanwhile.
                let address = node
                    .grpc_address
                    .get_or_insert_with(|| format!("127.0.0.1:{}", ldlm_testkit::unused_port()));
                args.push(format!("--listen_address={address}"));
                super::command()
            }
        };
        command.envs(self.env.iter().map(|(k, v)| (k, v)));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let process = Process::start_with(command, &args);
        node.grpc_address = Some(process.grpc_addr.clone());
        node.process = Some(process);
    }

    /// Stops node `id` with `signal` (`"KILL"` or `"TERM"`) and waits (up to `SLACK`) for it
    /// to exit; the stopped process is returned (its log, its exit status). `launch` starts
    /// the node again.
    pub(crate) fn stop(&mut self, id: u64, signal: &str) -> Process {
        let mut process = self.take(id);
        process.signal(signal);
        process.wait(SLACK);
        process
    }

    /// Fails node `id`'s disk: every `fdatasync` it makes from now on returns EIO (see
    /// [`super::fail_every_fdatasync`]). Returns the strace process doing it.
    pub(crate) fn fail_disk(&self, id: u64) -> std::process::Child {
        let pid = self.node(id).process.as_ref().expect("running").child.id();
        super::fail_every_fdatasync(pid)
    }

    /// Node `id`'s process, which must be running, taken out of the cluster (for a test that
    /// waits for it to exit by itself); `launch` starts the node again.
    pub(crate) fn take(&mut self, id: u64) -> Process {
        self.nodes
            .iter_mut()
            .find(|n| n.id == id)
            .expect("a node of this cluster")
            .process
            .take()
            .expect("running")
    }

    /// Sends `signal` (`"STOP"`, `"CONT"`, ...) to node `id`, which must be running.
    pub(crate) fn signal(&self, id: u64, signal: &str) {
        self.node(id)
            .process
            .as_ref()
            .expect("running")
            .signal(signal);
    }

    /// Node `id`'s REST address, if it serves REST.
    pub(crate) fn rest(&self, id: u64) -> Option<String> {
        self.node(id).process.as_ref()?.rest_addr.clone()
    }

    pub(crate) fn node(&self, id: u64) -> &Node {
        self.nodes
            .iter()
            .find(|n| n.id == id)
            .expect("a node of this cluster")
    }

    pub(crate) fn grpc(&self, id: u64) -> String {
        self.node(id)
            .process
            .as_ref()
            .expect("running")
            .grpc_addr
            .clone()
    }

    /// `ldlm-lock cluster status --json` at node `id`.
    pub(crate) fn status(&self, id: u64) -> Option<serde_json::Value> {
        status_at(&self.node(id).ipc)
    }

    /// The leader every running node agrees on.
    pub(crate) fn leader(&self) -> u64 {
        let start = Instant::now();
        loop {
            let seen: Vec<Option<u64>> = self
                .nodes
                .iter()
                .filter(|n| n.process.is_some())
                .map(|n| self.status(n.id).and_then(|s| s["leader"].as_u64()))
                .collect();
            if let Some(Some(leader)) = seen.first()
                && seen.iter().all(|s| *s == Some(*leader))
                && self.node(*leader).process.is_some()
            {
                return *leader;
            }
            if start.elapsed() >= SLACK {
                for node in self.nodes.iter().filter(|n| n.process.is_some()) {
                    let process = node.process.as_ref().expect("running");
                    let log = process.log_text();
                    let tail: Vec<&str> = log.lines().rev().take(30).collect();
                    eprintln!(
                        "node {}: status {:?}\nlast lines of its log (newest first):\n{}",
                        node.id,
                        self.status(node.id),
                        tail.join("\n")
                    );
                }
                panic!("no agreed leader: {seen:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

pub(crate) fn status_at(ipc: &Path) -> Option<serde_json::Value> {
    let output = Command::new(LOCK)
        .args([
            "-s",
            &ipc.display().to_string(),
            "cluster",
            "status",
            "--json",
        ])
        .output()
        .ok()?;
    serde_json::from_slice(&output.stdout).ok()
}

pub(crate) async fn client(addr: &str) -> LdlmClient<Channel> {
    let channel = Channel::from_shared(format!("http://{addr}"))
        .expect("uri")
        .connect_timeout(Duration::from_secs(2))
        .connect()
        .await
        .expect("connects");
    LdlmClient::new(channel)
}
