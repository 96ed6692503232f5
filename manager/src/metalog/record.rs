//! Durable metadata records (versions 1 to 6) and their framing: a batch of records and a
//! checkpoint each start with a magic and a version, followed by postcard. The checkpoint
//! body and its versions live in `checkpoint`. Records are
//! low-level state changes, so that `MetaState::apply` is infallible and deterministic;
//! all POSIX reasoning happens when records are planned. Must not: change the meaning of a
//! version once written (add a new version instead).

use crate::error::CodecError;
use proto::chunksum::ChunkSums;
use proto::ids::{CallId, InodeId, NodeId, SessionId, TxId};
use proto::msg::{Attr, Extent, FileKind, TxOp};
use serde::{Deserialize, Serialize};

/// Magic of a batch of metadata records (`EntryKind::MetaRecords`).
pub const RECORDS_MAGIC: [u8; 4] = *b"SHMR";
/// Magic of a checkpoint (`EntryKind::Checkpoint`).
pub const CHECKPOINT_MAGIC: [u8; 4] = *b"SHMC";
/// Current version of record batches. Version 2 added `WriteLease` and `WriteLeaseEnd` at
/// the end of `Record`; a version 1 batch is a version 2 batch without them (postcard
/// numbers variants in order), so both decode through the same type. Version 3 added
/// `Replied` at the end, the same way; version 4 added `Sums` at the end; version 5 added
/// `EntryAt` at the end; version 6 added `SeqFloors` at the end.
pub const RECORDS_VERSION: u16 = 6;

/// A log sequence number: records are numbered 1, 2, ... by the manager that logs them.
pub use proto::ids::Lsn;

/// A cross-manager operation as the coordinator logs it before starting it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxIntent {
    pub tx: TxId,
    /// Operations for participants, sent in this order; only the first may be refused.
    pub remote: Vec<(NodeId, TxOp)>,
    /// The coordinator's own part, applied once every remote op succeeded.
    pub local: Vec<TxOp>,
    /// Local `AddEntry` ops take their inode and kind from the first remote result
    /// (create of a remote inode, link of a remote inode).
    pub fill_from_result: bool,
}

/// A two-phase cross-manager operation as the coordinator logs it before any prepare.
/// From this record until its decision the coordinator's own ops hold intent locks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxBegin {
    pub tx: TxId,
    /// Each participant's ops, in the order they are applied there; the first op of the
    /// first participant gives the result (created or linked inode) when there is one.
    pub parts: Vec<(NodeId, Vec<TxOp>)>,
    /// The coordinator's own ops, checked and locked now, applied at the commit decision.
    pub local: Vec<TxOp>,
    /// Local `AddEntry` ops take their inode and kind from the result.
    pub fill_from_result: bool,
}

/// One state change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Record {
    /// A new inode (also bumps its slot's sequence counter).
    NewInode {
        attr: Attr,
        parent: Option<InodeId>,
        symlink: Option<String>,
    },
    /// New attributes of an existing inode.
    Attr {
        attr: Attr,
    },
    /// Set (`Some`) or remove (`None`) a directory entry.
    Entry {
        dir: InodeId,
        name: String,
        target: Option<(InodeId, FileKind)>,
    },
    /// A directory's `..`.
    Parent {
        dir: InodeId,
        parent: InodeId,
    },
    /// Overlay extents on a file's map (blocks_bytes follows).
    Extents {
        ino: InodeId,
        extents: Vec<Extent>,
    },
    /// Drop extents at or past `size`.
    Truncate {
        ino: InodeId,
        size: u64,
    },
    /// Set (`Some`) or remove (`None`) an extended attribute.
    Xattr {
        ino: InodeId,
        name: String,
        value: Option<Vec<u8>>,
    },
    Open {
        ino: InodeId,
        session: SessionId,
    },
    Release {
        ino: InodeId,
        session: SessionId,
    },
    /// The inode is gone with its entries, extents and xattrs.
    Drop {
        ino: InodeId,
    },
    /// Coordinator: a cross-manager transaction starts.
    TxIntent(TxIntent),
    /// Participant: applied `op` of `tx` (the state changes are logged beside it).
    TxApplied {
        tx: TxId,
        op: TxOp,
        result: Option<Attr>,
    },
    /// Coordinator: the transaction committed (its local changes are logged beside it).
    TxDone {
        tx: TxId,
    },
    /// Coordinator: the first remote op was refused; nothing changed anywhere.
    TxAborted {
        tx: TxId,
    },
    /// Coordinator (two-phase): a transaction starts; its local ops are locked.
    TxBegin(TxBegin),
    /// Participant (two-phase): `ops` of `tx` were checked and are locked until the
    /// coordinator's decision; `results` are what they will return (a `CreateInode`'s
    /// inode number is reserved by this record).
    TxPrepared {
        tx: TxId,
        ops: Vec<TxOp>,
        results: Vec<Option<Attr>>,
    },
    /// Coordinator (two-phase): the durable decision. On commit the local part is logged
    /// beside it. Kept until every participant acknowledged it (`TxForget`).
    TxDecided {
        tx: TxId,
        commit: bool,
    },
    /// Coordinator (two-phase): every participant acknowledged the decision.
    TxForget {
        tx: TxId,
    },
    /// Participant (two-phase): the decision arrived and was carried out (on commit the
    /// changes are logged beside it); the transaction is forgotten.
    TxResolved {
        tx: TxId,
        commit: bool,
    },
    /// `session` may buffer writes to `ino` under a write lease of this manager (version
    /// 2). Durable before the grant is answered, so that a restarted manager knows every
    /// inode whose readers must wait for a reclaim (notes/leases.md).
    WriteLease {
        ino: InodeId,
        session: SessionId,
    },
    /// The write lease `WriteLease { ino, session }` recorded is over (flushed away, lost,
    /// goodbye, or not reclaimed in a grace period). Logged lazily with other records: if
    /// it is lost in a crash, the next incarnation only waits for that inode needlessly.
    WriteLeaseEnd {
        ino: InodeId,
        session: SessionId,
    },
    /// The numbered call `call` of `session` was applied by the records before it in the
    /// same batch and answered "done" (`answer: None`) or the attributes of `answer`
    /// (version 3). A restarted manager answers a retry of the call with that instead of
    /// applying it again (`calls`).
    Replied {
        session: SessionId,
        call: CallId,
        answer: Option<InodeId>,
    },
    /// The end-to-end checksums of (chunks of) a data segment that extents committed in
    /// the same batch point into (version 4; `sums`). Logged before those extents.
    Sums(ChunkSums),
    /// Set a directory entry with the readdir cookie it got when it was applied live
    /// (version 5). `MetaState::commit` logs every entry set this way: replaying it over a
    /// fuzzy checkpoint piece that already reflects it, or later records, gives the same
    /// cookies and the same next cookie, where a replayed `Entry` would assign new ones.
    EntryAt {
        dir: InodeId,
        name: String,
        target: (InodeId, FileKind),
        cookie: u64,
    },
    /// Raise the next inode sequence of each `(slot, floor)` to at least `floor`
    /// (version 6). Logged durably by every incarnation before it serves, a reserve above
    /// what the log holds: a create is answered before its group commit, so the inodes a
    /// crashed or deposed incarnation handed out without making them durable are never
    /// handed out again (a client still holding one would write into another file).
    SeqFloors(Vec<(u16, u64)>),
}

/// A record with its sequence number.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Logged {
    pub lsn: Lsn,
    pub rec: Record,
}

pub(crate) fn frame(magic: [u8; 4], version: u16, body: Vec<u8>) -> Vec<u8> {
    let mut out = Vec::with_capacity(6 + body.len());
    out.extend_from_slice(&magic);
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(&body);
    out
}

/// The version and body of a frame whose version is at most `newest`.
pub(crate) fn unframe<'a>(
    what: &'static str,
    magic: [u8; 4],
    newest: u16,
    bytes: &'a [u8],
) -> Result<(u16, &'a [u8]), CodecError> {
    if bytes.len() < 6 {
        return Err(CodecError::Truncated { what });
    }
    let mut found = [0u8; 4];
    found.copy_from_slice(&bytes[..4]);
    if found != magic {
        return Err(CodecError::Magic {
            what,
            found,
            expected: magic,
        });
    }
    let version = u16::from_le_bytes([bytes[4], bytes[5]]);
    if version == 0 || version > newest {
        return Err(CodecError::Version {
            what,
            version,
            known: newest,
        });
    }
    Ok((version, &bytes[6..]))
}

/// Decodes a postcard body.
pub(crate) fn from_postcard<T: for<'de> Deserialize<'de>>(
    what: &'static str,
    body: &[u8],
) -> Result<T, CodecError> {
    postcard::from_bytes(body).map_err(|source| CodecError::Postcard { what, source })
}

/// Encodes a batch of records.
pub fn encode_records(recs: &[Logged]) -> Vec<u8> {
    // Serializing plain data into a Vec cannot fail.
    let body = postcard::to_stdvec(recs).unwrap_or_default();
    frame(RECORDS_MAGIC, RECORDS_VERSION, body)
}

/// Decodes a batch of records.
pub fn decode_records(bytes: &[u8]) -> Result<Vec<Logged>, CodecError> {
    let (_, body) = unframe("record batch", RECORDS_MAGIC, RECORDS_VERSION, bytes)?;
    from_postcard("record batch", body)
}

#[cfg(test)]
pub(crate) mod strategies {
    //! proptest strategies for records.
    use super::*;
    use proptest::prelude::*;
    use proto::ids::{LogId, LogPtr, SegmentAddr, SegmentId};
    use proto::msg::{Caller, NewNode, Timestamp};

    pub fn ino() -> impl Strategy<Value = InodeId> {
        (0u64..4, 1u64..50).prop_map(|(s, q)| InodeId::new(proto::ids::SlotId(s as u16), q))
    }

    pub fn kind() -> impl Strategy<Value = FileKind> {
        prop_oneof![
            Just(FileKind::File),
            Just(FileKind::Dir),
            Just(FileKind::Symlink),
            Just(FileKind::Fifo)
        ]
    }

    pub fn attr() -> impl Strategy<Value = Attr> {
        (
            ino(),
            kind(),
            any::<u16>(),
            any::<u32>(),
            any::<u64>(),
            any::<i64>(),
            any::<u32>(),
        )
            .prop_map(|(ino, kind, perm, nlink, size, secs, nanos)| Attr {
                ino,
                kind,
                perm,
                nlink,
                uid: nlink ^ 7,
                gid: 3,
                size,
                blocks_bytes: size / 2,
                atime: Timestamp { secs, nanos },
                mtime: Timestamp {
                    secs: secs / 2,
                    nanos,
                },
                ctime: Timestamp::default(),
                rdev: 0,
                version: size ^ 1,
            })
    }

    pub fn extent() -> impl Strategy<Value = Extent> {
        (any::<u64>(), any::<u64>(), any::<u32>(), any::<u32>()).prop_map(
            |(offset, seg, o, len)| Extent {
                offset,
                ptr: LogPtr {
                    seg: SegmentAddr {
                        log: LogId(seg ^ 5),
                        segment: SegmentId(seg),
                        len: o,
                        k: 4,
                        m: 2,
                        nodes: 0,
                    },
                    offset: o,
                    len,
                },
            },
        )
    }

    pub fn txop() -> impl Strategy<Value = TxOp> {
        prop_oneof![
            (ino(), ".{0,8}", ino(), kind(), any::<bool>()).prop_map(
                |(dir, name, ino, kind, replace)| TxOp::AddEntry {
                    dir,
                    name,
                    ino,
                    kind,
                    replace
                }
            ),
            (ino(), ".{0,8}", ino()).prop_map(|(dir, name, ino)| TxOp::RemoveEntry {
                dir,
                name,
                ino
            }),
            (ino(), any::<i32>()).prop_map(|(ino, delta)| TxOp::AdjustNlink { ino, delta }),
            (ino(), ino()).prop_map(|(dir, parent)| TxOp::SetParent { dir, parent }),
            ino().prop_map(|dir| TxOp::RemoveDir { dir }),
            (any::<u16>(), ino(), ".{0,8}", any::<u16>()).prop_map(
                |(ino_slot, parent, target, perm)| {
                    TxOp::CreateInode {
                        ino_slot,
                        parent,
                        node: NewNode::Symlink { target },
                        perm,
                        caller: Caller { uid: 1, gid: 2 },
                    }
                }
            ),
        ]
    }

    pub fn txid() -> impl Strategy<Value = TxId> {
        (0u32..5, any::<u64>()).prop_map(|(n, seq)| TxId {
            coordinator: NodeId(n),
            seq,
        })
    }

    pub fn record() -> impl Strategy<Value = Record> {
        prop_oneof![
            (
                attr(),
                proptest::option::of(ino()),
                proptest::option::of(".{0,12}")
            )
                .prop_map(|(attr, parent, symlink)| Record::NewInode {
                    attr,
                    parent,
                    symlink
                }),
            attr().prop_map(|attr| Record::Attr { attr }),
            (ino(), ".{0,12}", proptest::option::of((ino(), kind())))
                .prop_map(|(dir, name, target)| Record::Entry { dir, name, target }),
            (ino(), ".{0,12}", (ino(), kind()), any::<u64>()).prop_map(
                |(dir, name, target, cookie)| Record::EntryAt {
                    dir,
                    name,
                    target,
                    cookie
                }
            ),
            (ino(), ino()).prop_map(|(dir, parent)| Record::Parent { dir, parent }),
            proptest::collection::vec((any::<u16>(), any::<u64>()), 0..4)
                .prop_map(Record::SeqFloors),
            (ino(), proptest::collection::vec(extent(), 0..4))
                .prop_map(|(ino, extents)| Record::Extents { ino, extents }),
            (ino(), any::<u64>()).prop_map(|(ino, size)| Record::Truncate { ino, size }),
            (
                ino(),
                ".{0,8}",
                proptest::option::of(proptest::collection::vec(any::<u8>(), 0..16))
            )
                .prop_map(|(ino, name, value)| Record::Xattr { ino, name, value }),
            (ino(), any::<u64>()).prop_map(|(ino, s)| Record::Open {
                ino,
                session: SessionId(s)
            }),
            (ino(), any::<u64>()).prop_map(|(ino, s)| Record::Release {
                ino,
                session: SessionId(s)
            }),
            ino().prop_map(|ino| Record::Drop { ino }),
            (
                txid(),
                proptest::collection::vec((0u32..4, txop()), 0..3),
                proptest::collection::vec(txop(), 0..3),
                any::<bool>()
            )
                .prop_map(|(tx, remote, local, fill_from_result)| Record::TxIntent(
                    TxIntent {
                        tx,
                        remote: remote.into_iter().map(|(n, o)| (NodeId(n), o)).collect(),
                        local,
                        fill_from_result,
                    }
                )),
            (txid(), txop(), proptest::option::of(attr()))
                .prop_map(|(tx, op, result)| Record::TxApplied { tx, op, result }),
            txid().prop_map(|tx| Record::TxDone { tx }),
            txid().prop_map(|tx| Record::TxAborted { tx }),
            (ino(), any::<u64>()).prop_map(|(ino, s)| Record::WriteLease {
                ino,
                session: SessionId(s)
            }),
            (ino(), any::<u64>()).prop_map(|(ino, s)| Record::WriteLeaseEnd {
                ino,
                session: SessionId(s)
            }),
            (any::<u64>(), any::<u64>(), proptest::option::of(ino())).prop_map(|(s, c, answer)| {
                Record::Replied {
                    session: SessionId(s),
                    call: CallId(c),
                    answer,
                }
            }),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn record_batches_round_trip(recs in proptest::collection::vec(strategies::record(), 0..20)) {
            let logged: Vec<Logged> = recs.into_iter().enumerate().map(|(i, rec)| Logged { lsn: Lsn(i as u64 + 1), rec }).collect();
            let bytes = encode_records(&logged);
            prop_assert_eq!(decode_records(&bytes).expect("decode"), logged);
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode_records(&bytes);
            let mut framed = RECORDS_MAGIC.to_vec();
            framed.extend_from_slice(&RECORDS_VERSION.to_le_bytes());
            framed.extend_from_slice(&bytes);
            let _ = decode_records(&framed);
        }
    }

    #[test]
    fn wrong_magic_and_version_are_refused() {
        let bytes = encode_records(&[]);
        let mut bad = bytes.clone();
        bad[0] = b'X';
        assert!(matches!(
            decode_records(&bad),
            Err(CodecError::Magic { .. })
        ));
        let mut newer = bytes.clone();
        newer[4] = 9;
        assert!(matches!(
            decode_records(&newer),
            Err(CodecError::Version { version: 9, .. })
        ));
        assert!(matches!(
            decode_records(&bytes[..3]),
            Err(CodecError::Truncated { .. })
        ));
        assert!(matches!(
            crate::checkpoint::decode_legacy(&bytes),
            Err(CodecError::Magic { .. })
        ));
    }
}
