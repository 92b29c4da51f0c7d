//! # ldlm-security
//!
//! What protects an LDLM connection, shared by everything that opens or accepts one: the
//! servers (gRPC, REST), the Rust client and `ldlm-bench`.
//!
//! - [`tls`]: rustls configurations (server, mTLS, client) with the `ring` provider, and the
//!   TLS connector the client and the load generator dial with;
//! - [`password`]: the `--password` check, in constant time, for gRPC metadata and HTTP Basic
//!   auth.
//!
//! It depends on no part of the lock service, so a client pulls in TLS without the engine.

pub mod password;
pub mod tls;
