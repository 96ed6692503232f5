//! openraft's RPCs between config group members over Shoal's QUIC transport.
//!
//! Each RPC is one `Request::ConfigGroup(kind)` call on the node's own `Transport` (mutual
//! TLS; the transport checks that the node answering at a member's address is that node,
//! and the receiver's `authz` admits only node identities). The openraft request travels
//! postcard-encoded in the frame's bulk bytes; the answer, `Response::ConfigGroup`, carries
//! the postcard-encoded `Result` of the receiver's raft in its bulk bytes. Snapshots go
//! whole (`FullSnapshot`), never in chunks. Must not: retry on its own (openraft does), or
//! look at what the entries mean.

use super::RaftId;
use super::TypeConfig;
use bytes::Bytes;
use openraft::error::{
    Fatal, InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, ReplicationClosed,
    StreamingError, Timeout, Unreachable,
};
use openraft::network::{Backoff, RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    SnapshotResponse, VoteRequest, VoteResponse,
};
use openraft::{BasicNode, RPCTypes, Raft, Snapshot, SnapshotMeta, Vote};
use proto::msg::{ConfigGroupRequest, RemoteError as WireError, Request, Response};
use proto::transport::{Transport, TransportError};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::io::Cursor;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long the leader waits before it calls an unreachable member again: doubling from
/// the first to the last, then the last until a call succeeds (a member down for long is
/// tried, and logged about by openraft, every 2 s rather than every 0.5 s).
const BACKOFF_FIRST: Duration = Duration::from_millis(250);
const BACKOFF_DOUBLINGS: u32 = 3;

/// When every call to a member has timed out for this long, the connection to it is
/// dropped so that the next call dials afresh (a member restarted on the same address may
/// leave the old connection silently dead until QUIC's idle timeout). Long enough that a
/// member that is merely slow (a heartbeat's timeout is short) does not lose the connection
/// its node shares with the other roles' calls.
const REDIAL_AFTER: Duration = Duration::from_secs(5);

/// The whole snapshot as sent in one `FullSnapshot` call.
#[derive(Serialize, Deserialize)]
struct FullSnapshot {
    vote: Vote<RaftId>,
    meta: SnapshotMeta<RaftId, BasicNode>,
    #[serde(with = "serde_bytes")]
    data: Vec<u8>,
}

/// Makes a client per member for openraft.
pub struct Network {
    pub(super) me: RaftId,
    pub(super) transport: Arc<Transport>,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = MemberClient;

    async fn new_client(&mut self, target: RaftId, node: &BasicNode) -> MemberClient {
        MemberClient {
            me: self.me,
            target,
            addr: node.addr.parse().map_err(|e| format!("{e}")),
            transport: self.transport.clone(),
            timing_out_since: None,
        }
    }
}

/// Calls one member.
pub struct MemberClient {
    me: RaftId,
    target: RaftId,
    /// The member's address from the group membership (an error if it does not parse).
    addr: Result<SocketAddr, String>,
    transport: Arc<Transport>,
    /// Since when every call has timed out (`None` after an answer).
    timing_out_since: Option<Instant>,
}

/// Why a call did not produce the remote raft's answer.
enum CallError {
    Unreachable(Unreachable),
    Timeout(Duration),
    Network(NetworkError),
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Message(String);

impl MemberClient {
    /// One call: the request encoded into the bulk bytes, the answer decoded from them.
    async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &mut self,
        kind: ConfigGroupRequest,
        req: &Req,
        timeout: Duration,
    ) -> Result<Resp, CallError> {
        let addr = self.addr.clone().map_err(|e| {
            CallError::Unreachable(Unreachable::new(&Message(format!(
                "member {} has no usable address: {e}",
                self.target
            ))))
        })?;
        let body =
            postcard::to_allocvec(req).map_err(|e| CallError::Network(NetworkError::new(&e)))?;
        let r = self
            .transport
            .call_timeout(
                addr,
                &Request::ConfigGroup(kind),
                Bytes::from(body),
                timeout,
            )
            .await;
        match r {
            Ok((Response::ConfigGroup, bulk)) => {
                self.timing_out_since = None;
                postcard::from_bytes(&bulk).map_err(|e| {
                    CallError::Network(NetworkError::new(&Message(format!(
                        "member {} answered {kind:?} with bytes that do not decode: {e}",
                        self.target
                    ))))
                })
            }
            Ok((Response::Error(e @ (WireError::NoRole(_) | WireError::Unavailable(_))), _)) => {
                // Not (yet) running its group member: like a node that is down.
                Err(CallError::Unreachable(Unreachable::new(&e)))
            }
            Ok((other, _)) => Err(CallError::Network(NetworkError::new(&Message(format!(
                "member {} answered {kind:?} with {other}",
                self.target
            ))))),
            Err(TransportError::Timeout { timeout, .. }) => {
                let since = *self.timing_out_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= REDIAL_AFTER {
                    tracing::info!(member = self.target, %addr, "no answer for {:?}: dialling the member afresh", since.elapsed());
                    self.timing_out_since = None;
                    self.transport.drop_connection(addr);
                }
                Err(CallError::Timeout(timeout))
            }
            Err(e) if e.is_unavailable() => Err(CallError::Unreachable(Unreachable::new(&e))),
            Err(e) => Err(CallError::Network(NetworkError::new(&e))),
        }
    }

    fn rpc_error<E: std::error::Error>(
        &self,
        action: RPCTypes,
        e: CallError,
    ) -> RPCError<RaftId, BasicNode, E> {
        match e {
            CallError::Unreachable(u) => RPCError::Unreachable(u),
            CallError::Network(n) => RPCError::Network(n),
            CallError::Timeout(timeout) => RPCError::Timeout(Timeout {
                action,
                id: self.me,
                target: self.target,
                timeout,
            }),
        }
    }

    /// A raft call whose answer is `Result<Resp, RaftError<E>>` on the remote side.
    async fn raft_call<Req: Serialize, Resp: DeserializeOwned, E>(
        &mut self,
        kind: ConfigGroupRequest,
        action: RPCTypes,
        req: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<RaftId, BasicNode, RaftError<RaftId, E>>>
    where
        E: std::error::Error + DeserializeOwned,
    {
        match self
            .call::<Req, Result<Resp, RaftError<RaftId, E>>>(kind, req, option.hard_ttl())
            .await
        {
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(e)) => Err(RPCError::RemoteError(RemoteError::new(self.target, e))),
            Err(e) => Err(self.rpc_error(action, e)),
        }
    }
}

impl RaftNetwork<TypeConfig> for MemberClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<RaftId>, RPCError<RaftId, BasicNode, RaftError<RaftId>>> {
        self.raft_call(
            ConfigGroupRequest::AppendEntries,
            RPCTypes::AppendEntries,
            &rpc,
            &option,
        )
        .await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<RaftId>,
        option: RPCOption,
    ) -> Result<VoteResponse<RaftId>, RPCError<RaftId, BasicNode, RaftError<RaftId>>> {
        self.raft_call(ConfigGroupRequest::Vote, RPCTypes::Vote, &rpc, &option)
            .await
    }

    /// Not used: `full_snapshot` sends snapshots whole.
    async fn install_snapshot(
        &mut self,
        _rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<RaftId>,
        RPCError<RaftId, BasicNode, RaftError<RaftId, InstallSnapshotError>>,
    > {
        Err(RPCError::Network(NetworkError::new(&Message(
            "the config group sends snapshots whole (FullSnapshot), not in chunks".into(),
        ))))
    }

    fn backoff(&self) -> Backoff {
        Backoff::new((0..).map(|i: u32| BACKOFF_FIRST * (1 << i.min(BACKOFF_DOUBLINGS))))
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote<RaftId>,
        snapshot: Snapshot<TypeConfig>,
        cancel: impl Future<Output = ReplicationClosed> + Send + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<RaftId>, StreamingError<TypeConfig, Fatal<RaftId>>> {
        let req = FullSnapshot {
            vote,
            meta: snapshot.meta,
            data: snapshot.snapshot.into_inner(),
        };
        let call = self.call::<FullSnapshot, Result<SnapshotResponse<RaftId>, Fatal<RaftId>>>(
            ConfigGroupRequest::FullSnapshot,
            &req,
            option.hard_ttl(),
        );
        let r = tokio::select! {
            r = call => r,
            closed = cancel => return Err(StreamingError::Closed(closed)),
        };
        match r {
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(fatal)) => Err(StreamingError::RemoteError(RemoteError::new(
                self.target,
                fatal,
            ))),
            Err(CallError::Unreachable(u)) => Err(StreamingError::Unreachable(u)),
            Err(CallError::Network(n)) => Err(StreamingError::Network(n)),
            Err(CallError::Timeout(timeout)) => Err(StreamingError::Timeout(Timeout {
                action: RPCTypes::InstallSnapshot,
                id: self.me,
                target: self.target,
                timeout,
            })),
        }
    }
}

/// Answers a member's RPC with this member's raft: `(Response::ConfigGroup, encoded
/// result)`, or an `Invalid` error for bytes that do not decode.
pub async fn serve(
    raft: &Raft<TypeConfig>,
    kind: ConfigGroupRequest,
    bulk: Bytes,
) -> (Response, Bytes) {
    fn answer<T: Serialize>(v: &T) -> (Response, Bytes) {
        match postcard::to_allocvec(v) {
            Ok(b) => (Response::ConfigGroup, Bytes::from(b)),
            Err(e) => (
                Response::Error(WireError::Io(format!("cannot encode the raft answer: {e}"))),
                Bytes::new(),
            ),
        }
    }
    fn bad(kind: ConfigGroupRequest, e: postcard::Error) -> (Response, Bytes) {
        let msg = format!("config group {kind:?} does not decode: {e}");
        (Response::Error(WireError::Invalid(msg)), Bytes::new())
    }
    match kind {
        ConfigGroupRequest::AppendEntries => {
            match postcard::from_bytes::<AppendEntriesRequest<TypeConfig>>(&bulk) {
                Ok(req) => answer(&raft.append_entries(req).await),
                Err(e) => bad(kind, e),
            }
        }
        ConfigGroupRequest::Vote => match postcard::from_bytes::<VoteRequest<RaftId>>(&bulk) {
            Ok(req) => answer(&raft.vote(req).await),
            Err(e) => bad(kind, e),
        },
        ConfigGroupRequest::FullSnapshot => match postcard::from_bytes::<FullSnapshot>(&bulk) {
            Ok(s) => {
                let snapshot = Snapshot {
                    meta: s.meta,
                    snapshot: Box::new(Cursor::new(s.data)),
                };
                answer(&raft.install_full_snapshot(s.vote, snapshot).await)
            }
            Err(e) => bad(kind, e),
        },
        ConfigGroupRequest::Propose
        | ConfigGroupRequest::ReadCommitted
        | ConfigGroupRequest::Renew
        | ConfigGroupRequest::Adopt => (
            Response::Error(WireError::Invalid(format!(
                "{kind:?} is answered by the member, not by raft"
            ))),
            Bytes::new(),
        ),
    }
}
