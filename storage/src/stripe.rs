//! Stripe placement: which storage node holds which fragment of a segment. Pure functions of
//! the config's storage node list (in config order), the log, the segment and (k, m): the
//! writer and every reader compute the same answer with no lookup. Knows nothing of I/O.
//!
//! The stripe group is k+m consecutive storage nodes (cyclically) starting at
//! `(spread(log) + segment) mod n`; fragment `i` goes to the i-th of them. Successive
//! segments of a log rotate by one node, and different logs start at different nodes, so
//! load spreads when there are more than k+m storage nodes. Changing the storage node list
//! changes placement of existing segments (a rebuild/migration must follow such a change).

pub use crate::error::PlacementError;
use proto::config::ClusterConfig;
use proto::ids::{LogId, NodeId, SegmentId};
use std::net::SocketAddr;

/// One fragment's home.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StripeMember {
    /// Fragment index: data `0..k`, parity `k..k+m`.
    pub index: u8,
    pub node: NodeId,
    pub addr: SocketAddr,
}

/// A stable 64-bit mix of the log id (splitmix64 finalizer), so that logs start apart.
fn spread(log: LogId) -> u64 {
    let mut z = log.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Positions (into a list of `nodes` storage nodes) of fragments `0..k+m`.
pub fn placement(
    nodes: usize,
    log: LogId,
    segment: SegmentId,
    k: u8,
    m: u8,
) -> Result<Vec<usize>, PlacementError> {
    let width = k as usize + m as usize;
    if k == 0 || nodes < width {
        return Err(PlacementError { k, m, nodes });
    }
    let n = nodes as u64;
    let start = (spread(log) % n + segment.0 % n) % n;
    Ok((0..width as u64)
        .map(|i| ((start + i) % n) as usize)
        .collect())
}

/// The stripe group of a segment in `config`.
pub fn stripe_group(
    config: &ClusterConfig,
    log: LogId,
    segment: SegmentId,
    k: u8,
    m: u8,
) -> Result<Vec<StripeMember>, PlacementError> {
    let nodes = config.storage_nodes();
    Ok(placement(nodes.len(), log, segment, k, m)?
        .into_iter()
        .enumerate()
        .map(|(i, p)| StripeMember {
            index: i as u8,
            node: nodes[p].id,
            addr: nodes[p].address,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::config::ErasureConfig;
    use std::collections::HashSet;
    use std::path::Path;

    #[test]
    fn placement_is_distinct_and_deterministic() {
        for nodes in 6..12 {
            for seg in 0..50 {
                let p = placement(nodes, LogId(42), SegmentId(seg), 4, 2).expect("fits");
                assert_eq!(p.len(), 6);
                assert_eq!(p.iter().collect::<HashSet<_>>().len(), 6, "distinct nodes");
                assert!(p.iter().all(|&x| x < nodes));
                assert_eq!(
                    p,
                    placement(nodes, LogId(42), SegmentId(seg), 4, 2).expect("fits")
                );
            }
        }
    }

    #[test]
    fn segments_rotate_and_spread_load() {
        let nodes = 9;
        let mut load = vec![0usize; nodes];
        for seg in 0..90 {
            for p in placement(nodes, LogId(7), SegmentId(seg), 4, 2).expect("fits") {
                load[p] += 1;
            }
        }
        // 90 stripes x 6 fragments over 9 nodes: rotation gives exactly 60 each.
        assert!(load.iter().all(|&l| l == 60), "{load:?}");
        let a = placement(nodes, LogId(7), SegmentId(0), 4, 2).expect("fits");
        let b = placement(nodes, LogId(7), SegmentId(1), 4, 2).expect("fits");
        assert_eq!((a[0] + 1) % nodes, b[0]);
    }

    #[test]
    fn exact_fit_uses_every_node_and_too_few_is_an_error() {
        let p = placement(6, LogId(3), SegmentId(u64::MAX), 4, 2).expect("fits");
        assert_eq!(p.iter().collect::<HashSet<_>>().len(), 6);
        assert_eq!(
            placement(5, LogId(3), SegmentId(0), 4, 2),
            Err(PlacementError {
                k: 4,
                m: 2,
                nodes: 5
            })
        );
        assert!(placement(5, LogId(3), SegmentId(0), 0, 2).is_err());
    }

    #[test]
    fn stripe_group_maps_to_storage_nodes() {
        let f = ClusterConfig::generate("t", 7, 1, ErasureConfig { data: 4, parity: 2 }, 7000)
            .expect("gen");
        let c = ClusterConfig::from_file(Path::new("/tmp/x"), f).expect("config");
        let g = stripe_group(&c, LogId(1), SegmentId(3), 4, 2).expect("group");
        assert_eq!(g.len(), 6);
        let storage: Vec<NodeId> = c.storage_nodes().iter().map(|n| n.id).collect();
        for (i, m) in g.iter().enumerate() {
            assert_eq!(m.index as usize, i);
            assert!(storage.contains(&m.node));
            assert_eq!(c.node(m.node).expect("node").address, m.addr);
        }
    }
}
