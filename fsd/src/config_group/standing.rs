//! Whether a node's own `cluster.toml` may decide what its manager serves, given the config
//! the group committed (`standing`, pure), and the wait for that answer at a manager's start
//! (`ConfigGroup::agreement`).
//!
//! The rule: a manager serves by its file only if the file does not contradict the committed
//! config. A file at the committed epoch or older must give the same layout (nodes, the
//! manager map, erasure: `ClusterFile::layout_difference`); otherwise two nodes with
//! different files could serve the same slots, or a node could serve with a map the cluster
//! has replaced. A file newer than the committed config is the operator's next config
//! (`shoal node add` writes one): the node serves by it, and its member proposes it when it
//! leads (`super::offer`).
//!
//! Must not: read files or talk to anyone (the caller brings both configs).

use proto::config::ClusterFile;

/// How a node's own file stands against the committed config.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Standing {
    /// Nothing is committed yet (a fresh group before its seed): wait.
    Unknown,
    /// Same layout at the committed epoch, or an older file with the same layout.
    Agrees,
    /// Newer than the committed config: serve by it, propose it.
    Ahead { committed: u64 },
    /// Contradicts the committed config: do not serve.
    Conflicts { committed: u64, why: String },
}

/// How `local` stands against `committed` (see the module docs).
pub fn standing(local: &ClusterFile, committed: Option<&ClusterFile>) -> Standing {
    let Some(c) = committed else {
        return Standing::Unknown;
    };
    if local.epoch > c.epoch {
        return Standing::Ahead { committed: c.epoch };
    }
    match local.layout_difference(c) {
        None => Standing::Agrees,
        Some(why) => Standing::Conflicts {
            committed: c.epoch,
            why,
        },
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
    use proto::config::{ClusterConfig, ErasureConfig};

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
    fn a_newer_file_is_ahead_whatever_it_says() {
        let c = file();
        let mut mine = c.clone();
        mine.epoch += 1;
        mine.nodes.pop();
        assert_eq!(
            standing(&mine, Some(&c)),
            Standing::Ahead { committed: c.epoch }
        );
        assert_eq!(Standing::Ahead { committed: 1 }.refusal(2), None);
    }
}
