//! Two demo servers as a fleet: one PostgreSQL schema (`DATABASE_URL`) and one Redis key
//! prefix (`REDIS_URL`, default `redis://127.0.0.1:6379`), both fresh per test, so that
//! users and logouts are shared between them.

use crate::common;

use std::time::{Duration, Instant};

use common::demo::*;
use common::postgres::{database_url, TestSchema};
use common::redis::{assert_counted_together, redis_url, KeyPrefix};
use common::*;
use http::{Method, StatusCode};

const FLEET_SECRET: &str = "a fleet secret that is more than thirty-two bytes";
/// How long a logout may take to reach the other server before the test fails: generous,
/// since machines are noisy; polling stops as soon as it arrives.
const DEADLINE: Duration = Duration::from_secs(15);

fn fleet_member(schema: &TestSchema, prefix: &KeyPrefix) -> Demo {
    let mut command = demo_command();
    command
        .env("JWT_GATE_SECRET", FLEET_SECRET)
        .env("DATABASE_URL", database_url())
        .env("JWT_GATE_PG_SCHEMA", &schema.name)
        .env("REDIS_URL", redis_url())
        .env("JWT_GATE_REDIS_PREFIX", &prefix.0);
    start(command)
}

fn access_token(reply: &Answer) -> String {
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    reply.json()["access_token"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn two_servers_share_users_and_logouts() {
    let schema = TestSchema::fresh();
    let prefix = KeyPrefix::fresh();
    let a = fleet_member(&schema, &prefix);
    let b = fleet_member(&schema, &prefix);
    for demo in [&a, &b] {
        assert!(
            demo.line
                .contains(&format!("users: PostgreSQL schema {}", schema.name))
                && demo.line.contains("revocations: Redis"),
            "{}",
            demo.line
        );
        for url in [database_url(), redis_url()] {
            assert!(!demo.line.contains(&url), "no URL: {}", demo.line);
        }
    }

    assert_eq!(
        register(a.addr, "Alice", PASSWORD).await.status,
        StatusCode::CREATED
    );
    assert_eq!(
        register(b.addr, "alice", PASSWORD).await.status,
        StatusCode::CONFLICT
    );
    let signed_in = login(b.addr, "ALICE", PASSWORD).await;
    let access = access_token(&signed_in);
    let refresh_token = signed_in.json()["refresh_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let whoami = with_bearer(a.addr, Method::GET, "/auth-test", &access).await;
    assert_eq!(whoami.status, StatusCode::OK, "{whoami:?}");
    assert_eq!(whoami.json()["username"], "Alice");

    let logged_out = Instant::now();
    let logout = with_bearer(a.addr, Method::POST, "/auth/logout", &access).await;
    assert_eq!(logout.status, StatusCode::OK, "{logout:?}");
    loop {
        let seen = with_bearer(b.addr, Method::GET, "/auth-test", &access).await;
        if seen.status == StatusCode::UNAUTHORIZED {
            break;
        }
        assert_eq!(seen.status, StatusCode::OK, "{seen:?}");
        assert!(
            logged_out.elapsed() < DEADLINE,
            "server B still accepts the token {DEADLINE:?} after the logout at A"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    println!(
        "a logout at server A was refused at server B after {:?}",
        logged_out.elapsed()
    );
    // The session ended in the shared database too: its refresh token is refused at B.
    assert_eq!(
        refresh(b.addr, &refresh_token).await.status,
        StatusCode::BAD_REQUEST
    );
}

#[tokio::test]
async fn alone_the_demo_says_it_uses_sqlite_and_memory() {
    let dir = temp_dir("alone");
    let mut command = demo_command();
    command.env("JWT_GATE_DB", dir.join("users.db"));
    let demo = start(command);
    assert!(
        demo.line.contains("users: SQLite") && demo.line.contains("revocations: memory"),
        "{}",
        demo.line
    );
}

#[tokio::test]
async fn a_fleet_member_needs_the_shared_secret() {
    let schema = TestSchema::fresh();
    let output = demo_command()
        .env("DATABASE_URL", database_url())
        .env("JWT_GATE_PG_SCHEMA", &schema.name)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("JWT_GATE_SECRET"), "{stderr}");
}

#[tokio::test]
async fn an_unreachable_database_stops_the_start_without_showing_the_password() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let output = demo_command()
        .env("JWT_GATE_SECRET", FLEET_SECRET)
        .env(
            "DATABASE_URL",
            format!("postgres://app:hunter2-secret@127.0.0.1:{port}/test"),
        )
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("DATABASE_URL"), "{stderr}");
    assert!(!stderr.contains("hunter2"), "{stderr}");
    assert!(output.stdout.is_empty());
}

#[tokio::test]
async fn failed_logins_at_one_server_count_at_the_other() {
    let schema = TestSchema::fresh();
    let prefix = KeyPrefix::fresh();
    let a = fleet_member(&schema, &prefix);
    let b = fleet_member(&schema, &prefix);
    assert_eq!(
        register(a.addr, "Bob", PASSWORD).await.status,
        StatusCode::CREATED
    );
    assert_counted_together(a.addr, b.addr, "bob").await;
}

#[tokio::test]
async fn an_unreachable_redis_stops_the_start_without_showing_the_password() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let dir = temp_dir("no-redis");
    let mut demo = demo_command()
        .env("JWT_GATE_SECRET", FLEET_SECRET)
        .env("JWT_GATE_DB", dir.join("users.db"))
        .env(
            "REDIS_URL",
            format!("redis://:hunter2-secret@127.0.0.1:{port}"),
        )
        .spawn()
        .unwrap();
    // Refusing takes one connection attempt to a closed port (refused at once, or the 2 s
    // timeout) after the demo's own start-up; a demo still running a minute later, on however
    // busy a machine, has started without Redis.
    let deadline = Instant::now() + Duration::from_secs(60);
    while demo.try_wait().unwrap().is_none() {
        if Instant::now() >= deadline {
            let _ = demo.kill();
            let _ = demo.wait();
            panic!("the demo started without its Redis");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = demo.wait_with_output().unwrap();
    // A gate that cannot know the revocations must not serve: no "listening" line, a
    // failure status, and a message naming the setting but not its password.
    assert!(output.stdout.is_empty(), "it started");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("REDIS_URL"), "{stderr}");
    assert!(!stderr.contains("hunter2"), "{stderr}");
}
