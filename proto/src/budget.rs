//! Memory budgets for incoming request frames, at three levels: per connection, per peer
//! identity (all connections of one certificate name together) and per node (the whole
//! endpoint). Owns the counting and the rule for taking bytes: room at every level or none,
//! within a deadline, held until the request has been answered.
//! Must not read from the network or know what frames mean (that is `transport`'s).
//!
//! Why three levels: the connection level keeps one connection from monopolising its
//! identity's share; the identity level keeps one peer (a misbehaving or compromised client
//! with up to `MAX_CONNECTIONS_PER_IDENTITY` connections) from taking the node's; the node
//! level bounds the total however many identities misbehave at once.
//!
//! Room is taken for bytes that have arrived (at most `READ_CHUNK` per read), never ahead
//! of them: room reserved for promised bytes would let a peer that opens many streams and
//! sends nothing starve everyone sharing a level with it. What a stream has in flight
//! before it is read is bounded by QUIC flow control (the stream and connection windows).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The most bytes one read takes off a stream (and room for) at a time. Every limit is at
/// least this, so a single take can always be granted eventually.
pub const READ_CHUNK: usize = 256 << 10;

/// Bytes of request frames held in memory at once (frames being read plus requests being
/// handled), per level.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameLimits {
    pub connection: usize,
    pub identity: usize,
    pub node: usize,
}

impl Default for FrameLimits {
    /// 256 MiB per connection (four of the largest bulk payloads), 512 MiB per identity,
    /// 1 GiB per node.
    fn default() -> Self {
        FrameLimits {
            connection: 256 << 20,
            identity: 512 << 20,
            node: 1 << 30,
        }
    }
}

impl FrameLimits {
    /// Every level at least `READ_CHUNK`, and no level above the one that contains it.
    fn normalised(self) -> FrameLimits {
        let node = self.node.max(READ_CHUNK);
        let identity = self.identity.clamp(READ_CHUNK, node);
        let connection = self.connection.clamp(READ_CHUNK, identity);
        FrameLimits {
            connection,
            identity,
            node,
        }
    }
}

/// The level whose budget stayed exhausted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    Connection,
    Identity,
    Node,
}

impl std::fmt::Display for Level {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Level::Connection => "connection",
            Level::Identity => "identity",
            Level::Node => "node",
        })
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("the {level}'s {limit}-byte frame budget stayed exhausted for {waited:?}")]
pub struct BudgetExhausted {
    pub level: Level,
    pub limit: usize,
    pub waited: Duration,
}

/// A node's budget, shared by every connection its endpoint accepts.
pub struct NodeBudget {
    limits: FrameLimits,
    node: Arc<Semaphore>,
    /// One semaphore per identity name, alive while any connection of it is.
    identities: Mutex<HashMap<String, Weak<Semaphore>>>,
}

impl NodeBudget {
    pub fn new(limits: FrameLimits) -> Arc<NodeBudget> {
        let limits = limits.normalised();
        Arc::new(NodeBudget {
            limits,
            node: Arc::new(Semaphore::new(limits.node)),
            identities: Mutex::new(HashMap::new()),
        })
    }

    pub fn limits(&self) -> FrameLimits {
        self.limits
    }

    /// Bytes of request frames the node holds right now.
    pub fn held(&self) -> usize {
        self.limits.node - self.node.available_permits()
    }

    /// The budget of a new connection of `identity`.
    pub fn connection(&self, identity: &str) -> ConnectionBudget {
        let identity_sem = {
            let mut map = self.identities.lock().unwrap_or_else(|e| e.into_inner());
            map.retain(|_, w| w.strong_count() > 0);
            match map.get(identity).and_then(Weak::upgrade) {
                Some(s) => s,
                None => {
                    let s = Arc::new(Semaphore::new(self.limits.identity));
                    map.insert(identity.to_string(), Arc::downgrade(&s));
                    s
                }
            }
        };
        ConnectionBudget {
            limits: self.limits,
            connection: Arc::new(Semaphore::new(self.limits.connection)),
            identity: identity_sem,
            node: self.node.clone(),
        }
    }
}

/// One connection's view of the budget: its own level, its identity's and the node's.
#[derive(Clone)]
pub struct ConnectionBudget {
    limits: FrameLimits,
    connection: Arc<Semaphore>,
    identity: Arc<Semaphore>,
    node: Arc<Semaphore>,
}

impl ConnectionBudget {
    /// Takes room for `n` bytes (at most `READ_CHUNK`) at every level, in the order
    /// connection, identity, node, each within what is left of `wait`.
    pub async fn take(&self, n: usize, wait: Duration) -> Result<Taken, BudgetExhausted> {
        let n = n.min(READ_CHUNK);
        let deadline = tokio::time::Instant::now() + wait;
        let mut permits = Vec::with_capacity(3);
        for (level, sem, limit) in [
            (Level::Connection, &self.connection, self.limits.connection),
            (Level::Identity, &self.identity, self.limits.identity),
            (Level::Node, &self.node, self.limits.node),
        ] {
            let got =
                tokio::time::timeout_at(deadline, sem.clone().acquire_many_owned(n as u32)).await;
            match got {
                Ok(Ok(p)) => permits.push(p),
                // Timed out (or the semaphore closed, which this module never does).
                _ => {
                    return Err(BudgetExhausted {
                        level,
                        limit,
                        waited: wait,
                    })
                }
            }
        }
        Ok(Taken { n, permits })
    }
}

/// Room taken for one read, before the bytes arrived.
pub struct Taken {
    n: usize,
    permits: Vec<OwnedSemaphorePermit>,
}

impl Taken {
    pub fn len(&self) -> usize {
        self.n
    }

    pub fn is_empty(&self) -> bool {
        self.n == 0
    }
}

/// Room held by one request until it has been answered (dropping it gives the room back).
#[derive(Default)]
pub struct Held {
    permits: Vec<OwnedSemaphorePermit>,
}

impl Held {
    /// Keeps `got` bytes of `taken` (what the stream delivered) and gives the rest back.
    pub fn keep(&mut self, mut taken: Taken, got: usize) {
        let got = got.min(taken.n);
        for mut p in taken.permits.drain(..) {
            if got < taken.n {
                // The split-off part is what we give back.
                drop(p.split(taken.n - got));
            }
            if got == 0 {
                continue;
            }
            match self
                .permits
                .iter_mut()
                .find(|h| Arc::ptr_eq(h.semaphore(), p.semaphore()))
            {
                Some(h) => h.merge(p),
                None => self.permits.push(p),
            }
        }
    }

    /// Bytes held (per level; the same at every level).
    pub fn bytes(&self) -> usize {
        self.permits.first().map_or(0, |p| p.num_permits())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> FrameLimits {
        FrameLimits {
            connection: 2 * READ_CHUNK,
            identity: 3 * READ_CHUNK,
            node: 4 * READ_CHUNK,
        }
    }

    const WAIT: Duration = Duration::from_millis(50);

    #[test]
    fn limits_are_normalised() {
        let l = FrameLimits {
            connection: 10 << 30,
            identity: 1,
            node: 5,
        }
        .normalised();
        assert_eq!(l.node, READ_CHUNK);
        assert_eq!(l.identity, READ_CHUNK);
        assert_eq!(l.connection, READ_CHUNK);
        assert_eq!(FrameLimits::default().normalised(), FrameLimits::default());
    }

    #[tokio::test]
    async fn unused_room_is_given_back_and_kept_room_until_dropped() {
        let node = NodeBudget::new(small());
        let c = node.connection("a");
        let mut held = Held::default();
        let t = c.take(READ_CHUNK, WAIT).await.expect("take");
        held.keep(t, 1000);
        assert_eq!(held.bytes(), 1000);
        assert_eq!(node.held(), 1000);
        let t = c.take(READ_CHUNK, WAIT).await.expect("take");
        held.keep(t, 0);
        assert_eq!(node.held(), 1000);
        drop(held);
        assert_eq!(node.held(), 0);
    }

    #[tokio::test]
    async fn each_level_stops_at_its_limit_and_names_itself() {
        let node = NodeBudget::new(small());
        let a1 = node.connection("a");
        let mut held = Held::default();
        for _ in 0..2 {
            let t = a1.take(READ_CHUNK, WAIT).await.expect("take");
            held.keep(t, READ_CHUNK);
        }
        let e = a1.take(1, WAIT).await.err().expect("connection full");
        assert_eq!(e.level, Level::Connection);
        // Another connection of the same identity: one chunk left of its three.
        let a2 = node.connection("a");
        let t = a2.take(READ_CHUNK, WAIT).await.expect("take");
        held.keep(t, READ_CHUNK);
        let e = a2.take(1, WAIT).await.err().expect("identity full");
        assert_eq!(e.level, Level::Identity);
        // Another identity: the node has one chunk left of its four.
        let b = node.connection("b");
        let t = b.take(READ_CHUNK, WAIT).await.expect("take");
        held.keep(t, READ_CHUNK);
        let e = b.take(1, WAIT).await.err().expect("node full");
        assert_eq!(e.level, Level::Node);
        assert_eq!(node.held(), 4 * READ_CHUNK);
        // A failed take holds nothing; answering gives everything back.
        drop(held);
        assert_eq!(node.held(), 0);
        assert!(b.take(READ_CHUNK, WAIT).await.is_ok());
    }

    #[tokio::test]
    async fn a_waiting_take_is_granted_when_room_is_given_back() {
        let node = NodeBudget::new(small());
        let a = node.connection("a");
        let mut held = Held::default();
        for _ in 0..2 {
            let t = a.take(READ_CHUNK, WAIT).await.expect("take");
            held.keep(t, READ_CHUNK);
        }
        let waiter = {
            let a = a.clone();
            tokio::spawn(async move { a.take(READ_CHUNK, Duration::from_secs(10)).await })
        };
        tokio::task::yield_now().await;
        drop(held);
        let t = waiter.await.expect("join").expect("granted");
        assert_eq!(t.len(), READ_CHUNK);
    }

    #[test]
    fn identities_are_forgotten_with_their_last_connection() {
        let node = NodeBudget::new(small());
        let a = node.connection("a");
        drop(a);
        let _b = node.connection("b");
        let map = node.identities.lock().expect("lock");
        assert!(!map.contains_key("a"));
        assert!(map.contains_key("b"));
    }
}
