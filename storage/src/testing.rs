//! Test support: the `FragmentStore` conformance suite, run against every store (so the real
//! `FileStore` is always covered), and `CrashStore`, an in-memory store that loses writes
//! which were not acknowledged when it "crashes". Used by this crate's tests and by other
//! crates' engine tests (feature `testing`); the product builds without it.

use crate::error::StorageError;
use crate::store::{check_put, lock, FileStore, FragmentStore, MemStore};
use bytes::Bytes;
use proto::ids::{FragmentId, LogId, SegmentId};
use proto::msg::{FragmentInfo, FragmentMeta, StorageStat, CODEC_RS_GF8_RSE};
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

/// In-memory store with a crash knob: writes are volatile until "synced"; with
/// `set_fail_syncs(true)` a put stays volatile (readable, like the page cache) and fails
/// (unacknowledged); `crash()` drops everything volatile.
#[derive(Default)]
pub struct CrashStore {
    durable: MemStore,
    volatile: MemStore,
    volatile_ids: Mutex<BTreeSet<FragmentId>>,
    fail_syncs: AtomicBool,
}

impl CrashStore {
    pub fn new() -> CrashStore {
        CrashStore::default()
    }

    /// While set, puts are not made durable and return an error.
    pub fn set_fail_syncs(&self, fail: bool) {
        self.fail_syncs.store(fail, Ordering::SeqCst);
    }

    /// Simulates a power loss: every unacknowledged write disappears.
    pub fn crash(&self) {
        let ids = std::mem::take(&mut *lock(&self.volatile_ids));
        for id in ids {
            let _ = self.volatile.delete(id);
        }
    }

    /// Flips one byte of a stored payload (test fault knob).
    pub fn corrupt(&self, id: FragmentId, offset: usize) -> bool {
        self.volatile.corrupt(id, offset) | self.durable.corrupt(id, offset)
    }
}

impl FragmentStore for CrashStore {
    fn put(&self, id: FragmentId, meta: FragmentMeta, payload: Bytes) -> Result<(), StorageError> {
        check_put(id, &meta, &payload)?;
        if self.fail_syncs.load(Ordering::SeqCst) {
            self.volatile.put(id, meta, payload)?;
            lock(&self.volatile_ids).insert(id);
            return Err(StorageError::Io {
                context: format!("put {id}"),
                source: std::io::Error::other("simulated crash before the fragment became durable"),
            });
        }
        self.durable.put(id, meta, payload)?;
        if lock(&self.volatile_ids).remove(&id) {
            let _ = self.volatile.delete(id);
        }
        Ok(())
    }

    fn read_range(&self, id: FragmentId, offset: u32, len: u32) -> Result<Bytes, StorageError> {
        if lock(&self.volatile_ids).contains(&id) {
            return self.volatile.read_range(id, offset, len);
        }
        self.durable.read_range(id, offset, len)
    }

    fn delete(&self, id: FragmentId) -> Result<bool, StorageError> {
        let v = lock(&self.volatile_ids).remove(&id) && self.volatile.delete(id)?;
        Ok(self.durable.delete(id)? | v)
    }

    fn list_log(&self, log: LogId) -> Result<Vec<FragmentInfo>, StorageError> {
        let mut all = self.durable.list_log(log)?;
        let volatile = self.volatile.list_log(log)?;
        all.retain(|f| !volatile.iter().any(|v| v.id == f.id));
        all.extend(volatile);
        all.sort_by_key(|f| f.id);
        Ok(all)
    }

    fn list_logs(&self) -> Result<Vec<LogId>, StorageError> {
        let mut logs: BTreeSet<LogId> = self.durable.list_logs()?.into_iter().collect();
        logs.extend(self.volatile.list_logs()?);
        Ok(logs.into_iter().collect())
    }

    fn stat(&self) -> Result<StorageStat, StorageError> {
        let d = self.durable.stat()?;
        let v = self.volatile.stat()?;
        Ok(StorageStat {
            capacity_bytes: d.capacity_bytes,
            free_bytes: d.free_bytes.saturating_sub(v.used_bytes),
            used_bytes: d.used_bytes + v.used_bytes,
            fragments: d.fragments + v.fragments,
            fs_id: d.fs_id,
            fs_capacity_bytes: d.fs_capacity_bytes,
            fs_free_bytes: d.fs_free_bytes.saturating_sub(v.used_bytes),
            reserve_bytes: 0,
            draining: false,
        })
    }
}

/// What the conformance suite needs from a store under test.
pub trait SuiteTarget {
    type Store: FragmentStore;
    /// The store (opened once).
    fn open(&mut self) -> Self::Store;
    /// Simulates a restart (or crash after acknowledgement) and returns the reopened store.
    fn restart(&mut self, store: Self::Store) -> Self::Store;
    /// Flips a payload byte of a stored fragment as a disk fault would.
    fn corrupt(&mut self, store: &Self::Store, id: FragmentId, payload_offset: u32) -> bool;
}

/// `FileStore` in a directory.
pub struct FileTarget {
    pub dir: PathBuf,
}

impl SuiteTarget for FileTarget {
    type Store = FileStore;
    fn open(&mut self) -> FileStore {
        FileStore::open(&self.dir).expect("open file store")
    }
    fn restart(&mut self, store: FileStore) -> FileStore {
        drop(store);
        self.open()
    }
    fn corrupt(&mut self, store: &FileStore, id: FragmentId, payload_offset: u32) -> bool {
        corrupt_file_fragment(store, id, payload_offset)
    }
}

/// Flips one payload byte of a fragment file on disk (fault injection for tests).
pub fn corrupt_file_fragment(store: &FileStore, id: FragmentId, payload_offset: u32) -> bool {
    corrupt_fragment_file(store.root(), id, payload_offset).is_ok()
}

/// Flips one payload byte (`payload_offset` modulo the payload length) of the fragment file
/// of `id` in the store under `data_dir`, as a disk fault would.
pub fn corrupt_fragment_file(
    data_dir: &std::path::Path,
    id: FragmentId,
    payload_offset: u32,
) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    let path = FileStore::fragment_path_in(data_dir, id);
    let len = FileStore::payload_len_of(&path)?;
    if len == 0 {
        return Err(std::io::Error::other("empty payload"));
    }
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)?;
    let at = FileStore::payload_offset(len) + (payload_offset % len) as u64;
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, at)?;
    b[0] ^= 0x5a;
    f.write_all_at(&b, at)?;
    f.sync_all()
}

/// `MemStore`: restart keeps the same store (nothing is lost in one process).
pub struct MemTarget;

impl SuiteTarget for MemTarget {
    type Store = MemStore;
    fn open(&mut self) -> MemStore {
        MemStore::new()
    }
    fn restart(&mut self, store: MemStore) -> MemStore {
        store
    }
    fn corrupt(&mut self, store: &MemStore, id: FragmentId, payload_offset: u32) -> bool {
        store.corrupt(id, payload_offset as usize)
    }
}

/// `CrashStore`: restart is a crash.
pub struct CrashTarget;

impl SuiteTarget for CrashTarget {
    type Store = CrashStore;
    fn open(&mut self) -> CrashStore {
        CrashStore::new()
    }
    fn restart(&mut self, store: CrashStore) -> CrashStore {
        store.crash();
        store
    }
    fn corrupt(&mut self, store: &CrashStore, id: FragmentId, payload_offset: u32) -> bool {
        store.corrupt(id, payload_offset as usize)
    }
}

/// Deterministic test payload.
pub fn pattern(seed: u64, len: usize) -> Bytes {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect::<Vec<u8>>()
        .into()
}

fn frag(log: u64, seg: u64, index: u8) -> FragmentId {
    FragmentId {
        log: LogId(log),
        segment: SegmentId(seg),
        index,
    }
}

fn meta_for(payload: &[u8]) -> FragmentMeta {
    FragmentMeta {
        codec: CODEC_RS_GF8_RSE,
        k: 4,
        m: 2,
        segment_len: payload.len() as u32 * 4,
        crc32c: proto::crc32c(payload),
        nodes: 0,
    }
}

/// The conformance suite. Panics (with a message) on the first violation.
pub fn suite<T: SuiteTarget>(target: &mut T) {
    let store = target.open();
    let big = pattern(1, 200 * 1024 + 17);
    let small = pattern(2, 5);
    let a = frag(1, 0, 0);
    let b = frag(1, 0, 5);
    let c = frag(2, 9, 1);
    let doomed = frag(3, 1, 2);

    // put and read back
    store.put(a, meta_for(&big), big.clone()).expect("put a");
    store
        .put(b, meta_for(&small), small.clone())
        .expect("put b");
    store
        .put(c, meta_for(&small), small.clone())
        .expect("put c");
    store
        .put(doomed, meta_for(&small), small.clone())
        .expect("put doomed");
    assert_eq!(
        store.read_range(a, 0, big.len() as u32).expect("read all"),
        big
    );
    for (off, len) in [
        (0u32, 1u32),
        (65535, 2),
        (65536, 65536),
        (100_000, 100_000),
        (big.len() as u32 - 1, 1),
    ] {
        let got = store.read_range(a, off, len).expect("read range");
        assert_eq!(
            got,
            big.slice(off as usize..(off + len) as usize),
            "range {off}+{len}"
        );
    }
    assert_eq!(store.read_range(b, 0, 5).expect("read small"), small);
    assert!(store
        .read_range(a, big.len() as u32, 0)
        .expect("empty read at end")
        .is_empty());

    // bounds and validation
    let invalid = |r: Result<Bytes, StorageError>, what: &str| {
        assert!(
            matches!(r, Err(StorageError::Invalid(_))),
            "{what}: expected Invalid, got {r:?}"
        );
    };
    invalid(store.read_range(a, big.len() as u32, 1), "one past the end");
    invalid(store.read_range(a, u32::MAX, u32::MAX), "huge range");
    invalid(store.read_range(b, 3, 3), "straddling the end");
    let mut bad = meta_for(&small);
    bad.crc32c ^= 1;
    assert!(
        matches!(
            store.put(frag(1, 1, 0), bad, small.clone()),
            Err(StorageError::Invalid(_))
        ),
        "crc mismatch"
    );
    assert!(
        matches!(
            store.put(frag(1, 1, 6), meta_for(&small), small.clone()),
            Err(StorageError::Invalid(_))
        ),
        "index outside the stripe"
    );
    assert!(
        matches!(
            store.read_range(frag(1, 1, 0), 0, 1),
            Err(StorageError::NotFound(_))
        ),
        "rejected put is absent"
    );
    assert!(
        matches!(
            store.read_range(frag(9, 9, 9), 0, 0),
            Err(StorageError::NotFound(_))
        ),
        "unknown fragment"
    );

    // listing and stat
    let listed: Vec<FragmentId> = store
        .list_log(LogId(1))
        .expect("list")
        .iter()
        .map(|f| f.id)
        .collect();
    assert_eq!(listed, vec![a, b]);
    let info = store.list_log(LogId(1)).expect("list");
    assert_eq!(info[0].len, big.len() as u32);
    assert_eq!(info[0].meta, meta_for(&big));
    assert_eq!(
        store.list_logs().expect("logs"),
        vec![LogId(1), LogId(2), LogId(3)]
    );
    let st = store.stat().expect("stat");
    assert_eq!(st.fragments, 4);
    assert_eq!(st.used_bytes, big.len() as u64 + 15);
    assert!(st.capacity_bytes >= st.free_bytes);

    // delete is idempotent
    assert!(store.delete(doomed).expect("delete"));
    assert!(!store.delete(doomed).expect("delete again"));
    assert!(matches!(
        store.read_range(doomed, 0, 1),
        Err(StorageError::NotFound(_))
    ));
    assert_eq!(store.list_logs().expect("logs"), vec![LogId(1), LogId(2)]);
    assert_eq!(store.stat().expect("stat").fragments, 3);

    // overwrite replaces
    let c2 = pattern(3, 70_000);
    store.put(c, meta_for(&c2), c2.clone()).expect("overwrite");
    assert_eq!(
        store
            .read_range(c, 0, c2.len() as u32)
            .expect("read overwritten"),
        c2
    );
    assert_eq!(
        store.stat().expect("stat").used_bytes,
        (big.len() + 5 + c2.len()) as u64
    );

    // restart serves everything acknowledged
    let store = target.restart(store);
    assert_eq!(
        store
            .read_range(a, 0, big.len() as u32)
            .expect("read a after restart"),
        big
    );
    assert_eq!(
        store.read_range(b, 0, 5).expect("read b after restart"),
        small
    );
    assert_eq!(
        store
            .read_range(c, 0, c2.len() as u32)
            .expect("read c after restart"),
        c2
    );
    assert!(
        matches!(
            store.read_range(doomed, 0, 1),
            Err(StorageError::NotFound(_))
        ),
        "deleted stays deleted"
    );
    let st = store.stat().expect("stat after restart");
    assert_eq!(
        (st.fragments, st.used_bytes),
        (3, (big.len() + 5 + c2.len()) as u64)
    );

    // corruption is detected, never returned
    assert!(target.corrupt(&store, a, 70_000), "corrupt a");
    let r = store.read_range(a, 65536, 10_000);
    assert!(
        matches!(r, Err(StorageError::Corrupt { .. })),
        "corrupt block must fail: {r:?}"
    );
    let r = store.read_range(a, 0, big.len() as u32);
    assert!(
        matches!(r, Err(StorageError::Corrupt { .. })),
        "whole read must fail: {r:?}"
    );
    // a corrupt fragment can still be deleted and rewritten
    assert!(store.delete(a).expect("delete corrupt"));
    store
        .put(a, meta_for(&big), big.clone())
        .expect("rewrite a");
    assert_eq!(
        store.read_range(a, 65536, 10_000).expect("read rewritten"),
        big.slice(65536..75536)
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_store_conforms() {
        let dir = tempfile::tempdir().expect("tempdir");
        suite(&mut FileTarget {
            dir: dir.path().to_path_buf(),
        });
    }

    #[test]
    fn mem_store_conforms() {
        suite(&mut MemTarget);
    }

    #[test]
    fn crash_store_conforms() {
        suite(&mut CrashTarget);
    }

    #[test]
    fn crash_drops_unacknowledged_writes() {
        let s = CrashStore::new();
        let p = pattern(4, 100);
        s.put(frag(1, 0, 0), meta_for(&p), p.clone())
            .expect("acked put");
        s.set_fail_syncs(true);
        assert!(s.put(frag(1, 1, 0), meta_for(&p), p.clone()).is_err());
        assert_eq!(
            s.read_range(frag(1, 1, 0), 0, 100)
                .expect("visible before crash"),
            p
        );
        s.crash();
        s.set_fail_syncs(false);
        assert!(matches!(
            s.read_range(frag(1, 1, 0), 0, 1),
            Err(StorageError::NotFound(_))
        ));
        assert_eq!(
            s.read_range(frag(1, 0, 0), 0, 100).expect("acked survives"),
            p
        );
    }

    #[test]
    fn file_store_removes_temp_files_and_flags_bad_headers() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = FileStore::open(dir.path()).expect("open");
        let p = pattern(5, 1000);
        let id = frag(0xab, 3, 1);
        store.put(id, meta_for(&p), p.clone()).expect("put");
        let path = store.fragment_path(id);
        let tmp = path.with_file_name(".leftover.tmp");
        std::fs::write(&tmp, b"partial").expect("write tmp");
        drop(store);
        // Damage the header: the fragment is reported corrupt, not served, not listed.
        let mut bytes = std::fs::read(&path).expect("read file");
        bytes[10] ^= 1;
        std::fs::write(&path, &bytes).expect("write file");
        let store = FileStore::open(dir.path()).expect("reopen");
        assert!(!tmp.exists(), "leftover temp file removed at open");
        assert!(matches!(
            store.read_range(id, 0, 1),
            Err(StorageError::Corrupt { .. })
        ));
        assert!(store.list_log(id.log).expect("list").is_empty());
        assert!(store.delete(id).expect("delete"));
    }
}
