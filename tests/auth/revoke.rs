//! POST /auth/revoke (RFC 7009): a client holding only a refresh token ends its session; an
//! access token given here is revoked too; unknown tokens are `200` and change nothing.

use crate::common;

use common::*;
use http::{Method, StatusCode};
use jwt_gate::service::LoginThrottle;
use jwt_gate::{Claims, Keys};

fn text(json: &serde_json::Value, name: &str) -> String {
    json[name].as_str().unwrap().to_owned()
}

async fn revoke(addr: std::net::SocketAddr, form: &[(&str, &str)]) -> Answer {
    post_form(addr, "/auth/revoke", form).await
}

#[tokio::test]
async fn a_refresh_token_alone_ends_its_session_and_its_access_tokens() {
    let stack = stack().await;
    let json = session(stack.addr, "alice").await;
    let other = session(stack.addr, "alice").await;
    let (access, refresh_token) = (text(&json, "access_token"), text(&json, "refresh_token"));
    // An access token minted by a refresh of the session, still live.
    let rotated = refresh(stack.addr, &refresh_token).await.json();

    let reply = revoke(stack.addr, &[("token", &text(&rotated, "refresh_token"))]).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(reply.header("cache-control"), Some("no-store"));

    for token in [&access, &text(&rotated, "access_token")] {
        assert_eq!(me(stack.addr, token).await.status, StatusCode::UNAUTHORIZED);
    }
    let dead = refresh(stack.addr, &text(&rotated, "refresh_token")).await;
    assert_eq!(dead.status, StatusCode::BAD_REQUEST);
    assert_eq!(dead.json()["error"], "invalid_grant");
    // The user's other session is untouched.
    assert_eq!(
        me(stack.addr, &text(&other, "access_token")).await.status,
        StatusCode::OK
    );
    assert_eq!(
        refresh(stack.addr, &text(&other, "refresh_token"))
            .await
            .status,
        StatusCode::OK
    );
    // Revoking it again, as a client retrying would, is 200 too.
    let again = revoke(stack.addr, &[("token", &text(&rotated, "refresh_token"))]).await;
    assert_eq!(again.status, StatusCode::OK);
}

#[tokio::test]
async fn the_hint_is_only_a_hint() {
    let stack = stack().await;
    for hint in ["access_token", "refresh_token", "something_else"] {
        let json = session(stack.addr, "bob").await;
        let reply = revoke(
            stack.addr,
            &[
                ("token", &text(&json, "refresh_token")),
                ("token_type_hint", hint),
            ],
        )
        .await;
        assert_eq!(reply.status, StatusCode::OK, "{hint}");
        assert_eq!(
            refresh(stack.addr, &text(&json, "refresh_token"))
                .await
                .status,
            StatusCode::BAD_REQUEST,
            "{hint}"
        );
    }
}

#[tokio::test]
async fn an_access_token_given_here_is_revoked_with_its_session() {
    let stack = stack().await;
    let json = session(stack.addr, "carol").await;
    let access = text(&json, "access_token");
    let reply = revoke(
        stack.addr,
        &[("token", &access), ("token_type_hint", "access_token")],
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        me(stack.addr, &access).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        refresh(stack.addr, &text(&json, "refresh_token"))
            .await
            .status,
        StatusCode::BAD_REQUEST
    );

    // A genuine token without a session is revoked by its own id.
    let loose = keys()
        .sign(&Claims::new("carol", now(), now() + 600))
        .unwrap();
    assert_eq!(me(stack.addr, &loose).await.status, StatusCode::OK);
    assert_eq!(
        revoke(stack.addr, &[("token", &loose)]).await.status,
        StatusCode::OK
    );
    assert_eq!(
        me(stack.addr, &loose).await.status,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn unknown_forged_and_expired_tokens_are_200_and_change_nothing() {
    let stack = stack().await;
    let json = session(stack.addr, "dave").await;
    let forged = Keys::hs256(b"not the server's secret, 32 bytes+")
        .unwrap()
        .sign(&Claims::new("dave", now(), now() + 900))
        .unwrap();
    let expired = keys()
        .sign(&Claims::new("dave", now() - 3600, now() - 1800))
        .unwrap();
    let long = "x".repeat(4000);
    for token in [
        "q7ZFYBS9j2fnvDjrxQgt71nEnyYZlVuqmRn5eImEKPA",
        "",
        forged.as_str(),
        expired.as_str(),
        "not.a.jwt",
        long.as_str(),
    ] {
        let reply = revoke(stack.addr, &[("token", token)]).await;
        assert_eq!(reply.status, StatusCode::OK, "{token:.20}");
        assert_eq!(reply.text, "{}");
    }
    assert_eq!(stack.revocations.len(), 0);
    assert_eq!(
        me(stack.addr, &text(&json, "access_token")).await.status,
        StatusCode::OK
    );
    assert_eq!(
        refresh(stack.addr, &text(&json, "refresh_token"))
            .await
            .status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn malformed_requests_are_refused_as_on_the_other_routes() {
    let stack = stack().await;
    let missing = revoke(stack.addr, &[("token_type_hint", "refresh_token")]).await;
    assert_eq!(missing.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(missing.json()["field"], "token");
    let twice = revoke(stack.addr, &[("token", "a"), ("token", "b")]).await;
    assert_eq!(twice.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(twice.json()["field"], "token");

    let json_body = post_json(stack.addr, "/auth/revoke", r#"{"token":"a"}"#).await;
    assert_eq!(json_body.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);

    let huge = format!("token={}", "a".repeat(17 * 1024));
    let too_large = call(
        stack.addr,
        Method::POST,
        "/auth/revoke",
        &[("content-type", "application/x-www-form-urlencoded")],
        huge,
    )
    .await;
    assert_eq!(too_large.status, StatusCode::PAYLOAD_TOO_LARGE);

    let get = call(stack.addr, Method::GET, "/auth/revoke", &[], "").await;
    assert_eq!(get.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(get.header("allow"), Some("POST"));
}

#[tokio::test]
async fn trying_tokens_is_throttled_per_address_apart_from_logins_and_real_ones_cost_nothing() {
    let stack = stack_with(|auth| {
        unthrottled_registrations(auth).login_throttle(LoginThrottle {
            free_failures_per_address: 3,
            ..LoginThrottle::default()
        })
    })
    .await;
    // Real tokens, revoked one after another, are never throttled.
    for _ in 0..5 {
        let json = session(stack.addr, "erin").await;
        let reply = revoke(stack.addr, &[("token", &text(&json, "refresh_token"))]).await;
        assert_eq!(reply.status, StatusCode::OK);
    }
    // The free failures, and the one that starts the delay.
    for n in 0..4 {
        let guess = format!("guess-{n}");
        assert_eq!(
            revoke(stack.addr, &[("token", &guess)]).await.status,
            StatusCode::OK
        );
    }
    let refused = revoke(stack.addr, &[("token", "guess-5")]).await;
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(refused.header("retry-after").is_some());
    // The count is the revocations' own: logins from the same address are not held up.
    assert_eq!(
        login(stack.addr, "erin", PASSWORD).await.status,
        StatusCode::OK
    );
}
