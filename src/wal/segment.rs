//! Segment files: `wal/<seq as 16 hex digits>.wal`, preallocated with zeros
//! to a fixed size, starting with a 32-byte header:
//!
//! ```text
//! magic "RKVWAL\0\1" (8) | version u32 | reserved u32 | seq u64 | crc u32 of the 24 bytes before | pad u32
//! ```
//! The header names the segment's place in the log, so a renamed or foreign
//! file is noticed.

use std::path::{Path, PathBuf};

pub const HEADER_BYTES: usize = 32;
const MAGIC: &[u8; 8] = b"RKVWAL\x00\x01";
const VERSION: u32 = 1;

pub fn file_name(seq: u64) -> String {
    format!("{seq:016x}.wal")
}

pub fn path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(file_name(seq))
}

/// The sequence number in a segment's file name, if it is one.
pub fn seq_of(name: &str) -> Option<u64> {
    let hex = name.strip_suffix(".wal")?;
    (hex.len() == 16).then(|| u64::from_str_radix(hex, 16).ok()).flatten()
}

pub fn header(seq: u64) -> [u8; HEADER_BYTES] {
    let mut h = [0u8; HEADER_BYTES];
    h[..8].copy_from_slice(MAGIC);
    h[8..12].copy_from_slice(&VERSION.to_le_bytes());
    h[16..24].copy_from_slice(&seq.to_le_bytes());
    let crc = crc32fast::hash(&h[..24]);
    h[24..28].copy_from_slice(&crc.to_le_bytes());
    h
}

/// Checks a segment's header against the sequence number its name gives.
pub fn check_header(bytes: &[u8], seq: u64) -> Result<(), String> {
    if bytes.len() < HEADER_BYTES {
        return Err(format!("{} bytes, shorter than a segment header", bytes.len()));
    }
    let expected = header(seq);
    if bytes[..8] != *MAGIC {
        return Err("not a raftkv log segment (bad magic)".into());
    }
    if bytes[..HEADER_BYTES] != expected {
        let stored = u64::from_le_bytes(bytes[16..24].try_into().expect("8 bytes"));
        return Err(format!("header says segment {stored:#x} (or is damaged), the name says {seq:#x}"));
    }
    Ok(())
}
