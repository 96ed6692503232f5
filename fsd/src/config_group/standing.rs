//! Whether a node's own `cluster.toml` may decide what its manager serves, given the config
//! the group committed (`standing`, pure). `ConfigGroup::agreement` (in `mod.rs`) waits for
//! its answer at a manager's start.
//!
//! The rule: a manager serves by its file only if the file does not contradict the committed
//! config. A file at the committed epoch or older must give the same layout (nodes, the
//! manager map, erasure: `ClusterFile::layout_difference`); otherwise two nodes with
//! different files could serve the same slots, or a node could serve with a map the cluster
//! has replaced. The one exception is an older file that the committed config only extends
//! harmlessly (no slot's server and no manager changed): the node serves and follows the
//! committed config once running (`Behind`). A file exactly one epoch ahead that changes no slot's server
//! (`ClusterFile::serving_difference`: storage nodes added or removed, tunables) is the
//! operator's next config, as `shoal node add` writes it: the node serves by it, and its
//! member proposes it when it leads (`super::offer`). Any other newer file waits until the
//! group has committed its epoch, and is then judged as above: a node never serves a
//! manager map the group has not committed.
//!
//! Must not: read files or talk to anyone (the caller brings both configs).

use proto::config::{ClusterConfig, ClusterFile};

/// How a node's own file stands against the committed config.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Standing {
    /// Nothing is committed yet (a fresh group before its seed): wait.
    Unknown,
    /// Same layout at the committed epoch, or an older file with the same layout.
    Agrees,
    /// Older than the committed config, which changes no slot's server nor any manager
    /// (storage nodes added while this node was down, e.g. by `shoal node add` on another
    /// machine): serve; the node's follower (`proto::follow`) installs the committed one.
    Behind { committed: u64 },
    /// One epoch ahead of the committed config, with the same servers for every slot:
    /// serve by it, propose it.
    Ahead { committed: u64 },
    /// Newer than the committed config, but it changes who serves what (or skips epochs):
    /// wait until the group commits its epoch, then judge again.
    Pending { committed: u64, why: String },
    /// Contradicts the committed config: do not serve.
    Conflicts { committed: u64, why: String },
}

/// How `local` stands against `committed` (see the module docs).
pub fn standing(local: &ClusterFile, committed: Option<&ClusterFile>) -> Standing {
    let Some(c) = committed else {
        return Standing::Unknown;
    };
    if local.epoch > c.epoch {
        if local.epoch > c.epoch + 1 {
            return Standing::Pending {
                committed: c.epoch,
                why: format!(
                    "it is {} epochs ahead (the group takes one epoch at a time)",
                    local.epoch - c.epoch
                ),
            };
        }
        return match local.serving_difference(c) {
            None => Standing::Ahead { committed: c.epoch },
            Some(why) => Standing::Pending {
                committed: c.epoch,
                why: format!("it changes who serves what ({why})"),
            },
        };
    }
    match local.layout_difference(c) {
        None => Standing::Agrees,
        Some(_) if local.epoch < c.epoch && followable(local, c) => {
            Standing::Behind { committed: c.epoch }
        }
        Some(why) => Standing::Conflicts {
            committed: c.epoch,
            why,
        },
    }
}

/// Whether a node running by `local` would follow `committed` (`proto::live::accepts`: no
/// slot or manager change, the storage nodes kept in place).
fn followable(local: &ClusterFile, committed: &ClusterFile) -> bool {
    let dir = std::path::Path::new(".");
    match (
        ClusterConfig::from_file(dir, local.clone()),
        ClusterConfig::from_file(dir, committed.clone()),
    ) {
        (Ok(l), Ok(c)) => proto::live::accepts(&l, &c).is_ok(),
        _ => false,
    }
}

impl Standing {
    /// Why a manager with this standing must not serve, said so that an operator knows
    /// what to do; `None` if it may serve.
    pub fn refusal(&self, local_epoch: u64) -> Option<String> {
        match self {
            Standing::Conflicts { committed, why } => Some(format!(
                "this node's cluster.toml (epoch {local_epoch}) contradicts the config the cluster committed (epoch {committed}): {why}; \
                 give this node the cluster's current cluster.toml (or a newer epoch of it) and restart it"
            )),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::config::ErasureConfig;

    fn file() -> ClusterFile {
        ClusterConfig::generate("t", 4, 2, ErasureConfig { data: 2, parity: 1 }, 7100)
            .expect("generate")
    }

    #[test]
    fn nothing_committed_is_unknown() {
        assert_eq!(standing(&file(), None), Standing::Unknown);
    }

    #[test]
    fn the_same_layout_agrees_at_the_epoch_or_older() {
        let c = file();
        assert_eq!(standing(&c, Some(&c)), Standing::Agrees);
        let mut newer = c.clone();
        newer.epoch += 1;
        newer.manager.lease_ms += 1;
        assert_eq!(standing(&c, Some(&newer)), Standing::Agrees);
        assert_eq!(Standing::Agrees.refusal(c.epoch), None);
    }

    #[test]
    fn an_older_file_without_a_storage_node_added_since_is_behind() {
        let c = file();
        let mut newer = c.clone();
        newer.epoch += 1;
        let mut extra = newer.nodes[0].clone();
        extra.name = "storage-new".into();
        extra.id = Some(99);
        newer.last_node_id = 99;
        extra.address.set_port(2);
        newer.nodes.push(extra);
        let s = standing(&c, Some(&newer));
        assert_eq!(
            s,
            Standing::Behind {
                committed: newer.epoch
            }
        );
        assert_eq!(s.refusal(c.epoch), None);
        // At the same epoch the same difference is a contradiction.
        let mut same = newer.clone();
        same.epoch = c.epoch;
        assert!(matches!(
            standing(&c, Some(&same)),
            Standing::Conflicts { .. }
        ));
    }

    #[test]
    fn another_manager_map_at_the_epoch_or_older_conflicts() {
        let c = file();
        let mut mine = c.clone();
        mine.slot_ranges[1].manager = mine.slot_ranges[0].manager.clone();
        let s = standing(&mine, Some(&c));
        assert!(
            matches!(&s, Standing::Conflicts { committed, why } if *committed == c.epoch && why.contains("slots")),
            "{s:?}"
        );
        let text = s.refusal(mine.epoch).expect("refused");
        assert!(
            text.contains("contradicts") && text.contains("restart"),
            "{text}"
        );
        let mut committed = c.clone();
        committed.epoch += 2;
        assert!(matches!(
            standing(&mine, Some(&committed)),
            Standing::Conflicts { .. }
        ));
    }

    #[test]
    fn the_next_epoch_is_ahead_only_if_no_slot_changes_server() {
        let c = file();
        let storage = |f: &ClusterFile| {
            f.nodes
                .iter()
                .position(|n| !n.roles.contains(&proto::config::Role::Manager))
                .expect("a storage node")
        };
        let mut mine = c.clone();
        mine.epoch += 1;
        let i = storage(&mine);
        mine.nodes.remove(i);
        assert_eq!(
            standing(&mine, Some(&c)),
            Standing::Ahead { committed: c.epoch },
            "a storage node fewer"
        );
        assert_eq!(Standing::Ahead { committed: 1 }.refusal(2), None);
        // The same next epoch, giving one manager every slot: not before the group agrees.
        let mut grab = c.clone();
        grab.epoch += 1;
        grab.slot_ranges[1].manager = grab.slot_ranges[0].manager.clone();
        let s = standing(&grab, Some(&c));
        assert!(
            matches!(&s, Standing::Pending { committed, why } if *committed == c.epoch && why.contains("slots")),
            "{s:?}"
        );
        assert_eq!(s.refusal(grab.epoch), None, "waits, not refused");
        // Once the group committed that epoch, it is judged by the layout.
        assert_eq!(standing(&grab, Some(&grab)), Standing::Agrees);
        let mut other = grab.clone();
        other.slot_ranges = c.slot_ranges.clone();
        assert!(matches!(
            standing(&grab, Some(&other)),
            Standing::Conflicts { .. }
        ));
    }

    #[test]
    fn a_file_that_skips_epochs_waits() {
        let c = file();
        let mut mine = c.clone();
        mine.epoch += 2;
        assert!(matches!(
            standing(&mine, Some(&c)),
            Standing::Pending { .. }
        ));
    }
}
