//! A cluster of real Raft cores over a simulated disk and network. It does
//! for each node what `node.rs` does for a real one (carry out each `Ready`
//! in order), in two phases so that a crash can fall between them: first the
//! messages that may leave at once, then the write, the persisted messages,
//! the application of committed entries and the reads.
//!
//! After every change to a node the checker looks at it, so a violation is
//! reported at the step that caused it.

use std::collections::{BTreeMap, HashMap};

use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};

use super::checker::{Checker, Violation};
use super::disk::Disk;
use super::machine::Machine;
use super::network::{Faults, InFlight, Network};
use crate::raft::{
    Body, Config, Index, Membership, Message, NodeId, Payload, Persist, PlantedBug, ProposeError, Proposed, Raft,
    ReadError, ReadState, Ready, Role,
};

#[derive(Clone, Debug)]
pub struct SimOptions {
    pub size: usize,
    pub pre_vote: bool,
    pub check_quorum: bool,
    pub election_ticks_min: u64,
    pub election_ticks_max: u64,
    pub heartbeat_ticks: u64,
    pub append_entries_max: usize,
    pub inflight_appends_max: usize,
    pub snapshot_chunk_bytes: usize,
    /// `Config::compaction_hold_bytes_max`.
    pub compaction_hold_bytes_max: usize,
    /// Every node also snapshots at each multiple of this index (0: never),
    /// as `--snapshot-entries` does: nodes then hold snapshots of the same
    /// index, and a new leader may send one a follower was getting from the
    /// old leader.
    pub compact_every: u64,
    pub planted_bug: Option<PlantedBug>,
    pub faults: Faults,
    pub seed: u64,
    /// Keys with deadlines are written: leaders sweep them by their clocks,
    /// and the clocks they read are noted (`Cluster::leader_clocks`).
    pub expiry: bool,
    pub clocks: Clocks,
    /// `Config::apply_entries_max`: committed entries one Ready hands out.
    pub apply_entries_max: usize,
    /// Probability that a node with nothing to do but apply committed
    /// entries leaves them for a later event, as the node's core does
    /// once a turn has applied for long enough: messages are stepped,
    /// reads asked and snapshots taken with entries committed but not yet
    /// applied.
    pub apply_late: f64,
}

/// How far the nodes' clocks stray from the simulator's time: each node's
/// is off by up to `offset_ms_max` either way and runs fast or slow by up to
/// `drift_ppm_max` parts per million.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Clocks {
    pub offset_ms_max: u64,
    pub drift_ppm_max: u64,
}

/// Simulated milliseconds per tick, for the nodes' clocks.
pub const TICK_MS: u64 = 10;
/// What every clock reads at tick 0 (ms): far from 0, so no clock is
/// negative.
const CLOCK_BASE_MS: i64 = 1_000_000_000;

/// A node's clock: its offset and its rate error.
#[derive(Clone, Copy, Debug, Default)]
struct NodeClock {
    offset_ms: i64,
    drift_ppm: i64,
}

impl NodeClock {
    fn read(&self, tick: u64) -> u64 {
        let real = (tick * TICK_MS) as i64;
        (CLOCK_BASE_MS + real + self.offset_ms + real * self.drift_ppm / 1_000_000) as u64
    }
}

impl SimOptions {
    pub fn new(size: usize, seed: u64) -> SimOptions {
        SimOptions {
            size,
            pre_vote: true,
            check_quorum: true,
            election_ticks_min: 10,
            election_ticks_max: 20,
            heartbeat_ticks: 3,
            append_entries_max: 8,
            inflight_appends_max: 4,
            snapshot_chunk_bytes: 64,
            compaction_hold_bytes_max: crate::config::COMPACTION_HOLD_BYTES_MAX,
            compact_every: 0,
            planted_bug: None,
            faults: Faults::NONE,
            seed,
            expiry: false,
            clocks: Clocks::default(),
            apply_entries_max: crate::config::APPLY_ENTRIES_MAX,
            apply_late: 0.0,
        }
    }
}

/// Something a client of a node would see.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A command carrying `(client, seq)` was applied by the node with this
    /// result.
    Applied { node: NodeId, index: Index, client: u64, seq: u64, result: String },
    /// A read was served: `value` is the key's value at the read index.
    Read { node: NodeId, ctx: u64, value: Option<String> },
    /// A read could not be confirmed and was not served.
    ReadFailed { node: NodeId, ctx: u64 },
    /// A command queued for forwarding was never sent (the leader changed):
    /// certainly not applied.
    ForwardFailed { node: NodeId, client: u64, seq: u64 },
}

/// A Ready's write, handed out and not yet durable (the node's log writer
/// thread has it).
#[derive(Clone)]
struct PendingWrite {
    writes: Vec<super::disk::Write>,
    persisted_messages: Vec<Message>,
    persist: Persist,
}

#[derive(Clone)]
pub struct SimNode {
    pub raft: Option<Raft>,
    pub disk: Disk,
    pub machine: Machine,
    /// The expiry sweep, while it leads.
    sweep: crate::expiry::Sweep,
    clock: NodeClock,
    /// Oldest first; made durable in order.
    pending: std::collections::VecDeque<PendingWrite>,
    /// Confirmed reads waiting for the state machine to reach their index.
    reads_waiting: Vec<ReadState>,
    /// Key of each read in flight, by context, and the highest index any
    /// node had applied when the read was asked: linearizability demands
    /// that it be served at least there (it saw every write acknowledged
    /// before it began).
    read_keys: HashMap<u64, (String, Index)>,
    pub restarts: u64,
    /// A snapshot of the state machine at a multiple of `compact_every`,
    /// taken as it was applied, to compact to once no write is under way.
    snapshot_due: Option<(Index, Vec<u8>)>,
}

impl SimNode {
    pub fn is_up(&self) -> bool {
        self.raft.is_some()
    }

    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Hashes the reads in flight and waiting (the model checker's state).
    pub fn reads_fingerprint<H: std::hash::Hasher>(&self, h: &mut H) {
        use std::hash::Hash;
        let mut keys: Vec<_> = self.read_keys.iter().collect();
        keys.sort();
        keys.hash(h);
        self.reads_waiting.hash(h);
    }
}

#[derive(Clone)]
pub struct Cluster {
    pub opts: SimOptions,
    pub nodes: BTreeMap<NodeId, SimNode>,
    pub net: Network,
    pub checker: Checker,
    pub rng: Xoshiro256PlusPlus,
    pub bootstrap: Membership,
    pub outcomes: Vec<Outcome>,
    /// When set, a line per notable event (scenario scripts print it).
    pub trace: Option<Vec<String>>,
    pub stats: Stats,
    /// With `SimOptions::expiry`: per tick, the lowest and highest clock a
    /// leader read to sweep, serve a read or stamp an entry. A read must not
    /// see a key past its deadline by the clock of the leader that served
    /// it, nor miss one before its deadline by every leader's clock so far.
    pub leader_clocks: BTreeMap<u64, (u64, u64)>,
}

/// An operator's request to the leader.
#[derive(Clone, Debug)]
pub enum Admin {
    Change(crate::raft::MembershipChange),
    Transfer(NodeId),
}

/// What happened in a run, for tests that a fault mix really reaches the
/// code it is meant to exercise.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    pub snapshots_installed: u64,
    /// Crashes of a node that held part of a snapshot it was receiving.
    pub crashes_mid_transfer: u64,
    /// Received snapshots that failed their check (damaged on the way).
    pub snapshots_rejected: u64,
    /// Messages delivered to a later incarnation of the node they were
    /// sent to (held by the sender while it was down).
    pub delivered_across_restart: u64,
    /// Membership changes and transfers a leader accepted.
    pub admin_accepted: u64,
    /// Chunks of a snapshot delivered to a node that was receiving the
    /// same snapshot in another transfer (another sender or term).
    pub transfers_superseded: u64,
}

impl Cluster {
    pub fn new(opts: SimOptions) -> Cluster {
        let ids: Vec<NodeId> = (1..=opts.size as u64).map(NodeId).collect();
        Cluster::with_members(opts, &ids, &ids)
    }

    /// `started`: the nodes that exist; `voters`: the bootstrap
    /// configuration. Nodes outside it start like `--join` nodes.
    pub fn with_members(opts: SimOptions, started: &[NodeId], voters: &[NodeId]) -> Cluster {
        let bootstrap = Membership::with_voters(voters.iter().copied());
        let mut cluster = Cluster {
            rng: Xoshiro256PlusPlus::seed_from_u64(opts.seed),
            net: Network::new(opts.faults),
            checker: Checker::default(),
            nodes: BTreeMap::new(),
            bootstrap,
            outcomes: Vec::new(),
            trace: None,
            stats: Stats::default(),
            leader_clocks: BTreeMap::new(),
            opts,
        };
        for &id in started {
            cluster.add_node(id, Disk::default());
        }
        cluster
    }

    /// Node `id` as a new process on `disk`, whatever it held before (a
    /// replaced or wiped data directory): a process of its own, so its
    /// incarnation differs from the last one's.
    pub fn replace_node(&mut self, id: NodeId, disk: Disk) {
        let restarts = self.nodes.get(&id).map_or(0, |n| n.restarts + 1);
        self.checker.forget(id);
        self.start_node(id, disk, restarts);
    }

    pub fn add_node(&mut self, id: NodeId, disk: Disk) {
        self.start_node(id, disk, 0);
    }

    /// Node `id` on `disk`, booted as its `restarts`-th process.
    fn start_node(&mut self, id: NodeId, disk: Disk, restarts: u64) {
        // A generator of its own, so that clocks change no other draw.
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(self.opts.seed ^ 0xc10c_0000 ^ id.0);
        let (offset, drift) = (self.opts.clocks.offset_ms_max as i64, self.opts.clocks.drift_ppm_max as i64);
        let clock =
            NodeClock { offset_ms: rng.random_range(-offset..=offset), drift_ppm: rng.random_range(-drift..=drift) };
        let node = SimNode {
            sweep: crate::expiry::Sweep::default(),
            clock,
            raft: None,
            disk,
            machine: Machine::default(),
            pending: std::collections::VecDeque::new(),
            reads_waiting: Vec::new(),
            read_keys: HashMap::new(),
            restarts,
            snapshot_due: None,
        };
        self.nodes.insert(id, node);
        self.boot(id);
    }

    fn config_for(&self, id: NodeId, restarts: u64) -> Config {
        let mut cfg = Config::new(id);
        cfg.election_ticks_min = self.opts.election_ticks_min;
        cfg.election_ticks_max = self.opts.election_ticks_max;
        cfg.heartbeat_ticks = self.opts.heartbeat_ticks;
        cfg.pre_vote = self.opts.pre_vote;
        cfg.check_quorum = self.opts.check_quorum;
        cfg.append_entries_max = self.opts.append_entries_max;
        cfg.apply_entries_max = self.opts.apply_entries_max;
        cfg.inflight_appends_max = self.opts.inflight_appends_max;
        cfg.compaction_hold_bytes_max = self.opts.compaction_hold_bytes_max;
        cfg.planted_bug = self.opts.planted_bug;
        cfg.seed = self.opts.seed ^ (id.0 << 32) ^ restarts.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        cfg
    }

    /// Starts a node from what its disk holds.
    fn boot(&mut self, id: NodeId) {
        let node = &self.nodes[&id];
        let cfg = self.config_for(id, node.restarts);
        let init = node.disk.initial_state(&self.bootstrap);
        let machine = match &node.disk.snapshot {
            Some((_, data)) => Machine::restore(data),
            None => Machine::default(),
        };
        let node = self.nodes.get_mut(&id).expect("exists");
        node.raft = Some(Raft::new(cfg, init));
        node.machine = machine;
    }

    pub fn raft(&self, id: NodeId) -> Option<&Raft> {
        self.nodes.get(&id).and_then(|n| n.raft.as_ref())
    }

    fn raft_mut(&mut self, id: NodeId) -> Option<&mut Raft> {
        self.nodes.get_mut(&id).and_then(|n| n.raft.as_mut())
    }

    pub fn up_ids(&self) -> Vec<NodeId> {
        self.nodes.iter().filter(|(_, n)| n.is_up()).map(|(id, _)| *id).collect()
    }

    pub fn leaders(&self) -> Vec<NodeId> {
        self.up_ids().into_iter().filter(|id| self.raft(*id).is_some_and(|r| r.role() == Role::Leader)).collect()
    }

    fn note(&mut self, line: impl FnOnce() -> String) {
        if let Some(trace) = &mut self.trace {
            trace.push(line());
        }
    }

    /// Runs the checker over a node that changed, then over current leaders.
    pub fn check(&mut self, id: NodeId) -> Result<(), Violation> {
        let Some(raft) = self.nodes.get(&id).and_then(|n| n.raft.as_ref()) else {
            return Ok(());
        };
        self.checker.observe(raft)?;
        let leaders: Vec<&Raft> =
            self.nodes.values().filter_map(|n| n.raft.as_ref()).filter(|r| r.role() == Role::Leader).collect();
        self.checker.check_leaders(&leaders)
    }

    // ---- inputs ----

    pub fn tick(&mut self, id: NodeId) -> Result<(), Violation> {
        let Some(raft) = self.raft_mut(id) else { return Ok(()) };
        let before = (raft.role(), raft.term());
        raft.tick();
        self.note_role_change(id, before);
        self.sweep(id);
        self.check(id)
    }

    /// What node `id`'s clock reads now (ms).
    pub fn wall(&self, id: NodeId) -> u64 {
        self.nodes.get(&id).map_or(0, |n| n.clock.read(self.net.now))
    }

    /// A leader's clock reading that decides expiry (`leader_clocks`).
    fn note_leader_clock(&mut self, id: NodeId) -> u64 {
        let ms = self.wall(id);
        let e = self.leader_clocks.entry(self.net.now).or_insert((ms, ms));
        *e = (e.0.min(ms), e.1.max(ms));
        ms
    }

    /// A leader sweeps what expired by its clock, as a node does at each
    /// tick and before it serves a read.
    fn sweep(&mut self, id: NodeId) {
        if !self.opts.expiry || self.raft(id).is_none_or(|r| r.role() != Role::Leader) {
            return;
        }
        let now = self.note_leader_clock(id);
        let node = self.nodes.get_mut(&id).expect("up");
        let raft = node.raft.as_mut().expect("up");
        if let Some(index) = node.sweep.run(raft, node.machine.kv(), now, super::machine::command_sweep) {
            self.note(|| format!("  {id} sweeps at {now} ms: entry {index}"));
        }
    }

    /// Asks node `id` (a leader, or the request is refused) for a membership
    /// change or a leadership transfer; refused changes are simply noted.
    pub fn admin(&mut self, id: NodeId, change: Admin) -> Result<(), Violation> {
        let Some(raft) = self.raft_mut(id) else { return Ok(()) };
        let result = match &change {
            Admin::Change(c) => raft.change_membership(c.clone()).map_err(|e| format!("{e:?}")),
            Admin::Transfer(target) => raft.transfer_leader(*target).map_err(|e| format!("{e:?}")),
        };
        if result.is_ok() {
            self.stats.admin_accepted += 1;
        }
        self.note(|| format!("  {id} asked to {change:?}: {result:?}"));
        self.check(id)
    }

    pub fn campaign(&mut self, id: NodeId) -> Result<(), Violation> {
        let Some(raft) = self.raft_mut(id) else { return Ok(()) };
        let before = (raft.role(), raft.term());
        raft.campaign_now();
        self.note_role_change(id, before);
        self.check(id)
    }

    /// Delivers a message to its node, whatever writes it has under way (a
    /// real node's core goes on while its log writer syncs). If the node is
    /// down the message is lost, or, as a real sender's queue keeps it while
    /// it reconnects, held for the node's next incarnation (`Network::hold`).
    pub fn deliver(&mut self, f: InFlight) -> Result<(), Violation> {
        let to = f.msg.to;
        let Some(node) = self.nodes.get_mut(&to) else { return Ok(()) };
        let restarts = node.restarts;
        let Some(raft) = node.raft.as_mut() else {
            self.net.hold(f, &mut self.rng);
            return Ok(());
        };
        if f.to_incarnation != restarts {
            self.stats.delivered_across_restart += 1;
        }
        if let (Body::InstallSnapshot { meta, .. }, Some(r)) = (&f.msg.body, raft.snapshot_receiving())
            && r.meta.index == meta.index
            && (r.from, r.leader_term) != (f.msg.from, f.msg.term)
        {
            self.stats.transfers_superseded += 1;
        }
        let m = f.msg;
        let before = (raft.role(), raft.term());
        if matches!(m.body, Body::ReadIndex { .. }) {
            self.sweep(to);
        }
        let text = self.trace.is_some().then(|| m.to_string());
        let result = self.raft_mut(to).expect("up").step(m);
        if let Some(text) = text {
            let suffix = match result {
                Ok(()) => String::new(),
                Err(why) => format!(" (dropped: {why:?})"),
            };
            self.note(|| format!("{text}{suffix}"));
        }
        self.note_role_change(to, before);
        self.check(to)
    }

    fn note_role_change(&mut self, id: NodeId, before: (Role, crate::raft::Term)) {
        let Some(raft) = self.raft(id) else { return };
        let after = (raft.role(), raft.term());
        if after != before {
            self.note(|| format!("  {id} is {} at term {}", after.0, after.1));
        }
    }

    pub fn propose(&mut self, id: NodeId, command: Vec<u8>) -> Result<Proposed, ProposeError> {
        match self.raft_mut(id) {
            Some(raft) => raft.propose(command),
            None => Err(ProposeError::NoLeader),
        }
    }

    /// Proposes `SET key value PX ms` at node `id`, stamped with its clock;
    /// returns the deadline that makes.
    pub fn propose_setpx(
        &mut self,
        id: NodeId,
        (client, seq): (u64, u64),
        key: &str,
        value: &str,
        ms: u64,
    ) -> Result<u64, ProposeError> {
        let Some(raft) = self.raft(id) else { return Err(ProposeError::NoLeader) };
        let leader = raft.role() == Role::Leader;
        let now = if leader { self.note_leader_clock(id) } else { self.wall(id) };
        let stamp = crate::kv::Stamp { ms: now, leader };
        self.propose(id, super::machine::command_setpx(client, seq, key, value, ms, stamp))?;
        Ok(now + ms)
    }

    pub fn read(&mut self, id: NodeId, ctx: u64, key: &str) -> Result<(), ReadError> {
        self.sweep(id);
        let floor = self.checker.applied_max();
        let node = self.nodes.get_mut(&id).ok_or(ReadError::NoLeader)?;
        match node.raft.as_mut() {
            Some(raft) => {
                raft.read_index(ctx)?;
                node.read_keys.insert(ctx, (key.to_string(), floor));
                Ok(())
            }
            None => Err(ReadError::NoLeader),
        }
    }

    // ---- carrying out Ready: now, and its write later ----

    /// Takes the node's `Ready`: sends what may leave at once, hands its
    /// write to the node's writer (queued: `persist` makes the oldest
    /// durable), applies the committed entries and serves reads. A Ready
    /// with a snapshot is carried out whole, after every write before it.
    pub fn take_ready(&mut self, id: NodeId) -> Result<bool, Violation> {
        let Some(node) = self.nodes.get_mut(&id) else { return Ok(false) };
        let Some(raft) = node.raft.as_mut() else { return Ok(false) };
        if !raft.has_ready() {
            return Ok(false);
        }
        if self.opts.apply_late > 0.0
            && !raft.has_ready_besides_applying()
            && self.rng.random_bool(self.opts.apply_late)
        {
            return Ok(false);
        }
        let mut rd = raft.ready();
        let whole = rd.snapshot.is_some() || !rd.snapshot_chunks.is_empty();
        let received = rd.snapshot_chunks.iter().rev().find(|c| c.done).map(|c| c.meta.index);
        let write = PendingWrite {
            writes: Disk::writes_for(&rd),
            persisted_messages: std::mem::take(&mut rd.persisted_messages),
            persist: rd.take_persist(),
        };
        node.pending.push_back(write);
        for m in std::mem::take(&mut rd.messages) {
            self.send(m);
        }
        if whole {
            while self.persist(id)? {}
        }
        self.apply(id, &mut rd)?;
        for command in std::mem::take(&mut rd.forward_failures) {
            if let Some((client, seq)) = super::machine::command_id(&command) {
                self.outcomes.push(Outcome::ForwardFailed { node: id, client, seq });
            }
        }
        if let Some(index) = received {
            self.check_received_snapshot(id, index);
        }
        self.compact_due(id);
        self.check(id)?;
        Ok(true)
    }

    /// Compacts to the snapshot taken at a multiple of `compact_every`,
    /// once no write is under way (the node's writer marks a snapshot after
    /// the writes before it).
    fn compact_due(&mut self, id: NodeId) {
        let Some(node) = self.nodes.get_mut(&id).filter(|n| n.raft.is_some() && n.pending.is_empty()) else { return };
        let Some((index, data)) = node.snapshot_due.take() else { return };
        if self.save_snapshot(id, index, data) {
            self.note(|| format!("  {id} compacted at {index}"));
        }
    }

    /// Saves `data`, the node's state machine at `index`, as its snapshot
    /// and tells the core, if no write is under way (the node's writer
    /// marks a snapshot after the writes before it) and it is newer than
    /// the snapshot on disk. The disk keeps the snapshot the core's log
    /// still starts at.
    fn save_snapshot(&mut self, id: NodeId, index: Index, data: Vec<u8>) -> bool {
        let Some(node) = self.nodes.get_mut(&id) else { return false };
        let Some(raft) = node.raft.as_mut() else { return false };
        if !node.pending.is_empty() || index <= node.disk.snapshot.as_ref().map_or(Index::ZERO, |(m, _)| m.index) {
            return false;
        }
        let Some(meta) = raft.snapshot_meta_at(index) else { return false };
        let core_at = raft.snapshot_index();
        node.disk.compact(meta, data, core_at);
        raft.compact(index);
        true
    }

    /// Makes the node's oldest write under way durable, sends what waited
    /// for it, and tells the core. Returns whether there was one.
    pub fn persist(&mut self, id: NodeId) -> Result<bool, Violation> {
        let Some(node) = self.nodes.get_mut(&id) else { return Ok(false) };
        if node.raft.is_none() {
            return Ok(false);
        }
        let Some(write) = node.pending.pop_front() else { return Ok(false) };
        let mut installed = None;
        for w in write.writes {
            if let super::disk::Write::Snapshot(meta) = &w {
                installed = Some(meta.clone());
            }
            node.disk.write(w).map_err(|e| format!("node {id} would stop: {e}"))?;
        }
        if let Some(meta) = installed {
            self.stats.snapshots_installed += 1;
            let data = &node.disk.snapshot.as_ref().expect("just written").1;
            node.machine = Machine::restore(data);
            assert_eq!(node.machine.applied, meta.index, "snapshot data and meta disagree");
            let text = format!("  {id} installed snapshot {}/{}", meta.index, meta.term);
            self.note(|| text);
        }
        for m in write.persisted_messages {
            self.send(m);
        }
        self.raft_mut(id).expect("up").persisted(write.persist);
        self.compact_due(id);
        self.check(id)?;
        Ok(true)
    }

    /// The last chunk of a snapshot is written: check the whole, as the
    /// node does before it lets the core install it.
    fn check_received_snapshot(&mut self, id: NodeId, index: Index) {
        let node = self.nodes.get_mut(&id).expect("exists");
        let verdict = match Machine::load(&node.disk.receiving) {
            Ok(m) if m.applied == index => Ok(()),
            Ok(m) => Err(format!("holds index {}, not {index}", m.applied)),
            Err(e) => Err(e),
        };
        let ok = verdict.is_ok();
        if ok {
            node.disk.set_aside_received(index);
        }
        node.raft.as_mut().expect("up").snapshot_received(ok);
        if let Err(e) = verdict {
            self.stats.snapshots_rejected += 1;
            self.note(|| format!("  {id} rejected snapshot {index}: {e}"));
        }
    }

    fn apply(&mut self, id: NodeId, rd: &mut Ready) -> Result<(), Violation> {
        let entries = std::mem::take(&mut rd.committed_entries);
        for e in &entries {
            self.checker.on_apply(id, e)?;
            let node = self.nodes.get_mut(&id).expect("exists");
            let applied = match &e.payload {
                Payload::Command(c) => node.machine.apply(e.index, c),
                _ => {
                    node.machine.skip(e.index);
                    None
                }
            };
            let every = self.opts.compact_every;
            if every > 0 && e.index.0 % every == 0 {
                node.snapshot_due = Some((e.index, node.machine.snapshot()));
            }
            if let Some(a) = applied {
                self.outcomes.push(Outcome::Applied {
                    node: id,
                    index: e.index,
                    client: a.client,
                    seq: a.seq,
                    result: a.result,
                });
            }
        }
        if !entries.is_empty() {
            // As the node does before any read at these entries is released.
            self.sweep(id);
        }
        match &entries[..] {
            [] => {}
            [e] => self.note(|| format!("  {id} applied {e}")),
            [first, .., last] => self.note(|| format!("  {id} applied {first} .. {last}")),
        }
        let node = self.nodes.get_mut(&id).expect("exists");
        node.reads_waiting.append(&mut rd.read_states);
        for ctx in rd.read_failures.drain(..) {
            node.read_keys.remove(&ctx);
            self.outcomes.push(Outcome::ReadFailed { node: id, ctx });
        }
        self.serve_reads(id)
    }

    fn serve_reads(&mut self, id: NodeId) -> Result<(), Violation> {
        let node = self.nodes.get_mut(&id).expect("exists");
        let applied = node.machine.applied;
        let (ready, waiting): (Vec<ReadState>, Vec<ReadState>) =
            node.reads_waiting.drain(..).partition(|r| r.index <= applied);
        node.reads_waiting = waiting;
        for r in ready {
            let Some((key, floor)) = node.read_keys.remove(&r.ctx) else { continue };
            if r.index < floor {
                return Err(format!(
                    "stale read: node {id} served read {} at index {}, but index {floor} was applied before it was asked",
                    r.ctx, r.index
                ));
            }
            let value = node.machine.get(&key, r.clock);
            self.outcomes.push(Outcome::Read { node: id, ctx: r.ctx, value });
        }
        Ok(())
    }

    /// Everything the node has to do, each write made durable at once.
    pub fn process(&mut self, id: NodeId) -> Result<bool, Violation> {
        let mut any = false;
        while self.persist(id)? {
            any = true;
        }
        while self.take_ready(id)? {
            while self.persist(id)? {}
            any = true;
        }
        Ok(any)
    }

    fn send(&mut self, mut m: Message) {
        if let Body::InstallSnapshot { .. } = m.body
            && !self.fill_snapshot_chunk(&mut m)
        {
            return;
        }
        let to_incarnation = self.nodes.get(&m.to).map_or(0, |n| n.restarts);
        self.net.send(m, to_incarnation, &mut self.rng);
    }

    /// The leader's core asks for a chunk by offset; fill it in from the
    /// sender's snapshot, as the real node does from its snapshot file.
    fn fill_snapshot_chunk(&self, m: &mut Message) -> bool {
        let Body::InstallSnapshot { meta, offset, data, done } = &mut m.body else {
            return false;
        };
        let Some(bytes) = self.nodes.get(&m.from).and_then(|n| n.disk.snapshot_at(meta.index)) else {
            return false;
        };
        if *offset as usize > bytes.len() {
            return false;
        }
        let start = *offset as usize;
        let end = (start + self.opts.snapshot_chunk_bytes).min(bytes.len());
        *data = bytes[start..end].to_vec();
        *done = end == bytes.len();
        true
    }

    // ---- faults ----

    /// Crashes a node. A `Ready` that was taken but not yet made durable is
    /// lost except for a prefix of its writes, chosen by `rng`, as on a disk
    /// that had written some of a batch before power went.
    pub fn crash(&mut self, id: NodeId) {
        let writes = self.nodes.get(&id).map_or(0, |n| n.pending.iter().map(|w| w.writes.len()).sum());
        let kept = self.rng.random_range(0..=writes);
        self.crash_keeping(id, kept);
        // What the dead process had written to its sockets drains later than
        // its new process's first words, now and then (another reader thread
        // at the peer, a slow proxy).
        let hold = self.net.faults.hold;
        for f in self.net.in_flight.iter_mut().filter(|f| f.msg.from == id) {
            if self.rng.random_bool(hold) {
                f.deliver_at += self.rng.random_range(0..=20);
            }
        }
    }

    /// Crashes a node, keeping the first `kept` writes of a pending `Ready`.
    /// Messages on their way to it stay on their way: those due while it is
    /// down are lost or held for its next incarnation (`deliver`), and those
    /// due after it restarts reach the new process, as messages queued in a
    /// real sender do. Its own messages in flight still arrive.
    pub fn crash_keeping(&mut self, id: NodeId, kept: usize) {
        let Some(node) = self.nodes.get_mut(&id) else { return };
        if node.raft.is_none() {
            return;
        }
        let pending = std::mem::take(&mut node.pending);
        for w in pending.into_iter().flat_map(|p| p.writes).take(kept) {
            // A disagreement in what a crash keeps would have stopped the
            // node at its sync anyway; it is checked where writes persist.
            if node.disk.write(w).is_err() {
                break;
            }
        }
        if !node.disk.receiving.is_empty() {
            self.stats.crashes_mid_transfer += 1;
        }
        node.raft = None;
        node.sweep = crate::expiry::Sweep::default();
        node.reads_waiting.clear();
        node.read_keys.clear();
        node.machine = Machine::default();
        self.checker.forget(id);
        self.note(|| format!("  {id} crashed"));
    }

    pub fn restart(&mut self, id: NodeId) -> Result<(), Violation> {
        let Some(node) = self.nodes.get_mut(&id) else { return Ok(()) };
        if node.raft.is_some() {
            return Ok(());
        }
        node.restarts += 1;
        self.boot(id);
        self.note(|| format!("  {id} restarted"));
        self.check(id)
    }

    /// The node snapshots its state machine at what it applied, and
    /// compacts its log (a real node does this past a size threshold).
    pub fn compact(&mut self, id: NodeId) -> bool {
        let Some(node) = self.nodes.get(&id).filter(|n| n.raft.is_some() && n.pending.is_empty()) else {
            return false;
        };
        let (index, data) = (node.machine.applied, node.machine.snapshot());
        self.save_snapshot(id, index, data)
    }
}
