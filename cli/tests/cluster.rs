//! Cluster mode with real processes: three `ldlm-server` nodes on 127.0.0.1. The leader is
//! killed with SIGKILL while clients of both followers hold locks and others wait: the holds
//! survive with their keys, the holders renew and unlock through their own nodes, the waiters
//! are granted, fencing tokens keep increasing, and the killed node restarts on its data
//! directory and catches up. Other tests pause or kill nodes at the worst moment for one
//! promise each (one of them with five nodes).

mod support;

use std::time::{Duration, Instant};

use ldlm_proto::ldlm::ldlm_client::LdlmClient;
use ldlm_proto::ldlm::{LockRequest, LockResponse, RenewRequest, TryLockRequest, UnlockRequest};
use support::cluster::{Cluster, SLACK, client};
use tonic::transport::Channel;

/// TryLock `name` (with a lease of `lease` seconds) through `client`.
async fn try_lock(
    client: &mut LdlmClient<Channel>,
    name: &str,
    lease: Option<i32>,
) -> LockResponse {
    client
        .try_lock(TryLockRequest {
            name: name.into(),
            lock_timeout_seconds: lease,
            ..Default::default()
        })
        .await
        .expect("rpc")
        .into_inner()
}

/// TryLock `name` through `client` with a gRPC deadline of `deadline` (none: the node's own
/// call deadline ends it), returning what the client saw, error or not.
async fn try_lock_within(
    mut client: LdlmClient<Channel>,
    name: &str,
    deadline: Option<Duration>,
) -> Result<LockResponse, tonic::Status> {
    let mut request = tonic::Request::new(TryLockRequest {
        name: name.into(),
        ..Default::default()
    });
    if let Some(deadline) = deadline {
        request.set_timeout(deadline);
    }
    client.try_lock(request).await.map(|r| r.into_inner())
}

/// Lock `name` (waiting) through `client`, in a task.
fn lock_in_task(
    mut client: LdlmClient<Channel>,
    name: &str,
) -> tokio::task::JoinHandle<Result<LockResponse, tonic::Status>> {
    let name = name.to_owned();
    tokio::spawn(async move {
        client
            .lock(LockRequest {
                name,
                ..Default::default()
            })
            .await
            .map(|r| r.into_inner())
    })
}

fn locked(response: &LockResponse, name: &str) {
    assert!(
        response.locked && response.error.is_none(),
        "{name}: {response:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_is_killed_while_followers_clients_hold_and_wait() {
    let mut cluster = Cluster::start();
    let leader = cluster.leader();
    let followers: Vec<u64> = (1..=3).filter(|&id| id != leader).collect();
    let (f1, f2) = (followers[0], followers[1]);

    // A client of each follower holds a lock; another client of each waits for it.
    let mut holder_a = client(&cluster.grpc(f1)).await;
    let a = try_lock(&mut holder_a, "a", Some(30)).await;
    locked(&a, "a");
    let mut holder_b = client(&cluster.grpc(f2)).await;
    let b = try_lock(&mut holder_b, "b", None).await;
    locked(&b, "b");
    let waits_a = lock_in_task(client(&cluster.grpc(f2)).await, "a");
    let waits_b = lock_in_task(client(&cluster.grpc(f1)).await, "b");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !waits_a.is_finished() && !waits_b.is_finished(),
        "both wait"
    );

    // The leader dies.
    cluster.stop(leader, "KILL");
    let new_leader = cluster.leader();
    assert_ne!(new_leader, leader);

    // The holders renew and unlock through their own nodes, with the keys they were given.
    let renewed = holder_a
        .renew(RenewRequest {
            name: "a".into(),
            key: a.key.clone(),
            lock_timeout_seconds: 30,
        })
        .await
        .expect("rpc")
        .into_inner();
    locked(&renewed, "a renewed");
    assert_eq!(renewed.fencing_token, a.fencing_token, "the same hold");
    for (holder, name, key) in [(&mut holder_a, "a", &a.key), (&mut holder_b, "b", &b.key)] {
        let unlocked = holder
            .unlock(UnlockRequest {
                name: name.into(),
                key: key.clone(),
            })
            .await
            .expect("rpc")
            .into_inner();
        assert!(unlocked.unlocked, "{name}: {unlocked:?}");
    }
    // The waiters, re-sent by their nodes to the new leader, are granted, with newer tokens.
    for (waiting, earlier) in [(waits_a, &a), (waits_b, &b)] {
        let granted = tokio::time::timeout(SLACK, waiting)
            .await
            .expect("granted in time")
            .expect("task")
            .expect("rpc");
        locked(&granted, &granted.name.clone());
        assert!(granted.fencing_token > earlier.fencing_token);
    }

    // The killed node restarts on its data directory and catches up.
    cluster.launch(leader);
    let start = Instant::now();
    loop {
        let reference = cluster
            .status(new_leader)
            .and_then(|s| s["applied_index"].as_u64());
        let restarted = cluster
            .status(leader)
            .and_then(|s| s["applied_index"].as_u64());
        if reference.is_some() && restarted >= reference {
            break;
        }
        assert!(
            start.elapsed() < SLACK,
            "the restarted node did not catch up: {restarted:?} < {reference:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let status = cluster.status(leader).expect("status");
    assert_eq!(status["leader"].as_u64(), Some(new_leader));
    assert_eq!(status["members"].as_array().map(Vec::len), Some(3));
}

/// A follower paused (SIGSTOP) past the session grace: the leader releases its clients' locks
/// (another client gets them); once it runs again (SIGCONT) it closes its clients' connections
/// — a Lock that was waiting there fails instead of hanging — and their keys no longer renew.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_follower_loses_its_clients_locks_and_closes_their_connections() {
    let cluster = Cluster::start_with(&["--cluster_session_grace=2s"]);
    let leader = cluster.leader();
    let paused = (1..=3).find(|&id| id != leader).expect("a follower");
    let other = (1..=3)
        .find(|&id| id != leader && id != paused)
        .expect("another follower");

    let mut holder = client(&cluster.grpc(paused)).await;
    let held = try_lock(&mut holder, "p", None).await;
    locked(&held, "p");
    let waiting = lock_in_task(client(&cluster.grpc(paused)).await, "p");
    tokio::time::sleep(Duration::from_millis(200)).await;

    cluster.signal(paused, "STOP");
    // Past the grace, the leader has released the paused node's clients: p is free.
    let mut elsewhere = client(&cluster.grpc(other)).await;
    let start = Instant::now();
    let taken = loop {
        let answer = try_lock(&mut elsewhere, "p", None).await;
        if answer.locked {
            break answer;
        }
        assert!(start.elapsed() < SLACK, "p was never released");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        start.elapsed() >= Duration::from_millis(1500),
        "not before the grace"
    );
    assert!(taken.fencing_token > held.fencing_token);

    cluster.signal(paused, "CONT");
    // The waiting Lock ends without the lock: its connection is closed (the call fails), or
    // the leader's answer that its client is gone ("session does not exist") gets through
    // first.
    let ended = tokio::time::timeout(SLACK, waiting)
        .await
        .expect("the waiting call ends")
        .expect("task");
    if let Ok(answer) = &ended {
        assert!(
            !answer.locked && answer.error.is_some(),
            "the waiting call must not get the lock: {answer:?}"
        );
    }
    // And the old key no longer renews: on the closed connection the call fails, on a new
    // one the hold is gone.
    let renewed = holder
        .renew(RenewRequest {
            name: "p".into(),
            key: held.key.clone(),
            lock_timeout_seconds: 10,
        })
        .await;
    match renewed {
        Ok(response) => assert!(!response.into_inner().locked, "the old key renewed"),
        Err(status) => assert!(
            matches!(
                status.code(),
                tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled
            ),
            "{status:?}"
        ),
    }
}

/// The leader is paused (SIGSTOP), not killed: it neither answers nor closes its connections.
/// A Lock waiting there through a follower is re-sent to the new leader as soon as one is
/// elected, and granted when the holder unlocks through its own node — while the old leader is
/// still paused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_waiting_at_a_paused_leader_moves_to_the_new_one() {
    let cluster = Cluster::start();
    let leader = cluster.leader();
    let followers: Vec<u64> = (1..=3).filter(|&id| id != leader).collect();
    let (f1, f2) = (followers[0], followers[1]);
    let mut holder = client(&cluster.grpc(f1)).await;
    let held = try_lock(&mut holder, "w", None).await;
    locked(&held, "w");
    let waiting = lock_in_task(client(&cluster.grpc(f2)).await, "w");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiting.is_finished(), "w is held: the Lock waits");

    cluster.signal(leader, "STOP");
    let start = Instant::now();
    // The holder lets go through its node once the others have a new leader.
    loop {
        let unlocked = holder
            .unlock(UnlockRequest {
                name: "w".into(),
                key: held.key.clone(),
            })
            .await
            .map(|r| r.into_inner());
        if let Ok(unlocked) = &unlocked
            && unlocked.unlocked
        {
            break;
        }
        assert!(
            start.elapsed() < SLACK,
            "the unlock never went through: {unlocked:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let granted = tokio::time::timeout(SLACK, waiting)
        .await
        .expect("granted while the old leader is still paused")
        .expect("task")
        .expect("rpc");
    locked(&granted, "w");
    assert!(granted.fencing_token > held.fencing_token);
    cluster.signal(leader, "CONT");
}

#[test]
fn inconsistent_cluster_options_exit_2_naming_the_option() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = format!("--cluster_data_dir={}", dir.path().display());
    for (args, option) in [
        (
            vec!["--cluster_node_id=1", "--cluster_peers=1=127.0.0.1:1"],
            "cluster_data_dir",
        ),
        (vec!["--cluster_node_id=1", &data], "cluster_peers"),
        (
            vec![
                "--cluster_node_id=3",
                "--cluster_peers=1=127.0.0.1:1,2=127.0.0.1:2",
                &data,
            ],
            "cluster_peers",
        ),
        (
            vec![
                "--cluster_node_id=1",
                "--cluster_peers=1=127.0.0.1:1",
                &data,
                "--state_file=/tmp/x",
            ],
            "state_file",
        ),
        (
            vec!["--cluster_node_id=1", "--cluster_peers=1=nohost", &data],
            "cluster_peers",
        ),
    ] {
        let (code, _, stderr) = support::run(&args, &[]);
        assert_eq!(code, 2, "{args:?}: {stderr}");
        assert!(stderr.contains(option), "{args:?}: {stderr}");
    }
}

/// `ldlm-lock -s <node's socket> ARGS`: (exit code, stdout, stderr).
fn lock_cli(cluster: &Cluster, node: u64, args: &[&str]) -> (i32, String, String) {
    let output = std::process::Command::new(support::cluster::LOCK)
        .arg("-s")
        .arg(&cluster.node(node).ipc)
        .args(args)
        .output()
        .expect("ldlm-lock runs");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// The member ids in `ldlm-lock cluster ... --json` output.
fn member_ids(json: &str) -> Vec<u64> {
    let status: serde_json::Value = serde_json::from_str(json).expect("status JSON");
    status["members"]
        .as_array()
        .expect("members")
        .iter()
        .filter_map(|m| m["id"].as_u64())
        .collect()
}

/// Grow 3 → 5, shrink 5 → 3 and replace a killed node with `ldlm-lock cluster add/remove`,
/// while a client holds a lock: the hold keeps its key throughout, new members serve (and
/// see it), and wrong requests get errors that say what is wrong.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_are_added_removed_and_replaced_while_a_lock_is_held() {
    let mut cluster = Cluster::start_with(&["--cluster_session_grace=2s"]);
    cluster.leader();
    let mut holder = client(&cluster.grpc(1)).await;
    let held = try_lock(&mut holder, "kept", None).await;
    locked(&held, "kept");

    // Grow to five, each new node added through a different node's socket.
    for (id, through) in [(4, 2), (5, 3)] {
        cluster.join(id);
        let member = format!("{id}={}", cluster.peer_address(id));
        let (code, out, err) = lock_cli(&cluster, through, &["cluster", "add", &member, "--json"]);
        assert_eq!(code, 0, "cluster add {member}: {err}");
        assert!(member_ids(&out).contains(&id), "{out}");
    }
    cluster.leader();
    let (_, out, _) = lock_cli(&cluster, 5, &["cluster", "status", "--json"]);
    assert_eq!(member_ids(&out), vec![1, 2, 3, 4, 5]);
    // A new member serves: it lists the held lock, and the lock is busy there.
    let (code, out, err) = lock_cli(&cluster, 5, &["list", "--json"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&held.key), "{out}");
    let mut at_five = client(&cluster.grpc(5)).await;
    assert!(!try_lock(&mut at_five, "kept", None).await.locked);
    // The new members took the cluster's id from it, which nodes of other clusters lack, and
    // `cluster status` shows it at every node.
    let cluster_id = |node: u64| {
        std::fs::read(cluster.data_dir(node).join("cluster-id")).expect("a cluster id kept")
    };
    assert_eq!(cluster_id(4), cluster_id(1));
    assert_eq!(cluster_id(5), cluster_id(1));
    let shown: Vec<_> = (1..=5)
        .map(|node| cluster.status(node).expect("status")["cluster_id"].clone())
        .collect();
    assert!(shown[0].is_string(), "{shown:?}");
    assert!(shown.iter().all(|id| *id == shown[0]), "{shown:?}");

    // Wrong requests say what is wrong and change nothing.
    let (code, _, err) = lock_cli(&cluster, 1, &["cluster", "remove", "9"]);
    assert_eq!(code, 1);
    assert!(err.contains("node 9 is not a member"), "{err}");
    let (code, _, err) = lock_cli(&cluster, 1, &["cluster", "add", "4=127.0.0.1:1"]);
    assert_eq!(code, 1);
    assert!(err.contains("already a member"), "{err}");
    let (code, _, err) = lock_cli(&cluster, 1, &["cluster", "add", "x=1"]);
    assert_eq!(code, 2, "a usage error: {err}");

    // A client of node 5 holds a lock while node 5 is removed, running on: the leader
    // releases it only after the whole grace (node 5, refused its pings, closes its clients
    // at half of it), and its holder cannot renew it any more.
    let on_five = try_lock(&mut at_five, "on5", None).await;
    locked(&on_five, "on5");
    let (code, _, err) = lock_cli(&cluster, 1, &["cluster", "remove", "5"]);
    assert_eq!(code, 0, "cluster remove 5: {err}");
    let removed = Instant::now();
    let mut elsewhere = client(&cluster.grpc(2)).await;
    loop {
        if try_lock(&mut elsewhere, "on5", None).await.locked {
            break;
        }
        assert!(removed.elapsed() < SLACK, "on5 was never released");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        removed.elapsed() >= Duration::from_millis(1500),
        "released before the grace: {:?}",
        removed.elapsed()
    );
    let renewed = at_five
        .renew(RenewRequest {
            name: "on5".into(),
            key: on_five.key.clone(),
            lock_timeout_seconds: 30,
        })
        .await;
    assert!(
        renewed.as_ref().map_or(true, |r| !r.get_ref().locked),
        "a removed node's client renewed: {renewed:?}"
    );

    // Shrink back to three: node 5 is out already; take out node 4, then stop both.
    let (code, out, err) = lock_cli(&cluster, 1, &["cluster", "remove", "4", "--json"]);
    assert_eq!(code, 0, "cluster remove 4: {err}");
    assert_eq!(member_ids(&out), vec![1, 2, 3]);
    for _ in [5, 4] {
        let mut node = cluster.nodes.pop().expect("the last node");
        if let Some(process) = node.process.as_mut() {
            process.signal("TERM");
            process.wait(SLACK);
        }
    }

    // Replace a dead node: kill 3, remove it, add a fresh node 6 in its place.
    cluster.stop(3, "KILL");
    let (code, _, err) = lock_cli(&cluster, 1, &["cluster", "remove", "3"]);
    assert_eq!(code, 0, "cluster remove 3: {err}");
    cluster.join(6);
    let member = format!("6={}", cluster.peer_address(6));
    let (code, out, err) = lock_cli(&cluster, 2, &["cluster", "add", &member, "--json"]);
    assert_eq!(code, 0, "cluster add {member}: {err}");
    assert_eq!(member_ids(&out), vec![1, 2, 6]);

    // The hold survived it all, under its key, and its holder lets it go.
    let renewed = holder
        .renew(RenewRequest {
            name: "kept".into(),
            key: held.key.clone(),
            lock_timeout_seconds: 30,
        })
        .await
        .expect("rpc")
        .into_inner();
    assert!(renewed.locked, "{renewed:?}");
    let unlocked = holder
        .unlock(UnlockRequest {
            name: "kept".into(),
            key: held.key.clone(),
        })
        .await
        .expect("rpc")
        .into_inner();
    assert!(unlocked.unlocked);
}

/// A `ldlm_client::Client` given every node's address, connected to node `id` (it starts at a
/// random node, so clients are made until one lands there).
async fn library_client_at(cluster: &Cluster, id: u64) -> ldlm_client::Client {
    let all = cluster
        .ids()
        .iter()
        .map(|&n| cluster.grpc(n))
        .collect::<Vec<_>>()
        .join(",");
    for _ in 0..100 {
        let client = ldlm_client::Client::connect(ldlm_client::ClientConfig::new(all.clone()))
            .await
            .expect("connect");
        if client.connected_to() == cluster.grpc(id) {
            return client;
        }
    }
    panic!("no client landed on node {id}");
}

/// The Rust client given every node's address, through a `kill -9` of the leader. A guard
/// whose client is at a surviving node never notices. A guard whose client was at the dead
/// leader moves with its client to another node and keeps renewing its 2 s lease there: the
/// lock stays held past its lease, until the cluster releases the dead node's sessions after
/// the grace (5 s). Only then does the guard report the loss, as a refused renewal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rust_client_moves_to_another_node_and_its_guard_renews_until_the_cluster_says_no() {
    use ldlm_client::{Client, ClientConfig, LockOptions, LostReason};

    const GRACE: Duration = Duration::from_secs(5);
    let mut cluster = Cluster::start_with(&["--cluster_session_grace=5s"]);
    let leader = cluster.leader();
    let follower = (1..=3).find(|&id| id != leader).expect("a follower");
    let at_leader = library_client_at(&cluster, leader).await;
    let at_follower = library_client_at(&cluster, follower).await;
    let lease = LockOptions::new().with_lock_timeout(Duration::from_secs(2));
    let moved = at_leader
        .try_lock("moved", lease)
        .await
        .expect("try_lock")
        .expect("free");
    let stayed = at_follower
        .try_lock("stayed", lease)
        .await
        .expect("try_lock")
        .expect("free");

    let leader_address = cluster.grpc(leader);
    cluster.stop(leader, "KILL");
    let killed = Instant::now();

    // The client of the dead node serves calls from another node.
    let fresh = at_leader
        .try_lock("fresh", LockOptions::new())
        .await
        .expect("try_lock after the kill")
        .expect("free");
    assert_ne!(at_leader.connected_to(), leader_address);
    fresh.unlock().await.expect("unlock");

    // Past the 2 s lease, both locks are still held: the guards renewed them.
    let other = Client::connect(ClientConfig::new(cluster.grpc(follower)))
        .await
        .expect("connect");
    tokio::time::sleep_until((killed + Duration::from_millis(3500)).into()).await;
    assert!(
        !moved.is_lost() && !stayed.is_lost(),
        "{:?} {:?}",
        moved.lost_reason(),
        stayed.lost_reason()
    );
    for name in ["moved", "stayed"] {
        let taken = other.try_lock(name, LockOptions::new()).await.expect(name);
        assert!(taken.is_none(), "{name} is still held 3.5 s after the kill");
    }

    // The cluster releases the dead node's sessions after the grace; the guard hears it at
    // its next renewal.
    let reason = tokio::time::timeout(SLACK, moved.lost())
        .await
        .expect("the loss is reported");
    let lost_after = killed.elapsed();
    assert!(
        matches!(reason, LostReason::Rejected(_)),
        "the cluster refused the renewal: {reason}"
    );
    assert!(
        lost_after >= GRACE - Duration::from_millis(500),
        "reported lost {lost_after:?} after the kill, before the grace"
    );
    let after = other
        .try_lock("moved", LockOptions::new())
        .await
        .expect("try_lock")
        .expect("released after the grace");
    assert!(after.fencing_token() > moved.fencing_token());

    // The guard at the surviving node never noticed.
    assert!(!stayed.is_lost(), "{:?}", stayed.lost_reason());
    stayed
        .unlock()
        .await
        .expect("unlock through the surviving node");
}

/// Five nodes whose leader has lost its quorum: three followers are paused, and the leader
/// and `near` alone cannot commit. The caller, a client of `near` or of the leader, has taken
/// one lock before (`first`): a grant made for it now gets the next token.
struct WithoutQuorum {
    cluster: Cluster,
    leader: u64,
    near: u64,
    paused: Vec<u64>,
    caller: LdlmClient<Channel>,
    first: LockResponse,
}

impl WithoutQuorum {
    async fn start(caller_at_leader: bool) -> WithoutQuorum {
        // A long grace: the caller's node must not close its connection (which would release
        // what it holds the ordinary way) while it has no leader or no quorum.
        let cluster = Cluster::start_many(5, &["--cluster_session_grace=30s"]);
        // The leader must not change between learning it and pausing the followers (five
        // nodes that just started on a busy machine may still hold an election): the caller's
        // first lock is committed, and the leader asked for again, until it stays the same.
        let mut attempt = 0;
        let (leader, near, paused, caller, first) = loop {
            let leader = cluster.leader();
            let followers: Vec<u64> = cluster
                .ids()
                .into_iter()
                .filter(|&id| id != leader)
                .collect();
            let (near, paused) = (followers[0], followers[1..].to_vec());
            let mut caller =
                client(&cluster.grpc(if caller_at_leader { leader } else { near })).await;
            let name = format!("warm-up-{attempt}");
            let first = try_lock(&mut caller, &name, None).await;
            locked(&first, &name);
            if cluster.leader() == leader {
                break (leader, near, paused, caller, first);
            }
            attempt += 1;
            assert!(attempt < 10, "the leader kept changing");
        };
        for id in &paused {
            cluster.signal(*id, "STOP");
        }
        WithoutQuorum {
            cluster,
            leader,
            near,
            paused,
            caller,
            first,
        }
    }

    /// Takes `name` through another node once it is free, and checks that the grant left
    /// behind was committed (it took a token) before it was given back: the test met the
    /// moment it is about, not a grant lost with an uncommitted log tail.
    async fn free_after_a_committed_grant(&self, at: u64, name: &str) {
        let mut other = client(&self.cluster.grpc(at)).await;
        let start = Instant::now();
        let taken = loop {
            let answer = try_lock(&mut other, name, None).await;
            if answer.locked {
                break answer;
            }
            assert!(
                start.elapsed() < SLACK,
                "{name} stayed held by a caller that was not given it: {answer:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert!(
            taken.fencing_token >= self.first.fencing_token + 2,
            "the grant left behind was never committed: {} after {}",
            taken.fencing_token,
            self.first.fencing_token
        );
    }

    /// Two of the paused followers run again: with the leader they are a quorum once more.
    fn resume_two(&self) {
        for id in &self.paused[..2] {
            self.cluster.signal(*id, "CONT");
        }
    }

    /// With the leader gone or paused, [`WithoutQuorum::resume_two`]: with `near` they are a
    /// quorum that must elect `near`, whose log is longer (the two cannot elect one of
    /// themselves without the third, which stays paused). Returns once `near` leads.
    async fn elect_near(&self) {
        self.resume_two();
        let near = self.near;
        let start = Instant::now();
        while self.cluster.status(near).and_then(|s| s["leader"].as_u64()) != Some(near) {
            assert!(start.elapsed() < SLACK, "{near} was not elected");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The end of each test: `name` comes free after a committed grant (see
    /// [`WithoutQuorum::free_after_a_committed_grant`]) while the caller's connection is still
    /// open, so what it held was not released by its end; then the last paused node runs again.
    async fn given_back(&mut self, name: &str) {
        self.free_after_a_committed_grant(self.paused[0], name)
            .await;
        let answer = try_lock(&mut self.caller, "still-here", None).await;
        locked(&answer, "still-here");
        self.cluster.signal(self.paused[2], "CONT");
    }
}

/// The worst moment for a caller that goes away: its grant has reached a follower's log but is
/// not committed, and the leader dies. The follower that forwarded the call is elected (it is
/// the only one whose log has the grant), so the grant is committed in its term and restored,
/// held by a client that was never told of it and whose connection is still open. The node
/// must give it back by itself, by the request's id: no other release would ever come.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_committed_after_its_caller_went_away_is_given_back() {
    let mut setup = WithoutQuorum::start(false).await;
    let leader = setup.leader;
    // The call reaches the leader, which grants it and replicates the grant to `near`; no
    // quorum commits it, and the caller goes away.
    let gave_up =
        try_lock_within(setup.caller.clone(), "g", Some(Duration::from_millis(500))).await;
    assert!(gave_up.is_err(), "nothing can commit: {gave_up:?}");
    tokio::time::sleep(Duration::from_millis(300)).await;

    setup.cluster.stop(leader, "KILL");
    setup.elect_near().await;

    setup.given_back("g").await;
}

/// A TryLock that no leader answers within the node's call deadline (10 s) is answered
/// "unavailable". Here its grant reached `near`'s log uncommitted, and the leader died: no node
/// can lead until the paused ones run again. Then `near` is elected, commits the grant and
/// restores it, held by a client that was told it does not hold the lock and whose connection
/// is still open. The node must give it back (nobody re-sends the call), or the client would
/// hold the lock as long as its connection lasts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_try_lock_answered_unavailable_leaves_nothing_held() {
    let mut setup = WithoutQuorum::start(false).await;
    let leader = setup.leader;
    let started = Instant::now();
    let call = tokio::spawn(try_lock_within(setup.caller.clone(), "u", None));
    // The grant reaches `near`'s log; then the leader dies.
    tokio::time::sleep(Duration::from_millis(800)).await;
    setup.cluster.stop(leader, "KILL");

    let answer = tokio::time::timeout(SLACK, call)
        .await
        .expect("answered")
        .expect("task");
    let status = answer.expect_err("no quorum, no leader: no answer but unavailable");
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(9) && waited < Duration::from_secs(13),
        "answered {waited:?} after the call, not at the 10 s deadline"
    );

    setup.elect_near().await;
    setup.given_back("u").await;
}

/// A caller of the leader itself goes away while its grant waits for a quorum: the leader gives
/// the grant back in its engine at once, but that release is only in its own log. Here the
/// grant had reached `near`'s log, the release had not, and `near` is elected while the old
/// leader is paused: the grant is committed and restored, held by a client that is still
/// connected (to the old leader, which runs again as a follower) and was never told of it.
/// The node must have the new leader give it back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_whose_release_was_lost_with_its_leader_is_given_back() {
    let mut setup = WithoutQuorum::start(true).await;
    let (leader, near) = (setup.leader, setup.near);
    let call = tokio::spawn(try_lock_within(
        setup.caller.clone(),
        "r",
        Some(Duration::from_secs(1)),
    ));
    // The grant reaches `near`'s log; `near` stops before the caller goes away, so the
    // release never reaches it.
    tokio::time::sleep(Duration::from_millis(400)).await;
    setup.cluster.signal(near, "STOP");
    let gave_up = tokio::time::timeout(SLACK, call)
        .await
        .expect("the caller's deadline ends the call")
        .expect("task");
    assert!(gave_up.is_err(), "nothing can commit: {gave_up:?}");
    tokio::time::sleep(Duration::from_millis(200)).await;

    // The old leader stops too, so that it cannot be re-elected with the release in its log,
    // and `near` runs again to be elected.
    setup.cluster.signal(leader, "STOP");
    setup.cluster.signal(near, "CONT");
    setup.elect_near().await;
    setup.cluster.signal(leader, "CONT");

    setup.given_back("r").await;
}

/// A TryLock at a leader that lost its quorum is answered "unavailable" once the node's call
/// deadline (10 s) has passed, as one forwarded there is: it does not wait for the quorum, or
/// for the node to cut itself off. What it was granted meanwhile is given back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_try_lock_at_a_leader_without_quorum_is_answered_unavailable() {
    let mut setup = WithoutQuorum::start(true).await;
    let started = Instant::now();
    let answer = try_lock_within(setup.caller.clone(), "q", None).await;
    let waited = started.elapsed();
    let status = answer.expect_err("no quorum: no answer but unavailable");
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert!(
        waited >= Duration::from_secs(9) && waited < Duration::from_secs(13),
        "answered {waited:?} after the call, not at the 10 s deadline"
    );

    setup.resume_two();
    setup.given_back("q").await;
}

/// The recommended set-up: mTLS and a password, on the client ports and between the nodes.
/// Three real nodes given one certificate each for server and client authentication form a
/// cluster (their elections and replication run over mTLS), and a client presenting its own
/// certificate and the password locks at one follower (forwarded to the leader over mTLS), so
/// a client of the other follower finds the name held. Without the password it is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_talk_mtls_with_the_password_and_serve_mtls_clients() {
    use ldlm_client::{Client, ClientConfig, Error, LockOptions, TlsConfig};

    let pki = ldlm_testkit::TestPki::generate();
    let cert = format!("--tls_cert={}", pki.node_cert().display());
    let key = format!("--tls_key={}", pki.node_key().display());
    let client_ca = format!("--client_ca={}", pki.ca().display());
    let cluster = Cluster::start_with(&[&cert, &key, &client_ca, "--password=s3cret"]);
    let leader = cluster.leader();
    let followers: Vec<u64> = (1..=3).filter(|&id| id != leader).collect();

    let config = |node: u64, password: Option<&str>| ClientConfig {
        password: password.map(str::to_owned),
        tls: Some(TlsConfig {
            ca: Some(pki.ca()),
            client_cert: Some((pki.client_cert(), pki.client_key())),
            skip_verify: false,
        }),
        ..ClientConfig::new(cluster.grpc(node))
    };
    let within = |what| move |_| panic!("{what} took longer than {SLACK:?}");

    let holder = Client::connect(config(followers[0], Some("s3cret")))
        .await
        .expect("an mTLS client connects to a follower");
    let guard = tokio::time::timeout(SLACK, holder.try_lock("mtls-task", LockOptions::new()))
        .await
        .unwrap_or_else(within("the TryLock"))
        .expect("TryLock at a follower")
        .expect("granted: forwarded to the leader and committed over mTLS");

    let other = Client::connect(config(followers[1], Some("s3cret")))
        .await
        .expect("an mTLS client connects to the other follower");
    let busy = tokio::time::timeout(SLACK, other.try_lock("mtls-task", LockOptions::new()))
        .await
        .unwrap_or_else(within("the second TryLock"))
        .expect("TryLock at the other follower");
    assert!(busy.is_none(), "the name is held cluster-wide");

    let intruder = Client::connect(config(followers[1], None))
        .await
        .expect("connects: the password is checked per call");
    let refused = tokio::time::timeout(SLACK, intruder.try_lock("mtls-task", LockOptions::new()))
        .await
        .unwrap_or_else(within("the refused TryLock"));
    assert!(
        matches!(refused, Err(Error::Unauthenticated(_))),
        "without the password: {refused:?}"
    );

    guard.unlock().await.expect("unlocked");
}

/// A node whose certificate its peers would refuse wherever they dial it does not start: under
/// mTLS, a certificate for server authentication only (peers refuse it as a client
/// certificate) exits at once with an error naming the file, the address and what to use,
/// rather than starting a node that never joins its cluster. A certificate that only fails to
/// name the node's own entry in `--cluster_peers` is a warning: the peers may dial it at
/// another address (the one given to `cluster add`, say), so the node starts.
#[test]
fn a_node_certificate_its_peers_would_refuse_stops_it_at_start() {
    let pki = ldlm_testkit::TestPki::generate();
    let dir = tempfile::tempdir().expect("tempdir");
    let port = ldlm_testkit::unused_port();
    let args = |cert: &std::path::Path, key: &std::path::Path, host: &str| {
        vec![
            "--cluster_node_id=1".to_owned(),
            format!("--cluster_peers=1={host}:{port}"),
            format!("--cluster_data_dir={}", dir.path().join(host).display()),
            format!("--tls_cert={}", cert.display()),
            format!("--tls_key={}", key.display()),
            format!("--client_ca={}", pki.ca().display()),
            "--listen_address=127.0.0.1:0".to_owned(),
            "--ipc_socket_file=".to_owned(),
        ]
    };

    let mut server = support::command()
        .args(args(&pki.server_cert(), &pki.server_key(), "127.0.0.1"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("starts");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = server.try_wait().expect("wait") {
            break status;
        }
        if started.elapsed() > SLACK {
            let _ = server.kill();
            let _ = server.wait();
            panic!("the node with a server-only certificate kept running");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut server.stderr.take().expect("piped"), &mut stderr)
        .expect("stderr");
    assert_eq!(status.code(), Some(1), "{stderr}");
    let file = pki.server_cert().display().to_string();
    let address = format!("127.0.0.1:{port}");
    for part in [file.as_str(), address.as_str(), "clientAuth"] {
        assert!(stderr.contains(part), "{part:?} in {stderr}");
    }

    // Not named: a warning, and the node serves.
    let args = args(&pki.node_cert(), &pki.node_key(), "127.0.0.2");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let node = support::Process::start_with(support::command(), &args);
    let warned = loop {
        let log = node.log_text();
        if log.contains("subject alternative name") {
            break log;
        }
        assert!(started.elapsed() < 2 * SLACK, "no warning: {log}");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(warned.contains(&format!("127.0.0.2:{port}")), "{warned}");
}

/// The leader's disk fails: every `fdatasync` it makes returns EIO, so its next log write
/// stops its Raft core. The others elect a leader without it and, after the session grace,
/// release its clients' locks. The node must not stay up as if nothing had happened: its
/// metrics still say it leads with a quorum, so it would never count itself cut off, and its
/// clients would keep their connections — believing they still hold locks that another client
/// is then granted. It exits with status 1 naming the error (its clients' connections close
/// with it), and the lock goes to a client of another node only after the grace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_whose_disk_fails_exits_and_its_clients_locks_move_on_only_after_the_grace() {
    let mut cluster = Cluster::start_with(&["--cluster_session_grace=2s"]);
    let failing = cluster.leader();
    let other = (1..=3).find(|&id| id != failing).expect("another node");

    let mut holder = client(&cluster.grpc(failing)).await;
    let held = try_lock(&mut holder, "disk", None).await;
    locked(&held, "disk");

    let mut strace = cluster.fail_disk(failing);
    // The next write at the failing node needs its log: it fails, and with it the core.
    let failed_at = Instant::now();
    let answer = try_lock_within(holder.clone(), "another", Some(SLACK)).await;
    assert!(
        !answer.as_ref().is_ok_and(|r| r.locked),
        "a grant the node could not write: {answer:?}"
    );

    let mut process = cluster.take(failing);
    let code = process.wait(SLACK);
    let _ = strace.kill();
    let _ = strace.wait();
    assert_eq!(code, Some(1), "exit status; log:\n{}", process.log_text());
    let log = process.log_text();
    assert!(
        log.contains("The cluster node failed") && log.contains("Input/output error"),
        "the log names the failure: {log}"
    );

    // Its client's connection is gone with it: the hold cannot be renewed there.
    let renewed = holder
        .renew(RenewRequest {
            name: "disk".into(),
            key: held.key.clone(),
            lock_timeout_seconds: 10,
        })
        .await;
    assert!(
        renewed.as_ref().is_err() || renewed.as_ref().is_ok_and(|r| !r.get_ref().locked),
        "the failed node still renews: {renewed:?}"
    );

    // The others release it after the grace, not before, with a higher token.
    let mut elsewhere = client(&cluster.grpc(other)).await;
    let taken = loop {
        let answer = try_lock(&mut elsewhere, "disk", None).await;
        if answer.locked {
            break answer;
        }
        assert!(failed_at.elapsed() < 2 * SLACK, "disk was never released");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        failed_at.elapsed() >= Duration::from_millis(1500),
        "released before the grace: {:?}",
        failed_at.elapsed()
    );
    assert!(taken.fencing_token > held.fencing_token);
}
