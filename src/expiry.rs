//! The leader's half of expiry (docs/commands.md, Expiry). The store's half
//! (its clock, and keys past it being absent) is in `crate::kv`.
//!
//! Three things make a key past its deadline by the leader's clock absent
//! for every read that reaches the leader after it:
//! - when a deadline passes, the leader proposes the deletion, and every
//!   read index it hands out from then on includes that entry (the floor);
//! - it releases a confirmed read only once it has applied the read's index
//!   and swept what that brought in (`Raft`'s `check_reads`; the node sweeps
//!   after each apply): a key can arrive already expired, its deadline made
//!   by a slower clock or its entry committed after it;
//! - it releases the read with its clock reading (`Raft::set_clock`, set at
//!   each sweep), and the serving node hides keys past it: a follower may
//!   have applied entries past the read index that the leader has not swept.
//!
//! The node and the simulator both drive this, so the simulator checks the
//! code that runs, with clocks that drift (`crate::sim::expiry`).

use crate::kv::{KvStore, Stamp, WriteOp};
use crate::raft::{Index, Proposed, Raft, Role, Term};

/// Keys one sweep entry deletes.
pub const SWEEP_KEYS_MAX: usize = 1000;

/// The sweep of one leader: which entry it has in flight.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Sweep {
    /// The last sweep entry: index, term and stamp.
    in_flight: Option<(Index, Term, u64)>,
}

impl Sweep {
    /// Leader: proposes, stamped `now` (this node's clock, ms), the deletion
    /// of keys whose deadline is at or before `now`, and makes reads wait
    /// for it. `encode` turns the write into a log entry. While one sweep is
    /// in flight another goes out only for keys due after its stamp (its
    /// stamp already hides the earlier ones). Returns the entry's index.
    ///
    /// A leader handing over leadership does not sweep: an entry appended
    /// after the target caught up would cost the target its election. The
    /// reads it answers meanwhile are released with its clock, which hides
    /// what expired all the same.
    pub fn run(
        &mut self,
        raft: &mut Raft,
        kv: &KvStore,
        now: u64,
        encode: impl FnOnce(WriteOp) -> Vec<u8>,
    ) -> Option<Index> {
        if raft.role() != Role::Leader {
            return None;
        }
        // The reading reads are released with: whatever it has expired in
        // the applied state is swept below.
        raft.set_clock(now);
        if raft.transferring() || kv.next_deadline().is_none_or(|d| d > now) {
            return None;
        }
        let term = raft.term();
        let after = match self.in_flight {
            Some((index, t, stamp)) if t == term && index > raft.applied() => stamp,
            _ => 0,
        };
        let keys = kv.due(after, now, SWEEP_KEYS_MAX);
        if keys.is_empty() {
            return None;
        }
        let op = WriteOp::Expire { stamp: Stamp { ms: now, leader: true }, keys };
        let Ok(Proposed::Appended { index, term }) = raft.propose_own(encode(op)) else { return None };
        self.in_flight = Some((index, term, now));
        raft.set_read_floor(index);
        Some(index)
    }
}
