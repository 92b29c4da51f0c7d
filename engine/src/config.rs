//! Engine configuration: everything the lock table needs to know, in one struct with documented
//! defaults. The server builds it from its flags.

use std::time::Duration;

/// Configuration of an [`crate::Engine`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EngineConfig {
    /// Number of shards of the lock table: a power of two in `1..=65536` (`--shards`).
    pub shards: usize,
    /// Longest accepted lock name in bytes (`--max_name_bytes`); longer names are refused.
    pub max_name_bytes: usize,
    /// Most clients that may wait for one lock at once; more get `TooManyWaiters`.
    pub max_waiters_per_lock: usize,
    /// How often idle, unheld locks are collected (`--lock_gc_interval`); zero disables GC.
    pub gc_interval: Duration,
    /// How long a lock must have been unused before GC may drop it (`--lock_gc_min_idle`).
    pub gc_min_idle: Duration,
    /// Whether ending an owner releases its holds (true) or keeps them held and listed under
    /// the ended owner (false: `--no_clear_on_disconnect`). Its waiters are cancelled either way.
    pub release_on_owner_end: bool,
    /// Most threads [`Engine::advance`](crate::Engine::advance) uses for a burst of timers
    /// falling due together (say 100k leases granted in the same millisecond): once one call
    /// has fired [`PARALLEL_ADVANCE_AFTER`](crate::PARALLEL_ADVANCE_AFTER) timers, the shards
    /// it has not reached yet are shared among this many threads (the caller's and scoped
    /// helpers). 1 keeps every advance on the caller's thread. The server uses its runtime's
    /// worker count.
    pub advance_threads: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            shards: 16,
            max_name_bytes: 4096,
            max_waiters_per_lock: 100_000,
            gc_interval: Duration::from_secs(30 * 60),
            gc_min_idle: Duration::from_secs(5 * 60),
            release_on_owner_end: true,
            advance_threads: 1,
        }
    }
}

/// A configuration value the engine cannot work with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

impl EngineConfig {
    /// Checks the values the engine depends on.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !self.shards.is_power_of_two() || self.shards > 65_536 {
            return Err(ConfigError(format!(
                "shards must be a power of two between 1 and 65536, not {}",
                self.shards
            )));
        }
        if self.max_name_bytes == 0 {
            return Err(ConfigError("max_name_bytes must be at least 1".into()));
        }
        if self.advance_threads == 0 || self.advance_threads > 256 {
            return Err(ConfigError(format!(
                "advance_threads must be between 1 and 256, not {}",
                self.advance_threads
            )));
        }
        if self.max_waiters_per_lock == 0 {
            return Err(ConfigError(
                "max_waiters_per_lock must be at least 1".into(),
            ));
        }
        Ok(())
    }
}
