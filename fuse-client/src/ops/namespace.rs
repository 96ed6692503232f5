//! Namespace operations: lookup, getattr, create, mknod, mkdir, symlink, unlink, rmdir,
//! rename, link, readlink, open counts (`Open`/`Release` at the manager), extended
//! attributes and statfs. Every operation is an async method of `Client` that returns an
//! errno on failure, usable from tests without a mount.
//! Must not hold a lock across an await (the per-inode open-count mutex excepted, which
//! orders `Open`/`Release` of one inode).

use crate::client::{Client, FileHandle, PROBE_TIMEOUT};
use crate::data::attrs::Touches;
use crate::error::FsError;
use crate::meta::{self as remote, Target};
use proto::config::ClusterConfig;
use proto::ids::{InodeId, SessionId};
use proto::msg::{
    Attr, Caller, FsCounts, ManagerRequest, ManagerResponse, NewNode, OpenAccess, RenameFlags,
    Request, Response, StorageRequest, StorageResponse,
};

/// Setting this extended attribute (any value, on any inode) drops this client's block,
/// extent and attribute caches; the managers are not told (benchmarks use it to read cold).
pub const DROP_CACHES_XATTR: &str = "shoal.drop_caches";

/// The virtual xattr that reads this mount's cooperative-caching counters as JSON (on any
/// path of the mount): `getfattr -n shoal.stats --only-values MNT`.
pub const STATS_XATTR: &str = "shoal.stats";

/// The virtual xattr that lists, as a JSON array of inode numbers (`st_ino`), the files
/// this mount holds writes of that no manager has yet (buffered, or in a commit not yet
/// answered): what a crash or a cut-off of this mount now could lose, whose next fsync or
/// close would then report EIO. On any path of the mount:
/// `getfattr -n shoal.unflushed --only-values MNT`.
pub const UNFLUSHED_XATTR: &str = "shoal.unflushed";

/// The virtual xattr that switches this mount's cooperative caching at runtime (on any
/// path of the mount, same permission rule as `shoal.drop_caches`): value `1` asks peers,
/// forwards and takes forwards (needs `[client] peer_reads` on), `0` reads only locally
/// and from the storage servers. Reading it gives `1` or `0`.
/// `setfattr -n shoal.peer_reads -v 0 MNT`.
pub const PEER_READS_XATTR: &str = "shoal.peer_reads";

/// The virtual xattr that reads the epoch of the cluster config this mount follows (it
/// learns newer committed configs from the config group, `proto::follow`), as decimal text:
/// `getfattr -n shoal.config_epoch --only-values MNT`.
pub const CONFIG_EPOCH_XATTR: &str = "shoal.config_epoch";

/// The value of a `shoal.peer_reads` write: `0` or `1`, surrounding whitespace ignored.
pub(crate) fn parse_switch(value: &[u8]) -> Option<bool> {
    match value.trim_ascii() {
        b"1" => Some(true),
        b"0" => Some(false),
        _ => None,
    }
}
/// Longest name a directory entry may have.
pub const NAME_MAX: usize = 255;

/// File system totals for statfs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StatFs {
    pub blocks: u64,
    pub bfree: u64,
    pub bavail: u64,
    pub files: u64,
    pub ffree: u64,
    pub bsize: u32,
    pub namelen: u32,
}

/// How often an attribute answer older than our own change is asked for again.
const STALE_ANSWER_RETRIES: usize = 3;

impl Client {
    pub(crate) async fn attr_call(&self, req: ManagerRequest) -> Result<Attr, FsError> {
        // Open until the answer is checked against our own changes (see `data::attrs`).
        let ask = self.attrs.ask();
        let mut a = self.manager_attr(req).await?;
        // An answer older than a change of our own to the inode was computed before that
        // change landed (a commit that finished while it was in flight): ask again. Bounded:
        // an answer sent after our change is at least as new.
        for _ in 0..STALE_ANSWER_RETRIES {
            if !self.attrs.predates_own_change(&a) {
                break;
            }
            tracing::debug!(inode = %a.ino, version = a.version, "attributes older than our own change: asking again");
            a = self
                .manager_attr(ManagerRequest::GetAttr { ino: a.ino })
                .await?;
        }
        let out = self.local_view(a);
        drop(ask);
        Ok(out)
    }

    /// The manager's answer to `req` (attributes as committed, without local writes laid
    /// over), recorded in the attribute cache unless a callback dropped attributes while it
    /// was in flight (it may predate the change the callback announced). Callers use the
    /// returned value, not the cache (it may not be cached).
    pub(crate) async fn manager_attr(&self, req: ManagerRequest) -> Result<Attr, FsError> {
        let what = req.to_string();
        let ask = self.attrs.ask();
        let change = self.touches(&req).map(|t| self.attrs.begin_change(t));
        match self.meta.call(Target::Route, req).await? {
            ManagerResponse::Attr(a) => {
                let a = self.note_attr(&a);
                // Checked after the insert; droppers bump the count before removing.
                self.attrs.settle(&ask, a.ino);
                Ok(a)
            }
            ManagerResponse::Created { attr, parent } => {
                let a = self.note_attr(&attr);
                self.attrs.settle(&ask, a.ino);
                // The parent as our create left it; we are its reader from this answer on,
                // and of the child if the parent's manager owns it (a file always).
                self.note_attr(&parent);
                self.attrs.settle(&ask, parent.ino);
                if let Some(change) = change {
                    if self.meta.owner(attr.ino) == self.meta.owner(parent.ino) {
                        self.attrs.vouch(change, &[&parent, &attr], &ask);
                    } else {
                        self.attrs.vouch(change, &[&parent], &ask);
                    }
                }
                Ok(a)
            }
            other => Err(remote::unexpected(&what, &other)),
        }
    }

    pub(crate) async fn done_call(&self, req: ManagerRequest) -> Result<(), FsError> {
        let touches = self.touches(&req);
        self.done_call_touching(req, touches).await
    }

    /// `done_call` of a request whose touched inodes were read before it marked its
    /// names (`touches`).
    async fn done_call_touching(
        &self,
        req: ManagerRequest,
        touches: Option<Touches>,
    ) -> Result<(), FsError> {
        let what = req.to_string();
        let ask = self.attrs.ask();
        let change = touches.map(|t| self.attrs.begin_change(t));
        match self.meta.call(Target::Route, req).await? {
            ManagerResponse::Done => Ok(()),
            ManagerResponse::Removed { parent } => {
                // The parent as our unlink/rmdir left it; we are its reader from here on.
                self.note_attr(&parent);
                self.attrs.settle(&ask, parent.ino);
                if let Some(change) = change {
                    self.attrs.vouch(change, &[&parent], &ask);
                }
                Ok(())
            }
            other => Err(remote::unexpected(&what, &other)),
        }
    }

    pub async fn lookup(&self, parent: InodeId, name: &str) -> Result<Attr, FsError> {
        check_name(name)?;
        // A directory we made and still hold: a name it does not have is not there, and a
        // name our own create made is that inode (the lease first, as for every cached
        // answer; `data::dir_names`). Its attributes only if vouched for (`data::attrs`).
        if self.dir_names.knows(parent) && self.meta.ensure_lease(parent).await.is_some() {
            match self.dir_names.entry(parent, name) {
                Some(None) => {
                    self.meta.counters().local_negative_lookup();
                    return Err(FsError::ENOENT);
                }
                Some(Some(ino)) if self.attrs.fresh(ino).is_some() => {
                    if let Some(a) = self.local_child(parent, name, ino).await {
                        return Ok(a);
                    }
                }
                _ => {}
            }
        }
        let mut a = self
            .attr_call(ManagerRequest::Lookup {
                parent,
                name: name.to_string(),
            })
            .await?;
        if self.meta.owner(a.ino) != self.meta.owner(parent) {
            // The child's owner registers us as a reader only if we ask it.
            a = self.getattr(a.ino).await?;
        }
        if a.kind == proto::msg::FileKind::Dir && name != ".." && name != "." {
            self.parents.learn(a.ino, parent);
        }
        Ok(a)
    }

    /// `ino`, which `name` in `parent` is (`DirNames::entry`), answered without a manager
    /// if its attributes are vouched for and its lease holds; checked again after the
    /// lease, which may have been renewed meanwhile. Only when the parent's manager owns
    /// it: then one lease covers the name and the attributes (waiting for another
    /// manager's lease could outlast the parent's, whose manager may meanwhile have given
    /// up on this client and renamed the entry).
    async fn local_child(&self, parent: InodeId, name: &str, ino: InodeId) -> Option<Attr> {
        if self.meta.owner(ino) != self.meta.owner(parent) {
            return None;
        }
        self.meta.ensure_lease(ino).await?;
        if self.dir_names.child(parent, name) != Some(ino) {
            return None;
        }
        let a = self.attrs.fresh(ino)?;
        self.meta.counters().local_positive_lookup();
        if a.kind == proto::msg::FileKind::Dir {
            self.parents.learn(a.ino, parent);
        }
        Some(self.local_view(a))
    }

    pub async fn getattr(&self, ino: InodeId) -> Result<Attr, FsError> {
        // A directory as our own create in it left it, held since (`data::attrs`): the
        // kernel asks for it after every create. Under the lease, as every cached answer.
        if self.attrs.fresh(ino).is_some() && self.meta.ensure_lease(ino).await.is_some() {
            if let Some(a) = self.attrs.fresh(ino) {
                self.meta.counters().local_getattr();
                return Ok(self.local_view(a));
            }
        }
        self.attr_call(ManagerRequest::GetAttr { ino }).await
    }

    async fn create_node(
        &self,
        parent: InodeId,
        name: &str,
        node: NewNode,
        (perm, umask): (u16, u16),
        caller: Caller,
        session: Option<SessionId>,
    ) -> Result<Attr, FsError> {
        check_name(name)?;
        let is_dir = node == NewNode::Dir;
        // Before it is sent: a lookup of the name while the create is out asks the manager.
        let token = self.dir_names.may_exist(parent, name);
        // Open until the new directory is learnt as empty: a callback meanwhile (which may
        // be about an entry another client made in it) keeps it from being learnt.
        let ask = self.attrs.ask();
        // A new directory's manager is known only from the answer (its slot is chosen by
        // the parent's manager): every manager's epoch as it was when we asked.
        let asked_in = if is_dir {
            self.meta.node_epochs()
        } else {
            Vec::new()
        };
        // Read before sending: never newer than the incarnation that answers.
        let answerer = self.meta.owner(parent);
        let incarnation = self.meta.lease(answerer).incarnation();
        let req = ManagerRequest::Create {
            parent,
            name: name.to_string(),
            node,
            perm: perm & 0o7777,
            umask: umask & 0o7777,
            caller,
            session,
        };
        let a = self.attr_call(req).await?;
        // Answered before its manager's group commit: kept until a sync covers it, so that
        // a restart or takeover losing it is reported, not taken for a removal.
        let many = self
            .writeback
            .created(answerer, incarnation, a.ino, (parent, name));
        self.dir_names.created(parent, name, a.ino, token);
        if is_dir {
            self.parents.learn(a.ino, parent);
            // Made by this request and held by us since: empty. Its owner registered us
            // as a reader before the answer could reach us: the parent's manager with the
            // answer, or, for a directory placed on another manager, that manager as the
            // participant of the two-phase create, at its finish (`tx_finish`). Only in
            // the epoch of the new directory's manager we asked in (no loss of its lease
            // learned meanwhile), with no cached state dropped meanwhile.
            let owner = self.meta.owner(a.ino);
            let then = asked_in
                .iter()
                .find(|(n, _)| *n == owner)
                .and_then(|(_, e)| *e);
            if then.is_some() && self.meta.node_epoch(owner) == then {
                self.dir_names.learn_empty(a.ino);
                // Checked after the insert: droppers bump the count before forgetting.
                if ask.dropped() {
                    self.dir_names.forget(a.ino);
                }
            }
        }
        drop(ask);
        if many {
            // Bounded memory: a sync makes the recorded creates forgettable.
            if let Err(e) = self.writeback.sync_node(answerer).await {
                tracing::debug!(manager = %answerer, "sync of unsynced creates failed: {e}");
            }
        }
        Ok(a)
    }

    /// Creates and opens a regular file; returns its attributes and a file handle.
    pub async fn create(
        &self,
        parent: InodeId,
        name: &str,
        perm: u16,
        umask: u16,
        caller: Caller,
    ) -> Result<(Attr, FileHandle), FsError> {
        // A file's inode lives in its parent's slot: the same manager, the same epoch.
        let asked_in = self.meta.lease_epoch(parent);
        let a = self
            .create_node(
                parent,
                name,
                NewNode::File,
                (perm, umask),
                caller,
                Some(self.meta.session()),
            )
            .await?;
        // Create with our session made us the holder of the write lease, if the manager
        // that answered is the one we asked: across a restart (a retry answered from the
        // log) or a loss learned meanwhile (the epoch moved on) nothing tells us that this
        // incarnation counts us as the writer, so the first write asks for the lease. (A
        // lease recorded here without the manager's knowledge let another mount be
        // granted the file too once the reclaim window ended: both wrote at the same
        // offsets, a t55 failure.)
        if let Some(epoch) = self.meta.lease_epoch(a.ino) {
            if asked_in == Some(epoch) {
                self.record_write_lease(a.ino, epoch, 0);
            }
        }
        self.opened_by_create(a.ino).await;
        Ok((a, self.next_fh()))
    }

    /// mknod: regular files, FIFOs, sockets and device nodes, by the type bits of `mode`.
    pub async fn mknod(
        &self,
        parent: InodeId,
        name: &str,
        mode: u32,
        umask: u16,
        rdev: u32,
        caller: Caller,
    ) -> Result<Attr, FsError> {
        use proto::msg::FileKind;
        let node = match mode & libc::S_IFMT {
            0 | libc::S_IFREG => NewNode::File,
            _ => match crate::ops::attr::kind_of_mode(mode) {
                Some(
                    kind @ (FileKind::Fifo
                    | FileKind::Socket
                    | FileKind::CharDev
                    | FileKind::BlockDev),
                ) => NewNode::Special { kind, rdev },
                _ => return Err(FsError::EINVAL),
            },
        };
        self.create_node(
            parent,
            name,
            node,
            ((mode & 0o7777) as u16, umask),
            caller,
            None,
        )
        .await
    }

    pub async fn mkdir(
        &self,
        parent: InodeId,
        name: &str,
        perm: u16,
        umask: u16,
        caller: Caller,
    ) -> Result<Attr, FsError> {
        self.create_node(parent, name, NewNode::Dir, (perm, umask), caller, None)
            .await
    }

    pub async fn symlink(
        &self,
        parent: InodeId,
        name: &str,
        target: &str,
        caller: Caller,
    ) -> Result<Attr, FsError> {
        if target.is_empty() || target.len() > 4095 {
            return Err(if target.is_empty() {
                FsError::ENOENT
            } else {
                FsError(libc::ENAMETOOLONG)
            });
        }
        let node = NewNode::Symlink {
            target: target.to_string(),
        };
        self.create_node(parent, name, node, (0o777, 0), caller, None)
            .await
    }

    /// Before a removal: the releases owed go first, so that a file this client closed is
    /// freed by the removal at once rather than kept as an orphan until the next batch.
    async fn settle_releases(&self) {
        if self.opens.owes_releases() {
            self.send_releases().await;
        }
    }

    /// Which inodes' attributes own request `req` may alter (`data::attrs`), or `None` if
    /// it alters none. Read before the request marks its names in `dir_names`: a removed
    /// or replaced name counts as the inode it is known to be, nothing if it is known to be
    /// absent, and as maybe any inode if it is not known.
    fn touches(&self, req: &ManagerRequest) -> Option<Touches> {
        use ManagerRequest as R;
        let mut inos = Vec::new();
        let entry = |dir: InodeId, name: &str, inos: &mut Vec<InodeId>| match self
            .dir_names
            .entry(dir, name)
        {
            Some(child) => {
                inos.extend(child);
                true
            }
            None => false,
        };
        let known = match req {
            R::Create { parent, .. } => {
                inos.push(*parent);
                true
            }
            R::Unlink { parent, name, .. } | R::Rmdir { parent, name, .. } => {
                inos.push(*parent);
                entry(*parent, name, &mut inos)
            }
            R::Rename {
                parent,
                name,
                new_parent,
                new_name,
                ..
            } => {
                inos.extend([*parent, *new_parent]);
                let from = entry(*parent, name, &mut inos);
                let to = entry(*new_parent, new_name, &mut inos);
                from && to
            }
            R::Link {
                ino, new_parent, ..
            } => {
                inos.extend([*ino, *new_parent]);
                true
            }
            R::SetAttr { ino, .. } | R::SetXattr { ino, .. } | R::RemoveXattr { ino, .. } => {
                inos.push(*ino);
                true
            }
            _ => return None,
        };
        Some(if known {
            Touches::these(inos)
        } else {
            Touches::these_and_unknown(inos)
        })
    }

    pub async fn unlink(&self, parent: InodeId, name: &str, caller: Caller) -> Result<(), FsError> {
        check_name(name)?;
        self.settle_releases().await;
        let req = ManagerRequest::Unlink {
            parent,
            name: name.to_string(),
            caller,
        };
        let touches = self.touches(&req);
        let mark = self.dir_names.mark(parent, name);
        self.done_call_touching(req, touches).await?;
        self.dir_names.removed(parent, name, mark);
        self.writeback.lock_unsynced().removed(parent, name);
        // Deleting is how a full cluster gets out: let writes try again.
        self.writeback.clear_no_space();
        Ok(())
    }

    pub async fn rmdir(&self, parent: InodeId, name: &str, caller: Caller) -> Result<(), FsError> {
        check_name(name)?;
        let req = ManagerRequest::Rmdir {
            parent,
            name: name.to_string(),
            caller,
        };
        let touches = self.touches(&req);
        let mark = self.dir_names.mark(parent, name);
        self.done_call_touching(req, touches).await?;
        self.dir_names.removed(parent, name, mark);
        self.writeback.lock_unsynced().removed(parent, name);
        Ok(())
    }

    pub async fn rename(
        &self,
        parent: InodeId,
        name: &str,
        new_parent: InodeId,
        new_name: &str,
        flags: RenameFlags,
        caller: Caller,
    ) -> Result<(), FsError> {
        check_name(name)?;
        self.settle_releases().await;
        check_name(new_name)?;
        if flags.noreplace && flags.exchange {
            return Err(FsError::EINVAL);
        }
        let req = ManagerRequest::Rename {
            parent,
            name: name.to_string(),
            new_parent,
            new_name: new_name.to_string(),
            flags,
            caller,
        };
        let touches = self.touches(&req);
        self.dir_names.may_exist(new_parent, new_name);
        let mark = self.dir_names.mark(parent, name);
        self.done_call_touching(req, touches).await?;
        if !flags.exchange && (parent, name) != (new_parent, new_name) {
            self.dir_names.removed(parent, name, mark);
            self.writeback
                .lock_unsynced()
                .renamed((parent, name), (new_parent, new_name));
        } else if flags.exchange {
            self.writeback
                .lock_unsynced()
                .exchanged((parent, name), (new_parent, new_name));
        }
        if parent != new_parent {
            // A moved directory has a new `..`; we no longer know which inode moved.
            self.parents.forget_children_of(parent);
        }
        Ok(())
    }

    pub async fn link(
        &self,
        ino: InodeId,
        new_parent: InodeId,
        new_name: &str,
        caller: Caller,
    ) -> Result<Attr, FsError> {
        check_name(new_name)?;
        self.dir_names.may_exist(new_parent, new_name);
        let req = ManagerRequest::Link {
            ino,
            new_parent,
            new_name: new_name.to_string(),
            caller,
        };
        // Also between two managers' inodes: the coordinator answers the attributes as
        // the inode's owner applied the link (a commit of ours in between included).
        self.attr_call(req).await
    }

    pub async fn readlink(&self, ino: InodeId) -> Result<String, FsError> {
        match self
            .meta
            .call(Target::Route, ManagerRequest::ReadLink { ino })
            .await?
        {
            ManagerResponse::Target(t) => Ok(t),
            other => Err(remote::unexpected("ReadLink", &other)),
        }
    }

    /// Counts a local open. Every open goes to the manager, which checks `access` with the
    /// caller's credentials (the authority; the kernel's check is only a first line); the
    /// first one also registers this session there.
    pub(crate) async fn open_ref(&self, ino: InodeId, access: OpenAccess) -> Result<(), FsError> {
        // Bounded: a retry happens only when a concurrent last close removed the slot.
        for _ in 0..16 {
            let slot = self.opens.slot(ino);
            let mut n = slot.lock().await;
            if !self.opens.is_current(ino, &slot) {
                continue;
            }
            // A release still owed: the manager lists us; the Open only checks access.
            let owed = self.opens.undefer(ino);
            let req = ManagerRequest::Open {
                ino,
                session: self.meta.session(),
                access,
            };
            if let Err(e) = self.done_call(req).await {
                if owed {
                    self.opens.defer_release(ino);
                }
                return Err(e);
            }
            *n += 1;
            return Ok(());
        }
        Err(FsError::EIO)
    }

    /// A create with our session counts as the first open.
    async fn opened_by_create(&self, ino: InodeId) {
        let slot = self.opens.slot(ino);
        let mut n = slot.lock().await;
        self.opens.undefer(ino);
        *n += 1;
    }

    /// Drops a local open; the last one owes the manager a release of this session, sent
    /// with others a moment later (`send_releases`).
    pub(crate) async fn close_ref(&self, ino: InodeId) -> Result<(), FsError> {
        let Some(slot) = self.opens.existing(ino) else {
            return Ok(());
        };
        let mut n = slot.lock().await;
        if *n == 0 {
            return Ok(());
        }
        *n -= 1;
        if *n > 0 {
            return Ok(());
        }
        self.opens.defer_release(ino);
        drop(n);
        self.releases_due.notify_one();
        Ok(())
    }

    /// Sends the releases owed (`data::open_files`), one `ReleaseMany` per manager (and
    /// per `MAX_RELEASES`), all managers at once. Each inode's slot is held from taking
    /// its mark until the answer, then removed, so that a new open registers after it; an
    /// inode whose slot is busy (an open or close under way) keeps its mark for the open to
    /// take back or a later round. A release that fails is not sent again (as a failed
    /// `Release` never was): the manager releases the opens of sessions that end.
    pub(crate) async fn send_releases(&self) {
        type Held = (
            InodeId,
            crate::data::open_files::OpenSlot,
            tokio::sync::OwnedMutexGuard<u32>,
        );
        let mut by_node: std::collections::BTreeMap<proto::ids::NodeId, Vec<Held>> =
            Default::default();
        for ino in self.opens.deferred() {
            let Some(slot) = self.opens.existing(ino) else {
                self.opens.undefer(ino);
                continue;
            };
            let Ok(guard) = slot.clone().try_lock_owned() else {
                continue;
            };
            if *guard != 0 || !self.opens.undefer(ino) {
                continue;
            }
            by_node
                .entry(self.meta.owner(ino))
                .or_default()
                .push((ino, slot, guard));
        }
        let session = self.meta.session();
        let batches = by_node.into_values().flat_map(|held| {
            let mut held = held;
            let mut out = Vec::new();
            while !held.is_empty() {
                let rest = held.split_off(held.len().min(proto::msg::MAX_RELEASES));
                out.push(std::mem::replace(&mut held, rest));
            }
            out
        });
        let sends = batches.map(|held| async move {
            let inos: Vec<InodeId> = held.iter().map(|(i, _, _)| *i).collect();
            let n = inos.len();
            if let Err(e) = self
                .done_call(ManagerRequest::ReleaseMany { session, inos })
                .await
            {
                tracing::debug!("release of {n} closed files failed: {e}");
            }
            for (ino, slot, guard) in held {
                self.opens.remove_if_current(ino, &slot);
                drop(guard);
            }
        });
        futures::future::join_all(sends).await;
    }

    /// How many local opens `ino` has.
    pub fn open_count(&self, ino: InodeId) -> u32 {
        self.opens.count(ino)
    }

    pub async fn getxattr(&self, ino: InodeId, name: &str) -> Result<Vec<u8>, FsError> {
        if name == STATS_XATTR {
            return Ok(self.coop_stats().to_json().into_bytes());
        }
        if name == UNFLUSHED_XATTR {
            let inos: Vec<String> = self
                .unflushed_inodes()
                .iter()
                .map(|i| i.0.to_string())
                .collect();
            return Ok(format!("[{}]", inos.join(",")).into_bytes());
        }
        if name == CONFIG_EPOCH_XATTR {
            return Ok(self.live.epoch().to_string().into_bytes());
        }
        if name == PEER_READS_XATTR {
            let on = self.coop_stats().peer_reads;
            return Ok(if on { b"1".to_vec() } else { b"0".to_vec() });
        }
        let caps = name == "security.capability";
        if caps {
            self.meta.ensure_lease(ino).await;
        }
        if caps && self.no_caps.known_absent(ino) {
            return Err(FsError(libc::ENODATA));
        }
        let req = ManagerRequest::GetXattr {
            ino,
            name: name.to_string(),
        };
        match self.meta.call(Target::Route, req).await {
            Ok(ManagerResponse::Xattr(v)) => Ok(v),
            Ok(other) => Err(remote::unexpected("GetXattr", &other)),
            Err(e) => {
                if caps && e.0 == libc::ENODATA {
                    self.no_caps.learn_absent(ino);
                }
                Err(e)
            }
        }
    }

    pub async fn setxattr(
        &self,
        ino: InodeId,
        name: &str,
        value: &[u8],
        flags: i32,
        caller: Caller,
    ) -> Result<(), FsError> {
        if name.is_empty() || name.len() > 255 {
            return Err(FsError::ERANGE);
        }
        if value.len() > 64 << 10 {
            return Err(FsError(libc::E2BIG));
        }
        if name == DROP_CACHES_XATTR {
            self.drop_caches();
            return Ok(());
        }
        if name == PEER_READS_XATTR {
            let on = parse_switch(value).ok_or(FsError(libc::EINVAL))?;
            return self.set_peer_reads(on).map_err(|e| {
                tracing::warn!("{PEER_READS_XATTR}: {e}");
                FsError(libc::EOPNOTSUPP)
            });
        }
        self.no_caps.forget(ino);
        let req = ManagerRequest::SetXattr {
            ino,
            name: name.to_string(),
            value: value.to_vec(),
            flags,
            caller,
        };
        self.done_call(req).await
    }

    pub async fn listxattr(&self, ino: InodeId) -> Result<Vec<String>, FsError> {
        match self
            .meta
            .call(Target::Route, ManagerRequest::ListXattr { ino })
            .await?
        {
            ManagerResponse::XattrNames(n) => Ok(n),
            other => Err(remote::unexpected("ListXattr", &other)),
        }
    }

    pub async fn removexattr(
        &self,
        ino: InodeId,
        name: &str,
        caller: Caller,
    ) -> Result<(), FsError> {
        self.no_caps.forget(ino);
        self.done_call(ManagerRequest::RemoveXattr {
            ino,
            name: name.to_string(),
            caller,
        })
        .await
    }

    /// Space from every storage server's `Stat` (usable share k/(k+m)), inode counts from
    /// every manager's `Counts`.
    pub async fn statfs(&self) -> Result<StatFs, FsError> {
        let nodes: Vec<_> = self
            .live
            .current()
            .storage_nodes()
            .into_iter()
            .map(|n| n.address)
            .collect();
        let stats = futures::future::join_all(nodes.into_iter().map(|addr| {
            let t = self.transport.clone();
            async move {
                let req = Request::Storage(StorageRequest::Stat);
                t.call_timeout(addr, &req, Default::default(), PROBE_TIMEOUT)
                    .await
            }
        }))
        .await;
        // Honest space: what stripes of k+m distinct servers can use, with servers on one
        // file system sharing it (storage::space).
        let (mut caps, mut frees) = (Vec::new(), Vec::new());
        for r in stats {
            match r {
                Ok((Response::Storage(StorageResponse::Stat(s)), _)) => {
                    caps.push(storage::space::ServerSpace {
                        fs_id: s.fs_id,
                        bytes: s.capacity_bytes.saturating_sub(s.reserve_bytes),
                        shared: s.fs_capacity_bytes,
                    });
                    frees.push(storage::space::ServerSpace {
                        fs_id: s.fs_id,
                        bytes: s.free_bytes,
                        shared: s.fs_free_bytes.saturating_sub(s.reserve_bytes),
                    });
                }
                Ok((other, _)) => tracing::debug!("storage Stat answered {other}"),
                Err(e) => tracing::debug!("storage Stat failed: {e}"),
            }
        }
        let counts = futures::future::join_all(
            self.config
                .manager_nodes()
                .into_iter()
                .map(|m| self.meta.call(Target::Node(m.id), ManagerRequest::Counts)),
        )
        .await;
        let mut total = FsCounts::default();
        for c in counts {
            match c? {
                ManagerResponse::Counts(c) => {
                    total.inodes += c.inodes;
                    total.bytes += c.bytes;
                }
                other => return Err(remote::unexpected("Counts", &other)),
            }
        }
        let width =
            self.config.file.erasure.data as usize + self.config.file.erasure.parity as usize;
        let cap = storage::space::usable_raw(&caps, width) as u128;
        let free = storage::space::usable_raw(&frees, width) as u128;
        Ok(statfs_from(&self.config, cap, free, total))
    }
}

/// Builds statfs numbers: usable bytes are raw bytes × k/(k+m), in 4 KiB blocks.
pub(crate) fn statfs_from(
    config: &ClusterConfig,
    cap: u128,
    free: u128,
    counts: FsCounts,
) -> StatFs {
    let k = config.file.erasure.data.max(1) as u128;
    let km = k + config.file.erasure.parity as u128;
    let bs = crate::ops::attr::BLKSIZE as u128;
    let blocks = (cap * k / km / bs) as u64;
    let bfree = (free * k / km / bs) as u64;
    let ffree = bfree.max(1 << 20);
    StatFs {
        blocks,
        bfree,
        bavail: bfree,
        files: counts.inodes.saturating_add(ffree),
        ffree,
        bsize: crate::ops::attr::BLKSIZE,
        namelen: NAME_MAX as u32,
    }
}

/// Rejects names no directory can hold.
pub(crate) fn check_name(name: &str) -> Result<(), FsError> {
    if name.is_empty() || name.contains('/') || name.contains('\0') {
        return Err(FsError::EINVAL);
    }
    if name.len() > NAME_MAX {
        return Err(FsError(libc::ENAMETOOLONG));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::config::ErasureConfig;

    #[test]
    fn statfs_counts_usable_space_only() {
        let f = ClusterConfig::generate("t", 6, 1, ErasureConfig { data: 4, parity: 2 }, 7000)
            .expect("gen");
        let c = ClusterConfig::from_file(std::path::Path::new("/tmp/x"), f).expect("config");
        let s = statfs_from(
            &c,
            6 * 6 * 4096,
            3 * 6 * 4096,
            FsCounts {
                inodes: 7,
                bytes: 0,
            },
        );
        assert_eq!(s.blocks, 24);
        assert_eq!(s.bfree, 12);
        assert_eq!(s.files, 7 + s.ffree);
        assert_eq!(s.bsize, 4096);
    }

    #[test]
    fn peer_reads_switch_takes_0_or_1() {
        assert_eq!(parse_switch(b"1"), Some(true));
        assert_eq!(parse_switch(b"0\n"), Some(false));
        assert_eq!(parse_switch(b" 1 "), Some(true));
        for bad in [&b""[..], b"2", b"on", b"10", b"0 1"] {
            assert_eq!(parse_switch(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn names_are_checked() {
        assert!(check_name("a").is_ok());
        assert_eq!(check_name(""), Err(FsError::EINVAL));
        assert_eq!(check_name("a/b"), Err(FsError::EINVAL));
        assert_eq!(
            check_name(&"x".repeat(256)),
            Err(FsError(libc::ENAMETOOLONG))
        );
    }
}
