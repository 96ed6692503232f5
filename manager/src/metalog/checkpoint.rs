//! Checkpoints in pieces (checkpoint format version 2), so that a state of any size is
//! written as segments of bounded size and encoded without holding the state lock for long.
//!
//! A checkpoint is a byte stream of *pieces* cut into *chunks*, one chunk per segment, and a
//! small *manifest* written last that names the chunks. Recovery uses only checkpoints
//! whose manifest and every chunk read back and match.
//!
//! - Piece: kind u8 (0 head, 1 inodes, 2 transaction book, 3 head with write leases, 4
//!   recorded calls, 5 end-to-end checksums of data segments), body length u32 LE, body.
//!   The head (postcard) holds everything but
//!   the inodes, exactly as of the checkpoint's LSN; kind 3 (written since records version
//!   2) appends the recorded write leases, kind 0 (still read) has none. The transaction
//!   book and then the recorded calls (`calls::RecordedCalls`, the numbered calls the log
//!   says were applied, oldest first, bounded) follow the head and are counted with it;
//!   checkpoints written before calls were carried have no kind 4 (none are remembered),
//!   and a manager from before then refuses a checkpoint that has one (pieces out of
//!   order). The segment checksums (`sums`) follow the calls the same way (one piece,
//!   encoded under the state lock with the head: 4 bytes per 4 KiB of live data). An inode piece is a
//!   count u32 LE followed by that many postcard `(InodeId, Inode)` items, in key order.
//! - Chunk entry (`EntryKind::Checkpoint`): `SHMK`, version u16 LE (1), checkpoint LSN u64
//!   LE, chunk index u32 LE, then a slice of the stream.
//! - Manifest entry (`EntryKind::Checkpoint`): `SHMC`, version u16 LE (2), postcard
//!   `Manifest`. Version 1 of `SHMC` is the old whole-state checkpoint in one entry; it is
//!   still decoded (`decode_legacy`, through the `v1` types: its directories had no
//!   readdir cookies, so entries are numbered in name order), never written.
//!
//! The inode pieces are *fuzzy*: each is taken under a short hold of the state lock, later
//! than the head, while mutations go on. That is sound because every record is a
//! per-key overwrite (an inode, an entry, an xattr, a byte range of an extent map), so
//! replaying all records after the head's LSN over any mix of newer inode values ends in
//! the live state (`state_test::fuzzy_checkpoint_plus_replay_equals_live` checks it). The
//! manifest is written only once every record the pieces saw (up to `covers`) is durable,
//! and recovery refuses a log that ends before `covers`.
//! Must not: do I/O (the journal writes, recovery reads).

use crate::error::CodecError;
use crate::record::{from_postcard, unframe, Lsn, TxIntent, CHECKPOINT_MAGIC};
use crate::state::{AppliedOps, Inode, MetaState};
use bytes::Bytes;
use proto::ids::{InodeId, SessionId, TxId};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::ops::Bound;

/// Magic of a checkpoint chunk entry.
pub const CHUNK_MAGIC: [u8; 4] = *b"SHMK";
pub const CHUNK_VERSION: u16 = 1;
/// Version of `SHMC` entries that are manifests (version 1 was the whole state).
pub const MANIFEST_VERSION: u16 = 2;
/// The old whole-state checkpoint (read, never written).
pub const LEGACY_VERSION: u16 = 1;
/// Magic, version, LSN, index.
pub const CHUNK_HEADER: usize = 4 + 2 + 8 + 4;
const PIECE_HEAD: u8 = 0;
const PIECE_INODES: u8 = 1;
/// The two-phase transaction book (`txn::book::TxBook`, postcard), right after the head
/// and counted with it (a manifest's `pieces` does not include it). Checkpoints written
/// before the two-phase protocol have none: their book is empty.
const PIECE_BOOK: u8 = 2;
/// A head followed by the recorded write leases (`MetaState::write_leases`).
const PIECE_HEAD2: u8 = 3;
/// The numbered calls the log recorded as applied (`calls::RecordedCalls`), right after
/// the book and counted with the head. Older checkpoints have none.
const PIECE_CALLS: u8 = 4;
/// The end-to-end checksums of data segments (`sums::SegmentSums`, postcard), right after
/// the calls and counted with the head. Older checkpoints have none (their extents are
/// read unchecked until written again).
const PIECE_SUMS: u8 = 5;
/// Piece kind and length.
const PIECE_HEADER: usize = 5;

/// One chunk of a checkpoint as its manifest names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkRef {
    pub segment: u64,
    /// Bytes of stream in the chunk.
    pub len: u32,
    /// CRC32C of those bytes.
    pub crc: u32,
}

/// The last entry of a checkpoint: what it covers and where its chunks are.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// The head is the state as of this LSN; recovery replays every record after it.
    pub lsn: Lsn,
    /// The inode pieces may include changes up to this LSN; the log must reach it.
    pub covers: Lsn,
    /// Where the log stood when the checkpoint started: every record after `lsn` is in
    /// this segment or a later one (records are written between the chunks).
    pub from_segment: u64,
    pub chunks: Vec<ChunkRef>,
    pub pieces: u64,
    pub inodes: u64,
}

#[derive(Deserialize)]
struct Head {
    lsn: Lsn,
    next_seq: BTreeMap<u16, u64>,
    next_tx: u64,
    pending: BTreeMap<TxId, TxIntent>,
    finished: BTreeMap<TxId, bool>,
    applied: BTreeMap<TxId, (u64, AppliedOps)>,
    applied_order: BTreeMap<u64, TxId>,
    applied_counter: u64,
}

/// `Head` then the recorded write leases (piece kind 2).
#[derive(Deserialize)]
struct Head2 {
    head: Head,
    write_leases: BTreeMap<InodeId, (SessionId, Lsn)>,
}

/// Serializes exactly like `Head`, without copying the state.
#[derive(Serialize)]
struct HeadRef<'a> {
    lsn: Lsn,
    next_seq: &'a BTreeMap<u16, u64>,
    next_tx: u64,
    pending: &'a BTreeMap<TxId, TxIntent>,
    finished: &'a BTreeMap<TxId, bool>,
    applied: &'a BTreeMap<TxId, (u64, AppliedOps)>,
    applied_order: &'a BTreeMap<u64, TxId>,
    applied_counter: u64,
}

/// Serializes exactly like `Head2`.
#[derive(Serialize)]
struct Head2Ref<'a> {
    head: HeadRef<'a>,
    write_leases: &'a BTreeMap<InodeId, (SessionId, Lsn)>,
}

fn piece(kind: u8, body_at: usize, out: &mut [u8]) {
    out[body_at - PIECE_HEADER] = kind;
    let len = (out.len() - body_at) as u32;
    out[body_at - 4..body_at].copy_from_slice(&len.to_le_bytes());
}

/// The head piece of a checkpoint of `st` at `st.last_lsn()` (bounded by the transaction
/// memory, `state::TX_MEMORY`; taken under the state lock when the checkpoint starts).
pub fn head_piece(st: &MetaState) -> Vec<u8> {
    let head = Head2Ref {
        head: HeadRef {
            lsn: st.last_lsn,
            next_seq: &st.next_seq,
            next_tx: st.next_tx,
            pending: &st.pending,
            finished: &st.finished,
            applied: &st.applied,
            applied_order: &st.applied_order,
            applied_counter: st.applied_counter,
        },
        write_leases: &st.write_leases,
    };
    let mut out = vec![0u8; PIECE_HEADER];
    // Serializing plain data into a Vec cannot fail.
    out = postcard::to_extend(&head, out).unwrap_or_else(|_| vec![0u8; PIECE_HEADER]);
    piece(PIECE_HEAD2, PIECE_HEADER, &mut out);
    let mut book = vec![0u8; PIECE_HEADER];
    book = postcard::to_extend(&st.book, book).unwrap_or_else(|_| vec![0u8; PIECE_HEADER]);
    piece(PIECE_BOOK, PIECE_HEADER, &mut book);
    out.extend_from_slice(&book);
    let mut calls = vec![0u8; PIECE_HEADER];
    calls = postcard::to_extend(&st.replied, calls).unwrap_or_else(|_| vec![0u8; PIECE_HEADER]);
    piece(PIECE_CALLS, PIECE_HEADER, &mut calls);
    out.extend_from_slice(&calls);
    let mut sums = vec![0u8; PIECE_HEADER];
    sums = postcard::to_extend(&st.sums, sums).unwrap_or_else(|_| vec![0u8; PIECE_HEADER]);
    piece(PIECE_SUMS, PIECE_HEADER, &mut sums);
    out.extend_from_slice(&sums);
    out
}

/// One inode piece: inodes after `after` (all when `None`) until about `budget` bytes.
#[derive(Debug)]
pub struct InodePiece {
    pub bytes: Vec<u8>,
    /// The last inode in the piece (where the next one continues).
    pub last: Option<InodeId>,
    /// No inode after `last`.
    pub done: bool,
    pub count: u64,
    /// The state's LSN when the piece was taken.
    pub lsn: Lsn,
}

/// Encodes inodes after `after` until the piece holds at least `budget` bytes (call with
/// the state locked; the lock is held for about `budget` bytes of encoding).
pub fn inode_piece(st: &MetaState, after: Option<InodeId>, budget: usize) -> InodePiece {
    let range = match after {
        Some(a) => st.inodes.range((Bound::Excluded(a), Bound::Unbounded)),
        None => st.inodes.range(..),
    };
    let mut out = vec![0u8; PIECE_HEADER + 4];
    let mut count: u32 = 0;
    let mut last = after;
    let mut done = true;
    for (ino, inode) in range {
        // At least one inode per piece, however small the budget.
        if (count > 0 && out.len() >= budget) || count == u32::MAX {
            done = false;
            break;
        }
        out = postcard::to_extend(&(ino, inode), out).unwrap_or_default();
        count += 1;
        last = Some(*ino);
    }
    out[PIECE_HEADER..PIECE_HEADER + 4].copy_from_slice(&count.to_le_bytes());
    piece(PIECE_INODES, PIECE_HEADER, &mut out);
    InodePiece {
        bytes: out,
        last,
        done,
        count: count as u64,
        lsn: st.last_lsn,
    }
}

/// A chunk entry: header and `data`.
pub fn encode_chunk(lsn: Lsn, index: u32, data: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(CHUNK_HEADER + data.len());
    out.extend_from_slice(&CHUNK_MAGIC);
    out.extend_from_slice(&CHUNK_VERSION.to_le_bytes());
    out.extend_from_slice(&lsn.0.to_le_bytes());
    out.extend_from_slice(&index.to_le_bytes());
    out.extend_from_slice(data);
    Bytes::from(out)
}

/// Whether an entry is a chunk (by its magic).
pub fn is_chunk(bytes: &[u8]) -> bool {
    bytes.len() >= 4 && bytes[..4] == CHUNK_MAGIC
}

/// A chunk entry's LSN, index and data.
pub fn decode_chunk(bytes: &Bytes) -> Result<(Lsn, u32, Bytes), CodecError> {
    let what = "checkpoint chunk";
    if bytes.len() < CHUNK_HEADER {
        return Err(CodecError::Truncated { what });
    }
    let mut magic = [0u8; 4];
    magic.copy_from_slice(&bytes[..4]);
    if magic != CHUNK_MAGIC {
        return Err(CodecError::Magic {
            what,
            found: magic,
            expected: CHUNK_MAGIC,
        });
    }
    let version = u16::from_le_bytes([bytes[4], bytes[5]]);
    if version != CHUNK_VERSION {
        return Err(CodecError::Version {
            what,
            version,
            known: CHUNK_VERSION,
        });
    }
    let mut lsn = [0u8; 8];
    lsn.copy_from_slice(&bytes[6..14]);
    let mut index = [0u8; 4];
    index.copy_from_slice(&bytes[14..18]);
    Ok((
        Lsn(u64::from_le_bytes(lsn)),
        u32::from_le_bytes(index),
        bytes.slice(CHUNK_HEADER..),
    ))
}

/// A manifest entry.
pub fn encode_manifest(m: &Manifest) -> Bytes {
    let mut out = CHECKPOINT_MAGIC.to_vec();
    out.extend_from_slice(&MANIFEST_VERSION.to_le_bytes());
    Bytes::from(postcard::to_extend(m, out).unwrap_or_default())
}

/// What a `SHMC` checkpoint entry is.
pub enum CheckpointEntry {
    /// Version 2: the manifest of a checkpoint in chunks.
    Manifest(Manifest),
    /// Version 1: the whole state in this entry (decode with `decode_legacy`).
    Legacy,
}

/// Classifies (and for a manifest decodes) a `SHMC` entry.
pub fn decode_checkpoint_entry(bytes: &[u8]) -> Result<CheckpointEntry, CodecError> {
    let what = "checkpoint";
    if bytes.len() < 6 {
        return Err(CodecError::Truncated { what });
    }
    let mut magic = [0u8; 4];
    magic.copy_from_slice(&bytes[..4]);
    if magic != CHECKPOINT_MAGIC {
        return Err(CodecError::Magic {
            what,
            found: magic,
            expected: CHECKPOINT_MAGIC,
        });
    }
    match u16::from_le_bytes([bytes[4], bytes[5]]) {
        LEGACY_VERSION => Ok(CheckpointEntry::Legacy),
        MANIFEST_VERSION => postcard::from_bytes(&bytes[6..])
            .map(CheckpointEntry::Manifest)
            .map_err(|source| CodecError::Postcard {
                what: "checkpoint manifest",
                source,
            }),
        version => Err(CodecError::Version {
            what,
            version,
            known: MANIFEST_VERSION,
        }),
    }
}

/// Rebuilds a state from a checkpoint's stream, fed chunk by chunk in order.
#[derive(Default)]
pub struct Loader {
    st: Option<MetaState>,
    buf: Vec<u8>,
    pieces: u64,
    inodes: u64,
}

impl Loader {
    pub fn new() -> Loader {
        Loader::default()
    }

    /// Decodes every piece completed by `data` (CPU work: run it off the runtime).
    pub fn feed(&mut self, data: &[u8]) -> Result<(), CodecError> {
        self.buf.extend_from_slice(data);
        let mut pos = 0;
        while self.buf.len() - pos >= PIECE_HEADER {
            let kind = self.buf[pos];
            let mut len = [0u8; 4];
            len.copy_from_slice(&self.buf[pos + 1..pos + 5]);
            let len = u32::from_le_bytes(len) as usize;
            let start = pos + PIECE_HEADER;
            if self.buf.len() - start < len {
                break;
            }
            let body = &self.buf[start..start + len];
            match (kind, self.st.as_mut()) {
                (PIECE_HEAD | PIECE_HEAD2, None) => {
                    let h: Head2 = if kind == PIECE_HEAD {
                        Head2 {
                            head: from_postcard("checkpoint head", body)?,
                            write_leases: BTreeMap::new(),
                        }
                    } else {
                        from_postcard("checkpoint head", body)?
                    };
                    let Head2 {
                        head: h,
                        write_leases,
                    } = h;
                    let mut st = MetaState::new();
                    st.write_leases = write_leases;
                    st.last_lsn = h.lsn;
                    st.next_seq = h.next_seq;
                    st.next_tx = h.next_tx;
                    st.pending = h.pending;
                    st.finished = h.finished;
                    st.applied = h.applied;
                    st.applied_order = h.applied_order;
                    st.applied_counter = h.applied_counter;
                    self.st = Some(st);
                }
                (PIECE_BOOK, Some(st)) => {
                    st.book =
                        postcard::from_bytes(body).map_err(|source| CodecError::Postcard {
                            what: "checkpoint transaction book",
                            source,
                        })?;
                    // Rides with the head: not counted as a piece of its own.
                    pos = start + len;
                    continue;
                }
                (PIECE_CALLS, Some(st)) => {
                    st.replied = from_postcard("checkpoint recorded calls", body)?;
                    // Rides with the head, like the book.
                    pos = start + len;
                    continue;
                }
                (PIECE_SUMS, Some(st)) => {
                    st.sums = from_postcard("checkpoint segment checksums", body)?;
                    // Rides with the head, like the book.
                    pos = start + len;
                    continue;
                }
                (PIECE_INODES, Some(st)) => {
                    if body.len() < 4 {
                        return Err(CodecError::Truncated {
                            what: "checkpoint inode piece",
                        });
                    }
                    let count = u32::from_le_bytes([body[0], body[1], body[2], body[3]]);
                    let mut rest = &body[4..];
                    for _ in 0..count {
                        let ((ino, inode), r): ((InodeId, Inode), &[u8]) =
                            postcard::take_from_bytes(rest).map_err(|source| {
                                CodecError::Postcard {
                                    what: "checkpoint inode",
                                    source,
                                }
                            })?;
                        st.inodes.insert(ino, inode);
                        rest = r;
                    }
                    if !rest.is_empty() {
                        return Err(CodecError::Truncated {
                            what: "checkpoint inode piece (trailing bytes)",
                        });
                    }
                    self.inodes += count as u64;
                }
                _ => {
                    return Err(CodecError::Truncated {
                        what: "checkpoint stream (pieces out of order)",
                    })
                }
            }
            self.pieces += 1;
            pos = start + len;
        }
        self.buf.drain(..pos);
        Ok(())
    }

    /// The state, once the stream matched the manifest.
    pub fn finish(self, m: &Manifest) -> Result<MetaState, CodecError> {
        let complete = self.buf.is_empty() && self.pieces == m.pieces && self.inodes == m.inodes;
        match self.st {
            Some(mut st) if complete => {
                st.rebuild_usage();
                Ok(st)
            }
            _ => Err(CodecError::Truncated {
                what: "checkpoint stream (fewer pieces or inodes than its manifest names)",
            }),
        }
    }
}

/// A decoded legacy (`SHMC` version 1, whole-state) checkpoint: its LSN and the state,
/// migrated to the current form (directory entries get cookies in name order).
pub fn decode_legacy(bytes: &[u8]) -> Result<(Lsn, MetaState), CodecError> {
    let what = "checkpoint (version 1)";
    let (_, body) = unframe(what, CHECKPOINT_MAGIC, LEGACY_VERSION, bytes)?;
    let mut c = from_postcard::<v1::Checkpoint>(what, body)?.migrate();
    c.state.rebuild_usage();
    Ok((c.lsn, c.state))
}

/// Encodes a legacy whole-state checkpoint of `st` (only tests write it now, to check that
/// logs from older builds still recover).
#[cfg(test)]
pub fn legacy_checkpoint_bytes(st: &MetaState, next_segment: proto::ids::SegmentId) -> Bytes {
    Bytes::from(v1::encode(st, next_segment.0))
}

/// The current form of a legacy checkpoint.
#[derive(Debug)]
pub struct Migrated {
    pub lsn: Lsn,
    pub next_segment: u64,
    pub state: MetaState,
}

pub(crate) mod v1 {
    //! Version 1: directories without cookies. Field order is the format; do not change.
    use crate::directory::DirEntries;
    use crate::extent::ExtentMap;
    use crate::record::{Lsn, TxIntent};
    use crate::state::{AppliedOps, Inode, MetaState};
    use proto::ids::{InodeId, SessionId, TxId};
    use proto::msg::{Attr, FileKind};
    use serde::{Deserialize, Serialize};
    use std::collections::{BTreeMap, BTreeSet};

    #[derive(Debug, Serialize, Deserialize)]
    pub struct Checkpoint {
        pub lsn: Lsn,
        pub next_segment: u64,
        pub state: State,
    }

    #[derive(Debug, Serialize, Deserialize)]
    pub struct State {
        pub inodes: BTreeMap<InodeId, InodeV1>,
        pub next_seq: BTreeMap<u16, u64>,
        pub last_lsn: Lsn,
        pub next_tx: u64,
        pub pending: BTreeMap<TxId, TxIntent>,
        pub finished: BTreeMap<TxId, bool>,
        pub applied: BTreeMap<TxId, (u64, AppliedOps)>,
        pub applied_order: BTreeMap<u64, TxId>,
        pub applied_counter: u64,
    }

    #[derive(Debug, Serialize, Deserialize)]
    pub struct InodeV1 {
        pub attr: Attr,
        pub parent: Option<InodeId>,
        pub entries: BTreeMap<String, (InodeId, FileKind)>,
        pub extents: ExtentMap,
        pub symlink: Option<String>,
        pub xattrs: BTreeMap<String, Vec<u8>>,
        pub sessions: BTreeSet<SessionId>,
    }

    impl Checkpoint {
        /// The current form: each directory's entries get cookies 1, 2, ... in name order.
        pub fn migrate(self) -> super::Migrated {
            let s = self.state;
            let inodes = s
                .inodes
                .into_iter()
                .map(|(ino, i)| {
                    let inode = Inode {
                        attr: i.attr,
                        parent: i.parent,
                        entries: DirEntries::from_names(i.entries),
                        extents: i.extents,
                        symlink: i.symlink,
                        xattrs: i.xattrs,
                        sessions: i.sessions,
                    };
                    (ino, inode)
                })
                .collect();
            super::Migrated {
                lsn: self.lsn,
                next_segment: self.next_segment,
                state: MetaState {
                    inodes,
                    next_seq: s.next_seq,
                    last_lsn: s.last_lsn,
                    next_tx: s.next_tx,
                    pending: s.pending,
                    finished: s.finished,
                    applied: s.applied,
                    applied_order: s.applied_order,
                    applied_counter: s.applied_counter,
                    book: Default::default(),
                    // Version 1 predates recorded write leases.
                    write_leases: BTreeMap::new(),
                    usage: Default::default(),
                    replied: Default::default(),
                    // Version 1 predates end-to-end checksums: read unchecked.
                    sums: Default::default(),
                },
            }
        }
    }

    /// A version 1 checkpoint of `st` (for tests of the migration).
    #[cfg(test)]
    pub fn encode(st: &MetaState, next_segment: u64) -> Vec<u8> {
        let state = State {
            inodes: st
                .inodes
                .iter()
                .map(|(ino, i)| {
                    let v1 = InodeV1 {
                        attr: i.attr.clone(),
                        parent: i.parent,
                        entries: i
                            .entries
                            .iter()
                            .map(|(n, ino, k)| (n.to_string(), (ino, k)))
                            .collect(),
                        extents: i.extents.clone(),
                        symlink: i.symlink.clone(),
                        xattrs: i.xattrs.clone(),
                        sessions: i.sessions.clone(),
                    };
                    (*ino, v1)
                })
                .collect(),
            next_seq: st.next_seq.clone(),
            last_lsn: st.last_lsn,
            next_tx: st.next_tx,
            pending: st.pending.clone(),
            finished: st.finished.clone(),
            applied: st.applied.clone(),
            applied_order: st.applied_order.clone(),
            applied_counter: st.applied_counter,
        };
        let ckpt = Checkpoint {
            lsn: st.last_lsn,
            next_segment,
            state,
        };
        let body = postcard::to_stdvec(&ckpt).expect("encode");
        crate::record::frame(crate::record::CHECKPOINT_MAGIC, 1, body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> MetaState {
        let mut st = MetaState::new();
        st.commit(st.plan_root(proto::msg::Timestamp::default(), 0, 0));
        st.commit(vec![crate::record::Record::WriteLease {
            ino: InodeId::ROOT,
            session: SessionId(7),
        }]);
        st
    }

    #[test]
    fn write_leases_ride_in_the_head_and_old_heads_have_none() {
        let st = sample();
        assert_eq!(st.write_leases().len(), 1);
        let mut stream = head_piece(&st);
        stream.extend_from_slice(&inode_piece(&st, None, 1 << 20).bytes);
        let m = Manifest {
            lsn: st.last_lsn(),
            covers: st.last_lsn(),
            from_segment: 0,
            chunks: Vec::new(),
            pieces: 2,
            inodes: st.inode_count() as u64,
        };
        let mut l = Loader::new();
        l.feed(&stream).expect("feed");
        assert_eq!(l.finish(&m).expect("finish"), st);
        // A kind-0 head (written before write leases were recorded) is the same head
        // without the trailing map: it loads with no recorded write lease.
        assert_eq!(stream[0], PIECE_HEAD2);
        stream[0] = PIECE_HEAD;
        let mut l = Loader::new();
        l.feed(&stream).expect("feed");
        let old = l.finish(&m).expect("finish");
        assert!(old.write_leases().is_empty());
        let mut without = st.clone();
        without.write_leases.clear();
        assert_eq!(old, without);
    }

    #[test]
    fn recorded_calls_ride_in_the_head() {
        let mut st = sample();
        st.commit(vec![crate::record::Record::Replied {
            session: SessionId(7),
            call: proto::ids::CallId(3),
            answer: Some(InodeId::ROOT),
        }]);
        let mut stream = head_piece(&st);
        stream.extend_from_slice(&inode_piece(&st, None, 1 << 20).bytes);
        let m = Manifest {
            lsn: st.last_lsn(),
            covers: st.last_lsn(),
            from_segment: 0,
            chunks: Vec::new(),
            pieces: 2,
            inodes: st.inode_count() as u64,
        };
        let mut l = Loader::new();
        l.feed(&stream).expect("feed");
        let back = l.finish(&m).expect("finish");
        assert_eq!(
            back.replied.get((SessionId(7), proto::ids::CallId(3))),
            Some(Some(InodeId::ROOT))
        );
        assert_eq!(back.replied.len(), 1);
    }

    #[test]
    fn pieces_round_trip_in_any_chunking() {
        let st = sample();
        let mut stream = head_piece(&st);
        let p = inode_piece(&st, None, 1);
        assert!(!p.done || p.count == 1);
        stream.extend_from_slice(&p.bytes);
        let rest = inode_piece(&st, p.last, 1 << 20);
        assert!(rest.done);
        stream.extend_from_slice(&rest.bytes);
        let m = Manifest {
            lsn: st.last_lsn(),
            covers: st.last_lsn(),
            from_segment: 0,
            chunks: Vec::new(),
            pieces: 3,
            inodes: p.count + rest.count,
        };
        for cut in [1, 3, 7, stream.len()] {
            let mut l = Loader::new();
            for c in stream.chunks(cut) {
                l.feed(c).expect("feed");
            }
            assert_eq!(l.finish(&m).expect("finish"), st);
        }
        let mut l = Loader::new();
        l.feed(&stream[..stream.len() - 1]).expect("feed");
        assert!(l.finish(&m).is_err(), "a truncated stream is refused");
    }

    #[test]
    fn chunk_and_manifest_formats_are_versioned() {
        let c = encode_chunk(Lsn(7), 3, b"abc");
        let (lsn, index, data) = decode_chunk(&c).expect("chunk");
        assert_eq!((lsn, index, &data[..]), (Lsn(7), 3, &b"abc"[..]));
        let mut newer = c.to_vec();
        newer[4] = 9;
        assert!(matches!(
            decode_chunk(&Bytes::from(newer)),
            Err(CodecError::Version { version: 9, .. })
        ));
        let m = Manifest {
            lsn: Lsn(1),
            covers: Lsn(2),
            from_segment: 3,
            chunks: vec![ChunkRef {
                segment: 4,
                len: 3,
                crc: 5,
            }],
            pieces: 2,
            inodes: 1,
        };
        match decode_checkpoint_entry(&encode_manifest(&m)).expect("manifest") {
            CheckpointEntry::Manifest(d) => assert_eq!(d, m),
            CheckpointEntry::Legacy => panic!("a manifest decoded as legacy"),
        }
        let legacy = legacy_checkpoint_bytes(&sample(), proto::ids::SegmentId(0));
        assert!(matches!(
            decode_checkpoint_entry(&legacy),
            Ok(CheckpointEntry::Legacy)
        ));
        let mut bad = encode_manifest(&m).to_vec();
        bad[4] = 3;
        assert!(matches!(
            decode_checkpoint_entry(&bad),
            Err(CodecError::Version { version: 3, .. })
        ));
    }
}
