//! One test per row of the role matrix: the roles that hold the right are allowed, every
//! other role is refused with a `Denied` naming the identity and the right.

use super::*;
use crate::ids::*;
use crate::msg::*;

fn id(name: &str, role: Role) -> PeerIdentity {
    PeerIdentity::new(name, &[role]).expect("identity")
}

fn frag(log: LogId) -> FragmentId {
    FragmentId {
        log,
        segment: SegmentId(1),
        index: 0,
    }
}

fn meta() -> FragmentMeta {
    FragmentMeta {
        codec: CODEC_RS_GF8_RSE,
        k: 4,
        m: 2,
        segment_len: 4,
        crc32c: 0,
        nodes: 0,
    }
}

/// Checks `req` against every role: exactly `allowed` pass, the others are refused with
/// `right` and their name in the error.
fn row(req: Request, allowed: &[Role], right: Right) {
    for role in Role::ALL {
        let who = id(&format!("{role}-x"), role);
        let got = check(Some(&who), &req);
        if allowed.contains(&role) {
            assert_eq!(got, Ok(()), "{role} must be allowed {req}");
        } else {
            let d = got.expect_err(&format!("{role} must be refused {req}"));
            assert_eq!(d.right, right, "{req} by {role}");
            assert!(d.identity.contains(&format!("{role}-x")), "{d}");
            assert!(d.to_string().contains(right.as_str()), "{d}");
        }
    }
}

use Role::*;

#[test]
fn ping_is_everyones() {
    row(
        Request::Ping,
        &[Storage, Manager, Client, Admin],
        Right::Ping,
    );
}

#[test]
fn no_identity_is_refused_everything() {
    let d = check(None, &Request::Ping).expect_err("refused");
    assert!(d.to_string().contains("no shoal://"), "{d}");
}

#[test]
fn reads_of_fragments_are_everyones() {
    for req in [
        StorageRequest::ReadRange {
            id: frag(LogId::client(1)),
            offset: 0,
            len: 1,
        },
        StorageRequest::Stat,
        StorageRequest::Locate {
            log: LogId::client(1),
            segment: SegmentId(0),
        },
        StorageRequest::ScrubStatus,
    ] {
        row(
            Request::Storage(req),
            &[Storage, Manager, Client, Admin],
            Right::FragmentRead,
        );
    }
}

#[test]
fn fragments_into_another_log_need_fragment_write_and_a_client_only_its_own() {
    // A manager's log: clients are refused.
    let put = |log| {
        Request::Storage(StorageRequest::PutFragment {
            id: frag(log),
            meta: meta(),
        })
    };
    row(
        put(LogId::manager(NodeId(1))),
        &[Storage, Manager, Admin],
        Right::WriteOwnLog,
    );
    // The client's own log: allowed; a neighbour's: refused.
    let alice = id("alice", Client);
    let bob = id("bob", Client);
    let own = put(LogId::client_of(alice.log_tag(), 7));
    assert_eq!(check(Some(&alice), &own), Ok(()));
    let d = check(Some(&bob), &own).expect_err("bob may not write alice's log");
    assert_eq!(d.right, Right::WriteOwnLog);
    assert!(d.identity.starts_with("bob"), "{d}");
}

#[test]
fn deleting_fragments_needs_a_manager_or_admin() {
    row(
        Request::Storage(StorageRequest::Delete {
            id: frag(LogId::client(1)),
        }),
        &[Manager, Admin],
        Right::FragmentDelete,
    );
}

#[test]
fn the_cleaners_requests_need_a_manager_or_admin() {
    row(
        Request::Manager(ManagerRequest::LiveExtents {
            log: LogId::client(1),
            segments: vec![SegmentId(1)],
        }),
        &[Manager, Admin],
        Right::Clean,
    );
    row(
        Request::Manager(ManagerRequest::Relocate { moves: vec![] }),
        &[Manager, Admin],
        Right::Clean,
    );
}

#[test]
fn listing_logs_needs_a_manager_or_admin() {
    row(
        Request::Storage(StorageRequest::ListLogs),
        &[Manager, Admin],
        Right::ListLogs,
    );
    row(
        Request::Storage(StorageRequest::ListLog {
            log: LogId::client(1),
        }),
        &[Manager, Admin],
        Right::ListLogs,
    );
}

#[test]
fn scrub_now_is_admin_only() {
    row(
        Request::Storage(StorageRequest::ScrubNow),
        &[Admin],
        Right::ScrubControl,
    );
}

#[test]
fn file_system_reads_and_writes_are_not_for_storage_servers() {
    let root = InodeId(1);
    row(
        Request::Manager(ManagerRequest::Lookup {
            parent: root,
            name: "a".into(),
        }),
        &[Client, Manager, Admin],
        Right::FsRead,
    );
    row(
        Request::Manager(ManagerRequest::Unlink {
            parent: root,
            name: "a".into(),
            caller: Caller { uid: 0, gid: 0 },
        }),
        &[Client, Manager, Admin],
        Right::FsWrite,
    );
}

#[test]
fn manager_transactions_are_managers_only() {
    for req in [
        ManagerRequest::TxOutcome {
            tx: TxId {
                coordinator: NodeId(1),
                seq: 1,
            },
        },
        ManagerRequest::TxFinish {
            tx: TxId {
                coordinator: NodeId(1),
                seq: 1,
            },
            commit: true,
            session: None,
        },
        ManagerRequest::DirMoveLock {
            token: 1,
            acquire: true,
        },
    ] {
        row(Request::Manager(req), &[Manager], Right::ManagerTxn);
    }
    row(
        Request::Manager(ManagerRequest::SealLog {
            log: LogId::client(1),
            upto: SegmentId(0),
        }),
        &[Manager, Admin],
        Right::ManagerTxn,
    );
}

#[test]
fn a_client_commits_only_extents_of_its_own_log() {
    let alice = id("alice", Client);
    let commit = |log| {
        Request::Manager(ManagerRequest::CommitWrites {
            writes: vec![InodeWrite {
                sums: Vec::new(),
                ino: InodeId(5),
                extents: vec![Extent {
                    offset: 0,
                    ptr: LogPtr {
                        seg: SegmentAddr {
                            log,
                            segment: SegmentId(0),
                            len: 1,
                            k: 4,
                            m: 2,
                            nodes: 0,
                        },
                        offset: 0,
                        len: 1,
                    },
                }],
                size: 1,
                mtime: Timestamp::default(),
            }],
            sync: false,
            standing: None,
        })
    };
    assert_eq!(
        check(Some(&alice), &commit(LogId::client_of(alice.log_tag(), 3))),
        Ok(())
    );
    let d = check(
        Some(&alice),
        &commit(LogId::client_of(log_tag_of("bob"), 3)),
    )
    .expect_err("another client's log");
    assert_eq!(d.right, Right::CommitOwnLog);
    assert!(check(Some(&alice), &commit(LogId::manager(NodeId(1)))).is_err());
    // Managers (the cleaner) and admins may commit any log; storage servers nothing.
    let bobs = commit(LogId::client_of(log_tag_of("bob"), 3));
    for role in [Manager, Admin] {
        assert_eq!(check(Some(&id("m", role)), &bobs), Ok(()));
    }
    let d = check(Some(&id("s1", Storage)), &bobs).expect_err("storage");
    assert_eq!(d.right, Right::FsWrite);
}

fn log_tag_of(name: &str) -> u32 {
    crate::identity::log_tag(name)
}

#[test]
fn sessions_are_bound_to_the_identity_whose_tag_they_carry() {
    let alice = id("alice", Client);
    let bob = id("bob", Client);
    let s = session_of(alice.log_tag(), 99);
    assert_eq!(session_tag(s), alice.log_tag());
    for req in [
        ManagerRequest::Hello { session: s },
        ManagerRequest::Renew { session: s },
        ManagerRequest::Goodbye { session: s },
        ManagerRequest::Open {
            ino: InodeId(5),
            session: s,
            access: Default::default(),
        },
        ManagerRequest::AcquireWrite {
            ino: InodeId(5),
            session: s,
            reclaim: false,
        },
    ] {
        let req = Request::Manager(req);
        assert_eq!(check(Some(&alice), &req), Ok(()), "{req}");
        let d = check(Some(&bob), &req).expect_err("bob uses alice's session");
        assert_eq!(d.right, Right::OwnSession, "{req}");
        let st = id("s1", Storage);
        assert_eq!(
            check(Some(&st), &req).expect_err("storage").right,
            Right::FsWrite
        );
    }
    let horizon = |log| {
        Request::Manager(ManagerRequest::LogHorizon {
            session: s,
            log,
            horizon: SegmentId(0),
        })
    };
    assert_eq!(
        check(Some(&alice), &horizon(LogId::client_of(alice.log_tag(), 1))),
        Ok(())
    );
    assert!(check(Some(&bob), &horizon(LogId::client_of(bob.log_tag(), 1))).is_err());
}

#[test]
fn callbacks_come_only_from_managers() {
    row(
        Request::Client(ClientCallback::Invalidate {
            inodes: vec![],
            entries: vec![],
        }),
        &[Manager],
        Right::Callback,
    );
}

#[test]
fn deny_lists_are_installed_only_by_admins() {
    row(
        Request::Admin(AdminRequest::InstallDenyList {
            list: vec![],
            signature: vec![],
        }),
        &[Admin],
        Right::Admin,
    );
}

#[test]
fn config_proposals_are_admin_only_and_config_reads_everyones() {
    row(
        Request::Admin(AdminRequest::ProposeConfig {
            expect_epoch: 1,
            file: String::new(),
        }),
        &[Admin],
        Right::Admin,
    );
    row(
        Request::Admin(AdminRequest::MoveGroup {
            group: "manager-2".into(),
            to: "manager-1".into(),
        }),
        &[Admin],
        Right::Admin,
    );
    row(
        Request::ConfigRead,
        &[Storage, Manager, Client, Admin],
        Right::Ping,
    );
}

#[test]
fn peer_reads_come_only_from_clients() {
    let seg = SegmentAddr {
        log: LogId(7),
        segment: SegmentId(3),
        len: 1 << 20,
        k: 4,
        m: 2,
        nodes: 6,
    };
    row(
        Request::Peer(PeerRequest::FetchBlock {
            ptr: LogPtr {
                seg,
                offset: 4096,
                len: 65536,
            },
        }),
        &[Client],
        Right::PeerRead,
    );
    let req = Request::Peer(PeerRequest::FetchBlock {
        ptr: LogPtr {
            seg,
            offset: 0,
            len: 1,
        },
    });
    assert_eq!(
        check(None, &req).expect_err("no identity").right,
        Right::PeerRead
    );
}

#[test]
fn config_group_raft_comes_only_from_nodes() {
    for r in [
        ConfigGroupRequest::AppendEntries,
        ConfigGroupRequest::Vote,
        ConfigGroupRequest::FullSnapshot,
    ] {
        row(
            Request::ConfigGroup(r),
            &[Storage, Manager],
            Right::ConfigGroup,
        );
        let d = check(None, &Request::ConfigGroup(r)).expect_err("no identity");
        assert_eq!(d.right, Right::ConfigGroup);
    }
}
