//! Majority arithmetic for simple and joint configurations (paper §5.2, §5.3,
//! §6). Pure functions over sets and maps: no state of their own.

use std::collections::{BTreeMap, BTreeSet};

use super::message::Membership;
use super::types::NodeId;

/// Where an election stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VoteResult {
    Won,
    Lost,
    Pending,
}

/// The largest value that a majority of `voters` have reached or passed, where
/// `value_of` gives each voter's value (missing voters count as 0). An empty
/// set of voters imposes no constraint: u64::MAX, so that `min` over the two
/// halves of a joint configuration ignores a missing half.
pub fn majority_value(voters: &BTreeSet<NodeId>, value_of: impl Fn(NodeId) -> u64) -> u64 {
    if voters.is_empty() {
        return u64::MAX;
    }
    let mut values: Vec<u64> = voters.iter().map(|&id| value_of(id)).collect();
    values.sort_unstable_by(|a, b| b.cmp(a));
    // With n voters, the value at position n/2 (descending) is reached by
    // n/2 + 1 of them: a majority.
    values[voters.len() / 2]
}

/// The largest value a quorum of `membership` has reached: in joint consensus
/// a majority of each half must have reached it.
pub fn quorum_value(membership: &Membership, value_of: impl Fn(NodeId) -> u64) -> u64 {
    let incoming = majority_value(&membership.voters, &value_of);
    let outgoing = majority_value(&membership.outgoing, &value_of);
    incoming.min(outgoing)
}

fn majority_vote(voters: &BTreeSet<NodeId>, votes: &BTreeMap<NodeId, bool>) -> VoteResult {
    if voters.is_empty() {
        return VoteResult::Won;
    }
    let granted = voters.iter().filter(|id| votes.get(id) == Some(&true)).count();
    let rejected = voters.iter().filter(|id| votes.get(id) == Some(&false)).count();
    let majority = voters.len() / 2 + 1;
    if granted >= majority {
        VoteResult::Won
    } else if voters.len() - rejected < majority {
        VoteResult::Lost
    } else {
        VoteResult::Pending
    }
}

/// The outcome of an election given the votes received so far: a joint
/// configuration needs a majority of both halves (paper §6).
pub fn vote_result(membership: &Membership, votes: &BTreeMap<NodeId, bool>) -> VoteResult {
    let incoming = majority_vote(&membership.voters, votes);
    let outgoing = majority_vote(&membership.outgoing, votes);
    match (incoming, outgoing) {
        (VoteResult::Won, VoteResult::Won) => VoteResult::Won,
        (VoteResult::Lost, _) | (_, VoteResult::Lost) => VoteResult::Lost,
        _ => VoteResult::Pending,
    }
}

/// Whether the members for which `active` holds form a quorum.
pub fn is_quorum(membership: &Membership, active: impl Fn(NodeId) -> bool) -> bool {
    quorum_value(membership, |id| active(id) as u64) >= 1
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{RngExt, SeedableRng};

    fn ids(v: &[u64]) -> BTreeSet<NodeId> {
        v.iter().map(|&i| NodeId(i)).collect()
    }

    /// The naive definition: the largest value v such that more than half of
    /// the voters have a value >= v.
    fn naive_majority(voters: &BTreeSet<NodeId>, values: &BTreeMap<NodeId, u64>) -> u64 {
        if voters.is_empty() {
            return u64::MAX;
        }
        let candidates: BTreeSet<u64> = voters.iter().map(|id| values[id]).collect();
        candidates
            .into_iter()
            .filter(|&v| voters.iter().filter(|id| values[id] >= v).count() * 2 > voters.len())
            .max()
            .unwrap_or(0)
    }

    #[test]
    fn majority_value_matches_naive_definition() {
        let seed = 0x5eed_0001;
        let mut rng = rand::rngs::Xoshiro256PlusPlus::seed_from_u64(seed);
        for _ in 0..5_000 {
            let n = rng.random_range(1..10);
            let voters = ids(&(1..=n).collect::<Vec<u64>>());
            let values: BTreeMap<NodeId, u64> = voters.iter().map(|&id| (id, rng.random_range(0..6))).collect();
            assert_eq!(
                majority_value(&voters, |id| values[&id]),
                naive_majority(&voters, &values),
                "seed {seed:#x} values {values:?}"
            );
        }
    }

    #[test]
    fn joint_commit_needs_both_halves() {
        let mut m = Membership::with_voters([NodeId(1), NodeId(2), NodeId(3)]);
        m.outgoing = ids(&[1, 4, 5]);
        let matched: BTreeMap<NodeId, u64> =
            [(1, 9), (2, 9), (3, 9), (4, 2), (5, 1)].into_iter().map(|(id, v)| (NodeId(id), v)).collect();
        // Incoming {1,2,3} is at 9, but outgoing {1,4,5} has a majority only at 2.
        assert_eq!(quorum_value(&m, |id| matched[&id]), 2);
    }

    #[test]
    fn votes_in_joint_configuration() {
        let mut m = Membership::with_voters([NodeId(1), NodeId(2), NodeId(3)]);
        m.outgoing = ids(&[3, 4, 5]);
        let mut votes = BTreeMap::new();
        votes.insert(NodeId(1), true);
        votes.insert(NodeId(2), true);
        assert_eq!(vote_result(&m, &votes), VoteResult::Pending);
        votes.insert(NodeId(4), false);
        votes.insert(NodeId(5), false);
        assert_eq!(vote_result(&m, &votes), VoteResult::Lost);
        votes.insert(NodeId(4), true);
        votes.insert(NodeId(3), true);
        assert_eq!(vote_result(&m, &votes), VoteResult::Won);
    }

    #[test]
    fn even_sized_majorities() {
        let m = Membership::with_voters([NodeId(1), NodeId(2), NodeId(3), NodeId(4)]);
        let mut votes = BTreeMap::new();
        votes.insert(NodeId(1), true);
        votes.insert(NodeId(2), true);
        assert_eq!(vote_result(&m, &votes), VoteResult::Pending);
        votes.insert(NodeId(3), false);
        votes.insert(NodeId(4), false);
        assert_eq!(vote_result(&m, &votes), VoteResult::Lost);
        assert!(!is_quorum(&m, |id| id.0 <= 2));
        assert!(is_quorum(&m, |id| id.0 <= 3));
    }
}
