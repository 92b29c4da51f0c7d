//! Log levels and messages. A test binary of its own: it installs
//! the process-wide subscriber, which tracing's per-callsite caches make reliable only
//! without other tests logging concurrently.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use ldlm_engine::EngineConfig;
use ldlm_grpc::GrpcOptions;
use ldlm_security::password::Password;

const SLACK: Duration = Duration::from_secs(3);

/// Captured log output.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .map_err(|_| std::io::Error::other("poisoned"))?
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The lines logged by this crate, as `(level, line)`.
fn lines(captured: &Captured) -> Vec<(String, String)> {
    let text = String::from_utf8_lossy(&captured.0.lock().expect("lock")).into_owned();
    text.lines()
        .filter(|l| l.contains("ldlm_grpc"))
        .map(|l| {
            let level = l.split_whitespace().nth(1).unwrap_or_default().to_owned();
            (level, l.to_owned())
        })
        .collect()
}

/// Per-request and per-session lines are DEBUG; a bad password is a WARN naming the client;
/// nothing else is logged above DEBUG (the startup lines are the server binary's).
#[tokio::test]
async fn log_levels_and_messages() {
    let captured = Captured::default();
    let writer = captured.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .init();

    let options = GrpcOptions {
        password: Some(Password::new("pw")),
        ..GrpcOptions::default()
    };
    let server = TestServer::with(EngineConfig::default(), options).await;
    let mut c = server.client().await;
    let mut request = tonic::Request::new(try_req("log"));
    request
        .metadata_mut()
        .insert("authorization", "pw".parse().expect("ascii"));
    assert!(c.try_lock(request).await.expect("ok").into_inner().locked);
    assert!(c.try_lock(try_req("log")).await.is_err());
    drop(c);
    let engine = server.engine.clone();
    eventually(SLACK, "session ended", || engine.list().is_empty()).await;
    drop(server);

    let lines = lines(&captured);
    let find = |message: &str| {
        lines
            .iter()
            .find(|(_, l)| l.contains(message))
            .unwrap_or_else(|| panic!("no {message:?} in {lines:#?}"))
    };
    assert_eq!(find("gRPC listener serving").0, "DEBUG");
    let (level, warn) = find("Invalid password from client");
    assert_eq!(level, "WARN");
    assert!(warn.contains("client_addr=127.0.0.1:"), "{warn}");
    for message in [
        "TryLock request",
        "TryLock response",
        "Session started",
        "Session ended",
        "Client session cleanup",
    ] {
        assert_eq!(find(message).0, "DEBUG", "{message}");
    }
    assert!(find("Client session cleanup").1.contains("num_locks=1"));
    assert!(find("TryLock response").1.contains("locked=true"));
    // Nothing else at INFO or above.
    let loud: Vec<_> = lines
        .iter()
        .filter(|(level, _)| level != "DEBUG" && level != "TRACE")
        .map(|(_, l)| l)
        .collect();
    assert_eq!(loud.len(), 1, "only the password warning: {loud:#?}");
}
