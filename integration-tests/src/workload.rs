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

use crate::sys::{get_xattr, list_xattr, mmap_write, remove_xattr, set_xattr};
use anyhow::{bail, ensure, Context, Result};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::fmt::Write as _;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{FileExt, MetadataExt};
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
/// A record of the content: magic, file id, version, offset.
const RECORD: u64 = 16;
const MAGIC: [u8; 2] = [0x5a, 0xa5];

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

/// The bytes of version `version` of file `file` at absolute `offset`: every aligned
/// 16-byte record holds magic, file id, version and its own offset, so that wrong data in
/// a mismatch names where it came from.
pub fn content(file: u32, version: u32, offset: u64, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    let mut o = offset;
    while out.len() < len {
        let rec = record(file, version, o / RECORD * RECORD);
        let start = (o % RECORD) as usize;
        let n = (RECORD as usize - start).min(len - out.len());
        out.extend_from_slice(&rec[start..start + n]);
        o += n as u64;
    }
    out
}

fn record(file: u32, version: u32, at: u64) -> [u8; 16] {
    let mut r = [0u8; 16];
    r[0..2].copy_from_slice(&MAGIC);
    r[2..4].copy_from_slice(&(file as u16).to_le_bytes());
    r[4..8].copy_from_slice(&version.to_le_bytes());
    r[8..16].copy_from_slice(&at.to_le_bytes());
    r
}

/// Describes the bytes around `offset` of `data` (the aligned record there), for reports.
pub fn describe(data: &[u8], offset: usize) -> String {
    describe_at(data, offset, 0)
}

/// `describe` for `data` that starts at absolute file offset `base`.
pub fn describe_at(data: &[u8], offset: usize, base: u64) -> String {
    let rec = RECORD as usize;
    let abs = base + offset as u64;
    let abs_at = abs / RECORD * RECORD;
    let r = abs_at
        .checked_sub(base)
        .and_then(|at| data.get(at as usize..at as usize + rec));
    let Some(r) = r else {
        return match data.get(offset) {
            Some(b) => format!("byte {b:#04x} in a record cut by the read"),
            None => "end of file".to_string(),
        };
    };
    let at = (abs_at - base) as usize;
    if r.iter().all(|b| *b == 0) {
        return "zeros (a hole)".to_string();
    }
    let whole = r[0..2] == MAGIC && r[8..16] == abs_at.to_le_bytes();
    if !whole {
        // Cut or misplaced data: name the nearest record that starts elsewhere.
        let from = at.saturating_sub(rec);
        let near = data.get(from..(at + 2 * rec).min(data.len()));
        let found = near.and_then(|w| {
            (0..w.len().saturating_sub(rec))
                .find(|i| from + i != at && w[*i..*i + 2] == MAGIC)
                .map(|i| from + i)
        });
        return match found {
            Some(p) => format!(
                "not a record: {r:02x?}; the {} at offset {}",
                describe_record(&data[p..p + rec]),
                base + p as u64
            ),
            None => format!("not a record: {r:02x?}"),
        };
    }
    describe_record(r)
}

fn describe_record(r: &[u8]) -> String {
    let file = u16::from_le_bytes([r[2], r[3]]);
    let version = u32::from_le_bytes([r[4], r[5], r[6], r[7]]);
    let mut o = [0u8; 8];
    o.copy_from_slice(&r[8..16]);
    let written_at = u64::from_le_bytes(o);
    format!("record of file {file:#x} version {version} written for offset {written_at}")
}

/// What the worker believes one file is.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FileModel {
    pub data: Vec<u8>,
    pub xattrs: BTreeMap<String, Vec<u8>>,
}

/// The worker's model: files by id, and names (relative to the worker dir) to ids.
#[derive(Clone, Debug, Default)]
pub struct Model {
    pub files: BTreeMap<u32, FileModel>,
    pub names: BTreeMap<String, u32>,
}

impl Model {
    pub fn names_of(&self, id: u32) -> Vec<&str> {
        self.names
            .iter()
            .filter(|(_, f)| **f == id)
            .map(|(n, _)| n.as_str())
            .collect()
    }

    /// Writes the model to `dir`: `files.txt` (one line a name: `name id`), one line a
    /// xattr (`x id name hex`), and `ID.data` with each file's bytes.
    pub fn save(&self, dir: &Path) -> Result<()> {
        fs::create_dir_all(dir)?;
        let mut text = String::new();
        for (id, f) in &self.files {
            fs::write(dir.join(format!("{id}.data")), &f.data)?;
            writeln!(text, "f {id}")?;
            for (k, v) in &f.xattrs {
                writeln!(text, "x {id} {k} {}", hex(v))?;
            }
        }
        for (n, id) in &self.names {
            writeln!(text, "n {id} {n}")?;
        }
        let tmp = dir.join("files.txt.tmp");
        fs::write(&tmp, text)?;
        fs::rename(&tmp, dir.join("files.txt"))?;
        Ok(())
    }

    /// Reads a model written by `save`.
    pub fn load(dir: &Path) -> Result<Model> {
        let text = fs::read_to_string(dir.join("files.txt"))
            .with_context(|| format!("manifest {}", dir.display()))?;
        let mut m = Model::default();
        for line in text.lines() {
            let parts: Vec<&str> = line.splitn(4, ' ').collect();
            match parts.as_slice() {
                ["f", id] => {
                    let id: u32 = id.parse()?;
                    let data = fs::read(dir.join(format!("{id}.data")))?;
                    m.files.insert(
                        id,
                        FileModel {
                            data,
                            xattrs: BTreeMap::new(),
                        },
                    );
                }
                ["x", id, k, v] => {
                    let f = m.files.get_mut(&id.parse()?).context("xattr of no file")?;
                    f.xattrs.insert(k.to_string(), unhex(v)?);
                }
                ["n", id, name] => {
                    m.names.insert(name.to_string(), id.parse()?);
                }
                _ => bail!("bad manifest line {line:?}"),
            }
        }
        Ok(m)
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Result<Vec<u8>> {
    ensure!(s.len().is_multiple_of(2), "odd hex {s:?}");
    (0..s.len() / 2)
        .map(|i| Ok(u8::from_str_radix(&s[2 * i..2 * i + 2], 16)?))
        .collect()
}

/// Compares the tree under `dir` with `model`: the names of `dir` and `dir/sub`, each
/// file's inode and link count across its names, its bytes (through a name and through
/// `fds` when given) and its `user.` xattrs. The first difference of each kind is an error
/// naming file, offset, expected and actual.
pub fn check_tree(dir: &Path, model: &Model, fds: &HashMap<u32, File>) -> Result<()> {
    let mut problems = Vec::new();
    for (sub, prefix) in [(dir.to_path_buf(), ""), (dir.join("sub"), "sub/")] {
        let mut got = BTreeSet::new();
        for e in fs::read_dir(&sub).with_context(|| format!("readdir {}", sub.display()))? {
            let n = e?.file_name().to_string_lossy().into_owned();
            if prefix.is_empty() && (n == "sub" || n == "frozen") {
                continue;
            }
            got.insert(format!("{prefix}{n}"));
        }
        let want: BTreeSet<String> = model
            .names
            .keys()
            .filter(|n| n.starts_with("sub/") != prefix.is_empty())
            .cloned()
            .collect();
        if got != want {
            let missing: Vec<_> = want.difference(&got).collect();
            let extra: Vec<_> = got.difference(&want).collect();
            problems.push(format!(
                "directory {}: missing names {missing:?}, unexpected names {extra:?}",
                sub.display()
            ));
        }
    }
    for (id, f) in &model.files {
        let names = model.names_of(*id);
        let Some(first) = names.first() else {
            problems.push(format!("file {id:#x} has no name in the model"));
            continue;
        };
        let what = format!("file {id:#x} ({})", names.join(", "));
        let mut inos = BTreeSet::new();
        for n in &names {
            match fs::metadata(dir.join(n)) {
                Ok(md) => {
                    inos.insert(md.ino());
                    if md.nlink() != names.len() as u64 {
                        problems.push(format!(
                            "{what}: {n} has {} links, expected {}",
                            md.nlink(),
                            names.len()
                        ));
                    }
                    if md.len() != f.data.len() as u64 {
                        problems.push(format!(
                            "{what}: stat of {n} says {} bytes, expected {}",
                            md.len(),
                            f.data.len()
                        ));
                    }
                }
                Err(e) => problems.push(format!("{what}: stat {n}: {e}")),
            }
        }
        if inos.len() > 1 {
            problems.push(format!("{what}: names are different inodes {inos:?}"));
        }
        match fs::read(dir.join(first)) {
            Ok(got) => {
                if let Err(e) = compare_bytes(&f.data, &got) {
                    problems.push(format!("{what}: read through {first}: {e}"));
                }
            }
            Err(e) => problems.push(format!("{what}: read {first}: {e}")),
        }
        if let Some(fd) = fds.get(id) {
            match pread_all(fd, f.data.len() + 4096) {
                Ok(got) => {
                    if let Err(e) = compare_bytes(&f.data, &got) {
                        problems.push(format!("{what}: pread through its open fd: {e}"));
                    }
                }
                Err(e) => problems.push(format!("{what}: pread through its open fd: {e}")),
            }
        }
        let path = dir.join(first);
        match list_xattr(&path) {
            Ok(list) => {
                let got: BTreeSet<String> = list
                    .into_iter()
                    .filter(|k| k.starts_with("user."))
                    .collect();
                let want: BTreeSet<String> = f.xattrs.keys().cloned().collect();
                if got != want {
                    problems.push(format!("{what}: xattrs {got:?}, expected {want:?}"));
                }
            }
            Err(e) => problems.push(format!("{what}: listxattr: {e}")),
        }
        for (k, v) in &f.xattrs {
            match get_xattr(&path, k) {
                Ok(got) if got == *v => {}
                Ok(got) => problems.push(format!(
                    "{what}: xattr {k} is {:?}, expected {:?}",
                    String::from_utf8_lossy(&got),
                    String::from_utf8_lossy(v)
                )),
                Err(e) => problems.push(format!("{what}: getxattr {k}: {e}")),
            }
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        bail!(
            "{} difference(s) from the model:\n  {}",
            problems.len(),
            problems.join("\n  ")
        )
    }
}

/// Byte-for-byte comparison; the first difference with both sides described.
pub fn compare_bytes(want: &[u8], got: &[u8]) -> Result<()> {
    compare_bytes_at(want, got, 0)
}

/// `compare_bytes` of ranges that start at absolute file offset `base`.
pub fn compare_bytes_at(want: &[u8], got: &[u8], base: u64) -> Result<()> {
    let Some(i) = crate::pattern::first_difference(want, got) else {
        return Ok(());
    };
    let (w, g) = (
        want.get(i).map(|b| format!("{b:#04x}")),
        got.get(i).map(|b| format!("{b:#04x}")),
    );
    bail!(
        "first difference at offset {} (length {} expected, {} read): expected {} [{}], \
         actual {} [{}]",
        base + i as u64,
        want.len(),
        got.len(),
        w.unwrap_or_else(|| "EOF".into()),
        describe_at(want, i, base),
        g.unwrap_or_else(|| "EOF".into()),
        describe_at(got, i, base)
    )
}

fn pread_all(f: &File, max: usize) -> std::io::Result<Vec<u8>> {
    let mut buf = vec![0u8; max];
    let mut off = 0;
    while off < buf.len() {
        let n = f.read_at(&mut buf[off..], off as u64)?;
        if n == 0 {
            break;
        }
        off += n;
    }
    buf.truncate(off);
    Ok(buf)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_records_name_their_origin() {
        let c = content(0x1002, 7, 5, 100);
        let whole = content(0x1002, 7, 0, 105);
        assert_eq!(c, whole[5..]);
        assert_eq!(
            describe(&whole, 20),
            "record of file 0x1002 version 7 written for offset 16"
        );
        assert_eq!(describe(&[0u8; 32], 3), "zeros (a hole)");
        let mut cut = whole[..19].to_vec();
        cut.resize(48, 0);
        assert!(
            describe(&cut, 20).starts_with("not a record"),
            "{}",
            describe(&cut, 20)
        );
        let mut moved = whole[40..100].to_vec();
        moved[30] ^= 0xff;
        let e = format!(
            "{:#}",
            compare_bytes_at(&whole[40..100], &moved, 40).expect_err("differs")
        );
        assert!(
            e.contains("at offset 70") && e.contains("version 7 written for offset 64"),
            "{e}"
        );
        let mut shifted = vec![0u8];
        shifted.extend(content(0x1000, 6, 540_912, 40));
        assert_eq!(
            describe(&shifted, 0),
            "not a record: [00, 5a, a5, 00, 10, 06, 00, 00, 00, f0, 40, 08, 00, 00, 00, 00]; \
             the record of file 0x1000 version 6 written for offset 540912 at offset 1"
        );
        assert!(compare_bytes(&whole, &whole).is_ok());
        let mut bad = whole.clone();
        bad[40] ^= 0xff;
        let e = format!("{:#}", compare_bytes(&whole, &bad).expect_err("differs"));
        assert!(e.contains("offset 40"), "{e}");
    }

    #[test]
    fn manifest_round_trips() {
        let d = tempfile::tempdir().expect("tempdir");
        let mut m = Model::default();
        let mut f = FileModel {
            data: content(1, 1, 0, 50),
            xattrs: BTreeMap::new(),
        };
        f.xattrs.insert("user.k1".into(), b"v1-xx".to_vec());
        m.files.insert(1, f);
        m.names.insert("sub/f1-1".into(), 1);
        m.names.insert("f1-2".into(), 1);
        m.save(d.path()).expect("save");
        let back = Model::load(d.path()).expect("load");
        assert_eq!(back.files, m.files);
        assert_eq!(back.names, m.names);
    }
}
