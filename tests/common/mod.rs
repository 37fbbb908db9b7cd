//! Helpers shared by the black-box tests: servers on ephemeral 127.0.0.1 ports, a client, and
//! token forging helpers.
#![allow(dead_code)] // each test file uses a different part

pub mod auth;
pub mod demo;
pub mod postgres;

use std::convert::Infallible;
use std::net::SocketAddr;

use axum::routing;
use axum::Router;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use jwt_gate::clock::{Clock, SystemClock};
use jwt_gate::{Claims, JwtAuthLayer, Keys};
use tokio::net::TcpListener;

pub const SECRET: &[u8] = b"a test secret that is 32 bytes!!";

pub fn now() -> u64 {
    SystemClock.now()
}

pub fn hs256_keys() -> Keys {
    Keys::hs256(SECRET).unwrap()
}

/// A token for `sub`, valid for ten minutes.
pub fn token(keys: &Keys, sub: &str) -> String {
    keys.sign(&Claims::new(sub, now(), now() + 600)).unwrap()
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

/// Serves `router` on an ephemeral port until the test ends.
pub async fn serve(router: Router) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    addr
}

/// The routes every gate test serves: a protected one, an open one, an optional one.
/// Each answers with the subject it saw, or `anonymous`.
pub async fn serve_axum(layer: JwtAuthLayer) -> SocketAddr {
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
pub async fn serve_hyper(layer: JwtAuthLayer) -> SocketAddr {
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
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|value| value.to_str().unwrap())
    }

    pub fn text(&self) -> &str {
        std::str::from_utf8(&self.body).unwrap()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

/// Sends `request` over a fresh HTTP/1.1 connection.
pub async fn send(request: Request<Full<Bytes>>) -> Answer {
    let client = Client::builder(TokioExecutor::new()).build_http();
    let response = client.request(request).await.unwrap();
    let (parts, body) = response.into_parts();
    Answer {
        status: parts.status,
        headers: parts.headers,
        body: body.collect().await.unwrap().to_bytes(),
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

/// `method http://{addr}{path}` with these headers (repeated names are sent repeated).
pub async fn request_with(
    addr: SocketAddr,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
) -> Answer {
    let mut request = Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"))
        .body(Full::default())
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
    request_with(addr, Method::GET, path, headers).await
}

pub async fn get_bearer(addr: SocketAddr, path: &str, token: &str) -> Answer {
    get(addr, path, Some(token)).await
}
