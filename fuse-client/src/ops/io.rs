//! File I/O operations: open/release, read, write, flush, fsync, sync, and lseek's
//! SEEK_DATA/SEEK_HOLE (committed extents overlaid with local dirty ranges).
//!
//! Reads overlay dirty data on clean blocks (`data::read`: block cache, else extents read
//! from the log); writes only buffer under the write lease (`data::writeback` commits). Opens give close-to-open
//! consistency: the attributes are fetched again and a new version drops our clean copies.
//! Must not hold the state lock across an await.

use crate::client::{Client, FileHandle};
use crate::data::dirty::{assemble, covers_all};
use crate::data::extents::WINDOW;
use crate::data::seek::{clip, find, Seek};
use crate::data::Which;
use crate::error::FsError;
use bytes::Bytes;
use proto::ids::InodeId;
use proto::msg::Timestamp;

/// Largest file offset we accept (like ext4's limit, well below i64::MAX).
pub const MAX_FILE_SIZE: u64 = 1 << 50;
/// Rounds of (acquire the write lease, buffer) one write tries before it gives up (with
/// EIO), and the longest it keeps trying: writers that keep taking the lease from each other
/// back off a random few milliseconds per lost round, so that one of them wins.
const WRITE_ROUNDS: usize = 400;
const WRITE_PATIENCE: std::time::Duration = std::time::Duration::from_secs(30);

impl Client {
    /// Whether the kernel may keep `ino`'s page cache across opens: only when its manager
    /// grants leases and we can tell the kernel to drop it on a callback.
    pub fn keep_cache(&self, ino: InodeId) -> bool {
        self.meta.lease_epoch(ino).is_some() && self.lease_session.notifier().is_some()
    }

    /// Opens `ino`: refreshes its attributes and registers the open (first local open).
    ///
    /// The kernel reaches `ino` through a cached name, which may be one a callback removed
    /// or replaced while the kernel's entry invalidation is still blocked (see
    /// `kernel::notify`) or whose lookup answer was in flight when the invalidation ran.
    /// So an inode that no longer exists, or has no name left, answers ESTALE: the VFS then
    /// looks the path up again (LOOKUP_REVAL, which asks us) and opens what the name is
    /// now, instead of the old file (a stale read, or a write nobody will ever see) or
    /// ENOENT. The price: reopening a deleted file through /proc/PID/fd fails with ESTALE.
    /// `access` is what the open asks for; the manager checks it.
    pub async fn open(
        &self,
        ino: InodeId,
        access: proto::msg::OpenAccess,
    ) -> Result<FileHandle, FsError> {
        let gone = |e: FsError| {
            if e == FsError::ENOENT {
                FsError::ESTALE
            } else {
                e
            }
        };
        let a = self.getattr(ino).await.map_err(gone)?;
        if a.nlink == 0 {
            tracing::debug!(inode = %ino, "open of an unlinked inode through a cached name: ESTALE");
            return Err(FsError::ESTALE);
        }
        self.open_ref(ino, access).await.map_err(gone)?;
        Ok(self.next_fh())
    }

    /// The last release of a handle of `ino` (the kernel sends one per open).
    pub async fn release(&self, ino: InodeId) -> Result<(), FsError> {
        self.close_ref(ino).await
    }

    /// close(2): reports a write error found since the last flush/fsync. Data stays
    /// buffered (write-back); `fsync` makes it durable.
    pub async fn flush(&self, ino: InodeId) -> Result<(), FsError> {
        self.writeback.errors.take(ino)
    }

    /// fsync(2): writes and durably commits `ino`'s dirty data; with nothing to write, makes
    /// the inode's manager durable.
    pub async fn fsync(&self, ino: InodeId) -> Result<(), FsError> {
        let wrote = self.flush_inodes(Which::One(ino), true).await;
        self.writeback.errors.take(ino)?;
        if !wrote? {
            self.sync_owner(ino).await?;
        }
        // A sync answered by a restarted manager leaves this inode's earlier commits to the
        // reclaim: this fsync sends them again itself (reclaimed) or checks them (not)
        // before it returns.
        if self.writeback.has_suspects(ino) {
            self.writeback
                .await_reclaim_decided(self.meta.owner(ino))
                .await;
            if self.writeback.awaits_resend(ino) {
                self.flush_inodes(Which::One(ino), true).await?;
            } else if self.writeback.has_suspects(ino) {
                self.sync_owner(ino).await?;
            }
        }
        // The sync may have found commits a manager restart lost.
        self.writeback.errors.take(ino)
    }

    /// fsyncdir(2): makes the directory's manager durable. Reports a create in it that a
    /// manager restart or takeover lost (found by this sync or earlier).
    pub async fn fsyncdir(&self, ino: InodeId) -> Result<(), FsError> {
        self.sync_owner(ino).await?;
        self.writeback.errors.take(ino)
    }

    async fn sync_owner(&self, ino: InodeId) -> Result<(), FsError> {
        self.writeback.sync_node(self.meta.owner(ino)).await
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
            self.meta.ensure_lease(ino).await;
            let had_lease = self.write_lease_held(&self.lock_state(), ino);
            self.acquire_write(ino).await?;
            let known = self.lock_state().buffered(ino).is_some();
            // A fresh grant may have made the previous writer commit: the size we cached
            // before asking is then stale (the requester of a grant is not called back).
            let fetched = if !known && (!had_lease || !self.attrs.contains(ino)) {
                let req = proto::msg::ManagerRequest::GetAttr { ino };
                Some(self.manager_attr(req).await?.size)
            } else {
                None
            };
            let committed = fetched.or_else(|| self.attrs.get(ino).map(|a| a.size));
            // Read before the data lock: a loss learned after this leaves the entry with
            // the older standing, and its commit is refused rather than let through.
            let standing = self.meta.standing(ino);
            let now = Timestamp::now();
            let done = {
                let mut st = self.lock_state();
                let base = st.buffered(ino).map(|w| w.size).or(committed);
                match base {
                    Some(base) if self.write_lease_held(&st, ino) => {
                        let at = if append { base } else { off };
                        let end = at.checked_add(data.len() as u64).ok_or(FsError::EFBIG)?;
                        if end > MAX_FILE_SIZE {
                            return Err(FsError::EFBIG);
                        }
                        // The cache lookup only when the event is wanted (write path).
                        if st.buffered(ino).is_none()
                            && tracing::enabled!(target: "shoal_attrs", tracing::Level::DEBUG)
                        {
                            tracing::debug!(target: "shoal_attrs", inode = %ino, base, fetched = fetched.is_some(), cached = ?self.attrs.get(ino).map(|a| (a.version, a.size)), "new dirty file");
                        }
                        let dirty = st.buffer_write(ino, base, standing, at, data, now);
                        Some((at, dirty >= self.config.file.client.segment_bytes))
                    }
                    _ => None,
                }
            };
            if let Some((at, kick)) = done {
                if kick {
                    self.writeback.kick().notify_one();
                }
                return Ok((at, data.len() as u32));
            }
        }
        tracing::warn!(inode = %ino, "write lease kept being called back; giving up the write");
        Err(FsError::EIO)
    }

    /// Reads up to `size` bytes at `off`: short at end of file, zeros in holes.
    ///
    /// A read learns the committed size, then fetches the data. If the inode's cached state
    /// was dropped in between (a callback, or a lease lost while the mount was cut off),
    /// the data may come from a later state than the size: consistency/t56 saw a partitioned
    /// mount's 5 s read return another mount's newer head with the older, shorter record
    /// list, a state the file never had. Such a read is done again (up to `READ_ROUNDS`).
    pub async fn read(&self, ino: InodeId, off: u64, size: u32) -> Result<Bytes, FsError> {
        let mut round = 1;
        loop {
            let (data, generation) = self.read_round(ino, off, size).await?;
            let moved = self.lock_state().cache_generation(ino) != generation;
            if !moved {
                return Ok(data);
            }
            if round >= READ_ROUNDS {
                tracing::debug!(inode = %ino, "the inode kept changing during {READ_ROUNDS} read rounds; answering the last");
                return Ok(data);
            }
            round += 1;
        }
    }

    /// One round of `read`, with the cache generation taken before the size was learnt.
    async fn read_round(&self, ino: InodeId, off: u64, size: u32) -> Result<(Bytes, u64), FsError> {
        let held = self.meta.ensure_lease(ino).await;
        // Local data first: a commit that lands after this snapshot only adds clean data
        // that the snapshot already overrides.
        // The cache generation is taken before the committed size is learnt: blocks this
        // read fetches are cut (zero-filled) at that size, so they may be cached only if no
        // callback or own commit came after the size was learnt. Taken after it, a block
        // cut at a size an Invalidate had already made stale was cached, and a later read
        // that learnt the new size showed another client's appended bytes as zeros
        // (consistency/t56; test l71).
        let (local_size, snap, generation) = {
            let st = self.lock_state();
            let generation = st.cache_generation(ino);
            match st.buffered(ino) {
                Some(w) => (Some(w.size), w.snapshot(off, size as u64), generation),
                None => (None, Vec::new(), generation),
            }
        };
        let committed = self.committed_size(held.as_ref(), ino).await?;
        let file_size = local_size.unwrap_or(committed);
        if off >= file_size || size == 0 {
            return Ok((Bytes::new(), generation));
        }
        let n = (size as u64).min(file_size - off);
        let clean = if covers_all(&snap, off, n) {
            Vec::new()
        } else {
            self.read_clean(held.as_ref(), ino, off, n, committed, generation)
                .await?
        };
        Ok((assemble(clean, &snap, off, n), generation))
    }

    /// lseek(2) SEEK_DATA / SEEK_HOLE from `off`: data is what an extent of the committed
    /// map (below the committed size) or a local uncommitted write covers; everything else
    /// below the size is a hole, and the end of the file is a hole. ENXIO at or past the
    /// end, and for SEEK_DATA with only holes after `off`. Extent lists are fetched one
    /// window at a time and the search stops at the first window with an answer.
    pub async fn seek(&self, ino: InodeId, off: u64, what: Seek) -> Result<u64, FsError> {
        let enxio = FsError(libc::ENXIO);
        let held = self.meta.ensure_lease(ino).await;
        let (local_size, local) = {
            let st = self.lock_state();
            match st.buffered(ino) {
                Some(w) => (Some(w.size), w.spans()),
                None => (None, Vec::new()),
            }
        };
        let committed = self.committed_size(held.as_ref(), ino).await?;
        let size = local_size.unwrap_or(committed);
        if off >= size {
            return Err(enxio);
        }
        let local = clip(local, 0, size);
        let at_end = || match what {
            Seek::Data => Err(enxio),
            Seek::Hole => Ok(size),
        };
        // Committed bytes exist below both sizes (a local truncate cut the committed size
        // at the manager too).
        let clean_end = committed.min(size);
        let generation = self.lock_state().cache_generation(ino);
        let mut w = off / WINDOW;
        loop {
            let ws = w * WINDOW;
            let from = off.max(ws);
            if ws >= clean_end {
                // Only local data past here.
                return find(&local, what, from, size).map_or_else(at_end, Ok);
            }
            let we = ws + WINDOW;
            let list = self.extents_for(ino, ws, WINDOW, generation).await?;
            let mut spans = clip(
                list.extents
                    .iter()
                    .map(|e| (e.offset, e.offset + e.ptr.len as u64)),
                ws,
                we.min(clean_end),
            );
            spans.extend(clip(local.iter().copied(), ws, we));
            let to = we.min(size);
            if let Some(x) = find(&spans, what, from, to) {
                return Ok(x);
            }
            if to == size {
                return at_end();
            }
            w += 1;
        }
    }
}

/// Rounds of a read whose inode changed while it ran (see `Client::read`).
const READ_ROUNDS: u32 = 4;
