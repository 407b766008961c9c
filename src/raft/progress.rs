//! What a leader knows about each follower's log, and how it decides what to
//! send next. The transitions between probing, pipelined replication and
//! snapshot transfer all live here, beside the state they change.

use std::collections::VecDeque;
use std::fmt;

use super::types::Index;

/// How the leader replicates to one follower.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ProgressState {
    /// The follower's position is unknown: one Append at a time, walking back
    /// on rejection until the logs match.
    Probe,
    /// The logs match up to `matched`: appends are pipelined, up to the
    /// inflight bound, optimistically advancing `next`.
    Replicate,
    /// The entries the follower needs were compacted: a snapshot through
    /// `pending` is being sent; nothing else is until it is installed.
    Snapshot { pending: Index },
}

/// The last index and the payload bytes of each Append in flight to a
/// follower, oldest first. Bounded in messages and in bytes: when full, the
/// leader waits for acknowledgements, so that no more than `bytes_max` of
/// entries queue ahead of a heartbeat on a slow link.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Inflights {
    sent: VecDeque<(Index, usize)>,
    capacity: usize,
    bytes: usize,
    bytes_max: usize,
}

impl Inflights {
    pub fn new(capacity: usize, bytes_max: usize) -> Inflights {
        assert!(capacity > 0 && bytes_max > 0, "inflight bounds must be positive");
        Inflights { sent: VecDeque::with_capacity(capacity), capacity, bytes: 0, bytes_max }
    }

    /// One Append (of however many bytes) may always be in flight.
    pub fn is_full(&self) -> bool {
        self.sent.len() >= self.capacity || self.bytes >= self.bytes_max
    }

    pub fn len(&self) -> usize {
        self.sent.len()
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn add(&mut self, last: Index, bytes: usize) {
        assert!(!self.is_full(), "inflight window overflow at {last}");
        if let Some(&(prev, _)) = self.sent.back() {
            assert!(last >= prev, "inflight indexes go back: {prev} then {last}");
        }
        self.sent.push_back((last, bytes));
        self.bytes += bytes;
    }

    /// Forgets every Append acknowledged by a match at `index`.
    pub fn free_through(&mut self, index: Index) {
        while let Some(&(i, bytes)) = self.sent.front() {
            if i > index {
                break;
            }
            self.sent.pop_front();
            self.bytes -= bytes;
        }
    }

    /// Frees one slot: when only heartbeats get through, a follower whose
    /// window filled with lost appends would otherwise never hear from us.
    pub fn free_first(&mut self) {
        if let Some((_, bytes)) = self.sent.pop_front() {
            self.bytes -= bytes;
        }
    }

    pub fn reset(&mut self) {
        self.sent.clear();
        self.bytes = 0;
    }
}

/// The leader's view of one member (paper figure 2, "volatile state on
/// leaders", plus what pipelining and check-quorum need).
///
/// Invariant: `matched < next`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Progress {
    /// Highest index known to be in the member's log and equal to ours.
    pub matched: Index,
    /// Next index to send.
    pub next: Index,
    pub state: ProgressState,
    /// In `Probe`: an Append is outstanding; send no other until an answer or
    /// the next heartbeat response.
    pub probe_sent: bool,
    pub inflights: Inflights,
    /// The leader's tick count when this member was last heard from
    /// (check-quorum).
    pub last_heard_tick: u64,
    /// The leader's tick count when this member last answered an append.
    pub append_resp_tick: u64,
    /// When room was last made for appends that may have been lost (a
    /// heartbeat answer while appends were unanswered), since the state
    /// last changed.
    pub room_made_tick: Option<u64>,
    /// Highest read-index round the member acknowledged.
    pub read_round_acked: u64,
    /// Ticks since the snapshot in flight was sent; a lost snapshot is retried
    /// after an election timeout.
    pub snapshot_elapsed_ticks: u64,
    /// Chunks sent again without an answer since the last one: each waits
    /// twice as long as the one before, so that a follower behind a slow
    /// link is not sent copies of a chunk faster than the link carries one.
    pub snapshot_resends: u32,
    /// The commit index carried by the last Append sent.
    pub commit_sent: Index,
    /// In `Snapshot`: the byte offset of the next chunk the member asked for.
    pub snapshot_offset_next: u64,
    /// The member's process, as its latest AppendResp said.
    pub incarnation: u64,
}

impl Progress {
    pub fn new(next: Index, inflight_max: usize, inflight_bytes_max: usize) -> Progress {
        assert!(next >= Index(1), "next index {next} must be at least 1");
        Progress {
            matched: Index::ZERO,
            next,
            state: ProgressState::Probe,
            probe_sent: false,
            inflights: Inflights::new(inflight_max, inflight_bytes_max),
            last_heard_tick: 0,
            append_resp_tick: 0,
            room_made_tick: None,
            read_round_acked: 0,
            snapshot_elapsed_ticks: 0,
            snapshot_resends: 0,
            commit_sent: Index::ZERO,
            snapshot_offset_next: 0,
            incarnation: 0,
        }
    }

    fn reset_state(&mut self, state: ProgressState) {
        self.state = state;
        self.probe_sent = false;
        self.inflights.reset();
        self.snapshot_elapsed_ticks = 0;
        self.snapshot_resends = 0;
        self.snapshot_offset_next = 0;
        self.room_made_tick = None;
    }

    pub fn become_probe(&mut self) {
        // After a snapshot the follower holds at least its index, and may have
        // answered with less only because the answer raced the install.
        let next = match self.state {
            ProgressState::Snapshot { pending } => pending.max(self.matched).next(),
            _ => self.matched.next(),
        };
        self.reset_state(ProgressState::Probe);
        self.next = next;
    }

    pub fn become_replicate(&mut self) {
        self.reset_state(ProgressState::Replicate);
        self.next = self.matched.next();
    }

    pub fn become_snapshot(&mut self, pending: Index) {
        self.reset_state(ProgressState::Snapshot { pending });
    }

    /// The member lost its log: nothing it acknowledged is known to be
    /// held, and the match point is looked for again from `next` down (or
    /// the snapshot, when the log no longer goes back that far).
    pub fn forget_match(&mut self, next: Index) {
        self.matched = Index::ZERO;
        self.reset_state(ProgressState::Probe);
        self.next = next.max(Index(1));
    }

    /// An Append was acknowledged through `index`. Returns whether it told us
    /// anything new.
    pub fn on_match(&mut self, index: Index) -> bool {
        let updated = index > self.matched;
        if updated {
            self.matched = index;
            self.probe_sent = false;
        }
        self.next = self.next.max(index.next());
        self.inflights.free_through(index);
        updated
    }

    /// An Append whose `prev_index` was `rejected` was refused; `next_guess` is
    /// where the leader, from the follower's hint, expects the logs to match
    /// again. Returns false when the rejection is stale (it answers an older
    /// Append than the one that matters now) and must be ignored.
    pub fn on_reject(&mut self, rejected: Index, next_guess: Index) -> bool {
        match self.state {
            ProgressState::Replicate => {
                if rejected <= self.matched {
                    return false;
                }
                // Something was lost or the follower restarted: find the
                // match point again, one probe at a time.
                let next_max = rejected.max(self.matched.next());
                self.become_probe();
                self.next = next_guess.clamp(self.matched.next(), next_max);
                true
            }
            ProgressState::Probe => {
                // Only the answer to the outstanding probe counts.
                if self.next.prev() != rejected {
                    return false;
                }
                // A peer that claims to lack what it acknowledged earlier is
                // broken, but it must not break us: keep `matched < next`.
                let next_max = rejected.max(self.matched.next());
                self.next = next_guess.clamp(self.matched.next(), next_max);
                self.probe_sent = false;
                true
            }
            ProgressState::Snapshot { .. } => false,
        }
    }

    /// Whether the leader must hold off sending Appends to this member.
    pub fn is_paused(&self) -> bool {
        match self.state {
            ProgressState::Probe => self.probe_sent,
            ProgressState::Replicate => self.inflights.is_full(),
            ProgressState::Snapshot { .. } => true,
        }
    }

    /// Records that an Append ending at `last` (equal to `next - 1` when it
    /// carried no entries), with `bytes` of payload, was just sent.
    pub fn on_sent(&mut self, last: Index, entry_count: usize, bytes: usize) {
        match self.state {
            ProgressState::Replicate => {
                if entry_count > 0 {
                    self.next = last.next();
                }
                self.inflights.add(last, bytes);
            }
            ProgressState::Probe => self.probe_sent = true,
            ProgressState::Snapshot { .. } => {
                panic!("sent an Append to a member in snapshot state")
            }
        }
        debug_assert!(self.matched < self.next, "{self}");
    }
}

impl fmt::Display for Progress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.state {
            ProgressState::Probe => "probe".to_string(),
            ProgressState::Replicate => "replicate".to_string(),
            ProgressState::Snapshot { pending } => format!("snapshot@{pending}"),
        };
        write!(f, "{state} match={} next={} inflight={}", self.matched, self.next, self.inflights.len())?;
        if self.probe_sent {
            write!(f, " paused")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replicate_pipelines_until_the_window_is_full() {
        let mut p = Progress::new(Index(1), 2, 1 << 20);
        p.become_replicate();
        p.on_sent(Index(3), 3, 30);
        assert!(!p.is_paused());
        p.on_sent(Index(5), 2, 20);
        assert!(p.is_paused());
        assert_eq!(p.next, Index(6));
        assert!(p.on_match(Index(3)));
        assert!(!p.is_paused());
        assert_eq!(p.inflights.len(), 1);
    }

    #[test]
    fn probe_sends_one_at_a_time_and_ignores_stale_rejections() {
        let mut p = Progress::new(Index(10), 4, 1 << 20);
        p.on_sent(Index(9), 0, 0);
        assert!(p.is_paused());
        // A rejection of an older probe (prev 5) says nothing about prev 9.
        assert!(!p.on_reject(Index(5), Index(3)));
        assert!(p.is_paused());
        assert!(p.on_reject(Index(9), Index(4)));
        assert_eq!(p.next, Index(4));
        assert!(!p.is_paused());
    }

    #[test]
    fn replicate_falls_back_to_probe_on_a_fresh_rejection() {
        let mut p = Progress::new(Index(1), 4, 1 << 20);
        p.on_match(Index(5));
        p.become_replicate();
        p.on_sent(Index(8), 3, 30);
        assert!(!p.on_reject(Index(4), Index(1)), "rejection below match is stale");
        assert!(p.on_reject(Index(6), Index(2)));
        assert_eq!(p.state, ProgressState::Probe);
        assert_eq!(p.next, Index(6), "never below match + 1");
    }

    #[test]
    fn the_window_is_bounded_in_bytes_too() {
        let mut p = Progress::new(Index(1), 64, 100);
        p.become_replicate();
        p.on_sent(Index(1), 1, 60);
        assert!(!p.is_paused());
        p.on_sent(Index(2), 1, 60);
        assert!(p.is_paused(), "120 bytes in flight, 100 allowed");
        p.on_match(Index(1));
        assert!(!p.is_paused());
        assert_eq!(p.inflights.bytes(), 60);
    }

    #[test]
    fn snapshot_then_probe_resumes_after_the_snapshot() {
        let mut p = Progress::new(Index(1), 4, 1 << 20);
        p.become_snapshot(Index(50));
        assert!(p.is_paused());
        p.become_probe();
        assert_eq!(p.next, Index(51));
    }
}
