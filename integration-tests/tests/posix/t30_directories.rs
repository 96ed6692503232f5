//! mkdir, rmdir, readdir (exact listings, many entries), and their errno.

use crate::mounted_cluster;
use anyhow::Result;
use integration_tests::sys::expect_errno;
use std::collections::BTreeSet;
use std::fs;
use std::path::Path;
use tracing::info;

fn names(dir: &Path) -> Result<BTreeSet<String>> {
    let mut out = BTreeSet::new();
    for e in fs::read_dir(dir)? {
        out.insert(e?.file_name().to_string_lossy().into_owned());
    }
    Ok(out)
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

#[test]
fn t30_mkdir_rmdir_readdir() -> Result<()> {
    let (c, m) = mounted_cluster(&[])?;
    {
        info!("--- an empty root lists nothing");
        assert_eq!(names(m.path())?, set(&[]));
    }
    {
        info!("--- mkdir, files and subdirs; readdir lists exactly them");
        fs::create_dir(m.join("a"))?;
        fs::create_dir(m.join("a/sub"))?;
        fs::write(m.join("a/f1"), b"1")?;
        fs::write(m.join("a/f2"), b"2")?;
        assert!(fs::metadata(m.join("a"))?.is_dir());
        assert_eq!(names(&m.join("a"))?, set(&["sub", "f1", "f2"]));
        assert_eq!(names(m.path())?, set(&["a"]));
        let kinds: Vec<(String, bool)> = fs::read_dir(m.join("a"))?
            .map(|e| {
                e.map(|e| {
                    (
                        e.file_name().to_string_lossy().into_owned(),
                        e.file_type().map(|t| t.is_dir()).unwrap_or(false),
                    )
                })
            })
            .collect::<std::io::Result<_>>()?;
        assert!(
            kinds.contains(&("sub".into(), true)) && kinds.contains(&("f1".into(), false)),
            "{kinds:?}"
        );
    }
    {
        info!("--- errno: EEXIST, ENOENT, ENOTDIR, ENOTEMPTY");
        expect_errno(
            fs::create_dir(m.join("a")),
            libc::EEXIST,
            "mkdir an existing dir",
        )?;
        expect_errno(
            fs::create_dir(m.join("a/f1")),
            libc::EEXIST,
            "mkdir over a file",
        )?;
        expect_errno(
            fs::create_dir(m.join("nope/x")),
            libc::ENOENT,
            "mkdir in a missing dir",
        )?;
        expect_errno(
            fs::create_dir(m.join("a/f1/x")),
            libc::ENOTDIR,
            "mkdir under a file",
        )?;
        expect_errno(
            fs::remove_dir(m.join("a")),
            libc::ENOTEMPTY,
            "rmdir a non-empty dir",
        )?;
        expect_errno(
            fs::remove_dir(m.join("a/f1")),
            libc::ENOTDIR,
            "rmdir a file",
        )?;
        expect_errno(
            fs::remove_dir(m.join("a/none")),
            libc::ENOENT,
            "rmdir a missing dir",
        )?;
        expect_errno(
            fs::read_dir(m.join("a/f1")),
            libc::ENOTDIR,
            "opendir a file",
        )?;
        expect_errno(
            fs::remove_file(m.join("a/sub")),
            libc::EISDIR,
            "unlink a dir",
        )?;
    }
    {
        info!("--- rmdir of an empty dir; it is gone from the listing");
        fs::remove_dir(m.join("a/sub"))?;
        assert_eq!(names(&m.join("a"))?, set(&["f1", "f2"]));
        expect_errno(
            fs::metadata(m.join("a/sub")),
            libc::ENOENT,
            "stat a removed dir",
        )?;
    }
    {
        info!("--- a deep tree, then remove_dir_all");
        fs::create_dir_all(m.join("deep/1/2/3/4/5/6/7"))?;
        fs::write(m.join("deep/1/2/3/4/5/6/7/leaf"), b"leaf")?;
        fs::write(m.join("deep/1/2/mid"), b"mid")?;
        assert_eq!(fs::read(m.join("deep/1/2/3/4/5/6/7/leaf"))?, b"leaf");
        fs::remove_dir_all(m.join("deep"))?;
        assert_eq!(names(m.path())?, set(&["a"]));
    }
    {
        info!("--- 1500 entries in a dir: readdir pages through all of them exactly once");
        fs::create_dir(m.join("many"))?;
        let want: BTreeSet<String> = (0..1500)
            .map(|i| format!("entry-with-a-longish-name-{i:05}"))
            .collect();
        for n in &want {
            fs::File::create(m.join("many").join(n))?;
        }
        let mut seen = Vec::new();
        for e in fs::read_dir(m.join("many"))? {
            seen.push(e?.file_name().to_string_lossy().into_owned());
        }
        assert_eq!(
            seen.len(),
            want.len(),
            "readdir returned duplicates or missed entries"
        );
        assert_eq!(seen.into_iter().collect::<BTreeSet<_>>(), want);
        for n in want.iter().step_by(2) {
            fs::remove_file(m.join("many").join(n))?;
        }
        assert_eq!(names(&m.join("many"))?.len(), 750);
    }
    let m = c.remount(m)?;
    {
        info!("--- after remount: the same listings");
        assert_eq!(names(&m.join("a"))?, set(&["f1", "f2"]));
        assert_eq!(names(&m.join("many"))?.len(), 750);
        assert_eq!(names(m.path())?, set(&["a", "many"]));
    }
    c.done();
    Ok(())
}
