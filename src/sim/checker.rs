//! The safety properties of the Raft paper (figure 3), checked after every
//! simulated step against what the nodes expose:
//!
//! - Election safety: at most one leader per term.
//! - Leader append-only: a leader never overwrites or deletes its entries.
//! - Log matching: entries with the same index and term hold the same
//!   command, and the logs are identical up to them.
//! - Leader completeness: an entry committed in a term is in the log of every
//!   leader of a later term.
//! - State machine safety: no two nodes apply different entries at an index.
//!
//! The checks are incremental (a node's log is rehashed only from where it
//! changed) so that thousands of runs of thousands of steps stay cheap.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};

use super::hash::hash_of;

use crate::raft::{Entry, Index, NodeId, Raft, Role, Term};

/// One checked entry of a node's log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Seen {
    index: Index,
    term: Term,
    /// Hash of the whole log up to and including this entry.
    prefix: u64,
}

#[derive(Clone, Debug, Default)]
struct NodeView {
    log: Vec<Seen>,
    /// The term in which this node was last seen leading, if it still is.
    leading: Option<Term>,
    committed: Index,
}

#[derive(Clone, Debug, Default)]
pub struct Checker {
    leaders: BTreeMap<Term, NodeId>,
    /// (index, term) -> (payload hash, prefix hash) of every entry any log held.
    entries: BTreeMap<(Index, Term), (u64, u64)>,
    views: BTreeMap<NodeId, NodeView>,
    /// Index -> (term, payload hash, the term in which it was seen committed).
    committed: BTreeMap<Index, (Term, u64, Term)>,
    applied: BTreeMap<Index, (Term, u64, NodeId)>,
    /// Indexes that became known committed since `check_leaders` last ran.
    fresh: Vec<Index>,
}

pub type Violation = String;

impl Checker {
    /// Checks everything about `raft` that may have changed since it was last
    /// observed.
    pub fn observe(&mut self, raft: &Raft) -> Result<(), Violation> {
        let id = raft.id();
        self.check_election_safety(raft)?;
        let became_leader = {
            let view = self.views.entry(id).or_default();
            let leading_now = (raft.role() == Role::Leader).then(|| raft.term());
            let became = leading_now.is_some() && view.leading != leading_now;
            if !became && leading_now.is_none() {
                view.leading = None;
            }
            became
        };
        self.check_log(raft, became_leader)?;
        if became_leader {
            self.views.get_mut(&id).expect("inserted above").leading = Some(raft.term());
            self.check_new_leader_complete(raft)?;
        }
        self.record_commits(raft)
    }

    /// The node crashed: its volatile state is gone.
    pub fn forget(&mut self, id: NodeId) {
        if let Some(view) = self.views.get_mut(&id) {
            view.leading = None;
            view.committed = Index::ZERO;
        }
    }

    fn check_election_safety(&mut self, raft: &Raft) -> Result<(), Violation> {
        if raft.role() != Role::Leader {
            return Ok(());
        }
        let leader = *self.leaders.entry(raft.term()).or_insert(raft.id());
        if leader != raft.id() {
            return Err(format!("election safety: nodes {leader} and {} both lead term {}", raft.id(), raft.term()));
        }
        Ok(())
    }

    /// Log matching and leader append-only, rehashing only from the first
    /// entry that differs from what was seen last time.
    fn check_log(&mut self, raft: &Raft, became_leader: bool) -> Result<(), Violation> {
        let id = raft.id();
        let snapshot_index = raft.snapshot_index();
        let snapshot_term = raft.log_term(snapshot_index).unwrap_or(Term(0));
        let view = self.views.entry(id).or_default();
        let old = std::mem::take(&mut view.log);
        let entries: Vec<&Entry> = raft.log_entries().collect();
        // Align the old view with the current log by index.
        let old_from = old.iter().position(|s| s.index > snapshot_index).unwrap_or(old.len());
        let mut same = 0;
        while same < entries.len()
            && old_from + same < old.len()
            && old[old_from + same].index == entries[same].index
            && old[old_from + same].term == entries[same].term
        {
            same += 1;
        }
        let leading_same_term = !became_leader && view.leading == Some(raft.term());
        if leading_same_term && old_from + same < old.len() {
            let lost = old[old_from + same];
            return Err(format!(
                "leader append-only: leader {id} of term {} lost or replaced entry {}/{}",
                raft.term(),
                lost.index,
                lost.term
            ));
        }
        let mut log: Vec<Seen> = old[old_from..old_from + same].to_vec();
        let mut prefix = match log.last() {
            Some(s) => s.prefix,
            None if snapshot_index == Index::ZERO => 0,
            None => self
                .entries
                .get(&(snapshot_index, snapshot_term))
                .map_or_else(|| hash_of(&(snapshot_index, snapshot_term)), |&(_, p)| p),
        };
        for e in &entries[same..] {
            let payload = hash_of(&e.payload);
            prefix = hash_of(&(prefix, e.index, e.term, payload));
            match self.entries.get(&(e.index, e.term)) {
                Some(&(p, pre)) if p != payload || pre != prefix => {
                    return Err(format!(
                        "log matching: node {id} holds entry {e} whose index and term match another log's entry, \
                         but {}",
                        if p != payload { "its command differs" } else { "the logs differ before it" }
                    ));
                }
                Some(_) => {}
                None => {
                    self.entries.insert((e.index, e.term), (payload, prefix));
                }
            }
            log.push(Seen { index: e.index, term: e.term, prefix });
        }
        self.views.get_mut(&id).expect("inserted above").log = log;
        Ok(())
    }

    /// A new leader must hold every entry committed in an earlier term.
    fn check_new_leader_complete(&self, raft: &Raft) -> Result<(), Violation> {
        for (&index, &(term, payload, commit_term)) in &self.committed {
            if commit_term >= raft.term() {
                continue;
            }
            self.check_leader_has(raft, index, term, payload)?;
        }
        Ok(())
    }

    fn check_leader_has(&self, raft: &Raft, index: Index, term: Term, payload: u64) -> Result<(), Violation> {
        let snapshot_index = raft.snapshot_index();
        if index <= snapshot_index {
            return Ok(());
        }
        let held = raft.log_entries().find(|e| e.index == index).map(|e| (e.term, hash_of(&e.payload)));
        if held != Some((term, payload)) {
            return Err(format!(
                "leader completeness: leader {} of term {} lacks committed entry {index}/{term} (holds {:?})",
                raft.id(),
                raft.term(),
                held.map(|(t, _)| t)
            ));
        }
        Ok(())
    }

    /// Entries newly covered by the node's commit index become known
    /// committed; leaders of later terms must already hold them.
    fn record_commits(&mut self, raft: &Raft) -> Result<(), Violation> {
        let id = raft.id();
        let committed = raft.committed();
        let snapshot_index = raft.snapshot_index();
        let from = self.views[&id].committed.max(snapshot_index);
        if committed <= from {
            self.views.get_mut(&id).expect("exists").committed = committed;
            return Ok(());
        }
        let fresh: Vec<(Index, Term, u64)> = raft
            .log_entries()
            .filter(|e| e.index > from && e.index <= committed)
            .map(|e| (e.index, e.term, hash_of(&e.payload)))
            .collect();
        for (index, term, payload) in fresh {
            match self.committed.get(&index) {
                Some(&(t, p, _)) if (t, p) != (term, payload) => {
                    return Err(format!(
                        "state machine safety: node {id} committed {index}/{term} where {index}/{t} was committed"
                    ));
                }
                Some(_) => {}
                None => {
                    self.committed.insert(index, (term, payload, raft.term()));
                    self.fresh.push(index);
                }
            }
        }
        self.views.get_mut(&id).expect("exists").committed = committed;
        Ok(())
    }

    /// Every current leader of a later term must hold what was newly
    /// committed.
    pub fn check_leaders(&mut self, leaders: &[&Raft]) -> Result<(), Violation> {
        for index in std::mem::take(&mut self.fresh) {
            let (term, payload, commit_term) = self.committed[&index];
            for raft in leaders.iter().filter(|r| commit_term < r.term()) {
                self.check_leader_has(raft, index, term, payload)?;
            }
        }
        Ok(())
    }

    /// A node applied `entry`: every node must apply the same entry there.
    pub fn on_apply(&mut self, node: NodeId, entry: &Entry) -> Result<(), Violation> {
        let payload = hash_of(&entry.payload);
        match self.applied.get(&entry.index) {
            Some(&(term, p, other)) if (term, p) != (entry.term, payload) => Err(format!(
                "state machine safety: node {node} applied {entry} at {} where node {other} applied an entry of term {term}",
                entry.index
            )),
            Some(_) => Ok(()),
            None => {
                self.applied.insert(entry.index, (entry.term, payload, node));
                Ok(())
            }
        }
    }

    /// Hashes what the checker remembers of the past (leaders by term,
    /// entries ever seen, what was committed and applied), so that the model
    /// checker merges two states only when their histories agree too.
    pub fn fingerprint<H: Hasher>(&self, h: &mut H) {
        (&self.leaders, &self.entries, &self.committed, &self.applied).hash(h);
        for (id, v) in &self.views {
            (id, v.leading, v.committed).hash(h);
        }
    }

    /// The highest index any node has applied.
    pub fn applied_max(&self) -> Index {
        self.applied.last_key_value().map_or(Index::ZERO, |(&index, _)| index)
    }

    pub fn committed_count(&self) -> usize {
        self.committed.len()
    }
}
