//! Attribute operations over the attribute cache (`data::attrs`): answers noted there
//! (`note_attr`, which also drops stale clean data), with this client's uncommitted size
//! and mtime laid over them (`overlay`, `local_view`); getattr's committed size under a lease; setattr (chmod,
//! chown, utimes, truncate), which writes the inode's dirty data first; fallocate (size
//! growth and hole punching at the manager, the same way).
//! Must not hold the data lock across an await.

use crate::client::Client;
use crate::data::attrs::Touches;
use crate::data::dirty::FileWrites;
use crate::data::writeback::InodeCommit;
use crate::error::FsError;
use crate::lease::HeldLease;
use crate::meta::{self as remote, Target};
use proto::ids::InodeId;
use proto::msg::{Attr, Caller, FileKind, ManagerRequest, ManagerResponse, SetAttrs};

/// Block size reported by stat and statfs.
pub const BLKSIZE: u32 = 4096;

/// The manager's attributes overridden by what this client has not committed yet.
pub fn overlay(mut attr: Attr, local: Option<&FileWrites>) -> Attr {
    if let Some(w) = local {
        attr.size = w.size;
        if w.mtime > attr.mtime {
            attr.mtime = w.mtime;
            attr.ctime = attr.ctime.max(w.mtime);
        }
        // Count pending bytes too, so that `du` does not show 0 for a fresh file.
        attr.blocks_bytes = attr
            .blocks_bytes
            .max(w.size.min(attr.blocks_bytes + w.bytes()));
    }
    attr
}

/// The kind named by the type bits of a mode (mknod), if it is one we store.
pub fn kind_of_mode(mode: u32) -> Option<FileKind> {
    Some(match mode & libc::S_IFMT {
        libc::S_IFREG => FileKind::File,
        libc::S_IFDIR => FileKind::Dir,
        libc::S_IFLNK => FileKind::Symlink,
        libc::S_IFIFO => FileKind::Fifo,
        libc::S_IFSOCK => FileKind::Socket,
        libc::S_IFCHR => FileKind::CharDev,
        libc::S_IFBLK => FileKind::BlockDev,
        _ => return None,
    })
}

impl Client {
    /// Records attributes from a manager. A new version of data we cache (changed by
    /// another client, or by us in a way we did not apply locally) drops our clean copies.
    /// Returns the freshest attributes known: an answer overtaken by a newer one already
    /// seen (a commit's answer arriving before an earlier getattr's) is not used.
    /// (The rules are `AttrCache::note`'s: one lookup of the cached version, then the
    /// own-change floor.)
    pub(crate) fn note_attr(&self, attr: &Attr) -> Attr {
        let noted = self.attrs.note(attr);
        if noted.changed {
            let mut st = self.lock_state();
            if st.buffered(attr.ino).is_none() {
                st.forget_clean(attr.ino);
            }
            drop(st);
            self.no_caps.forget(attr.ino);
        }
        noted.attr
    }

    /// The manager's attributes with local uncommitted state laid over them. `attr` may
    /// predate a commit of ours that retired the local writes while it was in flight; the
    /// committer records its newer answer first, so the newest cached version is used.
    pub(crate) fn local_view(&self, attr: Attr) -> Attr {
        let st = self.lock_state();
        let ino = attr.ino;
        let attr = self.attrs.newest(attr);
        let out = overlay(attr, st.buffered(ino));
        tracing::debug!(target: "shoal_attrs", inode = %ino, version = out.version, size = out.size, local = st.buffered(ino).map(|w| w.size), "local view");
        out
    }

    /// The committed size as last seen under `held` (asks the manager if unknown, or
    /// when the lease is not held: then nothing cached may be used).
    pub(crate) async fn committed_size(
        &self,
        held: Option<&HeldLease>,
        ino: InodeId,
    ) -> Result<u64, FsError> {
        if let (Some(_), Some(a)) = (held, self.attrs.get(ino)) {
            return Ok(a.size);
        }
        let a = self.manager_attr(ManagerRequest::GetAttr { ino }).await?;
        Ok(a.size)
    }

    /// Before a write by a process without CAP_FSETID (the kernel's
    /// FUSE_WRITE_KILL_SUIDGID, which direct-I/O writes carry instead of a setattr):
    /// clears set-user-ID, and set-group-ID with group execute, at the manager (which
    /// allows any writer exactly this mode change). Nothing to do, and no request, when
    /// the cached attributes show no such bit.
    pub async fn kill_priv(&self, ino: InodeId) -> Result<(), FsError> {
        const S_ISUID: u16 = 0o4000;
        const S_ISGID: u16 = 0o2000;
        let cached = self.attrs.get(ino).map(|a| a.perm);
        let perm = match cached {
            Some(p) => p,
            None => self.getattr(ino).await?.perm,
        };
        let mut cleared = perm & !S_ISUID;
        if cleared & 0o010 != 0 {
            cleared &= !S_ISGID;
        }
        if cleared == perm {
            return Ok(());
        }
        let caller = crate::credentials::current()
            .map(|c| c.caller())
            .unwrap_or(Caller { uid: 0, gid: 0 });
        let set = SetAttrs {
            perm: Some(cleared),
            ..Default::default()
        };
        self.setattr(ino, set, caller).await.map(|_| ())
    }

    /// chmod/chown/utimes/truncate. A size or mtime change first writes this inode's dirty
    /// data (so that neither a later flush of older writes nor their write time overrides
    /// it), then changes it at the manager, then locally (holding the inode's commit lock
    /// throughout, so no flush of it interleaves; flushes of other inodes go on).
    pub async fn setattr(
        &self,
        ino: InodeId,
        set: SetAttrs,
        caller: Caller,
    ) -> Result<Attr, FsError> {
        if set.size.is_none() && set.mtime.is_none() {
            let a = self
                .attr_call(ManagerRequest::SetAttr { ino, set, caller })
                .await?;
            return Ok(self.local_view(a));
        }
        let held = [(ino, self.writeback.commit_lock(ino).await)];
        // Commits not yet durable go first, durably: a truncate that survives a crash must
        // not be undone by sending them again afterwards.
        if self.writeback.lock_unsynced().has(ino) {
            if let Err(e) = self.writeback.sync_node(self.meta.owner(ino)).await {
                tracing::debug!(inode = %ino, "sync before a truncate failed: {e}");
            }
        }
        let r = self.setattr_held(ino, set, caller, &held).await;
        drop(held);
        self.writeback.forget_commit_locks(&[ino]);
        r
    }

    /// fallocate(2). Mode 0 grows the size to `offset + len` if smaller and KEEP_SIZE
    /// alone does nothing: a log-structured store writes every byte to a new place, so
    /// there is nothing to preallocate (and no reservation: a later write may still find
    /// the cluster full). PUNCH_HOLE|KEEP_SIZE and ZERO_RANGE (with or without KEEP_SIZE)
    /// remove the range's extents at the manager, which frees their bytes for the cleaner;
    /// the range then reads as zeros. Like a truncate, this inode's dirty data is written
    /// first under its commit lock. Other modes: EOPNOTSUPP.
    pub async fn fallocate(
        &self,
        ino: InodeId,
        offset: u64,
        len: u64,
        mode: i32,
    ) -> Result<(), FsError> {
        let keep_size = mode & libc::FALLOC_FL_KEEP_SIZE != 0;
        let punch = match mode & !libc::FALLOC_FL_KEEP_SIZE {
            0 => false,
            libc::FALLOC_FL_PUNCH_HOLE if keep_size => true,
            libc::FALLOC_FL_ZERO_RANGE => true,
            _ => return Err(FsError::EOPNOTSUPP),
        };
        if len == 0 {
            return Err(FsError::EINVAL);
        }
        let end = offset.checked_add(len).ok_or(FsError::EFBIG)?;
        if end > crate::ops::io::MAX_FILE_SIZE {
            return Err(FsError::EFBIG);
        }
        if !punch && keep_size {
            return Ok(());
        }
        let held = [(ino, self.writeback.commit_lock(ino).await)];
        // As for a truncate: commits not yet durable go first, so that sending them again
        // after a manager restart cannot undo a punch.
        if punch && self.writeback.lock_unsynced().has(ino) {
            if let Err(e) = self.writeback.sync_node(self.meta.owner(ino)).await {
                tracing::debug!(inode = %ino, "sync before a hole punch failed: {e}");
            }
        }
        let r = self
            .fallocate_held(ino, offset, len, punch, keep_size, &held)
            .await;
        drop(held);
        self.writeback.forget_commit_locks(&[ino]);
        r
    }

    async fn fallocate_held(
        &self,
        ino: InodeId,
        offset: u64,
        len: u64,
        punch: bool,
        keep_size: bool,
        held: &[(InodeId, InodeCommit)],
    ) -> Result<(), FsError> {
        self.flush_held(held, false).await?;
        let req = ManagerRequest::Fallocate {
            ino,
            offset,
            len,
            punch,
            keep_size,
        };
        let _change = self.attrs.begin_change(Touches::these(vec![ino]));
        let a = match self.meta.call(Target::Route, req).await? {
            ManagerResponse::Attr(a) => a,
            other => return Err(remote::unexpected("Fallocate", &other)),
        };
        self.attrs.keep_newest(a.clone());
        let mut st = self.lock_state();
        // Writes buffered after the flush above stay: they are newer than the punch.
        st.grown_to(ino, a.size);
        if punch {
            // The manager does not call the requester back: drop our clean copies.
            st.forget_clean_from(ino, offset);
        }
        Ok(())
    }

    async fn setattr_held(
        &self,
        ino: InodeId,
        set: SetAttrs,
        caller: Caller,
        held: &[(InodeId, InodeCommit)],
    ) -> Result<Attr, FsError> {
        let size = set.size;
        self.flush_held(held, false).await?;
        let req = ManagerRequest::SetAttr { ino, set, caller };
        let _change = self.attrs.begin_change(Touches::these(vec![ino]));
        let a = match self.meta.call(Target::Route, req).await? {
            ManagerResponse::Attr(a) => a,
            other => return Err(remote::unexpected("SetAttr", &other)),
        };
        // Recorded before the local writes are retired (see `local_view`).
        let a = self.attrs.keep_newest(a);
        {
            // Writes buffered after the flush above keep their own (later) times.
            let mut st = self.lock_state();
            match size {
                Some(size) => st.truncated(ino, size),
                None => st.retire_if_clean(ino),
            }
        }
        self.writeback.space_freed();
        Ok(self.local_view(a))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::msg::Timestamp;

    fn attr(size: u64, mtime: i64) -> Attr {
        let t = Timestamp {
            secs: mtime,
            nanos: 0,
        };
        Attr {
            ino: InodeId(77),
            kind: FileKind::File,
            perm: 0o100644,
            nlink: 1,
            uid: 1,
            gid: 2,
            size,
            blocks_bytes: size,
            atime: t,
            mtime: t,
            ctime: t,
            rdev: 0,
            version: 1,
        }
    }

    #[test]
    fn local_size_and_mtime_override_the_manager() {
        let mut w = FileWrites::new(10);
        w.write(
            100,
            &[1u8; 50],
            Timestamp {
                secs: 2000,
                nanos: 5,
            },
        );
        let a = overlay(attr(10, 1000), Some(&w));
        assert_eq!(a.size, 150);
        assert_eq!(
            a.mtime,
            Timestamp {
                secs: 2000,
                nanos: 5
            }
        );
        assert_eq!(
            a.ctime,
            Timestamp {
                secs: 2000,
                nanos: 5
            }
        );
        assert_eq!(a.blocks_bytes, 60);
    }

    #[test]
    fn local_truncate_shrinks_and_no_local_state_changes_nothing() {
        let mut w = FileWrites::new(1000);
        w.truncate(3);
        w.mtime = Timestamp { secs: 1, nanos: 0 };
        let a = overlay(attr(1000, 1000), Some(&w));
        assert_eq!(a.size, 3);
        assert_eq!(a.mtime.secs, 1000, "an older local mtime does not win");
        assert_eq!(overlay(attr(5, 9), None), attr(5, 9));
    }
}
