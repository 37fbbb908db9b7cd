//! Tokens already verified, so a token presented again costs a hash and a lookup instead of
//! a signature check.
//!
//! Entries are keyed by a keyed 128-bit fingerprint of the whole token (the token itself is
//! never stored) and remember the key-set generation they were verified under, so removing a
//! key invalidates them. Time-dependent checks (`exp`, `nbf`, `iat`) and revocation are redone
//! on every hit; everything else about a token is immutable.
//!
//! Eviction is `quick_cache`'s (sharded CLOCK-PRO/S3-FIFO style, weighted): each insertion
//! evicts a bounded number of entries from its own shard, so no request ever pays for the
//! whole cache, and the working set survives a scan of one-off tokens.

use std::sync::Arc;

use quick_cache::sync::{Cache, DefaultLifecycle};
use quick_cache::{OptionsBuilder, Weighter};

use crate::authorize::Grants;
use crate::fingerprint::{BuildFingerprintHasher, Fingerprint};
use crate::Claims;

/// The cache's own cost per entry beyond the entry's allocations: the shard slot (key,
/// value pointer, list links, clock bits), its hash-table index, and allocator headers.
/// Measured with `cargo bench --bench gate` (bytes per cached token, from RSS).
const ENTRY_OVERHEAD: usize = 64;

pub(crate) struct VerifiedCache<C> {
    /// `None` when either bound is 0: caching is off.
    entries: Option<Cache<Fingerprint, Arc<CachedToken<C>>, Weigh, BuildFingerprintHasher>>,
}

/// A verified token's claims, packed into one allocation where `Claims` makes three or more:
/// fewer cache misses on a hit at a million tokens, and under 256 bytes a token (`Claims<()>`
/// alone, in an `Arc`, takes about 224).
struct CachedToken<C> {
    key_generation: u64,
    exp: u64,
    iat: u64,
    /// Meaningful only with `HAS_NBF`.
    nbf: u64,
    /// `sub`, then `jti`, then `sid` if any, then `iss` if any.
    text: Text,
    aud: Box<[Box<str>]>,
    /// Scopes and roles, read once on the miss: a hit checks requirements without parsing.
    grants: Grants,
    sub_len: u32,
    jti_len: u32,
    sid_len: u32,
    /// What this entry counts against the byte bound.
    bytes: u32,
    flags: u8,
    extra: C,
}

const HAS_NBF: u8 = 1;
const HAS_ISSUER: u8 = 2;
const HAS_SESSION: u8 = 4;

/// Up to this many bytes of `sub` + `jti` + `iss` live inside the entry (a UUID subject and a
/// 22-character `jti` fit); longer text gets its own allocation.
const INLINE_TEXT: usize = 64;

enum Text {
    Inline { len: u8, bytes: [u8; INLINE_TEXT] },
    Heap(Box<str>),
}

impl Text {
    fn new(parts: [&str; 4]) -> Self {
        let len: usize = parts.iter().map(|part| part.len()).sum();
        if len > INLINE_TEXT {
            return Self::Heap(parts.concat().into_boxed_str());
        }
        let mut bytes = [0; INLINE_TEXT];
        let mut at = 0;
        for part in parts {
            bytes[at..at + part.len()].copy_from_slice(part.as_bytes());
            at += part.len();
        }
        Self::Inline {
            len: len as u8,
            bytes,
        }
    }

    fn as_str(&self) -> &str {
        match self {
            // Concatenated whole `str`s: always UTF-8, so the check cannot fail.
            Self::Inline { len, bytes } => {
                std::str::from_utf8(&bytes[..usize::from(*len)]).unwrap_or_default()
            }
            Self::Heap(text) => text,
        }
    }

    fn heap_bytes(&self) -> usize {
        match self {
            Self::Inline { .. } => 0,
            Self::Heap(text) => text.len(),
        }
    }
}

/// Weighs an entry by its estimated bytes, but never below `floor` (the byte bound divided by
/// the entry bound), so one weight budget enforces both bounds at once.
#[derive(Clone)]
struct Weigh {
    floor: u64,
}

impl<C> Weighter<Fingerprint, Arc<CachedToken<C>>> for Weigh {
    fn weight(&self, _key: &Fingerprint, token: &Arc<CachedToken<C>>) -> u64 {
        u64::from(token.bytes).max(self.floor)
    }
}

impl<C> VerifiedCache<C> {
    /// A cache holding at most `max_entries` tokens and at most `max_bytes` bytes (estimated
    /// per entry, allocations included); 0 for either turns it off.
    pub(crate) fn new(max_entries: usize, max_bytes: usize) -> Self {
        if max_entries == 0 || max_bytes == 0 {
            return Self { entries: None };
        }
        // Chosen here rather than by quick_cache, so the per-shard budgets below add up to no
        // more than the bounds (quick_cache rounds each shard's share up). Shards of fewer
        // than 32 entries evict too eagerly to be worth their locks.
        let parallelism = std::thread::available_parallelism().map_or(1, usize::from);
        let shards = prev_power_of_two((parallelism * 4).min(max_entries / 32).max(1));
        let entries_per_shard = (max_entries / shards).max(1) as u64;
        let floor = ((max_bytes / shards) as u64 / entries_per_shard).max(1);
        let weight_per_shard = (entries_per_shard * floor).min((max_bytes / shards) as u64);
        if weight_per_shard == 0 {
            return Self { entries: None };
        }
        let options = OptionsBuilder::new()
            .shards(shards)
            .estimated_items_capacity(entries_per_shard as usize * shards)
            .weight_capacity(weight_per_shard * shards as u64)
            .build()
            .expect("every option is set");
        Self {
            entries: Some(Cache::with_options(
                options,
                Weigh { floor },
                BuildFingerprintHasher,
                DefaultLifecycle::default(),
            )),
        }
    }

    pub(crate) fn is_enabled(&self) -> bool {
        self.entries.is_some()
    }
}

impl<C: Clone> VerifiedCache<C> {
    /// The claims of a token verified under `key_generation`, if remembered. Times are not
    /// checked here: `times` gets (`exp`, `iat`, `nbf`) first and may refuse before any
    /// claims are rebuilt.
    pub(crate) fn get<E>(
        &self,
        fingerprint: &Fingerprint,
        key_generation: u64,
        times: impl FnOnce(u64, u64, Option<u64>) -> Result<(), E>,
    ) -> Option<Result<(Claims<C>, Grants), E>> {
        let token = self.entries.as_ref()?.get(fingerprint)?;
        if token.key_generation != key_generation {
            return None;
        }
        Some(
            times(token.exp, token.iat, token.nbf())
                .map(|()| (token.claims(), token.grants.clone())),
        )
    }

    /// Remembers verified `claims`. `extra_bytes` estimates the heap the application's own
    /// claims hold (the decoded payload's length is a fair upper bound).
    pub(crate) fn insert(
        &self,
        fingerprint: Fingerprint,
        claims: &Claims<C>,
        grants: &Grants,
        extra_bytes: usize,
        key_generation: u64,
    ) {
        let Some(entries) = &self.entries else { return };
        // Only tokens of absurd sizes fail to pack; they are simply not remembered.
        if let Some(token) = CachedToken::pack(claims, grants, extra_bytes, key_generation) {
            entries.insert(fingerprint, Arc::new(token));
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.as_ref().map_or(0, Cache::len)
    }

    #[cfg(test)]
    fn weight(&self) -> u64 {
        self.entries.as_ref().map_or(0, Cache::weight)
    }
}

impl<C: Clone> CachedToken<C> {
    fn pack(
        claims: &Claims<C>,
        grants: &Grants,
        extra_bytes: usize,
        key_generation: u64,
    ) -> Option<Self> {
        let issuer = claims.iss.as_deref().unwrap_or("");
        let session = claims.sid.as_deref().unwrap_or("");
        let text = Text::new([&claims.sub, &claims.jti, session, issuer]);
        let aud: Box<[Box<str>]> = claims.aud.iter().map(|aud| aud.as_str().into()).collect();
        let aud_bytes: usize = aud
            .iter()
            .map(|aud| aud.len() + size_of::<Box<str>>())
            .sum();
        let extra_bytes = if size_of::<C>() == 0 { 0 } else { extra_bytes };
        let bytes = ENTRY_OVERHEAD
            + size_of::<CachedToken<C>>()
            + 2 * size_of::<usize>() // the Arc's counts
            + text.heap_bytes()
            + aud_bytes
            + grants.heap_bytes()
            + extra_bytes;
        let mut flags = 0;
        if claims.nbf.is_some() {
            flags |= HAS_NBF;
        }
        if claims.iss.is_some() {
            flags |= HAS_ISSUER;
        }
        if claims.sid.is_some() {
            flags |= HAS_SESSION;
        }
        Some(Self {
            key_generation,
            exp: claims.exp,
            iat: claims.iat,
            nbf: claims.nbf.unwrap_or(0),
            text,
            aud,
            grants: grants.clone(),
            sub_len: u32::try_from(claims.sub.len()).ok()?,
            jti_len: u32::try_from(claims.jti.len()).ok()?,
            sid_len: u32::try_from(session.len()).ok()?,
            bytes: u32::try_from(bytes).ok()?,
            flags,
            extra: claims.extra.clone(),
        })
    }

    fn nbf(&self) -> Option<u64> {
        (self.flags & HAS_NBF != 0).then_some(self.nbf)
    }

    fn claims(&self) -> Claims<C> {
        let (sub, rest) = self.text.as_str().split_at(self.sub_len as usize);
        let (jti, rest) = rest.split_at(self.jti_len as usize);
        let (session, issuer) = rest.split_at(self.sid_len as usize);
        Claims {
            sub: sub.to_owned(),
            exp: self.exp,
            iat: self.iat,
            nbf: self.nbf(),
            jti: jti.to_owned(),
            sid: (self.flags & HAS_SESSION != 0).then(|| session.to_owned()),
            iss: (self.flags & HAS_ISSUER != 0).then(|| issuer.to_owned()),
            aud: self.aud.iter().map(|aud| String::from(&**aud)).collect(),
            extra: self.extra.clone(),
        }
    }
}

fn prev_power_of_two(value: usize) -> usize {
    1 << (usize::BITS - 1 - value.leading_zeros())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(index: usize) -> Claims {
        Claims::new(format!("user{index}"), 1_000, 2_000)
    }

    fn ok(_exp: u64, _iat: u64, _nbf: Option<u64>) -> Result<(), ()> {
        Ok(())
    }

    #[test]
    fn a_hit_returns_the_claims_it_was_given() {
        let cache = VerifiedCache::new(1_000, 1 << 20);
        let original = claims(1)
            .with_issuer("https://auth.example")
            .with_audience("orders")
            .with_audience("billing")
            .with_not_before(1_100)
            .with_session("session-1");
        let fingerprint = Fingerprint::of(b"token");
        cache.insert(fingerprint, &original, &Grants::default(), 0, 7);
        assert_eq!(
            cache.get(&fingerprint, 7, ok),
            Some(Ok((original, Grants::default())))
        );
        let long = Claims::new(
            "a subject too long to live inline in the entry",
            1_000,
            2_000,
        )
        .with_issuer("https://auth.example");
        cache.insert(fingerprint, &long, &Grants::default(), 0, 7);
        assert_eq!(
            cache.get(&fingerprint, 7, ok),
            Some(Ok((long, Grants::default())))
        );
        let no_issuer = claims(2);
        cache.insert(fingerprint, &no_issuer, &Grants::default(), 0, 7);
        assert_eq!(
            cache.get(&fingerprint, 7, ok),
            Some(Ok((no_issuer, Grants::default())))
        );
    }

    #[test]
    fn eviction_keeps_both_bounds_under_many_inserts() {
        // Entries bind: plenty of bytes.
        let cache = VerifiedCache::new(256, 1 << 20);
        for index in 0..10_000usize {
            cache.insert(
                Fingerprint::of(&index.to_le_bytes()),
                &claims(index),
                &Grants::default(),
                0,
                0,
            );
            assert!(cache.len() <= 256, "{} entries after {index}", cache.len());
        }
        assert!(cache.len() > 128, "evicted far too much: {}", cache.len());
        // Bytes bind: room for about 100 entries of ~200 bytes, while 10,000 are allowed.
        let cache = VerifiedCache::new(10_000, 20_000);
        for index in 0..10_000usize {
            cache.insert(
                Fingerprint::of(&index.to_le_bytes()),
                &claims(index),
                &Grants::default(),
                0,
                0,
            );
            assert!(cache.weight() <= 20_000, "{} bytes", cache.weight());
        }
        assert!(cache.len() < 110, "{} entries in 20,000 bytes", cache.len());
    }

    #[test]
    fn a_large_token_weighs_more() {
        let cache = VerifiedCache::new(10_000, 20_000);
        let mut large = claims(0);
        large.aud = (0..50)
            .map(|index| format!("audience number {index}"))
            .collect();
        for index in 0..1_000usize {
            cache.insert(
                Fingerprint::of(&index.to_le_bytes()),
                &large,
                &Grants::default(),
                0,
                0,
            );
        }
        assert!(
            cache.len() < 15,
            "{} large entries in 20,000 bytes",
            cache.len()
        );
    }

    #[test]
    fn a_long_subject_weighs_more() {
        // Text too long to live inline is counted by its length, so the byte bound holds for
        // tokens with long subjects or issuers too.
        let cache = VerifiedCache::new(10_000, 20_000);
        for index in 0..1_000usize {
            let long = Claims::new(format!("{index:>1000}"), 1_000, 2_000);
            cache.insert(
                Fingerprint::of(&index.to_le_bytes()),
                &long,
                &Grants::default(),
                0,
                0,
            );
        }
        assert!(
            cache.len() < 20,
            "{} entries of 1,000-byte subjects in 20,000 bytes",
            cache.len()
        );
    }

    #[test]
    fn a_token_with_the_default_claims_weighs_under_256_bytes() {
        let packed = CachedToken::pack(&claims(123_456), &Grants::default(), 0, 0).unwrap();
        assert!(matches!(packed.text, Text::Inline { .. }));
        assert!(packed.bytes < 256, "{} bytes", packed.bytes);
    }

    #[test]
    fn an_audience_costs_about_its_own_bytes() {
        // Its text and one pointer, so a token with an audience is weighed like one.
        let without = CachedToken::pack(&claims(1), &Grants::default(), 0, 0)
            .unwrap()
            .bytes;
        let with = CachedToken::pack(
            &claims(1).with_audience("orders-api"),
            &Grants::default(),
            0,
            0,
        )
        .unwrap()
        .bytes;
        let added = with - without;
        assert!(
            (10..64).contains(&added),
            "{added} bytes for a 10-byte audience"
        );
    }

    #[test]
    fn an_entry_never_weighs_less_than_the_memory_it_holds() {
        // The byte bound is a bound only if no entry is counted below what it takes: the
        // cache's own slot, the Arc (two counts and the entry), and the text and audiences
        // kept outside the entry.
        let long = Claims::new("s".repeat(100), 1_000, 2_000).with_issuer("https://auth.example");
        for claims in [claims(1), claims(1).with_audience("orders-api"), long] {
            let packed = CachedToken::pack(&claims, &Grants::default(), 0, 0).unwrap();
            let text =
                claims.sub.len() + claims.jti.len() + claims.iss.as_ref().map_or(0, String::len);
            let outside_text = if text > INLINE_TEXT { text } else { 0 };
            let audiences: usize = claims
                .aud
                .iter()
                .map(|aud| aud.len() + size_of::<Box<str>>())
                .sum();
            let held = ENTRY_OVERHEAD
                + 2 * size_of::<usize>()
                + size_of::<CachedToken<()>>()
                + outside_text
                + audiences;
            assert!(packed.bytes as usize >= held, "{} < {held}", packed.bytes);
        }
    }

    #[test]
    fn the_payload_length_counts_only_for_custom_claims() {
        // The verifier passes the decoded payload's length as the estimate of the
        // application's own claims; `()` holds nothing, so its entries stay small whatever
        // the token carried, and custom claims are counted in full.
        let plain = claims(1);
        assert_eq!(
            CachedToken::pack(&plain, &Grants::default(), 1_000, 0)
                .unwrap()
                .bytes,
            CachedToken::pack(&plain, &Grants::default(), 0, 0)
                .unwrap()
                .bytes
        );
        let custom = claims(1).with_extra(vec!["admin".to_owned()]);
        let heavy = CachedToken::pack(&custom, &Grants::default(), 1_000, 0)
            .unwrap()
            .bytes;
        let light = CachedToken::pack(&custom, &Grants::default(), 0, 0)
            .unwrap()
            .bytes;
        assert_eq!(heavy - light, 1_000);
    }

    #[test]
    fn another_key_generation_is_a_miss() {
        let cache = VerifiedCache::new(1_000, 1 << 20);
        let fingerprint = Fingerprint::of(b"token");
        cache.insert(fingerprint, &claims(1), &Grants::default(), 0, 3);
        assert!(cache.get(&fingerprint, 3, ok).is_some());
        assert_eq!(cache.get(&fingerprint, 4, ok), None);
    }

    #[test]
    fn the_time_check_sees_the_entry_and_can_refuse_it() {
        let cache = VerifiedCache::new(1_000, 1 << 20);
        let fingerprint = Fingerprint::of(b"token");
        cache.insert(
            fingerprint,
            &claims(1).with_not_before(1_500),
            &Grants::default(),
            0,
            0,
        );
        let seen = cache.get(&fingerprint, 0, |exp, iat, nbf| {
            Err::<(), _>((exp, iat, nbf))
        });
        assert_eq!(seen, Some(Err((2_000, 1_000, Some(1_500)))));
    }

    #[test]
    fn zero_for_either_bound_disables() {
        for (entries, bytes) in [(0, 1 << 20), (1_000, 0)] {
            let cache = VerifiedCache::new(entries, bytes);
            assert!(!cache.is_enabled());
            let fingerprint = Fingerprint::of(b"token");
            cache.insert(fingerprint, &claims(1), &Grants::default(), 0, 0);
            assert_eq!(cache.get(&fingerprint, 0, ok), None);
        }
    }
}
