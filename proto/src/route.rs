//! Routing of manager requests through the manager map: which manager node serves a request.
//! Owns the choice of target only; retries on `NotOwner` follow the hint once.

use crate::config::ClusterConfig;
use crate::ids::{CallId, InodeId, NodeId};
use crate::live::LiveConfig;
use crate::msg::{
    Credentials, LeaseExtension, ManagerRequest, ManagerResponse, RemoteError, Request, Response,
};
use crate::transport::{Transport, TransportError};
use bytes::Bytes;
use std::sync::Arc;
use std::time::Duration;

/// Timeout of one metadata RPC.
pub const MANAGER_RPC_TIMEOUT: Duration = Duration::from_secs(30);

/// The inode whose slot decides which manager serves `req` (`None` for manager-to-manager
/// messages, which name their target explicitly).
pub fn routing_inode(req: &ManagerRequest) -> Option<InodeId> {
    use ManagerRequest::*;
    Some(match req {
        Lookup { parent, .. }
        | Create { parent, .. }
        | Unlink { parent, .. }
        | Rmdir { parent, .. } => *parent,
        Rename { parent, .. } => *parent,
        Link { new_parent, .. } => *new_parent,
        GetAttr { ino }
        | SetAttr { ino, .. }
        | ReadDir { ino, .. }
        | ReadLink { ino }
        | Open { ino, .. }
        | Release { ino, .. }
        | GetXattr { ino, .. }
        | SetXattr { ino, .. }
        | ListXattr { ino }
        | RemoveXattr { ino, .. }
        | GetExtents { ino, .. }
        | Fallocate { ino, .. }
        | AcquireWrite { ino, .. } => *ino,
        CopyRange { dst, .. } => *dst,
        CommitWrites { writes, .. } => writes.first()?.ino,
        ReleaseMany { inos, .. } => *inos.first()?,
        Sync
        | Counts
        | TxApply { .. }
        | TxOutcome { .. }
        | TxPrepare { .. }
        | TxFinish { .. }
        | DirMoveLock { .. }
        | Hello { .. }
        | Renew { .. }
        | Goodbye { .. }
        | LogHorizon { .. }
        | HolderHints { .. }
        | SealLog { .. }
        | LiveExtents { .. }
        | Relocate { .. } => return None,
    })
}

#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error(transparent)]
    Transport(#[from] TransportError),
    #[error(transparent)]
    Remote(RemoteError),
    #[error("unexpected answer from {node}: {what}")]
    Unexpected { node: NodeId, what: String },
    #[error("request {0} names no inode to route by")]
    Unroutable(String),
}

/// Calls managers, routing each request to the owner of its inode's slot, at the address
/// the config in force names for that manager's group (which a takeover moves).
#[derive(Clone)]
pub struct ManagerClient {
    live: Arc<LiveConfig>,
    transport: Arc<Transport>,
}

impl ManagerClient {
    /// A client by a fixed config.
    pub fn new(config: Arc<ClusterConfig>, transport: Arc<Transport>) -> ManagerClient {
        ManagerClient::following(LiveConfig::new(config), transport)
    }

    /// A client by the config a process follows (`proto::follow`): each call is sent where
    /// the config installed at that moment says.
    pub fn following(live: Arc<LiveConfig>, transport: Arc<Transport>) -> ManagerClient {
        ManagerClient { live, transport }
    }

    pub fn config(&self) -> Arc<ClusterConfig> {
        self.live.current()
    }

    /// The manager node serving `ino`.
    pub fn owner_of(&self, ino: InodeId) -> NodeId {
        self.live.current().slot_owner(ino.slot())
    }

    /// Sends `req` to the manager owning its routing inode.
    pub async fn call(&self, req: ManagerRequest) -> Result<ManagerResponse, CallError> {
        let ino = routing_inode(&req).ok_or_else(|| CallError::Unroutable(req.to_string()))?;
        self.call_node(self.owner_of(ino), req).await
    }

    /// Sends `req` to a given manager node.
    pub async fn call_node(
        &self,
        node: NodeId,
        req: ManagerRequest,
    ) -> Result<ManagerResponse, CallError> {
        self.call_node_leased(node, req).await.map(|(r, _)| r)
    }

    /// The connection to manager `node` and the ACKs received on it (see
    /// `Transport::acks_received`).
    pub fn acks_received(&self, node: NodeId) -> Option<(usize, u64)> {
        self.live
            .current()
            .node(node)
            .and_then(|n| self.transport.acks_received(n.group_address))
    }

    /// ACKs received on every connection of the transport (`Transport::ack_snapshot`).
    pub fn ack_snapshot(&self) -> Vec<crate::transport::AckMark> {
        self.transport.ack_snapshot()
    }

    /// Closes the connections of `before` that received no ACK since
    /// (`Transport::drop_unacknowledged`).
    pub fn drop_unacknowledged(&self, before: &[crate::transport::AckMark]) -> usize {
        self.transport.drop_unacknowledged(before)
    }

    /// Closes the connection to manager `node` (see `Transport::drop_connection`).
    pub fn drop_connection(&self, node: NodeId) {
        if let Some(n) = self.live.current().node(node) {
            self.transport.drop_connection(n.group_address);
        }
    }

    /// Sends `req` to a given manager node; also returns the volume lease the answer
    /// confirms, if any (`Response::ManagerLeased`).
    pub async fn call_node_leased(
        &self,
        node: NodeId,
        req: ManagerRequest,
    ) -> Result<(ManagerResponse, Option<LeaseExtension>), CallError> {
        self.call_node_leased_as(node, None, None, req).await
    }

    /// `call_node_leased` on behalf of a local process with `cred` (sent as
    /// `Request::ManagerAs`, which the manager checks permissions with), numbered `call`
    /// when it must not take effect twice (sent only with credentials).
    pub async fn call_node_leased_as(
        &self,
        node: NodeId,
        cred: Option<Credentials>,
        call: Option<CallId>,
        req: ManagerRequest,
    ) -> Result<(ManagerResponse, Option<LeaseExtension>), CallError> {
        let addr = self
            .live
            .current()
            .node(node)
            .map(|n| n.group_address)
            .ok_or_else(|| CallError::Unexpected {
                node,
                what: "node not in config".into(),
            })?;
        let (resp, _) = self
            .transport
            .call_timeout(
                addr,
                &match cred {
                    Some(cred) => Request::ManagerAs { cred, call, req },
                    None => Request::Manager(req),
                },
                Bytes::new(),
                MANAGER_RPC_TIMEOUT,
            )
            .await?;
        match resp {
            Response::Manager(r) => Ok((r, None)),
            Response::ManagerLeased(r, l) => Ok((r, Some(l))),
            Response::Error(e) => Err(CallError::Remote(e)),
            other => Err(CallError::Unexpected {
                node,
                what: other.to_string(),
            }),
        }
    }
}
