//! grant_type=refresh_token: rotation on every use, and a replayed token ending its family.

use crate::common;

use common::*;
use http::StatusCode;

fn field(json: &serde_json::Value, name: &str) -> String {
    json[name].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn each_refresh_rotates_the_refresh_token() {
    let stack = stack().await;
    let login = session(stack.addr, "alice").await;
    let first = refresh(stack.addr, &field(&login, "refresh_token")).await;
    assert_eq!(first.status, StatusCode::OK);
    assert_eq!(first.header("cache-control"), Some("no-store"));
    let first = first.json();
    assert_eq!(first["token_type"], "bearer");
    assert_ne!(first["refresh_token"], login["refresh_token"]);
    assert_ne!(first["access_token"], login["access_token"]);
    assert_eq!(peek_claims(&field(&first, "access_token"))["sub"], "alice");
    assert_eq!(
        me(stack.addr, &field(&first, "access_token")).await.status,
        StatusCode::OK
    );

    let second = refresh(stack.addr, &field(&first, "refresh_token")).await;
    assert_eq!(second.status, StatusCode::OK);
}

#[tokio::test]
async fn a_replayed_refresh_token_revokes_its_whole_family() {
    let stack = stack().await;
    let login = session(stack.addr, "bob").await;
    let stolen = field(&login, "refresh_token");
    let rotated = refresh(stack.addr, &stolen).await.json();

    // The thief (or the victim) presents the spent token again.
    let replay = refresh(stack.addr, &stolen).await;
    assert_eq!(replay.status, StatusCode::BAD_REQUEST);
    assert_eq!(replay.text, r#"{"error":"invalid_grant"}"#);

    // Every token of the family is dead: the rotated refresh token, and the access tokens
    // issued in the family.
    let next = refresh(stack.addr, &field(&rotated, "refresh_token")).await;
    assert_eq!(next.status, StatusCode::BAD_REQUEST);
    for access in [
        field(&login, "access_token"),
        field(&rotated, "access_token"),
    ] {
        assert_eq!(
            me(stack.addr, &access).await.status,
            StatusCode::UNAUTHORIZED
        );
    }
}

#[tokio::test]
async fn other_sessions_survive_a_replay_in_one_family() {
    let stack = stack().await;
    let victim = session(stack.addr, "carol").await;
    let other = session(stack.addr, "carol").await;
    let spent = field(&victim, "refresh_token");
    refresh(stack.addr, &spent).await;
    refresh(stack.addr, &spent).await;
    assert_eq!(
        me(stack.addr, &field(&other, "access_token")).await.status,
        StatusCode::OK
    );
    assert_eq!(
        refresh(stack.addr, &field(&other, "refresh_token"))
            .await
            .status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn concurrent_uses_of_one_refresh_token_rotate_at_most_once() {
    let stack = stack().await;
    let login = session(stack.addr, "dave").await;
    let token = field(&login, "refresh_token");
    let uses = (0..8).map(|_| {
        let (addr, token) = (stack.addr, token.clone());
        tokio::spawn(async move { refresh(addr, &token).await.status })
    });
    let mut statuses = Vec::new();
    for status in uses {
        statuses.push(status.await.unwrap());
    }
    let successes = statuses.iter().filter(|s| **s == StatusCode::OK).count();
    assert_eq!(successes, 1, "{statuses:?}");
    assert!(statuses
        .iter()
        .all(|s| *s == StatusCode::OK || *s == StatusCode::BAD_REQUEST));
}

#[tokio::test]
async fn unknown_and_absurd_refresh_tokens_are_invalid_grants() {
    let stack = stack().await;
    for token in ["", "nope", &"A".repeat(43), &"x".repeat(10_000)] {
        let reply = refresh(stack.addr, token).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", token.len());
        assert_eq!(reply.json()["error"], "invalid_grant");
    }
    // An access token is not a refresh token.
    let login = session(stack.addr, "erin").await;
    let reply = refresh(stack.addr, &field(&login, "access_token")).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
}
