//! Snapshot transfer to a follower whose next entries were compacted away
//! (paper §7). The core never holds snapshot bytes: the leader's core asks for
//! a chunk by offset, and the caller fills the data in from its snapshot file
//! before sending; the follower's core hands each accepted chunk to its caller
//! to write, and installs the snapshot with the last one. Chunks are
//! acknowledged one at a time (flow control), and a lost chunk is asked for
//! again after an election timeout (resumable).

use super::core::{Dropped, Raft};
use super::message::{Body, SnapshotMeta};
use super::progress::ProgressState;
use super::types::{Index, NodeId};

/// A chunk of snapshot data for the caller to store, at `offset` in the
/// snapshot described by `meta`. `done`: it is the last chunk.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SnapshotChunk {
    pub meta: SnapshotMeta,
    pub offset: u64,
    pub data: Vec<u8>,
    pub done: bool,
}

/// Follower: the snapshot being received, and the offset expected next.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SnapshotReceive {
    pub index: Index,
    pub term: super::types::Term,
    pub offset_next: u64,
}

impl Raft {
    /// What our latest snapshot covers.
    pub(super) fn own_snapshot_meta(&self) -> SnapshotMeta {
        let index = self.log.snapshot_index();
        SnapshotMeta { index, term: self.log.snapshot_term(), membership: self.memberships.at(index).clone() }
    }

    pub(super) fn start_snapshot_send(&mut self, to: NodeId) {
        let meta = self.own_snapshot_meta();
        let Some(p) = self.progress.get_mut(&to) else {
            return;
        };
        log::info!("{} t{}: sending snapshot {}/{} to {to}", self.id, self.term, meta.index, meta.term);
        p.become_snapshot(meta.index);
        self.send_snapshot_chunk(to, meta, 0);
    }

    fn send_snapshot_chunk(&mut self, to: NodeId, meta: SnapshotMeta, offset: u64) {
        // The caller fills `data` and `done` from the snapshot at `meta.index`.
        self.send(to, Body::InstallSnapshot { meta, offset, data: Vec::new(), done: false });
    }

    /// Resends the chunk a silent follower last asked for.
    pub(super) fn tick_snapshot_sends(&mut self) {
        let timeout = self.cfg.election_ticks_min;
        let mut resend = Vec::new();
        for (id, p) in self.progress.iter_mut() {
            if let ProgressState::Snapshot { .. } = p.state {
                p.snapshot_elapsed_ticks += 1;
                if p.snapshot_elapsed_ticks >= timeout {
                    p.snapshot_elapsed_ticks = 0;
                    resend.push((*id, p.snapshot_offset_next));
                }
            }
        }
        for (to, offset) in resend {
            let meta = self.own_snapshot_meta();
            if self.progress.get(&to).is_some_and(|p| p.state == ProgressState::Snapshot { pending: meta.index }) {
                self.send_snapshot_chunk(to, meta, offset);
            } else {
                // We compacted again meanwhile: start over with the new one.
                self.start_snapshot_send(to);
            }
        }
    }

    pub(super) fn handle_snapshot_resp(
        &mut self,
        from: NodeId,
        index: Index,
        offset_next: u64,
        installed: bool,
    ) -> Result<(), Dropped> {
        let Some(p) = self.progress.get_mut(&from) else {
            return Err(Dropped::UnknownPeer);
        };
        if installed {
            if index > self.log.last_index() {
                return Err(Dropped::Invalid);
            }
            p.on_match(index);
            if let ProgressState::Snapshot { .. } = p.state {
                p.become_probe();
            }
            if self.maybe_commit() {
                self.on_commit_advanced();
            }
            return Ok(());
        }
        if p.state != (ProgressState::Snapshot { pending: index }) {
            return Err(Dropped::StaleResponse);
        }
        p.snapshot_offset_next = offset_next;
        p.snapshot_elapsed_ticks = 0;
        let meta = self.own_snapshot_meta();
        if meta.index != index {
            self.start_snapshot_send(from);
        } else {
            self.send_snapshot_chunk(from, meta, offset_next);
        }
        Ok(())
    }

    /// Follower: one chunk of a snapshot from the leader.
    pub(super) fn handle_install_snapshot(
        &mut self,
        from: NodeId,
        meta: SnapshotMeta,
        offset: u64,
        data: Vec<u8>,
        done: bool,
    ) -> Result<(), Dropped> {
        if meta.membership.validate().is_err() || meta.index == Index::ZERO {
            return Err(Dropped::Invalid);
        }
        if meta.index <= self.log.committed() {
            // We already have all it covers: the leader can go on with entries.
            let index = self.log.committed();
            self.send_snapshot_ack(from, index, 0, true);
            return Ok(());
        }
        let expected = match &self.snapshot_receive {
            Some(r) if r.index == meta.index && r.term == meta.term => r.offset_next,
            _ => 0,
        };
        if offset != expected {
            // A lost or repeated chunk: ask for the one we need.
            self.send_snapshot_ack(from, meta.index, expected, false);
            return Ok(());
        }
        let offset_next = offset + data.len() as u64;
        self.snapshot_receive = Some(SnapshotReceive { index: meta.index, term: meta.term, offset_next });
        self.out.snapshot_chunks.push(SnapshotChunk { meta: meta.clone(), offset, data, done });
        if done {
            self.install_snapshot(meta);
            self.send_snapshot_ack(from, self.log.snapshot_index(), offset_next, true);
        } else {
            self.send_snapshot_ack(from, meta.index, offset_next, false);
        }
        Ok(())
    }

    fn install_snapshot(&mut self, meta: SnapshotMeta) {
        let kept_suffix = self.log.matches(meta.index, meta.term);
        log::info!(
            "{} t{}: installing snapshot {}/{} (log suffix {})",
            self.id,
            self.term,
            meta.index,
            meta.term,
            if kept_suffix { "kept" } else { "discarded" }
        );
        self.log.install_snapshot(meta.index, meta.term);
        self.memberships.on_install(&meta, kept_suffix);
        self.snapshot_receive = None;
        self.pending_snapshot = Some(meta);
    }

    fn send_snapshot_ack(&mut self, to: NodeId, index: Index, next_offset: u64, installed: bool) {
        self.send(to, Body::InstallSnapshotResp { index, next_offset, installed });
    }

    /// The caller saved a snapshot of its state machine through `index`
    /// (durably): entries it covers can go.
    pub(super) fn compact_through(&mut self, index: Index) {
        let index = index.min(self.log.applied());
        self.memberships.on_compact(index);
        self.log.compact(index);
    }
}
