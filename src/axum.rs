//! axum extractors (feature `axum`).
//!
//! Behind the gate, a handler takes [`Claims<C>`](crate::Claims) (or `Option<Claims<C>>` on an
//! optional path) as an argument. Without claims in the request, the rejection is the gate's
//! own `401` ([`Rejection`]), in the realm of the gate that let the request through (the
//! default realm when no gate did).

use std::convert::Infallible;
use std::sync::Arc;

use axum_core::extract::{FromRequestParts, OptionalFromRequestParts};
use axum_core::response::{IntoResponse, Response};
use http::request::Parts;

use crate::error::{is_grpc, GateRealm, DEFAULT_REALM};
use crate::{AuthError, Claims};

/// The rejection of the [`Claims`] extractor: the request carries no verified claims (no gate
/// in front of the route, or an open or optional path without a token). Answered as the gate
/// answers, in the gate's realm, over gRPC for a gRPC request.
#[derive(Debug, Clone)]
pub struct Rejection {
    error: AuthError,
    realm: Arc<str>,
    grpc: bool,
}

impl Rejection {
    /// Why the request was refused.
    pub fn error(&self) -> AuthError {
        self.error
    }
}

impl IntoResponse for Rejection {
    fn into_response(self) -> Response {
        response(self.error, &self.realm, self.grpc)
    }
}

fn response(error: AuthError, realm: &str, grpc: bool) -> Response {
    let (status, headers, body) = error.render(realm, grpc, None);
    let mut response = Response::new(axum_core::body::Body::from(body));
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}

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
    type Rejection = Rejection;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        if let Some(claims) = parts.extensions.get::<Claims<C>>() {
            return Ok(claims.clone());
        }
        let realm = match parts.extensions.get::<GateRealm>() {
            Some(GateRealm(realm)) => realm.clone(),
            None => Arc::from(DEFAULT_REALM),
        };
        Err(Rejection {
            error: AuthError::MissingCredentials,
            realm,
            grpc: is_grpc(parts.version, &parts.headers),
        })
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

/// The gate's RFC 6750 response in the default realm, for a handler's own refusals (an
/// unknown subject, say). The gate's refusals and the extractor's [`Rejection`] use the
/// verifier's [realm](crate::TokenVerifierBuilder::realm).
impl IntoResponse for AuthError {
    fn into_response(self) -> Response {
        response(self, DEFAULT_REALM, false)
    }
}
