//! What jwt-gate records (feature `metrics`), through the [`metrics`](https://docs.rs/metrics)
//! facade: install any recorder (with feature `prometheus`, [`Prometheus`]) and the gate, the
//! revocation stores, the JWKS source and the auth service report to it.
//!
//! Every name follows Prometheus' conventions: the `jwt_gate_` prefix, `_total` on counters,
//! base units (`_seconds`), and labels whose values come from a short fixed list, never from
//! a request (no token, no `sub`, no username, no path). `docs/operating.md` has the table
//! of every metric and what to alert on.
//!
//! The gate's own counters (requests passed, by whether the verified-token cache answered,
//! and refused, by reason; tokens verified in full) are registered once, when the
//! [`TokenVerifier`](crate::TokenVerifier) is built, so the hot path only adds to a counter
//! it already holds: **install the recorder before building verifiers**. A request adds to
//! one counter, once: a cache hit that passes is one atomic add. Everything else is looked
//! up when it is recorded.
//!
//! This module is the one place that records: without the feature every function in it is
//! an empty inline function, and nothing here is compiled in.

#[cfg(feature = "metrics")]
use std::sync::atomic::{AtomicI64, Ordering};
#[cfg(feature = "metrics")]
use std::sync::Arc;

use crate::AuthError;

#[cfg(feature = "prometheus")]
mod prometheus;
#[cfg(feature = "prometheus")]
#[cfg_attr(docsrs, doc(cfg(feature = "prometheus")))]
pub use self::prometheus::{Prometheus, PrometheusError, HISTOGRAM_BUCKETS};

/// Requests the gate let through, by `cache`: `hit` (a valid token answered from the
/// verified-token cache), `miss` (a valid token verified in full) or `none` (no token: an
/// open or optional path, a CORS preflight) (counter).
///
/// One family carries what a request's pass says about the cache and the revocation check,
/// so that a pass costs one increment: the cache's hit ratio among valid tokens is
/// `hit / (hit + miss)`, and every pass with a token was a revocation check that found the
/// token valid (a revoked token, or a store that cannot answer, is a refusal with reason
/// `revoked` or `revocation_store_unavailable`).
#[cfg(feature = "metrics")]
pub const REQUESTS_PASSED: &str = "jwt_gate_requests_passed_total";
/// Requests the gate refused, by `reason`: the [`AuthError`] kind in snake case, such as
/// `missing_credentials`, `expired` or `revoked` (counter).
#[cfg(feature = "metrics")]
pub const REQUESTS_REFUSED: &str = "jwt_gate_requests_refused_total";
/// Tokens not in the verified-token cache, so verified in full, signature included, valid or
/// not: the gate's expensive work (counter).
#[cfg(feature = "metrics")]
pub const VERIFIED_CACHE_MISSES: &str = "jwt_gate_verified_cache_misses_total";
/// Entries an in-memory revocation list holds (the Redis mirror's included), by `kind`:
/// `token`, `session` or `subject` (gauge).
#[cfg(feature = "metrics")]
pub const REVOCATION_ENTRIES: &str = "jwt_gate_revocation_entries";
/// `1` while the Redis revocation mirror is subscribed and re-synchronised, `0` while it is
/// cut off (gauge).
#[cfg(feature = "metrics")]
pub const REVOCATION_MIRROR_CURRENT: &str = "jwt_gate_revocation_mirror_current";
/// When the Redis mirror was last re-read in full, as a Unix timestamp (gauge).
#[cfg(feature = "metrics")]
pub const REVOCATION_MIRROR_LAST_RESYNC: &str =
    "jwt_gate_revocation_mirror_last_resync_timestamp_seconds";
/// Times the Redis mirror's subscription was lost (counter).
#[cfg(feature = "metrics")]
pub const REVOCATION_MIRROR_DISCONNECTS: &str = "jwt_gate_revocation_mirror_disconnects_total";
/// JWKS fetches, by `url` (the configured one, without query or credentials) and `outcome`:
/// `ok`, `unreachable`, `timeout`, `status`, `too_large`, `parse`, `no_usable_key`,
/// `invalid_url` (counter).
#[cfg(feature = "metrics")]
pub const JWKS_FETCHES: &str = "jwt_gate_jwks_fetches_total";
/// When a JWKS was last fetched and applied, by `url`, as a Unix timestamp: the key set's
/// age is `time() -` this (gauge).
#[cfg(feature = "metrics")]
pub const JWKS_LAST_SUCCESS: &str = "jwt_gate_jwks_last_success_timestamp_seconds";
/// The auth service's answers, by `operation` (`register`, `login`, `refresh`, `logout`,
/// `logout_all`, or `token` for a token request whose grant could not be read) and `outcome`
/// (`success`, `invalid_request`, `invalid_grant`, `invalid_scope`, `username_taken`,
/// `invalid_token`, `cross_site_request`, `throttled`, `busy`, `unavailable`,
/// `server_error`) (counter).
#[cfg(feature = "metrics")]
pub const AUTH_OPERATIONS: &str = "jwt_gate_auth_operations_total";
/// Attempts the throttle refused with `429`, by `operation`: `login`, `register`, `refresh`
/// (counter).
#[cfg(feature = "metrics")]
pub const THROTTLE_REFUSALS: &str = "jwt_gate_throttle_refusals_total";
/// Password hash operations waiting for a hashing thread, by `lane`: `login` (logins and
/// their rehashes) or `registration` (gauge).
#[cfg(feature = "metrics")]
pub const PASSWORD_HASH_QUEUE_DEPTH: &str = "jwt_gate_password_hash_queue_depth";
/// How many may wait in each `lane` before the service answers `503` (gauge).
#[cfg(feature = "metrics")]
pub const PASSWORD_HASH_QUEUE_CAPACITY: &str = "jwt_gate_password_hash_queue_capacity";
/// How long hash operations waited for a hashing thread, by `lane` (histogram).
#[cfg(feature = "metrics")]
pub const PASSWORD_HASH_WAIT: &str = "jwt_gate_password_hash_wait_seconds";
/// How long hashing or verifying a password took on its thread, by `lane` (histogram).
#[cfg(feature = "metrics")]
pub const PASSWORD_HASH_DURATION: &str = "jwt_gate_password_hash_duration_seconds";

/// Every metric with its kind, unit and help text: what a recorder is told by [`describe`].
#[cfg(feature = "metrics")]
const DESCRIPTIONS: &[(&str, Kind, Option<metrics::Unit>, &str)] = {
    use metrics::Unit::{Count, Seconds};
    &[
        (
            REQUESTS_PASSED,
            Kind::Counter,
            Some(Count),
            "Requests the gate let through, by verified-cache use.",
        ),
        (
            REQUESTS_REFUSED,
            Kind::Counter,
            Some(Count),
            "Requests the gate refused, by reason.",
        ),
        (
            VERIFIED_CACHE_MISSES,
            Kind::Counter,
            Some(Count),
            "Tokens verified in full (not in the cache).",
        ),
        (
            REVOCATION_ENTRIES,
            Kind::Gauge,
            Some(Count),
            "Entries in the in-memory revocation list, by kind.",
        ),
        (
            REVOCATION_MIRROR_CURRENT,
            Kind::Gauge,
            None,
            "1 while the Redis revocation mirror is current, 0 while cut off.",
        ),
        (
            REVOCATION_MIRROR_LAST_RESYNC,
            Kind::Gauge,
            Some(Seconds),
            "Unix time of the Redis mirror's last full re-read.",
        ),
        (
            REVOCATION_MIRROR_DISCONNECTS,
            Kind::Counter,
            Some(Count),
            "Times the Redis mirror's subscription was lost.",
        ),
        (
            JWKS_FETCHES,
            Kind::Counter,
            Some(Count),
            "JWKS fetches, by URL and outcome.",
        ),
        (
            JWKS_LAST_SUCCESS,
            Kind::Gauge,
            Some(Seconds),
            "Unix time of the last JWKS fetched and applied, by URL.",
        ),
        (
            AUTH_OPERATIONS,
            Kind::Counter,
            Some(Count),
            "Auth service answers, by operation and outcome.",
        ),
        (
            THROTTLE_REFUSALS,
            Kind::Counter,
            Some(Count),
            "Attempts refused by the throttle, by operation.",
        ),
        (
            PASSWORD_HASH_QUEUE_DEPTH,
            Kind::Gauge,
            Some(Count),
            "Password hash operations waiting for a thread, by lane.",
        ),
        (
            PASSWORD_HASH_QUEUE_CAPACITY,
            Kind::Gauge,
            Some(Count),
            "Password hash operations allowed to wait, by lane.",
        ),
        (
            PASSWORD_HASH_WAIT,
            Kind::Histogram,
            Some(Seconds),
            "Time password hash operations waited for a thread, by lane.",
        ),
        (
            PASSWORD_HASH_DURATION,
            Kind::Histogram,
            Some(Seconds),
            "Time hashing or verifying a password took, by lane.",
        ),
    ]
};

#[cfg(feature = "metrics")]
#[derive(Clone, Copy)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// Tells the installed recorder every metric's help text and unit (a Prometheus recorder
/// prints them as `# HELP` lines). [`Prometheus::install`] does this itself; call it after
/// installing any other recorder.
///
/// ```
/// jwt_gate::metrics::describe();
/// ```
#[cfg(feature = "metrics")]
#[cfg_attr(docsrs, doc(cfg(feature = "metrics")))]
pub fn describe() {
    for &(name, kind, unit, help) in DESCRIPTIONS {
        match (kind, unit) {
            (Kind::Counter, Some(unit)) => metrics::describe_counter!(name, unit, help),
            (Kind::Counter, None) => metrics::describe_counter!(name, help),
            (Kind::Gauge, Some(unit)) => metrics::describe_gauge!(name, unit, help),
            (Kind::Gauge, None) => metrics::describe_gauge!(name, help),
            (Kind::Histogram, Some(unit)) => metrics::describe_histogram!(name, unit, help),
            (Kind::Histogram, None) => metrics::describe_histogram!(name, help),
        }
    }
}

/// The gate's counters, registered once per verifier so that recording on the hot path is
/// an atomic add on a handle already held. Empty without the feature.
#[derive(Clone, Default)]
pub(crate) struct GateMetrics {
    #[cfg(feature = "metrics")]
    handles: Option<Arc<GateHandles>>,
}

#[cfg(feature = "metrics")]
struct GateHandles {
    /// By [`CacheUse`].
    passed: [metrics::Counter; 3],
    refused: Vec<metrics::Counter>,
    cache_misses: metrics::Counter,
}

/// What the verified-token cache did for a request: the `cache` label of a pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CacheUse {
    /// The token was answered from the cache.
    Hit,
    /// The token was verified in full.
    Miss,
    /// The request carried no token.
    NoToken,
}

impl std::fmt::Debug for GateMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GateMetrics")
    }
}

#[cfg_attr(not(feature = "metrics"), allow(clippy::unused_self))]
impl GateMetrics {
    /// Registers the gate's counters with the recorder installed now.
    pub(crate) fn register() -> Self {
        #[cfg(feature = "metrics")]
        {
            let passed = |cache: &'static str| metrics::counter!(REQUESTS_PASSED, "cache" => cache);
            Self {
                handles: Some(Arc::new(GateHandles {
                    passed: [passed("hit"), passed("miss"), passed("none")],
                    refused: AuthError::ALL
                        .iter()
                        .map(|error| metrics::counter!(REQUESTS_REFUSED, "reason" => error.kind()))
                        .collect(),
                    cache_misses: metrics::counter!(VERIFIED_CACHE_MISSES),
                })),
            }
        }
        #[cfg(not(feature = "metrics"))]
        Self::default()
    }

    /// A request let through: the one increment it costs.
    #[inline]
    pub(crate) fn passed(&self, cache: CacheUse) {
        #[cfg(feature = "metrics")]
        if let Some(handles) = &self.handles {
            handles.passed[cache as usize].increment(1);
        }
        #[cfg(not(feature = "metrics"))]
        let _ = cache;
    }

    #[inline]
    pub(crate) fn refused(&self, error: AuthError) {
        #[cfg(feature = "metrics")]
        if let Some(counter) = self
            .handles
            .as_ref()
            .and_then(|handles| handles.refused.get(error as usize))
        {
            counter.increment(1);
        }
        #[cfg(not(feature = "metrics"))]
        let _ = error;
    }

    /// A token verified in full (off the hot path: it costs a signature check).
    #[inline]
    pub(crate) fn cache_missed(&self) {
        #[cfg(feature = "metrics")]
        if let Some(handles) = &self.handles {
            handles.cache_misses.increment(1);
        }
    }
}

/// Which of a revocation list's maps an entry is in.
#[derive(Debug, Clone, Copy)]
pub(crate) enum RevocationKind {
    Token,
    Session,
    Subject,
}

/// The sizes of one in-memory revocation list, reported as gauges whenever they change.
/// Counted here rather than asked of the maps, whose `len` locks every shard. Empty without
/// the feature.
#[derive(Debug, Default)]
pub(crate) struct RevocationSizes {
    #[cfg(feature = "metrics")]
    counts: [AtomicI64; 3],
}

#[cfg_attr(not(feature = "metrics"), allow(clippy::unused_self))]
impl RevocationSizes {
    /// `change` more (or, negative, fewer) entries of `kind`.
    #[inline]
    pub(crate) fn changed(&self, kind: RevocationKind, change: i64) {
        #[cfg(feature = "metrics")]
        if change != 0 {
            let count = &self.counts[kind as usize];
            let now = count.fetch_add(change, Ordering::AcqRel) + change;
            let label = match kind {
                RevocationKind::Token => "token",
                RevocationKind::Session => "session",
                RevocationKind::Subject => "subject",
            };
            #[allow(clippy::cast_precision_loss)] // exact below 2^53 entries
            metrics::gauge!(REVOCATION_ENTRIES, "kind" => label).set(now as f64);
        }
        #[cfg(not(feature = "metrics"))]
        let _ = (kind, change);
    }
}

/// Now, as a Unix timestamp in seconds.
#[cfg(all(feature = "metrics", any(feature = "redis", feature = "jwks")))]
fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |since| since.as_secs_f64())
}

/// The Redis mirror became current (`true`, after a full re-read) or was cut off.
#[cfg(feature = "redis")]
#[inline]
pub(crate) fn mirror_current(current: bool) {
    #[cfg(feature = "metrics")]
    {
        metrics::gauge!(REVOCATION_MIRROR_CURRENT).set(if current { 1.0 } else { 0.0 });
        if current {
            metrics::gauge!(REVOCATION_MIRROR_LAST_RESYNC).set(unix_now());
        } else {
            metrics::counter!(REVOCATION_MIRROR_DISCONNECTS).increment(1);
        }
    }
    #[cfg(not(feature = "metrics"))]
    let _ = current;
}

/// One JWKS fetch from `uri`, and how it went.
#[cfg(feature = "jwks")]
#[inline]
pub(crate) fn jwks_fetched(uri: &http::Uri, outcome: Result<(), &crate::JwksError>) {
    #[cfg(feature = "metrics")]
    {
        use crate::JwksError;
        // Scheme, host, port and path: enough to tell sources apart, and nothing of a query
        // string or userinfo that might carry a credential.
        let url = crate::keys::remote::shown(uri);
        let label = match outcome {
            Ok(()) => "ok",
            Err(
                JwksError::InvalidUrl(_)
                | JwksError::TlsNeedsClient
                | JwksError::PlainHttp(_)
                | JwksError::Tls(_)
                | JwksError::Config(_),
            ) => "invalid_url",
            // Discovery fails before any JWKS fetch, so this is never counted; named for the
            // match to stay exhaustive.
            Err(JwksError::Discovery(_) | JwksError::IssuerMismatch { .. }) => "discovery",
            Err(JwksError::Unreachable(_)) => "unreachable",
            Err(JwksError::Timeout) => "timeout",
            Err(JwksError::Status(_)) => "status",
            Err(JwksError::TooLarge) => "too_large",
            Err(JwksError::Parse(_)) => "parse",
            Err(JwksError::NoUsableKey) => "no_usable_key",
        };
        metrics::counter!(JWKS_FETCHES, "url" => url.clone(), "outcome" => label).increment(1);
        if outcome.is_ok() {
            metrics::gauge!(JWKS_LAST_SUCCESS, "url" => url).set(unix_now());
        }
    }
    #[cfg(not(feature = "metrics"))]
    let _ = (uri, outcome);
}

/// One answer of the auth service.
#[cfg(feature = "auth")]
#[inline]
pub(crate) fn auth_operation(operation: &'static str, outcome: &'static str) {
    #[cfg(feature = "metrics")]
    {
        metrics::counter!(AUTH_OPERATIONS, "operation" => operation, "outcome" => outcome)
            .increment(1);
        if outcome == "throttled" {
            metrics::counter!(THROTTLE_REFUSALS, "operation" => operation).increment(1);
        }
    }
    #[cfg(not(feature = "metrics"))]
    let _ = (operation, outcome);
}

/// The password hashing queues: how many may wait in `lane`.
#[cfg(feature = "auth")]
#[inline]
pub(crate) fn hash_queue_capacity(lane: &'static str, capacity: usize) {
    #[cfg(feature = "metrics")]
    #[allow(clippy::cast_precision_loss)] // queue lengths are small
    metrics::gauge!(PASSWORD_HASH_QUEUE_CAPACITY, "lane" => lane).set(capacity as f64);
    #[cfg(not(feature = "metrics"))]
    let _ = (lane, capacity);
}

/// One more (`true`) or one fewer hash operation waiting in `lane`.
#[cfg(feature = "auth")]
#[inline]
pub(crate) fn hash_queue(lane: &'static str, entered: bool) {
    #[cfg(feature = "metrics")]
    {
        let gauge = metrics::gauge!(PASSWORD_HASH_QUEUE_DEPTH, "lane" => lane);
        if entered {
            gauge.increment(1.0);
        } else {
            gauge.decrement(1.0);
        }
    }
    #[cfg(not(feature = "metrics"))]
    let _ = (lane, entered);
}

/// When something started, for a histogram of durations; reads no clock without the feature.
#[cfg(feature = "auth")]
#[derive(Debug, Clone, Copy)]
pub(crate) struct Stopwatch {
    #[cfg(feature = "metrics")]
    started: std::time::Instant,
}

#[cfg(feature = "auth")]
#[cfg_attr(not(feature = "metrics"), allow(clippy::unused_self))]
impl Stopwatch {
    #[inline]
    pub(crate) fn start() -> Self {
        Self {
            #[cfg(feature = "metrics")]
            started: std::time::Instant::now(),
        }
    }

    /// A hash operation of `lane` waited from this stopwatch's start until now for its
    /// thread.
    #[inline]
    pub(crate) fn hash_waited(self, lane: &'static str) {
        #[cfg(feature = "metrics")]
        metrics::histogram!(PASSWORD_HASH_WAIT, "lane" => lane)
            .record(self.started.elapsed().as_secs_f64());
        #[cfg(not(feature = "metrics"))]
        let _ = lane;
    }

    /// A hash operation of `lane` ran from this stopwatch's start until now.
    #[inline]
    pub(crate) fn hash_ran(self, lane: &'static str) {
        #[cfg(feature = "metrics")]
        metrics::histogram!(PASSWORD_HASH_DURATION, "lane" => lane)
            .record(self.started.elapsed().as_secs_f64());
        #[cfg(not(feature = "metrics"))]
        let _ = lane;
    }
}

#[cfg(all(test, feature = "metrics"))]
mod tests {
    use crate::AuthError;

    #[test]
    fn every_refusal_reason_has_its_own_counter_and_label() {
        let mut labels = std::collections::HashSet::new();
        for (index, error) in AuthError::ALL.iter().enumerate() {
            // The gate finds a reason's counter at `error as usize`.
            assert_eq!(*error as usize, index, "{error:?}");
            let label = error.kind();
            assert!(labels.insert(label), "{label} twice");
            assert!(label
                .bytes()
                .all(|byte| byte.is_ascii_lowercase() || byte == b'_'));
        }
    }
}
