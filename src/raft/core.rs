//! The Raft state of one node and the one way in: `step`. Each role has its
//! handler; handlers for a subject live in their own files (`election.rs`,
//! `replication.rs`, `read.rs`, `membership.rs`) as `impl Raft` blocks.

use std::collections::BTreeMap;
use std::fmt;

use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};

use super::config::Config;
use super::log::RaftLog;
use super::membership::MembershipLog;
use super::message::{Body, HardState, Membership, Message, SnapshotMeta};
use super::progress::Progress;
use super::read::ReadQueue;
use super::types::{Index, NodeId, Term};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    Follower,
    /// Asking for pre-votes (thesis §9.6): the term has not been raised yet.
    PreCandidate,
    Candidate,
    Leader,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Follower => "follower",
            Role::PreCandidate => "precandidate",
            Role::Candidate => "candidate",
            Role::Leader => "leader",
        })
    }
}

/// Why `step` ignored a message. Peers are not trusted: anything odd is
/// dropped and counted, never a panic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dropped {
    /// Addressed to another node, from ourselves, or from node 0.
    Misaddressed,
    /// From an older term.
    StaleTerm,
    /// A vote request while we still hear from a leader (thesis §4.2.3).
    InLease,
    /// Not meaningful in our current role (a vote answer to a follower...).
    UnexpectedForRole,
    /// An answer to a request we no longer have in flight.
    StaleResponse,
    /// Contradicts itself or our committed log.
    Invalid,
    /// From a node we do not track.
    UnknownPeer,
    /// A proposal while a leadership transfer is under way.
    Transferring,
    /// A TimeoutNow that the transfer it was sent for may no longer want:
    /// from a leader we do not follow, or for a log that has moved on.
    StaleTransfer,
}

/// Counters of what `step` dropped, by reason.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Stats {
    pub dropped: BTreeMap<&'static str, u64>,
}

/// A leadership transfer in progress (thesis §3.10).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Transfer {
    pub target: NodeId,
    pub elapsed_ticks: u64,
}

/// What the core has to say that is not a peer message; drained into each
/// `Ready`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub(super) struct Outbox {
    /// May leave at once.
    pub msgs: Vec<Message>,
    /// Promise something about our persisted state; leave only after the
    /// `Ready` they came with is durable.
    pub msgs_after_persist: Vec<Message>,
    pub read_states: Vec<super::ReadState>,
    pub read_failures: Vec<u64>,
    pub snapshot_chunks: Vec<super::SnapshotChunk>,
    /// Commands queued for forwarding that never left (see `Ready`).
    pub forward_failures: Vec<Vec<u8>>,
}

/// Follower: a read sent to the leader and not yet answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) struct ForwardedRead {
    /// The caller's name for the read.
    pub ctx: u64,
    pub sent_tick: u64,
}

/// The state of one Raft node. Fields are private to the `raft` module:
/// callers go through the facade in `mod.rs`.
#[derive(Clone, Debug)]
pub struct Raft {
    pub(super) cfg: Config,
    pub(super) id: NodeId,
    pub(super) rng: Xoshiro256PlusPlus,

    // Persistent state (paper figure 2), mirrored in `persisted` once durable.
    pub(super) term: Term,
    pub(super) vote: Option<NodeId>,
    pub(super) log: RaftLog,
    pub(super) memberships: MembershipLog,

    pub(super) role: Role,
    pub(super) leader: Option<NodeId>,
    /// Ticks since this node started; only ever compared with itself.
    pub(super) ticks: u64,
    /// The node's wall clock (ms) as it last said (`Raft::set_clock`).
    pub(super) clock_ms: u64,
    pub(super) election_elapsed_ticks: u64,
    pub(super) heartbeat_elapsed_ticks: u64,
    /// Randomized in `[election_ticks_min, election_ticks_max]` at each reset.
    pub(super) election_timeout_ticks: u64,

    /// Candidate and pre-candidate: answers so far (true = granted).
    pub(super) votes: BTreeMap<NodeId, bool>,

    /// Leader: every member but ourselves... and ourselves, whose `matched`
    /// is the durable end of our own log.
    pub(super) progress: BTreeMap<NodeId, Progress>,
    /// Leader: members a configuration it appended left out, with that
    /// entry's index. They are sent the log until they hold it, so that they
    /// learn of their removal and stop campaigning (a removed node that never
    /// hears of it campaigns forever, refused by everyone).
    pub(super) departing: BTreeMap<NodeId, Index>,
    pub(super) transfer: Option<Transfer>,
    pub(super) reads: ReadQueue,
    /// Leader: a membership change being driven through its steps.
    pub(super) membership_change: Option<super::membership::ChangeInFlight>,

    /// Follower: commands waiting to be forwarded to the leader...
    pub(super) forward_queue: Vec<Vec<u8>>,
    /// ... of this term: sent only to it, or failed (never appended by
    /// anyone), so a write cannot surface long after its client gave up.
    pub(super) forward_to: Option<(Term, NodeId)>,
    /// Follower: reads sent to the leader, not yet answered, by `ReadId::seq`.
    pub(super) forwarded_reads: BTreeMap<u64, ForwardedRead>,
    /// Drawn at creation: with `next_read_seq`, the ids of forwarded reads
    /// are unique across restarts (`ReadId`).
    pub(super) incarnation: u64,
    pub(super) next_read_seq: u64,
    /// Follower: the leader counted this node as holding entries through
    /// this index, but its log ends before it: the node lost what it had
    /// acknowledged (its data directory wiped or replaced). Until its log
    /// reaches the index again it grants no votes: its empty log would make
    /// any candidate look up to date, and could elect one that lacks
    /// entries committed with this node's help.
    pub(super) lost_through: Index,

    pub(super) out: Outbox,
    /// The hard state last handed out in a `Ready` (to be written, or
    /// written).
    pub(super) hard_state_sent: HardState,
    /// A snapshot from the leader, to be installed by the caller.
    pub(super) pending_snapshot: Option<SnapshotMeta>,
    /// Follower: the snapshot whose chunks are arriving.
    pub(super) snapshot_receive: Option<super::snapshot::SnapshotReceive>,
    /// The leader and term last logged (`note_leader`); for logs only.
    pub(super) leader_noted: Option<(NodeId, Term)>,
    /// The newest snapshot the caller saved; the log is compacted to it once
    /// no follower is being sent the snapshot the log starts at.
    pub(super) compact_wanted: super::types::Index,
    /// Payload bytes of the entries between the log's start and
    /// `compact_wanted`, kept for such a follower.
    pub(super) compact_held_bytes: usize,
    pub(super) stats: Stats,
}

/// What the core is started from: what the write-ahead log recovered, plus the
/// peers file's configuration for a node that has never been configured.
#[derive(Clone, Debug, Default)]
pub struct InitialState {
    pub hard_state: HardState,
    pub snapshot: Option<SnapshotMeta>,
    /// Contiguous, all after the snapshot.
    pub entries: Vec<super::message::Entry>,
    /// Used only when neither the snapshot nor the log holds a configuration.
    /// Empty for a node started with `--join`.
    pub bootstrap: Membership,
}

impl Raft {
    pub fn new(cfg: Config, init: InitialState) -> Raft {
        if let Err(e) = cfg.validate() {
            panic!("invalid raft config: {e}");
        }
        let log = RaftLog::restore(init.snapshot.as_ref(), init.entries, init.hard_state.commit);
        let memberships = MembershipLog::restore(init.snapshot.as_ref(), &init.bootstrap, log.entries());
        // A generator of its own, so that the election timeouts drawn from
        // `rng` stay what they were for a given seed.
        let incarnation = match cfg.planted_bug {
            Some(super::config::PlantedBug::ReadIdsReused) => 0,
            _ => Xoshiro256PlusPlus::seed_from_u64(cfg.seed ^ 0x1ac4_a7e0).random(),
        };
        let mut raft = Raft {
            id: cfg.id,
            rng: Xoshiro256PlusPlus::seed_from_u64(cfg.seed),
            term: init.hard_state.term,
            vote: init.hard_state.vote,
            log,
            memberships,
            role: Role::Follower,
            leader: None,
            ticks: 0,
            election_elapsed_ticks: 0,
            heartbeat_elapsed_ticks: 0,
            election_timeout_ticks: cfg.election_ticks_max,
            votes: BTreeMap::new(),
            progress: BTreeMap::new(),
            departing: BTreeMap::new(),
            transfer: None,
            reads: ReadQueue::default(),
            membership_change: None,
            forward_queue: Vec::new(),
            forward_to: None,
            forwarded_reads: BTreeMap::new(),
            incarnation,
            next_read_seq: 0,
            lost_through: Index::ZERO,
            clock_ms: 0,
            out: Outbox::default(),
            hard_state_sent: init.hard_state,
            pending_snapshot: None,
            snapshot_receive: None,
            leader_noted: None,
            compact_wanted: super::types::Index::ZERO,
            compact_held_bytes: 0,
            stats: Stats::default(),
            cfg,
        };
        raft.reset_election_timer();
        raft
    }

    pub(super) fn hard_state(&self) -> HardState {
        HardState { term: self.term, vote: self.vote, commit: self.log.committed() }
    }

    /// The configuration in force (the latest in the log).
    pub fn membership(&self) -> &Membership {
        self.memberships.current()
    }

    /// May this node stand for election? Only voters of its latest
    /// configuration may.
    pub(super) fn promotable(&self) -> bool {
        self.membership().is_voter(self.id)
    }

    pub(super) fn reset_election_timer(&mut self) {
        self.election_elapsed_ticks = 0;
        self.heartbeat_elapsed_ticks = 0;
        let (lo, hi) = (self.cfg.election_ticks_min, self.cfg.election_ticks_max);
        self.election_timeout_ticks = self.rng.random_range(lo..=hi);
    }

    /// Still hearing from a leader: the lease during which votes for others
    /// are refused (thesis §4.2.3), so a removed or partitioned node cannot
    /// disrupt a working cluster.
    pub(super) fn in_lease(&self) -> bool {
        self.cfg.check_quorum && self.leader.is_some() && self.election_elapsed_ticks < self.cfg.election_ticks_min
    }

    pub(super) fn drop_message(&mut self, m: &Message, why: Dropped) -> Result<(), Dropped> {
        log::debug!("{} t{} {}: dropped {m} ({why:?})", self.id, self.term, self.role);
        *self.stats.dropped.entry(m.body.kind()).or_default() += 1;
        Err(why)
    }

    /// Queues a message. Answers that promise something about our state wait
    /// for it to be durable (etcd `raft.go` `send`; Raft thesis §10.2.1).
    pub(super) fn send(&mut self, to: NodeId, body: Body) {
        self.send_with_term(to, self.term, body);
    }

    pub(super) fn send_with_term(&mut self, to: NodeId, term: Term, body: Body) {
        let mut after_persist = matches!(
            body,
            Body::AppendResp(_) | Body::VoteResp { .. } | Body::PreVoteResp { .. } | Body::InstallSnapshotResp { .. }
        );
        if self.cfg.planted_bug == Some(super::config::PlantedBug::AckBeforePersist)
            && matches!(body, Body::AppendResp(_))
        {
            after_persist = false;
        }
        let m = Message { from: self.id, to, term, body };
        if after_persist {
            self.out.msgs_after_persist.push(m);
        } else {
            assert_ne!(to, self.id, "only answers that wait for persistence go to ourselves");
            self.out.msgs.push(m);
        }
    }

    // ---- role transitions ----

    pub(super) fn become_follower(&mut self, term: Term, leader: Option<NodeId>) {
        assert!(term >= self.term, "term going back from {} to {term}", self.term);
        let was_leader = self.role == Role::Leader;
        if term > self.term || leader != self.leader || self.role != Role::Follower {
            // Reads forwarded to a leader we no longer follow (or to the
            // same node in an earlier term: it drops them unanswered) may
            // never be answered: fail them so the caller can ask again.
            self.fail_forwarded_reads();
        }
        if term > self.term {
            self.term = term;
            self.vote = None;
        }
        if was_leader {
            self.abandon_leadership();
        }
        self.role = Role::Follower;
        if let Some(l) = leader {
            self.note_leader(l);
        }
        self.leader = leader;
        self.votes.clear();
        self.reset_election_timer();
        log::debug!("{} became follower at term {} (leader {:?})", self.id, self.term, leader.map(|l| l.0));
    }

    /// Forgets everything only a leader keeps.
    fn abandon_leadership(&mut self) {
        self.progress.clear();
        self.departing.clear();
        self.transfer = None;
        self.membership_change = None;
        self.fail_pending_reads();
    }

    pub(super) fn become_leader(&mut self) {
        assert_eq!(self.role, Role::Candidate, "only a candidate becomes leader");
        self.role = Role::Leader;
        self.leader = Some(self.id);
        self.votes.clear();
        self.reset_election_timer();
        self.reads = ReadQueue::default();
        // Members the latest configuration left out may not know yet: a
        // leader that appended it may have died before telling them.
        if let Some(at) = self.memberships.last_change_index() {
            self.note_departures(at);
        }
        self.rebuild_progress();
        // Entries of earlier terms commit only once an entry of this term
        // does (paper §5.4.2): append one right away.
        self.append_new(super::message::Payload::Noop);
        log::info!("{} became leader at term {}", self.id, self.term);
    }

    /// The members the configuration at `at` left out are `departing` until
    /// they hold it.
    pub(super) fn note_departures(&mut self, at: Index) {
        let now = self.memberships.at(at).members();
        let before = self.memberships.at(Index(at.0.saturating_sub(1))).members();
        for id in before.into_iter().filter(|id| !now.contains(id) && *id != self.id) {
            self.departing.insert(id, at);
        }
    }

    /// Progress for every member of the current configuration, keeping what
    /// we already know about members that stay.
    pub(super) fn rebuild_progress(&mut self) {
        let members = self.membership().members();
        let next = self.log.last_index().next();
        let (inflight_max, inflight_bytes_max) = (self.cfg.inflight_appends_max, self.cfg.inflight_bytes_max);
        let departing = &self.departing;
        self.progress.retain(|id, _| members.contains(id) || departing.contains_key(id));
        let now = self.ticks;
        let departing: Vec<NodeId> = self.departing.keys().copied().collect();
        for id in members.into_iter().chain(departing) {
            self.progress.entry(id).or_insert_with(|| {
                // A new leader (or member) gets a full election timeout of
                // grace before check-quorum counts it silent.
                let mut p = Progress::new(next, inflight_max, inflight_bytes_max);
                p.last_heard_tick = now;
                p
            });
        }
        // We count ourselves only through what is durable (thesis §10.2.1).
        let stable = self.log.stable();
        if let Some(me) = self.progress.get_mut(&self.id) {
            me.on_match(stable);
        }
        self.check_transfer_target();
    }

    // ---- the one way in ----

    pub fn step(&mut self, m: Message) -> Result<(), Dropped> {
        if m.to != self.id || m.from == self.id || m.from.0 == 0 {
            return self.drop_message(&m, Dropped::Misaddressed);
        }
        if let Err(why) = super::bounds::check(&m) {
            log::warn!("{} t{}: dropped {} from {}: {why}", self.id, self.term, m.body.kind(), m.from);
            return self.drop_message(&m, Dropped::Invalid);
        }
        if m.term > self.term {
            if let Some(why) = self.on_higher_term(&m) {
                return self.drop_message(&m, why);
            }
        } else if m.term < self.term {
            return self.on_lower_term(m);
        }
        match self.role {
            Role::Leader => self.step_leader(m),
            Role::Candidate | Role::PreCandidate => self.step_candidate(m),
            Role::Follower => self.step_follower(m),
        }
    }

    /// Paper §5.1: a higher term makes us a follower, with three exceptions
    /// for pre-voting and leases. Returns a reason to drop the message.
    fn on_higher_term(&mut self, m: &Message) -> Option<Dropped> {
        match &m.body {
            // A pre-vote asks about a term nobody is in yet.
            Body::PreVote { .. } => None,
            // A granted pre-vote echoes the term we would campaign in.
            Body::PreVoteResp { granted: true } => None,
            Body::Vote { transfer, last_index, last_term }
                if self.in_lease() && !(*transfer && self.transfer_vote_welcome(m.from, *last_index, *last_term)) =>
            {
                Some(Dropped::InLease)
            }
            Body::Append { .. } | Body::Heartbeat { .. } | Body::InstallSnapshot { .. } => {
                self.become_follower(m.term, Some(m.from));
                None
            }
            _ => {
                self.become_follower(m.term, None);
                None
            }
        }
    }

    fn on_lower_term(&mut self, m: Message) -> Result<(), Dropped> {
        match &m.body {
            // A leader from an older term is told about ours, so it steps
            // down; without this a node that was cut off could keep a stale
            // leader waiting forever (etcd does the same under check-quorum).
            Body::Append { .. } | Body::Heartbeat { .. } | Body::InstallSnapshot { .. } => {
                self.send(m.from, Body::HeartbeatResp { read_round: 0 });
            }
            // The pre-candidate learns our term and gives up.
            Body::PreVote { .. } => self.send(m.from, Body::PreVoteResp { granted: false }),
            _ => {}
        }
        self.drop_message(&m, Dropped::StaleTerm)
    }

    fn step_follower(&mut self, m: Message) -> Result<(), Dropped> {
        match m.body {
            Body::Append { .. } | Body::Heartbeat { .. } | Body::InstallSnapshot { .. } => {
                self.heard_from_leader(m.from);
                self.handle_leader_message(m)
            }
            Body::PreVote { .. } | Body::Vote { .. } => self.handle_vote_request(m),
            Body::TimeoutNow { .. } => self.handle_timeout_now(m),
            Body::ReadIndexResp { request, index, clock } => self.handle_read_index_resp(m.from, request, index, clock),
            Body::ReadIndex { request } => {
                // We are not the leader (any more): the follower asks again.
                self.send(m.from, Body::ReadIndexResp { request, index: None, clock: 0 });
                Err(Dropped::UnexpectedForRole)
            }
            _ => self.drop_message(&m, Dropped::UnexpectedForRole),
        }
    }

    pub(super) fn heard_from_leader(&mut self, leader: NodeId) {
        if self.leader != Some(leader) {
            self.note_leader(leader);
            self.fail_forwarded_reads();
            self.leader = Some(leader);
        }
        self.election_elapsed_ticks = 0;
    }

    /// Tells the operator, once per change, which node this one follows.
    fn note_leader(&mut self, leader: NodeId) {
        if self.leader_noted != Some((leader, self.term)) && leader != self.id {
            log::info!("{} t{}: following leader {leader}", self.id, self.term);
            self.leader_noted = Some((leader, self.term));
        }
    }

    fn handle_leader_message(&mut self, m: Message) -> Result<(), Dropped> {
        let term = m.term;
        match m.body {
            Body::Append { prev_index, prev_term, entries, commit } => {
                self.handle_append(m.from, m.term, prev_index, prev_term, entries, commit)
            }
            Body::Heartbeat { commit, read_round } => self.handle_heartbeat(m.from, commit, read_round),
            Body::InstallSnapshot { meta, offset, data, done } => {
                self.handle_install_snapshot(m.from, term, meta, offset, data, done)
            }
            _ => unreachable!("only leader messages are routed here"),
        }
    }

    fn step_candidate(&mut self, m: Message) -> Result<(), Dropped> {
        match m.body {
            // A leader of our term won the election we are in (paper §5.2).
            Body::Append { .. } | Body::Heartbeat { .. } | Body::InstallSnapshot { .. } => {
                self.become_follower(m.term, Some(m.from));
                self.heard_from_leader(m.from);
                self.handle_leader_message(m)
            }
            Body::PreVote { .. } | Body::Vote { .. } => self.handle_vote_request(m),
            Body::PreVoteResp { granted } => self.handle_vote_response(m.from, m.term, granted, true),
            Body::VoteResp { granted } => self.handle_vote_response(m.from, m.term, granted, false),
            Body::ReadIndex { request } => {
                self.send(m.from, Body::ReadIndexResp { request, index: None, clock: 0 });
                Err(Dropped::UnexpectedForRole)
            }
            _ => self.drop_message(&m, Dropped::UnexpectedForRole),
        }
    }

    fn step_leader(&mut self, m: Message) -> Result<(), Dropped> {
        // Check-quorum counts only answers to this leader's own appends and
        // heartbeats (as etcd does): a node that merely asks for votes or
        // forwards requests may not be following us at all.
        let answers_us =
            matches!(m.body, Body::AppendResp(_) | Body::HeartbeatResp { .. } | Body::InstallSnapshotResp { .. });
        let now = self.ticks;
        if let Some(p) = self.progress.get_mut(&m.from).filter(|_| answers_us) {
            p.last_heard_tick = now;
        }
        match m.body {
            Body::AppendResp(r) => self.handle_append_resp(m.from, r),
            Body::HeartbeatResp { read_round } => self.handle_heartbeat_resp(m.from, read_round),
            Body::InstallSnapshotResp { index, next_offset, installed } => {
                self.handle_snapshot_resp(m.from, index, next_offset, installed)
            }
            Body::PreVote { .. } | Body::Vote { .. } => self.handle_vote_request(m),
            Body::Propose { commands } => self.handle_forwarded_proposals(m.from, commands),
            Body::ReadIndex { request } => self.handle_forwarded_read(m.from, request),
            _ => self.drop_message(&m, Dropped::UnexpectedForRole),
        }
    }

    pub(super) fn fail_forwarded_reads(&mut self) {
        let failed = std::mem::take(&mut self.forwarded_reads);
        self.out.read_failures.extend(failed.into_values().map(|r| r.ctx));
    }
}
