//! Extent maps: reading a range of a file's extents and planning the commit of written
//! extents (`CommitWrites`: sizes, times, the reclaim floor check).
//! Must not: mutate the state, do I/O, or read clocks.

use super::draft::Draft;
use super::{Ctx, Plan, Reply};
use crate::error::{code, einval, eisdir, Errno};
use crate::record::Record;
use crate::state::MetaState;
use proto::ids::InodeId;
use proto::msg::{Extent, FileKind, InodeWrite};

impl MetaState {
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
}
