//! Startup with a large state file (issue 5 bar: 1M held locks restored in ≤ 3 s): writes a state
//! file with N held locks, then times `StateFile::open` (replay + compaction rewrite) and
//! `Engine::restore`. Not a criterion bench: one cold run is the number that matters.
//!
//! `cargo bench -p ldlm-benches --bench startup [-- N]` (default N = 1,000,000).

use std::time::{Duration, Instant};

use ldlm_engine::{Engine, EngineConfig, LockKey, Tick};
use ldlm_state_file::{StateFile, format};

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
        );
    }
    std::fs::write(&path, &bytes).expect("write");

    let start = Instant::now();
    let (file, loaded) = StateFile::open(&path).expect("opens");
    let opened = start.elapsed();
    let engine =
        Engine::with_event_sink(EngineConfig::default(), Tick::ZERO, file.sink()).expect("config");
    engine
        .restore(
            &loaded.holds,
            Some(Duration::from_secs(600)),
            loaded.fencing_floor,
            Tick::ZERO,
        )
        .expect("restores");
    let total = start.elapsed();
    assert_eq!(engine.stats().holds, n);
    println!(
        "startup with {n} held locks ({} MB state file): open+replay+rewrite {:.2} s, restore {:.2} s, total {:.2} s",
        bytes.len() / 1_000_000,
        opened.as_secs_f64(),
        (total - opened).as_secs_f64(),
        total.as_secs_f64()
    );
}
