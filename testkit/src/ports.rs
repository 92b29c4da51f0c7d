//! Ports for servers whose addresses must be known before they start: a cluster's peer list
//! names every node's peer port, so each node's port is chosen before any node listens.

use std::net::TcpListener;
use std::sync::atomic::{AtomicU32, Ordering};

/// Below the kernel's ephemeral range (32768–60999 on Linux) and above the usual services.
const FIRST: u32 = 20_000;
const LAST: u32 = 32_767;

/// A TCP port on 127.0.0.1 that nothing listens on now and that no other call in this process
/// returned.
///
/// Picking one by binding port 0 and letting go races with everything that takes ephemeral
/// ports meanwhile: servers that listen on port 0 and the source port of every outgoing
/// connection. With five-node clusters started side by side, a node then found its peer port
/// taken about one run in four. So ports come from below the ephemeral range, where only other
/// callers of this function compete: each call takes the next port of a per-process counter,
/// which starts at a point that differs between processes, and skips ports in use.
pub fn unused_port() -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let span = LAST - FIRST + 1;
    // The first call picks the starting point from the process id and the clock.
    if NEXT.load(Ordering::Relaxed) == 0 {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let start = (std::process::id().wrapping_mul(7919) ^ nanos) % span + 1;
        let _ = NEXT.compare_exchange(0, start, Ordering::Relaxed, Ordering::Relaxed);
    }
    for _ in 0..span {
        let offset = NEXT.fetch_add(1, Ordering::Relaxed) % span;
        let port = u16::try_from(FIRST + offset).expect("below 65536");
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no unused port on 127.0.0.1 between {FIRST} and {LAST}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_distinct_bindable_and_outside_the_ephemeral_range() {
        let ports: Vec<u16> = (0..200).map(|_| unused_port()).collect();
        let mut unique = ports.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), ports.len(), "a port was returned twice");
        for &port in &ports {
            assert!((FIRST..=LAST).contains(&u32::from(port)), "{port}");
        }
        let last = *ports.last().expect("ports");
        TcpListener::bind(("127.0.0.1", last)).expect("the port is free");
    }

    #[test]
    fn a_port_in_use_is_skipped() {
        let port = unused_port();
        // The counter's next port, held here (or, if that fails, by something else): either
        // way it is in use and must be skipped.
        let _held = TcpListener::bind(("127.0.0.1", port + 1));
        let next = unused_port();
        assert_ne!(next, port + 1, "a port in use was returned");
    }
}
