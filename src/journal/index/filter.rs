//! A blocked Bloom filter per sorted run of the key index: "is this key
//! hash possibly in the run?" in one cache line, so a key that was never
//! recorded (nearly every key of a first scan) costs no read of the run.
//!
//! Each hash sets and tests `k` bits of one 512-bit block. A "maybe" that
//! is wrong costs one chunk read; a "no" is always right.

/// Bits per block: one 64-byte cache line.
const BLOCK_WORDS: usize = 8;

#[derive(Debug, Clone)]
pub struct Filter {
    blocks: Vec<[u64; BLOCK_WORDS]>,
    hashes: u32,
}

impl Filter {
    /// A filter for `entries` hashes with about `bits_per_key` bits each.
    pub fn new(entries: u64, bits_per_key: f64) -> Filter {
        let bits = (entries.max(1) as f64 * bits_per_key).ceil() as u64;
        let blocks = bits.div_ceil(64 * BLOCK_WORDS as u64).max(1) as usize;
        // Fewer bits per key than a plain Bloom filter's optimum (k = b ln 2):
        // keys share blocks unevenly, and the crowded blocks decide.
        let hashes = (bits_per_key * 0.6).round().clamp(1.0, 7.0) as u32;
        Filter {
            blocks: vec![[0; BLOCK_WORDS]; blocks],
            hashes,
        }
    }

    pub fn insert(&mut self, hash: u64) {
        let (block, mut bits) = self.locate(hash);
        let block = &mut self.blocks[block];
        for _ in 0..self.hashes {
            let bit = (bits & 511) as usize;
            block[bit / 64] |= 1 << (bit % 64);
            bits >>= 9;
        }
    }

    pub fn may_contain(&self, hash: u64) -> bool {
        let (block, mut bits) = self.locate(hash);
        let block = &self.blocks[block];
        for _ in 0..self.hashes {
            let bit = (bits & 511) as usize;
            if block[bit / 64] & (1 << (bit % 64)) == 0 {
                return false;
            }
            bits >>= 9;
        }
        true
    }

    /// Asks the processor to start loading `hash`'s block, so a lookup a
    /// few keys later finds it in cache (a big run's filter is tens of
    /// megabytes: every lookup would otherwise wait for memory).
    pub fn prefetch(&self, hash: u64) {
        let (block, _) = self.locate(hash);
        #[cfg(target_arch = "x86_64")]
        // SAFETY: a prefetch is only a hint; the address is inside `blocks`.
        unsafe {
            use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
            _mm_prefetch::<_MM_HINT_T0>(self.blocks[block].as_ptr().cast());
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = block;
    }

    pub fn bytes(&self) -> usize {
        self.blocks.len() * BLOCK_WORDS * 8
    }

    /// The block, and 63 more bits to pick bits in it from. The block is
    /// the hash's place in the hash range (key hashes are uniform already),
    /// so hashes visited in order (a sorted run being written, a sorted
    /// transaction being looked up) visit the blocks in order, which the
    /// processor's prefetcher follows; the bits in the block come from a
    /// mix of the hash.
    fn locate(&self, hash: u64) -> (usize, u64) {
        let block =
            ((u128::from(hash) * self.blocks.len() as u128) >> super::KEY_HASH_BITS) as usize;
        (block.min(self.blocks.len() - 1), mix(hash))
    }
}

/// splitmix64's finalizer.
fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn false_positive_rate(bits_per_key: f64) -> f64 {
        let entries = 200_000u64;
        let mut filter = Filter::new(entries, bits_per_key);
        for i in 0..entries {
            filter.insert(mix(i) >> 24);
        }
        for i in 0..entries {
            assert!(filter.may_contain(mix(i) >> 24), "a no is always right");
        }
        let trials = 200_000u64;
        let wrong = (entries..entries + trials)
            .filter(|i| filter.may_contain(mix(*i) >> 24))
            .count();
        wrong as f64 / trials as f64
    }

    #[test]
    fn more_bits_mean_fewer_false_maybes() {
        let (rich, poor) = (false_positive_rate(14.0), false_positive_rate(4.5));
        assert!(rich < 0.003, "14 bits/key: {rich}");
        assert!(poor > rich && poor < 0.2, "4.5 bits/key: {poor}");
    }
}
