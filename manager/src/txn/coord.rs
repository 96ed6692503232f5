//! The coordinator of a two-phase transaction as a pure driver: events in (participant
//! answers, the decision made durable), commands out (send prepares, log the decision,
//! send the decision, forget). The service executes the commands; the same driver resumes a
//! transaction found in the book after a restart.
//! Must not: do I/O, know transports or clocks (timeouts arrive as `Unreachable` events).

use crate::error::Errno;
use crate::record::TxBegin;
use proto::ids::NodeId;
use proto::msg::{Attr, TxOp};
use std::collections::{BTreeMap, BTreeSet};

/// What the coordinator must do next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Cmd {
    /// Send `TxPrepare` with these ops to `node`.
    Prepare { node: NodeId, ops: Vec<TxOp> },
    /// Log `TxDecided` durably (on commit with the local part, filled from `result`),
    /// then report `Event::Logged`.
    Decide { commit: bool, result: Option<Attr> },
    /// Send `TxFinish` to `node`, until it answers.
    Finish { node: NodeId, commit: bool },
    /// Every participant acknowledged the decision: log `TxForget`.
    Forget,
}

/// What happened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    Prepared {
        node: NodeId,
        results: Vec<Option<Attr>>,
    },
    /// A check failed at `node`: abort, answer `errno`.
    Refused { node: NodeId, errno: Errno },
    /// `node` holds a conflicting lock: abort, then the operation may be retried.
    Busy { node: NodeId },
    /// `node` did not answer the prepare in time: abort.
    Unreachable { node: NodeId },
    /// The decision is durable.
    Logged,
    /// `node` carried out the decision; `applied` as in `ManagerResponse::TxFinished`.
    Finished {
        node: NodeId,
        applied: Vec<Option<Attr>>,
    },
}

/// Why a transaction aborted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AbortCause {
    Refused(Errno),
    Busy(NodeId),
    Unreachable(NodeId),
    /// The coordinator restarted before deciding.
    Restarted,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Phase {
    Preparing,
    Deciding(bool),
    Finishing(bool),
    Done,
}

#[derive(Clone, Debug)]
pub struct Coordinator {
    parts: Vec<(NodeId, Vec<TxOp>)>,
    prepared: BTreeMap<NodeId, Vec<Option<Attr>>>,
    /// What participants reported applied (`Finished`, when not empty).
    applied: BTreeMap<NodeId, Vec<Option<Attr>>>,
    finished: BTreeSet<NodeId>,
    phase: Phase,
    cause: Option<AbortCause>,
}

impl Coordinator {
    /// A new transaction whose `TxBegin` is durable: prepares go to every participant.
    pub fn start(begin: &TxBegin) -> (Coordinator, Vec<Cmd>) {
        let mut c = Coordinator {
            parts: begin.parts.clone(),
            prepared: BTreeMap::new(),
            applied: BTreeMap::new(),
            finished: BTreeSet::new(),
            phase: Phase::Preparing,
            cause: None,
        };
        let cmds = if c.parts.is_empty() {
            c.phase = Phase::Deciding(true);
            vec![Cmd::Decide {
                commit: true,
                result: None,
            }]
        } else {
            c.parts
                .iter()
                .map(|(node, ops)| Cmd::Prepare {
                    node: *node,
                    ops: ops.clone(),
                })
                .collect()
        };
        (c, cmds)
    }

    /// A transaction found in the book after a restart: undecided ones abort (presumed
    /// abort: no participant applied anything), decided ones send their decision again.
    pub fn resume(begin: &TxBegin, decided: Option<bool>) -> (Coordinator, Vec<Cmd>) {
        let mut c = Coordinator {
            parts: begin.parts.clone(),
            prepared: BTreeMap::new(),
            applied: BTreeMap::new(),
            finished: BTreeSet::new(),
            phase: Phase::Preparing,
            cause: None,
        };
        match decided {
            None => {
                c.cause = Some(AbortCause::Restarted);
                c.phase = Phase::Deciding(false);
                (
                    c,
                    vec![Cmd::Decide {
                        commit: false,
                        result: None,
                    }],
                )
            }
            Some(commit) => {
                c.phase = Phase::Finishing(commit);
                let cmds = c.finish_cmds(commit);
                (c, cmds)
            }
        }
    }

    /// The decision, once made.
    pub fn decision(&self) -> Option<bool> {
        match self.phase {
            Phase::Preparing => None,
            Phase::Deciding(c) | Phase::Finishing(c) => Some(c),
            Phase::Done => Some(self.cause.is_none()),
        }
    }

    pub fn abort_cause(&self) -> Option<&AbortCause> {
        self.cause.as_ref()
    }

    /// The first participant's first result (the created or linked inode) as prepared:
    /// what the decision fills the local part from. Not the answer to the request: a
    /// change that lands between prepare and decision is missing from it.
    pub fn result(&self) -> Option<Attr> {
        let (node, _) = self.parts.first()?;
        self.prepared.get(node)?.first().cloned().flatten()
    }

    /// The first participant's first result as it applied it (`Finished`): the answer to
    /// the request. `None` until that participant acknowledged the decision with it.
    pub fn applied_result(&self) -> Option<Attr> {
        let (node, _) = self.parts.first()?;
        self.applied.get(node)?.first().cloned().flatten()
    }

    /// Whether every participant acknowledged the decision.
    pub fn is_done(&self) -> bool {
        self.phase == Phase::Done
    }

    /// Participants that have not acknowledged the decision yet.
    pub fn unfinished(&self) -> Vec<NodeId> {
        self.parts
            .iter()
            .map(|(n, _)| *n)
            .filter(|n| !self.finished.contains(n))
            .collect()
    }

    fn finish_cmds(&self, commit: bool) -> Vec<Cmd> {
        let mut cmds: Vec<Cmd> = self
            .unfinished()
            .into_iter()
            .map(|node| Cmd::Finish { node, commit })
            .collect();
        if cmds.is_empty() {
            cmds.push(Cmd::Forget);
        }
        cmds
    }

    fn abort(&mut self, cause: AbortCause) -> Vec<Cmd> {
        self.cause = Some(cause);
        self.phase = Phase::Deciding(false);
        vec![Cmd::Decide {
            commit: false,
            result: None,
        }]
    }

    pub fn on_event(&mut self, ev: Event) -> Vec<Cmd> {
        match (self.phase.clone(), ev) {
            (Phase::Preparing, Event::Prepared { node, results }) => {
                if !self.parts.iter().any(|(n, _)| *n == node) {
                    return Vec::new();
                }
                self.prepared.insert(node, results);
                if self.prepared.len() == self.parts.len() {
                    self.phase = Phase::Deciding(true);
                    return vec![Cmd::Decide {
                        commit: true,
                        result: self.result(),
                    }];
                }
                Vec::new()
            }
            (Phase::Preparing, Event::Refused { errno, .. }) => {
                self.abort(AbortCause::Refused(errno))
            }
            (Phase::Preparing, Event::Busy { node }) => self.abort(AbortCause::Busy(node)),
            (Phase::Preparing, Event::Unreachable { node }) => {
                self.abort(AbortCause::Unreachable(node))
            }
            (Phase::Deciding(commit), Event::Logged) => {
                self.phase = Phase::Finishing(commit);
                self.finish_cmds(commit)
            }
            (Phase::Finishing(commit), Event::Finished { node, applied }) => {
                if !self.parts.iter().any(|(n, _)| *n == node) || !self.finished.insert(node) {
                    return Vec::new();
                }
                if !applied.is_empty() {
                    self.applied.insert(node, applied);
                }
                if self.unfinished().is_empty() {
                    self.phase = Phase::Done;
                    let _ = commit;
                    return vec![Cmd::Forget];
                }
                Vec::new()
            }
            // Late or repeated answers change nothing once the decision is taken.
            _ => Vec::new(),
        }
    }
}

#[cfg(test)]
#[path = "coord_test.rs"]
mod tests;
