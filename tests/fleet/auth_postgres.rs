//! The auth service on PostgreSQL (`DATABASE_URL`, a schema per test): several services on one
//! database agree on who exists, and a lost database is `503`, never a panic.

use crate::common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::postgres::{CutProxy, TestSchema};
use common::*;
use http::{Method, StatusCode};
use jwt_gate::service::AuthService;
use jwt_gate::store::{PostgresUserStore, UserStore};

/// How long one PostgreSQL operation may take in these tests: long, since on a loaded machine
/// every test's schema setup queues behind one advisory lock.
pub const PATIENT: Duration = Duration::from_secs(30);

async fn serve_on(users: PostgresUserStore) -> std::net::SocketAddr {
    let (verifier, _) = verifier();
    let auth = unthrottled_registrations(AuthService::builder(verifier.clone(), users)).build();
    serve(app(verifier, auth)).await
}

/// Registers `name`, asking again while the service sheds load (`503` from a full hash queue
/// is an answer a client retries) until `deadline`; returns the final status.
async fn register_until_answered(
    addr: std::net::SocketAddr,
    name: String,
    deadline: Instant,
) -> StatusCode {
    loop {
        let status = register(addr, &name, PASSWORD).await.status;
        if status != StatusCode::SERVICE_UNAVAILABLE || Instant::now() >= deadline {
            return status;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// How long `registrations` may take in all, from what one costs on this machine now: every
/// registration may hash a password (the expensive part, tens to hundreds of milliseconds on
/// a busy core), and a loaded machine may be several times slower than this sample, so the
/// margin is wide. The wait ends as soon as the work does; only a stuck service reaches it.
async fn deadline_for(addr: std::net::SocketAddr, registrations: u32) -> Instant {
    let started = Instant::now();
    assert_eq!(
        register(addr, "warmup", PASSWORD).await.status,
        StatusCode::CREATED
    );
    let one = started.elapsed();
    Instant::now() + one * registrations * 5 + Duration::from_secs(30)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_registrations_over_two_services_make_one_account_per_name() {
    let schema = TestSchema::fresh();
    let a = serve_on(schema.open().await).await;
    let b = serve_on(schema.open().await).await;
    let deadline = deadline_for(a, 200).await;

    // 20 names, each registered 10 times, spelled differently, half through each service.
    let attempts: Vec<_> = (0..200)
        .map(|n| {
            let name = format!("user{}", n % 20);
            let spelled = if n % 3 == 0 {
                name.to_uppercase()
            } else {
                name.clone()
            };
            let addr = if n % 2 == 0 { a } else { b };
            tokio::spawn(
                async move { (name, register_until_answered(addr, spelled, deadline).await) },
            )
        })
        .collect();
    let mut created: HashMap<String, usize> = HashMap::new();
    for attempt in attempts {
        let (name, status) = attempt.await.unwrap();
        match status {
            StatusCode::CREATED => *created.entry(name).or_default() += 1,
            StatusCode::CONFLICT => {}
            other => panic!("{name}: {other}"),
        }
    }
    assert_eq!(created.len(), 20, "{created:?}");
    assert!(created.values().all(|&count| count == 1), "{created:?}");

    assert_eq!(
        user_rows(&schema).await,
        20 + 1,
        "the 20 names and the warm-up"
    );
    // Each account logs in through either service.
    assert_eq!(login(a, "USER7", PASSWORD).await.status, StatusCode::OK);
    assert_eq!(login(b, "user7", PASSWORD).await.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_database_is_503_and_the_gate_keeps_working() {
    let schema = TestSchema::fresh();
    let proxy = CutProxy::start().await;
    // The cut drops connections and refuses new ones, so failures come at once; the timeout
    // only has to outlast a loaded machine before the cut.
    let users = PostgresUserStore::connect(&proxy.url())
        .schema(&schema.name)
        .timeout(PATIENT)
        .await
        .unwrap();
    let addr = serve_on(users.clone()).await;
    let tokens = session(addr, "alice").await;
    let access = tokens["access_token"].as_str().unwrap();
    let refresh_token = tokens["refresh_token"].as_str().unwrap();

    proxy.cut();

    for reply in [
        register(addr, "bob", PASSWORD).await,
        login(addr, "alice", PASSWORD).await,
        refresh(addr, refresh_token).await,
        with_bearer(addr, Method::POST, "/auth/logout-all", access).await,
    ] {
        assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE, "{reply:?}");
        assert!(
            !reply.text.contains("PostgreSQL"),
            "no internals: {reply:?}"
        );
    }
    assert!(users.find_user("alice").await.is_err());
    // The gate needs no database: the token issued before the outage still passes.
    assert_eq!(me(addr, access).await.status, StatusCode::OK);
    // A logout revokes first and then cannot end the session: 503, but the token is already
    // refused, and a retry once the database is back completes it.
    let reply = with_bearer(addr, Method::POST, "/auth/logout", access).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        !reply.text.contains("PostgreSQL"),
        "no internals: {reply:?}"
    );
    assert_eq!(me(addr, access).await.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn refresh_tokens_are_stored_as_their_sha256_only() {
    use sha2::Digest as _;
    let schema = TestSchema::fresh();
    let addr = serve_on(schema.open().await).await;
    let json = session(addr, "carol").await;
    let first = json["refresh_token"].as_str().unwrap().to_owned();
    let rotated = refresh(addr, &first).await.json();
    let second = rotated["refresh_token"].as_str().unwrap();
    let rows = schema
        .client()
        .await
        .query(
            &format!(
                "SELECT hash FROM \"{}\".jwt_gate_refresh_tokens ORDER BY generation",
                schema.name
            ),
            &[],
        )
        .await
        .unwrap();
    let stored: Vec<Vec<u8>> = rows.iter().map(|row| row.get(0)).collect();
    let expected: Vec<Vec<u8>> = [first.as_str(), second]
        .iter()
        .map(|token| sha2::Sha256::digest(token.as_bytes()).to_vec())
        .collect();
    assert_eq!(stored, expected, "SHA-256 of each token handed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_look_alike_spellings_of_one_name_give_one_account_on_postgres() {
    let schema = TestSchema::fresh();
    let addr = serve_on(schema.open().await).await;
    common::lookalike::fifty_lookalikes_make_one_account(addr).await;
    assert_eq!(user_rows(&schema).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_from_before_look_alike_keys_is_upgraded_and_its_look_alikes_kept() {
    use common::lookalike::*;
    let schema = TestSchema::fresh();
    drop(schema.open().await);
    // Back to the first migration, as earlier versions left it, with two accounts that look
    // alike registered a minute apart.
    let client = schema.client().await;
    let s = &schema.name;
    client
        .batch_execute(&format!(
            "DELETE FROM \"{s}\".jwt_gate_migrations WHERE version >= 2;
             ALTER TABLE \"{s}\".jwt_gate_users DROP COLUMN lookalike;"
        ))
        .await
        .unwrap();
    for (minute, [key, username, email, hash]) in accounts_from_before().into_iter().enumerate() {
        let created_at = format!("2026-01-01 00:{minute:02}:00+00");
        client
            .execute(
                &format!(
                    "INSERT INTO \"{s}\".jwt_gate_users
                     (key, username, email, password_hash, created_at)
                     VALUES ($1, $2, $3, $4, $5::text::timestamptz)"
                ),
                &[&key, &username, &email, &hash, &created_at],
            )
            .await
            .unwrap();
    }

    let addr = serve_on(schema.open().await).await;
    accounts_from_before_keep_working_and_block_look_alikes(addr).await;
    assert_eq!(unkeyed(&client, s).await, [CYRILLIC_SCOPE]);
    // A second service starting on the schema changes nothing.
    let again = serve_on(schema.open().await).await;
    assert_eq!(
        register(again, "sc0pe", PASSWORD).await.status,
        StatusCode::CONFLICT
    );
    assert_eq!(unkeyed(&client, s).await, [CYRILLIC_SCOPE]);
}

/// The users that hold no look-alike key.
async fn unkeyed(client: &tokio_postgres::Client, schema: &str) -> Vec<String> {
    let sql = format!("SELECT key FROM \"{schema}\".jwt_gate_users WHERE lookalike IS NULL");
    client
        .query(&sql, &[])
        .await
        .unwrap()
        .iter()
        .map(|row| row.get::<_, String>(0))
        .collect()
}

/// How many users the schema holds, counted behind the store's back.
async fn user_rows(schema: &TestSchema) -> i64 {
    schema
        .client()
        .await
        .query_one(
            &format!("SELECT count(*) FROM \"{}\".jwt_gate_users", schema.name),
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

/// PostgreSQL refuses a NUL in text. A login naming one is an unknown user (`400
/// invalid_grant`, throttled like any failure), not a store outage: a `503` would be free of
/// throttling, and would page whoever watches outages.
#[tokio::test]
async fn a_login_with_a_nul_in_the_name_is_an_unknown_user_not_an_outage() {
    let schema = TestSchema::fresh();
    let addr = serve_on(schema.open().await).await;
    for name in ["%00", "alice%00", "%01bob"] {
        let reply = call(
            addr,
            Method::POST,
            "/auth/token",
            &[("content-type", "application/x-www-form-urlencoded")],
            format!("username={name}&password=a+wrong+password"),
        )
        .await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{name}: {reply:?}");
        assert_eq!(reply.json()["error"], "invalid_grant", "{name}: {reply:?}");
    }
}
