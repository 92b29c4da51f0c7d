//! The log store and state machine against openraft's own storage test suite (every case runs
//! on a fresh data directory), then restarts and damage on real files.

use ldlm_cluster::raft::{LogId, RaftLogReader, RaftLogStorage, RaftStateMachine, TypeConfig};
use ldlm_cluster::storage::{FileError, LogStore, StateMachine};
use ldlm_cluster::{Command, GlobalOwner, ReplicatedEvent};
use openraft::testing::{StoreBuilder, Suite};
use openraft::{CommittedLeaderId, Entry, EntryPayload, StorageError};

struct Builder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for Builder {
    async fn build(
        &self,
    ) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError<u64>> {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = LogStore::open(dir.path()).expect("log");
        let machine = StateMachine::open(dir.path()).expect("state machine");
        Ok((dir, log, machine))
    }
}

#[test]
fn openraft_storage_suite() {
    Suite::test_all(Builder).expect("the storage suite passes");
}

fn log_id(term: u64, index: u64) -> LogId {
    LogId::new(CommittedLeaderId::new(term, 1), index)
}

fn entry(term: u64, index: u64) -> Entry<TypeConfig> {
    Entry {
        log_id: log_id(term, index),
        payload: EntryPayload::Normal(Command::Events(vec![ReplicatedEvent::Granted {
            name: format!("lock-{index}"),
            key: u128::from(index),
            size: 1,
            owner: GlobalOwner { node: 1, local: 1 },
            token: index,
            lease_secs: 0,
            request: None,
        }])),
    }
}

/// Appends and waits for the flush callback (what openraft counts as stored).
async fn append(log: &mut LogStore, entries: Vec<Entry<TypeConfig>>) {
    use openraft::storage::RaftLogStorageExt as _;
    log.blocking_append(entries).await.expect("durable");
}

#[tokio::test]
async fn a_restarted_log_has_its_entries_vote_truncation_and_purge() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let mut log = LogStore::open(dir.path()).expect("open");
        append(&mut log, (1..=10).map(|i| entry(1, i)).collect()).await;
        log.truncate(log_id(1, 8)).await.expect("truncate");
        append(&mut log, vec![entry(2, 8)]).await;
        log.purge(log_id(1, 3)).await.expect("purge");
        let vote = openraft::Vote::new(2, 1);
        log.save_vote(&vote).await.expect("vote");
        log.close();
    }
    let mut log = LogStore::open(dir.path()).expect("reopen");
    let state = log.get_log_state().await.expect("state");
    assert_eq!(state.last_purged_log_id, Some(log_id(1, 3)));
    assert_eq!(state.last_log_id, Some(log_id(2, 8)));
    let entries = log.try_get_log_entries(0..100).await.expect("read");
    let ids: Vec<u64> = entries.iter().map(|e| e.log_id.index).collect();
    assert_eq!(ids, vec![4, 5, 6, 7, 8]);
    assert_eq!(entries.last().map(|e| e.log_id), Some(log_id(2, 8)));
    assert_eq!(
        log.read_vote().await.expect("vote"),
        Some(openraft::Vote::new(2, 1))
    );
}

/// A leader's vote comes back not committed: openraft would restart the node as leader of the
/// same term at once, with a log that may lack entries its followers committed.
#[tokio::test]
async fn a_restarted_leader_must_be_elected_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let mut log = LogStore::open(dir.path()).expect("open");
        let vote = openraft::Vote::new_committed(3, 1);
        log.save_vote(&vote).await.expect("vote");
        assert_eq!(log.read_vote().await.expect("vote"), Some(vote));
        log.close();
    }
    let mut log = LogStore::open(dir.path()).expect("reopen");
    assert_eq!(
        log.read_vote().await.expect("vote"),
        Some(openraft::Vote::new(3, 1)),
        "same term and candidate, not committed"
    );
}

#[tokio::test]
async fn a_torn_tail_is_dropped_and_damage_names_file_and_offset() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let mut log = LogStore::open(dir.path()).expect("open");
        append(&mut log, (1..=3).map(|i| entry(1, i)).collect()).await;
        log.close();
    }
    let path = dir.path().join("raft.log");
    let whole = std::fs::read(&path).expect("read");
    // A crash in the middle of the last append: it was never acknowledged, so it may go.
    std::fs::write(&path, &whole[..whole.len() - 5]).expect("write");
    {
        let mut log = LogStore::open(dir.path()).expect("a torn tail is no damage");
        let entries = log.try_get_log_entries(0..100).await.expect("read");
        assert_eq!(entries.len(), 2);
        append(&mut log, vec![entry(1, 3)]).await;
        log.close();
    }
    let mut log = LogStore::open(dir.path()).expect("appends after the cut are readable");
    assert_eq!(
        log.try_get_log_entries(0..100).await.expect("read").len(),
        3
    );
    log.close();

    // A flipped byte in the first record, with records after it: damage.
    let mut bytes = std::fs::read(&path).expect("read");
    bytes[8 + 8 + 4] ^= 0x55;
    std::fs::write(&path, &bytes).expect("write");
    match LogStore::open(dir.path()) {
        Err(error @ FileError::Damaged { offset: 8, .. }) => {
            assert!(
                error.to_string().contains("raft.log is damaged at byte 8"),
                "{error}"
            )
        }
        other => panic!("expected damage at byte 8: {other:?}"),
    }
}

#[tokio::test]
async fn a_snapshot_survives_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let mut machine = StateMachine::open(dir.path()).expect("open");
        machine
            .apply((1..=5).map(|i| entry(1, i)).collect::<Vec<_>>())
            .await
            .expect("apply");
        let mut builder = machine.get_snapshot_builder().await;
        use openraft::RaftSnapshotBuilder as _;
        builder.build_snapshot().await.expect("snapshot");
    }
    let machine = StateMachine::open(dir.path()).expect("reopen");
    assert_eq!(machine.last_applied().await, Some(log_id(1, 5)));
    let replica = machine.replica().await;
    assert_eq!(replica.hold_count(), 5);
    assert_eq!(replica.max_token(), 5);
}

/// The leader's commit hook: each `Events` entry of its own term, applied in log order,
/// reports the last event number the leader queued for it; blank entries, other terms and
/// other leaders' entries report nothing, and nothing is reported once it stopped watching.
#[tokio::test]
async fn the_commit_hook_reports_the_leaders_own_entries_as_they_are_applied() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut machine = StateMachine::open(dir.path()).expect("state machine");
    let (sender, commits) = ldlm_service::commit_channel();
    let leader = CommittedLeaderId::new(3, 1);
    machine.watch_commits(leader, std::sync::Arc::new(sender));
    machine.expect_commit(5);
    machine.expect_commit(9);
    machine.expect_commit(12);
    let blank = Entry::<TypeConfig> {
        log_id: LogId::new(leader, 1),
        payload: EntryPayload::Blank,
    };
    let mut of_another_node = entry(3, 3);
    of_another_node.log_id.leader_id = CommittedLeaderId::new(3, 2);
    machine
        .apply(vec![entry(2, 0), blank, of_another_node])
        .await
        .expect("apply");
    assert_eq!(commits.durable(), 0, "none of these is the leader's own");
    machine.apply(vec![entry(3, 4)]).await.expect("apply");
    assert_eq!(commits.durable(), 5);
    // Two entries applied together: the later one's number counts.
    machine
        .apply(vec![entry(3, 5), entry(3, 6)])
        .await
        .expect("apply");
    assert_eq!(commits.durable(), 12);
    machine.expect_commit(20);
    // Only the leader that registered can unregister.
    machine.stop_watching(CommittedLeaderId::new(4, 1));
    machine.apply(vec![entry(3, 7)]).await.expect("apply");
    assert_eq!(commits.durable(), 20);
    machine.expect_commit(21);
    machine.stop_watching(leader);
    machine.apply(vec![entry(3, 8)]).await.expect("apply");
    assert_eq!(
        commits.durable(),
        20,
        "a leader that stepped down hears nothing"
    );
}

/// Snapshots built from the replica and the leader's snapshots installed at the same time
/// (openraft builds in a task of its own): every write succeeds, and the file ends with the
/// newest snapshot, never an older one that finished last.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_built_while_others_are_installed_leave_the_newest_in_the_file() {
    use openraft::RaftSnapshotBuilder as _;
    const SNAPSHOTS: u64 = 60;
    // The leader's snapshots, each a few entries newer than the one before.
    let leader_dir = tempfile::tempdir().expect("tempdir");
    let mut leader = StateMachine::open(leader_dir.path()).expect("open");
    let mut snapshots = Vec::new();
    for i in 1..=SNAPSHOTS {
        leader.apply(vec![entry(1, i)]).await.expect("apply");
        let snapshot = leader
            .get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .expect("built");
        snapshots.push((snapshot.meta, snapshot.snapshot.into_inner()));
    }

    let dir = tempfile::tempdir().expect("tempdir");
    let mut follower = StateMachine::open(dir.path()).expect("open");
    follower.apply(vec![entry(1, 1)]).await.expect("apply");
    let mut builder = follower.get_snapshot_builder().await;
    let building = tokio::spawn(async move {
        for _ in 0..SNAPSHOTS {
            builder.build_snapshot().await.expect("built");
        }
    });
    for (meta, data) in &snapshots {
        follower
            .install_snapshot(meta, Box::new(std::io::Cursor::new(data.clone())))
            .await
            .expect("installed");
        tokio::task::yield_now().await;
    }
    building.await.expect("builder");
    drop(follower);
    let reopened = StateMachine::open(dir.path()).expect("reopen");
    assert_eq!(reopened.last_applied().await, Some(log_id(1, SNAPSHOTS)));
    assert_eq!(reopened.replica().await.hold_count(), SNAPSHOTS as usize);
}
