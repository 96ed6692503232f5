//! rename(2): over files, of directories, across directories, and every errno case
//! (EINVAL, ENOTEMPTY, EISDIR, ENOTDIR, ENOENT), plus RENAME_NOREPLACE / RENAME_EXCHANGE.

use crate::mounted_cluster;
use anyhow::Result;
use integration_tests::sys::expect_errno;
use nix::fcntl::{renameat2, RenameFlags};
use std::fs::{self, File};
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use tracing::info;

fn rename2(a: &Path, b: &Path, flags: RenameFlags) -> std::io::Result<()> {
    renameat2(None, a, None, b, flags).map_err(|e| std::io::Error::from_raw_os_error(e as i32))
}

#[test]
fn t50_rename_files_and_directories() -> Result<()> {
    let (c, m) = mounted_cluster(&[])?;
    {
        info!("--- rename a file in its directory");
        fs::write(m.join("a"), b"A")?;
        let ino = fs::metadata(m.join("a"))?.ino();
        fs::rename(m.join("a"), m.join("b"))?;
        expect_errno(
            fs::metadata(m.join("a")),
            libc::ENOENT,
            "old name after rename",
        )?;
        assert_eq!(fs::read(m.join("b"))?, b"A");
        assert_eq!(
            fs::metadata(m.join("b"))?.ino(),
            ino,
            "rename keeps the inode"
        );
    }
    {
        info!("--- rename over an existing file: the target is replaced, an open target keeps its data");
        fs::write(m.join("target"), b"old target")?;
        let mut held = File::open(m.join("target"))?;
        fs::rename(m.join("b"), m.join("target"))?;
        assert_eq!(fs::read(m.join("target"))?, b"A");
        let mut s = String::new();
        held.read_to_string(&mut s)?;
        assert_eq!(s, "old target");
        assert_eq!(held.metadata()?.nlink(), 0, "replaced target is unlinked");
        expect_errno(
            fs::metadata(m.join("b")),
            libc::ENOENT,
            "source after rename over",
        )?;
    }
    {
        info!("--- rename a file into another directory and back");
        fs::create_dir(m.join("d1"))?;
        fs::create_dir(m.join("d2"))?;
        fs::rename(m.join("target"), m.join("d1/t"))?;
        fs::rename(m.join("d1/t"), m.join("d2/t2"))?;
        assert_eq!(fs::read(m.join("d2/t2"))?, b"A");
        assert_eq!(fs::read_dir(m.join("d1"))?.count(), 0);
    }
    {
        info!("--- rename a directory with contents, to a new name and into another directory");
        fs::create_dir_all(m.join("tree/x/y"))?;
        fs::write(m.join("tree/x/y/leaf"), b"leaf")?;
        fs::rename(m.join("tree"), m.join("tree2"))?;
        assert_eq!(fs::read(m.join("tree2/x/y/leaf"))?, b"leaf");
        fs::rename(m.join("tree2/x"), m.join("d1/x"))?;
        assert_eq!(fs::read(m.join("d1/x/y/leaf"))?, b"leaf");
        expect_errno(
            fs::metadata(m.join("tree2/x")),
            libc::ENOENT,
            "moved dir at old place",
        )?;
    }
    {
        info!("--- rename a directory over an empty directory");
        fs::create_dir(m.join("empty"))?;
        fs::rename(m.join("d1/x"), m.join("empty"))?;
        assert_eq!(fs::read(m.join("empty/y/leaf"))?, b"leaf");
    }
    {
        info!("--- EINVAL: a directory into its own subtree");
        expect_errno(
            fs::rename(m.join("empty"), m.join("empty/y/inside")),
            libc::EINVAL,
            "dir into its subtree",
        )?;
        expect_errno(
            fs::rename(m.join("empty"), m.join("empty/inside")),
            libc::EINVAL,
            "dir into itself",
        )?;
    }
    {
        info!("--- ENOTEMPTY: a directory over a non-empty directory");
        fs::create_dir(m.join("src"))?;
        expect_errno(
            fs::rename(m.join("src"), m.join("empty")),
            libc::ENOTEMPTY,
            "dir over a non-empty dir",
        )?;
        expect_errno(
            fs::rename(m.join("empty/y/leaf"), m.join("empty")),
            libc::ENOTEMPTY,
            "over an ancestor",
        )?;
    }
    {
        info!("--- EISDIR / ENOTDIR / ENOENT");
        fs::write(m.join("file"), b"f")?;
        expect_errno(
            fs::rename(m.join("file"), m.join("src")),
            libc::EISDIR,
            "file over a dir",
        )?;
        expect_errno(
            fs::rename(m.join("src"), m.join("file")),
            libc::ENOTDIR,
            "dir over a file",
        )?;
        expect_errno(
            fs::rename(m.join("nothing"), m.join("x")),
            libc::ENOENT,
            "missing source",
        )?;
        expect_errno(
            fs::rename(m.join("file"), m.join("nodir/x")),
            libc::ENOENT,
            "missing target dir",
        )?;
        expect_errno(
            fs::rename(m.join("file"), m.join("file/x")),
            libc::ENOTDIR,
            "target under a file",
        )?;
        assert_eq!(
            fs::read(m.join("file"))?,
            b"f",
            "failed renames change nothing"
        );
        assert!(fs::metadata(m.join("src"))?.is_dir());
    }
    {
        info!("--- rename to itself and between two links of one inode change nothing");
        fs::rename(m.join("file"), m.join("file"))?;
        fs::hard_link(m.join("file"), m.join("file-link"))?;
        fs::rename(m.join("file"), m.join("file-link"))?;
        assert_eq!(fs::metadata(m.join("file"))?.nlink(), 2);
        assert_eq!(fs::metadata(m.join("file-link"))?.nlink(), 2);
    }
    {
        info!("--- RENAME_NOREPLACE and RENAME_EXCHANGE");
        fs::write(m.join("x1"), b"one")?;
        fs::write(m.join("x2"), b"two")?;
        expect_errno(
            rename2(&m.join("x1"), &m.join("x2"), RenameFlags::RENAME_NOREPLACE),
            libc::EEXIST,
            "NOREPLACE",
        )?;
        rename2(&m.join("x1"), &m.join("x3"), RenameFlags::RENAME_NOREPLACE)?;
        rename2(&m.join("x3"), &m.join("x2"), RenameFlags::RENAME_EXCHANGE)?;
        assert_eq!(fs::read(m.join("x2"))?, b"one");
        assert_eq!(fs::read(m.join("x3"))?, b"two");
        rename2(&m.join("x3"), &m.join("src"), RenameFlags::RENAME_EXCHANGE)?;
        assert!(fs::metadata(m.join("x3"))?.is_dir());
        assert_eq!(fs::read(m.join("src"))?, b"two");
    }
    let m = c.remount(m)?;
    {
        info!("--- after remount: the renamed tree");
        assert_eq!(fs::read(m.join("empty/y/leaf"))?, b"leaf");
        assert_eq!(fs::read(m.join("d2/t2"))?, b"A");
        assert_eq!(fs::read(m.join("x2"))?, b"one");
        assert_eq!(fs::read(m.join("src"))?, b"two");
        assert!(fs::metadata(m.join("x3"))?.is_dir());
        let mut root: Vec<String> = fs::read_dir(m.path())?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        root.sort();
        assert_eq!(
            root,
            [
                "d1",
                "d2",
                "empty",
                "file",
                "file-link",
                "src",
                "tree2",
                "x2",
                "x3"
            ]
        );
    }
    c.done();
    Ok(())
}
