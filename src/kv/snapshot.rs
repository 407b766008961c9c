//! Snapshots of the store, written to and read from any stream.
//!
//! ```text
//! snapshot = magic:"RKVSNAP\n" version:u32 (= 4) clock:u64 count:u64
//!            { key item }[count]       shard order, key order within a shard
//!            removed:u32 { shard:u32 index:u64 }[removed]   shards with a deletion
//!            scripts:u32 value[scripts]                     bodies, by SHA-1 order
//!            sessions:value                                 `sessions` encoded
//!            crc:u32                   CRC32 of every byte before it
//! item     = kind:u8 deadline:u64 version:u64 body
//!            1 string: value
//!            2 hash:   count:u32 { field value }[count]     count >= 1
//! key      = len:u32 bytes[len]  (fields too, len <= KEY_BYTES_MAX)
//! value    = len:u32 bytes[len]  len <= VALUE_BYTES_MAX
//! ```
//!
//! Versions 3 (without sessions), 2 (without scripts) and 1 (before types and deadlines:
//! `count { key value }` after the version) are still read.

use std::fmt;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::sync::Arc;

use super::{Bytes, Hash, Item, KvStore, KvView, SHARD_COUNT, Value};
use crate::config::{KEY_BYTES_MAX, VALUE_BYTES_MAX};

const SNAPSHOT_MAGIC: [u8; 8] = *b"RKVSNAP\n";
const SNAPSHOT_VERSION: u32 = 4;
const KIND_STRING: u8 = 1;
const KIND_HASH: u8 = 2;

impl KvView {
    /// Serializes the view (format in the module docs) and returns the bytes
    /// written. Buffers internally and flushes before returning; does not
    /// sync, which is the caller's business.
    pub fn write_to<W: Write>(&self, w: W) -> io::Result<u64> {
        let mut out =
            CrcWriter { inner: BufWriter::with_capacity(256 * 1024, w), hasher: crc32fast::Hasher::new(), bytes: 0 };
        let data = &self.data;
        out.write_all(&SNAPSHOT_MAGIC)?;
        out.write_all(&SNAPSHOT_VERSION.to_le_bytes())?;
        out.write_all(&data.clock.to_le_bytes())?;
        out.write_all(&(data.keys as u64).to_le_bytes())?;
        let mut written = 0;
        for (key, item) in data.shards.iter() {
            out.bytes(key)?;
            let kind = match item.value {
                Value::Str(_) => KIND_STRING,
                Value::Hash(_) => KIND_HASH,
            };
            out.write_all(&[kind])?;
            out.write_all(&item.deadline.to_le_bytes())?;
            out.write_all(&item.version.to_le_bytes())?;
            match &item.value {
                Value::Str(v) => out.bytes(v)?,
                Value::Hash(h) => {
                    out.write_all(&(h.fields.len() as u32).to_le_bytes())?;
                    for (f, v) in &h.fields {
                        out.bytes(f)?;
                        out.bytes(v)?;
                    }
                }
            }
            written += 1;
        }
        assert_eq!(written, data.keys, "key count out of step with the shards");
        let removed: Vec<(usize, u64)> = data.removed.iter().copied().enumerate().filter(|&(_, i)| i != 0).collect();
        out.write_all(&(removed.len() as u32).to_le_bytes())?;
        for (shard, index) in removed {
            out.write_all(&(shard as u32).to_le_bytes())?;
            out.write_all(&index.to_le_bytes())?;
        }
        out.write_all(&(data.scripts.len() as u32).to_le_bytes())?;
        for body in data.scripts.values() {
            out.bytes(body)?;
        }
        let mut sessions = Vec::new();
        data.sessions.encode_into(&mut crate::codec::Writer::new(&mut sessions));
        out.bytes(&sessions)?;
        let crc = out.hasher.clone().finalize();
        out.inner.write_all(&crc.to_le_bytes())?;
        out.inner.flush()?;
        Ok(out.bytes + 4)
    }
}

struct CrcWriter<W: Write> {
    inner: BufWriter<W>,
    hasher: crc32fast::Hasher,
    bytes: u64,
}

impl<W: Write> CrcWriter<W> {
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.hasher.update(buf);
        self.bytes += buf.len() as u64;
        self.inner.write_all(buf)
    }

    fn bytes(&mut self, b: &[u8]) -> io::Result<()> {
        let len = u32::try_from(b.len()).map_err(|_| io::Error::other("a field of 4 GiB or more in a snapshot"))?;
        self.write_all(&len.to_le_bytes())?;
        self.write_all(b)
    }
}

/// Why a snapshot could not be loaded, and where.
#[derive(Debug)]
pub struct SnapshotError {
    /// Byte offset into the snapshot stream.
    pub offset: u64,
    pub kind: SnapshotErrorKind,
}

#[derive(Debug)]
pub enum SnapshotErrorKind {
    Io(io::Error),
    BadMagic {
        got: Vec<u8>,
    },
    UnsupportedVersion {
        expected: u32,
        got: u32,
    },
    /// The stream ended in the middle of `what`.
    Truncated {
        what: &'static str,
    },
    TooLarge {
        what: &'static str,
        len: u64,
        max: usize,
    },
    DuplicateKey,
    /// An item of a kind this build does not know, or an empty hash.
    BadItem {
        detail: String,
    },
    ChecksumMismatch {
        stored: u32,
        computed: u32,
    },
    /// Bytes after the checksum.
    Trailing,
}

impl fmt::Display for SnapshotError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "snapshot at byte {}: ", self.offset)?;
        match &self.kind {
            SnapshotErrorKind::Io(e) => write!(f, "read failed: {e}"),
            SnapshotErrorKind::BadMagic { got } => write!(
                f,
                "not a key-value snapshot (magic {:?}, expected {:?})",
                got.escape_ascii().to_string(),
                SNAPSHOT_MAGIC.escape_ascii().to_string()
            ),
            SnapshotErrorKind::UnsupportedVersion { expected, got } => {
                write!(f, "unsupported version {got} (this build reads {expected})")
            }
            SnapshotErrorKind::Truncated { what } => write!(f, "truncated inside {what}"),
            SnapshotErrorKind::TooLarge { what, len, max } => {
                write!(f, "{what} of {len} bytes exceeds the limit of {max}")
            }
            SnapshotErrorKind::DuplicateKey => write!(f, "a key appears twice"),
            SnapshotErrorKind::BadItem { detail } => write!(f, "bad item: {detail}"),
            SnapshotErrorKind::ChecksumMismatch { stored, computed } => {
                write!(f, "checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")
            }
            SnapshotErrorKind::Trailing => write!(f, "unexpected bytes after the checksum"),
        }
    }
}

impl std::error::Error for SnapshotError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.kind {
            SnapshotErrorKind::Io(e) => Some(e),
            _ => None,
        }
    }
}

/// Reads a snapshot stream, hashing what it reads and counting its offset.
struct SnapshotReader<R: Read> {
    inner: BufReader<R>,
    hasher: crc32fast::Hasher,
    offset: u64,
}

impl<R: Read> SnapshotReader<R> {
    fn error(&self, kind: SnapshotErrorKind) -> SnapshotError {
        SnapshotError { offset: self.offset, kind }
    }

    /// Reads up to `len` bytes into `buf`; fewer only at the end of the stream.
    fn read_up_to(&mut self, len: u64, buf: &mut Vec<u8>) -> Result<(), SnapshotError> {
        let start = buf.len();
        let result = (&mut self.inner).take(len).read_to_end(buf);
        let got = &buf[start..];
        self.hasher.update(got);
        self.offset += got.len() as u64;
        result.map(|_| ()).map_err(|e| self.error(SnapshotErrorKind::Io(e)))
    }

    fn exact(&mut self, len: usize, what: &'static str) -> Result<Vec<u8>, SnapshotError> {
        // Grows as bytes arrive, so a lying length allocates nothing extra.
        let mut buf = Vec::with_capacity(len.min(64 * 1024));
        self.read_up_to(len as u64, &mut buf)?;
        if buf.len() < len {
            return Err(self.error(SnapshotErrorKind::Truncated { what }));
        }
        Ok(buf)
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, SnapshotError> {
        let b = self.exact(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self, what: &'static str) -> Result<u64, SnapshotError> {
        let lo = self.u32(what)? as u64;
        let hi = self.u32(what)? as u64;
        Ok(hi << 32 | lo)
    }

    fn bytes(&mut self, what: &'static str, max: usize) -> Result<Vec<u8>, SnapshotError> {
        let at = self.offset;
        let len = self.u32(what)?;
        if len as usize > max {
            return Err(SnapshotError { offset: at, kind: SnapshotErrorKind::TooLarge { what, len: len.into(), max } });
        }
        self.exact(len as usize, what)
    }
}

impl KvStore {
    /// Loads a snapshot written by [`KvView::write_to`] (or version 1). The
    /// stream must hold exactly one snapshot: bytes after it are an error.
    /// Nothing is trusted before the checksum at the end matches.
    pub fn load<R: Read>(r: R) -> Result<KvStore, SnapshotError> {
        let mut r = SnapshotReader {
            inner: BufReader::with_capacity(256 * 1024, r),
            hasher: crc32fast::Hasher::new(),
            offset: 0,
        };
        let magic = r.exact(SNAPSHOT_MAGIC.len(), "magic")?;
        if magic != SNAPSHOT_MAGIC {
            r.offset = 0;
            return Err(r.error(SnapshotErrorKind::BadMagic { got: magic }));
        }
        let version = r.u32("version")?;
        if !(1..=SNAPSHOT_VERSION).contains(&version) {
            r.offset -= 4;
            return Err(r.error(SnapshotErrorKind::UnsupportedVersion { expected: SNAPSHOT_VERSION, got: version }));
        }
        let mut store = KvStore::new();
        if version >= 2 {
            store.data.clock = r.u64("clock")?;
        }
        let count = r.u64("key count")?;
        for _ in 0..count {
            let at = r.offset;
            let key = r.bytes("key", KEY_BYTES_MAX)?;
            let item = if version == 1 {
                let value = r.bytes("value", VALUE_BYTES_MAX)?;
                Item { value: Value::Str(Bytes::from(value)), deadline: 0, version: 0 }
            } else {
                r.item()?
            };
            if store.data.shards.contains_key(&key[..]) {
                return Err(SnapshotError { offset: at, kind: SnapshotErrorKind::DuplicateKey });
            }
            store.put(&key, item);
        }
        if version >= 2 {
            let n = r.u32("removed count")?;
            let removed = Arc::make_mut(&mut store.data.removed);
            for _ in 0..n {
                let at = r.offset;
                let shard = r.u32("shard")? as usize;
                let index = r.u64("removal index")?;
                if shard >= SHARD_COUNT {
                    let detail = format!("shard {shard} of {SHARD_COUNT}");
                    return Err(SnapshotError { offset: at, kind: SnapshotErrorKind::BadItem { detail } });
                }
                removed[shard] = index;
            }
        }
        if version >= 3 {
            let n = r.u32("script count")?;
            let scripts = Arc::make_mut(&mut store.data.scripts);
            for _ in 0..n {
                let body = r.bytes("script", VALUE_BYTES_MAX)?;
                scripts.insert(super::script::sha1_hex(&body), Bytes::from(body));
            }
        }
        if version >= 4 {
            let at = r.offset;
            let raw = r.bytes("sessions", usize::MAX)?;
            let mut reader = crate::codec::Reader::new(&raw);
            let sessions =
                super::sessions::Sessions::decode_from(&mut reader).and_then(|s| reader.finish().map(|()| s));
            match sessions {
                Ok(s) => store.data.sessions = Arc::new(s),
                Err(e) => {
                    let detail = format!("sessions: {e}");
                    return Err(SnapshotError { offset: at, kind: SnapshotErrorKind::BadItem { detail } });
                }
            }
        }
        load_trailer(&mut r)?;
        Ok(store)
    }
}

impl<R: Read> SnapshotReader<R> {
    fn item(&mut self) -> Result<Item, SnapshotError> {
        let at = self.offset;
        let kind = self.exact(1, "item kind")?[0];
        let deadline = self.u64("deadline")?;
        let version = self.u64("version")?;
        let value = match kind {
            KIND_STRING => Value::Str(Bytes::from(self.bytes("value", VALUE_BYTES_MAX)?)),
            KIND_HASH => {
                let n = self.u32("field count")?;
                if n == 0 {
                    let detail = format!("a hash of {n} fields");
                    return Err(SnapshotError { offset: at, kind: SnapshotErrorKind::BadItem { detail } });
                }
                let mut hash = Hash::default();
                for _ in 0..n {
                    let field = self.bytes("field", KEY_BYTES_MAX)?;
                    let value = self.bytes("value", VALUE_BYTES_MAX)?;
                    if !hash.insert(&field, &value) {
                        return Err(SnapshotError { offset: at, kind: SnapshotErrorKind::DuplicateKey });
                    }
                }
                Value::Hash(Arc::new(hash))
            }
            other => {
                let detail = format!("unknown kind {other}");
                return Err(SnapshotError { offset: at, kind: SnapshotErrorKind::BadItem { detail } });
            }
        };
        Ok(Item { value, deadline, version })
    }
}

fn load_trailer<R: Read>(r: &mut SnapshotReader<R>) -> Result<(), SnapshotError> {
    let computed = r.hasher.clone().finalize();
    let stored = r.u32("checksum")?;
    if stored != computed {
        r.offset -= 4;
        return Err(r.error(SnapshotErrorKind::ChecksumMismatch { stored, computed }));
    }
    let mut extra = Vec::new();
    r.read_up_to(1, &mut extra)?;
    if !extra.is_empty() {
        r.offset -= 1;
        return Err(r.error(SnapshotErrorKind::Trailing));
    }
    Ok(())
}
