//! `wal/newest`: the sequence number of the newest segment, written (to a
//! temporary file, synced, renamed, the directory synced) after a segment is
//! created and before any record goes into it. Deleting the newest segment
//! (or all of them) would otherwise leave a log that looks complete and
//! merely shorter; with this file it is damage, reported by name.
//!
//! ```text
//! newest <seq, 16 hex digits> <crc32 of the line before it, 8 hex digits>
//! ```

use std::path::{Path, PathBuf};

use super::error::WalError;

const FILE: &str = "newest";

pub fn path(dir: &Path) -> PathBuf {
    dir.join(FILE)
}

fn line(seq: u64) -> String {
    let head = format!("newest {seq:016x}");
    format!("{head} {:08x}\n", crc32fast::hash(head.as_bytes()))
}

pub fn encode(seq: u64) -> Vec<u8> {
    line(seq).into_bytes()
}

/// The newest segment the directory should hold, if it says.
pub fn read(dir: &Path) -> Result<Option<u64>, WalError> {
    let path = path(dir);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(WalError::Io { path, op: "read", source: e }),
    };
    let damaged = |what: &str| WalError::Corrupt { file: path.clone(), offset: 0, what: what.to_string() };
    let seq = text
        .strip_prefix("newest ")
        .and_then(|rest| rest.get(..16))
        .and_then(|hex| u64::from_str_radix(hex, 16).ok())
        .ok_or_else(|| damaged("not a newest-segment line"))?;
    if text != line(seq) {
        return Err(damaged("its checksum does not match"));
    }
    Ok(Some(seq))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_round_trips_and_damage_is_seen() {
        let dir = tempfile::tempdir().unwrap();
        assert!(read(dir.path()).unwrap().is_none());
        std::fs::write(path(dir.path()), encode(0x2a)).unwrap();
        assert_eq!(read(dir.path()).unwrap(), Some(0x2a));
        let mut bytes = encode(0x2a);
        bytes[10] = b'3';
        std::fs::write(path(dir.path()), bytes).unwrap();
        assert!(read(dir.path()).is_err());
    }
}
