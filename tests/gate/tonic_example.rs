//! The tonic example's wiring, with a real tonic client over 127.0.0.1, and the auth routes
//! over HTTP/1.1 on the same port.

use crate::common;
#[allow(dead_code)]
#[path = "../../examples/tonic.rs"]
mod example;

use std::net::SocketAddr;

use http::{Method, StatusCode};
use jwt_gate::revocation::{MemoryRevocations, RevocationStore};
use jwt_gate::store::MemoryUserStore;
use jwt_gate::{Claims, Keys, TokenVerifier};
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

const SECRET: &[u8] = b"the tonic example secret, 32 b..";

/// Serves the example on an ephemeral port, its tokens checked against `revocations`.
async fn serve(revocations: MemoryRevocations) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let verifier = TokenVerifier::builder(Keys::hs256(SECRET).unwrap())
        .revocations(revocations)
        .build();
    tokio::spawn(example::serve(listener, verifier, MemoryUserStore::new()));
    addr
}

async fn start(revocations: MemoryRevocations) -> HealthClient<tonic::transport::Channel> {
    client(serve(revocations).await).await
}

async fn client(addr: SocketAddr) -> HealthClient<tonic::transport::Channel> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    HealthClient::new(channel)
}

use crate::common::health_check as check;

#[tokio::test]
async fn no_token_is_unauthenticated() {
    let mut client = start(MemoryRevocations::new()).await;
    let status = client.check(check(None)).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    assert_eq!(status.message(), "a bearer token is required");
    // The trailers-only answer is an HTTP 200: it must not be cached.
    assert_eq!(status.metadata().get("cache-control").unwrap(), "no-store");
}

#[tokio::test]
async fn a_valid_token_is_served_and_its_claims_reach_the_service() {
    let mut client = start(MemoryRevocations::new()).await;
    let token = common::token(&Keys::hs256(SECRET).unwrap(), "alice");
    let response = client.check(check(Some(&token))).await.unwrap();
    assert_eq!(
        response.metadata().get("x-authenticated-sub").unwrap(),
        "alice"
    );
    assert_eq!(response.into_inner().status(), ServingStatus::Serving);
}

#[tokio::test]
async fn a_forged_token_is_unauthenticated() {
    let mut client = start(MemoryRevocations::new()).await;
    let foreign = Keys::hs256(b"somebody else's secret, 32 bytes").unwrap();
    let status = client
        .check(check(Some(&common::token(&foreign, "alice"))))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
}

#[tokio::test]
async fn a_revoked_token_is_unauthenticated() {
    let revocations = MemoryRevocations::new();
    let mut client = start(revocations.clone()).await;
    let keys = Keys::hs256(SECRET).unwrap();
    let token = common::token(&keys, "alice");
    assert!(client.check(check(Some(&token))).await.is_ok());

    // Whatever revokes (the auth service's logout) shares the store with the gate.
    let claims: std::sync::Arc<Claims> = TokenVerifier::new(keys).verify(&token).unwrap();
    revocations.revoke(&claims.jti, claims.exp).await.unwrap();
    let status = client.check(check(Some(&token))).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    assert_eq!(status.message(), "the token has been revoked");
}

#[tokio::test]
async fn grpc_over_http1_is_refused_the_http_way() {
    let addr = serve(MemoryRevocations::new()).await;
    let call = |token: Option<String>| {
        let mut request = http::Request::post(format!("http://{addr}/grpc.health.v1.Health/Check"))
            .header("content-type", "application/grpc")
            .header("te", "trailers");
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        // An empty HealthCheckRequest: uncompressed, zero bytes long.
        let body = http_body_util::Full::new(bytes::Bytes::from_static(&[0, 0, 0, 0, 0]));
        common::send(request.body(body).unwrap())
    };
    // Without a token: refused by the gate in HTTP terms, since a gRPC call needs HTTP/2 and a
    // content type alone is the client's choice.
    let answer = call(None).await;
    assert_eq!(answer.status, http::StatusCode::UNAUTHORIZED);
    assert!(answer.headers.get("grpc-status").is_none());
    assert_eq!(answer.headers["cache-control"], "no-store");
    // With one: served over HTTP/1.1, the message being `status: SERVING` (field 1 = 1).
    let token = common::token(&Keys::hs256(SECRET).unwrap(), "alice");
    let answer = call(Some(token)).await;
    assert_eq!(answer.status, http::StatusCode::OK);
    assert_eq!(answer.headers["x-authenticated-sub"], "alice");
    assert_eq!(&answer.body[..], &[0, 0, 0, 0, 2, 0x08, 0x01]);
}

#[tokio::test]
async fn log_in_over_http_then_call_grpc_on_the_same_port() {
    let addr = serve(MemoryRevocations::new()).await;
    let session = common::session(addr, "Alice").await;
    let token = session["access_token"].as_str().unwrap();

    let mut client = client(addr).await;
    let response = client.check(check(Some(token))).await.unwrap();
    assert_eq!(
        response.metadata().get("x-authenticated-sub").unwrap(),
        "alice"
    );
    assert_eq!(response.into_inner().status(), ServingStatus::Serving);

    let logout = common::with_bearer(addr, Method::POST, "/auth/logout", token).await;
    assert_eq!(logout.status, StatusCode::OK, "{}", logout.text);
    let status = client.check(check(Some(token))).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    assert_eq!(status.message(), "the token has been revoked");

    // Every other HTTP path is behind the gate, and the auth routes only take POST.
    let other = common::get(addr, "/grpc.health.v1.Health/Check", None).await;
    assert_eq!(other.status, StatusCode::UNAUTHORIZED);
    let wrong_method = common::get(addr, "/auth/token", None).await;
    assert_eq!(wrong_method.status, StatusCode::METHOD_NOT_ALLOWED);
}

/// One health check over HTTP/2 with prior knowledge, as gRPC clients speak, with exactly the
/// headers given: what a hand-made client can send that tonic's never would.
async fn h2_check(addr: SocketAddr, headers: &[(&str, &str)]) -> http::Response<bytes::Bytes> {
    use http_body_util::BodyExt as _;
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(connection);
    let mut request = http::Request::post(format!("http://{addr}/grpc.health.v1.Health/Check"));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let body = http_body_util::Full::new(bytes::Bytes::from_static(&[0, 0, 0, 0, 0]));
    let response = sender
        .send_request(request.body(body).unwrap())
        .await
        .unwrap();
    let (parts, body) = response.into_parts();
    http::Response::from_parts(parts, body.collect().await.unwrap().to_bytes())
}

#[tokio::test]
async fn only_a_real_grpc_call_gets_the_grpc_rejection() {
    let addr = serve(MemoryRevocations::new()).await;
    let grpc = h2_check(
        addr,
        &[("content-type", "application/grpc"), ("te", "trailers")],
    )
    .await;
    assert_eq!(grpc.status(), StatusCode::OK);
    assert_eq!(grpc.headers()["grpc-status"], "16");
    assert_eq!(grpc.headers()["cache-control"], "no-store");

    // Without `te: trailers` (which gRPC requires), or with another content type, it is no
    // gRPC call: the HTTP rejection.
    for headers in [
        &[("content-type", "application/grpc")][..],
        &[("content-type", "application/grpcx"), ("te", "trailers")][..],
    ] {
        let answer = h2_check(addr, headers).await;
        assert_eq!(answer.status(), StatusCode::UNAUTHORIZED, "{headers:?}");
        assert!(answer.headers().get("grpc-status").is_none());
        assert_eq!(answer.headers()["cache-control"], "no-store");
    }
}
