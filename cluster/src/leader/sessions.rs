//! The leader's live REST sessions: id → engine owner, and back (the engine reports expiry by
//! owner, a client asks by id). Both directions in one place, so they never disagree.

use std::collections::HashMap;

use ldlm_engine::{Owner, OwnerId};

/// Live REST sessions.
#[derive(Default)]
pub(super) struct LiveSessions {
    by_id: HashMap<u128, Owner>,
    by_owner: HashMap<OwnerId, u128>,
}

impl LiveSessions {
    pub(super) fn len(&self) -> usize {
        self.by_id.len()
    }

    pub(super) fn insert(&mut self, id: u128, owner: Owner) {
        self.by_owner.insert(owner.id(), id);
        self.by_id.insert(id, owner);
    }

    pub(super) fn get(&self, id: u128) -> Option<&Owner> {
        self.by_id.get(&id)
    }

    /// The session whose owner is `owner`.
    pub(super) fn by_owner(&self, owner: OwnerId) -> Option<&Owner> {
        self.by_id.get(self.by_owner.get(&owner)?)
    }

    pub(super) fn has_owner(&self, owner: OwnerId) -> bool {
        self.by_owner.contains_key(&owner)
    }

    pub(super) fn remove(&mut self, id: u128) -> Option<Owner> {
        let owner = self.by_id.remove(&id)?;
        self.by_owner.remove(&owner.id());
        Some(owner)
    }

    /// Removes the session of `owner`; its id.
    pub(super) fn remove_owner(&mut self, owner: OwnerId) -> Option<u128> {
        let id = self.by_owner.remove(&owner)?;
        self.by_id.remove(&id);
        Some(id)
    }
}
