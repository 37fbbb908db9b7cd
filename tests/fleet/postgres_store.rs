//! `PostgresUserStore` against the real server on `DATABASE_URL`: migrations under
//! concurrency, an unreachable server, and the connection password kept out of sight.

use crate::common;

use common::postgres::{database_url, TestSchema};
use jwt_gate::store::{PostgresUserStore, Registration, User, UserStore};

fn alice() -> User {
    User {
        key: "alice".into(),
        username: "Alice".into(),
        email: "alice@example.com".into(),
        password_hash: "$argon2id$x".into(),
        roles: Vec::new(),
        scopes: Vec::new(),
    }
}

/// A URL on which nothing listens: a port just released by the OS.
async fn closed_port_url(password: &str) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    format!("postgres://postgres:{password}@127.0.0.1:{port}/test")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_fleet_starting_at_once_migrates_once() {
    let schema = TestSchema::fresh();
    let starts: Vec<_> = (0..6)
        .map(|_| {
            let builder = schema.store();
            tokio::spawn(async move { builder.await })
        })
        .collect();
    let mut stores = Vec::new();
    for start in starts {
        stores.push(start.await.unwrap().expect("every store opens"));
    }
    assert_eq!(
        stores[0].create_user(alice()).await.unwrap(),
        Registration::Created
    );
    assert_eq!(
        stores[5].create_user(alice()).await.unwrap(),
        Registration::Taken
    );

    // Opening again later finds the schema current and the data kept.
    let again = schema.open().await;
    assert_eq!(again.find_user("alice").await.unwrap(), Some(alice()));
    let client = schema.client().await;
    let versions: i64 = client
        .query_one(
            &format!(
                "SELECT count(*) FROM \"{}\".jwt_gate_migrations",
                schema.name
            ),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    // Each embedded migration (the tables, the look-alike key, bounded sessions, grants)
    // recorded once.
    assert_eq!(versions, 4);
}

#[tokio::test]
async fn the_unique_key_is_the_normalised_username() {
    let schema = TestSchema::fresh();
    let store = schema.open().await;
    store.create_user(alice()).await.unwrap();
    // Behind the store's back: the database itself refuses a second row for the key.
    let client = schema.client().await;
    let duplicate = client
        .execute(
            &format!(
                "INSERT INTO \"{}\".jwt_gate_users (key, username, email, password_hash)
                 VALUES ('alice', 'ALICE', 'x@example.com', 'x')",
                schema.name
            ),
            &[],
        )
        .await
        .unwrap_err();
    assert_eq!(
        duplicate.code(),
        Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION)
    );
}

#[tokio::test]
async fn refresh_tokens_are_stored_as_hashes_only() {
    let schema = TestSchema::fresh();
    let store = schema.open().await;
    let hash = [7_u8; 32];
    store
        .insert_refresh_token(
            "alice",
            "family",
            u64::MAX,
            &[],
            jwt_gate::store::IssuedRefresh {
                hash,
                expires_at: u64::MAX,
            },
        )
        .await
        .unwrap();
    let client = schema.client().await;
    let rows = client
        .query(
            &format!(
                "SELECT hash, expires_at FROM \"{}\".jwt_gate_refresh_tokens",
                schema.name
            ),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].get::<_, Vec<u8>>(0), hash.to_vec());
    // A time past what PostgreSQL's bigint holds is kept as the largest it can.
    assert_eq!(rows[0].get::<_, i64>(1), i64::MAX);
}

#[tokio::test]
async fn an_unreachable_server_is_an_error_that_keeps_the_password() {
    let url = closed_port_url("hunter2-secret").await;
    let error = PostgresUserStore::connect(&url)
        .timeout(std::time::Duration::from_secs(2))
        .await
        .unwrap_err();
    let shown = format!("{error} {error:?}");
    assert!(!shown.contains("hunter2"), "{shown}");
    // The cause, not only "error connecting to server": an operator must tell a closed port
    // from a wrong password.
    assert!(
        error
            .to_string()
            .to_lowercase()
            .contains("connection refused"),
        "{error}"
    );

    let garbage = PostgresUserStore::connect("postgres://u:hunter2-secret@host:notaport/db")
        .await
        .unwrap_err();
    let shown = format!("{garbage} {garbage:?}");
    assert!(shown.contains("connection string"), "{shown}");
    assert!(!shown.contains("hunter2"), "{shown}");
}

#[tokio::test]
async fn the_password_stays_out_of_debug_output() {
    // Trust authentication lets a wrong password in, so the URL can carry one here.
    let url = database_url().replacen("://postgres@", "://postgres:hunter2-secret@", 1);
    let builder = PostgresUserStore::connect(&url).schema("jwt_gate_unused");
    assert!(!format!("{builder:?}").contains("hunter2"));
    let schema = TestSchema::fresh();
    let store = PostgresUserStore::connect(&url)
        .schema(&schema.name)
        .await
        .unwrap();
    let shown = format!("{store:?}");
    assert!(shown.contains(&schema.name), "{shown}");
    assert!(!shown.contains("hunter2"), "{shown}");
}

#[tokio::test]
async fn a_schema_name_that_is_not_a_plain_identifier_is_refused() {
    let error = PostgresUserStore::connect(&database_url())
        .schema("x\"; DROP TABLE users; --")
        .await
        .unwrap_err();
    assert!(error.to_string().contains("schema name"), "{error}");
}

#[tokio::test]
async fn a_store_can_share_the_applications_pool() {
    let schema = TestSchema::fresh();
    let config: tokio_postgres::Config = database_url().parse().unwrap();
    let manager = deadpool_postgres::Manager::new(config, tokio_postgres::NoTls);
    let pool = deadpool_postgres::Pool::builder(manager)
        .max_size(2)
        .build()
        .unwrap();
    let store = PostgresUserStore::with_pool(pool.clone())
        .schema(&schema.name)
        .await
        .unwrap();
    store.create_user(alice()).await.unwrap();
    assert_eq!(store.schema(), Some(schema.name.as_str()));
    assert!(pool.status().size >= 1, "the store used the given pool");
}

#[tokio::test]
async fn expired_sessions_are_swept_as_new_ones_start() {
    let schema = TestSchema::fresh();
    let issued = |n: u8, expires_at: u64| jwt_gate::store::IssuedRefresh {
        hash: [n; 32],
        expires_at,
    };
    let long_ago = 1_000_000;
    let first = schema.open().await;
    first
        .insert_refresh_token("alice", "old", long_ago, &[], issued(1, long_ago))
        .await
        .unwrap();
    // A store sweeps at most once a minute; a freshly opened one sweeps on its first login.
    let second = schema.open().await;
    second
        .insert_refresh_token("alice", "new", u64::MAX, &[], issued(2, u64::MAX))
        .await
        .unwrap();
    let client = schema.client().await;
    let count = |table: &'static str| {
        let sql = format!("SELECT count(*) FROM \"{}\".{table}", schema.name);
        let client = &client;
        async move { client.query_one(&sql, &[]).await.unwrap().get::<_, i64>(0) }
    };
    assert_eq!(count("jwt_gate_refresh_tokens").await, 1);
    assert_eq!(count("jwt_gate_sessions").await, 1);
}

#[tokio::test]
async fn a_refused_row_is_an_error_that_does_not_quote_it() {
    let schema = TestSchema::fresh();
    let store = schema.open().await;
    // Behind the store's back, a rule the row will break: PostgreSQL's DETAIL would quote
    // the whole failing row, password hash included.
    schema
        .client()
        .await
        .batch_execute(&format!(
            "ALTER TABLE \"{}\".jwt_gate_users ADD CONSTRAINT no_example CHECK (email <> 'alice@example.com')",
            schema.name
        ))
        .await
        .unwrap();
    let mut user = alice();
    user.password_hash = "$argon2id$secret-hash".into();
    let error = store.create_user(user).await.unwrap_err();
    let shown = format!("{error} {error:?}");
    assert!(shown.contains("23514"), "the check_violation code: {shown}");
    assert!(!shown.contains("secret-hash"), "{shown}");
}

#[tokio::test]
async fn a_schema_of_the_first_layout_is_upgraded_and_its_sessions_keep_working() {
    use jwt_gate::clock::{Clock, SystemClock};
    let schema = TestSchema::fresh();
    let client = schema.client().await;
    let far = i64::try_from(SystemClock.now()).unwrap() + 3_600;
    // The layout and rows as the first release left them: a spent token, the live one
    // rotated from it, and another user's revoked session.
    client
        .batch_execute(&format!(
            "CREATE SCHEMA \"{s}\";
             CREATE TABLE \"{s}\".jwt_gate_migrations (version integer PRIMARY KEY,
                 applied_at timestamptz NOT NULL DEFAULT now());
             INSERT INTO \"{s}\".jwt_gate_migrations (version) VALUES (1);
             CREATE TABLE \"{s}\".jwt_gate_users (key text PRIMARY KEY, username text NOT NULL,
                 email text NOT NULL, password_hash text NOT NULL,
                 created_at timestamptz NOT NULL DEFAULT now());
             CREATE TABLE \"{s}\".jwt_gate_sessions (
                 id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                 family text NOT NULL UNIQUE, user_key text NOT NULL,
                 revoked boolean NOT NULL DEFAULT false);
             CREATE INDEX jwt_gate_sessions_user ON \"{s}\".jwt_gate_sessions (user_key, id);
             CREATE TABLE \"{s}\".jwt_gate_refresh_tokens (
                 hash bytea PRIMARY KEY CHECK (octet_length(hash) = 32),
                 family text NOT NULL REFERENCES \"{s}\".jwt_gate_sessions (family) ON DELETE CASCADE,
                 expires_at bigint NOT NULL, spent boolean NOT NULL DEFAULT false,
                 access_jti text NOT NULL, access_exp bigint NOT NULL);
             CREATE INDEX jwt_gate_refresh_tokens_family ON \"{s}\".jwt_gate_refresh_tokens (family);
             CREATE INDEX jwt_gate_refresh_tokens_access ON \"{s}\".jwt_gate_refresh_tokens (access_jti);
             CREATE INDEX jwt_gate_refresh_tokens_expiry ON \"{s}\".jwt_gate_refresh_tokens (expires_at);
             INSERT INTO \"{s}\".jwt_gate_users (key, username, email, password_hash)
                 VALUES ('alice', 'Alice', 'alice@example.com', '$argon2id$x');
             INSERT INTO \"{s}\".jwt_gate_sessions (family, user_key, revoked)
                 VALUES ('f1', 'alice', false), ('f2', 'fred', true);",
            s = schema.name
        ))
        .await
        .unwrap();
    for (n, family, spent) in [(1_u8, "f1", true), (2, "f1", false), (3, "f2", false)] {
        client
            .execute(
                &format!(
                    "INSERT INTO \"{}\".jwt_gate_refresh_tokens VALUES ($1, $2, $3, $4, 'j', $3)",
                    schema.name
                ),
                &[&vec![n; 32], &family, &far, &spent],
            )
            .await
            .unwrap();
    }
    let store = schema.open().await;
    assert_eq!(store.find_user("alice").await.unwrap(), Some(alice()));
    let far = u64::try_from(far).unwrap();
    common::assert_first_layout_sessions_upgraded(&store, "alice", |n| [n; 32], far).await;
}
