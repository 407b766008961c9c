//! Scenario scripts: a text file of commands, each followed by the exact
//! output it must produce (in the spirit of etcd raft's datadriven
//! interaction tests). With `RAFTKV_REWRITE=1` the runner writes the actual
//! output back into the file instead, to be reviewed as a diff.
//!
//! ```text
//! # a comment, kept as is
//! campaign 1
//! ----
//!   1 is precandidate at term 0
//! ```
//!
//! Commands (ids are node ids; `all` means every node):
//!
//! | command | effect |
//! | --- | --- |
//! | `cluster size=N [prevote=B] [checkquorum=B] [election=MIN-MAX] [heartbeat=T] [maxappend=N] [chunk=BYTES] [hold=BYTES] [bug=NAME]` | a fresh cluster (`hold`: `Config::compaction_hold_bytes_max`) |
//! | `log ID T1 T2 ... [term=T]` | restarts a node with a log of entries of these terms (its term: T, or the last) |
//! | `campaign ID`, `tick ID\|all [N]` | election timeout now; N ticks |
//! | `propose ID TEXT`, `read ID CTX KEY` | a command; a read-index read |
//! | `deliver [from=ID] [to=ID] [drop\|corrupt]` | delivers (or drops) the messages now in flight; `corrupt` flips a bit of each snapshot chunk |
//! | `process ID\|all` | carries out each node's `Ready` |
//! | `run N` | N rounds of: every node ticks, works, and every message in flight arrives |
//! | `stabilize` | process and deliver until nothing moves |
//! | `partition IDS / IDS`, `isolate ID`, `cut FROM TO`, `heal` | network partitions (`cut`: one way) |
//! | `crash ID`, `restart ID`, `compact ID` | faults; a snapshot of the state machine |
//! | `transfer ID TARGET`, `add ID NEW`, `remove ID OLD` | leadership and membership |
//! | `inject FROM TO KIND [term=T] [...]` | a message a buggy peer sends: `heartbeat commit=I`, `heartbeatresp round=R`, `snapshot index=I snapterm=T`, `timeoutnow last=I`, `vote last=I/T` |
//! | `status [ID...]`, `entries ID` | prints state |

use std::fmt::Write as _;

use super::cluster::{Cluster, Outcome, SimOptions};
use super::disk::Disk;
use crate::raft::{Addrs, Entry, HardState, Index, MembershipChange, NodeId, Payload, PlantedBug, Term};

/// One block of a script file.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Item {
    Comment(String),
    Case { command: String, expected: Vec<String> },
}

fn parse(text: &str) -> Result<Vec<Item>, String> {
    let mut items = Vec::new();
    let mut lines = text.lines().enumerate().peekable();
    while let Some((n, line)) = lines.next() {
        if line.trim().is_empty() || line.starts_with('#') {
            items.push(Item::Comment(line.to_string()));
            continue;
        }
        match lines.next() {
            Some((_, "----")) => {}
            _ => return Err(format!("line {}: command {line:?} is not followed by ----", n + 1)),
        }
        let mut expected = Vec::new();
        while let Some((_, l)) = lines.peek() {
            if l.is_empty() {
                break;
            }
            expected.push(l.to_string());
            lines.next();
        }
        items.push(Item::Case { command: line.to_string(), expected });
    }
    Ok(items)
}

fn render(items: &[Item]) -> String {
    let mut out = String::new();
    for item in items {
        match item {
            Item::Comment(c) => {
                out.push_str(c);
                out.push('\n');
            }
            Item::Case { command, expected } => {
                out.push_str(command);
                out.push_str("\n----\n");
                for l in expected {
                    out.push_str(l);
                    out.push('\n');
                }
            }
        }
    }
    out
}

/// Runs a script. Returns the failures (command, expected, actual), or
/// rewrites the file when `rewrite` is set.
pub fn run_file(path: &std::path::Path, rewrite: bool) -> Result<(), String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut items = parse(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut runner = Runner { cluster: None };
    let mut failures = String::new();
    for item in items.iter_mut() {
        let Item::Case { command, expected } = item else { continue };
        let actual = runner.run(command).unwrap_or_else(|e| vec![format!("error: {e}")]);
        if actual != *expected {
            if rewrite {
                *expected = actual;
            } else {
                let _ = writeln!(
                    failures,
                    "{}: `{command}`\n--- expected\n{}\n--- actual\n{}\n",
                    path.display(),
                    expected.join("\n"),
                    actual.join("\n")
                );
            }
        }
    }
    if rewrite {
        std::fs::write(path, render(&items)).map_err(|e| e.to_string())?;
    }
    if failures.is_empty() { Ok(()) } else { Err(failures) }
}

struct Runner {
    cluster: Option<Cluster>,
}

fn arg<'a>(words: &'a [&str], key: &str) -> Option<&'a str> {
    words.iter().find_map(|w| w.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
}

fn id_of(word: Option<&&str>) -> Result<NodeId, String> {
    word.ok_or("missing node id")?.parse().map(NodeId).map_err(|e| format!("bad node id: {e}"))
}

fn flag(words: &[&str], key: &str, default: bool) -> Result<bool, String> {
    arg(words, key).map_or(Ok(default), |v| v.parse().map_err(|e| format!("{key}: {e}")))
}

impl Runner {
    fn cluster(&mut self) -> Result<&mut Cluster, String> {
        self.cluster.as_mut().ok_or_else(|| "no cluster yet".to_string())
    }

    fn ids(&mut self, word: Option<&&str>) -> Result<Vec<NodeId>, String> {
        match word {
            Some(&"all") | None => Ok(self.cluster()?.nodes.keys().copied().collect()),
            w => Ok(vec![id_of(w)?]),
        }
    }

    fn run(&mut self, command: &str) -> Result<Vec<String>, String> {
        let words: Vec<&str> = command.split_whitespace().collect();
        if let Some(c) = self.cluster.as_mut() {
            c.trace = Some(Vec::new());
            c.outcomes.clear();
        }
        let mut printed = Vec::new();
        match words[0] {
            "cluster" => self.new_cluster(&words)?,
            "log" => self.set_log(&words)?,
            _ => printed = self.run_on_cluster(&words)?,
        }
        let c = self.cluster()?;
        let mut out = c.trace.take().unwrap_or_default();
        for o in std::mem::take(&mut c.outcomes) {
            out.push(describe_outcome(&o));
        }
        out.extend(printed);
        Ok(out)
    }

    fn new_cluster(&mut self, words: &[&str]) -> Result<(), String> {
        let size: usize = arg(words, "size").ok_or("size= missing")?.parse().map_err(|e| format!("size: {e}"))?;
        let mut opts = SimOptions::new(size, 1);
        opts.pre_vote = flag(words, "prevote", true)?;
        opts.check_quorum = flag(words, "checkquorum", true)?;
        if let Some(range) = arg(words, "election") {
            let (lo, hi) = range.split_once('-').ok_or("election=MIN-MAX")?;
            opts.election_ticks_min = lo.parse().map_err(|e| format!("election: {e}"))?;
            opts.election_ticks_max = hi.parse().map_err(|e| format!("election: {e}"))?;
        }
        if let Some(h) = arg(words, "heartbeat") {
            opts.heartbeat_ticks = h.parse().map_err(|e| format!("heartbeat: {e}"))?;
        }
        if let Some(n) = arg(words, "maxappend") {
            opts.append_entries_max = n.parse().map_err(|e| format!("maxappend: {e}"))?;
        }
        if let Some(n) = arg(words, "chunk") {
            opts.snapshot_chunk_bytes = n.parse().map_err(|e| format!("chunk: {e}"))?;
        }
        if let Some(n) = arg(words, "hold") {
            opts.compaction_hold_bytes_max = n.parse().map_err(|e| format!("hold: {e}"))?;
        }
        if let Some(b) = arg(words, "bug") {
            opts.planted_bug = Some(parse_bug(b)?);
        }
        let mut cluster = Cluster::new(opts);
        cluster.trace = Some(Vec::new());
        self.cluster = Some(cluster);
        Ok(())
    }

    /// Gives a node a log of entries with the given terms, as if it had been
    /// written by earlier leaders, and restarts it from that disk.
    fn set_log(&mut self, words: &[&str]) -> Result<(), String> {
        let id = id_of(words.get(1))?;
        let terms: Vec<u64> = words[2..]
            .iter()
            .filter(|w| !w.starts_with("term="))
            .map(|w| w.parse().map_err(|e| format!("term: {e}")))
            .collect::<Result<_, _>>()?;
        let entries: Vec<Entry> = terms
            .iter()
            .enumerate()
            .map(|(i, &t)| Entry {
                index: Index(i as u64 + 1),
                term: Term(t),
                payload: Payload::command(format!("e{}t{t}", i + 1).into_bytes()),
            })
            .collect();
        let last_term = terms.iter().copied().max().unwrap_or(0);
        let term = match words.iter().find_map(|w| w.strip_prefix("term=")) {
            Some(t) => Term(t.parse().map_err(|e| format!("term: {e}"))?),
            None => Term(last_term),
        };
        let disk = Disk { hard_state: HardState { term, vote: None, commit: Index::ZERO }, entries, ..Disk::default() };
        let c = self.cluster()?;
        c.replace_node(id, disk);
        Ok(())
    }

    fn run_on_cluster(&mut self, words: &[&str]) -> Result<Vec<String>, String> {
        let mut printed = Vec::new();
        match words[0] {
            "campaign" => {
                let id = id_of(words.get(1))?;
                self.cluster()?.campaign(id)?;
            }
            "tick" => {
                let ids = self.ids(words.get(1))?;
                let n: u64 = words.get(2).map_or(Ok(1), |w| w.parse()).map_err(|e| format!("{e}"))?;
                let c = self.cluster()?;
                for _ in 0..n {
                    for &id in &ids {
                        c.tick(id)?;
                    }
                }
            }
            "propose" => {
                let id = id_of(words.get(1))?;
                let text = words[2..].join(" ");
                let result = self.cluster()?.propose(id, text.into_bytes());
                printed.push(format!("{result:?}"));
            }
            "read" => {
                let id = id_of(words.get(1))?;
                let ctx: u64 = words.get(2).ok_or("ctx")?.parse().map_err(|e| format!("{e}"))?;
                let key = words.get(3).ok_or("key")?;
                let result = self.cluster()?.read(id, ctx, key);
                printed.push(format!("{result:?}"));
            }
            "deliver" => self.deliver(words)?,
            "process" => {
                for id in self.ids(words.get(1))? {
                    self.cluster()?.process(id)?;
                }
            }
            "stabilize" => self.stabilize()?,
            "run" => {
                let n: u64 = words.get(1).ok_or("run N")?.parse().map_err(|e| format!("{e}"))?;
                for _ in 0..n {
                    self.run_round()?;
                }
            }
            "partition" => {
                let split = words.iter().position(|w| *w == "/").ok_or("partition A / B")?;
                let side = |ws: &[&str]| -> Result<Vec<NodeId>, String> { ws.iter().map(|w| id_of(Some(w))).collect() };
                let (a, b) = (side(&words[1..split])?, side(&words[split + 1..])?);
                self.cluster()?.net.partition(&a, &b);
            }
            "isolate" => {
                let id = id_of(words.get(1))?;
                let c = self.cluster()?;
                let others: Vec<NodeId> = c.nodes.keys().copied().filter(|&o| o != id).collect();
                c.net.partition(&[id], &others);
            }
            "cut" => {
                let (from, to) = (id_of(words.get(1))?, id_of(words.get(2))?);
                self.cluster()?.net.blocked.insert((from, to));
            }
            "heal" => self.cluster()?.net.heal(),
            "crash" => {
                let id = id_of(words.get(1))?;
                self.cluster()?.crash(id);
            }
            "restart" => {
                let id = id_of(words.get(1))?;
                self.cluster()?.restart(id)?;
            }
            "compact" => {
                let id = id_of(words.get(1))?;
                let done = self.cluster()?.compact(id);
                printed.push(format!("compacted: {done}"));
            }
            "transfer" | "add" | "remove" => printed.push(self.admin(words)?),
            "inject" => {
                let m = injected(words)?;
                let c = self.cluster()?;
                let to_incarnation = c.nodes.get(&m.to).map_or(0, |n| n.restarts);
                c.deliver(super::network::InFlight { msg: m, deliver_at: 0, to_incarnation, held_since: None })?;
            }
            "status" => {
                let ids = self.ids(words.get(1))?;
                for id in ids {
                    printed.push(self.describe_status(id)?);
                }
            }
            "entries" => {
                let id = id_of(words.get(1))?;
                let c = self.cluster()?;
                let raft = c.raft(id).ok_or("node is down")?;
                let entries: Vec<String> = raft.log_entries().map(|e| e.to_string()).collect();
                printed.push(format!("{id}: [{}]", entries.join(" ")));
            }
            other => return Err(format!("unknown command {other:?}")),
        }
        Ok(printed)
    }

    fn deliver(&mut self, words: &[&str]) -> Result<(), String> {
        let from = arg(words, "from").map(|w| id_of(Some(&w))).transpose()?;
        let to = arg(words, "to").map(|w| id_of(Some(&w))).transpose()?;
        let drop = words.contains(&"drop");
        let corrupt = words.contains(&"corrupt");
        let c = self.cluster()?;
        let in_flight = std::mem::take(&mut c.net.in_flight);
        let (chosen, rest): (Vec<_>, Vec<_>) = in_flight
            .into_iter()
            .partition(|f| from.is_none_or(|id| f.msg.from == id) && to.is_none_or(|id| f.msg.to == id));
        c.net.in_flight = rest;
        for mut f in chosen {
            if let crate::raft::Body::InstallSnapshot { data, .. } = &mut f.msg.body
                && corrupt
                && !data.is_empty()
            {
                data[0] ^= 1;
            }
            if drop || c.net.blocked.contains(&(f.msg.from, f.msg.to)) {
                let text = format!("{} (dropped)", f.msg);
                if let Some(t) = c.trace.as_mut() {
                    t.push(text);
                }
            } else {
                c.deliver(f)?;
            }
        }
        Ok(())
    }

    /// One tick everywhere, then every node's work and every message in
    /// flight: time passing on a fast network.
    fn run_round(&mut self) -> Result<(), String> {
        let c = self.cluster()?;
        for id in c.up_ids() {
            c.tick(id)?;
        }
        for id in c.up_ids() {
            c.process(id)?;
        }
        for f in std::mem::take(&mut c.net.in_flight) {
            if !c.net.blocked.contains(&(f.msg.from, f.msg.to)) {
                c.deliver(f)?;
            }
        }
        for id in c.up_ids() {
            c.process(id)?;
        }
        Ok(())
    }

    fn stabilize(&mut self) -> Result<(), String> {
        let c = self.cluster()?;
        for _ in 0..1000 {
            let mut moved = false;
            for id in c.up_ids() {
                moved |= c.process(id)?;
            }
            let in_flight = std::mem::take(&mut c.net.in_flight);
            for f in in_flight {
                moved = true;
                if c.net.blocked.contains(&(f.msg.from, f.msg.to)) {
                    continue;
                }
                c.deliver(f)?;
            }
            if !moved {
                return Ok(());
            }
        }
        Err("stabilize did not settle in 1000 rounds".into())
    }

    fn admin(&mut self, words: &[&str]) -> Result<String, String> {
        let id = id_of(words.get(1))?;
        let target = id_of(words.get(2))?;
        let c = self.cluster()?;
        if words[0] == "add" && !c.nodes.contains_key(&target) {
            c.add_node(target, Disk::default());
        }
        let raft = c.nodes.get_mut(&id).and_then(|n| n.raft.as_mut()).ok_or("node is down")?;
        let result = match words[0] {
            "transfer" => format!("{:?}", raft.transfer_leader(target)),
            "add" => format!(
                "{:?}",
                raft.change_membership(MembershipChange::AddVoter { id: target, addrs: Addrs::default() })
            ),
            _ => format!("{:?}", raft.change_membership(MembershipChange::Remove { id: target })),
        };
        c.check(id)?;
        Ok(result)
    }

    fn describe_status(&mut self, id: NodeId) -> Result<String, String> {
        let c = self.cluster()?;
        let Some(raft) = c.raft(id) else {
            return Ok(format!("{id}: down"));
        };
        let s = raft.status();
        Ok(format!(
            "{id}: {} term={} leader={} commit={} applied={} last={}/{} {}",
            s.role,
            s.term,
            s.leader.map_or(0, |l| l.0),
            s.committed,
            s.applied,
            s.last_index,
            s.last_term,
            s.membership
        ))
    }
}

/// A message as a buggy peer would send it (`inject`).
fn injected(words: &[&str]) -> Result<crate::raft::Message, String> {
    use crate::raft::{Body, Membership, Message, SnapshotMeta};
    let (from, to) = (id_of(words.get(1))?, id_of(words.get(2))?);
    let num = |key: &str, default: u64| -> Result<u64, String> {
        arg(words, key).map_or(Ok(default), |v| v.parse().map_err(|e| format!("{key}: {e}")))
    };
    let pair = |key: &str| -> Result<(Index, Term), String> {
        let v = arg(words, key).ok_or_else(|| format!("{key}=INDEX/TERM missing"))?;
        let (i, t) = v.split_once('/').ok_or_else(|| format!("{key}=INDEX/TERM"))?;
        Ok((Index(i.parse().map_err(|e| format!("{key}: {e}"))?), Term(t.parse().map_err(|e| format!("{key}: {e}"))?)))
    };
    let body = match *words.get(3).ok_or("inject FROM TO KIND")? {
        "heartbeat" => Body::Heartbeat { commit: Index(num("commit", 0)?), read_round: num("round", 0)? },
        "heartbeatresp" => Body::HeartbeatResp { read_round: num("round", 0)? },
        "timeoutnow" => Body::TimeoutNow { last_index: Index(num("last", 0)?), incarnation: num("to", 0)? },
        "vote" => {
            let (last_index, last_term) = pair("last")?;
            Body::Vote { last_index, last_term, transfer: words.contains(&"transfer") }
        }
        "snapshot" => {
            let voters = Membership::with_voters([NodeId(1), NodeId(2), NodeId(3)]);
            let meta =
                SnapshotMeta { index: Index(num("index", 1)?), term: Term(num("snapterm", 1)?), membership: voters };
            Body::InstallSnapshot { meta, offset: num("offset", 0)?, data: b"garbage".to_vec(), done: true }
        }
        other => return Err(format!("cannot inject {other:?}")),
    };
    Ok(Message { from, to, term: Term(num("term", 1)?), body })
}

pub fn parse_bug(s: &str) -> Result<PlantedBug, String> {
    match s {
        "CommitOlderTerm" => Ok(PlantedBug::CommitOlderTerm),
        "VoteWithoutLogCheck" => Ok(PlantedBug::VoteWithoutLogCheck),
        "AckBeforePersist" => Ok(PlantedBug::AckBeforePersist),
        "ReadWithoutQuorum" => Ok(PlantedBug::ReadWithoutQuorum),
        "SkipJointConsensus" => Ok(PlantedBug::SkipJointConsensus),
        "ReadIdsReused" => Ok(PlantedBug::ReadIdsReused),
        "ForwardQueueKept" => Ok(PlantedBug::ForwardQueueKept),
        "LeaderCountsUnwrittenEntries" => Ok(PlantedBug::LeaderCountsUnwrittenEntries),
        "SnapshotChunksByIndex" => Ok(PlantedBug::SnapshotChunksByIndex),
        "ReadClockIgnored" => Ok(PlantedBug::ReadClockIgnored),
        _ => Err(format!(
            "unknown bug {s:?} (CommitOlderTerm, VoteWithoutLogCheck, AckBeforePersist, ReadWithoutQuorum, \
             SkipJointConsensus, ReadIdsReused, ForwardQueueKept, LeaderCountsUnwrittenEntries, SnapshotChunksByIndex, \
             ReadClockIgnored)"
        )),
    }
}

fn describe_outcome(o: &Outcome) -> String {
    match o {
        Outcome::Applied { node, client, seq, result, .. } => format!("  {node} result {client}#{seq}: {result}"),
        Outcome::Read { node, ctx, value } => {
            format!("  {node} read {ctx}: {}", value.as_deref().unwrap_or("(absent)"))
        }
        Outcome::ReadFailed { node, ctx } => format!("  {node} read {ctx} failed"),
        Outcome::ForwardFailed { node, client, seq } => format!("  {node} did not forward {client}#{seq}"),
    }
}
