//! Local open counts per inode. The first local open registers this client's session at
//! the manager (`Open`), the last close releases it (`Release`); each inode's slot is a
//! mutex held across that RPC so that the opens and closes of one inode reach the manager
//! in order.
//!
//! The release is deferred: a last close marks the inode (its slot stays, count 0) and
//! `Client::send_releases` sends the marked ones a moment later, a batch per manager
//! (`ReleaseMany`), holding their slots across the request; an open in between takes the
//! mark back (the session is still registered, nothing needs sending). An inode is marked
//! only while its slot exists with count 0 and the manager still lists this session.
//!
//! Owns: the slots and the marks. Must not: send the RPCs (that is `ops::namespace`).

use dashmap::DashMap;
use proto::ids::InodeId;
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, MutexGuard};

/// One inode's local open count, locked across its `Open`/`Release` RPC.
pub(crate) type OpenSlot = Arc<tokio::sync::Mutex<u32>>;

#[derive(Default)]
pub(crate) struct OpenFiles {
    slots: DashMap<InodeId, OpenSlot>,
    /// Inodes whose last local close the manager has not been told of yet (changed only
    /// under the inode's slot lock).
    deferred: Mutex<BTreeSet<InodeId>>,
}

impl OpenFiles {
    fn marks(&self) -> MutexGuard<'_, BTreeSet<InodeId>> {
        self.deferred.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The slot of `ino`, created (count 0) if it has none.
    pub fn slot(&self, ino: InodeId) -> OpenSlot {
        self.slots.entry(ino).or_default().clone()
    }

    /// The slot of `ino` if it has one.
    pub fn existing(&self, ino: InodeId) -> Option<OpenSlot> {
        self.slots.get(&ino).map(|s| s.clone())
    }

    /// Whether `slot` is still `ino`'s (a concurrent last close may have removed it).
    pub fn is_current(&self, ino: InodeId, slot: &OpenSlot) -> bool {
        self.slots.get(&ino).is_some_and(|s| Arc::ptr_eq(&s, slot))
    }

    /// Forgets `ino`'s slot if it is still `slot` (after the last close's `Release`).
    pub fn remove_if_current(&self, ino: InodeId, slot: &OpenSlot) {
        self.slots.remove_if(&ino, |_, s| Arc::ptr_eq(s, slot));
    }

    /// How many local opens `ino` has (0 while its slot is locked by an open or close).
    pub fn count(&self, ino: InodeId) -> u32 {
        self.slots
            .get(&ino)
            .and_then(|s| s.try_lock().ok().map(|n| *n))
            .unwrap_or(0)
    }

    /// Marks `ino`'s release as owed (its last local close; under its slot lock).
    pub fn defer_release(&self, ino: InodeId) {
        self.marks().insert(ino);
    }

    /// Takes back `ino`'s owed release (an open, or the sender; under its slot lock):
    /// whether it was owed.
    pub fn undefer(&self, ino: InodeId) -> bool {
        self.marks().remove(&ino)
    }

    /// The inodes whose release is owed now.
    pub fn deferred(&self) -> Vec<InodeId> {
        self.marks().iter().copied().collect()
    }

    /// Whether any release is owed.
    pub fn owes_releases(&self) -> bool {
        !self.marks().is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_removed_slot_is_no_longer_current_and_a_new_one_starts_at_zero() {
        let f = OpenFiles::default();
        let x = InodeId(7);
        assert!(f.existing(x).is_none());
        f.defer_release(x);
        assert!(f.owes_releases());
        assert_eq!(f.deferred(), vec![x]);
        assert!(f.undefer(x));
        assert!(!f.undefer(x), "taken back once");
        assert!(!f.owes_releases());
        let s = f.slot(x);
        *s.try_lock().expect("free") += 2;
        assert_eq!(f.count(x), 2);
        assert!(f.is_current(x, &s));
        f.remove_if_current(x, &s);
        assert!(!f.is_current(x, &s));
        assert_eq!(f.count(x), 0);
        let t = f.slot(x);
        assert!(!Arc::ptr_eq(&s, &t));
        // A stale slot does not remove the new one.
        f.remove_if_current(x, &s);
        assert!(f.is_current(x, &t));
    }
}
