//! Namespace operations between directories owned by different managers: 20 directories
//! at various places, then create, link and rename between every ordered pair, directory
//! moves around the ring, renames over existing names, and a remount to check it all.

use crate::mounted_cluster;
use anyhow::{ensure, Result};
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use tracing::info;

const DIRS: usize = 20;

/// Relative paths of the 20 directories: top-level, nested, and inside each other.
fn dir_paths() -> Vec<String> {
    let mut v = Vec::new();
    for i in 0..DIRS {
        v.push(match i {
            0..=7 => format!("d{i:02}"),
            8..=11 => format!("nest/d{i:02}"),
            12..=15 => format!("d03/d{i:02}"),
            _ => format!("nest/d09/deep/d{i:02}"),
        });
    }
    v
}

fn listing(dir: &Path) -> Result<BTreeSet<String>> {
    let mut out = BTreeSet::new();
    for e in fs::read_dir(dir)? {
        out.insert(e?.file_name().to_string_lossy().into_owned());
    }
    Ok(out)
}

/// Names the test expects in directory `i` beyond what it creates there: its child dirs.
fn subdirs(all: &[String], i: usize) -> BTreeSet<String> {
    let me = &all[i];
    let mut out = BTreeSet::new();
    for p in all {
        if let Some(rest) = p.strip_prefix(&format!("{me}/")) {
            out.insert(rest.split('/').next().unwrap_or(rest).to_string());
        }
    }
    out
}

#[test]
fn t85_rename_and_link_between_managers() -> Result<()> {
    let (c, m) = mounted_cluster(&[])?;
    let rel = dir_paths();
    let dirs: Vec<PathBuf> = rel.iter().map(|r| m.join(r)).collect();
    let mut owners: BTreeMap<String, usize> = BTreeMap::new();
    {
        info!("--- make 20 directories at various places; see which manager owns each");
        for d in &dirs {
            fs::create_dir_all(d)?;
        }
        for (r, d) in rel.iter().zip(&dirs) {
            let ino = fs::metadata(d)?.ino();
            let owner = c.manager_of(ino)?;
            info!(dir = %r, ino, %owner, "directory owner");
            *owners.entry(owner).or_default() += 1;
        }
        info!(?owners, "directories per manager");
    }
    {
        info!("--- for every ordered pair (i, j): create in i, link into j, rename into j");
        for i in 0..DIRS {
            for j in 0..DIRS {
                if i == j {
                    continue;
                }
                let f = dirs[i].join(format!("f_{i}_{j}"));
                fs::write(&f, format!("{i}->{j}"))?;
                fs::hard_link(&f, dirs[j].join(format!("l_{i}_{j}")))?;
                fs::rename(&f, dirs[j].join(format!("r_{i}_{j}")))?;
            }
        }
    }
    let check_pairs = |m: &Path, with_links: bool, late: bool| -> Result<()> {
        let dirs: Vec<PathBuf> = rel.iter().map(|r| m.join(r)).collect();
        for j in 0..DIRS {
            let mut want = subdirs(&rel, j);
            if late {
                // Made by the later phases: each dir's sub_j, and d0's x at the end of the chain.
                want.insert(format!("sub_{j}"));
                if j == DIRS - 1 {
                    want.insert("x".to_string());
                }
            }
            for i in (0..DIRS).filter(|i| *i != j) {
                want.insert(format!("r_{i}_{j}"));
                if with_links {
                    want.insert(format!("l_{i}_{j}"));
                }
            }
            let got = listing(&dirs[j])?;
            ensure!(
                got == want,
                "listing of {}: missing {:?}, unexpected {:?}",
                rel[j],
                want.difference(&got).collect::<Vec<_>>(),
                got.difference(&want).collect::<Vec<_>>()
            );
            for i in (0..DIRS).filter(|i| *i != j) {
                let r = dirs[j].join(format!("r_{i}_{j}"));
                let md = fs::metadata(&r)?;
                ensure!(
                    md.nlink() == if with_links { 2 } else { 1 },
                    "nlink of {} is {}",
                    r.display(),
                    md.nlink()
                );
                ensure!(
                    fs::read_to_string(&r)? == format!("{i}->{j}"),
                    "content of {}",
                    r.display()
                );
                if with_links {
                    let l = fs::metadata(dirs[j].join(format!("l_{i}_{j}")))?;
                    ensure!(
                        l.ino() == md.ino(),
                        "link and renamed file of pair {i},{j} differ"
                    );
                }
            }
        }
        Ok(())
    };
    {
        info!("--- every directory lists exactly its links and renamed files; nlink 2, same inode");
        check_pairs(m.path(), true, false)?;
    }
    {
        info!("--- unlink every link: nlink drops to 1");
        for i in 0..DIRS {
            for j in (0..DIRS).filter(|j| *j != i) {
                fs::remove_file(dirs[j].join(format!("l_{i}_{j}")))?;
            }
        }
        check_pairs(m.path(), false, false)?;
    }
    {
        info!("--- move a populated directory around the ring of 20 directories and back");
        for (i, d) in dirs.iter().enumerate() {
            fs::create_dir(d.join(format!("sub_{i}")))?;
            fs::write(d.join(format!("sub_{i}/inside")), format!("sub {i}"))?;
        }
        for i in 0..DIRS {
            let next = (i + 1) % DIRS;
            fs::rename(
                dirs[i].join(format!("sub_{i}")),
                dirs[next].join(format!("moved_{i}")),
            )?;
        }
        for i in 0..DIRS {
            let next = (i + 1) % DIRS;
            let moved = dirs[next].join(format!("moved_{i}"));
            ensure!(
                fs::read_to_string(moved.join("inside"))? == format!("sub {i}"),
                "moved dir {i}"
            );
            ensure!(
                !dirs[i].join(format!("sub_{i}")).exists(),
                "sub_{i} still at its old place"
            );
            fs::rename(&moved, dirs[i].join(format!("sub_{i}")))?;
            ensure!(
                fs::read_to_string(dirs[i].join(format!("sub_{i}/inside")))? == format!("sub {i}"),
                "back {i}"
            );
        }
    }
    {
        info!(
            "--- rename over an existing file of another directory (d0's x replaces each x down the chain); a dir over an empty dir"
        );
        for (i, d) in dirs.iter().enumerate() {
            fs::write(d.join("x"), format!("x of {i}"))?;
        }
        for i in 0..DIRS - 1 {
            fs::rename(dirs[i].join("x"), dirs[i + 1].join("x"))?;
            ensure!(!dirs[i].join("x").exists(), "x still in {}", rel[i]);
        }
        ensure!(fs::read_to_string(dirs[DIRS - 1].join("x"))? == "x of 0");
        for i in 0..DIRS - 1 {
            fs::create_dir(dirs[i + 1].join("empty"))?;
            fs::rename(dirs[i].join(format!("sub_{i}")), dirs[i + 1].join("empty"))?;
            ensure!(fs::read_to_string(dirs[i + 1].join("empty/inside"))? == format!("sub {i}"));
            fs::rename(dirs[i + 1].join("empty"), dirs[i].join(format!("sub_{i}")))?;
        }
    }
    {
        info!("--- errno across managers: ENOTEMPTY and EINVAL");
        fs::write(dirs[5].join("sub_5/more"), b"m")?;
        let e =
            fs::rename(dirs[4].join("sub_4"), dirs[5].join("sub_5")).map_err(|e| e.raw_os_error());
        ensure!(
            e == Err(Some(libc::ENOTEMPTY)),
            "dir over a non-empty dir of another manager: {e:?}"
        );
        let e = fs::rename(m.join("nest"), dirs[16].join("inside")).map_err(|e| e.raw_os_error());
        ensure!(
            e == Err(Some(libc::EINVAL)),
            "dir into its own subtree: {e:?}"
        );
    }
    let m = c.remount(m)?;
    {
        info!("--- after remount: everything is where it was put");
        check_pairs(m.path(), false, true)?;
        let dirs: Vec<PathBuf> = rel.iter().map(|r| m.join(r)).collect();
        for (i, d) in dirs.iter().enumerate() {
            ensure!(fs::read_to_string(d.join(format!("sub_{i}/inside")))? == format!("sub {i}"));
        }
        ensure!(fs::read_to_string(dirs[DIRS - 1].join("x"))? == "x of 0");
    }
    {
        info!(
            "--- the 20 directories must span both managers, or this test did not cross managers"
        );
        ensure!(
            owners.len() >= 2,
            "all 20 directories are owned by {:?}: new directories never land on the other manager, \
             so no cross-manager rename or link was exercised",
            owners
        );
    }
    c.done();
    Ok(())
}
