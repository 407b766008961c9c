//! Linearizable reads by read index (Raft thesis §6.4). A read is safe at the
//! leader's commit index once a quorum has confirmed, after the read arrived,
//! that this node is still the leader. Confirmations come in rounds: one
//! heartbeat broadcast confirms every read registered before it was sent, so a
//! thousand concurrent reads cost one round trip to a quorum.

use std::collections::VecDeque;

use super::core::{Dropped, ForwardedRead, Raft, Role};
use super::message::{Body, ReadId};
use super::quorum::quorum_value;
use super::types::{Index, NodeId};

/// Who is waiting for a read index.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReadCtx {
    /// A read of this node's caller, named by the caller's context.
    Local(u64),
    /// A read a follower asked for on behalf of its own caller.
    Remote(NodeId, ReadId),
}

/// Leader-side read bookkeeping; reset whenever leadership changes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct ReadQueue {
    /// Registered reads, oldest first: the read index and the round whose
    /// confirmation makes the read safe. Rounds never decrease along the queue.
    pending: VecDeque<(ReadCtx, Index, u64)>,
    /// Confirmed reads, waiting for this node to have applied their index
    /// (`check_reads`), oldest (and lowest index) first.
    confirmed: VecDeque<(ReadCtx, Index)>,
    /// Reads that arrived before this leader committed an entry of its own
    /// term: until then its commit index may lag what earlier leaders
    /// committed, so it cannot name a safe read index.
    waiting_for_commit: Vec<ReadCtx>,
    /// The last round broadcast.
    round_sent: u64,
    /// A registered read waits for a round not yet sent.
    round_wanted: bool,
    /// The smallest read index to hand out (`Raft::set_read_floor`).
    floor: Index,
}

impl ReadQueue {
    pub fn round_sent(&self) -> u64 {
        self.round_sent
    }

    pub fn len(&self) -> usize {
        self.pending.len() + self.confirmed.len() + self.waiting_for_commit.len()
    }
}

/// Why a read index could not be requested.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadError {
    /// No leader is known: try again later.
    NoLeader,
}

impl Raft {
    /// Asks for a read index on behalf of the caller's read `ctx`. The answer
    /// comes in a later `Ready`, as a `ReadState` or a read failure.
    pub(super) fn request_read(&mut self, ctx: u64) -> Result<(), ReadError> {
        match (self.role, self.leader) {
            (Role::Leader, _) => {
                self.register_read(ReadCtx::Local(ctx));
                Ok(())
            }
            (Role::Follower, Some(leader)) => {
                let request = ReadId { incarnation: self.incarnation, seq: self.next_read_seq };
                self.next_read_seq += 1;
                self.forwarded_reads.insert(request.seq, ForwardedRead { ctx, sent_tick: self.ticks });
                self.send(leader, Body::ReadIndex { request });
                Ok(())
            }
            _ => Err(ReadError::NoLeader),
        }
    }

    /// Leader: reads registered from now on wait for `index` (an entry of
    /// this term in its log) to be applied as well as for the commit index.
    /// Safe, since a later state is still one between the read's arrival
    /// and its answer; the node uses it so that a deletion it proposed
    /// (expiry) is seen by every read that arrives after it.
    pub fn set_read_floor(&mut self, index: Index) {
        if self.role == Role::Leader && index <= self.log.last_index() {
            self.reads.floor = self.reads.floor.max(index);
        }
    }

    fn register_read(&mut self, ctx: ReadCtx) {
        let committed = self.log.committed();
        if self.log.term(committed) != Some(self.term) {
            self.reads.waiting_for_commit.push(ctx);
            return;
        }
        let committed = committed.max(self.reads.floor);
        if self.cfg.planted_bug == Some(super::config::PlantedBug::ReadWithoutQuorum) {
            self.release_read(ctx, Some(committed));
            return;
        }
        let round = self.reads.round_sent + 1;
        self.reads.pending.push_back((ctx, committed, round));
        self.reads.round_wanted = true;
    }

    pub(super) fn handle_forwarded_read(&mut self, from: NodeId, request: ReadId) -> Result<(), Dropped> {
        self.register_read(ReadCtx::Remote(from, request));
        Ok(())
    }

    /// Starts a confirmation round if a read waits for one; then releases
    /// what is already confirmed (with a single voter, everything).
    pub(super) fn flush_reads(&mut self) {
        if self.reads.round_wanted {
            self.reads.round_sent += 1;
            self.reads.round_wanted = false;
            self.heartbeat_elapsed_ticks = 0;
            self.broadcast_heartbeat();
        }
        self.check_reads();
    }

    /// Releases every read whose round a quorum has acknowledged, once this
    /// node has applied its index. By then the node has seen the state the
    /// read will be served from and set the floor it needs (the expiry
    /// sweep of keys that entry brought in already past their deadline,
    /// `crate::expiry`), and the read is released at the floor if higher.
    /// `applied` is what earlier Readys handed out: the node applies those
    /// before it steps or asks again.
    pub(super) fn check_reads(&mut self) {
        if !self.reads.pending.is_empty() {
            let me = self.id;
            let round_sent = self.reads.round_sent;
            let progress = &self.progress;
            let confirmed = quorum_value(self.memberships.current(), |id| {
                if id == me { round_sent } else { progress.get(&id).map_or(0, |p| p.read_round_acked) }
            });
            while let Some(&(ctx, index, round)) = self.reads.pending.front() {
                if round > confirmed {
                    break;
                }
                self.reads.pending.pop_front();
                self.reads.confirmed.push_back((ctx, index));
            }
        }
        let applied = self.log.applied();
        while let Some(&(ctx, index)) = self.reads.confirmed.front() {
            // Released at the floor too (a sweep proposed since the read
            // came in), and only once that is applied here as well.
            let at = index.max(self.reads.floor);
            if at > applied {
                break;
            }
            self.reads.confirmed.pop_front();
            self.release_read(ctx, Some(at));
        }
    }

    fn release_read(&mut self, ctx: ReadCtx, index: Option<Index>) {
        let clock = match self.cfg.planted_bug {
            Some(super::config::PlantedBug::ReadClockIgnored) => 0,
            _ => self.clock_ms,
        };
        match (ctx, index) {
            (ReadCtx::Local(ctx), Some(index)) => self.out.read_states.push(super::ReadState { ctx, index, clock }),
            (ReadCtx::Local(ctx), None) => self.out.read_failures.push(ctx),
            (ReadCtx::Remote(to, request), index) => self.send(to, Body::ReadIndexResp { request, index, clock }),
        }
    }

    /// The leader committed an entry: reads that waited for its first commit
    /// can be registered now.
    pub(super) fn on_commit_for_reads(&mut self) {
        if self.log.term(self.log.committed()) != Some(self.term) {
            return;
        }
        for ctx in std::mem::take(&mut self.reads.waiting_for_commit) {
            self.register_read(ctx);
        }
    }

    /// Leadership is lost: no pending read can be confirmed any more.
    pub(super) fn fail_pending_reads(&mut self) {
        let waiting: Vec<ReadCtx> = std::mem::take(&mut self.reads.waiting_for_commit);
        let pending: Vec<ReadCtx> =
            std::mem::take(&mut self.reads.pending).into_iter().map(|(ctx, _, _)| ctx).collect();
        let confirmed: Vec<ReadCtx> =
            std::mem::take(&mut self.reads.confirmed).into_iter().map(|(ctx, _)| ctx).collect();
        for ctx in pending.into_iter().chain(confirmed).chain(waiting) {
            self.release_read(ctx, None);
        }
        self.reads = ReadQueue::default();
    }

    /// Follower: the leader answered a forwarded read. Only an answer to a
    /// read of this process, still waiting, from the leader it was sent to,
    /// counts: anything else answers a read that is gone.
    pub(super) fn handle_read_index_resp(
        &mut self,
        from: NodeId,
        request: ReadId,
        index: Option<Index>,
        clock: u64,
    ) -> Result<(), Dropped> {
        if self.leader != Some(from) || request.incarnation != self.incarnation {
            return Err(Dropped::StaleResponse);
        }
        let Some(read) = self.forwarded_reads.remove(&request.seq) else {
            return Err(Dropped::StaleResponse);
        };
        match index {
            Some(index) => self.out.read_states.push(super::ReadState { ctx: read.ctx, index, clock }),
            None => self.out.read_failures.push(read.ctx),
        }
        Ok(())
    }

    /// Follower: reads the leader has not answered in two election timeouts
    /// (the request or the answer was lost) fail, so the caller asks again
    /// and nothing waits forever or piles up under a stable leader.
    pub(super) fn expire_forwarded_reads(&mut self) {
        let window = 2 * self.cfg.election_ticks_max;
        while let Some(entry) = self.forwarded_reads.first_entry() {
            if self.ticks - entry.get().sent_tick < window {
                break;
            }
            let read = entry.remove();
            self.out.read_failures.push(read.ctx);
        }
    }
}
