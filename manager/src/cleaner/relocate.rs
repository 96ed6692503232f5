//! The cleaner's conditional extent update: file bytes the cleaner copied from an old
//! segment into its own log are remapped **only where the extent map still points at the
//! old copy**. An overwrite or truncate that landed after the cleaner read the old bytes
//! wins: those pieces are left alone (the cleaner's copy of them is simply dead). Planned
//! and committed under the manager's state lock, so the check and the update are atomic
//! with respect to client commits.
//!
//! The copies' end-to-end checksums (computed by the cleaner from the segment it wrote)
//! are recorded with the remap, so relocated extents stay checked on read.
//!
//! Owns the planning only (state in, records out). Must not: do I/O, or remap anything
//! whose new address is below its log's reclaim floor (the reclaimer may have deleted it).

use crate::record::Record;
use crate::state::MetaState;
use proto::chunksum::CHUNK;
use proto::ids::{InodeId, LogId, LogPtr, SegmentId};
use proto::msg::Extent;
use std::collections::BTreeSet;

/// File bytes `[offset, offset + old.len)` of `ino` were at `old`; the cleaner wrote the
/// same bytes at `new` (same length). The wire type of `Relocate`.
pub use proto::msg::ExtentMove as Moved;

/// What a relocation plan does.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Relocation {
    pub records: Vec<Record>,
    /// Bytes remapped to the new copies.
    pub moved: u64,
    /// Bytes left alone (overwritten, truncated or deleted since the cleaner read them).
    pub skipped: u64,
}

impl MetaState {
    /// Every extent of this state's files that lies in one of `segments` of `log`, as
    /// (file, extent) pairs in inode order: what the cleaner must copy out of them. A scan
    /// of every extent map (the usage counts say how much, not where).
    pub fn extents_in(&self, log: LogId, segments: &BTreeSet<SegmentId>) -> Vec<(InodeId, Extent)> {
        let mut out = Vec::new();
        for (ino, inode) in &self.inodes {
            for e in inode.extents.iter() {
                if e.ptr.seg.log == log && segments.contains(&e.ptr.seg.segment) {
                    out.push((*ino, e));
                }
            }
        }
        out
    }

    /// Plans the remapping of `moves` (see the module doc). Moves with mismatched lengths,
    /// of inodes gone, or with a new address below its log's floor are skipped whole.
    pub fn plan_relocate(&self, moves: &[Moved]) -> Relocation {
        let mut out = Relocation::default();
        for m in moves {
            let len = m.old.len as u64;
            let inode = match self.inode(m.ino) {
                Some(i) if m.new.len == m.old.len && self.usage().check([&m.new]).is_ok() => i,
                _ => {
                    out.skipped += len;
                    continue;
                }
            };
            let mut extents = Vec::new();
            let mut moved = 0;
            for e in inode.extents.range(m.offset, len) {
                let d = e.offset - m.offset;
                let still_old =
                    e.ptr.seg == m.old.seg && e.ptr.offset as u64 == m.old.offset as u64 + d;
                if still_old {
                    extents.push(Extent {
                        offset: e.offset,
                        ptr: LogPtr {
                            seg: m.new.seg,
                            offset: m.new.offset + d as u32,
                            len: e.ptr.len,
                        },
                    });
                    moved += e.ptr.len as u64;
                }
            }
            out.moved += moved;
            out.skipped += len - moved;
            if !extents.is_empty() {
                // The copy's checksums, where they fit its segment (else read unchecked).
                for s in &m.sums {
                    let fits = (s.log, s.segment) == (m.new.seg.log, m.new.seg.segment)
                        && s.seg_len == m.new.seg.len
                        && s.end() as u64 <= (s.seg_len as u64).div_ceil(CHUNK as u64);
                    if fits {
                        out.records.push(Record::Sums(s.clone()));
                    }
                }
                out.records.push(Record::Extents {
                    ino: m.ino,
                    extents,
                });
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Logged;
    use proto::ids::{LogId, SegmentAddr, SegmentId, SlotId};
    use proto::msg::{Attr, FileKind, Timestamp};

    const INO: InodeId = InodeId(5 << 40 | 2);

    fn ptr(log: u64, seg: u64, offset: u32, len: u32) -> LogPtr {
        LogPtr {
            seg: SegmentAddr {
                log: LogId::client(log),
                segment: SegmentId(seg),
                len: 1 << 20,
                k: 4,
                m: 2,
                nodes: 0,
            },
            offset,
            len,
        }
    }

    fn file_with(extents: &[(u64, LogPtr)]) -> MetaState {
        let mut st = MetaState::new();
        let attr = Attr {
            ino: INO,
            kind: FileKind::File,
            perm: 0o644,
            nlink: 1,
            uid: 0,
            gid: 0,
            size: 1 << 20,
            blocks_bytes: 0,
            atime: Timestamp::default(),
            mtime: Timestamp::default(),
            ctime: Timestamp::default(),
            rdev: 0,
            version: 1,
        };
        assert_eq!(INO.slot(), SlotId(5));
        let mut recs = vec![Record::NewInode {
            attr,
            parent: None,
            symlink: None,
        }];
        recs.push(Record::Extents {
            ino: INO,
            extents: extents
                .iter()
                .map(|(o, p)| Extent {
                    offset: *o,
                    ptr: *p,
                })
                .collect(),
        });
        st.commit(recs);
        st
    }

    fn apply(st: &mut MetaState, recs: Vec<Record>) {
        for rec in recs {
            let lsn = st.last_lsn().next();
            st.apply(&Logged { lsn, rec });
        }
    }

    /// The copy's checksums are recorded with the remap (and handed out for the new
    /// extent); checksums that do not fit the copy's segment are not.
    #[test]
    fn the_copys_checksums_come_with_the_remap() {
        use proto::chunksum::{chunk_span, segment_sums};
        let old = ptr(1, 3, 100, 1000);
        let mut st = file_with(&[(0, old)]);
        let new = ptr(9, 0, 5000, 1000);
        let bytes = vec![3u8; new.seg.len as usize];
        let all = segment_sums(new.seg.log, new.seg.segment, &bytes);
        let (a, b) = chunk_span(new.offset, new.len);
        let mut wrong = all.slice(a, b).expect("slice");
        wrong.seg_len += 1;
        let r = st.plan_relocate(&[Moved {
            sums: vec![all.slice(a, b).expect("slice"), wrong],
            ino: INO,
            offset: 0,
            old,
            new,
        }]);
        let sums: Vec<_> = r
            .records
            .iter()
            .filter(|r| matches!(r, Record::Sums(_)))
            .collect();
        assert_eq!(sums.len(), 1);
        assert!(matches!(r.records.first(), Some(Record::Sums(_))));
        apply(&mut st, r.records);
        let e: Vec<Extent> = st.inode(INO).expect("file").extents.iter().collect();
        assert_eq!(
            st.sums().for_extents(&e),
            vec![all.slice(a, b).expect("slice")]
        );
    }

    #[test]
    fn untouched_data_moves_and_live_bytes_follow() {
        let old = ptr(1, 3, 100, 1000);
        let mut st = file_with(&[(0, old)]);
        let new = ptr(9, 0, 40, 1000);
        let r = st.plan_relocate(&[Moved {
            sums: Vec::new(),
            ino: INO,
            offset: 0,
            old,
            new,
        }]);
        assert_eq!((r.moved, r.skipped), (1000, 0));
        apply(&mut st, r.records);
        assert_eq!(st.usage().live(old.seg.log, old.seg.segment), 0);
        assert_eq!(st.usage().live(new.seg.log, new.seg.segment), 1000);
        let e: Vec<Extent> = st
            .inode(INO)
            .expect("the file exists")
            .extents
            .iter()
            .collect();
        assert_eq!(
            e,
            vec![Extent {
                offset: 0,
                ptr: new
            }]
        );
    }

    #[test]
    fn extents_in_lists_only_the_asked_segments() {
        let a = ptr(1, 3, 0, 100);
        let b = ptr(1, 4, 0, 100);
        let c = ptr(2, 3, 0, 100);
        let st = file_with(&[(0, a), (100, b), (200, c)]);
        let segs: BTreeSet<SegmentId> = [SegmentId(3)].into_iter().collect();
        let got = st.extents_in(LogId::client(1), &segs);
        assert_eq!(got, vec![(INO, Extent { offset: 0, ptr: a })]);
    }

    #[test]
    fn a_concurrent_overwrite_wins() {
        let old = ptr(1, 3, 0, 1000);
        let mut st = file_with(&[(0, old)]);
        // The client overwrote bytes 200..300 after the cleaner read the old segment.
        let over = ptr(1, 8, 0, 100);
        apply(
            &mut st,
            vec![Record::Extents {
                ino: INO,
                extents: vec![Extent {
                    offset: 200,
                    ptr: over,
                }],
            }],
        );
        let new = ptr(9, 0, 0, 1000);
        let r = st.plan_relocate(&[Moved {
            sums: Vec::new(),
            ino: INO,
            offset: 0,
            old,
            new,
        }]);
        assert_eq!((r.moved, r.skipped), (900, 100));
        apply(&mut st, r.records);
        let e: Vec<(u64, u64, u32, u32)> = st
            .inode(INO)
            .expect("the file exists")
            .extents
            .iter()
            .map(|e| (e.offset, e.ptr.seg.segment.0, e.ptr.offset, e.ptr.len))
            .collect();
        assert_eq!(
            e,
            vec![(0, 0, 0, 200), (200, 8, 0, 100), (300, 0, 300, 700)]
        );
        assert_eq!(st.usage().live(old.seg.log, old.seg.segment), 0);
        assert_eq!(st.usage().live(over.seg.log, over.seg.segment), 100);
    }

    #[test]
    fn deleted_truncated_or_floored_data_is_left_alone() {
        let old = ptr(1, 3, 0, 1000);
        let mut st = file_with(&[(0, old)]);
        apply(
            &mut st,
            vec![Record::Truncate {
                ino: INO,
                size: 500,
            }],
        );
        let new = ptr(9, 0, 0, 1000);
        let mv = Moved {
            sums: Vec::new(),
            ino: INO,
            offset: 0,
            old,
            new,
        };
        let r = st.plan_relocate(std::slice::from_ref(&mv));
        assert_eq!((r.moved, r.skipped), (500, 500));
        // The cleaner's segment below its log's floor: nothing moves.
        st.usage_mut()
            .seal(new.seg.log, SegmentId(1), |_| false, false);
        let r = st.plan_relocate(std::slice::from_ref(&mv));
        assert_eq!((r.moved, r.skipped, r.records.len()), (0, 1000, 0));
        apply(&mut st, vec![Record::Drop { ino: INO }]);
        let r = st.plan_relocate(std::slice::from_ref(&mv));
        assert_eq!((r.moved, r.skipped), (0, 1000));
    }
}
