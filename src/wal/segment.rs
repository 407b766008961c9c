//! Segment files: `wal/<seq as 16 hex digits>.wal`, preallocated with zeros
//! to a fixed size, starting with a 40-byte header:
//!
//! ```text
//! magic "RKVWAL\0\1" (8) | version u32 (2) | reserved u32 | seq u64 | size u64 | crc u32 of the 32 bytes before | pad u32
//! ```
//! The header names the segment's place in the log, so a renamed or foreign
//! file is noticed, and its size, so a truncated one is: segments are made
//! whole under a temporary name and never shrink. (Version 1 headers, 32
//! bytes without the size, are still read.)

use std::path::{Path, PathBuf};

pub const HEADER_BYTES: usize = 40;
const HEADER_V1_BYTES: usize = 32;
const MAGIC: &[u8; 8] = b"RKVWAL\x00\x01";
const VERSION: u32 = 2;

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

pub fn header(seq: u64, size: u64) -> [u8; HEADER_BYTES] {
    let mut h = [0u8; HEADER_BYTES];
    h[..8].copy_from_slice(MAGIC);
    h[8..12].copy_from_slice(&VERSION.to_le_bytes());
    h[16..24].copy_from_slice(&seq.to_le_bytes());
    h[24..32].copy_from_slice(&size.to_le_bytes());
    let crc = crc32fast::hash(&h[..32]);
    h[32..36].copy_from_slice(&crc.to_le_bytes());
    h
}

/// A version 1 header, as older nodes wrote them (for tests of reading).
pub fn header_v1(seq: u64) -> [u8; HEADER_V1_BYTES] {
    let mut h = [0u8; HEADER_V1_BYTES];
    h[..8].copy_from_slice(MAGIC);
    h[8..12].copy_from_slice(&1u32.to_le_bytes());
    h[16..24].copy_from_slice(&seq.to_le_bytes());
    let crc = crc32fast::hash(&h[..24]);
    h[24..28].copy_from_slice(&crc.to_le_bytes());
    h
}

/// Checks a segment (its whole image) against the sequence number its name
/// gives; returns where its records begin.
pub fn check_header(bytes: &[u8], seq: u64) -> Result<usize, String> {
    if bytes.len() < HEADER_V1_BYTES || bytes[..8] != *MAGIC {
        return Err("not a raftkv log segment (bad magic, or too short)".into());
    }
    let version = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
    let stored = u64::from_le_bytes(bytes[16..24].try_into().expect("8 bytes"));
    let matches = match version {
        1 => bytes[..HEADER_V1_BYTES] == header_v1(seq),
        2 if bytes.len() >= HEADER_BYTES => {
            let size = u64::from_le_bytes(bytes[24..32].try_into().expect("8 bytes"));
            if bytes[..HEADER_BYTES] == header(seq, size) && size != bytes.len() as u64 {
                return Err(format!(
                    "the segment is {} bytes, its header says {size}: truncated or extended",
                    bytes.len()
                ));
            }
            bytes[..HEADER_BYTES] == header(seq, size)
        }
        _ => return Err(format!("unknown segment version {version}")),
    };
    if !matches {
        return Err(format!("header says segment {stored:#x} (or is damaged), the name says {seq:#x}"));
    }
    Ok(if version == 1 { HEADER_V1_BYTES } else { HEADER_BYTES })
}
