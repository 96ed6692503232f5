//! Planning of the legacy (one-phase) cross-manager transaction: a participant's
//! `TxApply` of one op and the coordinator's finish (its local ops, leniently, and
//! `TxDone`).
//! Must not: mutate the state, do I/O, or read clocks.

use super::draft::Draft;
use super::{Ctx, PLACEHOLDER};
use crate::error::Errno;
use crate::record::{Record, TxIntent};
use crate::state::MetaState;
use proto::ids::TxId;
use proto::msg::{Attr, Timestamp, TxOp};

impl MetaState {
    /// Participant: validates and applies `op` of `tx`; the records include `TxApplied`.
    pub fn plan_tx_apply(
        &self,
        ctx: &Ctx,
        tx: TxId,
        op: &TxOp,
    ) -> Result<(Vec<Record>, Option<Attr>), Errno> {
        let (mut records, result) = self.run_strict(ctx.now, std::slice::from_ref(op))?;
        records.push(Record::TxApplied {
            tx,
            op: op.clone(),
            result: result.clone(),
        });
        Ok((records, result))
    }

    /// Coordinator: the records that finish `intent` once every remote op is applied:
    /// its local ops (applied leniently: an op that no longer fits is skipped) and `TxDone`.
    pub fn plan_tx_done(
        &self,
        now: Timestamp,
        intent: &TxIntent,
        result: Option<&Attr>,
    ) -> Vec<Record> {
        let mut d = Draft::new(self, now);
        for op in &intent.local {
            let mut op = op.clone();
            if intent.fill_from_result {
                if let TxOp::AddEntry { ino, kind, .. } = &mut op {
                    if *ino == PLACEHOLDER {
                        let Some(r) = result else {
                            tracing::warn!(tx = %intent.tx, "no remote result to fill the entry from; entry skipped");
                            continue;
                        };
                        *ino = r.ino;
                        *kind = r.kind;
                    }
                }
            }
            if let Err(e) = d.tx_op(&op) {
                tracing::warn!(tx = %intent.tx, ?op, "local part of transaction skipped: {e}");
            }
        }
        let mut recs = d.finish();
        recs.push(Record::TxDone { tx: intent.tx });
        recs
    }
}
