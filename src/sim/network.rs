//! The simulated network: every message in flight with the time it arrives.
//! Faults: loss, duplication, delay (and so reordering), partitions of any
//! shape, including one-way ones, damaged snapshot chunks, and messages that
//! outlive a restart: a real sender keeps what it queued for a peer while it
//! reconnects, so a message meant for one process of a node may reach the
//! next one.

use std::collections::BTreeSet;

use rand::RngExt;
use rand::rngs::Xoshiro256PlusPlus;

use crate::raft::{Message, NodeId};

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Faults {
    /// Probability that a message is lost.
    pub drop: f64,
    /// Probability that a message is delivered twice.
    pub duplicate: f64,
    /// Messages arrive after 1..=delay_ticks_max ticks.
    pub delay_ticks_max: u64,
    /// Probability that a message due at a node that is down is kept for
    /// its next incarnation (for up to `HOLD_TICKS_MAX`) instead of lost.
    pub hold: f64,
    /// Probability that a snapshot chunk arrives with a byte changed (a
    /// buggy peer; TCP and the frame CRC make it rare on real links).
    pub corrupt_snapshot: f64,
}

impl Faults {
    pub const NONE: Faults = Faults { drop: 0.0, duplicate: 0.0, delay_ticks_max: 1, hold: 0.0, corrupt_snapshot: 0.0 };
}

/// How long a sender keeps messages for a peer that is down, at most.
pub const HOLD_TICKS_MAX: u64 = 100;

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct InFlight {
    pub msg: Message,
    pub deliver_at: u64,
    /// The incarnation of the receiving node it was sent to (its restart
    /// count then), to tell deliveries to a later one.
    pub to_incarnation: u64,
    /// Since when it waits for its node to come back, if it does.
    pub held_since: Option<u64>,
}

#[derive(Clone, Debug)]
pub struct Network {
    pub in_flight: Vec<InFlight>,
    pub faults: Faults,
    /// Directed links that lose everything.
    pub blocked: BTreeSet<(NodeId, NodeId)>,
    pub now: u64,
    pub sent: u64,
    pub dropped: u64,
}

impl Network {
    pub fn new(faults: Faults) -> Network {
        Network { in_flight: Vec::new(), faults, blocked: BTreeSet::new(), now: 0, sent: 0, dropped: 0 }
    }

    pub fn send(&mut self, mut msg: Message, to_incarnation: u64, rng: &mut Xoshiro256PlusPlus) {
        self.sent += 1;
        if self.blocked.contains(&(msg.from, msg.to)) || rng.random_bool(self.faults.drop) {
            self.dropped += 1;
            return;
        }
        if let crate::raft::Body::InstallSnapshot { data, .. } = &mut msg.body
            && !data.is_empty()
            && rng.random_bool(self.faults.corrupt_snapshot)
        {
            let at = rng.random_range(0..data.len());
            data[at] ^= 1 << rng.random_range(0..8);
        }
        // The real transport writes each frame once over TCP and never resends
        // it, so only messages Raft itself retransmits (and must therefore
        // handle idempotently) are duplicated. A forwarded proposal is not
        // one of them: duplicating it would apply a command twice.
        let duplicable = !matches!(msg.body, crate::raft::Body::Propose { .. });
        let copies = if duplicable && rng.random_bool(self.faults.duplicate) { 2 } else { 1 };
        for _ in 0..copies {
            let delay = rng.random_range(1..=self.faults.delay_ticks_max.max(1));
            self.in_flight.push(InFlight {
                msg: msg.clone(),
                deliver_at: self.now + delay,
                to_incarnation,
                held_since: None,
            });
        }
    }

    /// A message reached a node that is down: lost, or kept (in order,
    /// behind what its sender already keeps) for the node's next process.
    pub fn hold(&mut self, mut f: InFlight, rng: &mut Xoshiro256PlusPlus) {
        let since = *f.held_since.get_or_insert(self.now);
        if self.now - since < HOLD_TICKS_MAX && (since < self.now || rng.random_bool(self.faults.hold)) {
            f.deliver_at = self.now + 1;
            self.in_flight.push(f);
        }
    }

    /// Takes the messages due now, in the order they were sent.
    pub fn take_due(&mut self) -> Vec<InFlight> {
        let now = self.now;
        let (due, later): (Vec<InFlight>, Vec<InFlight>) =
            std::mem::take(&mut self.in_flight).into_iter().partition(|f| f.deliver_at <= now);
        self.in_flight = later;
        due.into_iter().filter(|f| !self.blocked.contains(&(f.msg.from, f.msg.to))).collect()
    }

    /// Cuts the cluster in two groups that cannot talk to each other.
    pub fn partition(&mut self, side_a: &[NodeId], side_b: &[NodeId]) {
        for &a in side_a {
            for &b in side_b {
                self.blocked.insert((a, b));
                self.blocked.insert((b, a));
            }
        }
    }

    pub fn heal(&mut self) {
        self.blocked.clear();
    }
}
