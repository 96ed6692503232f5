//! Numbered calls against real managers (in memory logs): a retried rename or create whose
//! first try was applied answers with the first result, in the same incarnation, after
//! a crash restart (from the log) and after a restart from a checkpoint that covers the
//! calls; a new call is applied again.

use crate::service_test::Cluster;
use proto::ids::{CallId, InodeId, SessionId};
use proto::msg::{
    Caller, ManagerRequest as R, ManagerResponse as A, NewNode, RemoteError, RenameFlags,
};
use std::net::SocketAddr;

const USER: Caller = Caller { uid: 1, gid: 1 };
const ROOT: InodeId = InodeId::ROOT;

fn rename(from: &str, to: &str) -> R {
    R::Rename {
        parent: ROOT,
        name: from.into(),
        new_parent: ROOT,
        new_name: to.into(),
        flags: RenameFlags::default(),
        caller: USER,
    }
}

fn create(name: &str) -> R {
    R::Create {
        parent: ROOT,
        name: name.into(),
        node: NewNode::File,
        perm: 0o644,
        umask: 0,
        caller: USER,
        session: None,
    }
}

/// The index of the manager that owns the root directory.
fn root_owner(c: &Cluster) -> usize {
    let owner = c.config.slot_owner(ROOT.slot());
    (0..2).find(|i| c.node(*i) == owner).expect("owner")
}

async fn hello(c: &Cluster, m: usize, addr: SocketAddr, session: SessionId) {
    match c.managers[m].handle(Some(addr), R::Hello { session }).await {
        Ok(A::Lease(_)) => {}
        other => panic!("Hello answered {other:?}"),
    }
}

async fn numbered(
    c: &Cluster,
    m: usize,
    addr: SocketAddr,
    call: u64,
    req: R,
) -> Result<A, RemoteError> {
    c.managers[m]
        .handle_leased_as(Some(addr), None, Some(CallId(call)), req)
        .await
        .map(|(r, _)| r)
}

#[tokio::test]
async fn a_retried_call_answers_its_first_result_also_after_a_crash() {
    let mut c = Cluster::start(100_000).await;
    let m = root_owner(&c);
    let addr: SocketAddr = "127.0.0.1:40999".parse().expect("addr");
    let session = SessionId(0x5e55);
    hello(&c, m, addr, session).await;
    c.touch(ROOT, "a").await;

    // The first try is applied; its retry (the answer was lost) gets the same answer.
    assert!(matches!(
        numbered(&c, m, addr, 1, rename("a", "b")).await,
        Ok(A::Done)
    ));
    assert!(
        matches!(
            numbered(&c, m, addr, 1, rename("a", "b")).await,
            Ok(A::Done)
        ),
        "a retried rename must not fail ENOENT"
    );
    // A new call with the same arguments is another rename: there is no "a" any more.
    assert!(matches!(
        numbered(&c, m, addr, 2, rename("a", "b")).await,
        Err(RemoteError::Errno { .. })
    ));
    // A create answers the same inode to its retry, not EEXIST.
    let first = match numbered(&c, m, addr, 3, create("c")).await {
        Ok(A::Attr(a) | A::Created { attr: a, .. }) => a.ino,
        other => panic!("create answered {other:?}"),
    };
    match numbered(&c, m, addr, 3, create("c")).await {
        Ok(A::Attr(a)) => assert_eq!(a.ino, first),
        other => panic!("retried create answered {other:?}"),
    }

    // A crash after the changes are durable: the new incarnation learns the calls from
    // the log and answers their retries (during its grace period too) without applying
    // them again.
    c.sync_all().await;
    c.restart(m, false).await;
    hello(&c, m, addr, session).await;
    assert!(
        matches!(
            numbered(&c, m, addr, 1, rename("a", "b")).await,
            Ok(A::Done)
        ),
        "a rename applied before the crash, retried after it, must not fail ENOENT"
    );
    match numbered(&c, m, addr, 3, create("c")).await {
        Ok(A::Attr(a)) => assert_eq!(a.ino, first),
        other => panic!("create retried after the crash answered {other:?}"),
    }
    // The failed call 2 was not logged: its retry runs again and fails again.
    c.managers[m].wait_grace().await;
    assert!(matches!(
        numbered(&c, m, addr, 2, rename("a", "b")).await,
        Err(RemoteError::Errno { .. })
    ));
    // Another session's call 1 is another call.
    let other: SocketAddr = "127.0.0.1:40998".parse().expect("addr");
    hello(&c, m, other, SessionId(0x07e4)).await;
    assert!(matches!(
        numbered(&c, m, other, 1, rename("b", "d")).await,
        Ok(A::Done)
    ));
    assert!(c.lookup(ROOT, "d").await.is_ok());
}

#[tokio::test]
async fn a_retry_is_answered_after_a_restart_from_a_checkpoint_that_covers_the_call() {
    let mut c = Cluster::start(100_000).await;
    let m = root_owner(&c);
    let addr: SocketAddr = "127.0.0.1:40997".parse().expect("addr");
    let session = SessionId(0x5e56);
    hello(&c, m, addr, session).await;
    c.touch(ROOT, "a").await;
    assert!(matches!(
        numbered(&c, m, addr, 1, rename("a", "b")).await,
        Ok(A::Done)
    ));
    let first = match numbered(&c, m, addr, 2, create("c")).await {
        Ok(A::Attr(a) | A::Created { attr: a, .. }) => a.ino,
        other => panic!("create answered {other:?}"),
    };
    // A clean restart: the shutdown writes a checkpoint after the calls, and recovery
    // starts from it (their records are not replayed).
    c.restart(m, true).await;
    hello(&c, m, addr, session).await;
    assert!(
        matches!(
            numbered(&c, m, addr, 1, rename("a", "b")).await,
            Ok(A::Done)
        ),
        "a rename applied before the checkpoint, retried after the restart, must not fail ENOENT"
    );
    match numbered(&c, m, addr, 2, create("c")).await {
        Ok(A::Attr(a)) => assert_eq!(a.ino, first),
        other => panic!("create retried after the restart answered {other:?}"),
    }
    // A new call is applied (and refused: "a" is gone).
    c.managers[m].wait_grace().await;
    assert!(matches!(
        numbered(&c, m, addr, 3, rename("a", "b")).await,
        Err(RemoteError::Errno { .. })
    ));
}
