use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;
use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};

use super::*;
use crate::raft::{Membership, NodeId, Payload, SnapshotMeta};

fn entry(index: u64, term: u64) -> Entry {
    let payload = match index % 5 {
        0 => Payload::Noop,
        1 => Payload::Membership(Membership::with_voters([NodeId(1), NodeId(2), NodeId(3)])),
        _ => Payload::command(format!("cmd-{index}-{term}").into_bytes()),
    };
    Entry { index: Index(index), term: Term(term), payload }
}

fn hs(term: u64, vote: Option<u64>, commit: u64) -> HardState {
    HardState { term: Term(term), vote: vote.map(NodeId), commit: Index(commit) }
}

fn small() -> WalOptions {
    WalOptions { segment_bytes: 4096 }
}

fn open(data: &Path) -> Result<(Wal, Recovered), WalError> {
    Wal::open_with(data, small(), Box::new(FileIo::default()))
}

#[test]
fn every_record_kind_survives_a_clean_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let (mut wal, rec) = open(dir.path()).unwrap();
    assert_eq!(rec, Recovered::default());
    wal.append(&(1..=6).map(|i| entry(i, 1)).collect::<Vec<_>>()).unwrap();
    wal.set_hard_state(&hs(1, Some(2), 3)).unwrap();
    wal.sync().unwrap();
    // A follower replaces a conflicting suffix: a truncation record.
    wal.append(&[entry(5, 2), entry(6, 2), entry(7, 2)]).unwrap();
    wal.set_hard_state(&hs(2, None, 6)).unwrap();
    wal.sync().unwrap();
    drop(wal);
    let (mut wal, rec) = open(dir.path()).unwrap();
    let mut expected: Vec<Entry> = (1..=4).map(|i| entry(i, 1)).collect();
    expected.extend([entry(5, 2), entry(6, 2), entry(7, 2)]);
    assert_eq!(rec.entries, expected);
    assert_eq!(rec.hard_state, hs(2, None, 6));
    assert_eq!(rec.snapshot, None);
    // A snapshot marker drops what it covers and keeps a matching suffix.
    wal.mark_snapshot(Index(5), Term(2)).unwrap();
    drop(wal);
    let (_, rec) = open(dir.path()).unwrap();
    assert_eq!(rec.snapshot, Some((Index(5), Term(2))));
    assert_eq!(rec.entries, vec![entry(6, 2), entry(7, 2)]);
    assert_eq!(rec.hard_state, hs(2, None, 6));
}

#[test]
fn a_snapshot_that_does_not_match_discards_the_log_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let (mut wal, _) = open(dir.path()).unwrap();
    wal.append(&(1..=4).map(|i| entry(i, 1)).collect::<Vec<_>>()).unwrap();
    wal.sync().unwrap();
    wal.mark_snapshot(Index(9), Term(3)).unwrap();
    wal.append(&[entry(10, 3)]).unwrap();
    wal.sync().unwrap();
    drop(wal);
    let (_, rec) = open(dir.path()).unwrap();
    assert_eq!(rec.snapshot, Some((Index(9), Term(3))));
    assert_eq!(rec.entries, vec![entry(10, 3)]);
}

/// The log's single segment, after some synced batches and a final batch.
fn log_with_final_batch(dir: &Path) -> (Vec<u8>, usize, usize) {
    let (mut wal, _) =
        Wal::open_with(dir, WalOptions { segment_bytes: 64 * 1024 }, Box::new(FileIo::default())).unwrap();
    for i in 1..=5 {
        wal.append(&[entry(i, 1)]).unwrap();
        wal.set_hard_state(&hs(1, Some(1), i - 1)).unwrap();
        wal.sync().unwrap();
    }
    let before = wal.offset as usize;
    wal.append(&[entry(6, 1), entry(7, 1)]).unwrap();
    wal.set_hard_state(&hs(1, Some(1), 5)).unwrap();
    wal.sync().unwrap();
    let after = wal.offset as usize;
    drop(wal);
    let bytes = std::fs::read(dir.join("wal").join(segment::file_name(1))).unwrap();
    (bytes, before, after)
}

#[test]
fn a_torn_final_batch_is_cut_at_every_offset_whatever_follows() {
    let dir = tempfile::tempdir().unwrap();
    let (bytes, before, after) = log_with_final_batch(dir.path());
    let seg = dir.path().join("wal").join(segment::file_name(1));
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(0x7077);
    for cut in before..after {
        for garbage in [false, true] {
            let mut torn = bytes.clone();
            for b in &mut torn[cut..after] {
                *b = if garbage { rng.random() } else { 0 };
            }
            std::fs::write(&seg, &torn).unwrap();
            let (mut wal, rec) = open(dir.path()).unwrap_or_else(|e| panic!("cut {cut} garbage {garbage}: {e}"));
            // Zeros over zeros (the high bytes of the last field) damage
            // nothing, and then the batch is whole.
            let whole = torn == bytes;
            assert_eq!(rec.entries.len(), if whole { 7 } else { 5 }, "cut {cut} garbage {garbage}");
            assert_eq!(rec.hard_state, hs(1, Some(1), if whole { 5 } else { 4 }));
            // Writing goes on where the torn batch began, and the wipe
            // leaves nothing stale behind it.
            wal.append(&[entry(6, 2)]).unwrap();
            wal.sync().unwrap();
            drop(wal);
            let (_, rec) = open(dir.path()).unwrap();
            assert_eq!(rec.entries.last(), Some(&entry(6, 2)), "cut {cut}");
        }
    }
    std::fs::write(&seg, &bytes).unwrap();
    let (_, rec) = open(dir.path()).unwrap();
    assert_eq!(rec.entries.len(), 7);
}

#[test]
fn a_flipped_bit_in_synced_records_is_reported_with_its_offset() {
    let dir = tempfile::tempdir().unwrap();
    let (bytes, before, _) = log_with_final_batch(dir.path());
    let seg = dir.path().join("wal").join(segment::file_name(1));
    // Every byte of the synced records before the final batch.
    for at in segment::HEADER_BYTES..before {
        let mut bad = bytes.clone();
        bad[at] ^= 0x10;
        std::fs::write(&seg, &bad).unwrap();
        let err = match open(dir.path()) {
            Err(e) => e,
            Ok((_, rec)) => panic!("damage at byte {at} went unnoticed: {} entries", rec.entries.len()),
        };
        let WalError::Corrupt { file, offset, .. } = &err else { panic!("{err}") };
        assert_eq!(file, &seg);
        assert!(*offset as usize <= at, "reported offset {offset} after the damage at {at}");
        assert!(err.to_string().contains("refusing to start"), "{err}");
    }
}

#[test]
fn segments_roll_over_and_recover_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let (mut wal, _) = open(dir.path()).unwrap();
    for i in 1..=2000 {
        wal.append(&[entry(i, 1 + i / 500)]).unwrap();
        if i % 7 == 0 {
            wal.sync().unwrap();
        }
    }
    wal.set_hard_state(&hs(5, Some(3), 1999)).unwrap();
    wal.sync().unwrap();
    assert!(wal.segment_count() > 20, "{} segments", wal.segment_count());
    drop(wal);
    let (mut wal, rec) = open(dir.path()).unwrap();
    assert_eq!(rec.entries.len(), 2000);
    assert!(rec.entries.iter().enumerate().all(|(k, e)| *e == entry(k as u64 + 1, 1 + (k as u64 + 1) / 500)));
    // Compaction deletes the segments the snapshot covers, and only those.
    let before = wal.segment_count();
    wal.mark_snapshot(Index(1500), Term(4)).unwrap();
    assert!(wal.segment_count() < before);
    drop(wal);
    let (_, rec) = open(dir.path()).unwrap();
    assert_eq!(rec.snapshot, Some((Index(1500), Term(4))));
    assert_eq!(rec.entries.first().map(|e| e.index), Some(Index(1501)));
    assert_eq!(rec.entries.len(), 500);
    assert_eq!(rec.hard_state, hs(5, Some(3), 1999));
}

#[test]
fn a_missing_segment_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let (mut wal, _) = open(dir.path()).unwrap();
    for i in 1..=300 {
        wal.append(&[entry(i, 1)]).unwrap();
        wal.sync().unwrap();
    }
    drop(wal);
    let missing = dir.path().join("wal").join(segment::file_name(2));
    std::fs::remove_file(&missing).unwrap();
    let err = open(dir.path()).err().expect("a missing segment is an error");
    assert!(err.to_string().contains("missing"), "{err}");
}

// ---- snapshots ----

fn meta(index: u64) -> SnapshotMeta {
    SnapshotMeta { index: Index(index), term: Term(2), membership: Membership::with_voters([NodeId(1)]) }
}

#[test]
fn snapshots_are_atomic_and_broken_ones_are_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let store = SnapshotStore::open(dir.path()).unwrap();
    let mut w = store.create(&meta(10)).unwrap();
    w.write_all(&vec![7u8; 100_000]).unwrap();
    w.finish().unwrap();
    // A crash after writing a newer one but before renaming it.
    let mut w = store.create(&meta(20)).unwrap();
    w.write_all(b"half").unwrap();
    drop(w);
    let store = SnapshotStore::open(dir.path()).unwrap();
    let latest = store.latest().unwrap().unwrap();
    assert_eq!(latest.meta, meta(10));
    assert_eq!(latest.read_chunk(99_990, 100).unwrap(), vec![7u8; 10]);
    let mut all = Vec::new();
    std::io::Read::read_to_end(&mut latest.reader().unwrap(), &mut all).unwrap();
    assert_eq!(all.len(), 100_000);
    // A newer one, complete but damaged, is skipped.
    let mut w = store.create(&meta(30)).unwrap();
    w.write_all(b"some data").unwrap();
    let path = w.finish().unwrap();
    let mut bytes = std::fs::read(&path).unwrap();
    let n = bytes.len();
    bytes[n - 10] ^= 1;
    std::fs::write(&path, bytes).unwrap();
    assert_eq!(store.latest().unwrap().unwrap().meta, meta(10));
}

// ---- failures ----

/// A file layer that fails writes with ENOSPC once a byte budget is spent,
/// or syncs with EIO once asked to.
struct Faulty {
    inner: FileIo,
    write_budget: Arc<Mutex<Option<usize>>>,
    fail_sync: Arc<Mutex<bool>>,
}

impl WalIo for Faulty {
    fn create(&mut self, path: &Path, size: u64, header: &[u8]) -> std::io::Result<()> {
        self.inner.create(path, size, header)
    }

    fn write_at(&mut self, path: &Path, offset: u64, bytes: &[u8]) -> std::io::Result<()> {
        let mut budget = self.write_budget.lock();
        if let Some(left) = budget.as_mut() {
            if *left < bytes.len() {
                // Part of the write reaches the file, as on a full disk.
                self.inner.write_at(path, offset, &bytes[..*left])?;
                *left = 0;
                return Err(std::io::Error::from_raw_os_error(28));
            }
            *left -= bytes.len();
        }
        self.inner.write_at(path, offset, bytes)
    }

    fn sync(&mut self, path: &Path) -> std::io::Result<()> {
        if *self.fail_sync.lock() {
            return Err(std::io::Error::from_raw_os_error(5));
        }
        self.inner.sync(path)
    }

    fn replace(&mut self, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
        self.inner.replace(path, bytes)
    }

    fn remove(&mut self, path: &Path) -> std::io::Result<()> {
        self.inner.remove(path)
    }

    fn sync_dir(&mut self, dir: &Path) -> std::io::Result<()> {
        self.inner.sync_dir(dir)
    }
}

#[test]
fn a_full_disk_fails_the_log_and_loses_nothing_synced() {
    for fail in ["enospc", "eio"] {
        let dir = tempfile::tempdir().unwrap();
        let budget = Arc::new(Mutex::new(None));
        let fail_sync = Arc::new(Mutex::new(false));
        let io = Faulty { inner: FileIo::default(), write_budget: budget.clone(), fail_sync: fail_sync.clone() };
        let (mut wal, _) = Wal::open_with(dir.path(), small(), Box::new(io)).unwrap();
        for i in 1..=10 {
            wal.append(&[entry(i, 1)]).unwrap();
            wal.sync().unwrap();
        }
        if fail == "enospc" {
            *budget.lock() = Some(30);
        } else {
            *fail_sync.lock() = true;
        }
        wal.append(&[entry(11, 1), entry(12, 1)]).unwrap();
        let err = wal.sync().unwrap_err();
        let expected = if fail == "enospc" { "No space left on device" } else { "Input/output error" };
        assert!(err.to_string().contains(expected), "{err}");
        // Failed for good: nothing more is taken, even once space is back.
        *budget.lock() = None;
        *fail_sync.lock() = false;
        let later = wal.append(&[entry(13, 1)]).unwrap_err();
        assert!(later.to_string().contains("failed earlier"), "{later}");
        drop(wal);
        let (_, rec) = open(dir.path()).unwrap();
        assert!(rec.entries.len() >= 10, "{fail}: synced entries lost: {}", rec.entries.len());
        assert_eq!(rec.entries[..10], (1..=10).map(|i| entry(i, 1)).collect::<Vec<_>>()[..]);
    }
}

// ---- random histories against a model, with crashes ----

/// Keeps every file in memory as what is durable plus the writes since the
/// last sync, so that a crash can keep any prefix of those writes.
/// A file's durable bytes and the writes since its last sync.
type MemFile = (Vec<u8>, Vec<(u64, Vec<u8>)>);

#[derive(Clone, Default)]
struct MemIo {
    files: Arc<Mutex<HashMap<PathBuf, MemFile>>>,
}

impl WalIo for MemIo {
    fn create(&mut self, path: &Path, size: u64, header: &[u8]) -> std::io::Result<()> {
        let mut image = vec![0u8; size as usize];
        image[..header.len()].copy_from_slice(header);
        self.files.lock().insert(path.to_path_buf(), (image, Vec::new()));
        Ok(())
    }

    fn write_at(&mut self, path: &Path, offset: u64, bytes: &[u8]) -> std::io::Result<()> {
        let mut files = self.files.lock();
        let f = files.get_mut(path).ok_or_else(|| std::io::Error::other("no such file"))?;
        f.1.push((offset, bytes.to_vec()));
        Ok(())
    }

    fn sync(&mut self, path: &Path) -> std::io::Result<()> {
        let mut files = self.files.lock();
        let f = files.get_mut(path).ok_or_else(|| std::io::Error::other("no such file"))?;
        for (offset, bytes) in std::mem::take(&mut f.1) {
            f.0[offset as usize..offset as usize + bytes.len()].copy_from_slice(&bytes);
        }
        Ok(())
    }

    /// Durable at once, as the real one is once it returns.
    fn replace(&mut self, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
        self.files.lock().insert(path.to_path_buf(), (bytes.to_vec(), Vec::new()));
        Ok(())
    }

    fn remove(&mut self, path: &Path) -> std::io::Result<()> {
        self.files.lock().remove(path);
        Ok(())
    }

    fn sync_dir(&mut self, _dir: &Path) -> std::io::Result<()> {
        Ok(())
    }
}

impl MemIo {
    /// Writes what survives a crash to the real directory: the durable
    /// image plus any subset of the writes since the last sync, each whole
    /// or torn anywhere (the page cache writes back in no particular order).
    fn crash_into(&self, rng: &mut Xoshiro256PlusPlus) {
        for (path, (durable, pending)) in self.files.lock().iter() {
            let mut image = durable.clone();
            for (offset, bytes) in pending {
                let n = match rng.random_range(0..3) {
                    0 => 0,
                    1 => bytes.len(),
                    _ => rng.random_range(0..=bytes.len()),
                };
                image[*offset as usize..*offset as usize + n].copy_from_slice(&bytes[..n]);
            }
            std::fs::write(path, &image).unwrap();
        }
    }
}

/// The log as a model: entries by index and the hard state.
#[derive(Clone, Debug, Default, PartialEq)]
struct Model {
    entries: Vec<Entry>,
    hard_state: HardState,
}

/// Truncates a segment anywhere, deletes one, or deletes the newest line.
fn damage_at_random(wal_dir: &Path, rng: &mut Xoshiro256PlusPlus) -> String {
    let mut files: Vec<PathBuf> = std::fs::read_dir(wal_dir).unwrap().flatten().map(|e| e.path()).collect();
    files.sort();
    let segments: Vec<&PathBuf> = files.iter().filter(|p| p.extension().is_some_and(|x| x == "wal")).collect();
    let Some(&target) = segments.get(rng.random_range(0..segments.len().max(1))) else {
        return "nothing (no segment)".into();
    };
    match rng.random_range(0..3) {
        0 => {
            let len = std::fs::metadata(target).unwrap().len();
            let at = rng.random_range(0..=len);
            std::fs::OpenOptions::new().write(true).open(target).unwrap().set_len(at).unwrap();
            format!("truncating {} to {at} of {len} bytes", target.display())
        }
        1 => {
            std::fs::remove_file(target).unwrap();
            format!("deleting {}", target.display())
        }
        _ => {
            let _ = std::fs::remove_file(manifest::path(wal_dir));
            "deleting wal/newest".into()
        }
    }
}

#[test]
fn random_appends_truncations_and_crashes_keep_what_was_synced() {
    let mut damaged = 0;
    for seed in 0..60u64 {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(0xa11 ^ seed);
        let dir = tempfile::tempdir().unwrap();
        let wal_dir = dir.path().join("wal");
        std::fs::create_dir_all(&wal_dir).unwrap();
        let mut model = Model::default();
        let mut term = 1;
        for _round in 0..4 {
            let mem = MemIo::default();
            // Start from what is on disk: load it into memory first.
            for e in std::fs::read_dir(&wal_dir).unwrap().flatten() {
                mem.files.lock().insert(e.path(), (std::fs::read(e.path()).unwrap(), Vec::new()));
            }
            let (mut wal, rec) = Wal::open_with(dir.path(), WalOptions { segment_bytes: 2048 }, Box::new(mem.clone()))
                .unwrap_or_else(|e| panic!("seed {seed}: {e}"));
            assert_eq!(rec.entries, model.entries, "seed {seed}: entries after recovery");
            assert_eq!(rec.hard_state, model.hard_state, "seed {seed}");
            // States that a crash may legitimately leave: the last synced
            // one, or any later batch that happened to reach the disk whole.
            let mut acceptable = vec![model.clone()];
            let mut current = model.clone();
            for _ in 0..rng.random_range(1..30) {
                match rng.random_range(0..10) {
                    0..=5 => {
                        let last = current.entries.last().map_or(0, |e| e.index.0);
                        let from = if last > 0 && rng.random_bool(0.3) { rng.random_range(1..=last) } else { last + 1 };
                        if rng.random_bool(0.3) {
                            term += 1;
                        }
                        let batch: Vec<Entry> = (from..from + rng.random_range(1..5)).map(|i| entry(i, term)).collect();
                        wal.append(&batch).unwrap();
                        current.entries.truncate((from - 1) as usize);
                        current.entries.extend(batch);
                    }
                    6 | 7 => {
                        let h = hs(term, Some(rng.random_range(1..4)), rng.random_range(0..10));
                        wal.set_hard_state(&h).unwrap();
                        current.hard_state = h;
                    }
                    _ => {
                        wal.sync().unwrap();
                        acceptable = vec![current.clone()];
                    }
                }
                if rng.random_bool(0.2) {
                    wal.flush().unwrap();
                    acceptable.push(current.clone());
                }
            }
            wal.flush().unwrap();
            acceptable.push(current.clone());
            drop(wal);
            for e in std::fs::read_dir(&wal_dir).unwrap().flatten() {
                std::fs::remove_file(e.path()).unwrap();
            }
            mem.crash_into(&mut rng);
            if rng.random_bool(0.3) {
                // Damage on top of the crash: whatever survives it must be
                // a state a crash could leave, or the node must refuse.
                let what = damage_at_random(&wal_dir, &mut rng);
                match open(dir.path()) {
                    Err(_) => {
                        damaged += 1;
                        model = Model::default();
                        for e in std::fs::read_dir(dir.path()).unwrap().flatten() {
                            let _ = std::fs::remove_dir_all(e.path());
                        }
                        std::fs::create_dir_all(&wal_dir).unwrap();
                        continue;
                    }
                    Ok((_, rec)) => {
                        let got = Model { entries: rec.entries, hard_state: rec.hard_state };
                        assert!(
                            acceptable.contains(&got),
                            "seed {seed}: after {what}, recovered a state that lost synced data"
                        );
                        model = got;
                        continue;
                    }
                }
            }
            let (_, rec) = open(dir.path()).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
            let got = Model { entries: rec.entries, hard_state: rec.hard_state };
            let k = acceptable.iter().position(|m| *m == got).unwrap_or_else(|| {
                panic!(
                    "seed {seed}: recovered a state no crash could leave: {} entries, {:?}",
                    got.entries.len(),
                    got.hard_state
                )
            });
            model = acceptable[k].clone();
        }
    }
    assert!(damaged > 5, "the damage draw must lead to refusals now and then ({damaged})");
}

// ---- the damaged-directory matrix ----

/// Writes 60 batches of 1-3 entries, each synced (so all acknowledged), over
/// several small segments. Returns the entries and, for each batch, its
/// entries' count.
fn acknowledged_log(data: &Path) -> (Vec<Entry>, Vec<usize>) {
    let (mut wal, _) = Wal::open_with(data, WalOptions { segment_bytes: 1024 }, Box::new(FileIo::default())).unwrap();
    let mut entries = Vec::new();
    let mut batches = Vec::new();
    let mut next = 1;
    for b in 0..60u64 {
        let n = (b % 3 + 1) as usize;
        let batch: Vec<Entry> = (next..next + n as u64).map(|i| entry(i, 1)).collect();
        next += n as u64;
        wal.append(&batch).unwrap();
        wal.set_hard_state(&hs(1, Some(1), next - 1)).unwrap();
        wal.sync().unwrap();
        entries.extend(batch);
        batches.push(n);
    }
    (entries, batches)
}

/// Where in a segment damage lands: its header, its first record, the
/// middle of its records, its last commit record, or after that (zeros, or
/// the start of a batch that goes on in the next segment).
#[derive(Clone, Copy, Debug)]
enum Spot {
    Header,
    FirstRecord,
    Middle,
    LastCommit,
    Tail,
}

fn spot_offset(bytes: &[u8], spot: Spot) -> usize {
    let commits: Vec<usize> =
        bytes.windows(8).enumerate().filter(|(_, w)| *w == record::COMMIT_MAGIC).map(|(i, _)| i).collect();
    let last_commit = commits.last().copied().unwrap_or(segment::HEADER_BYTES);
    let end_of_records = last_commit + 8 + 8 + 4 + 8;
    match spot {
        Spot::Header => 8,
        Spot::FirstRecord => segment::HEADER_BYTES + 2,
        Spot::Middle => (segment::HEADER_BYTES + end_of_records) / 2,
        Spot::LastCommit => last_commit + 4,
        Spot::Tail => (end_of_records + bytes.len()) / 2,
    }
}

/// The final batch's first byte in the newest segment (after the
/// commit record before it), if it begins there.
fn final_batch_start(bytes: &[u8]) -> Option<usize> {
    let commits: Vec<usize> =
        bytes.windows(8).enumerate().filter(|(_, w)| *w == record::COMMIT_MAGIC).map(|(i, _)| i).collect();
    match commits[..] {
        [.., before, _] => Some(before + 8 + 8 + 4 + 8),
        _ => None,
    }
}

/// Every kind of damage at every kind of place in the first, a middle and
/// the newest segment: each case either recovers every acknowledged entry
/// or refuses, naming a file. The one exception, which no log can avoid
/// without a second sync per batch, is damage confined to the final batch:
/// it cannot be told from that batch's torn write, and the log recovers
/// without it (README, Storage).
#[test]
fn every_damaged_directory_recovers_everything_or_refuses() {
    let mut table = Vec::new();
    let mut refused = 0;
    for damage in ["truncate", "delete", "zero", "flip"] {
        for which in ["first", "middle", "newest"] {
            for spot in [Spot::Header, Spot::FirstRecord, Spot::Middle, Spot::LastCommit, Spot::Tail] {
                if damage == "delete" && !matches!(spot, Spot::Header) {
                    continue;
                }
                let dir = tempfile::tempdir().unwrap();
                let (acked, batches) = acknowledged_log(dir.path());
                let mut segs: Vec<PathBuf> = std::fs::read_dir(dir.path().join("wal"))
                    .unwrap()
                    .flatten()
                    .map(|e| e.path())
                    .filter(|p| p.extension().is_some_and(|x| x == "wal"))
                    .collect();
                segs.sort();
                assert!(segs.len() >= 4, "the log spans several segments");
                let target = match which {
                    "first" => segs[0].clone(),
                    "middle" => segs[segs.len() / 2].clone(),
                    _ => segs[segs.len() - 1].clone(),
                };
                let mut bytes = std::fs::read(&target).unwrap();
                let at = spot_offset(&bytes, spot);
                let in_final_batch = which == "newest" && final_batch_start(&bytes).is_some_and(|start| at >= start);
                match damage {
                    "truncate" => bytes.truncate(at),
                    "zero" => {
                        let end = (at + 16).min(bytes.len());
                        bytes[at..end].fill(0);
                    }
                    "flip" => bytes[at] ^= 0x10,
                    _ => {}
                }
                if damage == "delete" {
                    std::fs::remove_file(&target).unwrap();
                } else {
                    std::fs::write(&target, &bytes).unwrap();
                }
                let outcome = match open(dir.path()) {
                    Err(e) => {
                        let text = e.to_string();
                        assert!(text.contains(".wal"), "{damage} {which} {spot:?}: the refusal names no file: {text}");
                        refused += 1;
                        "refused".to_string()
                    }
                    Ok((_, rec)) if rec.entries == acked => "recovered all".to_string(),
                    Ok((_, rec)) => {
                        let without_final = acked.len() - batches.last().copied().unwrap_or(0);
                        assert!(
                            in_final_batch && rec.entries[..] == acked[..without_final],
                            "{damage} {which} {spot:?} at {at}: recovered {} of {} acknowledged entries",
                            rec.entries.len(),
                            acked.len()
                        );
                        "final batch lost (as a torn write)".to_string()
                    }
                };
                table.push(format!("{damage:<8} {which:<7} {:<12} {outcome}", format!("{spot:?}")));
            }
        }
    }
    println!("{}", table.join("\n"));
    assert!(refused >= 20, "damage is refused, not recovered around ({refused})");
}
