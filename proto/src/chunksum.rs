//! End-to-end checksums of log bytes: CRC32C over fixed, segment-offset-aligned chunks of a
//! segment, computed by the writer from the bytes it appends and kept by the managers
//! beside the extents that point into the segment (a path apart from the data), so that a
//! reader can tell a wrong but well-formed fragment (misdirected, stale, misplaced: its
//! own storage CRC still matches) from the right one.
//!
//! Chunk `c` of a segment of `len` bytes covers segment bytes `[c * CHUNK, min((c + 1) *
//! CHUNK, len))`; a read of `[offset, offset + len)` is widened to the chunks it touches
//! (at most one chunk more at each end) and each chunk is checked whole. Owns the chunk
//! arithmetic and the check; must not do I/O or decide what to do about a mismatch.

use crate::ids::{LogId, LogPtr, SegmentId};
use serde::{Deserialize, Serialize};

/// Bytes of segment offset per checksum. 4 KiB keeps the widening of a read small (a 64
/// KiB block read grows by at most 8 KiB) at 4 bytes of metadata per 4 KiB of data (0.1%).
pub const CHUNK: u32 = 4096;

/// The checksums of chunks `first..first + crcs.len()` of one segment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkSums {
    pub log: LogId,
    pub segment: SegmentId,
    /// Total bytes of the segment (the last chunk may be short).
    pub seg_len: u32,
    pub first: u32,
    pub crcs: Vec<u32>,
}

/// The chunks `[first, end)` that segment bytes `[offset, offset + len)` touch.
pub fn chunk_span(offset: u32, len: u32) -> (u32, u32) {
    if len == 0 {
        return (offset / CHUNK, offset / CHUNK);
    }
    let end = offset as u64 + len as u64;
    (offset / CHUNK, end.div_ceil(CHUNK as u64) as u32)
}

/// `ptr` widened to whole chunks of its segment (clipped to the segment's end).
pub fn widen(ptr: LogPtr) -> LogPtr {
    let (first, end) = chunk_span(ptr.offset, ptr.len);
    let from = first as u64 * CHUNK as u64;
    let to = (end as u64 * CHUNK as u64).min(ptr.seg.len as u64);
    LogPtr {
        seg: ptr.seg,
        offset: from as u32,
        len: to.saturating_sub(from) as u32,
    }
}

/// The checksums of every chunk of a whole segment's bytes.
pub fn segment_sums(log: LogId, segment: SegmentId, bytes: &[u8]) -> ChunkSums {
    ChunkSums {
        log,
        segment,
        seg_len: bytes.len() as u32,
        first: 0,
        crcs: bytes.chunks(CHUNK as usize).map(crate::crc32c).collect(),
    }
}

impl ChunkSums {
    /// Chunks past the last one this holds.
    pub fn end(&self) -> u32 {
        self.first + self.crcs.len() as u32
    }

    /// The checksums of chunks `[first, end)`, if this holds them all.
    pub fn slice(&self, first: u32, end: u32) -> Option<ChunkSums> {
        if first < self.first || end > self.end() || first > end {
            return None;
        }
        let from = (first - self.first) as usize;
        let to = (end - self.first) as usize;
        Some(ChunkSums {
            log: self.log,
            segment: self.segment,
            seg_len: self.seg_len,
            first,
            crcs: self.crcs[from..to].to_vec(),
        })
    }

    /// The checksums a read of `ptr` needs (`None` when this does not hold them all, or
    /// `ptr` is in another segment).
    pub fn for_ptr(&self, ptr: &LogPtr) -> Option<ChunkSums> {
        if ptr.seg.log != self.log || ptr.seg.segment != self.segment {
            return None;
        }
        let (first, end) = chunk_span(ptr.offset, ptr.len);
        self.slice(first, end)
    }

    /// Checks `bytes`, which are segment bytes `[at, at + bytes.len())` with `at` on a chunk
    /// boundary; Err is the segment offset of the first chunk that does not match (or is
    /// not covered by these checksums).
    pub fn verify(&self, at: u32, bytes: &[u8]) -> Result<(), u32> {
        if !at.is_multiple_of(CHUNK) {
            return Err(at);
        }
        for (i, chunk) in bytes.chunks(CHUNK as usize).enumerate() {
            let c = at / CHUNK + i as u32;
            let off = c * CHUNK;
            let whole = chunk.len() as u32 == CHUNK || off + chunk.len() as u32 == self.seg_len;
            let want = c
                .checked_sub(self.first)
                .and_then(|i| self.crcs.get(i as usize));
            match want {
                Some(w) if whole && *w == crate::crc32c(chunk) => {}
                _ => return Err(off),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::SegmentAddr;

    fn seg(len: u32) -> SegmentAddr {
        SegmentAddr {
            log: LogId(3),
            segment: SegmentId(7),
            len,
            k: 4,
            m: 2,
            nodes: 0,
        }
    }

    fn ptr(len: u32, offset: u32, n: u32) -> LogPtr {
        LogPtr {
            seg: seg(len),
            offset,
            len: n,
        }
    }

    #[test]
    fn spans_and_widening_add_at_most_one_chunk_each_end() {
        assert_eq!(chunk_span(0, 4096), (0, 1));
        assert_eq!(chunk_span(1, 4096), (0, 2));
        assert_eq!(chunk_span(4095, 2), (0, 2));
        assert_eq!(chunk_span(8192, 0), (2, 2));
        let w = widen(ptr(10_000, 5000, 100));
        assert_eq!((w.offset, w.len), (4096, 4096));
        // The last chunk is short: widening stops at the segment's end.
        let w = widen(ptr(10_000, 9000, 1000));
        assert_eq!((w.offset, w.len), (8192, 10_000 - 8192));
        let w = widen(ptr(1 << 20, 100, 65536));
        assert!(w.len <= 65536 + 2 * CHUNK);
    }

    #[test]
    fn whole_segment_sums_verify_and_catch_a_changed_byte() {
        let bytes: Vec<u8> = (0..10_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let s = segment_sums(LogId(3), SegmentId(7), &bytes);
        assert_eq!(s.crcs.len(), 3);
        let w = widen(ptr(10_000, 5000, 4000));
        let part = &bytes[w.offset as usize..(w.offset + w.len) as usize];
        assert_eq!(s.verify(w.offset, part), Ok(()));
        let mut bad = part.to_vec();
        bad[4096 + 17] ^= 1;
        assert_eq!(s.verify(w.offset, &bad), Err(8192));
        // A range that does not start on a chunk boundary is never taken as checked.
        assert_eq!(s.verify(100, &bytes[100..200]), Err(100));
        // A chunk cut short (not the segment's last) does not pass.
        assert_eq!(s.verify(0, &bytes[..100]), Err(0));
    }

    #[test]
    fn slices_keep_the_chunks_a_piece_still_touches() {
        let bytes = vec![5u8; 5 * CHUNK as usize];
        let s = segment_sums(LogId(3), SegmentId(7), &bytes);
        // A piece of an extent trimmed to bytes [5000, 9000) touches chunks 1 and 2.
        let p = ptr(bytes.len() as u32, 5000, 4000);
        let sub = s.for_ptr(&p).expect("held");
        assert_eq!((sub.first, sub.crcs.len()), (1, 2));
        assert_eq!(sub.crcs, s.crcs[1..3].to_vec());
        let w = widen(p);
        let data = &bytes[w.offset as usize..(w.offset + w.len) as usize];
        assert_eq!(sub.verify(w.offset, data), Ok(()));
        // The sub-slice cannot check what it does not hold.
        assert_eq!(sub.verify(0, &bytes[..CHUNK as usize]), Err(0));
        assert!(sub.slice(0, 2).is_none());
        let other = LogPtr {
            seg: SegmentAddr {
                segment: SegmentId(8),
                ..p.seg
            },
            ..p
        };
        assert!(s.for_ptr(&other).is_none());
    }
}
