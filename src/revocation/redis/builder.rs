//! Configuring and opening a [`RedisRevocations`].

use std::fmt;
use std::future::IntoFuture;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use ::redis::{Client, ConnectionInfo, IntoConnectionInfo, Script};

use super::follow::{Backoff, Follower};
use super::wire::KeySpace;
use super::{unavailable, Inner, RedisRevocations, View, RECORD_REVOCATIONS};
use crate::revocation::memory::DEFAULT_GRACE;
use crate::revocation::{BoxFuture, MemoryRevocations, RevocationError};

/// The key prefix unless set.
const DEFAULT_PREFIX: &str = "jwt-gate:";
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);
const DEFAULT_FIRST_RETRY: Duration = Duration::from_millis(100);
const DEFAULT_LONGEST_RETRY: Duration = Duration::from_secs(5);
const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(10);

/// Options for a [`RedisRevocations`], from [`RedisRevocations::connect`]; `.await` it to
/// connect.
///
/// Connecting fails, with a [`RevocationError`], when the URL does not parse or Redis cannot be
/// reached: a gate that cannot know the revocations should not start.
///
/// ```no_run
/// use std::time::Duration;
/// use jwt_gate::revocation::RedisRevocations;
///
/// # async fn run() -> Result<(), jwt_gate::revocation::RevocationError> {
/// let revocations = RedisRevocations::connect("redis://:secret@10.0.0.5:6379/2")
///     .key_prefix("shop:")
///     .trust_mirror_while_disconnected()
///     .reconnect_backoff(Duration::from_millis(50), Duration::from_secs(2))
///     .await?;
/// # Ok(())
/// # }
/// ```
#[must_use = "a builder does nothing until awaited"]
pub struct RedisRevocationsBuilder {
    server: Result<ConnectionInfo, String>,
    prefix: String,
    strict: bool,
    trust_mirror_while_disconnected: bool,
    grace: Duration,
    timeout: Duration,
    first_retry: Duration,
    longest_retry: Duration,
    heartbeat: Duration,
}

impl RedisRevocationsBuilder {
    pub(super) fn new(url: &str) -> Self {
        Self {
            // The parser's message never holds the URL, so it cannot leak a password.
            server: url
                .into_connection_info()
                .map_err(|error| error.to_string()),
            prefix: DEFAULT_PREFIX.to_owned(),
            strict: false,
            trust_mirror_while_disconnected: false,
            grace: DEFAULT_GRACE,
            timeout: DEFAULT_TIMEOUT,
            first_retry: DEFAULT_FIRST_RETRY,
            longest_retry: DEFAULT_LONGEST_RETRY,
            heartbeat: DEFAULT_HEARTBEAT,
        }
    }

    /// Puts every key and the channel under `prefix` (default `jwt-gate:`), so several
    /// deployments can share one server. Every gate of one deployment must use the same.
    pub fn key_prefix(mut self, prefix: &str) -> Self {
        prefix.clone_into(&mut self.prefix);
        self
    }

    /// Asks Redis on every check instead of keeping a mirror: no propagation delay at all,
    /// for a round trip per request (the gate then allocates a future per request). Any
    /// error or timeout fails closed.
    pub fn strict(mut self) -> Self {
        self.strict = true;
        self
    }

    /// While the subscription is down, keeps answering from the mirror as it stood instead
    /// of failing closed: availability over freshness. A revocation made elsewhere during
    /// the outage is seen once this instance has reconnected and re-read the keys. Has no
    /// effect with [`strict`](Self::strict), which keeps no mirror.
    pub fn trust_mirror_while_disconnected(mut self) -> Self {
        self.trust_mirror_while_disconnected = true;
        self
    }

    /// Keeps each entry this long after its token's expiry (default five minutes, as
    /// [`MemoryRevocations`]). Must exceed the gate's leeway.
    pub fn grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// Gives up on any one Redis operation after this long (default 2 s): a write then fails
    /// with a [`RevocationError`], a strict check is `Unavailable`.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Waits `first` before the second reconnection attempt, doubling up to `longest`
    /// between later ones (defaults 100 ms and 5 s), with jitter so a fleet of gates does not
    /// reconnect in step.
    pub fn reconnect_backoff(mut self, first: Duration, longest: Duration) -> Self {
        self.first_retry = first;
        self.longest_retry = longest;
        self
    }

    /// Sends a `PING` on the subscription after this long without a message (default 10 s),
    /// so a server that vanished without closing the connection is noticed.
    pub fn heartbeat(mut self, heartbeat: Duration) -> Self {
        self.heartbeat = heartbeat;
        self
    }

    async fn open(self) -> Result<RedisRevocations, RevocationError> {
        let info = self.server.map_err(RevocationError::new)?;
        let server = format!("{}/{}", info.addr(), info.redis_settings().db());
        let client = Client::open(info).map_err(|error| unavailable(&error))?;
        // One retry per reconnection: a write during an outage should fail fast with 503,
        // not wait out a long series; the subscription task does the patient retrying.
        let config = ConnectionManagerConfig::new()
            .set_number_of_retries(1)
            .set_min_delay(self.first_retry)
            .set_max_delay(self.longest_retry)
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout));
        let connection = match tokio::time::timeout(
            self.timeout,
            ConnectionManager::new_with_config(client.clone(), config),
        )
        .await
        {
            Ok(Ok(connection)) => connection,
            Ok(Err(error)) => return Err(unavailable(&error)),
            Err(_) => return Err(RevocationError::new("redis: connecting timed out")),
        };
        refuse_evicting_server(&connection, self.timeout).await?;
        let keys = KeySpace::new(&self.prefix);
        let channel = keys.channel();
        let view = if self.strict {
            View::Strict
        } else {
            let mirror = MemoryRevocations::new().with_grace(self.grace);
            let current = Arc::new(AtomicBool::new(false));
            let follower = Follower {
                client,
                connection: connection.clone(),
                keys: keys.clone(),
                channel: channel.clone(),
                mirror: mirror.clone(),
                current: current.clone(),
                grace: self.grace.as_secs(),
                timeout: self.timeout,
                heartbeat: self.heartbeat,
                backoff: Backoff::new(self.first_retry, self.longest_retry),
            }
            .start()
            .await?;
            View::Mirror {
                mirror,
                current,
                trust_while_disconnected: self.trust_mirror_while_disconnected,
                _follower: follower,
            }
        };
        Ok(RedisRevocations {
            inner: Arc::new(Inner {
                connection,
                keys,
                channel,
                server,
                grace: self.grace.as_secs(),
                timeout: self.timeout,
                record: Script::new(RECORD_REVOCATIONS),
                view,
            }),
        })
    }
}

/// Redis evicts keys when its memory is full unless its `maxmemory-policy` is `noeviction`,
/// and every revocation is a key with an expiry, the first kind the `volatile-*` policies
/// evict: an acknowledged revocation could vanish, and a gate started later (or any strict
/// check) would accept the token again. Such a server is refused. One that will not say
/// (`CONFIG` disabled, as some managed services have it) is used, with a warning.
async fn refuse_evicting_server(
    connection: &ConnectionManager,
    timeout: Duration,
) -> Result<(), RevocationError> {
    let mut connection = connection.clone();
    let mut pipeline = ::redis::pipe();
    pipeline
        .cmd("CONFIG")
        .arg("GET")
        .arg("maxmemory-policy")
        .cmd("CONFIG")
        .arg("GET")
        .arg("maxmemory");
    let ask = pipeline.query_async::<(Vec<String>, Vec<String>)>(&mut connection);
    let (policy, limit) = match tokio::time::timeout(timeout, ask).await {
        Ok(Ok((policy, limit))) => (policy, limit),
        Ok(Err(error)) => {
            tracing::warn!(
                %error,
                "redis: cannot read maxmemory-policy; make sure it is noeviction, or revocations \
                 may be evicted when memory is full"
            );
            return Ok(());
        }
        Err(_) => return Err(RevocationError::new("redis: CONFIG GET timed out")),
    };
    let policy = policy.get(1).map_or("", String::as_str);
    // Without a memory limit nothing is ever evicted, whatever the policy says.
    let limited = limit.get(1).is_some_and(|bytes| bytes != "0");
    if limited && policy != "noeviction" {
        return Err(RevocationError::new(format!(
            "redis: maxmemory-policy is {policy:?} with a memory limit: revocations could be \
             evicted when memory is full; set maxmemory-policy to noeviction"
        )));
    }
    Ok(())
}

impl IntoFuture for RedisRevocationsBuilder {
    type Output = Result<RedisRevocations, RevocationError>;
    type IntoFuture = BoxFuture<'static, Self::Output>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.open())
    }
}

impl fmt::Debug for RedisRevocationsBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Address and database only: the URL may carry a password.
        let server = match &self.server {
            Ok(info) => format!("{}/{}", info.addr(), info.redis_settings().db()),
            Err(_) => "(invalid URL)".to_owned(),
        };
        f.debug_struct("RedisRevocationsBuilder")
            .field("server", &server)
            .field("key_prefix", &self.prefix)
            .field("strict", &self.strict)
            .field(
                "trust_mirror_while_disconnected",
                &self.trust_mirror_while_disconnected,
            )
            .field("grace", &self.grace)
            .field("timeout", &self.timeout)
            .field("reconnect_backoff", &(self.first_retry, self.longest_retry))
            .field("heartbeat", &self.heartbeat)
            .finish()
    }
}
