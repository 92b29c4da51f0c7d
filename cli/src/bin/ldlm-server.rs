//! `ldlm-server`: the lock server. All logic lives in the library (`ldlm_cli::server`).

use std::process::ExitCode;

use ldlm_cli::config::{self, Loaded};
use ldlm_cli::{logging, server};

// mimalloc: faster than glibc malloc for the small, short-lived allocations of request handling
// (keys, names, HTTP/2 frames), and less fragmentation with millions of lock entries.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let config = match config::load() {
        Ok(Loaded::Run(config)) => config,
        Ok(Loaded::Help(text)) | Ok(Loaded::Version(text)) => {
            print!("{text}");
            return ExitCode::SUCCESS;
        }
        Err(error) => {
            eprintln!("ldlm-server: {error}");
            return ExitCode::from(u8::try_from(error.exit_code()).unwrap_or(2));
        }
    };
    logging::init(config.log_level);
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if config.worker_threads > 0 {
        runtime.worker_threads(config.worker_threads);
    }
    let runtime = match runtime.enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("ldlm-server: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let mut signals = match server::ShutdownSignals::install() {
            Ok(signals) => signals,
            Err(error) => {
                eprintln!("ldlm-server: cannot install signal handlers: {error}");
                return ExitCode::FAILURE;
            }
        };
        let running = match server::start(&config).await {
            Ok(running) => running,
            Err(error) => {
                tracing::error!(error = %format!("{error:#}"), "error starting server");
                eprintln!("ldlm-server: error starting server: {error:#}");
                return ExitCode::FAILURE;
            }
        };
        // A cluster node whose Raft core failed exits with an error, so that its clients
        // move to other nodes at once and a supervisor (systemd) restarts it.
        let failure = tokio::select! {
            () = signals.wait() => None,
            failure = running.failed() => Some(failure),
        };
        match &failure {
            None => tracing::warn!("Shutting down"),
            Some(failure) => {
                tracing::error!(%failure, "The cluster node failed; shutting down");
                eprintln!("ldlm-server: the cluster node failed: {failure}");
            }
        }
        running.shutdown().await;
        tracing::warn!("Shutdown complete");
        if failure.is_some() {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        }
    })
}
