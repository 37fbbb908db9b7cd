//! `jwt-gate proxy` from a TOML file, in front of a real upstream.

use http::StatusCode;

use crate::common::{get, get_with};
use crate::{jwt_gate, run, start, stderr, upstream, TempDir};

#[tokio::test(flavor = "multi_thread")]
async fn proxy_from_toml_refuses_without_token_and_forwards_identity_with_one() {
    let upstream = upstream().await;
    let dir = TempDir::new("proxy");
    let config = dir.write(
        "gate.toml",
        &format!(
            r#"upstream = "http://{upstream}"
allow_dev_tokens = true

[validation]
issuer = "cli-test"
audience = "orders"

[[routes]]
path = "/health"
access = "open"

[[forward_claims]]
claim = "iss"
header = "x-auth-issuer"
"#
        ),
    );
    let gate = start(&config, "proxy");

    let refused = get(gate.addr, "/orders", None).await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        refused.header("www-authenticate"),
        Some("Bearer realm=\"jwt-gate\"")
    );
    assert_eq!(get(gate.addr, "/health", None).await.status, StatusCode::OK);

    let minted = run(
        jwt_gate(),
        &["--config", config.to_str().unwrap(), "token", "alice"],
    );
    assert!(minted.status.success(), "{}", stderr(&minted));
    let token = String::from_utf8(minted.stdout).unwrap().trim().to_owned();
    let allowed = get_with(
        gate.addr,
        "/orders",
        &[
            ("authorization", &format!("Bearer {token}")),
            ("x-auth-sub", "admin"),
        ],
    )
    .await;
    assert_eq!(allowed.status, StatusCode::OK, "{}", allowed.text);
    assert_eq!(allowed.json()["x-auth-sub"], "alice");
    assert_eq!(allowed.json()["x-auth-issuer"], "cli-test");

    // The same secret, but no `iss`/`aud`: the program always requires them.
    let keys = jwt_gate::Keys::hs256(crate::SECRET).unwrap();
    let foreign = crate::common::token(&keys, "alice");
    let refused = get(gate.addr, "/orders", Some(&foreign)).await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
}

/// On-CPU nanoseconds of each of `pid`'s worker threads (`jwt-gate-w<N>`), from `/proc`.
#[cfg(target_os = "linux")]
fn worker_cpu(pid: u32) -> std::collections::BTreeMap<String, u64> {
    let mut workers = std::collections::BTreeMap::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let task = task.unwrap().path();
        let name = std::fs::read_to_string(task.join("comm")).unwrap_or_default();
        if !name.starts_with("jwt-gate-w") {
            continue;
        }
        let on_cpu = std::fs::read_to_string(task.join("schedstat")).unwrap_or_default();
        let on_cpu = on_cpu
            .split_whitespace()
            .next()
            .unwrap_or("0")
            .parse()
            .unwrap();
        // Names are cut to 15 bytes; the thread id tells workers apart.
        let id = task.file_name().unwrap().to_string_lossy().into_owned();
        workers.insert(format!("{} ({id})", name.trim()), on_cpu);
    }
    workers
}

#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread")]
async fn proxy_serves_on_the_configured_workers_and_spreads_connections_over_them() {
    let upstream = upstream().await;
    let dir = TempDir::new("workers");
    let config = dir.write(
        "gate.toml",
        &format!(
            "upstream = \"http://{upstream}\"\nallow_dev_tokens = true\n\n[limits]\nworkers = 4\n"
        ),
    );
    let shown = run(jwt_gate(), &["check-config", config.to_str().unwrap()]);
    assert!(
        String::from_utf8_lossy(&shown.stdout).contains("workers = 4"),
        "{}",
        String::from_utf8_lossy(&shown.stdout)
    );
    let gate = start(&config, "proxy");
    let token = crate::mint(&config, "alice");
    // The listening line comes once the listeners are bound, the threads just after; then
    // their counters settle once each has started and waits for connections.
    let mut before = worker_cpu(gate.child.id());
    for _ in 0..250 {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        let now = worker_cpu(gate.child.id());
        if now.len() == 4 && now == before {
            break;
        }
        before = now;
    }
    assert_eq!(before.len(), 4, "{before:?}");
    assert!(
        before.values().all(|on_cpu| *on_cpu > 0),
        "no on-CPU time in /proc/<pid>/task/<tid>/schedstat: {before:?}"
    );

    // A new connection per request: the kernel hashes each to one of the listeners.
    let requests = (0..64).map(|_| {
        let token = token.clone();
        tokio::spawn(async move { get(gate.addr, "/orders", Some(&token)).await })
    });
    for request in requests.collect::<Vec<_>>() {
        let answer = request.await.unwrap();
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
        assert_eq!(answer.json()["x-auth-sub"], "alice");
    }
    let after = worker_cpu(gate.child.id());
    let busy = before
        .iter()
        .filter(|(name, on_cpu)| after[*name] > **on_cpu)
        .count();
    // 64 connections all on one of 4 listeners would take a 1 in 4^63 chance.
    assert!(
        busy >= 2,
        "connections stayed on {busy} worker: {before:?} {after:?}"
    );
}

/// Behind a load balancer named in `trusted_proxies`, the upstream learns the client's address
/// from the forwarded chain; from anyone else the chain is replaced by the peer's address.
#[tokio::test(flavor = "multi_thread")]
async fn the_forwarded_chain_of_a_trusted_balancer_reaches_the_upstream() {
    use axum::routing::any;
    let upstream = crate::common::serve(axum::Router::new().fallback(any(
        |headers: http::HeaderMap| async move {
            headers
                .get("x-forwarded-for")
                .map(|value| value.to_str().unwrap().to_owned())
                .unwrap_or_default()
        },
    )))
    .await;
    for (trusted, expected) in [
        ("127.0.0.1", "203.0.113.9, 127.0.0.1"),
        ("10.9.9.9", "127.0.0.1"),
    ] {
        let dir = TempDir::new("proxy-balancer");
        let config = dir.write(
            "gate.toml",
            &format!(
                "upstream = \"http://{upstream}\"\ntrusted_proxies = [\"{trusted}\"]\n\n\
                 [[routes]]\npath = \"/*\"\naccess = \"open\"\n"
            ),
        );
        let gate = start(&config, "proxy");
        let answer = get_with(gate.addr, "/who", &[("x-forwarded-for", "203.0.113.9")]).await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
        assert_eq!(answer.text, expected, "trusted: {trusted}");
    }
}

/// With `roles_claim` set for a provider (Keycloak's `realm_access.roles`), the auth service
/// writes a local user's roles there too: the gate reads every issuer's roles at one path, so
/// a route's `roles` holds a local user to the same rule.
#[tokio::test(flavor = "multi_thread")]
async fn a_local_users_roles_are_written_where_the_gate_reads_them() {
    use jwt_gate::store::{GrantChange, SqliteUserStore, UserStore as _};

    let dir = TempDir::new("local-roles");
    let upstream = upstream().await;
    let config = dir.write(
        "gate.toml",
        &format!(
            "upstream = \"http://{upstream}\"\n\n\
             [validation]\nissuer = \"cli-roles\"\naudience = \"orders\"\n\
             roles_claim = \"realm_access.roles\"\n\n\
             [[routes]]\npath = \"/orders/*\"\nroles = [\"clerk\"]\n\n\
             [users]\nsqlite = \"users.db\"\n"
        ),
    );
    let gate = start(&config, "proxy");
    let registered = crate::common::register(gate.addr, "bob", crate::common::PASSWORD).await;
    assert_eq!(
        registered.status,
        StatusCode::CREATED,
        "{}",
        registered.text
    );
    // An operator grants the role in the users' database.
    let users = SqliteUserStore::open(dir.0.join("users.db")).unwrap();
    let clerk = GrantChange::new().grant_role("clerk").unwrap();
    assert!(users.change_grants("bob", &clerk).await.unwrap());
    let login = crate::common::login(gate.addr, "bob", crate::common::PASSWORD).await;
    assert_eq!(login.status, StatusCode::OK, "{}", login.text);
    let token = login.json()["access_token"].as_str().unwrap().to_owned();
    let claims = crate::common::peek_claims(&token);
    assert_eq!(
        claims["realm_access"]["roles"],
        serde_json::json!(["clerk"])
    );
    let answer = get(gate.addr, "/orders/1", Some(&token)).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
}
