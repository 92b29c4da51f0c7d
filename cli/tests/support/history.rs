//! What cluster clients were told, and a checker over it.
//!
//! Each client records, with timestamps, every grant it was told of (name, key, fencing token)
//! and when it stopped believing in it: when it sent the unlock (it stops using the lock then),
//! when it learned it may have lost it (its call failed, its connection closed, a renew was
//! refused, it dropped its connection on purpose), or when its lease ran out — counted from
//! when the client *sent* the grant or renew request, the earliest the server can have started
//! it (a server may end a lease later, never earlier). The checker then asks, per lock name:
//!
//! - **exclusion**: at no moment do more clients believe they hold it than its size;
//! - **fencing**: a hold that had ended before another was even asked for has a smaller token
//!   (answers can arrive out of order, so only the request's time proves the grant came later);
//! - **durability** (with the final listing of the cluster): every hold still believed in at
//!   the end is held, under its key;
//! - **no undone release** (idem): nothing is held that no client believes in any more — a
//!   lock its holder unlocked, or lost with its connection, must not come back.
//!
//! A violation is reported with the smallest piece of history that shows it: the holds
//! involved.

use std::collections::HashMap;
use std::time::Instant;

/// One hold as a client saw it.
#[derive(Clone, Debug)]
#[allow(dead_code)] // `client` and `via` are read through `Debug`, in violation reports.
pub(crate) struct Hold {
    /// Which client (shown when a violation is reported).
    pub(crate) client: usize,
    /// Through which node and transport (idem).
    pub(crate) via: String,
    pub(crate) name: String,
    pub(crate) size: usize,
    pub(crate) key: String,
    pub(crate) token: u64,
    /// When the request was sent (the grant happened between this and `from`).
    pub(crate) asked: Instant,
    /// When the grant's answer arrived.
    pub(crate) from: Instant,
    /// When the client stopped believing in it (`None`: still does).
    pub(crate) until: Option<Instant>,
    /// When its lease runs out, as the client counts it (`None`: no lease).
    pub(crate) lease_end: Option<Instant>,
    /// How it ended, as the client saw it (shown when a violation is reported).
    pub(crate) ended: Option<String>,
}

impl Hold {
    /// Until when the client believed in it, measured against `end` for a hold still believed
    /// in then.
    pub(crate) fn believed_until(&self, end: Instant) -> Instant {
        let until = self.until.unwrap_or(end);
        self.lease_end.map_or(until, |lease| lease.min(until))
    }

    /// Whether the client still believes in it at `at`.
    pub(crate) fn believed_at(&self, at: Instant) -> bool {
        self.until.is_none() && self.lease_end.is_none_or(|lease| lease > at)
    }
}

/// A broken promise, with the holds that show it.
#[derive(Debug)]
pub(crate) struct Violation {
    pub(crate) what: String,
    pub(crate) holds: Vec<Hold>,
}

/// Exclusion and fencing over `holds`, measured against `end` for holds still believed in.
pub(crate) fn check(holds: &[Hold], end: Instant) -> Vec<Violation> {
    let mut by_name: HashMap<&str, Vec<&Hold>> = HashMap::new();
    for hold in holds {
        by_name.entry(&hold.name).or_default().push(hold);
    }
    let mut violations = Vec::new();
    for (name, mut holds) in by_name {
        holds.sort_by_key(|h| h.from);
        // Exclusion: sweep the starts; at each, count the holds believed in then.
        for (i, hold) in holds.iter().enumerate() {
            let at = hold.from;
            let believed: Vec<&Hold> = holds[..=i]
                .iter()
                .copied()
                .filter(|h| h.believed_until(end) > at)
                .collect();
            if believed.len() > hold.size {
                violations.push(Violation {
                    what: format!(
                        "{name}: {} holders at once, size {}",
                        believed.len(),
                        hold.size
                    ),
                    holds: believed.into_iter().cloned().collect(),
                });
                break;
            }
        }
        // Fencing: a hold that had ended before another was asked for has a smaller token.
        'fencing: for earlier in &holds {
            if earlier.until.is_none() && earlier.lease_end.is_none() {
                continue;
            }
            let ended = earlier.believed_until(end);
            for later in &holds {
                if later.asked > ended && later.token <= earlier.token {
                    violations.push(Violation {
                        what: format!(
                            "{name}: token {} granted after a hold with token {} had ended",
                            later.token, earlier.token
                        ),
                        holds: vec![(*earlier).clone(), (*later).clone()],
                    });
                    break 'fencing;
                }
            }
        }
    }
    violations
}

/// Durability: every hold still believed in when the cluster was listed (`at`) is in
/// `listed` (name, key).
pub(crate) fn check_final(
    holds: &[Hold],
    listed: &[(String, String)],
    at: Instant,
) -> Vec<Violation> {
    holds
        .iter()
        .filter(|h| h.believed_at(at))
        .filter(|h| !listed.iter().any(|(n, k)| *n == h.name && *k == h.key))
        .map(|h| Violation {
            what: format!("{}: an acknowledged, unreleased hold is gone", h.name),
            holds: vec![h.clone()],
        })
        .collect()
}

/// No undone release: every hold in `listed` (at `at`) is one a client still believes in.
pub(crate) fn check_no_stray(
    holds: &[Hold],
    listed: &[(String, String)],
    at: Instant,
) -> Vec<Violation> {
    listed
        .iter()
        .filter(|(name, key)| {
            !holds
                .iter()
                .any(|h| h.believed_at(at) && h.name == *name && h.key == *key)
        })
        .map(|(name, key)| Violation {
            what: format!("{name}: key {key} is held though no client believes in it"),
            holds: holds
                .iter()
                .filter(|h| h.name == *name && h.key == *key)
                .cloned()
                .collect(),
        })
        .collect()
}
