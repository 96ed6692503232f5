//! Disk faults: find the fragment files of a storage node and flip bytes inside them, or
//! replace fragments with well-formed ones holding other bytes (`misplace_fragments`).
//! Touches only files under a test cluster's `nodes/storage-*/storage/` directories.

use anyhow::{bail, Context, Result};
use std::fs::OpenOptions;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// Every regular file under `dir` (recursively), largest first. Temp files (names starting
/// with `.` or containing `tmp`) are left out.
pub fn fragment_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).with_context(|| format!("read_dir {}", d.display()))? {
            let e = e?;
            let ft = e.file_type()?;
            let name = e.file_name().to_string_lossy().into_owned();
            if ft.is_dir() {
                stack.push(e.path());
            } else if ft.is_file() && !name.starts_with('.') && !name.contains("tmp") {
                out.push((e.metadata()?.len(), e.path()));
            }
        }
    }
    out.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    Ok(out.into_iter().map(|(_, p)| p).collect())
}

/// XORs `len` bytes with 0xff in the middle of `path`; returns the offset changed.
pub fn corrupt_middle(path: &Path, len: usize) -> Result<u64> {
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .with_context(|| format!("open {}", path.display()))?;
    let size = f.metadata()?.len();
    if size == 0 {
        bail!("{} is empty", path.display());
    }
    let len = len.min(size as usize);
    let at = (size - len as u64) / 2;
    let mut buf = vec![0u8; len];
    f.seek(SeekFrom::Start(at))?;
    f.read_exact(&mut buf)?;
    for b in &mut buf {
        *b ^= 0xff;
    }
    f.seek(SeekFrom::Start(at))?;
    f.write_all(&buf)?;
    f.sync_all()?;
    Ok(at)
}

/// In every segment of every client log held in the storage directories `dirs` (of
/// stopped servers), replaces fragment `victim` with the payload of fragment `source` of
/// the same segment (same size), written through the storage server's own file format: a
/// well-formed fragment, valid storage checksums, other bytes (what a misdirected or
/// misplaced write leaves). Returns the segments changed.
pub fn misplace_fragments(dirs: &[PathBuf], victim: u8, source: u8) -> Result<usize> {
    use storage::store::FragmentStore;
    use storage::FileStore;
    let stores: Vec<FileStore> = dirs
        .iter()
        .map(|d| FileStore::open(d).with_context(|| format!("open store {}", d.display())))
        .collect::<Result<_>>()?;
    let mut changed = 0;
    for s in &stores {
        for log in s.list_logs()?.into_iter().filter(|l| l.is_client()) {
            for f in s
                .list_log(log)?
                .into_iter()
                .filter(|f| f.id.index == victim)
            {
                let src = proto::ids::FragmentId {
                    index: source,
                    ..f.id
                };
                let Some(payload) = stores.iter().find_map(|o| o.read_range(src, 0, f.len).ok())
                else {
                    bail!("fragment {src:?} is on no store");
                };
                if payload.len() != f.len as usize {
                    bail!(
                        "fragment {src:?} holds {} bytes, {:?} {}",
                        payload.len(),
                        f.id,
                        f.len
                    );
                }
                let mine = s.read_range(f.id, 0, f.len)?;
                if mine == payload {
                    continue;
                }
                let meta = proto::msg::FragmentMeta {
                    crc32c: proto::crc32c(&payload),
                    ..f.meta
                };
                s.put(f.id, meta, payload)?;
                changed += 1;
            }
        }
    }
    Ok(changed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_and_corrupts_files() {
        let d = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(d.path().join("a/b")).expect("mkdir");
        std::fs::write(d.path().join("a/b/big"), vec![1u8; 100]).expect("write");
        std::fs::write(d.path().join("small"), vec![2u8; 10]).expect("write");
        std::fs::write(d.path().join(".tmp-x"), vec![3u8; 1000]).expect("write");
        let files = fragment_files(d.path()).expect("list");
        assert_eq!(
            files,
            vec![d.path().join("a/b/big"), d.path().join("small")]
        );
        let at = corrupt_middle(&files[0], 4).expect("corrupt");
        assert_eq!(at, 48);
        let b = std::fs::read(&files[0]).expect("read");
        assert_eq!(&b[47..53], &[1, 0xfe, 0xfe, 0xfe, 0xfe, 1]);
    }
}
