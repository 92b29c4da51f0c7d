//! Arbitrary bytes as gRPC request messages, decoded with prost and, when they decode, driven
//! through the real service (`ldlm_grpc::fuzzing::Harness`: the `Ldlm` trait implementation the
//! server runs, called as tonic calls it) against a real engine.
//!
//! 1. The whole input is decoded as each of the five request types in turn.
//! 2. The input is then read as a sequence of frames `kind, len, message[len]` on one engine,
//!    so Lock/TryLock/Unlock/Refresh/Renew meet each other: `kind` picks the RPC (`kind % 6`,
//!    5 = end the session) and the session (`kind / 6 % 2`). Keys are random UUIDs a fuzzer
//!    cannot guess, so an Unlock/Refresh/Renew whose key is one byte long uses the key of an
//!    earlier grant instead (byte value modulo their number), and its name if its own is empty.
//!
//! Blocking Locks that have to wait are kept and polled again after every frame (a hand-off
//! reaches them through the service), and dropped at the end (a client cancelling). Never
//! panics; responses are consistent (locked ⇔ key, token); no lock ever has more holders than
//! its size.

#![no_main]

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use ldlm_engine::{Engine, EngineConfig, Owner, Tick};
use ldlm_grpc::fuzzing::Harness;
use ldlm_proto::ldlm::ldlm_server::Ldlm;
use ldlm_proto::ldlm::{
    LockRequest, LockResponse, RefreshLockRequest, RenewRequest, TryLockRequest, UnlockRequest,
    UnlockResponse,
};
use ldlm_service::{Clock, LocalLockService, LocalOptions};
use libfuzzer_sys::fuzz_target;
use prost::Message;
use tonic::{Response, Status};

type Call<'a, T> = Pin<Box<dyn Future<Output = Result<Response<T>, Status>> + Send + 'a>>;

struct Run<'a> {
    engine: Engine,
    clock: Clock,
    harness: &'a Harness<LocalLockService>,
    owners: [Owner; 2],
    /// Every (name, key) granted so far.
    grants: Vec<(String, String)>,
    /// Blocking Locks still waiting: the call and its request's name.
    waiting: Vec<(Call<'a, LockResponse>, String)>,
}

fn poll<T>(call: &mut Call<'_, T>) -> Poll<Result<Response<T>, Status>> {
    call.as_mut().poll(&mut Context::from_waker(Waker::noop()))
}

/// The answer of a call that waits for nobody: it completes within a few polls (an Unlock
/// that hands the lock to a waiter yields once, so the waiter's grant is answered first).
fn ready<T>(mut call: Call<'_, T>) -> T {
    for _ in 0..3 {
        match poll(&mut call) {
            Poll::Ready(Ok(response)) => return response.into_inner(),
            Poll::Ready(Err(status)) => panic!("the service failed a call: {status:?}"),
            Poll::Pending => {}
        }
    }
    panic!("a call that never waits is still pending after 3 polls")
}

impl<'a> Run<'a> {
    /// A Lock or TryLock response for `name`: locked with a key and a token, or not locked
    /// with neither.
    fn check_lock_response(&mut self, rpc: &str, name: &str, response: LockResponse) {
        assert_eq!(response.name, name, "{rpc} echoes the name");
        if response.locked {
            assert!(
                response.error.is_none(),
                "{rpc} locked with an error: {response:?}"
            );
            assert_eq!(response.key.len(), 36, "{rpc} key: {response:?}");
            assert!(response.fencing_token > 0, "{rpc} token: {response:?}");
            self.grants.push((response.name, response.key));
        } else {
            assert!(
                response.key.is_empty(),
                "{rpc} not locked with a key: {response:?}"
            );
            assert_eq!(response.fencing_token, 0, "{rpc} not locked with a token");
        }
    }

    fn substitute(&self, name: &mut String, key: &mut String) {
        if key.len() == 1 && !self.grants.is_empty() {
            let (granted_name, granted_key) =
                &self.grants[key.as_bytes()[0] as usize % self.grants.len()];
            key.clone_from(granted_key);
            if name.is_empty() {
                name.clone_from(granted_name);
            }
        }
    }

    fn refresh_response(&self, rpc: &str, name: &str, key: &str, response: LockResponse) {
        assert_eq!(response.name, name, "{rpc} echoes the name");
        if response.locked {
            assert!(response.error.is_none(), "{rpc}: {response:?}");
            assert_eq!(response.key, key, "{rpc} echoes the key");
            assert!(response.fencing_token > 0, "{rpc}: {response:?}");
        } else {
            assert!(response.error.is_some(), "{rpc} failed without an error");
            assert!(response.key.is_empty() || response.key == key);
        }
    }

    /// Decodes `bytes` as request type `kind` and, if it decodes, calls the service.
    fn call(&mut self, kind: u8, session: usize, bytes: &[u8]) {
        let owner = &self.owners[session];
        match kind {
            0 => {
                let Ok(request) = LockRequest::decode(bytes) else {
                    return;
                };
                let name = request.name.clone();
                let mut call = self
                    .harness
                    .service()
                    .lock(Harness::<LocalLockService>::request(owner, request));
                match poll(&mut call) {
                    Poll::Ready(Ok(response)) => {
                        self.check_lock_response("Lock", &name, response.into_inner())
                    }
                    Poll::Ready(Err(status)) => panic!("Lock failed: {status:?}"),
                    Poll::Pending => self.waiting.push((call, name)),
                }
            }
            1 => {
                let Ok(request) = TryLockRequest::decode(bytes) else {
                    return;
                };
                let name = request.name.clone();
                let call = self
                    .harness
                    .service()
                    .try_lock(Harness::<LocalLockService>::request(owner, request));
                let response = ready(call);
                self.check_lock_response("TryLock", &name, response);
            }
            2 => {
                let Ok(mut request) = UnlockRequest::decode(bytes) else {
                    return;
                };
                self.substitute(&mut request.name, &mut request.key);
                let name = request.name.clone();
                let call = self
                    .harness
                    .service()
                    .unlock(Harness::<LocalLockService>::request(owner, request));
                let response: UnlockResponse = ready(call);
                assert_eq!(response.name, name);
                assert_eq!(response.unlocked, response.error.is_none(), "{response:?}");
            }
            3 => {
                let Ok(mut request) = RefreshLockRequest::decode(bytes) else {
                    return;
                };
                self.substitute(&mut request.name, &mut request.key);
                let (name, key) = (request.name.clone(), request.key.clone());
                let call = self
                    .harness
                    .service()
                    .refresh_lock(Harness::<LocalLockService>::request(owner, request));
                self.refresh_response("RefreshLock", &name, &key, ready(call));
            }
            4 => {
                let Ok(mut request) = RenewRequest::decode(bytes) else {
                    return;
                };
                self.substitute(&mut request.name, &mut request.key);
                let (name, key) = (request.name.clone(), request.key.clone());
                let call = self
                    .harness
                    .service()
                    .renew(Harness::<LocalLockService>::request(owner, request));
                self.refresh_response("Renew", &name, &key, ready(call));
            }
            _ => {
                // The connection closed: its owner is released, and the slot gets a new one.
                let old = std::mem::replace(&mut self.owners[session], self.engine.new_owner());
                self.engine.release_owner(&old, self.clock.now());
            }
        }
        self.poll_waiting();
        self.check_table();
    }

    fn poll_waiting(&mut self) {
        let waiting = std::mem::take(&mut self.waiting);
        for (mut call, name) in waiting {
            match poll(&mut call) {
                Poll::Ready(Ok(response)) => {
                    self.check_lock_response("Lock (waited)", &name, response.into_inner())
                }
                Poll::Ready(Err(status)) => panic!("Lock failed after waiting: {status:?}"),
                Poll::Pending => self.waiting.push((call, name)),
            }
        }
    }

    fn check_table(&self) {
        let mut held: HashMap<&str, usize> = HashMap::new();
        let list = self.engine.list();
        for hold in &list {
            let count = held.entry(&hold.name).or_default();
            *count += 1;
            assert!(
                *count <= hold.size as usize,
                "{:?} has more holders than its size",
                hold.name
            );
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let config = EngineConfig {
        shards: 4,
        max_name_bytes: 64,
        max_waiters_per_lock: 4,
        gc_interval: Duration::from_secs(60),
        gc_min_idle: Duration::from_secs(1),
        release_on_owner_end: true,
        advance_threads: 1,
    };
    let engine = Engine::new(config, Tick::ZERO).expect("engine");
    let clock = Clock::new();
    let service = LocalLockService::new(engine.clone(), clock, LocalOptions::default());
    let harness = Harness::new(service);
    let owners = [engine.new_owner(), engine.new_owner()];
    let mut run = Run {
        engine,
        clock,
        harness: &harness,
        owners,
        grants: Vec::new(),
        waiting: Vec::new(),
    };

    // 1. The whole input as each message type.
    for kind in 0..5 {
        run.call(kind, 0, data);
    }

    // 2. The input as a sequence of frames.
    let mut rest = data;
    while let [kind, len, tail @ ..] = rest {
        let len = (*len as usize).min(tail.len());
        let (message, after) = tail.split_at(len);
        run.call(kind % 6, (kind / 6 % 2) as usize, message);
        rest = after;
    }

    // Clients cancel their waits, and every session ends: nothing of theirs is left.
    run.waiting.clear();
    for owner in run.owners.clone() {
        run.engine.release_owner(&owner, run.clock.now());
    }
    let stats = run.engine.stats();
    assert_eq!(
        stats.waiters, 0,
        "waiters left after every client went away"
    );
    assert_eq!(stats.holds, 0, "holds left after every session ended");
});
