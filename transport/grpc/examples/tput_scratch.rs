//! Scratch throughput check (temporary).
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ldlm_engine::{Engine, EngineConfig};
use ldlm_grpc::{GrpcOptions, serve};
use ldlm_proto::ldlm::ldlm_client::LdlmClient;
use ldlm_proto::ldlm::{LockRequest, TryLockRequest, UnlockRequest};
use ldlm_transport::driver::{Clock, spawn_timer_driver};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let clock = Clock::new();
    let engine = Engine::new(EngineConfig::default(), clock.now()).unwrap();
    let _d = spawn_timer_driver(engine.clone(), clock, |_| {});
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    if std::env::args().nth(1).as_deref() == Some("plain") {
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        tokio::spawn(tonic::transport::Server::builder().tcp_nodelay(true).add_service(ldlm_proto::ldlm::ldlm_server::LdlmServer::new(Dummy)).serve_with_incoming(incoming));
    } else {
        tokio::spawn(serve(engine.clone(), clock, listener, GrpcOptions::default(), std::future::pending()));
    }
    for mode in ["trylock", "handoff"] {
        let count = Arc::new(AtomicU64::new(0));
        let mut lat = Vec::new();
        let stop = Instant::now() + Duration::from_secs(4);
        let mut tasks = Vec::new();
        for i in 0..16 {
            let mut c = LdlmClient::connect(format!("http://{addr}")).await.unwrap();
            let count = count.clone();
            tasks.push(tokio::spawn(async move {
                let name = if mode == "trylock" { format!("n{i}") } else { "one".to_owned() };
                let mut lat = Vec::new();
                while Instant::now() < stop {
                    let t = Instant::now();
                    let r = if mode == "trylock" {
                        c.try_lock(TryLockRequest { name: name.clone(), ..Default::default() }).await.unwrap().into_inner()
                    } else {
                        c.lock(LockRequest { name: name.clone(), ..Default::default() }).await.unwrap().into_inner()
                    };
                    assert!(r.locked);
                    c.unlock(UnlockRequest { name: name.clone(), key: r.key }).await.unwrap();
                    lat.push(t.elapsed());
                    count.fetch_add(1, Ordering::Relaxed);
                }
                lat
            }));
        }
        let start = Instant::now();
        for t in tasks { lat.extend(t.await.unwrap()); }
        let secs = start.elapsed().as_secs_f64();
        lat.sort();
        let p99 = lat[lat.len() * 99 / 100];
        println!("{mode}: {:.0} cycles/s, p99 cycle {:?}", count.load(Ordering::Relaxed) as f64 / secs, p99);
    }
}

struct Dummy;
#[tonic::async_trait]
impl ldlm_proto::ldlm::ldlm_server::Ldlm for Dummy {
    async fn lock(&self, r: tonic::Request<LockRequest>) -> Result<tonic::Response<ldlm_proto::ldlm::LockResponse>, tonic::Status> {
        Ok(tonic::Response::new(ldlm_proto::ldlm::LockResponse { locked: true, name: r.into_inner().name, key: "00000000-0000-4000-8000-000000000000".into(), error: None, fencing_token: 1 }))
    }
    async fn try_lock(&self, r: tonic::Request<TryLockRequest>) -> Result<tonic::Response<ldlm_proto::ldlm::LockResponse>, tonic::Status> {
        Ok(tonic::Response::new(ldlm_proto::ldlm::LockResponse { locked: true, name: r.into_inner().name, key: "00000000-0000-4000-8000-000000000000".into(), error: None, fencing_token: 1 }))
    }
    async fn unlock(&self, r: tonic::Request<UnlockRequest>) -> Result<tonic::Response<ldlm_proto::ldlm::UnlockResponse>, tonic::Status> {
        Ok(tonic::Response::new(ldlm_proto::ldlm::UnlockResponse { unlocked: true, name: r.into_inner().name, error: None }))
    }
    async fn refresh_lock(&self, _r: tonic::Request<ldlm_proto::ldlm::RefreshLockRequest>) -> Result<tonic::Response<ldlm_proto::ldlm::LockResponse>, tonic::Status> { unimplemented!() }
    async fn renew(&self, _r: tonic::Request<ldlm_proto::ldlm::RenewRequest>) -> Result<tonic::Response<ldlm_proto::ldlm::LockResponse>, tonic::Status> { unimplemented!() }
}
