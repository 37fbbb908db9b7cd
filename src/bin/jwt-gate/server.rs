//! Serving: the connection loop shared by `proxy`, `forward-auth` and `serve` (the bounds on
//! connections, graceful shutdown), and what the program adds around every request: the
//! probes, the request id, per-route upstream timeouts and one log line per request.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use http::{Method, Request, Response, StatusCode};
use http_body::Body;
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use jwt_gate::gateway::{AdmittingListener, ClaimMap, ConnectionAdmission};
use jwt_gate::revocation::RedisRevocations;
use jwt_gate::{BoxError, Claims, ClientAddr, Keys};
use tower_service::Service;

use crate::config::{Config, Route};

/// The request id header: the client's (or front server's) when it is a sensible one, made
/// here otherwise; sent upstream and back to the client.
static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The bounds of the connection loop.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub(crate) header_read_timeout: Duration,
    pub(crate) max_connections: usize,
    /// How long in-flight requests may take to finish once shutdown began.
    pub(crate) drain: Duration,
    /// New connections per client address, if limited.
    pub(crate) admission: Option<ConnectionAdmission>,
}

/// SIGTERM or SIGINT (Ctrl-C), whichever comes first, listened for from this call on.
///
/// Not from the first poll: the workers serve before the program polls this, and a signal
/// that arrives once tokio's handler is in place but before anyone listens is dropped (its
/// drivers, one per worker runtime, broadcast it to no one), so an orchestrator stopping an
/// instance that has just answered its first request would be ignored until it kills it.
pub(crate) fn shutdown_signal() -> impl Future<Output = ()> {
    use tokio::signal::unix::{signal, Signal, SignalKind};
    let listen = |kind: SignalKind, name: &'static str| {
        signal(kind)
            .inspect_err(|error| tracing::warn!(%error, signal = name, "cannot listen for it"))
            .ok()
    };
    let mut terminate = listen(SignalKind::terminate(), "SIGTERM");
    let mut interrupt = listen(SignalKind::interrupt(), "SIGINT");
    async move {
        async fn next(signal: Option<&mut Signal>) {
            match signal {
                Some(signal) => {
                    signal.recv().await;
                }
                None => std::future::pending().await,
            }
        }
        tokio::select! {
            () = next(terminate.as_mut()) => {}
            () = next(interrupt.as_mut()) => {}
        }
    }
}

/// Serves `service` on `listener`, HTTP/1.1, each request with its [`ClientAddr`], until
/// `shutdown` resolves. Then the listener is closed at once (new connections are refused),
/// idle connections are closed, and requests in flight have `limits.drain` to finish before
/// their connections are dropped.
pub(crate) async fn serve<S, B>(
    listener: tokio::net::TcpListener,
    service: S,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) where
    S: Service<Request<Incoming>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut listener = AdmittingListener::new(listener, limits.admission);
    let connections = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    tokio::pin!(shutdown);
    loop {
        // A permit before accepting: past the cap, new connections wait in the kernel's
        // backlog instead of taking memory and file descriptors here.
        let permit = tokio::select! {
            permit = connections.clone().acquire_owned() => permit.expect("never closed"),
            () = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Running out of file descriptors passes; a busy loop would not help it.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let service = service.clone();
        let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
            request.extensions_mut().insert(ClientAddr(peer));
            let mut service = service.clone();
            async move {
                std::future::poll_fn(|cx| service.poll_ready(cx)).await?;
                service.call(request).await
            }
        });
        let connection = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_read_timeout)
            .serve_connection(TokioIo::new(stream), service);
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%peer, %error, "connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    let open = graceful.count();
    tracing::info!(
        connections = open,
        "shutting down: new connections refused, draining requests in flight"
    );
    match tokio::time::timeout(limits.drain, graceful.shutdown()).await {
        Ok(()) => tracing::info!("drained; exiting"),
        Err(_) => tracing::warn!(
            drain = ?limits.drain,
            "requests still in flight at the drain deadline; exiting without them"
        ),
    }
}

/// What readiness looks at: the Redis mirror (when revocations live in Redis) and every
/// remote issuer's key set.
#[derive(Clone, Default)]
pub(crate) struct Health {
    pub(crate) redis: Option<RedisRevocations>,
    pub(crate) issuers: Vec<(String, Keys)>,
}

impl Health {
    /// What is unhealthy, by name: `revocation_store` while the Redis mirror is not current
    /// (the gate then fails closed), `issuer <iss>` while an issuer's key set is empty (its
    /// JWKS gave no usable key for longer than the stale limit: its tokens are refused).
    fn failing(&self) -> Vec<String> {
        let mut failing = Vec::new();
        if self
            .redis
            .as_ref()
            .is_some_and(|redis| !redis.mirror_is_current())
        {
            failing.push("revocation_store".to_owned());
        }
        for (issuer, keys) in &self.issuers {
            if keys.kids().is_empty() {
                failing.push(format!("issuer {issuer}"));
            }
        }
        failing
    }
}

/// A configured route, as the program matches it for timeouts and log lines.
#[derive(Debug, Clone)]
struct RouteRule {
    methods: Option<Vec<Method>>,
    /// The path, or the prefix without `/*`.
    path: String,
    prefix: bool,
    /// As written in the file, for log lines.
    label: String,
    timeout: Option<Duration>,
}

impl RouteRule {
    fn new(route: &Route) -> Self {
        let written = route.path.get_ref();
        let (path, prefix) = match written.strip_suffix("/*") {
            Some(prefix) => (prefix.to_owned(), true),
            None => (written.clone(), false),
        };
        Self {
            methods: route.methods.as_ref().map(|methods| {
                methods
                    .get_ref()
                    .iter()
                    .filter_map(|method| Method::from_bytes(method.as_bytes()).ok())
                    .collect()
            }),
            path,
            prefix,
            label: written.clone(),
            timeout: route
                .timeout_seconds
                .as_ref()
                .map(|seconds| Duration::from_secs(*seconds.get_ref())),
        }
    }

    /// How closely the rule matches, ranked as the gate ranks its rules (an exact path beats
    /// a prefix, a longer prefix a shorter, a rule for the method one for all), or `None`.
    fn rank(&self, method: &Method, path: &str) -> Option<(bool, usize, bool)> {
        let under = if self.prefix {
            path.strip_prefix(&self.path)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
        } else {
            path == self.path
        };
        let method_specific = match &self.methods {
            Some(methods) if methods.contains(method) => true,
            Some(_) => return None,
            None => false,
        };
        under.then_some((!self.prefix, self.path.len(), method_specific))
    }
}

/// The program's part of every request; see [`Ops`].
struct OpsShared {
    live_path: String,
    ready_path: String,
    health: Health,
    routes: Vec<RouteRule>,
    /// The time a request whose route sets none may take.
    default_timeout: Option<Duration>,
    /// The gateway's own upstream timeout ([`longest_timeout`]): a request allowed that
    /// long needs no second timer here. Unbounded where no gateway runs.
    gateway_timeout: Duration,
    /// The answer when the time is up: the upstream's `504` (`proxy`), or the client's `408`
    /// (`serve`, `forward-auth`, where only a stalled body takes that long).
    timed_out: (StatusCode, &'static str),
    /// Log the request the front server asks about (forward-auth), not its check.
    original: bool,
    /// Requests whose response body has not been sent whole yet.
    in_flight: Arc<InFlight>,
    /// Request ids made here: a random prefix for this process, and a counter.
    id_prefix: u64,
    next_id: AtomicU64,
}

/// Around the gate: answers the probes, gives each request an id, bounds the upstream's
/// time by route, and logs one line per request with its id, route, status, latency and
/// verified `sub` (never a token, never the query).
#[derive(Clone)]
pub(crate) struct Ops<S> {
    inner: S,
    shared: Arc<OpsShared>,
}

impl<S> Ops<S> {
    /// `inner` with the probes of `config`, for `command`: `proxy` applies the routes' (and
    /// the default) upstream timeouts; `forward-auth` logs the original request's method and
    /// path (from `X-Original-*` or `X-Forwarded-*`) rather than those of the check.
    pub(crate) fn new(inner: S, config: &Config, health: Health, command: Kind) -> Self {
        let timeouts = command == Kind::Proxy;
        let path = |path: &Option<toml::Spanned<String>>, default: &str| {
            path.as_ref()
                .map_or(default, |path| path.get_ref())
                .to_owned()
        };
        let mut random = [0u8; 8];
        let _ = getrandom::getrandom(&mut random);
        // `proxy`: the upstream's time, by route. `serve` and `forward-auth`: how long any
        // request may take, so that one whose body stalls cannot hold its connection.
        let default_timeout = Some(Duration::from_secs(
            config.limits.upstream_timeout_seconds.unwrap_or(30),
        ));
        let routes = config
            .routes
            .iter()
            .map(RouteRule::new)
            .map(|mut rule| {
                if !timeouts {
                    rule.timeout = None;
                }
                rule
            })
            .collect();
        Self {
            inner,
            shared: Arc::new(OpsShared {
                live_path: path(&config.health.live_path, crate::config::DEFAULT_LIVE_PATH),
                ready_path: path(&config.health.ready_path, crate::config::DEFAULT_READY_PATH),
                health,
                routes,
                default_timeout,
                gateway_timeout: if timeouts {
                    longest_timeout(config)
                } else {
                    Duration::MAX
                },
                timed_out: if timeouts {
                    (
                        StatusCode::GATEWAY_TIMEOUT,
                        r#"{"error":"gateway_timeout"}"#,
                    )
                } else {
                    (
                        StatusCode::REQUEST_TIMEOUT,
                        r#"{"error":"request_timeout"}"#,
                    )
                },
                original: command == Kind::ForwardAuth,
                in_flight: Arc::default(),
                id_prefix: u64::from_le_bytes(random),
                next_id: AtomicU64::new(0),
            }),
        }
    }
}

impl<S> Ops<S> {
    /// `inner` with the same probes, routes, request ids and in-flight count as this: one
    /// per worker, around that worker's gateway.
    pub(crate) fn around<T>(&self, inner: T) -> Ops<T> {
        Ops {
            inner,
            shared: self.shared.clone(),
        }
    }

    /// What [`drain`] waits on.
    pub(crate) fn in_flight(&self) -> Arc<InFlight> {
        self.shared.in_flight.clone()
    }
}

/// The requests in flight, each counted until its response body is over (sent whole, failed
/// or dropped), so a drain waits for a download or a stream under way, not just its head.
#[derive(Debug, Default)]
pub(crate) struct InFlight {
    count: AtomicU64,
    idle: tokio::sync::Notify,
}

/// One request in flight, until dropped.
struct Flying(Arc<InFlight>);

impl Flying {
    fn new(in_flight: &Arc<InFlight>) -> Self {
        in_flight.count.fetch_add(1, Ordering::AcqRel);
        Self(in_flight.clone())
    }
}

impl Drop for Flying {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

/// After the listener closed: waits until no request is in flight, for at most `deadline`.
pub(crate) async fn drain(in_flight: &InFlight, deadline: Duration) {
    let count = in_flight.count.load(Ordering::Acquire);
    tracing::info!(
        requests = count,
        "shutting down: new connections refused, draining requests in flight"
    );
    let idle = async {
        loop {
            let notified = in_flight.idle.notified();
            if in_flight.count.load(Ordering::Acquire) == 0 {
                return;
            }
            notified.await;
        }
    };
    match tokio::time::timeout(deadline, idle).await {
        Ok(()) => tracing::info!("drained; exiting"),
        Err(_) => tracing::warn!(
            drain = ?deadline,
            "requests still in flight at the drain deadline; exiting without them"
        ),
    }
}

/// Which command an [`Ops`] serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Proxy,
    ForwardAuth,
    Serve,
}

/// The method and path of the request forward-auth is asked about, when named.
fn original(request: &Request<Incoming>) -> Option<(Method, String)> {
    let header = |names: [&str; 2]| names.iter().find_map(|name| request.headers().get(*name));
    let uri = header(["x-original-uri", "x-forwarded-uri"])?
        .to_str()
        .ok()?;
    let method = header(["x-original-method", "x-forwarded-method"])?;
    let method = Method::from_bytes(method.as_bytes()).ok()?;
    // Never the query: it may carry a token.
    let path = uri.split_once('?').map_or(uri, |(path, _)| path);
    Some((method, path.to_owned()))
}

/// The longest upstream timeout `config` asks for: the gateway's own must not cut a route's
/// longer one short.
pub(crate) fn longest_timeout(config: &Config) -> Duration {
    let default = config.limits.upstream_timeout_seconds.unwrap_or(30);
    let longest = config
        .routes
        .iter()
        .filter_map(|route| route.timeout_seconds.as_ref().map(|s| *s.get_ref()))
        .fold(default, u64::max);
    Duration::from_secs(longest)
}

/// A request id the program passes on as it came: 1 to 128 visible ASCII characters.
fn usable_request_id(value: &HeaderValue) -> bool {
    (1..=128).contains(&value.len()) && value.as_bytes().iter().all(|byte| byte.is_ascii_graphic())
}

/// The body of a response: the inner service's, still counted in flight, or one made here.
pub(crate) type OpsBody<B> = Either<InFlightBody<B>, Full<Bytes>>;

pin_project_lite::pin_project! {
    /// A response body whose request stays in flight until the body ends or is dropped.
    pub(crate) struct InFlightBody<B> {
        #[pin]
        inner: B,
        flying: Option<Flying>,
    }
}

impl<B: Body> Body for InFlightBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<B::Data>, B::Error>>> {
        let this = self.project();
        let frame = std::task::ready!(this.inner.poll_frame(cx));
        if !matches!(frame, Some(Ok(_))) {
            // The end, or a failure that ends it: no need to wait for hyper to drop it.
            this.flying.take();
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

fn local(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// The verified subject, put into the response's extensions by [`CaptureSub`] for the log
/// line.
#[derive(Debug, Clone)]
pub(crate) struct VerifiedSub(String);

/// Whether the request log line (`jwt_gate::request` at INFO) is written: what it needs is
/// copied only then.
fn request_logged() -> bool {
    tracing::enabled!(target: REQUEST_LOG, tracing::Level::INFO)
}

/// The request log line's target.
const REQUEST_LOG: &str = "jwt_gate::request";

/// The log label of the route at `index` in `shared`'s routes; `default` for none.
fn label(shared: &OpsShared, route: Option<usize>) -> &str {
    route.map_or("default", |index| shared.routes[index].label.as_str())
}

impl<S, B> Service<Request<Incoming>> for Ops<S>
where
    S: Service<Request<Incoming>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = Response<OpsBody<B>>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<Incoming>) -> Self::Future {
        let started = Instant::now();
        let shared = self.shared.clone();
        let probe = request.method() == Method::GET || request.method() == Method::HEAD;
        if probe && request.uri().path() == shared.live_path {
            let response = local(StatusCode::OK, r#"{"status":"live"}"#.to_owned());
            return Box::pin(std::future::ready(Ok(response.map(Either::Right))));
        }
        if probe && request.uri().path() == shared.ready_path {
            let failing = shared.health.failing();
            let response = if failing.is_empty() {
                local(StatusCode::OK, r#"{"status":"ready"}"#.to_owned())
            } else {
                let body = serde_json::json!({ "status": "unready", "failing": failing });
                local(StatusCode::SERVICE_UNAVAILABLE, body.to_string())
            };
            return Box::pin(std::future::ready(Ok(response.map(Either::Right))));
        }
        let id = match request.headers().get(&REQUEST_ID) {
            Some(id) if usable_request_id(id) => id.clone(),
            _ => {
                let n = shared.next_id.fetch_add(1, Ordering::Relaxed);
                HeaderValue::try_from(format!("{:016x}-{n:x}", shared.id_prefix))
                    .expect("hex digits and a dash")
            }
        };
        request.headers_mut().insert(REQUEST_ID.clone(), id.clone());
        let original = shared.original.then(|| original(&request)).flatten();
        let (method, path) = match &original {
            Some((method, path)) => (method, path.as_str()),
            None => (request.method(), request.uri().path()),
        };
        let route = shared
            .routes
            .iter()
            .enumerate()
            .filter_map(|(index, rule)| rule.rank(method, path).map(|rank| (rank, index)))
            .max_by_key(|(rank, _)| *rank)
            .map(|(_, index)| index);
        let timeout = shared
            .routes
            .iter()
            .filter(|rule| rule.timeout.is_some())
            .filter_map(|rule| rule.rank(method, path).map(|rank| (rank, rule)))
            .max_by_key(|(rank, _)| *rank)
            .and_then(|(_, rule)| rule.timeout)
            .or(shared.default_timeout)
            .filter(|timeout| *timeout < shared.gateway_timeout);
        // Copied only for the log line, when it is written.
        let logged = request_logged().then(|| (method.clone(), path.to_owned()));
        let flying = Flying::new(&shared.in_flight);
        let future = self.inner.call(request);
        Box::pin(async move {
            let answered = match timeout {
                Some(timeout) => tokio::time::timeout(timeout, future).await.ok(),
                None => Some(future.await),
            };
            let mut response = match answered {
                Some(Ok(response)) => response.map(|inner| {
                    Either::Left(InFlightBody {
                        inner,
                        flying: Some(flying),
                    })
                }),
                Some(Err(never)) => match never {},
                None => {
                    let seconds = timeout.map_or(0, |timeout| timeout.as_secs());
                    let label = label(&shared, route);
                    tracing::warn!(route = %label, timeout_seconds = seconds, "request timed out");
                    let (status, body) = shared.timed_out;
                    local(status, body.to_owned()).map(Either::Right)
                }
            };
            if let Some((method, path)) = logged {
                let sub = match response.extensions().get::<VerifiedSub>() {
                    Some(VerifiedSub(sub)) => Some(sub.as_str()),
                    // forward-auth answers with the identity for the front server.
                    None => response
                        .headers()
                        .get("x-auth-sub")
                        .and_then(|sub| sub.to_str().ok()),
                };
                tracing::info!(
                    target: REQUEST_LOG,
                    request_id = id.to_str().unwrap_or_default(),
                    method = %method,
                    // A string, quoted in text logs: forward-auth's path comes from a header
                    // and may hold spaces (`/x status=200 sub=admin` would forge fields).
                    path = path.as_str(),
                    route = %label(&shared, route),
                    status = response.status().as_u16(),
                    latency_ms = started.elapsed().as_secs_f64() * 1e3,
                    sub = sub.unwrap_or_default(),
                );
            }
            response.headers_mut().insert(REQUEST_ID.clone(), id);
            Ok(response)
        })
    }
}

/// Between the gate and the gateway: notes the verified `sub` in the response's extensions,
/// for [`Ops`]' log line, when that line is written.
#[derive(Clone)]
pub(crate) struct CaptureSub<S>(pub(crate) S);

impl<S, B> Service<Request<Incoming>> for CaptureSub<S>
where
    S: Service<Request<Incoming>, Response = Response<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = CaptureSubFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Incoming>) -> Self::Future {
        let sub = request_logged()
            .then(|| request.extensions().get::<Claims<ClaimMap>>())
            .flatten()
            .map(|claims| VerifiedSub(claims.sub.clone()));
        CaptureSubFuture {
            inner: self.0.call(request),
            sub,
        }
    }
}

pin_project_lite::pin_project! {
    /// [`CaptureSub`]'s future: the inner one's response, with the `sub` noted.
    pub(crate) struct CaptureSubFuture<F> {
        #[pin]
        inner: F,
        sub: Option<VerifiedSub>,
    }
}

impl<F, B, E> Future for CaptureSubFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut response = std::task::ready!(this.inner.poll(cx))?;
        if let Some(sub) = this.sub.take() {
            response.extensions_mut().insert(sub);
        }
        Poll::Ready(Ok(response))
    }
}
