//! The service's side of the copying cleaner: `LiveExtents` (what lies in the segments it
//! cleans) and `Relocate` (the conditional swap to its copies). The decision is
//! `MetaState::plan_relocate`; this only runs it as an ordinary mutation (so writers of the
//! files are flushed first and readers are called back, as for any change of an extent
//! map) and answers once the swap is durable. Must not: delete anything, or remap
//! anything the plan did not check under the state lock.

use super::Service;
use crate::cleaner::relocate::{Moved, Relocation};
use crate::plan::{Plan, Reply};
use proto::ids::{LogId, SegmentId};
use proto::msg::{ManagerResponse, RemoteError};
use std::collections::BTreeSet;
use std::sync::Mutex;

impl Service {
    /// `LiveExtents`: a snapshot of this manager's extents in `segments` of `log`.
    pub(super) async fn live_extents(
        &self,
        log: LogId,
        segments: Vec<SegmentId>,
    ) -> Result<ManagerResponse, RemoteError> {
        if !log.is_client() {
            return Err(RemoteError::Invalid(format!(
                "{log} is a manager log: the cleaner cleans data logs only"
            )));
        }
        let segs: BTreeSet<SegmentId> = segments.into_iter().collect();
        let st = self.state.lock().await;
        let extents = st.extents_in(log, &segs);
        let only: Vec<_> = extents.iter().map(|(_, e)| *e).collect();
        Ok(ManagerResponse::SummedLiveExtents {
            sums: st.sums().for_extents(&only),
            extents,
        })
    }

    /// `Relocate`: remaps what still points at the old copies, durably.
    pub(super) async fn relocate(&self, moves: Vec<Moved>) -> Result<ManagerResponse, RemoteError> {
        for m in &moves {
            self.check_owned(m.ino)?;
        }
        // The plan runs again if the mutation has to wait for a writer's flush; the last
        // run is the one committed.
        let last = Mutex::new(Relocation::default());
        self.mutate(None, None, |st, _| {
            let r = st.plan_relocate(&moves);
            let records = r.records.clone();
            *last.lock().unwrap_or_else(|e| e.into_inner()) = r;
            Ok(Plan::Local {
                records,
                reply: Reply::Done,
            })
        })
        .await?;
        self.sync().await?;
        let r = last.into_inner().unwrap_or_else(|e| e.into_inner());
        Ok(ManagerResponse::Relocated {
            moved: r.moved,
            skipped: r.skipped,
        })
    }
}
