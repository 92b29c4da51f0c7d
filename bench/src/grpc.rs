//! The tonic gRPC driver (`--grpc_client tonic`; the default is [`super::grpc_h2`]), and the
//! message helpers both gRPC drivers share: one tonic [`Channel`] (one HTTP/2 connection, one server session) per
//! `--connections`, shared by `--in_flight` worker tasks that each keep one call in flight.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use ldlm_proto::ldlm::ldlm_client::LdlmClient;
use ldlm_proto::ldlm::{
    LockRequest, LockResponse, RefreshLockRequest, RenewRequest, TryLockRequest, UnlockRequest,
    UnlockResponse,
};
use tonic::metadata::AsciiMetadataValue;
use tonic::transport::{Channel, Endpoint};

use super::args::{Plan, RefreshRpc, address_for};
use super::client::{CallError, Grant, LockClient, LockError, Unlocked};
use super::moving::Opener;
use super::tls;

/// How long connecting (TCP + TLS + HTTP/2) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A gRPC client on one connection; clones share the connection.
#[derive(Clone)]
pub(crate) struct GrpcClient {
    inner: LdlmClient<Channel>,
    password: Option<AsciiMetadataValue>,
    renew: bool,
}

fn password_metadata(plan: &Plan) -> anyhow::Result<Option<AsciiMetadataValue>> {
    match &plan.password {
        Some(p) => Ok(Some(
            AsciiMetadataValue::try_from(p.as_str())
                .context("the password cannot be sent as gRPC metadata")?,
        )),
        None => Ok(None),
    }
}

/// Opens `plan.connections` connections with `open` (either driver's), connection `i` to the
/// `i`-th address in turn, and returns `plan.in_flight` clients for each (connection-major: the
/// clients of connection 0 first).
pub(crate) async fn connect_with<C: Clone + Send + 'static>(
    plan: &Plan,
    open: &Opener<C>,
) -> anyhow::Result<Vec<C>> {
    let mut tasks = tokio::task::JoinSet::new();
    for index in 0..plan.connections {
        let address = address_for(&plan.address, index).to_owned();
        let open = open.clone();
        tasks.spawn(async move { (index, open(address).await) });
    }
    let mut connected: Vec<Option<C>> = (0..plan.connections).map(|_| None).collect();
    while let Some(joined) = tasks.join_next().await {
        let (index, client) = joined.context("connecting task failed")?;
        connected[index] = Some(client?);
    }
    let mut clients = Vec::with_capacity(plan.workers());
    for client in connected.into_iter().flatten() {
        for _ in 0..plan.in_flight {
            clients.push(client.clone());
        }
    }
    Ok(clients)
}

/// Opens one connection to a given address, with the run's settings (also used to move a
/// connection to another node).
pub(crate) fn opener(plan: &Plan) -> anyhow::Result<Opener<GrpcClient>> {
    let password = password_metadata(plan)?;
    let renew = plan.refresh_rpc == RefreshRpc::Renew;
    let tls = plan.tls.clone();
    Ok(Arc::new(move |address: String| {
        let (password, tls) = (password.clone(), tls.clone());
        Box::pin(async move {
            let endpoint = Endpoint::from_shared(format!("http://{address}"))
                .with_context(|| format!("bad --address {address:?}"))?
                .connect_timeout(CONNECT_TIMEOUT)
                .tcp_nodelay(true);
            let channel = match tls::connector(tls.as_ref(), &address, b"h2")? {
                Some(connector) => endpoint.connect_with_connector(connector).await,
                None => endpoint.connect().await,
            };
            let channel = channel
                .map_err(|e| anyhow::anyhow!(error_chain(&e)))
                .with_context(|| format!("cannot connect to {address} over gRPC"))?;
            Ok(GrpcClient {
                inner: LdlmClient::new(channel),
                password,
                renew,
            })
        })
    }))
}

/// An error and its sources, on one line.
pub(super) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

impl GrpcClient {
    fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        if let Some(password) = &self.password {
            request
                .metadata_mut()
                .insert("authorization", password.clone());
        }
        request
    }
}

fn status_error(status: tonic::Status) -> CallError {
    CallError::Grpc(status.code(), status.message().to_owned())
}

fn lock_error(error: ldlm_proto::ldlm::Error) -> LockError {
    LockError {
        code: error.code,
        message: error.message,
    }
}

/// A Lock/TryLock/RefreshLock/Renew response as the workers see it (both gRPC drivers).
pub(super) fn grant(response: LockResponse) -> Grant {
    Grant {
        locked: response.locked,
        key: response.key,
        token: response.fencing_token,
        error: response.error.map(lock_error),
    }
}

/// An Unlock response as the workers see it (both gRPC drivers).
pub(super) fn unlocked(response: UnlockResponse) -> Unlocked {
    Unlocked {
        unlocked: response.unlocked,
        error: response.error.map(lock_error),
    }
}

/// Absent when 0 (no lease / wait forever).
fn seconds(value: u32) -> Option<i32> {
    (value != 0).then_some(value as i32)
}

/// Absent when 1 (the default size).
fn size(value: u32) -> Option<i32> {
    (value != 1).then_some(value as i32)
}

/// A TryLock request as both gRPC drivers send it.
pub(super) fn try_lock_request(name: &str, lock_timeout: u32, lock_size: u32) -> TryLockRequest {
    TryLockRequest {
        name: name.to_owned(),
        lock_timeout_seconds: seconds(lock_timeout),
        size: size(lock_size),
    }
}

/// A Lock request as both gRPC drivers send it.
pub(super) fn lock_request(
    name: &str,
    wait_timeout: u32,
    lock_timeout: u32,
    lock_size: u32,
) -> LockRequest {
    LockRequest {
        name: name.to_owned(),
        wait_timeout_seconds: seconds(wait_timeout),
        lock_timeout_seconds: seconds(lock_timeout),
        size: size(lock_size),
    }
}

impl LockClient for GrpcClient {
    async fn try_lock(
        &mut self,
        name: &str,
        lock_timeout: u32,
        lock_size: u32,
    ) -> Result<Grant, CallError> {
        let request = self.request(try_lock_request(name, lock_timeout, lock_size));
        let response = self.inner.try_lock(request).await.map_err(status_error)?;
        Ok(grant(response.into_inner()))
    }

    async fn lock(
        &mut self,
        name: &str,
        wait_timeout: u32,
        lock_timeout: u32,
        lock_size: u32,
    ) -> Result<Grant, CallError> {
        let request = self.request(lock_request(name, wait_timeout, lock_timeout, lock_size));
        let response = self.inner.lock(request).await.map_err(status_error)?;
        Ok(grant(response.into_inner()))
    }

    async fn unlock(&mut self, name: &str, key: String) -> Result<Unlocked, CallError> {
        let request = self.request(UnlockRequest {
            name: name.to_owned(),
            key,
        });
        let response = self.inner.unlock(request).await.map_err(status_error)?;
        Ok(unlocked(response.into_inner()))
    }

    async fn refresh(
        &mut self,
        name: &str,
        key: &str,
        lock_timeout: u32,
    ) -> Result<Grant, CallError> {
        let (name, key, lock_timeout_seconds) =
            (name.to_owned(), key.to_owned(), lock_timeout as i32);
        let response = if self.renew {
            let request = RenewRequest {
                name,
                key,
                lock_timeout_seconds,
            };
            self.inner.renew(self.request(request)).await
        } else {
            let request = RefreshLockRequest {
                name,
                key,
                lock_timeout_seconds,
            };
            self.inner.refresh_lock(self.request(request)).await
        };
        Ok(grant(response.map_err(status_error)?.into_inner()))
    }

    async fn close(self) {
        // The connection closes when its last client is dropped; the server then ends the
        // session and releases what it still holds.
    }
}
