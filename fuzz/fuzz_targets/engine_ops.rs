//! Arbitrary sequences of engine operations and time advances, run on the real engine and on
//! the reference model side by side (`ldlm_engine::model::check`, the same model the engine's
//! property tests use). Any difference — an outcome, a wait's end, the table of holds, a
//! fencing token — is a crash.

#![no_main]

use arbitrary::Arbitrary;
use ldlm_engine::EngineConfig;
use ldlm_engine::model::{Op, check, checker_config};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input {
    /// `--no_clear_on_disconnect`: holds outlive their owner.
    holds_outlive_owners: bool,
    ops: Vec<Op>,
}

fuzz_target!(|input: Input| {
    let config = EngineConfig {
        release_on_owner_end: !input.holds_outlive_owners,
        ..checker_config()
    };
    if let Err(difference) = check(&input.ops, config) {
        panic!("engine and model disagree: {difference}");
    }
});
