//! The bound on sessions in `docs/auth-service.md`, over HTTP: a user keeps at most 64, and
//! the 65th login ends the oldest, so logging in over and over cannot grow the store.

use crate::common;

use common::*;
use http::StatusCode;
use jwt_gate::store::MAX_SESSIONS_PER_USER;

#[tokio::test]
async fn the_65th_login_ends_the_oldest_session() {
    let stack = stack().await;
    assert_eq!(
        register(stack.addr, "carol", PASSWORD).await.status,
        StatusCode::CREATED
    );
    let mut refresh_tokens = Vec::new();
    for _ in 0..=MAX_SESSIONS_PER_USER {
        let reply = login(stack.addr, "carol", PASSWORD).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
        refresh_tokens.push(reply.json()["refresh_token"].as_str().unwrap().to_owned());
    }
    // The first session made room for the 65th; the second, now the oldest, lives on.
    let oldest = refresh(stack.addr, &refresh_tokens[0]).await;
    assert_eq!(oldest.status, StatusCode::BAD_REQUEST, "{}", oldest.text);
    assert_eq!(oldest.json()["error"], "invalid_grant");
    for kept in [&refresh_tokens[1], &refresh_tokens[MAX_SESSIONS_PER_USER]] {
        let reply = refresh(stack.addr, kept).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    }
}
