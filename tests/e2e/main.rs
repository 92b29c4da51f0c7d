//! End-to-end tests: the real server, started in-process on 127.0.0.1:0 through the same
//! `ldlm_cli::server::start` the binary uses, driven by real clients over real sockets.
//!
//! - `harness`: starting servers, making clients.
//! - `readme`: the README's curl walk-through, run as printed.
//! - `python`: any-language compatibility — a Python grpcio client built from `proto/ldlm.proto`.
//! - `cross`: one lock table behind both transports (REST ↔ gRPC).
//! - `gc`: lock garbage collection and limits.
//! - `observability`: Prometheus metrics, gRPC health checking and reflection.
//! - `persistence`: the state file across a graceful restart.
//! - `examples`: every example under `examples/` (Python, curl, Rust) against a fresh server.
//! - `cluster`: the Python grpcio client against a follower of a 3-node cluster.

mod cluster;
mod cross;
mod examples;
mod gc;
mod harness;
mod observability;
mod persistence;
mod python;
mod readme;
