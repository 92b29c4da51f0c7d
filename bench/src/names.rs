//! Lock names, formatted once before the run. Each name has a numeric id (its index in the
//! checker's tables); `mixed` replaces names while it runs (as go-ldlm's stress tool does), and
//! a replacement gets a fresh id so the holds of the old name and the new one are never mixed up.

use std::sync::Arc;

use parking_lot::RwLock;

/// One lock name and its id.
#[derive(Debug)]
pub(crate) struct Name {
    pub(crate) id: u32,
    pub(crate) text: Box<str>,
}

/// The names of a run: `slots` current names, and every name ever used by id.
pub(crate) struct Names {
    slots: Vec<RwLock<Arc<Name>>>,
    all: RwLock<Vec<Arc<Name>>>,
    capacity: usize,
}

impl Names {
    /// Fixed names, ids `0..names.len()`; room for no replacements.
    pub(crate) fn fixed(names: Vec<String>) -> Names {
        Names::with_capacity(names, 0)
    }

    /// Names with room for `replacements` replacements.
    pub(crate) fn with_capacity(names: Vec<String>, replacements: usize) -> Names {
        let all: Vec<Arc<Name>> = names
            .into_iter()
            .enumerate()
            .map(|(id, text)| {
                Arc::new(Name {
                    id: id as u32,
                    text: text.into_boxed_str(),
                })
            })
            .collect();
        let capacity = all.len() + replacements;
        Names {
            slots: all.iter().cloned().map(RwLock::new).collect(),
            all: RwLock::new(all),
            capacity,
        }
    }

    /// How many ids the checker needs room for.
    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    /// Number of slots (current names).
    pub(crate) fn len(&self) -> usize {
        self.slots.len()
    }

    /// The current name in `slot`.
    pub(crate) fn get(&self, slot: usize) -> Arc<Name> {
        self.slots[slot % self.slots.len()].read().clone()
    }

    /// Puts a new name into `slot`; `false` when the id space is used up.
    pub(crate) fn replace(&self, slot: usize, text: String) -> bool {
        let mut all = self.all.write();
        if all.len() >= self.capacity {
            return false;
        }
        let name = Arc::new(Name {
            id: all.len() as u32,
            text: text.into_boxed_str(),
        });
        all.push(name.clone());
        *self.slots[slot % self.slots.len()].write() = name;
        true
    }

    /// The text of the name with `id` (for messages).
    pub(crate) fn name_of(&self, id: u32) -> String {
        self.all
            .read()
            .get(id as usize)
            .map_or_else(|| format!("#{id}"), |n| n.text.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replacement_gets_a_fresh_id() {
        let names = Names::with_capacity(vec!["a".into(), "b".into()], 1);
        assert_eq!(names.capacity(), 3);
        assert_eq!(names.get(1).id, 1);
        assert!(names.replace(1, "c".into()));
        assert_eq!((names.get(1).id, &*names.get(1).text), (2, "c"));
        assert_eq!(names.name_of(1), "b");
        assert!(!names.replace(0, "d".into()), "no room left");
        assert_eq!(names.len(), 2);
    }
}
