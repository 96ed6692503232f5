//! The config group: the cluster config kept by a raft group (openraft) on the manager
//! nodes, so that every member agrees on one committed config and its epoch (DESIGN §8).
//!
//! - `ConfigGroup` (this file) is a member's handle: start (opening its state, and
//!   initializing the group on the first start of a fresh cluster), `propose` a new config by
//!   compare-and-set on the epoch, `read` the committed config (confirmed with a majority) or
//!   `current` (as applied here), the leader and raft metrics.
//! - `log_store` holds the durable raft log, vote and committed index; `state_machine` the
//!   applied config and its snapshots; `record` the on-disk framing and fsyncs; `network`
//!   the raft RPCs over the node's QUIC transport.
//! - `host_leases` (pure) and `takeover` (its shell): the manager hosts' membership leases
//!   and, with `[manager] auto_takeover`, the leader's hand-over of a silent host's groups.
//!
//! Members are the manager nodes, filled up to three with storage nodes
//! (`ClusterConfig::config_group_members`), by their config `NodeId` (the raft node id,
//! `RaftId`, is `NodeId.0` widened to u64), at the addresses `cluster.toml` gives them when
//! the group is initialized; afterwards the leader keeps raft's membership equal to the
//! committed config's (`membership`). A member's state is `STATE_DIR/config-group/` (`log`, `vote`,
//! `committed`, `snapshot`). The first start of a fresh cluster: the lowest-id member, finding no
//! state of its own, initializes the group with the members; then whichever member
//! leads first proposes the contents of its `cluster.toml` (`Command::Seed`, refused once a
//! config is committed), so the group's first epoch is the file's. A restart finds its state
//! and never initializes again. A member whose file is exactly one epoch ahead of the
//! committed config (`shoal node add` wrote it) proposes it, through the leader when it does
//! not lead (`offer`; `forward` carries proposals and confirmed reads to the leader).
//!
//! What reads the group: a manager starts serving only once its own `cluster.toml` does not
//! contradict the committed config, as the leader confirms it when one answers
//! (`agreement`, rule in `standing`); a node whose file
//! gives other slots, nodes or erasure at the committed epoch or older does not serve.
//! What it must not do yet: every role still runs by the `ClusterConfig` loaded from
//! `cluster.toml` at start (a running node does not follow a newer committed config), and
//! requests carry no epoch. A node starts a member only if its own `cluster.toml` names it
//! one.

mod command;
mod forward;
mod host_leases;
mod log_store;
mod membership;
mod network;
mod record;
mod standing;
mod state_machine;
mod takeover;
mod toml_file;

#[cfg(test)]
mod store_test;

pub use command::{ApplyResult, Command, Refused};
pub use log_store::LogStore;
pub use membership::{current as membership_now, Current as Membership};
pub use record::RecordError;
pub use standing::{standing, Standing};
pub use state_machine::{GroupState, StateMachine};
pub use takeover::free_port_on;

use bytes::Bytes;
use openraft::error::{CheckIsLeaderError, ClientWriteError, RaftError};
use openraft::{BasicNode, Config, RaftMetrics, SnapshotPolicy};
use proto::config::{ClusterConfig, ClusterFile, Role};
use proto::ids::NodeId;
use proto::msg::{ConfigGroupRequest, Response};
use proto::transport::Transport;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// A member's raft node id: its config `NodeId.0`, the same number. Widened to u64 because
/// openraft's storage conformance suite (`openraft::testing::Suite`, run against this
/// store in `store_test`) builds its node ids from u64; `node_of` narrows it back.
pub type RaftId = u64;

/// How long `offer` waits before it asks an unreachable leader again.
const OFFER_RETRY: Duration = Duration::from_secs(1);

/// The config `NodeId` of a member's raft id. Members are made only from config node ids
/// (`members`), so every raft id fits.
pub fn node_of(id: RaftId) -> NodeId {
    NodeId(u32::try_from(id).unwrap_or(u32::MAX))
}

/// The raft id of a config node.
pub fn raft_id(node: NodeId) -> RaftId {
    RaftId::from(node.0)
}

openraft::declare_raft_types!(
    /// The config group's raft types: node ids are the config's `NodeId.0` (`RaftId`).
    pub TypeConfig:
        D = Command,
        R = ApplyResult,
        NodeId = RaftId,
        Node = BasicNode,
        SnapshotData = std::io::Cursor<Vec<u8>>,
);

pub type GroupRaft = openraft::Raft<TypeConfig>;

/// Timing and log bounds of a member.
#[derive(Clone, Debug)]
pub struct GroupOptions {
    /// The leader's heartbeat, and the timeout of one AppendEntries call.
    pub heartbeat: Duration,
    /// A follower that hears no leader for a random time in this range starts an election.
    pub election: (Duration, Duration),
    /// A snapshot is built once this many entries were applied since the last one; the log
    /// is then purged up to it (keeping `keep_logs` entries for members slightly behind).
    pub snapshot_every: u64,
    pub keep_logs: u64,
    /// A proposal not committed within this fails (`NoQuorum`) instead of waiting.
    pub propose_timeout: Duration,
    /// The members a fresh group is initialized with, instead of the config's (tests: a
    /// group made by an older version, whose members were the manager nodes only; the
    /// leader then brings the membership to the config's).
    pub initial_members: Option<Vec<NodeId>>,
}

impl Default for GroupOptions {
    fn default() -> Self {
        GroupOptions {
            heartbeat: Duration::from_millis(250),
            election: (Duration::from_millis(1000), Duration::from_millis(2000)),
            snapshot_every: 64,
            keep_logs: 8,
            propose_timeout: Duration::from_secs(5),
            initial_members: None,
        }
    }
}

impl GroupOptions {
    fn raft_config(&self) -> Result<Config, GroupError> {
        let c = Config {
            cluster_name: "shoal-config".into(),
            heartbeat_interval: self.heartbeat.as_millis() as u64,
            election_timeout_min: self.election.0.as_millis() as u64,
            election_timeout_max: self.election.1.as_millis() as u64,
            install_snapshot_timeout: 10_000,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(self.snapshot_every),
            max_in_snapshot_log_to_keep: self.keep_logs,
            purge_batch_size: 1,
            // Entries carry a whole cluster file: keep one AppendEntries call small.
            max_payload_entries: 32,
            ..Default::default()
        };
        c.validate()
            .map_err(|e| GroupError::Start(format!("raft config: {e}")))
    }
}

/// Errors of starting a member.
#[derive(Debug, thiserror::Error)]
pub enum GroupError {
    #[error("config group state: {0}")]
    State(#[from] RecordError),
    #[error("config group: {0}")]
    Start(String),
}

/// Why a proposal did not take effect, or a confirmed read did not answer.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error("config group refused the proposal: {0}")]
    Refused(#[from] Refused),
    #[error("{me} is not the config group's leader (only the leader proposes and confirms reads); {}", match leader {
        Some(l) => format!("propose at {l}"),
        None => "no leader is known right now (an election is under way or a majority of the members is down)".into(),
    })]
    NotLeader { me: NodeId, leader: Option<NodeId> },
    #[error("the config group did not commit the proposal within {waited:?}: a majority of its {members} members did not acknowledge it (down, unreachable or too slow); it may still commit if they answer later, so read the config before proposing again")]
    NoQuorum { waited: Duration, members: usize },
    #[error("the config group leader could not confirm its leadership with a majority of its {members} members within {waited:?} (down, unreachable or too slow)")]
    ReadNoQuorum { waited: Duration, members: usize },
    #[error("config group member stopped: {0}")]
    Stopped(String),
    #[error("asking the config group's leader failed: {0}")]
    Forward(String),
}

/// A member's handle on the group.
pub struct ConfigGroup {
    me: NodeId,
    raft: GroupRaft,
    /// The node's transport (forwarding to the leader).
    transport: Arc<Transport>,
    applied: watch::Receiver<Arc<GroupState>>,
    options: GroupOptions,
    dir: PathBuf,
    seeder: tokio::task::JoinHandle<()>,
    /// The leader's task that keeps raft's membership equal to the committed config's.
    follower: tokio::task::JoinHandle<()>,
    /// The hosts' membership leases as this member saw them (automatic takeover).
    leases: takeover::Shared,
    /// The cluster directory (configs are built relative to it).
    cluster_dir: PathBuf,
    /// The leader's watch for silent hosts (`takeover::watch_hosts`).
    watcher: tokio::task::JoinHandle<()>,
}

/// The group's members in `config` (`ClusterConfig::config_group_members`: the manager
/// nodes, filled up to three with storage nodes).
pub fn members(config: &ClusterConfig) -> BTreeMap<RaftId, BasicNode> {
    config
        .config_group_members()
        .into_iter()
        .map(|n| (raft_id(n.id), BasicNode::new(n.address.to_string())))
        .collect()
}

/// Whether node `me` runs a member of the group of `config` (the one rule for it: node
/// start asks it, `ConfigGroup::start` refuses a non-member by it).
pub fn is_member(config: &ClusterConfig, me: NodeId) -> bool {
    members(config).contains_key(&raft_id(me))
}

/// Where a member keeps its state.
pub fn state_dir(node_state_dir: &Path) -> PathBuf {
    node_state_dir.join("config-group")
}

impl ConfigGroup {
    /// Starts member `me` of the group of `config`'s manager nodes on `transport` (whose
    /// node must route `Request::ConfigGroup` to `handle_rpc`). Opens the member's state
    /// under its state directory; on the first start of a fresh cluster the lowest-id
    /// manager initializes the group.
    pub async fn start(
        config: &ClusterConfig,
        me: NodeId,
        transport: Arc<Transport>,
        options: GroupOptions,
    ) -> Result<Arc<ConfigGroup>, GroupError> {
        let node = config
            .node(me)
            .ok_or_else(|| GroupError::Start(format!("{me} is not in the cluster config")))?;
        let members = members(config);
        if !members.contains_key(&raft_id(me)) {
            return Err(GroupError::Start(format!(
                "{} is no config group member (the members are the manager nodes, filled up to {} with storage nodes)",
                node.name,
                proto::config::CONFIG_GROUP_MIN_MEMBERS
            )));
        }
        let dir = state_dir(&node.state_dir);
        let (log, sm) = {
            let dir = dir.clone();
            tokio::task::spawn_blocking(move || -> Result<_, GroupError> {
                let log = LogStore::open(&dir)?;
                let sm = StateMachine::open(&dir)?;
                Ok((log, sm))
            })
            .await
            .map_err(|e| GroupError::Start(e.to_string()))??
        };
        let fresh = log.is_pristine() && sm.is_pristine();
        let applied = sm.subscribe();
        let network = network::Network {
            me: raft_id(me),
            transport: transport.clone(),
        };
        let raft = GroupRaft::new(
            raft_id(me),
            Arc::new(options.raft_config()?),
            network,
            log,
            sm,
        )
        .await
        .map_err(|e| GroupError::Start(e.to_string()))?;
        let initial: BTreeMap<RaftId, BasicNode> = match &options.initial_members {
            Some(ids) => members
                .iter()
                .filter(|(id, _)| ids.contains(&node_of(**id)))
                .map(|(id, n)| (*id, n.clone()))
                .collect(),
            None => members.clone(),
        };
        // The lowest-id manager initializes, never a storage member: when a cluster made
        // before storage nodes could be members is upgraded, its storage member starts
        // with no state and must wait to be added, not make a group of its own.
        let initializer = initial.keys().copied().find(|id| {
            config
                .node(node_of(*id))
                .is_some_and(|n| n.has(Role::Manager))
        });
        if fresh && initializer == Some(raft_id(me)) {
            tracing::info!(node = %node.name, members = ?initial.keys().collect::<Vec<_>>(), "initializing the config group (first start of a fresh cluster)");
            if let Err(e) = raft.initialize(initial).await {
                let _ = raft.shutdown().await;
                return Err(GroupError::Start(format!("initialize: {e}")));
            }
        } else {
            tracing::info!(node = %node.name, fresh, epoch = ?applied.borrow().epoch(), "config group member started");
        }
        let seeder = tokio::spawn(offer(
            raft.clone(),
            transport.clone(),
            me,
            applied.clone(),
            config.file.clone(),
            options.propose_timeout,
        ));
        let follower = tokio::spawn(membership::follow(
            raft.clone(),
            raft_id(me),
            config.dir.clone(),
            applied.clone(),
        ));
        let leases: takeover::Shared = Arc::new(std::sync::Mutex::new(
            host_leases::HostLeases::new(config.file.manager.membership_lease()),
        ));
        let watcher = tokio::spawn(takeover::watch_hosts(
            takeover::Ctx {
                raft: raft.clone(),
                transport: transport.clone(),
                me,
                applied: applied.clone(),
                dir: config.dir.clone(),
                timeout: options.propose_timeout,
            },
            leases.clone(),
        ));
        Ok(Arc::new(ConfigGroup {
            me,
            raft,
            transport,
            applied,
            options,
            dir,
            seeder,
            follower,
            leases,
            cluster_dir: config.dir.clone(),
            watcher,
        }))
    }

    /// Proposes `file` to replace the committed config of epoch `expect_epoch`; `file.epoch`
    /// must be `expect_epoch + 1`. Only the leader proposes (`NotLeader` names it). Returns
    /// the committed epoch; fails with `NoQuorum` within `propose_timeout` when a majority is
    /// unreachable, never hangs.
    pub async fn propose(&self, expect_epoch: u64, file: ClusterFile) -> Result<u64, RequestError> {
        self.write(Command::Replace { expect_epoch, file }).await
    }

    async fn write(&self, cmd: Command) -> Result<u64, RequestError> {
        write(&self.raft, self.me, cmd, self.options.propose_timeout).await
    }

    /// `propose`, from any member: a member that does not lead forwards the proposal to
    /// the leader it knows (`NotLeader` if it knows none).
    pub async fn propose_at_leader(
        &self,
        expect_epoch: u64,
        file: ClusterFile,
    ) -> Result<u64, RequestError> {
        let cmd = Command::Replace { expect_epoch, file };
        propose_anywhere(
            &self.raft,
            &self.transport,
            self.me,
            &cmd,
            self.options.propose_timeout,
        )
        .await
    }

    /// Asks the member at `at` to adopt manager `group`'s group from the committed config of
    /// `expect_epoch` (`ConfigGroupRequest::Adopt`: it picks the address it serves the group
    /// at and proposes the move), waiting at most `wait`. The committed epoch.
    pub async fn ask_adopt(
        &self,
        at: std::net::SocketAddr,
        group: NodeId,
        expect_epoch: u64,
        wait: Duration,
    ) -> Result<u64, String> {
        let body = postcard::to_allocvec(&takeover::Adopt {
            group,
            expect_epoch,
        })
        .map_err(|e| e.to_string())?;
        takeover::ask(&self.transport, at, ConfigGroupRequest::Adopt, body, wait).await
    }

    /// `read`, from any member: a member that does not lead asks the leader it knows.
    pub async fn read_at_leader(&self) -> Result<Option<ClusterFile>, RequestError> {
        read_anywhere(
            &self.raft,
            &self.transport,
            self.me,
            &self.applied,
            self.options.propose_timeout,
        )
        .await
    }

    /// The committed config as of the call, confirmed with a majority (a linearizable read):
    /// only the leader answers (`NotLeader` names it); bounded by `propose_timeout`. `None`
    /// before the seed.
    pub async fn read(&self) -> Result<Option<ClusterFile>, RequestError> {
        read_here(
            &self.raft,
            self.me,
            &self.applied,
            self.options.propose_timeout,
        )
        .await
    }

    /// The config committed and applied at this member (`None` before the seed), without
    /// asking anyone: a follower may lag the leader by the entries in flight, and a member
    /// cut off from the others by all that committed since.
    pub fn current(&self) -> Option<ClusterFile> {
        self.applied.borrow().file.clone()
    }

    /// The epoch of `current`.
    pub fn epoch(&self) -> Option<u64> {
        self.applied.borrow().epoch()
    }

    /// Follows this member's applied state.
    pub fn subscribe(&self) -> watch::Receiver<Arc<GroupState>> {
        self.applied.clone()
    }

    /// Resolves once the manager of this node may serve by `local` (its own
    /// `cluster.toml`): at once if the member has applied a committed config that `local`
    /// agrees with or is one harmless epoch ahead of (`standing`); after the group's first
    /// commit on a fresh cluster, or after the group committed `local`'s epoch when `local`
    /// changes who serves what; an error saying what contradicts if `local` conflicts with
    /// the committed config. Compares with the committed config as the leader confirms it
    /// at the start (a member that was down may not have applied what committed meanwhile)
    /// or, when no leader answers, or a newer one is applied since, as applied here.
    ///
    /// Returns the committed config when `local` is older and the committed one extends it
    /// harmlessly (`Standing::Behind`): the node must run by that one from the start.
    pub fn agreement(
        &self,
        local: ClusterFile,
    ) -> impl std::future::Future<Output = Result<Option<ClusterFile>, String>> + Send + 'static
    {
        let mut applied = self.applied.clone();
        let me = self.me;
        let (raft, transport) = (self.raft.clone(), self.transport.clone());
        let timeout = self.options.propose_timeout;
        async move {
            let confirmed = match read_anywhere(&raft, &transport, me, &applied, timeout).await {
                Ok(file) => file,
                Err(e) => {
                    tracing::info!(node = %me, "config check by this member's applied config: the leader did not confirm the committed one: {e}");
                    None
                }
            };
            let mut told = false;
            loop {
                let here = applied.borrow().file.clone();
                let committed = match (&confirmed, here) {
                    (Some(c), Some(h)) if c.epoch > h.epoch => Some(c.clone()),
                    (Some(c), None) => Some(c.clone()),
                    (_, h) => h,
                };
                let s = standing(&local, committed.as_ref());
                match &s {
                    Standing::Unknown => {}
                    Standing::Pending { committed, why } => {
                        if !told {
                            told = true;
                            tracing::warn!(node = %me, local = local.epoch, committed, "cluster.toml here is newer than the committed config and {why}: the manager serves once the group commits epoch {}", local.epoch);
                        }
                    }
                    Standing::Agrees => return Ok(None),
                    Standing::Behind { committed: epoch } => {
                        tracing::warn!(node = %me, local = local.epoch, committed = epoch, "cluster.toml here is older than the committed config, which changes no slot's server: serving by the committed config (copy it here for the next start)");
                        return Ok(committed);
                    }
                    Standing::Ahead { committed } => {
                        tracing::warn!(node = %me, local = local.epoch, committed, "cluster.toml here is newer than the committed config: serving by it; this member proposes it when it leads");
                        return Ok(None);
                    }
                    Standing::Conflicts { .. } => {
                        return Err(s.refusal(local.epoch).unwrap_or_default())
                    }
                }
                match tokio::time::timeout(Duration::from_secs(5), applied.changed()).await {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) => return Err("the config group member stopped".into()),
                    Err(_) => {
                        tracing::info!(node = %me, local = local.epoch, committed = ?applied.borrow().epoch(), "the manager waits for the config group to commit a config it can serve by (a majority of the group's members must be up)")
                    }
                }
            }
        }
    }

    /// Waits until this member has applied epoch `epoch` or later, up to `timeout`.
    pub async fn wait_for_epoch(&self, epoch: u64, timeout: Duration) -> Result<u64, String> {
        let mut rx = self.applied.clone();
        let r = tokio::time::timeout(timeout, rx.wait_for(|s| s.epoch() >= Some(epoch))).await;
        match r {
            Ok(Ok(s)) => Ok(s.epoch().unwrap_or(0)),
            Ok(Err(_)) => Err(format!("{}: config group member stopped", self.me)),
            Err(_) => Err(format!(
                "{}: epoch {epoch} not applied within {timeout:?} (at {:?})",
                self.me,
                self.epoch()
            )),
        }
    }

    /// The member this one believes leads the group.
    pub fn leader(&self) -> Option<NodeId> {
        self.raft.metrics().borrow().current_leader.map(node_of)
    }

    pub fn id(&self) -> NodeId {
        self.me
    }

    /// This member's view for `Ping` answers (`shoal status`).
    /// The node's transport (the member's checks of a proposal reach other nodes by it).
    pub fn transport(&self) -> &Arc<Transport> {
        &self.transport
    }

    pub fn view(&self) -> proto::msg::GroupView {
        let m = self.raft.metrics().borrow().clone();
        proto::msg::GroupView {
            epoch: self.epoch(),
            leader: m.current_leader.map(node_of),
            term: m.current_term,
        }
    }

    /// Raft metrics (term, leader, log and snapshot indexes, membership).
    pub fn metrics(&self) -> watch::Receiver<RaftMetrics<RaftId, BasicNode>> {
        self.raft.metrics()
    }

    /// The raft itself (tests and diagnostics: trigger a snapshot or a purge).
    pub fn raft(&self) -> &GroupRaft {
        &self.raft
    }

    /// Where this member keeps its state.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Answers a raft RPC from another member.
    pub async fn handle_rpc(&self, kind: ConfigGroupRequest, bulk: Bytes) -> (Response, Bytes) {
        match kind {
            // Forwarded by a member that does not lead: answered only while this one leads.
            ConfigGroupRequest::Propose => match forward::command(&bulk) {
                Ok(cmd) => forward::answer(self.write(cmd).await),
                Err(e) => (
                    Response::Error(proto::msg::RemoteError::Invalid(e)),
                    Bytes::new(),
                ),
            },
            ConfigGroupRequest::ReadCommitted => {
                forward::answer(self.read().await.map(|file| forward::Committed { file }))
            }
            ConfigGroupRequest::Renew => {
                let r = match postcard::from_bytes::<NodeId>(&bulk) {
                    Ok(host) => self.renewal_here(host).await,
                    Err(e) => Err(format!("Renew does not decode: {e}")),
                };
                takeover::answer(&r)
            }
            ConfigGroupRequest::Adopt => {
                let r = match postcard::from_bytes::<takeover::Adopt>(&bulk) {
                    Ok(a) => takeover::adopt(&self.ctx(), a.group, a.expect_epoch).await,
                    Err(e) => Err(format!("Adopt does not decode: {e}")),
                };
                takeover::answer(&r)
            }
            _ => network::serve(&self.raft, kind, bulk).await,
        }
    }

    fn ctx(&self) -> takeover::Ctx {
        takeover::Ctx {
            raft: self.raft.clone(),
            transport: self.transport.clone(),
            me: self.me,
            applied: self.applied.clone(),
            dir: self.cluster_dir.clone(),
            timeout: self.options.propose_timeout,
        }
    }

    /// A renewal of `host`'s membership lease arriving at this member: recorded, and
    /// granted if this member leads (confirmed with a majority).
    async fn renewal_here(&self, host: NodeId) -> Result<(), String> {
        let lease = self
            .leases
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .lease();
        takeover::renewal(&self.raft, &self.leases, host, lease).await
    }

    /// Renews node `host`'s membership lease (automatic takeover): asks every member at
    /// once, this one included, each within `wait`. `true` if the leader granted it.
    pub async fn renew(&self, host: NodeId, wait: Duration) -> bool {
        let body = match postcard::to_allocvec(&host) {
            Ok(b) => b,
            Err(_) => return false,
        };
        let others = takeover::member_addresses(&self.raft, self.me);
        let asks = others.into_iter().map(|addr| {
            let (t, body) = (self.transport.clone(), body.clone());
            async move {
                takeover::ask::<()>(&t, addr, ConfigGroupRequest::Renew, body, wait)
                    .await
                    .is_ok()
            }
        });
        let here = async {
            tokio::time::timeout(wait, self.renewal_here(host))
                .await
                .is_ok_and(|r| r.is_ok())
        };
        let (here, there) = tokio::join!(here, futures::future::join_all(asks));
        here || there.into_iter().any(|ok| ok)
    }

    /// Stops the member (its state stays on disk for the next start), waiting at most 5 s
    /// for the raft task to end.
    pub async fn shutdown(&self) {
        self.seeder.abort();
        self.follower.abort();
        self.watcher.abort();
        match tokio::time::timeout(Duration::from_secs(5), self.raft.shutdown()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(node = %self.me, "config group shutdown: {e}"),
            Err(_) => tracing::warn!(node = %self.me, "config group did not stop within 5 s"),
        }
    }
}

impl Drop for ConfigGroup {
    fn drop(&mut self) {
        // The seeder holds a raft handle: without it, dropping the last handle lets the
        // raft task end even if `shutdown` was never called. So do the follower and the
        // watcher.
        self.seeder.abort();
        self.follower.abort();
        self.watcher.abort();
    }
}

/// How many members vote in the group.
fn voters(raft: &GroupRaft) -> usize {
    raft.metrics()
        .borrow()
        .membership_config
        .membership()
        .voter_ids()
        .count()
}

/// One proposal through raft, bounded by `timeout`.
async fn write(
    raft: &GroupRaft,
    me: NodeId,
    cmd: Command,
    timeout: Duration,
) -> Result<u64, RequestError> {
    let members = voters(raft);
    match tokio::time::timeout(timeout, raft.client_write(cmd)).await {
        Err(_) => Err(RequestError::NoQuorum {
            waited: timeout,
            members,
        }),
        Ok(Ok(resp)) => Ok(resp.data?),
        Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f)))) => {
            Err(RequestError::NotLeader {
                me,
                leader: f.leader_id.map(node_of),
            })
        }
        Ok(Err(e)) => Err(RequestError::Stopped(e.to_string())),
    }
}

/// `ConfigGroup::read` of member `me`: the committed config confirmed with a majority by
/// its own raft (only while it leads).
async fn read_here(
    raft: &GroupRaft,
    me: NodeId,
    applied: &watch::Receiver<Arc<GroupState>>,
    timeout: Duration,
) -> Result<Option<ClusterFile>, RequestError> {
    let members = voters(raft);
    match tokio::time::timeout(timeout, raft.ensure_linearizable()).await {
        Err(_) | Ok(Err(RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(_)))) => {
            Err(RequestError::ReadNoQuorum {
                waited: timeout,
                members,
            })
        }
        // Applied up to the read point: the local state is the committed one.
        Ok(Ok(_)) => Ok(applied.borrow().file.clone()),
        Ok(Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f)))) => {
            Err(RequestError::NotLeader {
                me,
                leader: f.leader_id.map(node_of),
            })
        }
        Ok(Err(RaftError::Fatal(e))) => Err(RequestError::Stopped(e.to_string())),
    }
}

/// Whether member `me` believes it leads.
fn leads(raft: &GroupRaft, me: NodeId) -> bool {
    raft.metrics().borrow().current_leader == Some(raft_id(me))
}

/// The committed config confirmed with a majority, from member `me`: by its own raft if it
/// leads, else by the leader it knows.
async fn read_anywhere(
    raft: &GroupRaft,
    transport: &Transport,
    me: NodeId,
    applied: &watch::Receiver<Arc<GroupState>>,
    timeout: Duration,
) -> Result<Option<ClusterFile>, RequestError> {
    if leads(raft, me) {
        read_here(raft, me, applied, timeout).await
    } else {
        forward::read(raft, transport, me, timeout).await
    }
}

/// One proposal from member `me`: through its own raft if it leads, else forwarded to the
/// leader it knows.
async fn propose_anywhere(
    raft: &GroupRaft,
    transport: &Transport,
    me: NodeId,
    cmd: &Command,
    timeout: Duration,
) -> Result<u64, RequestError> {
    if leads(raft, me) {
        write(raft, me, cmd.clone(), timeout).await
    } else {
        forward::propose(raft, transport, me, cmd, timeout).await
    }
}

/// The member's offer of its own `cluster.toml` to the group, made through the leader: the
/// seed of a fresh group (`Command::Seed`, refused once a config is committed), or, when
/// the file is the harmless next epoch (`Standing::Ahead`: one epoch ahead, no slot changes
/// server, as `shoal node add` writes it), that file as the next config
/// (`Command::Replace`, compare-and-set on the epoch). A file that changes who serves what
/// is never proposed from here: that is an operator's decision, not a restart's. Ends once
/// the committed epoch is the file's or past it, or when the file is not to be proposed.
async fn offer(
    raft: GroupRaft,
    transport: Arc<Transport>,
    me: NodeId,
    mut applied: watch::Receiver<Arc<GroupState>>,
    file: ClusterFile,
    timeout: Duration,
) {
    let mut metrics = raft.metrics();
    loop {
        let standing = standing(&file, applied.borrow().file.as_ref());
        let cmd = match standing {
            Standing::Unknown => Command::Seed { file: file.clone() },
            Standing::Ahead { committed } => Command::Replace {
                expect_epoch: committed,
                file: file.clone(),
            },
            Standing::Pending { committed, why } => {
                tracing::warn!(node = %me, local = file.epoch, committed, "cluster.toml here is not proposed to the config group: {why}");
                return;
            }
            Standing::Agrees | Standing::Behind { .. } | Standing::Conflicts { .. } => return,
        };
        let mut again = None;
        // The seed only from the leader's own file (the first leader's file is the
        // cluster's first config); a next epoch from any member, through the leader.
        let may = match cmd {
            Command::Seed { .. } => leads(&raft, me),
            Command::Replace { .. } => metrics.borrow().current_leader.is_some(),
        };
        if may {
            match propose_anywhere(&raft, &transport, me, &cmd, timeout).await {
                Ok(epoch) => {
                    tracing::info!(node = %me, epoch, "config group: committed {cmd} from cluster.toml");
                    // Look again once it is applied here.
                    again = Some(Duration::from_millis(50));
                }
                Err(RequestError::Refused(r)) => {
                    // The committed state moved under us: look again once it is applied.
                    tracing::debug!(node = %me, "config group: {cmd} refused: {r}");
                    again = Some(Duration::from_millis(50));
                }
                Err(e) => {
                    // The leader is unreachable or changing: ask again in a while.
                    tracing::debug!(node = %me, "config group: {cmd}: {e}");
                    again = Some(OFFER_RETRY);
                }
            }
        }
        let retry = async {
            match again {
                Some(d) => tokio::time::sleep(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = metrics.changed() => if r.is_err() { return },
            r = applied.changed() => if r.is_err() { return },
            _ = retry => {}
        }
    }
}
