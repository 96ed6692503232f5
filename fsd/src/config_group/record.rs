//! The on-disk framing of the config group's files, and when they reach the disk.
//!
//! Every file starts with `magic[8] | version u32 LE` and holds records framed as
//! `len u32 LE | crc32c(payload) u32 LE | payload`. Two kinds of files:
//! - append files (the raft log): records are appended and then `fdatasync`ed; a crash in
//!   the middle of an append leaves a torn last record, which `AppendFile::open` detects (too
//!   short, or a checksum mismatch that reaches the end of the file, or a zero-filled tail)
//!   and cuts off. Damage anywhere before the last record is an error, never skipped.
//! - single-record files (vote, committed, snapshot): written to `NAME.tmp`, fsynced, renamed
//!   over `NAME`, and the directory fsynced, so a reader sees the old or the new record whole.
//!
//! Owns bytes and fsyncs only: it knows nothing of raft, and callers decide what a payload is.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

pub const VERSION: u32 = 1;
const FILE_HEADER: usize = 12;
const RECORD_HEAD: usize = 8;
/// A record larger than this is damage, not data (a config is a few KiB).
pub const MAX_RECORD: u32 = 64 << 20;

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{} is corrupt at byte {offset}: {what}; this is not a torn last write (records \
         follow it or the file cannot be a config-group file). Move the config-group \
         directory aside and restart the node: it rejoins the group and catches up from the \
         leader",
        path.display()
    )]
    Corrupt {
        path: PathBuf,
        offset: u64,
        what: String,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> RecordError + '_ {
    move |source| RecordError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn file_header(magic: &[u8; 8]) -> [u8; FILE_HEADER] {
    let mut h = [0u8; FILE_HEADER];
    h[..8].copy_from_slice(magic);
    h[8..].copy_from_slice(&VERSION.to_le_bytes());
    h
}

/// `payload` framed as one record.
pub fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(RECORD_HEAD + payload.len());
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&proto::crc32c(payload).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// What a scan of a record file found: the payloads of the whole records, where they end,
/// and how many bytes of a torn last record followed them.
#[derive(Debug)]
pub struct Scan {
    pub payloads: Vec<Vec<u8>>,
    pub good_len: u64,
    pub torn_bytes: u64,
}

/// Parses a whole file's bytes. A damaged last record is reported as torn; damage with
/// records after it, a wrong magic or version, is `Corrupt`.
pub fn scan(path: &Path, magic: &[u8; 8], bytes: &[u8]) -> Result<Scan, RecordError> {
    let corrupt = |offset: usize, what: String| RecordError::Corrupt {
        path: path.to_path_buf(),
        offset: offset as u64,
        what,
    };
    if bytes.len() < FILE_HEADER {
        // A file created but whose header never reached the disk.
        if bytes.iter().all(|b| *b == 0) || magic.starts_with(bytes) {
            return Ok(Scan {
                payloads: Vec::new(),
                good_len: 0,
                torn_bytes: bytes.len() as u64,
            });
        }
        return Err(corrupt(0, "file shorter than its header".into()));
    }
    if &bytes[..8] != magic {
        return Err(corrupt(0, format!("wrong magic {:?}", &bytes[..8])));
    }
    let version = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
    if version != VERSION {
        return Err(corrupt(
            8,
            format!("format version {version}, this build reads {VERSION}"),
        ));
    }
    let mut payloads = Vec::new();
    let mut off = FILE_HEADER;
    while off < bytes.len() {
        let rest = &bytes[off..];
        let torn = || Scan {
            payloads: Vec::new(),
            good_len: off as u64,
            torn_bytes: rest.len() as u64,
        };
        if rest.len() < RECORD_HEAD {
            return Ok(Scan { payloads, ..torn() });
        }
        let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]);
        let crc = u32::from_le_bytes([rest[4], rest[5], rest[6], rest[7]]);
        let end = RECORD_HEAD as u64 + len as u64;
        if end > rest.len() as u64 {
            // Reaches past the end of the file: the last write was cut short (a length
            // damaged into something huge lands here too, and is cut off the same way).
            return Ok(Scan { payloads, ..torn() });
        }
        let payload = &rest[RECORD_HEAD..end as usize];
        let zero_tail = rest.iter().all(|b| *b == 0);
        if len == 0 && zero_tail {
            // The file was extended but the data never written (a zero-filled tail).
            return Ok(Scan { payloads, ..torn() });
        }
        if len > MAX_RECORD || proto::crc32c(payload) != crc {
            if end as usize == rest.len() || zero_tail {
                return Ok(Scan { payloads, ..torn() });
            }
            return Err(corrupt(
                off,
                format!("record of {len} bytes fails its checksum and records follow it"),
            ));
        }
        payloads.push(payload.to_vec());
        off += end as usize;
    }
    Ok(Scan {
        payloads,
        good_len: off as u64,
        torn_bytes: 0,
    })
}

/// Fsyncs a directory, so that a create or rename in it is durable.
pub fn sync_dir(dir: &Path) -> Result<(), RecordError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))
}

/// Writes `payload` as the only record of `dir/name`, atomically and durably (tmp, fsync,
/// rename, directory fsync). Returns only once all of it is on disk.
pub fn write_single(
    dir: &Path,
    name: &str,
    magic: &[u8; 8],
    payload: &[u8],
) -> Result<(), RecordError> {
    let path = dir.join(name);
    let tmp = dir.join(format!("{name}.tmp"));
    let mut bytes = file_header(magic).to_vec();
    bytes.extend_from_slice(&frame(payload));
    let mut f = File::create(&tmp).map_err(io(&tmp))?;
    f.write_all(&bytes).map_err(io(&tmp))?;
    f.sync_all().map_err(io(&tmp))?;
    drop(f);
    std::fs::rename(&tmp, &path).map_err(io(&path))?;
    sync_dir(dir)
}

/// Reads the record of a single-record file; `None` when the file does not exist. Such files
/// are replaced atomically, so any damage is corruption (a left-over `NAME.tmp` is ignored).
pub fn read_single(path: &Path, magic: &[u8; 8]) -> Result<Option<Vec<u8>>, RecordError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(path)(e)),
    };
    let s = scan(path, magic, &bytes)?;
    if s.torn_bytes > 0 || s.payloads.len() != 1 {
        return Err(RecordError::Corrupt {
            path: path.to_path_buf(),
            offset: s.good_len,
            what: format!(
                "{} whole records and {} torn bytes where one record belongs",
                s.payloads.len(),
                s.torn_bytes
            ),
        });
    }
    Ok(s.payloads.into_iter().next())
}

/// An append-only record file, always ending at a record boundary.
#[derive(Debug)]
pub struct AppendFile {
    path: PathBuf,
    file: File,
    len: u64,
}

impl AppendFile {
    /// Opens (creating if missing) `path` and returns its records. A torn last record is
    /// cut off the file (and logged), so the next append starts at a record boundary.
    pub fn open(path: &Path, magic: &[u8; 8]) -> Result<(AppendFile, Vec<Vec<u8>>), RecordError> {
        let dir = path.parent().unwrap_or(Path::new("."));
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(io(path))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(io(path))?;
        let s = scan(path, magic, &bytes)?;
        let mut len = s.good_len;
        if s.torn_bytes > 0 {
            tracing::warn!(
                path = %path.display(),
                at = s.good_len,
                bytes = s.torn_bytes,
                "dropping a torn last record (a crash during an append)"
            );
            file.set_len(s.good_len).map_err(io(path))?;
            file.sync_all().map_err(io(path))?;
        }
        if len == 0 {
            file.write_all_at(&file_header(magic), 0)
                .map_err(io(path))?;
            file.sync_all().map_err(io(path))?;
            sync_dir(dir)?;
            len = FILE_HEADER as u64;
        }
        Ok((
            AppendFile {
                path: path.to_path_buf(),
                file,
                len,
            },
            s.payloads,
        ))
    }

    /// Appends framed records (`frame`) and returns once they are on disk (`fdatasync`).
    pub fn append(&mut self, framed: &[u8]) -> Result<(), RecordError> {
        self.file
            .write_all_at(framed, self.len)
            .map_err(io(&self.path))?;
        self.file.sync_data().map_err(io(&self.path))?;
        self.len += framed.len() as u64;
        Ok(())
    }

    /// Replaces the whole file with these payloads, atomically and durably (the purge path:
    /// what stays of the log is rewritten, so the file never grows without bound).
    pub fn rewrite(&mut self, magic: &[u8; 8], payloads: &[Vec<u8>]) -> Result<(), RecordError> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        let tmp = self.path.with_extension("tmp");
        let mut bytes = file_header(magic).to_vec();
        for p in payloads {
            bytes.extend_from_slice(&frame(p));
        }
        let mut f = File::create(&tmp).map_err(io(&tmp))?;
        f.write_all(&bytes).map_err(io(&tmp))?;
        f.sync_all().map_err(io(&tmp))?;
        std::fs::rename(&tmp, &self.path).map_err(io(&self.path))?;
        sync_dir(dir)?;
        // The renamed file is the one `f` wrote; keep appending to it.
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&self.path)
            .map_err(io(&self.path))?;
        self.file = file;
        self.len = bytes.len() as u64;
        Ok(())
    }

    /// Bytes in the file (for tests and logs).
    pub fn bytes(&self) -> u64 {
        self.len
    }
}
