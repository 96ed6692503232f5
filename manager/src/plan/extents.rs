//! Extent maps: reading a range of a file's extents, planning the commit of written
//! extents (`CommitWrites`: sizes, times, the reclaim floor check, the extents'
//! end-to-end checksums) and extent sharing (`CopyRange`: copy_file_range without moving
//! data, under the same floor check).
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

    /// copy_file_range as extent sharing (see `ManagerRequest::CopyRange`): the plan and the
    /// bytes copied. The destination range gets the source's extents (shifted) and its
    /// holes; nothing else of the destination changes but its size (grown to the copy's
    /// end) and times. EXDEV when the data must be copied instead: the source lives on
    /// another manager, or an extent of it is below its log's reclaim floor (its segment
    /// may be deleted: a new reference must not appear there, as for a commit).
    #[allow(clippy::too_many_arguments)]
    pub fn plan_copy_range(
        &self,
        ctx: &Ctx,
        src: InodeId,
        src_offset: u64,
        dst: InodeId,
        dst_offset: u64,
        len: u64,
    ) -> Result<(Plan, u64), Errno> {
        if !ctx.is_local(src) {
            return Err(Errno::new(
                code::EXDEV,
                format!("{src} lives on another manager than {dst}: copy the data"),
            ));
        }
        let mut d = Draft::new(self, ctx.now);
        let s = self.get(src)?;
        for a in [&s.attr, &d.attr(dst)?] {
            match a.kind {
                FileKind::File => {}
                FileKind::Dir => return Err(eisdir(format!("{} is a directory", a.ino))),
                _ => return Err(einval(format!("{} is not a regular file", a.ino))),
            }
        }
        let n = len.min(s.attr.size.saturating_sub(src_offset));
        let nothing = Plan::Local {
            records: Vec::new(),
            reply: Reply::Attr(dst),
        };
        if n == 0 {
            return Ok((nothing, 0));
        }
        let end = dst_offset
            .checked_add(n)
            .filter(|e| src_offset.checked_add(n).is_some() && *e < i64::MAX as u64)
            .ok_or_else(|| Errno::new(code::EFBIG, "copy past the largest file offset"))?;
        if src == dst && src_offset < end && dst_offset < src_offset + n {
            return Err(einval(format!(
                "copy within {src} from {src_offset} to {dst_offset} overlaps itself"
            )));
        }
        let shared: Vec<Extent> = s
            .extents
            .range(src_offset, n)
            .into_iter()
            .map(|e| Extent {
                offset: e.offset - src_offset + dst_offset,
                ptr: e.ptr,
            })
            .collect();
        if let Err((p, floor)) = self.usage().check(shared.iter().map(|e| &e.ptr)) {
            return Err(Errno::new(
                code::EXDEV,
                format!(
                    "extent {p} of {src} is below the reclaim floor {floor} of its log: copy the data"
                ),
            ));
        }
        // The destination range is emptied (the source's holes stay holes), the rest of
        // the destination kept: a truncate to the range's start, then what follows it.
        let map = &self.get(dst)?.extents;
        if !map.range(dst_offset, u64::MAX - dst_offset).is_empty() {
            let after = map.range(end, u64::MAX - end);
            d.recs.push(Record::Truncate {
                ino: dst,
                size: dst_offset,
            });
            if !after.is_empty() {
                d.recs.push(Record::Extents {
                    ino: dst,
                    extents: after,
                });
            }
        }
        if !shared.is_empty() {
            d.recs.push(Record::Extents {
                ino: dst,
                extents: shared,
            });
        }
        let now = ctx.now;
        let a = d.attr_mut(dst)?;
        a.size = a.size.max(end);
        a.mtime = now;
        a.ctime = now;
        Ok((
            Plan::Local {
                records: d.finish(),
                reply: Reply::Attr(dst),
            },
            n,
        ))
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
