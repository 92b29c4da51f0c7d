//! The commit seam: how a grant becomes durable before the client hears "locked".
//!
//! The engine hands every change to its event sink, which gives each event a sequence number
//! (a grant carries its own as [`Grant::durable_seq`](ldlm_engine::Grant::durable_seq)). A
//! commit log — the state file today, a replicated log in cluster mode — takes those events in
//! order and reports, through a [`CommitSender`], the highest sequence number that is durable.
//! The lock service waits on the matching [`Commits`] before it answers a grant.
//!
//! Because the log keeps the engine's order, a durable grant implies that every earlier event
//! (for instance the release that freed its slot) is durable too. A log that fails reports the
//! failure once; every grant not yet durable then fails with [`NotCommitted`], and no grant is
//! confirmed after it.
//!
//! A plain `watch` channel carries the progress: one word per commit, however many waiters,
//! and no trait object on the hot path.

use std::sync::Arc;

use tokio::sync::watch;

/// Durable progress: (highest durable sequence number, first failure).
type Progress = (u64, Option<Arc<str>>);

/// A change was not made durable: the grant was given back, the client is told it failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct NotCommitted(pub String);

/// The commit log's side: reports progress to every [`Commits`].
#[derive(Debug)]
pub struct CommitSender {
    progress: watch::Sender<Progress>,
}

/// The lock service's side: waits until a sequence number is durable.
#[derive(Clone, Debug)]
pub struct Commits {
    progress: watch::Receiver<Progress>,
}

/// A connected pair: the log reports through the sender, the service waits on the receiver.
pub fn commit_channel() -> (CommitSender, Commits) {
    let (progress, receiver) = watch::channel((0, None));
    (CommitSender { progress }, Commits { progress: receiver })
}

impl CommitSender {
    /// Every event up to `seq` is durable.
    pub fn committed(&self, seq: u64) {
        // Waiters are woken only by progress: a log may report the same point twice.
        self.progress.send_if_modified(|progress| {
            let advanced = seq > progress.0;
            progress.0 = progress.0.max(seq);
            advanced
        });
    }

    /// The log cannot make anything durable any more; `reason` is what the client is told
    /// (e.g. "the state file could not be written: No space left on device"). Only the first
    /// failure is kept.
    pub fn failed(&self, reason: &str) {
        let reason: Arc<str> = Arc::from(reason);
        self.progress.send_modify(|progress| {
            progress.1.get_or_insert(reason);
        });
    }

    /// Another receiver, e.g. for a second lock service over the same log.
    pub fn subscribe(&self) -> Commits {
        Commits {
            progress: self.progress.subscribe(),
        }
    }
}

impl Commits {
    /// Resolves once event `seq` is durable. `seq` 0 (an engine without a sink) resolves at
    /// once.
    pub async fn wait(&self, seq: u64) -> Result<(), NotCommitted> {
        if seq == 0 || self.progress.borrow().0 >= seq {
            return Ok(());
        }
        let mut progress = self.progress.clone();
        let result = progress
            .wait_for(|(durable, failed)| *durable >= seq || failed.is_some())
            .await;
        match result {
            Ok(state) if state.0 >= seq => Ok(()),
            Ok(state) => Err(NotCommitted(
                state.1.as_deref().unwrap_or("unknown error").to_string(),
            )),
            Err(_) => Err(NotCommitted(
                "the commit log was closed before the change was durable".into(),
            )),
        }
    }

    /// The highest durable sequence number so far.
    pub fn durable(&self) -> u64 {
        self.progress.borrow().0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn waits_for_progress_and_reports_the_first_failure() {
        let (sender, commits) = commit_channel();
        assert_eq!(commits.wait(0).await, Ok(()));
        let waiting = tokio::spawn({
            let commits = commits.clone();
            async move { commits.wait(2).await }
        });
        sender.committed(1);
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        sender.committed(2);
        assert_eq!(waiting.await.expect("task"), Ok(()));
        // Progress never goes backwards.
        sender.committed(1);
        assert_eq!(commits.durable(), 2);
        sender.failed("disk full");
        sender.failed("second failure is not kept");
        assert_eq!(commits.wait(2).await, Ok(()), "already durable");
        assert_eq!(commits.wait(3).await, Err(NotCommitted("disk full".into())));
        drop(sender);
        assert_eq!(commits.wait(3).await, Err(NotCommitted("disk full".into())));
    }

    #[test]
    fn only_progress_wakes_the_waiters() {
        let (sender, _commits) = commit_channel();
        let mut watching = sender.progress.subscribe();
        sender.committed(2);
        assert!(watching.has_changed().expect("open"));
        watching.borrow_and_update();
        // A log may report a point twice (cluster mode: as applied, then as answered).
        sender.committed(2);
        sender.committed(1);
        assert!(!watching.has_changed().expect("open"));
        sender.committed(3);
        assert!(watching.has_changed().expect("open"));
    }

    #[tokio::test]
    async fn a_closed_log_fails_the_waiters() {
        let (sender, commits) = commit_channel();
        drop(sender);
        assert!(commits.wait(1).await.is_err());
    }
}
