//! The storage server: answers `StorageRequest`s from a `FragmentStore`. Owns request
//! validation, the admission of puts against the server's space (`admit`: capacity and
//! reserve, with writes admitted but in flight counted) and the mapping of store errors to
//! wire errors; every store call runs in `spawn_blocking`. It must not know stripes or
//! segments, and never panics on input.

use crate::admit::{Limits, Usage, WriteClass};
use crate::error::StorageError;
use crate::store::{FileStore, FragmentStore, MAX_FRAGMENT};
use bytes::Bytes;
use proto::msg::{NodeInfo, RemoteError, Request, Response, StorageRequest, StorageResponse};
use proto::transport::{BoxFuture, Handler, Peer};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// One storage server over one store.
pub struct Server {
    store: Arc<dyn FragmentStore>,
    scrub: Arc<crate::scrub::ScrubState>,
    /// Foreground requests (puts, reads) in flight; background workers back off on it.
    foreground: Arc<AtomicU64>,
    limits: Limits,
    /// Bytes of puts admitted and not yet stored.
    admitted: Arc<std::sync::Mutex<u64>>,
    /// Draining (`shoal node drain`): every new fragment is refused.
    draining: Arc<std::sync::atomic::AtomicBool>,
    /// The file that keeps a drain across restarts (file stores only).
    drain_marker: Option<std::path::PathBuf>,
}

/// The file in a store's directory that says the server is being drained.
const DRAIN_MARKER: &str = "DRAINING";

/// Bytes of one admitted put, given back when the put ends.
struct Admitted {
    counter: Arc<std::sync::Mutex<u64>>,
    len: u64,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut a = crate::store::lock(&self.counter);
        *a = a.saturating_sub(self.len);
    }
}

/// Admits a put of `len` bytes of `class` into `store` (blocking: asks for the store's
/// numbers); the answer holds the bytes as in flight until dropped.
fn admit(
    store: &dyn FragmentStore,
    limits: Limits,
    counter: &Arc<std::sync::Mutex<u64>>,
    len: u64,
    class: WriteClass,
) -> Result<Admitted, StorageError> {
    let st = store.stat()?;
    let mut admitted = crate::store::lock(counter);
    let usage = Usage {
        used: st.used_bytes.saturating_add(*admitted),
        fs_capacity: st.fs_capacity_bytes,
        fs_free: st.fs_free_bytes.saturating_sub(*admitted),
    };
    limits
        .admit(&usage, len, class)
        .map_err(|e| StorageError::NoSpace(e.to_string()))?;
    *admitted += len;
    Ok(Admitted {
        counter: counter.clone(),
        len,
    })
}

/// A store's numbers seen through a server's capacity and reserve.
fn limited_stat(
    store: &dyn FragmentStore,
    limits: Limits,
) -> Result<proto::msg::StorageStat, StorageError> {
    let mut st = store.stat()?;
    let usage = Usage {
        used: st.used_bytes,
        fs_capacity: st.fs_capacity_bytes,
        fs_free: st.fs_free_bytes,
    };
    st.capacity_bytes = limits.capacity(&usage);
    st.free_bytes = limits.client_free(&usage);
    st.reserve_bytes = limits.reserve(&usage);
    Ok(st)
}

/// Counts one foreground request while alive.
struct Foreground<'a>(&'a AtomicU64);

impl<'a> Foreground<'a> {
    fn new(c: &'a AtomicU64) -> Foreground<'a> {
        c.fetch_add(1, Ordering::Relaxed);
        Foreground(c)
    }
}

impl Drop for Foreground<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Server {
    /// Opens the file store under `data_dir` (creating it) and returns the server.
    pub async fn open(data_dir: &Path) -> Result<Arc<Server>, StorageError> {
        Server::open_with(data_dir, Limits::default()).await
    }

    /// Opens the file store under `data_dir` with a capacity and reserve.
    pub async fn open_with(data_dir: &Path, limits: Limits) -> Result<Arc<Server>, StorageError> {
        let dir = data_dir.to_path_buf();
        let marker = data_dir.join(DRAIN_MARKER);
        let store = tokio::task::spawn_blocking(move || FileStore::open(&dir))
            .await
            .map_err(|e| StorageError::Internal(format!("store open task failed: {e}")))??;
        let mut server = Server::new(Arc::new(store), limits);
        if marker.exists() {
            tracing::warn!(dir = %data_dir.display(), "this server is being drained: it takes no new fragments (`shoal node drain` to finish)");
            server.draining.store(true, Ordering::SeqCst);
        }
        server.drain_marker = Some(marker);
        Ok(Arc::new(server))
    }

    /// A server over any store (tests use `MemStore`/`CrashStore`).
    pub fn with_store(store: Arc<dyn FragmentStore>) -> Arc<Server> {
        Server::with_store_limited(store, Limits::default())
    }

    /// A server over any store, with a capacity and reserve.
    pub fn with_store_limited(store: Arc<dyn FragmentStore>, limits: Limits) -> Arc<Server> {
        Arc::new(Server::new(store, limits))
    }

    fn new(store: Arc<dyn FragmentStore>, limits: Limits) -> Server {
        Server {
            store,
            scrub: Default::default(),
            foreground: Default::default(),
            limits,
            admitted: Default::default(),
            draining: Default::default(),
            drain_marker: None,
        }
    }

    /// Starts or stops draining, persisted by the marker file when there is one.
    async fn set_draining(&self, on: bool) -> Result<bool, RemoteError> {
        if let Some(marker) = self.drain_marker.clone() {
            tokio::task::spawn_blocking(move || {
                if on {
                    std::fs::write(&marker, b"")
                } else {
                    match std::fs::remove_file(&marker) {
                        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
                        _ => Ok(()),
                    }
                }
                .map_err(|e| StorageError::io(format!("drain marker {}", marker.display()), e))
            })
            .await
            .map_err(|e| RemoteError::Io(format!("storage task failed: {e}")))??;
        }
        self.draining.store(on, Ordering::SeqCst);
        tracing::warn!(on, "draining changed");
        Ok(on)
    }

    /// Starts the background scrub of this server. It repairs bad fragments from the
    /// other storage servers of `config`, reached through `transport`, and reports each
    /// pass through `worker`.
    pub fn start_scrub(
        &self,
        config: &proto::config::ClusterConfig,
        transport: Arc<proto::transport::Transport>,
        worker: Arc<proto::worker::Worker>,
    ) -> tokio::task::JoinHandle<()> {
        let scrub = crate::scrub::ScrubWorker {
            store: self.store.clone(),
            state: self.scrub.clone(),
            foreground: self.foreground.clone(),
            client: crate::rpc::StorageClient::new(transport),
            servers: config.storage_nodes().iter().map(|n| n.address).collect(),
            period: std::time::Duration::from_secs(config.file.storage.scrub_period_secs),
            nice: std::sync::Mutex::new(crate::pace::Nice::new(Default::default())),
        };
        tokio::spawn(scrub.run(worker))
    }

    /// Foreground requests in flight (background workers back off while it is non-zero).
    pub fn foreground(&self) -> Arc<AtomicU64> {
        self.foreground.clone()
    }

    pub fn store(&self) -> &Arc<dyn FragmentStore> {
        &self.store
    }

    async fn blocking<T, F>(&self, f: F) -> Result<T, RemoteError>
    where
        T: Send + 'static,
        F: FnOnce(&dyn FragmentStore) -> Result<T, StorageError> + Send + 'static,
    {
        let store = self.store.clone();
        match tokio::task::spawn_blocking(move || f(store.as_ref())).await {
            Ok(r) => r.map_err(RemoteError::from),
            Err(e) => Err(RemoteError::Io(format!("storage task failed: {e}"))),
        }
    }

    /// Answers one request of a system peer (puts may use the reserve).
    pub async fn handle(
        &self,
        req: StorageRequest,
        bulk: Bytes,
    ) -> Result<(StorageResponse, Bytes), RemoteError> {
        self.handle_as(req, bulk, WriteClass::System).await
    }

    /// Answers one request; `bulk` is the request's bulk part (the payload of a put), and
    /// `class` says whether a put may use the reserve.
    pub async fn handle_as(
        &self,
        req: StorageRequest,
        bulk: Bytes,
        class: WriteClass,
    ) -> Result<(StorageResponse, Bytes), RemoteError> {
        match req {
            StorageRequest::PutFragment { id, meta } => {
                let _fg = Foreground::new(&self.foreground);
                let len = bulk.len();
                if self.draining.load(Ordering::SeqCst) {
                    tracing::debug!(fragment = %id, "put refused: draining");
                    return Err(RemoteError::NoSpace(
                        "this storage server is being drained and takes no new fragments".into(),
                    ));
                }
                let (limits, counter) = (self.limits, self.admitted.clone());
                self.blocking(move |s| {
                    let _admitted = admit(s, limits, &counter, len as u64, class)?;
                    s.put(id, meta, bulk)
                })
                .await
                .inspect_err(|e| {
                    tracing::warn!(fragment = %id, len, "put refused: {e}");
                })?;
                Ok((StorageResponse::Stored, Bytes::new()))
            }
            StorageRequest::ReadRange { id, offset, len } => {
                if !bulk.is_empty() {
                    return Err(RemoteError::Invalid(
                        "ReadRange carries no bulk bytes".into(),
                    ));
                }
                if len > MAX_FRAGMENT {
                    return Err(RemoteError::Invalid(format!(
                        "read of {len} bytes exceeds the {MAX_FRAGMENT}-byte limit"
                    )));
                }
                let _fg = Foreground::new(&self.foreground);
                let bytes = self
                    .blocking(move |s| s.read_range(id, offset, len))
                    .await
                    .inspect_err(|e| {
                        if matches!(e, RemoteError::Corrupt(_)) {
                            tracing::error!(fragment = %id, "corrupt fragment: {e}");
                        }
                    })?;
                Ok((StorageResponse::Range, bytes))
            }
            StorageRequest::Delete { id } => {
                let existed = self.blocking(move |s| s.delete(id)).await?;
                Ok((StorageResponse::Deleted { existed }, Bytes::new()))
            }
            StorageRequest::ListLog { log } => {
                let frags = self.blocking(move |s| s.list_log(log)).await?;
                Ok((StorageResponse::Fragments(frags), Bytes::new()))
            }
            StorageRequest::ListLogs => {
                let logs = self.blocking(|s| s.list_logs()).await?;
                Ok((StorageResponse::Logs(logs), Bytes::new()))
            }
            StorageRequest::Stat => {
                let limits = self.limits;
                let mut st = self.blocking(move |s| limited_stat(s, limits)).await?;
                st.draining = self.draining.load(Ordering::SeqCst);
                if st.draining {
                    st.free_bytes = 0;
                }
                Ok((StorageResponse::Stat(st), Bytes::new()))
            }
            StorageRequest::Locate { log, segment } => {
                let frags = self.blocking(move |s| s.list_segment(log, segment)).await?;
                Ok((StorageResponse::Located(frags), Bytes::new()))
            }
            StorageRequest::ScrubNow => {
                Ok((StorageResponse::Scrub(self.scrub.start_now()), Bytes::new()))
            }
            StorageRequest::ScrubStatus => {
                Ok((StorageResponse::Scrub(self.scrub.report()), Bytes::new()))
            }
            StorageRequest::Drain { on } => Ok((
                StorageResponse::Draining(self.set_draining(on).await?),
                Bytes::new(),
            )),
        }
    }
}

/// A transport `Handler` serving only the storage role, for in-process tests of the layers
/// below authorization: it checks no identity. Real nodes run `fsd`'s node handler, which
/// composes the roles and refuses requests through `proto::authz` first.
pub struct ServerHandler {
    pub server: Arc<Server>,
    pub name: String,
}

impl Handler for ServerHandler {
    fn handle(&self, _peer: Peer, req: Request, bulk: Bytes) -> BoxFuture<'_, (Response, Bytes)> {
        Box::pin(async move {
            match req {
                Request::Ping => (
                    Response::Pong(NodeInfo {
                        name: self.name.clone(),
                        roles: vec!["storage".into()],
                        version: proto::VERSION.into(),
                        workers: Vec::new(),
                        config_group: None,
                        config_epoch: 0,
                    }),
                    Bytes::new(),
                ),
                Request::Storage(r) => match self.server.handle(r, bulk).await {
                    Ok((resp, bulk)) => (Response::Storage(resp), bulk),
                    Err(e) => (Response::Error(e), Bytes::new()),
                },
                Request::Manager(_) | Request::ManagerAs { .. } => (
                    Response::Error(RemoteError::NoRole("manager".into())),
                    Bytes::new(),
                ),
                Request::Client(_) | Request::Peer(_) => (
                    Response::Error(RemoteError::NoRole("client".into())),
                    Bytes::new(),
                ),
                Request::Admin(_) => (
                    Response::Error(RemoteError::NoRole("admin".into())),
                    Bytes::new(),
                ),
                Request::ConfigGroup(_) => (
                    Response::Error(RemoteError::NoRole("config group".into())),
                    Bytes::new(),
                ),
                // A bare storage server is no member of the config group.
                Request::ConfigRead => (Response::Config { file: None }, Bytes::new()),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemStore;
    use proto::ids::{FragmentId, LogId, SegmentId};
    use proto::msg::{FragmentMeta, CODEC_RS_GF8_RSE};

    fn id() -> FragmentId {
        FragmentId {
            log: LogId(1),
            segment: SegmentId(2),
            index: 0,
        }
    }

    fn put_req(index: u8, payload: &Bytes) -> StorageRequest {
        StorageRequest::PutFragment {
            id: FragmentId {
                log: LogId(9),
                segment: SegmentId(1),
                index,
            },
            meta: FragmentMeta {
                codec: CODEC_RS_GF8_RSE,
                k: 4,
                m: 2,
                segment_len: 400,
                crc32c: proto::crc32c(payload),
                nodes: 0,
            },
        }
    }

    #[tokio::test]
    async fn client_puts_stop_at_the_reserve_system_puts_at_the_capacity() {
        let s = Server::with_store_limited(
            Arc::new(MemStore::new()),
            Limits {
                capacity: Some(100),
                reserve: Some(40),
            },
        );
        let p = Bytes::from(vec![7u8; 30]);
        for i in 0..2 {
            s.handle_as(put_req(i, &p), p.clone(), WriteClass::Client)
                .await
                .expect("fits below the reserve");
        }
        let e = s
            .handle_as(put_req(2, &p), p.clone(), WriteClass::Client)
            .await
            .expect_err("into the reserve");
        assert!(matches!(e, RemoteError::NoSpace(_)), "{e:?}");
        let (r, _) = s
            .handle(StorageRequest::Stat, Bytes::new())
            .await
            .expect("stat");
        let StorageResponse::Stat(st) = r else {
            panic!("{r:?}")
        };
        assert_eq!(
            (st.capacity_bytes, st.free_bytes, st.reserve_bytes),
            (100, 0, 40)
        );
        s.handle_as(put_req(2, &p), p.clone(), WriteClass::System)
            .await
            .expect("metadata may use the reserve");
        let e = s
            .handle_as(put_req(3, &p), p.clone(), WriteClass::System)
            .await
            .expect_err("never past the capacity");
        assert!(matches!(e, RemoteError::NoSpace(_)), "{e:?}");
        // Deleting gives the space back.
        for i in 0..3 {
            let id = FragmentId {
                log: LogId(9),
                segment: SegmentId(1),
                index: i,
            };
            s.handle(StorageRequest::Delete { id }, Bytes::new())
                .await
                .expect("delete");
        }
        s.handle_as(put_req(0, &p), p.clone(), WriteClass::Client)
            .await
            .expect("room again");
    }

    #[tokio::test]
    async fn requests_map_to_the_store_and_bad_input_is_invalid() {
        let s = Server::with_store(Arc::new(MemStore::new()));
        let payload = Bytes::from_static(b"0123456789");
        let meta = FragmentMeta {
            codec: CODEC_RS_GF8_RSE,
            k: 2,
            m: 1,
            segment_len: 20,
            crc32c: proto::crc32c(&payload),
            nodes: 0,
        };
        let r = s
            .handle(
                StorageRequest::PutFragment { id: id(), meta },
                payload.clone(),
            )
            .await
            .expect("put");
        assert!(matches!(r.0, StorageResponse::Stored));
        let (r, b) = s
            .handle(
                StorageRequest::ReadRange {
                    id: id(),
                    offset: 2,
                    len: 3,
                },
                Bytes::new(),
            )
            .await
            .expect("read");
        assert!(matches!(r, StorageResponse::Range));
        assert_eq!(&b[..], b"234");
        for (offset, len) in [(8, 3), (u32::MAX, 1), (0, u32::MAX)] {
            let e = s
                .handle(
                    StorageRequest::ReadRange {
                        id: id(),
                        offset,
                        len,
                    },
                    Bytes::new(),
                )
                .await
                .expect_err("oob");
            assert!(matches!(e, RemoteError::Invalid(_)), "{e:?}");
        }
        let mut bad = meta;
        bad.crc32c ^= 1;
        let e = s
            .handle(
                StorageRequest::PutFragment {
                    id: id(),
                    meta: bad,
                },
                payload,
            )
            .await
            .expect_err("crc");
        assert!(matches!(e, RemoteError::Invalid(_)));
        let (r, _) = s
            .handle(StorageRequest::ListLog { log: LogId(1) }, Bytes::new())
            .await
            .expect("list");
        assert!(matches!(r, StorageResponse::Fragments(f) if f.len() == 1));
        let (r, _) = s
            .handle(StorageRequest::ListLogs, Bytes::new())
            .await
            .expect("logs");
        assert!(matches!(r, StorageResponse::Logs(l) if l == vec![LogId(1)]));
        let (r, _) = s
            .handle(StorageRequest::Stat, Bytes::new())
            .await
            .expect("stat");
        assert!(matches!(r, StorageResponse::Stat(st) if st.fragments == 1 && st.used_bytes == 10));
        let (r, _) = s
            .handle(StorageRequest::Delete { id: id() }, Bytes::new())
            .await
            .expect("delete");
        assert!(matches!(r, StorageResponse::Deleted { existed: true }));
        let e = s
            .handle(
                StorageRequest::ReadRange {
                    id: id(),
                    offset: 0,
                    len: 1,
                },
                Bytes::new(),
            )
            .await
            .expect_err("gone");
        assert!(matches!(e, RemoteError::NotFound(_)));
    }
}
