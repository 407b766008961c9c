//! The Raft algorithm as a pure, deterministic state machine: no threads,
//! sockets, clocks or files. Time enters as `tick`, peer messages as `step`,
//! client intents as `propose`, `read_index`, `change_membership` and
//! `transfer_leader`; what must be done leaves as one `Ready`.
//!
//! The caller's loop, in this order (etcd's `rawnode.go`, raft-rs's
//! `RawNode`):
//!
//! ```text
//! loop {
//!     feed: tick() / step(msg) / propose(cmd) / read_index(ctx) ...
//!     if raft.has_ready() {
//!         let rd = raft.ready();
//!         send rd.messages                     // may overlap with the disk write
//!         write rd.snapshot_chunks, rd.snapshot, rd.entries, rd.hard_state;
//!         sync if rd.must_sync
//!         send rd.persisted_messages           // promises about what was just written
//!         apply rd.committed_entries; serve rd.read_states once applied
//!         raft.advance(rd);
//!     }
//! }
//! ```
//!
//! The write may also happen later, on another thread, while the core is
//! fed on (etcd's asynchronous storage writes): apply the committed entries
//! at once, take the `Persist` out of the Ready (`take_persist`), and when
//! the write is durable send its `persisted_messages` and give it back with
//! `persisted`. Writes are made durable in the order their Readys were
//! handed out. A Ready with a snapshot is carried out whole before anything
//! else is fed in.

mod bounds;
mod config;
mod core;
mod election;
mod log;
mod membership;
mod message;
mod progress;
mod quorum;
mod read;
mod replication;
mod snapshot;
mod transfer;
mod types;

pub use bounds::{INDEX_MAX, TERM_MAX};
pub use config::{Config, PlantedBug};
pub use core::{Dropped, InitialState, Raft, Role, Stats};
pub use log::{Discarded, entry_payload_bytes};
pub use membership::{MembershipChange, MembershipError};
pub use message::{
    Addrs, AppendResp, Body, Entry, HardState, Membership, Message, Payload, Printable, ReadId, SnapshotMeta,
};
pub use progress::{Progress, ProgressState};
pub use read::ReadError;
pub use snapshot::{SnapshotChunk, SnapshotReceive};
pub use transfer::TransferError;
pub use types::{Index, NodeId, Term};

/// A read that is safe to serve once the state machine has applied `index`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ReadState {
    pub ctx: u64,
    pub index: Index,
    /// The leader's clock (ms) when it released the read: keys whose
    /// deadline it reached are absent for this read, whatever the state at
    /// `index` (`crate::expiry`).
    pub clock: u64,
}

/// Where a proposal went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proposed {
    /// Appended to our log (we lead) at this index and term; it is applied if
    /// and when the committed entry at `index` has this `term`.
    Appended { index: Index, term: Term },
    /// Sent on to the leader we know.
    Forwarded,
}

/// Why a proposal was refused. It was not appended and never will be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProposeError {
    NoLeader,
    /// Leadership is being handed over; proposals wait for the new leader.
    TransferInProgress,
}

/// Everything the caller must do, in the order of the module documentation.
#[derive(Clone, Debug, Default)]
#[must_use = "a Ready must be carried out and handed back to advance()"]
pub struct Ready {
    /// Changed hard state to write.
    pub hard_state: Option<HardState>,
    /// Entries to append to the write-ahead log; the first may replace
    /// entries from its index on.
    pub entries: Vec<Entry>,
    /// Snapshot data from the leader, to write at the given offsets.
    pub snapshot_chunks: Vec<SnapshotChunk>,
    /// A snapshot to install: its chunks are complete; make it durable, load
    /// the state machine from it, and drop log entries it covers (keeping
    /// any entries that `entries` carries after it).
    pub snapshot: Option<SnapshotMeta>,
    /// Whether the write must be synced before `persisted_messages` leave.
    pub must_sync: bool,
    /// Messages that may leave at once.
    pub messages: Vec<Message>,
    /// Messages that may leave only once everything above is durable.
    pub persisted_messages: Vec<Message>,
    /// Entries to apply, in order.
    pub committed_entries: Vec<Entry>,
    /// Reads that are safe once the state machine reaches their index.
    pub read_states: Vec<ReadState>,
    /// Reads that cannot be confirmed (leadership changed): ask again.
    pub read_failures: Vec<u64>,
    /// Commands `propose` queued for forwarding that were never sent: the
    /// leader or term changed first. No node ever appends them; their
    /// clients may be told so.
    pub forward_failures: Vec<Vec<u8>>,
    /// Entries compaction cut from the log, to be freed off the hot path.
    pub discarded: log::Discarded,
    /// What becomes true once the write is durable.
    persist: Persist,
}

/// What a write makes true once durable: its entries are stable, its hard
/// state (our own vote among it) is on disk. Given back with `persisted`.
#[derive(Clone, Debug, Default)]
#[must_use = "a Persist must be given back with persisted() once the write is durable"]
pub struct Persist {
    /// The last entry the write holds.
    through: Option<(Index, Term)>,
    /// Messages to ourselves that wait for it (our own vote).
    self_messages: Vec<Message>,
}

/// A read-only view of one node, for `INFO`, the simulator and tests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    pub id: NodeId,
    pub role: Role,
    pub term: Term,
    pub vote: Option<NodeId>,
    pub leader: Option<NodeId>,
    pub committed: Index,
    pub applied: Index,
    pub last_index: Index,
    pub last_term: Term,
    pub snapshot_index: Index,
    /// The configuration in force (the latest in the log).
    pub membership: Membership,
    /// The latest committed configuration.
    pub membership_committed: Membership,
    pub transfer_target: Option<NodeId>,
    pub membership_change_in_progress: bool,
    pub reads_pending: usize,
}

impl Persist {
    /// Whether nothing becomes true by it: no entries, no vote of our own.
    pub fn is_empty(&self) -> bool {
        self.through.is_none() && self.self_messages.is_empty()
    }
}

impl Ready {
    /// What becomes true when this Ready's write is durable, for `persisted`
    /// (`advance` takes it itself).
    pub fn take_persist(&mut self) -> Persist {
        std::mem::take(&mut self.persist)
    }
}

impl Raft {
    /// One unit of time passed.
    pub fn tick(&mut self) {
        self.ticks += 1;
        match self.role {
            Role::Leader => self.tick_leader(),
            _ => self.tick_election(),
        }
        self.compact_if_unheld();
    }

    /// Starts an election now, as if the election timeout had expired (tests
    /// and the model checker use it to explore elections without ticking).
    pub fn campaign_now(&mut self) {
        if self.role != Role::Leader && self.promotable() {
            self.campaign(false);
        }
    }

    /// Proposes a state-machine command.
    pub fn propose(&mut self, command: Vec<u8>) -> Result<Proposed, ProposeError> {
        match (self.role, self.leader) {
            (Role::Leader, _) if self.transfer.is_some() => Err(ProposeError::TransferInProgress),
            (Role::Leader, _) => {
                let (index, term) = self.append_new(Payload::command(command));
                Ok(Proposed::Appended { index, term })
            }
            (Role::Follower, Some(_)) => {
                let target = self.forward_target();
                if self.forward_to != target {
                    // Queued for another leader or term: they fail first.
                    self.flush_forwarded();
                }
                self.forward_queue.push(command);
                self.forward_to = target;
                Ok(Proposed::Forwarded)
            }
            _ => Err(ProposeError::NoLeader),
        }
    }

    /// The node's wall clock (ms since the Unix epoch); it never goes back.
    /// A leader hands its reading out with each read it releases: the node
    /// sets it where it sweeps expired keys (`crate::expiry`), so that
    /// every key the reading has expired was swept in the state the read
    /// is served from, or is hidden by the reading.
    pub fn set_clock(&mut self, ms: u64) {
        self.clock_ms = self.clock_ms.max(ms);
    }

    /// Leader: appends an entry of the node's own making (the expiry sweep,
    /// `crate::expiry`): one entry, not batched with clients' writes. Not
    /// while a transfer is under way (the target, caught up, would lose its
    /// election to a log that grew).
    pub fn propose_own(&mut self, command: Vec<u8>) -> Result<Proposed, ProposeError> {
        match self.role {
            Role::Leader if self.transfer.is_some() => return Err(ProposeError::TransferInProgress),
            Role::Leader => {}
            _ => return Err(ProposeError::NoLeader),
        }
        let (index, term) = self.append_new(Payload::command(command));
        Ok(Proposed::Appended { index, term })
    }

    /// Asks for a linearizable read; the answer for `ctx` comes in a later
    /// `Ready` (`read_states` or `read_failures`).
    pub fn read_index(&mut self, ctx: u64) -> Result<(), ReadError> {
        self.request_read(ctx)
    }

    /// Leader: begins a membership change; watch `status()` for the result.
    pub fn change_membership(&mut self, change: MembershipChange) -> Result<(), MembershipError> {
        self.start_membership_change(change)
    }

    /// Leader: hands leadership to `target`; watch `status()` for the result.
    pub fn transfer_leader(&mut self, target: NodeId) -> Result<(), TransferError> {
        self.start_transfer(target)
    }

    /// The caller wrote the last chunk of a snapshot from the leader and
    /// checked the whole (`ok`: its checksum matched and it decodes). Call it
    /// after `advance` of the `Ready` that handed out that chunk, before
    /// anything else is fed in.
    pub fn snapshot_received(&mut self, ok: bool) {
        self.finish_snapshot_receive(ok);
    }

    /// Payload bytes of the entries kept past the newest snapshot for a
    /// follower that still needs them (`compact`).
    pub fn compaction_held_bytes(&self) -> usize {
        if self.compact_wanted > self.log.snapshot_index() { self.compact_held_bytes } else { 0 }
    }

    /// Follower: the snapshot transfer under way, if any.
    pub fn snapshot_receiving(&self) -> Option<&SnapshotReceive> {
        self.snapshot_receive.as_ref()
    }

    /// The caller durably saved a snapshot of its state machine through
    /// `index` (at most the applied index): the log before it can go. A
    /// leader sending its current snapshot to a follower keeps the log (and
    /// goes on sending that snapshot, which the caller must keep readable
    /// while `snapshot_index()` names it) until the transfer ends, the
    /// follower falls silent, or the entries kept pass
    /// `compaction_hold_bytes_max`.
    pub fn compact(&mut self, index: Index) {
        self.compact_through(index);
    }

    /// The metadata a snapshot of the state machine at `index` must carry;
    /// `None` if `index` is not between the snapshot and the applied index.
    pub fn snapshot_meta_at(&self, index: Index) -> Option<SnapshotMeta> {
        if index > self.log.applied() {
            return None;
        }
        Some(SnapshotMeta { index, term: self.log.term(index)?, membership: self.memberships.at(index).clone() })
    }

    fn flush(&mut self) {
        self.flush_forwarded();
        if self.role == Role::Leader {
            self.flush_appends();
            self.flush_reads();
        }
    }

    /// Whether `ready()` would hand out anything.
    pub fn has_ready(&mut self) -> bool {
        self.has_ready_besides_applying() || self.log.committed() > self.log.applied()
    }

    /// Committed entries the next Readys hand out at most, from now on
    /// (`Config::apply_entries_max`): a driver may lower it while applying
    /// costs more than usual. Which entries are applied, and in what order,
    /// does not change.
    pub fn set_apply_entries_max(&mut self, n: usize) {
        self.cfg.apply_entries_max = n.max(1);
    }

    /// Whether `ready()` would hand out anything but committed entries to
    /// apply. A caller may leave applying for later (bounding the time it
    /// spends per turn); everything else it must carry out now.
    pub fn has_ready_besides_applying(&mut self) -> bool {
        self.flush();
        self.hard_state() != self.hard_state_sent
            || self.log.handed() < self.log.last_index()
            || self.pending_snapshot.is_some()
            || !self.out.msgs.is_empty()
            || !self.out.msgs_after_persist.is_empty()
            || !self.out.read_states.is_empty()
            || !self.out.read_failures.is_empty()
            || !self.out.snapshot_chunks.is_empty()
            || !self.out.forward_failures.is_empty()
    }

    /// Everything to do now. Its entries, hard state and committed entries
    /// count as handed out: the next Ready holds only what comes after.
    pub fn ready(&mut self) -> Ready {
        self.flush();
        let hs = self.hard_state();
        let hard_state = (hs != self.hard_state_sent).then_some(hs);
        let vote_changed = hs.term != self.hard_state_sent.term || hs.vote != self.hard_state_sent.vote;
        let entries = self.log.unstable_entries();
        let snapshot = self.pending_snapshot.take();
        let out = std::mem::take(&mut self.out);
        let (self_messages, persisted_messages) = out.msgs_after_persist.into_iter().partition(|m| m.to == self.id);
        let must_sync = vote_changed || !entries.is_empty() || snapshot.is_some() || !out.snapshot_chunks.is_empty();
        let committed_entries = self.log.next_committed(self.cfg.apply_entries_max);
        let through = entries.last().map(|e| (e.index, e.term));
        if let Some((index, _)) = through {
            self.log.handed_to(index);
            if self.cfg.planted_bug == Some(PlantedBug::LeaderCountsUnwrittenEntries) && self.role == Role::Leader {
                if let Some(me) = self.progress.get_mut(&self.id) {
                    me.on_match(index);
                }
                if self.maybe_commit() {
                    self.on_commit_advanced();
                }
            }
        }
        if let Some(last) = committed_entries.last() {
            self.log.applied_to(last.index);
        }
        self.hard_state_sent = hs;
        Ready {
            persist: Persist { through, self_messages },
            hard_state,
            entries,
            snapshot_chunks: out.snapshot_chunks,
            snapshot,
            must_sync,
            messages: out.msgs,
            persisted_messages,
            committed_entries,
            read_states: out.read_states,
            read_failures: out.read_failures,
            forward_failures: out.forward_failures,
            discarded: self.log.take_discarded(),
        }
    }

    /// Everything in `rd` was done: written, synced, sent, applied.
    pub fn advance(&mut self, mut rd: Ready) {
        let persist = rd.take_persist();
        self.persisted(persist);
    }

    /// A write handed out in a Ready is durable (and its persisted messages
    /// sent): its entries are stable, our own vote in it counts.
    pub fn persisted(&mut self, p: Persist) {
        if let Some((index, term)) = p.through {
            // Entries cut meanwhile by a newer leader's were not what this
            // write held: only a matching term makes them stable.
            if self.log.term(index) == Some(term) {
                self.log.stable_to(index);
            }
        }
        for m in p.self_messages {
            if let Body::VoteResp { granted: true } = m.body {
                self.on_own_vote_persisted(m.term);
            }
        }
        if self.role == Role::Leader {
            let stable = self.log.stable();
            if let Some(me) = self.progress.get_mut(&self.id) {
                me.on_match(stable);
            }
            if self.maybe_commit() {
                self.on_commit_advanced();
            }
        }
    }

    pub fn status(&self) -> Status {
        let committed = self.log.committed();
        Status {
            id: self.id,
            role: self.role,
            term: self.term,
            vote: self.vote,
            leader: self.leader,
            committed,
            applied: self.log.applied(),
            last_index: self.log.last_index(),
            last_term: self.log.last_term(),
            snapshot_index: self.log.snapshot_index(),
            membership: self.membership().clone(),
            membership_committed: self.memberships.at(committed).clone(),
            transfer_target: self.transfer.as_ref().map(|t| t.target),
            membership_change_in_progress: self.membership_change.is_some(),
            reads_pending: self.reads.len() + self.forwarded_reads.len(),
        }
    }

    pub fn id(&self) -> NodeId {
        self.id
    }

    pub fn role(&self) -> Role {
        self.role
    }

    pub fn term(&self) -> Term {
        self.term
    }

    pub fn leader(&self) -> Option<NodeId> {
        self.leader
    }

    pub fn committed(&self) -> Index {
        self.log.committed()
    }

    pub fn applied(&self) -> Index {
        self.log.applied()
    }

    /// A leadership transfer is under way (proposals are refused).
    pub fn transferring(&self) -> bool {
        self.transfer.is_some()
    }

    /// Leader: members that left the configuration and are still sent the
    /// log until they hold their removal.
    pub fn departing(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.departing.keys().copied()
    }

    pub fn snapshot_index(&self) -> Index {
        self.log.snapshot_index()
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Bytes of the commands in the entries held in memory.
    pub fn log_bytes(&self) -> u64 {
        self.log
            .entries()
            .map(|e| match &e.payload {
                Payload::Command(c) => c.len() as u64,
                _ => 0,
            })
            .sum()
    }

    /// The entries in memory (after the snapshot), for checkers.
    pub fn log_entries(&self) -> impl Iterator<Item = &Entry> {
        self.log.entries()
    }

    /// The term of the entry at `index`, if known.
    pub fn log_term(&self, index: Index) -> Option<Term> {
        self.log.term(index)
    }

    /// Hashes the protocol state: everything that decides what this node
    /// does next, except its timers and random source (the model checker
    /// drives time by events, so states that differ only there are one).
    pub fn fingerprint<H: std::hash::Hasher>(&self, h: &mut H) {
        use std::hash::Hash;
        (self.term, self.vote, self.role, self.leader).hash(h);
        (&self.log, &self.memberships, &self.votes, &self.progress, &self.departing).hash(h);
        (&self.transfer, &self.reads, &self.membership_change).hash(h);
        (&self.forward_queue, &self.forward_to, &self.forwarded_reads, &self.out).hash(h);
        (self.incarnation, self.next_read_seq, self.lost_through).hash(h);
        (self.hard_state_sent, &self.pending_snapshot, &self.snapshot_receive).hash(h);
        (self.compact_wanted, self.compact_held_bytes).hash(h);
    }

    /// The leader's view of a member's log.
    /// Ticks since this node started (the clock of `Progress`'s ticks).
    pub fn ticks(&self) -> u64 {
        self.ticks
    }

    pub fn progress_of(&self, id: NodeId) -> Option<&Progress> {
        self.progress.get(&id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A single voter leads at once and commits what it writes: the Readys
    /// then hold committed entries in slices, which a caller may leave for
    /// later while nothing else waits.
    #[test]
    fn applying_may_wait_while_nothing_else_does() {
        let id = NodeId(1);
        let mut cfg = Config::new(id);
        cfg.apply_entries_max = 3;
        let init = InitialState {
            hard_state: HardState::default(),
            snapshot: None,
            entries: Vec::new(),
            bootstrap: Membership::with_voters([id]),
        };
        let mut raft = Raft::new(cfg, init);
        raft.campaign_now();
        let carry_out = |raft: &mut Raft| {
            let rd = raft.ready();
            let applied = rd.committed_entries.len();
            raft.advance(rd);
            applied
        };
        for _ in 0..100 {
            if raft.role() == Role::Leader && !raft.has_ready_besides_applying() {
                break;
            }
            carry_out(&mut raft);
        }
        assert_eq!(raft.role(), Role::Leader);
        for i in 0..10u8 {
            raft.propose(vec![i]).expect("a leader takes proposals");
        }
        while raft.has_ready_besides_applying() {
            carry_out(&mut raft);
        }
        assert!(raft.committed() > raft.applied(), "written and committed, not all applied yet");
        assert!(raft.has_ready(), "applying is still to do");
        let mut slices = 0;
        while raft.has_ready() {
            assert!(!raft.has_ready_besides_applying());
            assert!(carry_out(&mut raft) <= 3);
            slices += 1;
        }
        assert!(slices >= 2, "ten entries and more apply in slices of three");
        assert_eq!(raft.applied(), raft.committed());
    }
}
