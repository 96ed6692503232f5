//! A seeded random workload of one worker process on its own directory (the `durability`
//! area): pwrite at random offsets, appends, writes through mmap, truncates (shrink and
//! grow), renames within the directory and into `sub/`, hard links, xattrs, fsync and
//! unlink, against an in-memory model of every file's exact bytes, xattrs and names. The
//! model is compared with the file system at checkpoints and at the end, and can be saved
//! as a manifest (`save`/`load`) so that another process can verify the tree later (after
//! a remount). With a share dir, the worker also freezes snapshots for a peer worker on
//! another mount to read (`Share`).
//!
//! Owns only the worker's directory; it must not touch other directories of the mount.
//! Every loop is bounded by an op count and a deadline.

mod content;
mod model;

pub use content::{compare_bytes, compare_bytes_at, content, describe, describe_at};
pub use model::{check_tree, FileModel, Model};

use crate::sys::{get_xattr, mmap_write, remove_xattr, set_xattr};
use anyhow::{ensure, Context, Result};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Files alive at once in one worker's directory.
const MAX_FILES: usize = 10;
/// Names (hard links) one file may have.
const MAX_NAMES: usize = 4;
/// Writes start below this offset; truncates grow up to it.
const MAX_OFFSET: u64 = 768 * 1024;
/// Longest single write.
const MAX_WRITE: usize = 96 * 1024;
/// Ops remembered for a failure report.
const HISTORY: usize = 25;

/// One worker's parameters.
#[derive(Clone, Debug)]
pub struct Config {
    /// The worker's directory (created if missing).
    pub dir: PathBuf,
    /// Worker index, part of every file id (so content names its writer).
    pub worker: u16,
    pub seed: u64,
    /// Upper bound of operations.
    pub max_ops: u64,
    /// Upper bound of the run time (checkpoints and the final check come on top).
    pub duration: Duration,
    /// Full checks spread over the run, besides the final one.
    pub checkpoints: u32,
}

/// Snapshots a worker freezes for a peer on another mount: `SHARE/NAME-K.data` (the bytes,
/// on the local disk) and `SHARE/NAME-K.ready` (the file's path relative to the mount root,
/// written after the frozen file was fsynced; never changed afterwards).
#[derive(Clone, Debug)]
pub struct Share {
    /// Local (not the mount) directory shared by the workers.
    pub dir: PathBuf,
    /// The mount root as this worker sees it.
    pub root: PathBuf,
    /// This worker's directory name under the root.
    pub name: String,
    /// The peer's directory name, whose snapshots this worker reads.
    pub peer: Option<String>,
}

impl Share {
    fn freeze(&self, dir: &Path, k: u32, data: &[u8]) -> Result<()> {
        let frozen = dir.join("frozen");
        fs::create_dir_all(&frozen)?;
        let p = frozen.join(format!("snap-{k}"));
        let mut f = File::create(&p)?;
        f.write_all(data)?;
        f.sync_all()?;
        drop(f);
        let tag = format!("{}-{k}", self.name);
        fs::write(self.dir.join(format!("{tag}.data")), data)?;
        let tmp = self.dir.join(format!("{tag}.tmp"));
        fs::write(&tmp, format!("{}/frozen/snap-{k}", self.name))?;
        fs::rename(&tmp, self.dir.join(format!("{tag}.ready")))?;
        Ok(())
    }

    /// Reads every snapshot the peer has frozen so far through this mount; returns how many.
    pub fn check_peer(&self) -> Result<usize> {
        let Some(peer) = &self.peer else {
            return Ok(0);
        };
        let mut n = 0;
        for e in fs::read_dir(&self.dir)? {
            let name = e?.file_name().to_string_lossy().into_owned();
            let Some(tag) = name.strip_suffix(".ready") else {
                continue;
            };
            if !tag.starts_with(&format!("{peer}-")) {
                continue;
            }
            let rel = fs::read_to_string(self.dir.join(&name))?;
            let want = fs::read(self.dir.join(format!("{tag}.data")))?;
            let got = fs::read(self.root.join(&rel))
                .with_context(|| format!("read peer snapshot {rel}"))?;
            compare_bytes(&want, &got)
                .with_context(|| format!("peer snapshot {rel} (frozen and fsynced by {peer})"))?;
            n += 1;
        }
        Ok(n)
    }
}

/// A running worker: the model, the open descriptors and the random source.
pub struct Worker {
    cfg: Config,
    rng: StdRng,
    model: Model,
    fds: HashMap<u32, File>,
    next_file: u32,
    next_name: u64,
    version: u32,
    history: VecDeque<String>,
    share: Option<Share>,
    /// Operations done, by kind.
    pub counts: BTreeMap<&'static str, u64>,
}

impl Worker {
    pub fn new(cfg: Config, share: Option<Share>) -> Result<Worker> {
        fs::create_dir_all(cfg.dir.join("sub"))
            .with_context(|| format!("create {}", cfg.dir.display()))?;
        Ok(Worker {
            rng: StdRng::seed_from_u64(cfg.seed),
            cfg,
            model: Model::default(),
            fds: HashMap::new(),
            next_file: 0,
            next_name: 0,
            version: 0,
            history: VecDeque::new(),
            share,
            counts: BTreeMap::new(),
        })
    }

    pub fn model(&self) -> &Model {
        &self.model
    }

    /// Runs ops until `max_ops` or the deadline, with `checkpoints` full checks spread over
    /// the duration, then closes every descriptor and checks once more. `progress` gets one
    /// line per checkpoint.
    pub fn run(&mut self, mut progress: impl FnMut(&str)) -> Result<u64> {
        let start = Instant::now();
        let parts = self.cfg.checkpoints + 1;
        let mut next_ckpt = 1;
        let mut ops = 0;
        while ops < self.cfg.max_ops && start.elapsed() < self.cfg.duration {
            // A checkpoint at each k/(checkpoints+1) of the run time or of the op budget.
            let due = start.elapsed() >= self.cfg.duration * next_ckpt / parts
                || ops >= self.cfg.max_ops * u64::from(next_ckpt) / u64::from(parts);
            if next_ckpt < parts && due {
                self.checkpoint(next_ckpt, ops)
                    .with_context(|| self.report(&format!("checkpoint {next_ckpt}")))?;
                progress(&format!(
                    "checkpoint {next_ckpt} ok after {ops} ops, {:?}",
                    start.elapsed()
                ));
                next_ckpt += 1;
            }
            let desc = self
                .step()
                .with_context(|| self.report(&format!("op {ops}")))?;
            self.remember(format!("{ops}: {desc}"));
            ops += 1;
        }
        self.fds.clear();
        check_tree(&self.cfg.dir, &self.model, &self.fds)
            .with_context(|| self.report("final check (descriptors closed)"))?;
        if let Some(s) = &self.share {
            let n = s
                .check_peer()
                .context("final read of the peer's snapshots")?;
            progress(&format!("read {n} snapshot(s) of the peer"));
        }
        progress(&format!(
            "final check ok after {ops} ops, {:?}; files {}, bytes {}; ops {:?}",
            start.elapsed(),
            self.model.files.len(),
            self.model
                .files
                .values()
                .map(|f| f.data.len())
                .sum::<usize>(),
            self.counts
        ));
        Ok(ops)
    }

    fn checkpoint(&mut self, k: u32, ops: u64) -> Result<()> {
        self.remember(format!(
            "{ops}: checkpoint {k}: fsync every open file, full check"
        ));
        for (id, f) in &self.fds {
            f.sync_all()
                .with_context(|| format!("fsync {id:#x} at checkpoint {k}"))?;
        }
        check_tree(&self.cfg.dir, &self.model, &self.fds)?;
        if let Some(s) = self.share.clone() {
            let ids: Vec<u32> = self.model.files.keys().copied().collect();
            if !ids.is_empty() {
                let id = ids[self.rng.random_range(0..ids.len())];
                let data = self.model.files[&id].data.clone();
                s.freeze(&self.cfg.dir, k, &data)?;
            }
            s.check_peer()?;
        }
        Ok(())
    }

    fn remember(&mut self, s: String) {
        if self.history.len() == HISTORY {
            self.history.pop_front();
        }
        self.history.push_back(s);
    }

    fn report(&self, at: &str) -> String {
        let recent: Vec<&str> = self.history.iter().map(String::as_str).collect();
        format!(
            "worker {} (seed {}) failed at {at}; last ops before it:\n    {}\n  {at} failed",
            self.cfg.worker,
            self.cfg.seed,
            recent.join("\n    ")
        )
    }

    fn path(&self, name: &str) -> PathBuf {
        self.cfg.dir.join(name)
    }

    fn fresh_name(&mut self, id: u32) -> String {
        self.next_name += 1;
        let prefix = if self.rng.random_bool(0.4) {
            "sub/"
        } else {
            ""
        };
        format!("{prefix}f{id:x}-{}", self.next_name)
    }

    fn random_file(&mut self) -> Option<u32> {
        let ids: Vec<u32> = self.model.files.keys().copied().collect();
        (!ids.is_empty()).then(|| ids[self.rng.random_range(0..ids.len())])
    }

    fn random_name_of(&mut self, id: u32) -> String {
        let names: Vec<String> = self
            .model
            .names_of(id)
            .into_iter()
            .map(String::from)
            .collect();
        names[self.rng.random_range(0..names.len())].clone()
    }

    /// The open read-write descriptor of `id`, opened through a random name if none.
    fn fd(&mut self, id: u32) -> Result<&File> {
        if !self.fds.contains_key(&id) {
            let n = self.random_name_of(id);
            let f = OpenOptions::new()
                .read(true)
                .write(true)
                .open(self.path(&n))
                .with_context(|| format!("open {n}"))?;
            self.fds.insert(id, f);
        }
        Ok(&self.fds[&id])
    }

    fn bump(&mut self) -> u32 {
        self.version += 1;
        self.version
    }

    fn count(&mut self, k: &'static str) {
        *self.counts.entry(k).or_default() += 1;
    }

    /// One random operation, applied to the file system and the model. Returns its text.
    fn step(&mut self) -> Result<String> {
        let roll = self.rng.random_range(0..100u32);
        let Some(id) = self
            .random_file()
            .filter(|_| roll >= 6 || self.model.files.len() >= MAX_FILES)
        else {
            return self.create();
        };
        match roll {
            0..=30 => self.pwrite(id),
            31..=38 => self.append(id),
            39..=46 => self.mmap(id),
            47..=53 => self.truncate(id),
            54..=60 => self.rename(id),
            61..=64 => self.link(id),
            65..=71 => self.setxattr(id),
            72..=73 => self.removexattr(id),
            74..=78 => self.fsync(id),
            79..=81 => {
                self.count("close");
                self.fds.remove(&id);
                Ok(format!("close fd of {id:#x}"))
            }
            82..=86 => self.unlink(id),
            _ => self.read_check(id),
        }
    }

    fn create(&mut self) -> Result<String> {
        self.count("create");
        let id = (u32::from(self.cfg.worker) << 12) | (self.next_file & 0xfff);
        self.next_file += 1;
        let name = self.fresh_name(id);
        let v = self.bump();
        let len = self.rng.random_range(0..MAX_WRITE);
        let data = content(id, v, 0, len);
        let mut f = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(self.path(&name))
            .with_context(|| format!("create {name}"))?;
        f.write_all(&data)
            .with_context(|| format!("write {len} bytes to the new {name}"))?;
        self.model.files.insert(
            id,
            FileModel {
                data,
                xattrs: BTreeMap::new(),
            },
        );
        self.model.names.insert(name.clone(), id);
        self.fds.insert(id, f);
        Ok(format!(
            "create {name} = file {id:#x} with {len} bytes (v{v})"
        ))
    }

    fn pwrite(&mut self, id: u32) -> Result<String> {
        self.count("pwrite");
        let off = self.rng.random_range(0..MAX_OFFSET);
        let len = self.rng.random_range(1..=MAX_WRITE);
        let v = self.bump();
        let data = content(id, v, off, len);
        self.fd(id)?
            .write_all_at(&data, off)
            .with_context(|| format!("pwrite {len} at {off} of {id:#x}"))?;
        write_model(&mut self.model, id, off, &data);
        Ok(format!("pwrite {id:#x} [{off}, +{len}) v{v}"))
    }

    fn append(&mut self, id: u32) -> Result<String> {
        self.count("append");
        let n = self.random_name_of(id);
        let off = self.model.files[&id].data.len() as u64;
        let len = self.rng.random_range(1..=MAX_WRITE / 2);
        let v = self.bump();
        let data = content(id, v, off, len);
        let mut f = OpenOptions::new()
            .append(true)
            .open(self.path(&n))
            .with_context(|| format!("open {n} O_APPEND"))?;
        f.write_all(&data)
            .with_context(|| format!("append {len} to {n}"))?;
        write_model(&mut self.model, id, off, &data);
        Ok(format!("append {len} to {n} ({id:#x}) at {off} v{v}"))
    }

    fn mmap(&mut self, id: u32) -> Result<String> {
        let size = self.model.files[&id].data.len() as u64;
        if size == 0 {
            return self.pwrite(id);
        }
        self.count("mmap");
        let off = self.rng.random_range(0..size);
        let len = self.rng.random_range(1..=(size - off).min(64 * 1024)) as usize;
        let sync = self.rng.random_bool(0.5);
        let v = self.bump();
        let data = content(id, v, off, len);
        // A store past the real EOF would be SIGBUS; report a size that went wrong instead.
        let real = self.fd(id)?.metadata().context("fstat before mmap")?.len();
        ensure!(
            real == size,
            "fstat of {id:#x} before an mmap write says {real} bytes, expected {size}"
        );
        mmap_write(self.fd(id)?, off, &data, sync)
            .with_context(|| format!("mmap write {len} at {off} of {id:#x}"))?;
        write_model(&mut self.model, id, off, &data);
        Ok(format!(
            "mmap write {id:#x} [{off}, +{len}) v{v} msync={sync}"
        ))
    }

    fn truncate(&mut self, id: u32) -> Result<String> {
        self.count("truncate");
        let size = self.model.files[&id].data.len() as u64;
        let new = if self.rng.random_bool(0.5) && size > 0 {
            self.rng.random_range(0..size)
        } else {
            self.rng.random_range(size..=MAX_OFFSET.max(size))
        };
        let how = if self.rng.random_bool(0.5) {
            self.fd(id)?
                .set_len(new)
                .with_context(|| format!("ftruncate {id:#x} {size} -> {new}"))?;
            "ftruncate".to_string()
        } else {
            let n = self.random_name_of(id);
            OpenOptions::new()
                .write(true)
                .open(self.path(&n))
                .and_then(|f| f.set_len(new))
                .with_context(|| format!("truncate {n}"))?;
            format!("truncate via {n}")
        };
        if let Some(f) = self.model.files.get_mut(&id) {
            f.data.resize(new as usize, 0);
        }
        Ok(format!("{how} {id:#x} {size} -> {new}"))
    }

    fn rename(&mut self, id: u32) -> Result<String> {
        self.count("rename");
        let from = self.random_name_of(id);
        // Sometimes over a name of another file (which loses that name).
        let others: Vec<(String, u32)> = self
            .model
            .names
            .iter()
            .filter(|(_, f)| **f != id)
            .map(|(n, f)| (n.clone(), *f))
            .collect();
        let victim = (!others.is_empty() && self.rng.random_bool(0.25))
            .then(|| others[self.rng.random_range(0..others.len())].clone());
        let to = match &victim {
            Some((n, _)) => n.clone(),
            None => self.fresh_name(id),
        };
        fs::rename(self.path(&from), self.path(&to))
            .with_context(|| format!("rename {from} -> {to}"))?;
        self.model.names.remove(&from);
        self.model.names.insert(to.clone(), id);
        if let Some((_, v)) = victim {
            if self.model.names_of(v).is_empty() {
                self.model.files.remove(&v);
                self.fds.remove(&v);
            }
        }
        Ok(format!(
            "rename {from} -> {to} ({id:#x}; replaced {victim:?})"
        ))
    }

    fn link(&mut self, id: u32) -> Result<String> {
        if self.model.names_of(id).len() >= MAX_NAMES {
            return self.read_check(id);
        }
        self.count("link");
        let from = self.random_name_of(id);
        let to = self.fresh_name(id);
        fs::hard_link(self.path(&from), self.path(&to))
            .with_context(|| format!("link {from} -> {to}"))?;
        self.model.names.insert(to.clone(), id);
        Ok(format!("link {from} -> {to} ({id:#x})"))
    }

    fn setxattr(&mut self, id: u32) -> Result<String> {
        self.count("setxattr");
        let n = self.random_name_of(id);
        let key = format!("user.k{}", self.rng.random_range(0..4));
        let v = self.bump();
        let value = format!("v{v}-{}", "x".repeat(self.rng.random_range(0..200)));
        set_xattr(&self.path(&n), &key, value.as_bytes(), 0)
            .with_context(|| format!("setxattr {key} on {n}"))?;
        let back = get_xattr(&self.path(&n), &key)
            .with_context(|| format!("getxattr {key} on {n} after setxattr"))?;
        compare_bytes(value.as_bytes(), &back)
            .with_context(|| format!("getxattr {key} on {n} right after setxattr"))?;
        if let Some(f) = self.model.files.get_mut(&id) {
            f.xattrs.insert(key.clone(), value.into_bytes());
        }
        Ok(format!("setxattr {key} on {n} ({id:#x}) v{v}"))
    }

    fn removexattr(&mut self, id: u32) -> Result<String> {
        let keys: Vec<String> = self.model.files[&id].xattrs.keys().cloned().collect();
        if keys.is_empty() {
            return self.setxattr(id);
        }
        self.count("removexattr");
        let key = keys[self.rng.random_range(0..keys.len())].clone();
        let n = self.random_name_of(id);
        remove_xattr(&self.path(&n), &key).with_context(|| format!("removexattr {key} on {n}"))?;
        if let Some(f) = self.model.files.get_mut(&id) {
            f.xattrs.remove(&key);
        }
        Ok(format!("removexattr {key} on {n} ({id:#x})"))
    }

    fn fsync(&mut self, id: u32) -> Result<String> {
        self.count("fsync");
        let data_only = self.rng.random_bool(0.3);
        let f = self.fd(id)?;
        let r = if data_only {
            f.sync_data()
        } else {
            f.sync_all()
        };
        r.with_context(|| format!("fsync {id:#x} (data only: {data_only})"))?;
        Ok(format!("fsync {id:#x} (data only: {data_only})"))
    }

    fn unlink(&mut self, id: u32) -> Result<String> {
        self.count("unlink");
        let n = self.random_name_of(id);
        let last = self.model.names_of(id).len() == 1;
        if last {
            self.fds.remove(&id);
        }
        fs::remove_file(self.path(&n)).with_context(|| format!("unlink {n}"))?;
        self.model.names.remove(&n);
        if last {
            self.model.files.remove(&id);
        }
        Ok(format!("unlink {n} ({id:#x}, last name: {last})"))
    }

    fn read_check(&mut self, id: u32) -> Result<String> {
        self.count("read");
        let size = self.model.files[&id].data.len() as u64;
        let off = self.rng.random_range(0..=size);
        let len = self.rng.random_range(0..=MAX_WRITE) as u64;
        let mut buf = vec![0u8; len as usize];
        let mut got = 0;
        let f = self.fd(id)?;
        while got < buf.len() {
            let n = f
                .read_at(&mut buf[got..], off + got as u64)
                .with_context(|| format!("pread {len} at {off} of {id:#x}"))?;
            if n == 0 {
                break;
            }
            got += n;
        }
        buf.truncate(got);
        let end = (off + len).min(size) as usize;
        let want = &self.model.files[&id].data[off as usize..end];
        compare_bytes_at(want, &buf, off)
            .with_context(|| format!("pread {len} at {off} of {id:#x}"))?;
        Ok(format!("pread {id:#x} [{off}, +{len}) ok"))
    }
}

fn write_model(model: &mut Model, id: u32, off: u64, data: &[u8]) {
    if let Some(f) = model.files.get_mut(&id) {
        let end = off as usize + data.len();
        if f.data.len() < end {
            f.data.resize(end, 0);
        }
        f.data[off as usize..end].copy_from_slice(data);
    }
}
