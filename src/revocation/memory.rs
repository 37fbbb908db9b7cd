use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dashmap::mapref::entry::Entry;
use dashmap::DashMap;

use super::{BoxFuture, RevocationCheck, RevocationError, RevocationStore, TokenId};
use crate::clock::{Clock, SystemClock};
use crate::fingerprint::{BuildFingerprintHasher, Fingerprint};
use crate::metrics::{RevocationKind, RevocationSizes};

/// How long an entry outlives its token by default, in memory and in Redis: more than any sane
/// leeway, so a token the gate would still accept within its leeway is still known to be
/// revoked. A verifier's leeway may not be longer than its store's grace.
///
/// ```
/// assert_eq!(jwt_gate::revocation::DEFAULT_GRACE.as_secs(), 300);
/// ```
pub const DEFAULT_GRACE: Duration = Duration::from_secs(300);
/// How often, at most, a write sweeps out entries whose tokens have expired.
const DEFAULT_PURGE_INTERVAL: Duration = Duration::from_secs(60);

/// The in-process revocation list: a concurrent map from a keyed fingerprint of each revoked
/// `jti` to its token's expiry, plus per-subject cut-offs and revoked sessions (`sid`).
///
/// Lookups take a shard read lock and no allocation. Entries leave once their token has
/// expired (plus a grace period, five minutes by default, which must exceed the gate's
/// leeway); the sweep is amortised over writes, so memory is bounded by the tokens still
/// alive, not by history. The raw `jti` is not kept: each entry is 24 bytes of key and value.
///
/// Clones share the same list.
///
/// ```
/// use jwt_gate::clock::ManualClock;
/// use jwt_gate::revocation::{MemoryRevocations, RevocationStore};
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let clock = ManualClock::new(1_000);
/// let store = MemoryRevocations::new().with_clock(clock.clone());
/// store.revoke("jti-1", 1_100).await.unwrap();
/// assert_eq!(store.len(), 1);
///
/// clock.advance(100 + 300 + 1); // past expiry and grace
/// store.purge_expired();
/// assert_eq!(store.len(), 0);
/// # });
/// ```
#[derive(Clone)]
pub struct MemoryRevocations {
    inner: Arc<Inner>,
}

struct Inner {
    tokens: DashMap<Fingerprint, u64, BuildFingerprintHasher>,
    subjects: DashMap<String, SubjectCutoff>,
    /// Fingerprints of revoked `sid`s, to when they may be forgotten.
    sessions: DashMap<Fingerprint, u64, BuildFingerprintHasher>,
    // DashMap::is_empty locks every shard; these flags let the hot path skip hashing for a
    // map until its first entry (a gate in front of tokens that nobody revokes, an identity
    // provider's say, never hashes a `jti`). They are never cleared, so a racing purge cannot
    // hide an entry.
    any_token: AtomicBool,
    any_subject_cutoff: AtomicBool,
    any_session: AtomicBool,
    clock: Arc<dyn Clock>,
    grace: u64,
    purge_interval: u64,
    next_purge: AtomicU64,
    sizes: RevocationSizes,
}

#[derive(Debug, Clone, Copy)]
struct SubjectCutoff {
    issued_before: u64,
    keep_until: u64,
}

impl std::fmt::Debug for MemoryRevocations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryRevocations")
            .field("tokens", &self.inner.tokens.len())
            .field("subjects", &self.inner.subjects.len())
            .field("sessions", &self.inner.sessions.len())
            .finish()
    }
}

impl Default for MemoryRevocations {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryRevocations {
    /// An empty list on the system clock.
    pub fn new() -> Self {
        Self::build(Arc::new(SystemClock), DEFAULT_GRACE, DEFAULT_PURGE_INTERVAL)
    }

    fn build(clock: Arc<dyn Clock>, grace: Duration, purge_interval: Duration) -> Self {
        let next_purge = clock.now().saturating_add(purge_interval.as_secs());
        Self {
            inner: Arc::new(Inner {
                tokens: DashMap::with_hasher(BuildFingerprintHasher),
                subjects: DashMap::new(),
                sessions: DashMap::with_hasher(BuildFingerprintHasher),
                any_token: AtomicBool::new(false),
                any_subject_cutoff: AtomicBool::new(false),
                any_session: AtomicBool::new(false),
                clock,
                grace: grace.as_secs(),
                purge_interval: purge_interval.as_secs(),
                next_purge: AtomicU64::new(next_purge),
                sizes: RevocationSizes::default(),
            }),
        }
    }

    fn rebuild(self, clock: Arc<dyn Clock>, grace: Duration, purge_interval: Duration) -> Self {
        let fresh = Self::build(clock, grace, purge_interval);
        for entry in self.inner.tokens.iter() {
            fresh.inner.tokens.insert(*entry.key(), *entry.value());
        }
        for entry in self.inner.subjects.iter() {
            fresh
                .inner
                .subjects
                .insert(entry.key().clone(), *entry.value());
        }
        for entry in self.inner.sessions.iter() {
            fresh.inner.sessions.insert(*entry.key(), *entry.value());
        }
        let sizes = &fresh.inner.sizes;
        sizes.changed(RevocationKind::Token, count(fresh.inner.tokens.len()));
        sizes.changed(RevocationKind::Subject, count(fresh.inner.subjects.len()));
        sizes.changed(RevocationKind::Session, count(fresh.inner.sessions.len()));
        fresh
            .inner
            .any_token
            .store(!fresh.inner.tokens.is_empty(), Ordering::Release);
        fresh
            .inner
            .any_session
            .store(!fresh.inner.sessions.is_empty(), Ordering::Release);
        // Without the flag the copied cut-offs would be stored but never consulted.
        if self.inner.any_subject_cutoff.load(Ordering::Acquire) {
            fresh
                .inner
                .any_subject_cutoff
                .store(true, Ordering::Release);
        }
        fresh
    }

    /// Uses `clock` for expiry (tests move a [`ManualClock`](crate::clock::ManualClock)).
    /// Entries and cut-offs already recorded are kept.
    #[must_use]
    pub fn with_clock(self, clock: impl Clock) -> Self {
        let (grace, interval) = self.settings();
        self.rebuild(Arc::new(clock), grace, interval)
    }

    /// Keeps entries this long after their token's expiry. Must be at least the gate's leeway:
    /// [`TokenVerifierBuilder::build`](crate::TokenVerifierBuilder::build) refuses a verifier
    /// whose leeway is longer. Entries and cut-offs already recorded are kept.
    #[must_use]
    pub fn with_grace(self, grace: Duration) -> Self {
        let clock = self.inner.clock.clone();
        let (_, interval) = self.settings();
        self.rebuild(clock, grace, interval)
    }

    fn settings(&self) -> (Duration, Duration) {
        (
            Duration::from_secs(self.inner.grace),
            Duration::from_secs(self.inner.purge_interval),
        )
    }

    /// The number of revoked tokens remembered.
    pub fn len(&self) -> usize {
        self.inner.tokens.len()
    }

    /// Whether no token is remembered as revoked.
    pub fn is_empty(&self) -> bool {
        self.inner.tokens.is_empty()
    }

    /// Forgets every entry whose token expired more than the grace period ago. Writes call
    /// this by themselves at most once a minute; call it to sweep on your own schedule.
    pub fn purge_expired(&self) {
        let now = self.inner.clock.now();
        let grace = self.inner.grace;
        // Counted as they go, for the size gauges: `len` would lock every shard again.
        let kept = |removed: &mut i64, keep: bool| {
            *removed -= i64::from(!keep);
            keep
        };
        let (mut tokens, mut subjects, mut sessions) = (0, 0, 0);
        self.inner
            .tokens
            .retain(|_, expires_at| kept(&mut tokens, expires_at.saturating_add(grace) >= now));
        self.inner.subjects.retain(|_, cutoff| {
            kept(
                &mut subjects,
                cutoff.keep_until.saturating_add(grace) >= now,
            )
        });
        self.inner
            .sessions
            .retain(|_, keep_until| kept(&mut sessions, keep_until.saturating_add(grace) >= now));
        let sizes = &self.inner.sizes;
        sizes.changed(RevocationKind::Token, tokens);
        sizes.changed(RevocationKind::Subject, subjects);
        sizes.changed(RevocationKind::Session, sessions);
    }

    /// Sweeps if the purge interval has passed, in one thread only.
    fn purge_if_due(&self) {
        let now = self.inner.clock.now();
        let due = self.inner.next_purge.load(Ordering::Relaxed);
        if now >= due
            && self
                .inner
                .next_purge
                .compare_exchange(
                    due,
                    now + self.inner.purge_interval,
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                )
                .is_ok()
        {
            self.purge_expired();
        }
    }

    /// Records a revocation at once (the memory store cannot fail).
    pub fn revoke_now(&self, jti: &str, expires_at: u64) {
        self.purge_if_due();
        self.inner.any_token.store(true, Ordering::Release);
        let entry = self.inner.tokens.entry(Fingerprint::of(jti.as_bytes()));
        self.inner
            .sizes
            .changed(RevocationKind::Token, keep_later(entry, expires_at));
    }

    /// Records a subject cut-off at once: see [`RevocationStore::revoke_subject`].
    pub fn revoke_subject_now(&self, sub: &str, issued_before: u64, keep_until: u64) {
        self.purge_if_due();
        let cutoff = SubjectCutoff {
            issued_before,
            keep_until,
        };
        self.inner.any_subject_cutoff.store(true, Ordering::Release);
        let added = match self.inner.subjects.entry(sub.to_owned()) {
            Entry::Occupied(mut existing) => {
                let existing = existing.get_mut();
                existing.issued_before = existing.issued_before.max(issued_before);
                existing.keep_until = existing.keep_until.max(keep_until);
                0
            }
            Entry::Vacant(vacant) => {
                vacant.insert(cutoff);
                1
            }
        };
        self.inner.sizes.changed(RevocationKind::Subject, added);
    }

    /// Records a session revocation at once: see [`RevocationStore::revoke_sessions`].
    pub fn revoke_session_now(&self, sid: &str, keep_until: u64) {
        self.purge_if_due();
        self.inner.any_session.store(true, Ordering::Release);
        let entry = self.inner.sessions.entry(Fingerprint::of(sid.as_bytes()));
        self.inner
            .sizes
            .changed(RevocationKind::Session, keep_later(entry, keep_until));
    }

    /// Whether a token is revoked, answered from memory.
    pub fn is_revoked(&self, token: &TokenId<'_>) -> bool {
        if self.inner.any_token.load(Ordering::Acquire)
            && self
                .inner
                .tokens
                .contains_key(&Fingerprint::of(token.jti.as_bytes()))
        {
            return true;
        }
        if let Some(sid) = token.sid {
            if self.inner.any_session.load(Ordering::Acquire)
                && self
                    .inner
                    .sessions
                    .contains_key(&Fingerprint::of(sid.as_bytes()))
            {
                return true;
            }
        }
        // Most deployments have few or no subject cut-offs; skip hashing the subject then.
        self.inner.any_subject_cutoff.load(Ordering::Acquire)
            && self
                .inner
                .subjects
                .get(&*token.subject_key())
                .is_some_and(|cutoff| token.iat < cutoff.issued_before)
    }
}

/// Records `until` in `entry`, keeping the later instant if it was there already; `1` when
/// the entry is new, for the size gauges.
fn keep_later(entry: Entry<'_, Fingerprint, u64>, until: u64) -> i64 {
    match entry {
        Entry::Occupied(mut existing) => {
            let existing = existing.get_mut();
            *existing = (*existing).max(until);
            0
        }
        Entry::Vacant(vacant) => {
            vacant.insert(until);
            1
        }
    }
}

/// A map's length as a gauge change.
fn count(len: usize) -> i64 {
    i64::try_from(len).unwrap_or(i64::MAX)
}

impl RevocationStore for MemoryRevocations {
    fn check(&self, token: &TokenId<'_>) -> RevocationCheck {
        if self.is_revoked(token) {
            RevocationCheck::Revoked
        } else {
            RevocationCheck::Valid
        }
    }

    fn revoke(&self, jti: &str, expires_at: u64) -> BoxFuture<'_, Result<(), RevocationError>> {
        self.revoke_now(jti, expires_at);
        Box::pin(std::future::ready(Ok(())))
    }

    fn revoke_subject(
        &self,
        sub: &str,
        issued_before: u64,
        keep_until: u64,
    ) -> BoxFuture<'_, Result<(), RevocationError>> {
        self.revoke_subject_now(sub, issued_before, keep_until);
        Box::pin(std::future::ready(Ok(())))
    }

    fn revoke_sessions(
        &self,
        sessions: &[&str],
        keep_until: u64,
    ) -> BoxFuture<'_, Result<(), RevocationError>> {
        for sid in sessions {
            self.revoke_session_now(sid, keep_until);
        }
        Box::pin(std::future::ready(Ok(())))
    }

    fn grace(&self) -> Option<Duration> {
        Some(Duration::from_secs(self.inner.grace))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    fn token<'a>(jti: &'a str, sub: &'a str, iat: u64) -> TokenId<'a> {
        TokenId {
            jti,
            sub,
            issuer: None,
            sid: None,
            iat,
            exp: iat + 900,
        }
    }

    #[test]
    fn revoked_jti_is_revoked_and_others_are_not() {
        let store = MemoryRevocations::new();
        // Asked first while nothing is revoked: the answer must not stick.
        assert!(!store.is_revoked(&token("a", "alice", 1)));
        store.revoke_now("a", u64::MAX);
        assert!(store.is_revoked(&token("a", "alice", 1)));
        assert!(!store.is_revoked(&token("b", "alice", 1)));
        // A clone shares the list, the first revocation included.
        assert!(store.clone().is_revoked(&token("a", "alice", 1)));
    }

    #[test]
    fn subject_cutoff_revokes_only_older_tokens_of_that_subject() {
        let store = MemoryRevocations::new();
        store.revoke_subject_now("alice", 1_000, u64::MAX);
        assert!(store.is_revoked(&token("x", "alice", 999)));
        assert!(!store.is_revoked(&token("y", "alice", 1_000)));
        assert!(!store.is_revoked(&token("z", "bob", 999)));
    }

    /// A subject is one issuer's name: a cut-off of the verifier's own `alice` leaves another
    /// issuer's `alice` signed in, and one of that issuer's `alice` leaves the others.
    #[test]
    fn subject_cutoffs_keep_issuers_apart() {
        let provider = |iss, jti| TokenId {
            issuer: Some(iss),
            ..token(jti, "alice", 999)
        };
        let store = MemoryRevocations::new();
        store.revoke_subject_now("alice", 1_000, u64::MAX);
        assert!(store.is_revoked(&token("own", "alice", 999)));
        assert!(!store.is_revoked(&provider("https://idp.example", "theirs")));

        let store = Arc::new(MemoryRevocations::new());
        let shared: &dyn RevocationStore = &store;
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(shared.revoke_issuer_subject("https://idp.example", "alice", 1_000, u64::MAX))
            .unwrap();
        assert!(store.is_revoked(&provider("https://idp.example", "theirs")));
        assert!(!store.is_revoked(&token("own", "alice", 999)));
        assert!(!store.is_revoked(&provider("https://other.example", "another")));
        // The issuer's length keeps `https://idp.example` + `/alice` from being another
        // issuer's `alice`.
        assert!(!store.is_revoked(&TokenId {
            sub: "/alice",
            ..provider("https://idp.exampl", "short")
        }));
    }

    #[test]
    fn entries_stay_through_grace_then_leave_on_the_next_write() {
        let clock = ManualClock::new(1_000);
        let store = MemoryRevocations::new().with_clock(clock.clone());
        store.revoke_now("old", 1_010);
        store.revoke_subject_now("alice", 1_000, 1_010);
        clock.advance(10 + 300);
        store.purge_expired();
        assert_eq!(store.len(), 1, "still within grace");
        assert!(
            store.is_revoked(&token("x", "alice", 999)),
            "the cut-off is kept through grace too"
        );
        clock.advance(60);
        store.revoke_now("new", 5_000);
        assert_eq!(store.len(), 1, "the write swept the expired entry");
        assert!(store.is_revoked(&token("new", "bob", 1)));
        assert!(!store.is_revoked(&token("old", "bob", 1)));
        assert!(
            !store.is_revoked(&token("x", "alice", 999)),
            "the cut-off left too"
        );
    }

    #[test]
    fn a_revoked_session_revokes_every_token_carrying_its_sid_until_forgotten() {
        let clock = ManualClock::new(1_000);
        let store = MemoryRevocations::new().with_clock(clock.clone());
        store.revoke_session_now("s1", 1_900);
        let in_session = |jti, sid, iat| TokenId {
            sid: Some(sid),
            ..token(jti, "alice", iat)
        };
        assert!(store.is_revoked(&in_session("before", "s1", 999)));
        assert!(store.is_revoked(&in_session("after", "s1", u64::MAX - 900)));
        assert!(!store.is_revoked(&in_session("other", "s2", 999)));
        assert!(!store.is_revoked(&token("none", "alice", 999)));
        // Rebuilding on another clock keeps it; past keep_until and grace it leaves.
        let store = store.with_grace(Duration::from_secs(10));
        assert!(store.is_revoked(&in_session("x", "s1", 1)));
        clock.set(1_911);
        store.purge_expired();
        assert!(!store.is_revoked(&in_session("x", "s1", 1)));
    }

    #[test]
    fn a_shared_store_revokes_sessions_rather_than_refusing() {
        let store = Arc::new(MemoryRevocations::new());
        let shared: &dyn RevocationStore = &store;
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(shared.revoke_sessions(&["s1"], u64::MAX))
            .expect("an Arc forwards to the store it shares");
        let in_session = TokenId {
            sid: Some("s1"),
            ..token("j", "alice", 1)
        };
        assert!(store.is_revoked(&in_session));
    }

    #[test]
    fn changing_clock_or_grace_keeps_what_was_revoked() {
        let store = MemoryRevocations::new();
        store.revoke_now("a", u64::MAX);
        store.revoke_subject_now("alice", 1_000, u64::MAX);
        let store = store
            .with_clock(ManualClock::new(500))
            .with_grace(Duration::from_secs(600));
        assert!(store.is_revoked(&token("a", "bob", 1)));
        assert!(store.is_revoked(&token("x", "alice", 999)));
        assert!(!store.is_revoked(&token("y", "alice", 1_000)));
        assert_eq!(store.grace(), Some(Duration::from_secs(600)));
    }

    #[test]
    fn revoking_twice_keeps_the_later_expiry() {
        let clock = ManualClock::new(0);
        let store = MemoryRevocations::new().with_clock(clock.clone());
        store.revoke_now("a", 1_000);
        store.revoke_now("a", 10);
        clock.set(500);
        store.purge_expired();
        assert!(store.is_revoked(&token("a", "s", 0)));
    }

    #[test]
    fn every_kind_of_entry_is_kept_to_the_last_second_of_its_grace() {
        // A token still accepted within the gate's leeway must still be known as revoked: the
        // grace period is inclusive, for jti entries, subject cut-offs and sessions alike.
        let clock = ManualClock::new(1_000);
        let store = MemoryRevocations::new().with_clock(clock.clone());
        store.revoke_now("j", 1_010);
        store.revoke_subject_now("alice", 1_000, 1_010);
        store.revoke_session_now("s1", 1_010);
        let in_session = TokenId {
            sid: Some("s1"),
            ..token("other", "bob", 1)
        };
        clock.set(1_010 + 300);
        store.purge_expired();
        assert!(store.is_revoked(&token("j", "bob", 1)), "jti");
        assert!(store.is_revoked(&token("x", "alice", 999)), "subject");
        assert!(store.is_revoked(&in_session), "session");
        clock.set(1_010 + 300 + 1);
        store.purge_expired();
        assert!(!store.is_revoked(&token("j", "bob", 1)), "jti");
        assert!(!store.is_revoked(&token("x", "alice", 999)), "subject");
        assert!(!store.is_revoked(&in_session), "session");
    }

    #[test]
    fn len_counts_each_revoked_token_once_and_only_tokens() {
        let store = MemoryRevocations::new();
        assert_eq!((store.len(), store.is_empty()), (0, true));
        store.revoke_subject_now("alice", 1_000, u64::MAX);
        store.revoke_session_now("s1", u64::MAX);
        assert_eq!((store.len(), store.is_empty()), (0, true));
        store.revoke_now("a", u64::MAX);
        assert_eq!((store.len(), store.is_empty()), (1, false));
        store.revoke_now("b", u64::MAX);
        store.revoke_now("a", u64::MAX);
        assert_eq!((store.len(), store.is_empty()), (2, false));
    }

    #[test]
    fn debug_shows_how_many_entries_and_never_what_was_revoked() {
        let store = MemoryRevocations::new();
        store.revoke_now("secret-jti", u64::MAX);
        store.revoke_subject_now("alice", 1_000, u64::MAX);
        store.revoke_session_now("secret-sid", u64::MAX);
        store.revoke_session_now("other-sid", u64::MAX);
        assert_eq!(
            format!("{store:?}"),
            "MemoryRevocations { tokens: 1, subjects: 1, sessions: 2 }"
        );
    }

    /// With feature `metrics`, the entry gauges follow writes, repeats, purges and rebuilds.
    #[cfg(feature = "metrics")]
    #[test]
    fn the_entry_gauges_count_what_the_list_holds() {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let exposition = recorder.handle();
        let _recording = metrics::set_default_local_recorder(&recorder);
        let gauges = || {
            let text = exposition.render();
            ["token", "subject", "session"].map(|kind| {
                let series = format!("jwt_gate_revocation_entries{{kind=\"{kind}\"}} ");
                text.lines()
                    .find_map(|line| line.strip_prefix(series.as_str()))
                    .unwrap_or_else(|| panic!("no {series} in\n{text}"))
                    .parse::<f64>()
                    .unwrap()
            })
        };
        let clock = ManualClock::new(1_000);
        let store = MemoryRevocations::new().with_clock(clock.clone());
        for jti in ["a", "b", "a"] {
            store.revoke_now(jti, 1_100);
        }
        store.revoke_now("late", 5_000);
        store.revoke_subject_now("alice", 1_000, 1_100);
        store.revoke_subject_now("alice", 1_050, 1_100);
        store.revoke_session_now("s1", 1_100);
        store.revoke_session_now("s1", 1_100);
        assert_eq!(gauges(), [3.0, 1.0, 1.0]);

        let store = store.with_grace(Duration::from_secs(10));
        assert_eq!(gauges(), [3.0, 1.0, 1.0], "a rebuild counts what it copied");

        clock.set(1_111);
        store.purge_expired();
        assert_eq!(gauges(), [1.0, 0.0, 0.0]);
        assert_eq!(store.len(), 1);
    }

    #[test]
    fn writes_sweep_once_per_interval_and_keep_sweeping() {
        // Each write sweeps at most once a minute, so a write stays O(1) under a flood of
        // revocations, and keeps sweeping, so memory stays bounded by the live tokens.
        let clock = ManualClock::new(1_000);
        let store = MemoryRevocations::new().with_clock(clock.clone());
        store.revoke_now("a", 1_000); // kept until 1_300
        store.revoke_now("b", 1_050); // kept until 1_350
        clock.set(1_301); // the first sweep was due at 1_060
        store.revoke_now("c", 5_000);
        assert_eq!(store.len(), 2, "a swept; the next sweep is due at 1_361");
        clock.set(1_351);
        store.revoke_now("d", 5_000);
        assert_eq!(store.len(), 3, "b expired, but no sweep before 1_361");
        clock.set(1_361);
        store.revoke_now("e", 5_000);
        assert_eq!(store.len(), 3, "b swept by the second sweep");
    }
}
