//! [`TlsConnector`]: dials TCP and does the TLS handshake, directly or as the tower
//! [`Service`](tower_service::Service) tonic and hyper connect through.

use std::io;
use std::sync::Arc;

/// A tonic/hyper connector that dials TCP and does the TLS handshake with one of our rustls
/// client configurations ([`client_config`](super::client_config)). The endpoint keeps an
/// `http://` URI so tonic adds no TLS layer of its own; used by the Rust client and by
/// `ldlm-bench`.
#[derive(Clone)]
pub struct TlsConnector {
    config: Arc<rustls::ClientConfig>,
    server_name: rustls_pki_types::ServerName<'static>,
    address: Arc<str>,
}

impl std::fmt::Debug for TlsConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConnector")
            .field("address", &self.address)
            .finish()
    }
}

/// The stream a [`TlsConnector`] yields.
pub type TlsIo = hyper_util::rt::TokioIo<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;

impl TlsConnector {
    /// Connects to `address` (`host:port`), verifying the server as `server_name`.
    pub fn new(
        config: Arc<rustls::ClientConfig>,
        server_name: rustls_pki_types::ServerName<'static>,
        address: &str,
    ) -> TlsConnector {
        TlsConnector {
            config,
            server_name,
            address: Arc::from(address),
        }
    }
}

impl TlsConnector {
    /// Dials the address (TCP, `TCP_NODELAY`) and completes the TLS handshake.
    pub async fn connect(
        &self,
    ) -> io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
        let tcp = tokio::net::TcpStream::connect(&*self.address).await?;
        tcp.set_nodelay(true)?;
        tokio_rustls::TlsConnector::from(self.config.clone())
            .connect(self.server_name.clone(), tcp)
            .await
    }
}

impl tower_service::Service<http::Uri> for TlsConnector {
    type Response = TlsIo;
    type Error = std::io::Error;
    type Future =
        std::pin::Pin<Box<dyn std::future::Future<Output = Result<TlsIo, std::io::Error>> + Send>>;

    fn poll_ready(
        &mut self,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, _uri: http::Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move { Ok(hyper_util::rt::TokioIo::new(this.connect().await?)) })
    }
}
