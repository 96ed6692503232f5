//! Which hinted peers to ask: the manager's hint minus peers that failed lately, and how
//! the blocks of one read are grouped into requests per round (`round_batches`). Pure (the
//! time comes in), bounded (`MAX_BAD` remembered). Must not do I/O.

use proto::ids::LogPtr;
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// How long a peer that failed is left out.
pub const BAD_FOR: Duration = Duration::from_secs(30);
/// Peers remembered as bad at most (past it the memory is cleared: at worst a bad peer
/// costs one more timeout).
pub const MAX_BAD: usize = 1024;
/// Peers asked for one block at most.
pub const MAX_ASKED: usize = 2;

/// Peers that failed a read, until when they are left out.
#[derive(Default)]
pub struct BadPeers {
    until: HashMap<SocketAddr, Instant>,
}

impl BadPeers {
    pub fn mark(&mut self, peer: SocketAddr, now: Instant) {
        if self.until.len() >= MAX_BAD {
            self.until.retain(|_, u| *u > now);
            if self.until.len() >= MAX_BAD {
                self.until.clear();
            }
        }
        self.until.insert(peer, now + BAD_FOR);
    }

    pub fn is_bad(&self, peer: SocketAddr, now: Instant) -> bool {
        self.until.get(&peer).is_some_and(|u| *u > now)
    }

    /// The peers of `hint` (in its order: most recent holder first) not bad now, at most
    /// `MAX_ASKED`.
    pub fn usable(&self, hint: &[SocketAddr], now: Instant) -> Vec<SocketAddr> {
        let mut out: Vec<SocketAddr> = Vec::new();
        for p in hint {
            if !self.is_bad(*p, now) && !out.contains(p) {
                out.push(*p);
            }
            if out.len() == MAX_ASKED {
                break;
            }
        }
        out
    }
}

/// One block to fetch from peers: its index in the read, its log address, and the peers
/// to ask in order (one per round).
pub type PeerPlan = (usize, LogPtr, Vec<SocketAddr>);

/// The requests of round `round` (0: every block's first peer, 1: its second, ...): the
/// blocks still `missing` that have a peer for that round, grouped by that peer in the
/// read's order, at most `max` blocks per request. One request per peer and batch, so a
/// run of blocks that the first peer no longer holds costs one more round trip in all, not
/// one per block.
pub fn round_batches(
    plans: &[PeerPlan],
    round: usize,
    missing: impl Fn(usize) -> bool,
    max: usize,
) -> Vec<(SocketAddr, Vec<(usize, LogPtr)>)> {
    let mut by_peer: BTreeMap<SocketAddr, Vec<(usize, LogPtr)>> = BTreeMap::new();
    for (k, ptr, peers) in plans {
        if let Some(peer) = peers.get(round).filter(|_| missing(*k)) {
            by_peer.entry(*peer).or_default().push((*k, *ptr));
        }
    }
    by_peer
        .into_iter()
        .flat_map(|(peer, blocks)| {
            blocks
                .chunks(max.max(1))
                .map(|c| (peer, c.to_vec()))
                .collect::<Vec<_>>()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::ids::{LogId, SegmentAddr, SegmentId};

    fn block(k: u32) -> LogPtr {
        LogPtr {
            seg: SegmentAddr {
                log: LogId(1),
                segment: SegmentId(1),
                len: 1 << 24,
                k: 4,
                m: 2,
                nodes: 6,
            },
            offset: k << 16,
            len: 1 << 16,
        }
    }

    #[test]
    fn each_round_asks_every_missing_block_of_a_peer_in_one_request() {
        let plans: Vec<PeerPlan> = (0..5)
            .map(|k| {
                let peers = if k == 4 { vec![a(2)] } else { vec![a(1), a(2)] };
                (k, block(k as u32), peers)
            })
            .collect();
        let first = round_batches(&plans, 0, |_| true, 32);
        assert_eq!(
            first,
            vec![
                (a(1), (0..4).map(|k| (k, block(k as u32))).collect()),
                (a(2), vec![(4, block(4))]),
            ]
        );
        // Peer 1 had blocks 0 and 2 only: the others go to peer 2 together.
        let second = round_batches(&plans, 1, |k| k == 1 || k == 3 || k == 4, 32);
        assert_eq!(second, vec![(a(2), vec![(1, block(1)), (3, block(3))])]);
        assert!(round_batches(&plans, 2, |_| true, 32).is_empty());
    }

    #[test]
    fn batches_are_bounded() {
        let plans: Vec<PeerPlan> = (0..70).map(|k| (k, block(k as u32), vec![a(1)])).collect();
        let sizes: Vec<usize> = round_batches(&plans, 0, |_| true, 32)
            .iter()
            .map(|(_, b)| b.len())
            .collect();
        assert_eq!(sizes, vec![32, 32, 6]);
    }

    fn a(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn a_failed_peer_is_left_out_for_a_while() {
        let mut b = BadPeers::default();
        let t = Instant::now();
        assert_eq!(b.usable(&[a(1), a(2), a(3)], t), vec![a(1), a(2)]);
        b.mark(a(1), t);
        assert_eq!(b.usable(&[a(1), a(2), a(3)], t), vec![a(2), a(3)]);
        assert_eq!(
            b.usable(&[a(1), a(2)], t + BAD_FOR + Duration::from_millis(1)),
            vec![a(1), a(2)]
        );
    }

    #[test]
    fn memory_is_bounded() {
        let mut b = BadPeers::default();
        let t = Instant::now();
        for p in 0..(MAX_BAD as u16 + 5) {
            b.mark(a(p), t);
        }
        assert!(b.until.len() <= MAX_BAD);
    }
}
