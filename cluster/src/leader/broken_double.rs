//! A deliberately broken leader, for proving that the fault suite's checker catches what it
//! must: with `LDLM_TEST_ONLY_ANSWER_BEFORE_COMMIT` set, the leader answers grants and releases
//! at once instead of after their commit, and hands each log entry to Raft only after
//! [`COMMIT_DELAY`]. A leader killed then takes the grants it answered during its last
//! moments with it: the next leader gives the same locks to others.
//!
//! Compiled into debug builds only (the tests' build): a release build ignores the variable,
//! so no deployed server can be broken this way.

use std::time::Duration;

/// How long the broken leader sits on each log entry before handing it to Raft.
pub(super) const COMMIT_DELAY: Duration = Duration::from_millis(300);

/// True if this (debug) process was asked to be the broken leader.
pub(super) fn answers_before_commit() -> bool {
    cfg!(debug_assertions) && std::env::var_os("LDLM_TEST_ONLY_ANSWER_BEFORE_COMMIT").is_some()
}
