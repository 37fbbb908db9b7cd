//! The `Claims` extractor on a route that no gate covers answers as the gate would.

use crate::common;

use axum::routing::get;
use axum::Router;
use common::*;
use jwt_gate::Claims;
use tokio::net::TcpListener;

#[tokio::test]
async fn claims_extractor_without_a_gate_rejects_like_the_gate() {
    let app = Router::new().route("/me", get(|claims: Claims| async move { claims.sub }));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    // Even a token that would be valid: nothing verified it, so nothing is trusted.
    let reply = get_bearer(addr, "/me", &token(&keys(), "alice")).await;
    assert_eq!(reply.status, 401);
    assert_eq!(
        reply.header("www-authenticate"),
        Some("Bearer realm=\"jwt-gate\"")
    );
    assert_eq!(reply.json()["error"], "unauthorized");
}
