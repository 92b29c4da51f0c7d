//! [`ServerConfig::validate`]: the rules that involve more than one value, or a range a value's
//! type cannot express (see the module docs' "Validation"). They run once, after all sources
//! are merged, because a rule such as "tls_key needs tls_cert" can only be judged on the
//! final configuration.

use std::time::Duration;

use super::{ConfigError, MAX_WORKER_THREADS, ServerConfig};

/// A validation failure: the option at fault (so the loader can say which source set it) and
/// the message.
pub(super) struct Invalid {
    pub(super) option: &'static str,
    pub(super) message: String,
}

impl Invalid {
    fn new(option: &'static str, message: String) -> Self {
        Self { option, message }
    }
}

impl ServerConfig {
    /// Checks the rules of the [module docs](super#validation). The loader calls this (and
    /// adds to the message where the offending value came from).
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.check()
            .map_err(|invalid| ConfigError::usage(invalid.message))
    }

    pub(super) fn check(&self) -> Result<(), Invalid> {
        let positive: [(&'static str, Duration); 5] = [
            ("lock_gc_interval", self.lock_gc_interval),
            ("default_lock_timeout", self.default_lock_timeout),
            ("keepalive_interval", self.keepalive_interval),
            ("keepalive_timeout", self.keepalive_timeout),
            ("rest_session_timeout", self.rest_session_timeout),
        ];
        for (option, value) in positive {
            if value.is_zero() {
                return Err(Invalid::new(
                    option,
                    format!("{option} must be greater than 0"),
                ));
            }
        }
        let limits: [(&'static str, usize); 6] = [
            ("max_name_bytes", self.max_name_bytes),
            ("max_rest_sessions", self.max_rest_sessions),
            ("max_waiters_per_lock", self.max_waiters_per_lock),
            ("max_connections", self.max_connections),
            ("max_request_bytes", self.max_request_bytes),
            ("grpc_max_message_bytes", self.grpc_max_message_bytes),
        ];
        for (option, value) in limits {
            if value == 0 {
                return Err(Invalid::new(option, format!("{option} must be at least 1")));
            }
        }
        if !self.shards.is_power_of_two() || self.shards > 65_536 {
            return Err(Invalid::new(
                "shards",
                format!(
                    "shards must be a power of two between 1 and 65536, got {}",
                    self.shards
                ),
            ));
        }
        if self.worker_threads > MAX_WORKER_THREADS {
            return Err(Invalid::new(
                "worker_threads",
                format!(
                    "worker_threads must be between 0 (one per CPU core) and {MAX_WORKER_THREADS}, got {}",
                    self.worker_threads
                ),
            ));
        }
        if self.listen_address.is_empty() {
            return Err(Invalid::new(
                "listen_address",
                "listen_address must not be empty (the gRPC server cannot be turned off)".into(),
            ));
        }
        match (&self.tls_cert, &self.tls_key) {
            (None, Some(_)) => {
                return Err(Invalid::new(
                    "tls_key",
                    "tls_key is set but tls_cert is not: TLS needs both".into(),
                ));
            }
            (Some(_), None) => {
                return Err(Invalid::new(
                    "tls_cert",
                    "tls_cert is set but tls_key is not: TLS needs both".into(),
                ));
            }
            _ => {}
        }
        if self.tls_cert.is_none() && self.requires_client_cert() {
            let option = if self.client_ca.is_some() {
                "client_ca"
            } else {
                "client_cert_verify"
            };
            return Err(Invalid::new(
                option,
                "client TLS certificate verification requires server TLS to be configured".into(),
            ));
        }
        Ok(())
    }
}
