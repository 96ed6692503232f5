//! One node: its endpoint, its roles, and the handler that routes each request to a role.
//! The handler is the node's one place of authorization: every request is checked against
//! the role matrix (`proto::authz`) with the verified peer identity before any role sees
//! it, and refusals are logged. It also holds the node's deny list (`proto::revoke`).

use crate::config_group::{self, ConfigGroup, GroupOptions};
use crate::error::NodeError;
use crate::hosting::OwnManager;
use bytes::Bytes;
use proto::config::{ClusterConfig, Role};
use proto::msg::{AdminRequest, NodeInfo, RemoteError, Request, Response};
use proto::revoke::{DenyError, DenyList, SignedDenyList};
use proto::tls::Identity;
use proto::transport::{BoxFuture, Handler, Peer, Transport};
use proto::worker::{WorkerStatus, Workers};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The deny list a node enforces: checked against the CA it trusts, persisted in its state
/// directory, handed to the node's transports (which refuse and disconnect the names): its
/// own and those of the manager groups it hosts.
pub struct DenyState {
    ca_der: Vec<u8>,
    path: PathBuf,
    current: Mutex<DenyList>,
    transports: Mutex<Vec<Arc<Transport>>>,
}

impl DenyState {
    /// Loads the newest valid list of the node's own copy and the cluster directory's
    /// (`tls/revoked.list`) and enforces it.
    fn open(
        config: &ClusterConfig,
        id: &Identity,
        state_dir: &std::path::Path,
        transport: Arc<Transport>,
    ) -> Result<DenyState, NodeError> {
        let ca_der = id.ca.first().map(|c| c.to_vec()).unwrap_or_default();
        let st = DenyState {
            ca_der,
            path: state_dir.join("revoked.list"),
            current: Mutex::new(DenyList::default()),
            transports: Mutex::new(vec![transport]),
        };
        for path in [st.path.clone(), revoked_list_path(config)] {
            let loaded =
                SignedDenyList::load(&path).map_err(|e| NodeError::Other(e.to_string()))?;
            if let Some(signed) = loaded {
                match st.install(&signed) {
                    Ok(seq) => tracing::info!(path = %path.display(), seq, "deny list loaded"),
                    Err(e) => {
                        return Err(NodeError::Other(format!(
                            "deny list {}: {e}",
                            path.display()
                        )))
                    }
                }
            }
        }
        Ok(st)
    }

    /// Verifies `signed`; when newer than the list held, persists and enforces it. Returns
    /// the sequence number now held.
    pub fn install(&self, signed: &SignedDenyList) -> Result<u64, DenyError> {
        let list = signed.verify(&self.ca_der)?;
        let mut cur = self.current.lock().unwrap_or_else(|e| e.into_inner());
        if list.seq <= cur.seq {
            return Ok(cur.seq);
        }
        signed.store(&self.path)?;
        tracing::warn!(seq = list.seq, names = ?list.names, "deny list installed: these identities are refused");
        let transports = self.transports.lock().unwrap_or_else(|e| e.into_inner());
        for t in transports.iter() {
            t.set_denied(list.names.iter().cloned().collect());
        }
        *cur = list;
        Ok(cur.seq)
    }

    /// Enforces the list on another transport of the node (a hosted group's endpoint), now
    /// and at every later install.
    pub(crate) fn enforce_on(&self, transport: Arc<Transport>) {
        let cur = self.current.lock().unwrap_or_else(|e| e.into_inner());
        transport.set_denied(cur.names.iter().cloned().collect());
        let mut transports = self.transports.lock().unwrap_or_else(|e| e.into_inner());
        transports.push(transport);
    }
}

/// The cluster directory's copy of the deny list (`shoal cert revoke` writes it).
pub fn revoked_list_path(config: &ClusterConfig) -> PathBuf {
    config.ca_cert_path().with_file_name("revoked.list")
}

/// Whose writes a peer's puts are: only managers, storage nodes and admins (metadata logs,
/// the cleaner, rebuild, scrub repairs) may use a storage server's reserve; clients (and a
/// peer without an identity) stop before it.
fn write_class(peer: &Peer) -> storage::admit::WriteClass {
    use proto::identity::Role as R;
    match &peer.identity {
        Some(id) if id.has(R::Manager) || id.has(R::Storage) || id.has(R::Admin) => {
            storage::admit::WriteClass::System
        }
        _ => storage::admit::WriteClass::Client,
    }
}

/// Routes requests to the roles this node runs, after the role matrix allowed them.
pub(crate) struct NodeHandler {
    info: NodeInfo,
    /// The config the node runs by: its epoch is reported in `Ping` answers, and the
    /// storage role fences manager logs by it (`fenced`).
    live: Arc<proto::live::LiveConfig>,
    storage: Option<Arc<storage::server::Server>>,
    /// The node's own manager (replaced when its group comes back after a move), or a
    /// hosted group's.
    manager: Arc<OwnManager>,
    /// The node's member of the config group (manager nodes).
    config_group: Option<Arc<ConfigGroup>>,
    /// The groups this node serves (hand-overs); `None` on a hosted group's endpoint.
    hosting: Option<Arc<crate::hosting::Hosting>>,
    deny: Arc<DenyState>,
    /// The node's workers, reported in `Ping` answers.
    registry: Arc<Workers>,
}

/// The parts of a running node its HTTP endpoint reads at each scrape (gauges of the
/// storage server's fragments and bytes, and of every background worker).
#[derive(Clone)]
pub struct NodeParts {
    name: Arc<str>,
    storage: Option<Arc<storage::server::Server>>,
    manager: Arc<OwnManager>,
    registry: Arc<Workers>,
}

impl NodeParts {
    /// Sets the node's gauges (`proto::ops_metrics`) to what they are now.
    pub(crate) async fn record_gauges(&self) {
        let workers = all_workers(self.manager.get().as_deref(), &self.registry);
        proto::ops_metrics::worker_gauges(&self.name, &workers);
        if let Some(s) = &self.storage {
            if let Ok((proto::msg::StorageResponse::Stat(st), _)) = s
                .handle(proto::msg::StorageRequest::Stat, Bytes::new())
                .await
            {
                proto::ops_metrics::storage_gauges(
                    &self.name,
                    st.fragments,
                    st.used_bytes,
                    st.capacity_bytes,
                );
            }
        }
    }
}

/// Every worker of the node: the manager's, then the other roles'.
fn all_workers(manager: Option<&manager::Service>, registry: &Workers) -> Vec<WorkerStatus> {
    let mut all = manager.map(|m| m.workers()).unwrap_or_default();
    all.extend(registry.statuses());
    all
}

impl Handler for NodeHandler {
    fn handle(&self, peer: Peer, req: Request, bulk: Bytes) -> BoxFuture<'_, (Response, Bytes)> {
        Box::pin(async move {
            if let Err(d) = proto::authz::check(peer.identity.as_deref(), &req) {
                proto::warn_limited!(node = %self.info.name, addr = %peer.addr, "refused: {d}");
                return (Response::Error(d.into()), Bytes::new());
            }
            match req {
                Request::Admin(AdminRequest::InstallDenyList { list, signature }) => {
                    match self.deny.install(&SignedDenyList { list, signature }) {
                        Ok(seq) => (Response::DenyList { seq }, Bytes::new()),
                        Err(e) => (
                            Response::Error(RemoteError::Invalid(e.to_string())),
                            Bytes::new(),
                        ),
                    }
                }
                Request::Ping => {
                    let mut info = self.info.clone();
                    info.workers = all_workers(self.manager.get().as_deref(), &self.registry);
                    info.config_group = self.config_group.as_ref().map(|g| g.view());
                    info.config_epoch = self.live.epoch();
                    (Response::Pong(info), Bytes::new())
                }
                Request::Storage(r) => match (&self.storage, self.fenced(&peer, &r)) {
                    (Some(_), Some(why)) => {
                        proto::warn_limited!(node = %self.info.name, addr = %peer.addr, "refused {r}: {why}");
                        (Response::Error(RemoteError::Invalid(why)), Bytes::new())
                    }
                    (Some(s), None) => match s.handle_as(r, bulk, write_class(&peer)).await {
                        Ok((resp, bulk)) => (Response::Storage(resp), bulk),
                        Err(e) => (Response::Error(e), Bytes::new()),
                    },
                    (None, _) => (
                        Response::Error(RemoteError::NoRole("storage".into())),
                        Bytes::new(),
                    ),
                },
                Request::Manager(_) | Request::ManagerAs { .. } => {
                    self.manager_request(&peer, req).await
                }
                Request::ConfigGroup(kind) => match &self.config_group {
                    Some(g) => g.handle_rpc(kind, bulk).await,
                    None => (
                        Response::Error(RemoteError::NoRole("config group".into())),
                        Bytes::new(),
                    ),
                },
                Request::Client(_) | Request::Peer(_) => (
                    Response::Error(RemoteError::NoRole("client".into())),
                    Bytes::new(),
                ),
                Request::ConfigRead => {
                    let file = self
                        .config_group
                        .as_ref()
                        .and_then(|g| g.current())
                        .map(|f| ClusterConfig::render(&f));
                    (Response::Config { file }, Bytes::new())
                }
                Request::Admin(AdminRequest::ProposeConfig { expect_epoch, file }) => {
                    match self.propose_config(expect_epoch, &file).await {
                        Ok(file) => (Response::Config { file: Some(file) }, Bytes::new()),
                        Err(e) => (Response::Error(e), Bytes::new()),
                    }
                }
                Request::Admin(AdminRequest::MoveGroup { group, to }) => {
                    match (&self.hosting, &self.config_group) {
                        (Some(h), Some(g)) => {
                            match crate::handover::hand_over(
                                h.clone(),
                                g.clone(),
                                self.live.clone(),
                                &group,
                                &to,
                            )
                            .await
                            {
                                Ok(file) => (Response::Config { file: Some(file) }, Bytes::new()),
                                Err(e) => (Response::Error(e), Bytes::new()),
                            }
                        }
                        _ => (
                            Response::Error(RemoteError::NoRole(
                                "manager (with a config group member)".into(),
                            )),
                            Bytes::new(),
                        ),
                    }
                }
            }
        })
    }
}

/// A task started while a node starts: aborted if the start fails before `keep`.
struct Started(Option<tokio::task::JoinHandle<()>>);

impl Started {
    fn keep(&mut self) -> tokio::task::JoinHandle<()> {
        self.0.take().expect("kept once")
    }
}

impl Drop for Started {
    fn drop(&mut self) {
        if let Some(t) = self.0.take() {
            t.abort();
        }
    }
}

/// Makes `transport` expect the node identities `config` names at their addresses.
fn expect_nodes_of(transport: &Transport, config: &ClusterConfig) {
    match crate::cluster::expected_peers(config) {
        Ok(peers) => transport.expect_peers(peers),
        Err(e) => {
            tracing::warn!(error = %e, "the new config names a node identity that cannot be: keeping the peers expected before")
        }
    }
}

impl NodeHandler {
    /// An administrator's proposal of the next config (`shoal node add`): checked here
    /// against the committed one, then proposed through the group's leader. Only changes a
    /// running cluster follows are taken (`proto::live::accepts`: storage nodes added with
    /// new ids, addresses, tunables): a change of who serves which slot, of a manager, or a
    /// storage node removed needs the nodes restarted with the new file and is refused with
    /// that reason.
    async fn propose_config(&self, expect_epoch: u64, text: &str) -> Result<String, RemoteError> {
        let Some(g) = &self.config_group else {
            return Err(RemoteError::NoRole("config group member".into()));
        };
        let invalid = |e: String| RemoteError::Invalid(format!("the proposed cluster.toml: {e}"));
        let file = proto::follow::parse(text).map_err(invalid)?;
        let here = std::path::Path::new(".");
        let proposed =
            ClusterConfig::from_file(here, file.clone()).map_err(|e| invalid(e.to_string()))?;
        let committed = g
            .read_at_leader()
            .await
            .map_err(|e| RemoteError::Unavailable(e.to_string()))?
            .ok_or_else(|| {
                RemoteError::Unavailable("the config group holds no config yet".into())
            })?;
        if committed.epoch != expect_epoch {
            return Err(RemoteError::Invalid(format!(
                "the cluster is at epoch {}, the proposal follows epoch {expect_epoch}: fetch the committed config and edit that",
                committed.epoch
            )));
        }
        let committed = ClusterConfig::from_file(here, committed)
            .map_err(|e| RemoteError::Invalid(format!("the committed config: {e}")))?;
        // Only what running nodes follow (`proto::live::accepts`): no slot or manager
        // change, storage nodes kept in place.
        proto::live::accepts(&committed, &proposed).map_err(|e| {
            RemoteError::Invalid(format!(
                "{e}; for such a change edit cluster.toml and restart the nodes with it"
            ))
        })?;
        takeover_of_a_silent_host(g.transport(), &committed, &proposed).await?;
        let epoch = g
            .propose_at_leader(expect_epoch, file.clone())
            .await
            .map_err(|e| RemoteError::Unavailable(e.to_string()))?;
        tracing::info!(node = %self.info.name, epoch, "an administrator's config proposal committed");
        Ok(ClusterConfig::render(&file))
    }
}

/// A takeover moves only a manager group whose host does not answer: a host that answers
/// may still serve, and two hosts of one group must never serve at once. (The storage
/// servers fence a deposed host's writes, `NodeHandler::fenced`; automatic takeover by
/// membership leases is not built.)
async fn takeover_of_a_silent_host(
    transport: &Transport,
    committed: &ClusterConfig,
    proposed: &ClusterConfig,
) -> Result<(), RemoteError> {
    for n in committed.manager_nodes() {
        let Some(p) = proposed.node(n.id) else {
            continue;
        };
        if p.host == n.host {
            continue;
        }
        let answer = tokio::time::timeout(
            TAKEOVER_PROBE,
            transport.call(n.group_address, &Request::Ping, Bytes::new()),
        )
        .await;
        if let Ok(Ok((Response::Pong(_), _))) = answer {
            return Err(RemoteError::Invalid(format!(
                "manager {}'s group answers at {}: a takeover moves only the group of a manager that is down (stop it first)",
                n.name, n.group_address
            )));
        }
    }
    Ok(())
}

/// How long a takeover's member check waits for the old host to answer.
const TAKEOVER_PROBE: Duration = Duration::from_secs(2);

impl NodeHandler {
    /// The handler of a manager group this node hosts after a takeover (`hosting`): only
    /// manager requests (and `Ping`) are served on its endpoint.
    pub(crate) fn hosted(
        info: NodeInfo,
        manager: Arc<manager::Service>,
        live: Arc<proto::live::LiveConfig>,
        deny: Arc<DenyState>,
        registry: Arc<Workers>,
    ) -> NodeHandler {
        NodeHandler {
            info,
            live,
            storage: None,
            manager: OwnManager::new(Some(manager)),
            config_group: None,
            hosting: None,
            deny,
            registry,
        }
    }

    /// Why a write or delete in a manager's metadata log is refused (fencing): by the
    /// config this node runs, a manager identity may write or delete fragments of a manager
    /// group's log only if it hosts the group, or if it runs the background rebuild (which
    /// restores lost fragments of every log). A deposed host (its group taken over while it
    /// was stopped or cut off) can change nothing durable once the storage servers run by
    /// the takeover's epoch. Storage (scrub repair) and admin (rebuild, drain, clean)
    /// identities are not fenced.
    fn fenced(&self, peer: &Peer, req: &proto::msg::StorageRequest) -> Option<String> {
        use proto::identity::Role as R;
        use proto::msg::StorageRequest as S;
        let id = match req {
            S::PutFragment { id, .. } | S::Delete { id } => id,
            _ => return None,
        };
        let group = id.log.manager_of()?;
        let who = peer.identity.as_ref()?;
        if !who.has(R::Manager) || who.has(R::Admin) || who.has(R::Storage) {
            return None;
        }
        let config = self.live.current();
        let host = config.node(config.node(group)?.host)?;
        let rebuilder = config
            .node_by_name(&who.name)
            .is_some_and(|n| manager::reclaim::runs_on(&config, n.id));
        (host.name != who.name && !rebuilder).then(|| {
            format!(
                "fenced: {} does not serve manager group {group} (served by {} at config epoch {})",
                who.name, host.name, config.file.epoch
            )
        })
    }

    /// A manager request: lease sessions fail closed, and a client identity's request is
    /// checked with the caller's credentials mapped by the identity's export options.
    async fn manager_request(&self, peer: &Peer, req: Request) -> (Response, Bytes) {
        let (cred, call, r) = match req {
            Request::Manager(r) => (None, None, r),
            Request::ManagerAs { cred, call, req } => (Some(cred), call, req),
            other => {
                return (
                    Response::Error(RemoteError::Invalid(format!(
                        "{other} is not for a manager"
                    ))),
                    Bytes::new(),
                )
            }
        };
        let access = client_access(peer, cred.as_ref());
        match &self.manager.get() {
            // A manager still recovering (after a restart or a takeover) answers every
            // request `Unavailable`, which clients retry until it serves: a `LeaseExpired`
            // now would have them renew, be refused, and give up after a few tries.
            Some(m) if needs_session(peer, &r) && m.is_ready() && !m.has_session(peer.addr) => {
                proto::warn_limited!(node = %self.info.name, addr = %peer.addr, "refused {r}: the client has no lease session");
                (
                    Response::Error(RemoteError::LeaseExpired(
                        "no lease session on this connection: send Hello first".into(),
                    )),
                    Bytes::new(),
                )
            }
            Some(m) => match m
                .handle_leased_as(Some(peer.addr), access.as_ref(), call, r)
                .await
            {
                Ok((resp, None)) => (Response::Manager(resp), Bytes::new()),
                Ok((resp, Some(lease))) => (Response::ManagerLeased(resp, lease), Bytes::new()),
                Err(e) => (Response::Error(e), Bytes::new()),
            },
            None => (
                Response::Error(RemoteError::NoRole("manager".into())),
                Bytes::new(),
            ),
        }
    }
}

/// Whose permissions a manager request is checked with: a client identity (one that is
/// not also a manager or an admin) always, with its claimed credentials mapped through
/// the export options of its verified certificate; managers and admins are not checked.
fn client_access(
    peer: &Peer,
    cred: Option<&proto::msg::Credentials>,
) -> Option<manager::access::Access> {
    use proto::identity::Role;
    let id = peer.identity.as_ref()?;
    if id.has(Role::Manager) || id.has(Role::Admin) {
        return None;
    }
    Some(manager::access::effective(&id.export, cred))
}

/// Leases fail closed: a client identity (one that is not also a manager or an admin)
/// is served only from a connection that holds a lease session, except for the requests
/// that open, renew and end one, and `Counts` (file system totals for `shoal status` and
/// statfs, which no lease covers).
fn needs_session(peer: &Peer, req: &proto::msg::ManagerRequest) -> bool {
    use proto::identity::Role;
    use proto::msg::ManagerRequest as R;
    let Some(id) = &peer.identity else {
        return true;
    };
    let client_only = id.has(Role::Client) && !id.has(Role::Manager) && !id.has(Role::Admin);
    client_only
        && !matches!(
            req,
            R::Hello { .. } | R::Renew { .. } | R::Goodbye { .. } | R::Counts
        )
}

/// Loads the TLS identity `name` ("client" or a node name) of a cluster.
pub fn identity(config: &ClusterConfig, name: &str) -> Result<Identity, NodeError> {
    let (cert, key) = config.cert_paths(name);
    let ca = config.ca_cert_path();
    if !ca.exists() {
        return Err(NodeError::Other(format!(
            "{} is missing: this cluster directory has no certificates; copy tls/ca.pem, tls/{name}.pem and tls/{name}.key into it from the directory `shoal init` wrote",
            ca.display()
        )));
    }
    for p in [&cert, &key] {
        match std::fs::File::open(p) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(NodeError::Other(format!(
                    "{} is missing: copy it from the directory `shoal init` wrote, or issue it with `shoal cert issue` (client and admin identities)",
                    p.display()
                )))
            }
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                return Err(NodeError::Other(format!(
                    "cannot read {} as uid {} (permission denied): run as the user that owns it, or `chown {} {}`",
                    p.display(),
                    effective_uid(),
                    effective_uid(),
                    p.display()
                )))
            }
            Err(_) => {}
        }
    }
    let id =
        Identity::load(&config.ca_cert_path(), &cert, &key).map_err(|source| NodeError::Tls {
            name: name.to_string(),
            source,
        })?;
    // Checked here, in words, rather than left to a TLS alert at the first handshake.
    if let Some((from, until)) = id.validity() {
        let now = proto::wall_clock::now_unix();
        if let Err(v) = proto::wall_clock::check_validity(now, from, until) {
            return Err(NodeError::Other(format!(
                "the certificate {} of `{name}` {v}{}",
                cert.display(),
                match v {
                    proto::wall_clock::Validity::Expired { .. } => format!(
                        " (`shoal cert issue --cluster {} client|admin {name}` for a client or \
                         admin identity; a node's certificate comes from `shoal init`)",
                        config.dir.display()
                    ),
                    proto::wall_clock::Validity::NotYet { .. } => String::new(),
                }
            )));
        }
    }
    Ok(id)
}

/// The effective uid of this process (for messages).
fn effective_uid() -> u32 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or(u32::MAX)
}

/// Creates the node's state directory and checks that this process can write there, with
/// an error that says what to do when it cannot.
fn writable_state_dir(dir: &std::path::Path) -> Result<(), NodeError> {
    let probe = dir.join(".shoal-write-check");
    let r = std::fs::create_dir_all(dir).and_then(|()| std::fs::write(&probe, b""));
    let _ = std::fs::remove_file(&probe);
    match r {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            let uid = effective_uid();
            Err(NodeError::Other(format!(
                "state directory {} is not writable by uid {uid} ({e}): `chown -R {uid} {}` or run the node as the user that owns it",
                dir.display(),
                dir.display()
            )))
        }
        Err(source) => Err(NodeError::Io {
            path: dir.to_path_buf(),
            source,
        }),
    }
}

/// Binds the node's address. A node restarted right after it stopped may find its port
/// still held while the old endpoint drains its connections (and tasks of the old node
/// that were mid-call let go of it), so `AddrInUse` is retried for up to 20 s before
/// giving up (CI once saw more than 5 s on a loaded machine).
pub(crate) async fn bind_with_retry(
    addr: std::net::SocketAddr,
    id: &Identity,
) -> Result<Arc<Transport>, NodeError> {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        match Transport::bind(addr, id, true) {
            Err(proto::transport::TransportError::Bind { source, .. })
                if source.kind() == std::io::ErrorKind::AddrInUse
                    && std::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            other => return Ok(other?),
        }
    }
}

/// A started node.
pub struct RunningNode {
    pub name: String,
    pub transport: Arc<Transport>,
    /// The node's own manager (started again when its group comes back after a move).
    manager: Arc<OwnManager>,
    /// The node's config group member (manager nodes).
    config_group: Option<Arc<ConfigGroup>>,
    serve: tokio::task::JoinHandle<()>,
    /// Background workers of the roles (storage scrub, rebuild); aborted when the node stops.
    workers: Vec<(&'static str, tokio::task::JoinHandle<()>)>,
    /// The status the node's workers (scrub, rebuild, cleaner) report.
    registry: Arc<Workers>,
    /// The node's HTTP endpoint (`http` in its config), stopped with the node.
    http: Option<crate::http::HttpEndpoint>,
    parts: NodeParts,
    /// Manager groups this node serves for others after takeovers.
    hosting: Arc<crate::hosting::Hosting>,
}

/// The capacity and reserve of storage node `node` from the config.
fn storage_limits(
    config: &ClusterConfig,
    node: &proto::config::Node,
) -> Result<storage::admit::Limits, NodeError> {
    let reserve = match &config.file.storage.reserve {
        Some(r) => Some(
            proto::config::parse_size(r)
                .map_err(|e| NodeError::Storage(format!("[storage] reserve {e}")))?,
        ),
        None => None,
    };
    Ok(storage::admit::Limits {
        capacity: node.capacity,
        reserve,
    })
}

impl RunningNode {
    /// Starts every role of node `name`: opens the storage directory, starts the manager
    /// (which recovers in the background), then answers requests.
    pub async fn start(config: Arc<ClusterConfig>, name: &str) -> Result<RunningNode, NodeError> {
        RunningNode::start_with(config, name, GroupOptions::default()).await
    }

    /// `start` with the config group member's options (tests).
    pub async fn start_with(
        config: Arc<ClusterConfig>,
        name: &str,
        group: GroupOptions,
    ) -> Result<RunningNode, NodeError> {
        let node = config
            .node_by_name(name)
            .ok_or_else(|| NodeError::UnknownNode(name.to_string()))?
            .clone();
        // A manager whose group another node took over runs no manager: only its config
        // group member, if it is one.
        let serves_manager = node.has(Role::Manager) && !node.is_hosted();
        if node.has(Role::Manager) && node.is_hosted() {
            let host = config.node(node.host).map_or("?", |h| h.name.as_str());
            tracing::warn!(
                node = %name,
                epoch = config.file.epoch,
                "{name}'s manager group is served by {host} since a takeover: this node does not serve it"
            );
        }
        let id = identity(&config, name)?;
        writable_state_dir(&node.state_dir)?;
        let transport = bind_with_retry(node.address, &id).await?;
        transport.expect_peers(crate::cluster::expected_peers(&config)?);
        // The config this node's writers and readers follow while it runs (storage nodes
        // added); who serves which slot stays as in `config`.
        let live = proto::live::LiveConfig::new(config.clone());
        let deny = Arc::new(DenyState::open(
            &config,
            &id,
            &node.state_dir,
            transport.clone(),
        )?);
        let storage = if node.has(Role::Storage) {
            let dir = node.state_dir.join("storage");
            tracing::info!(node = %name, dir = %dir.display(), "starting storage server");
            Some(
                storage::server::Server::open_with(&dir, storage_limits(&config, &node)?)
                    .await
                    .map_err(|e| NodeError::Storage(e.to_string()))?,
            )
        } else {
            None
        };
        // The follower runs from the start, so that a manager's recovery can wait for a
        // newer config (`LogReader::list_segments_seen`).
        let t = transport.clone();
        let mut follower = Started(Some(tokio::spawn(proto::follow::run(
            live.clone(),
            transport.clone(),
            move |c| expect_nodes_of(&t, c),
        ))));
        let config_group = if config_group::is_member(&config, node.id) {
            tracing::info!(node = %name, "starting the config group member");
            Some(ConfigGroup::start(&config, node.id, transport.clone(), group).await?)
        } else {
            None
        };
        // Automatic takeover: this node's manager groups serve only under its membership
        // lease, renewed with the config group (`renewal`).
        let serving = (config.file.manager.auto_takeover
            && node.has(Role::Manager)
            && config_group.is_some())
        .then(|| Arc::new(manager::serving_lease::ServingLease::new()));
        let manager = if serves_manager {
            tracing::info!(node = %name, slots = config.slots_of(node.id).len(), "starting manager");
            // Every manager is a member: it serves once its file agrees with the group's.
            // A committed config that extends this node's file harmlessly is installed before
            // recovery reads the journal, which may be striped over storage nodes only the
            // committed config names.
            let gate = config_group.as_ref().map(|g| {
                let agreement = g.agreement(config.file.clone());
                let (live, t, me) = (live.clone(), transport.clone(), node.id);
                Box::pin(async move {
                    if let Some(file) = agreement.await? {
                        let dir = live.current().dir.clone();
                        let committed = Arc::new(
                            ClusterConfig::from_file(&dir, file)
                                .map_err(|e| format!("the committed cluster config: {e}"))?,
                        );
                        live.catch_up(committed.clone())
                            .map_err(|e| format!("the committed cluster config: {e}"))?;
                        expect_nodes_of(&t, &committed);
                    }
                    // The agreement may have gone by this member's applied state (no leader
                    // answered), which predates a takeover made while this node was down:
                    // one round of the members' answers decides whether it still serves.
                    let newest = crate::hosting::newest_committed(&live, &t).await;
                    let latest = newest.map(Arc::new).unwrap_or_else(|| live.current());
                    if let Some(h) = latest.node(me).filter(|n| n.is_hosted()) {
                        let host = latest.node(h.host).map_or("?", |x| x.name.as_str());
                        return Err(format!(
                            "this manager's group is served by {host} since a takeover (committed epoch {}): this node must not serve it",
                            latest.file.epoch
                        ));
                    }
                    Ok(())
                }) as manager::service::StartGate
            });
            let m = manager::Service::start_after(live.clone(), node.id, transport.clone(), gate)
                .await
                .map_err(|e| NodeError::Manager(e.to_string()))?;
            if let Some(l) = &serving {
                m.require_serving_lease(l.clone());
            }
            Some(m)
        } else {
            None
        };
        let mut workers = vec![("config-follower", follower.keep())];
        let registry = Arc::new(Workers::default());
        if let Some(s) = &storage {
            tracing::info!(node = %name, period_secs = config.file.storage.scrub_period_secs, "starting scrub worker");
            let w = registry.register("scrub");
            workers.push(("scrub", s.start_scrub(&config, transport.clone(), w)));
        }
        let roles = node.roles.iter().map(|r| r.to_string()).collect();
        let info = NodeInfo {
            name: name.to_string(),
            roles,
            version: proto::VERSION.to_string(),
            workers: Vec::new(),
            config_group: None,
            config_epoch: 0,
        };
        let own = OwnManager::new(manager.clone());
        let parts = NodeParts {
            name: name.into(),
            storage: storage.clone(),
            manager: own.clone(),
            registry: registry.clone(),
        };
        // Manager groups handed to this node by a takeover, the deposition of its own, and
        // its return.
        let hosting = crate::hosting::Hosting::new(
            node.id,
            name.to_string(),
            id.clone(),
            live.clone(),
            transport.clone(),
            deny.clone(),
            registry.clone(),
            own.clone(),
            serving.clone(),
        );
        let handler = Arc::new(NodeHandler {
            info,
            live: live.clone(),
            storage,
            manager: own.clone(),
            config_group: config_group.clone(),
            hosting: Some(hosting.clone()),
            deny,
            registry: registry.clone(),
        });
        let serve = transport.serve(handler);
        workers.push(("hosting", tokio::spawn(hosting.clone().run())));
        if let (Some(l), Some(g)) = (&serving, &config_group) {
            tracing::info!(node = %name, "automatic takeover is on: renewing this node's membership lease with the config group");
            workers.push((
                "membership-lease",
                tokio::spawn(crate::renewal::run(
                    g.clone(),
                    node.id,
                    name.to_string(),
                    live.clone(),
                    l.clone(),
                )),
            ));
        }
        tracing::info!(node = %name, addr = %node.address, "node is serving");
        let http = match node.http {
            Some(addr) => {
                let source = crate::http::Source::node(transport.clone(), parts.clone());
                Some(crate::http::serve(addr, config.clone(), vec![source]).await?)
            }
            None => None,
        };
        // The cleaner, the reclaimer and the background rebuild, on the node the config in
        // force names, while its own manager serves (`duties`).
        if node.has(Role::Manager) {
            workers.push((
                "duties",
                tokio::spawn(crate::duties::run(
                    node.id,
                    name.to_string(),
                    live.clone(),
                    transport.clone(),
                    own.clone(),
                    registry.clone(),
                )),
            ));
        }
        // Never stopped through the watch: the task is aborted with the node.
        let (clock_tx, clock_rx) = tokio::sync::watch::channel(false);
        let who = name.to_string();
        workers.push((
            "clock",
            tokio::spawn(async move {
                let _keep = clock_tx;
                proto::wall_clock::watch(who, std::time::Duration::from_secs(2), clock_rx).await
            }),
        ));
        Ok(RunningNode {
            name: name.to_string(),
            transport,
            manager: own,
            config_group,
            serve,
            workers,
            registry,
            http,
            parts,
            hosting,
        })
    }

    /// What the HTTP endpoint of this process reports of this node.
    pub fn http_source(&self) -> crate::http::Source {
        crate::http::Source::node(self.transport.clone(), self.parts.clone())
    }

    /// The named background workers of this node's roles (the manager's journal, the
    /// cleaner, the storage scrub, the background rebuild) and what each is doing.
    pub fn workers(&self) -> Vec<WorkerStatus> {
        all_workers(self.manager.get().as_deref(), &self.registry)
    }

    /// Where the node's HTTP endpoint listens, if it has one.
    pub fn http_addr(&self) -> Option<std::net::SocketAddr> {
        self.http.as_ref().map(|h| h.addr)
    }

    /// The manager role of this node, if it runs one (diagnostics, benchmarks).
    pub fn manager(&self) -> Option<Arc<manager::Service>> {
        self.manager.get()
    }

    /// The manager groups this node serves for other nodes (after takeovers).
    pub fn hosting(&self) -> Arc<crate::hosting::Hosting> {
        self.hosting.clone()
    }

    /// The config group member of this node, if it is a manager.
    pub fn config_group(&self) -> Option<Arc<ConfigGroup>> {
        self.config_group.clone()
    }

    /// Stops the node abruptly, as a crash would: nothing is flushed or checkpointed. (The
    /// config group member is stopped too; it has nothing unflushed: it acknowledges only
    /// what is on disk.)
    pub async fn kill(self) {
        // The hosting task first, so that no install starts a group after this.
        self.stop_workers();
        self.hosting.close().await;
        if let Some(m) = self.manager.get() {
            m.kill();
        }
        self.hosting.stop_all(true).await;
        if let Some(g) = &self.config_group {
            g.shutdown().await;
        }
        self.transport.close();
        self.serve.abort();
        tracing::info!(node = %self.name, "node killed");
    }

    fn stop_workers(&self) {
        for (name, w) in &self.workers {
            w.abort();
            tracing::debug!(node = %self.name, worker = name, "worker stopped");
        }
    }

    /// Stops the node cleanly: the manager commits and checkpoints, then the endpoint closes.
    pub async fn stop(self) {
        self.stop_workers();
        self.hosting.close().await;
        if let Some(m) = self.manager.get() {
            if let Err(e) = m.shutdown().await {
                tracing::warn!(node = %self.name, "manager shutdown: {e}");
            }
        }
        self.hosting.stop_all(false).await;
        if let Some(g) = &self.config_group {
            g.shutdown().await;
        }
        self.transport.close();
        let _ = tokio::time::timeout(Duration::from_secs(2), self.transport.wait_idle()).await;
        self.serve.abort();
        tracing::info!(node = %self.name, "node stopped");
    }
}
