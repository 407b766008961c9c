//! The simulated network: every message in flight with the time it arrives.
//! Faults: loss, duplication, delay (and so reordering), and partitions of
//! any shape, including one-way ones.

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
}

impl Faults {
    pub const NONE: Faults = Faults { drop: 0.0, duplicate: 0.0, delay_ticks_max: 1 };
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct InFlight {
    pub msg: Message,
    pub deliver_at: u64,
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

    pub fn send(&mut self, msg: Message, rng: &mut Xoshiro256PlusPlus) {
        self.sent += 1;
        if self.blocked.contains(&(msg.from, msg.to)) || rng.random_bool(self.faults.drop) {
            self.dropped += 1;
            return;
        }
        // The real transport writes each frame once over TCP and never resends
        // it, so only messages Raft itself retransmits (and must therefore
        // handle idempotently) are duplicated. A forwarded proposal is not
        // one of them: duplicating it would apply a command twice.
        let duplicable = !matches!(msg.body, crate::raft::Body::Propose { .. });
        let copies = if duplicable && rng.random_bool(self.faults.duplicate) { 2 } else { 1 };
        for _ in 0..copies {
            let delay = rng.random_range(1..=self.faults.delay_ticks_max.max(1));
            self.in_flight.push(InFlight { msg: msg.clone(), deliver_at: self.now + delay });
        }
    }

    /// Takes the messages due now, in the order they were sent.
    pub fn take_due(&mut self) -> Vec<Message> {
        let now = self.now;
        let (due, later): (Vec<InFlight>, Vec<InFlight>) =
            std::mem::take(&mut self.in_flight).into_iter().partition(|f| f.deliver_at <= now);
        self.in_flight = later;
        due.into_iter().filter(|f| !self.blocked.contains(&(f.msg.from, f.msg.to))).map(|f| f.msg).collect()
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
