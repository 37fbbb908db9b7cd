//! The companion auth service (feature `auth`): register, log in, refresh, log out.
//!
//! [`AuthService`] is a Tower [`Service`] for any `http::Request<B>` whose body yields
//! [`Bytes`], answering [`AuthResponse`]s (`Response<Full<Bytes>>`), so it runs under plain
//! hyper, inside an axum `Router` (`nest_service`) or beside a tonic server. It shares its
//! [`TokenVerifier`] (keys, policy, revocation store, clock) with the gates in front of the
//! application: a token it issues is accepted by every such gate, and a token it revokes
//! is refused by all of them.
//!
//! | route | request | success | failures |
//! | --- | --- | --- | --- |
//! | `POST /auth/register` | JSON `{username, email, password}` | `201 {username, email}` | `409` taken, `422` naming the field, `413`, `415` |
//! | `POST /auth/token` | form: `username`, `password` (`grant_type=password` optional), or `grant_type=refresh_token`, `refresh_token` | `200 {access_token, token_type: "bearer", expires_in, refresh_token}`, `Cache-Control: no-store` | `400 {"error":"invalid_grant"}`, `429` + `Retry-After` |
//! | `POST /auth/logout` | `Authorization: Bearer …` | `200`: that token and its session's refresh tokens revoked | `401` as the gate |
//! | `POST /auth/logout-all` | `Authorization: Bearer …` | `200`: every token of the user issued until now revoked, every session ended | `401` as the gate |
//!
//! Any other method on these paths is `405` with `Allow: POST`; any other path `404`. A store
//! that fails gives `503` and nothing is acknowledged.
//!
//! With RS*, ES* or EdDSA keys, other services can verify the tokens with the public keys
//! alone: [`AuthService::jwks`] publishes them as a JWKS document, which belongs at the root
//! of the site, [`JWKS_PATH`] (`/.well-known/jwks.json`), rather than under the prefix; see
//! [`JwksService`].
//!
//! # Paths
//!
//! The routes live under a prefix, `/auth` unless set with [`AuthService::prefix`]. A request
//! whose path does not start with the prefix is routed as if the prefix had already been
//! removed, which is what axum's `nest_service("/auth", …)` does: so the same service answers
//! `/auth/token` when it receives whole paths and `/token` when mounted by axum.
//!
//! # Usernames, emails, passwords
//!
//! Usernames are 1 to 64 characters (after NFKC), Unicode letters and digits plus `.`, `_`
//! and `-`; two usernames are one account when they are equal after NFKC and Unicode case
//! folding (`Alice`, `ALICE` and full-width `ａｌｉｃｅ` are all `alice`). Emails must look like
//! `name@example.com`. Passwords are 8 to 1024 characters, counted in characters and never
//! truncated, hashed with argon2id ([`Argon2Hasher`]).
//!
//! # Bodies
//!
//! Bodies are capped at 16 KiB (`413`), counted as they arrive. JSON bodies with unknown or
//! duplicate fields are refused with `422`; forms ignore unknown fields (OAuth clients send
//! `scope` and `client_id`) and refuse duplicates.
//!
//! # Client addresses
//!
//! Logins are throttled per (username, client address), per username and per address
//! ([`LoginThrottle`]); registrations per address ([`RegistrationThrottle`]). The address is
//! the connection's peer: insert a [`ClientAddr`] into each request's extensions (axum's
//! `ConnectInfo<SocketAddr>` is read too, with the `axum` feature). `X-Forwarded-For` is
//! believed only from the proxies named in [`AuthService::trusted_proxies`]. Without any peer
//! address, logins are throttled per username only and registrations not at all.
//!
//! # Runtime
//!
//! Password hashing runs on a few threads of the service's own (one per concurrent hash), and
//! the stores may use Tokio's blocking pool: the service must be called from within a Tokio
//! runtime.

pub(crate) mod identity;
mod password;
mod public_keys;
mod reply;
mod request;
mod routes;
mod throttle;
mod tokens;

use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body::Body;
use tower_service::Service;

pub use identity::{MAX_USERNAME_CHARS, RESERVED_USERNAMES};
pub use password::{
    default_hashing_concurrency, Argon2Hasher, HashError, PasswordHasher, Verdict,
    MAX_PASSWORD_CHARS, MIN_PASSWORD_CHARS,
};
pub use public_keys::{JwksService, DEFAULT_JWKS_MAX_AGE, JWKS_PATH};
pub use reply::AuthResponse;
pub use request::{BoxError, MAX_BODY_BYTES};
pub use throttle::{ClientAddr, LoginThrottle, RegistrationThrottle};
#[cfg(feature = "redis")]
pub use throttle::{RedisThrottle, RedisThrottleBuilder};

use crate::revocation::BoxFuture;
use crate::store::UserStore;
use crate::TokenVerifier;
use password::Passwords;
use routes::Inner;
use throttle::Throttle;
use tokens::TokenIssuer;

/// The prefix the routes live under unless told otherwise.
pub const DEFAULT_PREFIX: &str = "/auth";
/// How long an access token lives unless told otherwise: 15 minutes.
pub const DEFAULT_ACCESS_TOKEN_TTL: Duration = Duration::from_secs(15 * 60);
/// How long a refresh token lives unless told otherwise (each use issues a new one): 14 days.
pub const DEFAULT_REFRESH_TOKEN_TTL: Duration = Duration::from_secs(14 * 24 * 60 * 60);

/// The auth service: a Tower [`Service`] serving register, token, logout and logout-all.
/// See the [module documentation](self) for the routes.
///
/// ```
/// use axum::{routing::get, Router};
/// use jwt_gate::service::AuthService;
/// use jwt_gate::store::MemoryUserStore;
/// use jwt_gate::{Claims, JwtAuthLayer, Keys, TokenVerifier};
///
/// let keys = Keys::hs256(b"an example secret of 32 bytes!!!").unwrap();
/// let verifier = TokenVerifier::new(keys);
///
/// let auth = AuthService::new(verifier.clone(), MemoryUserStore::new());
/// let app: Router = Router::new()
///     .route("/me", get(|claims: Claims| async move { claims.sub }))
///     .nest_service("/auth", auth)
///     .layer(JwtAuthLayer::new(verifier).open_prefix("/auth"));
/// ```
#[derive(Clone)]
pub struct AuthService {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for AuthService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthService")
            .field("prefix", &self.inner.prefix)
            .field("access_token_ttl", &self.inner.issuer.access_ttl)
            .field("refresh_token_ttl", &self.inner.issuer.refresh_ttl)
            .finish_non_exhaustive()
    }
}

impl AuthService {
    /// An auth service issuing tokens that `verifier` accepts, for the users in `users`,
    /// with the defaults: prefix `/auth`, 15-minute access tokens, 14-day refresh tokens,
    /// argon2id with the minimum parameters, [`LoginThrottle::default`].
    pub fn new(verifier: TokenVerifier, users: impl UserStore) -> Self {
        Self::build(verifier, Arc::new(users))
    }

    /// As [`new`](Self::new), with a store already shared.
    pub fn with_shared_store(verifier: TokenVerifier, users: Arc<dyn UserStore>) -> Self {
        Self::build(verifier, users)
    }

    fn build(verifier: TokenVerifier, users: Arc<dyn UserStore>) -> Self {
        let max_lifetime = verifier.validation().max_lifetime;
        let access_ttl = max_lifetime.map_or(DEFAULT_ACCESS_TOKEN_TTL, |max| {
            DEFAULT_ACCESS_TOKEN_TTL.min(max)
        });
        Self {
            inner: Arc::new(Inner {
                prefix: DEFAULT_PREFIX.to_owned(),
                issuer: TokenIssuer {
                    verifier,
                    access_ttl,
                    refresh_ttl: DEFAULT_REFRESH_TOKEN_TTL,
                },
                users,
                passwords: Passwords::new(
                    Arc::new(Argon2Hasher::default()),
                    password::default_hashing_concurrency(),
                    false,
                ),
                throttle: Throttle::new(LoginThrottle::default(), RegistrationThrottle::default()),
                trusted_proxies: Vec::new(),
            }),
        }
    }

    fn configure(mut self, change: impl FnOnce(&mut Inner)) -> Self {
        let inner =
            Arc::get_mut(&mut self.inner).expect("configure an AuthService before cloning it");
        change(inner);
        self
    }

    /// Serves the routes under `prefix` (default `/auth`; `""` for none).
    ///
    /// # Panics
    ///
    /// If `prefix` is neither empty nor starts with `/`, or after the service was cloned.
    #[must_use]
    pub fn prefix(self, prefix: &str) -> Self {
        let prefix = prefix.trim_end_matches('/');
        assert!(
            prefix.is_empty() || prefix.starts_with('/'),
            "a prefix starts with '/'"
        );
        self.configure(|inner| inner.prefix = prefix.to_owned())
    }

    /// How long access tokens live (default 15 minutes).
    ///
    /// # Panics
    ///
    /// If `ttl` is zero or longer than the verifier's `max_lifetime`: such tokens would
    /// be refused by the very gates they are for.
    #[must_use]
    pub fn access_token_ttl(self, ttl: Duration) -> Self {
        assert!(
            ttl.as_secs() > 0,
            "an access token must live at least a second"
        );
        self.configure(|inner| {
            let max = inner.issuer.verifier.validation().max_lifetime;
            assert!(
                max.is_none_or(|max| ttl <= max),
                "the access token lifetime exceeds the verifier's max_lifetime"
            );
            inner.issuer.access_ttl = ttl;
        })
    }

    /// How long each refresh token lives (default 14 days; every use issues a new one).
    #[must_use]
    pub fn refresh_token_ttl(self, ttl: Duration) -> Self {
        self.configure(|inner| inner.issuer.refresh_ttl = ttl)
    }

    /// Hashes and verifies passwords with `hasher` (default [`Argon2Hasher::default`]).
    #[must_use]
    pub fn password_hasher(self, hasher: impl PasswordHasher) -> Self {
        self.configure(|inner| inner.passwords = inner.passwords.with_hasher(Arc::new(hasher)))
    }

    /// Runs at most `hashes` password hashes at once (at least 1), each on a thread of its
    /// own; more wait in a bounded queue, and past it get `503` with `Retry-After`. The
    /// default, every core but one, keeps a core serving other requests however many logins
    /// arrive at once. Registrations queue apart from logins and hash on at most `hashes - 1`
    /// threads (one when `hashes` is 1), so a flood of sign-ups never fills the logins' queue.
    #[must_use]
    pub fn hashing_concurrency(self, hashes: usize) -> Self {
        self.configure(|inner| inner.passwords = inner.passwords.with_concurrency(hashes))
    }

    /// Hashes passwords on threads the operating system schedules after everything else
    /// (about nice 10 on Linux), so that during a burst of logins the gate and the other
    /// routes keep their latency while logins take longer. Off by default; the demo server
    /// turns it on. Where the OS refuses, hashing runs at normal priority.
    #[must_use]
    pub fn hash_at_low_priority(self) -> Self {
        self.configure(|inner| inner.passwords = inner.passwords.with_low_priority(true))
    }

    /// Throttles failed logins by `policy` (default [`LoginThrottle::default`]).
    ///
    /// # Panics
    ///
    /// If `policy.capacity` is 0, or after the service was cloned.
    #[must_use]
    pub fn login_throttle(self, policy: LoginThrottle) -> Self {
        self.configure(|inner| inner.throttle = inner.throttle.with_login(policy))
    }

    /// Throttles registrations per client address by `policy` (default
    /// [`RegistrationThrottle::default`]).
    ///
    /// # Panics
    ///
    /// If `policy.capacity` is 0, or after the service was cloned.
    #[must_use]
    pub fn registration_throttle(self, policy: RegistrationThrottle) -> Self {
        self.configure(|inner| inner.throttle = inner.throttle.with_registration(policy))
    }

    /// Keeps the login and registration counts in Redis (feature `redis`), shared by every
    /// service given the same server and prefix, instead of in this process; see
    /// [`RedisThrottle`] for what happens when Redis cannot be reached. The policies stay
    /// those of [`login_throttle`](Self::login_throttle) and
    /// [`registration_throttle`](Self::registration_throttle), which every service of the
    /// fleet should set alike.
    ///
    /// # Panics
    ///
    /// After the service was cloned.
    #[cfg(feature = "redis")]
    #[must_use]
    pub fn shared_throttle(self, throttle: RedisThrottle) -> Self {
        self.configure(|inner| inner.throttle = inner.throttle.with_shared(throttle))
    }

    /// A service publishing the public keys this service signs with, as a JWKS document to
    /// route [`JWKS_PATH`] to; see [`JwksService`]. It follows the same shared
    /// [`Keys`](crate::Keys), so a key added or activated later is published at once.
    pub fn jwks(&self) -> JwksService {
        JwksService::new(self.inner.issuer.verifier.keys().clone())
    }

    /// Believes `X-Forwarded-For` on connections from these proxies (default: none).
    #[must_use]
    pub fn trusted_proxies(self, proxies: impl IntoIterator<Item = IpAddr>) -> Self {
        self.configure(|inner| inner.trusted_proxies = proxies.into_iter().collect())
    }
}

impl<B> Service<Request<B>> for AuthService
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = AuthResponse;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<AuthResponse, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let inner = self.inner.clone();
        Box::pin(async move { Ok(inner.answer(request).await) })
    }
}
