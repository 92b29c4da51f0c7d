//! Opening connections: one tonic [`Channel`] at a time (one HTTP/2 connection, so one server
//! session), over plain TCP or over our own rustls configuration, to one of the configured
//! nodes.
//!
//! A configured address may list several nodes of a cluster (`a:3144,b:3144,c:3144`). Each
//! becomes a [`Target`], prepared once; the client connects to one of them and moves to the
//! next when its node stops answering (see `Client::fail_over`).

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

use ldlm_security::tls::TlsConnector;
use tonic::transport::{Channel, Endpoint};
use tracing::debug;

use crate::config::{ClientConfig, TlsConfig};
use crate::error::{Error, chain};
use crate::retry::Backoff;

/// How long one connection attempt (TCP + TLS + HTTP/2) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Rounds of connection attempts (every node once per round) before giving up; connecting is
/// always safe to retry.
const CONNECT_ATTEMPTS: u32 = 4;
/// HTTP/2 keepalive: ping every 30 s, give up after 10 s without an answer, so a dead server is
/// noticed even while no call is in flight. go-ldlm drops clients that ping more often than
/// every 10 s (its B19), so never go below that.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// The address without a scheme, and whether the scheme asked for TLS.
pub(crate) fn split_scheme(address: &str) -> (&str, bool) {
    if let Some(rest) = address.strip_prefix("https://") {
        (rest.trim_end_matches('/'), true)
    } else if let Some(rest) = address.strip_prefix("http://") {
        (rest.trim_end_matches('/'), false)
    } else {
        (address, false)
    }
}

/// One node the client may connect to.
pub(crate) struct Target {
    /// `host:port`, without a scheme.
    pub(crate) address: String,
    endpoint: Endpoint,
    connector: Option<TlsConnector>,
}

impl Target {
    /// Prepares the endpoint (and TLS connector) of one configured address.
    fn new(config: &ClientConfig, configured: &str) -> Result<Target, Error> {
        let (address, https) = split_scheme(configured.trim());
        if address.is_empty() {
            return Err(Error::InvalidArgument(format!(
                "the server address {:?} is empty or has an empty entry",
                config.address
            )));
        }
        let endpoint = Endpoint::from_shared(format!("http://{address}"))
            .map_err(|e| {
                Error::InvalidArgument(format!("bad server address {configured:?}: {}", chain(&e)))
            })?
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
            .keep_alive_timeout(KEEPALIVE_TIMEOUT)
            .keep_alive_while_idle(true);
        let tls = match (&config.tls, https) {
            (Some(tls), _) => Some(tls.clone()),
            (None, true) => Some(TlsConfig::default()),
            (None, false) => None,
        };
        let connector = match tls {
            Some(tls) => Some(tls_connector(&tls, address)?),
            None => None,
        };
        Ok(Target {
            address: address.to_owned(),
            endpoint,
            connector,
        })
    }

    /// One connection attempt.
    pub(crate) async fn connect(&self) -> Result<Channel, tonic::transport::Error> {
        match &self.connector {
            Some(connector) => {
                self.endpoint
                    .connect_with_connector(connector.clone())
                    .await
            }
            None => self.endpoint.connect().await,
        }
    }
}

/// Every configured node, in the order given.
pub(crate) fn targets(config: &ClientConfig) -> Result<Vec<Target>, Error> {
    config
        .address
        .split(',')
        .map(|address| Target::new(config, address))
        .collect()
}

/// Connects (with retries) to one of `targets`, trying them in turn from a random one so that
/// many clients given the same list spread over the nodes. Returns the channel and the index
/// of the node it reached.
pub(crate) async fn first_reachable(targets: &[Target]) -> Result<(Channel, usize), Error> {
    let start = (RandomState::new().build_hasher().finish() % targets.len() as u64) as usize;
    let mut backoff = Backoff::new();
    let mut round = 1;
    loop {
        let mut last = None;
        for offset in 0..targets.len() {
            let index = (start + offset) % targets.len();
            let target = &targets[index];
            match target.connect().await {
                Ok(channel) => return Ok((channel, index)),
                Err(error) => {
                    debug!(address = target.address, round, error = %chain(&error), "Connect failed");
                    last = Some((index, error));
                }
            }
        }
        let (index, error) = last.expect("at least one target");
        if round >= CONNECT_ATTEMPTS {
            return Err(Error::Connect {
                address: targets
                    .iter()
                    .map(|t| t.address.as_str())
                    .collect::<Vec<_>>()
                    .join(","),
                // With several nodes, say which one failed last.
                message: match targets.len() {
                    1 => chain(&error),
                    _ => format!("{}: {}", targets[index].address, chain(&error)),
                },
                source: error,
            });
        }
        let delay = backoff.next_delay();
        debug!(round, ?delay, "No node could be reached; retrying");
        tokio::time::sleep(delay).await;
        round += 1;
    }
}

/// Builds the shared TLS connector (`ldlm_security::tls::TlsConnector`) for `address`.
fn tls_connector(tls: &TlsConfig, address: &str) -> Result<TlsConnector, Error> {
    let client_cert = tls
        .client_cert
        .as_ref()
        .map(|(cert, key)| (cert.as_path(), key.as_path()));
    let config = ldlm_security::tls::client_config(
        tls.ca.as_deref(),
        client_cert,
        tls.skip_verify,
        &[b"h2"],
    )?;
    let server_name = ldlm_security::tls::server_name(address).ok_or_else(|| {
        Error::InvalidArgument(format!("{address:?} has no valid host name for TLS"))
    })?;
    Ok(TlsConnector::new(config, server_name, address))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        assert_eq!(split_scheme("localhost:3144"), ("localhost:3144", false));
        assert_eq!(
            split_scheme("http://localhost:3144/"),
            ("localhost:3144", false)
        );
        assert_eq!(split_scheme("https://ldlm:3144"), ("ldlm:3144", true));
    }

    #[test]
    fn a_list_of_nodes() {
        let listed = targets(&ClientConfig::new("a:1, http://b:2/,c:3")).expect("valid");
        let addresses: Vec<&str> = listed.iter().map(|t| t.address.as_str()).collect();
        assert_eq!(addresses, ["a:1", "b:2", "c:3"]);
        for bad in ["", "a:1,,b:2", "a:1,"] {
            assert!(
                matches!(
                    targets(&ClientConfig::new(bad)),
                    Err(Error::InvalidArgument(_))
                ),
                "{bad:?}"
            );
        }
    }
}
