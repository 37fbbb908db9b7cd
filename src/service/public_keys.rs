//! Publishing the public keys as a JWKS document, for gates elsewhere to verify with.

use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderValue, ALLOW, CACHE_CONTROL, CONTENT_TYPE};
use http::{Method, Response, StatusCode};
use http_body_util::Full;

use super::AuthResponse;
use crate::Keys;

/// Where a JWKS document is published by convention (RFC 8414 §2, `jwks_uri`).
pub const JWKS_PATH: &str = "/.well-known/jwks.json";

/// How long caches may keep the document unless told otherwise: 5 minutes.
const DEFAULT_JWKS_MAX_AGE: Duration = Duration::from_secs(5 * 60);

/// Answers `GET` (and `HEAD`) with the public half of a key set, as [`Keys::jwks`] gives
/// it: `200`, `Content-Type: application/json`, `Cache-Control: public, max-age=…`. Any other
/// method is `405` with `Allow: GET, HEAD`.
///
/// The service answers whatever path it is given: route [`JWKS_PATH`] to it, outside or open
/// on the gate (public keys are public). The document is made from the keys at each request,
/// so [`Keys::add`] and [`Keys::activate`] show at once; callers and caches may keep it for
/// `max_age`, so add a new key at least that long before activating it, and a gate following
/// the document (`RemoteJwks`, feature `jwks`) will know the key before its first token.
///
/// An HMAC key set publishes an empty set: a secret is never written out.
///
/// In an axum application, beside the auth service (whose [`jwks`](super::AuthService::jwks)
/// publishes the keys it signs with):
///
/// ```
/// use axum::{routing::get, Router};
/// use jwt_gate::service::{AuthService, JWKS_PATH};
/// use jwt_gate::store::MemoryUserStore;
/// use jwt_gate::{Algorithm, Claims, JwtAuthLayer, Key, Keys, TokenVerifier};
///
/// let pem = b"-----BEGIN PRIVATE KEY-----
/// MC4CAQAwBQYDK2VwBCIEIHvs2LMA78bxHuCZr8W+qMK7cZ7VU8RxzFCHEUxdYKAJ
/// -----END PRIVATE KEY-----";
/// let keys = Keys::new(Key::from_private_pem(Algorithm::EdDSA, pem)?.with_kid("2026-11"))?;
/// let verifier = TokenVerifier::new(keys);
/// let auth = AuthService::new(verifier.clone(), MemoryUserStore::new());
///
/// let app: Router = Router::new()
///     .route("/me", get(|claims: Claims| async move { claims.sub }))
///     .route_service(JWKS_PATH, auth.jwks())
///     .nest_service("/auth", auth)
///     .layer(JwtAuthLayer::new(verifier).open_prefix("/auth").open_path(JWKS_PATH));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// Under plain hyper, or anywhere else, call it for that one path:
///
/// ```
/// use std::time::Duration;
/// use http_body_util::BodyExt as _;
/// use jwt_gate::service::{JwksService, JWKS_PATH};
/// use jwt_gate::Keys;
/// use tower::ServiceExt as _;
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let hmac = Keys::hs256(b"an example secret of 32 bytes!!!").unwrap();
/// let jwks = JwksService::new(hmac).max_age(Duration::from_secs(60));
/// let request = http::Request::get(JWKS_PATH).body(http_body_util::Empty::<bytes::Bytes>::new()).unwrap();
/// let response = jwks.oneshot(request).await.unwrap();
/// assert_eq!(response.headers()["cache-control"], "public, max-age=60");
/// let body = response.into_body().collect().await.unwrap().to_bytes();
/// assert_eq!(body, r#"{"keys":[]}"#, "an HMAC secret is never published");
/// # });
/// ```
#[derive(Debug, Clone)]
pub struct JwksService {
    keys: Keys,
    cache_control: HeaderValue,
}

impl JwksService {
    /// Publishes the public keys of `keys` (the same, shared, value the issuer signs with),
    /// cacheable for 5 minutes.
    pub fn new(keys: Keys) -> Self {
        Self {
            keys,
            cache_control: cache_control(DEFAULT_JWKS_MAX_AGE),
        }
    }

    /// How long callers and caches may keep the document (whole seconds).
    #[must_use]
    pub fn max_age(mut self, max_age: Duration) -> Self {
        self.cache_control = cache_control(max_age);
        self
    }

    /// The OpenAPI document of this one route, at `path` (feature `openapi`): merge it into
    /// the auth service's where you route [`JWKS_PATH`] to a `JwksService`.
    ///
    /// ```
    /// use jwt_gate::service::{AuthService, JwksService, JWKS_PATH};
    /// use jwt_gate::store::MemoryUserStore;
    /// use jwt_gate::{Keys, TokenVerifier};
    ///
    /// let verifier = TokenVerifier::new(Keys::hs256(b"an example secret of 32 bytes!!!").unwrap());
    /// let auth = AuthService::new(verifier, MemoryUserStore::new());
    /// let mut document = auth.openapi();
    /// document.merge(JwksService::openapi(JWKS_PATH));
    /// assert!(document.paths.paths.contains_key(JWKS_PATH));
    /// ```
    #[cfg(feature = "openapi")]
    pub fn openapi(path: &str) -> utoipa::openapi::OpenApi {
        super::openapi::jwks_document(path)
    }

    fn respond(&self) -> AuthResponse {
        let document = match serde_json::to_vec(&self.keys.jwks()) {
            Ok(document) => document,
            Err(error) => {
                tracing::error!(%error, "the JWKS document could not be written");
                let mut response = Response::new(Full::default());
                *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
                return response;
            }
        };
        let mut response = Response::new(Full::new(Bytes::from(document)));
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(CACHE_CONTROL, self.cache_control.clone());
        response
    }
}

/// Implements `Service` for a type whose answer to `GET` and `HEAD` is ready at once, made
/// by `$answer` from the service and the request's path; any other method is `405` with
/// `Allow: GET, HEAD`. The services here that publish a document.
macro_rules! publishing_service {
    ($type:ty, |$service:ident, $path:ident| $answer:expr) => {
        impl<B> tower_service::Service<http::Request<B>> for $type {
            type Response = $crate::service::AuthResponse;
            type Error = std::convert::Infallible;
            type Future = std::future::Ready<Result<Self::Response, std::convert::Infallible>>;

            fn poll_ready(
                &mut self,
                _cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<Result<(), std::convert::Infallible>> {
                std::task::Poll::Ready(Ok(()))
            }

            fn call(&mut self, request: http::Request<B>) -> Self::Future {
                let $service = &*self;
                let $path = request.uri().path();
                let response = $crate::service::public_keys::refuse_unless_get(request.method())
                    .unwrap_or_else(|| $answer);
                std::future::ready(Ok(response))
            }
        }
    };
}
// Used beyond this file only by the `openapi` feature's services.
#[cfg_attr(not(feature = "openapi"), allow(unused_imports))]
pub(super) use publishing_service;

/// `405` with `Allow: GET, HEAD` for any other method than those two.
pub(super) fn refuse_unless_get(method: &Method) -> Option<AuthResponse> {
    if method == Method::GET || method == Method::HEAD {
        return None;
    }
    let mut response = Response::new(Full::new(Bytes::from_static(
        br#"{"error":"method_not_allowed"}"#,
    )));
    *response.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
    let headers = response.headers_mut();
    headers.insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Some(response)
}

fn cache_control(max_age: Duration) -> HeaderValue {
    HeaderValue::from_str(&format!("public, max-age={}", max_age.as_secs()))
        .expect("digits are a valid header value")
}

publishing_service!(JwksService, |jwks, _path| jwks.respond());
