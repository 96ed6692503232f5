//! The client core against real storage servers and the real manager: write-back through
//! the log, read-back from storage by a second client, truncate, readdir paging, and (when
//! the machine allows it) a real FUSE mount.

mod common;

use common::{pattern, TestCluster};
use proto::ids::InodeId;
use proto::msg::{Caller, SetAttrs};

const ME: Caller = Caller { uid: 0, gid: 0 };

/// A model of a file: bytes with zeros in holes.
fn model_write(model: &mut Vec<u8>, off: usize, data: &[u8]) {
    if model.len() < off + data.len() {
        model.resize(off + data.len(), 0);
    }
    model[off..off + data.len()].copy_from_slice(data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t10_write_fsync_and_read_back_from_storage() {
    let cluster = TestCluster::start(256 << 10).await;
    let a = cluster.client().await;
    let (attr, _fh) = a
        .create(InodeId::ROOT, "f", 0o644, 0o022, ME)
        .await
        .expect("create");
    let ino = attr.ino;
    let mut model = Vec::new();
    {
        tracing::info!("--- writes with a hole and an overwrite, read before any flush");
        for (off, seed, len) in [
            (0usize, 1u8, 100_000usize),
            (300_000, 2, 70_000),
            (50_000, 3, 10),
        ] {
            let data = pattern(seed, len);
            assert_eq!(
                a.write(ino, off as u64, &data).await.expect("write"),
                len as u32
            );
            model_write(&mut model, off, &data);
        }
        let got = a.read(ino, 0, 1 << 20).await.expect("read dirty");
        assert_eq!(got.len(), model.len(), "short read at EOF");
        assert!(got[..] == model[..], "dirty read differs");
        assert_eq!(a.getattr(ino).await.expect("attr").size, model.len() as u64);
    }
    {
        tracing::info!("--- fsync commits durably and releases dirty memory");
        a.fsync(ino).await.expect("fsync");
        assert_eq!(a.dirty_bytes(), 0);
        let durable = cluster.manager.durable_state().await;
        let node = durable.inode(ino).expect("the file is in the log");
        assert_eq!(node.attr.size, model.len() as u64);
        assert!(node.sessions.contains(&a.session()), "A holds it open");
    }
    {
        tracing::info!("--- a second client reads through extents and the log");
        let b = cluster.client().await;
        let got = b.read(ino, 0, 1 << 20).await.expect("read from storage");
        assert!(got[..] == model[..], "storage read differs");
        let mid = b.read(ino, 99_990, 30).await.expect("partial");
        assert!(mid[..] == model[99_990..100_020]);
        assert!(b
            .read(ino, model.len() as u64 + 5, 10)
            .await
            .expect("past eof")
            .is_empty());
    }
    {
        tracing::info!("--- truncate down, extend with a write: the gap reads as zeros");
        a.write(ino, 10, b"dirty-then-truncated")
            .await
            .expect("write");
        let set = SetAttrs {
            size: Some(20),
            ..Default::default()
        };
        assert_eq!(a.setattr(ino, set, ME).await.expect("truncate").size, 20);
        model_write(&mut model, 10, b"dirty-then-truncated");
        model.truncate(20);
        a.write(ino, 200_000, b"tail").await.expect("write");
        model_write(&mut model, 200_000, b"tail");
        a.sync_all().await.expect("sync");
        let b = cluster.client().await;
        let got = b.read(ino, 0, 1 << 20).await.expect("read");
        assert_eq!(got.len(), 200_004);
        assert!(got[..] == model[..], "truncate/extend differs");
        let own = a.read(ino, 0, 1 << 20).await.expect("own read");
        assert!(own[..] == model[..], "own cached read differs");
    }
    let fs = a.statfs().await.expect("statfs");
    assert_eq!(fs.bsize, 4096);
    assert!(fs.files >= 2 && fs.ffree > 0);
    a.release(ino).await.expect("release");
    // The release is sent a moment after the last close (with others: `ReleaseMany`).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let durable = cluster.manager.durable_state().await;
        let node = durable.inode(ino).expect("the file is in the log");
        if node.sessions.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "released, yet open by {:?}",
            node.sessions
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t20_large_writes_span_segments_via_the_flusher() {
    let cluster = TestCluster::start(128 << 10).await;
    let a = cluster.client().await;
    let (attr, _) = a
        .create(InodeId::ROOT, "big", 0o644, 0, ME)
        .await
        .expect("create");
    let data = pattern(9, 3 << 20);
    for (i, chunk) in data.chunks(1 << 20).enumerate() {
        a.write(attr.ino, (i << 20) as u64, chunk)
            .await
            .expect("write");
    }
    a.sync_all().await.expect("sync all");
    assert_eq!(a.dirty_bytes(), 0);
    let b = cluster.client().await;
    let mut got = Vec::new();
    let mut off = 0u64;
    for _ in 0..8 {
        let part = b.read(attr.ino, off, 1 << 20).await.expect("read");
        if part.is_empty() {
            break;
        }
        off += part.len() as u64;
        got.extend_from_slice(&part);
    }
    assert!(got == data, "3 MiB read back differs");
    let extents = cluster.manager.extents(attr.ino).await.len();
    assert!(
        extents >= 3 * 8,
        "expected segments of at most 128 KiB, got {extents} extents"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t30_readdir_pages_through_100k_entries() {
    let cluster = TestCluster::start(1 << 20).await;
    let a = cluster.client().await;
    let dir = a
        .mkdir(InodeId::ROOT, "d", 0o755, 0, ME)
        .await
        .expect("mkdir");
    cluster.manager.fill_dir(dir.ino, 100_000).await;
    let fh = a.opendir(dir.ino).await.expect("opendir");
    let mut offset = 0;
    let mut names = Vec::new();
    for _ in 0..10_000 {
        let items = a.readdir(dir.ino, fh, offset).await.expect("readdir");
        let Some(last) = items.last() else { break };
        // The kernel takes only what fits: take 150 at a time like a 4 KiB buffer would.
        for it in items.iter().take(150) {
            names.push(it.name.clone());
            offset = it.offset;
        }
        assert!(last.offset >= offset);
    }
    a.releasedir(fh);
    assert_eq!(names.len(), 100_002);
    assert_eq!(names[0], ".");
    assert_eq!(names[1], "..");
    let mut uniq = names.clone();
    uniq.sort();
    uniq.dedup();
    assert_eq!(uniq.len(), names.len(), "an entry was listed twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t40_fuse_mount_basic_ops() {
    let root = nix::unistd::geteuid().is_root();
    if !root
        || std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/fuse")
            .is_err()
    {
        eprintln!("skipping: needs root and /dev/fuse");
        return;
    }
    let cluster = TestCluster::start(1 << 20).await;
    let client = cluster.client().await;
    let mnt = cluster.tmp.path().join("mnt");
    std::fs::create_dir(&mnt).expect("mkdir");
    let opts = fuse_client::MountOptions::default();
    let mount =
        fuse_client::mount(client, tokio::runtime::Handle::current(), &mnt, &opts).expect("mount");
    let m = mnt.clone();
    let data = pattern(5, 3 << 20);
    let expect = data.clone();
    tokio::task::spawn_blocking(move || {
        use std::io::{Read, Seek, SeekFrom, Write};
        std::fs::create_dir(m.join("sub")).expect("mkdir");
        let mut f = std::fs::File::create(m.join("sub/file")).expect("create");
        f.write_all(&data).expect("write");
        f.sync_all().expect("fsync");
        drop(f);
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(m.join("sub/file"))
            .expect("open");
        f.write_all(b"appended").expect("append");
        drop(f);
        let mut back = Vec::new();
        std::fs::File::open(m.join("sub/file"))
            .expect("open")
            .read_to_end(&mut back)
            .expect("read");
        assert_eq!(back.len(), expect.len() + 8);
        assert!(back[..expect.len()] == expect[..]);
        assert_eq!(&back[expect.len()..], b"appended");
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(m.join("sub/file"))
            .expect("open");
        f.set_len(10).expect("truncate");
        f.seek(SeekFrom::Start(0)).expect("seek");
        drop(f);
        assert_eq!(
            std::fs::metadata(m.join("sub/file")).expect("stat").len(),
            10
        );
        std::os::unix::fs::symlink("file", m.join("sub/link")).expect("symlink");
        assert_eq!(
            std::fs::read_link(m.join("sub/link"))
                .expect("readlink")
                .to_str(),
            Some("file")
        );
        let mut names: Vec<String> = std::fs::read_dir(m.join("sub"))
            .expect("readdir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, vec!["file", "link"]);
        std::fs::remove_file(m.join("sub/link")).expect("unlink");
        assert!(std::fs::metadata(m.join("sub/link")).is_err());
    })
    .await
    .expect("file ops");
    mount.unmount().await.expect("unmount");
}

/// `shoal.unflushed` (`Client::unflushed_inodes`) names the files whose writes no manager
/// has yet, and only those: a buffered write is listed until its fsync, a file written and
/// synced is not, and the virtual xattr gives the same list as JSON.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t50_unflushed_lists_exactly_the_files_with_uncommitted_writes() {
    // No background flush during the test: only the fsyncs commit.
    let cluster =
        TestCluster::start_with(256 << 10, |f| f.client.flush_interval_ms = 600_000).await;
    let a = cluster.client().await;
    let (f, _) = a
        .create(InodeId::ROOT, "f", 0o644, 0o022, ME)
        .await
        .expect("create f");
    let (g, _) = a
        .create(InodeId::ROOT, "g", 0o644, 0o022, ME)
        .await
        .expect("create g");
    assert_eq!(a.unflushed_inodes(), Vec::<InodeId>::new());
    a.write(f.ino, 0, b"buffered").await.expect("write f");
    a.write(g.ino, 0, b"synced").await.expect("write g");
    let mut both = vec![f.ino, g.ino];
    both.sort_unstable();
    assert_eq!(a.unflushed_inodes(), both);
    a.fsync(g.ino).await.expect("fsync g");
    assert_eq!(a.unflushed_inodes(), vec![f.ino]);
    let listed = a
        .getxattr(InodeId::ROOT, fuse_client::UNFLUSHED_XATTR)
        .await
        .expect("getxattr");
    assert_eq!(
        String::from_utf8(listed).expect("utf-8"),
        format!("[{}]", f.ino.0)
    );
    a.fsync(f.ino).await.expect("fsync f");
    assert_eq!(a.unflushed_inodes(), Vec::<InodeId>::new());
}

/// The sessions the manager lists as holding `ino` open, as its log has them (`None`: the
/// inode is gone).
async fn open_by(cluster: &TestCluster, ino: InodeId) -> Option<usize> {
    let st = cluster.manager.durable_state().await;
    st.inode(ino).map(|i| i.sessions.len())
}

/// Waits (bounded) until the manager lists nobody holding `ino` open.
async fn released(cluster: &TestCluster, ino: InodeId) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while open_by(cluster, ino).await != Some(0) {
        assert!(
            std::time::Instant::now() < deadline,
            "{ino} not released: {:?}",
            open_by(cluster, ino).await
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Creates `name` in the root and closes it (its last close: a release owed).
async fn create_closed(c: &fuse_client::Client, name: &str) -> InodeId {
    let (attr, _fh) = c
        .create(InodeId::ROOT, name, 0o644, 0o022, ME)
        .await
        .expect("create");
    c.release(attr.ino).await.expect("close");
    attr.ino
}

/// Last closes owe their manager a release, sent a moment later with others
/// (`ReleaseMany`): every one arrives; an open before it is sent takes it back (the file
/// stays open at the manager whatever the releaser does meanwhile); an unlink sends the
/// owed releases first, so a file this client just closed is freed by the unlink itself,
/// not kept as an orphan.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t60_deferred_releases_arrive_and_never_release_a_reopened_file() {
    let cluster = TestCluster::start(256 << 10).await;
    let a = cluster.client().await;
    let rw = proto::msg::OpenAccess {
        read: true,
        write: true,
    };
    let mut inos = Vec::new();
    for i in 0..200 {
        inos.push(create_closed(&a, &format!("c{i}")).await);
    }
    for ino in &inos {
        released(&cluster, *ino).await;
    }
    let batches = a.stats().rpc("Release");
    assert!(batches >= 1, "no release was sent");

    // Close and open again at once, many times: the manager lists the file open after
    // every reopen, whichever of the releaser and the open took the slot first.
    let (attr, _fh) = a
        .create(InodeId::ROOT, "again", 0o644, 0o022, ME)
        .await
        .expect("create");
    let f = attr.ino;
    for round in 0..50 {
        a.release(f).await.expect("close");
        if round % 7 == 0 {
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        a.open(f, rw).await.expect("reopen");
        assert_eq!(open_by(&cluster, f).await, Some(1), "round {round}");
    }
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert_eq!(
        open_by(&cluster, f).await,
        Some(1),
        "still open after the releaser ran"
    );
    a.release(f).await.expect("close");
    released(&cluster, f).await;

    // Close, then unlink at once: no orphan left behind.
    for i in 0..20 {
        let ino = create_closed(&a, &format!("u{i}")).await;
        a.unlink(InodeId::ROOT, &format!("u{i}"), ME)
            .await
            .expect("unlink");
        assert_eq!(open_by(&cluster, ino).await, None, "u{i} kept as an orphan");
    }
}
