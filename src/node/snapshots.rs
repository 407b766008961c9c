//! Log compaction in the node (Raft paper §7): taking snapshots of the state
//! machine without stalling the core thread, filling in the chunks the
//! leader's core sends to a follower that needs compacted entries, writing
//! the chunks a follower receives, and loading the newest snapshot at start.
//!
//! Taking one: the core thread takes a copy-on-write view of the store (the
//! cost of cloning the shard pointers) and the metadata at the applied index,
//! and a background thread serializes the view to a temporary file, fsyncs
//! and renames it. When it is done the core thread records a snapshot marker
//! in the log (which deletes the segments it wholly covers), cuts the
//! in-memory log, and has older snapshot files removed. Only then: a crash
//! at any point leaves the old snapshot and the whole log, or the new
//! snapshot and the log after it.
//!
//! The core thread touches no snapshot file on this path: checking the new
//! file is done by the thread that wrote it, and removing old ones (unlinking
//! hundreds of megabytes, syncing the directory) by a thread of its own.
//! Either can wait a long time on a busy disk, and the core thread must go on
//! heartbeating meanwhile, or followers start elections.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

use std::io::{Read, Write};

use crate::identity::ClusterId;
use crate::kv::{KvStore, KvView};
use crate::raft::{Entry, Index, SnapshotChunk, SnapshotMeta};
use crate::wal::{SnapshotFile, SnapshotStore, SnapshotWriter, WalError};

/// Bytes of snapshot data per InstallSnapshot message.
pub const CHUNK_BYTES: usize = 1 << 20;

/// A snapshot's data is the node's state: a header with the cluster id
/// (replicated state like the map: a node installing a snapshot takes the
/// id with it), then the map (`KvStore`'s format, with its own CRC).
///
/// ```text
/// "RKVNODE1" | cluster id [16] (zeros: none yet) | crc32 u32 of the 24 bytes before it | map
/// ```
///
/// Data without the header (from before it existed) is a map alone.
const NODE_MAGIC: &[u8; 8] = b"RKVNODE1";

/// The node's state in a snapshot.
#[derive(Debug)]
pub struct State {
    pub cluster: Option<ClusterId>,
    pub kv: KvStore,
}

/// Writes the state (`view` and `cluster`) as snapshot data.
pub fn write_state<W: Write>(mut w: W, cluster: Option<ClusterId>, view: &KvView) -> std::io::Result<()> {
    let mut header = NODE_MAGIC.to_vec();
    header.extend_from_slice(&ClusterId::option_bytes(cluster));
    let crc = crc32fast::hash(&header);
    header.extend_from_slice(&crc.to_le_bytes());
    w.write_all(&header)?;
    view.write_to(w).map(|_| ())
}

/// Reads snapshot data back, checking it whole.
pub fn read_state<R: Read>(mut r: R) -> Result<State, String> {
    let mut magic = [0u8; 8];
    r.read_exact(&mut magic).map_err(|e| format!("snapshot data: {e}"))?;
    if &magic != NODE_MAGIC {
        let kv = KvStore::load(std::io::Cursor::new(magic).chain(r)).map_err(|e| e.to_string())?;
        return Ok(State { cluster: None, kv });
    }
    let mut rest = [0u8; 20];
    r.read_exact(&mut rest).map_err(|e| format!("snapshot header: {e}"))?;
    let mut header = magic.to_vec();
    header.extend_from_slice(&rest[..16]);
    let crc = u32::from_le_bytes(rest[16..].try_into().expect("4 bytes"));
    if crc != crc32fast::hash(&header) {
        return Err("snapshot header: CRC mismatch".to_string());
    }
    let cluster = ClusterId::from_bytes(rest[..16].try_into().expect("16 bytes"));
    let kv = KvStore::load(r).map_err(|e| e.to_string())?;
    Ok(State { cluster, kv })
}

/// A snapshot the background thread finished (or failed to).
pub struct Taken {
    pub meta: SnapshotMeta,
    pub result: Result<SnapshotFile, String>,
    pub took: Duration,
}

/// A snapshot arriving from the leader, chunk by chunk: one transfer,
/// named as the core names it (`SnapshotChunk::same_transfer`).
struct Receiving {
    first: SnapshotChunk,
    writer: SnapshotWriter,
    next: u64,
}

pub struct Snapshots {
    store: SnapshotStore,
    /// The newest durable snapshot: what followers are sent.
    latest: Option<SnapshotFile>,
    receiving: Option<Receiving>,
    /// A received snapshot that passed its check, with the state it holds,
    /// waiting for the core to install it.
    verified: Option<(SnapshotFile, State)>,
    /// An older snapshot the core's log still starts at (`adopt`).
    held: Option<SnapshotFile>,
    /// The snapshot being taken in the background.
    taking: Option<SnapshotMeta>,
    done_tx: Sender<Taken>,
    pub done: Receiver<Taken>,
    /// The thread removing old snapshot files and freeing the log entries
    /// compaction cut (`None` if it could not be started: the core thread
    /// does both).
    remover: Option<Sender<Removal>>,
}

/// Old snapshot files to remove, or cut log entries to free.
enum Removal {
    /// Those older than `keep`, except `also` (one still in use).
    OlderThan {
        keep: PathBuf,
        also: Option<PathBuf>,
    },
    One(PathBuf),
    Entries(crate::raft::Discarded),
    /// Answers once every removal asked for before it is done.
    #[cfg(test)]
    Settled(Sender<()>),
}

impl Removal {
    fn carry_out(self, store: &SnapshotStore) {
        match self {
            Removal::OlderThan { keep, also } => {
                if let Err(e) = store.remove_older_except(&keep, also.as_deref()) {
                    log::warn!("cannot remove old snapshots: {e}");
                }
            }
            Removal::Entries(cut) => drop(cut),
            Removal::One(path) => {
                if let Err(e) = std::fs::remove_file(&path)
                    && e.kind() != std::io::ErrorKind::NotFound
                {
                    log::warn!("{}: cannot remove a snapshot no longer used: {e}", path.display());
                }
            }
            #[cfg(test)]
            Removal::Settled(tx) => {
                let _ = tx.send(());
            }
        }
    }
}

fn start_remover(store: SnapshotStore) -> Option<Sender<Removal>> {
    let (tx, rx) = crossbeam_channel::unbounded::<Removal>();
    let spawned = std::thread::Builder::new().name("snapshot-rm".into()).spawn(move || {
        for removal in rx {
            removal.carry_out(&store);
        }
    });
    match spawned {
        Ok(_) => Some(tx),
        Err(e) => {
            log::warn!("cannot start a thread to remove old snapshots ({e}): the core thread removes them");
            None
        }
    }
}

/// What the data directory holds at start: the newest intact snapshot and
/// the state machine loaded from it.
pub struct Loaded {
    pub snapshots: Snapshots,
    pub meta: Option<SnapshotMeta>,
    pub kv: KvStore,
    /// The cluster id the snapshot holds.
    pub cluster: Option<ClusterId>,
}

fn io_failed(path: &std::path::Path, op: &'static str) -> impl FnOnce(std::io::Error) -> WalError {
    let path = path.to_path_buf();
    move |source| WalError::Io { path, op, source }
}

impl Snapshots {
    /// Opens the snapshot directory and loads the newest intact snapshot.
    pub fn load(data: &std::path::Path) -> Result<Loaded, WalError> {
        let store = SnapshotStore::open(data)?;
        let latest = store.latest()?;
        let state = match &latest {
            None => State { cluster: None, kv: KvStore::new() },
            Some(f) => {
                let reader = f.reader().map_err(io_failed(&f.path, "read snapshot"))?;
                let state = read_state(reader).map_err(|e| WalError::Io {
                    path: f.path.clone(),
                    op: "load snapshot",
                    source: std::io::Error::other(e),
                })?;
                log::info!("loaded snapshot {}/{}: {} keys", f.meta.index, f.meta.term, state.kv.len());
                state
            }
        };
        let meta = latest.as_ref().map(|f| f.meta.clone());
        let (done_tx, done) = crossbeam_channel::bounded(1);
        let remover = start_remover(store.clone());
        let snapshots = Snapshots {
            store,
            latest,
            held: None,
            receiving: None,
            verified: None,
            taking: None,
            done_tx,
            done,
            remover,
        };
        Ok(Loaded { snapshots, meta, kv: state.kv, cluster: state.cluster })
    }

    pub fn index(&self) -> Index {
        self.latest.as_ref().map_or(Index::ZERO, |f| f.meta.index)
    }

    pub fn disk_bytes(&self) -> u64 {
        self.latest.as_ref().map_or(0, |f| f.data_bytes)
    }

    pub fn is_taking(&self) -> bool {
        self.taking.is_some()
    }

    /// Starts serializing `view` (the store at `meta.index`) in the
    /// background; the result arrives on `done`.
    pub fn start(&mut self, meta: SnapshotMeta, view: KvView, cluster: Option<ClusterId>) {
        let (store, tx) = (self.store.clone(), self.done_tx.clone());
        self.taking = Some(meta.clone());
        let spawned = std::thread::Builder::new().name("snapshot".into()).spawn(move || {
            crate::limits::lower_thread_priority();
            let started = Instant::now();
            let result = (|| {
                let mut w = store.create(&meta).map_err(|e| e.to_string())?;
                write_state(&mut w, cluster, &view).map_err(|e| e.to_string())?;
                let path = w.finish().map_err(|e| e.to_string())?;
                store.file(&path).map_err(|e| e.to_string())
            })();
            let _ = tx.send(Taken { meta, result, took: started.elapsed() });
        });
        if let Err(e) = spawned {
            log::error!("cannot start a thread to take a snapshot: {e}");
            self.taking = None;
        }
    }

    /// The background thread finished: the new snapshot, checked, if it is
    /// newer than the one in use (one installed from the leader meanwhile
    /// may be newer).
    pub fn finished(&mut self, taken: Taken) -> Result<Option<SnapshotFile>, String> {
        self.taking = None;
        // Obsolete first: a newer snapshot installed meanwhile may have had
        // this file removed before its check.
        if taken.meta.index <= self.index() {
            if let Ok(file) = taken.result {
                self.remove(Removal::One(file.path));
            }
            return Ok(None);
        }
        let file = taken.result?;
        log::info!("took snapshot {}/{} in {:?}", taken.meta.index, taken.meta.term, taken.took);
        Ok(Some(file))
    }

    fn remove(&self, removal: Removal) {
        let removal = match &self.remover {
            Some(tx) => match tx.send(removal) {
                Ok(()) => return,
                Err(crossbeam_channel::SendError(removal)) => removal,
            },
            None => removal,
        };
        removal.carry_out(&self.store);
    }

    /// Frees log entries compaction cut, away from the core thread.
    pub fn free(&self, cut: crate::raft::Discarded) {
        if !cut.0.is_empty() {
            self.remove(Removal::Entries(cut));
        }
    }

    /// Waits for the removals asked for so far.
    #[cfg(test)]
    fn settle(&self) {
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.remove(Removal::Settled(tx));
        let _ = rx.recv();
    }

    /// Makes `file` the newest snapshot and removes older ones, except the
    /// one at `core_at` where the core's log still starts (a leader keeping
    /// its log for a lagging follower goes on sending that one).
    pub fn adopt(&mut self, file: SnapshotFile, core_at: Index) {
        let older = [self.latest.take(), self.held.take()];
        self.held = older.into_iter().flatten().find(|f| f.meta.index == core_at && f.meta.index < file.meta.index);
        let also = self.held.as_ref().map(|f| f.path.clone());
        self.remove(Removal::OlderThan { keep: file.path.clone(), also });
        self.latest = Some(file);
    }

    /// Removes the snapshot kept for the core once its log has moved past
    /// it (`core_at`).
    pub fn release_held(&mut self, core_at: Index) {
        let Some(f) = self.held.take_if(|f| f.meta.index < core_at) else { return };
        self.remove(Removal::One(f.path));
    }

    /// Leader: fills in the data of an InstallSnapshot chunk from the file;
    /// false if the snapshot asked for is not the one on disk (the core asks
    /// again after a timeout, or starts over with the newer one).
    pub fn fill(&self, meta: &SnapshotMeta, offset: u64, data: &mut Vec<u8>, done: &mut bool) -> bool {
        let mut files = self.latest.iter().chain(self.held.iter());
        let Some(f) = files.find(|f| f.meta.index == meta.index && offset <= f.data_bytes) else {
            log::debug!("no snapshot {} on disk to send from", meta.index);
            return false;
        };
        match f.read_chunk(offset, CHUNK_BYTES) {
            Ok(bytes) => {
                *done = offset + bytes.len() as u64 >= f.data_bytes;
                *data = bytes;
                true
            }
            Err(e) => {
                log::error!("{}: cannot read snapshot: {e}", f.path.display());
                false
            }
        }
    }

    /// Follower: writes the chunks the core accepted, in order. When the
    /// last one of a transfer is written, checks the whole and returns the
    /// verdict for `Raft::snapshot_received`. Only the disk failing is an
    /// error; a snapshot that does not check out is removed and reported.
    pub fn receive(&mut self, chunks: Vec<SnapshotChunk>) -> Result<Option<bool>, WalError> {
        let mut verdict = None;
        for c in chunks {
            if c.offset == 0 {
                log::info!("receiving snapshot {}/{} from node {}", c.meta.index, c.meta.term, c.from);
                if let Some(old) = self.receiving.take() {
                    old.writer.discard();
                }
                let writer = self.store.create(&c.meta)?;
                let first = SnapshotChunk { data: Vec::new(), ..c.clone() };
                self.receiving = Some(Receiving { first, writer, next: 0 });
            }
            let follows = self.receiving.as_ref().is_some_and(|r| r.first.same_transfer(&c) && r.next == c.offset);
            if !follows {
                // The core hands out only chunks that follow; if one did not,
                // the file cannot be finished: the transfer fails its check
                // and starts over, and the node goes on.
                log::error!(
                    "snapshot chunk {}@{} from node {} does not follow what was written (a bug); dropping the transfer",
                    c.meta.index,
                    c.offset,
                    c.from
                );
                if let Some(r) = self.receiving.take() {
                    r.writer.discard();
                }
                if c.done {
                    verdict = Some(false);
                }
                continue;
            }
            let r = self.receiving.as_mut().expect("checked above");
            use std::io::Write;
            r.writer.write_all(&c.data).map_err(|source| WalError::Io {
                path: PathBuf::from("snapshots"),
                op: "write received snapshot",
                source,
            })?;
            r.next += c.data.len() as u64;
            if c.done {
                let r = self.receiving.take().expect("checked above");
                verdict = Some(self.check_received(r)?);
            }
        }
        Ok(verdict)
    }

    /// Seals a received snapshot and loads it; only if it loads (its CRC
    /// matches and it decodes) is it given its real name, so neither this
    /// process nor a restarted one ever takes a bad one for a snapshot.
    fn check_received(&mut self, r: Receiving) -> Result<bool, WalError> {
        let (index, term, from) = (r.first.meta.index, r.first.meta.term, r.first.from);
        let sealed = r.writer.seal()?;
        let loaded = sealed.file().and_then(|file| {
            let reader = file.reader().map_err(|e| e.to_string())?;
            read_state(reader).map(|state| (file, state))
        });
        match loaded {
            Ok((file, state)) => {
                let file = sealed.publish_as(file)?;
                self.verified = Some((file, state));
                Ok(true)
            }
            Err(e) => {
                log::warn!("snapshot {index}/{term} from node {from} failed its check ({e}); asking for it again");
                sealed.discard();
                Ok(false)
            }
        }
    }

    /// Follower: the core installs the snapshot it was told checks out;
    /// returns the file and the state it holds.
    pub fn install(&mut self, meta: &SnapshotMeta) -> Result<(SnapshotFile, State), WalError> {
        match self.verified.take() {
            Some((file, state)) if file.meta.index == meta.index && file.meta.term == meta.term => Ok((file, state)),
            other => Err(WalError::Failed {
                first: format!(
                    "the core installs snapshot {}/{} but the one checked is {:?} (a bug)",
                    meta.index,
                    meta.term,
                    other.map(|(f, _)| (f.meta.index, f.meta.term))
                ),
            }),
        }
    }
}

/// The log entries that follow `snapshot` (paper §7): if the log holds the
/// snapshot's last entry, the entries after it; otherwise none (the log
/// before a snapshot the leader sent may conflict with it).
pub fn entries_after(snapshot: Option<&SnapshotMeta>, entries: Vec<Entry>) -> Vec<Entry> {
    let Some(s) = snapshot else { return entries };
    match entries.iter().position(|e| e.index == s.index) {
        Some(k) if entries[k].term == s.term => entries.into_iter().skip(k + 1).collect(),
        Some(_) => Vec::new(),
        None => entries.into_iter().filter(|e| e.index > s.index).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::WriteOp;
    use crate::raft::{Membership, NodeId, Payload, Term};

    /// The chunks a leader `from` in `leader_term` would send of `data`.
    fn chunks(from: u64, leader_term: u64, meta: &SnapshotMeta, data: &[u8], size: usize) -> Vec<SnapshotChunk> {
        let mut out = Vec::new();
        let mut offset = 0;
        while offset < data.len() {
            let end = (offset + size).min(data.len());
            out.push(SnapshotChunk {
                from: NodeId(from),
                leader_term: Term(leader_term),
                meta: meta.clone(),
                offset: offset as u64,
                data: data[offset..end].to_vec(),
                done: end == data.len(),
            });
            offset = end;
        }
        out
    }

    fn store_bytes(keys: usize) -> Vec<u8> {
        let mut kv = KvStore::new();
        for k in 0..keys {
            kv.apply(&WriteOp::command(&[b"SET", format!("k{k}").as_bytes(), &[b'v'; 100]]), k as u64 + 1);
        }
        let mut data = Vec::new();
        write_state(&mut data, Some(ClusterId::parse("0123456789abcdef0123456789abcdef").unwrap()), &kv.view())
            .unwrap();
        data
    }

    fn snap_files(dir: &std::path::Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir.join("snapshots"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn a_damaged_snapshot_is_refused_and_leaves_nothing_a_restart_would_load() {
        let dir = tempfile::tempdir().unwrap();
        let mut snaps = Snapshots::load(dir.path()).unwrap().snapshots;
        let mut data = store_bytes(50);
        data[100] ^= 0x40;
        let verdict = snaps.receive(chunks(1, 2, &meta(9, 2), &data, 512)).unwrap();
        assert_eq!(verdict, Some(false));
        assert!(snap_files(dir.path()).is_empty(), "{:?}", snap_files(dir.path()));
        assert!(snaps.install(&meta(9, 2)).is_err(), "nothing checked to install");
        // A good copy afterwards installs, and a restart loads it.
        let good = store_bytes(50);
        assert_eq!(snaps.receive(chunks(1, 2, &meta(9, 2), &good, 512)).unwrap(), Some(true));
        let (file, state) = snaps.install(&meta(9, 2)).unwrap();
        assert_eq!(state.kv.len(), 50);
        assert_eq!(state.cluster.map(|c| c.to_string()).as_deref(), Some("0123456789abcdef0123456789abcdef"));
        snaps.adopt(file, Index(9));
        let loaded = Snapshots::load(dir.path()).unwrap();
        assert_eq!(loaded.meta.map(|m| m.index), Some(Index(9)));
        assert!(loaded.cluster.is_some());
    }

    /// A leader keeping its log for a lagging follower goes on sending the
    /// snapshot its log starts at: that file outlives a newer snapshot, and
    /// goes once the core's log has moved past it.
    #[test]
    fn the_snapshot_the_core_still_sends_is_kept_until_the_core_moves_on() {
        let dir = tempfile::tempdir().unwrap();
        let mut snaps = Snapshots::load(dir.path()).unwrap().snapshots;
        let adopt = |snaps: &mut Snapshots, index: u64, core_at: u64| {
            let data = store_bytes(index as usize);
            assert_eq!(snaps.receive(chunks(1, 2, &meta(index, 2), &data, 4096)).unwrap(), Some(true));
            let (file, _) = snaps.install(&meta(index, 2)).unwrap();
            snaps.adopt(file, Index(core_at));
            snaps.settle();
        };
        let fill = |snaps: &Snapshots, index: u64| {
            let (mut data, mut done) = (Vec::new(), false);
            snaps.fill(&meta(index, 2), 0, &mut data, &mut done) && !data.is_empty()
        };
        adopt(&mut snaps, 10, 10);
        adopt(&mut snaps, 20, 10);
        assert_eq!(snap_files(dir.path()).len(), 2, "{:?}", snap_files(dir.path()));
        assert!(fill(&snaps, 10) && fill(&snaps, 20));
        // Still held at 10 when 30 is taken.
        adopt(&mut snaps, 30, 10);
        assert_eq!(snap_files(dir.path()).len(), 2, "{:?}", snap_files(dir.path()));
        assert!(fill(&snaps, 10) && !fill(&snaps, 20) && fill(&snaps, 30));
        // The core compacted to 30 at a tick: 10 goes; then to 40.
        snaps.release_held(Index(30));
        snaps.settle();
        assert_eq!(snap_files(dir.path()).len(), 1, "{:?}", snap_files(dir.path()));
        assert!(!fill(&snaps, 10) && fill(&snaps, 30));
        adopt(&mut snaps, 40, 40);
        assert_eq!(snap_files(dir.path()).len(), 1, "{:?}", snap_files(dir.path()));
        assert!(!fill(&snaps, 10) && !fill(&snaps, 30) && fill(&snaps, 40));
        assert_eq!(Snapshots::load(dir.path()).unwrap().meta.map(|m| m.index), Some(Index(40)));
    }

    #[test]
    fn data_from_before_the_header_loads_without_a_cluster_id() {
        let mut kv = KvStore::new();
        kv.apply(&WriteOp::command(&[b"SET", b"k", b"v"]), 1);
        let mut old = Vec::new();
        kv.write_snapshot(&mut old).unwrap();
        let state = read_state(&old[..]).unwrap();
        assert_eq!((state.cluster, state.kv.len()), (None, 1));
        let mut new = Vec::new();
        write_state(&mut new, None, &kv.view()).unwrap();
        new[10] ^= 1;
        assert!(read_state(&new[..]).unwrap_err().contains("CRC"));
    }

    #[test]
    fn a_new_transfer_starts_a_new_file_instead_of_continuing_the_old_one() {
        let dir = tempfile::tempdir().unwrap();
        let mut snaps = Snapshots::load(dir.path()).unwrap().snapshots;
        let data = store_bytes(40);
        let from_1 = chunks(1, 2, &meta(9, 2), &data, 256);
        assert_eq!(snaps.receive(from_1[..3].to_vec()).unwrap(), None);
        // Node 3 leads term 3 and sends the same snapshot from the start.
        assert_eq!(snaps.receive(chunks(3, 3, &meta(9, 2), &data, 300)).unwrap(), Some(true));
        assert!(snaps.install(&meta(9, 2)).is_ok());
        // A chunk that does not follow what was written (a bug upstream)
        // drops the transfer: the verdict is a refusal, not a disk error.
        let mut stray = chunks(1, 2, &meta(12, 2), &data, 256);
        stray.remove(1);
        assert_eq!(snaps.receive(stray).unwrap(), Some(false));
    }

    fn e(index: u64, term: u64) -> Entry {
        Entry { index: Index(index), term: Term(term), payload: Payload::Noop }
    }

    fn meta(index: u64, term: u64) -> SnapshotMeta {
        SnapshotMeta { index: Index(index), term: Term(term), membership: Membership::with_voters([NodeId(1)]) }
    }

    #[test]
    fn the_log_after_a_snapshot_keeps_only_a_matching_suffix() {
        let log = vec![e(4, 1), e(5, 1), e(6, 2), e(7, 2)];
        assert_eq!(entries_after(None, log.clone()), log);
        assert_eq!(entries_after(Some(&meta(5, 1)), log.clone()), vec![e(6, 2), e(7, 2)]);
        assert_eq!(entries_after(Some(&meta(7, 2)), log.clone()), vec![]);
        // The log conflicts with the snapshot at its last entry: all of it goes.
        assert_eq!(entries_after(Some(&meta(6, 3)), log.clone()), vec![]);
        // A snapshot just before the log's first entry keeps all of it.
        assert_eq!(entries_after(Some(&meta(3, 1)), log.clone()), log);
        // Newer than the whole log.
        assert_eq!(entries_after(Some(&meta(9, 3)), log), vec![]);
    }
}
