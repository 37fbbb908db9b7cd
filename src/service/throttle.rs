//! Slowing down password guessing: failed logins are counted per username and per client
//! address, and past a few free failures each further attempt must wait longer.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use http::request::Parts;

use crate::fingerprint::{BuildFingerprintHasher, Fingerprint};
use crate::ClientAddr;

/// How failed logins are throttled. Plain data.
///
/// Every login attempt counts against its username and its client address up front (so a
/// burst of parallel guesses cannot all slip through before the first one fails); a successful
/// login clears the username's count and gives the address its attempt back. Once a count
/// exceeds its free allowance, the next attempt must wait `base_delay`, then twice that, and
/// so on up to `max_delay`; waiting callers get `429` with `Retry-After`. Counts are forgotten
/// `forget_after` the last attempt. (So a client firing more logins for one username at once
/// than its free allowance sees `429` for the excess, even if the password is right.)
///
/// Memory is bounded: each table keeps at most `capacity` entries (a 128-bit keyed hash and
/// 24 bytes of counters each; usernames themselves are not kept). When a table is full of
/// recent entries, new keys share one overflow entry: under such a flood, throttling gets
/// stricter, never looser.
///
/// IPv6 clients are counted per /64, the block one subscriber typically gets.
///
/// | field | default |
/// | --- | --- |
/// | `free_failures_per_username` | 5 |
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
/// let strict = LoginThrottle { free_failures_per_username: 3, ..LoginThrottle::default() };
/// assert_eq!(strict.base_delay, Duration::from_secs(1));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginThrottle {
    /// Failed attempts on one username before delays begin.
    pub free_failures_per_username: u32,
    /// Failed attempts from one address before delays begin.
    pub free_failures_per_address: u32,
    /// The first delay; each further failure doubles it.
    pub base_delay: Duration,
    /// The longest delay.
    pub max_delay: Duration,
    /// How long after its last attempt a count is forgotten.
    pub forget_after: Duration,
    /// Entries per table (usernames, addresses).
    pub capacity: usize,
}

impl Default for LoginThrottle {
    fn default() -> Self {
        Self {
            free_failures_per_username: 5,
            free_failures_per_address: 20,
            base_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(15 * 60),
            forget_after: Duration::from_secs(15 * 60),
            capacity: 65_536,
        }
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Entry {
    failures: u32,
    last_attempt: u64,
    blocked_until: u64,
}

struct Table {
    entries: HashMap<Fingerprint, Entry, BuildFingerprintHasher>,
    overflow: Entry,
    free_failures: u32,
    /// A full table is swept at most once a second, so a flood of new keys cannot make every
    /// attempt pay for a walk over the whole table.
    next_sweep: u64,
}

/// Which entries an admitted attempt was counted in, to settle it when it succeeds.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Attempt {
    username: Slot,
    address: Option<Slot>,
}

#[derive(Debug, Clone, Copy)]
enum Slot {
    Keyed(Fingerprint),
    Overflow,
}

/// The throttle's state: two bounded tables.
pub(crate) struct Throttle {
    policy: LoginThrottle,
    usernames: Mutex<Table>,
    addresses: Mutex<Table>,
}

impl Throttle {
    pub(crate) fn new(policy: LoginThrottle) -> Self {
        let table = |free_failures| {
            Mutex::new(Table {
                entries: HashMap::with_hasher(BuildFingerprintHasher),
                overflow: Entry::default(),
                free_failures,
                next_sweep: 0,
            })
        };
        Self {
            usernames: table(policy.free_failures_per_username),
            addresses: table(policy.free_failures_per_address),
            policy,
        }
    }

    /// Admits an attempt for `username_key` from `address` at `now` and counts it, or says
    /// how many seconds to wait.
    pub(crate) fn begin(
        &self,
        username_key: &str,
        address: Option<IpAddr>,
        now: u64,
    ) -> Result<Attempt, u64> {
        let mut usernames = self
            .usernames
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let mut addresses = self
            .addresses
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let username = usernames.slot(Fingerprint::of(username_key.as_bytes()), &self.policy, now);
        let address =
            address.map(|address| addresses.slot(address_fingerprint(address), &self.policy, now));
        let wait = usernames
            .wait(username, now)
            .max(address.map_or(0, |slot| addresses.wait(slot, now)));
        if wait > 0 {
            return Err(wait);
        }
        usernames.count(username, &self.policy, now);
        if let Some(slot) = address {
            addresses.count(slot, &self.policy, now);
        }
        Ok(Attempt { username, address })
    }

    /// The attempt proved the password: the username starts afresh, and the address gets
    /// its attempt back (not more, so an attacker cannot reset it with an account of their own).
    pub(crate) fn succeeded(&self, attempt: Attempt) {
        let mut usernames = self
            .usernames
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match attempt.username {
            Slot::Keyed(key) => {
                usernames.entries.remove(&key);
            }
            Slot::Overflow => {}
        }
        drop(usernames);
        if let Some(slot) = attempt.address {
            let mut addresses = self
                .addresses
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if let Some(entry) = addresses.entry(slot) {
                entry.failures = entry.failures.saturating_sub(1);
            }
        }
    }
}

impl Table {
    /// Where `key`'s count lives, making room (or falling back to the overflow) when new.
    fn slot(&mut self, key: Fingerprint, policy: &LoginThrottle, now: u64) -> Slot {
        if self.entries.contains_key(&key) {
            return Slot::Keyed(key);
        }
        if self.entries.len() >= policy.capacity && now >= self.next_sweep {
            self.next_sweep = now.saturating_add(1);
            let forget = policy.forget_after.as_secs();
            self.entries.retain(|_, entry| {
                entry.blocked_until > now || now.saturating_sub(entry.last_attempt) < forget
            });
        }
        if self.entries.len() >= policy.capacity {
            return Slot::Overflow;
        }
        self.entries.insert(key, Entry::default());
        Slot::Keyed(key)
    }

    fn entry(&mut self, slot: Slot) -> Option<&mut Entry> {
        match slot {
            Slot::Keyed(key) => self.entries.get_mut(&key),
            Slot::Overflow => Some(&mut self.overflow),
        }
    }

    fn wait(&mut self, slot: Slot, now: u64) -> u64 {
        self.entry(slot)
            .map_or(0, |entry| entry.blocked_until.saturating_sub(now))
    }

    fn count(&mut self, slot: Slot, policy: &LoginThrottle, now: u64) {
        let free = self.free_failures;
        let Some(entry) = self.entry(slot) else {
            return;
        };
        if now.saturating_sub(entry.last_attempt) >= policy.forget_after.as_secs() {
            entry.failures = 0;
        }
        entry.failures = entry.failures.saturating_add(1);
        entry.last_attempt = now;
        if entry.failures > free {
            let doublings = (entry.failures - free - 1).min(32);
            let delay = policy
                .base_delay
                .as_secs()
                .max(1)
                .saturating_mul(1u64 << doublings)
                .min(policy.max_delay.as_secs().max(1));
            entry.blocked_until = now.saturating_add(delay);
        }
    }
}

/// IPv4 addresses are counted one by one, IPv6 per /64.
fn address_fingerprint(address: IpAddr) -> Fingerprint {
    match address {
        IpAddr::V4(v4) => Fingerprint::of(&v4.octets()),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => Fingerprint::of(&v4.octets()),
            None => Fingerprint::of(&v6.octets()[..8]),
        },
    }
}

/// The client's address: the connection's peer, or, when the peer is one of
/// `trusted_proxies`, the right-most `X-Forwarded-For` entry that is not a trusted proxy.
/// Headers from anyone else are ignored: a client can write whatever it likes there.
pub(crate) fn client_address(parts: &Parts, trusted_proxies: &[IpAddr]) -> Option<IpAddr> {
    let peer = peer_address(parts)?;
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
        match hop.parse::<IpAddr>() {
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
            free_failures_per_username: 2,
            free_failures_per_address: 100,
            capacity: 4,
            ..LoginThrottle::default()
        }
    }

    #[test]
    fn delays_grow_after_the_free_failures_and_are_forgotten() {
        let throttle = Throttle::new(policy());
        assert!(throttle.begin("alice", None, 1000).is_ok());
        assert!(throttle.begin("alice", None, 1000).is_ok());
        assert!(throttle.begin("alice", None, 1000).is_ok()); // third: counted, sets 1 s
        assert_eq!(throttle.begin("alice", None, 1000).unwrap_err(), 1);
        assert!(throttle.begin("alice", None, 1001).is_ok()); // fourth: sets 2 s
        assert_eq!(throttle.begin("alice", None, 1001).unwrap_err(), 2);
        assert!(
            throttle.begin("bob", None, 1001).is_ok(),
            "other names are not affected"
        );
        assert!(throttle.begin("alice", None, 1001 + 15 * 60).is_ok());
    }

    #[test]
    fn success_clears_the_username() {
        let throttle = Throttle::new(policy());
        for _ in 0..2 {
            throttle.begin("alice", None, 1000).unwrap();
        }
        let attempt = throttle.begin("alice", None, 1000).unwrap();
        throttle.succeeded(attempt);
        assert!(throttle.begin("alice", None, 1000).is_ok());
    }

    #[test]
    fn a_full_table_sends_new_names_to_a_shared_overflow_entry() {
        let throttle = Throttle::new(policy());
        for name in ["a", "b", "c", "d"] {
            throttle.begin(name, None, 1000).unwrap();
        }
        for name in ["e", "f", "g"] {
            throttle.begin(name, None, 1000).unwrap();
        }
        assert!(
            throttle.begin("h", None, 1000).is_err(),
            "overflow entry is throttled"
        );
        assert_eq!(throttle.usernames.lock().unwrap().entries.len(), 4);
        assert!(
            throttle.begin("a", None, 1000).is_ok(),
            "known names keep their own count"
        );
    }

    #[test]
    fn a_full_table_makes_room_once_old_entries_are_forgotten() {
        let throttle = Throttle::new(policy());
        for name in ["a", "b", "c", "d"] {
            throttle.begin(name, None, 1000).unwrap();
        }
        let later = 1000 + 15 * 60;
        throttle.begin("e", None, later).unwrap();
        let usernames = throttle.usernames.lock().unwrap();
        assert_eq!(usernames.entries.len(), 1, "the stale four were swept");
        assert_eq!(usernames.overflow.failures, 0);
    }

    #[test]
    fn ipv6_is_counted_per_64() {
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(address_fingerprint(a), address_fingerprint(b));
        assert_ne!(address_fingerprint(a), address_fingerprint(c));
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
