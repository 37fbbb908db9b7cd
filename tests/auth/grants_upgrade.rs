//! Databases made before users held roles and scopes: opened by this version, their users
//! keep logging in (holding nothing until granted), their sessions keep refreshing, and
//! grants then work on them.

use crate::common;

use common::postgres::TestSchema;
use common::*;
use http::StatusCode;
use jwt_gate::service::AuthService;
use jwt_gate::store::{GrantChange, IssuedRefresh, Rotation, SqliteUserStore, UserStore};

/// The layout the previous release left (SQLite `user_version` 2), as it created it.
const SQLITE_V2: &str = "
CREATE TABLE users (
    key TEXT PRIMARY KEY, username TEXT NOT NULL, email TEXT NOT NULL,
    password_hash TEXT NOT NULL, lookalike TEXT);
CREATE UNIQUE INDEX users_lookalike ON users (lookalike);
CREATE TABLE refresh_families (
    family TEXT PRIMARY KEY, user_key TEXT NOT NULL, expires_at INTEGER NOT NULL,
    revoked INTEGER NOT NULL DEFAULT 0, generation INTEGER NOT NULL DEFAULT 0,
    window_start INTEGER NOT NULL DEFAULT 0, window_count INTEGER NOT NULL DEFAULT 0);
CREATE TABLE refresh_tokens (
    hash BLOB PRIMARY KEY, family TEXT NOT NULL, generation INTEGER NOT NULL,
    expires_at INTEGER NOT NULL, spent INTEGER NOT NULL DEFAULT 0);
CREATE INDEX refresh_families_user ON refresh_families (user_key);
CREATE INDEX refresh_tokens_family ON refresh_tokens (family, generation);
CREATE INDEX refresh_tokens_expiry ON refresh_tokens (expires_at);
PRAGMA user_version = 2;
";

fn admin() -> GrantChange {
    GrantChange::new()
        .grant_role("admin")
        .unwrap()
        .grant_scope("orders:read")
        .unwrap()
}

/// What an upgraded store must show: the old user holds nothing, its session (whose live
/// token hashes as `[1; 32]`) rotates granting nothing, and grants then stick.
async fn old_rows_work_after_the_upgrade(store: &dyn UserStore, user: &str) {
    let found = store.find_user(user).await.unwrap().unwrap();
    assert!(
        found.roles.is_empty() && found.scopes.is_empty(),
        "{found:?}"
    );
    let next = IssuedRefresh {
        hash: [2; 32],
        expires_at: now() + 600,
    };
    assert_eq!(
        store
            .rotate_refresh_token(&[1; 32], now(), next, 10)
            .await
            .unwrap(),
        Rotation::Rotated {
            user_key: user.into(),
            session: "old-session".into(),
            scopes: Vec::new(),
        }
    );
    assert!(store.change_grants(user, &admin()).await.unwrap());
    let found = store.find_user(user).await.unwrap().unwrap();
    assert_eq!(
        (found.roles, found.scopes),
        (vec!["admin".to_owned()], vec!["orders:read".to_owned()])
    );
}

#[tokio::test]
async fn an_sqlite_database_of_the_previous_layout_is_upgraded_and_keeps_working() {
    let path = temp_dir("grants-upgrade").join("users.db");
    // A user registered by the previous release (the password is PASSWORD), with a session.
    let hash = argon2_hash_of(PASSWORD);
    {
        let connection = rusqlite::Connection::open(&path).unwrap();
        connection.execute_batch(SQLITE_V2).unwrap();
        connection
            .execute(
                "INSERT INTO users VALUES ('olga', 'Olga', 'olga@example.com', ?1, 'olga')",
                [&hash],
            )
            .unwrap();
        let far = i64::try_from(now() + 3600).unwrap();
        connection
            .execute(
                "INSERT INTO refresh_families (family, user_key, expires_at)
                 VALUES ('old-session', 'olga', ?1)",
                [far],
            )
            .unwrap();
        connection
            .execute(
                "INSERT INTO refresh_tokens (hash, family, generation, expires_at)
                 VALUES (?1, 'old-session', 0, ?2)",
                rusqlite::params![&[1_u8; 32][..], far],
            )
            .unwrap();
    }

    // Over HTTP: the old user logs in, and the token carries no grants.
    let (verifier, _) = verifier();
    let store = SqliteUserStore::open(&path).unwrap();
    let addr = serve(app(
        verifier.clone(),
        AuthService::new(verifier, store.clone()),
    ))
    .await;
    let reply = login(addr, "olga", PASSWORD).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let json = reply.json();
    assert!(json.get("scope").is_none());
    let claims = peek_claims(json["access_token"].as_str().unwrap());
    assert!(claims.get("roles").is_none() && claims.get("scope").is_none());

    old_rows_work_after_the_upgrade(&store, "olga").await;
    // Granted, the next login carries them.
    let json = login(addr, "olga", PASSWORD).await.json();
    assert_eq!(json["scope"], "orders:read");
    let claims = peek_claims(json["access_token"].as_str().unwrap());
    assert_eq!(claims["roles"], serde_json::json!(["admin"]));

    // Opened again: the layout is current, nothing is migrated twice, the grants are kept.
    drop(store);
    let again = SqliteUserStore::open(&path).unwrap();
    assert_eq!(
        again.find_user("olga").await.unwrap().unwrap().roles,
        ["admin"]
    );
    let version: i64 = rusqlite::Connection::open(&path)
        .unwrap()
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .unwrap();
    assert_eq!(version, 3);
}

/// An argon2id hash of `password` as any release stored it.
fn argon2_hash_of(password: &str) -> String {
    use jwt_gate::service::{Argon2Hasher, PasswordHasher};
    Argon2Hasher::default().hash(password).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_schema_of_the_previous_migrations_is_upgraded_and_keeps_working() {
    let schema = TestSchema::fresh();
    drop(schema.open().await);
    // Back to the schema the previous release left: its three migrations, nothing of the
    // fourth; then a user and a session as it stored them.
    let client = schema.client().await;
    let s = &schema.name;
    client
        .batch_execute(&format!(
            "ALTER TABLE \"{s}\".jwt_gate_users DROP COLUMN roles, DROP COLUMN scopes;
             ALTER TABLE \"{s}\".jwt_gate_sessions DROP COLUMN scopes;
             DELETE FROM \"{s}\".jwt_gate_migrations WHERE version >= 4;
             INSERT INTO \"{s}\".jwt_gate_users (key, username, email, password_hash, lookalike)
                 VALUES ('olga', 'Olga', 'olga@example.com', '$argon2id$x', 'olga');
             INSERT INTO \"{s}\".jwt_gate_sessions (family, user_key, expires_at)
                 VALUES ('old-session', 'olga', {far});
             INSERT INTO \"{s}\".jwt_gate_refresh_tokens (hash, family, generation, expires_at)
                 VALUES ('\\x{token}', 'old-session', 0, {far});",
            far = now() + 3600,
            token = "01".repeat(32),
        ))
        .await
        .unwrap();
    let store = schema.open().await;
    old_rows_work_after_the_upgrade(&store, "olga").await;
    let applied: i32 = client
        .query_one(
            &format!("SELECT max(version) FROM \"{s}\".jwt_gate_migrations"),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(applied, 4);
}
