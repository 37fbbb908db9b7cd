//! A Prometheus recorder, and the `/metrics` endpoint that serves it on a listener of its own
//! (feature `prometheus`).

use std::convert::Infallible;
use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderValue, ALLOW, CACHE_CONTROL, CONTENT_TYPE};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper_util::rt::{TokioIo, TokioTimer};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// The histogram buckets of the `_seconds` histograms, in seconds: from a millisecond (a
/// free hashing thread) to ten seconds (a queue far past saturation).
pub const HISTOGRAM_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The Prometheus text exposition format's media type.
const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// How often histograms are drained and idle series tidied when nobody scrapes.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// How long a scraper may take to send its request.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// The Prometheus recorder could not be installed: another recorder already is.
#[derive(Debug)]
pub struct PrometheusError(metrics_exporter_prometheus::BuildError);

impl fmt::Display for PrometheusError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot install the Prometheus recorder: {}", self.0)
    }
}

impl std::error::Error for PrometheusError {}

/// The process's metrics in Prometheus' text format: a recorder installed for the whole
/// process, and [`serve`](Self::serve) to answer `GET /metrics` on a listener of its own.
///
/// Serve it on another address than the application's (a loopback or private one, which
/// only the scraper reaches): then it is never public by accident, and a flood on the public
/// listener cannot starve the scrape that would show it.
///
/// ```no_run
/// use jwt_gate::metrics::Prometheus;
/// use jwt_gate::{JwtAuthLayer, Keys, TokenVerifier};
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// // First, so the verifiers built below register their counters with it.
/// let prometheus = Prometheus::install()?;
/// let metrics = tokio::net::TcpListener::bind("127.0.0.1:9300").await?;
/// tokio::spawn(prometheus.serve(metrics));
///
/// let keys = Keys::hs256(b"an example secret of 32 bytes!!!")?;
/// let gate = JwtAuthLayer::new(TokenVerifier::new(keys));
/// # drop(gate); Ok(()) }
/// ```
#[derive(Clone)]
pub struct Prometheus {
    handle: PrometheusHandle,
}

impl fmt::Debug for Prometheus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Prometheus").finish_non_exhaustive()
    }
}

impl Prometheus {
    /// Installs a Prometheus recorder as the process's global recorder, with
    /// [`HISTOGRAM_BUCKETS`] for every histogram, and describes every metric of the crate
    /// (see [`describe`](super::describe)). Fails when a recorder is already installed.
    pub fn install() -> Result<Self, PrometheusError> {
        let handle = PrometheusBuilder::new()
            .set_buckets(HISTOGRAM_BUCKETS)
            .and_then(PrometheusBuilder::install_recorder)
            .map_err(PrometheusError)?;
        super::describe();
        Ok(Self { handle })
    }

    /// The exposition, as a scrape would get it.
    pub fn render(&self) -> String {
        self.handle.render()
    }

    /// Answers `GET /metrics` on `listener` (HTTP/1.1) until the listener fails; any other
    /// path is `404`, any other method `405`. Also keeps the recorder tidy between scrapes.
    /// Must run on a Tokio runtime.
    pub async fn serve(self, listener: tokio::net::TcpListener) -> std::io::Result<()> {
        let upkeep = self.handle.clone();
        let upkeep = tokio::spawn(async move {
            let mut interval = tokio::time::interval(UPKEEP_INTERVAL);
            loop {
                interval.tick().await;
                upkeep.run_upkeep();
            }
        });
        let _stop_upkeep = AbortOnDrop(upkeep);
        loop {
            let (stream, _) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "metrics listener: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let this = self.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request| {
                    std::future::ready(Ok::<_, Infallible>(this.answer(&request)))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEADER_READ_TIMEOUT)
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    }

    fn answer<B>(&self, request: &Request<B>) -> Response<Full<Bytes>> {
        let (status, body) = if request.uri().path() != "/metrics" {
            (StatusCode::NOT_FOUND, Bytes::from_static(b"not found\n"))
        } else if request.method() != Method::GET && request.method() != Method::HEAD {
            (
                StatusCode::METHOD_NOT_ALLOWED,
                Bytes::from_static(b"GET only\n"),
            )
        } else {
            (StatusCode::OK, Bytes::from(self.render()))
        };
        let mut response = Response::new(Full::new(body));
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if status == StatusCode::OK {
            headers.insert(CONTENT_TYPE, HeaderValue::from_static(TEXT_FORMAT));
        } else {
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
            if status == StatusCode::METHOD_NOT_ALLOWED {
                headers.insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
            }
        }
        response
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
