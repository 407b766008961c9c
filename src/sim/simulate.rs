//! The randomized simulator. One seed decides everything: the cluster size,
//! the fault rates, the workload and every choice along the way, so a failing
//! run replays exactly from its seed.
//!
//! A run has two phases (TigerBeetle's VOPR does the same):
//! 1. safety: clients write, compare-and-set and read while the network loses,
//!    duplicates, delays and partitions messages and nodes crash (losing
//!    unsynced writes), restart and compact; every Raft safety property is
//!    checked after every step;
//! 2. liveness: the network heals and every node comes back; within a bounded
//!    number of ticks a leader must be elected and a new command must be
//!    applied by every node.
//!
//! Afterwards the clients' history is checked for linearizability.

use std::collections::BTreeMap;

use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};

use super::cluster::{Admin, Clocks, Cluster, Outcome, SimOptions, TICK_MS};
use super::machine::{command_cas, command_set};
use super::network::Faults;
use crate::raft::{Addrs, MembershipChange, NodeId, PlantedBug};

/// What a run is made of, all derived from the seed.
#[derive(Clone, Debug)]
pub struct Plan {
    pub seed: u64,
    pub size: usize,
    pub faults: Faults,
    pub crash_probability: f64,
    /// Per tick, crash or isolate whichever node leads: leader churn leaves
    /// the divergent minority logs that figure 8 is made of.
    pub leader_fault_probability: f64,
    /// Of those leader faults, the share that crash it (the rest isolate it).
    pub leader_fault_crash_share: f64,
    pub restart_probability: f64,
    pub partition_probability: f64,
    pub compact_probability: f64,
    /// Every node snapshots at each multiple of this index (0: never).
    pub compact_every: u64,
    /// The largest snapshot chunk in bytes.
    pub snapshot_chunk_bytes: usize,
    /// A taken `Ready` is made durable at once with this probability;
    /// otherwise a crash may fall between its two phases.
    pub persist_at_once_probability: f64,
    pub clients: usize,
    pub keys: usize,
    pub safety_ticks: u64,
    pub liveness_ticks_max: u64,
    pub pre_vote: bool,
    pub check_quorum: bool,
    /// Small bounds make a new leader send old entries apart from its no-op,
    /// which is what the figure-8 scenario needs.
    pub append_entries_max: usize,
    pub inflight_appends_max: usize,
    pub planted_bug: Option<PlantedBug>,
    /// Per tick, ask the leader to add a node, remove one or hand over
    /// leadership.
    pub membership_probability: f64,
    /// Nodes started outside the configuration (as `--join` nodes), for
    /// membership changes to add.
    pub spares: usize,
    /// Probability that a client whose operation timed out keeps its
    /// connection (and so its node) for the next one, as a real client that
    /// got `-TIMEOUT` does; then its commands must take effect in order.
    pub stay_after_timeout: f64,
    /// Share of operations on keys with a deadline (`OpKind::WriteTtl`, and
    /// reads of those keys), checked by `super::expiry`.
    pub expiry_share: f64,
    /// How far the nodes' clocks stray (they decide expiry).
    pub clocks: Clocks,
    /// Committed entries a Ready hands out, and how often a node leaves
    /// them unapplied for a later event (`SimOptions::apply_late`).
    pub apply_entries_max: usize,
    pub apply_late: f64,
}

impl Plan {
    pub fn from_seed(seed: u64, planted_bug: Option<PlantedBug>) -> Plan {
        let mut plan = Plan::draw(seed, planted_bug);
        if planted_bug.is_some() {
            plan.hunt();
        }
        plan
    }

    /// When hunting a planted bug, narrow the draw to the fault mixes that
    /// expose the classic failures: leader churn, old entries sent apart from
    /// a new leader's no-op, and crashes between a write and its sync.
    fn hunt(&mut self) {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(self.seed ^ 0x4b75_6e74);
        self.size = [3, 3, 5][rng.random_range(0..3)];
        self.append_entries_max = 1;
        self.inflight_appends_max = rng.random_range(1..=2);
        self.leader_fault_probability = [0.02, 0.05, 0.1][rng.random_range(0..3)];
        self.crash_probability = [0.01, 0.03][rng.random_range(0..2)];
        self.restart_probability = 0.2;
        self.persist_at_once_probability = [0.3, 0.7][rng.random_range(0..2)];
        self.faults.drop = [0.0, 0.05][rng.random_range(0..2)];
        self.clients = 5;
        self.keys = 1;
        self.pre_vote = rng.random_bool(0.5);
        if self.planted_bug == Some(PlantedBug::SkipJointConsensus) {
            // Two spares to add at once, partitions to split old and new
            // configurations, and leaders isolated rather than crashed.
            self.size = 3;
            self.spares = 2;
            self.membership_probability = 0.05;
            self.partition_probability = 0.02;
            self.leader_fault_crash_share = 0.0;
        }
        if self.planted_bug == Some(PlantedBug::ReadIdsReused) {
            // A follower restarts while a read it forwarded waits for a slow
            // confirmation round, and the answer reaches its next process.
            self.faults.hold = 1.0;
            self.faults.delay_ticks_max = [5, 10][rng.random_range(0..2)];
            self.faults.drop = 0.1;
            self.crash_probability = 0.03;
            self.restart_probability = 0.5;
            self.leader_fault_probability = 0.0;
            self.keys = 1;
        }
        if self.planted_bug == Some(PlantedBug::ForwardQueueKept) {
            // A follower that takes a write and loses its leader in the same
            // breath, then leads for longer than its client waits, then
            // follows again; its client stays on the connection.
            self.crash_probability = 0.0;
            self.leader_fault_probability = 0.02;
            self.leader_fault_crash_share = 0.0;
            self.partition_probability = 0.01;
            self.stay_after_timeout = 1.0;
            self.keys = 2;
        }
        if self.planted_bug == Some(PlantedBug::SnapshotChunksByIndex) {
            // Followers that fall behind the leaders' snapshots, snapshots of
            // the same index on every node, and leaders that die while
            // sending one: the next leader sends the same snapshot.
            self.size = [3, 5][rng.random_range(0..2)];
            self.compact_every = [16, 32][rng.random_range(0..2)];
            // Snapshots of a few keys in several chunks each.
            self.snapshot_chunk_bytes = 4;
            self.keys = 3;
            self.compact_probability = 0.0;
            self.crash_probability = 0.03;
            self.restart_probability = 0.1;
            self.leader_fault_probability = 0.05;
            self.leader_fault_crash_share = 1.0;
            self.faults.drop = 0.05;
            self.faults.delay_ticks_max = 5;
        }
        // Expiry only where it is hunted, so the other hunts stay as they were.
        self.expiry_share = 0.0;
        if self.planted_bug == Some(PlantedBug::ReadClockIgnored) {
            // Reads at the leader just after a deadline, while its sweep
            // is on its way to a quorum.
            self.expiry_share = 0.8;
            self.clients = 5;
            self.faults.delay_ticks_max = [2, 5][rng.random_range(0..2)];
            self.leader_fault_probability = 0.0;
            self.crash_probability = 0.0;
        }
        if self.planted_bug == Some(PlantedBug::ReadWithoutQuorum) {
            // A stale read needs a leader that is cut off but alive, and
            // histories without crashes keep the check fast.
            self.crash_probability = 0.0;
            self.leader_fault_crash_share = 0.0;
            self.persist_at_once_probability = 1.0;
            // With perfect simulated clocks, check-quorum and the followers'
            // leases make a cut-off leader step down before anyone else can
            // lead, which hides the bug; real clocks drift.
            self.check_quorum = false;
            self.pre_vote = false;
        }
    }

    fn draw(seed: u64, planted_bug: Option<PlantedBug>) -> Plan {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
        let size = [3, 3, 5, 5, 7][rng.random_range(0..5)];
        // Fault mixes from calm to stormy, so both deep logs and chaos occur.
        let storm = rng.random_range(0..4);
        let faults = Faults {
            drop: [0.0, 0.02, 0.1, 0.25][storm],
            duplicate: [0.0, 0.02, 0.05, 0.1][rng.random_range(0..4)],
            delay_ticks_max: [1, 2, 5, 10][rng.random_range(0..4)],
            hold: 0.0,
            corrupt_snapshot: 0.0,
        };
        Plan {
            seed,
            size,
            faults,
            crash_probability: [0.0, 0.002, 0.01, 0.03][rng.random_range(0..4)],
            leader_fault_probability: [0.0, 0.0, 0.01, 0.05][rng.random_range(0..4)],
            leader_fault_crash_share: 0.5,
            restart_probability: 0.05,
            partition_probability: [0.0, 0.002, 0.01][rng.random_range(0..3)],
            compact_probability: [0.0, 0.005, 0.05][rng.random_range(0..3)],
            compact_every: 0,
            snapshot_chunk_bytes: 64,
            persist_at_once_probability: [1.0, 0.7, 0.3][rng.random_range(0..3)],
            clients: rng.random_range(1..=5),
            keys: rng.random_range(1..=3),
            safety_ticks: rng.random_range(300..1500),
            liveness_ticks_max: 600,
            pre_vote: rng.random_bool(0.8),
            check_quorum: true,
            append_entries_max: [1, 2, 8, 64][rng.random_range(0..4)],
            inflight_appends_max: [1, 4, 16][rng.random_range(0..3)],
            planted_bug,
            membership_probability: 0.0,
            spares: 0,
            stay_after_timeout: 0.0,
            expiry_share: 0.0,
            clocks: Clocks::default(),
            apply_entries_max: crate::config::APPLY_ENTRIES_MAX,
            apply_late: 0.0,
        }
        .with_membership_draw(&mut rng)
        .with_incarnation_draw(&mut rng)
        .with_compaction_draw(&mut rng)
        .with_expiry_draw(&mut rng)
        .with_apply_draw(&mut rng)
    }

    /// Applying in slices, left for later events (the node's core bounds
    /// the time a turn applies): drawn last of all.
    fn with_apply_draw(mut self, rng: &mut Xoshiro256PlusPlus) -> Plan {
        let max = crate::config::APPLY_ENTRIES_MAX;
        self.apply_entries_max = [max, max, 8, 2][rng.random_range(0..4)];
        self.apply_late = [0.0, 0.0, 0.3, 0.6][rng.random_range(0..4)];
        self
    }

    /// Keys with deadlines, and clocks off by up to 50 ms either way and up
    /// to 1% fast or slow: drawn last too.
    fn with_expiry_draw(mut self, rng: &mut Xoshiro256PlusPlus) -> Plan {
        self.expiry_share = [0.0, 0.0, 0.2, 0.5][rng.random_range(0..4)];
        if self.expiry_share > 0.0 {
            // The store's snapshot is kilobytes (as hex in the simulator's
            // text): small chunks would outlast the liveness phase. Seeds
            // without expiry keep the small chunks.
            self.snapshot_chunk_bytes = self.snapshot_chunk_bytes.max(1024);
        }
        self.clocks = Clocks {
            offset_ms_max: [0, 5, 50][rng.random_range(0..3)],
            drift_ppm_max: [0, 100, 10_000][rng.random_range(0..3)],
        };
        self
    }

    /// Drawn after everything else, so that adding it left the rest of each
    /// seed's plan as it was.
    fn with_membership_draw(mut self, rng: &mut Xoshiro256PlusPlus) -> Plan {
        self.membership_probability = [0.0, 0.0, 0.002, 0.01][rng.random_range(0..4)];
        self.spares = if self.membership_probability > 0.0 { rng.random_range(1..=2) } else { 0 };
        self
    }

    /// Messages that outlive a restart, damaged snapshot chunks, and how
    /// often a timed-out client stays on its connection: drawn last, too.
    fn with_incarnation_draw(mut self, rng: &mut Xoshiro256PlusPlus) -> Plan {
        self.faults.hold = [0.0, 0.5, 1.0][rng.random_range(0..3)];
        self.faults.corrupt_snapshot = [0.0, 0.0, 0.05][rng.random_range(0..3)];
        self.stay_after_timeout = [0.0, 0.5, 1.0][rng.random_range(0..3)];
        self
    }

    /// Compaction by count on every node at once (nodes then hold snapshots
    /// of the same index) and snapshots sent in many small chunks: drawn
    /// last as well.
    fn with_compaction_draw(mut self, rng: &mut Xoshiro256PlusPlus) -> Plan {
        self.compact_every = [0, 0, 0, 4, 16][rng.random_range(0..5)];
        self.snapshot_chunk_bytes = [64, 64, 16, 4][rng.random_range(0..4)];
        self
    }

    fn cluster(&self) -> Cluster {
        let started: Vec<NodeId> = (1..=(self.size + self.spares) as u64).map(NodeId).collect();
        Cluster::with_members(self.options(), &started, &started[..self.size])
    }

    /// One line describing the run, for failure reports.
    pub fn summary(&self) -> String {
        format!(
            "{} nodes (+{} spares), drop {} dup {} delay<={} hold {} corrupt {} crash {} leader-fault {} partition {} \
             compact {} every {} chunk {} membership {} persist-at-once {} prevote {} checkquorum {} append<={} inflight<={} clients {} \
             (stay {}) keys {} ticks {} expiry {} clocks ±{} ms ±{} ppm apply<={} late {}",
            self.size,
            self.spares,
            self.faults.drop,
            self.faults.duplicate,
            self.faults.delay_ticks_max,
            self.faults.hold,
            self.faults.corrupt_snapshot,
            self.crash_probability,
            self.leader_fault_probability,
            self.partition_probability,
            self.compact_probability,
            self.compact_every,
            self.snapshot_chunk_bytes,
            self.membership_probability,
            self.persist_at_once_probability,
            self.pre_vote,
            self.check_quorum,
            self.append_entries_max,
            self.inflight_appends_max,
            self.clients,
            self.stay_after_timeout,
            self.keys,
            self.safety_ticks,
            self.expiry_share,
            self.clocks.offset_ms_max,
            self.clocks.drift_ppm_max,
            self.apply_entries_max,
            self.apply_late
        )
    }

    fn options(&self) -> SimOptions {
        let mut opts = SimOptions::new(self.size, self.seed);
        opts.faults = self.faults;
        opts.pre_vote = self.pre_vote;
        opts.check_quorum = self.check_quorum;
        opts.planted_bug = self.planted_bug;
        opts.append_entries_max = self.append_entries_max;
        opts.compact_every = self.compact_every;
        opts.snapshot_chunk_bytes = self.snapshot_chunk_bytes;
        opts.inflight_appends_max = self.inflight_appends_max;
        // Elections must outlast a round trip even at the longest delay.
        opts.election_ticks_min = 10 + 2 * self.faults.delay_ticks_max;
        opts.election_ticks_max = 2 * opts.election_ticks_min;
        opts.heartbeat_ticks = 3;
        opts.expiry = self.expiry_share > 0.0;
        opts.clocks = self.clocks;
        opts.apply_entries_max = self.apply_entries_max;
        opts.apply_late = self.apply_late;
        opts
    }
}

/// A client operation and what came of it, in simulator ticks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Op {
    pub client: u64,
    pub key: String,
    pub kind: OpKind,
    pub invoked: u64,
    /// `None` while in flight, and forever for an unknown outcome.
    pub completed: Option<u64>,
    pub result: OpResult,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OpKind {
    Read,
    Write(String),
    Cas(Option<String>, String),
    /// `SET key value PX px` on a key written only this once; `deadline` is
    /// what the proposing node's clock made of it (ms).
    WriteTtl {
        value: String,
        px: u64,
        deadline: u64,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OpResult {
    Pending,
    /// Definitely not applied.
    Failed,
    /// May or may not have been applied.
    Unknown,
    /// Reads: the value; CAS: "1" or "0"; writes: "OK".
    Ok(Option<String>),
}

#[derive(Clone, Debug)]
pub struct Report {
    pub plan: Plan,
    pub ops: Vec<Op>,
    pub committed: usize,
    pub messages_sent: u64,
    pub stats: super::cluster::Stats,
    /// Every event, when the run was traced.
    pub trace: Vec<String>,
}

#[derive(Clone, Debug)]
pub struct Failure {
    pub seed: u64,
    pub plan: String,
    pub planted_bug: Option<PlantedBug>,
    pub what: String,
    pub at_tick: u64,
    /// The last lines of the trace, when the run was traced.
    pub trace_tail: Vec<String>,
}

impl Failure {
    /// The command that replays this run with a full trace.
    pub fn replay_command(&self) -> String {
        let bug = self.planted_bug.map_or(String::new(), |b| format!(" --bug {b:?}"));
        format!("cargo run --release --bin sim -- --seed {:#x}{bug} --trace", self.seed)
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "seed {:#x} failed at tick {}: {}", self.seed, self.at_tick, self.what)?;
        writeln!(f, "plan: {}", self.plan)?;
        for line in &self.trace_tail {
            writeln!(f, "  | {line}")?;
        }
        write!(f, "replay: {}", self.replay_command())
    }
}

/// A client with at most one operation in flight. `id` names it in the
/// history (a new one after an unknown outcome, since the old operation may
/// still take effect while the next runs); `conn` is its connection, whose
/// commands carry `conn#seq` and must take effect in the order sent.
struct Client {
    id: u64,
    conn: u64,
    node: NodeId,
    op: Option<usize>,
    seq: u64,
    deadline: u64,
}

struct Run {
    plan: Plan,
    cluster: Cluster,
    rng: Xoshiro256PlusPlus,
    now: u64,
    clients: Vec<Client>,
    next_client_id: u64,
    ops: Vec<Op>,
    /// Read context -> op index.
    reads: BTreeMap<u64, usize>,
    next_value: u64,
    /// The index at which each (conn, seq) command was applied.
    applied: std::collections::HashMap<(u64, u64), crate::raft::Index>,
    /// The highest seq of each connection applied so far.
    applied_seq: std::collections::HashMap<u64, u64>,
    /// Keys written with a deadline, in order.
    expiring_keys: Vec<String>,
}

const OP_TIMEOUT_TICKS: u64 = 200;

/// Runs one seed and returns its client history whatever the outcome (for
/// debugging a failure).
pub fn run_with_ops(seed: u64, planted_bug: Option<PlantedBug>) -> (Vec<Op>, Option<String>) {
    let plan = Plan::from_seed(seed, planted_bug);
    let mut run = Run {
        rng: Xoshiro256PlusPlus::seed_from_u64(seed ^ 0x51_3a7e),
        cluster: plan.cluster(),
        now: 0,
        clients: Vec::new(),
        next_client_id: 1,
        ops: Vec::new(),
        reads: BTreeMap::new(),
        next_value: 1,
        applied: std::collections::HashMap::new(),
        applied_seq: std::collections::HashMap::new(),
        expiring_keys: Vec::new(),
        plan,
    };
    for _ in 0..run.plan.clients {
        let client = run.new_client();
        run.clients.push(client);
    }
    for _ in 0..run.plan.safety_ticks {
        if let Err(v) = run.step(true) {
            return (run.ops, Some(v));
        }
    }
    let err = run.liveness().err();
    run.finish_unknown();
    (run.ops, err)
}

/// Runs one seed. `trace` keeps every event (slow; for replays).
pub fn run(seed: u64, planted_bug: Option<PlantedBug>, trace: bool) -> Result<Report, Box<Failure>> {
    let plan = Plan::from_seed(seed, planted_bug);
    let mut cluster = plan.cluster();
    if trace {
        cluster.trace = Some(Vec::new());
    }
    let mut run = Run {
        rng: Xoshiro256PlusPlus::seed_from_u64(seed ^ 0x51_3a7e),
        cluster,
        now: 0,
        clients: Vec::new(),
        next_client_id: 1,
        ops: Vec::new(),
        reads: BTreeMap::new(),
        next_value: 1,
        applied: std::collections::HashMap::new(),
        applied_seq: std::collections::HashMap::new(),
        expiring_keys: Vec::new(),
        plan,
    };
    for _ in 0..run.plan.clients {
        let client = run.new_client();
        run.clients.push(client);
    }
    let fail = |run: &mut Run, what: String| -> Box<Failure> {
        // SIM_TRACE_LINES=N keeps more of the trace (the default is its end).
        let keep = std::env::var("SIM_TRACE_LINES").ok().and_then(|v| v.parse().ok()).unwrap_or(60);
        let trace_tail =
            run.cluster.trace.as_ref().map_or(Vec::new(), |t| t.iter().rev().take(keep).rev().cloned().collect());
        Box::new(Failure { seed, plan: run.plan.summary(), planted_bug, what, at_tick: run.now, trace_tail })
    };
    for _ in 0..run.plan.safety_ticks {
        if let Err(v) = run.step(true) {
            return Err(fail(&mut run, v));
        }
    }
    if let Err(v) = run.liveness() {
        return Err(fail(&mut run, v));
    }
    run.finish_unknown();
    if let Err(v) = check_history(&run.ops) {
        return Err(fail(&mut run, v));
    }
    if let Err(v) = super::expiry::check(&run.ops, &run.cluster.leader_clocks) {
        return Err(fail(&mut run, v));
    }
    Ok(Report {
        committed: run.cluster.checker.committed_count(),
        messages_sent: run.cluster.net.sent,
        stats: run.cluster.stats.clone(),
        trace: run.cluster.trace.take().unwrap_or_default(),
        ops: run.ops,
        plan: run.plan,
    })
}

/// The clients' history, checked for linearizability (reads included: they
/// were served by read index, so they must be linearizable too).
/// The history in the checker's terms.
/// Keys with a deadline are left out: `super::expiry` checks them.
pub fn to_lincheck(ops: &[Op]) -> Vec<crate::lincheck::Op> {
    use crate::lincheck::{self, Call, Outcome as LinOutcome, Ret};
    ops.iter()
        .filter(|op| !super::expiry::is_expiring(&op.key))
        .map(|op| {
            let call = match &op.kind {
                OpKind::Read => Call::Read,
                OpKind::Write(v) => Call::Write(v.clone().into_bytes()),
                // The simulator's CAS on an absent key expects "-" as text;
                // no value is ever "-", so it simply never matches.
                OpKind::Cas(e, n) => Call::Cas {
                    expected: e.clone().unwrap_or_else(|| "-".into()).into_bytes(),
                    new: n.clone().into_bytes(),
                },
                OpKind::WriteTtl { .. } => unreachable!("filtered out above"),
            };
            let outcome = match (&op.result, &op.kind) {
                (OpResult::Failed, _) => LinOutcome::Failed,
                (OpResult::Unknown | OpResult::Pending, _) => LinOutcome::Unknown,
                (OpResult::Ok(v), OpKind::Read) => LinOutcome::Ok(Ret::Value(v.clone().map(String::into_bytes))),
                (OpResult::Ok(_), OpKind::Write(_) | OpKind::WriteTtl { .. }) => LinOutcome::Ok(Ret::Done),
                (OpResult::Ok(r), OpKind::Cas(..)) => LinOutcome::Ok(Ret::Bool(r.as_deref() == Some("1"))),
            };
            lincheck::Op {
                client: op.client,
                key: op.key.clone().into_bytes(),
                call,
                invoked: op.invoked,
                completed: op.completed.unwrap_or(u64::MAX),
                outcome,
            }
        })
        .collect()
}

fn check_history(ops: &[Op]) -> Result<(), String> {
    use crate::lincheck::{self, Budget, Verdict};
    let history = to_lincheck(ops);
    match lincheck::check(&history, Budget::default()) {
        Ok(Verdict::Linearizable) => Ok(()),
        Ok(Verdict::NotLinearizable { key, minimal }) => Err(format!(
            "linearizability: key {} has no linearization; smallest failing sub-history:\n{}",
            lincheck::show(&key),
            lincheck::render(&minimal)
        )),
        Ok(Verdict::Undecided { key }) => {
            Err(format!("linearizability check ran out of budget on key {}", lincheck::show(&key)))
        }
        Err(e) => Err(format!("the simulator recorded a {e}")),
    }
}

impl Run {
    fn new_client(&mut self) -> Client {
        let id = self.next_client_id;
        self.next_client_id += 1;
        let node = NodeId(self.rng.random_range(1..=self.plan.size as u64));
        Client { id, conn: id, node, op: None, seq: 0, deadline: 0 }
    }

    /// The same connection under a new name in the history.
    fn same_connection(&mut self, c: usize) -> Client {
        let id = self.next_client_id;
        self.next_client_id += 1;
        let old = &self.clients[c];
        Client { id, conn: old.conn, node: old.node, op: None, seq: old.seq, deadline: 0 }
    }

    fn note(&mut self, line: String) {
        if let Some(t) = &mut self.cluster.trace {
            t.push(line);
        }
    }

    /// One tick of simulated time.
    fn step(&mut self, faults: bool) -> Result<(), String> {
        self.now += 1;
        self.cluster.net.now = self.now;
        if self.cluster.trace.is_some() {
            let line = format!("-- tick {}", self.now);
            self.note(line);
        }
        for f in self.cluster.net.take_due() {
            self.cluster.deliver(f)?;
        }
        for id in self.cluster.up_ids() {
            self.cluster.tick(id)?;
        }
        self.process_nodes()?;
        if faults {
            self.inject_faults()?;
        }
        self.drive_clients();
        self.collect_outcomes()
    }

    /// Each node carries out its Ready; its writes become durable later,
    /// in order, as a node's log writer thread makes them (so a crash may
    /// fall while several are under way, and messages are stepped meanwhile).
    fn process_nodes(&mut self) -> Result<(), String> {
        for id in self.cluster.up_ids() {
            if self.cluster.nodes[&id].has_pending() && self.rng.random_bool(0.7) {
                self.cluster.persist(id)?;
            }
            if self.cluster.take_ready(id)? && self.rng.random_bool(self.plan.persist_at_once_probability) {
                while self.cluster.persist(id)? {}
            }
        }
        Ok(())
    }

    fn inject_faults(&mut self) -> Result<(), String> {
        let ids: Vec<NodeId> = self.cluster.nodes.keys().copied().collect();
        let pick = ids[self.rng.random_range(0..ids.len())];
        if self.rng.random_bool(self.plan.crash_probability) {
            self.cluster.crash(pick);
        }
        // Snapshot transfers are short; a node holding part of one crashes
        // more often, so that installs cut short are exercised.
        let receiving: Vec<NodeId> = ids
            .iter()
            .copied()
            .filter(|id| self.cluster.nodes[id].is_up() && !self.cluster.nodes[id].disk.receiving.is_empty())
            .collect();
        if !receiving.is_empty() && self.rng.random_bool((self.plan.crash_probability * 20.0).min(1.0)) {
            let id = receiving[self.rng.random_range(0..receiving.len())];
            self.note(format!("  {id} crashes while receiving a snapshot"));
            self.cluster.crash(id);
        }
        let down: Vec<NodeId> = ids.iter().copied().filter(|id| !self.cluster.nodes[id].is_up()).collect();
        if !down.is_empty() && self.rng.random_bool(self.plan.restart_probability) {
            let id = down[self.rng.random_range(0..down.len())];
            self.cluster.restart(id)?;
        }
        if self.rng.random_bool(self.plan.partition_probability) {
            self.partition(&ids);
        }
        if self.rng.random_bool(self.plan.leader_fault_probability)
            && let Some(&leader) = self.cluster.leaders().first()
        {
            if self.rng.random_bool(self.plan.leader_fault_crash_share) {
                self.cluster.crash(leader);
            } else {
                let others: Vec<NodeId> = ids.iter().copied().filter(|&id| id != leader).collect();
                self.cluster.net.partition(&[leader], &others);
                self.note(format!("  leader {leader} isolated"));
            }
        }
        if self.rng.random_bool(self.plan.partition_probability * 3.0) {
            self.cluster.net.heal();
            self.note("  network healed".to_string());
        }
        if self.plan.membership_probability > 0.0 && self.rng.random_bool(self.plan.membership_probability) {
            self.change_membership(&ids)?;
        }
        if self.rng.random_bool(self.plan.compact_probability) && self.cluster.compact(pick) {
            self.note(format!("  {pick} compacted"));
        }
        Ok(())
    }

    /// A random split, sometimes one-way: each node lands on side A or B.
    fn partition(&mut self, ids: &[NodeId]) {
        let (a, b): (Vec<NodeId>, Vec<NodeId>) = ids.iter().partition(|_| self.rng.random_bool(0.5));
        if self.rng.random_bool(0.3) {
            for &x in &a {
                for &y in &b {
                    self.cluster.net.blocked.insert((x, y));
                }
            }
            self.note(format!("  one-way partition {a:?} -> {b:?} cut"));
        } else {
            self.cluster.net.partition(&a, &b);
            self.note(format!("  partition {a:?} / {b:?}"));
        }
    }

    fn drive_clients(&mut self) {
        for c in 0..self.clients.len() {
            let client = &self.clients[c];
            if let Some(op) = client.op {
                if self.now >= client.deadline {
                    // The client gives up: outcome unknown, and it moves on
                    // as a new client (its next operation may overlap this
                    // one), on the same connection or a new one.
                    self.ops[op].result = OpResult::Unknown;
                    self.clients[c] = if self.rng.random_bool(self.plan.stay_after_timeout) {
                        self.same_connection(c)
                    } else {
                        self.new_client()
                    };
                }
                continue;
            }
            if self.rng.random_bool(0.3) {
                self.start_op(c);
            }
        }
    }

    fn start_op(&mut self, c: usize) {
        let value = format!("v{}", self.next_value);
        self.next_value += 1;
        if self.plan.expiry_share > 0.0 && self.rng.random_bool(self.plan.expiry_share) {
            let (key, kind) = self.draw_expiry_op(value);
            return self.start(c, key, kind);
        }
        let key = format!("k{}", self.rng.random_range(0..self.plan.keys));
        let kind = match self.rng.random_range(0..10) {
            0..=3 => OpKind::Read,
            4..=7 => OpKind::Write(value),
            _ => {
                // Expect a value that was probably written, so CAS succeeds
                // sometimes.
                let recent = self.next_value.saturating_sub(self.rng.random_range(1..4));
                let expected = (recent > 1).then(|| format!("v{}", recent - 1));
                OpKind::Cas(expected, value)
            }
        };
        self.start(c, key, kind)
    }

    /// A new key with a deadline 10 ms to 1 s away, or a read of one of the
    /// last few such keys.
    fn draw_expiry_op(&mut self, value: String) -> (String, OpKind) {
        if self.expiring_keys.is_empty() || self.rng.random_bool(0.3) {
            let key = format!("{}{}", super::expiry::KEY_PREFIX, self.expiring_keys.len());
            self.expiring_keys.push(key.clone());
            let px = TICK_MS * self.rng.random_range(1..=100);
            return (key, OpKind::WriteTtl { value, px, deadline: 0 });
        }
        let recent = self.expiring_keys.len().saturating_sub(4);
        let key = self.expiring_keys[self.rng.random_range(recent..self.expiring_keys.len())].clone();
        (key, OpKind::Read)
    }

    fn start(&mut self, c: usize, key: String, kind: OpKind) {
        let client = &mut self.clients[c];
        client.seq += 1;
        let (client_id, conn, seq, node) = (client.id, client.conn, client.seq, client.node);
        let op_index = self.ops.len();
        self.ops.push(Op {
            client: client_id,
            key: key.clone(),
            kind: kind.clone(),
            invoked: self.now,
            completed: None,
            result: OpResult::Pending,
        });
        let accepted = match &kind {
            OpKind::Read => {
                let ctx = (conn << 32) | seq;
                self.reads.insert(ctx, op_index);
                self.cluster.read(node, ctx, &key).is_ok()
            }
            OpKind::Write(v) => self.cluster.propose(node, command_set(conn, seq, &key, v)).is_ok(),
            OpKind::Cas(e, n) => self.cluster.propose(node, command_cas(conn, seq, &key, e.as_deref(), n)).is_ok(),
            OpKind::WriteTtl { value, px, .. } => match self.cluster.propose_setpx(node, (conn, seq), &key, value, *px)
            {
                Ok(at) => {
                    if let OpKind::WriteTtl { deadline, .. } = &mut self.ops[op_index].kind {
                        *deadline = at;
                    }
                    true
                }
                Err(_) => false,
            },
        };
        if accepted {
            let client = &mut self.clients[c];
            client.op = Some(op_index);
            client.deadline = self.now + OP_TIMEOUT_TICKS;
        } else {
            self.complete(op_index, OpResult::Failed);
            // A client of a node that knows no leader tries another node.
            self.clients[c].node = NodeId(self.rng.random_range(1..=self.plan.size as u64));
        }
    }

    fn complete(&mut self, op: usize, result: OpResult) {
        self.ops[op].completed = Some(self.now);
        self.ops[op].result = result;
    }

    fn collect_outcomes(&mut self) -> Result<(), String> {
        for o in std::mem::take(&mut self.cluster.outcomes) {
            let (node, done) = match o {
                Outcome::Applied { node, index, client, seq, result } => {
                    self.check_applied_once_in_order(node, index, client, seq)?;
                    let Some(c) = self.clients.iter().position(|c| c.conn == client && c.seq == seq) else {
                        continue;
                    };
                    (node, Some((c, OpResult::Ok(Some(result)))))
                }
                Outcome::ForwardFailed { node, client, seq } => {
                    let c = self.clients.iter().position(|c| c.conn == client && c.seq == seq);
                    (node, c.map(|c| (c, OpResult::Failed)))
                }
                Outcome::Read { node, ctx, value } => {
                    let c = self.reads.remove(&ctx).and_then(|op| self.client_of(op));
                    (node, c.map(|c| (c, OpResult::Ok(value))))
                }
                Outcome::ReadFailed { node, ctx } => {
                    let c = self.reads.remove(&ctx).and_then(|op| self.client_of(op));
                    (node, c.map(|c| (c, OpResult::Failed)))
                }
            };
            let Some((c, result)) = done else { continue };
            // Only the node the client talks to answers it.
            if self.clients[c].node != node {
                continue;
            }
            let Some(op) = self.clients[c].op.take() else { continue };
            self.complete(op, result);
        }
        self.abandon_clients_of_crashed_nodes();
        Ok(())
    }

    /// A node re-applies its log after a restart, at the same indexes; the
    /// same command at two indexes is a duplicate. A connection's commands
    /// take effect in the order it sent them (the documented per-connection order),
    /// whatever became of the ones it gave up on.
    fn check_applied_once_in_order(
        &mut self,
        node: NodeId,
        index: crate::raft::Index,
        conn: u64,
        seq: u64,
    ) -> Result<(), String> {
        match self.applied.entry((conn, seq)) {
            std::collections::hash_map::Entry::Occupied(first) if *first.get() != index => Err(format!(
                "at-most-once: command {conn}#{seq} applied at {} and again at {index} (node {node})",
                first.get()
            )),
            std::collections::hash_map::Entry::Occupied(_) => Ok(()),
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(index);
                let highest = self.applied_seq.entry(conn).or_insert(0);
                if seq < *highest {
                    return Err(format!(
                        "per-connection order: command {conn}#{seq} applied at {index}, after {conn}#{} which was sent \
                         after it",
                        *highest
                    ));
                }
                *highest = seq;
                Ok(())
            }
        }
    }

    fn client_of(&self, op: usize) -> Option<usize> {
        self.clients.iter().position(|c| c.op == Some(op))
    }

    /// A client whose node crashed never hears back: unknown outcome.
    fn abandon_clients_of_crashed_nodes(&mut self) {
        for c in 0..self.clients.len() {
            let client = &self.clients[c];
            if let Some(op) = client.op.filter(|_| !self.cluster.nodes[&client.node].is_up()) {
                self.ops[op].result = OpResult::Unknown;
                self.clients[c] = self.new_client();
            }
        }
    }

    /// Heal everything, then require a leader and a command applied by all.
    /// Asks whichever node leads to add a node that is not a voter, remove
    /// a voter (never below three), or hand leadership to another voter.
    fn change_membership(&mut self, ids: &[NodeId]) -> Result<(), String> {
        let Some(&leader) = self.cluster.leaders().first() else { return Ok(()) };
        let Some(membership) = self.cluster.raft(leader).map(|r| r.membership().clone()) else { return Ok(()) };
        let voters: Vec<NodeId> = membership.voters.iter().copied().collect();
        let others: Vec<NodeId> = ids.iter().copied().filter(|id| !membership.voters.contains(id)).collect();
        let change = match self.rng.random_range(0..3) {
            0 if !others.is_empty() => {
                // The planted bug adds the target and the next id at once.
                let skip = self.plan.planted_bug == Some(PlantedBug::SkipJointConsensus);
                let id = if skip { others[0] } else { others[self.rng.random_range(0..others.len())] };
                Admin::Change(MembershipChange::AddVoter { id, addrs: Addrs::default() })
            }
            1 if voters.len() > 3 => {
                Admin::Change(MembershipChange::Remove { id: voters[self.rng.random_range(0..voters.len())] })
            }
            _ => Admin::Transfer(voters[self.rng.random_range(0..voters.len())]),
        };
        self.cluster.admin(leader, change)?;
        Ok(())
    }

    fn liveness(&mut self) -> Result<(), String> {
        self.cluster.net.heal();
        self.cluster.net.faults = Faults::NONE;
        let ids: Vec<NodeId> = self.cluster.nodes.keys().copied().collect();
        for &id in &ids {
            self.cluster.restart(id)?;
        }
        self.note("  liveness phase: healed, all nodes up".to_string());
        let start = self.now;
        let mut proposed_to: Option<NodeId> = None;
        while self.now - start < self.plan.liveness_ticks_max {
            self.step(false)?;
            if let [leader] = self.cluster.leaders()[..] {
                // Propose once to each new leader: an earlier proposal may
                // have been lost with its leadership.
                if proposed_to != Some(leader)
                    && self.cluster.propose(leader, command_set(0, self.now, "liveness", "ok")).is_ok()
                {
                    proposed_to = Some(leader);
                }
            }
            // Every member of the leader's configuration applies it; nodes
            // removed, or never added, are not expected to.
            let members = match self.cluster.leaders()[..] {
                [leader] => self.cluster.raft(leader).map(|r| r.membership().members()),
                _ => None,
            };
            if let Some(members) = members
                && members
                    .iter()
                    .all(|id| self.cluster.nodes.get(id).is_some_and(|n| n.machine.map.contains_key("liveness")))
            {
                return Ok(());
            }
        }
        let states: Vec<String> = ids
            .iter()
            .map(|id| match self.cluster.raft(*id) {
                Some(r) => {
                    let s = r.status();
                    format!("{id}:{} t{} commit={} last={}", s.role, s.term, s.committed, s.last_index)
                }
                None => format!("{id}:down"),
            })
            .collect();
        Err(format!(
            "liveness: no command applied by every node within {} ticks of healing ({})",
            self.plan.liveness_ticks_max,
            states.join(", ")
        ))
    }

    fn finish_unknown(&mut self) {
        for op in &mut self.ops {
            if op.result == OpResult::Pending {
                op.result = OpResult::Unknown;
            }
        }
    }
}
