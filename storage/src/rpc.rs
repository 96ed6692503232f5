//! Typed storage RPCs over `proto::transport::Transport`: one method per `StorageRequest`.
//! Owns timeouts and the decoding of answers; it must not retry or pick servers (the log
//! does). Remote errors (`Corrupt`, `NotFound`, ...) stay distinguishable from a server
//! that cannot be reached (`ClientCallError::is_unavailable`).

pub use crate::error::ClientCallError;
use bytes::Bytes;
use proto::ids::{FragmentId, LogId, SegmentId};
use proto::msg::{
    FragmentInfo, FragmentMeta, Request, Response, ScrubReport, StorageRequest, StorageResponse,
    StorageStat,
};
use proto::transport::Transport;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// Timeout of small control RPCs (list, stat, delete).
pub const CONTROL_TIMEOUT: Duration = Duration::from_secs(5);
/// Timeout of a fragment put (bulk transfer plus fsync).
pub const PUT_TIMEOUT: Duration = Duration::from_secs(60);

/// Timeout of a read of `len` bytes: 1 s plus 1 s per 64 MiB.
pub fn read_timeout(len: u64) -> Duration {
    Duration::from_secs(1) + Duration::from_nanos(len.saturating_mul(15))
}

/// Calls storage servers.
#[derive(Clone)]
pub struct StorageClient {
    transport: Arc<Transport>,
}

impl StorageClient {
    pub fn new(transport: Arc<Transport>) -> StorageClient {
        StorageClient { transport }
    }

    async fn call(
        &self,
        addr: SocketAddr,
        req: StorageRequest,
        bulk: Bytes,
        timeout: Duration,
    ) -> Result<(StorageResponse, Bytes), ClientCallError> {
        match self
            .transport
            .call_timeout(addr, &Request::Storage(req), bulk, timeout)
            .await?
        {
            (Response::Storage(r), bulk) => Ok((r, bulk)),
            (Response::Error(e), _) => Err(ClientCallError::Remote(e)),
            (other, _) => Err(ClientCallError::Unexpected(format!(
                "{addr} answered {other}"
            ))),
        }
    }

    /// Stores a fragment; returns once the server has made it durable.
    pub async fn put_fragment(
        &self,
        addr: SocketAddr,
        id: FragmentId,
        meta: FragmentMeta,
        payload: Bytes,
    ) -> Result<(), ClientCallError> {
        match self
            .call(
                addr,
                StorageRequest::PutFragment { id, meta },
                payload,
                PUT_TIMEOUT,
            )
            .await?
        {
            (StorageResponse::Stored, _) => Ok(()),
            (other, _) => Err(ClientCallError::Unexpected(format!(
                "PutFragment answered {other:?}"
            ))),
        }
    }

    /// Reads `len` bytes at `offset` of a fragment (timeout from `read_timeout`).
    pub async fn read_range(
        &self,
        addr: SocketAddr,
        id: FragmentId,
        offset: u32,
        len: u32,
    ) -> Result<Bytes, ClientCallError> {
        self.read_range_timeout(addr, id, offset, len, read_timeout(len as u64))
            .await
    }

    /// `read_range` with an explicit timeout.
    pub async fn read_range_timeout(
        &self,
        addr: SocketAddr,
        id: FragmentId,
        offset: u32,
        len: u32,
        timeout: Duration,
    ) -> Result<Bytes, ClientCallError> {
        match self
            .call(
                addr,
                StorageRequest::ReadRange { id, offset, len },
                Bytes::new(),
                timeout,
            )
            .await?
        {
            (StorageResponse::Range, bytes) if bytes.len() == len as usize => Ok(bytes),
            (StorageResponse::Range, bytes) => Err(ClientCallError::Unexpected(format!(
                "asked {len} bytes of {id}, got {}",
                bytes.len()
            ))),
            (other, _) => Err(ClientCallError::Unexpected(format!(
                "ReadRange answered {other:?}"
            ))),
        }
    }

    /// Deletes a fragment; `Ok(false)` if the server did not hold it.
    pub async fn delete(&self, addr: SocketAddr, id: FragmentId) -> Result<bool, ClientCallError> {
        match self
            .call(
                addr,
                StorageRequest::Delete { id },
                Bytes::new(),
                CONTROL_TIMEOUT,
            )
            .await?
        {
            (StorageResponse::Deleted { existed }, _) => Ok(existed),
            (other, _) => Err(ClientCallError::Unexpected(format!(
                "Delete answered {other:?}"
            ))),
        }
    }

    pub async fn list_log(
        &self,
        addr: SocketAddr,
        log: LogId,
    ) -> Result<Vec<FragmentInfo>, ClientCallError> {
        match self
            .call(
                addr,
                StorageRequest::ListLog { log },
                Bytes::new(),
                CONTROL_TIMEOUT,
            )
            .await?
        {
            (StorageResponse::Fragments(f), _) => Ok(f),
            (other, _) => Err(ClientCallError::Unexpected(format!(
                "ListLog answered {other:?}"
            ))),
        }
    }

    pub async fn list_logs(&self, addr: SocketAddr) -> Result<Vec<LogId>, ClientCallError> {
        match self
            .call(
                addr,
                StorageRequest::ListLogs,
                Bytes::new(),
                CONTROL_TIMEOUT,
            )
            .await?
        {
            (StorageResponse::Logs(l), _) => Ok(l),
            (other, _) => Err(ClientCallError::Unexpected(format!(
                "ListLogs answered {other:?}"
            ))),
        }
    }

    pub async fn stat(&self, addr: SocketAddr) -> Result<StorageStat, ClientCallError> {
        match self
            .call(addr, StorageRequest::Stat, Bytes::new(), CONTROL_TIMEOUT)
            .await?
        {
            (StorageResponse::Stat(s), _) => Ok(s),
            (other, _) => Err(ClientCallError::Unexpected(format!(
                "Stat answered {other:?}"
            ))),
        }
    }

    /// The fragments of one segment held by the server at `addr`.
    pub async fn locate(
        &self,
        addr: SocketAddr,
        log: LogId,
        segment: SegmentId,
    ) -> Result<Vec<FragmentInfo>, ClientCallError> {
        match self
            .call(
                addr,
                StorageRequest::Locate { log, segment },
                Bytes::new(),
                CONTROL_TIMEOUT,
            )
            .await?
        {
            (StorageResponse::Located(f), _) => Ok(f),
            (other, _) => Err(ClientCallError::Unexpected(format!(
                "Locate answered {other:?}"
            ))),
        }
    }

    /// Starts (`on`) or stops draining the server; answers whether it drains now.
    pub async fn drain(&self, addr: SocketAddr, on: bool) -> Result<bool, ClientCallError> {
        match self
            .call(
                addr,
                StorageRequest::Drain { on },
                Bytes::new(),
                CONTROL_TIMEOUT,
            )
            .await?
        {
            (StorageResponse::Draining(d), _) => Ok(d),
            (other, _) => Err(ClientCallError::Unexpected(format!(
                "Drain answered {other:?}"
            ))),
        }
    }

    /// Asks the server to start a scrub pass now (`now`) or only reports its scrub state.
    pub async fn scrub(&self, addr: SocketAddr, now: bool) -> Result<ScrubReport, ClientCallError> {
        let req = if now {
            StorageRequest::ScrubNow
        } else {
            StorageRequest::ScrubStatus
        };
        match self.call(addr, req, Bytes::new(), CONTROL_TIMEOUT).await? {
            (StorageResponse::Scrub(r), _) => Ok(r),
            (other, _) => Err(ClientCallError::Unexpected(format!(
                "Scrub answered {other:?}"
            ))),
        }
    }
}
