//! The legacy transaction driver (`TxDriver`, one op per participant) that re-drives
//! intents still pending after a restart, and the participant's side of it (`TxApply`,
//! applied idempotently, with the lease callbacks of any change).
//! Must not: hold the state lock across a network call, or forget a pending intent before
//! it committed or aborted.

use super::{contention, errno, fatal, Service, LEASE_ROUNDS};
use crate::error::Errno;
use crate::lease::{Affected, SessionId, Step};
use crate::record::{Record, TxIntent};
use crate::txn::{Command, TxDriver};
use proto::ids::{SlotId, TxId, SLOT_COUNT};
use proto::msg::{Attr, ManagerRequest, ManagerResponse, RemoteError, Timestamp, TxOp};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

impl Service {
    /// Runs the driver's commands until the transaction commits or aborts.
    async fn drive(
        &self,
        intent: &TxIntent,
        attempts: u32,
        who: Option<SessionId>,
    ) -> Result<Option<Attr>, DriveError> {
        let mut driver = TxDriver::new(intent.clone());
        let mut failures = 0;
        loop {
            match driver.command() {
                Command::Send { index, node, op } => {
                    let req = ManagerRequest::TxApply {
                        tx: intent.tx,
                        op,
                        session: who,
                    };
                    match self.peers.call(node, req).await {
                        Ok(ManagerResponse::TxApplied { attr }) => {
                            driver.on_applied(index, attr);
                        }
                        Err(RemoteError::Errno { code, message }) => {
                            driver.on_refused(index, Errno::new(code, message));
                        }
                        Ok(other) => {
                            return Err(DriveError::Unreachable(format!(
                                "{node} answered TxApply with {other:?}"
                            )));
                        }
                        Err(e) => {
                            failures += 1;
                            if failures >= attempts {
                                return Err(DriveError::Unreachable(format!("{node}: {e}")));
                            }
                            tokio::time::sleep(Duration::from_millis(100 << failures.min(5))).await;
                        }
                    }
                }
                Command::Commit { result } => {
                    let recs = self.state.lock().await.plan_tx_done(
                        Timestamp::now(),
                        intent,
                        result.as_ref(),
                    );
                    self.commit_durable(recs).await.map_err(DriveError::Local)?;
                    tracing::debug!(tx = %intent.tx, "transaction: done");
                    return Ok(result);
                }
                Command::Abort { errno } => {
                    self.commit_durable(vec![Record::TxAborted { tx: intent.tx }])
                        .await
                        .map_err(DriveError::Local)?;
                    tracing::debug!(tx = %intent.tx, "transaction: aborted: {errno}");
                    return Err(DriveError::Refused(errno));
                }
            }
        }
    }

    /// Re-drives a pending intent in the background until it commits or aborts.
    pub(super) fn spawn_redrive(&self, intent: TxIntent) {
        let weak = self.this.clone();
        let h = tokio::spawn(async move {
            let mut wait = Duration::from_millis(200);
            for _ in 0..10_000 {
                let Some(svc) = weak.upgrade() else { return };
                if svc.stopped.load(Ordering::SeqCst) {
                    return;
                }
                let still_pending = svc.state.lock().await.tx_outcome(intent.tx).is_none();
                if !still_pending {
                    return;
                }
                let r = svc.drive(&intent, 1, None).await;
                match r {
                    Ok(_) | Err(DriveError::Refused(_)) => {
                        tracing::info!(tx = %intent.tx, "pending transaction finished");
                        if r.is_ok() {
                            let affected = Affected::of_ops(&intent.local);
                            let calls =
                                svc.leases()
                                    .after_mutation(None, &affected, &[], Instant::now());
                            svc.run_callbacks(calls).await;
                        }
                        return;
                    }
                    Err(e) => {
                        tracing::warn!(tx = %intent.tx, "pending transaction waits for its participant: {e:?}")
                    }
                }
                drop(svc);
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(10));
            }
        });
        self.tasks.lock().unwrap_or_else(|e| e.into_inner()).push(h);
    }

    /// Participant: applies one op of another manager's transaction (idempotently).
    pub(super) async fn tx_apply(
        &self,
        tx: TxId,
        op: TxOp,
        session: Option<SessionId>,
    ) -> Result<ManagerResponse, RemoteError> {
        // The requesting client of the coordinator, if it holds a session here: treated as
        // the requester of a local mutation (not called back for its own change).
        let who = session.filter(|s| self.leases().is_live(*s));
        let slot = match &op {
            TxOp::CreateInode { ino_slot, .. } => SlotId(*ino_slot % SLOT_COUNT),
            TxOp::AddEntry { dir, .. }
            | TxOp::RemoveEntry { dir, .. }
            | TxOp::SetParent { dir, .. }
            | TxOp::RemoveDir { dir } => dir.slot(),
            TxOp::AdjustNlink { ino, .. } => ino.slot(),
        };
        self.check_slot(slot)?;
        let mut result = None;
        for _ in 0..LEASE_ROUNDS {
            let mut rx = self.lease_events.subscribe();
            let step = {
                let mut st = self.state.lock().await;
                match st.applied_result(tx, &op) {
                    Some(attr) => {
                        result = Some((st.last_lsn(), attr, Vec::new()));
                        break;
                    }
                    None => {
                        let (recs, attr) = st.plan_tx_apply(&self.ctx(), tx, &op).map_err(errno)?;
                        // Every holder but the requesting client is called back.
                        let affected = Affected::of_records(&recs);
                        let now = Instant::now();
                        let mut lt = self.leases();
                        let step = lt.mutation(who, &affected, now);
                        if matches!(step, Step::Go) {
                            self.journal.admit(&recs).map_err(RemoteError::from)?;
                            let logged = st.commit(recs);
                            self.journal.push(logged);
                            self.maybe_checkpoint(&st);
                            let calls = lt.after_mutation(who, &affected, &[], now);
                            result = Some((st.last_lsn(), attr, calls));
                            break;
                        }
                        step
                    }
                }
            };
            self.follow(step, &mut rx).await;
        }
        let Some((lsn, attr, calls)) = result else {
            return Err(contention("TxApply"));
        };
        self.journal.wait_durable(lsn).await.map_err(fatal)?;
        self.run_callbacks(calls).await;
        Ok(ManagerResponse::TxApplied { attr })
    }
}

/// Legacy driver errors (their texts reach the logs through `Debug`).
#[derive(Debug)]
#[allow(dead_code)]
enum DriveError {
    /// The first remote op was refused; the transaction aborted.
    Refused(Errno),
    /// A participant could not be reached; the intent stays pending.
    Unreachable(String),
    /// Our own log failed.
    Local(RemoteError),
}
