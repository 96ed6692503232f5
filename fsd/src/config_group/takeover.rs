//! Automatic takeover, the member's shell around `host_leases` (issue 13): answering a
//! host's renewal (`ConfigGroupRequest::Renew`), the leader's watch that moves the groups of
//! a silent host, and a chosen host's adoption of a group (`ConfigGroupRequest::Adopt`: it
//! picks the address it will serve the group at and proposes the takeover).
//!
//! Owns the wire bodies of those two requests. Must not: decide anything itself (the pure
//! table does, and the compare-and-set on the epoch decides between racing proposals), or
//! serve a group (the node's `hosting` does, once the takeover is committed and installed).

use super::host_leases::{HostLeases, Move};
use super::{leads, propose_anywhere, raft_id, read_anywhere, Command, GroupRaft, GroupState};
use bytes::Bytes;
use proto::config::ClusterConfig;
use proto::ids::NodeId;
use proto::msg::{ConfigGroupRequest, Request, Response};
use proto::transport::Transport;
use serde::{Deserialize, Serialize};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// How often the leader looks for silent hosts.
const WATCH_EVERY: Duration = Duration::from_millis(250);

/// `Adopt`'s body: the group to take over, from the committed config of `expect_epoch`.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct Adopt {
    pub group: NodeId,
    pub expect_epoch: u64,
}

/// The member's table, shared by the request handlers and the watch.
pub(super) type Shared = Arc<Mutex<HostLeases>>;

fn lock(l: &Shared) -> std::sync::MutexGuard<'_, HostLeases> {
    l.lock().unwrap_or_else(|e| e.into_inner())
}

/// An address free now on `ip` (a UDP port the system hands out), for a hosted group's
/// endpoint.
pub fn free_port_on(ip: IpAddr) -> std::io::Result<SocketAddr> {
    let probe = std::net::UdpSocket::bind((ip, 0))?;
    Ok(SocketAddr::new(ip, probe.local_addr()?.port()))
}

/// A renewal from `host` at this member: recorded; granted only by the leader, after it
/// confirmed its leadership with a majority (bounded by `timeout`).
pub(super) async fn renewal(
    raft: &GroupRaft,
    leases: &Shared,
    host: NodeId,
    timeout: Duration,
) -> Result<(), String> {
    lock(leases).arrived(host, Instant::now())?;
    match tokio::time::timeout(timeout, raft.ensure_linearizable()).await {
        Ok(Ok(_)) => lock(leases).grantable(host),
        Ok(Err(e)) => Err(format!("leadership not confirmed: {e}")),
        Err(_) => Err(format!("leadership not confirmed within {timeout:?}")),
    }
}

/// Encodes an answer to `Renew` or `Adopt`.
pub(super) fn answer<T: Serialize>(r: &Result<T, String>) -> (Response, Bytes) {
    match postcard::to_allocvec(r) {
        Ok(b) => (Response::ConfigGroup, Bytes::from(b)),
        Err(e) => (
            Response::Error(proto::msg::RemoteError::Io(format!(
                "cannot encode the answer: {e}"
            ))),
            Bytes::new(),
        ),
    }
}

/// Sends `kind` with `body` to the member at `addr`; its decoded answer.
pub(super) async fn ask<T: serde::de::DeserializeOwned>(
    transport: &Transport,
    addr: SocketAddr,
    kind: ConfigGroupRequest,
    body: Vec<u8>,
    timeout: Duration,
) -> Result<T, String> {
    match transport
        .call_timeout(
            addr,
            &Request::ConfigGroup(kind),
            Bytes::from(body),
            timeout,
        )
        .await
    {
        Ok((Response::ConfigGroup, bulk)) => {
            let r: Result<T, String> = postcard::from_bytes(&bulk).map_err(|e| {
                format!("{addr} answered {kind:?} with bytes that do not decode: {e}")
            })?;
            r
        }
        Ok((other, _)) => Err(format!("{addr} answered {kind:?} with {other:?}")),
        Err(e) => Err(format!("{addr}: {e}")),
    }
}

/// What a member needs to adopt a group and to watch the hosts.
#[derive(Clone)]
pub(super) struct Ctx {
    pub raft: GroupRaft,
    pub transport: Arc<Transport>,
    pub me: NodeId,
    pub applied: watch::Receiver<Arc<GroupState>>,
    /// The cluster directory (configs are built relative to it).
    pub dir: PathBuf,
    pub timeout: Duration,
}

/// This member's node takes `group` over: it checks the committed config is still the one
/// the leader decided by, picks an address on its own machine and proposes the takeover
/// (through the leader). The committed epoch.
pub(super) async fn adopt(ctx: &Ctx, group: NodeId, expect_epoch: u64) -> Result<u64, String> {
    let committed = read_anywhere(&ctx.raft, &ctx.transport, ctx.me, &ctx.applied, ctx.timeout)
        .await
        .map_err(|e| e.to_string())?
        .ok_or("the config group holds no config yet")?;
    if committed.epoch != expect_epoch {
        return Err(format!(
            "the committed config is at epoch {}, the move was decided at {expect_epoch}",
            committed.epoch
        ));
    }
    let config =
        ClusterConfig::from_file(&ctx.dir, committed.clone()).map_err(|e| e.to_string())?;
    let g = config.node(group).ok_or(format!("no node {group}"))?;
    let me = config.node(ctx.me).ok_or(format!("no node {}", ctx.me))?;
    if g.host == ctx.me {
        return Ok(committed.epoch);
    }
    let at = free_port_on(me.address.ip()).map_err(|e| format!("no free port: {e}"))?;
    let file = committed
        .takeover(&g.name, &me.name, at)
        .map_err(|e| e.to_string())?;
    let cmd = Command::Replace { expect_epoch, file };
    let epoch = propose_anywhere(&ctx.raft, &ctx.transport, ctx.me, &cmd, ctx.timeout)
        .await
        .map_err(|e| e.to_string())?;
    tracing::warn!(node = %ctx.me, group = %g.name, at = %at, epoch, "took over the manager group of a host whose membership lease ran out");
    Ok(epoch)
}

/// The leader's watch (every member runs it; it acts only while leading and while the
/// committed config turns automatic takeover on): moves the groups of silent hosts, one at
/// a time, by asking the chosen manager to adopt each.
pub(super) async fn watch_hosts(ctx: Ctx, leases: Shared) {
    let mut tick = tokio::time::interval(WATCH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(file) = ctx.applied.borrow().file.clone() else {
            continue;
        };
        if !file.manager.auto_takeover {
            lock(&leases).follow();
            continue;
        }
        let config = match ClusterConfig::from_file(&ctx.dir, file) {
            Ok(c) => c,
            Err(e) => {
                proto::warn_limited!(node = %ctx.me, "the committed config does not load: {e}");
                continue;
            }
        };
        let now = Instant::now();
        let decided = {
            let mut l = lock(&leases);
            l.set_lease(config.file.manager.membership_lease());
            if leads(&ctx.raft, ctx.me) && is_leader_state(&ctx.raft) {
                l.lead(now);
                l.decide(&config, now)
            } else {
                l.follow();
                None
            }
        };
        let Some(m) = decided else {
            continue;
        };
        let name = |id: NodeId| config.node(id).map_or("?".to_string(), |n| n.name.clone());
        tracing::warn!(node = %ctx.me, group = %name(m.group), from = %name(m.from), to = %name(m.to), epoch = config.file.epoch, "membership lease of the group's host ran out: handing the group to a live manager");
        let r = ask_to_adopt(&ctx, &config, m).await;
        if let Err(e) = r {
            tracing::warn!(node = %ctx.me, group = %name(m.group), to = %name(m.to), "the takeover was not made (asked again later): {e}");
        }
    }
}

fn is_leader_state(raft: &GroupRaft) -> bool {
    raft.metrics().borrow().state == openraft::ServerState::Leader
}

async fn ask_to_adopt(ctx: &Ctx, config: &ClusterConfig, m: Move) -> Result<u64, String> {
    let epoch = config.file.epoch;
    if m.to == ctx.me {
        return adopt(ctx, m.group, epoch).await;
    }
    let to = config.node(m.to).ok_or(format!("no node {}", m.to))?;
    let body = postcard::to_allocvec(&Adopt {
        group: m.group,
        expect_epoch: epoch,
    })
    .map_err(|e| e.to_string())?;
    ask(
        &ctx.transport,
        to.address,
        ConfigGroupRequest::Adopt,
        body,
        ctx.timeout * 2,
    )
    .await
}

/// The addresses of the group's members other than `me`, from raft's membership.
pub(super) fn member_addresses(raft: &GroupRaft, me: NodeId) -> Vec<SocketAddr> {
    let m = raft.metrics().borrow().membership_config.clone();
    m.membership()
        .nodes()
        .filter(|(id, _)| **id != raft_id(me))
        .filter_map(|(_, n)| n.addr.parse().ok())
        .collect()
}
