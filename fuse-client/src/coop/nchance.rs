//! N-chance forwarding (Dahlin et al., OSDI 1994; DESIGN.md §5), the pure core: what a
//! client does with a block it evicts, and whether it keeps a block a peer forwards.
//! Events in, commands out (`NChance::on_event`, `drain`); no clock, no randomness of its
//! own (the caller passes a random number where a peer is chosen), no I/O, no bytes (the
//! shell holds them). Unit-tested without a runtime.
//!
//! Rules:
//! - A block this client evicts that it believes to be the last cached copy in the cluster
//!   (a *singlet*: read from storage while the manager named no other holder) is forwarded
//!   to a random known peer with a recirculation count of `n` (default 2) instead of being
//!   dropped. With no peer known it is dropped (counted).
//! - A receiver keeps forwarded blocks apart from its own (at most `max_held`): a forward
//!   can never push out the receiver's own blocks. To make room it passes its oldest
//!   forwarded block on with its count less one, or drops it when the count runs out.
//!   Counts outside `1..=n` are refused. So every forwarded block lives through at most
//!   `n` evictions, and a flood of forwards costs the receiver only `max_held` blocks.
//! - A forwarded block that is read here (`Referenced`) leaves the forwarded set: the shell
//!   makes it an ordinary cached block.
//!
//! A stale view (a peer that is gone, a block that is not a singlet after all) costs a
//! failed forward or an extra copy, never a wrong read: forwarded blocks are served and
//! read only by exact log address, like every peer read.

use proto::ids::LogPtr;
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;

/// Recirculation count of a forwarded singlet (the paper's N).
pub const DEFAULT_N: u8 = 2;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// The block cache evicted this client's own copy of log bytes `ptr`; `singlet` when
    /// no other client was known to hold it; `pick` is random (the peer choice).
    Evicted {
        ptr: LogPtr,
        singlet: bool,
        pick: u64,
    },
    /// `from` forwards log bytes `ptr` with `recirc` chances left; `pick` is random (where
    /// a displaced block goes).
    Offered {
        ptr: LogPtr,
        recirc: u8,
        from: SocketAddr,
        pick: u64,
    },
    /// A forwarded block held here was read: an ordinary block from now on.
    Referenced { ptr: LogPtr },
    /// The peers a forward may go to (from the managers' hints), replacing the old list.
    Peers(Vec<SocketAddr>),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// Send log bytes `ptr` to `to` with `recirc` chances left (a held forwarded block
    /// leaves the forwarded set with it).
    Forward {
        to: SocketAddr,
        ptr: LogPtr,
        recirc: u8,
    },
    /// Keep the offered block in the forwarded set.
    Accept { ptr: LogPtr },
    /// Refuse the offered block (counted in `forwards_dropped`).
    Refuse { ptr: LogPtr, from: SocketAddr },
    /// Log bytes `ptr` ran out of chances or had nowhere to go: dropped (counted).
    Dropped { ptr: LogPtr },
}

/// The N-chance state of one client.
pub struct NChance {
    n: u8,
    max_held: usize,
    /// Forwarded blocks held here: chances left and arrival order.
    held: HashMap<LogPtr, (u8, u64)>,
    order: BTreeMap<u64, LogPtr>,
    seq: u64,
    peers: Vec<SocketAddr>,
    out: Vec<Command>,
}

impl NChance {
    /// `n` chances per singlet, at most `max_held` forwarded blocks held at once.
    pub fn new(n: u8, max_held: usize) -> NChance {
        NChance {
            n,
            max_held: max_held.max(1),
            held: HashMap::new(),
            order: BTreeMap::new(),
            seq: 0,
            peers: Vec::new(),
            out: Vec::new(),
        }
    }

    /// Forwarded blocks held here now.
    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// Whether log bytes `ptr` are in the forwarded set.
    pub fn holds(&self, ptr: &LogPtr) -> bool {
        self.held.contains_key(ptr)
    }

    /// Handles one event; the commands it causes are taken with `drain`.
    pub fn on_event(&mut self, ev: Event) {
        match ev {
            Event::Peers(p) => self.peers = p,
            Event::Referenced { ptr } => {
                if let Some((_, seq)) = self.held.remove(&ptr) {
                    self.order.remove(&seq);
                }
            }
            Event::Evicted { ptr, singlet, pick } => {
                if singlet {
                    self.pass_on(ptr, self.n, pick);
                }
            }
            Event::Offered {
                ptr,
                recirc,
                from,
                pick,
            } => {
                if !(1..=self.n).contains(&recirc) || self.held.contains_key(&ptr) {
                    self.out.push(Command::Refuse { ptr, from });
                    return;
                }
                while self.held.len() >= self.max_held {
                    let Some((_, old)) = self.order.pop_first() else {
                        break;
                    };
                    if let Some((left, _)) = self.held.remove(&old) {
                        self.pass_on(old, left - 1, pick);
                    }
                }
                self.seq += 1;
                self.held.insert(ptr, (recirc, self.seq));
                self.order.insert(self.seq, ptr);
                self.out.push(Command::Accept { ptr });
            }
        }
    }

    /// `ptr` leaves this client with `left` chances: forwarded if any are left and a peer
    /// is known, else dropped.
    fn pass_on(&mut self, ptr: LogPtr, left: u8, pick: u64) {
        if left == 0 || self.peers.is_empty() {
            self.out.push(Command::Dropped { ptr });
        } else {
            let to = self.peers[(pick % self.peers.len() as u64) as usize];
            self.out.push(Command::Forward {
                to,
                ptr,
                recirc: left,
            });
        }
    }

    /// The commands caused since the last call.
    pub fn drain(&mut self) -> Vec<Command> {
        std::mem::take(&mut self.out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::ids::{LogId, SegmentAddr, SegmentId};

    fn ptr(i: u32) -> LogPtr {
        LogPtr {
            seg: SegmentAddr {
                log: LogId(1),
                segment: SegmentId(1),
                len: 1 << 24,
                k: 4,
                m: 2,
                nodes: 6,
            },
            offset: i * 65536,
            len: 65536,
        }
    }

    fn a(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn offer(c: &mut NChance, p: LogPtr, recirc: u8, from: u16) -> Vec<Command> {
        c.on_event(Event::Offered {
            ptr: p,
            recirc,
            from: a(from),
            pick: 0,
        });
        c.drain()
    }

    #[test]
    fn a_singlet_lives_through_n_evictions_then_is_dropped() {
        // Three clients whose forwarded sets hold one block each; the singlet travels
        // 1 -> 2 -> 3 and is dropped at 3's next displacement.
        let mut c: Vec<NChance> = (0..3).map(|_| NChance::new(DEFAULT_N, 1)).collect();
        c[0].on_event(Event::Peers(vec![a(2)]));
        c[1].on_event(Event::Peers(vec![a(3)]));
        c[2].on_event(Event::Peers(vec![a(1)]));
        let p = ptr(7);
        c[0].on_event(Event::Evicted {
            ptr: p,
            singlet: true,
            pick: 0,
        });
        let fwd = Command::Forward {
            to: a(2),
            ptr: p,
            recirc: 2,
        };
        assert_eq!(c[0].drain(), vec![fwd]);
        assert_eq!(offer(&mut c[1], p, 2, 1), vec![Command::Accept { ptr: p }]);
        // First eviction at 2 (another forward displaces it): one chance left, on to 3.
        let cmds = offer(&mut c[1], ptr(8), 2, 1);
        assert_eq!(
            cmds,
            vec![
                Command::Forward {
                    to: a(3),
                    ptr: p,
                    recirc: 1
                },
                Command::Accept { ptr: ptr(8) }
            ]
        );
        assert_eq!(offer(&mut c[2], p, 1, 2), vec![Command::Accept { ptr: p }]);
        // Second eviction at 3: no chance left.
        let cmds = offer(&mut c[2], ptr(9), 2, 2);
        assert_eq!(
            cmds,
            vec![Command::Dropped { ptr: p }, Command::Accept { ptr: ptr(9) }]
        );
    }

    #[test]
    fn non_singlets_just_go_and_referenced_forwards_leave_the_set() {
        let mut c = NChance::new(DEFAULT_N, 2);
        c.on_event(Event::Peers(vec![a(2), a(3)]));
        c.on_event(Event::Evicted {
            ptr: ptr(1),
            singlet: false,
            pick: 0,
        });
        assert!(c.drain().is_empty(), "another copy exists: just dropped");
        offer(&mut c, ptr(2), 1, 2);
        assert!(c.holds(&ptr(2)));
        c.on_event(Event::Referenced { ptr: ptr(2) });
        assert!(!c.holds(&ptr(2)));
        assert_eq!(c.held(), 0);
        // The random pick chooses among the peers.
        c.on_event(Event::Evicted {
            ptr: ptr(3),
            singlet: true,
            pick: 1,
        });
        assert!(matches!(c.drain()[..], [Command::Forward { to, .. }] if to == a(3)));
    }

    #[test]
    fn a_flood_of_forwards_costs_at_most_max_held() {
        let mut c = NChance::new(DEFAULT_N, 4);
        let mut accepted = 0;
        for i in 0..100 {
            for cmd in offer(&mut c, ptr(i), 2, 9) {
                if matches!(cmd, Command::Accept { .. }) {
                    accepted += 1;
                }
            }
            assert!(c.held() <= 4);
        }
        assert_eq!(accepted, 100, "each displaces the oldest");
        // Counts out of range, and duplicates, are refused.
        for r in [0, DEFAULT_N + 1] {
            assert!(matches!(
                offer(&mut c, ptr(500), r, 9)[..],
                [Command::Refuse { .. }]
            ));
        }
        assert!(matches!(
            offer(&mut c, ptr(99), 1, 9)[..],
            [Command::Refuse { .. }]
        ));
    }

    #[test]
    fn a_singlet_with_no_peer_to_go_to_is_dropped_and_counted() {
        let mut c = NChance::new(DEFAULT_N, 16);
        c.on_event(Event::Evicted {
            ptr: ptr(1),
            singlet: true,
            pick: 0,
        });
        assert_eq!(c.drain(), vec![Command::Dropped { ptr: ptr(1) }]);
    }
}
