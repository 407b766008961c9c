//! The replicated state machine: a map from binary keys to binary values.
//!
//! It does not know it is replicated. Given the same sequence of [`WriteOp`]s
//! every node computes the same map and the same replies, so `apply` reads no
//! clock, no randomness and no process state, and iterates in a fixed order.
//!
//! # Why sharded copy-on-write maps
//!
//! A snapshot of a million keys must not stall writes (DESIGN: the core thread
//! applies entries while a snapshot is written). The store is therefore
//! [`SHARD_COUNT`] ordered maps, each behind an `Arc`, and keys and values are
//! `Arc<[u8]>`. [`KvStore::view`] clones the shard pointers: O(shards), a few
//! microseconds, and the view is a consistent copy that another thread
//! serializes at its own pace. A write that lands in a shard still shared with
//! a view first copies that one shard (`Arc::make_mut`), which bumps a
//! refcount per entry but copies no key or value bytes; each shard is copied at
//! most once per view, so a write pauses for at most one shard's worth
//! (about a thousandth of the store) and memory grows by map nodes, not data.
//! A persistent tree would make every write copy a path even with no snapshot
//! running; a single `Arc<HashMap>` would copy everything on the first write.
//!
//! Shards are chosen by CRC32 of the key and are `BTreeMap`s, so a snapshot
//! of a given state is the same bytes on every node whatever order the keys
//! arrived in. The hash is fixed, not keyed: a client that crafts keys for one
//! shard makes that shard big (still O(log n) per operation, since it is a
//! tree) and its copy during a snapshot slower, nothing worse.
//!
//! # Encodings (all integers little-endian, via `crate::codec`)
//!
//! A write operation, as it lives in the replicated log:
//!
//! ```text
//! op    = tag:u8 body
//!         1 SET   key value
//!         2 DEL   count:u32 key[count]            count >= 1
//!         3 INCR  key
//!         4 CAS   key value(expected) value(new)
//!         5 MSET  count:u32 { key value }[count]  count >= 1
//! key   = len:u32 bytes[len]    len <= KEY_BYTES_MAX
//! value = len:u32 bytes[len]    len <= VALUE_BYTES_MAX
//! ```
//!
//! A snapshot, written to and read from any stream:
//!
//! ```text
//! snapshot = magic:"RKVSNAP\n" version:u32 (= 1) count:u64
//!            { key value }[count]     shard order, key order within a shard
//!            crc:u32                  CRC32 of every byte before it
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::sync::Arc;

use crate::codec::{DecodeError, Reader, Writer};
use crate::config::{KEY_BYTES_MAX, REQUEST_ARGS_MAX, VALUE_BYTES_MAX};
use crate::resp::{Reply, parse_i64};

/// Shards of the store; a power of two so a hash picks one with a mask.
pub const SHARD_COUNT: usize = 4096;
const _: () = assert!(SHARD_COUNT.is_power_of_two());

/// The reply to INCR on a value that is not a decimal i64 (SPEC §3).
pub const NOT_AN_INTEGER: &str = "ERR value is not an integer";
/// The reply to INCR past i64::MAX (SPEC is silent; Redis's text).
pub const INCR_OVERFLOW: &str = "ERR increment or decrement would overflow";

// ---------------------------------------------------------------------------
// Operations

/// A command that changes the store; it goes through the log and its reply is
/// computed when it is applied. Invariant (checked by `command::parse` and by
/// `decode`): keys and values are within their bounds, lists are non-empty.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WriteOp {
    Set { key: Vec<u8>, value: Vec<u8> },
    Del { keys: Vec<Vec<u8>> },
    Incr { key: Vec<u8> },
    Cas { key: Vec<u8>, expected: Vec<u8>, new: Vec<u8> },
    MSet { pairs: Vec<(Vec<u8>, Vec<u8>)> },
}

/// A command that only reads the store; served after a read index (or from
/// the local copy on a READONLY connection).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReadOp {
    Get { key: Vec<u8> },
    Exists { keys: Vec<Vec<u8>> },
    MGet { keys: Vec<Vec<u8>> },
    DbSize,
}

const TAG_SET: u8 = 1;
const TAG_DEL: u8 = 2;
const TAG_INCR: u8 = 3;
const TAG_CAS: u8 = 4;
const TAG_MSET: u8 = 5;

impl WriteOp {
    /// The command's name, for logs.
    pub fn name(&self) -> &'static str {
        match self {
            WriteOp::Set { .. } => "SET",
            WriteOp::Del { .. } => "DEL",
            WriteOp::Incr { .. } => "INCR",
            WriteOp::Cas { .. } => "CAS",
            WriteOp::MSet { .. } => "MSET",
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut buf = Vec::new();
        self.encode_into(&mut Writer::new(&mut buf));
        buf
    }

    /// Appends the encoding; asserts the bounds `decode` will check.
    pub fn encode_into(&self, w: &mut Writer<'_>) {
        match self {
            WriteOp::Set { key, value } => {
                w.u8(TAG_SET);
                write_key(w, key);
                write_value(w, value);
            }
            WriteOp::Del { keys } => {
                assert!(!keys.is_empty(), "DEL without keys");
                w.u8(TAG_DEL);
                w.len_u32(keys.len());
                keys.iter().for_each(|k| write_key(w, k));
            }
            WriteOp::Incr { key } => {
                w.u8(TAG_INCR);
                write_key(w, key);
            }
            WriteOp::Cas { key, expected, new } => {
                w.u8(TAG_CAS);
                write_key(w, key);
                write_value(w, expected);
                write_value(w, new);
            }
            WriteOp::MSet { pairs } => {
                assert!(!pairs.is_empty(), "MSET without pairs");
                w.u8(TAG_MSET);
                w.len_u32(pairs.len());
                for (k, v) in pairs {
                    write_key(w, k);
                    write_value(w, v);
                }
            }
        }
    }

    /// Decodes exactly one operation filling all of `bytes`.
    pub fn decode(bytes: &[u8]) -> Result<WriteOp, DecodeError> {
        let mut r = Reader::new(bytes);
        let op = WriteOp::decode_from(&mut r)?;
        r.finish()?;
        Ok(op)
    }

    /// Decodes one operation from the reader's position.
    pub fn decode_from(r: &mut Reader<'_>) -> Result<WriteOp, DecodeError> {
        match r.u8("operation tag")? {
            TAG_SET => Ok(WriteOp::Set { key: read_key(r)?, value: read_value(r)? }),
            TAG_DEL => {
                let count = read_count(r, "DEL key count")?;
                let mut keys = Vec::with_capacity(count.min(r.remaining() / 4));
                for _ in 0..count {
                    keys.push(read_key(r)?);
                }
                Ok(WriteOp::Del { keys })
            }
            TAG_INCR => Ok(WriteOp::Incr { key: read_key(r)? }),
            TAG_CAS => Ok(WriteOp::Cas { key: read_key(r)?, expected: read_value(r)?, new: read_value(r)? }),
            TAG_MSET => {
                let count = read_count(r, "MSET pair count")?;
                let mut pairs = Vec::with_capacity(count.min(r.remaining() / 8));
                for _ in 0..count {
                    pairs.push((read_key(r)?, read_value(r)?));
                }
                Ok(WriteOp::MSet { pairs })
            }
            tag => Err(r.invalid("operation tag", format!("unknown tag {tag}"))),
        }
    }
}

fn write_key(w: &mut Writer<'_>, key: &[u8]) {
    assert!(key.len() <= KEY_BYTES_MAX, "key of {} bytes", key.len());
    w.bytes_u32(key);
}

fn write_value(w: &mut Writer<'_>, value: &[u8]) {
    assert!(value.len() <= VALUE_BYTES_MAX, "value of {} bytes", value.len());
    w.bytes_u32(value);
}

fn read_key(r: &mut Reader<'_>) -> Result<Vec<u8>, DecodeError> {
    Ok(r.bytes_u32("key", KEY_BYTES_MAX)?.to_vec())
}

fn read_value(r: &mut Reader<'_>) -> Result<Vec<u8>, DecodeError> {
    Ok(r.bytes_u32("value", VALUE_BYTES_MAX)?.to_vec())
}

fn read_count(r: &mut Reader<'_>, what: &'static str) -> Result<usize, DecodeError> {
    let count = r.len_u32(what, REQUEST_ARGS_MAX)?;
    if count == 0 {
        return Err(r.invalid(what, "zero"));
    }
    Ok(count)
}

// ---------------------------------------------------------------------------
// The store

type Bytes = Arc<[u8]>;
type Shard = BTreeMap<Bytes, Bytes>;

/// The key-value map. Cloning is cheap (O(shards)); so is [`KvStore::view`].
#[derive(Clone, PartialEq, Eq)]
pub struct KvStore {
    /// Exactly `SHARD_COUNT` shards; a key lives in `shards[shard_of(key)]`.
    shards: Vec<Arc<Shard>>,
    /// Keys in all shards together.
    keys: usize,
    /// Bytes of keys and values together (INFO `memory`).
    bytes: usize,
}

impl fmt::Debug for KvStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KvStore {{ keys: {} }}", self.keys)
    }
}

impl Default for KvStore {
    fn default() -> Self {
        KvStore::new()
    }
}

fn shard_of(key: &[u8]) -> usize {
    crc32fast::hash(key) as usize & (SHARD_COUNT - 1)
}

impl KvStore {
    pub fn new() -> KvStore {
        // One shared empty map; the first write to a shard gives it its own.
        let empty = Arc::new(Shard::new());
        KvStore { shards: vec![empty; SHARD_COUNT], keys: 0, bytes: 0 }
    }

    pub fn len(&self) -> usize {
        self.keys
    }

    pub fn is_empty(&self) -> bool {
        self.keys == 0
    }

    /// Bytes of keys and values held.
    pub fn data_bytes(&self) -> usize {
        self.bytes
    }

    pub fn get(&self, key: &[u8]) -> Option<&[u8]> {
        self.shards[shard_of(key)].get(key).map(|v| &v[..])
    }

    pub fn exists(&self, key: &[u8]) -> bool {
        self.shards[shard_of(key)].contains_key(key)
    }

    /// The value as a reply that shares its bytes, or the null bulk.
    fn value_reply(&self, key: &[u8]) -> Reply {
        match self.shards[shard_of(key)].get(key) {
            Some(v) => Reply::Value(v.clone()),
            None => Reply::Bulk(None),
        }
    }

    /// Every pair, in snapshot order (shard, then key).
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.shards.iter().flat_map(|s| s.iter().map(|(k, v)| (&k[..], &v[..])))
    }

    fn shard_mut(&mut self, key: &[u8]) -> &mut Shard {
        Arc::make_mut(&mut self.shards[shard_of(key)])
    }

    fn set(&mut self, key: &[u8], value: &[u8]) {
        let shard = self.shard_mut(key);
        match shard.get_mut(key) {
            Some(slot) => {
                let old = slot.len();
                *slot = Bytes::from(value);
                self.bytes = self.bytes - old + value.len();
            }
            None => {
                shard.insert(Bytes::from(key), Bytes::from(value));
                self.keys += 1;
                self.bytes += key.len() + value.len();
            }
        }
    }

    fn remove(&mut self, key: &[u8]) -> bool {
        if !self.exists(key) {
            // Do not copy a shard shared with a view just to find nothing.
            return false;
        }
        if let Some(value) = self.shard_mut(key).remove(key) {
            self.bytes -= key.len() + value.len();
        }
        self.keys -= 1;
        true
    }

    /// Applies one committed write and returns its reply (SPEC §3).
    pub fn apply(&mut self, op: &WriteOp) -> Reply {
        match op {
            WriteOp::Set { key, value } => {
                self.set(key, value);
                Reply::ok()
            }
            WriteOp::Del { keys } => {
                let removed = keys.iter().filter(|k| self.remove(k)).count();
                Reply::Integer(removed as i64)
            }
            WriteOp::Incr { key } => self.incr(key),
            WriteOp::Cas { key, expected, new } => {
                if self.get(key) == Some(&expected[..]) {
                    self.set(key, new);
                    Reply::Integer(1)
                } else {
                    Reply::Integer(0)
                }
            }
            WriteOp::MSet { pairs } => {
                pairs.iter().for_each(|(k, v)| self.set(k, v));
                Reply::ok()
            }
        }
    }

    fn incr(&mut self, key: &[u8]) -> Reply {
        let current = match self.get(key) {
            None => 0,
            Some(v) => match parse_i64(v) {
                Some(n) => n,
                None => return Reply::Error(NOT_AN_INTEGER.to_string()),
            },
        };
        let Some(next) = current.checked_add(1) else {
            return Reply::Error(INCR_OVERFLOW.to_string());
        };
        self.set(key, next.to_string().as_bytes());
        Reply::Integer(next)
    }

    /// Serves a read (SPEC §3).
    pub fn read(&self, op: &ReadOp) -> Reply {
        match op {
            // Values are shared, not copied: a read of many large values
            // costs the core thread a pointer each (SPEC §6).
            ReadOp::Get { key } => self.value_reply(key),
            ReadOp::Exists { keys } => Reply::Integer(keys.iter().filter(|k| self.exists(k)).count() as i64),
            ReadOp::MGet { keys } => Reply::array(keys.iter().map(|k| self.value_reply(k)).collect()),
            ReadOp::DbSize => Reply::Integer(self.keys as i64),
        }
    }

    /// A consistent, immutable copy of the store as it is now, cheap to take
    /// and safe to send to another thread while this store keeps applying.
    pub fn view(&self) -> KvView {
        KvView { shards: self.shards.clone(), keys: self.keys }
    }

    /// Writes a snapshot of the current state; see [`KvView::write_to`].
    pub fn write_snapshot<W: Write>(&self, w: W) -> io::Result<u64> {
        self.view().write_to(w)
    }
}

// ---------------------------------------------------------------------------
// Snapshots

const SNAPSHOT_MAGIC: [u8; 8] = *b"RKVSNAP\n";
const SNAPSHOT_VERSION: u32 = 1;

/// A frozen copy of a [`KvStore`]: `Send + Sync`, independent of the store it
/// came from.
#[derive(Clone)]
pub struct KvView {
    shards: Vec<Arc<Shard>>,
    keys: usize,
}

impl KvView {
    pub fn len(&self) -> usize {
        self.keys
    }

    pub fn is_empty(&self) -> bool {
        self.keys == 0
    }

    /// Serializes the view (format in the module docs) and returns the bytes
    /// written. Buffers internally and flushes before returning; does not
    /// sync, which is the caller's business.
    pub fn write_to<W: Write>(&self, w: W) -> io::Result<u64> {
        let mut out =
            CrcWriter { inner: BufWriter::with_capacity(256 * 1024, w), hasher: crc32fast::Hasher::new(), bytes: 0 };
        out.write_all(&SNAPSHOT_MAGIC)?;
        out.write_all(&SNAPSHOT_VERSION.to_le_bytes())?;
        out.write_all(&(self.keys as u64).to_le_bytes())?;
        let mut written = 0;
        for (key, value) in self.shards.iter().flat_map(|s| s.iter()) {
            out.write_all(&(key.len() as u32).to_le_bytes())?;
            out.write_all(key)?;
            out.write_all(&(value.len() as u32).to_le_bytes())?;
            out.write_all(value)?;
            written += 1;
        }
        assert_eq!(written, self.keys, "key count out of step with the shards");
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
    /// Loads a snapshot written by [`KvView::write_to`]. The stream must hold
    /// exactly one snapshot: bytes after it are an error. Nothing is trusted
    /// before the checksum at the end matches.
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
        if version != SNAPSHOT_VERSION {
            r.offset -= 4;
            return Err(r.error(SnapshotErrorKind::UnsupportedVersion { expected: SNAPSHOT_VERSION, got: version }));
        }
        let count = r.u64("key count")?;
        let mut store = KvStore::new();
        for _ in 0..count {
            let at = r.offset;
            let key = r.bytes("key", KEY_BYTES_MAX)?;
            let value = r.bytes("value", VALUE_BYTES_MAX)?;
            if store.exists(&key) {
                return Err(SnapshotError { offset: at, kind: SnapshotErrorKind::DuplicateKey });
            }
            store.set(&key, &value);
        }
        load_trailer(&mut r)?;
        Ok(store)
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

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::Xoshiro256PlusPlus;
    use rand::{RngExt, SeedableRng};

    /// The obviously correct version the store is checked against.
    #[derive(Clone, Default)]
    struct Model {
        map: BTreeMap<Vec<u8>, Vec<u8>>,
    }

    impl Model {
        fn apply(&mut self, op: &WriteOp) -> Reply {
            match op {
                WriteOp::Set { key, value } => {
                    self.map.insert(key.clone(), value.clone());
                    Reply::ok()
                }
                WriteOp::Del { keys } => {
                    let mut n = 0;
                    for k in keys {
                        n += self.map.remove(k).is_some() as i64;
                    }
                    Reply::Integer(n)
                }
                WriteOp::Incr { key } => {
                    let old = self.map.get(key).map(|v| String::from_utf8_lossy(v).to_string());
                    let n: i64 = match old {
                        None => 0,
                        Some(s) => match s.parse::<i64>() {
                            Ok(n) if n.to_string() == s => n,
                            _ => return Reply::Error("ERR value is not an integer".into()),
                        },
                    };
                    if n == i64::MAX {
                        return Reply::Error("ERR increment or decrement would overflow".into());
                    }
                    self.map.insert(key.clone(), (n + 1).to_string().into_bytes());
                    Reply::Integer(n + 1)
                }
                WriteOp::Cas { key, expected, new } => {
                    if self.map.get(key) == Some(expected) {
                        self.map.insert(key.clone(), new.clone());
                        Reply::Integer(1)
                    } else {
                        Reply::Integer(0)
                    }
                }
                WriteOp::MSet { pairs } => {
                    for (k, v) in pairs {
                        self.map.insert(k.clone(), v.clone());
                    }
                    Reply::ok()
                }
            }
        }
    }

    fn same_content(store: &KvStore, model: &Model) {
        assert_eq!(store.len(), model.map.len());
        let mut pairs: Vec<(Vec<u8>, Vec<u8>)> = store.iter().map(|(k, v)| (k.to_vec(), v.to_vec())).collect();
        pairs.sort();
        let expected: Vec<(Vec<u8>, Vec<u8>)> = model.map.clone().into_iter().collect();
        assert_eq!(pairs, expected);
    }

    fn random_key(rng: &mut Xoshiro256PlusPlus) -> Vec<u8> {
        // A small key space so that operations collide.
        format!("k{}", rng.random_range(0..40)).into_bytes()
    }

    fn random_value(rng: &mut Xoshiro256PlusPlus) -> Vec<u8> {
        match rng.random_range(0..6) {
            0 => rng.random_range(-5i64..5).to_string().into_bytes(),
            1 => (i64::MAX - rng.random_range(0..2)).to_string().into_bytes(),
            2 => b"007".to_vec(),
            3 => Vec::new(),
            _ => (0..rng.random_range(1..20)).map(|_| rng.random()).collect(),
        }
    }

    fn random_op(rng: &mut Xoshiro256PlusPlus, model: &Model) -> WriteOp {
        match rng.random_range(0..10) {
            0..3 => WriteOp::Set { key: random_key(rng), value: random_value(rng) },
            3 => WriteOp::Del { keys: (0..rng.random_range(1..4)).map(|_| random_key(rng)).collect() },
            4..6 => WriteOp::Incr { key: random_key(rng) },
            6..8 => {
                let key = random_key(rng);
                // Often the right expectation, so that CAS succeeds too.
                let expected = match model.map.get(&key) {
                    Some(v) if rng.random_bool(0.6) => v.clone(),
                    _ => random_value(rng),
                };
                WriteOp::Cas { key, expected, new: random_value(rng) }
            }
            _ => WriteOp::MSet {
                pairs: (0..rng.random_range(1..4)).map(|_| (random_key(rng), random_value(rng))).collect(),
            },
        }
    }

    fn random_read(rng: &mut Xoshiro256PlusPlus, store: &KvStore, model: &Model) {
        let keys: Vec<Vec<u8>> = (0..rng.random_range(1..4)).map(|_| random_key(rng)).collect();
        let expected_mget = Reply::array(keys.iter().map(|k| Reply::Bulk(model.map.get(k).cloned())).collect());
        let existing = keys.iter().filter(|k| model.map.contains_key(*k)).count() as i64;
        assert_eq!(store.read(&ReadOp::MGet { keys: keys.clone() }), expected_mget);
        assert_eq!(store.read(&ReadOp::Exists { keys: keys.clone() }), Reply::Integer(existing));
        assert_eq!(store.read(&ReadOp::Get { key: keys[0].clone() }), Reply::Bulk(model.map.get(&keys[0]).cloned()));
        assert_eq!(store.read(&ReadOp::DbSize), Reply::Integer(model.map.len() as i64));
    }

    fn seed_from_env(default: u64) -> u64 {
        std::env::var("KV_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(default)
    }

    /// Replay a failure with `KV_SEED=<seed> cargo test --lib kv::tests::`.
    #[test]
    fn store_matches_a_btreemap_model() {
        let seed = seed_from_env(0x6b76_0001);
        println!("seed {seed}");
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
        let mut store = KvStore::new();
        let mut model = Model::default();
        for step in 0..50_000 {
            let op = random_op(&mut rng, &model);
            // Apply what came back from the log encoding, as a follower does.
            let decoded = WriteOp::decode(&op.encode()).unwrap();
            assert_eq!(decoded, op);
            let expected = model.apply(&op);
            let got = store.apply(&decoded);
            assert_eq!(got, expected, "seed {seed} step {step}: {op:?}");
            random_read(&mut rng, &store, &model);
            if step % 5_000 == 0 {
                same_content(&store, &model);
                let mut bytes = Vec::new();
                store.write_snapshot(&mut bytes).unwrap();
                let loaded = KvStore::load(&bytes[..]).unwrap();
                assert_eq!(loaded, store, "seed {seed} step {step}");
            }
        }
        same_content(&store, &model);
    }

    #[test]
    fn incr_follows_redis() {
        let mut store = KvStore::new();
        let incr = |store: &mut KvStore| store.apply(&WriteOp::Incr { key: b"n".to_vec() });
        assert_eq!(incr(&mut store), Reply::Integer(1));
        assert_eq!(incr(&mut store), Reply::Integer(2));
        assert_eq!(store.get(b"n"), Some(&b"2"[..]));
        for (value, reply) in [
            ("-1", Reply::Integer(0)),
            ("9223372036854775806", Reply::Integer(i64::MAX)),
            ("9223372036854775807", Reply::Error(INCR_OVERFLOW.into())),
            ("abc", Reply::Error("ERR value is not an integer".into())),
            (" 1", Reply::Error("ERR value is not an integer".into())),
            ("", Reply::Error("ERR value is not an integer".into())),
            ("99999999999999999999", Reply::Error("ERR value is not an integer".into())),
        ] {
            let op = WriteOp::Set { key: b"n".to_vec(), value: value.into() };
            store.apply(&op);
            assert_eq!(incr(&mut store), reply, "INCR on {value:?}");
        }
        // A failed INCR changes nothing.
        assert_eq!(store.get(b"n"), Some(&b"99999999999999999999"[..]));
    }

    #[test]
    fn write_op_encoding_is_stable() {
        // These bytes live in logs on disk: changing them breaks old logs.
        let op = WriteOp::Set { key: b"k".to_vec(), value: b"vv".to_vec() };
        assert_eq!(op.encode(), b"\x01\x01\x00\x00\x00k\x02\x00\x00\x00vv");
        let op = WriteOp::Del { keys: vec![b"a".to_vec(), b"".to_vec()] };
        assert_eq!(op.encode(), b"\x02\x02\x00\x00\x00\x01\x00\x00\x00a\x00\x00\x00\x00");
    }

    fn sample_ops() -> Vec<WriteOp> {
        vec![
            WriteOp::Set { key: b"k".to_vec(), value: b"v".to_vec() },
            WriteOp::Del { keys: vec![b"a".to_vec(), b"b".to_vec()] },
            WriteOp::Incr { key: b"n".to_vec() },
            WriteOp::Cas { key: b"k".to_vec(), expected: b"v".to_vec(), new: b"w".to_vec() },
            WriteOp::MSet { pairs: vec![(b"a".to_vec(), b"1".to_vec()), (b"".to_vec(), b"".to_vec())] },
        ]
    }

    #[test]
    fn decoding_is_strict() {
        for op in sample_ops() {
            let bytes = op.encode();
            assert_eq!(WriteOp::decode(&bytes).unwrap(), op);
            for cut in 0..bytes.len() {
                assert!(WriteOp::decode(&bytes[..cut]).is_err(), "{op:?} cut at {cut}");
            }
            let mut longer = bytes.clone();
            longer.push(0);
            assert!(WriteOp::decode(&longer).is_err(), "{op:?} with a trailing byte");
        }
        let refused: &[&[u8]] = &[
            b"\x00",
            b"\x06",
            b"\x02\x00\x00\x00\x00",                 // DEL of no keys
            b"\x05\x00\x00\x00\x00",                 // MSET of no pairs
            b"\x03\x01\x00\x01\x00",                 // INCR of a key over 64 KiB
            b"\x02\xff\xff\xff\xff\x00\x00\x00\x00", // a count over the bound
        ];
        for bytes in refused {
            assert!(WriteOp::decode(bytes).is_err(), "{}", bytes.escape_ascii());
        }
        let mut big_value = vec![TAG_SET, 1, 0, 0, 0, b'k'];
        big_value.extend_from_slice(&((VALUE_BYTES_MAX + 1) as u32).to_le_bytes());
        let err = WriteOp::decode(&big_value).unwrap_err();
        assert!(matches!(err.kind, crate::codec::DecodeErrorKind::TooLarge { .. }), "{err}");
    }

    #[test]
    fn random_bytes_never_panic_the_decoder() {
        let seed = seed_from_env(0x6b76_0002);
        println!("seed {seed}");
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
        let samples: Vec<Vec<u8>> = sample_ops().iter().map(WriteOp::encode).collect();
        for _ in 0..50_000 {
            let mut bytes = samples[rng.random_range(0..samples.len())].clone();
            for _ in 0..rng.random_range(1..4) {
                let at = rng.random_range(0..bytes.len());
                bytes[at] = rng.random();
            }
            if let Ok(op) = WriteOp::decode(&bytes) {
                assert_eq!(op.encode(), bytes);
            }
            let len = rng.random_range(0..32);
            let noise: Vec<u8> = (0..len).map(|_| rng.random()).collect();
            let _ = WriteOp::decode(&noise);
        }
    }

    fn sample_store(keys: u32) -> KvStore {
        let mut store = KvStore::new();
        for i in 0..keys {
            let value = vec![(i % 251) as u8; (i % 37) as usize];
            store.apply(&WriteOp::Set { key: i.to_le_bytes().to_vec(), value });
        }
        store
    }

    #[test]
    fn snapshot_round_trips() {
        for store in [KvStore::new(), sample_store(500)] {
            let mut bytes = Vec::new();
            let written = store.write_snapshot(&mut bytes).unwrap();
            assert_eq!(written, bytes.len() as u64);
            assert_eq!(&bytes[..12], b"RKVSNAP\n\x01\x00\x00\x00");
            let loaded = KvStore::load(&bytes[..]).unwrap();
            assert_eq!(loaded, store);
            assert_eq!(loaded.len(), store.len());
            // The same state always gives the same bytes.
            let mut again = Vec::new();
            loaded.write_snapshot(&mut again).unwrap();
            assert_eq!(again, bytes);
        }
    }

    #[test]
    fn corrupt_snapshots_are_refused() {
        let mut bytes = Vec::new();
        sample_store(60).write_snapshot(&mut bytes).unwrap();
        // Every truncation.
        for cut in 0..bytes.len() {
            let err = KvStore::load(&bytes[..cut]).unwrap_err();
            assert!(matches!(err.kind, SnapshotErrorKind::Truncated { .. }), "cut at {cut}: {err}");
        }
        // Single-bit flips at every byte.
        for at in 0..bytes.len() {
            for bit in [0, 3, 7] {
                let mut bad = bytes.clone();
                bad[at] ^= 1 << bit;
                assert!(KvStore::load(&bad[..]).is_err(), "flip bit {bit} of byte {at}");
            }
        }
        let mut longer = bytes.clone();
        longer.push(0);
        let err = KvStore::load(&longer[..]).unwrap_err();
        assert!(matches!(err.kind, SnapshotErrorKind::Trailing), "{err}");
        assert_eq!(err.offset, bytes.len() as u64);
    }

    #[test]
    fn snapshot_errors_say_what_and_where() {
        let mut bytes = Vec::new();
        sample_store(50).write_snapshot(&mut bytes).unwrap();
        let mut bad = bytes.clone();
        bad[8] = 9;
        let err = KvStore::load(&bad[..]).unwrap_err();
        assert_eq!(err.to_string(), "snapshot at byte 8: unsupported version 9 (this build reads 1)");
        let err = KvStore::load(&b"GARBAGE!...."[..]).unwrap_err();
        assert!(err.to_string().contains("not a key-value snapshot"), "{err}");
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        let err = KvStore::load(&bytes[..]).unwrap_err();
        assert!(matches!(err.kind, SnapshotErrorKind::ChecksumMismatch { .. }), "{err}");
        assert_eq!(err.offset, last as u64 - 3);
    }

    #[test]
    fn oversized_lengths_in_a_snapshot_are_refused() {
        let mut bytes = b"RKVSNAP\n\x01\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00".to_vec();
        bytes.extend_from_slice(&u32::MAX.to_le_bytes());
        let err = KvStore::load(&bytes[..]).unwrap_err();
        assert!(matches!(err.kind, SnapshotErrorKind::TooLarge { what: "key", .. }), "{err}");
        assert_eq!(err.offset, 20);
    }

    /// The reason for the sharded copy-on-write layout: a view taken at one
    /// moment is serialized on another thread while the original store keeps
    /// applying writes, and the snapshot holds exactly the state at the
    /// moment of the view.
    #[test]
    fn snapshot_runs_on_another_thread_while_writes_continue() {
        let seed = seed_from_env(0x6b76_0003);
        println!("seed {seed}");
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
        let mut store = KvStore::new();
        let mut model = Model::default();
        for i in 0..100_000u32 {
            let op = WriteOp::Set { key: format!("key{i}").into_bytes(), value: i.to_le_bytes().to_vec() };
            model.apply(&op);
            store.apply(&op);
        }
        let frozen = model.clone();
        let view = store.view();
        let writer = std::thread::spawn(move || {
            let mut bytes = Vec::new();
            view.write_to(&mut bytes).map(|_| bytes)
        });
        for _ in 0..100_000 {
            let key = format!("key{}", rng.random_range(0..150_000u32)).into_bytes();
            let op = if rng.random_bool(0.2) {
                WriteOp::Del { keys: vec![key] }
            } else {
                WriteOp::Set { key, value: b"new".to_vec() }
            };
            assert_eq!(store.apply(&op), model.apply(&op));
        }
        let bytes = writer.join().expect("snapshot thread panicked").unwrap();
        same_content(&KvStore::load(&bytes[..]).unwrap(), &frozen);
        same_content(&store, &model);
    }
}
