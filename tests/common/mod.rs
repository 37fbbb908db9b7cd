//! Helpers shared by the black-box tests: servers on ephemeral 127.0.0.1 ports, one HTTP
//! client, token forging helpers, and the auth-service stack.
#![allow(dead_code)] // each test file uses a different part

#[path = "../../examples/support/client_addr.rs"]
mod client_addr;
pub mod demo;
pub mod lookalike;
pub mod postgres;
pub mod prometheus;
pub mod redis;
pub mod tls;
pub mod websocket;

use std::convert::Infallible;
use std::net::SocketAddr;

use axum::routing;
use axum::Router;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use jwt_gate::clock::{Clock, SystemClock};
use jwt_gate::revocation::MemoryRevocations;
use jwt_gate::service::{AuthService, AuthServiceBuilder};
use jwt_gate::store::MemoryUserStore;
use jwt_gate::ClientAddr;
use jwt_gate::{Claims, JwtAuthLayer, Keys, TokenVerifier};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tower::ServiceExt;

pub const SECRET: &[u8] = b"a test secret that is 32+ bytes long";
pub const PASSWORD: &str = "correct horse battery staple";

pub fn now() -> u64 {
    SystemClock.now()
}

pub fn keys() -> Keys {
    Keys::hs256(SECRET).unwrap()
}

/// A token for `sub`, valid for ten minutes.
pub fn token(keys: &Keys, sub: &str) -> String {
    keys.sign(&Claims::new(sub, now(), now() + 600)).unwrap()
}

/// An EdDSA key from a PEM of `tests/keys/`, named `kid`.
pub fn eddsa_key(pem: &[u8], kid: &str) -> jwt_gate::Key {
    jwt_gate::Key::from_private_pem(jwt_gate::Algorithm::EdDSA, pem)
        .unwrap()
        .with_kid(kid)
}

/// An identity provider's routes: `metadata` at `metadata_path`, the JWKS of `keys` at `/jwks`.
pub fn provider_routes(metadata_path: &str, metadata: Value, keys: Keys) -> Router {
    Router::new()
        .route(
            metadata_path,
            routing::get(move || async move { axum::Json(metadata) }),
        )
        .route(
            "/jwks",
            routing::get(move || async move { axum::Json(keys.jwks()) }),
        )
}

pub fn pem(name: &str) -> Vec<u8> {
    std::fs::read(format!("{}/tests/keys/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

pub fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A token assembled by hand: any header, any payload, any signature.
pub fn raw_token(
    header: &serde_json::Value,
    payload: &serde_json::Value,
    signature: &[u8],
) -> String {
    format!(
        "{}.{}.{}",
        b64(header.to_string().as_bytes()),
        b64(payload.to_string().as_bytes()),
        b64(signature)
    )
}

/// Serves `router` on an ephemeral port until the test ends, with each peer's address in
/// the request extensions as `ClientAddr` (the auth service throttles by it).
pub async fn serve(router: Router) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(
            listener,
            router
                .layer(axum::middleware::from_fn(client_addr::insert))
                .into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .unwrap()
    });
    addr
}

/// The routes every gate test serves: a protected one, an open one, an optional one.
/// Each answers with the subject it saw, or `anonymous`.
pub async fn serve_gated(layer: JwtAuthLayer) -> SocketAddr {
    async fn whoami(claims: Option<Claims>) -> String {
        claims.map_or_else(|| "anonymous".to_owned(), |claims| claims.sub)
    }
    let app = Router::new()
        .route("/protected", routing::get(whoami))
        .route("/optional", routing::get(whoami))
        .route("/health", routing::get(|| async { "ok" }))
        .layer(layer.open_path("/health").optional_path("/optional"));
    serve(app).await
}

/// The same routes on a plain hyper server: no axum anywhere in the request path.
pub async fn serve_gated_over_hyper(layer: JwtAuthLayer) -> SocketAddr {
    let handler = tower::service_fn(|request: Request<hyper::body::Incoming>| async move {
        let body = match request.uri().path() {
            "/health" => "ok".to_owned(),
            _ => request
                .extensions()
                .get::<Claims>()
                .map_or_else(|| "anonymous".to_owned(), |claims| claims.sub.clone()),
        };
        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(body))))
    });
    let service = tower::ServiceBuilder::new()
        .layer(layer.open_path("/health").optional_path("/optional"))
        .service(handler);
    serve_over_hyper(service).await
}

/// Serves a Tower service on a plain hyper HTTP/1.1 server until the test ends.
pub async fn serve_over_hyper<S, B>(service: S) -> SocketAddr
where
    S: tower::Service<Request<Incoming>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let service = hyper_util::service::TowerToHyperService::new(service.clone());
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

/// What came back from a request.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// The body as text (lossy UTF-8), for assertions.
    pub text: String,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|value| value.to_str().unwrap())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|_| panic!("not JSON ({}): {}", self.status, self.text))
    }
}

/// Sends `request` over a fresh HTTP/1.1 connection.
pub async fn send(request: Request<Full<Bytes>>) -> Answer {
    let client = Client::builder(TokioExecutor::new()).build_http();
    let response = client.request(request).await.unwrap();
    let (parts, body) = response.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    Answer {
        status: parts.status,
        headers: parts.headers,
        text: String::from_utf8_lossy(&body).into_owned(),
        body,
    }
}

/// `GET http://{addr}{path}`, with a bearer token when given.
pub async fn get(addr: SocketAddr, path: &str, token: Option<&str>) -> Answer {
    let mut request = Request::get(format!("http://{addr}{path}"));
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    send(request.body(Full::default()).unwrap()).await
}

/// `method http://{addr}{path}` with these headers (repeated names are sent repeated) and body.
pub async fn call(
    addr: SocketAddr,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Answer {
    let mut request = Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"))
        .body(Full::new(body.into()))
        .unwrap();
    for (name, value) in headers {
        request.headers_mut().append(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    send(request).await
}

/// GET `path` with these headers.
pub async fn get_with(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Answer {
    call(addr, Method::GET, path, headers, Bytes::new()).await
}

pub async fn get_bearer(addr: SocketAddr, path: &str, token: &str) -> Answer {
    get(addr, path, Some(token)).await
}

// The auth service's stack.

/// A verifier with its own revocation list, which the returned handle shares. Its clock
/// stands still, so throttle delays of whole seconds cannot lapse in the middle of a test.
pub fn verifier() -> (TokenVerifier, MemoryRevocations) {
    verifier_on(jwt_gate::clock::ManualClock::starting_now())
}

/// As [`verifier`], on a clock the test moves.
pub fn verifier_on(clock: jwt_gate::clock::ManualClock) -> (TokenVerifier, MemoryRevocations) {
    let revocations = MemoryRevocations::new();
    let verifier = TokenVerifier::builder(keys())
        .revocations(revocations.clone())
        .clock(clock)
        .build();
    (verifier, revocations)
}

/// Serves `service` over plain hyper on an ephemeral port, telling it each peer's address.
pub async fn serve_auth_over_hyper(service: AuthService) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, peer)) = listener.accept().await else {
                continue;
            };
            let service = service.clone();
            tokio::spawn(async move {
                let handler = hyper::service::service_fn(move |mut request: Request<Incoming>| {
                    request.extensions_mut().insert(ClientAddr(peer));
                    service.clone().oneshot(request)
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), handler)
                    .await;
            });
        }
    });
    addr
}

/// The whole stack as an application would build it: a gate in front of a protected route
/// and the auth service nested by axum at /auth.
pub fn app(verifier: TokenVerifier, auth: AuthService) -> Router {
    Router::new()
        .route(
            "/me",
            axum::routing::get(|claims: Claims| async move { claims.sub }),
        )
        .nest_service("/auth", auth)
        .layer(JwtAuthLayer::new(verifier).open_prefix("/auth"))
}

/// An auth service on memory stores behind the gate, served by axum.
pub struct Stack {
    pub addr: SocketAddr,
    pub verifier: TokenVerifier,
    pub revocations: MemoryRevocations,
    pub users: MemoryUserStore,
    /// The clock of the verifier and the auth service: it stands still until moved.
    pub clock: jwt_gate::clock::ManualClock,
}

pub async fn stack() -> Stack {
    stack_with(|auth| auth).await
}

pub async fn stack_with(configure: impl FnOnce(AuthServiceBuilder) -> AuthServiceBuilder) -> Stack {
    let clock = jwt_gate::clock::ManualClock::starting_now();
    let (verifier, revocations) = verifier_on(clock.clone());
    let users = MemoryUserStore::new();
    let auth = configure(AuthService::builder(verifier.clone(), users.clone())).build();
    let addr = serve(app(verifier.clone(), auth)).await;
    Stack {
        addr,
        verifier,
        revocations,
        users,
        clock,
    }
}

/// Lifts the per-address registration limit, for tests whose many sign-ups all come from
/// 127.0.0.1 and are about something else.
pub fn unthrottled_registrations(auth: AuthServiceBuilder) -> AuthServiceBuilder {
    auth.registration_throttle(jwt_gate::service::RegistrationThrottle {
        free_per_address: 100_000,
        ..Default::default()
    })
}

pub async fn post_json(addr: SocketAddr, path: &str, body: &str) -> Answer {
    call(
        addr,
        Method::POST,
        path,
        &[("content-type", "application/json")],
        body.to_owned(),
    )
    .await
}

pub async fn post_form(addr: SocketAddr, path: &str, form: &[(&str, &str)]) -> Answer {
    let body = serde_urlencoded::to_string(form).unwrap();
    call(
        addr,
        Method::POST,
        path,
        &[("content-type", "application/x-www-form-urlencoded")],
        body,
    )
    .await
}

pub async fn register(addr: SocketAddr, username: &str, password: &str) -> Answer {
    let body = serde_json::json!({
        "username": username,
        "email": format!("{}@example.com", username.to_lowercase()),
        "password": password,
    });
    post_json(addr, "/auth/register", &body.to_string()).await
}

pub async fn login(addr: SocketAddr, username: &str, password: &str) -> Answer {
    post_form(
        addr,
        "/auth/token",
        &[("username", username), ("password", password)],
    )
    .await
}

/// Registers and logs in; returns the token response's JSON.
pub async fn session(addr: SocketAddr, username: &str) -> Value {
    let registered = register(addr, username, PASSWORD).await;
    assert!(
        registered.status == StatusCode::CREATED || registered.status == StatusCode::CONFLICT,
        "{registered:?}"
    );
    let reply = login(addr, username, PASSWORD).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    reply.json()
}

pub async fn refresh(addr: SocketAddr, refresh_token: &str) -> Answer {
    post_form(
        addr,
        "/auth/token",
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
        ],
    )
    .await
}

pub async fn with_bearer(addr: SocketAddr, method: Method, path: &str, token: &str) -> Answer {
    let authorization = format!("Bearer {token}");
    call(addr, method, path, &[("authorization", &authorization)], "").await
}

pub async fn me(addr: SocketAddr, token: &str) -> Answer {
    with_bearer(addr, Method::GET, "/me", token).await
}

/// Writes raw bytes on a fresh connection and reads the status line of the answer.
pub async fn raw_status(addr: SocketAddr, request: &[u8]) -> u16 {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    // The server may answer and close before it has read everything; that is fine.
    let _ = stream.write_all(request).await;
    let mut response = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        match stream.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(read) => {
                response.extend_from_slice(&buffer[..read]);
                if response.windows(4).any(|window| window == b"\r\n\r\n") {
                    break;
                }
            }
        }
    }
    let text = String::from_utf8_lossy(&response);
    text.split(' ').nth(1).unwrap().parse().unwrap()
}

/// The access token's claims, read without checking anything (for assertions only).
pub fn peek_claims(token: &str) -> Value {
    use base64::Engine as _;
    let payload = token.split('.').nth(1).unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

pub fn peek_header(token: &str) -> Value {
    use base64::Engine as _;
    let header = token.split('.').next().unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

/// A fresh, empty directory for one test's files.
pub fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "jwt-gate-{}-{name}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A revocation store that is down: it counts every call and answers "unavailable" to all.
#[derive(Clone, Default)]
pub struct DownRevocations {
    calls: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl DownRevocations {
    pub fn calls(&self) -> usize {
        self.calls.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn count(&self) {
        self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

impl jwt_gate::revocation::RevocationStore for DownRevocations {
    fn check(
        &self,
        _: &jwt_gate::revocation::TokenId<'_>,
    ) -> jwt_gate::revocation::RevocationCheck {
        self.count();
        jwt_gate::revocation::RevocationCheck::Unavailable
    }

    fn revoke(
        &self,
        _: &str,
        _: u64,
    ) -> jwt_gate::revocation::BoxFuture<'_, Result<(), jwt_gate::revocation::RevocationError>>
    {
        self.count();
        Box::pin(async { Err(jwt_gate::revocation::RevocationError::new("down")) })
    }

    fn revoke_subject(
        &self,
        _: &str,
        _: u64,
        _: u64,
    ) -> jwt_gate::revocation::BoxFuture<'_, Result<(), jwt_gate::revocation::RevocationError>>
    {
        self.count();
        Box::pin(async { Err(jwt_gate::revocation::RevocationError::new("down")) })
    }
}

/// What a store opened on the first release's layout must show, given these rows before the
/// upgrade, every token expiring at `far`: for `user`, the session `f1` with the spent token
/// `hash(1)` and the live `hash(2)` rotated from it; for someone else, the revoked session
/// `f2` with `hash(3)`.
pub async fn assert_first_layout_sessions_upgraded(
    store: &dyn jwt_gate::store::UserStore,
    user: &str,
    hash: impl Fn(u8) -> jwt_gate::store::TokenHash,
    far: u64,
) {
    use jwt_gate::store::{IssuedRefresh, Rotation};
    let at = now();
    let rotate = |n: u8, successor: u8| {
        let presented = hash(n);
        let next = IssuedRefresh {
            hash: hash(successor),
            expires_at: far + 1_000_000,
        };
        async move {
            store
                .rotate_refresh_token(&presented, at, next, 10)
                .await
                .unwrap()
        }
    };
    assert_eq!(
        rotate(2, 4).await,
        Rotation::Rotated {
            user_key: user.into(),
            session: "f1".into(),
            scopes: Vec::new(),
        }
    );
    assert_eq!(
        rotate(3, 5).await,
        Rotation::Ended {
            session: "f2".into()
        }
    );
    assert_eq!(
        rotate(1, 6).await,
        Rotation::Reused {
            session: "f1".into()
        },
        "a token spent before the upgrade is still recognised"
    );
    // The session ends when its newest token did before the upgrade, not later.
    assert_eq!(store.sessions_of(user, far - 1).await.unwrap(), ["f1"]);
    assert_eq!(
        store.sessions_of(user, far).await.unwrap(),
        Vec::<String>::new()
    );
}

/// A program the test runs that is not ours (`promtool`, `schemathesis`, `chromium`):
/// `$variable`, or `name` on the `PATH`, if it runs with `--version`. Otherwise the test
/// fails saying how to get it: `scripts/test.sh` installs each and exports its variable.
pub fn external_tool(variable: &str, name: &str, install: &str) -> String {
    let program = std::env::var(variable).unwrap_or_else(|_| name.to_owned());
    let found = std::process::Command::new(&program)
        .arg("--version")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    assert!(
        found,
        "{name} is missing: run scripts/test.sh (it installs it), or {install} and set {variable}"
    );
    program
}

/// A gRPC health check of the whole server (service `""`), with `token` in its
/// `authorization` metadata when given.
pub fn health_check(token: Option<&str>) -> tonic::Request<tonic_health::pb::HealthCheckRequest> {
    let mut request = tonic::Request::new(tonic_health::pb::HealthCheckRequest {
        service: String::new(),
    });
    if let Some(token) = token {
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    request
}

/// `GET path` on a fresh connection from `from` (a loopback address), sent at once; the
/// task reading the answer's status line, so a test can tell an answer still to come.
pub async fn get_from(
    from: std::net::Ipv4Addr,
    to: SocketAddr,
    path: &str,
) -> tokio::task::JoinHandle<String> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind((from, 0).into()).unwrap();
    let mut stream = socket.connect(to).await.unwrap();
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
    tokio::spawn(async move {
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await.unwrap();
        String::from_utf8_lossy(&answer)
            .lines()
            .next()
            .unwrap_or_default()
            .to_owned()
    })
}
