//! Planning: every mutating operation is validated against the current `MetaState` and
//! turned into records (or, when other managers are involved, into a transaction plan).
//! All POSIX reasoning (errnos, nlink arithmetic, timestamps, setgid, umask) lives here.
//! Must not: mutate the state (that is `MetaState::apply`), do I/O, or read clocks.

use crate::error::*;
use crate::record::{Record, TxIntent};
use crate::state::MetaState;
use proto::ids::{InodeId, NodeId, SessionId, SlotId, TxId, SLOT_COUNT};
use proto::msg::{
    Attr, Caller, Extent, FileKind, InodeWrite, NewNode, RenameFlags, SetAttrs, SetTime, Timestamp,
    TxOp,
};
use std::collections::{BTreeMap, BTreeSet};

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

mod twopc;
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

/// A scratch overlay over the state: the plan's view of attrs, entries and sessions as
/// its ops change them; `finish` turns it into records.
struct Draft<'a> {
    st: &'a MetaState,
    now: Timestamp,
    new: BTreeMap<InodeId, (Attr, Option<InodeId>, Option<String>)>,
    attrs: BTreeMap<InodeId, Attr>,
    entries: BTreeMap<(InodeId, String), Option<(InodeId, FileKind)>>,
    sessions: BTreeMap<InodeId, BTreeSet<SessionId>>,
    next_seq: BTreeMap<u16, u64>,
    recs: Vec<Record>,
    /// The inode number the next `CreateInode` uses (a prepared create, reserved then).
    fixed_ino: Option<InodeId>,
}

impl<'a> Draft<'a> {
    fn new(st: &'a MetaState, now: Timestamp) -> Draft<'a> {
        Draft {
            st,
            now,
            new: BTreeMap::new(),
            attrs: BTreeMap::new(),
            entries: BTreeMap::new(),
            sessions: BTreeMap::new(),
            next_seq: BTreeMap::new(),
            recs: Vec::new(),
            fixed_ino: None,
        }
    }

    fn attr(&self, ino: InodeId) -> Result<Attr, Errno> {
        if let Some((a, _, _)) = self.new.get(&ino) {
            return Ok(a.clone());
        }
        if let Some(a) = self.attrs.get(&ino) {
            return Ok(a.clone());
        }
        Ok(self.st.get(ino)?.attr.clone())
    }

    /// The attributes of `ino`, to change (the version is bumped once per plan).
    fn attr_mut(&mut self, ino: InodeId) -> Result<&mut Attr, Errno> {
        if self.new.contains_key(&ino) {
            return self
                .new
                .get_mut(&ino)
                .map(|n| &mut n.0)
                .ok_or_else(|| enoent("vanished"));
        }
        if !self.attrs.contains_key(&ino) {
            let mut a = self.st.get(ino)?.attr.clone();
            a.version += 1;
            self.attrs.insert(ino, a);
        }
        self.attrs.get_mut(&ino).ok_or_else(|| enoent("vanished"))
    }

    /// A live directory (not removed while still open).
    fn live_dir(&self, dir: InodeId) -> Result<Attr, Errno> {
        let a = self.attr(dir)?;
        if a.kind != FileKind::Dir {
            return Err(enotdir(format!("{dir} is not a directory")));
        }
        if a.nlink == 0 {
            return Err(enoent(format!("directory {dir} was removed")));
        }
        Ok(a)
    }

    fn entry(&self, dir: InodeId, name: &str) -> Option<(InodeId, FileKind)> {
        if let Some(e) = self.entries.get(&(dir, name.to_string())) {
            return *e;
        }
        self.st.inode(dir).and_then(|d| d.entries.get(name))
    }

    fn set_entry(&mut self, dir: InodeId, name: &str, target: Option<(InodeId, FileKind)>) {
        self.entries.insert((dir, name.to_string()), target);
        self.recs.push(Record::Entry {
            dir,
            name: name.to_string(),
            target,
        });
    }

    fn dir_is_empty(&self, dir: InodeId) -> bool {
        let overlaid = self
            .entries
            .range((dir, String::new())..)
            .take_while(|((d, _), _)| *d == dir);
        let mut removed = BTreeSet::new();
        for ((_, name), t) in overlaid {
            if t.is_some() {
                return false;
            }
            removed.insert(name.as_str());
        }
        match self.st.inode(dir) {
            Some(d) => d.entries.names().all(|n| removed.contains(n)),
            None => true,
        }
    }

    fn sessions(&self, ino: InodeId) -> BTreeSet<SessionId> {
        match self.sessions.get(&ino) {
            Some(s) => s.clone(),
            None => self
                .st
                .inode(ino)
                .map(|i| i.sessions.clone())
                .unwrap_or_default(),
        }
    }

    fn touch_times(&mut self, ino: InodeId, mtime: bool) -> Result<(), Errno> {
        let now = self.now;
        let a = self.attr_mut(ino)?;
        a.ctime = now;
        if mtime {
            a.mtime = now;
        }
        Ok(())
    }

    /// Applies one transaction op to the draft, validating first: on error nothing changed.
    fn tx_op(&mut self, op: &TxOp) -> Result<Option<Attr>, Errno> {
        match op {
            TxOp::CreateInode {
                ino_slot,
                parent,
                node,
                perm,
                caller,
            } => {
                let slot = SlotId(*ino_slot % SLOT_COUNT);
                let (kind, rdev, symlink) = match node {
                    NewNode::File => (FileKind::File, 0, None),
                    NewNode::Dir => (FileKind::Dir, 0, None),
                    NewNode::Symlink { target } => {
                        if target.is_empty() {
                            return Err(enoent("empty symlink target"));
                        }
                        if target.len() > PATH_MAX {
                            return Err(enametoolong(format!(
                                "symlink target of {} bytes",
                                target.len()
                            )));
                        }
                        (FileKind::Symlink, 0, Some(target.clone()))
                    }
                    NewNode::Special { kind, rdev } => match kind {
                        FileKind::Fifo
                        | FileKind::Socket
                        | FileKind::CharDev
                        | FileKind::BlockDev => (*kind, *rdev, None),
                        other => return Err(einval(format!("mknod of kind {other:?}"))),
                    },
                };
                let ino = match self.fixed_ino.take() {
                    Some(ino) => ino,
                    None => {
                        let seq = self
                            .next_seq
                            .get(&slot.0)
                            .copied()
                            .unwrap_or_else(|| self.st.next_seq(slot));
                        self.next_seq.insert(slot.0, seq + 1);
                        InodeId::new(slot, seq)
                    }
                };
                let attr = Attr {
                    ino,
                    kind,
                    perm: if kind == FileKind::Symlink {
                        0o777
                    } else {
                        perm & 0o7777
                    },
                    nlink: if kind == FileKind::Dir { 2 } else { 1 },
                    uid: caller.uid,
                    gid: caller.gid,
                    size: symlink.as_ref().map(|t| t.len() as u64).unwrap_or(0),
                    blocks_bytes: 0,
                    atime: self.now,
                    mtime: self.now,
                    ctime: self.now,
                    rdev,
                    version: 1,
                };
                let parent = (kind == FileKind::Dir).then_some(*parent);
                self.new.insert(ino, (attr.clone(), parent, symlink));
                Ok(Some(attr))
            }
            TxOp::AddEntry {
                dir,
                name,
                ino,
                kind,
                replace,
            } => {
                self.live_dir(*dir)?;
                check_name(name)?;
                let old = self.entry(*dir, name);
                if old.is_some() && !replace {
                    return Err(eexist(format!("{name:?} exists in {dir}")));
                }
                self.set_entry(*dir, name, Some((*ino, *kind)));
                let d = self.attr_mut(*dir)?;
                if old.map(|(i, _)| i) != Some(*ino) {
                    if matches!(old, Some((_, FileKind::Dir))) {
                        d.nlink = d.nlink.saturating_sub(1);
                    }
                    if *kind == FileKind::Dir {
                        d.nlink += 1;
                    }
                }
                self.touch_times(*dir, true)?;
                Ok(None)
            }
            TxOp::RemoveEntry { dir, name, ino } => {
                self.attr(*dir)?;
                if let Some((i, k)) = self.entry(*dir, name) {
                    if i == *ino {
                        self.set_entry(*dir, name, None);
                        if k == FileKind::Dir {
                            let d = self.attr_mut(*dir)?;
                            d.nlink = d.nlink.saturating_sub(1);
                        }
                        self.touch_times(*dir, true)?;
                    }
                }
                Ok(None)
            }
            TxOp::AdjustNlink { ino, delta } => {
                let a = self.attr(*ino)?;
                if *delta > 0 && a.kind == FileKind::Dir {
                    return Err(eperm(format!("{ino} is a directory: no hard links")));
                }
                if *delta > 0 && a.nlink == 0 {
                    return Err(enoent(format!("{ino} was removed")));
                }
                let now = self.now;
                let a = self.attr_mut(*ino)?;
                a.nlink = (a.nlink as i64 + *delta as i64).clamp(0, u32::MAX as i64) as u32;
                a.ctime = now;
                Ok(Some(a.clone()))
            }
            TxOp::SetParent { dir, parent } => {
                if self.attr(*dir)?.kind != FileKind::Dir {
                    return Err(enotdir(format!("{dir} is not a directory")));
                }
                if let Some(n) = self.new.get_mut(dir) {
                    n.1 = Some(*parent);
                } else {
                    self.recs.push(Record::Parent {
                        dir: *dir,
                        parent: *parent,
                    });
                }
                self.touch_times(*dir, false)?;
                Ok(None)
            }
            TxOp::RemoveDir { dir } => {
                let a = self.attr(*dir)?;
                if a.kind != FileKind::Dir {
                    return Err(enotdir(format!("{dir} is not a directory")));
                }
                if *dir == InodeId::ROOT {
                    return Err(eperm("the root cannot be removed"));
                }
                if !self.dir_is_empty(*dir) {
                    return Err(enotempty(format!("directory {dir} is not empty")));
                }
                let now = self.now;
                let a = self.attr_mut(*dir)?;
                a.nlink = 0;
                a.ctime = now;
                Ok(None)
            }
        }
    }

    /// The records: new inodes, the ops' records in order, changed attributes, then drops
    /// of inodes left with no link and no open session.
    fn finish(self) -> Vec<Record> {
        let mut out: Vec<Record> =
            Vec::with_capacity(self.new.len() + self.recs.len() + self.attrs.len());
        for (attr, parent, symlink) in self.new.values() {
            out.push(Record::NewInode {
                attr: attr.clone(),
                parent: *parent,
                symlink: symlink.clone(),
            });
        }
        out.extend(self.recs.iter().cloned());
        let mut drops = Vec::new();
        for (ino, attr) in &self.attrs {
            if attr.nlink == 0 && self.sessions(*ino).is_empty() {
                drops.push(Record::Drop { ino: *ino });
            } else {
                out.push(Record::Attr { attr: attr.clone() });
            }
        }
        out.extend(drops);
        out
    }
}

fn set_time(t: SetTime, now: Timestamp) -> Timestamp {
    match t {
        SetTime::Now => now,
        SetTime::At(t) => t,
    }
}

impl MetaState {
    /// The root directory, created once by the owner of slot 0.
    pub fn plan_root(&self, now: Timestamp, uid: u32, gid: u32) -> Vec<Record> {
        let attr = Attr {
            ino: InodeId::ROOT,
            kind: FileKind::Dir,
            perm: 0o755,
            nlink: 2,
            uid,
            gid,
            size: 0,
            blocks_bytes: 0,
            atime: now,
            mtime: now,
            ctime: now,
            rdev: 0,
            version: 1,
        };
        vec![Record::NewInode {
            attr,
            parent: Some(InodeId::ROOT),
            symlink: None,
        }]
    }

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

    #[allow(clippy::too_many_arguments)]
    pub fn plan_create(
        &self,
        ctx: &Ctx,
        parent: InodeId,
        name: &str,
        node: &NewNode,
        perm: u16,
        umask: u16,
        caller: Caller,
        session: Option<SessionId>,
    ) -> Result<Plan, Errno> {
        let d = Draft::new(self, ctx.now);
        let p = d.live_dir(parent)?;
        check_name(name)?;
        if d.entry(parent, name).is_some() {
            return Err(eexist(format!("{name:?} exists in {parent}")));
        }
        let mut perm = perm & !umask & 0o7777;
        let mut caller = caller;
        let is_dir = matches!(node, NewNode::Dir);
        if p.perm & S_ISGID != 0 {
            caller.gid = p.gid;
            if is_dir {
                perm |= S_ISGID;
            }
        }
        let slot = if is_dir {
            dir_slot(parent, name)
        } else {
            parent.slot()
        };
        let create = TxOp::CreateInode {
            ino_slot: slot.0,
            parent,
            node: node.clone(),
            perm,
            caller,
        };
        if ctx.owner(slot) != ctx.me {
            let kind = FileKind::Dir;
            let add = TxOp::AddEntry {
                dir: parent,
                name: name.to_string(),
                ino: PLACEHOLDER,
                kind,
                replace: false,
            };
            return self.local_or_tx(
                ctx,
                vec![(ctx.owner(slot), create), (ctx.me, add)],
                Reply::Done,
                true,
            );
        }
        let mut d = Draft::new(self, ctx.now);
        let attr = d
            .tx_op(&create)?
            .ok_or_else(|| einval("create returned no inode"))?;
        d.tx_op(&TxOp::AddEntry {
            dir: parent,
            name: name.to_string(),
            ino: attr.ino,
            kind: attr.kind,
            replace: false,
        })?;
        if let Some(s) = session {
            d.recs.push(Record::Open {
                ino: attr.ino,
                session: s,
            });
        }
        Ok(Plan::Local {
            records: d.finish(),
            reply: Reply::Attr(attr.ino),
        })
    }

    pub fn plan_unlink(&self, ctx: &Ctx, parent: InodeId, name: &str) -> Result<Plan, Errno> {
        self.dir(parent)?;
        let (ino, kind) = self.lookup(parent, name)?;
        if name == "." || name == ".." || kind == FileKind::Dir {
            return Err(eisdir(format!("{name:?} is a directory")));
        }
        let ops = vec![
            (ctx.owner(ino.slot()), TxOp::AdjustNlink { ino, delta: -1 }),
            (
                ctx.me,
                TxOp::RemoveEntry {
                    dir: parent,
                    name: name.to_string(),
                    ino,
                },
            ),
        ];
        self.local_or_tx(ctx, ops, Reply::Done, false)
    }

    pub fn plan_rmdir(&self, ctx: &Ctx, parent: InodeId, name: &str) -> Result<Plan, Errno> {
        self.dir(parent)?;
        if name == "." {
            return Err(einval("rmdir of \".\""));
        }
        if name == ".." {
            return Err(enotempty("rmdir of \"..\""));
        }
        let (ino, kind) = self.lookup(parent, name)?;
        if kind != FileKind::Dir {
            return Err(enotdir(format!("{name:?} is not a directory")));
        }
        let ops = vec![
            (ctx.owner(ino.slot()), TxOp::RemoveDir { dir: ino }),
            (
                ctx.me,
                TxOp::RemoveEntry {
                    dir: parent,
                    name: name.to_string(),
                    ino,
                },
            ),
        ];
        self.local_or_tx(ctx, ops, Reply::Done, false)
    }

    pub fn plan_link(
        &self,
        ctx: &Ctx,
        ino: InodeId,
        new_parent: InodeId,
        new_name: &str,
    ) -> Result<Plan, Errno> {
        let d = Draft::new(self, ctx.now);
        d.live_dir(new_parent)?;
        check_name(new_name)?;
        if d.entry(new_parent, new_name).is_some() {
            return Err(eexist(format!("{new_name:?} exists in {new_parent}")));
        }
        let name = new_name.to_string();
        if !ctx.is_local(ino) {
            let add = TxOp::AddEntry {
                dir: new_parent,
                name,
                ino: PLACEHOLDER,
                kind: FileKind::File,
                replace: false,
            };
            let ops = vec![
                (ctx.owner(ino.slot()), TxOp::AdjustNlink { ino, delta: 1 }),
                (ctx.me, add),
            ];
            return self.local_or_tx(ctx, ops, Reply::Done, true);
        }
        let kind = self.get(ino)?.attr.kind;
        let ops = vec![
            (ctx.me, TxOp::AdjustNlink { ino, delta: 1 }),
            (
                ctx.me,
                TxOp::AddEntry {
                    dir: new_parent,
                    name,
                    ino,
                    kind,
                    replace: false,
                },
            ),
        ];
        self.local_or_tx(ctx, ops, Reply::Attr(ino), false)
    }

    /// Whether `anc` is `d` or one of its ancestors, walking parent pointers while they are
    /// local. `None` when the walk leaves this manager (the caller walks the rest remotely).
    pub fn local_ancestry(&self, anc: InodeId, mut d: InodeId) -> Result<Option<bool>, Errno> {
        for _ in 0..MAX_DEPTH {
            if d == anc {
                return Ok(Some(true));
            }
            if d == InodeId::ROOT {
                return Ok(Some(false));
            }
            match self.inodes.get(&d) {
                Some(i) => match i.parent {
                    Some(p) => d = p,
                    None => return Ok(Some(false)),
                },
                None => return Ok(None),
            }
        }
        Err(einval("directory tree deeper than the walk bound"))
    }

    /// rename(2). `remote_target` is what `new_parent/new_name` names when `new_parent`
    /// lives on another manager (looked up by the caller); ignored otherwise.
    #[allow(clippy::too_many_arguments)]
    pub fn plan_rename(
        &self,
        ctx: &Ctx,
        parent: InodeId,
        name: &str,
        new_parent: InodeId,
        new_name: &str,
        flags: RenameFlags,
        remote_target: Option<(InodeId, FileKind)>,
    ) -> Result<Plan, Errno> {
        if flags.exchange && flags.noreplace {
            return Err(einval("RENAME_EXCHANGE with RENAME_NOREPLACE"));
        }
        self.dir(parent)?;
        if name == "." || name == ".." {
            return Err(einval("rename of \".\" or \"..\""));
        }
        check_name(new_name)?;
        let (x, xk) = self.lookup(parent, name)?;
        let target = if ctx.is_local(new_parent) {
            let d = Draft::new(self, ctx.now);
            d.live_dir(new_parent)?;
            d.entry(new_parent, new_name)
        } else {
            remote_target
        };
        if let Some((y, _)) = target {
            if y == x {
                return Ok(Plan::Local {
                    records: Vec::new(),
                    reply: Reply::Done,
                });
            }
        }
        if flags.noreplace && target.is_some() {
            return Err(eexist(format!("{new_name:?} exists in {new_parent}")));
        }
        if xk == FileKind::Dir
            && new_parent != parent
            && self.local_ancestry(x, new_parent)? == Some(true)
        {
            return Err(einval("cannot move a directory into its own subtree"));
        }
        let me = ctx.me;
        let owner = |i: InodeId| ctx.owner(i.slot());
        let mut ops: Vec<(NodeId, TxOp)> = Vec::new();
        if flags.exchange {
            let Some((y, yk)) = target else {
                return Err(enoent(format!("{new_name:?} is not in {new_parent}")));
            };
            if yk == FileKind::Dir
                && new_parent != parent
                && self.local_ancestry(y, parent)? == Some(true)
            {
                return Err(einval("cannot move a directory into its own subtree"));
            }
            let nn = new_name.to_string();
            ops.push((
                owner(new_parent),
                TxOp::AddEntry {
                    dir: new_parent,
                    name: nn,
                    ino: x,
                    kind: xk,
                    replace: true,
                },
            ));
            ops.push((
                me,
                TxOp::AddEntry {
                    dir: parent,
                    name: name.to_string(),
                    ino: y,
                    kind: yk,
                    replace: true,
                },
            ));
            if new_parent != parent {
                if xk == FileKind::Dir {
                    ops.push((
                        owner(x),
                        TxOp::SetParent {
                            dir: x,
                            parent: new_parent,
                        },
                    ));
                }
                if yk == FileKind::Dir {
                    ops.push((owner(y), TxOp::SetParent { dir: y, parent }));
                }
            }
            return self.local_or_tx(ctx, ops, Reply::Done, false);
        }
        if let Some((y, yk)) = target {
            match (xk == FileKind::Dir, yk == FileKind::Dir) {
                (true, false) => {
                    return Err(enotdir(format!(
                        "cannot replace non-directory {new_name:?} by a directory"
                    )))
                }
                (false, true) => {
                    return Err(eisdir(format!(
                        "cannot replace directory {new_name:?} by a non-directory"
                    )))
                }
                _ => {}
            }
            if yk == FileKind::Dir {
                ops.push((owner(y), TxOp::RemoveDir { dir: y }));
            }
        }
        let add = TxOp::AddEntry {
            dir: new_parent,
            name: new_name.to_string(),
            ino: x,
            kind: xk,
            replace: target.is_some(),
        };
        ops.push((owner(new_parent), add));
        ops.push((
            me,
            TxOp::RemoveEntry {
                dir: parent,
                name: name.to_string(),
                ino: x,
            },
        ));
        if xk == FileKind::Dir && new_parent != parent {
            ops.push((
                owner(x),
                TxOp::SetParent {
                    dir: x,
                    parent: new_parent,
                },
            ));
        } else if owner(x) == me {
            ops.push((me, TxOp::AdjustNlink { ino: x, delta: 0 }));
        }
        if let Some((y, yk)) = target {
            if yk != FileKind::Dir {
                ops.push((owner(y), TxOp::AdjustNlink { ino: y, delta: -1 }));
            }
        }
        self.local_or_tx(ctx, ops, Reply::Done, false)
    }

    pub fn plan_setattr(
        &self,
        ctx: &Ctx,
        ino: InodeId,
        set: &SetAttrs,
        caller: Caller,
    ) -> Result<Plan, Errno> {
        let _ = caller; // the kernel checked permissions (default_permissions)
        let mut d = Draft::new(self, ctx.now);
        let old = d.attr(ino)?;
        if let Some(size) = set.size {
            match old.kind {
                FileKind::File => {}
                FileKind::Dir => return Err(eisdir(format!("{ino} is a directory"))),
                _ => return Err(einval(format!("{ino} is not a regular file"))),
            }
            if size < old.size || !self.get(ino)?.extents.range(size, u64::MAX).is_empty() {
                d.recs.push(Record::Truncate { ino, size });
            }
        }
        let now = ctx.now;
        let a = d.attr_mut(ino)?;
        if let Some(size) = set.size {
            if size != a.size {
                a.mtime = now;
            }
            a.size = size;
        }
        let chown = set.uid.is_some_and(|u| u != a.uid) || set.gid.is_some_and(|g| g != a.gid);
        if let Some(uid) = set.uid {
            a.uid = uid;
        }
        if let Some(gid) = set.gid {
            a.gid = gid;
        }
        if chown && a.kind != FileKind::Dir {
            a.perm &= !S_ISUID;
            if a.perm & S_IXGRP != 0 {
                a.perm &= !S_ISGID;
            }
        }
        if let Some(perm) = set.perm {
            a.perm = perm & 0o7777;
        }
        if let Some(t) = set.atime {
            a.atime = set_time(t, now);
        }
        if let Some(t) = set.mtime {
            a.mtime = set_time(t, now);
        }
        a.ctime = now;
        Ok(Plan::Local {
            records: d.finish(),
            reply: Reply::Attr(ino),
        })
    }

    /// fallocate(2) (see `ManagerRequest::Fallocate`). A punch is logged as a truncate
    /// at `offset` followed by the extents past the range put back as they are, so that
    /// replay and the live-byte counts (`usage`) see exactly the punched bytes go. The
    /// cost: the record lists every extent past the range (a punch near the start of a
    /// file of many extents logs them all again); a record kind of its own would not.
    pub fn plan_fallocate(
        &self,
        ctx: &Ctx,
        ino: InodeId,
        offset: u64,
        len: u64,
        punch: bool,
        keep_size: bool,
    ) -> Result<Plan, Errno> {
        let mut d = Draft::new(self, ctx.now);
        let old = d.attr(ino)?;
        match old.kind {
            FileKind::File => {}
            FileKind::Dir => return Err(eisdir(format!("{ino} is a directory"))),
            _ => return Err(einval(format!("{ino} is not a regular file"))),
        }
        let end = offset
            .checked_add(len)
            .filter(|_| len > 0)
            .ok_or_else(|| einval(format!("fallocate of {ino}: bad range {offset}+{len}")))?;
        let mut changed = false;
        if punch {
            let map = &self.get(ino)?.extents;
            if !map.range(offset, len).is_empty() {
                let after = map.range(end, u64::MAX - end);
                d.recs.push(Record::Truncate { ino, size: offset });
                if !after.is_empty() {
                    d.recs.push(Record::Extents {
                        ino,
                        extents: after,
                    });
                }
                changed = true;
            }
        }
        let grow = !keep_size && end > old.size;
        if changed || grow {
            let now = ctx.now;
            let a = d.attr_mut(ino)?;
            if grow {
                a.size = end;
            }
            a.mtime = now;
            a.ctime = now;
        }
        Ok(Plan::Local {
            records: d.finish(),
            reply: Reply::Attr(ino),
        })
    }

    pub fn plan_open(&self, ino: InodeId, session: SessionId) -> Result<Plan, Errno> {
        let i = self.get(ino)?;
        let records = if i.sessions.contains(&session) {
            Vec::new()
        } else {
            vec![Record::Open { ino, session }]
        };
        Ok(Plan::Local {
            records,
            reply: Reply::Done,
        })
    }

    pub fn plan_release(&self, ctx: &Ctx, ino: InodeId, session: SessionId) -> Result<Plan, Errno> {
        let Some(i) = self.inode(ino) else {
            return Ok(Plan::Local {
                records: Vec::new(),
                reply: Reply::Done,
            });
        };
        if !i.sessions.contains(&session) {
            return Ok(Plan::Local {
                records: Vec::new(),
                reply: Reply::Done,
            });
        }
        let mut d = Draft::new(self, ctx.now);
        d.recs.push(Record::Release { ino, session });
        let mut left = d.sessions(ino);
        left.remove(&session);
        d.sessions.insert(ino, left.clone());
        if i.attr.nlink == 0 && left.is_empty() {
            d.attr_mut(ino)?;
        }
        Ok(Plan::Local {
            records: d.finish(),
            reply: Reply::Done,
        })
    }

    pub fn plan_setxattr(
        &self,
        ctx: &Ctx,
        ino: InodeId,
        name: &str,
        value: &[u8],
        flags: i32,
    ) -> Result<Plan, Errno> {
        let i = self.get(ino)?;
        if name.is_empty() {
            return Err(einval("empty xattr name"));
        }
        if name.len() > XATTR_NAME_MAX {
            return Err(erange(format!("xattr name of {} bytes", name.len())));
        }
        if value.len() > XATTR_SIZE_MAX {
            return Err(e2big(format!("xattr value of {} bytes", value.len())));
        }
        if flags & !(XATTR_CREATE | XATTR_REPLACE) != 0 || flags == XATTR_CREATE | XATTR_REPLACE {
            return Err(einval(format!("xattr flags {flags}")));
        }
        let exists = i.xattrs.contains_key(name);
        if flags & XATTR_CREATE != 0 && exists {
            return Err(eexist(format!("xattr {name:?} exists")));
        }
        if flags & XATTR_REPLACE != 0 && !exists {
            return Err(enodata(format!("no xattr {name:?}")));
        }
        let mut d = Draft::new(self, ctx.now);
        d.recs.push(Record::Xattr {
            ino,
            name: name.to_string(),
            value: Some(value.to_vec()),
        });
        d.touch_times(ino, false)?;
        Ok(Plan::Local {
            records: d.finish(),
            reply: Reply::Done,
        })
    }

    pub fn plan_removexattr(&self, ctx: &Ctx, ino: InodeId, name: &str) -> Result<Plan, Errno> {
        if !self.get(ino)?.xattrs.contains_key(name) {
            return Err(enodata(format!("no xattr {name:?}")));
        }
        let mut d = Draft::new(self, ctx.now);
        d.recs.push(Record::Xattr {
            ino,
            name: name.to_string(),
            value: None,
        });
        d.touch_times(ino, false)?;
        Ok(Plan::Local {
            records: d.finish(),
            reply: Reply::Done,
        })
    }

    pub fn getxattr(&self, ino: InodeId, name: &str) -> Result<Vec<u8>, Errno> {
        self.get(ino)?
            .xattrs
            .get(name)
            .cloned()
            .ok_or_else(|| enodata(format!("no xattr {name:?}")))
    }

    pub fn listxattr(&self, ino: InodeId) -> Result<Vec<String>, Errno> {
        Ok(self.get(ino)?.xattrs.keys().cloned().collect())
    }

    pub fn readlink(&self, ino: InodeId) -> Result<String, Errno> {
        self.get(ino)?
            .symlink
            .clone()
            .ok_or_else(|| einval(format!("{ino} is not a symlink")))
    }

    pub fn get_extents(&self, ino: InodeId, offset: u64, len: u64) -> Result<Vec<Extent>, Errno> {
        let i = self.get(ino)?;
        if i.is_dir() {
            return Err(eisdir(format!("{ino} is a directory")));
        }
        Ok(i.extents.range(offset, len))
    }

    pub fn plan_commit_writes(&self, ctx: &Ctx, writes: &[InodeWrite]) -> Result<Plan, Errno> {
        let mut d = Draft::new(self, ctx.now);
        for w in writes {
            match d.attr(w.ino)?.kind {
                FileKind::File => {}
                FileKind::Dir => return Err(eisdir(format!("{} is a directory", w.ino))),
                _ => return Err(einval(format!("{} is not a regular file", w.ino))),
            }
            if let Err((p, floor)) = self.usage().check(w.extents.iter().map(|e| &e.ptr)) {
                // The reclaimer may have deleted that segment (see `usage`): the client
                // keeps the data and writes it again into a new segment.
                return Err(Errno::new(code::EIO, format!(
                    "extent {p} of {} is below the reclaim floor {floor} of its log: write the data again",
                    w.ino
                )));
            }
            if w.extents
                .iter()
                .any(|e| e.offset.checked_add(e.ptr.len as u64).is_none())
            {
                return Err(Errno::new(
                    code::EFBIG,
                    "extent past the largest file offset",
                ));
            }
            d.recs.push(Record::Extents {
                ino: w.ino,
                extents: w.extents.clone(),
            });
            let a = d.attr_mut(w.ino)?;
            a.size = w.size;
            a.mtime = w.mtime;
            a.ctime = w.mtime;
        }
        Ok(Plan::Local {
            records: d.finish(),
            reply: Reply::Attrs(writes.iter().map(|w| w.ino).collect()),
        })
    }

    /// Participant: validates and applies `op` of `tx`; the records include `TxApplied`.
    pub fn plan_tx_apply(
        &self,
        ctx: &Ctx,
        tx: TxId,
        op: &TxOp,
    ) -> Result<(Vec<Record>, Option<Attr>), Errno> {
        let (mut records, result) = self.run_strict(ctx.now, std::slice::from_ref(op))?;
        records.push(Record::TxApplied {
            tx,
            op: op.clone(),
            result: result.clone(),
        });
        Ok((records, result))
    }

    /// Coordinator: the records that finish `intent` once every remote op is applied:
    /// its local ops (applied leniently: an op that no longer fits is skipped) and `TxDone`.
    pub fn plan_tx_done(
        &self,
        now: Timestamp,
        intent: &TxIntent,
        result: Option<&Attr>,
    ) -> Vec<Record> {
        let mut d = Draft::new(self, now);
        for op in &intent.local {
            let mut op = op.clone();
            if intent.fill_from_result {
                if let TxOp::AddEntry { ino, kind, .. } = &mut op {
                    if *ino == PLACEHOLDER {
                        let Some(r) = result else {
                            tracing::warn!(tx = %intent.tx, "no remote result to fill the entry from; entry skipped");
                            continue;
                        };
                        *ino = r.ino;
                        *kind = r.kind;
                    }
                }
            }
            if let Err(e) = d.tx_op(&op) {
                tracing::warn!(tx = %intent.tx, ?op, "local part of transaction skipped: {e}");
            }
        }
        let mut recs = d.finish();
        recs.push(Record::TxDone { tx: intent.tx });
        recs
    }
}
