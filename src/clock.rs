//! Where "now" comes from.
//!
//! Every time check in the crate (token expiry, revocation expiry, purges) reads
//! a [`Clock`], so tests and simulations can move time forward without sleeping.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// A source of the current time, in whole seconds since the Unix epoch (a JWT `NumericDate`).
///
/// ```
/// use jwt_gate::clock::{Clock, SystemClock};
///
/// assert!(SystemClock.now() > 1_700_000_000);
/// ```
pub trait Clock: Send + Sync + 'static {
    /// Seconds since the Unix epoch.
    fn now(&self) -> u64;
}

/// The operating system's wall clock: the default everywhere.
///
/// On Linux it reads the kernel's coarse wall clock (`CLOCK_REALTIME_COARSE`), which is
/// behind the precise one by at most one scheduler tick (a few milliseconds) and costs a few
/// nanoseconds instead of tens: every cache hit reads the clock, and whole seconds are all a
/// token's times have. Elsewhere, and if the kernel refuses the coarse clock, it reads
/// [`SystemTime`].
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> u64 {
        #[cfg(any(target_os = "linux", target_os = "android"))]
        {
            use rustix::time::{clock_gettime_dynamic, ClockId, DynamicClockId};
            if let Ok(now) = clock_gettime_dynamic(DynamicClockId::Known(ClockId::RealtimeCoarse)) {
                // Before 1970: as below.
                return u64::try_from(now.tv_sec).unwrap_or(0);
            }
        }
        // A clock before 1970 is a broken machine; treating it as the epoch makes
        // every token look expired, which fails closed.
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_secs())
    }
}

/// A clock that only moves when told to: for tests and simulations.
///
/// Clones share the same time, so a test can keep one handle and give another to the gate.
///
/// ```
/// use jwt_gate::clock::{Clock, ManualClock};
///
/// let clock = ManualClock::new(1_000);
/// let handle = clock.clone();
/// clock.advance(60);
/// assert_eq!(handle.now(), 1_060);
/// ```
#[derive(Debug, Clone, Default)]
pub struct ManualClock {
    now: Arc<AtomicU64>,
}

impl ManualClock {
    /// A clock standing at `now` seconds since the epoch.
    pub fn new(now: u64) -> Self {
        Self {
            now: Arc::new(AtomicU64::new(now)),
        }
    }

    /// A clock standing at the current wall-clock time.
    pub fn starting_now() -> Self {
        Self::new(SystemClock.now())
    }

    /// Moves the clock forward by `seconds`.
    pub fn advance(&self, seconds: u64) {
        self.now.fetch_add(seconds, Ordering::SeqCst);
    }

    /// Sets the clock to `now` seconds since the epoch.
    pub fn set(&self, now: u64) {
        self.now.store(now, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> u64 {
        self.now.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn precise() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("after 1970")
            .as_secs()
    }

    #[test]
    fn the_system_clock_is_the_wall_clock_to_the_second() {
        // The coarse reading lags the precise one by a tick at most, so it may sit one second
        // behind across a second's boundary, never ahead and never further (a monotonic or a
        // millisecond clock would be far off).
        for _ in 0..1_000 {
            let before = precise();
            let now = SystemClock.now();
            let after = precise();
            assert!(
                before.saturating_sub(1) <= now && now <= after,
                "{before} {now} {after}"
            );
        }
    }
}
