//! The runtime of two-phase transactions (protocol in `crate::txn`): the coordinator runs
//! `txn::coord::Coordinator`'s commands over `Peers`, participants serve `TxPrepare` and
//! `TxFinish`, a watcher resolves prepared parts whose decision did not arrive, and the
//! manager of the root's slot serves the directory-move lock.
//! Must not: hold the state lock, the gate or any lock other operations need while a
//! network call or a callback is awaited; only the intent locks (records in the book) and
//! the directory-move lock outlive a call, and they block only operations on what the
//! transaction touches.

use super::{contention, errno, fatal, Service, LEASE_ROUNDS};
use crate::error::Errno;
use crate::lease::{Affected, SessionId, Step};
use crate::plan::{Ctx, Plan, TxPlan, TxReply};
use crate::plan::{Prepare, TxStart};
use crate::record::Record;
use crate::record::TxBegin;
use crate::state::MetaState;
use crate::txn::coord::{AbortCause, Cmd, Coordinator, Event};
use crate::txn::movelock::MOVE_LOCK_TTL;
use proto::ids::{InodeId, SlotId, TxId, SLOT_COUNT};
use proto::msg::{Attr, ManagerRequest, ManagerResponse, RemoteError, Timestamp, TxOp};
use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// How long a coordinator waits for a participant's prepare answer before aborting.
const PREPARE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a request waits for the participants to carry out a decision before it is
/// answered anyway (the decision is durable; the rest finishes in the background).
const FINISH_TIMEOUT: Duration = Duration::from_secs(5);
/// Aborts for lock conflicts before a request is answered `Unavailable` (client retries).
const BUSY_RETRIES: u32 = 32;
/// How often a participant looks for prepared parts whose decision did not come.
const PREPARED_WATCH: Duration = Duration::from_secs(2);
/// How long a rename waits for the directory-move lock.
const MOVE_LOCK_WAIT: Duration = Duration::from_secs(30);
/// How long an ordinary mutation waits for a transaction's intent lock per round.
pub(super) const INTENT_LOCK_WAIT: Duration = Duration::from_millis(500);

/// What a coordinated attempt came to.
pub(super) enum Attempt {
    Answer(Result<ManagerResponse, RemoteError>),
    /// Aborted because a participant's lock was taken: plan and try again.
    Retry,
}

fn op_slot(op: &TxOp) -> SlotId {
    match op {
        TxOp::CreateInode { ino_slot, .. } => SlotId(*ino_slot % SLOT_COUNT),
        TxOp::AddEntry { dir, .. }
        | TxOp::RemoveEntry { dir, .. }
        | TxOp::SetParent { dir, .. }
        | TxOp::RemoveDir { dir } => dir.slot(),
        TxOp::AdjustNlink { ino, .. } => ino.slot(),
    }
}

impl Service {
    /// Wakes operations waiting for intent locks (they wait on the lease event channel).
    pub(super) fn tx_event(&self) {
        self.lease_events.send_modify(|n| *n += 1);
    }

    /// Coordinator, under the state lock: logs `TxBegin` for `plan` (durable with the
    /// decision at the latest) unless a lease callback or another transaction's lock
    /// comes first.
    pub(super) fn begin_tx(
        &self,
        st: &mut MetaState,
        plan: &TxPlan,
        who: Option<SessionId>,
    ) -> Result<Result<TxBegin, RemoteError>, Step> {
        let now = Instant::now();
        let affected = Affected::of_ops(&plan.local);
        let step = self.leases().mutation(who, &affected, now);
        if !matches!(step, Step::Go) {
            return Err(step);
        }
        let tx = TxId {
            coordinator: self.me,
            seq: st.next_tx(),
        };
        match st.plan_begin(tx, plan) {
            TxStart::Busy(other) => {
                tracing::debug!(%tx, %other, "transaction waits for an intent lock");
                Err(Step::Wait(now + INTENT_LOCK_WAIT))
            }
            TxStart::Begin(begin) => {
                let recs = vec![Record::TxBegin(begin.clone())];
                if let Err(e) = self.journal.admit(&recs) {
                    return Ok(Err(e.into()));
                }
                let logged = st.commit(recs);
                self.journal.push(logged);
                self.maybe_checkpoint(st);
                Ok(Ok(begin))
            }
        }
    }

    /// Coordinator: runs a begun transaction to its decision and answers the request.
    pub(super) async fn coordinate(
        &self,
        begin: TxBegin,
        reply: TxReply,
        who: Option<SessionId>,
    ) -> Attempt {
        // The begin need not be durable before the prepares go out: a coordinator that
        // loses it in a crash does not know the transaction, which participants then take
        // as aborted (presumed abort); a durable decision implies a durable begin (one log,
        // in order).
        tracing::debug!(tx = %begin.tx, parts = begin.parts.len(), "transaction: begin");
        let (mut drv, cmds) = Coordinator::start(&begin);
        if let Err(e) = self.step_driver(&begin, &mut drv, cmds, who).await {
            return Attempt::Answer(Err(e));
        }
        if drv.decision().is_some() && !drv.is_done() {
            self.spawn_finisher(begin.clone(), drv.clone());
        }
        match (drv.decision(), drv.abort_cause()) {
            (Some(true), _) => Attempt::Answer(match reply {
                TxReply::Done => Ok(ManagerResponse::Done),
                // The attributes as the participant applied them (they include a commit
                // that landed after the prepare). A participant that did not acknowledge
                // the decision within FINISH_TIMEOUT has not told them: the prepare's
                // are answered then, which may miss such a commit.
                TxReply::ResultAttr => match (drv.applied_result(), drv.result()) {
                    (Some(a), _) => Ok(ManagerResponse::Attr(a)),
                    (None, Some(a)) => {
                        tracing::warn!(tx = %begin.tx, "decision not acknowledged in time: answering the prepared attributes");
                        Ok(ManagerResponse::Attr(a))
                    }
                    (None, None) => Err(RemoteError::Io(format!(
                        "{}: participant returned no attributes",
                        begin.tx
                    ))),
                },
            }),
            (_, Some(AbortCause::Refused(e))) => Attempt::Answer(Err(errno(e.clone()))),
            (_, Some(AbortCause::Busy(node))) => {
                tracing::debug!(tx = %begin.tx, %node, "transaction aborted: lock conflict at the participant");
                Attempt::Retry
            }
            (_, Some(AbortCause::Unreachable(node))) => Attempt::Answer(Err(
                RemoteError::Unavailable(format!(
                    "{}: manager {node} did not answer the prepare within {PREPARE_TIMEOUT:?}; aborted, nothing changed",
                    begin.tx
                )),
            )),
            _ => Attempt::Answer(Err(RemoteError::Unavailable(format!(
                "{}: no decision was logged",
                begin.tx
            )))),
        }
    }

    /// Runs a plan that needs other managers: begin, prepare, decide, finish; retried
    /// (planned again) while participants report lock conflicts.
    pub(super) async fn run_two_phase<F>(
        &self,
        who: Option<SessionId>,
        plan: F,
        first: (TxBegin, TxReply),
    ) -> Result<ManagerResponse, RemoteError>
    where
        F: Fn(&MetaState, &Ctx) -> Result<Plan, Errno>,
    {
        let (mut begin, mut reply) = first;
        let mut attempt = 0;
        loop {
            // Every begun transaction is coordinated to its decision (never left undecided
            // holding its locks).
            match self.coordinate(begin, reply, who).await {
                Attempt::Answer(r) => return r,
                Attempt::Retry => {}
            }
            attempt += 1;
            if attempt >= BUSY_RETRIES {
                return Err(RemoteError::Unavailable(
                    "cross-manager operation: lock conflicts with other transactions persisted, retry"
                        .into(),
                ));
            }
            // Random backoff so two coordinators that refused each other do not meet again.
            let ms = rand::random::<u64>() % (2u64 << attempt.min(6)) + 1;
            tokio::time::sleep(Duration::from_millis(ms)).await;
            let mut rounds = 0;
            loop {
                rounds += 1;
                if rounds > LEASE_ROUNDS {
                    return Err(contention("cross-manager operation"));
                }
                let mut rx = self.lease_events.subscribe();
                let step = {
                    let mut st = self.state.lock().await;
                    match plan(&st, &self.ctx()).map_err(errno)? {
                        Plan::Local { records, reply } => {
                            match self.commit_leased(&mut st, records, reply, who, None) {
                                Ok((resp, calls)) => {
                                    drop(st);
                                    self.run_callbacks(calls).await;
                                    return resp;
                                }
                                Err(step) => step,
                            }
                        }
                        Plan::Tx(tx) => match self.begin_tx(&mut st, &tx, who) {
                            Ok(Ok(b)) => {
                                begin = b;
                                reply = tx.reply;
                                break;
                            }
                            Ok(Err(e)) => return Err(e),
                            Err(step) => step,
                        },
                    }
                };
                self.follow(step, &mut rx).await;
            }
        }
    }

    /// Executes driver commands until it has nothing to do for now (bounded: each round
    /// moves the transaction to its next phase or ends).
    async fn step_driver(
        &self,
        begin: &TxBegin,
        drv: &mut Coordinator,
        mut cmds: Vec<Cmd>,
        who: Option<SessionId>,
    ) -> Result<(), RemoteError> {
        for _ in 0..8 {
            if cmds.is_empty() {
                break;
            }
            let mut next = Vec::new();
            let mut net = Vec::new();
            for c in cmds {
                match c {
                    Cmd::Decide { commit, result } => {
                        self.log_decision(begin, commit, result.as_ref(), who)
                            .await?;
                        next.extend(drv.on_event(Event::Logged));
                    }
                    Cmd::Forget => self.log_forget(begin.tx).await,
                    other => net.push(other),
                }
            }
            let events =
                futures::future::join_all(net.into_iter().map(|c| self.send(begin.tx, c, who)))
                    .await;
            for ev in events.into_iter().flatten() {
                next.extend(drv.on_event(ev));
            }
            cmds = next;
        }
        Ok(())
    }

    /// Sends one prepare or finish; the event it leads to (`None`: finish not answered).
    async fn send(&self, tx: TxId, cmd: Cmd, who: Option<SessionId>) -> Option<Event> {
        match cmd {
            Cmd::Prepare { node, ops } => {
                let req = ManagerRequest::TxPrepare {
                    tx,
                    ops,
                    session: who,
                };
                Some(
                    match tokio::time::timeout(PREPARE_TIMEOUT, self.peers.call(node, req)).await {
                        Ok(Ok(ManagerResponse::TxPrepared { results })) => {
                            Event::Prepared { node, results }
                        }
                        Ok(Err(RemoteError::Errno { code, message })) => Event::Refused {
                            node,
                            errno: Errno::new(code, message),
                        },
                        Ok(Err(RemoteError::Unavailable(why))) => {
                            tracing::debug!(%tx, %node, "prepare refused for now: {why}");
                            Event::Busy { node }
                        }
                        Ok(other) => {
                            tracing::warn!(%tx, %node, "prepare answered {other:?}");
                            Event::Unreachable { node }
                        }
                        Err(_) => {
                            tracing::warn!(%tx, %node, "prepare not answered within {PREPARE_TIMEOUT:?}");
                            Event::Unreachable { node }
                        }
                    },
                )
            }
            Cmd::Finish { node, commit } => {
                let req = ManagerRequest::TxFinish {
                    tx,
                    commit,
                    session: who,
                };
                match tokio::time::timeout(FINISH_TIMEOUT, self.peers.call(node, req)).await {
                    Ok(Ok(ManagerResponse::TxFinished { applied })) => {
                        Some(Event::Finished { node, applied })
                    }
                    Ok(Ok(ManagerResponse::Done)) => Some(Event::Finished {
                        node,
                        applied: Vec::new(),
                    }),
                    other => {
                        tracing::debug!(%tx, %node, "decision not acknowledged yet: {other:?}");
                        None
                    }
                }
            }
            Cmd::Decide { .. } | Cmd::Forget => None,
        }
    }

    /// Logs the decision durably (on commit with the local part) and calls back the other
    /// holders of what the local part changed.
    async fn log_decision(
        &self,
        begin: &TxBegin,
        commit: bool,
        result: Option<&Attr>,
        who: Option<SessionId>,
    ) -> Result<(), RemoteError> {
        let (lsn, calls) = {
            let mut st = self.state.lock().await;
            let recs = st.plan_decide(Timestamp::now(), begin.tx, commit, result);
            if recs.is_empty() {
                (st.last_lsn(), Vec::new())
            } else {
                self.journal.admit(&recs).map_err(RemoteError::from)?;
                let affected = Affected::of_records(&recs);
                let calls = if commit {
                    self.leases()
                        .after_mutation(who, &affected, &[], Instant::now())
                } else {
                    Vec::new()
                };
                let logged = st.commit(recs);
                self.journal.push(logged);
                self.maybe_checkpoint(&st);
                (st.last_lsn(), calls)
            }
        };
        self.tx_event();
        self.journal.wait_durable(lsn).await.map_err(fatal)?;
        tracing::debug!(tx = %begin.tx, commit, "transaction: decided");
        self.run_callbacks(calls).await;
        Ok(())
    }

    async fn log_forget(&self, tx: TxId) {
        let mut st = self.state.lock().await;
        let recs = st.plan_forget(tx);
        if recs.is_empty() || self.journal.admit(&recs).is_err() {
            return;
        }
        let logged = st.commit(recs);
        self.journal.push(logged);
        self.maybe_checkpoint(&st);
    }

    /// Sends a decision until every participant acknowledged it, in the background.
    pub(super) fn spawn_finisher(&self, begin: TxBegin, mut drv: Coordinator) {
        let weak = self.this.clone();
        let h = tokio::spawn(async move {
            let mut wait = Duration::from_millis(200);
            for _ in 0..10_000 {
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(10));
                let Some(svc) = weak.upgrade() else { return };
                if svc.stopped.load(Ordering::SeqCst) {
                    return;
                }
                let Some(commit) = drv.decision() else { return };
                let cmds: Vec<Cmd> = drv
                    .unfinished()
                    .into_iter()
                    .map(|node| Cmd::Finish { node, commit })
                    .collect();
                if let Err(e) = svc.step_driver(&begin, &mut drv, cmds, None).await {
                    tracing::warn!(tx = %begin.tx, "finishing: {e}");
                }
                if drv.is_done() {
                    tracing::info!(tx = %begin.tx, commit, "transaction finished on every participant");
                    return;
                }
            }
        });
        self.tasks.lock().unwrap_or_else(|e| e.into_inner()).push(h);
    }

    /// After recovery: every coordinated transaction of the book is aborted (undecided) or
    /// its decision sent again.
    pub(super) fn resume_coordinated(&self, st: &MetaState) {
        for c in st.book().coordinated.values() {
            let begin = c.begin.clone();
            let decided = c.decided;
            let weak = self.this.clone();
            let h = tokio::spawn(async move {
                let Some(svc) = weak.upgrade() else { return };
                let (mut drv, cmds) = Coordinator::resume(&begin, decided);
                tracing::info!(tx = %begin.tx, ?decided, "resuming a coordinated transaction");
                if let Err(e) = svc.step_driver(&begin, &mut drv, cmds, None).await {
                    tracing::warn!(tx = %begin.tx, "resuming: {e}");
                }
                if !drv.is_done() {
                    svc.spawn_finisher(begin, drv);
                }
            });
            self.tasks.lock().unwrap_or_else(|e| e.into_inner()).push(h);
        }
    }

    /// Participant: phase one (see `ManagerRequest::TxPrepare`).
    pub(super) async fn tx_prepare(
        &self,
        tx: TxId,
        ops: Vec<TxOp>,
        session: Option<SessionId>,
    ) -> Result<ManagerResponse, RemoteError> {
        for op in &ops {
            self.check_slot(op_slot(op))?;
        }
        let who = session.filter(|s| self.leases().is_live(*s));
        let affected = Affected::of_ops(&ops);
        for _ in 0..LEASE_ROUNDS {
            let mut rx = self.lease_events.subscribe();
            let step = {
                let mut st = self.state.lock().await;
                match st.plan_prepare(Timestamp::now(), tx, &ops).map_err(errno)? {
                    Prepare::Again(results) => {
                        let lsn = st.last_lsn();
                        drop(st);
                        self.journal.wait_durable(lsn).await.map_err(fatal)?;
                        return Ok(ManagerResponse::TxPrepared { results });
                    }
                    Prepare::Busy(other) => {
                        return Err(RemoteError::Unavailable(format!(
                            "{tx}: {other} holds an intent lock it needs"
                        )))
                    }
                    Prepare::Log(recs, results) => {
                        // Other writers of what the ops change flush before the lock.
                        let step = self.leases().mutation(who, &affected, Instant::now());
                        if matches!(step, Step::Go) {
                            self.journal.admit(&recs).map_err(RemoteError::from)?;
                            let logged = st.commit(recs);
                            self.journal.push(logged);
                            self.maybe_checkpoint(&st);
                            let lsn = st.last_lsn();
                            if let Some(s) = session {
                                self.requesters().insert(tx, s);
                            }
                            drop(st);
                            self.journal.wait_durable(lsn).await.map_err(fatal)?;
                            return Ok(ManagerResponse::TxPrepared { results });
                        }
                        step
                    }
                }
            };
            self.follow(step, &mut rx).await;
        }
        Err(contention("TxPrepare"))
    }

    fn requesters(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<TxId, SessionId>> {
        self.tx_requesters.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Participant: phase two (see `ManagerRequest::TxFinish`).
    pub(super) async fn tx_finish(
        &self,
        tx: TxId,
        commit: bool,
        session: Option<SessionId>,
    ) -> Result<ManagerResponse, RemoteError> {
        let asked = self.requesters().remove(&tx);
        let who = session.or(asked).filter(|s| self.leases().is_live(*s));
        let (lsn, calls, applied) = {
            let mut st = self.state.lock().await;
            let (recs, applied) = st.plan_resolve(Timestamp::now(), tx, commit);
            if recs.is_empty() {
                (st.last_lsn(), Vec::new(), applied)
            } else {
                self.journal.admit(&recs).map_err(RemoteError::from)?;
                let affected = Affected::of_records(&recs);
                // The coordinator answers the requester with these attributes (a directory
                // or file made here for another manager's parent): the requester caches
                // them, so it becomes their reader here, before the answer can reach it,
                // and a later change by anyone else is called back.
                let returned: Vec<InodeId> = applied.iter().flatten().map(|a| a.ino).collect();
                let calls = if commit {
                    self.leases()
                        .after_mutation(who, &affected, &returned, Instant::now())
                } else {
                    Vec::new()
                };
                let logged = st.commit(recs);
                self.journal.push(logged);
                self.maybe_checkpoint(&st);
                (st.last_lsn(), calls, applied)
            }
        };
        self.tx_event();
        self.journal.wait_durable(lsn).await.map_err(fatal)?;
        self.run_callbacks(calls).await;
        Ok(ManagerResponse::TxFinished { applied })
    }

    /// The coordinator's outcome of `tx` (two-phase book first, then the old protocol).
    pub(super) async fn tx_outcome_answer(&self, tx: TxId) -> Result<ManagerResponse, RemoteError> {
        let st = self.state.lock().await;
        let outcome = match st.book().outcome(tx) {
            Some(decided) => decided,
            // Unknown to the book: presumed aborted, unless the old protocol has it.
            None => st.tx_outcome(tx),
        };
        match outcome {
            Some(committed) => Ok(ManagerResponse::TxOutcome { committed }),
            None => Err(RemoteError::Unavailable(format!(
                "{tx} is still in progress"
            ))),
        }
    }

    /// Participant: resolves prepared parts whose decision has not arrived for a whole
    /// watch period by asking their coordinator (a lost `TxFinish`, a coordinator that
    /// crashed, a prepare that arrived after its abort).
    pub(super) fn spawn_prepared_watch(&self) {
        let weak = self.this.clone();
        let h = tokio::spawn(async move {
            let mut seen: BTreeSet<TxId> = BTreeSet::new();
            loop {
                tokio::time::sleep(PREPARED_WATCH).await;
                let Some(svc) = weak.upgrade() else { return };
                if svc.stopped.load(Ordering::SeqCst) {
                    return;
                }
                let now: BTreeSet<TxId> = svc
                    .state
                    .lock()
                    .await
                    .book()
                    .prepared
                    .keys()
                    .copied()
                    .collect();
                for tx in now.intersection(&seen) {
                    let req = ManagerRequest::TxOutcome { tx: *tx };
                    let r =
                        tokio::time::timeout(PREPARE_TIMEOUT, svc.peers.call(tx.coordinator, req))
                            .await;
                    if let Ok(Ok(ManagerResponse::TxOutcome { committed })) = r {
                        tracing::info!(%tx, committed, "prepared part resolved by asking its coordinator");
                        if let Err(e) = svc.tx_finish(*tx, committed, None).await {
                            tracing::warn!(%tx, "resolving a prepared part: {e}");
                        }
                    }
                }
                // Requesters of transactions no longer prepared (inserted under the state
                // lock with the prepare's records, so this snapshot misses none).
                {
                    let st = svc.state.lock().await;
                    let prepared = &st.book().prepared;
                    svc.requesters().retain(|tx, _| prepared.contains_key(tx));
                }
                seen = now;
            }
        });
        self.tasks.lock().unwrap_or_else(|e| e.into_inner()).push(h);
    }

    /// Root's manager: serves `DirMoveLock`.
    pub(super) fn serve_move_lock(
        &self,
        token: u64,
        acquire: bool,
    ) -> Result<ManagerResponse, RemoteError> {
        self.check_slot(InodeId::ROOT.slot())?;
        let mut l = self.move_lock.lock().unwrap_or_else(|e| e.into_inner());
        if !acquire {
            l.release(token);
            return Ok(ManagerResponse::Done);
        }
        if l.acquire(token, Instant::now(), MOVE_LOCK_TTL) {
            Ok(ManagerResponse::Done)
        } else {
            Err(RemoteError::Unavailable(
                "the directory-move lock is held by another rename".into(),
            ))
        }
    }

    async fn move_lock_call(&self, token: u64, acquire: bool) -> Result<(), RemoteError> {
        let owner = self.owner(InodeId::ROOT);
        if owner == self.me {
            return self.serve_move_lock(token, acquire).map(|_| ());
        }
        let req = ManagerRequest::DirMoveLock { token, acquire };
        match tokio::time::timeout(PREPARE_TIMEOUT, self.peers.call(owner, req)).await {
            Ok(Ok(ManagerResponse::Done)) => Ok(()),
            Ok(Ok(other)) => Err(RemoteError::Io(format!("DirMoveLock answered {other:?}"))),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(RemoteError::Unavailable(format!(
                "{owner} did not answer DirMoveLock"
            ))),
        }
    }

    /// Takes the directory-move lock (waits for it, bounded); returns the token.
    pub(super) async fn acquire_move_lock(&self) -> Result<u64, RemoteError> {
        let token = rand::random::<u64>();
        let deadline = Instant::now() + MOVE_LOCK_WAIT;
        let mut wait = Duration::from_millis(1);
        loop {
            match self.move_lock_call(token, true).await {
                Ok(()) => return Ok(token),
                Err(e) if Instant::now() >= deadline => return Err(e),
                Err(_) => {
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_millis(50));
                }
            }
        }
    }

    pub(super) async fn release_move_lock(&self, token: u64) {
        if let Err(e) = self.move_lock_call(token, false).await {
            tracing::warn!("directory-move lock not released (it expires): {e}");
        }
    }
}
