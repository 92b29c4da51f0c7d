//! The state file (`--state_file`): locks survive restarts and crashes.
//!
//! The engine reports every grant and release to [`StateFile`] (an
//! [`EventSink`](ldlm_engine::EventSink)), which appends checksummed records ([`format`]) to a
//! buffer. One writer thread moves the whole buffer to disk with one `write` and one
//! `fdatasync` (**group commit**): every grant that arrived while the previous fsync ran shares
//! the next one, so durable throughput grows with the number of requests in flight instead of
//! being capped at one fsync per grant. The lock service tells its client "locked" only after
//! the state file's [`Commits`](ldlm_service::Commits) say the grant's record is on disk. Releases are written in the same
//! order but nobody waits for them: a lost release only brings a lock back with a lease.
//!
//! At startup [`recover`] opens the file: [`StateFile::open`] replays it ([`load`], into a
//! [`HoldTable`]), rewrites it compacted (write a new file, fsync, rename over the old one, fsync
//! the directory), and the holds are restored into a new engine, each with a fresh lease of its
//! own length. The log is compacted the same way when it has grown well past the live set
//! (more than twice the live holds plus 100k records) and the writer has had nothing to write
//! for 20 ms; a steady trickle of records postpones it until the log holds more than four times
//! (live holds + 100k) records, when it compacts regardless.
//! The highest fencing token ever handed out is kept, so tokens never go backwards.

pub mod format;
pub mod holds;
pub mod load;
mod recover;
mod writer;

pub use holds::HoldTable;
pub use load::{LoadError, Loaded};
pub use recover::{RecoverError, Recovered, recover};
pub use writer::StateFile;
