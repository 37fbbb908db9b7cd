//! How long and how many: the bounds that keep slow or numerous clients from holding the
//! gateway (slowloris), and the bound on idle upstream connections.

use std::future::Future as _;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
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
        }
    }
}

pin_project! {
    /// A request body on its way upstream that fails once the client has sent nothing for
    /// the timeout while the upstream was waiting for more.
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
        timed_out: Arc<AtomicBool>,
    }
}

impl TimedBody {
    /// `inner` bounded by `timeout`; `timed_out` is set when it fires, so the gateway can
    /// tell a slow client from a failing upstream.
    pub(super) fn new(inner: Incoming, timeout: Duration, timed_out: Arc<AtomicBool>) -> Self {
        Self {
            inner,
            sleep: None,
            timeout,
            deadline: Instant::now(),
            waiting: false,
            timed_out,
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
                Poll::Ready(frame.map(|frame| frame.map_err(Into::into)))
            }
            Poll::Pending => match this
                .sleep
                .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(*this.deadline)))
                .as_mut()
                .poll(cx)
            {
                Poll::Ready(()) => {
                    this.timed_out.store(true, Ordering::Relaxed);
                    Poll::Ready(Some(Err(BodyTimeout.into())))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
