//! The demo's `/metrics`, scraped while it serves: on its own listener, never on the public
//! one; accepted by Prometheus' own linter (`promtool check metrics`); and counting exactly
//! the requests that were made.

use crate::common;

use std::net::SocketAddr;

use common::demo::*;
use common::prometheus::*;
use common::*;
use http::{Method, StatusCode};

fn metrics_addr(demo: &Demo) -> SocketAddr {
    demo.line
        .split("metrics: http://")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .unwrap_or_else(|| panic!("no metrics address in {:?}", demo.line))
        .parse()
        .unwrap()
}

async fn scrape(addr: SocketAddr) -> String {
    let answer = get(addr, "/metrics", None).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    assert_eq!(
        answer.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    answer.text
}

/// Clients of each kind, and requests each sends, while the scraper scrapes.
const CLIENTS: usize = 4;
const REQUESTS: usize = 25;

#[tokio::test]
async fn metrics_are_served_apart_pass_promtool_and_count_every_request() {
    let dir = temp_dir("metrics");
    let mut command = demo_command();
    command
        .env("JWT_GATE_DB", dir.join("demo.db"))
        .env("JWT_GATE_METRICS_ADDR", "127.0.0.1:0");
    let demo = start(command);
    let metrics = metrics_addr(&demo);
    assert_ne!(metrics, demo.addr);
    // Never on the public listener; and nothing but /metrics on the private one.
    assert_eq!(
        get(demo.addr, "/metrics", None).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        get(metrics, "/auth-test", None).await.status,
        StatusCode::NOT_FOUND
    );

    // Before anything was asked, every series of the gate is there, at zero.
    let first = scrape(metrics).await;
    lint(&first);
    assert!(first.contains("# HELP jwt_gate_requests_refused_total"));

    let addr = demo.addr;
    assert_eq!(
        register(addr, "Alice", PASSWORD).await.status,
        StatusCode::CREATED
    );
    for _ in 0..2 {
        let refused = login(addr, "alice", "not the password").await;
        assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    }
    let logged_in = login(addr, "alice", PASSWORD).await;
    assert_eq!(logged_in.status, StatusCode::OK);
    let access = logged_in.json()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    // Verified in full once, before the load, so that every request of the load is a hit.
    assert_eq!(
        get(addr, "/auth-test", Some(&access)).await.status,
        StatusCode::OK
    );
    // Signed with another key: a bad signature, however often it comes.
    let forged = token(&jwt_gate::Keys::hs256([7u8; 32]).unwrap(), "alice");

    // Load: valid tokens, no token, forged tokens and the open health check, all at once,
    // with a scraper linting what it sees meanwhile.
    let mut clients = tokio::task::JoinSet::new();
    for kind in 0..4 {
        for _ in 0..CLIENTS {
            let (access, forged) = (access.clone(), forged.clone());
            clients.spawn(async move {
                for _ in 0..REQUESTS {
                    let (answer, expected) = match kind {
                        0 => (get(addr, "/auth-test", Some(&access)).await, StatusCode::OK),
                        1 => (
                            get(addr, "/auth-test", None).await,
                            StatusCode::UNAUTHORIZED,
                        ),
                        2 => (
                            get(addr, "/auth-test", Some(&forged)).await,
                            StatusCode::UNAUTHORIZED,
                        ),
                        _ => (get(addr, "/health", None).await, StatusCode::OK),
                    };
                    assert_eq!(answer.status, expected, "{}", answer.text);
                }
            });
        }
    }
    let mut scrapes = 0;
    while !clients.is_empty() {
        lint(&scrape(metrics).await);
        scrapes += 1;
        while let Some(done) = clients.try_join_next() {
            done.unwrap();
        }
    }
    assert!(scrapes >= 1);

    let logout = with_bearer(addr, Method::POST, "/auth/logout", &access).await;
    assert_eq!(logout.status, StatusCode::OK);
    let revoked = get(addr, "/auth-test", Some(&access)).await;
    assert_eq!(revoked.status, StatusCode::UNAUTHORIZED);

    let last = scrape(metrics).await;
    lint(&last);
    let samples = parse(&last);
    let each = (CLIENTS * REQUESTS) as f64;
    let auth_requests = 1.0 + 2.0 + 1.0 + 1.0; // register, 2 failed logins, login, logout
    let gate = |reason: &str| {
        value(
            &samples,
            "jwt_gate_requests_refused_total",
            &[("reason", reason)],
        )
    };
    let passed = |cache: &str| {
        value(
            &samples,
            "jwt_gate_requests_passed_total",
            &[("cache", cache)],
        )
    };
    // The valid token was verified in full once, before the load, then every request of the
    // load was answered from the cache; the health checks and the auth routes carry none.
    assert_eq!(
        (passed("miss"), passed("hit"), passed("none")),
        (1.0, each, each + auth_requests)
    );
    // The /metrics asked of the public listener was refused for want of a token.
    assert_eq!(gate("missing_credentials"), each + 1.0);
    assert_eq!(gate("bad_signature"), each);
    assert_eq!(gate("revoked"), 1.0);
    assert_eq!(gate("expired"), 0.0);
    // Verified in full: the valid token once, a forged one every time (it is never cached).
    assert_eq!(
        value(&samples, "jwt_gate_verified_cache_misses_total", &[]),
        1.0 + each
    );
    let operation = |operation: &str, outcome: &str| {
        value(
            &samples,
            "jwt_gate_auth_operations_total",
            &[("operation", operation), ("outcome", outcome)],
        )
    };
    assert_eq!(operation("register", "success"), 1.0);
    assert_eq!(operation("login", "invalid_grant"), 2.0);
    assert_eq!(operation("login", "success"), 1.0);
    assert_eq!(operation("logout", "success"), 1.0);
    // Three password checks and one new hash, each timed; nobody is left waiting.
    let hashes = |lane: &str| {
        value(
            &samples,
            "jwt_gate_password_hash_duration_seconds_count",
            &[("lane", lane)],
        )
    };
    assert_eq!((hashes("login"), hashes("registration")), (3.0, 1.0));
    let waits = value(
        &samples,
        "jwt_gate_password_hash_wait_seconds_count",
        &[("lane", "login")],
    );
    assert_eq!(waits, 3.0);
    let waits = value(
        &samples,
        "jwt_gate_password_hash_wait_seconds_count",
        &[("lane", "registration")],
    );
    assert_eq!(waits, 1.0);
    let depth = |lane: &str| {
        value(
            &samples,
            "jwt_gate_password_hash_queue_depth",
            &[("lane", lane)],
        )
    };
    assert_eq!((depth("login"), depth("registration")), (0.0, 0.0));
    assert!(
        value(
            &samples,
            "jwt_gate_password_hash_queue_capacity",
            &[("lane", "login")]
        ) > 0.0
    );
    // The logout revoked the token's session.
    assert_eq!(
        value(
            &samples,
            "jwt_gate_revocation_entries",
            &[("kind", "session")]
        ),
        1.0
    );
    // Nothing in the exposition names a user or carries a token.
    assert!(!last.contains("alice") && !last.contains(&access[..20]));
}
