//! The clients a node owes an answer to, and by when. Every request gets
//! exactly one answer: its result, `-TRYAGAIN` when it was certainly not
//! applied, or `-TIMEOUT` when that is not known (docs/commands.md).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Instant;

use super::client::{Answer, ReadRequest};
use super::mailbox::Mailbox;
use crate::raft::{Index, NodeId, Term};
use crate::resp::Reply;

/// Where one answer goes.
#[derive(Debug)]
pub struct Waiter {
    pub reply_to: Mailbox,
    pub seq: u64,
}

impl Waiter {
    pub fn answer(self, answer: Answer) {
        // The connection may have gone; then nobody reads it.
        self.reply_to.post(self.seq, answer);
    }

    pub fn reply(self, reply: Reply) {
        self.answer(Answer::Reply(reply));
    }
}

pub fn try_again(why: &str) -> Reply {
    Reply::Error(format!("TRYAGAIN {why}"))
}

pub fn timeout() -> Reply {
    Reply::Error("TIMEOUT not known to be committed in time".into())
}

/// A client's write proposed and not yet answered. Its entry is kept to
/// propose again, with the same id, to each new leader until it is applied:
/// the sessions of the state machine (`crate::kv::sessions`) make the copies
/// take effect once.
#[derive(Debug)]
pub struct PendingWrite {
    pub waiter: Waiter,
    pub entry: Vec<u8>,
    /// The leader (and its term) it was last proposed to.
    pub sent_to: (Term, NodeId),
    pub sent_at: Instant,
}

#[derive(Debug)]
pub struct PendingRead {
    pub op: ReadRequest,
    pub waiter: Waiter,
    /// The leader's clock the read is judged by, once confirmed
    /// (`raft::ReadState::clock`).
    pub clock: u64,
}

/// A membership or leadership change an operator is waiting for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminGoal {
    Added(NodeId),
    Removed(NodeId),
    Leads(NodeId),
}

#[derive(Debug)]
pub struct PendingAdmin {
    pub goal: AdminGoal,
    pub waiter: Waiter,
    pub deadline: Instant,
}

/// What a deadline refers to.
#[derive(Debug, Clone, Copy)]
enum Due {
    Write(u64),
    Read(u64),
}

#[derive(Debug, Default)]
pub struct Pending {
    /// Proposed writes by sequence number (the envelope's `seq`).
    pub writes: BTreeMap<u64, PendingWrite>,
    /// Reads waiting for a read index, by context.
    pub reads: HashMap<u64, PendingRead>,
    /// Reads whose index is known, waiting for the state machine to reach
    /// it; `confirmed_at` finds one by context (a burst of timeouts must
    /// not scan the map once per read).
    confirmed: BTreeMap<(Index, u64), PendingRead>,
    confirmed_at: HashMap<u64, Index>,
    pub admin: Vec<PendingAdmin>,
    /// Deadlines in the order they were set; all share one timeout, so the
    /// queue is sorted.
    deadlines: VecDeque<(Instant, Due)>,
}

impl Pending {
    pub fn add_write(&mut self, seq: u64, write: PendingWrite, deadline: Instant) {
        self.writes.insert(seq, write);
        self.deadlines.push_back((deadline, Due::Write(seq)));
    }

    /// Answers the write `seq` if this process still waits on it.
    pub fn answer_write(&mut self, seq: u64, reply: Reply) {
        if let Some(w) = self.writes.remove(&seq) {
            w.waiter.reply(reply);
        }
    }

    /// The lowest `seq` still waiting, or `next` when none is.
    pub fn write_floor(&self, next: u64) -> u64 {
        self.writes.keys().next().copied().unwrap_or(next)
    }

    /// Every waiting write gets `-TIMEOUT` saying why: its outcome is not
    /// known here.
    pub fn time_out_writes(&mut self, why: &str) {
        for (_, w) in std::mem::take(&mut self.writes) {
            w.waiter.reply(Reply::Error(format!("TIMEOUT {why}; the write may or may not be applied")));
        }
    }

    pub fn add_read(&mut self, ctx: u64, read: PendingRead, deadline: Instant) {
        self.reads.insert(ctx, read);
        self.deadlines.push_back((deadline, Due::Read(ctx)));
    }

    /// The read `ctx` may be served once `index` is applied.
    pub fn confirm(&mut self, ctx: u64, index: Index, clock: u64) {
        if let Some(mut read) = self.reads.remove(&ctx) {
            read.clock = clock;
            self.confirmed.insert((index, ctx), read);
            self.confirmed_at.insert(ctx, index);
        }
    }

    /// A confirmed read whose index is applied, if any.
    pub fn next_servable(&mut self, applied: Index) -> Option<PendingRead> {
        let entry = self.confirmed.first_entry().filter(|e| e.key().0 <= applied)?;
        let ((_, ctx), read) = entry.remove_entry();
        self.confirmed_at.remove(&ctx);
        Some(read)
    }

    /// Answers `-TIMEOUT` to writes past their deadline (they may still be
    /// applied) and to reads past theirs (a read that was not served has no
    /// effect, so `-TRYAGAIN` would be as true; the the documented timeout is used
    /// for both so clients see one rule).
    pub fn expire(&mut self, now: Instant) {
        while let Some(&(deadline, due)) = self.deadlines.front() {
            if deadline > now {
                break;
            }
            self.deadlines.pop_front();
            match due {
                Due::Write(seq) => self.answer_write(seq, timeout()),
                Due::Read(ctx) => {
                    if let Some(r) = self.reads.remove(&ctx) {
                        r.waiter.reply(timeout());
                    }
                    let confirmed =
                        self.confirmed_at.remove(&ctx).and_then(|index| self.confirmed.remove(&(index, ctx)));
                    if let Some(r) = confirmed {
                        r.waiter.reply(timeout());
                    }
                }
            }
        }
        let (expired, kept): (Vec<PendingAdmin>, Vec<PendingAdmin>) =
            std::mem::take(&mut self.admin).into_iter().partition(|a| a.deadline <= now);
        self.admin = kept;
        for a in expired {
            let what = match a.goal {
                AdminGoal::Added(id) => {
                    format!("node {id} was not added in time (is it running with --join? RAFT REMOVE {id} cancels)")
                }
                AdminGoal::Removed(id) => format!("the removal of node {id} was not committed in time"),
                AdminGoal::Leads(id) => format!("node {id} did not take over in time"),
            };
            a.waiter.reply(Reply::Error(format!("TIMEOUT {what}")));
        }
    }

    /// The node is stopping: proposed writes have an unknown outcome; reads
    /// and admin requests end.
    pub fn abandon(&mut self, why: &str) {
        self.time_out_writes(why);
        for (_, r) in self.reads.drain() {
            r.waiter.reply(try_again(why));
        }
        for (_, r) in std::mem::take(&mut self.confirmed) {
            r.waiter.reply(try_again(why));
        }
        self.confirmed_at.clear();
        for a in self.admin.drain(..) {
            a.waiter.reply(Reply::Error(format!("TIMEOUT {why}")));
        }
        self.deadlines.clear();
    }
}
