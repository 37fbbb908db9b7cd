//! The plain hyper example's wiring, over a real connection.

use crate::common;
#[allow(dead_code)]
#[path = "../../examples/hyper.rs"]
mod example;

use http::StatusCode;
use jwt_gate::Keys;

const SECRET: &[u8] = b"the hyper example secret, 32 b..";

async fn start() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(example::serve(listener, Keys::hs256(SECRET).unwrap()));
    addr
}

#[tokio::test]
async fn a_valid_token_reaches_the_handler_with_its_claims() {
    let addr = start().await;
    let token = common::token(&Keys::hs256(SECRET).unwrap(), "alice");
    let answer = common::get(addr, "/me", Some(&token)).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.body, "hello alice");
}

#[tokio::test]
async fn no_token_or_a_foreign_one_is_refused() {
    let addr = start().await;
    let answer = common::get(addr, "/me", None).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        answer.headers["www-authenticate"],
        r#"Bearer realm="jwt-gate""#
    );

    let foreign = Keys::hs256(b"somebody else's secret, 32 bytes").unwrap();
    let answer = common::get(addr, "/me", Some(&common::token(&foreign, "alice"))).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert!(answer.headers["www-authenticate"]
        .to_str()
        .unwrap()
        .contains(r#"error="invalid_token""#));
}

#[tokio::test]
async fn the_health_check_is_open() {
    let addr = start().await;
    let answer = common::get(addr, "/health", None).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.body, "ok");
}
