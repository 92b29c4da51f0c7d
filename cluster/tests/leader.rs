//! The leader's lock service on a real 3-node cluster in this process: grants are answered
//! only once committed (every replica has them), and after the leader dies the new leader's
//! engine holds the same holds — same keys, owners and tokens — and its tokens go on above.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use ldlm_cluster::leader::Leader;
use ldlm_cluster::owners;
use ldlm_cluster::{ClusterNode, GlobalOwner};
use ldlm_engine::{EngineConfig, LockRequest};
use ldlm_service::{Acquire, LocalOptions, LockService, Transport};
use tokio::net::TcpListener;

mod common;

const SLACK: Duration = Duration::from_secs(10);

async fn start_nodes(dirs: &BTreeMap<u64, tempfile::TempDir>) -> BTreeMap<u64, ClusterNode> {
    let (listeners, peers) = common::peer_listeners(dirs.keys().copied()).await;
    let mut nodes = BTreeMap::new();
    for (id, listener) in listeners {
        nodes.insert(id, start_node(dirs, &peers, id, listener).await);
    }
    nodes
}

/// Node `id` of the cluster of `peers`, on its directory in `dirs`.
async fn start_node(
    dirs: &BTreeMap<u64, tempfile::TempDir>,
    peers: &BTreeMap<u64, String>,
    id: u64,
    listener: TcpListener,
) -> ClusterNode {
    let config = common::node_config(id, peers, dirs[&id].path());
    ClusterNode::start(config, listener).await.expect("start")
}

/// The leader all running nodes agree on, and its term.
async fn agreed_leader(nodes: &BTreeMap<u64, ClusterNode>) -> (u64, u64) {
    let start = Instant::now();
    loop {
        let views: Vec<(Option<u64>, u64)> = nodes
            .values()
            .map(|n| {
                let m = n.metrics().borrow().clone();
                (m.current_leader, m.current_term)
            })
            .collect();
        if let Some((Some(leader), term)) = views.first().copied()
            && views.iter().all(|v| *v == (Some(leader), term))
            && nodes.contains_key(&leader)
        {
            return (leader, term);
        }
        assert!(start.elapsed() < SLACK, "no agreed leader: {views:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Three fresh nodes, the one they elected, and its leader state.
async fn three_nodes_led() -> (
    BTreeMap<u64, tempfile::TempDir>,
    BTreeMap<u64, ClusterNode>,
    u64,
    std::sync::Arc<Leader>,
) {
    let dirs: BTreeMap<u64, tempfile::TempDir> = (1..=3)
        .map(|id| (id, tempfile::tempdir().expect("tempdir")))
        .collect();
    let nodes = start_nodes(&dirs).await;
    let (first, term) = agreed_leader(&nodes).await;
    let leader = take_over(&nodes[&first], term).await;
    (dirs, nodes, first, leader)
}

/// Steps `leader` down and shuts every node down.
async fn stop(leader: &Leader, nodes: BTreeMap<u64, ClusterNode>) {
    leader.step_down();
    for (_, node) in nodes {
        node.shutdown().await;
    }
}

async fn take_over(node: &ClusterNode, term: u64) -> std::sync::Arc<Leader> {
    Leader::take_over(node, term, EngineConfig::default(), LocalOptions::default())
        .await
        .expect("takes over")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grants_are_committed_and_survive_the_leader() {
    let (_dirs, mut nodes, first, leader) = three_nodes_led().await;
    let service = leader.service().clone();

    // A client of node 2 takes two locks (one with a lease) through the leader.
    let client = GlobalOwner { node: 2, local: 1 };
    let owner = service.engine().owner_with_id(owners::engine_id(client));
    let request = |name| LockRequest {
        name,
        lock_timeout_seconds: Some(30),
        ..LockRequest::default()
    };
    let a = service
        .acquire(Transport::Grpc, &owner, &request("a"), Acquire::Try)
        .await
        .expect("committed")
        .expect("free");
    let b = service
        .acquire(Transport::Grpc, &owner, &request("b"), Acquire::Wait)
        .await
        .expect("committed")
        .expect("granted");
    // Answered only once committed: every replica already has both.
    for node in nodes.values() {
        let start = Instant::now();
        while node.replica().await.hold_count() < 2 {
            assert!(
                start.elapsed() < SLACK,
                "node {} lacks the grants",
                node.id()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    let on_leader = nodes[&first].replica().await;
    assert_eq!(on_leader.locks()["a"].holders[0].owner, client);
    assert_eq!(on_leader.locks()["a"].holders[0].lease_secs, 30);

    // The leader dies.
    leader.step_down();
    nodes.remove(&first).expect("running").shutdown().await;
    let (second, term) = agreed_leader(&nodes).await;
    assert_ne!(second, first);
    let leader = take_over(&nodes[&second], term).await;
    let service = leader.service().clone();
    let held = service.list().await.expect("list");
    let mut names: Vec<(String, u64, ldlm_engine::OwnerId)> = held
        .iter()
        .map(|h| (h.name.to_string(), h.fencing_token, h.owner))
        .collect();
    names.sort();
    assert_eq!(
        names,
        vec![
            ("a".into(), a.fencing_token, owners::engine_id(client)),
            ("b".into(), b.fencing_token, owners::engine_id(client)),
        ],
        "the holds survive with their owner and token"
    );
    assert!(
        held.iter().all(|h| h.lease_remaining.is_some()),
        "leases restart at now + their length"
    );
    // The old key still unlocks; the next grant's token is above every earlier one.
    let anyone = service
        .engine()
        .owner_with_id(owners::engine_id(GlobalOwner {
            node: second,
            local: 99,
        }));
    service
        .unlock(Transport::Rest, &anyone, "a", &a.key.to_string())
        .await
        .expect("the old key unlocks");
    let c = service
        .acquire(Transport::Grpc, &anyone, &request("c"), Acquire::Try)
        .await
        .expect("committed")
        .expect("free");
    assert!(c.fencing_token > b.fencing_token);
    // A node's client that is gone: releasing its owner releases its restored hold.
    let summary = service.disconnect(&owner);
    assert!(
        matches!(summary, ldlm_service::Disconnected::Released(s) if s.released == 1),
        "{summary:?}"
    );
    let start = Instant::now();
    loop {
        let names: Vec<String> = nodes[&second]
            .replica()
            .await
            .locks()
            .keys()
            .cloned()
            .collect();
        if names == ["c"] {
            break;
        }
        assert!(start.elapsed() < SLACK, "release committed: {names:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop(&leader, nodes).await;
}

/// Exactly-once re-sends: the same request (owner, sequence number) sent again — to the same
/// leader, or to the next one after the first died having committed the grant — gets the same
/// grant back (same key, same token), never a second hold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_re_sent_request_gets_the_same_grant() {
    use ldlm_cluster::forward::{Answer, Call, Via};
    let (_dirs, mut nodes, first, leader) = three_nodes_led().await;
    let client = GlobalOwner { node: 2, local: 7 };
    let call = |seq, name: &str| Call::Acquire {
        owner: client,
        seq,
        name: name.into(),
        size: Some(2),
        lock_timeout_seconds: None,
        wait_timeout_seconds: None,
        wait: false,
        via: Via::Grpc,
    };
    let Ok(Answer::Acquired(Some(granted))) = leader.serve(call(1, "r")).await else {
        panic!("granted");
    };
    let Ok(Answer::Acquired(Some(again))) = leader.serve(call(1, "r")).await else {
        panic!("answered");
    };
    assert_eq!(again, granted, "the same grant, not a second slot");
    assert_eq!(leader.service().list().await.expect("list").len(), 1);
    // A new request of the same client is a new grant.
    let Ok(Answer::Acquired(Some(second))) = leader.serve(call(2, "r")).await else {
        panic!("granted");
    };
    assert_ne!(second, granted);

    // The leader dies after committing; the request is re-sent to the next leader.
    leader.step_down();
    nodes.remove(&first).expect("running").shutdown().await;
    let (next, term) = agreed_leader(&nodes).await;
    let leader = take_over(&nodes[&next], term).await;
    let Ok(Answer::Acquired(Some(after))) = leader.serve(call(1, "r")).await else {
        panic!("answered");
    };
    assert_eq!(
        after, granted,
        "the next leader answers with the committed grant"
    );
    assert_eq!(leader.service().list().await.expect("list").len(), 2);
    stop(&leader, nodes).await;
}

/// A forwarded Lock whose caller went away: the leader gives back what it granted for the
/// request (and only that), also after a failover, and refuses the request if it arrives
/// after the abandon.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abandoned_request_is_given_back_or_refused() {
    use ldlm_cluster::forward::{Answer, Call, CallError, Via};
    let (_dirs, mut nodes, first, leader) = three_nodes_led().await;
    let client = GlobalOwner { node: 2, local: 9 };
    let lock = |seq, name: &str| Call::Acquire {
        owner: client,
        seq,
        name: name.into(),
        size: None,
        lock_timeout_seconds: None,
        wait_timeout_seconds: Some(5),
        wait: true,
        via: Via::Grpc,
    };
    let abandon = |seq| Call::Abandon { owner: client, seq };
    let names = |holds: Vec<ldlm_service::ListedHold>| {
        let mut names: Vec<String> = holds.iter().map(|h| h.name.to_string()).collect();
        names.sort();
        names
    };
    for (seq, name) in [(1, "kept"), (2, "given-back"), (3, "after-failover")] {
        let Ok(Answer::Acquired(Some(_))) = leader.serve(lock(seq, name)).await else {
            panic!("granted");
        };
    }
    assert_eq!(leader.serve(abandon(2)).await, Ok(Answer::Unlocked));
    assert_eq!(
        names(leader.service().list().await.expect("list")),
        ["after-failover", "kept"]
    );
    // Abandoned before it arrives: refused, nothing held.
    assert_eq!(leader.serve(abandon(4)).await, Ok(Answer::Unlocked));
    assert!(matches!(
        leader.serve(lock(4, "late")).await,
        Err(CallError::Refused(_))
    ));
    // Abandoning what was never granted, or twice, changes nothing.
    assert_eq!(leader.serve(abandon(2)).await, Ok(Answer::Unlocked));
    assert_eq!(leader.serve(abandon(99)).await, Ok(Answer::Unlocked));
    assert_eq!(leader.service().list().await.expect("list").len(), 2);

    // The leader dies; the next one gives back the committed grant of an abandoned request.
    leader.step_down();
    nodes.remove(&first).expect("running").shutdown().await;
    let (next, term) = agreed_leader(&nodes).await;
    let leader = take_over(&nodes[&next], term).await;
    assert_eq!(leader.serve(abandon(3)).await, Ok(Answer::Unlocked));
    assert_eq!(
        names(leader.service().list().await.expect("list")),
        ["kept"]
    );
    stop(&leader, nodes).await;
}

/// An abandon is answered only once its outcome is committed. A Lock whose caller went away
/// while its grant was being committed is given back in the leader's engine at once, but that
/// release may be committed after the grant. An abandon answered in between, by a leader that
/// then fell, would leave the next leader holding the grant with nobody left to ask for it
/// back (this happened under load in the follower cancellation test of `service.rs`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abandon_is_answered_once_its_give_back_is_committed() {
    use ldlm_cluster::forward::{Answer, Call, Via};
    let (dirs, mut nodes, first, leader) = three_nodes_led().await;
    let peers: BTreeMap<u64, String> = nodes
        .iter()
        .map(|(&id, node)| (id, node.peer_addr().to_string()))
        .collect();
    let client = GlobalOwner { node: 2, local: 11 };
    let lock = Call::Acquire {
        owner: client,
        seq: 1,
        name: "x".into(),
        size: None,
        lock_timeout_seconds: None,
        wait_timeout_seconds: Some(5),
        wait: true,
        via: Via::Grpc,
    };
    let abandon = Call::Abandon {
        owner: client,
        seq: 1,
    };
    // The followers stop: nothing commits any more.
    let followers: Vec<u64> = peers.keys().copied().filter(|&id| id != first).collect();
    for id in &followers {
        nodes.remove(id).expect("running").shutdown().await;
    }
    // The Lock's caller goes away while its grant waits for its commit.
    let attempt = tokio::time::timeout(Duration::from_millis(200), leader.serve(lock)).await;
    assert!(attempt.is_err(), "nothing can commit: {attempt:?}");
    // Asked to abandon the request, the leader cannot say it is done: the grant and its
    // release are in its log, neither committed.
    let early =
        tokio::time::timeout(Duration::from_millis(300), leader.serve(abandon.clone())).await;
    assert!(
        !matches!(early, Ok(Ok(Answer::Unlocked))),
        "abandon answered before its give-back was committed"
    );
    // The followers come back; the abandon, re-sent to whoever leads now, is answered, and
    // nothing is held.
    for &id in &followers {
        let listener = TcpListener::bind(&peers[&id]).await.expect("rebind");
        nodes.insert(id, start_node(&dirs, &peers, id, listener).await);
    }
    let (now, term) = agreed_leader(&nodes).await;
    let leader = if now == first && leader.term() == term && !leader.is_deposed() {
        leader
    } else {
        leader.step_down();
        take_over(&nodes[&now], term).await
    };
    let answer = tokio::time::timeout(SLACK, leader.serve(abandon)).await;
    assert_eq!(answer.expect("answered"), Ok(Answer::Unlocked));
    let holds = leader.service().list().await.expect("list");
    assert!(holds.is_empty(), "{holds:?}");
    stop(&leader, nodes).await;
}

/// An Unlock whose answer was lost is re-sent as `UnlockAgain`: at the next leader, after the
/// first leader committed the release and died, it is answered "unlocked", while a first
/// attempt at a released key, or a key never granted, is still refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_re_sent_unlock_is_answered_as_its_first_attempt() {
    use ldlm_cluster::forward::{Answer, Call, CallError, Via};
    use ldlm_engine::{LockError, LockKey};
    let (_dirs, mut nodes, first, leader) = three_nodes_led().await;
    let acquire = Call::Acquire {
        owner: GlobalOwner { node: 2, local: 7 },
        seq: 1,
        name: "u".into(),
        size: None,
        lock_timeout_seconds: None,
        wait_timeout_seconds: None,
        wait: false,
        via: Via::Grpc,
    };
    let Ok(Answer::Acquired(Some(granted))) = leader.serve(acquire).await else {
        panic!("granted");
    };
    let key = LockKey::from_u128(granted.key).to_string();
    let unlock = Call::Unlock {
        name: "u".into(),
        key: key.clone(),
        via: Via::Grpc,
    };
    let again = Call::UnlockAgain {
        name: "u".into(),
        key: key.clone(),
        via: Via::Grpc,
    };
    assert!(matches!(
        leader.serve(unlock.clone()).await,
        Ok(Answer::Unlocked)
    ));
    // A client unlocking twice hears the second refused, as from a single server.
    let twice = leader.serve(unlock).await;
    assert!(
        matches!(
            twice,
            Err(CallError::Lock(
                LockError::LockDoesNotExist | LockError::InvalidLockKey
            ))
        ),
        "{twice:?}"
    );

    // The leader dies after committing the release; its follower sends the Unlock again.
    leader.step_down();
    nodes.remove(&first).expect("running").shutdown().await;
    let (next, term) = agreed_leader(&nodes).await;
    let leader = take_over(&nodes[&next], term).await;
    assert!(
        matches!(leader.serve(again).await, Ok(Answer::Unlocked)),
        "the re-sent unlock is answered as its first attempt was"
    );
    let never = Call::UnlockAgain {
        name: "u".into(),
        key: LockKey::generate().to_string(),
        via: Via::Grpc,
    };
    let never = leader.serve(never).await;
    assert!(
        matches!(
            never,
            Err(CallError::Lock(
                LockError::LockDoesNotExist | LockError::InvalidLockKey
            ))
        ),
        "a key that was never released here is still refused: {never:?}"
    );
    stop(&leader, nodes).await;
}

/// A REST session that has ended is granted nothing more, even if a call names its owner.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ended_session_is_granted_nothing() {
    use ldlm_cluster::forward::{Answer, Call, CallError, Via};
    let (_dirs, nodes, _first, leader) = three_nodes_led().await;
    let Ok(Answer::SessionOpened(id, owner)) = leader.serve(Call::OpenSession).await else {
        panic!("opened");
    };
    let acquire = |seq| Call::Acquire {
        owner,
        seq,
        name: "s".into(),
        size: None,
        lock_timeout_seconds: None,
        wait_timeout_seconds: None,
        wait: false,
        via: Via::Rest,
    };
    assert!(matches!(
        leader.serve(acquire(1)).await,
        Ok(Answer::Acquired(Some(_)))
    ));
    assert!(matches!(
        leader.serve(Call::CloseSession { id }).await,
        Ok(Answer::SessionClosed(1))
    ));
    assert_eq!(
        leader.serve(acquire(2)).await,
        Err(CallError::Lock(ldlm_engine::LockError::SessionEnded))
    );
    assert!(leader.service().list().await.expect("list").is_empty());
    stop(&leader, nodes).await;
}

/// A REST session survives the leader: the next leader knows it (its cookie still works), and
/// so does the hold taken in it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_survives_the_leader() {
    use ldlm_cluster::forward::{Answer, Call, Via};
    let (_dirs, mut nodes, first, leader) = three_nodes_led().await;
    let Ok(Answer::SessionOpened(id, owner)) = leader.serve(Call::OpenSession).await else {
        panic!("opened");
    };
    let acquire = Call::Acquire {
        owner,
        seq: 1,
        name: "held-in-a-session".into(),
        size: None,
        lock_timeout_seconds: None,
        wait_timeout_seconds: None,
        wait: false,
        via: Via::Rest,
    };
    let Ok(Answer::Acquired(Some(granted))) = leader.serve(acquire).await else {
        panic!("granted");
    };
    leader.step_down();
    nodes.remove(&first).expect("running").shutdown().await;
    let (next, term) = agreed_leader(&nodes).await;
    let leader = take_over(&nodes[&next], term).await;
    assert_eq!(
        leader.serve(Call::TouchSession { id }).await,
        Ok(Answer::Session(Some(owner))),
        "the session is live at the next leader"
    );
    let holds = leader.service().list().await.expect("list");
    assert_eq!(holds.len(), 1);
    assert_eq!(holds[0].key.as_u128(), granted.key);
    // Ending it there releases the hold it took before the failover.
    assert_eq!(
        leader.serve(Call::CloseSession { id }).await,
        Ok(Answer::SessionClosed(1))
    );
    stop(&leader, nodes).await;
}
