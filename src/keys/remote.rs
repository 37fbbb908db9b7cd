//! A key set that follows an issuer's JWKS URL (feature `jwks`).

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::ACCEPT;
use http::{Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt as _, Empty, Limited};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::Connect;
use hyper_util::client::legacy::Client;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, AlgorithmFamily};
use tokio::sync::{mpsc, oneshot, watch, Notify};
use tokio::time::Instant;

use crate::keys::KeyLookup;
use crate::revocation::BoxFuture;
use crate::{Key, Keys};

/// Why a JWKS could not be fetched or used.
///
/// ```
/// use jwt_gate::{JwksError, RemoteJwks};
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let error = RemoteJwks::builder("ftp://issuer.example/jwks.json").start().await.unwrap_err();
/// assert!(matches!(error, JwksError::InvalidUrl(_)));
/// # });
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum JwksError {
    /// The URL is not an absolute `http://` or `https://` URL.
    InvalidUrl(String),
    /// An `https://` URL with the built-in client of a build without the `rustls` feature,
    /// which speaks plain HTTP only: enable `rustls`, or pass a TLS-capable client with
    /// [`RemoteJwksBuilder::client`].
    TlsNeedsClient,
    /// The TLS configuration could not be built (the root certificates given are unusable).
    Tls(String),
    /// The issuer could not be reached, or the connection failed.
    Unreachable(String),
    /// The issuer did not answer within the timeout.
    Timeout,
    /// The issuer answered with a status other than `200`.
    Status(u16),
    /// The document is larger than the configured limit.
    TooLarge,
    /// The document is not a JWKS.
    Parse(String),
    /// The document holds no key this gate can verify with.
    NoUsableKey,
    /// A plain `http://` URL to a host that is not loopback: tokens' keys would travel
    /// unauthenticated. Use `https://`, or [`RemoteJwksBuilder::allow_plain_http`].
    PlainHttp(String),
    /// Neither `/.well-known/openid-configuration` nor `/.well-known/oauth-authorization-server`
    /// gave a usable metadata document (the reason says which and why).
    Discovery(String),
    /// The builder's settings contradict each other (the message names the setting); nothing
    /// was fetched.
    Config(String),
    /// The metadata document names another issuer than the one asked for (OpenID Connect
    /// Discovery §4.3, RFC 8414 §3.3): its keys must not be trusted for this one.
    IssuerMismatch {
        /// The issuer asked for.
        expected: String,
        /// The `issuer` the document states.
        found: String,
    },
}

impl fmt::Display for JwksError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidUrl(reason) => write!(f, "not a usable JWKS URL: {reason}"),
            Self::TlsNeedsClient => f.write_str(
                "the built-in client speaks plain HTTP only; enable the `rustls` feature or pass a \
                 TLS-capable client for https:// URLs",
            ),
            Self::Tls(reason) => write!(f, "the TLS configuration is unusable: {reason}"),
            Self::Unreachable(reason) => write!(f, "the JWKS could not be fetched: {reason}"),
            Self::Timeout => f.write_str("the JWKS issuer did not answer in time"),
            Self::Status(status) => write!(f, "the JWKS issuer answered with status {status}"),
            Self::TooLarge => f.write_str("the JWKS document is larger than the limit"),
            Self::Parse(reason) => write!(f, "the JWKS document is not a JWK set: {reason}"),
            Self::NoUsableKey => f.write_str("the JWKS holds no usable verification key"),
            Self::PlainHttp(url) => write!(
                f,
                "refusing plain http:// to a host that is not loopback ({url}): use https://, \
                 or allow it on a network you trust (`allow_plain_http = true` in the \
                 program's issuer, `RemoteJwksBuilder::allow_plain_http` in code)"
            ),
            Self::Discovery(reason) => write!(f, "issuer discovery failed: {reason}"),
            Self::Config(reason) => write!(f, "RemoteJwksBuilder::{reason}"),
            Self::IssuerMismatch { expected, found } => write!(
                f,
                "the discovery document is for issuer {found:?}, not {expected:?}"
            ),
        }
    }
}

impl std::error::Error for JwksError {}

/// Where the JWKS URL comes from.
#[derive(Debug, Clone)]
enum Source {
    /// Given as is.
    Jwks(String),
    /// The `jwks_uri` of this issuer's metadata document.
    Discover(String),
}

type Fetcher = Arc<
    dyn Fn(Request<Empty<Bytes>>) -> BoxFuture<'static, Result<Response<Incoming>, String>>
        + Send
        + Sync,
>;

/// Configures a [`RemoteJwks`]; made by [`RemoteJwks::builder`].
///
/// ```no_run
/// use std::time::Duration;
/// use jwt_gate::{Algorithm, RemoteJwks};
///
/// # async fn run() -> Result<(), jwt_gate::JwksError> {
/// let jwks = RemoteJwks::builder("http://auth.internal:3000/.well-known/jwks.json")
///     // A plain http:// URL off this machine is refused unless allowed.
///     .allow_plain_http()
///     .algorithm(Algorithm::RS256)
///     .cooldown(Duration::from_secs(10))
///     .refresh_interval(Some(Duration::from_secs(300)))
///     .timeout(Duration::from_secs(2))
///     .start()
///     .await?;
/// # drop(jwks); Ok(()) }
/// ```
pub struct RemoteJwksBuilder {
    source: Source,
    allow_plain_http: bool,
    fetcher: Option<Fetcher>,
    algorithm: Option<Algorithm>,
    cooldown: Duration,
    refresh_interval: Option<Duration>,
    timeout: Duration,
    max_document_len: usize,
    max_age_bounds: (Duration, Duration),
    max_stale: Option<Duration>,
    #[cfg(feature = "rustls")]
    root_certificates: Option<Vec<u8>>,
}

impl fmt::Debug for RemoteJwksBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RemoteJwksBuilder")
            .field("source", &self.source)
            .field("allow_plain_http", &self.allow_plain_http)
            .field("custom_client", &self.fetcher.is_some())
            .field("algorithm", &self.algorithm)
            .field("cooldown", &self.cooldown)
            .field("refresh_interval", &self.refresh_interval)
            .field("timeout", &self.timeout)
            .field("max_document_len", &self.max_document_len)
            .field("max_age_bounds", &self.max_age_bounds)
            .field("max_stale", &self.max_stale)
            .finish()
    }
}

impl RemoteJwksBuilder {
    /// The least time between two fetches that tokens trigger (default 30 s). A token naming
    /// an unknown `kid` once the cooldown is over starts a fetch and waits for it; meanwhile
    /// it is refused at once, and one fetch is left for the cooldown's end. So a flood of
    /// made-up `kid`s costs the issuer one request per cooldown at most.
    #[must_use]
    pub fn cooldown(mut self, cooldown: Duration) -> Self {
        self.cooldown = cooldown;
        self
    }

    /// Refetches this often even when no unknown `kid` shows up (default 10 min; `None`
    /// fetches only at start and on unknown `kid`s). This is what retires removed keys.
    #[must_use]
    pub fn refresh_interval(mut self, interval: Option<Duration>) -> Self {
        self.refresh_interval = interval;
        self
    }

    /// When the JWKS answer carries `Cache-Control: max-age`, the next scheduled refetch comes
    /// after that long, kept within `min..=max` (default 1 min to 1 h), instead of after the
    /// refresh interval. A refresh interval of `None` turns scheduled refetches off either way.
    ///
    /// `min` greater than `max` is refused by [`start`](Self::start) ([`JwksError::Config`]).
    #[must_use]
    pub fn max_age_bounds(mut self, min: Duration, max: Duration) -> Self {
        self.max_age_bounds = (min, max);
        self
    }

    /// How long the last good keys stay trusted while the issuer is unreachable, or answers
    /// with nothing usable (an error status, a broken document, or a valid JWKS without a key
    /// this gate can use). Default 24 h; `None` keeps them forever. Past it every key is
    /// removed, so the issuer's tokens are refused (`401`) until it serves usable keys again.
    /// If no fetch failed meanwhile (with [`refresh_interval`](Self::refresh_interval) `None`
    /// none is made but for unknown `kid`s), the issuer is asked when the limit comes (no
    /// sooner than the [`cooldown`](Self::cooldown) allows), and the keys are retired only if
    /// that fails.
    #[must_use]
    pub fn max_stale(mut self, max_stale: Option<Duration>) -> Self {
        self.max_stale = max_stale;
        self
    }

    /// How long one fetch may take, connection included (default 5 s). A request whose
    /// token names an unknown `kid` waits for the fetch at most this long.
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The largest document accepted, in bytes (default 256 KiB).
    #[must_use]
    pub fn max_document_len(mut self, len: usize) -> Self {
        self.max_document_len = len;
        self
    }

    /// Uses only keys of this algorithm, and accepts JWKs without `alg` as such. Without
    /// it, each key's own `alg` is used, JWKs without `alg` are skipped, and the set keeps the
    /// algorithm family of the first usable key.
    #[must_use]
    pub fn algorithm(mut self, algorithm: Algorithm) -> Self {
        self.algorithm = Some(algorithm);
        self
    }

    /// Accepts plain `http://` URLs to hosts other than loopback (`127.0.0.0/8`, `::1`,
    /// `localhost`), for an issuer on a network you trust. Without it such a URL is refused
    /// with [`JwksError::PlainHttp`] when the source starts: whoever can tamper with that
    /// traffic could otherwise hand the gate keys of their own.
    #[must_use]
    pub fn allow_plain_http(mut self) -> Self {
        self.allow_plain_http = true;
        self
    }

    /// Trusts only the certificate authorities in `pem` (one or more PEM certificates) for
    /// `https://` URLs, instead of the webpki roots: for an issuer whose certificate comes
    /// from a private CA. Checked at [`start`](Self::start) ([`JwksError::Tls`]).
    ///
    /// ```no_run
    /// use jwt_gate::RemoteJwks;
    ///
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// let ca = std::fs::read("/etc/ssl/private-ca.pem")?;
    /// let idp = RemoteJwks::discover("https://login.corp.example")
    ///     .root_certificates_pem(ca)
    ///     .start()
    ///     .await?;
    /// # drop(idp); Ok(()) }
    /// ```
    #[cfg(feature = "rustls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "rustls")))]
    #[must_use]
    pub fn root_certificates_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.root_certificates = Some(pem.into());
        self
    }

    /// Fetches through `client`: a hyper-util client with a TLS connector (hyper-rustls,
    /// hyper-tls) is how `https://` URLs are reached. The built-in client speaks plain HTTP.
    #[must_use]
    pub fn client<C>(mut self, client: Client<C, Empty<Bytes>>) -> Self
    where
        C: Connect + Clone + Send + Sync + 'static,
    {
        self.fetcher = Some(fetcher_of(client));
        self
    }

    /// Fetches the JWKS once and, when it holds at least one usable key, returns the key
    /// source with its [`Keys`], following the issuer from then on. Must be called within a
    /// Tokio runtime, on which the refresh task runs.
    pub async fn start(self) -> Result<RemoteJwks, JwksError> {
        let (min, max) = self.max_age_bounds;
        if min > max {
            return Err(JwksError::Config(format!(
                "max_age_bounds: min {min:?} is over max {max:?}"
            )));
        }
        let https = self.fetcher.is_some() || cfg!(feature = "rustls");
        let fetcher = match self.fetcher.clone() {
            Some(fetcher) => fetcher,
            #[cfg(feature = "rustls")]
            None => tls::fetcher(self.root_certificates.as_deref())?,
            #[cfg(not(feature = "rustls"))]
            None => plain_http_fetcher(),
        };
        let http = Http {
            fetcher,
            https,
            allow_plain_http: self.allow_plain_http,
            timeout: self.timeout,
            max_document_len: self.max_document_len,
        };
        let (issuer, uri) = match &self.source {
            Source::Jwks(url) => (None, http.checked_uri(url)?),
            Source::Discover(issuer) => {
                let jwks_uri = http.discover(issuer).await?;
                (Some(issuer.clone()), http.checked_uri(&jwks_uri)?)
            }
        };
        let mut follower = Follower {
            shown: shown(&uri),
            uri,
            http,
            algorithm: self.algorithm,
            family: self.algorithm.map(Algorithm::family),
            known: HashMap::new(),
            last_good: Instant::now(),
            failed_since_good: false,
            asked_when_stale: false,
        };
        let started = Instant::now();
        let (fetched, max_age) = follower.fetch().await.inspect_err(|error| {
            crate::metrics::jwks_fetched(&follower.uri, Err(error));
        })?;
        let usable = follower.usable_keys(&fetched);
        let mut usable = usable.into_iter();
        let Some((first_jwk, first_key)) = usable.next() else {
            crate::metrics::jwks_fetched(&follower.uri, Err(&JwksError::NoUsableKey));
            return Err(JwksError::NoUsableKey);
        };
        crate::metrics::jwks_fetched(&follower.uri, Ok(()));
        let kid = first_key.kid().unwrap_or_default().to_owned();
        let keys = Keys::new(first_key).map_err(|error| JwksError::Parse(error.to_string()))?;
        follower.known.insert(kid, first_jwk);
        for (jwk, key) in usable {
            let kid = key.kid().unwrap_or_default().to_owned();
            if keys.add(key).is_ok() {
                follower.known.insert(kid, jwk);
            }
        }

        let lookups = Arc::new(Lookups {
            state: std::sync::Mutex::new(LookupState {
                claimed: 0,
                in_flight: false,
                last_started: started,
                stopped: false,
            }),
            now: Notify::new(),
            later: Notify::new(),
            done: watch::channel(0).0,
            cooldown: self.cooldown,
            wait_limit: self.timeout,
        });
        let (commands, requests) = mpsc::channel(4);
        let listener = lookups.clone();
        keys.on_unknown_kid(move |_kid| listener.unknown_kid());
        let schedule = Schedule {
            refresh_interval: self.refresh_interval,
            min_max_age: self.max_age_bounds.0,
            max_max_age: self.max_age_bounds.1,
            max_stale: self.max_stale,
        };
        let next_refresh = schedule.next_refresh(max_age);
        let task = tokio::spawn(follower.run(
            keys.clone(),
            lookups.clone(),
            requests,
            schedule,
            next_refresh,
        ));
        Ok(RemoteJwks {
            keys,
            issuer,
            commands,
            lookups,
            task,
        })
    }
}

#[cfg(not(feature = "rustls"))]
fn plain_http_fetcher() -> Fetcher {
    use hyper_util::client::legacy::connect::HttpConnector;
    let client: Client<HttpConnector, Empty<Bytes>> =
        Client::builder(hyper_util::rt::TokioExecutor::new()).build_http();
    fetcher_of(client)
}

fn fetcher_of<C>(client: Client<C, Empty<Bytes>>) -> Fetcher
where
    C: Connect + Clone + Send + Sync + 'static,
{
    Arc::new(move |request: Request<Empty<Bytes>>| {
        let client = client.clone();
        let mut again = Request::new(Empty::new());
        *again.uri_mut() = request.uri().clone();
        *again.headers_mut() = request.headers().clone();
        Box::pin(async move {
            match client.request(request).await {
                // The GET went out on a kept-alive connection and no answer came: the issuer
                // had closed it (it restarted, or its idle timeout raced this request; hyper
                // retries by itself only requests not yet written). A GET is idempotent
                // (RFC 9110 §9.2.2): sent once more, it gets a fresh connection.
                Err(error) if !error.is_connect() => client.request(again).await,
                outcome => outcome,
            }
            .map_err(|error| with_sources(&error))
        })
    })
}

/// `error` and its sources: hyper's own message alone ("client error (SendRequest)") does not
/// say what went wrong.
fn with_sources(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The built-in HTTPS client (feature `rustls`).
#[cfg(feature = "rustls")]
mod tls {
    use std::sync::Arc;

    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;
    use rustls_pki_types::pem::PemObject as _;
    use rustls_pki_types::CertificateDer;

    use super::{fetcher_of, Fetcher, JwksError};

    /// A client for `https://` (and loopback `http://`) URLs trusting the CAs of `pem`, or the
    /// webpki roots.
    pub(super) fn fetcher(pem: Option<&[u8]>) -> Result<Fetcher, JwksError> {
        let mut roots = rustls::RootCertStore::empty();
        match pem {
            Some(pem) => {
                for certificate in CertificateDer::pem_slice_iter(pem) {
                    let certificate =
                        certificate.map_err(|error| JwksError::Tls(error.to_string()))?;
                    roots
                        .add(certificate)
                        .map_err(|error| JwksError::Tls(error.to_string()))?;
                }
                if roots.is_empty() {
                    return Err(JwksError::Tls("no certificate in the PEM given".into()));
                }
            }
            None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        }
        // This provider explicitly, so an application that installed another (or none) as
        // the process default does not change what the gate trusts.
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|error| JwksError::Tls(error.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(config)
            .https_or_http()
            .enable_http1()
            .build();
        Ok(fetcher_of(
            Client::builder(TokioExecutor::new()).build(connector),
        ))
    }
}

/// A [`Keys`] that follows an issuer's JWKS document: fetched at start, refetched when a
/// token names an unknown `kid` (at most once per cooldown, one fetch at a time), on a
/// schedule (the refresh interval, or the answer's `Cache-Control: max-age` within bounds) and
/// on [`refresh`](Self::refresh). Keys the issuer adds are added; keys it drops are removed,
/// which makes every gate built from these `Keys` refuse their tokens at once, cached
/// verifications included.
///
/// **Rotation without refusals.** The first token signed with a key the gate has not seen
/// waits (in the gate's response future, up to the fetch [`timeout`](RemoteJwksBuilder::timeout))
/// for the one fetch in flight, and is then verified; every request with an unknown `kid`
/// arriving meanwhile joins that same fetch. Within the cooldown after a fetch has started,
/// a token with an unknown `kid` is refused at once (`401 invalid_token`) and one fetch is
/// owed for the cooldown's end: that is what bounds the issuer's cost of a flood of made-up
/// `kid`s. No lock is held while fetching; tokens whose keys are known never wait.
/// ([`TokenVerifier::verify`](crate::TokenVerifier::verify), being synchronous, does not
/// wait: it starts the lookup and refuses.)
///
/// **When the issuer fails.** Unreachable (or an error status, a timeout, a broken document)
/// and "reachable, but no usable key" (a valid JWKS whose keys are all of another family,
/// without `kid`, or unreadable) are told apart: [`refresh`](Self::refresh) answers
/// [`JwksError::NoUsableKey`] for the latter, and the logs say which. Either way the last good
/// keys stay trusted, for at most [`max_stale`](RemoteJwksBuilder::max_stale) (default 24 h)
/// after the last usable answer; past that they are removed and the issuer's tokens refused
/// until it serves usable keys again.
///
/// Dropping the `RemoteJwks` stops the following; the `Keys` keep the keys they had.
///
/// ```no_run
/// use jwt_gate::{JwtAuthLayer, RemoteJwks};
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let jwks = RemoteJwks::builder("http://127.0.0.1:3000/.well-known/jwks.json")
///     .start()
///     .await?;
/// let layer = JwtAuthLayer::from_keys(jwks.keys().clone());
/// // ... serve with `layer`, keeping `jwks` alive as long as the server runs.
/// # drop((layer, jwks)); Ok(()) }
/// ```
#[must_use = "dropping a RemoteJwks stops following the issuer"]
pub struct RemoteJwks {
    keys: Keys,
    issuer: Option<String>,
    commands: mpsc::Sender<RefreshReply>,
    lookups: Arc<Lookups>,
    task: tokio::task::JoinHandle<()>,
}

type RefreshReply = oneshot::Sender<Result<(), JwksError>>;

/// When the refresh task fetches, besides lookups and explicit refreshes.
struct Schedule {
    refresh_interval: Option<Duration>,
    min_max_age: Duration,
    max_max_age: Duration,
    max_stale: Option<Duration>,
}

impl Schedule {
    /// The next scheduled refetch after a fetch whose answer said `max_age`.
    fn next_refresh(&self, max_age: Option<Duration>) -> Option<Instant> {
        let interval = self.refresh_interval?;
        let interval = match max_age {
            Some(max_age) => max_age.clamp(self.min_max_age, self.max_max_age),
            None => interval,
        };
        // An interval too long to end is never.
        Instant::now().checked_add(interval)
    }
}

/// Lookups of unknown `kid`s, shared by the request path and the refresh task. The mutex is
/// held for a few field updates only, never across I/O; the fetch itself runs in the task.
struct Lookups {
    state: std::sync::Mutex<LookupState>,
    /// A request has claimed a fetch: run it now.
    now: Notify,
    /// A request came within the cooldown: fetch once it is over.
    later: Notify,
    /// The last fetch round completed.
    done: watch::Sender<u64>,
    cooldown: Duration,
    /// How long a request waits for a fetch: the fetch's own timeout.
    wait_limit: Duration,
}

struct LookupState {
    /// The last fetch round claimed (by a request or the task).
    claimed: u64,
    in_flight: bool,
    last_started: Instant,
    /// The source was dropped: nobody will fetch again.
    stopped: bool,
}

impl Lookups {
    fn lock(&self) -> std::sync::MutexGuard<'_, LookupState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A token named a `kid` the keys lack. Joins the fetch in flight, or starts one when the
    /// cooldown is over, and gives back what to await; within the cooldown, refuses at once
    /// (`None`) and leaves one fetch for its end, so a flood of made-up `kid`s costs the
    /// issuer one fetch per cooldown at most.
    fn unknown_kid(&self) -> Option<KeyLookup> {
        let mut state = self.lock();
        if state.stopped {
            return None;
        }
        if !state.in_flight {
            if state.last_started.elapsed() < self.cooldown {
                drop(state);
                // One permit however many arrive: one deferred fetch.
                self.later.notify_one();
                return None;
            }
            state.in_flight = true;
            state.claimed += 1;
            state.last_started = Instant::now();
            self.now.notify_one();
        }
        let round = state.claimed;
        drop(state);
        let mut done = self.done.subscribe();
        let limit = self.wait_limit;
        Some(Box::pin(async move {
            // Whatever the fetch brought (or not), the caller looks at the keys again.
            let _ =
                tokio::time::timeout(limit, done.wait_for(|&completed| completed >= round)).await;
        }))
    }

    /// The task is about to fetch: the round a request claimed, or a new one.
    fn claim(&self) -> u64 {
        let mut state = self.lock();
        if !state.in_flight {
            state.in_flight = true;
            state.claimed += 1;
            state.last_started = Instant::now();
        }
        state.claimed
    }

    fn finish(&self, round: u64) {
        self.lock().in_flight = false;
        self.done.send_replace(round);
    }

    fn in_flight(&self) -> bool {
        self.lock().in_flight
    }

    /// `None` for a cooldown too long to end (`Duration::MAX`): no fetch is owed then.
    fn cooldown_end(&self) -> Option<Instant> {
        self.lock().last_started.checked_add(self.cooldown)
    }
}

impl fmt::Debug for RemoteJwks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RemoteJwks")
            .field("keys", &self.keys)
            .finish_non_exhaustive()
    }
}

impl Drop for RemoteJwks {
    fn drop(&mut self) {
        // The `Keys` outlive us: their listener must stop offering lookups nobody will run.
        self.lookups.lock().stopped = true;
        self.task.abort();
    }
}

impl RemoteJwks {
    /// Starts configuring a source for the JWKS at `url`.
    pub fn builder(url: impl Into<String>) -> RemoteJwksBuilder {
        Self::with_source(Source::Jwks(url.into()))
    }

    /// Starts configuring a source for the keys of `issuer`, found through its metadata:
    /// `start` reads `{issuer}/.well-known/openid-configuration` (OpenID Connect Discovery),
    /// or, when that is not served, RFC 8414's `/.well-known/oauth-authorization-server`; the
    /// document's `issuer` must equal `issuer` exactly (else [`JwksError::IssuerMismatch`]),
    /// and its `jwks_uri` is then followed as [`builder`](Self::builder) would.
    ///
    /// `issuer` is what your tokens carry in `iss`, byte for byte (mind a trailing `/`).
    ///
    /// ```no_run
    /// use jwt_gate::{Algorithm, RemoteJwks};
    ///
    /// # async fn run() -> Result<(), jwt_gate::JwksError> {
    /// let idp = RemoteJwks::discover("https://login.example.com/realms/main")
    ///     .algorithm(Algorithm::RS256)
    ///     .start()
    ///     .await?;
    /// assert_eq!(idp.issuer(), Some("https://login.example.com/realms/main"));
    /// # Ok(()) }
    /// ```
    pub fn discover(issuer: impl Into<String>) -> RemoteJwksBuilder {
        Self::with_source(Source::Discover(issuer.into()))
    }

    fn with_source(source: Source) -> RemoteJwksBuilder {
        RemoteJwksBuilder {
            source,
            allow_plain_http: false,
            fetcher: None,
            algorithm: None,
            cooldown: Duration::from_secs(30),
            refresh_interval: Some(Duration::from_secs(600)),
            timeout: Duration::from_secs(5),
            max_document_len: 256 * 1024,
            max_age_bounds: (Duration::from_secs(60), Duration::from_secs(60 * 60)),
            max_stale: Some(Duration::from_secs(24 * 60 * 60)),
            #[cfg(feature = "rustls")]
            root_certificates: None,
        }
    }

    /// The keys, kept current: build gates and verifiers from (clones of) these.
    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// The issuer these keys were discovered for ([`discover`](Self::discover)); `None` for a
    /// JWKS URL given directly.
    pub fn issuer(&self) -> Option<&str> {
        self.issuer.as_deref()
    }

    /// Fetches the JWKS now, without waiting for the cooldown, and applies it. Resolves
    /// when done: `Err` when the issuer could not be reached or served nothing usable, in
    /// which case the last good keys stay (see
    /// [`max_stale`](RemoteJwksBuilder::max_stale)). Still one fetch at a time: this waits
    /// for one in flight to end.
    pub async fn refresh(&self) -> Result<(), JwksError> {
        let stopped = || JwksError::Unreachable("the refresh task has stopped".into());
        let (reply, outcome) = oneshot::channel();
        self.commands.send(reply).await.map_err(|_| stopped())?;
        outcome.await.map_err(|_| stopped())?
    }
}

/// `uri` as logs, errors and metrics show it: scheme, host, port and path, nothing of a
/// userinfo or a query string, either of which may carry a credential.
pub(crate) fn shown(uri: &Uri) -> String {
    let mut shown = format!(
        "{}://{}",
        uri.scheme_str().unwrap_or("http"),
        uri.host().unwrap_or("")
    );
    if let Some(port) = uri.port_u16() {
        shown.push_str(&format!(":{port}"));
    }
    shown.push_str(uri.path());
    shown
}

/// The refresh task's state. It is owned by that one task, so there is never more than one
/// fetch in flight and no lock is needed, let alone held across I/O.
struct Follower {
    uri: Uri,
    /// `uri` as logs show it ([`shown`]).
    shown: String,
    http: Http,
    algorithm: Option<Algorithm>,
    family: Option<AlgorithmFamily>,
    /// The JWK each `kid` in the `Keys` came from, to tell a changed key from an unchanged one.
    known: HashMap<String, Jwk>,
    /// When the issuer last served a usable key set.
    last_good: Instant,
    /// Whether a fetch failed since then: without one, the stale limit is only "not asked
    /// for a while" (no scheduled refetches), and asks before it retires anything.
    failed_since_good: bool,
    /// The stale limit came with nothing failed, and a fetch is owed for it.
    asked_when_stale: bool,
}

/// Sleeps until `deadline`, or forever without one.
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

impl Follower {
    async fn run(
        mut self,
        keys: Keys,
        lookups: Arc<Lookups>,
        mut requests: mpsc::Receiver<RefreshReply>,
        schedule: Schedule,
        mut next_refresh: Option<Instant>,
    ) {
        // A fetch owed once the cooldown is over (for a token that came within it, or the
        // schedule); any fetch before then settles it.
        let mut owed: Option<Instant> = None;
        loop {
            let stale_at = schedule
                .max_stale
                .filter(|_| !self.known.is_empty())
                .filter(|_| self.failed_since_good || !self.asked_when_stale)
                .and_then(|max_stale| self.last_good.checked_add(max_stale));
            let reply = tokio::select! {
                () = lookups.now.notified() => {
                    if !lookups.in_flight() {
                        // Its fetch already ran, joined by another wake-up.
                        continue;
                    }
                    None
                }
                () = lookups.later.notified() => {
                    owed = lookups.cooldown_end();
                    continue;
                }
                () = sleep_until(next_refresh) => {
                    next_refresh = None;
                    owed = lookups.cooldown_end();
                    continue;
                }
                () = sleep_until(owed) => None,
                () = sleep_until(stale_at) => {
                    if self.failed_since_good {
                        self.retire_all(&keys);
                    } else {
                        // Not asked for a while, not failing: ask, no sooner than a lookup
                        // could (a stale limit shorter than a fetch must not make a loop).
                        self.asked_when_stale = true;
                        owed = lookups.cooldown_end();
                    }
                    continue;
                }
                Some(reply) = requests.recv() => Some(reply),
            };
            owed = None;
            let round = lookups.claim();
            let outcome = match self.fetch().await {
                Ok((document, max_age)) => {
                    next_refresh = schedule.next_refresh(max_age);
                    self.apply(&keys, &document)
                }
                Err(error) => {
                    next_refresh = schedule.next_refresh(None);
                    Err(error)
                }
            };
            crate::metrics::jwks_fetched(&self.uri, outcome.as_ref().map(|_| ()));
            lookups.finish(round);
            self.failed_since_good = outcome.is_err();
            self.asked_when_stale &= outcome.is_err();
            match &outcome {
                Ok(()) => self.last_good = Instant::now(),
                Err(JwksError::NoUsableKey) => tracing::warn!(
                    url = %self.shown,
                    "the issuer answered with no usable key; keeping the last good keys until they are stale"
                ),
                Err(error) => tracing::warn!(
                    url = %self.shown,
                    %error,
                    "JWKS refresh failed; keeping the last good keys until they are stale"
                ),
            }
            if let Some(reply) = reply {
                let _ = reply.send(outcome);
            }
        }
    }

    /// No usable answer for longer than the stale limit: the old keys are no longer trusted.
    fn retire_all(&mut self, keys: &Keys) {
        tracing::error!(
            url = %self.shown,
            "no usable JWKS for longer than the stale limit; refusing the issuer's tokens until it answers"
        );
        for kid in self.known.keys() {
            let _ = keys.remove(kid);
        }
        self.known.clear();
    }

    /// The JWKS and the `max-age` its answer allows caching it for.
    async fn fetch(&self) -> Result<(JwkSet, Option<Duration>), JwksError> {
        let (body, max_age) = self.http.get_cacheable(&self.uri).await?;
        let document =
            serde_json::from_slice(&body).map_err(|error| JwksError::Parse(error.to_string()))?;
        Ok((document, max_age))
    }

    /// The keys of `document` this gate can use: each with a `kid` (rotation needs them),
    /// valid for verification, of the set's one family, first of its `kid`.
    fn usable_keys(&mut self, document: &JwkSet) -> Vec<(Jwk, Key)> {
        let mut usable: Vec<(Jwk, Key)> = Vec::with_capacity(document.keys.len());
        for jwk in &document.keys {
            let Some(kid) = jwk.common.key_id.as_deref() else {
                tracing::warn!(url = %self.shown, "skipping a JWK without kid");
                continue;
            };
            let key = match self.algorithm {
                Some(algorithm) => Key::from_jwk_with_algorithm(jwk, algorithm),
                None => Key::from_jwk(jwk),
            };
            let key = match key {
                Ok(key) => key,
                Err(error) => {
                    tracing::warn!(url = %self.shown, kid, %error, "skipping an unusable JWK");
                    continue;
                }
            };
            let family = *self.family.get_or_insert(key.algorithm().family());
            if key.algorithm().family() != family {
                tracing::warn!(url = %self.shown, kid, "skipping a JWK of another algorithm family");
                continue;
            }
            if usable.iter().any(|(_, seen)| seen.kid() == Some(kid)) {
                tracing::warn!(url = %self.shown, kid, "skipping a second JWK with the same kid");
                continue;
            }
            usable.push((jwk.clone(), key));
        }
        usable
    }

    /// Brings `keys` in line with `document`: new keys first, so a token is never left
    /// without its key while a changed key is replaced, then the ones the issuer dropped.
    fn apply(&mut self, keys: &Keys, document: &JwkSet) -> Result<(), JwksError> {
        let usable = self.usable_keys(document);
        if usable.is_empty() {
            // More likely a broken issuer than one that means to stop every token at once.
            return Err(JwksError::NoUsableKey);
        }
        let mut fresh = HashMap::with_capacity(usable.len());
        for (jwk, key) in usable {
            let kid = key.kid().unwrap_or_default().to_owned();
            match self.known.get(&kid) {
                Some(known) if *known == jwk => {}
                Some(_) => {
                    // Same kid, new material: the old material must stop verifying.
                    let _ = keys.remove(&kid);
                    if let Err(error) = keys.add(key) {
                        tracing::warn!(url = %self.shown, kid, %error, "could not replace a key");
                        continue;
                    }
                }
                None => {
                    if let Err(error) = keys.add(key) {
                        tracing::warn!(url = %self.shown, kid, %error, "could not add a key");
                        continue;
                    }
                }
            }
            fresh.insert(kid, jwk);
        }
        for kid in self.known.keys() {
            if !fresh.contains_key(kid) {
                if let Err(error) = keys.remove(kid) {
                    tracing::warn!(url = %self.shown, kid, %error, "could not remove a key");
                }
            }
        }
        self.known = fresh;
        Ok(())
    }
}

/// One GET at a time through the configured client, bounded in time and size, and the URL
/// policy every URL (issuer, metadata, JWKS) goes through.
struct Http {
    fetcher: Fetcher,
    /// Whether the client speaks TLS.
    https: bool,
    allow_plain_http: bool,
    timeout: Duration,
    max_document_len: usize,
}

/// The part of an authorization server's metadata the gate reads.
#[derive(serde::Deserialize)]
struct Metadata {
    issuer: String,
    #[serde(default)]
    jwks_uri: Option<String>,
}

impl Http {
    /// `url` as a URI this source may fetch, or why not.
    fn checked_uri(&self, url: &str) -> Result<Uri, JwksError> {
        let uri: Uri = url
            .parse()
            .map_err(|error: http::uri::InvalidUri| JwksError::InvalidUrl(error.to_string()))?;
        let host = uri.host().unwrap_or_default();
        match uri.scheme_str() {
            Some("https") if !self.https => Err(JwksError::TlsNeedsClient),
            Some("http") if !self.allow_plain_http && !is_loopback(host) => {
                Err(JwksError::PlainHttp(shown(&uri)))
            }
            Some("http" | "https") if !host.is_empty() => Ok(uri),
            _ => Err(JwksError::InvalidUrl(
                "an absolute http:// or https:// URL is needed".into(),
            )),
        }
    }

    /// The `jwks_uri` of `issuer`'s metadata, from the OpenID Connect location or, when that
    /// answers with an error status, the RFC 8414 one.
    async fn discover(&self, issuer: &str) -> Result<String, JwksError> {
        let issuer_uri = self.checked_uri(issuer)?;
        if issuer_uri.query().is_some() || issuer.contains('#') {
            // Both specifications: an issuer has no query or fragment.
            return Err(JwksError::InvalidUrl(
                "an issuer URL has no query or fragment".into(),
            ));
        }
        // OpenID Connect Discovery §4: appended to the issuer, trailing slash removed.
        let openid = format!(
            "{}/.well-known/openid-configuration",
            issuer.trim_end_matches('/')
        );
        // RFC 8414 §3.1: inserted between the host and the issuer's path.
        let path = issuer_uri.path().trim_end_matches('/');
        let authority = issuer_uri
            .authority()
            .map_or("", |authority| authority.as_str());
        let scheme = issuer_uri.scheme_str().unwrap_or("https");
        let oauth = format!("{scheme}://{authority}/.well-known/oauth-authorization-server{path}");
        let body = match self.get(&self.checked_uri(&openid)?).await {
            Ok(body) => body,
            Err(JwksError::Status(first)) => match self.get(&self.checked_uri(&oauth)?).await {
                Ok(body) => body,
                Err(JwksError::Status(second)) => {
                    return Err(JwksError::Discovery(format!(
                        "{} answered {first} and {} answered {second}",
                        shown(&self.checked_uri(&openid)?),
                        shown(&self.checked_uri(&oauth)?)
                    )))
                }
                Err(error) => return Err(error),
            },
            Err(error) => return Err(error),
        };
        let metadata: Metadata = serde_json::from_slice(&body).map_err(|error| {
            JwksError::Discovery(format!("the metadata document is unusable: {error}"))
        })?;
        if metadata.issuer != issuer {
            return Err(JwksError::IssuerMismatch {
                expected: issuer.to_owned(),
                found: metadata.issuer,
            });
        }
        metadata
            .jwks_uri
            .ok_or_else(|| JwksError::Discovery("the metadata document has no jwks_uri".into()))
    }

    /// The body of a `200` answer to a GET of `uri`.
    async fn get(&self, uri: &Uri) -> Result<Bytes, JwksError> {
        self.get_cacheable(uri).await.map(|(body, _)| body)
    }

    /// The body of a `200` answer to a GET of `uri`, and its `Cache-Control: max-age`.
    async fn get_cacheable(&self, uri: &Uri) -> Result<(Bytes, Option<Duration>), JwksError> {
        let request = Request::get(uri.clone())
            .header(ACCEPT, "application/json")
            .body(Empty::new())
            .map_err(|error| JwksError::InvalidUrl(error.to_string()))?;
        let fetch = async {
            let response = (self.fetcher)(request)
                .await
                .map_err(JwksError::Unreachable)?;
            if response.status() != StatusCode::OK {
                return Err(JwksError::Status(response.status().as_u16()));
            }
            let max_age = max_age(response.headers());
            let body = Limited::new(response.into_body(), self.max_document_len)
                .collect()
                .await
                .map_err(|error| {
                    if error.is::<http_body_util::LengthLimitError>() {
                        JwksError::TooLarge
                    } else {
                        JwksError::Unreachable(error.to_string())
                    }
                })?
                .to_bytes();
            Ok((body, max_age))
        };
        tokio::time::timeout(self.timeout, fetch)
            .await
            .map_err(|_| JwksError::Timeout)?
    }
}

/// The `max-age` of a `Cache-Control` header (RFC 9111 §5.2.2.1), if one is given once and
/// well formed; `no-store` and `no-cache` count as zero.
fn max_age(headers: &http::HeaderMap) -> Option<Duration> {
    let mut found = None;
    for value in headers.get_all(http::header::CACHE_CONTROL) {
        let value = value.to_str().ok()?;
        for directive in value.split(',').map(str::trim) {
            let (name, argument) = directive.split_once('=').unwrap_or((directive, ""));
            if name.eq_ignore_ascii_case("no-store") || name.eq_ignore_ascii_case("no-cache") {
                return Some(Duration::ZERO);
            }
            if name.eq_ignore_ascii_case("max-age") {
                let seconds: u64 = argument.trim_matches('"').parse().ok()?;
                if found.replace(Duration::from_secs(seconds)).is_some() {
                    // Conflicting directives: trust neither.
                    return None;
                }
            }
        }
    }
    found
}

/// Whether `host` (from a URI, so IPv6 in brackets) names this machine.
fn is_loopback(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || bare
            .parse::<std::net::IpAddr>()
            .is_ok_and(|address| address.is_loopback())
}

#[cfg(test)]
mod tests {
    #[test]
    fn loopback_hosts_are_recognised_and_nothing_else() {
        for host in ["127.0.0.1", "127.8.9.10", "[::1]", "localhost", "LOCALHOST"] {
            assert!(super::is_loopback(host), "{host}");
        }
        for host in [
            "10.0.0.1",
            "auth.internal",
            "localhost.evil.example",
            "[::2]",
            "",
        ] {
            assert!(!super::is_loopback(host), "{host}");
        }
    }
}
