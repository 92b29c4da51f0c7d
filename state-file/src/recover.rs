//! [`recover`]: the one way a server starts from its state file.
//!
//! Open (replay, compact) the file, build an engine whose events go to it, and restore the
//! holds into that engine: each with a fresh lease of its own length (or
//! `--default_lock_timeout` if it had none), its key, and fencing tokens continuing above the
//! highest one ever handed out. The server, the startup benchmark and the tests all start
//! this way, so none of them can restore differently.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ldlm_engine::{ConfigError, Engine, EngineConfig, HoldRecord, RestoreError, Tick};

use crate::load::LoadError;
use crate::writer::StateFile;

/// A server's state, recovered.
#[derive(Debug)]
pub struct Recovered {
    /// The engine, holding every stored hold, recording into `file`.
    pub engine: Engine,
    /// The open state file (its writer running).
    pub file: Arc<StateFile>,
    /// The holds that were restored.
    pub restored: Vec<HoldRecord>,
}

/// Why the state could not be recovered. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum RecoverError {
    /// The file could not be read or is damaged.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// The engine configuration is invalid.
    #[error("{0}")]
    Config(#[from] ConfigError),
    /// The stored holds contradict each other.
    #[error("state file {path}: {source}")]
    Restore {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        source: RestoreError,
    },
}

/// Opens the state file at `path` (missing: empty) and restores it into a new engine with
/// `config`, whose time starts at `now`. Holds stored without a lease get `default_lease`.
pub fn recover(
    path: &Path,
    config: EngineConfig,
    default_lease: Option<Duration>,
    now: Tick,
) -> Result<Recovered, RecoverError> {
    let (file, loaded) = StateFile::open(path)?;
    let engine = Engine::with_event_sink(config, now, file.sink())?;
    let restored = loaded.holds();
    engine
        .restore(&restored, default_lease, loaded.fencing_floor(), now)
        .map_err(|source| RecoverError::Restore {
            path: path.to_path_buf(),
            source,
        })?;
    Ok(Recovered {
        engine,
        file,
        restored,
    })
}
