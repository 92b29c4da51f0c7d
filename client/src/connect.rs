//! Opening the connection: one tonic [`Channel`] (one HTTP/2 connection, so one server session),
//! over plain TCP or over our own rustls configuration.

use std::time::Duration;

use ldlm_security::tls::TlsConnector;
use tonic::transport::{Channel, Endpoint};
use tracing::debug;

use crate::config::{ClientConfig, TlsConfig};
use crate::error::{Error, chain};
use crate::retry::Backoff;

/// How long one connection attempt (TCP + TLS + HTTP/2) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Connection attempts before giving up (connecting is always safe to retry).
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

/// Connects (with retries) and returns the channel.
pub(crate) async fn channel(config: &ClientConfig) -> Result<Channel, Error> {
    let (address, https) = split_scheme(&config.address);
    if address.is_empty() {
        return Err(Error::InvalidArgument("the server address is empty".into()));
    }
    let endpoint = Endpoint::from_shared(format!("http://{address}"))
        .map_err(|e| {
            Error::InvalidArgument(format!(
                "bad server address {:?}: {}",
                config.address,
                chain(&e)
            ))
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

    let mut backoff = Backoff::new();
    let mut attempt = 1;
    loop {
        let connected = match &connector {
            Some(connector) => endpoint.connect_with_connector(connector.clone()).await,
            None => endpoint.connect().await,
        };
        match connected {
            Ok(channel) => return Ok(channel),
            Err(error) if attempt < CONNECT_ATTEMPTS => {
                let delay = backoff.next_delay();
                debug!(address, attempt, error = %chain(&error), ?delay, "Connect failed; retrying");
                tokio::time::sleep(delay).await;
                attempt += 1;
            }
            Err(error) => {
                return Err(Error::Connect {
                    address: address.to_owned(),
                    message: chain(&error),
                    source: error,
                });
            }
        }
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
}
