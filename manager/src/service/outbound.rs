//! How a manager calls out: `CallbackSender` (lease callbacks to a client, over the
//! connection the client opened) and `Peers` (requests to other managers), each with its
//! QUIC implementation; tests give in-process ones (`crate::testing`).
//! Must not: retry, decide anything about leases or transactions, or touch the service's
//! state (the callers own those).

use crate::error::CallbackError;
use proto::ids::NodeId;
use proto::msg::{ClientCallback, ManagerRequest, ManagerResponse, RemoteError, Request, Response};
use proto::route::{CallError, ManagerClient};
use proto::transport::{BoxFuture, Transport};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// How a manager calls back clients (the real one goes over the client's own connection).
pub trait CallbackSender: Send + Sync + 'static {
    /// Sends `cb` to the client whose connection comes from `to`, and waits up to
    /// `timeout` for `CallbackDone`.
    fn send(
        &self,
        to: SocketAddr,
        cb: ClientCallback,
        timeout: Duration,
    ) -> BoxFuture<'_, Result<(), CallbackError>>;
}

/// Callbacks over QUIC, on the connection the client opened (`Transport::call_peer`).
pub struct QuicCallbacks(pub Arc<Transport>);

impl CallbackSender for QuicCallbacks {
    fn send(
        &self,
        to: SocketAddr,
        cb: ClientCallback,
        timeout: Duration,
    ) -> BoxFuture<'_, Result<(), CallbackError>> {
        Box::pin(async move {
            let req = Request::Client(cb);
            match self
                .0
                .call_peer(to, &req, bytes::Bytes::new(), timeout)
                .await
            {
                Ok((Response::CallbackDone, _)) => Ok(()),
                Ok((Response::Error(error), _)) => {
                    Err(CallbackError::Refused { client: to, error })
                }
                Ok((other, _)) => Err(CallbackError::Unexpected {
                    client: to,
                    answer: other.to_string(),
                }),
                Err(e) => Err(e.into()),
            }
        })
    }
}

/// How a manager calls other managers (the real one goes through the transport).
pub trait Peers: Send + Sync + 'static {
    fn call(
        &self,
        node: NodeId,
        req: ManagerRequest,
    ) -> BoxFuture<'_, Result<ManagerResponse, RemoteError>>;
}

/// Peers over QUIC.
pub struct ClientPeers(pub ManagerClient);

impl Peers for ClientPeers {
    fn call(
        &self,
        node: NodeId,
        req: ManagerRequest,
    ) -> BoxFuture<'_, Result<ManagerResponse, RemoteError>> {
        Box::pin(async move {
            self.0.call_node(node, req).await.map_err(|e| match e {
                CallError::Remote(r) => r,
                other => RemoteError::Unavailable(other.to_string()),
            })
        })
    }
}
