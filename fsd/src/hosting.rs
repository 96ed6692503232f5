//! Manager groups a node serves for other nodes after a takeover (`host` in the cluster
//! config, `shoal manager takeover`), and the deposition of the node's own group when the
//! committed config hands it to another node.
//!
//! Owns the hosted groups' endpoints and services. The decision is pure (`plan`: the config
//! in force and what runs in, what to start and stop out); the shell follows the installed
//! epoch (`proto::live::LiveConfig::subscribe`). A hosted group is served on its own
//! endpoint, at the address the config gives the group, with this node's certificate, so
//! requests, sessions and callbacks need no group field. Must not decide takeovers (the
//! config group commits them) nor touch another role's state.

use crate::node::{bind_with_retry, DenyState, NodeHandler};
use proto::config::ClusterConfig;
use proto::ids::NodeId;
use proto::live::LiveConfig;
use proto::msg::{NodeInfo, Request, Response};
use proto::tls::Identity;
use proto::transport::Transport;
use proto::worker::Workers;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

/// What the config in force asks of node `me`, given the groups it hosts now.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Groups to start serving.
    pub start: Vec<NodeId>,
    /// Groups hosted here that another node serves now (or that left the config).
    pub stop: Vec<NodeId>,
    /// This node's own group is served elsewhere: its own manager must stop at once.
    pub deposed: bool,
    /// This node's own group is its own again (given back, or a move of it failed) and its
    /// own manager is not serving: start it.
    pub own_back: bool,
}

/// What node `me` must do under `config` while hosting `running` and with its own manager
/// serving or not (`own_serving`) (pure).
pub fn plan(
    config: &ClusterConfig,
    me: NodeId,
    running: &BTreeSet<NodeId>,
    own_serving: bool,
) -> Plan {
    let wanted: BTreeSet<NodeId> = config.hosted_by(me).iter().map(|n| n.id).collect();
    let node = config.node(me);
    Plan {
        start: wanted.difference(running).copied().collect(),
        stop: running.difference(&wanted).copied().collect(),
        deposed: node.is_some_and(|n| n.is_hosted()),
        own_back: !own_serving
            && node.is_some_and(|n| n.has(proto::config::Role::Manager) && !n.is_hosted()),
    }
}

/// `p` without what a hand-over stopped at an epoch `epoch` does not pass yet (`leaving`:
/// group → the epoch it was stopped at); entries `epoch` passed are dropped (pure).
pub fn hold_back(mut p: Plan, leaving: &mut BTreeMap<NodeId, u64>, me: NodeId, epoch: u64) -> Plan {
    leaving.retain(|_, at| *at >= epoch);
    p.start.retain(|g| !leaving.contains_key(g));
    if leaving.contains_key(&me) {
        p.own_back = false;
    }
    p
}

/// The node's own manager: none, or the one of this node's own group. Replaced when the
/// group comes back to the node while it runs (`Plan::own_back`); the node's endpoint asks
/// it at each request.
#[derive(Default)]
pub(crate) struct OwnManager(std::sync::RwLock<Option<Arc<manager::Service>>>);

impl OwnManager {
    pub(crate) fn new(m: Option<Arc<manager::Service>>) -> Arc<OwnManager> {
        Arc::new(OwnManager(std::sync::RwLock::new(m)))
    }

    /// The own manager now (it may be stopped: deposed, or handed over).
    pub(crate) fn get(&self) -> Option<Arc<manager::Service>> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set(&self, m: Arc<manager::Service>) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = Some(m);
    }

    /// Whether the own manager runs (it may still be recovering).
    fn serving(&self) -> bool {
        self.get().is_some_and(|m| !m.is_stopped())
    }
}

/// How long a new host waits for the storage servers to run by the takeover's epoch
/// before it serves anyway (a server that does not answer is down; it follows the
/// committed config when it comes back, at its first follower round).
const FENCE_WAIT: Duration = Duration::from_secs(10);

/// How long a hand-over waits for the group's shutdown: its durable commit, its checkpoint
/// (bounded by the manager at 5 s) and the committer's end.
const QUIESCE_WAIT: Duration = Duration::from_secs(12);

/// One hosted group: its endpoint and its manager.
struct Hosted {
    service: Arc<manager::Service>,
    transport: Arc<Transport>,
    serve: tokio::task::JoinHandle<()>,
}

/// The groups this node hosts, kept as the installed config says.
pub struct Hosting {
    me: NodeId,
    name: String,
    id: Identity,
    live: Arc<LiveConfig>,
    /// The node's own endpoint (to reach the storage servers while fencing).
    transport: Arc<Transport>,
    deny: Arc<DenyState>,
    registry: Arc<Workers>,
    /// The node's own manager, deposed when its group moves away, started again when the
    /// group comes back.
    own: Arc<OwnManager>,
    /// The node's membership lease, which every hosted group serves under (automatic
    /// takeover on).
    serving: Option<Arc<manager::serving_lease::ServingLease>>,
    groups: tokio::sync::Mutex<BTreeMap<NodeId, Hosted>>,
    /// Set (under the `groups` lock) when the node stops: nothing starts a group after it.
    closed: std::sync::atomic::AtomicBool,
    /// One hand-over at a time (`handover`).
    moving: tokio::sync::Mutex<()>,
    /// Groups stopped here for a hand-over, with the epoch they were stopped at: not
    /// started here again by that epoch or an older one (an install that arrives meanwhile
    /// must not undo the stop); the adoption or the fence always commits a newer one.
    leaving: std::sync::Mutex<BTreeMap<NodeId, u64>>,
    /// A failed hand-over's fence still waiting for the config group (aborted at close).
    fencing: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// Why `Hosting::quiesce` did not stop a group cleanly.
#[derive(Debug)]
pub(crate) enum Quiesce {
    /// This node does not serve the group (nothing was stopped).
    NotServed(String),
    /// It was stopped, but its last changes may not be durable.
    Unclean(String),
}

impl Hosting {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        me: NodeId,
        name: String,
        id: Identity,
        live: Arc<LiveConfig>,
        transport: Arc<Transport>,
        deny: Arc<DenyState>,
        registry: Arc<Workers>,
        own: Arc<OwnManager>,
        serving: Option<Arc<manager::serving_lease::ServingLease>>,
    ) -> Arc<Hosting> {
        Arc::new(Hosting {
            me,
            name,
            id,
            live,
            transport,
            deny,
            registry,
            own,
            serving,
            groups: Default::default(),
            closed: Default::default(),
            moving: Default::default(),
            leaving: Default::default(),
            fencing: Default::default(),
        })
    }

    /// Follows the installed config until aborted (with the node).
    pub(crate) async fn run(self: Arc<Self>) {
        let mut rx = self.live.subscribe();
        // At the node's start the config may be its own stale file: a group is started
        // only if the members' newest config still names this node its host. Later configs
        // were installed from the members' answers.
        let mut at_start = true;
        loop {
            self.apply(std::mem::take(&mut at_start)).await;
            if rx.changed().await.is_err() {
                return;
            }
        }
    }

    /// Brings the hosted groups in line with the config in force.
    async fn apply(&self, at_start: bool) {
        let config = self.live.current();
        let mut groups = self.groups.lock().await;
        if self.closed.load(std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        let running: BTreeSet<NodeId> = groups.keys().copied().collect();
        let p = plan(&config, self.me, &running, self.own.serving());
        let p = {
            let mut leaving = self.leaving.lock().unwrap_or_else(|e| e.into_inner());
            hold_back(p, &mut leaving, self.me, config.file.epoch)
        };
        if p.deposed {
            if let Some(m) = self.own.get() {
                if !m.is_stopped() {
                    tracing::warn!(node = %self.name, epoch = config.file.epoch, "this node's manager group is served by another node now: stopping its manager (deposed)");
                    m.kill();
                }
            }
        }
        // At the node's start only if `RunningNode::start` did not start it (its file said
        // another node serves the group, the members' newest config gives it back).
        if p.own_back && (!at_start || self.own.get().is_none()) {
            match self.start_own(&config).await {
                Ok(m) => self.own.set(m),
                Err(e) => {
                    tracing::error!(node = %self.name, "cannot serve this node's own manager group again: {e}")
                }
            }
        }
        for g in p.stop {
            if let Some(h) = groups.remove(&g) {
                tracing::warn!(node = %self.name, group = %g, epoch = config.file.epoch, "a group this node hosted is served elsewhere now: stopping it");
                h.service.kill();
                h.transport.close();
                h.serve.abort();
            }
        }
        for g in p.start {
            match self.start(&config, g, at_start).await {
                Ok(h) => {
                    groups.insert(g, h);
                }
                Err(e) => {
                    tracing::error!(node = %self.name, group = %g, "cannot serve the group handed to this node: {e}")
                }
            }
        }
        for h in groups.values() {
            if let Ok(peers) = proto::identity::expected_peers(&config) {
                h.transport.expect_peers(peers);
            }
        }
    }

    /// Starts this node's own manager again, on the node's endpoint, once the storage
    /// servers run by `config`'s epoch (they then refuse the group's previous host).
    async fn start_own(
        &self,
        config: &Arc<ClusterConfig>,
    ) -> Result<Arc<manager::Service>, String> {
        tracing::warn!(node = %self.name, epoch = config.file.epoch, "this node's own manager group is back: serving it again");
        let epoch = config.file.epoch;
        let (live, t, who, me) = (
            self.live.clone(),
            self.transport.clone(),
            self.name.clone(),
            self.me,
        );
        // By the members' newest config, not only the one installed here: a hand-over of
        // this group may have committed and not be installed yet.
        let gate: manager::service::StartGate = Box::pin(async move {
            still_host(&live, &t, me, me).await?;
            fence_storage(&live, &t, epoch, &who).await
        });
        let service = manager::Service::start_after(
            self.live.clone(),
            self.me,
            self.transport.clone(),
            Some(gate),
        )
        .await
        .map_err(|e| e.to_string())?;
        if let Some(l) = &self.serving {
            service.require_serving_lease(l.clone());
        }
        Ok(service)
    }

    /// Stops serving group `g` here for a hand-over (`handover`): everything the group's
    /// manager answered is made durable first, and later changes are refused
    /// (`Unavailable`, which clients retry). The group is started again here only by a
    /// config that still has this node serve it (`apply`), or by `resume`.
    pub(crate) async fn quiesce(&self, g: NodeId) -> Result<(), Quiesce> {
        let mut groups = self.groups.lock().await;
        if self.closed.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(Quiesce::NotServed("this node is stopping".into()));
        }
        let own = self.own.get().filter(|m| !m.is_stopped());
        let stopped_at = self.live.epoch();
        let (service, hosted) = if let Some(h) = groups.remove(&g) {
            (h.service.clone(), Some(h))
        } else if let (true, Some(m)) = (g == self.me, own) {
            (m, None)
        } else {
            return Err(Quiesce::NotServed(format!(
                "this node does not serve group {g}"
            )));
        };
        self.leaving
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(g, stopped_at);
        // A hosted group's manager reaches the storage servers through the group's own
        // endpoint: it closes only once the last changes are durable.
        let r = match tokio::time::timeout(QUIESCE_WAIT, service.shutdown()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(Quiesce::Unclean(format!(
                "the group's last changes may not be durable: {e}"
            ))),
            Err(_) => {
                service.kill();
                Err(Quiesce::Unclean(format!(
                    "its last changes did not become durable within {QUIESCE_WAIT:?}"
                )))
            }
        };
        if let Some(h) = hosted {
            h.transport.close();
            h.serve.abort();
        }
        r
    }

    /// Brings the groups in line with the config in force now (after a hand-over failed).
    pub(crate) async fn resume(&self) {
        self.apply(false).await
    }

    /// Holds off other hand-overs on this node while the guard lives.
    pub(crate) async fn one_move_at_a_time(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.moving.lock().await
    }

    /// `one_move_at_a_time`, or `None` at once when another hand-over (or a failed one's
    /// fence) is under way.
    pub(crate) fn try_one_move(&self) -> Option<tokio::sync::MutexGuard<'_, ()>> {
        self.moving.try_lock().ok()
    }

    /// Keeps a failed hand-over's background fence, to abort it when the node stops.
    pub(crate) fn keep_fencing(&self, task: tokio::task::JoinHandle<()>) {
        if let Some(old) = self
            .fencing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .replace(task)
        {
            old.abort();
        }
    }

    /// The node stops: no group starts here after this (a hand-over's resume or an
    /// install that comes late).
    pub(crate) async fn close(&self) {
        let _g = self.groups.lock().await;
        self.closed.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(t) = self
            .fencing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            t.abort();
        }
    }

    async fn start(
        &self,
        config: &Arc<ClusterConfig>,
        g: NodeId,
        at_start: bool,
    ) -> Result<Hosted, String> {
        let group = config
            .node(g)
            .ok_or_else(|| format!("no node {g}"))?
            .clone();
        tracing::info!(node = %self.name, group = %group.name, addr = %group.group_address, epoch = config.file.epoch, "taking over manager group");
        let transport = bind_with_retry(group.group_address, &self.id)
            .await
            .map_err(|e| e.to_string())?;
        transport.expect_peers(proto::identity::expected_peers(config).map_err(|e| e.to_string())?);
        self.deny.enforce_on(transport.clone());
        let epoch = config.file.epoch;
        let (live, t, who) = (self.live.clone(), self.transport.clone(), self.name.clone());
        let me = self.me;
        let gate: manager::service::StartGate = Box::pin(async move {
            if at_start {
                still_host(&live, &t, me, g).await?;
            }
            fence_storage(&live, &t, epoch, &who).await
        });
        let service =
            manager::Service::start_after(self.live.clone(), g, transport.clone(), Some(gate))
                .await
                .map_err(|e| e.to_string())?;
        if let Some(l) = &self.serving {
            service.require_serving_lease(l.clone());
        }
        let handler = Arc::new(NodeHandler::hosted(
            NodeInfo {
                name: self.name.clone(),
                roles: vec!["manager".into()],
                version: proto::VERSION.to_string(),
                workers: Vec::new(),
                config_group: None,
                config_epoch: 0,
            },
            service.clone(),
            self.live.clone(),
            self.deny.clone(),
            self.registry.clone(),
        ));
        let serve = transport.serve(handler);
        Ok(Hosted {
            service,
            transport,
            serve,
        })
    }

    /// The node this runs on.
    pub(crate) fn me(&self) -> NodeId {
        self.me
    }

    /// The groups hosted here now (status, tests).
    pub async fn hosted(&self) -> Vec<NodeId> {
        self.groups.lock().await.keys().copied().collect()
    }

    /// Stops every hosted group: abruptly (`kill`) or committing first.
    pub(crate) async fn stop_all(&self, kill: bool) {
        for (_, h) in std::mem::take(&mut *self.groups.lock().await) {
            if kill {
                h.service.kill();
            } else if let Err(e) = h.service.shutdown().await {
                tracing::warn!(node = %self.name, "hosted manager shutdown: {e}");
            }
            h.transport.close();
            h.serve.abort();
        }
    }
}

/// The newest config the group's members answer, if newer than the one `live` holds (one
/// follower round, `proto::follow::ask_members`): a start that must not go by a stale file
/// (a restarted node's applied state may predate a takeover) asks it first.
pub(crate) async fn newest_committed(
    live: &LiveConfig,
    transport: &Arc<Transport>,
) -> Option<ClusterConfig> {
    let current = live.current();
    let round = proto::follow::ask_members(transport, &current, current.file.epoch).await;
    ClusterConfig::from_file(&current.dir, round.newer?).ok()
}

/// Refuses a hosted group's start when the members already committed a config that no
/// longer names node `me` as its host (a restarted host with a stale `cluster.toml`).
async fn still_host(
    live: &LiveConfig,
    transport: &Arc<Transport>,
    me: NodeId,
    group: NodeId,
) -> Result<(), String> {
    match newest_committed(live, transport).await {
        Some(c) if c.node(group).map(|n| n.host) != Some(me) => Err(format!(
            "the committed config (epoch {}) no longer has this node serve group {group}",
            c.file.epoch
        )),
        _ => Ok(()),
    }
}

/// Waits until every storage server that answers runs by epoch `epoch` or newer, so that
/// each refuses the old host's writes to the group's log before the new host serves
/// (bounded by `FENCE_WAIT`; a server that does not answer is down).
async fn fence_storage(
    live: &LiveConfig,
    transport: &Transport,
    epoch: u64,
    who: &str,
) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + FENCE_WAIT;
    loop {
        let config = live.current();
        let mut behind = Vec::new();
        for n in config.storage_nodes() {
            match tokio::time::timeout(
                Duration::from_secs(1),
                transport.call(n.address, &Request::Ping, bytes::Bytes::new()),
            )
            .await
            {
                Ok(Ok((Response::Pong(info), _))) if info.config_epoch < epoch => {
                    behind.push(n.name.clone())
                }
                _ => {}
            }
        }
        if behind.is_empty() {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            tracing::warn!(node = %who, ?behind, epoch, "storage servers still run by an older config: serving the group anyway");
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proto::config::{ClusterConfig, ErasureConfig};

    /// Six storage nodes (ids 1-6), three managers (ids 7-9), 4+2 (the unit tests' cluster).
    pub(crate) fn cluster() -> ClusterConfig {
        let f = ClusterConfig::generate("t", 6, 3, ErasureConfig { data: 4, parity: 2 }, 7000)
            .expect("valid");
        ClusterConfig::from_file(std::path::Path::new("."), f).expect("valid")
    }

    #[test]
    fn a_group_stopped_for_a_hand_over_stays_stopped_until_a_newer_epoch() {
        let (me, g) = (NodeId(7), NodeId(8));
        let p = Plan {
            start: vec![g],
            own_back: true,
            ..Plan::default()
        };
        let mut leaving: BTreeMap<NodeId, u64> = [(g, 4), (me, 4)].into();
        let held = hold_back(p.clone(), &mut leaving, me, 4);
        assert!(held.start.is_empty() && !held.own_back, "{held:?}");
        assert_eq!(leaving.len(), 2);
        let held = hold_back(p.clone(), &mut leaving, me, 3);
        assert!(held.start.is_empty() && !held.own_back, "an older install");
        assert_eq!(
            hold_back(p.clone(), &mut leaving, me, 5),
            p,
            "the next epoch decides"
        );
        assert!(leaving.is_empty());
    }

    #[test]
    fn a_takeover_starts_the_group_at_its_host_and_deposes_the_old_one() {
        let c = cluster();
        let (m1, m2) = (NodeId(7), NodeId(8));
        assert_eq!(plan(&c, m1, &BTreeSet::new(), true), Plan::default());
        let moved = c
            .file
            .takeover(
                "manager-2",
                "manager-1",
                "127.0.0.1:7100".parse().expect("address"),
            )
            .expect("valid");
        let c2 = ClusterConfig::from_file(std::path::Path::new("."), moved).expect("valid");
        assert_eq!(
            plan(&c2, m1, &BTreeSet::new(), true),
            Plan {
                start: vec![m2],
                ..Plan::default()
            }
        );
        assert_eq!(plan(&c2, m1, &[m2].into(), true), Plan::default());
        assert_eq!(
            plan(&c2, m2, &BTreeSet::new(), true),
            Plan {
                deposed: true,
                ..Plan::default()
            }
        );
        // Moved on to manager-3: manager-1 stops it, manager-3 starts it.
        let again = c2
            .file
            .takeover(
                "manager-2",
                "manager-3",
                "127.0.0.1:7101".parse().expect("address"),
            )
            .expect("valid");
        let c3 = ClusterConfig::from_file(std::path::Path::new("."), again).expect("valid");
        assert_eq!(
            plan(&c3, m1, &[m2].into(), true),
            Plan {
                stop: vec![m2],
                ..Plan::default()
            }
        );
        assert_eq!(plan(&c3, NodeId(9), &BTreeSet::new(), true).start, vec![m2]);
        // Handed back to its own node: it serves again, nobody hosts it.
        let back = c3
            .file
            .takeover(
                "manager-2",
                "manager-2",
                "0.0.0.0:0".parse().expect("address"),
            )
            .expect("valid");
        let c4 = ClusterConfig::from_file(std::path::Path::new("."), back).expect("valid");
        assert_eq!(plan(&c4, m2, &BTreeSet::new(), true), Plan::default());
        assert_eq!(
            plan(&c4, m2, &BTreeSet::new(), false),
            Plan {
                own_back: true,
                ..Plan::default()
            },
            "its own manager, stopped when the group moved away, starts again"
        );
        assert!(
            !plan(&c3, m2, &BTreeSet::new(), false).own_back,
            "not while another node serves it"
        );
        assert!(
            !plan(&c4, NodeId(1), &BTreeSet::new(), false).own_back,
            "a storage node runs no manager"
        );
        assert_eq!(
            plan(&c4, NodeId(9), &[m2].into(), true).stop,
            vec![m2],
            "the last host lets it go"
        );
    }
}
