//! The upstream's connections: one pool per [`Gateway`](super::Gateway), so one per worker in
//! the program. HTTP/1.1 connections wait idle on a stack, the most recently used on top; an
//! HTTP/2 connection is shared by every request. A connection goes back on the stack when the
//! response body it carried has been read to its end, from the body itself: no task per
//! request, no lookup by host (a gateway has one upstream).

use std::fmt;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, Uri};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::client::legacy::connect::Connection as _;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use pin_project_lite::pin_project;
use tokio::time::Instant;
use tower_service::Service as _;

use super::limits::TimedBody;
use super::tls::{Connector, Versions};

/// Why a request did not reach the upstream, or its answer did not come back.
#[derive(Debug)]
pub(super) enum PoolError {
    /// No connection could be opened (refused, unresolvable, TLS failed).
    Connect(crate::BoxError),
    /// The connection failed while the request was sent or its answer read.
    Send(hyper::Error),
}

impl PoolError {
    /// The connector's error: a boxed one with TLS, hyper-util's own without.
    fn connect(error: impl Into<crate::BoxError>) -> Self {
        Self::Connect(error.into())
    }
}

impl fmt::Display for PoolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Connect(error) => write!(f, "cannot connect: {error}"),
            Self::Send(error) => write!(f, "{error}"),
        }
    }
}

/// One gateway's connections to its upstream.
#[derive(Clone)]
pub(super) struct Pool(Arc<Shared>);

struct Shared {
    /// `scheme://authority` of the upstream: what the connector dials.
    target: Uri,
    connector: Connector,
    /// HTTP/1.1 only, whatever `connector` offers: upgrades are an HTTP/1.1 mechanism.
    upgrade_connector: Connector,
    http2_only: bool,
    max_idle: usize,
    idle_timeout: Duration,
    idle: Mutex<Idle>,
    /// Whether the task that closes connections idle too long runs. Atomic, not in `idle`:
    /// the task's guard resets it when dropped, perhaps while `idle` is held.
    reaping: AtomicBool,
    /// Held while an HTTP/2-only pool opens its connection, so a burst of first requests
    /// opens one, not one each.
    connecting: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct Idle {
    /// Each with the time it went idle.
    http1: Vec<(http1::SendRequest<TimedBody>, Instant)>,
    http2: Option<http2::SendRequest<TimedBody>>,
    /// Whether a request took the HTTP/2 connection since the reaper last looked.
    http2_used: bool,
}

impl Idle {
    /// Drops the HTTP/1.1 connections closed, or idle for `timeout` by `now`.
    fn drop_stale(&mut self, now: Instant, timeout: Duration) {
        self.http1
            .retain(|(sender, since)| !stale(sender, *since, now, timeout));
    }
}

/// Whether an idle HTTP/1.1 connection may no longer be used: closed, or idle too long.
fn stale(
    sender: &http1::SendRequest<TimedBody>,
    since: Instant,
    now: Instant,
    timeout: Duration,
) -> bool {
    sender.is_closed() || now.saturating_duration_since(since) >= timeout
}

/// A connection a request is sent on.
enum Sender {
    Http1(http1::SendRequest<TimedBody>),
    Http2(http2::SendRequest<TimedBody>),
}

impl Pool {
    pub(super) fn new(
        target: Uri,
        connector: Connector,
        upgrade_connector: Connector,
        versions: Versions,
        max_idle: usize,
        idle_timeout: Duration,
    ) -> Self {
        Self(Arc::new(Shared {
            target,
            connector,
            upgrade_connector,
            http2_only: versions == Versions::Http2,
            max_idle,
            idle_timeout,
            idle: Mutex::new(Idle::default()),
            reaping: AtomicBool::new(false),
            connecting: tokio::sync::Mutex::new(()),
        }))
    }

    /// Sends `request` (its URI in origin form, `/path?query`) on an idle connection, or a
    /// new one, and returns the answer, whose body hands the connection back once read to
    /// its end.
    pub(super) async fn send(
        &self,
        mut request: Request<TimedBody>,
    ) -> Result<Response<UpstreamBody>, PoolError> {
        loop {
            let (sender, reused) = match self.idle_sender() {
                Some(sender) => (sender, true),
                // Boxed: opening a connection (an HTTP/2 handshake among its ways) is a large
                // state machine, and every request's future would otherwise carry and move it.
                None => (Box::pin(self.connect()).await?, false),
            };
            // Whether a failure leaves the connection unusable, so that a retry cannot meet
            // it again: an HTTP/1.1 sender is spent either way, the shared HTTP/2 one only
            // once its connection has closed.
            let (mut failed, spent) = match sender {
                Sender::Http1(mut sender) => {
                    // Closed while idle: the next one, or a new one.
                    if reused && sender.ready().await.is_err() {
                        continue;
                    }
                    match sender.try_send_request(request).await {
                        Ok(response) => {
                            let pool = self.clone();
                            return Ok(
                                response.map(|body| UpstreamBody::pooled(body, pool, sender))
                            );
                        }
                        Err(error) => (error, true),
                    }
                }
                Sender::Http2(mut sender) => {
                    // HTTP/2 names the scheme and authority in the request itself.
                    *request.uri_mut() = self.absolute(request.uri());
                    match sender.try_send_request(request).await {
                        Ok(response) => return Ok(response.map(UpstreamBody::unpooled)),
                        Err(error) => (error, sender.is_closed()),
                    }
                }
            };
            match failed.take_message() {
                // The upstream closed a reused connection just as the request was put on it,
                // before any of it was written: another connection may carry it.
                Some(unsent) if reused && spent => {
                    request = unsent;
                    *request.uri_mut() = origin_form(request.uri());
                }
                _ => return Err(PoolError::Send(failed.into_error())),
            }
        }
    }

    /// Sends a WebSocket handshake on a connection of its own, HTTP/1.1 whatever the pool
    /// speaks: once switched it belongs to the relay and never comes back.
    pub(super) async fn send_upgrade(
        &self,
        request: Request<TimedBody>,
    ) -> Result<Response<UpstreamBody>, PoolError> {
        let io = self.dial(self.0.upgrade_connector.clone()).await?;
        let (mut sender, connection) = http1::handshake(io).await.map_err(PoolError::Send)?;
        tokio::spawn(connection.with_upgrades());
        let response = sender
            .send_request(request)
            .await
            .map_err(PoolError::Send)?;
        Ok(response.map(UpstreamBody::unpooled))
    }

    /// The shared HTTP/2 connection, or the HTTP/1.1 connection used last that is ready for
    /// a request. One still busy (its request body still going up after the upstream
    /// answered) stays for later: a request given to it would wait for another client's
    /// upload. One closed, or idle longer than the idle timeout, is dropped.
    fn idle_sender(&self) -> Option<Sender> {
        let mut idle = self.0.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(http2) = &idle.http2 {
            if !http2.is_closed() {
                let http2 = http2.clone();
                idle.http2_used = true;
                return Some(Sender::Http2(http2));
            }
            idle.http2 = None;
        }
        let now = Instant::now();
        let mut index = idle.http1.len();
        while index > 0 {
            index -= 1;
            let (sender, since) = &idle.http1[index];
            if stale(sender, *since, now, self.0.idle_timeout) {
                idle.http1.remove(index);
            } else if sender.is_ready() {
                return Some(Sender::Http1(idle.http1.remove(index).0));
            }
        }
        None
    }

    /// Takes a connection back once the answer it carried was read to its end. One not yet
    /// ready (its request body still going up after the upstream answered early) comes back
    /// only once ready, so busy connections never fill the idle stack.
    fn put_back(&self, mut sender: http1::SendRequest<TimedBody>) {
        if sender.is_closed() {
            return;
        }
        if !sender.is_ready() {
            // Rare: the connection task readies a connection before its body ends.
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                let pool = self.clone();
                let wait = tokio::time::timeout(self.0.idle_timeout, async move {
                    if sender.ready().await.is_ok() {
                        pool.put_back(sender);
                    }
                });
                runtime.spawn(wait);
            }
            return;
        }
        let now = Instant::now();
        let mut idle = self.0.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.http1.len() >= self.0.max_idle {
            idle.drop_stale(now, self.0.idle_timeout);
            if idle.http1.len() >= self.0.max_idle {
                // The oldest goes (and its connection closes): the newest is the likeliest
                // to be reused before the upstream's own keep-alive ends.
                idle.http1.remove(0);
            }
        }
        idle.http1.push((sender, now));
        drop(idle);
        self.reap();
    }

    /// Starts the reaper unless it runs. Outside a Tokio runtime (a body dropped there) it
    /// is left for the next time, so a drop never panics.
    fn reap(&self) {
        if self.0.reaping.swap(true, Ordering::AcqRel) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            self.0.reaping.store(false, Ordering::Release);
            return;
        };
        // Made out here, so that a task dropped before it first runs (its runtime shutting
        // down) still lets the next hand-back start another.
        let guard = Reaping(Arc::downgrade(&self.0));
        runtime.spawn(async move {
            let guard = guard;
            reap(&guard.0).await;
        });
    }

    async fn connect(&self) -> Result<Sender, PoolError> {
        if !self.0.http2_only {
            return self.handshake().await;
        }
        let _connecting = self.0.connecting.lock().await;
        // Another request may have opened it while this one waited.
        if let Some(sender) = self.idle_sender() {
            return Ok(sender);
        }
        self.handshake().await
    }

    /// Opens a connection, HTTP/2 when the pool speaks only that or the upstream chose it
    /// by ALPN, HTTP/1.1 otherwise.
    async fn handshake(&self) -> Result<Sender, PoolError> {
        let io = self.dial(self.0.connector.clone()).await?;
        if self.0.http2_only || io.connected().is_negotiated_h2() {
            let (sender, connection) = http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .handshake(io)
                .await
                .map_err(PoolError::Send)?;
            tokio::spawn(connection);
            let mut idle = self.0.idle.lock().unwrap_or_else(PoisonError::into_inner);
            // A burst of first requests over `https://` may each have negotiated HTTP/2: the
            // first open one stays shared, the others close after their request.
            if idle
                .http2
                .as_ref()
                .is_none_or(http2::SendRequest::is_closed)
            {
                idle.http2 = Some(sender.clone());
            }
            idle.http2_used = true;
            drop(idle);
            self.reap();
            return Ok(Sender::Http2(sender));
        }
        let (sender, connection) = http1::handshake(io).await.map_err(PoolError::Send)?;
        tokio::spawn(connection);
        Ok(Sender::Http1(sender))
    }

    /// `uri` with the upstream's scheme and authority.
    fn absolute(&self, uri: &Uri) -> Uri {
        let mut parts = http::uri::Parts::from(self.0.target.clone());
        parts.path_and_query = uri.path_and_query().cloned();
        Uri::from_parts(parts).unwrap_or_else(|_| self.0.target.clone())
    }

    async fn dial(
        &self,
        mut connector: Connector,
    ) -> Result<<Connector as tower_service::Service<Uri>>::Response, PoolError> {
        std::future::poll_fn(|cx| connector.poll_ready(cx))
            .await
            .map_err(PoolError::connect)?;
        connector
            .call(self.0.target.clone())
            .await
            .map_err(PoolError::connect)
    }
}

/// Marks the reaper stopped when its task ends or is dropped, so the next hand-back starts
/// another if the pool lives on.
struct Reaping(Weak<Shared>);

impl Drop for Reaping {
    fn drop(&mut self) {
        if let Some(shared) = self.0.upgrade() {
            shared.reaping.store(false, Ordering::Release);
        }
    }
}

/// Closes, every `idle_timeout`, the HTTP/1.1 connections idle for longer and the HTTP/2
/// connection if no request took it since the last look, until the pool is dropped.
async fn reap(shared: &Weak<Shared>) {
    let Some(every) = shared.upgrade().map(|shared| shared.idle_timeout) else {
        return;
    };
    loop {
        // Not more often than ten times a second, however short the timeout.
        tokio::time::sleep(every.max(Duration::from_millis(100))).await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let mut idle = shared.idle.lock().unwrap_or_else(PoisonError::into_inner);
        idle.drop_stale(Instant::now(), every);
        if !std::mem::take(&mut idle.http2_used) {
            // Closes once its open streams end: every other handle is a request's.
            idle.http2 = None;
        }
    }
}

/// `/path?query` of a URI (`/` for an absolute one with no path): an HTTP/1.1 request line
/// names only that.
pub(super) fn origin_form(uri: &Uri) -> Uri {
    let mut parts = http::uri::Parts::default();
    parts.path_and_query = Some(
        uri.path_and_query()
            .cloned()
            .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/")),
    );
    Uri::from_parts(parts).unwrap_or_else(|_| Uri::from_static("/"))
}

pin_project! {
    /// An upstream's response body, streamed; read to its end, it hands its HTTP/1.1
    /// connection back to the gateway's pool for the next request.
    pub struct UpstreamBody {
        #[pin]
        body: Incoming,
        ended: bool,
        connection: Option<(Pool, http1::SendRequest<TimedBody>)>,
    }

    impl PinnedDrop for UpstreamBody {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            // A body dropped before its end leaves unread bytes on the connection: it
            // closes with the last handle.
            if *this.ended || this.body.is_end_stream() {
                if let Some((pool, sender)) = this.connection.take() {
                    pool.put_back(sender);
                }
            }
        }
    }
}

impl UpstreamBody {
    fn pooled(body: Incoming, pool: Pool, sender: http1::SendRequest<TimedBody>) -> Self {
        Self {
            body,
            ended: false,
            connection: Some((pool, sender)),
        }
    }

    fn unpooled(body: Incoming) -> Self {
        Self {
            body,
            ended: false,
            connection: None,
        }
    }
}

impl fmt::Debug for UpstreamBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpstreamBody").finish_non_exhaustive()
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.project();
        let frame = std::task::ready!(this.body.poll_frame(cx));
        // Trailers are the last frame; servers drop the body once they have them.
        let last = match &frame {
            None => true,
            Some(Ok(frame)) => frame.is_trailers(),
            Some(Err(_)) => false,
        };
        if last {
            *this.ended = true;
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.ended || self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
