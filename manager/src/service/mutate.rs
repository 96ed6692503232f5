//! Mutations: the one mutation loop (`mutate`: plan under the state lock, flush other
//! writers first, commit a local plan or hand a cross-manager plan to `two_phase`, then
//! call back the other holders), the commits (`commit_leased`, `commit_local`,
//! `commit_durable`, `maybe_checkpoint`), `Sync`, and `rename` (its ancestry checks under
//! the directory-move lock).
//! Must not: hold the gate or the state lock while callbacks or other managers are
//! awaited, or commit records that `Journal::admit` refused.

use super::leases::lease_ends;
use super::{contention, errno, fatal, once, two_phase, Service, LEASE_ROUNDS};
use crate::access::Guard;
use crate::checkpoint::head_piece;
use crate::error::{code, Errno};
use crate::journal::CheckpointEvery;
use crate::lease::{Affected, Callback, SessionId, Step};
use crate::plan::{Ctx, Plan, Reply};
use crate::record::Record;
use crate::state::MetaState;
use proto::ids::InodeId;
use proto::msg::{FileKind, ManagerResponse, RemoteError};
use std::time::Instant;

impl Service {
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn rename(
        &self,
        who: Option<SessionId>,
        parent: InodeId,
        name: &str,
        new_parent: InodeId,
        new_name: &str,
        flags: proto::msg::RenameFlags,
        guard: Option<&Guard>,
    ) -> Result<ManagerResponse, RemoteError> {
        let (_, xk) = self
            .state
            .lock()
            .await
            .lookup(parent, name)
            .map_err(errno)?;
        // A directory moving to another parent (either way, for an exchange) holds the
        // cluster-wide directory-move lock from its ancestry check to its commit on every
        // manager (`txn::movelock` says why that excludes cycles).
        let moves_dir = new_parent != parent && (xk == FileKind::Dir || flags.exchange);
        if !moves_dir {
            return self
                .rename_checked(who, parent, name, new_parent, new_name, flags, false, guard)
                .await;
        }
        let token = self.acquire_move_lock().await?;
        let r = self
            .rename_checked(who, parent, name, new_parent, new_name, flags, true, guard)
            .await;
        self.release_move_lock(token).await;
        r
    }

    /// A rename; with `check_ancestry` (the caller holds the directory-move lock) the
    /// ancestry checks run here, and the plan is refused if the source entry changed since.
    #[allow(clippy::too_many_arguments)]
    async fn rename_checked(
        &self,
        who: Option<SessionId>,
        parent: InodeId,
        name: &str,
        new_parent: InodeId,
        new_name: &str,
        flags: proto::msg::RenameFlags,
        check_ancestry: bool,
        guard: Option<&Guard>,
    ) -> Result<ManagerResponse, RemoteError> {
        let (x, xk) = self
            .state
            .lock()
            .await
            .lookup(parent, name)
            .map_err(errno)?;
        let mut remote_target = None;
        if self.owner(new_parent) != self.me {
            remote_target = match self.lookup_anywhere(new_parent, new_name).await {
                Ok(a) => Some((a.ino, a.kind)),
                Err(RemoteError::Errno { code: c, .. }) if c == code::ENOENT => None,
                Err(e) => return Err(e),
            };
        }
        if check_ancestry {
            if xk == FileKind::Dir && self.is_ancestor(x, new_parent).await? {
                return Err(errno(Errno::new(
                    code::EINVAL,
                    "cannot move a directory into its own subtree",
                )));
            }
            if flags.exchange {
                let target = match remote_target {
                    Some(t) => Some(t),
                    None => self.state.lock().await.lookup(new_parent, new_name).ok(),
                };
                if let Some((y, FileKind::Dir)) = target {
                    if self.is_ancestor(y, parent).await? {
                        return Err(errno(Errno::new(
                            code::EINVAL,
                            "cannot move a directory into its own subtree",
                        )));
                    }
                }
            }
        }
        let nn = new_name.to_string();
        self.mutate(who, None, |st, c| {
            super::recheck(st, guard)?;
            if check_ancestry && st.lookup(parent, name).ok().map(|(i, _)| i) != Some(x) {
                return Err(Errno::new(
                    code::EAGAIN,
                    "the renamed entry changed during the ancestry check, retry",
                ));
            }
            st.plan_rename(c, parent, name, new_parent, &nn, flags, remote_target)
        })
        .await
    }

    /// Plans and runs a mutation by `who`: other writers of what it changes are flushed
    /// first, local plans commit at once (under the shared gate); plans that need other
    /// managers log their begin under the state lock and then run the two-phase commit
    /// (`two_phase`) with no lock held across the network. After the change, every other
    /// holder is invalidated before the reply. `writer` (Create with a session) becomes the
    /// writer of the new inode. Neither the gate nor the state lock is held while callbacks
    /// or other managers are awaited.
    pub(super) async fn mutate<F>(
        &self,
        who: Option<SessionId>,
        writer: Option<SessionId>,
        plan: F,
    ) -> Result<ManagerResponse, RemoteError>
    where
        F: Fn(&MetaState, &Ctx) -> Result<Plan, Errno>,
    {
        for _ in 0..LEASE_ROUNDS {
            let mut rx = self.lease_events.subscribe();
            let step = {
                let shared = self.gate.read().await;
                let mut st = self.state.lock().await;
                match plan(&st, &self.ctx()).map_err(errno)? {
                    Plan::Local { records, reply } => {
                        match self.commit_leased(&mut st, records, reply, who, writer) {
                            Ok((resp, calls)) => {
                                drop(st);
                                drop(shared);
                                self.run_callbacks(calls).await;
                                return resp;
                            }
                            Err(step) => step,
                        }
                    }
                    Plan::Tx(tx) => match self.begin_tx(&mut st, &tx, who) {
                        Ok(Ok(begin)) => {
                            drop(st);
                            drop(shared);
                            return self.run_two_phase(who, &plan, (begin, tx.reply)).await;
                        }
                        Ok(Err(e)) => return Err(e),
                        Err(step) => step,
                    },
                }
            };
            self.follow(step, &mut rx).await;
        }
        Err(contention("mutation"))
    }

    /// Commits a local plan if no other writer must be flushed first (else the step to
    /// follow); the lease check, the commit and the holder snapshot happen under the
    /// state lock and the lease lock together.
    #[allow(clippy::type_complexity)]
    pub(super) fn commit_leased(
        &self,
        st: &mut MetaState,
        records: Vec<Record>,
        reply: Reply,
        who: Option<SessionId>,
        writer: Option<SessionId>,
    ) -> Result<(Result<ManagerResponse, RemoteError>, Vec<Callback>), Step> {
        let now = Instant::now();
        if let Some(tx) = crate::txn::locks::records_conflict(st, &records) {
            // A cross-manager transaction holds an intent lock on what this changes.
            tracing::debug!(%tx, "mutation waits for an intent lock");
            return Err(Step::Wait(now + two_phase::INTENT_LOCK_WAIT));
        }
        let affected = Affected::of_records(&records);
        let mut lt = self.leases();
        let step = lt.mutation(who, &affected, now);
        if !matches!(step, Step::Go) {
            return Err(step);
        }
        // The parent's attributes go only to a requester that caches them (a session).
        let reply = match reply {
            Reply::Created { ino, .. } if who.is_none() => Reply::Attr(ino),
            Reply::Removed { .. } if who.is_none() => Reply::Done,
            r => r,
        };
        let returned: Vec<InodeId> = match &reply {
            Reply::Done => Vec::new(),
            Reply::Attr(i) => vec![*i],
            Reply::Attrs(v) => v.clone(),
            Reply::Created { ino, parent } => vec![*ino, *parent],
            Reply::Removed { parent } => vec![*parent],
        };
        // Ends of recorded write leases ride along; the write lease a creator gets on its new
        // file is recorded *before* the file's records, so that if the file survives a crash
        // its lease does too (the creator may buffer writes as soon as it has the reply).
        let mut batch = lease_ends(&mut lt, st, now);
        if let (Some(w), Reply::Attr(i) | Reply::Created { ino: i, .. }) = (writer, &reply) {
            if self.owner(*i) == self.me && Some(w) == who && lt.is_live(w) {
                batch.push(Record::WriteLease {
                    ino: *i,
                    session: w,
                });
            }
        }
        batch.extend(records);
        // A numbered call is logged as applied with its change, so that a retry after a
        // restart gets this answer instead of applying it again (`once`).
        if let (Some(session), Some(call)) = (who, once::current_call()) {
            let answer = match &reply {
                Reply::Attr(i) | Reply::Created { ino: i, .. } => Some(*i),
                Reply::Done | Reply::Attrs(_) | Reply::Removed { .. } => None,
            };
            batch.push(Record::Replied {
                session,
                call,
                answer,
            });
        }
        let resp = self.commit_local(st, batch, reply);
        let calls = lt.after_mutation(who, &affected, &returned, now);
        if let (Some(w), Ok(ManagerResponse::Attr(a) | ManagerResponse::Created { attr: a, .. })) =
            (writer, &resp)
        {
            if self.owner(a.ino) == self.me && Some(w) == who {
                lt.set_writer(w, a.ino);
            }
        }
        Ok((resp, calls))
    }

    fn commit_local(
        &self,
        st: &mut MetaState,
        records: Vec<Record>,
        reply: Reply,
    ) -> Result<ManagerResponse, RemoteError> {
        self.journal.admit(&records).map_err(RemoteError::from)?;
        let logged = st.commit(records);
        self.journal.push(logged);
        self.maybe_checkpoint(st);
        let attr = |ino: InodeId| st.get(ino).map(|i| i.attr.clone()).map_err(errno);
        Ok(match reply {
            Reply::Done => ManagerResponse::Done,
            Reply::Attr(ino) => ManagerResponse::Attr(attr(ino)?),
            Reply::Created { ino, parent } => ManagerResponse::Created {
                attr: attr(ino)?,
                parent: Box::new(attr(parent)?),
            },
            Reply::Removed { parent } => ManagerResponse::Removed {
                parent: Box::new(attr(parent)?),
            },
            Reply::Attrs(inos) => ManagerResponse::Committed {
                attrs: inos.into_iter().map(attr).collect::<Result<_, _>>()?,
                incarnation: self.incarnation,
            },
        })
    }

    pub(super) fn maybe_checkpoint(&self, st: &MetaState) {
        if self
            .journal
            .checkpoint_due(CheckpointEvery::of(&self.config.file.manager))
        {
            self.journal.push_checkpoint(head_piece(st), st.last_lsn());
        }
    }

    /// Commits records and waits until they are durable.
    pub(super) async fn commit_durable(&self, records: Vec<Record>) -> Result<(), RemoteError> {
        let lsn = {
            let mut st = self.state.lock().await;
            self.journal.admit(&records).map_err(RemoteError::from)?;
            let logged = st.commit(records);
            self.journal.push(logged);
            self.maybe_checkpoint(&st);
            st.last_lsn()
        };
        self.journal.wait_durable(lsn).await.map_err(fatal)
    }

    pub(super) async fn sync(&self) -> Result<(), RemoteError> {
        let lsn = self.state.lock().await.last_lsn();
        self.journal.wait_durable(lsn).await.map_err(fatal)
    }
}
