//! The peer service: Raft's messages between nodes, over gRPC (`proto/peer.proto`).
//!
//! Each message is a postcard-encoded openraft request or answer inside a [`PeerMessage`]
//! tagged with a format version and the Raft group. The client side ([`PeerNetwork`]) is
//! openraft's network: one lazily connected channel per peer, each call bounded by openraft's
//! own deadline. A peer that cannot be reached is reported as unreachable (openraft backs off);
//! a peer that answers with an error is reported as that error.

// openraft's `RPCError` is large and its network trait methods must return it; the helper that
// builds it does too. These errors are per RPC to a peer, nowhere near a hot path.
#![allow(clippy::result_large_err)]

use std::time::Duration;

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

/// How long connecting to a peer may take before it counts as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

fn encode(value: &impl Serialize) -> Result<Vec<u8>, postcard::Error> {
    postcard::to_stdvec(value)
}

fn decode<T: DeserializeOwned>(payload: &[u8]) -> Result<T, postcard::Error> {
    postcard::from_bytes(payload)
}

/// openraft's network: connections to the other nodes.
#[derive(Clone, Debug, Default)]
pub struct PeerNetwork;

impl RaftNetworkFactory<TypeConfig> for PeerNetwork {
    type Network = PeerConnection;

    async fn new_client(&mut self, target: NodeId, node: &Node) -> PeerConnection {
        PeerConnection {
            target,
            client: Endpoint::from_shared(format!("http://{}", node.addr))
                .map(|endpoint| {
                    PeerClient::new(
                        endpoint
                            .connect_timeout(CONNECT_TIMEOUT)
                            .tcp_nodelay(true)
                            .connect_lazy(),
                    )
                })
                .map_err(|e| e.to_string()),
        }
    }
}

/// A connection to one peer.
#[derive(Debug)]
pub struct PeerConnection {
    target: NodeId,
    /// The client, or why the peer's address is unusable.
    client: Result<PeerClient<Channel>, String>,
}

/// Why a call did not get an answer from the peer.
#[derive(Debug, thiserror::Error)]
enum CallError {
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
    ) -> Result<Result<Reply, RaftError<NodeId, E>>, CallError>
    where
        Req: Serialize,
        Reply: DeserializeOwned,
        E: DeserializeOwned + std::error::Error,
    {
        let client = self
            .client
            .as_mut()
            .map_err(|e| CallError::Unreachable(e.clone()))?;
        let payload = encode(request).map_err(|e| CallError::Network(e.to_string()))?;
        let mut message = Request::new(PeerMessage {
            version: VERSION,
            group: GROUP,
            kind,
            payload,
        });
        message.set_timeout(option.hard_ttl());
        let answer = client
            .raft(message)
            .await
            .map_err(|status| match status.code() {
                tonic::Code::Unavailable
                | tonic::Code::DeadlineExceeded
                | tonic::Code::Cancelled => CallError::Unreachable(status.to_string()),
                _ => CallError::Network(status.to_string()),
            })?;
        decode(&answer.into_inner().payload).map_err(|e| CallError::Network(e.to_string()))
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
    answer: Result<Result<Reply, RaftError<NodeId, E>>, CallError>,
) -> Result<Reply, RPCError<NodeId, Node, RaftError<NodeId, E>>> {
    match answer {
        Ok(Ok(reply)) => Ok(reply),
        Ok(Err(remote)) => Err(RPCError::RemoteError(RemoteError::new(
            connection.target,
            remote,
        ))),
        Err(error @ CallError::Unreachable(_)) => {
            Err(RPCError::Unreachable(Unreachable::new(&error)))
        }
        Err(error @ CallError::Network(_)) => Err(RPCError::Network(NetworkError::new(&error))),
    }
}

/// The server side: hands each message to this node's Raft.
#[derive(Clone)]
pub struct PeerService {
    raft: openraft::Raft<TypeConfig>,
}

impl PeerService {
    /// The peer service of `raft`.
    pub fn new(raft: openraft::Raft<TypeConfig>) -> PeerService {
        PeerService { raft }
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
        let payload = match message.kind {
            APPEND_ENTRIES => {
                let request = decode(&message.payload).map_err(bad_message)?;
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
        }))
    }
}
