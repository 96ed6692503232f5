//! The state of the lease session (`lease::session`), owned here so that the composition
//! root can hold it without importing the session's methods.
//!
//! Owns: the per-inode gates that serialise `AcquireWrite`, the inodes whose write lease a
//! manager restart took away and that must be asked for again before their commit, the
//! write leases held when a manager's caches were dropped (reclaimed after its restart even
//! without dirty data), and the kernel's invalidation channel while mounted. (The write leases themselves stay in
//! `data::DataState`: they are checked and used under the data lock together with the
//! dirty data they guard.)
//! Must not: call a manager or hold a lock across an await (the gates are tokio mutexes
//! that the session holds across its `AcquireWrite`; nothing here waits on them).

use crate::kernel::notify::KernelCache;
use dashmap::DashMap;
use proto::ids::{InodeId, NodeId};
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

/// The lease session's state (see the module docs).
#[derive(Default)]
pub(crate) struct SessionState {
    /// Serialises `AcquireWrite` of one inode (never taken by a callback).
    acquiring: DashMap<InodeId, Arc<tokio::sync::Mutex<()>>>,
    /// Inodes with unflushed writes whose write lease a manager restart took away: the
    /// lease is asked for again before they are committed.
    reacquire: DashMap<InodeId, ()>,
    /// Per manager: inodes whose write lease was held when its caches were dropped (lease
    /// run out or restart learnt). After a restart they are reclaimed even when clean: the
    /// manager recorded the lease, and its readers wait for the reclaim until the reclaim
    /// window ends otherwise.
    held_at_drop: DashMap<NodeId, BTreeSet<InodeId>>,
    /// The kernel's invalidation channel while mounted.
    notifier: Mutex<Option<Arc<dyn KernelCache>>>,
    /// How many times a manager that gave up on this client made it discard unflushed
    /// writes (a commit is sent again after a restart only if none was discarded since).
    discards: std::sync::atomic::AtomicU64,
}

impl SessionState {
    /// The gate that serialises `AcquireWrite` of `ino`.
    pub(crate) fn acquire_gate(&self, ino: InodeId) -> Arc<tokio::sync::Mutex<()>> {
        self.acquiring.entry(ino).or_default().clone()
    }

    /// `ino`'s write lease must be asked for again before its next commit.
    pub(crate) fn must_reacquire(&self, ino: InodeId) {
        self.reacquire.insert(ino, ());
    }

    /// Takes `ino`'s re-acquire mark; whether it was set.
    pub(crate) fn take_reacquire(&self, ino: InodeId) -> bool {
        self.reacquire.remove(&ino).is_some()
    }

    /// A manager gave up on this client: its unflushed writes to that manager's inodes
    /// were discarded.
    pub(crate) fn note_discard(&self) {
        self.discards
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }

    /// How many times unflushed writes were discarded so far (`note_discard`).
    pub(crate) fn discards(&self) -> u64 {
        self.discards.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// `inos` held write leases of `node` when its caches were dropped.
    pub(crate) fn note_held_at_drop(&self, node: NodeId, inos: Vec<InodeId>) {
        if inos.is_empty() {
            return;
        }
        self.held_at_drop.entry(node).or_default().extend(inos);
    }

    /// Takes the write leases of `node` held when its caches were dropped.
    pub(crate) fn take_held_at_drop(&self, node: NodeId) -> Vec<InodeId> {
        self.held_at_drop
            .remove(&node)
            .map(|(_, s)| s.into_iter().collect())
            .unwrap_or_default()
    }

    /// Installs (at mount) or removes (at unmount) the kernel's invalidation channel.
    pub(crate) fn set_notifier(&self, notifier: Option<Arc<dyn KernelCache>>) {
        *self.notifier.lock().unwrap_or_else(|e| e.into_inner()) = notifier;
    }

    /// The kernel's invalidation channel, if mounted.
    pub(crate) fn notifier(&self) -> Option<Arc<dyn KernelCache>> {
        self.notifier
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reacquire_mark_is_taken_once() {
        let s = SessionState::default();
        assert!(!s.take_reacquire(InodeId(5)));
        s.must_reacquire(InodeId(5));
        assert!(s.take_reacquire(InodeId(5)));
        assert!(!s.take_reacquire(InodeId(5)));
    }

    #[test]
    fn one_gate_per_inode() {
        let s = SessionState::default();
        assert!(Arc::ptr_eq(
            &s.acquire_gate(InodeId(1)),
            &s.acquire_gate(InodeId(1))
        ));
        assert!(!Arc::ptr_eq(
            &s.acquire_gate(InodeId(1)),
            &s.acquire_gate(InodeId(2))
        ));
    }
}
