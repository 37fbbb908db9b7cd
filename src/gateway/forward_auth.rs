//! Forward-auth: see [`ForwardAuth`].

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderMap, Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::{BodyExt as _, Either, Full};
use hyper::body::Incoming;
use tower_layer::Layer as _;
use tower_service::Service;

use super::identity::{write_identity, ForwardedClaim};
use super::limits::Limits;
use super::router::{self, Mount};
use super::{ClaimMap, LocalBody};
use crate::layer::JwtAuth;
use crate::paths::{is_canonical, is_canonical_method};
use crate::revocation::BoxFuture;
use crate::JwtAuthLayer;

/// The headers that name the original request's URI, in the order they are looked at.
const URI_HEADERS: [&str; 2] = ["x-original-uri", "x-forwarded-uri"];
/// The headers that name the original request's method.
const METHOD_HEADERS: [&str; 2] = ["x-original-method", "x-forwarded-method"];

/// Forward-auth: the gate as a yes/no service for a web server that proxies by itself
/// (nginx `auth_request`, Traefik `ForwardAuth`, Caddy `forward_auth`, Envoy `ext_authz` in
/// HTTP mode).
///
/// The front server asks, for each client request, with a request of its own that carries
/// the client's headers and says what the original request was:
///
/// | header | sent by |
/// | --- | --- |
/// | `X-Original-URI`, `X-Original-Method` | nginx (set with `proxy_set_header`) |
/// | `X-Forwarded-Uri`, `X-Forwarded-Method` | Traefik, Caddy |
///
/// The original request is judged exactly as [`JwtAuthLayer`] judges a request it sees
/// itself: the same path rules on the same canonical paths, the same
/// `TokenVerifier` (cache, revocation), the same rejections. The answer:
///
/// - `200` with `x-auth-sub` (and each [`ForwardedClaim`]) when the token is valid, for the
///   front server to copy upstream (`auth_request_set $sub $upstream_http_x_auth_sub;`); `200`
///   without them on an open path, or on an optional one without a token;
/// - the gate's own `401`/`403` with `WWW-Authenticate` otherwise, which the front server
///   passes to the client;
/// - `400` (`{"error":"invalid_request"}`) when the original method or URI is missing or
///   sent twice, the URI is not an origin-form path, or not in canonical form (`/public/../admin`,
///   `/%6frders`; a method with lower-case letters, `post`): such a request is
///   refused, never judged open, since the front server may read it otherwise. nginx turns a
///   `400` from `auth_request` into a `500` for the client: refused either way.
///
/// ```
/// use jwt_gate::gateway::{ClaimMap, ForwardAuth};
/// use jwt_gate::{JwtAuthLayer, Keys, TokenVerifier};
///
/// let keys = Keys::hs256(b"an example secret of 32 bytes!!!").unwrap();
/// let layer = JwtAuthLayer::new(TokenVerifier::builder(keys).claims::<ClaimMap>().build())
///     .open_path("/health");
/// let forward_auth = ForwardAuth::builder(layer).forward_claim("email").build();
/// ```
#[derive(Clone)]
pub struct ForwardAuth {
    gate: JwtAuth<Identity, ClaimMap>,
    mounts: Arc<[Mount]>,
    limits: Limits,
}

impl std::fmt::Debug for ForwardAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ForwardAuth")
            .field("gate", &self.gate)
            .field("limits", &self.limits)
            .finish()
    }
}

/// Configures a [`ForwardAuth`]; made by [`ForwardAuth::builder`].
#[derive(Debug, Clone)]
pub struct ForwardAuthBuilder {
    layer: JwtAuthLayer<ClaimMap>,
    forwarded: Vec<ForwardedClaim>,
    mounts: Vec<Mount>,
    limits: Limits,
}

impl ForwardAuth {
    /// Starts configuring forward-auth that judges requests as `layer` does.
    pub fn builder(layer: JwtAuthLayer<ClaimMap>) -> ForwardAuthBuilder {
        ForwardAuthBuilder {
            layer,
            forwarded: Vec::new(),
            mounts: Vec::new(),
            limits: Limits::default(),
        }
    }

    /// Serves forward-auth on `listener`, HTTP/1.1 (and HTTP/2 to a client that starts with
    /// its preface; the answer is a plain status either way), with the same bounds as the proxy's
    /// [`serve`](super::serve): at most [`max_connections`](ForwardAuthBuilder::max_connections)
    /// at once, each request head within
    /// [`header_read_timeout`](ForwardAuthBuilder::header_read_timeout).
    ///
    /// ```no_run
    /// use jwt_gate::gateway::{ClaimMap, ForwardAuth};
    /// use jwt_gate::{JwtAuthLayer, Keys, TokenVerifier};
    ///
    /// # async fn run() -> std::io::Result<()> {
    /// let keys = Keys::hs256(b"an example secret of 32 bytes!!!").unwrap();
    /// let layer = JwtAuthLayer::new(TokenVerifier::builder(keys).claims::<ClaimMap>().build());
    /// let listener = tokio::net::TcpListener::bind("127.0.0.1:9000").await?;
    /// ForwardAuth::builder(layer).build().serve(listener).await
    /// # }
    /// ```
    pub async fn serve(self, listener: tokio::net::TcpListener) -> std::io::Result<()> {
        let limits = self.limits;
        super::conn::serve(listener, self, limits, None, std::future::pending()).await
    }
}

impl ForwardAuthBuilder {
    /// Also answers with the claim `name` as `x-auth-<name>`, as
    /// [`GatewayBuilder::forward_claim`](super::GatewayBuilder::forward_claim) does.
    ///
    /// # Panics
    ///
    /// If `x-auth-<name>` is not a valid header name: claim names are configuration.
    #[must_use]
    pub fn forward_claim(self, name: &str) -> Self {
        self.forward(ForwardedClaim::configured(name))
    }

    /// Also answers with `claim` (nested, a header of your choosing, arrays joined).
    #[must_use]
    pub fn forward(mut self, claim: ForwardedClaim) -> Self {
        self.forwarded.push(claim);
        self
    }

    /// As [`GatewayBuilder::header_read_timeout`](super::GatewayBuilder::header_read_timeout)
    /// (default 10 s).
    ///
    /// # Panics
    ///
    /// If `timeout` is zero: limits are configuration.
    #[must_use]
    pub fn header_read_timeout(mut self, timeout: std::time::Duration) -> Self {
        self.limits.set_header_read_timeout(timeout);
        self
    }

    /// As [`GatewayBuilder::max_connections`](super::GatewayBuilder::max_connections)
    /// (default 1024).
    ///
    /// # Panics
    ///
    /// If `connections` is zero: limits are configuration.
    #[must_use]
    pub fn max_connections(mut self, connections: usize) -> Self {
        self.limits.set_max_connections(connections);
        self
    }

    /// As [`GatewayBuilder::connection_admission`](super::GatewayBuilder::connection_admission)
    /// (default: no limit). In front of nginx or another proxy, every connection is the
    /// proxy's: leave it off there.
    #[must_use]
    pub fn connection_admission(mut self, admission: super::ConnectionAdmission) -> Self {
        self.limits.admission = Some(admission);
        self
    }

    /// The service.
    pub fn build(self) -> ForwardAuth {
        ForwardAuth {
            gate: self.layer.layer(Identity {
                forwarded: self.forwarded.into(),
            }),
            mounts: self.mounts.into(),
            limits: self.limits,
        }
    }

    /// Answers every request under `prefix` with `service` instead of a check, as
    /// [`GatewayBuilder::mount`](super::GatewayBuilder::mount) does: typically the auth
    /// service, so that the front server proxies `/auth/` here and logins, logouts and checks
    /// share one revocation list.
    ///
    /// # Panics
    ///
    /// If `prefix` does not start with `/` or is the root: prefixes are configuration.
    #[must_use]
    pub fn mount<S, B>(mut self, prefix: &str, service: S) -> Self
    where
        S: Service<Request<Incoming>, Response = Response<B>, Error = Infallible>
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<crate::BoxError>,
    {
        self.mounts.push(Mount::new(prefix, service));
        self
    }
}

impl Service<Request<Incoming>> for ForwardAuth {
    type Response = Response<LocalBody>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response<LocalBody>, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut request: Request<Incoming>) -> Self::Future {
        if let Some(mount) = router::mounted(&self.mounts, request.uri().path()) {
            let mount = mount.clone();
            // As in the gateway: identity headers only ever come from the gate.
            super::proxy::remove_identity(request.headers_mut());
            return Box::pin(async move {
                let response = mount.call(request).await;
                Ok(response.map(|body| match body {
                    Either::Left(incoming) => incoming.map_err(Into::into).boxed_unsync(),
                    Either::Right(local) => local,
                }))
            });
        }
        let (parts, _body) = request.into_parts();
        let original = match original(&parts.headers) {
            Ok((method, uri)) => {
                let mut original = Request::new(());
                *original.method_mut() = method;
                *original.uri_mut() = uri;
                // The front server decides by the status alone, so the check is judged as
                // HTTP/1.1 whatever it came over: a gRPC-shaped check over h2c would otherwise
                // be refused gRPC's way, with a `200`.
                *original.version_mut() = Version::HTTP_11;
                *original.headers_mut() = parts.headers;
                *original.extensions_mut() = parts.extensions;
                original
            }
            Err(reason) => {
                tracing::info!(reason, "forward-auth request refused");
                return Box::pin(std::future::ready(Ok(invalid_request())));
            }
        };
        let future = self.gate.call(original);
        Box::pin(async move {
            let response = match future.await {
                Ok(response) => response,
                Err(never) => match never {},
            };
            Ok(response.map(|body| body.map_err(|never| match never {}).boxed_unsync()))
        })
    }
}

/// The original request's method and URI, from the front server's headers.
fn original(headers: &HeaderMap) -> Result<(Method, Uri), &'static str> {
    // The front server passes the client's headers on: an application that routes by one of
    // these (older Symfony, Zend, Drupal) would serve a path other than the one judged.
    if headers.keys().any(super::proxy::is_path_override) {
        return Err("the request names another path in X-Original-URL or X-Rewrite-URL");
    }
    let uri =
        one_of(headers, &URI_HEADERS)?.ok_or("no X-Original-URI or X-Forwarded-Uri header")?;
    // Required: routes may depend on the method, and guessing one could open a route.
    let method = one_of(headers, &METHOD_HEADERS)?
        .ok_or("no X-Original-Method or X-Forwarded-Method header")?;
    let method = Method::from_bytes(method.as_bytes()).map_err(|_| "not a method")?;
    if !is_canonical_method(&method) {
        return Err("the original method is not in canonical form");
    }
    // The URI parser drops a fragment, and the rest of the header with it, while the front
    // server passes its raw request target upstream: `/static/#/../private` would be judged
    // as `/static/`. No request target carries a fragment (RFC 9112, 3.2).
    if uri.as_bytes().contains(&b'#') {
        return Err("the original URI has a fragment");
    }
    let uri: Uri = uri.as_bytes().try_into().map_err(|_| "not a URI")?;
    if uri.scheme().is_some() || !uri.path().starts_with('/') {
        return Err("the original URI is not an origin-form path");
    }
    if !is_canonical(uri.path()) {
        return Err("the original path is not in canonical form");
    }
    Ok((method, uri))
}

/// The one value of whichever of `names` the request carries: two values, or two of the
/// names with different values, are ambiguous and refused.
fn one_of<'a>(
    headers: &'a HeaderMap,
    names: &[&'static str],
) -> Result<Option<&'a HeaderValue>, &'static str> {
    let mut found: Option<&HeaderValue> = None;
    for name in names {
        for value in headers.get_all(HeaderName::from_static(name)) {
            match found {
                Some(earlier) if earlier != value => {
                    return Err("the original request is named twice, differently")
                }
                _ => found = Some(value),
            }
        }
    }
    Ok(found)
}

fn invalid_request() -> Response<LocalBody> {
    let body = Full::new(Bytes::from_static(br#"{"error":"invalid_request"}"#))
        .map_err(|never| match never {})
        .boxed_unsync();
    let mut response = Response::new(body);
    *response.status_mut() = StatusCode::BAD_REQUEST;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
        .headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// What the gate calls when it lets the original request through: `200` with the identity.
#[derive(Clone)]
struct Identity {
    forwarded: Arc<[ForwardedClaim]>,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("forwarded", &self.forwarded)
            .finish()
    }
}

impl Service<Request<()>> for Identity {
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Response<Full<Bytes>>, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<()>) -> Self::Future {
        let mut response = Response::new(Full::default());
        write_identity(
            &self.forwarded,
            request.extensions(),
            response.headers_mut(),
        );
        // An identity answer is for this request alone.
        response
            .headers_mut()
            .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        std::future::ready(Ok(response))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(*name, HeaderValue::from_static(value));
        }
        headers
    }

    #[test]
    fn the_original_request_is_read_from_either_convention() {
        let (method, uri) = original(&headers(&[
            ("x-original-uri", "/api/x?y=1"),
            ("x-original-method", "POST"),
        ]))
        .unwrap();
        assert_eq!((method, uri.path()), (Method::POST, "/api/x"));
        let (method, uri) = original(&headers(&[
            ("x-forwarded-uri", "/api/y"),
            ("x-forwarded-method", "DELETE"),
        ]))
        .unwrap();
        assert_eq!((method, uri.path()), (Method::DELETE, "/api/y"));
    }

    #[test]
    fn ambiguous_missing_or_non_canonical_originals_are_refused() {
        let get = ("x-original-method", "GET");
        for bad in [
            headers(&[]),
            headers(&[("x-original-uri", "/a")]),
            headers(&[get]),
            headers(&[get, ("x-original-uri", "/a"), ("x-original-uri", "/b")]),
            headers(&[get, ("x-original-uri", "/a"), ("x-forwarded-uri", "/b")]),
            headers(&[get, ("x-original-method", "POST"), ("x-original-uri", "/a")]),
            headers(&[get, ("x-original-uri", "/public/../admin")]),
            headers(&[get, ("x-original-uri", "/public/%2e%2e/admin")]),
            headers(&[get, ("x-original-uri", "//admin")]),
            headers(&[get, ("x-original-uri", "http://evil/admin")]),
            headers(&[get, ("x-original-uri", "*")]),
            headers(&[get, ("x-original-uri", "/public#/../admin")]),
            headers(&[
                get,
                ("x-original-uri", "/public"),
                ("x-original-url", "/admin"),
            ]),
            headers(&[
                get,
                ("x-original-uri", "/public"),
                ("x_rewrite_url", "/admin"),
            ]),
            headers(&[get, ("x-original-uri", "/public?page=1#x")]),
            headers(&[("x-original-uri", "/a"), ("x-original-method", "G ET")]),
        ] {
            assert!(original(&bad).is_err(), "{bad:?}");
        }
        assert!(original(&headers(&[
            ("x-original-uri", "/a"),
            ("x-forwarded-uri", "/a"),
            ("x-forwarded-method", "GET")
        ]))
        .is_ok());
    }
}
