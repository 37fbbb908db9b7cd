//! Throttling shared through Redis (`REDIS_URL`, default `redis://127.0.0.1:6379`): two auth
//! services counting in one Redis throttle as one, and what an unreachable Redis does.
//!
//! Every test works under a key prefix of its own, so tests run in parallel and twice in a row;
//! the keys expire on their own once their counts would be forgotten (15 minutes).

use crate::common;

use common::postgres::CutProxy;
use common::redis::redis_url;
use common::*;
use http::StatusCode;
use jwt_gate::service::{
    AuthService, AuthServiceBuilder, RedisThrottle, RedisThrottleBuilder, RegistrationThrottle,
};
use jwt_gate::store::MemoryUserStore;

/// The `host:port` of `REDIS_URL`, as written in it.
fn redis_upstream() -> String {
    let url = redis_url();
    let rest = url.split_once("://").map_or(url.as_str(), |(_, rest)| rest);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    rest.split('/').next().unwrap().to_owned()
}

/// A throttle on `url` under a key prefix no other test uses.
fn throttle_on(url: &str) -> RedisThrottleBuilder {
    let mut random = [0_u8; 8];
    getrandom::getrandom(&mut random).unwrap();
    let prefix: String = random.iter().map(|byte| format!("{byte:02x}")).collect();
    RedisThrottle::connect(url).key_prefix(&format!("jwt-gate-test:{prefix}:"))
}

/// Two auth services on one user store whose throttle counts in `throttle`.
async fn two_services(
    throttle: RedisThrottle,
    configure: impl Fn(AuthServiceBuilder) -> AuthServiceBuilder,
) -> (std::net::SocketAddr, std::net::SocketAddr) {
    let (verifier, _) = verifier();
    let users = MemoryUserStore::new();
    let mut addrs = Vec::new();
    for _ in 0..2 {
        let auth = configure(AuthService::builder(verifier.clone(), users.clone()))
            .shared_throttle(throttle.clone())
            .build();
        addrs.push(serve(app(verifier.clone(), auth)).await);
    }
    (addrs[0], addrs[1])
}

#[tokio::test]
async fn failures_at_one_service_count_at_the_other() {
    let throttle = throttle_on(&redis_url()).await.unwrap();
    let (a, b) = two_services(throttle, |auth| auth).await;
    register(a, "ivan", PASSWORD).await;
    // Alternating between the two, the sixth failure sets the delay and the seventh waits,
    // as at one service: apart, each would allow five of its own first.
    let mut answered = 0;
    let throttled = loop {
        let at = if answered % 2 == 0 { a } else { b };
        let reply = login(at, "ivan", "wrong password").await;
        if reply.status == StatusCode::TOO_MANY_REQUESTS {
            break reply;
        }
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.text);
        answered += 1;
        assert!(answered <= 12, "never throttled");
    };
    assert_eq!(answered, 6);
    assert!(throttled.header("retry-after").is_some());
    // The right password waits too, at either service.
    assert_eq!(
        login(b, "ivan", PASSWORD).await.status,
        StatusCode::TOO_MANY_REQUESTS
    );
}

#[tokio::test]
async fn registrations_at_one_service_count_at_the_other() {
    let throttle = throttle_on(&redis_url()).await.unwrap();
    let (a, b) = two_services(throttle, |auth| {
        auth.registration_throttle(RegistrationThrottle {
            free_per_address: 2,
            ..RegistrationThrottle::default()
        })
    })
    .await;
    for (i, at) in [a, b, a].into_iter().enumerate() {
        let reply = register(at, &format!("judy{i}"), PASSWORD).await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    }
    let reply = register(b, "judy3", PASSWORD).await;
    assert_eq!(
        reply.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        reply.text
    );
    assert!(reply.header("retry-after").is_some());
}

#[tokio::test]
async fn a_successful_login_at_one_service_clears_the_pair_at_the_other() {
    let throttle = throttle_on(&redis_url()).await.unwrap();
    let (a, b) = two_services(throttle, |auth| auth).await;
    register(a, "kate", PASSWORD).await;
    for _ in 0..2 {
        for _ in 0..4 {
            let reply = login(a, "kate", "wrong password").await;
            assert_eq!(reply.status, StatusCode::BAD_REQUEST);
        }
        assert_eq!(login(b, "kate", PASSWORD).await.status, StatusCode::OK);
    }
}

#[tokio::test]
async fn without_redis_logins_and_registrations_answer_503() {
    let proxy = CutProxy::in_front_of(redis_upstream()).await;
    let throttle = throttle_on(&proxy.url_through(&redis_url())).await.unwrap();
    let (a, _) = two_services(throttle, |auth| auth).await;
    register(a, "liam", PASSWORD).await;
    proxy.cut();
    for _ in 0..3 {
        let reply = login(a, "liam", "wrong password").await;
        assert_eq!(
            reply.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{}",
            reply.text
        );
        let reply = register(a, "mia", PASSWORD).await;
        assert_eq!(
            reply.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{}",
            reply.text
        );
    }
}

#[tokio::test]
async fn counting_locally_keeps_logins_available_and_throttled_without_redis() {
    let proxy = CutProxy::in_front_of(redis_upstream()).await;
    let throttle = throttle_on(&proxy.url_through(&redis_url()))
        .count_locally_when_unreachable()
        .await
        .unwrap();
    let (a, _) = two_services(throttle, |auth| auth).await;
    register(a, "noah", PASSWORD).await;
    proxy.cut();
    assert_eq!(login(a, "noah", PASSWORD).await.status, StatusCode::OK);
    let mut answered = 0;
    while login(a, "noah", "wrong password").await.status == StatusCode::BAD_REQUEST {
        answered += 1;
        assert!(answered <= 10, "never throttled");
    }
    assert_eq!(answered, 6);
}

#[tokio::test]
async fn an_unreachable_redis_at_start_is_an_error() {
    let proxy = CutProxy::in_front_of(redis_upstream()).await;
    let url = proxy.url_through(&redis_url());
    proxy.cut();
    assert!(throttle_on(&url).await.is_err());
    assert!(RedisThrottle::connect("not a url").await.is_err());
}
