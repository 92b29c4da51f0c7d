//! Logs: JSON lines on stderr through `tracing`, at the configured level, as go-ldlm logs.
//! Per-request lines are emitted at debug level only: at info they would cost throughput.

use tracing_subscriber::EnvFilter;

use crate::config::LogLevel;

/// Installs the process-wide JSON logger. Call once, first thing.
pub fn init(level: LogLevel) {
    let filter = EnvFilter::new(level.as_str());
    tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_span_list(false)
        .with_target(false)
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}
