//! Failed logins slow down: per username, per client address, with growing delays.

use crate::common;

use common::*;
use http::{Method, StatusCode};
use jwt_gate::clock::ManualClock;
use jwt_gate::service::{AuthService, LoginThrottle};
use jwt_gate::store::MemoryUserStore;
use jwt_gate::TokenVerifier;

/// Fails logins for `username` until throttled; returns how many attempts were answered
/// before the first 429, and that 429.
async fn fail_until_throttled(
    addr: std::net::SocketAddr,
    username: &str,
    limit: usize,
) -> (usize, Answer) {
    for attempt in 0..limit {
        let reply = login(addr, username, "wrong password").await;
        if reply.status == StatusCode::TOO_MANY_REQUESTS {
            return (attempt, reply);
        }
        assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    }
    panic!("never throttled after {limit} attempts");
}

#[tokio::test]
async fn repeated_failures_on_one_username_get_429_with_retry_after() {
    let stack = stack().await;
    register(stack.addr, "alice", PASSWORD).await;
    let (answered, throttled) = fail_until_throttled(stack.addr, "alice", 10).await;
    assert_eq!(
        answered, 6,
        "five free failures, the sixth sets the first delay"
    );
    let retry_after: u64 = throttled.header("retry-after").unwrap().parse().unwrap();
    assert!(retry_after >= 1);
    assert_eq!(throttled.json()["error"], "too_many_attempts");
    // The right password does not slip past the throttle, and the answer is the same.
    assert_eq!(
        login(stack.addr, "alice", PASSWORD).await.status,
        StatusCode::TOO_MANY_REQUESTS
    );
    // Other names from the same address are not held up yet.
    register(stack.addr, "bob", PASSWORD).await;
    assert_eq!(
        login(stack.addr, "bob", PASSWORD).await.status,
        StatusCode::OK
    );
    // Unknown names are throttled the same way, so the 429 tells nothing either.
    let (answered, _) = fail_until_throttled(stack.addr, "nobody-here", 10).await;
    assert_eq!(answered, 6);
}

#[tokio::test]
async fn delays_grow_and_expire_with_time() {
    let clock = ManualClock::starting_now();
    let verifier = TokenVerifier::builder(keys()).clock(clock.clone()).build();
    let auth = AuthService::new(verifier.clone(), MemoryUserStore::new());
    let addr = serve(app(verifier, auth)).await;
    register(addr, "carol", PASSWORD).await;
    let (_, first) = fail_until_throttled(addr, "carol", 10).await;
    assert_eq!(first.header("retry-after"), Some("1"));
    clock.advance(1);
    let (answered, second) = fail_until_throttled(addr, "carol", 10).await;
    assert_eq!(answered, 1);
    assert_eq!(second.header("retry-after"), Some("2"));
    clock.advance(2);
    let (_, third) = fail_until_throttled(addr, "carol", 10).await;
    assert_eq!(third.header("retry-after"), Some("4"));
    // Fifteen quiet minutes later, the slate is clean, and a good login works.
    clock.advance(15 * 60);
    assert_eq!(login(addr, "carol", PASSWORD).await.status, StatusCode::OK);
}

#[tokio::test]
async fn a_successful_login_clears_the_usernames_count() {
    let stack = stack().await;
    register(stack.addr, "dave", PASSWORD).await;
    for _ in 0..2 {
        for _ in 0..4 {
            assert_eq!(
                login(stack.addr, "dave", "wrong password").await.status,
                StatusCode::BAD_REQUEST
            );
        }
        assert_eq!(
            login(stack.addr, "dave", PASSWORD).await.status,
            StatusCode::OK
        );
    }
}

#[tokio::test]
async fn spraying_many_usernames_from_one_address_is_throttled() {
    let stack = stack().await;
    let mut statuses = Vec::new();
    for i in 0..25 {
        // A spoofed X-Forwarded-For changes nothing: no proxy is trusted.
        let forwarded = format!("198.51.100.{i}");
        let body = format!("username=user{i}&password=Summer2024%21");
        let reply = call(
            stack.addr,
            Method::POST,
            "/auth/token",
            &[
                ("content-type", "application/x-www-form-urlencoded"),
                ("x-forwarded-for", &forwarded),
            ],
            body,
        )
        .await;
        statuses.push(reply.status);
    }
    let first_throttled = statuses
        .iter()
        .position(|status| *status == StatusCode::TOO_MANY_REQUESTS)
        .expect("throttled");
    assert_eq!(
        first_throttled, 21,
        "twenty free failures per address, then a delay"
    );
}

#[tokio::test]
async fn forwarded_for_is_believed_only_from_a_trusted_proxy() {
    let stack = stack_with(|auth| {
        auth.trusted_proxies(["127.0.0.1".parse().unwrap()])
            .login_throttle(LoginThrottle {
                free_failures_per_address: 3,
                ..LoginThrottle::default()
            })
    })
    .await;
    let attempt = |i: usize, client: &'static str| {
        let addr = stack.addr;
        async move {
            let body = format!("username=user{i}&password=wrong-password");
            call(
                addr,
                Method::POST,
                "/auth/token",
                &[
                    ("content-type", "application/x-www-form-urlencoded"),
                    ("x-forwarded-for", client),
                ],
                body,
            )
            .await
            .status
        }
    };
    // Behind the trusted proxy, each client has its own count.
    for i in 0..5 {
        let client = [
            "203.0.113.1",
            "203.0.113.2",
            "203.0.113.3",
            "203.0.113.4",
            "203.0.113.5",
        ][i];
        assert_eq!(attempt(i, client).await, StatusCode::BAD_REQUEST);
    }
    // One client spraying names is caught.
    let mut throttled = false;
    for i in 10..16 {
        throttled |= attempt(i, "203.0.113.9").await == StatusCode::TOO_MANY_REQUESTS;
    }
    assert!(throttled);
}
