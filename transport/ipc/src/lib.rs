//! # ldlm-ipc
//!
//! The LDLM admin channel: a Unix socket (`--ipc_socket_file`, mode 0600) on which the server
//! answers `ldlm-lock list` and `ldlm-lock unlock NAME [KEY]`.
//!
//! - [`protocol`]: our own small versioned protocol, newline-delimited JSON (go-ldlm's is Go
//!   `net/rpc` with gob, which only Go speaks comfortably).
//! - [`server`]: [`bind`] (refuses a live server's socket, replaces a stale one, never deletes a
//!   regular file) and [`serve`].
//! - [`client`]: the blocking [`request`] the CLI uses.
//!
//! Unlike go-ldlm (its B3), `unlock` works: it is an admin unlock by key, or by name alone when
//! the lock has a single holder; with several holders it fails and lists their keys.

pub mod client;
pub mod protocol;
pub mod server;

pub use client::{ClientError, request};
pub use protocol::{
    ClusterEntry, LockEntry, MemberEntry, ProtocolError, Request, Response, decode_request,
};
pub use server::{IpcError, ServeOptions, bind, serve, serve_with};
