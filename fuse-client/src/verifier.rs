//! The write verifier ([durability]: fsync tells the truth), in the manner of NFS's write
//! verifier. A commit without `sync` is answered before it is durable; the manager's answer
//! names its incarnation. Such commits are kept here, per manager, until a sync answered by
//! the same incarnation covers them. A sync answered by another incarnation means the
//! manager restarted in between: those commits are *suspects* — they may have been lost
//! with the crash — and are checked against the manager's extent map before the next fsync
//! of their inode may succeed.
//!
//! Owns: the unsynced commits and the check of a suspect against an extent map. Pure: no
//! I/O, no clock. Must not: decide what to do with a lost commit (the caller reports EIO).

use proto::ids::{InodeId, NodeId};
use proto::msg::{Extent, InodeWrite};
use std::collections::HashMap;

/// A commit accepted without `sync`, not yet known to be durable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pending {
    /// Order of acceptance (a sync covers the commits accepted before it was sent).
    pub seq: u64,
    /// The incarnation of the manager that accepted it.
    pub incarnation: u64,
    pub write: InodeWrite,
}

/// Unsynced commits of every manager.
#[derive(Debug, Default)]
pub struct Unsynced {
    next: u64,
    by_node: HashMap<NodeId, Vec<Pending>>,
}

impl Unsynced {
    /// The mark to take before sending a sync: the sync covers what was accepted before.
    pub fn mark(&mut self) -> u64 {
        self.next += 1;
        self.next
    }

    /// `node` (incarnation `incarnation`) accepted `writes` without sync. Returns how many
    /// commits of `node` are now unsynced.
    pub fn committed(&mut self, node: NodeId, incarnation: u64, writes: Vec<InodeWrite>) -> usize {
        let list = self.by_node.entry(node).or_default();
        for write in writes {
            self.next += 1;
            list.push(Pending {
                seq: self.next,
                incarnation,
                write,
            });
        }
        list.len()
    }

    /// A sync marked `before` was answered by `node` in `incarnation`: what that incarnation
    /// accepted before is durable and forgotten. Returns the suspects (accepted before by
    /// another incarnation), removed from the list, in acceptance order. Commits of another
    /// incarnation whose inode `resent` names stay: their write lease was reclaimed from
    /// `incarnation`, so they are sent again (`take_suspects`) rather than checked.
    pub fn synced(
        &mut self,
        node: NodeId,
        incarnation: u64,
        before: u64,
        resent: impl Fn(InodeId) -> bool,
    ) -> Vec<Pending> {
        let Some(list) = self.by_node.get_mut(&node) else {
            return Vec::new();
        };
        let mut suspects = Vec::new();
        list.retain(|p| {
            if p.seq >= before {
                return true;
            }
            if p.incarnation != incarnation {
                if resent(p.write.ino) {
                    return true;
                }
                suspects.push(p.clone());
            }
            false
        });
        if list.is_empty() {
            self.by_node.remove(&node);
        }
        suspects
    }

    /// Takes the commits of `ino` at `node` accepted by another incarnation than
    /// `current` (to be sent again under a reclaimed lease), in acceptance order.
    pub fn take_suspects(&mut self, node: NodeId, ino: InodeId, current: u64) -> Vec<InodeWrite> {
        let Some(list) = self.by_node.get_mut(&node) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        list.retain(|p| {
            if p.write.ino == ino && p.incarnation != current {
                out.push(p.write.clone());
                return false;
            }
            true
        });
        out
    }

    /// Whether `node` has unsynced commits accepted by another incarnation than
    /// `incarnation` (a sync answered by `incarnation` would make them suspects).
    pub fn has_other_incarnation(&self, node: NodeId, incarnation: u64) -> bool {
        self.by_node
            .get(&node)
            .is_some_and(|l| l.iter().any(|p| p.incarnation != incarnation))
    }

    /// Whether `ino` has commits at `node` accepted by another incarnation than `current`.
    pub fn has_suspects(&self, node: NodeId, ino: InodeId, current: u64) -> bool {
        self.by_node.get(&node).is_some_and(|l| {
            l.iter()
                .any(|p| p.write.ino == ino && p.incarnation != current)
        })
    }

    /// Inodes with unsynced commits at `node`.
    pub fn inodes(&self, node: NodeId) -> Vec<InodeId> {
        let mut v: Vec<InodeId> = self
            .by_node
            .get(&node)
            .map(|l| l.iter().map(|p| p.write.ino).collect())
            .unwrap_or_default();
        v.sort_unstable();
        v.dedup();
        v
    }

    /// Whether `ino` has unsynced commits anywhere.
    pub fn has(&self, ino: InodeId) -> bool {
        self.by_node
            .values()
            .any(|l| l.iter().any(|p| p.write.ino == ino))
    }

    /// Unsynced commits of `node`.
    pub fn count(&self, node: NodeId) -> usize {
        self.by_node.get(&node).map_or(0, Vec::len)
    }

    /// The lowest segment of `log` named by an unsynced commit: it may be sent again after
    /// a manager restart, so it holds the log's reclaim horizon (see `horizon`).
    pub fn min_segment(&self, log: proto::ids::LogId) -> Option<proto::ids::SegmentId> {
        self.by_node
            .values()
            .flatten()
            .flat_map(|p| p.write.extents.iter())
            .filter(|e| e.ptr.seg.log == log)
            .map(|e| e.ptr.seg.segment)
            .min()
    }

    /// Forgets the commits of `ino` (the inode is gone).
    pub fn forget(&mut self, ino: InodeId) {
        for list in self.by_node.values_mut() {
            list.retain(|p| p.write.ino != ino);
        }
        self.by_node.retain(|_, l| !l.is_empty());
    }
}

/// The file range `[start, end)` a write's extents cover (`None` without extents).
pub fn span(write: &InodeWrite) -> Option<(u64, u64)> {
    let start = write.extents.iter().map(|e| e.offset).min()?;
    let end = write
        .extents
        .iter()
        .map(|e| e.offset + e.ptr.len as u64)
        .max()?;
    Some((start, end))
}

/// Whether every byte of `expected` is still mapped as it was committed in `actual` (the
/// extent map over its span): same segment, same position in it. A later overwrite also
/// counts as "not there" — the caller cannot tell it from a loss and reports EIO.
pub fn survived(expected: &[Extent], actual: &[Extent]) -> bool {
    expected.iter().all(|e| {
        let (e_start, e_end) = (e.offset, e.offset + e.ptr.len as u64);
        let covered: u64 = actual
            .iter()
            .filter(|a| a.ptr.seg == e.ptr.seg)
            // Same mapping: file offset minus segment offset agree.
            .filter(|a| {
                a.offset as i128 - a.ptr.offset as i128 == e.offset as i128 - e.ptr.offset as i128
            })
            .map(|a| {
                let (s, t) = (
                    a.offset.max(e_start),
                    (a.offset + a.ptr.len as u64).min(e_end),
                );
                t.saturating_sub(s)
            })
            .sum();
        covered >= e.ptr.len as u64
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::ids::{LogPtr, SegmentAddr};
    use proto::msg::Timestamp;

    fn ext(offset: u64, seg: u64, at: u32, len: u32) -> Extent {
        Extent {
            offset,
            ptr: LogPtr {
                seg: SegmentAddr {
                    log: proto::ids::LogId::client(1),
                    segment: proto::ids::SegmentId(seg),
                    len: 1 << 20,
                    k: 4,
                    m: 2,
                    nodes: 0,
                },
                offset: at,
                len,
            },
        }
    }

    fn write(ino: u64, extents: Vec<Extent>) -> InodeWrite {
        InodeWrite {
            sums: Vec::new(),
            ino: InodeId(ino),
            extents,
            size: 0,
            mtime: Timestamp::default(),
        }
    }

    #[test]
    fn a_sync_of_the_same_incarnation_covers_earlier_commits_only() {
        let mut u = Unsynced::default();
        let n = NodeId(1);
        u.committed(n, 7, vec![write(1, vec![]), write(2, vec![])]);
        let mark = u.mark();
        u.committed(n, 7, vec![write(3, vec![])]);
        assert_eq!(u.count(n), 3);
        assert!(u.synced(n, 7, mark, |_| false).is_empty());
        assert_eq!(u.count(n), 1, "the commit after the mark stays");
        let mark = u.mark();
        assert!(u.synced(n, 7, mark, |_| false).is_empty());
        assert_eq!(u.count(n), 0);
    }

    #[test]
    fn a_sync_of_another_incarnation_turns_earlier_commits_into_suspects() {
        let mut u = Unsynced::default();
        let (n, m) = (NodeId(1), NodeId(2));
        u.committed(n, 7, vec![write(1, vec![])]);
        u.committed(m, 9, vec![write(5, vec![])]);
        let mark = u.mark();
        let s = u.synced(n, 8, mark, |_| false);
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].write.ino, InodeId(1));
        assert_eq!(u.count(n), 0);
        assert_eq!(u.count(m), 1, "other managers are not affected");
        u.forget(InodeId(5));
        assert_eq!(u.count(m), 0);
    }

    #[test]
    fn commits_of_a_reclaimed_inode_wait_to_be_sent_again() {
        // A sync answered by the new incarnation before the reclaim's resend: the reclaimed
        // inode's commits stay to be sent again; only the others are checked.
        let mut u = Unsynced::default();
        let n = NodeId(1);
        u.committed(n, 7, vec![write(1, vec![]), write(2, vec![])]);
        assert!(u.has_other_incarnation(n, 8));
        assert!(!u.has_other_incarnation(n, 7));
        let mark = u.mark();
        let s = u.synced(n, 8, mark, |i| i == InodeId(1));
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].write.ino, InodeId(2));
        assert!(u.has_suspects(n, InodeId(1), 8));
        assert!(!u.has_suspects(n, InodeId(2), 8));
        assert_eq!(u.take_suspects(n, InodeId(1), 8).len(), 1);
        assert_eq!(u.count(n), 0);
    }

    #[test]
    fn suspects_of_an_inode_are_taken_in_order() {
        let mut u = Unsynced::default();
        let n = NodeId(1);
        u.committed(
            n,
            7,
            vec![write(1, vec![ext(0, 1, 0, 10)]), write(2, vec![])],
        );
        u.committed(n, 7, vec![write(1, vec![ext(0, 2, 0, 10)])]);
        u.committed(n, 8, vec![write(1, vec![ext(0, 3, 0, 10)])]);
        assert_eq!(u.inodes(n), vec![InodeId(1), InodeId(2)]);
        assert!(u.has(InodeId(1)));
        let s = u.take_suspects(n, InodeId(1), 8);
        let segs: Vec<u64> = s.iter().map(|w| w.extents[0].ptr.seg.segment.0).collect();
        assert_eq!(segs, vec![1, 2], "older incarnation only, in order");
        assert_eq!(u.count(n), 2);
        assert!(u.take_suspects(n, InodeId(1), 8).is_empty());
    }

    #[test]
    fn survival_needs_every_byte_mapped_as_committed() {
        let committed = vec![ext(0, 4, 100, 1000)];
        assert!(survived(&committed, &committed));
        // Split in two pieces by the extent map, same mapping.
        assert!(survived(
            &committed,
            &[ext(0, 4, 100, 400), ext(400, 4, 500, 600)]
        ));
        // Part of it now maps elsewhere (lost, or overwritten).
        assert!(!survived(
            &committed,
            &[ext(0, 4, 100, 400), ext(400, 5, 0, 600)]
        ));
        // Same segment, shifted mapping.
        assert!(!survived(&committed, &[ext(0, 4, 0, 1000)]));
        assert!(!survived(&committed, &[]));
        assert!(survived(&[], &[]));
        assert_eq!(span(&write(1, committed.clone())), Some((0, 1000)));
        assert_eq!(span(&write(1, vec![])), None);
    }
}
