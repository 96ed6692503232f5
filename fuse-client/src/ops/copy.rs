//! copy_file_range(2): shares log extents when the source and destination files have the
//! same manager (`ManagerRequest::CopyRange`: the destination's extent map gets references
//! to the source's log extents, no data moves), else copies the data through this client.
//!
//! Both files' buffered writes are committed first (under their commit locks, in inode
//! order): the share must see the source's latest data, and older writes of the
//! destination must not land over the copy later; the destination's commits not yet
//! durable are synced first, as for a hole punch, so that resending them after a manager
//! restart cannot undo the copy. The manager answers EXDEV when it cannot share (the
//! source lives on another manager, or an extent of it is below its log's reclaim floor):
//! then the bytes are read and written like any write. Must not hold the state lock across
//! an await.

use crate::client::Client;
use crate::data::writeback::InodeCommit;
use crate::error::FsError;
use crate::meta::{self as remote, Target};
use proto::ids::InodeId;
use proto::msg::{ManagerRequest, ManagerResponse};

/// Bytes read and written per round of a data copy.
const CHUNK: u32 = 1 << 20;

impl Client {
    /// Copies `len` bytes of `src` at `src_off` to `dst` at `dst_off` (fewer at the
    /// source's end of file): the bytes copied.
    pub async fn copy_file_range(
        &self,
        src: InodeId,
        src_off: u64,
        dst: InodeId,
        dst_off: u64,
        len: u64,
    ) -> Result<u64, FsError> {
        if len == 0 {
            return Ok(0);
        }
        let max = crate::ops::io::MAX_FILE_SIZE;
        if src_off.checked_add(len).is_none_or(|e| e > max)
            || dst_off.checked_add(len).is_none_or(|e| e > max)
        {
            return Err(FsError::EFBIG);
        }
        if src == dst && src_off < dst_off + len && dst_off < src_off + len {
            return Err(FsError::EINVAL);
        }
        let mut inos = vec![src, dst];
        inos.sort_unstable();
        inos.dedup();
        let mut held = Vec::with_capacity(inos.len());
        // In inode order, like every flush of several inodes.
        for ino in &inos {
            held.push((*ino, self.writeback.commit_lock(*ino).await));
        }
        if self.writeback.lock_unsynced().has(dst) {
            if let Err(e) = self.writeback.sync_node(self.meta.owner(dst)).await {
                tracing::debug!(inode = %dst, "sync before a shared copy failed: {e}");
            }
        }
        let r = self
            .share_held(src, src_off, dst, dst_off, len, &held)
            .await;
        drop(held);
        self.writeback.forget_commit_locks(&inos);
        match r {
            Err(e) if e == FsError::EXDEV => {
                tracing::debug!(%src, %dst, "extents not shared: copying {len} bytes of data");
                self.copy_data(src, src_off, dst, dst_off, len).await
            }
            r => r,
        }
    }

    async fn share_held(
        &self,
        src: InodeId,
        src_offset: u64,
        dst: InodeId,
        dst_offset: u64,
        len: u64,
        held: &[(InodeId, InodeCommit)],
    ) -> Result<u64, FsError> {
        if self.meta.owner(src) != self.meta.owner(dst) {
            return Err(FsError::EXDEV);
        }
        self.flush_held(held, false).await?;
        let req = ManagerRequest::CopyRange {
            src,
            src_offset,
            dst,
            dst_offset,
            len,
        };
        let _change = self
            .attrs
            .begin_change(crate::data::attrs::Touches::these(vec![dst]));
        let (n, a) = match self.meta.call(Target::Route, req).await? {
            ManagerResponse::Copied { bytes, attr } => (bytes, attr),
            other => return Err(remote::unexpected("CopyRange", &other)),
        };
        self.attrs.keep_newest(a.clone());
        let mut st = self.lock_state();
        // Writes buffered after the flush above stay: they are newer than the copy.
        st.grown_to(dst, a.size);
        // The manager does not call the requester back: drop our clean copies.
        st.forget_clean_from(dst, dst_offset);
        Ok(n)
    }

    /// The copy by reading and writing the bytes (the source's holes are written as
    /// zeros).
    async fn copy_data(
        &self,
        src: InodeId,
        src_off: u64,
        dst: InodeId,
        dst_off: u64,
        len: u64,
    ) -> Result<u64, FsError> {
        let mut done = 0u64;
        while done < len {
            let want = (len - done).min(CHUNK as u64) as u32;
            let data = self.read(src, src_off + done, want).await?;
            if data.is_empty() {
                break;
            }
            let mut at = 0usize;
            while at < data.len() {
                let (_, n) = self
                    .write_at(dst, dst_off + done + at as u64, &data[at..], false)
                    .await?;
                if n == 0 {
                    return Err(FsError::EIO);
                }
                at += n as usize;
            }
            done += data.len() as u64;
        }
        Ok(done)
    }
}
