//! axum extractors (feature `axum`).
//!
//! Behind the gate, a handler takes [`Claims<C>`](crate::Claims) (or `Option<Claims<C>>` on an
//! optional path) as an argument. Without claims in the request, the rejection is the gate's
//! own `401` with `WWW-Authenticate: Bearer realm="jwt-gate"`.

use std::convert::Infallible;

use axum_core::extract::{FromRequestParts, OptionalFromRequestParts};
use axum_core::response::{IntoResponse, Response};
use http::request::Parts;

use crate::layer::DEFAULT_REALM;
use crate::{AuthError, Claims};

/// ```
/// use axum::{routing::get, Router};
/// use jwt_gate::{Claims, JwtAuthLayer, Keys};
///
/// #[derive(Clone, serde::Deserialize)]
/// struct Roles { roles: Vec<String> }
///
/// async fn admin(claims: Claims<Roles>) -> String {
///     format!("{} has roles {:?}", claims.sub, claims.extra.roles)
/// }
///
/// let keys = Keys::hs256(b"an example secret of 32 bytes!!!").unwrap();
/// let verifier = jwt_gate::TokenVerifier::builder(keys).claims::<Roles>().build();
/// let app: Router = Router::new().route("/admin", get(admin)).layer(JwtAuthLayer::new(verifier));
/// ```
impl<S, C> FromRequestParts<S> for Claims<C>
where
    S: Send + Sync,
    C: Clone + Send + Sync + 'static,
{
    type Rejection = AuthError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Claims<C>>()
            .cloned()
            .ok_or(AuthError::MissingCredentials)
    }
}

/// `Option<Claims<C>>`: `None` on an optional path when no token was sent.
impl<S, C> OptionalFromRequestParts<S> for Claims<C>
where
    S: Send + Sync,
    C: Clone + Send + Sync + 'static,
{
    type Rejection = Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        _state: &S,
    ) -> Result<Option<Self>, Self::Rejection> {
        Ok(parts.extensions.get::<Claims<C>>().cloned())
    }
}

/// The gate's RFC 6750 response, with the default realm.
impl IntoResponse for AuthError {
    fn into_response(self) -> Response {
        let mut headers = http::HeaderMap::new();
        let body = self.http_parts(DEFAULT_REALM, &mut headers);
        let mut response = Response::new(axum_core::body::Body::from(body));
        *response.status_mut() = self.status();
        *response.headers_mut() = headers;
        response
    }
}
