//! The write-ahead log: the node's memory on disk.
//!
//! Records (entries, hard state, truncations, snapshot markers) are appended
//! to preallocated segment files with pwrite, and a whole batch is made
//! durable by one fdatasync (group commit). The log is append-only: a
//! follower's conflicting suffix is cut by a truncation record, never by
//! overwriting. Every batch ends with a commit record, so recovery knows
//! exactly what was synced: what follows the last commit record is a torn
//! tail, cut at open; damage before it is corruption, reported with the file
//! and byte offset. Segments are read through memory maps at recovery.
//!
//! After a failed write or sync the log is failed: an fsync error cannot be
//! retried safely (the kernel may have dropped the dirty pages), so nothing
//! more is written or acknowledged. The README describes the format.

pub mod datadir;
mod error;
pub mod io;
pub mod manifest;
mod record;
pub mod recovery;
pub mod segment;
pub mod snapshot;
pub mod space;

use std::path::{Path, PathBuf};

pub use datadir::DataDir;
pub use error::WalError;
pub use io::{FileIo, WalIo};
pub use snapshot::{SealedSnapshot, SnapshotFile, SnapshotStore, SnapshotWriter};

use error::io_error;
use record::Record;

use crate::raft::{Entry, HardState, Index, Term};

#[derive(Clone, Debug)]
pub struct WalOptions {
    /// Size of each segment file, preallocated.
    pub segment_bytes: u64,
}

impl Default for WalOptions {
    fn default() -> WalOptions {
        WalOptions { segment_bytes: 64 * 1024 * 1024 }
    }
}

/// What recovery found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recovered {
    pub hard_state: HardState,
    /// The latest snapshot marker: entries through it were compacted.
    pub snapshot: Option<(Index, Term)>,
    /// Contiguous, all after the snapshot.
    pub entries: Vec<Entry>,
}

struct Segment {
    seq: u64,
    path: PathBuf,
    size: u64,
    /// The highest entry index written to it.
    max_index: Index,
}

pub struct Wal {
    dir: PathBuf,
    opts: WalOptions,
    io: Box<dyn WalIo>,
    /// Oldest first; the last one is being written. Never empty.
    segments: Vec<Segment>,
    /// Write position in the last segment.
    offset: u64,
    /// Records encoded since the last write, and where each ends in `buf`.
    buf: Vec<u8>,
    ends: Vec<(usize, Index)>,
    next_commit_seq: u64,
    /// The last batch known durable, named in every commit record.
    synced_seq: u64,
    last_index: Index,
    snapshot: Option<(Index, Term)>,
    hard_state: HardState,
    /// Segments written since the last sync.
    dirty: Vec<usize>,
    failed: Option<String>,
}

fn image_of(path: &Path) -> Result<memmap2::Mmap, WalError> {
    let f = std::fs::File::open(path).map_err(io_error(path, "open"))?;
    // SAFETY: the data directory is locked by this process, and nothing
    // writes the segments while recovery reads them.
    unsafe { memmap2::Mmap::map(&f) }.map_err(io_error(path, "map"))
}

impl Wal {
    pub fn open(dir: &DataDir, opts: WalOptions) -> Result<(Wal, Recovered), WalError> {
        Wal::open_with(dir.path(), opts, Box::new(FileIo::default()))
    }

    /// Opens the log in `data/wal`, with the given file layer.
    pub fn open_with(data: &Path, opts: WalOptions, mut io: Box<dyn WalIo>) -> Result<(Wal, Recovered), WalError> {
        let dir = data.join("wal");
        std::fs::create_dir_all(&dir).map_err(io_error(&dir, "create directory"))?;
        let seqs = list_segments(&dir)?;
        let newest = manifest::read(&dir)?;
        if let Some(n) = newest
            && seqs.last().is_none_or(|&last| last < n)
        {
            return Err(WalError::Corrupt {
                file: segment::path(&dir, n),
                offset: 0,
                what: format!("missing: {} says the log reaches this segment", manifest::path(&dir).display()),
            });
        }
        let maps: Vec<memmap2::Mmap> =
            seqs.iter().map(|&s| image_of(&segment::path(&dir, s))).collect::<Result<_, _>>()?;
        let images: Vec<recovery::Image<'_>> = seqs
            .iter()
            .zip(&maps)
            .map(|(&seq, m)| recovery::Image { path: segment::path(&dir, seq), seq, bytes: &m[..] })
            .collect();
        let scan = recovery::scan(&images, newest)?;
        let sizes: Vec<u64> = maps.iter().map(|m| m.len() as u64).collect();
        drop(images);
        drop(maps);
        let mut segments: Vec<Segment> = seqs
            .iter()
            .zip(&sizes)
            .zip(&scan.max_index_by_segment)
            .map(|((&seq, &size), &max_index)| Segment { seq, path: segment::path(&dir, seq), size, max_index })
            .collect();
        let offset = repair(&dir, &mut *io, &mut segments, &scan, &opts)?;
        let last_seq = segments.last().expect("repair leaves a segment").seq;
        if newest != Some(last_seq) {
            let path = manifest::path(&dir);
            io.replace(&path, &manifest::encode(last_seq)).map_err(io_error(&path, "write"))?;
        }
        // What recovery read may be only in the page cache (a process that
        // died before its sync finished): make it durable before the node
        // votes or acknowledges on the strength of it.
        for s in &segments {
            io.sync(&s.path).map_err(io_error(&s.path, "fdatasync"))?;
        }
        let last_index = scan.entries.last().map_or(scan.snapshot.map_or(Index::ZERO, |(i, _)| i), |e| e.index);
        let mut wal = Wal {
            dir,
            opts,
            io,
            segments,
            offset,
            buf: Vec::new(),
            ends: Vec::new(),
            next_commit_seq: scan.last_commit_seq + 1,
            synced_seq: scan.last_commit_seq,
            last_index,
            snapshot: scan.snapshot,
            hard_state: scan.hard_state,
            dirty: Vec::new(),
            failed: None,
        };
        wal.prepare_next();
        Ok((wal, Recovered { hard_state: scan.hard_state, snapshot: scan.snapshot, entries: scan.entries }))
    }

    fn check(&self) -> Result<(), WalError> {
        match &self.failed {
            Some(first) => Err(WalError::Failed { first: first.clone() }),
            None => Ok(()),
        }
    }

    fn push(&mut self, r: &Record) {
        record::encode(r, &mut self.buf);
        let index = match r {
            Record::Entry(e) => e.index,
            _ => Index::ZERO,
        };
        self.ends.push((self.buf.len(), index));
    }

    /// Appends entries; if they start at or before the last one, the log is
    /// first cut there by a truncation record.
    pub fn append(&mut self, entries: &[Entry]) -> Result<(), WalError> {
        self.check()?;
        let Some(first) = entries.first() else { return Ok(()) };
        if first.index <= self.last_index {
            self.push(&Record::Truncate { from: first.index });
        }
        for e in entries {
            self.push(&Record::Entry(e.clone()));
        }
        self.last_index = entries.last().expect("not empty").index;
        Ok(())
    }

    pub fn set_hard_state(&mut self, hs: &HardState) -> Result<(), WalError> {
        self.check()?;
        self.hard_state = *hs;
        self.push(&Record::HardState(*hs));
        Ok(())
    }

    /// Writes what was appended, ending the batch with a commit record,
    /// without waiting for the disk (`--fsync never`).
    pub fn flush(&mut self) -> Result<(), WalError> {
        self.check()?;
        self.write_batch().inspect_err(|e| self.fail(e))
    }

    /// Writes what was appended and makes it durable with one sync.
    pub fn sync(&mut self) -> Result<(), WalError> {
        self.check()?;
        let result = self.write_batch().and_then(|()| self.sync_dirty());
        if result.is_ok() {
            self.synced_seq = self.next_commit_seq - 1;
        }
        result.inspect_err(|e| self.fail(e))
    }

    fn fail(&mut self, e: &WalError) {
        if self.failed.is_none() {
            log::error!("write-ahead log failed: {e}");
            self.failed = Some(e.to_string());
        }
    }

    fn write_batch(&mut self) -> Result<(), WalError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let seq = self.next_commit_seq;
        let records =
            u32::try_from(self.ends.len()).map_err(|_| WalError::Failed { first: "batch too large".into() })?;
        self.push(&Record::Commit { seq, records, synced: self.synced_seq });
        let buf = std::mem::take(&mut self.buf);
        let ends = std::mem::take(&mut self.ends);
        // Records are written in runs, one per segment: a record never spans
        // two segments (a batch may).
        let (mut start, mut run) = (0, 0);
        let mut pos = self.offset;
        for (end, index) in ends {
            let len = (end - start) as u64;
            if pos + len > self.segments.last().expect("a segment").size {
                self.write_run(&buf[run..start])?;
                self.roll_over(len)?;
                run = start;
                pos = self.offset;
            }
            pos += len;
            let seg = self.segments.last_mut().expect("a segment");
            seg.max_index = seg.max_index.max(index);
            start = end;
        }
        self.write_run(&buf[run..])?;
        self.next_commit_seq += 1;
        Ok(())
    }

    /// Writes bytes at the write position of the last segment.
    fn write_run(&mut self, bytes: &[u8]) -> Result<(), WalError> {
        if bytes.is_empty() {
            return Ok(());
        }
        let last = self.segments.len() - 1;
        let path = self.segments[last].path.clone();
        self.io.write_at(&path, self.offset, bytes).map_err(io_error(&path, "write"))?;
        self.offset += bytes.len() as u64;
        if !self.dirty.contains(&last) {
            self.dirty.push(last);
        }
        Ok(())
    }

    /// Starts a new segment big enough for a record of `len` bytes, and
    /// names it the newest before anything is written to it.
    fn roll_over(&mut self, len: u64) -> Result<(), WalError> {
        let seq = self.segments.last().map_or(1, |s| s.seq + 1);
        let path = segment::path(&self.dir, seq);
        let size = self.opts.segment_bytes.max(segment::HEADER_BYTES as u64 + len);
        self.io.create(&path, size, &segment::header(seq, size)).map_err(io_error(&path, "create segment"))?;
        let newest = manifest::path(&self.dir);
        self.io.replace(&newest, &manifest::encode(seq)).map_err(io_error(&newest, "write"))?;
        self.segments.push(Segment { seq, path, size, max_index: Index::ZERO });
        self.prepare_next();
        self.offset = segment::HEADER_BYTES as u64;
        Ok(())
    }

    /// Has the segment after the newest made in the background.
    fn prepare_next(&mut self) {
        let seq = self.segments.last().map_or(1, |s| s.seq + 1);
        let size = self.opts.segment_bytes;
        self.io.prepare(&segment::path(&self.dir, seq), size, &segment::header(seq, size));
    }

    fn sync_dirty(&mut self) -> Result<(), WalError> {
        for k in std::mem::take(&mut self.dirty) {
            let Some(path) = self.segments.get(k).map(|s| s.path.clone()) else { continue };
            self.io.sync(&path).map_err(io_error(&path, "fdatasync"))?;
        }
        Ok(())
    }

    /// Records that a durable snapshot covers the log through `index`
    /// (taken here, or installed from a leader), syncs, then deletes the
    /// segments it wholly covers.
    pub fn mark_snapshot(&mut self, index: Index, term: Term) -> Result<(), WalError> {
        self.check()?;
        let keep_from = self.segments[..self.segments.len() - 1].iter().take_while(|s| s.max_index <= index).count();
        let first_kept = self.segments[keep_from].seq;
        self.push(&Record::Snapshot { index, term, first_kept });
        // The hard state must survive the deletion of older segments.
        let hs = self.hard_state;
        self.push(&Record::HardState(hs));
        self.sync()?;
        self.snapshot = Some((index, term));
        self.last_index = self.last_index.max(index);
        for s in self.segments.drain(..keep_from) {
            self.io.remove(&s.path).map_err(io_error(&s.path, "remove segment"))?;
        }
        self.dirty.clear();
        self.io.sync_dir(&self.dir).map_err(io_error(&self.dir, "fsync directory"))
    }

    /// Bytes the segments take on disk.
    pub fn disk_bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.size).sum()
    }

    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    pub fn last_index(&self) -> Index {
        self.last_index
    }

    /// The directory of the segments.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

fn list_segments(dir: &Path) -> Result<Vec<u64>, WalError> {
    let mut seqs = Vec::new();
    for e in std::fs::read_dir(dir).map_err(io_error(dir, "list"))? {
        let e = e.map_err(io_error(dir, "list"))?;
        let name = e.file_name().to_string_lossy().into_owned();
        match segment::seq_of(&name) {
            Some(seq) => seqs.push(seq),
            None if name.ends_with(".tmp") || name.ends_with(".spare") => {
                // A segment or the newest line whose creation a crash cut
                // short, or a segment made in advance: it never got its
                // name, so nothing refers to it.
                let _ = std::fs::remove_file(e.path());
            }
            None if name == "newest" => {}
            None => log::warn!("{}: ignoring a file that is not a log segment", e.path().display()),
        }
    }
    seqs.sort_unstable();
    if let Some(pair) = seqs.windows(2).find(|w| w[1] != w[0] + 1) {
        return Err(WalError::Corrupt {
            file: segment::path(dir, pair[1]),
            offset: 0,
            what: format!("segment {:#x} is missing before it", pair[0] + 1),
        });
    }
    Ok(seqs)
}

/// Prepares the log for writing after recovery: a first segment if there is
/// none, and a torn tail wiped (zeroed, later segments removed) so that no
/// stale record can ever be read after the new ones. Returns the write
/// offset in the last segment.
fn repair(
    dir: &Path,
    io: &mut dyn WalIo,
    segments: &mut Vec<Segment>,
    scan: &recovery::Scan,
    opts: &WalOptions,
) -> Result<u64, WalError> {
    let Some(end) = scan.end else {
        // No valid segment: start over (any file present was a torn creation).
        let seq = segments.first().map_or(1, |s| s.seq);
        for s in segments.drain(..) {
            io.remove(&s.path).map_err(io_error(&s.path, "remove torn segment"))?;
        }
        let path = segment::path(dir, seq);
        let header = segment::header(seq, opts.segment_bytes);
        io.create(&path, opts.segment_bytes, &header).map_err(io_error(&path, "create segment"))?;
        segments.push(Segment { seq, path, size: opts.segment_bytes, max_index: Index::ZERO });
        return Ok(segment::HEADER_BYTES as u64);
    };
    if scan.torn {
        log::warn!(
            "{}: cutting a torn tail at byte {} (a batch that was being written when the node stopped)",
            segments[end.segment].path.display(),
            end.offset
        );
        if end.segment + 1 < segments.len() {
            // The newest segment is named first: a crash in between leaves
            // extra segments past it, never a name without its segment.
            let newest = manifest::path(dir);
            io.replace(&newest, &manifest::encode(segments[end.segment].seq)).map_err(io_error(&newest, "write"))?;
        }
        for s in segments.drain(end.segment + 1..) {
            io.remove(&s.path).map_err(io_error(&s.path, "remove segment after a torn tail"))?;
        }
        let s = &segments[end.segment];
        let zeros = vec![0u8; (s.size - end.offset as u64) as usize];
        io.write_at(&s.path, end.offset as u64, &zeros).map_err(io_error(&s.path, "wipe torn tail"))?;
        io.sync(&s.path).map_err(io_error(&s.path, "fdatasync"))?;
        io.sync_dir(dir).map_err(io_error(dir, "fsync directory"))?;
    }
    Ok(end.offset as u64)
}

#[cfg(test)]
mod tests;
