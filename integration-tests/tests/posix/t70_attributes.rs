//! chmod, chown, utimensat (exact values), mtime/ctime updates, statfs.

use crate::mounted_cluster;
use anyhow::Result;
use nix::sys::stat::{utimensat, UtimensatFlags};
use nix::sys::time::TimeSpec;
use std::fs::{self, OpenOptions, Permissions};
use std::os::unix::fs::{chown, FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::time::{SystemTime, UNIX_EPOCH};
use tracing::info;

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[test]
fn t70_chmod_chown_utimens_statfs() -> Result<()> {
    let (c, m) = mounted_cluster(&[])?;
    let f = m.join("f");
    let d = m.join("d");
    fs::write(&f, b"data")?;
    fs::File::open(&f)?.sync_all()?;
    fs::create_dir(&d)?;
    {
        info!("--- chmod on a file and a directory, including setuid/setgid/sticky bits");
        for mode in [0o640, 0o600, 0o755, 0o4755, 0o2750, 0o000] {
            fs::set_permissions(&f, Permissions::from_mode(mode))?;
            assert_eq!(fs::metadata(&f)?.mode() & 0o7777, mode, "file mode");
        }
        fs::set_permissions(&d, Permissions::from_mode(0o1777))?;
        let md = fs::metadata(&d)?;
        assert_eq!(md.mode() & 0o7777, 0o1777);
        assert!(md.is_dir(), "chmod must keep the file type");
        fs::set_permissions(&f, Permissions::from_mode(0o644))?;
    }
    {
        info!("--- new files get mode & ~umask; creation mode is honoured");
        let g = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(m.join("g"))?;
        assert_eq!(g.metadata()?.mode() & 0o777, 0o600);
        assert_eq!(g.metadata()?.uid(), 0, "files made by root belong to root");
    }
    {
        info!("--- chown uid and gid separately and together");
        chown(&f, Some(1234), None)?;
        let md = fs::metadata(&f)?;
        assert_eq!((md.uid(), md.gid()), (1234, 0));
        chown(&f, None, Some(5678))?;
        let md = fs::metadata(&f)?;
        assert_eq!((md.uid(), md.gid()), (1234, 5678));
        chown(&d, Some(42), Some(43))?;
        let md = fs::metadata(&d)?;
        assert_eq!((md.uid(), md.gid()), (42, 43));
    }
    {
        info!("--- utimensat with exact values (nanoseconds), and UTIME_OMIT");
        let at = TimeSpec::new(1_000_000_000, 123_456_789);
        let mt = TimeSpec::new(1_500_000_000, 987_654_321);
        utimensat(None, &f, &at, &mt, UtimensatFlags::FollowSymlink)?;
        let md = fs::metadata(&f)?;
        assert_eq!((md.atime(), md.atime_nsec()), (1_000_000_000, 123_456_789));
        assert_eq!((md.mtime(), md.mtime_nsec()), (1_500_000_000, 987_654_321));
        utimensat(
            None,
            &f,
            &TimeSpec::UTIME_OMIT,
            &TimeSpec::new(1_600_000_000, 5),
            UtimensatFlags::FollowSymlink,
        )?;
        let md = fs::metadata(&f)?;
        assert_eq!(
            (md.atime(), md.atime_nsec()),
            (1_000_000_000, 123_456_789),
            "UTIME_OMIT keeps atime"
        );
        assert_eq!((md.mtime(), md.mtime_nsec()), (1_600_000_000, 5));
        utimensat(None, &d, &at, &mt, UtimensatFlags::FollowSymlink)?;
        assert_eq!(fs::metadata(&d)?.mtime(), 1_500_000_000);
    }
    {
        info!("--- UTIME_NOW and a write set mtime to about now; chmod updates ctime");
        utimensat(
            None,
            &f,
            &TimeSpec::UTIME_NOW,
            &TimeSpec::UTIME_NOW,
            UtimensatFlags::FollowSymlink,
        )?;
        let md = fs::metadata(&f)?;
        assert!(
            (md.mtime() - now_secs()).abs() < 120,
            "UTIME_NOW mtime {} vs now {}",
            md.mtime(),
            now_secs()
        );
        utimensat(
            None,
            &f,
            &TimeSpec::new(1_000, 0),
            &TimeSpec::new(1_000, 0),
            UtimensatFlags::FollowSymlink,
        )?;
        let h = OpenOptions::new().write(true).open(&f)?;
        h.write_all_at(b"more", 4)?;
        h.sync_all()?;
        drop(h);
        let md = fs::metadata(&f)?;
        assert!(
            md.mtime() > 1_000,
            "a write must update mtime (still {})",
            md.mtime()
        );
        assert!((md.mtime() - now_secs()).abs() < 120);
        let before = md.ctime();
        fs::set_permissions(&f, Permissions::from_mode(0o604))?;
        assert!(fs::metadata(&f)?.ctime() >= before);
        assert!(
            (fs::metadata(&f)?.ctime() - now_secs()).abs() < 120,
            "chmod sets ctime to now"
        );
    }
    {
        info!("--- statfs reports a real size");
        let s = nix::sys::statvfs::statvfs(m.path())?;
        assert!(s.blocks() > 0, "f_blocks is 0");
        assert!(s.block_size() > 0 || s.fragment_size() > 0);
        assert!(s.name_max() >= 255, "name_max {}", s.name_max());
        let st = nix::sys::statfs::statfs(m.path())?;
        assert!(st.blocks() > 0);
    }
    {
        info!("--- long names: 255 bytes work, 256 give ENAMETOOLONG");
        let ok = "n".repeat(255);
        fs::write(m.join(&ok), b"")?;
        assert!(fs::metadata(m.join(&ok))?.is_file());
        integration_tests::sys::expect_errno(
            fs::write(m.join("n".repeat(256)), b""),
            libc::ENAMETOOLONG,
            "256-byte name",
        )?;
    }
    let m = c.remount(m)?;
    {
        info!("--- after remount: modes, owners and times are kept");
        let md = fs::metadata(m.join("f"))?;
        assert_eq!(md.mode() & 0o7777, 0o604);
        assert_eq!((md.uid(), md.gid()), (1234, 5678));
        let md = fs::metadata(m.join("d"))?;
        assert_eq!(md.mode() & 0o7777, 0o1777);
        assert_eq!(
            (md.uid(), md.gid(), md.mtime(), md.mtime_nsec()),
            (42, 43, 1_500_000_000, 987_654_321)
        );
        assert_eq!(fs::read(m.join("f"))?, b"datamore");
    }
    c.done();
    Ok(())
}

/// `tar -x` and `cp -p` write a file and set its times right away, before any fsync.
#[test]
fn t71_utimensat_right_after_unsynced_write() -> Result<()> {
    let (c, m) = mounted_cluster(&[])?;
    let f = m.join("extracted");
    {
        info!("--- write (no fsync), then set atime/mtime at once, as tar -x does");
        fs::write(&f, b"archive member")?;
        let at = TimeSpec::new(1_000_000_000, 1);
        let mt = TimeSpec::new(1_500_000_000, 2);
        utimensat(None, &f, &at, &mt, UtimensatFlags::FollowSymlink)?;
        let md = fs::metadata(&f)?;
        assert_eq!(
            (md.mtime(), md.mtime_nsec()),
            (1_500_000_000, 2),
            "mtime right after utimensat"
        );
        assert_eq!(
            (md.atime(), md.atime_nsec()),
            (1_000_000_000, 1),
            "atime right after utimensat"
        );
    }
    {
        info!("--- the times stay after the data is flushed (fsync)");
        fs::File::open(&f)?.sync_all()?;
        let md = fs::metadata(&f)?;
        assert_eq!(
            (md.mtime(), md.mtime_nsec()),
            (1_500_000_000, 2),
            "mtime after fsync"
        );
    }
    let m = c.remount(m)?;
    {
        info!("--- and after a remount");
        let md = fs::metadata(m.join("extracted"))?;
        assert_eq!(
            (md.mtime(), md.mtime_nsec()),
            (1_500_000_000, 2),
            "mtime after remount"
        );
        assert_eq!(fs::read(m.join("extracted"))?, b"archive member");
    }
    c.done();
    Ok(())
}
