//! What the cluster's integration tests share.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use ldlm_cluster::NodeConfig;

/// How long a follower waits for the leader before it stands: short, so that tests of
/// failovers end soon, and far above the loopback round trip.
const ELECTION: Duration = Duration::from_millis(300);

/// Node `id` of a cluster of `peers` without password or TLS, keeping its data in `data_dir`.
pub(crate) fn node_config(id: u64, peers: &BTreeMap<u64, String>, data_dir: &Path) -> NodeConfig {
    NodeConfig {
        id,
        peers: peers.clone(),
        data_dir: data_dir.to_path_buf(),
        election_timeout: ELECTION,
        snapshot_every: 1_000,
        session_grace: Duration::from_secs(10),
        password: None,
        tls: None,
        join: false,
    }
}
