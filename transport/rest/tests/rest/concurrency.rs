//! Many sessions at once on a few shared names: mutual exclusion checked with a counter per
//! name that must never exceed 1 between a "locked" reply and the unlock call.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use ldlm_rest::RestOptions;

use crate::harness::TestServer;

const SESSIONS: usize = 16;
const CYCLES: usize = 200;
const NAMES: [&str; 3] = ["shared-a", "shared-b", "shared-c"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_sessions_keep_mutual_exclusion() {
    let server = TestServer::start(RestOptions::default()).await;
    let occupancy: Arc<Vec<AtomicUsize>> =
        Arc::new(NAMES.iter().map(|_| AtomicUsize::new(0)).collect());
    let acquired = Arc::new(AtomicUsize::new(0));

    let mut tasks = Vec::new();
    for session in 0..SESSIONS {
        let mut client = server.client_with_session().await;
        let occupancy = occupancy.clone();
        let acquired = acquired.clone();
        tasks.push(tokio::spawn(async move {
            for cycle in 0..CYCLES {
                let index = (session + cycle) % NAMES.len();
                let name = NAMES[index];
                let reply = client.try_lock(name).await;
                if reply["locked"] != true {
                    assert!(
                        reply.get("error").is_none(),
                        "busy is not an error: {reply}"
                    );
                    assert_eq!(reply["key"], "");
                    continue;
                }
                let before = occupancy[index].fetch_add(1, Ordering::SeqCst);
                assert_eq!(before, 0, "{name} granted to two sessions at once");
                acquired.fetch_add(1, Ordering::Relaxed);
                // Hold it for a moment, so others really do contend.
                if cycle % 8 == 0 {
                    tokio::time::sleep(Duration::from_micros(200)).await;
                }
                occupancy[index].fetch_sub(1, Ordering::SeqCst);
                let key = reply["key"].as_str().expect("key");
                let unlocked = client.unlock(name, key).await;
                assert_eq!(unlocked["unlocked"], true, "{unlocked}");
            }
        }));
    }
    for task in tasks {
        task.await.expect("session task");
    }
    let acquired = acquired.load(Ordering::Relaxed);
    assert!(
        acquired >= CYCLES,
        "few grants ({acquired}): the test did not exercise much"
    );
    assert!(server.engine.list().is_empty(), "every hold was unlocked");
    assert_eq!(server.session_count(), SESSIONS);
}
