//! The read path below the operations: committed blocks of a file from the block cache,
//! else from the log (extent maps from the extent cache or the manager, then log reads in
//! parallel, checked against the writers' end-to-end checksums where the manager has
//! them), cached unless the inode changed meanwhile. Sequential reads under a held lease
//! start prefetches of the next blocks (policy in `readahead`); a read that needs a block a
//! prefetch is fetching waits for that prefetch instead of fetching the block again.
//! Must not hold the data lock across an await, and must not use a cached block or extent
//! map without a held lease.

use crate::client::Client;
use crate::data::cache::BLOCK;
use crate::data::extents::{map_range, windows, ExtentList, WINDOW};
use crate::data::readahead::Registered;
use crate::error::FsError;
use crate::lease::HeldLease;
use crate::meta::{self as remote, Target};
use bytes::Bytes;
use futures::StreamExt;
use proto::ids::InodeId;
use proto::msg::{ManagerRequest, ManagerResponse};
use std::sync::Arc;
use tokio::sync::watch;

/// Concurrent log reads of one read request.
const READ_PARALLEL: usize = 8;

/// Completes (changes to true, or its sender is dropped) when a prefetch ended.
pub(crate) type PrefetchDone = watch::Receiver<bool>;

impl Client {
    /// Fills `buf` (file bytes at `off`) with committed data below `committed`.
    pub(crate) async fn read_clean(
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
        let (generation, mut blocks, waits, prefetch) = {
            let mut st = self.lock_state();
            let st = &mut *st;
            let g = st.cache.generation(ino);
            // Cached blocks only under a held lease; otherwise every block is read again.
            let b: Vec<Option<Bytes>> = (first..=last)
                .map(|b| held.and_then(|_| st.cache.get(ino, b)))
                .collect();
            let mut waits: Vec<PrefetchDone> = Vec::new();
            let mut prefetch = Vec::new();
            if held.is_some() {
                let mut missed = false;
                for (k, blk) in b.iter().enumerate() {
                    if blk.is_some() {
                        continue;
                    }
                    match st.readahead.inflight.waiter(ino, first + k as u64) {
                        Some(w) => {
                            if !waits.iter().any(|x| x.same_channel(&w)) {
                                waits.push(w);
                            }
                        }
                        None => missed = true,
                    }
                }
                if let Some(want) =
                    st.readahead
                        .policy
                        .on_read(ino, off, end - off, committed, missed)
                {
                    let cache = &st.cache;
                    let mut senders = Vec::new();
                    let chunks = st.readahead.inflight.register(
                        ino,
                        want,
                        |b| cache.contains(ino, b),
                        || {
                            let (tx, rx) = watch::channel(false);
                            senders.push(tx);
                            rx
                        },
                    );
                    prefetch = chunks.into_iter().map(|(r, _)| r).zip(senders).collect();
                }
            }
            (g, b, waits, prefetch)
        };
        if !prefetch.is_empty() {
            self.start_prefetch(prefetch, committed, generation);
        }
        if !waits.is_empty() {
            for mut w in waits {
                // Err: the prefetch task is gone; either way look in the cache again.
                let _ = w.wait_for(|done| *done).await;
            }
            let mut st = self.lock_state();
            for (k, blk) in blocks.iter_mut().enumerate() {
                if blk.is_none() {
                    *blk = st.cache.get(ino, first + k as u64);
                }
            }
        }
        let local = blocks.iter().filter(|b| b.is_some()).count() as u64;
        proto::ops_metrics::cache_blocks(&self.metrics_label(), local, blocks.len() as u64 - local);
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

    /// Fetches the registered chunks of a prefetch into the block cache in the background
    /// (cached only if the inode's generation is still `generation`), then marks them done.
    fn start_prefetch(
        &self,
        chunks: Vec<(Registered, watch::Sender<bool>)>,
        committed: u64,
        generation: u64,
    ) {
        let Some(client) = self.this.get().and_then(std::sync::Weak::upgrade) else {
            let mut st = self.lock_state();
            for (r, _) in &chunks {
                st.readahead.inflight.finish(r);
            }
            return;
        };
        tokio::spawn(async move {
            let ino = chunks[0].0.ino;
            let start = chunks[0].0.blocks.start * BLOCK;
            let end = chunks[chunks.len() - 1].0.blocks.end * BLOCK;
            // One extent lookup for the whole batch (cached for the chunks below).
            let _ = client
                .extents_for(ino, start, end - start, generation)
                .await;
            let fetches = chunks.into_iter().map(|(r, tx)| {
                let client = client.clone();
                async move {
                    let fetched = client
                        .fetch_blocks(r.ino, r.blocks.start, r.blocks.end, committed, generation)
                        .await;
                    if let Err(e) = fetched {
                        tracing::debug!(inode = %r.ino, "prefetch of blocks {:?} failed: {e}", r.blocks);
                    }
                    client.lock_state().readahead.inflight.finish(&r);
                    let _ = tx.send(true);
                }
            });
            futures::future::join_all(fetches).await;
        });
    }

    /// Reads file bytes `[start, start + len)` through the extent map (holes are zeros).
    async fn read_range(
        &self,
        ino: InodeId,
        start: u64,
        len: u64,
        generation: u64,
    ) -> Result<Bytes, FsError> {
        let list = self.extents_for(ino, start, len, generation).await?;
        let pieces = map_range(&list.extents, start, len);
        let reader = self.reader().clone();
        // One piece covering the whole range: its bytes are the answer (no copy).
        if let [p] = pieces[..] {
            if p.buf_off == 0 && p.ptr.len as u64 == len {
                // Checked against the writer's checksums where the manager has them.
                let read = match list.sums_for(&p.ptr) {
                    Some(s) => reader.read_checked(p.ptr, &s).await,
                    None => reader.read(p.ptr).await,
                };
                let bytes = read.map_err(|e| {
                    tracing::warn!(inode = %ino, "cannot read {}: {e}", p.ptr);
                    FsError::EIO
                })?;
                if bytes.len() != p.ptr.len as usize {
                    tracing::warn!(inode = %ino, "read of {} returned {} bytes", p.ptr, bytes.len());
                    return Err(FsError::EIO);
                }
                return Ok(bytes);
            }
        }
        let mut data = vec![0u8; len as usize];
        // `buffered` keeps extent order, so overlapping extents apply oldest first.
        let mut reads = futures::stream::iter(pieces.into_iter().map(|p| {
            let reader = reader.clone();
            let sums = list.sums_for(&p.ptr);
            async move {
                // Checked against the writer's checksums where the manager has them.
                let r = match sums {
                    Some(s) => reader.read_checked(p.ptr, &s).await,
                    None => reader.read(p.ptr).await,
                };
                (p, r)
            }
        }))
        .buffered(READ_PARALLEL);
        while let Some((p, r)) = reads.next().await {
            let bytes = r.map_err(|e| {
                proto::warn_limited!(inode = %ino, "cannot read {}: {e}", p.ptr);
                FsError::EIO
            })?;
            if bytes.len() != p.ptr.len as usize {
                tracing::warn!(inode = %ino, "read of {} returned {} bytes", p.ptr, bytes.len());
                return Err(FsError::EIO);
            }
            let at = p.buf_off as usize;
            data[at..at + bytes.len()].copy_from_slice(&bytes);
        }
        Ok(Bytes::from(data))
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
        // The cleaner may move extents and the reclaimer delete the old copy while a read
        // holds the old extent list: a failed read asks the manager once more.
        let mut data = match self.read_range(ino, start, len, generation).await {
            Ok(d) => d,
            Err(_) => {
                self.lock_state().extents.invalidate(ino);
                self.read_range(ino, start, len, generation).await?
            }
        };
        // Nothing exists past the committed size, whatever an extent says.
        if committed < start + len {
            let mut v = data.to_vec();
            v[committed.saturating_sub(start) as usize..].fill(0);
            data = Bytes::from(v);
        }
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
    /// manager (per window), with the end-to-end checksums the manager holds for them (the
    /// cached list itself when the range is in one window).
    pub(crate) async fn extents_for(
        &self,
        ino: InodeId,
        start: u64,
        len: u64,
        generation: u64,
    ) -> Result<Arc<ExtentList>, FsError> {
        let mut lists = Vec::new();
        for w in windows(start, len) {
            let cached = self.lock_state().extents.get(ino, w);
            let list = match cached {
                Some(l) => l,
                None => {
                    let req = ManagerRequest::GetExtents {
                        ino,
                        offset: w * WINDOW,
                        len: WINDOW,
                    };
                    let l = match self.meta.call(Target::Route, req).await? {
                        ManagerResponse::Extents(extents) => {
                            Arc::new(ExtentList::new(extents, Vec::new()))
                        }
                        ManagerResponse::SummedExtents { extents, sums } => {
                            Arc::new(ExtentList::new(extents, sums))
                        }
                        other => return Err(remote::unexpected("GetExtents", &other)),
                    };
                    let mut st = self.lock_state();
                    if st.cache.generation(ino) == generation {
                        st.extents.insert(ino, w, l.clone());
                    }
                    l
                }
            };
            lists.push(list);
        }
        if lists.len() == 1 {
            if let Some(l) = lists.pop() {
                return Ok(l);
            }
        }
        let mut extents = Vec::new();
        let mut sums = Vec::new();
        for list in &lists {
            for e in list.extents.iter() {
                if !extents.contains(e) {
                    extents.push(*e);
                }
            }
            sums.extend(list.sums.iter().cloned());
        }
        Ok(Arc::new(ExtentList::new(extents, sums)))
    }
}
