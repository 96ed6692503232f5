//! Mounts the real `fuse-mirror` binary on a temp dir, does file operations through it, checks
//! them on the backing dir, then stops it with SIGTERM. Needs root and /dev/fuse (skipped with
//! a message otherwise). A drop guard unmounts and kills the child, also when a check panics.

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn mounted(mnt: &Path) -> bool {
    let table = fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let want = mnt.to_string_lossy();
    table.lines().any(|l| {
        let mut f = l.split(' ');
        f.next() == Some("fuse-mirror") && f.next() == Some(want.as_ref())
    })
}

/// Polls `cond` every 20 ms for at most `limit`.
fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    cond()
}

struct MountGuard {
    child: Child,
    mnt: PathBuf,
}

impl Drop for MountGuard {
    fn drop(&mut self) {
        if mounted(&self.mnt) {
            let _ = Command::new("fusermount3")
                .arg("-u")
                .arg(&self.mnt)
                .status();
            if mounted(&self.mnt) {
                let _ = Command::new("fusermount3")
                    .arg("-uz")
                    .arg(&self.mnt)
                    .status();
            }
        }
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

#[test]
fn mirror_mount_write_read_unmount() {
    if !Path::new("/dev/fuse").exists() || !nix::unistd::geteuid().is_root() {
        println!("SKIPPED: needs root and /dev/fuse");
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let (backing, mnt) = (tmp.path().join("backing"), tmp.path().join("mnt"));
    fs::create_dir(&backing).expect("mkdir backing");
    fs::create_dir(&mnt).expect("mkdir mnt");
    fs::write(backing.join("pre"), b"existing").expect("seed");
    let child = Command::new(env!("CARGO_BIN_EXE_fuse-mirror"))
        .arg(&backing)
        .arg(&mnt)
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn fuse-mirror");
    let mut g = MountGuard {
        child,
        mnt: mnt.clone(),
    };
    assert!(
        wait_until(Duration::from_secs(10), || mounted(&mnt)),
        "not mounted within 10 s"
    );

    // existing content is visible
    assert_eq!(fs::read(mnt.join("pre")).expect("read pre"), b"existing");

    // write through the mount (1 MiB + a tail), read it back, see it in the backing dir
    let data: Vec<u8> = (0..(1 << 20) + 1234).map(|i| (i * 7 % 251) as u8).collect();
    {
        let mut f = fs::File::create(mnt.join("a")).expect("create");
        f.write_all(&data).expect("write");
        f.sync_all().expect("fsync");
    }
    let mut back = Vec::new();
    fs::File::open(mnt.join("a"))
        .expect("open")
        .read_to_end(&mut back)
        .expect("read");
    assert!(back == data, "read back differs");
    assert!(
        fs::read(backing.join("a")).expect("backing read") == data,
        "backing differs"
    );

    // pwrite in the middle, truncate, stat
    let f = fs::OpenOptions::new()
        .write(true)
        .open(mnt.join("a"))
        .expect("open rw");
    f.write_all_at(b"XYZ", 10).expect("pwrite");
    f.set_len(100).expect("truncate");
    drop(f);
    assert_eq!(fs::metadata(mnt.join("a")).expect("stat").len(), 100);
    assert_eq!(
        &fs::read(backing.join("a")).expect("backing")[8..15],
        &[data[8], data[9], b'X', b'Y', b'Z', data[13], data[14]]
    );

    // directories, rename, readdir, unlink, rmdir
    fs::create_dir(mnt.join("d")).expect("mkdir");
    fs::rename(mnt.join("a"), mnt.join("d/b")).expect("rename");
    assert_eq!(
        fs::metadata(mnt.join("d/b")).expect("stat renamed").len(),
        100
    );
    let mut names: Vec<String> = fs::read_dir(&mnt)
        .expect("readdir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["d", "pre"]);
    fs::remove_file(mnt.join("d/b")).expect("unlink");
    fs::remove_dir(mnt.join("d")).expect("rmdir");
    assert!(!backing.join("d").exists());
    let st = nix::sys::statvfs::statvfs(&mnt).expect("statfs");
    assert!(st.blocks() > 0);

    // SIGTERM unmounts and the process exits 0
    let pid = nix::unistd::Pid::from_raw(g.child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("kill");
    let mut status = None;
    assert!(
        wait_until(Duration::from_secs(10), || {
            status = g.child.try_wait().ok().flatten();
            status.is_some()
        }),
        "fuse-mirror did not exit on SIGTERM"
    );
    assert!(
        status.is_some_and(|s| s.success()),
        "exit status {status:?}"
    );
    assert!(!mounted(&mnt), "still mounted after SIGTERM");
}
