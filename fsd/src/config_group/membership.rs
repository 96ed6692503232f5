//! Keeping the group's raft membership equal to the members the committed config names
//! (`ClusterConfig::config_group_members`): `plan` (pure) says the next step, `follow` (the
//! leader's task) takes it through openraft's own membership changes (a learner first, then
//! joint consensus to the new voters), one step at a time.
//!
//! This is how a group made before storage nodes could be members (two managers, so two
//! voters that both had to answer) grows to three voters, and how a committed config that
//! adds or removes a manager, or moves a member, reaches the group. Must not: remove the
//! leader itself (a config that leaves it out waits for another member to lead), or change
//! membership on any member but the leader.

use super::{members, GroupRaft, GroupState, RaftId};
use openraft::{BasicNode, ChangeMembers, RaftMetrics};
use proto::config::ClusterConfig;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// The group's membership as raft holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Current {
    pub voters: BTreeSet<RaftId>,
    /// Voters and learners, with the addresses raft dials.
    pub nodes: BTreeMap<RaftId, BasicNode>,
    /// A joint configuration (a change under way, or one a leader left half done).
    pub joint: bool,
}

/// The next membership step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Raft's membership is the wanted one.
    Settled,
    /// The wanted members raft does not know yet, to be added as learners (they catch up
    /// before they can vote).
    AddLearners(BTreeMap<RaftId, BasicNode>),
    /// Members whose committed address differs from the one raft dials.
    SetAddresses(BTreeMap<RaftId, BasicNode>),
    /// Make exactly these the voters (through a joint configuration); the others are
    /// removed from the group.
    SetVoters(BTreeSet<RaftId>),
    /// Learners no longer wanted.
    RemoveLearners(BTreeSet<RaftId>),
    /// The wanted voters leave out the leader (`me`): it must not remove itself; another
    /// member makes the change once it leads.
    LeavesOutLeader,
}

/// The step that brings `current` closer to `wanted`, as seen by the leader `me` (pure).
pub fn plan(me: RaftId, current: &Current, wanted: &BTreeMap<RaftId, BasicNode>) -> Step {
    if wanted.is_empty() {
        return Step::Settled;
    }
    let unknown: BTreeMap<RaftId, BasicNode> = wanted
        .iter()
        .filter(|(id, _)| !current.nodes.contains_key(id))
        .map(|(id, n)| (*id, n.clone()))
        .collect();
    if !unknown.is_empty() {
        return Step::AddLearners(unknown);
    }
    let moved: BTreeMap<RaftId, BasicNode> = wanted
        .iter()
        .filter(|(id, n)| current.nodes.get(id).is_some_and(|c| c.addr != n.addr))
        .map(|(id, n)| (*id, n.clone()))
        .collect();
    if !moved.is_empty() {
        return Step::SetAddresses(moved);
    }
    let want: BTreeSet<RaftId> = wanted.keys().copied().collect();
    if current.voters != want || current.joint {
        if !want.contains(&me) {
            return Step::LeavesOutLeader;
        }
        return Step::SetVoters(want);
    }
    let extra: BTreeSet<RaftId> = current
        .nodes
        .keys()
        .filter(|id| !want.contains(id))
        .copied()
        .collect();
    if !extra.is_empty() {
        return Step::RemoveLearners(extra);
    }
    Step::Settled
}

/// Raft's membership in `metrics`.
pub fn current(metrics: &RaftMetrics<RaftId, BasicNode>) -> Current {
    let m = metrics.membership_config.membership();
    Current {
        voters: m.voter_ids().collect(),
        nodes: m.nodes().map(|(id, n)| (*id, n.clone())).collect(),
        joint: m.get_joint_config().len() > 1,
    }
}

/// How long one membership step may take before it is given up and tried again (a learner
/// that is down never catches up).
const STEP_TIMEOUT: Duration = Duration::from_secs(15);
/// The pause after a step failed, or while the committed config leaves out the leader.
const RETRY_PAUSE: Duration = Duration::from_secs(2);

/// The leader's task: whenever this member leads and the committed config's members differ
/// from raft's membership, takes the next step. Runs until the raft stops; aborted with the
/// member. `dir` resolves the committed file's state directories (only ids and addresses
/// are used).
pub(super) async fn follow(
    raft: GroupRaft,
    me: RaftId,
    dir: PathBuf,
    mut applied: watch::Receiver<Arc<GroupState>>,
) {
    let mut metrics = raft.metrics();
    let mut wanted = WantedMembers::default();
    loop {
        let step = {
            let m = metrics.borrow().clone();
            let epoch = applied.borrow().epoch();
            match epoch {
                Some(epoch) if m.current_leader == Some(me) => {
                    match wanted.for_epoch(epoch, &dir, &applied, me) {
                        Some(want) => plan(me, &current(&m), want),
                        None => Step::Settled,
                    }
                }
                _ => Step::Settled,
            }
        };
        let pause = match step {
            Step::Settled => None,
            Step::LeavesOutLeader => {
                tracing::warn!(
                    node = me,
                    "config group: the committed config leaves out this member, which leads; the change waits for another member to lead"
                );
                Some(RETRY_PAUSE * 5)
            }
            step => {
                tracing::info!(node = me, ?step, "config group: changing membership");
                match tokio::time::timeout(STEP_TIMEOUT, take(&raft, step)).await {
                    Ok(Ok(())) => None,
                    Ok(Err(e)) => {
                        tracing::warn!(node = me, "config group membership step failed: {e}");
                        Some(RETRY_PAUSE)
                    }
                    Err(_) => {
                        tracing::warn!(
                            node = me,
                            "config group membership step did not finish within {STEP_TIMEOUT:?}"
                        );
                        Some(RETRY_PAUSE)
                    }
                }
            }
        };
        match pause {
            Some(p) => tokio::time::sleep(p).await,
            None => {
                tokio::select! {
                    r = metrics.changed() => if r.is_err() { return },
                    r = applied.changed() => if r.is_err() { return },
                }
            }
        }
    }
}

/// The members of the committed config, rebuilt only when its epoch changes (raft's
/// metrics change at every heartbeat; epochs are compare-and-set, so one names one file).
#[derive(Default)]
struct WantedMembers {
    /// The epoch the members were built for, and the members (`None`: that file does not
    /// check).
    built: Option<(u64, Option<BTreeMap<RaftId, BasicNode>>)>,
}

impl WantedMembers {
    /// The members of the committed config of `epoch` (in `applied`).
    fn for_epoch(
        &mut self,
        epoch: u64,
        dir: &std::path::Path,
        applied: &watch::Receiver<Arc<GroupState>>,
        me: RaftId,
    ) -> Option<&BTreeMap<RaftId, BasicNode>> {
        if self.built.as_ref().map(|b| b.0) != Some(epoch) {
            self.built = Some((epoch, committed_members(dir, applied, me)));
        }
        self.built.as_ref().and_then(|b| b.1.as_ref())
    }
}

/// The members of the committed config in `applied`; `None` (and a warning) when it does
/// not check.
fn committed_members(
    dir: &std::path::Path,
    applied: &watch::Receiver<Arc<GroupState>>,
    me: RaftId,
) -> Option<BTreeMap<RaftId, BasicNode>> {
    let file = applied.borrow().file.clone()?;
    match ClusterConfig::from_file(dir, file) {
        Ok(config) => Some(members(&config)),
        Err(e) => {
            tracing::warn!(
                node = me,
                "config group: the committed config does not check: {e}"
            );
            None
        }
    }
}

async fn take(raft: &GroupRaft, step: Step) -> Result<(), String> {
    let r = match step {
        Step::Settled | Step::LeavesOutLeader => return Ok(()),
        Step::AddLearners(nodes) => {
            for (id, node) in nodes {
                raft.add_learner(id, node, true)
                    .await
                    .map_err(|e| format!("add learner {id}: {e}"))?;
            }
            return Ok(());
        }
        Step::SetAddresses(nodes) => {
            raft.change_membership(ChangeMembers::SetNodes(nodes), true)
                .await
        }
        Step::SetVoters(voters) => raft.change_membership(voters, false).await,
        Step::RemoveLearners(ids) => {
            raft.change_membership(ChangeMembers::RemoveNodes(ids), false)
                .await
        }
    };
    r.map(|_| ()).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(port: u16) -> BasicNode {
        BasicNode::new(format!("127.0.0.1:{port}"))
    }

    fn wanted(ids: &[RaftId]) -> BTreeMap<RaftId, BasicNode> {
        ids.iter().map(|&i| (i, node(7000 + i as u16))).collect()
    }

    fn cur(voters: &[RaftId], learners: &[RaftId]) -> Current {
        Current {
            voters: voters.iter().copied().collect(),
            nodes: wanted(&[voters, learners].concat()),
            joint: false,
        }
    }

    #[test]
    fn a_two_member_group_grows_to_three_through_a_learner() {
        let w = wanted(&[1, 7, 8]);
        // The storage member is unknown: added as a learner first.
        assert_eq!(
            plan(7, &cur(&[7, 8], &[]), &w),
            Step::AddLearners(wanted(&[1]))
        );
        // Caught up: it becomes a voter.
        assert_eq!(
            plan(7, &cur(&[7, 8], &[1]), &w),
            Step::SetVoters([1, 7, 8].into())
        );
        assert_eq!(plan(7, &cur(&[1, 7, 8], &[]), &w), Step::Settled);
    }

    #[test]
    fn a_member_left_out_is_removed_but_never_the_leader_by_itself() {
        let w = wanted(&[7, 8, 9]);
        assert_eq!(
            plan(7, &cur(&[1, 7, 8], &[9]), &w),
            Step::SetVoters([7, 8, 9].into())
        );
        assert_eq!(plan(1, &cur(&[1, 7, 8], &[9]), &w), Step::LeavesOutLeader);
        // Voters right, a learner no longer wanted.
        assert_eq!(
            plan(7, &cur(&[7, 8, 9], &[1]), &w),
            Step::RemoveLearners([1].into())
        );
    }

    #[test]
    fn a_moved_address_is_set_and_a_joint_config_is_finished() {
        let mut w = wanted(&[1, 7, 8]);
        w.insert(8, node(9999));
        assert_eq!(
            plan(7, &cur(&[1, 7, 8], &[]), &w),
            Step::SetAddresses([(8, node(9999))].into())
        );
        let mut c = cur(&[1, 7, 8], &[]);
        c.joint = true;
        assert_eq!(
            plan(7, &c, &wanted(&[1, 7, 8])),
            Step::SetVoters([1, 7, 8].into())
        );
        // No committed config yet: nothing to do.
        assert_eq!(plan(7, &c, &BTreeMap::new()), Step::Settled);
    }
}
