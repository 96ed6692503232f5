//! The fragment store of one storage server: the `FragmentStore` trait, the checks every
//! implementation applies to its input, and the in-memory `MemStore`. The on-disk store is
//! in `store::file`. A store knows fragments only; it must not know segments, stripes or
//! inodes, and it must never return bytes that failed their checksum.

pub mod file;

use crate::error::StorageError;
use bytes::Bytes;
use proto::ids::{FragmentId, LogId};
use proto::msg::{FragmentInfo, FragmentMeta, StorageStat, CODEC_RS_GF8_RSE};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

pub use file::FileStore;

/// Largest fragment payload a store accepts (a whole segment striped with k = 1).
pub const MAX_FRAGMENT: u32 = crate::segment::MAX_SEGMENT as u32;

/// Where fragments live. Methods block (disk I/O, fsync): async callers run them in
/// `spawn_blocking`. `put` returns only once the fragment is durable.
pub trait FragmentStore: Send + Sync + 'static {
    /// Stores a fragment durably, replacing any earlier one with the same id. Rejects a
    /// payload whose CRC32C differs from `meta.crc32c` (`Invalid`).
    fn put(&self, id: FragmentId, meta: FragmentMeta, payload: Bytes) -> Result<(), StorageError>;
    /// `len` bytes at `offset` of the payload, checksum-verified (`Corrupt` otherwise).
    fn read_range(&self, id: FragmentId, offset: u32, len: u32) -> Result<Bytes, StorageError>;
    /// Deletes a fragment; `Ok(false)` when it was not there (idempotent).
    fn delete(&self, id: FragmentId) -> Result<bool, StorageError>;
    /// Every readable fragment of `log`, ordered by (segment, index).
    fn list_log(&self, log: LogId) -> Result<Vec<FragmentInfo>, StorageError>;
    /// The readable fragments of one segment held here, ordered by index.
    fn list_segment(
        &self,
        log: LogId,
        segment: proto::ids::SegmentId,
    ) -> Result<Vec<FragmentInfo>, StorageError> {
        Ok(self
            .list_log(log)?
            .into_iter()
            .filter(|f| f.id.segment == segment)
            .collect())
    }
    /// Every log with at least one fragment here, ordered.
    fn list_logs(&self) -> Result<Vec<LogId>, StorageError>;
    fn stat(&self) -> Result<StorageStat, StorageError>;
}

/// Checks a put's metadata and payload against each other.
pub fn check_put(id: FragmentId, meta: &FragmentMeta, payload: &[u8]) -> Result<(), StorageError> {
    if meta.codec != CODEC_RS_GF8_RSE {
        return Err(StorageError::Invalid(format!(
            "{id}: unknown codec id {}",
            meta.codec
        )));
    }
    if meta.k == 0 || meta.k as usize + meta.m as usize > 255 {
        return Err(StorageError::Invalid(format!(
            "{id}: erasure layout {}+{} is not usable",
            meta.k, meta.m
        )));
    }
    if id.index as usize >= meta.k as usize + meta.m as usize {
        return Err(StorageError::Invalid(format!(
            "{id}: fragment index {} is outside the {}+{} stripe",
            id.index, meta.k, meta.m
        )));
    }
    if payload.len() > MAX_FRAGMENT as usize {
        return Err(StorageError::Invalid(format!(
            "{id}: payload of {} bytes exceeds the {MAX_FRAGMENT}-byte limit",
            payload.len()
        )));
    }
    let crc = proto::crc32c(payload);
    if crc != meta.crc32c {
        return Err(StorageError::Invalid(format!(
            "{id}: payload CRC32C {crc:08x} does not match the declared {:08x} (damaged in transit?)",
            meta.crc32c
        )));
    }
    Ok(())
}

/// Checks that `offset..offset+len` lies inside a payload of `payload_len` bytes.
pub fn check_range(
    id: FragmentId,
    offset: u32,
    len: u32,
    payload_len: u32,
) -> Result<(), StorageError> {
    let end = offset as u64 + len as u64;
    if end > payload_len as u64 {
        return Err(StorageError::Invalid(format!(
            "{id}: range {offset}+{len} runs past the payload of {payload_len} bytes"
        )));
    }
    Ok(())
}

struct MemFragment {
    meta: FragmentMeta,
    payload: Vec<u8>,
}

/// Fragments in memory, for engine unit tests. Reads verify the whole payload's CRC, so
/// `corrupt` is detected like on disk. Nothing survives the process.
#[derive(Default)]
pub struct MemStore {
    frags: Mutex<BTreeMap<FragmentId, MemFragment>>,
}

impl MemStore {
    pub fn new() -> MemStore {
        MemStore::default()
    }

    /// Flips one byte of a stored payload (test fault knob). False when absent or empty.
    pub fn corrupt(&self, id: FragmentId, offset: usize) -> bool {
        let mut frags = lock(&self.frags);
        match frags.get_mut(&id) {
            Some(f) if !f.payload.is_empty() => {
                let i = offset % f.payload.len();
                f.payload[i] ^= 0x5a;
                true
            }
            _ => false,
        }
    }
}

impl FragmentStore for MemStore {
    fn put(&self, id: FragmentId, meta: FragmentMeta, payload: Bytes) -> Result<(), StorageError> {
        check_put(id, &meta, &payload)?;
        lock(&self.frags).insert(
            id,
            MemFragment {
                meta,
                payload: payload.to_vec(),
            },
        );
        Ok(())
    }

    fn read_range(&self, id: FragmentId, offset: u32, len: u32) -> Result<Bytes, StorageError> {
        let frags = lock(&self.frags);
        let f = frags.get(&id).ok_or(StorageError::NotFound(id))?;
        check_range(id, offset, len, f.payload.len() as u32)?;
        if proto::crc32c(&f.payload) != f.meta.crc32c {
            return Err(StorageError::Corrupt {
                id,
                detail: "payload checksum mismatch".into(),
            });
        }
        Ok(Bytes::copy_from_slice(
            &f.payload[offset as usize..offset as usize + len as usize],
        ))
    }

    fn delete(&self, id: FragmentId) -> Result<bool, StorageError> {
        Ok(lock(&self.frags).remove(&id).is_some())
    }

    fn list_log(&self, log: LogId) -> Result<Vec<FragmentInfo>, StorageError> {
        Ok(lock(&self.frags)
            .iter()
            .filter(|(id, _)| id.log == log)
            .map(|(id, f)| FragmentInfo {
                id: *id,
                meta: f.meta,
                len: f.payload.len() as u32,
            })
            .collect())
    }

    fn list_logs(&self) -> Result<Vec<LogId>, StorageError> {
        let logs: BTreeSet<LogId> = lock(&self.frags).keys().map(|id| id.log).collect();
        Ok(logs.into_iter().collect())
    }

    fn stat(&self) -> Result<StorageStat, StorageError> {
        let frags = lock(&self.frags);
        let used: u64 = frags.values().map(|f| f.payload.len() as u64).sum();
        Ok(StorageStat {
            capacity_bytes: u64::MAX,
            free_bytes: u64::MAX - used,
            used_bytes: used,
            fragments: frags.len() as u64,
            fs_id: 0,
            fs_capacity_bytes: u64::MAX,
            fs_free_bytes: u64::MAX - used,
            reserve_bytes: 0,
            draining: false,
        })
    }
}

/// Locks a mutex, ignoring poisoning (the data stays consistent: every critical section
/// here is a single map operation).
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
