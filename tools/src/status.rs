//! `shoal status [--json]`: the cluster at a glance. Gathers the probe of every node
//! (`fsd::cluster::status`) and the degraded-stripe count (needs the admin identity), builds
//! one [`Report`] (pure, unit-tested) and prints it as text (health line first) or as JSON
//! (the fields documented on [`Report`], stable for scripts). Only looks; never changes
//! anything.
//!
//! Exit codes (README, "The CLI"): 0 the cluster can serve (healthy or degraded), 1 it
//! cannot, 3 the probe could not run (unreadable cluster directory or certificates); clap
//! answers bad arguments with 2.

use anyhow::Result;
use fsd::cluster::{ClusterStatus, Health};
use proto::config::ClusterConfig;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::Path;

/// Exit code when the probe itself could not run.
pub const EXIT_PROBE_FAILED: i32 = 3;

/// What `shoal status --json` prints (format version 1; fields are only ever added).
#[derive(Debug, Serialize)]
pub struct Report {
    /// 1.
    pub version: u32,
    pub cluster: String,
    pub epoch: u64,
    pub erasure: Erasure,
    /// "healthy" (every node up, no degraded stripe), "degraded" (it serves, but a node is
    /// down or recovering or a stripe misses fragments) or "unavailable" (it cannot serve).
    pub health: &'static str,
    /// Whether the cluster can serve (every manager ready, more than k storage servers up).
    pub can_serve: bool,
    pub nodes: Vec<NodeReport>,
    /// The config group as its members answering report it (the view of the newest term
    /// seen); null when no member answered.
    pub config_group: Option<GroupReport>,
    /// Null when the stripes could not be counted (no admin certificate here).
    pub stripes: Option<Stripes>,
}

#[derive(Debug, Serialize)]
pub struct GroupReport {
    /// The epoch of the committed config (null before the first is committed).
    pub epoch: Option<u64>,
    /// The leader's node name (null while there is none).
    pub leader: Option<String>,
    pub term: u64,
    /// Members that answered, of all members (manager nodes).
    pub members_answering: usize,
    pub members: usize,
}

#[derive(Debug, Serialize)]
pub struct Erasure {
    pub data: u8,
    pub parity: u8,
}

#[derive(Debug, Serialize)]
pub struct NodeReport {
    /// The node's id (stable; `id` in cluster.toml), null for a name the config lacks.
    pub id: Option<u32>,
    pub name: String,
    /// "storage" and/or "manager".
    pub roles: Vec<String>,
    pub address: String,
    /// "up", "recovering" (a manager still loading its state), "refused" (a manager that
    /// will not serve; `error` says why) or "down".
    pub state: &'static str,
    /// Storage servers that answered: capacity, fragment bytes and count; else null.
    pub capacity_bytes: Option<u64>,
    pub used_bytes: Option<u64>,
    pub fragments: Option<u64>,
    pub draining: bool,
    /// Managers: the slot ranges they own ("0-511"); empty for other nodes.
    pub slots: Vec<String>,
    /// Managers whose group another manager took over (`shoal manager takeover`): "HOST at
    /// ADDR", where those slots are served; null otherwise.
    pub served_by: Option<String>,
    /// Why the node could not be reached, or why its manager will not serve (null when
    /// neither).
    pub error: Option<String>,
    pub workers: Vec<WorkerReport>,
}

#[derive(Debug, Serialize)]
pub struct WorkerReport {
    pub name: String,
    /// "idle", "busy" or "stopped".
    pub state: String,
    pub rounds: u64,
    pub last_error: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct Stripes {
    pub total: u64,
    pub degraded: u64,
    /// Degraded stripes by how many fragments they miss ("1": n, "2": n, ...).
    pub degraded_by_missing: BTreeMap<String, u64>,
}

/// The slots `node` owns, as ranges ("0-511", "700").
fn slot_ranges(config: &ClusterConfig, node: proto::ids::NodeId) -> Vec<String> {
    let mut out = Vec::new();
    let mut run: Option<(u16, u16)> = None;
    for s in config.slots_of(node) {
        run = match run {
            Some((a, b)) if b + 1 == s.0 => Some((a, s.0)),
            Some((a, b)) => {
                out.push(range_text(a, b));
                Some((s.0, s.0))
            }
            None => Some((s.0, s.0)),
        };
    }
    if let Some((a, b)) = run {
        out.push(range_text(a, b));
    }
    out
}

fn range_text(a: u16, b: u16) -> String {
    if a == b {
        a.to_string()
    } else {
        format!("{a}-{b}")
    }
}

/// The config group as the answering members see it: the view of the newest term.
fn group_report(config: &ClusterConfig, s: &ClusterStatus) -> Option<GroupReport> {
    let views: Vec<&proto::msg::GroupView> = s
        .nodes
        .iter()
        .filter_map(|n| n.reachable.as_ref().ok())
        .filter_map(|i| i.config_group.as_ref())
        .collect();
    let best = views.iter().max_by_key(|v| (v.term, v.epoch))?;
    Some(GroupReport {
        epoch: best.epoch,
        leader: best.leader.map(|l| {
            config
                .node(l)
                .map(|n| n.name.clone())
                .unwrap_or_else(|| l.to_string())
        }),
        term: best.term,
        members_answering: views.len(),
        members: config.config_group_members().len(),
    })
}

/// The report of `s` (pure).
pub fn report(
    config: &ClusterConfig,
    s: &ClusterStatus,
    stripes: Option<(u64, BTreeMap<usize, usize>)>,
) -> Report {
    let stripes = stripes.map(|(total, hist)| Stripes {
        total,
        degraded: hist.values().map(|&n| n as u64).sum(),
        degraded_by_missing: hist
            .iter()
            .map(|(m, n)| (m.to_string(), *n as u64))
            .collect(),
    });
    let mut health = s.health();
    if health == Health::Healthy && stripes.as_ref().is_some_and(|st| st.degraded > 0) {
        health = Health::Degraded;
    }
    let nodes = s
        .nodes
        .iter()
        .map(|n| NodeReport {
            id: config.node_by_name(&n.name).map(|c| c.id.0),
            name: n.name.clone(),
            roles: n.roles.iter().map(|r| r.to_string()).collect(),
            address: n.address.to_string(),
            state: n.state().as_str(),
            capacity_bytes: n.storage.as_ref().map(|st| st.capacity_bytes),
            used_bytes: n.storage.as_ref().map(|st| st.used_bytes),
            fragments: n.storage.as_ref().map(|st| st.fragments),
            draining: n.storage.as_ref().is_some_and(|st| st.draining),
            slots: config
                .node_by_name(&n.name)
                .map(|c| slot_ranges(config, c.id))
                .unwrap_or_default(),
            served_by: config
                .node_by_name(&n.name)
                .filter(|c| c.is_hosted())
                .and_then(|c| {
                    config
                        .node(c.host)
                        .map(|h| format!("{} at {}", h.name, c.group_address))
                }),
            error: match &n.reachable {
                Err(e) => Some(e.to_string()),
                Ok(_) => n
                    .manager_refusal
                    .as_ref()
                    .map(|why| format!("manager not serving: {why}")),
            },
            workers: n
                .reachable
                .as_ref()
                .map(|info| {
                    info.workers
                        .iter()
                        .map(|w| WorkerReport {
                            name: w.name.clone(),
                            state: w.state.to_string(),
                            rounds: w.rounds,
                            last_error: w.last_error.clone(),
                        })
                        .collect()
                })
                .unwrap_or_default(),
        })
        .collect();
    Report {
        version: 1,
        cluster: config.file.name.clone(),
        epoch: config.file.epoch,
        erasure: Erasure {
            data: config.file.erasure.data,
            parity: config.file.erasure.parity,
        },
        health: health.as_str(),
        can_serve: s.can_serve,
        nodes,
        config_group: group_report(config, s),
        stripes,
    }
}

/// Runs `shoal status`; returns the exit code.
pub async fn run(dir: &Path, json: bool) -> Result<i32> {
    let (config, s) = match probe(dir).await {
        Ok(x) => x,
        Err(e) => {
            eprintln!("error: {e:#}");
            return Ok(EXIT_PROBE_FAILED);
        }
    };
    // Redundancy: stripes missing fragments on the servers that answer. Listing logs needs
    // the admin identity (the role matrix); without its certificate the count is unknown.
    let live: Vec<std::net::SocketAddr> = s
        .nodes
        .iter()
        .filter(|n| n.storage.is_some())
        .map(|n| n.address)
        .collect();
    let stripes = match fsd::cluster::admin_transport(&config) {
        Ok(t) => {
            let scan = storage::rebuild::scan(&storage::StorageClient::new(t.clone()), &live).await;
            t.close();
            Ok((
                scan.stripes.len() as u64,
                storage::rebuild::degraded_histogram(&scan.stripes),
            ))
        }
        Err(e) => Err(e),
    };
    let r = report(&config, &s, stripes.as_ref().ok().cloned());
    if json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        print_text(&config, &s, &r, stripes.as_ref().err(), dir);
    }
    Ok(if s.can_serve { 0 } else { 1 })
}

async fn probe(dir: &Path) -> Result<(ClusterConfig, ClusterStatus)> {
    let mut config = ClusterConfig::load(dir)?;
    // A takeover the config group committed since this file was written (automatic
    // takeover writes no file): report by the committed config.
    if let Ok(Some(newer)) = fsd::cluster::committed_config(&config).await {
        eprintln!(
            "note: {} is at epoch {}; the config group committed epoch {}, which this report follows",
            dir.join(proto::config::CONFIG_FILE).display(),
            config.file.epoch,
            newer.file.epoch
        );
        config = newer;
    }
    let s = fsd::cluster::status(&config).await?;
    Ok((config, s))
}

fn print_text(
    config: &ClusterConfig,
    s: &ClusterStatus,
    r: &Report,
    stripes_err: Option<&fsd::NodeError>,
    dir: &Path,
) {
    let down = s.not_up();
    let degraded = r.stripes.as_ref().map(|st| st.degraded).unwrap_or(0);
    println!(
        "{}: {} of {} nodes up, {} degraded stripe(s) -- cluster {:?} (epoch {}, erasure {}+{})",
        r.health,
        s.nodes.len() - down,
        s.nodes.len(),
        degraded,
        config.file.name,
        config.file.epoch,
        config.file.erasure.data,
        config.file.erasure.parity
    );
    match &r.config_group {
        Some(g) => println!(
            "config group: epoch {}, leader {} (term {}), {} of {} members answering{}",
            g.epoch
                .map(|e| e.to_string())
                .unwrap_or_else(|| "none yet".into()),
            g.leader.as_deref().unwrap_or("none"),
            g.term,
            g.members_answering,
            g.members,
            match g.epoch {
                Some(e) if e != config.file.epoch =>
                    format!(" -- cluster.toml here is at epoch {}", config.file.epoch),
                _ => String::new(),
            }
        ),
        None => println!("config group: no member answered"),
    }
    println!(
        "{:>4} {:<14} {:<16} {:<22} {:<10} {:>12} {:>12} {:>10}  SLOTS",
        "ID", "NODE", "ROLES", "ADDRESS", "STATE", "CAPACITY", "USED", "FRAGMENTS"
    );
    for (n, nr) in s.nodes.iter().zip(&r.nodes) {
        let (cap, used, frags) = match n.storage {
            Some(st) => (
                crate::human(st.capacity_bytes),
                crate::human(st.used_bytes),
                st.fragments.to_string(),
            ),
            None => ("-".into(), "-".into(), "-".into()),
        };
        println!(
            "{:>4} {:<14} {:<16} {:<22} {:<10} {:>12} {:>12} {:>10}  {}",
            nr.id.map(|i| i.to_string()).unwrap_or_else(|| "?".into()),
            n.name,
            nr.roles.join(","),
            n.address,
            nr.state,
            cap,
            used,
            frags,
            if nr.slots.is_empty() {
                "-".to_string()
            } else {
                nr.slots.join(",")
            }
        );
        if let Some(by) = &nr.served_by {
            println!("    its slots are served by {by} (a takeover)");
        }
        if let Some(e) = &nr.error {
            println!("    {e}");
        }
        if !nr.workers.is_empty() {
            let list: Vec<String> = nr
                .workers
                .iter()
                .map(|w| format!("{} {} ({} rounds)", w.name, w.state, w.rounds))
                .collect();
            println!("    workers: {}", list.join(", "));
        }
        for w in &nr.workers {
            if let Some(e) = &w.last_error {
                println!("    {} last round failed: {e}", w.name);
            }
        }
        if nr.draining {
            println!(
                "    draining: takes no new fragments (`shoal node drain` moves the rest off)"
            );
        }
        if let Some(sr) = &n.scrub {
            if sr.running {
                println!(
                    "    scrub: running, {}/{} fragments checked, {} bad, {} repaired",
                    sr.current.checked, sr.current_total, sr.current.bad, sr.current.repaired
                );
            }
            if sr.last_finished_unix != 0 {
                println!(
                    "    last scrub {}: {} fragments checked, {} bad, {} repaired, {} unrepaired",
                    crate::ago(sr.last_finished_unix),
                    sr.last.checked,
                    sr.last.bad,
                    sr.last.repaired,
                    sr.last.unrepaired
                );
            } else if !sr.running {
                println!("    not scrubbed yet since it started");
            }
        }
    }
    match (&r.stripes, stripes_err) {
        (Some(st), _) => println!(
            "stripes: {}, degraded: {}{} (a server down longer than rebuild_delay_secs = {} s is rebuilt in the background; `shoal rebuild --now` does it at once)",
            st.total,
            st.degraded,
            st.degraded_by_missing
                .iter()
                .map(|(m, n)| format!(", {n} missing {m} fragment(s)"))
                .collect::<String>(),
            config.file.storage.rebuild_delay_secs
        ),
        (None, Some(e)) => {
            println!("stripes: unknown (counting them needs the admin identity: {e})")
        }
        (None, None) => println!("stripes: unknown"),
    }
    if s.can_serve {
        println!("cluster can serve");
    } else {
        println!("cluster can NOT serve: start the nodes shown as down (shoal node run --cluster {} --node NAME)", dir.display());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fsd::cluster::{NodeStatus, Unreachable};
    use proto::config::Role;
    use proto::msg::NodeInfo;

    fn config() -> ClusterConfig {
        let file = ClusterConfig::generate(
            "t",
            6,
            2,
            proto::config::ErasureConfig { data: 4, parity: 2 },
            7400,
        )
        .expect("generate");
        ClusterConfig::from_file(Path::new("/nonexistent"), file).expect("config")
    }

    #[test]
    fn managers_report_their_slot_ranges_and_every_node_its_id() {
        let c = config();
        let m1 = c.node_by_name("manager-1").expect("m1").id;
        let m2 = c.node_by_name("manager-2").expect("m2").id;
        assert_eq!(slot_ranges(&c, m1), vec!["0-511".to_string()]);
        assert_eq!(slot_ranges(&c, m2), vec!["512-1023".to_string()]);
        let s1 = c.node_by_name("storage-1").expect("s1").id;
        assert!(slot_ranges(&c, s1).is_empty());
        let s = ClusterStatus {
            nodes: vec![node("manager-2", true), node("storage-3", true)],
            can_serve: true,
        };
        let v = serde_json::to_value(report(&c, &s, None)).expect("json");
        assert_eq!(v["nodes"][0]["id"], 8);
        assert_eq!(v["nodes"][0]["slots"][0], "512-1023");
        assert_eq!(v["nodes"][1]["id"], 3);
    }

    #[test]
    fn the_config_group_is_reported_as_the_newest_term_sees_it() {
        let c = config();
        let member = |name: &str, term: u64, epoch: Option<u64>, leader: Option<u32>| {
            let mut n = node(name, true);
            if let Ok(info) = n.reachable.as_mut() {
                info.config_group = Some(proto::msg::GroupView {
                    epoch,
                    leader: leader.map(proto::ids::NodeId),
                    term,
                });
            }
            n
        };
        let s = ClusterStatus {
            nodes: vec![
                node("storage-1", true),
                member("manager-1", 3, Some(4), Some(7)),
                member("manager-2", 5, Some(5), Some(8)),
            ],
            can_serve: true,
        };
        let g = report(&c, &s, None).config_group.expect("group");
        assert_eq!(
            (g.epoch, g.leader.as_deref(), g.term),
            (Some(5), Some("manager-2"), 5)
        );
        // The two managers and the lowest-id storage node are the members; two answered.
        assert_eq!((g.members_answering, g.members), (2, 3));
        let none = ClusterStatus {
            nodes: vec![node("storage-1", true), node("manager-1", false)],
            can_serve: false,
        };
        let v = serde_json::to_value(report(&c, &none, None)).expect("json");
        assert!(v["config_group"].is_null());
    }

    fn node(name: &str, up: bool) -> NodeStatus {
        NodeStatus {
            name: name.into(),
            roles: vec![Role::Storage],
            address: "127.0.0.1:1".parse().expect("addr"),
            reachable: if up {
                Ok(NodeInfo {
                    name: name.into(),
                    roles: vec![],
                    version: String::new(),
                    workers: vec![],
                    config_group: None,
                    config_epoch: 0,
                })
            } else {
                Err(Unreachable::UnexpectedAnswer("gone".into()))
            },
            storage: None,
            scrub: None,
            manager_ready: None,
            manager_refusal: None,
        }
    }

    #[test]
    fn degraded_stripes_make_a_healthy_cluster_degraded() {
        let c = config();
        let s = ClusterStatus {
            nodes: vec![node("a", true), node("b", true)],
            can_serve: true,
        };
        assert_eq!(report(&c, &s, None).health, "healthy");
        assert_eq!(
            report(&c, &s, Some((10, BTreeMap::new()))).health,
            "healthy"
        );
        let r = report(&c, &s, Some((10, BTreeMap::from([(1, 3), (2, 1)]))));
        assert_eq!(r.health, "degraded");
        let st = r.stripes.expect("stripes");
        assert_eq!((st.total, st.degraded), (10, 4));
        assert_eq!(st.degraded_by_missing.get("2"), Some(&1));
    }

    #[test]
    fn json_names_every_documented_field() {
        let c = config();
        let s = ClusterStatus {
            nodes: vec![node("a", true), node("b", false)],
            can_serve: false,
        };
        let v = serde_json::to_value(report(&c, &s, None)).expect("json");
        assert_eq!(v["health"], "unavailable");
        assert_eq!(v["version"], 1);
        assert_eq!(v["nodes"][1]["state"], "down");
        assert_eq!(v["nodes"][1]["error"], "unexpected answer gone");
        for f in [
            "id",
            "slots",
            "name",
            "roles",
            "address",
            "state",
            "capacity_bytes",
            "used_bytes",
            "fragments",
            "draining",
            "workers",
            "served_by",
        ] {
            assert!(v["nodes"][0].get(f).is_some(), "missing {f}");
        }
        assert!(v["stripes"].is_null());
    }
}
