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

#[tokio::test]
async fn a_thousand_refreshes_leave_the_session_bounded_and_replays_still_caught() {
    let stack = stack_with(|auth| auth.max_refreshes_per_minute(u32::MAX)).await;
    let login = session(stack.addr, "gail").await;
    let mut previous = field(&login, "refresh_token");
    let mut current = previous.clone();
    for n in 0..1_000 {
        let reply = refresh(stack.addr, &current).await;
        assert_eq!(reply.status, StatusCode::OK, "refresh {n}: {}", reply.text);
        previous = std::mem::replace(&mut current, field(&reply.json(), "refresh_token"));
    }
    assert_eq!(
        stack.users.refresh_token_count(),
        jwt_gate::store::SPENT_TOKENS_KEPT + 1,
        "the live token and the newest spent ones"
    );
    assert_eq!(
        refresh(stack.addr, &previous).await.status,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        refresh(stack.addr, &current).await.status,
        StatusCode::BAD_REQUEST
    );
}

#[tokio::test]
async fn refreshing_a_session_too_often_is_429_and_spends_nothing() {
    let stack = stack_with(|auth| auth.max_refreshes_per_minute(3)).await;
    let login = session(stack.addr, "hal").await;
    let other = session(stack.addr, "hal").await;
    let mut token = field(&login, "refresh_token");
    for _ in 0..3 {
        let reply = refresh(stack.addr, &token).await;
        assert_eq!(reply.status, StatusCode::OK);
        token = field(&reply.json(), "refresh_token");
    }
    stack.clock.advance(20);
    let refused = refresh(stack.addr, &token).await;
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(refused.header("retry-after"), Some("40"));
    assert_eq!(refused.json()["error"], "too_many_requests");
    // The limit is per session.
    assert_eq!(
        refresh(stack.addr, &field(&other, "refresh_token"))
            .await
            .status,
        StatusCode::OK
    );
    // The refused token was not spent: it works once the minute is over, and only once.
    stack.clock.advance(40);
    assert_eq!(refresh(stack.addr, &token).await.status, StatusCode::OK);
    assert_eq!(
        refresh(stack.addr, &token).await.status,
        StatusCode::BAD_REQUEST
    );
}

#[tokio::test]
async fn a_session_ends_at_its_lifetime_however_recently_refreshed() {
    let stack =
        stack_with(|auth| auth.session_lifetime(std::time::Duration::from_secs(3_600))).await;
    let login = session(stack.addr, "ida").await;
    stack.clock.advance(3_000);
    let refreshed = refresh(stack.addr, &field(&login, "refresh_token")).await;
    assert_eq!(refreshed.status, StatusCode::OK);
    // That refresh token is minutes old and would live 14 days, but its session is over.
    stack.clock.advance(600);
    let refused = refresh(stack.addr, &field(&refreshed.json(), "refresh_token")).await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    assert_eq!(refused.json()["error"], "invalid_grant");
}

#[tokio::test]
async fn refresh_tokens_are_stored_as_their_sha256_only() {
    use sha2::{Digest, Sha256};
    let stack = stack().await;
    let login = session(stack.addr, "jo").await;
    let first = field(&login, "refresh_token");
    let second = field(&refresh(stack.addr, &first).await.json(), "refresh_token");
    let mut stored = stack.users.refresh_token_hashes();
    stored.sort();
    let mut expected: Vec<[u8; 32]> = [&first, &second]
        .iter()
        .map(|token| Sha256::digest(token.as_bytes()).into())
        .collect();
    expected.sort();
    assert_eq!(stored, expected);
}
