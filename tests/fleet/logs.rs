//! Secrets stay out of the logs: everything the gate and the auth service emit through
//! `tracing` while refusing requests, logging in, catching a reused refresh token and losing
//! their database is captured, and searched for every secret the test handled. Each event
//! must also carry the level `docs/operating.md` documents.

use crate::common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use common::postgres::{CutProxy, TestSchema};
use common::*;
use http::StatusCode;
use jwt_gate::service::AuthService;
use jwt_gate::store::{PostgresUserStore, UserStore};
use jwt_gate::{JwtAuthLayer, TokenVerifier};

/// Everything written by the subscriber, as text.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Write for Logs {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    /// Captures every event, of every level, from the current thread. The test runs on a
    /// current-thread runtime, so that includes every task of the servers it starts.
    fn capture(&self) -> tracing::subscriber::DefaultGuard {
        let logs = self.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .without_time()
            .with_writer(move || logs.clone())
            .finish();
        tracing::subscriber::set_default(subscriber)
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }

    /// The levels of the lines that contain `message`.
    fn levels_of(&self, message: &str) -> Vec<String> {
        self.text()
            .lines()
            .filter(|line| line.contains(message))
            .map(|line| {
                line.split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .to_owned()
            })
            .collect()
    }
}

const DB_PASSWORD: &str = "pg-pass-hunter2";
const WRONG_PASSWORD: &str = "not the password, but close";

#[tokio::test]
async fn no_secret_reaches_the_logs_and_each_event_has_its_documented_level() {
    let logs = Logs::default();
    let _capture = logs.capture();

    // The auth service on PostgreSQL, reached through a URL with a password in it (the test
    // server trusts local connections, so any password is accepted).
    let schema = TestSchema::fresh();
    let proxy = CutProxy::start().await;
    let url = proxy
        .url()
        .replacen("://postgres@", &format!("://postgres:{DB_PASSWORD}@"), 1);
    assert!(
        url.contains(DB_PASSWORD),
        "DATABASE_URL has another form: {url}"
    );
    let users = PostgresUserStore::connect(&url)
        .schema(&schema.name)
        .timeout(crate::auth_postgres::PATIENT)
        .await
        .unwrap();
    let (verifier, _) = verifier();
    let addr = serve(app(
        verifier.clone(),
        AuthService::new(verifier, users.clone()),
    ))
    .await;

    let mut secrets = vec![
        PASSWORD.to_owned(),
        WRONG_PASSWORD.to_owned(),
        DB_PASSWORD.to_owned(),
    ];
    // A login, a refused one, and the stored hash.
    let tokens = session(addr, "alice").await;
    let access = tokens["access_token"].as_str().unwrap().to_owned();
    let first_refresh = tokens["refresh_token"].as_str().unwrap().to_owned();
    let refused = login(addr, "alice", WRONG_PASSWORD).await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    let hash = users
        .find_user("alice")
        .await
        .unwrap()
        .unwrap()
        .password_hash;
    secrets.push(hash);

    // Rejections at the gate: no credentials, a tampered token.
    assert_eq!(
        get_with(addr, "/me", &[]).await.status,
        StatusCode::UNAUTHORIZED
    );
    let mut tampered = access.clone();
    tampered.replace_range(tampered.len() - 4.., "AAAA");
    assert_eq!(me(addr, &tampered).await.status, StatusCode::UNAUTHORIZED);

    // A refresh token used twice: the second use is a replay.
    let rotated = refresh(addr, &first_refresh).await;
    assert_eq!(rotated.status, StatusCode::OK, "{}", rotated.text);
    let second_refresh = rotated.json()["refresh_token"].as_str().unwrap().to_owned();
    let replayed = refresh(addr, &first_refresh).await;
    assert_eq!(replayed.status, StatusCode::BAD_REQUEST);

    // A gate failing closed, with a genuine token.
    let closed = serve_gated(JwtAuthLayer::new(
        TokenVerifier::builder(keys())
            .revocations(DownRevocations::default())
            .build(),
    ))
    .await;
    let genuine = token(&keys(), "bob");
    assert_eq!(
        get_bearer(closed, "/protected", &genuine).await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );

    // The database goes away.
    proxy.cut();
    assert_eq!(
        login(addr, "alice", PASSWORD).await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );

    // Every token, and each of its parts (a signature alone is a secret's proof).
    for token in [
        &access,
        &tampered,
        &genuine,
        &first_refresh,
        &second_refresh,
    ] {
        secrets.push(token.clone());
        secrets.extend(
            token
                .split('.')
                .skip(1)
                .filter(|part| part.len() >= 16)
                .map(str::to_owned),
        );
    }
    // Every problem is collected before failing, so one run names them all.
    let text = logs.text();
    let mut problems: Vec<String> = secrets
        .iter()
        .filter(|secret| text.contains(secret.as_str()))
        .map(|secret| format!("{secret:?} was logged"))
        .collect();

    // The levels `docs/operating.md` documents.
    for (message, level) in [
        ("request without credentials refused", "DEBUG"),
        ("request with bad credentials refused", "INFO"),
        ("request refused: failing closed", "WARN"),
        ("login refused", "INFO"),
        ("spent refresh token was presented again", "WARN"),
        ("user store failed", "ERROR"),
    ] {
        let levels = logs.levels_of(message);
        if levels.is_empty() || levels.iter().any(|seen| seen != level) {
            problems.push(format!("{message:?} at {levels:?}, not {level}"));
        }
    }
    assert!(problems.is_empty(), "{problems:#?}\n{text}");
}
