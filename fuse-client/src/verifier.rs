//! The write verifier ([durability]: fsync tells the truth), in the manner of NFS's write
//! verifier. A commit without `sync` is answered before it is durable; the manager's answer
//! names its incarnation. Such commits are kept here, per manager, until a sync answered by
//! the same incarnation covers them. A sync answered by another incarnation means the
//! manager restarted in between: those commits are *suspects* — they may have been lost
//! with the crash — and are checked against the manager's extent map before the next fsync
//! of their inode may succeed.
//!
//! Creates are kept the same way: a manager answers a create before its group commit, so
//! a crash or a takeover right after may lose the new inode. A create is forgotten once a
//! sync answered by the incarnation that answered it covers it; one that another
//! incarnation's sync covers is checked (does the inode exist there?), and one whose inode
//! a later call finds gone is *lost*, never taken for a removal (faults/t45).
//!
//! Owns: the unsynced commits and creates, and the check of a suspect against an extent
//! map. Pure: no I/O, no clock. Must not: decide what to do with a lost commit or create
//! (the caller reports EIO).

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

/// A create answered without sync, not yet known to be durable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingCreate {
    /// Order of the answer (a sync covers the creates answered before it was sent).
    pub seq: u64,
    /// The incarnation of the manager as this client knew it when it sent the create
    /// (`None`: not known yet). Never newer than the one that answered.
    pub incarnation: Option<u64>,
    pub ino: InodeId,
    /// Where the new inode is linked now (moved along by this client's renames).
    pub parent: InodeId,
    pub name: String,
}

/// Unsynced commits and creates of every manager.
#[derive(Debug, Default)]
pub struct Unsynced {
    next: u64,
    by_node: HashMap<NodeId, Vec<Pending>>,
    creates: HashMap<NodeId, Vec<PendingCreate>>,
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

    /// `node` answered the create of `ino` as `name` in `parent` (sent while this client
    /// knew `node` as `incarnation`). Returns how many creates of `node` are now unsynced.
    pub fn created(
        &mut self,
        node: NodeId,
        incarnation: Option<u64>,
        ino: InodeId,
        (parent, name): (InodeId, &str),
    ) -> usize {
        self.next += 1;
        let list = self.creates.entry(node).or_default();
        list.push(PendingCreate {
            seq: self.next,
            incarnation,
            ino,
            parent,
            name: name.to_string(),
        });
        list.len()
    }

    /// A sync marked `before` was answered by `node` in `incarnation`: the creates that
    /// incarnation answered before are durable and forgotten. Returns the creates another
    /// (or an unknown) incarnation answered before, left in place while the caller checks
    /// whether they survived (`take_create` when they did, `lost_create` when not): a
    /// commit that finds one gone meanwhile must still find it unsynced.
    pub fn synced_creates(
        &mut self,
        node: NodeId,
        incarnation: u64,
        before: u64,
    ) -> Vec<PendingCreate> {
        let Some(list) = self.creates.get_mut(&node) else {
            return Vec::new();
        };
        let mut unsure = Vec::new();
        list.retain(|c| {
            if c.seq >= before {
                return true;
            }
            if c.incarnation != Some(incarnation) {
                unsure.push(c.clone());
                return true;
            }
            false
        });
        if list.is_empty() {
            self.creates.remove(&node);
        }
        unsure
    }

    /// Nodes with a create answered before the mark `before` and not synced since.
    pub fn creates_before(&self, before: u64) -> Vec<NodeId> {
        let mut nodes: Vec<NodeId> = self
            .creates
            .iter()
            .filter(|(_, l)| l.first().is_some_and(|c| c.seq < before))
            .map(|(n, _)| *n)
            .collect();
        nodes.sort_unstable();
        nodes
    }

    /// Takes the unsynced create of `ino`, if any (its inode was found gone: the create
    /// was lost).
    pub fn take_create(&mut self, ino: InodeId) -> Option<PendingCreate> {
        let mut found = None;
        for list in self.creates.values_mut() {
            list.retain(|c| {
                if c.ino == ino {
                    found = Some(c.clone());
                    return false;
                }
                true
            });
        }
        self.creates.retain(|_, l| !l.is_empty());
        found
    }

    /// This client removed `name` from `parent`: an unsynced create linked there is no
    /// longer expected to exist (its check would take the removal for a loss).
    pub fn removed(&mut self, parent: InodeId, name: &str) {
        for list in self.creates.values_mut() {
            list.retain(|c| !(c.parent == parent && c.name == name));
        }
        self.creates.retain(|_, l| !l.is_empty());
    }

    /// This client renamed `from` to `to` (replacing what `to` named).
    pub fn renamed(&mut self, from: (InodeId, &str), to: (InodeId, &str)) {
        self.removed(to.0, to.1);
        for c in self.creates.values_mut().flatten() {
            if c.parent == from.0 && c.name == from.1 {
                c.parent = to.0;
                c.name = to.1.to_string();
            }
        }
    }

    /// This client exchanged `a` and `b` (RENAME_EXCHANGE).
    pub fn exchanged(&mut self, a: (InodeId, &str), b: (InodeId, &str)) {
        for c in self.creates.values_mut().flatten() {
            let at = (c.parent, c.name.as_str());
            let to = if at == a {
                b
            } else if at == b {
                a
            } else {
                continue;
            };
            c.parent = to.0;
            c.name = to.1.to_string();
        }
    }

    /// Unsynced creates of `node`.
    pub fn creates(&self, node: NodeId) -> usize {
        self.creates.get(&node).map_or(0, Vec::len)
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

    #[test]
    fn a_create_is_forgotten_by_its_incarnations_sync_and_checked_after_another() {
        let mut u = Unsynced::default();
        let n = NodeId(2);
        let (d, e) = (InodeId(1), InodeId(9));
        u.created(n, Some(7), InodeId(10), (d, "a"));
        u.created(n, None, InodeId(11), (d, "b"));
        let mark = u.mark();
        u.created(n, Some(7), InodeId(12), (d, "c"));
        // Incarnation 7 answered the sync: "a" is durable; "b" was sent before this client
        // knew the incarnation, so it is checked; "c" came after the mark.
        assert_eq!(u.creates_before(mark), vec![n]);
        let unsure: Vec<u64> = u
            .synced_creates(n, 7, mark)
            .iter()
            .map(|c| c.ino.0)
            .collect();
        assert_eq!(unsure, vec![11]);
        assert_eq!(u.creates(n), 2, "the unsure one stays until checked");
        assert_eq!(u.take_create(InodeId(11)).map(|c| c.ino), Some(InodeId(11)));
        assert_eq!(u.creates(n), 1);
        // A sync by a restarted incarnation covers "c": checked, not forgotten as durable.
        let mark = u.mark();
        let unsure: Vec<u64> = u
            .synced_creates(n, 8, mark)
            .iter()
            .map(|c| c.ino.0)
            .collect();
        assert_eq!(unsure, vec![12]);
        assert!(u.take_create(InodeId(12)).is_some());
        assert_eq!(u.creates(n), 0);
        assert!(u.creates_before(mark).is_empty());
        // Removed or renamed by this client: the entry follows the name.
        u.created(n, Some(8), InodeId(13), (d, "x"));
        u.created(n, Some(8), InodeId(14), (d, "y"));
        u.renamed((d, "x"), (e, "z"));
        u.removed(d, "x");
        assert_eq!(
            u.take_create(InodeId(13)).map(|c| (c.parent, c.name)),
            Some((e, "z".to_string()))
        );
        u.renamed((e, "q"), (d, "y"));
        assert_eq!(u.take_create(InodeId(14)), None, "replaced by a rename");
        assert_eq!(u.creates(n), 0);
    }
}
