//! A key as the store's maps hold it: a short key lives in the map's node
//! itself, a long one in a shared allocation.
//!
//! At 10 million keys a lookup's comparisons each followed a key's pointer
//! into memory that was not in cache; that was a quarter of the core
//! thread's time while loading (README, Performance). Keys of up to
//! [`INLINE`] bytes (most keys clients use: `user:1000:profile`,
//! redis-benchmark's `key:000000012345`) are compared in place, cost no
//! allocation of their own, and are copied without touching a reference
//! count when a write copies a map a snapshot's view shares.

use std::borrow::Borrow;
use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::ops::Deref;
use std::sync::Arc;

/// The longest key kept inline: with its length and the variant's tag a key
/// is 24 bytes, 8 more than an `Arc<[u8]>`.
const INLINE: usize = 22;

#[derive(Clone)]
pub(crate) struct Key(Repr);

#[derive(Clone)]
enum Repr {
    /// `len <= INLINE`; the bytes past `len` are zero.
    Inline {
        len: u8,
        bytes: [u8; INLINE],
    },
    Shared(Arc<[u8]>),
}

const _: () = assert!(std::mem::size_of::<Key>() == 24);

impl Key {
    pub(crate) fn new(key: &[u8]) -> Key {
        match u8::try_from(key.len()) {
            Ok(len) if key.len() <= INLINE => {
                let mut bytes = [0; INLINE];
                bytes[..key.len()].copy_from_slice(key);
                Key(Repr::Inline { len, bytes })
            }
            _ => Key(Repr::Shared(Arc::from(key))),
        }
    }

    pub(crate) fn as_bytes(&self) -> &[u8] {
        match &self.0 {
            Repr::Inline { len, bytes } => &bytes[..usize::from(*len)],
            Repr::Shared(bytes) => bytes,
        }
    }
}

impl Deref for Key {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        self.as_bytes()
    }
}

// Maps are searched with `&[u8]`: `Borrow` requires that a key compares,
// equals and hashes exactly as its bytes do, which every impl below keeps.
impl Borrow<[u8]> for Key {
    fn borrow(&self) -> &[u8] {
        self.as_bytes()
    }
}

impl PartialEq for Key {
    fn eq(&self, other: &Key) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for Key {}

impl PartialOrd for Key {
    fn partial_cmp(&self, other: &Key) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Key {
    fn cmp(&self, other: &Key) -> Ordering {
        self.as_bytes().cmp(other.as_bytes())
    }
}

impl Hash for Key {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_bytes().hash(state);
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(self.as_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn keys_compare_as_their_bytes_inline_or_not() {
        let raw: Vec<Vec<u8>> = vec![
            b"".to_vec(),
            b"a".to_vec(),
            b"a\0".to_vec(),
            vec![b'k'; INLINE - 1],
            vec![b'k'; INLINE],
            vec![b'k'; INLINE + 1],
            [vec![b'k'; INLINE], vec![0]].concat(),
            vec![0xff; 300],
            b"key:000000012345".to_vec(),
        ];
        for a in &raw {
            let ka = Key::new(a);
            assert_eq!(ka.as_bytes(), &a[..]);
            for b in &raw {
                assert_eq!(ka.cmp(&Key::new(b)), a.cmp(b), "{a:?} against {b:?}");
                assert_eq!(ka == Key::new(b), a == b);
            }
        }
        assert!(matches!(Key::new(&[b'k'; INLINE]).0, Repr::Inline { .. }));
        assert!(matches!(Key::new(&[b'k'; INLINE + 1]).0, Repr::Shared(_)));
    }

    #[test]
    fn a_map_of_keys_is_found_by_bytes_and_ordered_as_bytes() {
        let raw: Vec<Vec<u8>> =
            (0..2_000u32).map(|i| format!("{}{i}", "x".repeat(i as usize % 40)).into_bytes()).collect();
        let map: BTreeMap<Key, usize> = raw.iter().enumerate().map(|(n, k)| (Key::new(k), n)).collect();
        for (n, k) in raw.iter().enumerate() {
            assert_eq!(map.get(&k[..]), Some(&n));
        }
        let mut sorted = raw.clone();
        sorted.sort();
        assert!(map.keys().map(|k| k.to_vec()).eq(sorted));
    }
}
