//! Unit tests of the permission check run in the plan step (`MetaState::recheck`): a
//! change committed between a request's first check and its plan is seen by the decision.
//! Pure: a `MetaState` and its plans, no runtime.

use crate::access::{self, Access, Facts, Guard};
use crate::error::code::*;
use crate::plan::Plan;
use crate::state_test::{H, ROOT};
use proto::ids::{InodeId, SessionId};
use proto::msg::{Caller, Credentials, ManagerRequest, OpenAccess, SetAttrs};

const ALICE: Caller = Caller {
    uid: 1000,
    gid: 100,
};
const BOB: u32 = 1001;

fn as_uid(uid: u32) -> Access {
    Access {
        cred: Credentials {
            uid,
            gid: uid,
            groups: Vec::new(),
        },
        read_only: false,
    }
}

/// The check as the service runs it on arrival: facts gathered from the state then, and
/// the first decision on them.
fn arrive(h: &H, who: Access, req: ManagerRequest) -> (Result<ManagerRequest, Errno>, Guard) {
    let needs = access::needs(&req);
    let gathered =
        h.st.access_facts(&needs, None, &Facts::default())
            .expect("facts");
    let first = access::decide(&who, req.clone(), &gathered).map_err(|e| e.code);
    let guard = Guard {
        who,
        req,
        gathered,
        session: None,
    };
    (first, guard)
}

/// The owner (Alice) changes attributes, committed like any setattr.
fn owner_sets(h: &mut H, ino: InodeId, set: SetAttrs) {
    let st = h.st.clone();
    let ctx = h.ctx();
    let p = st.plan_setattr(&ctx, ino, &set, ALICE);
    h.run(p).expect("owner's setattr");
}

fn chmod(h: &mut H, ino: InodeId, perm: u16) {
    owner_sets(
        h,
        ino,
        SetAttrs {
            perm: Some(perm),
            ..SetAttrs::default()
        },
    );
}

#[test]
fn a_chmod_between_the_check_and_the_open_refuses_the_open() {
    let mut h = H::new();
    let f = h.touch(ROOT, "f").expect("touch");
    chmod(&mut h, f, 0o666);
    let open = ManagerRequest::Open {
        ino: f,
        session: SessionId(7),
        access: OpenAccess {
            read: true,
            write: true,
        },
    };
    let (first, guard) = arrive(&h, as_uid(BOB), open);
    assert!(first.is_ok(), "0666: Bob may open for writing");
    // The race: the owner's chmod commits after Bob's request was checked.
    chmod(&mut h, f, 0o600);
    // The decision on the facts gathered at arrival would still let the open through...
    assert!(access::decide(&guard.who, guard.req.clone(), &guard.gathered).is_ok());
    // ...the plan step's decision, on the state it plans on, refuses it.
    let e = h.st.recheck(&guard).expect_err("refused");
    assert_eq!(e.code, EACCES, "{e}");
}

#[test]
fn a_chmod_between_the_check_and_a_truncate_refuses_the_truncate() {
    let mut h = H::new();
    let f = h.touch(ROOT, "f").expect("touch");
    chmod(&mut h, f, 0o666);
    let truncate = ManagerRequest::SetAttr {
        ino: f,
        set: SetAttrs {
            size: Some(0),
            ..SetAttrs::default()
        },
        caller: Caller { uid: BOB, gid: BOB },
    };
    let (first, guard) = arrive(&h, as_uid(BOB), truncate);
    assert!(first.is_ok());
    chmod(&mut h, f, 0o644);
    assert_eq!(h.st.recheck(&guard).expect_err("refused").code, EACCES);
}

#[test]
fn set_id_bits_added_after_the_check_are_still_cleared_by_the_truncate() {
    let mut h = H::new();
    let f = h.touch(ROOT, "f").expect("touch");
    chmod(&mut h, f, 0o666);
    let truncate = ManagerRequest::SetAttr {
        ino: f,
        set: SetAttrs {
            size: Some(0),
            ..SetAttrs::default()
        },
        caller: Caller { uid: BOB, gid: BOB },
    };
    let (first, guard) = arrive(&h, as_uid(BOB), truncate);
    match first {
        Ok(ManagerRequest::SetAttr { set, .. }) => assert_eq!(set.perm, None),
        other => panic!("first check: {other:?}"),
    }
    chmod(&mut h, f, 0o4766);
    match h.st.recheck(&guard) {
        Ok(ManagerRequest::SetAttr { set, .. }) => {
            assert_eq!(set.perm, Some(0o766), "set-user-ID cleared")
        }
        other => panic!("recheck: {other:?}"),
    }
}

#[test]
fn a_directory_made_sticky_after_the_check_protects_its_entries() {
    let mut h = H::new();
    let d = h.mkdir(ROOT, "shared").expect("mkdir");
    chmod(&mut h, d, 0o777);
    h.touch(d, "alices").expect("touch");
    let unlink = ManagerRequest::Unlink {
        parent: d,
        name: "alices".into(),
        caller: Caller { uid: BOB, gid: BOB },
    };
    let (first, guard) = arrive(&h, as_uid(BOB), unlink);
    assert!(first.is_ok(), "0777 without sticky: Bob may unlink");
    chmod(&mut h, d, 0o1777);
    assert_eq!(h.st.recheck(&guard).expect_err("refused").code, EPERM);
    // And the plan the service would run after the check is never reached; without the
    // race the same request is refused on arrival too.
    let (first, _) = arrive(
        &h,
        as_uid(BOB),
        ManagerRequest::Unlink {
            parent: d,
            name: "alices".into(),
            caller: Caller { uid: BOB, gid: BOB },
        },
    );
    assert_eq!(first.expect_err("refused"), EPERM);
}

#[test]
fn an_unchanged_state_decides_as_on_arrival() {
    let mut h = H::new();
    let f = h.touch(ROOT, "f").expect("touch");
    let read = ManagerRequest::Open {
        ino: f,
        session: SessionId(7),
        access: OpenAccess {
            read: true,
            write: false,
        },
    };
    let (first, guard) = arrive(&h, as_uid(BOB), read);
    let again = h.st.recheck(&guard).map_err(|e| e.code);
    assert_eq!(format!("{first:?}"), format!("{again:?}"));
    assert!(first.is_ok());
    let st = h.st.clone();
    assert!(matches!(
        st.plan_open(f, SessionId(7)),
        Ok(Plan::Local { .. })
    ));
}

#[test]
fn inodes_of_other_managers_are_judged_on_the_gathered_facts() {
    let h = H::new();
    // An inode this state does not hold (another manager's): the gathered facts decide.
    let remote = InodeId(0x00ff_0000_0000_0042);
    let mut gathered = Facts::default();
    let mut a = h.attr(ROOT);
    a.ino = remote;
    a.perm = 0o700;
    a.uid = ALICE.uid;
    gathered.inodes.insert(remote, a);
    let guard = Guard {
        who: as_uid(BOB),
        req: ManagerRequest::ReadDir {
            ino: remote,
            offset: 0,
            max: 10,
        },
        gathered,
        session: None,
    };
    assert_eq!(h.st.recheck(&guard).expect_err("refused").code, EACCES);
}
