//! Planning for the two-phase protocol (`txn` module doc): the records of each step, on
//! the coordinator (begin, decide, forget) and the participant (prepare, resolve), with
//! every check done at begin/prepare and the intent locks consulted there.
//! Must not: mutate the state, do I/O, or read clocks.

use super::{Draft, TxPlan, PLACEHOLDER};
use crate::error::Errno;
use crate::record::{Record, TxBegin};
use crate::state::MetaState;
use crate::txn::locks::ops_conflict;
use proto::ids::{NodeId, TxId};
use proto::msg::{Attr, Timestamp, TxOp};

/// The coordinator's first step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TxStart {
    /// Log `Record::TxBegin` of this and send the prepares.
    Begin(TxBegin),
    /// `tx` holds a lock this transaction needs here: wait for it to finish, plan again.
    Busy(TxId),
}

/// A participant's answer to a prepare.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Prepare {
    /// Prepared before (a repeated prepare): the stored results.
    Again(Vec<Option<Attr>>),
    /// Log these records, then answer the results.
    Log(Vec<Record>, Vec<Option<Attr>>),
    /// Another transaction holds a lock the ops need: refuse at once (never wait).
    Busy(TxId),
}

impl MetaState {
    /// Coordinator: the begin record of `plan` as transaction `tx`, unless a lock of
    /// another transaction stands in the way of its local part. The plan's own checks ran
    /// when it was made (under the same state lock).
    pub fn plan_begin(&self, tx: TxId, plan: &TxPlan) -> TxStart {
        if let Some(other) = ops_conflict(self, &plan.local, tx) {
            return TxStart::Busy(other);
        }
        let mut parts: Vec<(NodeId, Vec<TxOp>)> = Vec::new();
        for (node, op) in &plan.remote {
            match parts.iter_mut().find(|(n, _)| n == node) {
                Some((_, ops)) => ops.push(op.clone()),
                None => parts.push((*node, vec![op.clone()])),
            }
        }
        TxStart::Begin(TxBegin {
            tx,
            parts,
            local: plan.local.clone(),
            fill_from_result: plan.fill_from_result,
        })
    }

    /// Participant: checks all of `ops` (in order, each seeing the ones before) and the
    /// locks; the prepare record applies nothing but locks and reserves.
    pub fn plan_prepare(&self, now: Timestamp, tx: TxId, ops: &[TxOp]) -> Result<Prepare, Errno> {
        if let Some(p) = self.book.prepared.get(&tx) {
            return Ok(Prepare::Again(p.results.clone()));
        }
        if let Some(other) = ops_conflict(self, ops, tx) {
            return Ok(Prepare::Busy(other));
        }
        let mut d = Draft::new(self, now);
        let mut results = Vec::with_capacity(ops.len());
        for op in ops {
            results.push(d.tx_op(op)?);
        }
        Ok(Prepare::Log(
            vec![Record::TxPrepared {
                tx,
                ops: ops.to_vec(),
                results: results.clone(),
            }],
            results,
        ))
    }

    /// Participant: carries out the decision on a prepared `tx`: its ops against the
    /// current state (their checks hold: the locks kept what they checked), a create with
    /// the reserved inode number, then `TxResolved`. Nothing for an unknown `tx` (finished
    /// before and the decision is repeated, or aborted before its prepare was logged).
    /// Also returns, on commit, the attributes each op's inode has once the records are
    /// applied (one per op, `None` where the prepare's result was): the answer the
    /// coordinator gives, since they include a commit that landed after the prepare
    /// (which got the version number the prepare's result shows).
    pub fn plan_resolve(
        &self,
        now: Timestamp,
        tx: TxId,
        commit: bool,
    ) -> (Vec<Record>, Vec<Option<Attr>>) {
        let Some(p) = self.book.prepared.get(&tx) else {
            return (Vec::new(), Vec::new());
        };
        let mut recs = Vec::new();
        let mut applied = Vec::new();
        if commit {
            let mut d = Draft::new(self, now);
            for (op, result) in p.ops.iter().zip(&p.results) {
                if let (TxOp::CreateInode { .. }, Some(r)) = (op, result) {
                    d.fixed_ino = Some(r.ino);
                }
                if let Err(e) = d.tx_op(op) {
                    // Cannot happen while the locks hold; logged, never silently.
                    tracing::error!(%tx, ?op, "prepared op no longer applies: {e}");
                }
            }
            applied = p
                .results
                .iter()
                .map(|r| r.as_ref().and_then(|r| d.attr(r.ino).ok()))
                .collect();
            recs = d.finish();
        }
        recs.push(Record::TxResolved { tx, commit });
        (recs, applied)
    }

    /// Coordinator: the decision record, on commit with the local part (its `AddEntry`
    /// placeholders filled from `result`). Nothing if `tx` is unknown or decided already.
    pub fn plan_decide(
        &self,
        now: Timestamp,
        tx: TxId,
        commit: bool,
        result: Option<&Attr>,
    ) -> Vec<Record> {
        let Some(c) = self.book.coordinated.get(&tx) else {
            return Vec::new();
        };
        if c.decided.is_some() {
            return Vec::new();
        }
        let mut recs = Vec::new();
        if commit {
            let mut d = Draft::new(self, now);
            for op in &c.begin.local {
                let mut op = op.clone();
                if let TxOp::AddEntry { ino, kind, .. } = &mut op {
                    if *ino == PLACEHOLDER {
                        match result {
                            Some(r) if c.begin.fill_from_result => {
                                *ino = r.ino;
                                *kind = r.kind;
                            }
                            _ => {
                                tracing::error!(%tx, "no remote result to fill the entry from; entry skipped");
                                continue;
                            }
                        }
                    }
                }
                if let Err(e) = d.tx_op(&op) {
                    tracing::error!(%tx, ?op, "local part no longer applies: {e}");
                }
            }
            recs = d.finish();
        }
        recs.push(Record::TxDecided { tx, commit });
        recs
    }

    /// Coordinator: every participant acknowledged; forget `tx`.
    pub fn plan_forget(&self, tx: TxId) -> Vec<Record> {
        if self.book.coordinated.contains_key(&tx) {
            vec![Record::TxForget { tx }]
        } else {
            Vec::new()
        }
    }
}
