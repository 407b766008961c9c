//! Cluster membership (paper §6, thesis chapter 4): which configuration is in
//! force, and how a leader moves the cluster from one to another.
//!
//! A configuration takes effect as soon as its entry is in a log, committed or
//! not, so a cut log must fall back to the previous configuration. Adding a
//! voter goes through three entries: the node joins as a learner and receives
//! the log; once it has caught up the cluster enters joint consensus
//! C_old,new; once that is committed, C_new. Removing a voter skips the
//! learner step.

use super::core::{Raft, Role};
use super::message::{Addrs, Entry, Membership, Payload, SnapshotMeta};
use super::types::{Index, NodeId};

/// The configurations a log holds, so that truncation and compaction know
/// which one is in force.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct MembershipLog {
    /// In force at the snapshot index (or the bootstrap one without snapshot).
    base: Membership,
    /// Configuration entries after the snapshot, in index order.
    changes: Vec<(Index, Membership)>,
}

impl MembershipLog {
    pub fn restore<'a>(
        snapshot: Option<&SnapshotMeta>,
        bootstrap: &Membership,
        entries: impl Iterator<Item = &'a Entry>,
    ) -> MembershipLog {
        let base = snapshot.map_or_else(|| bootstrap.clone(), |s| s.membership.clone());
        let mut log = MembershipLog { base, changes: Vec::new() };
        let entries: Vec<Entry> = entries.cloned().collect();
        log.on_append(&entries);
        log
    }

    /// The configuration in force: the latest one in the log.
    pub fn current(&self) -> &Membership {
        self.changes.last().map_or(&self.base, |(_, m)| m)
    }

    /// The configuration in force at `index`.
    pub fn at(&self, index: Index) -> &Membership {
        self.changes.iter().rev().find(|(i, _)| *i <= index).map_or(&self.base, |(_, m)| m)
    }

    /// Index of the latest configuration entry, if the log holds one.
    pub fn last_change_index(&self) -> Option<Index> {
        self.changes.last().map(|(i, _)| *i)
    }

    /// Returns whether the configuration in force changed.
    pub fn on_append(&mut self, entries: &[Entry]) -> bool {
        let before = self.changes.len();
        for e in entries {
            if let Payload::Membership(m) = &e.payload {
                self.changes.push((e.index, m.clone()));
            }
        }
        self.changes.len() != before
    }

    /// Entries from `from` on were cut. Returns whether the configuration in
    /// force changed.
    pub fn on_truncate(&mut self, from: Index) -> bool {
        let before = self.changes.len();
        self.changes.retain(|(i, _)| *i < from);
        self.changes.len() != before
    }

    /// A snapshot now covers everything through `index`.
    pub fn on_compact(&mut self, index: Index) {
        self.base = self.at(index).clone();
        self.changes.retain(|(i, _)| *i > index);
    }

    /// A snapshot from the leader was installed; `kept_suffix` says whether
    /// the log after it was kept (it matched).
    pub fn on_install(&mut self, meta: &SnapshotMeta, kept_suffix: bool) {
        self.base = meta.membership.clone();
        if kept_suffix {
            self.changes.retain(|(i, _)| *i > meta.index);
        } else {
            self.changes.clear();
        }
    }
}

/// A change an operator asked for.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum MembershipChange {
    /// Add a voter (through the learner and joint steps).
    AddVoter { id: NodeId, addrs: Addrs },
    /// Remove a voter or a learner.
    Remove { id: NodeId },
}

/// Why a membership change was refused. Nothing was appended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MembershipError {
    NotLeader,
    /// Another change is still in progress: one at a time.
    ChangeInProgress,
    TransferInProgress,
    /// The change would leave no voter.
    NoVotersLeft,
}

/// Where a change the leader is driving stands.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ChangeInFlight {
    pub change: MembershipChange,
    /// Index of the latest configuration entry this change appended.
    pub appended_at: Index,
}

impl Raft {
    /// Leader: starts a membership change. Idempotent: asking for what is
    /// already true, or already under way, succeeds without a new entry.
    pub(super) fn start_membership_change(&mut self, change: MembershipChange) -> Result<(), MembershipError> {
        if self.role != Role::Leader {
            return Err(MembershipError::NotLeader);
        }
        if self.transfer.is_some() {
            return Err(MembershipError::TransferInProgress);
        }
        if let Some(inflight) = &self.membership_change {
            if inflight.change == change {
                return Ok(());
            }
            // Cancelling the addition of a learner that never caught up is
            // allowed; anything else waits its turn.
            let cancels = matches!(
                (&inflight.change, &change),
                (MembershipChange::AddVoter { id: a, .. }, MembershipChange::Remove { id: b }) if a == b
            ) && self.membership().is_learner(change_target(&change));
            if !cancels {
                return Err(MembershipError::ChangeInProgress);
            }
        }
        if self.membership().is_joint() || self.memberships.last_change_index() > Some(self.log.committed()) {
            return Err(MembershipError::ChangeInProgress);
        }
        let current = self.membership().clone();
        let next = match &change {
            MembershipChange::AddVoter { id, addrs } => {
                if current.voters.contains(id) {
                    self.membership_change = None;
                    return Ok(());
                }
                if self.cfg.planted_bug == Some(super::config::PlantedBug::SkipJointConsensus) {
                    let mut next = current.clone();
                    next.voters.insert(*id);
                    next.voters.insert(NodeId(id.0 + 1));
                    next.addrs.insert(*id, addrs.clone());
                    let appended_at = self.append_new(Payload::Membership(next)).0;
                    self.membership_change = Some(ChangeInFlight { change, appended_at });
                    return Ok(());
                }
                let mut next = current.clone();
                next.learners.insert(*id);
                next.addrs.insert(*id, addrs.clone());
                next
            }
            MembershipChange::Remove { id } => removal(&current, *id)?,
        };
        let appended_at = if next == current {
            // Already a learner: go straight to waiting for it to catch up.
            self.log.last_index()
        } else {
            self.append_new(Payload::Membership(next)).0
        };
        self.membership_change = Some(ChangeInFlight { change, appended_at });
        self.advance_membership_change();
        Ok(())
    }

    /// The leader heard that `from` matched more of the log.
    pub(super) fn on_membership_progress(&mut self, from: NodeId) {
        let is_target = self.membership_change.as_ref().is_some_and(|inflight| change_target(&inflight.change) == from);
        if is_target {
            self.advance_membership_change();
        }
    }

    pub(super) fn on_commit_for_membership(&mut self) {
        if self.role != Role::Leader {
            return;
        }
        let committed = self.log.committed();
        let settled = self.memberships.last_change_index().is_none_or(|i| i <= committed);
        if !settled {
            return;
        }
        let current = self.membership().clone();
        if current.is_joint() {
            // C_old,new is committed: any leader, not only the one that began
            // the change, moves on to C_new (paper §6).
            let mut next = current;
            next.outgoing.clear();
            let members = next.members();
            next.addrs.retain(|id, _| members.contains(id));
            let at = self.append_new(Payload::Membership(next)).0;
            if let Some(inflight) = &mut self.membership_change {
                inflight.appended_at = at;
            }
            return;
        }
        if !current.is_voter(self.id) {
            // C_new without us is committed: hand over by stepping down; we
            // will not campaign again (paper §6).
            log::info!("{} t{}: removed from the configuration; stepping down", self.id, self.term);
            self.become_follower(self.term, None);
            return;
        }
        self.advance_membership_change();
    }

    /// Moves a change in flight to its next step when the previous one is
    /// committed and, for an addition, the learner has caught up.
    fn advance_membership_change(&mut self) {
        let Some(inflight) = self.membership_change.clone() else {
            return;
        };
        let committed = self.log.committed();
        if inflight.appended_at > committed {
            return;
        }
        let current = self.membership().clone();
        match inflight.change {
            MembershipChange::AddVoter { id, .. } if current.is_learner(id) => {
                let caught_up = self.progress.get(&id).is_some_and(|p| p.matched >= committed);
                if caught_up {
                    let mut next = current.clone();
                    next.learners.remove(&id);
                    next.outgoing = current.voters.clone();
                    next.voters.insert(id);
                    let at = self.append_new(Payload::Membership(next)).0;
                    self.membership_change = Some(ChangeInFlight { change: inflight.change, appended_at: at });
                }
            }
            _ if !current.is_joint() => self.membership_change = None,
            _ => {}
        }
    }
}

fn change_target(change: &MembershipChange) -> NodeId {
    match change {
        MembershipChange::AddVoter { id, .. } | MembershipChange::Remove { id } => *id,
    }
}

/// The configuration after removing `id`: a learner goes at once, a voter
/// through joint consensus.
fn removal(current: &Membership, id: NodeId) -> Result<Membership, MembershipError> {
    let mut next = current.clone();
    if current.is_learner(id) {
        next.learners.remove(&id);
        next.addrs.remove(&id);
        return Ok(next);
    }
    if !current.voters.contains(&id) {
        return Ok(next);
    }
    next.voters.remove(&id);
    if next.voters.is_empty() {
        return Err(MembershipError::NoVotersLeft);
    }
    next.outgoing = current.voters.clone();
    Ok(next)
}
