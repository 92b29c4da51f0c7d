//! LDLM binaries (`ldlm-server`, `ldlm-lock`, `ldlm-bench`) and what they share.
//!
//! - [`config`]: the `ldlm-server` configuration (flags, `LDLM_*` environment variables and a
//!   JSON/YAML config file, merged as default < file < environment < flag).
//! - [`duration`]: Go-syntax durations (`300ms`, `1h30m`) as used by that configuration.

pub mod admin;
pub mod bench;
pub mod config;
pub mod duration;
pub mod logging;
pub mod metrics_http;
pub mod server;
