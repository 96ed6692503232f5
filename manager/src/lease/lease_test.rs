//! Service-level tests of volume leases and callbacks, with `MemLog`, in-process peers and
//! a fake callback sender: mutations wait for holders' answers, an unanswered holder delays
//! them by at most its lease and is then lost, writers are flushed first (and their
//! CommitWrites goes through while the flushing operation waits), grace after a restart.

use crate::error::CallbackError;
use crate::service::{CallbackSender, Service};
use crate::service_test::Cluster;
use proto::ids::{InodeId, SessionId};
use proto::msg::{
    Attr, Caller, ClientCallback, InodeWrite, ManagerRequest as R, ManagerResponse as A, NewNode,
    RemoteError, SetAttrs, Timestamp,
};
use proto::transport::BoxFuture;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

const USER: Caller = Caller { uid: 1, gid: 1 };
const ROOT: InodeId = InodeId::ROOT;
/// Safety bound on waits for events that must happen (not a timing assertion).
const BOUND: Duration = Duration::from_secs(20);

/// How a fake client answers callbacks.
#[derive(Clone)]
pub(crate) enum Behaviour {
    Ack,
    /// Never answers (a stopped client).
    Silent,
    /// Answers once a permit is available.
    Gated(Arc<tokio::sync::Semaphore>),
    /// Answers a Flush by committing `size` as the file's new size first (as the real
    /// client's write-back does), from its own address.
    CommitOnFlush(Weak<Service>, u64),
    /// The same, with a commit that must be durable first (the real client's Flush waits
    /// for the inode's commit lock, which an fsync's `sync` commit may hold).
    SyncCommitOnFlush(Weak<Service>, u64),
}

/// A fake callback channel: records every callback sent, answers per address.
pub(crate) struct FakeCallbacks {
    sent: Mutex<Vec<(SocketAddr, ClientCallback)>>,
    count: tokio::sync::watch::Sender<usize>,
    behaviour: Mutex<HashMap<SocketAddr, Behaviour>>,
}

impl FakeCallbacks {
    pub fn new() -> Arc<FakeCallbacks> {
        Arc::new(FakeCallbacks {
            sent: Mutex::new(Vec::new()),
            count: tokio::sync::watch::Sender::new(0),
            behaviour: Mutex::new(HashMap::new()),
        })
    }

    pub fn set(&self, to: SocketAddr, b: Behaviour) {
        self.behaviour
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(to, b);
    }

    pub fn sent(&self) -> Vec<(SocketAddr, ClientCallback)> {
        self.sent.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Waits until at least `n` callbacks were sent.
    pub async fn wait_sent(&self, n: usize) {
        let mut rx = self.count.subscribe();
        tokio::time::timeout(BOUND, rx.wait_for(|c| *c >= n))
            .await
            .expect("callback sent in time")
            .expect("sender alive");
    }
}

impl CallbackSender for FakeCallbacks {
    fn send(
        &self,
        to: SocketAddr,
        cb: ClientCallback,
        timeout: Duration,
    ) -> BoxFuture<'_, Result<(), CallbackError>> {
        Box::pin(async move {
            self.sent
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push((to, cb.clone()));
            self.count.send_modify(|c| *c += 1);
            let b = self
                .behaviour
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(&to)
                .cloned()
                .unwrap_or(Behaviour::Ack);
            let sync = matches!(b, Behaviour::SyncCommitOnFlush(..));
            match b {
                Behaviour::Ack => Ok(()),
                Behaviour::Silent => {
                    tokio::time::sleep(timeout).await;
                    Err(CallbackError::NoAnswer {
                        client: to,
                        within: timeout,
                    })
                }
                Behaviour::Gated(sem) => match tokio::time::timeout(timeout, sem.acquire()).await {
                    Ok(Ok(permit)) => {
                        permit.forget();
                        Ok(())
                    }
                    _ => Err(CallbackError::NoAnswer {
                        client: to,
                        within: timeout,
                    }),
                },
                Behaviour::CommitOnFlush(svc, size) | Behaviour::SyncCommitOnFlush(svc, size) => {
                    if let (ClientCallback::Flush { ino, .. }, Some(svc)) = (&cb, svc.upgrade()) {
                        let w = InodeWrite {
                            sums: Vec::new(),
                            ino: *ino,
                            extents: Vec::new(),
                            size,
                            mtime: Timestamp::now(),
                        };
                        // The client goes on committing when the manager stops waiting
                        // for the answer (the callback's own timeout).
                        let commit = tokio::spawn(async move {
                            svc.handle(
                                Some(to),
                                R::CommitWrites {
                                    writes: vec![w],
                                    sync,
                                    standing: None,
                                },
                            )
                            .await
                        });
                        match tokio::time::timeout(timeout, commit).await {
                            Ok(Ok(r)) => {
                                r.map_err(|error| CallbackError::Refused { client: to, error })?;
                            }
                            _ => {
                                return Err(CallbackError::NoAnswer {
                                    client: to,
                                    within: timeout,
                                })
                            }
                        }
                    }
                    Ok(())
                }
            }
        })
    }
}

fn addr(n: u8) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, n], 7000))
}

/// A lease long enough that no session of a test runs out between two steps.
const LONG: u64 = 5000;

/// The manager of the root directory, and the cluster.
async fn setup(lease_ms: u64) -> (Cluster, Arc<Service>) {
    let c = Cluster::start_lease(1_000_000, lease_ms).await;
    let owner = c.config.slot_owner(ROOT.slot());
    let m = c
        .managers
        .iter()
        .find(|m| m.node() == owner)
        .expect("root owner")
        .clone();
    (c, m)
}

/// The manager of the cluster that is not `m`.
fn other_manager(c: &Cluster, m: &Service) -> Arc<Service> {
    c.managers
        .iter()
        .find(|s| s.node() != m.node())
        .expect("a second manager")
        .clone()
}

async fn hello(m: &Service, n: u8) {
    match m
        .handle(
            Some(addr(n)),
            R::Hello {
                session: SessionId(n as u64),
            },
        )
        .await
    {
        Ok(A::Lease(g)) => assert!(!g.lost),
        other => panic!("hello answered {other:?}"),
    }
}

async fn call(m: &Service, n: u8, req: R) -> Result<A, RemoteError> {
    m.handle(Some(addr(n)), req).await
}

fn attr(r: Result<A, RemoteError>) -> Attr {
    match r {
        Ok(A::Attr(a) | A::Created { attr: a, .. }) => a,
        other => panic!("expected attributes, got {other:?}"),
    }
}

/// The holders of `ino` as bare numbers (the tests name sessions 1, 2, 3).
fn holders(m: &Service, ino: InodeId) -> (Vec<u64>, Option<u64>) {
    let (readers, writer) = m.lease_holders(ino);
    (readers.iter().map(|s| s.0).collect(), writer.map(|s| s.0))
}

fn create(name: &str, session: Option<u64>) -> R {
    R::Create {
        parent: ROOT,
        name: name.into(),
        node: NewNode::File,
        perm: 0o644,
        umask: 0,
        caller: USER,
        session: session.map(SessionId),
    }
}

fn chmod(ino: InodeId, perm: u16) -> R {
    R::SetAttr {
        ino,
        set: SetAttrs {
            perm: Some(perm),
            ..SetAttrs::default()
        },
        caller: USER,
    }
}

/// Renews session `n` (from its own address); whether the answer says it was lost.
async fn renew_lost(m: &Service, n: u8) -> bool {
    let r = call(
        m,
        n,
        R::Renew {
            session: SessionId(n as u64),
        },
    )
    .await;
    match r {
        Ok(A::Lease(g)) => g.lost,
        other => panic!("renew answered {other:?}"),
    }
}

#[tokio::test]
async fn a_mutation_waits_for_the_holders_answers() {
    let (c, m) = setup(LONG).await;
    hello(&m, 1).await;
    hello(&m, 2).await;
    let x = attr(call(&m, 2, create("f", None)).await);
    attr(
        call(
            &m,
            1,
            R::Lookup {
                parent: ROOT,
                name: "f".into(),
            },
        )
        .await,
    );
    assert_eq!(holders(&m, x.ino).0, vec![1, 2]);
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    c.callbacks.set(addr(1), Behaviour::Gated(gate.clone()));
    let m2 = m.clone();
    let task = tokio::spawn(async move { call(&m2, 2, chmod(x.ino, 0o600)).await });
    c.callbacks.wait_sent(1).await;
    assert_eq!(
        c.callbacks.sent(),
        vec![(
            addr(1),
            ClientCallback::Invalidate {
                inodes: vec![x.ino],
                entries: vec![]
            }
        )]
    );
    // The change is applied, but not answered before the holder answered.
    assert!(!task.is_finished());
    gate.add_permits(1);
    let after = attr(task.await.expect("task"));
    assert_eq!(after.perm, 0o600);
    // Holder 1 dropped x; it still caches the root directory: unlink invalidates that.
    assert_eq!(holders(&m, x.ino).0, vec![2]);
    c.callbacks.set(addr(1), Behaviour::Ack);
    call(
        &m,
        2,
        R::Unlink {
            parent: ROOT,
            name: "f".into(),
            caller: USER,
        },
    )
    .await
    .expect("unlink");
    assert_eq!(
        c.callbacks.sent()[1],
        (
            addr(1),
            ClientCallback::Invalidate {
                inodes: vec![ROOT],
                entries: vec![(ROOT, "f".into())]
            }
        )
    );
    let s = m.lease_stats();
    assert_eq!((s.invalidates_sent, s.callbacks_acked), (2, 2));
    assert_eq!(s.callbacks_timed_out, 0);
    assert_eq!(s.sessions, 2);
}

#[tokio::test]
async fn an_unanswered_holder_delays_a_mutation_by_its_lease_and_is_lost() {
    let (c, m) = setup(1000).await;
    hello(&m, 1).await;
    hello(&m, 2).await;
    let x = attr(call(&m, 2, create("g", None)).await);
    c.callbacks.set(addr(1), Behaviour::Silent);
    let t0 = Instant::now();
    attr(call(&m, 1, R::GetAttr { ino: x.ino }).await);
    let after = attr(call(&m, 2, chmod(x.ino, 0o600)).await);
    assert_eq!(after.perm, 0o600);
    // Holder 1's lease (1 s from its last request, after t0) plus the 200 ms margin.
    assert!(t0.elapsed() >= Duration::from_millis(1200));
    assert_eq!(c.callbacks.sent().len(), 1);
    assert_eq!(m.lease_stats().callbacks_timed_out, 1);
    assert_eq!(m.lease_stats().lost_sessions, 1);
    // The lost client is refused until it renews, told `lost` once, then fine.
    assert!(matches!(
        call(&m, 1, R::GetAttr { ino: x.ino }).await,
        Err(RemoteError::LeaseExpired(_))
    ));
    assert!(renew_lost(&m, 1).await);
    assert!(!renew_lost(&m, 1).await);
    assert_eq!(
        attr(call(&m, 1, R::GetAttr { ino: x.ino }).await).perm,
        0o600
    );
    assert_eq!(m.lease_stats().renewals, 2);
}

#[tokio::test]
async fn a_read_flushes_the_writer_whose_commit_goes_through() {
    let (c, m) = setup(LONG).await;
    hello(&m, 1).await;
    hello(&m, 2).await;
    // Create with a session: the creator holds the write lease, without callbacks.
    let x = attr(call(&m, 1, create("w", Some(1))).await);
    assert_eq!(holders(&m, x.ino), (vec![1], Some(1)));
    c.callbacks
        .set(addr(1), Behaviour::CommitOnFlush(Arc::downgrade(&m), 4242));
    // The reader sees the writer's buffered data, committed by the Flush.
    let seen = attr(call(&m, 2, R::GetAttr { ino: x.ino }).await);
    assert_eq!(seen.size, 4242);
    assert_eq!(
        c.callbacks.sent(),
        vec![(
            addr(1),
            ClientCallback::Flush {
                ino: x.ino,
                drop_cache: false
            }
        )]
    );
    // The writer keeps its cache as a reader.
    assert_eq!(holders(&m, x.ino), (vec![1, 2], None));
    assert_eq!(m.lease_stats().flushes_sent, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flush_late_through_this_managers_own_log_stall_is_waited_for() {
    // The writer's answer to a Flush waits for its commit, which waits for this manager's
    // log, stalled past the callback's deadline and the writer's lease: the lateness is
    // the manager's, so the writer must not be given up on (its buffered writes would be
    // dropped) and the reader must see them.
    let lease = Duration::from_millis(1000);
    let (c, m) = setup(lease.as_millis() as u64).await;
    hello(&m, 1).await;
    hello(&m, 2).await;
    let x = attr(call(&m, 1, create("w", Some(1))).await);
    assert_eq!(holders(&m, x.ino), (vec![1], Some(1)));
    call(&m, 1, R::Sync).await.expect("sync");
    let owner = c.owner_index(x.ino);
    let stall = lease + Duration::from_millis(300);
    c.logs[owner].slow_appends(stall);
    c.callbacks.set(
        addr(1),
        Behaviour::SyncCommitOnFlush(Arc::downgrade(&m), 4242),
    );
    let t = Instant::now();
    let seen = attr(call(&m, 2, R::GetAttr { ino: x.ino }).await);
    assert!(
        t.elapsed() >= stall,
        "the Flush's commit went through the stall"
    );
    assert_eq!(seen.size, 4242, "the reader sees the writer's flushed size");
    let s = m.lease_stats();
    assert!(s.callbacks_extended > 0, "{s:?}");
    assert_eq!(
        s.callbacks_timed_out, 0,
        "the writer was given up on: {s:?}"
    );
    // One Flush was sent and kept waiting, not sent again at each extension.
    let flushes = c
        .callbacks
        .sent()
        .into_iter()
        .filter(|(_, cb)| matches!(cb, ClientCallback::Flush { .. }))
        .count();
    assert_eq!(flushes, 1, "{:?}", c.callbacks.sent());
    // The writer is not lost: it renews and keeps its cache as a reader.
    c.logs[owner].slow_appends(Duration::ZERO);
    assert!(!renew_lost(&m, 1).await);
    assert_eq!(holders(&m, x.ino), (vec![1, 2], None));
}

#[tokio::test]
async fn a_mutation_flushes_the_writer_first() {
    let (c, m) = setup(LONG).await;
    hello(&m, 1).await;
    hello(&m, 2).await;
    let x = attr(call(&m, 1, create("t", Some(1))).await);
    c.callbacks
        .set(addr(1), Behaviour::CommitOnFlush(Arc::downgrade(&m), 100));
    let truncate = R::SetAttr {
        ino: x.ino,
        set: SetAttrs {
            size: Some(0),
            ..SetAttrs::default()
        },
        caller: USER,
    };
    // The writer's earlier write lands before the truncate, not after it.
    assert_eq!(attr(call(&m, 2, truncate).await).size, 0);
    assert_eq!(attr(call(&m, 2, R::GetAttr { ino: x.ino }).await).size, 0);
    assert_eq!(
        c.callbacks.sent(),
        vec![(
            addr(1),
            ClientCallback::Flush {
                ino: x.ino,
                drop_cache: true
            }
        )]
    );
    assert_eq!(holders(&m, x.ino), (vec![2], None));
}

#[tokio::test]
async fn acquire_write_revokes_readers_and_the_previous_writer() {
    let (c, m) = setup(LONG).await;
    for n in 1..=3 {
        hello(&m, n).await;
    }
    // 3 creates (and so caches) the file, 1 reads it.
    let x = attr(call(&m, 3, create("a", None)).await);
    attr(call(&m, 1, R::GetAttr { ino: x.ino }).await);
    assert_eq!(holders(&m, x.ino), (vec![1, 3], None));
    let acquire = |n: u8| R::AcquireWrite {
        ino: x.ino,
        session: SessionId(n as u64),
        reclaim: false,
    };
    assert!(matches!(call(&m, 2, acquire(2)).await, Ok(A::Done)));
    assert_eq!(holders(&m, x.ino), (vec![2], Some(2)));
    assert!(matches!(call(&m, 3, acquire(3)).await, Ok(A::Done)));
    assert_eq!(holders(&m, x.ino), (vec![3], Some(3)));
    let sent: Vec<(SocketAddr, ClientCallback)> = c.callbacks.sent();
    assert_eq!(
        sent,
        vec![
            (
                addr(1),
                ClientCallback::Invalidate {
                    inodes: vec![x.ino],
                    entries: vec![]
                }
            ),
            (
                addr(3),
                ClientCallback::Invalidate {
                    inodes: vec![x.ino],
                    entries: vec![]
                }
            ),
            (
                addr(2),
                ClientCallback::Flush {
                    ino: x.ino,
                    drop_cache: true
                }
            ),
        ]
    );
    // Without a session, or for someone else's session: refused.
    assert!(matches!(
        m.handle(None, acquire(3)).await,
        Err(RemoteError::LeaseExpired(_))
    ));
    assert!(matches!(
        call(&m, 1, acquire(3)).await,
        Err(RemoteError::Invalid(_))
    ));
}

#[tokio::test]
async fn another_managers_transaction_invalidates_the_participants_holders() {
    let (c, m) = setup(LONG).await;
    // A directory created from the root lands on the other manager.
    let mut remote = None;
    for i in 0..64 {
        let name = format!("d{i}");
        let d = c.mkdir(ROOT, &name).await;
        if c.config.slot_owner(d.ino.slot()) != m.node() {
            remote = Some((name, d));
            break;
        }
    }
    let (name, d) = remote.expect("a directory on the other manager");
    let other = other_manager(&c, &m);
    hello(&other, 1).await;
    attr(call(&other, 1, R::GetAttr { ino: d.ino }).await);
    assert_eq!(holders(&other, d.ino).0, vec![1]);
    // rmdir from the root's manager: the participant (d's owner) calls its holder back.
    call(
        &m,
        2,
        R::Rmdir {
            parent: ROOT,
            name,
            caller: USER,
        },
    )
    .await
    .expect("rmdir");
    assert!(c.callbacks.sent().iter().any(|(a, cb)| *a == addr(1)
        && matches!(cb, ClientCallback::Invalidate { inodes, .. } if inodes.contains(&d.ino))));
    assert_eq!(holders(&other, d.ino).0, Vec::<u64>::new());
}

#[tokio::test]
async fn grace_period_after_a_restart() {
    let (mut c, m) = setup(300).await;
    hello(&m, 1).await;
    let old = match call(
        &m,
        1,
        R::Renew {
            session: SessionId(1),
        },
    )
    .await
    {
        Ok(A::Lease(g)) => g.incarnation,
        other => panic!("renew answered {other:?}"),
    };
    let x = attr(call(&m, 1, create("r", None)).await);
    c.sync_all().await;
    let i = c
        .managers
        .iter()
        .position(|s| s.node() == m.node())
        .expect("index");
    drop(m);
    c.managers[i].kill();
    let m = c.start_manager(i).await;
    c.managers[i] = m.clone();
    // Mutations and AcquireWrite are refused while the grace lasts; reads are fine.
    let r = call(&m, 1, chmod(x.ino, 0o600)).await;
    if m.in_grace() {
        assert!(matches!(r, Err(RemoteError::Unavailable(ref s)) if s.contains("grace")));
    }
    assert!(call(&m, 1, R::GetAttr { ino: x.ino }).await.is_ok());
    // The new incarnation does not know the session: lost, and a new incarnation.
    match call(
        &m,
        1,
        R::Renew {
            session: SessionId(1),
        },
    )
    .await
    {
        Ok(A::Lease(g)) => {
            assert!(g.lost);
            assert_ne!(g.incarnation, old);
        }
        other => panic!("renew answered {other:?}"),
    }
    let r = call(
        &m,
        1,
        R::AcquireWrite {
            ino: x.ino,
            session: SessionId(1),
            reclaim: false,
        },
    )
    .await;
    if m.in_grace() {
        assert!(matches!(r, Err(RemoteError::Unavailable(_))));
    }
    m.wait_grace().await;
    assert!(!m.in_grace());
    assert_eq!(attr(call(&m, 1, chmod(x.ino, 0o640)).await).perm, 0o640);
}

fn acquire(ino: InodeId, session: u64, reclaim: bool) -> R {
    R::AcquireWrite {
        ino,
        session: SessionId(session),
        reclaim,
    }
}

fn estale(r: Result<A, RemoteError>) -> bool {
    matches!(r, Err(RemoteError::Errno { code, .. }) if code == crate::error::code::ESTALE)
}

/// After a crash only the inodes whose write lease the log recorded wait for a reclaim;
/// every other read is answered during grace; a reclaim is granted only for the lease the
/// log recorded for that very session; recorded leases survive a checkpoint.
#[tokio::test]
async fn only_recorded_write_leases_hold_reads_after_a_restart() {
    // A lease of a minute: grace lasts a minute, far longer than this test's steps.
    let (mut c, m) = setup(60_000).await;
    hello(&m, 1).await;
    hello(&m, 2).await;
    let x = attr(call(&m, 1, create("x", None)).await);
    let y = attr(call(&m, 1, create("y", None)).await);
    // The creator of z holds its write lease from the create on.
    let z = attr(call(&m, 1, create("z", Some(1))).await);
    assert!(matches!(
        call(&m, 1, acquire(x.ino, 1, false)).await,
        Ok(A::Done)
    ));
    c.sync_all().await;
    let i = c
        .managers
        .iter()
        .position(|s| s.node() == m.node())
        .expect("index");
    drop(m);
    c.managers[i].kill();
    let m = c.start_manager(i).await;
    c.managers[i] = m.clone();
    assert!(m.in_grace());
    assert_eq!(m.unclaimed_write_leases(), 2, "x and z");
    assert!(m.awaits_reclaim(x.ino) && m.awaits_reclaim(z.ino));
    assert!(!m.awaits_reclaim(y.ino));
    hello(&m, 1).await;
    hello(&m, 2).await;
    // Nobody held y's write lease: read at once, during grace.
    assert_eq!(
        attr(call(&m, 2, R::GetAttr { ino: y.ino }).await).ino,
        y.ino
    );
    assert!(m.in_grace(), "answered during grace");
    // Reclaims of leases the log does not record for the caller are refused.
    assert!(estale(call(&m, 1, acquire(y.ino, 1, true)).await));
    assert!(estale(call(&m, 2, acquire(x.ino, 2, true)).await));
    // A read of x waits for x's writer; its reclaim lets the read through (flushing it).
    let reader = {
        let m = m.clone();
        tokio::spawn(async move { call(&m, 2, R::GetAttr { ino: x.ino }).await })
    };
    assert!(matches!(
        call(&m, 1, acquire(x.ino, 1, true)).await,
        Ok(A::Done)
    ));
    let r = tokio::time::timeout(BOUND, reader)
        .await
        .expect("read answered")
        .expect("join");
    assert_eq!(attr(r).ino, x.ino);
    assert!(m.in_grace(), "answered during grace, after the reclaim");
    assert!(c.callbacks.sent().iter().any(|(to, cb)| *to == addr(1)
        && matches!(cb, ClientCallback::Flush { ino, .. } if *ino == x.ino)));
    assert_eq!(m.unclaimed_write_leases(), 1, "z");
    // A clean restart (with a checkpoint) keeps z's unreclaimed lease recorded.
    drop(m);
    c.restart(i, true).await;
    let m = c.managers[i].clone();
    assert!(m.awaits_reclaim(z.ino));
    assert!(!m.awaits_reclaim(y.ino));
}

#[tokio::test]
async fn a_long_expired_session_is_forgotten_and_its_open_unlinked_file_freed() {
    let (c, m) = setup(50).await;
    hello(&m, 1).await;
    hello(&m, 2).await;
    // Session 1 creates a file (opening it) and unlinks it while open: it stays until the
    // session releases it, which a crashed mount never does.
    let x = attr(call(&m, 1, create("open-unlinked", Some(1))).await);
    call(
        &m,
        1,
        R::Unlink {
            parent: ROOT,
            name: "open-unlinked".into(),
            caller: USER,
        },
    )
    .await
    .expect("unlink");
    assert!(
        call(&m, 2, R::GetAttr { ino: x.ino }).await.is_ok(),
        "kept while open"
    );
    // Session 2 keeps renewing; session 1 is silent for far more than 20 leases.
    let deadline = Instant::now() + BOUND;
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let _ = call(
            &m,
            2,
            R::Renew {
                session: SessionId(2),
            },
        )
        .await;
        match call(&m, 2, R::GetAttr { ino: x.ino }).await {
            Err(RemoteError::Errno { code, .. }) if code == crate::error::code::ENOENT => break,
            _ if Instant::now() > deadline => {
                panic!("the expired session's open file was never freed")
            }
            _ => {}
        }
    }
    // Session 1's connection now has no session: its commits are refused until it renews
    // (and its renewal says it was lost, so it drops what it buffered).
    let w = InodeWrite {
        sums: Vec::new(),
        ino: x.ino,
        extents: Vec::new(),
        size: 1,
        mtime: Timestamp::default(),
    };
    assert!(matches!(
        call(
            &m,
            1,
            R::CommitWrites {
                writes: vec![w],
                sync: false,
                standing: None,
            }
        )
        .await,
        Err(RemoteError::LeaseExpired(_))
    ));
    assert!(renew_lost(&m, 1).await);
    drop(c);
}

fn grant(r: Result<A, RemoteError>) -> proto::msg::LeaseGrant {
    match r {
        Ok(A::Lease(g)) => g,
        other => panic!("expected a lease grant, got {other:?}"),
    }
}

fn commit(ino: InodeId, size: u64, standing: Option<proto::msg::Standing>) -> R {
    R::CommitWrites {
        writes: vec![InodeWrite {
            sums: Vec::new(),
            ino,
            extents: Vec::new(),
            size,
            mtime: Timestamp::now(),
        }],
        sync: false,
        standing,
    }
}

/// Found by consistency/t55: a mount cut off past its lease kept a flush in flight; after
/// the heal it learned it was lost (dropping its buffered writes), but the flush asked for
/// the write lease anew and committed its old size over another mount's appends. Writes
/// carry the standing they were buffered under, and a loss since refuses them.
#[tokio::test]
async fn writes_buffered_before_a_loss_never_land_even_under_a_new_write_lease() {
    let (c, m) = setup(1000).await;
    hello(&m, 1).await;
    hello(&m, 2).await;
    let x = attr(call(&m, 1, create("fenced", None)).await);
    assert!(matches!(
        call(&m, 1, acquire(x.ino, 1, false)).await,
        Ok(A::Done)
    ));
    let g0 = grant(
        call(
            &m,
            1,
            R::Renew {
                session: SessionId(1),
            },
        )
        .await,
    );
    let before = proto::msg::Standing {
        incarnation: g0.incarnation,
        losses: g0.losses,
    };
    // Session 1 stops answering; session 2 takes the write lease once 1 is given up on,
    // and commits a longer file.
    c.callbacks.set(addr(1), Behaviour::Silent);
    assert!(matches!(
        call(&m, 2, acquire(x.ino, 2, false)).await,
        Ok(A::Done)
    ));
    let g2 = grant(
        call(
            &m,
            2,
            R::Renew {
                session: SessionId(2),
            },
        )
        .await,
    );
    let two = proto::msg::Standing {
        incarnation: g2.incarnation,
        losses: g2.losses,
    };
    call(&m, 2, commit(x.ino, 100, Some(two)))
        .await
        .expect("the new writer commits");
    // Session 1 comes back: told it was lost, it asks for the write lease again (the
    // flush it had in flight would) and is granted it.
    c.callbacks.set(addr(1), Behaviour::Ack);
    let g1 = grant(
        call(
            &m,
            1,
            R::Renew {
                session: SessionId(1),
            },
        )
        .await,
    );
    assert!(g1.lost);
    assert_eq!(g1.losses, before.losses + 1);
    assert!(matches!(
        call(&m, 1, acquire(x.ino, 1, false)).await,
        Ok(A::Done)
    ));
    // Its writes from before the loss are refused, and the file keeps session 2's size.
    match call(&m, 1, commit(x.ino, 16, Some(before))).await {
        Err(RemoteError::Errno { code, .. }) => assert_eq!(code, crate::error::code::ENOLCK),
        other => panic!("a commit from before the loss answered {other:?}"),
    }
    assert_eq!(attr(call(&m, 1, R::GetAttr { ino: x.ino }).await).size, 100);
    // Writes buffered since it learned of the loss go through.
    let after = proto::msg::Standing {
        incarnation: g1.incarnation,
        losses: g1.losses,
    };
    call(&m, 1, commit(x.ino, 120, Some(after)))
        .await
        .expect("writes buffered after the loss commit");
    assert_eq!(attr(call(&m, 1, R::GetAttr { ino: x.ino }).await).size, 120);
}

/// A directory made for another manager's parent is resolved at its owner (the
/// participant) by the prepared watch when the coordinator's `TxFinish` is lost: the maker
/// still becomes its reader (the client learns a directory it made as empty, and counts on
/// being called back before anyone else changes it).
#[tokio::test]
async fn the_maker_is_the_reader_of_a_far_directory_resolved_without_the_finish() {
    let (c, m) = setup(LONG).await;
    let far_node = other_manager(&c, &m);
    hello(&m, 1).await;
    hello(&far_node, 1).await;
    c.peers.set_finish_lost(far_node.node(), true);
    let mut made = None;
    for i in 0..64 {
        let r = call(
            &m,
            1,
            R::Create {
                parent: ROOT,
                name: format!("d{i}"),
                node: NewNode::Dir,
                perm: 0o755,
                umask: 0,
                caller: USER,
                session: None,
            },
        )
        .await;
        let a = attr(r);
        if c.config.slot_owner(a.ino.slot()) == far_node.node() {
            made = Some(a.ino);
            break;
        }
    }
    let dir = made.expect("64 directories all placed on the root's manager");
    // Renewals keep session 1 live at both while the watch (2 s rounds) resolves it.
    let deadline = Instant::now() + BOUND;
    loop {
        if holders(&far_node, dir).0.contains(&1) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the maker never became a reader of {dir}: {:?}",
            holders(&far_node, dir)
        );
        assert!(!renew_lost(&m, 1).await);
        assert!(!renew_lost(&far_node, 1).await);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    c.peers.set_finish_lost(far_node.node(), false);
}
