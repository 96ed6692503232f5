//! The coordinator driver: events in, commands out, at every step.

use super::*;
use crate::error::eexist;
use proto::ids::{InodeId, SlotId, TxId};

const A: NodeId = NodeId(2);
const B: NodeId = NodeId(3);

fn begin(parts: &[NodeId]) -> TxBegin {
    TxBegin {
        tx: TxId {
            coordinator: NodeId(1),
            seq: 7,
        },
        parts: parts
            .iter()
            .map(|n| {
                (
                    *n,
                    vec![TxOp::RemoveDir {
                        dir: InodeId::new(SlotId(n.0 as u16), 5),
                    }],
                )
            })
            .collect(),
        local: Vec::new(),
        fill_from_result: false,
    }
}

fn finished(node: NodeId) -> Event {
    Event::Finished {
        node,
        applied: Vec::new(),
    }
}

fn prepared(node: NodeId) -> Event {
    Event::Prepared {
        node,
        results: vec![None],
    }
}

#[test]
fn prepares_everywhere_then_commits_then_forgets() {
    let (mut c, cmds) = Coordinator::start(&begin(&[A, B]));
    assert_eq!(cmds.len(), 2);
    assert!(matches!(cmds[0], Cmd::Prepare { node: A, .. }));
    assert!(matches!(cmds[1], Cmd::Prepare { node: B, .. }));
    assert_eq!(c.on_event(prepared(B)), vec![], "waits for A");
    assert_eq!(c.decision(), None);
    assert_eq!(
        c.on_event(prepared(A)),
        vec![Cmd::Decide {
            commit: true,
            result: None
        }]
    );
    assert_eq!(c.decision(), Some(true));
    assert_eq!(c.on_event(prepared(A)), vec![], "repeated answer ignored");
    assert_eq!(
        c.on_event(Event::Logged),
        vec![
            Cmd::Finish {
                node: A,
                commit: true
            },
            Cmd::Finish {
                node: B,
                commit: true
            }
        ]
    );
    assert_eq!(c.on_event(finished(A)), vec![]);
    assert_eq!(c.on_event(finished(A)), vec![]);
    assert_eq!(c.unfinished(), vec![B]);
    assert_eq!(c.on_event(finished(B)), vec![Cmd::Forget]);
    assert!(c.is_done());
}

#[test]
fn any_refusal_aborts_all_and_late_prepares_change_nothing() {
    for (i, ev) in [
        Event::Refused {
            node: B,
            errno: eexist("x"),
        },
        Event::Busy { node: B },
        Event::Unreachable { node: B },
    ]
    .into_iter()
    .enumerate()
    {
        let (mut c, _) = Coordinator::start(&begin(&[A, B]));
        c.on_event(prepared(A));
        assert_eq!(
            c.on_event(ev),
            vec![Cmd::Decide {
                commit: false,
                result: None
            }],
            "case {i}"
        );
        assert_eq!(
            c.on_event(prepared(B)),
            vec![],
            "late prepare after the abort"
        );
        assert_eq!(c.decision(), Some(false));
        // The abort goes to every participant, also to A which prepared and to B which
        // may have prepared after its answer was lost.
        assert_eq!(c.on_event(Event::Logged).len(), 2);
        c.on_event(finished(A));
        assert_eq!(c.on_event(finished(B)), vec![Cmd::Forget]);
    }
    let (mut c, _) = Coordinator::start(&begin(&[A]));
    c.on_event(Event::Refused {
        node: A,
        errno: eexist("x"),
    });
    assert_eq!(c.abort_cause(), Some(&AbortCause::Refused(eexist("x"))));
}

#[test]
fn resume_aborts_undecided_and_resends_decisions() {
    let b = begin(&[A, B]);
    let (mut c, cmds) = Coordinator::resume(&b, None);
    assert_eq!(
        cmds,
        vec![Cmd::Decide {
            commit: false,
            result: None
        }]
    );
    assert_eq!(c.abort_cause(), Some(&AbortCause::Restarted));
    assert_eq!(
        c.on_event(prepared(A)),
        vec![],
        "a prepare answered before the crash"
    );
    assert_eq!(c.on_event(Event::Logged).len(), 2);
    let (mut c, cmds) = Coordinator::resume(&b, Some(true));
    assert_eq!(
        cmds,
        vec![
            Cmd::Finish {
                node: A,
                commit: true
            },
            Cmd::Finish {
                node: B,
                commit: true
            }
        ]
    );
    c.on_event(finished(B));
    assert_eq!(c.on_event(finished(A)), vec![Cmd::Forget]);
    assert_eq!(c.decision(), Some(true));
}

#[test]
fn result_is_the_first_participants_first_result() {
    let (mut c, _) = Coordinator::start(&begin(&[A, B]));
    let t = proto::msg::Timestamp { secs: 1, nanos: 0 };
    let attr = |n: u64| Attr {
        ino: InodeId::new(SlotId(2), n),
        kind: proto::msg::FileKind::File,
        perm: 0o644,
        nlink: 1,
        uid: 0,
        gid: 0,
        size: 0,
        blocks_bytes: 0,
        atime: t,
        mtime: t,
        ctime: t,
        rdev: 0,
        version: 1,
    };
    c.on_event(Event::Prepared {
        node: B,
        results: vec![Some(attr(9))],
    });
    let cmds = c.on_event(Event::Prepared {
        node: A,
        results: vec![Some(attr(4))],
    });
    assert_eq!(
        cmds,
        vec![Cmd::Decide {
            commit: true,
            result: Some(attr(4))
        }]
    );
}

#[test]
fn no_participant_commits_at_once() {
    let (mut c, cmds) = Coordinator::start(&begin(&[]));
    assert_eq!(
        cmds,
        vec![Cmd::Decide {
            commit: true,
            result: None
        }]
    );
    assert_eq!(c.on_event(Event::Logged), vec![Cmd::Forget]);
}

#[test]
fn the_answer_is_the_result_as_applied_once_acknowledged() {
    let attr = |nlink, size| Attr {
        ino: InodeId::new(SlotId(2), 9),
        kind: proto::msg::FileKind::File,
        perm: 0o644,
        nlink,
        uid: 0,
        gid: 0,
        size,
        blocks_bytes: 0,
        atime: Default::default(),
        mtime: Default::default(),
        ctime: Default::default(),
        rdev: 0,
        version: 3,
    };
    let (mut c, _) = Coordinator::start(&begin(&[A]));
    c.on_event(Event::Prepared {
        node: A,
        results: vec![Some(attr(2, 0))],
    });
    c.on_event(Event::Logged);
    assert_eq!(c.applied_result(), None, "not acknowledged yet");
    let applied = Attr {
        version: 4,
        ..attr(2, 4096)
    };
    assert_eq!(
        c.on_event(Event::Finished {
            node: A,
            applied: vec![Some(applied.clone())],
        }),
        vec![Cmd::Forget]
    );
    assert_eq!(c.applied_result(), Some(applied));
    assert_eq!(
        c.result(),
        Some(attr(2, 0)),
        "the prepared result stays as it was"
    );
}
