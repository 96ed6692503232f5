//! The config group (the cluster config in openraft on the manager nodes): three real
//! members in this process, each inside its node, talking raft over the nodes' QUIC
//! transport on loopback, with their state on disk. Nodes are stopped as a crash would stop
//! them and restarted from their state directories.

mod common;

use bytes::Bytes;
use common::TestCluster;
use fsd::config_group::{ConfigGroup, GroupOptions, Refused, RequestError};
use openraft::{EntryPayload, RaftLogReader};
use proto::config::ClusterFile;
use proto::msg::{ConfigGroupRequest, RemoteError, Request, Response};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

const MANAGERS: [&str; 3] = ["manager-1", "manager-2", "manager-3"];
/// Bound of every wait for the group (elections take 1–2 s; the machine may be loaded).
const WAIT: Duration = Duration::from_secs(30);

/// One storage node (1+0) and three managers: the group has three members.
async fn cluster() -> TestCluster {
    init_logging();
    TestCluster::start(1, 3, 1, 0).await
}

/// The test's narration and the group's own logs (`RUST_LOG` overrides), captured by the
/// test harness.
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("warn,config_group=info,fsd::config_group=info")
    });
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .with_ansi(false)
        .try_init();
}

/// Polls `pred` every 50 ms until it holds, failing the test after `timeout`.
async fn wait_until<T, F, Fut>(timeout: Duration, what: &str, mut pred: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let started = Instant::now();
    loop {
        if let Some(v) = pred().await {
            return v;
        }
        assert!(
            started.elapsed() < timeout,
            "timed out after {timeout:?} waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn member(tc: &TestCluster, name: &str) -> Arc<ConfigGroup> {
    tc.cluster
        .config_group(name)
        .unwrap_or_else(|| panic!("{name} runs no config group member"))
}

/// The leader the running members `names` all agree on, once they do.
async fn agreed_leader(tc: &TestCluster, names: &[&str]) -> (String, Arc<ConfigGroup>) {
    let members: Vec<Arc<ConfigGroup>> = names.iter().map(|n| member(tc, n)).collect();
    wait_until(WAIT, &format!("{names:?} agree on a leader"), || {
        let leaders: Vec<_> = members.iter().map(|m| m.leader()).collect();
        let found = leaders[0].filter(|l| leaders.iter().all(|x| *x == Some(*l)));
        let hit = found.and_then(|l| {
            names
                .iter()
                .zip(&members)
                .find(|(_, m)| m.id() == l)
                .map(|(n, m)| (n.to_string(), m.clone()))
        });
        async move { hit }
    })
    .await
}

async fn all_at_epoch(tc: &TestCluster, names: &[&str], epoch: u64) {
    for n in names {
        let m = member(tc, n);
        m.wait_for_epoch(epoch, WAIT).await.expect("epoch applied");
        assert_eq!(m.epoch(), Some(epoch), "{n}");
    }
}

/// The committed file with the next epoch and a visible change.
fn next(file: &ClusterFile, tag: &str) -> ClusterFile {
    let mut f = file.clone();
    f.epoch += 1;
    f.name = format!("{}-{tag}", file.name);
    f.manager.lease_ms += 1;
    f
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn propose_fail_over_and_catch_up() {
    let mut tc = cluster().await;
    let seeded = tc.cluster.config.file.clone();
    let first = seeded.epoch;
    let (leader_name, leader) = {
        tracing::info!("--- the group initializes and is seeded with cluster.toml");
        all_at_epoch(&tc, &MANAGERS, first).await;
        for n in MANAGERS {
            assert_eq!(member(&tc, n).current().as_ref(), Some(&seeded), "{n}");
        }
        agreed_leader(&tc, &MANAGERS).await
    };
    let e2 = first + 1;
    {
        tracing::info!("--- (a) the leader proposes epoch+1: every member applies it");
        let f2 = next(&seeded, "two");
        assert_eq!(
            leader.propose(first, f2.clone()).await.expect("propose"),
            e2
        );
        all_at_epoch(&tc, &MANAGERS, e2).await;
        for n in MANAGERS {
            assert_eq!(member(&tc, n).current().as_ref(), Some(&f2), "{n}");
        }
        assert_eq!(
            leader.read().await.expect("confirmed read"),
            Some(f2.clone())
        );
        tracing::info!("--- every member's Ping answer shows the epoch and the leader");
        let st = fsd::cluster::status(&tc.cluster.config)
            .await
            .expect("status");
        let leader_id = tc
            .cluster
            .config
            .node_by_name(&leader_name)
            .expect("leader node")
            .id;
        for n in MANAGERS {
            let info = st
                .nodes
                .iter()
                .find(|s| s.name == n)
                .and_then(|s| s.reachable.as_ref().ok())
                .expect("member answered");
            let v = info.config_group.as_ref().expect("a member's view");
            assert_eq!((v.epoch, v.leader), (Some(e2), Some(leader_id)), "{n}");
        }
        tracing::info!("--- (a) a proposal on a stale epoch is refused with the current one");
        let stale = leader.propose(first, next(&seeded, "stale")).await;
        match stale {
            Err(RequestError::Refused(Refused::StaleEpoch { current, expected })) => {
                assert_eq!((current, expected), (e2, first));
            }
            other => panic!("stale proposal: {other:?}"),
        }
        let msg = leader
            .propose(first, next(&seeded, "stale"))
            .await
            .expect_err("stale")
            .to_string();
        assert!(msg.contains(&format!("epoch {e2}")), "{msg}");
        tracing::info!("--- (a) a follower does not propose; it names the leader");
        let follower = MANAGERS.iter().find(|n| **n != leader_name).expect("f");
        match member(&tc, follower).propose(e2, next(&f2, "x")).await {
            Err(RequestError::NotLeader { leader: l, .. }) => assert_eq!(l, Some(leader.id())),
            other => panic!("proposal at a follower: {other:?}"),
        }
        match member(&tc, follower).read().await {
            Err(RequestError::NotLeader { leader: l, .. }) => assert_eq!(l, Some(leader.id())),
            other => panic!("confirmed read at a follower: {other:?}"),
        }
        assert_eq!(member(&tc, &leader_name).epoch(), Some(e2));
    }
    {
        tracing::info!("--- only node identities speak raft; bytes that do not decode are refused");
        let addr = tc
            .cluster
            .config
            .node_by_name(&leader_name)
            .expect("node")
            .address;
        let vote = Request::ConfigGroup(ConfigGroupRequest::Vote);
        let admin = fsd::cluster::admin_transport(&tc.cluster.config).expect("admin");
        let client = fsd::cluster::transport_as(&tc.cluster.config, "client").expect("client");
        for (who, t) in [("admin", admin), ("client", client)] {
            let r = t
                .call_timeout(addr, &vote, Bytes::from_static(b"x"), WAIT)
                .await
                .expect("call");
            match r.0 {
                Response::Error(RemoteError::Denied { right, .. }) => {
                    assert_eq!(right, "config-group", "{who}")
                }
                other => panic!("{who}'s raft vote was answered {other}"),
            }
        }
        let storage = tc.cluster.node_transport("storage-1").expect("storage");
        let r = storage
            .call_timeout(addr, &vote, Bytes::from_static(b"\xff\xff"), WAIT)
            .await
            .expect("call");
        assert!(
            matches!(&r.0, Response::Error(RemoteError::Invalid(m)) if m.contains("does not decode")),
            "{}",
            r.0
        );
        assert_eq!(member(&tc, &leader_name).leader(), Some(leader.id()));
    }
    let old_membership = *leader.metrics().borrow().membership_config.log_id();
    let old_dir = leader.dir().to_path_buf();
    drop(leader);
    let survivors: Vec<&str> = MANAGERS
        .iter()
        .copied()
        .filter(|n| *n != leader_name)
        .collect();
    let e3 = e2 + 1;
    {
        tracing::info!(
            "--- (b) the leader {leader_name} crashes: a new leader commits with 2 of 3"
        );
        tc.cluster
            .stop_node(&leader_name, true)
            .await
            .expect("stop");
        let started = Instant::now();
        let (new_name, new_leader) = wait_until(WAIT, "a new leader is elected", || {
            let ms: Vec<_> = survivors.iter().map(|n| member(&tc, n)).collect();
            let hit = ms
                .iter()
                .zip(&survivors)
                .find(|(m, _)| {
                    m.leader() == Some(m.id()) && ms.iter().all(|o| o.leader() == Some(m.id()))
                })
                .map(|(m, n)| (n.to_string(), m.clone()));
            async move { hit }
        })
        .await;
        tracing::info!(elapsed = ?started.elapsed(), "new leader {new_name}");
        assert_ne!(new_name, leader_name);
        let cur = new_leader.current().expect("config");
        assert_eq!(
            new_leader
                .propose(e2, next(&cur, "three"))
                .await
                .expect("commit with 2 of 3"),
            e3
        );
        all_at_epoch(&tc, &survivors, e3).await;
    }
    {
        tracing::info!("--- (c) the stopped member's own log holds epoch {e2}");
        let mut log = fsd::config_group::LogStore::open(&old_dir).expect("open its log");
        let entries = log.try_get_log_entries(0..).await.expect("entries");
        let has_e2 = entries.iter().any(|e| {
            matches!(&e.payload, EntryPayload::Normal(fsd::config_group::Command::Replace { file, .. }) if file.epoch == e2)
        });
        assert!(has_e2, "{leader_name}'s log lacks epoch {e2}: {entries:?}");
        drop(log);
        tracing::info!(
            "--- (c) restarted from its state dir, it catches up without re-initializing"
        );
        tc.cluster.start_node(&leader_name).await.expect("restart");
        let back = member(&tc, &leader_name);
        back.wait_for_epoch(e3, WAIT).await.expect("caught up");
        assert_eq!(back.current(), member(&tc, survivors[0]).current());
        assert_eq!(
            *back.metrics().borrow().membership_config.log_id(),
            old_membership,
            "the membership was not re-initialized"
        );
        agreed_leader(&tc, &MANAGERS).await;
    }
    {
        tracing::info!("--- (c) a member that missed a purged log catches up from a snapshot");
        let (lname, l) = agreed_leader(&tc, &MANAGERS).await;
        let behind = MANAGERS
            .iter()
            .copied()
            .find(|n| *n != lname)
            .expect("follower");
        let behind_dir = member(&tc, behind).dir().to_path_buf();
        tc.cluster.stop_node(behind, true).await.expect("stop");
        let cur = l.current().expect("config");
        let e4 = e3 + 1;
        assert_eq!(
            l.propose(e3, next(&cur, "four")).await.expect("propose"),
            e4
        );
        l.raft().trigger().snapshot().await.expect("snapshot");
        let snap_at = wait_until(WAIT, "the leader built a snapshot", || {
            let s = l.metrics().borrow().snapshot;
            async move { s.filter(|s| s.index >= 1) }
        })
        .await;
        l.raft()
            .trigger()
            .purge_log(snap_at.index)
            .await
            .expect("purge");
        wait_until(WAIT, "the leader purged its log", || {
            let p = l.metrics().borrow().purged;
            async move { p.filter(|p| p.index >= snap_at.index) }
        })
        .await;
        tc.cluster.start_node(behind).await.expect("restart");
        let back = member(&tc, behind);
        back.wait_for_epoch(e4, WAIT)
            .await
            .expect("caught up from the snapshot");
        assert_eq!(back.current(), l.current());
        assert!(
            behind_dir.join("snapshot").exists(),
            "{behind} installed no snapshot"
        );
    }
    tc.cluster.stop().await;
}

/// A member that does not lead proposes and reads through the leader (`offer` of a next
/// epoch from a storage member that stays follower, and the start-time check of a member
/// that may have missed commits, depend on it).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_follower_proposes_and_reads_through_the_leader() {
    let tc = cluster().await;
    let seeded = tc.cluster.config.file.clone();
    let first = seeded.epoch;
    all_at_epoch(&tc, &MANAGERS, first).await;
    let (lname, leader) = agreed_leader(&tc, &MANAGERS).await;
    let fname = MANAGERS.iter().find(|n| **n != lname).expect("a follower");
    let follower = member(&tc, fname);
    tracing::info!("--- {fname} proposes epoch+1 through the leader {lname}");
    let f2 = next(&seeded, "forwarded");
    assert_eq!(
        follower
            .propose_at_leader(first, f2.clone())
            .await
            .expect("forwarded proposal"),
        first + 1
    );
    all_at_epoch(&tc, &MANAGERS, first + 1).await;
    for n in MANAGERS {
        assert_eq!(member(&tc, n).current().as_ref(), Some(&f2), "{n}");
    }
    tracing::info!("--- a forwarded proposal on a stale epoch is refused as the leader's own");
    match follower
        .propose_at_leader(first, next(&seeded, "stale"))
        .await
    {
        Err(RequestError::Refused(Refused::StaleEpoch { current, expected })) => {
            assert_eq!((current, expected), (first + 1, first))
        }
        other => panic!("stale forwarded proposal: {other:?}"),
    }
    tracing::info!(
        "--- the committed config, confirmed by the leader, at the follower and the leader"
    );
    assert_eq!(
        follower.read_at_leader().await.expect("forwarded read"),
        Some(f2.clone())
    );
    assert_eq!(
        leader.read_at_leader().await.expect("read"),
        Some(f2.clone())
    );
    tracing::info!("--- bytes that do not decode are refused, nothing changes");
    let addr = tc
        .cluster
        .config
        .node_by_name(&lname)
        .expect("node")
        .address;
    let storage = tc.cluster.node_transport("storage-1").expect("storage");
    let r = storage
        .call_timeout(
            addr,
            &Request::ConfigGroup(ConfigGroupRequest::Propose),
            Bytes::from_static(b"\xff\xff"),
            WAIT,
        )
        .await
        .expect("call");
    assert!(
        matches!(r.0, Response::Error(RemoteError::Invalid(_))),
        "{:?}",
        r.0
    );
    assert_eq!(leader.epoch(), Some(first + 1));
    tc.cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lone_member_cannot_commit() {
    let mut tc = cluster().await;
    let seeded = tc.cluster.config.file.clone();
    all_at_epoch(&tc, &MANAGERS, seeded.epoch).await;
    let (lname, leader) = agreed_leader(&tc, &MANAGERS).await;
    {
        tracing::info!("--- (d) the two other members stop: the leader {lname} is alone");
        for n in MANAGERS.iter().filter(|n| **n != lname) {
            tc.cluster.stop_node(n, true).await.expect("stop");
        }
        let started = Instant::now();
        let r = tokio::time::timeout(
            Duration::from_secs(20),
            leader.propose(seeded.epoch, next(&seeded, "alone")),
        )
        .await
        .expect("the proposal must not hang");
        let waited = started.elapsed();
        match &r {
            Err(RequestError::NoQuorum { members, .. }) => assert_eq!(*members, 3),
            Err(RequestError::NotLeader { leader: None, .. }) => {}
            other => panic!("a lone member's proposal: {other:?}"),
        }
        let msg = r.expect_err("refused").to_string();
        tracing::info!(?waited, "lone proposal failed: {msg}");
        assert_eq!(leader.epoch(), Some(seeded.epoch));
        tracing::info!("--- (d) nor can it confirm a read");
        let started = Instant::now();
        let r = tokio::time::timeout(Duration::from_secs(20), leader.read())
            .await
            .expect("the read must not hang");
        assert!(
            matches!(
                r,
                Err(RequestError::ReadNoQuorum { .. } | RequestError::NotLeader { .. })
            ),
            "{r:?}"
        );
        tracing::info!(waited = ?started.elapsed(), "lone read failed: {}", r.expect_err("refused"));
    }
    tc.cluster.stop().await;
}

/// Names of the config group's members in `tc`'s config.
fn group_members(tc: &TestCluster) -> Vec<String> {
    tc.cluster
        .config
        .config_group_members()
        .iter()
        .map(|n| n.name.clone())
        .collect()
}

/// The voters in `m`'s raft membership, by node name.
fn voters(tc: &TestCluster, m: &ConfigGroup) -> Vec<String> {
    let ids: Vec<u64> = m
        .metrics()
        .borrow()
        .membership_config
        .membership()
        .voter_ids()
        .collect();
    let mut names: Vec<String> = ids
        .into_iter()
        .map(|id| {
            tc.cluster
                .config
                .node(fsd::config_group::node_of(id))
                .map(|n| n.name.clone())
                .unwrap_or_else(|| format!("?{id}"))
        })
        .collect();
    names.sort();
    names
}

/// Stops the leader among `members` (a manager if the storage member leads, so that a
/// manager is lost either way) and checks that the other two elect a leader and commit the
/// next epoch; then restarts it and waits until it has caught up.
async fn survives_the_loss_of_a_member(tc: &mut TestCluster, members: &[&str]) {
    let (lname, leader) = agreed_leader(tc, members).await;
    let lost = if lname.starts_with("manager") {
        lname.clone()
    } else {
        "manager-1".to_string()
    };
    let cur = leader.current().expect("config");
    drop(leader);
    tracing::info!("--- {lost} crashes: the other two members commit");
    tc.cluster.stop_node(&lost, true).await.expect("stop");
    let rest: Vec<&str> = members.iter().copied().filter(|n| *n != lost).collect();
    let (_, l) = agreed_leader(tc, &rest).await;
    let e = wait_until(WAIT, "the next epoch commits with 2 of 3", || {
        let l = l.clone();
        let f = next(&cur, "two-of-three");
        async move {
            match l.propose(cur.epoch, f).await {
                Ok(e) => Some(e),
                Err(RequestError::Refused(r)) => panic!("refused: {r}"),
                Err(e) => {
                    tracing::info!("not yet: {e}");
                    None
                }
            }
        }
    })
    .await;
    assert_eq!(e, cur.epoch + 1);
    all_at_epoch(tc, &rest, e).await;
    tracing::info!("--- {lost} restarts and catches up");
    tc.cluster.start_node(&lost).await.expect("restart");
    member(tc, &lost)
        .wait_for_epoch(e, WAIT)
        .await
        .expect("caught up");
}

/// Two managers alone would be a group that needs both: a storage node is the third
/// member, so the group commits with any one member lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_managers_and_a_storage_member_outlive_a_lost_member() {
    init_logging();
    let mut tc = TestCluster::start(2, 2, 1, 0).await;
    let names = group_members(&tc);
    assert_eq!(names[..2], ["manager-1", "manager-2"], "{names:?}");
    assert!(names[2].starts_with("storage"), "{names:?}");
    let members: Vec<&str> = names.iter().map(String::as_str).collect();
    all_at_epoch(&tc, &members, tc.cluster.config.file.epoch).await;
    let (_, l) = agreed_leader(&tc, &members).await;
    let mut want = names.clone();
    want.sort();
    assert_eq!(voters(&tc, &l), want);
    drop(l);
    for n in &tc.cluster.config.nodes {
        assert_eq!(
            tc.cluster.config_group(&n.name).is_some(),
            names.contains(&n.name),
            "{} runs a member exactly if it is one",
            n.name
        );
    }
    survives_the_loss_of_a_member(&mut tc, &members).await;
    tc.cluster.stop().await;
}

/// A group initialized by an older version had only the managers as voters; the leader
/// adds the storage member (a learner, then a voter), after which the group outlives a
/// lost manager.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_group_of_two_managers_grows_to_three_members() {
    init_logging();
    let mut tc = TestCluster::start_with(2, 2, 1, 0, |c| GroupOptions {
        initial_members: Some(c.manager_nodes().iter().map(|n| n.id).collect()),
        ..GroupOptions::default()
    })
    .await;
    let names = group_members(&tc);
    let members: Vec<&str> = names.iter().map(String::as_str).collect();
    let mut want = names.clone();
    want.sort();
    wait_until(
        WAIT,
        "the storage member becomes a voter at every member",
        || {
            // At every member, and past the joint configuration: a member that still holds the
            // joint one needs the old voters too, so losing one of them then stalls elections.
            let done = members.iter().all(|n| {
                let m = member(&tc, n);
                let settled = !fsd::config_group::membership_now(&m.metrics().borrow()).joint;
                let v = voters(&tc, &m);
                if !(settled && v == want) {
                    tracing::debug!("{n}: voters so far {v:?}, settled {settled}");
                }
                settled && v == want
            });
            async move { done.then_some(()) }
        },
    )
    .await;
    all_at_epoch(&tc, &members, tc.cluster.config.file.epoch).await;
    survives_the_loss_of_a_member(&mut tc, &members).await;
    tc.cluster.stop().await;
}

/// Starts node `name` of `file` (in `tc`'s cluster directory, for its certificates) apart
/// from `tc`'s own nodes.
async fn start_apart(tc: &TestCluster, name: &str, file: ClusterFile) -> fsd::node::RunningNode {
    let config = proto::config::ClusterConfig::from_file(&tc.cluster.config.dir, file)
        .expect("a valid config");
    fsd::node::RunningNode::start(Arc::new(config), name)
        .await
        .expect("node starts")
}

/// Waits until `svc` serves, failing the test with its refusal if it refuses.
async fn serves(svc: &manager::Service, name: &str) {
    wait_until(WAIT, &format!("{name} serves"), || {
        let ready = svc.is_ready();
        let refused = svc.recovery_error().map(|e| e.to_string());
        async move {
            assert_eq!(refused, None, "{name} refused to serve");
            ready.then_some(())
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_manager_serves_only_by_a_file_that_agrees_with_the_committed_config() {
    let mut tc = cluster().await;
    let seeded = tc.cluster.config.file.clone();
    all_at_epoch(&tc, &MANAGERS, seeded.epoch).await;
    for n in MANAGERS {
        serves(&tc.cluster.manager_service(n).expect("manager"), n).await;
    }
    {
        tracing::info!("--- (a) manager-2 restarts with a file of the same epoch that gives it every slot: it does not serve");
        tc.cluster
            .stop_node("manager-2", false)
            .await
            .expect("stop");
        let mut grab = seeded.clone();
        grab.slot_ranges = vec![proto::config::SlotRange {
            first: 0,
            last: proto::ids::SLOT_COUNT - 1,
            manager: "manager-2".into(),
        }];
        let n = start_apart(&tc, "manager-2", grab.clone()).await;
        let svc = n.manager().expect("manager role");
        let why = wait_until(WAIT, "manager-2 refuses", || {
            let e = svc.recovery_error().map(|e| e.to_string());
            async move { e }
        })
        .await;
        tracing::info!("manager-2 refused: {why}");
        assert!(
            why.contains("contradicts") && why.contains("slots"),
            "the refusal says what contradicts: {why}"
        );
        assert!(!svc.is_ready());
        let r = svc
            .handle(
                None,
                proto::msg::ManagerRequest::GetAttr {
                    ino: proto::ids::InodeId(1),
                },
            )
            .await;
        match r {
            Err(RemoteError::Unavailable(m)) => assert!(m.contains("contradicts"), "{m}"),
            other => panic!("a refusing manager answered {other:?}"),
        }
        tracing::info!("--- (a) `shoal status` shows manager-2 refusing, and why");
        let st = fsd::cluster::status(&tc.cluster.config)
            .await
            .expect("status");
        let m2 = st
            .nodes
            .iter()
            .find(|n| n.name == "manager-2")
            .expect("manager-2 probed");
        assert_eq!(m2.state(), fsd::cluster::NodeState::Refused);
        assert!(
            m2.manager_refusal
                .as_deref()
                .is_some_and(|w| w.contains("contradicts")),
            "{:?}",
            m2.manager_refusal
        );
        assert!(!st.can_serve);
        tracing::info!("--- (b) an older epoch that lacks a node is refused too");
        drop(svc); // holds the node's transport
        n.stop().await;
        let mut older = seeded.clone();
        older.epoch -= 1;
        older.nodes.retain(|e| e.name != "manager-3");
        older.slot_ranges.retain(|r| r.manager != "manager-3");
        older.slot_ranges.last_mut().expect("a range").last = proto::ids::SLOT_COUNT - 1;
        let n = start_apart(&tc, "manager-2", older).await;
        let svc = n.manager().expect("manager role");
        let why = wait_until(WAIT, "manager-2 refuses the older file", || {
            let e = svc.recovery_error().map(|e| e.to_string());
            async move { e }
        })
        .await;
        assert!(
            why.contains("contradicts") && why.contains("manager-3"),
            "the refusal names the missing node: {why}"
        );
        drop(svc);
        n.stop().await;
        tracing::info!("--- (c) with the cluster's own file it serves again");
        tc.cluster.start_node("manager-2").await.expect("start");
        serves(
            &tc.cluster.manager_service("manager-2").expect("manager"),
            "manager-2",
        )
        .await;
    }
    {
        tracing::info!("--- (f) manager-1 (it runs the cleaner, the reclaimer and the rebuild) restarts with a contradicting file: those do not run");
        tc.cluster
            .stop_node("manager-1", false)
            .await
            .expect("stop");
        let mut moved = seeded.clone();
        // Another node's address differs: a stale or hand-edited copy.
        let m3 = moved
            .nodes
            .iter_mut()
            .find(|e| e.name == "manager-3")
            .expect("manager-3 in the file");
        m3.address = "127.0.0.1:1".parse().expect("an address");
        let n = start_apart(&tc, "manager-1", moved).await;
        let svc = n.manager().expect("manager role");
        wait_until(WAIT, "manager-1 refuses", || {
            let e = svc.recovery_error();
            async move { e }
        })
        .await;
        let stopped = wait_until(WAIT, "its cleaner and rebuild stop", || {
            let ws = n.workers();
            async move {
                let mine: Vec<_> = ws
                    .into_iter()
                    .filter(|w| w.name == "cleaner" || w.name == "rebuild")
                    .collect();
                (mine.len() == 2
                    && mine
                        .iter()
                        .all(|w| w.state == proto::worker::WorkerState::Stopped))
                .then_some(mine)
            }
        })
        .await;
        for w in &stopped {
            assert_eq!(w.rounds, 1, "{}: the refusal, no pass", w.name);
            assert!(
                w.last_error
                    .as_deref()
                    .is_some_and(|e| e.contains("refused") && e.contains("contradicts")),
                "{}: {:?}",
                w.name,
                w.last_error
            );
        }
        drop(svc);
        n.stop().await;
        tc.cluster.start_node("manager-1").await.expect("start");
        serves(
            &tc.cluster.manager_service("manager-1").expect("manager"),
            "manager-1",
        )
        .await;
    }
    {
        tracing::info!("--- (e) the next epoch giving manager-2 every slot: it waits for the group, which is not asked");
        tc.cluster
            .stop_node("manager-2", false)
            .await
            .expect("stop");
        let mut grab = seeded.clone();
        grab.epoch += 1;
        grab.slot_ranges = vec![proto::config::SlotRange {
            first: 0,
            last: proto::ids::SLOT_COUNT - 1,
            manager: "manager-2".into(),
        }];
        let n = start_apart(&tc, "manager-2", grab).await;
        let svc = n.manager().expect("manager role");
        // Long enough for its member to be elected and propose, were it to.
        for _ in 0..40 {
            assert!(
                !svc.is_ready(),
                "manager-2 serves a map the group never committed"
            );
            assert!(
                svc.recovery_error().is_none(),
                "it waits, it is not refused"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        for m in ["manager-1", "manager-3"] {
            assert_eq!(
                member(&tc, m).epoch(),
                Some(seeded.epoch),
                "{m}: nothing proposed"
            );
        }
        let own = n.config_group().expect("member");
        assert_eq!(
            own.epoch(),
            Some(seeded.epoch),
            "manager-2: nothing proposed"
        );
        drop(own);
        drop(svc);
        n.stop().await;
        tc.cluster.start_node("manager-2").await.expect("start");
        serves(
            &tc.cluster.manager_service("manager-2").expect("manager"),
            "manager-2",
        )
        .await;
    }
    {
        tracing::info!("--- (d) every manager restarts with the next epoch of the file: the leader proposes it, all serve");
        let mut ahead = seeded.clone();
        ahead.epoch += 1;
        ahead.manager.lease_ms += 1;
        for n in MANAGERS {
            tc.cluster.stop_node(n, false).await.expect("stop");
        }
        let mut apart = Vec::new();
        for n in MANAGERS {
            apart.push(start_apart(&tc, n, ahead.clone()).await);
        }
        for (n, node) in MANAGERS.iter().zip(&apart) {
            serves(&node.manager().expect("manager"), n).await;
            let g = node.config_group().expect("member");
            g.wait_for_epoch(ahead.epoch, WAIT).await.expect("proposed");
            assert_eq!(g.current().as_ref(), Some(&ahead), "{n}");
        }
        for node in apart {
            node.stop().await;
        }
    }
    tc.cluster.stop().await;
}

/// `shoal node add`'s proposal (`fsd::cluster::propose_to_group`, the admin's
/// `ProposeConfig`): a member checks it against the committed config, refuses a slot move
/// and a proposal on the wrong epoch with their reasons, commits a storage node added, and
/// running clients follow the committed config; members answer `ConfigRead` with it and a
/// node that is no member answers none.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_administrators_proposal_is_checked_and_running_clients_follow_it() {
    use proto::config::ClusterConfig;
    let tc = cluster().await;
    let config = tc.cluster.config.clone();
    let first = config.file.epoch;
    all_at_epoch(&tc, &MANAGERS, first).await;
    let client = tc.client().await;
    assert_eq!(client.config_epoch(), first);

    tracing::info!("--- a slot move is refused with its reason; nothing commits");
    let mut moved = config.file.clone();
    moved.epoch += 1;
    moved.slot_ranges[0].manager = moved.slot_ranges[1].manager.clone();
    let moved = ClusterConfig::from_file(&config.dir, moved).expect("valid file");
    let err = fsd::cluster::propose_to_group(&config, &moved)
        .await
        .expect_err("a slot move is not proposed")
        .to_string();
    assert!(err.contains("who serves what"), "{err}");

    tracing::info!("--- a proposal after an epoch the group is not at is refused");
    let mut ahead = config.file.clone();
    ahead.epoch += 1;
    let ahead = ClusterConfig::from_file(&config.dir, ahead).expect("valid file");
    let mut after_ahead = ahead.file.clone();
    after_ahead.epoch += 1;
    let after_ahead = ClusterConfig::from_file(&config.dir, after_ahead).expect("valid file");
    let err = fsd::cluster::propose_to_group(&ahead, &after_ahead)
        .await
        .expect_err("wrong epoch")
        .to_string();
    assert!(
        err.contains(&format!("the cluster is at epoch {first}")),
        "{err}"
    );
    for n in MANAGERS {
        assert_eq!(member(&tc, n).epoch(), Some(first), "{n}");
    }

    tracing::info!("--- a storage node added commits, and the running client follows it");
    let mut added = config.file.clone();
    let mut extra = added
        .nodes
        .iter()
        .find(|n| n.name == "storage-1")
        .expect("storage-1")
        .clone();
    extra.name = "storage-9".into();
    extra.id = Some(config.next_node_id());
    added.last_node_id = config.next_node_id();
    extra.address = "127.0.0.1:9".parse().expect("address");
    added.nodes.push(extra);
    added.epoch += 1;
    let added = ClusterConfig::from_file(&config.dir, added).expect("valid file");
    fsd::cluster::propose_to_group(&config, &added)
        .await
        .expect("committed");
    all_at_epoch(&tc, &MANAGERS, first + 1).await;
    let c2 = client.clone();
    wait_until(WAIT, "the client follows the committed config", || {
        let e = c2.config_epoch();
        async move { (e == first + 1).then_some(()) }
    })
    .await;

    tracing::info!("--- members answer ConfigRead with it; a node that is no member with none");
    let storage = tc.cluster.node_transport("storage-1").expect("storage-1");
    for (name, want) in [("manager-2", Some(first + 1)), ("storage-1", None)] {
        let addr = config.node_by_name(name).expect("node").address;
        let (r, _) = storage
            .call_timeout(addr, &Request::ConfigRead, Bytes::new(), WAIT)
            .await
            .expect("ConfigRead");
        let got = match r {
            Response::Config { file } => {
                file.map(|t| proto::follow::parse(&t).expect("parses").epoch)
            }
            other => panic!("{name} answered {other}"),
        };
        assert_eq!(got, want, "{name}");
    }
    tc.cluster.stop().await;
}

/// Issue [failover]: a takeover in one process. manager-3 crashes; its group is handed to
/// manager-2 (`ClusterFile::takeover`, proposed through the group). manager-2 serves it at
/// the new address, a running client follows without reconnecting and reads what it wrote
/// before, and the storage server fences the log: a put or delete in manager-3's log from
/// manager-3's identity is refused; the host's put is stored, and the rebuild runner
/// (manager-1) is not fenced.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_crashed_managers_group_is_served_by_its_new_host_and_its_log_is_fenced() {
    use proto::config::ClusterConfig;
    use proto::ids::{FragmentId, LogId, SegmentId};
    use proto::msg::{Caller, FragmentMeta, StorageRequest};
    const ROOT: Caller = Caller { uid: 0, gid: 0 };
    let mut tc = cluster().await;
    let config = tc.cluster.config.clone();
    all_at_epoch(&tc, &MANAGERS, config.file.epoch).await;
    let m3 = config.node_by_name("manager-3").expect("manager-3").id;
    let client = tc.client().await;
    // A directory served by manager-3, with a file in it.
    let dir = dir_with_file(&client, &config, m3, "before", b"before the takeover").await;

    tracing::info!("--- manager-3 crashes; its group goes to manager-1");
    tc.cluster
        .stop_node("manager-3", true)
        .await
        .expect("crash");
    let addr = std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("a free port");
    let moved = ClusterConfig::from_file(
        &config.dir,
        config
            .file
            .takeover("manager-3", "manager-2", addr)
            .expect("takeover file"),
    )
    .expect("valid");
    fsd::cluster::propose_to_group(&config, &moved)
        .await
        .expect("the takeover commits");

    tracing::info!("--- the client follows and reaches the group at its new host");
    let c2 = client.clone();
    let epoch = moved.file.epoch;
    wait_until(WAIT, "the client follows the takeover", || {
        let e = c2.config_epoch();
        async move { (e == epoch).then_some(()) }
    })
    .await;
    let a = tokio::time::timeout(Duration::from_secs(60), client.lookup(dir, "before"))
        .await
        .expect("lookup within 60 s")
        .expect("lookup at the new host");
    assert_eq!(
        common::read_all(&client, a.ino, 64).await,
        b"before the takeover"
    );
    let (g, _) = client
        .create(dir, "after", 0o644, 0o022, ROOT)
        .await
        .expect("create at the new host");
    client.fsync(g.ino).await.expect("fsync");
    client.release(g.ino).await.expect("release");

    tracing::info!("--- the storage server fences manager-3's log");
    let storage = config.node_by_name("storage-1").expect("storage-1").address;
    let id = FragmentId {
        log: LogId::manager(m3),
        segment: SegmentId(u64::MAX - 1),
        index: 0,
    };
    let send = |as_name: &'static str, req: StorageRequest, bulk: &'static [u8]| {
        let config = config.clone();
        async move {
            let t = fsd::cluster::transport_as(&config, as_name).expect("identity");
            match t
                .call_timeout(
                    storage,
                    &Request::Storage(req),
                    Bytes::from_static(bulk),
                    WAIT,
                )
                .await
            {
                Ok((Response::Error(e), _)) => e.to_string(),
                Ok((other, _)) => format!("answered {other:?}"),
                Err(e) => format!("transport: {e}"),
            }
        }
    };
    let put = |as_name: &'static str, segment: u64| {
        let req = StorageRequest::PutFragment {
            id: FragmentId {
                segment: SegmentId(segment),
                ..id
            },
            meta: FragmentMeta {
                codec: proto::msg::CODEC_RS_GF8_RSE,
                k: 1,
                m: 0,
                segment_len: 4,
                crc32c: proto::crc32c(b"late"),
                nodes: 1,
            },
        };
        send(as_name, req, b"late")
    };
    let why = put("manager-3", u64::MAX - 1).await;
    assert!(why.contains("fenced"), "manager-3's put: {why}");
    let why = send("manager-3", StorageRequest::Delete { id }, b"").await;
    assert!(why.contains("fenced"), "manager-3's delete: {why}");
    let host = put("manager-2", u64::MAX - 1).await;
    assert!(host.contains("Stored"), "the host's put: {host}");
    let rebuilder = put("manager-1", u64::MAX - 2).await;
    assert!(
        rebuilder.contains("Stored"),
        "the rebuild runner's put: {rebuilder}"
    );
    tc.cluster.stop().await;
}

/// Automatic takeover, split brain ruled out by construction: manager-3 is cut off from the
/// other members (they refuse its identity, as a revoked one: its renewals and raft calls
/// fail) while clients still reach it. It must stop serving (its membership lease runs
/// out) before the leader hands its group to another manager; the client then follows the
/// takeover and finds its file; healed, manager-3 finds itself deposed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_manager_cut_off_from_the_group_stops_serving_before_its_group_moves() {
    use proto::msg::ManagerRequest;
    init_logging();
    let tc = TestCluster::start_editing(1, 3, 1, 0, |f| f.manager.auto_takeover = true).await;
    let config = tc.cluster.config.clone();
    all_at_epoch(&tc, &MANAGERS, config.file.epoch).await;
    let m3 = config.node_by_name("manager-3").expect("manager-3").id;
    let client = tc.client().await;
    let dir = dir_with_file(&client, &config, m3, "kept", b"kept across the takeover").await;
    let svc3 = tc
        .cluster
        .manager_service("manager-3")
        .expect("manager-3 serves");
    let probe = ManagerRequest::GetAttr { ino: dir };
    svc3.handle(None, probe.clone())
        .await
        .expect("manager-3 serves before the cut");

    // Two renewal periods: every member has seen manager-3 renew (a host no member saw
    // since it started is never moved automatically; the group's membership reaches a
    // fresh member only with the first entries, so its first renewals reach no one).
    tokio::time::sleep(Duration::from_secs(1)).await;
    tracing::info!("--- manager-3 cut off from the other members");
    let cut = |names: std::collections::HashSet<String>| {
        for other in ["manager-1", "manager-2"] {
            tc.cluster
                .node_transport(other)
                .expect("transport")
                .set_denied(names.clone());
        }
    };
    cut(["manager-3".to_string()].into());
    let t0 = Instant::now();
    let m1 = member(&tc, "manager-1");
    let epoch = config.file.epoch;
    let (mut refused, mut served_after) = (None, false);
    let moved = loop {
        assert!(t0.elapsed() < WAIT, "no takeover within {WAIT:?}");
        if m1.epoch() > Some(epoch) {
            break t0.elapsed();
        }
        match svc3.handle(None, probe.clone()).await {
            Err(RemoteError::Unavailable(why)) if why.contains("membership lease") => {
                refused.get_or_insert(t0.elapsed());
            }
            Ok(_) => served_after |= refused.is_some(),
            Err(e) => panic!("manager-3 answered {e}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let refused = refused.expect("manager-3 never stopped serving before its group moved");
    tracing::info!(
        ?refused,
        ?moved,
        "manager-3 stopped serving, then its group moved"
    );
    assert!(
        refused < moved,
        "stopped at {refused:?}, moved at {moved:?}"
    );
    assert!(
        !served_after,
        "manager-3 served again after its lease ran out"
    );
    let committed = m1.current().expect("committed");
    let host = committed
        .nodes
        .iter()
        .find(|n| n.name == "manager-3")
        .and_then(|n| n.host.clone())
        .expect("manager-3's group has a host");
    assert!(
        host == "manager-1" || host == "manager-2",
        "manager-3's group went to {host}"
    );

    tracing::info!("--- the client follows and finds its file at {host}");
    let a = tokio::time::timeout(Duration::from_secs(60), client.lookup(dir, "kept"))
        .await
        .expect("lookup within 60 s")
        .expect("lookup at the new host");
    assert_eq!(
        common::read_all(&client, a.ino, 64).await,
        b"kept across the takeover"
    );

    tracing::info!("--- healed: manager-3 finds itself deposed");
    cut(Default::default());
    wait_until(WAIT, "manager-3's manager stops (deposed)", || {
        let stopped = svc3.is_stopped();
        async move { stopped.then_some(()) }
    })
    .await;
    tc.cluster.stop().await;
}

/// A new directory at the root served by manager `m` (the first of 64 tries), holding file
/// `name` with `data`, fsynced.
async fn dir_with_file(
    client: &fuse_client::Client,
    config: &proto::config::ClusterConfig,
    m: proto::ids::NodeId,
    name: &str,
    data: &[u8],
) -> proto::ids::InodeId {
    use proto::ids::InodeId;
    use proto::msg::Caller;
    const ROOT: Caller = Caller { uid: 0, gid: 0 };
    let mut dir = None;
    for i in 0..64 {
        let d = client
            .mkdir(InodeId::ROOT, &format!("d{i}"), 0o755, 0o022, ROOT)
            .await
            .expect("mkdir");
        if config.slot_owner(d.ino.slot()) == m {
            dir = Some(d.ino);
            break;
        }
    }
    let dir = dir.expect("a directory on the manager");
    let (f, _) = client
        .create(dir, name, 0o644, 0o022, ROOT)
        .await
        .expect("create");
    client.write(f.ino, 0, data).await.expect("write");
    client.fsync(f.ino).await.expect("fsync");
    client.release(f.ino).await.expect("release");
    dir
}
