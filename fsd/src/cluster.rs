//! Cluster-level wiring: `init` (config and certificates), an all-in-one local cluster for
//! `shoal up`, client mounts, and the status probe. Owns files under the cluster directory;
//! never touches a node's state directly.

use crate::config_group::GroupOptions;
use crate::error::NodeError;
use crate::node::{identity, RunningNode};
use proto::config::{ClusterConfig, ClusterFile, ErasureConfig, Role, CONFIG_FILE};
use proto::identity::{ExportOptions, PeerIdentity, Role as IdRole};
use proto::msg::{
    AdminRequest, ManagerRequest, NodeInfo, RemoteError, Request, Response, StorageRequest,
    StorageStat,
};
use proto::tls::{write_pem, CertAuthority};
use proto::transport::Transport;
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Parameters of `shoal init`.
#[derive(Clone, Debug)]
pub struct InitParams {
    pub name: String,
    pub storage: usize,
    pub managers: usize,
    pub erasure: ErasureConfig,
    pub base_port: u16,
}

/// The identity name of the default client certificate (`shoal mount` without `--as`,
/// `shoal up`) and of the default admin certificate (the CLI's cluster tools).
pub const DEFAULT_CLIENT: &str = "client";
pub const DEFAULT_ADMIN: &str = "admin";

/// The identity of node `n` of `config`: its name, one role per role it runs.
pub fn node_identity(n: &proto::config::Node) -> Result<PeerIdentity, NodeError> {
    proto::identity::of_node(n).map_err(|e| NodeError::Other(e.to_string()))
}

/// Who must answer at each node address of `config`: dialled nodes whose certificate is
/// not theirs (name and every role) are refused.
pub fn expected_peers(
    config: &ClusterConfig,
) -> Result<std::collections::HashMap<SocketAddr, proto::identity::ExpectedPeer>, NodeError> {
    proto::identity::expected_peers(config).map_err(|e| NodeError::Other(e.to_string()))
}

/// Why `propose_to_group` did not commit.
#[derive(Debug, thiserror::Error)]
pub enum ProposeError {
    /// No member answered at all (the cluster is not running, or not reachable from here).
    #[error("no config group member answered: {0}")]
    Unreachable(String),
    /// A member answered and refused (another epoch, a change running nodes do not follow,
    /// no quorum).
    #[error("{0}")]
    Refused(String),
}

/// Proposes `new` (the config after `old`, e.g. `shoal node add`'s) to the running
/// cluster's config group with the admin identity, asking each member of `old`'s group
/// until one commits it: running nodes and mounts then follow it (`proto::follow`).
/// Returns the member that committed it.
pub async fn propose_to_group(
    old: &ClusterConfig,
    new: &ClusterConfig,
) -> Result<String, ProposeError> {
    let transport = admin_transport(new).map_err(|e| ProposeError::Unreachable(e.to_string()))?;
    let req = Request::Admin(AdminRequest::ProposeConfig {
        expect_epoch: old.file.epoch,
        file: ClusterConfig::render(&new.file),
    });
    let (mut unreachable, mut refused) = (Vec::new(), Vec::new());
    for m in old.config_group_members() {
        match transport
            .call_timeout(
                m.address,
                &req,
                bytes::Bytes::new(),
                Duration::from_secs(15),
            )
            .await
        {
            Ok((Response::Config { file: Some(_) }, _)) => return Ok(m.name.clone()),
            Ok((Response::Error(e), _)) => refused.push(format!("{}: {e}", m.name)),
            Ok((other, _)) => refused.push(format!("{}: answered {other}", m.name)),
            Err(e) => unreachable.push(format!("{}: {e}", m.name)),
        }
    }
    if refused.is_empty() {
        Err(ProposeError::Unreachable(unreachable.join("; ")))
    } else {
        refused.extend(unreachable);
        Err(ProposeError::Refused(refused.join("; ")))
    }
}

/// Moves manager `name`'s group to manager `to` while both run (`shoal manager move`): asks
/// the node serving the group now (by the newest committed config) to hand it over. The
/// committed config after the move; `ProposeError::Refused` with the reason otherwise
/// (after which the group is served where it was).
pub async fn move_group(
    config: &ClusterConfig,
    name: &str,
    to: &str,
) -> Result<ClusterConfig, ProposeError> {
    let unreachable = |e: NodeError| ProposeError::Unreachable(e.to_string());
    let current = committed_config(config)
        .await
        .map_err(unreachable)?
        .unwrap_or_else(|| config.clone());
    let g = current
        .node_by_name(name)
        .ok_or_else(|| ProposeError::Refused(format!("no node named {name}")))?;
    let host = current
        .node(g.host)
        .ok_or_else(|| ProposeError::Refused(format!("{name}'s host is not in the config")))?;
    let transport = admin_transport(&current).map_err(unreachable)?;
    let req = Request::Admin(AdminRequest::MoveGroup {
        group: name.to_string(),
        to: to.to_string(),
    });
    // The hand-over waits for the group's last changes, the adoption and, when it fails,
    // for the config group to fence it (`fsd::handover`). A host that has not installed
    // the committed config yet asks to be asked again (within a follower round).
    let mut answer;
    let mut tries = 0;
    loop {
        answer = transport
            .call_timeout(
                host.address,
                &req,
                bytes::Bytes::new(),
                Duration::from_secs(90),
            )
            .await;
        match &answer {
            Ok((Response::Error(proto::msg::RemoteError::Unavailable(why)), _))
                if why.contains("try again in a second") && tries < 5 =>
            {
                tries += 1;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            _ => break,
        }
    }
    transport.close();
    let text = match answer {
        Ok((Response::Config { file: Some(text) }, _)) => text,
        Ok((Response::Error(e), _)) => {
            return Err(ProposeError::Refused(format!("{}: {e}", host.name)))
        }
        Ok((other, _)) => {
            return Err(ProposeError::Refused(format!(
                "{} answered {other}",
                host.name
            )))
        }
        Err(e) => return Err(ProposeError::Unreachable(format!("{}: {e}", host.name))),
    };
    let file = proto::follow::parse(&text)
        .map_err(|e| ProposeError::Refused(format!("the committed config: {e}")))?;
    ClusterConfig::from_file(&config.dir, file)
        .map_err(|e| ProposeError::Refused(format!("the committed config: {e}")))
}

/// Issues and writes the certificate and key of `id` under the cluster's `tls/`.
pub fn write_identity(
    config: &ClusterConfig,
    ca: &CertAuthority,
    id: &PeerIdentity,
    valid_for: Option<Duration>,
) -> Result<(), NodeError> {
    let tls_err = |source| NodeError::Tls {
        name: id.name.clone(),
        source,
    };
    let (cert, key) = ca.issue_identity(id, valid_for).map_err(tls_err)?;
    let (cp, kp) = config.cert_paths(&id.name);
    write_pem(&cp, &cert, false).map_err(tls_err)?;
    write_pem(&kp, &key, true).map_err(tls_err)
}

/// Writes a new cluster into `dir`: `cluster.toml`, the CA, one certificate per node
/// (carrying its roles), one for the default client identity `client` and one for the
/// default admin identity `admin`. Refuses to overwrite an existing cluster.
pub fn init(dir: &Path, p: &InitParams) -> Result<ClusterConfig, NodeError> {
    let cfg_path = dir.join(CONFIG_FILE);
    if cfg_path.exists() {
        return Err(NodeError::Other(format!(
            "{} already exists: this directory holds a cluster; pick another --cluster DIR or remove it first",
            cfg_path.display()
        )));
    }
    let file = ClusterConfig::generate(&p.name, p.storage, p.managers, p.erasure, p.base_port)?;
    let config = ClusterConfig::from_file(dir, file.clone())?;
    let tls = dir.join("tls");
    std::fs::create_dir_all(&tls).map_err(|source| NodeError::Io {
        path: tls.clone(),
        source,
    })?;
    let tls_err = |name: &str| {
        let name = name.to_string();
        move |source| NodeError::Tls { name, source }
    };
    let ca = CertAuthority::generate(&p.name).map_err(tls_err("ca"))?;
    write_pem(&config.ca_cert_path(), &ca.cert_pem, false).map_err(tls_err("ca"))?;
    write_pem(&config.ca_key_path(), &ca.key_pem, true).map_err(tls_err("ca"))?;
    let mut ids = Vec::new();
    for n in &config.nodes {
        ids.push(node_identity(n)?);
    }
    let other = |e: proto::identity::IdentityError| NodeError::Other(e.to_string());
    ids.push(default_client().map_err(other)?);
    ids.push(PeerIdentity::new(DEFAULT_ADMIN, &[IdRole::Admin]).map_err(other)?);
    for id in &ids {
        write_identity(&config, &ca, id, None)?;
    }
    let text = ClusterConfig::render(&file);
    std::fs::write(&cfg_path, text).map_err(|source| NodeError::Io {
        path: cfg_path.clone(),
        source,
    })?;
    Ok(config)
}

/// The default client identity `shoal init` issues: the cluster administrator's own
/// mount, so it is `trusted` (root keeps its power there, as on an NFS export with
/// `no_root_squash` to the admin host). Identities made with `shoal cert issue` are
/// root-squashed unless issued with `--trusted`.
fn default_client() -> Result<PeerIdentity, proto::identity::IdentityError> {
    Ok(
        PeerIdentity::new(DEFAULT_CLIENT, &[IdRole::Client])?.with_export(ExportOptions {
            trusted: true,
            ..Default::default()
        }),
    )
}

/// Adds storage node `name` at `address` (with an optional `capacity` such as "2GiB") to
/// the cluster in `dir`: appends it to the end of the storage list in `cluster.toml` (so
/// the recorded placement of every existing segment stays where it is), bumps the epoch,
/// and issues its certificate with the CA key. Running processes read `cluster.toml` when
/// they start: new stripes use the node once writers (managers, mounts) have restarted.
pub fn add_storage_node(
    dir: &Path,
    name: &str,
    address: SocketAddr,
    capacity: Option<String>,
) -> Result<ClusterConfig, NodeError> {
    let (_, config) = plan_storage_node(dir, name, address, capacity)?;
    write_added_node(&config, name)?;
    Ok(config)
}

/// The config of `dir` and the one with storage node `name` added (epoch + 1, a new id),
/// checked but not written.
pub fn plan_storage_node(
    dir: &Path,
    name: &str,
    address: SocketAddr,
    capacity: Option<String>,
) -> Result<(ClusterConfig, ClusterConfig), NodeError> {
    let old = ClusterConfig::load(dir)?;
    if !old.ca_key_path().exists() {
        return Err(NodeError::Other(format!(
            "{} is missing: adding a node issues its certificate with the cluster CA key (run this where it is)",
            old.ca_key_path().display()
        )));
    }
    if old.node_by_name(name).is_some() || config_has_cert(&old, name) {
        return Err(NodeError::Other(format!(
            "{name} is already a node or an identity of this cluster: pick another name"
        )));
    }
    let mut file = old.file.clone();
    let id = old.next_node_id();
    file.last_node_id = id;
    file.nodes.push(proto::config::NodeEntry {
        id: Some(id),
        name: name.to_string(),
        roles: vec![Role::Storage],
        address,
        state_dir: None,
        capacity,
        http: None,
        host: None,
        serve_at: None,
    });
    file.epoch += 1;
    let config = ClusterConfig::from_file(dir, file)?;
    Ok((old, config))
}

/// Issues the certificate of the node `name` that `config` added and writes `config` as the
/// directory's cluster.toml.
pub fn write_added_node(config: &ClusterConfig, name: &str) -> Result<(), NodeError> {
    let node = config
        .node_by_name(name)
        .ok_or_else(|| NodeError::UnknownNode(name.to_string()))?;
    let ca =
        CertAuthority::load(&config.ca_cert_path(), &config.ca_key_path()).map_err(|source| {
            NodeError::Tls {
                name: "ca".into(),
                source,
            }
        })?;
    write_identity(config, &ca, &node_identity(node)?, None)?;
    replace_config_file(&config.dir, &config.file)?;
    Ok(())
}

/// The config after manager `manager`'s group is taken over by manager `host`'s process
/// (`shoal manager takeover`): served at `address`, or by default at a free port on the
/// host's IP (found on this machine when the host's IP is one of its own; give `address`
/// for a host elsewhere). `host` = `manager` gives the group back to its own node, at its
/// own address. Returns the config before and after; writes nothing.
pub fn plan_takeover(
    dir: &Path,
    manager: &str,
    host: &str,
    address: Option<std::net::SocketAddr>,
) -> Result<(ClusterConfig, ClusterConfig), NodeError> {
    let old = ClusterConfig::load(dir)?;
    let h = old
        .node_by_name(host)
        .ok_or_else(|| NodeError::UnknownNode(host.to_string()))?;
    let address = match address {
        Some(a) => a,
        // Given back: served at the node's own address again.
        None if host == manager => h.address,
        None => {
            let ip = h.address.ip();
            crate::config_group::free_port_on(ip).map_err(|source| NodeError::Io {
                path: PathBuf::from(format!("udp {ip}:0")),
                source,
            })?
        }
    };
    let file = old.file.takeover(manager, host, address)?;
    let config = ClusterConfig::from_file(dir, file)?;
    Ok((old, config))
}

/// Writes `config` as the cluster directory's `cluster.toml` (after the group committed it).
pub fn write_config(config: &ClusterConfig) -> Result<(), NodeError> {
    replace_config_file(&config.dir, &config.file).map(|_| ())
}

/// Replaces `DIR/cluster.toml` with `file` (written beside it, then renamed over it).
fn replace_config_file(dir: &Path, file: &ClusterFile) -> Result<PathBuf, NodeError> {
    let path = dir.join(CONFIG_FILE);
    let tmp = dir.join(format!("{CONFIG_FILE}.tmp"));
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| NodeError::Io { path, source }
    };
    std::fs::write(&tmp, ClusterConfig::render(file)).map_err(io(&tmp))?;
    std::fs::rename(&tmp, &path).map_err(io(&path))?;
    Ok(path)
}

/// Writes every node's id into a `cluster.toml` written before ids existed (ids = the
/// positions they already had, so nothing changes meaning): from then on the entries may be
/// reordered safely. `shoal up` calls it; it does nothing when every node has an id.
/// Returns whether it rewrote the file.
pub fn write_node_ids(config: &ClusterConfig) -> Result<bool, NodeError> {
    if config.file.nodes.iter().all(|n| n.id.is_some()) {
        return Ok(false);
    }
    let mut file = config.file.clone();
    for (entry, node) in file.nodes.iter_mut().zip(&config.nodes) {
        entry.id = Some(node.id.0);
    }
    file.last_node_id = config.next_node_id() - 1;
    // The same ids: the file still means what it meant, so the epoch stays.
    ClusterConfig::from_file(&config.dir, file.clone())?;
    let path = replace_config_file(&config.dir, &file)?;
    tracing::info!(path = %path.display(), "wrote every node's id into the cluster config");
    Ok(true)
}

fn config_has_cert(config: &ClusterConfig, name: &str) -> bool {
    config.cert_paths(name).0.exists()
}

/// Reissues, with the CA key of the cluster directory, every node certificate and the
/// default client and admin certificates that are missing or carry no identity (clusters
/// made before certificates carried roles). `shoal up` calls it; it does nothing when all
/// carry one. Returns how many it reissued.
pub fn upgrade_identities(config: &ClusterConfig) -> Result<usize, NodeError> {
    let mut wanted = Vec::new();
    for n in &config.nodes {
        wanted.push(node_identity(n)?);
    }
    let other = |e: proto::identity::IdentityError| NodeError::Other(e.to_string());
    wanted.push(default_client().map_err(other)?);
    wanted.push(PeerIdentity::new(DEFAULT_ADMIN, &[IdRole::Admin]).map_err(other)?);
    let stale: Vec<&PeerIdentity> = wanted
        .iter()
        .filter(|id| certificate_identity(config, &id.name).as_ref() != Some(*id))
        .collect();
    if stale.is_empty() || !config.ca_key_path().exists() {
        return Ok(0);
    }
    let ca =
        CertAuthority::load(&config.ca_cert_path(), &config.ca_key_path()).map_err(|source| {
            NodeError::Tls {
                name: "ca".into(),
                source,
            }
        })?;
    for id in &stale {
        tracing::info!(identity = %id, "issuing a certificate that carries the identity");
        write_identity(config, &ca, id, None)?;
    }
    Ok(stale.len())
}

/// The identity the certificate `tls/NAME.pem` carries, if it exists and carries one.
pub fn certificate_identity(config: &ClusterConfig, name: &str) -> Option<PeerIdentity> {
    let (cp, _) = config.cert_paths(name);
    let pem = std::fs::read_to_string(cp).ok()?;
    PeerIdentity::from_cert_pem(&pem).ok()
}

/// Finds `count` consecutive free UDP ports on 127.0.0.1, starting the search at a
/// pseudo-random place so that concurrent local clusters do not collide.
pub fn free_port_range(count: u16) -> Result<u16, NodeError> {
    let seed = std::process::id() as u64
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
    for attempt in 0..200u64 {
        let base = 20000
            + ((seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(attempt * 7919))
                % 40000) as u16;
        let ok = (0..count).all(|i| UdpSocket::bind(("127.0.0.1", base + i)).is_ok());
        if ok {
            return Ok(base);
        }
    }
    Err(NodeError::Other(
        "no free range of UDP ports found on 127.0.0.1".into(),
    ))
}

/// Every node of a cluster running in this process (`shoal up`, tests).
pub struct LocalCluster {
    pub config: Arc<ClusterConfig>,
    nodes: Vec<RunningNode>,
}

impl LocalCluster {
    /// Loads `dir` (creating a 6-storage, 2-manager, 4+2 cluster there if it holds none) and
    /// starts all its nodes.
    pub async fn start_or_create(dir: &Path) -> Result<LocalCluster, NodeError> {
        if !dir.join(CONFIG_FILE).exists() {
            std::fs::create_dir_all(dir).map_err(|source| NodeError::Io {
                path: dir.to_path_buf(),
                source,
            })?;
            let base_port = free_port_range(8)?;
            let p = InitParams {
                name: "shoal-local".into(),
                storage: 6,
                managers: 2,
                erasure: ErasureConfig { data: 4, parity: 2 },
                base_port,
            };
            init(dir, &p)?;
            tracing::info!(dir = %dir.display(), base_port, "created a new local cluster");
        }
        let mut config = ClusterConfig::load(dir)?;
        if write_node_ids(&config)? {
            config = ClusterConfig::load(dir)?;
        }
        let config = Arc::new(config);
        upgrade_identities(&config)?;
        LocalCluster::start(config).await
    }

    /// Starts every node of `config` in this process.
    pub async fn start(config: Arc<ClusterConfig>) -> Result<LocalCluster, NodeError> {
        LocalCluster::start_with(config, GroupOptions::default()).await
    }

    /// `start` with the config group members' options (tests).
    pub async fn start_with(
        config: Arc<ClusterConfig>,
        group: GroupOptions,
    ) -> Result<LocalCluster, NodeError> {
        let mut nodes = Vec::new();
        for n in &config.nodes {
            match RunningNode::start_with(config.clone(), &n.name, group.clone()).await {
                Ok(r) => nodes.push(r),
                Err(e) => {
                    for r in nodes {
                        r.stop().await;
                    }
                    return Err(e);
                }
            }
        }
        Ok(LocalCluster { config, nodes })
    }

    /// Names of the nodes running in this process.
    pub fn running(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.name.clone()).collect()
    }

    /// The manager services running in this process (lease counters for benchmarks).
    /// The transport of running node `name`.
    pub fn node_transport(&self, name: &str) -> Option<Arc<Transport>> {
        self.nodes
            .iter()
            .find(|n| n.name == name)
            .map(|n| n.transport.clone())
    }

    /// The manager service of node `name`, if it runs here and is a manager.
    pub fn manager_service(&self, name: &str) -> Option<Arc<manager::Service>> {
        self.nodes
            .iter()
            .find(|n| n.name == name)
            .and_then(|n| n.manager())
    }

    /// The config group member of node `name`, if it runs here and is a manager.
    pub fn config_group(&self, name: &str) -> Option<Arc<crate::config_group::ConfigGroup>> {
        self.nodes
            .iter()
            .find(|n| n.name == name)
            .and_then(|n| n.config_group())
    }

    pub fn manager_services(&self) -> Vec<Arc<manager::Service>> {
        self.nodes.iter().filter_map(|n| n.manager()).collect()
    }

    /// Serves metrics and the status page of every node of this process on `addr`
    /// (`shoal up --http ADDR`).
    pub async fn serve_http(
        &self,
        addr: SocketAddr,
    ) -> Result<crate::http::HttpEndpoint, NodeError> {
        let sources = self.nodes.iter().map(|n| n.http_source()).collect();
        crate::http::serve(addr, self.config.clone(), sources).await
    }

    /// Stops one node; with `crash`, abruptly (no flush, no checkpoint).
    pub async fn stop_node(&mut self, name: &str, crash: bool) -> Result<(), NodeError> {
        let i = self
            .nodes
            .iter()
            .position(|n| n.name == name)
            .ok_or_else(|| NodeError::UnknownNode(name.to_string()))?;
        let n = self.nodes.remove(i);
        if crash {
            n.kill().await;
        } else {
            n.stop().await;
        }
        Ok(())
    }

    /// Starts a node of the config that is not running.
    pub async fn start_node(&mut self, name: &str) -> Result<(), NodeError> {
        if self.nodes.iter().any(|n| n.name == name) {
            return Err(NodeError::Other(format!("node {name} is already running")));
        }
        self.nodes
            .push(RunningNode::start(self.config.clone(), name).await?);
        Ok(())
    }

    /// Stops managers first (they commit to the storage servers), then storage servers.
    pub async fn stop(self) {
        let (managers, others): (Vec<_>, Vec<_>) = self.nodes.into_iter().partition(|n| {
            self.config
                .node_by_name(&n.name)
                .map(|c| c.has(Role::Manager))
                .unwrap_or(false)
        });
        for n in managers {
            n.stop().await;
        }
        for n in others {
            n.stop().await;
        }
    }
}

/// A client endpoint for a cluster with the default client identity; it also accepts
/// peer clients' reads (cooperative caching, `client_transport_as`).
pub fn client_transport(config: &ClusterConfig) -> Result<Arc<Transport>, NodeError> {
    client_transport_as(config, DEFAULT_CLIENT)
}

/// An endpoint for a mount with identity `name`: like `transport_as`, and it accepts
/// connections, on which the client answers other clients' peer reads (cooperative
/// caching; only client identities signed by the cluster CA, `proto::authz`). Peers reach
/// it at the address the managers see its connections come from.
pub fn client_transport_as(
    config: &ClusterConfig,
    name: &str,
) -> Result<Arc<Transport>, NodeError> {
    bind_as(config, name, true)
}

/// An endpoint with the default admin identity (the CLI's cluster tools).
pub fn admin_transport(config: &ClusterConfig) -> Result<Arc<Transport>, NodeError> {
    transport_as(config, DEFAULT_ADMIN)
}

/// A client endpoint with identity `name` (its `tls/NAME.pem` and `tls/NAME.key`).
pub fn transport_as(config: &ClusterConfig, name: &str) -> Result<Arc<Transport>, NodeError> {
    bind_as(config, name, false)
}

fn bind_as(config: &ClusterConfig, name: &str, server: bool) -> Result<Arc<Transport>, NodeError> {
    let id = identity(config, name)?;
    let any: SocketAddr = match config.nodes.first().map(|n| n.address) {
        Some(SocketAddr::V6(_)) => "[::]:0"
            .parse()
            .map_err(|_| NodeError::Other("address".into()))?,
        Some(a) if a.ip().is_loopback() => "127.0.0.1:0"
            .parse()
            .map_err(|_| NodeError::Other("address".into()))?,
        _ => "0.0.0.0:0"
            .parse()
            .map_err(|_| NodeError::Other("address".into()))?,
    };
    let t = Transport::bind(any, &id, server)?;
    t.expect_peers(expected_peers(config)?);
    Ok(t)
}

/// Connects a client with the default client identity and mounts it at `mountpoint`.
pub async fn mount(
    config: Arc<ClusterConfig>,
    mountpoint: &Path,
    opts: &fuse_client::MountOptions,
) -> Result<fuse_client::Mount, NodeError> {
    mount_as(config, DEFAULT_CLIENT, mountpoint, opts).await
}

/// Connects a client with identity `name` and mounts it at `mountpoint`.
pub async fn mount_as(
    config: Arc<ClusterConfig>,
    name: &str,
    mountpoint: &Path,
    opts: &fuse_client::MountOptions,
) -> Result<fuse_client::Mount, NodeError> {
    Ok(mount_serving(config, name, mountpoint, opts, None).await?.0)
}

/// `mount_as`, and with `http` an HTTP endpoint there serving this client's metrics (and
/// the cluster's status page); it stops when dropped.
pub async fn mount_serving(
    config: Arc<ClusterConfig>,
    name: &str,
    mountpoint: &Path,
    opts: &fuse_client::MountOptions,
    http: Option<SocketAddr>,
) -> Result<(fuse_client::Mount, Option<crate::http::HttpEndpoint>), NodeError> {
    let transport = client_transport_as(&config, name)?;
    let client = fuse_client::Client::connect(config.clone(), transport.clone())
        .await
        .map_err(|e| NodeError::Client(e.to_string()))?;
    let m = fuse_client::mount(client, tokio::runtime::Handle::current(), mountpoint, opts)
        .map_err(|e| NodeError::Client(e.to_string()))?;
    let endpoint = match http {
        Some(addr) => {
            let source = crate::http::Source::client(transport, m.client().clone());
            match crate::http::serve(addr, config, vec![source]).await {
                Ok(e) => Some(e),
                Err(e) => {
                    let _ = m.unmount().await;
                    return Err(e);
                }
            }
        }
        None => None,
    };
    Ok((m, endpoint))
}

/// Why `status` could not reach a node.
#[derive(Clone, Debug, thiserror::Error)]
pub enum Unreachable {
    /// The node answered a ping with something else.
    #[error("unexpected answer {0}")]
    UnexpectedAnswer(String),
    #[error(transparent)]
    Transport(Arc<proto::transport::TransportError>),
}

impl Unreachable {
    /// Whether the failure names a certificate (this client's does not match the cluster).
    pub fn is_certificate(&self) -> bool {
        self.to_string().contains("certificate")
    }
}

/// What `status` learned of one node.
#[derive(Clone, Debug)]
pub struct NodeStatus {
    pub name: String,
    pub roles: Vec<Role>,
    pub address: SocketAddr,
    /// `Err` with the reason when the node could not be reached.
    pub reachable: Result<NodeInfo, Unreachable>,
    pub storage: Option<StorageStat>,
    /// For storage servers: scrub progress and last results.
    pub scrub: Option<proto::msg::ScrubReport>,
    /// For managers: whether they answer metadata requests (not still recovering).
    pub manager_ready: Option<bool>,
    /// For managers that will not serve (a refused recovery, or a cluster.toml that
    /// contradicts the committed config): why, as the manager says it.
    pub manager_refusal: Option<String>,
}

/// A node's state as `shoal status`, its `--json` and the status page show it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeState {
    /// It answers (and, for a manager, serves metadata).
    Up,
    /// A manager that answers pings but is still recovering its state.
    Recovering,
    /// A manager that answers pings but will not serve (`NodeStatus::manager_refusal`).
    Refused,
    /// It could not be reached.
    Down,
}

impl NodeState {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeState::Up => "up",
            NodeState::Recovering => "recovering",
            NodeState::Refused => "refused",
            NodeState::Down => "down",
        }
    }
}

impl std::fmt::Display for NodeState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl ClusterStatus {
    /// Healthy when every node is up, degraded when it serves anyway, else unavailable.
    pub fn health(&self) -> Health {
        let all_up = self.nodes.iter().all(|n| n.state() == NodeState::Up);
        match (self.can_serve, all_up) {
            (false, _) => Health::Unavailable,
            (true, true) => Health::Healthy,
            (true, false) => Health::Degraded,
        }
    }

    /// How many nodes are not up.
    pub fn not_up(&self) -> usize {
        self.nodes
            .iter()
            .filter(|n| n.state() != NodeState::Up)
            .count()
    }
}

impl NodeStatus {
    /// Down when unreachable, recovering when a manager answers but does not serve yet.
    pub fn state(&self) -> NodeState {
        match (&self.reachable, self.manager_ready) {
            (Err(_), _) => NodeState::Down,
            (Ok(_), Some(false)) if self.manager_refusal.is_some() => NodeState::Refused,
            (Ok(_), Some(false)) => NodeState::Recovering,
            (Ok(_), _) => NodeState::Up,
        }
    }
}

/// The health line of `shoal status` and the status page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Health {
    /// Every node is up.
    Healthy,
    /// Some node is down or recovering (or data is degraded) but the cluster serves.
    Degraded,
    /// The cluster cannot serve (a manager not ready, or too few storage servers).
    Unavailable,
}

impl Health {
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Healthy => "healthy",
            Health::Degraded => "degraded",
            Health::Unavailable => "unavailable",
        }
    }
}

/// The cluster at a glance.
#[derive(Clone, Debug)]
pub struct ClusterStatus {
    pub nodes: Vec<NodeStatus>,
    /// Every manager ready and at least k+1 storage servers reachable (k to read).
    pub can_serve: bool,
}

/// The config group members' committed config, when it is newer than `config` and a running
/// node would follow it (`proto::live::accepts`: a takeover made since this `cluster.toml`
/// was written, or storage nodes added); `None` otherwise or when no member answers.
pub async fn committed_config(config: &ClusterConfig) -> Result<Option<ClusterConfig>, NodeError> {
    let transport = transport_as(config, DEFAULT_CLIENT)?;
    let newer = proto::follow::newer_to_follow(&transport, config).await;
    transport.close();
    Ok(newer)
}

/// Probes every node of the cluster with the client identity.
pub async fn status(config: &ClusterConfig) -> Result<ClusterStatus, NodeError> {
    let transport = transport_as(config, DEFAULT_CLIENT)?;
    let timeout = Duration::from_secs(3);
    let mut probes = Vec::new();
    for n in &config.nodes {
        let t = transport.clone();
        let n = n.clone();
        probes.push(tokio::spawn(async move {
            let reachable = match t
                .call_timeout(n.address, &Request::Ping, bytes::Bytes::new(), timeout)
                .await
            {
                Ok((Response::Pong(info), _)) => Ok(info),
                Ok((other, _)) => Err(Unreachable::UnexpectedAnswer(other.to_string())),
                Err(e) => Err(Unreachable::Transport(Arc::new(e))),
            };
            let mut storage = None;
            let mut scrub = None;
            let mut manager_ready = None;
            let mut manager_refusal = None;
            if reachable.is_ok() && n.has(Role::Storage) {
                if let Ok((Response::Storage(proto::msg::StorageResponse::Stat(s)), _)) = t
                    .call_timeout(
                        n.address,
                        &Request::Storage(StorageRequest::Stat),
                        bytes::Bytes::new(),
                        timeout,
                    )
                    .await
                {
                    storage = Some(s);
                }
                if let Ok((Response::Storage(proto::msg::StorageResponse::Scrub(s)), _)) = t
                    .call_timeout(
                        n.address,
                        &Request::Storage(StorageRequest::ScrubStatus),
                        bytes::Bytes::new(),
                        timeout,
                    )
                    .await
                {
                    scrub = Some(s);
                }
            }
            // A manager's slots are served at its group's address: its own, or its host's
            // endpoint after a takeover (then whether its machine answers does not matter).
            if n.has(Role::Manager) && (reachable.is_ok() || n.is_hosted()) {
                let r = t
                    .call_timeout(
                        n.group_address,
                        &Request::Manager(ManagerRequest::Counts),
                        bytes::Bytes::new(),
                        timeout,
                    )
                    .await;
                manager_ready = Some(matches!(
                    r,
                    Ok((Response::Manager(_) | Response::ManagerLeased(..), _))
                ));
                if let Ok((Response::Error(RemoteError::Unavailable(why)), _)) = &r {
                    if let Some(why) = why.strip_prefix(proto::msg::REFUSED_PREFIX) {
                        manager_refusal = Some(why.to_string());
                    }
                }
            } else if n.has(Role::Manager) {
                manager_ready = Some(false);
            }
            NodeStatus {
                name: n.name.clone(),
                roles: n.roles.clone(),
                address: n.address,
                reachable,
                storage,
                scrub,
                manager_ready,
                manager_refusal,
            }
        }));
    }
    let mut nodes = Vec::new();
    for p in probes {
        nodes.push(p.await.map_err(|e| NodeError::Other(e.to_string()))?);
    }
    let k = config.file.erasure.data as usize;
    let m = config.file.erasure.parity as usize;
    let storage_up = nodes
        .iter()
        .filter(|n| n.roles.contains(&Role::Storage) && n.storage.is_some())
        .count();
    let managers_ok = nodes
        .iter()
        .filter(|n| n.roles.contains(&Role::Manager))
        .all(|n| n.manager_ready == Some(true));
    let certificate_problem = nodes.iter().find_map(|n| match &n.reachable {
        Err(e) if e.is_certificate() => Some(e.clone()),
        _ => None,
    });
    if let Some(e) = certificate_problem {
        if nodes.iter().all(|n| n.reachable.is_err()) {
            return Err(NodeError::Other(format!(
                "{e}\nthe client certificate in {}/tls does not match this cluster's CA",
                config.dir.display()
            )));
        }
    }
    transport.close();
    Ok(ClusterStatus {
        nodes,
        can_serve: managers_ok && storage_up >= (k + 1).min(k + m),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(reachable: bool, manager_ready: Option<bool>) -> NodeStatus {
        NodeStatus {
            name: "n".into(),
            roles: vec![Role::Manager],
            address: "127.0.0.1:1".parse().expect("addr"),
            reachable: if reachable {
                Ok(NodeInfo {
                    name: "n".into(),
                    roles: vec![],
                    version: String::new(),
                    workers: vec![],
                    config_group: None,
                    config_epoch: 0,
                })
            } else {
                Err(Unreachable::UnexpectedAnswer("x".into()))
            },
            storage: None,
            scrub: None,
            manager_ready,
            manager_refusal: None,
        }
    }

    #[test]
    fn state_is_down_recovering_or_up() {
        assert_eq!(node(false, None).state(), NodeState::Down);
        assert_eq!(node(false, Some(false)).state(), NodeState::Down);
        assert_eq!(node(true, Some(false)).state(), NodeState::Recovering);
        let mut refused = node(true, Some(false));
        refused.manager_refusal = Some("contradicts".into());
        assert_eq!(refused.state(), NodeState::Refused);
        assert_eq!(node(true, Some(true)).state(), NodeState::Up);
        assert_eq!(node(true, None).state(), NodeState::Up);
    }

    #[test]
    fn health_follows_can_serve_and_node_states() {
        let all_up = ClusterStatus {
            nodes: vec![node(true, Some(true)), node(true, None)],
            can_serve: true,
        };
        assert_eq!(all_up.health(), Health::Healthy);
        let one_down = ClusterStatus {
            nodes: vec![node(true, Some(true)), node(false, None)],
            can_serve: true,
        };
        assert_eq!(one_down.health(), Health::Degraded);
        assert_eq!(one_down.not_up(), 1);
        let cannot = ClusterStatus {
            nodes: vec![node(true, Some(false))],
            can_serve: false,
        };
        assert_eq!(cannot.health(), Health::Unavailable);
    }
}
