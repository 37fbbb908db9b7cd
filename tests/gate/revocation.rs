//! The in-memory revocation list under time and under concurrency.

use crate::common;

use std::sync::Arc;

use common::*;
use jwt_gate::clock::ManualClock;
use jwt_gate::revocation::{MemoryRevocations, RevocationCheck, RevocationStore};
use jwt_gate::{AuthError, Claims, TokenVerifier};

#[tokio::test]
async fn entries_expire_with_their_token_and_leave_memory() {
    let start = now();
    let clock = ManualClock::new(start);
    let store = MemoryRevocations::new().with_clock(clock.clone());
    let keys = keys();
    let verifier = TokenVerifier::builder(keys.clone())
        .revocations(store.clone())
        .clock(clock.clone())
        .build();

    let claims = Claims::new("alice", start, start + 900);
    let token = keys.sign(&claims).unwrap();
    store.revoke(&claims.jti, claims.exp).await.unwrap();
    let verified = verifier.verify(&token).unwrap();
    assert!(matches!(
        verifier.check_revocation(&verified),
        RevocationCheck::Revoked
    ));

    // Past expiry and leeway, the token is refused for being expired, and the entry can go.
    clock.advance(900 + 31);
    assert_eq!(verifier.verify(&token), Err(AuthError::Expired));
    clock.advance(300);
    // Any later write sweeps (at most once a minute); then only the live entry remains.
    let live = Claims::new("bob", clock_now(&clock), clock_now(&clock) + 900);
    store.revoke(&live.jti, live.exp).await.unwrap();
    assert_eq!(store.len(), 1);
}

fn clock_now(clock: &ManualClock) -> u64 {
    jwt_gate::clock::Clock::now(clock)
}

#[tokio::test]
async fn memory_is_bounded_by_live_tokens_not_history() {
    let clock = ManualClock::new(1_000_000);
    let store = MemoryRevocations::new().with_clock(clock.clone());
    // Ten "hours" of 15-minute tokens revoked at a steady rate.
    for hour in 0..10 {
        for index in 0..1_000 {
            let now = clock_now(&clock);
            store.revoke_now(&format!("{hour}-{index}"), now + 900);
            clock.advance(3);
        }
        clock.advance(600);
    }
    // 10,000 were revoked; only those whose token expired less than the grace period before
    // the last sweep (at most a minute ago) may remain: one per 3 s over 900 + 300 + 60 s.
    assert!(
        store.len() <= (900 + 300 + 60) / 3 + 1,
        "{} entries kept",
        store.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn revoking_while_validating_from_many_tasks_is_consistent() {
    let keys = keys();
    let store = MemoryRevocations::new();
    let verifier = Arc::new(
        TokenVerifier::builder(keys.clone())
            .revocations(store.clone())
            .build(),
    );
    let tokens: Vec<(Claims, String)> = (0..200)
        .map(|index| {
            let claims = Claims::new(format!("user{index}"), now(), now() + 900);
            let token = keys.sign(&claims).unwrap();
            (claims, token)
        })
        .collect();
    let tokens = Arc::new(tokens);

    let mut tasks = Vec::new();
    for worker in 0..8 {
        let (verifier, tokens, store) = (verifier.clone(), tokens.clone(), store.clone());
        tasks.push(tokio::spawn(async move {
            for round in 0..50 {
                for (index, (claims, token)) in tokens.iter().enumerate() {
                    if (index + round + worker) % 97 == 0 && index % 2 == 0 {
                        store.revoke(&claims.jti, claims.exp).await.unwrap();
                    }
                    let verified = verifier.verify(token).unwrap();
                    let revoked = matches!(
                        verifier.check_revocation(&verified),
                        RevocationCheck::Revoked
                    );
                    // Only even-indexed tokens are ever revoked; odd ones never look revoked.
                    assert!(!revoked || index % 2 == 0, "token {index} wrongly revoked");
                }
                tokio::task::yield_now().await;
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    // Once everything settled, exactly the revoked ones are refused.
    for (index, (claims, token)) in tokens.iter().enumerate() {
        let verified = verifier.verify(token).unwrap();
        let revoked = matches!(
            verifier.check_revocation(&verified),
            RevocationCheck::Revoked
        );
        let expected = store.is_revoked(&jwt_gate::revocation::TokenId::of(claims));
        assert_eq!(revoked, expected, "token {index}");
        assert!(!revoked || index % 2 == 0);
    }
    assert!(!store.is_empty());
}

#[tokio::test]
async fn logout_everywhere_refuses_older_tokens_of_the_subject_only() {
    let keys = keys();
    let store = MemoryRevocations::new();
    let verifier = TokenVerifier::builder(keys.clone())
        .revocations(store.clone())
        .build();
    let t = now();
    let old = keys.sign(&Claims::new("alice", t - 10, t + 890)).unwrap();
    let other = keys.sign(&Claims::new("bob", t - 10, t + 890)).unwrap();
    store.revoke_subject("alice", t, t + 86_400).await.unwrap();
    let fresh = keys.sign(&Claims::new("alice", t, t + 900)).unwrap();
    let revoked = |token: &str| {
        matches!(
            verifier.check_revocation(&verifier.verify(token).unwrap()),
            RevocationCheck::Revoked
        )
    };
    assert!(revoked(&old));
    assert!(!revoked(&other));
    assert!(!revoked(&fresh));
}

#[test]
#[should_panic(expected = "longer than the revocation store's grace period")]
fn a_leeway_longer_than_the_grace_period_is_refused_when_built() {
    let revocations = MemoryRevocations::new().with_grace(std::time::Duration::from_secs(60));
    let _ = TokenVerifier::builder(keys())
        .validation(jwt_gate::Validation {
            leeway: std::time::Duration::from_secs(61),
            ..jwt_gate::Validation::default()
        })
        .revocations(revocations)
        .build();
}

#[tokio::test]
async fn a_revoked_token_stays_refused_for_as_long_as_the_leeway_accepts_it() {
    let start = now();
    let clock = ManualClock::new(start);
    let grace = std::time::Duration::from_secs(60);
    let store = MemoryRevocations::new()
        .with_clock(clock.clone())
        .with_grace(grace);
    let keys = keys();
    // The longest leeway the store allows.
    let verifier = TokenVerifier::builder(keys.clone())
        .validation(jwt_gate::Validation {
            leeway: grace,
            ..jwt_gate::Validation::default()
        })
        .revocations(store.clone())
        .clock(clock.clone())
        .build();
    let claims = Claims::new("alice", start, start + 900);
    let token = keys.sign(&claims).unwrap();
    store.revoke(&claims.jti, claims.exp).await.unwrap();
    // The last second the leeway still accepts the token, after a sweep.
    clock.set(claims.exp + 60);
    store.purge_expired();
    let verified = verifier.verify(&token).unwrap();
    assert!(matches!(
        verifier.check_revocation(&verified),
        RevocationCheck::Revoked
    ));
}
