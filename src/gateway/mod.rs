//! A reverse proxy that puts the gate in front of an HTTP service that has no authentication
//! of its own (feature `gateway`).
//!
//! [`Gateway`] is the inner service of a [`JwtAuthLayer`]: every request the gate lets through
//! is forwarded to the upstream, with the verified identity in `x-auth-*` headers. [`serve`]
//! runs both on a listener.
//!
//! What the upstream receives:
//!
//! - the method, path, query and body of the client's request, the body streamed as it arrives
//!   (and the response body streamed back the same way); the path exactly as the gate judged
//!   it, never normalised, since a path the gate left open is canonical already;
//! - the client's headers, less the hop-by-hop ones (`Connection` and every header it names,
//!   `Keep-Alive`, `TE`, `Transfer-Encoding`, `Upgrade`, `Proxy-*`), which belong
//!   to one connection, not to the request; two exceptions: `TE: trailers` is kept (gRPC
//!   requires it), and a WebSocket handshake keeps `Connection: upgrade` and its `Upgrade`
//!   (see [Protocols](#protocols));
//! - the client's `Authorization` header too, for upstreams that want to check the token again;
//! - **never an `x-auth-*` header the client sent** (nor `x_auth_*`, which CGI-style servers
//!   read as the same thing): all are removed, on open paths too, so these headers always come
//!   from the gate and a client cannot speak for a user;
//! - `x-auth-sub` (and `x-auth-<name>` for each claim named with
//!   [`GatewayBuilder::forward_claim`]) when the request carried a valid token, each value
//!   percent-encoded (UTF-8, RFC 3986) wherever it has a byte an upstream could trim, split on
//!   or mis-decode: controls, spaces, `,`, `%` and anything outside ASCII (`alice` stays
//!   `alice`; `alice,bob` arrives as `alice%2Cbob`, `josé` as `jos%C3%A9`). Decode once to get
//!   the claim; an upstream that never decodes still sees one value per identity, distinct
//!   for distinct identities;
//! - `Host` set to the upstream's authority (or kept, with [`GatewayBuilder::preserve_host`]),
//!   and `X-Forwarded-For`, `X-Forwarded-Proto` and `X-Forwarded-Host` describing the client's
//!   request. By default these replace whatever the client sent (a client could otherwise make
//!   up its address); [`GatewayBuilder::trust_forwarded_headers`] appends instead, for a
//!   gateway that itself sits behind a trusted proxy.
//!
//! # Protocols
//!
//! - **HTTP/2 from clients**: [`serve`] speaks HTTP/1.1 and HTTP/2 on the same port, h2c by
//!   prior knowledge on plain TCP (as gRPC clients do), `h2` or `http/1.1` by ALPN when it
//!   terminates TLS ([`GatewayBuilder::tls`], feature `rustls`).
//! - **HTTP/2 to the upstream**: over `https://` (feature `rustls`) the upstream picks by
//!   ALPN; [`GatewayBuilder::upstream_http2`] speaks h2c by prior knowledge to an `http://`
//!   upstream (a gRPC server) and offers only `h2` over `https://`. Either side may be
//!   HTTP/1.1 while the other is HTTP/2. Trailers pass both ways (`grpc-status` reaches
//!   gRPC clients); a gRPC request the gate refuses is answered `grpc-status: 16` or `7` by
//!   the gate itself.
//! - **`https://` upstreams** (feature `rustls`): certificates checked against the webpki
//!   roots, or only the CAs given to [`GatewayBuilder::upstream_ca_pem`].
//! - **WebSocket**: a `GET` over HTTP/1.1 with `Connection: upgrade` and
//!   `Upgrade: websocket` is judged by the gate like any request (a refused handshake is the
//!   gate's `401`/`403`, never a `101`), then sent upstream over HTTP/1.1 with its upgrade
//!   headers and identity headers; when the upstream answers `101`, bytes are relayed both
//!   ways until either side closes. Frames are not parsed: message sizes, pings and idle
//!   closes are the client's and the upstream's to enforce; the proxy adds no idle timeout to
//!   a relayed connection, which counts towards
//!   [`max_connections`](GatewayBuilder::max_connections) until it closes. No other upgrade
//!   (h2c, TLS) is ever relayed, and WebSocket over HTTP/2 (RFC 8441) is not offered.
//!
//! # Forward-auth
//!
//! [`ForwardAuth`] is the same gate for a web server that proxies by itself (nginx
//! `auth_request`, Traefik, Caddy): it judges the request the server names and answers `200`
//! with the `x-auth-*` headers, or the gate's rejection.
//!
//! # Services mounted in-process
//!
//! [`GatewayBuilder::mount`] serves a path prefix with a Tower service of this process instead
//! of the upstream: typically the companion auth service at `/auth`, so that the gateway is the
//! only thing a client talks to. A request under a mounted prefix never reaches the upstream.
//! The mounted service receives the request as the gate passed it (whole path, verified
//! [`Claims`](crate::Claims) and [`ClientAddr`](crate::ClientAddr) in the extensions), less any `x-auth-*` header the client sent.
//! Whether the gate lets such requests through without a token is the gate's own
//! configuration (`open_prefix("/auth")` for the auth service).
//!
//! # Failures
//!
//! An upstream that cannot be reached gives `502 Bad Gateway`; one that has not sent its
//! response head within the timeout (30 s by default) gives `504 Gateway Timeout`; a client
//! that stops sending its request body gives `408 Request Timeout`. None says why to the
//! client; the reason is logged.
//!
//! # Slow and numerous clients
//!
//! [`serve`] bounds what one client can hold, each bound set on the [`GatewayBuilder`]:
//!
//! - a request head must arrive whole within
//!   [`header_read_timeout`](GatewayBuilder::header_read_timeout) (10 s) of the connection
//!   starting to wait for it, so a connection kept alive and idle is closed after the same
//!   time, and one sending its head a byte at a time (slowloris) too. The same time bounds a
//!   new connection's first bytes (the TLS handshake, when TLS is terminated), and an
//!   HTTP/2 connection with no request open (then it is closed gracefully); HTTP/2
//!   connections are also pinged at that interval and closed when a ping goes unanswered as
//!   long, and carry at most 200 requests at once;
//! - a request body forwarded upstream may pause at most
//!   [`body_read_timeout`](GatewayBuilder::body_read_timeout) (30 s) between chunks, and a
//!   response may wait as long for its client to take any of it (an HTTP/2 client that
//!   opens no flow-control window, an HTTP/1.1 client that stops reading): then its
//!   connection is closed, as nginx's `send_timeout` does (on HTTP/2 with its other
//!   requests, when nothing else moved either). The kernel hands a response over
//!   in bursts of up to half a socket buffer (a few MB on a fast network): a client must take
//!   that much within the bound;
//! - at most [`max_connections`](GatewayBuilder::max_connections) (1024) connections are
//!   served at once; further ones wait in the listener's backlog until one ends;
//! - with [`connection_admission`](GatewayBuilder::connection_admission), each client
//!   address opens new connections at most at a steady rate; the excess waits, unread, for
//!   its turn (a flood of fresh connections from one address then costs the other clients
//!   nothing much: see [`ConnectionAdmission`]);
//! - the pool of upstream connections keeps at most
//!   [`pool_max_idle_per_host`](GatewayBuilder::pool_max_idle_per_host) (32) idle HTTP/1.1
//!   ones, none reused after [`pool_idle_timeout`](GatewayBuilder::pool_idle_timeout) (30 s)
//!   idle, and one shared HTTP/2 connection; a request is only given a connection ready for
//!   it, never one still sending another client's request body.

mod admission;
mod conn;
mod forward_auth;
mod identity;
mod limits;
mod pool;
mod proxy;
mod router;
mod tls;

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::HeaderValue;
use http::{Request, Response, Uri};
use http_body::Body;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::Either;
use hyper::body::Incoming;
use tower_service::Service;

pub use self::admission::{AdmittingListener, ConnectionAdmission, ConnectionAdmissionBuilder};
pub use self::forward_auth::{ForwardAuth, ForwardAuthBuilder};
pub use self::identity::{ArrayStyle, ForwardedClaim, InvalidForwardedClaim};
use self::limits::Limits;
use self::pool::Pool;
pub use self::pool::UpstreamBody;
use self::proxy::Upstream;
use self::router::Mount;
#[cfg(feature = "rustls")]
pub use self::tls::{InvalidTls, ServerTls};
use crate::revocation::BoxFuture;
use crate::{BoxError, JwtAuthLayer};

/// The claims type a gateway's verifier should use: every claim the token carries beyond the
/// registered ones, so any of them can be forwarded.
///
/// ```
/// use jwt_gate::gateway::ClaimMap;
/// use jwt_gate::{JwtAuthLayer, Keys, TokenVerifier};
///
/// let keys = Keys::hs256(b"an example secret of 32 bytes!!!").unwrap();
/// let layer = JwtAuthLayer::new(TokenVerifier::builder(keys).claims::<ClaimMap>().build());
/// ```
pub type ClaimMap = serde_json::Map<String, serde_json::Value>;

/// The body of a gateway response: the upstream's, streamed, or one made in this process
/// ([`LocalBody`]).
pub type GatewayBody = Either<UpstreamBody, LocalBody>;

/// A response body made in this process: a [mounted](GatewayBuilder::mount) service's, or
/// the gateway's own short error (`{"error":"bad_gateway"}` with `502`,
/// `{"error":"gateway_timeout"}` with `504`).
pub type LocalBody = UnsyncBoxBody<Bytes, BoxError>;

/// The upstream URL cannot be proxied to.
///
/// ```
/// use jwt_gate::gateway::Gateway;
///
/// assert!(Gateway::builder("ftp://example.com").build().is_err(), "not HTTP");
/// assert!(Gateway::builder("http://127.0.0.1:8000?q=1").build().is_err(), "a query");
/// assert!(Gateway::builder("http://127.0.0.1:8000/api").build().is_ok());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidUpstream(String);

impl std::fmt::Display for InvalidUpstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "not a usable upstream URL: {}", self.0)
    }
}

impl std::error::Error for InvalidUpstream {}

/// The prefix of every identity header, and of every header a client may not send.
const IDENTITY_PREFIX: &str = "x-auth-";

/// Configures a [`Gateway`]; made by [`Gateway::builder`].
///
/// ```
/// use std::time::Duration;
/// use jwt_gate::gateway::Gateway;
///
/// let gateway = Gateway::builder("http://127.0.0.1:8000")
///     .timeout(Duration::from_secs(5))
///     .forward_claim("roles")
///     .preserve_host(true)
///     .header_read_timeout(Duration::from_secs(5))
///     .body_read_timeout(Duration::from_secs(10))
///     .max_connections(256)
///     .pool_max_idle_per_host(8)
///     .pool_idle_timeout(Duration::from_secs(15))
///     .build()
///     .unwrap();
/// ```
#[derive(Debug, Clone)]
pub struct GatewayBuilder {
    upstream: String,
    timeout: Duration,
    forwarded_claims: Vec<ForwardedClaim>,
    preserve_host: bool,
    trust_forwarded_headers: bool,
    trusted_proxies: Vec<std::net::IpAddr>,
    mounts: Vec<Mount>,
    limits: Limits,
    upstream_http2: bool,
    #[cfg(feature = "rustls")]
    upstream_ca_pem: Option<Vec<u8>>,
    #[cfg(feature = "rustls")]
    tls: Option<ServerTls>,
}

impl GatewayBuilder {
    /// Speaks HTTP/2 to the upstream (default: HTTP/1.1 to an `http://` upstream, and
    /// whichever an `https://` upstream picks by ALPN): h2c by prior knowledge over
    /// `http://`, only `h2` offered over `https://`. For gRPC upstreams that serve HTTP/2
    /// alone. Protocol upgrades (WebSocket) always go upstream over HTTP/1.1.
    ///
    /// ```
    /// use jwt_gate::gateway::Gateway;
    ///
    /// let grpc = Gateway::builder("http://127.0.0.1:50051").upstream_http2(true).build()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn upstream_http2(mut self, http2: bool) -> Self {
        self.upstream_http2 = http2;
        self
    }

    /// Trusts the CA certificates of `pem` (one or more PEM blocks), instead of the webpki
    /// roots, for an `https://` upstream: a private CA (feature `rustls`). Checked by
    /// [`build`](Self::build).
    ///
    /// ```
    /// use jwt_gate::gateway::Gateway;
    ///
    /// let refused = Gateway::builder("https://backend.internal")
    ///     .upstream_ca_pem(b"no certificate here".to_vec())
    ///     .build();
    /// assert!(refused.is_err());
    /// ```
    #[cfg(feature = "rustls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "rustls")))]
    #[must_use]
    pub fn upstream_ca_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.upstream_ca_pem = Some(pem.into());
        self
    }

    /// Terminates TLS on every connection [`serve`] accepts, with `tls`'s certificate; ALPN
    /// chooses HTTP/2 or HTTP/1.1 (feature `rustls`). The handshake must end within the
    /// [`header_read_timeout`](Self::header_read_timeout). Upstreams then see
    /// `X-Forwarded-Proto: https`.
    ///
    /// ```no_run
    /// use jwt_gate::gateway::{Gateway, ServerTls};
    ///
    /// # fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// let tls = ServerTls::from_pem(&std::fs::read("cert.pem")?, &std::fs::read("key.pem")?)?;
    /// let gateway = Gateway::builder("http://127.0.0.1:8000").tls(tls).build()?;
    /// # Ok(()) }
    /// ```
    #[cfg(feature = "rustls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "rustls")))]
    #[must_use]
    pub fn tls(mut self, tls: ServerTls) -> Self {
        self.tls = Some(tls);
        self
    }

    /// How long the upstream may take to send its response head (default 30 s); then `504`.
    /// Bodies are streamed afterwards without a time limit.
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// How long a connection may take to send a whole request head, counted from when it
    /// starts waiting for one (default 10 s): this also closes connections kept alive and idle
    /// for that long. Then the connection is closed.
    ///
    /// # Panics
    ///
    /// If `timeout` is zero: limits are configuration.
    #[must_use]
    pub fn header_read_timeout(mut self, timeout: Duration) -> Self {
        self.limits.set_header_read_timeout(timeout);
        self
    }

    /// How long a client may pause while sending a request body that the upstream is waiting
    /// for (default 30 s). Then the upstream request is abandoned and the client gets `408`.
    /// Also how long a response may wait for its client to take any of it before the
    /// connection is closed.
    ///
    /// # Panics
    ///
    /// If `timeout` is zero: limits are configuration.
    #[must_use]
    pub fn body_read_timeout(mut self, timeout: Duration) -> Self {
        assert!(!timeout.is_zero(), "the body read timeout must be positive");
        self.limits.body_read_timeout = timeout;
        self
    }

    /// How many client connections [`serve`] serves at once (default 1024); further ones wait
    /// in the listener's backlog until one ends. Each forwarded request also holds an upstream
    /// connection: keep this under half the process's file descriptor limit (`ulimit -n`).
    ///
    /// # Panics
    ///
    /// If `connections` is zero: limits are configuration.
    #[must_use]
    pub fn max_connections(mut self, connections: usize) -> Self {
        self.limits.set_max_connections(connections);
        self
    }

    /// How many new connections each client address may open (default: no limit); see
    /// [`ConnectionAdmission`]. Connections over the rate wait, accepted but unread, for
    /// their turn. Only where clients connect directly: behind a load balancer every
    /// connection is the balancer's.
    #[must_use]
    pub fn connection_admission(mut self, admission: ConnectionAdmission) -> Self {
        self.limits.admission = Some(admission);
        self
    }

    /// How many idle HTTP/1.1 connections to the upstream are kept for reuse (default 32);
    /// more are closed as their requests end. An HTTP/2 upstream gets one connection, which
    /// every request shares.
    #[must_use]
    pub fn pool_max_idle_per_host(mut self, idle: usize) -> Self {
        self.limits.pool_max_idle_per_host = idle;
        self
    }

    /// How long an idle upstream connection is kept for reuse (default 30 s): an HTTP/1.1
    /// connection idle that long is closed within as much again, and so is the shared
    /// HTTP/2 connection once no request has used it for that long.
    ///
    /// # Panics
    ///
    /// If `timeout` is zero: limits are configuration.
    #[must_use]
    pub fn pool_idle_timeout(mut self, timeout: Duration) -> Self {
        assert!(!timeout.is_zero(), "the pool idle timeout must be positive");
        self.limits.pool_idle_timeout = timeout;
        self
    }

    /// Also forwards the claim `name` as `x-auth-<name>` (lower-cased): a string as it is,
    /// anything else as JSON, percent-encoded as the [module docs](self) say (`aud` as a
    /// comma-separated list, each audience encoded apart). Registered claims (`iss`, `aud`,
    /// `jti`, `exp`, `iat`, `nbf`) always work; others need the gate's verifier to use
    /// [`ClaimMap`] as its claims type.
    ///
    /// # Panics
    ///
    /// If `x-auth-<name>` is not a valid header name: claim names are configuration.
    #[must_use]
    pub fn forward_claim(self, name: &str) -> Self {
        self.forward(ForwardedClaim::configured(name))
    }

    /// Also forwards `claim`: a nested claim, a header of your choosing, arrays joined. See
    /// [`ForwardedClaim`].
    ///
    /// ```
    /// use jwt_gate::gateway::{ArrayStyle, ForwardedClaim, Gateway};
    ///
    /// let roles = ForwardedClaim::with_header("/realm_access/roles", "x-auth-roles")?
    ///     .arrays(ArrayStyle::Join);
    /// let gateway = Gateway::builder("http://127.0.0.1:8000").forward(roles).build()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn forward(mut self, claim: ForwardedClaim) -> Self {
        self.forwarded_claims.push(claim);
        self
    }

    /// Sends the client's own `Host` upstream instead of the upstream's authority.
    #[must_use]
    pub fn preserve_host(mut self, preserve: bool) -> Self {
        self.preserve_host = preserve;
        self
    }

    /// Appends to the client's `X-Forwarded-*` headers instead of replacing them. Only for a
    /// gateway whose clients are proxies you trust.
    #[must_use]
    pub fn trust_forwarded_headers(mut self, trust: bool) -> Self {
        self.trust_forwarded_headers = trust;
        self
    }

    /// Appends to the `X-Forwarded-*` headers of requests whose connection comes from one of
    /// `proxies` (the load balancers in front), and removes them from everyone else's, as
    /// without it. An IPv4 address also matches as `::ffff:` on a dual-stack listener.
    ///
    /// ```
    /// use jwt_gate::gateway::Gateway;
    ///
    /// let gateway = Gateway::builder("http://127.0.0.1:8000")
    ///     .trusted_proxies(["10.0.0.5".parse().unwrap()])
    ///     .build()
    ///     .unwrap();
    /// # drop(gateway);
    /// ```
    #[must_use]
    pub fn trusted_proxies(mut self, proxies: impl IntoIterator<Item = std::net::IpAddr>) -> Self {
        self.trusted_proxies = proxies
            .into_iter()
            .map(|proxy| proxy.to_canonical())
            .collect();
        self
    }

    /// Answers every request under `prefix` (itself and below it, segment-wise: `/auth`
    /// holds `/auth/token`, never `/authz`) with `service`, in this process, instead of
    /// forwarding it. The longest matching prefix wins. See the
    /// [module docs](self#services-mounted-in-process) for what the service receives.
    ///
    /// ```
    /// use jwt_gate::gateway::Gateway;
    /// use jwt_gate::service::AuthService;
    /// use jwt_gate::store::MemoryUserStore;
    /// use jwt_gate::{JwtAuthLayer, TokenVerifier, Keys};
    /// use tower::Layer as _;
    ///
    /// let verifier = TokenVerifier::new(Keys::hs256(b"an example secret of 32 bytes!!!").unwrap());
    /// let auth = AuthService::new(verifier.clone(), MemoryUserStore::new());
    /// let gateway = Gateway::builder("http://127.0.0.1:8000")
    ///     .mount("/auth", auth)
    ///     .build()
    ///     .unwrap();
    /// // The gate lets the auth routes through without a token; they check their own.
    /// let service = JwtAuthLayer::new(verifier).open_prefix("/auth").layer(gateway);
    /// ```
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
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        self.mounts.push(Mount::new(prefix, service));
        self
    }

    /// The gateway. The upstream must be an absolute `http://` URL, or `https://` with the
    /// `rustls` feature; a path in it is put before every request's path.
    pub fn build(self) -> Result<Gateway, InvalidUpstream> {
        let upstream: Uri = self
            .upstream
            .parse()
            .map_err(|error: http::uri::InvalidUri| InvalidUpstream(error.to_string()))?;
        let scheme = match upstream.scheme_str() {
            Some("http") => http::uri::Scheme::HTTP,
            Some("https") if cfg!(feature = "rustls") => http::uri::Scheme::HTTPS,
            Some("https") => {
                return Err(InvalidUpstream(
                    "https:// upstreams need the `rustls` feature".into(),
                ))
            }
            _ => {
                return Err(InvalidUpstream(
                    "the URL must start with http:// or https://".into(),
                ))
            }
        };
        let authority = upstream
            .authority()
            .ok_or_else(|| InvalidUpstream("the URL has no host".into()))?
            .clone();
        if upstream.query().is_some() {
            return Err(InvalidUpstream("the URL may not have a query".into()));
        }
        // The proxy never sends them, and an error message or log line that names the
        // upstream would show the password.
        if authority.as_str().contains('@') {
            return Err(InvalidUpstream(
                "the URL may not hold a user or password".into(),
            ));
        }
        let base_path = upstream.path().trim_end_matches('/').to_owned();
        // What the pool dials.
        let target = Uri::builder()
            .scheme(scheme)
            .authority(authority.clone())
            .path_and_query("/")
            .build()
            .map_err(|error| InvalidUpstream(error.to_string()))?;
        let forwarded_claims = self.forwarded_claims;
        #[cfg(feature = "rustls")]
        let roots = self.upstream_ca_pem.as_deref();
        #[cfg(not(feature = "rustls"))]
        let roots = None;
        let versions = if self.upstream_http2 {
            tls::Versions::Http2
        } else {
            tls::Versions::Negotiated
        };
        #[cfg(feature = "rustls")]
        let acceptor = self
            .tls
            .map(|tls| tokio_rustls::TlsAcceptor::from(tls.config));
        #[cfg(not(feature = "rustls"))]
        let acceptor = None;
        Ok(Gateway {
            inner: Arc::new(Inner {
                upstream: Upstream {
                    pool: Pool::new(
                        target,
                        tls::connector(roots, versions)?,
                        tls::connector(roots, tls::Versions::Http1)?,
                        versions,
                        self.limits.pool_max_idle_per_host,
                        self.limits.pool_idle_timeout,
                    ),
                    authority,
                    base_path,
                    host: HeaderValue::from_str(upstream.authority().map_or("", |a| a.as_str()))
                        .map_err(|error| InvalidUpstream(error.to_string()))?,
                    forwarded_proto: if acceptor.is_some() { "https" } else { "http" },
                    timeout: self.timeout,
                    body_read_timeout: self.limits.body_read_timeout,
                    forwarded_claims,
                    preserve_host: self.preserve_host,
                    trust_forwarded_headers: self.trust_forwarded_headers,
                    trusted_proxies: self.trusted_proxies,
                },
                mounts: self.mounts,
                limits: self.limits,
                acceptor,
            }),
        })
    }
}

/// Forwards requests to one upstream; see the [module docs](self).
///
/// ```
/// use std::time::Duration;
/// use jwt_gate::gateway::{ClaimMap, Gateway};
/// use jwt_gate::{JwtAuthLayer, Keys, TokenVerifier};
/// use tower::Layer as _;
///
/// let keys = Keys::hs256(b"an example secret of 32 bytes!!!").unwrap();
/// let verifier = TokenVerifier::builder(keys).claims::<ClaimMap>().build();
/// let gateway = Gateway::builder("http://127.0.0.1:8000")
///     .timeout(Duration::from_secs(10))
///     .forward_claim("roles")
///     .build()
///     .unwrap();
/// let service = JwtAuthLayer::new(verifier).open_path("/health").layer(gateway);
/// ```
#[derive(Clone)]
pub struct Gateway {
    inner: Arc<Inner>,
}

struct Inner {
    upstream: Upstream,
    mounts: Vec<Mount>,
    limits: Limits,
    acceptor: Option<conn::Acceptor>,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("upstream", &self.inner.upstream.authority)
            .field("base_path", &self.inner.upstream.base_path)
            .field("timeout", &self.inner.upstream.timeout)
            .field("mounts", &self.inner.mounts)
            .field("limits", &self.inner.limits)
            .field("tls", &self.inner.acceptor.is_some())
            .finish_non_exhaustive()
    }
}

impl Gateway {
    /// Starts configuring a gateway to `upstream` (`http://host:port`, maybe with a path).
    pub fn builder(upstream: impl Into<String>) -> GatewayBuilder {
        GatewayBuilder {
            upstream: upstream.into(),
            timeout: Duration::from_secs(30),
            forwarded_claims: Vec::new(),
            preserve_host: false,
            trust_forwarded_headers: false,
            trusted_proxies: Vec::new(),
            mounts: Vec::new(),
            limits: Limits::default(),
            upstream_http2: false,
            #[cfg(feature = "rustls")]
            upstream_ca_pem: None,
            #[cfg(feature = "rustls")]
            tls: None,
        }
    }
}

impl Service<Request<Incoming>> for Gateway {
    type Response = Response<GatewayBody>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // The client's pool queues requests itself.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Incoming>) -> Self::Future {
        let inner = self.inner.clone();
        Box::pin(async move { Ok(inner.answer(request).await) })
    }
}

impl Inner {
    async fn answer(&self, mut request: Request<Incoming>) -> Response<GatewayBody> {
        match router::mounted(&self.mounts, request.uri().path()) {
            Some(mount) => {
                // In-process services read identity from the extensions; a client's own
                // `x-auth-*` headers must not reach them either.
                proxy::remove_identity(request.headers_mut());
                // In-process, the only long wait is for the client's body (hashing is
                // bounded by its own queue): one that stalls must not hold its connection.
                match tokio::time::timeout(self.upstream.timeout, mount.call(request)).await {
                    Ok(response) => response,
                    Err(_) => {
                        proxy::error_response(http::StatusCode::REQUEST_TIMEOUT, "request_timeout")
                    }
                }
            }
            None => self.upstream.forward(request).await,
        }
    }
}

/// Serves `gateway` behind `layer` on `listener` until the listener fails: HTTP/1.1 and
/// HTTP/2 (h2c by prior knowledge on plain TCP; by ALPN when [`GatewayBuilder::tls`]
/// terminates TLS), WebSocket upgrades relayed as the [module docs](self#protocols) say.
/// Each request carries its client's [`ClientAddr`](crate::ClientAddr). Connections that
/// fail are logged and dropped. Slow and numerous clients are bounded as the
/// [module docs](self#slow-and-numerous-clients) say.
///
/// ```no_run
/// use jwt_gate::gateway::{self, ClaimMap, Gateway};
/// use jwt_gate::{JwtAuthLayer, Keys, TokenVerifier};
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let keys = Keys::hs256(b"an example secret of 32 bytes!!!")?;
/// let layer = JwtAuthLayer::new(TokenVerifier::builder(keys).claims::<ClaimMap>().build());
/// let gateway = Gateway::builder("http://127.0.0.1:8000").build()?;
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
/// gateway::serve(listener, layer, gateway).await?;
/// # Ok(()) }
/// ```
pub async fn serve<C>(
    listener: tokio::net::TcpListener,
    layer: JwtAuthLayer<C>,
    gateway: Gateway,
) -> std::io::Result<()>
where
    C: serde::de::DeserializeOwned + Clone + Send + Sync + 'static,
{
    use tower_layer::Layer as _;
    let limits = gateway.inner.limits;
    let tls = gateway.inner.acceptor.clone();
    conn::serve(
        listener,
        layer.layer(gateway),
        limits,
        tls,
        std::future::pending(),
    )
    .await
}

/// Serves `service` as [`serve`] serves a gateway, with `gateway`'s protocols, TLS and
/// bounds, until `stop` resolves: then no connection is accepted any more (the listener is
/// closed, so new ones are refused) and this returns, while connections already accepted
/// finish the requests they carry and close (HTTP/1.1 once the response under way is sent,
/// HTTP/2 with a GOAWAY). `service` is typically a [`JwtAuthLayer`] in front of a clone of `gateway`,
/// within whatever the program adds around it (the `jwt-gate` program: probes, request ids,
/// per-route timeouts, log lines); waiting for the requests in flight is the caller's.
///
/// ```no_run
/// use jwt_gate::gateway::{self, ClaimMap, Gateway};
/// use jwt_gate::{JwtAuthLayer, Keys, TokenVerifier};
/// use tower::Layer as _;
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let keys = Keys::hs256(b"an example secret of 32 bytes!!!")?;
/// let layer = JwtAuthLayer::new(TokenVerifier::builder(keys).claims::<ClaimMap>().build());
/// let gateway = Gateway::builder("http://127.0.0.1:8000").build()?;
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
/// let stop = async { let _ = tokio::signal::ctrl_c().await; };
/// gateway::serve_until(listener, &gateway, layer.layer(gateway.clone()), stop).await?;
/// # Ok(()) }
/// ```
pub async fn serve_until<S, B>(
    listener: tokio::net::TcpListener,
    gateway: &Gateway,
    service: S,
    stop: impl std::future::Future<Output = ()>,
) -> std::io::Result<()>
where
    S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let tls = gateway.inner.acceptor.clone();
    conn::serve(listener, service, gateway.inner.limits, tls, stop).await
}
