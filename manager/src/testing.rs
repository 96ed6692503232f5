//! Test doubles of the manager's ports, shipped only to tests (`cfg(test)`) and to crates
//! that enable the `testing` feature (benches, other crates' tests): `MemLog` (an
//! in-memory `LogBackend` with fault knobs: failed or slow appends, failed listings, unreadable
//! segments, crashes after N writes), `LoopbackPeers` (in-process calls between
//! `Service`s) and `NoCallbacks` (a `CallbackSender` that never reaches a client).
//! Must not: be used by the product (the `shoal` binary builds without the feature).

use crate::backend::LogBackend;
use crate::error::{CallbackError, ManagerError};
use crate::service::{CallbackSender, Peers, Service};
use bytes::Bytes;
use proto::ids::{LogId, NodeId, SegmentAddr, SegmentId};
use proto::msg::{ClientCallback, ManagerRequest, ManagerResponse, RemoteError};
use proto::transport::BoxFuture;
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use storage::segment::EntryKind;

#[derive(Default)]
struct MemInner {
    segments: BTreeMap<u64, Vec<(EntryKind, Bytes)>>,
    unreadable: BTreeSet<u64>,
    next: u64,
    /// Appends and deletes done (successful or not).
    writes: usize,
    crash: Option<Crash>,
}

/// A simulated crash: `after` more writes succeed, then the process "dies": the next write
/// lands or not (`lands`) and reports failure, and every later one fails without effect.
#[derive(Clone, Copy)]
struct Crash {
    after: usize,
    lands: bool,
}

/// What a write does under a simulated crash.
enum Fate {
    Ok,
    LandAndFail,
    Fail,
}

/// An in-memory log with fault knobs, for tests: clones share the same segments, so a
/// "restarted" manager sees what the previous one wrote.
#[derive(Clone, Default)]
pub struct MemLog {
    inner: Arc<Mutex<MemInner>>,
    fail_appends: Arc<AtomicUsize>,
    unlisted: Arc<AtomicUsize>,
    /// Milliseconds every delete takes (a busy disk).
    delete_ms: Arc<std::sync::atomic::AtomicU64>,
    /// Milliseconds every append takes (a stalled log).
    append_ms: Arc<std::sync::atomic::AtomicU64>,
}

impl MemLog {
    pub fn new() -> MemLog {
        MemLog::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, MemInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn addr(seg: u64) -> SegmentAddr {
        SegmentAddr {
            log: LogId(0),
            segment: SegmentId(seg),
            len: 0,
            k: 1,
            m: 0,
            nodes: 0,
        }
    }

    /// The next `n` appends fail (their segment ids are burnt, as with the real log).
    pub fn fail_next_appends(&self, n: usize) {
        self.fail_appends.store(n, Ordering::SeqCst);
    }

    /// Every delete takes `d` from now on (storage servers busy unlinking).
    pub fn slow_deletes(&self, d: Duration) {
        self.delete_ms.store(d.as_millis() as u64, Ordering::SeqCst);
    }

    /// Every append takes `d` from now on (the log's storage servers stall).
    pub fn slow_appends(&self, d: Duration) {
        self.append_ms.store(d.as_millis() as u64, Ordering::SeqCst);
    }

    /// The next `n` listings fail (storage unreachable).
    pub fn fail_next_lists(&self, n: usize) {
        self.unlisted.store(n, Ordering::SeqCst);
    }

    /// Makes a segment unreadable (e.g. a torn write at the tail).
    pub fn make_unreadable(&self, seg: u64) {
        self.lock().unreadable.insert(seg);
    }

    /// Makes a segment readable again (its storage servers are back).
    pub fn make_readable(&self, seg: u64) {
        self.lock().unreadable.remove(&seg);
    }

    /// Ids of the segments present.
    pub fn segment_ids(&self) -> Vec<u64> {
        self.lock().segments.keys().copied().collect()
    }

    /// Kinds of the entries of each segment present.
    pub fn kinds(&self) -> Vec<(u64, Vec<EntryKind>)> {
        self.lock()
            .segments
            .iter()
            .map(|(s, e)| (*s, e.iter().map(|(k, _)| *k).collect()))
            .collect()
    }

    /// Drops every segment from `seg` on (a crash that lost them before they were acked).
    pub fn truncate_from(&self, seg: u64) {
        self.lock().segments.retain(|s, _| *s < seg);
    }

    /// Simulates a crash at a write: `after` more appends/deletes succeed; the next one
    /// lands (when `lands`) or not, and fails; every later write fails without effect
    /// until `heal`.
    pub fn crash_after(&self, after: usize, lands: bool) {
        self.lock().crash = Some(Crash { after, lands });
    }

    /// Ends a simulated crash (the "restarted" process writes normally).
    pub fn heal(&self) {
        self.lock().crash = None;
    }

    /// Appends and deletes attempted so far.
    pub fn writes(&self) -> usize {
        self.lock().writes
    }

    /// The entries of a segment (for tests that inspect what was written).
    pub fn entries(&self, seg: u64) -> Option<Vec<(EntryKind, Bytes)>> {
        self.lock().segments.get(&seg).cloned()
    }
}

impl MemInner {
    fn fate(&mut self) -> Fate {
        self.writes += 1;
        match &mut self.crash {
            None => Fate::Ok,
            Some(c) if c.after > 0 => {
                c.after -= 1;
                Fate::Ok
            }
            Some(c) if c.lands => {
                c.lands = false;
                Fate::LandAndFail
            }
            Some(_) => Fate::Fail,
        }
    }
}

/// Sleeps for the milliseconds `ms` holds (a slow-operation knob; 0: no pause).
async fn pause(ms: &std::sync::atomic::AtomicU64) {
    let ms = ms.load(Ordering::SeqCst);
    if ms > 0 {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
}

fn take_one(a: &AtomicUsize) -> bool {
    a.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
}

impl LogBackend for MemLog {
    fn append(
        &self,
        kind: EntryKind,
        payload: Bytes,
    ) -> BoxFuture<'_, Result<SegmentAddr, ManagerError>> {
        Box::pin(async move {
            pause(&self.append_ms).await;
            let mut g = self.lock();
            let seg = g.next;
            g.next += 1;
            if take_one(&self.fail_appends) {
                return Err(ManagerError::Backend(format!(
                    "injected append failure of seg{seg}"
                )));
            }
            match g.fate() {
                Fate::Ok => {}
                Fate::LandAndFail => {
                    g.segments.insert(seg, vec![(kind, payload)]);
                    return Err(ManagerError::Backend(format!(
                        "injected crash after seg{seg} landed"
                    )));
                }
                Fate::Fail => {
                    return Err(ManagerError::Backend(format!(
                        "injected crash before seg{seg}"
                    )))
                }
            }
            g.segments.insert(seg, vec![(kind, payload)]);
            Ok(MemLog::addr(seg))
        })
    }

    fn list(&self) -> BoxFuture<'_, Result<Vec<SegmentAddr>, ManagerError>> {
        Box::pin(async move {
            if take_one(&self.unlisted) {
                return Err(ManagerError::Backend(
                    "injected: storage unreachable".into(),
                ));
            }
            Ok(self
                .lock()
                .segments
                .keys()
                .map(|s| MemLog::addr(*s))
                .collect())
        })
    }

    fn read(
        &self,
        seg: SegmentAddr,
    ) -> BoxFuture<'_, Result<Vec<(EntryKind, Bytes)>, ManagerError>> {
        Box::pin(async move {
            let g = self.lock();
            if g.unreadable.contains(&seg.segment.0) {
                return Err(ManagerError::Backend(format!(
                    "injected: seg{} unreadable",
                    seg.segment.0
                )));
            }
            g.segments
                .get(&seg.segment.0)
                .cloned()
                .ok_or_else(|| ManagerError::Backend(format!("no seg{}", seg.segment.0)))
        })
    }

    fn delete(&self, seg: SegmentAddr) -> BoxFuture<'_, Result<(), ManagerError>> {
        Box::pin(async move {
            pause(&self.delete_ms).await;
            let mut g = self.lock();
            match g.fate() {
                Fate::Ok => {}
                Fate::LandAndFail => {
                    g.segments.remove(&seg.segment.0);
                    return Err(ManagerError::Backend(format!(
                        "injected crash after deleting seg{}",
                        seg.segment.0
                    )));
                }
                Fate::Fail => {
                    return Err(ManagerError::Backend(format!(
                        "injected crash before deleting seg{}",
                        seg.segment.0
                    )))
                }
            }
            g.segments.remove(&seg.segment.0);
            Ok(())
        })
    }

    fn set_next(&self, next: SegmentId) {
        self.lock().next = next.0;
    }

    fn next_segment(&self) -> SegmentId {
        SegmentId(self.lock().next)
    }
}

/// For managers that never call clients back (no transport): every callback fails, so
/// holders run out at their lease expiry.
pub struct NoCallbacks;

impl CallbackSender for NoCallbacks {
    fn send(
        &self,
        to: SocketAddr,
        _cb: ClientCallback,
        _timeout: Duration,
    ) -> BoxFuture<'_, Result<(), CallbackError>> {
        Box::pin(async move { Err(CallbackError::NoChannel(to)) })
    }
}

/// In-process peers for tests and single-process clusters: calls go straight to the
/// `Service` of the target node.
#[derive(Default)]
pub struct LoopbackPeers {
    services: Mutex<std::collections::HashMap<NodeId, std::sync::Weak<Service>>>,
    down: Mutex<std::collections::HashSet<NodeId>>,
    /// Nodes to which `TxFinish` fails as unreachable (a lost decision).
    finish_lost: Mutex<std::collections::HashSet<NodeId>>,
}

impl LoopbackPeers {
    pub fn new() -> Arc<LoopbackPeers> {
        Arc::new(LoopbackPeers::default())
    }

    pub fn register(&self, svc: &Arc<Service>) {
        self.services
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(svc.node(), Arc::downgrade(svc));
    }

    /// Makes calls to `node` fail as unreachable (or reachable again).
    pub fn set_down(&self, node: NodeId, down: bool) {
        mark(&self.down, node, down);
    }

    /// Makes `TxFinish` calls to `node` fail as unreachable (or pass again): the
    /// participant resolves its prepared part by asking the coordinator instead.
    pub fn set_finish_lost(&self, node: NodeId, lost: bool) {
        mark(&self.finish_lost, node, lost);
    }
}

/// Puts `node` in `set` (`on`) or takes it out.
fn mark(set: &Mutex<std::collections::HashSet<NodeId>>, node: NodeId, on: bool) {
    let mut s = set.lock().unwrap_or_else(|e| e.into_inner());
    if on {
        s.insert(node);
    } else {
        s.remove(&node);
    }
}

impl Peers for LoopbackPeers {
    fn call(
        &self,
        node: NodeId,
        req: ManagerRequest,
    ) -> BoxFuture<'_, Result<ManagerResponse, RemoteError>> {
        Box::pin(async move {
            let marked = |set: &Mutex<std::collections::HashSet<NodeId>>| {
                set.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .contains(&node)
            };
            if marked(&self.down) {
                return Err(RemoteError::Unavailable(format!("{node} is down (test)")));
            }
            if matches!(req, ManagerRequest::TxFinish { .. }) && marked(&self.finish_lost) {
                return Err(RemoteError::Unavailable(format!(
                    "TxFinish to {node} lost (test)"
                )));
            }
            let svc = self
                .services
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(&node)
                .and_then(|w| w.upgrade());
            match svc {
                Some(s) => s.handle(None, req).await,
                None => Err(RemoteError::Unavailable(format!("{node} is not running"))),
            }
        })
    }
}
