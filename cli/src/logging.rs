//! Logs: JSON lines on stderr through `tracing`, at the configured level, as go-ldlm logs.
//! Per-request lines are emitted at debug level only: at info they would cost throughput.

use tracing_subscriber::EnvFilter;

use crate::config::LogLevel;

/// Installs the process-wide JSON logger. Call once, first thing.
///
/// openraft (cluster mode) logs its inner workings — every vote, every state change — at info;
/// they are ours to summarise (`Took over as cluster leader`, ...), so below `debug` only its
/// warnings and errors are shown.
pub fn init(level: LogLevel) {
    let directives = match level {
        LogLevel::Debug => level.as_str().to_owned(),
        _ => format!("{},openraft=warn", level.as_str()),
    };
    let filter = EnvFilter::new(directives);
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
