//! A node's stable storage in the simulator. Writes happen in the order a
//! real node makes them (snapshot chunks, snapshot, entries, hard state); a
//! crash before the sync keeps an arbitrary prefix of them, as an append-only
//! log on a real disk would.

use crate::raft::{
    Entry, HardState, Index, InitialState, Membership, NodeId, Ready, SnapshotChunk, SnapshotMeta, Term,
};

#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Disk {
    pub hard_state: HardState,
    pub snapshot: Option<(SnapshotMeta, Vec<u8>)>,
    /// An older snapshot kept while the core's log still starts at it (a
    /// leader holding its log for a follower sends that one).
    pub held: Option<(SnapshotMeta, Vec<u8>)>,
    /// Contiguous, all after the snapshot.
    pub entries: Vec<Entry>,
    /// Chunks of a snapshot being received (a real node's temp file), and
    /// the transfer they belong to: sender, its term, snapshot index and
    /// term.
    pub receiving: Vec<u8>,
    pub receiving_from: Option<(NodeId, Term, Index, Term)>,
    /// A received snapshot that passed its check, set aside for the core to
    /// install (a new transfer may begin before it does).
    pub verified: Option<(Index, Vec<u8>)>,
}

/// One write, in the order they reach the disk.
#[derive(Clone, Debug)]
pub enum Write {
    Chunk(SnapshotChunk),
    Snapshot(SnapshotMeta),
    Entry(Entry),
    HardState(HardState),
}

impl Disk {
    pub fn writes_for(rd: &Ready) -> Vec<Write> {
        let mut writes: Vec<Write> = rd.snapshot_chunks.iter().cloned().map(Write::Chunk).collect();
        writes.extend(rd.snapshot.iter().cloned().map(Write::Snapshot));
        writes.extend(rd.entries.iter().cloned().map(Write::Entry));
        writes.extend(rd.hard_state.iter().copied().map(Write::HardState));
        writes
    }

    /// Writes `w` as the node's storage would; an error where the real node
    /// would stop on a storage failure (its snapshot writer and its core
    /// disagree about what was received).
    pub fn write(&mut self, w: Write) -> Result<(), String> {
        match w {
            Write::Chunk(c) => {
                // As the node's snapshot writer: offset 0 starts a file; any
                // other chunk must continue the same transfer where it
                // stands. The core hands out only such chunks; if it did
                // not, the node would be stuck with a file it cannot finish.
                let key = (c.from, c.leader_term, c.meta.index, c.meta.term);
                if c.offset == 0 {
                    self.receiving.clear();
                    self.receiving_from = Some(key);
                }
                if self.receiving_from != Some(key) || c.offset as usize != self.receiving.len() {
                    return Err(format!(
                        "storage: the core handed out chunk {}@{} of transfer {key:?}, but the snapshot file holds {} \
                         bytes of {:?}",
                        c.meta.index,
                        c.offset,
                        self.receiving.len(),
                        self.receiving_from
                    ));
                }
                self.receiving.extend_from_slice(&c.data);
            }
            Write::Snapshot(meta) => self.install(meta)?,
            Write::Entry(e) => self.append(e),
            Write::HardState(hs) => self.hard_state = hs,
        }
        Ok(())
    }

    fn snapshot_index(&self) -> Index {
        self.snapshot.as_ref().map_or(Index::ZERO, |(m, _)| m.index)
    }

    fn append(&mut self, e: Entry) {
        let first = self.snapshot_index().next();
        assert!(e.index >= first, "entry {} before the snapshot", e.index);
        self.entries.truncate((e.index.0 - first.0) as usize);
        assert_eq!(e.index, first.plus(self.entries.len() as u64), "entries written with a gap");
        self.entries.push(e);
    }

    /// A snapshot received from the leader replaces the log unless the log
    /// goes on past it consistently (paper §7).
    fn install(&mut self, meta: SnapshotMeta) -> Result<(), String> {
        let data = match self.verified.take() {
            Some((index, data)) if index == meta.index => data,
            other => {
                return Err(format!(
                    "storage: the core installs snapshot {} but the one received and checked is {:?}",
                    meta.index,
                    other.map(|v| v.0)
                ));
            }
        };
        let keep_from = self.entries.iter().position(|e| e.index == meta.index && e.term == meta.term).map(|k| k + 1);
        self.entries = match keep_from {
            Some(k) => self.entries.split_off(k),
            None => Vec::new(),
        };
        self.snapshot = Some((meta, data));
        Ok(())
    }

    /// The snapshot being received is complete and checked: set it aside.
    pub fn set_aside_received(&mut self, index: Index) {
        self.verified = Some((index, std::mem::take(&mut self.receiving)));
        self.receiving_from = None;
    }

    /// The node snapshotted its own state machine through `meta.index`;
    /// `core_at`: the index the core's log starts after, whose snapshot is
    /// kept as long as the core may send it.
    pub fn compact(&mut self, meta: SnapshotMeta, data: Vec<u8>, core_at: Index) {
        let drop = self.entries.iter().take_while(|e| e.index <= meta.index).count();
        self.entries.drain(..drop);
        let old = self.snapshot.replace((meta, data));
        self.held = [old, self.held.take()].into_iter().flatten().find(|(m, _)| m.index == core_at);
    }

    /// The snapshot at `index`, the newest or the one held.
    pub fn snapshot_at(&self, index: Index) -> Option<&[u8]> {
        [&self.snapshot, &self.held].into_iter().flatten().find(|(m, _)| m.index == index).map(|(_, d)| d.as_slice())
    }

    pub fn initial_state(&self, bootstrap: &Membership) -> InitialState {
        InitialState {
            hard_state: self.hard_state,
            snapshot: self.snapshot.as_ref().map(|(m, _)| m.clone()),
            entries: self.entries.clone(),
            bootstrap: bootstrap.clone(),
        }
    }
}
