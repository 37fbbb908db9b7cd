//! Shared by the auth-service tests (`use common::auth::*`): a real HTTP server on 127.0.0.1
//! and a small client.

use std::net::SocketAddr;

use axum::Router;
use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use jwt_gate::revocation::MemoryRevocations;
use jwt_gate::service::{AuthService, ClientAddr};
use jwt_gate::store::MemoryUserStore;
use jwt_gate::{Claims, JwtAuthLayer, Keys, TokenVerifier};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tower::ServiceExt;

pub const SECRET: &[u8] = b"a test secret that is 32+ bytes long";
pub const PASSWORD: &str = "correct horse battery staple";

pub fn keys() -> Keys {
    Keys::hs256(SECRET).unwrap()
}

/// A verifier with its own revocation list, which the returned handle shares. Its clock
/// stands still, so throttle delays of whole seconds cannot lapse in the middle of a test.
pub fn verifier() -> (TokenVerifier, MemoryRevocations) {
    let revocations = MemoryRevocations::new();
    let verifier = TokenVerifier::builder(keys())
        .revocations(revocations.clone())
        .clock(jwt_gate::clock::ManualClock::starting_now())
        .build();
    (verifier, revocations)
}

/// Serves `service` over plain hyper on an ephemeral port, telling it each peer's address.
pub async fn serve_hyper(service: AuthService) -> SocketAddr {
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

/// Serves an axum app with connect info on an ephemeral port.
pub async fn serve_axum(app: Router) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .unwrap();
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
}

pub async fn stack() -> Stack {
    stack_with(|auth| auth).await
}

pub async fn stack_with(configure: impl FnOnce(AuthService) -> AuthService) -> Stack {
    let (verifier, revocations) = verifier();
    let users = MemoryUserStore::new();
    let auth = configure(AuthService::new(verifier.clone(), users.clone()));
    let addr = serve_axum(app(verifier.clone(), auth)).await;
    Stack {
        addr,
        verifier,
        revocations,
        users,
    }
}

#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub text: String,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text)
            .unwrap_or_else(|_| panic!("not JSON ({}): {}", self.status, self.text))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|value| value.to_str().unwrap())
    }
}

pub async fn send(
    addr: SocketAddr,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Reply {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    let mut request = Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"))
        .header("host", addr.to_string());
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request.body(Full::new(body.into())).unwrap();
    let response = sender.send_request(request).await.unwrap();
    let (parts, body) = response.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    Reply {
        status: parts.status,
        headers: parts.headers,
        text: String::from_utf8(bytes.to_vec()).unwrap(),
    }
}

pub async fn post_json(addr: SocketAddr, path: &str, body: &str) -> Reply {
    send(
        addr,
        Method::POST,
        path,
        &[("content-type", "application/json")],
        body.to_owned(),
    )
    .await
}

pub async fn post_form(addr: SocketAddr, path: &str, form: &[(&str, &str)]) -> Reply {
    let body = serde_urlencoded::to_string(form).unwrap();
    send(
        addr,
        Method::POST,
        path,
        &[("content-type", "application/x-www-form-urlencoded")],
        body,
    )
    .await
}

pub async fn register(addr: SocketAddr, username: &str, password: &str) -> Reply {
    let body = serde_json::json!({
        "username": username,
        "email": format!("{}@example.com", username.to_lowercase()),
        "password": password,
    });
    post_json(addr, "/auth/register", &body.to_string()).await
}

pub async fn login(addr: SocketAddr, username: &str, password: &str) -> Reply {
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

pub async fn refresh(addr: SocketAddr, refresh_token: &str) -> Reply {
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

pub async fn with_bearer(addr: SocketAddr, method: Method, path: &str, token: &str) -> Reply {
    let authorization = format!("Bearer {token}");
    send(addr, method, path, &[("authorization", &authorization)], "").await
}

pub async fn me(addr: SocketAddr, token: &str) -> Reply {
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
