//! Sending forwarded lock calls to the leader: alone when few are under way, several to a
//! message when many are.
//!
//! A follower sends each call of its clients to the leader over the peer service. One
//! message per call costs an HTTP/2 stream, its headers and a task at each end, and under
//! load that is much of what serving the call costs: a 3-node cluster with 16 × 16 calls in
//! flight did 30 % fewer cycles per second with its clients spread over the nodes than with
//! all of them at the leader.
//!
//! So a call that is answered as soon as its change is committed (see
//! [`Call::travels_in_batches`]) is queued per node, and its task yields once to the
//! scheduler. When it runs again it takes whatever the queue holds — its own call and any
//! that were queued meanwhile — and sends it, from a task of its own, as one message (a
//! message of one call under light load, as before). The leader handles the calls of a
//! message together, and their changes go out in the same log entries, as its group commit
//! would have put them anyway.
//!
//! Nothing else changes for a call. It keeps its own deadline and its own answer or error; a
//! message that gets no answer leaves each of its calls unanswered, to be re-sent like any
//! other (acquires carry their request id, so a re-send is never granted twice).
//!
//! **A caller that goes away** (its client cancelled, its deadline passed, its connection
//! closed) must not leave a slot held under a key nobody learned. Its call's message is not
//! cancelled with it: the message may carry other callers' calls, and even alone, cancelling
//! it would let the leader give back only a grant it had not answered yet, not one whose answer
//! was on its way. Instead a caller that goes away while its call is still queued takes it out
//! of the queue, and a grant answered to a caller that has gone is handed to
//! [`Forwarder::take_unanswered`]'s receiver, whose owner unlocks it (re-sending as any call).
//! Exactly one of the two ends sees a grant nobody received: the caller closes its side before
//! it looks, so the answer is either delivered before (the caller finds it) or refused (the
//! sender keeps it). An outcome that does not say whether a grant was made (no answer, or the
//! leader fell before its commit, which the next leader may still have) is handed over by the
//! call's request id instead: the leader is asked to give back whatever was granted for it
//! ([`Call::Abandon`]). Calls that are not queued (a Lock that waits, a node's own
//! bookkeeping) are sent from their caller's task and cancelled with it, as the leader must
//! take a waiter that left out of its queue; for a Lock, the node then has the leader give back
//! whatever it granted for the request ([`Forwarder::abandon`]), since its answer may have been
//! on its way.
//!
//! A leader of an older build does not know the batch message and answers "unknown peer
//! message"; this node then sends that node's calls one by one.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use futures_util::future::join_all;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tonic::Status;
use tonic::transport::Channel;

use crate::command::GlobalOwner;
use crate::forward::{Answer, Call, CallError, Via};
use crate::identity::ClusterIdentity;
use crate::node::PeerTls;
use crate::peer::proto::peer_client::PeerClient;
use crate::peer::{
    Credentials, FORWARD, FORWARD_BATCH, channel, credentials, decode, encode, message,
};
use crate::raft::NodeId;

/// Most calls in one message; more queued at once go out as several messages, side by side.
const MOST_PER_BATCH: usize = 64;
/// Most bytes of calls in one message (by [`Call::size_hint`]), far below the 4 MB a peer
/// accepts: names may be long (`--max_name_bytes`), and calls that fit alone must fit together.
const MOST_BYTES_PER_BATCH: usize = 512 * 1024;

/// What a forwarded call comes to: the leader's answer, or no answer from the node.
type Outcome = Result<Result<Answer, CallError>, NoAnswer>;

/// A forwarded call that got no answer from the node (connection failed, deadline passed).
#[derive(Clone, Debug, thiserror::Error)]
#[error("node {node} did not answer: {reason}")]
pub struct NoAnswer {
    /// The node.
    pub node: NodeId,
    /// Why.
    pub reason: String,
}

/// Something granted, or perhaps granted, to a caller that went away before it was answered:
/// whoever takes [`Forwarder::take_unanswered`] must give it back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Unanswered {
    /// A grant answered to a caller that had gone: unlock it by its key.
    Grant {
        /// Lock name.
        name: String,
        /// The grant's key.
        key: u128,
        /// The caller's transport.
        via: Via,
    },
    /// An acquire whose caller went away unanswered ([`Forwarder::abandon`]): a leader may
    /// have granted it, its answer on the way or lost; ask the leader to give back what was
    /// granted for the request.
    Request {
        /// The client.
        owner: GlobalOwner,
        /// The request's number.
        seq: u64,
    },
}

/// Sends forwarded calls to other nodes: one lazily connected channel per node, and its queue.
#[derive(Debug)]
pub struct Forwarder {
    routes: parking_lot::Mutex<HashMap<NodeId, Arc<Route>>>,
    credentials: Credentials,
    identity: Arc<ClusterIdentity>,
    tls: Option<PeerTls>,
    /// Numbers the queued calls, so that a caller knows its own.
    tickets: AtomicU64,
    unanswered: mpsc::UnboundedSender<Unanswered>,
    unanswered_receiver: parking_lot::Mutex<Option<mpsc::UnboundedReceiver<Unanswered>>>,
}

/// The way to one node.
#[derive(Debug)]
struct Route {
    node: NodeId,
    addr: String,
    client: PeerClient<Channel>,
    credentials: Credentials,
    identity: Arc<ClusterIdentity>,
    unanswered: mpsc::UnboundedSender<Unanswered>,
    /// Calls waiting for the next message to this node.
    queue: parking_lot::Mutex<Vec<Queued>>,
    /// The node refused a batch (an older build): its calls go one by one.
    batches_refused: AtomicBool,
}

/// A call in a node's queue.
#[derive(Debug)]
struct Queued {
    ticket: u64,
    call: Call,
    deadline: Option<Instant>,
    answer: oneshot::Sender<Outcome>,
}

impl Forwarder {
    /// A forwarder presenting `password` and this node's cluster (`identity`) to the nodes it
    /// calls, dialling them with `tls`.
    pub fn new(
        password: Option<&str>,
        tls: Option<PeerTls>,
        identity: Arc<ClusterIdentity>,
    ) -> Result<Forwarder, crate::node::NodeError> {
        let (unanswered, receiver) = mpsc::unbounded_channel();
        Ok(Forwarder {
            routes: Default::default(),
            credentials: credentials(password)?,
            identity,
            tls,
            tickets: AtomicU64::new(0),
            unanswered,
            unanswered_receiver: parking_lot::Mutex::new(Some(receiver)),
        })
    }

    /// What was granted, or may have been, to callers that had gone (see the module doc and
    /// [`Forwarder::abandon`]): it must be given back. Given once: `None` after the first
    /// call.
    pub fn take_unanswered(&self) -> Option<mpsc::UnboundedReceiver<Unanswered>> {
        self.unanswered_receiver.lock().take()
    }

    /// Sends `call` to node `node` at `addr`, waiting at most `timeout` (none: as long as it
    /// takes, e.g. a Lock without a wait timeout).
    pub async fn call(
        &self,
        node: NodeId,
        addr: &str,
        call: &Call,
        timeout: Option<Duration>,
    ) -> Outcome {
        let route = self.route(node, addr)?;
        if !call.travels_in_batches() || route.batches_refused.load(Ordering::Relaxed) {
            return route.send_one(call, timeout).await;
        }
        let deadline = timeout.map(|timeout| Instant::now() + timeout);
        let ticket = self.tickets.fetch_add(1, Ordering::Relaxed);
        let (answer, answered) = oneshot::channel();
        route.queue.lock().push(Queued {
            ticket,
            call: call.clone(),
            deadline,
            answer,
        });
        let mut waiting = Waiting {
            route: &route,
            ticket,
            call,
            answered: Some(answered),
        };
        // One turn of the scheduler: the other calls that are ready to run queue theirs.
        tokio::task::yield_now().await;
        // Sent from a task of its own even when alone: a message whose caller goes away is not
        // cancelled, so that a grant answered to nobody comes back here and is given back.
        // (Cancelled, the leader would give back only a grant it had not answered yet; one
        // whose answer was on its way would stay held under a key nobody learned.)
        let taken = std::mem::take(&mut *route.queue.lock());
        if !taken.is_empty() {
            tokio::spawn(route.clone().send_all(taken));
        }
        let outcome = async {
            let answered = waiting.answered.as_mut().expect("not taken yet");
            let outcome = answered
                .await
                .unwrap_or_else(|_| Err(route.no_answer("its message was dropped".into())));
            waiting.answered = None;
            outcome
        };
        match deadline {
            None => outcome.await,
            Some(deadline) => tokio::time::timeout_at(deadline, outcome)
                .await
                .unwrap_or_else(|_| Err(route.no_answer("the deadline passed".into()))),
        }
    }

    /// An acquire went away with its caller before its answer came, after an attempt of it
    /// that this forwarder does not give back itself (a Lock sent alone, or an attempt at this
    /// node's own leader; see the module doc): has the leader give back whatever was granted
    /// for the request.
    pub fn abandon(&self, owner: GlobalOwner, seq: u64) {
        let _ = self.unanswered.send(Unanswered::Request { owner, seq });
    }

    /// The route to `node`, made anew if its address changed.
    fn route(&self, node: NodeId, addr: &str) -> Result<Arc<Route>, NoAnswer> {
        let mut routes = self.routes.lock();
        if let Some(route) = routes.get(&node).filter(|route| route.addr == addr) {
            return Ok(route.clone());
        }
        let client =
            channel(addr, self.tls.as_ref()).map_err(|reason| NoAnswer { node, reason })?;
        let route = Arc::new(Route {
            node,
            addr: addr.to_owned(),
            client: PeerClient::new(client),
            credentials: self.credentials.clone(),
            identity: self.identity.clone(),
            unanswered: self.unanswered.clone(),
            queue: Default::default(),
            batches_refused: AtomicBool::new(false),
        });
        routes.insert(node, route.clone());
        Ok(route)
    }
}

/// A caller waiting for its queued call's answer. Dropped before the answer came (the
/// caller went away), it takes the call out of the queue if it is still there, or gives back
/// a grant that was answered to it.
struct Waiting<'a> {
    route: &'a Route,
    ticket: u64,
    call: &'a Call,
    /// `None` once the answer was received (or the call was sent by this caller itself).
    answered: Option<oneshot::Receiver<Outcome>>,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        let Some(mut answered) = self.answered.take() else {
            return;
        };
        self.route
            .queue
            .lock()
            .retain(|queued| queued.ticket != self.ticket);
        // From here the sender's answer is refused (and given back by it), or already here.
        answered.close();
        if let Ok(outcome) = answered.try_recv() {
            self.route.give_back(self.call, outcome);
        }
    }
}

impl Route {
    /// Hands what an acquire whose caller has gone may hold to be given back: a grant
    /// answered to it, by its key; a grant that may have been made without an answer (no
    /// answer came, or the leader fell before its commit, which the next leader may still
    /// have), by its request id.
    fn give_back(&self, call: &Call, outcome: Outcome) {
        let Call::Acquire {
            owner,
            seq,
            name,
            via,
            ..
        } = call
        else {
            return;
        };
        let unanswered = match outcome {
            Ok(Ok(Answer::Acquired(Some(grant)))) => Unanswered::Grant {
                name: name.clone(),
                key: grant.key,
                via: *via,
            },
            Err(_) | Ok(Err(CallError::NotLeader { .. } | CallError::NotCommitted(_))) => {
                Unanswered::Request {
                    owner: *owner,
                    seq: *seq,
                }
            }
            // Answered with nothing granted.
            Ok(_) => return,
        };
        tracing::debug!(name, "Giving back a grant whose caller went away");
        let _ = self.unanswered.send(unanswered);
    }

    fn no_answer(&self, reason: String) -> NoAnswer {
        NoAnswer {
            node: self.node,
            reason,
        }
    }

    /// Sends one message of `kind` carrying `request`, and decodes the answer.
    async fn exchange<Reply: DeserializeOwned>(
        &self,
        kind: u32,
        request: &impl Serialize,
        timeout: Option<Duration>,
    ) -> Result<Reply, Status> {
        let payload = encode(request).map_err(|e| Status::internal(e.to_string()))?;
        let message = message(kind, payload, timeout, &self.credentials, &self.identity);
        let answer = self.client.clone().raft(message).await?;
        decode(&answer.into_inner().payload).map_err(|e| Status::internal(e.to_string()))
    }

    /// Sends one call in a message of its own.
    async fn send_one(&self, call: &Call, timeout: Option<Duration>) -> Outcome {
        // Pings are this node's own contact checks, not forwarded lock calls.
        if !matches!(call, Call::Ping { .. }) {
            ldlm_service::metrics::record_forward_message();
        }
        self.exchange(FORWARD, call, timeout)
            .await
            .map_err(|status| self.no_answer(status.to_string()))
    }

    /// Sends queued calls, at most [`MOST_PER_BATCH`] to a message, and hands out the answers.
    async fn send_all(self: Arc<Self>, queued: Vec<Queued>) {
        let batches = batches(queued, |queued| queued.call.size_hint());
        join_all(batches.into_iter().map(|batch| self.send_batch(batch))).await;
    }

    /// Sends one message of queued calls (one call goes as a message of its own), and hands
    /// each caller its outcome, giving back a grant whose caller has gone.
    async fn send_batch(&self, batch: Vec<Queued>) {
        // The message may take as long as the most patient of its calls (each caller stops
        // waiting at its own deadline).
        let deadline = batch
            .iter()
            .try_fold(None, |latest: Option<Instant>, queued| {
                queued
                    .deadline
                    .map(|d| Some(latest.map_or(d, |l| l.max(d))))
            })
            .flatten();
        let timeout = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        let (calls, answers): (Vec<Call>, Vec<_>) = batch
            .into_iter()
            .map(|queued| (queued.call, queued.answer))
            .unzip();
        let outcomes: Vec<Outcome> = match calls.as_slice() {
            [call] => vec![self.send_one(call, timeout).await],
            _ => self.send_shared(&calls, timeout).await,
        };
        for ((answer, outcome), call) in answers.into_iter().zip(outcomes).zip(&calls) {
            if let Err(outcome) = answer.send(outcome) {
                self.give_back(call, outcome);
            }
        }
    }

    /// Sends several calls in one message; the outcome of each, in order.
    async fn send_shared(&self, calls: &[Call], timeout: Option<Duration>) -> Vec<Outcome> {
        ldlm_service::metrics::record_forward_message();
        match self
            .exchange::<Vec<Result<Answer, CallError>>>(FORWARD_BATCH, &calls, timeout)
            .await
        {
            Ok(outcomes) if outcomes.len() == calls.len() => outcomes.into_iter().map(Ok).collect(),
            Ok(outcomes) => {
                let reason = format!(
                    "it answered {} calls of a message of {}",
                    outcomes.len(),
                    calls.len()
                );
                vec![Err(self.no_answer(reason)); calls.len()]
            }
            Err(status) if refuses_batches(&status) => {
                tracing::info!(
                    node = self.node,
                    "A peer of an older build does not take batched calls; sending them one by one"
                );
                self.batches_refused.store(true, Ordering::Relaxed);
                join_all(calls.iter().map(|call| self.send_one(call, timeout))).await
            }
            Err(status) => vec![Err(self.no_answer(status.to_string())); calls.len()],
        }
    }
}

/// `items` in order, cut into batches of at most [`MOST_PER_BATCH`] items and
/// [`MOST_BYTES_PER_BATCH`] bytes (an item larger than that goes alone).
fn batches<T>(items: Vec<T>, size: impl Fn(&T) -> usize) -> Vec<Vec<T>> {
    let mut batches: Vec<Vec<T>> = Vec::new();
    let mut bytes = 0;
    for item in items {
        let item_bytes = size(&item);
        match batches.last_mut() {
            Some(batch)
                if batch.len() < MOST_PER_BATCH && bytes + item_bytes <= MOST_BYTES_PER_BATCH =>
            {
                bytes += item_bytes;
                batch.push(item);
            }
            _ => {
                bytes = item_bytes;
                batches.push(vec![item]);
            }
        }
    }
    batches
}

/// The answer of a node that does not know the batch message.
fn refuses_batches(status: &Status) -> bool {
    status.code() == tonic::Code::InvalidArgument
        && status.message() == format!("unknown peer message {FORWARD_BATCH}")
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use tonic::{Request, Response};

    use super::*;
    use crate::peer::proto::PeerMessage;
    use crate::peer::proto::peer_server::{Peer, PeerServer};

    /// Serves `peer` on 127.0.0.1: its address, and the server's task.
    async fn serve(peer: impl Peer) -> (String, tokio::task::JoinHandle<()>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let server = tonic::transport::Server::builder()
            .add_service(PeerServer::new(peer))
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener));
        (addr, tokio::spawn(async move { server.await.unwrap() }))
    }

    #[test]
    fn batches_are_cut_by_count_and_by_bytes() {
        let sizes = |batches: Vec<Vec<usize>>| batches.iter().map(Vec::len).collect::<Vec<_>>();
        assert_eq!(sizes(batches(vec![1; 150], |&b| b)), [64, 64, 22]);
        let half = MOST_BYTES_PER_BATCH / 2;
        assert_eq!(sizes(batches(vec![half; 5], |&b| b)), [2, 2, 1]);
        // Too large to share: alone, and the order is kept.
        let items = vec![1, MOST_BYTES_PER_BATCH + 1, 1, 1];
        assert_eq!(
            batches(items, |&b| b),
            [vec![1], vec![MOST_BYTES_PER_BATCH + 1], vec![1, 1]]
        );
        assert!(batches(Vec::<usize>::new(), |&b| b).is_empty());
    }

    /// The peer service of a build from before batches: it answers each forwarded Unlock with
    /// the call's own key (so that a mixed-up answer shows) and refuses any other message as
    /// that build does.
    #[derive(Default)]
    struct OlderLeader {
        singles: AtomicUsize,
        batches: AtomicUsize,
    }

    #[tonic::async_trait]
    impl Peer for Arc<OlderLeader> {
        async fn raft(
            &self,
            request: Request<PeerMessage>,
        ) -> Result<tonic::Response<PeerMessage>, Status> {
            let message = request.into_inner();
            if message.kind != FORWARD {
                self.batches.fetch_add(1, Ordering::Relaxed);
                return Err(Status::invalid_argument(format!(
                    "unknown peer message {}",
                    message.kind
                )));
            }
            self.singles.fetch_add(1, Ordering::Relaxed);
            let answer: Result<Answer, CallError> = match decode(&message.payload) {
                Ok(Call::Unlock { key, .. }) => Ok(Answer::ForceUnlocked(key.parse().unwrap())),
                other => panic!("unexpected {other:?}"),
            };
            Ok(Response::new(PeerMessage {
                payload: encode(&answer).unwrap(),
                ..message
            }))
        }
    }

    /// A leader that takes batches and answers each call with `answer` (at first: grants
    /// every TryLock), only after `delay`; it counts the calls that came alone.
    struct SlowLeader {
        delay: Duration,
        answer: fn(Call) -> Result<Answer, CallError>,
        singles: AtomicUsize,
        batches: AtomicUsize,
    }

    impl SlowLeader {
        fn new(delay: Duration, answer: fn(Call) -> Result<Answer, CallError>) -> Arc<Self> {
            Arc::new(SlowLeader {
                delay,
                answer,
                singles: AtomicUsize::new(0),
                batches: AtomicUsize::new(0),
            })
        }
    }

    fn grant_for(call: Call) -> Result<Answer, CallError> {
        match call {
            Call::Acquire { seq, .. } => Ok(Answer::Acquired(Some(crate::forward::GrantView {
                key: u128::from(seq),
                token: seq,
            }))),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[tonic::async_trait]
    impl Peer for Arc<SlowLeader> {
        async fn raft(
            &self,
            request: Request<PeerMessage>,
        ) -> Result<tonic::Response<PeerMessage>, Status> {
            let message = request.into_inner();
            if message.kind == FORWARD {
                self.singles.fetch_add(1, Ordering::Relaxed);
            } else {
                self.batches.fetch_add(1, Ordering::Relaxed);
            }
            tokio::time::sleep(self.delay).await;
            let payload = if message.kind == FORWARD {
                encode(&(self.answer)(decode(&message.payload).unwrap()))
            } else {
                let calls: Vec<Call> = decode(&message.payload).unwrap();
                encode(&calls.into_iter().map(self.answer).collect::<Vec<_>>())
            };
            Ok(Response::new(PeerMessage {
                payload: payload.unwrap(),
                ..message
            }))
        }
    }

    fn try_lock(seq: u64) -> Call {
        Call::Acquire {
            owner: crate::command::GlobalOwner { node: 1, local: 1 },
            seq,
            name: format!("lock-{seq}"),
            size: None,
            lock_timeout_seconds: None,
            wait_timeout_seconds: None,
            wait: false,
            via: crate::forward::Via::Grpc,
        }
    }

    /// Callers that stop waiting (their deadline passes, or they are cancelled) before the
    /// leader's answer: every grant answered to them is handed over to be given back, whether
    /// their call shared a message or went alone, and so is every call whose message timed
    /// out.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn grants_answered_to_callers_that_went_away_are_given_back() {
        let leader = SlowLeader::new(Duration::from_millis(300), grant_for);
        let (addr, server) = serve(leader.clone()).await;
        let forwarder =
            Arc::new(Forwarder::new(None, None, Arc::new(ClusterIdentity::for_tests())).unwrap());
        let mut unanswered = forwarder.take_unanswered().unwrap();
        assert!(forwarder.take_unanswered().is_none(), "given once");

        // 40 callers: the first 20 give up at their deadline, the other 20 are cancelled.
        let calls: Vec<_> = (1..=40u64)
            .map(|seq| {
                let (forwarder, addr) = (forwarder.clone(), addr.clone());
                let timeout = if seq <= 20 {
                    Duration::from_millis(100)
                } else {
                    Duration::from_secs(10)
                };
                tokio::spawn(async move {
                    forwarder
                        .call(2, &addr, &try_lock(seq), Some(timeout))
                        .await
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(100)).await;
        for (i, call) in calls.into_iter().enumerate() {
            if i < 20 {
                let outcome = call.await.unwrap();
                assert!(outcome.is_err(), "call {} was answered: {outcome:?}", i + 1);
            } else {
                call.abort();
            }
        }
        // The cancelled callers' calls went in messages waiting 10 s: the leader's grant for
        // each is handed over by its key. A caller whose deadline passed is handed over too,
        // by its key or, when its message timed out, by its request id (the leader may have
        // granted it all the same); unless that timeout reached the caller itself first: it
        // then knows it got no sure answer (the router abandons such a request).
        let seq_of = |handed: Unanswered| match handed {
            Unanswered::Grant { name, key, .. } => {
                assert_eq!(name, format!("lock-{key}"));
                u64::try_from(key).unwrap()
            }
            Unanswered::Request { seq, .. } => seq,
        };
        let mut seqs = Vec::new();
        while !(21..=40).all(|seq| seqs.contains(&seq)) {
            let handed = tokio::time::timeout(Duration::from_secs(5), unanswered.recv())
                .await
                .unwrap_or_else(|_| panic!("handed over in time: {seqs:?}"))
                .unwrap();
            seqs.push(seq_of(handed));
        }
        tokio::time::sleep(Duration::from_millis(400)).await;
        while let Ok(handed) = unanswered.try_recv() {
            seqs.push(seq_of(handed));
        }
        let handed = seqs.len();
        seqs.sort_unstable();
        seqs.dedup();
        assert_eq!(seqs.len(), handed, "each handed over once: {seqs:?}");
        let deadline_passed = seqs.iter().filter(|&&seq| seq <= 20).count();
        assert!(deadline_passed >= 10, "{deadline_passed} of 20: {seqs:?}");
        let (singles, batches) = (
            leader.singles.load(Ordering::Relaxed),
            leader.batches.load(Ordering::Relaxed),
        );
        eprintln!("{singles} calls alone, {batches} shared messages");
        assert!(batches > 0, "no call shared a message");
        server.abort();
    }

    /// Callers that went away before their acquire's answer, which says nothing was granted
    /// (busy), or that a grant may have been made without an answer (the leader fell before
    /// its commit, which the next leader may still have): each of the latter, and only those,
    /// is handed over to be abandoned by its request id.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn acquires_left_unsure_for_callers_that_went_away_are_abandoned() {
        fn busy_or_falling(call: Call) -> Result<Answer, CallError> {
            match call {
                Call::Acquire { seq, .. } if seq % 2 == 0 => Ok(Answer::Acquired(None)),
                Call::Acquire { .. } => Err(CallError::NotCommitted("deposed".into())),
                other => panic!("unexpected {other:?}"),
            }
        }
        let leader = SlowLeader::new(Duration::from_millis(200), busy_or_falling);
        let (addr, server) = serve(leader.clone()).await;
        let forwarder =
            Arc::new(Forwarder::new(None, None, Arc::new(ClusterIdentity::for_tests())).unwrap());
        let mut unanswered = forwarder.take_unanswered().unwrap();
        let calls: Vec<_> = (1..=20u64)
            .map(|seq| {
                let (forwarder, addr) = (forwarder.clone(), addr.clone());
                let timeout = Some(Duration::from_secs(10));
                tokio::spawn(async move { forwarder.call(2, &addr, &try_lock(seq), timeout).await })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(50)).await;
        for call in &calls {
            call.abort();
        }
        let mut abandoned = Vec::new();
        while abandoned.len() < 10 {
            let next = tokio::time::timeout(Duration::from_secs(5), unanswered.recv())
                .await
                .expect("handed over in time")
                .unwrap();
            let Unanswered::Request { seq, .. } = next else {
                panic!("{next:?}");
            };
            abandoned.push(seq);
        }
        abandoned.sort_unstable();
        assert_eq!(abandoned, (1..=20).step_by(2).collect::<Vec<u64>>());
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(unanswered.try_recv().is_err(), "nothing for the busy ones");
        server.abort();
    }

    async fn unlock_at_once(forwarder: &Arc<Forwarder>, addr: &str, calls: u128) {
        let tasks: Vec<_> = (0..calls)
            .map(|key| {
                let (forwarder, addr) = (forwarder.clone(), addr.to_owned());
                tokio::spawn(async move {
                    let call = Call::Unlock {
                        name: "x".into(),
                        key: key.to_string(),
                        via: crate::forward::Via::Grpc,
                    };
                    let timeout = Some(Duration::from_secs(10));
                    (key, forwarder.call(2, &addr, &call, timeout).await)
                })
            })
            .collect();
        for task in tasks {
            let (key, outcome) = task.await.unwrap();
            match outcome {
                Ok(Ok(Answer::ForceUnlocked(answered))) => assert_eq!(answered, key),
                other => panic!("call {key} was answered {other:?}"),
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_leader_that_refuses_batches_gets_the_calls_one_by_one() {
        let leader = Arc::new(OlderLeader::default());
        let (addr, server) = serve(leader.clone()).await;
        let forwarder =
            Arc::new(Forwarder::new(None, None, Arc::new(ClusterIdentity::for_tests())).unwrap());

        // Calls made at once are queued together and tried as a batch; refused, each is sent
        // alone and answered with its own answer.
        unlock_at_once(&forwarder, &addr, 100).await;
        let refused = leader.batches.load(Ordering::Relaxed);
        assert!(refused >= 1, "no batch was tried");
        assert_eq!(leader.singles.load(Ordering::Relaxed), 100);
        // The node is known not to take batches: nothing is tried as one any more.
        unlock_at_once(&forwarder, &addr, 100).await;
        assert_eq!(leader.batches.load(Ordering::Relaxed), refused);
        assert_eq!(leader.singles.load(Ordering::Relaxed), 200);
        server.abort();
    }
}
