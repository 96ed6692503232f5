//! The storage server: answers `StorageRequest`s from a `FragmentStore`. Owns request
//! validation and the mapping of store errors to wire errors; every store call runs in
//! `spawn_blocking`. It must not know stripes or segments, and never panics on input.

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
        let dir = data_dir.to_path_buf();
        let store = tokio::task::spawn_blocking(move || FileStore::open(&dir))
            .await
            .map_err(|e| StorageError::Internal(format!("store open task failed: {e}")))??;
        Ok(Server::with_store(Arc::new(store)))
    }

    /// A server over any store (tests use `MemStore`/`CrashStore`).
    pub fn with_store(store: Arc<dyn FragmentStore>) -> Arc<Server> {
        Arc::new(Server {
            store,
            scrub: Default::default(),
            foreground: Default::default(),
        })
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

    /// Answers one request; `bulk` is the request's bulk part (the payload of a put).
    pub async fn handle(
        &self,
        req: StorageRequest,
        bulk: Bytes,
    ) -> Result<(StorageResponse, Bytes), RemoteError> {
        match req {
            StorageRequest::PutFragment { id, meta } => {
                let _fg = Foreground::new(&self.foreground);
                let len = bulk.len();
                self.blocking(move |s| s.put(id, meta, bulk))
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
                let st = self.blocking(|s| s.stat()).await?;
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
                    }),
                    Bytes::new(),
                ),
                Request::Storage(r) => match self.server.handle(r, bulk).await {
                    Ok((resp, bulk)) => (Response::Storage(resp), bulk),
                    Err(e) => (Response::Error(e), Bytes::new()),
                },
                Request::Manager(_) => (
                    Response::Error(RemoteError::NoRole("manager".into())),
                    Bytes::new(),
                ),
                Request::Client(_) => (
                    Response::Error(RemoteError::NoRole("client".into())),
                    Bytes::new(),
                ),
                Request::Admin(_) => (
                    Response::Error(RemoteError::NoRole("admin".into())),
                    Bytes::new(),
                ),
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
