//! A revocation store that has to do I/O: the gate waits for it, then calls the ready inner
//! service it took along (clone-and-swap), or refuses, failing closed.

use crate::common;

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use jwt_gate::revocation::{BoxFuture, RevocationCheck, RevocationError, RevocationStore, TokenId};
use jwt_gate::{JwtAuthLayer, TokenVerifier};

const VALID: u8 = 0;
const REVOKED: u8 = 1;
const DOWN: u8 = 2;

/// Answers after a delay, as a remote store would, with whatever the test dialled in.
#[derive(Clone, Default)]
struct SlowStore {
    answer: Arc<AtomicU8>,
}

impl RevocationStore for SlowStore {
    fn check(&self, _token: &TokenId<'_>) -> RevocationCheck {
        let answer = self.answer.load(Ordering::SeqCst);
        RevocationCheck::Pending(Box::pin(async move {
            tokio::time::sleep(Duration::from_millis(5)).await;
            match answer {
                VALID => RevocationCheck::Valid,
                REVOKED => RevocationCheck::Revoked,
                _ => RevocationCheck::Unavailable,
            }
        }))
    }

    fn revoke(&self, _jti: &str, _expires_at: u64) -> BoxFuture<'_, Result<(), RevocationError>> {
        Box::pin(async { Err(RevocationError::new("read-only test store")) })
    }

    fn revoke_subject(
        &self,
        _sub: &str,
        _before: u64,
        _until: u64,
    ) -> BoxFuture<'_, Result<(), RevocationError>> {
        Box::pin(async { Err(RevocationError::new("read-only test store")) })
    }
}

#[tokio::test]
async fn the_gate_waits_for_a_remote_answer_and_fails_closed() {
    let keys = keys();
    let store = SlowStore::default();
    let verifier = TokenVerifier::builder(keys.clone())
        .revocations(store.clone())
        .build();
    let addr = serve_gated(JwtAuthLayer::new(verifier)).await;
    let token = token(&keys, "carol");

    let replies = futures_join(addr, &token, 20).await;
    assert!(replies
        .iter()
        .all(|reply| reply.status == 200 && reply.body == "carol"));

    store.answer.store(REVOKED, Ordering::SeqCst);
    let reply = get_bearer(addr, "/protected", &token).await;
    assert_eq!(reply.status, 401);
    assert!(reply
        .header("www-authenticate")
        .unwrap()
        .contains("invalid_token"));

    store.answer.store(DOWN, Ordering::SeqCst);
    let reply = get_bearer(addr, "/protected", &token).await;
    assert_eq!(reply.status, 503);
    assert_eq!(reply.json()["error"], "temporarily_unavailable");
    let reply = get_with(
        addr,
        "/protected",
        &[
            ("authorization", &format!("Bearer {token}")),
            ("content-type", "application/grpc"),
        ],
    )
    .await;
    // Over HTTP/1.1 a gRPC content type cannot be a gRPC call: the HTTP answer, uncached.
    assert_eq!(reply.status, 503);
    assert_eq!(reply.header("grpc-status"), None);
    assert_eq!(reply.header("cache-control"), Some("no-store"));
}

/// Many requests at once on one connection pool, so several wait on the store together.
async fn futures_join(addr: std::net::SocketAddr, token: &str, count: usize) -> Vec<Answer> {
    let mut tasks = Vec::new();
    for _ in 0..count {
        let token = token.to_owned();
        tasks.push(tokio::spawn(async move {
            get_bearer(addr, "/protected", &token).await
        }));
    }
    let mut replies = Vec::new();
    for task in tasks {
        replies.push(task.await.unwrap());
    }
    replies
}
