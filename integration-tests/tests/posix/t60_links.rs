//! Hard links (link counts, across directories, shared data) and symlinks (readlink,
//! following, dangling).

use crate::mounted_cluster;
use anyhow::Result;
use integration_tests::sys::expect_errno;
use std::fs::{self, OpenOptions};
use std::os::unix::fs::{symlink, FileExt, MetadataExt};
use tracing::info;

#[test]
fn t60_hard_links_and_symlinks() -> Result<()> {
    let (c, m) = mounted_cluster(&[])?;
    {
        info!("--- hard links in the same and in other directories share one inode");
        fs::create_dir(m.join("d1"))?;
        fs::create_dir(m.join("d2"))?;
        fs::write(m.join("d1/orig"), b"shared data")?;
        fs::hard_link(m.join("d1/orig"), m.join("d1/same-dir"))?;
        fs::hard_link(m.join("d1/orig"), m.join("d2/other-dir"))?;
        let ino = fs::metadata(m.join("d1/orig"))?.ino();
        for p in ["d1/orig", "d1/same-dir", "d2/other-dir"] {
            let md = fs::metadata(m.join(p))?;
            assert_eq!(md.nlink(), 3, "{p}");
            assert_eq!(md.ino(), ino, "{p}");
        }
    }
    {
        info!("--- a write through one name is seen through the others");
        let f = OpenOptions::new()
            .write(true)
            .open(m.join("d2/other-dir"))?;
        f.write_all_at(b"SHARED", 0)?;
        drop(f);
        assert_eq!(fs::read(m.join("d1/orig"))?, b"SHARED data");
        assert_eq!(fs::read(m.join("d1/same-dir"))?, b"SHARED data");
    }
    {
        info!("--- unlinking names decrements st_nlink; data lives until the last one");
        fs::remove_file(m.join("d1/orig"))?;
        assert_eq!(fs::metadata(m.join("d1/same-dir"))?.nlink(), 2);
        fs::remove_file(m.join("d1/same-dir"))?;
        assert_eq!(fs::metadata(m.join("d2/other-dir"))?.nlink(), 1);
        assert_eq!(fs::read(m.join("d2/other-dir"))?, b"SHARED data");
    }
    {
        info!("--- link errno: EEXIST, EPERM on a directory, ENOENT");
        fs::write(m.join("d1/x"), b"x")?;
        expect_errno(
            fs::hard_link(m.join("d1/x"), m.join("d2/other-dir")),
            libc::EEXIST,
            "link over a name",
        )?;
        expect_errno(
            fs::hard_link(m.join("d1"), m.join("d1-link")),
            libc::EPERM,
            "link a dir",
        )?;
        expect_errno(
            fs::hard_link(m.join("none"), m.join("n2")),
            libc::ENOENT,
            "link a missing file",
        )?;
        expect_errno(
            fs::hard_link(m.join("d1/x"), m.join("none/n2")),
            libc::ENOENT,
            "link into a missing dir",
        )?;
    }
    {
        info!("--- symlinks: readlink, follow, lstat, st_size = target length");
        symlink("d2/other-dir", m.join("rel"))?;
        symlink(m.join("d1/x"), m.join("abs"))?;
        symlink("d1", m.join("dirlink"))?;
        assert_eq!(
            fs::read_link(m.join("rel"))?,
            std::path::PathBuf::from("d2/other-dir")
        );
        assert_eq!(fs::read(m.join("rel"))?, b"SHARED data");
        assert_eq!(fs::read(m.join("abs"))?, b"x");
        assert_eq!(fs::read(m.join("dirlink/x"))?, b"x");
        let l = fs::symlink_metadata(m.join("rel"))?;
        assert!(l.file_type().is_symlink());
        assert_eq!(l.len(), "d2/other-dir".len() as u64);
        assert!(fs::metadata(m.join("rel"))?.is_file());
        expect_errno(
            symlink("x", m.join("rel")),
            libc::EEXIST,
            "symlink over a name",
        )?;
        expect_errno(
            fs::read_link(m.join("d1/x")),
            libc::EINVAL,
            "readlink of a file",
        )?;
    }
    {
        info!(
            "--- a dangling symlink: lstat works, stat ENOENT; removing the link leaves the target"
        );
        symlink("nowhere", m.join("dangling"))?;
        assert!(fs::symlink_metadata(m.join("dangling"))?
            .file_type()
            .is_symlink());
        expect_errno(
            fs::metadata(m.join("dangling")),
            libc::ENOENT,
            "stat through a dangling link",
        )?;
        fs::remove_file(m.join("abs"))?;
        assert_eq!(fs::read(m.join("d1/x"))?, b"x");
    }
    let m = c.remount(m)?;
    {
        info!("--- after remount: link counts and symlink targets");
        assert_eq!(fs::metadata(m.join("d2/other-dir"))?.nlink(), 1);
        assert_eq!(
            fs::read_link(m.join("rel"))?,
            std::path::PathBuf::from("d2/other-dir")
        );
        assert_eq!(
            fs::read_link(m.join("dangling"))?,
            std::path::PathBuf::from("nowhere")
        );
        assert_eq!(fs::read(m.join("dirlink/x"))?, b"x");
    }
    c.done();
    Ok(())
}
