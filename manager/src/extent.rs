//! The extent map of one file: file offset → `LogPtr`, non-overlapping. New extents overlay
//! old ones (splitting and trimming them, with `LogPtr` offset/len arithmetic); truncation
//! trims. The `_counted` forms report every pointer added or removed to a `Usage` (live
//! bytes per segment). Pure data structure: must not do I/O or know about inodes.

use crate::usage::Usage;
use proto::ids::LogPtr;
use proto::msg::Extent;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Non-overlapping extents keyed by file offset, plus the bytes they cover.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExtentMap {
    map: BTreeMap<u64, LogPtr>,
    covered: u64,
}

fn end(off: u64, p: &LogPtr) -> u64 {
    off + p.len as u64
}

/// `p` with its first `skip` bytes dropped and at most `len` bytes kept.
fn slice(p: &LogPtr, skip: u64, len: u64) -> LogPtr {
    LogPtr {
        seg: p.seg,
        offset: p.offset + skip as u32,
        len: len as u32,
    }
}

impl ExtentMap {
    /// Bytes covered by extents (the `blocks_bytes` of the inode).
    pub fn covered(&self) -> u64 {
        self.covered
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// All extents in file order.
    pub fn iter(&self) -> impl Iterator<Item = Extent> + '_ {
        self.map.iter().map(|(o, p)| Extent {
            offset: *o,
            ptr: *p,
        })
    }

    /// Removes every byte in `[from, to)`, trimming or splitting extents that straddle.
    fn punch(&mut self, from: u64, to: u64, mut u: Option<&mut Usage>) {
        if from >= to {
            return;
        }
        // The extent starting before `from` may reach into the range.
        let mut hits: Vec<u64> = Vec::new();
        if let Some((o, p)) = self.map.range(..from).next_back() {
            if end(*o, p) > from {
                hits.push(*o);
            }
        }
        hits.extend(self.map.range(from..to).map(|(o, _)| *o));
        for o in hits {
            let Some(p) = self.map.remove(&o) else {
                continue;
            };
            self.covered -= p.len as u64;
            let e = end(o, &p);
            if o < from {
                let left = slice(&p, 0, from - o);
                self.covered += left.len as u64;
                self.map.insert(o, left);
            }
            if e > to {
                let right = slice(&p, to - o, e - to);
                self.covered += right.len as u64;
                self.map.insert(to, right);
            }
            if let Some(u) = u.as_deref_mut() {
                u.remove(&p);
                if o < from {
                    u.add(&slice(&p, 0, from - o));
                }
                if e > to {
                    u.add(&slice(&p, to - o, e - to));
                }
            }
        }
    }

    /// Overlays `ext` on the map: it wins over whatever covered its range. Empty extents are ignored.
    pub fn overlay(&mut self, ext: Extent) {
        self.overlay_in(ext, None);
    }

    /// `overlay`, counting the bytes added and removed per segment in `u`.
    pub fn overlay_counted(&mut self, ext: Extent, u: &mut Usage) {
        self.overlay_in(ext, Some(u));
    }

    fn overlay_in(&mut self, ext: Extent, mut u: Option<&mut Usage>) {
        if ext.ptr.len == 0 {
            return;
        }
        self.punch(ext.offset, end(ext.offset, &ext.ptr), u.as_deref_mut());
        self.map.insert(ext.offset, ext.ptr);
        self.covered += ext.ptr.len as u64;
        if let Some(u) = u {
            u.add(&ext.ptr);
        }
    }

    /// Drops everything at or beyond `size`.
    pub fn truncate(&mut self, size: u64) {
        self.punch(size, u64::MAX, None);
    }

    /// `truncate`, counting the bytes removed per segment in `u`.
    pub fn truncate_counted(&mut self, size: u64, u: &mut Usage) {
        self.punch(size, u64::MAX, Some(u));
    }

    /// Every extent of the map whose bytes sit in segment `seg` of `log`, in file order
    /// (for the cleaner).
    pub fn in_segment(
        &self,
        log: proto::ids::LogId,
        seg: proto::ids::SegmentId,
    ) -> impl Iterator<Item = Extent> + '_ {
        self.iter()
            .filter(move |e| e.ptr.seg.log == log && e.ptr.seg.segment == seg)
    }

    /// Extents overlapping `[offset, offset + len)`, clipped to that range.
    pub fn range(&self, offset: u64, len: u64) -> Vec<Extent> {
        let to = offset.saturating_add(len);
        let mut out = Vec::new();
        if offset >= to {
            return out;
        }
        let start = match self.map.range(..offset).next_back() {
            Some((o, p)) if end(*o, p) > offset => *o,
            _ => offset,
        };
        for (o, p) in self.map.range(start..to) {
            let from = (*o).max(offset);
            let until = end(*o, p).min(to);
            if from < until {
                out.push(Extent {
                    offset: from,
                    ptr: slice(p, from - o, until - from),
                });
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::ids::{LogId, SegmentAddr, SegmentId};

    fn ptr(seg: u64, offset: u32, len: u32) -> LogPtr {
        let seg = SegmentAddr {
            log: LogId(9),
            segment: SegmentId(seg),
            len: 1 << 20,
            k: 4,
            m: 2,
            nodes: 0,
        };
        LogPtr { seg, offset, len }
    }

    fn ext(offset: u64, seg: u64, poff: u32, len: u32) -> Extent {
        Extent {
            offset,
            ptr: ptr(seg, poff, len),
        }
    }

    fn all(m: &ExtentMap) -> Vec<(u64, u64, u32, u32)> {
        m.iter()
            .map(|e| (e.offset, e.ptr.seg.segment.0, e.ptr.offset, e.ptr.len))
            .collect()
    }

    #[test]
    fn overlay_in_the_middle_splits_with_ptr_arithmetic() {
        let mut m = ExtentMap::default();
        m.overlay(ext(0, 1, 100, 1000));
        m.overlay(ext(200, 2, 0, 100));
        assert_eq!(
            all(&m),
            vec![(0, 1, 100, 200), (200, 2, 0, 100), (300, 1, 400, 700)]
        );
        assert_eq!(m.covered(), 1000);
    }

    #[test]
    fn overlay_covering_several_replaces_and_trims() {
        let mut m = ExtentMap::default();
        m.overlay(ext(0, 1, 0, 100));
        m.overlay(ext(100, 2, 0, 100));
        m.overlay(ext(300, 3, 0, 100));
        m.overlay(ext(50, 4, 10, 300));
        assert_eq!(
            all(&m),
            vec![(0, 1, 0, 50), (50, 4, 10, 300), (350, 3, 50, 50)]
        );
        assert_eq!(m.covered(), 400);
    }

    #[test]
    fn overlay_exactly_replaces_and_sparse_gaps_are_not_covered() {
        let mut m = ExtentMap::default();
        m.overlay(ext(4096, 1, 0, 4096));
        m.overlay(ext(4096, 2, 8, 4096));
        assert_eq!(all(&m), vec![(4096, 2, 8, 4096)]);
        assert_eq!(m.covered(), 4096);
        m.overlay(ext(0, 3, 0, 0));
        assert_eq!(m.len(), 1);
    }

    #[test]
    fn truncate_trims_straddling_extent() {
        let mut m = ExtentMap::default();
        m.overlay(ext(0, 1, 0, 100));
        m.overlay(ext(100, 2, 0, 100));
        m.truncate(150);
        assert_eq!(all(&m), vec![(0, 1, 0, 100), (100, 2, 0, 50)]);
        assert_eq!(m.covered(), 150);
        m.truncate(0);
        assert!(m.is_empty());
        assert_eq!(m.covered(), 0);
    }

    #[test]
    fn range_clips_to_the_request() {
        let mut m = ExtentMap::default();
        m.overlay(ext(0, 1, 1000, 100));
        m.overlay(ext(200, 2, 0, 100));
        let r = m.range(50, 200);
        assert_eq!(r, vec![ext(50, 1, 1050, 50), ext(200, 2, 0, 50)]);
        assert!(m.range(100, 100).is_empty());
        assert!(m.range(0, 0).is_empty());
    }

    proptest::proptest! {
        /// Live bytes counted while overlaying and truncating equal those derived from the
        /// final map.
        #[test]
        fn counted_usage_matches_the_map(ops in proptest::collection::vec((0u64..64, 1u32..24, 0u8..3, 0u64..4), 1..40)) {
            let mut m = ExtentMap::default();
            let mut u = Usage::default();
            for (off, len, kind, seg) in &ops {
                if *kind == 0 {
                    m.truncate_counted(*off, &mut u);
                } else {
                    m.overlay_counted(ext(*off, *seg, 7, *len), &mut u);
                }
            }
            let mut derived = Usage::default();
            derived.count_map(&m, 1);
            proptest::prop_assert_eq!(u.segments().collect::<Vec<_>>(), derived.segments().collect::<Vec<_>>());
            // Extents here may share segment bytes (all start at segment offset 7): bytes
            // several extents reference are live once, so never more than the map covers.
            proptest::prop_assert!(u.total() <= m.covered());
        }

        /// Overlaying random extents gives, byte for byte, what a flat model gives.
        #[test]
        fn overlay_matches_byte_model(ops in proptest::collection::vec((0u64..64, 1u32..24, 0u8..3), 1..30)) {
            let mut m = ExtentMap::default();
            let mut model: Vec<Option<(u64, u32)>> = vec![None; 128];
            for (i, (off, len, kind)) in ops.iter().enumerate() {
                if *kind == 0 {
                    m.truncate(*off);
                    for b in model.iter_mut().skip(*off as usize) { *b = None; }
                } else {
                    m.overlay(ext(*off, i as u64, 7, *len));
                    for j in 0..*len as u64 { model[(off + j) as usize] = Some((i as u64, 7 + j as u32)); }
                }
            }
            let mut flat: Vec<Option<(u64, u32)>> = vec![None; 128];
            for e in m.iter() {
                for j in 0..e.ptr.len as u64 {
                    flat[(e.offset + j) as usize] = Some((e.ptr.seg.segment.0, e.ptr.offset + j as u32));
                }
            }
            proptest::prop_assert_eq!(&flat, &model);
            proptest::prop_assert_eq!(m.covered(), model.iter().filter(|b| b.is_some()).count() as u64);
        }
    }
}
