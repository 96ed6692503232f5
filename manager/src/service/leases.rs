//! The lease runtime around the pure `LeaseTable`: releasing what forgotten sessions had
//! open (after `Hello` and `Renew`), `Renew`, `AcquireWrite` (and the durable record of a
//! write lease before it is granted), the logging of ended write leases, sending callbacks
//! and waiting for them or for others' (`follow`), and the lease queries for status and
//! tests.
//! Must not: decide who holds what (that is `LeaseTable`), or hold the state lock or the
//! gate while a callback is awaited.

use super::{contention, errno, fatal, grace_refusal, Service, LEASE_ROUNDS};
use crate::error::{code, CallbackError, Errno};
use crate::lease::{Callback, LeaseStats, LeaseTable, SessionId, Step};
use crate::record::Record;
use crate::state::MetaState;
use proto::ids::InodeId;
use proto::msg::{ManagerResponse, RemoteError};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Pause between attempts to deliver a callback that failed (no connection, error).
const RESEND_PAUSE: Duration = Duration::from_millis(50);
/// Shortest wait for others' callbacks (their deadline may just have passed).
const MIN_WAIT: Duration = Duration::from_millis(5);

/// `WriteLeaseEnd` records for the recorded write leases that are over (see
/// `LeaseTable::ended_writes`), computed only when a writer was dropped (or grace ended)
/// since the last time, so that commits do not scan the recorded leases each time; call
/// with the state and the lease table held together, and commit what it returns.
pub(super) fn lease_ends(lt: &mut LeaseTable, st: &MetaState, now: Instant) -> Vec<Record> {
    if !lt.take_writers_dropped(now) {
        return Vec::new();
    }
    lt.ended_writes(st.write_leases().iter().map(|(i, (s, _))| (i, *s)), now)
        .into_iter()
        .map(|(ino, session)| Record::WriteLeaseEnd { ino, session })
        .collect()
}

impl Service {
    /// Whether a lease session is bound to the connection from `addr` (`LeaseTable::knows_addr`).
    pub fn has_session(&self, addr: SocketAddr) -> bool {
        self.leases().knows_addr(addr)
    }

    /// Counters of leases and callbacks (for benchmarks and status).
    pub fn lease_stats(&self) -> LeaseStats {
        self.leases().stats()
    }

    /// The sessions caching `ino` and the one holding its write lease (diagnostics).
    pub fn lease_holders(&self, ino: InodeId) -> (Vec<SessionId>, Option<SessionId>) {
        self.leases().holders(ino)
    }

    /// Whether mutations are still refused after a restart.
    pub fn in_grace(&self) -> bool {
        self.leases().in_grace(Instant::now())
    }

    /// Whether reads of `ino` wait for the reclaim of a write lease recorded before the
    /// restart (grace is on and its writer has not reclaimed it yet).
    pub fn awaits_reclaim(&self, ino: InodeId) -> bool {
        self.leases().awaits_reclaim(ino, Instant::now())
    }

    /// Recorded write leases of previous incarnations not reclaimed yet (0 once grace ends).
    pub fn unclaimed_write_leases(&self) -> usize {
        self.leases().unclaimed(Instant::now())
    }

    /// Returns once the grace period after a restart is over (at once if there is none).
    pub async fn wait_grace(&self) {
        let until = self.leases().grace_until();
        if let Some(u) = until {
            tokio::time::sleep_until(tokio::time::Instant::from_std(u)).await;
        }
    }

    /// Releases, in the background, what sessions forgotten by the lease table still had
    /// open, so that their unlinked files are freed (a crashed mount never sends Release).
    pub(super) fn release_forgotten(&self) {
        let gone = self.leases().take_forgotten();
        if gone.is_empty() {
            return;
        }
        let weak = self.this.clone();
        let h = tokio::spawn(async move {
            let Some(svc) = weak.upgrade() else { return };
            let opens: Vec<(InodeId, SessionId)> = {
                let st = svc.state.lock().await;
                st.open_sessions(&gone)
            };
            tracing::info!(
                sessions = gone.len(),
                opens = opens.len(),
                "releasing the open files of long-expired sessions"
            );
            for (ino, s) in opens {
                let r = svc
                    .mutate(None, None, |st, c| st.plan_release(c, &[ino], s))
                    .await;
                if let Err(e) = r {
                    tracing::warn!(inode = %ino, session = format_args!("{s:x}"), "release of an expired session's open file failed: {e}");
                }
            }
        });
        self.tasks.lock().unwrap_or_else(|e| e.into_inner()).push(h);
    }

    /// `Renew`: answered at once unless callbacks to the session are outstanding; then
    /// only once they are answered or given up on (so `lost` is truthful).
    pub(super) async fn renew(
        &self,
        session: SessionId,
        from: Option<SocketAddr>,
    ) -> Result<ManagerResponse, RemoteError> {
        for _ in 0..LEASE_ROUNDS {
            let mut rx = self.lease_events.subscribe();
            let r = self.leases().renew(session, from, Instant::now());
            match r {
                Ok(grant) => return Ok(ManagerResponse::Lease(grant)),
                Err(until) => self.wait_lease_event(&mut rx, until).await,
            }
        }
        Err(contention("renew"))
    }

    /// `AcquireWrite`: calls back the other holders of `ino` until `who` is its writer.
    pub(super) async fn acquire_write(
        &self,
        who: Option<SessionId>,
        ino: InodeId,
        session: SessionId,
        reclaim: bool,
    ) -> Result<ManagerResponse, RemoteError> {
        let Some(who) = who else {
            return Err(RemoteError::LeaseExpired(format!(
                "AcquireWrite({ino}) for session {session:x} from a connection without a \
                 session: send Hello first"
            )));
        };
        if who != session {
            return Err(RemoteError::Invalid(format!(
                "AcquireWrite({ino}) names session {session:x} but comes from session {who:x}"
            )));
        }
        self.state.lock().await.get(ino).map_err(errno)?;
        let (in_grace, in_reclaim) = {
            let lt = self.leases();
            let now = Instant::now();
            (lt.in_grace(now), lt.in_reclaim(now))
        };
        if reclaim {
            if !in_reclaim {
                tracing::info!(inode = %ino, session = %format_args!("{session:x}"), "reclaim of a write lease refused: the reclaim window is over");
                return Err(errno(Errno::new(
                    code::ESTALE,
                    format!(
                        "reclaim of the write lease of {ino} refused: the reclaim window after \
                         this manager's restart is over (others may have changed the file)"
                    ),
                )));
            }
            let r = self.leases().reclaim_write(who, ino);
            self.lease_events.send_modify(|n| *n = n.wrapping_add(1));
            return match r {
                Ok(()) => {
                    self.record_write_lease(who, ino).await?;
                    Ok(ManagerResponse::Done)
                }
                Err(why) => {
                    tracing::info!(inode = %ino, session = %format_args!("{session:x}"), "reclaim of a write lease refused: {why}");
                    Err(errno(Errno::new(
                        code::ESTALE,
                        format!("reclaim of the write lease of {ino} refused: {why}"),
                    )))
                }
            };
        }
        if in_grace {
            return Err(grace_refusal());
        }
        for _ in 0..LEASE_ROUNDS {
            let mut rx = self.lease_events.subscribe();
            let step = {
                // Shared: no coordinator transaction runs between its lease check and its
                // commit while a new writer appears.
                let _shared = self.gate.read().await;
                self.leases().acquire_write(who, ino, Instant::now())
            };
            if matches!(step, Step::Go) {
                self.record_write_lease(who, ino).await?;
                return Ok(ManagerResponse::Done);
            }
            self.follow(step, &mut rx).await;
        }
        Err(contention("AcquireWrite"))
    }

    /// Logs (without waiting) the ends of recorded write leases that are over.
    pub(super) fn log_lease_ends(&self, lt: &mut LeaseTable, st: &mut MetaState, now: Instant) {
        let ends = lease_ends(lt, st, now);
        if ends.is_empty() {
            return;
        }
        if let Err(e) = self.journal.admit(&ends) {
            tracing::warn!(node = %self.me, "write lease ends not logged yet: {e}");
            return;
        }
        let logged = st.commit(ends);
        self.journal.push(logged);
        self.maybe_checkpoint(st);
    }

    /// Logs that `who` holds the write lease of `ino` (with the ends of recorded leases that
    /// are over) and waits until that is durable: a client buffers writes under a write
    /// lease only once a restart cannot forget the lease (notes/leases.md, "How a restarted
    /// manager knows"). Nothing new is logged when the log already records this lease, nor
    /// when `who` lost it meanwhile (a Flush revoked it: the client saw the Flush and asks
    /// again before it buffers).
    pub(super) async fn record_write_lease(
        &self,
        who: SessionId,
        ino: InodeId,
    ) -> Result<(), RemoteError> {
        let lsn = {
            let mut st = self.state.lock().await;
            let mut lt = self.leases();
            if lt.writer(ino) != Some(who) {
                return Ok(());
            }
            let mut recs = lease_ends(&mut lt, &st, Instant::now());
            let recorded = st
                .write_leases()
                .get(&ino)
                .filter(|(s, _)| *s == who)
                .map(|(_, lsn)| *lsn);
            if recorded.is_none() {
                recs.push(Record::WriteLease { ino, session: who });
            }
            if !recs.is_empty() {
                self.journal.admit(&recs).map_err(RemoteError::from)?;
                let logged = st.commit(recs);
                self.journal.push(logged);
                self.maybe_checkpoint(&st);
            }
            drop(lt);
            // Already recorded: its record may still be on its way to the log.
            recorded.unwrap_or(st.last_lsn())
        };
        self.journal.wait_durable(lsn).await.map_err(fatal)
    }

    /// Carries out a lease step that is not `Go`: sends callbacks and waits for them, or
    /// waits for other operations' callbacks.
    pub(super) async fn follow(&self, step: Step, rx: &mut tokio::sync::watch::Receiver<u64>) {
        match step {
            Step::Go => {}
            Step::Call(calls) => self.run_callbacks(calls).await,
            Step::Wait(until) => self.wait_lease_event(rx, until).await,
        }
    }

    async fn wait_lease_event(&self, rx: &mut tokio::sync::watch::Receiver<u64>, until: Instant) {
        let until = until.max(Instant::now() + MIN_WAIT);
        let _ = tokio::time::timeout_at(tokio::time::Instant::from_std(until), rx.changed()).await;
    }

    /// Sends callbacks in parallel and waits for each: its answer, or its deadline (the
    /// holder is then lost). Never called with the state lock or the gate held.
    pub(super) async fn run_callbacks(&self, calls: Vec<Callback>) {
        if calls.is_empty() {
            return;
        }
        futures::future::join_all(calls.into_iter().map(|c| self.run_callback(c))).await;
    }

    /// Moves callback `cb`'s deadline on if the engine allows it (its holder's commit is
    /// waiting for this manager's log); logs the first extension.
    fn extend(&self, cb: &Callback, deadline: Instant) -> Option<Instant> {
        let d = self.leases().extend_callback(cb.id, Instant::now())?;
        if deadline == cb.deadline {
            tracing::info!(
                session = format_args!("{:x}", cb.session),
                "callback {:?} unanswered at its deadline while the holder's commit waits for this manager's log: waiting on (at most one more lease)",
                cb.msg
            );
        }
        Some(d)
    }

    async fn run_callback(&self, cb: Callback) {
        let started = Instant::now();
        let mut addr = cb.addr;
        let mut acked = false;
        let mut last_error = CallbackError::NoAddress;
        let mut deadline = cb.deadline;
        // Each send may live until the latest deadline an extension can reach; the wait
        // below cuts it at the current deadline unless that is moved on, so an extended
        // callback keeps its one send waiting instead of sending it again.
        let cap = self.leases().callback_cap(cb.id).unwrap_or(deadline);
        'sends: for _ in 0..100_000 {
            if Instant::now() >= deadline {
                // The holder's answer to a Flush may be waiting for its own commit, which
                // waits for this manager's log: not the holder's fault.
                match self.extend(&cb, deadline) {
                    Some(d) => deadline = d,
                    None => break,
                }
            }
            if !self.leases().knows(cb.session) {
                // It said goodbye (a clean unmount flushed everything first).
                acked = true;
                break;
            }
            if let Some(a) = addr {
                let limit = cap.max(deadline).saturating_duration_since(Instant::now());
                let send = self.callbacks.send(a, cb.msg.clone(), limit);
                tokio::pin!(send);
                let sent = loop {
                    tokio::select! {
                        r = &mut send => break r,
                        _ = tokio::time::sleep_until(deadline.into()) => {
                            match self.extend(&cb, deadline) {
                                Some(d) => deadline = d,
                                None => {
                                    last_error = CallbackError::NoAnswer {
                                        client: a,
                                        within: deadline.saturating_duration_since(started),
                                    };
                                    break 'sends;
                                }
                            }
                        }
                    }
                };
                match sent {
                    Ok(()) => {
                        acked = true;
                        break;
                    }
                    Err(e) => last_error = e,
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if !left.is_zero() {
                tokio::time::sleep(left.min(RESEND_PAUSE)).await;
            }
            // The client may have reconnected from another address.
            addr = self.leases().addr_of(cb.session);
        }
        if !acked {
            tracing::warn!(
                session = format_args!("{:x}", cb.session),
                "callback {:?} not answered by the holder's lease expiry ({last_error}): \
                 the client is lost",
                cb.msg
            );
        }
        let node = self.config.node(self.me).map_or("?", |n| n.name.as_str());
        proto::ops_metrics::lease_callback(node, (&cb.msg).into(), acked, started.elapsed());
        self.leases().callback_done(cb.id, acked);
        self.lease_events.send_modify(|n| *n = n.wrapping_add(1));
    }
}
