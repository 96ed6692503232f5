//! The scratch overlay every plan is built on: the plan's view of attributes, entries and
//! sessions as its ops change them, the transaction ops applied to it (`tx_op`, validating
//! first), and the records it comes to (`finish`).
//! Must not: mutate the state, do I/O, or read clocks.

use super::{check_name, PATH_MAX};
use crate::error::{eexist, einval, enametoolong, enoent, enotdir, enotempty, eperm, Errno};
use crate::record::Record;
use crate::state::MetaState;
use proto::ids::{InodeId, SessionId, SlotId, SLOT_COUNT};
use proto::msg::{Attr, FileKind, NewNode, Timestamp, TxOp};
use std::collections::{BTreeMap, BTreeSet};

/// A scratch overlay over the state: the plan's view of attrs, entries and sessions as
/// its ops change them; `finish` turns it into records.
pub(super) struct Draft<'a> {
    pub(super) st: &'a MetaState,
    pub(super) now: Timestamp,
    pub(super) new: BTreeMap<InodeId, (Attr, Option<InodeId>, Option<String>)>,
    pub(super) attrs: BTreeMap<InodeId, Attr>,
    pub(super) entries: BTreeMap<(InodeId, String), Option<(InodeId, FileKind)>>,
    pub(super) sessions: BTreeMap<InodeId, BTreeSet<SessionId>>,
    pub(super) next_seq: BTreeMap<u16, u64>,
    pub(super) recs: Vec<Record>,
    /// The inode number the next `CreateInode` uses (a prepared create, reserved then).
    pub(super) fixed_ino: Option<InodeId>,
}

impl<'a> Draft<'a> {
    pub(super) fn new(st: &'a MetaState, now: Timestamp) -> Draft<'a> {
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

    pub(super) fn attr(&self, ino: InodeId) -> Result<Attr, Errno> {
        if let Some((a, _, _)) = self.new.get(&ino) {
            return Ok(a.clone());
        }
        if let Some(a) = self.attrs.get(&ino) {
            return Ok(a.clone());
        }
        Ok(self.st.get(ino)?.attr.clone())
    }

    /// The attributes of `ino`, to change (the version is bumped once per plan).
    pub(super) fn attr_mut(&mut self, ino: InodeId) -> Result<&mut Attr, Errno> {
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
    pub(super) fn live_dir(&self, dir: InodeId) -> Result<Attr, Errno> {
        let a = self.attr(dir)?;
        if a.kind != FileKind::Dir {
            return Err(enotdir(format!("{dir} is not a directory")));
        }
        if a.nlink == 0 {
            return Err(enoent(format!("directory {dir} was removed")));
        }
        Ok(a)
    }

    pub(super) fn entry(&self, dir: InodeId, name: &str) -> Option<(InodeId, FileKind)> {
        if let Some(e) = self.entries.get(&(dir, name.to_string())) {
            return *e;
        }
        self.st.inode(dir).and_then(|d| d.entries.get(name))
    }

    pub(super) fn set_entry(
        &mut self,
        dir: InodeId,
        name: &str,
        target: Option<(InodeId, FileKind)>,
    ) {
        self.entries.insert((dir, name.to_string()), target);
        self.recs.push(Record::Entry {
            dir,
            name: name.to_string(),
            target,
        });
    }

    pub(super) fn dir_is_empty(&self, dir: InodeId) -> bool {
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

    pub(super) fn sessions(&self, ino: InodeId) -> BTreeSet<SessionId> {
        match self.sessions.get(&ino) {
            Some(s) => s.clone(),
            None => self
                .st
                .inode(ino)
                .map(|i| i.sessions.clone())
                .unwrap_or_default(),
        }
    }

    pub(super) fn touch_times(&mut self, ino: InodeId, mtime: bool) -> Result<(), Errno> {
        let now = self.now;
        let a = self.attr_mut(ino)?;
        a.ctime = now;
        if mtime {
            a.mtime = now;
        }
        Ok(())
    }

    /// Applies one transaction op to the draft, validating first: on error nothing changed.
    pub(super) fn tx_op(&mut self, op: &TxOp) -> Result<Option<Attr>, Errno> {
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
    pub(super) fn finish(self) -> Vec<Record> {
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
