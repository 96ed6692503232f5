//! Planning of the namespace: the root, create (and mknod, mkdir, symlink), unlink, rmdir,
//! link, rename (with the local part of the ancestry check) and readlink.
//! Must not: mutate the state, do I/O, or read clocks.

use super::draft::Draft;
use super::{check_name, dir_slot, Ctx, Plan, Reply, MAX_DEPTH, PLACEHOLDER, S_ISGID};
use crate::error::{eexist, einval, eisdir, enoent, enotdir, enotempty, Errno};
use crate::record::Record;
use crate::state::MetaState;
use proto::ids::{InodeId, NodeId, SessionId};
use proto::msg::{Attr, Caller, FileKind, NewNode, RenameFlags, Timestamp, TxOp};

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
            reply: Reply::Created {
                ino: attr.ino,
                parent,
            },
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
        self.local_or_tx(ctx, ops, Reply::Removed { parent }, false)
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
        self.local_or_tx(ctx, ops, Reply::Removed { parent }, false)
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

    pub fn readlink(&self, ino: InodeId) -> Result<String, Errno> {
        self.get(ino)?
            .symlink
            .clone()
            .ok_or_else(|| einval(format!("{ino} is not a symlink")))
    }
}
