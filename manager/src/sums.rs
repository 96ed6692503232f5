//! The end-to-end checksums (`proto::chunksum`) of the data segments this manager's extents
//! point into: per segment, the CRC32C of its chunks as the writer computed them, taken
//! with the commit (`Record::Sums`), kept while any extent here references the segment,
//! checkpointed, and handed out with extent maps (`GetExtents`) so that readers check what
//! the storage servers return. Because the chunks are aligned to segment offsets (never
//! to extents), splitting, trimming or dropping extents needs no change here: a piece of
//! an extent needs the chunks its log range touches, which are still those of its segment.
//! Pure: no I/O. Must not: decide anything about a mismatch (readers do).

use crate::usage::{SegKey, Usage};
use proto::chunksum::{chunk_span, ChunkSums};
use proto::msg::Extent;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Checksums per data segment: runs of chunks, sorted, neither overlapping nor adjacent
/// (commits of different files carry the chunks their own extents touch; adjacent runs
/// merge).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentSums {
    map: BTreeMap<SegKey, Vec<ChunkSums>>,
}

impl SegmentSums {
    /// Takes `s` for its segment, merged with the runs it overlaps or touches (where both
    /// hold a chunk, the one held first stays: every writer computes them from the same
    /// bytes).
    pub fn insert(&mut self, s: &ChunkSums) {
        if s.crcs.is_empty() {
            return;
        }
        let runs = self.map.entry((s.log, s.segment)).or_default();
        let (mut first, mut end) = (s.first, s.end());
        let mut merged: Vec<ChunkSums> = Vec::new();
        let mut kept: Vec<ChunkSums> = Vec::new();
        for r in runs.drain(..) {
            if r.end() >= s.first && r.first <= s.end() {
                first = first.min(r.first);
                end = end.max(r.end());
                merged.push(r);
            } else {
                kept.push(r);
            }
        }
        let mut crcs = vec![0u32; (end - first) as usize];
        let put = |crcs: &mut Vec<u32>, r: &ChunkSums| {
            let at = (r.first - first) as usize;
            crcs[at..at + r.crcs.len()].copy_from_slice(&r.crcs);
        };
        put(&mut crcs, s);
        for r in &merged {
            put(&mut crcs, r);
        }
        kept.push(ChunkSums {
            log: s.log,
            segment: s.segment,
            seg_len: s.seg_len,
            first,
            crcs,
        });
        kept.sort_by_key(|r| r.first);
        *runs = kept;
    }

    /// The checksums of chunks `[first, end)` of a segment, if held (in one run).
    pub fn covering(&self, key: &SegKey, first: u32, end: u32) -> Option<ChunkSums> {
        self.map
            .get(key)?
            .iter()
            .find(|r| r.first <= first && r.end() >= end)?
            .slice(first, end)
    }

    /// Whether the segment has any checksums here.
    pub fn has(&self, key: &SegKey) -> bool {
        self.map.contains_key(key)
    }

    pub fn remove(&mut self, key: &SegKey) {
        self.map.remove(key);
    }

    /// Segments with checksums.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Forgets the segments no extent here references any more.
    pub fn retain_live(&mut self, usage: &Usage) {
        self.map.retain(|(log, seg), _| usage.live(*log, *seg) > 0);
    }

    /// The checksums of the chunks `extents` touch: one entry per run of chunks they
    /// touch together in a segment (as far as one run held here covers it); extents
    /// without checksums here get none (read unchecked). O(n log n) in the extents.
    pub fn for_extents(&self, extents: &[Extent]) -> Vec<ChunkSums> {
        let mut spans: Vec<(SegKey, u32, u32)> = extents
            .iter()
            .map(|e| {
                let (first, end) = chunk_span(e.ptr.offset, e.ptr.len);
                ((e.ptr.seg.log, e.ptr.seg.segment), first, end)
            })
            .filter(|(key, _, _)| self.map.contains_key(key))
            .collect();
        spans.sort_unstable();
        let mut out: Vec<ChunkSums> = Vec::new();
        let mut cur: Option<(SegKey, u32, u32)> = None;
        for (key, first, end) in spans {
            match &mut cur {
                // Merged only where one held run covers the union.
                Some((k, f, e)) if *k == key && first <= *e => {
                    if self.covering(&key, *f, (*e).max(end)).is_some() {
                        *e = (*e).max(end);
                        continue;
                    }
                    let (k, f, e) = (*k, *f, *e);
                    out.extend(self.covering(&k, f, e));
                    cur = Some((key, first, end));
                }
                _ => {
                    if let Some((k, f, e)) = cur {
                        out.extend(self.covering(&k, f, e));
                    }
                    cur = Some((key, first, end));
                }
            }
        }
        if let Some((k, f, e)) = cur {
            out.extend(self.covering(&k, f, e));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::extent::ExtentMap;
    use proto::chunksum::{segment_sums, widen, CHUNK};
    use proto::ids::{LogId, LogPtr, SegmentAddr, SegmentId};

    fn bytes(seed: u8, n: usize) -> Vec<u8> {
        // Differs from chunk to chunk (a mixed-up chunk does not pass).
        (0..n as u64)
            .map(|i| ((i.wrapping_mul(2_654_435_761) >> 13) as u8).wrapping_add(seed))
            .collect()
    }

    fn ext(offset: u64, seg: &[u8], segment: u64, poff: u32, len: u32) -> Extent {
        Extent {
            offset,
            ptr: LogPtr {
                seg: SegmentAddr {
                    log: LogId(9),
                    segment: SegmentId(segment),
                    len: seg.len() as u32,
                    k: 4,
                    m: 2,
                    nodes: 0,
                },
                offset: poff,
                len,
            },
        }
    }

    /// Every extent of `m`, widened to chunks, verifies against what `sums` hands out.
    fn all_verify(m: &ExtentMap, sums: &SegmentSums, segs: &[Vec<u8>]) {
        for e in m.iter() {
            let got = sums.for_extents(&[e]);
            assert_eq!(got.len(), 1, "sums for {e:?}");
            let w = widen(e.ptr);
            let seg = &segs[e.ptr.seg.segment.0 as usize];
            let data = &seg[w.offset as usize..(w.offset + w.len) as usize];
            assert_eq!(got[0].verify(w.offset, data), Ok(()), "{e:?}");
        }
    }

    #[test]
    fn split_and_trimmed_extents_keep_the_chunks_they_still_touch() {
        let segs = vec![
            bytes(1, 10 * CHUNK as usize + 100),
            bytes(2, 3 * CHUNK as usize),
        ];
        let mut sums = SegmentSums::default();
        sums.insert(&segment_sums(LogId(9), SegmentId(0), &segs[0]));
        sums.insert(&segment_sums(LogId(9), SegmentId(1), &segs[1]));
        let mut m = ExtentMap::default();
        let mut u = Usage::default();
        // One extent over most of segment 0, then an overwrite in its middle (split), a
        // truncation (trim) and an overwrite of its head.
        m.overlay_counted(ext(0, &segs[0], 0, 300, 9 * CHUNK), &mut u);
        m.overlay_counted(ext(5000, &segs[1], 1, 777, 6000), &mut u);
        m.truncate_counted(30_000, &mut u);
        m.overlay_counted(ext(0, &segs[1], 1, 0, 100), &mut u);
        assert_eq!(m.len(), 4);
        all_verify(&m, &sums, &segs);
        // The trimmed tail of segment 0 starts mid-chunk: its sums start at that chunk.
        let tail = m.iter().last().expect("tail");
        let got = sums.for_extents(&[tail]);
        assert_eq!(got[0].first, tail.ptr.offset / CHUNK);
        // Nothing references segment 0 any more once its pieces are overwritten: forgotten.
        m.overlay_counted(
            ext(0, &segs[1], 1, 0, 40_000.min(segs[1].len() as u32)),
            &mut u,
        );
        m.truncate_counted(12_000, &mut u);
        sums.retain_live(&u);
        assert!(!sums.has(&(LogId(9), SegmentId(0))));
        assert!(sums.has(&(LogId(9), SegmentId(1))));
        all_verify(&m, &sums, &segs);
    }

    #[test]
    fn runs_merge_and_unknown_chunks_get_none() {
        let seg = bytes(3, 8 * CHUNK as usize);
        let whole = segment_sums(LogId(9), SegmentId(0), &seg);
        let key = (LogId(9), SegmentId(0));
        let mut sums = SegmentSums::default();
        // Two files' commits: chunks 1..3 and 5..6, then 3..5 joins them into one run.
        sums.insert(&whole.slice(1, 3).expect("a"));
        sums.insert(&whole.slice(5, 6).expect("b"));
        assert_eq!(sums.covering(&key, 1, 3), whole.slice(1, 3));
        assert!(sums.covering(&key, 2, 6).is_none());
        assert!(sums.covering(&key, 0, 1).is_none());
        sums.insert(&whole.slice(3, 5).expect("c"));
        assert_eq!(sums.covering(&key, 1, 6), whole.slice(1, 6));
        sums.insert(&whole.slice(2, 4).expect("again"));
        assert_eq!(sums.covering(&key, 1, 6), whole.slice(1, 6));
        let other = ext(0, &seg, 5, 0, 100);
        assert!(sums.for_extents(&[other]).is_empty());
        // Extents of one segment get one entry per run of chunks they touch together.
        let a = ext(0, &seg, 0, CHUNK, 10);
        let b = ext(10, &seg, 0, 5 * CHUNK, 10);
        let c = ext(20, &seg, 0, 2 * CHUNK + 5, CHUNK);
        let got = sums.for_extents(&[a, b]);
        assert_eq!(
            got,
            vec![whole.slice(1, 2).expect("a"), whole.slice(5, 6).expect("b")]
        );
        let got = sums.for_extents(&[a, c]);
        assert_eq!(got, vec![whole.slice(1, 4).expect("a and c")]);
        assert_ne!(whole.crcs[1], whole.crcs[2]);
    }
}
