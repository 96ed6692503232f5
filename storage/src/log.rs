//! The striped log: `LogWriter` appends segments as k+m erasure-coded fragments on the
//! segment's stripe group; `LogReader` reads byte ranges back (reconstructing from parity
//! when fragments are missing or corrupt, and, given the writer's end-to-end checksums,
//! when fragments are well formed but hold other bytes: `read_checked`), lists a log's
//! segments and deletes them.
//! Owns the fragment layout of a segment; must not interpret segment contents.
//!
//! Fragment layout: fragment size `fs = ceil(len / k)`; data fragment `i` holds segment bytes
//! `[i*fs, (i+1)*fs)`, the last zero-padded, and every fragment (data and parity) is stored
//! with its full `fs` bytes. Reed-Solomon works byte position by byte position, so bytes
//! `[a, b)` of any fragment can be rebuilt from bytes `[a, b)` of any k others.

use crate::erasure::{Erasure, ErasureError, RsCodec};
pub use crate::error::LogError;
use crate::error::{ClientCallError, PieceError};
use crate::health::DownList;
use crate::rpc::StorageClient;
use crate::segment::{SegmentError, MAX_SEGMENT};
use crate::store::lock;
use crate::stripe::{stripe_group, StripeMember};
use bytes::{Bytes, BytesMut};
use futures::stream::{FuturesUnordered, StreamExt};
use proto::chunksum::{self, ChunkSums};
use proto::config::ClusterConfig;
use proto::ids::{FragmentId, LogId, LogPtr, NodeId, SegmentAddr, SegmentId};
use proto::live::LiveConfig;
use proto::msg::{FragmentMeta, CODEC_RS_GF8_RSE};
use proto::transport::Transport;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

/// After enough fragments are durable, stragglers get this long (plus the time the others
/// took) before the append returns without them.
const STRAGGLER_GRACE: Duration = Duration::from_secs(1);
/// A server that could not be reached is skipped by reads for this long.
const SUSPECT_FOR: Duration = Duration::from_secs(3);

type CodecCache = HashMap<(u8, u8), Arc<RsCodec>>;

/// Codecs are built once per (k, m) and shared (they cache decode matrices).
pub(crate) fn codec(k: u8, m: u8) -> Result<Arc<RsCodec>, ErasureError> {
    static CODECS: LazyLock<Mutex<CodecCache>> = LazyLock::new(Default::default);
    let mut codecs = lock(&CODECS);
    if let Some(c) = codecs.get(&(k, m)) {
        return Ok(c.clone());
    }
    let c = Arc::new(RsCodec::new(k as usize, m as usize)?);
    codecs.insert((k, m), c.clone());
    Ok(c)
}

/// Fragments needed for an append to count as durable: all of them for m <= 1, else k+1
/// (Ceph's min_size rule for erasure-coded pools). When servers are *unreachable* (not
/// refusing), an append with only k fragments is still accepted, with a warning that the
/// stripe has no redundancy left, so that the file system stays writable with m servers
/// down; `shoal rebuild` (not built yet) is what would restore the missing fragments.
pub fn write_quorum(k: u8, m: u8) -> usize {
    (k as usize + m as usize).min(k as usize + 1)
}

/// Splits a segment into k padded data fragments and m parity fragments (CPU work).
pub fn encode_fragments(segment: &Bytes, k: u8, m: u8) -> Result<Vec<Bytes>, ErasureError> {
    encode_fragments_reusing(segment, k, m, Vec::new())
}

/// `encode_fragments` with parity computed into the buffers of `spare` where there are any
/// (their contents do not matter; they are resized to the fragment size), so that a writer
/// reusing the parity buffers of its last segment does not allocate and zero new ones.
/// Data fragments are slices of `segment` (no copies), except a zero-padded last one.
pub fn encode_fragments_reusing(
    segment: &Bytes,
    k: u8,
    m: u8,
    mut spare: Vec<Vec<u8>>,
) -> Result<Vec<Bytes>, ErasureError> {
    let len = segment.len();
    let k_us = k as usize;
    if k_us == 0 {
        return Err(ErasureError::Layout {
            k: 0,
            m: m as usize,
            reason: "k must be at least 1".into(),
        });
    }
    let fs = len.div_ceil(k_us);
    let data: Vec<Bytes> = (0..k_us)
        .map(|i| {
            let start = (i * fs).min(len);
            let end = ((i + 1) * fs).min(len);
            if end - start == fs {
                segment.slice(start..end)
            } else {
                let mut v = Vec::with_capacity(fs);
                v.extend_from_slice(&segment[start..end]);
                v.resize(fs, 0);
                Bytes::from(v)
            }
        })
        .collect();
    let refs: Vec<&[u8]> = data.iter().map(|d| &d[..]).collect();
    let mut parity: Vec<Vec<u8>> = (0..m as usize)
        .map(|_| {
            let mut b = spare.pop().unwrap_or_default();
            b.resize(fs, 0);
            b
        })
        .collect();
    let mut outs: Vec<&mut [u8]> = parity.iter_mut().map(Vec::as_mut_slice).collect();
    codec(k, m)?.encode_into(&refs, &mut outs)?;
    Ok(data
        .into_iter()
        .chain(parity.into_iter().map(Bytes::from))
        .collect())
}

/// A probe of a server believed down must answer within this.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// A server that refused a put for want of space is avoided by new stripes for this long
/// (where a spare server has room; else it is tried again, space may have been freed).
const FULL_FOR: Duration = Duration::from_secs(10);

/// Appends segments to one writer's log.
pub struct LogWriter {
    shared: Arc<WriterShared>,
    next: SegmentId,
    /// The probes in flight; aborted when the writer goes, so that none keeps the
    /// transport (and its bound port) alive after its owner stopped.
    probes: tokio::task::JoinSet<()>,
}

/// What the appends of one writer share; an append started with `LogWriter::start` holds
/// it, so that several segments of one log can be in flight at once.
struct WriterShared {
    /// Read once per segment: a running writer follows storage nodes added to the cluster.
    live: Arc<LiveConfig>,
    client: StorageClient,
    log: LogId,
    /// Servers believed down (a put could not reach them, and no probe has since): new
    /// stripes avoid them; probes run in the background (`crate::health`).
    down: Arc<Mutex<DownList>>,
    /// Servers that refused a put for want of space, until when new stripes avoid them.
    full: Mutex<HashMap<SocketAddr, Instant>>,
    /// Parity buffer sets of finished segments, taken back once no put held them any more
    /// (at most `SPARE_SETS`: one per segment in flight).
    spare_parity: Mutex<Vec<Vec<Vec<u8>>>>,
}

/// Parity buffer sets a writer keeps for reuse.
const SPARE_SETS: usize = 4;

impl LogWriter {
    /// A writer for `log` whose next segment is `next`, by a config that never changes.
    pub fn new(
        config: Arc<ClusterConfig>,
        transport: Arc<Transport>,
        log: LogId,
        next: SegmentId,
    ) -> LogWriter {
        LogWriter::following(LiveConfig::new(config), transport, log, next)
    }

    /// A writer that places each new segment by the config `live` holds when it starts.
    pub fn following(
        live: Arc<LiveConfig>,
        transport: Arc<Transport>,
        log: LogId,
        next: SegmentId,
    ) -> LogWriter {
        LogWriter {
            shared: Arc::new(WriterShared {
                live,
                client: StorageClient::new(transport),
                log,
                down: Arc::new(Mutex::new(DownList::new())),
                full: Mutex::new(HashMap::new()),
                spare_parity: Mutex::new(Vec::new()),
            }),
            next,
            probes: tokio::task::JoinSet::new(),
        }
    }

    pub fn log(&self) -> LogId {
        self.shared.log
    }

    /// The id the next `append` (or `start`) will use.
    pub fn next_segment(&self) -> SegmentId {
        self.next
    }

    /// Stripes `segment` (bytes from `SegmentBuilder::finish` for `next_segment()`) and
    /// returns once durable: at least `write_quorum(k, m)` fragments stored. On error the id
    /// is burnt, the next append uses the next one, and the fragments that did land are
    /// deleted (best effort) so the failed segment is not listed later. A server that
    /// refuses for want of space fails the stripe: it is placed again around the full
    /// servers (same id, same bytes) while that changes it, else `LogError::NoSpace`.
    pub async fn append(&mut self, segment: Bytes) -> Result<SegmentAddr, LogError> {
        self.start(segment).await
    }

    /// `append`, with the id taken now (`next_segment()`, then the next one) and the work
    /// done by the returned future, which borrows nothing: the caller may start the next
    /// segment before this one is durable, and run several at once (each is durable, or
    /// failed, on its own; the caller decides what a failure means for the others).
    pub fn start(
        &mut self,
        segment: Bytes,
    ) -> impl std::future::Future<Output = Result<SegmentAddr, LogError>> + Send + 'static {
        let seg = self.next;
        self.next = SegmentId(seg.0.wrapping_add(1));
        self.start_probes();
        let shared = self.shared.clone();
        async move { shared.append_at(seg, segment).await }
    }

    /// Probes, in the background, the servers believed down whose probe is due (a `Stat`
    /// that must answer within `PROBE_TIMEOUT`, from a server that is not draining); one
    /// that answers is used by new stripes again.
    fn start_probes(&mut self) {
        // Reap the probes that ended (their outcome is in `down` already).
        while self.probes.try_join_next().is_some() {}
        let due = lock(&self.shared.down).probes_due(Instant::now());
        for addr in due {
            let (client, down, log) = (
                self.shared.client.clone(),
                self.shared.down.clone(),
                self.shared.log,
            );
            self.probes.spawn(async move {
                let r = tokio::time::timeout(PROBE_TIMEOUT, client.stat(addr)).await;
                let up = matches!(&r, Ok(Ok(st)) if !st.draining);
                let mut d = lock(&down);
                if up {
                    tracing::info!(log = %log, server = %addr, "storage server reachable again: new stripes use it");
                    d.reached(addr);
                } else {
                    tracing::debug!(log = %log, server = %addr, "probe: still down");
                    d.probe_failed(addr, Instant::now());
                }
            });
        }
    }
}

impl WriterShared {
    /// The body of `LogWriter::append` for segment id `seg`.
    async fn append_at(&self, seg: SegmentId, segment: Bytes) -> Result<SegmentAddr, LogError> {
        let config = self.live.current();
        let (k, m) = (config.file.erasure.data, config.file.erasure.parity);
        let needed = write_quorum(k, m);
        let name = format!("{}/{}", self.log, seg);
        let fail = |acked: usize, detail: String| LogError::NotDurable {
            seg: name.clone(),
            acked,
            needed,
            detail,
        };
        if segment.is_empty() {
            return Err(LogError::Segment(SegmentError::Malformed(
                "an empty segment cannot be appended".into(),
            )));
        }
        if segment.len() as u64 > MAX_SEGMENT {
            return Err(LogError::Segment(SegmentError::TooLarge(MAX_SEGMENT)));
        }
        let len = segment.len() as u32;
        let width = crate::stripe::width_now(&config);
        let home = stripe_group(&config, self.log, seg, k, m, width)
            .map_err(|e| fail(0, e.to_string()))?;
        let spare = lock(&self.spare_parity).pop().unwrap_or_default();
        let frags = tokio::task::spawn_blocking(move || {
            encode_fragments_reusing(&segment, k, m, spare).map(|f| {
                f.into_iter()
                    .map(|b| (proto::crc32c(&b), b))
                    .collect::<Vec<_>>()
            })
        })
        .await
        .map_err(|e| fail(0, format!("encoding task failed: {e}")))?
        .map_err(|e| fail(0, format!("encoding failed: {e}")))?;
        let mut tried: Vec<Vec<StripeMember>> = Vec::new();
        let result = loop {
            let mut group = self.place(&config, &home);
            let started = Instant::now();
            let mut put = self
                .put_stripe(seg, &group, &frags, (k, m, width), len, needed, None)
                .await;
            if put.full.is_empty() && put.durable.len() < group.len() {
                // Servers that could not be reached are now believed down: put their
                // fragments on spare servers holding none of the stripe, so that the
                // stripe still gets all k+m fragments when there are enough live servers.
                let again = self.place(&config, &home);
                let spares: Vec<StripeMember> = again
                    .iter()
                    .zip(&group)
                    .filter(|(to, from)| to.addr != from.addr && !put.durable.contains(from))
                    .map(|(to, _)| *to)
                    .collect();
                if !spares.is_empty() {
                    tracing::info!(log = %self.log, segment = %seg, "putting {} fragment(s) on spare servers: {}", spares.len(), put.problems.join("; "));
                    let retry = self
                        .put_stripe(
                            seg,
                            &spares,
                            &frags,
                            (k, m, width),
                            len,
                            spares.len(),
                            Some(started.elapsed()),
                        )
                        .await;
                    for moved in &retry.durable {
                        group[moved.index as usize] = *moved;
                    }
                    put.durable.extend(retry.durable);
                    put.problems.extend(retry.problems);
                    put.only_unreachable &= retry.only_unreachable;
                    put.full.extend(retry.full);
                }
            }
            let detail = put.problems.join("; ");
            if !put.full.is_empty() {
                // A server refused for want of space: the stripe is not written (a stripe
                // never silently loses redundancy to a full server). Try once more with the
                // full servers avoided when that changes the stripe, else report no space.
                self.delete_landed(seg, &put.durable).await;
                let now = Instant::now();
                {
                    let mut full = lock(&self.full);
                    for a in &put.full {
                        full.insert(*a, now + FULL_FOR);
                    }
                }
                tried.push(group);
                let next = self.place(&config, &home);
                if tried.len() < 3 && !tried.contains(&next) {
                    tracing::info!(log = %self.log, segment = %seg, "storage server(s) full, placing the stripe around them: {detail}");
                    continue;
                }
                tracing::warn!(log = %self.log, segment = %seg, "no space for the segment: {detail}");
                break Err(LogError::NoSpace {
                    seg: name.clone(),
                    detail,
                });
            }
            let acked = put.durable.len();
            let last_resort = acked >= k as usize && acked < needed && put.only_unreachable;
            if last_resort {
                proto::warn_limited!(log = %self.log, segment = %seg, acked, needed, "segment written with NO redundancy left ({} servers unreachable): {detail}", group.len() - acked);
            }
            if acked < needed && !last_resort {
                tracing::warn!(log = %self.log, segment = %seg, acked, needed, "append failed: {detail}");
                // Best effort: remove what landed so that the failed segment is not listed later.
                self.delete_landed(seg, &put.durable).await;
                break Err(fail(acked, detail));
            }
            if acked < group.len() {
                proto::warn_limited!(log = %self.log, segment = %seg, acked, total = group.len(), "segment written degraded: {detail}");
            }
            break Ok(SegmentAddr {
                log: self.log,
                segment: seg,
                len,
                k,
                m,
                nodes: width,
            });
        };
        // Keep the parity buffers for a next segment where no abandoned put still holds
        // them (a put in flight keeps its own reference; those buffers are simply dropped).
        let set: Vec<Vec<u8>> = frags
            .into_iter()
            .skip(k as usize)
            .filter_map(|(_, b)| b.try_into_mut().ok().map(Vec::from))
            .collect();
        if !set.is_empty() {
            let mut spare = lock(&self.spare_parity);
            if spare.len() < SPARE_SETS {
                spare.push(set);
            }
        }
        result
    }

    /// The stripe group of a segment whose home is `home`, with members on servers known
    /// to be down or full moved to spare servers where there are any.
    fn place(&self, config: &ClusterConfig, home: &[StripeMember]) -> Vec<StripeMember> {
        let now = Instant::now();
        let mut full = lock(&self.full);
        full.retain(|_, until| *until > now);
        let down = lock(&self.down).clone();
        if down.is_empty() && full.is_empty() {
            return home.to_vec();
        }
        let nodes: Vec<(NodeId, SocketAddr)> = config
            .storage_nodes()
            .iter()
            .map(|n| (n.id, n.address))
            .collect();
        crate::stripe::avoid_down(home, &nodes, |a| down.is_down(a) || full.contains_key(&a))
    }

    /// Deletes (best effort) the fragments of `seg` that landed on `durable`.
    async fn delete_landed(&self, seg: SegmentId, durable: &[StripeMember]) {
        let deletes = durable.iter().map(|member| {
            let id = FragmentId {
                log: self.log,
                segment: seg,
                index: member.index,
            };
            self.client.delete(member.addr, id)
        });
        futures::future::join_all(deletes).await;
    }

    /// Puts fragment `member.index` of `frags` on each member of `group`, all at once;
    /// returns once every put answered, or stragglers were given up on: `needed` puts
    /// durable and as long again as they took plus `STRAGGLER_GRACE` passed (with
    /// `needed` 0: `after` plus the grace from the start). A server that could not be
    /// reached, or a straggler, is believed down from then on (`crate::health`).
    #[allow(clippy::too_many_arguments)]
    async fn put_stripe(
        &self,
        seg: SegmentId,
        group: &[StripeMember],
        frags: &[(u32, Bytes)],
        (k, m, width): (u8, u8, u16),
        len: u32,
        needed: usize,
        after: Option<Duration>,
    ) -> StripePut {
        let started = Instant::now();
        let mut puts = FuturesUnordered::new();
        for member in group {
            let Some((crc, payload)) = frags.get(member.index as usize) else {
                continue;
            };
            let id = FragmentId {
                log: self.log,
                segment: seg,
                index: member.index,
            };
            let meta = FragmentMeta {
                codec: CODEC_RS_GF8_RSE,
                k,
                m,
                segment_len: len,
                crc32c: *crc,
                nodes: width,
            };
            let client = self.client.clone();
            let member = *member;
            let payload = payload.clone();
            puts.push(async move {
                (
                    member,
                    client.put_fragment(member.addr, id, meta, payload).await,
                )
            });
        }
        let mut out = StripePut {
            durable: Vec::new(),
            problems: Vec::new(),
            only_unreachable: true,
            full: Vec::new(),
        };
        let mut deadline: Option<tokio::time::Instant> =
            after.map(|a| tokio::time::Instant::now() + a + STRAGGLER_GRACE);
        let mut pending: Vec<StripeMember> = group.to_vec();
        loop {
            let next = match deadline {
                None => puts.next().await,
                Some(d) => match tokio::time::timeout_at(d, puts.next()).await {
                    Ok(n) => n,
                    Err(_) => {
                        let now = Instant::now();
                        let mut down = lock(&self.down);
                        for p in &pending {
                            if !down.is_down(p.addr) {
                                tracing::warn!(log = %self.log, server = %p.addr, "storage server did not answer a put: new stripes avoid it until a probe reaches it");
                            }
                            down.unreachable(p.addr, now);
                        }
                        out.problems.push(format!(
                            "{} fragment(s) still in flight were abandoned ({})",
                            puts.len(),
                            pending
                                .iter()
                                .map(|p| format!("f{} on {}", p.index, p.addr))
                                .collect::<Vec<_>>()
                                .join(", ")
                        ));
                        break;
                    }
                },
            };
            let Some((member, result)) = next else { break };
            pending.retain(|p| *p != member);
            match result {
                Ok(()) => {
                    lock(&self.down).reached(member.addr);
                    out.durable.push(member)
                }
                Err(e) => {
                    out.only_unreachable &= e.is_unavailable();
                    if e.is_unavailable() {
                        let mut down = lock(&self.down);
                        if !down.is_down(member.addr) {
                            tracing::warn!(log = %self.log, server = %member.addr, "storage server unreachable ({e}): new stripes avoid it until a probe reaches it");
                        }
                        down.unreachable(member.addr, Instant::now());
                    }
                    if e.is_no_space() {
                        out.full.push(member.addr);
                    }
                    out.problems.push(format!(
                        "f{} on {} ({}): {e}",
                        member.index, member.node, member.addr
                    ))
                }
            }
            if out.durable.len() >= needed && deadline.is_none() && !puts.is_empty() {
                deadline = Some(tokio::time::Instant::now() + started.elapsed() + STRAGGLER_GRACE);
            }
        }
        out
    }
}

/// What became of the puts of one stripe.
struct StripePut {
    durable: Vec<StripeMember>,
    problems: Vec<String>,
    /// Whether every failure was a server that could not be reached.
    only_unreachable: bool,
    /// Servers that refused for want of space.
    full: Vec<SocketAddr>,
}

/// One contiguous piece of a read that falls in one data fragment.
#[derive(Clone, Copy, Debug)]
struct Piece {
    index: usize,
    /// Offset inside the fragment.
    frag_off: u32,
    len: u32,
    /// Offset inside the output.
    out_off: usize,
}

/// Maps bytes `[offset, offset+len)` of a segment of `seg_len` bytes striped over `k` data
/// fragments onto per-fragment pieces.
fn pieces(seg_len: u32, k: u8, offset: u32, len: u32) -> Vec<Piece> {
    let fs = (seg_len as u64).div_ceil(k as u64).max(1);
    let (start, end) = (offset as u64, offset as u64 + len as u64);
    let mut out = Vec::new();
    let mut pos = start;
    while pos < end {
        let index = pos / fs;
        let frag_end = ((index + 1) * fs).min(end);
        out.push(Piece {
            index: index as usize,
            frag_off: (pos - index * fs) as u32,
            len: (frag_end - pos) as u32,
            out_off: (pos - start) as usize,
        });
        pos = frag_end;
    }
    out
}

/// Checks above this many bytes run on the blocking pool, not on the async runtime.
const VERIFY_INLINE: usize = 256 << 10;

/// `sums.verify(at, bytes)`, on the blocking pool when `bytes` is large (CRC32C runs at
/// several GB/s: small reads are checked in place).
async fn verify_off_runtime(sums: &ChunkSums, at: u32, bytes: Bytes) -> Result<(), u32> {
    if bytes.len() <= VERIFY_INLINE {
        return sums.verify(at, &bytes);
    }
    let sums = sums.clone();
    tokio::task::spawn_blocking(move || sums.verify(at, &bytes))
        .await
        .unwrap_or(Err(at))
}

struct ReaderInner {
    live: Arc<LiveConfig>,
    /// The epoch at which a wait for a newer config ended without one (`config_for`).
    waited_in_vain: AtomicU64,
    client: StorageClient,
    /// Servers that recently could not be reached, until when: reads skip them (go
    /// degraded at once) instead of paying a timeout on every read.
    suspects: Mutex<HashMap<SocketAddr, Instant>>,
    /// Segments whose fragments were found away from their placement's home, with when.
    moved: Mutex<HashMap<(LogId, SegmentId), Located>>,
}

/// Where a stripe's fragments were found, and when.
type Located = (Instant, Vec<StripeMember>);

/// A located stripe is trusted this long before the servers are asked again.
const LOCATED_FOR: Duration = Duration::from_secs(60);
/// Most located stripes remembered by one reader.
const LOCATED_MAX: usize = 16_384;

/// How long a read of a segment placed over more storage nodes than this reader knows
/// waits for the follower to install the newer config (then it reads by what it has:
/// `locate` still finds the fragments on the servers it knows).
const NEWER_CONFIG_WAIT: Duration = Duration::from_secs(3);

impl ReaderInner {
    /// The config to find `seg`'s stripe by: one that knows every storage node the stripe
    /// was placed over (asking the follower for a newer one first if needed).
    async fn config_for(&self, seg: SegmentAddr) -> Arc<ClusterConfig> {
        let c = self.live.current();
        let epoch = c.file.epoch;
        if seg.nodes as usize <= c.storage_nodes().len()
            || !self.live.is_followed()
            || self.waited_in_vain.load(Ordering::Relaxed) == epoch
        {
            return c;
        }
        tracing::debug!(segment = %seg, known = c.storage_nodes().len(), "segment placed over storage nodes this reader does not know yet: asking for the newer config");
        self.live.want_newer();
        if !self.live.wait_newer(epoch, NEWER_CONFIG_WAIT).await {
            // Do not wait again at this epoch: read by what is known (`locate`).
            self.waited_in_vain.store(epoch, Ordering::Relaxed);
        }
        self.live.current()
    }

    fn cached_location(&self, seg: SegmentAddr) -> Option<Vec<StripeMember>> {
        let moved = lock(&self.moved);
        match moved.get(&(seg.log, seg.segment)) {
            Some((at, g)) if at.elapsed() < LOCATED_FOR => Some(g.clone()),
            _ => None,
        }
    }

    /// Asks every storage server not recently unreachable where the fragments of `seg`
    /// are, and returns `group` with each found fragment's server replaced by a holder
    /// (the home server when it still holds it). Remembers stripes that moved.
    async fn locate(&self, seg: SegmentAddr, group: &[StripeMember]) -> Vec<StripeMember> {
        let nodes: Vec<(NodeId, SocketAddr)> = self
            .live
            .current()
            .storage_nodes()
            .iter()
            .map(|n| (n.id, n.address))
            .filter(|(_, a)| !self.is_suspect(*a))
            .collect();
        let addrs: Vec<SocketAddr> = nodes.iter().map(|(_, a)| *a).collect();
        let loc = crate::locate::locate_segment(&self.client, &addrs, seg.log, seg.segment).await;
        for (addr, _) in &loc.unreachable {
            lock(&self.suspects).insert(*addr, Instant::now() + SUSPECT_FOR);
        }
        let located: Vec<StripeMember> = group
            .iter()
            .map(|m| match loc.holders.get(&m.index) {
                Some(holders) if !holders.contains(&m.addr) => {
                    let addr = holders[0];
                    let node = nodes
                        .iter()
                        .find(|(_, a)| *a == addr)
                        .map(|(n, _)| *n)
                        .unwrap_or(m.node);
                    StripeMember {
                        index: m.index,
                        node,
                        addr,
                    }
                }
                _ => *m,
            })
            .collect();
        if located != group {
            let mut moved = lock(&self.moved);
            if moved.len() >= LOCATED_MAX {
                moved.clear();
            }
            moved.insert((seg.log, seg.segment), (Instant::now(), located.clone()));
        }
        located
    }

    fn is_suspect(&self, addr: SocketAddr) -> bool {
        let mut suspects = lock(&self.suspects);
        match suspects.get(&addr) {
            Some(until) if Instant::now() < *until => true,
            Some(_) => {
                suspects.remove(&addr);
                false
            }
            None => false,
        }
    }

    /// Reads a range of one fragment, keeping the suspect list up to date.
    async fn fetch(
        &self,
        addr: SocketAddr,
        id: FragmentId,
        off: u32,
        len: u32,
    ) -> Result<Bytes, ClientCallError> {
        let r = self.client.read_range(addr, id, off, len).await;
        match &r {
            Ok(_) => {
                lock(&self.suspects).remove(&addr);
            }
            Err(e) if e.is_unavailable() => {
                lock(&self.suspects).insert(addr, Instant::now() + SUSPECT_FOR);
            }
            Err(_) => {}
        }
        r
    }
}

/// Reads any log; shared and cheap to clone.
#[derive(Clone)]
pub struct LogReader {
    inner: Arc<ReaderInner>,
}

impl LogReader {
    /// A reader by a config that never changes.
    pub fn new(config: Arc<ClusterConfig>, transport: Arc<Transport>) -> LogReader {
        LogReader::following(LiveConfig::new(config), transport)
    }

    /// A reader that finds stripes by the config `live` holds.
    pub fn following(live: Arc<LiveConfig>, transport: Arc<Transport>) -> LogReader {
        LogReader {
            inner: Arc::new(ReaderInner {
                live,
                waited_in_vain: AtomicU64::new(u64::MAX),
                client: StorageClient::new(transport),
                suspects: Mutex::new(HashMap::new()),
                moved: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Reads the bytes at `ptr`, reconstructing from parity when needed.
    pub async fn read(&self, ptr: LogPtr) -> Result<Bytes, LogError> {
        let seg = ptr.seg;
        let what = ptr.to_string();
        let unreadable = |available: usize, detail: String| LogError::Unreadable {
            what: what.clone(),
            available,
            needed: seg.k as usize,
            detail,
        };
        if ptr.offset as u64 + ptr.len as u64 > seg.len as u64 {
            return Err(unreadable(
                0,
                format!("the range runs past the segment's {} bytes", seg.len),
            ));
        }
        if ptr.len == 0 {
            return Ok(Bytes::new());
        }
        let home = stripe_group(
            &*self.inner.config_for(seg).await,
            seg.log,
            seg.segment,
            seg.k,
            seg.m,
            seg.nodes,
        )
        .map_err(|e| unreadable(0, e.to_string()))?;
        // Where the fragments were last found, if they moved (rebuild); else their home.
        let mut group = self.inner.cached_location(seg).unwrap_or(home);
        let pieces = pieces(seg.len, seg.k, ptr.offset, ptr.len);
        // Cheap path: each piece from its data fragment, in parallel.
        let fetches = pieces.iter().map(|p| {
            let member = group[p.index];
            let id = FragmentId {
                log: seg.log,
                segment: seg.segment,
                index: member.index,
            };
            async move {
                if self.inner.is_suspect(member.addr) {
                    return Err(PieceError::Suspect(member.addr));
                }
                Ok(self.inner.fetch(member.addr, id, p.frag_off, p.len).await?)
            }
        });
        let results = futures::future::join_all(fetches).await;
        if pieces.len() == 1 {
            if let Some(Ok(b)) = results.first() {
                return Ok(b.clone());
            }
        }
        if results.iter().all(Result::is_ok) {
            // Pieces are contiguous and in output order: join them without zeroing first.
            let mut out = BytesMut::with_capacity(ptr.len as usize);
            for b in results.iter().flatten() {
                out.extend_from_slice(b);
            }
            return Ok(out.freeze());
        }
        let mut out = BytesMut::zeroed(ptr.len as usize);
        let mut failed = Vec::new();
        for (p, r) in pieces.iter().zip(results) {
            match r {
                Ok(b) => out[p.out_off..p.out_off + p.len as usize].copy_from_slice(&b),
                Err(e) => failed.push((*p, e)),
            }
        }
        if failed.is_empty() {
            return Ok(out.freeze());
        }
        // Fragments may have moved (rebuilt onto other servers): ask the servers where they
        // are now and retry the failed pieces there.
        let located = self.inner.locate(seg, &group).await;
        if located != group {
            let mut still = Vec::new();
            for (p, e) in failed {
                let member = located[p.index];
                if member.addr == group[p.index].addr {
                    still.push((p, e));
                    continue;
                }
                let id = FragmentId {
                    log: seg.log,
                    segment: seg.segment,
                    index: member.index,
                };
                match self.inner.fetch(member.addr, id, p.frag_off, p.len).await {
                    Ok(b) => out[p.out_off..p.out_off + p.len as usize].copy_from_slice(&b),
                    Err(e2) => still.push((
                        p,
                        PieceError::Moved {
                            first: Box::new(e),
                            to: member.addr,
                            then: Box::new(e2.into()),
                        },
                    )),
                }
            }
            failed = still;
            group = located;
            if failed.is_empty() {
                return Ok(out.freeze());
            }
        }
        // Degraded path: rebuild the failed pieces' byte range from any k other fragments.
        let lo = failed.iter().map(|(p, _)| p.frag_off).min().unwrap_or(0);
        let hi = failed
            .iter()
            .map(|(p, _)| p.frag_off + p.len)
            .max()
            .unwrap_or(0);
        let mut detail: Vec<String> = failed
            .iter()
            .map(|(p, e)| format!("f{}: {e}", p.index))
            .collect();
        tracing::debug!(ptr = %ptr, "degraded read: {}", detail.join("; "));
        let exclude: BTreeSet<usize> = failed.iter().map(|(p, _)| p.index).collect();
        let shards = self
            .fetch_any_k(seg, &group, &exclude, lo, hi - lo, &mut detail)
            .await;
        let shards = shards.map_err(|available| unreadable(available, detail.join("; ")))?;
        let (k, m) = (seg.k, seg.m);
        let rebuilt = tokio::task::spawn_blocking(move || {
            let mut shards = shards;
            codec(k, m)?.reconstruct_data(&mut shards)?;
            Ok::<_, ErasureError>(shards)
        })
        .await
        .map_err(|e| unreadable(k as usize, format!("reconstruction task failed: {e}")))?
        .map_err(|e| unreadable(k as usize, format!("reconstruction failed: {e}")))?;
        for (p, _) in &failed {
            let Some(shard) = rebuilt.get(p.index).and_then(|s| s.as_ref()) else {
                return Err(unreadable(
                    k as usize,
                    format!("fragment {} was not reconstructed", p.index),
                ));
            };
            let from = (p.frag_off - lo) as usize;
            out[p.out_off..p.out_off + p.len as usize]
                .copy_from_slice(&shard[from..from + p.len as usize]);
        }
        Ok(out.freeze())
    }

    /// Reads the bytes at `ptr` and checks them against the writer's end-to-end checksums
    /// `sums` (`proto::chunksum`): the read is widened to whole chunks, and when a chunk does
    /// not match, the range is read from every fragment of the stripe and decoded from k
    /// fragments that give matching bytes (up to m wrong fragments are outvoted). When no k
    /// do, the read fails (`LogError::Corrupt`): wrong bytes are never returned. Checksums
    /// that do not cover `ptr` (or name another segment) leave the read unchecked.
    pub async fn read_checked(&self, ptr: LogPtr, sums: &ChunkSums) -> Result<Bytes, LogError> {
        if ptr.len == 0 || sums.for_ptr(&ptr).is_none() {
            return self.read(ptr).await;
        }
        let w = chunksum::widen(ptr);
        let from = (ptr.offset - w.offset) as usize;
        let cut = |b: &Bytes| b.slice(from..from + ptr.len as usize);
        let first = match self.read(w).await {
            Ok(b) => match verify_off_runtime(sums, w.offset, b.clone()).await {
                Ok(()) => return Ok(cut(&b)),
                Err(at) => Some(at),
            },
            // Too few fragments for the plain read: the search below reads them all too.
            Err(e) => {
                tracing::debug!(ptr = %ptr, "checked read: plain read failed: {e}");
                None
            }
        };
        if let Some(at) = first {
            tracing::warn!(segment = %ptr.seg, offset = at, "end-to-end checksum mismatch: decoding from other fragments");
        }
        match self.read_consistent(w, sums).await {
            Ok(found) => {
                if first.is_some() {
                    proto::ops_metrics::checksum_mismatch(true);
                    tracing::warn!(segment = %ptr.seg, offset = w.offset, len = w.len, "end-to-end checksum: decoded bytes that match after {} tries; data fragment(s) {:?} hold other bytes", found.tried, found.wrong);
                }
                let b = Bytes::from(found.bytes);
                Ok(cut(&b))
            }
            Err(e) => {
                if let Some(at) = first {
                    proto::ops_metrics::checksum_mismatch(false);
                    tracing::error!(segment = %ptr.seg, offset = at, "end-to-end checksum: no fragments decode to matching bytes: {e}");
                }
                Err(e)
            }
        }
    }

    /// Reads `w` (whole chunks) from every fragment of its stripe and decodes it from k
    /// fragments whose result `sums` accept.
    async fn read_consistent(
        &self,
        w: LogPtr,
        sums: &ChunkSums,
    ) -> Result<crate::checked::Consistent, LogError> {
        let seg = w.seg;
        let what = w.to_string();
        let fail = |detail: String| LogError::Corrupt {
            what: what.clone(),
            offset: w.offset,
            needed: seg.k as usize,
            detail,
        };
        let home = stripe_group(
            &*self.inner.config_for(seg).await,
            seg.log,
            seg.segment,
            seg.k,
            seg.m,
            seg.nodes,
        )
        .map_err(|e| fail(e.to_string()))?;
        let group = self.inner.locate(seg, &home).await;
        let ps = pieces(seg.len, seg.k, w.offset, w.len);
        let lo = ps.iter().map(|p| p.frag_off).min().unwrap_or(0);
        let hi = ps.iter().map(|p| p.frag_off + p.len).max().unwrap_or(0);
        let fetches = group.iter().map(|member| {
            let id = FragmentId {
                log: seg.log,
                segment: seg.segment,
                index: member.index,
            };
            async move { self.inner.fetch(member.addr, id, lo, hi - lo).await }
        });
        let mut shards: Vec<Option<Vec<u8>>> = vec![None; group.len()];
        let mut detail = Vec::new();
        for (member, r) in group.iter().zip(futures::future::join_all(fetches).await) {
            match r {
                Ok(b) if b.len() == (hi - lo) as usize => {
                    if let Some(s) = shards.get_mut(member.index as usize) {
                        *s = Some(b.to_vec());
                    }
                }
                Ok(b) => detail.push(format!("f{} returned {} bytes", member.index, b.len())),
                Err(e) => detail.push(format!("f{} on {}: {e}", member.index, member.addr)),
            }
        }
        let places: Vec<crate::checked::Place> = ps
            .iter()
            .map(|p| crate::checked::Place {
                index: p.index,
                at: (p.frag_off - lo) as usize,
                len: p.len as usize,
                out_off: p.out_off,
            })
            .collect();
        let (k, m) = (seg.k, seg.m);
        let sums = sums.clone();
        let (at, out_len) = (w.offset, w.len as usize);
        let present = shards.iter().flatten().count();
        let found = tokio::task::spawn_blocking(move || {
            let codec = codec(k, m).ok()?;
            crate::checked::decode_checked(&*codec, k as usize, &shards, &places, out_len, |b| {
                sums.verify(at, b).is_ok()
            })
        })
        .await
        .map_err(|e| fail(format!("decode task failed: {e}")))?;
        found.ok_or_else(|| {
            detail.push(format!(
                "{present} fragments read, no {k} of them decode to matching bytes"
            ));
            fail(detail.join("; "))
        })
    }

    /// Fetches bytes `[off, off+len)` of any k fragments not in `exclude` (data fragments
    /// first). Err carries how many were available.
    async fn fetch_any_k(
        &self,
        seg: SegmentAddr,
        group: &[StripeMember],
        exclude: &BTreeSet<usize>,
        off: u32,
        len: u32,
        detail: &mut Vec<String>,
    ) -> Result<Vec<Option<Vec<u8>>>, usize> {
        let k = seg.k as usize;
        // Data fragments first (cheapest to decode), recently unreachable servers last.
        let mut ordered: Vec<&StripeMember> = group
            .iter()
            .filter(|m| !exclude.contains(&(m.index as usize)))
            .collect();
        ordered.sort_by_key(|m| (self.inner.is_suspect(m.addr), m.index));
        let mut candidates = ordered.into_iter();
        let mut shards: Vec<Option<Vec<u8>>> = vec![None; group.len()];
        let mut got = 0;
        let mut running = FuturesUnordered::new();
        let fetch = |member: StripeMember| {
            let id = FragmentId {
                log: seg.log,
                segment: seg.segment,
                index: member.index,
            };
            async move { (member, self.inner.fetch(member.addr, id, off, len).await) }
        };
        for member in candidates.by_ref().take(k) {
            running.push(fetch(*member));
        }
        while let Some((member, r)) = running.next().await {
            match r {
                Ok(b) => {
                    shards[member.index as usize] = Some(b.to_vec());
                    got += 1;
                    if got == k {
                        return Ok(shards);
                    }
                }
                Err(e) => {
                    detail.push(format!("f{} on {}: {e}", member.index, member.addr));
                    if let Some(next) = candidates.next() {
                        running.push(fetch(*next));
                    }
                }
            }
        }
        Err(got)
    }

    /// Reads a whole segment.
    pub async fn read_segment(&self, seg: SegmentAddr) -> Result<Bytes, LogError> {
        self.read(LogPtr {
            seg,
            offset: 0,
            len: seg.len,
        })
        .await
    }

    /// Every segment of `log` found on the storage servers, in order (for recovery). A
    /// segment is listed when at least k of its fragments are; up to m servers may be
    /// unreachable.
    pub async fn list_segments(&self, log: LogId) -> Result<Vec<SegmentAddr>, LogError> {
        Ok(self.list_segments_seen(log).await?.0)
    }

    /// `list_segments`, and the highest segment id of which *any* fragment was found (also
    /// one with fewer than k: what a failed append leaves when its deletes did not reach
    /// every server). A writer that continues the log must start above it, so that no
    /// segment id is ever reused (a leftover fragment would read as part of the new one).
    /// A segment placed over more storage nodes than this reader's config knows may keep
    /// fewer than k fragments on the known ones: the reader then waits for the newer config
    /// (if a follower keeps it) and lists again, and fails rather than list short.
    pub async fn list_segments_seen(
        &self,
        log: LogId,
    ) -> Result<(Vec<SegmentAddr>, Option<SegmentId>), LogError> {
        let (listed, highest, widest) = self.list_once(log).await?;
        let known = self.inner.live.current().storage_nodes().len();
        if widest as usize <= known {
            return Ok((listed, highest));
        }
        let epoch = self.inner.live.epoch();
        if self.inner.live.is_followed() {
            tracing::info!(log = %log, widest, known, "segments placed over storage nodes this node does not know yet: waiting for the newer cluster config");
            self.inner.live.want_newer();
            self.inner
                .live
                .wait_newer(epoch, NEWER_CONFIG_WAIT * 4)
                .await;
        }
        let known = self.inner.live.current().storage_nodes().len();
        if widest as usize > known {
            return Err(LogError::Unreadable {
                what: format!("the segment list of {log}"),
                available: known,
                needed: widest as usize,
                detail: format!(
                    "segments are placed over {widest} storage nodes, this node's cluster config (epoch {}) knows {known}: give it the cluster's current cluster.toml",
                    self.inner.live.epoch()
                ),
            });
        }
        let (listed, highest, _) = self.list_once(log).await?;
        Ok((listed, highest))
    }

    /// One listing by the config in force: the segments, the highest id seen, and the
    /// widest placement any fragment records.
    async fn list_once(
        &self,
        log: LogId,
    ) -> Result<(Vec<SegmentAddr>, Option<SegmentId>, u16), LogError> {
        let config = self.inner.live.current();
        let nodes: Vec<(String, std::net::SocketAddr)> = config
            .storage_nodes()
            .iter()
            .map(|n| (n.name.clone(), n.address))
            .collect();
        let tolerated = config.file.erasure.parity as usize;
        let lists = futures::future::join_all(
            nodes
                .iter()
                .map(|(_, addr)| self.inner.client.list_log(*addr, log)),
        )
        .await;
        let mut found: BTreeMap<SegmentId, (FragmentMeta, BTreeSet<u8>)> = BTreeMap::new();
        let mut failures = Vec::new();
        let mut denied = 0;
        for ((name, addr), r) in nodes.iter().zip(lists) {
            match r {
                Ok(frags) => {
                    for f in frags {
                        found
                            .entry(f.id.segment)
                            .or_insert_with(|| (f.meta, BTreeSet::new()))
                            .1
                            .insert(f.id.index);
                    }
                }
                Err(e) => {
                    if matches!(
                        e,
                        ClientCallError::Remote(proto::msg::RemoteError::Denied { .. })
                    ) {
                        denied += 1;
                    }
                    failures.push(format!("{name} ({addr}): {e}"))
                }
            }
        }
        if failures.len() > tolerated && denied > 0 {
            return Err(LogError::Refused {
                what: format!("the segment list of {log}"),
                detail: failures.join("; "),
            });
        }
        if failures.len() > tolerated {
            return Err(LogError::Unreadable {
                what: format!("the segment list of {log}"),
                available: nodes.len() - failures.len(),
                needed: nodes.len() - tolerated,
                detail: failures.join("; "),
            });
        }
        if !failures.is_empty() {
            tracing::warn!(log = %log, "listing segments without {} storage node(s): {}", failures.len(), failures.join("; "));
        }
        let highest = found.keys().next_back().copied();
        let widest = found
            .values()
            .map(|(meta, _)| meta.nodes)
            .max()
            .unwrap_or(0);
        let listed = found
            .into_iter()
            .filter(|(_, (meta, idx))| idx.len() >= meta.k.max(1) as usize)
            .map(|(segment, (meta, _))| SegmentAddr {
                log,
                segment,
                len: meta.segment_len,
                k: meta.k,
                m: meta.m,
                nodes: meta.nodes,
            })
            .collect();
        Ok((listed, highest, widest))
    }

    /// Deletes every fragment of a segment (best effort on unreachable servers).
    pub async fn delete_segment(&self, seg: SegmentAddr) -> Result<(), LogError> {
        let group = stripe_group(
            &*self.inner.config_for(seg).await,
            seg.log,
            seg.segment,
            seg.k,
            seg.m,
            seg.nodes,
        )
        .map_err(|e| LogError::Unreadable {
            what: seg.to_string(),
            available: 0,
            needed: seg.k as usize,
            detail: e.to_string(),
        })?;
        // Rebuilt fragments live away from home: delete every copy the servers know of.
        let servers: Vec<SocketAddr> = self
            .inner
            .live
            .current()
            .storage_nodes()
            .iter()
            .map(|n| n.address)
            .collect();
        let loc =
            crate::locate::locate_segment(&self.inner.client, &servers, seg.log, seg.segment).await;
        let mut targets: BTreeSet<(u8, SocketAddr)> =
            group.iter().map(|m| (m.index, m.addr)).collect();
        for (i, holders) in &loc.holders {
            targets.extend(holders.iter().map(|a| (*i, *a)));
        }
        let deletes = targets.into_iter().map(|(index, addr)| {
            let id = FragmentId {
                log: seg.log,
                segment: seg.segment,
                index,
            };
            async move { ((index, addr), self.inner.client.delete(addr, id).await) }
        });
        for ((index, addr), r) in futures::future::join_all(deletes).await {
            if let Err(e) = r {
                proto::warn_limited!(segment = %seg, fragment = index, addr = %addr, "delete failed: {e}");
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn pieces_cover_the_range_exactly(seg_len in 1u32..100_000, k in 1u8..8, a in any::<u32>(), b in any::<u32>()) {
            let offset = a % seg_len;
            let len = b % (seg_len - offset + 1);
            let fs = (seg_len as u64).div_ceil(k as u64);
            let ps = pieces(seg_len, k, offset, len);
            let mut next = offset as u64;
            let mut out = 0usize;
            for p in &ps {
                prop_assert!(p.index < k as usize);
                prop_assert!(p.len > 0);
                prop_assert!(p.frag_off as u64 + p.len as u64 <= fs);
                prop_assert_eq!(p.index as u64 * fs + p.frag_off as u64, next);
                prop_assert_eq!(p.out_off, out);
                next += p.len as u64;
                out += p.len as usize;
            }
            prop_assert_eq!(next, offset as u64 + len as u64);
        }

        #[test]
        fn reused_parity_buffers_give_the_same_fragments(data in proptest::collection::vec(any::<u8>(), 1..5000), junk in proptest::collection::vec(any::<u8>(), 0..3000)) {
            let seg = Bytes::from(data);
            let fresh = encode_fragments(&seg, 4, 2).expect("encode");
            let spare = vec![junk.clone(), junk];
            let reused = encode_fragments_reusing(&seg, 4, 2, spare).expect("encode");
            prop_assert_eq!(fresh, reused);
        }

        #[test]
        fn encoded_fragments_hold_the_segment(data in proptest::collection::vec(any::<u8>(), 1..5000), k in 1u8..6, m in 0u8..3) {
            let seg = Bytes::from(data.clone());
            let frags = encode_fragments(&seg, k, m).expect("encode");
            let fs = data.len().div_ceil(k as usize);
            prop_assert_eq!(frags.len(), k as usize + m as usize);
            prop_assert!(frags.iter().all(|f| f.len() == fs));
            let joined: Vec<u8> = frags[..k as usize].iter().flat_map(|f| f.iter().copied()).collect();
            prop_assert_eq!(&joined[..data.len()], &data[..]);
            prop_assert!(joined[data.len()..].iter().all(|&b| b == 0));
        }
    }

    #[test]
    fn quorum_follows_min_size() {
        assert_eq!(write_quorum(4, 2), 5);
        assert_eq!(write_quorum(4, 1), 5);
        assert_eq!(write_quorum(4, 0), 4);
        assert_eq!(write_quorum(1, 2), 2);
    }
}
