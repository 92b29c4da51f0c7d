//! What every LDLM transport (gRPC, REST, IPC) shares: the timer driver, wait futures and
//! sessions (added separately), TLS configuration ([`tls`]) and the password check
//! ([`password`]).

pub mod driver;
pub mod metrics;
pub mod password;
pub mod state_file;
pub mod tls;
