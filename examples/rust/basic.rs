//! Locks with a lease, prints the fencing token, unlocks: the `ldlm-client` crate in brief.
//!
//! Run against a server on localhost:3144 (`cargo run --bin ldlm-server`):
//!
//! ```sh
//! cargo run -p ldlm-client --example basic -- localhost:3144
//! ```
//!
//! Exits 0 on success. The test suite runs [`run`] against a fresh server
//! (`tests/e2e/examples.rs`).

use std::time::Duration;

use ldlm_client::{Client, ClientConfig, LockOptions};

/// Connects to `address`, takes `example-rust` with a 5-second lease, checks that the lock is
/// held (a second connection cannot take it), unlocks, and returns the fencing token.
pub(crate) async fn run(address: &str) -> Result<u64, ldlm_client::Error> {
    let client = Client::connect(ClientConfig::new(address)).await?;
    let options = LockOptions::new().with_lock_timeout(Duration::from_secs(5));
    let guard = client.lock("example-rust", options).await?;
    println!(
        "locked {} (key {}, fencing token {})",
        guard.name(),
        guard.key(),
        guard.fencing_token()
    );

    // Another connection is another session: it finds the lock busy.
    let other = Client::connect(ClientConfig::new(address)).await?;
    let busy = other.try_lock("example-rust", options).await?;
    assert!(busy.is_none(), "a second client got a held lock");
    println!("a second client finds it busy");

    let token = guard.fencing_token();
    guard.unlock().await?;
    println!("unlocked");
    Ok(token)
}

#[allow(dead_code)] // Unused when the test suite includes this file as a module.
#[tokio::main]
async fn main() -> std::process::ExitCode {
    let Some(address) = std::env::args().nth(1) else {
        eprintln!("usage: basic HOST:PORT");
        return std::process::ExitCode::from(2);
    };
    match run(&address).await {
        Ok(_) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}
