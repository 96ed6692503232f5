//! Cross-manager transactions through real mounts (issue 7, item 4): directory moves between
//! directories owned by different managers, raced from two mounts, leave a tree (checked
//! against the expected set of directories and files after every round: no cycle, no
//! orphaned subtree, no double link, nlink and `..` right); and a manager SIGSTOPped while a
//! rename it takes part in is pending holds up only that rename: writes and fsyncs of an
//! unrelated file on the coordinator's manager complete meanwhile, and after SIGCONT the
//! rename completes or fails cleanly with the namespace whole.

use crate::{cluster_with_mounts, names};
use anyhow::{bail, ensure, Context, Result};
use integration_tests::{with_timeout, TestCluster, TestEnv};
use nix::sys::signal::Signal;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Barrier};
use std::time::Duration;
use tracing::info;

/// How long one syscall may hang before the test gives up on it (a hang guard, not a
/// speed assertion).
const HANG: Duration = Duration::from_secs(120);
const DIRS: usize = 8;
const RACE_ROUNDS: usize = 25;
const RANDOM_MOVES: usize = 40;

/// Every directory (by name) found under `root`, with its parent's name ("" = root);
/// fails on anything that breaks the tree. Bounded by depth and by `DIRS`.
fn walk(root: &Path) -> Result<BTreeMap<String, String>> {
    let mut parent_of: BTreeMap<String, String> = BTreeMap::new();
    let mut files: BTreeSet<String> = BTreeSet::new();
    let mut stack: Vec<(PathBuf, String, u32)> = vec![(root.to_path_buf(), String::new(), 0)];
    while let Some((dir, name, depth)) = stack.pop() {
        ensure!(
            depth <= DIRS as u32 + 1,
            "deeper than {DIRS} levels at {}",
            dir.display()
        );
        let meta = fs::metadata(&dir).with_context(|| format!("stat {}", dir.display()))?;
        let mut subdirs = 0u64;
        for e in fs::read_dir(&dir).with_context(|| format!("readdir {}", dir.display()))? {
            let e = e?;
            let n = e.file_name().to_string_lossy().into_owned();
            let p = e.path();
            let m = fs::symlink_metadata(&p).with_context(|| format!("stat {}", p.display()))?;
            if m.is_dir() {
                subdirs += 1;
                ensure!(
                    parent_of.insert(n.clone(), name.clone()).is_none(),
                    "directory {n} reachable twice (double link)"
                );
                let dotdot = fs::metadata(p.join(".."))?;
                ensure!(
                    dotdot.ino() == meta.ino(),
                    "{}/.. is inode {:#x}, its parent is {:#x}",
                    p.display(),
                    dotdot.ino(),
                    meta.ino()
                );
                stack.push((p, n, depth + 1));
            } else {
                ensure!(
                    n == format!("f-{name}"),
                    "file {n} found in {} (each directory holds its own file only)",
                    dir.display()
                );
                ensure!(files.insert(n.clone()), "file {n} reachable twice");
                ensure!(m.nlink() == 1, "file {n} has nlink {}", m.nlink());
            }
        }
        ensure!(
            meta.nlink() == 2 + subdirs,
            "{} has nlink {} with {subdirs} subdirectories",
            dir.display(),
            meta.nlink()
        );
    }
    let want: BTreeSet<String> = (0..DIRS).map(dname).collect();
    let got: BTreeSet<String> = parent_of.keys().cloned().collect();
    ensure!(
        got == want,
        "directories reachable from the root: {got:?}, expected {want:?} (a cycle or an orphaned subtree)"
    );
    let want_files: BTreeSet<String> = want.iter().map(|d| format!("f-{d}")).collect();
    ensure!(files == want_files, "files reachable: {files:?}");
    Ok(parent_of)
}

fn dname(i: usize) -> String {
    format!("n{i}")
}

/// The path of directory `name` from the parent map.
fn path_of(root: &Path, parents: &BTreeMap<String, String>, name: &str) -> PathBuf {
    let mut chain = vec![name.to_string()];
    let mut cur = name.to_string();
    for _ in 0..=DIRS {
        match parents.get(&cur) {
            Some(p) if !p.is_empty() => {
                chain.push(p.clone());
                cur = p.clone();
            }
            _ => break,
        }
    }
    let mut p = root.to_path_buf();
    for c in chain.iter().rev() {
        p.push(c);
    }
    p
}

/// Whether `anc` is `d` or above it.
fn is_above(parents: &BTreeMap<String, String>, anc: &str, d: &str) -> bool {
    let mut cur = d.to_string();
    for _ in 0..=DIRS {
        if cur == anc {
            return true;
        }
        match parents.get(&cur) {
            Some(p) if !p.is_empty() => cur = p.clone(),
            _ => return false,
        }
    }
    false
}

/// A rename whose failure is a clean POSIX answer to a race (the source moved away, the
/// target moved into the source, a name taken) is fine; anything else is not.
///
/// ESTALE is one of those answers, and it comes from the kernel, not from Shoal: a rename
/// holds the superblock's rename mutex while it looks up its last components; when such a
/// lookup finds a directory the other mount moved, whose old dentry this kernel still has
/// (the callback's entry invalidation waits for that old parent's lock), `d_splice_alias`
/// must move the old dentry, cannot take the rename mutex it already holds, and fails the
/// lookup with ESTALE (`__d_unalias`); the retry with LOOKUP_REVAL meets the same alias. The
/// rename was never sent, so nothing changed (every round checks the tree). NFS clients
/// answer the same race the same way. (Seen once in 2026-12-06 under load: "rename n1 ->
/// n3/n7/n4/n1: Stale file handle".)
fn rename_ok_or_race(from: &Path, to: &Path) -> Result<bool> {
    match fs::rename(from, to) {
        Ok(()) => Ok(true),
        Err(e) => match e.raw_os_error() {
            Some(
                libc::ENOENT
                | libc::EINVAL
                | libc::EEXIST
                | libc::ENOTEMPTY
                | libc::EAGAIN
                | libc::ESTALE,
            ) => Ok(false),
            _ => bail!("rename {} -> {}: {e}", from.display(), to.display()),
        },
    }
}

/// Names the eight directories so that both managers own some (by st_ino).
fn make_dirs(c: &TestCluster, root: &Path) -> Result<BTreeMap<String, String>> {
    let mut owner = BTreeMap::new();
    for i in 0..DIRS {
        let d = root.join(dname(i));
        fs::create_dir(&d)?;
        fs::write(d.join(format!("f-{}", dname(i))), b"x")?;
        owner.insert(dname(i), c.manager_of(fs::metadata(&d)?.ino())?);
    }
    Ok(owner)
}

#[test]
fn t50_concurrent_directory_moves_between_managers_keep_a_tree() -> Result<()> {
    let (c, m) = cluster_with_mounts(None, 2)?;
    let (a, b) = (m[0].path().to_path_buf(), m[1].path().to_path_buf());
    let owners;
    {
        info!("--- {DIRS} directories with one file each, owned by both managers");
        owners = make_dirs(&c, &a)?;
        let on: BTreeSet<&String> = owners.values().collect();
        info!(?owners, "directory owners");
        ensure!(
            on.len() == 2,
            "all directories landed on one manager: {owners:?}"
        );
        walk(&a)?;
    }
    let mut rng = StdRng::seed_from_u64(0x7a11);
    let mut both_won = 0;
    {
        info!("--- {RACE_ROUNDS} rounds of `mv a/b c/` on mount A racing `mv c a/b/` on mount B");
        for round in 0..RACE_ROUNDS {
            let parents = walk(&a).with_context(|| format!("before round {round}"))?;
            // b: a directory with a parent a (nest one first if none is nested), c: a
            // directory not above or below b.
            let nested: Vec<&String> = parents
                .iter()
                .filter(|(_, p)| !p.is_empty())
                .map(|(n, _)| n)
                .collect();
            if nested.is_empty() {
                let x = dname(rng.random_range(0..DIRS));
                let y = dname(rng.random_range(0..DIRS));
                if x != y {
                    let to = path_of(&a, &parents, &y).join(&x);
                    rename_ok_or_race(&path_of(&a, &parents, &x), &to)?;
                }
                continue;
            }
            let bn = nested[rng.random_range(0..nested.len())].clone();
            let cands: Vec<String> = parents
                .keys()
                .filter(|n| !is_above(&parents, n, &bn) && !is_above(&parents, &bn, n))
                .cloned()
                .collect();
            if cands.is_empty() {
                continue;
            }
            let cn = cands[rng.random_range(0..cands.len())].clone();
            let bpath = path_of(&a, &parents, &bn);
            let cpath = path_of(&a, &parents, &cn);
            let rel = |p: &Path| p.strip_prefix(&a).map(|r| r.to_path_buf());
            let (brel, crel) = (rel(&bpath)?, rel(&cpath)?);
            let gate = Arc::new(Barrier::new(2));
            let (g1, g2) = (gate.clone(), gate);
            let (a1, b1) = (a.clone(), b.clone());
            let (brel1, crel1, bn1) = (brel.clone(), crel.clone(), bn.clone());
            let t1 = std::thread::spawn(move || {
                g1.wait();
                rename_ok_or_race(&a1.join(&brel1), &a1.join(&crel1).join(&bn1))
            });
            let (brel2, crel2, cn2) = (brel.clone(), crel.clone(), cn.clone());
            let t2 = std::thread::spawn(move || {
                g2.wait();
                rename_ok_or_race(&b1.join(&crel2), &b1.join(&brel2).join(&cn2))
            });
            let r1 = with_timeout(HANG, "mv a/b c/", move || t1.join())?
                .map_err(|_| anyhow::anyhow!("thread panicked"))??;
            let r2 = with_timeout(HANG, "mv c a/b/", move || t2.join())?
                .map_err(|_| anyhow::anyhow!("thread panicked"))??;
            info!(round, b = %brel.display(), c = %cn, r1, r2, "raced");
            if r1 && r2 {
                both_won += 1;
            }
            for root in [&a, &b] {
                walk(root).with_context(|| {
                    format!("after round {round}, seen from {}", root.display())
                })?;
            }
        }
        ensure!(
            both_won == 0,
            "{both_won} rounds let both moves succeed (a cycle)"
        );
    }
    {
        info!("--- {RANDOM_MOVES} random directory moves on each mount at once");
        let mut threads = Vec::new();
        for (k, root) in [a.clone(), b.clone()].into_iter().enumerate() {
            threads.push(std::thread::spawn(move || -> Result<usize> {
                let mut rng = StdRng::seed_from_u64(k as u64 + 11);
                let mut moved = 0;
                for _ in 0..RANDOM_MOVES {
                    let parents = walk_loose(&root)?;
                    let x = dname(rng.random_range(0..DIRS));
                    let to = if rng.random_range(0..4) == 0 {
                        root.clone()
                    } else {
                        path_of(&root, &parents, &dname(rng.random_range(0..DIRS)))
                    };
                    let from = path_of(&root, &parents, &x);
                    if rename_ok_or_race(&from, &to.join(&x))? {
                        moved += 1;
                    }
                }
                Ok(moved)
            }));
        }
        for t in threads {
            let moved = with_timeout(HANG, "random moves", move || t.join())?
                .map_err(|_| anyhow::anyhow!("thread panicked"))??;
            info!(moved, "random mover done");
        }
        walk(&a)?;
        walk(&b)?;
    }
    {
        info!("--- the tree reads the same after a remount");
        let parents = walk(&a)?;
        let m2 = c.remount(m.into_iter().next().context("mount")?)?;
        ensure!(walk(m2.path())? == parents, "tree changed across a remount");
        ensure!(names(m2.path())?.len() <= DIRS);
    }
    c.done();
    Ok(())
}

/// The parent map as a mover sees it while the other mover works: entries that vanish
/// between listing and stat are skipped (the next rename then fails cleanly).
fn walk_loose(root: &Path) -> Result<BTreeMap<String, String>> {
    let mut parent_of = BTreeMap::new();
    let mut stack = vec![(root.to_path_buf(), String::new(), 0u32)];
    while let Some((dir, name, depth)) = stack.pop() {
        if depth > DIRS as u32 + 1 {
            continue;
        }
        let Ok(rd) = fs::read_dir(&dir) else { continue };
        for e in rd.flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                parent_of.insert(n.clone(), name.clone());
                stack.push((e.path(), n, depth + 1));
            }
        }
    }
    Ok(parent_of)
}

/// A manager process stopped with SIGSTOP, continued on `resume` or on Drop.
struct StoppedNode<'a> {
    env: &'a TestEnv,
    name: String,
    active: bool,
}

impl<'a> StoppedNode<'a> {
    fn stop(env: &'a TestEnv, name: &str) -> Result<StoppedNode<'a>> {
        env.with_proc(name, |p| p.signal(Signal::SIGSTOP))??;
        info!(node = name, "manager stopped (SIGSTOP)");
        Ok(StoppedNode {
            env,
            name: name.to_string(),
            active: true,
        })
    }

    fn resume(mut self) -> Result<()> {
        self.active = false;
        self.env
            .with_proc(&self.name, |p| p.signal(Signal::SIGCONT))??;
        info!(node = %self.name, "manager continued (SIGCONT)");
        Ok(())
    }
}

impl Drop for StoppedNode<'_> {
    fn drop(&mut self) {
        if self.active {
            let _ = self
                .env
                .with_proc(&self.name, |p| p.signal(Signal::SIGCONT));
        }
    }
}

/// A directory name at the root whose directory `owner` owns (bounded search).
fn dir_on(c: &TestCluster, root: &Path, prefix: &str, owner: &str) -> Result<PathBuf> {
    for i in 0..64 {
        let d = root.join(format!("{prefix}{i}"));
        fs::create_dir(&d)?;
        if c.manager_of(fs::metadata(&d)?.ino())? == owner {
            return Ok(d);
        }
    }
    bail!("no directory {prefix}* landed on {owner} in 64 tries")
}

#[test]
fn t51_a_stopped_participant_holds_up_only_its_rename() -> Result<()> {
    let (c, m) = cluster_with_mounts(None, 1)?;
    let root = m[0].path().to_path_buf();
    let mgrs = c.manager_names();
    ensure!(mgrs.len() == 2, "two managers: {mgrs:?}");
    let (coord, part) = (mgrs[0].clone(), mgrs[1].clone());
    let (src, dst, unrelated);
    {
        info!("--- src owned by {coord} (the coordinator), dst by {part} (the participant)");
        src = dir_on(&c, &root, "src", &coord)?;
        dst = dir_on(&c, &root, "dst", &part)?;
        fs::write(src.join("x"), b"moving")?;
        // An unrelated file whose inode the coordinator's manager owns.
        let mut found = None;
        for i in 0..64 {
            let p = src.join(format!("u{i}"));
            fs::write(&p, b"")?;
            if c.manager_of(fs::metadata(&p)?.ino())? == coord {
                found = Some(p);
                break;
            }
        }
        unrelated = found.context("no file landed on the coordinator's manager")?;
    }
    let file = OpenOptions::new().write(true).open(&unrelated)?;
    let stopped = StoppedNode::stop(c.env(), &part)?;
    let (from, to) = (src.join("x"), dst.join("x"));
    let mover = {
        let (from, to) = (from.clone(), to.clone());
        std::thread::spawn(move || fs::rename(&from, &to))
    };
    {
        info!(
            "--- while {part} is stopped and the rename pending: write + fsync {} five times",
            unrelated.display()
        );
        for round in 0..5u8 {
            let mut f = file.try_clone()?;
            with_timeout(
                HANG,
                "write + fsync of the unrelated file",
                move || -> Result<()> {
                    f.write_all(&[round; 4096])?;
                    f.sync_all()?;
                    Ok(())
                },
            )??;
            info!(round, "write + fsync done");
        }
        ensure!(
            !mover.is_finished(),
            "the rename finished while its participant was stopped"
        );
        info!("the rename is still pending; writes on the coordinator went on");
    }
    {
        info!("--- SIGCONT {part}: the rename completes or fails cleanly");
        stopped.resume()?;
        let r = with_timeout(HANG, "the pending rename", move || mover.join())?
            .map_err(|_| anyhow::anyhow!("thread panicked"))?;
        info!(?r, "rename answered");
        let (at_src, at_dst) = (from.exists(), to.exists());
        match &r {
            Ok(()) => ensure!(
                !at_src && at_dst,
                "rename succeeded: src={at_src} dst={at_dst}"
            ),
            Err(e) => {
                info!("rename failed: {e}");
                ensure!(
                    at_src != at_dst,
                    "x at src={at_src} and dst={at_dst} after a failed rename"
                );
            }
        }
        let now_at = if at_dst { &to } else { &from };
        ensure!(fs::read(now_at)? == b"moving", "x keeps its data");
        ensure!(fs::metadata(now_at)?.nlink() == 1, "x has one link");
        info!("--- nothing stays locked: move it back and forth");
        let back = if at_dst { &from } else { &to };
        fs::rename(now_at, back)?;
        fs::rename(back, now_at)?;
        ensure!(
            fs::metadata(&unrelated)?.len() == 5 * 4096,
            "unrelated file has all writes"
        );
    }
    c.done();
    Ok(())
}
