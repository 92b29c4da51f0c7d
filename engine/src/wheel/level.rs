//! Slot arithmetic of the hierarchical timer wheel: which level and slot a deadline belongs in,
//! and when a level's next occupied slot comes due.
//!
//! Level `l` has 64 slots of `64^l` ticks each, so it spans `64^(l+1)` ticks. A deadline goes on
//! the lowest level whose span still separates it from the wheel's current time: the level is
//! given by the highest bit in which `elapsed` and `when` differ (XOR, then log2, divided by six),
//! the slot by that level's six bits of `when`. These functions are pure and exhaustively tested
//! at the level boundaries below.

/// Bits of a tick consumed by one level (64 slots).
pub(crate) const SLOT_BITS: u32 = 6;
/// Slots per level.
pub(crate) const SLOTS: usize = 1 << SLOT_BITS;
/// Mask of the slot bits of one level.
const SLOT_MASK: u64 = (SLOTS as u64) - 1;
/// Number of levels. With 1 ms ticks: 1 ms, 64 ms, ~4 s, ~4.4 min, ~4.7 h, ~12.4 days per slot.
pub(crate) const LEVELS: usize = 6;
/// The span the wheel can represent exactly: `64^6` ticks (about 795 days at 1 ms). Deadlines
/// further out are filed in the top level and re-filed when that slot comes due.
pub(crate) const MAX_SPAN: u64 = 1 << (SLOT_BITS as u64 * LEVELS as u64);

/// Ticks covered by one slot of `level`.
pub(crate) const fn slot_range(level: usize) -> u64 {
    1 << (SLOT_BITS as usize * level)
}

/// Ticks covered by all 64 slots of `level`.
pub(crate) const fn level_range(level: usize) -> u64 {
    slot_range(level) << SLOT_BITS
}

/// The level a timer due at `when` belongs in, seen from `elapsed` (`when > elapsed`).
pub(crate) fn level_for(elapsed: u64, when: u64) -> usize {
    // The `| SLOT_MASK` makes any difference inside the lowest six bits count as level 0.
    let mut masked = (elapsed ^ when) | SLOT_MASK;
    if masked >= MAX_SPAN {
        // Beyond the horizon: clamp into the top level; the entry is re-filed when it fires.
        masked = MAX_SPAN - 1;
    }
    let significant = 63 - masked.leading_zeros() as usize;
    significant / SLOT_BITS as usize
}

/// The slot of `level` that a timer due at `when` occupies.
pub(crate) fn slot_for(when: u64, level: usize) -> usize {
    ((when >> (SLOT_BITS as usize * level)) & SLOT_MASK) as usize
}

/// The tick at which the next occupied slot of `level` comes due, seen from `elapsed`, given the
/// level's `occupied` bitmap (bit `s` set = slot `s` holds timers). `None` if the level is empty.
pub(crate) fn next_expiration(level: usize, occupied: u64, elapsed: u64) -> Option<u64> {
    if occupied == 0 {
        return None;
    }
    let now_slot = slot_for(elapsed, level) as u32;
    // Rotate so bit 0 is the current slot; the first set bit is the next occupied slot.
    let distance = occupied.rotate_right(now_slot).trailing_zeros();
    let slot = (u64::from(distance) + u64::from(now_slot)) & SLOT_MASK;
    let level_start = elapsed & !(level_range(level) - 1);
    let mut deadline = level_start + slot * slot_range(level);
    if deadline <= elapsed {
        // Only the top level can hold a slot "behind" the current one: a deadline past the
        // horizon wraps around the ring and comes due one full level later.
        deadline += level_range(level);
    }
    Some(deadline)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(slot_range(0), 1);
        assert_eq!(level_range(0), 64);
        assert_eq!(slot_range(1), 64);
        assert_eq!(level_range(5), MAX_SPAN);
    }

    #[test]
    fn level_for_is_exact_at_every_boundary() {
        for elapsed in [0u64, 1, 63, 64, 65, 4095, 4096, 1_000_000, (1 << 35) + 17] {
            for level in 0..LEVELS {
                // The first deadline that no longer shares level `level`'s block with `elapsed`
                // belongs on level + 1 (or stays clamped on the top level).
                let block = level_range(level);
                let next_block = (elapsed / block + 1) * block;
                // The first deadline past `level`'s block needs a higher level (or the clamped
                // top level).
                let above = level_for(elapsed, next_block);
                assert!(
                    above > level || above == LEVELS - 1,
                    "e={elapsed} l={level} got {above}"
                );
                // The last deadline inside the block belongs on `level` or below.
                if next_block - 1 > elapsed {
                    assert!(level_for(elapsed, next_block - 1) <= level);
                }
            }
        }
    }

    #[test]
    fn level_for_matches_a_brute_force_definition() {
        // Brute force: the smallest level whose block (aligned range of `level_range`) contains
        // both elapsed and when.
        let brute = |elapsed: u64, when: u64| {
            (0..LEVELS)
                .find(|&l| elapsed / level_range(l) == when / level_range(l))
                .unwrap_or(LEVELS - 1)
        };
        for elapsed in 0..300u64 {
            for when in elapsed + 1..elapsed + 5000 {
                assert_eq!(
                    level_for(elapsed, when),
                    brute(elapsed, when),
                    "{elapsed} {when}"
                );
            }
        }
        for shift in 0..40u64 {
            let elapsed = (1u64 << shift) - 1;
            for delta in [
                1u64,
                2,
                63,
                64,
                65,
                4095,
                4096,
                4097,
                262_143,
                262_144,
                MAX_SPAN - 1,
            ] {
                let when = elapsed + delta;
                assert_eq!(
                    level_for(elapsed, when),
                    brute(elapsed, when),
                    "{elapsed} {when}"
                );
            }
        }
    }

    #[test]
    fn slot_for_uses_the_level_bits() {
        assert_eq!(slot_for(0, 0), 0);
        assert_eq!(slot_for(63, 0), 63);
        assert_eq!(slot_for(64, 0), 0);
        assert_eq!(slot_for(64, 1), 1);
        assert_eq!(slot_for(64 * 64 - 1, 1), 63);
        assert_eq!(slot_for(64 * 64, 1), 0);
        assert_eq!(slot_for(64 * 64, 2), 1);
        for level in 0..LEVELS {
            for slot in 0..SLOTS as u64 {
                assert_eq!(slot_for(slot * slot_range(level), level), slot as usize);
                assert_eq!(
                    slot_for(slot * slot_range(level) + slot_range(level) - 1, level),
                    slot as usize
                );
            }
        }
    }

    #[test]
    fn next_expiration_finds_the_next_occupied_slot_including_wrap() {
        assert_eq!(next_expiration(0, 0, 10), None);
        // Level 0, elapsed 10: slot 12 is due at 12.
        assert_eq!(next_expiration(0, 1 << 12, 10), Some(12));
        // Level 1, elapsed 70 (slot 1): slot 3 is due at 192.
        assert_eq!(next_expiration(1, 1 << 3, 70), Some(192));
        // Several occupied: the nearest after the current slot wins.
        assert_eq!(
            next_expiration(0, (1 << 2) | (1 << 40) | (1 << 63), 30),
            Some(40)
        );
        // Top level: a slot behind the current one wraps a full level later.
        let top = LEVELS - 1;
        let elapsed = 5 * slot_range(top) + 3;
        assert_eq!(
            next_expiration(top, 1 << 2, elapsed),
            Some(2 * slot_range(top) + MAX_SPAN)
        );
        // Top level: the current slot itself (a clamped far deadline) also wraps.
        assert_eq!(
            next_expiration(top, 1 << 5, elapsed),
            Some(5 * slot_range(top) + MAX_SPAN)
        );
    }
}
