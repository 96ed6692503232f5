//! `LeaseTable`: the pure core of volume leases and callbacks (DESIGN.md §4, notes/leases.md).
//! It knows client sessions (peer address, lease expiry, lost flag), which sessions cache
//! which inodes (readers) and which session buffers writes to an inode (writer), and turns
//! events (requests, callback outcomes) into callbacks to send. Time is passed in as `now`.
//! Must not: do I/O, read clocks, use tokio, or touch the metadata state.

use crate::record::Record;
use proto::ids::InodeId;
use proto::msg::{ClientCallback, LeaseExtension, LeaseGrant, TxOp};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// A client session id (chosen by the client, sent in `Hello`/`Renew`), and the number of
/// an outstanding callback.
pub use proto::ids::{CallbackId, SessionId};

/// How long past a holder's lease expiry the manager waits for a callback answer.
pub const CALLBACK_MARGIN: Duration = Duration::from_millis(200);
/// How far `extend_callback` moves a deadline at a time.
pub const EXTEND_STEP: Duration = Duration::from_millis(250);
/// Grace after a restart, on top of one lease: mutations are refused meanwhile (clients may
/// still cache under read leases of the previous incarnation that nobody can call back).
pub const GRACE_EXTRA: Duration = Duration::from_millis(500);
/// How long, in leases (+ `GRACE_EXTRA`), a write lease recorded before a restart may be
/// reclaimed, and its inode's readers and writers wait for that: longer than grace, because a
/// client learns of the restart only when a renewal reaches the new incarnation (its old
/// connection must time out first), and its writes stay buffered meanwhile.
pub const RECLAIM_LEASES: u32 = 4;
/// Sessions whose lease ran out this many leases ago release what they held (marked lost).
const FORGET_AFTER_LEASES: u32 = 20;

/// Who sent a request, as far as leases are concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Requester {
    /// No session is known for this address (another manager, a tool, an in-process call):
    /// the request is served without registering anything.
    Anonymous,
    /// A known session in good standing (its lease was just renewed).
    Session(SessionId),
    /// A session the manager gave up on: answer `LeaseExpired` until it renews.
    Lost(SessionId),
}

impl Requester {
    pub fn session(self) -> Option<SessionId> {
        match self {
            Requester::Session(s) => Some(s),
            _ => None,
        }
    }
}

/// A callback to send to a client, and how long to wait for its answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Callback {
    pub id: CallbackId,
    pub session: SessionId,
    /// Where the client's connection comes from; `None` when the session has no address
    /// (the callback then cannot be delivered and runs out at `deadline`).
    pub addr: Option<SocketAddr>,
    pub msg: ClientCallback,
    /// The holder's lease expiry plus `CALLBACK_MARGIN`: without an answer by then the
    /// holder is marked lost.
    pub deadline: Instant,
}

/// Why a reclaim (`AcquireWrite { reclaim }`) was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReclaimRefused {
    /// The session has not introduced itself to this incarnation (or was lost here).
    UnknownSession,
    /// The log recorded no write lease of the inode for this session: the lease recorded
    /// (if any) is another session's, granted later.
    NotRecorded(Option<SessionId>),
    /// Another session holds the write lease here.
    Held(SessionId),
}

impl std::fmt::Display for ReclaimRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReclaimRefused::UnknownSession => write!(f, "the session is not known here"),
            ReclaimRefused::NotRecorded(None) => {
                write!(f, "the log records no write lease of it for this session")
            }
            ReclaimRefused::NotRecorded(Some(s)) => {
                write!(
                    f,
                    "the log records a later write lease of it for session {s:x}"
                )
            }
            ReclaimRefused::Held(s) => write!(f, "session {s:x} holds it"),
        }
    }
}

/// What an operation must do before it may go on.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Go on now (registrations are already done).
    Go,
    /// Send these callbacks, wait for each (answer or deadline), report each with
    /// `callback_done`, then ask again.
    Call(Vec<Callback>),
    /// Other operations' callbacks on these inodes are outstanding: wait until one is
    /// reported (or this instant), then ask again.
    Wait(Instant),
}

/// What a mutation changes, as far as cached copies go.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Affected {
    pub inodes: BTreeSet<InodeId>,
    /// Directory entries (dir, name) that appear, disappear or change.
    pub entries: BTreeSet<(InodeId, String)>,
}

impl Affected {
    pub fn is_empty(&self) -> bool {
        self.inodes.is_empty() && self.entries.is_empty()
    }

    fn entry(&mut self, dir: InodeId, name: &str) {
        self.inodes.insert(dir);
        self.entries.insert((dir, name.to_string()));
    }

    /// What these records change.
    pub fn of_records<'a>(recs: impl IntoIterator<Item = &'a Record>) -> Affected {
        let mut a = Affected::default();
        for r in recs {
            match r {
                Record::NewInode { attr, .. } | Record::Attr { attr } => {
                    a.inodes.insert(attr.ino);
                }
                Record::Entry { dir, name, .. } | Record::EntryAt { dir, name, .. } => {
                    a.entry(*dir, name)
                }
                Record::Parent { dir, .. } => {
                    a.inodes.insert(*dir);
                }
                Record::Extents { ino, .. }
                | Record::Truncate { ino, .. }
                | Record::Xattr { ino, .. }
                | Record::Drop { ino } => {
                    a.inodes.insert(*ino);
                }
                Record::Open { .. }
                | Record::Release { .. }
                | Record::TxIntent(_)
                | Record::TxApplied { .. }
                | Record::TxDone { .. }
                | Record::TxAborted { .. }
                | Record::TxBegin(_)
                | Record::TxPrepared { .. }
                | Record::TxDecided { .. }
                | Record::TxForget { .. }
                | Record::TxResolved { .. }
                | Record::WriteLease { .. }
                | Record::WriteLeaseEnd { .. }
                | Record::Replied { .. }
                | Record::Sums(_)
                | Record::SeqFloors(_) => {}
            }
        }
        a
    }

    /// What these transaction ops change on the manager that applies them.
    pub fn of_ops<'a>(ops: impl IntoIterator<Item = &'a TxOp>) -> Affected {
        let mut a = Affected::default();
        for op in ops {
            match op {
                TxOp::CreateInode { .. } => {}
                TxOp::AddEntry { dir, name, .. } | TxOp::RemoveEntry { dir, name, .. } => {
                    a.entry(*dir, name)
                }
                TxOp::AdjustNlink { ino, .. } => {
                    a.inodes.insert(*ino);
                }
                TxOp::SetParent { dir, .. } | TxOp::RemoveDir { dir } => {
                    a.inodes.insert(*dir);
                }
            }
        }
        a
    }

    pub fn extend(&mut self, other: Affected) {
        self.inodes.extend(other.inodes);
        self.entries.extend(other.entries);
    }
}

/// Counters for benchmarks and `shoal status`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LeaseStats {
    pub invalidates_sent: u64,
    pub flushes_sent: u64,
    pub callbacks_acked: u64,
    /// Callbacks not answered by the holder's lease expiry (+ margin): holder marked lost.
    pub callbacks_timed_out: u64,
    /// Deadlines moved on because the holder's commit waited for this manager's log.
    pub callbacks_extended: u64,
    /// Holders marked lost without a callback because their lease had already run out.
    pub expired_holders: u64,
    pub hellos: u64,
    pub renewals: u64,
    /// Sessions currently known.
    pub sessions: usize,
    /// Sessions currently marked lost.
    pub lost_sessions: usize,
}

#[derive(Debug)]
struct Session {
    addr: Option<SocketAddr>,
    expires: Instant,
    lost: bool,
    /// Was ever marked lost in this incarnation (never cleared): such a session may hold
    /// writes it buffered before it was given up on, which must not be committed.
    ever_lost: bool,
    /// Times this incarnation gave up on the session (reported in grants and extensions:
    /// an answer confirming the lease after a loss the client has not yet learned of does
    /// not extend its old caches).
    losses: u32,
    /// Callbacks sent and not yet reported: the lease is not extended meanwhile.
    outstanding: u32,
    /// `CommitWrites` of this session being carried out here (waiting for the log): the
    /// session is demonstrably alive, and a Flush it answers only once its commit is
    /// durable is late through this manager's fault (`extend_callback`).
    committing: u32,
    /// Inodes this session reads or writes (the reverse of `Holders`).
    held: BTreeSet<InodeId>,
}

/// An outstanding callback that others must wait for before acting on an inode.
#[derive(Debug, Clone, Copy)]
struct Blocker {
    session: SessionId,
    deadline: Instant,
    flush: bool,
}

#[derive(Debug, Default)]
struct Holders {
    readers: BTreeSet<SessionId>,
    writer: Option<SessionId>,
    /// Bumped at every write-lease grant (also a re-grant to the same session), so that a
    /// Flush answered after its writer asked for the lease again does not take it away.
    grants: u64,
    /// Callbacks (by id) that must finish before others act on this inode: a writer's
    /// Flush, the Invalidates of an AcquireWrite. The session called back itself is never
    /// held up by them (its CommitWrites must go through while it flushes).
    blockers: BTreeMap<CallbackId, Blocker>,
}

impl Holders {
    fn is_empty(&self) -> bool {
        self.readers.is_empty() && self.writer.is_none() && self.blockers.is_empty()
    }
}

#[derive(Debug)]
enum PendingKind {
    /// `grants`: the inode's grant count when the Flush was sent.
    Flush {
        ino: InodeId,
        drop_cache: bool,
        grants: u64,
    },
    Invalidate {
        blocking: Option<InodeId>,
    },
}

impl PendingKind {
    /// The inode whose change waits for this callback, if any.
    fn blocking(&self) -> Option<InodeId> {
        match *self {
            PendingKind::Flush { ino, .. } => Some(ino),
            PendingKind::Invalidate { blocking } => blocking,
        }
    }
}

#[derive(Debug)]
struct Pending {
    session: SessionId,
    kind: PendingKind,
    deadline: Instant,
    /// The deadline `deadline` may be extended up to (`extend_callback`).
    cap: Instant,
}

/// Volume leases, read and write holders, and outstanding callbacks of one manager.
#[derive(Debug)]
pub struct LeaseTable {
    lease: Duration,
    incarnation: u64,
    grace_until: Option<Instant>,
    /// The write leases recorded in the log when this incarnation recovered (inode →
    /// session): during grace only these may be reclaimed, each by its own session.
    recovered: BTreeMap<InodeId, SessionId>,
    /// Recovered write leases not reclaimed yet: until `reclaim_until`, reads and writes of
    /// these inodes wait.
    unclaimed: BTreeSet<InodeId>,
    reclaim_until: Option<Instant>,
    /// A writer was dropped since the last `take_writers_dropped` (ends may be due).
    writers_dropped: bool,
    sessions: HashMap<SessionId, Session>,
    by_addr: HashMap<SocketAddr, SessionId>,
    inodes: HashMap<InodeId, Holders>,
    pending: HashMap<CallbackId, Pending>,
    next_id: CallbackId,
    stats: LeaseStats,
    /// Sessions forgotten since the last `take_forgotten` (their open files are released).
    forgotten: Vec<SessionId>,
}

impl LeaseTable {
    pub fn new(lease: Duration, incarnation: u64) -> LeaseTable {
        LeaseTable {
            lease,
            incarnation,
            grace_until: None,
            recovered: BTreeMap::new(),
            unclaimed: BTreeSet::new(),
            reclaim_until: None,
            writers_dropped: false,
            sessions: HashMap::new(),
            by_addr: HashMap::new(),
            inodes: HashMap::new(),
            pending: HashMap::new(),
            next_id: CallbackId(1),
            stats: LeaseStats::default(),
            forgotten: Vec::new(),
        }
    }

    /// Sessions forgotten (long expired) since the last call: the caller releases what
    /// they had open.
    pub fn take_forgotten(&mut self) -> Vec<SessionId> {
        std::mem::take(&mut self.forgotten)
    }

    pub fn lease(&self) -> Duration {
        self.lease
    }

    pub fn incarnation(&self) -> u64 {
        self.incarnation
    }

    /// After recovery of a manager that served clients before: for one lease (+ extra)
    /// the leases of the previous incarnation may still be in use, so mutations wait.
    /// `recorded` are the write leases the log says were granted and not over (inode →
    /// session): a client may have writes buffered under exactly these (a grant is durable
    /// before it is answered), so reads of these inodes wait until their writer reclaims
    /// them or grace ends; every other inode is read at once.
    pub fn start_grace(
        &mut self,
        now: Instant,
        recorded: impl IntoIterator<Item = (InodeId, SessionId)>,
    ) {
        self.grace_until = Some(now + self.lease + GRACE_EXTRA);
        self.reclaim_until = Some(now + self.lease * RECLAIM_LEASES + GRACE_EXTRA);
        self.recovered = recorded.into_iter().collect();
        self.unclaimed = self.recovered.keys().copied().collect();
    }

    pub fn in_grace(&self, now: Instant) -> bool {
        self.grace_until.is_some_and(|g| now < g)
    }

    /// Whether recorded write leases may still be reclaimed at `now` (`RECLAIM_LEASES`).
    pub fn in_reclaim(&self, now: Instant) -> bool {
        self.reclaim_until.is_some_and(|g| now < g)
    }

    /// Until when reclaims are accepted (and unclaimed inodes wait).
    pub fn reclaim_until(&self) -> Option<Instant> {
        self.reclaim_until
    }

    /// Whether a read or write of `ino` must wait at `now`: the write lease recorded for
    /// `ino` before the restart has not been reclaimed yet, and still may be.
    pub fn awaits_reclaim(&self, ino: InodeId, now: Instant) -> bool {
        self.in_reclaim(now) && self.unclaimed.contains(&ino)
    }

    /// `Step::Wait` until the end of the reclaim window if any of `inodes` awaits its
    /// reclaim.
    fn reclaim_wait(&self, inodes: &[InodeId], now: Instant) -> Option<Step> {
        if inodes.iter().any(|i| self.awaits_reclaim(*i, now)) {
            return self.reclaim_until.map(Step::Wait);
        }
        None
    }

    /// Recovered write leases not reclaimed yet (none once grace is over): while there are
    /// some, reads of those inodes wait; once every recorded writer has reclaimed, nothing
    /// waits for a reclaim any more (mutations still wait for the grace period: read leases
    /// of the previous incarnation are not recorded).
    pub fn unclaimed(&self, now: Instant) -> usize {
        if self.in_reclaim(now) {
            self.unclaimed.len()
        } else {
            0
        }
    }

    /// The recorded write leases (`recorded`: inode → session, as the log has them) that are
    /// over and may be logged as such (`Record::WriteLeaseEnd`): the session is no longer the
    /// inode's writer here, and the lease is not a recovered one still awaiting its reclaim
    /// during grace. Logging an end late is harmless (a restart waits for that inode in
    /// vain); logging it early is not, hence the caller holds the lease table and the
    /// state together when it computes and commits them.
    pub fn ended_writes<'a>(
        &self,
        recorded: impl IntoIterator<Item = (&'a InodeId, SessionId)>,
        now: Instant,
    ) -> Vec<(InodeId, SessionId)> {
        recorded
            .into_iter()
            .filter(|(ino, s)| {
                let writing = self.inodes.get(ino).and_then(|h| h.writer) == Some(*s);
                let awaited = self.awaits_reclaim(**ino, now) && self.recovered.get(ino) == Some(s);
                !writing && !awaited
            })
            .map(|(ino, s)| (*ino, s))
            .collect()
    }

    /// Whether a writer was dropped (or grace ended) since the last call: then ends of
    /// recorded write leases may be due, and a read that flushed a writer logs them without
    /// waiting for the next mutation.
    pub fn take_writers_dropped(&mut self, now: Instant) -> bool {
        if !self.unclaimed.is_empty() && !self.in_reclaim(now) {
            self.unclaimed.clear();
            self.writers_dropped = true;
        }
        std::mem::take(&mut self.writers_dropped)
    }

    /// The writer of `ino`, if any.
    pub fn writer(&self, ino: InodeId) -> Option<SessionId> {
        self.inodes.get(&ino)?.writer
    }

    pub fn grace_until(&self) -> Option<Instant> {
        self.grace_until
    }

    pub fn stats(&self) -> LeaseStats {
        LeaseStats {
            sessions: self.sessions.len(),
            lost_sessions: self.sessions.values().filter(|s| s.lost).count(),
            ..self.stats
        }
    }

    fn grant(&self, session: SessionId, lost: bool, now: Instant) -> LeaseGrant {
        LeaseGrant {
            lease_ms: self.lease.as_millis().min(u32::MAX as u128) as u32,
            valid_ms: LeaseExtension::new(self.left(session, now).unwrap_or_default(), 0, 0)
                .valid_ms,
            incarnation: self.incarnation,
            lost,
            losses: self.sessions.get(&session).map_or(0, |s| s.losses),
        }
    }

    /// The lease time `session` has left at `now`, if it is in good standing. Never more
    /// than what the table granted: while callbacks to the session are outstanding its
    /// expiry does not move, so this only shrinks.
    pub fn left(&self, session: SessionId, now: Instant) -> Option<Duration> {
        self.sessions
            .get(&session)
            .filter(|s| !s.lost)
            .map(|s| s.expires.saturating_duration_since(now))
    }

    /// The lease an answer to a request from `from` confirms (`Response::ManagerLeased`):
    /// the time its session has left at `now`, or `None` for anonymous or lost senders.
    pub fn extension_for(&self, from: Option<SocketAddr>, now: Instant) -> Option<LeaseExtension> {
        let session = *self.by_addr.get(&from?)?;
        let losses = self.sessions.get(&session)?.losses;
        self.left(session, now)
            .map(|left| LeaseExtension::new(left, self.incarnation, losses))
    }

    fn bind_addr(&mut self, session: SessionId, addr: Option<SocketAddr>) {
        let Some(addr) = addr else { return };
        if let Some(old) = self.by_addr.insert(addr, session) {
            if old != session {
                if let Some(s) = self.sessions.get_mut(&old) {
                    s.addr = None;
                }
            }
        }
        if let Some(s) = self.sessions.get_mut(&session) {
            if let Some(prev) = s.addr.replace(addr) {
                if prev != addr && self.by_addr.get(&prev) == Some(&session) {
                    self.by_addr.remove(&prev);
                }
            }
        }
    }

    fn extend(&mut self, session: SessionId, now: Instant) {
        let lease = self.lease;
        if let Some(s) = self.sessions.get_mut(&session) {
            if !s.lost && s.outstanding == 0 {
                s.expires = s.expires.max(now + lease);
            }
        }
    }

    /// `Hello`: (re)introduces a session from `addr`. A session known as lost is told so
    /// (and forgiven); a new one starts clean.
    pub fn hello(
        &mut self,
        session: SessionId,
        addr: Option<SocketAddr>,
        now: Instant,
    ) -> LeaseGrant {
        self.stats.hellos += 1;
        self.forget_idle(now);
        let lease = self.lease;
        let s = self.sessions.entry(session).or_insert_with(|| Session {
            addr: None,
            expires: now + lease,
            lost: false,
            ever_lost: false,
            losses: 0,
            outstanding: 0,
            committing: 0,
            held: BTreeSet::new(),
        });
        let lost = std::mem::take(&mut s.lost);
        self.bind_addr(session, addr);
        self.extend(session, now);
        self.grant(session, lost, now)
    }

    /// `Renew`: `Ok(grant)`, or `Err(until)` while callbacks to this session are
    /// outstanding (ask again once one is reported, or at `until`): a renewal must not
    /// confirm a lease the manager may be about to give up on. An unknown session is
    /// registered and told `lost`; a lost one is told once and forgiven.
    pub fn renew(
        &mut self,
        session: SessionId,
        addr: Option<SocketAddr>,
        now: Instant,
    ) -> Result<LeaseGrant, Instant> {
        self.forget_idle(now);
        let lease = self.lease;
        let lost = match self.sessions.get_mut(&session) {
            None => {
                self.sessions.insert(
                    session,
                    Session {
                        addr: None,
                        expires: now + lease,
                        lost: false,
                        ever_lost: false,
                        losses: 0,
                        outstanding: 0,
                        committing: 0,
                        held: BTreeSet::new(),
                    },
                );
                true
            }
            Some(s) if s.outstanding > 0 && !s.lost => {
                let until = self
                    .pending
                    .values()
                    .filter(|p| p.session == session)
                    .map(|p| p.deadline)
                    .max()
                    .unwrap_or(now);
                return Err(until);
            }
            Some(s) => std::mem::take(&mut s.lost),
        };
        self.stats.renewals += 1;
        self.bind_addr(session, addr);
        self.extend(session, now);
        Ok(self.grant(session, lost, now))
    }

    /// Who sent a request from `from`; a session in good standing has its lease renewed
    /// (unless callbacks to it are outstanding).
    /// The live session of the connection `from`, if any (no lease is extended).
    pub fn session_at(&self, from: Option<SocketAddr>) -> Option<SessionId> {
        let session = *self.by_addr.get(&from?)?;
        self.sessions
            .get(&session)
            .filter(|s| !s.lost)
            .map(|_| session)
    }

    pub fn identify(&mut self, from: Option<SocketAddr>, now: Instant) -> Requester {
        let Some(addr) = from else {
            return Requester::Anonymous;
        };
        let Some(&session) = self.by_addr.get(&addr) else {
            return Requester::Anonymous;
        };
        match self.sessions.get(&session) {
            None => Requester::Anonymous,
            Some(s) if s.lost => Requester::Lost(session),
            Some(_) => {
                self.extend(session, now);
                Requester::Session(session)
            }
        }
    }

    /// Whether a session (live or lost) is bound to the connection from `addr`, without
    /// extending anything: a node refuses a client identity's requests from a connection
    /// without one ("leases fail closed").
    pub fn knows_addr(&self, addr: SocketAddr) -> bool {
        self.by_addr
            .get(&addr)
            .is_some_and(|s| self.sessions.contains_key(s))
    }

    /// The current address of a session (it may have reconnected since a callback began).
    pub fn addr_of(&self, session: SessionId) -> Option<SocketAddr> {
        self.sessions.get(&session).and_then(|s| s.addr)
    }

    /// Whether `session` is known and not lost.
    pub fn is_live(&self, session: SessionId) -> bool {
        self.sessions.get(&session).is_some_and(|s| !s.lost)
    }

    /// The readers and writer of `ino` (for tests and diagnostics).
    pub fn holders(&self, ino: InodeId) -> (Vec<SessionId>, Option<SessionId>) {
        match self.inodes.get(&ino) {
            Some(h) => (h.readers.iter().copied().collect(), h.writer),
            None => (Vec::new(), None),
        }
    }

    /// The latest deadline of callbacks to sessions other than `who` that block `inodes`
    /// (only Flushes with `flushes_only`).
    fn blocked(
        &self,
        inodes: &[InodeId],
        who: Option<SessionId>,
        flushes_only: bool,
    ) -> Option<Instant> {
        inodes
            .iter()
            .filter_map(|i| self.inodes.get(i))
            .flat_map(|h| h.blockers.values())
            .filter(|b| Some(b.session) != who && (b.flush || !flushes_only))
            .map(|b| b.deadline)
            .max()
    }

    /// A read-type request by `who` of the state of `inodes` (which it will cache). A
    /// writer other than `who` is flushed first (keeping its cache: it becomes a reader);
    /// on `Go`, `who` is registered as a reader of every inode. A read without a session
    /// (another manager resolving a name or an ancestor, a tool) caches nothing and sees
    /// the committed state: it flushes nobody (a manager forwarding a client's lookup would
    /// otherwise call that very client back).
    pub fn read(&mut self, who: Option<SessionId>, inodes: &[InodeId], now: Instant) -> Step {
        let Some(reader) = who else {
            return Step::Go;
        };
        let who = Some(reader);
        if let Some(until) = self.blocked(inodes, who, false) {
            return Step::Wait(until);
        }
        let mut calls = Vec::new();
        for &ino in inodes {
            if let Some(w) = self.writer_other_than(ino, who) {
                calls.extend(self.flush(w, ino, false, now));
            }
        }
        if !calls.is_empty() {
            return Step::Call(calls);
        }
        if let Some(s) = who {
            for &ino in inodes {
                self.add_reader(ino, s);
            }
        }
        Step::Go
    }

    /// Before a mutation of `affected` by `who` (`None`: another manager's transaction):
    /// every other writer of an affected inode is flushed and drops its cache, so that
    /// its earlier writes land first. `Go` means apply now, then call `after_mutation`.
    pub fn mutation(&mut self, who: Option<SessionId>, affected: &Affected, now: Instant) -> Step {
        let inodes: Vec<InodeId> = affected.inodes.iter().copied().collect();
        if let Some(wait) = self.reclaim_wait(&inodes, now) {
            return wait;
        }
        if let Some(until) = self.blocked(&inodes, who, true) {
            return Step::Wait(until);
        }
        let mut calls = Vec::new();
        for &ino in &inodes {
            if let Some(w) = self.writer_other_than(ino, who) {
                calls.extend(self.flush(w, ino, true, now));
            }
        }
        if calls.is_empty() {
            Step::Go
        } else {
            Step::Call(calls)
        }
    }

    /// After a mutation of `affected` by `who` was applied: every other holder of an
    /// affected inode is dropped from its holders and gets one `Invalidate` (with the
    /// inodes it held and the entries of directories it held). Holders whose lease already
    /// ran out are marked lost instead. `who` becomes a reader of `returned` (the inodes
    /// whose attributes the reply carries).
    ///
    /// A writer found here keeps its write lease and only drops its cached attributes:
    /// `mutation` flushed every other writer, so this one was granted after that step (a
    /// two-phase transaction releases the lease lock between its begin and its decision;
    /// a transaction left pending by a restart ends with no step at all). The client
    /// takes an `Invalidate` as "drop caches", not "give up the lease": dropping it here
    /// would leave it buffering writes under a lease the table no longer records, the
    /// next writer would be granted without flushing them, and both would write at the
    /// same offsets (a t55 failure in CI: two mounts' appends over each other).
    pub fn after_mutation(
        &mut self,
        who: Option<SessionId>,
        affected: &Affected,
        returned: &[InodeId],
        now: Instant,
    ) -> Vec<Callback> {
        let mut per: BTreeMap<SessionId, Vec<InodeId>> = BTreeMap::new();
        for ino in &affected.inodes {
            let Some(h) = self.inodes.get_mut(ino) else {
                continue;
            };
            let writer = h.writer.filter(|w| Some(*w) != who);
            let others: Vec<SessionId> = h
                .readers
                .iter()
                .copied()
                .filter(|s| Some(*s) != who && Some(*s) != writer)
                .collect();
            for s in others {
                h.readers.remove(&s);
                per.entry(s).or_default().push(*ino);
            }
            if let Some(w) = writer {
                // Still a holder (reader and writer): told, not dropped.
                per.entry(w).or_default().push(*ino);
            }
        }
        for (s, inos) in &per {
            let inodes = &self.inodes;
            let writes = |i: &InodeId| inodes.get(i).is_some_and(|h| h.writer == Some(*s));
            if let Some(sess) = self.sessions.get_mut(s) {
                for i in inos.iter().filter(|i| !writes(i)) {
                    sess.held.remove(i);
                }
            }
            for i in inos {
                self.gc_inode(*i);
            }
        }
        let mut calls = Vec::new();
        for (s, inodes) in per {
            let entries = affected
                .entries
                .iter()
                .filter(|(d, _)| inodes.contains(d))
                .cloned()
                .collect();
            let msg = ClientCallback::Invalidate { inodes, entries };
            calls.extend(self.callback(s, msg, None, now));
        }
        if let Some(s) = who {
            for &ino in returned {
                self.add_reader(ino, s);
            }
        }
        calls
    }

    /// How many times `session` was given up on in this incarnation (0 when unknown).
    pub fn losses(&self, session: SessionId) -> u32 {
        self.sessions.get(&session).map_or(0, |s| s.losses)
    }

    /// Whether `session` was given up on at some time in this incarnation.
    pub fn ever_lost(&self, session: SessionId) -> bool {
        self.sessions.get(&session).is_some_and(|s| s.ever_lost)
    }

    /// `AcquireWrite(ino)` by `who`: another writer is flushed and drops its cache, other
    /// readers are invalidated; on `Go`, `who` is the writer (and a reader).
    pub fn acquire_write(&mut self, who: SessionId, ino: InodeId, now: Instant) -> Step {
        if let Some(wait) = self.reclaim_wait(&[ino], now) {
            return wait;
        }
        if let Some(until) = self.blocked(&[ino], Some(who), false) {
            return Step::Wait(until);
        }
        let mut calls = Vec::new();
        let writer = self.writer_other_than(ino, Some(who));
        if let Some(w) = writer {
            calls.extend(self.flush(w, ino, true, now));
        }
        // The flushed writer drops its cache with the Flush: no Invalidate for it.
        let readers: Vec<SessionId> = self
            .inodes
            .get(&ino)
            .map(|h| {
                h.readers
                    .iter()
                    .copied()
                    .filter(|r| *r != who && Some(*r) != writer)
                    .collect()
            })
            .unwrap_or_default();
        for r in readers {
            self.remove_holder(ino, r);
            let msg = ClientCallback::Invalidate {
                inodes: vec![ino],
                entries: Vec::new(),
            };
            calls.extend(self.callback(r, msg, Some(ino), now));
        }
        if !calls.is_empty() {
            return Step::Call(calls);
        }
        self.set_writer(who, ino);
        Step::Go
    }

    /// `AcquireWrite` with `reclaim` by `who` during the grace period after a restart: the
    /// client re-asserts the write lease it held from the previous incarnation. Granted
    /// without callbacks (nobody can have read the inode since the restart: its reads wait
    /// for the reclaim), but only if the log recorded this very lease (`start_grace`): a
    /// lease recorded for another session was granted after `who`'s (whose buffered or
    /// re-sent writes would land over newer ones), and an inode without a recorded lease
    /// may have been read already (nobody can hold buffered writes for it).
    pub fn reclaim_write(&mut self, who: SessionId, ino: InodeId) -> Result<(), ReclaimRefused> {
        if !self.is_live(who) {
            return Err(ReclaimRefused::UnknownSession);
        }
        match self.recovered.get(&ino) {
            Some(s) if *s == who => {}
            other => return Err(ReclaimRefused::NotRecorded(other.copied())),
        }
        if let Some(w) = self.writer_other_than(ino, Some(who)) {
            return Err(ReclaimRefused::Held(w));
        }
        self.set_writer(who, ino);
        self.unclaimed.remove(&ino);
        Ok(())
    }

    /// `Goodbye` of `session` from `from` (a clean unmount): it is forgotten with all it
    /// held. Refused (`false`) from another address than the session's own.
    pub fn goodbye(&mut self, session: SessionId, from: Option<SocketAddr>) -> bool {
        let Some(s) = self.sessions.get(&session) else {
            return true;
        };
        if s.addr.is_some() && s.addr != from {
            return false;
        }
        self.drop_everywhere(session);
        if let Some(s) = self.sessions.remove(&session) {
            if let Some(a) = s.addr {
                if self.by_addr.get(&a) == Some(&session) {
                    self.by_addr.remove(&a);
                }
            }
        }
        true
    }

    /// Whether `session` is known (live or lost); a callback to a session that said
    /// goodbye is not waited for.
    pub fn knows(&self, session: SessionId) -> bool {
        self.sessions.contains_key(&session)
    }

    /// Whether `ino` has a writer (for reads during the grace period).
    pub fn has_writer(&self, ino: InodeId) -> bool {
        self.inodes.get(&ino).is_some_and(|h| h.writer.is_some())
    }

    /// Makes `session` the writer (and a reader) of `ino` without callbacks (the creator
    /// of a new inode). Unknown or lost sessions are ignored.
    pub fn set_writer(&mut self, session: SessionId, ino: InodeId) {
        if !self.is_live(session) {
            return;
        }
        self.add_reader(ino, session);
        if let Some(h) = self.inodes.get_mut(&ino) {
            h.writer = Some(session);
            h.grants += 1;
        }
    }

    /// A `CommitWrites` of `session` starts being carried out here.
    pub fn commit_started(&mut self, session: SessionId) {
        if let Some(s) = self.sessions.get_mut(&session) {
            s.committing += 1;
        }
    }

    /// A `CommitWrites` of `session` is done here (answered or failed).
    pub fn commit_ended(&mut self, session: SessionId) {
        if let Some(s) = self.sessions.get_mut(&session) {
            s.committing = s.committing.saturating_sub(1);
        }
    }

    /// The latest deadline callback `id` may be extended to (`None` once it is done).
    pub fn callback_cap(&self, id: CallbackId) -> Option<Instant> {
        self.pending.get(&id).map(|p| p.cap)
    }

    /// Callback `id` reached its deadline at `now` unanswered. If its session has a
    /// `CommitWrites` being carried out here (its answer to a Flush waits for that commit,
    /// which waits for this manager's own log), the deadline moves `EXTEND_STEP` on, up to
    /// one lease past the first deadline, and the new one is returned; else `None` (the
    /// caller reports the callback unanswered). Others wait for the callback meanwhile, as
    /// they would for an answer: the session is reachable, only this manager is slow, and
    /// one more lease bounds it.
    pub fn extend_callback(&mut self, id: CallbackId, now: Instant) -> Option<Instant> {
        let p = self.pending.get_mut(&id)?;
        let s = self.sessions.get(&p.session)?;
        if s.lost || s.committing == 0 || now >= p.cap {
            return None;
        }
        let deadline = (now + EXTEND_STEP).min(p.cap);
        p.deadline = deadline;
        if let Some(b) = p
            .kind
            .blocking()
            .and_then(|ino| self.inodes.get_mut(&ino))
            .and_then(|h| h.blockers.get_mut(&id))
        {
            b.deadline = deadline;
        }
        self.stats.callbacks_extended += 1;
        Some(deadline)
    }

    /// The outcome of callback `id`: answered (`acked`) or not by its deadline (the holder
    /// is then marked lost and dropped from everything it held).
    pub fn callback_done(&mut self, id: CallbackId, acked: bool) {
        let Some(p) = self.pending.remove(&id) else {
            return;
        };
        if let Some(s) = self.sessions.get_mut(&p.session) {
            s.outstanding = s.outstanding.saturating_sub(1);
        }
        let blocking = p.kind.blocking();
        if let Some(ino) = blocking {
            if let Some(h) = self.inodes.get_mut(&ino) {
                h.blockers.remove(&id);
            }
        }
        if !acked {
            self.stats.callbacks_timed_out += 1;
            self.mark_lost(p.session);
        } else {
            self.stats.callbacks_acked += 1;
            if let PendingKind::Flush {
                ino,
                drop_cache,
                grants,
            } = p.kind
            {
                let regranted = self
                    .inodes
                    .get(&ino)
                    .is_some_and(|h| h.writer == Some(p.session) && h.grants != grants);
                if regranted {
                    // The writer asked for the lease again while flushing and got it: it
                    // keeps it (whoever waits for the lease will call it back again).
                    if let Some(ino) = blocking {
                        self.gc_inode(ino);
                    }
                    return;
                }
                if let Some(h) = self.inodes.get_mut(&ino) {
                    if h.writer == Some(p.session) {
                        h.writer = None;
                        self.writers_dropped = true;
                    }
                }
                if drop_cache {
                    self.remove_holder(ino, p.session);
                } else {
                    self.add_reader(ino, p.session);
                }
            }
        }
        if let Some(ino) = blocking {
            self.gc_inode(ino);
        }
    }

    /// Gives up on `session`: it must drop every cached copy (`Renew` says `lost`), and
    /// holds nothing any more.
    pub fn mark_lost(&mut self, session: SessionId) {
        let Some(s) = self.sessions.get_mut(&session) else {
            return;
        };
        s.lost = true;
        s.ever_lost = true;
        s.losses = s.losses.saturating_add(1);
        let held = std::mem::take(&mut s.held);
        for ino in held {
            if let Some(h) = self.inodes.get_mut(&ino) {
                h.readers.remove(&session);
                if h.writer == Some(session) {
                    h.writer = None;
                    self.writers_dropped = true;
                }
            }
            self.gc_inode(ino);
        }
    }

    /// The writer of `ino` if it is not `who`.
    fn writer_other_than(&self, ino: InodeId, who: Option<SessionId>) -> Option<SessionId> {
        let w = self.inodes.get(&ino)?.writer?;
        if Some(w) == who {
            return None;
        }
        Some(w)
    }

    fn flush(
        &mut self,
        w: SessionId,
        ino: InodeId,
        drop_cache: bool,
        now: Instant,
    ) -> Option<Callback> {
        let msg = ClientCallback::Flush { ino, drop_cache };
        self.callback(w, msg, Some(ino), now)
    }

    /// Creates a callback to `session`, or marks it lost when its lease is already over.
    /// `blocking` inodes make others wait until the callback is reported.
    fn callback(
        &mut self,
        session: SessionId,
        msg: ClientCallback,
        blocking: Option<InodeId>,
        now: Instant,
    ) -> Option<Callback> {
        let (addr, expires) = match self.sessions.get(&session) {
            Some(s) if !s.lost => (s.addr, s.expires),
            _ => {
                self.drop_everywhere(session);
                return None;
            }
        };
        let committing = self
            .sessions
            .get(&session)
            .is_some_and(|s| s.committing > 0);
        if expires <= now && !committing {
            self.stats.expired_holders += 1;
            self.mark_lost(session);
            return None;
        }
        // A session whose lease ran out while its commit waits for this manager's log
        // (renewals are held while a callback to it is out) is alive: it gets the margin.
        let deadline = expires.max(now) + CALLBACK_MARGIN;
        let id = self.next_id;
        self.next_id = CallbackId(id.0 + 1);
        let kind = match &msg {
            ClientCallback::Flush { ino, drop_cache } => {
                self.stats.flushes_sent += 1;
                PendingKind::Flush {
                    ino: *ino,
                    drop_cache: *drop_cache,
                    grants: self.inodes.get(ino).map_or(0, |h| h.grants),
                }
            }
            ClientCallback::Invalidate { .. } => {
                self.stats.invalidates_sent += 1;
                PendingKind::Invalidate { blocking }
            }
        };
        if let Some(ino) = blocking {
            let flush = matches!(kind, PendingKind::Flush { .. });
            self.inodes.entry(ino).or_default().blockers.insert(
                id,
                Blocker {
                    session,
                    deadline,
                    flush,
                },
            );
        }
        if let Some(s) = self.sessions.get_mut(&session) {
            s.outstanding += 1;
        }
        self.pending.insert(
            id,
            Pending {
                session,
                kind,
                deadline,
                cap: deadline + self.lease,
            },
        );
        Some(Callback {
            id,
            session,
            addr,
            msg,
            deadline,
        })
    }

    /// Removes an unknown or lost session from every holder list (defensive: a lost
    /// session holds nothing already).
    fn drop_everywhere(&mut self, session: SessionId) {
        let inos: Vec<InodeId> = self
            .inodes
            .iter()
            .filter(|(_, h)| h.readers.contains(&session) || h.writer == Some(session))
            .map(|(i, _)| *i)
            .collect();
        for ino in inos {
            self.remove_holder(ino, session);
        }
    }

    fn add_reader(&mut self, ino: InodeId, session: SessionId) {
        let Some(s) = self.sessions.get_mut(&session) else {
            return;
        };
        if s.lost {
            return;
        }
        s.held.insert(ino);
        self.inodes.entry(ino).or_default().readers.insert(session);
    }

    fn remove_holder(&mut self, ino: InodeId, session: SessionId) {
        if let Some(h) = self.inodes.get_mut(&ino) {
            h.readers.remove(&session);
            if h.writer == Some(session) {
                h.writer = None;
                self.writers_dropped = true;
            }
        }
        if let Some(s) = self.sessions.get_mut(&session) {
            s.held.remove(&ino);
        }
        self.gc_inode(ino);
    }

    fn gc_inode(&mut self, ino: InodeId) {
        if self.inodes.get(&ino).is_some_and(Holders::is_empty) {
            self.inodes.remove(&ino);
        }
    }

    /// Marks lost the sessions whose lease ran out long ago, so that what they held is
    /// released (they are kept, small, so that their address keeps answering
    /// `LeaseExpired` and `Renew` tells them `lost` if they come back).
    /// Sessions whose lease ran out `FORGET_AFTER_LEASES` leases ago are forgotten with
    /// everything they held (the table stays bounded by the live sessions); if one comes
    /// back, its `Renew` is answered `lost`, as for any unknown session.
    fn forget_idle(&mut self, now: Instant) {
        let horizon = self.lease * FORGET_AFTER_LEASES;
        let old: Vec<SessionId> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.outstanding == 0 && s.expires + horizon < now)
            .map(|(id, _)| *id)
            .collect();
        for id in old {
            self.drop_everywhere(id);
            if let Some(s) = self.sessions.remove(&id) {
                if let Some(a) = s.addr {
                    if self.by_addr.get(&a) == Some(&id) {
                        self.by_addr.remove(&a);
                    }
                }
            }
            self.forgotten.push(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEASE: Duration = Duration::from_millis(1000);
    const A: SessionId = SessionId(0xa);
    const B: SessionId = SessionId(0xb);
    const C: SessionId = SessionId(0xc);
    const X: InodeId = InodeId(0x100);
    const P: InodeId = InodeId(0x101);
    const Y: InodeId = InodeId(0x102);

    fn addr(s: SessionId) -> Option<SocketAddr> {
        Some(SocketAddr::from(([10, 0, 0, s.0 as u8], 4000)))
    }

    /// A table with sessions A, B, C said hello at `t0`.
    fn table() -> (LeaseTable, Instant) {
        let t0 = Instant::now();
        let mut t = LeaseTable::new(LEASE, 7);
        for s in [A, B, C] {
            let g = t.hello(s, addr(s), t0);
            assert!(!g.lost);
            assert_eq!(g.incarnation, 7);
            assert_eq!(g.lease_ms, 1000);
        }
        (t, t0)
    }

    fn calls(step: Step) -> Vec<Callback> {
        match step {
            Step::Call(c) => c,
            other => panic!("expected callbacks, got {other:?}"),
        }
    }

    fn one_file(inos: &[InodeId]) -> Affected {
        Affected {
            inodes: inos.iter().copied().collect(),
            entries: BTreeSet::new(),
        }
    }

    #[test]
    fn reads_register_readers_and_identify_by_address() {
        let (mut t, t0) = table();
        assert_eq!(t.identify(addr(A), t0), Requester::Session(A));
        assert_eq!(t.identify(None, t0), Requester::Anonymous);
        assert_eq!(
            t.identify(Some(SocketAddr::from(([10, 9, 9, 9], 1))), t0),
            Requester::Anonymous
        );
        assert_eq!(t.read(Some(A), &[P, X], t0), Step::Go);
        assert_eq!(t.read(Some(B), &[X], t0), Step::Go);
        assert_eq!(t.holders(X), (vec![A, B], None));
        assert_eq!(t.holders(P), (vec![A], None));
        // Anonymous readers register nothing.
        assert_eq!(t.read(None, &[InodeId(5)], t0), Step::Go);
        assert_eq!(t.holders(InodeId(5)), (vec![], None));
    }

    #[test]
    fn any_request_renews_the_lease() {
        let (mut t, t0) = table();
        t.read(Some(A), &[X], t0);
        // A keeps talking (not Renew), B is silent.
        let later = t0 + LEASE / 2;
        t.identify(addr(A), later);
        let at = t0 + LEASE + Duration::from_millis(100);
        t.read(Some(B), &[X], t0);
        let cbs = t.after_mutation(Some(C), &one_file(&[X]), &[], at);
        // A's lease runs to t0 + 1.5 s: it is called back; B's ran out: lost at once.
        assert_eq!(cbs.len(), 1);
        assert_eq!(cbs[0].session, A);
        assert_eq!(cbs[0].deadline, later + LEASE + CALLBACK_MARGIN);
        assert!(!t.is_live(B));
        assert_eq!(t.stats().expired_holders, 1);
    }

    #[test]
    fn mutation_invalidates_other_holders_but_not_the_requester() {
        let (mut t, t0) = table();
        for s in [A, B, C] {
            t.read(Some(s), &[P], t0);
        }
        t.read(Some(B), &[X], t0);
        let mut aff = one_file(&[P, X]);
        aff.entries.insert((P, "f".into()));
        assert_eq!(t.mutation(Some(A), &aff, t0), Step::Go);
        let cbs = t.after_mutation(Some(A), &aff, &[X], t0);
        let mut got: Vec<(SessionId, ClientCallback)> =
            cbs.iter().map(|c| (c.session, c.msg.clone())).collect();
        got.sort_by_key(|g| g.0);
        assert_eq!(
            got,
            vec![
                (
                    B,
                    ClientCallback::Invalidate {
                        inodes: vec![X, P]
                            .into_iter()
                            .collect::<BTreeSet<_>>()
                            .into_iter()
                            .collect(),
                        entries: vec![(P, "f".to_string())],
                    }
                ),
                (
                    C,
                    ClientCallback::Invalidate {
                        inodes: vec![P],
                        entries: vec![(P, "f".to_string())],
                    }
                ),
            ]
        );
        assert_eq!(cbs[0].addr, addr(cbs[0].session));
        // Holders are dropped at once; the requester stays and reads what it got back.
        assert_eq!(t.holders(P), (vec![A], None));
        assert_eq!(t.holders(X), (vec![A], None));
        for c in &cbs {
            t.callback_done(c.id, true);
        }
        assert!(t.is_live(B) && t.is_live(C));
        assert_eq!(t.stats().invalidates_sent, 2);
        assert_eq!(t.stats().callbacks_acked, 2);
        // Another-manager transaction (no requester): everyone is invalidated.
        let cbs = t.after_mutation(None, &one_file(&[P]), &[], t0);
        assert_eq!(cbs.len(), 1);
        assert_eq!(cbs[0].session, A);
    }

    #[test]
    fn writer_is_flushed_before_reads_by_others_and_becomes_a_reader() {
        let (mut t, t0) = table();
        assert_eq!(t.acquire_write(A, X, t0), Step::Go);
        assert_eq!(t.holders(X), (vec![A], Some(A)));
        // The writer reads its own file freely, and so does a reader without a session
        // (another manager forwarding the writer's own lookup): no callback.
        assert_eq!(t.read(Some(A), &[X], t0), Step::Go);
        assert_eq!(t.read(None, &[X], t0), Step::Go);
        assert_eq!(t.holders(X), (vec![A], Some(A)));
        let cbs = calls(t.read(Some(B), &[X], t0));
        assert_eq!(cbs.len(), 1);
        assert_eq!(
            cbs[0].msg,
            ClientCallback::Flush {
                ino: X,
                drop_cache: false
            }
        );
        // While the flush is out, others wait, but the writer's own CommitWrites goes on.
        assert!(matches!(t.read(Some(C), &[X], t0), Step::Wait(_)));
        assert!(matches!(
            t.mutation(Some(C), &one_file(&[X]), t0),
            Step::Wait(_)
        ));
        assert_eq!(t.mutation(Some(A), &one_file(&[X]), t0), Step::Go);
        assert!(t
            .after_mutation(Some(A), &one_file(&[X]), &[X], t0)
            .is_empty());
        t.callback_done(cbs[0].id, true);
        assert_eq!(t.read(Some(B), &[X], t0), Step::Go);
        assert_eq!(t.holders(X), (vec![A, B], None));
        assert_eq!(t.stats().flushes_sent, 1);
    }

    #[test]
    fn a_writer_granted_during_a_two_phase_mutation_keeps_its_lease() {
        let (mut t, t0) = table();
        // A two-phase transaction by C passes its flush step on X (nobody writes X)...
        assert_eq!(t.mutation(Some(C), &one_file(&[X]), t0), Step::Go);
        // ...and releases the lease lock until its decision; meanwhile A takes the write
        // lease of X and buffers writes under it.
        assert_eq!(t.acquire_write(A, X, t0), Step::Go);
        // The decision: A is told to drop its cached attributes of X, but stays the writer.
        let cbs = t.after_mutation(Some(C), &one_file(&[X]), &[], t0);
        assert_eq!(cbs.len(), 1);
        assert_eq!(cbs[0].session, A);
        assert!(matches!(cbs[0].msg, ClientCallback::Invalidate { .. }));
        t.callback_done(cbs[0].id, true);
        assert_eq!(t.writer(X), Some(A));
        // So B, wanting to write X, has A's buffered writes flushed first (with the writer
        // dropped here, B would have been granted at once and both would write over each
        // other).
        let cbs = calls(t.acquire_write(B, X, t0));
        assert_eq!(
            cbs[0].msg,
            ClientCallback::Flush {
                ino: X,
                drop_cache: true
            }
        );
        assert_eq!(cbs[0].session, A);
        t.callback_done(cbs[0].id, true);
        assert_eq!(t.acquire_write(B, X, t0), Step::Go);
        assert_eq!(t.writer(X), Some(B));
        // The same for a transaction a restart left pending (no requester, no flush step),
        // and a writer that loses its session afterwards still frees the inode.
        let cbs = t.after_mutation(None, &one_file(&[X]), &[], t0);
        assert_eq!(cbs.len(), 1);
        assert_eq!(t.writer(X), Some(B));
        t.callback_done(cbs[0].id, false);
        assert_eq!(t.writer(X), None);
    }

    #[test]
    fn writer_is_flushed_and_drops_its_cache_before_mutations_by_others() {
        let (mut t, t0) = table();
        assert_eq!(t.acquire_write(A, X, t0), Step::Go);
        let cbs = calls(t.mutation(Some(B), &one_file(&[X]), t0));
        assert_eq!(
            cbs[0].msg,
            ClientCallback::Flush {
                ino: X,
                drop_cache: true
            }
        );
        t.callback_done(cbs[0].id, true);
        assert_eq!(t.holders(X), (vec![], None));
        assert_eq!(t.mutation(Some(B), &one_file(&[X]), t0), Step::Go);
        // The requester's own write lease does not stop its own mutations.
        assert_eq!(t.acquire_write(B, X, t0), Step::Go);
        assert_eq!(t.mutation(Some(B), &one_file(&[X]), t0), Step::Go);
        // Another manager's transaction flushes every writer.
        assert_eq!(calls(t.mutation(None, &one_file(&[X]), t0)).len(), 1);
    }

    #[test]
    fn a_writer_that_reacquires_while_flushing_keeps_the_lease() {
        let (mut t, t0) = table();
        assert_eq!(t.acquire_write(A, X, t0), Step::Go);
        // B wants the lease: A is flushed.
        let cbs = calls(t.acquire_write(B, X, t0));
        assert_eq!(cbs.len(), 1);
        assert_eq!(cbs[0].session, A);
        // While flushing, A writes again and asks for the lease again: granted at once
        // (the session called back is never held up).
        assert_eq!(t.acquire_write(A, X, t0), Step::Go);
        // A's answer to the first Flush must not take away the lease granted since.
        t.callback_done(cbs[0].id, true);
        assert_eq!(t.holders(X).1, Some(A));
        // So B's retry calls A back again instead of granting a second writer.
        let again = calls(t.acquire_write(B, X, t0));
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].session, A);
        t.callback_done(again[0].id, true);
        assert_eq!(t.acquire_write(B, X, t0), Step::Go);
        assert_eq!(t.holders(X).1, Some(B));
    }

    #[test]
    fn acquire_write_revokes_other_holders() {
        let (mut t, t0) = table();
        t.read(Some(A), &[X], t0);
        t.read(Some(B), &[X], t0);
        let cbs = calls(t.acquire_write(B, X, t0));
        assert_eq!(cbs.len(), 1);
        assert_eq!(cbs[0].session, A);
        assert_eq!(
            cbs[0].msg,
            ClientCallback::Invalidate {
                inodes: vec![X],
                entries: vec![]
            }
        );
        // Others cannot read until the invalidation is through; the holder called back
        // itself is never held up (its requests may be needed to answer), but reading
        // again makes it a holder to invalidate again.
        assert!(matches!(t.read(Some(C), &[X], t0), Step::Wait(_)));
        assert_eq!(t.read(Some(A), &[X], t0), Step::Go);
        t.callback_done(cbs[0].id, true);
        let again = calls(t.acquire_write(B, X, t0));
        assert_eq!(again[0].session, A);
        t.callback_done(again[0].id, true);
        assert_eq!(t.acquire_write(B, X, t0), Step::Go);
        assert_eq!(t.holders(X), (vec![B], Some(B)));
        // A third session takes the write lease: B is flushed and drops its cache.
        let cbs = calls(t.acquire_write(C, X, t0));
        assert_eq!(
            cbs.iter()
                .map(|c| (c.session, c.msg.clone()))
                .collect::<Vec<_>>(),
            vec![(
                B,
                ClientCallback::Flush {
                    ino: X,
                    drop_cache: true
                }
            )]
        );
        t.callback_done(cbs[0].id, true);
        assert_eq!(t.acquire_write(C, X, t0), Step::Go);
        assert_eq!(t.holders(X), (vec![C], Some(C)));
        // Create with a session: writer without callbacks.
        t.set_writer(A, InodeId(0x200));
        assert_eq!(t.holders(InodeId(0x200)), (vec![A], Some(A)));
    }

    #[test]
    fn a_flush_late_because_the_writers_commit_waits_for_the_log_is_waited_for() {
        let (mut t, t0) = table();
        assert_eq!(t.acquire_write(A, X, t0), Step::Go);
        let cbs = calls(t.read(Some(B), &[X], t0));
        assert_eq!(cbs.len(), 1);
        let first = cbs[0].deadline;
        // Not committing: at the deadline the callback is given up on.
        assert_eq!(t.extend_callback(cbs[0].id, first), None);
        // A's commit (its answer to the Flush) waits for this manager's log.
        t.commit_started(A);
        let d = t.extend_callback(cbs[0].id, first).expect("extended");
        assert_eq!(d, first + EXTEND_STEP);
        // Others keep waiting for it, and A's renewal stays held until the new deadline.
        assert_eq!(t.read(Some(C), &[X], first), Step::Wait(d));
        assert_eq!(t.renew(A, addr(A), first), Err(d));
        // Bounded: never past one lease after the first deadline.
        let late = first + LEASE;
        assert_eq!(t.extend_callback(cbs[0].id, late), None);
        let d2 = t
            .extend_callback(cbs[0].id, late - Duration::from_millis(1))
            .expect("still within the cap");
        assert_eq!(d2, first + LEASE);
        // The commit is done and A answers: A keeps its cache as a reader, not lost.
        t.commit_ended(A);
        t.callback_done(cbs[0].id, true);
        assert_eq!(t.holders(X), (vec![A], None));
        assert_eq!(t.stats().callbacks_timed_out, 0);
        assert_eq!(t.stats().callbacks_extended, 2);
        // Once its commit is over, a late answer is the holder's own: given up on.
        assert!(t.renew(A, addr(A), late).is_ok());
        t.read(Some(A), &[P], late);
        let cbs = t.after_mutation(Some(B), &one_file(&[P]), &[], late);
        assert_eq!(cbs.len(), 1);
        assert_eq!(t.extend_callback(cbs[0].id, cbs[0].deadline), None);
    }

    #[test]
    fn a_holder_whose_lease_ran_out_while_committing_is_called_back_not_lost() {
        let (mut t, t0) = table();
        t.read(Some(A), &[X], t0);
        let later = t0 + LEASE + Duration::from_millis(1);
        // A's lease ran out (its renewals were held) but its commit is being carried out
        // here: a new callback is sent with the margin instead of giving up on A.
        t.commit_started(A);
        let cbs = t.after_mutation(Some(B), &one_file(&[X]), &[], later);
        assert_eq!(cbs.len(), 1);
        assert_eq!(cbs[0].deadline, later + CALLBACK_MARGIN);
        assert_eq!(t.stats().expired_holders, 0);
        t.callback_done(cbs[0].id, true);
        // Without a commit under way, the same situation gives up on the holder at once.
        t.commit_ended(A);
        t.read(Some(A), &[P], t0);
        let much_later = later + LEASE;
        assert!(t
            .after_mutation(Some(B), &one_file(&[P]), &[], much_later)
            .is_empty());
        assert_eq!(t.stats().expired_holders, 1);
    }

    #[test]
    fn unanswered_callback_marks_the_holder_lost_until_it_renews() {
        let (mut t, t0) = table();
        t.read(Some(A), &[X, P], t0);
        let cbs = t.after_mutation(Some(B), &one_file(&[X]), &[], t0);
        assert_eq!(cbs.len(), 1);
        // The deadline is A's lease expiry plus the margin.
        assert_eq!(cbs[0].deadline, t0 + LEASE + CALLBACK_MARGIN);
        // While the callback is out, A's lease is not extended and Renew waits.
        let later = t0 + Duration::from_millis(500);
        assert_eq!(t.identify(addr(A), later), Requester::Session(A));
        assert_eq!(t.renew(A, addr(A), later), Err(cbs[0].deadline));
        t.callback_done(cbs[0].id, false);
        assert_eq!(t.stats().callbacks_timed_out, 1);
        assert_eq!(t.stats().lost_sessions, 1);
        // Lost: everything it held is released, its requests are refused...
        assert_eq!(t.holders(P), (vec![], None));
        assert_eq!(t.identify(addr(A), later), Requester::Lost(A));
        // ...until Renew tells it (once).
        assert!(t.renew(A, addr(A), later).expect("renew").lost);
        assert!(!t.renew(A, addr(A), later).expect("renew").lost);
        assert_eq!(t.identify(addr(A), later), Requester::Session(A));
        assert_eq!(t.stats().renewals, 2);
    }

    #[test]
    fn answers_confirm_only_the_lease_the_table_granted() {
        let (mut t, t0) = table();
        let ext = |t: &LeaseTable, at| t.extension_for(addr(A), at).map(|e| e.valid_ms);
        assert_eq!(ext(&t, t0), Some(1000));
        assert_eq!(
            t.extension_for(None, t0),
            None,
            "anonymous: nothing confirmed"
        );
        t.read(Some(A), &[X], t0);
        let cbs = t.after_mutation(Some(B), &one_file(&[X]), &[], t0);
        assert_eq!(cbs.len(), 1);
        // A keeps sending requests while its callback is out: the table does not extend,
        // and the answers say only what is left (the slow-callback race, notes/leases.md).
        let later = t0 + Duration::from_millis(600);
        assert_eq!(t.identify(addr(A), later), Requester::Session(A));
        assert_eq!(ext(&t, later), Some(400));
        // A Hello during the callback does not extend either.
        let g = t.hello(A, addr(A), later);
        assert_eq!((g.lease_ms, g.valid_ms), (1000, 400));
        // Given up on: nothing is confirmed until it renews.
        t.callback_done(cbs[0].id, false);
        assert_eq!(ext(&t, later), None);
        let g = t.renew(A, addr(A), later).expect("renew");
        assert!(g.lost);
        assert_eq!(g.valid_ms, 1000);
        assert_eq!(ext(&t, later), Some(1000));
    }

    #[test]
    fn unanswered_flush_loses_the_writer_and_frees_the_inode() {
        let (mut t, t0) = table();
        assert_eq!(t.acquire_write(A, X, t0), Step::Go);
        let cbs = calls(t.read(Some(B), &[X], t0));
        t.callback_done(cbs[0].id, false);
        assert_eq!(t.read(Some(B), &[X], t0), Step::Go);
        assert_eq!(t.holders(X), (vec![B], None));
        assert_eq!(t.identify(addr(A), t0), Requester::Lost(A));
    }

    #[test]
    fn unknown_sessions_are_lost_and_registered_by_renew() {
        let (mut t, t0) = table();
        let g = t
            .renew(SessionId(0x77), addr(SessionId(7)), t0)
            .expect("renew");
        assert!(g.lost);
        assert_eq!(
            t.identify(addr(SessionId(7)), t0),
            Requester::Session(SessionId(0x77))
        );
        assert!(
            !t.renew(SessionId(0x77), addr(SessionId(7)), t0)
                .expect("renew")
                .lost
        );
        // A Hello of a session known as lost reports it too.
        t.mark_lost(SessionId(0x77));
        assert!(t.hello(SessionId(0x77), addr(SessionId(7)), t0).lost);
        assert!(!t.hello(SessionId(0x77), addr(SessionId(7)), t0).lost);
    }

    #[test]
    fn a_reconnected_session_is_called_back_at_its_new_address() {
        let (mut t, t0) = table();
        t.read(Some(A), &[X], t0);
        let new = Some(SocketAddr::from(([10, 0, 1, 1], 5000)));
        t.renew(A, new, t0).expect("renew");
        assert_eq!(t.identify(addr(A), t0), Requester::Anonymous);
        assert_eq!(t.identify(new, t0), Requester::Session(A));
        let cbs = t.after_mutation(None, &one_file(&[X]), &[], t0);
        assert_eq!(cbs[0].addr, new);
        // Another session taking over an address takes its callbacks too.
        t.hello(SessionId(0x99), new, t0);
        assert_eq!(t.addr_of(A), None);
        assert_eq!(t.identify(new, t0), Requester::Session(SessionId(0x99)));
    }

    #[test]
    fn reclaims_grant_only_the_recorded_lease() {
        let (mut t, t0) = table();
        t.start_grace(t0, [(X, A), (Y, B)]);
        assert!(t.awaits_reclaim(X, t0) && t.awaits_reclaim(Y, t0));
        assert!(!t.awaits_reclaim(P, t0), "no recorded lease: read at once");
        assert_eq!(t.unclaimed(t0), 2);
        assert_eq!(
            t.reclaim_write(B, X),
            Err(ReclaimRefused::NotRecorded(Some(A))),
            "another's lease"
        );
        assert_eq!(
            t.reclaim_write(A, P),
            Err(ReclaimRefused::NotRecorded(None)),
            "never recorded"
        );
        assert_eq!(
            t.reclaim_write(SessionId(0xdead), X),
            Err(ReclaimRefused::UnknownSession)
        );
        assert!(t.reclaim_write(A, X).is_ok());
        assert_eq!(t.holders(X), (vec![A], Some(A)));
        assert!(
            !t.awaits_reclaim(X, t0),
            "reclaimed: its readers flush the writer"
        );
        assert!(t.reclaim_write(A, X).is_ok(), "idempotent");
        assert!(!t.has_writer(P));
        assert_eq!(t.unclaimed(t0), 1);
        // The reclaimer is flushed like any writer when another client reads.
        let cbs = calls(t.read(Some(B), &[X], t0));
        assert_eq!(cbs.len(), 1);
        assert_eq!(cbs[0].session, A);
        // After grace, Y still waits for its writer (it may not have learnt of the restart
        // yet): reads (the service waits), AcquireWrite and mutations by others.
        let later = t0 + LEASE + GRACE_EXTRA;
        assert!(!t.in_grace(later) && t.awaits_reclaim(Y, later));
        assert!(matches!(t.acquire_write(A, Y, later), Step::Wait(_)));
        assert!(matches!(
            t.mutation(Some(A), &one_file(&[Y]), later),
            Step::Wait(_)
        ));
        // Once the reclaim window is over nothing waits any more.
        let after = t0 + LEASE * RECLAIM_LEASES + GRACE_EXTRA;
        assert!(!t.awaits_reclaim(Y, after));
        assert_eq!(t.unclaimed(after), 0);
        assert_eq!(t.acquire_write(A, Y, after), Step::Go);
    }

    #[test]
    fn ended_writes_are_those_neither_held_nor_awaited() {
        let (mut t, t0) = table();
        t.start_grace(t0, [(X, A), (Y, B)]);
        let rec: BTreeMap<InodeId, SessionId> = [(X, A), (Y, B), (P, A)].into();
        let ended = |t: &LeaseTable, now| t.ended_writes(rec.iter().map(|(i, s)| (i, *s)), now);
        // X and Y await their reclaim; P (say, granted and flushed in this incarnation) is over.
        assert_eq!(ended(&t, t0), vec![(P, A)]);
        assert!(t.reclaim_write(A, X).is_ok());
        assert_eq!(
            ended(&t, t0),
            vec![(P, A)],
            "X is held by its recorded writer"
        );
        // Flushed away by a reader: X's lease is over.
        let cbs = calls(t.read(Some(B), &[X], t0));
        t.callback_done(cbs[0].id, true);
        assert_eq!(ended(&t, t0), vec![(X, A), (P, A)]);
        // Reclaim window over: Y was never reclaimed, its lease is over too.
        let after = t0 + LEASE * RECLAIM_LEASES + GRACE_EXTRA;
        assert_eq!(ended(&t, after), vec![(X, A), (P, A), (Y, B)]);
    }

    #[test]
    fn grants_come_from_this_incarnation_only() {
        // A session of a previous incarnation is a stranger here: its renewal says `lost`
        // with this incarnation (the client drops every cached copy), it may reclaim only
        // what the log recorded for it, and only after it introduced itself again.
        let t0 = Instant::now();
        let mut t = LeaseTable::new(LEASE, 42);
        t.start_grace(t0, [(X, A)]);
        assert_eq!(t.reclaim_write(A, X), Err(ReclaimRefused::UnknownSession));
        let g = t.renew(A, addr(A), t0).expect("no callbacks outstanding");
        assert!(g.lost, "unknown to this incarnation");
        assert_eq!(g.incarnation, 42);
        assert_eq!(t.hello(A, addr(A), t0).incarnation, 42);
        assert!(t.reclaim_write(A, X).is_ok());
    }

    #[test]
    fn goodbye_forgets_the_session_and_what_it_held() {
        let (mut t, t0) = table();
        assert_eq!(t.acquire_write(A, X, t0), Step::Go);
        assert_eq!(t.read(Some(B), &[P], t0), Step::Go);
        assert!(
            !t.goodbye(A, addr(B)),
            "only from the session's own address"
        );
        assert!(t.goodbye(A, addr(A)));
        assert!(!t.knows(A));
        assert_eq!(t.holders(X), (vec![], None));
        assert_eq!(t.identify(addr(A), t0), Requester::Anonymous);
        // Nobody to flush any more.
        assert_eq!(t.read(Some(B), &[X], t0), Step::Go);
        assert!(t.goodbye(A, addr(A)), "idempotent");
    }

    #[test]
    fn grace_period_after_restart() {
        let t0 = Instant::now();
        let mut t = LeaseTable::new(LEASE, 1);
        assert!(!t.in_grace(t0));
        t.start_grace(t0, []);
        assert!(t.in_grace(t0 + LEASE));
        assert!(t.in_grace(t0 + LEASE + GRACE_EXTRA - Duration::from_millis(1)));
        assert!(!t.in_grace(t0 + LEASE + GRACE_EXTRA));
    }

    #[test]
    fn long_idle_sessions_release_what_they_held() {
        let (mut t, t0) = table();
        t.read(Some(A), &[X], t0);
        let much_later = t0 + LEASE * (FORGET_AFTER_LEASES + 2);
        t.renew(B, addr(B), much_later).expect("renew");
        assert_eq!(t.holders(X), (vec![], None));
        assert!(!t.knows(A), "forgotten, not kept forever");
        // Every session of the table was silent that long (B is registered anew).
        let mut gone = t.take_forgotten();
        gone.sort_unstable();
        assert_eq!(gone, vec![A, B, C]);
        assert!(t.take_forgotten().is_empty());
        assert_eq!(t.identify(addr(A), much_later), Requester::Anonymous);
        assert!(t.renew(A, addr(A), much_later).expect("renew").lost);
    }

    #[test]
    fn affected_sets_of_records_and_ops() {
        use proto::msg::FileKind;
        let recs = vec![
            Record::Entry {
                dir: P,
                name: "a".into(),
                target: Some((X, FileKind::File)),
            },
            Record::Truncate { ino: X, size: 0 },
            Record::Open {
                ino: X,
                session: SessionId(1),
            },
        ];
        let a = Affected::of_records(&recs);
        assert_eq!(a.inodes, [P, X].into_iter().collect());
        assert_eq!(a.entries, [(P, "a".to_string())].into_iter().collect());
        let ops = vec![
            TxOp::RemoveEntry {
                dir: P,
                name: "b".into(),
                ino: X,
            },
            TxOp::AdjustNlink { ino: X, delta: -1 },
        ];
        let b = Affected::of_ops(&ops);
        assert_eq!(b.inodes, [P, X].into_iter().collect());
        assert_eq!(b.entries, [(P, "b".to_string())].into_iter().collect());
    }
}
