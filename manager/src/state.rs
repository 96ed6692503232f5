//! `MetaState`: the in-memory metadata of this manager's slots (inodes, directory entries,
//! extent maps, symlinks, xattrs, open sessions, slot sequence counters, transactions) and
//! `apply`, the one infallible, deterministic way it changes. Recovery replays records
//! through the same `apply`. Queries live here too; planning (validation) is in `plan.rs`.
//! Must not: do I/O, read clocks, or use tokio.

use crate::calls::RecordedCalls;
use crate::directory::DirEntries;
use crate::error::{enoent, enotdir, Errno};
use crate::extent::ExtentMap;
use crate::record::{Logged, Lsn, Record, TxIntent};
use crate::sums::SegmentSums;
use crate::txn::book::TxBook;
use crate::usage::Usage;
use proto::ids::{InodeId, SessionId, SlotId, TxId};
use proto::msg::{Attr, DirEntry, FileKind, FsCounts, TxOp};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// How many finished coordinator transactions and participant results are remembered
/// (for `TxOutcome` and repeated `TxApply`). Older ones are forgotten, oldest first.
pub const TX_MEMORY: usize = 65_536;

/// Ops of one transaction a participant applied, with their results.
pub type AppliedOps = Vec<(TxOp, Option<Attr>)>;

/// One inode and everything hanging off it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inode {
    pub attr: Attr,
    /// Directories: the `..` entry.
    pub parent: Option<InodeId>,
    /// Directories: the entries, by name and by readdir cookie.
    pub entries: DirEntries,
    /// Regular files: file offset → log address.
    pub extents: ExtentMap,
    /// Symlinks: the target.
    pub symlink: Option<String>,
    pub xattrs: BTreeMap<String, Vec<u8>>,
    /// Client sessions that hold the inode open.
    pub sessions: BTreeSet<SessionId>,
}

impl Inode {
    pub fn is_dir(&self) -> bool {
        self.attr.kind == FileKind::Dir
    }
}

/// The metadata of the slots this manager owns.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MetaState {
    pub(crate) inodes: BTreeMap<InodeId, Inode>,
    /// Next sequence number per slot.
    pub(crate) next_seq: BTreeMap<u16, u64>,
    /// The last record applied.
    pub(crate) last_lsn: Lsn,
    /// Next transaction sequence of this coordinator.
    pub(crate) next_tx: u64,
    /// Coordinator: intents logged without TxDone/TxAborted.
    pub(crate) pending: BTreeMap<TxId, TxIntent>,
    /// Coordinator: outcomes of finished transactions (true = committed), keyed by order.
    pub(crate) finished: BTreeMap<TxId, bool>,
    /// Participant: results of applied ops, per transaction, with their arrival order.
    pub(crate) applied: BTreeMap<TxId, (u64, AppliedOps)>,
    pub(crate) applied_order: BTreeMap<u64, TxId>,
    pub(crate) applied_counter: u64,
    /// Two-phase transactions (coordinated and prepared) not yet finished.
    pub(crate) book: TxBook,
    /// Write leases granted (`Record::WriteLease`) and not yet recorded as over: inode →
    /// (session, LSN of the grant). After a restart, exactly these inodes may have writes
    /// buffered under a lease of a previous incarnation.
    pub(crate) write_leases: BTreeMap<InodeId, (SessionId, Lsn)>,
    /// Live bytes per data segment (derived from the extent maps, never stored) and the
    /// volatile reclaim floors; see `usage`.
    #[serde(skip)]
    pub(crate) usage: Usage,
    /// End-to-end checksums of the data segments the extent maps point into (`sums`;
    /// checkpointed in a piece of their own, not in the legacy whole-state form).
    #[serde(skip)]
    pub(crate) sums: SegmentSums,
    /// Numbered client calls the log recorded as applied (`Record::Replied`), for answering
    /// their retries after a restart; volatile, rebuilt from the records after the
    /// checkpoint a restart starts from (see `calls`).
    #[serde(skip)]
    pub(crate) replied: RecordedCalls,
}

impl MetaState {
    pub fn new() -> MetaState {
        MetaState::default()
    }

    /// The last applied LSN (the next record gets `last_lsn() + 1`).
    pub fn last_lsn(&self) -> Lsn {
        self.last_lsn
    }

    pub fn inode(&self, ino: InodeId) -> Option<&Inode> {
        self.inodes.get(&ino)
    }

    pub fn inode_count(&self) -> usize {
        self.inodes.len()
    }

    /// The (inode, session) pairs of open files held by any of `sessions`.
    pub fn open_sessions(&self, sessions: &[SessionId]) -> Vec<(InodeId, SessionId)> {
        self.inodes
            .iter()
            .flat_map(|(ino, i)| {
                i.sessions
                    .iter()
                    .filter(|s| sessions.contains(s))
                    .map(move |s| (*ino, *s))
            })
            .collect()
    }

    /// Recorded write leases: inode → (session, LSN of the grant record).
    pub fn write_leases(&self) -> &BTreeMap<InodeId, (SessionId, Lsn)> {
        &self.write_leases
    }

    /// The sequence the next inode of `slot` gets (sequences start at 2 so that slot 0's
    /// first inode, the root, is sequence 1).
    pub fn next_seq(&self, slot: SlotId) -> u64 {
        self.next_seq.get(&slot.0).copied().unwrap_or(2)
    }

    pub fn next_tx(&self) -> u64 {
        self.next_tx
    }

    /// Two-phase transactions this manager coordinates or prepared.
    pub fn book(&self) -> &TxBook {
        &self.book
    }

    pub fn pending_txs(&self) -> impl Iterator<Item = &TxIntent> {
        self.pending.values()
    }

    /// The coordinator's outcome of `tx`: `Some(true)` committed, `Some(false)` aborted
    /// (or forgotten long ago), `None` still pending.
    pub fn tx_outcome(&self, tx: TxId) -> Option<bool> {
        if self.pending.contains_key(&tx) {
            return None;
        }
        Some(self.finished.get(&tx).copied().unwrap_or(false))
    }

    /// Participant: the stored result of `op` in `tx`, if it was applied already.
    pub fn applied_result(&self, tx: TxId, op: &TxOp) -> Option<Option<Attr>> {
        let (_, ops) = self.applied.get(&tx)?;
        ops.iter().find(|(o, _)| o == op).map(|(_, r)| r.clone())
    }

    /// Assigns LSNs to `recs`, applies them, and returns them for the log.
    pub fn commit(&mut self, recs: Vec<Record>) -> Vec<Logged> {
        let mut out = Vec::with_capacity(recs.len());
        for rec in recs {
            let logged = Logged {
                lsn: self.last_lsn.next(),
                rec: self.with_cookie(rec),
            };
            self.apply(&logged);
            out.push(logged);
        }
        out
    }

    /// An entry set as `EntryAt` with the cookie it gets now, so that its replay gives the
    /// same cookie whatever state it is replayed over (fuzzy checkpoints); other records
    /// as they are.
    fn with_cookie(&self, rec: Record) -> Record {
        match rec {
            Record::Entry {
                dir,
                name,
                target: Some(target),
            } => match self.inodes.get(&dir) {
                Some(d) => Record::EntryAt {
                    cookie: d.entries.cookie_for(&name, target.0),
                    dir,
                    name,
                    target,
                },
                None => Record::Entry {
                    dir,
                    name,
                    target: Some(target),
                },
            },
            rec => rec,
        }
    }

    /// Applies one record. Infallible and deterministic; records at or below the last
    /// applied LSN are skipped (replay is idempotent).
    pub fn apply(&mut self, logged: &Logged) {
        if logged.lsn <= self.last_lsn {
            return;
        }
        self.last_lsn = logged.lsn;
        self.apply_record(&logged.rec);
    }

    fn apply_record(&mut self, rec: &Record) {
        match rec {
            Record::NewInode {
                attr,
                parent,
                symlink,
            } => {
                let slot = attr.ino.slot().0;
                let next = self.next_seq.entry(slot).or_insert(2);
                *next = (*next).max(attr.ino.seq() + 1);
                let mut attr = attr.clone();
                attr.blocks_bytes = 0;
                let old = self.inodes.insert(
                    attr.ino,
                    Inode {
                        attr,
                        parent: *parent,
                        entries: DirEntries::new(),
                        extents: ExtentMap::default(),
                        symlink: symlink.clone(),
                        xattrs: BTreeMap::new(),
                        sessions: BTreeSet::new(),
                    },
                );
                if let Some(old) = old {
                    self.usage.count_map(&old.extents, -1);
                    self.forget_dead_sums(old.extents.iter().collect());
                }
            }
            Record::Attr { attr } => {
                if let Some(i) = self.inodes.get_mut(&attr.ino) {
                    i.attr = attr.clone();
                    i.attr.blocks_bytes = i.extents.covered();
                }
            }
            Record::Entry { dir, name, target } => {
                if let Some(d) = self.inodes.get_mut(dir) {
                    match target {
                        Some((ino, kind)) => d.entries.set(name, *ino, *kind),
                        None => d.entries.remove(name),
                    }
                }
            }
            Record::EntryAt {
                dir,
                name,
                target: (ino, kind),
                cookie,
            } => {
                if let Some(d) = self.inodes.get_mut(dir) {
                    d.entries.set_at(name, *ino, *kind, *cookie);
                }
            }
            Record::Parent { dir, parent } => {
                if let Some(d) = self.inodes.get_mut(dir) {
                    d.parent = Some(*parent);
                }
            }
            Record::Extents { ino, extents } => {
                if let Some(i) = self.inodes.get_mut(ino) {
                    let mut hit = Vec::new();
                    for e in extents {
                        hit.extend(i.extents.range(e.offset, e.ptr.len as u64));
                        i.extents.overlay_counted(*e, &mut self.usage);
                    }
                    i.attr.blocks_bytes = i.extents.covered();
                    self.forget_dead_sums(hit);
                }
            }
            Record::Truncate { ino, size } => {
                if let Some(i) = self.inodes.get_mut(ino) {
                    let hit = i.extents.range(*size, u64::MAX - *size);
                    i.extents.truncate_counted(*size, &mut self.usage);
                    i.attr.blocks_bytes = i.extents.covered();
                    self.forget_dead_sums(hit);
                }
            }
            Record::Xattr { ino, name, value } => {
                if let Some(i) = self.inodes.get_mut(ino) {
                    match value {
                        Some(v) => {
                            i.xattrs.insert(name.clone(), v.clone());
                        }
                        None => {
                            i.xattrs.remove(name);
                        }
                    }
                }
            }
            Record::Open { ino, session } => {
                if let Some(i) = self.inodes.get_mut(ino) {
                    i.sessions.insert(*session);
                }
            }
            Record::Release { ino, session } => {
                if let Some(i) = self.inodes.get_mut(ino) {
                    i.sessions.remove(session);
                }
            }
            Record::Drop { ino } => {
                if let Some(old) = self.inodes.remove(ino) {
                    self.usage.count_map(&old.extents, -1);
                    self.forget_dead_sums(old.extents.iter().collect());
                }
            }
            Record::Sums(s) => self.sums.insert(s),
            Record::SeqFloors(floors) => {
                for (slot, floor) in floors {
                    let next = self.next_seq.entry(*slot).or_insert(2);
                    *next = (*next).max(*floor);
                }
            }
            Record::WriteLease { ino, session } => {
                self.write_leases.insert(*ino, (*session, self.last_lsn));
            }
            Record::Replied {
                session,
                call,
                answer,
            } => {
                self.replied.record((*session, *call), *answer);
            }
            Record::WriteLeaseEnd { ino, session } => {
                if self
                    .write_leases
                    .get(ino)
                    .is_some_and(|(s, _)| s == session)
                {
                    self.write_leases.remove(ino);
                }
            }
            Record::TxIntent(intent) => {
                if intent.tx.seq >= self.next_tx {
                    self.next_tx = intent.tx.seq + 1;
                }
                self.pending.insert(intent.tx, intent.clone());
            }
            Record::TxApplied { tx, op, result } => {
                if !self.applied.contains_key(tx) {
                    self.applied_counter += 1;
                    let order = self.applied_counter;
                    self.applied_order.insert(order, *tx);
                    self.applied.insert(*tx, (order, Vec::new()));
                }
                let Some(entry) = self.applied.get_mut(tx) else {
                    return;
                };
                entry.1.push((op.clone(), result.clone()));
                while self.applied.len() > TX_MEMORY {
                    let Some((_, old)) = self.applied_order.pop_first() else {
                        break;
                    };
                    self.applied.remove(&old);
                }
            }
            Record::TxDone { tx } | Record::TxAborted { tx } => {
                self.pending.remove(tx);
                self.finished
                    .insert(*tx, matches!(rec, Record::TxDone { .. }));
                while self.finished.len() > TX_MEMORY {
                    self.finished.pop_first();
                }
            }
            Record::TxBegin(b) => {
                if b.tx.seq >= self.next_tx {
                    self.next_tx = b.tx.seq + 1;
                }
                self.book.begin(b);
            }
            Record::TxPrepared { tx, ops, results } => {
                // Inode numbers a prepared CreateInode will use are reserved now (other
                // results name existing inodes, below their slot's next sequence already).
                for r in results.iter().flatten() {
                    let next = self.next_seq.entry(r.ino.slot().0).or_insert(2);
                    *next = (*next).max(r.ino.seq() + 1);
                }
                self.book.prepare(*tx, ops, results);
            }
            Record::TxDecided { tx, commit } => self.book.decide(*tx, *commit),
            Record::TxForget { tx } => self.book.forget(*tx),
            Record::TxResolved { tx, .. } => self.book.resolve(*tx),
        }
    }

    /// Live bytes per data segment and the reclaim floors.
    pub fn usage(&self) -> &Usage {
        &self.usage
    }

    pub(crate) fn usage_mut(&mut self) -> &mut Usage {
        &mut self.usage
    }

    /// Derives the live bytes again from every extent map (after a checkpoint load, which
    /// fills the inodes directly).
    pub fn rebuild_usage(&mut self) {
        self.usage.clear_live();
        for i in self.inodes.values() {
            self.usage.count_map(&i.extents, 1);
        }
        self.sums.retain_live(&self.usage);
    }

    /// The end-to-end checksums of the data segments the extent maps point into.
    pub fn sums(&self) -> &SegmentSums {
        &self.sums
    }

    /// Forgets the checksums of the segments of `hit` (extents just overwritten, trimmed
    /// or dropped) that no extent references any more.
    fn forget_dead_sums(&mut self, hit: Vec<proto::msg::Extent>) {
        for e in hit {
            let (log, seg) = (e.ptr.seg.log, e.ptr.seg.segment);
            if self.usage.live(log, seg) == 0 {
                self.sums.remove(&(log, seg));
            }
        }
    }

    /// An existing inode or ENOENT.
    pub fn get(&self, ino: InodeId) -> Result<&Inode, Errno> {
        self.inodes
            .get(&ino)
            .ok_or_else(|| enoent(format!("{ino} does not exist")))
    }

    /// An existing directory or ENOENT/ENOTDIR.
    pub fn dir(&self, ino: InodeId) -> Result<&Inode, Errno> {
        let d = self.get(ino)?;
        if !d.is_dir() {
            return Err(enotdir(format!("{ino} is not a directory")));
        }
        Ok(d)
    }

    /// Resolves `name` in `parent` (with "." and ".."): the inode and its kind. The inode
    /// may live on another manager.
    pub fn lookup(&self, parent: InodeId, name: &str) -> Result<(InodeId, FileKind), Errno> {
        let d = self.dir(parent)?;
        match name {
            "." => Ok((parent, FileKind::Dir)),
            ".." => Ok((d.parent.unwrap_or(parent), FileKind::Dir)),
            _ => d
                .entries
                .get(name)
                .ok_or_else(|| enoent(format!("{name:?} is not in {parent}"))),
        }
    }

    /// Entries of directory `ino` whose cookie follows `offset` (0 = from the start), at
    /// most `max`, in cookie (insertion) order. Each entry's `next` is its own cookie, stable
    /// while it exists: creating or removing other entries does not shift a listing.
    pub fn readdir(&self, ino: InodeId, offset: u64, max: u32) -> Result<Vec<DirEntry>, Errno> {
        let d = self.dir(ino)?;
        Ok(d.entries
            .after(offset)
            .take(max as usize)
            .map(|l| DirEntry {
                name: l.name.to_string(),
                ino: l.ino,
                kind: l.kind,
                next: l.cookie,
            })
            .collect())
    }

    /// Inodes and stored bytes of this manager's slots.
    pub fn counts(&self) -> FsCounts {
        FsCounts {
            inodes: self.inodes.len() as u64,
            bytes: self.inodes.values().map(|i| i.attr.blocks_bytes).sum(),
        }
    }
}
