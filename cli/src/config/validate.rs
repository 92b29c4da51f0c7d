//! [`ServerConfig::validate`]: the rules that involve more than one value, or a range a value's
//! type cannot express (see the module docs' "Validation"). They run once, after all sources
//! are merged, because a rule such as "tls_key needs tls_cert" can only be judged on the
//! final configuration.

use std::collections::BTreeMap;
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
        self.check_cluster()?;
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

    /// Cluster mode's options: all or nothing, and consistent with each other.
    fn check_cluster(&self) -> Result<(), Invalid> {
        if self.cluster_node_id == 0 {
            return Ok(());
        }
        let id = self.cluster_node_id;
        if id > MAX_CLUSTER_NODE_ID {
            return Err(Invalid::new(
                "cluster_node_id",
                format!("cluster_node_id must be between 1 and {MAX_CLUSTER_NODE_ID}, got {id}"),
            ));
        }
        if self.state_file.is_some() {
            return Err(Invalid::new(
                "state_file",
                "state_file cannot be used in cluster mode (cluster_node_id is set): the cluster \
                 keeps its locks in cluster_data_dir"
                    .into(),
            ));
        }
        if self.cluster_data_dir.is_none() {
            return Err(Invalid::new(
                "cluster_data_dir",
                "cluster_data_dir is required in cluster mode (cluster_node_id is set)".into(),
            ));
        }
        let peers = self.cluster_peer_map()?;
        if !peers.contains_key(&id) {
            return Err(Invalid::new(
                "cluster_peers",
                format!("cluster_peers does not list this node (cluster_node_id {id})"),
            ));
        }
        if self.cluster_election_timeout < Duration::from_millis(20) {
            return Err(Invalid::new(
                "cluster_election_timeout",
                "cluster_election_timeout must be at least 20ms".into(),
            ));
        }
        if self.cluster_snapshot_every == 0 {
            return Err(Invalid::new(
                "cluster_snapshot_every",
                "cluster_snapshot_every must be at least 1".into(),
            ));
        }
        if self.cluster_session_grace.is_zero() {
            return Err(Invalid::new(
                "cluster_session_grace",
                "cluster_session_grace must be greater than 0".into(),
            ));
        }
        Ok(())
    }

    /// `cluster_peers` as id → address (the validated list).
    pub fn cluster_peers(&self) -> Result<BTreeMap<u64, String>, ConfigError> {
        self.cluster_peer_map()
            .map_err(|invalid| ConfigError::usage(invalid.message))
    }

    /// `cluster_peers` as id → address.
    pub(super) fn cluster_peer_map(&self) -> Result<BTreeMap<u64, String>, Invalid> {
        let text = self.cluster_peers.as_deref().unwrap_or_default();
        let bad = |detail: String| {
            Invalid::new(
                "cluster_peers",
                format!("cluster_peers must be ID=HOST:PORT,... ({detail})"),
            )
        };
        let mut peers = BTreeMap::new();
        for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let Some((id, address)) = entry.split_once('=') else {
                return Err(bad(format!("{entry:?} has no '='")));
            };
            let id: u64 = match id.trim().parse() {
                Ok(id) if (1..=MAX_CLUSTER_NODE_ID).contains(&id) => id,
                _ => {
                    return Err(bad(format!(
                        "{id:?} is not a node id from 1 to {MAX_CLUSTER_NODE_ID}"
                    )));
                }
            };
            let address = address.trim();
            if address
                .rsplit_once(':')
                .is_none_or(|(host, port)| host.is_empty() || port.parse::<u16>().is_err())
            {
                return Err(bad(format!("{address:?} is not HOST:PORT")));
            }
            if peers.insert(id, address.to_owned()).is_some() {
                return Err(bad(format!("node {id} is listed twice")));
            }
        }
        if peers.is_empty() {
            return Err(bad("the list is empty".into()));
        }
        Ok(peers)
    }
}

/// The largest node id: owner ids carry the node in 16 bits.
pub(super) const MAX_CLUSTER_NODE_ID: u64 = 65_535;
