//! The log as the core sees it: the entries since the last snapshot, which of
//! them are on stable storage, which are committed, which were handed out to be
//! applied. The caller's write-ahead log holds the durable copy; this holds
//! everything in memory (etcd's server pairs its WAL with a MemoryStorage the
//! same way), and compaction keeps it bounded.

use std::collections::VecDeque;

use super::message::{Entry, SnapshotMeta};
use super::types::{Index, Term};

/// Entries came from a leader that contradict an entry this node knows is
/// committed: a peer is broken. The message is dropped, never applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommittedConflict {
    pub index: Index,
    pub committed: Index,
}

/// Entries cut from the log by compaction, handed to the caller in a
/// `Ready` to be freed where it suits it: freeing a few hundred thousand
/// entries took the node's core thread 100 ms and more, long enough to
/// cost a leader its followers. Not part of the log's state: any two are
/// equal and hash alike.
#[derive(Clone, Debug, Default)]
pub struct Discarded(pub Vec<VecDeque<Entry>>);

impl PartialEq for Discarded {
    fn eq(&self, _: &Discarded) -> bool {
        true
    }
}

impl Eq for Discarded {}

impl std::hash::Hash for Discarded {
    fn hash<H: std::hash::Hasher>(&self, _: &mut H) {}
}

#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct RaftLog {
    /// The last index and term the latest snapshot covers (0/0 without one).
    snapshot_index: Index,
    snapshot_term: Term,
    /// Invariant: `entries[k].index == snapshot_index + 1 + k`.
    entries: VecDeque<Entry>,
    /// Invariant: `snapshot_index <= applied <= committed <= last_index()`.
    committed: Index,
    /// Highest index handed to the caller to apply.
    applied: Index,
    /// Entries through here are on stable storage. May be below
    /// `snapshot_index` only transiently, never above `last_index()`.
    stable: Index,
    /// Entries through here were handed out to be written (`stable <=
    /// handed <= last_index()`); the write of those after `stable` may still
    /// be under way.
    handed: Index,
    discarded: Discarded,
}

impl RaftLog {
    /// A log rebuilt from stable storage: everything given is durable.
    pub fn restore(snapshot: Option<&SnapshotMeta>, entries: Vec<Entry>, committed: Index) -> RaftLog {
        let (snapshot_index, snapshot_term) = snapshot.map_or((Index::ZERO, Term(0)), |m| (m.index, m.term));
        for (k, e) in entries.iter().enumerate() {
            assert_eq!(
                e.index,
                snapshot_index.plus(1 + k as u64),
                "recovered entries are not contiguous after snapshot {snapshot_index}"
            );
        }
        let mut log = RaftLog {
            snapshot_index,
            snapshot_term,
            entries: entries.into(),
            committed: snapshot_index,
            applied: snapshot_index,
            stable: Index::ZERO,
            handed: Index::ZERO,
            discarded: Discarded::default(),
        };
        log.stable = log.last_index();
        log.handed = log.stable;
        // A commit index persisted ahead of the entries (it cannot be, but the
        // disk is not the place to trust) is clamped.
        log.committed = committed.clamp(snapshot_index, log.last_index());
        log
    }

    pub fn snapshot_index(&self) -> Index {
        self.snapshot_index
    }

    pub fn snapshot_term(&self) -> Term {
        self.snapshot_term
    }

    pub fn last_index(&self) -> Index {
        self.snapshot_index.plus(self.entries.len() as u64)
    }

    pub fn last_term(&self) -> Term {
        self.entries.back().map_or(self.snapshot_term, |e| e.term)
    }

    pub fn committed(&self) -> Index {
        self.committed
    }

    pub fn applied(&self) -> Index {
        self.applied
    }

    pub fn stable(&self) -> Index {
        self.stable
    }

    pub fn handed(&self) -> Index {
        self.handed
    }

    /// The term of the entry at `index`: known for the snapshot's last entry
    /// and every entry after it, unknown (compacted or absent) otherwise.
    pub fn term(&self, index: Index) -> Option<Term> {
        if index == self.snapshot_index {
            return Some(self.snapshot_term);
        }
        self.entry(index).map(|e| e.term)
    }

    pub fn entry(&self, index: Index) -> Option<&Entry> {
        if index <= self.snapshot_index {
            return None;
        }
        self.entries.get((index.0 - self.snapshot_index.0 - 1) as usize)
    }

    pub fn matches(&self, index: Index, term: Term) -> bool {
        self.term(index) == Some(term)
    }

    /// The election restriction (paper §5.4.1): a candidate's log is at least
    /// as up to date as ours.
    pub fn is_up_to_date(&self, last_index: Index, last_term: Term) -> bool {
        last_term > self.last_term() || (last_term == self.last_term() && last_index >= self.last_index())
    }

    /// The largest index at most `index` whose term is at most `term`; the
    /// snapshot index when there is none after it. Both sides of a rejected
    /// Append use it to skip whole terms (etcd's `findConflictByTerm`).
    pub fn last_index_with_term_at_most(&self, index: Index, term: Term) -> Index {
        let mut i = index.min(self.last_index());
        while i > self.snapshot_index {
            match self.term(i) {
                Some(t) if t <= term => return i,
                _ => i = i.prev(),
            }
        }
        self.snapshot_index
    }

    /// Appends what a leader sent after `prev`, replacing a conflicting suffix
    /// (paper §5.3, receiver steps 3-4). The caller has checked that
    /// `prev_index` matches. Returns the index of the last entry the message
    /// vouches for and, when anything was appended, the first appended index
    /// (everything from there on was replaced or is new).
    pub fn append_after(
        &mut self,
        prev_index: Index,
        entries: &[Entry],
    ) -> Result<(Index, Option<Index>), CommittedConflict> {
        let last_new = prev_index.plus(entries.len() as u64);
        // Entries we already hold with the same term are the same entries
        // (log matching); a retransmitted or reordered Append must not cut
        // anything that came after them.
        let Some(first_new) = entries.iter().position(|e| !self.matches(e.index, e.term)) else {
            return Ok((last_new, None));
        };
        let conflict = entries[first_new].index;
        if conflict <= self.committed {
            return Err(CommittedConflict { index: conflict, committed: self.committed });
        }
        if conflict <= self.last_index() {
            self.truncate_from(conflict);
        }
        self.append(&entries[first_new..]);
        Ok((last_new, Some(conflict)))
    }

    fn truncate_from(&mut self, index: Index) {
        assert!(index > self.committed, "truncating committed entry {index} (committed {})", self.committed);
        let keep = (index.0 - self.snapshot_index.0 - 1) as usize;
        self.entries.truncate(keep);
        self.stable = self.stable.min(index.prev());
        self.handed = self.handed.min(index.prev());
    }

    /// Appends entries that follow the last one directly.
    pub fn append(&mut self, entries: &[Entry]) {
        for e in entries {
            assert_eq!(e.index, self.last_index().next(), "appended entry out of order");
            assert!(e.term >= self.last_term(), "entry {} has a term below the log's", e);
            self.entries.push_back(e.clone());
        }
    }

    pub fn commit_to(&mut self, index: Index) -> bool {
        assert!(index <= self.last_index(), "commit {index} beyond the last index {}", self.last_index());
        if index > self.committed {
            self.committed = index;
            true
        } else {
            false
        }
    }

    /// Entries not yet handed out to be written.
    pub fn unstable_entries(&self) -> Vec<Entry> {
        self.slice_from(self.handed.max(self.snapshot_index).next(), usize::MAX, usize::MAX)
    }

    /// Entries through `index` were handed out to be written.
    pub fn handed_to(&mut self, index: Index) {
        assert!(index <= self.last_index(), "handed {index} beyond last {}", self.last_index());
        self.handed = self.handed.max(index);
    }

    /// The caller made entries through `index` durable.
    pub fn stable_to(&mut self, index: Index) {
        assert!(index <= self.last_index(), "stable {index} beyond last {}", self.last_index());
        self.stable = self.stable.max(index);
        self.handed = self.handed.max(self.stable);
    }

    /// Committed entries not yet handed out for application, at most
    /// `max_count` of them.
    pub fn next_committed(&self, max_count: usize) -> Vec<Entry> {
        let from = self.applied.next();
        let count = self.committed.distance_from(self.applied).min(max_count as u64) as usize;
        self.slice_from(from, count, usize::MAX)
    }

    pub fn applied_to(&mut self, index: Index) {
        assert!(
            index <= self.committed && index >= self.applied,
            "applied {index} outside [{}, {}]",
            self.applied,
            self.committed
        );
        self.applied = index;
    }

    /// Up to `max_count` entries starting at `from`, stopping before the total
    /// payload passes `max_bytes` (but always at least one). Empty when
    /// `from` is past the end; the caller checks for compaction first.
    pub fn slice_from(&self, from: Index, max_count: usize, max_bytes: usize) -> Vec<Entry> {
        assert!(from > self.snapshot_index, "slice from compacted index {from}");
        let start = (from.0 - self.snapshot_index.0 - 1) as usize;
        let mut out = Vec::new();
        let mut bytes = 0usize;
        for e in self.entries.iter().skip(start).take(max_count) {
            let size = entry_payload_bytes(e);
            if !out.is_empty() && bytes + size > max_bytes {
                break;
            }
            bytes += size;
            out.push(e.clone());
        }
        out
    }

    /// Forgets entries through `index`, which a durable snapshot now covers.
    pub fn compact(&mut self, index: Index) {
        assert!(index <= self.applied, "compacting {index} beyond applied {}", self.applied);
        if index <= self.snapshot_index {
            return;
        }
        let term = self.term(index).expect("an applied index after the snapshot has a term");
        let drop = (index.0 - self.snapshot_index.0) as usize;
        let kept = self.entries.split_off(drop);
        self.discarded.0.push(std::mem::replace(&mut self.entries, kept));
        self.snapshot_index = index;
        self.snapshot_term = term;
    }

    /// What compaction cut since the last call.
    pub fn take_discarded(&mut self) -> Discarded {
        std::mem::take(&mut self.discarded)
    }

    /// Installs a snapshot from a leader (paper §7): a matching suffix is
    /// kept, anything else is discarded. The caller restores the state machine
    /// from it, so it counts as applied.
    pub fn install_snapshot(&mut self, index: Index, term: Term) {
        assert!(index > self.committed, "installing snapshot {index} at or below commit {}", self.committed);
        if self.matches(index, term) {
            let drop = (index.0 - self.snapshot_index.0) as usize;
            self.entries.drain(..drop);
        } else {
            self.entries.clear();
            self.stable = index;
            self.handed = index;
        }
        self.snapshot_index = index;
        self.snapshot_term = term;
        self.committed = index;
        self.applied = index;
        self.stable = self.stable.max(index);
        self.handed = self.handed.max(index);
    }

    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.entries.iter()
    }
}

/// Bytes an entry's payload weighs for message budgets.
pub fn entry_payload_bytes(e: &Entry) -> usize {
    use super::message::Payload;
    const ENTRY_OVERHEAD_BYTES: usize = 24;
    ENTRY_OVERHEAD_BYTES
        + match &e.payload {
            Payload::Noop => 0,
            Payload::Command(data) => data.len(),
            Payload::Membership(m) => 64 * m.members().len(),
        }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::message::Payload;

    fn ents(pairs: &[(u64, u64)]) -> Vec<Entry> {
        pairs
            .iter()
            .map(|&(index, term)| Entry { index: Index(index), term: Term(term), payload: Payload::Noop })
            .collect()
    }

    fn log_with(terms: &[u64]) -> RaftLog {
        let entries: Vec<(u64, u64)> = terms.iter().enumerate().map(|(i, &t)| (i as u64 + 1, t)).collect();
        RaftLog::restore(None, ents(&entries), Index(0))
    }

    #[test]
    fn retransmitted_prefix_does_not_cut_the_suffix() {
        let mut log = log_with(&[1, 1, 2, 2]);
        // A delayed Append carrying only entries 2-3 arrives after 4 was added.
        let (last, cut) = log.append_after(Index(1), &ents(&[(2, 1), (3, 2)])).unwrap();
        assert_eq!((last, cut), (Index(3), None));
        assert_eq!(log.last_index(), Index(4));
    }

    #[test]
    fn new_entries_are_appended_after_a_match() {
        let mut log = log_with(&[1, 1]);
        let (last, first) = log.append_after(Index(1), &ents(&[(2, 1), (3, 2)])).unwrap();
        assert_eq!((last, first), (Index(3), Some(Index(3))));
        assert_eq!(log.unstable_entries(), ents(&[(3, 2)]));
    }

    #[test]
    fn conflicting_suffix_is_replaced_and_unstable_again() {
        let mut log = log_with(&[1, 1, 2, 2]);
        let (last, cut) = log.append_after(Index(2), &ents(&[(3, 3)])).unwrap();
        assert_eq!((last, cut), (Index(3), Some(Index(3))));
        assert_eq!(log.last_index(), Index(3));
        assert_eq!(log.last_term(), Term(3));
        assert_eq!(log.stable(), Index(2));
        assert_eq!(log.unstable_entries(), ents(&[(3, 3)]));
    }

    #[test]
    fn conflict_with_committed_entry_is_refused() {
        let mut log = log_with(&[1, 1, 2]);
        log.commit_to(Index(3));
        let err = log.append_after(Index(2), &ents(&[(3, 3)])).unwrap_err();
        assert_eq!(err, CommittedConflict { index: Index(3), committed: Index(3) });
        assert_eq!(log.last_term(), Term(2));
    }

    #[test]
    fn term_hint_skips_whole_terms() {
        let log = log_with(&[1, 1, 1, 4, 4, 5, 5, 6, 6, 6]);
        assert_eq!(log.last_index_with_term_at_most(Index(10), Term(3)), Index(3));
        assert_eq!(log.last_index_with_term_at_most(Index(7), Term(5)), Index(7));
        assert_eq!(log.last_index_with_term_at_most(Index(20), Term(9)), Index(10));
        assert_eq!(log.last_index_with_term_at_most(Index(10), Term(0)), Index(0));
    }

    #[test]
    fn compaction_and_snapshot_install() {
        let mut log = log_with(&[1, 1, 2, 2, 3]);
        log.commit_to(Index(4));
        log.applied_to(Index(4));
        log.compact(Index(3));
        let cut: Vec<Index> = log.take_discarded().0.iter().flatten().map(|e| e.index).collect();
        assert_eq!(cut, [Index(1), Index(2), Index(3)], "the cut entries are handed over, not freed here");
        assert!(log.take_discarded().0.is_empty());
        assert_eq!(log.snapshot_index().next(), Index(4));
        assert_eq!(log.term(Index(3)), Some(Term(2)));
        assert_eq!(log.term(Index(2)), None);
        // A snapshot at 5/3 matches our entry 5: the log is kept through it.
        log.install_snapshot(Index(5), Term(3));
        assert_eq!(log.last_index(), Index(5));
        assert_eq!(log.committed(), Index(5));
        // One at 9/7 does not match anything: the log restarts after it.
        log.install_snapshot(Index(9), Term(7));
        assert_eq!((log.snapshot_index(), log.last_index()), (Index(9), Index(9)));
        assert_eq!(log.last_term(), Term(7));
    }

    #[test]
    fn up_to_date_rule() {
        let log = log_with(&[1, 2, 2]);
        assert!(log.is_up_to_date(Index(3), Term(2)));
        assert!(log.is_up_to_date(Index(1), Term(3)));
        assert!(!log.is_up_to_date(Index(2), Term(2)));
        assert!(!log.is_up_to_date(Index(9), Term(1)));
    }

    #[test]
    fn slices_respect_the_byte_budget_but_carry_one_entry() {
        let log = log_with(&[1, 1, 1, 1]);
        assert_eq!(log.slice_from(Index(2), 10, 1).len(), 1);
        assert_eq!(log.slice_from(Index(2), 2, usize::MAX).len(), 2);
        assert_eq!(log.slice_from(Index(5), 2, usize::MAX).len(), 0);
    }
}
