//! The companion auth service (feature `auth`): register, log in, refresh, log out, revoke.
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
//! | `POST /auth/token` | form: `username`, `password` (`grant_type=password` optional), or `grant_type=refresh_token`, `refresh_token`; optional `scope` | `200 {access_token, token_type: "bearer", expires_in, refresh_token, scope?}`, `Cache-Control: no-store` | `400 {"error":"invalid_grant"}`, `400 invalid_scope`, `429` + `Retry-After` |
//! | `POST /auth/logout` | `Authorization: Bearer …` | `200`: every access token of its session (`sid`) and the session's refresh tokens revoked | `401` as the gate |
//! | `POST /auth/logout-all` | `Authorization: Bearer …` | `200`: every token of the user issued until now revoked, every session ended | `401` as the gate |
//! | `POST /auth/revoke` | form: `token`, optional `token_type_hint` (RFC 7009) | `200 {}`: the token's session ended as by logout; the same for an unknown or invalid token, which changes nothing | `422` without `token`, `429` + `Retry-After` |
//!
//! Any other method on these paths is `405` with `Allow: POST`; any other path `404`. A store
//! that fails gives `503` and nothing is acknowledged.
//!
//! # Sessions
//!
//! Each login starts a session: a family of refresh tokens, whose id is the `sid` claim of every
//! access token issued in it. A session ends 30 days after its login (see
//! [`AuthServiceBuilder::session_lifetime`]), keeps only its newest refresh tokens
//! ([`SPENT_TOKENS_KEPT`](crate::store::SPENT_TOKENS_KEPT) spent ones), and may be refreshed at
//! most 10 times a minute by default (`429` beyond). Logging out revokes
//! in the revocation store first and ends the session in the user store second: a `503` from
//! the first step changed nothing, one from the second left every token refused, and the same
//! token may repeat the logout to complete it.
//!
//! With RS*, ES* or EdDSA keys, other services can verify the tokens with the public keys
//! alone: [`AuthService::jwks`] publishes them as a JWKS document, which belongs at the root
//! of the site, [`JWKS_PATH`] (`/.well-known/jwks.json`), rather than under the prefix; see
//! [`JwksService`].
//!
//! # Roles and scopes
//!
//! Users hold roles and scopes in the [user store](crate::store) (granted with
//! [`UserStore::change_grants`]). Access tokens carry
//! the user's roles at the verifier's [roles claim](crate::TokenVerifier::roles_claim) and
//! the granted scopes as `scope`: those the client asked for with the OAuth2 `scope`
//! parameter that the user holds (all of them when it asked for none; one not held is left
//! out, and the response's `scope` says what was granted). A refresh keeps or narrows its
//! session's scopes, never widens them. [`AuthServiceBuilder::extra_claims`] adds claims of
//! the application's own.
//!
//! # Paths
//!
//! The routes live under a prefix, `/auth` unless set with [`AuthServiceBuilder::prefix`]. A request
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
//! the connection's peer: insert a [`ClientAddr`](crate::ClientAddr) into each request's
//! extensions. `X-Forwarded-For` is believed only from the proxies named in
//! [`AuthServiceBuilder::trusted_proxies`]. Without any peer address, logins are throttled
//! per username only and registrations not at all.
//!
//! # Runtime
//!
//! Password hashing runs on a few threads of the service's own (one per concurrent hash), and
//! the stores may use Tokio's blocking pool: the service must be called from within a Tokio
//! runtime.

#[cfg(feature = "swagger-ui")]
mod docs;
pub(crate) mod identity;
#[cfg(feature = "openapi")]
mod openapi;
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

#[cfg(feature = "swagger-ui")]
pub use docs::SwaggerUi;
pub use identity::{MAX_USERNAME_CHARS, RESERVED_USERNAMES};
#[cfg(feature = "openapi")]
pub use openapi::OpenApiService;
pub use password::{
    default_hashing_concurrency, Argon2Hasher, HashError, PasswordHasher, Verdict,
    MAX_PASSWORD_CHARS, MIN_PASSWORD_CHARS,
};
pub use public_keys::{JwksService, JWKS_PATH};
pub use reply::AuthResponse;
pub use request::MAX_BODY_BYTES;
pub use throttle::{LoginThrottle, RegistrationThrottle};
#[cfg(feature = "redis")]
pub use throttle::{RedisThrottle, RedisThrottleBuilder};

use crate::extract::Sources;
use crate::revocation::BoxFuture;
use crate::store::{User, UserStore};
use crate::{BoxError, TokenSources, TokenVerifier};
use password::Passwords;
use routes::Inner;
use throttle::Throttle;
use tokens::{ClaimsHook, TokenIssuer};

/// The prefix the routes live under unless told otherwise.
const DEFAULT_PREFIX: &str = "/auth";
/// How long an access token lives unless told otherwise: 15 minutes.
const DEFAULT_ACCESS_TOKEN_TTL: Duration = Duration::from_secs(15 * 60);
/// How long a refresh token lives unless told otherwise (each use issues a new one): 14 days.
const DEFAULT_REFRESH_TOKEN_TTL: Duration = Duration::from_secs(14 * 24 * 60 * 60);
/// How long a session lasts from its login unless told otherwise, however often it is
/// refreshed: 30 days. Then the user logs in again.
const DEFAULT_SESSION_LIFETIME: Duration = Duration::from_secs(30 * 24 * 60 * 60);
/// How many times a minute one session may be refreshed unless told otherwise: 10. A client
/// refreshes once per access token lifetime (15 minutes by default); a loop is refused.
const DEFAULT_MAX_REFRESHES_PER_MINUTE: u32 = 10;

/// The auth service: a Tower [`Service`] serving register, token, logout, logout-all and
/// revoke.
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
            .field("session_lifetime", &self.inner.issuer.session_lifetime)
            .finish_non_exhaustive()
    }
}

impl AuthService {
    /// An auth service with every default (see [`AuthServiceBuilder`]): the same as
    /// `AuthService::builder(verifier, users).build()`.
    pub fn new(verifier: TokenVerifier, users: impl UserStore) -> Self {
        Self::builder(verifier, users).build()
    }

    /// Starts configuring an auth service issuing tokens that `verifier` accepts, for the
    /// users in `users` (an `Arc` of a store works too, to share one).
    pub fn builder(verifier: TokenVerifier, users: impl UserStore) -> AuthServiceBuilder {
        let max_lifetime = verifier.validation().max_lifetime;
        let access_ttl = max_lifetime.map_or(DEFAULT_ACCESS_TOKEN_TTL, |max| {
            DEFAULT_ACCESS_TOKEN_TTL.min(max)
        });
        AuthServiceBuilder {
            verifier,
            users: Arc::new(users),
            prefix: DEFAULT_PREFIX.to_owned(),
            access_ttl,
            refresh_ttl: DEFAULT_REFRESH_TOKEN_TTL,
            session_lifetime: DEFAULT_SESSION_LIFETIME,
            max_refreshes_per_minute: DEFAULT_MAX_REFRESHES_PER_MINUTE,
            hasher: Arc::new(Argon2Hasher::default()),
            hashing_concurrency: password::default_hashing_concurrency(),
            low_priority: false,
            login_throttle: LoginThrottle::default(),
            registration_throttle: RegistrationThrottle::default(),
            #[cfg(feature = "redis")]
            shared_throttle: None,
            trusted_proxies: Vec::new(),
            token_sources: TokenSources::default(),
            claims_hook: None,
        }
    }

    /// A service publishing the public keys this service signs with, as a JWKS document to
    /// route [`JWKS_PATH`] to; see [`JwksService`]. It follows the same shared
    /// [`Keys`](crate::Keys), so a key added or activated later is published at once.
    pub fn jwks(&self) -> JwksService {
        JwksService::new(self.inner.issuer.verifier.keys().clone())
    }

    /// The OpenAPI 3.1 document of this service's routes, under its prefix (feature
    /// `openapi`): the request bodies and forms, every status each route can answer with
    /// its body and headers, and the bearer security scheme of the logouts. Serve it with
    /// [`OpenApiService`], on its own or merged into your application's document
    /// ([`OpenApi::merge`](utoipa::openapi::OpenApi::merge)); see `docs/openapi.md`.
    ///
    /// ```
    /// use jwt_gate::service::AuthService;
    /// use jwt_gate::store::MemoryUserStore;
    /// use jwt_gate::{Keys, TokenVerifier};
    ///
    /// let verifier = TokenVerifier::new(Keys::hs256(b"an example secret of 32 bytes!!!").unwrap());
    /// let auth = AuthService::builder(verifier, MemoryUserStore::new()).prefix("/api/auth").build();
    /// let document = auth.openapi();
    /// assert!(document.paths.paths.contains_key("/api/auth/token"));
    /// ```
    #[cfg(feature = "openapi")]
    pub fn openapi(&self) -> utoipa::openapi::OpenApi {
        openapi::auth_document(&self.inner.prefix, &self.inner.token_sources)
    }
}

/// Configures an [`AuthService`]; made by [`AuthService::builder`].
///
/// | setting | default |
/// | --- | --- |
/// | [`prefix`](Self::prefix) | `/auth` |
/// | [`access_token_ttl`](Self::access_token_ttl) | 15 minutes (or the verifier's `max_lifetime`, if shorter) |
/// | [`refresh_token_ttl`](Self::refresh_token_ttl) | 14 days |
/// | [`password_hasher`](Self::password_hasher) | [`Argon2Hasher::default`] |
/// | [`hashing_concurrency`](Self::hashing_concurrency) | [`default_hashing_concurrency`]: every core but one |
/// | [`hash_at_low_priority`](Self::hash_at_low_priority) | off |
/// | [`login_throttle`](Self::login_throttle) | [`LoginThrottle::default`] |
/// | [`registration_throttle`](Self::registration_throttle) | [`RegistrationThrottle::default`] |
/// | `shared_throttle` (feature `redis`) | none: counts kept in this process |
/// | [`trusted_proxies`](Self::trusted_proxies) | none |
/// | [`token_sources`](Self::token_sources) | `Authorization: Bearer` only |
/// | [`extra_claims`](Self::extra_claims) | none: tokens carry only the service's claims |
///
/// ```
/// use std::time::Duration;
/// use jwt_gate::service::AuthService;
/// use jwt_gate::store::MemoryUserStore;
/// use jwt_gate::{Keys, TokenVerifier};
///
/// let verifier = TokenVerifier::new(Keys::hs256(b"an example secret of 32 bytes!!!").unwrap());
/// let auth = AuthService::builder(verifier, MemoryUserStore::new())
///     .prefix("/api/auth")
///     .access_token_ttl(Duration::from_secs(10 * 60))
///     .hashing_concurrency(2)
///     .build();
/// ```
pub struct AuthServiceBuilder {
    verifier: TokenVerifier,
    users: Arc<dyn UserStore>,
    prefix: String,
    access_ttl: Duration,
    refresh_ttl: Duration,
    session_lifetime: Duration,
    max_refreshes_per_minute: u32,
    hasher: Arc<dyn PasswordHasher>,
    hashing_concurrency: usize,
    low_priority: bool,
    login_throttle: LoginThrottle,
    registration_throttle: RegistrationThrottle,
    #[cfg(feature = "redis")]
    shared_throttle: Option<RedisThrottle>,
    trusted_proxies: Vec<IpAddr>,
    token_sources: TokenSources,
    claims_hook: Option<ClaimsHook>,
}

impl std::fmt::Debug for AuthServiceBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthServiceBuilder")
            .field("prefix", &self.prefix)
            .field("access_token_ttl", &self.access_ttl)
            .field("refresh_token_ttl", &self.refresh_ttl)
            .field("session_lifetime", &self.session_lifetime)
            .field("max_refreshes_per_minute", &self.max_refreshes_per_minute)
            .field("hashing_concurrency", &self.hashing_concurrency)
            .field("low_priority", &self.low_priority)
            .field("login_throttle", &self.login_throttle)
            .field("registration_throttle", &self.registration_throttle)
            .field("trusted_proxies", &self.trusted_proxies)
            .field("token_sources", &self.token_sources)
            .field("extra_claims", &self.claims_hook.is_some())
            .finish_non_exhaustive()
    }
}

impl AuthServiceBuilder {
    /// Serves the routes under `prefix` (default `/auth`; `""` for none).
    ///
    /// # Panics
    ///
    /// If `prefix` is neither empty nor starts with `/`: prefixes are configuration.
    #[must_use]
    pub fn prefix(mut self, prefix: &str) -> Self {
        let prefix = prefix.trim_end_matches('/');
        assert!(
            prefix.is_empty() || prefix.starts_with('/'),
            "a prefix starts with '/'"
        );
        self.prefix = prefix.to_owned();
        self
    }

    /// How long access tokens live (default 15 minutes).
    ///
    /// # Panics
    ///
    /// If `ttl` is zero or longer than the verifier's `max_lifetime`: such tokens would
    /// be refused by the very gates they are for.
    #[must_use]
    pub fn access_token_ttl(mut self, ttl: Duration) -> Self {
        assert!(
            ttl.as_secs() > 0,
            "an access token must live at least a second"
        );
        let max = self.verifier.validation().max_lifetime;
        assert!(
            max.is_none_or(|max| ttl <= max),
            "the access token lifetime exceeds the verifier's max_lifetime"
        );
        self.access_ttl = ttl;
        self
    }

    /// How long each refresh token lives (default 14 days; every use issues a new one).
    #[must_use]
    pub fn refresh_token_ttl(mut self, ttl: Duration) -> Self {
        self.refresh_ttl = ttl;
        self
    }

    /// How long a session lasts from its login (default 30
    /// days): no refresh token of it works afterwards, however recently it was issued.
    ///
    /// # Panics
    ///
    /// If `lifetime` is under a second: sessions are configuration.
    #[must_use]
    pub fn session_lifetime(mut self, lifetime: Duration) -> Self {
        assert!(
            lifetime.as_secs() > 0,
            "a session must last at least a second"
        );
        self.session_lifetime = lifetime;
        self
    }

    /// How many times a minute one session may be refreshed (default
    /// 10). Beyond it the token endpoint answers `429` with
    /// `Retry-After` and changes nothing: the presented refresh token still works once the
    /// minute is over. The count is kept by the store, so a fleet shares it.
    ///
    /// # Panics
    ///
    /// If `refreshes` is zero: a session that can never be refreshed is a configuration error.
    #[must_use]
    pub fn max_refreshes_per_minute(mut self, refreshes: u32) -> Self {
        assert!(
            refreshes > 0,
            "a session must be refreshable at least once a minute"
        );
        self.max_refreshes_per_minute = refreshes;
        self
    }

    /// Hashes and verifies passwords with `hasher` (default [`Argon2Hasher::default`]).
    #[must_use]
    pub fn password_hasher(mut self, hasher: impl PasswordHasher) -> Self {
        self.hasher = Arc::new(hasher);
        self
    }

    /// Runs at most `hashes` password hashes at once (at least 1), each on a thread of its
    /// own; more wait in a bounded queue, and past it get `503` with `Retry-After`. The
    /// default, every core but one, keeps a core serving other requests however many logins
    /// arrive at once. Registrations queue apart from logins and hash on at most `hashes - 1`
    /// threads (one when `hashes` is 1), so a flood of sign-ups never fills the logins' queue.
    #[must_use]
    pub fn hashing_concurrency(mut self, hashes: usize) -> Self {
        self.hashing_concurrency = hashes;
        self
    }

    /// Hashes passwords on threads the operating system schedules after everything else
    /// (`SCHED_IDLE` on Linux, preempted whenever other work wakes; about nice 10 elsewhere),
    /// so that during a burst of logins the gate and the other
    /// routes keep their latency while logins take longer. Off by default; the demo server
    /// turns it on. Where the OS refuses, hashing runs at normal priority.
    ///
    /// The price: a `SCHED_IDLE` thread gets almost no CPU while other processes keep every
    /// core busy, so on a host shared with CPU-bound work logins slow down by as much as that
    /// work takes, and once the hashing queue is full they are answered `503` with
    /// `Retry-After`. Leave it off on such a host.
    #[must_use]
    pub fn hash_at_low_priority(mut self) -> Self {
        self.low_priority = true;
        self
    }

    /// Throttles failed logins by `policy` (default [`LoginThrottle::default`]).
    ///
    /// # Panics
    ///
    /// If `policy.capacity` is 0: a table with no room would forget every count.
    #[must_use]
    pub fn login_throttle(mut self, policy: LoginThrottle) -> Self {
        assert!(
            policy.capacity > 0,
            "a login throttle needs room for at least one entry (capacity 0)"
        );
        self.login_throttle = policy;
        self
    }

    /// Throttles registrations per client address by `policy` (default
    /// [`RegistrationThrottle::default`]).
    ///
    /// # Panics
    ///
    /// If `policy.capacity` is 0: a table with no room would forget every count.
    #[must_use]
    pub fn registration_throttle(mut self, policy: RegistrationThrottle) -> Self {
        assert!(
            policy.capacity > 0,
            "a registration throttle needs room for at least one entry (capacity 0)"
        );
        self.registration_throttle = policy;
        self
    }

    /// Keeps the login and registration counts in Redis (feature `redis`), shared by every
    /// service given the same server and prefix, instead of in this process; see
    /// [`RedisThrottle`] for what happens when Redis cannot be reached. The policies stay
    /// those of [`login_throttle`](Self::login_throttle) and
    /// [`registration_throttle`](Self::registration_throttle), which every service of the
    /// fleet should set alike.
    #[cfg(feature = "redis")]
    #[must_use]
    pub fn shared_throttle(mut self, throttle: RedisThrottle) -> Self {
        self.shared_throttle = Some(throttle);
        self
    }

    /// Where logout reads the access token: give it the gate's
    /// [`token_sources`](crate::JwtAuthLayer::token_sources), so a browser whose token is an
    /// `HttpOnly` cookie can log out with the cookie, under the same cross-site rule as the
    /// gate's (an unsafe request carrying only the cookie must come from the site's own
    /// origin or a trusted one; otherwise `403 cross_site_request`, and nothing is revoked).
    /// Default: `Authorization: Bearer` only.
    ///
    /// ```
    /// use jwt_gate::service::AuthService;
    /// use jwt_gate::store::MemoryUserStore;
    /// use jwt_gate::{JwtAuthLayer, Keys, TokenSources, TokenVerifier};
    ///
    /// let keys = Keys::hs256(b"an example secret of 32 bytes!!!").unwrap();
    /// let verifier = TokenVerifier::new(keys);
    /// let sources = TokenSources {
    ///     cookie: Some("__Host-access_token".to_owned()),
    ///     ..TokenSources::default()
    /// };
    /// let auth = AuthService::builder(verifier.clone(), MemoryUserStore::new())
    ///     .token_sources(sources.clone())
    ///     .build();
    /// let gate = JwtAuthLayer::new(verifier).token_sources(sources).open_prefix("/auth");
    /// ```
    ///
    /// # Panics
    ///
    /// When [`TokenSources::check`] refuses `sources`, with its message, as the gate does.
    #[must_use]
    pub fn token_sources(mut self, sources: TokenSources) -> Self {
        if let Err(error) = sources.check() {
            panic!("{error}");
        }
        self.token_sources = sources;
        self
    }

    /// Believes `X-Forwarded-For` on connections from these proxies (default: none). An
    /// IPv4-mapped address (`::ffff:10.0.0.5`) names the IPv4 proxy (`10.0.0.5`), as a
    /// dual-stack listener shows it.
    #[must_use]
    pub fn trusted_proxies(mut self, proxies: impl IntoIterator<Item = IpAddr>) -> Self {
        // Peers and forwarded hops are compared in canonical form.
        self.trusted_proxies = proxies
            .into_iter()
            .map(|proxy| proxy.to_canonical())
            .collect();
        self
    }

    /// Adds the claims `hook` returns for a user to every access token issued to them, at
    /// login and at each refresh (default: none). With it, `AuthService` mints tokens for a
    /// gate whose own claims type has required fields: return that type (or any value that
    /// serializes as a JSON object; `()` adds nothing) and its fields sit beside the
    /// registered claims, where `Claims<C>` reads them.
    ///
    /// The claims the service sets itself cannot be replaced: `sub`, `exp`, `iat`, `nbf`,
    /// `jti`, `sid`, `iss`, `aud`, `scope`, `scp` and the first segment of the verifier's
    /// roles claim. A hook returning one of them, or a value that is not an object, is a
    /// configuration error: the login or refresh is answered `500 server_error` (and logged),
    /// and nothing is issued.
    ///
    /// ```
    /// use jwt_gate::service::AuthService;
    /// use jwt_gate::store::MemoryUserStore;
    /// use jwt_gate::{Keys, TokenVerifier};
    /// use serde::Serialize;
    ///
    /// #[derive(Serialize)]
    /// struct Tenant {
    ///     tenant: String,
    /// }
    ///
    /// let verifier = TokenVerifier::new(Keys::hs256(b"an example secret of 32 bytes!!!").unwrap());
    /// let auth = AuthService::builder(verifier, MemoryUserStore::new())
    ///     .extra_claims(|user| Tenant {
    ///         tenant: user.email.rsplit('@').next().unwrap_or_default().to_owned(),
    ///     })
    ///     .build();
    /// ```
    #[must_use]
    pub fn extra_claims<T, F>(mut self, hook: F) -> Self
    where
        F: Fn(&User) -> T + Send + Sync + 'static,
        T: serde::Serialize,
    {
        self.claims_hook = Some(Arc::new(move |user: &User| {
            match serde_json::to_value(hook(user)) {
                Ok(serde_json::Value::Object(claims)) => Ok(claims),
                Ok(serde_json::Value::Null) => Ok(serde_json::Map::new()),
                Ok(_) => Err("returned a value that is not a JSON object".to_owned()),
                Err(error) => Err(format!("returned claims that do not serialize: {error}")),
            }
        }));
        self
    }

    fn throttle(&self) -> Throttle {
        let throttle = Throttle::new(&self.login_throttle, &self.registration_throttle);
        #[cfg(feature = "redis")]
        if let Some(shared) = &self.shared_throttle {
            return throttle.shared(shared.clone());
        }
        throttle
    }

    /// The service. Starts its password-hashing threads, once, and makes the dummy hash that
    /// unknown users' logins are checked against.
    pub fn build(self) -> AuthService {
        let throttle = self.throttle();
        AuthService {
            inner: Arc::new(Inner {
                prefix: self.prefix,
                issuer: TokenIssuer {
                    verifier: self.verifier,
                    access_ttl: self.access_ttl,
                    refresh_ttl: self.refresh_ttl,
                    session_lifetime: self.session_lifetime,
                    max_rotations_per_minute: self.max_refreshes_per_minute,
                    claims_hook: self.claims_hook,
                },
                users: self.users,
                passwords: Passwords::new(self.hasher, self.hashing_concurrency, self.low_priority),
                throttle,
                trusted_proxies: self.trusted_proxies,
                token_sources: Sources::compile(&self.token_sources)
                    .expect("checked when they were given"),
            }),
        }
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
