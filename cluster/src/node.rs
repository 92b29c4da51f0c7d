//! [`ClusterNode`]: one node's Raft — its storage, its peer service, and the membership it
//! starts with.
//!
//! A fresh set of nodes given the same peer list forms the cluster by itself: each node whose
//! data directory is empty initialises the same membership (the first log entry), which is the
//! same entry on every node, so doing it on all of them (or twice) is harmless; then they elect
//! a leader. A restarted node takes its membership from its data directory instead.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use openraft::storage::RaftLogStorage as _;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::command::{Applied, Command};
use crate::identity::{ClusterIdentity, Start};
use crate::leader::Leader;
use crate::liveness::Liveness;
use crate::peer::{PeerNetwork, PeerService};
use crate::raft::{Node, NodeId, RaftServerMetrics, TypeConfig};
use crate::storage::{FileError, LogStore, StateMachine};

/// How a node runs.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// This node's id (`--cluster_node_id`).
    pub id: NodeId,
    /// The initial members, this node included: id → peer address (`--cluster_peers`).
    pub peers: BTreeMap<NodeId, String>,
    /// Where the log, the vote and snapshots live (`--cluster_data_dir`).
    pub data_dir: PathBuf,
    /// A follower that hears nothing from a leader for this long (randomised between three
    /// quarters of it and all of it) starts an election; heartbeats go every tenth of it
    /// (`--cluster_election_timeout`).
    pub election_timeout: Duration,
    /// Build a snapshot (and purge the log behind it) after this many applied entries.
    pub snapshot_every: u64,
    /// A node out of contact this long counts as gone: the leader releases the locks of its
    /// gRPC clients. A node out of contact half as long closes its clients' connections
    /// (`--cluster_session_grace`).
    pub session_grace: Duration,
    /// The server's `--password`: peers must present it, and this node presents it to them.
    pub password: Option<String>,
    /// TLS on the peer port (the server's `--tls_*` settings), or plaintext.
    pub tls: Option<PeerTls>,
    /// Join an existing cluster (`--cluster_join`): a fresh node waits to be added by the
    /// leader (`ldlm-lock cluster add`) instead of forming a cluster of `peers`.
    pub join: bool,
}

/// TLS between nodes: the server's own configuration on the peer listener (with mTLS when the
/// server requires client certificates), and the client side this node dials its peers with.
#[derive(Clone, Debug)]
pub struct PeerTls {
    /// The peer listener's configuration (ALPN `h2`).
    pub server: Arc<rustls::ServerConfig>,
    /// How this node dials its peers: the CA their certificates chain to, and its own
    /// certificate when they require one.
    pub client: Arc<rustls::ClientConfig>,
}

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// Its data directory could not be used.
    #[error(transparent)]
    Storage(#[from] FileError),
    /// openraft refused the configuration.
    #[error("cluster configuration: {0}")]
    Config(String),
    /// The peer listener has no address.
    #[error("cluster listener: {0}")]
    Listener(std::io::Error),
    /// openraft failed.
    #[error("raft: {0}")]
    Raft(String),
    /// The password cannot be sent as gRPC metadata.
    #[error("cluster: {0}")]
    Password(String),
}

/// One running node. Dropping it does not stop it: call [`ClusterNode::shutdown`].
pub struct ClusterNode {
    id: NodeId,
    /// How many times this node has started on its data directory (this start included).
    incarnation: u64,
    raft: openraft::Raft<TypeConfig>,
    /// This node's leader state while it leads (published by the lock service's seat task,
    /// read by the peer service for forwarded calls).
    leader: watch::Sender<Option<Arc<Leader>>>,
    liveness: Arc<Liveness>,
    identity: Arc<ClusterIdentity>,
    session_grace: Duration,
    password: Option<String>,
    tls: Option<PeerTls>,
    machine: StateMachine,
    log: LogStore,
    peer_addr: SocketAddr,
    stop_peer: parking_lot::Mutex<Option<tokio::sync::oneshot::Sender<()>>>,
    peer_task: parking_lot::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl std::fmt::Debug for ClusterNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterNode")
            .field("id", &self.id)
            .field("peer_addr", &self.peer_addr)
            .finish_non_exhaustive()
    }
}

impl ClusterNode {
    /// Opens the node's storage, starts Raft and the peer service on `listener`, and joins
    /// (or forms) the cluster.
    pub async fn start(
        config: NodeConfig,
        listener: TcpListener,
    ) -> Result<ClusterNode, NodeError> {
        let peer_addr = listener.local_addr().map_err(NodeError::Listener)?;
        let mut log = LogStore::open(&config.data_dir)?;
        let incarnation = crate::storage::next_incarnation(&config.data_dir)?;
        let machine = StateMachine::open(&config.data_dir)?;
        let election_ms = u64::try_from(config.election_timeout.as_millis())
            .unwrap_or(u64::MAX)
            .max(20);
        // openraft waits out the old leader's lease (its `election_timeout_max`) *and* a random
        // election timeout before it asks for votes, and a node that once lost an election to
        // a longer log (a node that restarted and stood while the others still had a leader,
        // say) waits twice `election_timeout_max` more at its next one: openraft keeps that
        // mark until then, so it delays the next real failover. With the lease at 0.4 of
        // `election_timeout` and the election at 0.2–0.4, a follower starts an election 0.6–0.8
        // of it after the last heartbeat, or 1.4–1.6 with the mark: a leader's death is
        // followed by a new leader within 2 s at the default 1 s either way. (With ½ and ¼–½
        // the marked case took 1.75–2 s before the new leader had even taken over.) The lease
        // still spans four heartbeats (every tenth).
        let raft_config = openraft::Config {
            cluster_name: "ldlm".into(),
            heartbeat_interval: (election_ms / 10).max(1),
            election_timeout_min: (election_ms / 5).max(2),
            election_timeout_max: (election_ms * 2 / 5).max(3),
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(config.snapshot_every),
            // Keep a little log behind the snapshot (up to one snapshot's worth), so a
            // follower a few entries behind catches up from the log instead of a whole
            // snapshot.
            max_in_snapshot_log_to_keep: config.snapshot_every.min(1000),
            ..Default::default()
        }
        .validate()
        .map_err(|e| NodeError::Config(e.to_string()))?;
        let fresh = {
            let state = log
                .get_log_state()
                .await
                .map_err(|e| NodeError::Raft(e.to_string()))?;
            let vote = openraft::storage::RaftLogStorage::read_vote(&mut log)
                .await
                .map_err(|e| NodeError::Raft(e.to_string()))?;
            state.last_log_id.is_none() && vote.is_none() && machine.last_applied().await.is_none()
        };
        let liveness = Arc::new(Liveness::default());
        // Before the peer service answers anything.
        let start = match (fresh, config.join) {
            (true, true) => Start::Join,
            (true, false) => Start::Form(&config.peers),
            (false, _) => Start::Restart,
        };
        let identity = Arc::new(ClusterIdentity::open(&config.data_dir, start)?);
        let raft = openraft::Raft::new(
            config.id,
            Arc::new(raft_config),
            PeerNetwork::new(
                liveness.clone(),
                identity.clone(),
                config.password.as_deref(),
                config.tls.clone(),
            )?,
            log.clone(),
            machine.clone(),
        )
        .await
        .map_err(|e| NodeError::Raft(e.to_string()))?;

        if !fresh {
            hold_back_from_elections(&raft, config.election_timeout);
        }

        let (leader, leading) = watch::channel(None);
        let (stop_peer, stopped) = tokio::sync::oneshot::channel::<()>();
        let incoming = peer_connections(listener, config.tls.as_ref().map(|t| t.server.clone()));
        let server = tonic::transport::Server::builder()
            .add_service(
                PeerService::new(
                    raft.clone(),
                    leading,
                    liveness.clone(),
                    identity.clone(),
                    config.password.as_deref(),
                )
                .into_server(),
            )
            .serve_with_incoming_shutdown(incoming, async move {
                let _ = stopped.await;
            });
        let peer_task = tokio::spawn(async move {
            if let Err(error) = server.await {
                tracing::warn!(%error, "Cluster peer service stopped with an error");
            }
        });

        if fresh && config.join {
            tracing::info!(
                node = config.id,
                "Waiting to be added to a cluster (ldlm-lock cluster add at one of its nodes)"
            );
        } else if fresh {
            let members: BTreeMap<NodeId, Node> = config
                .peers
                .iter()
                .map(|(&id, addr)| (id, Node::new(addr.clone())))
                .collect();
            // Every fresh node initialises the same membership: the same first entry everywhere.
            if let Err(error) = raft.initialize(members).await {
                tracing::debug!(%error, "Cluster already initialised");
            }
        }
        Ok(ClusterNode {
            id: config.id,
            incarnation,
            raft,
            leader,
            liveness,
            identity,
            session_grace: config.session_grace,
            password: config.password.clone(),
            tls: config.tls.clone(),
            machine,
            log,
            peer_addr,
            stop_peer: parking_lot::Mutex::new(Some(stop_peer)),
            peer_task: parking_lot::Mutex::new(Some(peer_task)),
        })
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// How many times this node has started on its data directory: its clients' owner ids
    /// carry it, so that ids of a crashed run are never reused and can be told apart.
    pub fn incarnation(&self) -> u64 {
        self.incarnation
    }

    /// Where the peer service listens.
    pub fn peer_addr(&self) -> SocketAddr {
        self.peer_addr
    }

    /// The node's Raft (for the lock service built on it, and for tests).
    pub fn raft(&self) -> &openraft::Raft<TypeConfig> {
        &self.raft
    }

    /// The highest log id known committed here.
    pub fn committed(&self) -> Option<crate::raft::LogId> {
        self.log.committed()
    }

    /// When this node last heard from each other node.
    pub fn liveness(&self) -> &Arc<Liveness> {
        &self.liveness
    }

    /// Which cluster this node belongs to.
    pub fn identity(&self) -> &Arc<ClusterIdentity> {
        &self.identity
    }

    /// TLS between nodes, if configured.
    pub fn tls(&self) -> Option<&PeerTls> {
        self.tls.as_ref()
    }

    /// The password peers present to each other.
    pub fn password(&self) -> Option<&str> {
        self.password.as_deref()
    }

    /// How long a node may be out of contact before it counts as gone.
    pub fn session_grace(&self) -> Duration {
        self.session_grace
    }

    /// This node's leader state, if it leads now.
    pub fn leading(&self) -> Option<Arc<Leader>> {
        self.leader.borrow().clone()
    }

    /// Publishes (or withdraws) this node's leader state; the one it replaces.
    pub fn set_leading(&self, leader: Option<Arc<Leader>>) -> Option<Arc<Leader>> {
        self.leader.send_replace(leader)
    }

    /// The peer address of node `id`, from the current membership.
    pub fn address_of(&self, id: NodeId) -> Option<String> {
        with_member(&self.raft, id, |node| node.addr.clone())
    }

    /// The leader this node knows of, if any.
    pub fn leader(&self) -> Option<NodeId> {
        self.raft.server_metrics().borrow().current_leader
    }

    /// Raft's metrics as they change (role, term, leader, indexes). They change several times
    /// per log entry: to wait for a change of role, term or leader, use [`Self::roles`].
    pub fn metrics(&self) -> watch::Receiver<openraft::RaftMetrics<NodeId, Node>> {
        self.raft.metrics()
    }

    /// Why this node's Raft core stopped on its own, if it did: its log or vote could not be
    /// written or read (a failing or full disk), or it panicked. Such a node takes no further
    /// part in the cluster, although its listeners still run. `None` while the core runs, and
    /// after a shutdown that [`Self::shutdown`] asked for.
    pub fn failure(&self) -> Option<String> {
        core_failure(&self.raft.metrics())
    }

    /// Resolves with [`Self::failure`] once there is one (never, if there is none).
    pub async fn failed(&self) -> String {
        let mut metrics = self.raft.metrics();
        loop {
            if let Some(failure) = core_failure(&metrics) {
                return failure;
            }
            if metrics.changed().await.is_err() {
                // The core is gone: either it said why (above, next time round) or it was
                // asked to stop, and then nothing more will come.
                return match core_failure(&metrics) {
                    Some(failure) => failure,
                    None => std::future::pending().await,
                };
            }
        }
    }

    /// This node's role, vote (term), leader and membership, changed only when one of them
    /// changes: a task waiting for a new leader is not woken by every commit.
    pub fn roles(&self) -> watch::Receiver<RaftServerMetrics> {
        self.raft.server_metrics()
    }

    /// The committed lock table as this node has applied it.
    pub async fn replica(&self) -> crate::Replica {
        self.machine.replica().await
    }

    /// The state machine (the replica as applied).
    pub fn machine(&self) -> &StateMachine {
        &self.machine
    }

    /// The last log id applied to the replica.
    pub async fn last_applied(&self) -> Option<crate::raft::LogId> {
        self.machine.last_applied().await
    }

    /// Appends `command` through the leader (this node must be it) and waits until it is
    /// committed and applied here.
    pub async fn write(&self, command: Command) -> Result<Applied, NodeError> {
        self.raft
            .client_write(command)
            .await
            .map(|written| written.data)
            .map_err(|e| NodeError::Raft(e.to_string()))
    }

    /// Stops Raft and the peer service, and closes the log after its last write. Idempotent.
    pub async fn shutdown(&self) {
        if let Some(leader) = self.leader.send_replace(None) {
            leader.step_down();
        }
        if let Err(error) = self.raft.shutdown().await {
            tracing::warn!(%error, "Raft did not shut down cleanly");
        }
        if let Some(stop) = self.stop_peer.lock().take() {
            let _ = stop.send(());
        }
        let task = self.peer_task.lock().take();
        if let Some(task) = task {
            let _ = tokio::time::timeout(Duration::from_secs(2), task).await;
        }
        self.log.close();
    }
}

/// `read` of member `id` (voter or learner) in the current membership, without copying it;
/// `None` if `id` is not a member.
pub(crate) fn with_member<T>(
    raft: &openraft::Raft<TypeConfig>,
    id: NodeId,
    read: impl FnOnce(&Node) -> T,
) -> Option<T> {
    raft.metrics()
        .borrow()
        .membership_config
        .membership()
        .get_node(&id)
        .map(read)
}

/// Keeps a restarted node from standing for election until a leader has contacted it, or for
/// 1.5 election timeouts if none does (the whole cluster restarted).
///
/// openraft 0.9 has no pre-vote. A restarted node has not heard from the leader yet, and the
/// leader retries a node it lost only every `election_timeout_max`, so the restarted node would
/// time out and stand before it is contacted: its higher term deposes a healthy leader (a
/// pause for every client), and it loses to the others' longer logs, which openraft holds
/// against it at its next election (twice `election_timeout_max` more), slowing the next real
/// failover. Holding back costs nothing when a leader exists and delays only a cold start of
/// the whole cluster.
fn hold_back_from_elections(raft: &openraft::Raft<TypeConfig>, election_timeout: Duration) {
    raft.runtime_config().elect(false);
    let raft = raft.clone();
    tokio::spawn(async move {
        let mut roles = raft.server_metrics();
        let led = roles.wait_for(|m| m.current_leader.is_some_and(|l| l != m.id));
        let _ = tokio::time::timeout(election_timeout * 3 / 2, led).await;
        raft.runtime_config().elect(true);
    });
}

/// The peer listener's connections, from the server's shared accept loop (TLS handshake off
/// the accept path), as the stream tonic serves.
fn peer_connections(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> impl futures_util::Stream<Item = std::io::Result<PeerIo>> {
    let acceptor = ldlm_listener::Acceptor::new(
        listener,
        ldlm_listener::ListenerOptions {
            name: "cluster peer",
            tls,
            // Peers are few; the limit is for a misbehaving one.
            max_connections: 1_000,
        },
        std::future::pending(),
    );
    futures_util::stream::unfold(acceptor, |mut acceptor| async move {
        let accepted = acceptor.next().await?;
        Some((Ok(PeerIo(accepted.stream, accepted.slot)), acceptor))
    })
}

/// One peer connection, as tonic serves it.
pub struct PeerIo(
    ldlm_listener::Stream,
    #[allow(dead_code)] ldlm_listener::Slot,
);

impl tonic::transport::server::Connected for PeerIo {
    type ConnectInfo = ();

    fn connect_info(&self) {}
}

impl tokio::io::AsyncRead for PeerIo {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for PeerIo {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }
}

/// Why a Raft core stopped, unless it stopped because it was asked to; read from its metrics.
/// openraft reports an error as the core's last metrics (`running_state`), but a core that
/// panicked reports nothing: its metrics end, still saying it runs.
pub(crate) fn core_failure(
    metrics: &watch::Receiver<openraft::RaftMetrics<NodeId, Node>>,
) -> Option<String> {
    let ended = metrics.has_changed().is_err();
    match &metrics.borrow().running_state {
        Err(openraft::error::Fatal::Stopped) => None,
        Err(fatal) => Some(fatal.to_string()),
        Ok(()) if ended => Some("the Raft core ended without saying why (a panic)".into()),
        Ok(()) => None,
    }
}

#[cfg(test)]
mod tests {
    use openraft::RaftMetrics;
    use openraft::error::Fatal;
    use tokio::sync::watch;

    use super::core_failure;
    use crate::raft::{ErrorSubject, ErrorVerb, storage_error};

    #[test]
    fn a_core_failure_is_an_error_or_a_core_gone_silent_but_not_a_requested_stop() {
        let (report, metrics) = watch::channel(RaftMetrics::new_initial(1));
        assert_eq!(core_failure(&metrics), None, "running");

        report.send_modify(|m| {
            m.running_state = Err(Fatal::StorageError(storage_error(
                ErrorSubject::Logs,
                ErrorVerb::Write,
                std::io::Error::other("Input/output error"),
            )))
        });
        let failure = core_failure(&metrics).expect("a storage error is a failure");
        assert!(failure.contains("Input/output error"), "{failure}");

        report.send_modify(|m| m.running_state = Err(Fatal::Stopped));
        drop(report);
        assert_eq!(core_failure(&metrics), None, "a requested stop");

        let (report, metrics) = watch::channel(RaftMetrics::new_initial(1));
        drop(report);
        let failure = core_failure(&metrics).expect("a core gone without a word");
        assert!(failure.contains("panic"), "{failure}");
    }
}
