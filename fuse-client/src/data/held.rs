//! Which extent windows the block cache holds peer-servable blocks of (cooperative caching,
//! issue 12): a count of cached blocks with a log address per window (inode, `GetExtents`
//! offset), kept by `cache` as such blocks enter and leave, and the changes the managers
//! have not been told yet: a window whose first such block came in (`held`), one whose
//! last went (`gone`).
//!
//! Owns the counts and the pending changes only; the client's hint sender takes the changes
//! and reports them (`HolderHints`). Pure and bounded: a window is counted only while it
//! has a block (so at most one entry per cached block), and at most `MAX_CHANGES` windows
//! wait to be reported (past it a change is lost, which costs readers a fallback or a
//! storage read, never a wrong answer). Must not do I/O.

use crate::data::extents::WINDOW;
use proto::ids::InodeId;
use std::collections::{BTreeMap, HashMap};

/// Windows whose change waits for the next report, at most.
pub const MAX_CHANGES: usize = 4096;

/// An extent window: (inode, byte offset of the window, as `GetExtents` asks for it).
pub type Window = (InodeId, u64);

/// The window that holds byte `offset` of `ino`.
pub fn window_at(ino: InodeId, offset: u64) -> Window {
    (ino, offset / WINDOW * WINDOW)
}

/// Windows not yet reported, by their latest state.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    pub held: Vec<Window>,
    pub gone: Vec<Window>,
}

/// Per-window counts of addressed cached blocks, and the changes to report.
#[derive(Debug, Default)]
pub struct HeldWindows {
    counts: HashMap<Window, u32>,
    /// The latest state of each changed window since the last `take_changes`.
    changes: BTreeMap<Window, bool>,
    /// Changes lost to the bound since the start (for stats and tests).
    pub lost: u64,
}

impl HeldWindows {
    /// An addressed block of `ino`, at byte `offset`, came into the cache.
    pub fn added(&mut self, ino: InodeId, offset: u64) {
        let w = window_at(ino, offset);
        let n = self.counts.entry(w).or_insert(0);
        *n += 1;
        if *n == 1 {
            self.changed(w, true);
        }
    }

    /// An addressed block of `ino`, at byte `offset`, left the cache (or lost its address).
    pub fn removed(&mut self, ino: InodeId, offset: u64) {
        let w = window_at(ino, offset);
        let Some(n) = self.counts.get_mut(&w) else {
            return;
        };
        *n -= 1;
        if *n == 0 {
            self.counts.remove(&w);
            self.changed(w, false);
        }
    }

    fn changed(&mut self, w: Window, held: bool) {
        // A window that changed back before it was reported keeps its latest state: a
        // `gone` the manager did not need is harmless, a `held` is still true.
        if self.changes.len() >= MAX_CHANGES && !self.changes.contains_key(&w) {
            self.lost += 1;
            return;
        }
        self.changes.insert(w, held);
    }

    /// Addressed blocks of window `w` in the cache.
    pub fn count(&self, w: Window) -> u32 {
        self.counts.get(&w).copied().unwrap_or(0)
    }

    /// Windows with at least one addressed block.
    pub fn windows(&self) -> usize {
        self.counts.len()
    }

    /// Every window with at least one addressed block (to report them again before the
    /// managers' hints age out).
    pub fn all(&self) -> Vec<Window> {
        self.counts.keys().copied().collect()
    }

    /// The changes since the last call.
    pub fn take_changes(&mut self) -> Changes {
        let mut out = Changes::default();
        for (w, held) in std::mem::take(&mut self.changes) {
            if held {
                out.held.push(w);
            } else {
                out.gone.push(w);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BLOCK: u64 = 64 << 10;

    #[test]
    fn the_first_block_in_and_the_last_block_out_are_reported() {
        let mut h = HeldWindows::default();
        let a = InodeId(7);
        h.added(a, 0);
        h.added(a, BLOCK);
        h.added(a, WINDOW); // the next window
        assert_eq!(h.count((a, 0)), 2);
        let mut all = h.all();
        all.sort();
        assert_eq!(all, vec![(a, 0), (a, WINDOW)]);
        assert_eq!(
            h.take_changes(),
            Changes {
                held: vec![(a, 0), (a, WINDOW)],
                gone: vec![]
            }
        );
        h.removed(a, 0);
        assert_eq!(h.take_changes(), Changes::default(), "one block is left");
        h.removed(a, BLOCK);
        h.removed(a, WINDOW);
        assert_eq!(
            h.take_changes(),
            Changes {
                held: vec![],
                gone: vec![(a, 0), (a, WINDOW)]
            }
        );
        assert_eq!(h.windows(), 0, "no memory for windows without blocks");
        assert!(h.all().is_empty());
        // A block that was never counted changes nothing.
        h.removed(a, 3 * BLOCK);
        assert_eq!(h.take_changes(), Changes::default());
    }

    #[test]
    fn a_window_reports_only_its_latest_state() {
        let mut h = HeldWindows::default();
        let a = InodeId(7);
        h.added(a, 5 * BLOCK);
        h.removed(a, 5 * BLOCK);
        assert_eq!(h.take_changes().gone, vec![(a, 0)]);
        h.removed(a, 5 * BLOCK);
        h.added(a, 5 * BLOCK);
        h.removed(a, 5 * BLOCK);
        h.added(a, 6 * BLOCK);
        assert_eq!(
            h.take_changes(),
            Changes {
                held: vec![(a, 0)],
                gone: vec![]
            }
        );
    }

    #[test]
    fn pending_changes_are_bounded_and_counts_stay_exact() {
        let mut h = HeldWindows::default();
        for i in 0..(MAX_CHANGES as u64 + 10) {
            h.added(InodeId(i), 0);
        }
        assert_eq!(h.lost, 10);
        assert_eq!(h.windows(), MAX_CHANGES + 10);
        assert_eq!(h.take_changes().held.len(), MAX_CHANGES);
        h.removed(InodeId(0), 0);
        assert_eq!(h.take_changes().gone, vec![(InodeId(0), 0)]);
    }
}
