//! Planning of attribute changes: setattr (chmod, chown, utimes, truncate) and
//! fallocate (growing, punching holes).
//! Must not: mutate the state, do I/O, or read clocks.

use super::draft::Draft;
use super::{Ctx, Plan, Reply, S_ISGID, S_ISUID, S_IXGRP};
use crate::error::{einval, eisdir, Errno};
use crate::record::Record;
use crate::state::MetaState;
use proto::ids::InodeId;
use proto::msg::{Caller, FileKind, SetAttrs, SetTime, Timestamp};

fn set_time(t: SetTime, now: Timestamp) -> Timestamp {
    match t {
        SetTime::Now => now,
        SetTime::At(t) => t,
    }
}

impl MetaState {
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
}
