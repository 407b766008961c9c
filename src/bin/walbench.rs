//! `walbench`: how fast the write-ahead log makes records durable, beside
//! the ways the disk itself can be driven, on the same disk.
//!
//! ```text
//! walbench [--dir DIR] [--seconds S] [--rounds N] [--out FILE]
//! ```
//!
//! The candidates take turns for N rounds (disks drift; turns spread the
//! drift over all of them) and each one's median round is reported.
//!
//! Every candidate writes 100-byte records into a preallocated, zero-filled
//! 64 MiB file and makes them durable:
//! - `pwrite+fdatasync`: the hardware's pace, the loop the log must match;
//! - `mmap+msync`: memcpy into a shared mapping, then msync of the range;
//! - `wal 1/sync` and `wal 100/sync`: `raftkv::wal::Wal`, one sync per
//!   record and one per 100 records (group commit).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use raftkv::raft::{Entry, Index, Payload, Term};
use raftkv::wal::{FileIo, Wal, WalOptions};

const RECORD_BYTES: usize = 100;
const FILE_BYTES: u64 = 64 * 1024 * 1024;

/// One candidate: a name for errors, and the run.
type Candidate<'a> = (&'static str, Box<dyn Fn() -> std::io::Result<Measured> + 'a>);

struct Measured {
    name: &'static str,
    syncs: u64,
    records: u64,
    elapsed: Duration,
}

impl Measured {
    fn syncs_per_sec(&self) -> f64 {
        self.syncs as f64 / self.elapsed.as_secs_f64()
    }

    fn records_per_sec(&self) -> f64 {
        self.records as f64 / self.elapsed.as_secs_f64()
    }
}

fn zero_file(path: &Path) -> std::io::Result<File> {
    let mut f = OpenOptions::new().read(true).write(true).create(true).truncate(true).open(path)?;
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..FILE_BYTES / zeros.len() as u64 {
        f.write_all(&zeros)?;
    }
    f.sync_all()?;
    Ok(f)
}

/// Runs `step` (which makes `per_sync` records durable) until `seconds` pass
/// or the file is full.
fn timed(
    name: &'static str,
    seconds: f64,
    per_sync: u64,
    mut step: impl FnMut(u64) -> std::io::Result<bool>,
) -> std::io::Result<Measured> {
    let start = Instant::now();
    let mut syncs = 0;
    while start.elapsed().as_secs_f64() < seconds {
        if !step(syncs)? {
            break;
        }
        syncs += 1;
    }
    Ok(Measured { name, syncs, records: syncs * per_sync, elapsed: start.elapsed() })
}

fn raw_pwrite(dir: &Path, seconds: f64) -> std::io::Result<Measured> {
    let f = zero_file(&dir.join("raw.bin"))?;
    let record = [0x5au8; RECORD_BYTES];
    timed("pwrite+fdatasync", seconds, 1, |n| {
        let offset = n * RECORD_BYTES as u64;
        if offset + RECORD_BYTES as u64 > FILE_BYTES {
            return Ok(false);
        }
        f.write_all_at(&record, offset)?;
        f.sync_data()?;
        Ok(true)
    })
}

fn mmap_msync(dir: &Path, seconds: f64) -> std::io::Result<Measured> {
    let f = zero_file(&dir.join("mmap.bin"))?;
    // SAFETY: the file is private to this benchmark and not resized.
    let mut map = unsafe { memmap2::MmapMut::map_mut(&f)? };
    let record = [0x5au8; RECORD_BYTES];
    timed("mmap+msync", seconds, 1, |n| {
        let offset = (n as usize) * RECORD_BYTES;
        if offset + RECORD_BYTES > map.len() {
            return Ok(false);
        }
        map[offset..offset + RECORD_BYTES].copy_from_slice(&record);
        map.flush_range(offset, RECORD_BYTES)?;
        Ok(true)
    })
}

fn wal(dir: &Path, seconds: f64, per_sync: u64, name: &'static str) -> std::io::Result<Measured> {
    let data = dir.join(format!("wal-{per_sync}"));
    let _ = std::fs::remove_dir_all(&data);
    let opts = WalOptions { segment_bytes: FILE_BYTES };
    let (mut wal, _) = Wal::open_with(&data, opts, Box::new(FileIo::default())).map_err(std::io::Error::other)?;
    // A command of a size that makes the whole record 100 bytes.
    let payload = vec![0x5au8; RECORD_BYTES - 31];
    let mut index = 0u64;
    let result = timed(name, seconds, per_sync, |_| {
        let batch: Vec<Entry> = (0..per_sync)
            .map(|_| {
                index += 1;
                Entry { index: Index(index), term: Term(1), payload: Payload::command(payload.clone()) }
            })
            .collect();
        wal.append(&batch).map_err(std::io::Error::other)?;
        wal.sync().map_err(std::io::Error::other)?;
        Ok(true)
    });
    drop(wal);
    let _ = std::fs::remove_dir_all(&data);
    result
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut dir = PathBuf::from("data/walbench");
    let mut seconds = 3.0;
    let mut out: Option<PathBuf> = None;
    let mut rounds = 3usize;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let value = it.next();
        match (a.as_str(), value) {
            ("--dir", Some(v)) => dir = PathBuf::from(v),
            ("--seconds", Some(v)) => match v.parse::<f64>() {
                Ok(s) if s > 0.0 => seconds = s,
                _ => {
                    eprintln!("walbench: --seconds: {v:?} is not a positive number");
                    return ExitCode::from(2);
                }
            },
            ("--out", Some(v)) => out = Some(PathBuf::from(v)),
            ("--rounds", Some(v)) => match v.parse::<usize>() {
                Ok(n) if n > 0 => rounds = n,
                _ => {
                    eprintln!("walbench: --rounds: {v:?} is not a positive whole number");
                    return ExitCode::from(2);
                }
            },
            ("-h" | "--help", _) => {
                println!("usage: walbench [--dir DIR] [--seconds S] [--rounds N] [--out FILE]");
                return ExitCode::SUCCESS;
            }
            _ => {
                eprintln!("usage: walbench [--dir DIR] [--seconds S] [--rounds N] [--out FILE]");
                return ExitCode::from(2);
            }
        }
    }
    if let Err(e) = std::fs::create_dir_all(&dir) {
        eprintln!("walbench: {}: {e}", dir.display());
        return ExitCode::from(1);
    }
    let runs: [Candidate<'_>; 4] = [
        ("raw", Box::new(|| raw_pwrite(&dir, seconds))),
        ("mmap", Box::new(|| mmap_msync(&dir, seconds))),
        ("wal1", Box::new(|| wal(&dir, seconds, 1, "wal 1 record/sync"))),
        ("wal100", Box::new(|| wal(&dir, seconds, 100, "wal 100 records/sync"))),
    ];
    let mut all: Vec<Vec<Measured>> = runs.iter().map(|_| Vec::new()).collect();
    for _ in 0..rounds {
        for ((what, run), got) in runs.iter().zip(&mut all) {
            match run() {
                Ok(r) => got.push(r),
                Err(e) => {
                    eprintln!("walbench: {what}: {e}");
                    return ExitCode::from(1);
                }
            }
        }
    }
    let results: Vec<Measured> = all
        .into_iter()
        .map(|mut got| {
            got.sort_by(|a, b| a.syncs_per_sec().total_cmp(&b.syncs_per_sec()));
            got.swap_remove(got.len() / 2)
        })
        .collect();
    for f in ["raw.bin", "mmap.bin"] {
        let _ = std::fs::remove_file(dir.join(f));
    }
    let raw = results[0].syncs_per_sec();
    let mut text = format!(
        "# walbench: {RECORD_BYTES}-byte records into a preallocated 64 MiB file in {}; median of {rounds} rounds of {seconds} s\n",
        dir.display()
    );
    text.push_str(&format!("{:<22} {:>10} {:>12} {:>9}\n", "method", "syncs/s", "records/s", "vs raw"));
    for r in &results {
        text.push_str(&format!(
            "{:<22} {:>10.0} {:>12.0} {:>8.0}%\n",
            r.name,
            r.syncs_per_sec(),
            r.records_per_sec(),
            100.0 * r.syncs_per_sec() / raw
        ));
    }
    print!("{text}");
    if let Some(out) = out
        && let Err(e) = std::fs::write(&out, &text)
    {
        eprintln!("walbench: {}: {e}", out.display());
        return ExitCode::from(1);
    }
    ExitCode::SUCCESS
}
