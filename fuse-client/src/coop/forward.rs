//! N-chance forwarding, the runtime shell around the pure `nchance` core: feeds it the
//! singlets the block cache evicted and the forwards peers offer, and carries out its
//! commands — sending `ForwardBlock`s in the background (bounded in time and in number,
//! `MAX_SENDING`), keeping the
//! forwarded blocks it accepts (at most `max_held`, apart from the block cache), counting
//! accepted and dropped forwards. It also remembers where this client's own singlets went
//! (bounded), so that its next miss of one asks that peer first.
//!
//! Must not: block a runtime thread (every lock here is short and never held across an
//! await), or keep more than `max_held` forwarded blocks. Where forwarded blocks went
//! reaches the managers as hints, batched by the client's hint sender (`take_hints`); the
//! receiver does not report dropping one, which costs a later reader a fallback, never a
//! wrong answer.

use super::nchance::{Command, Event, NChance, DEFAULT_N};
use super::stats::CoopCounters;
use bytes::Bytes;
use proto::chunksum;
use proto::ids::{InodeId, LogPtr};
use proto::msg::{HolderHint, PeerRequest, PeerResponse, Request, Response};
use proto::transport::Transport;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

/// How long a forward may take before it counts as dropped.
pub const FORWARD_TIMEOUT: Duration = Duration::from_secs(2);
/// Forwards one client sends at once at most. Each is a whole block over the network and
/// costs the receiver as much as a peer read; past the bound an evicted singlet is dropped,
/// as when no peer is known. While forwards complete quickly the bound never bites; under
/// load it keeps them from competing with reads (unbounded, they made reads with
/// cooperation slower than without it: README, cooperative caching).
pub const MAX_SENDING: usize = 4;
/// Peers remembered as forward targets at most.
const MAX_PEERS: usize = 64;
/// Where our own singlets went, remembered at most (past it the memory starts over).
const MAX_SENT: usize = 1 << 16;
/// Holder hints waiting for the next batch to the managers, at most (past it: dropped).
const MAX_PENDING_HINTS: usize = 4096;

/// The extent window (inode, `GetExtents` offset) a block was read through.
pub type Window = (InodeId, u64);

/// A forwarded block's bytes: log range `range` (its `ptr`, or `ptr` widened to whole
/// checksum chunks).
#[derive(Clone, Debug)]
pub struct Held {
    pub range: LogPtr,
    pub bytes: Bytes,
}

struct State {
    core: NChance,
    held: HashMap<LogPtr, Held>,
    /// Bytes of blocks this client is forwarding right now (taken out of `held` or from
    /// the cache's evictions, with the window of our own), until the command that sends
    /// them runs.
    leaving: HashMap<LogPtr, (Held, Option<Window>)>,
    peers: Vec<SocketAddr>,
    sent: HashMap<LogPtr, SocketAddr>,
    /// Where our forwarded singlets went, for the managers' holder directories (sent in
    /// batches by the client's hint sender, `take_hints`).
    hints: Vec<HolderHint>,
}

/// The N-chance state of one client.
pub struct Forwarding {
    state: Mutex<State>,
    transport: Weak<Transport>,
    /// Forwards being sent now (at most `MAX_SENDING`).
    sending: Sending,
}

/// Counts the forwards in flight; each holds a `SendPermit` until its send ended.
#[derive(Clone, Default)]
struct Sending(Arc<AtomicUsize>);

/// One forward's place among those in flight, given back when dropped.
struct SendPermit(Arc<AtomicUsize>);

impl Sending {
    /// A place for one more forward, unless `max` are in flight.
    fn try_start(&self, max: usize) -> Option<SendPermit> {
        self.0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| SendPermit(self.0.clone()))
    }
}

impl Drop for SendPermit {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The longest block a peer may forward (the block cache's block).
pub const MAX_FORWARD_LEN: u32 = 64 << 10;

/// Whether `ptr` is at most a block, `range` is `ptr` or `ptr` widened to whole checksum
/// chunks, and `bytes` is that long: a forward any other way is refused.
pub fn well_formed(ptr: LogPtr, range: LogPtr, bytes: &Bytes) -> bool {
    ptr.len <= MAX_FORWARD_LEN
        && (range == ptr || range == chunksum::widen(ptr))
        && bytes.len() == range.len as usize
}

impl Forwarding {
    /// At most `max_held` forwarded blocks kept here.
    pub fn new(transport: &Arc<Transport>, max_held: usize) -> Forwarding {
        Forwarding {
            state: Mutex::new(State {
                core: NChance::new(DEFAULT_N, max_held),
                held: HashMap::new(),
                leaving: HashMap::new(),
                peers: Vec::new(),
                sent: HashMap::new(),
                hints: Vec::new(),
            }),
            transport: Arc::downgrade(transport),
            sending: Sending::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Peers named by a manager's hint: forward targets from now on.
    pub fn learn_peers(&self, hint: &[SocketAddr]) {
        if hint.is_empty() {
            return;
        }
        let mut st = self.lock();
        let mut changed = false;
        for p in hint {
            if !st.peers.contains(p) {
                if st.peers.len() >= MAX_PEERS {
                    st.peers.remove(0);
                }
                st.peers.push(*p);
                changed = true;
            }
        }
        if changed {
            let peers = st.peers.clone();
            st.core.on_event(Event::Peers(peers));
        }
    }

    /// The holder hints gathered since the last call (for `ManagerRequest::HolderHints`).
    pub fn take_hints(&self) -> Vec<HolderHint> {
        std::mem::take(&mut self.lock().hints)
    }

    /// The peer our singlet `ptr` was forwarded to, if we remember one.
    pub fn sent_to(&self, ptr: &LogPtr) -> Option<SocketAddr> {
        self.lock().sent.get(ptr).copied()
    }

    /// A forwarded block held here (for a peer that asks).
    pub fn held(&self, ptr: &LogPtr) -> Option<Held> {
        self.lock().held.get(ptr).cloned()
    }

    /// A forwarded block held here, read by this client: it leaves the forwarded set (the
    /// caller caches it as an ordinary block).
    pub fn take_referenced(&self, ptr: &LogPtr) -> Option<Held> {
        let mut st = self.lock();
        let h = st.held.remove(ptr)?;
        st.core.on_event(Event::Referenced { ptr: *ptr });
        Some(h)
    }

    /// Singlets the block cache evicted (`ptr`, log range and bytes, the window it was
    /// read through).
    pub fn evicted(
        self: &Arc<Self>,
        counters: &Arc<CoopCounters>,
        blocks: Vec<(LogPtr, Held, Option<Window>)>,
    ) {
        if blocks.is_empty() {
            return;
        }
        let cmds = {
            let mut st = self.lock();
            for (ptr, h, window) in blocks {
                st.leaving.insert(ptr, (h, window));
                st.core.on_event(Event::Evicted {
                    ptr,
                    singlet: true,
                    pick: rand::random(),
                });
            }
            st.core.drain()
        };
        self.run(counters, cmds);
    }

    /// A peer's `ForwardBlock`: kept or refused (the answer to send back).
    pub fn offered(
        self: &Arc<Self>,
        counters: &Arc<CoopCounters>,
        from: SocketAddr,
        ptr: LogPtr,
        held: Held,
        recirc: u8,
    ) -> PeerResponse {
        if !well_formed(ptr, held.range, &held.bytes) {
            counters.forward_dropped();
            return PeerResponse::Refused;
        }
        let cmds = {
            let mut st = self.lock();
            st.core.on_event(Event::Offered {
                ptr,
                recirc,
                from,
                pick: rand::random(),
            });
            let cmds = st.core.drain();
            // Displaced blocks leave with their bytes (before the new one is stored).
            for c in &cmds {
                if let Command::Forward { ptr: p, .. } | Command::Dropped { ptr: p } = c {
                    if let Some(h) = st.held.remove(p) {
                        st.leaving.insert(*p, (h, None));
                    }
                }
            }
            if cmds.contains(&Command::Accept { ptr }) {
                st.held.insert(ptr, held);
            }
            cmds
        };
        let accepted = cmds.contains(&Command::Accept { ptr });
        self.run(counters, cmds);
        if accepted {
            PeerResponse::Accepted
        } else {
            PeerResponse::Refused
        }
    }

    /// Carries out the core's commands: counts, and sends forwards in the background.
    fn run(self: &Arc<Self>, counters: &Arc<CoopCounters>, cmds: Vec<Command>) {
        for c in cmds {
            match c {
                Command::Accept { .. } => counters.forward_accepted(),
                Command::Refuse { .. } => counters.forward_dropped(),
                Command::Dropped { ptr } => {
                    self.lock().leaving.remove(&ptr);
                    counters.forward_dropped();
                }
                Command::Forward { to, ptr, recirc } => {
                    let Some((h, window)) = self.lock().leaving.remove(&ptr) else {
                        continue;
                    };
                    let Some(transport) = self.transport.upgrade() else {
                        continue;
                    };
                    let Some(permit) = self.sending.try_start(MAX_SENDING) else {
                        counters.forward_dropped();
                        continue;
                    };
                    let this = self.clone();
                    let counters = counters.clone();
                    tokio::spawn(async move {
                        let req = Request::Peer(PeerRequest::ForwardBlock {
                            ptr,
                            range: h.range,
                            recirc,
                        });
                        let r = transport
                            .call_timeout(to, &req, h.bytes, FORWARD_TIMEOUT)
                            .await;
                        drop(permit);
                        match r {
                            Ok((Response::Peer(PeerResponse::Accepted), _)) => {
                                let mut st = this.lock();
                                if st.sent.len() >= MAX_SENT {
                                    st.sent.clear();
                                }
                                st.sent.insert(ptr, to);
                                if let (Some((ino, offset)), true) =
                                    (window, st.hints.len() < MAX_PENDING_HINTS)
                                {
                                    st.hints.push(HolderHint {
                                        ino,
                                        offset,
                                        holder: to,
                                    });
                                }
                            }
                            Ok((other, _)) => {
                                tracing::debug!(peer = %to, "forward of {ptr} not kept: {other}");
                                counters.forward_dropped();
                            }
                            Err(e) => {
                                tracing::debug!(peer = %to, "forward of {ptr} failed: {e}");
                                counters.forward_dropped();
                            }
                        }
                    });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::ids::{LogId, SegmentAddr, SegmentId};

    fn ptr(offset: u32, len: u32) -> LogPtr {
        LogPtr {
            seg: SegmentAddr {
                log: LogId(1),
                segment: SegmentId(2),
                len: 1 << 24,
                k: 4,
                m: 2,
                nodes: 6,
            },
            offset,
            len,
        }
    }

    #[test]
    fn forwards_in_flight_are_bounded() {
        let s = Sending::default();
        let permits: Vec<SendPermit> = (0..MAX_SENDING)
            .map(|_| s.try_start(MAX_SENDING).expect("room"))
            .collect();
        assert!(s.try_start(MAX_SENDING).is_none(), "full");
        drop(permits);
        assert!(s.try_start(MAX_SENDING).is_some(), "given back");
        assert_eq!(s.0.load(Ordering::Acquire), 0);
    }

    #[test]
    fn forwards_are_at_most_a_block_of_the_right_range() {
        assert_eq!(MAX_FORWARD_LEN as u64, crate::data::cache::BLOCK);
        let p = ptr(100, 65536);
        let w = chunksum::widen(p);
        assert!(well_formed(p, w, &Bytes::from(vec![0; w.len as usize])));
        assert!(well_formed(p, p, &Bytes::from(vec![0; 65536])));
        assert!(!well_formed(p, w, &Bytes::from(vec![0; 65536])), "short");
        assert!(!well_formed(p, ptr(0, 65536), &Bytes::from(vec![0; 65536])));
        let big = ptr(0, 1 << 20);
        assert!(!well_formed(big, big, &Bytes::from(vec![0; 1 << 20])));
    }
}
