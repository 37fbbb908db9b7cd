//! Keeping a gate's mirror current: the subscription, the re-reading after a reconnect, and
//! the backoff between attempts.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ::redis::aio::{ConnectionManager, PubSub};
use ::redis::{Client, Value};
use futures_util::StreamExt as _;

use super::wire::{KeySpace, Revocation, StoredKey};
use super::{ask, unavailable, AbortOnDrop};
use crate::clock::{Clock, SystemClock};
use crate::revocation::{MemoryRevocations, RevocationError};

/// How many keys one `SCAN` step asks for.
const SCAN_BATCH: usize = 1_000;

/// Everything the subscription task needs; it holds no reference to the store, so dropping
/// the last store ends it.
pub(super) struct Follower {
    pub(super) client: Client,
    pub(super) connection: ConnectionManager,
    pub(super) keys: KeySpace,
    pub(super) channel: String,
    pub(super) mirror: MemoryRevocations,
    pub(super) current: Arc<AtomicBool>,
    pub(super) grace: u64,
    pub(super) timeout: Duration,
    /// How long the subscription may stay silent before it is asked for a `PING`: a server
    /// that vanished without closing the connection is noticed within this plus `timeout`.
    pub(super) heartbeat: Duration,
    pub(super) backoff: Backoff,
}

impl Follower {
    /// Subscribes and loads the mirror, then follows the channel in a task of its own.
    /// Fails, without starting anything, if Redis cannot be reached now.
    pub(super) async fn start(self) -> Result<AbortOnDrop, RevocationError> {
        let subscription = self.subscribe_and_reload().await?;
        self.current.store(true, Ordering::Release);
        crate::metrics::mirror_current(true);
        // Made before the task is first polled: a runtime that shuts down before then drops
        // the task unpolled, and the mirror must not stay "current" either way.
        let frozen = NotCurrentWhenDropped(self.current.clone());
        let task = tokio::spawn(self.follow(subscription, frozen));
        Ok(AbortOnDrop(task.abort_handle()))
    }

    /// Ended any other way than by this loop (its runtime shut down, a panic under it), the
    /// mirror would be frozen yet still called current: `_frozen`, dropped with the task,
    /// makes checks fail closed then.
    async fn follow(mut self, mut subscription: PubSub, _frozen: NotCurrentWhenDropped) {
        loop {
            self.listen(subscription).await;
            self.current.store(false, Ordering::Release);
            crate::metrics::mirror_current(false);
            tracing::warn!(
                prefix = self.keys.prefix(),
                "revocation subscription lost; reconnecting"
            );
            subscription = self.reconnect().await;
            self.current.store(true, Ordering::Release);
            crate::metrics::mirror_current(true);
            tracing::info!(
                prefix = self.keys.prefix(),
                "revocation subscription restored and mirror re-synchronised"
            );
        }
    }

    /// Applies announcements until the connection is lost.
    async fn listen(&self, subscription: PubSub) {
        let (mut sink, mut messages) = subscription.split();
        loop {
            match tokio::time::timeout(self.heartbeat, messages.next()).await {
                Ok(Some(message)) => match std::str::from_utf8(message.get_payload_bytes())
                    .ok()
                    .and_then(Revocation::decode)
                {
                    Some(revocation) => revocation.apply_to(&self.mirror),
                    None => tracing::warn!("ignored a malformed revocation announcement"),
                },
                Ok(None) => return,
                Err(_silence) => {
                    let ping = tokio::time::timeout(self.timeout, sink.ping::<Value>()).await;
                    if !matches!(ping, Ok(Ok(_))) {
                        return;
                    }
                }
            }
        }
    }

    /// Tries until subscribed and re-synchronised, waiting longer after each failure.
    async fn reconnect(&mut self) -> PubSub {
        self.backoff.reset();
        loop {
            match self.subscribe_and_reload().await {
                Ok(subscription) => return subscription,
                Err(error) => {
                    let delay = self.backoff.next_delay();
                    tracing::debug!(%error, ?delay, "revocation subscription: retrying");
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    /// Subscribes first and reads every key second: an announcement made in between is then
    /// both read and received, never neither (applying one twice changes nothing).
    async fn subscribe_and_reload(&self) -> Result<PubSub, RevocationError> {
        let subscribe = async {
            let mut subscription = self.client.get_async_pubsub().await?;
            subscription.subscribe(&self.channel).await?;
            Ok::<_, ::redis::RedisError>(subscription)
        };
        let subscription = match tokio::time::timeout(self.timeout, subscribe).await {
            Ok(Ok(subscription)) => subscription,
            Ok(Err(error)) => return Err(unavailable(&error)),
            Err(_) => return Err(RevocationError::new("redis: subscribing timed out")),
        };
        self.reload().await?;
        Ok(subscription)
    }

    /// Adds every revocation stored under the prefix to the mirror.
    async fn reload(&self) -> Result<(), RevocationError> {
        let pattern = self.keys.scan_pattern();
        let mut cursor = 0_u64;
        loop {
            let (next, names): (u64, Vec<Vec<u8>>) =
                ask(&self.connection, self.timeout, |mut connection| {
                    let mut scan = ::redis::cmd("SCAN");
                    scan.arg(cursor)
                        .arg("MATCH")
                        .arg(&pattern)
                        .arg("COUNT")
                        .arg(SCAN_BATCH);
                    async move { scan.query_async(&mut connection).await }
                })
                .await?;
            self.load(&names).await?;
            if next == 0 {
                return Ok(());
            }
            cursor = next;
        }
    }

    /// Reads the values and remaining lifetimes of one batch of keys into the mirror.
    async fn load(&self, names: &[Vec<u8>]) -> Result<(), RevocationError> {
        if names.is_empty() {
            return Ok(());
        }
        // Values are read as bytes: a stray key under the prefix must not stop the reload.
        let (values, lifetimes): (Vec<Option<Vec<u8>>>, Vec<i64>) =
            ask(&self.connection, self.timeout, |mut connection| {
                let mut values = ::redis::cmd("MGET");
                values.arg(names);
                let mut lifetimes = ::redis::pipe();
                for name in names {
                    lifetimes.cmd("TTL").arg(name);
                }
                async move {
                    let values = values.query_async(&mut connection).await?;
                    let lifetimes = lifetimes.query_async(&mut connection).await?;
                    Ok((values, lifetimes))
                }
            })
            .await?;
        let now = SystemClock.now();
        for ((name, value), lifetime) in names.iter().zip(values).zip(lifetimes) {
            let Some(key) = std::str::from_utf8(name)
                .ok()
                .and_then(|name| self.keys.classify(name))
            else {
                continue;
            };
            // The mirror keeps an entry `grace` past the instant it is given; Redis was told
            // `instant + grace + 1`, so hand the mirror back (a second after) the instant,
            // which errs on the side of keeping it. A key without expiry
            // (written by hand) is kept for ever; a key already gone (-2) is skipped.
            let until = match lifetime {
                -1 => u64::MAX,
                seconds if seconds >= 0 => {
                    (now + seconds.unsigned_abs()).saturating_sub(self.grace)
                }
                _ => continue,
            };
            match key {
                StoredKey::Token { jti } => self.mirror.revoke_now(jti, until),
                StoredKey::Session { sid } => self.mirror.revoke_session_now(sid, until),
                StoredKey::Subject { sub } => {
                    let issued_before = value
                        .as_deref()
                        .and_then(|value| std::str::from_utf8(value).ok())
                        .and_then(|value| value.parse().ok());
                    // A cut-off this version cannot read (another version's, or one written
                    // by hand) cuts off every token of the subject until its key expires:
                    // skipped, a "log out everywhere" would be forgotten.
                    let issued_before = issued_before.unwrap_or_else(|| {
                        tracing::warn!(
                            prefix = self.keys.prefix(),
                            "an unreadable subject cut-off: every token of that subject is refused until it expires"
                        );
                        u64::MAX
                    });
                    self.mirror.revoke_subject_now(sub, issued_before, until);
                }
            }
        }
        Ok(())
    }
}

/// Marks the mirror not current when dropped: the following task is over.
struct NotCurrentWhenDropped(Arc<AtomicBool>);

impl Drop for NotCurrentWhenDropped {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
        crate::metrics::mirror_current(false);
    }
}

/// Bounded exponential backoff with jitter, so a fleet of gates does not reconnect in step.
#[derive(Debug, Clone)]
pub(super) struct Backoff {
    first: Duration,
    longest: Duration,
    next: Duration,
}

impl Backoff {
    pub(super) fn new(first: Duration, longest: Duration) -> Self {
        let longest = longest.max(first);
        Self {
            first,
            longest,
            next: first,
        }
    }

    fn reset(&mut self) {
        self.next = self.first;
    }

    /// Somewhere between half and all of the current step; the step then doubles, up to the
    /// longest.
    fn next_delay(&mut self) -> Duration {
        let step = self.next;
        self.next = (step * 2).min(self.longest);
        let mut noise = [0_u8; 4];
        let fraction = match getrandom::getrandom(&mut noise) {
            Ok(()) => f64::from(u32::from_le_bytes(noise)) / f64::from(u32::MAX),
            Err(_) => 1.0,
        };
        step.mul_f64(0.5 + fraction / 2.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_its_bound_and_starts_over_on_reset() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_millis(400));
        let delays: Vec<_> = (0..5).map(|_| backoff.next_delay()).collect();
        let bounds = [100, 200, 400, 400, 400].map(Duration::from_millis);
        for (delay, bound) in delays.iter().zip(bounds) {
            assert!(
                *delay >= bound / 2 && *delay <= bound,
                "{delay:?} vs {bound:?}"
            );
        }
        backoff.reset();
        assert!(backoff.next_delay() <= Duration::from_millis(100));
    }
}
