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
use hyper_util::client::legacy::connect::{Connect, HttpConnector};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, AlgorithmFamily};
use tokio::sync::{mpsc, oneshot, Notify};
use tokio::time::Instant;

use crate::revocation::BoxFuture;
use crate::{Key, Keys};

/// Why a JWKS could not be fetched or used.
///
/// ```
/// use jwt_gate::{JwksError, RemoteJwks};
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let error = RemoteJwks::builder("https://issuer.example/jwks.json").start().await.unwrap_err();
/// assert_eq!(error, JwksError::TlsNeedsClient);
/// # });
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum JwksError {
    /// The URL is not an absolute `http://` or `https://` URL.
    InvalidUrl(String),
    /// An `https://` URL with the built-in client, which speaks plain HTTP only: pass a
    /// TLS-capable client with [`RemoteJwksBuilder::client`].
    TlsNeedsClient,
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
}

impl fmt::Display for JwksError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidUrl(reason) => write!(f, "not a usable JWKS URL: {reason}"),
            Self::TlsNeedsClient => f.write_str(
                "the built-in client speaks plain HTTP only; pass a TLS-capable client for https:// URLs",
            ),
            Self::Unreachable(reason) => write!(f, "the JWKS could not be fetched: {reason}"),
            Self::Timeout => f.write_str("the JWKS issuer did not answer in time"),
            Self::Status(status) => write!(f, "the JWKS issuer answered with status {status}"),
            Self::TooLarge => f.write_str("the JWKS document is larger than the limit"),
            Self::Parse(reason) => write!(f, "the JWKS document is not a JWK set: {reason}"),
            Self::NoUsableKey => f.write_str("the JWKS holds no usable verification key"),
        }
    }
}

impl std::error::Error for JwksError {}

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
///     .algorithm(Algorithm::RS256)
///     .cooldown(Duration::from_secs(10))
///     .refresh_interval(Some(Duration::from_secs(300)))
///     .timeout(Duration::from_secs(2))
///     .start()
///     .await?;
/// # drop(jwks); Ok(()) }
/// ```
pub struct RemoteJwksBuilder {
    url: String,
    fetcher: Option<Fetcher>,
    algorithm: Option<Algorithm>,
    cooldown: Duration,
    refresh_interval: Option<Duration>,
    timeout: Duration,
    max_document_len: usize,
}

impl fmt::Debug for RemoteJwksBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RemoteJwksBuilder")
            .field("url", &self.url)
            .field("custom_client", &self.fetcher.is_some())
            .field("algorithm", &self.algorithm)
            .field("cooldown", &self.cooldown)
            .field("refresh_interval", &self.refresh_interval)
            .field("timeout", &self.timeout)
            .field("max_document_len", &self.max_document_len)
            .finish()
    }
}

impl RemoteJwksBuilder {
    /// The least time between two fetches (default 30 s). Unknown `kid`s arriving meanwhile
    /// are looked for once the cooldown is over, so a flood of made-up `kid`s costs the
    /// issuer one request per cooldown at most.
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

    /// How long one fetch may take, connection included (default 5 s).
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

    /// Fetches through `client`: a hyper-util client with a TLS connector (hyper-rustls,
    /// hyper-tls) is how `https://` URLs are reached. The built-in client speaks plain HTTP.
    #[must_use]
    pub fn client<C>(mut self, client: Client<C, Empty<Bytes>>) -> Self
    where
        C: Connect + Clone + Send + Sync + 'static,
    {
        self.fetcher = Some(Arc::new(move |request| {
            let response = client.request(request);
            Box::pin(async move { response.await.map_err(|error| error.to_string()) })
        }));
        self
    }

    /// Fetches the JWKS once and, when it holds at least one usable key, returns the key
    /// source with its [`Keys`], following the issuer from then on. Must be called within a
    /// Tokio runtime, on which the refresh task runs.
    pub async fn start(self) -> Result<RemoteJwks, JwksError> {
        let uri: Uri = self
            .url
            .parse()
            .map_err(|error: http::uri::InvalidUri| JwksError::InvalidUrl(error.to_string()))?;
        let fetcher = match (uri.scheme_str(), self.fetcher) {
            (Some("http" | "https"), Some(fetcher)) => fetcher,
            (Some("http"), None) => plain_http_fetcher(),
            (Some("https"), None) => return Err(JwksError::TlsNeedsClient),
            _ => {
                return Err(JwksError::InvalidUrl(
                    "an absolute http:// or https:// URL is needed".into(),
                ))
            }
        };
        let mut follower = Follower {
            uri,
            fetcher,
            algorithm: self.algorithm,
            family: self.algorithm.map(Algorithm::family),
            timeout: self.timeout,
            max_document_len: self.max_document_len,
            known: HashMap::new(),
        };
        let fetched = follower.fetch().await.inspect_err(|error| {
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

        let wake = Arc::new(Notify::new());
        let (commands, requests) = mpsc::channel(4);
        let listener = wake.clone();
        // notify_one keeps one permit: any number of unknown kids before the next fetch
        // amounts to one wake-up, and the request path never waits.
        keys.on_unknown_kid(move |_kid| listener.notify_one());
        let task = tokio::spawn(follower.run(
            keys.clone(),
            Triggers {
                wake,
                requests,
                cooldown: self.cooldown,
                refresh_interval: self.refresh_interval,
            },
        ));
        Ok(RemoteJwks {
            keys,
            commands,
            task,
        })
    }
}

fn plain_http_fetcher() -> Fetcher {
    let client: Client<HttpConnector, Empty<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    Arc::new(move |request| {
        let response = client.request(request);
        Box::pin(async move { response.await.map_err(|error| error.to_string()) })
    })
}

/// A [`Keys`] that follows an issuer's JWKS document: fetched at start, refetched when a
/// token names an unknown `kid` (at most once per cooldown, one fetch at a time) and
/// periodically. Keys the issuer adds are added; keys it drops are removed, which makes every
/// gate built from these `Keys` refuse their tokens at once, cached verifications included.
/// When the issuer cannot be reached, or serves something unusable, the last good keys stay.
///
/// A token whose `kid` is not known yet is refused (`401 invalid_token`) while the fetch it
/// triggered runs; the next request with it verifies once the key has arrived. So rotate by
/// publishing the new key at least one refresh interval before signing with it: gates then
/// know it before its first token arrives, and the unknown-`kid` fetch only catches up gates
/// that missed it.
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
    commands: mpsc::Sender<RefreshReply>,
    task: tokio::task::JoinHandle<()>,
}

type RefreshReply = oneshot::Sender<Result<(), JwksError>>;

/// What makes the refresh task fetch.
struct Triggers {
    wake: Arc<Notify>,
    requests: mpsc::Receiver<RefreshReply>,
    cooldown: Duration,
    refresh_interval: Option<Duration>,
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
        self.task.abort();
    }
}

impl RemoteJwks {
    /// Starts configuring a source for the JWKS at `url`.
    pub fn builder(url: impl Into<String>) -> RemoteJwksBuilder {
        RemoteJwksBuilder {
            url: url.into(),
            fetcher: None,
            algorithm: None,
            cooldown: Duration::from_secs(30),
            refresh_interval: Some(Duration::from_secs(600)),
            timeout: Duration::from_secs(5),
            max_document_len: 256 * 1024,
        }
    }

    /// The keys, kept current: build gates and verifiers from (clones of) these.
    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// Fetches the JWKS now, without waiting for the cooldown, and applies it. Resolves
    /// when done: `Err` when the issuer could not be reached or served nothing usable, in
    /// which case the last good keys stay. Still one fetch at a time: this waits its turn.
    pub async fn refresh(&self) -> Result<(), JwksError> {
        let stopped = || JwksError::Unreachable("the refresh task has stopped".into());
        let (reply, outcome) = oneshot::channel();
        self.commands.send(reply).await.map_err(|_| stopped())?;
        outcome.await.map_err(|_| stopped())?
    }
}

/// The refresh task's state. It is owned by that one task, so there is never more than one
/// fetch in flight and no lock is needed, let alone held across I/O.
struct Follower {
    uri: Uri,
    fetcher: Fetcher,
    algorithm: Option<Algorithm>,
    family: Option<AlgorithmFamily>,
    timeout: Duration,
    max_document_len: usize,
    /// The JWK each `kid` in the `Keys` came from, to tell a changed key from an unchanged one.
    known: HashMap<String, Jwk>,
}

impl Follower {
    async fn run(mut self, keys: Keys, mut triggers: Triggers) {
        let mut last_fetch = Instant::now();
        loop {
            let scheduled = async {
                match triggers.refresh_interval {
                    Some(interval) => tokio::time::sleep_until(last_fetch + interval).await,
                    None => std::future::pending().await,
                }
            };
            let reply = tokio::select! {
                () = triggers.wake.notified() => None,
                () = scheduled => None,
                Some(reply) = triggers.requests.recv() => Some(reply),
            };
            if reply.is_none() {
                tokio::time::sleep_until(last_fetch + triggers.cooldown).await;
            }
            last_fetch = Instant::now();
            let outcome = match self.fetch().await {
                Ok(document) => self.apply(&keys, &document),
                Err(error) => Err(error),
            };
            crate::metrics::jwks_fetched(&self.uri, outcome.as_ref().map(|_| ()));
            if let Err(error) = &outcome {
                tracing::warn!(url = %self.uri, %error, "JWKS refresh failed; keeping the last good keys");
            }
            if let Some(reply) = reply {
                let _ = reply.send(outcome);
            }
        }
    }

    async fn fetch(&self) -> Result<JwkSet, JwksError> {
        let request = Request::get(self.uri.clone())
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
            serde_json::from_slice(&body).map_err(|error| JwksError::Parse(error.to_string()))
        };
        tokio::time::timeout(self.timeout, fetch)
            .await
            .map_err(|_| JwksError::Timeout)?
    }

    /// The keys of `document` this gate can use: each with a `kid` (rotation needs them),
    /// valid for verification, of the set's one family, first of its `kid`.
    fn usable_keys(&mut self, document: &JwkSet) -> Vec<(Jwk, Key)> {
        let mut usable: Vec<(Jwk, Key)> = Vec::with_capacity(document.keys.len());
        for jwk in &document.keys {
            let Some(kid) = jwk.common.key_id.as_deref() else {
                tracing::warn!(url = %self.uri, "skipping a JWK without kid");
                continue;
            };
            let key = match self.algorithm {
                Some(algorithm) => Key::from_jwk_with_algorithm(jwk, algorithm),
                None => Key::from_jwk(jwk),
            };
            let key = match key {
                Ok(key) => key,
                Err(error) => {
                    tracing::warn!(url = %self.uri, kid, %error, "skipping an unusable JWK");
                    continue;
                }
            };
            let family = *self.family.get_or_insert(key.algorithm().family());
            if key.algorithm().family() != family {
                tracing::warn!(url = %self.uri, kid, "skipping a JWK of another algorithm family");
                continue;
            }
            if usable.iter().any(|(_, seen)| seen.kid() == Some(kid)) {
                tracing::warn!(url = %self.uri, kid, "skipping a second JWK with the same kid");
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
                        tracing::warn!(url = %self.uri, kid, %error, "could not replace a key");
                        continue;
                    }
                }
                None => {
                    if let Err(error) = keys.add(key) {
                        tracing::warn!(url = %self.uri, kid, %error, "could not add a key");
                        continue;
                    }
                }
            }
            fresh.insert(kid, jwk);
        }
        for kid in self.known.keys() {
            if !fresh.contains_key(kid) {
                if let Err(error) = keys.remove(kid) {
                    tracing::warn!(url = %self.uri, kid, %error, "could not remove a key");
                }
            }
        }
        self.known = fresh;
        Ok(())
    }
}
