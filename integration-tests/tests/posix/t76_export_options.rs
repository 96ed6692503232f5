//! Issue 10 item 3 through real mounts: a non-owner's write clears set-user-ID and
//! set-group-ID; mounts are nosuid,nodev by default; root squash is on for an issued
//! client identity (root there creates files owned by 65534 and cannot read root's 0600
//! file, the manager refusing what the kernel let through); a read-only identity gets
//! EROFS.

use crate::mounted_cluster;
use anyhow::{bail, Context, Result};
use integration_tests::sys::{run_as, ChildOp};
use integration_tests::TestCluster;
use std::fs::{self, Permissions};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::{Duration, Instant};
use tracing::info;

const NOBODY: u32 = 65534;

fn issue(c: &TestCluster, name: &str, opts: &[&str]) -> Result<()> {
    let dir = c.dir().to_string_lossy().into_owned();
    let mut args = vec!["cert", "issue", "--cluster", dir.as_str(), "client", name];
    args.extend_from_slice(opts);
    let out = c.env().run(&args, Duration::from_secs(60))?;
    if out.code != Some(0) {
        bail!("shoal cert issue {name} failed: {out}");
    }
    Ok(())
}

/// The mode of `p`, waiting (bounded) for the kernel's cached attributes (1 s TTL) to
/// show `want`; returns the last mode seen.
fn mode_settles(p: &Path, want: u32) -> Result<u32> {
    let start = Instant::now();
    loop {
        let mode = fs::metadata(p)?.mode() & 0o7777;
        if mode == want || start.elapsed() > Duration::from_secs(5) {
            return Ok(mode);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn mount_options(p: &Path) -> Result<String> {
    let mounts = fs::read_to_string("/proc/mounts")?;
    let p = p.to_string_lossy();
    mounts
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some(&*p))
        .and_then(|l| l.split_whitespace().nth(3))
        .map(str::to_string)
        .context("mount not in /proc/mounts")
}

#[test]
fn t76_setid_clearing_root_squash_and_read_only_identities() -> Result<()> {
    let (c, m) = mounted_cluster(&["--allow-other"])?;
    {
        info!("--- default mount options: nosuid,nodev");
        let opts = mount_options(m.path())?;
        let has = |o: &str| opts.split(',').any(|x| x == o);
        assert!(has("nosuid") && has("nodev"), "mount options {opts}");
    }
    {
        info!("--- a write by a non-owner clears set-user-ID and set-group-ID");
        fs::set_permissions(m.path(), Permissions::from_mode(0o755))?;
        fs::write(m.join("suid"), b"#!/bin/true\n")?;
        fs::set_permissions(m.join("suid"), Permissions::from_mode(0o6777))?;
        assert_eq!(fs::metadata(m.join("suid"))?.mode() & 0o7777, 0o6777);
        assert_eq!(
            run_as(
                NOBODY,
                NOBODY,
                &ChildOp::Append(ChildOp::path(&m.join("suid")))
            )?,
            Ok(()),
            "nobody writes the 0777 file"
        );
        assert_eq!(
            mode_settles(&m.join("suid"), 0o777)?,
            0o777,
            "set-ID bits cleared"
        );
        assert_eq!(fs::read(m.join("suid"))?, b"#!/bin/true\n!");
        info!("--- and chown clears them too");
        fs::set_permissions(m.join("suid"), Permissions::from_mode(0o4755))?;
        std::os::unix::fs::chown(m.join("suid"), Some(NOBODY), None)?;
        assert_eq!(mode_settles(&m.join("suid"), 0o755)?, 0o755);
    }
    {
        info!("--- setup as trusted root: a 0777 dir and a 0600 root file");
        fs::create_dir(m.join("open"))?;
        fs::set_permissions(m.join("open"), Permissions::from_mode(0o777))?;
        fs::write(m.join("rootsecret"), b"root only")?;
        fs::set_permissions(m.join("rootsecret"), Permissions::from_mode(0o600))?;
    }
    issue(&c, "squashed", &[])?;
    issue(&c, "reader", &["--read-only", "--trusted"])?;
    let sq = c.mount_with(&["--as", "squashed", "--allow-other"])?;
    {
        info!("--- root squash (default for an issued identity)");
        fs::write(sq.join("open/byroot"), b"x")?;
        let md = fs::metadata(m.join("open/byroot"))?;
        assert_eq!((md.uid(), md.gid()), (NOBODY, NOBODY), "owned by nobody");
        let r = fs::read(sq.join("rootsecret"));
        assert_eq!(
            r.as_ref().err().and_then(|e| e.raw_os_error()),
            Some(libc::EACCES),
            "squashed root reads no 0600 root file: {r:?}"
        );
        let r = fs::write(sq.join("in-root"), b"x");
        assert_eq!(
            r.as_ref().err().and_then(|e| e.raw_os_error()),
            Some(libc::EACCES),
            "squashed root may not write the 0755 root directory: {r:?}"
        );
        let r = std::os::unix::fs::chown(sq.join("open/byroot"), Some(0), None);
        assert_eq!(
            r.as_ref().err().and_then(|e| e.raw_os_error()),
            Some(libc::EPERM),
            "nor give files to root: {r:?}"
        );
        // A user that is not root is not squashed.
        assert_eq!(
            run_as(
                1000,
                1000,
                &ChildOp::Create(ChildOp::path(&sq.join("open/u1000")))
            )?,
            Ok(())
        );
        assert_eq!(fs::metadata(m.join("open/u1000"))?.uid(), 1000);
    }
    sq.unmount(Duration::from_secs(60))?;
    let ro = c.mount_with(&["--as", "reader", "--allow-other"])?;
    {
        info!("--- a read-only (trusted) identity: EROFS for changes, reads work");
        let r = fs::write(ro.join("open/new"), b"x");
        assert_eq!(
            r.as_ref().err().and_then(|e| e.raw_os_error()),
            Some(libc::EROFS),
            "{r:?}"
        );
        let r = fs::remove_file(ro.join("open/byroot"));
        assert_eq!(
            r.as_ref().err().and_then(|e| e.raw_os_error()),
            Some(libc::EROFS),
            "{r:?}"
        );
        assert_eq!(fs::read(ro.join("rootsecret"))?, b"root only");
    }
    ro.unmount(Duration::from_secs(60))?;
    m.unmount(Duration::from_secs(60))?;
    c.done();
    Ok(())
}
