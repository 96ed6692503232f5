//! Stripe placement: which storage node holds which fragment of a segment. Pure functions of
//! the config's storage node list (in config order), the log, the segment and (k, m): the
//! writer and every reader compute the same answer with no lookup. Knows nothing of I/O.
//!
//! The stripe group is k+m consecutive storage nodes (cyclically) starting at
//! `(spread(log) + segment) mod n`; fragment `i` goes to the i-th of them. Successive
//! segments of a log rotate by one node, and different logs start at different nodes, so
//! load spreads when there are more than k+m storage nodes. The placement is recorded with
//! the segment (`SegmentAddr::nodes`, also in every fragment's header): a segment is placed
//! over the first `nodes` storage nodes of the list it was written with, so storage nodes
//! added at the end of the list move no existing data and are used by new segments.
//! Removing or reordering nodes does change homes; readers then find fragments by `locate`.
//! A writer moves fragments whose home is believed down (`health`) to a spare server
//! (`avoid_down`); readers find them through `locate`.

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

/// The placement width of a new segment in `config`: every storage node.
pub fn width_now(config: &ClusterConfig) -> u16 {
    config.storage_nodes().len().min(u16::MAX as usize) as u16
}

/// The stripe group in `config` of a segment placed over its first `width` storage nodes
/// (0, or more than the config has: all of them).
pub fn stripe_group(
    config: &ClusterConfig,
    log: LogId,
    segment: SegmentId,
    k: u8,
    m: u8,
    width: u16,
) -> Result<Vec<StripeMember>, PlacementError> {
    let mut nodes = config.storage_nodes();
    if width != 0 && (width as usize) < nodes.len() {
        nodes.truncate(width as usize);
    }
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

/// New stripes avoid servers that are down: each member of `group` whose server `avoid`
/// says is down is moved to the next storage node (in `nodes` order, after the member's
/// home, cyclically) that holds no member of the stripe and is not avoided; a member with
/// no such node left keeps its home. Readers and deletion find moved fragments through
/// `locate`. Pure.
pub fn avoid_down(
    group: &[StripeMember],
    nodes: &[(NodeId, SocketAddr)],
    avoid: impl Fn(SocketAddr) -> bool,
) -> Vec<StripeMember> {
    let mut out: Vec<StripeMember> = group.to_vec();
    let mut used: Vec<SocketAddr> = group.iter().map(|m| m.addr).collect();
    for m in out.iter_mut() {
        if !avoid(m.addr) {
            continue;
        }
        let home = nodes.iter().position(|(_, a)| *a == m.addr).unwrap_or(0);
        let sub = (1..nodes.len())
            .map(|d| nodes[(home + d) % nodes.len()])
            .find(|(_, a)| !used.contains(a) && !avoid(*a));
        if let Some((node, addr)) = sub {
            m.node = node;
            m.addr = addr;
            used.push(addr);
        }
    }
    out
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
    fn down_servers_are_replaced_by_free_live_ones() {
        let nodes: Vec<(NodeId, SocketAddr)> = (0..8u16)
            .map(|i| {
                (
                    NodeId(i as u32 + 1),
                    SocketAddr::from(([127, 0, 0, 1], 7000 + i)),
                )
            })
            .collect();
        let group: Vec<StripeMember> = (0..6u8)
            .map(|i| StripeMember {
                index: i,
                node: nodes[i as usize].0,
                addr: nodes[i as usize].1,
            })
            .collect();
        // Nothing down: unchanged.
        assert_eq!(avoid_down(&group, &nodes, |_| false), group);
        // Servers 1 and 6 down: member 1 moves to 7 (6 is down too), the rest stay.
        let down = [nodes[1].1, nodes[6].1];
        let g = avoid_down(&group, &nodes, |a| down.contains(&a));
        assert_eq!(g[1].addr, nodes[7].1);
        assert_eq!(g[1].index, 1);
        for i in [0, 2, 3, 4, 5] {
            assert_eq!(g[i], group[i]);
        }
        // More down than spares: the extra member keeps its home.
        let down = [nodes[0].1, nodes[1].1, nodes[2].1];
        let g = avoid_down(&group, &nodes, |a| down.contains(&a));
        let addrs: HashSet<SocketAddr> = g.iter().map(|m| m.addr).collect();
        assert_eq!(addrs.len(), 6, "still distinct");
        assert_eq!(g[0].addr, nodes[6].1);
        assert_eq!(g[1].addr, nodes[7].1);
        assert_eq!(g[2].addr, nodes[2].1);
    }

    #[test]
    fn stripe_group_maps_to_storage_nodes() {
        let f = ClusterConfig::generate("t", 7, 1, ErasureConfig { data: 4, parity: 2 }, 7000)
            .expect("gen");
        let c = ClusterConfig::from_file(Path::new("/tmp/x"), f).expect("config");
        let g = stripe_group(&c, LogId(1), SegmentId(3), 4, 2, 0).expect("group");
        assert_eq!(g.len(), 6);
        let storage: Vec<NodeId> = c.storage_nodes().iter().map(|n| n.id).collect();
        for (i, m) in g.iter().enumerate() {
            assert_eq!(m.index as usize, i);
            assert!(storage.contains(&m.node));
            assert_eq!(c.node(m.node).expect("node").address, m.addr);
        }
    }

    #[test]
    fn adding_storage_nodes_moves_no_recorded_segment() {
        let e = ErasureConfig { data: 4, parity: 2 };
        let six = ClusterConfig::from_file(
            Path::new("/tmp/x"),
            ClusterConfig::generate("t", 6, 1, e, 7000).expect("gen"),
        )
        .expect("config");
        // The same cluster with a seventh storage node added at the end of the list.
        let mut f = six.file.clone();
        let mut new = f.nodes[0].clone();
        new.id = Some(six.next_node_id());
        new.name = "storage-7".into();
        new.address = SocketAddr::from(([127, 0, 0, 1], 7100));
        f.nodes.push(new);
        let seven = ClusterConfig::from_file(Path::new("/tmp/x"), f).expect("config");
        assert_eq!((width_now(&six), width_now(&seven)), (6, 7));
        let added = seven.node_by_name("storage-7").expect("7").address;
        let mut uses_new = 0;
        for seg in 0..70 {
            let before = stripe_group(&six, LogId(5), SegmentId(seg), 4, 2, 6).expect("6");
            let after = stripe_group(&seven, LogId(5), SegmentId(seg), 4, 2, 6).expect("6 of 7");
            assert_eq!(before, after, "segment {seg} moved");
            let new_seg = stripe_group(&seven, LogId(5), SegmentId(seg), 4, 2, 7).expect("7");
            uses_new += new_seg.iter().filter(|m| m.addr == added).count();
        }
        // 70 new stripes of 6 over 7 nodes: 60 fragments on each, the new one included.
        assert_eq!(uses_new, 60);
    }
}
