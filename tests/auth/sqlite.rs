//! The SQLite user store behind the real service: uniqueness, sessions, and durability.

use crate::common;

use std::path::PathBuf;

use common::*;
use http::{Method, StatusCode};
use jwt_gate::service::AuthService;
use jwt_gate::store::SqliteUserStore;
use sha2::Digest as _;

fn temp_db(name: &str) -> PathBuf {
    temp_dir(name).join("users.db")
}

async fn serve_sqlite(path: &PathBuf) -> (std::net::SocketAddr, jwt_gate::TokenVerifier) {
    let (verifier, _) = verifier();
    let users = SqliteUserStore::open(path).unwrap();
    let addr = serve(app(
        verifier.clone(),
        unthrottled_registrations(AuthService::builder(verifier.clone(), users)).build(),
    ))
    .await;
    (addr, verifier)
}

#[tokio::test]
async fn users_survive_reopening_the_database() {
    let path = temp_db("reopen");
    let (addr, _) = serve_sqlite(&path).await;
    assert_eq!(
        register(addr, "Alice", PASSWORD).await.status,
        StatusCode::CREATED
    );

    let (again, _) = serve_sqlite(&path).await;
    assert_eq!(
        register(again, "alice", PASSWORD).await.status,
        StatusCode::CONFLICT
    );
    assert_eq!(login(again, "ALICE", PASSWORD).await.status, StatusCode::OK);

    let connection = rusqlite::Connection::open(&path).unwrap();
    let mode: String = connection
        .query_row("PRAGMA journal_mode", [], |row| row.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
}

#[tokio::test]
async fn fifty_concurrent_registrations_give_one_account() {
    let path = temp_db("race");
    let (addr, _) = serve_sqlite(&path).await;
    let attempts: Vec<_> = (0..50)
        .map(|_| tokio::spawn(async move { register(addr, "racer", PASSWORD).await.status }))
        .collect();
    let mut statuses = Vec::new();
    for attempt in attempts {
        statuses.push(attempt.await.unwrap());
    }
    let created = statuses
        .iter()
        .filter(|s| **s == StatusCode::CREATED)
        .count();
    let taken = statuses
        .iter()
        .filter(|s| **s == StatusCode::CONFLICT)
        .count();
    assert_eq!((created, taken), (1, 49));
}

#[tokio::test]
async fn refresh_rotation_reuse_and_logout_all_work_on_sqlite() {
    let path = temp_db("sessions");
    let (addr, _) = serve_sqlite(&path).await;
    let login = session(addr, "bob").await;
    let other = session(addr, "bob").await;
    let spent = login["refresh_token"].as_str().unwrap();
    let rotated = refresh(addr, spent).await;
    assert_eq!(rotated.status, StatusCode::OK);
    let rotated = rotated.json();
    assert_eq!(refresh(addr, spent).await.status, StatusCode::BAD_REQUEST);
    let rotated_refresh = rotated["refresh_token"].as_str().unwrap();
    assert_eq!(
        refresh(addr, rotated_refresh).await.status,
        StatusCode::BAD_REQUEST
    );
    let rotated_access = rotated["access_token"].as_str().unwrap();
    assert_eq!(
        me(addr, rotated_access).await.status,
        StatusCode::UNAUTHORIZED
    );

    let other_access = other["access_token"].as_str().unwrap();
    assert_eq!(me(addr, other_access).await.status, StatusCode::OK);
    let reply = with_bearer(addr, Method::POST, "/auth/logout-all", other_access).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        me(addr, other_access).await.status,
        StatusCode::UNAUTHORIZED
    );
    let other_refresh = other["refresh_token"].as_str().unwrap();
    assert_eq!(
        refresh(addr, other_refresh).await.status,
        StatusCode::BAD_REQUEST
    );
}

#[tokio::test]
async fn refresh_tokens_are_stored_only_as_hashes() {
    let path = temp_db("hashes");
    let (addr, _) = serve_sqlite(&path).await;
    let json = session(addr, "carol").await;
    let first = json["refresh_token"].as_str().unwrap().to_owned();
    let rotated = refresh(addr, &first).await.json();
    let refresh_token = rotated["refresh_token"].as_str().unwrap();
    let connection = rusqlite::Connection::open(&path).unwrap();
    let mut statement = connection
        .prepare("SELECT hash FROM refresh_tokens ORDER BY generation")
        .unwrap();
    let stored: Vec<Vec<u8>> = statement
        .query_map([], |row| row.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let expected: Vec<Vec<u8>> = [first.as_str(), refresh_token]
        .iter()
        .map(|token| sha2::Sha256::digest(token.as_bytes()).to_vec())
        .collect();
    assert_eq!(stored, expected, "SHA-256 of each token handed out");
    // Nowhere in the file (or its WAL) is the token itself, nor the password.
    for file in [path.clone(), path.with_extension("db-wal")] {
        if let Ok(bytes) = std::fs::read(&file) {
            let haystack = String::from_utf8_lossy(&bytes);
            assert!(!haystack.contains(refresh_token), "{file:?}");
            assert!(!haystack.contains(&first), "{file:?}");
            assert!(!haystack.contains(PASSWORD), "{file:?}");
        }
    }
}

#[cfg(unix)]
#[tokio::test]
async fn a_new_database_is_readable_by_its_owner_only() {
    use std::os::unix::fs::PermissionsExt as _;
    let path = temp_db("mode");
    let (addr, _) = serve_sqlite(&path).await;
    register(addr, "dave", PASSWORD).await;
    for file in [path.clone(), path.with_extension("db-wal")] {
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "{file:?} is {mode:o}");
    }
}

#[tokio::test]
async fn a_database_of_the_first_layout_is_upgraded_and_its_sessions_keep_working() {
    use jwt_gate::store::UserStore;
    let path = temp_db("upgrade");
    let hash = |n: u8| -> [u8; 32] { sha2::Sha256::digest([n]).into() };
    let far = now() + 3_600;
    {
        // The layout and rows as the first release left them: a spent token, the live one
        // rotated from it, and another user's revoked session.
        let connection = rusqlite::Connection::open(&path).unwrap();
        connection
            .execute_batch(
                "CREATE TABLE users (key TEXT PRIMARY KEY, username TEXT NOT NULL,
                     email TEXT NOT NULL, password_hash TEXT NOT NULL);
                 CREATE TABLE refresh_tokens (hash BLOB PRIMARY KEY, family TEXT NOT NULL,
                     user_key TEXT NOT NULL, expires_at INTEGER NOT NULL,
                     spent INTEGER NOT NULL DEFAULT 0, revoked INTEGER NOT NULL DEFAULT 0,
                     access_jti TEXT NOT NULL, access_exp INTEGER NOT NULL);
                 CREATE INDEX refresh_tokens_family ON refresh_tokens (family);
                 CREATE INDEX refresh_tokens_user ON refresh_tokens (user_key);
                 CREATE INDEX refresh_tokens_access ON refresh_tokens (access_jti);
                 CREATE INDEX refresh_tokens_expiry ON refresh_tokens (expires_at);
                 INSERT INTO users VALUES ('erin', 'Erin', 'erin@example.com', '$argon2id$x');",
            )
            .unwrap();
        for (n, family, user, spent, revoked) in [
            (1_u8, "f1", "erin", true, false),
            (2, "f1", "erin", false, false),
            (3, "f2", "fred", false, true),
        ] {
            connection
                .execute(
                    "INSERT INTO refresh_tokens VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'j', ?4)",
                    rusqlite::params![
                        &hash(n)[..],
                        family,
                        user,
                        i64::try_from(far).unwrap(),
                        spent,
                        revoked
                    ],
                )
                .unwrap();
        }
    }
    let store = SqliteUserStore::open(&path).unwrap();
    assert_eq!(
        store.find_user("erin").await.unwrap().unwrap().username,
        "Erin"
    );
    assert_first_layout_sessions_upgraded(&store, "erin", hash, far).await;
    drop(store);
    // Opening again finds the current layout and changes nothing.
    let again = SqliteUserStore::open(&path).unwrap();
    assert_eq!(again.sessions_of("erin", now()).await.unwrap(), ["f1"]);
}

#[tokio::test]
async fn fifty_look_alike_spellings_of_one_name_give_one_account_on_sqlite() {
    let path = temp_db("lookalike-race");
    let (addr, _) = serve_sqlite(&path).await;
    common::lookalike::fifty_lookalikes_make_one_account(addr).await;
    let connection = rusqlite::Connection::open(&path).unwrap();
    let users: i64 = connection
        .query_row("SELECT COUNT(*) FROM users", [], |row| row.get(0))
        .unwrap();
    assert_eq!(users, 1);
}

#[tokio::test]
async fn a_database_from_before_look_alike_keys_is_upgraded_and_its_look_alikes_kept() {
    use common::lookalike::*;
    let path = temp_db("lookalike-upgrade");
    {
        // The users table as earlier versions made it, holding two accounts that look alike.
        let connection = rusqlite::Connection::open(&path).unwrap();
        connection
            .execute_batch(
                "CREATE TABLE users (
                     key TEXT PRIMARY KEY, username TEXT NOT NULL,
                     email TEXT NOT NULL, password_hash TEXT NOT NULL)",
            )
            .unwrap();
        for account in accounts_from_before() {
            connection
                .execute(
                    "INSERT INTO users VALUES (?1, ?2, ?3, ?4)",
                    rusqlite::params_from_iter(&account),
                )
                .unwrap();
        }
    }
    let (addr, _) = serve_sqlite(&path).await;
    accounts_from_before_keep_working_and_block_look_alikes(addr).await;

    // The older account holds the name; the newer one is listed for the operator.
    let unkeyed = || -> Vec<String> {
        let connection = rusqlite::Connection::open(&path).unwrap();
        let mut statement = connection
            .prepare("SELECT key FROM users WHERE lookalike IS NULL")
            .unwrap();
        let keys = statement.query_map([], |row| row.get(0)).unwrap();
        keys.collect::<Result<_, _>>().unwrap()
    };
    assert_eq!(unkeyed(), [CYRILLIC_SCOPE]);
    // Opening it again changes nothing.
    let (again, _) = serve_sqlite(&path).await;
    assert_eq!(
        register(again, "sc0pe", PASSWORD).await.status,
        StatusCode::CONFLICT
    );
    assert_eq!(unkeyed(), [CYRILLIC_SCOPE]);
}

/// `find_user` answers users it has read before from memory: a read racing password-hash
/// updates never sees a hash older than the newest update that had returned when it started,
/// and once the writes stop every read sees the last one.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reads_racing_writes_never_see_an_older_user() {
    use jwt_gate::store::{User, UserStore};
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    const UPDATES: u64 = 300;
    let store = SqliteUserStore::open(temp_db("read-write-race")).unwrap();
    let user = User {
        key: "gina".into(),
        username: "Gina".into(),
        email: "gina@example.com".into(),
        password_hash: "0".into(),
        roles: Vec::new(),
        scopes: Vec::new(),
    };
    store.create_user(user).await.unwrap();
    let returned = Arc::new(AtomicU64::new(0));
    let readers: Vec<_> = (0..4)
        .map(|_| {
            let (store, returned) = (store.clone(), returned.clone());
            tokio::spawn(async move {
                let mut last_seen = 0;
                loop {
                    let floor = returned.load(Ordering::SeqCst);
                    let found = store.find_user("gina").await.unwrap().unwrap();
                    let seen: u64 = found.password_hash.parse().unwrap();
                    assert!(
                        seen >= floor,
                        "read {seen} after update {floor} had returned"
                    );
                    assert!(seen >= last_seen, "read {seen} after reading {last_seen}");
                    assert_eq!(
                        (found.username.as_str(), found.email.as_str()),
                        ("Gina", "gina@example.com")
                    );
                    last_seen = seen;
                    if floor == UPDATES {
                        break;
                    }
                    tokio::task::yield_now().await;
                }
            })
        })
        .collect();
    for update in 1..=UPDATES {
        store
            .update_password_hash("gina", update.to_string())
            .await
            .unwrap();
        returned.store(update, Ordering::SeqCst);
    }
    for reader in readers {
        reader.await.unwrap();
    }
    let last = store.find_user("gina").await.unwrap().unwrap();
    assert_eq!(last.password_hash, UPDATES.to_string());
}
