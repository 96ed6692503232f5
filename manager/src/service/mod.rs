//! The runtime shell: `Service` answers `ManagerRequest`s from the in-memory `MetaState`
//! (behind one async mutex), queues records in the `Journal`, runs cross-manager
//! transactions through `TxDriver` and `Peers`, keeps clients' volume leases in a
//! `LeaseTable` and sends its callbacks through a `CallbackSender`, and recovers in the
//! background at start.
//!
//! This module owns the `Service` struct, the request dispatch (`handle_as`: readiness,
//! slot ownership, the permission check, lease identification, the grace refusal, then one
//! arm per request) and the small error mappings its parts share. The parts are `impl
//! Service` blocks in child modules that import only from this module (and `mutate` the
//! pure `leases::lease_ends`); none but `once`, which wraps it, calls the dispatch:
//! `lifecycle` (start, recovery, readiness, shutdown), `read` (leased reads, lookup, the
//! permission check's facts), `mutate` (the one mutation loop, local and durable commits,
//! rename), `leases` (the lease runtime: renewals, write leases, callbacks and waiting for
//! them), `tx` (the legacy transaction driver and the participant's `TxApply`),
//! `two_phase` (two-phase transactions, the directory-move lock), `once` (numbered calls),
//! `clean_rpc` and `usage_rpc` (the cleaner's and the reclaimer's requests), and
//! `outbound` (how a manager calls clients and other managers).
//! Must not: hold a std lock across `.await`, or hold the state lock (or the gate) while
//! waiting for a callback or a network call.

use crate::access::{Access, Guard};
use crate::error::{code, Errno, ManagerError};
use crate::journal::{Journal, LogBackend};
use crate::lease::{LeaseTable, Requester};
use crate::plan::Ctx;
use crate::state::MetaState;
use proto::config::ClusterConfig;
use proto::ids::{InodeId, NodeId, SlotId};
use proto::msg::{LeaseExtension, ManagerRequest, ManagerResponse, RemoteError, Timestamp};
use proto::worker::Workers;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;
use tokio::task::JoinHandle;

mod clean_rpc;
mod leases;
mod lifecycle;
mod mutate;
mod once;
mod outbound;
mod read;
mod two_phase;
mod tx;
mod usage_rpc;

pub use lifecycle::StartGate;
pub use outbound::{CallbackSender, ClientPeers, Peers, QuicCallbacks};

/// Rounds of callbacks (or waits for others' callbacks) an operation goes through before
/// it gives up with `Unavailable` (only under pathological contention).
const LEASE_ROUNDS: u32 = 64;

fn grace_refusal() -> RemoteError {
    RemoteError::Unavailable(
        "grace period after a manager restart: leases of the previous incarnation may still \
         be in use, retry"
            .into(),
    )
}

fn contention(what: &str) -> RemoteError {
    RemoteError::Unavailable(format!("{what}: too many rounds of lease callbacks, retry"))
}

/// A metadata manager.
pub struct Service {
    me: NodeId,
    config: Arc<ClusterConfig>,
    owners: Vec<NodeId>,
    state: tokio::sync::Mutex<MetaState>,
    /// Ordinary mutations take it shared; a coordinated transaction takes it exclusively
    /// (participants' `TxApply` never takes it, so two coordinators cannot deadlock).
    gate: tokio::sync::RwLock<()>,
    journal: Arc<Journal>,
    backend: Arc<dyn LogBackend>,
    peers: Arc<dyn Peers>,
    leases: Mutex<LeaseTable>,
    /// This run's incarnation (random per start): the lease incarnation and the write
    /// verifier of `Committed`/`Synced` answers.
    incarnation: u64,
    /// Bumped whenever a callback is reported (operations waiting for others' callbacks
    /// and renewals waiting for their session's callbacks look again).
    lease_events: tokio::sync::watch::Sender<u64>,
    callbacks: Arc<dyn CallbackSender>,
    ready: AtomicBool,
    ready_tx: tokio::sync::watch::Sender<bool>,
    stopped: AtomicBool,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    committer: Mutex<Option<JoinHandle<()>>>,
    /// The cluster-wide directory-move lock (served when this node owns the root's slot).
    move_lock: Mutex<crate::txn::movelock::MoveLock>,
    /// Participant: the requester's session of each prepared transaction, so that it
    /// becomes the reader of what the commit makes however the transaction is resolved
    /// (the coordinator's `TxFinish`, or the prepared watch asking the coordinator). Not
    /// durable: a restart ends every session's standing here anyway.
    tx_requesters: Mutex<std::collections::HashMap<proto::ids::TxId, proto::ids::SessionId>>,
    /// Why recovery refused to serve (the manager stays unavailable).
    recovery_error: Mutex<Option<Arc<ManagerError>>>,
    /// The manager's named background workers (the journal committer) and their status.
    workers: Workers,
    /// Numbered client calls running or answered in this incarnation (`once`).
    calls: Mutex<crate::calls::CallTable<Result<ManagerResponse, RemoteError>>>,
    /// Notified whenever a numbered call finishes (its retries wait for it).
    calls_done: tokio::sync::Notify,
    /// Which sessions cache blocks of which extent windows, as clients report them: the
    /// peer hints of cooperative caching handed out with `GetExtents` answers (`holders`).
    holders: Mutex<crate::holders::HolderDirectory>,
    /// With automatic takeover on: the node's membership lease, without which no request
    /// is served (`serving_lease`); unset, the manager serves without one.
    serving: std::sync::OnceLock<Arc<crate::serving_lease::ServingLease>>,
    this: std::sync::Weak<Service>,
}

fn errno(e: Errno) -> RemoteError {
    e.into()
}

/// Runs a client request's permission check again in the plan step, under the state lock
/// its operation is decided under (`MetaState::recheck`): the request as the check adjusts
/// it now, or `None` for a request that was not checked.
fn recheck(st: &MetaState, guard: Option<&Guard>) -> Result<Option<ManagerRequest>, Errno> {
    guard.map(|g| st.recheck(g)).transpose()
}

fn fatal(e: ManagerError) -> RemoteError {
    match e {
        // The log made no progress: the outcome is unknown, as with a disk error.
        ManagerError::Stalled { .. } => Errno::new(code::EIO, e.to_string()).into(),
        e => RemoteError::Unavailable(e.to_string()),
    }
}

impl Service {
    fn leases(&self) -> MutexGuard<'_, LeaseTable> {
        self.leases.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The clients the holder directory names for the extent window of `ino` at `offset`
    /// (cooperative caching; for status and tests).
    pub fn extent_holders_of(&self, ino: InodeId, offset: u64) -> Vec<SocketAddr> {
        self.holders
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .holders_of(crate::holders::WindowKey { ino, offset })
    }

    /// Records what session `s` (its requests from `from`) reports in a `HolderHints`: the
    /// holders it forwarded blocks to (only those that are live sessions), the windows it
    /// now caches blocks of, and those it no longer does. Only for inodes of this manager.
    fn record_holder_hints(
        &self,
        s: proto::ids::SessionId,
        from: Option<SocketAddr>,
        hints: &[proto::msg::HolderHint],
        held: &[proto::msg::HolderWindow],
        gone: &[proto::msg::HolderWindow],
    ) {
        let now = Instant::now();
        let live: Vec<_> = {
            let lt = self.leases();
            hints
                .iter()
                .filter(|h| self.owner(h.ino) == self.me)
                .filter_map(|h| lt.session_at(Some(h.holder)).map(|s| (*h, s)))
                .collect()
        };
        let key = |ino, offset| crate::holders::WindowKey { ino, offset };
        let mut dir = self.holders.lock().unwrap_or_else(|e| e.into_inner());
        for (h, holder) in live {
            dir.holds(key(h.ino, h.offset), holder, h.holder, now);
        }
        for w in gone.iter().filter(|w| self.owner(w.ino) == self.me) {
            dir.forget(key(w.ino, w.offset), s);
        }
        if let Some(addr) = from {
            for w in held.iter().filter(|w| self.owner(w.ino) == self.me) {
                dir.holds(key(w.ino, w.offset), s, addr, now);
            }
        }
    }

    /// Records that session `s` (from `addr`) fetched the extent window of `ino` at
    /// `offset` (it is about to cache blocks of it), and returns the addresses of other
    /// live sessions named for it (cooperative-caching hints; at most `holders::PER_KEY`).
    fn extent_holders(
        &self,
        ino: InodeId,
        offset: u64,
        s: proto::ids::SessionId,
        addr: SocketAddr,
    ) -> Vec<SocketAddr> {
        let key = crate::holders::WindowKey { ino, offset };
        let hints = self
            .holders
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .fetched(key, s, addr, Instant::now());
        let lt = self.leases();
        hints
            .into_iter()
            .filter(|(_, a)| lt.knows_addr(*a))
            .map(|(_, a)| a)
            .collect()
    }

    fn ctx(&self) -> Ctx<'_> {
        Ctx {
            me: self.me,
            owners: &self.owners,
            now: Timestamp::now(),
        }
    }

    fn owner(&self, ino: InodeId) -> NodeId {
        self.owners[ino.slot().0 as usize % self.owners.len()]
    }

    fn check_owned(&self, ino: InodeId) -> Result<(), RemoteError> {
        self.check_slot(ino.slot())
    }

    fn check_slot(&self, slot: SlotId) -> Result<(), RemoteError> {
        let owner = self.owners[slot.0 as usize % self.owners.len()];
        if owner == self.me {
            return Ok(());
        }
        Err(RemoteError::NotOwner { slot, hint: owner })
    }

    /// `handle`, plus the volume lease the answer confirms to the caller's session
    /// (`Response::ManagerLeased`): the session's lease time left once the request was
    /// handled, from the lease table, so never an extension the table did not make (it
    /// does not extend while callbacks to the session are outstanding). `Hello`/`Renew`
    /// answers carry theirs in the `LeaseGrant`; errors confirm nothing.
    pub async fn handle_leased(
        &self,
        from: Option<SocketAddr>,
        req: ManagerRequest,
    ) -> Result<(ManagerResponse, Option<LeaseExtension>), RemoteError> {
        self.handle_leased_as(from, None, None, req).await
    }

    /// `handle_leased` for a client's request, checked first with the caller's effective
    /// credentials (`access`, from the verified identity's export options; `None` for
    /// managers and admins, which are not checked).
    /// A numbered `call` of a request that must not take effect twice runs at most once
    /// per lease session: its retries get the first result (`once`).
    pub async fn handle_leased_as(
        &self,
        from: Option<SocketAddr>,
        access: Option<&Access>,
        call: Option<proto::ids::CallId>,
        req: ManagerRequest,
    ) -> Result<(ManagerResponse, Option<LeaseExtension>), RemoteError> {
        let resp = self.handle_numbered(from, access, call, req).await?;
        let ext = match resp {
            ManagerResponse::Lease(_) => None,
            _ => self.leases().extension_for(from, Instant::now()),
        };
        Ok((resp, ext))
    }

    /// Answers one request; `from` is the caller's transport address (`None` for
    /// in-process callers), by which the caller's lease session is known.
    pub async fn handle(
        &self,
        from: Option<SocketAddr>,
        req: ManagerRequest,
    ) -> Result<ManagerResponse, RemoteError> {
        self.handle_as(from, None, req).await
    }

    /// `handle`, with the permission check (`access`) of a client's request first.
    pub async fn handle_as(
        &self,
        from: Option<SocketAddr>,
        access: Option<&Access>,
        req: ManagerRequest,
    ) -> Result<ManagerResponse, RemoteError> {
        if self.stopped.load(Ordering::SeqCst) {
            return Err(RemoteError::Unavailable("manager shut down".into()));
        }
        if !self.ready.load(Ordering::SeqCst) {
            if let Some(e) = self.recovery_error() {
                return Err(RemoteError::Unavailable(format!(
                    "{}{e}",
                    proto::msg::REFUSED_PREFIX
                )));
            }
            return Err(RemoteError::Unavailable("manager recovering".into()));
        }
        if let Some(l) = self.serving.get() {
            l.check(Instant::now()).map_err(RemoteError::Unavailable)?;
        }
        if let Some(ino) = proto::route::routing_inode(&req) {
            self.check_owned(ino)?;
        }
        // The one place client requests are checked against POSIX permissions: here on
        // arrival, and again by each arm's plan step under the state lock (`guard`).
        let (req, guard) = match access {
            Some(a) => self.authorize(from, a, req).await?,
            None => (req, None),
        };
        let g = guard.as_ref();
        use ManagerRequest as R;
        use ManagerResponse as A;
        let now = Instant::now();
        let who = match req {
            R::Hello { session } => {
                let grant = self.leases().hello(session, from, now);
                self.release_forgotten();
                return Ok(A::Lease(grant));
            }
            R::Renew { session } => {
                let r = self.renew(session, from).await;
                self.release_forgotten();
                return r;
            }
            R::Goodbye { session } => {
                return if self.leases().goodbye(session, from) {
                    self.holders
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .forget_session(session);
                    self.lease_events.send_modify(|n| *n = n.wrapping_add(1));
                    Ok(A::Done)
                } else {
                    Err(RemoteError::Invalid(format!(
                        "Goodbye of session {session:x} from another connection"
                    )))
                };
            }
            _ => self.leases().identify(from, now),
        };
        let who = match who {
            Requester::Lost(s) => {
                return Err(RemoteError::LeaseExpired(format!(
                    "session {s:x} missed callbacks: renew and drop cached state"
                )))
            }
            r => r.session(),
        };
        if req.kind().refused_in_grace && self.leases().in_grace(now) {
            return Err(grace_refusal());
        }
        match req {
            R::Hello { .. } | R::Renew { .. } | R::Goodbye { .. } => Err(RemoteError::Invalid(
                "Hello/Renew/Goodbye reached the request dispatch".into(),
            )),
            R::AcquireWrite {
                ino,
                session,
                reclaim,
            } => self.acquire_write(who, ino, session, reclaim).await,
            R::Lookup { parent, name } => self.lookup(who, parent, &name, g).await.map(A::Attr),
            R::GetAttr { ino } => {
                self.read_inode(who, ino, |st| {
                    st.get(ino).map(|i| A::Attr(i.attr.clone())).map_err(errno)
                })
                .await
            }
            R::SetAttr { ino, set, caller } => {
                self.mutate(who, None, |st, c| {
                    // The mode change as the check adjusts it for the attributes now (a
                    // truncate clears set-ID bits the file has at this moment).
                    let set = match recheck(st, g)? {
                        Some(R::SetAttr { set, .. }) => set,
                        _ => set.clone(),
                    };
                    st.plan_setattr(c, ino, &set, caller)
                })
                .await
            }
            R::Create {
                parent,
                name,
                node,
                perm,
                umask,
                caller,
                session,
            } => {
                self.mutate(who, session, |st, c| {
                    recheck(st, g)?;
                    st.plan_create(c, parent, &name, &node, perm, umask, caller, session)
                })
                .await
            }
            R::Unlink { parent, name, .. } => {
                self.mutate(who, None, |st, c| {
                    recheck(st, g)?;
                    st.plan_unlink(c, parent, &name)
                })
                .await
            }
            R::Rmdir { parent, name, .. } => {
                self.mutate(who, None, |st, c| {
                    recheck(st, g)?;
                    st.plan_rmdir(c, parent, &name)
                })
                .await
            }
            R::Link {
                ino,
                new_parent,
                new_name,
                ..
            } => {
                self.mutate(who, None, |st, c| {
                    recheck(st, g)?;
                    st.plan_link(c, ino, new_parent, &new_name)
                })
                .await
            }
            R::Rename {
                parent,
                name,
                new_parent,
                new_name,
                flags,
                ..
            } => {
                self.rename(who, parent, &name, new_parent, &new_name, flags, g)
                    .await
            }
            R::ReadDir { ino, offset, max } => {
                self.read_inode(who, ino, |st| {
                    recheck(st, g).map_err(errno)?;
                    st.readdir(ino, offset, max).map(A::Entries).map_err(errno)
                })
                .await
            }
            R::ReadLink { ino } => {
                self.read_inode(who, ino, |st| {
                    st.readlink(ino).map(A::Target).map_err(errno)
                })
                .await
            }
            R::Open { ino, session, .. } => {
                self.read_inode(who, ino, |st| st.get(ino).map(|_| ()).map_err(errno))
                    .await?;
                // The open is decided where the session is registered on the inode.
                self.mutate(who, None, |st, _| {
                    recheck(st, g)?;
                    st.plan_open(ino, session)
                })
                .await
            }
            R::Release { ino, session } => {
                self.mutate(who, None, |st, c| st.plan_release(c, &[ino], session))
                    .await
            }
            R::ReleaseMany { inos, session } => {
                if inos.len() > proto::msg::MAX_RELEASES {
                    return Err(RemoteError::Invalid(format!(
                        "ReleaseMany of {} inodes (at most {})",
                        inos.len(),
                        proto::msg::MAX_RELEASES
                    )));
                }
                self.mutate(who, None, |st, c| st.plan_release(c, &inos, session))
                    .await
            }
            R::GetXattr { ino, name } => {
                self.read_inode(who, ino, |st| {
                    recheck(st, g).map_err(errno)?;
                    st.getxattr(ino, &name).map(A::Xattr).map_err(errno)
                })
                .await
            }
            R::SetXattr {
                ino,
                name,
                value,
                flags,
                ..
            } => {
                self.mutate(who, None, |st, c| {
                    recheck(st, g)?;
                    st.plan_setxattr(c, ino, &name, &value, flags)
                })
                .await
            }
            R::ListXattr { ino } => {
                self.read_inode(who, ino, |st| {
                    st.listxattr(ino).map(A::XattrNames).map_err(errno)
                })
                .await
            }
            R::RemoveXattr { ino, name, .. } => {
                self.mutate(who, None, |st, c| {
                    recheck(st, g)?;
                    st.plan_removexattr(c, ino, &name)
                })
                .await
            }
            R::GetExtents { ino, offset, len } => {
                let answer = self
                    .read_inode(who, ino, |st| {
                        recheck(st, g).map_err(errno)?;
                        st.get_extents(ino, offset, len)
                            .map(|extents| A::SummedExtents {
                                sums: st.sums().for_extents(&extents),
                                extents,
                                holders: Vec::new(),
                            })
                            .map_err(errno)
                    })
                    .await;
                match (answer, who, from) {
                    (Ok(A::SummedExtents { extents, sums, .. }), Some(s), Some(addr)) => {
                        let holders = self.extent_holders(ino, offset, s, addr);
                        Ok(A::SummedExtents {
                            extents,
                            sums,
                            holders,
                        })
                    }
                    (other, _, _) => other,
                }
            }
            R::CommitWrites {
                writes,
                sync,
                standing,
            } => {
                for w in &writes {
                    self.check_owned(w.ino)?;
                }
                if who.is_none() && from.is_some() {
                    // Fail closed: a client connection without a session (forgotten, or
                    // not yet introduced to this incarnation) must renew first.
                    return Err(RemoteError::LeaseExpired(
                        "CommitWrites from a connection without a session: send Hello".into(),
                    ));
                }
                if self.leases().in_grace(now) {
                    // A batch naming an inode that is gone is refused for that first: the
                    // client then commits the others alone and drops the gone one's data.
                    // Refused for the grace period instead, it was retried whole, under the
                    // commit locks of every inode in it, until a Flush callback for one of
                    // them ran out and the client was given up on (consistency/t56).
                    {
                        let st = self.state.lock().await;
                        for w in &writes {
                            st.get(w.ino).map_err(errno)?;
                        }
                    }
                    // During the grace period only a reclaimed writer commits (its buffered
                    // writes from before the restart), and only to what it reclaimed.
                    let lt = self.leases();
                    if writes
                        .iter()
                        .any(|w| who.is_none() || lt.holders(w.ino).1 != who)
                    {
                        return Err(grace_refusal());
                    }
                }
                if let (Some(s), Some(st)) = (who, standing) {
                    // Buffered before this incarnation gave up on the session (it may have
                    // asked for the write lease anew since, to commit them): others may
                    // have written the file meanwhile, so these writes must never land.
                    let now_losses = self.leases().losses(s);
                    if st.incarnation == self.incarnation && st.losses != now_losses {
                        return Err(errno(Errno::new(
                            code::ENOLCK,
                            format!(
                                "session {s:x} buffered these writes before this manager gave up on it ({} of {now_losses} losses): they are dropped",
                                st.losses
                            ),
                        )));
                    }
                }
                if let Some(s) = who {
                    // A session this manager once gave up on may still hold writes buffered
                    // before that; they would land over newer ones. Unless it holds the
                    // write lease again, it is told so, and its renewal answers `lost`, so it
                    // drops them. (Other sessions committing without the lease — after a
                    // manager restart — go through the mutation path, which flushes and
                    // invalidates the other holders first.)
                    let mut leases = self.leases();
                    let stale = |l: &LeaseTable, ino| l.ever_lost(s) && l.holders(ino).1 != Some(s);
                    if let Some(w) = writes.iter().find(|w| stale(&leases, w.ino)) {
                        leases.mark_lost(s);
                        return Err(RemoteError::LeaseExpired(format!(
                            "session {s:x} does not hold the write lease of {}",
                            w.ino
                        )));
                    }
                }
                // Callbacks to this session wait for this commit (`extend_callback`).
                let _committing = who.map(|s| Committing::start(self, s));
                let resp = self
                    .mutate(who, None, |st, c| st.plan_commit_writes(c, &writes))
                    .await?;
                if sync {
                    self.sync().await?;
                }
                Ok(resp)
            }
            R::Sync => self.sync().await.map(|_| A::Synced {
                incarnation: self.incarnation,
            }),
            R::Counts => Ok(A::Counts(self.state.lock().await.counts())),
            R::TxApply { tx, op, session } => self.tx_apply(tx, op, session).await,
            R::TxOutcome { tx } => self.tx_outcome_answer(tx).await,
            R::TxPrepare { tx, ops, session } => self.tx_prepare(tx, ops, session).await,
            R::TxFinish {
                tx,
                commit,
                session,
            } => self.tx_finish(tx, commit, session).await,
            R::DirMoveLock { token, acquire } => self.serve_move_lock(token, acquire),
            R::LogHorizon {
                session,
                log,
                horizon,
            } => self.log_horizon(who, session, log, horizon).await,
            R::HolderHints {
                session,
                hints,
                held,
                gone,
            } => {
                if who != Some(session) {
                    return Err(RemoteError::Invalid(format!(
                        "HolderHints of session {session:x} from another session's connection"
                    )));
                }
                let n = hints.len() + held.len() + gone.len();
                if n > proto::msg::MAX_HOLDER_HINTS {
                    return Err(RemoteError::Invalid(format!(
                        "{n} holder hints, at most {}",
                        proto::msg::MAX_HOLDER_HINTS
                    )));
                }
                self.record_holder_hints(session, from, &hints, &held, &gone);
                Ok(A::Done)
            }
            R::SealLog { log, upto } => self.seal_log(log, upto).await,
            R::LiveExtents { log, segments } => self.live_extents(log, segments).await,
            R::Relocate { moves } => self.relocate(moves).await,
            R::CopyRange {
                src,
                src_offset,
                dst,
                dst_offset,
                len,
            } => {
                if self.owner(src) != self.me {
                    // Sharing across managers would need a transaction: the client copies
                    // the data instead.
                    return Err(errno(Errno::new(
                        code::EXDEV,
                        format!("{src} lives on another manager than {dst}: copy the data"),
                    )));
                }
                // Other clients' buffered writes of the source land first, as for a read.
                self.read_inode(who, src, |st| st.get(src).map(|_| ()).map_err(errno))
                    .await?;
                let copied = std::sync::atomic::AtomicU64::new(0);
                let resp = self
                    .mutate(who, None, |st, c| {
                        recheck(st, g)?;
                        let (plan, n) =
                            st.plan_copy_range(c, src, src_offset, dst, dst_offset, len)?;
                        copied.store(n, Ordering::SeqCst);
                        Ok(plan)
                    })
                    .await?;
                match resp {
                    A::Attr(attr) => Ok(A::Copied {
                        bytes: copied.load(Ordering::SeqCst),
                        attr,
                    }),
                    other => Err(RemoteError::Io(format!("CopyRange answered {other:?}"))),
                }
            }
            R::Fallocate {
                ino,
                offset,
                len,
                punch,
                keep_size,
            } => {
                self.mutate(who, None, |st, c| {
                    recheck(st, g)?;
                    st.plan_fallocate(c, ino, offset, len, punch, keep_size)
                })
                .await
            }
        }
    }
}

/// A `CommitWrites` of a session being carried out (`LeaseTable::commit_started`), ended
/// when dropped, whichever way the request ends.
struct Committing<'a> {
    svc: &'a Service,
    session: proto::ids::SessionId,
}

impl<'a> Committing<'a> {
    fn start(svc: &'a Service, session: proto::ids::SessionId) -> Committing<'a> {
        svc.leases().commit_started(session);
        Committing { svc, session }
    }
}

impl Drop for Committing<'_> {
    fn drop(&mut self) {
        self.svc.leases().commit_ended(self.session);
    }
}
