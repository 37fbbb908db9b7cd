//! The revocation store is consulted only for tokens that proved themselves genuine and
//! current: a forged or expired token costs the store nothing, cannot reach it, and is a
//! plain `401` even while the store is down (never the `503` of failing closed).

use crate::common;

use common::*;
use http::Method;
use jwt_gate::service::AuthService;
use jwt_gate::store::MemoryUserStore;
use jwt_gate::{Claims, JwtAuthLayer, TokenVerifier};

/// Tokens with everything right but one thing that the signature or the clock rules out.
fn refused_before_revocation() -> Vec<(&'static str, String)> {
    let keys = keys();
    let forged = {
        let mut token = keys
            .sign(&Claims::new("alice", now(), now() + 900))
            .unwrap();
        token.replace_range(token.len() - 4.., "AAAA");
        token
    };
    let wrong_key = jwt_gate::Keys::hs256(b"another secret, also 32 bytes long")
        .unwrap()
        .sign(&Claims::new("alice", now(), now() + 900))
        .unwrap();
    let expired = keys
        .sign(&Claims::new("alice", now() - 3_600, now() - 600))
        .unwrap();
    vec![
        ("forged signature", forged),
        ("signed with another key", wrong_key),
        ("expired", expired),
    ]
}

#[tokio::test]
async fn the_gate_never_asks_the_store_about_a_forged_or_expired_token() {
    let store = DownRevocations::default();
    let verifier = TokenVerifier::builder(keys())
        .revocations(store.clone())
        .build();
    let addr = serve_gated(JwtAuthLayer::new(verifier)).await;

    for (case, token) in refused_before_revocation() {
        let reply = get_bearer(addr, "/protected", &token).await;
        assert_eq!(reply.status, 401, "{case}: {reply:?}");
        assert!(
            reply
                .header("www-authenticate")
                .is_some_and(|challenge| challenge.contains("invalid_token")),
            "{case}: {reply:?}"
        );
        assert_eq!(store.calls(), 0, "{case}: the store was consulted");
    }

    // A genuine token does reach the store, which fails the request closed: the store is
    // wired in, and the zero above is the gate's ordering, not a store never called.
    let reply = get_bearer(addr, "/protected", &token(&keys(), "alice")).await;
    assert_eq!(reply.status, 503, "{reply:?}");
    assert_eq!(store.calls(), 1);
}

#[tokio::test]
async fn logout_with_a_forged_or_expired_token_never_reaches_the_store() {
    let store = DownRevocations::default();
    let verifier = TokenVerifier::builder(keys())
        .revocations(store.clone())
        .build();
    let auth = AuthService::new(verifier.clone(), MemoryUserStore::new());
    let addr = serve(app(verifier, auth)).await;

    for path in ["/auth/logout", "/auth/logout-all"] {
        for (case, token) in refused_before_revocation() {
            let reply = with_bearer(addr, Method::POST, path, &token).await;
            assert_eq!(reply.status, 401, "{path}, {case}: {reply:?}");
            assert_eq!(store.calls(), 0, "{path}, {case}: the store was consulted");
        }
    }
}
