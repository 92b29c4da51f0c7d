//! Test hosts in network namespaces, for partitioning a cluster for real.
//!
//! Each node runs in a namespace of its own (`ip netns exec`), with one address on a bridge
//! that the test process (in the root namespace, where the clients run) also has an address
//! on: 198.18.X.id/24 for node `id`, 198.18.X.254 for the test process, X chosen per network
//! from the range set aside for benchmarking (RFC 2544), so nothing real is ever reached.
//!
//! A **cut** from node `a` to node `b` is a blackhole route to `b`'s address inside `a`'s
//! namespace: what `a` sends to `b` is dropped (and `a`'s connects fail). Cutting both ways
//! partitions the two; cutting one way is a one-way drop (which breaks TCP both ways, as it
//! does in a real network: the replies are what is lost). The clients' paths (root namespace
//! ↔ node) are never cut, so a client keeps talking to the node it chose, on whichever side
//! of a partition that is. Everything is removed again when the network is dropped; the
//! processes in it are the caller's to stop first.
//!
//! Needs root (CAP_NET_ADMIN) and iproute2's `ip`.

use std::collections::BTreeSet;
use std::process::Command;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};

use super::SERVER;

/// A bridge and one namespace per node. See the module doc.
pub(crate) struct Network {
    tag: String,
    subnet: u8,
    nodes: u64,
    /// The cuts in place, as (from, to).
    cuts: Mutex<BTreeSet<(u64, u64)>>,
}

/// Runs `ip args`; the error names the command and what it printed.
fn ip(args: &[&str]) -> Result<(), String> {
    let output = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run `ip` (iproute2): {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`ip {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

fn must(result: Result<(), String>) {
    if let Err(error) = result {
        panic!(
            "{error}\nthe partition tests need root (CAP_NET_ADMIN) and iproute2, to make \
             network namespaces of their own"
        );
    }
}

impl Network {
    /// A network of `nodes` namespaces (ids 1..=nodes). Panics with what failed if the machine
    /// does not allow it.
    pub(crate) fn create(nodes: u64) -> Network {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let count = NEXT.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        // Interface names are at most 15 bytes: "lv" + tag + "n" + id stays under.
        let tag = format!("{}{}", pid % 100_000, count % 100);
        let taken = String::from_utf8_lossy(
            &Command::new("ip")
                .args(["-o", "addr", "show"])
                .output()
                .map(|o| o.stdout)
                .unwrap_or_default(),
        )
        .into_owned();
        let subnet = (0..250u32)
            .map(|i| ((pid.wrapping_mul(7) + count * 31 + i) % 250 + 1) as u8)
            .find(|x| !taken.contains(&format!("198.18.{x}.")))
            .expect("a free 198.18.X.0/24");
        let network = Network {
            tag,
            subnet,
            nodes,
            cuts: Mutex::new(BTreeSet::new()),
        };
        let bridge = network.bridge();
        must(ip(&["link", "add", &bridge, "type", "bridge"]));
        must(ip(&[
            "addr",
            "add",
            &format!("{}/24", network.host_address()),
            "dev",
            &bridge,
        ]));
        must(ip(&["link", "set", &bridge, "up"]));
        for id in 1..=nodes {
            let ns = network.namespace(id);
            let (outside, inside) = (
                format!("lv{}n{id}", network.tag),
                format!("lp{}n{id}", network.tag),
            );
            must(ip(&["netns", "add", &ns]));
            must(ip(&[
                "link", "add", &outside, "type", "veth", "peer", "name", &inside,
            ]));
            must(ip(&["link", "set", &inside, "netns", &ns]));
            must(ip(&["link", "set", &outside, "master", &bridge]));
            must(ip(&["link", "set", &outside, "up"]));
            must(ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{}/24", network.address(id)),
                "dev",
                &inside,
            ]));
            must(ip(&["-n", &ns, "link", "set", &inside, "up"]));
            must(ip(&["-n", &ns, "link", "set", "lo", "up"]));
        }
        network
    }

    fn bridge(&self) -> String {
        format!("lb{}", self.tag)
    }

    fn namespace(&self, id: u64) -> String {
        format!("ldlm{}n{id}", self.tag)
    }

    /// Node `id`'s address.
    pub(crate) fn address(&self, id: u64) -> String {
        format!("198.18.{}.{id}", self.subnet)
    }

    /// The test process's address on the bridge.
    pub(crate) fn host_address(&self) -> String {
        format!("198.18.{}.254", self.subnet)
    }

    /// A command that runs the server binary in node `id`'s namespace (the process is the
    /// server itself: `ip netns exec` execs it, so its PID is the server's).
    pub(crate) fn server_command(&self, id: u64) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.namespace(id), SERVER]);
        super::clean_env(&mut command);
        command
    }

    /// Drops what node `from` sends to node `to`.
    pub(crate) fn cut(&self, from: u64, to: u64) {
        if self.cuts.lock().expect("cuts").insert((from, to)) {
            self.blackhole("add", from, to);
        }
    }

    /// `ip route add|del blackhole <to>` in `from`'s namespace.
    fn blackhole(&self, op: &str, from: u64, to: u64) {
        must(ip(&[
            "-n",
            &self.namespace(from),
            "route",
            op,
            "blackhole",
            &format!("{}/32", self.address(to)),
        ]));
    }

    /// Cuts every link between a node in `side` and a node outside it, both ways.
    pub(crate) fn split(&self, side: &[u64]) {
        for a in side.iter().copied() {
            for b in (1..=self.nodes).filter(|b| !side.contains(b)) {
                self.cut(a, b);
                self.cut(b, a);
            }
        }
    }

    /// Removes every cut.
    pub(crate) fn heal(&self) {
        let cuts = std::mem::take(&mut *self.cuts.lock().expect("cuts"));
        for (from, to) in cuts {
            self.blackhole("del", from, to);
        }
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        for id in 1..=self.nodes {
            // Deleting a namespace deletes its end of the veth pair, and so the pair.
            let _ = ip(&["netns", "del", &self.namespace(id)]);
        }
        let _ = ip(&["link", "del", &self.bridge()]);
    }
}
