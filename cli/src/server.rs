//! `ldlm-server`: wires the configuration, the lock service and the transports together, and
//! shuts them down gracefully on SIGINT/SIGTERM.
//!
//! Shutdown order: the lock service is shut down *first*, so connections that close afterwards
//! do not release their owners' locks (they stay held, and stay in the state file, for the
//! restart: go-ldlm drops them, its B2); then the listeners stop accepting and in-flight calls
//! get a moment to finish.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, anyhow};
use ldlm_cluster::service::ClusterLockService;
use ldlm_engine::{Engine, EngineConfig};
use ldlm_security::password::Password;
use ldlm_security::tls::{self, TlsOptions};
use ldlm_service::{Clock, LocalLockService, LocalOptions, LockService, TimerDriver};
use ldlm_state_file::StateFile;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::config::ServerConfig;

/// How long the listeners may take to stop after a shutdown signal (the gRPC transport itself
/// force-closes connections after its own 5 s grace period).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(7);

/// The engine configuration a server configuration asks for.
pub fn engine_config(config: &ServerConfig) -> EngineConfig {
    EngineConfig {
        shards: config.shards as usize,
        max_name_bytes: config.max_name_bytes,
        max_waiters_per_lock: config.max_waiters_per_lock,
        gc_interval: config.lock_gc_interval,
        gc_min_idle: config.lock_gc_min_idle,
        release_on_owner_end: !config.no_clear_on_disconnect,
        // A burst of expiries may use as many threads as the runtime has workers.
        advance_threads: match config.worker_threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        }
        .min(256),
    }
}

/// What serves the locks: a single server's own engine, or a cluster node.
enum Served {
    /// A single server: its lock service, timer driver and state file.
    Local {
        service: Arc<LocalLockService>,
        state_file: Option<Arc<StateFile>>,
        timers: TimerDriver,
    },
    /// A cluster node.
    Cluster { service: Arc<ClusterLockService> },
}

/// A server that is listening: its addresses, and a handle to stop it.
pub struct Running {
    /// Where gRPC listens.
    pub grpc_addr: std::net::SocketAddr,
    /// Where REST listens, if enabled.
    pub rest_addr: Option<std::net::SocketAddr>,
    /// Where metrics are served, if enabled.
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// Where peers reach this node, in cluster mode.
    pub cluster_addr: Option<std::net::SocketAddr>,
    served: Served,
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl Running {
    /// The lock table (for in-process tests): a single server's engine, or a cluster node's
    /// while it leads.
    pub fn engine(&self) -> Option<Engine> {
        match &self.served {
            Served::Local { service, .. } => Some(service.engine().clone()),
            Served::Cluster { service } => service
                .node()
                .leading()
                .map(|leader| leader.service().engine().clone()),
        }
    }

    /// The cluster node's lock service, in cluster mode.
    pub fn cluster(&self) -> Option<&Arc<ClusterLockService>> {
        match &self.served {
            Served::Cluster { service } => Some(service),
            Served::Local { .. } => None,
        }
    }

    /// Resolves if the server can no longer do its work and should stop: in cluster mode,
    /// when the node's Raft core stopped on an error (its data directory could not be
    /// written), with that error. Never for a single server.
    pub async fn failed(&self) -> String {
        match &self.served {
            Served::Cluster { service } => service.failed().await,
            Served::Local { .. } => std::future::pending().await,
        }
    }

    /// Graceful shutdown: keep held locks, stop accepting, let in-flight calls finish briefly.
    pub async fn shutdown(self) {
        match &self.served {
            Served::Local { service, .. } => service.shutdown(),
            Served::Cluster { service } => service.shutdown(),
        }
        let _ = self.stop.send(true);
        // One deadline for all listeners (they stop in parallel), not a grace period each.
        let deadline = tokio::time::Instant::now() + SHUTDOWN_GRACE;
        for task in self.tasks {
            match tokio::time::timeout_at(deadline, task).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(error))) => {
                    warn!(error = %format!("{error:#}"), "Listener ended with an error")
                }
                Ok(Err(join)) => warn!(error = %join, "Listener task failed"),
                Err(_) => warn!("Listener did not stop within the grace period"),
            }
        }
        match self.served {
            Served::Local {
                state_file, timers, ..
            } => {
                drop(timers);
                if let Some(file) = state_file {
                    // Everything recorded so far is written and fsynced before the process
                    // exits.
                    tokio::task::spawn_blocking(move || file.close()).await.ok();
                }
            }
            Served::Cluster { service } => {
                // The node's Raft stops after its last log write.
                service.node().shutdown().await;
            }
        }
    }
}

async fn bind(address: &str, what: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(address)
        .await
        .with_context(|| format!("{what}: cannot listen on {address}"))
}

/// The listeners of a server, bound (so a taken port fails the start before anything runs).
struct Listeners {
    grpc: TcpListener,
    rest: Option<TcpListener>,
    metrics: Option<TcpListener>,
    ipc: Option<(tokio::net::UnixListener, std::path::PathBuf)>,
}

/// Starts everything the configuration asks for and returns once it is listening.
pub async fn start(config: &ServerConfig) -> anyhow::Result<Running> {
    tls::install_default_provider();
    let ipc = match &config.ipc_socket_file {
        Some(path) => {
            let listener = ldlm_ipc::server::bind(path)
                .with_context(|| format!("IPC socket {}", path.display()))?;
            info!(socket = %path.display(), "IPC server started");
            Some((listener, path.clone()))
        }
        None => {
            warn!("IPC server disabled because of empty socket file path");
            None
        }
    };
    let listeners = Listeners {
        grpc: bind(&config.listen_address, "gRPC").await?,
        rest: match &config.rest_listen_address {
            Some(address) => Some(bind(address, "REST").await?),
            None => None,
        },
        metrics: match &config.metrics_listen_address {
            Some(address) => Some(bind(address, "metrics").await?),
            None => None,
        },
        ipc,
    };
    let (stop, stopped) = watch::channel(false);
    let options = LocalOptions {
        commits: None,
        session_timeout: config.rest_session_timeout,
        max_sessions: config.max_rest_sessions,
        commit_releases: false,
    };
    if config.cluster_node_id != 0 {
        let (node, cluster_addr) = crate::cluster::start_node(config).await?;
        let service = ClusterLockService::start(Arc::new(node), engine_config(config), options);
        let (addrs, tasks) = serve(config, service.clone(), listeners, stopped)?;
        return Ok(Running {
            grpc_addr: addrs.0,
            rest_addr: addrs.1,
            metrics_addr: addrs.2,
            cluster_addr: Some(cluster_addr),
            served: Served::Cluster { service },
            stop,
            tasks,
        });
    }
    let clock = Clock::new();
    let (engine, state_file) = match &config.state_file {
        Some(path) => {
            let recovered = ldlm_state_file::recover(
                path,
                engine_config(config),
                Some(config.default_lock_timeout),
                clock.now(),
            )?;
            for hold in &recovered.restored {
                info!(lock = %hold.name, key = %hold.key, "Loaded lock");
            }
            (recovered.engine, Some(recovered.file))
        }
        None => (
            Engine::new(engine_config(config), clock.now()).map_err(|e| anyhow!("{e}"))?,
            None,
        ),
    };
    let service = LocalLockService::new(
        engine,
        clock,
        LocalOptions {
            // With a state file, "locked" is answered only once the grant is on disk.
            commits: state_file.as_ref().map(|file| file.commits()),
            ..options
        },
    );
    let timers = service.start_timers();
    let (addrs, tasks) = serve(config, service.clone(), listeners, stopped)?;
    Ok(Running {
        grpc_addr: addrs.0,
        rest_addr: addrs.1,
        metrics_addr: addrs.2,
        cluster_addr: None,
        served: Served::Local {
            service,
            state_file,
            timers,
        },
        stop,
        tasks,
    })
}

/// The addresses gRPC, REST and metrics listen on.
type Addrs = (
    std::net::SocketAddr,
    Option<std::net::SocketAddr>,
    Option<std::net::SocketAddr>,
);

/// Serves every transport over `service` until `stopped` flips.
fn serve<S: LockService>(
    config: &ServerConfig,
    service: Arc<S>,
    listeners: Listeners,
    stopped: watch::Receiver<bool>,
) -> anyhow::Result<(Addrs, Vec<tokio::task::JoinHandle<anyhow::Result<()>>>)> {
    let tls_options = TlsOptions {
        cert: config.tls_cert.clone(),
        key: config.tls_key.clone(),
        client_ca: config.client_ca.clone(),
        client_cert_verify: config.client_cert_verify,
    };
    let grpc_tls = tls::server_config(&tls_options, &[b"h2"]).context("TLS configuration")?;
    let rest_tls =
        tls::server_config(&tls_options, &[b"h2", b"http/1.1"]).context("TLS configuration")?;
    let password = config.password.as_deref().and_then(Password::from_config);
    let Listeners {
        grpc: grpc_listener,
        rest: rest_listener,
        metrics: metrics_listener,
        ipc,
    } = listeners;
    let metrics_addr = metrics_listener
        .as_ref()
        .map(TcpListener::local_addr)
        .transpose()?;
    let grpc_addr = grpc_listener.local_addr()?;
    let rest_addr = rest_listener
        .as_ref()
        .map(TcpListener::local_addr)
        .transpose()?;
    // Every listener stops when `Running::shutdown` flips `stop`, which it does only after
    // the service's shutdown: connections that close from then on keep their locks.
    let stopped = move || {
        let mut stopped = stopped.clone();
        async move {
            let _ = stopped.wait_for(|&s| s).await;
        }
    };
    let rest = rest_listener.map(|listener| {
        let options = ldlm_rest::RestOptions {
            password: password.clone(),
            tls: rest_tls.clone(),
            max_body_bytes: config.max_request_bytes,
            max_connections: config.max_connections,
        };
        (
            ldlm_rest::RestServer::new(service.clone(), options),
            listener,
        )
    });

    if grpc_tls.is_some() {
        info!("Loaded gRPC TLS configuration");
    }
    if password.is_some() {
        info!("Loaded gRPC authentication configuration");
    }
    let mut tasks = Vec::new();
    if let Some((listener, path)) = ipc {
        let serve = ldlm_ipc::server::serve_with(
            service.clone(),
            listener,
            path,
            ldlm_ipc::server::ServeOptions {
                max_request_bytes: config.max_request_bytes,
            },
            stopped(),
        );
        tasks.push(tokio::spawn(async move {
            serve.await;
            Ok(())
        }));
    }
    let grpc_options = ldlm_grpc::GrpcOptions {
        password: password.clone(),
        tls: grpc_tls,
        keepalive_interval: config.keepalive_interval,
        keepalive_timeout: config.keepalive_timeout,
        max_connections: config.max_connections,
        max_message_bytes: config.grpc_max_message_bytes,
    };
    let grpc_service = service.clone();
    let grpc_stopped = stopped();
    tasks.push(tokio::spawn(async move {
        let served =
            ldlm_grpc::serve(grpc_service, grpc_listener, grpc_options, grpc_stopped).await;
        served.map_err(|e| anyhow!("gRPC server: {e}"))
    }));
    warn!("gRPC server started. Listening on {grpc_addr}");

    if let Some(listener) = metrics_listener {
        let serve = ldlm_metrics_http::serve(listener, service.clone(), stopped());
        tasks.push(tokio::spawn(async move {
            serve.await;
            Ok(())
        }));
        if let Some(addr) = metrics_addr {
            info!("Metrics server started. Listening on {addr}");
        }
    }

    if let Some((server, listener)) = rest {
        let serve = server.serve(listener, stopped());
        tasks.push(tokio::spawn(
            async move { serve.await.context("REST server") },
        ));
        if let Some(addr) = rest_addr {
            warn!("REST server started. Listening on {addr}");
        }
    }
    Ok(((grpc_addr, rest_addr, metrics_addr), tasks))
}

/// SIGINT and SIGTERM handlers, installed before the server starts so that a signal arriving
/// right after the startup lines is a graceful shutdown, not the default "terminate now".
pub struct ShutdownSignals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
}

impl ShutdownSignals {
    /// Installs the handlers (needs a Tokio runtime).
    pub fn install() -> std::io::Result<ShutdownSignals> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(ShutdownSignals {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
        })
    }

    /// Resolves on the next SIGINT or SIGTERM.
    pub async fn wait(&mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
    }
}
