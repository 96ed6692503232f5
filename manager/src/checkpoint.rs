//! The checkpoint format: the whole `MetaState` at an LSN, framed by `record::frame` with
//! `CHECKPOINT_MAGIC` and a version, then postcard. Version 2 (written) stores directory
//! entries with their readdir cookies (`DirEntries`); version 1 (read only, `v1`) stored
//! plain name → (inode, kind) maps and is migrated on load by numbering each directory's
//! entries in name order. Must not: change the meaning of a version once written.

use crate::error::CodecError;
use crate::record::{frame, from_postcard, unframe, Lsn, CHECKPOINT_MAGIC, CHECKPOINT_VERSION};
use crate::state::MetaState;
use bytes::Bytes;
use proto::ids::SegmentId;
use serde::{Deserialize, Serialize};

const WHAT: &str = "checkpoint";

/// The whole state at an LSN (version 2 of the checkpoint body).
#[derive(Debug, Serialize, Deserialize)]
pub struct Checkpoint {
    pub lsn: Lsn,
    /// The writer's next segment when the checkpoint was taken (informational).
    pub next_segment: u64,
    pub state: MetaState,
}

#[derive(Serialize)]
struct CheckpointRef<'a> {
    lsn: Lsn,
    next_segment: u64,
    state: &'a MetaState,
}

/// Encodes a checkpoint of `state` (current version).
pub fn checkpoint_bytes(state: &MetaState, next_segment: SegmentId) -> Bytes {
    let body = postcard::to_stdvec(&CheckpointRef {
        lsn: state.last_lsn(),
        next_segment: next_segment.0,
        state,
    })
    // Serializing plain data into a Vec cannot fail.
    .unwrap_or_default();
    Bytes::from(frame(CHECKPOINT_MAGIC, CHECKPOINT_VERSION, body))
}

/// Decodes a checkpoint of any known version.
pub fn decode_checkpoint(bytes: &[u8]) -> Result<Checkpoint, CodecError> {
    match unframe(WHAT, CHECKPOINT_MAGIC, CHECKPOINT_VERSION, bytes)? {
        (1, body) => Ok(from_postcard::<v1::Checkpoint>(WHAT, body)?.migrate()),
        (_, body) => from_postcard(WHAT, body),
    }
}

pub(crate) mod v1 {
    //! Version 1: directories without cookies. Field order is the format; do not change.
    use crate::directory::DirEntries;
    use crate::extent::ExtentMap;
    use crate::record::{Lsn, TxIntent};
    use crate::state::{AppliedOps, Inode, MetaState};
    use proto::ids::{InodeId, TxId};
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
        pub sessions: BTreeSet<u64>,
    }

    impl Checkpoint {
        /// The current form: each directory's entries get cookies 1, 2, ... in name order.
        pub fn migrate(self) -> super::Checkpoint {
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
            super::Checkpoint {
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
