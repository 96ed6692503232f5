//! Membership leases of manager hosts at the config group (issue 13, automatic takeover):
//! every member records when each host last asked to renew; the leader grants renewals and,
//! once a host has been silent for a lease and a margin, picks a live manager to take its
//! groups over.
//!
//! Owns the member's table (last renewal seen per host, since when this member leads, the
//! hosts whose groups it is moving) and both decisions: whether a renewal may be granted,
//! and which group moves where. Pure: instants in, answers out; the shell in `mod.rs`
//! confirms leadership, answers renewals and asks the chosen host to adopt the group. Must
//! not: talk to anyone or propose anything.
//!
//! Why it is safe: a host counts its lease from when it *sent* the renewal
//! (`manager::serving_lease`), and every member records the renewal when it *arrives*, so a
//! host's lease never ends later than `seen + lease` at the member. The leader moves a group
//! only at `max(seen, leading since) + lease + margin`: past every lease this leader granted,
//! and past every lease an earlier leader granted (that one confirmed its leadership before
//! this one was elected). A host whose groups are being moved gets no more grants from this
//! leader. A host this member never saw renew (since it started) is never moved
//! automatically: it may simply not have started yet (`shoal manager takeover` moves it).

use proto::config::{ClusterConfig, Node, Role};
use proto::ids::NodeId;
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

/// A group to hand to another manager.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Move {
    pub group: NodeId,
    /// The silent host it leaves.
    pub from: NodeId,
    /// The live manager that is to serve it.
    pub to: NodeId,
}

/// How long a move asked of a host is given before it is asked again.
pub const MOVE_RETRY: Duration = Duration::from_secs(5);

/// One member's view of the hosts' membership leases.
#[derive(Debug)]
pub struct HostLeases {
    lease: Duration,
    /// Since when this member leads (`None`: it does not).
    since: Option<Instant>,
    /// The last renewal that arrived here from each host.
    seen: BTreeMap<NodeId, Instant>,
    /// Hosts whose groups this leader is moving: no more grants to them.
    condemned: BTreeSet<NodeId>,
    /// The last move asked for, and when.
    asked: Option<(Move, Instant)>,
}

/// How long past a host's lease the leader waits before it moves the host's groups: half a
/// lease, at least 500 ms (clock rates and scheduling differ between machines).
pub fn margin(lease: Duration) -> Duration {
    (lease / 2).max(Duration::from_millis(500))
}

impl HostLeases {
    pub fn new(lease: Duration) -> HostLeases {
        HostLeases {
            lease,
            since: None,
            seen: BTreeMap::new(),
            condemned: BTreeSet::new(),
            asked: None,
        }
    }

    /// The lease of the config in force (it may change with a committed config).
    pub fn set_lease(&mut self, lease: Duration) {
        self.lease = lease;
    }

    pub fn lease(&self) -> Duration {
        self.lease
    }

    /// This member observed at `now` that it leads (a new term): it keeps the renewals it
    /// saw as a follower; what an earlier leader granted ends by `now + lease`.
    pub fn lead(&mut self, now: Instant) {
        if self.since.is_none() {
            self.since = Some(now);
            self.condemned.clear();
            self.asked = None;
        }
    }

    /// This member does not lead (any more).
    pub fn follow(&mut self) {
        self.since = None;
        self.condemned.clear();
        self.asked = None;
    }

    /// A renewal from `host` arrived at `now`: recorded by every member. `Ok` if the leader
    /// may grant it (once it has confirmed its leadership, `grantable` again).
    pub fn arrived(&mut self, host: NodeId, now: Instant) -> Result<(), String> {
        let e = self.seen.entry(host).or_insert(now);
        *e = (*e).max(now);
        self.grantable(host)
    }

    /// Whether this member may grant `host` a lease now.
    pub fn grantable(&self, host: NodeId) -> Result<(), String> {
        if self.since.is_none() {
            return Err("this member does not lead the config group".into());
        }
        if self.condemned.contains(&host) {
            return Err(format!(
                "{host}'s membership lease ran out and its manager groups are being handed to another manager"
            ));
        }
        Ok(())
    }

    /// Whether `host` renewed at this member within a lease before `now`.
    fn alive(&self, host: NodeId, now: Instant) -> bool {
        self.seen.get(&host).is_some_and(|t| now < *t + self.lease)
    }

    /// Whether every lease `host` may hold has ended at `now`, with the margin (only a host
    /// this member saw renew).
    fn silent(&self, host: NodeId, now: Instant) -> bool {
        let (Some(since), Some(seen)) = (self.since, self.seen.get(&host)) else {
            return false;
        };
        now >= since.max(*seen) + self.lease + margin(self.lease)
    }

    /// The next group to move at `now` under `config`, if any (only while leading). A silent
    /// host's hosted groups move before its own (a host must serve its own group to host
    /// others); each goes to the live manager serving its own group that hosts the fewest
    /// groups (then the lowest id). Only manager-only nodes' groups can move
    /// (`ClusterFile::takeover`). One move at a time: the same move is asked again only
    /// after `MOVE_RETRY`.
    pub fn decide(&mut self, config: &ClusterConfig, now: Instant) -> Option<Move> {
        self.since?;
        let managers = config.manager_nodes();
        let hosting = |h: NodeId| managers.iter().filter(|n| n.host == h).count();
        // A condemned host that hosts nothing any more may be granted again (it serves
        // nothing; its renewals keep it known to be alive).
        self.condemned.retain(|h| hosting(*h) > 0);
        let movable = |n: &Node| n.roles.iter().all(|r| *r == Role::Manager);
        let mut groups: Vec<&Node> = managers
            .iter()
            .copied()
            .filter(|n| movable(n) && self.silent(n.host, now))
            .collect();
        groups.sort_by_key(|n| (n.id == n.host, n.id));
        let g = groups.first()?;
        let to = managers
            .iter()
            .filter(|c| {
                !c.is_hosted()
                    && c.id != g.host
                    && !self.condemned.contains(&c.id)
                    && self.alive(c.id, now)
            })
            .min_by_key(|c| (hosting(c.id), c.id))?;
        let m = Move {
            group: g.id,
            from: g.host,
            to: to.id,
        };
        self.condemned.insert(g.host);
        if let Some((last, at)) = self.asked {
            if last == m && now < at + MOVE_RETRY {
                return None;
            }
        }
        self.asked = Some((m, now));
        Some(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::config::ErasureConfig;

    const LEASE: Duration = Duration::from_secs(2);

    /// 6 storage nodes (ids 1-6) and 3 managers (7, 8, 9).
    fn cluster() -> ClusterConfig {
        let f = ClusterConfig::generate("t", 6, 3, ErasureConfig { data: 4, parity: 2 }, 7000)
            .expect("valid");
        ClusterConfig::from_file(std::path::Path::new("."), f).expect("valid")
    }

    fn moved(c: &ClusterConfig, m: Move) -> ClusterConfig {
        let name = |id| c.node(id).expect("node").name.clone();
        let f = c
            .file
            .takeover(
                &name(m.group),
                &name(m.to),
                "127.0.0.1:7200".parse().expect("addr"),
            )
            .expect("valid");
        ClusterConfig::from_file(std::path::Path::new("."), f).expect("valid")
    }

    const M1: NodeId = NodeId(7);
    const M2: NodeId = NodeId(8);
    const M3: NodeId = NodeId(9);

    #[test]
    fn a_follower_records_renewals_but_grants_and_moves_nothing() {
        let c = cluster();
        let t0 = Instant::now();
        let mut l = HostLeases::new(LEASE);
        assert!(l.arrived(M1, t0).is_err(), "a follower grants nothing");
        assert_eq!(l.decide(&c, t0 + Duration::from_secs(60)), None);
        l.lead(t0 + Duration::from_secs(1));
        assert!(l.grantable(M1).is_ok());
    }

    #[test]
    fn a_silent_host_moves_only_after_its_lease_and_the_margin_and_goes_to_the_least_loaded_live_manager(
    ) {
        let c = cluster();
        let t0 = Instant::now();
        let mut l = HostLeases::new(LEASE);
        l.lead(t0);
        for m in [M1, M2, M3] {
            l.arrived(m, t0).expect("granted");
        }
        // M2 goes silent; M1 and M3 keep renewing.
        let mut t = t0;
        let end = t0 + LEASE + margin(LEASE);
        while t < end {
            assert_eq!(l.decide(&c, t), None, "moved before {:?}", end - t0);
            l.arrived(M1, t).expect("M1 renews");
            l.arrived(M3, t).expect("M3 renews");
            t += Duration::from_millis(250);
        }
        let m = l.decide(&c, end).expect("M2 moves");
        assert_eq!(
            m,
            Move {
                group: M2,
                from: M2,
                to: M1
            }
        );
        // M2 renewing late gets no grant from this leader.
        assert!(l.arrived(M2, end).is_err());
        // Asked once; asked again only after MOVE_RETRY.
        assert_eq!(l.decide(&c, end + Duration::from_millis(100)), None);
        l.arrived(M1, end + MOVE_RETRY).expect("M1");
        l.arrived(M3, end + MOVE_RETRY).expect("M3");
        assert_eq!(l.decide(&c, end + MOVE_RETRY), Some(m));
        // Committed: M1 serves M2's group; nothing is left to move.
        let c2 = moved(&c, m);
        assert_eq!(
            l.decide(&c2, end + MOVE_RETRY),
            None,
            "nothing left to move"
        );
        assert!(
            l.grantable(M2).is_ok(),
            "a host serving nothing may renew again"
        );
    }

    #[test]
    fn a_new_leader_waits_a_lease_past_its_election_whatever_it_saw() {
        let c = cluster();
        let t0 = Instant::now();
        let mut l = HostLeases::new(LEASE);
        // As a follower it saw M2 long ago; M1 and M3 renew.
        let _ = l.arrived(M2, t0);
        let elected = t0 + Duration::from_secs(30);
        l.lead(elected);
        for dt in (0..=12).map(|i| Duration::from_millis(250 * i)) {
            l.arrived(M1, elected + dt).expect("M1");
            l.arrived(M3, elected + dt).expect("M3");
            if dt < LEASE + margin(LEASE) {
                assert_eq!(l.decide(&c, elected + dt), None, "at {dt:?}");
            }
        }
        assert_eq!(
            l.decide(&c, elected + LEASE + margin(LEASE))
                .map(|m| m.group),
            Some(M2)
        );
    }

    #[test]
    fn a_host_never_seen_is_not_moved_and_no_dead_host_is_chosen() {
        let c = cluster();
        let t0 = Instant::now();
        let mut l = HostLeases::new(LEASE);
        l.lead(t0);
        // Only M1 ever renews: M2 and M3 may not have started.
        for i in 0..40 {
            l.arrived(M1, t0 + Duration::from_millis(250 * i))
                .expect("M1");
        }
        assert_eq!(l.decide(&c, t0 + Duration::from_secs(10)), None);
        // M2 and M3 both seen once, then silent; M1 alive: both go to M1, one at a time.
        let mut l = HostLeases::new(LEASE);
        l.lead(t0);
        for m in [M1, M2, M3] {
            l.arrived(m, t0).expect("granted");
        }
        let t = t0 + Duration::from_secs(4);
        l.arrived(M1, t).expect("M1");
        let first = l.decide(&c, t).expect("a move");
        assert_eq!((first.group, first.to), (M2, M1));
        let c2 = moved(&c, first);
        let second = l.decide(&c2, t).expect("the next move");
        assert_eq!((second.group, second.to), (M3, M1));
        // With M1 silent too, no live manager: nothing moves.
        let mut l = HostLeases::new(LEASE);
        l.lead(t0);
        for m in [M1, M2, M3] {
            l.arrived(m, t0).expect("granted");
        }
        assert_eq!(l.decide(&c, t0 + Duration::from_secs(10)), None);
    }

    #[test]
    fn a_silent_hosts_hosted_groups_move_before_its_own() {
        let c = cluster();
        let t0 = Instant::now();
        // M1 hosts M2's group; then M1 goes silent.
        let c2 = moved(
            &c,
            Move {
                group: M2,
                from: M2,
                to: M1,
            },
        );
        let mut l = HostLeases::new(LEASE);
        l.lead(t0);
        for m in [M1, M2, M3] {
            l.arrived(m, t0).expect("granted");
        }
        let t = t0 + Duration::from_secs(4);
        l.arrived(M2, t)
            .expect("M2 (deposed, serving nothing) renews");
        l.arrived(M3, t).expect("M3");
        let first = l.decide(&c2, t).expect("a move");
        assert_eq!((first.group, first.from, first.to), (M2, M1, M3));
    }
}
