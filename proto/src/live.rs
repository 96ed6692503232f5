//! The cluster config a running process follows: the newest committed config it has been
//! given, behind a swappable pointer that writers and readers consult per segment.
//!
//! Owns the install rule (pure: `accepts`) and the wake-up of whoever fetches newer configs.
//! A running process follows only changes that move no manager slot and keep the storage
//! nodes in place: storage nodes added with new ids, addresses, the erasure layout of new
//! stripes, and takeovers (a manager's group served by another node at a new address: its
//! slots and log stay the group's). Other tunables keep their start-time values in the parts
//! that read them once. A config that changes who serves which slot, or a manager's id or
//! roles, is not installed; it is logged,
//! and the process keeps serving by the config it has (the start-time check of
//! `fsd::config_group::standing` decides at the next start). Must not fetch anything itself
//! (`follow` does) nor decide what the group commits.

use crate::config::ClusterConfig;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::sync::{watch, Notify};

/// Why a newer config is not installed in a running process.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("epoch {offered} is not newer than the running epoch {running}")]
    NotNewer { running: u64, offered: u64 },
    #[error("epoch {offered} changes who serves what ({why}); a running process does not follow that, restart it with the new cluster.toml")]
    MovesSlots { offered: u64, why: String },
    /// Stripe placement indexes the storage nodes by id (`ClusterConfig::storage_nodes`),
    /// and a segment records only how many it was placed over: only nodes added after the
    /// existing ones (higher ids) keep every recorded segment where it is.
    #[error("epoch {offered} does not keep the storage nodes in place ({why}); only storage nodes added with new ids are followed while running")]
    MovesStorage { offered: u64, why: String },
}

/// Whether a process running `running` may switch to `offered` (pure).
pub fn accepts(running: &ClusterConfig, offered: &ClusterConfig) -> Result<(), Refused> {
    if offered.file.epoch <= running.file.epoch {
        return Err(Refused::NotNewer {
            running: running.file.epoch,
            offered: offered.file.epoch,
        });
    }
    // A takeover (a manager's group served by another node, at another address) is
    // followed: no slot changes its group, and the group's log stays its own.
    let unmoved = offered.file.with_hosting_of(&running.file);
    if let Some(why) = running.file.serving_difference(&unmoved) {
        return Err(Refused::MovesSlots {
            offered: offered.file.epoch,
            why,
        });
    }
    let (before, after) = (running.storage_nodes(), offered.storage_nodes());
    let kept = before.len() <= after.len()
        && before
            .iter()
            .zip(&after)
            .all(|(a, b)| a.id == b.id && a.name == b.name);
    if !kept {
        let ids = |v: &[&crate::config::Node]| -> Vec<String> {
            v.iter().map(|n| format!("{}={}", n.name, n.id)).collect()
        };
        return Err(Refused::MovesStorage {
            offered: offered.file.epoch,
            why: format!(
                "storage nodes {:?} here, {:?} there",
                ids(&before),
                ids(&after)
            ),
        });
    }
    Ok(())
}

/// The manager groups that `new` serves on another host than `old` does, with the address
/// they had in `old` (pure).
pub fn moved_groups(
    old: &ClusterConfig,
    new: &ClusterConfig,
) -> Vec<(crate::ids::NodeId, std::net::SocketAddr)> {
    old.manager_nodes()
        .into_iter()
        .filter(|a| {
            new.node(a.id)
                .is_some_and(|b| b.host != a.host || b.group_address != a.group_address)
        })
        .map(|a| (a.id, a.group_address))
        .collect()
}

/// The config of a running process; shared, cheap to read.
pub struct LiveConfig {
    current: RwLock<Arc<ClusterConfig>>,
    epoch: watch::Sender<u64>,
    /// Someone met a sign of a newer config (e.g. a segment placed over more storage nodes
    /// than it knows): the follower should ask now rather than at its next tick.
    wanted: Notify,
    /// A follower runs for this config (`follow::run`): waiting for a newer one may help.
    followed: AtomicBool,
}

impl LiveConfig {
    pub fn new(config: Arc<ClusterConfig>) -> Arc<LiveConfig> {
        let (epoch, _) = watch::channel(config.file.epoch);
        Arc::new(LiveConfig {
            current: RwLock::new(config),
            epoch,
            wanted: Notify::new(),
            followed: AtomicBool::new(false),
        })
    }

    /// The config in force now.
    pub fn current(&self) -> Arc<ClusterConfig> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn epoch(&self) -> u64 {
        *self.epoch.borrow()
    }

    /// Installs `offered` if `accepts` allows it; returns the config replaced.
    pub fn install(&self, offered: Arc<ClusterConfig>) -> Result<Arc<ClusterConfig>, Refused> {
        let mut cur = self.current.write().unwrap_or_else(|e| e.into_inner());
        accepts(&cur, &offered)?;
        let epoch = offered.file.epoch;
        let old = std::mem::replace(&mut *cur, offered);
        drop(cur);
        self.epoch.send_replace(epoch);
        Ok(old)
    }

    /// `install`, where a config already as new as `offered` is no refusal (the follower
    /// may have installed it, or a newer one, first).
    pub fn catch_up(&self, offered: Arc<ClusterConfig>) -> Result<(), Refused> {
        match self.install(offered) {
            Ok(_) | Err(Refused::NotNewer { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Watches the installed epoch (whoever acts on installs: hosting, expected peers).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.epoch.subscribe()
    }

    /// Whether a follower keeps this config up to date.
    pub fn is_followed(&self) -> bool {
        self.followed.load(Ordering::Acquire)
    }

    /// Marks this config as kept up to date by a follower (`follow::run` does; a test
    /// that installs configs itself may too).
    pub fn set_followed(&self, on: bool) {
        self.followed.store(on, Ordering::Release);
    }

    /// Asks the follower to look for a newer config now.
    pub fn want_newer(&self) {
        self.wanted.notify_one();
    }

    /// Resolves when `want_newer` was called (the follower's wake-up).
    pub async fn wanted(&self) {
        self.wanted.notified().await
    }

    /// Waits up to `limit` for an epoch newer than `than`; true if one is installed.
    pub async fn wait_newer(&self, than: u64, limit: Duration) -> bool {
        let mut rx = self.epoch.subscribe();
        tokio::time::timeout(limit, rx.wait_for(|e| *e > than))
            .await
            .is_ok_and(|r| r.is_ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ClusterConfig, Role};
    use std::net::SocketAddr;
    use std::path::Path;

    fn base() -> ClusterConfig {
        base_of(6)
    }

    fn base_of(storage: usize) -> ClusterConfig {
        let file = ClusterConfig::generate(
            "live-test",
            storage,
            2,
            crate::config::ErasureConfig { data: 4, parity: 2 },
            7400,
        )
        .expect("config");
        ClusterConfig::from_file(Path::new("/nonexistent"), file).expect("valid")
    }

    fn with_storage_node(c: &ClusterConfig) -> ClusterConfig {
        let mut f = c.file.clone();
        let mut extra = f
            .nodes
            .iter()
            .find(|n| n.roles == vec![Role::Storage])
            .expect("a storage node")
            .clone();
        extra.name = "storage-new".into();
        let id = c.next_node_id();
        extra.id = Some(id);
        f.last_node_id = id;
        extra.address.set_port(7999);
        f.nodes.push(extra);
        f.epoch += 1;
        ClusterConfig::from_file(&c.dir, f).expect("valid")
    }

    #[test]
    fn a_takeover_is_followed_and_names_the_moved_group() {
        let c = base();
        let m2 = c.node_by_name("manager-2").expect("m2").clone();
        let file = c
            .file
            .takeover(
                "manager-2",
                "manager-1",
                "127.0.0.1:7990".parse().expect("address"),
            )
            .expect("takeover");
        let moved = ClusterConfig::from_file(&c.dir, file).expect("valid");
        assert_eq!(accepts(&c, &moved), Ok(()));
        assert_eq!(moved_groups(&c, &moved), vec![(m2.id, m2.address)]);
        let n2 = moved.node(m2.id).expect("m2");
        assert_eq!(n2.address, m2.address, "the machine keeps its address");
        assert_eq!(n2.group_address, "127.0.0.1:7990".parse().expect("address"));
        assert!(moved_groups(&c, &with_storage_node(&c)).is_empty());
        let n = moved.node(m2.id).expect("m2");
        assert!(n.is_hosted());
        assert_eq!(n.host, c.node_by_name("manager-1").expect("m1").id);
        let ids = |c: &ClusterConfig| -> Vec<_> {
            c.config_group_members()
                .iter()
                .map(|n| (n.id, n.address))
                .collect()
        };
        assert_eq!(
            ids(&moved),
            ids(&c),
            "the group's members stay where they are"
        );
        // Hosting is all that may change with it: a slot moved as well is refused.
        let mut f = moved.file.clone();
        f.slot_ranges[0].manager = "manager-2".into();
        f.slot_ranges[1].manager = "manager-1".into();
        f.epoch += 1;
        let both = ClusterConfig::from_file(&c.dir, f).expect("valid");
        assert!(matches!(
            accepts(&moved, &both),
            Err(Refused::MovesSlots { .. })
        ));
    }

    #[test]
    fn only_a_manager_only_node_is_hosted_by_a_manager_serving_its_own_group() {
        let c = base();
        let hosted = |name: &str, host: &str| {
            let mut f = c.file.clone();
            let n = f.nodes.iter_mut().find(|n| n.name == name).expect("node");
            n.host = Some(host.into());
            n.serve_at = Some("127.0.0.1:7991".parse().expect("address"));
            ClusterConfig::from_file(&c.dir, f)
        };
        assert!(hosted("manager-2", "manager-1").is_ok());
        assert!(hosted("manager-2", "storage-1").is_err(), "not a manager");
        assert!(hosted("manager-2", "nobody").is_err());
        let mut f = c.file.clone();
        f.nodes
            .iter_mut()
            .find(|n| n.name == "manager-2")
            .expect("m2")
            .host = Some("manager-1".into());
        assert!(
            ClusterConfig::from_file(&c.dir, f).is_err(),
            "a hosted group needs serve_at"
        );
        assert!(
            hosted("storage-1", "manager-1").is_err(),
            "has the storage role"
        );
        let mut f = c.file.clone();
        for (n, h, port) in [
            ("manager-1", "manager-2", 7992),
            ("manager-2", "manager-1", 7993),
        ] {
            let x = f.nodes.iter_mut().find(|x| x.name == n).expect("node");
            x.host = Some(h.into());
            x.serve_at = Some(SocketAddr::from(([127, 0, 0, 1], port)));
        }
        assert!(
            ClusterConfig::from_file(&c.dir, f).is_err(),
            "a host must serve its own group"
        );
    }

    #[test]
    fn a_storage_node_added_is_followed() {
        let c = base();
        let live = LiveConfig::new(Arc::new(c.clone()));
        let next = Arc::new(with_storage_node(&c));
        let old = live.install(next.clone()).expect("followed");
        assert_eq!(old.file.epoch, c.file.epoch);
        assert_eq!(live.epoch(), c.file.epoch + 1);
        assert_eq!(live.current().storage_nodes().len(), 7);
        // The same config again is not newer.
        assert!(matches!(live.install(next), Err(Refused::NotNewer { .. })));
    }

    #[test]
    fn an_older_config_is_refused() {
        let c = base();
        let next = with_storage_node(&c);
        let live = LiveConfig::new(Arc::new(next));
        assert!(matches!(
            live.install(Arc::new(c)),
            Err(Refused::NotNewer { .. })
        ));
        assert_eq!(live.current().storage_nodes().len(), 7);
    }

    #[test]
    fn a_slot_move_is_not_followed() {
        let c = base();
        let mut f = c.file.clone();
        let last = f.slot_ranges.len() - 1;
        let other = f.slot_ranges[0].manager.clone();
        f.slot_ranges[last].manager = other;
        f.epoch += 1;
        let moved = ClusterConfig::from_file(&c.dir, f).expect("valid");
        let live = LiveConfig::new(Arc::new(c.clone()));
        assert!(matches!(
            live.install(Arc::new(moved)),
            Err(Refused::MovesSlots { .. })
        ));
        assert_eq!(live.epoch(), c.file.epoch);
    }

    #[test]
    fn a_storage_node_removed_or_renumbered_is_not_followed() {
        let c = base_of(7);
        let mut f = c.file.clone();
        let gone = f
            .nodes
            .iter()
            .position(|n| n.roles == vec![Role::Storage])
            .expect("a storage node");
        f.nodes.remove(gone);
        f.epoch += 1;
        let removed = ClusterConfig::from_file(&c.dir, f).expect("valid");
        let live = LiveConfig::new(Arc::new(c.clone()));
        assert!(matches!(
            live.install(Arc::new(removed)),
            Err(Refused::MovesStorage { .. })
        ));
        // An address change keeps the node in place: followed.
        let mut f = c.file.clone();
        f.nodes[gone].address.set_port(7998);
        f.epoch += 1;
        let moved = ClusterConfig::from_file(&c.dir, f).expect("valid");
        live.install(Arc::new(moved))
            .expect("an address change is followed");
    }

    #[test]
    fn a_waiter_sees_the_install() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let c = base();
            let live = LiveConfig::new(Arc::new(c.clone()));
            let l2 = live.clone();
            let next = Arc::new(with_storage_node(&c));
            let waiter =
                tokio::spawn(
                    async move { l2.wait_newer(c.file.epoch, Duration::from_secs(5)).await },
                );
            tokio::task::yield_now().await;
            live.install(next).expect("followed");
            assert!(waiter.await.expect("joined"));
            assert!(
                !live
                    .wait_newer(live.epoch(), Duration::from_millis(20))
                    .await
            );
        });
    }
}
