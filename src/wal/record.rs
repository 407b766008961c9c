//! Log records: `len u32 | crc u32 | kind u8 | body`, where `len` counts the
//! kind and the body and the CRC32 covers them. `len` is never 0, so the
//! zeros of a preallocated segment read as "no more records here".
//!
//! ```text
//! kind 1 entry      codec entry
//! kind 2 hard state codec hard state
//! kind 3 truncate   from u64: every entry at or after `from` is gone
//! kind 4 snapshot   index u64, term u64: a durable snapshot covers the log
//!                   through `index` (paper §7 rule for what stays after it)
//! kind 6 snapshot   the same, and first_kept u64: the segments before this
//!                   one are deleted now; one missing at or after it is damage
//! kind 5 commit     "RKVSYNC!" seq u64, records u32, synced u64: the end of
//!                   batch `seq`, which holds `records` records; `synced` is
//!                   the last batch known durable when this one was written
//! ```

use crate::codec::{DecodeError, Reader, Writer};
use crate::config::RECORD_BYTES_MAX;
use crate::raft::{Entry, HardState, Index, Term};

pub const HEADER_BYTES: usize = 8;
pub const COMMIT_MAGIC: &[u8; 8] = b"RKVSYNC!";

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    Entry(Entry),
    HardState(HardState),
    Truncate {
        from: Index,
    },
    /// `first_kept`: the oldest segment left after the compaction this
    /// marks (0 in records of kind 4, which did not say).
    Snapshot {
        index: Index,
        term: Term,
        first_kept: u64,
    },
    Commit {
        seq: u64,
        records: u32,
        synced: u64,
    },
}

pub fn encode(record: &Record, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&[0u8; HEADER_BYTES]);
    let mut w = Writer::new(out);
    match record {
        Record::Entry(e) => {
            w.u8(1);
            w.entry(e);
        }
        Record::HardState(hs) => {
            w.u8(2);
            w.hard_state(hs);
        }
        Record::Truncate { from } => {
            w.u8(3);
            w.u64(from.0);
        }
        Record::Snapshot { index, term, first_kept } => {
            w.u8(6);
            w.u64(index.0);
            w.u64(term.0);
            w.u64(*first_kept);
        }
        Record::Commit { seq, records, synced } => {
            w.u8(5);
            w.buf.extend_from_slice(COMMIT_MAGIC);
            w.u64(*seq);
            w.u32(*records);
            w.u64(*synced);
        }
    }
    let len = out.len() - start - HEADER_BYTES;
    assert!(len + HEADER_BYTES <= RECORD_BYTES_MAX, "record of {len} bytes");
    let crc = crc32fast::hash(&out[start + HEADER_BYTES..]);
    out[start..start + 4].copy_from_slice(&(len as u32).to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// What is at the front of `buf`.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// A valid record and its size.
    Record(Record, usize),
    /// Zeros: nothing was written here.
    End,
    /// Not a valid record (short, bad length, bad CRC, bad body).
    Bad(String),
}

pub fn parse(buf: &[u8]) -> Parsed {
    if buf.len() < HEADER_BYTES {
        return if buf.iter().all(|&b| b == 0) { Parsed::End } else { Parsed::Bad("short record header".into()) };
    }
    let len = u32::from_le_bytes(buf[..4].try_into().expect("4 bytes")) as usize;
    let crc = u32::from_le_bytes(buf[4..8].try_into().expect("4 bytes"));
    if len == 0 {
        return if crc == 0 { Parsed::End } else { Parsed::Bad("record of length 0".into()) };
    }
    if len + HEADER_BYTES > RECORD_BYTES_MAX {
        return Parsed::Bad(format!("record length {len} exceeds {RECORD_BYTES_MAX}"));
    }
    if buf.len() < HEADER_BYTES + len {
        return Parsed::Bad(format!("record of {len} bytes runs past the end of the segment"));
    }
    let payload = &buf[HEADER_BYTES..HEADER_BYTES + len];
    let got = crc32fast::hash(payload);
    if got != crc {
        return Parsed::Bad(format!("CRC {got:#010x}, expected {crc:#010x}"));
    }
    match decode_payload(payload) {
        Ok(r) => Parsed::Record(r, HEADER_BYTES + len),
        Err(e) => Parsed::Bad(format!("record body: {e}")),
    }
}

fn decode_payload(payload: &[u8]) -> Result<Record, DecodeError> {
    let mut r = Reader::new(payload);
    let record = match r.u8("record kind")? {
        1 => Record::Entry(r.entry()?),
        2 => Record::HardState(r.hard_state()?),
        3 => Record::Truncate { from: Index(r.u64("truncation index")?) },
        4 => Record::Snapshot {
            index: Index(r.u64("snapshot index")?),
            term: Term(r.u64("snapshot term")?),
            first_kept: 0,
        },
        6 => Record::Snapshot {
            index: Index(r.u64("snapshot index")?),
            term: Term(r.u64("snapshot term")?),
            first_kept: r.u64("first kept segment")?,
        },
        5 => {
            let magic = r.take(8, "commit magic")?;
            if magic != COMMIT_MAGIC {
                return Err(r.invalid("commit magic", "wrong magic"));
            }
            Record::Commit {
                seq: r.u64("commit seq")?,
                records: r.u32("commit record count")?,
                synced: r.u64("commit synced seq")?,
            }
        }
        k => return Err(r.invalid("record kind", format!("unknown kind {k}"))),
    };
    r.finish()?;
    Ok(record)
}

/// The offset in `buf`, at or after `from`, of a valid commit record that
/// says batch `seq` was durable: proof that damage before it is not a torn
/// write but the loss of synced data.
pub fn find_proof_synced(buf: &[u8], from: usize, seq: u64) -> Option<usize> {
    let mut at = from;
    while at + COMMIT_MAGIC.len() <= buf.len() {
        let rest = &buf[at..];
        let hit = rest.windows(COMMIT_MAGIC.len()).position(|w| w == COMMIT_MAGIC)?;
        let magic_at = at + hit;
        // The magic sits after the 8-byte header and the kind byte.
        let start = magic_at.checked_sub(HEADER_BYTES + 1).filter(|&s| s >= from);
        if let Some(start) = start
            && let Parsed::Record(Record::Commit { synced, .. }, _) = parse(&buf[start..])
            && synced >= seq
        {
            return Some(start);
        }
        at = magic_at + 1;
    }
    None
}
