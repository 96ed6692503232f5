//! `FileStore`: fragments as files under `DIR/frags/<log hex>/<segment hex>.<index>.frag`.
//!
//! A fragment file is a versioned header (magic, version, id, meta, payload length, one
//! CRC32C per 64 KiB block of payload, header CRC) followed by the payload. A put writes a
//! temp file, fsyncs it, renames it into place and fsyncs the directory; directory fsyncs of
//! concurrent puts are group-committed (`DirSync`). Reads verify the header and every block
//! they touch. This module owns the files under `frags/`; it must not interpret payloads.

use super::{check_put, check_range, lock, FragmentStore, MAX_FRAGMENT};
use crate::error::StorageError;
use bytes::Bytes;
use proto::ids::{FragmentId, LogId, SegmentId};
use proto::msg::{FragmentInfo, FragmentMeta, StorageStat};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex};

/// Payload bytes covered by one block checksum.
pub const BLOCK: usize = 64 << 10;
const FRAGS_DIR: &str = "frags";
const TMP_SUFFIX: &str = ".tmp";
const FRAG_SUFFIX: &str = ".frag";

/// Why a fragment file's header is malformed (truncation counts as malformed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    #[error("header of {len} bytes is shorter than {fixed}")]
    Short { len: usize, fixed: usize },
    #[error("bad magic {0:02x?}")]
    Magic([u8; 4]),
    #[error("unknown header version {0}")]
    Version(u8),
    #[error("payload length {len} exceeds {max}")]
    PayloadTooLong { len: u32, max: u32 },
    #[error("{blocks} block checksums for a payload of {payload} bytes")]
    BlockCount { blocks: usize, payload: u32 },
    #[error("header is {len} bytes, expected {expected}")]
    Length { len: usize, expected: usize },
    #[error("header checksum {computed:08x} does not match stored {stored:08x}")]
    Checksum { computed: u32, stored: u32 },
    #[error("file is shorter than {0}")]
    FileTooShort(&'static str),
}

/// The fragment file header, version 1.
mod v1 {
    use super::{HeaderError, BLOCK};
    use proto::ids::{FragmentId, LogId, SegmentId};
    use proto::msg::FragmentMeta;

    pub const MAGIC: [u8; 4] = *b"SHFR";
    pub const VERSION: u8 = 1;
    /// magic, version, placement width (u16, 0 = unknown; was reserved), 1 reserved, log,
    /// segment, index, codec, k, m, segment_len, crc32c, payload_len, block_count.
    pub const FIXED: usize = 4 + 1 + 3 + 8 + 8 + 1 + 1 + 1 + 1 + 4 + 4 + 4 + 4;

    #[derive(Clone, Debug, PartialEq, Eq)]
    pub struct Header {
        pub id: FragmentId,
        pub meta: FragmentMeta,
        pub payload_len: u32,
        pub block_crcs: Vec<u32>,
    }

    pub fn block_count(payload_len: u32) -> usize {
        (payload_len as usize).div_ceil(BLOCK)
    }

    impl Header {
        pub fn encoded_len(&self) -> usize {
            FIXED + 4 * self.block_crcs.len() + 4
        }

        pub fn encode(&self) -> Vec<u8> {
            let mut b = Vec::with_capacity(self.encoded_len());
            b.extend_from_slice(&MAGIC);
            b.push(VERSION);
            // Formerly 3 reserved zero bytes: the placement width (0 = unknown), then one.
            b.extend_from_slice(&self.meta.nodes.to_le_bytes());
            b.push(0);
            b.extend_from_slice(&self.id.log.0.to_le_bytes());
            b.extend_from_slice(&self.id.segment.0.to_le_bytes());
            b.push(self.id.index);
            b.push(self.meta.codec);
            b.push(self.meta.k);
            b.push(self.meta.m);
            b.extend_from_slice(&self.meta.segment_len.to_le_bytes());
            b.extend_from_slice(&self.meta.crc32c.to_le_bytes());
            b.extend_from_slice(&self.payload_len.to_le_bytes());
            b.extend_from_slice(&(self.block_crcs.len() as u32).to_le_bytes());
            for c in &self.block_crcs {
                b.extend_from_slice(&c.to_le_bytes());
            }
            let crc = proto::crc32c(&b);
            b.extend_from_slice(&crc.to_le_bytes());
            b
        }

        /// Total header length announced by the fixed part (checked, bounded).
        pub fn total_len(fixed: &[u8], max_payload: u32) -> Result<usize, HeaderError> {
            if fixed.len() < FIXED {
                return Err(HeaderError::Short {
                    len: fixed.len(),
                    fixed: FIXED,
                });
            }
            if fixed[0..4] != MAGIC {
                let mut magic = [0u8; 4];
                magic.copy_from_slice(&fixed[0..4]);
                return Err(HeaderError::Magic(magic));
            }
            if fixed[4] != VERSION {
                return Err(HeaderError::Version(fixed[4]));
            }
            let payload_len = u32_at(fixed, 36);
            let blocks = u32_at(fixed, 40) as usize;
            if payload_len > max_payload {
                return Err(HeaderError::PayloadTooLong {
                    len: payload_len,
                    max: max_payload,
                });
            }
            if blocks != block_count(payload_len) {
                return Err(HeaderError::BlockCount {
                    blocks,
                    payload: payload_len,
                });
            }
            Ok(FIXED + 4 * blocks + 4)
        }

        /// Decodes a whole header (from `total_len` bytes), checking its CRC.
        pub fn decode(b: &[u8], max_payload: u32) -> Result<Header, HeaderError> {
            let total = Header::total_len(b, max_payload)?;
            if b.len() != total {
                return Err(HeaderError::Length {
                    len: b.len(),
                    expected: total,
                });
            }
            let stored = u32_at(b, total - 4);
            let crc = proto::crc32c(&b[..total - 4]);
            if stored != crc {
                return Err(HeaderError::Checksum {
                    computed: crc,
                    stored,
                });
            }
            let id = FragmentId {
                log: LogId(u64_at(b, 8)),
                segment: SegmentId(u64_at(b, 16)),
                index: b[24],
            };
            let meta = FragmentMeta {
                codec: b[25],
                k: b[26],
                m: b[27],
                segment_len: u32_at(b, 28),
                crc32c: u32_at(b, 32),
                nodes: u16::from_le_bytes([b[5], b[6]]),
            };
            let payload_len = u32_at(b, 36);
            let blocks = u32_at(b, 40) as usize;
            let block_crcs = (0..blocks).map(|i| u32_at(b, FIXED + 4 * i)).collect();
            Ok(Header {
                id,
                meta,
                payload_len,
                block_crcs,
            })
        }
    }

    fn u32_at(b: &[u8], at: usize) -> u32 {
        let mut x = [0u8; 4];
        x.copy_from_slice(&b[at..at + 4]);
        u32::from_le_bytes(x)
    }

    fn u64_at(b: &[u8], at: usize) -> u64 {
        let mut x = [0u8; 8];
        x.copy_from_slice(&b[at..at + 8]);
        u64::from_le_bytes(x)
    }
}

/// What the index knows of a fragment file.
#[derive(Clone, Debug)]
enum Slot {
    Good {
        meta: FragmentMeta,
        len: u32,
    },
    /// The header could not be read at open; reads answer `Corrupt`.
    Bad(String),
}

#[derive(Default)]
struct Index {
    logs: HashMap<LogId, BTreeMap<(SegmentId, u8), Slot>>,
    used_bytes: u64,
    fragments: u64,
}

impl Index {
    fn insert(&mut self, id: FragmentId, slot: Slot) {
        let old = self
            .logs
            .entry(id.log)
            .or_default()
            .insert((id.segment, id.index), slot.clone());
        if let Some(Slot::Good { len, .. }) = old {
            self.used_bytes -= len as u64;
            self.fragments -= 1;
        }
        if let Slot::Good { len, .. } = slot {
            self.used_bytes += len as u64;
            self.fragments += 1;
        }
    }

    fn remove(&mut self, id: FragmentId) -> Option<Slot> {
        let frags = self.logs.get_mut(&id.log)?;
        let old = frags.remove(&(id.segment, id.index));
        if frags.is_empty() {
            self.logs.remove(&id.log);
        }
        if let Some(Slot::Good { len, .. }) = old {
            self.used_bytes -= len as u64;
            self.fragments -= 1;
        }
        old
    }

    fn get(&self, id: FragmentId) -> Option<&Slot> {
        self.logs.get(&id.log)?.get(&(id.segment, id.index))
    }
}

/// Group commit of directory fsyncs: the first waiter becomes the leader, fsyncs every
/// directory touched by the pending batch once, and wakes everyone whose entries it covered.
#[derive(Default)]
struct DirSync {
    state: Mutex<DirSyncState>,
    cv: Condvar,
}

#[derive(Default)]
struct DirSyncState {
    pending: HashSet<PathBuf>,
    /// Batch being collected (requests arriving now join it).
    collecting: u64,
    /// Last batch whose fsyncs have completed.
    done: u64,
    leader: bool,
    /// Failed batches (bounded), with the failure.
    errors: BTreeMap<u64, String>,
}

impl DirSync {
    fn new() -> DirSync {
        let d = DirSync::default();
        lock(&d.state).collecting = 1;
        d
    }

    /// Returns once every directory in `dirs` has been fsynced after this call began.
    fn sync(&self, dirs: &[&Path]) -> Result<(), StorageError> {
        let mut st = lock(&self.state);
        for d in dirs {
            st.pending.insert(d.to_path_buf());
        }
        let mine = st.collecting;
        // Bounded: each pass either completes a batch (`done` grows) or waits for one.
        loop {
            if st.done >= mine {
                return match st.errors.get(&mine) {
                    Some(e) => Err(StorageError::Io {
                        context: "fsync of a fragment directory".into(),
                        source: std::io::Error::other(e.clone()),
                    }),
                    None => Ok(()),
                };
            }
            if st.leader {
                st = self.cv.wait(st).unwrap_or_else(|e| e.into_inner());
                continue;
            }
            st.leader = true;
            let batch = std::mem::take(&mut st.pending);
            let gen = st.collecting;
            st.collecting += 1;
            drop(st);
            let mut failure = None;
            for dir in &batch {
                if let Err(e) = File::open(dir).and_then(|f| f.sync_all()) {
                    failure = Some(format!("{}: {e}", dir.display()));
                }
            }
            st = lock(&self.state);
            st.leader = false;
            st.done = gen;
            if let Some(f) = failure {
                st.errors.insert(gen, f);
                while st.errors.len() > 64 {
                    st.errors.pop_first();
                }
            }
            self.cv.notify_all();
        }
    }
}

/// Removes a temp file unless disarmed (on every error path of a put).
struct TempGuard<'a> {
    path: &'a Path,
    armed: bool,
}

impl Drop for TempGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            let _ = fs::remove_file(self.path);
        }
    }
}

/// Fragments in files under a data directory.
pub struct FileStore {
    root: PathBuf,
    frags: PathBuf,
    index: Mutex<Index>,
    dir_sync: DirSync,
}

impl FileStore {
    /// Opens (creating if needed) the store under `data_dir`: removes leftover temp files
    /// and scans every fragment header to rebuild the index and counters.
    pub fn open(data_dir: &Path) -> Result<FileStore, StorageError> {
        let frags = data_dir.join(FRAGS_DIR);
        fs::create_dir_all(&frags).map_err(|e| {
            StorageError::io(
                format!("cannot create fragment directory {}", frags.display()),
                e,
            )
        })?;
        let mut index = Index::default();
        let (mut removed, mut bad) = (0usize, 0usize);
        let read_dir = |p: &Path| {
            fs::read_dir(p).map_err(|e| StorageError::io(format!("cannot list {}", p.display()), e))
        };
        for log_entry in read_dir(&frags)? {
            let log_entry = log_entry
                .map_err(|e| StorageError::io(format!("cannot list {}", frags.display()), e))?;
            let name = log_entry.file_name();
            let Some(log) = name
                .to_str()
                .and_then(|n| u64::from_str_radix(n, 16).ok())
                .map(LogId)
            else {
                tracing::warn!(path = %log_entry.path().display(), "ignoring unexpected entry in the fragment directory");
                continue;
            };
            let dir = log_entry.path();
            for entry in read_dir(&dir)? {
                let entry = entry
                    .map_err(|e| StorageError::io(format!("cannot list {}", dir.display()), e))?;
                let path = entry.path();
                let Some(fname) = entry.file_name().to_str().map(str::to_owned) else {
                    continue;
                };
                if fname.ends_with(TMP_SUFFIX) {
                    fs::remove_file(&path).map_err(|e| {
                        StorageError::io(format!("cannot remove leftover {}", path.display()), e)
                    })?;
                    removed += 1;
                    continue;
                }
                let Some((segment, index_no)) = parse_name(&fname) else {
                    tracing::warn!(path = %path.display(), "ignoring unexpected file in the fragment directory");
                    continue;
                };
                let id = FragmentId {
                    log,
                    segment,
                    index: index_no,
                };
                let slot = match read_header(&path) {
                    Ok(Ok(h)) if h.id == id => Slot::Good {
                        meta: h.meta,
                        len: h.payload_len,
                    },
                    Ok(Ok(h)) => Slot::Bad(format!("file holds {} instead", h.id)),
                    Ok(Err(e)) => Slot::Bad(e.to_string()),
                    Err(e) => Slot::Bad(e.to_string()),
                };
                if let Slot::Bad(e) = &slot {
                    tracing::warn!(fragment = %id, "fragment header is unreadable: {e}");
                    bad += 1;
                }
                index.insert(id, slot);
            }
        }
        tracing::info!(
            dir = %data_dir.display(),
            fragments = index.fragments,
            used_bytes = index.used_bytes,
            removed_temp = removed,
            corrupt = bad,
            "fragment store opened"
        );
        Ok(FileStore {
            root: data_dir.to_path_buf(),
            frags,
            index: Mutex::new(index),
            dir_sync: DirSync::new(),
        })
    }

    /// The data directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Path of a fragment's file (for tools and fault tests).
    pub fn fragment_path(&self, id: FragmentId) -> PathBuf {
        self.log_dir(id.log).join(file_name(id))
    }

    /// Path of a fragment's file in the store under `data_dir`, without opening it.
    pub fn fragment_path_in(data_dir: &Path, id: FragmentId) -> PathBuf {
        data_dir
            .join(FRAGS_DIR)
            .join(format!("{:016x}", id.log.0))
            .join(file_name(id))
    }

    /// Payload length recorded in a fragment file's header (unverified; for fault tests).
    pub fn payload_len_of(path: &Path) -> std::io::Result<u32> {
        let mut fixed = [0u8; v1::FIXED];
        File::open(path)?.read_exact_at(&mut fixed, 0)?;
        let mut x = [0u8; 4];
        x.copy_from_slice(&fixed[36..40]);
        Ok(u32::from_le_bytes(x))
    }

    /// Byte offset of payload byte 0 in a fragment file whose payload is `payload_len` bytes.
    pub fn payload_offset(payload_len: u32) -> u64 {
        (v1::FIXED + 4 * v1::block_count(payload_len) + 4) as u64
    }

    fn log_dir(&self, log: LogId) -> PathBuf {
        self.frags.join(format!("{:016x}", log.0))
    }

    fn write_file(
        &self,
        id: FragmentId,
        meta: FragmentMeta,
        payload: &[u8],
    ) -> Result<(), StorageError> {
        let dir = self.log_dir(id.log);
        let created = match fs::create_dir(&dir) {
            Ok(()) => true,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => false,
            Err(e) => {
                return Err(StorageError::io(
                    format!("cannot create {}", dir.display()),
                    e,
                ))
            }
        };
        let header = v1::Header {
            id,
            meta,
            payload_len: payload.len() as u32,
            block_crcs: payload.chunks(BLOCK).map(proto::crc32c).collect(),
        };
        let final_path = dir.join(file_name(id));
        let tmp = dir.join(format!(
            ".{}.{:016x}{TMP_SUFFIX}",
            file_name(id),
            rand::random::<u64>()
        ));
        let mut guard = TempGuard {
            path: &tmp,
            armed: true,
        };
        let ctx = |what: &str| format!("cannot {what} {}", tmp.display());
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(|e| StorageError::io(ctx("create"), e))?;
        f.write_all(&header.encode())
            .map_err(|e| StorageError::io(ctx("write"), e))?;
        f.write_all(payload)
            .map_err(|e| StorageError::io(ctx("write"), e))?;
        f.sync_all()
            .map_err(|e| StorageError::io(ctx("fsync"), e))?;
        drop(f);
        fs::rename(&tmp, &final_path).map_err(|e| StorageError::io(ctx("rename"), e))?;
        guard.armed = false;
        if created {
            self.dir_sync.sync(&[&dir, &self.frags])
        } else {
            self.dir_sync.sync(&[&dir])
        }
    }
}

impl FragmentStore for FileStore {
    fn put(&self, id: FragmentId, meta: FragmentMeta, payload: Bytes) -> Result<(), StorageError> {
        check_put(id, &meta, &payload)?;
        self.write_file(id, meta, &payload)?;
        lock(&self.index).insert(
            id,
            Slot::Good {
                meta,
                len: payload.len() as u32,
            },
        );
        Ok(())
    }

    fn read_range(&self, id: FragmentId, offset: u32, len: u32) -> Result<Bytes, StorageError> {
        match lock(&self.index).get(id) {
            None => return Err(StorageError::NotFound(id)),
            Some(Slot::Bad(e)) => {
                return Err(StorageError::Corrupt {
                    id,
                    detail: e.clone(),
                })
            }
            Some(Slot::Good { len: plen, .. }) => check_range(id, offset, len, *plen)?,
        }
        let path = self.fragment_path(id);
        let corrupt = |detail: String| StorageError::Corrupt { id, detail };
        let f = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(StorageError::NotFound(id))
            }
            Err(e) => {
                return Err(StorageError::io(
                    format!("cannot open {}", path.display()),
                    e,
                ))
            }
        };
        let header = match read_header_from(&f) {
            Ok(Ok(h)) => h,
            Ok(Err(e)) => return Err(corrupt(format!("header: {e}"))),
            Err(e) => return Err(read_error(id, &path, e)),
        };
        if header.id != id {
            return Err(corrupt(format!("file holds {} instead", header.id)));
        }
        check_range(id, offset, len, header.payload_len)?;
        if len == 0 {
            return Ok(Bytes::new());
        }
        let first = offset as usize / BLOCK;
        let last = (offset as usize + len as usize - 1) / BLOCK;
        let start = first * BLOCK;
        let end = ((last + 1) * BLOCK).min(header.payload_len as usize);
        let base = header.encoded_len() as u64;
        // Read into spare capacity (read_to_end does not zero it first).
        let want = end - start;
        let mut buf = Vec::with_capacity(want);
        let read = (&f)
            .seek(std::io::SeekFrom::Start(base + start as u64))
            .and_then(|_| (&f).take(want as u64).read_to_end(&mut buf));
        match read {
            Ok(n) if n == want => {}
            Ok(_) => {
                let eof = std::io::Error::from(std::io::ErrorKind::UnexpectedEof);
                return Err(read_error(id, &path, eof));
            }
            Err(e) => return Err(read_error(id, &path, e)),
        }
        for (i, chunk) in buf.chunks(BLOCK).enumerate() {
            let b = first + i;
            let crc = proto::crc32c(chunk);
            if crc != header.block_crcs[b] {
                return Err(corrupt(format!(
                    "block {b} checksum {crc:08x} != stored {:08x}",
                    header.block_crcs[b]
                )));
            }
        }
        let from = offset as usize - start;
        let mut out = Bytes::from(buf);
        Ok(out.split_off(from).split_to(len as usize))
    }

    fn delete(&self, id: FragmentId) -> Result<bool, StorageError> {
        let path = self.fragment_path(id);
        let existed = match fs::remove_file(&path) {
            Ok(()) => true,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
            Err(e) => {
                return Err(StorageError::io(
                    format!("cannot remove {}", path.display()),
                    e,
                ))
            }
        };
        lock(&self.index).remove(id);
        if existed {
            self.dir_sync.sync(&[&self.log_dir(id.log)])?;
        }
        Ok(existed)
    }

    fn list_log(&self, log: LogId) -> Result<Vec<FragmentInfo>, StorageError> {
        let index = lock(&self.index);
        let Some(frags) = index.logs.get(&log) else {
            return Ok(Vec::new());
        };
        Ok(frags
            .iter()
            .filter_map(|((segment, i), slot)| match slot {
                Slot::Good { meta, len } => Some(FragmentInfo {
                    id: FragmentId {
                        log,
                        segment: *segment,
                        index: *i,
                    },
                    meta: *meta,
                    len: *len,
                }),
                Slot::Bad(_) => None,
            })
            .collect())
    }

    fn list_segment(
        &self,
        log: LogId,
        segment: SegmentId,
    ) -> Result<Vec<FragmentInfo>, StorageError> {
        let index = lock(&self.index);
        let Some(frags) = index.logs.get(&log) else {
            return Ok(Vec::new());
        };
        Ok(frags
            .range((segment, 0)..=(segment, u8::MAX))
            .filter_map(|((segment, i), slot)| match slot {
                Slot::Good { meta, len } => Some(FragmentInfo {
                    id: FragmentId {
                        log,
                        segment: *segment,
                        index: *i,
                    },
                    meta: *meta,
                    len: *len,
                }),
                Slot::Bad(_) => None,
            })
            .collect())
    }

    fn list_logs(&self) -> Result<Vec<LogId>, StorageError> {
        let index = lock(&self.index);
        let mut logs: Vec<LogId> = index
            .logs
            .iter()
            .filter(|(_, frags)| frags.values().any(|s| matches!(s, Slot::Good { .. })))
            .map(|(l, _)| *l)
            .collect();
        logs.sort();
        Ok(logs)
    }

    fn stat(&self) -> Result<StorageStat, StorageError> {
        let vfs = rustix::fs::statvfs(&self.frags)
            .map_err(|e| StorageError::io(format!("statvfs {}", self.frags.display()), e.into()))?;
        let index = lock(&self.index);
        let capacity = vfs.f_blocks.saturating_mul(vfs.f_frsize);
        let free = vfs.f_bavail.saturating_mul(vfs.f_frsize);
        Ok(StorageStat {
            capacity_bytes: capacity,
            free_bytes: free,
            used_bytes: index.used_bytes,
            fragments: index.fragments,
            fs_id: vfs.f_fsid,
            fs_capacity_bytes: capacity,
            fs_free_bytes: free,
            reserve_bytes: 0,
            draining: false,
        })
    }
}

fn file_name(id: FragmentId) -> String {
    format!("{:016x}.{}{FRAG_SUFFIX}", id.segment.0, id.index)
}

fn parse_name(name: &str) -> Option<(SegmentId, u8)> {
    let stem = name.strip_suffix(FRAG_SUFFIX)?;
    let (seg, index) = stem.split_once('.')?;
    if seg.len() != 16 {
        return None;
    }
    Some((
        SegmentId(u64::from_str_radix(seg, 16).ok()?),
        index.parse().ok()?,
    ))
}

fn read_error(id: FragmentId, path: &Path, e: std::io::Error) -> StorageError {
    if e.kind() == std::io::ErrorKind::UnexpectedEof {
        StorageError::Corrupt {
            id,
            detail: "file is truncated".into(),
        }
    } else {
        StorageError::io(format!("cannot read {}", path.display()), e)
    }
}

/// Outer error: I/O; inner error: a malformed header (truncation counts as malformed).
fn read_header_from(f: &File) -> std::io::Result<Result<v1::Header, HeaderError>> {
    let mut fixed = [0u8; v1::FIXED];
    match f.read_exact_at(&mut fixed, 0) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            return Ok(Err(HeaderError::FileTooShort("a header")))
        }
        Err(e) => return Err(e),
    }
    let total = match v1::Header::total_len(&fixed, MAX_FRAGMENT) {
        Ok(t) => t,
        Err(e) => return Ok(Err(e)),
    };
    let mut all = vec![0u8; total];
    match f.read_exact_at(&mut all, 0) {
        Ok(()) => Ok(v1::Header::decode(&all, MAX_FRAGMENT)),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            Ok(Err(HeaderError::FileTooShort("its header")))
        }
        Err(e) => Err(e),
    }
}

fn read_header(path: &Path) -> std::io::Result<Result<v1::Header, HeaderError>> {
    read_header_from(&File::open(path)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn header_roundtrips(log in any::<u64>(), seg in any::<u64>(), index in any::<u8>(), len in 0u32..(1 << 22), crc in any::<u32>()) {
            let h = v1::Header {
                id: FragmentId { log: LogId(log), segment: SegmentId(seg), index },
                meta: FragmentMeta { codec: 1, k: 4, m: 2, segment_len: len, crc32c: crc, nodes: (seg % 300) as u16 },
                payload_len: len,
                block_crcs: (0..v1::block_count(len) as u32).collect(),
            };
            let b = h.encode();
            prop_assert_eq!(b.len(), h.encoded_len());
            prop_assert_eq!(v1::Header::decode(&b, MAX_FRAGMENT).expect("decode"), h);
        }

        #[test]
        fn garbage_headers_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = v1::Header::decode(&bytes, MAX_FRAGMENT);
            let _ = v1::Header::total_len(&bytes, MAX_FRAGMENT);
        }
    }

    #[test]
    fn enospc_maps_to_no_space() {
        let e = StorageError::io("write x", std::io::Error::from_raw_os_error(libc::ENOSPC));
        assert!(
            matches!(&e, StorageError::NoSpace(m) if m.contains("write x")),
            "{e}"
        );
        assert!(e.to_string().contains("no space left"), "{e}");
        let e = StorageError::io("write x", std::io::Error::from_raw_os_error(libc::EIO));
        assert!(matches!(e, StorageError::Io { .. }));
    }

    #[test]
    fn failed_put_leaves_no_temp_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = FileStore::open(dir.path()).expect("open");
        let id = FragmentId {
            log: LogId(1),
            segment: SegmentId(1),
            index: 0,
        };
        // A non-empty directory where the fragment file should go makes the rename fail.
        let blocker = store.fragment_path(id);
        fs::create_dir_all(blocker.join("x")).expect("blocker");
        let payload = Bytes::from_static(b"abc");
        let meta = FragmentMeta {
            codec: 1,
            k: 1,
            m: 0,
            segment_len: 3,
            crc32c: proto::crc32c(&payload),
            nodes: 0,
        };
        assert!(store.put(id, meta, payload).is_err());
        let leftovers = fs::read_dir(blocker.parent().expect("parent"))
            .expect("list")
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().ends_with(TMP_SUFFIX))
            .count();
        assert_eq!(leftovers, 0);
        assert_eq!(store.stat().expect("stat").fragments, 0);
    }

    #[test]
    fn names_roundtrip() {
        let id = FragmentId {
            log: LogId(7),
            segment: SegmentId(0xabc),
            index: 5,
        };
        assert_eq!(parse_name(&file_name(id)), Some((id.segment, 5)));
        assert_eq!(parse_name("junk.frag"), None);
    }

    #[test]
    fn concurrent_puts_share_directory_fsyncs() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = std::sync::Arc::new(FileStore::open(dir.path()).expect("open"));
        let threads: Vec<_> = (0..8u64)
            .map(|t| {
                let store = store.clone();
                std::thread::spawn(move || {
                    for s in 0..5u64 {
                        let payload = Bytes::from(vec![t as u8; 1000]);
                        let meta = FragmentMeta {
                            codec: 1,
                            k: 1,
                            m: 0,
                            segment_len: 1000,
                            crc32c: proto::crc32c(&payload),
                            nodes: 0,
                        };
                        let id = FragmentId {
                            log: LogId(t % 3),
                            segment: SegmentId(s),
                            index: 0,
                        };
                        store.put(id, meta, payload).expect("put");
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("thread");
        }
        assert_eq!(store.stat().expect("stat").fragments, 3 * 5);
    }
}
