//! What the core stores and says: log entries, the hard state, membership
//! configurations and the messages peers exchange. Each has a compact `Display`
//! that logs, scenario scripts and simulator traces all share.
//!
//! Encoding these to bytes is `crate::codec`'s job, not this module's.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use super::types::{Index, NodeId, Term};

/// One log entry. Invariant: `index >= 1` and `term >= 1` for every entry a
/// leader created.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Entry {
    pub term: Term,
    pub index: Index,
    pub payload: Payload,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Payload {
    /// Appended by every new leader so that it can commit an entry of its own
    /// term (paper §5.4.2, §8).
    Noop,
    /// An opaque state-machine command, shared rather than copied by the
    /// log, the log writer, every follower's append and the apply (values
    /// are up to 512 MiB).
    Command(std::sync::Arc<Vec<u8>>),
    /// A new configuration; it takes effect as soon as it is in a log, committed
    /// or not (paper §6).
    Membership(Membership),
}

impl Payload {
    pub fn command(bytes: Vec<u8>) -> Payload {
        Payload::Command(std::sync::Arc::new(bytes))
    }
}

/// Where a member listens. The core only carries these; the node uses them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Addrs {
    pub raft: String,
    pub client: String,
}

/// A cluster configuration. While `outgoing` is non-empty the cluster is in
/// joint consensus (C_old,new, paper §6): `outgoing` is C_old, `voters` is
/// C_new, and elections and commits need a majority of each.
///
/// Invariants: `voters` is non-empty for a bootstrapped cluster; a learner is
/// not a voter in either half; `addrs` has a key for every member.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Membership {
    pub voters: BTreeSet<NodeId>,
    pub outgoing: BTreeSet<NodeId>,
    pub learners: BTreeSet<NodeId>,
    pub addrs: BTreeMap<NodeId, Addrs>,
}

impl Membership {
    /// A simple (non-joint) configuration of voters without addresses, as used
    /// by tests and the simulator.
    pub fn with_voters(ids: impl IntoIterator<Item = NodeId>) -> Membership {
        let voters: BTreeSet<NodeId> = ids.into_iter().collect();
        let addrs = voters.iter().map(|&id| (id, Addrs::default())).collect();
        Membership { voters, addrs, ..Membership::default() }
    }

    pub fn is_joint(&self) -> bool {
        !self.outgoing.is_empty()
    }

    /// Votes in at least one half of the configuration.
    pub fn is_voter(&self, id: NodeId) -> bool {
        self.voters.contains(&id) || self.outgoing.contains(&id)
    }

    pub fn is_learner(&self, id: NodeId) -> bool {
        self.learners.contains(&id)
    }

    pub fn contains(&self, id: NodeId) -> bool {
        self.is_voter(id) || self.is_learner(id)
    }

    /// Every member, voters of both halves and learners, in id order.
    pub fn members(&self) -> BTreeSet<NodeId> {
        let mut all = self.voters.clone();
        all.extend(self.outgoing.iter().copied());
        all.extend(self.learners.iter().copied());
        all
    }

    /// Checks the invariants above; used on configurations that came from a
    /// peer or the disk before they are trusted.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(id) = self.learners.iter().find(|id| self.is_voter(**id)) {
            return Err(format!("node {id} is both a learner and a voter"));
        }
        if let Some(id) = self.members().iter().find(|id| id.0 == 0) {
            return Err(format!("node id {id} is reserved"));
        }
        if let Some(id) = self.members().iter().find(|id| !self.addrs.contains_key(id)) {
            return Err(format!("node {id} has no addresses"));
        }
        if self.addrs.keys().any(|id| !self.contains(*id)) {
            return Err("addresses listed for a node that is not a member".to_string());
        }
        Ok(())
    }
}

/// What must survive a crash besides the log (paper figure 2, "persistent state").
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct HardState {
    pub term: Term,
    pub vote: Option<NodeId>,
    /// Not needed for safety, but lets a restarted node apply without waiting
    /// for a leader.
    pub commit: Index,
}

/// Describes a snapshot: the state machine after applying every entry through
/// `index`, and the configuration in force at that point.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct SnapshotMeta {
    pub index: Index,
    pub term: Term,
    pub membership: Membership,
}

/// A peer message. `term` is the sender's current term, except for `PreVote`,
/// where it is the term the sender would campaign in (Raft thesis §9.6).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Message {
    pub from: NodeId,
    pub to: NodeId,
    pub term: Term,
    pub body: Body,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Body {
    PreVote {
        last_index: Index,
        last_term: Term,
    },
    PreVoteResp {
        granted: bool,
    },
    Vote {
        last_index: Index,
        last_term: Term,
        /// Set when a leadership transfer asked for this election, so voters
        /// disregard the leader they still hear from (thesis §3.10).
        transfer: bool,
    },
    VoteResp {
        granted: bool,
    },
    Append {
        prev_index: Index,
        prev_term: Term,
        entries: Vec<Entry>,
        commit: Index,
    },
    AppendResp(AppendResp),
    /// Keeps followers from campaigning and carries the leader's commit index
    /// (never beyond what the follower is known to hold) and the read-index
    /// round being confirmed.
    Heartbeat {
        commit: Index,
        read_round: u64,
    },
    HeartbeatResp {
        read_round: u64,
    },
    /// One chunk of a snapshot, sent when the entries a follower needs were
    /// compacted away (paper §7).
    InstallSnapshot {
        meta: SnapshotMeta,
        offset: u64,
        data: Vec<u8>,
        done: bool,
    },
    /// `next_offset` is where the follower wants the next chunk; after the last
    /// chunk `installed` says whether the snapshot is now in place.
    InstallSnapshotResp {
        index: Index,
        next_offset: u64,
        installed: bool,
    },
    /// Tells a caught-up follower to start an election now (thesis §3.10).
    /// `last_index` is the leader's last entry when it sent this: the target
    /// obeys only while its log ends exactly there, so a TimeoutNow delayed
    /// past an abandoned transfer (after which the leader appends a no-op)
    /// is ignored; `incarnation` the target process it was meant for.
    TimeoutNow {
        last_index: Index,
        incarnation: u64,
    },
    /// Commands a follower forwards to the leader it knows.
    Propose {
        commands: Vec<Vec<u8>>,
    },
    /// A follower asks the leader for a read index on behalf of its clients.
    ReadIndex {
        request: ReadId,
    },
    /// `index` is `None` when the leader could not serve the read (it lost
    /// leadership); the follower may ask again. `clock` is the leader's
    /// clock the read is judged by (`ReadState::clock`).
    ReadIndexResp {
        request: ReadId,
        index: Option<Index>,
        clock: u64,
    },
}

/// Names a read a follower forwarded, unique across the follower's restarts:
/// an answer meant for an earlier process must never be taken for an answer
/// to a new read that happens to reuse its number (a stale read).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ReadId {
    /// Random, drawn when the core is created (once per process).
    pub incarnation: u64,
    /// Counts the reads this process forwarded.
    pub seq: u64,
}

impl fmt::Display for ReadId {
    /// The low 16 bits of the incarnation tell processes apart in traces.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04x}.{}", self.incarnation & 0xffff, self.seq)
    }
}

/// A follower's answer to `Append`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AppendResp {
    /// Accepted: the last index now known to match the leader's log.
    /// Rejected: the `prev_index` that did not match.
    pub index: Index,
    pub rejected: bool,
    /// On rejection, a guess at the longest prefix that could match: the
    /// largest index at most `index` whose term is at most the rejected
    /// `prev_term` (or the follower's last index, if shorter). The leader
    /// skips whole terms with it instead of walking back one entry at a time.
    pub hint_index: Index,
    pub hint_term: Term,
    /// The follower's process (its `ReadId` incarnation), so that the
    /// leader's TimeoutNow can name the process it means: one queued across
    /// the follower's restart is ignored by the next process.
    pub incarnation: u64,
}

impl Body {
    /// A short name for logs and counters.
    pub fn kind(&self) -> &'static str {
        match self {
            Body::PreVote { .. } => "PreVote",
            Body::PreVoteResp { .. } => "PreVoteResp",
            Body::Vote { .. } => "Vote",
            Body::VoteResp { .. } => "VoteResp",
            Body::Append { .. } => "Append",
            Body::AppendResp(_) => "AppendResp",
            Body::Heartbeat { .. } => "Heartbeat",
            Body::HeartbeatResp { .. } => "HeartbeatResp",
            Body::InstallSnapshot { .. } => "InstallSnapshot",
            Body::InstallSnapshotResp { .. } => "InstallSnapshotResp",
            Body::TimeoutNow { .. } => "TimeoutNow",
            Body::Propose { .. } => "Propose",
            Body::ReadIndex { .. } => "ReadIndex",
            Body::ReadIndexResp { .. } => "ReadIndexResp",
        }
    }
}

impl fmt::Display for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.term)?;
        match &self.payload {
            Payload::Noop => Ok(()),
            Payload::Command(data) => write!(f, ":{}", Printable(data)),
            Payload::Membership(m) => write!(f, ":{m}"),
        }
    }
}

impl fmt::Display for Membership {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "voters={}", Ids(&self.voters))?;
        if self.is_joint() {
            write!(f, "&&{}", Ids(&self.outgoing))?;
        }
        if !self.learners.is_empty() {
            write!(f, " learners={}", Ids(&self.learners))?;
        }
        Ok(())
    }
}

impl fmt::Display for HardState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let vote = self.vote.map_or(0, |v| v.0);
        write!(f, "term={} vote={} commit={}", self.term, vote, self.commit)
    }
}

impl fmt::Display for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}->{} t{} ", self.from, self.to, self.term)?;
        match &self.body {
            Body::PreVote { last_index, last_term } => write!(f, "PreVote last={last_index}/{last_term}"),
            Body::Vote { last_index, last_term, transfer } => {
                write!(f, "Vote last={last_index}/{last_term}")?;
                if *transfer {
                    write!(f, " transfer")?;
                }
                Ok(())
            }
            Body::PreVoteResp { granted } | Body::VoteResp { granted } => {
                let verdict = if *granted { "granted" } else { "rejected" };
                write!(f, "{} {verdict}", self.body.kind())
            }
            Body::Append { prev_index, prev_term, entries, commit } => {
                write!(f, "Append prev={prev_index}/{prev_term} commit={commit} [")?;
                for (i, e) in entries.iter().enumerate() {
                    let sep = if i == 0 { "" } else { " " };
                    write!(f, "{sep}{e}")?;
                }
                write!(f, "]")
            }
            Body::AppendResp(r) if r.rejected => {
                write!(f, "AppendResp rejected {} hint={}/{}", r.index, r.hint_index, r.hint_term)
            }
            Body::AppendResp(r) => write!(f, "AppendResp ok {}", r.index),
            Body::Heartbeat { commit, read_round } => {
                write!(f, "Heartbeat commit={commit} round={read_round}")
            }
            Body::HeartbeatResp { read_round } => write!(f, "HeartbeatResp round={read_round}"),
            Body::InstallSnapshot { meta, offset, data, done } => write!(
                f,
                "InstallSnapshot {}/{} {} offset={offset} len={} done={done}",
                meta.index,
                meta.term,
                meta.membership,
                data.len()
            ),
            Body::InstallSnapshotResp { index, next_offset, installed } => {
                write!(f, "InstallSnapshotResp {index} next_offset={next_offset} installed={installed}")
            }
            Body::TimeoutNow { last_index, incarnation } => {
                write!(f, "TimeoutNow last={last_index} to={:04x}", incarnation & 0xffff)
            }
            Body::Propose { commands } => write!(f, "Propose n={}", commands.len()),
            Body::ReadIndex { request } => write!(f, "ReadIndex req={request}"),
            Body::ReadIndexResp { request, index, clock } => match index {
                Some(i) => write!(f, "ReadIndexResp req={request} index={i} clock={clock}"),
                None => write!(f, "ReadIndexResp req={request} failed"),
            },
        }
    }
}

struct Ids<'a>(&'a BTreeSet<NodeId>);

impl fmt::Display for Ids<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ids: Vec<String> = self.0.iter().map(|id| id.to_string()).collect();
        write!(f, "({})", ids.join(","))
    }
}

/// Shows a command as text when it is printable ASCII, as hex otherwise, and
/// cuts it short: traces stay one line per event.
pub struct Printable<'a>(pub &'a [u8]);

impl fmt::Display for Printable<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const SHOWN_BYTES_MAX: usize = 24;
        let shown = &self.0[..self.0.len().min(SHOWN_BYTES_MAX)];
        if shown.iter().all(|b| b.is_ascii_graphic() || *b == b' ') {
            write!(f, "{}", String::from_utf8_lossy(shown))?;
        } else {
            for b in shown {
                write!(f, "{b:02x}")?;
            }
        }
        if self.0.len() > shown.len() {
            write!(f, "..")?;
        }
        Ok(())
    }
}
