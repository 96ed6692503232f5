//! The service's side of space reclaim: `LogHorizon` (a writer's promise) and `SealLog`
//! (the reclaimer's question). The decisions are in `crate::usage`; this only takes the
//! locks in the service's order (state, then leases) and waits for the journal, so that
//! the live bytes answered were durable when the answer left. Must not: delete anything.

use super::{fatal, Service};
use proto::ids::{LogId, SegmentId, SessionId};
use proto::msg::{ManagerResponse, RemoteError};
use std::time::Instant;

impl Service {
    /// `LogHorizon` from the connection of session `who`.
    pub(super) async fn log_horizon(
        &self,
        who: Option<SessionId>,
        session: SessionId,
        log: LogId,
        horizon: SegmentId,
    ) -> Result<ManagerResponse, RemoteError> {
        if who.is_some() && who != Some(session) {
            return Err(RemoteError::Invalid(format!(
                "LogHorizon of session {session:x} from another session's connection"
            )));
        }
        if !log.is_client() {
            return Err(RemoteError::Invalid(format!(
                "{log} is a manager log, not a data log"
            )));
        }
        self.state
            .lock()
            .await
            .usage_mut()
            .report(session, log, horizon);
        Ok(ManagerResponse::Done)
    }

    /// `SealLog`: raises the floor of `log` (not in grace or the reclaim window, not past a live writer's
    /// horizon), takes the live bytes below it, and answers once that state is durable.
    pub(super) async fn seal_log(
        &self,
        log: LogId,
        upto: SegmentId,
    ) -> Result<ManagerResponse, RemoteError> {
        if !log.is_client() {
            return Err(RemoteError::Invalid(format!(
                "{log} is a manager log: managers delete their own segments"
            )));
        }
        let (sealed, lsn) = {
            let mut st = self.state.lock().await;
            let lt = self.leases();
            // Not while recorded write leases may still be reclaimed (after a restart or a
            // takeover): a writer that held one may still commit data written before it, and its
            // horizon promise to this incarnation may not have arrived yet (a takeover
            // under a writing mount failed an fsync with EIO so in faults/t61).
            let now = Instant::now();
            let grace = lt.in_grace(now) || lt.in_reclaim(now);
            let sealed = st.usage_mut().seal(log, upto, |s| lt.knows(s), grace);
            drop(lt);
            (sealed, st.last_lsn())
        };
        self.journal.wait_durable(lsn).await.map_err(fatal)?;
        Ok(ManagerResponse::Sealed {
            floor: sealed.floor,
            live: sealed.live,
        })
    }
}
