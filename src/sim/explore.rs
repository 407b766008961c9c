//! The bounded model checker: a breadth-first search over every interleaving
//! of events in a small cluster (in the style of DSLabs' model checker),
//! checking the same invariants as the simulator after every event and
//! returning the shortest sequence of events that breaks one.
//!
//! Events: deliver any message in flight (and handle it, writing and sending
//! what that produces), deliver it and crash before the write is durable,
//! drop it, duplicate it, time a node out, make a leader heartbeat, propose a
//! command at a leader, ask a read at any node, crash or restart a node. A
//! crash keeps the messages on their way to the node: they may reach its
//! next process, as a real sender's queue delivers them after a restart. States that agree on every
//! node's protocol state, disk, the messages in flight, the remaining
//! budgets and the checker's memory of the past are explored once.
//!
//! Bounds keep the space finite: depth, terms, messages in flight, and a
//! budget for each kind of fault. What lies beyond them is not explored.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hash, Hasher};

use super::hash::{FastHasher, hash_of};

use super::checker::Violation;
use super::cluster::{Cluster, SimOptions};
use super::disk::Disk;
use super::machine::command_set;
use crate::raft::{Entry, HardState, Index, Message, NodeId, Payload, PlantedBug, Role, Term};

#[derive(Clone, Debug)]
pub struct Bounds {
    pub nodes: usize,
    pub depth_max: usize,
    pub term_max: u64,
    pub in_flight_max: usize,
    pub crashes: u8,
    pub drops: u8,
    pub duplicates: u8,
    pub proposals: u8,
    /// Read-index reads asked at any node that knows a leader.
    pub reads: u8,
    /// Deliveries whose write a node leaves under way (its log writer syncs
    /// later; `Persist` events make the oldest durable): the core goes on
    /// stepping in between.
    pub async_writes: u8,
    pub heartbeats: bool,
    pub states_max: usize,
    pub pre_vote: bool,
    pub append_entries_max: usize,
    pub planted_bug: Option<PlantedBug>,
    pub start: Start,
}

/// Where the search begins.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start {
    /// Three empty nodes that have never elected anyone.
    Fresh,
    /// The divergent logs of the paper's figure 8 before step (c), on three
    /// nodes: 1/1 is on every node; node 1 led term 2 and holds 2/2 alone;
    /// node 2 led term 3 (with node 3's vote) and holds 2/3 alone. A leader
    /// of term 4 that replicates 2/2 to node 3 must not count it committed.
    Figure8,
    /// Node 1 leads term 1 and everyone holds and applied its no-op: the
    /// search spends its depth on what follows an election.
    Stable,
}

impl Bounds {
    /// Three nodes, deep enough for figure 8.
    pub fn figure8() -> Bounds {
        Bounds {
            nodes: 3,
            depth_max: 16,
            term_max: 5,
            in_flight_max: 5,
            crashes: 0,
            drops: 0,
            duplicates: 0,
            proposals: 0,
            reads: 0,
            async_writes: 0,
            heartbeats: false,
            states_max: 5_000_000,
            pre_vote: false,
            append_entries_max: 1,
            planted_bug: None,
            start: Start::Figure8,
        }
    }

    /// A stable three-node cluster where a follower crashes and restarts
    /// while reads it forwarded are in flight, and a write commits: deep
    /// enough for an answer meant for one process of a node to reach the
    /// next. No elections (term 1 is the last).
    pub fn reads_across_restart() -> Bounds {
        Bounds {
            nodes: 3,
            depth_max: 12,
            term_max: 1,
            in_flight_max: 5,
            crashes: 1,
            drops: 0,
            duplicates: 0,
            proposals: 1,
            reads: 2,
            async_writes: 0,
            heartbeats: false,
            states_max: 5_000_000,
            pre_vote: false,
            append_entries_max: 1,
            planted_bug: None,
            start: Start::Stable,
        }
    }

    /// A stable three-node cluster whose nodes' writes may stay under way
    /// while the core goes on (a log writer thread), with a crash and an
    /// election: deep enough for an entry committed before its leader's
    /// copy was durable to be lost.
    pub fn async_writes() -> Bounds {
        Bounds {
            nodes: 3,
            depth_max: 11,
            term_max: 2,
            in_flight_max: 5,
            crashes: 1,
            drops: 0,
            duplicates: 0,
            proposals: 1,
            reads: 0,
            async_writes: 2,
            heartbeats: false,
            states_max: 5_000_000,
            pre_vote: false,
            append_entries_max: 1,
            planted_bug: None,
            start: Start::Stable,
        }
    }

    /// Three fresh nodes, every kind of fault, shallower.
    pub fn fresh() -> Bounds {
        Bounds {
            nodes: 3,
            depth_max: 10,
            term_max: 3,
            in_flight_max: 4,
            crashes: 1,
            drops: 1,
            duplicates: 1,
            proposals: 1,
            reads: 0,
            async_writes: 0,
            heartbeats: true,
            states_max: 5_000_000,
            pre_vote: false,
            append_entries_max: 1,
            planted_bug: None,
            start: Start::Fresh,
        }
    }
}

/// One step of a path through the state space.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Event {
    /// Index into the state's in-flight messages, in canonical order.
    Deliver(usize),
    DeliverThenCrash(usize),
    /// Deliver, carry out the Ready, leave its write under way.
    DeliverAsync(usize),
    /// The node's oldest write under way becomes durable.
    Persist(NodeId),
    /// A client's write at the leader, whose write is left under way.
    ProposeAsync(NodeId),
    Drop(usize),
    Duplicate(usize),
    Timeout(NodeId),
    Heartbeat(NodeId),
    Propose(NodeId),
    Read(NodeId),
    Crash(NodeId),
    Restart(NodeId),
}

#[derive(Clone)]
struct State {
    cluster: Cluster,
    crashes: u8,
    drops: u8,
    duplicates: u8,
    proposals: u8,
    reads: u8,
    async_writes: u8,
}

/// What a search found.
#[derive(Debug)]
pub struct Outcome {
    pub states: usize,
    pub depth_reached: usize,
    /// True when `states_max` stopped the search before the depth bound.
    pub truncated: bool,
    /// The shortest path to a violation, one line per event, ending with it.
    pub violation: Option<Vec<String>>,
}

/// A depth-first search to the depth bound, exhaustive within it: a state is
/// expanded again only when reached by a shorter path. Memory is one state
/// per level plus a fingerprint per state seen, where a breadth-first
/// frontier of whole clusters would not fit. When a violation is found, the
/// search is repeated with bounds 1, 2, ... (iterative deepening) to find a
/// shortest path to one.
pub fn explore(bounds: &Bounds) -> Outcome {
    let (states, stop, path) = search(bounds, bounds.depth_max);
    match stop {
        Ok(()) => Outcome { states, depth_reached: bounds.depth_max, truncated: false, violation: None },
        Err(Stop::Budget) => Outcome { states, depth_reached: bounds.depth_max, truncated: true, violation: None },
        Err(Stop::Violation(v)) => {
            let (mut path, mut violation) = (path, v);
            for limit in 1..path.len() {
                if let (_, Err(Stop::Violation(v)), shorter) = search(bounds, limit) {
                    (path, violation) = (shorter, v);
                    break;
                }
            }
            Outcome {
                states,
                depth_reached: path.len(),
                truncated: false,
                violation: Some(replay(bounds, &path, &violation)),
            }
        }
    }
}

/// One exhaustive pass to `limit`: the states seen, how it stopped, and the
/// path to the violation if it found one.
fn search(bounds: &Bounds, limit: usize) -> (usize, Result<(), Stop>, Vec<Event>) {
    let mut search = Search { bounds, limit, seen: HashMap::default(), path: Vec::new() };
    let root = initial_state(bounds);
    let stop = search.visit(&root, 0);
    (search.seen.len(), stop, search.path)
}

enum Stop {
    Violation(Violation),
    Budget,
}

struct Search<'a> {
    bounds: &'a Bounds,
    limit: usize,
    /// Fingerprint -> the shallowest depth at which the state was reached.
    seen: HashMap<u64, u8, BuildHasherDefault<FastHasher>>,
    /// The events from the root to the state being expanded.
    path: Vec<Event>,
}

impl Search<'_> {
    /// Recursion depth is bounded by `limit` (at most `depth_max`).
    fn visit(&mut self, state: &State, depth: usize) -> Result<(), Stop> {
        if depth == self.limit {
            return Ok(());
        }
        for event in enabled(state, self.bounds) {
            let mut child = state.clone();
            self.path.push(event);
            apply(&mut child, event).map_err(Stop::Violation)?;
            let child_depth = (depth + 1) as u8;
            let fresh = child.cluster.net.in_flight.len() <= self.bounds.in_flight_max
                && match self.seen.entry(fingerprint(&child)) {
                    std::collections::hash_map::Entry::Occupied(mut e) if *e.get() > child_depth => {
                        e.insert(child_depth);
                        true
                    }
                    std::collections::hash_map::Entry::Occupied(_) => false,
                    std::collections::hash_map::Entry::Vacant(e) => {
                        e.insert(child_depth);
                        true
                    }
                };
            if fresh {
                if self.seen.len() >= self.bounds.states_max {
                    return Err(Stop::Budget);
                }
                self.visit(&child, depth + 1)?;
            }
            self.path.pop();
        }
        Ok(())
    }
}

fn initial_state(bounds: &Bounds) -> State {
    let mut opts = SimOptions::new(bounds.nodes, 0);
    opts.pre_vote = bounds.pre_vote;
    // Time moves only by events: no node times out or loses its lease by
    // itself, and a leader's tick is a heartbeat.
    opts.check_quorum = false;
    opts.heartbeat_ticks = 1;
    opts.election_ticks_min = 1_000_000;
    opts.election_ticks_max = 1_000_000;
    opts.append_entries_max = bounds.append_entries_max;
    opts.inflight_appends_max = 2;
    opts.planted_bug = bounds.planted_bug;
    let mut cluster = match bounds.start {
        Start::Fresh | Start::Stable => Cluster::new(opts),
        Start::Figure8 => figure8_cluster(opts),
    };
    if bounds.start == Start::Stable {
        settle_with_leader(&mut cluster, NodeId(1));
    }
    State {
        cluster,
        crashes: bounds.crashes,
        drops: bounds.drops,
        duplicates: bounds.duplicates,
        proposals: bounds.proposals,
        reads: bounds.reads,
        async_writes: bounds.async_writes,
    }
}

/// Elects `leader` and delivers everything until every node has applied its
/// no-op and heard that it is committed.
fn settle_with_leader(c: &mut Cluster, leader: NodeId) {
    c.campaign(leader).expect("a first election is safe");
    for _ in 0..100 {
        let mut moved = false;
        for id in c.up_ids() {
            moved |= c.process(id).expect("a first election is safe");
        }
        for f in std::mem::take(&mut c.net.in_flight) {
            moved = true;
            c.deliver(f).expect("a first election is safe");
        }
        if !moved {
            break;
        }
    }
    c.outcomes.clear();
    for id in c.up_ids() {
        let raft = c.raft(id).expect("up");
        assert!(raft.leader() == Some(leader) && raft.applied() == raft.committed(), "node {id} did not settle");
    }
}

fn figure8_cluster(opts: SimOptions) -> Cluster {
    assert_eq!(opts.size, 3, "the figure-8 start has three nodes");
    let entry = |index: u64, term: u64| Entry {
        index: Index(index),
        term: Term(term),
        payload: if index == 1 { Payload::Noop } else { Payload::command(format!("e{index}t{term}").into_bytes()) },
    };
    let disk = |entries: Vec<Entry>, term: u64, vote: u64| Disk {
        hard_state: HardState { term: Term(term), vote: Some(NodeId(vote)), commit: Index(1) },
        entries,
        ..Disk::default()
    };
    let ids = [NodeId(1), NodeId(2), NodeId(3)];
    let mut c = Cluster::with_members(opts, &[], &ids);
    c.add_node(NodeId(1), disk(vec![entry(1, 1), entry(2, 2)], 2, 1));
    c.add_node(NodeId(2), disk(vec![entry(1, 1), entry(2, 3)], 3, 2));
    c.add_node(NodeId(3), disk(vec![entry(1, 1)], 3, 2));
    for id in ids {
        c.check(id).expect("the figure-8 start is a valid state");
    }
    c
}

fn message_hash(m: &Message) -> u64 {
    hash_of(m)
}

/// Puts the messages in flight in a canonical order, so that equal
/// multisets hash equally and event indexes mean the same on replay.
fn normalize(cluster: &mut Cluster) {
    for f in cluster.net.in_flight.iter_mut() {
        f.deliver_at = 0;
    }
    cluster.net.in_flight.sort_by_cached_key(|f| message_hash(&f.msg));
}

fn fingerprint(state: &State) -> u64 {
    let mut h = FastHasher::default();
    for (id, node) in &state.cluster.nodes {
        id.hash(&mut h);
        match &node.raft {
            Some(raft) => raft.fingerprint(&mut h),
            None => 0u8.hash(&mut h),
        }
        node.disk.hash(&mut h);
        node.reads_fingerprint(&mut h);
    }
    for f in &state.cluster.net.in_flight {
        f.msg.hash(&mut h);
    }
    state.cluster.checker.fingerprint(&mut h);
    (state.crashes, state.drops, state.duplicates, state.proposals, state.reads, state.async_writes).hash(&mut h);
    h.finish()
}

fn enabled(state: &State, bounds: &Bounds) -> Vec<Event> {
    let c = &state.cluster;
    let mut events = Vec::new();
    let mut previous: Option<&Message> = None;
    for (k, f) in c.net.in_flight.iter().enumerate() {
        // Identical messages lead to identical states: try the first only.
        if previous == Some(&f.msg) {
            continue;
        }
        previous = Some(&f.msg);
        if c.raft(f.msg.to).is_none() {
            continue;
        }
        events.push(Event::Deliver(k));
        if state.crashes > 0 {
            events.push(Event::DeliverThenCrash(k));
        }
        if state.async_writes > 0 {
            events.push(Event::DeliverAsync(k));
        }
        if state.drops > 0 {
            events.push(Event::Drop(k));
        }
        if state.duplicates > 0 {
            events.push(Event::Duplicate(k));
        }
    }
    for (&id, node) in &c.nodes {
        let Some(raft) = &node.raft else {
            events.push(Event::Restart(id));
            continue;
        };
        if node.has_pending() {
            events.push(Event::Persist(id));
        }
        if raft.role() == Role::Leader {
            if bounds.heartbeats {
                events.push(Event::Heartbeat(id));
            }
            if state.proposals > 0 {
                events.push(Event::Propose(id));
                if state.async_writes > 0 {
                    events.push(Event::ProposeAsync(id));
                }
            }
        } else if raft.term() < Term(bounds.term_max) {
            events.push(Event::Timeout(id));
        }
        if state.reads > 0 && raft.leader().is_some() {
            events.push(Event::Read(id));
        }
        if state.crashes > 0 {
            events.push(Event::Crash(id));
        }
    }
    events
}

fn apply(state: &mut State, event: Event) -> Result<(), Violation> {
    let c = &mut state.cluster;
    match event {
        Event::DeliverAsync(k) => {
            state.async_writes -= 1;
            let flight = c.net.in_flight.remove(k);
            let to = flight.msg.to;
            c.deliver(flight)?;
            while c.take_ready(to)? {}
        }
        Event::Persist(id) => {
            c.persist(id)?;
        }
        Event::Deliver(k) | Event::DeliverThenCrash(k) | Event::Duplicate(k) => {
            let flight = if event == Event::Duplicate(k) {
                state.duplicates -= 1;
                c.net.in_flight[k].clone()
            } else {
                c.net.in_flight.remove(k)
            };
            let to = flight.msg.to;
            c.deliver(flight)?;
            if event == Event::DeliverThenCrash(k) {
                // The node's messages leave, then it dies before its write
                // is durable: exactly the window a persistence bug needs.
                state.crashes -= 1;
                c.take_ready(to)?;
                c.crash_keeping(to, 0);
            } else {
                c.process(to)?;
            }
        }
        Event::Drop(k) => {
            state.drops -= 1;
            c.net.in_flight.remove(k);
        }
        Event::Timeout(id) => {
            c.campaign(id)?;
            c.process(id)?;
        }
        Event::Heartbeat(id) => {
            c.tick(id)?;
            c.process(id)?;
        }
        Event::Propose(id) => {
            state.proposals -= 1;
            let seq = state.proposals as u64;
            let _ = c.propose(id, command_set(9, seq, "k", &format!("v{seq}")));
            c.process(id)?;
        }
        Event::ProposeAsync(id) => {
            state.proposals -= 1;
            state.async_writes -= 1;
            let seq = state.proposals as u64;
            let _ = c.propose(id, command_set(9, seq, "k", &format!("v{seq}")));
            while c.take_ready(id)? {}
        }
        Event::Read(id) => {
            state.reads -= 1;
            let _ = c.read(id, state.reads as u64, "k");
            c.process(id)?;
        }
        Event::Crash(id) => {
            state.crashes -= 1;
            c.crash_keeping(id, 0);
        }
        Event::Restart(id) => {
            c.restart(id)?;
            c.process(id)?;
        }
    }
    normalize(&mut state.cluster);
    Ok(())
}

fn describe(state: &State, event: Event) -> String {
    let msg = |k: usize| state.cluster.net.in_flight[k].msg.to_string();
    match event {
        Event::Deliver(k) => format!("deliver {}", msg(k)),
        Event::DeliverThenCrash(k) => format!(
            "deliver {}, then {} crashes before its write is durable",
            msg(k),
            state.cluster.net.in_flight[k].msg.to
        ),
        Event::DeliverAsync(k) => format!("deliver {}, the write it causes left under way", msg(k)),
        Event::Persist(id) => format!("node {id}'s oldest write under way becomes durable"),
        Event::Drop(k) => format!("drop {}", msg(k)),
        Event::Duplicate(k) => format!("duplicate {}", msg(k)),
        Event::Timeout(id) => format!("node {id} times out"),
        Event::Heartbeat(id) => format!("leader {id} heartbeats"),
        Event::Propose(id) => format!("client proposes at leader {id}"),
        Event::ProposeAsync(id) => format!("client proposes at leader {id}, its write left under way"),
        Event::Read(id) => format!("client asks a read at node {id}"),
        Event::Crash(id) => format!("node {id} crashes"),
        Event::Restart(id) => format!("node {id} restarts"),
    }
}

/// Replays a path from the start, describing each event.
fn replay(bounds: &Bounds, path: &[Event], violation: &str) -> Vec<String> {
    let mut state = initial_state(bounds);
    let mut lines = Vec::new();
    for (n, &event) in path.iter().enumerate() {
        lines.push(format!("{:>2}. {}", n + 1, describe(&state, event)));
        if let Err(v) = apply(&mut state, event) {
            lines.push(format!("    violation: {v}"));
            return lines;
        }
    }
    lines.push(format!("    violation (not reproduced on replay): {violation}"));
    lines
}
