//! # ldlm-service
//!
//! The lock service: the one interface ([`LockService`]) that every transport — gRPC, REST,
//! the admin socket, the metrics endpoint — calls, and its local implementation
//! ([`LocalLockService`]) over the engine in this process.
//!
//! ```text
//! transports ──▶ LockService ──▶ LocalLockService ──▶ engine (lock table, timers)
//!                                      │   ▲
//!                      events ─────────┘   └──── Commits (state file or replicated log)
//! ```
//!
//! - [`api`]: the interface and its plain types; [`ServiceError`] keeps the engine's lock
//!   errors (go-ldlm's codes) apart from "not durable" and "unavailable".
//! - [`local`]: the engine, the clock, the timer driver, durability waits, metrics.
//! - [`commit`]: the seam a commit log plugs into: the log reports durable progress, the
//!   service waits for it before it answers a grant.
//! - [`sessions`]: REST sessions (cookie id → owner).
//! - [`clock`], [`driver`]: real time for the engine, and the task that fires its timers.
//! - [`metrics`]: the process-wide Prometheus registry.

pub mod api;
pub mod clock;
pub mod commit;
pub mod driver;
pub mod error;
pub mod local;
pub mod metrics;
pub mod sessions;

pub use api::{
    Acquire, ClusterStatus, Disconnected, ListedHold, LockService, MemberRole, MemberStatus,
    MembershipChange, ServiceStats,
};
pub use clock::Clock;
pub use commit::{CommitSender, Commits, NotCommitted, commit_channel};
pub use error::ServiceError;
pub use local::{LocalLockService, LocalOptions, TimerDriver};
pub use metrics::Transport;
pub use sessions::SessionId;
