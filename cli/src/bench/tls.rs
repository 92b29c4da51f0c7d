//! Client TLS for both drivers, built by `ldlm_transport::tls::client_config`.

use std::sync::Arc;

use anyhow::Context as _;
use rustls::pki_types::ServerName;

use super::args::TlsSettings;

/// The rustls client configuration for `settings`, advertising ALPN `alpn`.
pub(crate) fn client_config(
    settings: &TlsSettings,
    alpn: &[u8],
) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let client_cert = settings
        .client_cert
        .as_ref()
        .map(|(cert, key)| (cert.as_path(), key.as_path()));
    ldlm_transport::tls::client_config(
        settings.ca_file.as_deref(),
        client_cert,
        settings.skip_verify,
        &[alpn],
    )
    .context("TLS configuration")
}

/// The host part of `host:port` (`[::1]:3144` → `::1`).
pub(crate) fn host(address: &str) -> &str {
    let host = match address.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => address,
    };
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
}

/// The name the server's certificate must carry: the host part of `address`.
pub(crate) fn server_name(address: &str) -> anyhow::Result<ServerName<'static>> {
    ServerName::try_from(host(address).to_owned())
        .with_context(|| format!("{address:?} has no valid host name for TLS"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_of_address() {
        assert_eq!(host("localhost:3144"), "localhost");
        assert_eq!(host("[::1]:3144"), "::1");
        assert_eq!(host("127.0.0.1:8080"), "127.0.0.1");
        assert_eq!(host("example"), "example");
        assert!(server_name("127.0.0.1:1").is_ok());
    }
}
