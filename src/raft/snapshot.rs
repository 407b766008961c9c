//! Snapshot transfer to a follower whose next entries were compacted away
//! (paper §7). The core never holds snapshot bytes: the leader's core asks for
//! a chunk by offset, and the caller fills the data in from its snapshot file
//! before sending; the follower's core hands each accepted chunk to its caller
//! to write. After the last one the caller checks what it wrote as a whole
//! (checksum, decoding) and says so with `snapshot_received`: only a good
//! snapshot is installed; a bad one is dropped and asked for again from the
//! start, and nothing a peer sends can make the node treat it as its own
//! disk failing. Chunks are acknowledged one at a time (flow control), and a
//! lost chunk is asked for again after an election timeout (resumable).
//!
//! A transfer is one leader's byte stream: it is named by the sender, the
//! sender's term and the snapshot's index and term. Two leaders' files of
//! the same snapshot need not hold the same bytes, so a chunk of another
//! transfer never continues a partial one; it starts over.

use super::core::{Dropped, Raft, Role};
use super::log::entry_payload_bytes;
use super::message::{Body, SnapshotMeta};
use super::progress::ProgressState;
use super::types::{Index, NodeId, Term};

/// A chunk of snapshot data for the caller to store, at `offset` in the
/// transfer named by `from`, `leader_term` and `meta`. A chunk at offset 0
/// begins a new file; the others follow the previous chunk of the same
/// transfer. `done`: it is the last chunk; check the whole and call
/// `snapshot_received`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SnapshotChunk {
    pub from: NodeId,
    pub leader_term: Term,
    pub meta: SnapshotMeta,
    pub offset: u64,
    pub data: Vec<u8>,
    pub done: bool,
}

impl SnapshotChunk {
    /// Whether `other` belongs to the same transfer.
    pub fn same_transfer(&self, other: &SnapshotChunk) -> bool {
        (self.from, self.leader_term, self.meta.index, self.meta.term)
            == (other.from, other.leader_term, other.meta.index, other.meta.term)
    }
}

/// Follower: the transfer being received, and the offset expected next.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SnapshotReceive {
    pub from: NodeId,
    pub leader_term: Term,
    pub meta: SnapshotMeta,
    pub offset_next: u64,
    /// The last chunk was handed out: waiting for `snapshot_received`.
    pub complete: bool,
}

impl SnapshotReceive {
    fn is(&self, from: NodeId, leader_term: Term, meta: &SnapshotMeta) -> bool {
        (self.from, self.leader_term, self.meta.index, self.meta.term) == (from, leader_term, meta.index, meta.term)
    }
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

    /// Resends the chunk a silent follower last asked for, after an
    /// election timeout that doubles with each resend left unanswered (up
    /// to eight of them).
    pub(super) fn tick_snapshot_sends(&mut self) {
        let timeout = self.cfg.election_ticks_min;
        let mut resend = Vec::new();
        for (id, p) in self.progress.iter_mut() {
            if let ProgressState::Snapshot { .. } = p.state {
                p.snapshot_elapsed_ticks += 1;
                if p.snapshot_elapsed_ticks >= timeout << p.snapshot_resends.min(3) {
                    p.snapshot_elapsed_ticks = 0;
                    p.snapshot_resends += 1;
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
        if offset_next == p.snapshot_offset_next && offset_next != 0 {
            // The chunk asked for was sent already; this answer was drawn
            // by a copy of an earlier one. Sending it again for each would
            // keep as many copies in flight as ever were, and behind a slow
            // link the transfer would crawl; a lost chunk is resent by the
            // timer. (A request for the first byte is always answered: the
            // follower restarted, or the whole failed its check.)
            return Err(Dropped::StaleResponse);
        }
        p.snapshot_offset_next = offset_next;
        p.snapshot_elapsed_ticks = 0;
        p.snapshot_resends = 0;
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
        leader_term: Term,
        meta: SnapshotMeta,
        offset: u64,
        data: Vec<u8>,
        done: bool,
    ) -> Result<(), Dropped> {
        if let Err(why) = check_snapshot_chunk(leader_term, &meta, offset, &data) {
            log::warn!("{} t{}: invalid InstallSnapshot from {from}: {why}", self.id, self.term);
            return Err(Dropped::Invalid);
        }
        if meta.index <= self.log.committed() {
            // We already have all it covers: the leader can go on with entries.
            let index = self.log.committed();
            self.send_snapshot_ack(from, index, 0, true);
            return Ok(());
        }
        let by_index = self.cfg.planted_bug == Some(super::config::PlantedBug::SnapshotChunksByIndex);
        let same = |r: &SnapshotReceive| r.is(from, leader_term, &meta) || (by_index && r.meta.index == meta.index);
        let expected = match &self.snapshot_receive {
            Some(r) if same(r) && r.complete => {
                // A repeat of the last chunk while the whole is being checked.
                return Err(Dropped::StaleResponse);
            }
            Some(r) if same(r) => r.offset_next,
            _ => 0,
        };
        if offset != expected {
            // A lost or repeated chunk, or one of a transfer that is not the
            // one under way: ask for the one we need.
            self.send_snapshot_ack(from, meta.index, expected, false);
            return Ok(());
        }
        let offset_next = offset + data.len() as u64;
        self.snapshot_receive =
            Some(SnapshotReceive { from, leader_term, meta: meta.clone(), offset_next, complete: done });
        self.out.snapshot_chunks.push(SnapshotChunk { from, leader_term, meta: meta.clone(), offset, data, done });
        if !done {
            self.send_snapshot_ack(from, meta.index, offset_next, false);
        }
        Ok(())
    }

    /// Follower: the caller checked the snapshot whose last chunk it was
    /// handed. A good one is installed (and acknowledged once durable); a bad
    /// one is forgotten and asked for again from its first byte.
    pub(super) fn finish_snapshot_receive(&mut self, ok: bool) {
        let Some(r) = self.snapshot_receive.take_if(|r| r.complete) else {
            log::warn!("{} t{}: a snapshot was checked that was not being received", self.id, self.term);
            return;
        };
        if !ok {
            log::warn!(
                "{} t{}: snapshot {}/{} from {} failed its check; asking for it again",
                self.id,
                self.term,
                r.meta.index,
                r.meta.term,
                r.from
            );
            self.send_snapshot_ack(r.from, r.meta.index, 0, false);
            return;
        }
        if r.meta.index > self.log.committed() {
            self.install_snapshot(r.meta);
        }
        let index = self.log.snapshot_index().max(self.log.committed());
        self.send_snapshot_ack(r.from, index, r.offset_next, true);
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
        self.pending_snapshot = Some(meta);
    }

    fn send_snapshot_ack(&mut self, to: NodeId, index: Index, next_offset: u64, installed: bool) {
        self.send(to, Body::InstallSnapshotResp { index, next_offset, installed });
    }

    /// The caller saved a snapshot of its state machine through `index`
    /// (durably): entries it covers can go.
    pub(super) fn compact_through(&mut self, index: Index) {
        let index = index.min(self.log.applied());
        let from = self.compact_wanted.max(self.log.snapshot_index());
        if index <= from {
            return;
        }
        let added: usize =
            (from.0 + 1..=index.0).filter_map(|i| self.log.entry(Index(i))).map(entry_payload_bytes).sum();
        self.compact_held_bytes += added;
        self.compact_wanted = index;
        self.compact_if_unheld();
    }

    /// Compacts to `compact_wanted` unless a live follower still needs
    /// entries before it: a leader that compacts while a slow follower
    /// catches up (or installs the snapshot the log starts at) would send it
    /// a snapshot again the moment it got there, and with snapshots taken
    /// faster than its link carries one, forever. "Live": heard within two
    /// election timeouts, or ten while it receives a snapshot (behind a slow
    /// link it answers a chunk only once the chunk has crossed). Dead
    /// followers do not hold the log, and neither does a backlog past
    /// `compaction_hold_bytes_max`.
    pub(super) fn compact_if_unheld(&mut self) {
        let index = self.compact_wanted;
        if index <= self.log.snapshot_index() {
            // Nothing held (or a snapshot from a leader went past it).
            self.compact_held_bytes = 0;
            return;
        }
        let (me, now, timeout) = (self.id, self.ticks, self.cfg.election_ticks_max);
        let live = |p: &super::progress::Progress| {
            let window = if matches!(p.state, ProgressState::Snapshot { .. }) { 10 * timeout } else { 2 * timeout };
            now.saturating_sub(p.last_heard_tick) < window
        };
        let held = self.role == Role::Leader
            && self.compact_held_bytes <= self.cfg.compaction_hold_bytes_max
            && self.progress.iter().any(|(id, p)| *id != me && p.matched < index && live(p));
        if held {
            return;
        }
        self.memberships.on_compact(index);
        self.log.compact(index);
        self.compact_held_bytes = 0;
    }
}

/// What a chunk claims must be possible for the leader that sent it: a
/// snapshot of entries it could have committed (a term no later than its
/// own, an index above 0), a valid configuration, and an offset that does
/// not run past the end of the integers.
fn check_snapshot_chunk(leader_term: Term, meta: &SnapshotMeta, offset: u64, data: &[u8]) -> Result<(), String> {
    if meta.index == Index::ZERO || meta.term == Term(0) {
        return Err(format!("snapshot {}/{} names no entry", meta.index, meta.term));
    }
    if meta.term > leader_term {
        return Err(format!("snapshot term {} above the sender's term {leader_term}", meta.term));
    }
    if offset.checked_add(data.len() as u64).is_none() {
        return Err(format!("chunk at offset {offset} overflows"));
    }
    meta.membership.validate()
}
