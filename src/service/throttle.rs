//! Slowing down password guessing and mass registration: attempts are counted per
//! (username, address), per username and per address, and past a few free ones each further
//! attempt must wait longer. Counts live in this process, or in Redis for a fleet.

#[cfg(feature = "redis")]
mod redis;

use std::net::IpAddr;
use std::num::NonZeroUsize;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use http::request::Parts;
use lru::LruCache;

#[cfg(feature = "redis")]
pub use redis::{RedisThrottle, RedisThrottleBuilder};

use crate::fingerprint::{BuildFingerprintHasher, Fingerprint};
use crate::ClientAddr;

/// How failed logins are throttled. Plain data.
///
/// Attempts are counted under three keys: the pair of username and client address (the
/// main limit), the username from anywhere (a higher ceiling against guessing spread over
/// many addresses), and the address whatever the username (against one client spraying
/// names). Every attempt counts up front, so a burst of parallel guesses cannot all slip
/// through before the first one fails. Once a count exceeds its free allowance, the next
/// attempt on that key must wait `base_delay`, then twice that, and so on up to `max_delay`;
/// waiting callers get `429` with `Retry-After`. Counts are forgotten `forget_after` the last
/// attempt.
///
/// So a guesser at another address cannot lock a user out: their failures block their own
/// pair, and the username's own ceiling is far above what one address can spend within
/// `forget_after`. A successful login clears its pair and gives the username and the address
/// their attempt back (not more, so an attacker cannot reset a count with an account of their
/// own). An attempt answered `503` (hashing saturated, a store down) is not counted.
///
/// Memory is bounded: each table keeps at most `capacity` entries (a 128-bit keyed hash and
/// its counters, about 100 bytes with the bookkeeping; usernames themselves are not kept).
/// A full table forgets its least recently used entry that counts nothing past its free
/// allowance to make room (passing over up to 16 that do), so a flood of new names, or of
/// fresh IPv6 /64s, cannot push out a key being throttled and give its guesser a fresh
/// allowance; only when every entry looked at is throttled does the oldest go.
///
/// IPv6 clients are counted per /64, the block one subscriber typically gets. Without a
/// client address, the pair is the username alone.
///
/// | field | default |
/// | --- | --- |
/// | `free_failures_per_username_and_address` | 5 |
/// | `free_failures_per_username` | 100 |
/// | `free_failures_per_address` | 20 |
/// | `base_delay` | 1 s |
/// | `max_delay` | 15 min |
/// | `forget_after` | 15 min |
/// | `capacity` | 65 536 entries per table |
///
/// ```
/// use std::time::Duration;
/// use jwt_gate::service::LoginThrottle;
///
/// let strict = LoginThrottle { free_failures_per_username_and_address: 3, ..LoginThrottle::default() };
/// assert_eq!(strict.base_delay, Duration::from_secs(1));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginThrottle {
    /// Failed attempts on one username from one address before delays begin.
    pub free_failures_per_username_and_address: u32,
    /// Failed attempts on one username from all addresses together before delays begin.
    pub free_failures_per_username: u32,
    /// Failed attempts from one address, on any usernames, before delays begin.
    pub free_failures_per_address: u32,
    /// The first delay; each further failure doubles it.
    pub base_delay: Duration,
    /// The longest delay.
    pub max_delay: Duration,
    /// How long after its last attempt a count is forgotten.
    pub forget_after: Duration,
    /// Entries per table (pairs, usernames, addresses).
    pub capacity: usize,
}

impl Default for LoginThrottle {
    fn default() -> Self {
        Self {
            free_failures_per_username_and_address: 5,
            free_failures_per_username: 100,
            free_failures_per_address: 20,
            base_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(15 * 60),
            forget_after: Duration::from_secs(15 * 60),
            capacity: 65_536,
        }
    }
}

/// How registrations are throttled per client address. Plain data.
///
/// Every registration that passes validation counts against its client address, whatever
/// its outcome (a `409` tells whether a name is taken, so probing names is throttled too);
/// past `free_per_address` within `forget_after`, the next must wait `base_delay`, then
/// twice that, up to `max_delay`, answered `429` with `Retry-After`. IPv6 clients are counted
/// per /64. Without a client address, registrations are not throttled. At most `capacity`
/// addresses are remembered; the least recently seen one makes room.
///
/// | field | default |
/// | --- | --- |
/// | `free_per_address` | 10 |
/// | `base_delay` | 1 s |
/// | `max_delay` | 15 min |
/// | `forget_after` | 15 min |
/// | `capacity` | 65 536 addresses |
///
/// ```
/// use jwt_gate::service::RegistrationThrottle;
///
/// let lenient = RegistrationThrottle { free_per_address: 50, ..RegistrationThrottle::default() };
/// assert_eq!(lenient.capacity, 65_536);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistrationThrottle {
    /// Registrations from one address before delays begin.
    pub free_per_address: u32,
    /// The first delay; each further registration doubles it.
    pub base_delay: Duration,
    /// The longest delay.
    pub max_delay: Duration,
    /// How long after its last registration an address's count is forgotten.
    pub forget_after: Duration,
    /// Addresses remembered.
    pub capacity: usize,
}

impl Default for RegistrationThrottle {
    fn default() -> Self {
        Self {
            free_per_address: 10,
            base_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(15 * 60),
            forget_after: Duration::from_secs(15 * 60),
            capacity: 65_536,
        }
    }
}

/// What one count allows, in whole seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limit {
    pub(crate) free: u32,
    pub(crate) base_delay: u64,
    pub(crate) max_delay: u64,
    pub(crate) forget_after: u64,
}

impl Limit {
    fn new(free: u32, base_delay: Duration, max_delay: Duration, forget_after: Duration) -> Self {
        Self {
            free,
            base_delay: base_delay.as_secs().max(1),
            max_delay: max_delay.as_secs().max(1),
            forget_after: forget_after.as_secs().max(1),
        }
    }

    /// How long a key with `failures` counted must wait, if at all.
    fn delay(&self, failures: u32) -> Option<u64> {
        let over = failures.checked_sub(self.free)?.checked_sub(1)?;
        Some(
            self.base_delay
                .saturating_mul(1u64 << over.min(32))
                .min(self.max_delay),
        )
    }
}

/// The counts kept, one table each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A username from one address.
    Pair = 0,
    /// A username from anywhere.
    Username = 1,
    /// An address, logins on any username.
    Address = 2,
    /// An address, registrations.
    Registration = 3,
    /// An address, revocations of tokens that were not found: kept apart from logins, so a
    /// client revoking its expired tokens never locks its address out of logging in.
    Revocation = 4,
}

impl Kind {
    /// The name in Redis keys.
    #[cfg(feature = "redis")]
    fn name(self) -> &'static str {
        match self {
            Self::Pair => "pair",
            Self::Username => "user",
            Self::Address => "addr",
            Self::Registration => "reg",
            Self::Revocation => "revoke",
        }
    }
}

/// What a settled attempt does to one of its counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Settle {
    /// Forget the key altogether.
    Forget,
    /// Take the attempt off the count.
    GiveBack,
}

/// One counted key: which table, and the bytes that name it there.
#[derive(Debug, Clone)]
pub(crate) struct Counted {
    pub(crate) kind: Kind,
    pub(crate) key: Vec<u8>,
}

/// An admitted attempt: the keys it was counted under, to settle it later.
#[derive(Debug, Clone)]
pub(crate) struct Attempt {
    counted: Vec<Counted>,
}

/// Why an attempt was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Too many attempts: wait this many seconds.
    Wait(u64),
    /// The shared counts could not be reached, and the policy is to refuse then.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    Unavailable,
}

#[derive(Debug, Clone, Copy, Default)]
struct Entry {
    failures: u32,
    last_attempt: u64,
    blocked_until: u64,
}

impl Entry {
    fn wait(&self, now: u64) -> u64 {
        self.blocked_until.saturating_sub(now)
    }

    fn count(&mut self, limit: &Limit, now: u64) {
        if now.saturating_sub(self.last_attempt) >= limit.forget_after {
            self.failures = 0;
        }
        self.failures = self.failures.saturating_add(1);
        self.last_attempt = now;
        if let Some(delay) = limit.delay(self.failures) {
            self.blocked_until = now.saturating_add(delay);
        }
    }

    /// Undoes one count, and the block it may have set: with fewer failures than the free
    /// allowance nothing blocks, and otherwise the block is no longer than the smaller count
    /// warrants.
    fn give_back(&mut self, limit: &Limit) {
        self.failures = self.failures.saturating_sub(1);
        self.blocked_until = match limit.delay(self.failures) {
            None => 0,
            Some(delay) => self
                .blocked_until
                .min(self.last_attempt.saturating_add(delay)),
        };
    }
}

type Table = LruCache<Fingerprint, Entry, BuildFingerprintHasher>;

/// Entries a full table passes over, at most, before it evicts: bounded work a request.
const PASSED_OVER: usize = 16;

/// Before a full table takes a new key: its least recently used entries that still count
/// failures past their free allowance are moved to the front, so the entry evicted is one
/// that counts little. Else a flood of fresh keys (a /48 holds 65,536 IPv6 /64s, one key
/// each) would push out a username under attack and give its guesser a fresh allowance.
/// When every entry looked at is such a one, the least recently used goes all the same.
fn keep_counts_under_attack(table: &mut Table, limit: &Limit, now: u64) {
    if table.len() < table.cap().get() {
        return;
    }
    for _ in 0..PASSED_OVER {
        let Some((&key, entry)) = table.peek_lru() else {
            return;
        };
        let counting = limit.delay(entry.failures).is_some()
            && now.saturating_sub(entry.last_attempt) < limit.forget_after;
        if !counting {
            return;
        }
        table.promote(&key);
    }
}

/// Counts kept in this process: one bounded LRU table per [`Kind`].
pub(crate) struct LocalCounts {
    tables: [Mutex<Table>; 5],
}

impl LocalCounts {
    fn new(login: &LoginThrottle, registration: &RegistrationThrottle) -> Self {
        let table = |capacity: usize| {
            let capacity = NonZeroUsize::new(capacity)
                .expect("a throttle table needs room for at least one entry (capacity 0)");
            // Grown as keys arrive rather than allocated whole up front: most services never
            // see anywhere near `capacity` keys.
            let mut table = LruCache::unbounded_with_hasher(BuildFingerprintHasher);
            table.resize(capacity);
            Mutex::new(table)
        };
        Self {
            tables: [
                table(login.capacity),
                table(login.capacity),
                table(login.capacity),
                table(registration.capacity),
                table(login.capacity),
            ],
        }
    }

    fn lock(&self, kind: Kind) -> MutexGuard<'_, Table> {
        self.tables[kind as usize]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Admits an attempt counted under every key, or says how long to wait. `counted` is in
    /// [`Kind`] order, so tables are always locked in one order.
    pub(crate) fn begin(&self, counted: &[(Kind, Limit, &[u8])], now: u64) -> Result<(), u64> {
        let mut tables: Vec<_> = counted
            .iter()
            .map(|&(kind, limit, key)| (self.lock(kind), limit, Fingerprint::of(key)))
            .collect();
        // Looking promotes a key even when it is refused: an entry being throttled is in use.
        let wait = tables
            .iter_mut()
            .map(|(table, _, key)| table.get(key).map_or(0, |entry| entry.wait(now)))
            .max()
            .unwrap_or(0);
        if wait > 0 {
            return Err(wait);
        }
        for (table, limit, key) in &mut tables {
            if !table.contains(key) {
                keep_counts_under_attack(table, limit, now);
            }
            table
                .get_or_insert_mut(*key, Entry::default)
                .count(limit, now);
        }
        Ok(())
    }

    pub(crate) fn settle(&self, counted: &[(Kind, Limit, &[u8], Settle)]) {
        for &(kind, limit, key, settle) in counted {
            let mut table = self.lock(kind);
            let key = Fingerprint::of(key);
            match settle {
                Settle::Forget => {
                    table.pop(&key);
                }
                Settle::GiveBack => {
                    if let Some(entry) = table.peek_mut(&key) {
                        entry.give_back(&limit);
                    }
                }
            }
        }
    }
}

/// Where the counts live: in this process, or shared by a fleet.
enum Counts {
    Local,
    #[cfg(feature = "redis")]
    Shared(RedisThrottle),
}

/// The throttle's state: the policies and the counts.
pub(crate) struct Throttle {
    limits: [Limit; 5],
    local: LocalCounts,
    counts: Counts,
}

impl Throttle {
    pub(crate) fn new(login: &LoginThrottle, registration: &RegistrationThrottle) -> Self {
        let login_limit =
            |free| Limit::new(free, login.base_delay, login.max_delay, login.forget_after);
        let limits = [
            login_limit(login.free_failures_per_username_and_address),
            login_limit(login.free_failures_per_username),
            login_limit(login.free_failures_per_address),
            Limit::new(
                registration.free_per_address,
                registration.base_delay,
                registration.max_delay,
                registration.forget_after,
            ),
            login_limit(login.free_failures_per_address),
        ];
        Self {
            local: LocalCounts::new(login, registration),
            limits,
            counts: Counts::Local,
        }
    }

    /// The same policies, with the counts kept in `shared` instead of this process.
    #[cfg(feature = "redis")]
    pub(crate) fn shared(mut self, shared: RedisThrottle) -> Self {
        self.counts = Counts::Shared(shared);
        self
    }

    /// Admits a login attempt on `username_key` from `address` at `now` and counts it.
    pub(crate) async fn begin_login(
        &self,
        username_key: &str,
        address: Option<IpAddr>,
        now: u64,
    ) -> Result<Attempt, Refusal> {
        let username = username_key.as_bytes().to_vec();
        let address = address.map(address_key);
        let mut pair = username.clone();
        if let Some(address) = &address {
            // 0xff never occurs in UTF-8, so no username and address can be read two ways.
            pair.push(0xff);
            pair.extend_from_slice(address);
        }
        let mut counted = vec![
            Counted {
                kind: Kind::Pair,
                key: pair,
            },
            Counted {
                kind: Kind::Username,
                key: username,
            },
        ];
        counted.extend(address.map(|key| Counted {
            kind: Kind::Address,
            key,
        }));
        self.begin(Attempt { counted }, now).await
    }

    /// Admits a registration from `address` at `now` and counts it; without an address,
    /// there is nothing to count by.
    pub(crate) async fn begin_registration(
        &self,
        address: Option<IpAddr>,
        now: u64,
    ) -> Result<Attempt, Refusal> {
        self.begin_per_address(Kind::Registration, address, now)
            .await
    }

    /// Admits a revocation request from `address` at `now` and counts it, with the login
    /// policy's allowance per address but a count of its own, so that trying tokens at the
    /// revocation route is throttled as guessing passwords is, and revoking tokens never
    /// holds up logins; without an address, there is nothing to count by.
    pub(crate) async fn begin_revocation(
        &self,
        address: Option<IpAddr>,
        now: u64,
    ) -> Result<Attempt, Refusal> {
        self.begin_per_address(Kind::Revocation, address, now).await
    }

    async fn begin_per_address(
        &self,
        kind: Kind,
        address: Option<IpAddr>,
        now: u64,
    ) -> Result<Attempt, Refusal> {
        let counted = address
            .map(|address| Counted {
                kind,
                key: address_key(address),
            })
            .into_iter()
            .collect();
        self.begin(Attempt { counted }, now).await
    }

    /// The revoked token was a real one: the attempt does not count.
    pub(crate) async fn revocation_found(&self, attempt: Attempt) {
        self.settle(attempt, |_| Settle::GiveBack).await;
    }

    async fn begin(&self, attempt: Attempt, now: u64) -> Result<Attempt, Refusal> {
        if attempt.counted.is_empty() {
            return Ok(attempt);
        }
        let counted: Vec<_> = attempt
            .counted
            .iter()
            .map(|c| (c.kind, self.limits[c.kind as usize], c.key.as_slice()))
            .collect();
        match &self.counts {
            Counts::Local => self.local.begin(&counted, now).map_err(Refusal::Wait)?,
            #[cfg(feature = "redis")]
            Counts::Shared(shared) => shared.begin(&self.local, &counted, now).await?,
        }
        Ok(attempt)
    }

    /// The login proved the password: its pair starts afresh, and the username and address
    /// get their attempt back.
    pub(crate) async fn login_succeeded(&self, attempt: Attempt) {
        self.settle(attempt, |kind| match kind {
            Kind::Pair => Settle::Forget,
            _ => Settle::GiveBack,
        })
        .await;
    }

    /// The attempt was never answered on its merits (`503`): it does not count.
    pub(crate) async fn not_answered(&self, attempt: Attempt) {
        self.settle(attempt, |_| Settle::GiveBack).await;
    }

    async fn settle(&self, attempt: Attempt, how: impl Fn(Kind) -> Settle) {
        let counted: Vec<_> = attempt
            .counted
            .iter()
            .map(|c| {
                (
                    c.kind,
                    self.limits[c.kind as usize],
                    c.key.as_slice(),
                    how(c.kind),
                )
            })
            .collect();
        match &self.counts {
            Counts::Local => self.local.settle(&counted),
            #[cfg(feature = "redis")]
            Counts::Shared(shared) => shared.settle(&self.local, &counted).await,
        }
    }
}

/// IPv4 addresses are counted one by one, IPv6 per /64.
fn address_key(address: IpAddr) -> Vec<u8> {
    match address {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.octets().to_vec(),
            None => v6.octets()[..8].to_vec(),
        },
    }
}

/// The client's address: the connection's peer, or, when the peer is one of
/// `trusted_proxies`, the right-most `X-Forwarded-For` entry that is not a trusted proxy.
/// Headers from anyone else are ignored: a client can write whatever it likes there.
pub(crate) fn client_address(parts: &Parts, trusted_proxies: &[IpAddr]) -> Option<IpAddr> {
    // A dual-stack listener sees an IPv4 proxy as `::ffff:10.0.0.5`.
    let peer = peer_address(parts)?.to_canonical();
    if !trusted_proxies.contains(&peer) {
        return Some(peer);
    }
    let mut forwarded = parts
        .headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .collect::<Vec<_>>();
    forwarded.reverse();
    for hop in forwarded {
        match hop.parse::<IpAddr>().map(|address| address.to_canonical()) {
            Ok(address) if trusted_proxies.contains(&address) => {}
            Ok(address) => return Some(address),
            // An unreadable hop ends what can be trusted; the proxy itself is the best we know.
            Err(_) => return Some(peer),
        }
    }
    Some(peer)
}

fn peer_address(parts: &Parts) -> Option<IpAddr> {
    let ClientAddr(address) = parts.extensions.get::<ClientAddr>()?;
    Some(address.ip())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    fn policy() -> LoginThrottle {
        LoginThrottle {
            free_failures_per_username_and_address: 2,
            free_failures_per_username: 4,
            free_failures_per_address: 100,
            capacity: 4,
            ..LoginThrottle::default()
        }
    }

    fn throttle() -> Throttle {
        Throttle::new(&policy(), &RegistrationThrottle::default())
    }

    /// Whether a login on `name` from `from` at `now` is admitted (and so counted).
    async fn admits(throttle: &Throttle, name: &str, from: Option<&str>, now: u64) -> bool {
        let from = from.map(|from| from.parse().unwrap());
        throttle.begin_login(name, from, now).await.is_ok()
    }

    #[tokio::test]
    async fn delays_grow_after_the_free_failures_and_are_forgotten() {
        let throttle = throttle();
        let here = Some("192.0.2.1");
        for _ in 0..3 {
            // The third is counted and sets 1 s.
            assert!(admits(&throttle, "alice", here, 1000).await);
        }
        let from = here.and_then(|here| here.parse().ok());
        let refused = throttle.begin_login("alice", from, 1000).await;
        assert_eq!(refused.unwrap_err(), Refusal::Wait(1));
        assert!(admits(&throttle, "alice", here, 1001).await); // sets 2 s
        let refused = throttle.begin_login("alice", from, 1001).await;
        assert_eq!(refused.unwrap_err(), Refusal::Wait(2));
        assert!(admits(&throttle, "bob", here, 1001).await);
        assert!(admits(&throttle, "alice", here, 1001 + 15 * 60).await);
    }

    #[tokio::test]
    async fn other_addresses_keep_their_own_pair_up_to_the_usernames_ceiling() {
        let throttle = throttle();
        for _ in 0..3 {
            assert!(admits(&throttle, "alice", Some("192.0.2.1"), 1000).await);
        }
        assert!(!admits(&throttle, "alice", Some("192.0.2.1"), 1000).await);
        // The username has 3 of its 4 free failures spent: the owner still gets in...
        assert!(admits(&throttle, "alice", Some("198.51.100.7"), 1000).await);
        // ...and the fifth failure from anywhere crosses the ceiling.
        assert!(admits(&throttle, "alice", Some("203.0.113.1"), 1000).await);
        assert!(!admits(&throttle, "alice", Some("203.0.113.2"), 1000).await);
    }

    #[tokio::test]
    async fn success_clears_the_pair_and_unanswered_attempts_do_not_count() {
        let throttle = throttle();
        let here = "192.0.2.1".parse().ok();
        for _ in 0..2 {
            throttle.begin_login("alice", here, 1000).await.unwrap();
        }
        let attempt = throttle.begin_login("alice", here, 1000).await.unwrap();
        throttle.login_succeeded(attempt).await;
        assert!(throttle.begin_login("alice", here, 1000).await.is_ok());
        for _ in 0..10 {
            let attempt = throttle.begin_login("carol", here, 1000).await.unwrap();
            throttle.not_answered(attempt).await;
        }
        assert!(throttle.begin_login("carol", here, 1000).await.is_ok());
    }

    #[tokio::test]
    async fn a_full_table_forgets_what_counts_little_and_keeps_a_name_under_attack() {
        let throttle = throttle();
        for _ in 0..3 {
            assert!(admits(&throttle, "a", None, 1000).await);
        }
        assert!(!admits(&throttle, "a", None, 1000).await);
        // A flood of fresh names, each failing once: they evict each other, not `a`.
        for name in ["b", "c", "d", "e", "f", "g", "h"] {
            assert!(admits(&throttle, name, None, 1000).await);
        }
        for table in &throttle.local.tables[..2] {
            assert_eq!(table.lock().unwrap().len(), 4, "the tables stay bounded");
        }
        assert!(
            admits(&throttle, "z", None, 1000).await,
            "a new name has a count of its own"
        );
        assert!(
            !admits(&throttle, "a", None, 1000).await,
            "the name under attack is still throttled"
        );
        assert!(
            admits(&throttle, "b", None, 1000).await,
            "the oldest of the flood was forgotten"
        );
        // Once every entry is under attack, the least recently used goes all the same.
        for name in ["p", "q", "r", "s"] {
            for _ in 0..3 {
                admits(&throttle, name, None, 1000).await;
            }
        }
        assert!(admits(&throttle, "t", None, 1000).await);
        for table in &throttle.local.tables[..2] {
            assert_eq!(table.lock().unwrap().len(), 4, "the tables stay bounded");
        }
    }

    #[test]
    fn ipv6_is_counted_per_64() {
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(address_key(a), address_key(b));
        assert_ne!(address_key(a), address_key(c));
    }

    #[test]
    fn forwarded_for_is_read_only_from_trusted_proxies() {
        let proxy: SocketAddr = "10.0.0.1:4000".parse().unwrap();
        let (mut parts, ()) = http::Request::builder()
            .header("x-forwarded-for", "203.0.113.9, 198.51.100.2")
            .body(())
            .unwrap()
            .into_parts();
        parts.extensions.insert(ClientAddr(proxy));
        assert_eq!(client_address(&parts, &[]), Some(proxy.ip()));
        assert_eq!(
            client_address(&parts, &[proxy.ip()]),
            Some("198.51.100.2".parse().unwrap())
        );
    }
}
