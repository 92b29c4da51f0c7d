//! What the cluster's integration tests share.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use ldlm_cluster::NodeConfig;
use tokio::net::TcpListener;

/// How long a follower waits for the leader before it stands: short, so that tests of
/// failovers end soon, and far above the loopback round trip.
const ELECTION: Duration = Duration::from_millis(300);

/// A peer listener on 127.0.0.1 for each of `ids`, and the member list of their addresses.
pub(crate) async fn peer_listeners(
    ids: impl IntoIterator<Item = u64>,
) -> (BTreeMap<u64, TcpListener>, BTreeMap<u64, String>) {
    let mut listeners = BTreeMap::new();
    let mut peers = BTreeMap::new();
    for id in ids {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        peers.insert(id, listener.local_addr().expect("addr").to_string());
        listeners.insert(id, listener);
    }
    (listeners, peers)
}

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
