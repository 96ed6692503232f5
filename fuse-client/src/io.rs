//! File I/O of the client core: open/release, read, write, flush, fsync.
//!
//! Reads overlay dirty data on clean blocks (block cache, else extents read from the log);
//! writes only buffer (the write-back module commits). Opens give close-to-open
//! consistency: the attributes are fetched again and a new version drops our clean copies.
//! Must not hold the state lock across an await.

use crate::cache::BLOCK;
use crate::client::Client;
use crate::dirty::{covers_all, overlay_ranges, FileWrites};
use crate::error::FsError;
use crate::extents::{map_range, windows, WINDOW};
use crate::lease::HeldLease;
use crate::remote::{self, Target};
use crate::writeback::Which;
use bytes::Bytes;
use futures::StreamExt;
use proto::ids::InodeId;
use proto::msg::{Extent, ManagerRequest, ManagerResponse, Timestamp};
use std::sync::Arc;

/// Largest file offset we accept (like ext4's limit, well below i64::MAX).
pub const MAX_FILE_SIZE: u64 = 1 << 50;
/// Concurrent log reads of one read request.
const READ_PARALLEL: usize = 8;
/// Rounds of (acquire the write lease, buffer) one write tries before it gives up (with
/// EIO), and the longest it keeps trying: writers that keep taking the lease from each other
/// back off a random few milliseconds per lost round, so that one of them wins.
const WRITE_ROUNDS: usize = 400;
const WRITE_PATIENCE: std::time::Duration = std::time::Duration::from_secs(30);

impl Client {
    /// Whether the kernel may keep `ino`'s page cache across opens: only when its manager
    /// grants leases and we can tell the kernel to drop it on a callback.
    pub fn keep_cache(&self, ino: InodeId) -> bool {
        self.lease_epoch(ino).is_some() && self.notifier().is_some()
    }

    /// Opens `ino`: refreshes its attributes and registers the open (first local open).
    ///
    /// The kernel reaches `ino` through a cached name, which may be one a callback removed
    /// or replaced while the kernel's entry invalidation is still blocked (see
    /// `kernel_invalidate`) or whose lookup answer was in flight when the invalidation ran.
    /// So an inode that no longer exists, or has no name left, answers ESTALE: the VFS then
    /// looks the path up again (LOOKUP_REVAL, which asks us) and opens what the name is
    /// now, instead of the old file (a stale read, or a write nobody will ever see) or
    /// ENOENT. The price: reopening a deleted file through /proc/PID/fd fails with ESTALE.
    pub async fn open(&self, ino: InodeId) -> Result<u64, FsError> {
        let gone = |e: FsError| {
            if e == FsError::ENOENT {
                FsError::ESTALE
            } else {
                e
            }
        };
        let a = self.getattr(ino).await.map_err(gone)?;
        if a.nlink == 0 {
            tracing::debug!(inode = %ino, pending = self.entry_invalidations_pending(), "open of an unlinked inode through a cached name: ESTALE");
            return Err(FsError::ESTALE);
        }
        self.open_ref(ino).await.map_err(gone)?;
        Ok(self.next_fh())
    }

    /// The last release of a handle of `ino` (the kernel sends one per open).
    pub async fn release(&self, ino: InodeId) -> Result<(), FsError> {
        self.close_ref(ino).await
    }

    /// close(2): reports a write error found since the last flush/fsync. Data stays
    /// buffered (write-back); `fsync` makes it durable.
    pub async fn flush(&self, ino: InodeId) -> Result<(), FsError> {
        match self.errors.remove(&ino) {
            Some((_, e)) => Err(e),
            None => Ok(()),
        }
    }

    /// fsync(2): writes and durably commits `ino`'s dirty data; with nothing to write, makes
    /// the inode's manager durable.
    pub async fn fsync(&self, ino: InodeId) -> Result<(), FsError> {
        let wrote = self.flush_inodes(Which::One(ino), true).await;
        if let Some((_, e)) = self.errors.remove(&ino) {
            return Err(e);
        }
        if !wrote? {
            self.sync_owner(ino).await?;
        }
        // The sync may have found commits a manager restart lost.
        if let Some((_, e)) = self.errors.remove(&ino) {
            return Err(e);
        }
        Ok(())
    }

    /// fsyncdir(2): makes the directory's manager durable.
    pub async fn fsyncdir(&self, ino: InodeId) -> Result<(), FsError> {
        self.sync_owner(ino).await
    }

    async fn sync_owner(&self, ino: InodeId) -> Result<(), FsError> {
        self.sync_node(self.mc.owner_of(ino)).await
    }

    /// Buffers a write at `off`; returns the bytes accepted (all of them).
    pub async fn write(&self, ino: InodeId, off: u64, data: &[u8]) -> Result<u32, FsError> {
        self.write_at(ino, off, data, false).await.map(|(_, n)| n)
    }

    /// Buffers a write under the write lease of `ino` (asking for it first if needed). With
    /// `append` (O_APPEND) the data goes at the end of the file as this client knows it
    /// under the lease, whatever `off` says. Returns the offset written at and the bytes
    /// accepted.
    pub async fn write_at(
        &self,
        ino: InodeId,
        off: u64,
        data: &[u8],
        append: bool,
    ) -> Result<(u64, u32), FsError> {
        if data.is_empty() {
            return Ok((off, 0));
        }
        self.wait_for_space().await?;
        // Bounded: a round is repeated only when a Flush callback took the lease meanwhile.
        let started = std::time::Instant::now();
        for round in 0..WRITE_ROUNDS {
            if round > 0 {
                if started.elapsed() > WRITE_PATIENCE {
                    break;
                }
                let most = (round as u64).min(20);
                let pause = rand::random::<u64>() % (most + 1);
                tokio::time::sleep(std::time::Duration::from_millis(pause)).await;
            }
            self.ensure_lease(ino).await;
            let had_lease = self.write_lease_held(&self.lock_state(), ino);
            self.acquire_write(ino).await?;
            let known = self.lock_state().files.contains_key(&ino);
            // A fresh grant may have made the previous writer commit: the size we cached
            // before asking is then stale (the requester of a grant is not called back).
            let fetched = if !known && (!had_lease || !self.attrs.contains_key(&ino)) {
                let req = ManagerRequest::GetAttr { ino };
                Some(self.manager_attr(req).await?.size)
            } else {
                None
            };
            let committed = fetched.or_else(|| self.attrs.get(&ino).map(|a| a.size));
            let now = Timestamp::now();
            let done = {
                let mut st = self.lock_state();
                let base = st.files.get(&ino).map(|w| w.size).or(committed);
                match base {
                    Some(base) if self.write_lease_held(&st, ino) => {
                        let at = if append { base } else { off };
                        let end = at.checked_add(data.len() as u64).ok_or(FsError::EFBIG)?;
                        if end > MAX_FILE_SIZE {
                            return Err(FsError::EFBIG);
                        }
                        let w = st.files.entry(ino).or_insert_with(|| FileWrites::new(base));
                        let grew = w.write(at, data, now);
                        st.dirty_bytes += grew;
                        Some((at, st.dirty_bytes >= self.config.file.client.segment_bytes))
                    }
                    _ => None,
                }
            };
            if let Some((at, kick)) = done {
                if kick {
                    self.kick.notify_one();
                }
                return Ok((at, data.len() as u32));
            }
        }
        tracing::warn!(inode = %ino, "write lease kept being called back; giving up the write");
        Err(FsError::EIO)
    }

    /// Reads up to `size` bytes at `off`: short at end of file, zeros in holes.
    pub async fn read(&self, ino: InodeId, off: u64, size: u32) -> Result<Bytes, FsError> {
        let held = self.ensure_lease(ino).await;
        // Local data first: a commit that lands after this snapshot only adds clean data
        // that the snapshot already overrides.
        let (local_size, snap) = {
            let st = self.lock_state();
            match st.files.get(&ino) {
                Some(w) => (Some(w.size), w.snapshot(off, size as u64)),
                None => (None, Vec::new()),
            }
        };
        let committed = self.committed_size(held.as_ref(), ino).await?;
        let file_size = local_size.unwrap_or(committed);
        if off >= file_size || size == 0 {
            return Ok(Bytes::new());
        }
        let n = (size as u64).min(file_size - off);
        let mut buf = vec![0u8; n as usize];
        if !covers_all(&snap, off, n) {
            self.read_clean(held.as_ref(), ino, off, &mut buf, committed)
                .await?;
        }
        overlay_ranges(snap.iter().map(|(s, b)| (*s, b)), off, &mut buf);
        Ok(Bytes::from(buf))
    }

    /// Fills `buf` (file bytes at `off`) with committed data below `committed`.
    async fn read_clean(
        &self,
        held: Option<&HeldLease>,
        ino: InodeId,
        off: u64,
        buf: &mut [u8],
        committed: u64,
    ) -> Result<(), FsError> {
        let end = (off + buf.len() as u64).min(committed);
        if off >= end {
            return Ok(());
        }
        let first = off / BLOCK;
        let last = (end - 1) / BLOCK;
        let (generation, mut blocks) = {
            let mut st = self.lock_state();
            let g = st.cache.generation(ino);
            // Cached blocks only under a held lease; otherwise every block is read again.
            let b: Vec<Option<Bytes>> = (first..=last)
                .map(|b| held.and_then(|_| st.cache.get(ino, b)))
                .collect();
            (g, b)
        };
        // Fetch each run of missing blocks with one set of log reads.
        let mut i = 0;
        while i < blocks.len() {
            if blocks[i].is_some() {
                i += 1;
                continue;
            }
            let mut j = i;
            while j < blocks.len() && blocks[j].is_none() {
                j += 1;
            }
            let fetched = self
                .fetch_blocks(
                    ino,
                    first + i as u64,
                    first + j as u64,
                    committed,
                    generation,
                )
                .await?;
            for (k, b) in fetched.into_iter().enumerate() {
                blocks[i + k] = Some(b);
            }
            i = j;
        }
        for (k, b) in blocks.iter().enumerate() {
            let Some(b) = b else { return Err(FsError::EIO) };
            let bs = (first + k as u64) * BLOCK;
            let from = bs.max(off);
            let to = (bs + BLOCK).min(end);
            if from < to {
                buf[(from - off) as usize..(to - off) as usize]
                    .copy_from_slice(&b[(from - bs) as usize..(to - bs) as usize]);
            }
        }
        Ok(())
    }

    /// Reads blocks `[b0, b1)` from the log and caches them (unless the inode changed
    /// since `generation`).
    async fn fetch_blocks(
        &self,
        ino: InodeId,
        b0: u64,
        b1: u64,
        committed: u64,
        generation: u64,
    ) -> Result<Vec<Bytes>, FsError> {
        let start = b0 * BLOCK;
        let len = (b1 - b0) * BLOCK;
        let extents = self.extents_for(ino, start, len, generation).await?;
        let pieces = map_range(&extents, start, len);
        let reader = self.reader().clone();
        let mut data = vec![0u8; len as usize];
        // `buffered` keeps extent order, so overlapping extents apply oldest first.
        let mut reads = futures::stream::iter(pieces.into_iter().map(|p| {
            let reader = reader.clone();
            async move { (p, reader.read(p.ptr).await) }
        }))
        .buffered(READ_PARALLEL);
        while let Some((p, r)) = reads.next().await {
            let bytes = r.map_err(|e| {
                tracing::warn!(inode = %ino, "cannot read {}: {e}", p.ptr);
                FsError::EIO
            })?;
            if bytes.len() != p.ptr.len as usize {
                tracing::warn!(inode = %ino, "read of {} returned {} bytes", p.ptr, bytes.len());
                return Err(FsError::EIO);
            }
            let at = p.buf_off as usize;
            data[at..at + bytes.len()].copy_from_slice(&bytes);
        }
        // Nothing exists past the committed size, whatever an extent says.
        if committed < start + len {
            data[committed.saturating_sub(start) as usize..].fill(0);
        }
        let data = Bytes::from(data);
        let blocks: Vec<Bytes> = (0..(b1 - b0))
            .map(|k| data.slice((k * BLOCK) as usize..((k + 1) * BLOCK) as usize))
            .collect();
        let mut st = self.lock_state();
        for (k, b) in blocks.iter().enumerate() {
            st.cache.insert(ino, b0 + k as u64, b.clone(), generation);
        }
        Ok(blocks)
    }

    /// The extents of `ino` overlapping `[start, start + len)`, from the extent cache or the
    /// manager (per window).
    async fn extents_for(
        &self,
        ino: InodeId,
        start: u64,
        len: u64,
        generation: u64,
    ) -> Result<Vec<Extent>, FsError> {
        let mut out: Vec<Extent> = Vec::new();
        let wins = windows(start, len);
        let several = wins.end - wins.start > 1;
        for w in wins {
            let cached = self.lock_state().extents.get(ino, w);
            let list = match cached {
                Some(l) => l,
                None => {
                    let req = ManagerRequest::GetExtents {
                        ino,
                        offset: w * WINDOW,
                        len: WINDOW,
                    };
                    let l = match self.call(Target::Route, req).await? {
                        ManagerResponse::Extents(e) => Arc::new(e),
                        other => return Err(remote::unexpected("GetExtents", &other)),
                    };
                    let mut st = self.lock_state();
                    if st.cache.generation(ino) == generation {
                        st.extents.insert(ino, w, l.clone());
                    }
                    l
                }
            };
            if several {
                for e in list.iter() {
                    if !out.contains(e) {
                        out.push(*e);
                    }
                }
            } else {
                out.extend(list.iter().copied());
            }
        }
        Ok(out)
    }
}
