//! The core's settings. Time is counted in ticks: the caller decides how long
//! a tick is (the node uses 1 ms, or less for very short timeouts).

use super::types::NodeId;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    pub id: NodeId,
    /// A follower that hears nothing for a random number of ticks in
    /// `[election_ticks_min, election_ticks_max]` starts an election.
    pub election_ticks_min: u64,
    pub election_ticks_max: u64,
    pub heartbeat_ticks: u64,
    /// Ask for votes without raising the term first (thesis §9.6), so a node
    /// that was cut off cannot depose a healthy leader when it returns.
    pub pre_vote: bool,
    /// A leader that has not heard from a quorum within an election timeout
    /// steps down; followers then refuse votes while they hear a leader.
    pub check_quorum: bool,
    pub append_entries_max: usize,
    pub append_bytes_soft_max: usize,
    pub inflight_appends_max: usize,
    /// Bytes of entries in flight to one follower before the leader waits.
    pub inflight_bytes_max: usize,
    /// Committed entries handed out in one `Ready`.
    pub apply_entries_max: usize,
    /// Commands a follower forwards to the leader in one message.
    pub propose_commands_max: usize,
    /// A leader defers compacting its log while a live follower still needs
    /// entries the compaction would drop (`Raft::compact`), up to this many
    /// payload bytes of entries past the snapshot asked for.
    pub compaction_hold_bytes_max: usize,
    /// Seeds the election-timeout randomness: the same seed and inputs give
    /// the same run.
    pub seed: u64,
    /// Test-only: a known bug to plant, so tests can show that the simulator
    /// and the model checker catch it. Never set outside tests.
    #[doc(hidden)]
    pub planted_bug: Option<PlantedBug>,
}

/// Bugs the simulator and the model checker must be able to catch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PlantedBug {
    /// Commit an entry of an earlier term by counting replicas (figure 8).
    CommitOlderTerm,
    /// Grant votes without the up-to-date check (§5.4.1).
    VoteWithoutLogCheck,
    /// Acknowledge appended entries before they are durable.
    AckBeforePersist,
    /// Serve a read index without confirming leadership with a quorum (a
    /// deposed leader serves stale reads).
    ReadWithoutQuorum,
    /// Add voters by switching from C_old straight to C_new, without a
    /// learner phase or joint consensus, and two at once (the target and the
    /// node with the next id): C_old and C_new then have disjoint majorities.
    SkipJointConsensus,
    /// Number forwarded reads from 0 in every process, as if the ids did not
    /// carry the process's incarnation: an answer to a read of the process
    /// before a restart is taken for the answer to a new read (a stale read).
    ReadIdsReused,
    /// Keep writes queued for forwarding across a change of role, term or
    /// leader, and send them whenever this node next follows someone: a
    /// write whose client long gave up is applied after newer writes.
    ForwardQueueKept,
    /// Release reads without the leader's clock (`ReadState::clock`), so
    /// they are judged by the store's clock alone: a key that an entry
    /// brought in past its deadline (a slower proposer's clock, a slow
    /// commit) is seen by reads that reached the leader after its deadline.
    ReadClockIgnored,
    /// With writes made durable behind the core's back (a log writer
    /// thread), count a leader's own new entries as matched when they are
    /// handed out rather than when they are durable: an entry can commit
    /// with the leader's copy still in its page cache, and a crash then
    /// leaves it on fewer than a majority.
    LeaderCountsUnwrittenEntries,
    /// Take a snapshot chunk as the next of the transfer under way when it
    /// is for the same snapshot index, whoever sent it and in which term:
    /// a new leader's chunks continue the old leader's file at whatever
    /// offset the core expects, and the file written is not the snapshot
    /// (the bug behind a follower exiting mid-transfer under load).
    SnapshotChunksByIndex,
}

impl Config {
    /// Defaults for one tick per millisecond: 150-300 ms elections, 50 ms
    /// heartbeats (README, Running a node).
    pub fn new(id: NodeId) -> Config {
        Config {
            id,
            election_ticks_min: 150,
            election_ticks_max: 300,
            heartbeat_ticks: 50,
            pre_vote: true,
            check_quorum: true,
            append_entries_max: crate::config::APPEND_ENTRIES_MAX,
            append_bytes_soft_max: crate::config::APPEND_BYTES_SOFT_MAX,
            inflight_appends_max: crate::config::INFLIGHT_APPENDS_MAX,
            inflight_bytes_max: crate::config::INFLIGHT_BYTES_MAX,
            apply_entries_max: crate::config::APPLY_ENTRIES_MAX,
            propose_commands_max: crate::config::PROPOSE_COMMANDS_MAX,
            compaction_hold_bytes_max: crate::config::COMPACTION_HOLD_BYTES_MAX,
            seed: 0,
            planted_bug: None,
        }
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.id.0 == 0 {
            return Err("node id must be at least 1".into());
        }
        if self.election_ticks_min == 0 || self.election_ticks_min > self.election_ticks_max {
            return Err(format!(
                "election timeout range {}-{} ticks is empty or starts at 0",
                self.election_ticks_min, self.election_ticks_max
            ));
        }
        if self.heartbeat_ticks == 0 {
            return Err("heartbeat interval must be at least one tick".into());
        }
        let limits = [
            ("append_entries_max", self.append_entries_max),
            ("append_bytes_soft_max", self.append_bytes_soft_max),
            ("inflight_appends_max", self.inflight_appends_max),
            ("inflight_bytes_max", self.inflight_bytes_max),
            ("apply_entries_max", self.apply_entries_max),
            ("propose_commands_max", self.propose_commands_max),
        ];
        if let Some((name, _)) = limits.iter().find(|(_, v)| *v == 0) {
            return Err(format!("{name} must be at least 1"));
        }
        Ok(())
    }
}
