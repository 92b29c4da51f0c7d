//! The peer service: Raft's messages between nodes, over gRPC (`proto/peer.proto`).
//!
//! Each message is a postcard-encoded openraft request or answer inside a [`PeerMessage`]
//! tagged with a format version and the Raft group; a request also carries the sender's
//! cluster id, and one from another cluster is refused before it reaches Raft
//! ([`crate::identity`]). The client side ([`PeerNetwork`]) is
//! openraft's network: one lazily connected channel per peer, each call bounded by openraft's
//! own deadline. A peer that cannot be reached is reported as unreachable (openraft backs off);
//! a peer that answers with an error is reported as that error.

// openraft's `RPCError` is large and its network trait methods must return it; the helper that
// builds it does too. These errors are per RPC to a peer, nowhere near a hot path.
#![allow(clippy::result_large_err)]

use std::time::Duration;

use futures_util::future::join_all;
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status};

use std::sync::Arc;

use tokio::sync::watch;

use ldlm_security::password::Password;

use crate::forward::{Answer, Call, CallError};
use crate::identity::ClusterIdentity;
use crate::leader::Leader;
use crate::liveness::Liveness;
use crate::node::PeerTls;
use crate::raft::{Node, NodeId, TypeConfig};

/// The generated gRPC code of `proto/peer.proto`.
#[allow(missing_docs, unreachable_pub, clippy::all)]
pub mod proto {
    tonic::include_proto!("ldlm.peer.v1");
}

use proto::PeerMessage;
use proto::peer_client::PeerClient;

/// The peer message format this build writes; it reads this one and older.
pub const VERSION: u32 = 1;
/// The one Raft group there is today.
pub const GROUP: u32 = 0;

const APPEND_ENTRIES: u32 = 1;
const VOTE: u32 = 2;
const INSTALL_SNAPSHOT: u32 = 3;
/// A lock-service call forwarded to the leader ([`crate::forward::Call`]).
pub(crate) const FORWARD: u32 = 4;
/// Several forwarded calls at once, answered together (see [`crate::forwarder`]).
pub(crate) const FORWARD_BATCH: u32 = 5;

/// How long connecting to a peer may take before it counts as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

pub(crate) fn encode(value: &impl Serialize) -> Result<Vec<u8>, postcard::Error> {
    postcard::to_stdvec(value)
}

pub(crate) fn decode<T: DeserializeOwned>(payload: &[u8]) -> Result<T, postcard::Error> {
    postcard::from_bytes(payload)
}

/// The server's password as this node presents it to its peers (gRPC metadata
/// `authorization`, as clients present it).
pub(crate) type Credentials = Option<tonic::metadata::AsciiMetadataValue>;

/// Turns `--password` into peer credentials; a password that is not valid gRPC metadata is an
/// error at start (no peer could be reached with it).
pub(crate) fn credentials(password: Option<&str>) -> Result<Credentials, crate::node::NodeError> {
    password
        .map(|p| {
            p.parse().map_err(|_| {
                crate::node::NodeError::Password(
                    "the password must be printable ASCII to be sent to peers".into(),
                )
            })
        })
        .transpose()
}

fn authorize<T>(request: &mut Request<T>, credentials: &Credentials) {
    if let Some(value) = credentials {
        request
            .metadata_mut()
            .insert("authorization", value.clone());
    }
}

/// A message of `kind` carrying `payload`, presenting `credentials` and this node's
/// `cluster`, to be answered within `timeout` (none: no limit).
pub(crate) fn message(
    kind: u32,
    payload: Vec<u8>,
    timeout: Option<Duration>,
    credentials: &Credentials,
    cluster: &ClusterIdentity,
) -> Request<PeerMessage> {
    let cluster = cluster.id();
    let mut message = Request::new(PeerMessage {
        version: VERSION,
        group: GROUP,
        kind,
        payload,
        cluster: if cluster.is_nil() {
            Vec::new()
        } else {
            cluster.as_bytes().to_vec()
        },
    });
    if let Some(timeout) = timeout {
        message.set_timeout(timeout);
    }
    authorize(&mut message, credentials);
    message
}

/// A lazily connected channel to the peer at `addr`: plaintext, or TLS with this node's peer
/// client configuration (verifying the peer's certificate for the address's host).
pub(crate) fn channel(addr: &str, tls: Option<&PeerTls>) -> Result<Channel, String> {
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| e.to_string())?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true);
    Ok(match tls {
        None => endpoint.connect_lazy(),
        Some(tls) => {
            let name = ldlm_security::tls::server_name(addr)
                .ok_or_else(|| format!("{addr:?} has no valid host name for TLS"))?;
            let connector = ldlm_security::tls::TlsConnector::new(tls.client.clone(), name, addr);
            endpoint.connect_with_connector_lazy(connector)
        }
    })
}

/// openraft's network: connections to the other nodes. Every answer from a peer counts as
/// contact with it ([`Liveness`]).
#[derive(Clone, Debug)]
pub struct PeerNetwork {
    liveness: Arc<Liveness>,
    identity: Arc<ClusterIdentity>,
    credentials: Credentials,
    tls: Option<PeerTls>,
}

impl PeerNetwork {
    /// A network that records contact in `liveness`, presents `password` to peers and dials
    /// them with `tls` (or plaintext).
    pub fn new(
        liveness: Arc<Liveness>,
        identity: Arc<ClusterIdentity>,
        password: Option<&str>,
        tls: Option<PeerTls>,
    ) -> Result<PeerNetwork, crate::node::NodeError> {
        Ok(PeerNetwork {
            liveness,
            identity,
            credentials: credentials(password)?,
            tls,
        })
    }
}

impl RaftNetworkFactory<TypeConfig> for PeerNetwork {
    type Network = PeerConnection;

    async fn new_client(&mut self, target: NodeId, node: &Node) -> PeerConnection {
        PeerConnection {
            liveness: self.liveness.clone(),
            identity: self.identity.clone(),
            credentials: self.credentials.clone(),
            target,
            client: channel(&node.addr, self.tls.as_ref()).map(PeerClient::new),
        }
    }
}

/// A connection to one peer.
#[derive(Debug)]
pub struct PeerConnection {
    liveness: Arc<Liveness>,
    identity: Arc<ClusterIdentity>,
    credentials: Credentials,
    target: NodeId,
    /// The client, or why the peer's address is unusable.
    client: Result<PeerClient<Channel>, String>,
}

/// Why a call did not get an answer from the peer.
#[derive(Debug, thiserror::Error)]
enum RaftCallError {
    #[error("peer unreachable: {0}")]
    Unreachable(String),
    #[error("peer message: {0}")]
    Network(String),
}

impl PeerConnection {
    /// Sends one message and decodes the answer, `Result<Reply, RaftError<E>>`.
    async fn call<Req, Reply, E>(
        &mut self,
        kind: u32,
        request: &Req,
        option: &RPCOption,
    ) -> Result<Result<Reply, RaftError<NodeId, E>>, RaftCallError>
    where
        Req: Serialize,
        Reply: DeserializeOwned,
        E: DeserializeOwned + std::error::Error,
    {
        let client = self
            .client
            .as_mut()
            .map_err(|e| RaftCallError::Unreachable(e.clone()))?;
        let payload = encode(request).map_err(|e| RaftCallError::Network(e.to_string()))?;
        let message = message(
            kind,
            payload,
            Some(option.hard_ttl()),
            &self.credentials,
            &self.identity,
        );
        let answer = client.raft(message).await;
        if answer.is_ok() {
            // Any answer, even a refusal, is contact with the peer.
            self.liveness.heard_from(self.target);
        }
        let answer = answer.map_err(|status| match status.code() {
            tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => {
                RaftCallError::Unreachable(status.to_string())
            }
            _ => RaftCallError::Network(status.to_string()),
        })?;
        decode(&answer.into_inner().payload).map_err(|e| RaftCallError::Network(e.to_string()))
    }
}

impl RaftNetwork<TypeConfig> for PeerConnection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, Node, RaftError<NodeId>>> {
        let answer = self.call(APPEND_ENTRIES, &rpc, &option).await;
        into_result(self, answer)
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, Node, RaftError<NodeId>>> {
        let answer = self.call(VOTE, &rpc, &option).await;
        into_result(self, answer)
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, Node, RaftError<NodeId, InstallSnapshotError>>,
    > {
        let answer = self.call(INSTALL_SNAPSHOT, &rpc, &option).await;
        into_result(self, answer)
    }
}

fn into_result<Reply, E: std::error::Error>(
    connection: &PeerConnection,
    answer: Result<Result<Reply, RaftError<NodeId, E>>, RaftCallError>,
) -> Result<Reply, RPCError<NodeId, Node, RaftError<NodeId, E>>> {
    match answer {
        Ok(Ok(reply)) => Ok(reply),
        Ok(Err(remote)) => Err(RPCError::RemoteError(RemoteError::new(
            connection.target,
            remote,
        ))),
        Err(error @ RaftCallError::Unreachable(_)) => {
            Err(RPCError::Unreachable(Unreachable::new(&error)))
        }
        Err(error @ RaftCallError::Network(_)) => Err(RPCError::Network(NetworkError::new(&error))),
    }
}

/// The server side: hands each Raft message to this node's Raft, and each forwarded call to
/// this node's leader state (or answers that this node is not the leader).
#[derive(Clone)]
pub struct PeerService {
    raft: openraft::Raft<TypeConfig>,
    leading: watch::Receiver<Option<Arc<Leader>>>,
    liveness: Arc<Liveness>,
    identity: Arc<ClusterIdentity>,
    password: Option<Arc<Password>>,
}

impl PeerService {
    /// The peer service of `raft`; forwarded calls go to whatever `leading` holds.
    pub fn new(
        raft: openraft::Raft<TypeConfig>,
        leading: watch::Receiver<Option<Arc<Leader>>>,
        liveness: Arc<Liveness>,
        identity: Arc<ClusterIdentity>,
        password: Option<&str>,
    ) -> PeerService {
        PeerService {
            raft,
            leading,
            liveness,
            identity,
            password: password.and_then(Password::from_config).map(Arc::new),
        }
    }

    async fn forward(&self, call: Call) -> Result<Answer, CallError> {
        // A follower's ping is contact with it, as its answers to heartbeats are.
        if let Call::Ping { from } = call {
            self.liveness.heard_from(from);
        }
        let leader = self.leading.borrow().clone();
        match leader {
            Some(leader) if !leader.is_deposed() => leader.serve(call).await,
            _ => Err(CallError::NotLeader {
                leader: self.raft.metrics().borrow().current_leader,
            }),
        }
    }

    /// As a tonic service.
    pub fn into_server(self) -> proto::peer_server::PeerServer<PeerService> {
        proto::peer_server::PeerServer::new(self)
    }
}

fn bad_message(error: postcard::Error) -> Status {
    Status::invalid_argument(format!("peer message does not decode: {error}"))
}

#[tonic::async_trait]
impl proto::peer_server::Peer for PeerService {
    async fn raft(&self, request: Request<PeerMessage>) -> Result<Response<PeerMessage>, Status> {
        if let Some(password) = &self.password {
            let presented = request
                .metadata()
                .get("authorization")
                .map(|value| value.as_bytes());
            if let Err(refused) = password.check_grpc(presented) {
                tracing::warn!(reason = %refused, "Invalid password from a cluster peer");
                return Err(Status::unauthenticated(refused.to_string()));
            }
        }
        // A node whose Raft core stopped on an error takes no part any more, and must not
        // look alive: any answer counts as contact, and a leader keeps the locks of a node it
        // is in contact with.
        if let Some(failure) = crate::node::core_failure(&self.raft.metrics()) {
            return Err(Status::unavailable(format!(
                "this node's Raft core stopped: {failure}"
            )));
        }
        let message = request.into_inner();
        if message.version > VERSION {
            return Err(Status::failed_precondition(format!(
                "peer message format {} is newer than this node's ({VERSION}): upgrade this node",
                message.version
            )));
        }
        if message.group != GROUP {
            return Err(Status::not_found(format!(
                "no Raft group {}",
                message.group
            )));
        }
        let cluster = match message.cluster.len() {
            0 => uuid::Uuid::nil(),
            _ => uuid::Uuid::from_slice(&message.cluster).map_err(|_| {
                Status::invalid_argument(format!(
                    "peer message cluster id of {} bytes: expected 16",
                    message.cluster.len()
                ))
            })?,
        };
        self.identity
            .admit(cluster)
            .map_err(Status::failed_precondition)?;
        let payload = match message.kind {
            APPEND_ENTRIES => {
                let request: AppendEntriesRequest<TypeConfig> =
                    decode(&message.payload).map_err(bad_message)?;
                // The leader's heartbeats and replication are contact with it.
                if let Some(leader) = request.vote.leader_id().voted_for() {
                    self.liveness.heard_from(leader);
                }
                encode(&self.raft.append_entries(request).await)
            }
            VOTE => {
                let request = decode(&message.payload).map_err(bad_message)?;
                encode(&self.raft.vote(request).await)
            }
            INSTALL_SNAPSHOT => {
                let request = decode(&message.payload).map_err(bad_message)?;
                encode(&self.raft.install_snapshot(request).await)
            }
            FORWARD => {
                let call: Call = decode(&message.payload).map_err(bad_message)?;
                encode(&self.forward(call).await)
            }
            FORWARD_BATCH => {
                let calls: Vec<Call> = decode(&message.payload).map_err(bad_message)?;
                // Handled together, as calls arriving at once from different clients are:
                // their changes go out in the same log entries.
                let answers = join_all(calls.into_iter().map(|call| self.forward(call))).await;
                encode(&answers)
            }
            kind => {
                return Err(Status::invalid_argument(format!(
                    "unknown peer message {kind}"
                )));
            }
        }
        .map_err(|e| Status::internal(format!("cannot encode the answer: {e}")))?;
        Ok(Response::new(PeerMessage {
            version: VERSION,
            group: GROUP,
            kind: message.kind,
            payload,
            cluster: Vec::new(),
        }))
    }
}
