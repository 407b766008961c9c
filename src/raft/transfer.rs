//! Leadership transfer (Raft thesis §3.10): the leader stops taking
//! proposals, brings the target up to date, and tells it to campaign at once.

use super::core::{Raft, Role, Transfer};
use super::message::{Body, Payload};
use super::types::NodeId;

/// Why a transfer could not start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransferError {
    NotLeader,
    /// The target is not a voter of the current configuration.
    NotAVoter,
}

impl Raft {
    pub(super) fn start_transfer(&mut self, target: NodeId) -> Result<(), TransferError> {
        if self.role != Role::Leader {
            return Err(TransferError::NotLeader);
        }
        if target == self.id {
            return Ok(());
        }
        if !self.membership().is_voter(target) {
            return Err(TransferError::NotAVoter);
        }
        if self.transfer.as_ref().is_some_and(|t| t.target == target) {
            return Ok(());
        }
        log::info!("{} t{}: transferring leadership to {target}", self.id, self.term);
        self.transfer = Some(Transfer { target, elapsed_ticks: 0 });
        if self.progress.get(&target).is_some_and(|p| p.matched == self.log.last_index()) {
            self.send_timeout_now(target);
        }
        Ok(())
    }

    fn send_timeout_now(&mut self, target: NodeId) {
        let last_index = self.log.last_index();
        let incarnation = self.progress.get(&target).map_or(0, |p| p.incarnation);
        self.send(target, Body::TimeoutNow { last_index, incarnation });
    }

    /// The target matched our whole log: it can win an election now.
    pub(super) fn on_peer_caught_up(&mut self, peer: NodeId) {
        if self.transfer.as_ref().is_some_and(|t| t.target == peer) {
            self.send_timeout_now(peer);
        }
    }

    /// A transfer that has not happened within an election timeout is
    /// abandoned, and proposals are taken again. A no-op marks the moment:
    /// a TimeoutNow still on its way finds the target's log moved past the
    /// point it names, or the target short of the leader's log, and either
    /// way cannot unseat us (`handle_timeout_now`, `transfer_vote_welcome`).
    pub(super) fn tick_transfer(&mut self) {
        let Some(t) = &mut self.transfer else { return };
        t.elapsed_ticks += 1;
        if t.elapsed_ticks >= self.cfg.election_ticks_min {
            log::warn!("{} t{}: transfer to {} timed out", self.id, self.term, t.target);
            self.transfer = None;
            self.append_new(Payload::Noop);
        }
    }

    /// The configuration changed: a transfer to a node that is no longer a
    /// voter is over (etcd aborts it too), and proposals are taken again.
    pub(super) fn check_transfer_target(&mut self) {
        let Some(t) = &self.transfer else { return };
        if !self.membership().is_voter(t.target) {
            log::info!("{} t{}: transfer to {} abandoned: no longer a voter", self.id, self.term, t.target);
            self.transfer = None;
        }
    }
}
