//! Starting in-process servers and connecting real clients to them.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use ldlm_cli::config::ServerConfig;
use ldlm_cli::server::{self, Running};
use ldlm_proto::ldlm::ldlm_client::LdlmClient;
use tonic::transport::Channel;

/// A running in-process server.
pub(crate) struct Server {
    pub(crate) running: Running,
}

impl Server {
    pub(crate) fn grpc_addr(&self) -> SocketAddr {
        self.running.grpc_addr
    }

    pub(crate) fn rest_addr(&self) -> SocketAddr {
        self.running.rest_addr.expect("REST enabled")
    }

    /// A gRPC client on its own HTTP/2 connection (its own session).
    pub(crate) async fn grpc(&self) -> LdlmClient<Channel> {
        let channel = Channel::from_shared(format!("http://{}", self.grpc_addr()))
            .expect("valid uri")
            .connect_timeout(Duration::from_secs(2))
            .connect()
            .await
            .expect("connects");
        LdlmClient::new(channel)
    }
}

/// The test default: gRPC and REST on 127.0.0.1:0, no IPC socket, no state file.
pub(crate) fn config() -> ServerConfig {
    let mut config = ServerConfig::defaults();
    config.listen_address = "127.0.0.1:0".into();
    config.rest_listen_address = Some("127.0.0.1:0".into());
    config.ipc_socket_file = None;
    config
}

pub(crate) async fn start(config: &ServerConfig) -> Server {
    Server {
        running: server::start(config).await.expect("server starts"),
    }
}

/// A minimal HTTP/1.1 client on one keep-alive connection (hyper's client connection).
pub(crate) struct Http {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    cookie: Option<String>,
}

impl Http {
    pub(crate) async fn connect(addr: SocketAddr) -> Http {
        let stream = tokio::net::TcpStream::connect(addr)
            .await
            .expect("connects");
        let (sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .expect("handshake");
        tokio::spawn(connection);
        Http {
            sender,
            cookie: None,
        }
    }

    /// Sends a request with the session cookie (if any); returns status and parsed JSON body.
    pub(crate) async fn call(
        &mut self,
        method: &str,
        path: &str,
        body: &str,
    ) -> (u16, serde_json::Value) {
        let (status, text) = self.call_raw(method, path, body).await;
        let json = if text.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_str(&text).expect("JSON body")
        };
        (status, json)
    }

    /// Sends a request with the session cookie (if any); returns status and body text.
    pub(crate) async fn call_raw(&mut self, method: &str, path: &str, body: &str) -> (u16, String) {
        let mut request = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", "localhost")
            .header("content-type", "application/json");
        if let Some(cookie) = &self.cookie {
            request = request.header("cookie", cookie.as_str());
        }
        let request = request
            .body(Full::new(Bytes::from(body.to_string())))
            .expect("request");
        self.sender.ready().await.expect("connection ready");
        let response = self.sender.send_request(request).await.expect("response");
        let status = response.status().as_u16();
        if let Some(set) = response.headers().get("set-cookie") {
            let value = set.to_str().expect("ascii cookie");
            self.cookie = value.split(';').next().map(str::to_string);
        }
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        (status, String::from_utf8_lossy(&bytes).into_owned())
    }
}
