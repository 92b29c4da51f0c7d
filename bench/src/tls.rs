//! Client TLS for both drivers, built by `ldlm_security::tls::client_config`.

use std::sync::Arc;

use anyhow::Context as _;
use ldlm_security::tls::TlsConnector;
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
    ldlm_security::tls::client_config(
        settings.ca_file.as_deref(),
        client_cert,
        settings.skip_verify,
        &[alpn],
    )
    .context("TLS configuration")
}

/// The name the server's certificate must carry: the host part of `address`.
pub(crate) fn server_name(address: &str) -> anyhow::Result<ServerName<'static>> {
    ldlm_security::tls::server_name(address)
        .with_context(|| format!("{address:?} has no valid host name for TLS"))
}

/// The connector for `address` when the run uses TLS (`settings`), advertising ALPN `alpn`.
pub(crate) fn connector(
    settings: Option<&TlsSettings>,
    address: &str,
    alpn: &[u8],
) -> anyhow::Result<Option<TlsConnector>> {
    settings
        .map(|settings| {
            Ok(TlsConnector::new(
                client_config(settings, alpn)?,
                server_name(address)?,
                address,
            ))
        })
        .transpose()
}
