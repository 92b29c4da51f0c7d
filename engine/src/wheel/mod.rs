//! A hierarchical timer wheel (Varghese & Lauck), shaped like tokio's: six levels of 64 slots,
//! an `occupied` bitmap per level, and an explicit `now` (it never reads a clock).
//!
//! # Algorithm
//!
//! Time is a `u64` tick count (the engine uses milliseconds). A timer due at `when` is filed on
//! the level given by the highest bit in which the wheel's `elapsed` time and `when` differ (see
//! [`level`]), in the slot named by that level's six bits of `when`. Lower levels therefore always
//! hold earlier timers than higher ones, and the next deadline is found without scanning: the
//! first level with an occupied bit, rotated to the current slot, gives it.
//!
//! [`TimerWheel::poll`] takes the next slot that is due, sets `elapsed` to that slot's start and
//! either fires each entry (its true deadline has come) or re-files it on a lower level
//! (cascading). Fired entries wait in a `pending` list and are handed out one at a time, in
//! deadline order at tick granularity, so the caller may insert, cancel and reschedule timers
//! between two `poll` calls (the engine does: a lease expiry grants the lock to a waiter, which
//! starts a new lease and cancels that waiter's wait timeout).
//!
//! # Entries
//!
//! Entries live in a slab (`Vec<Node>` plus a free list) and are linked into their slot by
//! indices, so insert, cancel and reschedule are O(1) with no `unsafe` and no stale entries left
//! behind. A [`TimerId`] is an index plus a generation: after an entry is freed its generation
//! changes, so an old id can never cancel the entry that reused the index.
//!
//! Rescheduling *later* (a lease refresh, the common case) only updates the stored deadline: the
//! entry stays in its earlier slot and is re-filed when that slot comes due (tokio's lazy
//! reschedule). Rescheduling earlier moves the entry.
//!
//! Deadlines beyond the wheel's horizon (`64^6` ticks, ~795 days at 1 ms) are clamped into the top
//! level and re-filed when they come around; the true deadline is always kept in the entry.

pub(crate) mod level;

use level::{LEVELS, SLOTS, level_for, next_expiration, slot_for};

/// Index value meaning "no entry" in the intrusive lists.
const NIL: u32 = u32::MAX;

/// Handle to a timer in a [`TimerWheel`]: slab index plus generation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TimerId {
    index: u32,
    generation: u32,
}

/// Where an entry currently is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Location {
    Free,
    Slot { level: u8, slot: u8 },
    Pending,
}

#[derive(Debug)]
struct Node<T> {
    when: u64,
    prev: u32,
    next: u32,
    generation: u32,
    location: Location,
    payload: Option<T>,
}

/// A doubly linked list of slab indices.
#[derive(Clone, Copy, Debug)]
struct List {
    head: u32,
    tail: u32,
}

impl List {
    const EMPTY: List = List {
        head: NIL,
        tail: NIL,
    };

    fn is_empty(&self) -> bool {
        self.head == NIL
    }
}

#[derive(Debug)]
struct Level {
    /// Bit `s` is set iff `slots[s]` is non-empty.
    occupied: u64,
    slots: [List; SLOTS],
}

/// A hierarchical timer wheel holding payloads of type `T`. See the module documentation.
#[derive(Debug)]
pub struct TimerWheel<T> {
    /// Every deadline `<= elapsed` has been moved to `pending` (or fired).
    elapsed: u64,
    nodes: Vec<Node<T>>,
    /// Head of the free list, threaded through `Node::next`.
    free: u32,
    levels: Box<[Level; LEVELS]>,
    /// Entries that are due and not yet handed out by `poll`.
    pending: List,
    len: usize,
}

impl<T> Default for TimerWheel<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> TimerWheel<T> {
    /// An empty wheel whose time starts at tick 0.
    pub fn new() -> Self {
        Self::starting_at(0)
    }

    /// An empty wheel whose time starts at `now`.
    pub fn starting_at(now: u64) -> Self {
        TimerWheel {
            elapsed: now,
            nodes: Vec::new(),
            free: NIL,
            levels: Box::new(std::array::from_fn(|_| Level {
                occupied: 0,
                slots: [List::EMPTY; SLOTS],
            })),
            pending: List::EMPTY,
            len: 0,
        }
    }

    /// The wheel's current time: every timer due at or before it has fired or is pending.
    pub fn elapsed(&self) -> u64 {
        self.elapsed
    }

    /// Number of live timers.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True if no timer is live.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Adds a timer due at `when` (a deadline at or before `elapsed` fires on the next `poll`).
    pub fn insert(&mut self, when: u64, payload: T) -> TimerId {
        let index = if self.free != NIL {
            let index = self.free;
            let node = &mut self.nodes[index as usize];
            self.free = node.next;
            node.when = when;
            node.payload = Some(payload);
            index
        } else {
            let index = u32::try_from(self.nodes.len()).expect("more than 4 billion timers");
            assert!(index != NIL, "more than 4 billion timers");
            self.nodes.push(Node {
                when,
                prev: NIL,
                next: NIL,
                generation: 0,
                location: Location::Free,
                payload: Some(payload),
            });
            index
        };
        self.len += 1;
        self.file(index);
        TimerId {
            index,
            generation: self.nodes[index as usize].generation,
        }
    }

    /// Removes a timer before it fires, returning its payload; `None` if it already fired or
    /// was cancelled.
    pub fn cancel(&mut self, id: TimerId) -> Option<T> {
        self.live(id)?;
        self.unlink(id.index);
        Some(self.release(id.index))
    }

    /// Moves a live timer to a new deadline; false if the timer is gone.
    pub fn reschedule(&mut self, id: TimerId, when: u64) -> bool {
        let Some(node) = self.live(id) else {
            return false;
        };
        let lazy = matches!(node.location, Location::Slot { .. }) && when >= node.when;
        let node = &mut self.nodes[id.index as usize];
        node.when = when;
        if !lazy {
            // Earlier than before (or pending): the current slot would fire too late, move it.
            self.unlink(id.index);
            self.file(id.index);
        }
        // Later than before: stay in the earlier slot; `process` re-files it when that comes due.
        true
    }

    /// The deadline of a live timer.
    pub fn deadline(&self, id: TimerId) -> Option<u64> {
        self.live(id).map(|node| node.when)
    }

    /// A lower bound on when `poll` next has something to do: the tick of the next occupied slot
    /// (which may only cascade its entries), or `elapsed` if timers are already pending.
    pub fn next_deadline(&self) -> Option<u64> {
        if !self.pending.is_empty() {
            return Some(self.elapsed);
        }
        self.levels
            .iter()
            .enumerate()
            .find_map(|(level, l)| next_expiration(level, l.occupied, self.elapsed))
    }

    /// Hands out the next timer due at or before `now`, with its deadline, in deadline order.
    /// Returns `None` once nothing more is due; the wheel's time is then `max(elapsed, now)`.
    pub fn poll(&mut self, now: u64) -> Option<(T, u64)> {
        loop {
            if !self.pending.is_empty() {
                let index = self.pending.head;
                self.unlink(index);
                let when = self.nodes[index as usize].when;
                return Some((self.release(index), when));
            }
            let due = self.levels.iter().enumerate().find_map(|(level, l)| {
                next_expiration(level, l.occupied, self.elapsed).map(|d| (level, d))
            });
            match due {
                Some((level, deadline)) if deadline <= now => self.process(level, deadline),
                _ => {
                    self.elapsed = self.elapsed.max(now);
                    return None;
                }
            }
        }
    }

    /// Takes the slot of `level` due at `deadline`, advances `elapsed` to it, and fires or
    /// re-files every entry in it.
    fn process(&mut self, level: usize, deadline: u64) {
        debug_assert!(deadline >= self.elapsed);
        let slot = slot_for(deadline, level);
        let lvl = &mut self.levels[level];
        let list = std::mem::replace(&mut lvl.slots[slot], List::EMPTY);
        lvl.occupied &= !(1u64 << slot);
        self.elapsed = deadline;
        // Taking the whole list out first means a re-filed entry can never land back in the list
        // being walked.
        let mut index = list.head;
        while index != NIL {
            let next = self.nodes[index as usize].next;
            let node = &mut self.nodes[index as usize];
            node.prev = NIL;
            node.next = NIL;
            node.location = Location::Free;
            self.file(index);
            index = next;
        }
    }

    /// Links a detached node into the pending list or the slot its deadline calls for.
    fn file(&mut self, index: u32) {
        let when = self.nodes[index as usize].when;
        if when <= self.elapsed {
            self.nodes[index as usize].location = Location::Pending;
            let mut list = self.pending;
            self.push_back(&mut list, index);
            self.pending = list;
            return;
        }
        let level = level_for(self.elapsed, when);
        let slot = slot_for(when.min(self.elapsed + level::MAX_SPAN - 1), level);
        self.nodes[index as usize].location = Location::Slot {
            level: level as u8,
            slot: slot as u8,
        };
        let mut list = self.levels[level].slots[slot];
        self.push_back(&mut list, index);
        let lvl = &mut self.levels[level];
        lvl.slots[slot] = list;
        lvl.occupied |= 1u64 << slot;
    }

    fn push_back(&mut self, list: &mut List, index: u32) {
        let node = &mut self.nodes[index as usize];
        node.prev = list.tail;
        node.next = NIL;
        if list.tail == NIL {
            list.head = index;
        } else {
            self.nodes[list.tail as usize].next = index;
        }
        list.tail = index;
    }

    /// Detaches a node from whichever list holds it.
    fn unlink(&mut self, index: u32) {
        let node = &self.nodes[index as usize];
        let (prev, next, location) = (node.prev, node.next, node.location);
        let mut list = match location {
            Location::Free => return,
            Location::Pending => self.pending,
            Location::Slot { level, slot } => self.levels[level as usize].slots[slot as usize],
        };
        if prev == NIL {
            list.head = next;
        } else {
            self.nodes[prev as usize].next = next;
        }
        if next == NIL {
            list.tail = prev;
        } else {
            self.nodes[next as usize].prev = prev;
        }
        match location {
            Location::Free => {}
            Location::Pending => self.pending = list,
            Location::Slot { level, slot } => {
                let lvl = &mut self.levels[level as usize];
                lvl.slots[slot as usize] = list;
                if list.is_empty() {
                    lvl.occupied &= !(1u64 << slot);
                }
            }
        }
        let node = &mut self.nodes[index as usize];
        node.prev = NIL;
        node.next = NIL;
        node.location = Location::Free;
    }

    /// Frees a detached node and returns its payload.
    fn release(&mut self, index: u32) -> T {
        let node = &mut self.nodes[index as usize];
        node.generation = node.generation.wrapping_add(1);
        node.location = Location::Free;
        node.next = self.free;
        self.free = index;
        self.len -= 1;
        node.payload.take().expect("a live timer has a payload")
    }

    fn live(&self, id: TimerId) -> Option<&Node<T>> {
        let node = self.nodes.get(id.index as usize)?;
        (node.generation == id.generation && node.payload.is_some()).then_some(node)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn drain(wheel: &mut TimerWheel<u32>, now: u64) -> Vec<(u32, u64)> {
        std::iter::from_fn(|| wheel.poll(now)).collect()
    }

    #[test]
    fn fires_in_deadline_order_and_not_before() {
        let mut wheel = TimerWheel::new();
        let deadlines = [5u64, 1, 64, 63, 4096, 65, 1_000_000, 3];
        for (i, &d) in deadlines.iter().enumerate() {
            wheel.insert(d, i as u32);
        }
        assert_eq!(wheel.len(), deadlines.len());
        assert!(drain(&mut wheel, 0).is_empty());
        let fired = drain(&mut wheel, 64);
        assert_eq!(
            fired.iter().map(|f| f.1).collect::<Vec<_>>(),
            vec![1, 3, 5, 63, 64]
        );
        let fired = drain(&mut wheel, 2_000_000);
        assert_eq!(
            fired.iter().map(|f| f.1).collect::<Vec<_>>(),
            vec![65, 4096, 1_000_000]
        );
        assert!(wheel.is_empty());
        assert_eq!(wheel.next_deadline(), None);
    }

    #[test]
    fn cancel_and_stale_ids() {
        let mut wheel = TimerWheel::new();
        let a = wheel.insert(10, 1);
        let b = wheel.insert(10, 2);
        assert_eq!(wheel.cancel(a), Some(1));
        assert_eq!(wheel.cancel(a), None);
        // The freed index is reused; the old id must not touch the new entry.
        let c = wheel.insert(20, 3);
        assert_eq!(wheel.cancel(a), None);
        assert!(!wheel.reschedule(a, 5));
        assert_eq!(drain(&mut wheel, 100), vec![(2, 10), (3, 20)]);
        assert_eq!(wheel.cancel(b), None);
        assert_eq!(wheel.cancel(c), None);
    }

    #[test]
    fn reschedule_later_is_lazy_and_earlier_moves() {
        let mut wheel = TimerWheel::new();
        let a = wheel.insert(100, 1);
        assert!(wheel.reschedule(a, 5000));
        assert_eq!(wheel.deadline(a), Some(5000));
        // The old slot comes due first, but the entry must not fire before its new deadline.
        assert!(drain(&mut wheel, 4999).is_empty());
        assert_eq!(drain(&mut wheel, 5000), vec![(1, 5000)]);

        let b = wheel.insert(10_000, 2);
        assert!(wheel.reschedule(b, 6000));
        assert_eq!(wheel.next_deadline().map(|d| d <= 6000), Some(true));
        assert_eq!(drain(&mut wheel, 6000), vec![(2, 6000)]);
    }

    #[test]
    fn past_deadlines_fire_on_next_poll() {
        let mut wheel = TimerWheel::starting_at(1000);
        wheel.insert(10, 7);
        assert_eq!(wheel.next_deadline(), Some(1000));
        assert_eq!(drain(&mut wheel, 1000), vec![(7, 10)]);
    }

    #[test]
    fn deadlines_beyond_the_horizon_are_kept_exactly() {
        let mut wheel = TimerWheel::new();
        let far = level::MAX_SPAN * 3 + 12_345;
        wheel.insert(far, 1);
        wheel.insert(u64::MAX / 2, 2);
        assert!(drain(&mut wheel, far - 1).is_empty());
        assert_eq!(drain(&mut wheel, far), vec![(1, far)]);
        assert_eq!(wheel.len(), 1);
    }

    #[test]
    fn inserts_during_polling_are_served() {
        let mut wheel = TimerWheel::new();
        wheel.insert(10, 1);
        wheel.insert(20, 2);
        let (first, at) = wheel.poll(100).expect("due");
        assert_eq!((first, at), (1, 10));
        // The engine hands a lock to a waiter here and starts its lease.
        wheel.insert(50, 3);
        wheel.insert(500, 4);
        assert_eq!(drain(&mut wheel, 100), vec![(2, 20), (3, 50)]);
        assert_eq!(wheel.len(), 1);
    }

    /// The wheel against a BTreeMap oracle over a pseudo-random schedule of inserts, cancels,
    /// reschedules and polls spanning every level.
    #[test]
    fn matches_an_ordered_map_oracle() {
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        let mut rand = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut wheel = TimerWheel::new();
        let mut oracle: BTreeMap<(u64, u32), ()> = BTreeMap::new();
        let mut ids: Vec<(TimerId, u32)> = Vec::new();
        let mut now = 0u64;
        let mut next_payload = 0u32;
        for _ in 0..20_000 {
            match rand() % 10 {
                0..=4 => {
                    let span = [10, 100, 5_000, 300_000, 20_000_000, level::MAX_SPAN * 2]
                        [(rand() % 6) as usize];
                    let when = now + rand() % span;
                    let id = wheel.insert(when, next_payload);
                    oracle.insert((when, next_payload), ());
                    ids.push((id, next_payload));
                    next_payload += 1;
                }
                5 if !ids.is_empty() => {
                    let (id, payload) = ids.swap_remove((rand() as usize) % ids.len());
                    if let Some(when) = wheel.deadline(id) {
                        assert!(oracle.remove(&(when, payload)).is_some());
                        assert_eq!(wheel.cancel(id), Some(payload));
                    }
                }
                6 if !ids.is_empty() => {
                    let (id, payload) = ids[(rand() as usize) % ids.len()];
                    if let Some(when) = wheel.deadline(id) {
                        let new_when = now + rand() % 100_000;
                        oracle.remove(&(when, payload));
                        oracle.insert((new_when, payload), ());
                        assert!(wheel.reschedule(id, new_when));
                    }
                }
                _ => {
                    now += rand() % [3, 70, 5_000, 400_000][(rand() % 4) as usize];
                    let fired = drain(&mut wheel, now);
                    let expected: Vec<(u32, u64)> = oracle
                        .range(..(now + 1, 0))
                        .map(|(&(when, payload), _)| (payload, when))
                        .collect();
                    // Same set, and non-decreasing deadlines.
                    let mut sorted = fired.clone();
                    sorted.sort_by_key(|&(p, w)| (w, p));
                    assert_eq!(sorted, expected, "now={now}");
                    assert!(
                        fired.windows(2).all(|w| w[0].1 <= w[1].1),
                        "order {fired:?}"
                    );
                    for (payload, when) in fired {
                        oracle.remove(&(when, payload));
                    }
                }
            }
            assert_eq!(wheel.len(), oracle.len());
            if let (Some(next), Some((&(first, _), _))) =
                (wheel.next_deadline(), oracle.first_key_value())
            {
                assert!(
                    next <= first.max(wheel.elapsed()),
                    "next_deadline {next} after the first timer {first}"
                );
            }
        }
    }
}
