//! Where the keys live: [`SHARD_COUNT`] shards, each kept as
//! `SLOTS_PER_SHARD` small ordered maps, the maps in groups of `GROUP`, every
//! level behind an `Arc`.
//!
//! A shard is what the store's contract knows: `SCAN`'s cursor is a shard
//! number and `WATCH` remembers each shard's last deletion. The maps and
//! groups below it exist for the copy-on-write of views (module docs of
//! `kv`): a view clones the `GROUP`-sized list of groups, and while it lives
//! the first write to a group copies that group's pointers and the first
//! write to a map copies that map, a pointer and a reference count per key.
//! With one map a shard, at 10 million keys that was 2,400 keys a copy and
//! Readys of 160-256 entries took 0.3-0.8 s; with 16 it is about 150, and a
//! view still copies only 256 pointers, not one per map.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::{Item, Key};

/// Shards of the store; a power of two so a hash picks one with a mask.
pub const SHARD_COUNT: usize = 4096;
const _: () = assert!(SHARD_COUNT.is_power_of_two());

/// Maps a shard is kept in, picked by the hash's bits above the shard's.
const SLOTS_PER_SHARD: usize = 16;
const _: () = assert!(SLOTS_PER_SHARD.is_power_of_two());
const SHARD_BITS: u32 = SHARD_COUNT.trailing_zeros();

/// Maps a group holds: a shard's maps are consecutive and never straddle
/// two groups.
const GROUP: usize = 256;
const _: () = assert!(GROUP.is_power_of_two() && GROUP.is_multiple_of(SLOTS_PER_SHARD));
const GROUPS: usize = SHARD_COUNT * SLOTS_PER_SHARD / GROUP;

pub(super) type Map = BTreeMap<Key, Item>;

/// The shard of `key`. Fixed, not keyed: a client that crafts keys for one
/// shard makes that shard big (still O(log n) per operation), nothing worse.
pub(super) fn shard_of(key: &[u8]) -> usize {
    crc32fast::hash(key) as usize & (SHARD_COUNT - 1)
}

/// The map of `key`, numbered so that shard `s` owns maps
/// `s * SLOTS_PER_SHARD ..` `(s + 1) * SLOTS_PER_SHARD`.
fn slot_of(key: &[u8]) -> usize {
    let hash = crc32fast::hash(key) as usize;
    let sub = (hash >> SHARD_BITS) & (SLOTS_PER_SHARD - 1);
    (hash & (SHARD_COUNT - 1)) * SLOTS_PER_SHARD + sub
}

#[derive(Clone, PartialEq, Eq)]
pub(super) struct Shards {
    groups: Vec<Arc<Vec<Arc<Map>>>>,
}

impl Shards {
    pub(super) fn new() -> Shards {
        // Every slot shares one empty map until its first write.
        let empty = Arc::new(Map::new());
        let group = Arc::new(vec![empty; GROUP]);
        Shards { groups: vec![group; GROUPS] }
    }

    fn map(&self, slot: usize) -> &Map {
        &self.groups[slot / GROUP][slot % GROUP]
    }

    pub(super) fn get(&self, key: &[u8]) -> Option<&Item> {
        self.map(slot_of(key)).get(key)
    }

    pub(super) fn contains_key(&self, key: &[u8]) -> bool {
        self.map(slot_of(key)).contains_key(key)
    }

    /// The map `key` belongs in, copied first if a view shares it.
    pub(super) fn map_mut(&mut self, key: &[u8]) -> &mut Map {
        let slot = slot_of(key);
        let group = Arc::make_mut(&mut self.groups[slot / GROUP]);
        Arc::make_mut(&mut group[slot % GROUP])
    }

    /// Shard `shard`'s pairs, in a fixed order.
    pub(super) fn shard(&self, shard: usize) -> impl Iterator<Item = (&Key, &Item)> {
        let first = shard * SLOTS_PER_SHARD;
        (first..first + SLOTS_PER_SHARD).flat_map(|slot| self.map(slot).iter())
    }

    /// Every pair, shard after shard, each in `shard`'s order: the same on
    /// every node for the same contents.
    pub(super) fn iter(&self) -> impl Iterator<Item = (&Key, &Item)> {
        self.groups.iter().flat_map(|g| g.iter()).flat_map(|m| m.iter())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::{Bytes, Value};

    fn item(n: u64) -> Item {
        Item { value: Value::Str(Bytes::from(&b"v"[..])), deadline: 0, version: n }
    }

    #[test]
    fn a_key_is_found_in_its_shard_and_nowhere_else() {
        let mut shards = Shards::new();
        let keys: Vec<Vec<u8>> = (0..20_000u32).map(|i| format!("key:{i}").into_bytes()).collect();
        for (n, k) in keys.iter().enumerate() {
            shards.map_mut(k).insert(Key::new(k), item(n as u64));
        }
        let mut seen = 0;
        for s in 0..SHARD_COUNT {
            for (k, _) in shards.shard(s) {
                assert_eq!(shard_of(k), s);
                seen += 1;
            }
        }
        assert_eq!(seen, keys.len());
        assert_eq!(shards.iter().count(), keys.len());
        let in_order: Vec<&Key> = shards.iter().map(|(k, _)| k).collect();
        let by_shard: Vec<&Key> = (0..SHARD_COUNT).flat_map(|s| shards.shard(s).map(|(k, _)| k)).collect();
        assert_eq!(in_order, by_shard, "iter goes shard after shard");
        for (n, k) in keys.iter().enumerate() {
            assert_eq!(shards.get(k).map(|i| i.version), Some(n as u64));
        }
    }

    #[test]
    fn a_write_copies_one_map_and_one_group_not_the_view() {
        let mut shards = Shards::new();
        for i in 0..10_000u32 {
            let k = format!("key:{i}").into_bytes();
            shards.map_mut(&k).insert(Key::new(&k), item(1));
        }
        let view = shards.clone();
        let key = b"key:7".to_vec();
        shards.map_mut(&key).insert(Key::new(&key), item(2));
        assert_eq!(view.get(&key).map(|i| i.version), Some(1), "the view keeps what it saw");
        assert_eq!(shards.get(&key).map(|i| i.version), Some(2));
        let shared_groups = shards.groups.iter().zip(&view.groups).filter(|(a, b)| Arc::ptr_eq(a, b)).count();
        assert_eq!(shared_groups, GROUPS - 1);
        let slot = slot_of(&key);
        let (mine, theirs) = (&shards.groups[slot / GROUP], &view.groups[slot / GROUP]);
        let shared_maps = mine.iter().zip(theirs.iter()).filter(|(a, b)| Arc::ptr_eq(a, b)).count();
        assert_eq!(shared_maps, GROUP - 1);
    }
}
