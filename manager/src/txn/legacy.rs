//! The old one-phase protocol (`TxIntent` / `TxApply`), kept only to finish intents that a
//! log written before the two-phase protocol still holds pending, and to answer `TxApply`
//! from managers not yet upgraded. New transactions use `coord` + `book`.
//! Given a logged `TxIntent`, the driver says which `TxApply` to send next and turns each
//! participant answer into the next command (send, commit, abort).
//! Must not: do I/O or know about transports (the service runs the commands).

use crate::error::Errno;
use crate::record::TxIntent;
use proto::ids::NodeId;
use proto::msg::{Attr, TxOp};

/// What the coordinator must do next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// Send remote op `index` to `node` (again, if it was sent before a crash).
    Send {
        index: usize,
        node: NodeId,
        op: TxOp,
    },
    /// Every remote op is applied: apply the local part and log `TxDone`.
    Commit { result: Option<Attr> },
    /// The first remote op was refused: log `TxAborted` and answer `errno`.
    Abort { errno: Errno },
}

/// Drives one transaction.
#[derive(Clone, Debug)]
pub struct TxDriver {
    intent: TxIntent,
    next: usize,
    result: Option<Attr>,
    refused: Option<Errno>,
}

impl TxDriver {
    /// Starts (or, after a restart, restarts) `intent` from its first remote op.
    pub fn new(intent: TxIntent) -> TxDriver {
        TxDriver {
            intent,
            next: 0,
            result: None,
            refused: None,
        }
    }

    pub fn intent(&self) -> &TxIntent {
        &self.intent
    }

    pub fn command(&self) -> Command {
        if let Some(errno) = &self.refused {
            return Command::Abort {
                errno: errno.clone(),
            };
        }
        match self.intent.remote.get(self.next) {
            Some((node, op)) => Command::Send {
                index: self.next,
                node: *node,
                op: op.clone(),
            },
            None => Command::Commit {
                result: self.result.clone(),
            },
        }
    }

    /// Participant applied op `index` (a stale answer for another index is ignored).
    pub fn on_applied(&mut self, index: usize, attr: Option<Attr>) -> Command {
        if index == self.next && self.refused.is_none() {
            if index == 0 {
                self.result = attr;
            }
            self.next += 1;
        }
        self.command()
    }

    /// Participant refused op `index`. The first op decides the transaction: nothing was
    /// applied anywhere, so it aborts. Later ops were planned not to fail; a refusal there
    /// means the participant's state moved on (e.g. the inode is gone) and nothing is left
    /// to do for that op, so the transaction still commits.
    pub fn on_refused(&mut self, index: usize, errno: Errno) -> Command {
        if index == self.next && self.refused.is_none() {
            if index == 0 {
                self.refused = Some(errno);
            } else {
                tracing::warn!(tx = %self.intent.tx, index, "participant refused a follow-up op: {errno}");
                self.next += 1;
            }
        }
        self.command()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::eexist;
    use proto::ids::{InodeId, TxId};

    fn intent(n: usize) -> TxIntent {
        let remote = (0..n)
            .map(|i| {
                (
                    NodeId(7),
                    TxOp::AdjustNlink {
                        ino: InodeId(100 + i as u64),
                        delta: -1,
                    },
                )
            })
            .collect();
        TxIntent {
            tx: TxId {
                coordinator: NodeId(1),
                seq: 3,
            },
            remote,
            local: Vec::new(),
            fill_from_result: false,
        }
    }

    #[test]
    fn sends_in_order_then_commits() {
        let mut d = TxDriver::new(intent(2));
        assert!(matches!(d.command(), Command::Send { index: 0, .. }));
        assert!(matches!(
            d.on_applied(0, None),
            Command::Send { index: 1, .. }
        ));
        assert!(
            matches!(d.on_applied(0, None), Command::Send { index: 1, .. }),
            "stale answer ignored"
        );
        assert_eq!(d.on_applied(1, None), Command::Commit { result: None });
    }

    #[test]
    fn first_refusal_aborts_later_refusal_commits() {
        let mut d = TxDriver::new(intent(2));
        assert_eq!(
            d.on_refused(0, eexist("x")),
            Command::Abort { errno: eexist("x") }
        );
        let mut d = TxDriver::new(intent(2));
        d.on_applied(0, None);
        assert_eq!(
            d.on_refused(1, eexist("y")),
            Command::Commit { result: None }
        );
    }

    #[test]
    fn no_remote_ops_commits_at_once() {
        assert_eq!(
            TxDriver::new(intent(0)).command(),
            Command::Commit { result: None }
        );
    }
}
