//! A fast, deterministic 64-bit hasher for fingerprints of simulated state.
//! The default SipHash guards hash tables against adversarial keys, which
//! simulated states are not; here it was a fifth of the model checker's time.
//! Words are folded in with a multiply-rotate step (as in FxHash) and the
//! result is passed through the SplitMix64 finalizer, so that nearby states
//! spread over all 64 bits.

use std::hash::{Hash, Hasher};

#[derive(Clone, Copy, Debug, Default)]
pub struct FastHasher {
    state: u64,
}

const MULTIPLIER: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl FastHasher {
    fn add(&mut self, word: u64) {
        self.state = (self.state.rotate_left(5) ^ word).wrapping_mul(MULTIPLIER);
    }
}

impl Hasher for FastHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            self.add(u64::from_le_bytes(chunk.try_into().expect("chunks of 8")));
        }
        let mut tail = [0u8; 8];
        let rest = chunks.remainder();
        tail[..rest.len()].copy_from_slice(rest);
        self.add(u64::from_le_bytes(tail) ^ ((rest.len() as u64) << 56));
    }

    fn write_u8(&mut self, n: u8) {
        self.add(n as u64);
    }

    fn write_u32(&mut self, n: u32) {
        self.add(n as u64);
    }

    fn write_u64(&mut self, n: u64) {
        self.add(n);
    }

    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }

    fn finish(&self) -> u64 {
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

pub fn hash_of(value: &impl Hash) -> u64 {
    let mut h = FastHasher::default();
    value.hash(&mut h);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distinct_small_values_hash_apart() {
        let hashes: std::collections::HashSet<u64> = (0u64..100_000).map(|n| hash_of(&n)).collect();
        assert_eq!(hashes.len(), 100_000);
        assert_ne!(hash_of(&(1u8, 2u8)), hash_of(&(2u8, 1u8)));
        assert_ne!(hash_of(&"ab"), hash_of(&"ba"));
    }
}
