//! `serve` as a fleet behind a load balancer: members sharing one Redis count failed logins
//! together and keep every key under the configured prefix.

use http::StatusCode;

use crate::common::redis::{assert_counted_together, redis_url, KeyPrefix};
use crate::common::{login, register, with_bearer, PASSWORD};
use crate::{start, Server, TempDir};

/// A `serve` member with users of its own (an SQLite file each: the throttle keys on the
/// username, not on the row) and the fleet's Redis and key prefix.
fn member(dir: &TempDir, name: &str, prefix: &KeyPrefix) -> Server {
    let config = dir.write(
        &format!("{name}.toml"),
        &format!(
            "[users]\nsqlite = \"{name}.db\"\n\n[revocation]\nredis_url = \"{}\"\nkey_prefix = \"{}\"\n",
            redis_url(),
            prefix.0
        ),
    );
    start(&config, "serve")
}

#[tokio::test(flavor = "multi_thread")]
async fn failed_logins_at_one_member_count_at_the_other() {
    let prefix = KeyPrefix::fresh();
    let dir = TempDir::new("serve-fleet");
    let (a, b) = (member(&dir, "a", &prefix), member(&dir, "b", &prefix));
    for server in [&a, &b] {
        let registered = register(server.addr, "bob", PASSWORD).await;
        assert_eq!(registered.status, StatusCode::CREATED, "{registered:?}");
    }
    assert_counted_together(a.addr, b.addr, "bob").await;
    let keys = prefix.keys();
    assert!(
        keys.iter().any(|key| key.contains("throttle:")),
        "the counts live under the prefix: {keys:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_logout_is_written_under_the_key_prefix() {
    let prefix = KeyPrefix::fresh();
    let dir = TempDir::new("serve-prefix");
    let server = member(&dir, "only", &prefix);
    assert_eq!(
        register(server.addr, "carol", PASSWORD).await.status,
        StatusCode::CREATED
    );
    let session = login(server.addr, "carol", PASSWORD).await;
    assert_eq!(session.status, StatusCode::OK, "{session:?}");
    let token = session.json()["access_token"].as_str().unwrap().to_owned();
    let logout = with_bearer(server.addr, http::Method::POST, "/auth/logout", &token).await;
    assert_eq!(logout.status, StatusCode::OK, "{logout:?}");
    let keys = prefix.keys();
    assert!(
        // Logout ends the token's session: one `sid:` entry.
        keys.iter()
            .any(|key| key.starts_with(&format!("{}sid:", prefix.0))),
        "the revocation lives under the prefix: {keys:?}"
    );
}

#[test]
fn a_key_prefix_that_is_not_visible_ascii_stops_the_start_naming_its_line() {
    let dir = TempDir::new("bad-prefix");
    let config = dir.write(
        "gate.toml",
        "[revocation]\nredis_url = \"redis://127.0.0.1:6379\"\nkey_prefix = \"my app:\"\n",
    );
    let checked = crate::run(
        crate::jwt_gate(),
        &["check-config", config.to_str().unwrap()],
    );
    assert!(!checked.status.success());
    let said = crate::stderr(&checked);
    assert!(said.contains("gate.toml:3"), "{said}");
    assert!(said.contains("revocation.key_prefix"), "{said}");
    assert!(said.contains("not a key prefix"), "{said}");
}

/// `serve` behind a load balancer sees every client at the balancer's address. With
/// `trusted_proxies` naming it, one client's failed logins (told apart by
/// `X-Forwarded-For`) throttle that client, not everyone behind the balancer.
#[tokio::test(flavor = "multi_thread")]
async fn behind_a_trusted_balancer_one_clients_failures_throttle_only_that_client() {
    use http::Method;

    for trusted in [true, false] {
        let dir = TempDir::new("serve-balancer");
        let proxies = if trusted {
            "trusted_proxies = [\"127.0.0.1\"]\n\n"
        } else {
            ""
        };
        let config = dir.write(
            "gate.toml",
            &format!("{proxies}[users]\nsqlite = \"users.db\"\n"),
        );
        let server = start(&config, "serve");
        assert_eq!(
            register(server.addr, "alice", PASSWORD).await.status,
            StatusCode::CREATED
        );
        let attempt = |client: &'static str, username: String, password: &'static str| {
            let addr = server.addr;
            async move {
                crate::common::call(
                    addr,
                    Method::POST,
                    "/auth/token",
                    &[
                        ("content-type", "application/x-www-form-urlencoded"),
                        ("x-forwarded-for", client),
                    ],
                    format!(
                        "username={username}&password={}",
                        password.replace(' ', "+")
                    ),
                )
                .await
                .status
            }
        };
        // One client guesses names until it is made to wait.
        let mut throttled = false;
        for guess in 0..60 {
            if attempt("203.0.113.7", format!("nobody{guess}"), "wrong password").await
                == StatusCode::TOO_MANY_REQUESTS
            {
                throttled = true;
                break;
            }
        }
        assert!(
            throttled,
            "the guessing client is throttled (trusted: {trusted})"
        );
        let other = attempt("198.51.100.2", "alice".to_owned(), PASSWORD).await;
        let expected = if trusted {
            StatusCode::OK
        } else {
            StatusCode::TOO_MANY_REQUESTS
        };
        assert_eq!(
            other, expected,
            "another client behind the balancer (trusted: {trusted})"
        );
    }
}
