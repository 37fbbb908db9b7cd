//! Helpers shared by the black-box tests: servers on ephemeral 127.0.0.1 ports and a client.
#![allow(dead_code)] // each test file uses a different part

use std::net::SocketAddr;

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use jwt_gate::clock::{Clock, SystemClock};
use jwt_gate::{Claims, Keys};

/// Serves `router` on an ephemeral port until the test ends.
pub async fn serve(router: axum::Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    addr
}

/// A token for `sub`, valid for ten minutes.
pub fn token(keys: &Keys, sub: &str) -> String {
    let now = SystemClock.now();
    keys.sign(&Claims::new(sub, now, now + 600)).unwrap()
}

pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
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
