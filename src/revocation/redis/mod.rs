//! Revocations shared by every gate through Redis, answered from a local mirror.

mod builder;
mod follow;
mod wire;

use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ::redis::aio::ConnectionManager;
use ::redis::{RedisError, RedisResult, Script};

use self::wire::{expiry_with_grace, KeySpace, Revocation};
use super::{
    BoxFuture, MemoryRevocations, RevocationCheck, RevocationError, RevocationStore, TokenId,
};

pub use self::builder::RedisRevocationsBuilder;

/// Records revocations, raising each key's value and expiry, never lowering them, then tells
/// the other gates, in one atomic step so a stored revocation is always announced. Never
/// lowering: two gates whose clocks disagree must not undo each other's "log out everywhere",
/// and a session revoked twice (by two auth servers, or a logout then a reuse) stays revoked
/// until the later of the two expiries, as in every gate's memory.
///
/// `KEYS`: the keys. `ARGV[1]`: the channel; then, for each key, its value (a subject's
/// cut-off, `1` for a token or session), its expiry (as `EXAT`) and its announcement.
const RECORD_REVOCATIONS: &str = r"
local channel = ARGV[1]
for i, key in ipairs(KEYS) do
  local value = tonumber(ARGV[3 * i - 1])
  local expire_at = tonumber(ARGV[3 * i])
  local current = tonumber(redis.call('GET', key))
  if current and current > value then value = current end
  local remaining = redis.call('PTTL', key)
  if remaining > 0 then
    local time = redis.call('TIME')
    local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
    -- Expiries are whole seconds; round off the milliseconds between the two clock reads.
    local current_expiry = math.floor((now + remaining + 500) / 1000)
    if current_expiry > expire_at then expire_at = current_expiry end
  end
  redis.call('SET', key, string.format('%d', value), 'EXAT', string.format('%d', expire_at))
  redis.call('PUBLISH', channel, ARGV[3 * i + 1])
end
return 1
";

/// The revocation list of a fleet of gates, kept in Redis (feature `redis`).
///
/// Redis is the source of truth. A revocation is written as `SET <prefix>jti:<jti> 1 EXAT
/// <exp + grace + 1>`, a "log out everywhere" as `<prefix>sub:<sub>` holding the cut-off instant,
/// a revoked session as `<prefix>sid:<sid>`, each raising what the key held (a cut-off or an
/// expiry is never lowered), and each write is announced on the channel `<prefix>revocations`
/// in the same atomic step.
/// [`revoke`](RevocationStore::revoke) and [`revoke_subject`](RevocationStore::revoke_subject)
/// resolve only once Redis has acknowledged the write, and fail with a [`RevocationError`] (a `503`
/// from the auth service) otherwise: nothing is acknowledged that is not stored. Entries
/// leave Redis by themselves when their tokens expire, plus the grace period.
///
/// **Mirror mode** (the default): every instance keeps a local [`MemoryRevocations`], loaded
/// with a `SCAN` at start and kept current by a subscription to the channel, so the gate's
/// check is a local lookup without I/O or allocation. When the subscription drops, the
/// instance reconnects with bounded exponential backoff, subscribes again and re-reads every
/// key before trusting its mirror again, so a revocation made while it was cut off is never
/// missed. Until then, [`check`](RevocationStore::check) answers
/// [`Unavailable`](RevocationCheck::Unavailable) and the gate fails closed with `503`,
/// unless built with
/// [`trust_mirror_while_disconnected`](RedisRevocationsBuilder::trust_mirror_while_disconnected).
///
/// **Strict mode** ([`strict`](RedisRevocationsBuilder::strict)): every check asks Redis
/// (`EXISTS` and `GET` in one round trip); an error or timeout is `Unavailable`.
///
/// Once Redis is back, everything recovers by itself: no restart. A write that timed out
/// was reported as failed, yet may still reach Redis if the request was already on its way;
/// revoking again is harmless. Clones share one connection and one mirror; the subscription
/// runs on the Tokio runtime that connected, and ends when the last clone is dropped.
/// `Debug` shows the server's address and database, never the URL's credentials.
///
/// ```no_run
/// use jwt_gate::revocation::RedisRevocations;
/// use jwt_gate::{JwtAuthLayer, Keys, TokenVerifier};
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let revocations = RedisRevocations::connect("redis://127.0.0.1:6379")
///     .key_prefix("my-app:")
///     .await?;
/// let keys = Keys::hs256(b"an example secret of 32 bytes!!!")?;
/// let verifier = TokenVerifier::builder(keys)
///     .revocations(revocations.clone())
///     .build();
/// let gate = JwtAuthLayer::new(verifier);
/// # let _ = gate;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct RedisRevocations {
    inner: Arc<Inner>,
}

struct Inner {
    connection: ConnectionManager,
    keys: KeySpace,
    channel: String,
    /// Where the server is, without credentials: for `Debug` and logs.
    server: String,
    grace: u64,
    timeout: Duration,
    /// [`RECORD_REVOCATIONS`].
    record: Script,
    view: View,
}

/// How checks are answered.
enum View {
    Mirror {
        mirror: MemoryRevocations,
        /// Subscribed and re-synchronised since the last disconnection.
        current: Arc<AtomicBool>,
        trust_while_disconnected: bool,
        _follower: AbortOnDrop,
    },
    Strict,
}

/// Ends the subscription task when the last clone of the store goes.
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl RedisRevocations {
    /// Starts connecting to the Redis server at `url` (`redis://[user:password@]host:port/db`);
    /// set options on the returned builder, then `.await` it.
    ///
    /// ```no_run
    /// use jwt_gate::revocation::RedisRevocations;
    ///
    /// # async fn run() -> Result<(), jwt_gate::revocation::RevocationError> {
    /// let fail_closed = RedisRevocations::connect("redis://127.0.0.1:6379").await?;
    /// let strict = RedisRevocations::connect("redis://127.0.0.1:6379").strict().await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn connect(url: &str) -> RedisRevocationsBuilder {
        RedisRevocationsBuilder::new(url)
    }

    /// Whether the local mirror is known to be current: subscribed, and re-read since the
    /// last disconnection. Always `false` in strict mode, which keeps no mirror. A readiness
    /// probe can report it.
    pub fn mirror_is_current(&self) -> bool {
        match &self.inner.view {
            View::Mirror { current, .. } => current.load(Ordering::Acquire),
            View::Strict => false,
        }
    }

    /// The key prefix in use.
    pub fn key_prefix(&self) -> &str {
        self.inner.keys.prefix()
    }

    /// After Redis acknowledged a write: this instance need not wait for its own
    /// announcement to come back.
    fn apply_locally(&self, revocation: &Revocation<'_>) {
        if let View::Mirror { mirror, .. } = &self.inner.view {
            revocation.apply_to(mirror);
        }
    }
}

/// Runs one Redis operation within `timeout`, trying once more at once if the connection had
/// dropped: the connection manager reports a lost connection on the first use after it and
/// reconnects behind it, so without the second try the first request after an outage would
/// fail for nothing. Every operation here is idempotent, so a repeat is harmless.
async fn ask<T, F, Fut>(
    connection: &ConnectionManager,
    timeout: Duration,
    operation: F,
) -> Result<T, RevocationError>
where
    F: Fn(ConnectionManager) -> Fut,
    Fut: Future<Output = RedisResult<T>>,
{
    let attempts = async {
        match operation(connection.clone()).await {
            Err(error) if is_connection_lost(&error) => operation(connection.clone()).await,
            outcome => outcome,
        }
    };
    match tokio::time::timeout(timeout, attempts).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err(unavailable(&error)),
        Err(_) => Err(RevocationError::new(format!(
            "redis did not answer within {timeout:?}"
        ))),
    }
}

/// One revocation as [`RECORD_REVOCATIONS`] stores it.
struct Record {
    key: String,
    value: u64,
    expire_at: u64,
    message: String,
}

/// Stores and announces `records` in one atomic step, each raising what its key held.
async fn record(inner: &Inner, records: &[Record]) -> Result<(), RevocationError> {
    ask(&inner.connection, inner.timeout, |mut connection| {
        let mut invocation = inner.record.prepare_invoke();
        invocation.arg(&inner.channel);
        for record in records {
            invocation
                .key(&record.key)
                .arg(record.value)
                .arg(record.expire_at)
                .arg(&record.message);
        }
        async move { invocation.invoke_async::<()>(&mut connection).await }
    })
    .await
}

fn is_connection_lost(error: &RedisError) -> bool {
    error.is_io_error() || error.is_connection_dropped() || error.is_unrecoverable_error()
}

fn unavailable(error: &RedisError) -> RevocationError {
    RevocationError::new(format!("redis: {error}"))
}

impl RevocationStore for RedisRevocations {
    fn grace(&self) -> Option<Duration> {
        Some(Duration::from_secs(self.inner.grace))
    }

    fn check(&self, token: &TokenId<'_>) -> RevocationCheck {
        match &self.inner.view {
            View::Mirror {
                mirror,
                current,
                trust_while_disconnected,
                ..
            } => {
                if *trust_while_disconnected || current.load(Ordering::Acquire) {
                    mirror.check(token)
                } else {
                    RevocationCheck::Unavailable
                }
            }
            View::Strict => {
                let inner = self.inner.clone();
                let token_key = inner.keys.token(token.jti);
                let subject_key = inner.keys.subject(&token.subject_key());
                // A token without a session asks about a key that cannot exist.
                let session_key = token.sid.map(|sid| inner.keys.session(sid));
                let issued_at = token.iat;
                RevocationCheck::Pending(Box::pin(async move {
                    let answer = ask(&inner.connection, inner.timeout, |mut connection| {
                        let mut pipeline = ::redis::pipe();
                        pipeline
                            .cmd("EXISTS")
                            .arg(&token_key)
                            .arg(session_key.as_deref().unwrap_or(&token_key))
                            .cmd("GET")
                            .arg(&subject_key);
                        async move {
                            pipeline
                                .query_async::<(u32, Option<u64>)>(&mut connection)
                                .await
                        }
                    })
                    .await;
                    match answer {
                        Ok((found, _)) if found > 0 => RevocationCheck::Revoked,
                        Ok((_, Some(cutoff))) if issued_at < cutoff => RevocationCheck::Revoked,
                        Ok(_) => RevocationCheck::Valid,
                        Err(error) => {
                            tracing::debug!(%error, "strict revocation check failed");
                            RevocationCheck::Unavailable
                        }
                    }
                }))
            }
        }
    }

    fn revoke(&self, jti: &str, expires_at: u64) -> BoxFuture<'_, Result<(), RevocationError>> {
        let key = self.inner.keys.token(jti);
        let jti = jti.to_owned();
        Box::pin(async move {
            let inner = &*self.inner;
            let revocation = Revocation::Token {
                jti: &jti,
                expires_at,
            };
            let expire_at = expiry_with_grace(expires_at, inner.grace);
            let records = [Record {
                key,
                value: 1,
                expire_at,
                message: revocation.encode(),
            }];
            record(inner, &records).await?;
            self.apply_locally(&revocation);
            Ok(())
        })
    }

    fn revoke_subject(
        &self,
        sub: &str,
        issued_before: u64,
        keep_until: u64,
    ) -> BoxFuture<'_, Result<(), RevocationError>> {
        let key = self.inner.keys.subject(sub);
        let sub = sub.to_owned();
        Box::pin(async move {
            let inner = &*self.inner;
            let revocation = Revocation::Subject {
                sub: &sub,
                issued_before,
                keep_until,
            };
            let records = [Record {
                key,
                value: issued_before,
                expire_at: expiry_with_grace(keep_until, inner.grace),
                message: revocation.encode(),
            }];
            record(inner, &records).await?;
            self.apply_locally(&revocation);
            Ok(())
        })
    }

    fn revoke_sessions(
        &self,
        sessions: &[&str],
        keep_until: u64,
    ) -> BoxFuture<'_, Result<(), RevocationError>> {
        let sessions: Vec<String> = sessions.iter().map(|&sid| sid.to_owned()).collect();
        Box::pin(async move {
            if sessions.is_empty() {
                return Ok(());
            }
            let inner = &*self.inner;
            let revocations: Vec<Revocation<'_>> = sessions
                .iter()
                .map(|sid| Revocation::Session { sid, keep_until })
                .collect();
            let expire_at = expiry_with_grace(keep_until, inner.grace);
            // One script: stored and announced together, no other command between them.
            let records: Vec<Record> = sessions
                .iter()
                .zip(&revocations)
                .map(|(sid, revocation)| Record {
                    key: inner.keys.session(sid),
                    value: 1,
                    expire_at,
                    message: revocation.encode(),
                })
                .collect();
            record(inner, &records).await?;
            for revocation in &revocations {
                self.apply_locally(revocation);
            }
            Ok(())
        })
    }
}

impl fmt::Debug for RedisRevocations {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = &*self.inner;
        let mut debug = f.debug_struct("RedisRevocations");
        debug
            .field("server", &inner.server)
            .field("key_prefix", &inner.keys.prefix());
        match &inner.view {
            View::Mirror {
                mirror,
                current,
                trust_while_disconnected,
                ..
            } => debug
                .field("mode", &"mirror")
                .field("mirror_is_current", &current.load(Ordering::Acquire))
                .field("trust_mirror_while_disconnected", trust_while_disconnected)
                .field("mirror", mirror),
            View::Strict => debug.field("mode", &"strict"),
        };
        debug.finish()
    }
}
