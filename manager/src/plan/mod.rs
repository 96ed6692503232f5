//! Planning: every mutating operation is validated against the current `MetaState` and
//! turned into records (or, when other managers are involved, into a transaction plan).
//! All POSIX reasoning (errnos, nlink arithmetic, timestamps, setgid, umask) lives here.
//!
//! This module owns the shared vocabulary (`Ctx`, `Plan`, `Reply`, `TxPlan`, the limits and
//! mode bits), name checks and the split of ops into a local plan or a transaction
//! (`local_or_tx`); the plans themselves are `impl MetaState` blocks by area: `draft` (the
//! scratch overlay every plan is built on), `namespace` (root, create, unlink, rmdir, link,
//! rename, readlink), `attr` (setattr/truncate, fallocate), `open` (open and release
//! sessions), `xattr`, `extents` (extent reads and the commit of written extents), `tx`
//! (the legacy transaction's participant apply and coordinator finish) and `twopc` (the
//! two-phase protocol's steps).
//! Must not: mutate the state (that is `MetaState::apply`), do I/O, or read clocks.

use crate::error::{einval, enametoolong, Errno};
use crate::record::{Record, TxIntent};
use crate::state::MetaState;
use proto::ids::{InodeId, NodeId, SlotId, TxId, SLOT_COUNT};
use proto::msg::{Attr, Timestamp, TxOp};

pub const S_ISUID: u16 = 0o4000;
pub const S_ISGID: u16 = 0o2000;
pub const S_IXGRP: u16 = 0o0010;
/// Longest name of a directory entry (bytes).
pub const NAME_MAX: usize = 255;
/// Longest symlink target (bytes).
pub const PATH_MAX: usize = 4096;
/// Longest xattr name and value (bytes), as Linux allows.
pub const XATTR_NAME_MAX: usize = 255;
pub const XATTR_SIZE_MAX: usize = 65_536;
pub const XATTR_CREATE: i32 = 1;
pub const XATTR_REPLACE: i32 = 2;
/// The inode placeholder of a local `AddEntry` filled from a remote result.
pub const PLACEHOLDER: InodeId = InodeId(0);
/// Bound on parent walks (a deeper tree is refused rather than walked forever).
pub const MAX_DEPTH: usize = 4096;

mod attr;
mod check;
mod draft;
mod extents;
mod namespace;
mod open;
mod twopc;
mod tx;
mod xattr;
use draft::Draft;
pub use twopc::{Prepare, TxStart};

/// What planning needs besides the state: who we are, the manager map, and the time.
#[derive(Clone, Copy, Debug)]
pub struct Ctx<'a> {
    pub me: NodeId,
    /// Manager node of every slot, indexed by slot.
    pub owners: &'a [NodeId],
    pub now: Timestamp,
}

impl Ctx<'_> {
    pub fn owner(&self, slot: SlotId) -> NodeId {
        self.owners.get(slot.0 as usize).copied().unwrap_or(self.me)
    }
    pub fn is_local(&self, ino: InodeId) -> bool {
        self.owner(ino.slot()) == self.me
    }
}

/// The slot of a new directory `name` in `parent`: a stable FNV-1a hash, so that
/// directories spread over managers.
pub fn dir_slot(parent: InodeId, name: &str) -> SlotId {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in parent.0.to_le_bytes().iter().chain(name.as_bytes()) {
        h ^= *b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    SlotId((h % SLOT_COUNT as u64) as u16)
}

/// Checks a name for a new directory entry.
pub fn check_name(name: &str) -> Result<(), Errno> {
    if name.len() > NAME_MAX {
        return Err(enametoolong(format!(
            "name of {} bytes is longer than {NAME_MAX}",
            name.len()
        )));
    }
    if name.is_empty() || name == "." || name == ".." || name.contains('/') || name.contains('\0') {
        return Err(einval(format!("{name:?} is not a valid entry name")));
    }
    Ok(())
}

/// What to answer after a local plan is committed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    Done,
    Attr(InodeId),
    Attrs(Vec<InodeId>),
    /// A local create: the new inode's attributes, and to a requester with a session also
    /// its parent's as they are after the create (the requester becomes a reader of both).
    Created {
        ino: InodeId,
        parent: InodeId,
    },
    /// A local unlink or rmdir: done, and to a requester with a session the parent's
    /// attributes as they are after it (the requester becomes the parent's reader).
    Removed {
        parent: InodeId,
    },
}

/// What to answer after a transaction commits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TxReply {
    Done,
    /// The attributes returned by the first remote op (created or linked inode).
    ResultAttr,
}

/// A cross-manager operation before it gets its `TxId`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TxPlan {
    pub remote: Vec<(NodeId, TxOp)>,
    pub local: Vec<TxOp>,
    pub fill_from_result: bool,
    pub reply: TxReply,
}

impl TxPlan {
    pub fn into_intent(self, tx: TxId) -> TxIntent {
        TxIntent {
            tx,
            remote: self.remote,
            local: self.local,
            fill_from_result: self.fill_from_result,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Plan {
    Local { records: Vec<Record>, reply: Reply },
    Tx(TxPlan),
}

impl MetaState {
    /// Runs `ops` strictly on a fresh draft; returns the records and the first op's result.
    fn run_strict(
        &self,
        now: Timestamp,
        ops: &[TxOp],
    ) -> Result<(Vec<Record>, Option<Attr>), Errno> {
        let mut d = Draft::new(self, now);
        let mut first = None;
        for (i, op) in ops.iter().enumerate() {
            let r = d.tx_op(op)?;
            if i == 0 {
                first = r;
            }
        }
        Ok((d.finish(), first))
    }

    /// Splits ops by owner into a local plan or a transaction plan.
    fn local_or_tx(
        &self,
        ctx: &Ctx,
        ops: Vec<(NodeId, TxOp)>,
        reply: Reply,
        fill: bool,
    ) -> Result<Plan, Errno> {
        if ops.iter().all(|(n, _)| *n == ctx.me) {
            let ops: Vec<TxOp> = ops.into_iter().map(|(_, o)| o).collect();
            let (records, _) = self.run_strict(ctx.now, &ops)?;
            return Ok(Plan::Local { records, reply });
        }
        let (mut remote, local): (Vec<_>, Vec<_>) =
            ops.into_iter().partition(|(n, _)| *n != ctx.me);
        let local: Vec<TxOp> = local.into_iter().map(|(_, o)| o).collect();
        // The fallible remote op goes first; the rest cannot fail.
        let rank = |op: &TxOp| match op {
            TxOp::RemoveDir { .. } | TxOp::CreateInode { .. } => 0,
            TxOp::AddEntry { replace: false, .. } => 1,
            TxOp::AddEntry { .. } => 2,
            TxOp::AdjustNlink { delta, .. } if *delta > 0 => 1,
            _ => 3,
        };
        remote.sort_by_key(|(_, op)| rank(op));
        if !fill {
            // Validate our own part now; it is applied (leniently) once the remote part is done.
            self.run_strict(ctx.now, &local)?;
        }
        let reply = if fill {
            TxReply::ResultAttr
        } else {
            TxReply::Done
        };
        Ok(Plan::Tx(TxPlan {
            remote,
            local,
            fill_from_result: fill,
            reply,
        }))
    }
}
