//! An exact linearizability checker for key-value histories.
//!
//! A history is what clients saw: each operation's invocation and completion
//! times and its result, or that it definitely failed, or that its outcome is
//! unknown (a timeout, a lost connection). A map of registers is linearizable
//! exactly when each key's history is (locality, Herlihy & Wing), so keys are
//! checked one at a time.
//!
//! The search is Wing & Gong's with Lowe's just-in-time linearization and
//! memoization (the approach of Knossos and Porcupine): walk the calls and
//! returns in time order; at a call, try to linearize that operation now
//! (its result must match the model); at a return of an operation not yet
//! linearized, back up. A configuration (set of linearized operations,
//! register value) that was already explored is not explored again.
//! Configurations are remembered by a 128-bit Zobrist hash of the set (one
//! random word per operation, XORed in and out as operations are linearized
//! and undone) rather than the set itself: a history of half a million
//! operations per key would otherwise keep a 60 KB bitset per configuration
//! and hash it at every step. Two different sets sharing a hash, which would
//! prune a branch wrongly, has a chance of about n²/2¹²⁹: nil in practice.
//!
//! Failed operations took no effect and are left out. An operation with an
//! unknown outcome may take effect at any point after its invocation, or
//! never: it returns "at infinity" and its result is not checked, and taking
//! effect after every known operation is the same as never.

use std::collections::{BTreeMap, HashSet};
use std::fmt::{self, Write as _};

/// What an operation asked for.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Call {
    Read,
    Write(Vec<u8>),
    /// Sets `new` if the value equals `expected` (absent never does).
    Cas {
        expected: Vec<u8>,
        new: Vec<u8>,
    },
    Delete,
}

/// What a completed operation returned.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Ret {
    /// A read's value (None: absent).
    Value(Option<Vec<u8>>),
    /// A write's acknowledgement.
    Done,
    /// CAS: swapped; DELETE: existed.
    Bool(bool),
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    Ok(Ret),
    /// Certainly not applied.
    Failed,
    /// Maybe applied, maybe not; result unknown.
    Unknown,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Op {
    pub client: u64,
    pub key: Vec<u8>,
    pub call: Call,
    pub invoked: u64,
    /// Completion time; ignored (infinite) for unknown outcomes.
    pub completed: u64,
    pub outcome: Outcome,
}

/// The register model: the value, or absent.
type State = Option<Vec<u8>>;

/// Applies `call` to `state`; with `expected` (a known result), returns
/// `None` when the result does not match.
fn step(state: &State, call: &Call, expected: Option<&Ret>) -> Option<State> {
    let (next, ret) = match call {
        Call::Read => (state.clone(), Ret::Value(state.clone())),
        Call::Write(v) => (Some(v.clone()), Ret::Done),
        Call::Cas { expected: e, new } => {
            if state.as_ref() == Some(e) {
                (Some(new.clone()), Ret::Bool(true))
            } else {
                (state.clone(), Ret::Bool(false))
            }
        }
        Call::Delete => (None, Ret::Bool(state.is_some())),
    };
    match expected {
        Some(r) if *r != ret => None,
        _ => Some(next),
    }
}

/// Per-key search budget: configurations explored before giving up.
#[derive(Clone, Copy, Debug)]
pub struct Budget {
    pub steps_max: u64,
}

impl Default for Budget {
    fn default() -> Budget {
        Budget { steps_max: 20_000_000 }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Linearizable,
    /// With a small sub-history that is still not linearizable.
    NotLinearizable {
        key: Vec<u8>,
        minimal: Vec<Op>,
    },
    /// The search ran out of budget on this key.
    Undecided {
        key: Vec<u8>,
    },
}

/// A history that cannot be a record of real operations.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MalformedHistory(pub String);

impl fmt::Display for MalformedHistory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "malformed history: {}", self.0)
    }
}

fn well_formed(ops: &[Op]) -> Result<(), MalformedHistory> {
    let mut by_client: BTreeMap<u64, Vec<&Op>> = BTreeMap::new();
    for op in ops {
        if op.outcome != Outcome::Unknown && op.completed < op.invoked {
            return Err(MalformedHistory(format!(
                "client {} completed at {} before invoking at {}",
                op.client, op.completed, op.invoked
            )));
        }
        by_client.entry(op.client).or_default().push(op);
    }
    for (client, mut list) in by_client {
        list.sort_by_key(|o| o.invoked);
        for pair in list.windows(2) {
            let (a, b) = (pair[0], pair[1]);
            let a_end = if a.outcome == Outcome::Unknown { u64::MAX } else { a.completed };
            if a_end > b.invoked {
                return Err(MalformedHistory(format!(
                    "client {client} invoked at {} while its operation from {} was still in flight",
                    b.invoked, a.invoked
                )));
            }
        }
    }
    Ok(())
}

/// Checks a whole history, key by key.
pub fn check(ops: &[Op], budget: Budget) -> Result<Verdict, MalformedHistory> {
    well_formed(ops)?;
    let mut keys: BTreeMap<&[u8], Vec<Op>> = BTreeMap::new();
    for op in ops.iter().filter(|o| o.outcome != Outcome::Failed) {
        keys.entry(&op.key).or_default().push(op.clone());
    }
    for (key, key_ops) in keys {
        match check_key(&key_ops, budget) {
            Some(true) => {}
            Some(false) => {
                let minimal = shrink(key_ops, budget);
                return Ok(Verdict::NotLinearizable { key: key.to_vec(), minimal });
            }
            None => return Ok(Verdict::Undecided { key: key.to_vec() }),
        }
    }
    Ok(Verdict::Linearizable)
}

/// Stands for the value of any write nobody observed.
const UNOBSERVED: &[u8] = b"\xff\x00unobserved";

/// Two exact reductions before the search, which keep histories with many
/// unknown outcomes (crashes, timeouts) tractable:
///
/// - an unknown read has no effect and no known result: it constrains
///   nothing and is dropped;
/// - unknown writes whose values no read returned and no CAS that succeeded
///   (or may have) expected are interchangeable: their values are all replaced by one
///   symbol, and the search linearizes them only in invocation order. If a
///   linearization has a later-invoked one before an earlier-invoked one,
///   swapping the two gives another (both are available at both places,
///   and they write the same symbol), so nothing is lost.
///
/// Returns the reduced operations and, for each, its rank among the
/// interchangeable writes (`None` for other operations).
fn reduce(ops: &[Op]) -> (Vec<Op>, Vec<Option<usize>>) {
    let mut observed: HashSet<&[u8]> = HashSet::new();
    for op in ops {
        match (&op.call, &op.outcome) {
            (Call::Read, Outcome::Ok(Ret::Value(Some(v)))) => {
                observed.insert(v);
            }
            // A CAS that succeeded, or may have, depends on its expected
            // value having been written.
            (Call::Cas { expected, .. }, Outcome::Ok(Ret::Bool(true)) | Outcome::Unknown) => {
                observed.insert(expected);
            }
            _ => {}
        }
    }
    let mut kept: Vec<Op> = Vec::with_capacity(ops.len());
    for op in ops {
        match (&op.call, &op.outcome) {
            (Call::Read, Outcome::Unknown) => continue,
            (Call::Write(v), Outcome::Unknown) if !observed.contains(v.as_slice()) => {
                let mut blind = op.clone();
                blind.call = Call::Write(UNOBSERVED.to_vec());
                kept.push(blind);
            }
            _ => kept.push(op.clone()),
        }
    }
    let mut blind: Vec<usize> = (0..kept.len())
        .filter(|&i| kept[i].call == Call::Write(UNOBSERVED.to_vec()) && kept[i].outcome == Outcome::Unknown)
        .collect();
    blind.sort_by_key(|&i| (kept[i].invoked, i));
    let mut rank = vec![None; kept.len()];
    for (r, &i) in blind.iter().enumerate() {
        rank[i] = Some(r);
    }
    (kept, rank)
}

/// A call or return in time order, linked so that linearized operations can
/// be lifted out and put back in O(1).
#[derive(Clone, Copy, Debug)]
struct Event {
    op: usize,
    is_call: bool,
    /// For a call: the index of its return event.
    partner: usize,
    prev: usize,
    next: usize,
}

const NIL: usize = usize::MAX;

fn build_events(ops: &[Op]) -> Vec<Event> {
    // Calls sort before returns at equal times: operations that touch in
    // time overlap, which is the permissive (and usual) reading.
    let mut points: Vec<(u64, bool, usize)> = Vec::with_capacity(ops.len() * 2);
    for (i, op) in ops.iter().enumerate() {
        let end = if op.outcome == Outcome::Unknown { u64::MAX } else { op.completed };
        points.push((op.invoked, false, i));
        points.push((end, true, i));
    }
    points.sort_by_key(|&(t, is_return, i)| (t, is_return, i));
    let mut events: Vec<Event> = Vec::with_capacity(points.len());
    let mut call_at = vec![NIL; ops.len()];
    for (k, &(_, is_return, op)) in points.iter().enumerate() {
        events.push(Event { op, is_call: !is_return, partner: NIL, prev: k.wrapping_sub(1), next: k + 1 });
        if is_return {
            events[call_at[op]].partner = k;
        } else {
            call_at[op] = k;
        }
    }
    if let Some(last) = events.last_mut() {
        last.next = NIL;
    }
    events
}

/// The search for one key: `Some(true)` linearizable, `Some(false)` not,
/// `None` out of budget.
fn check_key(ops: &[Op], budget: Budget) -> Option<bool> {
    let (ops, rank) = reduce(ops);
    let ops = &ops[..];
    // How many interchangeable writes are linearized: the next one may go
    // only if its rank equals this.
    let mut blind_done = 0usize;
    let mut events = build_events(ops);
    let mut head = if events.is_empty() { NIL } else { 0 };
    let mut state: State = None;
    let zobrist = zobrist_words(ops.len());
    let mut linearized: u128 = 0;
    let mut explored: HashSet<(u128, State)> = HashSet::new();
    // Each linearized call, with the state before it.
    let mut stack: Vec<(usize, State)> = Vec::new();
    let mut at = head;
    let mut steps = 0u64;
    while head != NIL {
        steps += 1;
        if steps > budget.steps_max {
            return None;
        }
        let e = events[at];
        if e.is_call {
            let op = &ops[e.op];
            let expected = match &op.outcome {
                Outcome::Ok(r) => Some(r),
                _ => None,
            };
            let in_turn = rank[e.op].is_none_or(|r| r == blind_done);
            if let Some(next) = step(&state, &op.call, expected).filter(|_| in_turn) {
                linearized ^= zobrist[e.op];
                if explored.insert((linearized, next.clone())) {
                    stack.push((at, std::mem::replace(&mut state, next)));
                    blind_done += rank[e.op].is_some() as usize;
                    lift(&mut events, &mut head, at);
                    at = head;
                    continue;
                }
                linearized ^= zobrist[e.op];
            }
            // Every list ends with a return, so a call always has a next.
            at = e.next;
        } else {
            // This operation returned before anything let it take effect:
            // undo the latest choice and try the next one.
            let Some((call, previous)) = stack.pop() else {
                return Some(false);
            };
            state = previous;
            linearized ^= zobrist[events[call].op];
            blind_done -= rank[events[call].op].is_some() as usize;
            unlift(&mut events, &mut head, call);
            at = events[call].next;
        }
    }
    Some(true)
}

/// One random word per operation, the same for every run (a fixed seed).
fn zobrist_words(n: usize) -> Vec<u128> {
    use rand::rngs::Xoshiro256PlusPlus;
    use rand::{Rng, SeedableRng};
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(0x11e4_ca11);
    (0..n).map(|_| (u128::from(rng.next_u64()) << 64) | u128::from(rng.next_u64())).collect()
}

fn unlink(events: &mut [Event], head: &mut usize, k: usize) {
    let (prev, next) = (events[k].prev, events[k].next);
    if prev == NIL {
        *head = next;
    } else {
        events[prev].next = next;
    }
    if next != NIL {
        events[next].prev = prev;
    }
}

fn relink(events: &mut [Event], head: &mut usize, k: usize) {
    let (prev, next) = (events[k].prev, events[k].next);
    if prev == NIL {
        *head = k;
    } else {
        events[prev].next = k;
    }
    if next != NIL {
        events[next].prev = k;
    }
}

/// Removes a call and its return from the list.
fn lift(events: &mut [Event], head: &mut usize, call: usize) {
    let ret = events[call].partner;
    unlink(events, head, call);
    unlink(events, head, ret);
}

/// Puts them back, in the reverse order.
fn relink_pair(events: &mut [Event], head: &mut usize, call: usize) {
    let ret = events[call].partner;
    relink(events, head, ret);
    relink(events, head, call);
}

fn unlift(events: &mut [Event], head: &mut usize, call: usize) {
    relink_pair(events, head, call);
}

/// Every value that must have been in the register (a read's value, the
/// expected value of a CAS that succeeded, or of an unknown CAS whose new
/// value was itself observed) is still written by a kept operation:
/// otherwise the subset fails trivially and explains nothing.
fn closed(ops: &[Op]) -> bool {
    let written: HashSet<&[u8]> = ops
        .iter()
        .filter_map(|o| match &o.call {
            Call::Write(v) => Some(v.as_slice()),
            Call::Cas { new, .. } => Some(new.as_slice()),
            _ => None,
        })
        .collect();
    let mut needed: HashSet<&[u8]> = HashSet::new();
    for o in ops {
        match (&o.call, &o.outcome) {
            (Call::Read, Outcome::Ok(Ret::Value(Some(v)))) => {
                needed.insert(v);
            }
            (Call::Cas { expected, .. }, Outcome::Ok(Ret::Bool(true))) => {
                needed.insert(expected);
            }
            _ => {}
        }
    }
    loop {
        let before = needed.len();
        for o in ops {
            if let (Call::Cas { expected, new }, Outcome::Unknown) = (&o.call, &o.outcome)
                && needed.contains(new.as_slice())
            {
                needed.insert(expected);
            }
        }
        if needed.len() == before {
            break;
        }
    }
    needed.iter().all(|v| written.contains(v))
}

/// Greedily removes operations while the rest stays non-linearizable and
/// closed (halves first, then smaller pieces), within a bounded number of
/// checks.
fn shrink(mut ops: Vec<Op>, budget: Budget) -> Vec<Op> {
    const CHECKS_MAX: usize = 5_000;
    let mut checks = 0;
    let mut chunk = ops.len() / 2;
    while chunk >= 1 && checks < CHECKS_MAX {
        let mut start = 0;
        while start < ops.len() && checks < CHECKS_MAX {
            let end = (start + chunk).min(ops.len());
            let candidate: Vec<Op> = ops[..start].iter().chain(&ops[end..]).cloned().collect();
            let fails = !candidate.is_empty() && closed(&candidate) && {
                checks += 1;
                check_key(&candidate, budget) == Some(false)
            };
            if fails {
                ops = candidate;
            } else {
                start = end;
            }
        }
        chunk /= 2;
    }
    // An operation goes together with everything that observed its value:
    // closure alone would keep a write for as long as any read of it stays.
    let mut i = ops.len();
    while i > 0 && checks < CHECKS_MAX {
        i -= 1;
        if i >= ops.len() {
            continue;
        }
        let drop = dependents(&ops, i);
        let candidate: Vec<Op> =
            ops.iter().enumerate().filter(|(k, _)| !drop.contains(k)).map(|(_, o)| o.clone()).collect();
        let fails = !candidate.is_empty() && closed(&candidate) && {
            checks += 1;
            check_key(&candidate, budget) == Some(false)
        };
        if fails {
            ops = candidate;
            i = ops.len();
        }
    }
    ops
}

/// Operation `i` and, transitively, every operation that observed a value
/// it wrote.
fn dependents(ops: &[Op], i: usize) -> HashSet<usize> {
    let mut out = HashSet::from([i]);
    let mut todo = vec![i];
    while let Some(k) = todo.pop() {
        let value = match &ops[k].call {
            Call::Write(v) => v,
            Call::Cas { new, .. } => new,
            _ => continue,
        };
        for (j, o) in ops.iter().enumerate() {
            let observes = match (&o.call, &o.outcome) {
                (Call::Read, Outcome::Ok(Ret::Value(Some(v)))) => v == value,
                (Call::Cas { expected, .. }, Outcome::Ok(Ret::Bool(true)) | Outcome::Unknown) => expected == value,
                _ => false,
            };
            if observes && out.insert(j) {
                todo.push(j);
            }
        }
    }
    out
}

/// Shows bytes as text when printable, as 0x-hex otherwise (and for text
/// that would read as something else: `-`, or a leading `0x`).
pub fn show(bytes: &[u8]) -> String {
    let plain =
        !bytes.is_empty() && bytes.iter().all(|b| b.is_ascii_graphic()) && !bytes.starts_with(b"0x") && bytes != b"-";
    if plain {
        String::from_utf8_lossy(bytes).into_owned()
    } else {
        let mut s = String::from("0x");
        for b in bytes {
            let _ = write!(s, "{b:02x}");
        }
        s
    }
}

fn show_value(v: &Option<Vec<u8>>) -> String {
    v.as_deref().map_or_else(|| "-".to_string(), show)
}

/// One line per operation, by invocation time: a readable timeline of a
/// failing sub-history.
pub fn render(ops: &[Op]) -> String {
    let mut sorted: Vec<&Op> = ops.iter().collect();
    sorted.sort_by_key(|o| (o.invoked, o.client));
    let mut out = String::new();
    for op in sorted {
        let end = if op.outcome == Outcome::Unknown { "?".to_string() } else { op.completed.to_string() };
        let call = match &op.call {
            Call::Read => "read".to_string(),
            Call::Write(v) => format!("write {}", show(v)),
            Call::Cas { expected, new } => format!("cas {} {}", show(expected), show(new)),
            Call::Delete => "delete".to_string(),
        };
        let result = match &op.outcome {
            Outcome::Ok(Ret::Value(v)) => show_value(v),
            Outcome::Ok(Ret::Done) => "ok".to_string(),
            Outcome::Ok(Ret::Bool(b)) => b.to_string(),
            Outcome::Failed => "failed".to_string(),
            Outcome::Unknown => "unknown".to_string(),
        };
        let _ = writeln!(
            out,
            "client {:>3} [{:>8}, {:>8}] {} {call} -> {result}",
            op.client,
            op.invoked,
            end,
            show(&op.key)
        );
    }
    out
}

fn unshow(word: &str) -> Result<Vec<u8>, String> {
    let Some(hex) = word.strip_prefix("0x") else { return Ok(word.as_bytes().to_vec()) };
    if hex.len() % 2 != 0 {
        return Err(format!("odd-length hex {word:?}"));
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).map_err(|_| format!("bad hex {word:?}")))
        .collect()
}

/// The text form of a history, one operation per line, which `from_text`
/// reads back (`bin/lincheck` checks such a file):
///
/// ```text
/// # client invoked completed key call [args] -> result
/// 3 100 250 x write v1 -> ok
/// 4 120 300 x read -> v1
/// 5 130 ? x cas v1 v2 -> unknown
/// 6 140 145 x write v9 -> failed
/// 7 150 160 x delete -> true
/// ```
/// A read of an absent key returns `-`; `?` is the completion of an unknown
/// outcome; values that are not plain text are written as 0x-hex.
pub fn to_text(ops: &[Op]) -> String {
    let mut out = String::from("# client invoked completed key call [args] -> result\n");
    for op in ops {
        let end = if op.outcome == Outcome::Unknown { "?".to_string() } else { op.completed.to_string() };
        let call = match &op.call {
            Call::Read => "read".to_string(),
            Call::Write(v) => format!("write {}", show(v)),
            Call::Cas { expected, new } => format!("cas {} {}", show(expected), show(new)),
            Call::Delete => "delete".to_string(),
        };
        let result = match &op.outcome {
            Outcome::Ok(Ret::Value(v)) => show_value(v),
            Outcome::Ok(Ret::Done) => "ok".to_string(),
            Outcome::Ok(Ret::Bool(b)) => b.to_string(),
            Outcome::Failed => "failed".to_string(),
            Outcome::Unknown => "unknown".to_string(),
        };
        let _ = writeln!(out, "{} {} {end} {} {call} -> {result}", op.client, op.invoked, show(&op.key));
    }
    out
}

fn parse_line(line: &str) -> Result<Op, String> {
    let (left, result) = line.split_once(" -> ").ok_or("missing ` -> result`")?;
    let words: Vec<&str> = left.split_whitespace().collect();
    if words.len() < 5 {
        return Err("expected `client invoked completed key call [args] -> result`".into());
    }
    let number = |w: &str, what: &str| w.parse::<u64>().map_err(|_| format!("{what} {w:?} is not a number"));
    let client = number(words[0], "client")?;
    let invoked = number(words[1], "invocation time")?;
    let completed = if words[2] == "?" { u64::MAX } else { number(words[2], "completion time")? };
    let key = unshow(words[3])?;
    let call = match (&words[4..], result.trim()) {
        (["read"], _) => Call::Read,
        (["write", v], _) => Call::Write(unshow(v)?),
        (["cas", e, n], _) => Call::Cas { expected: unshow(e)?, new: unshow(n)? },
        (["delete"], _) => Call::Delete,
        (other, _) => return Err(format!("unknown call {other:?}")),
    };
    let outcome = match (result.trim(), &call) {
        ("failed", _) => Outcome::Failed,
        ("unknown", _) => Outcome::Unknown,
        ("ok", Call::Write(_)) => Outcome::Ok(Ret::Done),
        ("true", Call::Cas { .. } | Call::Delete) => Outcome::Ok(Ret::Bool(true)),
        ("false", Call::Cas { .. } | Call::Delete) => Outcome::Ok(Ret::Bool(false)),
        ("-", Call::Read) => Outcome::Ok(Ret::Value(None)),
        (v, Call::Read) => Outcome::Ok(Ret::Value(Some(unshow(v)?))),
        (r, _) => return Err(format!("result {r:?} does not fit the call")),
    };
    if completed == u64::MAX && outcome != Outcome::Unknown {
        return Err("only an unknown outcome may have completion `?`".into());
    }
    Ok(Op { client, key, call, invoked, completed, outcome })
}

/// Reads the text form back; errors name the line.
pub fn from_text(text: &str) -> Result<Vec<Op>, String> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|(n, l)| parse_line(l).map_err(|e| format!("line {}: {e}", n + 1)))
        .collect()
}

#[cfg(test)]
mod tests;
