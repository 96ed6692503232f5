//! Two-phase commit on the pure core: two `MetaState`s (coordinator and participant) driven
//! by `TxDriver`, with crashes simulated by replaying record prefixes into fresh states.

use crate::error::code::*;
use crate::plan::{Plan, TxPlan};
use crate::record::{Record, TxIntent};
use crate::state::MetaState;
use crate::state_test::{name_on, H, ME, OTHER, ROOT};
use crate::txn::{Command, TxDriver};
use proto::ids::{InodeId, NodeId, TxId, SLOT_COUNT};
use proto::msg::{Attr, Caller, FileKind, NewNode, RenameFlags, Timestamp};

const USER: Caller = Caller { uid: 5, gid: 6 };

fn pair() -> (H, H) {
    let owners: Vec<NodeId> = (0..SLOT_COUNT)
        .map(|s| if s < SLOT_COUNT / 2 { ME } else { OTHER })
        .collect();
    (
        H::with_owners(ME, owners.clone(), true),
        H::with_owners(OTHER, owners, false),
    )
}

fn begin(c: &mut H, plan: TxPlan) -> TxIntent {
    let intent = plan.into_intent(TxId {
        coordinator: ME,
        seq: c.st.next_tx(),
    });
    c.commit(vec![Record::TxIntent(intent.clone())]);
    intent
}

/// Runs the driver; stops (a crash of the coordinator) once `max_sends` participant calls
/// were made, before the next call or before the commit.
/// Returns the outcome when it got that far: Ok(result) committed, Err(errno) aborted.
fn drive(
    c: &mut H,
    p: &mut H,
    intent: &TxIntent,
    max_sends: usize,
) -> Option<Result<Option<Attr>, crate::error::code::Errno>> {
    let mut d = TxDriver::new(intent.clone());
    let mut sends = 0;
    loop {
        match d.command() {
            Command::Send { index, node, op } => {
                assert_eq!(node, OTHER);
                if sends == max_sends {
                    return None;
                }
                sends += 1;
                let r = match p.st.applied_result(intent.tx, &op) {
                    Some(r) => Ok(r),
                    None => {
                        let (st, owners) = (p.st.clone(), p.owners.clone());
                        let ctx = p.ctx_with(&owners);
                        st.plan_tx_apply(&ctx, intent.tx, &op).map(|(recs, attr)| {
                            p.commit(recs);
                            attr
                        })
                    }
                };
                match r {
                    Ok(a) => d.on_applied(index, a),
                    Err(e) => d.on_refused(index, e),
                };
            }
            Command::Commit { result } => {
                if sends == max_sends {
                    return None; // crash before the local part and TxDone
                }
                let recs = c.st.plan_tx_done(
                    Timestamp {
                        secs: 9999,
                        nanos: 0,
                    },
                    intent,
                    result.as_ref(),
                );
                c.commit(recs);
                return Some(Ok(result));
            }
            Command::Abort { errno } => {
                c.commit(vec![Record::TxAborted { tx: intent.tx }]);
                return Some(Err(errno.code));
            }
        }
    }
}

/// A fresh state from the records of `h` (what a restarted manager recovers).
fn restart(h: &H) -> H {
    let mut st = MetaState::new();
    for r in &h.log {
        st.apply(r);
    }
    H {
        st,
        owners: h.owners.clone(),
        me: h.me,
        log: h.log.clone(),
        clock: h.clock + 100,
    }
}

fn tx_plan(p: Result<Plan, crate::Errno>) -> TxPlan {
    match p {
        Ok(Plan::Tx(t)) => t,
        other => panic!("expected a transaction, got {other:?}"),
    }
}

fn remote_mkdir_plan(c: &mut H, name: &str) -> TxPlan {
    let (st, owners) = (c.st.clone(), c.owners.clone());
    let ctx = c.ctx_with(&owners);
    tx_plan(st.plan_create(&ctx, ROOT, name, &NewNode::Dir, 0o777, 0o022, USER, None))
}

fn check_remote_dir(c: &H, p: &H, name: &str, result: &Attr) {
    assert_eq!(c.lookup(ROOT, name), Some(result.ino));
    assert!(
        result.ino.slot().0 >= SLOT_COUNT / 2,
        "lives in the participant's slots"
    );
    let d =
        p.st.inode(result.ino)
            .expect("participant holds the directory");
    assert_eq!(d.parent, Some(ROOT));
    assert_eq!((d.attr.perm, d.attr.nlink, d.attr.uid), (0o755, 2, 5));
    assert_eq!(c.attr(ROOT).nlink, 3);
    assert_eq!(
        c.st.tx_outcome(TxId {
            coordinator: ME,
            seq: 0
        }),
        Some(true)
    );
    assert_eq!(c.st.pending_txs().count(), 0);
}

#[test]
fn remote_mkdir_commits() {
    let (mut c, mut p) = pair();
    let name = name_on(&c, ROOT, OTHER, "d");
    let plan = remote_mkdir_plan(&mut c, &name);
    let intent = begin(&mut c, plan);
    assert_eq!(c.st.tx_outcome(intent.tx), None, "pending");
    let r = drive(&mut c, &mut p, &intent, usize::MAX)
        .expect("finished")
        .expect("committed")
        .expect("attr");
    check_remote_dir(&c, &p, &name, &r);
    c.check_replay();
    p.check_replay();
}

#[test]
fn crash_after_intent_redrives_to_commit() {
    let (mut c, mut p) = pair();
    let name = name_on(&c, ROOT, OTHER, "d");
    let plan = remote_mkdir_plan(&mut c, &name);
    let intent = begin(&mut c, plan);
    assert!(
        drive(&mut c, &mut p, &intent, 0).is_none(),
        "crash before any TxApply"
    );
    let mut c2 = restart(&c);
    let pending: Vec<TxIntent> = c2.st.pending_txs().cloned().collect();
    assert_eq!(pending, vec![intent.clone()]);
    let r = drive(&mut c2, &mut p, &pending[0], usize::MAX)
        .expect("finished")
        .expect("committed")
        .expect("attr");
    check_remote_dir(&c2, &p, &name, &r);
}

#[test]
fn crash_after_remote_apply_reuses_the_stored_result() {
    let (mut c, mut p) = pair();
    let name = name_on(&c, ROOT, OTHER, "d");
    let plan = remote_mkdir_plan(&mut c, &name);
    let intent = begin(&mut c, plan);
    assert!(
        drive(&mut c, &mut p, &intent, 1).is_none(),
        "crash after the participant applied"
    );
    assert_eq!(p.st.inode_count(), 1);
    // Both managers restart; the participant still knows its result.
    let mut c2 = restart(&c);
    let mut p2 = restart(&p);
    let r = drive(&mut c2, &mut p2, &intent, usize::MAX)
        .expect("finished")
        .expect("committed")
        .expect("attr");
    assert_eq!(
        p2.st.inode_count(),
        1,
        "the repeated TxApply created nothing new"
    );
    check_remote_dir(&c2, &p2, &name, &r);
}

#[test]
fn crash_before_done_is_durable_after_done() {
    let (mut c, mut p) = pair();
    let name = name_on(&c, ROOT, OTHER, "d");
    let plan = remote_mkdir_plan(&mut c, &name);
    let intent = begin(&mut c, plan);
    let r = drive(&mut c, &mut p, &intent, usize::MAX)
        .expect("finished")
        .expect("committed")
        .expect("attr");
    // The done records are in the log: a restart finds nothing pending.
    let c2 = restart(&c);
    assert_eq!(c2.st.pending_txs().count(), 0);
    check_remote_dir(&c2, &p, &name, &r);
    // Without the done records (crash before they were durable) the intent is pending again.
    let mut cut = H {
        log: c.log[..c.log.len() - 3].to_vec(),
        ..restart(&c)
    };
    cut = restart(&cut);
    assert_eq!(cut.st.pending_txs().count(), 1);
    assert_eq!(cut.lookup(ROOT, &name), None);
    let r2 = drive(&mut cut, &mut p, &intent, usize::MAX)
        .expect("finished")
        .expect("committed")
        .expect("attr");
    assert_eq!(r2, r);
    check_remote_dir(&cut, &p, &name, &r2);
}

#[test]
fn refused_first_op_aborts_and_changes_nothing() {
    let (mut c, mut p) = pair();
    let name = name_on(&c, ROOT, OTHER, "d");
    let plan = remote_mkdir_plan(&mut c, &name);
    let intent = begin(&mut c, plan);
    let dir = drive(&mut c, &mut p, &intent, usize::MAX)
        .expect("done")
        .expect("ok")
        .expect("attr")
        .ino;
    // Put a file into the remote directory (created on the participant), then rmdir from the coordinator.
    let (st, owners) = (p.st.clone(), p.owners.clone());
    let ctx = p.ctx_with(&owners);
    let Ok(Plan::Local { records, .. }) =
        st.plan_create(&ctx, dir, "f", &NewNode::File, 0o644, 0, USER, None)
    else {
        panic!("local create on the participant")
    };
    p.commit(records);
    let (st, owners) = (c.st.clone(), c.owners.clone());
    let ctx = c.ctx_with(&owners);
    let plan = tx_plan(st.plan_rmdir(&ctx, ROOT, &name));
    let before = c.st.clone();
    let intent = begin(&mut c, plan);
    assert_eq!(
        drive(&mut c, &mut p, &intent, usize::MAX),
        Some(Err(ENOTEMPTY))
    );
    assert_eq!(c.lookup(ROOT, &name), Some(dir));
    assert_eq!(c.attr(ROOT), before.inode(ROOT).expect("root").attr);
    assert_eq!(c.st.tx_outcome(intent.tx), Some(false));
    c.check_replay();
    // Empty it and retry: committed, the directory is gone on both sides.
    let (st, owners) = (p.st.clone(), p.owners.clone());
    let ctx = p.ctx_with(&owners);
    let Ok(Plan::Local { records, .. }) = st.plan_unlink(&ctx, dir, "f") else {
        panic!("unlink")
    };
    p.commit(records);
    let (st, owners) = (c.st.clone(), c.owners.clone());
    let ctx = c.ctx_with(&owners);
    let plan = tx_plan(st.plan_rmdir(&ctx, ROOT, &name));
    let intent = begin(&mut c, plan);
    assert!(matches!(
        drive(&mut c, &mut p, &intent, usize::MAX),
        Some(Ok(None))
    ));
    assert_eq!(c.lookup(ROOT, &name), None);
    assert!(p.st.inode(dir).is_none());
    assert_eq!(c.attr(ROOT).nlink, 2);
    p.check_replay();
}

#[test]
fn cross_manager_rename_link_and_unlink() {
    let (mut c, mut p) = pair();
    let name = name_on(&c, ROOT, OTHER, "r");
    let plan = remote_mkdir_plan(&mut c, &name);
    let intent = begin(&mut c, plan);
    let rdir = drive(&mut c, &mut p, &intent, usize::MAX)
        .expect("done")
        .expect("ok")
        .expect("attr")
        .ino;
    // A local directory and a local file, moved into the remote directory.
    let ld = c
        .mkdir(ROOT, &name_on(&c, ROOT, ME, "l"))
        .expect("local mkdir");
    let f = c.touch(ROOT, "file").expect("create");
    let (st, owners) = (c.st.clone(), c.owners.clone());
    let ctx = c.ctx_with(&owners);
    let plan = tx_plan(st.plan_rename(
        &ctx,
        ROOT,
        "file",
        rdir,
        "moved",
        RenameFlags::default(),
        None,
    ));
    let intent = begin(&mut c, plan);
    assert!(matches!(
        drive(&mut c, &mut p, &intent, usize::MAX),
        Some(Ok(_))
    ));
    assert_eq!(c.lookup(ROOT, "file"), None);
    assert_eq!(p.lookup(rdir, "moved"), Some(f));
    // Moving a directory: its '..' (local) follows, the remote parent counts a subdirectory.
    let lname =
        c.st.inode(ROOT)
            .expect("root")
            .entries
            .iter()
            .find(|(_, i, _)| *i == ld)
            .expect("ld")
            .0
            .to_string();
    let (st, owners) = (c.st.clone(), c.owners.clone());
    let ctx = c.ctx_with(&owners);
    let plan = tx_plan(st.plan_rename(
        &ctx,
        ROOT,
        &lname,
        rdir,
        "sub",
        RenameFlags::default(),
        None,
    ));
    let intent = begin(&mut c, plan);
    assert!(matches!(
        drive(&mut c, &mut p, &intent, usize::MAX),
        Some(Ok(_))
    ));
    assert_eq!(c.st.inode(ld).expect("ld").parent, Some(rdir));
    assert_eq!(p.attr(rdir).nlink, 3);
    assert_eq!(c.attr(ROOT).nlink, 3, "root keeps only the remote dir");
    // Rename onto an existing remote file: the target loses its link on the participant.
    let g = c.touch(ROOT, "g").expect("create");
    let (st, owners) = (c.st.clone(), c.owners.clone());
    let ctx = c.ctx_with(&owners);
    let target = p.st.lookup(rdir, "moved").ok();
    let plan = tx_plan(st.plan_rename(
        &ctx,
        ROOT,
        "g",
        rdir,
        "moved",
        RenameFlags::default(),
        target,
    ));
    let intent = begin(&mut c, plan);
    assert!(matches!(
        drive(&mut c, &mut p, &intent, usize::MAX),
        Some(Ok(_))
    ));
    assert_eq!(p.lookup(rdir, "moved"), Some(g));
    assert!(
        c.st.inode(f).is_none(),
        "the replaced file (owned by the coordinator) was dropped"
    );
    // Link a remote inode into a local directory: remote nlink++ and the entry takes its kind.
    let pf = {
        let (st, owners) = (p.st.clone(), p.owners.clone());
        let ctx = p.ctx_with(&owners);
        let Ok(Plan::Local {
            records,
            reply: crate::plan::Reply::Created { ino: i, .. },
        }) = st.plan_create(&ctx, rdir, "pf", &NewNode::File, 0o644, 0, USER, None)
        else {
            panic!("create")
        };
        p.commit(records);
        i
    };
    let (st, owners) = (c.st.clone(), c.owners.clone());
    let ctx = c.ctx_with(&owners);
    let plan = tx_plan(st.plan_link(&ctx, pf, ROOT, "pf-link"));
    let intent = begin(&mut c, plan);
    let linked = drive(&mut c, &mut p, &intent, usize::MAX)
        .expect("done")
        .expect("ok")
        .expect("attr");
    assert_eq!((linked.ino, linked.nlink), (pf, 2));
    assert_eq!(
        c.st.lookup(ROOT, "pf-link").ok(),
        Some((pf, FileKind::File))
    );
    // Unlink of the remote inode from the local directory.
    let (st, owners) = (c.st.clone(), c.owners.clone());
    let ctx = c.ctx_with(&owners);
    let plan = tx_plan(st.plan_unlink(&ctx, ROOT, "pf-link"));
    let intent = begin(&mut c, plan);
    assert!(matches!(
        drive(&mut c, &mut p, &intent, usize::MAX),
        Some(Ok(_))
    ));
    assert_eq!(p.attr(pf).nlink, 1);
    assert_eq!(c.lookup(ROOT, "pf-link"), None);
    // Linking a remote directory is refused by the participant: abort.
    let (st, owners) = (c.st.clone(), c.owners.clone());
    let ctx = c.ctx_with(&owners);
    let plan = tx_plan(st.plan_link(&ctx, rdir, ROOT, "dlink"));
    let intent = begin(&mut c, plan);
    assert_eq!(drive(&mut c, &mut p, &intent, usize::MAX), Some(Err(EPERM)));
    c.check_replay();
    p.check_replay();
    let _ = InodeId::ROOT;
}

#[test]
fn cross_manager_entries_get_fresh_cookies_on_the_participant() {
    let (mut c, mut p) = pair();
    let name = name_on(&c, ROOT, OTHER, "r");
    let plan = remote_mkdir_plan(&mut c, &name);
    let intent = begin(&mut c, plan);
    let rdir = drive(&mut c, &mut p, &intent, usize::MAX)
        .expect("done")
        .expect("ok")
        .expect("attr")
        .ino;
    // The remote directory's entry on the coordinator has a cookie like a local one.
    let root_cookie = c.st.inode(ROOT).expect("root").entries.cookie(&name);
    assert_eq!(root_cookie, Some(1));
    // Files moved one by one into the remote directory (AddEntry on the participant),
    // while a listing of it is under way.
    let mut listed = Vec::new();
    let mut cookie = 0;
    for i in 0..6 {
        let f = format!("file{i}");
        c.touch(ROOT, &f).expect("create");
        let (st, owners) = (c.st.clone(), c.owners.clone());
        let ctx = c.ctx_with(&owners);
        let plan = tx_plan(st.plan_rename(&ctx, ROOT, &f, rdir, &f, RenameFlags::default(), None));
        let intent = begin(&mut c, plan);
        assert!(matches!(
            drive(&mut c, &mut p, &intent, usize::MAX),
            Some(Ok(_))
        ));
        let page = p.st.readdir(rdir, cookie, 100).expect("readdir");
        assert_eq!(page.len(), 1, "only the new entry follows the cookie");
        cookie = page[0].next;
        listed.push((page[0].name.clone(), cookie));
    }
    let want: Vec<(String, u64)> = (0..6).map(|i| (format!("file{i}"), i + 1)).collect();
    assert_eq!(listed, want);
    // The participant's cookies survive its restart (replay of its records).
    let p2 = restart(&p);
    assert_eq!(
        p2.st.readdir(rdir, 3, 100).expect("readdir"),
        p.st.readdir(rdir, 3, 100).expect("readdir")
    );
    p.check_replay();
    c.check_replay();
}
