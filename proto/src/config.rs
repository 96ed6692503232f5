//! The cluster config (`cluster.toml`): nodes, roles, addresses, erasure coding, the manager
//! map and tunables. Parsed once into a checked `ClusterConfig`; nothing else reads the file.

use crate::ids::{NodeId, SlotId, SLOT_COUNT};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

pub const CONFIG_FILE: &str = "cluster.toml";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "cannot read cluster config {path}: {source} (create one with `shoal init --cluster DIR`)"
    )]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cluster config {path} is not valid TOML: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("cluster config is inconsistent: {0}")]
    Invalid(String),
}

/// A role a node can run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Storage,
    Manager,
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Role::Storage => "storage",
            Role::Manager => "manager",
        })
    }
}

/// One node as the file describes it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeEntry {
    /// The node's id: assigned once (by `shoal init` or when the node is added) and never
    /// derived from the node's place in the file, so entries may be reordered, and nodes
    /// added or removed, without renaming anyone. Manager metadata logs, transaction
    /// records and the order of storage placement are keyed by it. Files written before
    /// ids existed have none: such a node's id is its position in the file (1-based), as
    /// it always was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<u32>,
    /// Unique name; also the common name of the node's certificate.
    pub name: String,
    /// Roles this node runs.
    pub roles: Vec<Role>,
    /// UDP address the node listens on (QUIC). Edit for real machines.
    pub address: SocketAddr,
    /// State directory; relative paths are relative to the cluster directory.
    /// Default: `nodes/NAME`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_dir: Option<PathBuf>,
    /// Storage nodes only: the most fragment bytes this server stores (e.g. "2GiB"),
    /// whatever its file system has free. Default: the file system's size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity: Option<String>,
    /// Address of the node's HTTP endpoint: Prometheus metrics at `/metrics`, the status
    /// page at `/`. Off when absent; read-only and unauthenticated, so keep it on loopback
    /// or a management network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<SocketAddr>,
    /// Manager nodes only: the name of the node whose process serves this manager's slots
    /// and metadata log (its *group*), at `serve_at`, after a takeover (`shoal manager
    /// takeover`). Absent: the node serves its own group at `address`. A hosted manager
    /// keeps its id, so its slots and its log (`LogId::manager(id)`) stay as they were;
    /// its machine keeps `address` (and its config group member, if it is one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// With `host`: the UDP address at which the host serves this manager's group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serve_at: Option<SocketAddr>,
}

/// Reed-Solomon layout of every new segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErasureConfig {
    /// Data fragments per stripe (k).
    pub data: u8,
    /// Parity fragments per stripe (m): any m of the k+m servers may fail.
    pub parity: u8,
}

/// The config group has at least this many members where the cluster has that many
/// nodes (`ClusterConfig::config_group_members`): three tolerate one lost member.
pub const CONFIG_GROUP_MIN_MEMBERS: usize = 3;

/// A contiguous range of manager slots and the manager node that owns them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotRange {
    pub first: u16,
    pub last: u16,
    pub manager: String,
}

/// Client tunables.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ClientTunables {
    /// Dirty data is written to the log at least this often (milliseconds).
    pub flush_interval_ms: u64,
    /// A segment is written as soon as this much dirty data is buffered (bytes).
    pub segment_bytes: u64,
    /// Memory for the block cache (bytes).
    pub cache_bytes: u64,
    /// Cooperative caching: serve cached blocks to other clients and read local misses
    /// from the clients the manager names before the storage servers.
    pub peer_reads: bool,
}

impl Default for ClientTunables {
    fn default() -> Self {
        ClientTunables {
            flush_interval_ms: 2000,
            segment_bytes: 8 << 20,
            cache_bytes: 256 << 20,
            peer_reads: true,
        }
    }
}

/// Manager tunables.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ManagerTunables {
    /// Metadata records are group-committed to the log at least this often (milliseconds);
    /// `Sync` and fsync force a commit at once.
    pub commit_interval_ms: u64,
    /// A checkpoint is written after this many records.
    pub checkpoint_records: u64,
    /// A checkpoint is also written after this many record segments (group commits), or
    /// four times the segments of the last checkpoint if that is more: recovery reads every
    /// segment after the checkpoint, and under a light load each group commit is a segment
    /// of a few records, so a count of records alone lets recovery (and a takeover) grow
    /// long while the checkpoint itself would be small.
    pub checkpoint_segments: u64,
    /// Volume lease of a client with a manager (milliseconds): an unreachable client delays
    /// a conflicting operation by at most this (plus a small margin). Must exceed the
    /// kernel's 1 s attribute/entry TTL.
    pub lease_ms: u64,
    /// Largest segment the manager writes to its metadata log (bytes, at most the storage
    /// segment limit of 64 MiB): record batches are cut by encoded size below it, checkpoints
    /// are written as chunks of at most this size, and a single mutation whose records do
    /// not fit is refused with E2BIG.
    pub segment_bytes: u64,
    /// A metadata log that completes no append for this long (milliseconds) makes waiting
    /// `Sync`/fsync calls and new mutations fail with EIO instead of hanging.
    pub journal_stall_ms: u64,
    /// The cleaner (on the manager with the lowest node id) copies live data out of partly
    /// used data segments while the fullest storage server has less than this percentage of
    /// its file system free (default 20; 0 turns background cleaning off; `shoal clean
    /// --now` cleans whatever the free space).
    pub clean_below_free_pct: u8,
    /// Automatic takeover (default off): every manager host holds a membership lease from
    /// the config group's leader and serves its groups only while it holds it; the leader
    /// hands the groups of a host silent for a lease and a margin to a live manager. A
    /// cluster whose config group lost its majority then serves no metadata.
    pub auto_takeover: bool,
    /// The membership lease (milliseconds, default 2000): with `auto_takeover`, a host that
    /// cannot renew stops serving after at most this, and its groups move to another
    /// manager after this and half of it more.
    pub membership_lease_ms: u64,
}

impl ManagerTunables {
    /// The membership lease (`membership_lease_ms`, at least 100 ms).
    pub fn membership_lease(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.membership_lease_ms.max(100))
    }
}

impl Default for ManagerTunables {
    fn default() -> Self {
        ManagerTunables {
            commit_interval_ms: 50,
            checkpoint_records: 50_000,
            checkpoint_segments: 2_000,
            lease_ms: 5000,
            segment_bytes: 16 << 20,
            journal_stall_ms: 30_000,
            clean_below_free_pct: 20,
            auto_takeover: false,
            membership_lease_ms: 2000,
        }
    }
}

/// Storage server tunables (background scrub and rebuild).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct StorageTunables {
    /// The background scrub reads every fragment once per this many seconds (paced evenly;
    /// default one week). 0 turns the background scrub off (`shoal scrub` still works).
    pub scrub_period_secs: u64,
    /// Background rebuild: once a storage server has been unreachable for this long
    /// (seconds; default 300), the stripes that lost fragments are rebuilt onto the other
    /// servers (`shoal rebuild --cluster DIR --now` does it at once).
    pub rebuild_delay_secs: u64,
    /// Bytes of every storage server kept for the managers' metadata logs, the cleaner and
    /// rebuild (e.g. "64MiB"): client data is refused with "no space" before it, so that a
    /// full cluster can always delete its way out. Default: 5% of the capacity, at least
    /// 64 MiB, at most half of it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reserve: Option<String>,
}

impl Default for StorageTunables {
    fn default() -> Self {
        StorageTunables {
            scrub_period_secs: 7 * 24 * 3600,
            rebuild_delay_secs: 300,
            reserve: None,
        }
    }
}

/// Parses a byte size: a number with an optional binary unit (`B`, `K`/`KiB`, `M`/`MiB`,
/// `G`/`GiB`, `T`/`TiB`), e.g. "2GiB" or "512M"; spaces are allowed before the unit.
pub fn parse_size(text: &str) -> Result<u64, SizeError> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| SizeError::NotASize(text.into()))?;
    let shift = match unit.trim() {
        "" | "B" => 0,
        "K" | "KiB" => 10,
        "M" | "MiB" => 20,
        "G" | "GiB" => 30,
        "T" | "TiB" => 40,
        u => return Err(SizeError::UnknownUnit(text.into(), u.into())),
    };
    n.checked_mul(1u64 << shift)
        .ok_or_else(|| SizeError::TooLarge(text.into()))
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// Why a byte size in the cluster file does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SizeError {
    #[error("{0:?} is not a size (like \"2GiB\" or \"512MiB\")")]
    NotASize(String),
    #[error("{0:?}: unknown unit {1:?} (use B, KiB, MiB, GiB or TiB)")]
    UnknownUnit(String, String),
    #[error("{0:?} is too large")]
    TooLarge(String),
}

/// The file as written by `shoal init`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterFile {
    /// Cluster name, shown by `shoal status`.
    pub name: String,
    /// Bumped whenever this file changes meaning (nodes, slots).
    pub epoch: u64,
    /// The highest node id ever assigned in this cluster, removed nodes included: a new
    /// node gets the next one, so no id is ever reused. Absent in files written before ids.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub last_node_id: u32,
    pub erasure: ErasureConfig,
    #[serde(rename = "node")]
    pub nodes: Vec<NodeEntry>,
    #[serde(rename = "slots")]
    pub slot_ranges: Vec<SlotRange>,
    #[serde(default)]
    pub client: ClientTunables,
    #[serde(default)]
    pub manager: ManagerTunables,
    #[serde(default)]
    pub storage: StorageTunables,
}

impl ClusterFile {
    /// Where `self` and `other` disagree on what decides who serves what: the erasure
    /// layout, the nodes (id, roles, address, by name) and the manager map. `None` when
    /// they agree (the name, tunables, state directories, capacities and HTTP addresses
    /// may still differ: they give no two nodes the same slots or data). Compares the files
    /// as written, without checking them; the manager map slot by slot, so the same owners
    /// written as other ranges agree.
    pub fn layout_difference(&self, other: &ClusterFile) -> Option<String> {
        if self.erasure != other.erasure {
            return Some(format!(
                "erasure {}+{} here, {}+{} there",
                self.erasure.data, self.erasure.parity, other.erasure.data, other.erasure.parity
            ));
        }
        self.nodes_difference(other, false)
            .or_else(|| self.slots_difference(other))
    }

    /// The part of `layout_difference` that decides which node serves which slot: the
    /// manager nodes (a node that has the manager role in either file) and the manager map.
    /// Storage nodes added, drained or removed, and the erasure of new stripes, change no
    /// slot's server (each segment records its own placement).
    pub fn serving_difference(&self, other: &ClusterFile) -> Option<String> {
        self.nodes_difference(other, true)
            .or_else(|| self.slots_difference(other))
    }

    /// This file with every manager group that moved between `base` and it (another host,
    /// `host`) put back where `base` has it (host and address): what is left to compare
    /// when a takeover is allowed.
    pub fn with_hosting_of(&self, base: &ClusterFile) -> ClusterFile {
        let mut f = self.clone();
        for n in f.nodes.iter_mut() {
            let Some(b) = base.nodes.iter().find(|b| b.name == n.name) else {
                continue;
            };
            if (&n.host, n.serve_at) != (&b.host, b.serve_at) {
                n.host = b.host.clone();
                n.serve_at = b.serve_at;
            }
        }
        f
    }

    /// The next file after manager `manager`'s group moves to `host`'s process, served at
    /// `address` (a takeover; `shoal manager takeover`); with `host` = `manager`, the group
    /// goes back to its own node, at its own address (`address` is not used). Pure; the
    /// result is checked.
    pub fn takeover(
        &self,
        manager: &str,
        host: &str,
        address: SocketAddr,
    ) -> Result<ClusterFile, ConfigError> {
        let mut f = self.clone();
        let Some(n) = f.nodes.iter_mut().find(|n| n.name == manager) else {
            return Err(ConfigError::Invalid(format!("no node named {manager}")));
        };
        if !n.roles.contains(&Role::Manager) {
            return Err(ConfigError::Invalid(format!("{manager} is not a manager")));
        }
        if n.host.as_deref().unwrap_or(&n.name) == host {
            return Err(ConfigError::Invalid(format!(
                "{host} already serves {manager}'s slots"
            )));
        }
        let away = host != manager;
        n.host = away.then(|| host.to_string());
        n.serve_at = away.then_some(address);
        f.epoch += 1;
        ClusterConfig::from_file(Path::new("."), f.clone())?;
        Ok(f)
    }

    fn nodes_difference(&self, other: &ClusterFile, only_managers: bool) -> Option<String> {
        type Seen = std::collections::BTreeMap<String, (u32, Vec<Role>, SocketAddr, String)>;
        let nodes = |f: &ClusterFile| -> Seen {
            f.nodes
                .iter()
                .enumerate()
                .map(|(i, n)| {
                    let mut roles = n.roles.clone();
                    roles.sort_by_key(|r| *r as u8);
                    roles.dedup();
                    let id = n.id.unwrap_or(i as u32 + 1);
                    let host = match (&n.host, n.serve_at) {
                        (Some(h), Some(at)) if *h != n.name => format!("{h} at {at}"),
                        _ => n.name.clone(),
                    };
                    (n.name.clone(), (id, roles, n.address, host))
                })
                .collect()
        };
        let (mine, theirs) = (nodes(self), nodes(other));
        let manager = |v: Option<&(u32, Vec<Role>, SocketAddr, String)>| {
            v.is_some_and(|(_, r, _, _)| r.contains(&Role::Manager))
        };
        for name in mine.keys().chain(theirs.keys()) {
            let (a, b) = (mine.get(name), theirs.get(name));
            if only_managers && !manager(a) && !manager(b) {
                continue;
            }
            match (a, b) {
                (Some(a), Some(b)) if a == b => {}
                (Some((ia, ra, aa, ha)), Some((ib, rb, ab, hb))) => {
                    return Some(format!(
                        "node {name} is id {ia}, roles {ra:?}, at {aa}, served by {ha} here; id {ib}, roles {rb:?}, at {ab}, served by {hb} there"
                    ))
                }
                (Some(_), None) => return Some(format!("node {name} is here, not there")),
                (None, _) => return Some(format!("node {name} is there, not here")),
            }
        }
        None
    }

    fn slots_difference(&self, other: &ClusterFile) -> Option<String> {
        let owners = |f: &ClusterFile| {
            let mut o: Vec<Option<String>> = vec![None; SLOT_COUNT as usize];
            for r in &f.slot_ranges {
                for s in r.first..=r.last {
                    if let Some(x) = o.get_mut(s as usize) {
                        *x = Some(r.manager.clone());
                    }
                }
            }
            o
        };
        if owners(self) == owners(other) {
            return None;
        }
        let show = |f: &ClusterFile| {
            let mut v: Vec<(u16, u16, &str)> = f
                .slot_ranges
                .iter()
                .map(|r| (r.first, r.last, r.manager.as_str()))
                .collect();
            v.sort();
            v.iter()
                .map(|(a, b, m)| format!("{a}-{b} {m}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        Some(format!(
            "slots [{}] here, [{}] there",
            show(self),
            show(other)
        ))
    }
}

/// A node, checked, with its id and resolved state directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    pub id: NodeId,
    pub name: String,
    pub roles: Vec<Role>,
    pub address: SocketAddr,
    pub state_dir: PathBuf,
    /// Storage nodes: the configured capacity in bytes (`capacity`), if any.
    pub capacity: Option<u64>,
    /// The node's HTTP endpoint (`http`), if any.
    pub http: Option<SocketAddr>,
    /// The node whose process serves this node's manager group: the node itself unless a
    /// takeover moved the group (`host` in the file).
    pub host: NodeId,
    /// Where this manager's group is served: `address`, or `serve_at` after a takeover.
    /// Clients and other managers send manager requests here.
    pub group_address: SocketAddr,
}

impl Node {
    pub fn has(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }

    /// Whether another node's process serves this manager's group (after a takeover):
    /// this node's own process must not serve it.
    pub fn is_hosted(&self) -> bool {
        self.host != self.id
    }
}

/// The cluster config after every consistency check.
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    pub dir: PathBuf,
    pub file: ClusterFile,
    pub nodes: Vec<Node>,
    /// Manager node of every slot.
    slot_owner: Vec<NodeId>,
}

impl ClusterConfig {
    /// Reads and checks `DIR/cluster.toml`.
    pub fn load(dir: &Path) -> Result<ClusterConfig, ConfigError> {
        let path = dir.join(CONFIG_FILE);
        let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read {
            path: path.clone(),
            source,
        })?;
        let file: ClusterFile = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.clone(),
            message: e.to_string(),
        })?;
        ClusterConfig::from_file(dir, file)
    }

    /// Checks a parsed file.
    pub fn from_file(dir: &Path, file: ClusterFile) -> Result<ClusterConfig, ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        let e = file.erasure;
        if e.data == 0 || (e.data as usize + e.parity as usize) > 255 {
            return bad(format!(
                "erasure {}+{} is not usable: need k >= 1 and k+m <= 255",
                e.data, e.parity
            ));
        }
        let mut names = HashSet::new();
        let mut addrs = HashSet::new();
        let mut ids = HashSet::new();
        let mut nodes = Vec::new();
        for (i, n) in file.nodes.iter().enumerate() {
            let id = n.id.unwrap_or(i as u32 + 1);
            if id == 0 {
                return bad(format!("node {} has id 0: ids start at 1", n.name));
            }
            if !ids.insert(id) {
                return bad(format!(
                    "node id {id} is used twice (node {}{}); ids are assigned once and never reused",
                    n.name,
                    if n.id.is_none() {
                        ", which has no id and so takes its position in the file"
                    } else {
                        ""
                    }
                ));
            }
            if n.name.is_empty() || n.name.contains('/') {
                return bad(format!(
                    "node name {:?} must be non-empty and contain no '/'",
                    n.name
                ));
            }
            if !names.insert(n.name.clone()) {
                return bad(format!("node name {} appears twice", n.name));
            }
            if !addrs.insert(n.address) {
                return bad(format!("address {} is used by two nodes", n.address));
            }
            if n.roles.is_empty() {
                return bad(format!("node {} has no roles", n.name));
            }
            let state_dir = match &n.state_dir {
                Some(p) if p.is_absolute() => p.clone(),
                Some(p) => dir.join(p),
                None => dir.join("nodes").join(&n.name),
            };
            let capacity =
                match &n.capacity {
                    None => None,
                    Some(_) if !n.roles.contains(&Role::Storage) => {
                        return bad(format!(
                            "node {} has a capacity but no storage role",
                            n.name
                        ))
                    }
                    Some(c) => Some(parse_size(c).map_err(|e| {
                        ConfigError::Invalid(format!("node {}: capacity {e}", n.name))
                    })?),
                };
            nodes.push(Node {
                id: NodeId(id),
                name: n.name.clone(),
                roles: n.roles.clone(),
                address: n.address,
                state_dir,
                capacity,
                http: n.http,
                host: NodeId(id),
                group_address: n.address,
            });
        }
        for (i, n) in file.nodes.iter().enumerate() {
            let Some(host) = n.host.as_ref().filter(|h| **h != n.name) else {
                if n.serve_at.is_some() {
                    return bad(format!(
                        "node {} has serve_at but no other host: serve_at is where its host serves its group",
                        n.name
                    ));
                }
                continue;
            };
            let Some(at) = n.serve_at else {
                return bad(format!(
                    "node {} is hosted by {host} but has no serve_at (where {host} serves its group)",
                    n.name
                ));
            };
            if !addrs.insert(at) {
                return bad(format!(
                    "address {at} is used twice (serve_at of {})",
                    n.name
                ));
            }
            let Some(h) = nodes.iter().find(|x| &x.name == host) else {
                return bad(format!("node {} is hosted by unknown node {host}", n.name));
            };
            let host_is_hosted = file
                .nodes
                .iter()
                .any(|x| x.name == *host && x.host.as_ref().is_some_and(|y| y != host));
            if !h.has(Role::Manager) || host_is_hosted {
                return bad(format!(
                    "node {} is hosted by {host}, which is not a manager serving its own group",
                    n.name
                ));
            }
            if n.roles != [Role::Manager] {
                return bad(format!(
                    "node {} is hosted by {host} but has roles {:?}: only a manager-only node's group can be hosted elsewhere",
                    n.name, n.roles
                ));
            }
            nodes[i].host = h.id;
            nodes[i].group_address = at;
        }
        if let Some(r) = &file.storage.reserve {
            parse_size(r).map_err(|e| ConfigError::Invalid(format!("[storage] reserve {e}")))?;
        }
        let storage = nodes.iter().filter(|n| n.has(Role::Storage)).count();
        if storage < e.data as usize + e.parity as usize {
            return bad(format!(
                "erasure {}+{} needs at least {} storage nodes, the config has {storage}",
                e.data,
                e.parity,
                e.data as usize + e.parity as usize
            ));
        }
        let mut slot_owner = vec![None; SLOT_COUNT as usize];
        for r in &file.slot_ranges {
            let Some(node) = nodes.iter().find(|n| n.name == r.manager) else {
                return bad(format!(
                    "slots {}..={} name unknown manager {}",
                    r.first, r.last, r.manager
                ));
            };
            if !node.has(Role::Manager) {
                return bad(format!(
                    "slots {}..={} name {} which has no manager role",
                    r.first, r.last, r.manager
                ));
            }
            if r.first > r.last || r.last >= SLOT_COUNT {
                return bad(format!(
                    "slot range {}..={} is outside 0..{SLOT_COUNT}",
                    r.first, r.last
                ));
            }
            for s in r.first..=r.last {
                if slot_owner[s as usize].is_some() {
                    return bad(format!("slot {s} is assigned twice"));
                }
                slot_owner[s as usize] = Some(node.id);
            }
        }
        let mut owners = Vec::with_capacity(SLOT_COUNT as usize);
        for (s, o) in slot_owner.into_iter().enumerate() {
            match o {
                Some(o) => owners.push(o),
                None => return bad(format!("slot {s} has no manager")),
            }
        }
        Ok(ClusterConfig {
            dir: dir.to_path_buf(),
            file,
            nodes,
            slot_owner: owners,
        })
    }

    /// The generated config of `shoal init`: `storage` storage nodes, `managers` managers,
    /// slots split evenly, addresses on 127.0.0.1 from `base_port` upward.
    pub fn generate(
        name: &str,
        storage: usize,
        managers: usize,
        erasure: ErasureConfig,
        base_port: u16,
    ) -> Result<ClusterFile, ConfigError> {
        if managers == 0 {
            return Err(ConfigError::Invalid(
                "a cluster needs at least one manager".into(),
            ));
        }
        let mut nodes = Vec::new();
        let mut port = base_port;
        let mut next_addr = || -> Result<SocketAddr, ConfigError> {
            let p = port;
            port = port.checked_add(1).ok_or_else(|| {
                ConfigError::Invalid(format!("ports from {base_port} run past 65535"))
            })?;
            Ok(SocketAddr::from(([127, 0, 0, 1], p)))
        };
        let mut id = 0u32;
        let mut next_id = || {
            id += 1;
            Some(id)
        };
        for i in 1..=storage {
            nodes.push(NodeEntry {
                id: next_id(),
                name: format!("storage-{i}"),
                roles: vec![Role::Storage],
                address: next_addr()?,
                state_dir: None,
                capacity: None,
                http: None,
                host: None,
                serve_at: None,
            });
        }
        for i in 1..=managers {
            nodes.push(NodeEntry {
                id: next_id(),
                name: format!("manager-{i}"),
                roles: vec![Role::Manager],
                address: next_addr()?,
                state_dir: None,
                capacity: None,
                http: None,
                host: None,
                serve_at: None,
            });
        }
        let per = SLOT_COUNT as usize / managers;
        let mut slot_ranges = Vec::new();
        for i in 0..managers {
            let first = i * per;
            let last = if i + 1 == managers {
                SLOT_COUNT as usize - 1
            } else {
                first + per - 1
            };
            slot_ranges.push(SlotRange {
                first: first as u16,
                last: last as u16,
                manager: format!("manager-{}", i + 1),
            });
        }
        Ok(ClusterFile {
            name: name.to_string(),
            epoch: 1,
            last_node_id: (storage + managers) as u32,
            erasure,
            nodes,
            slot_ranges,
            client: ClientTunables::default(),
            manager: ManagerTunables::default(),
            storage: StorageTunables::default(),
        })
    }

    pub fn node(&self, id: NodeId) -> Option<&Node> {
        self.nodes.iter().find(|n| n.id == id)
    }

    pub fn node_by_name(&self, name: &str) -> Option<&Node> {
        self.nodes.iter().find(|n| n.name == name)
    }

    /// Storage nodes by id; stripe placement indexes into this list. (Ordered by id, not by
    /// place in the file: reordering `[[node]]` entries moves no data, and a node added
    /// with a new, higher id goes to the end, which moves no recorded segment.)
    pub fn storage_nodes(&self) -> Vec<&Node> {
        let mut v: Vec<&Node> = self.nodes.iter().filter(|n| n.has(Role::Storage)).collect();
        v.sort_by_key(|n| n.id);
        v
    }

    /// Manager nodes by id.
    pub fn manager_nodes(&self) -> Vec<&Node> {
        let mut v: Vec<&Node> = self.nodes.iter().filter(|n| n.has(Role::Manager)).collect();
        v.sort_by_key(|n| n.id);
        v
    }

    /// The manager groups that `host`'s process serves for other nodes (after takeovers).
    pub fn hosted_by(&self, host: NodeId) -> Vec<&Node> {
        self.manager_nodes()
            .into_iter()
            .filter(|n| n.is_hosted() && n.host == host)
            .collect()
    }

    /// The ids of the manager nodes.
    pub fn manager_ids(&self) -> Vec<NodeId> {
        self.manager_nodes().iter().map(|n| n.id).collect()
    }

    /// The members of the config group (DESIGN §8): the manager nodes by id and, while
    /// they are fewer than `CONFIG_GROUP_MIN_MEMBERS`, storage nodes by id until there are
    /// that many (or no more nodes), so that the group outlives the loss of any one member
    /// also in a cluster with one or two managers. Pure: every node computes the same list
    /// from the same file.
    pub fn config_group_members(&self) -> Vec<&Node> {
        // A manager whose group another node took over stays a member: a node runs its
        // member only if it is one when it starts, so the group's members change only by
        // restarting nodes with a new file (issue 13, step 4).
        let mut v = self.manager_nodes();
        let extra: Vec<&Node> = self
            .storage_nodes()
            .into_iter()
            .filter(|n| !n.has(Role::Manager))
            .take(CONFIG_GROUP_MIN_MEMBERS.saturating_sub(v.len()))
            .collect();
        v.extend(extra);
        v
    }

    /// The id a node added to this cluster gets: one above every id in use (ids are never
    /// reused, so that a new node can't inherit a removed node's log or records).
    pub fn next_node_id(&self) -> u32 {
        let used = self.nodes.iter().map(|n| n.id.0).max().unwrap_or(0);
        used.max(self.file.last_node_id) + 1
    }

    /// The manager node owning `slot`.
    pub fn slot_owner(&self, slot: SlotId) -> NodeId {
        self.slot_owner[slot.0 as usize % SLOT_COUNT as usize]
    }

    /// Slots owned by `node`.
    pub fn slots_of(&self, node: NodeId) -> Vec<SlotId> {
        (0..SLOT_COUNT)
            .map(SlotId)
            .filter(|s| self.slot_owner(*s) == node)
            .collect()
    }

    /// Paths of TLS material under the cluster directory.
    pub fn ca_cert_path(&self) -> PathBuf {
        self.dir.join("tls").join("ca.pem")
    }
    pub fn ca_key_path(&self) -> PathBuf {
        self.dir.join("tls").join("ca.key")
    }
    /// Certificate and key of a node or of the client identity (`name` = "client").
    pub fn cert_paths(&self, name: &str) -> (PathBuf, PathBuf) {
        let d = self.dir.join("tls");
        (d.join(format!("{name}.pem")), d.join(format!("{name}.key")))
    }

    /// Renders the file with a documented header.
    pub fn render(file: &ClusterFile) -> String {
        let body = toml::to_string_pretty(file).unwrap_or_default();
        format!("{}{}", CONFIG_DOC, body)
    }
}

/// The documentation written at the top of every generated `cluster.toml`.
pub const CONFIG_DOC: &str = "\
# Shoal cluster config, written by `shoal init`. Every node and client reads it.
#
# name            cluster name, shown by `shoal status`
# epoch           bumped whenever the meaning of this file changes (nodes, slots)
# [erasure]       data = k, parity = m: every segment is striped over k+m storage
#                 nodes; any m of them may fail without losing data
# [[node]]        one per node: id (assigned once, never reused; keep it when editing),
#                 name (also its certificate's common name), roles
#                 (\"storage\", \"manager\"), address (UDP, QUIC; edit for real machines),
#                 state_dir (optional; default nodes/NAME under this directory),
#                 capacity (optional, storage nodes: most fragment bytes stored, e.g.
#                 \"2GiB\"; default the file system's size),
#                 http (optional, e.g. \"127.0.0.1:9400\": Prometheus metrics at
#                 /metrics and a status page at /; off by default; unauthenticated,
#                 keep it on loopback or a management network),
#                 host and serve_at (managers, set by `shoal manager takeover`: the
#                 manager whose process serves this one's slots, and where)
# [[slots]]       the manager map: inode slots first..=last are served by manager
# [client]        flush_interval_ms: dirty data reaches the log at least this often;
#                 segment_bytes: a segment is written once this much is dirty;
#                 cache_bytes: block cache memory per client (default 256 MiB);
#                 peer_reads: cooperative caching between clients (default true)
# [manager]       commit_interval_ms: metadata group commit interval (fsync forces one);
#                 checkpoint_records: records between checkpoints;
#                 checkpoint_segments: also a checkpoint after this many record
#                 segments (default 2000; recovery reads each segment after the
#                 last checkpoint);
#                 lease_ms: clients' volume lease (default 5000): an unreachable client
#                 delays a conflicting operation by at most this; keep it above 1000;
#                 segment_bytes: largest metadata log segment (default 16 MiB, at most
#                 64 MiB); journal_stall_ms: fsync and mutations fail with EIO when the
#                 metadata log completes no append for this long (default 30000);
#                 clean_below_free_pct: the cleaner copies live data out of partly
#                 used segments while the fullest storage server has less than this
#                 percent free (default 20, 0 = off; `shoal clean --now` always cleans);
#                 auto_takeover (default false): managers serve only under a membership
#                 lease from the config group's leader, which hands a silent manager's
#                 slots to a live one; membership_lease_ms (default 2000)
# [storage]       scrub_period_secs: the background scrub reads and checks every fragment
#                 once per this period (default 604800, a week; 0 = off; `shoal scrub
#                 --now` runs a pass at once); rebuild_delay_secs: a storage server down
#                 this long has its fragments rebuilt onto the others (default 300;
#                 `shoal rebuild --now` does it at once); reserve (optional, e.g.
#                 \"64MiB\"): space of every server kept for metadata logs, the cleaner
#                 and rebuild, refused to client data (default 5% of the capacity, at
#                 least 64 MiB, at most half)
#
# TLS material lives in tls/: ca.pem (cluster CA), NAME.pem/NAME.key per node,
# client.pem/client.key for mounts and the CLI. ca.key signs new certificates: keep it safe.

";

#[cfg(test)]
mod tests {
    #[test]
    fn layout_difference_names_what_decides_who_serves_what() {
        let f = ClusterConfig::generate("c", 6, 2, ErasureConfig { data: 4, parity: 2 }, 7000)
            .expect("generate");
        assert_eq!(f.layout_difference(&f), None);
        // Tunables, the name, the epoch and local paths are no layout.
        let mut g = f.clone();
        g.name = "other".into();
        g.epoch += 3;
        g.manager.lease_ms += 1;
        g.nodes[0].state_dir = Some("/elsewhere".into());
        g.nodes.reverse();
        assert_eq!(f.layout_difference(&g), None, "same layout");
        let mut g = f.clone();
        g.slot_ranges[0].manager = g.slot_ranges[1].manager.clone();
        let d = f.layout_difference(&g).expect("slots differ");
        assert!(d.contains("slots"), "{d}");
        let mut g = f.clone();
        g.nodes[0].address.set_port(1);
        let d = f.layout_difference(&g).expect("address differs");
        assert!(d.contains(&g.nodes[0].name), "{d}");
        let mut g = f.clone();
        g.nodes.pop();
        assert!(f
            .layout_difference(&g)
            .expect("node gone")
            .contains("not there"));
        assert!(g
            .layout_difference(&f)
            .expect("node new")
            .contains("not here"));
        let mut g = f.clone();
        g.erasure.parity = 1;
        assert!(f
            .layout_difference(&g)
            .expect("erasure")
            .contains("erasure"));
        assert_eq!(f.serving_difference(&g), None, "no slot changes server");
        // The same owners written as other ranges.
        let mut g = f.clone();
        let r = g.slot_ranges.remove(0);
        let mid = r.first + (r.last - r.first) / 2;
        g.slot_ranges.push(SlotRange {
            first: r.first,
            last: mid,
            manager: r.manager.clone(),
        });
        g.slot_ranges.push(SlotRange {
            first: mid + 1,
            last: r.last,
            manager: r.manager,
        });
        assert_eq!(f.layout_difference(&g), None, "same owner of every slot");
        // A storage node more changes the layout, not who serves what.
        let mut g = f.clone();
        let mut extra = g.nodes[0].clone();
        extra.name = "storage-new".into();
        extra.id = Some(99);
        extra.address.set_port(2);
        g.nodes.push(extra);
        assert!(f.layout_difference(&g).is_some());
        assert_eq!(f.serving_difference(&g), None);
        // A manager's address does.
        let mut g = f.clone();
        let m = g
            .nodes
            .iter_mut()
            .find(|n| n.roles.contains(&Role::Manager))
            .expect("a manager");
        m.address.set_port(3);
        assert!(f.serving_difference(&g).is_some());
    }

    use super::*;

    #[test]
    fn generated_config_parses_and_maps_every_slot() {
        let f = ClusterConfig::generate("t", 6, 2, ErasureConfig { data: 4, parity: 2 }, 7000)
            .expect("gen");
        let text = ClusterConfig::render(&f);
        let parsed: ClusterFile = toml::from_str(&text).expect("parse");
        let c = ClusterConfig::from_file(Path::new("/tmp/x"), parsed).expect("check");
        assert_eq!(c.storage_nodes().len(), 6);
        assert_eq!(c.manager_nodes().len(), 2);
        let m1 = c.node_by_name("manager-1").expect("m1").id;
        let m2 = c.node_by_name("manager-2").expect("m2").id;
        assert_eq!(c.slot_owner(SlotId(0)), m1);
        assert_eq!(c.slot_owner(SlotId(1023)), m2);
        assert_eq!(
            c.slots_of(m1).len() + c.slots_of(m2).len(),
            SLOT_COUNT as usize
        );
    }

    #[test]
    fn the_config_group_is_the_managers_filled_up_to_three_with_storage_nodes() {
        let names = |c: &ClusterConfig| -> Vec<String> {
            c.config_group_members()
                .iter()
                .map(|n| n.name.clone())
                .collect()
        };
        let ec = ErasureConfig { data: 1, parity: 0 };
        let gen = |storage, managers| {
            let f = ClusterConfig::generate("t", storage, managers, ec, 7000).expect("gen");
            ClusterConfig::from_file(Path::new("/tmp/x"), f).expect("check")
        };
        // Two managers: the lowest-id storage node is the third member.
        let c = gen(6, 2);
        let lowest_storage = c.storage_nodes()[0].name.clone();
        assert_eq!(
            names(&c),
            ["manager-1", "manager-2", lowest_storage.as_str()]
        );
        // Three or more managers: only they.
        assert_eq!(names(&gen(2, 3)), ["manager-1", "manager-2", "manager-3"]);
        assert_eq!(gen(1, 4).config_group_members().len(), 4);
        // One manager, two storage nodes; and a cluster with too few nodes takes all.
        assert_eq!(gen(2, 1).config_group_members().len(), 3);
        assert_eq!(gen(1, 1).config_group_members().len(), 2);
        // A storage node that is also a manager counts once.
        let mut f = ClusterConfig::generate("t", 2, 1, ec, 7000).expect("gen");
        let m = f
            .nodes
            .iter()
            .position(|n| n.roles.contains(&Role::Manager))
            .expect("m");
        let s = f
            .nodes
            .iter()
            .position(|n| !n.roles.contains(&Role::Manager))
            .expect("s");
        f.nodes[s].roles.push(Role::Manager);
        let both = f.nodes[s].name.clone();
        let c = ClusterConfig::from_file(Path::new("/tmp/x"), f.clone()).expect("check");
        let got = names(&c);
        assert_eq!(got.len(), 3, "{got:?}");
        assert_eq!(got.iter().filter(|n| **n == both).count(), 1, "{got:?}");
        assert!(got.contains(&f.nodes[m].name));
    }

    #[test]
    fn sizes_parse_with_binary_units() {
        assert_eq!(parse_size("2GiB"), Ok(2 << 30));
        assert_eq!(parse_size("512 MiB"), Ok(512 << 20));
        assert_eq!(parse_size("64M"), Ok(64 << 20));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("2GB").is_err());
        assert!(parse_size("GiB").is_err());
        assert!(parse_size("99999999999TiB").is_err());
    }

    #[test]
    fn capacity_is_parsed_for_storage_nodes_only() {
        let mut f = ClusterConfig::generate("t", 6, 1, ErasureConfig { data: 4, parity: 2 }, 7000)
            .expect("gen");
        f.nodes[0].capacity = Some("1GiB".into());
        let c = ClusterConfig::from_file(Path::new("/tmp/x"), f.clone()).expect("check");
        assert_eq!(c.nodes[0].capacity, Some(1 << 30));
        assert_eq!(c.nodes[1].capacity, None);
        f.nodes[6].capacity = Some("1GiB".into());
        assert!(ClusterConfig::from_file(Path::new("/tmp/x"), f.clone()).is_err());
        f.nodes[6].capacity = None;
        f.nodes[0].capacity = Some("lots".into());
        assert!(ClusterConfig::from_file(Path::new("/tmp/x"), f).is_err());
    }

    #[test]
    fn node_ids_are_written_once_and_survive_reordering() {
        let f = ClusterConfig::generate("t", 6, 2, ErasureConfig { data: 4, parity: 2 }, 7000)
            .expect("gen");
        let a = ClusterConfig::from_file(Path::new("/tmp/x"), f.clone()).expect("check");
        let mut g = f.clone();
        g.nodes.reverse();
        let text = ClusterConfig::render(&g);
        let b = ClusterConfig::from_file(Path::new("/tmp/x"), toml::from_str(&text).expect("toml"))
            .expect("check reordered");
        for n in &a.nodes {
            assert_eq!(
                b.node_by_name(&n.name).expect("node").id,
                n.id,
                "{}",
                n.name
            );
        }
        let names = |c: &ClusterConfig, storage: bool| -> Vec<String> {
            let v = if storage {
                c.storage_nodes()
            } else {
                c.manager_nodes()
            };
            v.iter().map(|n| n.name.clone()).collect()
        };
        assert_eq!(names(&a, true), names(&b, true), "placement order moved");
        assert_eq!(names(&a, false), names(&b, false));
        for s in [0u16, 511, 512, 1023] {
            assert_eq!(a.slot_owner(SlotId(s)), b.slot_owner(SlotId(s)));
        }
        assert_eq!(a.next_node_id(), 9);
    }

    #[test]
    fn files_without_ids_keep_positional_ids_and_duplicates_are_refused() {
        let mut f = ClusterConfig::generate("t", 6, 1, ErasureConfig { data: 4, parity: 2 }, 7000)
            .expect("gen");
        for n in f.nodes.iter_mut() {
            n.id = None;
        }
        f.last_node_id = 0;
        let c = ClusterConfig::from_file(Path::new("/tmp/x"), f.clone()).expect("legacy");
        let ids: Vec<u32> = c.nodes.iter().map(|n| n.id.0).collect();
        assert_eq!(ids, (1..=7).collect::<Vec<u32>>());
        assert_eq!(c.next_node_id(), 8);
        // A node added with an explicit id beside id-less ones: fine while ids differ.
        let mut g = f.clone();
        g.nodes[6].id = Some(7);
        assert!(ClusterConfig::from_file(Path::new("/tmp/x"), g.clone()).is_ok());
        g.nodes[6].id = Some(3);
        let err = ClusterConfig::from_file(Path::new("/tmp/x"), g.clone()).expect_err("dup");
        assert!(err.to_string().contains("node id 3 is used twice"), "{err}");
        g.nodes[6].id = Some(0);
        assert!(ClusterConfig::from_file(Path::new("/tmp/x"), g).is_err());
    }

    #[test]
    fn removed_ids_are_not_handed_out_again() {
        let mut f = ClusterConfig::generate("t", 7, 1, ErasureConfig { data: 4, parity: 2 }, 7000)
            .expect("gen");
        // storage-7 (id 7) is removed; manager-1 keeps id 8.
        f.nodes.remove(6);
        let c = ClusterConfig::from_file(Path::new("/tmp/x"), f).expect("check");
        assert_eq!(c.node_by_name("manager-1").expect("m").id, NodeId(8));
        assert_eq!(c.next_node_id(), 9);
    }

    #[test]
    fn too_few_storage_nodes_is_refused() {
        let f = ClusterConfig::generate("t", 3, 1, ErasureConfig { data: 4, parity: 2 }, 7000)
            .expect("gen");
        let err = ClusterConfig::from_file(Path::new("/tmp/x"), f).expect_err("must fail");
        assert!(
            err.to_string().contains("needs at least 6 storage nodes"),
            "{err}"
        );
    }
}
