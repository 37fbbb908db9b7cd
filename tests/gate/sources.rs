//! Tokens from a cookie or a header of the gate's own, the cross-site check on cookie-borne
//! tokens, and CORS preflights, over real HTTP: an axum app behind the gate, whose handlers
//! count what reaches them.

use crate::common::{self, Answer};

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use http::Method;
use jwt_gate::{Claims, JwtAuthLayer};

/// An app behind `layer`: `GET`/`POST /orders` answer the subject, and `OPTIONS /orders`
/// answers `204`; every call of a handler is counted.
async fn serve_counting(layer: JwtAuthLayer) -> (SocketAddr, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let count = |hits: &Arc<AtomicUsize>| {
        let hits = hits.clone();
        move |claims: Claims| async move {
            hits.fetch_add(1, Ordering::SeqCst);
            claims.sub
        }
    };
    let preflights = hits.clone();
    let app = Router::new()
        .route(
            "/orders",
            get(count(&hits))
                .post(count(&hits))
                .options(move || async move {
                    preflights.fetch_add(1, Ordering::SeqCst);
                    http::StatusCode::NO_CONTENT
                }),
        )
        .layer(layer);
    (common::serve(app).await, hits)
}

fn gate() -> JwtAuthLayer {
    JwtAuthLayer::from_keys(common::keys()).token_cookie("__Host-token")
}

async fn call(addr: SocketAddr, method: Method, headers: &[(&str, &str)]) -> Answer {
    common::call(addr, method, "/orders", headers, Bytes::new()).await
}

/// The description of a request whose sources carry different tokens.
const CONFLICT: &str = "the request carries different tokens in different places";

fn assert_invalid_request(answer: &Answer, description: &str) {
    assert_eq!(answer.status, 400, "{}", answer.text);
    let challenge = answer.header("www-authenticate").unwrap();
    assert_eq!(
        challenge,
        format!(
            "Bearer realm=\"jwt-gate\", error=\"invalid_request\", error_description=\"{description}\""
        )
    );
    assert_eq!(answer.json()["error"], "invalid_request");
}

#[tokio::test]
async fn a_token_cookie_authenticates_and_reaches_the_extractor() {
    let (addr, hits) = serve_counting(gate()).await;
    let token = common::token(&common::keys(), "alice");
    let cookie = format!("theme=dark; __Host-token={token}; lang=en");
    let answer = call(addr, Method::GET, &[("cookie", &cookie)]).await;
    assert_eq!(
        (answer.status.as_u16(), answer.text.as_str()),
        (200, "alice")
    );
    // The same token in the header and the cookie is one token.
    let bearer = format!("Bearer {token}");
    let answer = call(
        addr,
        Method::GET,
        &[("authorization", &bearer), ("cookie", &cookie)],
    )
    .await;
    assert_eq!(answer.status, 200);
    assert_eq!(hits.load(Ordering::SeqCst), 2);
    // Without the source configured, the cookie is not looked at.
    let (plain, _) = serve_counting(JwtAuthLayer::from_keys(common::keys())).await;
    let answer = call(plain, Method::GET, &[("cookie", &cookie)]).await;
    assert_eq!(answer.status, 401);
}

#[tokio::test]
async fn two_different_tokens_or_a_repeated_cookie_are_refused() {
    let (addr, hits) = serve_counting(gate()).await;
    let keys = common::keys();
    let (alice, mallory) = (
        common::token(&keys, "alice"),
        common::token(&keys, "mallory"),
    );
    let bearer = format!("Bearer {alice}");
    let cookie = format!("__Host-token={mallory}");
    let answer = call(
        addr,
        Method::GET,
        &[("authorization", &bearer), ("cookie", &cookie)],
    )
    .await;
    assert_invalid_request(&answer, CONFLICT);
    // A cookie tossed in beside the real one, in one header or two, is never first-wins.
    let tossed = format!("__Host-token={alice}; __Host-token={mallory}");
    let answer = call(addr, Method::GET, &[("cookie", &tossed)]).await;
    assert_invalid_request(&answer, "the token cookie is sent more than once");
    let first = format!("__Host-token={alice}");
    let answer = call(
        addr,
        Method::GET,
        &[("cookie", &first), ("cookie", &cookie)],
    )
    .await;
    assert_invalid_request(&answer, "the token cookie is sent more than once");
    let quoted = format!("__Host-token=\"{alice}\"");
    let answer = call(addr, Method::GET, &[("cookie", &quoted)]).await;
    assert_invalid_request(&answer, "the token cookie is malformed");
    // Nothing echoes the token.
    assert!(!answer.text.contains(&alice));
    assert_eq!(hits.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_cross_site_unsafe_request_with_the_cookie_never_reaches_the_service() {
    let (addr, hits) = serve_counting(gate().trust_origin("https://admin.example")).await;
    let token = common::token(&common::keys(), "alice");
    let cookie = format!("__Host-token={token}");
    let cookie = ("cookie", cookie.as_str());
    for cross_site in [
        &[
            ("sec-fetch-site", "cross-site"),
            ("origin", "https://evil.example"),
        ][..],
        &[
            ("sec-fetch-site", "same-site"),
            ("origin", "https://www.example"),
        ],
        &[("origin", "https://evil.example")],
        &[("origin", "null")],
    ] {
        for method in [Method::POST, Method::PUT, Method::DELETE, Method::PATCH] {
            let mut headers = cross_site.to_vec();
            headers.push(cookie);
            let answer = call(addr, method.clone(), &headers).await;
            assert_eq!(answer.status, 403, "{method} {cross_site:?}");
            assert_eq!(answer.json()["error"], "cross_site_request");
            assert_eq!(answer.header("www-authenticate"), None);
            assert_eq!(answer.header("cache-control"), Some("no-store"));
        }
    }
    assert_eq!(hits.load(Ordering::SeqCst), 0);

    // The site's own pages, a trusted origin, a safe method: served.
    let own_origin = format!("http://{addr}");
    for allowed in [
        &[
            ("sec-fetch-site", "same-origin"),
            ("origin", own_origin.as_str()),
        ][..],
        &[("origin", own_origin.as_str())],
        &[
            ("sec-fetch-site", "cross-site"),
            ("origin", "https://admin.example"),
        ],
    ] {
        let mut headers = allowed.to_vec();
        headers.push(cookie);
        let answer = call(addr, Method::POST, &headers).await;
        assert_eq!(
            (answer.status.as_u16(), answer.text.as_str()),
            (200, "alice"),
            "{allowed:?}"
        );
    }
    let answer = call(
        addr,
        Method::GET,
        &[("sec-fetch-site", "cross-site"), cookie],
    )
    .await;
    assert_eq!(answer.status, 200);
    assert_eq!(hits.load(Ordering::SeqCst), 4);

    // A WebSocket handshake is a GET, but the socket it opens is not guarded by CORS: from
    // another site, with only the cookie, it is refused (cross-site WebSocket hijacking).
    let handshake = [
        ("connection", "upgrade"),
        ("upgrade", "websocket"),
        ("sec-websocket-version", "13"),
        ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ];
    for cross_site in [
        &[
            ("sec-fetch-site", "cross-site"),
            ("origin", "https://evil.example"),
        ][..],
        &[("origin", "https://evil.example")],
    ] {
        let mut headers = handshake.to_vec();
        headers.extend_from_slice(cross_site);
        headers.push(cookie);
        let answer = call(addr, Method::GET, &headers).await;
        assert_eq!(answer.status, 403, "{cross_site:?}");
        assert_eq!(answer.json()["error"], "cross_site_request");
    }
    // Behind nginx, forward-auth judges the `auth_request` subrequest, from which
    // `proxy_pass` has cleared `Upgrade` and `Connection`: the handshake's own headers, or the
    // browser's fetch mode alone, still make it one.
    for handshake in [
        &handshake[2..],
        &[("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")][..],
        &[("sec-websocket-version", "13")],
        &[("sec-fetch-mode", "websocket")],
    ] {
        let mut headers = handshake.to_vec();
        headers.extend_from_slice(&[("sec-fetch-site", "cross-site"), cookie]);
        let answer = call(addr, Method::GET, &headers).await;
        assert_eq!(answer.status, 403, "{handshake:?}");
    }
    assert_eq!(hits.load(Ordering::SeqCst), 4);
    let mut headers = handshake.to_vec();
    headers.extend_from_slice(&[("origin", own_origin.as_str()), cookie]);
    assert_ne!(call(addr, Method::GET, &headers).await.status, 403);
}

#[tokio::test]
async fn a_bearer_token_is_not_subject_to_the_cross_site_check() {
    let (addr, hits) = serve_counting(gate().token_header("x-access-token")).await;
    let token = common::token(&common::keys(), "alice");
    let bearer = format!("Bearer {token}");
    let cross_site = [
        ("sec-fetch-site", "cross-site"),
        ("origin", "https://evil.example"),
    ];
    for source in [
        ("authorization", bearer.as_str()),
        ("x-access-token", &token),
    ] {
        let mut headers = cross_site.to_vec();
        headers.push(source);
        let answer = call(addr, Method::POST, &headers).await;
        assert_eq!(answer.status, 200, "{}", source.0);
    }
    assert_eq!(hits.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_custom_header_carries_the_bare_token() {
    let layer = JwtAuthLayer::from_keys(common::keys()).token_header("x-access-token");
    let (addr, hits) = serve_counting(layer).await;
    let keys = common::keys();
    let token = common::token(&keys, "alice");
    let answer = call(addr, Method::GET, &[("x-access-token", &token)]).await;
    assert_eq!(
        (answer.status.as_u16(), answer.text.as_str()),
        (200, "alice")
    );
    let other = common::token(&keys, "mallory");
    let bearer = format!("Bearer {other}");
    let answer = call(
        addr,
        Method::GET,
        &[("x-access-token", &token), ("authorization", &bearer)],
    )
    .await;
    assert_invalid_request(&answer, CONFLICT);
    let answer = call(
        addr,
        Method::GET,
        &[("x-access-token", &token), ("x-access-token", &token)],
    )
    .await;
    assert_invalid_request(&answer, "the token header is sent more than once");
    // The header is judged as the Authorization header is: a forged token is a 401.
    let forged = format!("{}x", &token[..token.len() - 1]);
    let answer = call(addr, Method::GET, &[("x-access-token", &forged)]).await;
    assert_eq!(answer.status, 401);
    assert_eq!(answer.json()["error"], "invalid_token");
    assert_eq!(hits.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_preflight_passes_without_a_token_only_when_enabled() {
    let preflight = [
        ("origin", "https://app.example"),
        ("access-control-request-method", "POST"),
    ];
    let (closed, closed_hits) = serve_counting(gate()).await;
    let answer = call(closed, Method::OPTIONS, &preflight).await;
    assert_eq!(answer.status, 401);
    assert_eq!(closed_hits.load(Ordering::SeqCst), 0);

    let (addr, hits) = serve_counting(gate().pass_cors_preflight(true)).await;
    let answer = call(addr, Method::OPTIONS, &preflight).await;
    assert_eq!(answer.status, 204);
    assert_eq!(hits.load(Ordering::SeqCst), 1);
    // A plain OPTIONS, or one lacking either header, is judged as any request.
    for headers in [
        &[][..],
        &[("origin", "https://app.example")],
        &[("access-control-request-method", "POST")],
    ] {
        let answer = call(addr, Method::OPTIONS, headers).await;
        assert_eq!(answer.status, 401, "{headers:?}");
    }
    // Only OPTIONS is a preflight.
    let answer = call(addr, Method::POST, &preflight).await;
    assert_eq!(answer.status, 401);
    // One naming another method is none: an application honouring the override on any
    // method would delete without a token.
    let mut overriding = preflight.to_vec();
    overriding.push(("x-http-method-override", "DELETE"));
    assert_eq!(call(addr, Method::OPTIONS, &overriding).await.status, 401);
    let answer = common::call(
        addr,
        Method::OPTIONS,
        "/orders?_method=DELETE",
        &preflight,
        Bytes::new(),
    )
    .await;
    assert_eq!(answer.status, 401);
    assert_eq!(hits.load(Ordering::SeqCst), 1);
}
