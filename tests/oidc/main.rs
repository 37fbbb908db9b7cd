//! The gate against a real OpenID provider: panva's `oidc-provider` (a certified OpenID
//! Connect implementation), installed from npm by `scripts/test.sh` into `target/oidc` and run
//! by node on 127.0.0.1. Nothing here imitates a provider: `provider.mjs` only configures it
//! (one client for the `client_credentials` grant, JWT access tokens by resource indicator,
//! the signing keys), and the tests talk to it as a resource server in production would.
//! Without node or the package every test fails, naming the install step; none skips.

// A test binary exports nothing: `pub` marks what its sibling modules use.
#![allow(unreachable_pub)]

#[path = "../common/mod.rs"]
mod common;

mod configuration;
mod provider;
mod rotation;
mod tokens;

use std::net::SocketAddr;

use axum::routing::get;
use axum::Router;
use http::{Method, StatusCode};
use jwt_gate::{Claims, JwtAuthLayer, Require, TokenVerifier};

/// Serves the orders API behind `verifier`: `GET /orders` needs the scope `orders:read`,
/// `POST /orders` needs `orders:write`; each answers with the token's subject.
pub async fn orders_api(verifier: TokenVerifier) -> SocketAddr {
    let layer = JwtAuthLayer::new(verifier)
        .require_route(Some(Method::GET), "/orders", Require::scope("orders:read"))
        .require_route(
            Some(Method::POST),
            "/orders",
            Require::scope("orders:write"),
        );
    async fn subject(claims: Claims) -> String {
        claims.sub
    }
    common::serve(
        Router::new()
            .route("/orders", get(subject).post(subject))
            .layer(layer),
    )
    .await
}

/// Asserts a `401 invalid_token` saying `description`.
pub fn assert_refused(answer: &common::Answer, description: &str) {
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{answer:?}");
    let challenge = answer.header("www-authenticate").unwrap();
    assert!(
        challenge.contains(&format!(
            r#"error="invalid_token", error_description="{description}""#
        )),
        "{challenge}"
    );
}
