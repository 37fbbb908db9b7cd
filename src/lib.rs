//! JWT authentication in front of any Tower service.
//!
//! [`JwtAuthLayer`] reads `Authorization: Bearer <jwt>`, verifies it against [`Keys`] whose
//! algorithm you pinned (never the token's own `alg`), applies a [`Validation`] policy, asks a
//! [`RevocationStore`](revocation::RevocationStore), and only then calls the inner service, with
//! the verified [`Claims`] in the request extensions. Refusals follow RFC 6750 (`401` with
//! `WWW-Authenticate: Bearer …`), or `grpc-status: 16` for gRPC clients: see [`AuthError`].
//!
//! The layer wraps any Tower service: an axum `Router`, a tonic server, a plain hyper
//! service, or a reverse proxy.
//!
//! # A complete program
//!
//! (`examples/quickstart.rs`, also the README's quickstart; needs the `axum` feature.)
//!
//! ```rust,no_run
#![doc = include_str!("../examples/quickstart.rs")]
//! ```
//!
//! # Where things are
//!
//! | concern | item |
//! | --- | --- |
//! | keys, rotation by `kid`, JWKS | [`Key`], [`Keys`] |
//! | the claims handed to your service | [`Claims`] |
//! | the verification policy | [`Validation`], [`TokenVerifier`] |
//! | authorization: scopes, roles, predicates, per route | [`Require`], [`JwtAuthLayer::require_route`], [`RequireLayer`], [`Grants`] |
//! | revocation | [`revocation`] |
//! | the layer | [`JwtAuthLayer`], [`JwtAuth`] |
//! | tokens from a cookie or another header, cross-site check, CORS preflights | [`TokenSources`], [`JwtAuthLayer::token_cookie`], [`JwtAuthLayer::pass_cors_preflight`] |
//! | rejections | [`AuthError`] |
//! | the companion auth service and its user stores | `service`, `store` (feature `auth`) |
//! | metrics, and a Prometheus `/metrics` endpoint | `metrics` (features `metrics`, `prometheus`) |
//! | time, for tests | [`clock`] |
//!
//! # Feature flags
//!
//! | feature | default | adds |
//! | --- | --- | --- |
//! | `rust-crypto` | yes | jsonwebtoken's pure-Rust crypto backend |
//! | `aws-lc-rs` | no | jsonwebtoken's aws-lc-rs backend, 5 to 8 times faster for RS*/ES*; preferred when both are on |
//! | `axum` | no | `Claims<C>` / `Option<Claims<C>>` extractors, `AuthError` as a response |
//! | `redis` | no | `revocation::RedisRevocations`: one revocation list for a fleet |
//! | `jwks` | no | `RemoteJwks`: verification keys that follow a JWKS URL or an issuer's discovery document |
//! | `rustls` | no | `https://` for `RemoteJwks` built in (hyper-rustls, ring, webpki roots); with `gateway`, `https://` upstreams and TLS termination |
//! | `gateway` | no | `gateway`: a reverse proxy behind the gate (HTTP/1.1 and HTTP/2, gRPC, WebSocket), with in-process services mounted at prefixes |
//! | `auth` | no | `service::AuthService` (register, token, refresh, logout), `service::JwksService` (the public keys at `/.well-known/jwks.json`) and `store::MemoryUserStore` |
//! | `sqlite` | no | `store::SqliteUserStore`: users in one SQLite file |
//! | `postgres` | no | `store::PostgresUserStore`: users and sessions in PostgreSQL, for a fleet |
//! | `metrics` | no | what the gate, revocation stores, JWKS source and auth service do, recorded through the `metrics` facade |
//! | `prometheus` | no | `metrics::Prometheus`: a Prometheus recorder and its `/metrics` endpoint on a listener of its own |
//! | `openapi` | no | `service::AuthService::openapi`: the auth service's OpenAPI 3.1 document (utoipa), and `service::OpenApiService` to serve it |
//! | `swagger-ui` | no | `service::SwaggerUi`: a documentation page for it whose files are compiled in (works offline) |
#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod authorize;
#[cfg(feature = "axum")]
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
pub mod axum;
mod cache;
mod claims;
pub mod clock;
mod error;
mod extract;
mod fingerprint;
#[cfg(feature = "gateway")]
#[cfg_attr(docsrs, doc(cfg(feature = "gateway")))]
pub mod gateway;
mod keys;
mod layer;
#[cfg(feature = "metrics")]
#[cfg_attr(docsrs, doc(cfg(feature = "metrics")))]
pub mod metrics;
#[cfg(not(feature = "metrics"))]
mod metrics;
mod paths;
pub mod revocation;
#[cfg(feature = "auth")]
#[cfg_attr(docsrs, doc(cfg(feature = "auth")))]
pub mod service;
#[cfg(feature = "auth")]
#[cfg_attr(docsrs, doc(cfg(feature = "auth")))]
pub mod store;
mod validate;

pub use authorize::{
    ClaimPath, ClaimPathError, Grants, Require, RequireFuture, RequireLayer, RequireService,
};
pub use claims::{Claims, MAX_JTI_LEN};

/// The error type of boxed errors: a request body's, a mounted service's body's.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A boxed, sendable future, as returned by the stores' operations.
pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// The address of the client a request came from: the peer of its connection. Whatever
/// accepts connections inserts it into each request's extensions ([`gateway::serve`] does;
/// with axum, a middleware copying `ConnectInfo<SocketAddr>` does, as the demo shows). The
/// auth service throttles logins by it, and the gateway reports it in `X-Forwarded-For`.
///
/// ```
/// use jwt_gate::ClientAddr;
///
/// let mut request = http::Request::new(());
/// let peer: std::net::SocketAddr = "192.0.2.7:50123".parse().unwrap();
/// request.extensions_mut().insert(ClientAddr(peer));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientAddr(pub std::net::SocketAddr);
pub use error::{AuthError, DEFAULT_REALM};
pub use extract::{SourcesError, TokenSources};
pub use jsonwebtoken::{Algorithm, AlgorithmFamily};
#[cfg(feature = "jwks")]
#[cfg_attr(docsrs, doc(cfg(feature = "jwks")))]
pub use keys::{JwksError, RemoteJwks, RemoteJwksBuilder};
pub use keys::{Key, KeyError, Keys, ACCESS_TOKEN_TYPE};
pub use layer::{JwtAuth, JwtAuthLayer, ResponseBody, ResponseFuture};
pub use paths::Access;
pub use validate::{
    BuildError, TokenVerifier, TokenVerifierBuilder, Validation, DEFAULT_CACHE_BYTES,
    DEFAULT_CACHE_CAPACITY,
};
