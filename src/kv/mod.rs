//! The replicated state machine: a map from binary keys to strings and
//! hashes, with deadlines (docs/commands.md).
//!
//! It does not know it is replicated. Given the same sequence of
//! [`WriteOp`]s at the same indexes every node computes the same map and
//! the same replies, so `apply` reads no clock, no randomness and no process
//! state, and iterates in a fixed order.
//!
//! # Time
//!
//! The store keeps its own clock: the largest time a leader stamped on an
//! entry (`WriteOp`'s [`Stamp`]), never going back. A key whose deadline is
//! at or before that clock is absent for every command, read or write, on
//! every node, whatever the node's own clock says: expiry is a change of
//! replicated state, so it is linearizable like any write. The leader
//! stamps its entries and, when a deadline passes by its clock, proposes an
//! [`WriteOp::Expire`] (the node's sweep), which moves the clock on
//! everywhere and deletes the keys.
//!
//! # Versions
//!
//! Every key remembers the log index of the entry that last changed it, and
//! every shard the index of its last deletion: `WATCH` reads them and `EXEC`
//! compares them at apply time ([`KvStore::watch_mark`]), so a watch holds
//! across connections and nodes.
//!
//! # Why sharded copy-on-write maps
//!
//! A snapshot of a million keys must not stall writes (DESIGN: the core thread
//! applies entries while a snapshot is written). The store is therefore
//! [`SHARD_COUNT`] shards of small ordered maps, every level behind an `Arc`
//! (`shards`), and keys and values are `Arc<[u8]>`. [`KvStore::view`]
//! clones 256 pointers, a few microseconds, and the view is a consistent
//! copy that another thread serializes (or scans, for `KEYS` and `SCAN`) at
//! its own pace. A write that lands in a map still shared with a view first
//! copies that one map (`Arc::make_mut`), about 150 keys at 10 million,
//! which bumps a refcount per entry but copies no key or value bytes; each
//! map is copied at most once per view. A hash is one value behind its own
//! `Arc`: changing a hash shared with a view copies that hash's field map
//! once.
//!
//! Shards are chosen by CRC32 of the key and their maps are `BTreeMap`s, so
//! a snapshot of a given state is the same bytes on every node whatever
//! order the keys arrived in, and a key never moves between shards, which
//! is what makes `SCAN`'s cursor (a shard number) return every key present
//! for the whole scan.

mod cmd;
mod exec;
pub mod glob;
mod key;
mod ops;
pub mod script;
pub mod sessions;
mod shards;
mod snapshot;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;

pub use cmd::{Cmd, Cond, ExpireCond, ScriptRef, Ttl, Unit, key as key_arg, parse as parse_cmd, parse_float};
pub use ops::{Stamp, Watch, WriteOp};
pub use shards::SHARD_COUNT;
pub use snapshot::{SnapshotError, SnapshotErrorKind};

use key::Key;
use shards::{Shards, shard_of};

use crate::resp::Reply;

/// The reply to INCR on a value that is not a decimal i64 (docs/commands.md).
pub const NOT_AN_INTEGER: &str = "ERR value is not an integer";
/// The reply to INCR past i64::MAX (Redis's text).
pub const INCR_OVERFLOW: &str = "ERR increment or decrement would overflow";
/// A command on a key holding another type (docs/commands.md).
pub const WRONGTYPE: &str = "WRONGTYPE Operation against a key holding the wrong kind of value";

pub(crate) type Bytes = Arc<[u8]>;

/// A hash's fields, in field order, with their bytes counted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Hash {
    pub(crate) fields: BTreeMap<Bytes, Bytes>,
    pub(crate) bytes: usize,
}

impl Hash {
    fn insert(&mut self, field: &[u8], value: &[u8]) -> bool {
        match self.fields.get_mut(field) {
            Some(slot) => {
                self.bytes = self.bytes - slot.len() + value.len();
                *slot = Bytes::from(value);
                false
            }
            None => {
                self.bytes += field.len() + value.len();
                self.fields.insert(Bytes::from(field), Bytes::from(value));
                true
            }
        }
    }

    fn remove(&mut self, field: &[u8]) -> bool {
        match self.fields.remove(field) {
            Some(v) => {
                self.bytes -= field.len() + v.len();
                true
            }
            None => false,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    Str(Bytes),
    Hash(Arc<Hash>),
}

impl Value {
    fn bytes(&self) -> usize {
        match self {
            Value::Str(s) => s.len(),
            Value::Hash(h) => h.bytes,
        }
    }

    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Str(_) => "string",
            Value::Hash(_) => "hash",
        }
    }
}

/// A key's value and what the store knows about it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Item {
    pub value: Value,
    /// Milliseconds since the Unix epoch; 0: none.
    pub deadline: u64,
    /// The log index of the entry that last changed the key.
    pub version: u64,
}

impl Item {
    fn live(&self, now: u64) -> bool {
        self.deadline == 0 || self.deadline > now
    }
}

/// The replicated data, shared by the store and its views.
#[derive(Clone, PartialEq, Eq)]
pub struct Data {
    /// The keys, by shard (`shards`).
    shards: Shards,
    /// Keys stored, expired or not.
    keys: usize,
    /// Bytes of keys and values together (INFO `memory`).
    bytes: usize,
    /// The store's clock (module docs), ms since the Unix epoch.
    clock: u64,
    /// Per shard, the index of the last entry that deleted a key from it.
    removed: Arc<Vec<u64>>,
    /// Scripts loaded (SCRIPT LOAD, EVAL), by the SHA-1 of their body:
    /// replicated, so EVALSHA works on every node.
    scripts: Arc<BTreeMap<String, Bytes>>,
    /// Which writes were applied, so that one proposed twice applies once.
    sessions: Arc<sessions::Sessions>,
    /// Shared with every view taken of this data: while one lives, the
    /// first write to a map copies it (`KvStore::is_viewed`).
    viewers: Arc<()>,
}

impl Data {
    fn new() -> Data {
        Data {
            shards: Shards::new(),
            keys: 0,
            bytes: 0,
            clock: 0,
            removed: Arc::new(vec![0; SHARD_COUNT]),
            scripts: Arc::default(),
            sessions: Arc::default(),
            viewers: Arc::default(),
        }
    }

    /// The key's item if it is there and not expired by the store's clock.
    fn live(&self, key: &[u8]) -> Option<&Item> {
        self.live_at(key, self.clock)
    }

    /// The key's item if it is there and not expired by `at`.
    fn live_at(&self, key: &[u8], at: u64) -> Option<&Item> {
        self.shards.get(key).filter(|i| i.live(at))
    }

    /// Live pairs in snapshot order (shard, then key).
    fn iter_live(&self) -> impl Iterator<Item = (&Key, &Item)> {
        self.iter_live_at(self.clock)
    }

    /// Pairs not expired by `at`, in snapshot order.
    fn iter_live_at(&self, at: u64) -> impl Iterator<Item = (&Key, &Item)> {
        self.shards.iter().filter(move |(_, i)| i.live(at))
    }
}

/// The key-value map. [`KvStore::view`] is cheap; cloning the store also
/// copies its index of deadlines.
#[derive(Clone)]
pub struct KvStore {
    data: Data,
    /// Keys with a deadline, by deadline: derived from `data`, for the
    /// leader's sweep and INFO `expires`.
    expiring: BTreeSet<(u64, Key)>,
}

impl PartialEq for KvStore {
    fn eq(&self, other: &KvStore) -> bool {
        self.data == other.data
    }
}

impl Eq for KvStore {}

impl fmt::Debug for KvStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KvStore {{ keys: {}, clock: {} }}", self.data.keys, self.data.clock)
    }
}

impl Default for KvStore {
    fn default() -> Self {
        KvStore::new()
    }
}

/// Where a key stood when `WATCH` looked at it: a live key's version, an
/// expired key's version (marked expired), an absent key's shard's last
/// deletion. `EXEC`
/// aborts when the mark differs at apply time.
pub type WatchMark = u64;
const MARK_EXPIRED: u64 = 1 << 62;
const MARK_ABSENT: u64 = 2 << 62;

impl KvStore {
    pub fn new() -> KvStore {
        KvStore { data: Data::new(), expiring: BTreeSet::new() }
    }

    /// Keys stored (Redis's DBSIZE: keys past their deadline count until
    /// the sweep deletes them).
    pub fn len(&self) -> usize {
        self.data.keys
    }

    pub fn is_empty(&self) -> bool {
        self.data.keys == 0
    }

    /// Processes whose writes the store remembers (`sessions`).
    pub fn sessions(&self) -> usize {
        self.data.sessions.len()
    }

    /// Keys with a deadline (INFO keyspace `expires`).
    pub fn expiring(&self) -> usize {
        self.expiring.len()
    }

    /// Bytes of keys and values held.
    pub fn data_bytes(&self) -> usize {
        self.data.bytes
    }

    /// The store's clock, ms since the Unix epoch.
    pub fn clock(&self) -> u64 {
        self.data.clock
    }

    /// A live string value.
    pub fn get(&self, key: &[u8]) -> Option<&[u8]> {
        self.get_at(key, 0)
    }

    pub fn exists(&self, key: &[u8]) -> bool {
        self.data.live(key).is_some()
    }

    /// Every live string pair, in snapshot order (tests and tools).
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.data.iter_live().filter_map(|(k, i)| match &i.value {
            Value::Str(v) => Some((&k[..], &v[..])),
            Value::Hash(_) => None,
        })
    }

    /// The earliest deadline of any key, for the leader's sweep.
    pub fn next_deadline(&self) -> Option<u64> {
        self.expiring.first().map(|(d, _)| *d)
    }

    /// Up to `max` keys whose deadline is after `after` and at or before
    /// `now`, earliest first.
    pub fn due(&self, after: u64, now: u64, max: usize) -> Vec<Vec<u8>> {
        let from = (after.saturating_add(1), Key::new(b""));
        self.expiring.range(from..).take_while(|(d, _)| *d <= now).take(max).map(|(_, k)| k.to_vec()).collect()
    }

    /// What `WATCH` records for `key` (see [`WatchMark`]).
    pub fn watch_mark(&self, key: &[u8]) -> WatchMark {
        match self.data.shards.get(key) {
            Some(i) if i.live(self.data.clock) => i.version,
            Some(i) => MARK_EXPIRED | i.version,
            None => MARK_ABSENT | self.data.removed[shard_of(key)],
        }
    }

    fn shard_mut(&mut self, key: &[u8]) -> &mut shards::Map {
        self.data.shards.map_mut(key)
    }

    fn index_deadline(&mut self, key: &[u8], old: u64, new: u64) {
        if old == new {
            return;
        }
        if old != 0 {
            self.expiring.remove(&(old, Key::new(key)));
        }
        if new != 0 {
            self.expiring.insert((new, Key::new(key)));
        }
    }

    /// Stores `item` under `key`, replacing what was there.
    fn put(&mut self, key: &[u8], item: Item) {
        let (new_bytes, new_deadline) = (item.value.bytes(), item.deadline);
        let shard = self.shard_mut(key);
        let old = match shard.get_mut(key) {
            Some(slot) => Some(std::mem::replace(slot, item)),
            None => {
                shard.insert(Key::new(key), item);
                None
            }
        };
        match old {
            Some(old) => {
                self.data.bytes = self.data.bytes - old.value.bytes() + new_bytes;
                self.index_deadline(key, old.deadline, new_deadline);
            }
            None => {
                self.data.keys += 1;
                self.data.bytes += key.len() + new_bytes;
                self.index_deadline(key, 0, new_deadline);
            }
        }
    }

    /// Changes a stored item in place, keeping the counts and the deadline
    /// index right.
    fn modify<R>(&mut self, key: &[u8], f: impl FnOnce(&mut Item) -> R) -> Option<R> {
        if !self.data.shards.contains_key(key) {
            return None;
        }
        let item = self.shard_mut(key).get_mut(key)?;
        let (bytes, deadline) = (item.value.bytes(), item.deadline);
        let r = f(item);
        let (new_bytes, new_deadline) = (item.value.bytes(), item.deadline);
        self.data.bytes = self.data.bytes - bytes + new_bytes;
        self.index_deadline(key, deadline, new_deadline);
        Some(r)
    }

    /// Deletes `key` at log index `index`; whether it was stored.
    fn remove(&mut self, key: &[u8], index: u64) -> Option<Item> {
        if !self.data.shards.contains_key(key) {
            // Do not copy a map shared with a view just to find nothing.
            return None;
        }
        let item = self.shard_mut(key).remove(key)?;
        self.data.keys -= 1;
        self.data.bytes -= key.len() + item.value.bytes();
        self.index_deadline(key, item.deadline, 0);
        Arc::make_mut(&mut self.data.removed)[shard_of(key)] = index;
        Some(item)
    }

    /// Deletes `key` if its deadline has passed by the store's clock, so
    /// that a write finds only live keys.
    fn purge(&mut self, key: &[u8], index: u64) {
        let now = self.data.clock;
        if self.data.shards.get(key).is_some_and(|i| !i.live(now)) {
            self.remove(key, index);
        }
    }

    /// A consistent, immutable copy of the store as it is now, cheap to take
    /// and safe to send to another thread while this store keeps applying.
    pub fn view(&self) -> KvView {
        KvView { data: self.data.clone() }
    }

    /// Whether a view taken from this store still lives somewhere (a
    /// snapshot being written, a scan): then a write may first copy a map,
    /// a hundred or more pointers on a big store, not a microsecond's work.
    pub fn is_viewed(&self) -> bool {
        Arc::strong_count(&self.data.viewers) > 1
    }

    /// Writes a snapshot of the current state; see [`KvView::write_to`].
    pub fn write_snapshot<W: std::io::Write>(&self, w: W) -> std::io::Result<u64> {
        self.view().write_to(w)
    }

    /// Serves a read command (docs/commands.md) from the current state. A
    /// key past its deadline by the store's clock or by `at` is absent: `at`
    /// is the leader's clock that released the read (`crate::expiry`), 0
    /// for none. `wall` is this node's clock (ms), for the numbers TTL
    /// answers.
    pub fn read(&self, cmd: &Cmd, wall: u64, at: u64) -> Reply {
        exec::query(&self.data, cmd, wall, at)
    }

    /// A string value not expired by the store's clock or by `at`.
    pub fn get_at(&self, key: &[u8], at: u64) -> Option<&[u8]> {
        match self.data.live_at(key, self.data.clock.max(at)) {
            Some(Item { value: Value::Str(v), .. }) => Some(v),
            _ => None,
        }
    }
}

/// A frozen copy of a [`KvStore`]: `Send + Sync`, independent of the store it
/// came from.
#[derive(Clone)]
pub struct KvView {
    data: Data,
}

impl KvView {
    pub fn len(&self) -> usize {
        self.data.keys
    }

    pub fn is_empty(&self) -> bool {
        self.data.keys == 0
    }

    /// Serves a read command from the copy (scans, off the core thread);
    /// as [`KvStore::read`].
    pub fn read(&self, cmd: &Cmd, wall: u64, at: u64) -> Reply {
        exec::query(&self.data, cmd, wall, at)
    }
}

#[cfg(test)]
mod tests;
