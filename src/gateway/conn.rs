//! Serving client connections: HTTP/1.1 (with upgrades) and HTTP/2, over plain TCP (h2c by
//! prior knowledge) or TLS (by ALPN), within the gateway's bounds.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf as _, Bytes};
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
            delivery: Delivery::default(),
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
    /// How long a response may wait for its client to take any of it before the connection
    /// is closed: the body read timeout, the same bound the other way (nginx's
    /// `send_timeout`).
    send_timeout: Duration,
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
            send_timeout: limits.body_read_timeout,
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
    let mut pause = Duration::from_millis(1);
    loop {
        let peeked = stream.peek(&mut buffer).await?;
        if peeked == 0 || buffer[..peeked] != H2_PREFACE[..peeked] {
            return Ok(false);
        }
        if peeked == H2_PREFACE.len() {
            return Ok(true);
        }
        // Part of the preface: peeking again at once would see the same bytes. A client that
        // sends one byte and waits is looked at less and less often (a few dozen times
        // within the header read timeout, not every few milliseconds), so a thousand of them
        // cost next to nothing.
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(250));
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
    let io = TokioIo::new(Watched {
        io,
        write: service.delivery.idle(),
        flush: service.delivery.idle(),
    });
    // A client that takes none of a response (an HTTP/2 client that opens no flow-control
    // window, an HTTP/1.1 client that stops reading) would hold its connection slot for
    // good, answering pings all the while: the connection is closed, not drained.
    let delivery = service.delivery.clone();
    let stalled = delivery.stalled_for(builders.send_timeout);
    tokio::pin!(stalled);
    let stalled_error = || -> BoxError { "the client took no response data in time".into() };
    if !http2 {
        let service = hyper_util::service::TowerToHyperService::new(service);
        let connection = builders.http1.serve_connection(io, service).with_upgrades();
        tokio::pin!(connection);
        tokio::select! {
            biased;
            served = connection.as_mut() => return Ok(served?),
            () = &mut stalled => return Err(stalled_error()),
            () = stop_heard(&stopped) => connection.as_mut().graceful_shutdown(),
        }
        return tokio::select! {
            served = connection => Ok(served?),
            () = stalled => Err(stalled_error()),
        };
    }
    let streams = service.streams.get_or_insert_with(Streams::default).clone();
    let connection = builders
        .http2
        .serve_connection(io, hyper_util::service::TowerToHyperService::new(service));
    tokio::pin!(connection);
    let idle = streams.idle_for(builders.header_read_timeout);
    tokio::pin!(idle);
    let idled = tokio::select! {
        biased;
        served = connection.as_mut() => return Ok(served?),
        () = &mut stalled => return Err(stalled_error()),
        () = idle => true,
        () = stop_heard(&stopped) => false,
    };
    connection.as_mut().graceful_shutdown();
    // No request open, yet the connection may not end: the last of an answer that hyper
    // has handed whole to HTTP/2 still waits for the client (a window of one byte takes the
    // rest of a body out of sight). It gets the send timeout too, counted from the last
    // progress, so a slow download's tail still arrives. (A stop has the program's drain
    // deadline.)
    let drained = async {
        if idled {
            delivery.restart();
            delivery.quiet_for(builders.send_timeout).await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        served = connection => Ok(served?),
        () = stalled => Err(stalled_error()),
        () = drained => Err(stalled_error()),
    }
}

/// The responses of one connection that hold data their client has not taken yet, and when
/// the client last took some.
#[derive(Clone)]
struct Delivery(Arc<Mutex<(usize, Instant)>>);

impl Default for Delivery {
    fn default() -> Self {
        Self(Arc::new(Mutex::new((0, Instant::now()))))
    }
}

impl Delivery {
    /// One response's part in it, waiting from now: its head is ready and its body not yet
    /// asked for.
    fn waiting(&self) -> Waiting {
        let mut waiting = self.idle();
        waiting.wait();
        waiting
    }

    /// A part that waits for nothing yet.
    fn idle(&self) -> Waiting {
        Waiting {
            delivery: self.clone(),
            waiting: false,
        }
    }

    /// Starts the clock again, as if the client had just taken something.
    fn restart(&self) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).1 = Instant::now();
    }

    /// Resolves once the client has taken nothing for `timeout`, whatever waits.
    async fn quiet_for(&self, timeout: Duration) {
        held_for(&self.0, timeout, |_| true).await;
    }

    /// Resolves once some response has waited `timeout` with nothing taken by the client.
    async fn stalled_for(&self, timeout: Duration) {
        held_for(&self.0, timeout, |waiting| waiting > 0).await;
    }
}

/// Resolves once `holds` has been true of the count in `state` for `timeout` past its
/// instant ([`Streams`]: no request open since the last ended; [`Delivery`]: something
/// waiting since the client last took data). While it is false, looks again `timeout` on.
async fn held_for(
    state: &Mutex<(usize, Instant)>,
    timeout: Duration,
    holds: impl Fn(usize) -> bool,
) {
    loop {
        let (count, since) = *state.lock().unwrap_or_else(|e| e.into_inner());
        if !holds(count) {
            tokio::time::sleep_until(Instant::now() + timeout).await;
        } else if since.elapsed() >= timeout {
            return;
        } else {
            tokio::time::sleep_until(since + timeout).await;
        }
    }
}

/// One part of a connection that may wait for its client: a response body from when it is
/// made or hands over data until the server asks it for more (hyper does once the client has
/// room: its HTTP/2 window, its socket's buffer), or a write to the socket that could not go
/// through. A body waiting for its upstream is not waiting for the client.
struct Waiting {
    delivery: Delivery,
    waiting: bool,
}

impl Waiting {
    /// Waits for the client from now; the connection's clock starts if nothing else waited.
    fn wait(&mut self) {
        if self.waiting {
            return;
        }
        self.waiting = true;
        let mut state = self.delivery.0.lock().unwrap_or_else(|e| e.into_inner());
        state.0 += 1;
        if state.0 == 1 {
            state.1 = Instant::now();
        }
    }

    /// The client took what this part waited on: progress, which restarts the clock.
    fn taken(&mut self) {
        self.stop(true);
    }

    /// Waits no more, with nothing shown taken: a body asked for its first data (hyper asks
    /// before the client has room), or one dropped (a request ended, reset or answered
    /// without data). Neither restarts the clock, or a client could keep a stalled
    /// connection by opening a stream now and then.
    fn release(&mut self) {
        self.stop(false);
    }

    fn stop(&mut self, progress: bool) {
        if !self.waiting {
            return;
        }
        self.waiting = false;
        let mut state = self.delivery.0.lock().unwrap_or_else(|e| e.into_inner());
        state.0 -= 1;
        if progress {
            state.1 = Instant::now();
        }
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        self.release();
    }
}

pin_project! {
    /// A connection's stream, watched for writes that wait: a response already handed to
    /// hyper (a body that ended within its write buffer) still waits for a client that does
    /// not read.
    struct Watched<I> {
        #[pin]
        io: I,
        write: Waiting,
        // TLS takes writes into its own buffer and waits in its flush.
        flush: Waiting,
    }
}

impl<I: AsyncRead> AsyncRead for Watched<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        self.project().io.poll_read(cx, buf)
    }
}

impl<I: AsyncWrite> Watched<I> {
    /// Records whether a write went through.
    fn wrote(
        waiting: &mut Waiting,
        written: Poll<std::io::Result<usize>>,
    ) -> Poll<std::io::Result<usize>> {
        match &written {
            Poll::Pending => waiting.wait(),
            Poll::Ready(Ok(written)) if *written > 0 => waiting.taken(),
            Poll::Ready(_) => {}
        }
        written
    }
}

impl<I: AsyncWrite> AsyncWrite for Watched<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.project();
        Self::wrote(this.write, this.io.poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.project();
        Self::wrote(this.write, this.io.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.project();
        let flushed = this.io.poll_flush(cx);
        match &flushed {
            Poll::Pending => this.flush.wait(),
            Poll::Ready(Ok(())) => this.flush.taken(),
            Poll::Ready(Err(_)) => {}
        }
        flushed
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.project().io.poll_shutdown(cx)
    }
}

/// The most of a response's data handed over at once: a client is judged by each slice it
/// takes, so one large chunk (a mounted service's whole page) does not need taking within
/// the send timeout by a slow client.
const SLICE: usize = 16 * 1024;

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
        held_for(&self.0, timeout, |open| open == 0).await;
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
    delivery: Delivery,
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
            delivery: Some(self.delivery.clone()),
        }
    }
}

pin_project! {
    /// A response future that keeps its request counted as open.
    struct TrackedFuture<F> {
        #[pin]
        inner: F,
        guard: Option<StreamGuard>,
        delivery: Option<Delivery>,
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
        let waiting = this.delivery.take().map(|delivery| delivery.waiting());
        Poll::Ready(Ok(response.map(|inner| Tracked {
            inner,
            guard,
            waiting,
            handed: false,
            rest: None,
        })))
    }
}

pin_project! {
    /// A response body that keeps its request counted as open until it is dropped, and tells
    /// its connection's [`Delivery`] whether its client has taken what it yielded.
    struct Tracked<B> {
        #[pin]
        inner: B,
        guard: Option<StreamGuard>,
        waiting: Option<Waiting>,
        // Whether data was handed over since the server last asked: its asking again is then
        // the client's progress.
        handed: bool,
        // What is left of a data frame longer than `SLICE`.
        rest: Option<Bytes>,
    }
}

impl<B: Body> Body for Tracked<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.project();
        if let Some(waiting) = this.waiting.as_mut() {
            if std::mem::take(this.handed) {
                // Asked again: what was handed over before has been taken.
                waiting.taken();
            } else {
                waiting.release();
            }
        }
        let frame = match this.rest.take() {
            Some(rest) => Frame::data(rest),
            None => match std::task::ready!(this.inner.poll_frame(cx)) {
                Some(Ok(frame)) => frame.map_data(|mut data| data.copy_to_bytes(data.remaining())),
                ended => {
                    let ended = ended.map(|frame| {
                        frame.map(|frame| frame.map_data(|mut d| d.copy_to_bytes(d.remaining())))
                    });
                    return Poll::Ready(ended);
                }
            },
        };
        let frame = match frame.into_data() {
            Ok(mut data) => {
                if data.len() > SLICE {
                    *this.rest = Some(data.split_off(SLICE));
                }
                if let Some(waiting) = this.waiting.as_mut() {
                    *this.handed = true;
                    waiting.wait();
                }
                Frame::data(data)
            }
            // Trailers are not held back by the client's window.
            Err(trailers) => trailers,
        };
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.rest.is_none() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let mut hint = self.inner.size_hint();
        if let Some(rest) = &self.rest {
            let rest = rest.len() as u64;
            if let Some(upper) = hint.upper() {
                hint.set_upper(upper.saturating_add(rest));
            }
            hint.set_lower(hint.lower().saturating_add(rest));
        }
        hint
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The drain after an idle GOAWAY is bounded from the client's last progress, not from its
    /// start: a slow download's tail keeps arriving, a client taking nothing is cut.
    #[tokio::test(start_paused = true)]
    async fn a_drain_is_bounded_from_the_clients_last_progress() {
        let timeout = Duration::from_secs(30);
        let delivery = Delivery::default();
        delivery.restart();
        let quiet = delivery.quiet_for(timeout);
        tokio::pin!(quiet);
        // The tail of an answer, which HTTP/2 holds for a client with room but a slow socket.
        let _tail = delivery.waiting();
        let mut write = delivery.idle();
        // A write every 20 s that waited and then went through: five times the timeout.
        for _ in 0..8 {
            tokio::select! {
                () = &mut quiet => panic!("cut while the client was taking data"),
                () = tokio::time::sleep(Duration::from_secs(20)) => {}
            }
            write.wait();
            write.taken();
        }
        // Then nothing: cut once the timeout has passed, not before.
        let started = Instant::now();
        quiet.await;
        assert_eq!(started.elapsed(), timeout);
    }
}
