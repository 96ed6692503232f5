//! `TxBook`: the two-phase transactions a manager takes part in, as its records left them.
//! As coordinator: every `TxBegin` not yet forgotten, with its decision once logged. As
//! participant: every prepared part not yet resolved. It lives inside `MetaState` (so it is
//! replayed and checkpointed with it) and is changed only by `MetaState::apply`.
//! Must not: decide anything (planning is in `plan::twopc`, driving in `coord`).

use crate::record::TxBegin;
use proto::ids::{NodeId, TxId};
use proto::msg::{Attr, TxOp};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A transaction this manager coordinates.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Coordinated {
    pub begin: TxBegin,
    /// `None` until `TxDecided`: the local ops are locked meanwhile.
    pub decided: Option<bool>,
}

/// This manager's prepared part of another manager's transaction.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Prepared {
    pub ops: Vec<TxOp>,
    pub results: Vec<Option<Attr>>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxBook {
    pub coordinated: BTreeMap<TxId, Coordinated>,
    pub prepared: BTreeMap<TxId, Prepared>,
}

impl TxBook {
    pub fn is_empty(&self) -> bool {
        self.coordinated.is_empty() && self.prepared.is_empty()
    }

    pub(crate) fn begin(&mut self, b: &TxBegin) {
        self.coordinated.insert(
            b.tx,
            Coordinated {
                begin: b.clone(),
                decided: None,
            },
        );
    }

    pub(crate) fn decide(&mut self, tx: TxId, commit: bool) {
        if let Some(c) = self.coordinated.get_mut(&tx) {
            c.decided.get_or_insert(commit);
        }
    }

    pub(crate) fn forget(&mut self, tx: TxId) {
        self.coordinated.remove(&tx);
    }

    pub(crate) fn prepare(&mut self, tx: TxId, ops: &[TxOp], results: &[Option<Attr>]) {
        self.prepared.insert(
            tx,
            Prepared {
                ops: ops.to_vec(),
                results: results.to_vec(),
            },
        );
    }

    pub(crate) fn resolve(&mut self, tx: TxId) {
        self.prepared.remove(&tx);
    }

    /// The coordinator's outcome of a two-phase `tx` it coordinates: `Some(Some(c))`
    /// decided, `Some(None)` undecided, `None` unknown here (presumed aborted if this
    /// manager is its coordinator: commits are kept until acknowledged).
    pub fn outcome(&self, tx: TxId) -> Option<Option<bool>> {
        self.coordinated.get(&tx).map(|c| c.decided)
    }

    /// Participants of a coordinated transaction.
    pub fn participants(&self, tx: TxId) -> Vec<NodeId> {
        self.coordinated
            .get(&tx)
            .map(|c| c.begin.parts.iter().map(|(n, _)| *n).collect())
            .unwrap_or_default()
    }

    /// Every op holding intent locks here, with its transaction: undecided coordinated
    /// transactions' local ops and prepared parts.
    pub fn locked_ops(&self) -> impl Iterator<Item = (TxId, &TxOp)> {
        let coord = self
            .coordinated
            .iter()
            .filter(|(_, c)| c.decided.is_none())
            .flat_map(|(tx, c)| c.begin.local.iter().map(move |op| (*tx, op)));
        let part = self
            .prepared
            .iter()
            .flat_map(|(tx, p)| p.ops.iter().map(move |op| (*tx, op)));
        coord.chain(part)
    }
}
