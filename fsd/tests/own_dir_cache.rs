//! What a client answers about a directory from its own cache (issue 11, creates in one
//! round trip), on the in-process cluster (real storage servers and managers, real QUIC,
//! two or three `fuse_client::Client`s without a kernel mount):
//!
//! - a name absent from a directory the client made is answered without a manager round
//!   trip (`data::dir_names`), and the client's own creates, unlinks and renames keep that
//!   answer right;
//! - the attributes of a directory as the client's own create, unlink or rmdir in it left
//!   them answer the next getattr without a round trip (`data::attrs`), and equal what the
//!   manager says; so do a lookup of a name the client's own create made and a stat of
//!   that inode, until an own change of it (an unlink while it is open shows no links);
//! - another client's change of the directory is seen at once (its callback drops the
//!   knowledge before the change is answered);
//! - under a randomized mix of both clients' creates, unlinks, renames (over existing
//!   names too), hard links across two directories and chmods, every lookup and stat of
//!   both clients after each step matches a model and a client that caches nothing, and
//!   both clients' getattr of the directories equals that client's.

mod common;

use common::TestCluster;
use fuse_client::{Client, FsError};
use proto::ids::InodeId;
use proto::msg::{Caller, RenameFlags};
use std::collections::BTreeMap;
use std::time::Duration;

const ROOT: Caller = Caller { uid: 0, gid: 0 };
const STEP: Duration = Duration::from_secs(60);

async fn bounded<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    match tokio::time::timeout(STEP, f).await {
        Ok(v) => v,
        Err(_) => panic!("{what} did not finish within {STEP:?}"),
    }
}

async fn create(c: &Client, dir: InodeId, name: &str) -> Result<InodeId, FsError> {
    let (a, _fh) = c.create(dir, name, 0o644, 0o022, ROOT).await?;
    c.release(a.ino).await?;
    Ok(a.ino)
}

/// A directory made by `c` in the root, on the root's manager, or with `far` on another
/// one (made by a cross-manager transaction: its owner, the participant, registers the
/// maker as a reader before the answer, whether the coordinator's finish or the prepared
/// watch resolves it, so the maker learns it as empty too).
async fn own_dir(tc: &TestCluster, c: &Client, prefix: &str, far: bool) -> InodeId {
    let owner = |i: InodeId| tc.cluster.config.slot_owner(i.slot());
    for i in 0..64 {
        let d = bounded(
            "mkdir",
            c.mkdir(InodeId::ROOT, &format!("{prefix}{i}"), 0o755, 0o022, ROOT),
        )
        .await
        .expect("mkdir");
        if (owner(d.ino) != owner(InodeId::ROOT)) == far {
            return d.ino;
        }
    }
    panic!("64 directories all placed on one side (far = {far})");
}

/// The attributes of `ino` that a getattr shows, as compared between clients.
async fn seen(
    c: &Client,
    ino: InodeId,
) -> (u64, u32, u64, proto::msg::Timestamp, proto::msg::Timestamp) {
    let a = bounded("getattr", c.getattr(ino)).await.expect("getattr");
    (a.version, a.nlink, a.size, a.mtime, a.ctime)
}

/// Whether `name` exists in `dir` as `c` sees it.
/// `c`'s getattr of `dir` is answered without a GetAttr round trip (counted as local) and
/// equals what `judge`, which caches nothing of it, gets from the manager.
async fn seen_locally(c: &Client, judge: &Client, dir: InodeId, when: &str) {
    let before = c.stats();
    let mine = seen(c, dir).await;
    let after = c.stats();
    assert_eq!(
        after.rpc("GetAttr"),
        before.rpc("GetAttr"),
        "answered locally {when}"
    );
    assert_eq!(
        after.local_getattrs,
        before.local_getattrs + 1,
        "counted as local {when}"
    );
    assert_eq!(
        mine,
        seen(judge, dir).await,
        "the same attributes as the manager's {when}"
    );
}

async fn exists(c: &Client, dir: InodeId, name: &str) -> bool {
    match bounded("lookup", c.lookup(dir, name)).await {
        Ok(_) => true,
        Err(e) if e == FsError::ENOENT => false,
        Err(e) => panic!("lookup {name}: {e:?}"),
    }
}

/// `name` is absent from `dir` as `c` sees it, answered without a Lookup (counted as a
/// local negative lookup).
async fn absent_locally(c: &Client, dir: InodeId, name: &str) {
    let before = c.stats();
    assert!(!exists(c, dir, name).await);
    let after = c.stats();
    assert_eq!(
        after.rpc("Lookup"),
        before.rpc("Lookup"),
        "answered locally"
    );
    assert_eq!(
        after.local_negative_lookups,
        before.local_negative_lookups + 1
    );
}

/// `name` is absent from `dir` as `c` sees it, and `c` asked its manager (one Lookup).
async fn absent_asked(c: &Client, dir: InodeId, name: &str, when: &str) {
    let before = c.stats();
    assert!(!exists(c, dir, name).await);
    assert_eq!(
        c.stats().rpc("Lookup"),
        before.rpc("Lookup") + 1,
        "asked the manager {when}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn absent_names_in_an_own_directory_cost_no_round_trip_and_stay_right() {
    let tc = TestCluster::start(6, 2, 4, 2).await;
    let a = tc.client().await;
    let b = tc.client().await;
    let d = own_dir(&tc, &a, "own", false).await;

    // Absent in a directory we made: no Lookup sent.
    absent_locally(&a, d, "x").await;

    // Our own changes keep the answers right.
    bounded("create", create(&a, d, "x"))
        .await
        .expect("create x");
    // The directory as our create left it: no GetAttr sent, and what the manager says.
    let judge = tc.client().await;
    seen_locally(&a, &judge, d, "after the create").await;
    assert!(exists(&a, d, "x").await);
    bounded(
        "rename",
        a.rename(d, "x", d, "y", RenameFlags::default(), ROOT),
    )
    .await
    .expect("rename");
    assert!(!exists(&a, d, "x").await, "renamed away");
    assert!(exists(&a, d, "y").await);
    bounded("unlink", a.unlink(d, "y", ROOT))
        .await
        .expect("unlink");
    // The directory as our unlink left it: no GetAttr sent, and what the manager says.
    seen_locally(&a, &judge, d, "after the unlink").await;
    assert!(!exists(&a, d, "y").await, "unlinked");
    let sub = bounded("mkdir", a.mkdir(d, "sub", 0o755, 0o022, ROOT))
        .await
        .expect("mkdir sub")
        .ino;
    assert!(exists(&a, d, "sub").await);
    bounded("link", async {
        let f = create(&a, sub, "f").await.expect("create f");
        a.link(f, d, "hard", ROOT).await.expect("link");
    })
    .await;
    assert!(exists(&a, d, "hard").await);
    bounded("rmdir", async {
        a.unlink(sub, "f", ROOT).await.expect("unlink f");
        a.rmdir(d, "sub", ROOT).await.expect("rmdir");
    })
    .await;
    assert!(!exists(&a, d, "sub").await, "rmdir'd");
    let local = a.stats().local_negative_lookups;
    assert!(local >= 4, "negative lookups answered locally: {local}");

    // A file of ours still open when we unlink it: its stat shows it unlinked, as the
    // manager does, and not the attributes our create vouched for.
    let (f, _fh) = bounded("create", a.create(d, "open", 0o644, 0o022, ROOT))
        .await
        .expect("create open");
    let before = a.stats().local_positive_lookups;
    assert_eq!(shown(&a, d, "open").await.map(|s| s.0), Some(f.ino));
    assert_eq!(
        a.stats().local_positive_lookups,
        before + 1,
        "a name our create made is answered locally"
    );
    bounded("unlink open", a.unlink(d, "open", ROOT))
        .await
        .expect("unlink open");
    let after = seen(&a, f.ino).await;
    assert_eq!(after.1, 0, "unlinked while open: no links");
    assert_eq!(after, seen(&judge, f.ino).await);
    bounded("release", a.release(f.ino)).await.expect("release");

    // Another client's create in our directory: seen at once, through the manager.
    let ours = seen(&a, d).await;
    bounded("b create", create(&b, d, "from-b"))
        .await
        .expect("b create");
    let now = seen(&a, d).await;
    assert!(
        now.0 > ours.0,
        "the directory's change is seen: {ours:?} then {now:?}"
    );
    assert_eq!(now, seen(&judge, d).await);
    assert!(
        exists(&a, d, "from-b").await,
        "another client's create is seen"
    );
    absent_asked(&a, d, "z", "after another client's change").await;

    // Another client's unlink and rename in a directory we made and still know.
    let e = own_dir(&tc, &a, "second", false).await;
    bounded("create", create(&a, e, "p"))
        .await
        .expect("create p");
    assert!(!exists(&a, e, "q").await);
    bounded(
        "b rename",
        b.rename(e, "p", e, "q", RenameFlags::default(), ROOT),
    )
    .await
    .expect("b rename");
    assert!(exists(&a, e, "q").await, "another client's rename is seen");
    assert!(!exists(&a, e, "p").await);
}

/// A small deterministic generator (no dependency for one test).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn both_clients_changing_an_own_directory_match_a_model_after_every_step() {
    model_run(false).await;
}

/// The same on a directory placed on the other manager than its parent's.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn both_clients_changing_an_own_far_directory_match_a_model_after_every_step() {
    model_run(true).await;
}

/// What a lookup shows of an entry, as compared between clients: the inode, its link
/// count, mode, size and times, and the attribute version.
type Shown = (InodeId, u32, u16, u64, proto::msg::Timestamp, u64);

/// `name` in `dir` as `c` looks it up: `None` if absent.
async fn shown(c: &Client, dir: InodeId, name: &str) -> Option<Shown> {
    match bounded("lookup", c.lookup(dir, name)).await {
        Ok(a) => Some((a.ino, a.nlink, a.perm, a.size, a.ctime, a.version)),
        Err(e) if e == FsError::ENOENT => None,
        Err(e) => panic!("lookup {name}: {e:?}"),
    }
}

async fn model_run(far: bool) {
    let tc = TestCluster::start(6, 2, 4, 2).await;
    let a = tc.client().await;
    let b = tc.client().await;
    // Caches nothing of the directory: every lookup asks the manager.
    let judge = tc.client().await;
    let d = own_dir(&tc, &a, "mix", far).await;
    // A second directory of the maker's, for hard links across directories.
    let d2 = own_dir(&tc, &a, "links", far).await;
    let dirs = [d, d2];
    let names: Vec<String> = (0..12).map(|i| format!("n{i}")).collect();
    // (directory index, name) -> the file it is (a number of the model's own).
    let mut model: BTreeMap<(usize, String), u64> = BTreeMap::new();
    let mut files = 0u64;
    let mut rng = Rng(0x5eed_1234_abcd_9876);
    for step in 0..300 {
        let who = if rng.below(3) == 0 { &b } else { &a };
        let i = if rng.below(4) == 0 { 1 } else { 0 };
        let dir = dirs[i];
        let n = &names[rng.below(names.len() as u64) as usize];
        let m = &names[rng.below(names.len() as u64) as usize];
        let key = (i, n.clone());
        match rng.below(5) {
            0 | 1 => {
                let r = bounded("create", create(who, dir, n)).await;
                let fresh = !model.contains_key(&key);
                assert_eq!(r.is_ok(), fresh, "step {step}: create {n}: {r:?}");
                if fresh {
                    files += 1;
                    model.insert(key, files);
                }
            }
            2 => {
                let r = bounded("unlink", who.unlink(dir, n, ROOT)).await;
                assert_eq!(
                    r.is_ok(),
                    model.remove(&key).is_some(),
                    "step {step}: unlink {n}: {r:?}"
                );
            }
            3 => {
                // A rename within the directory, over an existing name or not.
                let r = bounded(
                    "rename",
                    who.rename(dir, n, dir, m, RenameFlags::default(), ROOT),
                )
                .await;
                assert_eq!(
                    r.is_ok(),
                    model.contains_key(&key),
                    "step {step}: rename {n} {m}: {r:?}"
                );
                // Two names of one file: rename does nothing (POSIX).
                let same =
                    model.contains_key(&key) && model.get(&key) == model.get(&(i, m.clone()));
                if r.is_ok() && !same {
                    let f = model.remove(&key).expect("in the model");
                    model.insert((i, m.clone()), f);
                }
            }
            _ => {
                // A hard link into the other directory, or a chmod.
                let to = (1 - i, m.clone());
                match model.get(&key).copied() {
                    Some(f) if rng.below(2) == 0 && !model.contains_key(&to) => {
                        let ino = bounded("lookup", who.lookup(dir, n))
                            .await
                            .expect("lookup")
                            .ino;
                        bounded("link", who.link(ino, dirs[1 - i], m, ROOT))
                            .await
                            .expect("link");
                        model.insert(to, f);
                    }
                    Some(_) => {
                        let ino = bounded("lookup", who.lookup(dir, n))
                            .await
                            .expect("lookup")
                            .ino;
                        let chmod = proto::msg::SetAttrs {
                            perm: Some(0o600 + (step as u16 % 64)),
                            uid: None,
                            gid: None,
                            size: None,
                            atime: None,
                            mtime: None,
                        };
                        bounded("chmod", who.setattr(ino, chmod, ROOT))
                            .await
                            .expect("chmod");
                    }
                    None => assert!(
                        shown(who, dir, n).await.is_none(),
                        "step {step}: {n} absent"
                    ),
                }
            }
        }
        // The directories' attributes, as all three see them.
        for dir in dirs {
            let want = seen(&judge, dir).await;
            assert_eq!(seen(&a, dir).await, want, "step {step}: maker's getattr");
            assert_eq!(seen(&b, dir).await, want, "step {step}: other's getattr");
        }
        // Every name, as the directories' maker, the other client and the judge see it:
        // present as the model says, and the same inode with the same attributes.
        for (i, dir) in dirs.into_iter().enumerate() {
            for x in &names {
                let want = shown(&judge, dir, x).await;
                let in_model = model.get(&(i, x.clone()));
                assert_eq!(
                    want.is_some(),
                    in_model.is_some(),
                    "step {step}: judge sees {x} in dir {i}"
                );
                if let (Some(w), Some(f)) = (&want, in_model) {
                    let links = model.values().filter(|g| *g == f).count() as u32;
                    assert_eq!(w.1, links, "step {step}: links of {x} in dir {i}");
                }
                assert_eq!(
                    shown(&a, dir, x).await,
                    want,
                    "step {step}: maker sees {x} in dir {i}"
                );
                assert_eq!(
                    shown(&b, dir, x).await,
                    want,
                    "step {step}: other sees {x} in dir {i}"
                );
                // A stat of the inode itself (the kernel's getattr, not through the name).
                if let Some(w) = want {
                    let truth = seen(&judge, w.0).await;
                    assert_eq!(
                        seen(&a, w.0).await,
                        truth,
                        "step {step}: maker's stat of {x}"
                    );
                    assert_eq!(
                        seen(&b, w.0).await,
                        truth,
                        "step {step}: other's stat of {x}"
                    );
                }
            }
        }
    }
    let sa = a.stats();
    assert!(
        sa.local_negative_lookups > 0,
        "the maker answered some absences locally"
    );
    assert!(
        sa.local_positive_lookups > 0,
        "the maker answered some lookups of its own files locally"
    );
    assert!(
        sa.local_getattrs + b.stats().local_getattrs > 0,
        "some getattrs were answered locally"
    );
}

/// A directory made for another manager's parent (a cross-manager transaction): the
/// participant that owns it makes the maker its reader before the answer, so another
/// client's change to it is called back to the maker (the maker caches the attributes the
/// answer carried).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_maker_of_a_directory_on_another_manager_is_its_reader() {
    let tc = TestCluster::start(6, 2, 4, 2).await;
    let a = tc.client().await;
    let b = tc.client().await;
    let owner = |i: InodeId| tc.cluster.config.slot_owner(i.slot());
    let far = own_dir(&tc, &a, "far", true).await;
    // Learnt as empty: a name it does not have costs no Lookup.
    absent_locally(&a, far, "x").await;
    let name = &tc.cluster.config.node(owner(far)).expect("owner node").name;
    let svc = tc.cluster.manager_service(name).expect("owner service");
    let (readers, _) = svc.lease_holders(far);
    assert!(
        readers.contains(&a.session()),
        "maker {:?} not a reader of {far} on {name}: {readers:?}",
        a.session()
    );
    // Another client's change to it drops the maker's registration (a callback went out).
    let before = a.stats().invalidate_callbacks;
    let chmod = proto::msg::SetAttrs {
        perm: Some(0o700),
        uid: None,
        gid: None,
        size: None,
        atime: None,
        mtime: None,
    };
    bounded("chmod", b.setattr(far, chmod, ROOT))
        .await
        .expect("chmod");
    let (readers, _) = svc.lease_holders(far);
    assert!(!readers.contains(&a.session()), "{readers:?}");
    assert!(
        a.stats().invalidate_callbacks > before,
        "no callback reached the maker"
    );
    // The callback dropped what the maker knew of it: its lookups ask again.
    absent_asked(&a, far, "x", "after the callback").await;
    a.shutdown();
    b.shutdown();
    tc.cluster.stop().await;
}
