//! How long and how many: the bounds that keep slow or numerous clients from holding the
//! gateway (slowloris), and the bound on idle upstream connections.

use std::future::Future as _;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};

use crate::BoxError;

/// The gateway's bounds, set on the [`GatewayBuilder`](super::GatewayBuilder).
#[derive(Debug, Clone, Copy)]
pub(super) struct Limits {
    pub(super) header_read_timeout: Duration,
    pub(super) body_read_timeout: Duration,
    pub(super) max_connections: usize,
    pub(super) pool_max_idle_per_host: usize,
    pub(super) pool_idle_timeout: Duration,
    /// New connections per client address; `None` admits every one at once.
    pub(super) admission: Option<super::ConnectionAdmission>,
}

impl Limits {
    /// Sets the header read timeout; both builders that expose it check it here.
    pub(super) fn set_header_read_timeout(&mut self, timeout: Duration) {
        assert!(
            !timeout.is_zero(),
            "the header read timeout must be positive"
        );
        self.header_read_timeout = timeout;
    }

    /// Sets the connection cap; both builders that expose it check it here.
    pub(super) fn set_max_connections(&mut self, connections: usize) {
        assert!(connections > 0, "the connection limit must be positive");
        self.max_connections = connections;
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(30),
            max_connections: 1024,
            pool_max_idle_per_host: 32,
            pool_idle_timeout: Duration::from_secs(30),
            admission: None,
        }
    }
}

/// What became of a request body on its way upstream, shared with the gateway so it can
/// tell a slow or broken client from a failing upstream.
#[derive(Debug, Default)]
pub(super) struct BodyState(AtomicU8);

impl BodyState {
    const FLOWING: u8 = 0;
    const WAITING: u8 = 1;
    const TIMED_OUT: u8 = 2;
    const MALFORMED: u8 = 3;

    fn set(&self, state: u8) {
        self.0.store(state, Ordering::Relaxed);
    }

    /// The upstream was waiting for more of the body when this was asked.
    pub(super) fn client_is_awaited(&self) -> bool {
        self.0.load(Ordering::Relaxed) == Self::WAITING
    }

    /// The client sent nothing for the body read timeout.
    pub(super) fn timed_out(&self) -> bool {
        self.0.load(Ordering::Relaxed) == Self::TIMED_OUT
    }

    /// The client's body could not be read: bad chunked framing, a connection reset.
    pub(super) fn malformed(&self) -> bool {
        self.0.load(Ordering::Relaxed) == Self::MALFORMED
    }
}

pin_project! {
    /// A request body on its way upstream: it fails once the client has sent nothing for
    /// the timeout while the upstream was waiting for more, and its trailers lose the
    /// identity headers a client may not send (HTTP/2 and chunked bodies carry trailers).
    pub(super) struct TimedBody {
        #[pin]
        inner: Incoming,
        // Boxed so the body is `Unpin`, as the client requires; made on the first wait, so
        // a body that is never polled (`GET`, empty) costs no allocation and no timer.
        sleep: Option<Pin<Box<Sleep>>>,
        timeout: Duration,
        deadline: Instant,
        // The clock runs only while the upstream asks for data: a slow upstream (which stops
        // asking) is not the client's fault.
        waiting: bool,
        state: Arc<BodyState>,
    }
}

impl TimedBody {
    /// `inner` bounded by `timeout`; what happens to it is told in `state`.
    pub(super) fn new(inner: Incoming, timeout: Duration, state: Arc<BodyState>) -> Self {
        Self {
            inner,
            sleep: None,
            timeout,
            deadline: Instant::now(),
            waiting: false,
            state,
        }
    }
}

/// The client stopped sending its request body.
#[derive(Debug)]
struct BodyTimeout;

impl std::fmt::Display for BodyTimeout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the client stopped sending the request body")
    }
}

impl std::error::Error for BodyTimeout {}

impl Body for TimedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        if !*this.waiting {
            *this.deadline = Instant::now() + *this.timeout;
            if let Some(sleep) = this.sleep {
                sleep.as_mut().reset(*this.deadline);
            }
            *this.waiting = true;
        }
        match this.inner.poll_frame(cx) {
            Poll::Ready(frame) => {
                *this.waiting = false;
                let frame = match frame {
                    Some(Ok(frame)) => {
                        this.state.set(BodyState::FLOWING);
                        let frame = match frame.into_trailers() {
                            Ok(mut trailers) => {
                                super::proxy::remove_client_only(&mut trailers);
                                Frame::trailers(trailers)
                            }
                            Err(frame) => frame,
                        };
                        Some(Ok(frame))
                    }
                    Some(Err(error)) => {
                        this.state.set(BodyState::MALFORMED);
                        Some(Err(error.into()))
                    }
                    None => {
                        this.state.set(BodyState::FLOWING);
                        None
                    }
                };
                Poll::Ready(frame)
            }
            Poll::Pending => {
                this.state.set(BodyState::WAITING);
                let deadline = *this.deadline;
                let sleep = this
                    .sleep
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                match sleep.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        this.state.set(BodyState::TIMED_OUT);
                        Poll::Ready(Some(Err(BodyTimeout.into())))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
