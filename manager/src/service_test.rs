//! Tests of the runtime shell with in-memory logs (`MemLog`) and in-process peers: routing,
//! durability, checkpoints, restarts, log failures and cross-manager transactions.

use crate::error::code::*;
use crate::journal::MemLog;
use crate::lease::lease_test::FakeCallbacks;
use crate::service::Service;
use crate::testing::LoopbackPeers;
use proto::config::{ClusterConfig, ErasureConfig};
use proto::ids::{InodeId, NodeId};
use proto::msg::{
    Attr, Caller, FileKind, ManagerRequest as R, ManagerResponse as A, NewNode, RemoteError,
    RenameFlags,
};
use std::sync::Arc;
use std::time::{Duration, Instant};
use storage::segment::EntryKind;

const USER: Caller = Caller { uid: 1, gid: 1 };
const ROOT: InodeId = InodeId::ROOT;

pub(crate) struct Cluster {
    pub config: Arc<ClusterConfig>,
    pub peers: Arc<LoopbackPeers>,
    pub callbacks: Arc<FakeCallbacks>,
    pub logs: Vec<MemLog>,
    pub managers: Vec<Arc<Service>>,
    _dir: tempfile::TempDir,
}

/// The `Create` of an empty file `name` in `parent` by the tests' user, without a session.
pub fn create_file(parent: InodeId, name: &str) -> R {
    R::Create {
        parent,
        name: name.into(),
        node: NewNode::File,
        perm: 0o644,
        umask: 0,
        caller: USER,
        session: None,
    }
}

impl Cluster {
    /// Two managers with a 300 ms lease (so that grace after a restart is short).
    pub async fn start(checkpoint_records: u64) -> Cluster {
        Cluster::start_lease(checkpoint_records, 300).await
    }

    pub async fn start_lease(checkpoint_records: u64, lease_ms: u64) -> Cluster {
        Cluster::start_config(|m| {
            m.checkpoint_records = checkpoint_records;
            m.lease_ms = lease_ms;
        })
        .await
    }

    /// Two managers with a 300 ms lease and `[manager]` tunables as `tune` sets them.
    pub async fn start_config(tune: impl FnOnce(&mut proto::config::ManagerTunables)) -> Cluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut file =
            ClusterConfig::generate("t", 6, 2, ErasureConfig { data: 4, parity: 2 }, 41000)
                .expect("config");
        file.manager.lease_ms = 300;
        tune(&mut file.manager);
        let config = Arc::new(ClusterConfig::from_file(dir.path(), file).expect("config"));
        let peers = LoopbackPeers::new();
        let logs = vec![MemLog::new(), MemLog::new()];
        let mut c = Cluster {
            config,
            peers,
            callbacks: FakeCallbacks::new(),
            logs,
            managers: Vec::new(),
            _dir: dir,
        };
        for i in 0..2 {
            let svc = c.start_manager(i).await;
            c.managers.push(svc);
        }
        c
    }

    /// The index in `managers` (and `logs`) of the manager serving `ino`.
    pub fn owner_index(&self, ino: InodeId) -> usize {
        let owner = self.config.slot_owner(ino.slot());
        self.managers
            .iter()
            .position(|m| m.node() == owner)
            .expect("a manager serves every slot")
    }

    pub fn node(&self, i: usize) -> NodeId {
        self.config.manager_nodes()[i].id
    }

    pub async fn start_manager(&self, i: usize) -> Arc<Service> {
        let svc = Service::start_with(
            self.config.clone(),
            self.node(i),
            Arc::new(self.logs[i].clone()),
            self.peers.clone(),
            self.callbacks.clone(),
        )
        .await
        .expect("start");
        self.peers.register(&svc);
        if let Err(e) = svc.wait_recovered().await {
            panic!("manager {i} refused to recover: {e}");
        }
        svc
    }

    /// Restarts manager `i`: cleanly (shutdown + checkpoint) or as after a crash.
    pub async fn restart(&mut self, i: usize, clean: bool) {
        if clean {
            self.managers[i].shutdown().await.expect("shutdown");
        } else {
            self.managers[i].kill();
        }
        self.managers[i] = self.start_manager(i).await;
    }

    /// Sends a request to the manager owning its routing inode.
    pub async fn call(&self, req: R) -> Result<A, RemoteError> {
        let ino = proto::route::routing_inode(&req).unwrap_or(ROOT);
        let owner = self.config.slot_owner(ino.slot());
        let svc = self
            .managers
            .iter()
            .find(|m| m.node() == owner)
            .expect("owner runs");
        // After a restart, mutations wait for the grace period to end.
        if req.kind().refused_in_grace && svc.in_grace() {
            svc.wait_grace().await;
        }
        svc.handle(None, req).await
    }

    pub async fn attr(&self, req: R) -> Attr {
        match self.call(req).await {
            Ok(A::Attr(a)) => a,
            other => panic!("expected attributes, got {other:?}"),
        }
    }

    pub async fn mkdir(&self, parent: InodeId, name: &str) -> Attr {
        let req = R::Create {
            parent,
            name: name.into(),
            node: NewNode::Dir,
            perm: 0o755,
            umask: 0,
            caller: USER,
            session: None,
        };
        self.attr(req).await
    }

    pub async fn touch(&self, parent: InodeId, name: &str) -> Attr {
        self.attr(create_file(parent, name)).await
    }

    pub async fn lookup(&self, parent: InodeId, name: &str) -> Result<Attr, RemoteError> {
        match self
            .call(R::Lookup {
                parent,
                name: name.into(),
            })
            .await?
        {
            A::Attr(a) => Ok(a),
            other => panic!("lookup answered {other:?}"),
        }
    }

    pub async fn names(&self, dir: InodeId) -> Vec<String> {
        match self
            .call(R::ReadDir {
                ino: dir,
                offset: 0,
                max: 10_000,
            })
            .await
        {
            Ok(A::Entries(e)) => e.into_iter().map(|e| e.name).collect(),
            other => panic!("readdir answered {other:?}"),
        }
    }

    pub async fn sync_all(&self) {
        for m in &self.managers {
            m.handle(None, R::Sync).await.expect("sync");
        }
    }
}

pub(crate) fn errno_of(r: Result<A, RemoteError>) -> crate::error::code::Errno {
    match r {
        Err(RemoteError::Errno { code, .. }) => code,
        other => panic!("expected an errno, got {other:?}"),
    }
}

/// Builds a small tree with directories on both managers; returns (dir names → attrs).
async fn populate(c: &Cluster) -> Vec<(String, Attr)> {
    let mut out = Vec::new();
    for i in 0..8 {
        let name = format!("dir{i}");
        let d = c.mkdir(ROOT, &name).await;
        let f = c.touch(d.ino, "file").await;
        assert_eq!(f.ino.slot(), d.ino.slot());
        out.push((name, d));
    }
    out
}

#[tokio::test]
async fn directories_spread_and_survive_clean_and_crash_restarts() {
    let mut c = Cluster::start(100_000).await;
    let dirs = populate(&c).await;
    let owners: std::collections::HashSet<NodeId> = dirs
        .iter()
        .map(|(_, d)| c.config.slot_owner(d.ino.slot()))
        .collect();
    assert_eq!(owners.len(), 2, "eight directories land on both managers");
    assert_eq!(c.attr(R::GetAttr { ino: ROOT }).await.nlink, 10);
    // Lookup through the root's manager returns attributes held by the other manager.
    for (name, d) in &dirs {
        assert_eq!(c.lookup(ROOT, name).await.expect("lookup").ino, d.ino);
        assert_eq!(c.lookup(d.ino, "..").await.expect("dotdot").ino, ROOT);
    }
    c.restart(0, true).await;
    c.restart(1, true).await;
    for (name, d) in &dirs {
        assert_eq!(
            c.lookup(ROOT, name).await.expect("after clean restart").ino,
            d.ino
        );
        assert_eq!(c.names(d.ino).await, vec!["file".to_string()]);
    }
    // Crash after Sync: everything synced comes back.
    let extra = c.touch(ROOT, "synced").await;
    c.sync_all().await;
    c.restart(0, false).await;
    c.restart(1, false).await;
    assert_eq!(
        c.lookup(ROOT, "synced").await.expect("synced file").ino,
        extra.ino
    );
    assert_eq!(c.names(ROOT).await.len(), 9);
    assert!(c.logs[0]
        .kinds()
        .iter()
        .any(|(_, k)| k.contains(&EntryKind::Checkpoint)));
}

#[tokio::test]
async fn the_journal_committer_reports_its_rounds_and_its_end() {
    let c = Cluster::start(100_000).await;
    let journal = |svc: &Service| {
        svc.workers()
            .into_iter()
            .find(|w| w.name == "journal")
            .expect("a journal worker")
    };
    c.touch(ROOT, "a").await;
    c.sync_all().await;
    let m = c.managers[0].clone();
    let before = journal(&m);
    assert!(before.rounds > 0, "{before:?}");
    assert_eq!(before.last_error, None);
    assert_ne!(before.state, proto::worker::WorkerState::Stopped);
    m.shutdown().await.expect("shutdown");
    let after = journal(&m);
    assert_eq!(
        after.state,
        proto::worker::WorkerState::Stopped,
        "{after:?}"
    );
    assert!(after.rounds >= before.rounds);
}

#[tokio::test]
async fn cross_manager_rename_link_unlink_rmdir() {
    let c = Cluster::start(100_000).await;
    let dirs = populate(&c).await;
    let (a, b) = {
        let on = |n: usize| {
            dirs.iter()
                .find(|(_, d)| c.config.slot_owner(d.ino.slot()) == c.node(n))
                .expect("dir")
                .1
                .clone()
        };
        (on(0), on(1))
    };
    // Rename a file from a directory of manager 0 into one of manager 1.
    c.call(R::Rename {
        parent: a.ino,
        name: "file".into(),
        new_parent: b.ino,
        new_name: "moved".into(),
        flags: RenameFlags::default(),
        caller: USER,
    })
    .await
    .expect("rename");
    assert_eq!(c.names(a.ino).await, Vec::<String>::new());
    assert_eq!(
        c.names(b.ino).await,
        vec!["file".to_string(), "moved".to_string()]
    );
    // Rename over an existing remote file replaces it.
    let g = c.touch(a.ino, "g").await;
    c.call(R::Rename {
        parent: a.ino,
        name: "g".into(),
        new_parent: b.ino,
        new_name: "file".into(),
        flags: RenameFlags::default(),
        caller: USER,
    })
    .await
    .expect("rename over");
    assert_eq!(c.lookup(b.ino, "file").await.expect("lookup").ino, g.ino);
    // Hard link across managers, then unlink it.
    let linked = c
        .attr(R::Link {
            ino: g.ino,
            new_parent: b.ino,
            new_name: "g2".into(),
            caller: USER,
        })
        .await;
    assert_eq!(linked.nlink, 2);
    c.call(R::Unlink {
        parent: b.ino,
        name: "g2".into(),
        caller: USER,
    })
    .await
    .expect("unlink");
    assert_eq!(c.attr(R::GetAttr { ino: g.ino }).await.nlink, 1);
    // Moving a directory into its own subtree across managers is refused.
    let sub = c.mkdir(b.ino, "sub").await;
    let r = c
        .call(R::Rename {
            parent: ROOT,
            name: dirs
                .iter()
                .find(|(_, d)| d.ino == b.ino)
                .expect("b")
                .0
                .clone(),
            new_parent: sub.ino,
            new_name: "x".into(),
            flags: RenameFlags::default(),
            caller: USER,
        })
        .await;
    assert_eq!(errno_of(r), EINVAL);
    // rmdir of a non-empty remote directory, then of an empty one.
    let bname = dirs
        .iter()
        .find(|(_, d)| d.ino == b.ino)
        .expect("b")
        .0
        .clone();
    assert_eq!(
        errno_of(
            c.call(R::Rmdir {
                parent: ROOT,
                name: bname.clone(),
                caller: USER
            })
            .await
        ),
        ENOTEMPTY
    );
    let aname = dirs
        .iter()
        .find(|(_, d)| d.ino == a.ino)
        .expect("a")
        .0
        .clone();
    c.call(R::Rmdir {
        parent: ROOT,
        name: aname.clone(),
        caller: USER,
    })
    .await
    .expect("rmdir of an empty dir");
    assert_eq!(
        errno_of(
            c.call(R::Lookup {
                parent: ROOT,
                name: aname
            })
            .await
        ),
        ENOENT
    );
    // Requests for slots owned elsewhere are refused with a hint.
    let other = c
        .managers
        .iter()
        .find(|m| m.node() != c.config.slot_owner(b.ino.slot()))
        .expect("other");
    assert!(matches!(
        other.handle(None, R::GetAttr { ino: b.ino }).await,
        Err(RemoteError::NotOwner { .. })
    ));
    assert_eq!(c.attr(R::GetAttr { ino: ROOT }).await.nlink, 9);
}

#[tokio::test]
async fn checkpoints_truncate_the_log_and_recovery_uses_them() {
    let mut c = Cluster::start(20).await;
    let d = c.mkdir(ROOT, "d").await;
    for i in 0..60 {
        c.touch(d.ino, &format!("f{i}")).await;
        if i % 10 == 0 {
            c.sync_all().await;
        }
    }
    c.sync_all().await;
    let owner = c.owner_index(d.ino);
    let kinds = c.logs[owner].kinds();
    assert!(
        kinds.first().expect("segments").0 > 0,
        "older segments were deleted: {kinds:?}"
    );
    // The two newest checkpoints (each at least a chunk and a manifest) are kept.
    let checkpoint_segments = kinds
        .iter()
        .filter(|(_, k)| k.contains(&EntryKind::Checkpoint))
        .count();
    assert!(checkpoint_segments >= 4, "{kinds:?}");
    c.restart(owner, false).await;
    assert_eq!(c.names(d.ino).await.len(), 60);
}

#[tokio::test]
async fn a_manager_restarted_often_still_checkpoints() {
    // Fewer records per incarnation than the checkpoint interval, more over all of them:
    // the records replayed at recovery count, or the log would be replayed whole forever.
    let mut c = Cluster::start(60).await;
    let d = c.mkdir(ROOT, "d").await;
    let owner = c.owner_index(d.ino);
    for round in 0..10 {
        for i in 0..4 {
            c.touch(d.ino, &format!("f{round}-{i}")).await;
        }
        c.sync_all().await;
        c.restart(owner, false).await;
    }
    let kinds = c.logs[owner].kinds();
    assert!(
        kinds
            .iter()
            .any(|(_, k)| k.contains(&EntryKind::Checkpoint)),
        "no checkpoint after 10 short incarnations: {kinds:?}"
    );
    c.restart(owner, false).await;
    assert_eq!(c.names(d.ino).await.len(), 40);
}

#[tokio::test]
async fn a_checkpoint_comes_after_enough_segments_however_few_their_records() {
    // Each sync forces a group commit of its own: many segments of a few records each.
    // Counting records alone, no checkpoint would come before a million records, and
    // recovery (or a takeover) would read every one of those segments.
    let mut c = Cluster::start_config(|m| {
        m.checkpoint_records = 1_000_000;
        m.checkpoint_segments = 8;
    })
    .await;
    let d = c.mkdir(ROOT, "d").await;
    let owner = c.owner_index(d.ino);
    let checkpoints = |c: &Cluster| {
        c.logs[owner]
            .kinds()
            .iter()
            .filter(|(_, k)| k.contains(&EntryKind::Checkpoint))
            .count()
    };
    assert_eq!(checkpoints(&c), 0, "no checkpoint before any segment");
    for i in 0..30 {
        c.touch(d.ino, &format!("f{i}")).await;
        c.sync_all().await;
    }
    assert!(
        checkpoints(&c) > 0,
        "no checkpoint after 30 record segments: {:?}",
        c.logs[owner].kinds()
    );
    c.restart(owner, false).await;
    assert_eq!(c.names(d.ino).await.len(), 30);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn syncs_never_wait_for_the_deletion_of_old_segments() {
    // Old segments are deleted after every checkpoint. The committer used to delete them
    // a slice at a time inside its group-commit wait, so a sync that came meanwhile waited
    // for the rest of the slice: on a busy disk 50-100 ms, three times per cross-manager
    // rename (issue 11). Here every delete takes 500 ms.
    let c = Cluster::start_config(|m| {
        m.checkpoint_records = 1_000_000;
        m.checkpoint_segments = 8;
    })
    .await;
    let d = c.mkdir(ROOT, "d").await;
    let owner = c.owner_index(d.ino);
    c.logs[owner].slow_deletes(Duration::from_millis(500));
    let mut slowest = Duration::ZERO;
    for i in 0..80 {
        let t = Instant::now();
        c.touch(d.ino, &format!("f{i}")).await;
        c.sync_all().await;
        slowest = slowest.max(t.elapsed());
    }
    // Deletions were under way meanwhile (and end).
    let deadline = Instant::now() + Duration::from_secs(20);
    while c.logs[owner].segment_ids().first() == Some(&0) {
        assert!(Instant::now() < deadline, "no old segment was deleted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        slowest < Duration::from_millis(250),
        "a create + sync took {slowest:?} while old segments were deleted"
    );
    assert_eq!(c.names(d.ino).await.len(), 80);
}

/// One `ReadDir` page of `dir` after `cookie`: (name, cookie) pairs.
async fn page(c: &Cluster, dir: InodeId, cookie: u64, max: u32) -> Vec<(String, u64)> {
    match c
        .call(R::ReadDir {
            ino: dir,
            offset: cookie,
            max,
        })
        .await
    {
        Ok(A::Entries(e)) => e.into_iter().map(|e| (e.name, e.next)).collect(),
        other => panic!("readdir answered {other:?}"),
    }
}

#[tokio::test]
async fn readdir_cookies_survive_crash_and_clean_restarts() {
    // Small checkpoint interval: the crash restart loads a checkpoint and replays a tail.
    let mut c = Cluster::start(25).await;
    let d = c.mkdir(ROOT, "d").await;
    for i in 0..80 {
        c.touch(d.ino, &format!("f{i:02}")).await;
    }
    c.sync_all().await;
    let owner = c.owner_index(d.ino);
    let mut seen = Vec::new();
    let first = page(&c, d.ino, 0, 30).await;
    let mut cookie = first.last().expect("page").1;
    seen.extend(first.iter().map(|(n, _)| n.clone()));
    // The listing's first page is removed, then the manager crashes and restarts.
    for (n, _) in &first {
        c.call(R::Unlink {
            parent: d.ino,
            name: n.clone(),
            caller: USER,
        })
        .await
        .expect("unlink");
    }
    c.sync_all().await;
    c.restart(owner, false).await;
    let second = page(&c, d.ino, cookie, 30).await;
    cookie = second.last().expect("page").1;
    seen.extend(second.iter().map(|(n, _)| n.clone()));
    c.touch(d.ino, "late").await;
    c.sync_all().await;
    c.restart(owner, true).await;
    let third = page(&c, d.ino, cookie, 1000).await;
    seen.extend(third.iter().map(|(n, _)| n.clone()));
    let mut want: Vec<String> = (0..80).map(|i| format!("f{i:02}")).collect();
    want.push("late".into());
    assert_eq!(
        seen, want,
        "each entry once, in creation order, across restarts"
    );
    assert_eq!(third.last().expect("late").1, 81);
}

/// A create is answered before its group commit; a crash right after loses it. The
/// number it was answered with must not name another file later: a client still holding
/// it (its fsync not yet reported) would write into that file (`Record::SeqFloors`).
#[tokio::test]
async fn inode_numbers_a_crash_lost_are_never_handed_out_again() {
    // No group commit on its own within the test: only syncs make records durable.
    let mut c = Cluster::start_config(|m| m.commit_interval_ms = 600_000).await;
    let mut handed_out = Vec::new();
    for round in 0..3 {
        let name = format!("lost-{round}");
        let a = c.touch(ROOT, &name).await;
        handed_out.push(a.ino);
        let i = c.owner_index(a.ino);
        c.restart(i, false).await;
        assert_eq!(
            errno_of(c.lookup(ROOT, &name).await.map(A::Attr)),
            crate::error::code::Errno::ENOENT,
            "round {round}: the test needs the create lost in the crash"
        );
    }
    let kept = c.touch(ROOT, "kept").await;
    c.sync_all().await;
    assert!(
        !handed_out.contains(&kept.ino),
        "{:?} was handed out again after a crash lost it ({handed_out:?})",
        kept.ino
    );
    let mut all = handed_out.clone();
    all.push(kept.ino);
    all.dedup();
    assert_eq!(all.len(), 4, "every create got its own number: {all:?}");
}

#[tokio::test]
async fn failed_appends_are_retried_and_a_synced_create_survives() {
    let mut c = Cluster::start(100_000).await;
    c.logs[0].fail_next_appends(2);
    let f = c.touch(ROOT, "after-failures").await;
    c.sync_all().await;
    let g = c.touch(ROOT, "synced").await;
    c.sync_all().await;
    c.restart(0, false).await;
    assert_eq!(
        c.lookup(ROOT, "after-failures")
            .await
            .expect("survived")
            .ino,
        f.ino
    );
    assert_eq!(c.lookup(ROOT, "synced").await.expect("survived").ino, g.ino);
    // The segment holding the synced create cannot be read: recovery refuses (naming
    // it) rather than come back without the create.
    let last = c.logs[0].segment_ids().last().copied().expect("segments");
    c.logs[0].make_unreadable(last);
    c.managers[0].kill();
    let svc = Service::start_with(
        c.config.clone(),
        c.node(0),
        Arc::new(c.logs[0].clone()),
        c.peers.clone(),
        c.callbacks.clone(),
    )
    .await
    .expect("start");
    let err = svc.wait_recovered().await.expect_err("refuses").to_string();
    assert!(err.contains(&format!("seg{last} ")), "{err}");
    svc.kill();
    c.logs[0].make_readable(last);
    c.managers[0] = c.start_manager(0).await;
    assert_eq!(c.lookup(ROOT, "synced").await.expect("survived").ino, g.ino);
    // New writes continue after the highest segment.
    c.touch(ROOT, "later").await;
    c.sync_all().await;
    c.restart(0, false).await;
    assert!(c.lookup(ROOT, "later").await.is_ok());
}

#[tokio::test]
async fn unavailable_while_recovering() {
    let c = Cluster::start(100_000).await;
    c.logs[0].fail_next_lists(usize::MAX);
    let svc = Service::start_with(
        c.config.clone(),
        c.node(0),
        Arc::new(c.logs[0].clone()),
        c.peers.clone(),
        c.callbacks.clone(),
    )
    .await
    .expect("start");
    assert!(!svc.is_ready());
    assert_eq!(
        svc.handle(None, R::GetAttr { ino: ROOT }).await.err(),
        Some(RemoteError::Unavailable("manager recovering".into()))
    );
    c.logs[0].fail_next_lists(0);
    svc.wait_ready().await;
    assert!(svc.handle(None, R::GetAttr { ino: ROOT }).await.is_ok());
    svc.kill();
}

fn mkdir_req(name: &str) -> R {
    R::Create {
        parent: ROOT,
        name: name.to_string(),
        node: NewNode::Dir,
        perm: 0o755,
        umask: 0,
        caller: USER,
        session: None,
    }
}

/// Two-phase commit, presumed abort: a participant that cannot be reached at prepare
/// time makes the operation fail with nothing changed anywhere; once it is back, the same
/// operation succeeds (no lock or half state was left behind).
#[tokio::test]
async fn unreachable_participant_aborts_cleanly_and_a_retry_succeeds() {
    let c = Cluster::start(100_000).await;
    let name = (0..1000)
        .map(|i| format!("p{i}"))
        .find(|n| c.config.slot_owner(crate::plan::dir_slot(ROOT, n)) == c.node(1))
        .expect("name");
    c.peers.set_down(c.node(1), true);
    let r = c.call(mkdir_req(&name)).await;
    assert!(matches!(r, Err(RemoteError::Unavailable(_))), "{r:?}");
    c.peers.set_down(c.node(1), false);
    assert!(c.lookup(ROOT, &name).await.is_err(), "nothing applied");
    assert_eq!(c.attr(R::GetAttr { ino: ROOT }).await.nlink, 2);
    let a = c.attr(mkdir_req(&name)).await;
    assert_eq!(a.kind, FileKind::Dir);
    assert_eq!(c.lookup(ROOT, &name).await.expect("made").ino, a.ino);
    assert_eq!(c.attr(R::GetAttr { ino: ROOT }).await.nlink, 3);
}

/// A coordinator restarted with an undecided transaction aborts it (presumed abort) and
/// tells the participant; the operation can then be made again.
#[tokio::test]
async fn coordinator_restart_aborts_an_undecided_transaction() {
    let mut c = Cluster::start(100_000).await;
    let name = (0..1000)
        .map(|i| format!("q{i}"))
        .find(|n| c.config.slot_owner(crate::plan::dir_slot(ROOT, n)) == c.node(1))
        .expect("name");
    c.peers.set_down(c.node(1), true);
    let r = c.call(mkdir_req(&name)).await;
    assert!(r.is_err());
    c.peers.set_down(c.node(1), false);
    c.restart(0, false).await;
    assert!(
        c.lookup(ROOT, &name).await.is_err(),
        "aborted, not rolled forward"
    );
    let a = c.attr(mkdir_req(&name)).await;
    assert_eq!(c.lookup(ROOT, &name).await.expect("made").ino, a.ino);
    assert_eq!(c.attr(R::GetAttr { ino: ROOT }).await.nlink, 3);
}
