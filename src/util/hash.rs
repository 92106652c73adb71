//! FNV-1a hashing: stable across runs and platforms.

use std::hash::Hasher;

/// FNV-1a, 64 bit: stable across runs and platforms (unlike `DefaultHasher`);
/// snapshot ids and the SQL fingerprint.
pub(crate) struct Fnv64(u64);

impl Default for Fnv64 {
    fn default() -> Self {
        Fnv64(0xcbf2_9ce4_8422_2325)
    }
}

impl Hasher for Fnv64 {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
}
