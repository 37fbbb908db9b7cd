//! The gate itself: [`JwtAuthLayer`] builds [`JwtAuth`], whose `call` does the work.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http::{Method, Request, Response};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use serde::de::DeserializeOwned;
use tower_layer::Layer;
use tower_service::Service;

use crate::authorize::{Forbidden, Requirements};
use crate::error::is_grpc;
#[cfg(feature = "axum")]
use crate::error::GateRealm;
use crate::extract::{is_preflight, Sources};
use crate::keys::KeyLookup;
use crate::metrics::{CacheUse, GateMetrics};
use crate::paths::{overriding_methods, Access, PathRules, Pattern};
use crate::revocation::{BoxFuture, RevocationCheck};
use crate::validate::Authentication;
use crate::{AuthError, Keys, Require, TokenSources, TokenVerifier};

/// Applies [`JwtAuth`] to a service: every request must carry a valid, unrevoked bearer
/// token, except on the paths left open or optional.
///
/// ```
/// use axum::{routing::get, Router};
/// use jwt_gate::{Claims, JwtAuthLayer, Keys};
///
/// async fn me(claims: Claims) -> String {
///     format!("hello {}", claims.sub)
/// }
///
/// let keys = Keys::hs256(b"an example secret of 32 bytes!!!").unwrap();
/// let app: Router = Router::new()
///     .route("/me", get(me))
///     .route("/health", get(|| async { "ok" }))
///     .layer(JwtAuthLayer::from_keys(keys).open_path("/health"));
/// ```
pub struct JwtAuthLayer<C = ()> {
    gate: Arc<Gate<C>>,
}

struct Gate<C> {
    verifier: TokenVerifier<C>,
    paths: PathRules,
    requirements: Requirements<C>,
    /// As configured, for `Debug` and for the shortcuts that change one field.
    declared: TokenSources,
    sources: Sources,
    /// Whether CORS preflights pass without a token.
    preflight: bool,
    /// Whether a path or route rule is for one method only: then a method override must
    /// meet what its method would ([`overriding_methods`]).
    by_method: bool,
}

impl<C> Clone for Gate<C> {
    fn clone(&self) -> Self {
        Self {
            verifier: self.verifier.clone(),
            paths: self.paths.clone(),
            requirements: self.requirements.clone(),
            declared: self.declared.clone(),
            sources: self.sources.clone(),
            preflight: self.preflight,
            by_method: self.by_method,
        }
    }
}

impl<C> Clone for JwtAuthLayer<C> {
    fn clone(&self) -> Self {
        Self {
            gate: self.gate.clone(),
        }
    }
}

impl<C> std::fmt::Debug for JwtAuthLayer<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtAuthLayer")
            .field("verifier", &self.gate.verifier)
            .field("paths", &self.gate.paths)
            .field("requirements", &self.gate.requirements)
            .field("token_sources", &self.gate.declared)
            .field("cors_preflight", &self.gate.preflight)
            .finish()
    }
}

impl JwtAuthLayer<()> {
    /// A gate verifying with `keys`, the default [`Validation`](crate::Validation) and its own
    /// in-memory revocation list. To share a revocation list with an auth service, or to
    /// change the policy, build a [`TokenVerifier`] and use [`JwtAuthLayer::new`].
    pub fn from_keys(keys: Keys) -> Self {
        Self::new(TokenVerifier::new(keys))
    }
}

impl<C> JwtAuthLayer<C> {
    /// A gate applying `verifier`: its keys, policy, revocation store and claims type.
    pub fn new(verifier: TokenVerifier<C>) -> Self {
        Self {
            gate: Arc::new(Gate {
                verifier,
                paths: PathRules::default(),
                requirements: Requirements::default(),
                declared: TokenSources::default(),
                sources: Sources::default(),
                preflight: false,
                by_method: false,
            }),
        }
    }

    fn configure(mut self, change: impl FnOnce(&mut Gate<C>)) -> Self {
        let gate = Arc::make_mut(&mut self.gate);
        change(gate);
        gate.by_method = gate.paths.by_method() || gate.requirements.by_method();
        self
    }

    /// Lets requests for exactly `path` through without looking at any token, unless a
    /// route's requirements ([`require_route`](Self::require_route),
    /// [`require_prefix`](Self::require_prefix)) cover it: only a token can meet them, so
    /// there one is read, as on an [optional](Self::optional_path) path.
    #[must_use]
    pub fn open_path(self, path: &str) -> Self {
        self.configure(|gate| gate.paths.exact(path, Access::Open))
    }

    /// Lets requests for `prefix` and every path below it through without looking at any
    /// token. Matching is segment-wise (`/auth` does not open `/authz`), and a path with dot
    /// segments or encoded slashes is never treated as open.
    #[must_use]
    pub fn open_prefix(self, prefix: &str) -> Self {
        self.configure(|gate| gate.paths.prefix(prefix, Access::Open))
    }

    /// On exactly `path`, a token is optional: claims are added when a valid one is present,
    /// the request passes without one, and an invalid one is still refused.
    #[must_use]
    pub fn optional_path(self, path: &str) -> Self {
        self.configure(|gate| gate.paths.exact(path, Access::Optional))
    }

    /// As [`optional_path`](Self::optional_path), for `prefix` and every path below it.
    #[must_use]
    pub fn optional_prefix(self, prefix: &str) -> Self {
        self.configure(|gate| gate.paths.prefix(prefix, Access::Optional))
    }

    /// Requires a valid token on exactly `path`, even below an open or optional prefix
    /// (an exact rule beats a prefix, a longer prefix a shorter one). The path is protected
    /// in every ASCII letter case and with a trailing `/` too (`/docs/DRAFTS.html/`), as a
    /// case-insensitive or lenient upstream routes them, while an open or optional path opens
    /// only its own spelling.
    ///
    /// ```
    /// use jwt_gate::{JwtAuthLayer, Keys};
    ///
    /// let keys = Keys::hs256(b"an example secret of 32 bytes!!!").unwrap();
    /// let layer = JwtAuthLayer::from_keys(keys)
    ///     .open_prefix("/docs")
    ///     .protect_prefix("/docs/internal")
    ///     .protect_path("/docs/drafts.html");
    /// ```
    #[must_use]
    pub fn protect_path(self, path: &str) -> Self {
        self.configure(|gate| gate.paths.exact(path, Access::Protected))
    }

    /// As [`protect_path`](Self::protect_path), for `prefix` and every path below it.
    #[must_use]
    pub fn protect_prefix(self, prefix: &str) -> Self {
        self.configure(|gate| gate.paths.prefix(prefix, Access::Protected))
    }

    /// What requests with `method` for exactly `path` ask: at the same path, a rule for the
    /// method beats one for every method (a more specific path still beats both). A `HEAD`
    /// also meets what a `GET` would there (servers answer it with the `GET` handler), so a
    /// path opened for `HEAD` alone stays protected unless `GET` is open too. A request that
    /// asks the application for another method (`X-HTTP-Method-Override: DELETE`, or
    /// `X-HTTP-Method`, `X-Method-Override`, `?_method=DELETE`, which Rails, Express, Laravel
    /// and ASP.NET Core can honour on a `POST`) meets what each method asks, the strictest
    /// winning. A `_method` in a form body is out of sight: `docs/security.md`.
    ///
    /// ```
    /// use http::Method;
    /// use jwt_gate::{Access, JwtAuthLayer, Keys};
    ///
    /// let keys = Keys::hs256(b"an example secret of 32 bytes!!!").unwrap();
    /// // Anyone may read the catalogue; changing it needs a token.
    /// let layer = JwtAuthLayer::from_keys(keys)
    ///     .method_prefix(Method::GET, "/catalogue", Access::Open)
    ///     .method_prefix(Method::HEAD, "/catalogue", Access::Open)
    ///     .method_path(Method::GET, "/me", Access::Optional);
    /// ```
    #[must_use]
    pub fn method_path(self, method: Method, path: &str, access: Access) -> Self {
        self.configure(|gate| gate.paths.exact_for(Some(method), path, access))
    }

    /// As [`method_path`](Self::method_path), for `prefix` and every path below it.
    #[must_use]
    pub fn method_prefix(self, method: Method, prefix: &str, access: Access) -> Self {
        self.configure(|gate| gate.paths.prefix_for(Some(method), prefix, access))
    }

    /// Every request with a token must also meet `require` (checked after verification and
    /// revocation); one that does not is refused `403` (`grpc-status: 7` over gRPC). Open
    /// paths are never checked, and a request without a token on an optional path passes as
    /// before. Several calls add up.
    ///
    /// ```
    /// use jwt_gate::{JwtAuthLayer, Keys, Require};
    ///
    /// let keys = Keys::hs256(b"an example secret of 32 bytes!!!").unwrap();
    /// let layer = JwtAuthLayer::from_keys(keys)
    ///     .open_path("/health")
    ///     .require(Require::scope("orders:read"));
    /// ```
    #[must_use]
    pub fn require(self, require: Require<C>) -> Self {
        self.configure(|gate| gate.requirements.everywhere(require))
    }

    /// Requests for exactly `path`, by `method` (any method when `None`), must also meet
    /// `require`. A route rule needs a token even on an optional path; every rule matching a
    /// request applies, beside those of [`require`](Self::require). Paths match as for open
    /// paths, and a path not in canonical form (dot segments, encoded slashes, `;`) must meet
    /// every route rule of the gate, since a router could normalise it into any route. A rule
    /// also holds its path in any ASCII letter case and with or without a trailing `/`
    /// (`/ORDERS`, `/orders/`), which case-insensitive and lenient routers (Express's and
    /// ASP.NET Core's defaults) send to the same handler; open and optional paths stay exact.
    /// A rule for `GET` holds `HEAD` too, and a rule for a method holds a request that names
    /// it in a method override (`X-HTTP-Method-Override: DELETE` on a `POST`, or
    /// `?_method=DELETE`).
    ///
    /// For gRPC, a method is the path `/package.Service/Method`, called with `POST`.
    ///
    /// ```
    /// use http::Method;
    /// use jwt_gate::{JwtAuthLayer, Keys, Require};
    ///
    /// let keys = Keys::hs256(b"an example secret of 32 bytes!!!").unwrap();
    /// let layer = JwtAuthLayer::from_keys(keys)
    ///     .require_route(Some(Method::POST), "/orders", Require::scope("orders:write"))
    ///     .require_route(None, "/orders.v1.Orders/Cancel", Require::role("support"))
    ///     .require_prefix(None, "/admin", Require::role("admin"));
    /// ```
    #[must_use]
    pub fn require_route(self, method: Option<Method>, path: &str, require: Require<C>) -> Self {
        self.configure(|gate| {
            gate.requirements
                .route(method, Pattern::exact(path), require)
        })
    }

    /// As [`require_route`](Self::require_route), for `prefix` and every path below it
    /// (segment-wise: `/admin` holds `/admin/users`, not `/administrator`).
    #[must_use]
    pub fn require_prefix(self, method: Option<Method>, prefix: &str, require: Require<C>) -> Self {
        self.configure(|gate| {
            gate.requirements
                .route(method, Pattern::prefix(prefix), require)
        })
    }
}

impl<C> JwtAuthLayer<C> {
    /// Where the gate looks for the token: see [`TokenSources`] for what is read, how
    /// strictly, and the cross-site check a cookie-borne token passes on unsafe methods.
    /// Replaces what the shortcuts below set.
    ///
    /// # Panics
    ///
    /// When [`TokenSources::check`] refuses `sources`, with its message: configuration is
    /// checked when the gate is built, never at a request.
    #[must_use]
    pub fn token_sources(self, sources: TokenSources) -> Self {
        let compiled = Sources::compile(&sources).unwrap_or_else(|error| panic!("{error}"));
        self.configure(|gate| {
            gate.declared = sources;
            gate.sources = compiled;
        })
    }

    fn change_sources(self, change: impl FnOnce(&mut TokenSources)) -> Self {
        let mut sources = self.gate.declared.clone();
        change(&mut sources);
        self.token_sources(sources)
    }

    /// Reads the token also from the cookie `name` (the `Authorization` header stays a
    /// source): for a browser application whose login sets the access token as an
    /// `HttpOnly` cookie. Unsafe requests carrying only the cookie must come from the gate's
    /// own origin or a [trusted](Self::trust_origin) one. A `__Host-` name keeps sibling
    /// sites from setting the cookie.
    ///
    /// ```
    /// use jwt_gate::{JwtAuthLayer, Keys};
    ///
    /// let keys = Keys::hs256(b"an example secret of 32 bytes!!!").unwrap();
    /// let layer = JwtAuthLayer::from_keys(keys)
    ///     .token_cookie("__Host-access_token")
    ///     .trust_origin("https://admin.example");
    /// ```
    ///
    /// # Panics
    ///
    /// When `name` is not an RFC 6265 cookie name.
    #[must_use]
    pub fn token_cookie(self, name: &str) -> Self {
        self.change_sources(|sources| sources.cookie = Some(name.to_owned()))
    }

    /// Reads the bare token (no `Bearer `) also from the header `name`.
    ///
    /// ```
    /// use jwt_gate::{JwtAuthLayer, Keys};
    ///
    /// let keys = Keys::hs256(b"an example secret of 32 bytes!!!").unwrap();
    /// let layer = JwtAuthLayer::from_keys(keys).token_header("x-access-token");
    /// ```
    ///
    /// # Panics
    ///
    /// When `name` is not a header name, or one the gate reads for something else
    /// (`Authorization`, `Cookie`, `Origin`, `Host`, `Sec-Fetch-Site`, `Proxy-Authorization`).
    #[must_use]
    pub fn token_header(self, name: &str) -> Self {
        self.change_sources(|sources| sources.header = Some(name.to_owned()))
    }

    /// Lets pages of `origin` (`https://admin.example`) send unsafe requests authenticated
    /// by the [token cookie](Self::token_cookie), besides the gate's own origin.
    ///
    /// # Panics
    ///
    /// When `origin` is not `http://` or `https://` with a host and an optional port, or no
    /// token cookie is configured yet.
    #[must_use]
    pub fn trust_origin(self, origin: &str) -> Self {
        self.change_sources(|sources| sources.trusted_origins.push(origin.to_owned()))
    }

    /// With `pass` true, a CORS preflight (`OPTIONS` with `Origin` and
    /// `Access-Control-Request-Method`, which browsers send without any credentials) reaches
    /// the inner service without a token, for a CORS layer or an upstream inside the gate to
    /// answer. Off by default. Another `OPTIONS` is judged as any request, and so is one that
    /// names another method in an override (`X-HTTP-Method-Override`, `?_method=`), which no
    /// browser's preflight does. Anyone can send a preflight's headers: what answers it must
    /// answer it as a preflight, never run the path's handler (a CORS layer does; an
    /// application that serves `OPTIONS` with the handler of `GET` would serve it to anyone).
    ///
    /// ```
    /// use jwt_gate::{JwtAuthLayer, Keys};
    ///
    /// let keys = Keys::hs256(b"an example secret of 32 bytes!!!").unwrap();
    /// let layer = JwtAuthLayer::from_keys(keys).pass_cors_preflight(true);
    /// ```
    #[must_use]
    pub fn pass_cors_preflight(self, pass: bool) -> Self {
        self.configure(|gate| gate.preflight = pass)
    }
}

impl<S, C> Layer<S> for JwtAuthLayer<C> {
    type Service = JwtAuth<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        JwtAuth {
            inner,
            gate: self.gate.clone(),
        }
    }
}

/// The gate: verifies the request's bearer token before calling the inner service, with the
/// verified [`Claims<C>`](crate::Claims) in the request extensions. See [`JwtAuthLayer`].
pub struct JwtAuth<S, C = ()> {
    inner: S,
    gate: Arc<Gate<C>>,
}

impl<S: Clone, C> Clone for JwtAuth<S, C> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            gate: self.gate.clone(),
        }
    }
}

impl<S: std::fmt::Debug, C> std::fmt::Debug for JwtAuth<S, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtAuth")
            .field("inner", &self.inner)
            .field("realm", &self.gate.verifier.realm())
            .finish_non_exhaustive()
    }
}

enum Decision {
    /// Let through; the cache's part is what the pass is counted under.
    Pass(CacheUse),
    Reject(AuthError, Option<Box<Forbidden>>),
    /// The revocation answer is pending; a `403` found meanwhile is said only if the token
    /// turns out not revoked (a revoked token is a `401` whatever it holds).
    AwaitRevocation(
        BoxFuture<'static, RevocationCheck>,
        Option<Box<Forbidden>>,
        CacheUse,
    ),
    /// The token's `kid` is being fetched (a key rotation): decide again once it is over.
    AwaitKeys(KeyLookup),
}

/// Decides again after a key lookup; boxed, and so allocated, only on that rare path.
type Redecide<ReqBody> = Box<dyn FnOnce(&mut Request<ReqBody>) -> Decision + Send>;

impl<C> Gate<C>
where
    C: DeserializeOwned + Clone + Send + Sync + 'static,
{
    /// `first`: the first look at this request, which may wait for a key lookup; after
    /// that wait, a `kid` still unknown is refused.
    fn decide<B>(&self, request: &mut Request<B>, first: bool) -> Decision {
        // A browser's preflight names no other method; one that does is no preflight, or an
        // upstream honouring the override would act on it without a token.
        if self.preflight
            && is_preflight(request.method(), request.headers())
            && overriding_methods(request.uri(), request.headers()).is_empty()
        {
            return self.pass_without_claims(request);
        }
        let (method, path) = (request.method(), request.uri().path());
        // Empty, with no allocation, unless a rule depends on the method and the request
        // asks the application for another one.
        let overrides: Vec<Method> = if self.by_method {
            overriding_methods(request.uri(), request.headers())
        } else {
            Vec::new()
        };
        let access = overrides
            .iter()
            .fold(self.paths.access_for(method, path), |access, method| {
                access.stricter(self.paths.access_for(method, path))
            });
        let has_route_rule = || {
            std::iter::once(method)
                .chain(&overrides)
                .any(|method| self.requirements.has_route_rule(method, path))
        };
        // A route's requirements hold on the open paths they cover too (`/api/public` under
        // `/api` needing a scope), and only a token can meet them: read one, as on an
        // optional path, rather than refuse every request there.
        let access = match access {
            Access::Open if has_route_rule() => Access::Optional,
            access => access,
        };
        let authenticated = match access {
            Access::Open => Ok(None),
            _ => match self.token(request) {
                Err(error) => Err(error),
                Ok(token) if first => match self.verifier.authenticate_or_look_up(token) {
                    Authentication::Ready(outcome) => outcome,
                    Authentication::AwaitKeys(lookup) => return Decision::AwaitKeys(lookup),
                },
                Ok(token) => self.verifier.authenticate_again(token),
            },
        };
        let authenticated = match authenticated {
            Ok(authenticated) => authenticated,
            Err(error) => return Decision::Reject(error, None),
        };
        let Some((claims, grants, check, cache)) = authenticated else {
            if access == Access::Protected || has_route_rule() {
                return Decision::Reject(AuthError::MissingCredentials, None);
            }
            return self.pass_without_claims(request);
        };
        let forbidden = std::iter::once(method)
            .chain(&overrides)
            .try_for_each(|method| self.requirements.check(method, path, &claims, &grants))
            .err();
        // The claims ride with the request either way; a refused request is dropped whole.
        request.extensions_mut().insert(claims);
        if !grants.is_empty() {
            request.extensions_mut().insert(grants);
        }
        match check {
            RevocationCheck::Pending(check) => Decision::AwaitRevocation(check, forbidden, cache),
            answered => match (answered.verdict(), forbidden) {
                (Err(error), _) => Decision::Reject(error, None),
                (Ok(()), None) => Decision::Pass(cache),
                (Ok(()), Some(forbidden)) => {
                    Decision::Reject(AuthError::InsufficientScope, Some(forbidden))
                }
            },
        }
    }
}

impl<C> Gate<C>
where
    C: DeserializeOwned + Clone + Send + Sync + 'static,
{
    /// The request's one token from the gate's sources; a token only the cookie carried must
    /// also pass the cross-site check.
    fn token<'a, B>(&self, request: &'a Request<B>) -> Result<Option<&'a str>, AuthError> {
        self.sources.request_token(
            request.method(),
            request.uri(),
            request.headers(),
            self.verifier.validation().max_token_len,
        )
    }

    #[cfg_attr(not(feature = "axum"), allow(clippy::unused_self, unused_variables))]
    fn pass_without_claims<B>(&self, request: &mut Request<B>) -> Decision {
        // An extractor that refuses the request later names this gate's realm.
        #[cfg(feature = "axum")]
        request
            .extensions_mut()
            .insert(GateRealm(self.verifier.shared_realm()));
        Decision::Pass(CacheUse::NoToken)
    }
}

fn log_rejection(error: AuthError, path: &str) {
    match error {
        AuthError::MissingCredentials => {
            tracing::debug!(%path, reason = %error, "request without credentials refused")
        }
        AuthError::RevocationStoreUnavailable => {
            tracing::warn!(%path, reason = %error, "request refused: failing closed")
        }
        AuthError::InsufficientScope => {
            tracing::info!(%path, reason = %error, "request without the required scope or role refused")
        }
        AuthError::CrossSiteRequest => {
            tracing::info!(%path, reason = %error, "cross-site request with the token cookie refused")
        }
        _ => {
            tracing::info!(%path, reason = %error, code = error.error_code(), "request with bad credentials refused")
        }
    }
}

/// A rejection, answered in the request's own protocol (gRPC or plain HTTP).
pub(crate) fn rejection<B>(
    error: AuthError,
    realm: &str,
    metrics: &GateMetrics,
    forbidden: Option<&Forbidden>,
    request: &Request<impl Sized>,
) -> Response<ResponseBody<B>> {
    metrics.refused(error);
    log_rejection(error, request.uri().path());
    let (status, headers, body) = error.render(
        realm,
        is_grpc(request.version(), request.headers()),
        forbidden,
    );
    let mut response = Response::new(ResponseBody::rejection(body));
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}

/// The inner service was made ready for this request; take that ready instance along to the
/// response future and leave a fresh clone behind for the next request.
fn take_ready<S: Clone>(inner: &mut S) -> S {
    let clone = inner.clone();
    std::mem::replace(inner, clone)
}

impl<S, C, ReqBody, ResBody> Service<Request<ReqBody>> for JwtAuth<S, C>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone,
    C: DeserializeOwned + Clone + Send + Sync + 'static,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S, ReqBody, ResBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        let verifier = &self.gate.verifier;
        let state = match self.gate.decide(&mut request, true) {
            Decision::Pass(cache) => {
                verifier.metrics().passed(cache);
                State::Inner {
                    future: self.inner.call(request),
                }
            }
            Decision::Reject(error, forbidden) => State::Rejected {
                response: Some(rejection(
                    error,
                    verifier.realm(),
                    verifier.metrics(),
                    forbidden.as_deref(),
                    &request,
                )),
            },
            Decision::AwaitRevocation(check, forbidden, cache) => State::AwaitingRevocation {
                check,
                pending: Some((request, take_ready(&mut self.inner))),
                realm: verifier.shared_realm(),
                metrics: verifier.metrics().clone(),
                forbidden,
                cache,
            },
            Decision::AwaitKeys(lookup) => {
                let gate = self.gate.clone();
                State::AwaitingKeys {
                    lookup,
                    pending: Some((request, take_ready(&mut self.inner))),
                    redecide: Some(Box::new(move |request: &mut Request<ReqBody>| {
                        gate.decide(request, false)
                    })),
                    realm: verifier.shared_realm(),
                    metrics: verifier.metrics().clone(),
                }
            }
        };
        ResponseFuture { state }
    }
}

pin_project! {
    /// The response future of [`JwtAuth`]. It allocates nothing of its own unless the
    /// revocation store has to do I/O, or the token names a `kid` its key source is
    /// fetching (a key rotation seen for the first time), which it then awaits.
    pub struct ResponseFuture<S, ReqBody, ResBody>
    where
        S: Service<Request<ReqBody>>,
    {
        #[pin]
        state: State<S, ReqBody, ResBody>,
    }
}

pin_project! {
    #[project = StateProjection]
    enum State<S, ReqBody, ResBody>
    where
        S: Service<Request<ReqBody>>,
    {
        Inner {
            #[pin]
            future: S::Future,
        },
        Rejected {
            response: Option<Response<ResponseBody<ResBody>>>,
        },
        AwaitingRevocation {
            check: BoxFuture<'static, RevocationCheck>,
            pending: Option<(Request<ReqBody>, S)>,
            realm: Arc<str>,
            metrics: GateMetrics,
            forbidden: Option<Box<Forbidden>>,
            cache: CacheUse,
        },
        AwaitingKeys {
            lookup: KeyLookup,
            pending: Option<(Request<ReqBody>, S)>,
            redecide: Option<Redecide<ReqBody>>,
            realm: Arc<str>,
            metrics: GateMetrics,
        },
    }
}

impl<S, ReqBody, ResBody> Future for ResponseFuture<S, ReqBody, ResBody>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    type Output = Result<Response<ResponseBody<ResBody>>, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut state = self.project().state;
        loop {
            match state.as_mut().project() {
                StateProjection::Inner { future } => {
                    let response = ready!(future.poll(cx))?;
                    return Poll::Ready(Ok(response.map(ResponseBody::inner)));
                }
                StateProjection::Rejected { response } => {
                    return Poll::Ready(Ok(response
                        .take()
                        .expect("ResponseFuture polled after completion")));
                }
                StateProjection::AwaitingRevocation {
                    check,
                    pending,
                    realm,
                    metrics,
                    forbidden,
                    cache,
                } => {
                    let verdict = ready!(check.as_mut().poll(cx));
                    let (request, mut inner) = pending
                        .take()
                        .expect("ResponseFuture polled after completion");
                    // A store may not answer "pending" twice: verdict() counts that as
                    // unavailable.
                    if let Err(error) = verdict.verdict() {
                        return Poll::Ready(Ok(rejection(error, realm, metrics, None, &request)));
                    }
                    if let Some(forbidden) = forbidden.take() {
                        return Poll::Ready(Ok(rejection(
                            AuthError::InsufficientScope,
                            realm,
                            metrics,
                            Some(&forbidden),
                            &request,
                        )));
                    }
                    metrics.passed(*cache);
                    let future = inner.call(request);
                    state.set(State::Inner { future });
                }
                StateProjection::AwaitingKeys {
                    lookup,
                    pending,
                    redecide,
                    realm,
                    metrics,
                } => {
                    ready!(lookup.as_mut().poll(cx));
                    let ((mut request, mut inner), redecide) = pending
                        .take()
                        .zip(redecide.take())
                        .expect("ResponseFuture polled after completion");
                    let next = match redecide(&mut request) {
                        Decision::Pass(cache) => {
                            metrics.passed(cache);
                            State::Inner {
                                future: inner.call(request),
                            }
                        }
                        Decision::AwaitRevocation(check, forbidden, cache) => {
                            State::AwaitingRevocation {
                                check,
                                pending: Some((request, inner)),
                                realm: realm.clone(),
                                metrics: metrics.clone(),
                                forbidden,
                                cache,
                            }
                        }
                        Decision::Reject(error, forbidden) => State::Rejected {
                            response: Some(rejection(
                                error,
                                realm,
                                metrics,
                                forbidden.as_deref(),
                                &request,
                            )),
                        },
                        // Deciding again never waits a second time.
                        Decision::AwaitKeys(_) => State::Rejected {
                            response: Some(rejection(
                                AuthError::UnknownKey,
                                realm,
                                metrics,
                                None,
                                &request,
                            )),
                        },
                    };
                    state.set(next);
                }
            }
        }
    }
}

pin_project! {
    /// The body of a gated response: the inner service's, or the gate's own small JSON
    /// rejection.
    pub struct ResponseBody<B> {
        #[pin]
        kind: BodyKind<B>,
    }
}

pin_project! {
    #[project = BodyKindProjection]
    enum BodyKind<B> {
        Inner { #[pin] body: B },
        Rejection { body: Option<Bytes> },
    }
}

impl<B> ResponseBody<B> {
    pub(crate) fn inner(body: B) -> Self {
        Self {
            kind: BodyKind::Inner { body },
        }
    }

    fn rejection(body: Bytes) -> Self {
        Self {
            kind: BodyKind::Rejection {
                body: (!body.is_empty()).then_some(body),
            },
        }
    }
}

impl<B: Default> Default for ResponseBody<B> {
    fn default() -> Self {
        Self::inner(B::default())
    }
}

impl<B: std::fmt::Debug> std::fmt::Debug for ResponseBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.kind {
            BodyKind::Inner { body } => f.debug_tuple("ResponseBody::Inner").field(body).finish(),
            BodyKind::Rejection { body } => f
                .debug_tuple("ResponseBody::Rejection")
                .field(body)
                .finish(),
        }
    }
}

impl<B> Body for ResponseBody<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        match self.project().kind.project() {
            BodyKindProjection::Inner { body } => body.poll_frame(cx),
            BodyKindProjection::Rejection { body } => {
                Poll::Ready(body.take().map(|bytes| Ok(Frame::data(bytes))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            BodyKind::Inner { body } => body.is_end_stream(),
            BodyKind::Rejection { body } => body.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            BodyKind::Inner { body } => body.size_hint(),
            BodyKind::Rejection { body } => {
                SizeHint::with_exact(body.as_ref().map_or(0, |bytes| bytes.len() as u64))
            }
        }
    }
}

#[cfg(all(
    test,
    feature = "metrics",
    any(feature = "rust-crypto", feature = "aws-lc-rs")
))]
mod tests {
    use tower::ServiceExt;

    use super::*;
    use crate::clock::Clock;
    use crate::{Claims, Key};

    /// With feature `metrics`: the gate counts on the counters its verifier registered, in
    /// whatever recorder was installed when the verifier was built. A pass is counted once,
    /// under what the verified-token cache did for it: verified in full the first time,
    /// answered from the cache after; a refusal under its reason, and a token revoked since
    /// is a refusal, not a pass.
    #[test]
    fn each_request_is_counted_once_a_pass_under_the_caches_part() {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let exposition = recorder.handle();
        let _recording = metrics::set_default_local_recorder(&recorder);
        let keys = Keys::new(Key::hs256(b"a unit-test secret of 32 bytes!!").unwrap()).unwrap();
        let now = crate::clock::SystemClock.now();
        let claims = Claims::new("alice", now, now + 600);
        let token = keys.sign(&claims).unwrap();
        let verifier = TokenVerifier::new(keys);
        let layer = JwtAuthLayer::new(verifier.clone()).optional_prefix("/public");
        let gate = layer.layer(tower::service_fn(|_: Request<String>| async {
            Ok::<_, std::convert::Infallible>(Response::new(()))
        }));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let send = |path: &str, token: Option<&str>| {
            let mut request = Request::builder().uri(path);
            if let Some(token) = token {
                request = request.header("authorization", format!("Bearer {token}"));
            }
            let request = request.body(String::new()).unwrap();
            runtime
                .block_on(gate.clone().oneshot(request))
                .unwrap()
                .status()
        };
        for _ in 0..3 {
            assert_eq!(send("/x", Some(&token)), http::StatusCode::OK);
        }
        assert_eq!(send("/public/x", None), http::StatusCode::OK);
        assert_eq!(send("/x", None), http::StatusCode::UNAUTHORIZED);
        runtime
            .block_on(verifier.revocations().revoke(&claims.jti, claims.exp))
            .unwrap();
        assert_eq!(send("/x", Some(&token)), http::StatusCode::UNAUTHORIZED);
        let text = exposition.render();
        for series in [
            "jwt_gate_requests_passed_total{cache=\"miss\"} 1",
            "jwt_gate_requests_passed_total{cache=\"hit\"} 2",
            "jwt_gate_requests_passed_total{cache=\"none\"} 1",
            "jwt_gate_requests_refused_total{reason=\"revoked\"} 1",
            "jwt_gate_requests_refused_total{reason=\"missing_credentials\"} 1",
            "jwt_gate_verified_cache_misses_total 1",
        ] {
            assert!(text.contains(series), "no {series} in\n{text}");
        }
    }
}
