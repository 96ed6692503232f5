//! The read path below the operations: committed blocks of a file from the block cache,
//! else from the log (extent maps from the extent cache or the manager, then log reads in
//! parallel, checked against the writers' end-to-end checksums where the manager has
//! them), cached unless the inode changed meanwhile. Sequential reads under a held lease
//! start prefetches of the next blocks (policy in `readahead`); a read that needs a block a
//! prefetch is fetching waits for that prefetch instead of fetching the block again.
//! Must not hold the data lock across an await, and must not use a cached block or extent
//! map without a held lease.

use crate::client::Client;
use crate::coop::forward::Held;
use crate::coop::{fetch, peers, PEER_TIMEOUT};
use crate::data::cache::{LogCopy, BLOCK};
use crate::data::extents::{map_range, windows, ExtentList, WINDOW};
use crate::data::held::window_at;
use crate::data::readahead::Registered;
use crate::error::FsError;
use crate::lease::HeldLease;
use crate::meta::{self as remote, Target};
use bytes::Bytes;
use futures::StreamExt;
use proto::chunksum::{self, ChunkSums};
use proto::ids::{InodeId, LogPtr};
use proto::msg::{ManagerRequest, ManagerResponse, MAX_FETCH_BLOCKS};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;
use storage::log::LogReader;
use tokio::sync::watch;

/// Concurrent log reads of one read request.
const READ_PARALLEL: usize = 8;

/// Completes (changes to true, or its sender is dropped) when a prefetch ended.
pub(crate) type PrefetchDone = watch::Receiver<bool>;

impl Client {
    /// The committed data of file bytes `[off, off + len)` below `committed`, as slices of
    /// blocks in file order (no copy): together the bytes `[off, min(off + len, committed))`.
    /// `generation` is the cache generation of `ino` taken *before* `committed` was
    /// learnt: what is fetched here is cut at `committed`, so it is cached only if nothing
    /// invalidated the inode since that size was learnt.
    pub(crate) async fn read_clean(
        &self,
        held: Option<&HeldLease>,
        ino: InodeId,
        off: u64,
        len: u64,
        committed: u64,
        generation: u64,
    ) -> Result<Vec<Bytes>, FsError> {
        let end = (off + len).min(committed);
        if off >= end {
            return Ok(Vec::new());
        }
        let first = off / BLOCK;
        let last = (end - 1) / BLOCK;
        let (mut blocks, waits, prefetch) = {
            let mut st = self.lock_state();
            let st = &mut *st;
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
            (b, waits, prefetch)
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
        // Blocks fetched below count where they came from, in `fetch_blocks`.
        let local = blocks.iter().filter(|b| b.is_some()).count() as u64;
        self.coop.counters.local(local);
        proto::ops_metrics::cache_blocks_from(&self.metrics_label(), local, 0, 0);
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
        let mut out = Vec::with_capacity(blocks.len());
        for (k, b) in blocks.into_iter().enumerate() {
            let Some(b) = b else { return Err(FsError::EIO) };
            let bs = (first + k as u64) * BLOCK;
            let from = bs.max(off);
            let to = (bs + BLOCK).min(end);
            if from < to {
                out.push(b.slice((from - bs) as usize..(to - bs) as usize));
            }
        }
        Ok(out)
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

    /// Reads file bytes `[start, start + len)` through the extent list `list` (holes are
    /// zeros), with the log bytes each piece was read as (`RangeRead::copies`).
    async fn read_range(
        &self,
        list: &ExtentList,
        ino: InodeId,
        start: u64,
        len: u64,
    ) -> Result<RangeRead, FsError> {
        let pieces = map_range(&list.extents, start, len);
        let reader = self.reader().clone();
        let failed = |ptr: LogPtr, e: String| {
            proto::warn_limited!(inode = %ino, "cannot read {ptr}: {e}");
            FsError::EIO
        };
        // One piece covering the whole range: its bytes are the answer (no copy).
        if let [p] = pieces[..] {
            if p.buf_off == 0 && p.ptr.len as u64 == len {
                let (range, wide, exact) = read_piece(&reader, p.ptr, list.sums_for(&p.ptr))
                    .await
                    .map_err(|e| failed(p.ptr, e))?;
                return Ok(RangeRead {
                    data: exact,
                    copies: vec![(range, wide)],
                });
            }
        }
        let mut data = vec![0u8; len as usize];
        let mut copies = Vec::new();
        // `buffered` keeps extent order, so overlapping extents apply oldest first.
        let mut reads = futures::stream::iter(pieces.into_iter().map(|p| {
            let reader = reader.clone();
            let sums = list.sums_for(&p.ptr);
            async move { (p, read_piece(&reader, p.ptr, sums).await) }
        }))
        .buffered(READ_PARALLEL);
        while let Some((p, r)) = reads.next().await {
            let (range, wide, exact) = r.map_err(|e| failed(p.ptr, e))?;
            let at = p.buf_off as usize;
            data[at..at + exact.len()].copy_from_slice(&exact);
            copies.push((range, wide));
        }
        Ok(RangeRead {
            data: Bytes::from(data),
            copies,
        })
    }

    /// Reads blocks `[b0, b1)` — from peers that the manager says may cache them, else from
    /// the log — and caches them (unless the inode changed since `generation`).
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
        let list = self.extents_for(ino, start, len, generation).await?;
        if self.coop.enabled() {
            self.refresh_hints(ino, start, len, generation);
        }
        // The immutable log address of each block read whole from one extent (not cut at
        // the file's end): under it a block may come from a peer and may be served to one.
        let addrs: Vec<Option<LogPtr>> = (b0..b1)
            .map(|b| {
                let bs = b * BLOCK;
                (bs + BLOCK <= committed)
                    .then(|| list.single_ptr(bs, BLOCK))
                    .flatten()
            })
            .collect();
        // (bytes, log copy, singlet: no other client was known to cache it)
        let mut got: Vec<Option<(Bytes, Option<LogCopy>, bool)>> = vec![None; addrs.len()];
        let forwarding = &self.coop.forwarding;
        let mut forwarded = 0;
        if self.coop.enabled() {
            forwarding.learn_peers(&list.holders);
            // Blocks peers forwarded here (N-chance), checked like a peer's answer.
            for (k, a) in addrs.iter().enumerate() {
                let Some(ptr) = *a else { continue };
                let Some(h) = forwarding.take_referenced(&ptr) else {
                    continue;
                };
                let sums = list.sums_for(&ptr);
                if let Ok(exact) = fetch::check_answer(ptr, sums.as_ref(), h.range, h.bytes.clone())
                {
                    let copy = LogCopy {
                        ptr,
                        range: h.range,
                        bytes: h.bytes,
                    };
                    got[k] = Some((exact, Some(copy), true));
                    forwarded += 1;
                }
            }
        }
        let hinted = self.coop.candidates(&list.holders);
        // Per addressed block not found here: the peers to ask, in order.
        let plans: Vec<peers::PeerPlan> = addrs
            .iter()
            .enumerate()
            .filter_map(|(k, a)| {
                let ptr = (*a)?;
                if got[k].is_some() || !self.coop.enabled() {
                    return None;
                }
                // Where our own singlet was forwarded, first (unless it failed lately).
                let mut peers = hinted.clone();
                if let Some(p) = forwarding.sent_to(&ptr) {
                    if self.coop.candidates(&[p]) == [p] {
                        peers.retain(|x| *x != p);
                        peers.insert(0, p);
                    }
                }
                (!peers.is_empty()).then_some((k, ptr, peers))
            })
            .collect();
        // Round r: every block still missing from its r-th peer, one request per peer and
        // batch (`round_batches`); what no peer gave is read from storage below.
        for round in 0..peers::MAX_ASKED {
            let batches =
                peers::round_batches(&plans, round, |k| got[k].is_none(), MAX_FETCH_BLOCKS);
            if batches.is_empty() {
                break;
            }
            let requests = batches.into_iter().map(|(peer, blocks)| {
                let list = &list;
                async move {
                    let asks: Vec<(LogPtr, Option<ChunkSums>)> =
                        blocks.iter().map(|(_, p)| (*p, list.sums_for(p))).collect();
                    let r = fetch::fetch_many(&self.transport, peer, &asks, PEER_TIMEOUT).await;
                    (peer, blocks, r)
                }
            });
            let answers = futures::future::join_all(requests).await;
            for (peer, blocks, r) in answers {
                match r {
                    Ok(results) => {
                        for ((k, ptr), res) in blocks.iter().zip(results) {
                            match res {
                                Ok(f) => {
                                    let copy = LogCopy {
                                        ptr: *ptr,
                                        range: f.range,
                                        bytes: f.bytes,
                                    };
                                    got[*k] = Some((f.exact, Some(copy), false));
                                }
                                Err(e) => self.peer_failed(peer, &e),
                            }
                        }
                    }
                    Err(e) => self.peer_failed(peer, &e),
                }
            }
        }
        let from_peers = got.iter().filter(|g| g.is_some()).count() as u64 - forwarded;
        let singlets = list.holders.is_empty();
        // Each run of blocks no peer gave: one set of log reads.
        let mut i = 0;
        while i < got.len() {
            if got[i].is_some() {
                i += 1;
                continue;
            }
            let mut j = i;
            while j < got.len() && got[j].is_none() {
                j += 1;
            }
            let rs = start + i as u64 * BLOCK;
            let rl = (j - i) as u64 * BLOCK;
            // The cleaner may move extents and the reclaimer delete the old copy while a
            // read holds the old extent list: a failed read asks the manager once more
            // (and those blocks are cached without a log address).
            let (read, same_list) = match self.read_range(&list, ino, rs, rl).await {
                Ok(r) => (r, true),
                Err(_) => {
                    self.lock_state().extents.invalidate(ino);
                    let again = self.extents_for(ino, rs, rl, generation).await?;
                    (self.read_range(&again, ino, rs, rl).await?, false)
                }
            };
            let mut data = read.data;
            // Nothing exists past the committed size, whatever an extent says.
            if committed < rs + rl {
                let mut v = data.to_vec();
                v[committed.saturating_sub(rs) as usize..].fill(0);
                data = Bytes::from(v);
            }
            for k in i..j {
                let off = (k - i) as u64 * BLOCK;
                let block = data.slice(off as usize..(off + BLOCK) as usize);
                let copy = match addrs[k] {
                    Some(ptr) if same_list => {
                        copy_of(ptr, list.sums_for(&ptr).is_some(), &read.copies)
                    }
                    _ => None,
                };
                got[k] = Some((block, copy, singlets));
            }
            i = j;
        }
        let from_storage = got.len() as u64 - from_peers - forwarded;
        self.coop.counters.local(forwarded);
        self.coop.counters.peer(from_peers);
        self.coop.counters.storage(from_storage);
        proto::ops_metrics::cache_blocks_from(
            &self.metrics_label(),
            forwarded,
            from_peers,
            from_storage,
        );
        let mut blocks = Vec::with_capacity(got.len());
        let evicted = {
            let mut st = self.lock_state();
            for (k, g) in got.into_iter().enumerate() {
                let Some((b, copy, singlet)) = g else {
                    return Err(FsError::EIO);
                };
                st.cache
                    .insert_from_log(ino, b0 + k as u64, b.clone(), generation, copy, singlet);
                blocks.push(b);
            }
            st.cache.take_evicted()
        };
        if self.coop.enabled() && !evicted.is_empty() {
            let out = evicted
                .into_iter()
                .map(|(ino, block, c)| {
                    let held = Held {
                        range: c.range,
                        bytes: c.bytes,
                    };
                    // The extent window the block was read through (`GetExtents` offset).
                    (c.ptr, held, Some(window_at(ino, block * BLOCK)))
                })
                .collect();
            forwarding.evicted(&self.coop.counters, out);
        }
        Ok(blocks)
    }

    /// Counts a failed peer read; a peer that failed other than by "not cached" is left
    /// out for a while (`coop::peers`).
    fn peer_failed(&self, peer: SocketAddr, e: &fetch::PeerReadError) {
        self.coop.counters.peer_failed();
        if e.marks_peer_bad() {
            proto::warn_limited!("peer read failed, reading from storage: {e}");
            self.coop.mark_bad(peer);
        } else {
            tracing::debug!("peer read: {e}");
        }
    }

    /// The log address of block `block` of `ino` if one extent covers it whole: what the
    /// block would be cached and asked for under (cooperative caching; for tools and
    /// tests).
    pub async fn block_address(&self, ino: InodeId, block: u64) -> Result<Option<LogPtr>, FsError> {
        let generation = self.lock_state().cache.generation(ino);
        let list = self
            .extents_for(ino, block * BLOCK, BLOCK, generation)
            .await?;
        Ok(list.single_ptr(block * BLOCK, BLOCK))
    }

    /// The extents of window `w` of `ino` from the manager, with its checksums and holder
    /// hint; cached unless the inode changed since `generation`.
    async fn fetch_extent_window(
        &self,
        ino: InodeId,
        w: u64,
        generation: u64,
    ) -> Result<Arc<ExtentList>, FsError> {
        let req = ManagerRequest::GetExtents {
            ino,
            offset: w * WINDOW,
            len: WINDOW,
        };
        let l = match self.meta.call(Target::Route, req).await? {
            ManagerResponse::Extents(extents) => Arc::new(ExtentList::new(extents, Vec::new())),
            ManagerResponse::SummedExtents {
                extents,
                sums,
                holders,
            } => Arc::new(ExtentList::new(extents, sums).with_holders(holders)),
            other => return Err(remote::unexpected("GetExtents", &other)),
        };
        let mut st = self.lock_state();
        if st.cache.generation(ino) == generation {
            st.extents.insert(ino, w, l.clone(), Instant::now());
        }
        Ok(l)
    }

    /// Asks the manager again, in the background, for the windows of `[start, start + len)`
    /// whose cached holder hint is due (`ExtentCache::hint_due`): a miss served with the
    /// old hint now, the next ones with the peers that read the window since (or without
    /// those that reported it gone).
    fn refresh_hints(&self, ino: InodeId, start: u64, len: u64, generation: u64) {
        let due: Vec<u64> = {
            let mut st = self.lock_state();
            let now = Instant::now();
            windows(start, len)
                .filter(|w| st.extents.hint_due(ino, *w, now))
                .collect()
        };
        if due.is_empty() {
            return;
        }
        let Some(client) = self.this.get().and_then(std::sync::Weak::upgrade) else {
            return;
        };
        tokio::spawn(async move {
            for w in due {
                if let Err(e) = client.fetch_extent_window(ino, w, generation).await {
                    tracing::debug!(inode = %ino, window = w, "holder hint refresh failed: {e}");
                }
            }
        });
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
                None => self.fetch_extent_window(ino, w, generation).await?,
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
        let mut holders = Vec::new();
        for list in &lists {
            for e in list.extents.iter() {
                if !extents.contains(e) {
                    extents.push(*e);
                }
            }
            sums.extend(list.sums.iter().cloned());
            for h in &list.holders {
                if !holders.contains(h) {
                    holders.push(*h);
                }
            }
        }
        Ok(Arc::new(
            ExtentList::new(extents, sums).with_holders(holders),
        ))
    }
}

/// What a log read of a file range gave: the range's bytes, and each piece's log bytes as
/// read (`(range, bytes)`: the piece's log range, widened to whole checksum chunks where it
/// was checked).
struct RangeRead {
    data: Bytes,
    copies: Vec<(LogPtr, Bytes)>,
}

/// Reads log bytes `ptr`, checked against `sums` where given (then read widened to whole
/// chunks): `(range read, its bytes, the bytes of ptr)`.
async fn read_piece(
    reader: &LogReader,
    ptr: LogPtr,
    sums: Option<ChunkSums>,
) -> Result<(LogPtr, Bytes, Bytes), String> {
    let (range, bytes) = match sums {
        Some(s) => {
            let w = chunksum::widen(ptr);
            (
                w,
                reader
                    .read_checked(w, &s)
                    .await
                    .map_err(|e| e.to_string())?,
            )
        }
        None => (ptr, reader.read(ptr).await.map_err(|e| e.to_string())?),
    };
    if bytes.len() != range.len as usize {
        return Err(format!(
            "read returned {} bytes of {}",
            bytes.len(),
            range.len
        ));
    }
    let from = (ptr.offset - range.offset) as usize;
    let exact = bytes.slice(from..from + ptr.len as usize);
    Ok((range, bytes, exact))
}

/// The log copy of block bytes `ptr` among what a range read got (`copies`): the bytes of
/// `ptr` widened to whole chunks when `checked`, else of `ptr` itself.
fn copy_of(ptr: LogPtr, checked: bool, copies: &[(LogPtr, Bytes)]) -> Option<LogCopy> {
    let want = if checked { chunksum::widen(ptr) } else { ptr };
    copies.iter().find_map(|(r, b)| {
        let inside = r.seg == want.seg
            && r.offset <= want.offset
            && want.offset as u64 + want.len as u64 <= r.offset as u64 + r.len as u64;
        inside.then(|| {
            let from = (want.offset - r.offset) as usize;
            LogCopy {
                ptr,
                range: want,
                bytes: b.slice(from..from + want.len as usize),
            }
        })
    })
}
