//! Keyed 128-bit fingerprints: how the crate remembers a token or a `jti`
//! without storing it.
//!
//! The key is random per process, so an attacker who cannot read this process's
//! memory cannot aim a collision at someone else's entry; and a collision could
//! only ever make a valid token look revoked (fail closed), never the reverse.

use std::hash::{BuildHasher, Hasher};
use std::sync::OnceLock;

use siphasher::sip128::{Hasher128, SipHasher13};

/// A 128-bit keyed hash of some bytes, kept as two `u64`s so a map entry of a fingerprint
/// and a `u64` packs into 24 bytes (a `u128` would align it to 32).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Fingerprint(u64, u64);

impl Fingerprint {
    pub(crate) fn of(bytes: &[u8]) -> Self {
        let (k0, k1) = *process_key();
        let mut hasher = SipHasher13::new_with_keys(k0, k1);
        hasher.write(bytes);
        let hash = hasher.finish128();
        Self(hash.h1, hash.h2)
    }

    /// Its two independent halves, for tables that place and tag entries by its bits.
    pub(crate) fn halves(self) -> (u64, u64) {
        (self.0, self.1)
    }

    #[cfg(test)]
    pub(crate) const fn from_halves(low: u64, high: u64) -> Self {
        Self(low, high)
    }
}

fn process_key() -> &'static (u64, u64) {
    static KEY: OnceLock<(u64, u64)> = OnceLock::new();
    KEY.get_or_init(|| {
        let mut seed = [0u8; 16];
        // Without an OS random source no key (and no token id) would be safe to make.
        getrandom::getrandom(&mut seed).expect("the operating system's random source failed");
        let (k0, k1) = seed.split_at(8);
        (
            u64::from_le_bytes(k0.try_into().expect("8 bytes")),
            u64::from_le_bytes(k1.try_into().expect("8 bytes")),
        )
    })
}

/// Fingerprints are already uniformly random under a secret key, so hashing them
/// again for the map would be wasted work: half of one is a fine bucket index.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct FingerprintHasher {
    state: u64,
}

impl Hasher for FingerprintHasher {
    fn finish(&self) -> u64 {
        self.state
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only reached if a key other than a fingerprint sneaks in; fold it in rather than lose it.
        for &byte in bytes {
            self.state = self.state.rotate_left(8) ^ u64::from(byte);
        }
    }

    fn write_u64(&mut self, value: u64) {
        self.state = self.state.rotate_left(29) ^ value;
    }
}

/// The [`BuildHasher`] for maps keyed by [`Fingerprint`].
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct BuildFingerprintHasher;

impl BuildHasher for BuildFingerprintHasher {
    type Hasher = FingerprintHasher;

    fn build_hasher(&self) -> FingerprintHasher {
        FingerprintHasher::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_bytes_same_fingerprint_and_different_bytes_differ() {
        assert_eq!(Fingerprint::of(b"abc"), Fingerprint::of(b"abc"));
        assert_ne!(Fingerprint::of(b"abc"), Fingerprint::of(b"abd"));
    }

    #[test]
    fn the_key_is_drawn_at_random() {
        // A fixed key would let anyone compute fingerprints offline and aim a collision at
        // another token's entry. 64 random bits have 8 to 56 of them set but for odds under
        // one in ten billion.
        let (k0, k1) = *process_key();
        assert_ne!(k0, k1);
        for half in [k0, k1] {
            assert!((8..=56).contains(&half.count_ones()), "{half:#x}");
        }
    }

    #[test]
    fn map_hash_uses_both_halves() {
        let build = BuildFingerprintHasher;
        assert_ne!(
            build.hash_one(Fingerprint(1, 0)),
            build.hash_one(Fingerprint(0, 1))
        );
        // No bit of either half is lost, whatever the other half holds.
        assert_ne!(
            build.hash_one(Fingerprint(u64::MAX, 0)),
            build.hash_one(Fingerprint(u64::MAX, 1))
        );
        assert_eq!(std::mem::size_of::<(Fingerprint, u64)>(), 24);
    }
}
