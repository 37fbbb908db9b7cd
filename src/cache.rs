//! Tokens already verified, so a token presented again costs a hash and a lookup instead of
//! a signature check.
//!
//! Entries are keyed by a keyed 128-bit fingerprint of the whole token (the token itself is
//! never stored) and remember the key-set generation they were verified under, so removing a
//! key invalidates them. Time-dependent checks (`exp`, `nbf`, `iat`) and revocation are redone
//! on every hit; everything else about a token is immutable.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use dashmap::DashMap;

use crate::fingerprint::{BuildFingerprintHasher, Fingerprint};
use crate::Claims;

pub(crate) struct VerifiedCache<C> {
    entries: DashMap<Fingerprint, CachedToken<C>, BuildFingerprintHasher>,
    capacity: usize,
    // Approximate: DashMap::len locks every shard, too dear for each insertion.
    len: AtomicUsize,
}

struct CachedToken<C> {
    claims: Arc<Claims<C>>,
    key_generation: u64,
}

impl<C> VerifiedCache<C> {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            entries: DashMap::with_hasher(BuildFingerprintHasher),
            capacity,
            len: AtomicUsize::new(0),
        }
    }

    pub(crate) fn is_enabled(&self) -> bool {
        self.capacity > 0
    }

    pub(crate) fn get(
        &self,
        fingerprint: &Fingerprint,
        key_generation: u64,
    ) -> Option<Arc<Claims<C>>> {
        let entry = self.entries.get(fingerprint)?;
        (entry.key_generation == key_generation).then(|| entry.claims.clone())
    }

    /// Remembers a verified token. When full, expired entries go first; if that frees too
    /// little, everything goes: only genuine tokens ever get here, so refilling is cheap and
    /// an attacker cannot use the cache to grow memory.
    pub(crate) fn insert(
        &self,
        fingerprint: Fingerprint,
        claims: Arc<Claims<C>>,
        key_generation: u64,
        now: u64,
    ) {
        if self.len.load(Ordering::Relaxed) >= self.capacity {
            self.entries.retain(|_, entry| entry.claims.exp > now);
            if self.entries.len() >= self.capacity / 2 {
                self.entries.clear();
            }
            self.len.store(self.entries.len(), Ordering::Relaxed);
        }
        let cached = CachedToken {
            claims,
            key_generation,
        };
        if self.entries.insert(fingerprint, cached).is_none() {
            self.len.fetch_add(1, Ordering::Relaxed);
        }
    }
}
