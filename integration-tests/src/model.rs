//! A reference model of a POSIX file system (Linux errno rules) for randomized operation
//! sequences: `Model::apply` predicts the outcome of an `Op`, `execute` performs it on a
//! real directory, `OpGen` draws seeded random ops, `run_sequence` checks them step by step
//! and `check_tree` compares whole trees. Files, directories and hard links only (no
//! symlinks, no permissions). The model must not depend on the file system under test.

use crate::pattern;
use anyhow::{bail, Context, Result};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;
use std::fmt;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;

/// An errno value.
pub type Errno = i32;

/// One file system operation; paths are relative to the sequence's base directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// open(O_CREAT|O_EXCL|O_WRONLY)
    Create {
        path: String,
    },
    /// open(O_WRONLY) + pwrite of `len` pattern bytes (stream `seed`) at `offset`
    Write {
        path: String,
        offset: u64,
        len: usize,
        seed: u64,
    },
    /// truncate(2)
    Truncate {
        path: String,
        size: u64,
    },
    /// read the whole file
    Read {
        path: String,
    },
    Unlink {
        path: String,
    },
    Mkdir {
        path: String,
    },
    Rmdir {
        path: String,
    },
    Rename {
        from: String,
        to: String,
    },
    Link {
        from: String,
        to: String,
    },
    /// lstat(2)
    Stat {
        path: String,
    },
    Readdir {
        path: String,
    },
    /// open + fsync
    Fsync {
        path: String,
    },
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::Create { path } => write!(f, "create {path}"),
            Op::Write {
                path,
                offset,
                len,
                seed,
            } => write!(f, "write {path} @{offset} +{len} (seed {seed})"),
            Op::Truncate { path, size } => write!(f, "truncate {path} to {size}"),
            Op::Read { path } => write!(f, "read {path}"),
            Op::Unlink { path } => write!(f, "unlink {path}"),
            Op::Mkdir { path } => write!(f, "mkdir {path}"),
            Op::Rmdir { path } => write!(f, "rmdir {path}"),
            Op::Rename { from, to } => write!(f, "rename {from} -> {to}"),
            Op::Link { from, to } => write!(f, "link {from} -> {to}"),
            Op::Stat { path } => write!(f, "stat {path}"),
            Op::Readdir { path } => write!(f, "readdir {path}"),
            Op::Fsync { path } => write!(f, "fsync {path}"),
        }
    }
}

/// What a successful op shows.
#[derive(Clone, PartialEq, Eq)]
pub enum Obs {
    Done,
    Data(Vec<u8>),
    /// For directories `size` and `nlink` are not compared (reported as 0).
    Stat {
        dir: bool,
        size: u64,
        nlink: u64,
    },
    Names(Vec<String>),
}

impl fmt::Debug for Obs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Obs::Done => write!(f, "ok"),
            Obs::Data(d) => write!(f, "{} bytes", d.len()),
            Obs::Stat { dir: true, .. } => write!(f, "directory"),
            Obs::Stat {
                dir: false,
                size,
                nlink,
            } => write!(f, "file size {size} nlink {nlink}"),
            Obs::Names(n) => write!(f, "{n:?}"),
        }
    }
}

/// Outcome of an op: what it shows, or its errno.
pub type Outcome = std::result::Result<Obs, Errno>;

#[derive(Clone, Debug)]
enum Node {
    File { data: Vec<u8>, nlink: u64 },
    Dir { entries: BTreeMap<String, usize> },
}

/// The model: inodes by number; inode 0 is the base directory.
#[derive(Clone, Debug)]
pub struct Model {
    nodes: BTreeMap<usize, Node>,
    next: usize,
}

const ROOT: usize = 0;

impl Default for Model {
    fn default() -> Self {
        Model::new()
    }
}

fn split(path: &str) -> Vec<&str> {
    path.split('/').filter(|c| !c.is_empty()).collect()
}

impl Model {
    /// An empty base directory.
    pub fn new() -> Model {
        let mut nodes = BTreeMap::new();
        nodes.insert(
            ROOT,
            Node::Dir {
                entries: BTreeMap::new(),
            },
        );
        Model { nodes, next: 1 }
    }

    fn node(&self, ino: usize) -> &Node {
        &self.nodes[&ino]
    }

    fn entries(&self, ino: usize) -> Option<&BTreeMap<String, usize>> {
        match self.node(ino) {
            Node::Dir { entries } => Some(entries),
            Node::File { .. } => None,
        }
    }

    fn entries_mut(&mut self, ino: usize) -> &mut BTreeMap<String, usize> {
        match self.nodes.get_mut(&ino) {
            Some(Node::Dir { entries }) => entries,
            _ => unreachable!("entries_mut on a non-directory"),
        }
    }

    fn is_dir(&self, ino: usize) -> bool {
        matches!(self.node(ino), Node::Dir { .. })
    }

    /// Walks `comps` from the base: ENOTDIR through a file, ENOENT when missing.
    fn walk(&self, comps: &[&str]) -> std::result::Result<usize, Errno> {
        let mut cur = ROOT;
        for c in comps {
            let e = self.entries(cur).ok_or(libc::ENOTDIR)?;
            cur = *e.get(*c).ok_or(libc::ENOENT)?;
        }
        Ok(cur)
    }

    fn resolve(&self, path: &str) -> std::result::Result<usize, Errno> {
        self.walk(&split(path))
    }

    /// The parent directory and the last name.
    fn resolve_parent<'a>(&self, path: &'a str) -> std::result::Result<(usize, &'a str), Errno> {
        let comps = split(path);
        let (last, dirs) = comps.split_last().ok_or(libc::EINVAL)?;
        let parent = self.walk(dirs)?;
        if !self.is_dir(parent) {
            return Err(libc::ENOTDIR);
        }
        Ok((parent, last))
    }

    fn lookup(&self, parent: usize, name: &str) -> Option<usize> {
        self.entries(parent).and_then(|e| e.get(name).copied())
    }

    fn alloc(&mut self, n: Node) -> usize {
        let ino = self.next;
        self.next += 1;
        self.nodes.insert(ino, n);
        ino
    }

    /// Drops one link of `ino` (a file) or the directory itself.
    fn drop_link(&mut self, ino: usize) {
        match self.nodes.get_mut(&ino) {
            Some(Node::File { nlink, .. }) => {
                *nlink -= 1;
                if *nlink == 0 {
                    self.nodes.remove(&ino);
                }
            }
            Some(Node::Dir { .. }) => {
                self.nodes.remove(&ino);
            }
            None => {}
        }
    }

    /// Applies `op` to the model and returns the outcome a correct file system shows.
    pub fn apply(&mut self, op: &Op) -> Outcome {
        match op {
            Op::Create { path } => {
                let (parent, name) = self.resolve_parent(path)?;
                if self.lookup(parent, name).is_some() {
                    return Err(libc::EEXIST);
                }
                let ino = self.alloc(Node::File {
                    data: Vec::new(),
                    nlink: 1,
                });
                self.entries_mut(parent).insert(name.to_string(), ino);
                Ok(Obs::Done)
            }
            Op::Write {
                path,
                offset,
                len,
                seed,
            } => {
                let ino = self.resolve(path)?;
                match self.nodes.get_mut(&ino) {
                    Some(Node::File { data, .. }) => {
                        if *len > 0 {
                            let end = *offset as usize + len;
                            if data.len() < end {
                                data.resize(end, 0);
                            }
                            pattern::fill(*seed, *offset, &mut data[*offset as usize..end]);
                        }
                        Ok(Obs::Done)
                    }
                    _ => Err(libc::EISDIR),
                }
            }
            Op::Truncate { path, size } => {
                let ino = self.resolve(path)?;
                match self.nodes.get_mut(&ino) {
                    Some(Node::File { data, .. }) => {
                        data.resize(*size as usize, 0);
                        Ok(Obs::Done)
                    }
                    _ => Err(libc::EISDIR),
                }
            }
            Op::Read { path } => {
                let ino = self.resolve(path)?;
                match self.node(ino) {
                    Node::File { data, .. } => Ok(Obs::Data(data.clone())),
                    Node::Dir { .. } => Err(libc::EISDIR),
                }
            }
            Op::Unlink { path } => {
                let (parent, name) = self.resolve_parent(path)?;
                let ino = self.lookup(parent, name).ok_or(libc::ENOENT)?;
                if self.is_dir(ino) {
                    return Err(libc::EISDIR);
                }
                self.entries_mut(parent).remove(name);
                self.drop_link(ino);
                Ok(Obs::Done)
            }
            Op::Mkdir { path } => {
                let (parent, name) = self.resolve_parent(path)?;
                if self.lookup(parent, name).is_some() {
                    return Err(libc::EEXIST);
                }
                let ino = self.alloc(Node::Dir {
                    entries: BTreeMap::new(),
                });
                self.entries_mut(parent).insert(name.to_string(), ino);
                Ok(Obs::Done)
            }
            Op::Rmdir { path } => {
                let (parent, name) = self.resolve_parent(path)?;
                let ino = self.lookup(parent, name).ok_or(libc::ENOENT)?;
                match self.entries(ino) {
                    None => return Err(libc::ENOTDIR),
                    Some(e) if !e.is_empty() => return Err(libc::ENOTEMPTY),
                    Some(_) => {}
                }
                self.entries_mut(parent).remove(name);
                self.drop_link(ino);
                Ok(Obs::Done)
            }
            Op::Rename { from, to } => self.rename(from, to),
            Op::Link { from, to } => {
                let src = self.resolve(from)?;
                let (parent, name) = self.resolve_parent(to)?;
                if self.lookup(parent, name).is_some() {
                    return Err(libc::EEXIST);
                }
                match self.nodes.get_mut(&src) {
                    Some(Node::File { nlink, .. }) => *nlink += 1,
                    _ => return Err(libc::EPERM),
                }
                self.entries_mut(parent).insert(name.to_string(), src);
                Ok(Obs::Done)
            }
            Op::Stat { path } => {
                let ino = self.resolve(path)?;
                Ok(match self.node(ino) {
                    Node::File { data, nlink } => Obs::Stat {
                        dir: false,
                        size: data.len() as u64,
                        nlink: *nlink,
                    },
                    Node::Dir { .. } => Obs::Stat {
                        dir: true,
                        size: 0,
                        nlink: 0,
                    },
                })
            }
            Op::Readdir { path } => {
                let ino = self.resolve(path)?;
                match self.entries(ino) {
                    Some(e) => Ok(Obs::Names(e.keys().cloned().collect())),
                    None => Err(libc::ENOTDIR),
                }
            }
            Op::Fsync { path } => self.resolve(path).map(|_| Obs::Done),
        }
    }

    /// rename(2) in the order Linux checks it (do_renameat2 + vfs_rename).
    fn rename(&mut self, from: &str, to: &str) -> Outcome {
        let (fparent, fname) = self.resolve_parent(from)?;
        let (tparent, tname) = self.resolve_parent(to)?;
        let src = self.lookup(fparent, fname).ok_or(libc::ENOENT)?;
        let target = self.lookup(tparent, tname);
        let fcomps = split(from);
        let tcomps = split(to);
        // The source is an ancestor of the new parent (moving a directory under itself).
        if tcomps[..tcomps.len() - 1].starts_with(&fcomps) {
            return Err(libc::EINVAL);
        }
        // The target is an ancestor of the old parent.
        if target.is_some() && fcomps[..fcomps.len() - 1].starts_with(&tcomps) {
            return Err(libc::ENOTEMPTY);
        }
        if target == Some(src) {
            return Ok(Obs::Done);
        }
        if let Some(t) = target {
            match (self.is_dir(src), self.entries(t)) {
                (true, None) => return Err(libc::ENOTDIR),
                (false, Some(_)) => return Err(libc::EISDIR),
                (true, Some(e)) if !e.is_empty() => return Err(libc::ENOTEMPTY),
                _ => {}
            }
            self.entries_mut(tparent).remove(tname);
            self.drop_link(t);
        }
        self.entries_mut(fparent).remove(fname);
        self.entries_mut(tparent).insert(tname.to_string(), src);
        Ok(Obs::Done)
    }

    /// Every path in the model with whether it is a directory, parents first.
    pub fn paths(&self) -> Vec<(String, bool)> {
        let mut out = Vec::new();
        let mut stack = vec![(String::new(), ROOT)];
        while let Some((prefix, ino)) = stack.pop() {
            if let Some(e) = self.entries(ino) {
                for (name, child) in e.iter().rev() {
                    let p = if prefix.is_empty() {
                        name.clone()
                    } else {
                        format!("{prefix}/{name}")
                    };
                    out.push((p.clone(), self.is_dir(*child)));
                    stack.push((p, *child));
                }
            }
        }
        out
    }
}

/// Performs `op` under `base` with real system calls.
pub fn execute(base: &Path, op: &Op) -> Outcome {
    let p = |s: &str| base.join(s);
    let e = |e: std::io::Error| e.raw_os_error().unwrap_or(-1);
    match op {
        Op::Create { path } => std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(p(path))
            .map(|_| Obs::Done)
            .map_err(e),
        Op::Write {
            path,
            offset,
            len,
            seed,
        } => {
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(p(path))
                .map_err(e)?;
            f.write_all_at(&pattern::bytes(*seed, *offset, *len), *offset)
                .map_err(e)?;
            Ok(Obs::Done)
        }
        Op::Truncate { path, size } => {
            let len = i64::try_from(*size).map_err(|_| libc::EFBIG)?;
            nix::unistd::truncate(&p(path), len)
                .map(|_| Obs::Done)
                .map_err(|e| e as i32)
        }
        Op::Read { path } => std::fs::read(p(path)).map(Obs::Data).map_err(e),
        Op::Unlink { path } => std::fs::remove_file(p(path)).map(|_| Obs::Done).map_err(e),
        Op::Mkdir { path } => std::fs::create_dir(p(path)).map(|_| Obs::Done).map_err(e),
        Op::Rmdir { path } => std::fs::remove_dir(p(path)).map(|_| Obs::Done).map_err(e),
        Op::Rename { from, to } => std::fs::rename(p(from), p(to))
            .map(|_| Obs::Done)
            .map_err(e),
        Op::Link { from, to } => std::fs::hard_link(p(from), p(to))
            .map(|_| Obs::Done)
            .map_err(e),
        Op::Stat { path } => {
            let m = std::fs::symlink_metadata(p(path)).map_err(e)?;
            Ok(if m.is_dir() {
                Obs::Stat {
                    dir: true,
                    size: 0,
                    nlink: 0,
                }
            } else {
                Obs::Stat {
                    dir: false,
                    size: m.len(),
                    nlink: m.nlink(),
                }
            })
        }
        Op::Readdir { path } => {
            let rd = std::fs::read_dir(p(path)).map_err(e)?;
            let mut names = Vec::new();
            for ent in rd {
                names.push(ent.map_err(e)?.file_name().to_string_lossy().into_owned());
            }
            names.sort();
            Ok(Obs::Names(names))
        }
        Op::Fsync { path } => {
            let f = std::fs::File::open(p(path)).map_err(e)?;
            f.sync_all().map(|_| Obs::Done).map_err(e)
        }
    }
}

/// How an actual outcome differs from the predicted one.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Mismatch {
    #[error("data differs at byte {at}: expected {want_len} bytes{}, got {got_len} bytes{}", there(*want_byte), there(*got_byte))]
    Data {
        at: usize,
        want_len: usize,
        want_byte: Option<u8>,
        got_len: usize,
        got_byte: Option<u8>,
    },
    #[error("expected {want:?}, got {got:?}")]
    Observed { want: Obs, got: Obs },
    #[error("expected success ({want:?}), got {}", crate::sys::errno_name(*got))]
    Failed { want: Obs, got: Errno },
    #[error("expected {}, but it succeeded ({got:?})", crate::sys::errno_name(*want))]
    Succeeded { want: Errno, got: Obs },
    #[error("expected {}, got {}", crate::sys::errno_name(*want), crate::sys::errno_name(*got))]
    OtherErrno { want: Errno, got: Errno },
}

/// " (0x.. there)" for a byte that exists, nothing past the end.
fn there(b: Option<u8>) -> String {
    b.map(|b| format!(" ({b:#04x} there)")).unwrap_or_default()
}

/// Compares a predicted and an actual outcome.
pub fn compare(want: &Outcome, got: &Outcome) -> std::result::Result<(), Mismatch> {
    match (want, got) {
        (Ok(Obs::Data(w)), Ok(Obs::Data(g))) => match pattern::first_difference(w, g) {
            None => Ok(()),
            Some(i) => Err(Mismatch::Data {
                at: i,
                want_len: w.len(),
                want_byte: w.get(i).copied(),
                got_len: g.len(),
                got_byte: g.get(i).copied(),
            }),
        },
        (Ok(w), Ok(g)) if w == g => Ok(()),
        (Err(w), Err(g)) if w == g => Ok(()),
        (Ok(w), Ok(g)) => Err(Mismatch::Observed {
            want: w.clone(),
            got: g.clone(),
        }),
        (Ok(w), Err(g)) => Err(Mismatch::Failed {
            want: w.clone(),
            got: *g,
        }),
        (Err(w), Ok(g)) => Err(Mismatch::Succeeded {
            want: *w,
            got: g.clone(),
        }),
        (Err(w), Err(g)) => Err(Mismatch::OtherErrno { want: *w, got: *g }),
    }
}

/// Compares the whole tree under `base` with the model: names, kinds, sizes, contents,
/// link counts.
pub fn check_tree(model: &Model, base: &Path) -> Result<()> {
    let mut expected_names: BTreeMap<String, Vec<String>> = BTreeMap::new();
    expected_names.insert(String::new(), Vec::new());
    for (path, is_dir) in model.paths() {
        let parent = path
            .rsplit_once('/')
            .map(|(p, _)| p.to_string())
            .unwrap_or_default();
        let name = path.rsplit('/').next().unwrap_or(&path).to_string();
        expected_names.entry(parent).or_default().push(name);
        if is_dir {
            expected_names.entry(path.clone()).or_default();
        }
        let mut m = model.clone();
        let want = m.apply(&Op::Stat { path: path.clone() });
        let got = execute(base, &Op::Stat { path: path.clone() });
        compare(&want, &got).map_err(|d| anyhow::anyhow!("tree check: stat {path}: {d}"))?;
        if !is_dir {
            let want = m.apply(&Op::Read { path: path.clone() });
            let got = execute(base, &Op::Read { path: path.clone() });
            compare(&want, &got).map_err(|d| anyhow::anyhow!("tree check: read {path}: {d}"))?;
        }
    }
    for (dir, mut names) in expected_names {
        names.sort();
        let got = execute(base, &Op::Readdir { path: dir.clone() });
        compare(&Ok(Obs::Names(names)), &got)
            .map_err(|d| anyhow::anyhow!("tree check: readdir {dir:?}: {d}"))?;
    }
    Ok(())
}

/// Seeded generator of random ops over a small name space, biased toward existing paths.
pub struct OpGen {
    rng: StdRng,
}

const NAMES: [&str; 5] = ["a", "b", "c", "d", "e"];
const MAX_DEPTH: usize = 4;

impl OpGen {
    pub fn new(seed: u64) -> OpGen {
        OpGen {
            rng: StdRng::seed_from_u64(seed),
        }
    }

    fn name(&mut self) -> &'static str {
        NAMES[self.rng.random_range(0..NAMES.len())]
    }

    fn random_path(&mut self) -> String {
        let depth = self.rng.random_range(1..=3);
        (0..depth)
            .map(|_| self.name())
            .collect::<Vec<_>>()
            .join("/")
    }

    /// A path. For an existing object (`fresh` false): mostly an existing path of the
    /// wanted kind. For a new name (`fresh` true): mostly a random name in an existing
    /// directory. Always some random paths, so that every errno case comes up.
    fn path(&mut self, model: &Model, want_dir: Option<bool>, fresh: bool) -> String {
        let paths = model.paths();
        let roll = self.rng.random_range(0..100);
        let (existing, in_dir) = if fresh { (15, 85) } else { (75, 90) };
        if roll < existing {
            let fit: Vec<&String> = paths
                .iter()
                .filter(|(_, d)| want_dir.is_none_or(|w| w == *d))
                .map(|(p, _)| p)
                .collect();
            if !fit.is_empty() {
                return fit[self.rng.random_range(0..fit.len())].clone();
            }
        }
        if roll < in_dir {
            let mut dirs: Vec<&str> = paths
                .iter()
                .filter(|(p, d)| *d && split(p).len() < MAX_DEPTH)
                .map(|(p, _)| p.as_str())
                .collect();
            dirs.push("");
            let d = dirs[self.rng.random_range(0..dirs.len())].to_string();
            let n = self.name();
            return if d.is_empty() {
                n.to_string()
            } else {
                format!("{d}/{n}")
            };
        }
        self.random_path()
    }

    /// The next op for the current model.
    pub fn next(&mut self, model: &Model) -> Op {
        let roll = self.rng.random_range(0..100);
        match roll {
            0..14 => Op::Create {
                path: self.path(model, None, true),
            },
            14..30 => {
                let path = self.path(model, Some(false), false);
                let offset = if self.rng.random_bool(0.3) {
                    self.rng.random_range(0..300_000)
                } else {
                    self.rng.random_range(0..20_000)
                };
                let len = if self.rng.random_bool(0.2) {
                    self.rng.random_range(0..70_000)
                } else {
                    self.rng.random_range(0..5_000)
                };
                Op::Write {
                    path,
                    offset,
                    len,
                    seed: self.rng.random(),
                }
            }
            30..36 => {
                let path = self.path(model, Some(false), false);
                Op::Truncate {
                    path,
                    size: self.rng.random_range(0..300_000),
                }
            }
            36..48 => Op::Read {
                path: self.path(model, Some(false), false),
            },
            48..56 => Op::Unlink {
                path: self.path(model, Some(false), false),
            },
            56..64 => Op::Mkdir {
                path: self.path(model, None, true),
            },
            64..69 => Op::Rmdir {
                path: self.path(model, Some(true), false),
            },
            69..79 => {
                let fresh = self.rng.random_bool(0.6);
                Op::Rename {
                    from: self.path(model, None, false),
                    to: self.path(model, None, fresh),
                }
            }
            79..85 => Op::Link {
                from: self.path(model, Some(false), false),
                to: self.path(model, None, true),
            },
            85..93 => Op::Stat {
                path: self.path(model, None, false),
            },
            93..98 => Op::Readdir {
                path: self.path(model, Some(true), false),
            },
            _ => Op::Fsync {
                path: self.path(model, Some(false), false),
            },
        }
    }
}

/// Runs `ops` random ops from `seed` under `base` (an empty directory), checking every
/// outcome against the model and the whole tree every `check_every` ops and at the end.
pub fn run_sequence(base: &Path, seed: u64, ops: usize, check_every: usize) -> Result<Model> {
    let mut model = Model::new();
    let mut gen = OpGen::new(seed);
    let mut counts: BTreeMap<&'static str, (usize, usize)> = BTreeMap::new();
    for i in 0..ops {
        let op = gen.next(&model);
        let want = model.apply(&op);
        let got = execute(base, &op);
        let kind = op_kind(&op);
        let c = counts.entry(kind).or_default();
        if got.is_ok() {
            c.0 += 1;
        } else {
            c.1 += 1;
        }
        if let Err(d) = compare(&want, &got) {
            bail!("seed {seed}, op #{i}: {op}: {d}");
        }
        if check_every > 0 && (i + 1) % check_every == 0 {
            check_tree(&model, base).with_context(|| format!("seed {seed}, after op #{i}"))?;
            tracing::info!(seed, done = i + 1, "tree matches the model");
        }
    }
    check_tree(&model, base).with_context(|| format!("seed {seed}, at the end"))?;
    tracing::info!(
        seed,
        ops,
        ?counts,
        "sequence matched the model (ok, failed) per op kind"
    );
    Ok(model)
}

fn op_kind(op: &Op) -> &'static str {
    match op {
        Op::Create { .. } => "create",
        Op::Write { .. } => "write",
        Op::Truncate { .. } => "truncate",
        Op::Read { .. } => "read",
        Op::Unlink { .. } => "unlink",
        Op::Mkdir { .. } => "mkdir",
        Op::Rmdir { .. } => "rmdir",
        Op::Rename { .. } => "rename",
        Op::Link { .. } => "link",
        Op::Stat { .. } => "stat",
        Op::Readdir { .. } => "readdir",
        Op::Fsync { .. } => "fsync",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(m: &mut Model, o: Op) -> Outcome {
        m.apply(&o)
    }

    #[test]
    fn rename_rules() {
        let mut m = Model::new();
        op(&mut m, Op::Mkdir { path: "a".into() }).expect("mkdir");
        op(&mut m, Op::Mkdir { path: "a/b".into() }).expect("mkdir");
        op(&mut m, Op::Create { path: "f".into() }).expect("create");
        assert_eq!(
            op(
                &mut m,
                Op::Rename {
                    from: "a".into(),
                    to: "a/b/c".into()
                }
            ),
            Err(libc::EINVAL)
        );
        assert_eq!(
            op(
                &mut m,
                Op::Rename {
                    from: "a/b".into(),
                    to: "a".into()
                }
            ),
            Err(libc::ENOTEMPTY)
        );
        assert_eq!(
            op(
                &mut m,
                Op::Rename {
                    from: "a".into(),
                    to: "f".into()
                }
            ),
            Err(libc::ENOTDIR)
        );
        assert_eq!(
            op(
                &mut m,
                Op::Rename {
                    from: "f".into(),
                    to: "a".into()
                }
            ),
            Err(libc::EISDIR)
        );
        assert_eq!(
            op(
                &mut m,
                Op::Rename {
                    from: "x".into(),
                    to: "y".into()
                }
            ),
            Err(libc::ENOENT)
        );
        assert_eq!(
            op(
                &mut m,
                Op::Rename {
                    from: "f".into(),
                    to: "f/x".into()
                }
            ),
            Err(libc::ENOTDIR)
        );
        op(
            &mut m,
            Op::Link {
                from: "f".into(),
                to: "a/g".into(),
            },
        )
        .expect("link");
        assert_eq!(
            op(
                &mut m,
                Op::Rename {
                    from: "f".into(),
                    to: "a/g".into()
                }
            ),
            Ok(Obs::Done)
        );
        assert_eq!(
            op(&mut m, Op::Stat { path: "f".into() }),
            Ok(Obs::Stat {
                dir: false,
                size: 0,
                nlink: 2
            }),
            "rename between links of one inode changes nothing"
        );
        op(
            &mut m,
            Op::Rename {
                from: "f".into(),
                to: "a/b/h".into(),
            },
        )
        .expect("move");
        assert_eq!(
            op(&mut m, Op::Readdir { path: "a/b".into() }),
            Ok(Obs::Names(vec!["h".into()]))
        );
    }

    #[test]
    fn links_and_unlink() {
        let mut m = Model::new();
        op(&mut m, Op::Create { path: "f".into() }).expect("create");
        op(
            &mut m,
            Op::Write {
                path: "f".into(),
                offset: 10,
                len: 5,
                seed: 1,
            },
        )
        .expect("write");
        op(
            &mut m,
            Op::Link {
                from: "f".into(),
                to: "g".into(),
            },
        )
        .expect("link");
        op(&mut m, Op::Mkdir { path: "d".into() }).expect("mkdir");
        assert_eq!(
            op(
                &mut m,
                Op::Link {
                    from: "d".into(),
                    to: "e".into()
                }
            ),
            Err(libc::EPERM)
        );
        assert_eq!(
            op(
                &mut m,
                Op::Link {
                    from: "d".into(),
                    to: "f".into()
                }
            ),
            Err(libc::EEXIST)
        );
        assert_eq!(
            op(&mut m, Op::Unlink { path: "d".into() }),
            Err(libc::EISDIR)
        );
        op(&mut m, Op::Unlink { path: "f".into() }).expect("unlink");
        assert_eq!(
            op(&mut m, Op::Stat { path: "g".into() }),
            Ok(Obs::Stat {
                dir: false,
                size: 15,
                nlink: 1
            })
        );
        assert_eq!(
            op(&mut m, Op::Rmdir { path: "g".into() }),
            Err(libc::ENOTDIR)
        );
    }

    /// The model must agree with the local file system (the same kernel VFS rules).
    #[test]
    fn model_matches_the_local_file_system() {
        for seed in 1..=3 {
            let d = tempfile::tempdir().expect("tempdir");
            run_sequence(d.path(), seed, 1500, 500).expect("model agrees with the local fs");
        }
    }
}
