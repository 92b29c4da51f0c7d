//! A cluster node's own certificate, checked at start-up the way its peers will check it.
//!
//! Nodes talk TLS to each other with the server's own settings. Each node serves its
//! `tls_cert` on the peer port, and its peers verify that certificate for the host they dial
//! (the node's address in `cluster_peers`) against `client_ca`, or the system's roots without
//! it. When client certificates are required (`client_ca` or `client_cert_verify`), each node
//! also presents the same certificate to its peers as a client certificate, verified against
//! the same roots. A certificate that fails either check does not keep a node from starting:
//! the cluster then never forms, and the only trace is failed handshakes in the peers' logs.
//! So a node checks its own certificate with the same verifiers first. What fails whatever
//! address the peers dial (a certificate not signed by a CA they trust, or under mTLS one not
//! allowed for client authentication) is an error. A certificate that does not name this
//! node's own entry in `cluster_peers` is reported as [`NodeRole::ServerName`], for the caller
//! to warn about: the peers may dial another address (a node added with `cluster add`, or one
//! whose entry is `0.0.0.0` with the real name in the others' lists).

use std::sync::Arc;

use rustls::CertificateError;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier as _;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::UnixTime;

use super::pem::{load_certs, trust_roots};
use super::{TlsError, TlsOptions, provider, server_name};

/// Checks that this node's `tls_cert` will be accepted by its peers: as a server certificate
/// for `address` (this node's entry in `cluster_peers`), and as a client certificate when
/// client certificates are required. Does nothing without TLS. A refusal for the name alone
/// is [`TlsError::NodeCertificate`] with [`NodeRole::ServerName`].
pub fn check_node_certificate(opts: &TlsOptions, address: &str) -> Result<(), TlsError> {
    let Some(cert_path) = opts.cert.as_deref() else {
        return Ok(());
    };
    let chain = load_certs(cert_path, "tls_cert")?;
    let Some((leaf, intermediates)) = chain.split_first() else {
        return Ok(()); // `load_certs` refuses a file without certificates.
    };
    let roots = Arc::new(trust_roots(opts.client_ca.as_deref(), "client_ca")?);
    let provider = provider();
    let now = UnixTime::now();
    let refused = |role: NodeRole, detail: String| TlsError::NodeCertificate {
        cert: cert_path.to_path_buf(),
        address: address.to_owned(),
        role,
        detail,
    };

    if opts.requires_client_cert() {
        WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
            .build()?
            .verify_client_cert(leaf, intermediates, now)
            .map_err(|e| refused(NodeRole::Client, e.to_string()))?;
    }

    // rustls reports a name mismatch as its own error, which is told apart from the rest.
    let name = server_name(address).ok_or_else(|| {
        refused(
            NodeRole::ServerName,
            "its host is neither a DNS name nor an IP address".into(),
        )
    })?;
    WebPkiServerVerifier::builder_with_provider(roots, provider)
        .build()
        .map_err(|e| refused(NodeRole::Server, e.to_string()))?
        .verify_server_cert(leaf, intermediates, &name, &[], now)
        .map_err(|e| {
            let role = match &e {
                rustls::Error::InvalidCertificate(
                    CertificateError::NotValidForName
                    | CertificateError::NotValidForNameContext { .. },
                ) => NodeRole::ServerName,
                _ => NodeRole::Server,
            };
            refused(role, e.to_string())
        })?;
    Ok(())
}

/// Which side of a peer connection a node's certificate failed for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeRole {
    /// Served on the peer port, verified by the peers that dial this node.
    Server,
    /// As [`Server`](Self::Server), refused only because it does not name the address.
    ServerName,
    /// Presented by this node when it dials its peers (client certificates required).
    Client,
}

impl NodeRole {
    /// What a person should do about a certificate refused in this role.
    pub(super) fn remedy(self) -> &'static str {
        match self {
            NodeRole::Server => {
                "peers verify each other's certificates against client_ca (or the system's \
                 roots): use a certificate signed by a CA in client_ca"
            }
            NodeRole::ServerName => {
                "peers dial each other at the addresses in cluster_peers: unless they reach \
                 this node at another address, use a certificate that names this host (a DNS \
                 or IP subject alternative name)"
            }
            NodeRole::Client => {
                "client certificates are required (client_ca or client_cert_verify), so each \
                 node presents its tls_cert to its peers as a client certificate: use one that \
                 allows client authentication as well as server authentication (extended key \
                 usages clientAuth and serverAuth), signed by a CA in client_ca"
            }
        }
    }

    pub(super) fn as_str(self) -> &'static str {
        match self {
            NodeRole::Server | NodeRole::ServerName => "a server certificate",
            NodeRole::Client => "a client certificate",
        }
    }
}
