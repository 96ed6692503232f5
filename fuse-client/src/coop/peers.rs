//! Which hinted peers to ask: the manager's hint minus peers that failed lately. Pure (the
//! time comes in), bounded (`MAX_BAD` remembered). Must not do I/O.

use std::collections::HashMap;
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

#[cfg(test)]
mod tests {
    use super::*;

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
