//! Manager service messages: metadata operations from clients, and the cross-manager
//! transaction messages between managers.

use crate::chunksum::ChunkSums;
use crate::ids::{InodeId, LogId, LogPtr, NodeId, SegmentId, SessionId, TxId};
use serde::{Deserialize, Serialize};
use std::fmt;

/// File types, as POSIX knows them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum FileKind {
    File,
    Dir,
    Symlink,
    Fifo,
    Socket,
    CharDev,
    BlockDev,
}

/// A point in time: seconds and nanoseconds since the Unix epoch.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
pub struct Timestamp {
    pub secs: i64,
    pub nanos: u32,
}

impl Timestamp {
    pub fn now() -> Timestamp {
        let d = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Timestamp {
            secs: d.as_secs() as i64,
            nanos: d.subsec_nanos(),
        }
    }
}

/// Attributes of an inode, as the manager holds them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attr {
    pub ino: InodeId,
    pub kind: FileKind,
    /// Permission bits (and setuid/setgid/sticky), without the type bits.
    pub perm: u16,
    pub nlink: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    /// Bytes of data actually stored (sparse files hold less than `size`).
    pub blocks_bytes: u64,
    pub atime: Timestamp,
    pub mtime: Timestamp,
    pub ctime: Timestamp,
    pub rdev: u32,
    /// Bumped on every change of data or metadata.
    pub version: u64,
}

/// Who asks: the caller's credentials from the FUSE request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Caller {
    pub uid: u32,
    pub gid: u32,
}

/// The full credentials of the process behind a file system request: what the manager
/// checks permissions with (`Request::ManagerAs`). `groups` are the supplementary groups
/// (the client reads them from /proc); the manager caps how many it looks at.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Credentials {
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
}

impl Credentials {
    /// The most supplementary groups a request may carry (Linux's NGROUPS_MAX).
    pub const MAX_GROUPS: usize = 65536;

    pub fn caller(&self) -> Caller {
        Caller {
            uid: self.uid,
            gid: self.gid,
        }
    }
}

/// What an open asks for (`ManagerRequest::Open`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct OpenAccess {
    pub read: bool,
    pub write: bool,
}

/// A time to set: now, or a given value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SetTime {
    Now,
    At(Timestamp),
}

/// The attribute changes of a setattr; `None` leaves a field alone.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetAttrs {
    pub perm: Option<u16>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub size: Option<u64>,
    pub atime: Option<SetTime>,
    pub mtime: Option<SetTime>,
}

/// What to create.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum NewNode {
    File,
    Dir,
    Symlink {
        target: String,
    },
    /// FIFOs, sockets and device nodes (mknod).
    Special {
        kind: FileKind,
        rdev: u32,
    },
}

/// One directory entry as returned by `ReadDir`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirEntry {
    pub name: String,
    pub ino: InodeId,
    pub kind: FileKind,
    /// Cookie to pass as `offset` to continue after this entry: the entry's own, stable
    /// while it exists (a per-directory insertion sequence, never 0).
    pub next: u64,
}

/// A piece of a file stored in the log: file bytes `[offset, offset + ptr.len)` are at `ptr`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Extent {
    pub offset: u64,
    pub ptr: LogPtr,
}

/// New data of one inode, written to the client's log, to be committed in the extent map.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InodeWrite {
    pub ino: InodeId,
    pub extents: Vec<Extent>,
    /// The file size after these writes (the maximum of the old size and the written end,
    /// or a size set by the writer).
    pub size: u64,
    pub mtime: Timestamp,
    /// End-to-end checksums of the chunks the extents' log ranges touch (whole segments'
    /// worth is fine), computed by the writer from what it appended (`chunksum`). Empty
    /// from writers that keep none: those extents are read unchecked.
    pub sums: Vec<ChunkSums>,
}

/// Where a client stood with a manager when it buffered data: the manager's incarnation
/// and the number of times it had given up on the session (`LeaseGrant::losses`). A commit
/// carries it so that writes buffered before a loss never land, even when the session holds
/// the inode's write lease again by the time it commits (it asked for it anew).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Standing {
    pub incarnation: u64,
    pub losses: u32,
}

/// The cleaner copied file bytes `[offset, offset + old.len)` of `ino` from `old` to `new`
/// (same length); the owning manager remaps them only where its extent map still points at
/// `old` (a concurrent overwrite wins).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExtentMove {
    pub ino: InodeId,
    pub offset: u64,
    pub old: LogPtr,
    pub new: LogPtr,
    /// End-to-end checksums of the chunks `new` touches in the cleaner's segment (empty:
    /// the copy is read unchecked).
    pub sums: Vec<ChunkSums>,
}

/// File system totals for statfs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FsCounts {
    pub inodes: u64,
    pub bytes: u64,
}

/// rename(2) flags.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RenameFlags {
    pub noreplace: bool,
    pub exchange: bool,
}

/// Requests to a manager. Each names the inode (or parent directory) whose slot routes it.
#[derive(Clone, Debug, Serialize, Deserialize, strum::IntoStaticStr)]
pub enum ManagerRequest {
    Lookup {
        parent: InodeId,
        name: String,
    },
    GetAttr {
        ino: InodeId,
    },
    SetAttr {
        ino: InodeId,
        set: SetAttrs,
        caller: Caller,
    },
    /// Create `name` in `parent`. With `open`, the new inode is also opened by `session`.
    Create {
        parent: InodeId,
        name: String,
        node: NewNode,
        perm: u16,
        umask: u16,
        caller: Caller,
        session: Option<SessionId>,
    },
    Unlink {
        parent: InodeId,
        name: String,
        caller: Caller,
    },
    Rmdir {
        parent: InodeId,
        name: String,
        caller: Caller,
    },
    Rename {
        parent: InodeId,
        name: String,
        new_parent: InodeId,
        new_name: String,
        flags: RenameFlags,
        caller: Caller,
    },
    Link {
        ino: InodeId,
        new_parent: InodeId,
        new_name: String,
        caller: Caller,
    },
    /// At most `max` entries of directory `ino` after cookie `offset` (0 = from the
    /// start), in cookie order. Entries created or removed meanwhile do not shift the
    /// others: one present for the whole listing is returned exactly once. `.` and `..`
    /// are not included.
    ReadDir {
        ino: InodeId,
        offset: u64,
        max: u32,
    },
    ReadLink {
        ino: InodeId,
    },
    /// Register an open of `ino` by client session `session` (keeps an unlinked file alive).
    /// Sent for every open: the manager checks `access` against the caller's credentials
    /// (registering an already registered session again changes nothing).
    Open {
        ino: InodeId,
        session: SessionId,
        access: OpenAccess,
    },
    /// The last local close of `ino` by `session`.
    Release {
        ino: InodeId,
        session: SessionId,
    },
    GetXattr {
        ino: InodeId,
        name: String,
    },
    /// `flags`: 0, or XATTR_CREATE (1) / XATTR_REPLACE (2).
    SetXattr {
        ino: InodeId,
        name: String,
        value: Vec<u8>,
        flags: i32,
        caller: Caller,
    },
    ListXattr {
        ino: InodeId,
    },
    RemoveXattr {
        ino: InodeId,
        name: String,
        caller: Caller,
    },
    /// Extents of `ino` overlapping `[offset, offset + len)`.
    GetExtents {
        ino: InodeId,
        offset: u64,
        len: u64,
    },
    /// Commit data written to the client's log. With `sync`, answer only once durable.
    /// `standing`: the manager's incarnation and loss count the client knew when it buffered
    /// the data; a manager of that incarnation that gave up on the session since refuses
    /// the commit (ENOLCK), whatever write lease the session holds now.
    CommitWrites {
        writes: Vec<InodeWrite>,
        sync: bool,
        standing: Option<Standing>,
    },
    /// Make every change so far durable (fsync/fsyncdir, unmount).
    Sync,
    /// Totals of the inodes this manager owns.
    Counts,
    /// A client introduces itself: callbacks for `session` go back over the connection this
    /// request came on. Answered with `Lease`.
    Hello {
        session: SessionId,
    },
    /// Ends the caller's session at a clean unmount (everything is flushed): the manager
    /// forgets what it held at once instead of calling it back until its lease runs out.
    /// Answered with `Done`; only the session's own connection may end it.
    Goodbye {
        session: SessionId,
    },
    /// Renews the caller's volume lease with this manager. Answered with `Lease`; when
    /// `lost` is set the client must drop every cached copy of this manager's inodes.
    Renew {
        session: SessionId,
    },
    /// Asks for the write lease of `ino` before buffering writes to it: other holders are
    /// called back first. Answered with `Done`. With `reclaim`, the client re-asserts a
    /// write lease it held from the manager's previous incarnation (it still buffers
    /// writes under it): allowed only during the grace period after a restart, and only
    /// while nobody else holds the inode; refused with `LeaseExpired` otherwise.
    AcquireWrite {
        ino: InodeId,
        session: SessionId,
        reclaim: bool,
    },
    /// Between managers: apply this manager's part of a cross-manager operation.
    /// `session` is the lease session of the client that asked the coordinator (`None`
    /// for re-drives and requests without a session): like a local mutation, it is not
    /// called back for a change it made itself (it would wait for its own kernel).
    TxApply {
        tx: TxId,
        op: TxOp,
        session: Option<SessionId>,
    },
    /// Between managers: the coordinator's outcome of a transaction, for recovery.
    /// Answered `TxOutcome`, or `Unavailable` while the coordinator has not decided.
    TxOutcome {
        tx: TxId,
    },
    /// Between managers, phase one of a two-phase commit: check `ops` (all of this
    /// participant's part of `tx`), intent-lock the names and inodes they touch and log a
    /// prepare record, applying nothing. Answered `TxPrepared` with one result per op;
    /// a failed check is an `Errno` (the coordinator aborts and answers it); a lock held
    /// by another transaction is `Unavailable` (the coordinator aborts and retries).
    /// Repeating it answers the stored results. `session` as in `TxApply`.
    TxPrepare {
        tx: TxId,
        ops: Vec<TxOp>,
        session: Option<SessionId>,
    },
    /// Between managers, phase two: the coordinator's durable decision. The participant
    /// applies (commit) or drops (abort) its prepared part, releases its locks and forgets
    /// the transaction; this message is the coordinator's acknowledgement of its prepare
    /// answer. Answered `TxFinished` with the attributes as applied (empty after an abort,
    /// and for an unknown transaction: finished before).
    TxFinish {
        tx: TxId,
        commit: bool,
        session: Option<SessionId>,
    },
    /// Between managers: take (`acquire`) or give back the cluster-wide directory-move
    /// lock, served by the manager of the root's slot. A rename that moves a directory to
    /// another parent holds it from its ancestry check to its commit. `token` names the
    /// holder. Answered `Done`; `Unavailable` while another token holds it.
    DirMoveLock {
        token: u64,
        acquire: bool,
    },
    /// Cooperative caching, batched: what session `session` knows of who caches which
    /// extent windows. `hints`: it forwarded blocks of these windows to other clients
    /// (N-chance), which now cache them; the manager adds each holder to its holder
    /// directory if its address belongs to a live session. `held`: the first block of
    /// each of these windows entered the session's own cache (it is named as their holder
    /// at the address its request came from). `gone`: the session's cache no longer holds
    /// any block of these windows (evicted, invalidated, dropped), so it is no longer
    /// named. Hints only: a wrong or lost one costs a reader a fallback. At most
    /// `MAX_HOLDER_HINTS` entries in the three lists together. Answered `Done`.
    HolderHints {
        session: SessionId,
        hints: Vec<HolderHint>,
        held: Vec<HolderWindow>,
        gone: Vec<HolderWindow>,
    },
    /// A client's promise: session `session` writes `log` and will never commit an extent
    /// in a segment of it below `horizon` (see `manager::usage`). Answered with `Done`.
    LogHorizon {
        session: SessionId,
        log: LogId,
        horizon: SegmentId,
    },
    /// The reclaimer: accept no more commits naming segments of `log` below `upto` (capped
    /// by the horizon of a live writer), and report the live bytes of the log's segments,
    /// from a state already durable (`upto` 0 only reports). Answered with `Sealed`.
    SealLog {
        log: LogId,
        upto: SegmentId,
    },
    /// The cleaner: every extent of this manager's files that lies in one of `segments` of
    /// `log` (a snapshot, not durable). Answered with `LiveExtents`.
    LiveExtents {
        log: LogId,
        segments: Vec<SegmentId>,
    },
    /// The cleaner: remap each move's bytes to its new copy where the extent map still
    /// points at the old one (conditional; logged, and durable before the answer; other
    /// holders of the files are called back like for any change). Answered `Relocated`.
    Relocate {
        moves: Vec<ExtentMove>,
    },
    /// fallocate(2) of a regular file, after the client wrote its dirty data of it: with
    /// `punch`, the extents in `[offset, offset + len)` are removed (PUNCH_HOLE and
    /// ZERO_RANGE: the range then reads as zeros and its bytes stop being live); without
    /// `keep_size`, the size grows to `offset + len` if smaller (nothing is preallocated:
    /// a log-structured store has no place to reserve). Answered `Attr`.
    Fallocate {
        ino: InodeId,
        offset: u64,
        len: u64,
        punch: bool,
        keep_size: bool,
    },
    /// copy_file_range(2) as extent sharing, after the client wrote its dirty data of both
    /// files: `[dst_offset, dst_offset + n)` of `dst` gets references to the log extents
    /// of `[src_offset, src_offset + n)` of `src` (its holes become holes), where `n` is
    /// `len` cut at the source's end of file; no data moves. Sent to `dst`'s manager.
    /// Refused EXDEV (the client copies the data instead) when `src` lives on another
    /// manager or one of its extents is below its log's reclaim floor. Answered `Copied`.
    CopyRange {
        src: InodeId,
        src_offset: u64,
        dst: InodeId,
        dst_offset: u64,
        len: u64,
    },
    /// The last local closes of several inodes of this manager by `session`, as one
    /// `Release` each (a client gathers its closes for a moment and sends them together:
    /// one request and one group of records instead of one per file). At most
    /// `MAX_RELEASES` inodes. Answered `Done`; an inode that is gone or does not list the
    /// session is skipped.
    ReleaseMany {
        session: SessionId,
        inos: Vec<InodeId>,
    },
}

/// Most inodes in one `ReleaseMany`.
pub const MAX_RELEASES: usize = 1024;

/// The remote part of a cross-manager operation, applied idempotently by the participant.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TxOp {
    /// Create an inode in the participant's slot (mkdir/create whose new inode lives there).
    CreateInode {
        ino_slot: u16,
        parent: InodeId,
        node: NewNode,
        perm: u16,
        caller: Caller,
    },
    /// Add (or replace) a directory entry in a directory the participant owns.
    AddEntry {
        dir: InodeId,
        name: String,
        ino: InodeId,
        kind: FileKind,
        replace: bool,
    },
    /// Remove a directory entry if it still names `ino`.
    RemoveEntry {
        dir: InodeId,
        name: String,
        ino: InodeId,
    },
    /// Change an inode's link count (link, unlink, rename over).
    AdjustNlink { ino: InodeId, delta: i32 },
    /// Point a directory's `..` at a new parent (rename of a directory).
    SetParent { dir: InodeId, parent: InodeId },
    /// Check that a directory is empty (rmdir or rename over a directory) and mark it dead.
    RemoveDir { dir: InodeId },
}

/// Answers of a manager.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum ManagerResponse {
    Attr(Attr),
    /// A create applied by the parent's manager, to a requester with a session: the new
    /// inode's attributes and the parent's after the create. The requester is a reader of
    /// both from then on (its own later changes of the parent aside, it is called back),
    /// so it may answer the parent's attributes from its cache.
    Created {
        attr: Attr,
        /// Boxed: answers stay small.
        parent: Box<Attr>,
    },
    /// An unlink or rmdir applied by the parent's manager, to a requester with a session:
    /// the parent's attributes after the removal. The requester is a reader of the parent
    /// from then on, as with `Created`.
    Removed {
        /// Boxed: answers stay small.
        parent: Box<Attr>,
    },
    /// Unlink/rmdir/rename/xattr changes and other operations with nothing to return.
    Done,
    Entries(Vec<DirEntry>),
    Target(String),
    Xattr(Vec<u8>),
    XattrNames(Vec<String>),
    Extents(Vec<Extent>),
    /// Attributes after a commit, one per `InodeWrite`, and the write verifier: the
    /// incarnation of the manager that accepted it. A commit without `sync` is durable
    /// once a `Sync` (or a commit with `sync`) is answered by the same incarnation.
    Committed {
        attrs: Vec<Attr>,
        incarnation: u64,
    },
    /// `Sync` is done: everything this incarnation accepted before is durable.
    Synced {
        incarnation: u64,
    },
    Counts(FsCounts),
    /// The participant's result for a `TxApply`: an inode it created, if any.
    TxApplied {
        attr: Option<Attr>,
    },
    /// A participant prepared its part of a transaction: one result per op (the inode a
    /// `CreateInode` will create, the attributes an `AdjustNlink` will leave).
    TxPrepared {
        results: Vec<Option<Attr>>,
    },
    /// The coordinator's outcome: committed or not.
    TxOutcome {
        committed: bool,
    },
    /// A participant carried out the decision on its part of a transaction (`TxFinish`):
    /// on commit, one entry per op of its prepare, the attributes of the op's inode once
    /// applied (`None` where the prepare had no result). They include every change that
    /// landed between prepare and decision (a commit of the linked file), which the
    /// prepare's results do not. Empty when nothing was applied here (abort, or a repeated
    /// decision of a transaction finished before).
    TxFinished {
        applied: Vec<Option<Attr>>,
    },
    /// Coordinator hint for routing.
    Owner(NodeId),
    /// A volume lease grant.
    Lease(LeaseGrant),
    /// Answer to `SealLog`: the floor now in force for the log, and the segments of it
    /// that still hold live bytes at this manager.
    Sealed {
        floor: SegmentId,
        live: Vec<(SegmentId, u64)>,
    },
    /// Answer to `LiveExtents`: (file, extent) pairs.
    LiveExtents(Vec<(InodeId, Extent)>),
    /// Answer to `Relocate`: bytes remapped, and bytes left alone (overwritten, truncated,
    /// deleted, or a new copy below its log's floor).
    Relocated {
        moved: u64,
        skipped: u64,
    },
    /// Answer to `CopyRange`: the bytes copied (shared) and the destination's attributes.
    Copied {
        bytes: u64,
        attr: Attr,
    },
    /// Answer to `LiveExtents` from a manager that keeps end-to-end checksums: the
    /// (file, extent) pairs and the checksums it holds for the chunks they touch.
    SummedLiveExtents {
        extents: Vec<(InodeId, Extent)>,
        sums: Vec<ChunkSums>,
    },
    /// Answer to `GetExtents`: the extents and the end-to-end checksums the manager holds
    /// for the chunks they touch (`chunksum`; extents whose chunks have none are read
    /// unchecked).
    ///
    /// `holders`: addresses of other clients that fetched this extent window or reported
    /// caching blocks of it, and did not report them all gone since (the manager's holder
    /// directory, a hint for cooperative caching: they may cache its blocks; a stale hint costs the reader one fallback to storage, never a wrong
    /// answer, because peers serve bytes only by exact log address).
    SummedExtents {
        extents: Vec<Extent>,
        sums: Vec<ChunkSums>,
        holders: Vec<std::net::SocketAddr>,
    },
}

/// Entries (`hints`, `held` and `gone` together) one `HolderHints` may carry at most.
pub const MAX_HOLDER_HINTS: usize = 1024;

/// The extent window of `ino` at `offset` (as asked for with `GetExtents { ino, offset,
/// .. }`), in a `HolderHints` report about the sender's own cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct HolderWindow {
    pub ino: InodeId,
    pub offset: u64,
}

/// `holder` caches blocks of the extent window of `ino` at `offset` (as asked for with
/// `GetExtents { ino, offset, .. }`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HolderHint {
    pub ino: InodeId,
    pub offset: u64,
    pub holder: std::net::SocketAddr,
}

/// A volume lease answering `Hello`/`Renew`. The client may use what it caches of this
/// manager's inodes until `valid_ms` after it *sent* the request that got this grant; it
/// renews every `lease_ms / 4`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseGrant {
    /// The manager's configured lease (sets the client's renewal pace).
    pub lease_ms: u32,
    /// Lease time the session has left at the manager once this request was handled: at
    /// most `lease_ms`, less when the manager did not extend the lease (callbacks to the
    /// session outstanding). The client extends its lease only from this.
    pub valid_ms: u32,
    /// Changes whenever the manager restarts; a client seeing a new value drops its caches.
    pub incarnation: u64,
    /// The manager gave up waiting for this client's answer to a callback (or does not know
    /// it): everything the client caches of this manager's inodes may be stale.
    pub lost: bool,
    /// How often this incarnation gave up on the session so far. A client that sees it
    /// grow treats the grant as `lost` (a later grant may overtake the one saying so).
    pub losses: u32,
}

/// The volume lease a reply to an ordinary request confirms: the session's lease time left
/// at the manager (`valid_ms`, counted from when the client sent the request) and the
/// incarnation that holds it. A manager that did not extend the lease (callbacks to the
/// session outstanding) reports only what was left, never an extension it did not make.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseExtension {
    pub valid_ms: u32,
    pub incarnation: u64,
    /// `LeaseGrant::losses` at the time: an answer overtaking the `Renew` answer that
    /// tells the client it was lost does not extend the caches it must drop.
    pub losses: u32,
}

impl LeaseExtension {
    /// `left` as a wire extension (saturating at `u32::MAX` ms).
    pub fn new(left: std::time::Duration, incarnation: u64, losses: u32) -> LeaseExtension {
        LeaseExtension {
            valid_ms: left.as_millis().min(u32::MAX as u128) as u32,
            incarnation,
            losses,
        }
    }
}

/// What kind of request a `ManagerRequest` is, for the rules that depend on whether it
/// changes anything: the one table of those properties (`ManagerRequest::kind`), which the
/// manager's grace refusal, the permission check's read-only exports and the numbering of
/// calls (client and manager) all read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestKind {
    /// Changes the file system as a client sees it: refused (EROFS) on a read-only export.
    pub writes: bool,
    /// Changes metadata and is refused during a restarted manager's grace period (leases of
    /// the previous incarnation may still be in use). Writes under a write lease
    /// (`CommitWrites`, `AcquireWrite`) are not: their handlers let a reclaimed writer
    /// through.
    pub refused_in_grace: bool,
    /// Applying it twice differs from applying it once (a retried rename whose first try
    /// was applied would fail ENOENT): the client numbers such calls (`CallId`) and the
    /// manager answers a retry with the first result.
    pub once: bool,
}

impl RequestKind {
    /// Reads, and bookkeeping none of the rules concerns (sessions, releases, syncs, a
    /// transaction's decision, the cleaner's questions).
    const UNRESTRICTED: RequestKind = RequestKind {
        writes: false,
        refused_in_grace: false,
        once: false,
    };
    /// A namespace or xattr change: refused read-only and in grace, numbered.
    const NAMESPACE: RequestKind = RequestKind {
        writes: true,
        refused_in_grace: true,
        once: true,
    };
    /// An attribute change that may be applied twice (the same values again).
    const ATTR: RequestKind = RequestKind {
        writes: true,
        refused_in_grace: true,
        once: false,
    };
    /// A data change under a write lease: its handler applies its own grace rule.
    const LEASED_WRITE: RequestKind = RequestKind {
        writes: true,
        refused_in_grace: false,
        once: false,
    };
    /// A change between managers or by the cleaner: no client sends it.
    const INTERNAL_CHANGE: RequestKind = RequestKind {
        writes: false,
        refused_in_grace: true,
        once: false,
    };
}

impl ManagerRequest {
    /// The request's properties (see `RequestKind`). Every variant is listed: a new one
    /// does not compile until it is classified.
    pub fn kind(&self) -> RequestKind {
        use ManagerRequest as R;
        match self {
            R::Create { .. }
            | R::Unlink { .. }
            | R::Rmdir { .. }
            | R::Rename { .. }
            | R::Link { .. }
            | R::SetXattr { .. }
            | R::RemoveXattr { .. } => RequestKind::NAMESPACE,
            R::SetAttr { .. } | R::Fallocate { .. } | R::CopyRange { .. } => RequestKind::ATTR,
            R::CommitWrites { .. } | R::AcquireWrite { .. } => RequestKind::LEASED_WRITE,
            // Registering a session on an inode, for writing if asked: refused on a
            // read-only export when it asks for write access.
            R::Open { access, .. } => RequestKind {
                writes: access.write,
                ..RequestKind::UNRESTRICTED
            },
            R::TxApply { .. } | R::TxPrepare { .. } | R::Relocate { .. } => {
                RequestKind::INTERNAL_CHANGE
            }
            R::Lookup { .. }
            | R::GetAttr { .. }
            | R::ReadDir { .. }
            | R::ReadLink { .. }
            | R::GetXattr { .. }
            | R::ListXattr { .. }
            | R::GetExtents { .. }
            | R::Release { .. }
            | R::ReleaseMany { .. }
            | R::Sync
            | R::Counts
            | R::Hello { .. }
            | R::Goodbye { .. }
            | R::Renew { .. }
            | R::TxOutcome { .. }
            | R::TxFinish { .. }
            | R::DirMoveLock { .. }
            | R::LogHorizon { .. }
            | R::HolderHints { .. }
            | R::SealLog { .. }
            | R::LiveExtents { .. } => RequestKind::UNRESTRICTED,
        }
    }

    /// Whether calls of this request are numbered (`RequestKind::once`).
    pub fn once(&self) -> bool {
        self.kind().once
    }
}

impl fmt::Display for ManagerRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use ManagerRequest::*;
        match self {
            Lookup { parent, name } => write!(f, "Lookup({parent}, {name:?})"),
            GetAttr { ino } => write!(f, "GetAttr({ino})"),
            SetAttr { ino, .. } => write!(f, "SetAttr({ino})"),
            Create { parent, name, .. } => write!(f, "Create({parent}, {name:?})"),
            Unlink { parent, name, .. } => write!(f, "Unlink({parent}, {name:?})"),
            Rmdir { parent, name, .. } => write!(f, "Rmdir({parent}, {name:?})"),
            Rename {
                parent,
                name,
                new_parent,
                new_name,
                ..
            } => {
                write!(f, "Rename({parent}/{name:?} -> {new_parent}/{new_name:?})")
            }
            Link {
                ino,
                new_parent,
                new_name,
                ..
            } => write!(f, "Link({ino} -> {new_parent}/{new_name:?})"),
            ReadDir { ino, offset, .. } => write!(f, "ReadDir({ino}@{offset})"),
            ReadLink { ino } => write!(f, "ReadLink({ino})"),
            Open { ino, .. } => write!(f, "Open({ino})"),
            Release { ino, .. } => write!(f, "Release({ino})"),
            ReleaseMany { inos, .. } => write!(f, "ReleaseMany({} inodes)", inos.len()),
            GetXattr { ino, name } => write!(f, "GetXattr({ino}, {name:?})"),
            SetXattr { ino, name, .. } => write!(f, "SetXattr({ino}, {name:?})"),
            ListXattr { ino } => write!(f, "ListXattr({ino})"),
            RemoveXattr { ino, name, .. } => write!(f, "RemoveXattr({ino}, {name:?})"),
            GetExtents { ino, offset, len } => write!(f, "GetExtents({ino}, {offset}+{len})"),
            CommitWrites { writes, sync, .. } => {
                write!(f, "CommitWrites({} inodes, sync={sync})", writes.len())
            }
            Sync => write!(f, "Sync"),
            Counts => write!(f, "Counts"),
            TxApply { tx, .. } => write!(f, "TxApply({tx})"),
            TxOutcome { tx } => write!(f, "TxOutcome({tx})"),
            TxPrepare { tx, ops, .. } => write!(f, "TxPrepare({tx}, {} ops)", ops.len()),
            TxFinish { tx, commit, .. } => write!(f, "TxFinish({tx}, commit={commit})"),
            DirMoveLock { token, acquire } => {
                write!(f, "DirMoveLock({token:x}, acquire={acquire})")
            }
            Hello { session } => write!(f, "Hello({session:x})"),
            Renew { session } => write!(f, "Renew({session:x})"),
            Goodbye { session } => write!(f, "Goodbye({session:x})"),
            AcquireWrite { ino, .. } => write!(f, "AcquireWrite({ino})"),
            LogHorizon { log, horizon, .. } => write!(f, "LogHorizon({log}, {horizon})"),
            HolderHints {
                hints, held, gone, ..
            } => write!(
                f,
                "HolderHints({} hints, {} held, {} gone)",
                hints.len(),
                held.len(),
                gone.len()
            ),
            SealLog { log, upto } => write!(f, "SealLog({log}, {upto})"),
            LiveExtents { log, segments } => {
                write!(f, "LiveExtents({log}, {} segments)", segments.len())
            }
            Relocate { moves } => write!(f, "Relocate({} moves)", moves.len()),
            Fallocate {
                ino,
                offset,
                len,
                punch,
                keep_size,
            } => write!(
                f,
                "Fallocate({ino}, {offset}+{len}, punch={punch}, keep_size={keep_size})"
            ),
            CopyRange {
                src,
                src_offset,
                dst,
                dst_offset,
                len,
            } => write!(
                f,
                "CopyRange({src}@{src_offset} -> {dst}@{dst_offset}, {len} bytes)"
            ),
        }
    }
}

#[cfg(test)]
mod kind_tests {
    use super::*;

    /// One request of every variant with its expected (writes, refused_in_grace, once): the
    /// three lists that said so before `kind` (the permission check's read-only refusal,
    /// the service's grace refusal, `once`), pinned.
    fn every_variant() -> Vec<(ManagerRequest, (bool, bool, bool))> {
        use ManagerRequest as R;
        let ino = InodeId(7);
        let s = SessionId(1);
        let c = Caller { uid: 1, gid: 1 };
        let tx = TxId {
            coordinator: NodeId(1),
            seq: 1,
        };
        let n = || "n".to_string();
        let op = TxOp::RemoveDir { dir: ino };
        let open = |write| R::Open {
            ino,
            session: s,
            access: OpenAccess { read: true, write },
        };
        vec![
            (
                R::Lookup {
                    parent: ino,
                    name: n(),
                },
                (false, false, false),
            ),
            (R::GetAttr { ino }, (false, false, false)),
            (
                R::SetAttr {
                    ino,
                    set: SetAttrs::default(),
                    caller: c,
                },
                (true, true, false),
            ),
            (
                R::Create {
                    parent: ino,
                    name: n(),
                    node: NewNode::File,
                    perm: 0o644,
                    umask: 0,
                    caller: c,
                    session: None,
                },
                (true, true, true),
            ),
            (
                R::Unlink {
                    parent: ino,
                    name: n(),
                    caller: c,
                },
                (true, true, true),
            ),
            (
                R::Rmdir {
                    parent: ino,
                    name: n(),
                    caller: c,
                },
                (true, true, true),
            ),
            (
                R::Rename {
                    parent: ino,
                    name: n(),
                    new_parent: ino,
                    new_name: n(),
                    flags: RenameFlags::default(),
                    caller: c,
                },
                (true, true, true),
            ),
            (
                R::Link {
                    ino,
                    new_parent: ino,
                    new_name: n(),
                    caller: c,
                },
                (true, true, true),
            ),
            (
                R::ReadDir {
                    ino,
                    offset: 0,
                    max: 1,
                },
                (false, false, false),
            ),
            (R::ReadLink { ino }, (false, false, false)),
            (open(false), (false, false, false)),
            (open(true), (true, false, false)),
            (R::Release { ino, session: s }, (false, false, false)),
            (R::GetXattr { ino, name: n() }, (false, false, false)),
            (
                R::SetXattr {
                    ino,
                    name: n(),
                    value: Vec::new(),
                    flags: 0,
                    caller: c,
                },
                (true, true, true),
            ),
            (R::ListXattr { ino }, (false, false, false)),
            (
                R::RemoveXattr {
                    ino,
                    name: n(),
                    caller: c,
                },
                (true, true, true),
            ),
            (
                R::GetExtents {
                    ino,
                    offset: 0,
                    len: 1,
                },
                (false, false, false),
            ),
            (
                R::CommitWrites {
                    writes: Vec::new(),
                    sync: false,
                    standing: None,
                },
                (true, false, false),
            ),
            (R::Sync, (false, false, false)),
            (R::Counts, (false, false, false)),
            (R::Hello { session: s }, (false, false, false)),
            (R::Goodbye { session: s }, (false, false, false)),
            (R::Renew { session: s }, (false, false, false)),
            (
                R::AcquireWrite {
                    ino,
                    session: s,
                    reclaim: false,
                },
                (true, false, false),
            ),
            (
                R::TxApply {
                    tx,
                    op: op.clone(),
                    session: None,
                },
                (false, true, false),
            ),
            (R::TxOutcome { tx }, (false, false, false)),
            (
                R::TxPrepare {
                    tx,
                    ops: vec![op],
                    session: None,
                },
                (false, true, false),
            ),
            (
                R::TxFinish {
                    tx,
                    commit: true,
                    session: None,
                },
                (false, false, false),
            ),
            (
                R::DirMoveLock {
                    token: 1,
                    acquire: true,
                },
                (false, false, false),
            ),
            (
                R::LogHorizon {
                    session: s,
                    log: LogId(1),
                    horizon: SegmentId(1),
                },
                (false, false, false),
            ),
            (
                R::SealLog {
                    log: LogId(1),
                    upto: SegmentId(1),
                },
                (false, false, false),
            ),
            (
                R::HolderHints {
                    session: s,
                    hints: Vec::new(),
                    held: Vec::new(),
                    gone: Vec::new(),
                },
                (false, false, false),
            ),
            (
                R::LiveExtents {
                    log: LogId(1),
                    segments: Vec::new(),
                },
                (false, false, false),
            ),
            (R::Relocate { moves: Vec::new() }, (false, true, false)),
            (
                R::Fallocate {
                    ino,
                    offset: 0,
                    len: 1,
                    punch: false,
                    keep_size: false,
                },
                (true, true, false),
            ),
            (
                R::CopyRange {
                    src: ino,
                    src_offset: 0,
                    dst: ino,
                    dst_offset: 0,
                    len: 1,
                },
                (true, true, false),
            ),
        ]
    }

    #[test]
    fn every_request_is_classified_as_before() {
        let all = every_variant();
        // One sample per variant (Open twice): a variant missing here fails the count.
        let variants: std::collections::BTreeSet<_> = all
            .iter()
            .map(|(r, _)| std::mem::discriminant(r))
            .map(|d| format!("{d:?}"))
            .collect();
        assert_eq!(variants.len(), all.len() - 1, "one sample of each variant");
        for (req, (writes, refused_in_grace, once)) in all {
            let want = RequestKind {
                writes,
                refused_in_grace,
                once,
            };
            assert_eq!(req.kind(), want, "{req}");
            assert_eq!(req.once(), once, "{req}");
        }
    }

    #[test]
    fn numbered_requests_change_something_and_wait_out_the_grace() {
        for (req, _) in every_variant() {
            let k = req.kind();
            if k.once {
                assert!(k.writes && k.refused_in_grace, "{req}");
            }
        }
    }
}
