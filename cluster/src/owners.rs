//! Cluster-wide owner ids inside the engine's `OwnerId`.
//!
//! The leader's engine names owners by [`OwnerId`]; in cluster mode that id *is* the owner's
//! cluster-wide identity: the node in the top 16 bits, the node's own number in the low 48. So
//! the event sink turns an engine owner into a [`GlobalOwner`] with two shifts, under the
//! shard mutex, and a new leader restores every hold under the same owner it had.

use ldlm_engine::OwnerId;

use crate::command::GlobalOwner;

/// Bits of the node's own number.
const LOCAL_BITS: u32 = 48;
/// The largest node id an owner id can carry.
pub const MAX_NODE_ID: u64 = (1 << (64 - LOCAL_BITS)) - 1;

/// Bits of a node's own number that count its connections within one run; the bits above
/// carry the run (the node's incarnation), so a restarted node never reuses an id.
pub const RUN_BITS: u32 = 28;

/// The first local id of a node's run `incarnation`.
pub fn first_local(incarnation: u64) -> u64 {
    ((incarnation & ((1 << (LOCAL_BITS - RUN_BITS)) - 1)) << RUN_BITS) | 1
}

/// The run (incarnation, modulo 2^20) a local id belongs to.
pub fn run_of(local: u64) -> u64 {
    local >> RUN_BITS
}

/// The engine id of `owner`. Its `local` must be below 2^48 (a node numbers its connections
/// from 1 with a counter; 2^48 of them is 89 years at 100 000 per second).
pub fn engine_id(owner: GlobalOwner) -> OwnerId {
    debug_assert!(owner.node <= MAX_NODE_ID);
    debug_assert!(owner.local < 1 << LOCAL_BITS);
    OwnerId(owner.node << LOCAL_BITS | (owner.local & ((1 << LOCAL_BITS) - 1)))
}

/// The cluster-wide owner of engine id `id`.
pub fn global(id: OwnerId) -> GlobalOwner {
    GlobalOwner {
        node: id.0 >> LOCAL_BITS,
        local: id.0 & ((1 << LOCAL_BITS) - 1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        for owner in [
            GlobalOwner { node: 1, local: 1 },
            GlobalOwner {
                node: MAX_NODE_ID,
                local: (1 << 48) - 1,
            },
            GlobalOwner { node: 0, local: 42 },
        ] {
            assert_eq!(global(engine_id(owner)), owner);
        }
        assert_ne!(
            engine_id(GlobalOwner { node: 1, local: 5 }),
            engine_id(GlobalOwner { node: 2, local: 5 })
        );
    }
}
