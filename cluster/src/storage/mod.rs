//! What a node keeps in `--cluster_data_dir`: the Raft log and vote ([`LogStore`]), and the
//! replica's snapshots ([`StateMachine`]), in checksummed, versioned files ([`frame`]).

// openraft's `StorageError` is large (over 200 bytes) and every storage trait method must return
// it; the helpers here return it too, so that they compose with `?`. Storage errors are rare
// (a failing disk), so the size costs nothing that matters.
#![allow(clippy::result_large_err)]

pub mod frame;
mod log;
mod machine;

pub use frame::FileError;
pub use log::LogStore;
pub use machine::StateMachine;

const INCARNATION_MAGIC: &[u8; 8] = b"LDLMINCA";

/// Counts this start of the node on `dir`: the number stored there plus one, stored durably
/// before the node serves anything (so two runs never share one).
pub fn next_incarnation(dir: &std::path::Path) -> Result<u64, FileError> {
    std::fs::create_dir_all(dir).map_err(|e| FileError::io(dir, e))?;
    let path = dir.join("incarnation");
    let previous: u64 = frame::read_single(&path, INCARNATION_MAGIC, 1)?.unwrap_or(0);
    let next = previous + 1;
    frame::write_single(&path, INCARNATION_MAGIC, 1, &next)?;
    Ok(next)
}
