//! Extent maps: reading a range of a file's extents and planning the commit of written
//! extents (`CommitWrites`: sizes, times, the reclaim floor check, the extents'
//! end-to-end checksums).
//! Must not: mutate the state, do I/O, or read clocks.

use super::draft::Draft;
use super::{Ctx, Plan, Reply};
use crate::error::{code, einval, eisdir, Errno};
use crate::record::Record;
use crate::state::MetaState;
use crate::usage::SegKey;
use proto::ids::InodeId;
use proto::msg::{Extent, FileKind, InodeWrite};
use std::collections::BTreeSet;

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
        let mut summed = BTreeSet::new();
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
            d.recs.extend(self.sums_records(w, &mut summed)?);
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

    /// `Record::Sums` for the checksums of `w` that name a segment its extents point into
    /// and that this manager (or an earlier write of the batch, `summed`) does not hold
    /// yet; checksums that do not fit their segment are refused (EINVAL).
    fn sums_records(
        &self,
        w: &InodeWrite,
        summed: &mut BTreeSet<(SegKey, u32)>,
    ) -> Result<Vec<Record>, Errno> {
        let mut out = Vec::new();
        for s in &w.sums {
            let key = (s.log, s.segment);
            let Some(e) = w
                .extents
                .iter()
                .find(|e| (e.ptr.seg.log, e.ptr.seg.segment) == key)
            else {
                continue;
            };
            let chunks = (e.ptr.seg.len as u64).div_ceil(proto::chunksum::CHUNK as u64);
            if s.seg_len != e.ptr.seg.len || s.end() as u64 > chunks {
                return Err(einval(format!(
                    "checksums of {}/{} do not fit the segment's {} bytes",
                    s.log, s.segment, e.ptr.seg.len
                )));
            }
            let held = self.sums().covering(&key, s.first, s.end()).is_some();
            if !held && summed.insert((key, s.first)) {
                out.push(Record::Sums(s.clone()));
            }
        }
        Ok(out)
    }
}
