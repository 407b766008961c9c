//! Leadership transfer (Raft thesis §3.10): the leader stops taking
//! proposals, brings the target up to date, and tells it to campaign at once.

use super::core::{Raft, Role, Transfer};
use super::message::Body;
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
            self.send(target, Body::TimeoutNow);
        }
        Ok(())
    }

    /// The target matched our whole log: it can win an election now.
    pub(super) fn on_peer_caught_up(&mut self, peer: NodeId) {
        if self.transfer.as_ref().is_some_and(|t| t.target == peer) {
            self.send(peer, Body::TimeoutNow);
        }
    }

    /// A transfer that has not happened within an election timeout is
    /// abandoned, and proposals are taken again.
    pub(super) fn tick_transfer(&mut self) {
        let Some(t) = &mut self.transfer else { return };
        t.elapsed_ticks += 1;
        if t.elapsed_ticks >= self.cfg.election_ticks_min {
            log::warn!("{} t{}: transfer to {} timed out", self.id, self.term, t.target);
            self.transfer = None;
        }
    }
}
