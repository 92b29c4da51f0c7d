//! LDLM binaries (`ldlm-server`, `ldlm-lock`) and what they share.
//!
//! - [`config`]: the `ldlm-server` configuration (flags, `LDLM_*` environment variables and a
//!   JSON/YAML config file, merged as default < file < environment < flag).
//! - [`server`]: wiring the lock service and its transports together, and graceful shutdown.
//! - [`admin`]: `ldlm-lock`, the admin tool on the IPC socket.

pub mod admin;
pub mod cluster;
pub mod config;
pub mod logging;
pub mod server;

/// Go-syntax durations (`300ms`, `1h30m`), as the configuration takes them.
pub use ldlm_duration as duration;
