//! [`Replica`]: the committed lock table, as every node keeps it. Applying a command is a pure
//! function of the command: no clock, no IO, no randomness, so every node that applied the same
//! log holds the same replica (the tests compare them byte for byte).
//!
//! It holds what a new leader needs to take over without breaking a promise: every hold with
//! its name, key, size, owner, fencing token and lease length; the REST sessions; the highest
//! fencing token ever handed out; and, per owner, the request ids of its recent grants, so a
//! request re-sent after a failover gets its grant back instead of a second one.
//!
//! Invariants (checked as events are applied; an event that would break one is refused and
//! counted, never applied): a lock's holders never exceed its size, all agree on its size, and
//! a key holds at most one slot of a lock.

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

use crate::command::{Applied, Command, GlobalOwner, ReplicatedEvent, RequestId};
use crate::raft::NodeId;

/// How many recent grants per owner are remembered for re-sends. One connection can have many
/// calls in flight; a re-send comes right after a failover, so a window this size covers it.
pub const DEDUPE_WINDOW: usize = 1024;

/// One held slot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaHold {
    /// The hold's key.
    pub key: u128,
    /// Its fencing token.
    pub token: u64,
    /// Its lease length in seconds (0: none).
    pub lease_secs: u32,
    /// Who holds it.
    pub owner: GlobalOwner,
}

/// A lock with at least one holder.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaLock {
    /// Its size.
    pub size: u32,
    /// Its holders, in grant order.
    pub holders: Vec<ReplicaHold>,
}

/// A REST session.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaSession {
    /// Its owner.
    pub owner: GlobalOwner,
    /// How long it lives without use, in milliseconds.
    pub idle_ms: u64,
}

/// A grant remembered for re-sends.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecentGrant {
    /// The request's sequence number.
    pub seq: u64,
    /// Lock name.
    pub name: String,
    /// The key granted.
    pub key: u128,
    /// The token granted.
    pub token: u64,
}

/// The committed lock table. See the module doc.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Replica {
    locks: BTreeMap<String, ReplicaLock>,
    sessions: BTreeMap<u128, ReplicaSession>,
    max_token: u64,
    recent: BTreeMap<GlobalOwner, VecDeque<RecentGrant>>,
}

impl Replica {
    /// Applies one committed command.
    pub fn apply(&mut self, command: &Command) -> Applied {
        let mut applied = Applied::default();
        match command {
            Command::Events(events) => {
                for event in events {
                    if let Err(refused) = self.apply_event(event) {
                        tracing::error!(%refused, "Replicated event refused");
                        applied.refused += 1;
                    }
                }
            }
            Command::SessionOpened { id, owner, idle_ms } => {
                self.sessions.insert(
                    *id,
                    ReplicaSession {
                        owner: *owner,
                        idle_ms: *idle_ms,
                    },
                );
            }
            Command::SessionClosed { id } => {
                if let Some(session) = self.sessions.remove(id) {
                    self.recent.remove(&session.owner);
                }
            }
            Command::OwnerEnded { owner } => {
                self.recent.remove(owner);
            }
        }
        applied
    }

    fn apply_event(&mut self, event: &ReplicatedEvent) -> Result<(), String> {
        match event {
            ReplicatedEvent::Granted {
                name,
                key,
                size,
                owner,
                token,
                lease_secs,
                request,
            } => {
                if *size == 0 {
                    return Err(format!("lock {name:?} granted with size 0"));
                }
                let lock = self
                    .locks
                    .entry(name.clone())
                    .or_insert_with(|| ReplicaLock {
                        size: *size,
                        holders: Vec::new(),
                    });
                if lock.size != *size {
                    return Err(format!(
                        "lock {name:?} has size {} and was granted with size {size}",
                        lock.size
                    ));
                }
                if lock.holders.iter().any(|h| h.key == *key) {
                    return Err(format!("lock {name:?} granted key {key:x} twice"));
                }
                if lock.holders.len() >= lock.size as usize {
                    return Err(format!("lock {name:?} granted beyond its size {size}"));
                }
                lock.holders.push(ReplicaHold {
                    key: *key,
                    token: *token,
                    lease_secs: *lease_secs,
                    owner: *owner,
                });
                self.max_token = self.max_token.max(*token);
                if let Some(request) = request {
                    let recent = self.recent.entry(request.owner).or_default();
                    if recent.len() == DEDUPE_WINDOW {
                        recent.pop_front();
                    }
                    recent.push_back(RecentGrant {
                        seq: request.seq,
                        name: name.clone(),
                        key: *key,
                        token: *token,
                    });
                }
                Ok(())
            }
            ReplicatedEvent::LeaseChanged {
                name,
                key,
                lease_secs,
            } => {
                if let Some(hold) = self
                    .locks
                    .get_mut(name)
                    .and_then(|lock| lock.holders.iter_mut().find(|h| h.key == *key))
                {
                    hold.lease_secs = *lease_secs;
                }
                Ok(())
            }
            ReplicatedEvent::Released { name, key } => {
                if let Some(lock) = self.locks.get_mut(name) {
                    lock.holders.retain(|h| h.key != *key);
                    if lock.holders.is_empty() {
                        self.locks.remove(name);
                    }
                }
                Ok(())
            }
        }
    }

    /// The locks with holders, by name.
    pub fn locks(&self) -> &BTreeMap<String, ReplicaLock> {
        &self.locks
    }

    /// The live REST sessions, by id.
    pub fn sessions(&self) -> &BTreeMap<u128, ReplicaSession> {
        &self.sessions
    }

    /// The highest fencing token ever committed: a new leader's tokens continue above it.
    pub fn max_token(&self) -> u64 {
        self.max_token
    }

    /// Held slots over all locks.
    pub fn hold_count(&self) -> usize {
        self.locks.values().map(|lock| lock.holders.len()).sum()
    }

    /// The grant committed for `request`, if it is still remembered: (name, key, token).
    pub fn grant_for(&self, request: RequestId) -> Option<&RecentGrant> {
        self.recent
            .get(&request.owner)?
            .iter()
            .rev()
            .find(|grant| grant.seq == request.seq)
    }

    /// The nodes whose gRPC clients hold something.
    pub fn owner_nodes(&self) -> std::collections::BTreeSet<NodeId> {
        self.locks
            .values()
            .flat_map(|lock| lock.holders.iter().map(|h| h.owner.node))
            .filter(|&node| node != 0)
            .collect()
    }

    /// The clients of node `node` that hold something.
    pub fn owners_on(&self, node: NodeId) -> Vec<GlobalOwner> {
        let mut owners: Vec<GlobalOwner> = self
            .locks
            .values()
            .flat_map(|lock| lock.holders.iter().map(|h| h.owner))
            .filter(|owner| owner.node == node)
            .collect();
        owners.sort_unstable();
        owners.dedup();
        owners
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: GlobalOwner = GlobalOwner { node: 1, local: 7 };
    const B: GlobalOwner = GlobalOwner { node: 2, local: 9 };

    fn granted(
        name: &str,
        key: u128,
        size: u32,
        owner: GlobalOwner,
        token: u64,
    ) -> ReplicatedEvent {
        ReplicatedEvent::Granted {
            name: name.into(),
            key,
            size,
            owner,
            token,
            lease_secs: 10,
            request: Some(RequestId { owner, seq: token }),
        }
    }

    #[test]
    fn applies_grants_leases_and_releases() {
        let mut replica = Replica::default();
        let applied = replica.apply(&Command::Events(vec![
            granted("x", 1, 2, A, 5),
            granted("x", 2, 2, B, 6),
            ReplicatedEvent::LeaseChanged {
                name: "x".into(),
                key: 1,
                lease_secs: 30,
            },
            ReplicatedEvent::Released {
                name: "x".into(),
                key: 2,
            },
        ]));
        assert_eq!(applied.refused, 0);
        let lock = &replica.locks()["x"];
        assert_eq!(lock.holders.len(), 1);
        assert_eq!(lock.holders[0].lease_secs, 30);
        assert_eq!(
            replica.max_token(),
            6,
            "a released grant's token still counts"
        );
        assert_eq!(replica.owners_on(1), vec![A]);
        assert!(replica.owners_on(2).is_empty());
    }

    #[test]
    fn refuses_what_would_break_an_invariant() {
        let mut replica = Replica::default();
        replica.apply(&Command::Events(vec![granted("x", 1, 1, A, 1)]));
        let before = replica.clone();
        let applied = replica.apply(&Command::Events(vec![
            granted("x", 2, 1, B, 2),
            granted("x", 1, 1, A, 3),
            granted("x", 3, 2, B, 4),
            granted("y", 4, 0, B, 5),
        ]));
        assert_eq!(applied.refused, 4);
        assert_eq!(replica.locks(), before.locks());
    }

    #[test]
    fn remembers_recent_grants_per_owner() {
        let mut replica = Replica::default();
        for token in 1..=(DEDUPE_WINDOW as u64 + 5) {
            replica.apply(&Command::Events(vec![
                granted("x", u128::from(token), 1, A, token),
                ReplicatedEvent::Released {
                    name: "x".into(),
                    key: u128::from(token),
                },
            ]));
        }
        let last = RequestId {
            owner: A,
            seq: DEDUPE_WINDOW as u64 + 5,
        };
        assert_eq!(replica.grant_for(last).map(|g| g.token), Some(last.seq));
        assert!(
            replica.grant_for(RequestId { owner: A, seq: 1 }).is_none(),
            "only a window is kept"
        );
        replica.apply(&Command::OwnerEnded { owner: A });
        assert!(
            replica.grant_for(last).is_none(),
            "forgotten with its owner"
        );
    }

    #[test]
    fn sessions_open_and_close() {
        let mut replica = Replica::default();
        replica.apply(&Command::SessionOpened {
            id: 42,
            owner: A,
            idle_ms: 600_000,
        });
        assert_eq!(replica.sessions()[&42].owner, A);
        replica.apply(&Command::SessionClosed { id: 42 });
        assert!(replica.sessions().is_empty());
    }
}
