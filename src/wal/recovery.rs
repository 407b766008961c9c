//! Recovery: a pure function from the bytes of the segments to the log's
//! state, so that tests can tear and damage those bytes at every offset.
//!
//! The writer ends every batch with a commit record naming the batch, how
//! many records it holds, and the last batch already known durable. Records
//! count only once their batch's commit record is read and the count
//! matches. Where the records stop (zeros, a damaged record, a wrong count),
//! the batch there was either being written when the node stopped (a torn
//! write: the tail is cut) or it was synced and is now damaged. Only a later
//! commit record can tell: one that says this batch was durable proves
//! damage, and recovery refuses, naming the file and offset. A flipped bit
//! in the very last batch is indistinguishable from a torn write.

use std::path::PathBuf;

use super::error::WalError;
use super::record::{self, Parsed, Record};
use super::segment;
use crate::raft::{Entry, HardState, Index, Term};

/// One segment as found on disk.
pub struct Image<'a> {
    pub path: PathBuf,
    pub seq: u64,
    pub bytes: &'a [u8],
}

/// Where writing continues.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Position {
    /// Index into the images.
    pub segment: usize,
    pub offset: usize,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Scan {
    pub hard_state: HardState,
    pub snapshot: Option<(Index, Term)>,
    /// Contiguous, all after the snapshot.
    pub entries: Vec<Entry>,
    pub last_commit_seq: u64,
    /// After the last valid commit record; `None` when no segment has a
    /// valid header (an empty log).
    pub end: Option<Position>,
    /// Bytes after `end` that are not zeros: a torn tail to wipe.
    pub torn: bool,
    /// The highest entry index each segment holds (for compaction).
    pub max_index_by_segment: Vec<Index>,
}

/// The log as replayed so far.
#[derive(Default)]
struct Replay {
    hard_state: HardState,
    snapshot: Option<(Index, Term)>,
    /// Index of `entries[0]`.
    base: Index,
    entries: Vec<Entry>,
    /// The oldest segment the latest compaction kept (0: not said).
    first_kept: u64,
}

impl Replay {
    fn last(&self) -> Index {
        Index(self.base.0 + self.entries.len() as u64).prev_or_zero()
    }

    fn apply(&mut self, r: Record) -> Result<(), String> {
        match r {
            Record::Entry(e) => {
                if self.entries.is_empty() {
                    self.base = e.index;
                } else if e.index.0 > self.base.0 + self.entries.len() as u64 {
                    return Err(format!("entry {} follows entry {}: a gap", e.index, self.last()));
                } else if e.index < self.base {
                    self.entries.clear();
                    self.base = e.index;
                } else {
                    self.entries.truncate((e.index.0 - self.base.0) as usize);
                }
                self.entries.push(e);
            }
            Record::HardState(hs) => self.hard_state = hs,
            Record::Truncate { from } => {
                if from <= self.base {
                    self.entries.clear();
                } else {
                    self.entries.truncate((from.0 - self.base.0) as usize);
                }
            }
            Record::Snapshot { index, term, first_kept } => {
                self.first_kept = first_kept;
                let matching = self.entries.iter().position(|e| e.index == index && e.term == term);
                match matching {
                    Some(k) => {
                        self.entries.drain(..=k);
                    }
                    None => self.entries.clear(),
                }
                self.base = index.next();
                self.snapshot = Some((index, term));
            }
            Record::Commit { .. } => unreachable!("commits are handled by the scan"),
        }
        Ok(())
    }
}

trait PrevOrZero {
    fn prev_or_zero(self) -> Index;
}

impl PrevOrZero for Index {
    fn prev_or_zero(self) -> Index {
        Index(self.0.saturating_sub(1))
    }
}

fn corrupt(image: &Image<'_>, offset: usize, what: impl Into<String>) -> WalError {
    WalError::Corrupt { file: image.path.clone(), offset: offset as u64, what: what.into() }
}

/// Replays the segments, in order of their sequence numbers. `newest` is
/// the newest segment the directory says it holds.
pub fn scan(images: &[Image<'_>], newest: Option<u64>) -> Result<Scan, WalError> {
    let mut replay = Replay::default();
    // Records since the last commit, with the segment each is in.
    let mut pending: Vec<(usize, Record)> = Vec::new();
    let mut scan = Scan { max_index_by_segment: vec![Index::ZERO; images.len()], ..Scan::default() };
    for (i, image) in images.iter().enumerate() {
        let last_segment = i + 1 == images.len();
        let header_bytes = match segment::check_header(image.bytes, image.seq) {
            Ok(n) => n,
            // Segments are created whole under a temporary name, so a bad
            // header is damage; only a last segment of zeros that the
            // directory never named (an older node's creation cut short)
            // is not.
            Err(_) if last_segment && newest.is_none_or(|n| n < image.seq) && image.bytes.iter().all(|&b| b == 0) => {
                break;
            }
            Err(what) => return Err(corrupt(image, 0, what)),
        };
        if scan.end.is_none() {
            scan.end = Some(Position { segment: i, offset: header_bytes });
        }
        let mut offset = header_bytes;
        loop {
            let stopped = match record::parse(&image.bytes[offset..]) {
                Parsed::Record(Record::Commit { seq, records, synced }, size) => {
                    // Compaction deletes whole segments, so the first batch
                    // left may have begun in a deleted one.
                    let compacted = i == 0 && scan.last_commit_seq == 0 && image.seq > 1;
                    let expected = if compacted { seq } else { scan.last_commit_seq + 1 };
                    let count_ok =
                        if compacted { records as usize >= pending.len() } else { records as usize == pending.len() };
                    if seq != expected || !count_ok || synced >= seq {
                        format!(
                            "commit record of batch {seq} ({records} records), expected batch {expected} ({} records)",
                            pending.len()
                        )
                    } else {
                        for (in_segment, r) in pending.drain(..) {
                            if let Record::Entry(e) = &r {
                                let m = &mut scan.max_index_by_segment[in_segment];
                                *m = (*m).max(e.index);
                            }
                            replay.apply(r).map_err(|what| corrupt(image, offset, what))?;
                        }
                        scan.last_commit_seq = seq;
                        offset += size;
                        scan.end = Some(Position { segment: i, offset });
                        continue;
                    }
                }
                Parsed::Record(r, size) => {
                    pending.push((i, r));
                    offset += size;
                    continue;
                }
                // A writer moves to the next segment when a record does not
                // fit, leaving zeros behind.
                Parsed::End if !last_segment && image.bytes[offset..].iter().all(|&b| b == 0) => break,
                Parsed::End => "zeros".to_string(),
                Parsed::Bad(what) => what,
            };
            ensure_not_synced(images, i, offset, scan.last_commit_seq + 1, &stopped)?;
            return finish(replay, scan, images);
        }
    }
    finish(replay, scan, images)
}

/// The records stopped at `offset` of segment `i`, in batch `seq`: refuses
/// if a later commit record says that batch was durable.
fn ensure_not_synced(images: &[Image<'_>], i: usize, offset: usize, seq: u64, what: &str) -> Result<(), WalError> {
    if let Some(at) = record::find_proof_synced(images[i].bytes, offset, seq) {
        return Err(corrupt(
            &images[i],
            offset,
            format!("{what}, before a commit record at byte {at} that says this was synced"),
        ));
    }
    for later in &images[i + 1..] {
        if record::find_proof_synced(later.bytes, 0, seq).is_some() {
            return Err(corrupt(
                &images[i],
                offset,
                format!("{what}, before a commit record in {} that says this was synced", later.path.display()),
            ));
        }
    }
    Ok(())
}

fn finish(replay: Replay, mut scan: Scan, images: &[Image<'_>]) -> Result<Scan, WalError> {
    // Segments are deleted only by compaction, oldest first, after a marker
    // names the oldest one kept; a log without a marker began at segment 1.
    if let Some(first) = images.first() {
        let kept = if replay.snapshot.is_some() { replay.first_kept } else { 1 };
        if kept > 0 && first.seq > kept {
            return Err(WalError::Corrupt {
                file: first.path.with_file_name(super::segment::file_name(kept)),
                offset: 0,
                what: format!("missing: the log should hold every segment from {kept:#x} on"),
            });
        }
    }
    let first_entry = replay.entries.first().map(|e| e.index);
    if let Some(first) = first_entry {
        let covered = replay.snapshot.map_or(Index::ZERO, |(i, _)| i);
        if first.prev_or_zero() > covered {
            let path = images.first().map(|i| i.path.clone()).unwrap_or_default();
            return Err(WalError::Corrupt {
                file: path,
                offset: 0,
                what: format!("the log starts at entry {first} but no snapshot covers the entries before it"),
            });
        }
    }
    scan.torn = tail_has_bytes(images, scan.end);
    scan.hard_state = replay.hard_state;
    scan.snapshot = replay.snapshot;
    scan.entries = replay.entries;
    Ok(scan)
}

/// Whether anything but zeros lies after the end position.
fn tail_has_bytes(images: &[Image<'_>], end: Option<Position>) -> bool {
    let Some(end) = end else { return images.iter().any(|i| i.bytes.iter().any(|&b| b != 0)) };
    images[end.segment].bytes[end.offset..].iter().any(|&b| b != 0) || end.segment + 1 < images.len()
}
