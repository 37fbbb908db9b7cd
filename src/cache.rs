//! Tokens already verified, so a token presented again costs a hash and a lookup instead of
//! a signature check.
//!
//! Entries are keyed by a keyed 128-bit fingerprint of the whole token (the token itself is
//! never stored) and remember the key-set generation they were verified under, so removing a
//! key invalidates them. Time-dependent checks (`exp`, `nbf`, `iat`) and revocation are redone
//! on every hit; everything else about a token is immutable.
//!
//! The table is this crate's own because at a hundred thousand tokens and more a hit costs
//! what it reads from memory, and a general-purpose cache reads too much: quick_cache's hit
//! (hash index, then slot, then the entry behind its `Arc`) is three or four dependent cache
//! misses (`docs/performance.md` has the two measured side by side). Here the fingerprint
//! names two buckets of one stripe outright (two-choice hashing, so the table fills to its
//! bound with few collisions); a bucket is one cache line of eight slot words, each an
//! entry's place in the stripe's slab with part of its fingerprint, so a hit reads one or two
//! lines whose addresses are known at once, then its entry. Entries live in the slab in the
//! order they came, with no allocation of their own.
//!
//! Eviction counts uses, and every operation does a bounded amount of work. A hit counts a
//! use in its slot word (up to 3). An insertion into two full buckets first moves a resident
//! to its other bucket if that has room, else evicts the least used of the sixteen residents
//! and ages the rest by that many uses: tokens presented again survive a flood of one-off
//! tokens, which evict each other. Each stripe keeps its share of both bounds; an insertion
//! over a share evicts with the stripe's hand (a CLOCK: a used entry passed loses a use, an
//! unused one goes), at most `HAND_STEPS` slots, and is dropped if that was not enough.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{PoisonError, RwLock};

use crate::authorize::Grants;
use crate::fingerprint::Fingerprint;
use crate::Claims;

/// Slots in a bucket: eight 8-byte words fill one 64-byte cache line.
const WAYS: usize = 8;

/// What a slot costs whether it holds an entry or not. The table's size when full is taken off
/// the byte bound first, however little of it has grown yet.
const SLOT_BYTES: usize = size_of::<u64>();

// A slot word: 0 where empty; else the entry's index in the slab plus one (low 32 bits), its
// uses since it was last aged (2 bits, up to 3), and the top 30 bits of the fingerprint's
// second half (a filter only: a hit compares the whole fingerprint stored in the entry).
const INDEX: u64 = 0xffff_ffff;
const USE: u64 = 1 << 32;
const USES: u64 = 0b11 << 32;
const FILTER_SHIFT: u32 = 34;

/// Slots a stripe's hand visits at most for one insertion over a bound.
const HAND_STEPS: usize = 64;

pub(crate) struct VerifiedCache<C> {
    /// `None` when either bound leaves no room for one entry: caching is off.
    table: Option<Table<C>>,
}

struct Table<C> {
    stripes: Box<[RwLock<Stripe<C>>]>,
    /// The most buckets a stripe grows to: a power of two, so a bucket's partner is found by
    /// an exclusive or.
    max_buckets: usize,
    /// Each stripe's share of the entry bound (its slots may be more).
    stripe_entries: usize,
    /// Each stripe's share of the byte bound, once the slots are paid for.
    stripe_bytes: u64,
}

struct Stripe<C> {
    /// A power of two of them, doubled as the stripe fills (up to the table's
    /// `max_buckets`), so a lightly filled cache is a dense one.
    buckets: Box<[Bucket]>,
    /// Reserved whole when the stripe is made, so it never moves: its pages are only touched
    /// as it fills.
    slab: Vec<Option<CachedToken<C>>>,
    /// Indices of empty places in `slab`, used before it grows.
    free: Vec<u32>,
    entries: usize,
    /// The slab's places touched so far (each stays in memory once used) and the heap parts
    /// of the entries held.
    bytes: u64,
    /// The next slot (bucket × [`WAYS`] + way) the byte and entry bounds evict from.
    hand: usize,
    /// Turns the start of the search for the least used of a token's sixteen candidates.
    turn: usize,
}

/// Atomic so a hit can count its use under the stripe's read lock.
#[derive(Default)]
#[repr(align(64))]
struct Bucket([AtomicU64; WAYS]);

/// Where a fingerprint may live.
#[derive(Clone, Copy)]
struct Place {
    buckets: [usize; 2],
    filter: u64,
}

/// Smallest bucket array of a stripe.
const FIRST_BUCKETS: usize = 4;

/// A stripe doubles its buckets before its entries pass this share of its slots.
const GROW_AT: (usize, usize) = (7, 8);

/// A verified token's claims, packed into one slab place where `Claims` makes three or more
/// allocations: fewer cache misses on a hit at a million tokens, and under 256 bytes a token.
struct CachedToken<C> {
    /// The whole fingerprint: a slot word's filter is only part of it.
    fingerprint: Fingerprint,
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
    /// What this entry's heap parts count against the byte bound (its place in the slab is
    /// counted by the stripe, once touched).
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

impl<C> VerifiedCache<C> {
    /// A cache holding at most `max_entries` tokens and at most `max_bytes` bytes (its table
    /// and its entries, estimated); 0 for either turns it off.
    pub(crate) fn new(max_entries: usize, max_bytes: usize) -> Self {
        // No entry weighs less than this, so more than `max_bytes` buys of them could never
        // be held.
        let lightest = SLOT_BYTES + Stripe::<C>::PLACE as usize;
        let max_entries = max_entries.min(max_bytes / lightest).min(u32::MAX as usize);
        if max_entries == 0 {
            return Self { table: None };
        }
        // Stripes of fewer than 32 entries evict too eagerly to be worth their locks.
        let parallelism = std::thread::available_parallelism().map_or(1, usize::from);
        let stripes = prev_power_of_two((parallelism * 4).min(max_entries / 32).max(1));
        let stripe_entries = max_entries / stripes;
        // The table as it is when full is taken off the byte bound from the start.
        let max_buckets = stripe_entries.div_ceil(WAYS).next_power_of_two();
        let table_bytes = stripes * max_buckets * WAYS * SLOT_BYTES;
        let stripe_bytes = (max_bytes.saturating_sub(table_bytes) / stripes) as u64;
        if stripe_bytes < lightest as u64 {
            return Self { table: None };
        }
        let stripes = (0..stripes)
            .map(|_| {
                RwLock::new(Stripe {
                    buckets: (0..FIRST_BUCKETS.min(max_buckets))
                        .map(|_| Bucket::default())
                        .collect(),
                    slab: Vec::with_capacity(stripe_entries),
                    free: Vec::new(),
                    entries: 0,
                    bytes: 0,
                    hand: 0,
                    turn: 0,
                })
            })
            .collect();
        Self {
            table: Some(Table {
                stripes,
                max_buckets,
                stripe_entries,
                stripe_bytes,
            }),
        }
    }

    pub(crate) fn is_enabled(&self) -> bool {
        self.table.is_some()
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
        self.table.as_ref()?.get(fingerprint, |token| {
            (token.key_generation == key_generation).then(|| {
                times(token.exp, token.iat, token.nbf())
                    .map(|()| (token.claims(), token.grants.clone()))
            })
        })?
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
        let Some(table) = &self.table else { return };
        // Only tokens of absurd sizes fail to pack; they are simply not remembered.
        if let Some(token) =
            CachedToken::pack(fingerprint, claims, grants, extra_bytes, key_generation)
        {
            table.insert(token);
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.table.as_ref().map_or(0, |table| {
            table.stripes.iter().map(|s| read(s).entries).sum()
        })
    }

    /// The bytes held: the table and its entries.
    #[cfg(test)]
    fn weight(&self) -> u64 {
        self.table.as_ref().map_or(0, |table| {
            let slots = table.stripes.len() * table.max_buckets * WAYS;
            (slots * SLOT_BYTES) as u64 + table.stripes.iter().map(|s| read(s).bytes).sum::<u64>()
        })
    }
}

// A panic while a lock was held (none is expected: the code under the locks only moves
// entries) leaves every slot either whole or empty, so the cache stays usable.
fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}

/// The other bucket a word's entry may live in, from the bucket it is in and its filter
/// bits alone (partial-key cuckoo hashing), so a resident can move without its entry being
/// read. Never the same bucket unless the stripe has only one.
fn partner(bucket: usize, filter: u64, mask: usize) -> usize {
    let spread = filter.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 32;
    bucket ^ ((spread as usize | 1) & mask)
}

impl<C> Table<C> {
    fn stripe_of(&self, fingerprint: &Fingerprint) -> &RwLock<Stripe<C>> {
        &self.stripes[fingerprint.halves().0 as usize & (self.stripes.len() - 1)]
    }

    /// Reads the entry of `fingerprint`, if held, under the stripe's read lock.
    fn get<R>(
        &self,
        fingerprint: &Fingerprint,
        read_entry: impl FnOnce(&CachedToken<C>) -> R,
    ) -> Option<R> {
        let stripe = read(self.stripe_of(fingerprint));
        let place = stripe.place(fingerprint);
        let (slot, word, token) = place.slots().find_map(|slot| {
            let (word, token) = stripe.entry_at(slot, &place, fingerprint)?;
            Some((slot, word, token))
        })?;
        // A plain store, not a read-modify-write: writers are locked out, so readers racing
        // here all store the same value, and a use lost is only a use.
        if word & USES != USES {
            stripe.buckets[slot / WAYS].0[slot % WAYS].store(word + USE, Relaxed);
        }
        Some(read_entry(token))
    }

    fn insert(&self, token: CachedToken<C>) {
        let weight = u64::from(token.bytes);
        if weight + Stripe::<C>::PLACE > self.stripe_bytes {
            return;
        }
        let mut stripe = write(self.stripe_of(&token.fingerprint));
        let slots = stripe.buckets.len() * WAYS;
        if stripe.buckets.len() < self.max_buckets
            && stripe.entries >= slots * GROW_AT.0 / GROW_AT.1
        {
            stripe.grow();
        }
        let place = stripe.place(&token.fingerprint);
        // Two requests with the same new token both verify it; the second replaces the first.
        let slot = match stripe.find(&place, &token.fingerprint) {
            Some(slot) => slot,
            None => stripe.make_room(&place),
        };
        stripe.evict(slot);
        if !stripe.fit(weight, self.stripe_bytes, self.stripe_entries, slot) {
            return;
        }
        let index = match stripe.free.pop() {
            Some(index) => index as usize,
            // Within the reserved capacity: entries stay under `stripe_entries`.
            None if stripe.slab.len() < stripe.slab.capacity() => {
                stripe.slab.push(None);
                stripe.bytes += Stripe::<C>::PLACE;
                stripe.slab.len() - 1
            }
            None => return,
        };
        stripe.slab[index] = Some(token);
        *stripe.word(slot) = word_of(place.filter, index);
        stripe.entries += 1;
        stripe.bytes += weight;
    }
}

/// A slot word naming the slab's `index`, filtered by `filter`, not yet used.
fn word_of(filter: u64, index: usize) -> u64 {
    filter << FILTER_SHIFT | (index as u64 + 1)
}

/// The slab index a word names (`usize::MAX`, found nowhere, for an empty slot).
fn index_of(word: u64) -> usize {
    ((word & INDEX) as usize).wrapping_sub(1)
}

/// The slots of `bucket`.
fn slots_of(bucket: usize) -> std::ops::Range<usize> {
    bucket * WAYS..(bucket + 1) * WAYS
}

impl Place {
    /// The slots of both buckets, the first bucket's first.
    fn slots(&self) -> impl Iterator<Item = usize> {
        self.buckets.into_iter().flat_map(slots_of)
    }
}

impl<C> Stripe<C> {
    /// An entry's place in the slab: counted against the byte bound once touched, for good.
    const PLACE: u64 = size_of::<Option<CachedToken<C>>>() as u64;

    fn place(&self, fingerprint: &Fingerprint) -> Place {
        let (low, high) = fingerprint.halves();
        let filter = high >> FILTER_SHIFT;
        let mask = self.buckets.len() - 1;
        let first = (low >> 32) as usize & mask;
        Place {
            buckets: [first, partner(first, filter, mask)],
            filter,
        }
    }

    /// Doubles the buckets and places every entry again, from the slab's fingerprints: work
    /// in proportion to the stripe's entries, done a few times in the stripe's life (its
    /// buckets go from 4 to their most, doubling), so a little per insertion on average, as a
    /// growing hash map's. Uses are forgotten.
    fn grow(&mut self) {
        self.buckets = (0..self.buckets.len() * 2)
            .map(|_| Bucket::default())
            .collect();
        // Dropped once the stripe is whole again: a claims type whose `drop` panics must not
        // leave entries counted that no slot names.
        let mut homeless = Vec::new();
        for index in 0..self.slab.len() {
            let Some(token) = &self.slab[index] else {
                continue;
            };
            let place = self.place(&token.fingerprint);
            match self.make_room(&place) {
                slot if self.peek(slot) == 0 => *self.word(slot) = word_of(place.filter, index),
                // Sixteen places full in a table under half full: not expected, but an entry
                // with nowhere to go is dropped rather than lost track of.
                _ => homeless.extend(self.release(index)),
            }
        }
        drop(homeless);
    }

    fn word(&mut self, slot: usize) -> &mut u64 {
        self.buckets[slot / WAYS].0[slot % WAYS].get_mut()
    }

    fn peek(&self, slot: usize) -> u64 {
        self.buckets[slot / WAYS].0[slot % WAYS].load(Relaxed)
    }

    /// The word in `slot` and its entry, if that entry is `fingerprint`'s: the filter first,
    /// then the whole fingerprint.
    fn entry_at(
        &self,
        slot: usize,
        place: &Place,
        fingerprint: &Fingerprint,
    ) -> Option<(u64, &CachedToken<C>)> {
        let word = self.peek(slot);
        if word == 0 || word >> FILTER_SHIFT != place.filter {
            return None;
        }
        let token = self.slab.get(index_of(word))?.as_ref()?;
        (token.fingerprint == *fingerprint).then_some((word, token))
    }

    fn find(&self, place: &Place, fingerprint: &Fingerprint) -> Option<usize> {
        place
            .slots()
            .find(|&slot| self.entry_at(slot, place, fingerprint).is_some())
    }

    fn empty_slot(&self, bucket: usize) -> Option<usize> {
        slots_of(bucket).find(|&slot| self.peek(slot) == 0)
    }

    /// A slot for a new entry in one of `place`'s buckets: an empty one, else one emptied by
    /// moving its resident to that resident's other bucket, else the least used (still
    /// occupied: the caller evicts it).
    fn make_room(&mut self, place: &Place) -> usize {
        let mask = self.buckets.len() - 1;
        let free = place.buckets.map(|bucket| {
            slots_of(bucket)
                .filter(|&slot| self.peek(slot) == 0)
                .count()
        });
        // The emptier bucket, so both fill evenly.
        let emptier = place.buckets[usize::from(free[1] > free[0])];
        if let Some(slot) = self.empty_slot(emptier) {
            return slot;
        }
        for bucket in place.buckets {
            for slot in slots_of(bucket) {
                let word = self.peek(slot);
                let other = partner(bucket, word >> FILTER_SHIFT, mask);
                if let Some(to) = self.empty_slot(other) {
                    *self.word(to) = word;
                    *self.word(slot) = 0;
                    return slot;
                }
            }
        }
        // The least used of the sixteen goes (the first found from a turning start, among
        // equals), and the others age by as many uses as it had: when every candidate was in
        // use, the tokens once popular lose their lead, so none stays forever; when one was
        // not, nothing else is aged.
        let start = self.turn % (2 * WAYS);
        self.turn = self.turn.wrapping_add(1);
        let candidates = (0..2 * WAYS).map(|step| {
            let candidate = (start + step) % (2 * WAYS);
            place.buckets[candidate / WAYS] * WAYS + candidate % WAYS
        });
        let victim = candidates
            .clone()
            .min_by_key(|&slot| self.peek(slot) & USES)
            .unwrap_or(place.buckets[0] * WAYS);
        let age = self.peek(victim) & USES;
        for slot in candidates.filter(|&slot| slot != victim) {
            let word = self.word(slot);
            *word -= (*word & USES).min(age);
        }
        victim
    }

    fn evict(&mut self, slot: usize) {
        let word = std::mem::take(self.word(slot));
        drop(self.release(index_of(word)));
    }

    /// Takes the entry at the slab's `index` out of the stripe's counts, its place freed;
    /// nothing for an index that holds none.
    fn release(&mut self, index: usize) -> Option<CachedToken<C>> {
        let token = self.slab.get_mut(index)?.take()?;
        self.free.push(index as u32);
        self.entries -= 1;
        self.bytes -= u64::from(token.bytes);
        Some(token)
    }

    /// Evicts with the hand, sparing `keep` and giving used entries a second chance, until
    /// one more entry of `weight` fits both shares; whether it does.
    fn fit(&mut self, weight: u64, max_bytes: u64, max_entries: usize, keep: usize) -> bool {
        let slots = self.buckets.len() * WAYS;
        let fits = |stripe: &Self| {
            let place = if stripe.free.is_empty() {
                Self::PLACE
            } else {
                0
            };
            stripe.bytes + place + weight <= max_bytes && stripe.entries < max_entries
        };
        for _ in 0..HAND_STEPS {
            if fits(self) {
                return true;
            }
            let slot = self.hand % slots;
            self.hand = self.hand.wrapping_add(1);
            if slot == keep {
                continue;
            }
            let word = self.word(slot);
            if *word & USES != 0 {
                *word -= USE;
                continue;
            }
            self.evict(slot);
        }
        fits(self)
    }
}

impl<C: Clone> CachedToken<C> {
    fn pack(
        fingerprint: Fingerprint,
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
        let bytes = text.heap_bytes() + aud_bytes + grants.heap_bytes() + extra_bytes;
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
            fingerprint,
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

    const FINGERPRINT: Fingerprint = Fingerprint::from_halves(1, 2);

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
    fn small_tokens_then_large_ones_stay_within_the_bytes() {
        // A slab place, once used, stays in memory though its entry goes: the bound counts
        // it, so a cache filled with small tokens and then with large ones does not hold
        // twice its bytes.
        let cache = VerifiedCache::new(100_000, 1 << 20);
        for index in 0..20_000usize {
            let claims = if index < 10_000 {
                claims(index)
            } else {
                Claims::new(format!("{index:>2000}"), 1_000, 2_000)
            };
            cache.insert(
                Fingerprint::of(&index.to_le_bytes()),
                &claims,
                &Grants::default(),
                0,
                0,
            );
            assert!(
                cache.weight() <= 1 << 20,
                "{} bytes after {index}",
                cache.weight()
            );
        }
        let table = cache.table.as_ref().unwrap();
        let touched: usize = table.stripes.iter().map(|s| read(s).slab.len()).sum();
        let heap: u64 = table
            .stripes
            .iter()
            .map(|s| {
                read(s)
                    .slab
                    .iter()
                    .flatten()
                    .map(|t| u64::from(t.bytes))
                    .sum::<u64>()
            })
            .sum();
        let slots = table.stripes.len() * table.max_buckets * WAYS;
        let real =
            (touched * size_of::<Option<CachedToken<()>>>() + slots * SLOT_BYTES) as u64 + heap;
        assert!(real <= 1 << 20, "{real} bytes held");
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
        let packed =
            CachedToken::pack(FINGERPRINT, &claims(123_456), &Grants::default(), 0, 0).unwrap();
        assert!(matches!(packed.text, Text::Inline { .. }));
        // Its place in the slab and its slot in the table (up to two, the table rounded up to
        // a power of two) too.
        let held = size_of::<Option<CachedToken<()>>>() + packed.bytes as usize + 2 * SLOT_BYTES;
        assert!(held < 256, "{held} bytes");
    }

    #[test]
    fn a_tag_shared_with_another_token_is_not_a_hit() {
        // A slot holds 30 bits of the fingerprint's second half only; two fingerprints sharing
        // them (and their buckets) may not be answered with each other's claims.
        let cache = VerifiedCache::new(1_000, 1 << 20);
        let (first, second) = (
            Fingerprint::from_halves(1, 8),
            Fingerprint::from_halves(1 + 64, 8),
        );
        let (one, two) = (claims(1), claims(2));
        cache.insert(first, &one, &Grants::default(), 0, 0);
        assert_eq!(cache.get(&second, 0, ok), None);
        cache.insert(second, &two, &Grants::default(), 0, 0);
        assert_eq!(cache.get(&first, 0, ok).unwrap().unwrap().0, one);
        assert_eq!(cache.get(&second, 0, ok).unwrap().unwrap().0, two);
        assert_eq!(cache.get(&Fingerprint::from_halves(1, 9), 0, ok), None);
    }

    #[test]
    fn an_evicted_token_misses_though_its_place_is_reused() {
        // One entry allowed: the second token takes the first one's place in the slab, and
        // the first one's fingerprint must not find it there.
        let cache = VerifiedCache::new(1, 1 << 20);
        let (first, second) = (Fingerprint::of(b"first"), Fingerprint::of(b"second"));
        let (one, two) = (claims(1), claims(2));
        cache.insert(first, &one, &Grants::default(), 0, 0);
        cache.insert(second, &two, &Grants::default(), 0, 0);
        assert_eq!(cache.len(), 1);
        assert_eq!(cache.get(&first, 0, ok), None);
        assert_eq!(cache.get(&second, 0, ok).unwrap().unwrap().0, two);
    }

    #[test]
    fn tiny_caches_keep_their_bound_and_their_last_token() {
        for max in 1..=9 {
            let cache = VerifiedCache::new(max, 1 << 20);
            for index in 0..100usize {
                let fingerprint = Fingerprint::of(&index.to_le_bytes());
                let claims = claims(index);
                cache.insert(fingerprint, &claims, &Grants::default(), 0, 0);
                assert!(
                    cache.len() <= max,
                    "{} entries in a cache of {max}",
                    cache.len()
                );
                assert_eq!(cache.get(&fingerprint, 0, ok).unwrap().unwrap().0, claims);
            }
        }
    }

    #[test]
    fn the_same_token_verified_twice_is_held_once() {
        let cache = VerifiedCache::new(1_000, 1 << 20);
        let fingerprint = Fingerprint::of(b"token");
        cache.insert(fingerprint, &claims(1), &Grants::default(), 0, 0);
        let weight = cache.weight();
        cache.insert(fingerprint, &claims(1), &Grants::default(), 0, 1);
        assert_eq!((cache.len(), cache.weight()), (1, weight));
        // The later verification is the one remembered.
        assert!(cache.get(&fingerprint, 1, ok).is_some());
    }

    #[test]
    fn a_cache_sized_to_its_tokens_holds_nearly_all_of_them() {
        // Each token may live in two buckets, and a resident moves to its other one to make
        // room, so a table nine-tenths full keeps nearly every token it was given. 16,384
        // entries make 2,048 slots in each of 8 stripes, no more. Without the move about one
        // token in 150 was lost, with one bucket a token one in ten.
        let cache = VerifiedCache::new(16_384, 1 << 30);
        let tokens: Vec<Fingerprint> = (0..14_746usize)
            .map(|index| Fingerprint::of(&index.to_le_bytes()))
            .collect();
        for (index, fingerprint) in tokens.iter().enumerate() {
            cache.insert(*fingerprint, &claims(index), &Grants::default(), 0, 0);
        }
        let held = tokens
            .iter()
            .filter(|fingerprint| cache.get(fingerprint, 0, ok).is_some())
            .count();
        assert!(held >= 14_700, "{held} of 14,746 held");
    }

    #[test]
    fn the_table_grows_with_its_entries() {
        // Sized for the most it may hold, a table with few entries would spread them over
        // megabytes, and every hit would miss the CPU's caches; it starts small and doubles.
        let cache = VerifiedCache::new(131_072, 64 << 20);
        let table = cache.table.as_ref().unwrap();
        let buckets = || -> usize { table.stripes.iter().map(|s| read(s).buckets.len()).sum() };
        let tokens: Vec<Fingerprint> = (0..100_000usize)
            .map(|index| Fingerprint::of(&index.to_le_bytes()))
            .collect();
        let claims = claims(0);
        for fingerprint in &tokens[..1_000] {
            cache.insert(*fingerprint, &claims, &Grants::default(), 0, 0);
        }
        // 1,000 entries in 8-slot buckets at most seven-eighths full, rounded to powers of two.
        assert!(buckets() <= 512, "{} buckets for 1,000 tokens", buckets());
        for fingerprint in &tokens[1_000..] {
            cache.insert(*fingerprint, &claims, &Grants::default(), 0, 0);
        }
        assert!(buckets() <= 16_384, "{} buckets", buckets());
        let held = tokens
            .iter()
            .filter(|fingerprint| cache.get(fingerprint, 0, ok).is_some())
            .count();
        // A stripe doubles once seven-eighths full; just before, a token whose sixteen
        // places are all taken (and no resident able to move) evicts one: a handful in a
        // hundred thousand, in about one run in a hundred (the key is random per process).
        assert!(
            held >= 99_950,
            "{held} of 100,000 kept across the doublings"
        );
    }

    #[test]
    fn tokens_presented_again_survive_a_flood_of_new_ones() {
        // 50 tokens in steady use while 20,000 tokens are each presented once, in a cache of
        // 1,024: the one-off tokens evict each other, not the ones in use.
        let cache = VerifiedCache::new(1_024, 1 << 30);
        let in_use: Vec<Fingerprint> = (0..50usize)
            .map(|index| Fingerprint::of(format!("in use {index}").as_bytes()))
            .collect();
        for (index, fingerprint) in in_use.iter().enumerate() {
            cache.insert(*fingerprint, &claims(index), &Grants::default(), 0, 0);
        }
        let mut misses = 0;
        for index in 0..20_000usize {
            let once = Fingerprint::of(format!("once {index}").as_bytes());
            cache.insert(once, &claims(index), &Grants::default(), 0, 0);
            let used = &in_use[index % in_use.len()];
            if cache.get(used, 0, ok).is_none() {
                misses += 1;
                cache.insert(*used, &claims(index), &Grants::default(), 0, 0);
            }
        }
        // Evicting at random would miss about 20,000 × 50 ÷ 1,024 ≈ 980 times.
        assert!(misses < 50, "{misses} misses of tokens in use");
    }

    #[test]
    fn an_audience_costs_about_its_own_bytes() {
        // Its text and one pointer, so a token with an audience is weighed like one.
        let without = CachedToken::pack(FINGERPRINT, &claims(1), &Grants::default(), 0, 0)
            .unwrap()
            .bytes;
        let with = CachedToken::pack(
            FINGERPRINT,
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
        // The byte bound is a bound only if no entry is counted below what it takes: the text
        // and audiences kept outside it (its place in the slab is counted by the stripe, its
        // slot with the table).
        let long = Claims::new("s".repeat(100), 1_000, 2_000).with_issuer("https://auth.example");
        for claims in [claims(1), claims(1).with_audience("orders-api"), long] {
            let packed = CachedToken::pack(FINGERPRINT, &claims, &Grants::default(), 0, 0).unwrap();
            let text =
                claims.sub.len() + claims.jti.len() + claims.iss.as_ref().map_or(0, String::len);
            let outside_text = if text > INLINE_TEXT { text } else { 0 };
            let audiences: usize = claims
                .aud
                .iter()
                .map(|aud| aud.len() + size_of::<Box<str>>())
                .sum();
            let held = outside_text + audiences;
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
            CachedToken::pack(FINGERPRINT, &plain, &Grants::default(), 1_000, 0)
                .unwrap()
                .bytes,
            CachedToken::pack(FINGERPRINT, &plain, &Grants::default(), 0, 0)
                .unwrap()
                .bytes
        );
        let custom = claims(1).with_extra(vec!["admin".to_owned()]);
        let heavy = CachedToken::pack(FINGERPRINT, &custom, &Grants::default(), 1_000, 0)
            .unwrap()
            .bytes;
        let light = CachedToken::pack(FINGERPRINT, &custom, &Grants::default(), 0, 0)
            .unwrap()
            .bytes;
        assert_eq!(heavy - light, 1_000);
    }

    #[test]
    fn scopes_and_roles_weigh_what_they_hold() {
        // A token's grants live beside its claims in the entry, so they count towards the
        // byte bound like its text does.
        let roles = crate::authorize::ClaimPath::new("roles").unwrap();
        let granted = Grants::read(
            br#"{"scope":"orders:read orders:write","roles":["admin"]}"#,
            &roles,
        );
        assert!(granted.heap_bytes() > 0);
        let plain = CachedToken::pack(FINGERPRINT, &claims(1), &Grants::default(), 0, 0).unwrap();
        let with = CachedToken::pack(FINGERPRINT, &claims(1), &granted, 0, 0).unwrap();
        assert_eq!((with.bytes - plain.bytes) as usize, granted.heap_bytes());
    }

    #[test]
    fn shards_are_the_largest_power_of_two_not_above_the_share() {
        // A stripe is chosen by the fingerprint's low bits, so the count is a power of two,
        // and each stripe's shares are the bounds divided by it: rounding down keeps their sum
        // within the bounds and every stripe at 32 entries or more.
        let cases = [(1, 1), (2, 2), (3, 2), (4, 4), (31, 16), (32, 32), (33, 32)];
        for (share, shards) in cases {
            assert_eq!(prev_power_of_two(share), shards, "{share}");
        }
        assert_eq!(prev_power_of_two(usize::MAX), 1 << (usize::BITS - 1));
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
