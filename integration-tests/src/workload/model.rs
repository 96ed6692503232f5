//! The model of one worker directory: each file's bytes and xattrs and the names that
//! lead to it; saved as a manifest for a later check from another process, and compared
//! with the tree on disk (`check_tree`).

use super::content::compare_bytes;
use crate::sys::{get_xattr, list_xattr};
use anyhow::{bail, ensure, Context, Result};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::fs::{self, File};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::content;

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
