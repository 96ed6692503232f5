use super::*;
use crate::error::code;
use proto::msg::{Caller, OpenAccess, RenameFlags, Timestamp};

const ALICE: u32 = 1000;
const BOB: u32 = 1001;
const STAFF: u32 = 50;

fn cred(uid: u32, gid: u32, groups: &[u32]) -> Access {
    Access {
        cred: Credentials {
            uid,
            gid,
            groups: groups.to_vec(),
        },
        read_only: false,
    }
}

fn attr(ino: u64, kind: FileKind, perm: u16, uid: u32, gid: u32) -> Attr {
    Attr {
        ino: InodeId(ino),
        kind,
        perm,
        nlink: 1,
        uid,
        gid,
        size: 0,
        blocks_bytes: 0,
        atime: Timestamp::default(),
        mtime: Timestamp::default(),
        ctime: Timestamp::default(),
        rdev: 0,
        version: 1,
    }
}

fn facts(attrs: &[Attr], entries: &[(u64, &str, Option<&Attr>)]) -> Facts {
    Facts {
        inodes: attrs.iter().map(|a| (a.ino, a.clone())).collect(),
        entries: entries
            .iter()
            .map(|(d, n, a)| ((InodeId(*d), n.to_string()), a.cloned()))
            .collect(),
        opened: Default::default(),
    }
}

fn open(ino: u64, read: bool, write: bool) -> ManagerRequest {
    ManagerRequest::Open {
        ino: InodeId(ino),
        session: proto::ids::SessionId(1),
        access: OpenAccess { read, write },
    }
}

fn code_of(r: Result<ManagerRequest, Errno>) -> Option<proto::errno::Errno> {
    r.err().map(|e| e.code)
}

const NOBODY: Caller = Caller { uid: 0, gid: 0 };

#[test]
fn mode_bits_pick_owner_group_or_other_class() {
    let f = facts(&[attr(2, FileKind::File, 0o640, ALICE, STAFF)], &[]);
    assert!(decide(&cred(ALICE, 1, &[]), open(2, true, true), &f).is_ok());
    // Group member by primary or supplementary group: read only.
    assert!(decide(&cred(BOB, STAFF, &[]), open(2, true, false), &f).is_ok());
    assert!(decide(&cred(BOB, 7, &[9, STAFF]), open(2, true, false), &f).is_ok());
    assert_eq!(
        code_of(decide(&cred(BOB, STAFF, &[]), open(2, false, true), &f)),
        Some(code::EACCES)
    );
    // Others: nothing. The owner class is used even when it grants less than the group's.
    assert_eq!(
        code_of(decide(&cred(BOB, 7, &[]), open(2, true, false), &f)),
        Some(code::EACCES)
    );
    let g = facts(&[attr(2, FileKind::File, 0o070, ALICE, STAFF)], &[]);
    assert_eq!(
        code_of(decide(&cred(ALICE, STAFF, &[]), open(2, true, false), &g)),
        Some(code::EACCES)
    );
    // Root reads and writes anything.
    assert!(decide(&cred(0, 0, &[]), open(2, true, true), &g).is_ok());
}

#[test]
fn another_users_0600_file_is_not_readable_nor_its_extents() {
    let f = facts(&[attr(2, FileKind::File, 0o600, ALICE, ALICE)], &[]);
    let bob = cred(BOB, BOB, &[]);
    assert_eq!(
        code_of(decide(&bob, open(2, true, false), &f)),
        Some(code::EACCES)
    );
    let ext = ManagerRequest::GetExtents {
        ino: InodeId(2),
        offset: 0,
        len: 10,
    };
    assert_eq!(code_of(decide(&bob, ext.clone(), &f)), Some(code::EACCES));
    assert!(decide(&cred(ALICE, ALICE, &[]), ext.clone(), &f).is_ok());
    // A session that holds the file open (its open was checked) gets them.
    let mut held = f.clone();
    held.opened.insert(InodeId(2));
    assert!(decide(&bob, ext, &held).is_ok());
}

#[test]
fn fallocate_is_checked_like_a_write() {
    let f = facts(&[attr(2, FileKind::File, 0o644, ALICE, ALICE)], &[]);
    let punch = ManagerRequest::Fallocate {
        ino: InodeId(2),
        offset: 0,
        len: 10,
        punch: true,
        keep_size: true,
    };
    let bob = cred(BOB, BOB, &[]);
    assert_eq!(code_of(decide(&bob, punch.clone(), &f)), Some(code::EACCES));
    assert!(decide(&cred(ALICE, ALICE, &[]), punch.clone(), &f).is_ok());
    // Through a descriptor the session holds open (the kernel allows fallocate only on
    // one open for writing), like a commit of written data.
    let mut held = f.clone();
    held.opened.insert(InodeId(2));
    assert!(decide(&bob, punch.clone(), &held).is_ok());
    // A read-only export refuses it.
    let mut ro = cred(ALICE, ALICE, &[]);
    ro.read_only = true;
    assert_eq!(code_of(decide(&ro, punch, &f)), Some(code::EROFS));
}

#[test]
fn lookup_needs_search_and_readdir_needs_read() {
    let f = facts(&[attr(1, FileKind::Dir, 0o711, ALICE, ALICE)], &[]);
    let lookup = ManagerRequest::Lookup {
        parent: InodeId(1),
        name: "x".into(),
    };
    let list = ManagerRequest::ReadDir {
        ino: InodeId(1),
        offset: 0,
        max: 10,
    };
    let bob = cred(BOB, BOB, &[]);
    assert!(decide(&bob, lookup.clone(), &f).is_ok());
    assert_eq!(code_of(decide(&bob, list, &f)), Some(code::EACCES));
    let closed = facts(&[attr(1, FileKind::Dir, 0o700, ALICE, ALICE)], &[]);
    assert_eq!(
        code_of(decide(&bob, lookup.clone(), &closed)),
        Some(code::EACCES)
    );
    // Root searches any directory.
    assert!(decide(&cred(0, 0, &[]), lookup, &closed).is_ok());
}

#[test]
fn create_needs_write_and_search_and_runs_as_the_effective_caller() {
    let f = facts(&[attr(1, FileKind::Dir, 0o755, ALICE, ALICE)], &[]);
    let create = |node| ManagerRequest::Create {
        parent: InodeId(1),
        name: "n".into(),
        node,
        perm: 0o644,
        umask: 0o022,
        caller: NOBODY,
        session: None,
    };
    assert_eq!(
        code_of(decide(&cred(BOB, BOB, &[]), create(NewNode::File), &f)),
        Some(code::EACCES)
    );
    match decide(&cred(ALICE, 5, &[]), create(NewNode::File), &f) {
        Ok(ManagerRequest::Create { caller, .. }) => {
            assert_eq!(caller, Caller { uid: ALICE, gid: 5 })
        }
        other => panic!("{other:?}"),
    }
    let dev = NewNode::Special {
        kind: FileKind::CharDev,
        rdev: 1,
    };
    assert_eq!(
        code_of(decide(&cred(ALICE, ALICE, &[]), create(dev.clone()), &f)),
        Some(code::EPERM)
    );
    assert!(decide(&cred(0, 0, &[]), create(dev), &f).is_ok());
}

#[test]
fn sticky_directories_protect_other_users_entries() {
    let tmp = attr(1, FileKind::Dir, 0o1777, 0, 0);
    let alices = attr(2, FileKind::File, 0o644, ALICE, ALICE);
    let f = facts(std::slice::from_ref(&tmp), &[(1, "a", Some(&alices))]);
    let unlink = ManagerRequest::Unlink {
        parent: InodeId(1),
        name: "a".into(),
        caller: NOBODY,
    };
    assert_eq!(
        code_of(decide(&cred(BOB, BOB, &[]), unlink.clone(), &f)),
        Some(code::EPERM)
    );
    assert!(decide(&cred(ALICE, ALICE, &[]), unlink.clone(), &f).is_ok());
    assert!(decide(&cred(0, 0, &[]), unlink.clone(), &f).is_ok());
    // Without the sticky bit, write permission on the directory is enough.
    let open_tmp = facts(
        &[attr(1, FileKind::Dir, 0o777, 0, 0)],
        &[(1, "a", Some(&alices))],
    );
    assert!(decide(&cred(BOB, BOB, &[]), unlink, &open_tmp).is_ok());
    // Renaming over someone else's entry in a sticky directory is refused too.
    let mine = attr(3, FileKind::File, 0o644, BOB, BOB);
    let f = facts(&[tmp], &[(1, "b", Some(&mine)), (1, "a", Some(&alices))]);
    let rename = ManagerRequest::Rename {
        parent: InodeId(1),
        name: "b".into(),
        new_parent: InodeId(1),
        new_name: "a".into(),
        flags: RenameFlags::default(),
        caller: NOBODY,
    };
    assert_eq!(
        code_of(decide(&cred(BOB, BOB, &[]), rename, &f)),
        Some(code::EPERM)
    );
}

#[test]
fn moving_a_directory_to_another_parent_needs_write_on_it() {
    let a = attr(1, FileKind::Dir, 0o777, 0, 0);
    let b = attr(2, FileKind::Dir, 0o777, 0, 0);
    let d = attr(3, FileKind::Dir, 0o755, ALICE, ALICE);
    let f = facts(&[a, b], &[(1, "d", Some(&d)), (2, "d", None)]);
    let rename = |np| ManagerRequest::Rename {
        parent: InodeId(1),
        name: "d".into(),
        new_parent: InodeId(np),
        new_name: "d".into(),
        flags: RenameFlags::default(),
        caller: NOBODY,
    };
    assert_eq!(
        code_of(decide(&cred(BOB, BOB, &[]), rename(2), &f)),
        Some(code::EACCES)
    );
    assert!(decide(&cred(ALICE, ALICE, &[]), rename(2), &f).is_ok());
}

fn setattr_req(set: SetAttrs) -> ManagerRequest {
    ManagerRequest::SetAttr {
        ino: InodeId(2),
        set,
        caller: NOBODY,
    }
}

fn set_of(r: Result<ManagerRequest, Errno>) -> SetAttrs {
    match r {
        Ok(ManagerRequest::SetAttr { set, .. }) => set,
        other => panic!("{other:?}"),
    }
}

#[test]
fn chmod_by_owner_or_root_chown_by_root_or_owner_to_own_group() {
    let f = facts(&[attr(2, FileKind::File, 0o644, ALICE, ALICE)], &[]);
    let chmod = setattr_req(SetAttrs {
        perm: Some(0o600),
        ..Default::default()
    });
    assert_eq!(
        code_of(decide(&cred(BOB, BOB, &[]), chmod.clone(), &f)),
        Some(code::EPERM)
    );
    assert!(decide(&cred(ALICE, ALICE, &[]), chmod, &f).is_ok());
    let chown = setattr_req(SetAttrs {
        uid: Some(BOB),
        ..Default::default()
    });
    assert_eq!(
        code_of(decide(&cred(ALICE, ALICE, &[]), chown.clone(), &f)),
        Some(code::EPERM)
    );
    assert!(decide(&cred(0, 0, &[]), chown, &f).is_ok());
    let chgrp = |g| {
        setattr_req(SetAttrs {
            gid: Some(g),
            ..Default::default()
        })
    };
    assert!(decide(&cred(ALICE, ALICE, &[STAFF]), chgrp(STAFF), &f).is_ok());
    assert_eq!(
        code_of(decide(&cred(ALICE, ALICE, &[]), chgrp(STAFF), &f)),
        Some(code::EPERM)
    );
    assert_eq!(
        code_of(decide(&cred(BOB, STAFF, &[]), chgrp(STAFF), &f)),
        Some(code::EPERM)
    );
}

#[test]
fn non_root_chmod_drops_setgid_for_a_group_the_caller_is_not_in() {
    let f = facts(&[attr(2, FileKind::File, 0o755, ALICE, STAFF)], &[]);
    let chmod = setattr_req(SetAttrs {
        perm: Some(0o2755),
        ..Default::default()
    });
    assert_eq!(
        set_of(decide(&cred(ALICE, ALICE, &[]), chmod.clone(), &f)).perm,
        Some(0o755)
    );
    assert_eq!(
        set_of(decide(&cred(ALICE, ALICE, &[STAFF]), chmod.clone(), &f)).perm,
        Some(0o2755)
    );
    assert_eq!(
        set_of(decide(&cred(0, 0, &[]), chmod, &f)).perm,
        Some(0o2755)
    );
}

#[test]
fn truncate_needs_write_and_clears_set_id_bits_unless_root() {
    let f = facts(&[attr(2, FileKind::File, 0o6777, ALICE, STAFF)], &[]);
    let trunc = setattr_req(SetAttrs {
        size: Some(0),
        ..Default::default()
    });
    assert_eq!(
        set_of(decide(&cred(BOB, BOB, &[]), trunc.clone(), &f)).perm,
        Some(0o777)
    );
    assert_eq!(
        set_of(decide(&cred(0, 0, &[]), trunc.clone(), &f)).perm,
        None
    );
    // Set-group-ID without group execute is mandatory locking, not a privilege: kept.
    let g = facts(&[attr(2, FileKind::File, 0o6766, ALICE, STAFF)], &[]);
    assert_eq!(
        set_of(decide(&cred(BOB, BOB, &[]), trunc.clone(), &g)).perm,
        Some(0o2766)
    );
    let ro = facts(&[attr(2, FileKind::File, 0o644, ALICE, STAFF)], &[]);
    assert_eq!(
        code_of(decide(&cred(BOB, BOB, &[]), trunc, &ro)),
        Some(code::EACCES)
    );
}

#[test]
fn a_writer_may_clear_set_id_bits_but_change_nothing_else() {
    // What the kernel sends on behalf of a non-owner's write to a setuid file.
    let f = facts(&[attr(2, FileKind::File, 0o4777, ALICE, ALICE)], &[]);
    let kill = setattr_req(SetAttrs {
        perm: Some(0o777),
        ..Default::default()
    });
    assert!(decide(&cred(BOB, BOB, &[]), kill, &f).is_ok());
    // Set-group-ID without group execute stays; clearing set-user-ID alone is allowed.
    let g = facts(&[attr(2, FileKind::File, 0o6767, ALICE, ALICE)], &[]);
    let kill_uid = setattr_req(SetAttrs {
        perm: Some(0o2767),
        ..Default::default()
    });
    assert!(decide(&cred(BOB, BOB, &[]), kill_uid, &g).is_ok());
    let add = setattr_req(SetAttrs {
        perm: Some(0o6777),
        ..Default::default()
    });
    assert_eq!(
        code_of(decide(&cred(BOB, BOB, &[]), add, &g)),
        Some(code::EPERM)
    );
    let other = setattr_req(SetAttrs {
        perm: Some(0o4755),
        ..Default::default()
    });
    assert_eq!(
        code_of(decide(&cred(BOB, BOB, &[]), other, &f)),
        Some(code::EPERM)
    );
}

#[test]
fn times_now_need_write_explicit_times_need_ownership() {
    let f = facts(&[attr(2, FileKind::File, 0o666, ALICE, ALICE)], &[]);
    let now = setattr_req(SetAttrs {
        atime: Some(SetTime::Now),
        mtime: Some(SetTime::Now),
        ..Default::default()
    });
    let at = setattr_req(SetAttrs {
        mtime: Some(SetTime::At(Timestamp { secs: 5, nanos: 0 })),
        ..Default::default()
    });
    assert!(decide(&cred(BOB, BOB, &[]), now.clone(), &f).is_ok());
    assert_eq!(
        code_of(decide(&cred(BOB, BOB, &[]), at.clone(), &f)),
        Some(code::EPERM)
    );
    assert!(decide(&cred(ALICE, ALICE, &[]), at, &f).is_ok());
    let ro = facts(&[attr(2, FileKind::File, 0o644, ALICE, ALICE)], &[]);
    assert_eq!(
        code_of(decide(&cred(BOB, BOB, &[]), now, &ro)),
        Some(code::EACCES)
    );
}

#[test]
fn xattr_namespaces() {
    let f = facts(&[attr(2, FileKind::File, 0o644, ALICE, ALICE)], &[]);
    let set = |name: &str| ManagerRequest::SetXattr {
        ino: InodeId(2),
        name: name.into(),
        value: vec![1],
        flags: 0,
        caller: NOBODY,
    };
    let get = |name: &str| ManagerRequest::GetXattr {
        ino: InodeId(2),
        name: name.into(),
    };
    let bob = cred(BOB, BOB, &[]);
    assert_eq!(code_of(decide(&bob, set("user.a"), &f)), Some(code::EACCES));
    assert!(decide(&bob, get("user.a"), &f).is_ok());
    assert!(decide(&cred(ALICE, ALICE, &[]), set("user.a"), &f).is_ok());
    assert_eq!(
        code_of(decide(&cred(ALICE, ALICE, &[]), set("trusted.a"), &f)),
        Some(code::EPERM)
    );
    assert_eq!(
        code_of(decide(&bob, get("trusted.a"), &f)),
        Some(code::EPERM)
    );
    assert!(decide(&cred(0, 0, &[]), set("trusted.a"), &f).is_ok());
    assert_eq!(
        code_of(decide(&bob, set("system.posix_acl_access"), &f)),
        Some(code::EPERM)
    );
    assert_eq!(
        code_of(decide(&bob, set("weird.a"), &f)),
        Some(code::EOPNOTSUPP)
    );
}

#[test]
fn root_is_squashed_unless_trusted_and_all_squash_maps_everyone() {
    let root = Credentials {
        uid: 0,
        gid: 0,
        groups: vec![0, 4],
    };
    let alice = Credentials {
        uid: ALICE,
        gid: 0,
        groups: vec![0, STAFF],
    };
    let default = ExportOptions::default();
    let a = effective(&default, Some(&root));
    assert_eq!((a.cred.uid, a.cred.gid), (ANON_ID, ANON_ID));
    assert!(a.cred.groups.is_empty());
    let a = effective(&default, Some(&alice));
    assert_eq!((a.cred.uid, a.cred.gid), (ALICE, ANON_ID));
    assert_eq!(a.cred.groups, vec![ANON_ID, STAFF]);
    let trusted = ExportOptions {
        trusted: true,
        ..Default::default()
    };
    assert_eq!(effective(&trusted, Some(&root)).cred, root);
    let all = ExportOptions {
        trusted: true,
        all_squash: true,
        ..Default::default()
    };
    assert_eq!(effective(&all, Some(&alice)).cred.uid, ANON_ID);
    // No credentials at all: the client's root, squashed unless trusted.
    assert_eq!(effective(&trusted, None).cred.uid, 0);
    assert_eq!(effective(&default, None).cred.uid, ANON_ID);
    // Squashed root cannot read root's 0600 file.
    let f = facts(&[attr(2, FileKind::File, 0o600, 0, 0)], &[]);
    assert_eq!(
        code_of(decide(
            &effective(&default, Some(&root)),
            open(2, true, false),
            &f
        )),
        Some(code::EACCES)
    );
}

#[test]
fn read_only_exports_refuse_every_change_with_erofs() {
    let mut who = cred(ALICE, ALICE, &[]);
    who.read_only = true;
    let f = facts(
        &[
            attr(1, FileKind::Dir, 0o777, ALICE, ALICE),
            attr(2, FileKind::File, 0o666, ALICE, ALICE),
        ],
        &[],
    );
    assert_eq!(
        code_of(decide(&who, open(2, false, true), &f)),
        Some(code::EROFS)
    );
    assert!(decide(&who, open(2, true, false), &f).is_ok());
    let create = ManagerRequest::Create {
        parent: InodeId(1),
        name: "n".into(),
        node: NewNode::File,
        perm: 0o644,
        umask: 0,
        caller: NOBODY,
        session: None,
    };
    assert_eq!(code_of(decide(&who, create, &f)), Some(code::EROFS));
    let commit = ManagerRequest::CommitWrites {
        writes: vec![],
        sync: false,
        standing: None,
    };
    assert_eq!(code_of(decide(&who, commit, &f)), Some(code::EROFS));
}

#[test]
fn manager_requests_are_never_decided_for_clients() {
    let req = ManagerRequest::DirMoveLock {
        token: 1,
        acquire: true,
    };
    assert!(needs(&req).is_empty());
    assert_eq!(
        code_of(decide(&cred(0, 0, &[]), req, &Facts::default())),
        Some(code::EPERM)
    );
}

proptest::proptest! {
    /// Whatever manager request random bytes decode to (behind a valid variant tag), with
    /// random credentials, export options and attributes for what it needs: the check
    /// answers a request or an errno, never a panic (bounded fuzz run).
    #[test]
    fn decide_never_panics_on_decoded_requests(
        sub in 0u8..40,
        bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200),
        uid in 0u32..3,
        groups in proptest::collection::vec(0u32..3, 0..4),
        perms in proptest::collection::vec(0u16..0o10000, 4),
        owners in proptest::collection::vec(0u32..3, 4),
        opts in 0u8..8,
        present in proptest::prelude::any::<bool>(),
    ) {
        let mut tagged = vec![sub];
        tagged.extend_from_slice(&bytes);
        let Some(req) = (0..tagged.len()).rev().find_map(|end| {
            postcard::take_from_bytes::<ManagerRequest>(&tagged[..=end]).ok().map(|(r, _)| r)
        }) else {
            return Ok(());
        };
        let export = ExportOptions {
            trusted: opts & 1 != 0,
            all_squash: opts & 2 != 0,
            read_only: opts & 4 != 0,
        };
        let claimed = Credentials { uid, gid: uid, groups };
        let who = effective(&export, Some(&claimed));
        let mut f = Facts::default();
        for (k, need) in needs(&req).into_iter().enumerate() {
            let kind = if k % 2 == 0 { FileKind::Dir } else { FileKind::File };
            let a = |ino: InodeId| {
                let mut a = attr(ino.0, kind, perms[k % 4], owners[k % 4], owners[(k + 1) % 4]);
                a.ino = ino;
                a
            };
            match need {
                Need::Inode(ino) => {
                    f.inodes.insert(ino, a(ino));
                }
                Need::Entry(dir, name) => {
                    let v = present.then(|| a(InodeId(dir.0.wrapping_add(1))));
                    f.entries.insert((dir, name), v);
                }
            }
        }
        let _ = decide(&who, req, &f);
    }
}

#[test]
fn copy_range_reads_the_source_and_writes_the_destination() {
    let secret = attr(2, FileKind::File, 0o600, ALICE, ALICE);
    let open = attr(3, FileKind::File, 0o666, ALICE, ALICE);
    let mine = attr(4, FileKind::File, 0o644, BOB, BOB);
    let f = facts(&[secret, open, mine], &[]);
    let copy = |src: u64, dst: u64| ManagerRequest::CopyRange {
        src: InodeId(src),
        src_offset: 0,
        dst: InodeId(dst),
        dst_offset: 0,
        len: 10,
    };
    let bob = cred(BOB, BOB, &[]);
    // Sharing Alice's 0600 file's extents into Bob's own file would read it: refused.
    assert_eq!(code_of(decide(&bob, copy(2, 4), &f)), Some(code::EACCES));
    // Into a file Bob may not write: refused.
    let ro_dst = facts(&[attr(5, FileKind::File, 0o644, ALICE, ALICE)], &[]);
    let mut both = f.clone();
    both.inodes.extend(ro_dst.inodes);
    assert_eq!(code_of(decide(&bob, copy(3, 5), &both)), Some(code::EACCES));
    assert!(decide(&bob, copy(3, 4), &f).is_ok());
    // A read-only export refuses it.
    let mut ro = cred(BOB, BOB, &[]);
    ro.read_only = true;
    assert_eq!(code_of(decide(&ro, copy(3, 4), &f)), Some(code::EROFS));
}
