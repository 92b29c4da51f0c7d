//! The `--password` check: a tower layer in front of the gRPC service.
//!
//! go-ldlm uses a unary interceptor: metadata key `authorization`, whose **first** value must
//! equal the password byte for byte. A missing value is `UNAUTHENTICATED` with details
//! `missing credentials`, a wrong one `UNAUTHENTICATED` with `invalid credentials`, and both
//! are logged at WARN as `Invalid password from client`. The check runs on the HTTP request,
//! before the message is decoded, and compares in constant time (so the time a wrong guess
//! takes says nothing about how close it was). Without a
//! password the layer only forwards.

use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::future::{Either, Ready, ready};
use ldlm_security::password::Password;
use tonic::Status;
use tower::{Layer, Service};
use tracing::warn;

/// Wraps a service in an [`AuthService`].
#[derive(Clone, Debug)]
pub(crate) struct AuthLayer {
    password: Option<Arc<Password>>,
    remote_of: RemoteOf,
}

/// Finds the client's address in a request's extensions (for the warning).
pub(crate) type RemoteOf = fn(&http::Extensions) -> Option<SocketAddr>;

impl AuthLayer {
    /// A layer checking `password`, or letting everything through if `None`.
    pub(crate) fn new(password: Option<Password>, remote_of: RemoteOf) -> Self {
        AuthLayer {
            password: password.map(Arc::new),
            remote_of,
        }
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = AuthService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AuthService {
            inner,
            password: self.password.clone(),
            remote_of: self.remote_of,
        }
    }
}

/// Answers `UNAUTHENTICATED` unless the request carries the password.
#[derive(Clone, Debug)]
pub(crate) struct AuthService<S> {
    inner: S,
    password: Option<Arc<Password>>,
    remote_of: RemoteOf,
}

impl<S, B, RB> Service<http::Request<B>> for AuthService<S>
where
    S: Service<http::Request<B>, Response = http::Response<RB>>,
    RB: Default,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Either<Ready<Result<S::Response, S::Error>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        // Health checks and reflection are open: probes carry no credentials, and the schema
        // is public (it is go-ldlm's proto).
        let path = request.uri().path();
        let open = path.starts_with("/grpc.health.v1.") || path.starts_with("/grpc.reflection.");
        if let (Some(password), false) = (&self.password, open) {
            // `HeaderMap::get` is the first value of the key, as gRPC-Go's `md[key][0]`.
            let value = request
                .headers()
                .get(http::header::AUTHORIZATION)
                .map(|v| v.as_bytes());
            if let Err(refused) = password.check_grpc(value) {
                let client_addr = (self.remote_of)(request.extensions());
                warn!(
                    client_addr = client_addr.map(tracing::field::display),
                    reason = %refused,
                    "Invalid password from client"
                );
                return Either::Left(ready(Ok(
                    Status::unauthenticated(refused.to_string()).into_http()
                )));
            }
        }
        Either::Right(self.inner.call(request))
    }
}
