//! The segment format: a self-describing header (magic, version, codec id, log, segment,
//! entry table, header CRC) followed by the entries' bytes. Owns encoding and parsing only;
//! it must not do I/O. Parsing bounds-checks everything and never panics on bad input.
//!
//! Layout (little endian): `SHSG` magic, version u8, codec u8, log u64, segment u64,
//! table length u32, the table (postcard `Vec<(EntryKind, u32 len)>`), CRC32C u32 of all
//! header bytes before it; then the entries back to back. Offsets are implied by the order.

use bytes::{Bytes, BytesMut};
use proto::ids::{InodeId, LogId, SegmentId};
use proto::msg::CODEC_RS_GF8_RSE;

pub use crate::error::SegmentError;

/// Largest segment, header included.
pub const MAX_SEGMENT: u64 = 64 << 20;
// A fragment (at most a whole segment) must fit one frame's bulk.
const _: () = assert!(MAX_SEGMENT <= proto::frame::MAX_BULK);
const MAGIC: [u8; 4] = *b"SHSG";
const VERSION: u8 = 1;
/// magic, version, codec, log, segment, table length.
const FIXED: usize = 4 + 1 + 1 + 8 + 8 + 4;

/// What a segment entry holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum EntryKind {
    /// File data of `ino` at file offset `file_offset` (client logs).
    FileData { ino: InodeId, file_offset: u64 },
    /// A batch of manager metadata records.
    MetaRecords,
    /// A manager checkpoint (whole state).
    Checkpoint,
}

/// One entry of a segment summary.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Entry {
    pub kind: EntryKind,
    /// Offset of the entry's bytes from the start of the segment.
    pub offset: u32,
    pub len: u32,
}

/// Builds one segment: a self-describing header (magic, version, codec, log, segment,
/// entries) followed by the entries' bytes.
pub struct SegmentBuilder {
    log: LogId,
    segment: SegmentId,
    table: Vec<(EntryKind, u32)>,
    data: Vec<Bytes>,
    /// Encoded bytes of the table items (without the length prefix).
    table_items: u64,
    data_len: u64,
}

fn varint_len(n: u64) -> u64 {
    let bits = 64 - n.max(1).leading_zeros() as u64;
    bits.div_ceil(7)
}

fn item_len(kind: EntryKind, len: u32) -> u64 {
    postcard::to_stdvec(&(kind, len))
        .map(|v| v.len() as u64)
        .unwrap_or(32)
}

impl SegmentBuilder {
    pub fn new(log: LogId, segment: SegmentId) -> SegmentBuilder {
        SegmentBuilder {
            log,
            segment,
            table: Vec::new(),
            data: Vec::new(),
            table_items: 0,
            data_len: 0,
        }
    }

    /// Adds an entry; returns its index. An entry longer than `u32::MAX` bytes is recorded
    /// with a saturated length and makes `finish` fail with `TooLarge`.
    pub fn push(&mut self, kind: EntryKind, data: Bytes) -> usize {
        let len = u32::try_from(data.len()).unwrap_or(u32::MAX);
        self.table_items += item_len(kind, len);
        self.data_len += data.len() as u64;
        self.table.push((kind, len));
        self.data.push(data);
        self.table.len() - 1
    }

    fn header_len(&self) -> u64 {
        FIXED as u64 + varint_len(self.table.len() as u64) + self.table_items + 4
    }

    /// Bytes the finished segment will take.
    pub fn len(&self) -> u64 {
        self.header_len() + self.data_len
    }

    /// Whether no entry was pushed.
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// Entries pushed so far.
    pub fn entry_count(&self) -> usize {
        self.table.len()
    }

    /// Finishes: the segment bytes and the final entry table (with absolute offsets).
    pub fn finish(self) -> Result<(Bytes, Vec<Entry>), SegmentError> {
        if self.len() > MAX_SEGMENT {
            return Err(SegmentError::TooLarge(MAX_SEGMENT));
        }
        let table = postcard::to_stdvec(&self.table)
            .map_err(|e| SegmentError::Malformed(format!("entry table: {e}")))?;
        let mut out = BytesMut::with_capacity(self.len() as usize);
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&[VERSION, CODEC_RS_GF8_RSE]);
        out.extend_from_slice(&self.log.0.to_le_bytes());
        out.extend_from_slice(&self.segment.0.to_le_bytes());
        out.extend_from_slice(&(table.len() as u32).to_le_bytes());
        out.extend_from_slice(&table);
        let crc = proto::crc32c(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        debug_assert_eq!(out.len() as u64, self.header_len());
        let mut entries = Vec::with_capacity(self.table.len());
        for ((kind, len), data) in self.table.iter().zip(&self.data) {
            entries.push(Entry {
                kind: *kind,
                offset: out.len() as u32,
                len: *len,
            });
            out.extend_from_slice(data);
        }
        Ok((out.freeze(), entries))
    }
}

/// A parsed segment.
pub struct SegmentView {
    pub log: LogId,
    pub segment: SegmentId,
    pub entries: Vec<Entry>,
    pub bytes: Bytes,
}

/// A parsed segment header (see `SegmentView::parse_header`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentHeader {
    pub log: LogId,
    pub segment: SegmentId,
    pub codec: u8,
    /// Bytes of the header; entries start here.
    pub header_len: u32,
    pub entries: Vec<Entry>,
}

impl SegmentView {
    /// Parses and checks a whole segment: header CRC, and entries exactly filling the rest.
    pub fn parse(bytes: Bytes) -> Result<SegmentView, SegmentError> {
        let h = SegmentView::parse_header(&bytes)?;
        let end = h
            .entries
            .last()
            .map(|e| e.offset as u64 + e.len as u64)
            .unwrap_or(h.header_len as u64);
        if end != bytes.len() as u64 {
            return Err(SegmentError::Malformed(format!(
                "entries end at byte {end} but the segment has {} bytes",
                bytes.len()
            )));
        }
        Ok(SegmentView {
            log: h.log,
            segment: h.segment,
            entries: h.entries,
            bytes,
        })
    }

    /// Parses the header from a prefix of a segment (at least the header's bytes). The
    /// fixed part is `SegmentView::FIXED_HEADER` bytes and gives the table length.
    pub fn parse_header(b: &[u8]) -> Result<SegmentHeader, SegmentError> {
        let bad = |m: String| Err(SegmentError::Malformed(m));
        if b.len() < FIXED {
            return bad(format!(
                "{} bytes are too short for a segment header",
                b.len()
            ));
        }
        if b[0..4] != MAGIC {
            return bad(format!("bad magic {:02x?}", &b[0..4]));
        }
        if b[4] != VERSION {
            return bad(format!("unknown segment version {}", b[4]));
        }
        let codec = b[5];
        if codec != CODEC_RS_GF8_RSE {
            return bad(format!("unknown codec id {codec}"));
        }
        let log = LogId(u64_at(b, 6));
        let segment = SegmentId(u64_at(b, 14));
        let table_len = u32_at(b, 22) as u64;
        let header_len = FIXED as u64 + table_len + 4;
        if header_len > MAX_SEGMENT {
            return bad(format!(
                "entry table of {table_len} bytes is larger than a segment"
            ));
        }
        if (b.len() as u64) < header_len {
            return bad(format!("header needs {header_len} bytes, have {}", b.len()));
        }
        let h = header_len as usize;
        let stored = u32_at(b, h - 4);
        let crc = proto::crc32c(&b[..h - 4]);
        if stored != crc {
            return bad(format!(
                "header checksum {crc:08x} does not match stored {stored:08x}"
            ));
        }
        let table: Vec<(EntryKind, u32)> = match postcard::from_bytes(&b[FIXED..h - 4]) {
            Ok(t) => t,
            Err(e) => return bad(format!("entry table: {e}")),
        };
        let mut offset = header_len;
        let mut entries = Vec::with_capacity(table.len());
        for (kind, len) in table {
            if offset + len as u64 > MAX_SEGMENT {
                return bad("entries run past the maximum segment size".into());
            }
            entries.push(Entry {
                kind,
                offset: offset as u32,
                len,
            });
            offset += len as u64;
        }
        Ok(SegmentHeader {
            log,
            segment,
            codec,
            header_len: h as u32,
            entries,
        })
    }

    /// Bytes of the fixed part of a header, enough to learn the whole header's length via
    /// `SegmentView::header_len`.
    pub const FIXED_HEADER: usize = FIXED;

    /// The whole header's length announced by its fixed part.
    pub fn header_len(fixed: &[u8]) -> Result<u32, SegmentError> {
        if fixed.len() < FIXED || fixed[0..4] != MAGIC {
            return Err(SegmentError::Malformed("not a segment header".into()));
        }
        let len = FIXED as u64 + u32_at(fixed, 22) as u64 + 4;
        if len > MAX_SEGMENT {
            return Err(SegmentError::Malformed(format!(
                "header length {len} exceeds a segment"
            )));
        }
        Ok(len as u32)
    }

    /// The bytes of entry `i` (empty when `i` is out of range; see `entry`).
    pub fn entry_bytes(&self, i: usize) -> Bytes {
        self.entry(i).unwrap_or_default()
    }

    /// The bytes of entry `i`, if it exists.
    pub fn entry(&self, i: usize) -> Option<Bytes> {
        let e = self.entries.get(i)?;
        let (start, end) = (e.offset as usize, e.offset as usize + e.len as usize);
        (end <= self.bytes.len()).then(|| self.bytes.slice(start..end))
    }
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut x = [0u8; 4];
    x.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(x)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(x)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn kind() -> impl Strategy<Value = EntryKind> {
        prop_oneof![
            (any::<u64>(), any::<u64>()).prop_map(|(i, o)| EntryKind::FileData {
                ino: InodeId(i),
                file_offset: o
            }),
            Just(EntryKind::MetaRecords),
            Just(EntryKind::Checkpoint),
        ]
    }

    proptest! {
        #[test]
        fn roundtrip(log in any::<u64>(), seg in any::<u64>(),
                     items in proptest::collection::vec((kind(), proptest::collection::vec(any::<u8>(), 0..300)), 0..20)) {
            let mut b = SegmentBuilder::new(LogId(log), SegmentId(seg));
            prop_assert!(b.is_empty());
            for (i, (k, d)) in items.iter().enumerate() {
                prop_assert_eq!(b.push(*k, Bytes::from(d.clone())), i);
            }
            let predicted = b.len();
            let (bytes, entries) = b.finish().expect("finish");
            prop_assert_eq!(bytes.len() as u64, predicted);
            let v = SegmentView::parse(bytes.clone()).expect("parse");
            prop_assert_eq!(v.log, LogId(log));
            prop_assert_eq!(v.segment, SegmentId(seg));
            prop_assert_eq!(&v.entries, &entries);
            for (i, (k, d)) in items.iter().enumerate() {
                prop_assert_eq!(v.entries[i].kind, *k);
                prop_assert_eq!(&v.entry_bytes(i)[..], &d[..]);
                let e = entries[i];
                prop_assert_eq!(&bytes[e.offset as usize..(e.offset + e.len) as usize], &d[..]);
            }
            prop_assert!(v.entry(items.len()).is_none());
            let h = SegmentView::header_len(&bytes[..SegmentView::FIXED_HEADER]).expect("header len");
            prop_assert_eq!(SegmentView::parse_header(&bytes[..h as usize]).expect("header").entries, entries);
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = SegmentView::parse(Bytes::from(bytes.clone()));
            let _ = SegmentView::header_len(&bytes);
        }

        #[test]
        fn damaged_segments_never_panic(flip in 0usize..200, bit in 0u8..8, cut in 0usize..200) {
            let mut b = SegmentBuilder::new(LogId(1), SegmentId(2));
            b.push(EntryKind::MetaRecords, Bytes::from_static(b"hello"));
            b.push(EntryKind::Checkpoint, Bytes::from(vec![7u8; 100]));
            let (bytes, _) = b.finish().expect("finish");
            let mut v = bytes.to_vec();
            let i = flip % v.len();
            v[i] ^= 1 << bit;
            let header = SegmentView::header_len(&bytes).expect("hl") as usize;
            let r = SegmentView::parse(Bytes::from(v));
            if i < header { prop_assert!(r.is_err()); }
            let _ = SegmentView::parse(bytes.slice(..cut.min(bytes.len())));
        }
    }

    #[test]
    fn too_large_is_refused() {
        let mut b = SegmentBuilder::new(LogId(1), SegmentId(0));
        b.push(
            EntryKind::MetaRecords,
            Bytes::from(vec![0u8; MAX_SEGMENT as usize]),
        );
        assert!(matches!(b.finish(), Err(SegmentError::TooLarge(_))));
    }
}
