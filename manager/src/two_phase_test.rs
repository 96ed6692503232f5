//! The two-phase protocol on the pure core: a coordinator and a participant `MetaState`
//! driven by `txn::coord::Coordinator` through the planning steps of `plan::twopc`, with a
//! crash after every durable step (begin, each prepare, the decision, each finish, the
//! forget) on either side, then recovery as the service does it (the coordinator resumes
//! its book, the participant asks about what it still holds prepared). After recovery
//! every operation is either fully applied or not at all, and nothing stays locked.

use crate::error::code::*;
use crate::plan::{Ctx, Plan, Prepare, TxPlan, TxStart};
use crate::record::TxBegin;
use crate::state::MetaState;
use crate::state_test::{name_on, H, ME, OTHER, ROOT};
use crate::txn::coord::{AbortCause, Cmd, Coordinator, Event};
use crate::txn::locks::records_conflict;
use crate::Errno;
use proto::ids::{InodeId, Lsn, NodeId, TxId, SLOT_COUNT};
use proto::msg::{Attr, Caller, FileKind, InodeWrite, NewNode, RenameFlags, Timestamp};
use std::collections::BTreeMap;

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

fn now(h: &mut H) -> Timestamp {
    h.clock += 1;
    Timestamp {
        secs: h.clock,
        nanos: 0,
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

/// Plans on the coordinator: `Local` plans are committed at once, `Tx` plans begun.
fn plan_on<F>(c: &mut H, f: F) -> Result<Option<TxBegin>, crate::error::code::Errno>
where
    F: Fn(&MetaState, &Ctx) -> Result<Plan, Errno>,
{
    let (st, owners) = (c.st.clone(), c.owners.clone());
    let ctx = c.ctx_with(&owners);
    match f(&st, &ctx).map_err(|e| e.code)? {
        Plan::Local { records, .. } => {
            c.commit(records);
            Ok(None)
        }
        Plan::Tx(plan) => Ok(Some(begin(c, &plan).expect("no lock conflict"))),
    }
}

fn begin(c: &mut H, plan: &TxPlan) -> Result<TxBegin, TxId> {
    let tx = TxId {
        coordinator: ME,
        seq: c.st.next_tx(),
    };
    match c.st.plan_begin(tx, plan) {
        TxStart::Begin(b) => {
            c.commit(vec![crate::record::Record::TxBegin(b.clone())]);
            Ok(b)
        }
        TxStart::Busy(other) => Err(other),
    }
}

/// Runs commands; each one is a durable step and costs one unit of `budget`. Returns
/// false when the budget ran out (the coordinator crashed there).
fn exec(
    c: &mut H,
    p: &mut H,
    begin: &TxBegin,
    drv: &mut Coordinator,
    cmds: Vec<Cmd>,
    budget: &mut usize,
) -> bool {
    let tx = begin.tx;
    let mut queue: std::collections::VecDeque<Cmd> = cmds.into();
    for _ in 0..100 {
        let Some(cmd) = queue.pop_front() else {
            return true;
        };
        if *budget == 0 {
            return false;
        }
        *budget -= 1;
        let ev = match cmd {
            Cmd::Prepare { node, ops } => {
                assert_eq!(node, OTHER);
                let t = now(p);
                match p.st.plan_prepare(t, tx, &ops) {
                    Ok(Prepare::Again(results)) => Some(Event::Prepared { node, results }),
                    Ok(Prepare::Log(recs, results)) => {
                        p.commit(recs);
                        Some(Event::Prepared { node, results })
                    }
                    Ok(Prepare::Busy(_)) => Some(Event::Busy { node }),
                    Err(errno) => Some(Event::Refused { node, errno }),
                }
            }
            Cmd::Decide { commit, result } => {
                let t = now(c);
                let recs = c.st.plan_decide(t, tx, commit, result.as_ref());
                c.commit(recs);
                Some(Event::Logged)
            }
            Cmd::Finish { node, commit } => {
                assert_eq!(node, OTHER);
                let t = now(p);
                let (recs, applied) = p.st.plan_resolve(t, tx, commit);
                p.commit(recs);
                Some(Event::Finished { node, applied })
            }
            Cmd::Forget => {
                let recs = c.st.plan_forget(tx);
                c.commit(recs);
                None
            }
        };
        if let Some(ev) = ev {
            queue.extend(drv.on_event(ev));
        }
    }
    panic!("driver did not settle within 100 steps")
}

/// A whole transaction without crash: Ok(result) committed, Err(errno) refused.
fn run(c: &mut H, p: &mut H, begin: &TxBegin) -> Result<Option<Attr>, crate::error::code::Errno> {
    let (mut drv, cmds) = Coordinator::start(begin);
    assert!(exec(c, p, begin, &mut drv, cmds, &mut usize::MAX.clone()));
    assert!(drv.is_done());
    match (drv.decision(), drv.abort_cause()) {
        (Some(true), _) => Ok(drv.result()),
        (_, Some(AbortCause::Refused(e))) => Err(e.code),
        (_, Some(AbortCause::Busy(_))) => Err(EAGAIN),
        other => panic!("unexpected end {other:?}"),
    }
}

fn op<F>(c: &mut H, p: &mut H, f: F) -> Result<Option<Attr>, crate::error::code::Errno>
where
    F: Fn(&MetaState, &Ctx) -> Result<Plan, Errno>,
{
    match plan_on(c, f)? {
        None => Ok(None),
        Some(b) => run(c, p, &b),
    }
}

/// Recovery as the service does it: the coordinator resumes every transaction in its
/// book; then the participant resolves what it still holds prepared by asking the
/// coordinator (unknown there = aborted).
fn recover(c: &mut H, p: &mut H) {
    let book: Vec<(TxBegin, Option<bool>)> =
        c.st.book()
            .coordinated
            .values()
            .map(|x| (x.begin.clone(), x.decided))
            .collect();
    for (b, decided) in book {
        let (mut drv, cmds) = Coordinator::resume(&b, decided);
        assert!(exec(c, p, &b, &mut drv, cmds, &mut usize::MAX.clone()));
        assert!(drv.is_done(), "resumed transaction finished");
    }
    let prepared: Vec<TxId> = p.st.book().prepared.keys().copied().collect();
    for tx in prepared {
        let commit = match c.st.book().outcome(tx) {
            Some(Some(d)) => d,
            Some(None) => panic!("undecided after the coordinator resumed"),
            None => false,
        };
        let t = now(p);
        let (recs, _) = p.st.plan_resolve(t, tx, commit);
        p.commit(recs);
    }
}

/// What a user can observe of a manager: inodes with kind, mode, owner, size, link count,
/// parent and entries (no times, versions or cookies).
type View = BTreeMap<
    InodeId,
    (
        FileKind,
        u16,
        u32,
        u64,
        Option<InodeId>,
        Vec<(String, InodeId)>,
    ),
>;

fn view(h: &H) -> View {
    h.st.inodes
        .iter()
        .map(|(ino, i)| {
            (
                *ino,
                (
                    i.attr.kind,
                    i.attr.perm,
                    i.attr.nlink,
                    i.attr.size,
                    i.parent,
                    i.entries
                        .iter()
                        .map(|(n, e, _)| (n.to_string(), e))
                        .collect(),
                ),
            )
        })
        .collect()
}

/// A planning step of the coordinator.
type PlanFn = Box<dyn Fn(&MetaState, &Ctx) -> Result<Plan, Errno>>;

/// Five cross-manager operations, each prepared by the ones before it.
fn scenario(step: usize) -> (H, H, PlanFn) {
    let (mut c, mut p) = pair();
    let rname = name_on(&c, ROOT, OTHER, "r");
    let remote_mkdir = {
        let rname = rname.clone();
        move |st: &MetaState, ctx: &Ctx| {
            st.plan_create(ctx, ROOT, &rname, &NewNode::Dir, 0o777, 0o022, USER, None)
        }
    };
    if step == 0 {
        return (c, p, Box::new(remote_mkdir));
    }
    let rdir = op(&mut c, &mut p, remote_mkdir)
        .expect("mkdir")
        .expect("attr")
        .ino;
    c.touch(ROOT, "f").expect("touch");
    let move_in = move |st: &MetaState, ctx: &Ctx| {
        st.plan_rename(ctx, ROOT, "f", rdir, "g", RenameFlags::default(), None)
    };
    if step == 1 {
        return (c, p, Box::new(move_in));
    }
    op(&mut c, &mut p, move_in).expect("rename");
    // A file that lives on the participant, linked into the coordinator's root.
    let pname = name_on(&p, rdir, OTHER, "pf");
    let (st, owners) = (p.st.clone(), p.owners.clone());
    let ctx = p.ctx_with(&owners);
    let Ok(Plan::Local { records, .. }) =
        st.plan_create(&ctx, rdir, &pname, &NewNode::File, 0o644, 0, USER, None)
    else {
        panic!("local create on the participant")
    };
    p.commit(records);
    let g = p.lookup(rdir, &pname).expect("created");
    let link = move |st: &MetaState, ctx: &Ctx| st.plan_link(ctx, g, ROOT, "g-link");
    if step == 2 {
        return (c, p, Box::new(link));
    }
    op(&mut c, &mut p, link).expect("link");
    let ldir = c.mkdir(ROOT, &name_on(&c, ROOT, ME, "l")).expect("mkdir");
    let lname = name_on(&c, ROOT, ME, "l");
    let move_dir = move |st: &MetaState, ctx: &Ctx| {
        st.plan_rename(ctx, ROOT, &lname, rdir, "sub", RenameFlags::default(), None)
    };
    if step == 3 {
        return (c, p, Box::new(move_dir));
    }
    op(&mut c, &mut p, move_dir).expect("move dir");
    assert_eq!(c.st.inode(ldir).expect("ldir").parent, Some(rdir));
    let unlink = move |st: &MetaState, ctx: &Ctx| st.plan_unlink(ctx, ROOT, "g-link");
    if step == 4 {
        return (c, p, Box::new(unlink));
    }
    panic!("no step {step}")
}

#[test]
fn every_crash_point_ends_all_or_nothing() {
    for step in 0..5 {
        // Reference: the operation without a crash.
        let (mut c, mut p, f) = scenario(step);
        let before = (view(&c), view(&p));
        let b = plan_on(&mut c, &f)
            .expect("plan")
            .unwrap_or_else(|| panic!("step {step} is a transaction"));
        let (mut drv, cmds) = Coordinator::start(&b);
        let mut steps = usize::MAX;
        assert!(exec(&mut c, &mut p, &b, &mut drv, cmds, &mut steps));
        let total = usize::MAX - steps;
        assert_eq!(drv.decision(), Some(true), "step {step} commits");
        let after = (view(&c), view(&p));
        assert_ne!(before, after, "step {step} changes something");
        // A crash after each durable step, of the coordinator alone or of both managers.
        for crash_at in 0..=total {
            for both in [false, true] {
                let (mut c, mut p, f) = scenario(step);
                let b = plan_on(&mut c, &f).expect("plan").expect("tx");
                let (mut drv, cmds) = Coordinator::start(&b);
                let mut budget = crash_at;
                let finished = exec(&mut c, &mut p, &b, &mut drv, cmds, &mut budget);
                assert_eq!(finished, crash_at == total, "step {step} crash {crash_at}");
                let mut c2 = restart(&c);
                let mut p2 = if both { restart(&p) } else { p };
                recover(&mut c2, &mut p2);
                let got = (view(&c2), view(&p2));
                assert!(
                    got == before || got == after,
                    "step {step}, crash after {crash_at} of {total} (both={both}): half applied"
                );
                // Whatever was decided durably holds: a logged commit ends applied.
                let committed = c.log.iter().any(|l| {
                    matches!(l.rec, crate::record::Record::TxDecided { commit: true, .. })
                        && l.lsn > before_lsn(&b, &c)
                });
                assert_eq!(got == after, committed, "step {step} crash {crash_at}");
                assert!(c2.st.book().is_empty(), "coordinator forgot everything");
                assert!(p2.st.book().is_empty(), "participant forgot everything");
                c2.check_replay();
                p2.check_replay();
            }
        }
    }
}

/// The LSN of `b`'s begin record in `c`'s log.
fn before_lsn(b: &TxBegin, c: &H) -> Lsn {
    c.log
        .iter()
        .find(|l| matches!(&l.rec, crate::record::Record::TxBegin(x) if x.tx == b.tx))
        .map(|l| l.lsn)
        .expect("begin logged")
}

#[test]
fn a_refusal_at_prepare_aborts_and_changes_nothing_anywhere() {
    let (mut c, mut p, _) = scenario(1);
    let rdir = c
        .lookup(ROOT, &name_on(&c, ROOT, OTHER, "r"))
        .expect("rdir");
    // Put an entry into the remote directory, then rmdir it from the coordinator.
    {
        let (st, owners) = (p.st.clone(), p.owners.clone());
        let ctx = p.ctx_with(&owners);
        let Ok(Plan::Local { records, .. }) =
            st.plan_create(&ctx, rdir, "x", &NewNode::File, 0o644, 0, USER, None)
        else {
            panic!("local create on the participant")
        };
        p.commit(records);
    }
    let before = (view(&c), view(&p));
    let r = op(&mut c, &mut p, |st, ctx| {
        st.plan_rmdir(ctx, ROOT, &name_on_state(st, ctx))
    });
    assert_eq!(r, Err(ENOTEMPTY));
    assert_eq!((view(&c), view(&p)), before);
    assert!(c.st.book().is_empty() && p.st.book().is_empty());
    c.check_replay();
    p.check_replay();
}

fn name_on_state(st: &MetaState, _ctx: &Ctx) -> String {
    st.inode(ROOT)
        .expect("root")
        .entries
        .iter()
        .find(|(n, _, k)| *k == FileKind::Dir && n.starts_with('r'))
        .map(|(n, _, _)| n.to_string())
        .expect("the remote dir")
}

#[test]
fn intent_locks_hold_off_conflicting_work_until_the_decision() {
    let (mut c, mut p, f) = scenario(1);
    let rdir = c
        .lookup(ROOT, &name_on(&c, ROOT, OTHER, "r"))
        .expect("rdir");
    let b = plan_on(&mut c, &f).expect("plan").expect("tx");
    let (mut drv, cmds) = Coordinator::start(&b);
    // Prepare only (one step): the participant locked rdir/"g", the coordinator ROOT/"f".
    assert!(!exec(&mut c, &mut p, &b, &mut drv, cmds, &mut 1));
    assert_eq!(p.st.book().prepared.len(), 1);
    // A local create of the same name on the participant conflicts...
    let (st, owners) = (p.st.clone(), p.owners.clone());
    let ctx = p.ctx_with(&owners);
    let Ok(Plan::Local { records, .. }) =
        st.plan_create(&ctx, rdir, "g", &NewNode::File, 0o644, 0, USER, None)
    else {
        panic!("plans (the name is still free)")
    };
    assert_eq!(records_conflict(&p.st, &records), Some(b.tx));
    // ...another name in the same directory does not, nor do writes to the locked file.
    let Ok(Plan::Local { records, .. }) =
        st.plan_create(&ctx, rdir, "other", &NewNode::File, 0o644, 0, USER, None)
    else {
        panic!("plans")
    };
    assert_eq!(records_conflict(&p.st, &records), None);
    // The coordinator's own unlink of the source waits too.
    let (cst, cowners) = (c.st.clone(), c.owners.clone());
    let cctx = c.ctx_with(&cowners);
    let Ok(Plan::Local { records, .. }) = cst.plan_unlink(&cctx, ROOT, "f") else {
        panic!("local unlink")
    };
    assert_eq!(records_conflict(&c.st, &records), Some(b.tx));
    // A second transaction on the same names: the coordinator waits (Busy at begin)...
    let plan2 = match f(&c.st, &cctx) {
        Ok(Plan::Tx(t)) => t,
        other => panic!("{other:?}"),
    };
    assert_eq!(begin(&mut c, &plan2), Err(b.tx));
    // ...and a participant refuses a prepare that needs a held lock, without waiting.
    let other_tx = TxId {
        coordinator: NodeId(9),
        seq: 1,
    };
    let t = now(&mut p);
    assert_eq!(
        p.st.plan_prepare(t, other_tx, &b.parts[0].1),
        Ok(Prepare::Busy(b.tx))
    );
    // After the decision and the finish, the locks are gone.
    let cmds = vec![Cmd::Decide {
        commit: true,
        result: drv.result(),
    }];
    assert!(exec(
        &mut c,
        &mut p,
        &b,
        &mut drv,
        cmds,
        &mut usize::MAX.clone()
    ));
    assert!(c.st.book().is_empty() && p.st.book().is_empty());
    let (st, owners) = (p.st.clone(), p.owners.clone());
    let ctx = p.ctx_with(&owners);
    let Ok(Plan::Local { records, .. }) =
        st.plan_create(&ctx, rdir, "h", &NewNode::File, 0o644, 0, USER, None)
    else {
        panic!("plans")
    };
    assert_eq!(records_conflict(&p.st, &records), None);
}

#[test]
fn a_prepare_that_arrives_after_the_abort_is_resolved_by_asking() {
    let (mut c, mut p, f) = scenario(0);
    let before = view(&p);
    let b = plan_on(&mut c, &f).expect("plan").expect("tx");
    let (mut drv, _) = Coordinator::start(&b);
    // The prepare is lost in the network: the coordinator aborts, the abort reaches the
    // participant first (nothing to do), the coordinator forgets.
    let cmds = drv.on_event(Event::Unreachable { node: OTHER });
    assert!(exec(
        &mut c,
        &mut p,
        &b,
        &mut drv,
        cmds,
        &mut usize::MAX.clone()
    ));
    assert!(c.st.book().is_empty());
    // Then the delayed prepare arrives and is logged.
    let t = now(&mut p);
    let Ok(Prepare::Log(recs, _)) = p.st.plan_prepare(t, b.tx, &b.parts[0].1) else {
        panic!("prepares")
    };
    p.commit(recs);
    assert_eq!(p.st.book().prepared.len(), 1);
    // The participant's watch asks the coordinator: unknown there means aborted.
    assert_eq!(c.st.book().outcome(b.tx), None);
    recover(&mut c, &mut p);
    assert!(p.st.book().is_empty());
    assert_eq!(view(&p), before, "nothing created");
    assert_eq!(c.lookup(ROOT, &name_on(&c, ROOT, OTHER, "r")), None);
}

#[test]
fn a_prepared_create_reserves_its_inode_number() {
    let (mut c, mut p, f) = scenario(0);
    let b = plan_on(&mut c, &f).expect("plan").expect("tx");
    let t = now(&mut p);
    let Ok(Prepare::Log(recs, results)) = p.st.plan_prepare(t, b.tx, &b.parts[0].1) else {
        panic!("prepares")
    };
    p.commit(recs);
    let reserved = results[0].clone().expect("attr").ino;
    // A local create in the same slot on the participant gets another number.
    let mut p2 = restart(&p);
    assert!(p2.st.next_seq(reserved.slot()) > reserved.seq());
    let t = now(&mut p2);
    let (recs, _) = p2.st.plan_resolve(t, b.tx, true);
    p2.commit(recs);
    assert_eq!(p2.attr(reserved).kind, FileKind::Dir);
    p2.check_replay();
}

/// A commit of the linked file lands between the prepare and the decision of a
/// cross-manager link (writes are not held off by the intent locks) and takes the version
/// number the prepare's result shows. The link's answer (the coordinator's
/// `applied_result`) is the attributes as the participant applied the link: equal to a
/// fresh GetAttr, with the commit's size, not the prepare's.
#[test]
fn a_cross_manager_link_answers_the_attributes_as_applied() {
    let (mut c, mut p, link) = scenario(2);
    let b = plan_on(&mut c, &link)
        .expect("plan")
        .expect("a transaction");
    let (mut drv, cmds) = Coordinator::start(&b);
    assert!(
        !exec(&mut c, &mut p, &b, &mut drv, cmds, &mut 1),
        "prepared only"
    );
    let prepared = drv.result().expect("the prepare's result");
    let g = prepared.ino;
    assert_eq!(prepared.nlink, 2);
    let t = now(&mut p);
    let (st, owners) = (p.st.clone(), p.owners.clone());
    let ctx = p.ctx_with(&owners);
    let write = InodeWrite {
        sums: Vec::new(),
        ino: g,
        extents: Vec::new(),
        size: 4096,
        mtime: t,
    };
    let Ok(Plan::Local { records, .. }) = st.plan_commit_writes(&ctx, &[write]) else {
        panic!("a local commit on the participant")
    };
    assert_eq!(
        records_conflict(&p.st, &records),
        None,
        "writes are not held off"
    );
    p.commit(records);
    assert_eq!(
        p.attr(g).version,
        prepared.version,
        "the commit took that version"
    );
    let cmds = vec![Cmd::Decide {
        commit: true,
        result: drv.result(),
    }];
    assert!(exec(
        &mut c,
        &mut p,
        &b,
        &mut drv,
        cmds,
        &mut usize::MAX.clone()
    ));
    assert!(drv.is_done());
    let answer = drv
        .applied_result()
        .expect("the participant reported what it applied");
    let fresh = p.attr(g);
    assert_eq!(answer, fresh, "the link answers what a GetAttr answers");
    assert_eq!((answer.nlink, answer.size), (2, 4096));
    assert!(answer.version > prepared.version);
    assert_ne!(prepared, fresh, "the prepare's attributes miss the commit");
    p.check_replay();
}
