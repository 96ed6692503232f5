//! Asking the leader from a member that does not lead: a proposal (`offer` of a member's
//! `cluster.toml`) and a linearizable read of the committed config (the start-time check of
//! a member that may have missed commits while it was down).
//!
//! Owns the two `ConfigGroupRequest`s' bodies and answers (postcard in the bulk bytes) and
//! finding the leader's address in raft's membership. Must not: decide anything (the
//! leader's compare-and-set does), or retry (callers decide when to ask again).

use super::command::{Command, Refused};
use super::{node_of, raft_id, toml_file, GroupRaft, RequestError};
use bytes::Bytes;
use proto::config::ClusterFile;
use proto::ids::NodeId;
use proto::msg::{ConfigGroupRequest, RemoteError as WireError, Request, Response};
use proto::transport::Transport;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Why the leader did not do what a member forwarded, as sent back.
#[derive(Debug, Serialize, Deserialize)]
pub(super) enum Declined {
    Refused(Refused),
    NotLeader(Option<NodeId>),
    Failed(String),
}

impl Declined {
    pub(super) fn of(e: RequestError) -> Self {
        match e {
            RequestError::Refused(r) => Declined::Refused(r),
            RequestError::NotLeader { leader, .. } => Declined::NotLeader(leader),
            other => Declined::Failed(other.to_string()),
        }
    }

    fn into_error(self, asked: NodeId) -> RequestError {
        match self {
            Declined::Refused(r) => RequestError::Refused(r),
            Declined::NotLeader(leader) => RequestError::NotLeader { me: asked, leader },
            Declined::Failed(why) => RequestError::Forward(format!("{asked}: {why}")),
        }
    }
}

/// The leader's answer to `ReadCommitted`.
#[derive(Serialize, Deserialize)]
pub(super) struct Committed {
    #[serde(with = "toml_file::opt")]
    pub file: Option<ClusterFile>,
}

/// The answer to a forwarded request, encoded for `Response::ConfigGroup`.
pub(super) fn answer<T: Serialize>(r: Result<T, RequestError>) -> (Response, Bytes) {
    let r = r.map_err(Declined::of);
    match postcard::to_allocvec(&r) {
        Ok(b) => (Response::ConfigGroup, Bytes::from(b)),
        Err(e) => (
            Response::Error(WireError::Io(format!("cannot encode the answer: {e}"))),
            Bytes::new(),
        ),
    }
}

/// The command a `Propose` carries.
pub(super) fn command(bulk: &[u8]) -> Result<Command, String> {
    postcard::from_bytes(bulk).map_err(|e| format!("Propose does not decode: {e}"))
}

/// The leader this member knows of, other than itself, with its address.
fn leader(raft: &GroupRaft, me: NodeId) -> Option<(NodeId, String)> {
    let m = raft.metrics().borrow().clone();
    let l = m.current_leader?;
    if l == raft_id(me) {
        return None;
    }
    let addr = m.membership_config.membership().get_node(&l)?.addr.clone();
    Some((node_of(l), addr))
}

/// Sends `kind` with `body` to the leader and decodes its answer, within `timeout`.
/// `NotLeader` when no other member is known to lead.
async fn at_leader<T: DeserializeOwned>(
    raft: &GroupRaft,
    transport: &Transport,
    me: NodeId,
    kind: ConfigGroupRequest,
    body: Vec<u8>,
    timeout: Duration,
) -> Result<T, RequestError> {
    let Some((leader, addr)) = leader(raft, me) else {
        let known = raft.metrics().borrow().current_leader.map(node_of);
        return Err(RequestError::NotLeader { me, leader: known });
    };
    let addr = addr
        .parse()
        .map_err(|e| RequestError::Forward(format!("leader {leader} address {addr:?}: {e}")))?;
    let r = transport
        .call_timeout(
            addr,
            &Request::ConfigGroup(kind),
            Bytes::from(body),
            timeout,
        )
        .await;
    match r {
        Ok((Response::ConfigGroup, bulk)) => {
            let r: Result<T, Declined> = postcard::from_bytes(&bulk).map_err(|e| {
                RequestError::Forward(format!(
                    "{leader} answered {kind:?} with bytes that do not decode: {e}"
                ))
            })?;
            r.map_err(|d| d.into_error(leader))
        }
        Ok((other, _)) => Err(RequestError::Forward(format!(
            "{leader} answered {kind:?} with {other:?}"
        ))),
        Err(e) => Err(RequestError::Forward(format!("{leader}: {e}"))),
    }
}

/// Proposes `cmd` at the leader (this member does not lead); the committed epoch.
pub(super) async fn propose(
    raft: &GroupRaft,
    transport: &Transport,
    me: NodeId,
    cmd: &Command,
    timeout: Duration,
) -> Result<u64, RequestError> {
    let body = postcard::to_allocvec(cmd)
        .map_err(|e| RequestError::Forward(format!("cannot encode {cmd}: {e}")))?;
    at_leader(
        raft,
        transport,
        me,
        ConfigGroupRequest::Propose,
        body,
        timeout,
    )
    .await
}

/// The committed config as the leader confirms it with a majority (this member does not
/// lead).
pub(super) async fn read(
    raft: &GroupRaft,
    transport: &Transport,
    me: NodeId,
    timeout: Duration,
) -> Result<Option<ClusterFile>, RequestError> {
    let c: Committed = at_leader(
        raft,
        transport,
        me,
        ConfigGroupRequest::ReadCommitted,
        Vec::new(),
        timeout,
    )
    .await?;
    Ok(c.file)
}
