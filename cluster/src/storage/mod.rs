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
