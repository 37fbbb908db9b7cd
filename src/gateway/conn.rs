//! Serving client connections: HTTP/1.1 (with upgrades) and HTTP/2, over plain TCP (h2c by
//! prior knowledge) or TLS (by ALPN), within the gateway's bounds.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use pin_project_lite::pin_project;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;
use tower_service::Service;

use super::admission::AdmittingListener;
use super::limits::Limits;
use crate::{BoxError, ClientAddr};

/// What terminates TLS on accepted connections (feature `rustls`).
#[cfg(feature = "rustls")]
pub(super) type Acceptor = tokio_rustls::TlsAcceptor;
/// Without the `rustls` feature there is no TLS termination: never made.
#[cfg(not(feature = "rustls"))]
#[derive(Clone)]
pub(super) enum Acceptor {}

/// The connection's slot under [`Limits::max_connections`], put into the extensions of
/// requests asking for a protocol upgrade: a relayed WebSocket keeps it until it closes, so
/// tunnels count towards the cap like the connections they were.
#[derive(Clone)]
pub(super) struct ConnectionSlot {
    _permit: Arc<OwnedSemaphorePermit>,
}

/// The HTTP/2 client connection preface (RFC 9113 §3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Serves `service` on `listener` within `limits`, each request with its [`ClientAddr`]:
/// the proxy and forward-auth alike. With `tls`, every connection is TLS first. Once `stop`
/// resolves, no connection is accepted any more (the listener is closed) and this returns;
/// connections already accepted finish the requests they carry and close (HTTP/1.1 after
/// the response under way, HTTP/2 with a GOAWAY), so a client that keeps its connection
/// busy cannot hold a drain to its deadline.
pub(super) async fn serve<S, B>(
    listener: tokio::net::TcpListener,
    service: S,
    limits: Limits,
    tls: Option<Acceptor>,
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
    let builders = Arc::new(Builders::new(&limits));
    let mut listener = AdmittingListener::new(listener, limits.admission);
    let connections = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    // Dropped when this returns, which every connection hears as "stop".
    let serving = Serving::default();
    let stopped = serving.0.clone();
    tokio::pin!(stop);
    loop {
        // A permit before accepting: past the cap, new connections wait in the kernel's
        // backlog instead of taking memory and file descriptors here.
        let permit = tokio::select! {
            permit = connections.clone().acquire_owned() => permit,
            () = &mut stop => return Ok(()),
        };
        let Ok(permit) = permit else {
            unreachable!("the semaphore is never closed");
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut stop => return Ok(()),
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // Running out of file descriptors passes; a busy loop would not help it.
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // Responses are written as their head and body become ready, often in two writes:
        // with Nagle's algorithm the second waits for the client's (delayed) ACK of the
        // first. nginx sets TCP_NODELAY on its connections for the same reason.
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%peer, %error, "cannot set TCP_NODELAY");
        }
        let service = WithPeer {
            peer: ClientAddr(peer),
            slot: ConnectionSlot {
                _permit: Arc::new(permit),
            },
            streams: None,
            inner: service.clone(),
        };
        let (builders, tls, stopped) = (builders.clone(), tls.clone(), stopped.clone());
        tokio::spawn(async move {
            if let Err(error) = serve_connection(stream, service, &builders, tls, stopped).await {
                tracing::debug!(%peer, %error, "connection ended with an error");
            }
        });
    }
}

/// One builder per protocol. The protocol is chosen here (by ALPN, or by the first bytes
/// within the header read timeout) rather than by hyper-util's auto builder, whose guess has
/// no time limit and which makes it again, whatever it is told, on connections with
/// upgrades.
struct Builders {
    http1: http1::Builder,
    http2: http2::Builder<TokioExecutor>,
    /// How long a connection may take to say which protocol it speaks (TLS handshake
    /// included), and an HTTP/2 connection may have no request open before it is closed:
    /// the header read timeout, which bounds an idle HTTP/1.1 connection the same way.
    header_read_timeout: Duration,
}

impl Builders {
    fn new(limits: &Limits) -> Self {
        let mut http1 = http1::Builder::new();
        http1
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_read_timeout);
        let mut http2 = http2::Builder::new(TokioExecutor::new());
        http2
            .timer(TokioTimer::new())
            // Pings find peers that vanished without closing; idle ones are closed below.
            .keep_alive_interval(limits.header_read_timeout)
            .keep_alive_timeout(limits.header_read_timeout)
            .max_concurrent_streams(MAX_CONCURRENT_STREAMS);
        Self {
            http1,
            http2,
            header_read_timeout: limits.header_read_timeout,
        }
    }
}

/// Requests one HTTP/2 connection may have open at once (hyper's default, stated).
const MAX_CONCURRENT_STREAMS: u32 = 200;

async fn serve_connection<S, B>(
    stream: TcpStream,
    service: WithPeer<S>,
    builders: &Builders,
    tls: Option<Acceptor>,
    stopped: Stopped,
) -> Result<(), BoxError>
where
    S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let deadline = builders.header_read_timeout;
    let Some(tls) = tls else {
        let http2 = tokio::time::timeout(deadline, starts_with_preface(&stream))
            .await
            .map_err(|_| "no request within the header read timeout")??;
        return drive(stream, http2, service, builders, stopped).await;
    };
    #[cfg(feature = "rustls")]
    {
        let stream = tokio::time::timeout(deadline, tls.accept(stream))
            .await
            .map_err(|_| "no TLS handshake within the header read timeout")??;
        let http2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
        drive(stream, http2, service, builders, stopped).await
    }
    #[cfg(not(feature = "rustls"))]
    match tls {}
}

/// Whether the client opens with the HTTP/2 preface (h2c by prior knowledge), from bytes
/// peeked at, not read, so the chosen protocol still sees them all.
async fn starts_with_preface(stream: &TcpStream) -> std::io::Result<bool> {
    let mut buffer = [0; H2_PREFACE.len()];
    loop {
        let peeked = stream.peek(&mut buffer).await?;
        if peeked == 0 || buffer[..peeked] != H2_PREFACE[..peeked] {
            return Ok(false);
        }
        if peeked == H2_PREFACE.len() {
            return Ok(true);
        }
        // Part of the preface: peeking again at once would see the same bytes.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Whether the server still accepts, shared by its connections.
#[derive(Default)]
struct StopState {
    stopped: AtomicBool,
    notify: tokio::sync::Notify,
}

/// Held by the accept loop: dropping it tells every connection to finish up.
#[derive(Default)]
struct Serving(Arc<StopState>);

impl Drop for Serving {
    fn drop(&mut self) {
        self.0.stopped.store(true, Ordering::Release);
        self.0.notify.notify_waiters();
    }
}

/// A connection's view of [`Serving`].
type Stopped = Arc<StopState>;

/// Resolves once the server stops accepting. The waker is registered on the first poll
/// only: a connection's task is polled several times a request, and re-registering (a lock
/// in `Notify`) each time would be paid on every one of them; a tokio task's waker does not
/// change, and a poll after that is one atomic load.
async fn stop_heard(stopped: &StopState) {
    let notified = stopped.notify.notified();
    tokio::pin!(notified);
    // Registered before the flag is read, so a stop in between is not missed.
    let mut registered = false;
    std::future::poll_fn(|cx| {
        if !registered {
            registered = true;
            if notified.as_mut().poll(cx).is_ready() {
                return Poll::Ready(());
            }
        }
        if stopped.stopped.load(Ordering::Acquire) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
    .await;
}

async fn drive<I, S, B>(
    io: I,
    http2: bool,
    mut service: WithPeer<S>,
    builders: &Builders,
    stopped: Stopped,
) -> Result<(), BoxError>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let io = TokioIo::new(io);
    if !http2 {
        let service = hyper_util::service::TowerToHyperService::new(service);
        let connection = builders.http1.serve_connection(io, service).with_upgrades();
        tokio::pin!(connection);
        tokio::select! {
            biased;
            served = connection.as_mut() => return Ok(served?),
            () = stop_heard(&stopped) => connection.as_mut().graceful_shutdown(),
        }
        return Ok(connection.await?);
    }
    let streams = service.streams.get_or_insert_with(Streams::default).clone();
    let connection = builders
        .http2
        .serve_connection(io, hyper_util::service::TowerToHyperService::new(service));
    tokio::pin!(connection);
    let idle = streams.idle_for(builders.header_read_timeout);
    tokio::pin!(idle);
    tokio::select! {
        biased;
        served = connection.as_mut() => return Ok(served?),
        () = idle => connection.as_mut().graceful_shutdown(),
        () = stop_heard(&stopped) => connection.as_mut().graceful_shutdown(),
    }
    Ok(connection.await?)
}

/// The requests open on one HTTP/2 connection, and when the last one ended.
#[derive(Clone)]
struct Streams(Arc<Mutex<(usize, Instant)>>);

impl Default for Streams {
    fn default() -> Self {
        Self(Arc::new(Mutex::new((0, Instant::now()))))
    }
}

impl Streams {
    fn open(&self) -> StreamGuard {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).0 += 1;
        StreamGuard(self.clone())
    }

    /// Resolves once no request has been open for `timeout`.
    async fn idle_for(&self, timeout: Duration) {
        loop {
            let (open, since) = *self.0.lock().unwrap_or_else(|e| e.into_inner());
            if open == 0 && since.elapsed() >= timeout {
                return;
            }
            let wake = if open == 0 {
                since + timeout
            } else {
                Instant::now() + timeout
            };
            tokio::time::sleep_until(wake).await;
        }
    }
}

/// One open request: its response future, then its response body, until either is dropped.
struct StreamGuard(Streams);

impl Drop for StreamGuard {
    fn drop(&mut self) {
        let mut state = (self.0).0.lock().unwrap_or_else(|e| e.into_inner());
        state.0 -= 1;
        state.1 = Instant::now();
    }
}

/// Puts the connection's [`ClientAddr`] into each of its requests (and its
/// [`ConnectionSlot`] into upgrade requests); on HTTP/2, counts the open requests.
#[derive(Clone)]
struct WithPeer<S> {
    peer: ClientAddr,
    slot: ConnectionSlot,
    streams: Option<Streams>,
    inner: S,
}

impl<S, B> Service<Request<Incoming>> for WithPeer<S>
where
    S: Service<Request<Incoming>, Response = Response<B>>,
{
    type Response = Response<Tracked<B>>;
    type Error = S::Error;
    type Future = TrackedFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<Incoming>) -> Self::Future {
        request.extensions_mut().insert(self.peer);
        if request.headers().contains_key(http::header::UPGRADE) {
            request.extensions_mut().insert(self.slot.clone());
        }
        TrackedFuture {
            inner: self.inner.call(request),
            guard: self.streams.as_ref().map(Streams::open),
        }
    }
}

pin_project! {
    /// A response future that keeps its request counted as open.
    struct TrackedFuture<F> {
        #[pin]
        inner: F,
        guard: Option<StreamGuard>,
    }
}

impl<F, B, E> Future for TrackedFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<Tracked<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let response = std::task::ready!(this.inner.poll(cx))?;
        let guard = this.guard.take();
        Poll::Ready(Ok(response.map(|inner| Tracked { inner, guard })))
    }
}

pin_project! {
    /// A response body that keeps its request counted as open until it is dropped.
    struct Tracked<B> {
        #[pin]
        inner: B,
        guard: Option<StreamGuard>,
    }
}

impl<B: Body> Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        self.project().inner.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
