//! The throttle's counts in Redis, so that a fleet of auth services throttles as one.

use std::fmt;
use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use ::redis::{Client, ConnectionInfo, IntoConnectionInfo, Script};
use sha2::{Digest, Sha256};

use super::{Kind, Limit, LocalCounts, Refusal, Settle};
use crate::store::UserStoreError;

const DEFAULT_PREFIX: &str = "jwt-gate:";
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);

/// Admits and counts an attempt (`begin`), or settles one (`settle`), over all its keys in
/// one step, so that parallel attempts at different servers cannot all slip through. The
/// arithmetic is [`Limit::delay`]'s and the entry's `count`/`give_back`, in Redis's Lua.
///
/// KEYS: the counts (hashes of `f` failures, `l` last attempt, `b` blocked until).
/// ARGV: the operation, now, then for each key: settle (0 forget, 1 give back), free,
/// base delay, longest delay, forget after (whole seconds).
const SCRIPT: &str = r"
local now = tonumber(ARGV[2])
local function delay(failures, free, base, longest)
  if failures <= free then return nil end
  return math.min(base * 2 ^ math.min(failures - free - 1, 32), longest)
end
local function arg(i, n) return tonumber(ARGV[2 + (i - 1) * 5 + n]) end
if ARGV[1] == 'begin' then
  local wait = 0
  for i, key in ipairs(KEYS) do
    wait = math.max(wait, tonumber(redis.call('HGET', key, 'b') or '0') - now)
  end
  if wait > 0 then return wait end
  for i, key in ipairs(KEYS) do
    local free, base, longest, forget = arg(i, 2), arg(i, 3), arg(i, 4), arg(i, 5)
    local state = redis.call('HMGET', key, 'f', 'l', 'b')
    local failures = tonumber(state[1] or '0')
    local blocked = tonumber(state[3] or '0')
    if now - tonumber(state[2] or '0') >= forget then failures = 0 end
    failures = failures + 1
    local wait = delay(failures, free, base, longest)
    if wait then blocked = now + wait end
    redis.call('HSET', key, 'f', failures, 'l', now, 'b', blocked)
    redis.call('EXPIRE', key, math.max(forget, blocked - now) + 1)
  end
  return 0
end
for i, key in ipairs(KEYS) do
  if arg(i, 1) == 0 then
    redis.call('DEL', key)
  else
    local state = redis.call('HMGET', key, 'f', 'l', 'b')
    if state[1] then
      local failures = math.max(tonumber(state[1]) - 1, 0)
      local wait = delay(failures, arg(i, 2), arg(i, 3), arg(i, 4))
      local blocked = 0
      if wait then blocked = math.min(tonumber(state[3]), tonumber(state[2]) + wait) end
      redis.call('HSET', key, 'f', failures, 'b', blocked)
    end
  end
end
return 0
";

/// Login and registration counts kept in Redis (feature `redis`), shared by every auth
/// service that uses the same server and key prefix: a failure at one server counts at all
/// of them. Give it to
/// [`AuthServiceBuilder::shared_throttle`](crate::service::AuthServiceBuilder::shared_throttle).
///
/// Each attempt is one script run, checking and counting all its keys at once. Keys are
/// `{prefix}throttle:{kind}:{hash}`, where the hash is SHA-256 of the prefix and the
/// username or address (neither is stored as such), each expiring once its count would be
/// forgotten anyway.
///
/// **When Redis cannot be reached** (or answers slower than the timeout, default 2 s),
/// logins and registrations answer `503` and count nothing: the default fails closed.
/// Counting in each process instead would hand a guesser the allowance of every server of
/// the fleet at once, exactly when Redis is down (an outage an attacker may have caused);
/// and a fleet that shares throttling through Redis already needs it for logouts, which
/// answer `503` too. When keeping logins available matters more, choose
/// [`count_locally_when_unreachable`](RedisThrottleBuilder::count_locally_when_unreachable):
/// each process then counts on its own until Redis answers again.
///
/// ```no_run
/// use jwt_gate::service::{AuthService, RedisThrottle};
/// use jwt_gate::store::MemoryUserStore;
/// use jwt_gate::{Keys, TokenVerifier};
///
/// # async fn run() -> Result<(), jwt_gate::store::UserStoreError> {
/// let verifier = TokenVerifier::new(Keys::hs256(b"an example secret of 32 bytes!!!").unwrap());
/// let throttle = RedisThrottle::connect("redis://127.0.0.1:6379")
///     .key_prefix("shop:")
///     .await?;
/// let auth = AuthService::builder(verifier, MemoryUserStore::new())
///     .shared_throttle(throttle)
///     .build();
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct RedisThrottle {
    inner: Arc<Inner>,
}

struct Inner {
    connection: ConnectionManager,
    prefix: String,
    count_locally: bool,
    script: Script,
}

impl fmt::Debug for RedisThrottle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisThrottle")
            .field("prefix", &self.inner.prefix)
            .field("count_locally", &self.inner.count_locally)
            .finish_non_exhaustive()
    }
}

impl RedisThrottle {
    /// Options for a throttle on the Redis at `url` (`redis://[:password@]host:port[/db]`);
    /// `.await` it to connect.
    pub fn connect(url: &str) -> RedisThrottleBuilder {
        RedisThrottleBuilder {
            // The parser's message never holds the URL, so it cannot leak a password.
            server: url
                .into_connection_info()
                .map_err(|error| error.to_string()),
            prefix: DEFAULT_PREFIX.to_owned(),
            timeout: DEFAULT_TIMEOUT,
            count_locally: false,
        }
    }

    fn key(&self, kind: Kind, key: &[u8]) -> String {
        let prefix = &self.inner.prefix;
        let digest = Sha256::new()
            .chain_update(prefix.as_bytes())
            .chain_update([0xff])
            .chain_update(key)
            .finalize();
        let hash: String = digest[..16]
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect();
        format!("{prefix}throttle:{}:{hash}", kind.name())
    }

    async fn run(
        &self,
        operation: &str,
        now: u64,
        counted: impl Iterator<Item = (Kind, Limit, &[u8], Settle)>,
    ) -> Result<u64, ::redis::RedisError> {
        let mut invocation = self.inner.script.prepare_invoke();
        invocation.arg(operation).arg(now);
        for (kind, limit, key, settle) in counted {
            invocation
                .key(self.key(kind, key))
                .arg(u8::from(settle == Settle::GiveBack))
                .arg(limit.free)
                .arg(limit.base_delay)
                .arg(limit.max_delay)
                .arg(limit.forget_after);
        }
        invocation
            .invoke_async(&mut self.inner.connection.clone())
            .await
    }

    pub(super) async fn begin(
        &self,
        local: &LocalCounts,
        counted: &[(Kind, Limit, &[u8])],
        now: u64,
    ) -> Result<(), Refusal> {
        let keys = counted
            .iter()
            .map(|&(kind, limit, key)| (kind, limit, key, Settle::GiveBack));
        match self.run("begin", now, keys).await {
            Ok(0) => Ok(()),
            Ok(wait) => Err(Refusal::Wait(wait)),
            Err(error) if self.inner.count_locally => {
                tracing::warn!(%error, "redis throttle unreachable; counting in this process");
                local.begin(counted, now).map_err(Refusal::Wait)
            }
            Err(error) => {
                tracing::error!(%error, "redis throttle unreachable; answering 503");
                Err(Refusal::Unavailable)
            }
        }
    }

    pub(super) async fn settle(
        &self,
        local: &LocalCounts,
        counted: &[(Kind, Limit, &[u8], Settle)],
    ) {
        // Settling needs no time: it undoes or clears what was counted.
        if let Err(error) = self.run("settle", 0, counted.iter().copied()).await {
            // The count stays as it was: stricter for a while, never looser.
            tracing::warn!(%error, "redis throttle unreachable; an attempt was not settled");
            if self.inner.count_locally {
                local.settle(counted);
            }
        }
    }
}

/// Options for a [`RedisThrottle`], from [`RedisThrottle::connect`]; `.await` it to connect.
///
/// Connecting fails, with a [`UserStoreError`], when the URL does not parse or Redis cannot be
/// reached: a service that cannot count should not start.
#[must_use = "a builder does nothing until awaited"]
pub struct RedisThrottleBuilder {
    server: Result<ConnectionInfo, String>,
    prefix: String,
    timeout: Duration,
    count_locally: bool,
}

impl fmt::Debug for RedisThrottleBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisThrottleBuilder")
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .field("count_locally", &self.count_locally)
            .finish_non_exhaustive()
    }
}

impl RedisThrottleBuilder {
    /// Puts every key under `prefix` (default `jwt-gate:`). Every server of one deployment
    /// must use the same.
    pub fn key_prefix(mut self, prefix: &str) -> Self {
        prefix.clone_into(&mut self.prefix);
        self
    }

    /// How long to wait for Redis before the attempt is answered as if Redis were down
    /// (default 2 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// While Redis cannot be reached, counts in this process instead of answering `503`:
    /// logins stay available, each server throttling on its own. See [`RedisThrottle`].
    pub fn count_locally_when_unreachable(mut self) -> Self {
        self.count_locally = true;
        self
    }

    async fn open(self) -> Result<RedisThrottle, UserStoreError> {
        let info = self.server.map_err(UserStoreError::new)?;
        let client =
            Client::open(info).map_err(|error| UserStoreError::new(format!("redis: {error}")))?;
        // One retry: an attempt during an outage should be answered promptly, not wait out
        // a series of reconnections.
        let config = ConnectionManagerConfig::new()
            .set_number_of_retries(1)
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout));
        let connection = match tokio::time::timeout(
            self.timeout,
            ConnectionManager::new_with_config(client, config),
        )
        .await
        {
            Ok(Ok(connection)) => connection,
            Ok(Err(error)) => return Err(UserStoreError::new(format!("redis: {error}"))),
            Err(_) => return Err(UserStoreError::new("redis: connecting timed out")),
        };
        Ok(RedisThrottle {
            inner: Arc::new(Inner {
                connection,
                prefix: self.prefix,
                count_locally: self.count_locally,
                script: Script::new(SCRIPT),
            }),
        })
    }
}

impl IntoFuture for RedisThrottleBuilder {
    type Output = Result<RedisThrottle, UserStoreError>;
    type IntoFuture = Pin<Box<dyn Future<Output = Self::Output> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.open())
    }
}
