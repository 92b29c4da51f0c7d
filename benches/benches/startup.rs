//! Startup with a large state file (target: 1M held locks restored in ≤ 3 s): writes a state
//! file with N held locks, then times `ldlm_state_file::recover` (replay + compaction rewrite +
//! restore into a new engine), as the server starts. Not a criterion bench: one cold run is the
//! number that matters.
//!
//! `cargo bench -p ldlm-benches --bench startup [-- N]` (default N = 1,000,000).

use std::time::{Duration, Instant};

use ldlm_engine::{EngineConfig, LockKey, Tick};
use ldlm_state_file::format;

fn main() {
    let n: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("ldlm.state");
    let mut bytes = format::MAGIC.to_vec();
    for i in 0..n {
        format::encode_grant(
            &mut bytes,
            &format!("lock-{i:07}"),
            LockKey::generate(),
            1,
            i as u64 + 1,
            Some(30),
        );
    }
    std::fs::write(&path, &bytes).expect("write");

    let start = Instant::now();
    let recovered = ldlm_state_file::recover(
        &path,
        EngineConfig::default(),
        Some(Duration::from_secs(600)),
        Tick::ZERO,
    )
    .expect("recovers");
    let total = start.elapsed();
    assert_eq!(recovered.engine.stats().holds, n);
    println!(
        "startup with {n} held locks ({} MB state file): open+replay+rewrite+restore {:.2} s",
        bytes.len() / 1_000_000,
        total.as_secs_f64()
    );
}
