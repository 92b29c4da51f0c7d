//! Cluster mode's start: the node's Raft, storage and peer listener, from the `--cluster_*`
//! options (already checked by the configuration's validation).

use anyhow::Context as _;
use ldlm_cluster::{ClusterNode, NodeConfig, PeerTls};
use ldlm_security::tls::{self, TlsOptions};
use tracing::{info, warn};

use crate::config::ServerConfig;

/// Starts this node's part of the cluster; returns it and where its peers reach it.
pub async fn start_node(
    config: &ServerConfig,
) -> anyhow::Result<(ClusterNode, std::net::SocketAddr)> {
    let id = config.cluster_node_id;
    let peers = config.cluster_peers()?;
    let data_dir = config
        .cluster_data_dir
        .clone()
        .context("cluster_data_dir is required in cluster mode")?;
    let listen = match &config.cluster_listen_address {
        Some(address) => address.clone(),
        None => peers
            .get(&id)
            .cloned()
            .context("cluster_peers does not list this node")?,
    };
    if peers.len() % 2 == 0 {
        warn!(
            members = peers.len(),
            "The cluster has an even number of members: it tolerates no more failures than one \
             member fewer would"
        );
    }
    let tls = peer_tls(config, peers.get(&id).map(String::as_str))?;
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .with_context(|| format!("cluster: cannot listen on {listen}"))?;
    let addr = listener.local_addr()?;
    let node = ClusterNode::start(
        NodeConfig {
            id,
            peers,
            data_dir,
            election_timeout: config.cluster_election_timeout,
            snapshot_every: config.cluster_snapshot_every,
            session_grace: config.cluster_session_grace,
            password: config.password.clone(),
            tls,
            join: config.cluster_join,
        },
        listener,
    )
    .await?;
    info!(node_id = id, %addr, "Cluster node started. Listening for peers on {addr}");
    Ok((node, addr))
}

/// TLS on the peer port, from the server's own settings: its certificate on the peer listener
/// (requiring peers' certificates when the server requires clients'); peers are verified
/// against `--client_ca` (else the system's roots), and present the node's certificate when
/// the server requires client certificates — so with mTLS each node's certificate must allow
/// client authentication too.
///
/// The node's certificate is first checked as its peers will check it, for `own_address` (its
/// entry in `--cluster_peers`): a certificate they would refuse wherever they dial it is an
/// error at start-up, not a cluster that never forms; one that does not name `own_address` is
/// a warning (the peers may dial another address: see `check_node_certificate`).
fn peer_tls(config: &ServerConfig, own_address: Option<&str>) -> anyhow::Result<Option<PeerTls>> {
    let options = TlsOptions {
        cert: config.tls_cert.clone(),
        key: config.tls_key.clone(),
        client_ca: config.client_ca.clone(),
        client_cert_verify: config.client_cert_verify,
    };
    let Some(server) = tls::server_config(&options, &[b"h2"]).context("cluster TLS")? else {
        return Ok(None);
    };
    if let Some(address) = own_address {
        match tls::check_node_certificate(&options, address) {
            Ok(()) => {}
            // The peers may reach this node at another address than its own entry says.
            Err(
                error @ tls::TlsError::NodeCertificate {
                    role: tls::NodeRole::ServerName,
                    ..
                },
            ) => warn!("cluster TLS: {error}"),
            Err(error) => return Err(error).context("cluster TLS"),
        }
    }
    let identity = match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) if options.requires_client_cert() => {
            Some((cert.as_path(), key.as_path()))
        }
        _ => None,
    };
    let client = tls::client_config(config.client_ca.as_deref(), identity, false, &[b"h2"])
        .context("cluster TLS")?;
    Ok(Some(PeerTls { server, client }))
}
